"""The worker backend: gymnasium envs sampled by rollout workers, one execution plan step at a
time (see ``jrl.execution``)."""

from __future__ import annotations

import time
from typing import Any

import jax
import numpy as np

from jrl import registry
from jrl.backends import Iteration, check_update, jit_init
from jrl.errors import ConfigError, NumericError
from jrl.logger import PHASES
from jrl.rollout.evaluation import run_episodes
from jrl.rollout.policy import DEFAULT_POLICY_ID
from jrl.rollout.worker_set import WorkerSet
from jrl.types import AlgorithmDef


class WorkerBackend:
    """Rollout workers (local, plus Ray actors with ``num_workers > 0``), the learner state and
    the algorithm's execution plan.

    Args:
      definition: the algorithm record.
      config: the algorithm's frozen config.
      env_id: gymnasium id or registered env name.
      eval_config: the config evaluation episodes run with.
      video_dir: where ``monitor`` records the first env's episodes.
      address: Ray cluster to join with ``num_workers > 0``.
    """

    def __init__(self, definition: AlgorithmDef, config: Any, env_id: str, *, eval_config: Any,
                 video_dir: str | None = None, address: str | None = None, **_: Any):
        if config.num_seeds > 1:
            raise ConfigError(f"num_seeds={config.num_seeds} needs a JAX env (e.g. "
                              f"'gymnax:CartPole-v1'); '{env_id}' is a gymnasium env")
        self.definition = definition
        self.config = config
        self.eval_config = eval_config
        with PHASES.phase("build: envs + workers (Ray start with num_workers > 0)"):
            self.workers = WorkerSet.create(env_id, config, definition, video_dir=video_dir,
                                            address=address)
        local = self.workers.local_worker()
        self.spec = local.spec
        self.algorithm = local.algorithm
        self.callbacks = local.callbacks
        self.observation_space = local.env.single_observation_space
        self.action_space = local.action_space
        self.policy_map = local.policy_map
        with PHASES.phase("build: init (run)"):
            self.state = jax.block_until_ready(
                jit_init(self.algorithm.init)(jax.random.PRNGKey(config.seed)))
        self._acting = jax.jit(self.algorithm.policy)
        self.policy_map[DEFAULT_POLICY_ID].bind_learner(self._get_state, self._set_state)
        self.plan = registry.plan_class(definition.plan)(
            definition, self.algorithm, self.workers, config, self.spec)

    def _get_state(self) -> Any:
        return self.state

    def _set_state(self, state: Any) -> None:
        # The policy's set_weights: the workers act with the new weights from now on.
        self.state = state
        self.workers.set_policy(self._acting(state))

    def run_iteration(self, start: float, iteration: int, timesteps_total: int) -> Iteration:
        """Plan steps until the iteration's step and time minimums are met."""
        cfg = self.config
        steps, metrics_list = 0, []
        previous = self.state
        while True:
            self.state, metrics, n = self.plan.step(self.state)
            steps += n
            if metrics is not None:
                metrics_list.append(metrics)
            if steps >= cfg.timesteps_per_iteration and \
                    time.time() - start >= cfg.min_iter_time_s:
                break
        learner = {}
        if metrics_list:
            learner = jax.tree.map(lambda *xs: float(np.mean([np.asarray(x) for x in xs])),
                                   *metrics_list)
        try:
            check_update(learner, self.state, iteration)
        except NumericError:
            self._set_state(previous)  # workers act with the last good weights again
            raise
        # Every worker gets the learner's weights (remote ones take them with their next call).
        self.workers.set_policy(self._acting(self.state))
        # Plans with their own bookkeeping (queue sizes, staleness, idle time) report it here.
        extra = self.plan.stats() if hasattr(self.plan, "stats") else {}
        extra.update(num_healthy_workers=len(self.workers.remote_workers()),
                     num_worker_restarts=self.workers.num_worker_restarts)
        episodes = self.workers.pop_episodes()
        return Iteration(steps, learner, episodes, len(episodes), extra)

    def rollout_episodes(self, num_episodes: int, *, explore: bool = False, seed: int = 10_000,
                         max_steps: int | None = None, record: bool = False) -> list[dict]:
        policy = self.policy_map[DEFAULT_POLICY_ID]
        return run_episodes(policy.episode_actor(), policy.acting, policy.preprocessor,
                            self.eval_config.env, self.eval_config, num_episodes,
                            explore=explore, seed=seed, max_steps=max_steps, record=record)

    def checkpoint_state(self) -> Any:
        return self.state

    def load_checkpoint_state(self, state: Any) -> None:
        self._set_state(state)

    @property
    def replay_buffer_size(self) -> int | None:
        size = getattr(self.plan, "replay_buffer_size", None)
        return None if size is None else int(size)

    def checkpoint_parts(self, *, include_replay: bool | None = None) -> dict[str, Any]:
        """The array parts a checkpoint holds: ``algo`` (the learner state) and, with
        ``store_buffer_in_checkpoints`` (or ``include_replay``), ``replay``."""
        parts = {"algo": self.state}
        keep = self.config.store_buffer_in_checkpoints if include_replay is None else include_replay
        if keep and getattr(self.plan, "replay", None) is not None:
            parts["replay"] = self.plan.replay
        return parts

    def checkpoint_extra(self) -> dict[str, Any]:
        """JSON-able resume state: each worker's sampler and the plan's counters."""
        extra: dict[str, Any] = {"sampler": self.workers.get_sampler_states()}
        if hasattr(self.plan, "get_state"):
            extra["plan"] = self.plan.get_state()
        return extra

    def load_checkpoint(self, parts: dict[str, Any], extra: dict[str, Any]) -> None:
        self._set_state(parts["algo"])
        if "replay" in parts:
            self.plan.replay = parts["replay"]
        if isinstance(extra.get("plan"), dict) and hasattr(self.plan, "set_state"):
            self.plan.set_state(extra["plan"])
        if isinstance(extra.get("sampler"), list):
            self.workers.set_sampler_states(extra["sampler"])

    def stop(self) -> None:
        """Stops the plan's threads (if any) and the workers."""
        stop_plan = getattr(self.plan, "stop", None)
        if stop_plan is not None:
            stop_plan()
        self.workers.stop()
