"""``vectorization: envpool``: envpool's C++ env pool behind gymnasium's ``VectorEnv`` API.

Gives what the gymnasium path gives (``pip install 'jrl[envpool]'``): same-step auto-reset with
the true last observation in ``info["final_obs"]``, termination and truncation kept apart, and for
Atari the DeepMind preprocessing done inside envpool (no-op reset, frame skip with max-pool,
episodic life, fire reset, 84x84 gray, 4 stacked frames) laid out channel-last, ``(84, 84, 4)``
uint8 -- the observations ``jrl.rollout.atari.wrap_deepmind`` makes.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from jrl.errors import EnvError
from jrl.rollout import atari

# info keys kept from envpool's (it also returns per-player dicts and the RAM).
_INFO_KEYS = ("lives", "elapsed_step")


def _import_envpool() -> Any:
    try:
        import envpool
    except ImportError:
        raise EnvError("vectorization: envpool needs envpool: pip install 'jrl[envpool]'"
                       ) from None
    return envpool


def envpool_task(env_id: str, *, preprocessor_pref: str | None = atari.DEEPMIND,
                 horizon: int | None = None, dim: int = 84, framestack: bool = True,
                 noop_max: int = atari.NOOP_MAX, fire_reset: bool = True) -> tuple[str, dict]:
    """envpool's task id and ``envpool.make`` keywords for a gymnasium id."""
    envpool = _import_envpool()
    known = set(envpool.list_all_envs())
    kwargs: dict[str, Any] = {}
    atari.ensure_registered(env_id)
    if atari.is_atari(env_id):
        if preprocessor_pref != atari.DEEPMIND:
            raise EnvError("vectorization: envpool runs Atari with the DeepMind preprocessing "
                           "only; set preprocessor_pref: deepmind")
        spec = gym.registry[env_id]
        game = "".join(part.capitalize() for part in spec.kwargs["game"].split("_"))
        task = f"{game}-v5"
        skip = spec.kwargs.get("frameskip", 1)
        if task not in known or not isinstance(skip, int):
            raise EnvError(f"envpool has no match for '{env_id}' (fixed frame skip needed)")
        kwargs.update(
            frame_skip=atari.FRAME_STACK if skip == 1 else skip,
            repeat_action_probability=float(spec.kwargs.get("repeat_action_probability", 0.0)),
            noop_max=max(1, noop_max), episodic_life=True, use_fire_reset=fire_reset, reward_clip=False,
            img_height=dim, img_width=dim, gray_scale=True,
            stack_num=atari.FRAME_STACK if framestack else 1)
        frames = int(spec.kwargs.get("max_num_frames_per_episode", 108_000))
        kwargs["max_episode_steps"] = horizon or frames // kwargs["frame_skip"]
        return task, kwargs
    if env_id not in known:
        raise EnvError(f"envpool has no env '{env_id}' (it runs Atari and classic-control ids); "
                       "use vectorization: sync or async")
    if horizon is not None:
        kwargs["max_episode_steps"] = horizon
    return env_id, kwargs


class EnvPoolVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` envpool envs with gymnasium's same-step auto-reset.

    envpool resets a finished env on the *next* step; here a finished env is reset in the same
    step (its reset observation returned, the last one in ``info["final_obs"]``), like
    ``SyncVectorEnv(autoreset_mode=SAME_STEP)``. The pool is built on the first ``reset`` so its
    seed is the one ``reset(seed=...)`` gives (env ``i`` gets ``seed + i``).
    """

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}

    def __init__(self, env_id: str, num_envs: int, *, num_threads: int = 0, **task_kwargs: Any):
        envpool = _import_envpool()
        self._envpool = envpool
        self.env_id = env_id
        self._task, self._kwargs = envpool_task(env_id, **task_kwargs)
        self._kwargs["num_threads"] = num_threads
        self.num_envs = num_envs
        spec = envpool.make_spec(self._task, num_envs=num_envs, **self._kwargs)
        space = spec.gymnasium_observation_space
        self._frames = len(space.shape) == 3  # Atari: [k, H, W] -> [H, W, k]
        if self._frames:
            k, height, width = space.shape
            space = gym.spaces.Box(0, 255, (height, width, k), np.uint8)
        self.single_observation_space = space
        self.single_action_space = spec.gymnasium_action_space
        self.observation_space = gym.vector.utils.batch_space(space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self._pool: Any = None

    def _obs(self, obs: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.moveaxis(obs, 1, -1)) if self._frames else obs

    def _info(self, info: dict) -> dict:
        return {k: np.asarray(info[k]) for k in _INFO_KEYS if k in info}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if self._pool is None or seed is not None:
            if self._pool is not None:
                self._pool.close()
            self._pool = self._envpool.make(
                self._task, env_type="gymnasium", num_envs=self.num_envs,
                seed=int(seed or 0), **self._kwargs)
        obs, info = self._pool.reset()
        return self._obs(obs), self._info(info)

    def step(self, actions):
        if self._pool is None:
            raise RuntimeError("EnvPoolVectorEnv.step() called before reset()")
        obs, reward, terminated, truncated, info = self._pool.step(np.asarray(actions))
        terminated = np.asarray(terminated, bool)
        truncated = np.asarray(truncated, bool) & ~terminated
        obs = self._obs(obs)
        info = self._info(info)
        done = terminated | truncated
        if done.any():
            ids = np.flatnonzero(done)
            final_obs = obs.copy()
            reset_obs, _ = self._pool.reset(ids.astype(np.int32))
            obs = obs.copy()
            obs[ids] = self._obs(reset_obs)
            info["final_obs"] = final_obs
            info["_final_obs"] = done
        return obs, np.asarray(reward, np.float32), terminated, truncated, info

    def close_extras(self, **kwargs: Any) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
