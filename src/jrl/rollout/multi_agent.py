"""Multi-agent sampling: policies, the agent -> policy mapping, and the rollout worker.

A ``MultiAgentRolloutWorker`` steps ``num_envs_per_worker`` ``MultiAgentEnv`` copies. Each step,
the observations of every acting agent are grouped by the policy the agent is mapped to and each
policy acts on its group in one jitted call. An agent's transition runs from an observation to
the agent's next observation (rewards in between are summed), so agents that join late, leave
early or act in turns are all fine. ``sample()`` returns a ``MultiAgentBatch``: for each policy,
its agents' transitions as flat columns ``[N_p, ...]``, one agent's steps after another; the last
step of each agent's piece is terminated, truncated, or marked truncated where the fragment cut
it (it then bootstraps from the value of its next observation, as at a fragment's end).

Each such piece (one agent's steps with one policy, within one episode and fragment) goes
through the ``on_postprocess_trajectory`` callback before it joins its policy's batch, as in
RLlib: ``postprocessed_batch`` is the piece (a ``SampleBatch`` the callback may rewrite in
place) and ``original_batches`` maps every agent whose piece ended at the same step of the
same env to ``(policy, copy of its piece)``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import gymnasium as gym
import jax
import numpy as np

from jrl.callbacks import Episode, make_callbacks, overrides_hook
from jrl.config import merge, resolve_import, to_dict
from jrl.errors import ConfigError, EnvError
from jrl.registry import get_algorithm_def, make_algorithm
from jrl.rollout.envs import env_spec
from jrl.rollout.multi_agent_env import (
    ALL,
    agent_action_space,
    agent_ids,
    agent_observation_space,
    make_multi_agent_env,
)
from jrl.rollout.policy import DEFAULT_POLICY_ID, Policy
from jrl.rollout.preprocessors import get_preprocessor
from jrl.rollout.worker import (
    SampleBatch,
    WorkerBase,
    acting_device,
    prepare_worker_process,
)
from jrl.types import AlgorithmDef

logger = logging.getLogger(__name__)

_COLUMNS = ("obs", "actions", "rewards", "terminateds", "truncateds", "new_obs", "action_logp")


class PolicySpec(NamedTuple):
    """One entry of ``multiagent.policies`` (RLlib's ``PolicySpec``)."""

    policy_class: Any = None
    observation_space: gym.Space | None = None
    action_space: gym.Space | None = None
    config: dict = {}


def parse_policies(policies: Mapping | tuple | list) -> dict[str, PolicySpec]:
    """``multiagent.policies`` in any of its forms as ``{policy_id: PolicySpec}``."""
    if isinstance(policies, (set, frozenset)):  # RLlib's {"p0", "p1"}: a stable order
        policies = sorted(policies, key=str)
    if isinstance(policies, (list, tuple)):
        return {str(pid): PolicySpec() for pid in policies}
    out = {}
    for pid, value in policies.items():
        where = f"multiagent.policies.{pid}"
        if value is None:
            spec = PolicySpec()
        elif isinstance(value, PolicySpec):
            spec = value
        elif isinstance(value, Mapping):
            known = {"policy_class", "observation_space", "action_space", "config"}
            unknown = set(value) - known
            if unknown:
                raise ConfigError(f"config key '{where}' has unknown keys "
                                  f"{sorted(unknown)} (allowed: {sorted(known)})")
            spec = PolicySpec(value.get("policy_class"), value.get("observation_space"),
                              value.get("action_space"), dict(value.get("config") or {}))
        elif isinstance(value, (list, tuple)) and len(value) == 4:
            spec = PolicySpec(value[0], value[1], value[2], dict(value[3] or {}))
        else:
            raise ConfigError(f"config key '{where}' must be (policy_class, obs_space, "
                              f"act_space, config) or a dict with those keys, got "
                              f"{type(value).__name__}")
        for kind in ("observation_space", "action_space"):
            space = getattr(spec, kind)
            if space is not None and not isinstance(space, gym.Space):
                raise ConfigError(f"config key '{where}.{kind}' must be a gymnasium space or "
                                  f"null (inferred from the env), got {type(space).__name__}")
        if spec.policy_class is not None:
            cls = spec.policy_class
            if isinstance(cls, str):
                cls = resolve_import(cls, f"{where} policy class")
            if not (isinstance(cls, type) and issubclass(cls, HeuristicPolicy)):
                raise ConfigError(f"config key '{where}': a policy class must subclass "
                                  f"jrl.HeuristicPolicy (None: the trainer's algorithm "
                                  f"learns it), got {cls!r}")
            spec = spec._replace(policy_class=cls)
        out[str(pid)] = spec
    return out


class HeuristicPolicy:
    """A fixed, hand-written policy for multi-agent envs (an opponent, a scripted teammate).

    As is, it acts uniformly at random (RLlib's ``RandomPolicy``). Subclass it and override
    ``compute_actions`` for a heuristic; give the class as the policy class in
    ``multiagent.policies`` (``(MyHeuristic, None, None, {})``, or its ``"module:Class"`` path in
    YAML). It acts on raw observations, never learns (it cannot be in ``policies_to_train``)
    and has no weights.

    Args:
      observation_space: the raw observation space of its agents.
      action_space: their action space.
      config: the trainer's config with the policy's overrides, as a dict.
    """

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, config: dict):
        self.observation_space = observation_space
        self.action_space = action_space
        self.config = config

    def compute_actions(self, obs_batch: list, state_batches: Any = None, **kwargs: Any
                        ) -> tuple[np.ndarray, list, dict]:
        """``(actions, state_outs, extras)`` for a batch of raw observations (here: uniform
        random actions)."""
        return np.stack([self.action_space.sample() for _ in obs_batch]), [], {}

    def compute_single_action(self, obs: Any, state: Any = None, **kwargs: Any
                              ) -> tuple[Any, list, dict]:
        actions, state_out, extras = self.compute_actions([obs], **kwargs)
        return actions[0], state_out, {k: v[0] for k, v in extras.items()}

    def get_weights(self) -> dict:
        return {}

    def set_weights(self, weights: Any) -> None:
        pass

    def get_state(self) -> dict:
        return {"weights": {}}

    def set_state(self, state: Any) -> None:
        pass


class PolicyMapping:
    """``policy_mapping_fn`` (a callable or a ``"module:function"`` path) with a check that the
    policy it names exists."""

    def __init__(self, fn: Any, policy_ids: list[str]):
        self.policy_ids = list(policy_ids)
        if isinstance(fn, str):
            fn = resolve_import(fn, "multiagent.policy_mapping_fn")
        if fn is None:
            if len(self.policy_ids) != 1:
                raise ConfigError(f"multiagent.policy_mapping_fn is needed with several "
                                  f"policies ({', '.join(self.policy_ids)})")
            only = self.policy_ids[0]
            fn = lambda agent_id, *args, **kwargs: only  # noqa: E731
        if not callable(fn):
            raise ConfigError(f"config key 'multiagent.policy_mapping_fn' must be a function "
                              f"or a 'module:function' path, got {type(fn).__name__}")
        self.fn = fn
        try:
            params = inspect.signature(fn).parameters.values()
            self._full = any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params) or \
                len([p for p in params if p.default is p.empty]) >= 2 or \
                any(p.name == "episode" for p in params)
        except (TypeError, ValueError):
            self._full = True

    def __call__(self, agent_id: Any, episode: Any = None, worker: Any = None) -> str:
        pid = self.fn(agent_id, episode, worker=worker) if self._full else self.fn(agent_id)
        if pid not in self.policy_ids:
            raise ConfigError(f"policy_mapping_fn mapped agent '{agent_id}' to unknown policy "
                              f"'{pid}' (policies: {', '.join(self.policy_ids)})")
        return pid


def resolve_policies(config: Any, env: Any) -> tuple[dict[str, PolicySpec], PolicyMapping]:
    """The policies with their spaces filled in from ``env`` (each policy takes the spaces of
    the agents mapped to it) and the checked mapping. Errors name the agent and the policy."""
    ma = config.multiagent
    specs = parse_policies(ma.policies) or {DEFAULT_POLICY_ID: PolicySpec()}
    mapping = PolicyMapping(ma.policy_mapping_fn, list(specs))
    for pid in ma.policies_to_train or ():
        if pid not in specs:
            raise ConfigError(f"multiagent.policies_to_train names unknown policy '{pid}' "
                              f"(policies: {', '.join(specs)})")
    ids = agent_ids(env)
    if not ids:
        obs, _ = env.reset(seed=config.seed)
        ids = sorted(obs, key=str)
    resolved = {}
    for pid, spec in specs.items():
        agents = [a for a in ids if mapping(a, None, None) == pid]
        obs_space, act_space = spec.observation_space, spec.action_space
        for agent in agents:
            check_agent_spaces(env, agent, pid, obs_space, act_space)
        if agents:
            obs_space = obs_space or agent_observation_space(env, agents[0])
            act_space = act_space or agent_action_space(env, agents[0])
        if obs_space is None or act_space is None:
            raise ConfigError(f"cannot infer the spaces of policy '{pid}' (no agent of the env "
                              f"maps to it, or the env declares no per-agent spaces); give "
                              f"them in multiagent.policies")
        resolved[pid] = spec._replace(observation_space=obs_space, action_space=act_space)
    return resolved, mapping


def check_agent_spaces(env: Any, agent_id: Any, pid: str, obs_space: gym.Space | None,
                       act_space: gym.Space | None) -> None:
    """ConfigError when the env's spaces for ``agent_id`` differ from policy ``pid``'s."""
    for kind, want, have in (("observation", obs_space, agent_observation_space(env, agent_id)),
                             ("action", act_space, agent_action_space(env, agent_id))):
        if want is not None and have is not None and want != have:
            raise ConfigError(f"agent '{agent_id}' has {kind} space {have} but is mapped to "
                              f"policy '{pid}' whose {kind} space is {want}")


def policy_config(config: Any, overrides: Mapping) -> Any:
    """A policy's config: the trainer's with the policy's ``config_overrides``."""
    return merge(config, overrides) if overrides else config


class MultiAgentBatch(dict):
    """``{policy_id: {column: [N_p, ...]}}`` plus the env and agent steps it covers."""

    def __init__(self, columns: dict, env_steps: int, agent_steps: int):
        super().__init__(columns)
        self.env_steps = env_steps
        self.agent_steps = agent_steps

    @property
    def count(self) -> int:
        return self.env_steps

    def policy_steps(self) -> dict[str, int]:
        return {pid: len(cols["rewards"]) for pid, cols in self.items()}

    @staticmethod
    def concat(batches: list[MultiAgentBatch]) -> MultiAgentBatch:
        pids = sorted({pid for b in batches for pid in b})
        columns = {}
        for pid in pids:
            parts = [b[pid] for b in batches if pid in b]
            columns[pid] = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return MultiAgentBatch(columns, sum(b.env_steps for b in batches),
                               sum(b.agent_steps for b in batches))


class MultiAgentEpisode(Episode):
    """An episode of a multi-agent env: per-agent last values, rewards and policies.

    ``preprocess(agent_id, raw_obs)`` gives ``last_observation_for`` the observation as the
    agent's policy sees it (computed when asked).
    """

    def __init__(self, env_index: int, preprocess: Callable[[Any, Any], Any] | None = None):
        super().__init__(env_index)
        self._preprocess = preprocess
        self.agent_rewards: dict[tuple[Any, str], float] = {}
        self._agent_policy: dict[Any, str] = {}
        self._agent_last: dict[Any, dict] = {}

    def policy_for(self, agent_id: Any) -> str:
        return self._agent_policy[agent_id]

    def _last(self, agent_id: Any, key: str, default: Any = None) -> Any:
        return self._agent_last.get(agent_id, {}).get(key, default)

    def last_observation_for(self, agent_id: Any = None) -> Any:
        """The agent's last observation, preprocessed for its policy (None before it has
        one)."""
        raw = self._last(agent_id, "raw_obs")
        if raw is None or self._preprocess is None:
            return raw
        return self._preprocess(agent_id, raw)

    def last_raw_obs_for(self, agent_id: Any = None) -> Any:
        return self._last(agent_id, "raw_obs")

    def last_action_for(self, agent_id: Any = None) -> Any:
        return self._last(agent_id, "action")

    def last_reward_for(self, agent_id: Any = None) -> float:
        return self._last(agent_id, "reward", 0.0)

    def last_info_for(self, agent_id: Any = None) -> dict:
        return self._last(agent_id, "info", {})

    def policy_rewards(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for (_, pid), r in self.agent_rewards.items():
            out[pid] = out.get(pid, 0.0) + r
        return out


class _Slot:
    """One env of the worker and its episode in progress."""

    def __init__(self, env: Any):
        self.env = env
        self.obs: dict = {}          # raw observations of the agents that act next
        self.pending: dict = {}      # agent -> [obs, action, logp, reward, pid]
        self.done: set = set()
        self.episode: MultiAgentEpisode | None = None
        self.streams: dict = {}      # agent -> {column: list} of this fragment


class MultiAgentRolloutWorker(WorkerBase):
    """Samples fragments of ``rollout_fragment_length`` env steps from multi-agent envs.

    Same constructor as ``RolloutWorker`` (so ``WorkerSet`` makes local and Ray workers of
    either); ``policy_map`` holds one ``Policy`` per configured policy id.
    """

    def __init__(self, env_id: str, config: Any, definition: AlgorithmDef | str,
                 worker_index: int = 0, video_dir: str | None = None, env_creator: Any = None,
                 model_registrations: dict | None = None):
        prepare_worker_process(env_id, worker_index, env_creator, model_registrations)
        self.config = config
        self.worker_index = worker_index
        self.env_id = env_id
        self.num_envs = config.num_envs_per_worker
        self.fragment_length = config.rollout_fragment_length
        self.definition = (definition if isinstance(definition, AlgorithmDef)
                           else get_algorithm_def(definition))
        self._slots = [_Slot(make_multi_agent_env(env_id, config.env_config,
                                                  worker_index=worker_index, vector_index=i))
                       for i in range(self.num_envs)]
        self.env = self._slots[0].env
        specs, self.mapping = resolve_policies(config, self.env)
        self.policy_specs = specs
        seed = config.seed * 1000 + worker_index
        self.policy_map: dict[str, Policy] = {}
        self.policy_configs: dict[str, Any] = {}
        for i, (pid, spec) in enumerate(specs.items()):
            cfg = policy_config(config, spec.config)
            self.policy_configs[pid] = cfg
            if spec.policy_class is not None:
                self.policy_map[pid] = spec.policy_class(
                    spec.observation_space, spec.action_space, to_dict(cfg))
                continue
            pre = get_preprocessor(spec.observation_space, cfg.model)
            espec = env_spec(pre.shape, pre.dtype, spec.action_space)
            if espec.composite:
                raise ConfigError(f"policy '{pid}': {spec.action_space} action spaces run in "
                                  "single-agent training only so far")
            algo = make_algorithm(self.definition, cfg, espec)
            if algo.recurrent is not None:
                raise ConfigError(f"policy '{pid}': recurrent policies (model.use_lstm/use_gru) "
                                  "run in single-agent training only so far")
            self.policy_map[pid] = Policy(self.definition, algo, cfg, espec, pre,
                                          spec.observation_space, spec.action_space,
                                          seed=seed + 101 * i)
        self.callbacks = make_callbacks(config.callbacks)
        self._postprocess_hook = overrides_hook(self.callbacks, "on_postprocess_trajectory")
        self._closed: list[tuple[Any, dict]] = []  # pieces the callback has not seen yet
        self._keys = {pid: jax.random.PRNGKey(seed + 7 * i) for i, pid in
                      enumerate(self.policy_map)}
        self._act_device = acting_device(config)
        self._keys = self._on_acting_device(self._keys)
        self._has_policy = False
        self._act_sizes: dict[str, int] = {}
        self._completed: list[dict] = []
        self._env_steps = 0
        self._agent_steps = 0
        self._seed = seed
        for i, slot in enumerate(self._slots):
            self._reset(i, slot, seed=seed + i)

    # -- policies -------------------------------------------------------------------------------

    def set_policy(self, policies: Mapping[str, Any]) -> None:
        """Sets the acting pytrees ``{policy_id: acting}`` (any subset of the policies)."""
        for pid, acting in policies.items():
            self.policy_map[pid].set_acting(self._on_acting_device(acting))
        self._has_policy = True

    def get_spec(self) -> dict:
        return {pid: p.spec for pid, p in self.policy_map.items() if isinstance(p, Policy)}

    @property
    def spec(self) -> dict:
        return self.get_spec()

    # -- envs -----------------------------------------------------------------------------------

    def foreach_env(self, fn) -> list:
        return [fn(slot.env) for slot in self._slots]

    def foreach_env_with_context(self, fn) -> list:
        from jrl.rollout.envs import EnvContext

        return [fn(slot.env, EnvContext(self.config.env_config, self.worker_index, i))
                for i, slot in enumerate(self._slots)]

    def _reset(self, index: int, slot: _Slot, seed: int | None = None) -> None:
        obs, _ = slot.env.reset(seed=seed)
        slot.obs = dict(obs)
        slot.pending = {}
        slot.done = set()
        slot.episode = MultiAgentEpisode(
            index, preprocess=lambda agent_id, raw: self._observe(slot, agent_id, raw))
        for agent_id, raw in slot.obs.items():
            slot.episode._agent_last[agent_id] = {"raw_obs": raw}
        self.callbacks.on_episode_start(worker=self, base_env=slot.env,
                                        policies=self.policy_map, episode=slot.episode,
                                        env_index=index)

    def _policy_of(self, slot: _Slot, agent_id: Any) -> str:
        episode = slot.episode
        pid = episode._agent_policy.get(agent_id)
        if pid is None:
            pid = self.mapping(agent_id, episode, self)
            spec = self.policy_specs[pid]
            check_agent_spaces(slot.env, agent_id, pid, spec.observation_space,
                               spec.action_space)
            episode._agent_policy[agent_id] = pid
        return pid

    def _observe(self, slot: _Slot, agent_id: Any, raw: Any) -> Any:
        pid = self._policy_of(slot, agent_id)
        if not isinstance(self.policy_map[pid], Policy):
            return raw  # a heuristic policy acts on raw observations
        return self._preprocess(pid, agent_id, raw)

    def _preprocess(self, pid: str, agent_id: Any, raw: Any) -> np.ndarray:
        pre = self.policy_map[pid].preprocessor
        try:
            pre.check(raw)
            return pre.transform(raw)
        except EnvError as e:
            raise EnvError(f"agent '{agent_id}' (policy '{pid}'): {e}") from None
        except (ValueError, TypeError, IndexError) as e:
            raise EnvError(f"env '{self.env_id}': the observation of agent '{agent_id}' does "
                           f"not fit policy '{pid}'s observation space "
                           f"{self.policy_map[pid].observation_space}: {e}") from None

    # -- sampling -------------------------------------------------------------------------------

    def _act(self, explore: bool) -> dict:
        """One jitted ``act`` per policy on its agents' observations (padded to a power of
        two, so a changing number of agents compiles only a few shapes)."""
        groups: dict[str, list] = {}
        for i, slot in enumerate(self._slots):
            for agent_id, raw in slot.obs.items():
                if agent_id in slot.done:
                    continue
                pid = self._policy_of(slot, agent_id)
                fixed = not isinstance(self.policy_map[pid], Policy)
                groups.setdefault(pid, []).append(
                    (i, agent_id, raw if fixed else self._preprocess(pid, agent_id, raw)))
        actions: dict = {}
        for pid, members in groups.items():
            policy = self.policy_map[pid]
            if not isinstance(policy, Policy):  # a HeuristicPolicy: raw obs, nothing recorded
                action = np.asarray(policy.compute_actions([m[2] for m in members],
                                                           explore=explore)[0])
                for j, (i, agent_id, _) in enumerate(members):
                    actions[(i, agent_id)] = (pid, None, action[j], 0.0)
                continue
            obs = np.stack([m[2] for m in members])
            n = len(obs)
            # One shape per policy while its agent count stays below the largest seen.
            size = max(self._act_sizes.get(pid, 0), 1 << (n - 1).bit_length())
            self._act_sizes[pid] = size
            if size > n:
                obs_in = np.concatenate([obs, np.repeat(obs[:1], size - n, axis=0)])
            else:
                obs_in = obs
            self._keys[pid], key = jax.random.split(self._keys[pid])
            action, extras = policy.act_fn(policy.acting, obs_in, key, explore)
            action = np.asarray(action)[:n]
            logp = extras.get("action_logp")
            logp = np.zeros(n, np.float32) if logp is None else np.asarray(logp)[:n]
            for j, (i, agent_id, o) in enumerate(members):
                actions[(i, agent_id)] = (pid, o, action[j], logp[j])
        return actions

    def _emit(self, slot: _Slot, agent_id: Any, next_obs: np.ndarray, terminated: bool,
              truncated: bool) -> None:
        obs, action, logp, reward, pid = slot.pending.pop(agent_id)
        if obs is None:
            return  # a heuristic policy's agent: nothing to learn from
        stream = slot.streams.get(agent_id)
        if stream is None or stream["pid"] != pid:
            if stream is not None:
                self._close_stream(slot, agent_id)
            stream = slot.streams[agent_id] = {"pid": pid, **{k: [] for k in _COLUMNS}}
        stream["obs"].append(obs)
        stream["actions"].append(action)
        stream["rewards"].append(reward)
        stream["terminateds"].append(terminated)
        stream["truncateds"].append(truncated)
        stream["new_obs"].append(next_obs)
        stream["action_logp"].append(logp)
        if terminated or truncated:
            self._close_stream(slot, agent_id)

    def _close_stream(self, slot: _Slot, agent_id: Any) -> None:
        stream = slot.streams.pop(agent_id)
        if not stream["rewards"]:
            return
        if not (stream["terminateds"][-1] or stream["truncateds"][-1]):
            stream["truncateds"][-1] = True  # cut by the fragment: bootstrap from new_obs
        pid = stream["pid"]
        policy = self.policy_map[pid]
        piece = SampleBatch({
            "obs": np.asarray(stream["obs"], policy.preprocessor.dtype),
            "actions": np.asarray(stream["actions"], policy.spec.action_dtype),
            "rewards": np.asarray(stream["rewards"], np.float32),
            "terminateds": np.asarray(stream["terminateds"], bool),
            "truncateds": np.asarray(stream["truncateds"], bool),
            "new_obs": np.asarray(stream["new_obs"], policy.preprocessor.dtype),
            "action_logp": np.asarray(stream["action_logp"], np.float32),
        })
        self._pieces.setdefault(pid, []).append(piece)
        if self._postprocess_hook:
            self._closed.append((agent_id, pid, piece))

    def _postprocess(self, slot: _Slot) -> None:
        """``on_postprocess_trajectory`` for every piece closed since the last call (one env,
        one step: each sees the others in ``original_batches``)."""
        if not self._closed:
            return
        closed, self._closed = self._closed, []
        original = {agent_id: (self.policy_map[pid],
                               SampleBatch({k: v.copy() for k, v in piece.items()}))
                    for agent_id, pid, piece in closed}
        for agent_id, pid, piece in closed:
            self.callbacks.on_postprocess_trajectory(
                worker=self, episode=slot.episode, agent_id=agent_id, policy_id=pid,
                policies=self.policy_map, postprocessed_batch=piece,
                original_batches=original)

    def sample(self) -> MultiAgentBatch:
        """Steps every env ``rollout_fragment_length`` times; returns each policy's
        transitions (see the module docstring)."""
        if not self._has_policy:
            raise RuntimeError("MultiAgentRolloutWorker.sample() called before set_policy()")
        explore = bool(self.config.explore)
        self._pieces: dict[str, list] = {}
        agent_steps = 0
        for _ in range(self.fragment_length):
            actions = self._act(explore)
            agent_steps += len(actions)
            for i, slot in enumerate(self._slots):
                action_dict = {}
                for agent_id in list(slot.obs):
                    if (i, agent_id) not in actions:
                        continue
                    pid, obs, action, logp = actions[(i, agent_id)]
                    slot.pending[agent_id] = [obs, action, float(logp), 0.0, pid]
                    env_action = action
                    policy = self.policy_map[pid]
                    if isinstance(policy.action_space, gym.spaces.Box) and \
                            self.policy_configs[pid].clip_actions:
                        env_action = np.clip(action, policy.action_space.low,
                                             policy.action_space.high)
                    elif isinstance(policy.action_space, gym.spaces.Discrete):
                        env_action = int(action)
                    action_dict[agent_id] = env_action
                    slot.episode._agent_last.setdefault(agent_id, {})["action"] = action
                self._step_env(i, slot, action_dict)
        for slot in self._slots:
            for agent_id in list(slot.streams):
                self._close_stream(slot, agent_id)
            self._postprocess(slot)
        columns = {pid: {k: np.concatenate([p[k] for p in pieces]) for k in _COLUMNS}
                   for pid, pieces in self._pieces.items()}
        env_steps = self.fragment_length * self.num_envs
        self._env_steps += env_steps
        self._agent_steps += agent_steps
        batch = MultiAgentBatch(columns, env_steps, agent_steps)
        self.callbacks.on_sample_end(worker=self, samples=batch)
        return batch

    def _step_env(self, index: int, slot: _Slot, action_dict: dict) -> None:
        obs, rewards, terms, truncs, infos = slot.env.step(action_dict)
        episode = slot.episode
        episode.length += 1
        for agent_id, r in rewards.items():
            r = float(r)
            episode.total_reward += r
            pid = episode._agent_policy.get(agent_id)
            if pid is None:
                pid = self._policy_of(slot, agent_id)
            key = (agent_id, pid)
            episode.agent_rewards[key] = episode.agent_rewards.get(key, 0.0) + r
            episode._agent_last.setdefault(agent_id, {})["reward"] = r
            if agent_id in slot.pending:
                clip = self.policy_configs[pid].clip_rewards
                slot.pending[agent_id][3] += _clip(r, clip)
        for agent_id, info in (infos or {}).items():
            if agent_id in episode._agent_last or agent_id in obs:
                episode._agent_last.setdefault(agent_id, {})["info"] = info
        all_term = bool(terms.get(ALL, False))
        over = all_term or bool(truncs.get(ALL, False))
        for agent_id in list(slot.pending):
            term = bool(terms.get(agent_id, False)) or all_term
            trunc = not term and (bool(truncs.get(agent_id, False)) or over)
            if agent_id not in obs and not (term or trunc):
                continue  # not its turn: the transition goes on (rewards keep adding up)
            pid = slot.pending[agent_id][4]
            fixed = slot.pending[agent_id][0] is None
            next_obs = (self._preprocess(pid, agent_id, obs[agent_id])
                        if agent_id in obs and not fixed else slot.pending[agent_id][0])
            self._emit(slot, agent_id, next_obs, term, trunc)
            if term or trunc:
                slot.done.add(agent_id)
        for agent_id in obs:
            if terms.get(agent_id, False) or truncs.get(agent_id, False):
                slot.done.add(agent_id)
            last = episode._agent_last.setdefault(agent_id, {})
            last["raw_obs"] = obs[agent_id]
        slot.obs = {a: o for a, o in obs.items() if a not in slot.done}
        self._postprocess(slot)
        self.callbacks.on_episode_step(worker=self, base_env=slot.env, episode=episode,
                                       env_index=index)
        if over or (not slot.obs and not slot.pending):
            self._end_episode(index, slot)

    def _end_episode(self, index: int, slot: _Slot) -> None:
        episode = slot.episode
        for agent_id in list(slot.pending):  # agents still waiting for their turn
            self._emit(slot, agent_id, slot.pending[agent_id][0], False, True)
        self._postprocess(slot)
        self.callbacks.on_episode_end(worker=self, base_env=slot.env, policies=self.policy_map,
                                      episode=episode, env_index=index)
        self._completed.append({
            "episode_reward": episode.total_reward, "episode_len": episode.length,
            "policy_reward": episode.policy_rewards(),
            "agent_rewards": {f"{a}/{p}": r for (a, p), r in episode.agent_rewards.items()},
            "custom_metrics": dict(episode.custom_metrics),
            "hist_data": {k: list(v) for k, v in episode.hist_data.items()},
        })
        self._reset(index, slot)

    def sample_with_episodes(self, policy: Any = None) -> tuple[MultiAgentBatch, list[dict]]:
        if policy is not None:
            self.set_policy(policy)
        batch = self.sample()
        return batch, self.pop_episodes()

    @property
    def steps_sampled(self) -> int:
        return self._env_steps

    def close(self) -> None:
        for slot in self._slots:
            slot.env.close()


def _clip(reward: float, clip: Any) -> float:
    if clip is None or clip is False:
        return reward
    if clip is True:
        return float(np.sign(reward))
    return float(np.clip(reward, -float(clip), float(clip)))


def run_multi_agent_episodes(policy_map: Mapping[str, Policy], mapping: Callable, env_id: str,
                             config: Any, num_episodes: int, *, explore: bool = False,
                             seed: int = 10_000, max_steps: int | None = None,
                             record: bool = False) -> list[dict]:
    """Episodes outside training, up to 16 envs at a time (each policy acts on all of its
    agents in one call per step); each is ``{"episode_reward" (sum over agents),
    "episode_len", "policy_reward", "agent_rewards"}``.

    With ``record`` each also has ``agent_batches``: ``{policy_id: [per agent: its
    transitions (obs and new_obs preprocessed, actions, rewards summed between its turns,
    terminateds, truncateds, action_logp) and its ``agent_index``]}`` (agents of heuristic
    policies are not recorded)."""
    results: list[dict] = []
    sizes: dict[str, int] = {}
    steps_left = max_steps if max_steps is not None else np.inf
    while len(results) < num_episodes and steps_left > 0:
        n = min(num_episodes - len(results), 16)
        envs = [make_multi_agent_env(env_id, config.env_config, vector_index=i)
                for i in range(n)]
        try:
            obs = [env.reset(seed=seed + len(results) + i)[0] for i, env in enumerate(envs)]
            live = [{"policy": {}, "rewards": {}, "total": 0.0, "length": 0, "done": set(),
                     "pending": {}, "traj": {}} for _ in envs]
            active = set(range(n))
            while active and steps_left > 0:
                groups: dict[str, list] = {}
                for i in sorted(active):
                    for agent_id, raw in obs[i].items():
                        if agent_id in live[i]["done"]:
                            continue
                        pid = live[i]["policy"].setdefault(agent_id,
                                                           mapping(agent_id, None, None))
                        groups.setdefault(pid, []).append((i, agent_id, raw))
                action_dicts: dict[int, dict] = {i: {} for i in active}
                for pid, members in groups.items():
                    policy = policy_map[pid]
                    # Padded to a fixed size, so agents finishing early compile nothing new.
                    size = max(sizes.get(pid, 0), len(members))
                    sizes[pid] = size
                    padded = [m[2] for m in members] + [members[0][2]] * (size - len(members))
                    actions, _, extras = policy.compute_actions(padded, explore=explore)
                    discrete = isinstance(policy.action_space, gym.spaces.Discrete)
                    logps = extras.get("action_logp")
                    for j, ((i, agent_id, raw), a) in enumerate(zip(members, actions,
                                                                    strict=False)):
                        action_dicts[i][agent_id] = int(a) if discrete else a
                        if record and isinstance(policy, Policy):
                            logp = 0.0 if logps is None else float(np.asarray(logps)[j])
                            live[i]["pending"][agent_id] = [
                                policy.preprocess([raw])[0], np.asarray(a), logp, 0.0, pid]
                for i in sorted(active):
                    ep = live[i]
                    obs[i], rewards, terms, truncs, _ = envs[i].step(action_dicts[i])
                    ep["length"] += 1
                    steps_left -= 1
                    for agent_id, r in rewards.items():
                        pid = ep["policy"].setdefault(agent_id, mapping(agent_id, None, None))
                        key = (agent_id, pid)
                        ep["rewards"][key] = ep["rewards"].get(key, 0.0) + float(r)
                        ep["total"] += float(r)
                    for agent_id in obs[i]:
                        if terms.get(agent_id, False) or truncs.get(agent_id, False):
                            ep["done"].add(agent_id)
                    over = terms.get(ALL, False) or truncs.get(ALL, False)
                    if record:
                        _record_step(ep, obs[i], rewards, terms, truncs, policy_map,
                                     bool(over or not [a for a in obs[i]
                                                       if a not in ep["done"]]))
                    obs[i] = {a: o for a, o in obs[i].items() if a not in ep["done"]}
                    if over or not obs[i]:
                        active.discard(i)
                        policy_reward: dict = {}
                        for (_, pid), r in ep["rewards"].items():
                            policy_reward[pid] = policy_reward.get(pid, 0.0) + r
                        results.append({
                            "episode_reward": ep["total"], "episode_len": ep["length"],
                            "policy_reward": policy_reward,
                            "agent_rewards": {f"{a}/{p}": r
                                              for (a, p), r in ep["rewards"].items()}})
                        if record:
                            results[-1]["agent_batches"] = _agent_batches(ep)
        finally:
            for env in envs:
                env.close()
    return results


def _record_step(ep: dict, obs: dict, rewards: dict, terms: dict, truncs: dict,
                 policy_map: Mapping[str, Any], over: bool) -> None:
    """Adds an env step to a recorded episode: rewards go to the agents waiting for their
    next observation; an agent's transition ends at its next observation or its end."""
    all_term = bool(terms.get(ALL, False))
    for agent_id, r in rewards.items():
        if agent_id in ep["pending"]:
            ep["pending"][agent_id][3] += float(r)
    for agent_id in list(ep["pending"]):
        term = bool(terms.get(agent_id, False)) or all_term
        trunc = not term and (bool(truncs.get(agent_id, False)) or over)
        if agent_id not in obs and not (term or trunc):
            continue  # not its turn yet
        o, a, logp, reward, pid = ep["pending"].pop(agent_id)
        new_obs = policy_map[pid].preprocess([obs[agent_id]])[0] if agent_id in obs else o
        if agent_id not in ep["traj"]:
            ep["traj"][agent_id] = {"pid": pid, "agent_index": len(ep["traj"]),
                                    **{k: [] for k in _COLUMNS}}
        traj = ep["traj"][agent_id]
        for key, value in zip(_COLUMNS, (o, a, reward, term, trunc, new_obs, logp),
                              strict=True):
            traj[key].append(value)


def _agent_batches(ep: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for traj in ep["traj"].values():
        columns = {k: np.asarray(traj[k]) for k in _COLUMNS}
        columns["agent_index"] = traj["agent_index"]
        out.setdefault(traj["pid"], []).append(columns)
    return out
