"""M: the MDN-RNN. An LSTM reads [z_t, a_t (, r_{t-1})] and a linear head gives, for every
latent dimension, a mixture of K Gaussians over z_{t+1}, plus optional reward and done logits.

The LSTM is written out (`lstm_cell`; `lstm_sequence` scans it with a hand-written backward
pass), so the same parameters serve the sequence model used in training and the single `step`
used by the dream and the controller. Training takes `MDNRNN.sequence_nll`, where the head and
its NLL are one op (`head_nll`); `__call__` + `losses.mdn_log_likelihood` is the plain path.
Shapes: B batch, T time, Z latent, A action, H hidden, K mixtures.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from worldmodels.losses import LOG_SQRT_2PI, mdn_log_likelihood


class LSTMState(NamedTuple):
    h: jax.Array  # (..., H)
    c: jax.Array  # (..., H)


class MDNOutput(NamedTuple):
    logit_pi: jax.Array  # (..., K, Z)
    mu: jax.Array  # (..., K, Z)
    log_sigma: jax.Array  # (..., K, Z), within [min_log_sigma, max_log_sigma]
    reward: jax.Array  # (...,) logit (binary) or value (regression); zeros without a head
    done: jax.Array  # (...,) logit; very negative without a head


def lstm_cell(w_x, w_h, b, state: LSTMState, x_proj: jax.Array) -> LSTMState:
    """One LSTM step given the input already projected (x @ W_x): gates i, f, g, o."""
    return lstm_update(x_proj + state.h @ w_h + b, state.c)


def lstm_update(gates: jax.Array, c: jax.Array) -> LSTMState:
    """The new (h, c) from the pre-activation gates (..., 4H), ordered i, f, g, o."""
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    return LSTMState(jax.nn.sigmoid(o) * jnp.tanh(c), c)


def _lstm_scan(w_x, w_h, b, x, h0, c0):
    """Plain LSTM over time: x (T, B, I) -> hs (T, B, H), final (h, c). The reference."""

    def body(carry, x_t):
        state = lstm_cell(w_x, w_h, b, LSTMState(*carry), x_t @ w_x)
        return (state.h, state.c), state.h

    (h, c), hs = jax.lax.scan(body, (h0, c0), x)
    return hs, (h, c)


@jax.custom_vjp
def lstm_sequence(w_x, w_h, b, x, h0, c0):
    """`_lstm_scan`, arranged for XLA:CPU's memory bandwidth rather than its FLOPs.

    Forward: each step is ONE dot [x_t, h] @ [W_x; W_h] (no (T, B, 4H) input projection is
    ever written to memory and read back); the residuals are [x_t, h_{t-1}], c_{t-1} and the
    gate activations. Backward: the reverse scan carries dh, dc and emits the gate gradients;
    the weight gradients are then ONE (T·B, I+H)ᵀ(T·B, 4H) matmul for W_x and W_h together,
    instead of T small ones accumulated inside the loop (what autodiff of the scan does).
    Same math; a test pins values and gradients to autodiff of `_lstm_scan`."""
    return _lstm_scan(w_x, w_h, b, x, h0, c0)


def _lstm_sequence_fwd(w_x, w_h, b, x, h0, c0):
    w = jnp.concatenate([w_x, w_h], axis=0)  # (I+H, 4H)

    def body(carry, x_t):
        h, c = carry
        xh = jnp.concatenate([x_t, h], axis=-1)
        gates = xh @ w + b
        i, f, g, o = jnp.split(gates, 4, axis=-1)
        i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
        c_new = f * c + i * g
        tanh_c = jnp.tanh(c_new)
        h_new = o * tanh_c
        return (h_new, c_new), (h_new, xh, c, jnp.concatenate([i, f, g, o], -1), tanh_c)

    (h, c), (hs, xh, c_prev, acts, tanh_c) = jax.lax.scan(body, (h0, c0), x)
    return (hs, (h, c)), (w_x, w_h, xh, c_prev, acts, tanh_c)


def _lstm_sequence_bwd(res, grads):
    w_x, w_h, xh, c_prev, acts, tanh_c = res
    d_hs, (d_h_last, d_c_last) = grads

    def body(carry, inputs):
        dh, dc = carry
        d_h_out, cp, act, tc = inputs
        i, f, g, o = jnp.split(act, 4, axis=-1)
        dh = dh + d_h_out
        dc = dc + dh * o * (1.0 - tc * tc)
        d_gates = jnp.concatenate([dc * g * i * (1.0 - i), dc * cp * f * (1.0 - f),
                                   dc * i * (1.0 - g * g), dh * tc * o * (1.0 - o)], -1)
        return (d_gates @ w_h.T, dc * f), d_gates

    (d_h0, d_c0), d_gates = jax.lax.scan(body, (d_h_last, d_c_last), (d_hs, c_prev, acts, tanh_c),
                                         reverse=True)
    flat = d_gates.reshape(-1, d_gates.shape[-1])
    d_w = xh.reshape(-1, xh.shape[-1]).T @ flat
    n_in = w_x.shape[0]
    d_x = d_gates @ w_x.T  # dropped by XLA when x needs no gradient (training data)
    return d_w[:n_in], d_w[n_in:], flat.sum(0), d_x, d_h0, d_c0


lstm_sequence.defvjp(_lstm_sequence_fwd, _lstm_sequence_bwd)


def _split_head(out, mixtures: int, latent: int, min_log_sigma: float, max_log_sigma: float):
    """Head output (M, 3·K·Z + E) -> logit_pi, mu, clipped log_sigma, raw log_sigma (M, K, Z)."""
    mdn = out[:, :3 * mixtures * latent].reshape(-1, 3, mixtures, latent)
    return mdn[:, 0], mdn[:, 1], jnp.clip(mdn[:, 2], min_log_sigma, max_log_sigma), mdn[:, 2]


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7, 8))
def head_nll(kernel, bias, h, target, weight, mixtures, latent, min_log_sigma, max_log_sigma):
    """The mixture head and its negative log-likelihood as one op, for training.

    h (M, H), target (M, Z), weight (M,) -> (sum_m weight_m · mean_z -log p(target | head(h_m)),
    the head's extra columns (M, E): reward / done logits). Same value as `MDNRNN.mdn` followed
    by `mdn_log_likelihood`; the backward pass writes the gradient of the whole (M, 3·K·Z + E)
    head output in one elementwise pass from the analytic MDN gradients (posterior
    responsibilities), where autodiff of the slices, clip, log-softmax and logsumexp
    materialises several copies of that wide tensor. A test pins both to the plain path."""
    return _head_nll_fwd(kernel, bias, h, target, weight, mixtures, latent, min_log_sigma,
                         max_log_sigma)[0]


def _head_nll_fwd(kernel, bias, h, target, weight, mixtures, latent, min_log_sigma, max_log_sigma):
    out = h @ kernel + bias
    logit_pi, mu, log_sigma, _ = _split_head(out, mixtures, latent, min_log_sigma, max_log_sigma)
    ll = mdn_log_likelihood(logit_pi, mu, log_sigma, target)  # (M, Z)
    nll = -jnp.sum(ll.mean(-1) * weight)
    return (nll, out[:, 3 * mixtures * latent:]), (kernel, h, out, target, weight)


def _head_nll_bwd(mixtures, latent, min_log_sigma, max_log_sigma, res, cotangents):
    kernel, h, out, target, weight = res
    d_nll, d_extra = cotangents
    logit_pi, mu, log_sigma, raw = _split_head(out, mixtures, latent, min_log_sigma, max_log_sigma)
    log_pi = jax.nn.log_softmax(logit_pi, axis=-2)
    inv_sigma = jnp.exp(-log_sigma)
    scaled = (target[:, None, :] - mu) * inv_sigma
    joint = log_pi - 0.5 * jnp.square(scaled) - log_sigma - LOG_SQRT_2PI
    ll = jax.nn.logsumexp(joint, axis=-2, keepdims=True)
    posterior = jnp.exp(joint - ll)  # responsibility of component k for target, (M, K, Z)
    d_ll = (-d_nll / latent) * weight[:, None, None]
    d_logit_pi = d_ll * (posterior - jnp.exp(log_pi))
    d_mu = d_ll * posterior * scaled * inv_sigma
    in_range = (raw >= min_log_sigma) & (raw <= max_log_sigma)
    d_log_sigma = jnp.where(in_range, d_ll * posterior * (jnp.square(scaled) - 1.0), 0.0)
    d_out = jnp.concatenate([jnp.stack([d_logit_pi, d_mu, d_log_sigma], 1).reshape(out.shape[0], -1),
                             d_extra], axis=-1)
    return h.T @ d_out, d_out.sum(0), d_out @ kernel.T, -d_mu.sum(1), jnp.zeros_like(weight)


head_nll.defvjp(_head_nll_fwd, _head_nll_bwd)


class MDNRNN(nn.Module):
    latent_dim: int
    action_dim: int
    hidden: int = 256
    mixtures: int = 5
    prev_reward_input: bool = False
    reward_head: str = "binary"
    done_head: bool = True
    min_log_sigma: float = -5.0
    max_log_sigma: float = 2.0
    predict_delta: bool = False
    """The mixture is over z_{t+1} - z_t (`mdnrnn.predict_delta`), not z_{t+1}."""

    @property
    def input_dim(self) -> int:
        return self.latent_dim + self.action_dim + int(self.prev_reward_input)

    def setup(self):
        H = self.hidden
        self.w_x = self.param("w_x", nn.initializers.lecun_normal(), (self.input_dim, 4 * H))
        self.w_h = self.param("w_h", nn.initializers.orthogonal(), (H, 4 * H))
        self.b = self.param("b", nn.initializers.zeros, (4 * H,))
        extra = int(self.reward_head != "none") + int(self.done_head)
        self.head = nn.Dense(3 * self.mixtures * self.latent_dim + extra, name="head")

    def initial_state(self, batch_shape: tuple[int, ...] = ()) -> LSTMState:
        zeros = jnp.zeros((*batch_shape, self.hidden), jnp.float32)
        return LSTMState(zeros, zeros)

    def inputs(self, z, action, prev_reward=None):
        """[z, a (, r_prev)] on the last axis."""
        parts = [z, action]
        if self.prev_reward_input:
            parts.append(prev_reward[..., None])
        return jnp.concatenate(parts, axis=-1)

    def z_target(self, z: jax.Array, z_next: jax.Array) -> jax.Array:
        """What the mixture models: z_next, or with `predict_delta` the change z_next - z."""
        return z_next - z if self.predict_delta else z_next

    def next_z(self, z: jax.Array, draw: jax.Array) -> jax.Array:
        """The next z from a draw (or mean) of the mixture: the inverse of `z_target`."""
        return z + draw if self.predict_delta else draw

    def mdn(self, h: jax.Array) -> MDNOutput:
        """The mixture head on hidden states h (..., H)."""
        K, Z = self.mixtures, self.latent_dim
        out = self.head(h)
        logit_pi, mu, log_sigma = (out[..., i * K * Z:(i + 1) * K * Z].reshape(*h.shape[:-1], K, Z)
                                   for i in range(3))
        log_sigma = jnp.clip(log_sigma, self.min_log_sigma, self.max_log_sigma)
        extra = out[..., 3 * K * Z:]
        zeros = jnp.zeros(h.shape[:-1], out.dtype)
        reward = extra[..., 0] if self.reward_head != "none" else zeros
        done = extra[..., -1] if self.done_head else zeros - 30.0
        return MDNOutput(logit_pi, mu, log_sigma, reward, done)

    def __call__(self, x: jax.Array, state: LSTMState | None = None, time_major: bool = False):
        """Sequence: x (B, T, I) -> (final state, MDNOutput with (B, T, ...), hiddens (B, T, H)).
        With `time_major`, x is (T, B, I) and every output is (T, B, ...): no transposes of the
        hidden states and their gradients (training uses this layout)."""
        if not time_major:
            x = jnp.swapaxes(x, 0, 1)
        if state is None:
            state = self.initial_state(x.shape[1:2])
        hs, (h, c) = lstm_sequence(self.w_x, self.w_h, self.b, x, state.h, state.c)
        if not time_major:
            hs = jnp.swapaxes(hs, 0, 1)
        return LSTMState(h, c), self.mdn(hs), hs

    def sequence_nll(self, x: jax.Array, target: jax.Array, weight: jax.Array,
                     state: LSTMState | None = None, return_state: bool = False):
        """The training path, time-major: x (T, B, I), target z_{t+1} (T, B, Z), weight (T, B) ->
        (sum of weight · per-step NLL, reward logits (T, B), done logits (T, B)[, final state]),
        through the fused `head_nll`. Equal to `__call__` + `mdn_log_likelihood` (a test pins it)."""
        if state is None:
            state = self.initial_state(x.shape[1:2])
        hs, (h, c) = lstm_sequence(self.w_x, self.w_h, self.b, x, state.h, state.c)
        T, B, H = hs.shape
        head = self.head.variables["params"]
        nll, extra = head_nll(head["kernel"], head["bias"], hs.reshape(T * B, H),
                              target.reshape(T * B, -1), weight.reshape(T * B), self.mixtures,
                              self.latent_dim, self.min_log_sigma, self.max_log_sigma)
        extra = extra.reshape(T, B, -1)
        zeros = jnp.zeros((T, B), extra.dtype)
        reward = extra[..., 0] if self.reward_head != "none" else zeros
        done = extra[..., -1] if self.done_head else zeros - 30.0
        if return_state:
            return nll, reward, done, LSTMState(h, c)
        return nll, reward, done

    def step(self, state: LSTMState, x: jax.Array):
        """One step: x (..., I) -> (new state, MDNOutput for the next z). One dot of [x, h]
        with [W_x; W_h], as in training (in the dream's scan the weight concatenation is
        loop-invariant): the dream ran 4% faster than with two dots (A/B, same machine)."""
        xh = jnp.concatenate([x, state.h], axis=-1)
        state = lstm_update(xh @ jnp.concatenate([self.w_x, self.w_h], axis=0) + self.b, state.c)
        return state, self.mdn(state.h)


def sample_mdn(key: jax.Array, out: MDNOutput, temperature: float | jax.Array = 1.0) -> jax.Array:
    """Sample z (..., Z): per dimension pick a component from softmax(logit_pi / tau), then
    draw from N(mu, sigma * sqrt(tau)).

    The component is drawn by inverting the mixture's CDF with one uniform per dimension,
    instead of `jax.random.categorical`'s K Gumbel draws: the same distribution, and on
    XLA:CPU about 5x cheaper, which matters in the dream where sampling rivals the LSTM. Both
    uniforms (component, and the Gaussian through the inverse error function, as
    `jax.random.normal` does it) come from one draw: no key split per step (dream +7%)."""
    probs = jax.nn.softmax(out.logit_pi / temperature, axis=-2)  # (..., K, Z)
    cdf = jnp.cumsum(probs, axis=-2)
    u = jax.random.uniform(key, (2, *cdf.shape[:-2], cdf.shape[-1]), cdf.dtype)  # 2 x (..., Z)
    K = probs.shape[-2]
    component = jnp.minimum(jnp.sum(cdf < u[0][..., None, :], axis=-2), K - 1)  # (..., Z)
    pick = lambda a: jnp.take_along_axis(a, component[..., None, :], axis=-2)[..., 0, :]
    mu, log_sigma = pick(out.mu), pick(out.log_sigma)
    lowest = jnp.nextafter(jnp.asarray(-1.0, u.dtype), jnp.asarray(0.0, u.dtype))  # erf_inv(-1) = -inf
    eps = jnp.sqrt(2.0).astype(u.dtype) * jax.lax.erf_inv(jnp.maximum(2.0 * u[1] - 1.0, lowest))
    return mu + jnp.exp(log_sigma) * jnp.sqrt(temperature) * eps


def mixture_mean(out: MDNOutput) -> jax.Array:
    """E[z_next] under the mixture: sum_k pi_k mu_k, (..., Z)."""
    return jnp.sum(jax.nn.softmax(out.logit_pi, axis=-2) * out.mu, axis=-2)
