"""The contract every registered algorithm keeps (as optax tests every optimizer the same way).

For each algorithm in ``jrl.registry.algorithm_names()`` and each env it supports, with a tiny
config (``tests/conftest.py``'s ``SMALL_CONFIGS``):

- the ``TrainState`` keeps its structure, shapes and dtypes through learner steps;
- ``update`` traces once when jitted, for batches the record's ``example_batch`` makes (the kind
  its execution plan feeds it), and so does the plan's own loop;
- learner metrics are finite;
- ``act`` returns actions of the spec's shape and dtype, with and without exploration;
- a checkpoint restores bit-identical state and identical greedy actions;
- a checkpoint of another algorithm (or another network) is refused with ``CheckpointError``.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrl
from jrl import registry

DISCRETE_ENV = "CartPole-v1"
CONTINUOUS_ENV = "Pendulum-v1"
# Algorithms that only handle discrete actions; every other one is also checked on Pendulum.
DISCRETE_ONLY = {"DQN", "APEX"}
# Algorithms that only handle continuous actions; every other one is also checked on CartPole.
CONTINUOUS_ONLY = {"DDPG", "TD3", "APEX_DDPG"}

CASES = [(name, DISCRETE_ENV) for name in registry.algorithm_names()
         if name not in CONTINUOUS_ONLY] + [
    (name, CONTINUOUS_ENV) for name in registry.algorithm_names() if name not in DISCRETE_ONLY]


def _abstract(tree):
    """Structure, shape, dtype and weak type of every leaf (what decides whether jit retraces)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(
        np.shape(x), jnp.asarray(x).dtype, weak_type=getattr(jax.typeof(x), "weak_type", False)),
        tree)


def _assert_finite(metrics: dict, where: str) -> None:
    assert metrics, f"{where}: no metrics"
    for key, value in metrics.items():
        assert np.all(np.isfinite(np.asarray(value))), f"{where}: metric {key}={value} not finite"


def _raw_observations(trainer, n: int, seed: int = 0) -> list:
    space = trainer.workers.local_worker().env.single_observation_space
    space.seed(seed)
    return [space.sample() for _ in range(n)]


def _batches(trainer, count: int) -> list:
    """``count`` learner batches from the algorithm record's ``example_batch``."""
    definition = registry.get_algorithm_def(trainer.algo_name)
    keys = jax.random.split(jax.random.PRNGKey(0), count)
    return [definition.example_batch(trainer.algo_config, trainer.spec, key) for key in keys]


def test_every_registered_algorithm_has_a_small_test_config(small_config):
    for name in registry.algorithm_names():
        small_config(name)  # raises KeyError naming the algorithm when missing


@pytest.mark.parametrize("algo", sorted(DISCRETE_ONLY & set(registry.algorithm_names())))
def test_discrete_only_algorithm_rejects_continuous_actions(algo, small_config):
    with pytest.raises(jrl.ConfigError, match="discrete"):
        jrl.Trainer(algo, env=CONTINUOUS_ENV, config=small_config(algo), log_to_disk=False)


@pytest.mark.parametrize("algo", sorted(CONTINUOUS_ONLY & set(registry.algorithm_names())))
def test_continuous_only_algorithm_rejects_discrete_actions(algo, small_config):
    with pytest.raises(jrl.ConfigError, match="continuous"):
        jrl.Trainer(algo, env=DISCRETE_ENV, config=small_config(algo), log_to_disk=False)


@pytest.mark.parametrize("algo,env", CASES, ids=[f"{a}-{e}" for a, e in CASES])
class TestAlgorithmContract:

    @pytest.fixture
    def trainer(self, algo, env, make_trainer):
        return make_trainer(algo, env)

    def test_state_keeps_structure_shapes_and_dtypes_through_training(self, trainer, algo):
        assert trainer.algorithm.name == algo
        initial = _abstract(trainer.state)
        # The trainer's own execution plan, with an update that fails if the plan retraces it.
        trainer.algorithm = trainer.algorithm._replace(
            update=chex.assert_max_traces(trainer.algorithm.update, n=1))
        definition = registry.get_algorithm_def(algo)
        plan = registry.plan_class(definition.plan)(definition, trainer.algorithm,
                                                    trainer.workers, trainer.algo_config,
                                                    trainer.spec)
        state, learner_steps = trainer.state, 0
        for _ in range(40):
            state, metrics, steps = plan.step(state)
            assert steps > 0
            if metrics is not None:
                _assert_finite(metrics, "plan step")
                learner_steps += 1
            if learner_steps >= 3:
                break
        assert learner_steps >= 3, "the plan never ran the learner"
        assert jax.tree.structure(state) == jax.tree.structure(trainer.state)
        chex.assert_trees_all_equal(_abstract(state), initial)
        assert int(state.num_updates) > int(trainer.state.num_updates)

    def test_update_traces_once_and_reports_finite_metrics(self, trainer):
        batches = _batches(trainer, 3)
        update = jax.jit(chex.assert_max_traces(trainer.algorithm.update, n=1))
        state = trainer.state
        initial = _abstract(state)
        for batch in batches:
            state, metrics = update(state, batch)
            _assert_finite(metrics, "update")
        chex.assert_trees_all_equal(_abstract(state), initial)
        assert int(state.num_updates) == int(trainer.state.num_updates) + len(batches)
        changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), state.params,
                               trainer.state.params)
        assert any(jax.tree.leaves(changed)), "update left every parameter unchanged"

    @pytest.mark.parametrize("explore", [True, False])
    def test_act_returns_actions_of_the_spec(self, trainer, explore):
        spec = trainer.spec
        worker = trainer.workers.local_worker()
        n = 5
        obs = np.stack([worker.preprocessor.transform(o) for o in _raw_observations(trainer, n)])
        policy = trainer.algorithm.policy(trainer.state)
        assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(policy))
        act = jax.jit(trainer.algorithm.act, static_argnums=3)
        for key in (jax.random.PRNGKey(1), jax.random.PRNGKey(2)):
            action, extras = act(policy, obs, key, explore)
            assert action.shape == (n, *spec.action_shape)
            assert action.dtype == np.dtype(spec.action_dtype)
            if spec.discrete:
                assert np.all((np.asarray(action) >= 0) & (np.asarray(action) < spec.num_actions))
            for name, value in extras.items():
                assert np.shape(value)[0] == n, f"extras[{name!r}] is not batched"
                assert np.all(np.isfinite(np.asarray(value))), f"extras[{name!r}] not finite"
        if not explore:  # greedy actions do not depend on the key
            a1, _ = act(policy, obs, jax.random.PRNGKey(1), False)
            a2, _ = act(policy, obs, jax.random.PRNGKey(99), False)
            np.testing.assert_array_equal(a1, a2)
        single = trainer.compute_action(_raw_observations(trainer, 1, seed=3)[0], explore=explore)
        assert worker.action_space.contains(np.asarray(single, dtype=worker.action_space.dtype))

    def test_checkpoint_restores_identical_state_and_actions(self, trainer, tmp_path):
        trainer.train()
        path = trainer.save(str(tmp_path))
        restored = jrl.Trainer.from_checkpoint(path, log_to_disk=False)
        try:
            assert restored.algo_name == trainer.algo_name
            assert restored.iteration == trainer.iteration
            assert restored.timesteps_total == trainer.timesteps_total
            assert jax.tree.structure(restored.state) == jax.tree.structure(trainer.state)
            for a, b in zip(jax.tree.leaves(trainer.state), jax.tree.leaves(restored.state),
                            strict=True):
                assert np.asarray(a).dtype == np.asarray(b).dtype
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
            for obs in _raw_observations(trainer, 8, seed=4):
                np.testing.assert_array_equal(trainer.compute_action(obs, explore=False),
                                              restored.compute_action(obs, explore=False))
        finally:
            restored.stop()

    def test_checkpoint_of_another_network_is_refused(self, trainer, tmp_path, make_trainer,
                                                      algo, env, other_network):
        path = trainer.save(str(tmp_path))
        other = make_trainer(algo, env, **other_network(algo))
        with pytest.raises(jrl.CheckpointError):
            other.restore(path)


# Each algorithm's checkpoint offered to the next one in the (cyclic) list of names.
_NAMES = registry.algorithm_names()


@pytest.mark.parametrize("saved,loader", [
    (a, _NAMES[(i + 1) % len(_NAMES)]) for i, a in enumerate(_NAMES) if len(_NAMES) > 1])
def test_checkpoint_of_another_algorithm_is_refused(saved, loader, make_trainer, tmp_path):
    env = {name: CONTINUOUS_ENV if name in CONTINUOUS_ONLY else DISCRETE_ENV
           for name in (saved, loader)}
    path = make_trainer(saved, env[saved]).save(str(tmp_path))
    with pytest.raises(jrl.CheckpointError, match=saved):
        make_trainer(loader, env[loader]).restore(path)
    trainer_cls = registry.get_trainer_class(loader)
    with pytest.raises(jrl.CheckpointError, match=saved):
        trainer_cls.from_checkpoint(path, log_to_disk=False)
