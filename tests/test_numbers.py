"""Numbers and envs guarded: NaN/inf from an env is an ``EnvError`` naming the env, worker and
step (or the episode is skipped with ``nan_policy: skip_episode``); a non-finite learner update
is discarded and raises ``NumericError`` naming the iteration and the metric; a sub-env that
raises is rebuilt with ``restart_failed_sub_environments``."""

from __future__ import annotations

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrl
from jrl.errors import EnvError, NumericError

# Tests use the suite's small PPO (``make_trainer``) on an env shaped like CartPole, so the
# compiled programs are shared with the other tests through the session's compilation cache.


class BadNumbersEnv(gym.Env):
    """Episodes of 10 steps; step 7 of each gives a NaN reward or an infinite observation."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, config):
        self.where = config.get("where", "reward")
        self.t = 0

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return np.zeros(4, np.float32), {}

    def step(self, action):
        self.t += 1
        obs, reward = np.full(4, 0.1, np.float32), 1.0
        if self.t == 7:
            if self.where == "reward":
                reward = float("nan")
            else:
                obs[1] = np.inf
        return obs, reward, False, self.t >= 10, {}


jrl.register_env("bad_numbers", BadNumbersEnv)


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.mark.parametrize("where, what", [("reward", "reward nan"), ("obs", "observation")])
def test_non_finite_env_output_names_env_worker_and_step(where, what, make_trainer):
    trainer = make_trainer("PPO", "bad_numbers", env_config={"where": where})
    with pytest.raises(EnvError) as info:
        trainer.train()
    message = str(info.value)
    assert "env 'bad_numbers'" in message and what in message
    assert "worker 0" in message and "step 7 of episode" in message


def test_skip_episode_drops_bad_episodes_and_trains_on_finite_numbers(make_trainer):
    trainer = make_trainer("PPO", "bad_numbers", nan_policy="skip_episode",
                           env_config={"where": "reward"})
    result = trainer.train()
    assert result["timesteps_this_iter"] == 64
    assert result["episodes_this_iter"] == 0  # every episode hit step 7 and was skipped
    assert all(np.isfinite(x).all() for x in _leaves(trainer.state.params))
    assert trainer.workers.local_worker().num_skipped_episodes == 64 // 7


def test_non_finite_update_is_discarded_and_names_the_iteration(make_trainer):
    trainer = make_trainer("PPO")
    trainer.train()
    leaves, tree = jax.tree.flatten(trainer.state.params)
    poisoned = [leaf.at[0].set(jnp.inf) if leaf.ndim == 2 else leaf for leaf in leaves]
    trainer.backend.state = trainer.state._replace(params=jax.tree.unflatten(tree, poisoned))
    before = _leaves(trainer.state)
    with pytest.raises(NumericError, match=r"iteration 2: the learner's '\w+' is nan"):
        trainer.train()
    after = _leaves(trainer.state)
    assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(before, after, strict=True))
    assert trainer.iteration == 1


class CrashingEnv(gym.Env):
    """Raises on every 15th step of its life (a flaky simulator)."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, config):
        self.t = self.life = 0

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return np.zeros(4, np.float32), {}

    def step(self, action):
        self.t += 1
        self.life += 1
        if self.life == 15:
            raise RuntimeError("simulator crashed")
        return np.zeros(4, np.float32), 1.0, False, self.t >= 10, {}


jrl.register_env("crashing", CrashingEnv)


def test_failed_sub_environment_is_rebuilt_without_workers(make_trainer):
    with pytest.raises(RuntimeError, match="simulator crashed"):
        make_trainer("PPO", "crashing").train()
    trainer = make_trainer("PPO", "crashing", restart_failed_sub_environments=True)
    result = trainer.train()
    assert result["timesteps_this_iter"] == 64  # a full batch despite 4 crashes
    assert trainer.workers.local_worker().num_env_restarts == 64 // 14
    assert result["episodes_this_iter"] == 4 and result["episode_len_mean"] == 10.0
