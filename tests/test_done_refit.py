"""`mdnrnn.done_refit_steps`: M's done column refit on frozen h."""

import json

import jax
import numpy as np

from worldmodels.checkpoint import read_checkpoint_meta
from worldmodels.config import get_config
from worldmodels.train.done_refit import episode_hiddens, fit_done_column, log_loss, refit_done_column
from worldmodels.train.mdnrnn import SeriesData, init_params, make_module

from .conftest import copy_run


def _series_with_deaths(episodes: int, seed: int) -> SeriesData:
    """Episodes of 20-40 steps ending in a death; z[0] rises towards the end, so the death can
    be read from h (an untrained M's done column knows nothing of it)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(20, 41, episodes)
    mu = [rng.normal(0, 0.3, (n, 4)).astype(np.float32) for n in lengths]
    for m in mu:
        m[-3:, 0] += np.array([1.0, 2.0, 3.0])
    ends = np.cumsum(lengths)
    starts = ends - lengths
    done = np.zeros(ends[-1], np.float32)
    done[ends - 1] = 1.0
    return SeriesData(mu=np.concatenate(mu), logvar=np.full((ends[-1], 4), -6.0, np.float32),
                      action=rng.uniform(-1, 1, (ends[-1], 3)).astype(np.float32),
                      reward=np.zeros(ends[-1], np.float32), done=done,
                      episode_start=np.repeat(starts, lengths), episode_end=np.repeat(ends - 1, lengths),
                      lengths=lengths)


def test_refit_changes_only_the_done_column_and_learns_the_deaths():
    cfg = get_config("tiny").mdnrnn
    module = make_module(cfg, latent_dim=4, action_dim=3)
    params = jax.device_get(init_params(module, jax.random.key(0)))
    train, heldout = _series_with_deaths(60, 0), _series_with_deaths(20, 1)
    new, report = refit_done_column(module, params, train, heldout, steps=3000, l2=1e-4)
    for name in params:
        if name != "head":
            np.testing.assert_array_equal(np.asarray(new[name]), np.asarray(params[name]))
    old_k, new_k = np.asarray(params["head"]["kernel"]), np.asarray(new["head"]["kernel"])
    np.testing.assert_array_equal(new_k[:, :-1], old_k[:, :-1])
    np.testing.assert_array_equal(np.asarray(new["head"]["bias"])[:-1], np.asarray(params["head"]["bias"])[:-1])
    assert not np.allclose(new_k[:, -1], old_k[:, -1])
    # scored on the held-out half it was not selected on
    assert report["after"]["log_loss"] < 0.5 * report["before"]["log_loss"]
    assert report["after"]["auc"] > 0.9 and report["kept_step"] > 0
    assert report["train_frames"] == int(train.lengths.sum())
    # the report's figures are those of the returned params
    odd = np.arange(1, 20, 2)
    h, logit, death = episode_hiddens(module, new, heldout, odd)
    np.testing.assert_allclose(log_loss(logit, death), report["after"]["log_loss"], rtol=1e-4)
    # frames come back in the order of the episodes asked for, whatever their lengths
    starts = heldout.episode_starts()
    np.testing.assert_array_equal(death, np.concatenate([heldout.done[starts[e]:starts[e] + heldout.lengths[e]]
                                                         for e in odd]) > 0.5)
    x = module.inputs(heldout.mu[None, starts[3]:starts[3] + heldout.lengths[3]],
                      heldout.action[None, starts[3]:starts[3] + heldout.lengths[3]])
    np.testing.assert_allclose(h[heldout.lengths[1]:heldout.lengths[1] + heldout.lengths[3]],
                               module.apply({"params": new}, x)[2][0], rtol=1e-5, atol=1e-6)


def test_fit_keeps_the_start_when_training_only_hurts():
    """Selection on held-out log loss: labels the features cannot explain (shuffled) give no
    step better than a good start, so the start is kept."""
    rng = np.random.default_rng(0)
    h = rng.normal(size=(4000, 8)).astype(np.float32)
    y = (h[:, 0] > 1.5).astype(np.float32)
    w0 = np.zeros(8, np.float32)
    w0[0] = 8.0
    w, b, at, loss = fit_done_column(h, rng.permutation(y), h, y, w0, -12.0, steps=300, l2=0.0,
                                     learning_rate=0.05)
    assert at == 0 and np.array_equal(w, w0) and b == -12.0
    np.testing.assert_allclose(loss, log_loss(h @ w0 - 12.0, y), rtol=1e-5)


def test_train_rnn_writes_the_refit_m_and_keeps_the_trained_one_in_the_checkpoint(tmp_path, tiny_world):
    """Through train_mdnrnn: params.msgpack has the refit column (its meta and summary.json say
    so), checkpoint.msgpack keeps M as trained, and a rerun with the refit off restores it."""
    from flax import serialization

    from worldmodels.train.mdnrnn import train_mdnrnn

    run = copy_run(tiny_world, tmp_path / "refit", parts=("series", "mdnrnn"))
    steps = read_checkpoint_meta(run / "mdnrnn" / "checkpoint.msgpack")["step"]

    def state(name):
        return serialization.msgpack_restore((run / "mdnrnn" / name).read_bytes())["state"]

    trained = state("params.msgpack")
    config = get_config("tiny", ["--mdnrnn.steps", str(steps), "--mdnrnn.done_refit_steps", "200"])
    summary = train_mdnrnn(config, run, progress=False)
    refit = state("params.msgpack")
    assert summary["done_refit"]["steps"] == 200
    assert read_checkpoint_meta(run / "mdnrnn" / "params.msgpack")["done_refit"]["kept_step"] == \
        summary["done_refit"]["kept_step"]
    assert json.loads((run / "mdnrnn" / "summary.json").read_text())["done_refit"] == summary["done_refit"]
    np.testing.assert_array_equal(refit["w_h"], trained["w_h"])
    np.testing.assert_array_equal(refit["head"]["kernel"][:, :-1], trained["head"]["kernel"][:, :-1])
    if summary["done_refit"]["kept_step"]:
        assert not np.array_equal(refit["head"]["kernel"][:, -1], trained["head"]["kernel"][:, -1])
    train_mdnrnn(get_config("tiny", ["--mdnrnn.steps", str(steps)]), run, progress=False)
    np.testing.assert_array_equal(state("params.msgpack")["head"]["kernel"], trained["head"]["kernel"])
