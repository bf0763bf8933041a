"""JAX-native environments: a small protocol and the gymnax adapter.

A JAX env is pure: ``reset(key) -> (obs, state)`` and
``step(key, state, action) -> JaxStep``, both jittable and vmappable, with auto-reset: when an
episode ends, ``obs`` is the first observation of the next episode and ``final_obs`` the true
last one. ``terminated`` and ``truncated`` stay apart (a time limit is a truncation).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from jrl.errors import EnvError
from jrl.types import EnvSpec

GYMNAX_PREFIX = "gymnax:"


class JaxStep(NamedTuple):
    """One step of a JAX env (per env; ``vmap`` adds the batch axis)."""

    obs: jax.Array
    state: Any
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    final_obs: jax.Array


class JaxEnv(Protocol):
    """What the fully-jitted loop needs from an environment.

    Attributes:
      spec: the learner's ``EnvSpec`` (observation shape, action space).
    """

    spec: EnvSpec

    def reset(self, key: jax.Array) -> tuple[jax.Array, Any]: ...

    def step(self, key: jax.Array, state: Any, action: jax.Array) -> JaxStep: ...


class GymnaxEnv:
    """A gymnax environment (``gymnax.make(env_id)``) behind the ``JaxEnv`` protocol."""

    def __init__(self, env_id: str, **make_kwargs: Any):
        try:
            import gymnax
        except ImportError:
            raise EnvError("gymnax envs need gymnax: pip install gymnax six") from None
        if env_id not in gymnax.registered_envs:
            import difflib

            near = difflib.get_close_matches(env_id, gymnax.registered_envs, n=1)
            hint = f"; did you mean '{GYMNAX_PREFIX}{near[0]}'?" if near else ""
            raise EnvError(f"unknown gymnax env '{env_id}'{hint}")
        self.env_id = env_id
        self.env, self.params = gymnax.make(env_id, **make_kwargs)
        obs_space = self.env.observation_space(self.params)
        action_space = self.env.action_space(self.params)
        from gymnax.environments.environment import Environment

        # gymnax truncates at params.max_steps_in_episode unless an env overrides is_truncated.
        limit = getattr(self.params, "max_steps_in_episode", None)
        if type(self.env).is_truncated is not Environment.is_truncated or limit is None:
            limit = None
        else:
            limit = int(limit)
        if hasattr(action_space, "n"):
            self.spec = EnvSpec(obs_shape=tuple(obs_space.shape), action_kind="discrete",
                                num_actions=int(action_space.n), max_episode_steps=limit)
        else:
            low, high = jnp.broadcast_to(action_space.low, action_space.shape), \
                jnp.broadcast_to(action_space.high, action_space.shape)
            self.spec = EnvSpec(obs_shape=tuple(obs_space.shape), action_kind="continuous",
                                action_shape=tuple(action_space.shape),
                                action_low=tuple(float(x) for x in low.ravel()),
                                action_high=tuple(float(x) for x in high.ravel()),
                                max_episode_steps=limit)

    def reset(self, key: jax.Array) -> tuple[jax.Array, Any]:
        obs, state = self.env.reset(key, self.params)
        return obs.astype(jnp.float32), state

    def step(self, key: jax.Array, state: Any, action: jax.Array) -> JaxStep:
        if not self.spec.discrete:
            action = jnp.clip(action, jnp.asarray(self.spec.action_low).reshape(
                self.spec.action_shape), jnp.asarray(self.spec.action_high).reshape(
                self.spec.action_shape))
        obs, state, reward, terminated, truncated, info = self.env.step(
            key, state, action, self.params)
        truncated = jnp.asarray(truncated, bool)
        # gymnax counts the time limit as terminal too; only a real terminal state stops
        # bootstrapping.
        terminated = jnp.logical_and(jnp.asarray(terminated, bool), ~truncated)
        return JaxStep(obs.astype(jnp.float32), state, jnp.asarray(reward, jnp.float32),
                       terminated, truncated, info["final_observation"].astype(jnp.float32))


def is_jax_env_id(env_id: str | None) -> bool:
    return bool(env_id) and env_id.startswith(GYMNAX_PREFIX)


def make_jax_env(env_id: str) -> JaxEnv:
    """``gymnax:<id>`` -> ``GymnaxEnv(<id>)``."""
    if not is_jax_env_id(env_id):
        raise EnvError(f"'{env_id}' is not a JAX env id (use '{GYMNAX_PREFIX}CartPole-v1')")
    return GymnaxEnv(env_id[len(GYMNAX_PREFIX):])
