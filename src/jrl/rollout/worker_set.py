"""The set of rollout workers a trainer samples with (RLlib's ``WorkerSet``).

With ``num_workers == 0`` the trainer's own (local) worker samples and Ray is never imported.
With ``num_workers > 0`` rollout workers are Ray actors pinned to the CPU; each iteration the
acting pytree goes out once through the object store (one ``ray.put``), every worker samples a
fragment, and fragments are concatenated along the env axis. A worker that dies is replaced and
its fragment re-sampled, so an iteration never trains on a short batch.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from jrl.errors import ConfigError
from jrl.logger import PHASES
from jrl.networks.custom import ModelCatalog
from jrl.rollout.envs import registered_creator
from jrl.rollout.worker import RolloutWorker, SampleBatch
from jrl.types import AlgorithmDef

logger = logging.getLogger(__name__)

# Rollout actors act on the CPU with one XLA thread each, so N workers use N cores.
WORKER_ENV_VARS = {
    "JAX_PLATFORMS": "cpu",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    "RAY_AUTH_MODE": "disabled",
}


def init_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Starts a local Ray instance sized to the machine, or joins ``address``.

    Returns True when this call started (or joined) Ray, False when it was already running.
    """
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True,
                              "logging_level": logging.WARNING}
    if address:
        check_reachable(address)
        kwargs["address"] = address
    else:
        kwargs["num_cpus"] = num_cpus or os.cpu_count()
    try:
        with PHASES.phase("build: Ray start"):
            ray.init(**kwargs)
    except (ConnectionError, ValueError, RuntimeError) as e:
        where = f"the Ray cluster at '{address}'" if address else "a local Ray instance"
        raise ConfigError(f"cannot start or join {where}: {e}") from None
    return True


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Raises ``ConfigError`` at once when ``address`` (``host:port`` or ``ray://host:port``)
    does not accept a connection, instead of letting Ray retry for minutes."""
    import socket

    target = address.split("://", 1)[-1]
    host, sep, port = target.rpartition(":")
    if address == "auto" or not sep:
        return
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--address '{address}' must be 'auto' or host:port")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as e:
        reason = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise ConfigError(f"cannot reach the Ray cluster at '{address}': {reason}") from None


def _remote_worker_class(config: Any, worker_class: type = RolloutWorker):
    import ray

    resources = dict(config.custom_resources_per_worker)
    # Workers import what the driver can (envs and callbacks defined in the user's modules).
    python_path = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
    env_vars = {**WORKER_ENV_VARS, "PYTHONPATH": python_path}
    return ray.remote(
        num_cpus=config.num_cpus_per_worker, num_gpus=config.num_gpus_per_worker,
        resources=resources or None, max_restarts=0,
        runtime_env={"env_vars": env_vars})(worker_class)


class WorkerSet:
    """A local worker plus (with ``num_workers > 0``) remote ones; fans calls out to all.

    Args:
      local_worker: the trainer's own worker (always there: it knows the spaces and serves
        ``compute_action``).
      remote_factory: ``factory(index) -> actor handle`` for remote worker ``index`` (1..N), used
        to create and to recreate workers.
      num_remote: number of remote workers to create.
      config: the algorithm config (failure policy).
    """

    def __init__(self, local_worker: RolloutWorker, remote_factory: Callable[[int], Any] | None
                 = None, num_remote: int = 0, config: Any = None):
        self._local = local_worker
        self._factory = remote_factory
        self._config = config if config is not None else local_worker.config
        self._remote: dict[int, Any] = {}
        for index in range(1, num_remote + 1):
            self._remote[index] = remote_factory(index)
        self.num_worker_restarts = 0
        self._policy_ref = None
        self._pending_episodes: list[dict] = []
        if self._remote:
            self._check_remote_workers()

    @classmethod
    def create(cls, env_id: str, config: Any, definition: AlgorithmDef, *,
               video_dir: str | None = None, address: str | None = None,
               worker_class: type = RolloutWorker) -> WorkerSet:
        """Workers of ``worker_class`` (``RolloutWorker``, or the multi-agent one)."""
        local = worker_class(env_id, config, definition, worker_index=0, video_dir=video_dir)
        if config.num_workers == 0:
            return cls(local)
        init_ray(address)
        remote_cls = _remote_worker_class(config, worker_class)
        # Envs registered in this process travel with the worker (Ray serializes the creator).
        creator = registered_creator(env_id)
        # So do custom models, preprocessors and action distributions.
        models = ModelCatalog.registrations()

        def factory(index: int):
            return remote_cls.remote(env_id, config, definition, worker_index=index,
                                     env_creator=creator, model_registrations=models)

        return cls(local, factory, config.num_workers, config)

    def _check_remote_workers(self) -> None:
        import ray

        try:
            specs = ray.get([w.get_spec.remote() for w in self._remote.values()])
        except ray.exceptions.RayError as e:
            raise ConfigError(f"rollout workers failed to start: {_first_line(e)}") from None
        if any(spec != self._local.spec for spec in specs):
            raise ConfigError("remote rollout workers see a different env spec than the "
                              "trainer's local worker")

    # -- access ---------------------------------------------------------------------------------

    def local_worker(self) -> RolloutWorker:
        return self._local

    def remote_workers(self) -> list:
        return list(self._remote.values())

    def remote_workers_by_index(self) -> dict[int, Any]:
        """The live remote workers by index (1..N; a replacement keeps its predecessor's)."""
        return dict(self._remote)

    def submit(self, index: int, fn: Callable[..., Any], *args: Any) -> Any:
        """Starts ``fn(worker, *args)`` on remote worker ``index``; returns its object ref
        (plans collect refs with ``ray.wait`` and report failures to ``handle_failure``)."""
        return self._remote[index].apply.remote(fn, *args)

    @property
    def num_envs(self) -> int:
        """Envs that sample each round: the local worker's, or all remote workers'."""
        if self._remote:
            return len(self._remote) * self._config.num_envs_per_worker
        return self._local.num_envs

    # -- fan-out --------------------------------------------------------------------------------

    def foreach_worker(self, fn: Callable[[RolloutWorker], Any]) -> list:
        """``[fn(local_worker), *(fn(w) for w in remote_workers)]``."""
        return self.foreach_worker_with_index(lambda w, _: fn(w))

    def foreach_worker_with_index(self, fn: Callable[[RolloutWorker, int], Any]) -> list:
        """``fn(worker, index)`` with index 0 for the local worker and 1..N for remote ones."""
        results = [fn(self._local, 0)]
        if self._remote:
            import ray

            refs = [w.sync_and_apply.remote(self._policy_ref, fn, index)
                    for index, w in self._remote.items()]
            results.extend(ray.get(refs))
        return results

    def foreach_env(self, fn: Callable[[Any], Any]) -> list[list]:
        """``fn(env)`` for every env of every worker; one list per worker."""
        return self.foreach_worker(lambda w: w.foreach_env(fn))

    # -- sampling -------------------------------------------------------------------------------

    def set_policy(self, policy: Any) -> None:
        """Sends the acting pytree (weights, filter statistics, epsilon) to every worker: one
        ``ray.put``; workers fetch it with their next sample request."""
        if not self._remote:
            self._local.set_policy(policy)
            return
        import ray

        host_policy = jax.device_get(policy)
        self._local.set_policy(host_policy)
        self._policy_ref = ray.put(host_policy)

    @property
    def policy_ref(self) -> Any:
        """The object ref of the acting pytree last sent by ``set_policy`` (None without remote
        workers): plans that issue their own sample requests pass it along."""
        return self._policy_ref

    def sample(self) -> SampleBatch:
        """One fragment from each sampling worker, ``[T, sum(B)]``."""
        if not self._remote:
            return self._local.sample()
        import ray

        timeout_s = getattr(self._config, "sample_timeout_s", None)
        pending = {w.sample_with_episodes.remote(self._policy_ref): index
                   for index, w in self._remote.items()}
        started = dict.fromkeys(pending, time.monotonic())
        batches: dict[int, SampleBatch] = {}
        while pending:
            wait = None
            if timeout_s is not None:
                wait = max(0.0, min(started[r] for r in pending) + timeout_s - time.monotonic())
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=wait)
            if not ready:  # a worker's fragment is overdue: replace it like a crashed one
                ref = min(pending, key=started.get)
                index = pending.pop(ref)
                error: Exception = TimeoutError(
                    f"no fragment within sample_timeout_s={timeout_s:g}s (a hung env?)")
                replacement = self.handle_failure(index, error)
                if replacement is not None:
                    # the clock starts once the new worker is up (start-up is not sampling)
                    ray.get(replacement.get_spec.remote())
                    new = replacement.sample_with_episodes.remote(self._policy_ref)
                    pending[new], started[new] = index, time.monotonic()
                continue
            ref = ready[0]
            index = pending.pop(ref)
            try:
                batch, episodes = ray.get(ref)
            except ray.exceptions.RayError as e:
                replacement = self.handle_failure(index, e)
                if replacement is not None:
                    new = replacement.sample_with_episodes.remote(self._policy_ref)
                    pending[new], started[new] = index, time.monotonic()
                continue
            batches[index] = batch
            self._pending_episodes.extend(episodes)
        if not batches:
            raise RuntimeError("every rollout worker failed; nothing to train on")
        ordered = [batches[i] for i in sorted(batches)]
        concat = getattr(type(ordered[0]), "concat", None)  # multi-agent batches
        if concat is not None:
            return concat(ordered)
        return SampleBatch({k: np.concatenate([b[k] for b in ordered], axis=1)
                            for k in ordered[0]})

    def handle_failure(self, index: int, error: Exception) -> Any:
        """Applies the failure policy to remote worker ``index`` after ``error``: with
        ``recreate_failed_workers`` returns a fresh worker under the same index, with
        ``ignore_worker_failures`` drops it and returns None, otherwise raises."""
        import ray

        cfg = self._config
        logger.warning("rollout worker %d failed: %s", index, _first_line(error))
        try:
            ray.kill(self._remote[index], no_restart=True)
        except Exception:  # already gone
            pass
        if cfg.recreate_failed_workers:
            self._remote[index] = self._factory(index)
            self.num_worker_restarts += 1
            return self._remote[index]
        if cfg.ignore_worker_failures:
            del self._remote[index]
            return None
        raise RuntimeError(f"rollout worker {index} failed: {_first_line(error)} (set "
                           "recreate_failed_workers or ignore_worker_failures to go on)") from error

    def get_sampler_states(self) -> list[dict]:
        """Every worker's ``get_sampler_state()`` (local first, then remote ones by index)."""
        return self.foreach_worker(lambda w: w.get_sampler_state())

    def set_sampler_states(self, states: list[dict]) -> None:
        """Gives each worker its state from ``get_sampler_states``; workers beyond the list
        (a different ``num_workers``) keep sampling from where they are."""
        self.foreach_worker_with_index(
            lambda w, i: w.set_sampler_state(states[i]) if i < len(states) else None)

    def add_episodes(self, episodes: list[dict]) -> None:
        """Statistics of episodes that reached the driver outside ``sample()`` (remote
        workers' episodes collected by a plan, or ES's own rollouts); the next
        ``pop_episodes`` returns them."""
        self._pending_episodes.extend(episodes)

    def pop_episodes(self) -> list[dict]:
        episodes, self._pending_episodes = self._pending_episodes, []
        if not self._remote:
            return self._local.pop_episodes() + episodes
        return episodes

    def stop(self) -> None:
        self._local.close()
        if self._remote:
            import ray

            for w in self._remote.values():
                try:
                    ray.kill(w, no_restart=True)
                except Exception:  # already gone
                    pass
            self._remote.clear()


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[-1] if text else type(error).__name__
