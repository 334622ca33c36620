"""Streaming shuffled frame batches from episode files, in bounded memory.

An epoch visits the episodes in a random order, grouped into *chunks* of about
`chunk_frames` frames (several whole episodes). Each chunk's frames are shuffled together
and cut into batches, so batches mix frames of different episodes, while memory holds at
most three chunks (one being batched, one ready, one loading) whatever the data's size.
A background thread loads and decompresses the next chunk while the current one trains.

The order of an epoch depends only on (seed, epoch), so a resumed run can skip the batches
it already trained on without loading them.
"""

from __future__ import annotations

import os
import queue
import threading
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from worldmodels.data.episodes import check_episode_file, holdout_split, list_episodes
from worldmodels.errors import DataError


def episode_length(path: str | os.PathLike) -> int:
    """Frames in an episode file, read from the obs array header (no decompression)."""
    try:
        with zipfile.ZipFile(path) as archive, archive.open("obs.npy") as member:
            version = np.lib.format.read_magic(member)
            reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                      else np.lib.format.read_array_header_2_0)
            shape, _, dtype = reader(member)
    except Exception as exc:
        raise DataError(f"episode file {path} is unreadable ({type(exc).__name__}: {exc}); "
                        "delete it and rerun `make rollouts`") from None
    return int(shape[0]) if shape else 0


def load_frames(path: str | os.PathLike, frame_size: int) -> np.ndarray:
    """The obs array of an episode, checked: uint8 (T, frame_size, frame_size, 3)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            obs = data["obs"]
    except Exception as exc:
        raise DataError(f"episode file {path} is corrupt ({type(exc).__name__}: {exc}); "
                        "delete it and rerun `make rollouts`") from None
    expected = (frame_size, frame_size, 3)
    if obs.dtype != np.uint8 or obs.ndim != 4 or obs.shape[1:] != expected:
        raise DataError(f"episode file {path} holds frames {obs.dtype} {obs.shape[1:]}, expected "
                        f"uint8 {expected}; recollect it with this config's `make rollouts`")
    return obs


def split_episodes(folder: str | os.PathLike, holdout_fraction: float) -> tuple[list[Path], list[Path]]:
    """(train, held-out) episode paths; the held-out ones are the last by index."""
    paths = list_episodes(folder)
    if not paths:
        raise DataError(f"no episodes in {folder}; run `make rollouts` first")
    for path in paths:
        check_episode_file(path)
    return holdout_split(paths, holdout_fraction)


class FrameStream:
    """Shuffled (B, S, S, 3) uint8 batches over episode files, prefetched in a thread."""

    def __init__(self, paths: Sequence[Path], batch_size: int, chunk_frames: int, frame_size: int,
                 seed: int = 0):
        if not paths:
            raise DataError("no episodes to train on")
        self.paths = list(paths)
        self.lengths = np.array([episode_length(p) for p in self.paths])
        self.batch_size, self.chunk_frames = batch_size, max(chunk_frames, batch_size)
        self.frame_size, self.seed = frame_size, seed
        if self.lengths.sum() < batch_size:
            raise DataError(f"only {self.lengths.sum()} frames in {len(self.paths)} episodes, fewer "
                            f"than one batch of {batch_size}; collect more rollouts")

    def plan(self, epoch: int) -> list[list[int]]:
        """The chunks of an epoch: lists of episode indices, in a (seed, epoch) order."""
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.paths))
        chunks, current, frames = [], [], 0
        for i in order:
            current.append(int(i))
            frames += int(self.lengths[i])
            if frames >= self.chunk_frames:
                chunks.append(current)
                current, frames = [], 0
        if current:
            chunks.append(current)
        return chunks

    def chunk_batches(self, chunk: list[int]) -> int:
        return int(self.lengths[chunk].sum()) // self.batch_size

    def batches_per_epoch(self, epoch: int = 0) -> int:
        return sum(self.chunk_batches(c) for c in self.plan(epoch))

    def _load_chunk(self, chunk: list[int]) -> np.ndarray:
        total = int(self.lengths[chunk].sum())
        frames = np.empty((total, self.frame_size, self.frame_size, 3), np.uint8)
        offset = 0
        for i in chunk:
            obs = load_frames(self.paths[i], self.frame_size)
            if len(obs) != self.lengths[i]:
                raise DataError(f"episode file {self.paths[i]} changed while training; rerun")
            frames[offset:offset + len(obs)] = obs
            offset += len(obs)
        return frames

    def epoch(self, epoch: int, skip_batches: int = 0) -> Iterator[np.ndarray]:
        """Yield the batches of `epoch`, after skipping the first `skip_batches`."""
        work = []  # (chunk number, episode indices, batches to skip in it)
        for number, chunk in enumerate(self.plan(epoch)):
            n = self.chunk_batches(chunk)
            if skip_batches >= n:
                skip_batches -= n
                continue
            work.append((number, chunk, skip_batches))
            skip_batches = 0
        ready: queue.Queue = queue.Queue(maxsize=1)
        stop = threading.Event()

        def producer():
            try:
                for number, chunk, skip in work:
                    if stop.is_set():
                        return
                    ready.put((number, self._load_chunk(chunk), skip))
                ready.put(None)
            except BaseException as exc:  # surfaced in the consumer
                ready.put(exc)

        thread = threading.Thread(target=producer, daemon=True, name="frame-stream")
        thread.start()
        try:
            while True:
                item = ready.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                number, frames, skip = item
                order = np.random.default_rng([self.seed, epoch, number]).permutation(len(frames))
                for b in range(skip, len(frames) // self.batch_size):
                    yield frames[np.sort(order[b * self.batch_size:(b + 1) * self.batch_size])]
                del frames
        finally:
            stop.set()
            while thread.is_alive():  # unblock a producer waiting on a full queue
                try:
                    ready.get(timeout=0.05)
                except queue.Empty:
                    pass
