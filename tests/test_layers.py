"""worldmodels.models.vision.layers: Conv / ConvTranspose equal flax.linen's, values and gradients.

Every layer shape of the VAE (VALID, stride 2), plus a few general kernels/strides, compared on
the same parameters under jax.jit: outputs, gradients w.r.t. inputs and parameters, and the
parameter trees (structure, shapes, initial values)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from worldmodels.models.vision import layers

# (input H = W, cin, cout, kernel, stride)
ENCODER = [(64, 3, 32, 4, 2), (31, 32, 64, 4, 2), (14, 64, 128, 4, 2), (6, 128, 256, 4, 2)]
DECODER = [(1, 1024, 128, 5, 2), (5, 128, 64, 5, 2), (13, 64, 32, 6, 2), (30, 32, 3, 6, 2)]
GENERAL_CONV = [(9, 3, 5, 3, 2), (11, 2, 3, 5, 3), (7, 2, 3, 3, 1), (8, 2, 3, 1, 2), (10, 2, 3, 2, 3)]
GENERAL_CONVT = [(4, 3, 5, 3, 2), (4, 3, 5, 5, 3), (5, 2, 3, 3, 1), (4, 2, 3, 1, 2), (3, 2, 3, 2, 3),
                 (1, 4, 3, 3, 2)]
RTOL = 1e-5
BATCH = 3


def _max_rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def _compare(ours: nn.Module, ref: nn.Module, h: int, cin: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((BATCH, h, h + (1 if h > 1 else 0), cin)), jnp.float32)
    key = jax.random.PRNGKey(seed)
    params_ref = ref.init(key, x)["params"]
    params = ours.init(key, x)["params"]
    # identical trees, shapes, dtypes and initial values (same init, same rng path)
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(params_ref)
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(params_ref), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # a non-zero bias so it is exercised
    params = jax.tree_util.tree_map(lambda p: p + 0.01 * jnp.arange(p.size).reshape(p.shape) / p.size, params)

    y_ref = jax.jit(lambda p, x: ref.apply({"params": p}, x))(params, x)
    y = jax.jit(lambda p, x: ours.apply({"params": p}, x))(params, x)
    assert y.shape == y_ref.shape
    assert _max_rel(y, y_ref) < RTOL

    g = jnp.asarray(rng.standard_normal(y_ref.shape), jnp.float32)

    def grads(module):
        loss = lambda p, x: jnp.sum(module.apply({"params": p}, x) * g)
        return jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)

    (gp, gx), (gp_ref, gx_ref) = grads(ours), grads(ref)
    assert _max_rel(gx, gx_ref) < RTOL
    for a, b in zip(jax.tree_util.tree_leaves(gp), jax.tree_util.tree_leaves(gp_ref), strict=True):
        assert _max_rel(a, b) < RTOL


@pytest.mark.parametrize("h,cin,cout,k,s", ENCODER + GENERAL_CONV)
def test_conv_matches_flax(h, cin, cout, k, s):
    kw = dict(features=cout, kernel_size=(k, k), strides=(s, s), padding="VALID")
    _compare(layers.Conv(**kw), nn.Conv(**kw), h, cin)


@pytest.mark.parametrize("h,cin,cout,k,s", DECODER + GENERAL_CONVT)
def test_conv_transpose_matches_flax(h, cin, cout, k, s):
    kw = dict(features=cout, kernel_size=(k, k), strides=(s, s), padding="VALID")
    _compare(layers.ConvTranspose(**kw), nn.ConvTranspose(**kw), h, cin)


def test_uneven_batch_chunks_in_kernel_gradient():
    """The ConvTranspose kernel gradient scans over batch chunks; a prime batch pads the last one."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((7, 13, 13, 8)), jnp.float32)
    dy = jnp.asarray(rng.standard_normal((7, 30, 30, 4)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((6, 6, 8, 4)), jnp.float32)
    ref = jax.vjp(lambda kk: jax.lax.conv_transpose(x, kk, (2, 2), "VALID",
                                                    dimension_numbers=("NHWC", "HWIO", "NHWC")), k)[1](dy)[0]
    for most in (1, 3, 7):
        got = layers._sum_over_batch_chunks(
            lambda xc, dc: layers._conv_transpose_kernel_grad(xc, dc, 6, 2, None), most, x, dy)
        assert _max_rel(got, ref) < RTOL


def test_extra_batch_dims_and_names_match_flax():
    """Auto-named modules get the same names and initial values as flax's; leading batch dims work."""

    class Net(nn.Module):
        conv: type
        conv_t: type

        @nn.compact
        def __call__(self, x):
            x = self.conv(8, (4, 4), strides=(2, 2), padding="VALID")(x)
            return self.conv_t(3, (6, 6), strides=(2, 2), padding="VALID")(x)

    x = jnp.ones((2, 3, 16, 16, 3), jnp.float32)
    ours, ref = Net(layers.Conv, layers.ConvTranspose), Net(nn.Conv, nn.ConvTranspose)
    p = ours.init(jax.random.PRNGKey(0), x)
    p_ref = ref.init(jax.random.PRNGKey(0), x)
    assert jax.tree_util.tree_map(np.asarray, p).keys() == p_ref.keys()
    jax.tree_util.tree_map(np.testing.assert_array_equal, p, p_ref)
    y, y_ref = ours.apply(p, x), ref.apply(p, x)
    assert y.shape == y_ref.shape == (2, 3, 18, 18, 3)
    assert _max_rel(y, y_ref) < RTOL


@pytest.mark.parametrize("kwargs", [
    dict(padding="SAME"), dict(padding=((1, 1), (1, 1))), dict(kernel_size=(3, 4)), dict(strides=(1, 2)),
    dict(kernel_size=3), dict(kernel_dilation=(2, 2)), dict(mask=jnp.ones((3, 3, 2, 4))),
])
def test_unsupported_settings_raise(kwargs):
    base = dict(features=4, kernel_size=(3, 3), strides=(2, 2), padding="VALID")
    x = jnp.ones((1, 9, 9, 2))
    for cls in (layers.Conv, layers.ConvTranspose):
        with pytest.raises(ValueError):
            cls(**{**base, **kwargs}).init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError):
        layers.Conv(**{**base, "feature_group_count": 2}).init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError):
        layers.ConvTranspose(**{**base, "transpose_kernel": True}).init(jax.random.PRNGKey(0), x)
