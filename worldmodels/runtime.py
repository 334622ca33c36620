"""Process-wide settings the stage entries apply before JAX starts, and the host-device mesh.

`reuse_freed_memory`: XLA:CPU allocates every large temporary of a jitted step afresh (M's
training step: the LSTM's (T, B, 4H) activations and gate gradients, 41 MB each at the
paper's sizes). glibc serves allocations that large with `mmap` and returns them with
`munmap` at the end of the step, so every step pays a page fault per 4 KiB page on first
touch: ~30 ms of a ~200 ms step here, measured in an XLA profile as "broadcasts" that only
zero-fill scan buffers. Keeping freed memory in the heap (no mmap, no trimming, one arena)
lets the next step reuse pages already mapped. The cost: the process keeps its peak heap
until it exits (train-vae's peak RSS on the bench's 1,000 episodes went 1,436 -> 1,719 MB
with it, for no measured speed gain, so only `make train-rnn` and `make bench` use it). It
only takes effect before JAX starts its threads; `WORLDMODELS_MALLOC=default` skips it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -2, -4, -8
_applied: bool | None = None


def reuse_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse; True where it applied (glibc only)."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("WORLDMODELS_MALLOC", "") == "default":
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl): leave the allocator alone
        return False
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 1 << 30), (_M_TOP_PAD, 64 << 20))
    _applied = all(mallopt(key, value) == 1 for key, value in settings)
    return _applied


def data_parallel(n_devices: int, batch_size: int):
    """(mesh, batch sharding, replicated sharding) over the first usable host devices: the
    most devices (at most `n_devices`, 0 = all) that divide the batch."""
    import jax
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = jax.devices()[: max(1, n_devices or len(jax.devices()))]
    while len(devices) > 1 and batch_size % len(devices):
        devices = devices[:-1]
    mesh = Mesh(np.array(devices), ("data",))
    return mesh, NamedSharding(mesh, PartitionSpec("data")), NamedSharding(mesh, PartitionSpec())
