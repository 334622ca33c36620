"""The train state every optimised model shares: step, parameters, optimiser state.

Low in the package (models' own multi-optimiser train steps use it, as do the loops).
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any


def init_train_state(init_fn, tx: optax.GradientTransformation, key: jax.Array) -> TrainState:
    """Parameters from `init_fn(key)`, jitted (one compile instead of one per initializer)."""
    params = jax.jit(init_fn)(key)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=jax.jit(tx.init)(params))
