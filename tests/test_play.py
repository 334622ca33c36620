"""`make play`: the server on a free loopback port with the tiny preset's V and M (and a random
C), driven by a real headless browser (Debian's chromium through playwright), and its refusals."""

from __future__ import annotations

import asyncio
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, copy_run, run_stage

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
NO_BROWSER = "Debian's chromium is not installed: `sudo apt-get install -y chromium` (playwright drives it)"


@pytest.fixture(scope="module")
def play_run(tiny_world, tmp_path_factory) -> Path:
    """tiny_world's V, M and series, its config, and a random (untrained) C: all three modes."""
    from worldmodels.checkpoint import save_checkpoint
    from worldmodels.config import get_config
    from worldmodels.world_model import load_world_model

    run = copy_run(tiny_world, tmp_path_factory.mktemp("play") / "run", parts=("vision", "series", "mdnrnn"))
    (run / "config.json").write_text(get_config("tiny").to_json())
    (run / "controller").mkdir()
    save_checkpoint(run / "controller" / "best.msgpack", load_world_model(run).controller_template(), {})
    return run


class Server:
    """`python -m pipeline.play` in a subprocess on a free port; `url` once it serves."""

    def __init__(self, agent: Path, *args: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "pipeline.play", "--agent", str(agent), "--port", "0",
                                      *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.stderr: list[str] = []
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()
        ready, _, _ = select.select([self.proc.stdout], [], [], 180)
        line = self.proc.stdout.readline() if ready else ""  # "play: http://127.0.0.1:PORT/ (...)" once it serves
        if not line.startswith("play: http://"):
            self.proc.kill()
            raise AssertionError(f"play did not start: {line!r} {''.join(self.stderr)[-3000:]}")
        self.url = line.split()[1]


@pytest.fixture(scope="module")
def server(play_run):
    server = Server(play_run)
    yield server
    if server.proc.poll() is None:
        server.proc.kill()


def _poll(page, expression: str, timeout: float = 30.0):
    """Wait until the page's `expression` is truthy. (playwright's wait_for_function evaluates
    strings in the page, which the page's Content-Security-Policy rightly refuses.)"""
    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(expression)
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {expression}: {page.evaluate('window.play')}"
        time.sleep(0.05)


PIXELS = "(id) => Array.from(document.getElementById(id).getContext('2d').getImageData(0, 0, 64, 64).data)"


def _dream_after(page, keys: list[str], steps: int) -> list[int]:
    """Replay the paused dream from its seed, hold `keys`, step `steps` frames: the last frame.
    (The tiny M may dream the end within them: the dream stops there, frames still come.)"""
    page.click("#replay")
    _poll(page, "window.play.info.t === 0 && window.play.info.paused")
    start = page.evaluate("window.play.frames")
    for key in keys:
        page.keyboard.down(key)
    for _ in range(steps):
        page.keyboard.press(".")
    _poll(page, f"window.play.frames >= {start + steps}")
    t = page.evaluate("window.play.info.t")
    assert t == steps or (page.evaluate("window.play.info.done") and t >= 1), t
    for key in keys:
        page.keyboard.up(key)
    return page.evaluate(PIXELS, "dream")


@pytest.mark.skipif(CHROMIUM is None, reason=NO_BROWSER)
def test_browser_drives_the_dream_and_watches_the_agent(server):
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra: pip install .[dev]")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server.url)
            assert _poll(page, "window.play.hello")["modes"] == ["drive", "real", "agent-dream"]
            _poll(page, "window.play.frames > 10")  # the dream streams by itself
            # Paused and replayed from one seed, the dream is a function of the keys held.
            page.keyboard.press("p")
            left = _dream_after(page, ["ArrowLeft", "ArrowUp"], 12)
            right = _dream_after(page, ["ArrowRight", "ArrowDown"], 12)
            assert page.evaluate("window.play.info.action") == [1.0, 0.0, 0.8]  # right + brake
            left_again = _dream_after(page, ["ArrowLeft", "ArrowUp"], 12)
            assert left == left_again, "the same seed and keys dreamed another frame"
            assert left != right, "the dreamed frame does not depend on the keys"
            page.keyboard.press("p")  # running again
            page.fill("#tau", "0.5")
            _poll(page, "window.play.info.tau === 0.5 && !window.play.info.paused")

            page.click("button[data-mode=real]")
            _poll(page, "window.play.info.mode === 'real'")
            start = page.evaluate("window.play.frames")
            _poll(page, f"window.play.frames > {start + 10}")
            info = page.evaluate("window.play.info")
            assert [f[0] for f in info["frames"]] == ["real", "recon", "guess"] and info["t"] > 10
            assert len(info["action"]) == 3 and info["return"] is not None
            for canvas in ("real", "recon", "guess"):  # drawn (the tiny V's are nearly uniform grey)
                assert set(page.evaluate(PIXELS, canvas)[3::4]) == {255}, f"nothing drawn on {canvas}"
            assert len(set(page.evaluate(PIXELS, "real"))) > 10, "the real frame is blank"

            page.click("button[data-mode=agent-dream]")
            # C drives the dream (the tiny M may dream an end within a few steps: the next dream
            # starts after a pause, so count frames rather than one dream's steps).
            _poll(page, "window.play.info.mode === 'agent-dream' && window.play.info.t >= 1")
            start = page.evaluate("window.play.frames")
            _poll(page, f"window.play.frames > {start + 5}")
            assert [f[0] for f in page.evaluate("window.play.info")["frames"]] == ["dream"]
            assert not errors, errors
        finally:
            browser.close()


def test_bad_messages_close_only_that_client(server):
    import aiohttp

    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.get(server.url + "nope") as r:
                assert r.status == 404
            async with session.get(server.url + "static/../../pyproject.toml") as r:
                assert r.status == 404
            async with session.get(server.url) as r:
                assert r.status == 200 and "default-src 'none'" in r.headers["Content-Security-Policy"]
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(server.url + "ws", origin="http://evil.example")
            assert refused.value.status == 403

            good = await session.ws_connect(server.url + "ws")
            assert json.loads((await good.receive()).data)["type"] == "hello"
            bad = [("x" * 5000, 1009), ("not json", 1008), ('{"type": "tau", "tau": 1e9}', 1008),
                   ('{"type": "keys", "left": "yes"}', 1008), ('{"type": "open", "path": "/etc/passwd"}', 1008),
                   ("[1, 2]", 1008), (b"\x00\x01", 1003)]
            for message, code in bad:
                ws = await session.ws_connect(server.url + "ws")
                await (ws.send_bytes(message) if isinstance(message, bytes) else ws.send_str(message))
                while (msg := await ws.receive(timeout=20)).type not in (aiohttp.WSMsgType.CLOSE,
                                                                          aiohttp.WSMsgType.CLOSED):
                    pass
                assert ws.close_code == code, (message[:40], ws.close_code)
            await good.send_str('{"type": "keys", "up": true}')
            frames = 0
            while frames < 5:  # the well-behaved client streams on
                msg = await good.receive(timeout=20)
                assert msg.type == aiohttp.WSMsgType.BINARY, msg
                frames += 1
            await good.close()

    asyncio.run(scenario())
    assert server.proc.poll() is None, "".join(server.stderr)


def test_clients_are_bounded_and_ctrl_c_stops_it_cleanly(play_run):
    import aiohttp

    server = Server(play_run, "--max-clients", "1", "--fps", "20")

    async def scenario():
        async with aiohttp.ClientSession() as session:
            first = await session.ws_connect(server.url + "ws")
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(server.url + "ws")
            assert refused.value.status == 503
            await first.close()
            for _ in range(100):  # its place is freed once the server has seen it go
                try:
                    again = await session.ws_connect(server.url + "ws")
                    break
                except aiohttp.WSServerHandshakeError:
                    await asyncio.sleep(0.05)
            assert json.loads((await again.receive(timeout=20)).data)["type"] == "hello"
            assert (await again.receive(timeout=20)).type == aiohttp.WSMsgType.BINARY
            # Ctrl-C with a client connected: the client is told, the server exits 0.
            server.proc.send_signal(signal.SIGINT)
            while (msg := await again.receive(timeout=20)).type == aiohttp.WSMsgType.BINARY:
                pass
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg

    try:
        asyncio.run(scenario())
        assert server.proc.wait(timeout=20) == 0, "".join(server.stderr)
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
    assert "play: stopped" in "".join(server.stderr)


@pytest.mark.parametrize("which", ["missing", "not an agent"])
def test_a_wrong_agent_dir_is_one_line_and_exit_2(tmp_path, which):
    agent = tmp_path / "nothing" if which == "missing" else tmp_path
    result = run_stage("play", "--agent", str(agent), "--port", "0", check=False, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(agent) in lines[0], lines


def test_a_port_in_use_is_one_line_and_exit_2(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_stage("play", "--agent", "agents/carracing", "--port", str(port), check=False, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"port {port}" in lines[0] and "in use" in lines[0], lines


def test_messages_are_checked():
    from worldmodels.play.server import BadMessage, parse_message

    modes = ("drive", "real", "agent-dream")
    assert parse_message('{"type": "reset", "seed": 3}', modes) == {"type": "reset", "seed": 3}
    assert parse_message('{"type": "keys", "left": true}', modes)["left"] is True
    for text in ('{"type": "mode", "mode": "real"}', '{"type": "reset", "seed": -1}', '{"type": "tau", "tau": NaN}',
                 '{"type": "tau", "tau": true}', '{"type": "step", "n": 100}', '"step"', "[" * 10000):
        with pytest.raises(BadMessage):
            parse_message(text, modes[:1] if "mode" in text else modes)
