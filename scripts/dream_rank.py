"""Does a dream rank controllers as the real game does? Each controller is scored in the real
environment and in the dream of each given M, at each tau; prints Spearman and Pearson
correlations and the dream / real ratio per M and tau, and writes OUT/rank.json and rank.md.

    .venv/bin/python -m scripts.dream_rank --worlds orig=DIR refit=DIR --controllers DIR ... \
        [--total 20] [--real-episodes 16] [--real-seed 20000] [--taus 0.5,1.15] [--out DIR]

DIR of a world: an agent or run directory (vision/, mdnrnn/, series/, config.json). The
controllers are agent directories (controller/best.msgpack) that read the same h as every
world's M (the worlds' Ms share their LSTM, as after `mdnrnn.done_refit_steps`); `--total`
tops the list up with Gaussian perturbations of them (sd 0.1, 0.2 or 0.3 of their own sd).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", nargs="+", required=True, help="NAME=DIR")
    parser.add_argument("--controllers", nargs="+", required=True, type=Path)
    parser.add_argument("--total", type=int, default=20)
    parser.add_argument("--real-episodes", type=int, default=16)
    parser.add_argument("--real-seed", type=int, default=20_000)
    parser.add_argument("--dream-episodes", type=int, default=64)
    parser.add_argument("--taus", default="0.5,1.15")
    parser.add_argument("--out", type=Path, default=Path("runs/dream-rank"))
    args = parser.parse_args(argv)

    from jax.flatten_util import ravel_pytree
    from scipy.stats import pearsonr, spearmanr

    from worldmodels.agent import load_controller
    from worldmodels.parallel import ParallelEpisodes, init_ray
    from worldmodels.train.es import DreamScorer
    from worldmodels.world_model import load_agent_config, load_world_model

    worlds = dict(w.split("=", 1) for w in args.worlds)
    taus = [float(t) for t in args.taus.split(",")]
    config = load_agent_config(args.controllers[0])
    world = load_world_model(args.controllers[0], config)
    flats = [np.asarray(ravel_pytree(load_controller(c, world))[0]) for c in args.controllers]
    names = [f"{c.parent.parent.name}/{c.name}" for c in args.controllers]
    rng = np.random.default_rng(0)
    base = len(flats)
    while len(flats) < args.total:
        i = rng.integers(base)
        sd = rng.choice([0.1, 0.2, 0.3])
        flats.append(flats[i] + sd * flats[i].std() * rng.standard_normal(flats[i].shape))
        names.append(f"{names[i]} + N(0, {sd:g})")
    flats = np.stack(flats).astype(np.float32)
    rows: dict = {"names": names}
    for tag, folder in worlds.items():
        for tau in taus:
            cfg = replace(config, controller=replace(config.controller, temperature=tau))
            scorer = DreamScorer(load_world_model(folder, cfg), cfg, Path(folder) / "series")
            t0 = time.time()
            rows[f"dream_{tag}_{tau:g}"] = scorer.returns(flats, args.dream_episodes, seed=4_000_000,
                                                          what="--dream-episodes").mean(1).tolist()
            print(f"dream {tag} tau {tau:g}: {time.time() - t0:.0f} s", flush=True)
    init_ray()
    episodes = ParallelEpisodes(world, workers=2, max_task_episodes=8)
    n = args.real_episodes
    t0 = time.time()
    result = episodes.run(np.repeat(flats, n, 0), np.tile(args.real_seed + np.arange(n), len(flats)),
                          config.env.eval_id, config.eval.max_steps)
    real = result["returns"].reshape(len(flats), n)
    rows["real"], rows["real_std"] = real.mean(1).tolist(), real.std(1).tolist()
    print(f"real: {time.time() - t0:.0f} s", flush=True)
    summary = {}
    r = np.array(rows["real"])
    for key in [k for k in rows if k.startswith("dream_")]:
        d = np.array(rows[key])
        summary[key] = {"spearman": float(spearmanr(d, r)[0]), "pearson": float(pearsonr(d, r)[0]),
                        "mean_dream_over_real": float(d.mean() / r.mean()),
                        "real_of_dream_best": float(r[np.argmax(d)]),
                        "real_of_dream_top5": float(r[np.argsort(d)[-5:]].mean())}
        print(key, {k: round(v, 3) for k, v in summary[key].items()}, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rank.json").write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))
    keys = [k for k in rows if k.startswith("dream_")]
    lines = [f"| controller | real ({n} episodes) | " + " | ".join(keys) + " |",
             "|---|---|" + "---|" * len(keys)]
    for i, name in enumerate(names):
        lines.append(f"| {name} | {r[i]:.0f} | " + " | ".join(f"{rows[k][i]:.0f}" for k in keys) + " |")
    (args.out / "rank.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
