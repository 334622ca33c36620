"""Ray: start-up shared by every parallel stage, and the agent's episodes spread over workers.

`ray.init()` starts a local Ray on this machine; with RAY_ADDRESS set (or `address=`), the
same code joins an existing cluster. Workers get one thread each for XLA, OpenMP and BLAS,
so N workers on N cores do not oversubscribe the machine.

`ParallelEpisodes`: jobs (controller vector, env seed) are cut into tasks; each task runs its
episodes together in one worker (one batched V+M+C call per time step). V and M travel once
through Ray's object store. A worker that dies has its task retried by Ray (`max_retries`); a
task that runs past `timeout` seconds is cancelled and resubmitted, so a stuck episode cannot
hang a generation.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from worldmodels.errors import WorldModelsError

if TYPE_CHECKING:
    from worldmodels.world_model import WorldModel

WORKER_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    "JAX_PLATFORMS": "cpu",
    "SDL_VIDEODRIVER": "dummy",
    "SDL_AUDIODRIVER": "dummy",
    "PYGAME_HIDE_SUPPORT_PROMPT": "1",
    "TF_CPP_MIN_LOG_LEVEL": "3",
}


def init_ray(num_cpus: int | None = None, address: str | None = None):
    """Start (or join) Ray once per process and return the `ray` module."""
    import ray

    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs = dict(
        include_dashboard=False,
        logging_level="ERROR",
        log_to_driver=True,
        configure_logging=True,
        runtime_env={"env_vars": WORKER_ENV},
    )
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, **kwargs)
    return ray


def cluster_cpus() -> int:
    """CPUs Ray can schedule on (all nodes)."""
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def world_id(world: WorldModel) -> str:
    import jax

    digest = hashlib.sha256(world.config.to_json().encode())
    for leaf in jax.tree.leaves((world.vision_params, world.rnn_params)):
        digest.update(np.asarray(leaf).tobytes())
    return digest.hexdigest()[:16]


class ParallelEpisodes:
    """Runs batches of episodes for one world model on Ray."""

    def __init__(self, world: WorldModel, workers: int = 0, timeout: float = 900.0, max_attempts: int = 3,
                 max_task_episodes: int = 32):
        from worldmodels.agent import episodes_task

        self.ray = init_ray(num_cpus=workers or None)
        self.parallel = workers or cluster_cpus()
        self.world_id = world_id(world)
        self.payload = self.ray.put(world.payload())
        self.timeout, self.max_attempts, self.max_task_episodes = timeout, max_attempts, max_task_episodes
        # SPREAD: a generation's tasks go to every node with a free CPU rather than queueing
        # behind the driver's own node (Ray's default prefers the local node while it is below
        # half load, so a short generation could run entirely on the head node).
        self.task = self.ray.remote(num_cpus=1, max_retries=3, scheduling_strategy="SPREAD")(episodes_task)

    def chunks(self, jobs: int) -> list[np.ndarray]:
        """How `run` groups jobs into tasks (episodes of a task are stepped together; the agent's
        step is batch-invariant, so the grouping changes no result, only the load balance)."""
        size = min(self.max_task_episodes, max(1, math.ceil(jobs / self.parallel)))
        return [np.arange(i, min(i + size, jobs)) for i in range(0, jobs, size)]

    def replay(self, flat_controllers: np.ndarray, seeds: np.ndarray, env_id: str, max_steps: int,
               episode: int) -> dict[str, np.ndarray]:
        """Rerun episode `episode` alone and return its raw frames: the agent is deterministic
        and its step batch-invariant, so it is the episode `run` scored."""
        ref = self.task.remote(self.world_id, self.payload, flat_controllers[episode:episode + 1],
                               [int(seeds[episode])], env_id, max_steps, 0)
        result = self.ray.get(ref)
        return {"frames": result["frames"], "return": float(result["returns"][0])}

    def run(self, flat_controllers: np.ndarray, seeds: np.ndarray, env_id: str, max_steps: int,
            on_task_done: Callable[[int], None] | None = None, stall_steps: int = 0) -> dict[str, np.ndarray]:
        """Episode j: controller `flat_controllers[j]` on env seed `seeds[j]` (`stall_steps`: see
        `run_episodes`).
        Returns returns (J,), steps (J,), how each episode drove (`run_episodes`) and the env
        steps/s of the whole call."""
        ray = self.ray
        jobs = len(seeds)
        chunks = self.chunks(jobs)
        merged: dict[str, np.ndarray] = {}  # returns, steps and the per-episode driving stats
        queue = list(range(len(chunks)))
        attempts = dict.fromkeys(queue, 0)
        running: dict = {}  # ref -> (chunk number, start time)
        start = time.perf_counter()

        def submit(c: int) -> None:
            attempts[c] += 1
            if attempts[c] > self.max_attempts:
                raise WorldModelsError(f"a batch of {len(chunks[c])} episodes failed or timed out "
                                       f"{self.max_attempts} times; see the Ray logs")
            idx = chunks[c]
            ref = self.task.remote(self.world_id, self.payload, flat_controllers[idx],
                                   [int(s) for s in seeds[idx]], env_id, max_steps, None, stall_steps)
            running[ref] = (c, time.perf_counter())

        while queue or running:
            while queue and len(running) < self.parallel:
                submit(queue.pop(0))
            ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            for ref in ready:
                c, _ = running.pop(ref)
                try:
                    result = ray.get(ref)
                except (ray.exceptions.WorkerCrashedError, ray.exceptions.TaskCancelledError,
                        ray.exceptions.NodeDiedError, ray.exceptions.ObjectLostError):
                    queue.append(c)  # the worker or its node died: run the batch elsewhere
                    continue
                except ray.exceptions.RayTaskError as exc:
                    if isinstance(exc.cause, WorldModelsError):
                        raise exc.cause from None
                    raise
                for key, value in result.items():
                    if key in ("env_steps_per_s", "frames"):
                        continue
                    if key not in merged:
                        merged[key] = np.full((jobs, *np.shape(value)[1:]), np.nan if key.startswith("stat_")
                                              else 0, np.asarray(value).dtype)
                    merged[key][chunks[c]] = value
                if on_task_done is not None:
                    on_task_done(len(chunks[c]))
            now = time.perf_counter()
            for ref, (c, began) in list(running.items()):
                if now - began > self.timeout:
                    ray.cancel(ref, force=True)
                    running.pop(ref)
                    queue.append(c)
        seconds = time.perf_counter() - start
        merged.setdefault("returns", np.zeros(jobs))
        merged.setdefault("steps", np.zeros(jobs, np.int64))
        return {**merged, "env_steps_per_s": merged["steps"].sum() / max(seconds, 1e-9)}
