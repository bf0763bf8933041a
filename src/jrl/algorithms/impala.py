"""IMPALA (Espeholt et al., 2018): actor-critic with V-trace off-policy correction.

Workers act with slightly stale weights and stream fragments to the learner (the ``async_samples``
plan); ``update`` takes a time-major ``[T, B]`` batch whose ``behaviour_logp`` are the workers'
log-probabilities, evaluates the current policy and values on it, and corrects for the lag with
V-trace. ``vtrace_targets`` and ``impala_optimizer`` are shared with APPO.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import chex
import jax
import jax.numpy as jnp
import optax

from jrl import registry
from jrl.algorithms import toolkit
from jrl.algorithms.examples import async_batch_example
from jrl.config import CommonConfig, field, to_dict
from jrl.errors import ConfigError
from jrl.ops.parallel import all_gather, num_devices, pmean
from jrl.ops.returns import VTraceReturns, vtrace
from jrl.ops.sequences import chop
from jrl.types import Algorithm, AlgorithmDef, EnvSpec, LearnerState, NetworkPolicy, Transition


@dataclasses.dataclass(frozen=True, kw_only=True)
class ImpalaConfig(CommonConfig):
    """IMPALA settings (RLlib names) on top of the common ones.

    Attributes:
      vtrace: correct for the workers' stale policies with V-trace; ``False`` treats the batch as
        on-policy (importance weights 1: lambda-returns with the current values).
      vtrace_clip_rho_threshold: ``rho_bar``, clip of the importance weights in the value targets.
      vtrace_clip_pg_rho_threshold: clip of the importance weights in the pg advantages.
      lambda_: V-trace's trace parameter (key ``lambda``; 1 in the paper).
      vf_loss_coeff: weight of the value loss.
      entropy_coeff: weight of the entropy bonus.
      num_sgd_iter: gradient steps on each train batch (each recomputes the V-trace targets).
      opt_type: ``adam`` or ``rmsprop``.
      decay / momentum / epsilon: RMSProp's parameters (``opt_type: rmsprop``).
      broadcast_interval: send new weights to the workers after this many learner updates.
      max_sample_requests_in_flight_per_worker: sample requests each worker has queued, so it
        starts the next fragment while the previous one travels to the learner.
      learner_queue_size: train batches waiting for the learner at most; when the queue is
        full, sampling waits (back-pressure).

    A train batch is ``ceil(train_batch_size / (rollout_fragment_length * num_envs_per_worker))``
    whole fragments side by side, ``[rollout_fragment_length, B]``.
    """

    rollout_fragment_length: int = field(50, min=1)
    train_batch_size: int = field(500, min=1)
    lr: float = field(5e-4, gt=0.0)
    grad_clip: float | None = field(40.0, gt=0.0)
    vtrace: bool = True
    vtrace_clip_rho_threshold: float | None = field(1.0, gt=0.0)
    vtrace_clip_pg_rho_threshold: float | None = field(1.0, gt=0.0)
    lambda_: float = field(1.0, key="lambda", min=0.0, max=1.0)
    vf_loss_coeff: float = field(0.5, min=0.0)
    entropy_coeff: float = field(0.01, min=0.0)
    num_sgd_iter: int = field(1, min=1)
    opt_type: str = field("adam", choices=("adam", "rmsprop"))
    decay: float = field(0.99, min=0.0, max=1.0)
    momentum: float = field(0.0, min=0.0)
    epsilon: float = field(0.1, gt=0.0)
    broadcast_interval: int = field(1, min=1)
    max_sample_requests_in_flight_per_worker: int = field(2, min=1)
    learner_queue_size: int = field(16, min=1)


DEFAULT_CONFIG: dict[str, Any] = to_dict(ImpalaConfig())

# The one-network learner state and what act needs (fields documented in ``jrl.types``).
ImpalaState = LearnerState
ActorCriticPolicy = NetworkPolicy


def impala_optimizer(config: Any) -> optax.GradientTransformation:
    """The optimizer IMPALA's (and APPO's) keys ask for: ``opt_type`` Adam or RMSProp (with
    ``decay``, ``epsilon`` and ``momentum``) at ``lr``, after ``grad_clip``."""
    rmsprop = config.opt_type == "rmsprop"
    return toolkit.make_optimizer(config.lr, optimizer=config.opt_type,
                                  grad_clip=config.grad_clip,
                                  eps=config.epsilon if rmsprop else 1e-8, decay=config.decay,
                                  momentum=config.momentum)


def vtrace_targets(logp_t: jax.Array, v_t: jax.Array, v_tp1: jax.Array, batch: Transition,
                   config: Any) -> tuple[VTraceReturns, jax.Array]:
    """V-trace targets of ``batch`` for a target policy with log-probs ``logp_t`` ``[T, B]``.

    Returns ``(VTraceReturns, log_rho_t)``; with ``config.vtrace`` off the log importance weights
    are 0 (on-policy lambda-returns).
    """
    log_rho_t = jax.lax.stop_gradient(logp_t) - batch.behaviour_logp
    if not config.vtrace:
        log_rho_t = jnp.zeros_like(log_rho_t)
    targets = vtrace(v_t, v_tp1, batch.reward, batch.terminated, batch.truncated, log_rho_t,
                     config.gamma, config.lambda_, config.vtrace_clip_rho_threshold,
                     config.vtrace_clip_pg_rho_threshold, 1.0)
    return targets, log_rho_t


def impala_loss(logp_t: jax.Array, entropy_t: jax.Array, v_t: jax.Array, v_tp1: jax.Array,
                batch: Transition, config: ImpalaConfig, axis_name: str | None = None
                ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Policy gradient with V-trace advantages + value loss to V-trace targets - entropy bonus.

    ``policy_loss = -mean(logp_t * pg_advantages)``, ``vf_loss = 0.5 * mean((vs - v_t)^2)``,
    ``total = policy_loss + vf_loss_coeff * vf_loss - entropy_coeff * mean(entropy_t)``.

    Args:
      logp_t: current log-probs of the batch's actions, ``[T, B]``.
      entropy_t: current policy entropy, ``[T, B]``.
      v_t: current values of ``obs``, ``[T, B]``.
      v_tp1: current values of ``next_obs`` (targets only, no gradient), ``[T, B]``.
      batch: the fragment batch (rewards, episode ends, ``behaviour_logp``).
      config: IMPALA config (V-trace thresholds, coefficients, gamma, lambda).
      axis_name: mapped device axis the batch is split over (``vf_explained_var`` covers the
        whole batch); ``None`` on one device.
    """
    chex.assert_rank(logp_t, 2)
    chex.assert_equal_shape([logp_t, entropy_t, v_t, v_tp1, batch.reward])
    targets, log_rho_t = vtrace_targets(logp_t, v_t, v_tp1, batch, config)
    policy_loss = -jnp.mean(logp_t * targets.pg_advantages)
    vf_loss = 0.5 * jnp.mean(jnp.square(targets.vs - v_t))
    entropy = jnp.mean(entropy_t)
    total = policy_loss + config.vf_loss_coeff * vf_loss - config.entropy_coeff * entropy
    return total, {"total_loss": total, "policy_loss": policy_loss, "vf_loss": vf_loss,
                   "entropy": entropy, "mean_rho": jnp.mean(jnp.exp(log_rho_t)),
                   "vf_explained_var": toolkit.explained_variance(targets.vs, v_t, axis_name)}


def make_impala(config: ImpalaConfig, networks: Any = None, spec: EnvSpec | None = None,
                axis_name: str | None = None) -> Algorithm:
    """Builds IMPALA's ``Algorithm`` for ``spec``; ``networks`` defaults to the actor-critic.

    With ``axis_name`` the ``update`` averages gradients, filter statistics and metrics over that
    mapped axis (the batch split along its env axis), so it equals the one-device update.
    """
    if spec is None:
        raise ConfigError("make_impala needs the env spec")
    recurrent = config.model.recurrent and networks is None
    fns = (toolkit.make_recurrent_fns(spec, config.model, config.observation_filter) if recurrent
           else toolkit.make_actor_critic_fns(spec, config.model, config.observation_filter,
                                              networks))
    optimizer = impala_optimizer(config)

    def init(key: jax.Array) -> ImpalaState:
        return toolkit.init_learner_state(key, fns.init_params, optimizer, fns.obs_filter,
                                          spec.obs_shape)

    def sequence_loss_fn(params, obs_filter_state, batch):
        # The forward pass runs over max_seq_len sequences; the loss over the [T, B] steps they
        # hold (the padding is dropped, so V-trace sees the fragments as they were sampled).
        _, v_t, v_tp1, dist = fns.evaluate(params, obs_filter_state, batch)
        T = batch.reward.shape[0]
        L = fns.max_seq_len
        actions = toolkit.flatten_time(chop(batch.action, min(L, T)))
        return impala_loss(toolkit.per_step(dist.log_prob(actions), T, L),
                           toolkit.per_step(dist.entropy(), T, L), v_t, v_tp1, batch, config,
                           axis_name)

    def loss_fn(params, obs_filter_state, batch):
        if recurrent:
            return sequence_loss_fn(params, obs_filter_state, batch)
        dist, v_t, v_tp1 = fns.evaluate(params, obs_filter_state, batch)
        T, B = batch.reward.shape
        logp_t = dist.log_prob(batch.action.reshape((T * B, *batch.action.shape[2:])))
        return impala_loss(logp_t.reshape(T, B), dist.entropy().reshape(T, B), v_t, v_tp1,
                           batch, config, axis_name)

    def update(state: ImpalaState, batch: Transition) -> tuple[ImpalaState, dict[str, jax.Array]]:
        step = toolkit.sgd_step(lambda params, batch: loss_fn(params, state.obs_filter, batch),
                                optimizer, axis_name)
        # Whole-batch steps: V-trace needs the fragments in time order.
        (params, opt_state), stats, _ = toolkit.sgd_epochs(
            step, (state.params, state.opt_state), batch, state.key,
            num_epochs=config.num_sgd_iter)
        stats = pmean(stats, axis_name)
        obs_filter = fns.obs_filter.update(state.obs_filter, all_observations(batch, axis_name))
        return toolkit.advance_learner_state(
            state, obs_filter=obs_filter, env_steps=batch.reward.size * num_devices(axis_name),
            params=params, opt_state=opt_state), stats

    return Algorithm(init=init, update=update, act=fns.act, policy=toolkit.network_policy,
                     name="IMPALA", recurrent=fns.recurrent if recurrent else None)


def all_observations(batch: Transition, axis_name: str | None) -> jax.Array:
    """The batch's observations ``[N, ...]`` from every device (filter statistics)."""
    T, B = batch.reward.shape
    return all_gather(batch.obs.reshape((T * B, *batch.obs.shape[2:])), axis_name)


ALGORITHM_DEF = AlgorithmDef(
    name="IMPALA",
    config_class=ImpalaConfig,
    make=make_impala,
    plan="async_samples",
    example_batch=async_batch_example,
    trainer_class_name="ImpalaTrainer",
    recurrent=True,
)
__getattr__ = registry.trainer_class_getattr(__name__, "IMPALA")
