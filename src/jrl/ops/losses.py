"""Losses: elementwise regression losses (no reduction), the actor-critic loss and PPO's clipped
surrogate."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from jrl.ops.sequences import masked_mean


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


def actor_critic_loss(
    logp_t: jax.Array,
    entropy_t: jax.Array,
    v_t: jax.Array,
    advantages_t: jax.Array,
    value_targets_t: jax.Array,
    vf_loss_coeff: float,
    entropy_coeff: float,
    weight_t: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Policy-gradient loss + value loss - entropy bonus (A2C, A3C, PG), averaged over ``[N]``.

    ``policy_loss = -mean(w * logp * A)``, ``vf_loss = 0.5 * mean(w * (v - target)^2)``,
    ``entropy = mean(w * H)`` and ``total = policy_loss + vf_loss_coeff * vf_loss -
    entropy_coeff * entropy``. Advantages and targets are constants (no gradient flows into
    them). Weights let a microbatch carry its share of a larger batch's mean: with
    ``w = mask * microbatch / N`` the microbatch losses sum to the full batch's.

    Args:
      logp_t: log-probabilities of the taken actions ``[N]``.
      entropy_t: entropies of the action distributions ``[N]``.
      v_t: value predictions ``[N]``.
      advantages_t: advantages ``[N]``.
      value_targets_t: value targets ``[N]``.
      vf_loss_coeff: weight of the value loss.
      entropy_coeff: weight of the entropy bonus.
      weight_t: per-sample weights ``[N]`` (``None``: all ones).

    Returns:
      ``(total, stats)`` with ``stats`` holding ``total_loss``, ``policy_loss``, ``vf_loss`` and
      ``entropy``.
    """
    chex.assert_rank([logp_t, entropy_t, v_t, advantages_t, value_targets_t], 1)
    chex.assert_equal_shape([logp_t, entropy_t, v_t, advantages_t, value_targets_t])
    weight_t = jnp.ones_like(logp_t) if weight_t is None else weight_t
    chex.assert_equal_shape([logp_t, weight_t])
    advantages_t = jax.lax.stop_gradient(advantages_t)
    value_targets_t = jax.lax.stop_gradient(value_targets_t)
    policy_loss = -jnp.mean(weight_t * logp_t * advantages_t)
    vf_loss = 0.5 * jnp.mean(weight_t * jnp.square(v_t - value_targets_t))
    entropy = jnp.mean(weight_t * entropy_t)
    total = policy_loss + vf_loss_coeff * vf_loss - entropy_coeff * entropy
    return total, {"total_loss": total, "policy_loss": policy_loss, "vf_loss": vf_loss,
                   "entropy": entropy}


def clipped_surrogate_loss(ratio_t: jax.Array, advantages_t: jax.Array, epsilon: float,
                           mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """PPO's clipped surrogate objective (Schulman et al., 2017, eq. 7) as a loss, over ``[N]``.

    ``-mean(min(ratio * A, clip(ratio, 1 - epsilon, 1 + epsilon) * A))``: the ratio earns no more
    than ``1 + epsilon`` times a positive advantage and no less than ``1 - epsilon`` times a
    negative one. Advantages are constants (no gradient flows into them).

    Args:
      ratio_t: probability ratios ``pi(a|s) / pi_old(a|s)`` of the taken actions ``[N]``.
      advantages_t: advantages ``[N]``.
      epsilon: the clipping range.
      mask: 1 at valid samples, 0 at padding ``[N]`` (``None``: all valid); means run over
        the valid samples only.

    Returns:
      ``(loss, clip_fraction)``: the loss, and the fraction of samples whose ratio lies outside
      ``[1 - epsilon, 1 + epsilon]`` (a diagnostic).
    """
    chex.assert_rank([ratio_t, advantages_t], 1)
    chex.assert_equal_shape([ratio_t, advantages_t])
    chex.assert_type([ratio_t, advantages_t], float)
    advantages_t = jax.lax.stop_gradient(advantages_t)
    surrogate = jnp.minimum(ratio_t * advantages_t,
                            jnp.clip(ratio_t, 1.0 - epsilon, 1.0 + epsilon) * advantages_t)
    clip_fraction = masked_mean((jnp.abs(ratio_t - 1.0) > epsilon).astype(jnp.float32), mask)
    return -masked_mean(surrogate, mask), clip_fraction
