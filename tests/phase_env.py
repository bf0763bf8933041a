"""A tiny env with a curriculum phase, shared by the Ray and Tune tests (importable by workers)."""

import gymnasium as gym
import numpy as np


class PhaseEnv(gym.Env):
    """Episodes of ``episode_len`` steps paying ``reward_offset + phase`` per step; the phase is
    set through ``foreach_env(lambda env: env.set_phase(p))``."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, config):
        self.phase = 0
        self.worker_index = config.worker_index
        self.episode_len = config.get("episode_len", 10)
        self.reward_offset = config.get("reward_offset", 0.0)
        self.crash_marker = config.get("crash_marker")
        self.t = 0

    def set_phase(self, phase):
        self.phase = phase

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(3, np.float32), {}

    def step(self, action):
        self.t += 1
        reward = self.reward_offset + float(self.phase)
        return np.zeros(3, np.float32), reward, self.t >= self.episode_len, False, {}
