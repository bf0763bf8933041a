"""Multi-agent environments with RLlib's contract, and the PettingZoo adapter.

A ``MultiAgentEnv`` returns dicts keyed by agent id: ``reset() -> (obs, infos)`` and
``step(action_dict) -> (obs, rewards, terminateds, truncateds, infos)``, where ``terminateds``
and ``truncateds`` also carry ``"__all__"`` (the whole episode is over). Only agents present in
the observation dict act in the next step, so agents may join late and leave early (an agent
whose ``terminateds[agent_id]`` is True is done for the rest of the episode).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym

from jrl.config import resolve_import
from jrl.errors import ConfigError, EnvError
from jrl.rollout.envs import EnvContext, make_env, registered_creator

ALL = "__all__"
PETTINGZOO_PREFIX = "pettingzoo:"


class MultiAgentEnv(gym.Env):
    """Base class of multi-agent envs (RLlib's ``MultiAgentEnv``).

    Subclasses implement ``reset`` and ``step`` over dicts keyed by agent id and declare spaces
    either as ``observation_space``/``action_space`` ``gymnasium.spaces.Dict`` keyed by agent id,
    as ``observation_spaces``/``action_spaces`` dicts, or one space shared by every agent. They
    may set ``possible_agents`` (all agent ids that can ever appear) and ``agents`` (those
    currently alive).
    """

    possible_agents: list = []
    agents: list = []
    # How jrl.rollout.envs tells a multi-agent env from a single-agent one without importing
    # this module.
    jrl_multi_agent = True

    def get_agent_ids(self) -> set:
        """Every agent id that may appear (``possible_agents``, or the keys of Dict spaces)."""
        if getattr(self, "possible_agents", None):
            return set(self.possible_agents)
        spaces = getattr(self, "observation_spaces", None)
        if isinstance(spaces, dict):
            return set(spaces)
        if isinstance(getattr(self, "observation_space", None), gym.spaces.Dict):
            return set(self.observation_space.spaces)
        return set()

    def get_observation_space(self, agent_id: Any) -> gym.Space | None:
        return _agent_space(self, "observation", agent_id)

    def get_action_space(self, agent_id: Any) -> gym.Space | None:
        return _agent_space(self, "action", agent_id)


def _agent_space(env: Any, kind: str, agent_id: Any) -> gym.Space | None:
    """``agent_id``'s observation or action space, from per-agent getters, ``<kind>_spaces``
    dicts, a Dict space keyed by agent id, or a single space shared by all agents."""
    getter = getattr(env, f"get_{kind}_space", None)
    if getter is not None and not isinstance(env, MultiAgentEnv):
        return getter(agent_id)  # PettingZoo-style observation_space(agent) functions
    per_agent = getattr(env, f"{kind}_spaces", None)
    if isinstance(per_agent, dict):
        return per_agent.get(agent_id)
    space = getattr(env, f"{kind}_space", None)
    if callable(space) and not isinstance(space, gym.Space):
        return space(agent_id)
    if isinstance(space, gym.spaces.Dict) and agent_id in space.spaces:
        ids = set(getattr(env, "possible_agents", None) or [])
        if not ids or set(space.spaces) == ids:
            return space.spaces[agent_id]
    return space if isinstance(space, gym.Space) else None


def agent_observation_space(env: Any, agent_id: Any) -> gym.Space | None:
    """The observation space ``env`` declares for ``agent_id`` (None when it declares none)."""
    if isinstance(env, MultiAgentEnv):
        return env.get_observation_space(agent_id)
    return _agent_space(env, "observation", agent_id)


def agent_action_space(env: Any, agent_id: Any) -> gym.Space | None:
    if isinstance(env, MultiAgentEnv):
        return env.get_action_space(agent_id)
    return _agent_space(env, "action", agent_id)


def agent_ids(env: Any) -> list:
    """The agent ids ``env`` declares up front (may be empty: then they come with ``reset``)."""
    if isinstance(env, MultiAgentEnv):
        ids = env.get_agent_ids()
    else:
        ids = getattr(env, "possible_agents", None) or []
    return sorted(ids, key=str)


def make_multi_agent(env_name_or_creator: str | Callable[[dict], gym.Env]) -> type:
    """A ``MultiAgentEnv`` class of ``num_agents`` independent copies of a single-agent env
    (RLlib's ``make_multi_agent``): agent ids ``0..num_agents-1``, each agent's episode ends
    on its own, and the episode ends when every agent's has (``"__all__"``).

    ``config["num_agents"]`` (default 2) sets the number of copies; the rest of ``config`` goes
    to the env's creator (or to ``gymnasium.make`` for an id).
    """

    class IndependentMultiAgentEnv(MultiAgentEnv):
        def __init__(self, config: dict | None = None):
            config = dict(config or {})
            n = int(config.pop("num_agents", 2))
            if isinstance(env_name_or_creator, str):
                self.envs = [make_env(env_name_or_creator, config) for _ in range(n)]
            else:
                self.envs = [env_name_or_creator(config) for _ in range(n)]
            self.possible_agents = list(range(n))
            self.agents = []
            self.observation_space = gym.spaces.Dict(
                {i: e.observation_space for i, e in enumerate(self.envs)})
            self.action_space = gym.spaces.Dict(
                {i: e.action_space for i, e in enumerate(self.envs)})
            self._done: set = set()

        def reset(self, *, seed: int | None = None, options: dict | None = None):
            self._done = set()
            self.agents = list(self.possible_agents)
            obs, infos = {}, {}
            for i, env in enumerate(self.envs):
                obs[i], infos[i] = env.reset(seed=None if seed is None else seed + i,
                                             options=options)
            return obs, infos

        def step(self, action_dict: dict):
            obs, rew, term, trunc, infos = {}, {}, {}, {}, {}
            for i, action in action_dict.items():
                obs[i], rew[i], term[i], trunc[i], infos[i] = self.envs[i].step(action)
                if term[i] or trunc[i]:
                    self._done.add(i)
            self.agents = [i for i in self.possible_agents if i not in self._done]
            term[ALL] = len(self._done) == len(self.envs) and all(
                term.get(i, True) for i in action_dict)
            trunc[ALL] = len(self._done) == len(self.envs) and not term[ALL]
            return obs, rew, term, trunc, infos

        def close(self):
            for env in self.envs:
                env.close()

    name = env_name_or_creator if isinstance(env_name_or_creator, str) else getattr(
        env_name_or_creator, "__name__", "env")
    IndependentMultiAgentEnv.__name__ = f"MultiAgent({name})"
    return IndependentMultiAgentEnv


class ParallelPettingZooEnv(MultiAgentEnv):
    """A PettingZoo ``ParallelEnv`` as a ``MultiAgentEnv`` (RLlib's ``ParallelPettingZooEnv``).

    Agent ids and per-agent spaces are PettingZoo's (``observation_space(agent)``,
    ``action_space(agent)``); ``"__all__"`` is set when no agent is left alive.
    """

    def __init__(self, env: Any):
        self.par_env = env
        self.possible_agents = list(env.possible_agents)
        self.agents = []
        self.observation_spaces = {a: env.observation_space(a) for a in self.possible_agents}
        self.action_spaces = {a: env.action_space(a) for a in self.possible_agents}
        self.observation_space = gym.spaces.Dict(self.observation_spaces)
        self.action_space = gym.spaces.Dict(self.action_spaces)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, infos = self.par_env.reset(seed=seed, options=options)
        self.agents = list(self.par_env.agents)
        return obs, infos

    def step(self, action_dict: dict):
        obs, rew, term, trunc, infos = self.par_env.step(action_dict)
        term, trunc = dict(term), dict(trunc)
        self.agents = list(self.par_env.agents)
        over = not self.agents
        term[ALL] = over and all(term.get(a, False) for a in action_dict)
        trunc[ALL] = over and not term[ALL]
        return obs, rew, term, trunc, infos

    def render(self):
        return self.par_env.render()

    def close(self):
        self.par_env.close()


def make_pettingzoo_env(env_id: str, env_config: dict | None = None) -> ParallelPettingZooEnv:
    """``"pettingzoo:<module>"`` (e.g. ``pettingzoo:pettingzoo.mpe.simple_spread_v3``): the
    module's ``parallel_env(**env_config)`` wrapped as a ``MultiAgentEnv``."""
    module_name = env_id[len(PETTINGZOO_PREFIX):]
    try:
        import pettingzoo  # noqa: F401
    except ImportError:
        raise EnvError(f"env '{env_id}' needs PettingZoo: pip install 'jrl[pettingzoo]'"
                       ) from None
    try:
        factory = resolve_import(f"{module_name}:parallel_env", "PettingZoo env")
    except ConfigError as e:
        raise EnvError(f"env '{env_id}': {e}") from None
    try:
        return ParallelPettingZooEnv(factory(**dict(env_config or {})))
    except TypeError as e:
        raise EnvError(f"env '{env_id}': parallel_env({dict(env_config or {})}) failed: {e}"
                       ) from None


def _creator(env_id: str) -> Callable | None:
    """A registered creator, or the class/function an import path ``"module:attr"`` names."""
    creator = registered_creator(env_id)
    if creator is None and ":" in env_id and not env_id.startswith(PETTINGZOO_PREFIX) \
            and not env_id.startswith("gymnax:"):
        try:
            creator = resolve_import(env_id, "env")
        except ConfigError as e:
            raise EnvError(str(e)) from None
    return creator


def is_multi_agent_env_id(env_id: str | None, env_config: dict | None = None) -> bool:
    """Whether ``env_id`` surely makes a ``MultiAgentEnv``: ``pettingzoo:`` ids, and
    ``MultiAgentEnv`` classes registered or named by a ``"module:Class"`` path."""
    if not env_id:
        return False
    if env_id.startswith(PETTINGZOO_PREFIX):
        return True
    creator = _creator(env_id)
    if creator is None:
        return False
    # A creator function is not called here (it may count its calls): the single-agent path
    # raises MultiAgentEnvFound when it returns a MultiAgentEnv.
    return isinstance(creator, type) and issubclass(creator, MultiAgentEnv)


def make_multi_agent_env(env_id: str, env_config: dict | None = None, *, worker_index: int = 0,
                         vector_index: int = 0) -> MultiAgentEnv:
    """One multi-agent env: a ``pettingzoo:<module>`` id, a registered creator, or a
    ``"module:Class"`` import path of a ``MultiAgentEnv`` (built with the ``EnvContext``)."""
    if env_id.startswith(PETTINGZOO_PREFIX):
        return make_pettingzoo_env(env_id, env_config)
    creator = _creator(env_id)
    if creator is None:
        raise EnvError(f"unknown multi-agent env '{env_id}' (register it with jrl.register_env, "
                       f"give a 'module:Class' path, or use 'pettingzoo:<module>')")
    ctx = EnvContext(env_config, worker_index=worker_index, vector_index=vector_index)
    try:
        env = creator(ctx)
    except EnvError:
        raise
    except Exception as e:
        raise EnvError(f"env creator for '{env_id}' failed: {type(e).__name__}: {e}") from e
    if not isinstance(env, MultiAgentEnv):
        raise EnvError(f"env creator for '{env_id}' must return a jrl.MultiAgentEnv for "
                       f"multi-agent training, got {type(env).__name__}")
    return env
