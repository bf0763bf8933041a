"""Elementwise regression losses (no reduction)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def huber_loss(x: jax.Array, delta: float = 1.0) -> jax.Array:
    """Huber loss: ``0.5 x^2`` for ``|x| <= delta``, else ``delta * (|x| - 0.5 delta)``.

    Args:
      x: errors, any shape.
      delta: where the loss turns from quadratic to linear.

    Returns:
      Elementwise loss, same shape as ``x``.
    """
    abs_x = jnp.abs(x)
    quadratic = jnp.minimum(abs_x, delta)
    # Splitting |x| this way keeps the gradient well defined at |x| = delta.
    linear = abs_x - quadratic
    return 0.5 * quadratic**2 + delta * linear


def l2_loss(x: jax.Array) -> jax.Array:
    """Squared loss ``0.5 x^2``.

    Args:
      x: errors, any shape.

    Returns:
      Elementwise loss, same shape as ``x``.
    """
    return 0.5 * jnp.square(x)
