"""Small example envs for models: an action-masking env (gymnasium id ``jrl/ActionMask-v0``)
and a CartPole without velocities that needs memory (``jrl/StatelessCartPole-v1``).

``ActionMaskEnv`` follows the convention RLlib and SB3-contrib users know: the observation is a
Dict with an ``action_mask`` entry (1 allows an action, 0 forbids it) next to the real
``observations``, and jrl's policies never take a forbidden action.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.classic_control.cartpole import CartPoleEnv


class ActionMaskEnv(gym.Env):
    """Pick the target action among the allowed ones.

    Each step allows a random half (at least one) of ``num_actions`` actions and marks one of the
    allowed ones as the target in ``observations`` (one-hot). Reward: 1 for the target, 0 for
    another allowed action; a forbidden action is counted in ``invalid_actions`` (and
    ``info["invalid_action"]``), rewarded -1, and raises ``ValueError`` when
    ``env_config["raise_on_invalid"]`` is true (RLlib's example env does). Episodes last
    ``episode_len`` steps.

    Args:
      env_config: ``num_actions`` (default 6), ``episode_len`` (default 20),
        ``raise_on_invalid`` (default False); also taken as keyword arguments (``gym.make``).
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, env_config: dict | None = None, **kwargs: Any):
        config = {**dict(env_config or {}), **kwargs}
        self.num_actions = int(config.get("num_actions", 6))
        self.episode_len = int(config.get("episode_len", 20))
        self.raise_on_invalid = bool(config.get("raise_on_invalid", False))
        n = self.num_actions
        self.observation_space = spaces.Dict({
            "action_mask": spaces.Box(0.0, 1.0, (n,), np.float32),
            "observations": spaces.Box(0.0, 1.0, (n,), np.float32)})
        self.action_space = spaces.Discrete(n)
        self.invalid_actions = 0
        self._t = 0
        self._mask = np.ones(n, np.float32)
        self._target = 0

    def _observe(self) -> dict[str, np.ndarray]:
        n = self.num_actions
        allowed = self.np_random.permutation(n)[: max(1, n // 2)]
        self._mask = np.zeros(n, np.float32)
        self._mask[allowed] = 1.0
        self._target = int(self.np_random.choice(allowed))
        target = np.zeros(n, np.float32)
        target[self._target] = 1.0
        return {"action_mask": self._mask.copy(), "observations": target}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._t = 0
        return self._observe(), {}

    def step(self, action: Any):
        action = int(action)
        invalid = not self._mask[action]
        if invalid:
            self.invalid_actions += 1
            if self.raise_on_invalid:
                raise ValueError(f"action {action} is masked out (allowed: "
                                 f"{np.flatnonzero(self._mask).tolist()})")
        reward = -1.0 if invalid else float(action == self._target)
        self._t += 1
        return (self._observe(), reward, False, self._t >= self.episode_len,
                {"invalid_action": invalid})


class StatelessCartPole(CartPoleEnv):
    """CartPole whose observation hides the velocities: ``[cart position, pole angle]`` (RLlib's
    ``StatelessCartPole`` example). A feed-forward policy cannot tell which way the pole moves;
    a recurrent one (``model.use_lstm``) can infer it from the last observations. Registered as
    ``jrl/StatelessCartPole-v1`` with CartPole-v1's 500-step limit.

    Args:
      env_config: passed on as ``CartPoleEnv``'s keyword arguments (e.g. ``render_mode``).
    """

    def __init__(self, env_config: dict | None = None, **kwargs: Any):
        super().__init__(**{**dict(env_config or {}), **kwargs})
        high = np.array([self.x_threshold * 2, self.theta_threshold_radians * 2], np.float32)
        self.observation_space = spaces.Box(-high, high, dtype=np.float32)

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs[[0, 2]], reward, terminated, truncated, info

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = super().reset(seed=seed, options=options)
        return obs[[0, 2]], info


def register() -> None:
    """Registers the example envs' gymnasium ids (idempotent)."""
    if "jrl/ActionMask-v0" not in gym.registry:
        gym.register(id="jrl/ActionMask-v0", entry_point=ActionMaskEnv)
    if "jrl/StatelessCartPole-v1" not in gym.registry:
        gym.register(id="jrl/StatelessCartPole-v1", entry_point=StatelessCartPole,
                     max_episode_steps=500, reward_threshold=475.0)
