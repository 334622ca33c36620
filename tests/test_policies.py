import numpy as np
import pytest

from worldmodels.config import get_config
from worldmodels.envs.carracing import original_action
from worldmodels.errors import ConfigError
from worldmodels.rollout.collect import validate_rollout_config
from worldmodels.rollout.policies import PolicySpec, episode_policy, make_random_policy

LOW = np.array([-1.0, 0.0, 0.0], np.float32)
HIGH = np.array([1.0, 1.0, 1.0], np.float32)


@pytest.mark.parametrize("name", ["random", "brownian", "steady"])
def test_policies_stay_in_bounds_and_are_reproducible(name):
    def actions(seed):
        policy = make_random_policy(name, LOW, HIGH, action_repeat=5, brownian_dt=0.02,
                                    rng=np.random.default_rng(seed), original_action=original_action)
        return np.stack([policy.act() for _ in range(200)])

    a = actions(1)
    assert a.dtype == np.float32 and a.shape == (200, 3)
    assert (a >= LOW).all() and (a <= HIGH).all()
    np.testing.assert_array_equal(a, actions(1))
    assert not np.array_equal(a, actions(2))


def test_random_policy_holds_each_action_for_repeat_steps():
    policy = make_random_policy("random", LOW, HIGH, action_repeat=5, brownian_dt=0.02,
                                rng=np.random.default_rng(0))
    a = np.stack([policy.act() for _ in range(20)])
    for block in a.reshape(4, 5, 3):
        assert (block == block[0]).all()
    assert len({tuple(b[0]) for b in a.reshape(4, 5, 3)}) == 4


def test_brownian_policy_moves_in_small_steps():
    policy = make_random_policy("brownian", LOW, HIGH, action_repeat=5, brownian_dt=0.02,
                                rng=np.random.default_rng(0))
    a = np.stack([policy.act() for _ in range(500)])
    assert np.abs(np.diff(a, axis=0)).max() < 0.8  # sqrt(0.02) * ~5 sigma


def test_steady_policy_drives_nearly_straight_without_braking():
    # The original code's random-weight controller on CarRacing: gas ~ 0.5, steering and brake ~ 0.
    for seed in range(5):
        policy = make_random_policy("steady", LOW, HIGH, action_repeat=5, brownian_dt=0.02,
                                    rng=np.random.default_rng(seed), original_action=original_action)
        a = np.stack([policy.act() for _ in range(300)])
        assert np.abs(a[:, 0]).max() < 0.5 and np.abs(a[:, 1] - 0.5).max() < 0.25
        assert a[:, 2].mean() < 0.1 and (a[:, 2] == 0).mean() > 0.3  # brake clipped at 0


def test_steady_policy_needs_the_envs_original_action():
    with pytest.raises(ConfigError, match="original_action"):
        make_random_policy("steady", LOW, HIGH, action_repeat=5, brownian_dt=0.02, rng=np.random.default_rng(0))
    with pytest.raises(ConfigError, match="not defined for env 'doom'"):
        validate_rollout_config(get_config("doom-tiny", ["--rollouts.policy", "steady"]))
    validate_rollout_config(get_config("tiny", ["--rollouts.policy", "steady"]))


def test_unknown_policy():
    with pytest.raises(ConfigError, match="valid: random, brownian, steady"):
        make_random_policy("greedy", LOW, HIGH, action_repeat=5, brownian_dt=0.02,
                           rng=np.random.default_rng(0))


def test_brownian_walk_bounds_beyond_the_box_hold_the_action_at_its_limit():
    policy = make_random_policy("brownian", LOW, HIGH, action_repeat=5, brownian_dt=0.02,
                                rng=np.random.default_rng(0), walk_low=(-1.0, 0.0, -2.0), walk_high=(1.0, 0.3, 0.5))
    a = np.stack([policy.act() for _ in range(5000)])
    assert (a >= LOW).all() and (a <= HIGH).all()
    assert a[:, 1].max() <= 0.3 and a[:, 2].max() <= 0.5
    assert 0.3 < (a[:, 2] == 0).mean() < 0.99  # the brake walk spends most of its time below 0


def test_brownian_bounds_are_checked_before_any_work():
    for args, match in ((["--rollouts.brownian_low=-1,0"], "brownian_low has 2 values; env 'carracing' has 3"),
                        (["--rollouts.brownian_low=-1,0,0", "--rollouts.brownian_high=1,0,1"],
                         "brownian_low must be below brownian_high")):
        with pytest.raises(ConfigError, match=match):
            validate_rollout_config(get_config("tiny", args))


def test_mix_cycles_through_its_entries_by_episode_index():
    mix = ("2 steady", "1 brownian low=-1/0/-2 high=1/1/0.5", "1 random")
    names = [episode_policy("brownian", (), (), mix, i).label for i in range(8)]
    assert names == ["steady", "steady", "brownian low=-1/0/-2 high=1/1/0.5", "random"] * 2
    # Without a mix: rollouts.policy and its walk bounds.
    assert episode_policy("brownian", (-1.0, 0.0, -2.0), (), (), 5) == PolicySpec("brownian", (-1.0, 0.0, -2.0))
    assert get_config("tiny", ["--rollouts.mix", "2 steady,1 brownian high=1/1/0.5"]).rollouts.mix == (
        "2 steady", "1 brownian high=1/1/0.5")


@pytest.mark.parametrize("mix, match", [
    ("steady", "'COUNT POLICY"),
    ("0 steady", "'COUNT POLICY"),
    ("2 brownian low=-1/0/x", "cannot read 'low=-1/0/x'"),
    ("2 brownian width=1/1/1", "cannot read 'width=1/1/1'"),
    ("1 steady,2 greedy", "entry '2 greedy': unknown rollout policy 'greedy'"),
    ("1 brownian low=-1/0", "entry '1 brownian low=-1/0': low has 2 values; env 'carracing' has 3"),
    ("1 brownian low=-1/0/0 high=1/0/1", "below"),
    ("1 steady high=1/1/0.5", "entry '1 steady high=1/1/0.5': low/high bound a 'brownian' walk"),
])
def test_a_bad_mix_is_refused_before_any_work(mix, match):
    with pytest.raises(ConfigError, match=match):
        validate_rollout_config(get_config("tiny", ["--rollouts.mix", mix]))


def test_steady_in_a_doom_mix_is_refused():
    with pytest.raises(ConfigError, match="entry '1 steady': policy 'steady' is not defined for env 'doom'"):
        validate_rollout_config(get_config("doom-tiny", ["--rollouts.mix", "1 random,1 steady"]))
