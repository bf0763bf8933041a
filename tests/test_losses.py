"""Elementwise losses and PPO's clipped surrogate against hand-computed values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrl.ops.losses import clipped_surrogate_loss, huber_loss, l2_loss


@pytest.mark.parametrize(
    "x, delta, expected",
    [
        (0.0, 1.0, 0.0),
        (0.5, 1.0, 0.125),  # inside: 0.5 * 0.25
        (-1.0, 1.0, 0.5),  # at the edge: both branches give 0.5
        (2.0, 1.0, 1.5),  # outside: 1 * (2 - 0.5)
        (-3.0, 1.0, 2.5),  # outside: 1 * (3 - 0.5)
        (1.0, 2.0, 0.5),  # inside a wider delta: 0.5 * 1
        (3.0, 2.0, 4.0),  # outside: 2 * (3 - 1)
    ],
)
def test_huber_loss_values_by_hand(x, delta, expected):
    np.testing.assert_allclose(huber_loss(jnp.float32(x), delta), expected, rtol=1e-6)


@pytest.mark.parametrize(
    "x, delta, expected_grad",
    [
        (0.0, 1.0, 0.0),
        (0.5, 1.0, 0.5),  # inside: x
        (2.0, 1.0, 1.0),  # outside: delta * sign(x)
        (-3.0, 1.0, -1.0),
        (-1.5, 2.0, -1.5),
        (3.0, 2.0, 2.0),
    ],
)
def test_huber_loss_gradient_is_x_inside_and_clipped_outside(x, delta, expected_grad):
    grad = jax.grad(huber_loss)(jnp.float32(x), delta)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-6)


def test_huber_loss_is_elementwise_and_jittable():
    x = jnp.array([[0.5, 2.0], [-3.0, 0.0]])
    np.testing.assert_allclose(jax.jit(huber_loss)(x), [[0.125, 1.5], [2.5, 0.0]])


def test_l2_loss_values_and_gradient():
    x = jnp.array([-2.0, 0.0, 3.0])
    np.testing.assert_allclose(l2_loss(x), [2.0, 0.0, 4.5])
    np.testing.assert_allclose(jax.grad(lambda x: l2_loss(x).sum())(x), x)


# ---------------------------------------------------------------- clipped surrogate


@pytest.mark.parametrize("jit", [False, True], ids=["nojit", "jit"])
def test_clipped_surrogate_caps_the_gain_of_each_advantage_sign(jit):
    fn = jax.jit(clipped_surrogate_loss, static_argnums=2) if jit else clipped_surrogate_loss
    ratio = jnp.array([1.5, 1.5, 0.5, 0.5, 1.1])
    advantages = jnp.array([1.0, -1.0, 1.0, -1.0, 2.0])
    loss, clip_fraction = fn(ratio, advantages, 0.2)
    # A > 0, ratio 1.5: min(1.5, 1.2) * 1 = 1.2     A < 0, ratio 1.5: min(-1.5, -1.2) = -1.5
    # A > 0, ratio 0.5: min(0.5, 0.8) * 1 = 0.5     A < 0, ratio 0.5: min(-0.5, -0.8) = -0.8
    # inside the range: 1.1 * 2 = 2.2
    np.testing.assert_allclose(loss, -(1.2 - 1.5 + 0.5 - 0.8 + 2.2) / 5, rtol=1e-6)
    np.testing.assert_allclose(clip_fraction, 4 / 5)


def test_clipped_surrogate_gradient_vanishes_where_the_clip_binds():
    ratio = jnp.array([1.5, 1.5, 1.1])
    advantages = jnp.array([1.0, -1.0, 2.0])
    grad = jax.grad(lambda r: clipped_surrogate_loss(r, advantages, 0.2)[0])(ratio)
    # Clipped (ratio 1.5, A > 0): no gradient. Unclipped: -A / N.
    np.testing.assert_allclose(grad, [0.0, 1.0 / 3, -2.0 / 3], rtol=1e-6)
