"""Off-policy estimation of a target policy's value from logged episodes (RLlib's
``input_evaluation``): step-wise importance sampling (IS) and weighted IS (WIS).

For an episode ``r_0..r_{H-1}`` logged by a behaviour policy ``mu`` and a target policy ``pi``,
``p_t = prod_{k <= t} pi(a_k | s_k) / mu(a_k | s_k)`` and

    V_prev      = sum_t gamma^t r_t                (the behaviour policy's return)
    V_step_IS   = sum_t gamma^t p_t r_t
    V_step_WIS  = sum_t gamma^t p_t / w_t r_t,     w_t = mean of p_t over the episodes that
                                                   reach step t
    V_gain_est  = V_step_(W)IS / max(1e-8, V_prev)

each averaged over episodes (Precup et al., 2000; Thomas and Brunskill, 2016). Episodes are
given as lanes of a ``[T, B]`` batch split at ``episode_start`` flags, so every shape is static
and the whole estimate is one jittable function. ``w_t`` comes from the running sums in
``WISState``: every episode seen so far, as RLlib keeps them.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

Array = jax.Array


class WISState(NamedTuple):
    """Running sums of WIS's per-step weights.

    Attributes:
      p_sum: ``[T]`` float32, sum over episodes of ``p_t`` at in-episode step ``t``.
      count: ``[T]`` float32, number of episodes that reached step ``t``.
    """

    p_sum: Array
    count: Array


def wis_init(T: int) -> WISState:
    return WISState(jnp.zeros(T, jnp.float32), jnp.zeros(T, jnp.float32))


def _episode_index(episode_start_t: Array) -> tuple[Array, Array]:
    """In-episode step ``k`` ``[T, B]`` and the episode id of each step ``[T, B]`` (ids number
    episodes lane by lane, ``0 .. E-1``)."""

    def step(k_tm1, start):
        k = jnp.where(start, 0, k_tm1 + 1)
        return k, k

    _, k_t = jax.lax.scan(step, jnp.full(episode_start_t.shape[1], -1, jnp.int32),
                          episode_start_t)
    starts_lane_major = episode_start_t.T.reshape(-1).astype(jnp.int32)
    ids = (jnp.cumsum(starts_lane_major) - 1).reshape(episode_start_t.shape[::-1]).T
    return k_t, ids


def importance_ratios(behaviour_logp_t: Array, target_logp_t: Array,
                      episode_start_t: Array) -> Array:
    """``p_t`` ``[T, B]``: the product of ``pi / mu`` from the episode's start to step t."""
    log_ratio = target_logp_t - behaviour_logp_t

    def step(acc_tm1, xs):
        lr, start = xs
        acc = jnp.where(start, 0.0, acc_tm1) + lr
        return acc, acc

    _, acc = jax.lax.scan(step, jnp.zeros(log_ratio.shape[1], log_ratio.dtype),
                          (log_ratio, episode_start_t))
    return jnp.exp(acc)


def off_policy_estimates(r_t: Array, behaviour_logp_t: Array, target_logp_t: Array,
                         episode_start_t: Array, gamma: float, wis_state: WISState
                         ) -> tuple[dict[str, dict[str, Array]], WISState]:
    """IS and WIS estimates over the episodes of a ``[T, B]`` batch.

    Args:
      r_t: rewards ``[T, B]``.
      behaviour_logp_t: ``log mu(a_t | s_t)`` of the logged actions ``[T, B]``.
      target_logp_t: ``log pi(a_t | s_t)`` ``[T, B]``.
      episode_start_t: ``[T, B]`` bool, True at each episode's first step in its lane (and at
        ``t = 0``).
      gamma: discount.
      wis_state: running WIS sums (``wis_init(T)``), updated with this batch's episodes.

    Returns:
      ``({"is": {V_prev, V_step_IS, V_gain_est}, "wis": {V_prev, V_step_WIS, V_gain_est}},
      new_wis_state)``, each value the mean over the batch's episodes.
    """
    chex.assert_rank([r_t, behaviour_logp_t, target_logp_t, episode_start_t], 2)
    chex.assert_equal_shape([r_t, behaviour_logp_t, target_logp_t, episode_start_t])
    T, B = r_t.shape
    start = episode_start_t.at[0].set(True)
    k_t, ids = _episode_index(start)
    p_t = importance_ratios(behaviour_logp_t, target_logp_t, start)
    discount_t = jnp.asarray(gamma, r_t.dtype) ** k_t
    num_episodes = jnp.sum(start)
    mask = jnp.arange(T * B) < num_episodes

    def per_episode(x):
        return jax.ops.segment_sum(x.reshape(-1), ids.reshape(-1), num_segments=T * B)

    v_prev = per_episode(discount_t * r_t)
    v_is = per_episode(discount_t * p_t * r_t)
    p_sum = wis_state.p_sum + jax.ops.segment_sum(p_t.reshape(-1), k_t.reshape(-1),
                                                  num_segments=T)
    count = wis_state.count + jax.ops.segment_sum(jnp.ones(T * B), k_t.reshape(-1),
                                                  num_segments=T)
    w_t = (p_sum / jnp.maximum(count, 1.0))[k_t]
    v_wis = per_episode(discount_t * p_t / jnp.maximum(w_t, 1e-8) * r_t)

    def mean(x):
        return jnp.sum(jnp.where(mask, x, 0.0)) / num_episodes

    def gain(v):
        return mean(v / jnp.maximum(1e-8, v_prev))

    estimates = {
        "is": {"V_prev": mean(v_prev), "V_step_IS": mean(v_is), "V_gain_est": gain(v_is)},
        "wis": {"V_prev": mean(v_prev), "V_step_WIS": mean(v_wis), "V_gain_est": gain(v_wis)},
    }
    return estimates, WISState(p_sum, count)
