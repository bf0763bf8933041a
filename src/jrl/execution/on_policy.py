"""Synchronous on-policy plan (PG, A2C, PPO): sample a full train batch, then one update."""

from __future__ import annotations

import math
from typing import Any

import jax

from jrl.execution.learner import Learner
from jrl.logger import PHASES
from jrl.rollout.worker import SampleBatch
from jrl.rollout.worker_set import WorkerSet
from jrl.types import Algorithm, AlgorithmDef


class OnPolicyPlan:
    """Each ``step`` samples ``ceil(train_batch_size / (T * B))`` fragments from every worker,
    concatenates them along time and runs the algorithm's ``update`` once (jitted)."""

    def __init__(self, definition: AlgorithmDef, algorithm: Algorithm, workers: WorkerSet,
                 config: Any, spec: Any):
        self.algorithm = algorithm
        self.workers = workers
        per_round = config.rollout_fragment_length * workers.num_envs
        self.rounds = max(1, math.ceil(config.train_batch_size / per_round))
        self.learner = Learner.for_algorithm(definition, algorithm, config, spec,
                                             workers.num_envs)
        self._policy = jax.jit(algorithm.policy)

    def step(self, state: Any) -> tuple[Any, dict, int]:
        self.workers.set_policy(self._policy(state))
        with PHASES.phase("train: sample (envs + acting)"):
            batch = SampleBatch.concat_time([self.workers.sample() for _ in range(self.rounds)])
        with PHASES.phase("train: learn (update)"):
            # waiting here costs nothing: the next sample needs the new weights anyway
            state, metrics = jax.block_until_ready(
                self.learner.update(state, batch.to_transition()))
        return state, metrics, batch.count
