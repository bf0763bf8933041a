"""APPO: PPO's clipped surrogate on IMPALA's asynchronous samples, with V-trace targets.

``update`` evaluates the batch once with the current params (the "old" policy of this update),
computes V-trace value targets and pg advantages for that policy against the workers' behaviour
policy, then runs ``num_sgd_iter`` epochs of (mini)batch steps on
``min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A)`` with ``ratio = pi / pi_old``, plus the
value loss to the V-trace targets, the entropy bonus and (``use_kl_loss``) an adaptive KL
penalty. The optimizer and V-trace come from ``jrl.algorithms.impala``, the state from
``jrl.algorithms.ppo``, network, acting and the SGD loop from ``jrl.algorithms.toolkit``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import chex
import jax
import jax.numpy as jnp

from jrl import registry
from jrl.algorithms import toolkit
from jrl.algorithms.examples import async_batch_example
from jrl.algorithms.impala import (
    ImpalaConfig,
    all_observations,
    impala_optimizer,
    vtrace_targets,
)
from jrl.algorithms.ppo import PPOState, surrogate_epochs
from jrl.config import field, to_dict
from jrl.errors import ConfigError
from jrl.ops.losses import clipped_surrogate_loss
from jrl.ops.parallel import num_devices, pmean
from jrl.ops.sequences import chop, masked_mean
from jrl.types import Algorithm, AlgorithmDef, EnvSpec, Transition


@dataclasses.dataclass(frozen=True, kw_only=True)
class APPOConfig(ImpalaConfig):
    """APPO settings (RLlib names): every IMPALA key, plus PPO's surrogate.

    Attributes:
      clip_param: PPO surrogate clipping epsilon.
      use_kl_loss: add ``kl_coeff * KL(pi_old || pi)`` to the loss, with ``kl_coeff`` adapted
        towards ``kl_target`` after every update.
      kl_coeff: initial weight of the KL penalty.
      kl_target: target KL for the adaptive penalty.
      sgd_minibatch_size: minibatch size of each SGD step (``None``: the whole train batch).
    """

    clip_param: float = field(0.4, gt=0.0)
    use_kl_loss: bool = False
    kl_coeff: float = field(1.0, min=0.0)
    kl_target: float = field(0.01, gt=0.0)
    sgd_minibatch_size: int | None = field(None, min=1)

    def validate(self) -> None:
        if self.sgd_minibatch_size is not None and self.sgd_minibatch_size > self.train_batch_size:
            raise ConfigError(f"config key 'sgd_minibatch_size' ({self.sgd_minibatch_size}) must "
                              f"be <= train_batch_size ({self.train_batch_size})")


DEFAULT_CONFIG: dict[str, Any] = to_dict(APPOConfig())


# APPO keeps exactly PPO's arrays (fields documented on ``PPOState``).
APPOState = PPOState


def appo_loss(dist, value: jax.Array, minibatch: dict, old_dist, config: APPOConfig,
              kl_coeff: jax.Array, mask: jax.Array | None = None
              ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Clipped surrogate on V-trace advantages + value loss - entropy bonus (+ KL penalty).

    Args:
      dist: current action distribution over ``[N]`` samples.
      value: current value predictions ``[N]``.
      minibatch: ``actions``, ``old_logp`` (log-probs under ``pi_old``), ``pg_advantages`` and
        ``vs`` (V-trace advantages and value targets for ``pi_old``), each ``[N]``.
      old_dist: the distribution the batch was evaluated with at the start of the update.
      config: APPO config.
      kl_coeff: current KL penalty weight (used with ``use_kl_loss``).
      mask: 1 at valid samples, 0 at the padding of sequences ``[N]`` (``None``: all valid).
    """
    logp = dist.log_prob(minibatch["actions"])
    chex.assert_equal_shape([logp, minibatch["pg_advantages"], value, minibatch["vs"]])
    policy_loss, clip_frac = clipped_surrogate_loss(
        jnp.exp(logp - minibatch["old_logp"]), minibatch["pg_advantages"], config.clip_param,
        mask)
    vf_loss = 0.5 * masked_mean(jnp.square(value - minibatch["vs"]), mask)
    entropy = masked_mean(dist.entropy(), mask)
    kl = masked_mean(old_dist.kl(dist), mask)
    total = policy_loss + config.vf_loss_coeff * vf_loss - config.entropy_coeff * entropy
    if config.use_kl_loss:
        total = total + kl_coeff * kl
    return total, {"total_loss": total, "policy_loss": policy_loss, "vf_loss": vf_loss,
                   "entropy": entropy, "kl": kl, "clip_frac": clip_frac}


def make_appo(config: APPOConfig, networks: Any = None, spec: EnvSpec | None = None,
              axis_name: str | None = None) -> Algorithm:
    """Builds APPO's ``Algorithm`` for ``spec`` (see ``make_impala`` for ``axis_name``)."""
    if spec is None:
        raise ConfigError("make_appo needs the env spec")
    recurrent = config.model.recurrent and networks is None
    fns = (toolkit.make_recurrent_fns(spec, config.model, config.observation_filter) if recurrent
           else toolkit.make_actor_critic_fns(spec, config.model, config.observation_filter,
                                              networks))
    optimizer = impala_optimizer(config)

    def init(key: jax.Array) -> APPOState:
        state = toolkit.init_learner_state(key, fns.init_params, optimizer, fns.obs_filter,
                                           spec.obs_shape)
        return APPOState(**state._asdict(), kl_coeff=jnp.asarray(config.kl_coeff, jnp.float32))

    def update(state: APPOState, batch: Transition) -> tuple[APPOState, dict[str, jax.Array]]:
        T, B = batch.reward.shape
        flat = lambda x: x.reshape((T * B, *x.shape[2:]))  # noqa: E731
        old_dist, v_t, v_tp1 = fns.evaluate(state.params, state.obs_filter, batch)
        actions = flat(batch.action)
        old_logp = old_dist.log_prob(actions)
        targets, log_rho_t = vtrace_targets(old_logp.reshape(T, B), v_t, v_tp1, batch, config)
        data = {"obs": flat(batch.obs), "actions": actions, "old_logp": old_logp,
                "pg_advantages": flat(targets.pg_advantages), "vs": flat(targets.vs),
                "old_dist": old_dist}

        def loss_fn(params, minibatch):
            dist, value = fns.forward(params, state.obs_filter, minibatch["obs"])
            return appo_loss(dist, value, minibatch, minibatch["old_dist"], config,
                             state.kl_coeff)

        trained, stats = surrogate_epochs(
            state, loss_fn, data, optimizer, num_epochs=config.num_sgd_iter,
            minibatch_size=config.sgd_minibatch_size or T * B,
            kl_target=config.kl_target if config.use_kl_loss else None, axis_name=axis_name)
        return finish(state, trained, stats, targets, v_t, log_rho_t, batch)

    def finish(state, trained, stats, targets, v_t, log_rho_t, batch):
        """V-trace diagnostics, the observation filter and the step count after the epochs."""
        T, B = batch.reward.shape
        stats.update(mean_rho=pmean(jnp.mean(jnp.exp(log_rho_t)), axis_name),
                     vf_explained_var=toolkit.explained_variance(targets.vs, v_t, axis_name))
        new_state = toolkit.advance_learner_state(
            trained, obs_filter=fns.obs_filter.update(state.obs_filter,
                                                      all_observations(batch, axis_name)),
            env_steps=T * B * num_devices(axis_name))
        return new_state, stats

    def recurrent_update(state: APPOState, batch: Transition
                         ) -> tuple[APPOState, dict[str, jax.Array]]:
        # V-trace on the fragment's [T, B] steps; SGD on minibatches of whole sequences.
        T, B = batch.reward.shape
        seqs, v_t, v_tp1, old_dist = fns.evaluate(state.params, state.obs_filter, batch)
        L = seqs.mask.shape[0]
        old_logp = old_dist.log_prob(toolkit.flatten_time(chop(batch.action, L)))
        targets, log_rho_t = vtrace_targets(toolkit.per_step(old_logp, T, L), v_t, v_tp1,
                                            batch, config)
        sequence_major = lambda x: jnp.swapaxes(  # noqa: E731
            x.reshape((L, -1, *x.shape[1:])), 0, 1)
        data = toolkit.sequence_data({"actions": batch.action, "pg_advantages":
                                      targets.pg_advantages, "vs": targets.vs}, T, L)
        data.update(old_logp=sequence_major(old_logp), inputs=toolkit.time_major(seqs.features),
                    mask=seqs.mask.T, state=seqs.initial_state,
                    old_dist=jax.tree.map(sequence_major, old_dist))

        def loss_fn(params, minibatch):
            columns = toolkit.time_major({k: v for k, v in minibatch.items() if k != "state"})
            dist, value, _ = fns.unroll(params, state.obs_filter, columns["inputs"],
                                        minibatch["state"])
            flat = jax.tree.map(toolkit.flatten_time, columns)
            return appo_loss(dist, value, flat, flat["old_dist"], config, state.kl_coeff,
                             mask=flat["mask"])

        trained, stats = surrogate_epochs(
            state, loss_fn, data, optimizer, num_epochs=config.num_sgd_iter,
            minibatch_size=max(1, (config.sgd_minibatch_size or T * B) // L),
            kl_target=config.kl_target if config.use_kl_loss else None, axis_name=axis_name)
        return finish(state, trained, stats, targets, v_t, log_rho_t, batch)

    if recurrent:
        return Algorithm(init=init, update=recurrent_update, act=fns.act,
                         policy=toolkit.network_policy, name="APPO", recurrent=fns.recurrent)
    return Algorithm(init=init, update=update, act=fns.act, policy=toolkit.network_policy,
                     name="APPO")


ALGORITHM_DEF = AlgorithmDef(
    name="APPO",
    config_class=APPOConfig,
    make=make_appo,
    plan="async_samples",
    example_batch=async_batch_example,
    recurrent=True,
)
__getattr__ = registry.trainer_class_getattr(__name__, "APPO")
