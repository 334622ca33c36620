"""The world model: V and M with their parameters, loaded from a run or agent directory.

This module sits low in the package: training, rollouts, evaluation, the dream env and
`make play` import it, and it imports only models, config, checkpoints and env glue.
A run dir and a shipped agent dir hold the same files::

    config.json                the resolved config the models were trained with
    vision/params.msgpack      V (its checkpoint meta records the architecture)
    mdnrnn/params.msgpack      M
    controller/best.msgpack    C (see `worldmodels.agent`)
    dream.npz                  agents only: where dreams start and what they pay (run dirs
                               read the same from series/)

>>> wm = load_world_model("agents/carracing")
>>> z = wm.encode(frames)                  # uint8 (n, 64, 64, 3) -> (n, Z), z = mu
>>> state = wm.initial_state(len(z))
>>> state, out = wm.step(state, z, actions)  # M reads [z, a]: its prediction of the next z
>>> z_next = wm.sample(key, out, z, temperature=1.0)
>>> frames_next = wm.decode(z_next)        # uint8 (n, 64, 64, 3)
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from worldmodels.checkpoint import load_checkpoint, read_checkpoint_meta
from worldmodels.config import Config, MDNRNNConfig, VisionConfig
from worldmodels.envs import get_env_module
from worldmodels.errors import CheckpointError, ConfigError, DataError
from worldmodels.models.mdnrnn import MDNRNN, LSTMState, MDNOutput, sample_mdn
from worldmodels.models.vision import VisionModel, get_vision_model

# ---- V: architecture records and loading ------------------------------------------------

VISION_ARCHITECTURE_FIELDS = ("model", "latent_dim", "encoder_channels", "decoder_channels")
"""Fields of VisionConfig that fix the parameter tree: a checkpoint must match them."""


def vision_meta(cfg: VisionConfig) -> dict[str, Any]:
    """The architecture fields, JSON-ready, stored in every V checkpoint."""
    fields = {f: getattr(cfg, f) for f in VISION_ARCHITECTURE_FIELDS}
    return {"vision": {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}}


def check_architecture(meta: dict[str, Any], cfg: VisionConfig, path) -> None:
    saved = meta.get("vision", {})
    for name in VISION_ARCHITECTURE_FIELDS:
        want = getattr(cfg, name)
        want = list(want) if isinstance(want, tuple) else want
        if saved.get(name) != want:
            raise CheckpointError(f"{path} was trained with vision.{name}={saved.get(name)!r}, the "
                                  f"config says {want!r}; use a matching config or another RUN=")


def load_vision(folder: str | Path, cfg: VisionConfig) -> tuple[VisionModel, Any]:
    """V's model and trained parameters from a `vision/` folder (params.msgpack)."""
    path = Path(folder) / "params.msgpack"
    if not path.exists():
        raise CheckpointError(f"no trained V at {path}; run `make train-vae` first")
    meta = read_checkpoint_meta(path)
    check_architecture(meta, cfg, path)
    model = get_vision_model(cfg)
    target = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), jax.eval_shape(model.init, jax.random.key(0)))
    params, _ = load_checkpoint(path, target)
    return model, params


# ---- M: architecture records and loading ------------------------------------------------

MDNRNN_ARCHITECTURE_FIELDS = ("hidden", "mixtures", "prev_reward_input", "reward_head", "done_head",
                              "min_log_sigma", "max_log_sigma", "predict_delta")
LATER_FIELDS = {"predict_delta": False}
"""Architecture fields added after checkpoints were written: their value in those checkpoints."""
REWARD_HEADS = ("binary", "regression", "none")


def make_module(cfg: MDNRNNConfig, latent_dim: int, action_dim: int) -> MDNRNN:
    if cfg.reward_head not in REWARD_HEADS:
        raise ConfigError(f"unknown mdnrnn.reward_head '{cfg.reward_head}'; valid: {', '.join(REWARD_HEADS)}")
    return MDNRNN(latent_dim=latent_dim, action_dim=action_dim, hidden=cfg.hidden, mixtures=cfg.mixtures,
                  prev_reward_input=cfg.prev_reward_input, reward_head=cfg.reward_head,
                  done_head=cfg.done_head, min_log_sigma=cfg.min_log_sigma, max_log_sigma=cfg.max_log_sigma,
                  predict_delta=cfg.predict_delta)


def init_params(module: MDNRNN, key: jax.Array):
    x = jnp.zeros((1, 1, module.input_dim), jnp.float32)
    return module.init(key, x)["params"]


def mdnrnn_meta(cfg: MDNRNNConfig, latent_dim: int, action_dim: int) -> dict[str, Any]:
    # sample_z is not architecture (an M trained on draws can be fine-tuned on mu): it is kept
    # so the dream knows where this M's episodes start (`trained_on_mu`).
    return {"mdnrnn": {f: getattr(cfg, f) for f in MDNRNN_ARCHITECTURE_FIELDS},
            "latent_dim": latent_dim, "action_dim": action_dim, "sample_z": cfg.sample_z}


def check_mdnrnn_meta(meta: dict[str, Any], cfg: MDNRNNConfig, latent_dim: int, action_dim: int, path):
    want = mdnrnn_meta(cfg, latent_dim, action_dim)
    for key in ("latent_dim", "action_dim"):
        if meta.get(key) != want[key]:
            raise CheckpointError(f"{path} was trained for {key}={meta.get(key)}, the series has "
                                  f"{want[key]}: it belongs to another V; use another RUN=")
    for name, value in want["mdnrnn"].items():
        if meta.get("mdnrnn", {}).get(name, LATER_FIELDS.get(name)) != value:
            raise CheckpointError(f"{path} was trained with mdnrnn.{name}={meta['mdnrnn'].get(name)!r}, "
                                  f"the config says {value!r}; use a matching config or another RUN=")


def trained_on_mu(meta: dict[str, Any]) -> bool | None:
    """Whether an M's checkpoint meta says it was last trained on mu (mdnrnn.sample_z false);
    None when the checkpoint predates the record (then the config's sample_z decides)."""
    sample_z = meta.get("sample_z")
    return None if sample_z is None else not sample_z


def load_mdnrnn(folder: str | Path, cfg: MDNRNNConfig, latent_dim: int, action_dim: int):
    """(module, params) of a trained M from an `mdnrnn/` folder."""
    return load_mdnrnn_with_meta(folder, cfg, latent_dim, action_dim)[:2]


def load_mdnrnn_with_meta(folder: str | Path, cfg: MDNRNNConfig, latent_dim: int, action_dim: int):
    """(module, params, checkpoint meta) of a trained M from an `mdnrnn/` folder."""
    path = Path(folder) / "params.msgpack"
    if not path.exists():
        raise CheckpointError(f"no trained M at {path}; run `make train-rnn` first")
    meta = read_checkpoint_meta(path)
    check_mdnrnn_meta(meta, cfg, latent_dim, action_dim, path)
    module = make_module(cfg, latent_dim, action_dim)
    target = jax.eval_shape(lambda k: init_params(module, k), jax.random.key(0))
    target = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), target)
    params, _ = load_checkpoint(path, target)
    return module, params, meta


# ---- V + M together -----------------------------------------------------------------------


@dataclass(frozen=True)
class WorldModel:
    """V and M with their parameters, and the config they were trained with.

    Shapes: frames uint8 (n, S, S, 3) (or float32 in [0, 1]); z (n, Z); actions (n, A);
    M's state an `LSTMState` of (n, H) arrays. The array methods are jitted once per world
    model (and per batch shape)."""

    config: Config
    vision: VisionModel
    vision_params: Any
    module: MDNRNN
    rnn_params: Any
    rnn_on_mu: bool | None = None
    """M was last trained on mu (mdnrnn.sample_z false), so its dreams start at mu; None: its
    checkpoint does not say, the config's mdnrnn.sample_z decides."""

    @property
    def dreams_from_mu(self) -> bool:
        return not self.config.mdnrnn.sample_z if self.rnn_on_mu is None else self.rnn_on_mu

    @property
    def action_dim(self) -> int:
        return self.module.action_dim

    @property
    def latent_dim(self) -> int:
        return self.module.latent_dim

    @property
    def hidden(self) -> int:
        return self.module.hidden

    @property
    def frame_size(self) -> int:
        return self.config.env.frame_size

    @property
    def env_id(self) -> str:
        """The gymnasium id the models were made for (the reference env, as evaluation uses)."""
        return self.config.env.eval_id

    def payload(self) -> dict[str, Any]:
        """Plain numpy + JSON: what Ray ships to workers on any node (no shared disk needed)."""
        return {"config": self.config.to_json(), "vision": jax.device_get(self.vision_params),
                "rnn": jax.device_get(self.rnn_params), "rnn_on_mu": self.rnn_on_mu}

    def controller_template(self) -> dict[str, jax.Array]:
        from worldmodels.models.controller import feature_dim, init_controller

        cfg = self.config.controller
        n_in = feature_dim(cfg.features, self.module.latent_dim, self.module.hidden)
        return init_controller(jax.random.key(0), n_in, self.action_dim, cfg.hidden, cfg.bias)

    # -- arrays in, arrays out ---------------------------------------------------------------

    @functools.cached_property
    def _encode(self):
        from worldmodels.models.vision.layers import conv_compiler_options

        vision, params = self.vision, self.vision_params
        return jax.jit(lambda x: vision.encode(params, _as_unit(x))[0], compiler_options=conv_compiler_options())

    @functools.cached_property
    def _decode(self):
        from worldmodels.models.vision.layers import conv_compiler_options

        vision, params = self.vision, self.vision_params

        def decode(z):
            return jnp.round(jnp.clip(vision.decode(params, z), 0.0, 1.0) * 255.0).astype(jnp.uint8)

        return jax.jit(decode, compiler_options=conv_compiler_options())

    @functools.cached_property
    def _step(self):
        module, params = self.module, self.rnn_params

        def step(state, z, action, prev_reward):
            x = module.inputs(z, action, prev_reward)
            return module.apply({"params": params}, state, x, method=MDNRNN.step)

        return jax.jit(step)

    @functools.cached_property
    def _sample(self):
        module = self.module
        return jax.jit(lambda key, out, z, tau: module.next_z(z, sample_mdn(key, out, tau)))

    def encode(self, frames) -> jax.Array:
        """Frames (n, S, S, 3), uint8 or float in [0, 1] -> z = mu (n, Z)."""
        frames = jnp.asarray(frames)
        if frames.ndim != 4 or frames.shape[1:] != (self.frame_size, self.frame_size, 3):
            raise ValueError(f"encode takes frames (n, {self.frame_size}, {self.frame_size}, 3), got {frames.shape}")
        return self._encode(frames)

    def decode(self, z) -> jax.Array:
        """z (n, Z) -> frames uint8 (n, S, S, 3)."""
        z = jnp.asarray(z, jnp.float32)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"decode takes z (n, {self.latent_dim}), got {z.shape}")
        return self._decode(z)

    def initial_state(self, n: int) -> LSTMState:
        """M's zero state for n parallel sequences, (n, H) each."""
        return self.module.initial_state((n,))

    def step(self, state: LSTMState, z, action, prev_reward=None) -> tuple[LSTMState, MDNOutput]:
        """M reads [z (n, Z), action (n, A) (, previous reward (n,))] -> (new state, MDNOutput
        of the next z's mixture, reward and done logits)."""
        z = jnp.asarray(z, jnp.float32)
        prev_reward = jnp.zeros(z.shape[:1]) if prev_reward is None else jnp.asarray(prev_reward, jnp.float32)
        return self._step(state, z, jnp.asarray(action, jnp.float32), prev_reward)

    def sample(self, key: jax.Array, out: MDNOutput, z, temperature: float = 1.0) -> jax.Array:
        """The next z (n, Z) drawn from M's mixture at temperature tau (from the current z,
        which an M predicting the change adds to)."""
        return self._sample(key, out, jnp.asarray(z, jnp.float32), jnp.float32(temperature))


def _as_unit(frames: jax.Array) -> jax.Array:
    return frames.astype(jnp.float32) / 255.0 if frames.dtype == jnp.uint8 else frames.astype(jnp.float32)


def load_agent_config(folder: str | Path) -> Config:
    """The config a world model or agent was trained with: config.json at the top, else the
    controller's, else M's (a run dir before `make train-controller`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder} does not exist; give a run dir (after `make train-rnn`) or a "
                          "shipped agent such as agents/carracing")
    for candidate in (folder / "config.json", folder / "controller" / "config.json", folder / "mdnrnn" / "config.json"):
        if candidate.exists():
            try:
                return Config.from_dict(json.loads(candidate.read_text()))
            except (json.JSONDecodeError, TypeError, ValueError) as exc:
                raise ConfigError(f"{candidate} is not a readable config ({exc}); re-export the agent") from None
    raise ConfigError(f"{folder} is not an agent: it has no config.json (expected a run dir after "
                      "`make train-controller`, or a shipped agent such as agents/carracing)")


def load_world_model(folder: str | Path, config: Config | None = None) -> WorldModel:
    """V and M from a run or agent directory (config from its config.json unless given)."""
    folder = Path(folder)
    if config is None:
        config = load_agent_config(folder)
    vision, vparams = load_vision(folder / "vision", config.vision)
    module, rnn_params, meta = load_mdnrnn_with_meta(folder / "mdnrnn", config.mdnrnn, vision.latent_dim,
                                                     get_env_module(config.env.name).ACTION_DIM)
    return WorldModel(config, vision, vparams, module, rnn_params, trained_on_mu(meta))


def world_from_payload(payload: dict[str, Any]) -> WorldModel:
    """The inverse of `WorldModel.payload` (inside a Ray worker)."""
    config = Config.from_dict(json.loads(payload["config"]))
    vision = get_vision_model(config.vision)
    module = make_module(config.mdnrnn, vision.latent_dim, get_env_module(config.env.name).ACTION_DIM)
    return WorldModel(config, vision, payload["vision"], module, payload["rnn"], payload.get("rnn_on_mu"))


# ---- where dreams start, and what they pay ------------------------------------------------

DREAM_FILE = "dream.npz"


@dataclass(frozen=True)
class DreamStart:
    """What a dream needs besides M: the first frames' posteriors of recorded episodes (dream
    resets draw one), and the reward values of the series (see `worldmodels.envs.dream`)."""

    initial_mu: np.ndarray  # (N, Z)
    initial_logvar: np.ndarray  # (N, Z)
    reward_values: np.ndarray  # (2,) [r_neg, r_pos]
    death_reward: float | None


def dream_rewards(series_folder: str | Path, reward_head: str) -> tuple[np.ndarray, float | None]:
    """What M's dream pays, from the recorded series: [r_neg, r_pos], the mean non-positive and
    mean positive reward of the non-terminal steps (a binary head's two outcomes), and the mean
    reward of the terminal steps (what a death costs in the real env), None when M has no reward
    head (Doom pays steps survived) or the series hold no terminal step."""
    from worldmodels.data.series import list_series, load_series

    series = [load_series(p) for p in list_series(Path(series_folder))]
    r = np.concatenate([s["reward"][~s["done"]] for s in series]) if series else np.zeros(1)
    died = np.concatenate([s["reward"][s["done"]] for s in series]) if series else np.zeros(0)
    neg, pos = r[r <= 0], r[r > 0]
    values = np.array([neg.mean() if len(neg) else 0.0, pos.mean() if len(pos) else 1.0], np.float32)
    return values, (float(died.mean()) if len(died) and reward_head != "none" else None)


def series_dream_start(series_folder: str | Path, reward_head: str) -> DreamStart:
    """A run's dream start from its series: initial_z.npz, and the rewards of every episode."""
    series_folder = Path(series_folder)
    initial = series_folder / "initial_z.npz"
    if not initial.exists():
        raise DataError(f"{initial} is missing; run `make series` first")
    with np.load(initial) as data:
        mu, logvar = data["mu"], data["logvar"]
    return DreamStart(mu, logvar, *dream_rewards(series_folder, reward_head))


def save_dream_start(path: str | Path, start: DreamStart) -> None:
    from worldmodels.data.atomic import atomic_save_npz

    atomic_save_npz(Path(path), compress=True, initial_mu=start.initial_mu.astype(np.float32),
                    initial_logvar=start.initial_logvar.astype(np.float32),
                    reward_values=start.reward_values.astype(np.float32),
                    death_reward=np.float32(np.nan if start.death_reward is None else start.death_reward))


def load_dream_start(folder: str | Path, world: WorldModel) -> DreamStart:
    """An agent dir's dream.npz, else a run dir's series."""
    folder = Path(folder)
    path = folder / DREAM_FILE
    if path.exists():
        with np.load(path) as data:
            death = float(data["death_reward"])
            return DreamStart(data["initial_mu"], data["initial_logvar"], data["reward_values"],
                              None if np.isnan(death) else death)
    if (folder / "series" / "initial_z.npz").exists():
        return series_dream_start(folder / "series", world.module.reward_head)
    raise DataError(f"{folder} has neither {DREAM_FILE} nor series/initial_z.npz, so a dream has nowhere to "
                    "start; run `make series` for a run dir, or `make export-agent` for an agent")


def encode_run(config, run: str | Path, vision: str | Path) -> dict[str, int]:
    """RUN/rollouts -> RUN/series with the V in `vision` (`make series`; a round of `make
    iterate` encodes its episodes with RUN's V the same way)."""
    from worldmodels.data.series import encode_rollouts, vision_fingerprint
    from worldmodels.run_dir import prepare_stage_dir

    run, vision = Path(run), Path(vision)
    model, params = load_vision(vision, config.vision)
    folder = prepare_stage_dir(run, "series", config, sections=("env",))
    return encode_rollouts(run / "rollouts", folder, model, params,
                           vision_id=vision_fingerprint(vision / "params.msgpack"),
                           batch_size=config.series.batch_size, frame_size=config.env.frame_size,
                           devices=config.vision.devices)
