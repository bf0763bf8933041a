"""Example batches: random data of the exact kind each execution plan feeds ``update``.

Algorithm records name one of these as ``example_batch(config, spec, key)``; the shared contract
test and compile checks drive ``update`` with them, without a Trainer or an env.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jrl.networks.recurrent import initial_state
from jrl.types import EnvSpec, ReplayBatch, Transition


def random_fragment(spec: EnvSpec, T: int, B: int, key: jax.Array) -> Transition:
    """A ``[T, B]`` fragment of random steps: observations, valid actions, rewards, about 5%
    terminations and 2% truncations, and log-probabilities."""
    k_obs, k_next, k_act, k_rew, k_term, k_trunc, k_logp = jax.random.split(key, 7)
    obs_shape = (T, B, *spec.obs_shape)
    if jnp.issubdtype(jnp.dtype(spec.obs_dtype), jnp.integer):
        obs = jax.random.randint(k_obs, obs_shape, 0, 2).astype(spec.obs_dtype)
        next_obs = jax.random.randint(k_next, obs_shape, 0, 2).astype(spec.obs_dtype)
    else:
        obs = jax.random.normal(k_obs, obs_shape).astype(spec.obs_dtype)
        next_obs = jax.random.normal(k_next, obs_shape).astype(spec.obs_dtype)
    if spec.discrete:
        action = jax.random.randint(k_act, (T, B), 0, spec.num_actions).astype(jnp.int32)
    elif not spec.continuous:
        high = (jnp.asarray(spec.action_nvec) if spec.action_kind == "multi_discrete"
                else jnp.full(spec.action_shape, 2))
        action = jax.random.randint(k_act, (T, B, *spec.action_shape), 0, high).astype(jnp.int32)
    else:
        low = jnp.reshape(jnp.asarray(spec.action_low, jnp.float32), spec.action_shape)
        high = jnp.reshape(jnp.asarray(spec.action_high, jnp.float32), spec.action_shape)
        action = jax.random.uniform(k_act, (T, B, *spec.action_shape), minval=low, maxval=high)
    terminated = jax.random.bernoulli(k_term, 0.05, (T, B))
    truncated = jax.random.bernoulli(k_trunc, 0.02, (T, B)) & ~terminated
    return Transition(obs=obs, action=action, reward=jax.random.normal(k_rew, (T, B)),
                      terminated=terminated, truncated=truncated, next_obs=next_obs,
                      behaviour_logp=-jnp.abs(jax.random.normal(k_logp, (T, B))))


def fragment_example(config: Any, spec: EnvSpec, key: jax.Array) -> Transition:
    """One worker's fragment ``[rollout_fragment_length, num_envs_per_worker]`` (A3C)."""
    return with_recurrent_inputs(config.model, random_fragment(
        spec, config.rollout_fragment_length, config.num_envs_per_worker, key))


def train_batch_example(config: Any, spec: EnvSpec, key: jax.Array) -> Transition:
    """The synchronous on-policy batch: fragments of one worker concatenated along time until
    they cover ``train_batch_size`` (PG, A2C, PPO)."""
    T, B = config.rollout_fragment_length, config.num_envs_per_worker
    rounds = max(1, math.ceil(config.train_batch_size / (T * B)))
    return with_recurrent_inputs(config.model, random_fragment(spec, T * rounds, B, key))


def with_recurrent_inputs(model: Any, batch: Transition) -> Transition:
    """``batch`` with what a recurrent policy's batch also holds (``state_in`` zeros, the
    previous actions and rewards) when ``model`` is recurrent; unchanged otherwise."""
    if not getattr(model, "recurrent", False):
        return batch
    T, B = batch.reward.shape
    state = initial_state(model, T * B)
    starts = batch.terminated | batch.truncated
    keep = ~jnp.concatenate([jnp.ones_like(starts[:1]), starts[:-1]])
    shift = lambda x: jnp.concatenate([jnp.zeros_like(x[:1]), x[:-1]])  # noqa: E731
    prev_action = shift(batch.action) * keep.reshape(keep.shape + (1,) * (
        batch.action.ndim - 2)).astype(batch.action.dtype)
    return batch._replace(state_in=tuple(s.reshape((T, B, -1)) for s in state),
                          prev_action=prev_action, prev_reward=shift(batch.reward) * keep)


def async_batch_example(config: Any, spec: EnvSpec, key: jax.Array) -> Transition:
    """The async-samples batch: fragments side by side along the env axis until they cover
    ``train_batch_size`` (IMPALA, APPO)."""
    T, B = config.rollout_fragment_length, config.num_envs_per_worker
    fragments = max(1, math.ceil(config.train_batch_size / (T * B)))
    return with_recurrent_inputs(config.model, random_fragment(spec, T, B * fragments, key))


def replay_example(postprocess: Callable[[Any, Transition], ReplayBatch]
                   ) -> Callable[[Any, EnvSpec, jax.Array], ReplayBatch]:
    """``example_batch`` of a replay learner: ``train_batch_size`` items drawn from the
    postprocessed items of random fragments (with importance weights of prioritized replay)."""

    def example(config: Any, spec: EnvSpec, key: jax.Array) -> ReplayBatch:
        frag_key, index_key, weight_key = jax.random.split(key, 3)
        items = postprocess(config, fragment_example(config, spec, frag_key))
        size = jax.tree.leaves(items)[0].shape[0]
        index = jax.random.randint(index_key, (config.train_batch_size,), 0, size)
        batch = jax.tree.map(lambda x: x[index], items)
        if getattr(config, "prioritized_replay", False):
            batch = batch._replace(weight=jax.random.uniform(
                weight_key, batch.weight.shape, minval=0.1, maxval=1.0))
        return batch

    return example
