"""Deep Deterministic Policy Gradient (Lillicrap et al., 2016), and the pieces TD3 switches on.

A deterministic actor ``mu(s)`` (tanh scaled to the action box) and critics ``Q(s, a)`` learn from
n-step replay items. TD3 (Fujimoto et al., 2018) is this algorithm with twin critics
(``twin_q``), delayed actor and target updates (``policy_delay``) and target policy smoothing
(``smooth_target_policy``); ``jrl.algorithms.td3`` only changes the defaults, as RLlib does.
Targets follow the online networks by Polyak averaging (``tau``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from jrl import registry
from jrl.algorithms import toolkit
from jrl.algorithms.examples import replay_example
from jrl.algorithms.replay_ac import (
    GaussianNoiseConfig,
    ReplayActorCriticConfig,
    polyak,
    random_actions,
    require_continuous,
    target_update_due,
    weighted_critic_loss,
)
from jrl.config import field, to_dict
from jrl.networks import catalog
from jrl.networks.continuous import DeterministicActor, QEnsemble, action_bounds
from jrl.ops.filters import FilterState, get_filter
from jrl.ops.losses import huber_loss, l2_loss
from jrl.ops.parallel import per_device_key, pmean
from jrl.ops.td import twin_q_target
from jrl.replay.uniform import n_step_items
from jrl.types import Algorithm, AlgorithmDef, EnvSpec, ReplayBatch, Transition

_ACTIVATIONS = ("relu", "tanh", "swish", "elu", "gelu", "linear")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DDPGConfig(ReplayActorCriticConfig):
    """DDPG settings (RLlib names) on top of the common and replay ones.

    Attributes:
      actor_hiddens: hidden layers of the actor.
      actor_hidden_activation: their activation.
      critic_hiddens: hidden layers of each critic.
      critic_hidden_activation: their activation.
      actor_lr: actor learning rate.
      critic_lr: critic learning rate.
      policy_delay: update the actor (and the targets) once every this many critic updates.
      smooth_target_policy: add clipped Gaussian noise to the target actor's action.
      target_noise: its standard deviation, in units of half the action range.
      target_noise_clip: its clip, in the same units.
      use_huber: Huber instead of squared critic loss.
      huber_threshold: where the Huber loss turns linear.
      exploration_config: Gaussian action noise and random warm-up steps.
    """

    actor_hiddens: tuple[int, ...] = (400, 300)
    actor_hidden_activation: str = field("relu", choices=_ACTIVATIONS)
    critic_hiddens: tuple[int, ...] = (400, 300)
    critic_hidden_activation: str = field("relu", choices=_ACTIVATIONS)
    actor_lr: float = field(1e-3, gt=0.0)
    critic_lr: float = field(1e-3, gt=0.0)
    tau: float = field(0.002, min=0.0, max=1.0)
    twin_q: bool = False
    policy_delay: int = field(1, min=1)
    smooth_target_policy: bool = False
    target_noise: float = field(0.2, min=0.0)
    target_noise_clip: float = field(0.5, min=0.0)
    use_huber: bool = False
    huber_threshold: float = field(1.0, gt=0.0)
    exploration_config: GaussianNoiseConfig = dataclasses.field(
        default_factory=GaussianNoiseConfig)


DEFAULT_CONFIG: dict[str, Any] = to_dict(DDPGConfig())


class DDPGState(NamedTuple):
    """Learner state of DDPG (and TD3, APEX_DDPG): arrays only.

    Attributes:
      params: ``{"actor": ..., "critic": ...}``, pytrees of float32 arrays (the critic holds
        ``num_q`` stacked critics).
      target_params: the target networks' parameters, same structure as ``params``.
      actor_opt_state: the actor's Adam state (int32 ``[]`` step count, float32 moments).
      critic_opt_state: the critics' Adam state.
      key: PRNG key of the target policy smoothing noise, ``uint32 [2]``.
      obs_filter: observation statistics, ``FilterState`` (float32 ``[]`` count, ``[*obs]``
        mean and m2).
      num_updates: critic updates so far, int32 ``[]``.
      env_steps: env steps sampled so far (set by the plan), int32 ``[]``.
      last_target_update: ``env_steps`` at the last target update, int32 ``[]``.
    """

    params: Any
    target_params: Any
    actor_opt_state: Any
    critic_opt_state: Any
    key: jax.Array
    obs_filter: FilterState
    num_updates: jax.Array
    env_steps: jax.Array
    last_target_update: jax.Array


class DDPGPolicy(NamedTuple):
    """What DDPG's ``act`` needs.

    Attributes:
      params: the actor's parameters.
      obs_filter: observation statistics, ``FilterState``.
      noise_scale: standard deviation of the Gaussian action noise in units of half the
        action range, float32 ``[]``.
      random_actions: take uniformly random actions (warm-up), bool ``[]``.
    """

    params: Any
    obs_filter: FilterState
    noise_scale: jax.Array
    random_actions: jax.Array


def smoothed_target_action(action: jax.Array, key: jax.Array, noise: float, noise_clip: float,
                           low: Any, high: Any) -> jax.Array:
    """TD3's target policy smoothing: ``clip(a + clip(eps, -c, c), low, high)``.

    ``eps ~ N(0, noise)`` and ``c = noise_clip`` are in units of half the action range.
    """
    half = 0.5 * (jnp.asarray(high) - jnp.asarray(low))
    eps = jnp.clip(noise * jax.random.normal(key, action.shape), -noise_clip, noise_clip)
    return jnp.clip(action + eps * half, low, high)


def make_networks(config: DDPGConfig, spec: EnvSpec) -> tuple[DeterministicActor, QEnsemble]:
    """The actor and the critics (two with ``twin_q``) for ``spec``."""
    actor = DeterministicActor(spec, tuple(int(h) for h in config.actor_hiddens),
                               config.actor_hidden_activation)
    critic = QEnsemble(spec, tuple(int(h) for h in config.critic_hiddens),
                       config.critic_hidden_activation, num_q=2 if config.twin_q else 1)
    return actor, critic


def noise_scale_at(exploration: GaussianNoiseConfig, env_steps: jax.Array) -> jax.Array:
    """Exploration noise standard deviation (half-range units) after ``env_steps``."""
    scale = optax.linear_schedule(exploration.initial_scale, exploration.final_scale,
                                  exploration.scale_timesteps)(
        jnp.maximum(env_steps - exploration.random_timesteps, 0))
    return exploration.stddev * scale


def make_ddpg(config: DDPGConfig, networks: Any = None, spec: EnvSpec | None = None,
              axis_name: str | None = None, name: str = "DDPG") -> Algorithm:
    """Builds DDPG's ``Algorithm`` (TD3's with TD3 settings) for a box action ``spec``.

    ``networks`` is an ``(actor, critic)`` pair (default: ``make_networks``). With ``axis_name``
    the update averages gradients and metrics over that ``pmap`` axis.
    """
    spec = require_continuous(spec, name)
    catalog.reject_custom_model(config.model, name)
    actor, critic = networks if networks is not None else make_networks(config, spec)
    low, high = action_bounds(spec)
    obs_filter = get_filter(config.observation_filter)
    actor_opt = toolkit.make_optimizer(config.actor_lr, grad_clip=config.grad_clip)
    critic_opt = toolkit.make_optimizer(config.critic_lr, grad_clip=config.grad_clip)
    elementwise = ((lambda td: huber_loss(td, config.huber_threshold)) if config.use_huber
                   else l2_loss)
    exploration = config.exploration_config

    def critic_loss_fn(critic_params, obs, batch: ReplayBatch, target):
        q_tm1 = critic.apply(critic_params, obs, batch.action)
        loss, td = weighted_critic_loss(q_tm1, target, batch.weight, elementwise)
        return loss, (td, q_tm1)

    def actor_loss_fn(actor_params, critic_params, obs):
        q = critic.apply(critic_params, obs, actor.apply(actor_params, obs))
        return -jnp.mean(q[0])

    critic_step = toolkit.gradient_step(critic_loss_fn, critic_opt, axis_name, has_aux=True)
    actor_step = toolkit.gradient_step(actor_loss_fn, actor_opt, axis_name)

    def init(key: jax.Array) -> DDPGState:
        key, actor_key, critic_key = jax.random.split(key, 3)
        obs = jnp.zeros((1, *spec.obs_shape), spec.obs_dtype)
        params = {"actor": actor.init(actor_key, obs),
                  "critic": critic.init(critic_key, obs, jnp.zeros((1, *spec.action_shape)))}
        zero = jnp.zeros((), jnp.int32)
        return DDPGState(params=params, target_params=params,
                         actor_opt_state=actor_opt.init(params["actor"]),
                         critic_opt_state=critic_opt.init(params["critic"]), key=key,
                         obs_filter=obs_filter.init(spec.obs_shape), num_updates=zero,
                         env_steps=zero, last_target_update=zero)

    def policy(state: DDPGState) -> DDPGPolicy:
        return DDPGPolicy(state.params["actor"], state.obs_filter,
                          noise_scale_at(exploration, state.env_steps),
                          state.env_steps < exploration.random_timesteps)

    def act(policy: DDPGPolicy, obs: jax.Array, key: jax.Array, explore: bool = True):
        action = actor.apply(policy.params, obs_filter.apply(policy.obs_filter, obs))
        if not explore:
            return action, {}
        noise_key, random_key = jax.random.split(key)
        half = 0.5 * (high - low)
        noisy = jnp.clip(action + policy.noise_scale * half
                         * jax.random.normal(noise_key, action.shape), low, high)
        uniform = random_actions(spec, random_key, obs.shape[0])
        return jnp.where(policy.random_actions, uniform, noisy), {}

    def update(state: DDPGState, batch: ReplayBatch) -> tuple[DDPGState, dict[str, jax.Array]]:
        key, noise_key = jax.random.split(state.key)
        noise_key = per_device_key(noise_key, axis_name)
        obs = obs_filter.apply(state.obs_filter, batch.obs)
        next_obs = obs_filter.apply(state.obs_filter, batch.next_obs)
        next_action = actor.apply(state.target_params["actor"], next_obs)
        if config.smooth_target_policy:
            next_action = smoothed_target_action(next_action, noise_key, config.target_noise,
                                                 config.target_noise_clip, low, high)
        q_t = critic.apply(state.target_params["critic"], next_obs, next_action)
        target = jax.vmap(twin_q_target, in_axes=(0, 0, 1))(batch.reward, batch.discount, q_t)
        critic_params, critic_opt_state, (c_loss, (td, q_tm1)), c_grads = critic_step(
            state.params["critic"], state.critic_opt_state, obs, batch, target)

        def actor_update(_):
            params, opt_state, a_loss, _ = actor_step(
                state.params["actor"], state.actor_opt_state, critic_params, obs)
            return params, opt_state, a_loss

        def skip(_):
            return state.params["actor"], state.actor_opt_state, jnp.zeros((), jnp.float32)

        actor_due = state.num_updates % config.policy_delay == 0
        if config.policy_delay == 1:
            actor_params, actor_opt_state, a_loss = actor_update(None)
        else:
            actor_params, actor_opt_state, a_loss = jax.lax.cond(actor_due, actor_update, skip,
                                                                 None)
        params = {"actor": actor_params, "critic": critic_params}
        due = actor_due & target_update_due(state.env_steps, state.last_target_update,
                                            config.target_network_update_freq)
        target_params = polyak(state.target_params, params, config.tau, due)
        new_state = state._replace(
            params=params, target_params=target_params, actor_opt_state=actor_opt_state,
            critic_opt_state=critic_opt_state, key=key, num_updates=state.num_updates + 1,
            last_target_update=jnp.where(due, state.env_steps, state.last_target_update))
        metrics = {
            "critic_loss": c_loss,
            # Reported times policy_delay on actor steps and 0 between them, so its mean over
            # a multiple of policy_delay updates is the mean actor loss.
            "actor_loss": a_loss * config.policy_delay,
            "mean_q": jnp.mean(q_tm1), "max_q": jnp.max(q_tm1), "min_q": jnp.min(q_tm1),
            "mean_td_error": jnp.mean(td),
            "critic_grad_gnorm": optax.tree.norm(c_grads)}
        metrics = pmean(metrics, axis_name)
        chex.assert_rank(td, 1)
        metrics["td_error"] = td
        return new_state, metrics

    return Algorithm(init=init, update=update, act=act, policy=policy, name=name)


def postprocess(config: DDPGConfig, fragment: Transition) -> ReplayBatch:
    """n-step replay items ``[T * B]`` from a time-major ``[T, B]`` fragment (pure, jittable)."""
    return n_step_items(fragment, config.gamma, config.n_step, jnp.float32)


def q_function(config: DDPGConfig, spec: EnvSpec):
    """``fn(params, obs, actions) -> Q [N]`` of the first critic (filtered observations)."""
    _, critic = make_networks(config, spec)
    return lambda params, obs, actions: critic.apply(params["critic"], obs, actions)[0]


ALGORITHM_DEF = AlgorithmDef(
    name="DDPG",
    config_class=DDPGConfig,
    make=make_ddpg,
    plan="off_policy",
    example_batch=replay_example(postprocess),
    model="actor_q",
    postprocess=postprocess,
    q_function=q_function,
)
__getattr__ = registry.trainer_class_getattr(__name__, "DDPG")
