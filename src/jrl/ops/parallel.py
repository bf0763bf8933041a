"""Collectives that reduce to the identity outside a device-parallel (``pmap``) context.

Algorithms take an ``axis_name``; with ``None`` they run as single-device functions, with a name
they average gradients and statistics over the devices of that mapped axis.
"""

from __future__ import annotations

import jax


def pmean(tree, axis_name: str | None):
    """Mean over devices of every leaf (identity when ``axis_name`` is None)."""
    return tree if axis_name is None else jax.lax.pmean(tree, axis_name)


def all_gather(x: jax.Array, axis_name: str | None) -> jax.Array:
    """``x`` from every device concatenated along axis 0 (identity when ``axis_name`` is None)."""
    return x if axis_name is None else jax.lax.all_gather(x, axis_name, tiled=True)


def num_devices(axis_name: str | None) -> int | jax.Array:
    return 1 if axis_name is None else jax.lax.psum(1, axis_name)


def per_device_key(key: jax.Array, axis_name: str | None) -> jax.Array:
    """``key`` folded with the device index, so each device draws its own noise for its share
    of the batch (``key`` itself when ``axis_name`` is None)."""
    return key if axis_name is None else jax.random.fold_in(key, jax.lax.axis_index(axis_name))
