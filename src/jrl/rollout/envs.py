"""Environment creation: gymnasium ids, user-registered creators, and the vector env."""

from __future__ import annotations

import difflib
import functools
import logging
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from jrl.errors import EnvError
from jrl.networks.distributions import part_action_width
from jrl.rollout import atari, example_envs
from jrl.rollout.external_env import ExternalEnv, ExternalEnvRunner
from jrl.types import EnvSpec

logger = logging.getLogger(__name__)

_ENV_CREATORS: dict[str, Callable[[EnvContext], gym.Env]] = {}
example_envs.register()


class MultiAgentEnvFound(EnvError):
    """A single-agent code path met a ``jrl.MultiAgentEnv`` (the trainer then samples it with
    multi-agent workers)."""


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


def make_env(env_id: str, env_config: dict | None = None, *, horizon: int | None = None,
             worker_index: int = 0, vector_index: int = 0, render_mode: str | None = None,
             preprocessor_pref: str | None = None, model: Any = None,
             allow_external: bool = False) -> gym.Env:
    """Builds one env: a registered creator or a gymnasium id; ``horizon`` adds a time limit.

    ALE ids get the DeepMind wrappers with ``preprocessor_pref="deepmind"`` (``model`` gives
    ``dim`` and ``framestack``; see ``jrl.rollout.atari``). With ``allow_external`` a creator
    may also return an ``ExternalEnv``.
    """
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
        if getattr(type(env), "jrl_multi_agent", False):  # a jrl.MultiAgentEnv
            env.close()
            raise MultiAgentEnvFound(f"env '{env_id}' is a jrl.MultiAgentEnv")
        if horizon is not None:
            env = gym.wrappers.TimeLimit(env, max_episode_steps=horizon)
        return env
    atari.ensure_registered(env_id)
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
    deepmind = preprocessor_pref == atari.DEEPMIND and atari.is_atari(env_id)
    if deepmind:
        overrides, frame_skip = atari.deepmind_make_kwargs(env_id, dict(env_config or {}))
        kwargs.update(overrides)
    try:
        env = gym.make(env_id, **kwargs)
    except (TypeError, gym.error.Error) as e:
        raise EnvError(f"cannot make env '{env_id}' with env_config {dict(env_config or {})}: {e}"
                       ) from e
    if deepmind:
        env = atari.wrap_deepmind(env, frame_skip=frame_skip,
                                  dim=int(getattr(model, "dim", 84)),
                                  framestack=bool(getattr(model, "framestack", True)))
    return env


def make_vector_env(env_id: str, num_envs: int, env_config: dict | None = None, *,
                    horizon: int | None = None, worker_index: int = 0,
                    video_dir: str | None = None, vectorization: str = "sync",
                    preprocessor_pref: str | None = None, model: Any = None,
                    restart_failed: bool = False) -> gym.vector.VectorEnv | ExternalEnvRunner:
    """``num_envs`` envs stepped together; finished envs reset in the same step (final obs in
    info). With ``video_dir`` the first env records videos of its episodes there; with
    ``restart_failed`` an env that raises is rebuilt in place (``RestartingEnv``). A creator
    that returns an ``ExternalEnv`` gives one ``ExternalEnvRunner`` instead (the env drives
    itself).

    ``vectorization``: ``sync`` steps the envs in this process, ``async`` in one subprocess each
    (gymnasium's ``AsyncVectorEnv``), ``envpool`` in envpool's thread pool (gymnasium ids of
    Atari and classic-control envs only).
    """
    wrap = dict(preprocessor_pref=preprocessor_pref, model=model)
    if vectorization == "envpool":
        if restart_failed:
            raise EnvError("restart_failed_sub_environments rebuilds gymnasium envs; envpool's "
                           "pool cannot rebuild one env (use vectorization: sync or async)")
        return _envpool_vector_env(env_id, num_envs, env_config, horizon, video_dir, wrap)
    # A registered creator may return an ExternalEnv: build the first env to find out (it is
    # then used as sub-env 0, once; async sub-envs are built in their own processes).
    spare: list[gym.Env] = []
    if env_id in _ENV_CREATORS and video_dir is None:
        first = make_env(env_id, env_config, horizon=horizon, worker_index=worker_index,
                         allow_external=True, **wrap)
        if isinstance(first, ExternalEnv):
            return ExternalEnvRunner(first)
        if vectorization == "async":
            first.close()
        else:
            spare.append(first)

    def build(i: int) -> Callable[[], gym.Env]:
        if video_dir is not None and i == 0:
            return lambda: _recording_env(env_id, env_config, horizon, worker_index, video_dir,
                                          wrap)

        def make() -> gym.Env:
            if i == 0 and spare:  # handed out once: a rebuilt env is a new one
                return spare.pop()
            return make_env(env_id, env_config, horizon=horizon, worker_index=worker_index,
                            vector_index=i, **wrap)

        return make

    def thunk(i: int) -> Callable[[], gym.Env]:
        if not restart_failed:
            return lambda: EpisodeSeeds(build(i)())
        return lambda: EpisodeSeeds(RestartingEnv(build(i), env_id, worker_index, i))

    try:
        if vectorization == "async":
            # Spawned, not forked (JAX's threads do not survive a fork); the env's creator
            # travels with each subprocess's thunk (cloudpickle).
            creator = _ENV_CREATORS.get(env_id)
            thunks = [functools.partial(_make_registered, env_id, creator, thunk(i))
                      for i in range(num_envs)]
            return gym.vector.AsyncVectorEnv(thunks, context="spawn",
                                             autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        return gym.vector.SyncVectorEnv([thunk(i) for i in range(num_envs)],
                                        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    except (AssertionError, RuntimeError) as e:
        raise EnvError(f"cannot build vector env for '{env_id}': {e}") from e


class EpisodeSeeds(gym.Wrapper):
    """Seeds every episode's ``reset``: the first with the seed it is given, episode ``k`` after
    it with a seed derived from that one and ``k``. An episode's start then depends only on
    (seed, k), so a sampler can rebuild a running episode after a restore: ``reset_to(seed, k)``
    and replay the episode's actions (exact for envs that are deterministic given their reset
    seed and actions)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.base_seed: int | None = None
        self.episode = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple:
        if seed is not None:
            self.base_seed, self.episode = int(seed), 0
        elif self.base_seed is not None:
            self.episode += 1
            seed = episode_seed(self.base_seed, self.episode)
        return self._reset(seed, options)

    def reset_to(self, base_seed: int | None, episode: int) -> tuple:
        """Resets into episode ``episode`` of the seed sequence of ``base_seed``."""
        self.base_seed, self.episode = base_seed, int(episode)
        seed = None if base_seed is None else (
            base_seed if episode == 0 else episode_seed(base_seed, episode))
        return self._reset(seed, None)

    def _reset(self, seed: int | None, options: dict | None) -> tuple:
        # Only the arguments given: some users' envs take no ``options`` (or no arguments).
        kwargs = {k: v for k, v in (("seed", seed), ("options", options)) if v is not None}
        return self.env.reset(**kwargs)


def episode_seed(base_seed: int, episode: int) -> int:
    """The reset seed of episode ``episode`` (>= 1) after a reset with ``base_seed``."""
    return int(np.random.SeedSequence([base_seed, episode]).generate_state(1)[0])


# Set in a step's info by ``RestartingEnv`` when it rebuilt its env: that episode is dropped.
RESTARTED_KEY = "jrl_env_restarted"


class RestartingEnv(gym.Wrapper):
    """An env that is rebuilt and reset when its ``step`` or ``reset`` raises (RLlib's
    ``restart_failed_sub_environments``).

    A failed ``step`` ends the episode as truncated, with reward 0, the new env's first
    observation and ``info[RESTARTED_KEY] = True`` (samplers leave that episode out of their
    statistics). Building or resetting the new env is tried ``max_attempts`` times.
    """

    def __init__(self, make: Callable[[], gym.Env], env_id: str, worker_index: int = 0,
                 vector_index: int = 0, max_attempts: int = 3):
        self._make = make
        self._where = f"env '{env_id}' (worker {worker_index}, sub-env {vector_index})"
        self._max_attempts = max_attempts
        self.num_restarts = 0
        super().__init__(make())

    def _restart(self, error: BaseException, **reset_kwargs: Any) -> tuple[Any, dict]:
        last = error
        for _ in range(self._max_attempts):
            self.num_restarts += 1
            logger.warning("%s failed (%s: %s); rebuilding it (restart_failed_sub_environments)",
                           self._where, type(last).__name__, last)
            try:
                self.env.close()
            except Exception:  # the broken env may not close cleanly; it is dropped anyway
                pass
            try:
                self.env = self._make()
                return self.env.reset(**reset_kwargs)
            except Exception as e:  # try again with a fresh env
                last = e
        raise EnvError(f"{self._where} failed and could not be rebuilt in "
                       f"{self._max_attempts} attempts: {type(last).__name__}: {last}") from last

    def step(self, action: Any) -> tuple:
        try:
            return self.env.step(action)
        except Exception as e:  # the user's env raised: rebuild it, end the episode
            obs, info = self._restart(e)
            return obs, 0.0, False, True, {**info, RESTARTED_KEY: True}

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        try:
            return self.env.reset(**kwargs)
        except Exception as e:
            return self._restart(e, **kwargs)


def _make_registered(env_id: str, creator: Callable | None, make: Callable[[], gym.Env]
                     ) -> gym.Env:
    """In an ``async`` subprocess: registers the parent's creator for ``env_id``, then makes."""
    if creator is not None:
        register_env(env_id, creator)
    return make()


def _envpool_vector_env(env_id: str, num_envs: int, env_config: dict | None,
                        horizon: int | None, video_dir: str | None, wrap: dict
                        ) -> gym.vector.VectorEnv:
    from jrl.rollout.envpool_env import EnvPoolVectorEnv

    if env_id in _ENV_CREATORS:
        raise EnvError(f"vectorization: envpool runs envpool's own envs, not the registered "
                       f"env '{env_id}'; use vectorization: sync or async")
    if env_config:
        raise EnvError("vectorization: envpool takes no env_config; use vectorization: sync")
    if video_dir is not None:
        raise EnvError("monitor=True records gymnasium renders; envpool envs do not render "
                       "(use vectorization: sync)")
    model = wrap["model"]
    return EnvPoolVectorEnv(env_id, num_envs, preprocessor_pref=wrap["preprocessor_pref"],
                            horizon=horizon, dim=int(getattr(model, "dim", 84)),
                            framestack=bool(getattr(model, "framestack", True)))


def _recording_env(env_id: str, env_config: dict | None, horizon: int | None,
                   worker_index: int, video_dir: str, wrap: dict | None = None) -> gym.Env:
    try:
        import moviepy  # noqa: F401
    except ImportError:
        raise EnvError("monitor=True records videos and needs moviepy: pip install 'jrl[video]'"
                       ) from None
    env = make_env(env_id, env_config, horizon=horizon, worker_index=worker_index,
                   render_mode="rgb_array", **(wrap or {}))
    if env.render_mode != "rgb_array":
        raise EnvError(f"monitor=True needs env '{env_id}' to render with "
                       f"render_mode='rgb_array', got {env.render_mode!r}")
    return gym.wrappers.RecordVideo(env, video_folder=video_dir, name_prefix="training",
                                    disable_logger=True)


def env_spec(obs_shape: tuple[int, ...], obs_dtype: Any, action_space: gym.Space,
             action_mask: tuple[int, int] | None = None) -> EnvSpec:
    """The learner's ``EnvSpec`` for preprocessed observations and an action space
    (``action_mask``: where the observations hold an action mask, see ``EnvSpec``)."""
    if isinstance(action_space, gym.spaces.Discrete):
        if int(action_space.start) != 0:
            raise EnvError(f"Discrete action spaces must start at 0, got {action_space}")
        if action_mask is not None and action_mask[1] - action_mask[0] != int(action_space.n):
            raise EnvError(f"observation 'action_mask' has {action_mask[1] - action_mask[0]} "
                           f"entries but the action space {action_space} has {action_space.n} "
                           "actions")
        return EnvSpec(obs_shape=tuple(obs_shape), obs_dtype=np.dtype(obs_dtype).name,
                       action_kind="discrete", num_actions=int(action_space.n),
                       action_mask=action_mask)
    if action_mask is not None:
        raise EnvError(f"an 'action_mask' observation needs a Discrete action space, got "
                       f"{action_space}")
    if isinstance(action_space, gym.spaces.Box):
        return EnvSpec(obs_shape=tuple(obs_shape), obs_dtype=np.dtype(obs_dtype).name,
                       action_kind="continuous", action_shape=tuple(action_space.shape),
                       action_low=tuple(float(x) for x in np.ravel(action_space.low)),
                       action_high=tuple(float(x) for x in np.ravel(action_space.high)))
    obs = {"obs_shape": tuple(obs_shape), "obs_dtype": np.dtype(obs_dtype).name}
    if isinstance(action_space, gym.spaces.MultiDiscrete):
        if np.any(np.asarray(action_space.start) != 0) or np.ndim(action_space.nvec) != 1:
            raise EnvError(f"MultiDiscrete action spaces must be 1-D and start at 0, got "
                           f"{action_space}")
        nvec = tuple(int(n) for n in action_space.nvec)
        return EnvSpec(**obs, action_kind="multi_discrete", action_shape=(len(nvec),),
                       action_nvec=nvec)
    if isinstance(action_space, gym.spaces.MultiBinary):
        if len(action_space.shape) != 1:
            raise EnvError(f"MultiBinary action spaces must be 1-D, got {action_space}")
        return EnvSpec(**obs, action_kind="multi_binary", action_shape=tuple(action_space.shape))
    if isinstance(action_space, (gym.spaces.Tuple, gym.spaces.Dict)):
        paths, parts = [], []
        for path, leaf in _action_leaves(action_space, ()):
            paths.append(path)
            parts.append(env_spec((), "float32", leaf))
        if not parts:
            raise EnvError(f"action space {action_space} has no parts")
        width = sum(part_action_width(p) for p in parts)
        kind = "tuple" if isinstance(action_space, gym.spaces.Tuple) else "dict"
        return EnvSpec(**obs, action_kind=kind, action_shape=(width,),
                       action_parts=tuple(parts), action_paths=tuple(paths))
    raise EnvError(f"action space {action_space} is not supported (use Discrete, Box, "
                   "MultiDiscrete, MultiBinary, or a Tuple/Dict of them)")


def _action_leaves(space: gym.Space, path: tuple) -> list[tuple[tuple, gym.Space]]:
    if isinstance(space, gym.spaces.Tuple):
        return [leaf for i, s in enumerate(space.spaces) for leaf in _action_leaves(s, (*path, i))]
    if isinstance(space, gym.spaces.Dict):
        return [leaf for k, s in space.spaces.items() for leaf in _action_leaves(s, (*path, k))]
    return [(path, space)]


def unflatten_actions(spec: EnvSpec, flat: Any, clip: bool = True) -> Any:
    """Flat actions ``[..., D]`` of a Tuple/Dict action space (``spec.composite``) as the
    space's nested tuples/dicts of NumPy arrays ``[..., *leaf_shape]`` (what the env steps
    with): discrete parts as int64, Box parts reshaped (and, with ``clip``, clipped to their
    bounds)."""
    flat = np.asarray(flat)
    lead, leaves, start = flat.shape[:-1], [], 0
    for part in spec.action_parts:
        width = part_action_width(part)
        x = flat[..., start:start + width]
        start += width
        if part.continuous:
            shape = tuple(part.action_shape)
            x = x.astype(np.float32)
            if clip:
                x = np.clip(x, np.asarray(part.action_low, np.float32),
                            np.asarray(part.action_high, np.float32))
            x = x.reshape((*lead, *shape))
        else:
            x = np.rint(x).astype(np.int64)
            x = x[..., 0] if part.discrete else x.astype(np.int8 if part.action_kind ==
                                                          "multi_binary" else np.int64)
        leaves.append(x)
    return _nest(list(zip(spec.action_paths, leaves, strict=True)))


def _nest(items: list[tuple[tuple, Any]]) -> Any:
    if len(items) == 1 and items[0][0] == ():
        return items[0][1]
    groups: dict[Any, list] = {}
    for path, leaf in items:
        groups.setdefault(path[0], []).append((path[1:], leaf))
    if all(isinstance(k, int) for k in groups):
        return tuple(_nest(v) for v in groups.values())
    return {k: _nest(v) for k, v in groups.items()}


def flatten_actions(spec: EnvSpec, nested: Any) -> np.ndarray:
    """Nested Tuple/Dict actions (leaves ``[..., *leaf_shape]``) as flat float32 ``[..., D]``;
    a flat array of width ``D`` passes through."""
    if isinstance(nested, np.ndarray) and nested.dtype != object and \
            nested.shape[-1:] == tuple(spec.action_shape):
        return nested.astype(np.float32)
    leaves = []
    for part, path in zip(spec.action_parts, spec.action_paths, strict=True):
        x = nested
        try:
            for k in path:
                x = x[k]
        except (KeyError, IndexError, TypeError):
            raise EnvError(f"action {nested!r} has no part at {list(path)}") from None
        x = np.asarray(x, np.float32)
        if part.discrete:
            x = x[..., None]
        else:
            x = x.reshape((*x.shape[:x.ndim - len(part.action_shape)], -1))
        leaves.append(x)
    return np.concatenate(leaves, axis=-1)
