"""Proportional prioritized replay: sum tree, sampling frequencies, importance weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrl.replay.prioritized import (
    beta_at,
    prioritized_add,
    prioritized_init,
    prioritized_sample,
    prioritized_update,
    td_priorities,
    tree_find,
    tree_set,
)

sample = jax.jit(prioritized_sample, static_argnums=2)


def _leaves(state):
    n = state.tree.shape[0] // 2
    return np.asarray(state.tree[n:])


def _assert_tree_consistent(tree):
    tree = np.asarray(tree, np.float64)
    n = tree.shape[0] // 2
    for node in range(1, n):
        assert tree[node] == pytest.approx(tree[2 * node] + tree[2 * node + 1], rel=1e-5)


def _buffer(priorities, alpha=1.0, capacity=None):
    n = len(priorities)
    state = prioritized_init({"x": jnp.zeros((), jnp.int32)}, capacity or n)
    return prioritized_add(state, {"x": jnp.arange(n)}, jnp.asarray(priorities, jnp.float32),
                           alpha)


def _frequencies(state, draws=200, batch=256, seed=0):
    keys = jax.random.split(jax.random.PRNGKey(seed), draws)
    index = jax.vmap(lambda k: sample(state, k, batch, 0.0)[1])(keys)
    counts = np.bincount(np.asarray(index).ravel(), minlength=int(state.size))
    return counts, draws * batch


def _chi_square(counts, probs, total):
    expected = probs * total
    return float(np.sum((counts - expected) ** 2 / expected))


def test_tree_set_and_find_walk_prefix_sums():
    tree = tree_set(jnp.zeros(16), jnp.arange(5), jnp.array([1.0, 2.0, 3.0, 4.0, 0.0]))
    assert float(tree[1]) == 10.0
    _assert_tree_consistent(tree)
    # prefix sums 1, 3, 6, 10: mass 0.5 -> 0, 1 -> 1, 2.9 -> 1, 3 -> 2, 9.99 -> 3
    np.testing.assert_array_equal(tree_find(tree, jnp.array([0.5, 1.0, 2.9, 3.0, 9.99])),
                                  [0, 1, 1, 2, 3])


def test_sampling_frequencies_match_priorities():
    priorities = np.array([1.0, 2.0, 3.0, 4.0, 10.0, 0.5, 5.0])  # non-power-of-two size
    state = _buffer(priorities, alpha=1.0, capacity=9)
    counts, total = _frequencies(state)
    probs = priorities / priorities.sum()
    # 6 degrees of freedom: chi2 above 22.5 has probability 0.001 under the right distribution.
    assert _chi_square(counts, probs, total) < 22.5
    assert counts.sum() == total


def test_alpha_flattens_priorities():
    priorities = np.array([1.0, 4.0, 9.0, 16.0])
    state = _buffer(priorities, alpha=0.5)
    np.testing.assert_allclose(_leaves(state)[:4], [1.0, 2.0, 3.0, 4.0], rtol=1e-6)
    counts, total = _frequencies(state)
    assert _chi_square(counts, np.array([1, 2, 3, 4]) / 10, total) < 16.3  # 3 dof, p=0.001


def test_importance_weights_equal_hand_computed_values():
    state = _buffer([1.0, 2.0, 4.0, 1.0], alpha=1.0)  # P = 1/8, 2/8, 4/8, 1/8
    items, index, weight = sample(state, jax.random.PRNGKey(3), 64, 0.5)
    np.testing.assert_array_equal(items["x"], index)
    # w_i = (N P(i))^-beta / max_j (N P(j))^-beta = (p_i / p_min)^-beta
    expected = {0: 1.0, 1: 2.0 ** -0.5, 2: 4.0 ** -0.5, 3: 1.0}
    np.testing.assert_allclose(weight, [expected[int(i)] for i in index], rtol=1e-6)
    assert set(np.asarray(index).tolist()) == {0, 1, 2, 3}
    # beta = 0: all weights 1.
    _, _, flat = sample(state, jax.random.PRNGKey(3), 64, 0.0)
    np.testing.assert_allclose(flat, 1.0)


def test_priority_updates_change_frequencies():
    state = _buffer([1.0, 1.0, 1.0, 1.0])
    state = jax.jit(prioritized_update)(state, jnp.array([2]), td_priorities(jnp.array([-7.0]),
                                                                             1.0), 1.0)
    np.testing.assert_allclose(_leaves(state)[:4], [1.0, 1.0, 8.0, 1.0])
    counts, total = _frequencies(state)
    assert _chi_square(counts, np.array([1, 1, 8, 1]) / 11, total) < 16.3
    assert counts[2] > 5 * counts[0]


def test_new_items_get_the_max_priority_seen():
    state = prioritized_init({"x": jnp.zeros((), jnp.int32)}, 8)
    state = prioritized_add(state, {"x": jnp.arange(2)})
    np.testing.assert_allclose(_leaves(state)[:2], [1.0, 1.0])  # empty buffer: priority 1
    state = prioritized_update(state, jnp.array([0, 1]), jnp.array([9.0, 0.25]), alpha=0.5)
    assert float(state.max_priority) == 3.0
    state = prioritized_add(state, {"x": jnp.arange(2, 5)})
    np.testing.assert_allclose(_leaves(state)[:5], [3.0, 0.5, 3.0, 3.0, 3.0])
    assert float(state.tree[1]) == pytest.approx(12.5)


def test_ring_overwrite_keeps_the_tree_consistent():
    add = jax.jit(prioritized_add)
    state = prioritized_init({"x": jnp.zeros((), jnp.int32)}, 5)
    rng = np.random.default_rng(0)
    for step in range(7):
        n = int(rng.integers(1, 4))
        state = add(state, {"x": jnp.arange(n) + 10 * step},
                    jnp.asarray(rng.uniform(0.1, 3.0, n), jnp.float32))
        _assert_tree_consistent(state.tree)
        leaves = _leaves(state)
        assert float(state.tree[1]) == pytest.approx(leaves.sum(), rel=1e-5)
        assert np.all(leaves[5:] == 0.0)  # padding leaves past the capacity hold no mass
        assert np.all(leaves[: int(state.size)] > 0.0)
    assert int(state.size) == 5
    # Overwriting items replaces (does not add to) their priority.
    state = prioritized_update(state, jnp.arange(5), jnp.ones(5), 1.0)
    assert float(state.tree[1]) == pytest.approx(5.0)


def test_sampling_never_returns_unfilled_items():
    state = prioritized_init({"x": jnp.zeros((), jnp.int32)}, 64)
    state = prioritized_add(state, {"x": jnp.arange(3)})
    _, index, weight = sample(state, jax.random.PRNGKey(0), 512, 0.4)
    assert int(index.max()) <= 2
    np.testing.assert_allclose(weight, 1.0)


def test_beta_anneals_linearly_to_its_final_value():
    np.testing.assert_allclose([beta_at(0.4, 1.0, 100, t) for t in (0, 50, 100, 1000)],
                               [0.4, 0.7, 1.0, 1.0], rtol=1e-6)


@pytest.mark.parametrize("algo", ["SAC", "TD3"])
def test_continuous_algorithms_learn_from_prioritized_replay(algo, make_trainer):
    trainer = make_trainer(algo, "Pendulum-v1", prioritized_replay=True)
    assert trainer.backend.plan.prioritized
    before = np.asarray(trainer.backend.plan.replay.tree).copy()
    for _ in range(2):
        learner = trainer.train()["info"]["learner"]["default_policy"]
    assert learner and all(np.isfinite(v) for v in learner.values())
    assert "td_error" not in learner
    tree = np.asarray(trainer.backend.plan.replay.tree)
    assert tree[1] > 0.0 and not np.array_equal(tree, before)
    # Learned priorities differ from the max priority new items get.
    size = int(trainer.backend.plan.replay.size)
    capacity = tree.shape[0] // 2
    leaves = tree[capacity:capacity + size]
    assert len(np.unique(np.round(leaves, 6))) > 1
