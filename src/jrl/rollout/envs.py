"""Environment creation: gymnasium ids, user-registered creators, and the vector env."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from jrl.errors import EnvError
from jrl.rollout.external_env import ExternalEnv, ExternalEnvRunner
from jrl.types import EnvSpec

logger = logging.getLogger(__name__)

_ENV_CREATORS: dict[str, Callable[[EnvContext], gym.Env]] = {}


class EnvContext(dict):
    """The ``env_config`` dict handed to env creators, with the env's place in the sampler.

    Attributes:
      worker_index: 0 for the trainer's own (local) worker, 1..N for remote workers.
      vector_index: index of this env within its worker's vector env.
    """

    def __init__(self, env_config: dict | None = None, worker_index: int = 0,
                 vector_index: int = 0, num_workers: int = 0):
        super().__init__(env_config or {})
        self.worker_index = worker_index
        self.vector_index = vector_index
        self.num_workers = num_workers


def register_env(name: str, creator: Callable[[EnvContext], gym.Env]) -> None:
    """Registers ``creator(env_config) -> gymnasium.Env`` under ``name`` for configs and the CLI."""
    if not isinstance(name, str) or not name:
        raise EnvError(f"env name must be a non-empty string, got {name!r}")
    if not callable(creator):
        raise EnvError(f"env creator for '{name}' must be callable, got {type(creator).__name__}")
    _ENV_CREATORS[name] = creator


def registered_creator(name: str) -> Callable[[EnvContext], gym.Env] | None:
    return _ENV_CREATORS.get(name)


def registered_envs() -> list[str]:
    return sorted(_ENV_CREATORS)


def _maybe_register_ale(env_id: str) -> None:
    if env_id.startswith("ALE/"):
        try:
            import ale_py

            gym.register_envs(ale_py)
        except ImportError:
            raise EnvError(f"env '{env_id}' needs ale-py: pip install ale-py") from None


def make_env(env_id: str, env_config: dict | None = None, *, horizon: int | None = None,
             worker_index: int = 0, vector_index: int = 0, render_mode: str | None = None,
             allow_external: bool = False) -> gym.Env:
    """Builds one env: a registered creator or a gymnasium id; ``horizon`` adds a time limit.
    With ``allow_external`` a creator may also return an ``ExternalEnv``."""
    if not env_id:
        raise EnvError("no env given: pass env=... (or --env) with a gymnasium id or a registered name")
    ctx = EnvContext(env_config, worker_index=worker_index, vector_index=vector_index)
    if env_id in _ENV_CREATORS:
        try:
            env = _ENV_CREATORS[env_id](ctx)
        except EnvError:
            raise
        except Exception as e:  # the user's creator failed: say which env and why
            raise EnvError(f"env creator for '{env_id}' failed: {type(e).__name__}: {e}") from e
        if isinstance(env, ExternalEnv):
            if allow_external:
                return env
            raise EnvError(f"env '{env_id}' is an ExternalEnv: it can train, but evaluation "
                           "and rollouts need a gymnasium.Env")
        if not isinstance(env, gym.Env):
            raise EnvError(f"env creator for '{env_id}' must return a gymnasium.Env, "
                           f"got {type(env).__name__}")
        if horizon is not None:
            env = gym.wrappers.TimeLimit(env, max_episode_steps=horizon)
        return env
    _maybe_register_ale(env_id)
    if env_id not in gym.registry:
        known = list(gym.registry) + registered_envs()
        near = difflib.get_close_matches(env_id, known, n=1, cutoff=0.6)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        raise EnvError(f"unknown env '{env_id}'{hint}")
    # Gymnasium's own envs are known to follow the API: skip the per-step checker wrapper.
    kwargs: dict[str, Any] = {"disable_env_checker": True, **dict(env_config or {})}
    if horizon is not None:
        kwargs["max_episode_steps"] = horizon
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    try:
        return gym.make(env_id, **kwargs)
    except (TypeError, gym.error.Error) as e:
        raise EnvError(f"cannot make env '{env_id}' with env_config {dict(env_config or {})}: {e}"
                       ) from e


def make_vector_env(env_id: str, num_envs: int, env_config: dict | None = None, *,
                    horizon: int | None = None, worker_index: int = 0,
                    video_dir: str | None = None) -> gym.vector.SyncVectorEnv | ExternalEnvRunner:
    """``num_envs`` envs stepped together; finished envs reset in the same step (final obs in
    info). With ``video_dir`` the first env records videos of its episodes there. A creator that
    returns an ``ExternalEnv`` gives one ``ExternalEnvRunner`` instead (the env drives itself)."""
    first = None
    if env_id in _ENV_CREATORS and video_dir is None:
        first = make_env(env_id, env_config, horizon=horizon, worker_index=worker_index,
                         allow_external=True)
        if isinstance(first, ExternalEnv):
            return ExternalEnvRunner(first)

    def thunk(i: int) -> Callable[[], gym.Env]:
        if i == 0 and first is not None:
            return lambda: first
        if video_dir is not None and i == 0:
            return lambda: _recording_env(env_id, env_config, horizon, worker_index, video_dir)
        return lambda: make_env(env_id, env_config, horizon=horizon, worker_index=worker_index,
                                vector_index=i)

    try:
        return gym.vector.SyncVectorEnv([thunk(i) for i in range(num_envs)],
                                        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    except (AssertionError, RuntimeError) as e:
        raise EnvError(f"cannot build vector env for '{env_id}': {e}") from e


def _recording_env(env_id: str, env_config: dict | None, horizon: int | None,
                   worker_index: int, video_dir: str) -> gym.Env:
    try:
        import moviepy  # noqa: F401
    except ImportError:
        raise EnvError("monitor=True records videos and needs moviepy: pip install 'jrl[video]'"
                       ) from None
    env = make_env(env_id, env_config, horizon=horizon, worker_index=worker_index,
                   render_mode="rgb_array")
    if env.render_mode != "rgb_array":
        raise EnvError(f"monitor=True needs env '{env_id}' to render with "
                       f"render_mode='rgb_array', got {env.render_mode!r}")
    return gym.wrappers.RecordVideo(env, video_folder=video_dir, name_prefix="training",
                                    disable_logger=True)


def env_spec(obs_shape: tuple[int, ...], obs_dtype: Any, action_space: gym.Space) -> EnvSpec:
    """The learner's ``EnvSpec`` for preprocessed observations and an action space."""
    if isinstance(action_space, gym.spaces.Discrete):
        if int(action_space.start) != 0:
            raise EnvError(f"Discrete action spaces must start at 0, got {action_space}")
        return EnvSpec(obs_shape=tuple(obs_shape), obs_dtype=np.dtype(obs_dtype).name,
                       action_kind="discrete", num_actions=int(action_space.n))
    if isinstance(action_space, gym.spaces.Box):
        return EnvSpec(obs_shape=tuple(obs_shape), obs_dtype=np.dtype(obs_dtype).name,
                       action_kind="continuous", action_shape=tuple(action_space.shape),
                       action_low=tuple(float(x) for x in np.ravel(action_space.low)),
                       action_high=tuple(float(x) for x in np.ravel(action_space.high)))
    raise EnvError(f"action space {action_space} is not supported (use Discrete or Box)")
