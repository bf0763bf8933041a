"""Proximal Policy Optimization (Schulman et al., 2017) as an ``Algorithm`` triple.

``update`` takes a time-major ``[T, B]`` batch, computes values and GAE with the current params,
then runs ``num_sgd_iter`` epochs of shuffled minibatch steps, all inside one jit-able function.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from jrl import registry
from jrl.algorithms import toolkit
from jrl.algorithms.examples import train_batch_example
from jrl.config import CommonConfig, InputConfig, check_on_policy_input, field, to_dict
from jrl.errors import ConfigError
from jrl.ops.bootstrap import next_values
from jrl.ops.filters import FilterState
from jrl.ops.losses import clipped_surrogate_loss
from jrl.ops.parallel import all_gather, num_devices, pmean
from jrl.ops.returns import gae
from jrl.ops.sequences import masked_mean
from jrl.types import Algorithm, AlgorithmDef, EnvSpec, NetworkPolicy, Transition


@dataclasses.dataclass(frozen=True, kw_only=True)
class PPOConfig(InputConfig, CommonConfig):
    """PPO settings (RLlib names) on top of the common ones.

    Attributes:
      lambda_: GAE lambda (key ``lambda``).
      use_gae: use GAE advantages; ``False`` uses discounted returns minus the value baseline
        (GAE with lambda 1).
      clip_param: PPO surrogate clipping epsilon.
      vf_clip_param: clip value predictions to within this of the old ones (``None``: off).
      vf_loss_coeff: weight of the value loss.
      entropy_coeff: weight of the entropy bonus.
      kl_coeff: initial weight of the KL penalty (0 disables it).
      kl_target: target KL for the adaptive penalty.
      sgd_minibatch_size: minibatch size of each SGD step.
      num_sgd_iter: epochs over the train batch per update.
      adam_epsilon: Adam's epsilon.
      lr_annealing: decay the learning rate linearly to 0 over ``lr_annealing_timesteps``.
      lr_annealing_timesteps: env steps over which ``lr_annealing`` decays.
      normalize_advantages: standardize advantages over the train batch.
    """

    lr: float = field(3e-4, gt=0.0)
    train_batch_size: int = field(4000, min=1)
    rollout_fragment_length: int = field(200, min=1)
    lambda_: float = field(0.95, key="lambda", min=0.0, max=1.0)
    use_gae: bool = True
    clip_param: float = field(0.2, gt=0.0)
    vf_clip_param: float | None = field(10.0, gt=0.0)
    vf_loss_coeff: float = field(0.5, min=0.0)
    entropy_coeff: float = field(0.0, min=0.0)
    kl_coeff: float = field(0.0, min=0.0)
    kl_target: float = field(0.01, gt=0.0)
    sgd_minibatch_size: int = field(128, min=1)
    num_sgd_iter: int = field(10, min=1)
    adam_epsilon: float = field(1e-5, gt=0.0)
    lr_annealing: bool = False
    lr_annealing_timesteps: int = field(1_000_000, min=1)
    normalize_advantages: bool = True

    def validate(self) -> None:
        check_on_policy_input(self, "PPO")
        if self.sgd_minibatch_size > self.train_batch_size:
            raise ConfigError(f"config key 'sgd_minibatch_size' ({self.sgd_minibatch_size}) must "
                              f"be <= train_batch_size ({self.train_batch_size})")


DEFAULT_CONFIG: dict[str, Any] = to_dict(PPOConfig())


class PPOState(NamedTuple):
    """Learner state of PPO (and APPO): ``jrl.types.LearnerState``'s arrays plus the KL weight.

    Attributes:
      params, opt_state, key, obs_filter, num_updates, env_steps: as in
        ``jrl.types.LearnerState`` (``key`` draws the SGD shuffles).
      kl_coeff: current weight of the KL penalty, float32 ``[]``.
    """

    params: Any
    opt_state: Any
    key: jax.Array
    obs_filter: FilterState
    kl_coeff: jax.Array
    num_updates: jax.Array
    env_steps: jax.Array


PPOPolicy = NetworkPolicy  # what act needs: network params and filter statistics


def ppo_loss(dist, value, batch: dict, old_dist, config: PPOConfig, kl_coeff: jax.Array,
             mask: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Clipped surrogate + (clipped) value loss - entropy bonus + KL penalty, for ``[N]`` samples.

    Args:
      dist: current action distribution.
      value: current value predictions ``[N]``.
      batch: ``actions``, ``behaviour_logp``, ``advantages``, ``value_targets``, ``old_values``.
      old_dist: the distribution the batch was evaluated with at the start of the update
        (``None`` without a KL penalty: ``kl`` is then the sample estimate from
        ``behaviour_logp``).
      config: PPO config (clip params and coefficients).
      kl_coeff: current KL penalty weight.
      mask: 1 at valid samples, 0 at the padding of sequences ``[N]`` (``None``: all valid);
        every mean runs over the valid samples only.
    """
    logp = dist.log_prob(batch["actions"])
    chex.assert_equal_shape([logp, batch["advantages"]])
    policy_loss, clip_frac = clipped_surrogate_loss(
        jnp.exp(logp - batch["behaviour_logp"]), batch["advantages"], config.clip_param, mask)
    vf_error = jnp.square(value - batch["value_targets"])
    if config.vf_clip_param is not None:
        clipped_value = batch["old_values"] + jnp.clip(
            value - batch["old_values"], -config.vf_clip_param, config.vf_clip_param)
        vf_error = jnp.maximum(vf_error, jnp.square(clipped_value - batch["value_targets"]))
    vf_loss = 0.5 * masked_mean(vf_error, mask)
    entropy = masked_mean(dist.entropy(), mask)
    if old_dist is None:
        # No KL penalty: report the sample estimate E_old[log pi_old - log pi] instead of the
        # exact KL, so the update needs no pass of the old policy over the batch.
        kl = jax.lax.stop_gradient(masked_mean(batch["behaviour_logp"] - logp, mask))
    else:
        kl = masked_mean(old_dist.kl(dist), mask)
    total = (policy_loss + config.vf_loss_coeff * vf_loss - config.entropy_coeff * entropy
             + kl_coeff * kl)
    return total, {"total_loss": total, "policy_loss": policy_loss, "vf_loss": vf_loss,
                   "entropy": entropy, "kl": kl, "clip_frac": clip_frac}


def surrogate_epochs(state: PPOState, loss_fn: Callable, data: dict, optimizer: Any, *,
                     num_epochs: int, minibatch_size: int, kl_target: float | None,
                     axis_name: str | None) -> tuple[PPOState, dict[str, jax.Array]]:
    """The SGD of PPO and APPO, with the adaptive KL penalty's weight update.

    ``num_epochs`` epochs of shuffled minibatch steps on ``loss_fn(params, minibatch) ->
    (loss, stats)`` (``toolkit.sgd_epochs``), then the KL weight adapted towards ``kl_target``
    from the mean of the steps' ``kl`` (``None``: the weight stays).

    Returns:
      ``state`` with the new params, optimizer state, key and KL weight (filter statistics and
      counters as they were), and the steps' stats averaged over steps and devices, with
      ``cur_kl_coeff``.
    """
    (params, opt_state), stats, key = toolkit.sgd_epochs(
        toolkit.sgd_step(loss_fn, optimizer, axis_name), (state.params, state.opt_state), data,
        state.key, num_epochs=num_epochs, minibatch_size=minibatch_size)
    stats = pmean(stats, axis_name)
    kl_coeff = state.kl_coeff
    if kl_target is not None:
        kl_coeff = toolkit.adaptive_kl_coeff(kl_coeff, stats["kl"], kl_target)
    stats["cur_kl_coeff"] = kl_coeff
    return state._replace(params=params, opt_state=opt_state, key=key, kl_coeff=kl_coeff), stats


def make_ppo(config: PPOConfig, networks: Any = None, spec: EnvSpec | None = None,
             axis_name: str | None = None) -> Algorithm:
    """Builds PPO's ``Algorithm`` for ``spec``; ``networks`` defaults to the catalog's actor-critic.

    With ``axis_name`` the returned ``update`` is meant to run under ``pmap`` over that axis with
    the batch split along its env axis: gradients, advantage statistics, filter statistics and
    metrics are averaged across devices, so the result equals the single-device update.
    """
    if spec is None:
        raise ConfigError("make_ppo needs the env spec")
    recurrent = config.model.recurrent and networks is None
    fns = (toolkit.make_recurrent_fns(spec, config.model, config.observation_filter) if recurrent
           else toolkit.make_actor_critic_fns(spec, config.model, config.observation_filter,
                                              networks))
    if config.lr_annealing:
        # Updates per env step are fixed by the config, so the schedule is in optimizer steps.
        steps_per_update = config.num_sgd_iter * max(
            1, config.train_batch_size // config.sgd_minibatch_size)
        total = max(1, config.lr_annealing_timesteps // config.train_batch_size) * steps_per_update
        lr_schedule = optax.linear_schedule(config.lr, 0.0, total)
    else:
        steps_per_update = 0
        lr_schedule = optax.constant_schedule(config.lr)
    optimizer = toolkit.make_optimizer(lr_schedule, grad_clip=config.grad_clip,
                                       eps=config.adam_epsilon)

    # Recorded rows end (truncated) anywhere, not only at the env's time limit.
    time_limit = spec.max_episode_steps if config.input == "sampler" else None

    def init(key: jax.Array) -> PPOState:
        state = toolkit.init_learner_state(key, fns.init_params, optimizer, fns.obs_filter,
                                           spec.obs_shape)
        return PPOState(**state._asdict(), kl_coeff=jnp.asarray(config.kl_coeff, jnp.float32))

    def update(state: PPOState, batch: Transition) -> tuple[PPOState, dict[str, jax.Array]]:
        T, B = batch.reward.shape
        flat = lambda x: x.reshape((T * B, *x.shape[2:]))  # noqa: E731
        obs = flat(batch.obs)
        old_dist, values = fns.forward(state.params, state.obs_filter, obs)
        bootstrap = next_values(
            values.reshape(T, B), batch.next_obs, batch.truncated,
            lambda o: fns.forward(state.params, state.obs_filter, o)[1], time_limit)
        lambda_ = config.lambda_ if config.use_gae else 1.0
        advantages, value_targets = gae(
            batch.reward, values.reshape(T, B), bootstrap,
            batch.terminated, batch.truncated, config.gamma, lambda_)
        advantages, value_targets = flat(advantages), flat(value_targets)
        if config.normalize_advantages:
            advantages = toolkit.normalize_advantages(advantages, axis_name)
        data = {"obs": obs, "actions": flat(batch.action), "behaviour_logp": flat(
            batch.behaviour_logp), "advantages": advantages, "value_targets": value_targets,
            "old_values": values}
        if config.kl_coeff > 0:
            data["old_dist"] = old_dist

        def loss_fn(params, minibatch):
            dist, value = fns.forward(params, state.obs_filter, minibatch["obs"])
            return ppo_loss(dist, value, minibatch, minibatch.get("old_dist"), config,
                            state.kl_coeff)

        trained, stats = surrogate_epochs(
            state, loss_fn, data, optimizer, num_epochs=config.num_sgd_iter,
            minibatch_size=config.sgd_minibatch_size,
            kl_target=config.kl_target if config.kl_coeff > 0 else None, axis_name=axis_name)
        stats.update(vf_explained_var=toolkit.explained_variance(value_targets, values, axis_name),
                     cur_lr=lr_schedule(state.num_updates * steps_per_update))
        obs_filter = fns.obs_filter.update(state.obs_filter, all_gather(obs, axis_name))
        return toolkit.advance_learner_state(trained, obs_filter=obs_filter,
                                             env_steps=T * B * num_devices(axis_name)), stats

    def recurrent_update(state: PPOState, batch: Transition
                         ) -> tuple[PPOState, dict[str, jax.Array]]:
        # Values and advantages over the whole [T, B] batch (so the normalization sees valid
        # steps only), then SGD on minibatches of whole max_seq_len sequences.
        T, B = batch.reward.shape
        seqs, values, bootstrap, _ = fns.evaluate(state.params, state.obs_filter, batch)
        lambda_ = config.lambda_ if config.use_gae else 1.0
        advantages, value_targets = gae(batch.reward, values, bootstrap, batch.terminated,
                                        batch.truncated, config.gamma, lambda_)
        if config.normalize_advantages:
            advantages = toolkit.normalize_advantages(advantages, axis_name)
        L = seqs.mask.shape[0]
        data = toolkit.sequence_data({
            "actions": batch.action, "behaviour_logp": batch.behaviour_logp,
            "advantages": advantages, "value_targets": value_targets, "old_values": values},
            T, L)
        data["inputs"] = toolkit.time_major(seqs.features)
        data["mask"] = seqs.mask.T
        data["state"] = seqs.initial_state
        if config.kl_coeff > 0:
            old_dist, _, _ = fns.unroll(state.params, state.obs_filter, seqs.features,
                                        seqs.initial_state)
            data["old_dist"] = jax.tree.map(
                lambda x: jnp.swapaxes(x.reshape((L, -1, *x.shape[1:])), 0, 1), old_dist)

        def loss_fn(params, minibatch):
            columns = toolkit.time_major({k: v for k, v in minibatch.items() if k != "state"})
            dist, value, _ = fns.unroll(params, state.obs_filter, columns["inputs"],
                                        minibatch["state"])
            flat = jax.tree.map(toolkit.flatten_time, columns)
            return ppo_loss(dist, value, flat, flat.get("old_dist"), config, state.kl_coeff,
                            mask=flat["mask"])

        trained, stats = surrogate_epochs(
            state, loss_fn, data, optimizer, num_epochs=config.num_sgd_iter,
            minibatch_size=max(1, config.sgd_minibatch_size // L),
            kl_target=config.kl_target if config.kl_coeff > 0 else None, axis_name=axis_name)
        stats.update(vf_explained_var=toolkit.explained_variance(value_targets, values, axis_name),
                     cur_lr=lr_schedule(state.num_updates * steps_per_update))
        obs = batch.obs.reshape((T * B, *batch.obs.shape[2:]))
        obs_filter = fns.obs_filter.update(state.obs_filter, all_gather(obs, axis_name))
        return toolkit.advance_learner_state(trained, obs_filter=obs_filter,
                                             env_steps=T * B * num_devices(axis_name)), stats

    if recurrent:
        return Algorithm(init=init, update=recurrent_update, act=fns.act,
                         policy=toolkit.network_policy, name="PPO", recurrent=fns.recurrent)
    return Algorithm(init=init, update=update, act=fns.act, policy=toolkit.network_policy,
                     name="PPO")


ALGORITHM_DEF = AlgorithmDef(
    name="PPO",
    config_class=PPOConfig,
    make=make_ppo,
    plan="on_policy",
    example_batch=train_batch_example,
    recurrent=True,
    action_logp=toolkit.actor_critic_action_logp,
)
__getattr__ = registry.trainer_class_getattr(__name__, "PPO")
