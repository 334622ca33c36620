"""Drop-in `Conv` / `ConvTranspose` for the VAE that train fast on XLA:CPU.

`Conv` and `ConvTranspose` have the same fields, parameter names, shapes and initialisers as
`flax.linen.Conv` / `flax.linen.ConvTranspose` (`kernel` (kh, kw, cin, cout) with
`lecun_normal`, `bias` (cout,) with zeros), so checkpoints are interchangeable, and they compute
the same function (tests/test_layers.py pins values and gradients). They support what the VAE
uses: 2-D, square kernels, equal strides (any k >= 1, s >= 1), VALID padding, no dilation, no
feature groups, no mask, `transpose_kernel=False`; anything else raises ValueError.

What differs is how the backward pass is written. XLA differentiates a strided convolution
into convolutions with *lhs dilation* (the input gradient of `Conv`, the forward and the input
gradient of `ConvTranspose`), which XLA:CPU runs as zero-stuffed convolutions: 4x the work in
a slow Eigen path (flax's 13->30 `ConvTranspose` alone costs ~1 s per batch of 100). Here every
pass is a custom VJP built only from operations XLA:CPU runs well: stride-s VALID convolutions,
stride-1 padded convolutions, depth-to-space reshapes and dots.

Notation: x (B, H, W, C) NHWC, kernel K (k, k, C, O), stride s, q = ceil(k / s).

`Conv`: y = conv2d(x, K, s), y (B, Ho, Wo, O), Ho = (H - k) // s + 1.
  forward   `lax.conv_general_dilated` with stride s, as flax does (Eigen on CPU).
  dx        the transpose of a strided conv is a transposed conv of dy with the flipped,
            in/out-swapped kernel: dx = conv_transpose2d(dy, flipT(K)), zero-padded to H x W
            (rows/columns past the last window get no gradient). Computed by the phase form below.
  dK        XLA's own weight gradient of the strided conv (an Eigen conv); it needs x in
            (C, H, W, B) layout, which costs one transpose per layer.

`ConvTranspose`: y = conv_transpose2d(x, K, s) == `lax.conv_transpose(x, K, (s, s), 'VALID')`,
  y (B, (H-1)s + max(k, s), ..., O), i.e. y[s i + u] += x[i] K[k-1-u] (the kernel is flipped,
  `transpose_kernel=False`).
  forward   phase decomposition: write the output index o = s m + p (phase p in [0, s)) and the
            flipped tap u = s j + p; then y[s m + p] = sum_{j<q} x[m - j] K[k-1-(s j + p)]. So
            all s*s phases are ONE stride-1 convolution of x padded by q-1 with a (q, q, C, s*s*O)
            kernel G (K zero-padded at the front to q*s taps, split into (q, s), the phase axis
            reversed), followed by depth-to-space (B, M, M, s, s, O) -> (B, s M, s M, O) and a crop,
            M = H + q - 1. Same sums as lax, no zero-stuffed input; the only extra multiplies are
            by the q-1 rows/columns of zero padding and, when k % s != 0, by zero taps.
            1x1 input (the first decoder layer): y[i, j] = x @ K[k-1-i, k-1-j], one dense matmul.
  dx        the transpose of a transposed conv is a strided conv: dx = conv2d(dy, flipT(K), s).
  dK        dK[k-1-u] = sum_i x[i] (x) dy[s i + u]: an im2col of dy built from plain slices of
            a free reshape (dy viewed as (B, H', s, W', s*O), so row s*i + u and the s pixels of
            column pair t are slices; stacks of <= 8 slices, nested, so XLA fuses them into one
            copy), contracted with x in one dot per chunk of images (lax.scan, ~8 MiB of columns
            per chunk so they stay in cache). XLA's own weight gradient here is a dilated
            Eigen conv that is 10-40x slower.

Why the formulations equal the reference: all of them are re-indexings of the same finite sums
(no approximation); float32 results agree with flax to ~1e-6 relative (summation order only).

Measured on this machine (2-core AMD EPYC Zen 5 VM, AVX-512, shared with other jobs, so noisy;
numbers are the min over shuffled, alternated repeats in one process), batch 100, float32,
fwd + bwd of one layer (grads w.r.t. kernel, bias and input; enc0 without input grad), in ms.
flax = flax.linen layers, torch = PyTorch 2.13 CPU on the same layer in NCHW:

    layer                                  flax     here    torch   here: fwd / dx / dK
    enc0 Conv   (100,64,64,3)  -> 31x31x32    5.8      4.5      3.4   native / -     / native
    enc1 Conv   (100,31,31,32) -> 14x14x64   41.0     13.3     16.4   native / phase / native
    enc2 Conv   (100,14,14,64) -> 6x6x128    12.0      7.2     10.3   native / phase / native
    enc3 Conv   (100,6,6,128)  -> 2x2x256    83.5      4.2      9.5   native / phase / native
    dec0 ConvT  (100,1,1,1024) -> 5x5x128    14.3      6.7     33.1   dense matmul (autodiff)
    dec1 ConvT  (100,5,5,128)  -> 13x13x64  141.9      7.8     14.0   phase  / native / im2col
    dec2 ConvT  (100,13,13,64) -> 30x30x32  481.7     27.1     26.3   phase  / native / im2col
    dec3 ConvT  (100,30,30,32) -> 64x64x3   125.7     17.2     55.8   phase  / native / im2col
    sum                                     905.9     88.0    168.8

Whole VAE train step (Adam 1e-4, batch 100, one process, alternated), images/s median / best:
flax.linen layers 98 / 101; these layers 686 / 720 (with the flag below; 401 / 429 without it);
these layers with the batch split over 2 host devices 498 / 528; PyTorch 703 / 719. The step
is ~145 ms of which the convolutions above are ~90: the rest is ReLU/bias/loss elementwise
fusions, Adam, and the (C, H, W, B) transposes XLA feeds its Eigen weight-gradient convs.

Formulations tried and dropped (slower here): im2col + one dot for every pass (XLA:CPU
concatenates along the minor axis at ~1 GB/s, and un-fused stacks of > 8 slices are slow),
space-to-depth + stride-1 convs for the strided convs, the 'scatter' transposed conv (x @ K then
overlap-add), phase-form kernel gradients, XLA's own dilated-conv gradients, YNNPACK
convolutions, two host devices, `--xla_cpu_multi_thread_eigen=false`, glibc malloc tuning.

XLA flags: by default XLA:CPU (jaxlib 0.10) hands strided VALID convolutions to YNNPACK, which
is 1.5-7x slower than Eigen for these shapes. Run with

    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution

(set before jax initialises its backend; `XLA_CPU_FLAGS` below), or pass `CPU_COMPILER_OPTIONS`
to the train step's `jax.jit(..., compiler_options=...)`. Keep one host device: splitting the
batch over two host devices (`--xla_force_host_platform_device_count=2` + batch sharding) was
~20% slower with these layers, and `--xla_cpu_multi_thread_eigen` made no measurable difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from flax.linen import initializers
from flax.linen.dtypes import promote_dtype
from flax.linen.module import Module, compact
from jax import lax

__all__ = ["CPU_COMPILER_OPTIONS", "XLA_CPU_FLAGS", "Conv", "ConvTranspose", "conv2d", "conv_compiler_options",
           "conv_transpose2d"]

#: XLA flag string for the process entry point: YNNPACK keeps dots and reductions, convolutions go
#: to Eigen.
XLA_CPU_FLAGS = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
#: The same choice per computation: `jax.jit(step, compiler_options=CPU_COMPILER_OPTIONS)`.
CPU_COMPILER_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE",
}


def conv_compiler_options() -> dict[str, str]:
    """Per-computation XLA options for jits that run V's convolutions: on CPU, keep YNNPACK for
    dots and reductions but leave convolutions to Eigen (1.5-7x faster for V's shapes)."""
    if jax.default_backend() != "cpu":
        return {}
    return dict(CPU_COMPILER_OPTIONS)


_DN = ("NHWC", "HWIO", "NHWC")
_WGRAD_CHUNK_ELEMS = 2 * 1024 * 1024  # im2col elements per scan step of the ConvTranspose kernel gradient
_MAX_STACK = 8  # XLA:CPU fuses a concatenate of at most this many operands


# ----------------------------------------------------------------------------------------------
# index helpers


def _fit(x: jax.Array, h: int, w: int) -> jax.Array:
    """Crop or zero-pad the spatial dims of NHWC `x` to (h, w) (at the end)."""
    x = x[:, :h, :w]
    ph, pw = h - x.shape[1], w - x.shape[2]
    if ph or pw:
        x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)))
    return x


def _flip_t(kernel: jax.Array) -> jax.Array:
    """(k, k, C, O) -> (k, k, O, C), spatially flipped: the kernel of the adjoint operator."""
    return kernel[::-1, ::-1].transpose(0, 1, 3, 2)


def _tconv_size(n: int, k: int, s: int) -> int:
    """Spatial output size of a VALID transposed conv (lax.conv_transpose semantics)."""
    return (n - 1) * s + max(k, s)


def _phase_kernel(kernel: jax.Array, s: int) -> jax.Array:
    """K (k, k, C, O) -> G (q, q, C, s*s*O) with G[ra, rb, :, (pa, pb)] = Kp[s ra + s-1-pa, s rb + s-1-pb],
    Kp = K zero-padded at the front to q*s taps per axis."""
    k, _, c, o = kernel.shape
    q = -(-k // s)
    kp = jnp.pad(kernel, ((q * s - k, 0), (q * s - k, 0), (0, 0), (0, 0)))
    g = kp.reshape(q, s, q, s, c, o)[:, ::-1, :, ::-1].transpose(0, 2, 4, 1, 3, 5)
    return g.reshape(q, q, c, s * s * o)


def _depth_to_space(y: jax.Array, s: int, out_h: int, out_w: int) -> jax.Array:
    """(B, M, N, s*s*O) with channels (pa, pb, o) -> (B, s M, s N, O), cropped to (out_h, out_w)."""
    b, m, n, f = y.shape
    o = f // (s * s)
    y = y.reshape(b, m, n, s, s, o).transpose(0, 1, 3, 2, 4, 5).reshape(b, m * s, n * s, o)
    return y[:, :out_h, :out_w]


def _strided_cols(x: jax.Array, k: int, s: int, ho: int, wo: int) -> jax.Array:
    """im2col of a stride-s, k x k window: (B, H, W, C) -> (B, ho, wo, k, q, s*C).

    Entry [b, i, j, kh, t, (sb, c)] = x[b, s i + kh, s (j + t) + sb, c] (zero past the input).
    x is viewed as (B, nh, s, nw, s*C), so every (kh, t) piece is a plain slice; the pieces are
    stacked in groups of q (then k groups) to stay inside XLA:CPU's fusible concatenate size."""
    b, _, _, c = x.shape
    q = -(-k // s)
    nh, nw = ho + (k - 1) // s, wo + q - 1
    xr = _fit(x, nh * s, nw * s).reshape(b, nh, s, nw, s * c)

    def piece(kh, t):
        return xr[:, kh // s:kh // s + ho, kh % s, t:t + wo]

    if k * q <= _MAX_STACK:
        cols = jnp.stack([piece(kh, t) for kh in range(k) for t in range(q)], axis=3)
        return cols.reshape(b, ho, wo, k, q, s * c)
    return jnp.stack([jnp.stack([piece(kh, t) for t in range(q)], axis=3) for kh in range(k)], axis=3)


def _chunk_size(b: int, most: int) -> int:
    """Images per chunk: the largest divisor of b that is <= most, unless that is below most / 2
    (then `most`, and the batch gets zero-padded)."""
    most = max(1, min(b, most))
    divisor = max(d for d in range(1, most + 1) if b % d == 0)
    return divisor if 2 * divisor >= most else most


def _sum_over_batch_chunks(fn, chunk: int, *arrays: jax.Array) -> jax.Array:
    """sum_i fn(*[a[i*chunk:(i+1)*chunk] for a in arrays]), via lax.scan; zero-pads the batch
    (fn must be linear in each batch element, so padded images add nothing)."""
    b = arrays[0].shape[0]
    if chunk >= b:
        return fn(*arrays)
    n = -(-b // chunk)
    if n * chunk != b:
        arrays = tuple(jnp.pad(a, ((0, n * chunk - b),) + ((0, 0),) * (a.ndim - 1)) for a in arrays)
    xs = tuple(a.reshape(n, chunk, *a.shape[1:]) for a in arrays)
    out = jax.eval_shape(fn, *(a[0] for a in xs))
    total, _ = lax.scan(lambda acc, a: (acc + fn(*a), None), jnp.zeros(out.shape, out.dtype), xs)
    return total


# ----------------------------------------------------------------------------------------------
# the three building blocks


def _native_conv(x, kernel, s, precision):
    """Stride-s VALID correlation (what flax.linen.Conv computes)."""
    return lax.conv_general_dilated(x, kernel, (s, s), "VALID", dimension_numbers=_DN, precision=precision)


def _phase_conv_transpose(x, kernel, s, precision):
    """lax.conv_transpose(x, kernel, (s, s), 'VALID') as one stride-1 conv + depth-to-space."""
    _, h, w, _ = x.shape
    k = kernel.shape[0]
    q = -(-k // s)
    y = lax.conv_general_dilated(x, _phase_kernel(kernel, s), (1, 1), [(q - 1, q - 1)] * 2,
                                 dimension_numbers=_DN, precision=precision)
    return _depth_to_space(y, s, _tconv_size(h, k, s), _tconv_size(w, k, s))


def _dense_conv_transpose(x, kernel, s, precision):
    """conv_transpose of a 1x1 input: y[b, i, j] = x[b] @ K[k-1-i, k-1-j]."""
    b, c = x.shape[0], x.shape[-1]
    k, o = kernel.shape[0], kernel.shape[-1]
    kf = kernel[::-1, ::-1].transpose(2, 0, 1, 3).reshape(c, k * k * o)
    y = jnp.dot(x.reshape(b, c), kf, precision=precision).reshape(b, k, k, o)
    return _fit(y, max(k, s), max(k, s))


def _conv_transpose_kernel_grad(x, dy, k, s, precision):
    """dK of y = conv_transpose2d(x, K, s): dK[k-1-u] = sum_i x[i] (x) dy[s i + u], chunked im2col."""
    b, h, w, c = x.shape
    o = dy.shape[-1]
    q = -(-k // s)
    per_image = h * w * k * q * s * o
    chunk = _chunk_size(b, _WGRAD_CHUNK_ELEMS // max(per_image, 1))

    def chunk_grad(xc, dyc):
        cols = _strided_cols(dyc, k, s, h, w).reshape(-1, k * q * s * o)
        return lax.dot_general(xc.reshape(-1, c), cols, (((0,), (0,)), ((), ())), precision=precision)

    m = _sum_over_batch_chunks(chunk_grad, chunk, x, dy)          # (C, k * q*s * O)
    kf = m.reshape(c, k, q * s, o)[:, :, :k].transpose(1, 2, 0, 3)  # Kf[u] = K[k-1-u]
    return kf[::-1, ::-1]


# ----------------------------------------------------------------------------------------------
# differentiable ops


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d(x: jax.Array, kernel: jax.Array, stride: int, precision: Any = None) -> jax.Array:
    """== lax.conv_general_dilated(x, kernel, (stride, stride), 'VALID') in NHWC/HWIO, with a
    backward pass written without lhs-dilated convolutions. x (B, H, W, C), kernel (k, k, C, O)."""
    return _native_conv(x, kernel, stride, precision)


def _conv2d_fwd(x, kernel, stride, precision):
    return _native_conv(x, kernel, stride, precision), (x, kernel)


def _conv2d_bwd(stride, precision, res, dy):
    x, kernel = res
    _, h, w, _ = x.shape
    dx = _fit(_phase_conv_transpose(dy, _flip_t(kernel), stride, precision), h, w)
    dk = jax.vjp(lambda kk: _native_conv(x, kk, stride, precision), kernel)[1](dy)[0]
    return dx, dk


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_transpose2d(x, kernel, stride, precision):
    return _phase_conv_transpose(x, kernel, stride, precision)


def _conv_transpose2d_fwd(x, kernel, stride, precision):
    return _phase_conv_transpose(x, kernel, stride, precision), (x, kernel)


def _conv_transpose2d_bwd(stride, precision, res, dy):
    x, kernel = res
    _, h, w, _ = x.shape
    dx = _native_conv(dy, _flip_t(kernel), stride, precision)[:, :h, :w]
    dk = _conv_transpose_kernel_grad(x, dy, kernel.shape[0], stride, precision)
    return dx, dk


_conv_transpose2d.defvjp(_conv_transpose2d_fwd, _conv_transpose2d_bwd)


def conv_transpose2d(x: jax.Array, kernel: jax.Array, stride: int, precision: Any = None) -> jax.Array:
    """== lax.conv_transpose(x, kernel, (stride, stride), 'VALID') in NHWC/HWIO
    (transpose_kernel=False). x (B, H, W, C), kernel (k, k, C, O) -> (B, (H-1)s + max(k, s), ..., O)."""
    if x.shape[1] == 1 and x.shape[2] == 1:
        return _dense_conv_transpose(x, kernel, stride, precision)
    return _conv_transpose2d(x, kernel, stride, precision)


# ----------------------------------------------------------------------------------------------
# flax modules


def _pair(value: Any, what: str, default: int = 1) -> int:
    """A square 2-D setting (int or 2-sequence of equal ints) -> int; ValueError otherwise."""
    if value is None:
        return default
    if isinstance(value, int):
        return value
    values = tuple(value)
    if len(values) != 2 or values[0] != values[1] or not all(isinstance(v, int) for v in values):
        raise ValueError(f"{what} must be an int or two equal ints (square, 2-D), got {value!r}")
    return values[0]


def _check_valid_padding(padding: Any) -> None:
    if isinstance(padding, str):
        if padding.upper() == "VALID":
            return
    elif padding == 0 or (isinstance(padding, Sequence) and all(
            p == 0 or tuple(p) == (0, 0) for p in padding)):
        return
    raise ValueError(f"only padding='VALID' is supported, got {padding!r}")


def _flatten_batch(inputs: jax.Array):
    """(*batch, H, W, C) -> ((B, H, W, C), restore)."""
    if inputs.ndim < 3:
        raise ValueError(f"expected (..., H, W, C) inputs, got shape {inputs.shape}")
    batch = inputs.shape[:-3]
    flat = inputs.reshape((-1,) + inputs.shape[-3:])
    return flat, lambda y: y.reshape(batch + y.shape[1:])


class Conv(Module):
    """flax.linen.Conv for 2-D, square, VALID, undilated, ungrouped convolutions, with a fast
    backward pass on XLA:CPU. Same fields, parameters (`kernel` (k, k, cin, cout), `bias`
    (cout,)) and initialisers as flax.linen.Conv. Input (..., H, W, C) -> (..., Ho, Wo, features)."""

    features: int
    kernel_size: int | Sequence[int]
    strides: None | int | Sequence[int] = 1
    padding: Any = "SAME"
    input_dilation: None | int | Sequence[int] = 1
    kernel_dilation: None | int | Sequence[int] = 1
    feature_group_count: int = 1
    use_bias: bool = True
    mask: Any = None
    dtype: Any = None
    param_dtype: Any = jnp.float32
    precision: Any = None
    kernel_init: Any = initializers.lecun_normal()
    bias_init: Any = initializers.zeros_init()

    @compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        if isinstance(self.kernel_size, int):
            raise ValueError("kernel_size must be a 2-tuple for a 2-D convolution "
                             f"(flax reads an int as 1-D), got {self.kernel_size!r}")
        k = _pair(self.kernel_size, "kernel_size")
        s = _pair(self.strides, "strides")
        _check_valid_padding(self.padding)
        if _pair(self.input_dilation, "input_dilation") != 1:
            raise ValueError("input_dilation is not supported")
        if _pair(self.kernel_dilation, "kernel_dilation") != 1:
            raise ValueError("kernel_dilation is not supported")
        if self.feature_group_count != 1:
            raise ValueError("feature_group_count != 1 is not supported")
        if self.mask is not None:
            raise ValueError("mask is not supported")
        x, restore = _flatten_batch(inputs)
        kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features), self.param_dtype)
        bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
                if self.use_bias else None)
        x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = conv2d(x, kernel, s, self.precision)
        if bias is not None:
            y = y + bias
        return restore(y)


class ConvTranspose(Module):
    """flax.linen.ConvTranspose for 2-D, square, VALID, undilated convolutions with
    transpose_kernel=False, fast on XLA:CPU. Same fields, parameters (`kernel`
    (k, k, cin, cout), `bias` (cout,)) and initialisers as flax.linen.ConvTranspose.
    Input (..., H, W, C) -> (..., (H-1)s + max(k, s), (W-1)s + max(k, s), features)."""

    features: int
    kernel_size: int | Sequence[int]
    strides: Sequence[int] | None = None
    padding: Any = "SAME"
    kernel_dilation: Sequence[int] | None = None
    use_bias: bool = True
    mask: Any = None
    dtype: Any = None
    param_dtype: Any = jnp.float32
    precision: Any = None
    kernel_init: Any = initializers.lecun_normal()
    bias_init: Any = initializers.zeros_init()
    transpose_kernel: bool = False
    preferred_element_type: Any = None

    @compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        if isinstance(self.kernel_size, int):
            raise ValueError("kernel_size must be a 2-tuple for a 2-D transposed convolution "
                             f"(flax reads an int as 1-D), got {self.kernel_size!r}")
        k = _pair(self.kernel_size, "kernel_size")
        s = _pair(self.strides, "strides")
        _check_valid_padding(self.padding)
        if _pair(self.kernel_dilation, "kernel_dilation") != 1:
            raise ValueError("kernel_dilation is not supported")
        if self.transpose_kernel:
            raise ValueError("transpose_kernel=True is not supported")
        if self.mask is not None:
            raise ValueError("mask is not supported")
        if self.preferred_element_type is not None:
            raise ValueError("preferred_element_type is not supported")
        x, restore = _flatten_batch(inputs)
        kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features), self.param_dtype)
        bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
                if self.use_bias else None)
        x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = conv_transpose2d(x, kernel, s, self.precision)
        if bias is not None:
            y = y + bias
        return restore(y)
