"""M: hand-worked mixture likelihood, stability, scan == step loop, sampling, the dream."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from worldmodels.config import get_config
from worldmodels.envs.dream import DreamEnv, DreamParams, dream_rollout, dream_rollout_python, dream_with_actions
from worldmodels.losses import binary_cross_entropy_with_logits, mdn_log_likelihood
from worldmodels.models.controller import carracing_squash, controller_features, controller_output
from worldmodels.models.mdnrnn import MDNOutput, mixture_mean, sample_mdn
from worldmodels.train.common import init_train_state
from worldmodels.train.mdnrnn import init_params, make_module, make_optimizer, make_train_step


def normal_pdf(x, mu, sigma):
    return math.exp(-0.5 * ((x - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))


def test_mixture_likelihood_hand_worked():
    # One dimension, two components: pi = (0.25, 0.75), mu = (0, 1), sigma = (1, 2), x = 0.5.
    logit_pi = jnp.log(jnp.array([[0.25], [0.75]]))  # (K=2, Z=1)
    mu = jnp.array([[0.0], [1.0]])
    log_sigma = jnp.log(jnp.array([[1.0], [2.0]]))
    expected = math.log(0.25 * normal_pdf(0.5, 0, 1) + 0.75 * normal_pdf(0.5, 1, 2))
    got = mdn_log_likelihood(logit_pi, mu, log_sigma, jnp.array([0.5]))
    np.testing.assert_allclose(got, [expected], rtol=1e-6)
    assert abs(expected - (-1.456642)) < 1e-5  # worked by hand: log(0.0880163 + 0.1450006)


def test_likelihood_and_bce_are_finite_on_extreme_inputs():
    logit_pi = jnp.array([[1e4], [-1e4]])
    mu = jnp.array([[0.0], [1e3]])
    log_sigma = jnp.array([[-5.0], [2.0]])  # the configured bounds
    for target in (0.0, 1e6, -1e6):
        value = mdn_log_likelihood(logit_pi, mu, log_sigma, jnp.array([target]))
        x = jnp.array([target])
        grad = jax.grad(lambda m, x=x: mdn_log_likelihood(logit_pi, m, log_sigma, x).sum())(mu)
        assert np.isfinite(value).all() and np.isfinite(grad).all()
    bce = binary_cross_entropy_with_logits(jnp.array([-1e4, 1e4, 0.0]), jnp.array([1.0, 0.0, 1.0]))
    np.testing.assert_allclose(bce, [1e4, 1e4, math.log(2)], rtol=1e-6)


def tiny_module(**overrides):
    cfg = get_config("tiny").mdnrnn
    cfg = type(cfg)(**{**cfg.__dict__, **overrides})
    return cfg, make_module(cfg, latent_dim=4, action_dim=3)


@pytest.mark.parametrize("prev_reward_input", [False, True])
def test_scanned_sequence_equals_step_by_step(prev_reward_input):
    _, module = tiny_module(prev_reward_input=prev_reward_input)
    params = init_params(module, jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (2, 7, module.input_dim))
    _, out_seq, hs = module.apply({"params": params}, x)
    state = module.initial_state((2,))
    for t in range(7):
        state, out = module.apply({"params": params}, state, x[:, t], method=type(module).step)
        np.testing.assert_allclose(out.mu, out_seq.mu[:, t], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out.done, out_seq.done[:, t], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state.h, hs[:, t], rtol=1e-5, atol=1e-6)
    assert out_seq.logit_pi.shape == (2, 7, 2, 4)
    assert (out_seq.log_sigma >= -5).all() and (out_seq.log_sigma <= 2).all()


def test_sampling_matches_the_mixture_and_temperature_sharpens():
    out = MDNOutput(logit_pi=jnp.log(jnp.array([[0.3], [0.7]])), mu=jnp.array([[-2.0], [3.0]]),
                    log_sigma=jnp.log(jnp.array([[0.5], [0.5]])), reward=jnp.zeros(()), done=jnp.zeros(()))
    keys = jax.random.split(jax.random.key(0), 20000)
    samples = jax.vmap(lambda k: sample_mdn(k, out, 1.0))(keys)
    np.testing.assert_allclose(samples.mean(), mixture_mean(out)[0], atol=0.05)  # 0.3*-2 + 0.7*3
    # variance 0.3 (0.25 + 4) + 0.7 (0.25 + 9) - 1.5^2 = 5.5; each component a N(mu, 0.5) by itself
    np.testing.assert_allclose(samples.var(), 5.5, rtol=0.03)
    low = samples[samples < 0.5]
    np.testing.assert_allclose(len(low) / len(samples), 0.3, atol=0.015)
    np.testing.assert_allclose([low.mean(), low.std()], [-2.0, 0.5], atol=0.02)
    np.testing.assert_allclose(np.mean(np.abs(low + 2.0) < 0.5), 0.6827, atol=0.02)  # Gaussian within 1 sigma
    cold = jax.vmap(lambda k: sample_mdn(k, out, 0.05))(keys)
    assert (jnp.abs(cold - 3.0) < 0.5).mean() > 0.99  # the likelier component, nearly its mean


def _smooth_series(n):
    t = np.arange(n, dtype=np.float32)
    return {  # a smooth latent trajectory M can learn to predict
        "mu": jnp.asarray(np.stack([np.sin(t / 5), np.cos(t / 5), np.sin(t / 9), np.cos(t / 3)], 1)),
        "logvar": jnp.full((n, 4), -6.0), "action": jnp.zeros((n, 3)),
        "reward": jnp.asarray((t % 7 == 0).astype(np.float32)), "done": jnp.zeros(n).at[-1].set(1.0),
        "episode_start": jnp.zeros(n, jnp.int32), "episode_end": jnp.full(n, n - 1, jnp.int32),
    }


def _train_on_smooth_series(cfg, module, steps: int, n: int = 120):
    """`steps` jitted train steps on `_smooth_series(n)`: (params before, params after, losses)."""
    data = _smooth_series(n)
    tx = make_optimizer(cfg)
    state = init_train_state(lambda k: init_params(module, k), tx, jax.random.key(0))
    before = jax.device_get(state.params)
    step = jax.jit(make_train_step(module, cfg, tx))
    losses = []
    for i in range(steps):
        starts = jnp.asarray(np.random.default_rng(i).integers(0, n - cfg.seq_len + 1, cfg.batch_size))
        state, metrics = step(state, data, starts, jax.random.key(i))
        losses.append(float(metrics["loss"]))
    return before, jax.device_get(state.params), losses


def test_head_only_keeps_the_lstm_and_so_h():
    """mdnrnn.head_only: the head learns (the loss falls), the LSTM's weights stay bit for bit,
    so the h that C reads from M is what it was."""
    from worldmodels.train.mdnrnn import LSTM_PARAMS

    before, after, losses = _train_on_smooth_series(*tiny_module(learning_rate=1e-2, head_only=True), steps=30)
    flat_before = dict(jax.tree_util.tree_flatten_with_path(before)[0])
    for path, value in jax.tree_util.tree_flatten_with_path(after)[0]:
        frozen = any(getattr(k, "key", None) in LSTM_PARAMS for k in path)
        same = np.array_equal(np.asarray(value), np.asarray(flat_before[path]))
        assert same == frozen, (path, frozen)
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5])


def test_train_step_lowers_the_loss():
    _, _, losses = _train_on_smooth_series(*tiny_module(learning_rate=1e-2), steps=40)
    assert np.isfinite(losses).all() and np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])


@pytest.mark.parametrize("carry_state", [False, True])
def test_sample_z_false_trains_on_mu(carry_state):
    """`mdnrnn.sample_z`: by default a train step sees z drawn from V's posterior (the key
    matters); with sample_z false it sees mu, the z the agent acts on (the key does not)."""
    from worldmodels.train.mdnrnn import gather_batch, make_carry_train_step, make_loss

    rng = np.random.default_rng(0)
    n = 60
    data = {"mu": rng.normal(size=(n, 4)), "logvar": np.zeros((n, 4)), "action": rng.uniform(-1, 1, (n, 3)),
            "reward": (rng.random(n) < 0.2) * 1.0, "done": (np.arange(n) == n - 1) * 1.0}
    data = {k: jnp.asarray(v, jnp.float32) for k, v in data.items()}
    data["episode_start"], data["episode_end"] = jnp.zeros(n, jnp.int32), jnp.full(n, n - 1, jnp.int32)
    starts = jnp.asarray([0, 7, 20])

    def losses(sample_z):
        cfg, module = tiny_module(sample_z=sample_z, carry_state=carry_state, batch_size=3, seq_len=10)
        tx = make_optimizer(cfg)
        state = init_train_state(lambda k: init_params(module, k), tx, jax.random.key(0))
        if carry_state:
            step = jax.jit(make_carry_train_step(module, cfg, tx))
            carry, fresh = module.initial_state((3,)), jnp.asarray([True] * 3)
            run = lambda key: step(state, data, starts, key, carry, fresh)[1]["loss"]  # noqa: E731
        else:
            step = jax.jit(make_train_step(module, cfg, tx))
            run = lambda key: step(state, data, starts, key)[1]["loss"]  # noqa: E731
        on_mu = make_loss(module, cfg)(state.params, gather_batch(data, starts, 10, None, time_major=True))[0]
        return float(run(jax.random.key(1))), float(run(jax.random.key(2))), float(on_mu)

    first, second, on_mu = losses(sample_z=True)
    assert abs(first - second) > 1e-3 and abs(first - on_mu) > 1e-3
    first, second, on_mu = losses(sample_z=False)
    assert first == second
    np.testing.assert_allclose(first, on_mu, rtol=1e-6)


def test_reward_auc_hand_worked():
    from worldmodels.train.mdnrnn import rank_auc

    # positives 0.35 and 0.8 against negatives 0.1 and 0.4: 3 of 4 pairs ranked right
    assert rank_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
    assert rank_auc(np.array([1.0, 1.0, 2.0]), np.array([1, 0, 0])) == 0.25  # a tie counts half
    assert rank_auc(np.array([1.0, 2.0]), np.array([0, 0])) is None


def make_dream(reward_head="binary"):
    cfg, module = tiny_module(reward_head=reward_head)
    rnn = init_params(module, jax.random.key(0))
    rnn = jax.tree.map(lambda a: a * 3.0, rnn)  # livelier dynamics, so done fires sometimes
    params = DreamParams(rnn=rnn, initial_mu=jax.random.normal(jax.random.key(1), (5, 4)),
                         initial_logvar=jnp.full((5, 4), -2.0), temperature=jnp.asarray(1.15),
                         reward_values=jnp.array([-0.1, 3.0]), constant_reward=jnp.asarray(1.0),
                         max_steps=40)
    return module, DreamEnv(module), params


def linear_policy(p, obs):
    return carracing_squash(controller_output(p, controller_features(obs, "zh")))


@pytest.mark.parametrize("reward_head", ["binary", "regression", "none"])
def test_scanned_dream_equals_python_loop(reward_head):
    module, env, params = make_dream(reward_head)
    policy_params = {"w": jax.random.normal(jax.random.key(2), (4 + module.hidden, 3)), "b": jnp.zeros(3)}
    for seed in range(3):
        key = jax.random.key(seed)
        total, length = jax.jit(dream_rollout, static_argnums=(0, 2, 5))(
            env, params, linear_policy, policy_params, key, 50)
        total_py, length_py = dream_rollout_python(env, params, linear_policy, policy_params, key, 50)
        np.testing.assert_allclose(total, total_py, rtol=1e-5, atol=1e-5)
        assert int(length) == int(length_py) and 1 <= int(length) <= 40


def test_dream_batches_with_vmap_and_freezes_finished_episodes():
    module, env, params = make_dream()
    policy_params = {"w": jnp.zeros((4 + module.hidden, 3)), "b": jnp.zeros(3)}
    keys = jax.random.split(jax.random.key(0), 16)
    totals, lengths = jax.jit(jax.vmap(lambda k: dream_rollout(env, params, linear_policy, policy_params,
                                                               k, 60)))(keys)
    assert totals.shape == (16,) and (lengths <= 40).all()  # capped by max_steps, not the scan
    assert np.isfinite(totals).all()


def test_a_second_m_as_the_agents_reads_the_dream_of_the_world_m():
    """agent_rnn = rnn is the plain dream; another agent M leaves the world's dynamics alone
    (a z-only policy gets the same episodes) but is what C's h comes from."""
    module, env, params = make_dream()
    other = jax.tree.map(lambda a: -a, params.rnn)
    zh = {"w": jax.random.normal(jax.random.key(2), (4 + module.hidden, 3)), "b": jnp.zeros(3)}
    z_only = {"w": zh["w"].at[4:].set(0.0), "b": zh["b"]}
    keys = jax.random.split(jax.random.key(3), 8)
    run = lambda p, ctrl: jax.jit(jax.vmap(lambda k: dream_rollout(env, p, linear_policy, ctrl, k, 50)))(keys)
    plain, same, swapped = params, params.replace(agent_rnn=params.rnn), params.replace(agent_rnn=other)
    for a, b in zip(run(plain, zh), run(same, zh), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    for a, b in zip(run(plain, z_only), run(swapped, z_only), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert not np.allclose(run(plain, zh)[0], run(swapped, zh)[0])
    # The observation's h is the agent M's LSTM on the dreamed z and actions.
    obs, state = env.reset(keys[0], swapped)
    action = jnp.array([0.3, 0.5, 0.0])
    obs, new, _, _, _ = env.step(keys[1], state, action, swapped)
    expected, _ = module.apply({"params": other}, module.initial_state(),
                               module.inputs(state.z, action, state.prev_reward), method=module.step)
    np.testing.assert_allclose(obs["h"], expected.h, rtol=1e-6)
    assert not np.allclose(obs["h"], new.lstm.h)


def test_predict_delta_models_the_change_of_z():
    """`mdnrnn.predict_delta`: the loss is the mixture's NLL of z_{t+1} - z_t (both loss paths),
    and the dream adds its draws to z, so a head that predicts "no change" keeps z where it
    is while the plain M's head sends it to the mixture's mean."""
    from worldmodels.train.mdnrnn import make_loss

    cfg, delta = tiny_module(predict_delta=True)
    _, plain = tiny_module()
    params = init_params(plain, jax.random.key(0))
    T, B = 6, 2
    rng = np.random.default_rng(0)
    batch = {"z": jnp.asarray(rng.normal(size=(T, B, 4)), jnp.float32), "action": jnp.zeros((T, B, 3)),
             "prev_reward": jnp.zeros((T, B)), "reward": jnp.zeros((T, B)), "done": jnp.zeros((T, B)),
             "z_mask": jnp.ones((T, B)), "mask": jnp.ones((T, B))}
    batch["z_next"] = batch["z"] + 0.01 * jnp.asarray(rng.normal(size=(T, B, 4)), jnp.float32)
    shifted = {**batch, "z_next": batch["z_next"] - batch["z"]}  # the same inputs, the change as target
    for fused in (True, False):
        d = make_loss(delta, cfg, fused)(params, batch)[1]["z_nll"]
        p = make_loss(plain, cfg, fused)(params, shifted)[1]["z_nll"]
        np.testing.assert_allclose(d, p, rtol=1e-5)
    # A head with mu = 0 and the smallest sigma: "no change" for delta, "z = 0" for the plain M.
    still = jax.tree.map(lambda a: a, params)
    KZ = plain.mixtures * plain.latent_dim  # the head's outputs: logit_pi, mu, log_sigma, extras
    still["head"] = {"kernel": jnp.zeros_like(params["head"]["kernel"]),
                     "bias": jnp.zeros_like(params["head"]["bias"]).at[2 * KZ:3 * KZ].set(-30.0)}
    z0 = jnp.array([1.0, -2.0, 0.5, 3.0])
    actions = jnp.zeros((20, 3))
    kept = dream_with_actions(delta, still, z0, actions, jax.random.key(1), 1.0)
    zeroed = dream_with_actions(plain, still, z0, actions, jax.random.key(1), 1.0)
    np.testing.assert_allclose(kept, jnp.broadcast_to(z0, kept.shape), atol=0.1)  # sigma e^-5 per step
    np.testing.assert_allclose(zeroed[1:], 0.0, atol=0.05)


def test_predict_delta_is_part_of_ms_checkpoint(tmp_path):
    """A delta M does not load as a plain one (one-line error), and M checkpoints written before
    the field existed load as plain Ms."""
    from worldmodels.checkpoint import save_checkpoint
    from worldmodels.errors import CheckpointError
    from worldmodels.train.mdnrnn import load_mdnrnn, mdnrnn_meta

    cfg, module = tiny_module(predict_delta=True)
    params = init_params(module, jax.random.key(0))
    for name in ("delta", "old"):
        (tmp_path / name).mkdir()
    save_checkpoint(tmp_path / "delta" / "params.msgpack", params, {"step": 1, **mdnrnn_meta(cfg, 4, 3)})
    plain_cfg = type(cfg)(**{**cfg.__dict__, "predict_delta": False})
    with pytest.raises(CheckpointError, match="mdnrnn.predict_delta=True"):
        load_mdnrnn(tmp_path / "delta", plain_cfg, 4, 3)
    assert load_mdnrnn(tmp_path / "delta", cfg, 4, 3)[0].predict_delta
    old = mdnrnn_meta(plain_cfg, 4, 3)
    del old["mdnrnn"]["predict_delta"]
    save_checkpoint(tmp_path / "old" / "params.msgpack", params, {"step": 1, **old})
    assert not load_mdnrnn(tmp_path / "old", plain_cfg, 4, 3)[0].predict_delta
    with pytest.raises(CheckpointError, match="predict_delta"):
        load_mdnrnn(tmp_path / "old", cfg, 4, 3)


def test_lstm_custom_backward_equals_autodiff_of_the_scan():
    from worldmodels.models.mdnrnn import _lstm_scan, lstm_sequence

    k = jax.random.split(jax.random.key(0), 8)
    T, B, D, H = 7, 3, 4, 5
    w_x = jax.random.normal(k[6], (D, 4 * H)) * 0.5
    w = jax.random.normal(k[0], (H, 4 * H)) * 0.5
    b = jax.random.normal(k[1], (4 * H,)) * 0.1
    x = jax.random.normal(k[2], (T, B, D))
    h0, c0 = jax.random.normal(k[3], (B, H)), jax.random.normal(k[4], (B, H))
    weights = jax.random.normal(k[5], (T, B, H))

    def loss(f):
        def value(*args):
            hs, (h, c) = f(*args)
            return jnp.sum(hs * weights) + jnp.sum(h ** 2) + jnp.sum(jnp.sin(c))
        return value

    args = (w_x, w, b, x, h0, c0)
    np.testing.assert_allclose(lstm_sequence(*args)[0], _lstm_scan(*args)[0], rtol=1e-6, atol=1e-6)
    fast = jax.jit(jax.grad(loss(lstm_sequence), argnums=tuple(range(6))))(*args)
    plain = jax.grad(loss(_lstm_scan), argnums=tuple(range(6)))(*args)
    for a, r in zip(fast, plain, strict=True):
        np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reward_head,done_head,prev_reward", [("binary", True, False),
                                                               ("regression", False, True),
                                                               ("none", True, False)])
def test_fused_head_loss_equals_the_plain_path(reward_head, done_head, prev_reward):
    """M's training loss through `sequence_nll` (head + NLL as one op with an analytic
    backward) has the value and gradients of `__call__` + `mdn_log_likelihood`, log_sigma
    clipping and the z mask included."""
    from worldmodels.train.mdnrnn import gather_batch, init_params, make_loss, make_module

    cfg = get_config("tiny", ["--mdnrnn.reward_head", reward_head, "--mdnrnn.done_head",
                              str(done_head), "--mdnrnn.prev_reward_input", str(prev_reward),
                              "--mdnrnn.min_log_sigma", "-0.5", "--mdnrnn.max_log_sigma", "0.5"]).mdnrnn
    module = make_module(cfg, latent_dim=6, action_dim=3)
    params = init_params(module, jax.random.key(0))
    params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.key(1), p.shape), params)
    rng = np.random.default_rng(0)
    n = 60
    data = {"mu": rng.normal(size=(n, 6)), "logvar": rng.normal(-2, 0.5, size=(n, 6)),
            "action": rng.uniform(-1, 1, size=(n, 3)), "reward": rng.normal(size=n),
            "done": (np.arange(n) % 30 == 29) * 1.0}
    data = {k: jnp.asarray(v, jnp.float32) for k, v in data.items()}
    data["episode_start"] = jnp.asarray(np.arange(n) // 30 * 30, jnp.int32)
    data["episode_end"] = jnp.asarray(np.arange(n) // 30 * 30 + 29, jnp.int32)
    batch = gather_batch(data, jnp.asarray([0, 5, 20, 33]), 12, jax.random.key(2), time_major=True)
    assert not batch["z_mask"].all()  # windows running past an episode's end are masked
    fused = jax.jit(jax.value_and_grad(make_loss(module, cfg), has_aux=True))(params, batch)
    plain = jax.jit(jax.value_and_grad(make_loss(module, cfg, fused=False), has_aux=True))(params, batch)
    for key, value in plain[0][1].items():
        np.testing.assert_allclose(fused[0][1][key], value, rtol=1e-5, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), fused[1], plain[1])


def test_window_past_the_episode_end_counts_only_its_real_steps():
    """A `start_windows` window longer than its episode: the steps after the episode's end are
    masked out of every loss term, so the loss (value and gradient) is that of the window cut
    at the end; in particular the one done = 1 is not counted again on the padding."""
    from worldmodels.train.mdnrnn import gather_batch, init_params, make_loss, make_module

    cfg = get_config("tiny", ["--mdnrnn.reward_head", "regression", "--mdnrnn.done_head", "true"]).mdnrnn
    module = make_module(cfg, latent_dim=6, action_dim=3)
    params = init_params(module, jax.random.key(0))
    rng = np.random.default_rng(0)
    n, length = 60, 30
    data = {"mu": rng.normal(size=(n, 6)), "logvar": rng.normal(-2, 0.5, size=(n, 6)),
            "action": rng.uniform(-1, 1, size=(n, 3)), "reward": rng.normal(size=n),
            "done": (np.arange(n) % length == length - 1) * 1.0}
    data = {k: jnp.asarray(v, jnp.float32) for k, v in data.items()}
    data["episode_start"] = jnp.asarray(np.arange(n) // length * length, jnp.int32)
    data["episode_end"] = jnp.asarray(np.arange(n) // length * length + length - 1, jnp.int32)
    loss = jax.jit(jax.value_and_grad(make_loss(module, cfg), has_aux=True))
    starts = jnp.asarray([0, length])
    long = gather_batch(data, starts, length + 15, None, time_major=True)
    exact = gather_batch(data, starts, length, None, time_major=True)
    assert long["mask"][:length].all() and not long["mask"][length:].any()
    (_, got), grads = loss(params, long)
    (_, want), want_grads = loss(params, exact)
    assert float(want["done_loss"]) > 0
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6, err_msg=key)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grads, want_grads)


def test_lanes_read_each_episode_whole_in_consecutive_windows():
    """`mdnrnn.carry_state`'s lanes: every visit to an episode starts at its first frame (a
    fresh window), moves on by seq_len, and ends only after its last frame was read."""
    from worldmodels.train.mdnrnn import Lanes

    lengths, seq_len = np.array([7, 3, 12, 4]), 4
    lanes = Lanes(lengths, batch_size=3, seq_len=seq_len, seed=0)
    episode_starts = np.cumsum(lengths) - lengths
    visits = {j: [] for j in range(3)}
    for _ in range(300):
        starts, fresh = lanes.windows(episode_starts)
        for j in range(3):
            e = int(np.searchsorted(episode_starts, starts[j], side="right") - 1)
            offset = int(starts[j] - episode_starts[e])
            if fresh[j]:
                visits[j].append((e, []))
            assert visits[j][-1][0] == e
            visits[j][-1][1].append(offset)
        lanes.advance()
    seen = set()
    for j in range(3):
        for e, offsets in visits[j][:-1]:  # the last visit may be unfinished
            assert offsets == list(range(0, lengths[e], seq_len)), (e, offsets)
            seen.add(e)
    assert seen == {0, 1, 2, 3}
    again = Lanes(lengths, batch_size=3, seq_len=seq_len, seed=0)  # a resume replays the same
    for _ in range(300):
        again.advance()
    np.testing.assert_array_equal(again.windows(episode_starts)[0], lanes.windows(episode_starts)[0])


def test_carried_state_continues_the_sequence():
    """Truncated backpropagation's forward pass: the loss of a window started from the state the
    previous window ended in equals that part of one long sequence; a fresh lane's step is
    exactly the plain window step."""
    from worldmodels.models.mdnrnn import LSTMState
    from worldmodels.train.mdnrnn import gather_batch, make_carry_train_step, make_loss

    cfg = get_config("tiny", ["--mdnrnn.seq_len", "10", "--mdnrnn.batch_size", "2"]).mdnrnn
    module = make_module(cfg, latent_dim=6, action_dim=3)
    params = init_params(module, jax.random.key(0))
    rng = np.random.default_rng(0)
    n = 40
    data = {"mu": rng.normal(size=(n, 6)), "logvar": np.full((n, 6), -80.0),  # z = mu exactly
            "action": rng.uniform(-1, 1, size=(n, 3)), "reward": rng.normal(size=n),
            "done": (np.arange(n) == n - 1) * 1.0}
    data = {k: jnp.asarray(v, jnp.float32) for k, v in data.items()}
    data["episode_start"], data["episode_end"] = jnp.zeros(n, jnp.int32), jnp.full(n, n - 1, jnp.int32)
    loss = jax.jit(make_loss(module, cfg))
    zero = module.initial_state((1,))
    _, (_, first_end) = loss(params, gather_batch(data, jnp.asarray([0]), 10, None, time_major=True), zero)
    _, (second, second_end) = loss(params, gather_batch(data, jnp.asarray([10]), 10, None, time_major=True),
                                   first_end)
    whole = gather_batch(data, jnp.asarray([0]), 20, None, time_major=True)
    final, out, _ = module.apply({"params": params}, module.inputs(whole["z"], whole["action"]), time_major=True)
    ll = mdn_log_likelihood(out.logit_pi, out.mu, out.log_sigma, whole["z_next"]).mean(-1)
    np.testing.assert_allclose(second["z_nll"], -ll[10:].mean(), rtol=1e-5)
    np.testing.assert_allclose(second_end.h, final.h, rtol=1e-5, atol=1e-6)

    tx = make_optimizer(cfg)
    state = init_train_state(lambda k: params, tx, jax.random.key(0))
    starts, key = jnp.asarray([0, 10]), jax.random.key(3)
    stale = LSTMState(jnp.ones((2, module.hidden)), jnp.ones((2, module.hidden)))
    carried, metrics, _ = jax.jit(make_carry_train_step(module, cfg, tx))(state, data, starts, key, stale,
                                                                         jnp.asarray([True, True]))
    plain, plain_metrics = jax.jit(make_train_step(module, cfg, tx))(state, data, starts, key)
    np.testing.assert_allclose(metrics["loss"], plain_metrics["loss"], rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), carried.params, plain.params)
    _, other, _ = jax.jit(make_carry_train_step(module, cfg, tx))(state, data, starts, key, stale,
                                                                  jnp.asarray([False, False]))
    assert abs(float(other["loss"]) - float(metrics["loss"])) > 1e-4  # the carry is used


def test_a_dreamed_death_pays_the_death_reward():
    """With death_reward set, the step where M's done fires pays it instead of the reward head's
    expectation (so dying early is no escape from -0.1 a step); the step cap is no death."""
    module, env, params = make_dream()
    policy_params = {"w": jax.random.normal(jax.random.key(2), (4 + module.hidden, 3)), "b": jnp.zeros(3)}
    keys = jax.random.split(jax.random.key(4), 32)
    run = lambda p: jax.jit(jax.vmap(lambda k: dream_rollout(env, p, linear_policy, policy_params, k, 60)))(keys)
    plain, plain_len = run(params)
    dead, dead_len = run(params.replace(death_reward=jnp.asarray(-1000.0)))
    np.testing.assert_array_equal(plain_len, dead_len)  # same episodes, only the pay differs
    died = np.asarray(plain_len) < 40
    assert died.any()
    diff = np.asarray(dead) - np.asarray(plain)
    assert (diff[died] <= -999.9 - 1e-3).all() and (diff[died] >= -1003.0).all()  # -1000 - p*3 - (1-p)*-0.1
    np.testing.assert_allclose(diff[~died], 0.0, atol=1e-4)


def test_dream_rewards_from_series(tmp_path):
    from worldmodels.train.es import dream_rewards

    def write(i, reward, done):
        t = len(reward)
        np.savez(tmp_path / f"episode_{i:06d}.npz", mu=np.zeros((t, 2), np.float32),
                 logvar=np.zeros((t, 2), np.float32), action=np.zeros((t, 3), np.float32),
                 reward=np.array(reward, np.float32), done=np.array(done), truncated=np.zeros(t, bool),
                 vision_id=np.array("v"))

    write(0, [-0.1, 3.0, -0.1, -100.1], [False, False, False, True])
    write(1, [3.4, -0.1, -0.1], [False, False, False])
    values, death = dream_rewards(tmp_path, "binary")
    np.testing.assert_allclose(values, [-0.1, 3.2], rtol=1e-6)  # the death is not a step's reward
    assert death == pytest.approx(-100.1)
    assert dream_rewards(tmp_path, "none")[1] is None  # Doom: frames survived, no death price
    (tmp_path / "episode_000000.npz").unlink()
    assert dream_rewards(tmp_path, "binary")[1] is None  # no terminal step recorded
