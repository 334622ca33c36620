"""`iterate.refit_c`: a controller carried across M's retraining by least squares on the new h."""

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from worldmodels.config import get_config
from worldmodels.errors import ConfigError
from worldmodels.models.controller import carracing_squash, controller_output, init_controller
from worldmodels.models.mdnrnn import MDNRNN
from worldmodels.train.c_refit import check_refit, controller_inputs, refit_controller
from worldmodels.train.mdnrnn import SeriesData, init_params, make_module


def _series(episodes: int, seed: int, latent: int = 4) -> SeriesData:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(30, 61, episodes)
    n = int(lengths.sum())
    ends = np.cumsum(lengths)
    starts = ends - lengths
    # a smooth walk, so h carries something C can steer on
    mu = np.concatenate([np.cumsum(rng.normal(0, 0.1, (k, latent)), 0) for k in lengths]).astype(np.float32)
    return SeriesData(mu=mu, logvar=np.full((n, latent), -6.0, np.float32),
                      action=rng.uniform(-1, 1, (n, 3)).astype(np.float32), reward=np.zeros(n, np.float32),
                      done=np.zeros(n, np.float32), episode_start=np.repeat(starts, lengths),
                      episode_end=np.repeat(ends - 1, lengths), lengths=lengths)


def _world(seed: int):
    module = make_module(get_config("tiny").mdnrnn, latent_dim=4, action_dim=3)
    return SimpleNamespace(module=module, rnn_params=jax.device_get(init_params(module, jax.random.key(seed))))


def test_controller_inputs_are_what_the_agent_feeds_c():
    """[z_t, h_t] with h_t the state before M consumes frame t: zero at each episode's start,
    then M.step's state, carried along the episode."""
    world, data = _world(0), _series(3, 0)
    x = controller_inputs(world.module, world.rnn_params, data)
    starts = data.episode_starts()
    for e in range(3):
        s, length = starts[e], data.lengths[e]
        state = world.module.initial_state()
        for t in range(length):
            np.testing.assert_allclose(x[s + t], np.concatenate([data.mu[s + t], np.asarray(state.h)]),
                                       rtol=1e-5, atol=1e-5)
            state, _ = world.module.apply({"params": world.rnn_params}, state,
                                          world.module.inputs(data.mu[s + t], data.action[s + t]),
                                          method=MDNRNN.step)


def test_refit_carries_c_to_another_m_and_is_exact_for_the_same_m():
    old, new = _world(0), _world(1)
    train, held = _series(40, 1), _series(10, 2)
    hidden = old.module.hidden
    c = init_controller(jax.random.key(3), 4 + hidden, 3)
    c = {"w": 0.5 * c["w"], "b": jnp.asarray([0.1, -0.5, -1.0])}
    x_old = controller_inputs(old.module, old.rnn_params, held)
    assert np.abs(np.asarray(controller_output(c, jnp.asarray(x_old)))).max() < 3  # inside the clip
    # Same M: the refit reproduces C's actions.
    _, same = refit_controller(c, old, old, train, held, carracing_squash, l2=1e-8)
    assert min(same["heldout_r2"]) > 0.999
    assert max(same["heldout_action_mae_refit"]) < 1e-3 and max(same["heldout_action_mae_unchanged"]) == 0
    # Another M: the old C unchanged drives otherwise; the refit drives much closer to the old C.
    params, report = refit_controller(c, old, new, train, held, carracing_squash)
    assert set(params) == {"w", "b"} and params["w"].shape == c["w"].shape
    refit_err = np.array(report["heldout_action_mae_refit"])
    stale_err = np.array(report["heldout_action_mae_unchanged"])
    assert np.all(refit_err[:2] < 0.5 * stale_err[:2]), report
    assert report["train_frames"] == int(train.lengths.sum()) and report["heldout_frames"] == int(held.lengths.sum())
    # The report's figures are those of the returned params.
    x = controller_inputs(new.module, new.rnn_params, held)
    y_old = np.asarray(controller_output(c, jnp.asarray(x_old)))
    act = lambda y: np.asarray(carracing_squash(jnp.asarray(y)))  # noqa: E731
    np.testing.assert_allclose(np.abs(act(np.asarray(controller_output(params, jnp.asarray(x)))) - act(y_old)).mean(0),
                               refit_err, rtol=1e-3, atol=1e-5)


def test_refit_refuses_what_it_cannot_carry():
    check_refit(get_config("carracing-iterate").controller)
    with pytest.raises(ConfigError, match="features zh.*--iterate.refit_c false"):
        check_refit(get_config("doom-tiny").controller)
    with pytest.raises(ConfigError, match="hidden 8"):
        check_refit(get_config("tiny", ["--controller.hidden", "8"]).controller)
