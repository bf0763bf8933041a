"""TD kernels (``jrl.ops.td``) against hand-computed values, one transition at a time and
vmapped over a batch, under jit and eagerly."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrl.ops.losses import huber_loss
from jrl.ops.td import critic_loss, double_q_learning, q_learning, twin_q_target


@pytest.fixture(params=["jit", "nojit"])
def variant(request):
    """Runs a kernel under ``jax.jit`` or eagerly."""
    return jax.jit if request.param == "jit" else (lambda fn: fn)


def f32(x):
    return jnp.asarray(x, jnp.float32)


# ---------------------------------------------------------------- Q-learning


def test_q_learning_bootstraps_from_the_max_of_the_next_q_values(variant):
    # target = 1 + 0.5 * max(10, 20) = 11;  Q(s, a=1) = 2  ->  td = 9
    td = variant(q_learning)(f32([1.0, 2.0]), jnp.int32(1), f32(1.0), f32(0.5), f32([10.0, 20.0]))
    np.testing.assert_allclose(td, 9.0)


def test_double_q_learning_values_the_selectors_argmax_with_the_value_network(variant):
    # The selector (online net) picks action 0, whose target-net value is 10:
    # target = 1 + 0.5 * 10 = 6;  Q(s, a=1) = 2  ->  td = 4 (Q-learning would give 9).
    td = variant(double_q_learning)(f32([1.0, 2.0]), jnp.int32(1), f32(1.0), f32(0.5),
                                    f32([10.0, 20.0]), f32([5.0, 1.0]))
    np.testing.assert_allclose(td, 4.0)


def test_q_learning_does_not_bootstrap_with_a_zero_discount(variant):
    # Terminated: discount 0, so the target is the reward alone: td = 3 - 1 = 2.
    td = variant(q_learning)(f32([1.0, 2.0]), jnp.int32(0), f32(3.0), f32(0.0),
                             f32([100.0, -100.0]))
    np.testing.assert_allclose(td, 2.0)


def test_double_q_learning_gradient_flows_only_into_the_taken_action():
    grads = jax.grad(lambda q_tm1, q_t: double_q_learning(
        q_tm1, jnp.int32(1), f32(1.0), f32(0.5), q_t, q_t))(f32([1.0, 2.0]), f32([10.0, 20.0]))
    # d td / d q_tm1 = -one_hot(a); the target is a constant.
    np.testing.assert_allclose(grads, [0.0, -1.0])
    q_t_grad = jax.grad(lambda q_t: double_q_learning(
        f32([1.0, 2.0]), jnp.int32(1), f32(1.0), f32(0.5), q_t, q_t))(f32([10.0, 20.0]))
    np.testing.assert_allclose(q_t_grad, [0.0, 0.0])


def test_double_q_learning_vmaps_over_a_batch_like_one_transition_at_a_time(variant):
    key = jax.random.PRNGKey(0)
    k1, k2, k3, k4, k5 = jax.random.split(key, 5)
    n, a = 6, 3
    q_tm1, q_t, q_sel = (jax.random.normal(k, (n, a)) for k in (k1, k2, k3))
    a_tm1 = jax.random.randint(k4, (n,), 0, a)
    r_t = jax.random.normal(k5, (n,))
    discount_t = jnp.array([0.99, 0.0, 0.5, 0.99, 0.25, 0.0])
    batched = variant(jax.vmap(double_q_learning))(q_tm1, a_tm1, r_t, discount_t, q_t, q_sel)
    for i in range(n):
        expected = r_t[i] + discount_t[i] * q_t[i, jnp.argmax(q_sel[i])] - q_tm1[i, a_tm1[i]]
        np.testing.assert_allclose(batched[i], expected, rtol=1e-6)


def test_double_q_learning_checks_ranks_and_action_type():
    with pytest.raises(AssertionError):
        double_q_learning(f32([[1.0, 2.0]]), jnp.int32(1), f32(1.0), f32(0.5),
                          f32([1.0, 2.0]), f32([1.0, 2.0]))
    with pytest.raises(AssertionError):
        double_q_learning(f32([1.0, 2.0]), f32(1.0), f32(1.0), f32(0.5),
                          f32([1.0, 2.0]), f32([1.0, 2.0]))


# ---------------------------------------------------------------- twin-Q target


def test_twin_q_target_takes_the_min_of_the_critics(variant):
    # 1 + 0.99 * min(3, 4)
    np.testing.assert_allclose(variant(twin_q_target)(f32(1.0), f32(0.99), f32([3.0, 4.0])),
                               1.0 + 0.99 * 3.0, rtol=1e-6)


def test_twin_q_target_does_not_bootstrap_on_termination(variant):
    np.testing.assert_allclose(variant(twin_q_target)(f32(2.0), f32(0.0), f32([5.0, 1.0])), 2.0)


def test_twin_q_target_adds_the_entropy_bonus_to_the_bootstrap_only(variant):
    alpha, logp = 0.2, -1.0
    # 1 + 0.5 * (min(3, 4) + 0.2);  after termination the bonus is discounted away too.
    np.testing.assert_allclose(
        variant(twin_q_target)(f32(1.0), f32(0.5), f32([3.0, 4.0]), f32(-alpha * logp)),
        1.0 + 0.5 * (3.0 + 0.2), rtol=1e-6)
    np.testing.assert_allclose(
        variant(twin_q_target)(f32(2.0), f32(0.0), f32([3.0, 4.0]), f32(-alpha * 3.0)), 2.0)


def test_twin_q_target_vmaps_over_critics_stacked_first(variant):
    # Critics give [num_q, N]: map over axis 1 of q_t.
    r = f32([1.0, 2.0])
    discount = f32([0.99, 0.0])
    q_t = f32([[3.0, 5.0], [4.0, 1.0]])
    targets = variant(jax.vmap(twin_q_target, in_axes=(0, 0, 1)))(r, discount, q_t)
    np.testing.assert_allclose(targets, [1.0 + 0.99 * 3.0, 2.0], rtol=1e-6)


def test_twin_q_target_carries_no_gradient():
    grad = jax.grad(lambda q: twin_q_target(f32(1.0), f32(0.5), q))(f32([3.0, 4.0]))
    np.testing.assert_allclose(grad, [0.0, 0.0])


# ---------------------------------------------------------------- critic loss


def test_critic_loss_sums_half_squared_errors_over_the_critics(variant):
    # errors 2 - 1 = 1 and 2 - 4 = -2:  0.5 * 1 + 0.5 * 4 = 2.5
    loss, td = variant(critic_loss)(f32([1.0, 4.0]), f32(2.0))
    np.testing.assert_allclose(loss, 2.5)
    np.testing.assert_allclose(td, [1.0, -2.0])


def test_critic_loss_with_huber_turns_linear_past_the_threshold(variant):
    # errors 0.5 and -3 with delta 1: 0.5 * 0.25 + (3 - 0.5) = 2.625
    loss, td = variant(functools.partial(critic_loss, elementwise=huber_loss))(
        f32([1.5, 5.0]), f32(2.0))
    np.testing.assert_allclose(loss, 2.625)
    np.testing.assert_allclose(td, [0.5, -3.0])


def test_critic_loss_gradient_moves_each_critic_towards_the_target_only():
    q_grad, target_grad = jax.grad(lambda q, t: critic_loss(q, t)[0], argnums=(0, 1))(
        f32([1.0, 4.0]), f32(2.0))
    # d/dq 0.5 (t - q)^2 = q - t; the target is a constant.
    np.testing.assert_allclose(q_grad, [-1.0, 2.0])
    np.testing.assert_allclose(target_grad, 0.0)


def test_critic_loss_checks_ranks():
    with pytest.raises(AssertionError):
        critic_loss(f32([[1.0, 4.0]]), f32(2.0))
    with pytest.raises(AssertionError):
        critic_loss(f32([1.0, 4.0]), f32([2.0]))

