"""Soft Actor-Critic (Haarnoja et al., 2018) for box and discrete action spaces.

Box actions: a tanh-squashed Gaussian policy scaled to the action box, twin critics
``Q(s, a)``, and the entropy temperature ``alpha`` tuned to ``target_entropy``. Discrete actions
(Christodoulou, 2019): the policy gives every action's probability and the critics every
action's value, so the expectations over actions in the targets and losses are exact sums.
Targets follow the critics by Polyak averaging (``tau``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jrl import registry
from jrl.algorithms import toolkit
from jrl.algorithms.examples import replay_example
from jrl.algorithms.replay_ac import (
    ReplayActorCriticConfig,
    StochasticSamplingConfig,
    polyak,
    random_actions,
    target_update_due,
    weighted_critic_loss,
)
from jrl.config import ModelConfig, field, to_dict
from jrl.errors import ConfigError
from jrl.networks import catalog
from jrl.networks.continuous import GaussianActor, QEnsemble, action_bounds
from jrl.networks.distributions import Categorical, SquashedGaussian
from jrl.ops.filters import FilterState, get_filter
from jrl.ops.parallel import per_device_key, pmean
from jrl.ops.td import twin_q_target
from jrl.replay.uniform import n_step_items
from jrl.types import Algorithm, AlgorithmDef, EnvSpec, ReplayBatch, Transition


def _relu_mlp() -> ModelConfig:
    return ModelConfig(fcnet_hiddens=(256, 256), fcnet_activation="relu")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SACOptimizationConfig:
    """SAC's three learning rates (RLlib's ``optimization`` dict).

    Attributes:
      actor_learning_rate: policy learning rate.
      critic_learning_rate: critics' learning rate.
      entropy_learning_rate: learning rate of ``log alpha``.
    """

    actor_learning_rate: float = field(3e-4, gt=0.0)
    critic_learning_rate: float = field(3e-4, gt=0.0)
    entropy_learning_rate: float = field(3e-4, gt=0.0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SACConfig(ReplayActorCriticConfig):
    """SAC settings (RLlib names) on top of the common and replay ones.

    Attributes:
      Q_model: critic network (``fcnet_hiddens``, ``fcnet_activation``).
      policy_model: policy network (``fcnet_hiddens``, ``fcnet_activation``).
      optimization: actor, critic and entropy learning rates.
      initial_alpha: starting entropy temperature.
      target_entropy: ``"auto"`` (``-action_dim`` measured in the ``[-1, 1]``-normalized
        action box; ``0.98 log(num_actions)`` for discrete actions) or a number (in the
        env's action units).
      exploration_config: sample the policy, after ``random_timesteps`` uniform actions.
    """

    q_model: ModelConfig = field(key="Q_model", default_factory=_relu_mlp)
    policy_model: ModelConfig = field(default_factory=_relu_mlp)
    optimization: SACOptimizationConfig = dataclasses.field(
        default_factory=SACOptimizationConfig)
    initial_alpha: float = field(1.0, gt=0.0)
    target_entropy: float | str = "auto"
    exploration_config: StochasticSamplingConfig = dataclasses.field(
        default_factory=StochasticSamplingConfig)

    def validate(self) -> None:
        super().validate()
        if isinstance(self.target_entropy, str) and self.target_entropy != "auto":
            raise ConfigError(f"config key 'target_entropy' must be 'auto' or a number, got "
                              f"{self.target_entropy!r}")


DEFAULT_CONFIG: dict[str, Any] = to_dict(SACConfig())


class SACState(NamedTuple):
    """Learner state of SAC: arrays only.

    Attributes:
      params: ``{"actor": ..., "critic": ...}``, pytrees of float32 arrays (the critic holds
        ``num_q`` stacked critics).
      target_params: the target critics' parameters, structured like ``params["critic"]``.
      log_alpha: log of the entropy temperature, float32 ``[]``.
      actor_opt_state: the policy's Adam state (int32 ``[]`` step count, float32 moments).
      critic_opt_state: the critics' Adam state.
      alpha_opt_state: ``log_alpha``'s Adam state.
      key: PRNG key of the policy samples in the update, ``uint32 [2]``.
      obs_filter: observation statistics, ``FilterState`` (float32 ``[]`` count, ``[*obs]``
        mean and m2).
      num_updates: learner updates so far, int32 ``[]``.
      env_steps: env steps sampled so far (set by the plan), int32 ``[]``.
      last_target_update: ``env_steps`` at the last target update, int32 ``[]``.
    """

    params: Any
    target_params: Any
    log_alpha: jax.Array
    actor_opt_state: Any
    critic_opt_state: Any
    alpha_opt_state: Any
    key: jax.Array
    obs_filter: FilterState
    num_updates: jax.Array
    env_steps: jax.Array
    last_target_update: jax.Array


class SACPolicy(NamedTuple):
    """What SAC's ``act`` needs.

    Attributes:
      params: the policy network's parameters.
      obs_filter: observation statistics, ``FilterState``.
      random_actions: take uniformly random actions (warm-up), bool ``[]``.
    """

    params: Any
    obs_filter: FilterState
    random_actions: jax.Array


def auto_target_entropy(spec: EnvSpec) -> float:
    """``0.98 log(A)`` for discrete actions; for a box, ``-action_dim`` in the normalized
    ``[-1, 1]`` box, i.e. ``-action_dim + sum(log(half_range))`` in the env's units."""
    if spec.discrete:
        return 0.98 * math.log(spec.num_actions)
    low, high = action_bounds(spec)
    return float(np.sum(np.log(0.5 * (high - low))) - low.size)


def sac_actor_loss(logp: jax.Array, q: jax.Array, alpha: jax.Array) -> jax.Array:
    """``mean(alpha * log pi(a|s) - min_i Q_i(s, a))`` over ``[N]`` sampled actions."""
    chex.assert_rank([logp, q], [1, 2])
    return jnp.mean(alpha * logp - jnp.min(q, axis=0))


def sac_alpha_loss(log_alpha: jax.Array, logp: jax.Array, target_entropy: float) -> jax.Array:
    """``-log_alpha * (log pi + target_entropy)``, averaged: alpha grows when the policy's
    entropy ``-log pi`` falls below the target."""
    chex.assert_rank(logp, 1)
    return -jnp.mean(log_alpha * jax.lax.stop_gradient(logp + target_entropy))


def make_networks(config: SACConfig, spec: EnvSpec) -> tuple[GaussianActor, QEnsemble]:
    """The policy network and the critics (two with ``twin_q``) for ``spec``."""
    actor = GaussianActor(spec, tuple(int(h) for h in config.policy_model.fcnet_hiddens),
                          config.policy_model.fcnet_activation)
    critic = QEnsemble(spec, tuple(int(h) for h in config.q_model.fcnet_hiddens),
                       config.q_model.fcnet_activation, num_q=2 if config.twin_q else 1)
    return actor, critic


def make_sac(config: SACConfig, networks: Any = None, spec: EnvSpec | None = None,
             axis_name: str | None = None) -> Algorithm:
    """Builds SAC's ``Algorithm`` for ``spec`` (box or discrete actions).

    ``networks`` is a ``(policy, critic)`` pair (default: ``make_networks``). With ``axis_name``
    the update averages gradients and metrics over that ``pmap`` axis.
    """
    if spec is None:
        raise ConfigError("make_sac needs the env spec")
    catalog.reject_custom_model(config.model, "SAC")
    catalog.reject_action_mask(spec, "SAC")
    if not (spec.discrete or spec.continuous):
        raise ConfigError(f"SAC needs a Discrete or Box action space, got a {spec.action_kind} "
                          "one; use PPO, A2C, PG, IMPALA or APPO")
    actor, critic = networks if networks is not None else make_networks(config, spec)
    discrete = spec.discrete
    obs_filter = get_filter(config.observation_filter)
    opt = config.optimization
    actor_opt = toolkit.make_optimizer(opt.actor_learning_rate, grad_clip=config.grad_clip)
    critic_opt = toolkit.make_optimizer(opt.critic_learning_rate, grad_clip=config.grad_clip)
    alpha_opt = toolkit.make_optimizer(opt.entropy_learning_rate)
    target_entropy = (auto_target_entropy(spec) if config.target_entropy == "auto"
                      else float(config.target_entropy))
    if not discrete:
        low, high = action_bounds(spec)

    def dist(actor_params, obs):
        out = actor.apply(actor_params, obs)
        return Categorical(out) if discrete else SquashedGaussian(*out, low, high)

    def init(key: jax.Array) -> SACState:
        key, actor_key, critic_key = jax.random.split(key, 3)
        obs = jnp.zeros((1, *spec.obs_shape), spec.obs_dtype)
        params = {"actor": actor.init(actor_key, obs),
                  "critic": critic.init(critic_key, obs,
                                        None if discrete else jnp.zeros((1, *spec.action_shape)))}
        log_alpha = jnp.asarray(math.log(config.initial_alpha), jnp.float32)
        zero = jnp.zeros((), jnp.int32)
        return SACState(params=params, target_params=params["critic"], log_alpha=log_alpha,
                        actor_opt_state=actor_opt.init(params["actor"]),
                        critic_opt_state=critic_opt.init(params["critic"]),
                        alpha_opt_state=alpha_opt.init(log_alpha), key=key,
                        obs_filter=obs_filter.init(spec.obs_shape), num_updates=zero,
                        env_steps=zero, last_target_update=zero)

    def policy(state: SACState) -> SACPolicy:
        return SACPolicy(state.params["actor"], state.obs_filter,
                         state.env_steps < config.exploration_config.random_timesteps)

    def act(policy: SACPolicy, obs: jax.Array, key: jax.Array, explore: bool = True):
        d = dist(policy.params, obs_filter.apply(policy.obs_filter, obs))
        if not explore:
            return d.mode(), {}
        sample_key, random_key = jax.random.split(key)
        action = d.sample(sample_key)
        if discrete:
            uniform = jax.random.randint(random_key, action.shape, 0, spec.num_actions)
        else:
            uniform = random_actions(spec, random_key, obs.shape[0])
        return jnp.where(policy.random_actions, uniform, action), {}

    def soft_target(state, next_obs, batch, alpha, key):
        """``r + discount * E_a'[min_i Q_target_i(s', a') - alpha log pi(a'|s')]`` ``[N]``."""
        d = dist(state.params["actor"], next_obs)
        if discrete:
            q_t = critic.apply(state.target_params, next_obs)  # [num_q, N, A]
            probs, logp = d.probs, d.log_probs
            v_t = jnp.sum(probs * (jnp.min(q_t, axis=0) - alpha * logp), axis=-1)
            return jax.lax.stop_gradient(batch.reward + batch.discount * v_t)
        next_action, logp = d.sample_and_log_prob(key)
        q_t = critic.apply(state.target_params, next_obs, next_action)  # [num_q, N]
        return jax.vmap(twin_q_target, in_axes=(0, 0, 1, 0))(batch.reward, batch.discount, q_t,
                                                             -alpha * logp)

    def critic_loss_fn(critic_params, obs, batch: ReplayBatch, target):
        if discrete:
            q_all = critic.apply(critic_params, obs)  # [num_q, N, A]
            q_tm1 = jnp.take_along_axis(
                q_all, batch.action.astype(jnp.int32)[None, :, None], axis=-1)[..., 0]
        else:
            q_tm1 = critic.apply(critic_params, obs, batch.action)
        loss, td = weighted_critic_loss(q_tm1, target, batch.weight)
        return loss, (td, q_tm1)

    def actor_loss_fn(actor_params, critic_params, obs, alpha, key):
        d = dist(actor_params, obs)
        if discrete:
            q = jnp.min(critic.apply(critic_params, obs), axis=0)  # [N, A]
            probs, logp_all = d.probs, d.log_probs
            loss = jnp.mean(jnp.sum(probs * (alpha * logp_all - q), axis=-1))
            return loss, jnp.sum(probs * logp_all, axis=-1)  # E[log pi], exact
        action, logp = d.sample_and_log_prob(key)
        return sac_actor_loss(logp, critic.apply(critic_params, obs, action), alpha), logp

    critic_step = toolkit.gradient_step(critic_loss_fn, critic_opt, axis_name, has_aux=True)
    actor_step = toolkit.gradient_step(actor_loss_fn, actor_opt, axis_name, has_aux=True)
    alpha_step = toolkit.gradient_step(sac_alpha_loss, alpha_opt, axis_name)

    def update(state: SACState, batch: ReplayBatch) -> tuple[SACState, dict[str, jax.Array]]:
        key, noise_key = jax.random.split(state.key)  # ``key`` stays equal on every device
        next_key, pi_key = jax.random.split(per_device_key(noise_key, axis_name))
        obs = obs_filter.apply(state.obs_filter, batch.obs)
        next_obs = obs_filter.apply(state.obs_filter, batch.next_obs)
        alpha = jnp.exp(state.log_alpha)
        target = soft_target(state, next_obs, batch, alpha, next_key)

        critic_params, critic_opt_state, (c_loss, (td, q_tm1)), c_grads = critic_step(
            state.params["critic"], state.critic_opt_state, obs, batch, target)
        actor_params, actor_opt_state, (a_loss, logp), _ = actor_step(
            state.params["actor"], state.actor_opt_state, critic_params, obs, alpha, pi_key)
        log_alpha, alpha_opt_state, alpha_loss, _ = alpha_step(
            state.log_alpha, state.alpha_opt_state, logp, target_entropy)

        due = target_update_due(state.env_steps, state.last_target_update,
                                config.target_network_update_freq)
        new_state = state._replace(
            params={"actor": actor_params, "critic": critic_params},
            target_params=polyak(state.target_params, critic_params, config.tau, due),
            log_alpha=log_alpha, actor_opt_state=actor_opt_state,
            critic_opt_state=critic_opt_state, alpha_opt_state=alpha_opt_state, key=key,
            num_updates=state.num_updates + 1,
            last_target_update=jnp.where(due, state.env_steps, state.last_target_update))
        metrics = {"critic_loss": c_loss, "actor_loss": a_loss, "alpha_loss": alpha_loss,
                   "alpha_value": alpha, "log_alpha_value": state.log_alpha,
                   "target_entropy": jnp.asarray(target_entropy, jnp.float32),
                   "entropy": -jnp.mean(logp), "mean_q": jnp.mean(q_tm1),
                   "max_q": jnp.max(q_tm1), "min_q": jnp.min(q_tm1),
                   "mean_td_error": jnp.mean(td), "critic_grad_gnorm": optax.tree.norm(c_grads)}
        metrics = pmean(metrics, axis_name)
        metrics["td_error"] = td
        return new_state, metrics

    return Algorithm(init=init, update=update, act=act, policy=policy, name="SAC")


def postprocess(config: SACConfig, fragment: Transition) -> ReplayBatch:
    """n-step replay items ``[T * B]`` from a time-major ``[T, B]`` fragment (pure, jittable)."""
    return n_step_items(fragment, config.gamma, config.n_step)


def q_function(config: SACConfig, spec: EnvSpec):
    """The first critic on filtered observations: ``fn(params, obs, actions) -> Q [N]`` for box
    actions, ``fn(params, obs, None) -> Q [N, A]`` for discrete ones."""
    _, critic = make_networks(config, spec)
    if spec.discrete:
        return lambda params, obs, actions: critic.apply(params["critic"], obs)[0]
    return lambda params, obs, actions: critic.apply(params["critic"], obs, actions)[0]


ALGORITHM_DEF = AlgorithmDef(
    name="SAC",
    config_class=SACConfig,
    make=make_sac,
    plan="off_policy",
    example_batch=replay_example(postprocess),
    model="actor_q",
    postprocess=postprocess,
    q_function=q_function,
)
__getattr__ = registry.trainer_class_getattr(__name__, "SAC")
