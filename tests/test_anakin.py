"""Fully-jitted training on gymnax envs with the same Algorithm triples."""

import jax
import numpy as np
import pytest

from jrl.errors import EnvError
from jrl.registry import make_algorithm, parse_config

pytest.importorskip("gymnax")

from jrl.execution.anakin import make_anakin  # noqa: E402
from jrl.rollout.jax_envs import make_jax_env  # noqa: E402

PPO_CONFIG = {"gamma": 0.99, "lambda": 0.95, "lr": 2.5e-3, "num_envs_per_worker": 4,
              "rollout_fragment_length": 128, "train_batch_size": 512, "sgd_minibatch_size": 128,
              "num_sgd_iter": 4, "model": {"fcnet_hiddens": [32, 32]}}


@pytest.fixture(scope="module")
def cartpole():
    return make_jax_env("gymnax:CartPole-v1")


def test_gymnax_adapter_separates_truncation_from_termination(cartpole):
    obs, state = cartpole.reset(jax.random.PRNGKey(0))
    assert obs.shape == cartpole.spec.obs_shape == (4,)
    step = jax.jit(cartpole.step)
    truncations = terminations = 0
    key = jax.random.PRNGKey(1)
    for _ in range(600):  # a constant action ends episodes by termination quickly
        key, k = jax.random.split(key)
        out = step(k, state, 0)
        state = out.state
        terminations += int(out.terminated)
        truncations += int(out.truncated)
        assert not (out.terminated and out.truncated)
    assert terminations > 0 and truncations == 0


def test_unknown_gymnax_env_is_a_clear_error():
    with pytest.raises(EnvError, match="did you mean 'gymnax:CartPole-v1'"):
        make_jax_env("gymnax:CartPol-v1")


def test_anakin_uses_the_same_update_as_the_gymnasium_path(cartpole):
    config = parse_config("PPO", PPO_CONFIG)
    anakin = make_anakin("PPO", cartpole, config, iterations=2)
    reference = make_algorithm("PPO", config, cartpole.spec)
    assert anakin.algorithm.update.__code__ is reference.update.__code__


@pytest.mark.timeout(300)
def test_vmapped_seeds_differ_and_each_equals_its_single_seed_run(cartpole):
    config = parse_config("PPO", PPO_CONFIG)
    anakin = make_anakin("PPO", cartpole, config, iterations=3)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    runners, metrics = jax.jit(jax.vmap(anakin.train_chunk))(jax.vmap(anakin.init)(keys))
    params = jax.tree.leaves(runners.train_state.params)
    assert not np.allclose(params[0][0], params[0][1])
    single, single_metrics = jax.jit(anakin.train_chunk)(anakin.init(keys[1]))
    for batched, one in zip(params, jax.tree.leaves(single.train_state.params), strict=True):
        np.testing.assert_allclose(batched[1], one, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(metrics["total_loss"][1], single_metrics["total_loss"],
                               rtol=1e-4, atol=1e-5)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("algo, config, iterations, target", [
    ("PPO", PPO_CONFIG, 60, 150.0),
    pytest.param("DQN", {"num_envs_per_worker": 8, "learning_starts": 1000,
                         "rollout_fragment_length": 4,
                         "exploration_config": {"epsilon_timesteps": 5000}}, 700, 100.0,
                 marks=pytest.mark.slow),  # CI time; jitted DQN stays in test_resume.py
])
def test_anakin_learns_cartpole(cartpole, algo, config, iterations, target):
    """Smoke: the jitted loop improves well past a random policy (~22 per episode)."""
    anakin = make_anakin(algo, cartpole, parse_config(algo, config), iterations=iterations)
    runner, metrics = jax.jit(anakin.train_chunk)(anakin.init(jax.random.PRNGKey(0)))
    tail = slice(-max(1, iterations // 10), None)
    episodes = np.asarray(metrics["episodes"][tail]).sum()
    mean_return = np.asarray(metrics["episode_reward_sum"][tail]).sum() / max(episodes, 1)
    assert mean_return >= target


TRAINER_CONFIG = {**PPO_CONFIG, "num_seeds": 2, "timesteps_per_iteration": 1024}


def test_trainer_on_a_jax_env_advances_one_chunk_per_train_call(tmp_path):
    import jrl

    trainer = jrl.Trainer("PPO", env="gymnax:CartPole-v1", config=TRAINER_CONFIG,
                          local_dir=str(tmp_path))
    try:
        result = trainer.train()
        assert result["timesteps_this_iter"] == 1024  # per seed: 2 iterations of 4 x 128
        assert result["num_seeds"] == 2 and len(result["seeds"]["episode_reward_mean"]) == 2
        assert np.isfinite(result["info"]["learner"]["default_policy"]["total_loss"])
        for seed in (0, 1):
            lines = (tmp_path / "default").glob(f"*/seed_{seed}/result.json")
            assert [p.read_text().count("\n") for p in lines] == [1]
            # few seeds: TensorBoard per seed too (SEED_TENSORBOARD_MAX)
            assert list((tmp_path / "default").glob(f"*/seed_{seed}/events.out.tfevents*"))
        evaluation = trainer.evaluate(3)["evaluation"]
        assert evaluation["episodes_this_iter"] == 3
        action = trainer.compute_action(np.zeros(4, np.float32))
        assert trainer.get_policy().action_space.contains(int(action))
        with pytest.raises(jrl.ConfigError, match="no rollout workers"):
            trainer.workers.foreach_worker(lambda w: w)
        path = trainer.save()
        restored = jrl.Trainer.from_checkpoint(path, log_to_disk=False)
        for a, b in zip(jax.tree.leaves(trainer.backend.runner.train_state),
                        jax.tree.leaves(restored.backend.runner.train_state), strict=True):
            np.testing.assert_array_equal(a, b)
        restored.stop()
    finally:
        trainer.stop()


def test_cli_trains_and_evaluates_a_gymnax_env(tmp_path, capsys):
    import json

    from jrl.cli import main

    config = {k: v for k, v in TRAINER_CONFIG.items() if k != "num_seeds"}
    assert main(["train", "--algo", "PPO", "--env", "gymnax:CartPole-v1", "--num-seeds", "2",
                 "--config", json.dumps(config), "--stop", "timesteps_total=1024",
                 "--local-dir", str(tmp_path), "-q"]) == 0
    out = capsys.readouterr().out
    checkpoint = next(x for x in out.splitlines() if x.startswith("Checkpoint:")).split()[-1]
    assert main(["evaluate", checkpoint, "--episodes", "2"]) == 0
    assert "over 2 episodes" in capsys.readouterr().out


def test_num_seeds_on_a_gymnasium_env_is_a_clear_error():
    import jrl

    with pytest.raises(jrl.ConfigError, match="num_seeds=2 needs a JAX env"):
        jrl.Trainer("PPO", env="CartPole-v1", config={"num_seeds": 2}, log_to_disk=False)
