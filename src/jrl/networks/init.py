"""Parameter initializers built from plain XLA ops.

``jax.nn.initializers.orthogonal`` calls LAPACK QR. Inside a ``vmap`` over seeds that becomes a batched
QR custom call which, on small CPU hosts with jax 0.10, can deadlock XLA's worker threads (see
shared/anchors/compat.md, "Known hang"). ``orthogonal`` here orthogonalizes with Gram–Schmidt made of
matmuls in a ``fori_loop``, so it batches like any other XLA op and never reaches LAPACK.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

Initializer = Callable[..., jax.Array]


# Jitted so that eager (un-jitted) ``module.init`` calls compile the loop once per kernel shape.
@functools.partial(jax.jit, static_argnames=("shape",))
def _orthogonal_matrix(key: jax.Array, shape: tuple[int, int]) -> jax.Array:
    """A float32 ``[rows, cols]`` matrix with orthonormal columns (tall) or rows (wide)."""
    rows, cols = shape
    if rows >= cols:
        return _orthonormal_columns(jax.random.normal(key, (rows, cols), jnp.float32))
    return _orthonormal_columns(jax.random.normal(key, (cols, rows), jnp.float32)).T


def _orthonormal_columns(a: jax.Array) -> jax.Array:
    """Q of the QR decomposition of ``a`` ``[m, n]`` (m >= n), with a positive diagonal of R.

    Classical Gram–Schmidt with one re-orthogonalization pass ("twice is enough"): as accurate as
    Householder QR in float32 and vectorized per column. Columns of ``q`` not yet filled are zero, so
    projecting onto all of ``q`` projects onto the filled ones only.
    """
    m, n = a.shape

    def fill_column(j: jax.Array, q: jax.Array) -> jax.Array:
        v = a[:, j]
        v = v - q @ (q.T @ v)
        v = v - q @ (q.T @ v)
        return q.at[:, j].set(v / jnp.linalg.norm(v))

    return jax.lax.fori_loop(0, n, fill_column, jnp.zeros((m, n), a.dtype))


def orthogonal(scale: float = 1.0) -> Initializer:
    """Orthogonal kernel initializer (flax-compatible), without LAPACK.

    Draws the same distribution as ``jax.nn.initializers.orthogonal`` (and the same matrices for the
    same key, up to float32 rounding): a ``[rows, cols]`` matrix with ``rows = prod(shape[:-1])`` and
    ``cols = shape[-1]`` has orthonormal columns (rows >= cols) or orthonormal rows (rows < cols),
    times ``scale``. Conv kernels ``[kh, kw, in, out]`` are treated as ``[kh * kw * in, out]``.

    Args:
      scale: multiplies the orthogonal matrix (``sqrt(2)`` for ReLU-like torsos, ``0.01`` for
        policy outputs).

    Returns:
      ``init(key, shape, dtype=float32) -> array``.
    """

    def init(key: jax.Array, shape: Sequence[int], dtype: jnp.dtype = jnp.float32) -> jax.Array:
        shape = tuple(int(d) for d in shape)
        if len(shape) < 2:
            raise ValueError(f"orthogonal init needs a kernel of rank >= 2, got shape {shape}")
        q = _orthogonal_matrix(key, (math.prod(shape[:-1]), shape[-1]))
        return (scale * q).reshape(shape).astype(dtype)

    return init
