"""Elementwise losses against hand-computed values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrl.ops.losses import huber_loss, l2_loss


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
