"""Deep Q-Networks (Mnih et al., 2015) with double-Q, dueling heads and n-step targets.

``postprocess`` turns a time-major fragment into n-step replay items; ``update`` takes a replay
sample ``[N]``, runs one Huber-TD step (weighted by the items' importance weights) and reports the
per-sample TD errors as ``metrics["td_error"]`` ``[N]`` for prioritized replay. The target
network is copied every ``target_network_update_freq`` env steps.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jrl import registry
from jrl.algorithms import toolkit
from jrl.algorithms.examples import replay_example
from jrl.config import CommonConfig, ExplorationConfig, InputConfig, ModelConfig, field, to_dict
from jrl.errors import ConfigError
from jrl.networks import catalog
from jrl.ops.filters import FilterState, get_filter
from jrl.ops.losses import huber_loss, l2_loss
from jrl.ops.parallel import pmean
from jrl.ops.td import double_q_learning, q_learning
from jrl.replay.prioritized import NStepReplayMixin, PrioritizedReplayConfig
from jrl.replay.uniform import n_step_items
from jrl.types import Algorithm, AlgorithmDef, EnvSpec, ReplayBatch, Transition


@dataclasses.dataclass(frozen=True, kw_only=True)
class DQNConfig(InputConfig, NStepReplayMixin, CommonConfig, PrioritizedReplayConfig):
    """DQN settings (RLlib names) on top of the common ones.

    Attributes:
      dueling: dueling value/advantage heads.
      double_q: pick the bootstrap action with the online network (double Q-learning).
      hiddens: hidden layers of the Q head after the torso.
      n_step: n-step return length.
      target_network_update_freq: copy online to target params every this many env steps.
      buffer_size: replay capacity in transitions.
      learning_starts: env steps sampled before learning starts.
      training_intensity: replay ratio (samples trained on / env steps sampled); ``None`` does one
        update per sampled fragment.
      td_error_loss_fn: ``huber`` or ``mse``.
      adam_epsilon: Adam's epsilon.
      exploration_config: epsilon-greedy schedule.
      input, shuffle_buffer_size: where fragments come from (``"sampler"``, recorded files or a
        mix), see ``jrl.config.InputConfig``.
      input_evaluation: off-policy estimators; DQN has none (its record defines no
        ``action_logp``), so the default is empty.
      prioritized_replay, prioritized_replay_alpha, prioritized_replay_beta,
        final_prioritized_replay_beta, prioritized_replay_beta_annealing_timesteps,
        prioritized_replay_eps: see ``jrl.replay.prioritized.PrioritizedReplayConfig``.
    """

    lr: float = field(1e-3, gt=0.0)
    train_batch_size: int = field(128, min=1)
    rollout_fragment_length: int = field(4, min=1)
    num_envs_per_worker: int = field(16, min=1)
    timesteps_per_iteration: int = field(1000, min=0)
    grad_clip: float | None = field(10.0, gt=0.0)
    model: ModelConfig = dataclasses.field(
        default_factory=lambda: ModelConfig(fcnet_hiddens=(64, 64), fcnet_activation="relu"))
    dueling: bool = True
    double_q: bool = True
    hiddens: tuple[int, ...] = (64,)
    n_step: int = field(3, min=1)
    target_network_update_freq: int = field(500, min=1)
    buffer_size: int = field(50_000, min=1)
    learning_starts: int = field(1000, min=0)
    training_intensity: float | None = field(16.0, gt=0.0)
    td_error_loss_fn: str = field("huber", choices=("huber", "mse"))
    adam_epsilon: float = field(1e-8, gt=0.0)
    exploration_config: ExplorationConfig = dataclasses.field(
        default_factory=lambda: ExplorationConfig(epsilon_timesteps=5_000, final_epsilon=0.02))
    input_evaluation: tuple[str, ...] = ()

    def validate(self) -> None:
        NStepReplayMixin.validate(self)
        InputConfig.validate(self)



DEFAULT_CONFIG: dict[str, Any] = to_dict(DQNConfig())


QBatch = ReplayBatch  # DQN's replay items (kept under its old name)


class DQNState(NamedTuple):
    """Learner state of DQN (and APEX): arrays only.

    Attributes:
      params: the online Q-network's parameters (a pytree of float32 arrays).
      target_params: the target network's parameters, same structure as ``params``.
      opt_state: Adam's optax state (int32 ``[]`` step count, float32 moments like ``params``).
      key: PRNG key, ``uint32 [2]`` (the update draws nothing; kept for a uniform state).
      obs_filter: observation statistics, ``FilterState`` (float32 ``[]`` count, ``[*obs]``
        mean and m2).
      num_updates: learner updates so far, int32 ``[]``.
      env_steps: env steps sampled so far (set by the plan), int32 ``[]``.
      last_target_update: ``env_steps`` at the last copy to the target network, int32 ``[]``.
    """

    params: Any
    target_params: Any
    opt_state: Any
    key: jax.Array
    obs_filter: FilterState
    num_updates: jax.Array
    env_steps: jax.Array
    last_target_update: jax.Array


class DQNPolicy(NamedTuple):
    """What DQN's ``act`` needs.

    Attributes:
      params: the online Q-network's parameters.
      obs_filter: observation statistics, ``FilterState``.
      epsilon: probability of a uniformly random action when exploring, float32 ``[]``.
    """

    params: Any
    obs_filter: FilterState
    epsilon: jax.Array


def epsilon_at(exploration: ExplorationConfig, env_steps: jax.Array) -> jax.Array:
    """Linearly decayed epsilon after ``env_steps``."""
    return optax.linear_schedule(exploration.initial_epsilon, exploration.final_epsilon,
                                 exploration.epsilon_timesteps)(env_steps)


def make_dqn(config: DQNConfig, networks: Any = None, spec: EnvSpec | None = None,
             axis_name: str | None = None) -> Algorithm:
    """Builds DQN's ``Algorithm`` for ``spec`` (discrete actions).

    With ``axis_name`` the ``update`` is meant to run under ``pmap`` over that axis with the
    replay batch split across devices; gradients and metrics are averaged across devices.
    """
    if spec is None:
        raise ConfigError("make_dqn needs the env spec")
    if spec.composite:
        raise ConfigError(f"DQN needs a Discrete action space, got a {spec.action_kind.title()} "
                          "action space; use PPO, A2C, PG, IMPALA or APPO")
    if not spec.discrete:
        raise ConfigError("DQN needs a discrete action space; use PPO (or SAC) for continuous "
                          "actions")
    net = networks if networks is not None else catalog.make_q_network(
        spec, config.model, dueling=config.dueling, hiddens=tuple(config.hiddens))
    obs_filter = get_filter(config.observation_filter)
    optimizer = toolkit.make_optimizer(config.lr, grad_clip=config.grad_clip,
                                       eps=config.adam_epsilon)
    loss_elementwise = huber_loss if config.td_error_loss_fn == "huber" else l2_loss

    def q_values(params, filter_state, obs):
        return net.apply(params, obs_filter.apply(filter_state, obs))

    def masked(q, obs):
        # Forbidden actions (an ``action_mask`` in the observation) are never greedy and never
        # bootstrapped from.
        return catalog.mask_logits(q, catalog.action_mask(spec, obs))

    def init(key: jax.Array) -> DQNState:
        key, init_key = jax.random.split(key)
        params = net.init(init_key, jnp.zeros((1, *spec.obs_shape), spec.obs_dtype))
        zero = jnp.zeros((), jnp.int32)
        return DQNState(params=params, target_params=params, opt_state=optimizer.init(params),
                        key=key, obs_filter=obs_filter.init(spec.obs_shape), num_updates=zero,
                        env_steps=zero, last_target_update=zero)

    def policy(state: DQNState) -> DQNPolicy:
        return DQNPolicy(state.params, state.obs_filter,
                         epsilon_at(config.exploration_config, state.env_steps))

    def act(policy: DQNPolicy, obs: jax.Array, key: jax.Array, explore: bool = True):
        q = q_values(policy.params, policy.obs_filter, obs)
        greedy = jnp.argmax(masked(q, obs), axis=-1).astype(jnp.int32)
        if not explore:
            return greedy, {"q_values": q}
        if spec.action_mask is not None:
            explore_key, action_key = jax.random.split(key)
            random_action = jax.random.categorical(
                action_key, masked(jnp.zeros_like(q), obs), axis=-1).astype(jnp.int32)
            u = jax.random.uniform(explore_key, greedy.shape)
            return jnp.where(u < policy.epsilon, random_action, greedy), {"q_values": q}
        # One uniform draw decides both "explore?" and the random action: a single RNG op
        # keeps this per-step call cheap (several draws cost ~3x the dispatch on CPU).
        u = jax.random.uniform(key, (2, *greedy.shape))
        random_action = jnp.minimum((u[1] * spec.num_actions).astype(jnp.int32),
                                    spec.num_actions - 1)
        action = jnp.where(u[0] < policy.epsilon, random_action, greedy)
        # The behaviour probability of the action taken (recorded as ``action_prob`` /
        # ``action_logp`` in offline data): epsilon-greedy puts 1 - eps + eps / n on the greedy
        # action and eps / n on each other one.
        uniform = policy.epsilon / spec.num_actions
        prob = jnp.where(action == greedy, 1.0 - policy.epsilon + uniform, uniform)
        return action, {"q_values": q, "action_logp": jnp.log(prob).astype(jnp.float32)}

    def loss_fn(params, state: DQNState, batch: ReplayBatch):
        q_tm1 = q_values(params, state.obs_filter, batch.obs)
        q_t = masked(q_values(state.target_params, state.obs_filter, batch.next_obs),
                     batch.next_obs)
        transitions = (q_tm1, batch.action, batch.reward, batch.discount, q_t)
        if config.double_q:
            # The online network picks the bootstrap action, the target network values it.
            q_t_selector = masked(q_values(params, state.obs_filter, batch.next_obs),
                                  batch.next_obs)
            td = jax.vmap(double_q_learning)(*transitions, q_t_selector)
        else:
            td = jax.vmap(q_learning)(*transitions)
        return jnp.mean(batch.weight * loss_elementwise(td)), (td, q_tm1)

    step = toolkit.gradient_step(loss_fn, optimizer, axis_name, has_aux=True)

    def update(state: DQNState, batch: ReplayBatch) -> tuple[DQNState, dict[str, jax.Array]]:
        params, opt_state, (loss, (td, q_tm1)), grads = step(state.params, state.opt_state,
                                                             state, batch)
        due = state.env_steps - state.last_target_update >= config.target_network_update_freq
        target_params = jax.tree.map(lambda t, p: jnp.where(due, p, t), state.target_params,
                                     params)
        new_state = state._replace(
            params=params, target_params=target_params, opt_state=opt_state,
            num_updates=state.num_updates + 1,
            last_target_update=jnp.where(due, state.env_steps, state.last_target_update))
        metrics = {"loss": loss, "mean_q": jnp.mean(q_tm1), "mean_td_error": jnp.mean(td),
                   "grad_gnorm": optax.tree.norm(grads),
                   "cur_epsilon": epsilon_at(config.exploration_config, state.env_steps)}
        # Per-sample TD errors [N] (this device's share) give prioritized replay its priorities.
        return new_state, {**pmean(metrics, axis_name), "td_error": td}

    return Algorithm(init=init, update=update, act=act, policy=policy, name="DQN")


def postprocess(config: DQNConfig, fragment: Transition) -> ReplayBatch:
    """n-step replay items ``[T * B]`` from a time-major ``[T, B]`` fragment (pure, jittable)."""
    return n_step_items(fragment, config.gamma, config.n_step, jnp.int32)


ALGORITHM_DEF = AlgorithmDef(
    name="DQN",
    config_class=DQNConfig,
    make=make_dqn,
    plan="off_policy",
    example_batch=replay_example(postprocess),
    model="q",
    postprocess=postprocess,
)
__getattr__ = registry.trainer_class_getattr(__name__, "DQN")
