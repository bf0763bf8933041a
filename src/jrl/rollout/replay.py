"""A jittable uniform replay buffer: a ring of fixed capacity over any pytree of arrays."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


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
