"""``jrl.ops.bootstrap.next_values`` against evaluating the value function on every next obs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrl.ops.bootstrap import next_values


def _fragment(T: int, B: int, time_limit: int, seed: int, p_terminate: float = 0.1):
    """A same-step-autoreset fragment: ``next_obs[t] == obs[t + 1]`` unless step t ended an
    episode; episodes truncate exactly at ``time_limit`` steps and terminate at random."""
    rng = np.random.default_rng(seed)
    obs = np.zeros((T, B, 3), np.float32)
    next_obs = np.zeros((T, B, 3), np.float32)
    terminated = np.zeros((T, B), bool)
    truncated = np.zeros((T, B), bool)
    for b in range(B):
        current, age = rng.normal(size=3), int(rng.integers(0, time_limit))
        for t in range(T):
            obs[t, b] = current
            after = rng.normal(size=3)
            next_obs[t, b] = after
            age += 1
            if rng.random() < p_terminate:
                terminated[t, b] = True
            elif age >= time_limit:
                truncated[t, b] = True
            if terminated[t, b] or truncated[t, b]:
                current, age = rng.normal(size=3), 0  # reset observation differs from after
            else:
                current = after
    return jnp.asarray(obs), jnp.asarray(next_obs), jnp.asarray(terminated), jnp.asarray(truncated)


def _value_fn(x):
    return jnp.tanh(x @ jnp.array([0.5, -1.0, 2.0])) + x[..., 0] ** 2


@pytest.mark.parametrize("T,B,time_limit", [(16, 4, 50), (16, 4, 5), (10, 3, 1), (1, 2, 3),
                                            (32, 2, 7)])
def test_next_values_equal_a_full_pass_wherever_the_episode_did_not_terminate(T, B, time_limit):
    for seed in range(3):
        obs, next_obs, terminated, truncated = _fragment(T, B, time_limit, seed)
        values = _value_fn(obs)
        expected = np.asarray(_value_fn(next_obs))
        got = np.asarray(jax.jit(next_values, static_argnums=(3, 4))(
            values, next_obs, truncated, _value_fn, time_limit))
        keep = ~np.asarray(terminated)
        np.testing.assert_allclose(got[keep], expected[keep], rtol=1e-6, atol=1e-6)
        assert np.asarray(truncated).any() or time_limit > T


def test_next_values_without_a_time_limit_evaluate_every_next_obs():
    obs, next_obs, _, truncated = _fragment(8, 2, 3, seed=0)
    got = next_values(_value_fn(obs), next_obs, truncated, _value_fn, None)
    np.testing.assert_allclose(got, _value_fn(next_obs), rtol=1e-6)


def test_gymnax_cartpole_declares_its_time_limit():
    pytest.importorskip("gymnax")
    from jrl.rollout.jax_envs import make_jax_env

    assert make_jax_env("gymnax:CartPole-v1").spec.max_episode_steps == 500
