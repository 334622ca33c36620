"""`make play`: the web server. One page (static/), one WebSocket (/ws) per browser tab.

The page sends small JSON messages (held keys, mode, tau, reset, pause, step); the server
answers each tick with one binary message: a little-endian uint32 length, that many bytes of
JSON (the step's numbers, and the frames' names and sizes), then the frames as raw RGB bytes,
one after the other. Each client has its own thread (its env lives there), its own dream or
episode, and nothing else; everything is freed when it goes.

Safety: it listens on 127.0.0.1 unless told otherwise; the page never names files (the agent
is chosen on the command line); only three static paths and /ws exist (anything else is 404);
a WebSocket from another site's page is refused (Origin must match Host); a client that sends
a message over `MAX_MESSAGE` bytes, binary data or anything but the JSON below is closed with
an error, and nobody else notices; at most `max_clients` are served at once.

Client messages, each a JSON object::

    {"type": "keys", "left": bool, "right": bool, "up": bool, "down": bool}  (any subset)
    {"type": "mode", "mode": "drive" | "real" | "agent-dream"}
    {"type": "tau", "tau": 0.01..3.0}
    {"type": "reset"} or {"type": "reset", "seed": 0..2**31-1}   (the same seed, the same dream)
    {"type": "pause", "paused": bool}
    {"type": "step"}                                             (one frame while paused)
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import math
import random
import signal
import socket
import struct
import sys
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from aiohttp import WSCloseCode, WSMsgType, web

from worldmodels.play.engine import MAX_TAU, MIN_TAU, MODES, Player, PlayError, keys_to_action

MAX_MESSAGE = 4096
"""Bytes: a client message longer than this closes that client (1009, message too big)."""
MAX_CLIENTS = 8
MAX_QUEUED_STEPS = 16
KEYS = ("left", "right", "up", "down")
STATIC = {"/": ("index.html", "text/html"), "/play.js": ("play.js", "text/javascript"),
          "/play.css": ("play.css", "text/css")}
HEADERS = {"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src data:; "
                                      "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
           "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}
DONE_PAUSE_S = 1.0
"""A finished dream or episode stays on screen this long, then the next one starts."""


class BadMessage(ValueError):
    """A client message that is not one of the module docstring's."""


def parse_message(text: str, modes: tuple[str, ...]) -> dict[str, Any]:
    """A client's text message -> the validated dict, or BadMessage saying what is wrong."""
    try:
        msg = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise BadMessage("not JSON") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise BadMessage('expected a JSON object with a "type"')
    kind = msg["type"]
    fields = {"keys": set(KEYS), "mode": {"mode"}, "tau": {"tau"}, "reset": {"seed"}, "pause": {"paused"},
              "step": set()}
    if kind not in fields:
        raise BadMessage(f"unknown message type {kind[:40]!r}")
    extra = set(msg) - fields[kind] - {"type"}
    if extra:
        raise BadMessage(f"unexpected field(s) in {kind!r}: {', '.join(sorted(extra))[:80]}")
    if kind == "keys" and not all(isinstance(msg[k], bool) for k in msg if k in KEYS):
        raise BadMessage("keys must be true or false")
    if kind == "mode" and msg.get("mode") not in modes:
        raise BadMessage(f"mode must be one of {', '.join(modes)}")
    if kind == "tau":
        tau = msg.get("tau")
        if isinstance(tau, bool) or not isinstance(tau, int | float) or not math.isfinite(tau) \
                or not MIN_TAU <= tau <= MAX_TAU:
            raise BadMessage(f"tau must be a number in [{MIN_TAU}, {MAX_TAU}]")
    if kind == "reset" and "seed" in msg:
        seed = msg["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
            raise BadMessage("seed must be an integer in [0, 2**31)")
    if kind == "pause" and not isinstance(msg.get("paused"), bool):
        raise BadMessage("paused must be true or false")
    return msg


def pack(info: dict[str, Any], frames: dict[str, np.ndarray]) -> bytes:
    """One tick for the page: uint32 LE length + JSON + the frames' RGB bytes in order."""
    info = {**info, "frames": [[name, int(f.shape[1]), int(f.shape[0])] for name, f in frames.items()]}
    header = json.dumps(info, separators=(",", ":")).encode()
    return b"".join([struct.pack("<I", len(header)), header,
                     *(np.ascontiguousarray(f, np.uint8).tobytes() for f in frames.values())])


def _number(x: float) -> float | None:
    return round(float(x), 5) if math.isfinite(x) else None


class Client:
    """One connected page: its mode, keys, tau and the dream or episode it watches. The
    model work runs in the client's own thread (`executor`); the fields the message handler
    sets are read there between steps."""

    def __init__(self, player: Player, ws: web.WebSocketResponse, fps: float):
        self.player, self.ws, self.fps = player, ws, fps
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="play-client")
        self.mode, self.tau, self.paused = "drive", player.default_tau, False
        self.keys = dict.fromkeys(KEYS, False)
        self.steps_wanted = 0
        self.pending: dict[str, Any] = {"mode": "drive", "seed": None}
        self.dream = self.episode = None
        self.done_ticks = 0
        self.wake = asyncio.Event()

    # -- messages (event loop) ---------------------------------------------------------------

    def handle(self, msg: dict[str, Any]) -> None:
        kind = msg["type"]
        if kind == "keys":
            self.keys = {k: bool(msg.get(k, self.keys[k])) for k in KEYS}
        elif kind == "mode":
            self.pending = {"mode": msg["mode"], "seed": None}
        elif kind == "tau":
            self.tau = float(msg["tau"])
        elif kind == "reset":  # steps asked for before it are dropped
            self.pending, self.steps_wanted = {"mode": self.mode, "seed": msg.get("seed")}, 0
        elif kind == "pause":
            self.paused = msg["paused"]
        elif kind == "step":
            self.steps_wanted = min(self.steps_wanted + 1, MAX_QUEUED_STEPS)
        self.wake.set()

    # -- the work (client thread) ---------------------------------------------------------------

    def _start(self, mode: str, seed: int | None) -> None:
        seed = random.randrange(2**31) if seed is None else seed
        if mode != "real":
            self._close_env()
            self.dream = self.player.new_dream(mode, seed)
        elif self.episode is None:
            self.dream = None
            self.episode = self.player.new_episode(seed)
        else:
            self.episode = self.player.restart(self.episode, seed)
        self.mode, self.done_ticks = mode, 0

    def _close_env(self) -> None:
        if self.episode is not None:
            episode, self.episode = self.episode, None
            episode.env.close()

    def _advance(self, pending, step: bool) -> bytes:
        if pending is not None:
            self._start(pending["mode"], pending["seed"])
            if not step:  # a reset while paused: show where the new dream starts
                return self._view({"dream": self.dream.frame} if self.dream else None)
        if self.done_ticks >= DONE_PAUSE_S * self.fps:  # the last one was over a while ago
            self._start(self.mode, None)
        if self.mode == "real":
            frames = self.player.real_frame(self.episode, self.tau) if not self.episode.done else None
            self.done_ticks += self.episode.done
            return self._view(frames)
        if not self.dream.done:
            action = keys_to_action(self.player.env_name, self.keys) if self.mode == "drive" else None
            self.player.dream_frame(self.dream, self.mode, self.tau, action)
        self.done_ticks += self.dream.done
        return self._view({"dream": self.dream.frame})

    def _view(self, frames: dict[str, np.ndarray] | None) -> bytes:
        run = self.dream if self.mode != "real" else self.episode
        info = {"mode": self.mode, "t": run.steps, "return": _number(run.total), "done": run.done,
                "seed": run.seed, "tau": self.tau, "paused": self.paused,
                "action": None if run.action is None else [_number(a) for a in np.ravel(run.action)]}
        if self.mode == "real":
            info.update({k: _number(v) for k, v in run.extra.items()})
        else:
            info.update(reward=_number(run.reward), p_done=_number(run.p_done))
        return pack(info, frames or {})

    # -- the ticker (event loop) ----------------------------------------------------------------

    async def run(self) -> None:
        """Tick at `fps` (or on each step while paused) until the socket closes; a failure
        of this client's stream closes this client only, with the reason."""
        try:
            await self._ticks()
        except (asyncio.CancelledError, ConnectionError):
            raise
        except Exception as exc:  # noqa: BLE001 (reported, and the server goes on)
            print(f"play: a client's stream failed: {exc!r}", file=sys.stderr, flush=True)
            with contextlib.suppress(Exception):
                await self.ws.send_json({"type": "error", "message": f"the server failed: {exc}"[:300]})
            await self.ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"stream failed")

    async def _ticks(self) -> None:
        loop = asyncio.get_running_loop()
        interval, next_tick = 1.0 / self.fps, loop.time()
        while not self.ws.closed:
            pending, self.pending = self.pending, None
            step = not self.paused or self.steps_wanted > 0
            if self.paused and step:
                self.steps_wanted -= 1
            if step or pending is not None:
                payload = await loop.run_in_executor(self.executor, self._advance, pending, step)
                await self.ws.send_bytes(payload)
            if not step:  # paused: wait for a message (no await between the check and the wait)
                self.wake.clear()
                if self.paused and self.pending is None and self.steps_wanted == 0:
                    await self.wake.wait()
                next_tick = loop.time()
                continue
            next_tick = max(next_tick + interval, loop.time() - interval)  # late: no catching up
            await asyncio.sleep(max(0.0, next_tick - loop.time()))

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(Exception):
            await loop.run_in_executor(self.executor, self._close_env)
        self.dream = None
        self.executor.shutdown(wait=False)


class PlayServer:
    def __init__(self, player: Player, max_clients: int = MAX_CLIENTS, fps: float | None = None):
        self.player, self.max_clients = player, max_clients
        self.fps = float(fps or player.fps)
        self.clients: set[Client] = set()
        self.static = {path: (resources.files("worldmodels.play").joinpath("static", name).read_bytes(), kind)
                       for path, (name, kind) in STATIC.items()}
        self.app = web.Application(client_max_size=MAX_MESSAGE)
        for path in STATIC:
            self.app.router.add_get(path, self.page)
        self.app.router.add_get("/ws", self.websocket)
        self.app.on_shutdown.append(self._close_all)

    async def page(self, request: web.Request) -> web.Response:
        body, kind = self.static[request.path]
        return web.Response(body=body, content_type=kind, charset="utf-8", headers=HEADERS)

    def hello(self) -> dict[str, Any]:
        p = self.player
        modes = list(MODES) if p.has_controller else ["drive"]
        return {"type": "hello", "agent": p.folder.name or str(p.folder), "env": p.env_name, "env_id": p.env_id,
                "modes": modes, "tau": p.default_tau, "tau_range": [MIN_TAU, MAX_TAU], "fps": self.fps,
                "reward_head": p.reward_head, "note": p.start_note,
                "no_controller": "" if p.has_controller else
                f"{p.folder} has no controller/best.msgpack: train one (`make train-controller`) to watch it"}

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != request.host:
            raise web.HTTPForbidden(text="WebSocket from another origin")
        if len(self.clients) >= self.max_clients:
            raise web.HTTPServiceUnavailable(text=f"{self.max_clients} clients already; try again later")
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE, heartbeat=30.0)
        await ws.prepare(request)
        client = Client(self.player, ws, self.fps)
        self.clients.add(client)
        modes = tuple(self.hello()["modes"])
        ticker = asyncio.create_task(client.run())
        try:
            await ws.send_json(self.hello())
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    try:
                        client.handle(parse_message(msg.data, modes))
                    except BadMessage as exc:
                        await self._refuse(ws, str(exc))
                        break
                elif msg.type == WSMsgType.BINARY:
                    await self._refuse(ws, "binary messages are not accepted", WSCloseCode.UNSUPPORTED_DATA)
                    break
                else:  # ERROR (e.g. a message over MAX_MESSAGE: aiohttp has closed it with 1009)
                    break
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            ticker.cancel()
            with contextlib.suppress(BaseException):
                await ticker
            if not ws.closed:
                await ws.close()
            await client.close()
            self.clients.discard(client)
        return ws

    @staticmethod
    async def _refuse(ws: web.WebSocketResponse, reason: str, code: int = WSCloseCode.POLICY_VIOLATION) -> None:
        with contextlib.suppress(Exception):
            await ws.send_json({"type": "error", "message": reason})
        await ws.close(code=code, message=reason[:100].encode())

    async def _close_all(self, app) -> None:
        for client in list(self.clients):
            with contextlib.suppress(Exception):
                await client.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server stopping")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or PlayError saying why not (a port in use)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise PlayError(f"cannot listen on host {host!r}: {exc.strerror}; use HOST=127.0.0.1 (the default)") \
            from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(64)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PlayError(f"port {port} on {host} is in use; choose another with PORT= (make play) "
                            "or --port") from None
        raise PlayError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


async def serve(folder: str | Path, host: str = "127.0.0.1", port: int = 8765, max_clients: int = MAX_CLIENTS,
                fps: float | None = None, ready=None) -> None:
    """Load the agent, listen, print the URL and serve until SIGINT/SIGTERM (or `ready`'s
    caller cancels). `ready(url)` is called once it serves."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PlayError(f"{folder} does not exist; give an agent dir (agents/carracing, agents/doom) or a run "
                        "dir with V and M: make play AGENT=...")
    sock = bind(host, port)
    try:
        player = await asyncio.to_thread(Player, folder)
        await asyncio.to_thread(player.warm_up)
        server = PlayServer(player, max_clients, fps)
        runner = web.AppRunner(server.app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        await web.SockSite(runner, sock).start()
    except BaseException:
        sock.close()
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    url = url_of(sock)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"play: listening on {host}, not only this machine: anyone who can reach it can open the page, "
              "watch and drive (no password); stop it with Ctrl-C", file=sys.stderr, flush=True)
    if ready is not None:
        ready(url)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
        await runner.cleanup()


def main(folder: str | Path, host: str = "127.0.0.1", port: int = 8765, max_clients: int = MAX_CLIENTS,
         fps: float | None = None) -> None:
    """Blocking: serve until Ctrl-C, then return."""

    def ready(url: str) -> None:
        print(f"play: {url} ({folder}) - open it in a browser; Ctrl-C stops", flush=True)

    asyncio.run(serve(folder, host, port, max_clients, fps, ready))
    print("play: stopped", file=sys.stderr, flush=True)
