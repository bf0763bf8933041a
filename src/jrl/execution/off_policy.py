"""Off-policy replay plan (DQN): sample a fragment, add it to replay, learn at a fixed ratio.

Adding to the buffer and the learner steps run in one jitted call per fragment; the buffer is
donated so it is updated in place.
"""

from __future__ import annotations

import importlib
from typing import Any

import jax
import jax.numpy as jnp

from jrl.rollout.filters import get_filter
from jrl.rollout.replay import replay_add, replay_init, replay_sample
from jrl.rollout.worker_set import WorkerSet
from jrl.types import Algorithm


class OffPolicyPlan:
    """Each ``step`` samples one fragment from every worker, then ``updates_per_fragment``
    learner updates once ``learning_starts`` env steps have been sampled."""

    def __init__(self, algorithm: Algorithm, workers: WorkerSet, config: Any, spec: Any):
        self.algorithm = algorithm
        self.workers = workers
        self.config = config
        postprocess = importlib.import_module(
            f"jrl.algorithms.{algorithm.name.lower()}").postprocess
        self._postprocess = lambda fragment: postprocess(config, fragment)
        T, B = config.rollout_fragment_length, workers.num_envs
        example_fragment = jax.tree.map(
            lambda x: jnp.zeros((T, B, *x.shape), x.dtype), self._example_step(spec))
        example_items = jax.eval_shape(self._postprocess, example_fragment)
        self.replay = replay_init(
            jax.tree.map(lambda s: jnp.zeros(s.shape[1:], s.dtype), example_items),
            config.buffer_size)
        self._policy = jax.jit(algorithm.policy)
        self._add = jax.jit(self._add_impl, donate_argnums=(1,))
        self._learn = jax.jit(self._learn_impl, donate_argnums=(1,))
        self._env_steps = 0
        self._obs_filter = get_filter(config.observation_filter)

    @staticmethod
    def _example_step(spec: Any):
        from jrl.types import Transition

        obs = jnp.zeros(spec.obs_shape, spec.obs_dtype)
        action = jnp.zeros(spec.action_shape, spec.action_dtype)
        f32, flag = jnp.zeros((), jnp.float32), jnp.zeros((), bool)
        return Transition(obs, action, f32, flag, flag, obs, f32)

    def _add_impl(self, state, replay, fragment):
        items = self._postprocess(fragment)
        n = fragment.reward.size
        # The learner only sees replay samples, so the filter statistics are updated here, once
        # per sampled step (as on-policy updates do with their batch).
        obs_filter = self._obs_filter.update(state.obs_filter, fragment.obs)
        return (state._replace(env_steps=state.env_steps + n, obs_filter=obs_filter),
                replay_add(replay, items))

    def _learn_impl(self, state, replay, fragment):
        state, replay = self._add_impl(state, replay, fragment)

        def one_update(state, _):
            key, sample_key = jax.random.split(state.key)
            batch = replay_sample(replay, sample_key, self.config.train_batch_size)
            return self.algorithm.update(state._replace(key=key), batch)

        state, metrics = jax.lax.scan(one_update, state, None,
                                      length=self.config.updates_per_fragment)
        return state, replay, jax.tree.map(jnp.mean, metrics)

    def step(self, state: Any) -> tuple[Any, dict | None, int]:
        self.workers.set_policy(self._policy(state))
        batch = self.workers.sample()
        fragment = batch.to_transition()
        self._env_steps += batch.count
        if self._env_steps < self.config.learning_starts:
            state, self.replay = self._add(state, self.replay, fragment)
            return state, None, batch.count
        state, self.replay, metrics = self._learn(state, self.replay, fragment)
        return state, metrics, batch.count
