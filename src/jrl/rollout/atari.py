"""Atari through ale-py: the classic gym ids and the DeepMind preprocessing (RLlib's default).

``ale-py`` (``pip install 'jrl[atari]'``; its wheel ships the ROMs) registers ``<Game>-v4``,
``<Game>NoFrameskip-v4`` and ``ALE/<Game>-v5``. The ``<Game>Deterministic-v4`` ids older RLlib and
gym examples use (frame skip 4 -- 3 for SpaceInvaders --, no sticky actions) are registered here
onto the same ALE env.

With ``preprocessor_pref: deepmind`` (the default, as in RLlib) every ALE env is wrapped the way
the DQN/A3C papers and RLlib's ``wrap_deepmind`` do, inner to outer:

1. ``gymnasium.wrappers.AtariPreprocessing``: up to 30 no-op actions on reset, the env's frame
   skip done here with a max-pool over the last two frames (the ALE env itself then skips none),
   84x84 grayscale frames;
2. ``EpisodicLifeEnv``: losing a life ends the learner's episode (terminated), the game goes on;
3. ``FireResetEnv``: press FIRE after a reset in games that wait for it;
4. ``gymnasium.wrappers.FrameStackObservation`` of 4 frames, laid out channel-last:
   observations are ``Box(0, 255, (84, 84, 4), uint8)`` and stay uint8 until the network.

Rewards are clipped to their sign for training only (``clip_rewards: None`` means "clip on
Atari"); episode returns report the game's score.
"""

from __future__ import annotations

import re
from typing import Any

import gymnasium as gym
import numpy as np

from jrl.errors import EnvError

DEEPMIND = "deepmind"
NOOP_MAX = 30
FRAME_STACK = 4
_DETERMINISTIC = re.compile(r"^(?P<game>[A-Za-z0-9]+)Deterministic-v4$")
_registered = False


def _game_ids() -> list[str]:
    """Games ale-py registered, by their CamelCase name (``Pong``, ``SpaceInvaders``)."""
    suffix = "NoFrameskip-v4"
    return [env_id[:-len(suffix)] for env_id in gym.registry if env_id.endswith(suffix)
            and "/" not in env_id and str(gym.registry[env_id].entry_point).startswith("ale_py")]


def register_atari_envs() -> bool:
    """Registers ale-py's envs and ``<Game>Deterministic-v4`` for every game; False without
    ale-py. Idempotent."""
    global _registered
    if _registered:
        return True
    try:
        import ale_py
    except ImportError:
        return False
    gym.register_envs(ale_py)
    for game in _game_ids():
        env_id = f"{game}Deterministic-v4"
        if env_id in gym.registry:
            continue
        base = gym.registry[f"{game}NoFrameskip-v4"]
        gym.register(env_id, entry_point=base.entry_point, kwargs={
            **base.kwargs, "frameskip": 3 if game == "SpaceInvaders" else 4,
            "repeat_action_probability": 0.0})
    _registered = True
    return True


def needs_ale(env_id: str) -> bool:
    """Whether ``env_id`` names an ale-py env (by its form; ale-py need not be installed)."""
    return env_id.startswith("ALE/") or bool(_DETERMINISTIC.match(env_id)) or \
        env_id.endswith("NoFrameskip-v4")


def ensure_registered(env_id: str) -> None:
    """Registers the Atari ids when ``env_id`` looks like one; an ``EnvError`` without ale-py."""
    if needs_ale(env_id) and not register_atari_envs():
        raise EnvError(f"env '{env_id}' needs ale-py: pip install 'jrl[atari]'")
    if not needs_ale(env_id) and env_id not in gym.registry:
        register_atari_envs()  # e.g. 'Pong-v4': known once ale-py registered its ids


def is_atari(env_id: str) -> bool:
    """Whether ``env_id`` is a gymnasium id made by ale-py's ``AtariEnv``."""
    spec = gym.registry.get(env_id)
    return spec is not None and str(spec.entry_point).startswith("ale_py")


def default_clip_rewards(env_id: str, clip_rewards: Any) -> Any:
    """RLlib's ``clip_rewards: None``: clip to the sign on Atari, leave other envs alone."""
    if clip_rewards is None and is_atari(env_id):
        return True
    return clip_rewards


def deepmind_make_kwargs(env_id: str, env_config: dict) -> tuple[dict, int]:
    """``gymnasium.make`` overrides for a wrapped ALE env and the frame skip the wrapper does.

    The env's own fixed skip (4 for ``Deterministic``/``v5``; 1 for ``NoFrameskip``, where
    DeepMind's skip of 4 applies) moves into ``AtariPreprocessing``, which max-pools the last
    two frames. A random skip (``Pong-v4``'s (2, 5)) stays in the env.
    """
    skip = env_config.get("frameskip", gym.registry[env_id].kwargs.get("frameskip", 1))
    if not isinstance(skip, (int, np.integer)):
        return {}, 1
    return {"frameskip": 1}, FRAME_STACK if int(skip) == 1 else int(skip)


class EpisodicLifeEnv(gym.Wrapper):
    """Losing a life ends the episode for the learner (``terminated``); ``reset`` after such an
    end only takes a no-op step, so the game goes on until it is really over."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.lives = 0
        self.game_over = True

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = bool(terminated or truncated)
        lives = self.env.unwrapped.ale.lives()
        if 0 < lives < self.lives:
            terminated = True
        self.lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, **kwargs):
        if self.game_over:
            obs, info = self.env.reset(**kwargs)
        else:
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        self.game_over = False
        self.lives = self.env.unwrapped.ale.lives()
        return obs, info


class FireResetEnv(gym.Wrapper):
    """Presses FIRE (then UP) after every reset, for games that wait for it to start."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        meanings = env.unwrapped.get_action_meanings()
        self.active = len(meanings) >= 3 and meanings[1] == "FIRE"

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        if not self.active:
            return obs, info
        for action in (1, 2):
            obs, _, terminated, truncated, info = self.env.step(action)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        return obs, info


class ChannelsLast(gym.ObservationWrapper):
    """``[k, H, W]`` stacked frames (``FrameStackObservation``) -> ``[H, W, k]``."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        k, height, width = env.observation_space.shape
        self.observation_space = gym.spaces.Box(0, 255, (height, width, k), np.uint8)

    def observation(self, observation):
        return np.ascontiguousarray(np.moveaxis(np.asarray(observation), 0, -1))


def wrap_deepmind(env: gym.Env, *, frame_skip: int = 4, dim: int = 84,
                  framestack: bool = True, noop_max: int = NOOP_MAX,
                  fire_reset: bool = True) -> gym.Env:
    """The DeepMind Atari wrappers around an ALE env made with ``frameskip=1`` (see the module
    docstring for the order). Observations: ``(dim, dim, 4)`` uint8, or ``(dim, dim, 1)``
    without ``framestack``."""
    try:
        env = gym.wrappers.AtariPreprocessing(
            env, noop_max=noop_max, frame_skip=frame_skip, screen_size=dim,
            terminal_on_life_loss=False, grayscale_obs=True, grayscale_newaxis=not framestack,
            scale_obs=False)
    except (ValueError, AssertionError) as e:
        raise EnvError(f"cannot apply the DeepMind Atari wrappers: {e}") from e
    env = EpisodicLifeEnv(env)
    if fire_reset:
        env = FireResetEnv(env)
    if framestack:
        env = ChannelsLast(gym.wrappers.FrameStackObservation(env, FRAME_STACK))
    return env
