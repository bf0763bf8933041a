"""Temporal-difference kernels of the value-based learners (DQN, DDPG, TD3, SAC).

Each function handles a single transition (rlax style: ``q_tm1`` and ``a_tm1`` at the state the
action was taken in, ``r_t``, ``discount_t`` and ``q_t`` at the state after it); learners
``jax.vmap`` them over their replay batch. ``discount_t`` is the whole bootstrap factor
(``gamma**m`` for an ``m``-step return, 0 after termination). Targets carry no gradient.
"""

from __future__ import annotations

from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp

from jrl.ops.losses import l2_loss

Array = jax.Array
Numeric = chex.Numeric


def double_q_learning(q_tm1: Array, a_tm1: Array, r_t: Array, discount_t: Array,
                      q_t_value: Array, q_t_selector: Array) -> Array:
    """TD error of double Q-learning (van Hasselt et al., 2016) for one transition.

    ``r_t + discount_t * q_t_value[argmax q_t_selector] - q_tm1[a_tm1]``: the online network
    (``q_t_selector``) picks the bootstrap action and the target network (``q_t_value``)
    values it.

    Args:
      q_tm1: Q-values at the state the action was taken in, ``[num_actions]``.
      a_tm1: the action taken, int ``[]``.
      r_t: the (n-step) reward, ``[]``.
      discount_t: the bootstrap factor, ``[]``.
      q_t_value: Q-values at the next state that value the bootstrap action, ``[num_actions]``.
      q_t_selector: Q-values at the next state that pick it, ``[num_actions]``.

    Returns:
      The TD error, ``[]``.
    """
    chex.assert_rank([q_tm1, a_tm1, r_t, discount_t, q_t_value, q_t_selector],
                     [1, 0, 0, 0, 1, 1])
    chex.assert_type([q_tm1, a_tm1, r_t, discount_t, q_t_value, q_t_selector],
                     [float, int, float, float, float, float])
    target = r_t + discount_t * q_t_value[jnp.argmax(q_t_selector)]
    return jax.lax.stop_gradient(target) - q_tm1[a_tm1]


def q_learning(q_tm1: Array, a_tm1: Array, r_t: Array, discount_t: Array, q_t: Array) -> Array:
    """TD error of Q-learning for one transition: ``r_t + discount_t * max q_t - q_tm1[a_tm1]``.

    Args:
      q_tm1: Q-values at the state the action was taken in, ``[num_actions]``.
      a_tm1: the action taken, int ``[]``.
      r_t: the (n-step) reward, ``[]``.
      discount_t: the bootstrap factor, ``[]``.
      q_t: (target network) Q-values at the next state, ``[num_actions]``.

    Returns:
      The TD error, ``[]``.
    """
    return double_q_learning(q_tm1, a_tm1, r_t, discount_t, q_t, q_t)


def twin_q_target(r_t: Array, discount_t: Array, q_t: Array, entropy_t: Numeric = 0.0) -> Array:
    """Clipped double-Q target (Fujimoto et al., 2018) of one transition.

    ``r_t + discount_t * (min_i q_t[i] + entropy_t)``: the smallest of the target critics'
    values at the next state and action, plus SAC's entropy bonus.

    Args:
      r_t: the (n-step) reward, ``[]``.
      discount_t: the bootstrap factor, ``[]``.
      q_t: each target critic's value of the next state and action, ``[num_q]``.
      entropy_t: the entropy bonus ``-alpha * log pi(a_t | s_t)`` (SAC), ``[]``; 0 otherwise.

    Returns:
      The target, ``[]`` (no gradient).
    """
    chex.assert_rank([r_t, discount_t, q_t], [0, 0, 1])
    chex.assert_type([r_t, discount_t, q_t], float)
    return jax.lax.stop_gradient(r_t + discount_t * (jnp.min(q_t) + entropy_t))


def critic_loss(q_tm1: Array, target_tm1: Array,
                elementwise: Callable[[Array], Array] = l2_loss) -> tuple[Array, Array]:
    """Regression loss of every critic to one shared target, for one transition.

    Args:
      q_tm1: each critic's value of the state and the action taken, ``[num_q]``.
      target_tm1: the target (e.g. ``twin_q_target``), ``[]``; treated as a constant.
      elementwise: loss of a TD error (``l2_loss``: ``0.5 td^2``; or ``huber_loss``).

    Returns:
      ``(loss, td_error)``: the loss summed over the critics ``[]``, and each critic's TD error
      ``target - q`` ``[num_q]``.
    """
    chex.assert_rank([q_tm1, target_tm1], [1, 0])
    chex.assert_type([q_tm1, target_tm1], float)
    td_error = jax.lax.stop_gradient(target_tm1) - q_tm1
    return jnp.sum(elementwise(td_error)), td_error
