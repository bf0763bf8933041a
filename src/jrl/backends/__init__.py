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

from typing import Any, NamedTuple

import jax


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
