"""A jittable uniform replay buffer: a ring of fixed capacity over any pytree of arrays."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jrl.ops.returns import n_step_returns
from jrl.types import ReplayBatch, Transition


class ReplayState(NamedTuple):
    """Storage ``[capacity, ...]`` per leaf, the next write position and the filled size."""

    data: Any
    position: jax.Array
    size: jax.Array


def replay_init(example: Any, capacity: int) -> ReplayState:
    """An empty buffer whose items look like ``example`` (one item, no batch dim)."""
    data = jax.tree.map(lambda x: jnp.zeros((capacity, *jnp.shape(x)), jnp.asarray(x).dtype),
                        example)
    return ReplayState(data, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def replay_capacity(state: ReplayState) -> int:
    return jax.tree.leaves(state.data)[0].shape[0]


def replay_add(state: ReplayState, items: Any) -> ReplayState:
    """Writes ``items`` (leading dim ``N``) at the ring position, overwriting the oldest."""
    capacity = replay_capacity(state)
    n = jax.tree.leaves(items)[0].shape[0]
    idx = (state.position + jnp.arange(n)) % capacity
    data = jax.tree.map(lambda buf, x: buf.at[idx].set(x.astype(buf.dtype)), state.data, items)
    return ReplayState(data, (state.position + n) % capacity,
                       jnp.minimum(state.size + n, capacity))


def replay_sample(state: ReplayState, key: jax.Array, batch_size: int) -> Any:
    """``batch_size`` items drawn uniformly with replacement from the filled part."""
    idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(state.size, 1))
    return jax.tree.map(lambda buf: buf[idx], state.data)


def n_step_items(fragment: Transition, gamma: float, n_step: int,
                 action_dtype: Any = None) -> ReplayBatch:
    """n-step replay items ``[T * B]`` from a time-major ``[T, B]`` fragment (pure, jittable).

    Each item bootstraps from the observation ``m <= n_step`` steps later (fewer at a fragment
    or episode end); ``discount`` is ``gamma**m``, or 0 when the episode terminated within
    those steps. ``weight`` is 1.
    """
    returns, discount, bootstrap_index = n_step_returns(
        fragment.reward, fragment.terminated, fragment.truncated, gamma, n_step)
    T, B = fragment.reward.shape
    next_obs = fragment.next_obs[bootstrap_index, jnp.arange(B)[None, :]]
    flat = lambda x: x.reshape((T * B, *x.shape[2:]))  # noqa: E731
    action = flat(fragment.action)
    if action_dtype is not None:
        action = action.astype(action_dtype)
    return ReplayBatch(obs=flat(fragment.obs), action=action, reward=flat(returns),
                       discount=flat(discount), next_obs=flat(next_obs),
                       weight=jnp.ones((T * B,), jnp.float32))
