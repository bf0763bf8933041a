"""The multi-agent backend: several policies, each with its own learner state and plan.

Multi-agent rollout workers (local, plus Ray actors with ``num_workers > 0``) sample every
policy's agents together. Each trained policy runs the algorithm's own execution plan (on-policy,
off-policy, async-samples or offline) on a ``PolicyWorkers`` view that hands it only that
policy's transitions, in ``[rollout_fragment_length, B]`` fragments cut from its agents' steps
(offline plans read the policy's own batches of ``MultiAgentBatch`` lines from ``input``). So every policy keeps its
own batch, learner state, optimizer and replay buffer, and a policy outside
``policies_to_train`` is never updated (its state stays bit-for-bit the same).

IMPALA and APPO with Ray workers stream: every remote worker keeps
``max_sample_requests_in_flight_per_worker`` sample requests queued, each finished fragment is
split by policy into that policy's queue, and each trained policy's plan (its own learner
thread and V-trace learner) takes ``[T, B]`` train batches of its own steps from there. A
policy's new weights go out with the workers' next requests (one ``ray.put`` of every policy's
weights), after every ``broadcast_interval`` updates of that policy.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import numpy as np

from jrl import registry
from jrl.backends import Iteration, jit_init
from jrl.errors import ConfigError
from jrl.rollout.multi_agent import MultiAgentRolloutWorker, run_multi_agent_episodes
from jrl.rollout.multi_agent_env import is_multi_agent_env_id
from jrl.rollout.policy import Policy
from jrl.rollout.worker import SampleBatch
from jrl.rollout.worker_set import WorkerSet
from jrl.types import AlgorithmDef

MULTI_AGENT_PLANS = ("on_policy", "off_policy", "async_samples", "offline")
# Sampling rounds without a single step for a policy that needs some before giving up.
_MAX_EMPTY_ROUNDS = 200
_MAX_QUEUED_FRAGMENTS = 4


def is_multi_agent(config: Any) -> bool:
    """Whether ``config`` trains several policies or its env is a ``MultiAgentEnv``."""
    return bool(config.multiagent.policies) or is_multi_agent_env_id(config.env,
                                                                     config.env_config)


class _Sampler:
    """Samples rounds from the multi-agent workers and queues each trained policy's steps.

    ``fresh_only`` (on-policy plans): a policy's queued steps sampled before its last update
    are dropped, so it only learns from its current weights.

    ``start_stream`` (IMPALA/APPO with Ray workers) switches to streaming: sample requests stay
    queued on every remote worker, and each queued piece remembers the weights version of its
    policy that sampled it (``stream_versions``, set by the policy's plan).
    """

    def __init__(self, workers: WorkerSet, trained: list[str], fresh_only: bool):
        self.workers = workers
        self.queues: dict[str, list] = {pid: [] for pid in trained}
        self.versions = {pid: 0 for pid in trained}
        self.fresh_only = fresh_only
        self.actings: dict[str, Any] = {}  # every policy's acting pytree, as the workers have it
        self.dirty = False
        self.env_steps = 0
        self.agent_steps = 0
        self.streaming = False
        self.stream_versions = {pid: 0 for pid in trained}
        self._ref: Any = None
        self._ref_versions: dict[str, int] = {}
        self._in_flight: dict[Any, tuple[int, dict]] = {}  # ref -> (worker index, versions)
        self._requests_per_worker = 1

    def set_acting(self, pid: str, acting: Any, version: int | None = None) -> None:
        self.actings[pid] = acting
        if version is not None:
            self.stream_versions[pid] = version
        self.dirty = True

    def broadcast(self, actings: dict[str, Any]) -> None:
        """Sends every policy's acting pytree to the workers (one ``ray.put``; while streaming,
        with the workers' next requests)."""
        self.actings = dict(actings)
        if self.streaming:
            self._put()
            return
        self.workers.set_policy(self.actings)
        self.dirty = False

    # -- streaming (async plans with Ray workers) -----------------------------------------------

    def start_stream(self, requests_per_worker: int) -> None:
        """Queues ``requests_per_worker`` sample requests on every remote worker (once)."""
        if self.streaming:
            return
        self.streaming = True
        self.fresh_only = False  # V-trace learns from fragments of older weights
        self._requests_per_worker = requests_per_worker
        self._put()
        for index, actor in self.workers.remote_workers_by_index().items():
            for _ in range(requests_per_worker):
                self._request(index, actor)

    def _put(self) -> None:
        # The WorkerSet's ref too: foreach_worker hands it to the workers it looks at.
        self.workers.set_policy(self.actings)
        self._ref = self.workers.policy_ref
        self._ref_versions = dict(self.stream_versions)
        self.dirty = False

    def _request(self, index: int, actor: Any) -> None:
        ref = actor.sample_with_episodes.remote(self._ref)
        self._in_flight[ref] = (index, self._ref_versions)

    def _stream_round(self) -> bool:
        """Waits (briefly) for one finished fragment and queues its steps; re-issues that
        worker's request with the newest weights. Whether a fragment came in."""
        import ray

        if not self._in_flight:
            raise RuntimeError("every rollout worker failed; nothing to train on")
        ready, _ = ray.wait(list(self._in_flight), num_returns=1, timeout=1.0)
        if not ready:
            return False
        index, versions = self._in_flight.pop(ready[0])
        try:
            batch, episodes = ray.get(ready[0])
        except ray.exceptions.RayError as e:
            for ref in [r for r, (i, _) in self._in_flight.items() if i == index]:
                del self._in_flight[ref]
            replacement = self.workers.handle_failure(index, e)
            if replacement is not None:
                for _ in range(self._requests_per_worker):
                    self._request(index, replacement)
            return False
        self.workers.add_episodes(episodes)
        self._queue_batch(batch, versions)
        if self.dirty:
            self._put()
        self._request(index, self.workers.remote_workers_by_index()[index])
        return True

    def _queue_batch(self, batch: Any, versions: dict[str, int]) -> None:
        self.env_steps += batch.env_steps
        self.agent_steps += batch.agent_steps
        for pid, columns in batch.items():
            if pid in self.queues and len(columns["rewards"]):
                self.queues[pid].append((versions[pid], columns))

    def stop_stream(self) -> None:
        self._in_flight.clear()

    def round(self) -> None:
        if self.dirty:
            self.broadcast(self.actings)
        batch = self.workers.sample()
        self._queue_batch(batch, self.versions)

    def queued(self, pid: str) -> int:
        return sum(len(c["rewards"]) for _, c in self.queues[pid])

    def take(self, pid: str, T: int, B: int) -> SampleBatch:
        """``T * B`` of ``pid``'s steps as a ``[T, B]`` fragment: column ``j`` holds steps
        ``j*T .. (j+1)*T - 1``; a column's last step bootstraps (truncated) unless it ended."""
        return self.take_with_versions(pid, T, B)[0]

    def take_with_versions(self, pid: str, T: int, B: int) -> tuple[SampleBatch, list[int]]:
        """``take`` and the weights versions that sampled the queued pieces it used."""
        need = T * B
        if self.fresh_only:
            self.queues[pid] = [(v, c) for v, c in self.queues[pid] if v == self.versions[pid]]
        empty = 0
        while self.queued(pid) < need:
            before = self.queued(pid)
            if self.streaming:
                if not self._stream_round():
                    continue  # nothing finished yet (or a worker was replaced)
            else:
                self.round()
            empty = empty + 1 if self.queued(pid) == before else 0
            if empty >= _MAX_EMPTY_ROUNDS:
                raise ConfigError(f"policy '{pid}' is trained but no agent was mapped to it in "
                                  f"{_MAX_EMPTY_ROUNDS} sampling rounds; check "
                                  f"multiagent.policy_mapping_fn and policies_to_train")
        parts = self.queues[pid]
        versions, used = [], 0
        for v, c in parts:
            if used >= need:
                break
            versions.append(v)
            used += len(c["rewards"])
        flat = {k: np.concatenate([c[k] for _, c in parts]) for k in parts[0][1]}
        # Off-policy plans keep what they do not take yet, but at most a few fragments' worth
        # (the oldest go first), so a policy whose agents step more does not pile up steps.
        keep = len(flat["rewards"]) - need if self.fresh_only else min(
            len(flat["rewards"]) - need, _MAX_QUEUED_FRAGMENTS * need)
        rest = {k: v[len(v) - keep:] for k, v in flat.items()}
        self.queues[pid] = [(self.versions[pid], rest)] if len(rest["rewards"]) else []
        cols = {k: v[:need].reshape(B, T, *v.shape[1:]).swapaxes(0, 1) for k, v in flat.items()}
        truncated = cols["truncateds"].copy()
        truncated[-1] |= ~cols["terminateds"][-1]
        cols["truncateds"] = truncated
        return SampleBatch(cols), versions


class PolicyWorkers:
    """One policy's view of the multi-agent workers, shaped like the ``WorkerSet`` a
    single-policy plan samples from: ``set_policy``, ``sample() -> [T, B]`` and ``num_envs``.

    With ``shared_stream`` (IMPALA/APPO with Ray workers) the async plan streams through
    ``start_stream`` / ``take_stream`` instead, and ``set_policy`` tags the weights with the
    plan's update count (the policy lag of the fragments they sample).
    """

    def __init__(self, sampler: _Sampler, policy_id: str, fragment_length: int, num_envs: int,
                 *, shared_stream: bool = False, requests_per_worker: int = 1):
        self._sampler = sampler
        self.policy_id = policy_id
        self.fragment_length = fragment_length
        self.num_envs = num_envs
        self.shared_stream = shared_stream
        self._requests_per_worker = requests_per_worker

    def set_policy(self, acting: Any, version: int | None = None) -> None:
        self._sampler.set_acting(self.policy_id, acting, version)

    def sample(self) -> SampleBatch:
        return self._sampler.take(self.policy_id, self.fragment_length, self.num_envs)

    def start_stream(self) -> None:
        self._sampler.start_stream(self._requests_per_worker)

    def take_stream(self, num_columns: int) -> tuple[SampleBatch, list[int]]:
        """A ``[fragment_length, num_columns]`` train batch of this policy's streamed steps and
        the weights versions that sampled them."""
        return self._sampler.take_with_versions(self.policy_id, self.fragment_length,
                                                num_columns)

    # The async-samples plan (IMPALA, APPO) samples in-process through these without remote
    # workers.
    def local_worker(self) -> PolicyWorkers:
        return self

    def remote_workers(self) -> list:
        return []


class MultiAgentBackend:
    """Multi-agent rollout workers, one learner state and plan per trained policy.

    The ``Trainer`` sees ``state`` as ``{policy_id: TrainState}``; ``spec``, ``algorithm`` and
    the spaces are the first policy's.
    """

    learner_per_policy = True

    def __init__(self, definition: AlgorithmDef, config: Any, env_id: str, *, eval_config: Any,
                 video_dir: str | None = None, address: str | None = None, **_: Any):
        if config.num_seeds > 1:
            raise ConfigError("num_seeds > 1 needs a JAX env; multi-agent envs train one seed")
        if definition.plan not in MULTI_AGENT_PLANS:
            raise ConfigError(f"multi-agent training runs algorithms with an on-policy, "
                              f"off-policy, async-samples or offline plan (PPO, PG, A2C, DQN, "
                              f"SAC, DDPG, TD3, IMPALA, APPO, BC, MARWIL); {definition.name} "
                              f"uses the '{definition.plan}' plan")
        self.definition = definition
        self.config = config
        self.eval_config = eval_config
        self.workers = WorkerSet.create(env_id, config, definition, video_dir=video_dir,
                                        address=address, worker_class=MultiAgentRolloutWorker)
        local = self.workers.local_worker()
        self.policy_map = local.policy_map
        self.mapping = local.mapping
        self.callbacks = local.callbacks
        learnable = [pid for pid, p in self.policy_map.items() if isinstance(p, Policy)]
        if not learnable:
            raise ConfigError("multiagent.policies holds only heuristic policies; at least one "
                              "must be learned by the trainer's algorithm (policy class None)")
        first = self.policy_map[learnable[0]]
        self.spec, self.algorithm = first.spec, first.algorithm
        self.observation_space, self.action_space = first.observation_space, first.action_space
        ma = config.multiagent
        self.policies_to_train = list(ma.policies_to_train if ma.policies_to_train is not None
                                      else learnable)
        for pid in self.policies_to_train:
            if pid not in learnable:
                raise ConfigError(f"multiagent.policies_to_train names '{pid}', a heuristic "
                                  f"policy that cannot learn")
        self.sampler = _Sampler(self.workers, self.policies_to_train,
                                fresh_only=definition.plan != "off_policy")
        base_key = jax.random.PRNGKey(config.seed)
        self.states: dict[str, Any] = {}
        self._acting_fns: dict[str, Any] = {}
        for i, pid in enumerate(learnable):
            policy = self.policy_map[pid]
            key = base_key if i == 0 else jax.random.fold_in(base_key, i)
            self.states[pid] = jit_init(policy.algorithm.init)(key)
            self._acting_fns[pid] = jax.jit(policy.algorithm.policy)
            policy.bind_learner(lambda pid=pid: self.states[pid],
                                lambda state, pid=pid: self._set_policy_state(pid, state))
        plan_class = registry.plan_class(definition.plan)
        streams = definition.plan == "async_samples" and bool(self.workers.remote_workers())
        self.plans = {}
        for pid in self.policies_to_train:
            policy = self.policy_map[pid]
            view = PolicyWorkers(
                self.sampler, pid, policy.algo_config.rollout_fragment_length,
                self.workers.num_envs, shared_stream=streams,
                requests_per_worker=getattr(config, "max_sample_requests_in_flight_per_worker", 1))
            self.plans[pid] = plan_class(definition, policy.algorithm, view, policy.algo_config,
                                         policy.spec)
        self._broadcast()

    # -- state ----------------------------------------------------------------------------------

    @property
    def state(self) -> dict[str, Any]:
        return dict(self.states)

    @state.setter
    def state(self, states: dict[str, Any]) -> None:
        self.states.update(states)
        self._broadcast()

    def _acting(self) -> dict[str, Any]:
        return {pid: self._acting_fns[pid](s) for pid, s in self.states.items()}

    def _broadcast(self) -> None:
        self.sampler.broadcast(self._acting())

    def _set_policy_state(self, pid: str, state: Any) -> None:
        # A policy's set_weights: every worker acts with the new weights from now on.
        self.states[pid] = state
        if pid in self.sampler.versions:
            self.sampler.versions[pid] += 1
        self._broadcast()

    # -- training -------------------------------------------------------------------------------

    def run_iteration(self, start: float, iteration: int, timesteps_total: int) -> Iteration:
        cfg = self.config
        by_agent = cfg.multiagent.count_steps_by == "agent_steps"
        sampler = self.sampler
        env0, agent0 = sampler.env_steps, sampler.agent_steps
        metrics: dict[str, list] = {pid: [] for pid in self.plans}
        read = 0  # agent steps the plans took from offline input files
        while True:
            if not self.plans:
                sampler.round()
            for pid, plan in self.plans.items():
                before = sampler.agent_steps
                self.states[pid], m, n = plan.step(self.states[pid])
                sampler.versions[pid] += 1
                if self.definition.plan == "offline" and sampler.agent_steps == before:
                    read += n  # not sampled: read from files
                if m is not None:
                    metrics[pid].append(m)
            steps = read + ((sampler.agent_steps - agent0) if by_agent
                            else (sampler.env_steps - env0))
            if steps >= cfg.timesteps_per_iteration and \
                    time.time() - start >= cfg.min_iter_time_s:
                break
        learner = {pid: jax.tree.map(lambda *xs: float(np.mean([np.asarray(x) for x in xs])),
                                     *ms) for pid, ms in metrics.items() if ms}
        self._broadcast()
        episodes = self.workers.pop_episodes()
        extra: dict[str, Any] = {}
        # Async plans' bookkeeping (queue sizes, policy lag, idle time), each keyed by policy.
        for pid, plan in self.plans.items():
            if hasattr(plan, "stats"):
                for key, value in plan.stats().items():
                    extra.setdefault(key, {})[pid] = value
        extra |= {"num_healthy_workers": len(self.workers.remote_workers()),
                 "num_worker_restarts": self.workers.num_worker_restarts,
                 "num_env_steps_sampled_this_iter": sampler.env_steps - env0,
                 "num_agent_steps_sampled_this_iter": sampler.agent_steps - agent0,
                 "num_agent_steps_sampled": sampler.agent_steps}
        return Iteration(steps, learner, episodes, len(episodes), extra)

    def rollout_episodes(self, num_episodes: int, *, explore: bool = False, seed: int = 10_000,
                         max_steps: int | None = None, record: bool = False) -> list[dict]:
        return run_multi_agent_episodes(self.policy_map, self.mapping, self.eval_config.env,
                                        self.eval_config, num_episodes, explore=explore,
                                        seed=seed, max_steps=max_steps, record=record)

    def checkpoint_state(self) -> dict[str, Any]:
        return dict(self.states)

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        missing = set(self.states) - set(state)
        if missing:
            raise ConfigError(f"the checkpoint has no state for policies {sorted(missing)}")
        self.states.update({pid: state[pid] for pid in self.states})
        self._broadcast()

    @property
    def replay_buffer_size(self) -> int | None:
        sizes = [getattr(plan, "replay_buffer_size", None) for plan in self.plans.values()]
        sizes = [int(size) for size in sizes if size is not None]
        return sum(sizes) if sizes else None

    def checkpoint_parts(self, *, include_replay: bool | None = None) -> dict[str, Any]:
        """``algo`` (every policy's learner state) and, with ``store_buffer_in_checkpoints``
        (or ``include_replay``), ``replay`` (each trained policy's buffer)."""
        parts: dict[str, Any] = {"algo": dict(self.states)}
        keep = self.config.store_buffer_in_checkpoints if include_replay is None else include_replay
        replays = {pid: plan.replay for pid, plan in self.plans.items()
                   if getattr(plan, "replay", None) is not None}
        if keep and replays:
            parts["replay"] = replays
        return parts

    def checkpoint_extra(self) -> dict[str, Any]:
        """JSON-able resume state: each trained policy's plan counters (multi-agent envs start
        fresh episodes after a restore)."""
        return {"plan": {pid: plan.get_state() for pid, plan in self.plans.items()
                         if hasattr(plan, "get_state")}}

    def load_checkpoint(self, parts: dict[str, Any], extra: dict[str, Any]) -> None:
        self.load_checkpoint_state(parts["algo"])
        for pid, replay in (parts.get("replay") or {}).items():
            if pid in self.plans:
                self.plans[pid].replay = replay
        plans = extra.get("plan")
        if isinstance(plans, dict):
            for pid, plan_state in plans.items():
                plan = self.plans.get(pid)
                if plan is not None and isinstance(plan_state, dict) and \
                        hasattr(plan, "set_state"):
                    plan.set_state(plan_state)

    def metadata_config(self, config: dict) -> dict:
        """The config for checkpoint metadata: policies in dict form without their spaces
        (inferred from the env again on restore)."""
        ma = dict(config.get("multiagent") or {})
        specs = self.workers.local_worker().policy_specs
        ma["policies"] = {pid: {"policy_class": spec.policy_class, "config": dict(spec.config)}
                          for pid, spec in specs.items()}
        return {**config, "multiagent": ma}

    def stop(self) -> None:
        for plan in self.plans.values():
            stop_plan = getattr(plan, "stop", None)
            if stop_plan is not None:
                stop_plan()
        self.sampler.stop_stream()
        self.workers.stop()
