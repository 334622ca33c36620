"""One thin entry per stage: parse the config, call the library, write outputs."""

from worldmodels.runtime import reuse_freed_memory

reuse_freed_memory()  # before JAX allocates anything; see worldmodels/runtime.py
