"""APPO: PPO's clipped surrogate on IMPALA's asynchronous samples, with V-trace targets.

``update`` evaluates the batch once with the current params (the "old" policy of this update),
computes V-trace value targets and pg advantages for that policy against the workers' behaviour
policy, then runs ``num_sgd_iter`` epochs of (mini)batch steps on
``min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A)`` with ``ratio = pi / pi_old``, plus the
value loss to the V-trace targets, the entropy bonus and (``use_kl_loss``) an adaptive KL
penalty. Network, acting, optimizer and V-trace come from ``jrl.algorithms.impala``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from jrl import registry
from jrl.algorithms.examples import async_batch_example
from jrl.algorithms.impala import (
    ActorCriticPolicy,
    ImpalaConfig,
    actor_critic_parts,
    all_observations,
    explained_variance,
    vtrace_targets,
)
from jrl.config import field, to_dict
from jrl.errors import ConfigError
from jrl.ops.filters import FilterState
from jrl.ops.parallel import num_devices, pmean
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


class APPOState(NamedTuple):
    """Learner state of APPO: arrays only."""

    params: Any
    opt_state: Any
    key: jax.Array
    obs_filter: FilterState
    kl_coeff: jax.Array
    num_updates: jax.Array
    env_steps: jax.Array


def appo_loss(dist, value: jax.Array, minibatch: dict, old_dist, config: APPOConfig,
              kl_coeff: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Clipped surrogate on V-trace advantages + value loss - entropy bonus (+ KL penalty).

    Args:
      dist: current action distribution over ``[N]`` samples.
      value: current value predictions ``[N]``.
      minibatch: ``actions``, ``old_logp`` (log-probs under ``pi_old``), ``pg_advantages`` and
        ``vs`` (V-trace advantages and value targets for ``pi_old``), each ``[N]``.
      old_dist: the distribution the batch was evaluated with at the start of the update.
      config: APPO config.
      kl_coeff: current KL penalty weight (used with ``use_kl_loss``).
    """
    logp = dist.log_prob(minibatch["actions"])
    advantages = minibatch["pg_advantages"]
    chex.assert_equal_shape([logp, advantages, value, minibatch["vs"]])
    ratio = jnp.exp(logp - minibatch["old_logp"])
    surrogate = jnp.minimum(
        ratio * advantages,
        jnp.clip(ratio, 1.0 - config.clip_param, 1.0 + config.clip_param) * advantages)
    policy_loss = -jnp.mean(surrogate)
    vf_loss = 0.5 * jnp.mean(jnp.square(value - minibatch["vs"]))
    entropy = jnp.mean(dist.entropy())
    kl = jnp.mean(old_dist.kl(dist))
    total = policy_loss + config.vf_loss_coeff * vf_loss - config.entropy_coeff * entropy
    if config.use_kl_loss:
        total = total + kl_coeff * kl
    clip_frac = jnp.mean((jnp.abs(ratio - 1.0) > config.clip_param).astype(jnp.float32))
    return total, {"total_loss": total, "policy_loss": policy_loss, "vf_loss": vf_loss,
                   "entropy": entropy, "kl": kl, "clip_frac": clip_frac}


def make_appo(config: APPOConfig, networks: Any = None, spec: EnvSpec | None = None,
              axis_name: str | None = None) -> Algorithm:
    """Builds APPO's ``Algorithm`` for ``spec`` (see ``make_impala`` for ``axis_name``)."""
    if spec is None:
        raise ConfigError("make_appo needs the env spec")
    parts = actor_critic_parts(config, networks, spec)
    optimizer = parts.optimizer

    def init(key: jax.Array) -> APPOState:
        key, init_key = jax.random.split(key)
        params = parts.init_params(init_key)
        return APPOState(params=params, opt_state=optimizer.init(params), key=key,
                         obs_filter=parts.obs_filter.init(spec.obs_shape),
                         kl_coeff=jnp.asarray(config.kl_coeff, jnp.float32),
                         num_updates=jnp.zeros((), jnp.int32),
                         env_steps=jnp.zeros((), jnp.int32))

    def policy(state: APPOState) -> ActorCriticPolicy:
        return ActorCriticPolicy(state.params, state.obs_filter)

    def update(state: APPOState, batch: Transition) -> tuple[APPOState, dict[str, jax.Array]]:
        T, B = batch.reward.shape
        flat = lambda x: x.reshape((T * B, *x.shape[2:]))  # noqa: E731
        old_dist, v_t, v_tp1 = parts.evaluate(state.params, state.obs_filter, batch)
        actions = flat(batch.action)
        old_logp = old_dist.log_prob(actions)
        targets, log_rho_t = vtrace_targets(old_logp.reshape(T, B), v_t, v_tp1, batch, config)
        data = {"obs": flat(batch.obs), "actions": actions, "old_logp": old_logp,
                "pg_advantages": flat(targets.pg_advantages), "vs": flat(targets.vs),
                "old_dist": old_dist}
        n = T * B
        mb = min(config.sgd_minibatch_size or n, n)
        num_mb = n // mb

        def loss_fn(params, minibatch):
            dist, value = parts.forward(params, state.obs_filter, minibatch["obs"])
            return appo_loss(dist, value, minibatch, minibatch["old_dist"], config,
                             state.kl_coeff)

        def sgd_step(carry, idx):
            params, opt_state = carry
            minibatch = jax.tree.map(lambda x: x[idx], data)
            grads, stats = jax.grad(loss_fn, has_aux=True)(params, minibatch)
            grads = pmean(grads, axis_name)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            stats["grad_gnorm"] = optax.tree.norm(grads)
            return (optax.apply_updates(params, updates), opt_state), stats

        def epoch(carry, key):
            perm = jax.random.permutation(key, n)[: num_mb * mb].reshape(num_mb, mb)
            return jax.lax.scan(sgd_step, carry, perm)

        key, *epoch_keys = jax.random.split(state.key, config.num_sgd_iter + 1)
        (params, opt_state), stats = jax.lax.scan(
            epoch, (state.params, state.opt_state), jnp.stack(epoch_keys))
        stats = jax.tree.map(jnp.mean, stats)
        stats.update(mean_rho=jnp.mean(jnp.exp(log_rho_t)),
                     vf_explained_var=explained_variance(targets.vs, v_t, axis_name))
        stats = pmean(stats, axis_name)
        kl_coeff = state.kl_coeff
        if config.use_kl_loss:
            kl = stats["kl"]
            kl_coeff = jnp.where(kl > 2.0 * config.kl_target, kl_coeff * 1.5,
                                 jnp.where(kl < 0.5 * config.kl_target, kl_coeff * 0.5, kl_coeff))
        stats["cur_kl_coeff"] = kl_coeff
        new_state = APPOState(
            params=params, opt_state=opt_state, key=key,
            obs_filter=parts.obs_filter.update(state.obs_filter,
                                               all_observations(batch, axis_name)),
            kl_coeff=kl_coeff, num_updates=state.num_updates + 1,
            env_steps=state.env_steps + n * num_devices(axis_name))
        return new_state, stats

    return Algorithm(init=init, update=update, act=parts.act, policy=policy, name="APPO")


ALGORITHM_DEF = AlgorithmDef(
    name="APPO",
    config_class=APPOConfig,
    make=make_appo,
    plan="async_samples",
    example_batch=async_batch_example,
)
__getattr__ = registry.trainer_class_getattr(__name__, "APPO")
