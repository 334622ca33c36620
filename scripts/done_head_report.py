"""Where M's done head finds deaths: training vs held-out episodes, before and after frame 500.

    .venv/bin/python -m scripts.done_head_report RUN [--config doom-default]

Reads RUN/mdnrnn/params.msgpack and RUN/series (split as train-rnn splits them), runs M over
whole episodes from their first frame with z = mu (as the dream runs, state carried), and prints
the done head's recall at 1 % false alarms, AUC and log loss per part. M trains on windows of
`mdnrnn.seq_len` from the episodes' first frames, so frames past it are ones it never trained on.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--config", default="doom-default")
    args = parser.parse_args(argv)

    import jax

    from worldmodels.checkpoint import load_checkpoint
    from worldmodels.config import Config, get_config
    from worldmodels.train.done_refit import episode_hiddens, log_loss
    from worldmodels.train.mdnrnn import SeriesData, done_quality, init_params, make_module, split_series

    saved = args.run / "mdnrnn" / "config.json"
    config = Config.from_dict(json.loads(saved.read_text())) if saved.exists() else get_config(args.config)
    cfg = config.mdnrnn
    train_paths, held_paths = split_series(args.run / "series", cfg.holdout_fraction)
    rows = []
    for name, paths in (("train", train_paths), ("held-out", held_paths)):
        data = SeriesData.load(paths)
        module = make_module(cfg, data.latent_dim, data.action_dim)
        params, _ = load_checkpoint(args.run / "mdnrnn" / "params.msgpack",
                                    jax.device_get(init_params(module, jax.random.key(0))))
        _, logit, death = episode_hiddens(module, params, data)
        t = np.concatenate([np.arange(n) for n in data.lengths])
        for part, sel in (("all", t >= 0), (f"t < {cfg.seq_len}", t < cfg.seq_len),
                          (f"t >= {cfg.seq_len}", t >= cfg.seq_len)):
            if not death[sel].any():
                continue
            q = done_quality(logit[sel], death[sel], np.ones(int(sel.sum()), bool))
            rows.append((name, part, int(death[sel].sum()), q["heldout_done_recall_at_1pct"],
                         q.get("heldout_done_auc", float("nan")), log_loss(logit[sel], death[sel])))
    print("| episodes | frames | deaths | recall at 1 % false alarms | AUC | log loss |")
    print("|---|---|---|---|---|---|")
    for name, part, deaths, recall, auc, loss in rows:
        print(f"| {name} | {part} | {deaths} | {recall:.2f} | {auc:.3f} | {loss:.4f} |")


if __name__ == "__main__":
    main()
