"""Off-policy replay plan (DQN): sample a fragment, add it to replay, learn at a fixed ratio.

Adding to the buffer and the learner steps run in one jitted call per fragment; the buffer is
donated so it is updated in place.

With ``prioritized_replay`` the buffer is ``jrl.replay.prioritized``'s: each of the K scanned
updates samples by priority, sets ``ReplayBatch.weight`` to the importance weights, and writes
``|metrics["td_error"]| + eps`` back as the sampled items' priorities before the next update
samples. With several learner devices the K batches are drawn up front, the updates run
data-parallel, and the priorities are written afterwards from the td errors gathered from every
device. The ``[N]`` td errors never reach the logs: learner metrics stay scalars.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jrl.errors import ConfigError
from jrl.execution.learner import Learner, replay_item_example, scan_updates
from jrl.execution.offline import SAMPLER, make_input
from jrl.logger import PHASES
from jrl.ops.filters import get_filter
from jrl.replay.prioritized import (
    config_beta,
    prioritized_add,
    prioritized_init,
    prioritized_sample,
    prioritized_update,
    td_priorities,
)
from jrl.replay.uniform import replay_add, replay_init, replay_sample
from jrl.rollout.worker import SampleBatch
from jrl.rollout.worker_set import WorkerSet
from jrl.types import Algorithm, AlgorithmDef


class OffPolicyPlan:
    """Each ``step`` samples one fragment from every worker, then ``updates_per_fragment``
    learner updates once ``learning_starts`` env steps have been sampled."""

    def __init__(self, definition: AlgorithmDef, algorithm: Algorithm, workers: WorkerSet,
                 config: Any, spec: Any):
        self.algorithm = algorithm
        self.workers = workers
        self.config = config
        postprocess = definition.require("postprocess")
        self._postprocess = lambda fragment: postprocess(config, fragment)
        self.prioritized = bool(getattr(config, "prioritized_replay", False))
        init_buffer = prioritized_init if self.prioritized else replay_init
        self.replay = init_buffer(replay_item_example(definition, config, spec),
                                  config.buffer_size)
        self._policy = jax.jit(algorithm.policy)
        self._add = jax.jit(self._add_impl, donate_argnums=(1,))
        self._learn = jax.jit(self._learn_impl, donate_argnums=(1,))
        # Several learner devices: add and sample in one call, the updates pmapped over devices
        # with the replay batch split along its sample axis.
        self._add_and_sample = jax.jit(self._add_and_sample_impl, donate_argnums=(1,))
        self._write_priorities = jax.jit(self._write_priorities_impl, donate_argnums=(0,))
        self.learner = Learner.for_algorithm(definition, algorithm, config, spec,
                                             config.train_batch_size, wrap=scan_updates)
        self._env_steps = 0
        self._obs_filter = get_filter(config.observation_filter)
        # ``input``: fragments of the same [T, B] shape from recorded files (or a mix).
        self.input = self.estimation = None
        if getattr(config, "input", SAMPLER) != SAMPLER:
            self.input, self.estimation = make_input(
                definition, config, spec, config.rollout_fragment_length, workers.num_envs,
                self.workers.sample, policy_id=getattr(workers, "policy_id", None))

    def _add_impl(self, state, replay, fragment):
        items = self._postprocess(fragment)
        n = fragment.reward.size
        # The learner only sees replay samples, so the filter statistics are updated here, once
        # per sampled step (as on-policy updates do with their batch).
        obs_filter = self._obs_filter.update(state.obs_filter, fragment.obs)
        add = (lambda r, x: prioritized_add(r, x, alpha=self.config.prioritized_replay_alpha)
               ) if self.prioritized else replay_add
        return (state._replace(env_steps=state.env_steps + n, obs_filter=obs_filter),
                add(replay, items))

    def _sample_one(self, state, replay, key):
        """One replay batch ``[N, ...]`` (importance-weighted under prioritized replay) and the
        sampled indices (``None`` under uniform replay)."""
        n = self.config.train_batch_size
        if not self.prioritized:
            return replay_sample(replay, key, n), None
        batch, index, weight = prioritized_sample(replay, key, n,
                                                  config_beta(self.config, state.env_steps))
        return batch._replace(weight=weight), index

    def _sample_batches(self, state, replay):
        """``updates_per_fragment`` replay batches ``[K, N, ...]``, their indices ``[K, N]`` (or
        ``None``) and the state with its next key."""
        key, *sample_keys = jax.random.split(state.key, self.config.updates_per_fragment + 1)
        batches, index = jax.vmap(lambda k: self._sample_one(state, replay, k))(
            jnp.stack(sample_keys))
        return state._replace(key=key), batches, index

    def _write_priorities_impl(self, replay, index, td_error):
        """Writes the priorities of ``K`` batches ``[K, N]`` in update order."""
        cfg = self.config

        def write(replay, x):
            index, td = x
            return prioritized_update(replay, index, td_priorities(td, cfg.prioritized_replay_eps),
                                      cfg.prioritized_replay_alpha), None

        return jax.lax.scan(write, replay, (index, td_error))[0]

    def _prioritized_learn(self, state, replay):
        """K updates, each on a fresh prioritized sample that sees the previous update's
        priorities."""
        cfg = self.config
        update = self.algorithm.update

        def body(carry, key):
            state, replay = carry
            batch, index = self._sample_one(state, replay, key)
            state, metrics = update(state, batch)
            metrics = dict(metrics)
            td = _td_error(metrics, self.algorithm.name, cfg.train_batch_size)
            replay = prioritized_update(replay, index, td_priorities(td, cfg.prioritized_replay_eps),
                                        cfg.prioritized_replay_alpha)
            return (state, replay), metrics

        key, *keys = jax.random.split(state.key, cfg.updates_per_fragment + 1)
        (state, replay), metrics = jax.lax.scan(body, (state._replace(key=key), replay),
                                                jnp.stack(keys))
        return state, replay, jax.tree.map(jnp.mean, metrics)

    def _learn_impl(self, state, replay, fragment):
        """Single device: add, sample and every update in one compiled call."""
        state, replay = self._add_impl(state, replay, fragment)
        if self.prioritized:
            return self._prioritized_learn(state, replay)
        state, batches, _ = self._sample_batches(state, replay)
        state, metrics = scan_updates(self.algorithm.update)(state, batches)
        metrics.pop("td_error", None)
        return state, replay, metrics

    def _add_and_sample_impl(self, state, replay, fragment):
        """Several devices: add and draw the K batches ``[K, N, ...]`` (and their replay indices
        ``[K, N]`` under prioritized replay, else ``None``) in one call."""
        state, replay = self._add_impl(state, replay, fragment)
        state, batches, index = self._sample_batches(state, replay)
        return state, replay, batches, index

    def _next_batch(self, state: Any) -> SampleBatch:
        if self.input is None:
            return self.workers.sample()
        source, batch = self.input.next()
        if source == SAMPLER:
            return batch
        if self.estimation is not None:
            self.estimation.add(self._policy(state), batch)
        return SampleBatch(batch)

    def stats(self) -> dict[str, Any]:
        """Off-policy estimates of the iteration's file batches, if any."""
        return self.estimation.pop() if self.estimation is not None else {}

    @property
    def replay_buffer_size(self) -> int:
        """Items in the replay buffer now."""
        return int(self.replay.size)

    def get_state(self) -> dict[str, Any]:
        """The plan's counters (the replay buffer is saved by the caller when asked to)."""
        return {"env_steps": self._env_steps}

    def set_state(self, state: dict[str, Any]) -> None:
        self._env_steps = int(state.get("env_steps", self._env_steps))

    def step(self, state: Any) -> tuple[Any, dict | None, int]:
        self.workers.set_policy(self._policy(state))
        with PHASES.phase("train: sample (envs + acting)"):
            batch = self._next_batch(state)
        with PHASES.phase("train: learn (replay add, sample, updates)"):
            # waiting here costs nothing: the next sample needs the new weights anyway
            return jax.block_until_ready(self._learn_step(state, batch))

    def _learn_step(self, state: Any, batch: Any) -> tuple[Any, dict | None, int]:
        fragment = batch.to_transition()
        self._env_steps += batch.count
        if self._env_steps < self.config.learning_starts:
            state, self.replay = self._add(state, self.replay, fragment)
            return state, None, batch.count
        if self.learner.num_devices == 1:
            state, self.replay, metrics = self._learn(state, self.replay, fragment)
        else:
            state, self.replay, batches, index = self._add_and_sample(state, self.replay,
                                                                      fragment)
            state, metrics = self.learner.update(state, batches)
            metrics = dict(metrics)
            td = metrics.pop("td_error", None)
            if self.prioritized:
                _td_error({"td_error": td}, self.algorithm.name, None)
                self.replay = self._write_priorities(self.replay, index, td)
        return state, metrics, batch.count


def _td_error(metrics: dict, algo_name: str, batch_size: int | None) -> Any:
    """Pops the per-sample ``td_error`` that prioritized replay needs from ``metrics``."""
    td = metrics.pop("td_error", None)
    if td is None or (batch_size is not None and td.shape != (batch_size,)):
        raise ConfigError(f"prioritized_replay needs {algo_name}'s update to report "
                          "metrics['td_error'] of shape [train_batch_size]; set "
                          "prioritized_replay: false")
    return td
