"""Async samples plan (IMPALA, APPO): workers stream fragments, a learner thread consumes them.

With remote workers every worker keeps ``max_sample_requests_in_flight_per_worker`` sample
requests queued (a Ray actor runs its calls one after another, so a queued request starts the
moment the previous fragment is done and the worker never waits for the learner). The driver
(``step``) collects finished fragments, re-issues a request on that worker with the newest
weights, groups ``ceil(train_batch_size / (rollout_fragment_length * num_envs_per_worker))``
fragments side by side into a ``[T, B]`` train batch and puts it into a bounded queue of
``learner_queue_size`` batches (a full queue makes sampling wait). A background thread takes
batches off the queue and runs the jitted ``update``; after every ``broadcast_interval`` learner
updates the driver sends the newest weights to the workers (one ``ray.put``). Fragments were
sampled with older weights than the ones that learn from them; the algorithm corrects for that
(V-trace) with the ``behaviour_logp`` the workers recorded.

In multi-agent training each trained policy runs its own plan (learner thread, queue, V-trace
learner) on a per-policy view of the workers (``shared_stream``): the workers sample every
policy at once, the view streams their fragments, hands the plan only its policy's steps and
sends each policy's newest weights with the workers' next requests.

With ``num_workers=0`` the local worker samples a train batch and the update runs in the calling
thread (no thread, no queue, no lag): the same algorithm, synchronously.

Each result gets (``stats()``, over the time since the previous result):
  ``learner_queue``: ``size_mean`` / ``size_max``, train batches left waiting in the queue
    each time the learner took one; ``capacity``, ``learner_queue_size``.
  ``policy_lag``: ``mean`` / ``max`` over consumed fragments of the learner updates between the
    weights a fragment was sampled with and the update that learned from it (0: on-policy).
  ``learner_idle_fraction``: share of the wall time the learner spent waiting for a batch
    (with ``num_workers=0``: the share spent sampling).
  ``num_learner_updates`` / ``num_weight_broadcasts``: learner updates and weight broadcasts.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from typing import Any

import jax
import numpy as np

from jrl.execution.learner import Learner
from jrl.rollout.worker import SampleBatch
from jrl.rollout.worker_set import WorkerSet
from jrl.types import Algorithm, AlgorithmDef

logger = logging.getLogger(__name__)

_POLL_S = 0.05  # how often blocked threads look for errors and stop requests


def concat_envs(batches: list[SampleBatch]) -> SampleBatch:
    """Fragments ``[T, B_i]`` side by side: ``[T, sum(B_i)]``."""
    return SampleBatch({k: np.concatenate([b[k] for b in batches], axis=1) for k in batches[0]})


def _mean_metrics(metrics: list[dict]) -> dict[str, float] | None:
    if not metrics:
        return None
    return {k: float(np.mean([m[k] for m in metrics])) for k in metrics[0]}


class AsyncSamplesPlan:
    """Streams fragments from the workers into a learner thread (see the module docstring).

    The learner thread owns the newest ``TrainState``; ``step`` returns it. A state that the
    trainer replaced between steps (``restore``, ``set_weights``) is handed to the learner, and
    an update that was running on the old state is dropped.
    """

    def __init__(self, definition: AlgorithmDef, algorithm: Algorithm, workers: WorkerSet,
                 config: Any, spec: Any):
        self.algorithm = algorithm
        self.workers = workers
        self.config = config
        per_fragment = config.rollout_fragment_length * config.num_envs_per_worker
        self.fragments_per_batch = max(1, math.ceil(config.train_batch_size / per_fragment))
        self.learner = Learner.for_algorithm(definition, algorithm, config, spec,
                                             self.fragments_per_batch * config.num_envs_per_worker)
        self._policy = jax.jit(algorithm.policy)
        # A policy's view of multi-agent workers streams that policy's steps itself.
        self._shared = bool(getattr(workers, "shared_stream", False))
        self._streaming = self._shared or bool(workers.remote_workers())
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue(config.learner_queue_size)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        # Guarded by the lock: the learner's newest state and this window's bookkeeping.
        self._state: Any = None
        self._generation = 0          # bumped when the trainer replaces the state
        self._num_updates = 0         # learner updates so far (weights versions count these)
        self._metrics: list[dict] = []
        self._lags: list[int] = []
        self._queue_sizes: list[int] = []
        self._idle_s = 0.0
        self._updates_in_window = 0
        self._broadcasts_in_window = 0
        self._window_start = time.perf_counter()
        # Driver side.
        self._returned: Any = None
        self._policy_ref: Any = None
        self._policy_version = 0
        self._in_flight: dict[Any, tuple[int, int]] = {}  # ref -> (worker index, version)
        self._fragments: list[tuple[SampleBatch, int]] = []

    # -- driver -----------------------------------------------------------------------------

    def step(self, state: Any) -> tuple[Any, dict | None, int]:
        if not self._streaming:
            return self._step_local(state)
        self._raise_learner_error()
        if self._thread is None:
            self._start(state)
        elif state is not self._returned:  # the trainer replaced the state (restore, weights)
            with self._lock:
                self._state = state
                self._generation += 1
            self._broadcast()
        steps = self._collect_train_batch()
        with self._lock:
            state, metrics, self._metrics = self._state, self._metrics, []
        self._returned = state
        return state, _mean_metrics(metrics), steps

    def _step_local(self, state: Any) -> tuple[Any, dict | None, int]:
        worker = self.workers.local_worker()
        start = time.perf_counter()
        if self._num_updates == 0:  # the first window starts with the first step
            self._window_start = start
        worker.set_policy(self._policy(state))
        batch = concat_envs([worker.sample() for _ in range(self.fragments_per_batch)])
        sampled = time.perf_counter()
        state, metrics = self.learner.update(state, batch.to_transition())
        metrics = jax.device_get(metrics)
        with self._lock:
            self._idle_s += sampled - start
            self._num_updates += 1
            self._updates_in_window += 1
            self._lags.extend([0] * self.fragments_per_batch)
            self._queue_sizes.append(0)
        return state, {k: float(np.mean(v)) for k, v in metrics.items()}, batch.count

    def _start(self, state: Any) -> None:
        with self._lock:
            self._state = state
            self._window_start = time.perf_counter()
        self._broadcast()
        if self._shared:
            self.workers.start_stream()
        else:
            for index, actor in self.workers.remote_workers_by_index().items():
                for _ in range(self.config.max_sample_requests_in_flight_per_worker):
                    self._request(index, actor)
        self._thread = threading.Thread(target=self._learn_loop, name="jrl-async-learner",
                                        daemon=True)
        self._thread.start()

    def _request(self, index: int, actor: Any) -> None:
        ref = actor.sample_with_episodes.remote(self._policy_ref)
        self._in_flight[ref] = (index, self._policy_version)

    def _broadcast(self) -> None:
        with self._lock:
            state, version = self._state, self._num_updates
            self._broadcasts_in_window += 1
        acting = jax.device_get(self._policy(state))
        if self._shared:  # goes out with the workers' next requests, with the other policies'
            self.workers.set_policy(acting, version=version)
        else:
            import ray

            self._policy_ref = ray.put(acting)
        self._policy_version = version

    def _collect_train_batch(self) -> int:
        """Waits for fragments until one train batch is queued; returns the env steps sampled."""
        if self._shared:
            batch, versions = self.workers.take_stream(
                self.fragments_per_batch * self.config.num_envs_per_worker)
            with self._lock:
                due = self._num_updates - self._policy_version >= self.config.broadcast_interval
            if due:
                self._broadcast()
            return self._enqueue((batch.to_transition(), versions), batch.count)
        import ray

        steps = 0
        while len(self._fragments) < self.fragments_per_batch:
            if not self._in_flight:
                raise RuntimeError("every rollout worker failed; nothing to train on")
            ready, _ = ray.wait(list(self._in_flight), num_returns=1, timeout=_POLL_S * 20)
            self._raise_learner_error()
            for ref in ready:
                index, version = self._in_flight.pop(ref)
                try:
                    batch, episodes = ray.get(ref)
                except ray.exceptions.RayError as e:
                    self._replace_worker(index, e)
                    continue
                self.workers.add_episodes(episodes)
                self._fragments.append((batch, version))
                steps += batch.count
                with self._lock:
                    due = self._num_updates - self._policy_version >= self.config.broadcast_interval
                if due:
                    self._broadcast()
                self._request(index, self.workers.remote_workers_by_index()[index])
        taken, self._fragments = (self._fragments[: self.fragments_per_batch],
                                  self._fragments[self.fragments_per_batch:])
        item = (concat_envs([b for b, _ in taken]).to_transition(), [v for _, v in taken])
        return self._enqueue(item, steps)

    def _enqueue(self, item: tuple, steps: int) -> int:
        """Puts a train batch into the learner's queue (waits while it is full)."""
        while True:
            self._raise_learner_error()
            try:
                self._queue.put(item, timeout=_POLL_S)
                return steps
            except queue.Full:
                continue

    def _replace_worker(self, index: int, error: Exception) -> None:
        """WorkerSet's failure policy: restart the worker (or drop it, or raise). Its other
        requests went to the dead actor and are forgotten; the replacement gets new ones."""
        for ref in [r for r, (i, _) in self._in_flight.items() if i == index]:
            del self._in_flight[ref]
        replacement = self.workers.handle_failure(index, error)
        if replacement is not None:
            for _ in range(self.config.max_sample_requests_in_flight_per_worker):
                self._request(index, replacement)

    def _raise_learner_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    # -- learner thread ---------------------------------------------------------------------

    def _learn_loop(self) -> None:
        try:
            while not self._stop.is_set():
                start = time.perf_counter()
                try:
                    batch, versions = self._queue.get(timeout=_POLL_S)
                except queue.Empty:
                    with self._lock:
                        self._idle_s += time.perf_counter() - start
                    continue
                size = self._queue.qsize()
                with self._lock:
                    self._idle_s += time.perf_counter() - start
                    state, generation, updates = self._state, self._generation, self._num_updates
                new_state, metrics = self.learner.update(state, batch)
                metrics = jax.device_get(metrics)  # waits for the update to finish
                with self._lock:
                    if generation == self._generation:
                        self._state = new_state
                    self._num_updates += 1
                    self._updates_in_window += 1
                    self._metrics.append({k: float(np.mean(v)) for k, v in metrics.items()})
                    self._lags.extend(updates - v for v in versions)
                    self._queue_sizes.append(size)
        except BaseException as e:  # surfaces in the driver's next step
            logger.error("learner thread failed: %r", e)
            self._error = e

    # -- results and lifecycle --------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        now = time.perf_counter()
        with self._lock:
            wall = max(now - self._window_start, 1e-9)
            sizes, lags = self._queue_sizes, self._lags
            result = {
                "learner_queue": {
                    "size_mean": float(np.mean(sizes)) if sizes else 0.0,
                    "size_max": int(max(sizes)) if sizes else 0,
                    "capacity": self.config.learner_queue_size,
                },
                "policy_lag": {"mean": float(np.mean(lags)) if lags else float("nan"),
                               "max": int(max(lags)) if lags else 0},
                "learner_idle_fraction": min(1.0, self._idle_s / wall),
                "num_learner_updates": self._updates_in_window,
                "num_weight_broadcasts": self._broadcasts_in_window,
            }
            self._queue_sizes, self._lags = [], []
            self._idle_s = 0.0
            self._updates_in_window = self._broadcasts_in_window = 0
            self._window_start = now
        return result

    def stop(self) -> None:
        """Stops and joins the learner thread; queued batches and in-flight requests are dropped."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            if self._thread.is_alive():
                logger.warning("learner thread did not stop within 60 s")
            self._thread = None
        self._in_flight.clear()
        self._fragments.clear()
        while not self._queue.empty():
            self._queue.get_nowait()
