"""Distributed prioritized replay (Ape-X): APEX and APEX_DDPG.

- **Replay shards** (``ReplayShard``): each holds one prioritized buffer
  (``jrl.replay.prioritized``, jitted on the CPU). With ``num_workers > 0`` they are Ray actors.
- **Rollout workers** sample asynchronously, each with its own exploration level (the algorithm
  module's ``worker_policy``); they postprocess their fragment into replay items, compute the
  items' initial priorities from the TD error that ``update`` reports under the weights they act
  with (``worker_side_prioritization``), and push items and priorities to a shard (round robin).
- **The learner** (this process) pulls prioritized batches that a background thread prefetches
  from the shards into a bounded queue, runs ``updates_per_fragment`` scanned updates per batch
  (one jitted call) and sends ``|td_error| + eps`` back to the shard as the new priorities.
  ``training_intensity`` keeps the replay ratio (samples trained on / env steps sampled); with
  ``None`` the learner trains on whatever the queue holds. Each ``step`` makes at most one learner
  call, after resubmitting the workers whose fragments finished, so acting weights stay fresh
  even when the learner is the bottleneck.
- **Weights** go out (one ``ray.put``) whenever ``max_weight_sync_delay`` env steps were sampled
  since the last broadcast; a worker picks them up with its next fragment.

With ``num_workers == 0`` all of it runs in-process and in order: the local worker samples into a
single local shard, then the learner samples from it.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
import weakref
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jrl.errors import CheckpointError
from jrl.execution.learner import Learner, replay_item_example, scan_updates
from jrl.replay.prioritized import (
    config_beta,
    prioritized_add,
    prioritized_init,
    prioritized_sample,
    prioritized_update,
    td_priorities,
)
from jrl.rollout.worker_set import WORKER_ENV_VARS, WorkerSet
from jrl.types import Algorithm, AlgorithmDef

logger = logging.getLogger(__name__)


class ReplayShard:
    """One prioritized replay buffer; a Ray actor with ``num_workers > 0``.

    Args:
      example: one replay item (no batch dim) whose structure, shapes and dtypes items have.
      capacity: items held.
      alpha: priority exponent.
      seed: sampling seed.
    """

    def __init__(self, example: Any, capacity: int, alpha: float, seed: int):
        self._state = prioritized_init(example, capacity)
        self._key = jax.random.PRNGKey(seed)
        self._add = jax.jit(lambda s, x, p: prioritized_add(s, x, p, alpha), donate_argnums=0)
        self._add_max = jax.jit(lambda s, x: prioritized_add(s, x, None, alpha),
                                donate_argnums=0)
        self._update = jax.jit(lambda s, i, p: prioritized_update(s, i, p, alpha),
                               donate_argnums=0)

        def sample(state, key, batch_size, count, beta):
            def one(k):
                batch, index, weight = prioritized_sample(state, k, batch_size, beta)
                return batch._replace(weight=weight), index
            return jax.vmap(one)(jax.random.split(key, count))

        self._sample = jax.jit(sample, static_argnums=(2, 3))
        self.num_added = 0
        self.num_sampled = 0
        self.num_priority_updates = 0

    def add(self, items: Any, priorities: Any = None) -> int:
        """Adds items ``[M]`` (with raw priorities ``[M]``, or the max priority); returns the
        shard's size."""
        if priorities is None:
            self._state = self._add_max(self._state, items)
        else:
            self._state = self._add(self._state, items, priorities)
        self.num_added += len(priorities) if priorities is not None else \
            len(jax.tree.leaves(items)[0])
        return int(self._state.size)

    def sample(self, batch_size: int, count: int, beta: float) -> tuple[Any, np.ndarray] | None:
        """``count`` prioritized batches ``[count, batch_size]`` with importance weights and
        their indices, or ``None`` while the shard is empty."""
        if int(self._state.size) == 0:
            return None
        self._key, key = jax.random.split(self._key)
        batches, index = self._sample(self._state, key, batch_size, count,
                                      jnp.asarray(beta, jnp.float32))
        self.num_sampled += batch_size * count
        return jax.device_get((batches, index))

    def update_priorities(self, index: Any, priorities: Any) -> None:
        """Sets items ``index [K, N]`` to raw priorities ``[K, N]``, batch by batch."""
        index, priorities = np.asarray(index), np.asarray(priorities)
        for k in range(index.shape[0]):
            self._state = self._update(self._state, index[k], priorities[k])
        self.num_priority_updates += index.size

    def stats(self) -> dict[str, Any]:
        return {"size": int(self._state.size), "added": self.num_added,
                "sampled": self.num_sampled, "priority_updates": self.num_priority_updates,
                "total_priority": float(self._state.tree[1])}

    def get_buffer(self) -> Any:
        """The buffer (``PrioritizedReplayState``, host arrays) for a checkpoint."""
        return jax.device_get(self._state)

    def set_buffer(self, buffer: Any) -> None:
        """Replaces the buffer with one from :meth:`get_buffer` (same capacity and items)."""
        self._state = jax.tree.map(jnp.asarray, buffer)

    def get_state(self) -> dict[str, Any]:
        """The sampling key and counters (JSON-able), for exact resume."""
        return {"key": np.asarray(self._key).tolist(),
                "added": self.num_added, "sampled": self.num_sampled,
                "priority_updates": self.num_priority_updates}

    def set_state(self, state: dict[str, Any]) -> None:
        self._key = jnp.asarray(np.asarray(state["key"], np.uint32))
        self.num_added = int(state.get("added", 0))
        self.num_sampled = int(state.get("sampled", 0))
        self.num_priority_updates = int(state.get("priority_updates", 0))


# Per rollout-worker process: the worker's jitted postprocess and td-error functions.
_WORKER_FNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _sample_into_replay(worker: Any, policy: Any, learner_state: Any, shard: Any,
                        worker_side_prioritization: bool, eps: float,
                        num_workers: int) -> tuple[int, list[dict]]:
    """Runs on a rollout worker: one fragment under the worker's own exploration, postprocessed
    into replay items (with initial priorities) and pushed to ``shard``."""
    fns = _WORKER_FNS.get(worker)
    if fns is None:
        definition, config, update = worker.definition, worker.config, worker.algorithm.update
        to_items = definition.require("postprocess")
        fns = _WORKER_FNS[worker] = (
            jax.jit(lambda fragment: to_items(config, fragment)),
            jax.jit(lambda state, items: update(state, items)[1]["td_error"]),
            definition.worker_policy)
    postprocess, td_error, worker_policy = fns
    if worker_policy is not None:
        policy = worker_policy(worker.config, policy, worker.worker_index, num_workers)
    worker.set_policy(policy)
    batch = worker.sample()
    items = postprocess(batch.to_transition())
    priorities = None
    if worker_side_prioritization:
        priorities = np.asarray(td_priorities(td_error(learner_state, items), eps))
    items = jax.device_get(items)
    if hasattr(shard.add, "remote"):
        import ray

        ray.get(shard.add.remote(items, priorities))
    else:
        shard.add(items, priorities)
    return batch.count, worker.pop_episodes() if worker.worker_index > 0 else []


def _remote_shard_class():
    import ray

    python_path = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
    # Shards only move arrays: no CPU reserved, so they fit beside the rollout workers.
    return ray.remote(num_cpus=0, max_restarts=0, runtime_env={
        "env_vars": {**WORKER_ENV_VARS, "PYTHONPATH": python_path}})(ReplayShard)


class DistributedReplayPlan:
    """Each ``step`` collects finished fragments (resubmitting their workers), then runs the
    learner as far as the replay ratio allows."""

    def __init__(self, definition: AlgorithmDef, algorithm: Algorithm, workers: WorkerSet,
                 config: Any, spec: Any):
        self.algorithm = algorithm
        self.workers = workers
        self.config = config
        example = jax.device_get(replay_item_example(definition, config, spec))
        self.num_updates_per_call = config.updates_per_fragment
        self._policy = jax.jit(algorithm.policy)
        self._distributed = bool(workers.remote_workers())
        num_shards = config.num_replay_buffer_shards if self._distributed else 1
        capacity = max(1, config.buffer_size // num_shards)
        if self._distributed:
            shard_cls = _remote_shard_class()
            self.shards = [shard_cls.remote(example, capacity, config.prioritized_replay_alpha,
                                            config.seed * 100 + i) for i in range(num_shards)]
        else:
            self.shards = [ReplayShard(example, capacity, config.prioritized_replay_alpha,
                                       config.seed * 100)]
        self.learner = Learner.for_algorithm(definition, algorithm, config, spec,
                                             config.train_batch_size, wrap=scan_updates)
        self._env_steps = 0
        self._steps_at_sync = None
        self._weights_ref = None
        self._pending: dict[Any, int] = {}
        self._next_shard = 0
        self._num_updates = 0
        self._learn_time = 0.0
        self._timed_updates = 0
        self._start_time = time.time()
        self._queue: queue.Queue = queue.Queue(maxsize=config.learner_queue_size)
        self._stop = threading.Event()
        self._beta = float(config.prioritized_replay_beta)
        self._thread: threading.Thread | None = None
        self._thread_error: BaseException | None = None

    # -- acting -------------------------------------------------------------------------------

    def _broadcast(self, state: Any) -> None:
        """New weights (acting pytree and, for worker-side priorities, the learner state)."""
        payload = jax.device_get((self._policy(state), state))
        if self._distributed:
            import ray

            self._weights_ref = ray.put(payload)
        else:
            self._weights_ref = payload
        self._steps_at_sync = self._env_steps

    def _submit(self, index: int) -> None:
        shard = self.shards[self._next_shard % len(self.shards)]
        self._next_shard += 1
        ref = self.workers.submit(index, _run_with_weights, self._weights_ref, shard,
                                  self.config.worker_side_prioritization,
                                  self.config.prioritized_replay_eps, self.config.num_workers)
        self._pending[ref] = index

    def _collect(self, block: bool) -> int:
        """Finished fragments' env steps; their workers get the next task at once."""
        import ray

        if not self._pending:
            for index in self.workers.remote_workers_by_index():
                self._submit(index)
        ready, _ = ray.wait(list(self._pending), num_returns=len(self._pending), timeout=0)
        if not ready and block:
            ready, _ = ray.wait(list(self._pending), num_returns=1)
        steps = 0
        for ref in ready:
            index = self._pending.pop(ref)
            try:
                count, episodes = ray.get(ref)
            except ray.exceptions.RayError as e:
                # WorkerSet's failure policy: recreate, drop, or raise.
                if self.workers.handle_failure(index, e) is not None:
                    self._submit(index)
                continue
            steps += count
            self.workers.add_episodes(episodes)
            self._submit(index)
        return steps

    # -- learning -----------------------------------------------------------------------------

    def _sample_from(self, shard: Any) -> Any:
        args = (self.config.train_batch_size, self.num_updates_per_call, self._beta)
        if self._distributed:
            import ray

            return ray.get(shard.sample.remote(*args))
        return shard.sample(*args)

    def _prefetch(self) -> None:
        """Background thread: keeps the learner queue full of prioritized batches."""
        try:
            i = 0
            while not self._stop.is_set():
                shard_index = i % len(self.shards)
                i += 1
                sampled = self._sample_from(self.shards[shard_index])
                if sampled is None:
                    time.sleep(0.01)
                    continue
                while not self._stop.is_set():
                    try:
                        self._queue.put((shard_index, *sampled), timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as e:  # surfaced by the next step
            if not self._stop.is_set():
                self._thread_error = e

    def _next_batches(self, timeout: float) -> Any:
        if not self._distributed:
            sampled = self._sample_from(self.shards[0])
            return None if sampled is None else (0, *sampled)
        if self._thread is None:
            self._thread = threading.Thread(target=self._prefetch, name="jrl-replay-prefetch",
                                            daemon=True)
            self._thread.start()
        if self._thread_error is not None:
            raise RuntimeError(f"replay prefetch failed: {self._thread_error}") \
                from self._thread_error
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def _updates_due(self) -> int:
        """Learner calls the replay ratio allows now (``None`` intensity: one)."""
        cfg = self.config
        if self._env_steps < cfg.learning_starts:
            return 0
        if cfg.training_intensity is None:
            return 1
        target = cfg.training_intensity * (self._env_steps - cfg.learning_starts) / (
            cfg.train_batch_size * self.num_updates_per_call)
        return max(0, int(target) + 1 - self._num_updates // self.num_updates_per_call)

    def _learn(self, state: Any, due: int) -> tuple[Any, list[dict]]:
        metrics_list = []
        for _ in range(due):
            start = time.time()
            got = self._next_batches(self.config.min_sample_timeout_s)
            if got is None:
                break
            shard_index, batches, index = got
            state, metrics = self.learner.update(state, batches)
            metrics = dict(metrics)
            td = np.asarray(metrics.pop("td_error"))
            priorities = np.abs(td) + self.config.prioritized_replay_eps
            shard = self.shards[shard_index]
            if self._distributed:
                shard.update_priorities.remote(index, priorities)
            else:
                shard.update_priorities(index, priorities)
            metrics_list.append(metrics)
            if self._num_updates:  # the first call compiles: left out of the throughput
                self._learn_time += time.time() - start
                self._timed_updates += self.num_updates_per_call
            self._num_updates += self.num_updates_per_call
        return state, metrics_list

    # -- the plan -----------------------------------------------------------------------------

    def step(self, state: Any) -> tuple[Any, dict | None, int]:
        cfg = self.config
        if self._weights_ref is None or (
                self._env_steps - self._steps_at_sync >= cfg.max_weight_sync_delay):
            self._broadcast(state)
        if self._distributed:
            due = self._updates_due()
            steps = self._collect(block=due == 0)
        else:
            steps = _run_with_weights(self.workers.local_worker(), self._weights_ref,
                                      self.shards[0], cfg.worker_side_prioritization,
                                      cfg.prioritized_replay_eps, 0)[0]
        self._env_steps += steps
        state = state._replace(env_steps=state.env_steps + steps)
        self._beta = float(config_beta(cfg, self._env_steps))
        due = self._updates_due()
        if self._distributed:
            # One learner call per step: between calls the finished workers are resubmitted
            # with the newest weights, so acting never lags far behind learning.
            due = min(due, 1)
        state, metrics_list = self._learn(state, due)
        if not metrics_list:
            return state, None, steps
        metrics = jax.tree.map(lambda *xs: jnp.mean(jnp.stack(xs)), *metrics_list)
        return state, metrics, steps

    def stats(self) -> dict[str, Any]:
        """Per-shard sizes and learner throughput for the result dict."""
        if self._distributed:
            import ray

            shard_stats = ray.get([s.stats.remote() for s in self.shards])
        else:
            shard_stats = [s.stats() for s in self.shards]
        elapsed = max(time.time() - self._start_time, 1e-9)
        learn = max(self._learn_time, 1e-9)
        samples = self._timed_updates * self.config.train_batch_size
        shards = {f"{key}_{i}": s[key] for i, s in enumerate(shard_stats)
                  for key in ("size", "added", "sampled", "priority_updates")}
        return {"replay_shards": shards,
                "learner_throughput": {
                    "num_updates": self._num_updates,
                    "updates_per_s": self._timed_updates / learn,
                    "samples_per_s": samples / learn,
                    "learner_busy_frac": min(1.0, self._learn_time / elapsed),
                    "queue_size": self._queue.qsize(),
                    "env_steps_per_s": self._env_steps / elapsed}}

    # -- checkpoints --------------------------------------------------------------------------

    def _call_shards(self, method: str, *per_shard_args: Any) -> list[Any]:
        """Calls ``method`` on every shard (remote or local), with the i-th of each argument."""
        args = list(zip(*per_shard_args, strict=True)) if per_shard_args else \
            [()] * len(self.shards)
        if self._distributed:
            import ray

            return ray.get([getattr(s, method).remote(*a) for s, a in zip(self.shards, args,
                                                                           strict=True)])
        return [getattr(s, method)(*a) for s, a in zip(self.shards, args, strict=True)]

    @property
    def replay_buffer_size(self) -> int:
        """Items in all replay shards together now."""
        return sum(s["size"] for s in self._call_shards("stats"))

    @property
    def replay(self) -> dict[str, Any]:
        """Every shard's buffer, ``{"shard_<i>": PrioritizedReplayState}`` (the checkpoint's
        ``replay`` part with ``store_buffer_in_checkpoints``)."""
        return {f"shard_{i}": b for i, b in enumerate(self._call_shards("get_buffer"))}

    @replay.setter
    def replay(self, buffers: dict[str, Any]) -> None:
        if len(buffers) != len(self.shards):  # restore_state checks the layout before this
            raise CheckpointError(f"the checkpoint holds {len(buffers)} replay shards, this "
                                  f"trainer has {len(self.shards)} (num_replay_buffer_shards)")
        self._call_shards("set_buffer", [buffers[f"shard_{i}"] for i in range(len(buffers))])

    def get_state(self) -> dict[str, Any]:
        """Counters and each shard's sampling key and counters. Batches in the learner queue
        and fragments still being sampled are not saved: after a restore the learner draws
        new batches from the (saved) shards, the workers sample new fragments, and the first
        step broadcasts the restored weights."""
        return {"env_steps": self._env_steps, "num_updates": self._num_updates,
                "next_shard": self._next_shard,
                "shards": self._call_shards("get_state")}

    def set_state(self, state: dict[str, Any]) -> None:
        self._env_steps = int(state.get("env_steps", self._env_steps))
        self._num_updates = int(state.get("num_updates", self._num_updates))
        self._next_shard = int(state.get("next_shard", self._next_shard))
        self._beta = float(config_beta(self.config, self._env_steps))
        shards = state.get("shards")
        if isinstance(shards, list) and len(shards) == len(self.shards):
            self._call_shards("set_state", shards)

    def stop(self) -> None:
        """Stops the prefetch thread and the shard actors."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._distributed:
            import ray

            for ref in list(self._pending):
                try:
                    ray.cancel(ref, force=False)
                except Exception:  # finished or its worker is gone
                    pass
            self._pending.clear()
            for shard in self.shards:
                try:
                    ray.kill(shard, no_restart=True)
                except Exception:  # already gone
                    pass
            self.shards = []


def _run_with_weights(worker: Any, weights: Any, shard: Any, worker_side_prioritization: bool,
                      eps: float, num_workers: int) -> tuple[int, list[dict]]:
    policy, learner_state = weights
    return _sample_into_replay(worker, policy, learner_state, shard, worker_side_prioritization,
                               eps, num_workers)
