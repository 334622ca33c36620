"""`make play AGENT=agents/carracing`: drive inside the world model's dream from a web page, and
watch the agent in the real env and in its dream (see docs/play.md).

AGENT is a shipped agent (agents/carracing, agents/doom) or a run dir with V and M (a controller,
controller/best.msgpack, adds the two agent modes). The server listens on HOST:PORT
(127.0.0.1:8765 by default: this machine only) and prints the page's URL; Ctrl-C stops it."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from pipeline._cli import main_wrapper


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agent", required=True, help="agent or run directory (V and M; C for the agent modes)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 opens it to the network)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 = any free port)")
    parser.add_argument("--max-clients", type=int, default=8, help="browser tabs served at once (default 8)")
    parser.add_argument("--fps", type=float, default=0.0,
                        help="frames per second streamed (default 0: the env's, 50 CarRacing, 35 Doom)")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port}: must be in 0..65535")
    if args.max_clients < 1 or not 0 <= args.fps <= 240:
        parser.error("--max-clients must be >= 1 and --fps in 0..240")
    from worldmodels.play.server import main as serve

    serve(args.agent, args.host, args.port, args.max_clients, args.fps or None)


if __name__ == "__main__":
    main_wrapper(main, "play")()
