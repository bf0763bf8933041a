"""The uniform replay ring buffer and DQN's n-step postprocessing."""

import jax
import jax.numpy as jnp
import numpy as np

from jrl.algorithms.dqn import postprocess
from jrl.registry import parse_config
from jrl.replay.uniform import replay_add, replay_init, replay_sample
from jrl.types import Transition


def test_replay_ring_overwrites_oldest_and_tracks_size():
    state = replay_init({"x": jnp.zeros((), jnp.int32)}, capacity=5)
    state = replay_add(state, {"x": jnp.arange(3)})
    assert int(state.size) == 3 and int(state.position) == 3
    state = replay_add(state, {"x": jnp.arange(3, 7)})
    assert int(state.size) == 5 and int(state.position) == 2
    np.testing.assert_array_equal(state.data["x"], [5, 6, 2, 3, 4])


def test_replay_samples_only_filled_items():
    state = replay_init({"x": jnp.zeros((2,), jnp.float32)}, capacity=100)
    state = replay_add(state, {"x": jnp.ones((4, 2))})
    batch = jax.jit(replay_sample, static_argnums=2)(state, jax.random.PRNGKey(0), 256)
    assert batch["x"].shape == (256, 2)
    np.testing.assert_array_equal(batch["x"], 1.0)


def test_dqn_postprocess_builds_n_step_items_with_bootstrap_obs():
    config = parse_config("DQN", {"n_step": 2, "gamma": 0.5, "rollout_fragment_length": 4})
    T, B = 4, 1
    obs = jnp.arange(T, dtype=jnp.float32).reshape(T, B, 1)
    fragment = Transition(
        obs=obs, action=jnp.zeros((T, B), jnp.int32),
        reward=jnp.array([[1.0], [2.0], [4.0], [8.0]]),
        terminated=jnp.array([[False], [True], [False], [False]]),
        truncated=jnp.zeros((T, B), bool), next_obs=obs + 1,
        behaviour_logp=jnp.zeros((T, B)))
    items = postprocess(config, fragment)
    # t=0: 1 + 0.5*2, then terminated -> discount 0.  t=1: 2, terminated.
    # t=2: 4 + 0.5*8, discount 0.25, bootstrap from next_obs[3] = 4.  t=3: 8, discount 0.5.
    np.testing.assert_allclose(items.reward, [2.0, 2.0, 8.0, 8.0])
    np.testing.assert_allclose(items.discount, [0.0, 0.0, 0.25, 0.5])
    np.testing.assert_allclose(items.next_obs[:, 0], [2.0, 2.0, 4.0, 4.0])
