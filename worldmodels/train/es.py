"""Training C with CMA-ES (pycma), in the real environment (Ray) or in M's dream (one jit).

Each generation: `ask` a population, score every candidate by its mean return over
`rollouts` episodes (every candidate sees the same env seeds / dream keys that generation),
`tell` pycma the negated scores (it minimises). Every `eval_every` generations the
generation's best candidate and the search mean are scored in the real environment on fixed
seeds (or, with `controller.checks` 'dream', in the dream on fixed keys, so C never sees the
real game before evaluation: Doom); the best of those is `controller/best.msgpack`, the agent
`make evaluate` scores. generations.csv's check_* columns and best.json's `check` hold those
checks wherever they ran (`checks` in best.json says where).
pycma's state (its own pickle, the one pickled file of the project) and the best parameters
are saved every generation, so a killed run resumes the same search.
"""

from __future__ import annotations

import json
import pickle
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from worldmodels.checkpoint import load_checkpoint, save_checkpoint
from worldmodels.config import Config
from worldmodels.data.atomic import atomic_write_bytes, atomic_write_text
from worldmodels.envs import controller_squash, get_env_module
from worldmodels.errors import ConfigError, DataError
from worldmodels.models.controller import controller_features, controller_output
from worldmodels.train.common import MetricsLog
from worldmodels.world_model import WorldModel, dream_rewards, load_world_model, series_dream_start  # noqa: F401

COLUMNS = ("generation", "mean", "best", "worst", "sigma", "steps_per_s", "seconds", "check_best",
           "check_mean_candidate", "check_kept")
# Names used until 2026-12-01, when the checks could only run in the real env: a resumed run's
# generations.csv and best.json are read under the new names.
OLD_NAMES = {"real_best": "check_best", "real_mean_candidate": "check_mean_candidate",
             "real_score_kept": "check_kept", "real": "check"}


def renamed(row: dict) -> dict:
    return {OLD_NAMES.get(k, k): v for k, v in row.items()}
DREAM_CHUNK = 100  # dream steps between checks that the whole batch of episodes has ended
TRAIN_SEED_BASE = 1_000_000  # real-env seeds used while training (evaluation uses SEED=...)
EVAL_SEED_BASE = 2_000_000  # fixed seeds of the periodic real-env checks


class SeededNormal:
    """pycma's `randn` option with its own generator: the search's samples depend only on
    the seed, and the generator is pickled with pycma's state, so a resume continues it."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def __call__(self, *shape: int) -> np.ndarray:
        return self.rng.standard_normal(shape)


def make_cma(dim: int, population: int, sigma0: float, seed: int, x0: np.ndarray | None = None):
    import cma

    if population < 2:
        raise ConfigError(f"controller.population={population}: CMA-ES needs at least 2 candidates")
    try:
        return cma.CMAEvolutionStrategy(np.zeros(dim) if x0 is None else x0, sigma0, {
            "popsize": population, "seed": seed + 1, "randn": SeededNormal(seed), "verbose": -9,
            "CMA_diagonal": False, "tolfun": 0, "tolx": 0, "tolstagnation": 10**9, "tolflatfitness": 10**9,
        })
    except Exception as exc:  # pycma validates its options
        raise ConfigError(f"pycma refused the search settings: {exc}") from None


def load_dream_worlds(folders: tuple[str, ...], world: WorldModel):
    """The Ms of `controller.dream_worlds`, their parameters stacked on a leading axis (None
    for none). Each must have the run's M's shapes (same V, same mdnrnn sizes)."""
    from worldmodels.train.mdnrnn import load_mdnrnn

    if not folders:
        return None
    config = world.config
    stacked = []
    for folder in map(Path, folders):
        if not (folder / "params.msgpack").exists() and (folder / "mdnrnn").is_dir():
            folder = folder / "mdnrnn"
        _, params = load_mdnrnn(folder, config.mdnrnn, world.vision.latent_dim,
                                get_env_module(config.env.name).ACTION_DIM)
        stacked.append(params)
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *stacked)


class DreamScorer:
    """Scores a whole population in M's dream with one jitted vmap-over-vmap-over-scan call."""

    def __init__(self, world: WorldModel, config: Config, series_folder: Path):
        from jax.flatten_util import ravel_pytree

        from worldmodels.envs.dream import DreamEnv, dream_params, dream_rollout

        cfg = config.controller
        if cfg.dream_done not in ("threshold", "sample"):
            raise ConfigError(f"controller.dream_done='{cfg.dream_done}': valid are 'threshold', 'sample'")
        if cfg.dream_ensemble not in ("", "mean", "max"):
            raise ConfigError(f"controller.dream_ensemble='{cfg.dream_ensemble}': valid are '' (off), 'mean', 'max'")
        if cfg.dream_ensemble and len(cfg.dream_worlds) < 2:
            raise ConfigError("controller.dream_ensemble needs two or more controller.dream_worlds to dream in")
        if cfg.dream_done_scale < 0:
            raise ConfigError(f"controller.dream_done_scale={cfg.dream_done_scale}: must be >= 0")
        start = series_dream_start(series_folder, world.module.reward_head)
        env = DreamEnv(world.module)
        self.worlds = load_dream_worlds(cfg.dream_worlds, world)
        self.world_count = 1 if cfg.dream_ensemble else len(cfg.dream_worlds) or 1
        self.params = dream_params(world, start, cfg.temperature, cfg.dream_max_steps,
                                   done_sample=cfg.dream_done == "sample", done_scale=cfg.dream_done_scale,
                                   ensemble=cfg.dream_ensemble,
                                   agent_rnn=None if self.worlds is None else world.rnn_params)
        self.check_split(cfg.rollouts, "controller.rollouts")
        self.check_worlds = load_dream_worlds(cfg.check_worlds, world)
        self.check_count = len(cfg.check_worlds)
        if cfg.checks == "dream":
            self.check_split(cfg.eval_episodes, "controller.eval_episodes", checks=True)
        _, unravel = ravel_pytree(world.controller_template())
        squash = controller_squash(config)
        features = cfg.features

        def policy(flat, obs):
            return squash(controller_output(unravel(flat), controller_features(obs, features)))

        def in_world(flat, keys, params):
            one = lambda key: dream_rollout(env, params, policy, flat, key, cfg.dream_max_steps, chunk=DREAM_CHUNK)
            return jax.vmap(one)(keys)

        def score(flat_population, keys, params, worlds):
            """keys (W, n): episode keys per world -> (totals, lengths), each (P, W * n)."""
            if worlds is None:
                per_candidate = lambda flat: in_world(flat, keys[0], params)
            elif params.ensemble:  # every episode dreams in all the worlds at once
                per_candidate = lambda flat: in_world(flat, keys[0], params.replace(rnn=worlds))
            else:  # one batched call over the worlds' stacked parameters
                per_world = lambda flat, ks, rnn: in_world(flat, ks, params.replace(rnn=rnn))
                per_candidate = lambda flat: jax.tree.map(
                    lambda a: a.reshape(-1), jax.vmap(per_world, in_axes=(None, 0, 0))(flat, keys, worlds))
            return jax.vmap(per_candidate)(flat_population)

        self.score = jax.jit(score)
        self.rollouts, self.seed = cfg.rollouts, cfg.seed

    def check_split(self, count: int, what: str, checks: bool = False) -> None:
        """The config field `what` = `count` episodes must split evenly among the worlds they
        dream in (the held-out check worlds with `checks`, where there are some)."""
        worlds, field = ((self.check_count, "controller.check_worlds") if checks and self.check_count
                         else (self.world_count, "controller.dream_worlds"))
        if count % worlds:
            raise ConfigError(f"{what}={count} does not split evenly among the {worlds} "
                              f"{field}; use a multiple of {worlds}")

    def split_keys(self, keys: jax.Array, what: str, checks: bool = False) -> jax.Array:
        """(n,) episode keys -> (worlds, n / worlds): episode i dreams in world i // (n / worlds)."""
        self.check_split(len(keys), what, checks)
        return keys.reshape(self.check_count if checks and self.check_count else self.world_count, -1)

    def __call__(self, solutions: np.ndarray, generation: int) -> tuple[np.ndarray, float]:
        keys = jax.random.split(jax.random.key(self.seed * 100_003 + generation), self.rollouts)
        keys = self.split_keys(keys, "controller.rollouts")
        start = time.perf_counter()
        totals, lengths = self.score(jnp.asarray(solutions, jnp.float32), keys, self.params, self.worlds)
        totals = np.asarray(totals)
        steps = int(np.asarray(lengths).sum())  # dreamed steps: finished episodes stop early
        return totals.mean(axis=1), steps / (time.perf_counter() - start)

    def returns(self, candidates: np.ndarray, episodes: int, seed: int = EVAL_SEED_BASE,
                what: str = "controller.eval_episodes") -> np.ndarray:
        """Dream returns (P, episodes) of each candidate on fixed keys (the same for every
        call with the same seed): the dream's counterpart of `real_scores`. With dream worlds,
        episode i dreams in world i // (episodes / worlds); `what` names the count's field."""
        keys = self.split_keys(jax.random.split(jax.random.key(seed), episodes), what)
        totals, _ = self.score(jnp.asarray(candidates, jnp.float32), keys, self.params, self.worlds)
        return np.asarray(totals)

    def checks(self, candidates: np.ndarray, episodes: int) -> np.ndarray:
        """The dream checks' returns (P, episodes): `returns` in the training dream, or on the
        same fixed keys in the held-out `controller.check_worlds`."""
        if self.check_worlds is None:
            return self.returns(candidates, episodes)
        keys = self.split_keys(jax.random.split(jax.random.key(EVAL_SEED_BASE), episodes),
                               "controller.eval_episodes", checks=True)
        params = self.params.replace(agent_rnn=self.params.rnn if self.params.agent_rnn is None
                                     else self.params.agent_rnn, ensemble="")
        totals, _ = self.score(jnp.asarray(candidates, jnp.float32), keys, params, self.check_worlds)
        return np.asarray(totals)


class RealScorer:
    """Scores a population in the real environment on Ray workers."""

    def __init__(self, world: WorldModel, config: Config):
        from worldmodels.parallel import ParallelEpisodes

        cfg = config.controller
        self.episodes = ParallelEpisodes(world, workers=cfg.workers, timeout=cfg.episode_timeout)
        self.env_id, self.max_steps, self.rollouts = config.env.train_id, cfg.max_steps, cfg.rollouts
        self.stall_steps = cfg.stall_steps

    def __call__(self, solutions: np.ndarray, generation: int) -> tuple[np.ndarray, float]:
        population = len(solutions)
        seeds = TRAIN_SEED_BASE + generation * self.rollouts + np.arange(self.rollouts)
        flat = np.repeat(solutions, self.rollouts, axis=0)
        result = self.episodes.run(flat, np.tile(seeds, population), self.env_id, self.max_steps,
                                   stall_steps=self.stall_steps)
        return result["returns"].reshape(population, self.rollouts).mean(axis=1), result["env_steps_per_s"]


def real_scores(episodes, candidates: np.ndarray, config: Config) -> np.ndarray:
    """Mean real-env return of each candidate over the fixed check seeds."""
    n = config.controller.eval_episodes
    seeds = EVAL_SEED_BASE + np.arange(n)
    result = episodes.run(np.repeat(candidates, n, axis=0), np.tile(seeds, len(candidates)),
                          config.env.train_id, config.controller.max_steps)
    return result["returns"].reshape(len(candidates), n).mean(axis=1)


def train_controller(config: Config, run: str | Path, progress: bool = True,
                     progress_fn: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Evolve C into RUN/controller; resumes from RUN/controller/cma_state.pkl."""
    from jax.flatten_util import ravel_pytree

    from worldmodels.parallel import ParallelEpisodes, init_ray

    cfg = config.controller
    if cfg.checks not in ("real", "dream") or (cfg.checks == "dream" and not cfg.dream):
        raise ConfigError(f"controller.checks='{cfg.checks}': valid are 'real', and 'dream' with "
                          "controller.dream true")
    if cfg.check_worlds and cfg.checks != "dream":
        raise ConfigError("controller.check_worlds: held-out Ms score dream checks only; set "
                          "controller.checks dream or clear controller.check_worlds")
    run = Path(run)
    out = run / "controller"
    out.mkdir(parents=True, exist_ok=True)
    init_ray(num_cpus=cfg.workers or None)  # before JAX starts its threads: Ray forks helpers
    world = load_world_model(run, config)
    template = world.controller_template()
    flat0, unravel = ravel_pytree(template)
    state_path = out / "cma_state.pkl"
    if state_path.exists():
        try:
            es = pickle.loads(state_path.read_bytes())
        except Exception as exc:
            raise DataError(f"{state_path} is corrupt ({type(exc).__name__}); delete it to restart the "
                            "search") from None
        if len(es.mean) != len(flat0):
            raise ConfigError(f"{state_path} searches {len(es.mean)} parameters, this controller has "
                              f"{len(flat0)}; use another RUN= or delete {out}")
    else:
        x0 = None
        if cfg.init_from:
            start_params, _ = load_checkpoint(cfg.init_from, template)
            x0 = np.asarray(ravel_pytree(start_params)[0], np.float64)
        es = make_cma(len(flat0), cfg.population, cfg.sigma0, cfg.seed, x0)
    generation = es.countiter
    log = MetricsLog(out / "generations.csv", COLUMNS, resume_step=generation, key="generation")
    log.rows = [renamed(r) for r in log.rows]
    scorer = DreamScorer(world, config, run / "series") if cfg.dream else RealScorer(world, config)
    checker = scorer.episodes if isinstance(scorer, RealScorer) else None
    meta_path = out / "best.json"
    best = renamed(json.loads(meta_path.read_text())) if meta_path.exists() else {"fitness": -np.inf, "check": -np.inf}
    start = time.perf_counter()
    if progress and generation < cfg.generations:
        mode = "dream" if cfg.dream else "real env"
        print(f"train C ({mode}): {len(flat0)} parameters, population {cfg.population}, "
              f"{cfg.rollouts} rollouts each, generations {generation}..{cfg.generations}", flush=True)

    def check(candidates: np.ndarray) -> np.ndarray:
        """Each candidate's mean check score: on fixed dream keys or the real env's check seeds."""
        nonlocal checker
        if cfg.checks == "dream":
            return scorer.checks(candidates, cfg.eval_episodes).mean(axis=1)
        if checker is None:
            checker = ParallelEpisodes(world, workers=cfg.workers, timeout=cfg.episode_timeout)
        return real_scores(checker, candidates, config)

    if cfg.check_start and cfg.init_from and generation == 0 and not np.isfinite(best["check"]):
        x0 = np.asarray(es.mean)[None]
        score = float(check(x0)[0])
        best.update({"check": score, "start_check": score, "generation": 0, "which": "start", "checks": cfg.checks})
        save_checkpoint(out / "best.msgpack", unravel(jnp.asarray(x0[0])),
                        {"generation": 0, "check_score": score, "checks": cfg.checks, "start": cfg.init_from})
        atomic_write_text(meta_path, json.dumps(best, indent=2))
        if progress:
            print(f"gen    0  the start C ({cfg.init_from}): {cfg.checks} check {score:.1f}", flush=True)
    while generation < cfg.generations:
        t0 = time.perf_counter()
        solutions = np.asarray(es.ask())
        fitness, rate = scorer(solutions, generation)
        es.tell(list(solutions), list(-fitness))
        generation += 1
        top = int(np.argmax(fitness))
        row = {"generation": generation, "mean": float(fitness.mean()), "best": float(fitness[top]),
               "worst": float(fitness.min()), "sigma": float(es.sigma), "steps_per_s": rate}
        if fitness[top] > best["fitness"]:
            best["fitness"] = float(fitness[top])
            save_checkpoint(out / "best_fitness.msgpack", unravel(jnp.asarray(solutions[top])),
                            {"generation": generation, "fitness": best["fitness"]})
        if generation % cfg.eval_every == 0 or generation == cfg.generations:
            candidates = np.stack([solutions[top], np.asarray(es.mean)])
            scores = check(candidates)
            row["check_best"], row["check_mean_candidate"] = float(scores[0]), float(scores[1])
            pick = int(np.argmax(scores))
            if scores[pick] > best["check"]:
                best["check"], best["generation"] = float(scores[pick]), generation
                best["which"] = ["generation best", "search mean"][pick]
                best["checks"] = cfg.checks  # where `check` was scored: the real env or the dream
                save_checkpoint(out / "best.msgpack", unravel(jnp.asarray(candidates[pick])),
                                {"generation": generation, "check_score": float(scores[pick]),
                                 "checks": cfg.checks})
            row["check_kept"] = best["check"]
        row["seconds"] = time.perf_counter() - t0
        log.append(row)
        # Order matters for a kill at any moment: parameters first, then the search state
        # that says this generation is done.
        atomic_write_text(meta_path, json.dumps(best, indent=2))
        log.write()
        atomic_write_bytes(state_path, pickle.dumps(es))
        if progress:
            real = (f" {cfg.checks} check {row['check_best']:.1f}/{row['check_mean_candidate']:.1f}"
                    if "check_best" in row else "")
            print(f"gen {generation:4d}  mean {row['mean']:8.1f}  best {row['best']:8.1f}  worst "
                  f"{row['worst']:8.1f}  sigma {row['sigma']:.4f}  {rate:9.0f} steps/s  "
                  f"{row['seconds']:.1f}s{real}", flush=True)
        if progress_fn is not None:
            progress_fn(row)

    if not (out / "best.msgpack").exists() and (out / "best_fitness.msgpack").exists():
        params, meta = load_checkpoint(out / "best_fitness.msgpack", template)
        save_checkpoint(out / "best.msgpack", params, meta)
    save_controller_pictures(out, log.rows, dream=cfg.dream, checks=cfg.checks)
    summary = {"generations": generation, "parameters": len(flat0), "dream": cfg.dream, "checks": cfg.checks,
               "best_fitness": best["fitness"], "best_check": best["check"],
               "best_check_generation": best.get("generation"),
               "train_seconds_this_run": time.perf_counter() - start}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return summary


def save_controller_pictures(out: Path, rows, dream: bool, checks: str = "real") -> None:
    from worldmodels.viz.plots import plot_curves

    if not rows:
        return
    label = "dream return" if dream else "return"
    panels = [["mean", "best", "worst"], ["check_best", "check_mean_candidate"], ["sigma"]]
    plot_curves(out / "curves.png", rows, x="generation", panels=panels,
                title=f"C with CMA-ES: population {label} (left), {checks}-env checks (middle)")
