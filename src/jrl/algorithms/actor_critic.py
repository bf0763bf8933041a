"""The learner shared by the plain actor-critic algorithms (PG, A2C, A3C).

One gradient step per train batch: values of ``obs`` and ``next_obs`` with the current params,
advantages and value targets from the algorithm's ``targets`` function, then the gradient of
``jrl.ops.losses.actor_critic_loss`` (accumulated over microbatches when asked) and one optimizer
step. The step is split in two pure functions, ``compute`` (gradients of a batch against given
weights) and ``apply`` (an optimizer step with given gradients), so that A3C can compute
gradients on rollout workers and apply them on the learner; ``update`` is the two in a row.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jrl.algorithms import toolkit
from jrl.errors import ConfigError
from jrl.ops.filters import FilterState, merge_filter_states
from jrl.ops.losses import actor_critic_loss
from jrl.ops.parallel import all_gather, num_devices, pmean
from jrl.types import Algorithm, EnvSpec, LearnerState, NetworkPolicy, Transition

# ``targets(batch, v_t, v_tp1) -> (advantages, value_targets)``, all ``[T, B]``.
TargetsFn = Callable[[Transition, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]

# The one-network learner state and what act needs (fields documented in ``jrl.types``).
ActorCriticState = LearnerState
ActorCriticPolicy = NetworkPolicy


class GradientFns(NamedTuple):
    """The learner step in two halves (both pure and jittable).

    Attributes:
      compute: ``compute(policy, batch) -> (grads, metrics, filter_delta)``: gradients of the
        batch's mean loss at ``policy.params``, and the observation statistics of the batch
        (to merge into the learner's filter).
      apply: ``apply(state, grads, filter_delta, env_steps) -> (state, metrics)``: one optimizer
        step; counts one update and ``env_steps`` sampled steps.
    """

    compute: Callable
    apply: Callable


def _pad_to(x: jax.Array, n: int) -> jax.Array:
    pad = n - x.shape[0]
    return x if pad == 0 else jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)])


def make_learner(name: str, config: Any, spec: EnvSpec, targets: TargetsFn, *,
                 optimizer: optax.GradientTransformation, networks: Any = None,
                 vf_loss_coeff: float, entropy_coeff: float, normalize_advantages: bool,
                 microbatch_size: int | None = None, axis_name: str | None = None
                 ) -> tuple[Algorithm, GradientFns]:
    """The ``Algorithm`` and its ``GradientFns`` for one actor-critic algorithm.

    Args:
      name: the algorithm's registered name.
      config: its config (``model``, ``observation_filter``).
      spec: the env spec.
      targets: advantages and value targets of a ``[T, B]`` batch given its values.
      optimizer: the optimizer (``toolkit.make_optimizer`` with the algorithm's keys).
      networks: the actor-critic network (default: the catalog's for ``spec``).
      vf_loss_coeff, entropy_coeff: loss weights.
      normalize_advantages: standardize advantages over the batch.
      microbatch_size: accumulate gradients over microbatches of this many samples (the last
        one padded with zero-weight samples); the sum equals the full batch's gradient.
      axis_name: mapped device axis; gradients, statistics and filter data are averaged over it.
    """
    if spec is None:
        raise ConfigError(f"make_{name.lower()} needs the env spec")
    recurrent = config.model.recurrent and networks is None
    if recurrent and microbatch_size:
        raise ConfigError(f"{name}: microbatch_size splits samples apart; a recurrent model "
                          "(model.use_lstm/use_gru) trains on whole sequences: drop one")
    fns = (toolkit.make_recurrent_fns(spec, config.model, config.observation_filter)
           if recurrent else
           toolkit.make_actor_critic_fns(spec, config.model, config.observation_filter,
                                         networks))
    obs_filter = fns.obs_filter

    def loss_fn(params, filter_state, data):
        dist, value = fns.forward(params, filter_state, data["obs"])
        return actor_critic_loss(dist.log_prob(data["actions"]), dist.entropy(), value,
                                 data["advantages"], data["value_targets"], vf_loss_coeff,
                                 entropy_coeff, data["weight"])

    def compute_samples(policy: ActorCriticPolicy, batch: Transition):
        T, B = batch.reward.shape
        n = T * B
        flat = lambda x: x.reshape((n, *x.shape[2:]))  # noqa: E731
        obs = flat(batch.obs)
        # Values of obs and next_obs from one network call (a smaller program compiles faster).
        _, v_t, v_tp1 = fns.evaluate(policy.params, policy.obs_filter, batch)
        advantages, value_targets = targets(batch, v_t, v_tp1)
        advantages, value_targets = flat(advantages), flat(value_targets)
        if normalize_advantages:
            advantages = toolkit.normalize_advantages(advantages, axis_name)
        mb = min(microbatch_size or n, n)
        num_mb = math.ceil(n / mb)
        size = num_mb * mb
        # Each microbatch's mean loss, scaled by mb / n, is its share of the full batch's mean.
        weight = _pad_to(jnp.full((n,), mb / n, jnp.float32), size)
        data = {"obs": obs, "actions": flat(batch.action), "advantages": advantages,
                "value_targets": value_targets}
        data = jax.tree.map(lambda x: _pad_to(x, size), data)
        data["weight"] = weight
        data = jax.tree.map(lambda x: x.reshape((num_mb, mb, *x.shape[1:])), data)

        grad_fn = jax.grad(loss_fn, has_aux=True)
        if num_mb == 1:
            grads, stats = grad_fn(policy.params, policy.obs_filter,
                                   jax.tree.map(lambda x: x[0], data))
        else:
            def accumulate(grads, microbatch):
                g, stats = grad_fn(policy.params, policy.obs_filter, microbatch)
                return jax.tree.map(jnp.add, grads, g), stats

            zeros = jax.tree.map(jnp.zeros_like, policy.params)
            grads, stats = jax.lax.scan(accumulate, zeros, data)
            stats = jax.tree.map(lambda x: jnp.sum(x, axis=0), stats)
        stats["vf_explained_var"] = toolkit.explained_variance(value_targets, flat(v_t),
                                                              axis_name)
        filter_delta = obs_filter.update(obs_filter.init(spec.obs_shape),
                                         all_gather(obs, axis_name))
        return grads, stats, filter_delta

    def sequence_loss_fn(params, filter_state, seqs, data):
        dist, value, _ = fns.unroll(params, filter_state, seqs.features, seqs.initial_state)
        mask = toolkit.flatten_time(seqs.mask)
        # mean(weight * x) is the mean over the valid (unpadded) steps.
        weight = mask * mask.size / jnp.maximum(mask.sum(), 1.0)
        flat = jax.tree.map(toolkit.flatten_time, data)
        return actor_critic_loss(dist.log_prob(flat["actions"]), dist.entropy(), value,
                                 flat["advantages"], flat["value_targets"], vf_loss_coeff,
                                 entropy_coeff, weight)

    def compute_sequences(policy: ActorCriticPolicy, batch: Transition):
        T, B = batch.reward.shape
        seqs, v_t, v_tp1, _ = fns.evaluate(policy.params, policy.obs_filter, batch)
        advantages, value_targets = targets(batch, v_t, v_tp1)
        if normalize_advantages:  # over the [T, B] steps: padding never enters the statistics
            advantages = toolkit.normalize_advantages(advantages, axis_name)
        L = seqs.mask.shape[0]
        data = toolkit.time_major(toolkit.sequence_data(
            {"actions": batch.action, "advantages": advantages,
             "value_targets": value_targets}, T, L))
        grads, stats = jax.grad(sequence_loss_fn, has_aux=True)(
            policy.params, policy.obs_filter, seqs, data)
        obs = batch.obs.reshape((T * B, *batch.obs.shape[2:]))
        stats["vf_explained_var"] = toolkit.explained_variance(value_targets, v_t, axis_name)
        filter_delta = obs_filter.update(obs_filter.init(spec.obs_shape),
                                         all_gather(obs, axis_name))
        return grads, stats, filter_delta

    compute = compute_sequences if recurrent else compute_samples

    def apply(state: ActorCriticState, grads, filter_delta: FilterState, env_steps):
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        new_state = toolkit.advance_learner_state(
            state, obs_filter=merge_filter_states(state.obs_filter, filter_delta),
            env_steps=env_steps, params=optax.apply_updates(state.params, updates),
            opt_state=opt_state)
        return new_state, {"grad_gnorm": optax.tree.norm(grads)}

    def init(key: jax.Array) -> ActorCriticState:
        return toolkit.init_learner_state(key, fns.init_params, optimizer, obs_filter,
                                          spec.obs_shape)

    def update(state: ActorCriticState, batch: Transition):
        grads, stats, filter_delta = compute(toolkit.network_policy(state), batch)
        grads, stats = pmean((grads, stats), axis_name)
        env_steps = batch.reward.size * num_devices(axis_name)
        state, apply_stats = apply(state, grads, filter_delta, env_steps)
        return state, {**stats, **apply_stats}

    return (Algorithm(init=init, update=update, act=fns.act, policy=toolkit.network_policy,
                      name=name, recurrent=fns.recurrent if recurrent else None),
            GradientFns(compute=compute, apply=apply))
