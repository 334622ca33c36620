"""Doom: several dream-trained controllers vote. Every controller reads the same V and M (one
LSTM step per frame); the action is the mean of their tanh(C_i [z, c, h]) cut at +-1/3, as one
controller's output is. With a single run it plays exactly the episodes `make evaluate` plays.

    .venv/bin/python scripts/doom_vote.py --out vote.json --seed 1000 --episodes 100 RUN [RUN ...]

Each RUN holds controller/best.msgpack; V and M come from the first (all must share them).
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from worldmodels.agent import load_controller
from worldmodels.envs import doom
from worldmodels.models.controller import controller_features, controller_output
from worldmodels.models.mdnrnn import MDNRNN, LSTMState
from worldmodels.world_model import load_world_model


def make_vote_step(world, controllers):
    stack = jax.tree.map(lambda *leaves: jnp.stack(leaves), *controllers)
    features = world.config.controller.features

    @jax.jit
    def step(frames, h, c):
        z, _ = world.vision.encode(world.vision_params, frames.astype(jnp.float32) / 255.0)
        x = controller_features({"z": z, "h": h, "c": c}, features)
        vote = jnp.tanh(jax.vmap(lambda p: controller_output(p, x))(stack)).mean(0)
        action = jnp.where(vote > doom.ACTION_THRESHOLD, 1.0, jnp.where(vote < -doom.ACTION_THRESHOLD, -1.0, 0.0))
        lstm = world.module.apply({"params": world.rnn_params}, LSTMState(h, c),
                                  world.module.inputs(z, action, jnp.zeros(z.shape[:1])), method=MDNRNN.step)[0]
        return action, lstm.h, lstm.c

    return step


def play(step, hidden: int, seeds: list[int], max_steps: int) -> np.ndarray:
    """Episodes on `seeds` at once, one batched step per frame; returns their returns."""
    envs = [doom.make_env("VizdoomTakeCover-v1") for _ in seeds]
    try:
        frames = np.stack([doom.preprocess_frame(env.reset(seed=s)[0]) for env, s in zip(envs, seeds, strict=True)])
        h = c = jnp.zeros((len(seeds), hidden))
        returns, alive = np.zeros(len(seeds)), np.ones(len(seeds), bool)
        for _ in range(max_steps):
            actions, h, c = step(frames, h, c)
            actions = np.asarray(actions)
            for i in np.flatnonzero(alive):
                obs, reward, terminated, truncated, _ = envs[i].step(actions[i])
                returns[i] += reward
                if terminated or truncated:
                    alive[i] = False
                else:
                    frames[i] = doom.preprocess_frame(obs)
            if not alive.any():
                break
    finally:
        for env in envs:
            env.close()
    return returns


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--out", required=True, help="JSON file for the runs and each seed's score")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--batch", type=int, default=10, help="episodes played at once")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="frames per episode at most (default: the first run's eval.max_steps, 2,100 for Doom)")
    args = parser.parse_args(argv)
    world = load_world_model(args.runs[0])
    step = make_vote_step(world, [load_controller(run, world) for run in args.runs])
    max_steps = args.max_steps or world.config.eval.max_steps
    scores, start = {}, time.perf_counter()
    for first in range(args.seed, args.seed + args.episodes, args.batch):
        seeds = list(range(first, min(first + args.batch, args.seed + args.episodes)))
        scores.update(zip(seeds, play(step, world.module.hidden, seeds, max_steps).tolist(), strict=True))
        values = np.array(list(scores.values()))
        print(f"{len(scores)} episodes: {values.mean():.1f} ± {values.std():.1f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    with open(args.out, "w") as f:
        json.dump({"runs": args.runs, "scores": scores}, f, indent=1)


if __name__ == "__main__":
    main()
