"""The dream: M as a pure-JAX environment (gymnax style).

State and parameters are explicit pytrees; `reset(key, params)` and `step(key, state,
action, params)` are pure, so a population of controllers × rollouts is one `vmap` over a
`lax.scan`, compiled once. A step feeds [z, a (, r_prev)] to M's LSTM, samples the next z
from the mixture at temperature tau, and takes reward and done from M's heads:

- reward: with a binary head, the expected reward p·r_pos + (1 − p)·r_neg, where r_pos and
  r_neg are the mean positive and non-positive rewards of the training series; with a
  regression head, the predicted reward; without a head, `constant_reward` per step (Doom:
  reward = steps survived).
- done: P(done) > 0.5 (the paper) or, with `done_sample`, a Bernoulli(P(done)) draw at every
  step, P(done) first scaled by `done_scale` (capped at 1); or t reaching `max_steps`. A death
  (not the step cap) pays `death_reward` when it is set: the mean reward of the series'
  terminal steps (CarRacing: -100 for leaving the playfield). Without it a dream with deaths
  would reward dying early, since dying ends the -0.1 a step and costs nothing.

With `agent_rnn` set, the dream's world and the agent's M are two models: `rnn` (the world)
generates z, reward and done, while `agent_rnn` (the agent's own M) reads the dreamed z and
actions as it reads real frames in the game and gives C its h and c. A C trained in several
such worlds (`controller.dream_worlds`) cannot live on one M's blind spot.

With `ensemble` set, `rnn` holds several Ms' parameters stacked on a leading axis and every
episode dreams in all of them at once: each M's LSTM reads the same z and actions, the next z
comes from the mixture of one M drawn at random at every step, the reward is the members'
mean, and P(done) is their mean ('mean') or, pessimistically, their largest ('max'), so that
a state the Ms disagree about is as dangerous as the most worried of them finds it.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp

from worldmodels.models.mdnrnn import MDNRNN, LSTMState, sample_mdn


@flax.struct.dataclass
class DreamState:
    z: jax.Array  # (Z,)
    lstm: LSTMState  # h, c: (H,)
    prev_reward: jax.Array  # ()
    t: jax.Array  # () int32
    done: jax.Array  # () bool
    agent: LSTMState | None = None  # the agent's M when it is not the world (see agent_rnn)


@flax.struct.dataclass
class DreamParams:
    rnn: Any  # M's parameters
    initial_mu: jax.Array  # (N, Z): first frames of the recorded episodes
    initial_logvar: jax.Array  # (N, Z)
    temperature: jax.Array  # () tau
    reward_values: jax.Array  # (2,) [r_neg, r_pos] for a binary reward head
    constant_reward: jax.Array  # () reward per step when M has no reward head
    agent_rnn: Any = None  # the agent's M, when another M (rnn) dreams the world; None = rnn
    death_reward: jax.Array | None = None  # () reward of a dreamed death; None: the step's usual reward
    done_scale: jax.Array | float = 1.0  # () M's P(done) is multiplied by it (capped at 1): a harder dream
    max_steps: int = flax.struct.field(pytree_node=False, default=1000)
    done_sample: bool = flax.struct.field(pytree_node=False, default=False)
    ensemble: str = flax.struct.field(pytree_node=False, default="")
    """'' = one M (`rnn`); 'mean' / 'max' = `rnn` stacks several Ms, dreaming together."""


class DreamEnv:
    """Pure functions over (DreamState, DreamParams) for one trained M."""

    def __init__(self, module: MDNRNN):
        self.module = module

    def observation(self, state: DreamState) -> dict[str, jax.Array]:
        """What the controller sees: z, and its M's hidden and cell state."""
        lstm = state.lstm if state.agent is None else state.agent
        return {"z": state.z, "h": lstm.h, "c": lstm.c}

    def reset(self, key: jax.Array, params: DreamParams):
        k_pick, k_z = jax.random.split(key)
        i = jax.random.randint(k_pick, (), 0, params.initial_mu.shape[0])
        mu, logvar = params.initial_mu[i], params.initial_logvar[i]
        z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(k_z, mu.shape)
        members = () if not params.ensemble else (jax.tree.leaves(params.rnn)[0].shape[0],)
        state = DreamState(z=z, lstm=self.module.initial_state(members), prev_reward=jnp.zeros(()),
                           t=jnp.zeros((), jnp.int32), done=jnp.zeros((), bool),
                           agent=None if params.agent_rnn is None else self.module.initial_state())
        return self.observation(state), state

    def reward_and_p_done(self, out, params: DreamParams) -> tuple[jax.Array, jax.Array]:
        """The step's reward and P(done) (scaled, capped at 1) from M's heads."""
        if self.module.reward_head == "binary":
            p = jax.nn.sigmoid(out.reward)
            reward = p * params.reward_values[1] + (1.0 - p) * params.reward_values[0]
        elif self.module.reward_head == "regression":
            reward = out.reward
        else:
            reward = jnp.broadcast_to(params.constant_reward, out.done.shape)
        return reward, jnp.minimum(jax.nn.sigmoid(out.done) * params.done_scale, 1.0)

    def step(self, key: jax.Array, state: DreamState, action: jax.Array, params: DreamParams):
        """-> (obs, state, reward, done, info). After done the state stays frozen."""
        module = self.module
        x = module.inputs(state.z, action, state.prev_reward)
        if params.ensemble:  # every member reads the same input; one of them draws the next z
            lstm, outs = jax.vmap(lambda p, s: module.apply({"params": p}, s, x, method=MDNRNN.step)
                                  )(params.rnn, state.lstm)
            j = jax.random.randint(jax.random.fold_in(key, 2), (), 0, state.lstm.h.shape[0])
            out = jax.tree.map(lambda a: a[j], outs)
            rewards, p_dones = self.reward_and_p_done(outs, params)
            reward = rewards.mean()
            p_done = p_dones.max() if params.ensemble == "max" else p_dones.mean()
        else:
            lstm, out = module.apply({"params": params.rnn}, state.lstm, x, method=MDNRNN.step)
            reward, p_done = self.reward_and_p_done(out, params)
        agent = None
        if params.agent_rnn is not None:  # only the LSTM of the agent's M runs: its heads are unused
            agent, _ = module.apply({"params": params.agent_rnn}, state.agent, x, method=MDNRNN.step)
        z = module.next_z(state.z, sample_mdn(key, out, params.temperature))
        t = state.t + 1
        if params.done_sample:  # its own draw: z's sample stays the one of the threshold dream
            died = jax.random.uniform(jax.random.fold_in(key, 1)) < p_done
        else:
            died = p_done > 0.5
        if params.death_reward is not None:
            reward = jnp.where(died, params.death_reward, reward)
        done = died | (t >= params.max_steps)
        new = DreamState(z=z, lstm=lstm, prev_reward=reward, t=t, done=done, agent=agent)
        # Finished episodes do not move: the scan length is static, the episode is not.
        new = jax.tree.map(lambda a, b: jnp.where(state.done, a, b), state, new)
        reward = jnp.where(state.done, 0.0, reward)
        return self.observation(new), new, reward, new.done, {"p_done": p_done}


def dream_params(world, start, temperature: float, max_steps: int, done_sample: bool = False,
                 done_scale: float = 1.0, ensemble: str = "", agent_rnn=None) -> DreamParams:
    """The dream of `world` (a `WorldModel`) from `start` (a `DreamStart`: first frames and
    reward values) at temperature tau. An M trained on mu dreams from mu (z0 = mu exactly)."""
    logvar = start.initial_logvar
    if world.dreams_from_mu:
        logvar = jnp.full_like(jnp.asarray(logvar), -jnp.inf)
    return DreamParams(rnn=world.rnn_params, initial_mu=jnp.asarray(start.initial_mu),
                       initial_logvar=jnp.asarray(logvar), temperature=jnp.asarray(temperature, jnp.float32),
                       reward_values=jnp.asarray(start.reward_values), constant_reward=jnp.asarray(1.0),
                       max_steps=max_steps, done_sample=done_sample, ensemble=ensemble,
                       done_scale=jnp.asarray(done_scale, jnp.float32), agent_rnn=agent_rnn,
                       death_reward=None if start.death_reward is None else jnp.asarray(start.death_reward))


def dream_rollout(env: DreamEnv, params: DreamParams, policy, policy_params, key: jax.Array,
                  steps: int, chunk: int = 0) -> tuple[jax.Array, jax.Array]:
    """One dreamed episode of at most `steps` steps under `policy(policy_params, obs) -> a`.
    Returns (total reward, length). Vmap it over keys and policy parameters.

    With `chunk` dividing `steps`, the steps run in chunks of `chunk` under a while loop that
    stops once the episode is over; vmapped, it stops when every episode of the batch is
    (Doom: most dreamed deaths come long before the 2,100-step cap). Same keys per step, so
    the same episode as the plain scan."""
    k_reset, k_steps = jax.random.split(key)
    obs, state = env.reset(k_reset, params)

    def body(carry, k):
        obs, state, total = carry
        action = policy(policy_params, obs)
        obs, state, reward, _, _ = env.step(k, state, action, params)
        return (obs, state, total + reward), None

    keys = jax.random.split(k_steps, steps)
    if chunk and steps % chunk == 0 and chunk < steps:
        keys = keys.reshape(steps // chunk, chunk, *keys.shape[1:])

        def chunk_body(carry):
            i, inner = carry
            inner, _ = jax.lax.scan(body, inner, keys[i])
            return i + 1, inner

        def running(carry):
            i, (_, state, _) = carry
            return (i < keys.shape[0]) & ~state.done

        _, (_, state, total) = jax.lax.while_loop(running, chunk_body, (0, (obs, state, jnp.zeros(()))))
        return total, state.t
    (_, state, total), _ = jax.lax.scan(body, (obs, state, jnp.zeros(())), keys)
    return total, state.t


def dream_rollout_python(env: DreamEnv, params: DreamParams, policy, policy_params, key: jax.Array,
                         steps: int) -> tuple[jax.Array, jax.Array]:
    """The same episode as `dream_rollout`, stepped in a Python loop (the reference)."""
    k_reset, k_steps = jax.random.split(key)
    obs, state = env.reset(k_reset, params)
    total = jnp.zeros(())
    for k in jax.random.split(k_steps, steps):
        action = policy(policy_params, obs)
        obs, state, reward, _, _ = env.step(k, state, action, params)
        total = total + reward
    return total, state.t


def dream_with_actions(module: MDNRNN, rnn_params, z0: jax.Array, actions: jax.Array, key: jax.Array,
                       temperature: float, rewards: jax.Array | None = None) -> jax.Array:
    """Open-loop dream: start at z0 (Z,), apply recorded actions (T, A) and return the dreamed
    latents (T, Z), the first being z0. With M's previous-reward input, the recorded rewards
    are fed, so the dream follows the real episode's conditions as closely as M allows."""
    rewards = jnp.zeros(actions.shape[0]) if rewards is None else rewards
    prev_rewards = jnp.concatenate([jnp.zeros(1), rewards[:-1]])

    def body(carry, inputs):
        z, lstm = carry
        action, prev_reward, k = inputs
        lstm, out = module.apply({"params": rnn_params}, lstm, module.inputs(z, action, prev_reward),
                                 method=MDNRNN.step)
        z_next = module.next_z(z, sample_mdn(k, out, temperature))
        return (z_next, lstm), z

    keys = jax.random.split(key, actions.shape[0])
    _, zs = jax.lax.scan(body, (z0, module.initial_state()), (actions, prev_rewards, keys))
    return zs
