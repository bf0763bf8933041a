"""Ape-X DDPG (Horgan et al., 2018): DDPG learning from distributed prioritized replay.

The learner is DDPG's (``jrl.algorithms.ddpg``, importance-weighted critic loss); data flows
through ``jrl.execution.distributed_replay`` as for APEX. Each rollout worker explores with its own
Gaussian noise level ``stddev * base ** (1 + alpha * i / (N - 1))`` instead of an epsilon.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from jrl import registry
from jrl.algorithms.apex import DistributedReplayConfig, per_worker_epsilon
from jrl.algorithms.ddpg import DDPGConfig, DDPGPolicy, make_ddpg, postprocess, q_function
from jrl.algorithms.examples import replay_example
from jrl.config import field, to_dict
from jrl.types import Algorithm, AlgorithmDef, EnvSpec


@dataclasses.dataclass(frozen=True, kw_only=True)
class ApexDDPGConfig(DDPGConfig, DistributedReplayConfig):
    """APEX_DDPG settings: DDPG's keys plus prioritized and distributed replay, Ape-X defaults.

    Attributes:
      per_worker_noise_scale: ``base`` of worker ``i``'s noise multiplier
        ``base ** (1 + per_worker_noise_alpha * i / (N - 1))`` (times ``exploration_config``'s
        ``stddev``).
      per_worker_noise_alpha: ``alpha`` of that formula.
      (every ``DDPGConfig``, ``PrioritizedReplayConfig`` and ``DistributedReplayConfig`` key;
      ``prioritized_replay`` is on.)
    """

    num_workers: int = field(2, min=0)
    prioritized_replay: bool = True
    n_step: int = field(3, min=1)
    rollout_fragment_length: int = field(50, min=1)
    train_batch_size: int = field(512, min=1)
    buffer_size: int = field(200_000, min=1)
    learning_starts: int = field(10_000, min=0)
    timesteps_per_iteration: int = field(25_000, min=0)
    per_worker_noise_scale: float = field(0.4, min=0.0)
    per_worker_noise_alpha: float = field(7.0, min=0.0)

    def validate(self) -> None:
        super().validate()
        self.validate_distributed()


DEFAULT_CONFIG: dict[str, Any] = to_dict(ApexDDPGConfig())


def worker_policy(config: ApexDDPGConfig, policy: DDPGPolicy, worker_index: int,
                  num_workers: int) -> DDPGPolicy:
    """The acting pytree of rollout worker ``worker_index`` (1..N remote, 0 the local one when
    it samples) with its own noise level."""
    if not config.per_worker_exploration:
        return policy
    scale = per_worker_epsilon(max(worker_index - 1, 0), num_workers,
                               config.per_worker_noise_scale, config.per_worker_noise_alpha)
    stddev = config.exploration_config.stddev * scale
    return policy._replace(noise_scale=jnp.asarray(stddev, jnp.float32))


def make_apex_ddpg(config: ApexDDPGConfig, networks: Any = None, spec: EnvSpec | None = None,
                   axis_name: str | None = None) -> Algorithm:
    """DDPG's ``Algorithm`` under the APEX_DDPG name (see ``make_ddpg``)."""
    return make_ddpg(config, networks, spec, axis_name, name="APEX_DDPG")


ALGORITHM_DEF = AlgorithmDef(
    name="APEX_DDPG",
    config_class=ApexDDPGConfig,
    make=make_apex_ddpg,
    plan="distributed_replay",
    example_batch=replay_example(postprocess),
    model="actor_q",
    trainer_class_name="ApexDDPGTrainer",
    postprocess=postprocess,
    q_function=q_function,
    worker_policy=worker_policy,
)
__getattr__ = registry.trainer_class_getattr(__name__, "APEX_DDPG")
