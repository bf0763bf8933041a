"""ES: rank shaping, the gradient estimate, the shared noise table, and the evolution plan."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jrl
from jrl.algorithms import es
from jrl.ops.filters import init_filter_state
from jrl.types import EnvSpec


def _rllib_centered_ranks(x: np.ndarray) -> np.ndarray:
    """RLlib's / es-distributed's numpy version (ties broken by position)."""
    ranks = np.empty(x.size, dtype=int)
    ranks[x.ravel().argsort()] = np.arange(x.size)
    return (ranks.reshape(x.shape).astype(np.float32) / (x.size - 1) - 0.5)


# -- rank shaping --------------------------------------------------------------------------------


@pytest.mark.parametrize("x, expected", [
    ([1.0, 2.0, 3.0], [-0.5, 0.0, 0.5]),
    ([3.0, -7.0, 2.0, 10.0, 0.0], [0.25, -0.5, 0.0, 0.5, -0.25]),
    ([1.0, 1.0, 3.0], [-0.25, -0.25, 0.5]),          # ties share their average rank
    ([5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 0.0, 0.0]),
    ([[1.0, 4.0], [3.0, 2.0]], [[-0.5, 0.5], [1 / 6, -1 / 6]]),  # ranked over all entries
    ([42.0], [0.0]),
])
def test_centered_ranks_by_hand(x, expected):
    np.testing.assert_allclose(jax.jit(es.compute_centered_ranks)(jnp.asarray(x)), expected,
                               atol=1e-6)


def test_centered_ranks_match_rllib_without_ties_and_span_half_open_range():
    x = np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32)
    ranks = np.asarray(jax.jit(es.compute_centered_ranks)(x))
    np.testing.assert_allclose(ranks, _rllib_centered_ranks(x), atol=1e-6)
    assert ranks.min() == -0.5 and ranks.max() == 0.5
    # Shaping is monotonic and ignores the scale of the returns.
    np.testing.assert_array_equal(np.argsort(ranks.ravel()), np.argsort(x.ravel()))
    np.testing.assert_allclose(jax.jit(es.compute_centered_ranks)(1000.0 * x + 3.0), ranks,
                               atol=1e-6)


def test_centered_ranks_leave_masked_entries_out():
    x = jnp.asarray([[1.0, 2.0], [1e6, -1e6], [3.0, 0.0]])
    mask = jnp.asarray([True, False, True])[:, None]
    expected = [[-1 / 6, 1 / 6], [0.0, 0.0], [0.5, -0.5]]
    np.testing.assert_allclose(jax.jit(es.compute_centered_ranks)(x, mask), expected, atol=1e-6)


# -- noise table and gradient --------------------------------------------------------------------


def test_noise_row_depends_only_on_its_index_and_is_standard_normal():
    dim = 7
    rows = es.noise_rows(jnp.asarray([3, 5, 11]), dim)  # eager
    np.testing.assert_array_equal(es.noise_rows(jnp.asarray([5]), dim)[0], rows[1])
    np.testing.assert_array_equal(jax.jit(es.noise_rows, static_argnums=1)(
        jnp.asarray([11, 3], jnp.int32), dim), np.asarray(rows)[[2, 0]])
    assert not np.allclose(rows[0], rows[1])
    big = np.asarray(jax.jit(es.noise_rows, static_argnums=1)(jnp.arange(200), 500))
    assert abs(big.mean()) < 0.02 and abs(big.std() - 1.0) < 0.02


def test_weighted_noise_sum_in_chunks_equals_the_full_product():
    indices = jnp.asarray([4, 9, 1, 7, 123, 5, 6])
    weights = jnp.asarray([0.5, -1.0, 2.0, 0.0, 0.25, -0.75, 1.5])
    full = np.asarray(weights) @ np.asarray(es.noise_rows(indices, 13))
    for chunk in (3, 64):  # 7 rows: padded to 3 chunks of 3, or one chunk of all 7
        total = jax.jit(es.weighted_noise_sum, static_argnums=(2, 3))(weights, indices, 13, chunk)
        np.testing.assert_allclose(total, full, rtol=1e-5, atol=1e-5)


def test_es_gradient_is_rank_difference_weighted_noise_over_twice_the_pairs():
    shaped = jnp.asarray([[0.5, -0.5], [0.1, 0.3], [9.0, -9.0]])
    indices = jnp.asarray([2, 8, 5])
    mask = jnp.asarray([1.0, 1.0, 0.0])  # the third pair is padding
    eps = es.noise_rows(indices, 4)
    expected = (1.0 * eps[0] + (-0.2) * eps[1]) / (2 * 2)
    gradient = jax.jit(es.es_gradient, static_argnums=3)(shaped, indices, mask, 4)
    np.testing.assert_allclose(gradient, expected, rtol=1e-5, atol=1e-6)


def test_es_update_climbs_a_quadratic_to_its_maximum():
    """ES on f(theta) = -|theta - theta*|^2 with the real ``update`` moves theta to theta*."""
    config = es.ESConfig(noise_stdev=0.1, stepsize=0.1, l2_coeff=0.0, noise_size=10_000,
                         observation_filter="NoFilter")
    algorithm = es.make_es(config, spec=EnvSpec(obs_shape=(1,), num_actions=2))
    params = {"theta": jnp.zeros(5)}  # ``update`` works on any params pytree
    state = es.ESState(params=params, opt_state=optax.adam(config.stepsize).init(params),
                       key=jax.random.PRNGKey(0), obs_filter=init_filter_state((1,)),
                       num_updates=jnp.zeros((), jnp.int32), env_steps=jnp.zeros((), jnp.int32))
    target = jnp.asarray([1.0, -2.0, 0.5, 3.0, -1.0])

    def fitness(theta):
        return -jnp.sum(jnp.square(theta - target), axis=-1)

    def iteration(state, _):
        key, sub = jax.random.split(state.key)
        indices = jax.random.randint(sub, (32,), 0, config.noise_size)
        theta = state.params["theta"]
        eps = es.noise_rows(indices, theta.size)
        returns = jnp.stack([fitness(theta + config.noise_stdev * eps),
                             fitness(theta - config.noise_stdev * eps)], axis=1)
        batch = es.ESBatch(noise_indices=indices, returns=returns,
                           lengths=jnp.ones((32, 2), jnp.int32), mask=jnp.ones(32, bool),
                           obs_filter=init_filter_state((1,)))
        state, metrics = algorithm.update(state._replace(key=key), batch)
        return state, jnp.linalg.norm(state.params["theta"] - target)

    start = float(jnp.linalg.norm(target))
    state, distances = jax.jit(lambda s: jax.lax.scan(iteration, s, None, length=300))(state)
    assert float(distances[-1]) < 0.1 * start, distances[::50]
    assert int(state.num_updates) == 300


# -- trainer and plan ----------------------------------------------------------------------------


def test_policy_model_exposes_greedy_actions_and_no_value_function(make_trainer):
    trainer = make_trainer("ES")
    model = trainer.get_policy().model
    obs = [np.zeros(4, np.float32), np.ones(4, np.float32)]
    actions = model.actions(obs)
    assert actions.shape == (2,) and actions.dtype == np.int32
    np.testing.assert_array_equal(actions, [trainer.compute_action(o) for o in obs])
    with pytest.raises(jrl.ConfigError, match="no value function"):
        model.value_function(obs)


def test_iteration_counts_perturbed_episodes_and_env_steps(make_trainer):
    trainer = make_trainer("ES", episodes_per_batch=6, eval_prob=0.0)
    result = trainer.train()
    pairs = result["info"]["learner"]["default_policy"]["num_pairs"]
    assert pairs == 3
    assert result["episodes_this_iter"] == 6
    assert result["timesteps_this_iter"] == sum(result["hist_stats"]["episode_lengths"])
    assert int(trainer.state.env_steps) == result["timesteps_total"]
    assert int(trainer.state.obs_filter.count) == result["timesteps_total"]


def test_rounds_repeat_until_train_batch_size_and_pad_to_a_power_of_two(make_trainer):
    trainer = make_trainer("ES", episodes_per_batch=2, train_batch_size=100, eval_prob=0.0)
    batch, perturbed, _, env_steps = trainer.backend.plan.sample(trainer.state)
    rounds = trainer.backend.plan.stats()["sampling_rounds"]
    assert rounds > 1 and env_steps >= 100
    assert sum(e["episode_len"] for e in perturbed[:-2]) < 100  # no round more than needed
    assert int(batch.mask.sum()) == rounds == len(perturbed) // 2
    assert len(batch.mask) == 2 ** math.ceil(math.log2(rounds))
    np.testing.assert_array_equal(batch.returns[batch.mask].ravel(),
                                  [e["episode_reward"] for e in perturbed])


def test_unperturbed_episodes_are_reported_separately(make_trainer):
    trainer = make_trainer("ES", episodes_per_batch=8, eval_prob=1.0)
    result = trainer.train()
    assert result["episodes_this_iter"] == 8
    assert result["unperturbed_episodes_this_iter"] == 4
    assert result["unperturbed_reward_mean"] > 0
    assert result["timesteps_this_iter"] > sum(result["hist_stats"]["episode_lengths"])


def test_sampling_is_reproducible_from_the_train_state(make_trainer):
    a, b = make_trainer("ES"), make_trainer("ES")
    batch_a = a.backend.plan.sample(a.state)[0]
    batch_b = b.backend.plan.sample(b.state)[0]
    for x, y in zip(jax.tree.leaves(batch_a), jax.tree.leaves(batch_b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_remote_workers_evaluate_pairs_with_the_drivers_noise_and_survive_a_crash(ray_cluster):
    trainer = jrl.Trainer("ES", env="CartPole-v1", log_to_disk=False, config={
        "num_workers": 2, "episodes_per_batch": 8, "train_batch_size": 0, "eval_prob": 0.0,
        "model": {"fcnet_hiddens": [8]}, "seed": 0})
    try:
        import ray

        indices = np.asarray([0, 17, 123_456])
        rows = ray.get([w.apply.remote(lambda w, i: np.asarray(es.noise_rows(jnp.asarray(i), 9)),
                                       indices) for w in trainer.workers.remote_workers()])
        for worker_rows in rows:
            np.testing.assert_array_equal(worker_rows, es.noise_rows(jnp.asarray(indices), 9))
        before = jax.device_get(trainer.state.params)
        result = trainer.train()
        assert result["episodes_this_iter"] == 8  # 2 pairs on each of the 2 workers
        assert result["info"]["learner"]["default_policy"]["num_pairs"] == 4
        assert result["timesteps_this_iter"] == sum(result["hist_stats"]["episode_lengths"])
        changed = jax.tree.map(lambda x, y: not np.array_equal(x, y), before,
                               jax.device_get(trainer.state.params))
        assert any(jax.tree.leaves(changed))
        ray.kill(trainer.workers.remote_workers()[1])
        result = trainer.train()  # the dead worker is replaced and its pairs re-run
        assert result["episodes_this_iter"] == 8
        assert result["num_worker_restarts"] == 1
    finally:
        trainer.stop()
