"""Asynchronous gradients plan (A3C): workers send gradients, the learner applies them as they
arrive.

Each remote rollout worker runs ``_sample_and_compute_gradients`` (through
``RolloutWorker.apply``): it samples one fragment with the weights it was last sent, computes the
gradient of the algorithm's loss on it with a jitted function built once per worker, and returns
the gradient (plus the fragment's observation statistics and finished episodes). The learner
takes whichever gradient is ready first (``ray.wait``), applies it with one optimizer step, and
sends the new weights to that worker only, which starts on its next fragment. The other workers
go on with older weights, so a gradient may be stale: computed on weights that are some learner
updates behind the ones it is applied to.

``stats()`` adds to each result ``grad_staleness_mean`` and ``grad_staleness_max`` (learner
updates between a gradient's weights and its application, over the gradients applied in the
iteration) and ``num_grads_applied``.

With ``num_workers=0`` the trainer's own worker samples a fragment and the learner computes
and applies its gradient at once (the algorithm's ``update``; staleness 0).
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

import jax
import numpy as np

from jrl.rollout.worker_set import WorkerSet
from jrl.types import Algorithm, AlgorithmDef

logger = logging.getLogger(__name__)

# Per rollout-worker process: the worker's jitted gradient function, built on first use.
_GRADIENT_FNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _sample_and_compute_gradients(worker: Any, policy: Any, version: int) -> tuple:
    """On a rollout worker: one fragment with ``policy``, its gradient against ``policy``'s
    weights; returns ``(grads, metrics, filter_delta, env_steps, episodes, version)``."""
    compute = _GRADIENT_FNS.get(worker)
    if compute is None:
        fns = worker.definition.require("gradient_fns")(worker.config, worker.spec)
        compute = _GRADIENT_FNS[worker] = jax.jit(fns.compute)
    worker.set_policy(policy)
    batch = worker.sample()
    grads, metrics, filter_delta = jax.device_get(compute(policy, batch.to_transition()))
    return grads, metrics, filter_delta, batch.count, worker.pop_episodes(), version


class AsyncGradientsPlan:
    """Each ``step`` applies one worker's gradient (or, without remote workers, one local
    update) and returns the env steps behind it."""

    def __init__(self, definition: AlgorithmDef, algorithm: Algorithm, workers: WorkerSet,
                 config: Any, spec: Any):
        self.algorithm = algorithm
        self.workers = workers
        self.config = config
        self._policy = jax.jit(algorithm.policy)
        self._update = jax.jit(algorithm.update)
        self._apply = jax.jit(definition.require("gradient_fns")(config, spec).apply)
        # Object ref -> remote worker index (1..N, the WorkerSet's key, which a replacement
        # worker keeps). The WorkerSet's failure handling and episode hand-over are reused.
        self._pending: dict[Any, int] = {}
        self._applied = 0  # gradients applied by this plan: the version workers' weights carry
        self._staleness: list[int] = []

    def _submit(self, index: int, state: Any) -> None:
        policy = jax.device_get(self._policy(state))
        ref = self.workers.submit(index, _sample_and_compute_gradients, policy, self._applied)
        self._pending[ref] = index

    def step(self, state: Any) -> tuple[Any, dict, int]:
        if not self.workers.remote_workers():
            self.workers.set_policy(self._policy(state))
            batch = self.workers.sample()
            state, metrics = self._update(state, batch.to_transition())
            self._applied += 1
            self._staleness.append(0)
            return state, metrics, batch.count
        import ray

        if not self._pending:
            for index in self.workers.remote_workers_by_index():
                self._submit(index, state)
        while True:
            (ref,), _ = ray.wait(list(self._pending), num_returns=1)
            index = self._pending.pop(ref)
            try:
                grads, metrics, filter_delta, count, episodes, version = ray.get(ref)
                break
            except ray.exceptions.RayError as e:
                # Replaced (or dropped): its fragment is lost; a new worker starts a fresh one.
                if self.workers.handle_failure(index, e) is not None:
                    self._submit(index, state)
                elif not self._pending:
                    raise RuntimeError("every rollout worker failed; nothing to train on"
                                       ) from e
        state, apply_metrics = self._apply(state, grads, filter_delta, count)
        self._staleness.append(self._applied - version)
        self._applied += 1
        # WorkerSet.pop_episodes hands the trainer what remote workers reported.
        self.workers.add_episodes(episodes)
        self._submit(index, state)
        return state, {**metrics, **apply_metrics}, count

    def stats(self) -> dict[str, Any]:
        """Gradient staleness over the gradients applied since the last call."""
        staleness, self._staleness = self._staleness, []
        if not staleness:
            return {"num_grads_applied": 0}
        return {"grad_staleness_mean": float(np.mean(staleness)),
                "grad_staleness_max": int(np.max(staleness)),
                "num_grads_applied": len(staleness)}
