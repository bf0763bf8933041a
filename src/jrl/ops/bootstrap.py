"""Values of the next observations of a fragment, without a second pass over all of them.

In a fragment sampled with same-step autoreset, ``next_obs[t]`` is ``obs[t + 1]`` unless step
``t`` ended an episode, so ``V(next_obs[t]) = V(obs[t + 1])`` there. Only the last step and the
truncated steps need the network again (terminated steps bootstrap from nothing). When the env
truncates only at a known time limit ``L``, an env stream has at most ``ceil((T - 1) / L)``
truncations before its last step, so a static number of rows suffices.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp

Array = jax.Array


def next_values(values: Array, next_obs: Array, truncated: Array,
                value_fn: Callable[[Array], Array], time_limit: int | None) -> Array:
    """``V(next_obs)`` ``[T, B]`` where it matters for bootstrapping.

    Args:
      values: ``V(obs)``, ``[T, B]``.
      next_obs: the true next observations, ``[T, B, ...]`` (``obs[t + 1]`` unless step ``t``
        ended an episode).
      truncated: truncation flags, ``[T, B]``.
      value_fn: observations ``[N, ...]`` -> values ``[N]``.
      time_limit: the env's episode time limit when it truncates only there (``EnvSpec.
        max_episode_steps``); ``None`` evaluates ``value_fn`` on every next observation.

    Returns:
      ``[T, B]`` values; exact at every step that is not terminated (terminated steps hold the
      next episode's first value, which bootstrapping ignores).
    """
    chex.assert_rank([values, truncated], 2)
    T, B = values.shape
    if time_limit is None:
        return value_fn(next_obs.reshape((T * B, *next_obs.shape[2:]))).reshape(T, B)
    k = min(T - 1, math.ceil((T - 1) / max(1, time_limit)))
    columns = jnp.arange(B)
    if k > 0:
        # Rows of the (at most k) truncated steps before the last one; padding points at the
        # last step, whose value is written anyway.
        rows = jax.vmap(lambda flags: jnp.nonzero(flags, size=k, fill_value=T - 1)[0],
                        in_axes=1, out_axes=1)(truncated[:-1])  # [k, B]
        gathered = next_obs[rows, columns[None, :]].reshape((k * B, *next_obs.shape[2:]))
        evaluated = value_fn(jnp.concatenate([gathered, next_obs[-1]]))
        truncated_values, last_values = evaluated[: k * B].reshape(k, B), evaluated[k * B:]
    else:
        last_values = value_fn(next_obs[-1])
    result = jnp.concatenate([values[1:], last_values[None]])
    if k > 0:
        result = result.at[rows, columns[None, :]].set(truncated_values)
    return result
