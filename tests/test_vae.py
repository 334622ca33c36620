"""V: hand-worked loss values, shapes, a train step that learns, checkpoints, the registry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from worldmodels.checkpoint import load_checkpoint, save_checkpoint
from worldmodels.config import get_config
from worldmodels.errors import CheckpointError, ConfigError
from worldmodels.losses import gaussian_kl_per_image, vae_loss_terms
from worldmodels.models.vision import get_vision_model, vision_model_names
from worldmodels.train.vision import init_state, make_optimizer, make_train_step


def test_kl_hand_worked():
    # KL(N(1, e^0) || N(0,1)) = 0.5 * mu^2 = 0.5; KL(N(0, e^2)||N(0,1)) = -0.5(1 + 2 - e^2)
    mu = jnp.array([[1.0, 0.0]])
    logvar = jnp.array([[0.0, 2.0]])
    expected = 0.5 + (-0.5 * (1 + 2 - np.exp(2.0)))
    np.testing.assert_allclose(gaussian_kl_per_image(mu, logvar), [expected], rtol=1e-6)


def test_vae_loss_floors_kl_per_image():
    target = jnp.zeros((2, 2, 2, 3))
    recon = jnp.full((2, 2, 2, 3), 0.5)  # SSE per image = 12 * 0.25 = 3
    mu = jnp.array([[0.0, 0.0], [3.0, 0.0]])  # KL 0 and 4.5
    logvar = jnp.zeros((2, 2))
    loss, r_loss, kl = vae_loss_terms(recon, target, mu, logvar, kl_tolerance=0.5)
    # floor = 0.5 * Z = 1: image 1 -> max(0, 1) = 1, image 2 -> 4.5
    np.testing.assert_allclose(r_loss, 3.0)
    np.testing.assert_allclose(kl, 2.25)
    np.testing.assert_allclose(loss, 3.0 + (1.0 + 4.5) / 2)


@pytest.mark.parametrize("layers", ["flax", "fast"])
def test_paper_sizes_and_shapes(layers):
    cfg = get_config("default", ["--vision.layers", layers]).vision
    model = get_vision_model(cfg)
    params = jax.eval_shape(model.init, jax.random.key(0))
    shapes = jax.tree.map(lambda a: a.shape, params)
    assert shapes["encoder"]["conv3"]["kernel"] == (4, 4, 128, 256)
    assert shapes["encoder"]["mu"]["kernel"] == (1024, 32)
    assert shapes["decoder"]["fc"]["kernel"] == (32, 1024)
    assert shapes["decoder"]["deconv0"]["kernel"] == (5, 5, 1024, 128)
    assert shapes["decoder"]["deconv3"]["kernel"] == (6, 6, 32, 3)
    x = jnp.zeros((3, 64, 64, 3))
    mu, logvar = jax.eval_shape(model.encode, params, x)
    assert mu.shape == logvar.shape == (3, 32)
    assert jax.eval_shape(model.decode, params, mu).shape == (3, 64, 64, 3)


@pytest.mark.parametrize("layers", ["flax", "fast"])
def test_train_steps_lower_the_loss(layers):
    cfg = get_config("tiny", ["--vision.layers", layers, "--vision.learning_rate", "1e-2"]).vision
    model = get_vision_model(cfg)
    tx = make_optimizer(cfg)
    state = init_state(model, tx, jax.random.key(0))
    step = jax.jit(make_train_step(model, tx))
    ramp = np.linspace(0, 255, 64)  # one smooth frame, 8 times: learnable in a few steps
    frame = np.stack([ramp[:, None] + 0 * ramp, 0 * ramp[:, None] + ramp, 255 - ramp[:, None] + 0 * ramp], -1)
    batch = jnp.asarray(np.broadcast_to(frame, (8, 64, 64, 3)), jnp.uint8)
    losses = []
    for i in range(20):
        state, metrics = step(state, batch, jax.random.key(i))
        losses.append(float(metrics["loss"]))
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.85 * losses[0]
    assert int(state.step) == 20


def test_fast_and_flax_layers_compute_the_same_vae():
    cfg = get_config("tiny").vision
    fast = get_vision_model(cfg)
    plain = get_vision_model(get_config("tiny", ["--vision.layers", "flax"]).vision)
    params = fast.init(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (4, 64, 64, 3))
    # jitted: one compile per model instead of an eager dispatch (and compile) per operation
    encode_fast, encode_plain = jax.jit(fast.encode), jax.jit(plain.encode)
    np.testing.assert_allclose(encode_fast(params, x)[0], encode_plain(params, x)[0], rtol=1e-4, atol=1e-5)
    key = jax.random.key(2)
    g_fast = jax.jit(jax.grad(lambda p: fast.loss(p, x, key)[0]))(params)
    g_plain = jax.jit(jax.grad(lambda p: plain.loss(p, x, key)[0]))(params)
    for a, b in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_plain), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=1e-3)


def test_checkpoint_round_trip_and_architecture_mismatch(tmp_path):
    cfg = get_config("tiny").vision
    model = get_vision_model(cfg)
    tx = make_optimizer(cfg)
    state = init_state(model, tx, jax.random.key(0))
    save_checkpoint(tmp_path / "c.msgpack", jax.device_get(state), {"epoch": 1})
    restored, meta = load_checkpoint(tmp_path / "c.msgpack", init_state(model, tx, jax.random.key(9)))
    assert meta == {"epoch": 1}
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored), strict=True):
        np.testing.assert_array_equal(a, b)
    other = get_vision_model(get_config("tiny", ["--vision.latent_dim", "4"]).vision)
    with pytest.raises(CheckpointError, match="another architecture"):
        load_checkpoint(tmp_path / "c.msgpack", init_state(other, tx, jax.random.key(0)))
    (tmp_path / "bad.msgpack").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path / "bad.msgpack", state)


def test_registry_names_valid_models():
    assert "vae" in vision_model_names()
    with pytest.raises(ConfigError, match="unknown vision model 'nope'; valid: "):
        get_vision_model(get_config("tiny", ["--vision.model", "nope"]).vision)
