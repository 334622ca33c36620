"""World Models (Ha & Schmidhuber, 2018) in JAX.

>>> from worldmodels import load_agent, load_world_model
>>> agent = load_agent("agents/carracing")          # V, M, C; agent.act(obs), agent.reset()
>>> wm = load_world_model("agents/carracing")       # V and M: encode, decode, step, sample

Importing the package registers the gymnasium ids it provides (``FastCarRacing-v3``,
``worldmodels/TakeCover-v1``, ``worldmodels/Dream-v0``) and does nothing else: no XLA flags,
no global seeding, no heavy imports (the two loaders import JAX when called).
"""

from worldmodels.envs import register_envs

register_envs()


def load_agent(folder):
    """V, M and C from an agent or run dir: `worldmodels.agent.load_agent`."""
    from worldmodels.agent import load_agent as load

    return load(folder)


def load_world_model(folder):
    """V and M from an agent or run dir: `worldmodels.world_model.load_world_model`."""
    from worldmodels.world_model import load_world_model as load

    return load(folder)


__all__ = ["load_agent", "load_world_model", "register_envs"]
