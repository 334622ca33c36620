"""`make export-agent RUN=<run> AGENT=agents/<name>`: pack a trained run as a shipped agent
(config, V and M as float16, the best controller) that `make evaluate AGENT=...` scores."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from pipeline._cli import main_wrapper, parse_stage_args


def main(argv: Sequence[str] | None = None) -> None:
    def extra(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--agent", required=True, help="where the agent goes, e.g. agents/carracing")
        parser.add_argument("--dtype", default="float16", help="storage of V and M: float16 or float32")
        parser.add_argument("--force", action="store_true", help="replace an existing agent there")
        parser.add_argument("--dream-start", type=int, default=0, metavar="EPISODES",
                            help="only (re)write AGENT's dream.npz from this many fresh random episodes "
                                 "encoded by its V (for an agent whose run's series are gone)")

    _, args = parse_stage_args(__doc__, argv, extra=extra)
    from worldmodels.agent_export import export_agent, write_dream_start

    if args.dream_start:
        summary = write_dream_start(args.agent, args.dream_start)
        print(f"export-agent: {args.agent}/dream.npz from " + json.dumps(summary))
        return
    info = export_agent(args.run, args.agent, args.dtype, force=args.force)
    print(f"export-agent: {args.run} -> {args.agent} ({args.dtype}); " + json.dumps(info["controller"]))


if __name__ == "__main__":
    main_wrapper(main, "export-agent")()
