"""User hooks into sampling and training, RLlib style.

Pass ``callbacks`` in the config as a ``DefaultCallbacks`` subclass (or instance), as an import
path ``"module:Class"``, or as a dict of functions keyed by hook name (RLlib's older form, each
function called with one ``info`` dict).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from jrl.errors import ConfigError

_episode_ids = itertools.count()


class Episode:
    """Book-keeping for one episode in progress, handed to episode callbacks.

    Attributes:
      episode_id: unique id within the process.
      env_index: index of the env in its worker's vector env.
      length: steps so far.
      total_reward: sum of (unclipped) rewards so far.
      custom_metrics: floats to be aggregated into the result's ``custom_metrics`` (mean/min/max).
      user_data: free scratch space for callbacks.
      hist_data: lists of values to be reported in the result's ``hist_stats``.
    """

    def __init__(self, env_index: int):
        self.episode_id = next(_episode_ids)
        self.env_index = env_index
        self.length = 0
        self.total_reward = 0.0
        self.custom_metrics: dict[str, float] = {}
        self.user_data: dict[str, Any] = {}
        self.hist_data: dict[str, list] = {}
        self._last_obs = None
        self._last_raw_obs = None
        self._last_action = None
        self._last_reward = 0.0
        self._last_info: dict = {}
        self._last_terminated = False
        self._last_truncated = False

    def record_step(self, obs: Any = None, action: Any = None, reward: float | None = None,
                    terminated: bool | None = None, truncated: bool | None = None,
                    info: dict | None = None) -> None:
        """The sampler's update of what the ``last_*_for`` getters return (None: unchanged)."""
        if obs is not None:
            self._last_obs = obs
        if action is not None:
            self._last_action = action
        if reward is not None:
            self._last_reward = float(reward)
        if terminated is not None:
            self._last_terminated = bool(terminated)
        if truncated is not None:
            self._last_truncated = bool(truncated)
        if info is not None:
            self._last_info = info

    def last_observation_for(self, agent_id: Any = None) -> np.ndarray:
        """The last preprocessed observation."""
        return self._last_obs

    def last_raw_obs_for(self, agent_id: Any = None) -> Any:
        return self._last_raw_obs

    def last_action_for(self, agent_id: Any = None) -> Any:
        return self._last_action

    def last_reward_for(self, agent_id: Any = None) -> float:
        return self._last_reward

    def last_info_for(self, agent_id: Any = None) -> dict:
        return self._last_info

    def __repr__(self) -> str:
        return f"Episode(id={self.episode_id}, length={self.length}, reward={self.total_reward:g})"


class DefaultCallbacks:
    """Override any of these methods; every argument is passed by keyword."""

    def on_episode_start(self, *, worker, base_env, policies, episode: Episode, env_index: int,
                         **kwargs) -> None:
        pass

    def on_episode_step(self, *, worker, base_env, episode: Episode, env_index: int,
                        **kwargs) -> None:
        pass

    def on_episode_end(self, *, worker, base_env, policies, episode: Episode, env_index: int,
                       **kwargs) -> None:
        pass

    def on_postprocess_trajectory(self, *, worker, episode: Episode, agent_id, policy_id,
                                  policies, postprocessed_batch, original_batches,
                                  **kwargs) -> None:
        """May rewrite ``postprocessed_batch`` in place (e.g. its ``rewards``) before learning."""

    def on_sample_end(self, *, worker, samples, **kwargs) -> None:
        pass

    def on_train_result(self, *, trainer, result: dict, **kwargs) -> None:
        """May add keys to ``result`` before it is logged."""


_DICT_HOOKS = {
    "on_episode_start": ("on_episode_start", lambda kw: {"env": kw["base_env"],
                                                          "policy": kw.get("policies"),
                                                          "episode": kw["episode"]}),
    "on_episode_step": ("on_episode_step", lambda kw: {"env": kw["base_env"],
                                                        "episode": kw["episode"]}),
    "on_episode_end": ("on_episode_end", lambda kw: {"env": kw["base_env"],
                                                      "policy": kw.get("policies"),
                                                      "episode": kw["episode"]}),
    "on_postprocess_traj": ("on_postprocess_trajectory",
                            lambda kw: {"episode": kw["episode"], "agent_id": kw["agent_id"],
                                        "pre_batch": (kw["policies"], kw["original_batches"]),
                                        "post_batch": kw["postprocessed_batch"],
                                        "all_pre_batches": kw["original_batches"]}),
    "on_sample_end": ("on_sample_end", lambda kw: {"worker": kw["worker"],
                                                    "samples": kw["samples"]}),
    "on_train_result": ("on_train_result", lambda kw: {"trainer": kw["trainer"],
                                                        "result": kw["result"]}),
}
_DICT_ALIASES = {"on_postprocess_trajectory": "on_postprocess_traj"}


class _DictCallbacks(DefaultCallbacks):
    """Adapts a dict of ``fn(info)`` functions to the ``DefaultCallbacks`` interface."""

    def __init__(self, functions: Mapping[str, Callable[[dict], Any]]):
        for key, fn in functions.items():
            name = _DICT_ALIASES.get(key, key)
            if name not in _DICT_HOOKS:
                from jrl.config import unknown_key_error

                raise unknown_key_error(key, list(_DICT_HOOKS), "callbacks.")
            if not callable(fn):
                raise ConfigError(f"config key 'callbacks.{key}' must be a function, "
                                  f"got {type(fn).__name__}")
            method, make_info = _DICT_HOOKS[name]
            setattr(self, method, self._wrap(fn, make_info))

    @staticmethod
    def _wrap(fn, make_info):
        def hook(**kwargs):
            fn(make_info(kwargs))
        return hook


def overrides_hook(callbacks: DefaultCallbacks, hook: str) -> bool:
    """Whether ``callbacks`` replaces the no-op default ``hook`` (lets samplers skip work)."""
    return getattr(type(callbacks), hook, None) is not getattr(DefaultCallbacks, hook) or \
        hook in vars(callbacks)


def make_callbacks(spec: Any) -> DefaultCallbacks:
    """A callbacks instance from the config's ``callbacks`` value."""
    if spec is None:
        return DefaultCallbacks()
    if isinstance(spec, str):
        from jrl.config import resolve_import

        spec = resolve_import(spec, "callbacks")
    if isinstance(spec, DefaultCallbacks):
        return spec
    if isinstance(spec, type) and issubclass(spec, DefaultCallbacks):
        return spec()
    if isinstance(spec, Mapping):
        return _DictCallbacks(spec)
    if isinstance(spec, type):
        # A plain class with some hook methods: the missing ones fall back to the defaults.
        return type(spec.__name__, (spec, DefaultCallbacks), {})()
    raise ConfigError("config key 'callbacks' must be a DefaultCallbacks subclass, an instance, "
                      f"a dict of functions or an import path, got {type(spec).__name__}")
