"""Synchronous advantage actor-critic (A2C; Mnih et al., 2016, synchronous variant).

``update`` takes a time-major ``[T, B]`` train batch, computes values with the current params,
advantages by GAE (``use_gae``) or bootstrapped n-step returns (each step's return runs to the
end of its fragment and bootstraps from the value there), and takes one optimizer step on
``policy loss + vf_loss_coeff * value loss - entropy_coeff * entropy``. With
``microbatch_size`` the gradient is accumulated over microbatches before the single step.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from jrl import registry
from jrl.algorithms import toolkit
from jrl.algorithms.actor_critic import (
    ActorCriticPolicy,
    ActorCriticState,
    GradientFns,
    make_learner,
)
from jrl.algorithms.examples import train_batch_example
from jrl.config import CommonConfig, InputConfig, check_on_policy_input, field, to_dict
from jrl.errors import ConfigError
from jrl.ops.returns import gae
from jrl.types import Algorithm, AlgorithmDef, EnvSpec, Transition

A2CState = ActorCriticState
A2CPolicy = ActorCriticPolicy


@dataclasses.dataclass(frozen=True, kw_only=True)
class A2CConfig(InputConfig, CommonConfig):
    """A2C settings (RLlib names) on top of the common ones.

    Attributes:
      use_gae: GAE advantages; ``False`` uses bootstrapped n-step returns minus the value
        (each step's return runs to the end of its fragment: GAE with lambda 1).
      lambda_: GAE lambda (key ``lambda``).
      vf_loss_coeff: weight of the value loss.
      entropy_coeff: weight of the entropy bonus.
      normalize_advantages: standardize advantages over the train batch.
      microbatch_size: accumulate gradients over microbatches of this many env steps and take
        one optimizer step per train batch (``None``: the whole batch at once).
      optimizer: ``adam`` or ``rmsprop``.
      optimizer_epsilon: the optimizer's epsilon.
      rmsprop_decay: RMSProp's decay of the squared-gradient average.
    """

    lr: float = field(1e-3, gt=0.0)
    num_envs_per_worker: int = field(8, min=1)
    rollout_fragment_length: int = field(16, min=1)
    train_batch_size: int = field(128, min=1)
    gamma: float = field(0.99, min=0.0, max=1.0)
    grad_clip: float | None = field(0.5, gt=0.0)
    use_gae: bool = True
    lambda_: float = field(1.0, key="lambda", min=0.0, max=1.0)
    vf_loss_coeff: float = field(0.5, min=0.0)
    entropy_coeff: float = field(0.0, min=0.0)
    normalize_advantages: bool = False
    microbatch_size: int | None = field(None, min=1)
    optimizer: str = field("adam", choices=("adam", "rmsprop"))
    optimizer_epsilon: float = field(1e-5, gt=0.0)
    rmsprop_decay: float = field(0.99, min=0.0, max=1.0)

    def validate(self) -> None:
        check_on_policy_input(self, "A2C")
        if self.microbatch_size is not None and self.microbatch_size > self.train_batch_size:
            raise ConfigError(f"config key 'microbatch_size' ({self.microbatch_size}) must be "
                              f"<= train_batch_size ({self.train_batch_size})")


DEFAULT_CONFIG: dict[str, Any] = to_dict(A2CConfig())


def a2c_targets(batch: Transition, v_t: jax.Array, v_tp1: jax.Array, gamma: float,
                lambda_: float) -> tuple[jax.Array, jax.Array]:
    """Advantages and value targets ``[T, B]`` of a fragment.

    GAE keeps termination and truncation apart: a truncated step bootstraps from the value of
    its final observation, a terminated one does not, and neither carries the return across
    the episode boundary. With ``lambda_ = 1`` these are the bootstrapped n-step returns to the
    fragment's end (which bootstraps from ``v_tp1`` of its last step).

    Args:
      batch: the fragment (``reward``, ``terminated``, ``truncated``), ``[T, B]``.
      v_t: values of ``obs`` ``[T, B]``.
      v_tp1: values of ``next_obs`` ``[T, B]``.
      gamma: discount.
      lambda_: GAE lambda.
    """
    return gae(batch.reward, v_t, v_tp1, batch.terminated, batch.truncated, gamma, lambda_)


def make_a2c_learner(config: A2CConfig, networks: Any = None, spec: EnvSpec | None = None,
                     axis_name: str | None = None, name: str = "A2C"
                     ) -> tuple[Algorithm, GradientFns]:
    """A2C's ``Algorithm`` and the gradient/apply halves of its update (A3C uses both)."""
    lambda_ = config.lambda_ if config.use_gae else 1.0
    return make_learner(
        name, config, spec,
        lambda batch, v_t, v_tp1: a2c_targets(batch, v_t, v_tp1, config.gamma, lambda_),
        networks=networks, optimizer=toolkit.make_optimizer(
            config.lr, optimizer=config.optimizer, grad_clip=config.grad_clip,
            eps=config.optimizer_epsilon, decay=config.rmsprop_decay),
        vf_loss_coeff=config.vf_loss_coeff,
        entropy_coeff=config.entropy_coeff, normalize_advantages=config.normalize_advantages,
        microbatch_size=config.microbatch_size, axis_name=axis_name)


def make_a2c(config: A2CConfig, networks: Any = None, spec: EnvSpec | None = None,
             axis_name: str | None = None) -> Algorithm:
    """Builds A2C's ``Algorithm`` for ``spec``; ``networks`` defaults to the catalog's
    actor-critic. With ``axis_name`` the update averages gradients over that mapped axis."""
    return make_a2c_learner(config, networks, spec, axis_name)[0]


def make_gradient_fns(config: A2CConfig, spec: EnvSpec, networks: Any = None) -> GradientFns:
    """The ``compute``/``apply`` halves of A2C's update (see ``actor_critic.GradientFns``)."""
    return make_a2c_learner(config, networks, spec)[1]


ALGORITHM_DEF = AlgorithmDef(
    name="A2C",
    config_class=A2CConfig,
    make=make_a2c,
    plan="on_policy",
    example_batch=train_batch_example,
    gradient_fns=make_gradient_fns,
    recurrent=True,
    action_logp=toolkit.actor_critic_action_logp,
)
__getattr__ = registry.trainer_class_getattr(__name__, "A2C")
