"""The streaming frame loader: coverage, shuffling across episodes, resumable order."""

import numpy as np
import pytest

from worldmodels.data.episodes import episode_arrays, episode_name, save_episode
from worldmodels.data.frames import FrameStream, split_episodes
from worldmodels.errors import DataError


def write_episodes(folder, lengths, size=8):
    for e, steps in enumerate(lengths):
        obs = np.zeros((steps, size, size, 3), np.uint8)
        obs[:, 0, 0, 0] = e  # which episode
        obs[:, 0, 0, 1] = np.arange(steps)  # which frame
        save_episode(folder / episode_name(e), episode_arrays(
            obs, np.zeros((steps, 3)), np.zeros(steps), [False] * steps, [False] * steps,
            env_id="x", seed=e, policy="random"))


def ids(batch):
    return [(int(f[0, 0, 0]), int(f[0, 0, 1])) for f in batch]


def test_an_epoch_covers_the_frames_once_and_mixes_episodes(tmp_path):
    write_episodes(tmp_path, [30, 25, 40, 35, 20, 50])
    paths, _ = split_episodes(tmp_path, 0.0)
    stream = FrameStream(paths, batch_size=10, chunk_frames=60, frame_size=8, seed=3)
    batches = list(stream.epoch(0))
    assert len(batches) == stream.batches_per_epoch()
    seen = [i for b in batches for i in ids(b)]
    assert len(seen) == len(set(seen))  # no frame twice
    assert len(seen) >= 200 - 9 * len(stream.plan(0))  # at most a partial batch dropped per chunk
    assert max(len({e for e, _ in ids(b)}) for b in batches) > 1  # batches mix episodes
    assert all(b.shape == (10, 8, 8, 3) and b.dtype == np.uint8 for b in batches)


def test_order_is_reproducible_and_resumable(tmp_path):
    write_episodes(tmp_path, [30, 25, 40, 35, 20, 50])
    paths, _ = split_episodes(tmp_path, 0.0)
    stream = FrameStream(paths, batch_size=10, chunk_frames=60, frame_size=8, seed=3)
    full = [ids(b) for b in stream.epoch(1)]
    assert full == [ids(b) for b in stream.epoch(1)]
    assert full != [ids(b) for b in stream.epoch(2)]
    for skip in (0, 3, 7, len(full) - 1, len(full)):
        assert [ids(b) for b in stream.epoch(1, skip_batches=skip)] == full[skip:]


def test_holdout_split_and_errors(tmp_path):
    write_episodes(tmp_path, [10] * 8)
    train, held = split_episodes(tmp_path, 0.25)
    assert len(train) == 6 and len(held) == 2 and held[-1].name == "episode_000007.npz"
    with pytest.raises(DataError, match="no episodes"):
        split_episodes(tmp_path / "empty", 0.1)


def test_wrong_frame_shape_names_the_file(tmp_path):
    write_episodes(tmp_path, [20, 20], size=8)
    paths, _ = split_episodes(tmp_path, 0.0)
    stream = FrameStream(paths, batch_size=10, chunk_frames=10, frame_size=64)
    with pytest.raises(DataError, match=r"episode_00000\d\.npz holds frames uint8 \(8, 8, 3\)"):
        list(stream.epoch(0))


def test_too_few_frames_for_a_batch(tmp_path):
    write_episodes(tmp_path, [3])
    paths, _ = split_episodes(tmp_path, 0.0)
    with pytest.raises(DataError, match="fewer than one batch"):
        FrameStream(paths, batch_size=10, chunk_frames=10, frame_size=8)
