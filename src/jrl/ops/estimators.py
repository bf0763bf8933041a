"""Off-policy estimation of a target policy's value from logged episodes (RLlib's
``input_evaluation``): step-wise importance sampling (IS) and weighted IS (WIS).

For an episode ``r_0..r_{H-1}`` logged by a behaviour policy ``mu`` and a target policy ``pi``,
``p_t = prod_{k <= t} pi(a_k | s_k) / mu(a_k | s_k)`` and

    V_prev      = sum_t gamma^t r_t                (the behaviour policy's return)
    V_step_IS   = sum_t gamma^t p_t r_t
    V_step_WIS  = sum_t gamma^t p_t / w_t r_t,     w_t = mean of p_t over the episodes seen so
                                                   far (this one included) that reach step t
    V_gain_est  = V_step_(W)IS / max(1e-8, V_prev)

(Precup et al., 2000; Thomas and Brunskill, 2016). As in RLlib, the estimates are made one whole
episode at a time, in the order the episodes arrive, and ``w_t`` comes from running sums over
every episode seen so far (``WISState``). Episodes have any length, so this runs on the host in
NumPy; only the target policy's log-probabilities need the (jitted) policy.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class WISState(NamedTuple):
    """Running sums of WIS's per-step weights (they grow with the longest episode seen).

    Attributes:
      p_sum: ``[H]`` float64, sum over episodes of ``p_t`` at in-episode step ``t``.
      count: ``[H]`` float64, number of episodes that reached step ``t``.
    """

    p_sum: np.ndarray
    count: np.ndarray


def wis_init() -> WISState:
    return WISState(np.zeros(0), np.zeros(0))


def importance_ratios(behaviour_logp_t: np.ndarray, target_logp_t: np.ndarray) -> np.ndarray:
    """``p_t`` ``[H]``: the product of ``pi / mu`` from the episode's start to step t."""
    return np.exp(np.cumsum(np.asarray(target_logp_t, np.float64)
                            - np.asarray(behaviour_logp_t, np.float64)))


def episode_estimates(r_t: np.ndarray, behaviour_logp_t: np.ndarray, target_logp_t: np.ndarray,
                      gamma: float, wis_state: WISState
                      ) -> tuple[dict[str, dict[str, float]], WISState]:
    """IS and WIS estimates of one episode.

    Args:
      r_t: rewards ``[H]``.
      behaviour_logp_t: ``log mu(a_t | s_t)`` of the logged actions ``[H]``.
      target_logp_t: ``log pi(a_t | s_t)`` ``[H]``.
      gamma: discount.
      wis_state: running WIS sums, updated with this episode before its estimate is made.

    Returns:
      ``({"is": {V_prev, V_step_IS, V_gain_est}, "wis": {V_prev, V_step_WIS, V_gain_est}},
      new_wis_state)``.
    """
    r_t = np.asarray(r_t, np.float64)
    if not (r_t.ndim == 1 and np.shape(behaviour_logp_t) == r_t.shape
            and np.shape(target_logp_t) == r_t.shape):
        raise ValueError(f"an episode's rewards and log-probabilities must be [H] arrays of one "
                         f"length, got {r_t.shape}, {np.shape(behaviour_logp_t)}, "
                         f"{np.shape(target_logp_t)}")
    H = len(r_t)
    p_t = importance_ratios(behaviour_logp_t, target_logp_t)
    size = max(H, len(wis_state.p_sum))
    p_sum = np.zeros(size)
    count = np.zeros(size)
    p_sum[:len(wis_state.p_sum)] = wis_state.p_sum
    count[:len(wis_state.count)] = wis_state.count
    p_sum[:H] += p_t
    count[:H] += 1.0
    w_t = p_sum[:H] / count[:H]
    discount_t = gamma ** np.arange(H, dtype=np.float64)
    v_prev = float(np.sum(discount_t * r_t))
    v_is = float(np.sum(discount_t * p_t * r_t))
    v_wis = float(np.sum(discount_t * p_t / np.maximum(w_t, 1e-8) * r_t))
    denominator = max(1e-8, v_prev)
    estimates = {
        "is": {"V_prev": v_prev, "V_step_IS": v_is, "V_gain_est": v_is / denominator},
        "wis": {"V_prev": v_prev, "V_step_WIS": v_wis, "V_gain_est": v_wis / denominator},
    }
    return estimates, WISState(p_sum, count)


def episode_bounds(eps_id: np.ndarray, t: np.ndarray, terminated: np.ndarray) -> np.ndarray:
    """Indices where a new episode starts in a stream of steps ``[N]``: at the first step, where
    ``t`` restarts or does not follow on, where ``eps_id`` changes, and after a terminal step."""
    eps_id, t, terminated = (np.asarray(x) for x in (eps_id, t, terminated))
    new = np.ones(len(t), bool)
    if len(t) > 1:
        new[1:] = ((eps_id[1:] != eps_id[:-1]) | (t[1:] != t[:-1] + 1) | (t[1:] == 0)
                   | terminated[:-1].astype(bool))
    return np.flatnonzero(new)
