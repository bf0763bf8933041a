"""A jittable proportional prioritized replay buffer (Schaul et al., 2016).

The ring storage is the uniform buffer's (``jrl.replay.uniform``); next to it a sum tree over the
priorities makes sampling and priority updates O(log capacity) per item. The tree is one flat
array ``[2 * L]`` with ``L`` the capacity rounded up to a power of two: node ``k`` has children
``2k`` and ``2k + 1``, the root is node 1 and item ``i``'s leaf is node ``L + i``.

Leaves hold ``p_i = (|td_i| + eps) ** alpha``; item ``i`` is drawn with probability
``P(i) = p_i / sum_j p_j``. New items get the largest priority written so far, so every item is
seen at least once soon after it arrives. Importance weights are
``w_i = (N * P(i)) ** -beta / max_j w_j`` with the max over the whole filled buffer, as in the
paper (``max_j w_j`` belongs to the smallest priority, so ``w_i = (p_i / p_min) ** -beta``);
RLlib normalizes by the batch's max instead, which makes weights depend on the batch drawn.
All functions are pure and jittable; ``alpha``, ``beta`` and ``eps`` are arguments, not state.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jrl.config import field
from jrl.errors import ConfigError
from jrl.replay.uniform import ReplayState, replay_add, replay_init


class PrioritizedReplayState(NamedTuple):
    """Ring storage ``[capacity, ...]`` plus the sum tree ``[2 * L]`` over its priorities.

    Attributes:
      data, position, size: as ``ReplayState``.
      tree: sum tree; ``tree[1]`` is the total priority, ``tree[L + i]`` item ``i``'s.
      max_priority: the largest leaf value (``p ** alpha``) written so far; new items get it.
    """

    data: Any
    position: jax.Array
    size: jax.Array
    tree: jax.Array
    max_priority: jax.Array


def _num_leaves(capacity: int) -> int:
    return 1 << max(0, (capacity - 1).bit_length())


def prioritized_init(example: Any, capacity: int) -> PrioritizedReplayState:
    """An empty buffer whose items look like ``example`` (one item, no batch dim)."""
    ring = replay_init(example, capacity)
    tree = jnp.zeros((2 * _num_leaves(capacity),), jnp.float32)
    return PrioritizedReplayState(ring.data, ring.position, ring.size, tree,
                                  jnp.ones((), jnp.float32))


def prioritized_capacity(state: PrioritizedReplayState) -> int:
    return jax.tree.leaves(state.data)[0].shape[0]


def _depth(tree: jax.Array) -> int:
    return (tree.shape[0] // 2).bit_length() - 1


def tree_set(tree: jax.Array, index: jax.Array, value: jax.Array) -> jax.Array:
    """Sets leaves ``index [M]`` to ``value [M]`` and refreshes their ancestors, level by level
    (O(M log L)). With repeated indices one of the values wins and the sums stay consistent."""
    leaves = tree.shape[0] // 2
    node = index.astype(jnp.int32) + leaves
    tree = tree.at[node].set(value.astype(tree.dtype))

    def refresh(_, carry):
        tree, node = carry
        parent = node // 2
        return tree.at[parent].set(tree[2 * parent] + tree[2 * parent + 1]), parent

    tree, _ = jax.lax.fori_loop(0, _depth(tree), refresh, (tree, node))
    return tree


def tree_find(tree: jax.Array, mass: jax.Array) -> jax.Array:
    """Leaf indices ``[M]`` where the prefix sum of the leaves first exceeds ``mass [M]``."""
    leaves = tree.shape[0] // 2

    def descend(_, carry):
        node, mass = carry
        left = tree[2 * node]
        go_right = mass >= left
        return 2 * node + go_right, jnp.where(go_right, mass - left, mass)

    node, _ = jax.lax.fori_loop(0, _depth(tree), descend,
                                (jnp.ones(mass.shape, jnp.int32), mass))
    return node - leaves


def prioritized_add(state: PrioritizedReplayState, items: Any, priorities: jax.Array | None = None,
                    alpha: float = 0.6) -> PrioritizedReplayState:
    """Writes ``items`` (leading dim ``N``) at the ring position, overwriting the oldest.

    Without ``priorities`` the new items get ``max_priority``; with raw priorities ``[N]``
    (``|td| + eps``, e.g. computed by the worker that sampled them) they get ``priorities **
    alpha``.
    """
    capacity = prioritized_capacity(state)
    n = jax.tree.leaves(items)[0].shape[0]
    index = (state.position + jnp.arange(n)) % capacity
    ring = replay_add(ReplayState(state.data, state.position, state.size), items)
    if priorities is None:
        leaf = jnp.broadcast_to(state.max_priority, (n,))
        max_priority = state.max_priority
    else:
        leaf = jnp.asarray(priorities, jnp.float32) ** alpha
        max_priority = jnp.maximum(state.max_priority, jnp.max(leaf))
    return PrioritizedReplayState(ring.data, ring.position, ring.size,
                                  tree_set(state.tree, index, leaf), max_priority)


def prioritized_update(state: PrioritizedReplayState, index: jax.Array, priorities: jax.Array,
                       alpha: float = 0.6) -> PrioritizedReplayState:
    """Sets items ``index [M]`` to raw priorities ``[M]`` (``|td| + eps``)."""
    leaf = jnp.asarray(priorities, jnp.float32) ** alpha
    return state._replace(tree=tree_set(state.tree, index, leaf),
                          max_priority=jnp.maximum(state.max_priority, jnp.max(leaf)))


def td_priorities(td_error: jax.Array, eps: float) -> jax.Array:
    """Raw priorities ``|td| + eps`` ``[N]``."""
    return jnp.abs(td_error) + eps


def prioritized_sample(state: PrioritizedReplayState, key: jax.Array, batch_size: int,
                       beta: jax.Array | float) -> tuple[Any, jax.Array, jax.Array]:
    """Draws ``batch_size`` items proportionally to priority (stratified: one draw from each of
    ``batch_size`` equal slices of the total mass).

    Returns:
      ``(items, index [B], weight [B])`` with the normalized importance weights.
    """
    total = state.tree[1]
    size = jnp.maximum(state.size, 1)
    u = jax.random.uniform(key, (batch_size,))
    mass = (jnp.arange(batch_size) + u) * (total / batch_size)
    # Rounding can push a draw past the last filled leaf; those leaves hold no mass.
    index = jnp.minimum(tree_find(state.tree, mass), size - 1)
    leaves = state.tree.shape[0] // 2
    filled = jnp.arange(leaves) < size
    p_min = jnp.min(jnp.where(filled, state.tree[leaves:], jnp.inf))
    p = state.tree[leaves + index]
    weight = (jnp.maximum(p, 1e-30) / jnp.maximum(p_min, 1e-30)) ** (-beta)
    items = jax.tree.map(lambda buf: buf[index], state.data)
    return items, index, weight.astype(jnp.float32)


def beta_at(beta: float, final_beta: float, annealing_timesteps: int,
            env_steps: jax.Array) -> jax.Array:
    """Importance exponent annealed linearly from ``beta`` to ``final_beta``."""
    return optax.linear_schedule(beta, final_beta, max(1, annealing_timesteps))(env_steps)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PrioritizedReplayConfig:
    """Prioritized replay settings (RLlib names), mixed into off-policy algorithm configs.

    Attributes:
      prioritized_replay: sample replay items proportionally to their TD error's priority and
        weight their losses by importance weights (needs ``update`` to report
        ``metrics["td_error"]`` ``[N]``).
      prioritized_replay_alpha: priority exponent (0: uniform).
      prioritized_replay_beta: importance-weight exponent at timestep 0.
      final_prioritized_replay_beta: importance-weight exponent after the annealing.
      prioritized_replay_beta_annealing_timesteps: env steps over which beta anneals linearly.
      prioritized_replay_eps: added to ``|td_error|`` so no item's priority is 0.
    """

    prioritized_replay: bool = False
    prioritized_replay_alpha: float = field(0.6, min=0.0)
    prioritized_replay_beta: float = field(0.4, min=0.0)
    final_prioritized_replay_beta: float = field(0.4, min=0.0)
    prioritized_replay_beta_annealing_timesteps: int = field(20_000, min=1)
    prioritized_replay_eps: float = field(1e-6, gt=0.0)


class NStepReplayMixin:
    """``validate`` and ``updates_per_fragment`` of configs with ``n_step``,
    ``rollout_fragment_length``, ``training_intensity``, ``train_batch_size`` and the worker
    counts (DQN, DDPG, TD3, SAC and their Ape-X variants)."""

    def validate(self) -> None:
        if self.n_step > self.rollout_fragment_length:
            raise ConfigError(f"config key 'n_step' ({self.n_step}) must be <= "
                              f"rollout_fragment_length ({self.rollout_fragment_length})")
        buffer_size = getattr(self, "buffer_size", None)
        if buffer_size is not None and buffer_size < self.train_batch_size:
            raise ConfigError(f"config key 'buffer_size' ({buffer_size}) must be >= "
                              f"train_batch_size ({self.train_batch_size}): a replay batch is "
                              "drawn from the buffer")

    @property
    def updates_per_fragment(self) -> int:
        """Learner steps after each sampled fragment of ``rollout_fragment_length * num_envs``."""
        if self.training_intensity is None:
            return 1
        steps = self.rollout_fragment_length * self.num_envs_per_worker * max(1, self.num_workers)
        return max(1, round(self.training_intensity * steps / self.train_batch_size))


def config_beta(config: Any, env_steps: jax.Array) -> jax.Array:
    """The importance exponent ``config`` (a ``PrioritizedReplayConfig``) gives at ``env_steps``."""
    return beta_at(config.prioritized_replay_beta, config.final_prioritized_replay_beta,
                   config.prioritized_replay_beta_annealing_timesteps, env_steps)
