"""Observation filters as pure JAX functions over a ``FilterState`` pytree.

The running statistics are arrays, so they live in the algorithm's train state, go through
``jit``/``vmap`` and are saved with checkpoints. Statistics from several workers are combined with
``merge_filter_states`` (Chan et al.'s parallel algorithm), which gives the same result as
updating one state with all the data.

    filt = get_filter("MeanStdFilter")
    state = filt.init(obs_shape)
    state = filt.update(state, obs_batch)      # [N, *obs_shape]
    x = filt.apply(state, obs)                 # [..., *obs_shape] -> float32
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jrl.errors import ConfigError, EnvError


class FilterState(NamedTuple):
    """Running statistics of observations (Welford / Chan).

    Attributes:
      count: number of observations seen, float32 ``[]``.
      mean: running mean, float32 ``[*shape]``.
      m2: sum of squared deviations from the mean, float32 ``[*shape]``.
    """

    count: jax.Array
    mean: jax.Array
    m2: jax.Array

    @property
    def var(self) -> jax.Array:
        return variance(self)

    @property
    def std(self) -> jax.Array:
        return std(self)


def init_filter_state(shape: Sequence[int]) -> FilterState:
    """Empty statistics for observations of ``shape``."""
    shape = tuple(int(d) for d in shape)
    return FilterState(count=jnp.zeros((), jnp.float32), mean=jnp.zeros(shape, jnp.float32),
                       m2=jnp.zeros(shape, jnp.float32))


@jax.jit
def merge_filter_states(a: FilterState, b: FilterState) -> FilterState:
    """Statistics of the union of the data behind ``a`` and ``b`` (Chan's parallel combine)."""
    count = a.count + b.count
    safe = jnp.maximum(count, 1.0)
    delta = b.mean - a.mean
    mean = a.mean + delta * (b.count / safe)
    m2 = a.m2 + b.m2 + jnp.square(delta) * (a.count * b.count / safe)
    return FilterState(count=count.astype(jnp.float32), mean=mean.astype(jnp.float32),
                       m2=m2.astype(jnp.float32))


def update_filter_state(state: FilterState, obs_batch: jax.Array) -> FilterState:
    """``state`` updated with ``obs_batch`` of shape ``[N, *shape]`` (any leading dims work)."""
    shape = state.mean.shape
    obs_batch = jnp.asarray(obs_batch)
    lead = obs_batch.ndim - len(shape)
    if lead < 0 or obs_batch.shape[lead:] != shape:
        raise EnvError(
            f"observations of shape {obs_batch.shape} do not fit a filter for observations of "
            f"shape {shape}; expected [N, {', '.join(map(str, shape))}]")
    x = obs_batch.reshape((-1,) + shape)
    if x.shape[0] == 0:
        return state
    return _update(state, x)


@jax.jit
def _update(state: FilterState, x: jax.Array) -> FilterState:
    # Jitted so eager callers (rollout workers) compile once per shape, not once per op.
    x = x.astype(jnp.float32)
    batch_mean = jnp.mean(x, axis=0)
    batch = FilterState(count=jnp.asarray(x.shape[0], jnp.float32), mean=batch_mean,
                        m2=jnp.sum(jnp.square(x - batch_mean), axis=0))
    return merge_filter_states(state, batch)


def variance(state: FilterState) -> jax.Array:
    """Population variance ``[*shape]``; 1 until two observations were seen."""
    return jnp.where(state.count >= 2, state.m2 / jnp.maximum(state.count, 1.0), 1.0)


def std(state: FilterState) -> jax.Array:
    """Standard deviation ``[*shape]``; 1 until two observations were seen."""
    return jnp.sqrt(variance(state))


@dataclasses.dataclass(frozen=True)
class NoFilter:
    """Leaves observations as they are (cast to float32); keeps no statistics."""

    def init(self, shape: Sequence[int]) -> FilterState:
        return init_filter_state(shape)

    def update(self, state: FilterState, obs_batch: jax.Array) -> FilterState:
        del obs_batch
        return state

    def apply(self, state: FilterState, obs: jax.Array) -> jax.Array:
        del state
        return jnp.asarray(obs, jnp.float32)


@dataclasses.dataclass(frozen=True)
class MeanStdFilter:
    """Normalizes observations by their running mean and std, then clips.

    Attributes:
      clip: outputs are clipped to ``[-clip, clip]`` (``None``: no clipping).
      eps: added to the std so that constant features are not divided by zero.
    """

    clip: float | None = 10.0
    eps: float = 1e-8

    def init(self, shape: Sequence[int]) -> FilterState:
        return init_filter_state(shape)

    def update(self, state: FilterState, obs_batch: jax.Array) -> FilterState:
        return update_filter_state(state, obs_batch)

    def apply(self, state: FilterState, obs: jax.Array) -> jax.Array:
        """``[..., *shape]`` -> normalized float32 ``[..., *shape]``."""
        x = (jnp.asarray(obs, jnp.float32) - state.mean) / (std(state) + self.eps)
        if self.clip is not None:
            x = jnp.clip(x, -self.clip, self.clip)
        return x.astype(jnp.float32)


Filter = NoFilter | MeanStdFilter

_FILTERS = {"NoFilter": NoFilter, "MeanStdFilter": MeanStdFilter}


def get_filter(name: str) -> Filter:
    """The filter called ``name`` (the ``observation_filter`` config key)."""
    try:
        return _FILTERS[name]()
    except (KeyError, TypeError):
        valid = ", ".join(f"'{n}'" for n in _FILTERS)
        raise ConfigError(
            f"unknown observation_filter {name!r}; valid filters are {valid}") from None
