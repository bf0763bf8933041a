"""Time-major fragments ``[T, B, ...]`` cut into training sequences ``[L, S, ...]`` and back.

Each env lane of ``T`` steps is cut every ``max_seq_len`` (``L``) steps into ``C = ceil(T / L)``
sequences; the last one is padded with zeros and masked. Sequence ``s = c * B + b`` holds steps
``c * L ... c * L + L - 1`` of lane ``b``. As in RLlib's ``chop_into_sequences``, each sequence
comes with its initial state (the state stored at its first step) and its length (``seq_lens``);
unlike it, a sequence may cross an episode boundary: the recurrent forward pass zeroes the state
there (``episode_starts``), which computes the same as padding each episode apart, with static
shapes (so it runs inside ``jit``).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class Sequences(NamedTuple):
    """A fragment cut into sequences.

    Attributes:
      features: the fragment's columns, each ``[L, S, ...]`` (zeros where padded).
      initial_state: the state at each sequence's first step, each ``[S, ...]``.
      seq_lens: valid steps of each sequence, int32 ``[S]``.
      mask: 1.0 at valid steps, 0.0 at padding, float32 ``[L, S]``.
    """

    features: Any
    initial_state: Any
    seq_lens: Array
    mask: Array


def num_sequences(T: int, B: int, max_seq_len: int) -> int:
    """``S = B * ceil(T / max_seq_len)``."""
    return B * math.ceil(T / max_seq_len)


def episode_starts(terminated: Array, truncated: Array) -> Array:
    """``[T, B]``: True at steps that follow the end of an episode inside the fragment (the
    first step of the fragment is False: the state stored there is already the right one)."""
    done = terminated | truncated
    return jnp.concatenate([jnp.zeros_like(done[:1]), done[:-1]])


def chop(x: Array, max_seq_len: int) -> Array:
    """``[T, B, ...]`` -> ``[L, S, ...]``, zero-padded (see the module docstring)."""
    T, B = x.shape[:2]
    L = max_seq_len
    C = math.ceil(T / L)
    if C * L != T:
        x = jnp.concatenate([x, jnp.zeros((C * L - T, *x.shape[1:]), x.dtype)])
    x = x.reshape((C, L, B, *x.shape[2:]))
    return jnp.swapaxes(x, 0, 1).reshape((L, C * B, *x.shape[3:]))


def unchop(x: Array, T: int) -> Array:
    """``[L, S, ...]`` -> ``[T, B, ...]``: the inverse of ``chop`` (padding dropped)."""
    L, S = x.shape[:2]
    C = math.ceil(T / L)
    B = S // C
    x = jnp.swapaxes(x.reshape((L, C, B, *x.shape[2:])), 0, 1)
    return x.reshape((C * L, B, *x.shape[3:]))[:T]


def sequence_mask(T: int, B: int, max_seq_len: int) -> Array:
    """float32 ``[L, S]``: 1 at the steps of ``chop`` that hold data, 0 at padding."""
    return chop(jnp.ones((T, B), jnp.float32), max_seq_len)


def chop_into_sequences(features: Any, state: Any, max_seq_len: int) -> Sequences:
    """Cuts a fragment into sequences.

    Args:
      features: a pytree of ``[T, B, ...]`` columns (obs, actions, advantages, ...).
      state: a pytree of per-step recurrent states ``[T, B, ...]`` (the state each step was
        acted with); the state at every ``max_seq_len``-th step becomes a sequence's initial
        state.
      max_seq_len: ``L``, steps per sequence.

    Returns:
      ``Sequences`` with ``S = B * ceil(T / L)`` sequences.
    """
    T, B = jax.tree.leaves(features)[0].shape[:2]
    L = min(max_seq_len, T)
    chopped = jax.tree.map(lambda x: chop(x, L), features)
    initial = jax.tree.map(lambda s: s[::L].reshape((-1, *s.shape[2:])), state)
    mask = sequence_mask(T, B, L)
    return Sequences(chopped, initial, mask.sum(axis=0).astype(jnp.int32), mask)


def masked_mean(x: Array, mask: Array | None) -> Array:
    """``mean(x)`` over the valid entries (``mask`` 1), or over all without a mask."""
    if mask is None:
        return jnp.mean(x)
    return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)
