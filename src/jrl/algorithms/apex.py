"""Ape-X DQN (Horgan et al., 2018): DQN learning from distributed prioritized replay.

The learner is DQN's (double, dueling, n-step, importance-weighted Huber TD); what differs is how
data flows (``jrl.execution.distributed_replay``): many rollout workers, each with its own fixed
epsilon ``eps_i = eps ** (1 + alpha * i / (N - 1))``, compute initial priorities for their own
fragments and push them into replay shards; the learner pulls prioritized batches from the shards
and sends priority updates back.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from jrl import registry
from jrl.algorithms.dqn import DQNConfig, DQNPolicy, make_dqn, postprocess
from jrl.algorithms.examples import replay_example
from jrl.config import field, to_dict
from jrl.errors import ConfigError
from jrl.types import Algorithm, AlgorithmDef, EnvSpec


@dataclasses.dataclass(frozen=True, kw_only=True)
class DistributedReplayConfig:
    """Settings of the distributed-replay plan (RLlib's APEX keys, flattened).

    Attributes:
      num_replay_buffer_shards: replay shards (Ray actors with ``num_workers > 0``); each holds
        ``buffer_size // num_replay_buffer_shards`` items.
      worker_side_prioritization: workers compute their items' initial priorities (TD error under
        their current weights); otherwise new items get the shard's max priority.
      per_worker_exploration: each worker explores with its own fixed level (Ape-X); otherwise
        all use the algorithm's schedule.
      max_weight_sync_delay: env steps sampled between weight broadcasts to the workers.
      learner_queue_size: prioritized batches (of ``updates_per_fragment`` replay samples each)
        the learner's prefetch thread keeps ready.
      min_sample_timeout_s: the learner waits at most this long for a batch before it goes
        back to collecting samples.
    """

    num_replay_buffer_shards: int = field(1, min=1)
    worker_side_prioritization: bool = True
    per_worker_exploration: bool = True
    max_weight_sync_delay: int = field(400, min=1)
    learner_queue_size: int = field(4, min=1)
    min_sample_timeout_s: float = field(0.05, min=0.0)

    def validate_distributed(self) -> None:
        if getattr(self, "input", "sampler") != "sampler":
            raise ConfigError("distributed replay samples with its rollout workers; config key "
                              "'input' must be 'sampler' (learn from files with DQN, DDPG, "
                              "TD3 or SAC)")
        if not self.prioritized_replay:
            raise ConfigError("distributed replay learns from prioritized replay; "
                              "prioritized_replay must be true")
        if self.observation_filter != "NoFilter":
            raise ConfigError("distributed replay supports observation_filter 'NoFilter' only "
                              "(the learner never sees the workers' observations)")
        if self.buffer_size < self.num_replay_buffer_shards:
            raise ConfigError(f"buffer_size ({self.buffer_size}) must be at least "
                              f"num_replay_buffer_shards ({self.num_replay_buffer_shards})")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ApexConfig(DQNConfig, DistributedReplayConfig):
    """APEX settings: DQN's keys plus the distributed-replay ones, with Ape-X defaults.

    Attributes:
      per_worker_epsilon: ``eps`` in ``eps_i = eps ** (1 + per_worker_epsilon_alpha * i / (N - 1))``.
      per_worker_epsilon_alpha: ``alpha`` of that formula.
      (every ``DQNConfig`` and ``DistributedReplayConfig`` key; ``prioritized_replay`` is on.)
    """

    num_workers: int = field(2, min=0)
    prioritized_replay: bool = True
    n_step: int = field(3, min=1)
    rollout_fragment_length: int = field(50, min=1)
    num_envs_per_worker: int = field(1, min=1)
    train_batch_size: int = field(512, min=1)
    buffer_size: int = field(200_000, min=1)
    learning_starts: int = field(10_000, min=0)
    target_network_update_freq: int = field(50_000, min=1)
    timesteps_per_iteration: int = field(25_000, min=0)
    per_worker_epsilon: float = field(0.4, min=0.0, max=1.0)
    per_worker_epsilon_alpha: float = field(7.0, min=0.0)

    def validate(self) -> None:
        super().validate()
        self.validate_distributed()


DEFAULT_CONFIG: dict[str, Any] = to_dict(ApexConfig())


def per_worker_epsilon(worker: int, num_workers: int, epsilon: float = 0.4,
                       alpha: float = 7.0) -> float:
    """Ape-X's fixed exploration level of worker ``worker`` (0-based) of ``num_workers``:
    ``epsilon ** (1 + alpha * worker / (num_workers - 1))``; ``epsilon`` for a single worker."""
    if num_workers <= 1:
        return float(epsilon)
    return float(epsilon ** (1.0 + alpha * worker / (num_workers - 1)))


def worker_policy(config: ApexConfig, policy: DQNPolicy, worker_index: int,
                  num_workers: int) -> DQNPolicy:
    """The acting pytree of rollout worker ``worker_index`` (1..N remote, 0 the local one when
    it samples) with its own epsilon."""
    if not config.per_worker_exploration:
        return policy
    eps = per_worker_epsilon(max(worker_index - 1, 0), num_workers, config.per_worker_epsilon,
                             config.per_worker_epsilon_alpha)
    return policy._replace(epsilon=jnp.asarray(eps, jnp.float32))


def make_apex(config: ApexConfig, networks: Any = None, spec: EnvSpec | None = None,
              axis_name: str | None = None) -> Algorithm:
    """DQN's ``Algorithm`` under the APEX name (see ``make_dqn``)."""
    return make_dqn(config, networks, spec, axis_name)._replace(name="APEX")


ALGORITHM_DEF = AlgorithmDef(
    name="APEX",
    config_class=ApexConfig,
    make=make_apex,
    plan="distributed_replay",
    example_batch=replay_example(postprocess),
    model="q",
    trainer_class_name="ApexTrainer",
    postprocess=postprocess,
    worker_policy=worker_policy,
)
__getattr__ = registry.trainer_class_getattr(__name__, "APEX")
