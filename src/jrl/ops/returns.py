"""Returns and advantages over time-major fragments.

All functions are pure and jittable. Inputs are time-major: ``[T, B]`` (or ``[T]`` for a single
stream). ``terminated_t`` and ``truncated_t`` are kept apart: a terminated step has no future value,
a truncated step still has one (the value of its true next observation) but the fragment's next step
belongs to a different episode.
"""

from __future__ import annotations

from typing import NamedTuple

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

    # Unrolled: the body is a few flops, so per-iteration loop overhead dominates on CPU.
    _, returns = jax.lax.scan(step, bootstrap_value, (r_t, discount_t), reverse=True, unroll=16)
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
    advantages = discounted_returns(delta_t, trace_t, jnp.zeros_like(r_t[0]))
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


class VTraceReturns(NamedTuple):
    """V-trace targets over a fragment.

    Attributes:
      vs: value targets ``v_s``, ``[T, B]``.
      pg_advantages: policy-gradient advantages ``rho_pg_s * (r_s + gamma * v_{s+1} - V(x_s))``,
        ``[T, B]``.
    """

    vs: Array
    pg_advantages: Array


def _clip_above(x: Array, threshold: float | None) -> Array:
    return x if threshold is None else jnp.minimum(threshold, x)


def vtrace(
    v_t: Array,
    v_tp1: Array,
    r_t: Array,
    terminated_t: Array,
    truncated_t: Array,
    log_rho_t: Array,
    gamma: Numeric,
    lambda_: Numeric = 1.0,
    clip_rho_threshold: float | None = 1.0,
    clip_pg_rho_threshold: float | None = 1.0,
    clip_c_threshold: float | None = 1.0,
) -> VTraceReturns:
    """V-trace targets (Espeholt et al., 2018, eq. 1) that keep termination and truncation apart.

    With ``rho_s = exp(log_rho_s)`` (target over behaviour probability of the taken action),
    ``delta_s = min(rho_bar, rho_s) * (r_s + gamma * (1 - terminated_s) * v_tp1_s - v_s)`` and
    ``c_s = lambda_ * min(c_bar, rho_s)``, the targets follow the paper's recursive form
    ``vs_s = v_s + delta_s + gamma * c_s * (1 - done_s) * (vs_{s+1} - v_{s+1})`` with
    ``vs_T - v_T = 0`` past the fragment's end, where ``done_s = terminated_s or truncated_s``:
    a truncated step bootstraps from the value of its true next observation but carries no trace
    across the episode boundary; a terminated step does neither. The policy-gradient advantage
    uses the next step's target, ``vs_{s+1}`` within the episode and the fragment, else ``v_tp1_s``
    (this differs from rlax, which mixes ``lambda_ * vs_{s+1} + (1 - lambda_) * v_{s+1}``; the two
    agree at ``lambda_ = 1``).

    With on-policy data (``log_rho = 0``) and thresholds ``>= 1``, ``vs`` are the lambda-returns
    (``gae``'s value targets). Outputs carry no gradient (they are targets).

    Args:
      v_t: values ``V(x_s)`` of ``obs_s`` under the current params, ``[T, B]`` (or ``[T]``).
      v_tp1: values of the true ``next_obs_s``, ``[T, B]``.
      r_t: rewards, ``[T, B]``.
      terminated_t: episode terminated at step s, bool or float, ``[T, B]``.
      truncated_t: episode truncated at step s, bool or float, ``[T, B]``.
      log_rho_t: ``log pi(a_s | x_s) - log mu(a_s | x_s)``, ``[T, B]``.
      gamma: discount factor, scalar.
      lambda_: trace mixing parameter (1 in the paper), scalar.
      clip_rho_threshold: ``rho_bar`` for the value targets (``None``: no clipping).
      clip_pg_rho_threshold: clip of ``rho`` in the policy-gradient advantage (``None``: none).
      clip_c_threshold: ``c_bar`` for the traces (``None``: no clipping).

    Returns:
      ``VTraceReturns(vs, pg_advantages)``, both ``[T, B]``.
    """
    chex.assert_rank(r_t, {1, 2})
    chex.assert_equal_shape([v_t, v_tp1, r_t, terminated_t, truncated_t, log_rho_t])
    chex.assert_type([v_t, v_tp1, r_t, log_rho_t], float)
    v_t, v_tp1, log_rho_t = jax.lax.stop_gradient((v_t, v_tp1, log_rho_t))
    terminated = _as_float(terminated_t, r_t)
    not_done = (1.0 - terminated) * (1.0 - _as_float(truncated_t, r_t))
    rho_t = jnp.exp(log_rho_t)
    bootstrap_t = gamma * (1.0 - terminated)

    delta_t = _clip_above(rho_t, clip_rho_threshold) * (r_t + bootstrap_t * v_tp1 - v_t)
    trace_t = gamma * lambda_ * _clip_above(rho_t, clip_c_threshold) * not_done

    a_t = discounted_returns(delta_t, trace_t, jnp.zeros_like(r_t[0]))  # vs_s - v_s
    a_next = jnp.concatenate([a_t[1:], jnp.zeros_like(a_t[:1])], axis=0) * not_done
    vs_tp1 = v_tp1 + a_next
    pg_advantages = _clip_above(rho_t, clip_pg_rho_threshold) * (r_t + bootstrap_t * vs_tp1 - v_t)
    return VTraceReturns(vs=v_t + a_t, pg_advantages=pg_advantages)
