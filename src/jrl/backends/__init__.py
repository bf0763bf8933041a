"""Trainer backends: how one training iteration is produced.

``WorkerBackend`` samples gymnasium envs with rollout workers and runs the algorithm's execution
plan; ``JaxEnvBackend`` runs env, ``act`` and ``update`` inside one compiled loop (JAX envs,
``vmap`` over seeds). Both offer the same small interface the ``Trainer`` facade uses:

- ``definition``, ``algorithm``, ``spec``, ``observation_space``, ``action_space``,
  ``callbacks``, ``policy_map`` and ``workers`` (a ``WorkerSet``, or None inside the jitted loop);
- ``state``: the learner's ``TrainState`` (read and replaced by the Trainer);
- ``run_iteration(start, iteration, timesteps_total) -> Iteration``;
- ``rollout_episodes(...)``: episodes outside training (evaluation, recording);
- ``checkpoint_state()`` / ``load_checkpoint_state(tree)``: everything a checkpoint holds;
- ``stop()``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jrl.errors import NumericError


class Iteration(NamedTuple):
    """What one backend iteration produced.

    Attributes:
      env_steps: env steps sampled.
      learner: learner metrics averaged over the iteration's updates (floats).
      episodes: statistics of the episodes finished (``episode_reward``, ``episode_len``, ...).
      num_episodes: episodes finished (``len(episodes)``, or the jitted loop's count).
      extra: further result keys (plan statistics, per-seed results, worker health).
    """

    env_steps: int
    learner: dict
    episodes: list[dict]
    num_episodes: int
    extra: dict


def jit_init(init: Any):
    """``jax.jit(init)`` without XLA's backend optimizations: init runs once, and they would
    cost more compile time (~1 s of a cold start on 2 cores) than they could ever save."""
    return jax.jit(init, compiler_options={"xla_backend_optimization_level": 0})


def all_finite(tree: Any) -> jax.Array:
    """Whether every float leaf of ``tree`` is finite (jittable: compute it inside a compiled
    loop and pass it to ``check_update`` as ``finite``, saving a program)."""
    leaves = [jnp.isfinite(x).all() for x in jax.tree.leaves(tree)
              if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


_all_finite = jax.jit(all_finite)


def _state_finite(state: Any) -> bool:
    """``all_finite(state)``; on the CPU read in place with NumPy instead of compiling a program
    for it (a few hundred ms of a cold start on 2 cores)."""
    leaves = [x for x in jax.tree.leaves(state)
              if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    on_host = all(not isinstance(x, jax.Array) or (
        x.is_fully_addressable and all(d.platform == "cpu" for d in x.devices()))
        for x in leaves)
    if on_host:
        return all(bool(np.isfinite(np.asarray(x)).all()) for x in leaves)
    return bool(_all_finite(state))


def check_update(learner: dict, state: Any, iteration: int, finite: Any = None) -> None:
    """Raises ``NumericError`` naming ``iteration`` and the metric when an update's metrics
    (losses, gradient norms) or the new learner ``state`` hold NaN or infinity (``finite``:
    ``all_finite(state)`` when already computed)."""
    # losses and gradient norms first: they are where a bad update shows first
    names = sorted(learner, key=lambda k: (not ("loss" in k or "grad" in k), k))
    for name in names:
        value = learner[name]
        if isinstance(value, float) and not math.isfinite(value):
            raise NumericError(
                f"iteration {iteration}: the learner's '{name}' is {value} (non-finite); the "
                "update was discarded and the state kept from before it (lower lr, set "
                "grad_clip, or check the rewards)")
    if not bool(_state_finite(state) if finite is None else finite):
        raise NumericError(
            f"iteration {iteration}: the update made the learner state (weights or optimizer "
            "state) non-finite; it was discarded and the state kept from before it (lower lr, "
            "set grad_clip, or check the rewards)")
