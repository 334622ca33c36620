import numpy as np
import pytest

from worldmodels.data.atomic import atomic_save_npz, remove_stale_temporaries
from worldmodels.data.episodes import (
    check_episode_file,
    episode_arrays,
    list_episodes,
    load_episode,
    save_episode,
    validate_episode,
)
from worldmodels.errors import DataError


def make_arrays(steps=5, size=8):
    rng = np.random.default_rng(0)
    return episode_arrays(
        obs=rng.integers(0, 255, (steps, size, size, 3)),
        action=rng.uniform(-1, 1, (steps, 3)),
        reward=rng.normal(size=steps),
        terminated=[False] * (steps - 1) + [True],
        truncated=[False] * steps,
        env_id="CarRacing-v3", seed=3, policy="random",
    )


def test_round_trip(tmp_path):
    arrays = make_arrays()
    save_episode(tmp_path / "episode_000000.npz", arrays)
    loaded = load_episode(tmp_path / "episode_000000.npz")
    for key, value in arrays.items():
        np.testing.assert_array_equal(loaded[key], value)
    assert loaded["obs"].dtype == np.uint8 and loaded["action"].dtype == np.float32
    assert str(loaded["env_id"]) == "CarRacing-v3" and int(loaded["seed"]) == 3


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("obs", np.zeros((5, 8, 8, 3), np.float32), "obs must be uint8"),
        ("obs", np.zeros((5, 8, 8), np.uint8), "obs must be uint8"),
        ("action", np.zeros((4, 3), np.float32), "action must be float32"),
        ("reward", np.array([0, 0, np.nan, 0, 0], np.float32), "NaN"),
        ("terminated", np.zeros(5, np.int32), "terminated must be bool"),
    ],
)
def test_validation_names_the_problem(key, value, message):
    arrays = make_arrays()
    arrays[key] = value
    with pytest.raises(DataError, match=message):
        validate_episode(arrays, "x.npz")


def test_truncated_and_garbage_files_are_refused(tmp_path):
    good = tmp_path / "episode_000000.npz"
    save_episode(good, make_arrays())
    check_episode_file(good)
    data = good.read_bytes()
    cut = tmp_path / "episode_000001.npz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="episode_000001.npz is corrupt or truncated"):
        check_episode_file(cut)
    with pytest.raises(DataError, match="episode_000001.npz is corrupt"):
        load_episode(cut)
    missing_keys = tmp_path / "episode_000002.npz"
    atomic_save_npz(missing_keys, obs=np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(DataError, match="lacks"):
        check_episode_file(missing_keys)


def test_temporaries_are_never_listed_and_are_cleaned(tmp_path):
    save_episode(tmp_path / "episode_000003.npz", make_arrays())
    (tmp_path / "episode_000004.npz.tmp-123").write_bytes(b"half")
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in list_episodes(tmp_path)] == ["episode_000003.npz"]
    assert remove_stale_temporaries(tmp_path) == 1
    assert not (tmp_path / "episode_000004.npz.tmp-123").exists()
