"""Vanilla policy gradient (REINFORCE; Williams, 1992) with an optional learned baseline.

``update`` takes a time-major ``[T, B]`` train batch, computes discounted returns, and takes one
optimizer step on ``-mean(logp * (G - b))``. Without a baseline (``use_baseline=False``, RLlib's
PG) ``b = 0`` and a return that a fragment or a truncation cuts short simply ends there; with
one, ``b`` is a learned value function, cut-short returns bootstrap from it, and its squared
error is added to the loss with weight ``vf_loss_coeff``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import chex
import jax
import jax.numpy as jnp

from jrl import registry
from jrl.algorithms import toolkit
from jrl.algorithms.actor_critic import ActorCriticPolicy, ActorCriticState, make_learner
from jrl.algorithms.examples import train_batch_example
from jrl.config import CommonConfig, InputConfig, check_on_policy_input, field, to_dict
from jrl.ops.returns import discounted_returns
from jrl.types import Algorithm, AlgorithmDef, EnvSpec, Transition

PGState = ActorCriticState
PGPolicy = ActorCriticPolicy


@dataclasses.dataclass(frozen=True, kw_only=True)
class PGConfig(InputConfig, CommonConfig):
    """PG settings (RLlib names) on top of the common ones.

    Attributes:
      use_baseline: subtract a learned state value from the returns (and bootstrap returns cut
        short by a fragment's end or a truncation from it).
      vf_loss_coeff: weight of the baseline's value loss (with ``use_baseline``).
      entropy_coeff: weight of an entropy bonus (RLlib's PG has none: 0).
      normalize_advantages: standardize ``G - b`` over the train batch.
    """

    lr: float = field(4e-4, gt=0.0)
    rollout_fragment_length: int = field(200, min=1)
    train_batch_size: int = field(200, min=1)
    use_baseline: bool = False
    vf_loss_coeff: float = field(0.5, min=0.0)
    entropy_coeff: float = field(0.0, min=0.0)
    normalize_advantages: bool = False

    def validate(self) -> None:
        check_on_policy_input(self, "PG")


DEFAULT_CONFIG: dict[str, Any] = to_dict(PGConfig())


def pg_returns(r_t: jax.Array, terminated_t: jax.Array, truncated_t: jax.Array, gamma: float,
               v_tp1: jax.Array | None = None) -> jax.Array:
    """Discounted returns within each episode of a fragment, ``[T, B]`` (or ``[T]``).

    ``G_t = r_t + gamma * G_{t+1}`` while the episode goes on. A terminated step ends the sum.
    Where the sum is cut short (a truncated step, or the fragment's last step) it bootstraps
    with ``gamma * v_tp1`` when values are given, and simply ends otherwise.

    Args:
      r_t: rewards ``[T, B]``.
      terminated_t: episode terminated at step t, bool or float ``[T, B]``.
      truncated_t: episode truncated at step t, bool or float ``[T, B]``.
      gamma: discount.
      v_tp1: values of ``next_obs`` ``[T, B]`` (``None``: no bootstrapping).
    """
    chex.assert_equal_shape([r_t, terminated_t, truncated_t])
    terminated = jnp.asarray(terminated_t).astype(r_t.dtype)
    truncated = jnp.asarray(truncated_t).astype(r_t.dtype)
    discount_t = gamma * (1.0 - terminated) * (1.0 - truncated)
    if v_tp1 is None:
        return discounted_returns(r_t, discount_t, jnp.zeros_like(r_t[0]))
    chex.assert_equal_shape([r_t, v_tp1])
    # A truncated (not terminated) step's return is r + gamma * V(final obs); the last step's
    # return bootstraps through discounted_returns' bootstrap value (unless it ended).
    r_t = r_t + gamma * truncated * (1.0 - terminated) * v_tp1
    return discounted_returns(r_t, discount_t, v_tp1[-1])


def make_pg(config: PGConfig, networks: Any = None, spec: EnvSpec | None = None,
            axis_name: str | None = None) -> Algorithm:
    """Builds PG's ``Algorithm`` for ``spec``; ``networks`` defaults to the catalog's
    actor-critic (its value head is trained only with ``use_baseline``)."""

    def targets(batch: Transition, v_t: jax.Array, v_tp1: jax.Array):
        if not config.use_baseline:
            returns = pg_returns(batch.reward, batch.terminated, batch.truncated, config.gamma)
            return returns, returns
        returns = pg_returns(batch.reward, batch.terminated, batch.truncated, config.gamma,
                             v_tp1)
        return returns - v_t, returns

    return make_learner(
        "PG", config, spec, targets, networks=networks,
        optimizer=toolkit.make_optimizer(config.lr, grad_clip=config.grad_clip),
        vf_loss_coeff=config.vf_loss_coeff if config.use_baseline else 0.0,
        entropy_coeff=config.entropy_coeff, normalize_advantages=config.normalize_advantages,
        axis_name=axis_name)[0]


ALGORITHM_DEF = AlgorithmDef(
    name="PG",
    config_class=PGConfig,
    make=make_pg,
    plan="on_policy",
    example_batch=train_batch_example,
    recurrent=True,
    action_logp=toolkit.actor_critic_action_logp,
)
__getattr__ = registry.trainer_class_getattr(__name__, "PG")
