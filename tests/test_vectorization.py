"""``vectorization``: gymnasium's AsyncVectorEnv and envpool step the same envs as the sync path,
with same-step auto-reset and termination kept apart from truncation."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from jrl.errors import ConfigError, EnvError
from jrl.rollout.envs import make_vector_env, register_env


def _run(env: gym.vector.VectorEnv, actions: np.ndarray):
    obs, _ = env.reset(seed=3)
    trace = [obs]
    flags = []
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        trace.append(obs)
        flags.append((terminated.copy(), truncated.copy()))
        if (terminated | truncated).any():
            done = np.flatnonzero(terminated | truncated)
            assert np.asarray(info["final_obs"][done[0]]).shape == obs.shape[1:]
    return np.stack(trace), flags


def test_async_vectorization_steps_a_registered_env_like_sync():
    register_env("vec_test_cartpole", lambda cfg: gym.make("CartPole-v1", max_episode_steps=12))
    actions = np.tile([[0, 1], [1, 0]], (15, 1))
    sync = make_vector_env("vec_test_cartpole", 2, vectorization="sync")
    asynchronous = make_vector_env("vec_test_cartpole", 2, vectorization="async")
    assert isinstance(asynchronous, gym.vector.AsyncVectorEnv)
    try:
        sync_obs, sync_flags = _run(sync, actions)
        async_obs, async_flags = _run(asynchronous, actions)
    finally:
        sync.close()
        asynchronous.close()
    np.testing.assert_allclose(async_obs, sync_obs)
    for (term, trunc), (a_term, a_trunc) in zip(sync_flags, async_flags, strict=True):
        np.testing.assert_array_equal(term, a_term)
        np.testing.assert_array_equal(trunc, a_trunc)
    assert any(trunc.any() for _, trunc in sync_flags)  # the 12-step limit was reached


def test_envpool_cartpole_truncates_at_the_horizon_and_resets_in_the_same_step():
    pytest.importorskip("envpool")
    env = make_vector_env("CartPole-v1", 3, horizon=10, vectorization="envpool")
    assert env.single_observation_space.shape == (4,)
    obs, _ = env.reset(seed=0)
    for t in range(10):  # alternating pushes keep the pole up: only the horizon ends it
        obs_next, reward, terminated, truncated, info = env.step(np.full(3, t % 2))
        assert np.all(reward == 1.0)
        if t < 9:
            assert not terminated.any() and not truncated.any()
        obs = obs_next
    assert truncated.all() and not terminated.any()
    assert info["final_obs"].shape == (3, 4)
    assert np.all(np.abs(obs) < 0.05)  # already the next episode's first observation
    assert not np.allclose(obs, info["final_obs"])
    pushes, _ = env.reset(seed=0)
    terminated_any = False
    for _ in range(40):  # pushing one way topples the pole: a termination, not a truncation
        _, _, terminated, truncated, _ = env.step(np.zeros(3, np.int64))
        terminated_any |= terminated.any()
        assert not (terminated & truncated).any()
    assert terminated_any
    env.close()


def test_envpool_refuses_what_it_cannot_run():
    pytest.importorskip("envpool")
    register_env("vec_test_own", lambda cfg: gym.make("CartPole-v1"))
    with pytest.raises(EnvError, match="registered env"):
        make_vector_env("vec_test_own", 2, vectorization="envpool")
    with pytest.raises(EnvError, match="envpool has no env"):
        make_vector_env("Taxi-v4", 2, vectorization="envpool")


def test_foreach_env_needs_envs_in_this_process():
    from jrl.algorithms.pg import PGConfig
    from jrl.config import parse
    from jrl.rollout.worker import RolloutWorker

    pytest.importorskip("envpool")
    worker = RolloutWorker("CartPole-v1", parse(PGConfig, {"vectorization": "envpool"}), "PG")
    with pytest.raises(ConfigError, match="vectorization 'envpool'"):
        worker.foreach_env(lambda env: None)
    worker.close()


def test_vectorization_is_checked_like_any_config_key():
    from jrl.algorithms.pg import PGConfig
    from jrl.config import parse

    with pytest.raises(ConfigError, match="vectorization"):
        parse(PGConfig, {"vectorization": "threads"})
