"""Returns and advantages over time-major fragments.

All functions are pure and jittable. Inputs are time-major: ``[T, B]`` (or ``[T]`` for a single
stream). ``terminated_t`` and ``truncated_t`` are kept apart: a terminated step has no future value,
a truncated step still has one (the value of its true next observation) but the fragment's next step
belongs to a different episode.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

Array = jax.Array
Numeric = chex.Numeric


def _as_float(x: Array, like: Array) -> Array:
    """Casts a bool or float flag array to the float dtype of ``like``."""
    return jnp.asarray(x).astype(like.dtype)


def discounted_returns(r_t: Array, discount_t: Array, bootstrap_value: Array) -> Array:
    """Discounted returns ``G_t = r_t + discount_t * G_{t+1}`` with ``G_T = bootstrap_value``.

    Args:
      r_t: rewards, ``[T, B]`` (or ``[T]``).
      discount_t: discounts including gamma and zeros at episode ends, ``[T, B]`` (or ``[T]``).
      bootstrap_value: value of the state after the fragment, ``[B]`` (or ``[]``).

    Returns:
      Returns ``G_t``, ``[T, B]`` (or ``[T]``).
    """
    chex.assert_rank(r_t, {1, 2})
    chex.assert_rank(bootstrap_value, r_t.ndim - 1)
    chex.assert_equal_shape([r_t, discount_t])
    chex.assert_type([r_t, discount_t, bootstrap_value], float)

    def step(g_tp1, xs):
        r, discount = xs
        g = r + discount * g_tp1
        return g, g

    _, returns = jax.lax.scan(step, bootstrap_value, (r_t, discount_t), reverse=True)
    return returns


def gae(
    r_t: Array,
    v_t: Array,
    v_tp1: Array,
    terminated_t: Array,
    truncated_t: Array,
    gamma: Numeric,
    lambda_: Numeric,
) -> tuple[Array, Array]:
    """Generalized advantage estimation that keeps termination and truncation apart.

    ``delta_t = r_t + gamma * (1 - terminated_t) * v_tp1 - v_t`` and
    ``A_t = delta_t + gamma * lambda_ * (1 - done_t) * A_{t+1}`` with
    ``done_t = terminated_t or truncated_t`` and ``A_T = 0``. A truncated step bootstraps from
    ``v_tp1`` but does not carry advantages across the episode boundary; a terminated step does
    neither.

    Args:
      r_t: rewards, ``[T, B]`` (or ``[T]``).
      v_t: values of ``obs_t``, ``[T, B]``.
      v_tp1: values of the true ``next_obs_t`` (the final observation at an episode's last step),
        ``[T, B]``.
      terminated_t: episode terminated at step t, bool or float, ``[T, B]``.
      truncated_t: episode truncated at step t, bool or float, ``[T, B]``.
      gamma: discount factor, scalar.
      lambda_: GAE mixing parameter, scalar.

    Returns:
      ``(advantages, value_targets)``, both ``[T, B]``, with ``value_targets = advantages + v_t``.
    """
    chex.assert_rank(r_t, {1, 2})
    chex.assert_equal_shape([r_t, v_t, v_tp1, terminated_t, truncated_t])
    chex.assert_type([r_t, v_t, v_tp1], float)
    terminated = _as_float(terminated_t, r_t)
    truncated = _as_float(truncated_t, r_t)
    not_done = (1.0 - terminated) * (1.0 - truncated)

    delta_t = r_t + gamma * (1.0 - terminated) * v_tp1 - v_t
    trace_t = gamma * lambda_ * not_done

    def step(a_tp1, xs):
        delta, trace = xs
        a = delta + trace * a_tp1
        return a, a

    # Unrolled: the body is a few flops, so per-iteration loop overhead dominates on CPU.
    _, advantages = jax.lax.scan(step, jnp.zeros_like(r_t[0]), (delta_t, trace_t), reverse=True,
                                 unroll=16)
    return advantages, advantages + v_t


def n_step_returns(
    r_t: Array,
    terminated_t: Array,
    truncated_t: Array,
    gamma: Numeric,
    n: int,
) -> tuple[Array, Array, Array]:
    """Truncated n-step returns over a fragment, for n-step Q-learning targets.

    For each t the return sums ``gamma^k * r_{t+k}`` over the ``m`` included steps: at most ``n``,
    stopping after a terminated or truncated step and at the fragment's end. The target is then
    ``returns + discount * Q(next_obs[bootstrap_index])``.

    Args:
      r_t: rewards, ``[T, B]`` (or ``[T]``).
      terminated_t: episode terminated at step t, bool or float, ``[T, B]``.
      truncated_t: episode truncated at step t, bool or float, ``[T, B]``.
      gamma: discount factor, scalar.
      n: number of steps, a static Python int ``>= 1``.

    Returns:
      ``(returns, discount, bootstrap_index)``, each ``[T, B]``: ``discount`` is ``gamma^m``, or 0
      when the last included step terminated; ``bootstrap_index = t + m - 1`` (int32).
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a Python int >= 1, got {n!r}.")
    chex.assert_rank(r_t, {1, 2})
    chex.assert_equal_shape([r_t, terminated_t, truncated_t])
    chex.assert_type(r_t, float)
    terminated = _as_float(terminated_t, r_t)
    done = jnp.maximum(terminated, _as_float(truncated_t, r_t))
    valid = jnp.ones_like(r_t)

    def ahead(x: Array, k: int) -> Array:
        """``x[t + k]``, zero past the fragment's end."""
        return jnp.concatenate([x[k:], jnp.zeros_like(x[:k])], axis=0)

    returns = jnp.zeros_like(r_t)
    num_steps = jnp.zeros_like(r_t)
    last_terminated = jnp.zeros_like(r_t)
    alive = jnp.ones_like(r_t)
    for k in range(n):
        include = alive * ahead(valid, k)
        returns = returns + include * (gamma**k) * ahead(r_t, k)
        num_steps = num_steps + include
        last_terminated = jnp.where(include > 0, ahead(terminated, k), last_terminated)
        alive = include * (1.0 - ahead(done, k))

    discount = (1.0 - last_terminated) * jnp.power(gamma, num_steps)
    t = jnp.arange(r_t.shape[0], dtype=jnp.int32).reshape((-1,) + (1,) * (r_t.ndim - 1))
    bootstrap_index = t + num_steps.astype(jnp.int32) - 1
    return returns, discount.astype(r_t.dtype), bootstrap_index
