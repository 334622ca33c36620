"""`make bench`: one line per figure, `name value unit`, on stdout.

Ratios are measured side by side in one run (this machine is shared and noisy): the two
things compared alternate in blocks and their times are summed.

    python -m scripts.bench                # every group
    python -m scripts.bench --only env     # some groups: env, rollout, cluster, play, ...
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

import numpy as np

Figure = tuple[str, float, str]


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _pin_to_one_core() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})


def _unpin(cores: set[int]) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)


def env_step_rates(ids: tuple[str, ...], rounds: int = 6, steps_per_round: int = 250,
                   seed: int = 0) -> dict[str, float]:
    """Steps/s of each env id on one core, alternating rounds between them.

    Every env sees the same seed and the same smooth random actions, so they do the same
    physics and draw the same frames."""
    import gymnasium

    import worldmodels  # noqa: F401

    envs = {i: gymnasium.make(i) for i in ids}
    rng = np.random.default_rng(seed)
    actions = np.clip(np.cumsum(rng.normal(0, 0.15, (rounds * steps_per_round, 3)), axis=0), -1, 1)
    actions[:, 1:] = np.abs(actions[:, 1:]) * np.array([1.0, 0.2])
    actions = actions.astype(np.float32)
    elapsed = dict.fromkeys(ids, 0.0)
    for env in envs.values():
        env.reset(seed=seed)
    for r in range(rounds):
        for env_id, env in envs.items():
            block = actions[r * steps_per_round:(r + 1) * steps_per_round]
            start = time.perf_counter()
            for a in block:
                _, _, terminated, truncated, _ = env.step(a)
                if terminated or truncated:
                    env.reset(seed=seed + r + 1)
            elapsed[env_id] += time.perf_counter() - start
    for env in envs.values():
        env.close()
    return {i: rounds * steps_per_round / elapsed[i] for i in ids}


def bench_env() -> Iterator[Figure]:
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    _pin_to_one_core()
    try:
        rates = env_step_rates(("CarRacing-v3", "FastCarRacing-v3"))
        _MEASURED.update(rates)
    finally:
        _unpin(cores)
    yield "env_steps_per_s_gymnasium", rates["CarRacing-v3"], "steps/s"
    yield "env_steps_per_s_fast", rates["FastCarRacing-v3"], "steps/s"
    yield "env_speedup", rates["FastCarRacing-v3"] / rates["CarRacing-v3"], "x"


def rollout_rates(episodes: int, max_steps: int, rounds: int, workers: tuple[int, ...], warm_episodes: int,
                  warm_steps: int, label: str) -> dict[int, float]:
    """Episodes/s of `collect_rollouts` (tiny preset's env, episodes of `max_steps`) with each
    number of `workers`, on the Ray this process has joined, in alternating rounds (1, all, 1,
    all, ...) so that a shared host's speed drifting during the group moves every figure alike.
    A warm-up collection first starts the workers' imports."""
    from dataclasses import replace

    from worldmodels.config import get_config
    from worldmodels.rollout.collect import collect_rollouts

    config = get_config("tiny")
    config = replace(config, rollouts=replace(config.rollouts, episodes=episodes, max_steps=max_steps, workers=0))
    done, seconds = dict.fromkeys(workers, 0), dict.fromkeys(workers, 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        warm = replace(config, rollouts=replace(config.rollouts, episodes=warm_episodes, max_steps=warm_steps,
                                                seed=10_000))
        collect_rollouts(warm, os.path.join(tmp, "warm"), workers=max(workers), progress=False)
        for r in range(rounds):
            for w in workers:
                summary = collect_rollouts(config, os.path.join(tmp, f"r{r}w{w}"), workers=w, progress=False)
                done[w] += summary.written
                seconds[w] += summary.seconds
                log(f"{label}, {w} worker(s): {summary.episodes_per_s:.2f} episodes/s, "
                    f"{summary.steps_per_s:.0f} steps/s")
    return {w: done[w] / seconds[w] for w in workers}


def bench_rollout(episodes: int = 8, max_steps: int = 1000, rounds: int = 2) -> Iterator[Figure]:
    """Episodes/s of the rollouts stage with every local core vs with one worker, on episodes
    of the default preset's length (1000 steps), alternating rounds."""
    from worldmodels.parallel import init_ray

    cpus = os.cpu_count() or 1
    ray = init_ray(num_cpus=cpus)
    rates = rollout_rates(episodes, max_steps, rounds, (1, cpus), warm_episodes=cpus, warm_steps=max_steps,
                          label="rollouts")
    # The group's local Ray goes with it: its idle raylet and worker pool would otherwise share
    # the two cores with every later group (measured: M's JAX training -22 %, PyTorch's -3 %),
    # a condition no stage meets (`make train-rnn` and `make train-vae` run without Ray).
    ray.shutdown()
    yield "rollout_episodes_per_s_1_worker", rates[1], "episodes/s"
    yield f"rollout_episodes_per_s_{cpus}_workers", rates[cpus], "episodes/s"
    yield "rollout_scaling", rates[cpus] / rates[1], "x"


def bench_cluster(episodes: int = 8, max_steps: int = 1000, rounds: int = 2) -> Iterator[Figure]:
    """Episodes/s of the rollouts stage on a 2-node local Ray cluster (scripts.local_cluster, one
    CPU per node, joined by address like RAY_ADDRESS) with 2 workers (one per node) vs 1 worker
    (one node), episodes of the default preset's length, alternating rounds. A node here is one
    CPU, so the 1-worker figure is the throughput per CPU of a cluster node."""
    import ray

    from scripts import local_cluster
    from worldmodels.parallel import init_ray

    if ray.is_initialized():
        ray.shutdown()  # another group's local Ray
    helper, address = local_cluster.spawn(nodes=2, cpus_per_node=1)
    try:
        init_ray(address=address)
        rates = rollout_rates(episodes, max_steps, rounds, (1, 2), warm_episodes=2, warm_steps=50,
                              label="2-node cluster")
    finally:
        ray.shutdown()
        local_cluster.stop(helper, timeout=120)
    yield "cluster_rollout_episodes_per_s_1_node", rates[1], "episodes/s"
    yield "cluster_rollout_episodes_per_s_2_nodes", rates[2], "episodes/s"
    yield "cluster_rollout_scaling", rates[2] / rates[1], "x"


def side_by_side(runners: dict[str, Callable[[int], float]], rounds: int = 3, per_round: int = 10
                 ) -> dict[str, float]:
    """Items/s of each runner, alternating rounds; `runner(n)` does n units of work and
    returns the items it processed. Each runner is warmed up first."""
    for run in runners.values():
        run(1)
    items, seconds = dict.fromkeys(runners, 0.0), dict.fromkeys(runners, 0.0)
    for _ in range(rounds):
        for name, run in runners.items():
            start = time.perf_counter()
            items[name] += run(per_round)
            seconds[name] += time.perf_counter() - start
    return {name: items[name] / seconds[name] for name in runners}


def jax_mdnrnn_runner(batch: int = 100, seq_len: int = 100, frames: int = 50_000) -> Callable[[int], float]:
    """M's real train step at the paper's sizes on a synthetic in-memory series."""
    import jax
    import jax.numpy as jnp

    from worldmodels.config import get_config
    from worldmodels.train.common import init_train_state
    from worldmodels.train.mdnrnn import init_params, make_module, make_optimizer, make_train_step

    cfg = get_config("default", ["--mdnrnn.batch_size", str(batch), "--mdnrnn.seq_len", str(seq_len)]).mdnrnn
    module = make_module(cfg, latent_dim=32, action_dim=3)
    tx = make_optimizer(cfg)
    state = init_train_state(lambda k: init_params(module, k), tx, jax.random.key(0))
    rng = np.random.default_rng(0)
    episode = 1000
    starts_of = np.repeat(np.arange(0, frames, episode), episode)
    data = {
        "mu": rng.normal(size=(frames, 32)), "logvar": rng.normal(-2, 0.5, size=(frames, 32)),
        "action": rng.uniform(-1, 1, size=(frames, 3)), "reward": (rng.random(frames) < 0.1) * 1.0,
        "done": (rng.random(frames) < 0.002) * 1.0,
    }
    data = {k: jnp.asarray(v, jnp.float32) for k, v in data.items()}
    data["episode_start"] = jnp.asarray(starts_of, jnp.int32)
    data["episode_end"] = jnp.asarray(starts_of + episode - 1, jnp.int32)
    step = jax.jit(make_train_step(module, cfg, tx), donate_argnums=0)
    valid = np.concatenate([s + np.arange(episode - seq_len + 1) for s in range(0, frames, episode)])
    box = {"state": state, "i": 0}

    def run(n: int) -> float:
        for _ in range(n):
            starts = jnp.asarray(np.random.default_rng(box["i"]).choice(valid, batch))
            box["state"], metrics = step(box["state"], data, starts, jax.random.key(box["i"]))
            box["i"] += 1
        jax.block_until_ready(metrics["loss"])
        return n * batch

    return run


def bench_rnn() -> Iterator[Figure]:
    from scripts.torch_mdnrnn import torch_mdnrnn_runner

    rates = side_by_side({"jax": jax_mdnrnn_runner(), "torch": torch_mdnrnn_runner()},
                         rounds=3, per_round=8)
    yield "rnn_train_seq_per_s_jax", rates["jax"], "seq/s"
    yield "rnn_train_seq_per_s_torch", rates["torch"], "seq/s"
    yield "rnn_speedup_vs_torch", rates["jax"] / rates["torch"], "x"


def jax_vae_runner(batch: int = 100) -> Callable[[int], float]:
    """V's real train step (paper sizes, the configured fast layers) on a fixed batch."""
    import jax
    import jax.numpy as jnp

    from worldmodels.config import get_config
    from worldmodels.models.vision import get_vision_model
    from worldmodels.train.common import conv_compiler_options
    from worldmodels.train.vision import init_state, make_optimizer, make_train_step

    cfg = get_config("default", ["--vision.batch_size", str(batch)]).vision
    model = get_vision_model(cfg)
    tx = make_optimizer(cfg)
    box = {"state": init_state(model, tx, jax.random.key(0))}
    step = jax.jit(make_train_step(model, tx), donate_argnums=0, compiler_options=conv_compiler_options())
    frames = jnp.asarray(np.random.default_rng(0).integers(0, 255, (batch, 64, 64, 3)), jnp.uint8)

    def run(n: int) -> float:
        for i in range(n):
            box["state"], metrics = step(box["state"], frames, jax.random.key(i))
        jax.block_until_ready(metrics["loss"])
        return n * batch

    return run


def torch_vae_runner(batch: int = 100) -> Callable[[int], float]:
    import torch

    from scripts.torch_vae import TorchVAE, make_train_step

    torch.manual_seed(0)
    step = make_train_step(TorchVAE())
    x = torch.rand(batch, 3, 64, 64, dtype=torch.float32)

    def run(n: int) -> float:
        for _ in range(n):
            loss = step(x)
        float(loss)
        return n * batch

    return run


def bench_vae() -> Iterator[Figure]:
    rates = side_by_side({"jax": jax_vae_runner(), "torch": torch_vae_runner()}, rounds=4, per_round=6)
    yield "vae_train_img_per_s_jax", rates["jax"], "images/s"
    yield "vae_train_img_per_s_torch", rates["torch"], "images/s"
    yield "vae_speedup_vs_torch", rates["jax"] / rates["torch"], "x"


_MEASURED: dict[str, float] = {}


def gymnasium_steps_per_s() -> float:
    """CarRacing-v3 steps/s on one core: from the env group of this run, else measured now."""
    if "CarRacing-v3" not in _MEASURED:
        cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
        _pin_to_one_core()
        try:
            _MEASURED.update(env_step_rates(("CarRacing-v3",), rounds=3, steps_per_round=200))
        finally:
            _unpin(cores)
    return _MEASURED["CarRacing-v3"]


def bench_dream(batch: int = 256, steps: int = 1000) -> Iterator[Figure]:
    """Dreamed steps/s: `batch` episodes x `steps` steps of M (paper sizes) with a linear
    controller on [z, h] in the loop, one jitted call."""
    import jax
    import jax.numpy as jnp

    from worldmodels.config import get_config
    from worldmodels.envs.dream import DreamEnv, DreamParams, dream_rollout
    from worldmodels.models.controller import carracing_squash, controller_features, controller_output
    from worldmodels.train.mdnrnn import init_params, make_module

    cfg = get_config("default").mdnrnn
    module = make_module(cfg, latent_dim=32, action_dim=3)
    env = DreamEnv(module)
    params = DreamParams(rnn=init_params(module, jax.random.key(0)),
                         initial_mu=jax.random.normal(jax.random.key(1), (100, 32)),
                         initial_logvar=jnp.full((100, 32), -2.0), temperature=jnp.asarray(1.0),
                         reward_values=jnp.array([-0.1, 3.0]), constant_reward=jnp.asarray(1.0),
                         max_steps=steps)
    policy_params = {"w": 0.1 * jax.random.normal(jax.random.key(2), (32 + 256, 3)), "b": jnp.zeros(3)}

    def policy(p, obs):
        return carracing_squash(controller_output(p, controller_features(obs, "zh")))

    run = jax.jit(jax.vmap(lambda k: dream_rollout(env, params, policy, policy_params, k, steps)))
    keys = jax.random.split(jax.random.key(3), batch)
    jax.block_until_ready(run(keys))
    start = time.perf_counter()
    rounds = 3
    for r in range(rounds):
        totals, lengths = run(jax.random.split(jax.random.key(10 + r), batch))
        jax.block_until_ready(totals)
    seconds = time.perf_counter() - start
    rate = rounds * batch * steps / seconds
    log(f"dream: mean length {float(lengths.mean()):.0f} of {steps} (all steps are computed)")
    yield "dream_steps_per_s", rate, "steps/s"
    yield "dream_speedup_vs_env", rate / gymnasium_steps_per_s(), "x"


def agent_steps_per_s(envs: int = 16, steps: int = 300) -> float:
    """Env steps/s of FastCarRacing with the World Models agent (paper sizes: V, M with
    256 units, linear C) acting for `envs` environments, one batched jitted call per step.
    Meant to run in a process pinned to one core with one XLA thread (see `bench_agent`)."""
    import jax

    from worldmodels.agent import make_agent_step, run_episodes
    from worldmodels.config import get_config
    from worldmodels.models.vision import get_vision_model
    from worldmodels.train.mdnrnn import init_params, make_module
    from worldmodels.world_model import WorldModel

    config = get_config("default")
    vision = get_vision_model(config.vision)
    module = make_module(config.mdnrnn, vision.latent_dim, 3)
    world = WorldModel(config, vision, jax.jit(vision.init)(jax.random.key(0)), module,
                       init_params(module, jax.random.key(1)))
    step = make_agent_step(world)
    controller = world.controller_template()
    controllers = [jax.tree.map(lambda a, i=i: a * (1 + 0.1 * i), controller) for i in range(envs)]
    run_episodes(world, step, controllers[:envs], list(range(envs)), "FastCarRacing-v3", 5)  # compile
    result = run_episodes(world, step, controllers, list(range(100, 100 + envs)), "FastCarRacing-v3", steps)
    return float(result["env_steps_per_s"])


def _one_core_subprocess(expression: str) -> float:
    """Evaluate `expression` (a float) in a fresh process pinned to one core, one XLA thread."""
    import subprocess

    from worldmodels.parallel import WORKER_ENV

    code = f"import scripts.bench as b; print({expression})"
    result = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, **WORKER_ENV}, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def bench_agent() -> Iterator[Figure]:
    rate = _one_core_subprocess("b.agent_steps_per_s()")
    yield "agent_steps_per_s", rate, "steps/s"
    yield "agent_speedup_vs_gymnasium", rate / gymnasium_steps_per_s(), "x"


def make_large_rollouts(folder: str, episodes: int = 1000, frames: int = 1000) -> None:
    """`episodes` episode files of `frames` 64x64 frames each, quickly: one real-format file
    (smooth random frames, so they compress like real ones do), hard-linked under every name.
    The loader reads each name as its own episode, so memory behaves as with distinct files."""
    from worldmodels.data.episodes import episode_arrays, episode_name, save_episode

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (frames, 8, 8, 3)).astype(np.uint8).repeat(8, 1).repeat(8, 2)
    first = os.path.join(folder, episode_name(0))
    save_episode(first, episode_arrays(base, np.zeros((frames, 3)), np.zeros(frames), [False] * frames,
                                       [False] * (frames - 1) + [True], env_id="synthetic", seed=0,
                                       policy="none"))
    for i in range(1, episodes):
        target = os.path.join(folder, episode_name(i))
        if not os.path.exists(target):
            os.link(first, target)


def _peak_rss_mb(command: list[str]) -> float:
    """Peak resident memory of a child process and its children (polled every 50 ms), in MB."""
    import subprocess

    import psutil

    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    proc, peak = psutil.Process(child.pid), 0
    while child.poll() is None:
        try:
            rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.05)
    if child.returncode != 0:
        raise RuntimeError(f"{command} failed: {child.stderr.read()[-2000:]}")
    return peak / 2**20


def stream_epoch(rollouts: str, batches: int) -> None:
    """Drain `batches` batches of V's streaming loader (no training): memory of the stream."""
    from worldmodels.data.frames import FrameStream, split_episodes

    paths, _ = split_episodes(rollouts, 0.0)
    stream = FrameStream(paths, batch_size=100, chunk_frames=20000, frame_size=64)
    for i, _batch in enumerate(stream.epoch(0)):
        if i + 1 >= batches:
            break


def bench_vae_memory() -> Iterator[Figure]:
    """Peak RSS of `train-vae` on 1,000 episodes x 1,000 frames (12 GB of frames unpacked)."""
    with tempfile.TemporaryDirectory() as tmp:
        log("writing 1,000 x 1,000-frame rollouts (hard links of one real-format file)")
        make_large_rollouts(os.path.join(tmp, "rollouts"))
        rss_stream = _peak_rss_mb([sys.executable, "-c", "import scripts.bench as b; "
                                   f"b.stream_epoch({os.path.join(tmp, 'rollouts')!r}, 2000)"])
        rss_train = _peak_rss_mb([sys.executable, "-m", "pipeline.train_vae", "--config", "default", "--run", tmp,
                                  "--vision.max_steps", "100", "--vision.checkpoint_every", "1000"])
    yield "vae_stream_peak_rss_mb", rss_stream, "MB"
    yield "vae_peak_rss_mb", rss_train, "MB"


def play_fps(agent: str = "agents/carracing", seconds: float = 5.0, fps: float = 0.0) -> float:
    """Frames per second a WebSocket client receives from `make play`'s server (a subprocess
    on a free loopback port, as a user starts it) driving the dream with the gas held."""
    import asyncio
    import select
    import signal
    import subprocess

    import aiohttp

    command = [sys.executable, "-m", "pipeline.play", "--agent", agent, "--port", "0"]
    server = subprocess.Popen(command + (["--fps", str(fps)] if fps else []), stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    try:
        ready, _, _ = select.select([server.stdout], [], [], 300)
        line = server.stdout.readline() if ready else ""
        if not line.startswith("play: http://"):
            raise RuntimeError(f"make play did not start: {line!r}")
        url = line.split()[1] + "ws"

        async def count() -> float:
            async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
                await ws.send_str('{"type": "keys", "up": true}')
                frames, start, warm = 0, time.perf_counter(), 1.0  # the first second is not counted
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.BINARY:
                        continue
                    elapsed = time.perf_counter() - start
                    if elapsed >= warm:
                        frames += 1
                    if elapsed >= warm + seconds:
                        return frames / (elapsed - warm)
                raise RuntimeError("the play server closed the connection")

        return asyncio.run(count())
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def bench_play() -> Iterator[Figure]:
    """`make play AGENT=agents/carracing` driving the dream: frames delivered per second at the
    env's pace (50 for CarRacing; target >= 30), and unthrottled (logged: the headroom)."""
    rate = play_fps()
    log(f"play: {play_fps(fps=240):.1f} frames/s with --fps 240, the fastest pace the server takes (one client)")
    yield "play_dream_fps", rate, "frames/s"


GROUPS: dict[str, Callable[[], Iterator[Figure]]] = {
    "env": bench_env,
    "rollout": bench_rollout,
    "vae": bench_vae,
    "rnn": bench_rnn,
    "dream": bench_dream,
    "vae_memory": bench_vae_memory,
    "agent": bench_agent,
    "cluster": bench_cluster,
    "play": bench_play,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(GROUPS),
                        help=f"comma-separated groups among: {', '.join(GROUPS)}")
    args = parser.parse_args(argv)
    chosen = [g.strip() for g in args.only.split(",") if g.strip()]
    unknown = [g for g in chosen if g not in GROUPS]
    if unknown:
        sys.exit(f"error: unknown bench group(s) {unknown}; valid: {', '.join(GROUPS)}")
    from worldmodels.runtime import reuse_freed_memory

    # As `make train-rnn` does, before JAX starts (M's step gains from it); the torch
    # references run in this process and get the same allocator.
    log(f"allocator keeps freed memory: {reuse_freed_memory()}")
    for group in chosen:
        log(f"{group} ...")
        for name, value, unit in GROUPS[group]():
            print(f"{name} {value:.4g} {unit}", flush=True)


if __name__ == "__main__":
    main()
