"""Shared pieces of the replay-based actor-critics (DDPG, TD3, SAC).

Replay and target-network settings, Gaussian exploration noise, random warm-up actions, Polyak
target updates and the weighted critic loss over a replay batch (its per-item kernels, the twin-Q
target and the critic loss, are in ``jrl.ops.td``). The algorithms themselves live in ``ddpg.py``
(DDPG and TD3) and ``sac.py``.

Exploration noise is Gaussian (``GaussianNoise``), drawn afresh at every step from the key that
``act`` is given. Ornstein-Uhlenbeck noise (RLlib's DDPG default) needs a noise state per env
carried from one ``act`` call to the next; ``act`` is a pure function of ``(policy, obs, key)``,
so OU would need a sampler hook that every worker runs. jrl leaves it out: Fujimoto et al.
(2018) found uncorrelated Gaussian noise works as well, and TD3 and SB3 default to it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jrl.config import CommonConfig, InputConfig, field
from jrl.errors import ConfigError
from jrl.networks.continuous import action_bounds
from jrl.ops.losses import l2_loss
from jrl.ops.td import critic_loss
from jrl.replay.prioritized import NStepReplayMixin, PrioritizedReplayConfig
from jrl.types import EnvSpec


@dataclasses.dataclass(frozen=True, kw_only=True)
class GaussianNoiseConfig:
    """Exploration of deterministic policies (RLlib's ``GaussianNoise``).

    Attributes:
      type: ``GaussianNoise`` (Ornstein-Uhlenbeck noise is not available, see the module
        docstring of ``jrl.algorithms.replay_ac``).
      random_timesteps: env steps at the start taken with uniformly random actions.
      stddev: noise standard deviation in units of half the action range (0.1 on ``[-2, 2]``
        is a standard deviation of 0.2).
      initial_scale: noise multiplier at the end of ``random_timesteps``.
      final_scale: noise multiplier after ``scale_timesteps`` more env steps (linear).
      scale_timesteps: env steps over which the multiplier goes from initial to final.
    """

    type: str = field("GaussianNoise", choices=("GaussianNoise",))
    random_timesteps: int = field(1000, min=0)
    stddev: float = field(0.1, min=0.0)
    initial_scale: float = field(1.0, min=0.0)
    final_scale: float = field(1.0, min=0.0)
    scale_timesteps: int = field(1, min=1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class StochasticSamplingConfig:
    """Exploration of stochastic policies (RLlib's ``StochasticSampling``): sample the policy.

    Attributes:
      type: ``StochasticSampling``.
      random_timesteps: env steps at the start taken with uniformly random actions.
    """

    type: str = field("StochasticSampling", choices=("StochasticSampling",))
    random_timesteps: int = field(0, min=0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReplayActorCriticConfig(InputConfig, NStepReplayMixin, CommonConfig,
                              PrioritizedReplayConfig):
    """Replay and target-network keys shared by DDPG, TD3 and SAC (plus the
    ``prioritized_replay*`` keys of ``jrl.replay.prioritized.PrioritizedReplayConfig``).

    Attributes:
      timesteps_per_iteration: env steps each ``train()`` samples at least (RLlib's DDPG/TD3
        value; one result per env step would flood the logs).
      n_step: n-step return length.
      buffer_size: replay capacity in transitions.
      learning_starts: env steps sampled before learning starts.
      training_intensity: replay ratio (samples trained on / env steps sampled); ``None`` does
        one update per sampled fragment.
      tau: Polyak factor of the target update ``target <- tau * online + (1 - tau) * target``.
      target_network_update_freq: update the targets at most every this many env steps (0: at
        every (actor) update).
      twin_q: two critics; targets and the actor use their minimum (clipped double Q).
      input, shuffle_buffer_size: where fragments come from (``"sampler"``, recorded files or a
        mix), see ``jrl.config.InputConfig``.
      input_evaluation: off-policy estimators; none by default (these records define no
        ``action_logp``).
    """

    train_batch_size: int = field(256, min=1)
    rollout_fragment_length: int = field(1, min=1)
    timesteps_per_iteration: int = field(1000, min=0)
    n_step: int = field(1, min=1)
    buffer_size: int = field(100_000, min=1)
    learning_starts: int = field(1500, min=0)
    training_intensity: float | None = field(None, gt=0.0)
    tau: float = field(0.005, min=0.0, max=1.0)
    target_network_update_freq: int = field(0, min=0)
    twin_q: bool = True
    input_evaluation: tuple[str, ...] = ()

    def validate(self) -> None:
        NStepReplayMixin.validate(self)
        InputConfig.validate(self)



def require_continuous(spec: EnvSpec | None, algo: str) -> EnvSpec:
    """``spec`` if it has a box action space, else a ``ConfigError`` naming the alternatives."""
    if spec is None:
        raise ConfigError(f"make_{algo.lower()} needs the env spec")
    if spec.discrete:
        raise ConfigError(f"{algo} needs a continuous (Box) action space, got a discrete one "
                          f"with {spec.num_actions} actions; use SAC, DQN or PPO for discrete "
                          "actions")
    if not spec.continuous:
        raise ConfigError(f"{algo} needs a continuous (Box) action space, got a "
                          f"{spec.action_kind} one; use PPO, A2C, PG, IMPALA or APPO")
    return spec


def weighted_critic_loss(q_tm1: jax.Array, target: jax.Array, weight: jax.Array,
                         elementwise: Callable[[jax.Array], jax.Array] = l2_loss
                         ) -> tuple[jax.Array, jax.Array]:
    """``jrl.ops.td.critic_loss`` of each replay item, averaged with the items' weights.

    Args:
      q_tm1: each critic's value of the items' states and actions ``[num_q, N]``.
      target: the items' targets ``[N]``.
      weight: the items' importance weights ``[N]``.
      elementwise: loss of a TD error (``l2_loss`` or a Huber loss).

    Returns:
      The loss, and the first critic's TD errors ``[N]`` (the replay priorities).
    """
    loss_t, td_error = jax.vmap(functools.partial(critic_loss, elementwise=elementwise),
                                in_axes=(1, 0))(q_tm1, target)
    return jnp.mean(weight * loss_t), td_error[:, 0]


def polyak(target: Any, online: Any, tau: float, due: jax.Array) -> Any:
    """``tau * online + (1 - tau) * target`` where ``due``, else ``target`` unchanged."""
    return jax.tree.map(lambda t, n: jnp.where(due, n, t), target,
                        optax.incremental_update(online, target, tau))


def target_update_due(env_steps: jax.Array, last_update: jax.Array, freq: int) -> jax.Array:
    """Whether ``freq`` env steps passed since the last target update (always when 0)."""
    return env_steps - last_update >= freq


def random_actions(spec: EnvSpec, key: jax.Array, batch: int) -> jax.Array:
    """Uniform actions ``[batch, *action_shape]`` inside the box."""
    low, high = action_bounds(spec)
    return jax.random.uniform(key, (batch, *spec.action_shape), minval=low, maxval=high)

