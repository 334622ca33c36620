// make play: the page. It talks to /ws only (see worldmodels/play/server.py for the messages).
"use strict";

const $ = (id) => document.getElementById(id);
// What the page has seen, for people debugging in the console and for the tests.
const play = { hello: null, info: null, frames: 0, closed: null, error: null };
window.play = play;

const KEYMAP = {
  ArrowLeft: "left", KeyA: "left", ArrowRight: "right", KeyD: "right",
  ArrowUp: "up", KeyW: "up", ArrowDown: "down", KeyS: "down",
};
const held = { left: false, right: false, up: false, down: false };
let mode = "drive";
let paused = false;
let seed = null;
let fpsCount = 0;
let fpsSince = performance.now();

const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
ws.binaryType = "arraybuffer";

function send(msg) {
  if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg));
}

function showError(text) {
  play.error = text;
  $("error").textContent = text;
  $("error").hidden = false;
}

ws.onmessage = (event) => {
  if (typeof event.data === "string") {
    const msg = JSON.parse(event.data);
    if (msg.type === "hello") onHello(msg);
    else if (msg.type === "error") showError(`server: ${msg.message}`);
    return;
  }
  onTick(event.data);
};
ws.onclose = (event) => {
  play.closed = { code: event.code, reason: event.reason };
  if (!play.error) showError(`disconnected (${event.code}${event.reason ? ": " + event.reason : ""}); reload to reconnect`);
};

function onHello(hello) {
  play.hello = hello;
  $("agent").textContent = `${hello.agent} · ${hello.env_id}`;
  document.querySelectorAll("#modes button").forEach((b) => {
    b.disabled = !hello.modes.includes(b.dataset.mode);
    if (b.disabled) b.title = hello.no_controller;
  });
  const tau = $("tau");
  tau.min = Math.max(0.05, hello.tau_range[0]);
  tau.max = Math.min(2.5, hello.tau_range[1]);
  tau.value = hello.tau;
  $("tau-value").textContent = Number(hello.tau).toFixed(2);
  if (hello.note) { $("note").textContent = hello.note; $("note").hidden = false; }
  const doom = hello.env === "doom";
  $("help").textContent = doom
    ? "← → or A D: move left / right (nothing held: stay). P pause, . step, R reset."
    : "← → or A D: steer; ↑ or W: gas; ↓ or S: brake. P pause, . step, R reset.";
  $("reward-label").textContent = hello.reward_head === "none" ? "reward (per step)" : "dreamed reward";
  buildActions(doom ? ["move"] : ["steer", "gas", "brake"], doom ? [-1] : [-1, 0, 0]);
  setMode("drive", false);
}

function buildActions(names, lows) {
  const box = $("actions");
  box.innerHTML = "";
  names.forEach((name, i) => {
    const row = document.createElement("div");
    row.className = "act";
    row.innerHTML = `<span>${name}</span><div class="track"><div class="fill" id="a-${i}"></div></div><em id="av-${i}"></em>`;
    row.dataset.low = lows[i];
    box.appendChild(row);
  });
}

function showActions(action) {
  if (!action) return;
  document.querySelectorAll("#actions .act").forEach((row, i) => {
    const a = action[i] ?? 0;
    const fill = $(`a-${i}`);
    if (Number(row.dataset.low) < 0) {  // centred: -1 .. +1
      const left = a < 0 ? 50 + 50 * a : 50;
      fill.style.left = `${left}%`;
      fill.style.width = `${50 * Math.abs(a)}%`;
    } else {
      fill.style.left = "0";
      fill.style.width = `${100 * Math.min(Math.max(a, 0), 1)}%`;
    }
    $(`av-${i}`).textContent = a.toFixed(2);
  });
}

function setMode(next, tell = true) {
  mode = next;
  document.querySelectorAll("#modes button").forEach((b) => b.classList.toggle("active", b.dataset.mode === mode));
  const real = mode === "real";
  $("panel-dream").hidden = real;
  ["real", "recon", "guess"].forEach((p) => { $(`panel-${p}`).hidden = !real; });
  $("dream-caption").textContent = mode === "drive" ? "M's dream, decoded by V: you drive" : "M's dream, decoded by V: C drives";
  $("reward-label").textContent = real ? "M's reward guess" : (play.hello && play.hello.reward_head === "none" ? "reward (per step)" : "dreamed reward");
  $("return-label").textContent = real ? "return (real)" : "return (dreamed)";
  if (tell) send({ type: "mode", mode });
}

const scratch = {};
function draw(name, w, h, rgb) {
  const canvas = $(name);
  if (!canvas) return;
  if (canvas.width !== w || canvas.height !== h) {
    canvas.width = w; canvas.height = h;
    canvas.classList.toggle("wide", w > h);
  }
  let image = scratch[name];
  if (!image || image.width !== w || image.height !== h) image = scratch[name] = new ImageData(w, h);
  const px = image.data;
  for (let i = 0, j = 0; i < rgb.length; i += 3, j += 4) {
    px[j] = rgb[i]; px[j + 1] = rgb[i + 1]; px[j + 2] = rgb[i + 2]; px[j + 3] = 255;
  }
  canvas.getContext("2d").putImageData(image, 0, 0);
}

const fmt = (x, digits = 3) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits));

function onTick(buffer) {
  const view = new DataView(buffer);
  const length = view.getUint32(0, true);
  const info = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, length)));
  let offset = 4 + length;
  for (const [name, w, h] of info.frames) {
    draw(name, w, h, new Uint8Array(buffer, offset, w * h * 3));
    offset += w * h * 3;
  }
  if (info.frames.length) { play.frames += 1; fpsCount += 1; }
  play.info = info;
  seed = info.seed;
  $("s-t").textContent = info.t;
  $("s-reward").textContent = fmt(info.mode === "real" ? info.reward_guess : info.reward);
  $("s-return").textContent = fmt(info["return"], 1);
  $("s-done").textContent = fmt(info.p_done);
  $("b-done").style.width = `${100 * Math.min(Math.max(info.p_done || 0, 0), 1)}%`;
  $("s-seed").textContent = info.seed;
  showActions(info.action);
  $("status").textContent = info.done
    ? (info.mode === "real" ? `episode over: return ${fmt(info["return"], 1)}` : "M dreamed the end of the episode")
    : (info.paused ? "paused" : "");
  const now = performance.now();
  if (now - fpsSince > 1000) {
    $("s-fps").textContent = (1000 * fpsCount / (now - fpsSince)).toFixed(1);
    fpsCount = 0; fpsSince = now;
  }
}

function setPaused(value) {
  paused = value;
  $("pause").textContent = paused ? "Resume" : "Pause";
  $("step").disabled = !paused;
  send({ type: "pause", paused });
}

document.querySelectorAll("#modes button").forEach((b) => b.addEventListener("click", () => setMode(b.dataset.mode)));
$("tau").addEventListener("input", () => {
  const tau = Number($("tau").value);
  $("tau-value").textContent = tau.toFixed(2);
  send({ type: "tau", tau });
});
$("reset").addEventListener("click", () => send({ type: "reset" }));
$("replay").addEventListener("click", () => send(seed === null ? { type: "reset" } : { type: "reset", seed }));
$("pause").addEventListener("click", () => setPaused(!paused));
$("step").addEventListener("click", () => send({ type: "step" }));
// Buttons keep no focus, so Space/Enter never re-click one while driving.
document.querySelectorAll("button").forEach((b) => b.addEventListener("click", () => b.blur()));

function setKey(name, down) {
  if (held[name] === down) return;
  held[name] = down;
  send({ type: "keys", ...held });
}

window.addEventListener("keydown", (e) => {
  if (e.target instanceof HTMLInputElement && e.target.type !== "range") return;
  const name = KEYMAP[e.code];
  if (name) { setKey(name, true); e.preventDefault(); return; }
  if (e.repeat) return;
  if (e.code === "KeyP") setPaused(!paused);
  else if (e.code === "Period" && paused) send({ type: "step" });
  else if (e.code === "KeyR") send({ type: "reset" });
});
window.addEventListener("keyup", (e) => {
  const name = KEYMAP[e.code];
  if (name) { setKey(name, false); e.preventDefault(); }
});
window.addEventListener("blur", () => Object.keys(held).forEach((k) => setKey(k, false)));
