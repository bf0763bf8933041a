"""A user's own env in brax's shape (importable as ``brax_like_env:make``): ``reset(rng) ->
State``, ``step(state, action) -> State``, ``action_size``; no brax needed.

An inverted point: ``x`` drifts away from 0 faster the farther it is; the force ``action`` in
[-1, 1] pushes it back. Each step alive pays 1; ``|x| > 1`` ends the episode (a termination).
With ``truncate_at`` the env itself ends episodes there and says so in ``info["truncation"]``,
as brax's ``EpisodeWrapper`` does.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class State(NamedTuple):
    pipeline_state: Any
    obs: jax.Array
    reward: jax.Array
    done: jax.Array
    metrics: dict
    info: dict


class InvertedPoint:
    action_size = 1
    observation_size = 2

    def __init__(self, truncate_at: int | None = None, dt: float = 0.1):
        self.truncate_at, self.dt = truncate_at, dt

    def _info(self, steps, truncation):
        return {} if self.truncate_at is None else {"steps": steps, "truncation": truncation}

    def reset(self, rng):
        q = jax.random.uniform(rng, (2,), minval=-0.05, maxval=0.05)
        zero = jnp.float32(0.0)
        return State(q, q, zero, zero, {}, self._info(zero, zero))

    def step(self, state, action):
        x, v = state.pipeline_state
        v = v + self.dt * (2.0 * x + action[0])
        x = x + self.dt * v
        q = jnp.stack([x, v])
        fell = (jnp.abs(x) > 1.0).astype(jnp.float32)
        info = {}
        done = fell
        if self.truncate_at is not None:
            steps = state.info["steps"] + 1
            cut = jnp.where(steps >= self.truncate_at, 1.0 - fell, 0.0)
            done = jnp.maximum(fell, cut)
            info = self._info(steps, cut)
        return State(q, q, jnp.float32(1.0), done, {}, info)


def make(env_config):
    return InvertedPoint(**env_config)
