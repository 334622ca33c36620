"""The other generative models: every registry model learns from one step, shapes, V's interface,
frozen layers, and the V-substitution pipeline (rollouts -> train-vae -> series -> train-rnn)."""

from __future__ import annotations

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import run_stage
from worldmodels.config import get_config
from worldmodels.errors import ConfigError
from worldmodels.models.vision import get_vision_model, vision_model_names
from worldmodels.models.vision.generative import ENCODER_FREE, build_generative, generative_model_names

SMALL = (16, 16, 1)
PAPER = (64, 64, 3)


def small_config(*overrides: str):
    """The tiny vision config with the small (book MNIST) conv stack."""
    return get_config("tiny", ["--vision.encoder_channels", "8,8,8,8", "--vision.learning_rate", "1e-3",
                               *overrides]).vision


def digit_batch(shape, n=8, seed=0):
    """Blurry blobs in [0, 1]: a learnable, non-constant tiny batch."""
    rng = np.random.default_rng(seed)
    h, w, c = shape
    yy, xx = np.mgrid[:h, :w] / max(h, w)
    centres = rng.uniform(0.3, 0.7, (n, 2))
    img = np.exp(-((yy[None] - centres[:, :1, None]) ** 2 + (xx[None] - centres[:, 1:, None]) ** 2) / 0.02)
    return jnp.asarray(np.repeat(img[..., None], c, axis=-1), jnp.float32)


def batch_for(model, shape):
    x = digit_batch(shape)
    return (x, 1.0 - x) if model.paired else x


def test_registry_has_every_model():
    names = set(vision_model_names())
    assert {"vae", "ae", "beta-vae", "perceptual-vae", "combined-vae", "two-decoder-vae", "dcgan",
            "wgan-gp"} <= names
    assert set(generative_model_names()) <= names


@pytest.mark.parametrize("shape", [SMALL, PAPER], ids=["16x16x1", "64x64x3"])
@pytest.mark.parametrize("name", ["ae", "beta-vae", "perceptual-vae", "combined-vae", "two-decoder-vae"])
def test_one_step_lowers_the_loss_and_shapes_hold(name, shape):
    cfg = small_config() if shape == SMALL else get_config("tiny", ["--vision.learning_rate", "1e-3"]).vision
    model = build_generative(name, cfg, shape, aux_classifier=shape == SMALL)
    state = model.init_state(jax.random.key(0))
    batch = batch_for(model, shape)
    key = jax.random.key(1)
    before, _ = model.loss(state.params, batch, key)
    state, metrics = jax.jit(model.make_train_step())(state, batch, key)
    after, _ = model.loss(state.params, batch, key)
    assert np.isfinite(float(metrics["loss"])) and float(after) < float(before)
    x = batch[0] if model.paired else batch
    mu, logvar = model.encode(state.params, x)
    assert mu.shape == logvar.shape == (8, cfg.latent_dim)
    assert model.decode(state.params, mu).shape == (8, *shape)
    out = model.decode(state.params, mu)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


@pytest.mark.parametrize("name", ENCODER_FREE)
def test_gan_steps_lower_critic_and_generator_losses(name):
    cfg = small_config("--vision.critic_steps", "2")
    model = build_generative(name, cfg, SMALL)
    state = model.init_state(jax.random.key(0))
    real, key = digit_batch(SMALL), jax.random.key(3)
    new, metrics = jax.jit(model.make_train_step())(state, real, jax.random.key(4))
    assert np.isfinite(float(metrics["critic"])) and np.isfinite(float(metrics["generator"]))
    old_g, new_g = state.params["generator"], new.params["generator"]
    old_c, new_c = state.params["critic"], new.params["critic"]
    # The critic's step lowers its loss against the old generator ...
    c_before = model.loss({"generator": old_g, "critic": old_c}, real, key)[1]["critic"]
    c_after = model.loss({"generator": old_g, "critic": new_c}, real, key)[1]["critic"]
    assert float(c_after) < float(c_before)
    # ... and the generator's step lowers its loss against the new critic.
    g_before = model.loss({"generator": old_g, "critic": new_c}, real, key)[1]["generator"]
    g_after = model.loss({"generator": new_g, "critic": new_c}, real, key)[1]["generator"]
    assert float(g_after) < float(g_before)
    z = jax.random.normal(key, (5, cfg.latent_dim))
    assert model.decode(new.params, z).shape == (5, *SMALL)
    assert model.encode is None
    with pytest.raises(ConfigError, match="has no encoder .* cannot be V; models that can: vae, ae"):
        get_vision_model(get_config("tiny", ["--vision.model", name]).vision)


def test_frozen_layers_stay_frozen():
    cfg = small_config()
    classifier_stack = build_generative("perceptual-vae", cfg, SMALL, aux_classifier=True).init(jax.random.key(7))
    for name in ("perceptual-vae", "combined-vae"):
        model = build_generative(name, cfg, SMALL, aux_classifier=True)
        state = model.init_state(jax.random.key(0))
        state = state.replace(params=model.with_classifier(state.params, {"stack": classifier_stack["features"]}))
        new, _ = jax.jit(model.make_train_step())(state, digit_batch(SMALL), jax.random.key(1))
        frozen = new.params["features"] if name == "perceptual-vae" else new.params["encoder"]["stack"]
        for a, b in zip(jax.tree.leaves(frozen), jax.tree.leaves(classifier_stack["features"]), strict=True):
            np.testing.assert_array_equal(a, b)
        changed = new.params["decoder"]
        assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(changed),
                                                             jax.tree.leaves(state.params["decoder"]), strict=True))
    # As V, combined-vae trains its conv layers for `combined_pretrain_steps`, then freezes them.
    model = build_generative("combined-vae", get_config("tiny", ["--vision.combined_pretrain_steps", "1"]).vision)
    step = jax.jit(model.make_train_step())
    s0 = model.init_state(jax.random.key(0))
    s1, _ = step(s0, digit_batch(PAPER), jax.random.key(1))
    s2, _ = step(s1, digit_batch(PAPER), jax.random.key(2))
    stack = lambda s: jax.tree.leaves(s.params["encoder"]["stack"])
    assert any(not np.array_equal(a, b) for a, b in zip(stack(s0), stack(s1), strict=True))
    for a, b in zip(stack(s1), stack(s2), strict=True):
        np.testing.assert_array_equal(a, b)


def test_bad_model_settings():
    with pytest.raises(ConfigError, match="unknown vision.reconstruction 'l1'; valid: mse, bce"):
        build_generative("ae", small_config("--vision.reconstruction", "l1"), SMALL)
    with pytest.raises(ConfigError, match="reconstruction_weight must be > 0"):
        get_vision_model(get_config("tiny", ["--vision.model", "perceptual-vae",
                                             "--vision.reconstruction_weight", "0"]).vision)
    with pytest.raises(ConfigError, match="unknown generative model 'nope'; valid: ae, beta-vae"):
        build_generative("nope", small_config(), SMALL)
    with pytest.raises(ConfigError, match=r"image shape must be \(H, W, C\)"):
        build_generative("ae", small_config(), (16, 16))


def test_as_v_one_train_step(tmp_path):
    """Each encoder model through the V train loop's own step function (uint8 frames)."""
    from worldmodels.train.vision import init_state, make_optimizer, make_train_step

    frames = (digit_batch(PAPER) * 255).astype(jnp.uint8)
    for name in ("perceptual-vae", "two-decoder-vae"):  # the two with V-only behaviour
        cfg = get_config("tiny", ["--vision.model", name, "--vision.learning_rate", "1e-3"]).vision
        model = get_vision_model(cfg)
        tx = make_optimizer(cfg)
        state = init_state(model, tx, jax.random.key(0))
        key = jax.random.key(1)
        x = frames.astype(jnp.float32) / 255.0
        loss = jax.jit(lambda p, x, k, model=model: model.loss(p, x, k)[0])
        before = float(loss(state.params, x, key))
        state, _ = jax.jit(make_train_step(model, tx))(state, frames, key)
        assert float(loss(state.params, x, key)) < before, name


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:os.fork")  # ffmpeg and the CLI checks fork only to exec
@pytest.mark.parametrize("name", ["ae", "beta-vae"])
def test_other_models_as_v_in_the_pipeline(tmp_path, tiny_world, name):
    """rollouts (shared) -> train-vae -> series -> train-rnn with another V."""
    run = tmp_path / name
    shutil.copytree(tiny_world / "rollouts", run / "rollouts")
    extra = ["--vision.model", name]
    if name == "beta-vae":
        extra += ["--vision.reconstruction", "bce", "--vision.kl_weight", "4"]
    import importlib

    for stage in ("train_vae", "series", "train_rnn"):  # the stage entries, in-process (one compile cache)
        importlib.import_module(f"pipeline.{stage}").main(["--config", "tiny", "--run", str(run), *extra])
    summary = json.loads((run / "vision" / "summary.json").read_text())
    assert summary["steps"] > 0 and np.isfinite(summary["heldout_mse_per_pixel"])
    saved = json.loads((run / "vision" / "config.json").read_text())
    assert saved["vision"]["model"] == name
    series = np.load(sorted((run / "series").glob("episode_*.npz"))[0])
    assert series["mu"].shape[1] == 8 and np.isfinite(series["mu"]).all()
    if name == "ae":
        assert np.all(series["logvar"] <= -19)  # deterministic encoder
    assert np.isfinite(json.loads((run / "mdnrnn" / "summary.json").read_text())["heldout_z_nll"])
    if name == "ae":  # through the CLI as make runs it: another V for this run, an unknown model
        result = run_stage("series", "--config", "tiny", "--run", str(run), check=False)
        assert result.returncode == 2 and "vision.model" in result.stderr
        result = run_stage("train_vae", "--config", "tiny", "--run", str(tmp_path / "x"), "--vision.model", "gan",
                           check=False)
        assert result.returncode == 2 and "unknown vision model 'gan'; valid: ae, beta-vae" in result.stderr
