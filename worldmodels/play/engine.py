"""What `make play` computes: one jitted call per frame for each of its three modes.

- `Player.dream_frame`: the dream one step on, at temperature tau, with the action from the
  keyboard (drive) or from C (the agent in the dream), and V's decoding of the new z: M's
  step, the draw of the next z and the decode in one compiled program.
- `Player.real_frame`: C acting in the real env (the same compiled step as `Agent.act` and
  evaluation), with V's reconstruction of the frame and M's guess at the next one decoded.

Reward and P(done) come out of M's heads as the dream the controller trains in computes them
(`DreamEnv`). Per-episode state lives in small `Dream` / `RealEpisode` objects, one per
client, so the compiled functions are shared by every client of the server.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from worldmodels.errors import DataError, WorldModelsError

MODES = ("drive", "real", "agent-dream")
DRIVE_MAX_STEPS = 100_000
"""A person driving the dream is stopped by M's P(done) only (the cap is ~30 min at 50 fps)."""
MIN_TAU, MAX_TAU = 0.01, 3.0


class PlayError(WorldModelsError):
    """`make play` cannot start: a port in use, an agent dir it cannot use."""


def keys_to_action(env_name: str, keys: dict[str, bool]) -> np.ndarray:
    """The held keys -> the env's action. CarRacing: [steer, gas, brake]; Doom: [-1 | 0 | +1]."""
    steer = float(keys.get("right", False)) - float(keys.get("left", False))
    if env_name == "doom":
        return np.array([steer], np.float32)
    return np.array([steer, float(keys.get("up", False)), 0.8 * float(keys.get("down", False))], np.float32)


@dataclass
class Dream:
    """One client's dream: M's state (a `DreamState`), its random key and step count."""

    key: jax.Array
    seed: int
    state: Any = None
    frame: np.ndarray | None = None
    steps: int = 0
    total: float = 0.0
    reward: float = 0.0
    p_done: float = 0.0
    done: bool = False
    action: np.ndarray | None = None


@dataclass
class RealEpisode:
    """One client's real-env episode: the env, C's LSTM state, the last observation."""

    env: Any
    seed: int
    obs: np.ndarray
    h: np.ndarray
    c: np.ndarray
    key: jax.Array
    steps: int = 0
    total: float = 0.0
    done: bool = False
    action: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Player:
    """V, M (and C when the folder has one) of an agent or run dir, compiled for play."""

    def __init__(self, folder: str | Path, warn=None):
        from worldmodels.envs import get_env_module
        from worldmodels.envs.dream import DreamEnv, dream_params
        from worldmodels.world_model import load_agent_config, load_world_model

        folder = Path(folder)
        warn = warn or (lambda message: print(message, file=sys.stderr, flush=True))
        config = load_agent_config(folder)
        self.folder = folder
        self.agent = None
        if (folder / "controller" / "best.msgpack").exists():  # C too: the agent modes
            from worldmodels.agent import load_agent

            self.agent = load_agent(folder)
            self.world = world = self.agent.world
        else:
            self.world = world = load_world_model(folder, config)
        self.env_name = config.env.name
        self.env_module = get_env_module(self.env_name)
        self.env_id = getattr(self.env_module, "AGENT_ENV_ID", config.env.eval_id)
        self.fps = int(self.env_module.VIDEO_FPS)
        self.default_tau = float(config.controller.temperature)
        self.start, self.start_note = self._dream_start(folder, warn)
        env = DreamEnv(world.module)
        self.reward_head = world.module.reward_head
        params = {
            "drive": dream_params(world, self.start, self.default_tau, DRIVE_MAX_STEPS),
            "agent-dream": dream_params(world, self.start, self.default_tau, config.controller.dream_max_steps),
        }
        self._build(env, params)

    # -- where dreams start ------------------------------------------------------------------

    def _dream_start(self, folder: Path, warn):
        """The folder's dream start (an agent's dream.npz, a run's series); failing both, the
        first frames of a few real episodes (what dream.npz holds, minus the rewards)."""
        from worldmodels.world_model import DreamStart, load_dream_start

        try:
            return load_dream_start(folder, self.world), ""
        except DataError as exc:
            reason = str(exc)
        frames = []
        try:
            env = self.make_env()
            try:
                for seed in range(4):
                    obs, _ = env.reset(seed=seed)
                    frames.append(self.env_module.preprocess_frame(obs, self.world.frame_size))
            finally:
                env.close()
        except Exception as exc:  # noqa: BLE001 (any env failure: the message says what happened)
            raise PlayError(f"{reason}; and the real env {self.env_id} could not start a dream either ({exc})") \
                from None
        mu = np.asarray(self.world.encode(np.stack(frames)), np.float32)
        rewards = np.array([0.0, 1.0], np.float32)
        note = f"{folder} has no dream.npz or series: dreams start from {self.env_id}'s first frames"
        if self.world.module.reward_head == "binary":
            note += " and the dreamed reward is M's P(reward > 0)"
        warn(f"play: {note} (`make export-agent` writes an agent's dream.npz)")
        return DreamStart(mu, np.full_like(mu, -np.inf), rewards, None), note

    # -- the compiled steps ------------------------------------------------------------------

    def _build(self, env, params) -> None:
        from worldmodels.envs import controller_squash
        from worldmodels.models.controller import controller_features, controller_output
        from worldmodels.models.mdnrnn import MDNRNN, LSTMState, sample_mdn
        from worldmodels.models.vision.layers import conv_compiler_options

        world = self.world
        vision, vparams = world.vision, world.vision_params
        module, rnn_params = world.module, world.rnn_params
        taken = self.env_module.dream_action
        squash = controller_squash(world.config)
        low = jnp.asarray(self.env_module.ACTION_LOW, jnp.float32)
        high = jnp.asarray(self.env_module.ACTION_HIGH, jnp.float32)
        features = world.config.controller.features
        options = conv_compiler_options()

        def decode(z):
            return jnp.round(jnp.clip(vision.decode(vparams, z[None]), 0.0, 1.0) * 255.0).astype(jnp.uint8)[0]

        def reset(mode, key):
            _, state = env.reset(key, params[mode])
            return state, decode(state.z)

        def drive(key, n, state, action, tau):
            p = params["drive"].replace(temperature=tau)
            _, state, reward, done, info = env.step(jax.random.fold_in(key, n), state,
                                                    taken(jnp.clip(action, low, high)), p)
            return state, decode(state.z), reward, info["p_done"], done

        def agent_dream(ctrl, key, n, state, tau):
            p = params["agent-dream"].replace(temperature=tau)
            obs = env.observation(state)
            action = squash(controller_output(ctrl, controller_features(obs, features)))
            _, state, reward, done, info = env.step(jax.random.fold_in(key, n), state, action, p)
            return state, decode(state.z), reward, info["p_done"], done, action

        def predict(key, n, frame, action, h, c, tau):
            """V's reconstruction of a real frame, and M's next z from it decoded."""
            z = vision.encode(vparams, frame[None].astype(jnp.float32) / 255.0)[0][0]
            x = module.inputs(z, action, jnp.zeros(()))
            _, out = module.apply({"params": rnn_params}, LSTMState(h, c), x, method=MDNRNN.step)
            z_next = module.next_z(z, sample_mdn(jax.random.fold_in(key, n), out, tau))
            reward, p_done = env.reward_and_p_done(out, params["drive"])
            return decode(z), decode(z_next), reward, p_done

        self._reset = jax.jit(reset, static_argnums=0, compiler_options=options)
        self._drive = jax.jit(drive, compiler_options=options)
        self._agent_dream = jax.jit(agent_dream, compiler_options=options)
        self._predict = jax.jit(predict, compiler_options=options)
        if self.agent is not None:
            from worldmodels.agent import make_agent_step

            self._agent_step = make_agent_step(world)  # the step Agent.act and evaluation run
            self._ctrl1 = jax.tree.map(lambda a: np.asarray(a)[None], self.agent.controller)

    @property
    def has_controller(self) -> bool:
        return self.agent is not None

    def warm_up(self) -> None:
        """Compile every step once (a client's first frame should not wait for XLA)."""
        dream = self.new_dream("drive", 0)
        self.dream_frame(dream, "drive", self.default_tau, np.zeros(self.world.action_dim, np.float32))
        if self.has_controller:
            dream = self.new_dream("agent-dream", 0)
            self.dream_frame(dream, "agent-dream", self.default_tau)
            frame = np.zeros((self.world.frame_size,) * 2 + (3,), np.uint8)
            h = np.zeros((1, self.world.hidden), np.float32)
            a, _, _ = self._agent_step(self._ctrl1, frame[None], h, h)
            jax.block_until_ready(self._predict(jax.random.key(0), 0, frame, a[0], h[0], h[0], jnp.float32(1.0)))

    # -- dreams ---------------------------------------------------------------------------------

    def new_dream(self, mode: str, seed: int) -> Dream:
        key = jax.random.key(seed)
        state, frame = self._reset(mode, jax.random.fold_in(key, 1 << 30))
        return Dream(key=key, seed=seed, state=state, frame=np.asarray(frame))

    def dream_frame(self, dream: Dream, mode: str, tau: float, action: np.ndarray | None = None) -> Dream:
        """One step of `dream` (the keys' action in 'drive', C's in 'agent-dream'); the new
        frame (64, 64, 3) uint8 is `dream.frame`."""
        tau = jnp.float32(tau)
        if mode == "drive":
            state, frame, reward, p_done, done = self._drive(dream.key, dream.steps, dream.state,
                                                             jnp.asarray(action, jnp.float32), tau)
            dream.action = np.asarray(action, np.float32)
        else:
            state, frame, reward, p_done, done, action = self._agent_dream(self.agent.controller, dream.key,
                                                                           dream.steps, dream.state, tau)
            dream.action = np.asarray(action)
        dream.state, dream.frame = state, np.asarray(frame)
        dream.reward, dream.p_done, dream.done = float(reward), float(p_done), bool(done)
        dream.steps += 1
        dream.total += dream.reward
        return dream

    # -- the real env -------------------------------------------------------------------------

    def make_env(self):
        """The real env the agent plays (Doom: `worldmodels/TakeCover-v1`, CarRacing: CarRacing-v3)."""
        if hasattr(self.env_module, "AGENT_ENV_ID"):  # an id of this package, registered on import
            import gymnasium

            import worldmodels  # noqa: F401

            return gymnasium.make(self.env_id)
        return self.env_module.make_env(self.env_id)

    def new_episode(self, seed: int) -> RealEpisode:
        env = self.make_env()
        try:
            obs, _ = env.reset(seed=seed)
        except BaseException:
            env.close()
            raise
        zeros = np.zeros((1, self.world.hidden), np.float32)
        return RealEpisode(env=env, seed=seed, obs=obs, h=zeros, c=zeros, key=jax.random.key(seed))

    def restart(self, episode: RealEpisode, seed: int) -> RealEpisode:
        obs, _ = episode.env.reset(seed=seed)
        zeros = np.zeros((1, self.world.hidden), np.float32)
        return dataclasses.replace(episode, seed=seed, obs=obs, h=zeros, c=zeros, key=jax.random.key(seed),
                                   steps=0, total=0.0, done=False, action=None, extra={})

    def real_frame(self, episode: RealEpisode, tau: float) -> dict[str, np.ndarray]:
        """C acts on the current observation; returns the frames to show (the real one, V's
        reconstruction, M's decoded guess at the next one); then the env takes the action."""
        frame = self.env_module.preprocess_frame(episode.obs, self.world.frame_size)
        actions, h, c = self._agent_step(self._ctrl1, frame[None], episode.h, episode.c)
        recon, guess, reward, p_done = self._predict(episode.key, episode.steps, frame, actions[0], episode.h[0],
                                                     episode.c[0], jnp.float32(tau))
        shown = {"real": episode.obs, "recon": np.asarray(recon), "guess": np.asarray(guess)}
        episode.h, episode.c, episode.action = h, c, actions[0]
        episode.extra = {"reward_guess": float(reward), "p_done": float(p_done)}
        obs, r, terminated, truncated, _ = episode.env.step(actions[0].astype(np.float32))
        episode.obs, episode.steps = obs, episode.steps + 1
        episode.total += float(r)
        episode.done = bool(terminated or truncated)
        return shown
