"""Adding an algorithm is one file and one registry line: a random-search hill climber defined
here, registered from this file alone, trains through ``jrl.Trainer`` (gymnasium workers and
the on-policy plan) and through the fully-jitted loop on a JAX env."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrl
from jrl import registry
from jrl.algorithms.examples import train_batch_example
from jrl.config import CommonConfig, field
from jrl.types import Algorithm, AlgorithmDef, EnvSpec, Transition


@dataclasses.dataclass(frozen=True, kw_only=True)
class HillClimbConfig(CommonConfig):
    """Attributes:
      noise_stdev: scale of the Gaussian step around the best weights.
    """

    noise_stdev: float = field(0.5, min=0.0)
    train_batch_size: int = field(256, min=1)
    rollout_fragment_length: int = field(64, min=1)
    num_envs_per_worker: int = field(4, min=1)


class HillClimbState(NamedTuple):
    """Attributes:
      params: the linear policy being tried, ``[obs_dim, num_actions]`` float32.
      best_params: the best weights so far, ``[obs_dim, num_actions]`` float32.
      best_score: their score (minus the termination rate), float32 scalar.
      key: PRNG key.
      num_updates: updates so far, int32 scalar.
    """

    params: jax.Array
    best_params: jax.Array
    best_score: jax.Array
    key: jax.Array
    num_updates: jax.Array


class HillClimbPolicy(NamedTuple):
    params: jax.Array


def make_hill_climb(config: HillClimbConfig, networks: Any = None, spec: EnvSpec | None = None,
                    axis_name: str | None = None) -> Algorithm:
    dim = int(np.prod(spec.obs_shape))

    def init(key):
        key, init_key = jax.random.split(key)
        w = 0.1 * jax.random.normal(init_key, (dim, spec.num_actions))
        return HillClimbState(w, w, jnp.asarray(-jnp.inf, jnp.float32), key,
                              jnp.zeros((), jnp.int32))

    def update(state: HillClimbState, batch: Transition):
        score = -jnp.mean(batch.terminated.astype(jnp.float32))
        better = score >= state.best_score
        best = jnp.where(better, state.params, state.best_params)
        best_score = jnp.where(better, score, state.best_score)
        key, noise_key = jax.random.split(state.key)
        candidate = best + config.noise_stdev * jax.random.normal(noise_key, best.shape)
        new = HillClimbState(candidate, best, best_score, key, state.num_updates + 1)
        return new, {"score": score, "best_score": best_score}

    def act(policy, obs, key, explore):
        logits = obs.reshape((obs.shape[0], -1)).astype(jnp.float32) @ policy.params
        return jnp.argmax(logits, axis=-1).astype(jnp.int32), {}

    return Algorithm(init=init, update=update, act=act,
                     policy=lambda state: HillClimbPolicy(state.params), name="HILL_CLIMB")


ALGORITHM_DEF = AlgorithmDef(name="HILL_CLIMB", config_class=HillClimbConfig,
                             make=make_hill_climb, plan="on_policy",
                             example_batch=train_batch_example, model="deterministic")


@pytest.fixture
def hill_climb():
    registry.register_algorithm(ALGORITHM_DEF)  # the one registry line
    yield ALGORITHM_DEF
    registry.unregister_algorithm("HILL_CLIMB")


def test_toy_algorithm_trains_through_the_trainer(hill_climb):
    trainer = jrl.Trainer("HILL_CLIMB", env="CartPole-v1", log_to_disk=False)
    try:
        scores = [trainer.train()["info"]["learner"]["default_policy"]["best_score"]
                  for _ in range(4)]
        assert np.all(np.diff(scores) >= 0), scores
        assert int(trainer.state.num_updates) == 4
        assert trainer.get_policy().model.actions([np.zeros(4, np.float32)]).shape == (1,)
        assert trainer.compute_action(np.zeros(4, np.float32)) in (0, 1)
        assert type(trainer).__name__ == "Trainer"
        assert jrl.get_trainer_class("hill_climb").__name__ == "HILL_CLIMBTrainer"
    finally:
        trainer.stop()


def test_toy_algorithm_trains_in_the_jitted_loop(hill_climb):
    pytest.importorskip("gymnax")
    trainer = jrl.Trainer("HILL_CLIMB", env="gymnax:CartPole-v1", log_to_disk=False,
                          config={"num_seeds": 2, "timesteps_per_iteration": 1024})
    try:
        result = trainer.train()
        assert result["num_seeds"] == 2
        assert result["timesteps_this_iter"] >= 1024
        assert np.isfinite(result["info"]["learner"]["default_policy"]["best_score"])
    finally:
        trainer.stop()


def test_toy_algorithm_keeps_the_shared_contract(hill_climb):
    spec = EnvSpec(obs_shape=(4,), num_actions=2)
    config = HillClimbConfig()
    algorithm = hill_climb.make(config, None, spec)
    update = jax.jit(algorithm.update)
    state = algorithm.init(jax.random.PRNGKey(0))
    for key in jax.random.split(jax.random.PRNGKey(1), 3):
        state, metrics = update(state, hill_climb.example_batch(config, spec, key))
        assert all(np.isfinite(np.asarray(v)) for v in metrics.values())
    assert int(state.num_updates) == 3
