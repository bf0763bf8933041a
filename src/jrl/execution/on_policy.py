"""Synchronous on-policy plan (PG, A2C, PPO): sample a full train batch, then one update.

With ``input`` files (and ``postprocess_inputs``) the train batch of the same ``[T, B]`` shape
comes from ``jrl.execution.offline.make_input`` instead (or a mix with sampling); the update
recomputes advantages and value targets with the current value function, episode by episode.
"""

from __future__ import annotations

import math
from typing import Any

import jax

from jrl.execution.learner import Learner
from jrl.execution.offline import SAMPLER, make_input
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
        self.input = self.estimation = None
        if getattr(config, "input", SAMPLER) != SAMPLER:
            self.input, self.estimation = make_input(
                definition, config, spec, config.rollout_fragment_length * self.rounds,
                workers.num_envs, self._sample, policy_id=getattr(workers, "policy_id", None))

    def _sample(self) -> SampleBatch:
        return SampleBatch.concat_time([self.workers.sample() for _ in range(self.rounds)])

    def _next_batch(self, state: Any) -> SampleBatch:
        if self.input is None:
            return self._sample()
        source, batch = self.input.next()
        if source != SAMPLER and self.estimation is not None:
            self.estimation.add(self._policy(state), batch)
        return SampleBatch(batch)

    def stats(self) -> dict[str, Any]:
        """Off-policy estimates of the iteration's file batches, if any."""
        return self.estimation.pop() if self.estimation is not None else {}

    def step(self, state: Any) -> tuple[Any, dict, int]:
        self.workers.set_policy(self._policy(state))
        with PHASES.phase("train: sample (envs + acting)"):
            batch = self._next_batch(state)
        with PHASES.phase("train: learn (update)"):
            # waiting here costs nothing: the next sample needs the new weights anyway
            state, metrics = jax.block_until_ready(
                self.learner.update(state, batch.to_transition()))
        return state, metrics, batch.count
