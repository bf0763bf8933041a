"""The set of rollout workers a trainer samples with (RLlib's ``WorkerSet``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jrl.rollout.worker import RolloutWorker, SampleBatch


class WorkerSet:
    """A local worker plus (with ``num_workers > 0``) remote ones; fans calls out to all."""

    def __init__(self, local_worker: RolloutWorker, remote_workers: list | None = None):
        self._local = local_worker
        self._remote = list(remote_workers or [])

    def local_worker(self) -> RolloutWorker:
        return self._local

    def remote_workers(self) -> list:
        return list(self._remote)

    def _sampling_workers(self) -> list:
        return self._remote or [self._local]

    def foreach_worker(self, fn: Callable[[RolloutWorker], Any]) -> list:
        """``[fn(local_worker), *(fn(w) for w in remote_workers)]``."""
        return [fn(self._local)]

    def foreach_worker_with_index(self, fn: Callable[[RolloutWorker, int], Any]) -> list:
        """``fn(worker, index)`` with index 0 for the local worker and 1..N for remote ones."""
        return [fn(self._local, 0)]

    def foreach_env(self, fn: Callable[[Any], Any]) -> list[list]:
        return self.foreach_worker(lambda w: w.foreach_env(fn))

    def set_policy(self, policy: Any) -> None:
        """Sends the acting pytree (weights, filter statistics, epsilon) to every worker."""
        for worker in self._sampling_workers():
            worker.set_policy(policy)

    def sample(self) -> SampleBatch:
        """One fragment from each sampling worker, ``[T, sum(B)]``."""
        return self._local.sample()

    def pop_episodes(self) -> list[dict]:
        return [e for w in self._sampling_workers() for e in w.pop_episodes()]

    @property
    def num_envs(self) -> int:
        return sum(w.num_envs for w in self._sampling_workers())

    def stop(self) -> None:
        self._local.close()
