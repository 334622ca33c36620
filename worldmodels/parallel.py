"""Ray start-up shared by every parallel stage.

`ray.init()` starts a local Ray on this machine; with RAY_ADDRESS set (or `address=`), the
same code joins an existing cluster. Workers get one thread each for XLA, OpenMP and BLAS,
so N workers on N cores do not oversubscribe the machine.
"""

from __future__ import annotations

import os

WORKER_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    "JAX_PLATFORMS": "cpu",
    "SDL_VIDEODRIVER": "dummy",
    "SDL_AUDIODRIVER": "dummy",
    "PYGAME_HIDE_SUPPORT_PROMPT": "1",
    "TF_CPP_MIN_LOG_LEVEL": "3",
}


def init_ray(num_cpus: int | None = None, address: str | None = None):
    """Start (or join) Ray once per process and return the `ray` module."""
    import ray

    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs = dict(
        include_dashboard=False,
        logging_level="ERROR",
        log_to_driver=True,
        configure_logging=True,
        runtime_env={"env_vars": WORKER_ENV},
    )
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, **kwargs)
    return ray


def cluster_cpus() -> int:
    """CPUs Ray can schedule on (all nodes)."""
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))
