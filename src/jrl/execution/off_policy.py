"""Off-policy replay plan (DQN): sample a fragment, add it to replay, learn at a fixed ratio.

Adding to the buffer and the learner steps run in one jitted call per fragment; the buffer is
donated so it is updated in place.
"""

from __future__ import annotations

import importlib
from typing import Any

import jax
import jax.numpy as jnp

from jrl.execution.learner import Learner, learner_devices
from jrl.registry import make_algorithm
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
        from jrl.registry import get_entry

        postprocess = importlib.import_module(get_entry(algorithm.name).module).postprocess
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
        # Several learner devices: add and sample in one call, the updates pmapped over devices
        # with the replay batch split along its sample axis.
        self._add_and_sample = jax.jit(self._add_and_sample_impl, donate_argnums=(1,))
        self.learner = Learner(
            lambda axis: self._scan_updates(
                make_algorithm(algorithm.name, config, spec, axis_name=axis).update),
            learner_devices(config.num_gpus), config.train_batch_size)
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

    def _sample_batches(self, state, replay):
        """``updates_per_fragment`` replay batches ``[K, N, ...]`` and the state's next key."""
        key, *sample_keys = jax.random.split(state.key, self.config.updates_per_fragment + 1)
        batches = jax.vmap(lambda k: replay_sample(replay, k, self.config.train_batch_size))(
            jnp.stack(sample_keys))
        return state._replace(key=key), batches

    @staticmethod
    def _scan_updates(update):
        def run(state, batches):
            state, metrics = jax.lax.scan(update, state, batches)
            return state, jax.tree.map(jnp.mean, metrics)
        return run

    def _learn_impl(self, state, replay, fragment):
        """Single device: add, sample and every update in one compiled call."""
        state, replay = self._add_impl(state, replay, fragment)
        state, batches = self._sample_batches(state, replay)
        state, metrics = self._scan_updates(self.algorithm.update)(state, batches)
        return state, replay, metrics

    def _add_and_sample_impl(self, state, replay, fragment):
        state, replay = self._add_impl(state, replay, fragment)
        state, batches = self._sample_batches(state, replay)
        return state, replay, batches

    def step(self, state: Any) -> tuple[Any, dict | None, int]:
        self.workers.set_policy(self._policy(state))
        batch = self.workers.sample()
        fragment = batch.to_transition()
        self._env_steps += batch.count
        if self._env_steps < self.config.learning_starts:
            state, self.replay = self._add(state, self.replay, fragment)
            return state, None, batch.count
        if self.learner.num_devices == 1:
            state, self.replay, metrics = self._learn(state, self.replay, fragment)
        else:
            state, self.replay, batches = self._add_and_sample(state, self.replay, fragment)
            state, metrics = self.learner.update(state, batches)
        return state, metrics, batch.count
