"""A user's own pure-JAX env (importable as ``line_jax_env:make``): walk right along a line."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jrl import JaxStep
from jrl.types import EnvSpec


class LineState(NamedTuple):
    position: jax.Array
    t: jax.Array


class LineEnv:
    """Positions ``0..length``; action 1 steps right, 0 left. Reaching the end pays 1 and
    terminates; after ``limit`` steps the episode is truncated."""

    def __init__(self, length: int = 4, limit: int = 12):
        self.length, self.limit = length, limit
        self.spec = EnvSpec(obs_shape=(length + 1,), action_kind="discrete", num_actions=2,
                            max_episode_steps=limit)

    def _obs(self, position):
        return jax.nn.one_hot(position, self.length + 1, dtype=jnp.float32)

    def reset(self, key):
        state = LineState(jnp.int32(0), jnp.int32(0))
        return self._obs(state.position), state

    def step(self, key, state, action):
        position = jnp.clip(state.position + 2 * action - 1, 0, self.length)
        t = state.t + 1
        terminated = position == self.length
        truncated = (t >= self.limit) & ~terminated
        final_obs = self._obs(position)
        done = terminated | truncated
        next_state = LineState(jnp.where(done, 0, position), jnp.where(done, 0, t))
        return JaxStep(self._obs(next_state.position), next_state,
                       terminated.astype(jnp.float32), terminated, truncated, final_obs)


def make(env_config):
    return LineEnv(**env_config)
