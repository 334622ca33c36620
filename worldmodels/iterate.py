"""One round of the paper's "iterative training procedure" on a run (`make iterate ROUND=k`).

Round k works in RUN/round<k>, which becomes an agent dir of its own:
1. the agent of round k-1 (RUN itself for k = 1) plays iterate.episodes episodes of env.train_id,
   taking the preset's random policy's action at a share iterate.explore of steps
   -> RUN/round<k>/rollouts;
2. RUN's V (unchanged) encodes them -> RUN/round<k>/series;
3. M: round k-1's M trained iterate.rnn_steps more steps on RUN/series plus every round's
   series up to k (fresh optimiser) -> RUN/round<k>/mdnrnn;
4. C evolved with the preset's controller settings in the new M (its dream, for dream presets),
   from scratch or from round k-1's C (`iterate.init_c`) -> RUN/round<k>/controller;
5. scored like `make evaluate` -> RUN/round<k>/eval; V's and M's fit to the agent's own held-out
   episodes before and after the round, and C's score in its own dream beside its real score
   -> RUN/round<k>/diagnostics.json; a line in RUN/iterate.csv, and RUN/iterate.md, the table
   of every round (`round_table`).
Every step resumes where a killed run stopped; `run_rounds` (`make iterate-all`) runs rounds
1..iterate.rounds and skips those already finished. Afterwards `make evaluate AGENT=RUN/round<k>`
and `make export-agent RUN=RUN/round<k>` work as for any run.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from worldmodels.config import Config
from worldmodels.errors import ConfigError, DataError

ROUND_SEED_STRIDE = 10_000_000
"""Round k's episodes use env seeds rollouts.seed + k * stride + i: apart from the random
rollouts (0..), the evaluation (eval.seed = 0..) and the controller's checks (2,000,000..)."""


def round_config(config: Config, run: Path, k: int) -> Config:
    """The config of round k: the rollouts and M sections changed as the round needs."""
    prev = run if k == 1 else run / f"round{k - 1}"
    it = config.iterate
    start_c = (run / f"round{k}" / "c_refit" if it.refit_c else prev / "controller") / "best.msgpack"
    return dataclasses.replace(
        config,
        rollouts=dataclasses.replace(config.rollouts, episodes=it.episodes,
                                     seed=config.rollouts.seed + k * ROUND_SEED_STRIDE),
        mdnrnn=dataclasses.replace(config.mdnrnn, steps=it.rnn_steps,
                                   init_from=str(prev / "mdnrnn" / "params.msgpack")),
        controller=dataclasses.replace(config.controller, init_from=str(start_c))
        if it.init_c == "previous" else config.controller,
    )


def check_round(config: Config, run: Path, k: int) -> Path:
    """Refuse a round that cannot start (before anything is written); the previous agent's dir."""
    if k < 1:
        raise ConfigError(f"--round must be >= 1, got {k}")
    prev = run if k == 1 else run / f"round{k - 1}"
    if not (prev / "controller" / "best.msgpack").exists():
        what = "`make all` (or `make train-controller`)" if k == 1 else f"`make iterate ROUND={k - 1}`"
        raise DataError(f"round {k} starts from the agent in {prev}, which has no controller; run {what} first")
    it = config.iterate
    if it.episodes < 1 or not 0 <= it.explore <= 1 or it.rnn_steps < 1:
        raise ConfigError("iterate.episodes and iterate.rnn_steps must be >= 1, iterate.explore in [0, 1]")
    if not 0 <= it.exploit_share <= 1:
        raise ConfigError(f"iterate.exploit_share={it.exploit_share}: must be in [0, 1]")
    if it.exploit_share > 0 and not (prev / "controller" / "best_fitness.msgpack").exists():
        raise DataError(f"iterate.exploit_share {it.exploit_share} plays {prev}'s dream favourite, but "
                        f"{prev / 'controller' / 'best_fitness.msgpack'} does not exist; "
                        "pass --iterate.exploit_share 0")
    if it.init_c not in ("scratch", "previous"):
        raise ConfigError(f"iterate.init_c='{it.init_c}': valid are 'scratch', 'previous'")
    if it.refit_c:
        from worldmodels.train.c_refit import check_refit

        if it.init_c != "previous":
            raise ConfigError("iterate.refit_c carries the previous round's C to the new M; it needs "
                              "--iterate.init_c previous (or pass --iterate.refit_c false)")
        check_refit(config.controller)
    played = previous_config(prev).controller.action_map
    if it.init_c == "previous" and played != config.controller.action_map:
        raise ConfigError(f"{prev}'s C was evolved with controller.action_map '{played}', this round would "
                          f"start from it with '{config.controller.action_map}'; pass --controller.action_map "
                          f"{played} (or --iterate.init_c scratch)")
    return prev


def previous_config(prev: Path) -> Config:
    """The config the previous agent's C was evolved with (its controller/config.json, else the
    dir's): the agent plays round k's episodes under it, whatever round k's own settings are."""
    from worldmodels.world_model import load_agent_config

    saved = prev / "controller" / "config.json"
    return Config.from_dict(json.loads(saved.read_text())) if saved.exists() else load_agent_config(prev)


def player_returns(folder: Path, exploit_share: float) -> dict[str, float]:
    """Mean real return of the round's agent episodes by who played them: the kept C and, with
    iterate.exploit_share > 0, the previous search's dream favourite (its real score, with
    exploration, beside the dream score that made it the favourite)."""
    from worldmodels.data.episodes import episode_index, list_episodes, load_episode
    from worldmodels.rollout.collect import plays_alternate

    groups: dict[str, list[float]] = {"kept": [], "favourite": []}
    for path in list_episodes(folder):
        who = "favourite" if exploit_share > 0 and plays_alternate(episode_index(path), exploit_share) else "kept"
        groups[who].append(float(np.sum(load_episode(path, keys=("reward",))["reward"])))
    return {f"agent_return_{who}": round(float(np.mean(r)), 1) for who, r in groups.items() if r}


def round_finished(run: Path, k: int) -> bool:
    """Round k has scored its agent (its last step)."""
    return (run / f"round{k}" / "eval" / "summary.json").exists()


def run_rounds(config: Config, run: str | os.PathLike) -> list[dict[str, Any]]:
    """`make iterate-all`: rounds 1..iterate.rounds on `run`, skipping the finished ones (a killed
    round resumes inside, step by step); the rows of the rounds run now."""
    run = Path(run)
    if config.iterate.rounds < 1:
        raise ConfigError(f"iterate.rounds={config.iterate.rounds}: must be >= 1")
    check_round(config, run, 1)
    rows = []
    for k in range(1, config.iterate.rounds + 1):
        if round_finished(run, k):
            print(f"iterate {k}: finished before ({run / f'round{k}' / 'eval'}); next round")
            continue
        rows.append(run_round(config, run, k))
    return rows


def run_round(config: Config, run: str | os.PathLike, k: int) -> dict[str, Any]:
    """Round k on `run` (module docstring); returns the row it appends to RUN/iterate.csv."""
    run = Path(run)
    prev = check_round(config, run, k)
    started = time.perf_counter()
    import ray

    from worldmodels.parallel import init_ray

    own_ray = not ray.is_initialized()  # shut down below only a Ray this round started
    init_ray(num_cpus=config.rollouts.workers or None)  # before JAX starts its threads

    from jax.flatten_util import ravel_pytree

    from worldmodels.agent import load_controller
    from worldmodels.data.atomic import atomic_write_text, remove_stale_temporaries
    from worldmodels.data.episodes import list_episodes
    from worldmodels.evaluate import evaluate_agent
    from worldmodels.rollout.collect import agent_spec, collect_rollouts
    from worldmodels.run_dir import FREE_FIELDS, prepare_stage_dir
    from worldmodels.train.es import train_controller
    from worldmodels.train.mdnrnn import train_mdnrnn
    from worldmodels.world_model import encode_run, load_world_model

    rconfig = round_config(config, run, k)
    out = run / f"round{k}"
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "vision").exists():
        (out / "vision").symlink_to(Path("..") / "vision")  # one V for every round
    atomic_write_text(out / "config.json", rconfig.to_json())

    # 1. The previous round's agent plays, exploring.
    folder = prepare_stage_dir(out, "rollouts", rconfig, sections=("env", "rollouts", "iterate"),
                               free_fields=("rollouts.episodes", "iterate.episodes", "rollouts.workers",
                                            "iterate.rnn_steps", "iterate.refit_c"))
    world = load_world_model(prev, previous_config(prev))
    flat, _ = ravel_pytree(load_controller(prev, world))
    favourite = None
    if config.iterate.exploit_share > 0:
        favourite, _ = ravel_pytree(load_controller(prev, world, "best_fitness.msgpack"))
    summary = collect_rollouts(rconfig, folder, agent=agent_spec(world, flat, config.iterate.explore,
                                                                 favourite, config.iterate.exploit_share))
    print(f"iterate {k}: {summary.written} agent episodes written, {summary.skipped} already there -> {folder}")
    players = player_returns(folder, config.iterate.exploit_share)
    if own_ray:
        ray.shutdown()  # an idle Ray slows M's training (scripts/bench.py); C starts it again

    # 2. RUN's V encodes them, as `make series` does.
    encode_run(rconfig, out, run / "vision")

    # 3. M retrained on everything collected so far.
    prepare_stage_dir(out, "mdnrnn", rconfig, sections=("mdnrnn",), free_fields=FREE_FIELDS["mdnrnn"])
    remove_stale_temporaries(out / "mdnrnn")
    folders = [run / "series"] + [run / f"round{j}" / "series" for j in range(1, k + 1)]
    m_summary = train_mdnrnn(rconfig, out, series=folders)
    print("iterate {}: M {}".format(k, json.dumps({key: round(v, 4) if isinstance(v, float) else v
                                                   for key, v in m_summary.items()})))

    # 3b. Round k-1's C carried to the new M's h (iterate.refit_c).
    if config.iterate.refit_c:
        refit_step(rconfig, prev, out)

    # 4. C in the new M (from scratch or from round k-1's C).
    prepare_stage_dir(out, "controller", rconfig, sections=("controller",), free_fields=FREE_FIELDS["controller"])
    remove_stale_temporaries(out / "controller")
    c_summary = train_controller(rconfig, out)

    # 5. Scored in the real env.
    remove_stale_temporaries(out / "eval")
    e_summary = evaluate_agent(out, config.eval, out / "eval")
    row = {"round": k, "episodes": len(list_episodes(folder)),
           "agent_episode_mean_steps": round(summary.steps / max(summary.written, 1), 1) if summary.written else "",
           "train_episodes_m": m_summary["train_episodes"],
           "heldout_done_recall": round(m_summary.get("heldout_done_recall", float("nan")), 3),
           **players,
           "c_best_fitness": round(float(c_summary["best_fitness"]), 1),
           "c_kept_check": round(float(c_summary["best_check"]), 1),
           "eval_mean": round(e_summary["mean"], 1), "eval_std": round(e_summary["std"], 1),
           "eval_episodes": e_summary["episodes"],
           **{f"eval_{name}": round(value, 4) for name, value in e_summary.get("driving", {}).items()}}
    write_diagnostics(config, run, k)
    row["wall_s"] = round(time.perf_counter() - started, 1)  # this call's: a resumed round counts its last part
    append_row(run / "iterate.csv", row)
    write_table(run)
    print(f"iterate {k}: {e_summary['mean']:.1f} ± {e_summary['std']:.1f} over {e_summary['episodes']} "
          f"episodes of {e_summary['env_id']} -> {out / 'eval'}")
    return row


def refit_step(rconfig: Config, prev: Path, out: Path) -> dict[str, Any]:
    """Round k-1's C refit to round k's M (`iterate.refit_c`) -> out/c_refit/best.msgpack and
    report.json: fitted on the train split of the round's agent episodes, reported on its held-out
    split. Done once per M: a resumed round keeps the C it wrote unless M's params changed since."""
    import hashlib

    from worldmodels.agent import load_controller
    from worldmodels.checkpoint import save_checkpoint
    from worldmodels.data.atomic import atomic_write_text
    from worldmodels.envs import controller_squash
    from worldmodels.train.c_refit import refit_controller
    from worldmodels.train.mdnrnn import SeriesData, split_series
    from worldmodels.world_model import load_world_model

    folder = out / "c_refit"
    m_sha = hashlib.sha256((out / "mdnrnn" / "params.msgpack").read_bytes()).hexdigest()[:16]
    if (folder / "best.msgpack").exists() and (folder / "report.json").exists():
        report = json.loads((folder / "report.json").read_text())
        if report.get("m_params_sha256") == m_sha:
            return report  # else M changed since (more steps): refit again
    old = load_world_model(prev, previous_config(prev))
    new = load_world_model(out, rconfig)
    train, held = split_series(out / "series", rconfig.mdnrnn.holdout_fraction)
    started = time.perf_counter()
    params, report = refit_controller(load_controller(prev, old), old, new, SeriesData.load(train),
                                      SeriesData.load(held) if held else None, controller_squash(rconfig))
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["m_params_sha256"] = m_sha
    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint(folder / "best.msgpack", params, {"refit_from": str(prev / "controller" / "best.msgpack"),
                                                      **report})
    atomic_write_text(folder / "report.json", json.dumps(report, indent=1))
    print("iterate: C refit to the new M's h: held-out R^2 {} (action error refit {} / unchanged {})".format(
        *(" ".join(f"{v:.3f}" for v in report.get(key, [])) for key in
          ("heldout_r2", "heldout_action_mae_refit", "heldout_action_mae_unchanged"))))
    return report


def round_diagnostics(config: Config, run: str | os.PathLike, k: int, frames: int = 1000,
                      dream_episodes: int = 64) -> dict[str, Any]:
    """What the per-round table needs beyond the round's row (`make iterate` writes it to
    RUN/round<k>/diagnostics.json): how well V and M fit the agent's own episodes, held out,
    before the round (round k-1's M) and after it; and the round's kept C scored in its own
    dream on fixed keys, beside its real score: the dream-real gap."""
    from jax.flatten_util import ravel_pytree

    from worldmodels.agent import load_controller
    from worldmodels.data.episodes import holdout_split, list_episodes
    from worldmodels.train.es import DreamScorer
    from worldmodels.train.mdnrnn import SeriesData, evaluate_one_step, split_series
    from worldmodels.train.vision import heldout_frames, reconstruction_error
    from worldmodels.world_model import load_world_model

    run = Path(run)
    out, prev = run / f"round{k}", (run if k == 1 else run / f"round{k - 1}")
    rconfig = round_config(config, run, k)
    before, after = load_world_model(prev, config), load_world_model(out, config)
    fraction = config.vision.holdout_fraction
    result: dict[str, Any] = {"round": k}
    for name, folder in (("random", run / "rollouts"), ("own", out / "rollouts")):
        held = holdout_split(list_episodes(folder), fraction)[1]
        if held:
            x = heldout_frames(held, config.env.frame_size, limit=frames)
            result[f"v_error_{name}"] = reconstruction_error(after.vision, after.vision_params,
                                                             x)["heldout_mse_per_pixel"]
    m_cfg = rconfig.mdnrnn
    for name, folder in (("random", run / "series"), ("own", out / "series")):
        held = split_series(folder, m_cfg.holdout_fraction)[1]
        if not held:
            continue
        data = SeriesData.load(held)
        for when, world in (("before", before), ("after", after)):
            scores = evaluate_one_step(world.module, m_cfg, world.rnn_params, data)
            result[f"m_{when}_z_nll_{name}"] = scores.get("heldout_z_nll")
            result[f"m_{when}_next_z_mse_{name}"] = scores.get("heldout_next_z_mse")
    if rconfig.controller.dream:
        scorer = DreamScorer(after, rconfig, out / "series")
        flat, _ = ravel_pytree(load_controller(out, after))
        dream = scorer.returns(np.asarray(flat, np.float32)[None], dream_episodes, what="dream_episodes")[0]
        result["c_dream_mean"], result["c_dream_std"] = float(dream.mean()), float(dream.std())
        result["dream_episodes"] = dream_episodes
    summary = out / "eval" / "summary.json"
    if summary.exists():
        e = json.loads(summary.read_text())
        result["c_real_mean"], result["c_real_std"] = e["mean"], e["std"]
        result.update({f"real_{key}": value for key, value in e.get("driving", {}).items()})
    return {key: v if v is None or isinstance(v, (int, str)) else float(v) for key, v in result.items()}


TABLE_COLUMNS = (
    ("round", "round"), ("agent episodes", "episodes"),
    ("their real return: kept C / dream favourite", "players"), ("M trained on", "train_episodes_m"),
    ("M before: z NLL on own held-out", "m_before_z_nll_own"), ("M after: z NLL own / random", "m_after_z_nll"),
    ("V error per pixel own / random", "v_error"), ("C: dream score", "c_dream"), ("C: real check", "c_kept_check"),
    ("C: real, 100 seeds", "eval"), ("mean gas", "eval_mean_gas"), ("saturated steer", "eval_saturated_steer"),
    ("lap finished", "eval_lap"), ("wall time", "wall_s"))


def round_table(run: str | os.PathLike) -> str:
    """RUN/iterate.csv and each round's diagnostics.json as one markdown table (the last line
    per round where a round was rerun)."""
    run = Path(run)
    path = run / "iterate.csv"
    if not path.exists():
        raise DataError(f"{path} does not exist; run `make iterate` first")
    rows = {int(r["round"]): r for r in csv.DictReader(path.open())}

    def num(value, fmt="{:.1f}"):
        try:
            return fmt.format(float(value))
        except (TypeError, ValueError):
            return "—"

    lines = ["| " + " | ".join(name for name, _ in TABLE_COLUMNS) + " |",
             "|" + "---|" * len(TABLE_COLUMNS)]
    for k in sorted(rows):
        r = dict(rows[k])
        d_path = run / f"round{k}" / "diagnostics.json"
        d = json.loads(d_path.read_text()) if d_path.exists() else {}
        cells = {
            "round": str(k), "episodes": r.get("episodes", "—"), "train_episodes_m": r.get("train_episodes_m", "—"),
            "players": f"{num(r.get('agent_return_kept'))} / {num(r.get('agent_return_favourite'))}",
            "m_before_z_nll_own": num(d.get("m_before_z_nll_own"), "{:.3f}"),
            "m_after_z_nll": (f"{num(d.get('m_after_z_nll_own'), '{:.3f}')} / "
                              f"{num(d.get('m_after_z_nll_random'), '{:.3f}')}"),
            "v_error": f"{num(d.get('v_error_own'), '{:.2e}')} / {num(d.get('v_error_random'), '{:.2e}')}",
            "c_dream": (f"{num(d.get('c_dream_mean'))} ± {num(d.get('c_dream_std'))}" if "c_dream_mean" in d
                        else num(r.get("c_best_fitness"))),
            "c_kept_check": num(r.get("c_kept_check")),
            "eval": f"{num(r.get('eval_mean'))} ± {num(r.get('eval_std'))}",
            "eval_mean_gas": num(r.get("eval_mean_gas"), "{:.3f}"),
            "eval_saturated_steer": num(r.get("eval_saturated_steer"), "{:.2f}"),
            "eval_lap": num(r.get("eval_lap"), "{:.2f}"),
            "wall_s": (f"{float(r['wall_s']) / 60:.0f} min" if r.get("wall_s") else "—"),
        }
        lines.append("| " + " | ".join(cells[key] for _, key in TABLE_COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def write_diagnostics(config: Config, run: str | os.PathLike, k: int) -> dict[str, Any]:
    """`round_diagnostics` of a finished round -> RUN/round<k>/diagnostics.json."""
    from worldmodels.data.atomic import atomic_write_text

    run = Path(run)
    check_round(config, run, k)
    if not round_finished(run, k):
        raise DataError(f"round {k} of {run} has not been scored; run `make iterate ROUND={k}` first")
    result = round_diagnostics(config, run, k)
    atomic_write_text(run / f"round{k}" / "diagnostics.json", json.dumps(result, indent=2))
    return result


def write_table(run: str | os.PathLike) -> str:
    """`round_table` -> RUN/iterate.md; the table."""
    from worldmodels.data.atomic import atomic_write_text

    table = round_table(run)
    atomic_write_text(Path(run) / "iterate.md", table)
    return table


def append_row(path: Path, row: dict) -> None:
    """One line per finished round (a rerun of a round adds a line). A row with columns the file
    lacks (a round with iterate.exploit_share, say) rewrites the file, atomically, with every
    column; the older rows leave the new ones empty."""
    import io

    from worldmodels.data.atomic import atomic_write_text

    rows = []
    if path.exists():
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    fields = list(dict.fromkeys([*(rows[0].keys() if rows else []), *row]))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fields, restval="")
    writer.writeheader()
    writer.writerows([*rows, row])
    atomic_write_text(path, text.getvalue())
