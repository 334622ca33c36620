"""World Models (Ha & Schmidhuber, 2018) in JAX.

Importing the package registers the gymnasium ids it provides (``FastCarRacing-v3``) and
does nothing else: no XLA flags, no global seeding, no heavy imports.
"""

from worldmodels.envs import register_envs

register_envs()

__all__ = ["register_envs"]
