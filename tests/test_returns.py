"""Return and advantage kernels against hand-computed values, plain Python loops and rlax."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rlax

from jrl.ops.returns import discounted_returns, gae, n_step_returns


@pytest.fixture(params=["jit", "nojit"])
def variant(request):
    """Runs a kernel under ``jax.jit`` or eagerly."""
    return jax.jit if request.param == "jit" else (lambda fn: fn)


def col(x, dtype=jnp.float32):
    """A single stream as a ``[T, 1]`` array."""
    return jnp.asarray(x, dtype=dtype)[:, None]


# ---------------------------------------------------------------- discounted_returns


def test_discounted_returns_by_hand(variant):
    r_t = col([1.0, 2.0, 3.0])
    discount_t = col([0.5, 0.0, 0.5])
    bootstrap_value = jnp.array([10.0])
    # G_2 = 3 + 0.5 * 10 = 8
    # G_1 = 2 + 0.0 * 8  = 2   (episode ends at t=1)
    # G_0 = 1 + 0.5 * 2  = 2
    returns = variant(discounted_returns)(r_t, discount_t, bootstrap_value)
    np.testing.assert_allclose(returns, col([2.0, 2.0, 8.0]))


def test_discounted_returns_accepts_single_stream(variant):
    returns = variant(discounted_returns)(
        jnp.array([1.0, 2.0, 3.0]), jnp.array([0.5, 0.0, 0.5]), jnp.array(10.0)
    )
    np.testing.assert_allclose(returns, [2.0, 2.0, 8.0])


# ---------------------------------------------------------------- gae

# Shared hand case: gamma = 0.5, lambda = 0.5, so gamma * lambda = 0.25.
GAMMA, LAMBDA = 0.5, 0.5
R = [1.0, 0.0, 2.0]
V_T = [2.0, 4.0, 2.0]


def _gae_by_hand_case(v_tp1, terminated, truncated, variant):
    return variant(gae)(
        col(R), col(V_T), col(v_tp1), col(terminated, bool), col(truncated, bool), GAMMA, LAMBDA
    )


def test_gae_without_episode_end_by_hand(variant):
    # delta_0 = 1 + 0.5 * 4 - 2 =  1
    # delta_1 = 0 + 0.5 * 2 - 4 = -3
    # delta_2 = 2 + 0.5 * 4 - 2 =  2
    # A_2 = 2;  A_1 = -3 + 0.25 * 2 = -2.5;  A_0 = 1 + 0.25 * -2.5 = 0.375
    adv, targets = _gae_by_hand_case([4.0, 2.0, 4.0], [0, 0, 0], [0, 0, 0], variant)
    np.testing.assert_allclose(adv, col([0.375, -2.5, 2.0]))
    np.testing.assert_allclose(targets, col([2.375, 1.5, 4.0]))


def test_gae_does_not_bootstrap_or_propagate_through_termination(variant):
    # Terminated at t=1: v_tp1[1] = 100 (value of the final obs) must be ignored.
    # delta_1 = 0 + 0 - 4 = -4;  A_2 = 2;  A_1 = -4 (no trace from A_2)
    # A_0 = 1 + 0.25 * -4 = 0
    adv, targets = _gae_by_hand_case([4.0, 100.0, 4.0], [0, 1, 0], [0, 0, 0], variant)
    np.testing.assert_allclose(adv, col([0.0, -4.0, 2.0]))
    np.testing.assert_allclose(targets, col([2.0, 0.0, 4.0]))


def test_gae_bootstraps_on_truncation_but_not_across_the_boundary(variant):
    # Truncated at t=1: bootstrap from the final obs value v_tp1[1] = 6.
    # delta_1 = 0 + 0.5 * 6 - 4 = -1;  A_2 = 2;  A_1 = -1 (no trace from A_2)
    # A_0 = 1 + 0.25 * -1 = 0.75
    adv, targets = _gae_by_hand_case([4.0, 6.0, 4.0], [0, 0, 0], [0, 1, 0], variant)
    np.testing.assert_allclose(adv, col([0.75, -1.0, 2.0]))
    np.testing.assert_allclose(targets, col([2.75, 3.0, 4.0]))


def test_gae_accepts_float_flags_and_single_stream(variant):
    adv, targets = variant(gae)(
        jnp.array(R),
        jnp.array(V_T),
        jnp.array([4.0, 6.0, 4.0]),
        jnp.array([0.0, 0.0, 0.0]),
        jnp.array([0.0, 1.0, 0.0]),
        GAMMA,
        LAMBDA,
    )
    np.testing.assert_allclose(adv, [0.75, -1.0, 2.0])
    np.testing.assert_allclose(targets, [2.75, 3.0, 4.0])


def _random_fragment(seed, t=13, b=4):
    rng = np.random.default_rng(seed)
    r = rng.normal(size=(t, b)).astype(np.float32)
    v_t = rng.normal(size=(t, b)).astype(np.float32)
    v_tp1 = rng.normal(size=(t, b)).astype(np.float32)
    terminated = rng.random((t, b)) < 0.15
    truncated = (rng.random((t, b)) < 0.15) & ~terminated
    return r, v_t, v_tp1, terminated, truncated


def _gae_loop(r, v_t, v_tp1, terminated, truncated, gamma, lambda_):
    t_len, b = r.shape
    adv = np.zeros((t_len, b), np.float64)
    for j in range(b):
        a_next = 0.0
        for t in reversed(range(t_len)):
            delta = r[t, j] + gamma * (not terminated[t, j]) * v_tp1[t, j] - v_t[t, j]
            done = terminated[t, j] or truncated[t, j]
            a_next = delta + gamma * lambda_ * (not done) * a_next
            adv[t, j] = a_next
    return adv


@pytest.mark.parametrize("seed", [0, 1])
def test_gae_matches_python_loop_on_random_data(variant, seed):
    r, v_t, v_tp1, terminated, truncated = _random_fragment(seed)
    adv, targets = variant(gae)(r, v_t, v_tp1, terminated, truncated, 0.97, 0.9)
    expected = _gae_loop(r, v_t, v_tp1, terminated, truncated, 0.97, 0.9)
    np.testing.assert_allclose(adv, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(targets, expected + v_t, rtol=1e-5, atol=1e-5)


def test_gae_matches_rlax_without_truncation(variant):
    gamma, lambda_ = 0.97, 0.9
    r, v_t, _, terminated, _ = _random_fragment(2)
    rng = np.random.default_rng(3)
    v_last = rng.normal(size=(1, r.shape[1])).astype(np.float32)
    # Without truncation, v_tp1 is the next step's value except at terminations, where rlax
    # multiplies it by a zero discount; put noise there to check it is really ignored.
    v_tp1 = np.concatenate([v_t[1:], v_last], axis=0)
    v_tp1 = np.where(terminated, rng.normal(size=v_t.shape).astype(np.float32), v_tp1)
    truncated = np.zeros_like(terminated)

    adv, _ = variant(gae)(r, v_t, v_tp1, terminated, truncated, gamma, lambda_)

    discount_t = gamma * (1.0 - terminated.astype(np.float32))
    values = np.concatenate([v_t, v_last], axis=0)
    expected = jax.vmap(
        rlax.truncated_generalized_advantage_estimation, in_axes=(1, 1, None, 1), out_axes=1
    )(r, discount_t, lambda_, values)
    np.testing.assert_allclose(adv, expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- n_step_returns


def test_n_step_returns_by_hand_with_termination_and_truncation(variant):
    gamma = 0.5
    r_t = col([1, 2, 3, 4, 5, 6, 7, 8, 9])
    terminated = col([0, 0, 1, 0, 0, 0, 0, 0, 0], bool)  # t=2
    truncated = col([0, 0, 0, 0, 1, 0, 0, 0, 0], bool)  # t=4
    # t  included  return                      discount         index
    # 0  0,1,2     1 + 0.5*2 + 0.25*3 = 2.75    0 (2 terminated)  2
    # 1  1,2       2 + 0.5*3          = 3.5     0                 2
    # 2  2         3                            0                 2
    # 3  3,4       4 + 0.5*5          = 6.5     0.25 (truncated)  4
    # 4  4         5                            0.5               4
    # 5  5,6,7     6 + 0.5*7 + 0.25*8 = 11.5    0.125             7
    # 6  6,7,8     7 + 0.5*8 + 0.25*9 = 13.25   0.125             8
    # 7  7,8       8 + 0.5*9          = 12.5    0.25 (frag. end)  8
    # 8  8         9                            0.5               8
    returns, discount, index = variant(functools.partial(n_step_returns, n=3))(
        r_t, terminated, truncated, gamma
    )
    np.testing.assert_allclose(returns, col([2.75, 3.5, 3, 6.5, 5, 11.5, 13.25, 12.5, 9]))
    np.testing.assert_allclose(discount, col([0, 0, 0, 0.25, 0.5, 0.125, 0.125, 0.25, 0.5]))
    np.testing.assert_array_equal(index, col([2, 2, 2, 4, 4, 7, 8, 8, 8], jnp.int32))
    assert index.dtype == jnp.int32


@pytest.mark.parametrize(
    "terminated, truncated, expected_discount",
    [
        # Terminated on the fragment's last step: no bootstrap from any window.
        ([0, 0, 1], [0, 0, 0], [0.0, 0.0, 0.0]),
        # Truncated there: bootstrap as at a plain fragment end.
        ([0, 0, 0], [0, 0, 1], [0.125, 0.25, 0.5]),
        ([0, 0, 0], [0, 0, 0], [0.125, 0.25, 0.5]),
    ],
)
def test_n_step_returns_at_fragment_end(variant, terminated, truncated, expected_discount):
    # gamma = 0.5, r = 1: returns 1 + 0.5 + 0.25 = 1.75, 1.5, 1; all windows end at t=2.
    returns, discount, index = variant(functools.partial(n_step_returns, n=3))(
        col([1.0, 1.0, 1.0]), col(terminated, bool), col(truncated, bool), 0.5
    )
    np.testing.assert_allclose(returns, col([1.75, 1.5, 1.0]))
    np.testing.assert_allclose(discount, col(expected_discount))
    np.testing.assert_array_equal(index, col([2, 2, 2], jnp.int32))


def test_one_step_returns_are_td_targets(variant):
    r, _, _, terminated, truncated = _random_fragment(4)
    returns, discount, index = variant(functools.partial(n_step_returns, n=1))(
        r, terminated, truncated, 0.9
    )
    np.testing.assert_allclose(returns, r)
    np.testing.assert_allclose(discount, 0.9 * (1.0 - terminated), rtol=1e-6)
    np.testing.assert_array_equal(index, np.broadcast_to(np.arange(r.shape[0])[:, None], r.shape))


def _n_step_loop(r, terminated, truncated, gamma, n):
    t_len, b = r.shape
    returns = np.zeros((t_len, b))
    discount = np.zeros((t_len, b))
    index = np.zeros((t_len, b), np.int32)
    for j in range(b):
        for t in range(t_len):
            g, m = 0.0, 0
            for k in range(n):
                if t + k >= t_len:
                    break
                g += gamma**k * r[t + k, j]
                m += 1
                if terminated[t + k, j] or truncated[t + k, j]:
                    break
            last = t + m - 1
            returns[t, j] = g
            discount[t, j] = 0.0 if terminated[last, j] else gamma**m
            index[t, j] = last
    return returns, discount, index


@pytest.mark.parametrize("n", [2, 6])
def test_n_step_returns_match_python_loop_on_random_data(variant, n):
    r, _, _, terminated, truncated = _random_fragment(5 + n)
    returns, discount, index = variant(functools.partial(n_step_returns, n=n))(
        r, terminated, truncated, 0.9
    )
    expected = _n_step_loop(r, terminated, truncated, 0.9, n)
    np.testing.assert_allclose(returns, expected[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(discount, expected[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(index, expected[2])


def test_n_step_returns_rejects_non_positive_n():
    with pytest.raises(ValueError, match="n must be"):
        n_step_returns(col([1.0]), col([0], bool), col([0], bool), 0.9, n=0)
