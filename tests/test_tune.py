"""Ray Tune: algorithms as Trainables by name, grid search, checkpoints, function trainables."""


import flax.linen as nn
import pytest

import jrl
from phase_env import PhaseEnv

ray = pytest.importorskip("ray")
from ray import tune  # noqa: E402

SMALL_PPO = {"env": "CartPole-v1", "train_batch_size": 128, "rollout_fragment_length": 64,
             "num_envs_per_worker": 2, "sgd_minibatch_size": 64, "num_sgd_iter": 1,
             "model": {"fcnet_hiddens": [8]}}




def test_tuner_runs_a_registered_algorithm_by_name_with_grid_search(ray_cluster, tmp_path):
    tuner = tune.Tuner(
        "PPO",
        param_space={**SMALL_PPO, "lr": tune.grid_search([1e-3, 1e-4])},
        tune_config=tune.TuneConfig(metric="episode_reward_mean", mode="max"),
        run_config=tune.RunConfig(
            storage_path=str(tmp_path), name="grid", stop={"training_iteration": 2},
            checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=True), verbose=0))
    results = tuner.fit()
    assert len(results) == 2 and not results.errors
    assert sorted(r.config["lr"] for r in results) == [1e-4, 1e-3]
    for r in results:
        assert r.metrics["training_iteration"] == 2
        assert r.metrics["timesteps_total"] >= 256
        assert r.checkpoint is not None
    restored = jrl.Trainer.from_checkpoint(results[0].checkpoint.path, log_to_disk=False)
    assert restored.iteration == 2
    restored.stop()


class TuneTwoHeads(nn.Module):
    """A custom actor-critic for the trial test: ``(logits, value)``."""

    num_outputs: int
    hidden: int = 8

    @nn.compact
    def __call__(self, obs):
        x = nn.tanh(nn.Dense(self.hidden)(obs))
        return nn.Dense(self.num_outputs)(x), nn.Dense(1)(x)[:, 0]


def test_trial_actors_get_the_drivers_custom_models_and_envs(ray_cluster, tmp_path):
    # Registered in the driver only, after Tune's trainables were registered: the trial's
    # actor (another process) must still find both.
    jrl.ModelCatalog.register_custom_model("tune_two_heads", TuneTwoHeads)
    jrl.register_env("jrl-test-tune-phase", lambda cfg: PhaseEnv(cfg))
    try:
        config = {**SMALL_PPO, "env": "jrl-test-tune-phase", "env_config": {"episode_len": 5},
                  "model": {"custom_model": "tune_two_heads",
                            "custom_model_config": {"hidden": 4}}}
        (result,) = tune.Tuner("PPO", param_space=config, run_config=tune.RunConfig(
            storage_path=str(tmp_path), name="custom", stop={"training_iteration": 1},
            verbose=0)).fit()
    finally:
        jrl.ModelCatalog.unregister("tune_two_heads")
    assert result.error is None, result.error
    assert result.metrics["timesteps_total"] >= 128


def test_trial_resources_cover_driver_and_workers():
    pgf = jrl.tune.resources_for("PPO", {**SMALL_PPO, "num_workers": 2,
                                         "num_cpus_per_worker": 1, "num_gpus": 0.5})
    assert pgf.bundles == [{"CPU": 1.0, "GPU": 0.5}, {"CPU": 1.0}, {"CPU": 1.0}]


def curriculum_train(config):
    """RLlib's curriculum example: a function trainable that raises the env's phase."""
    jrl.register_env("jrl-test-curriculum", lambda cfg: PhaseEnv(cfg))
    trainer = jrl.Trainer("PPO", env="jrl-test-curriculum", config=config, log_to_disk=False)
    phase = 0
    for _ in range(3):
        result = trainer.train()
        result["phase"] = phase
        jrl.tune.report(result, trainer=trainer, checkpoint=True)
        phase += 1
        trainer.workers.foreach_worker(
            lambda w, p=phase: w.foreach_env(lambda env: env.set_phase(p)))
    trainer.stop()


def test_function_trainable_curriculum_reports_each_result(ray_cluster, tmp_path):
    config = {k: v for k, v in SMALL_PPO.items() if k != "env"}
    config["env_config"] = {"episode_len": 5, "reward_offset": 1.0}
    tuner = tune.Tuner(curriculum_train, param_space=config,
                       run_config=tune.RunConfig(storage_path=str(tmp_path), name="curr",
                                                 verbose=0))
    (result,) = tuner.fit()
    history = result.metrics_dataframe
    assert list(history["phase"]) == [0, 1, 2]
    # rewards follow the phase once it changes (episodes in progress may straddle a change)
    assert history["episode_reward_mean"].iloc[-1] > history["episode_reward_mean"].iloc[0]
    assert result.checkpoint is not None


def test_cli_runs_grid_search_experiment_files_through_tune(ray_cluster, tmp_path, capsys):
    from jrl.cli import main

    spec = tmp_path / "grid.yaml"
    spec.write_text(
        "grid:\n  env: CartPole-v1\n  run: PPO\n  stop: {training_iteration: 1}\n"
        "  config:\n    train_batch_size: 128\n    rollout_fragment_length: 64\n"
        "    num_envs_per_worker: 2\n    sgd_minibatch_size: 64\n    num_sgd_iter: 1\n"
        "    model: {fcnet_hiddens: [8]}\n    lr: {grid_search: [0.001, 0.0001]}\n")
    assert main(["train", "-f", str(spec), "--local-dir", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "Experiment 'grid' (PPO): 2 trials" in out
    assert out.count("jrl evaluate ") == 2


def test_cli_rejects_an_invalid_grid_point_before_starting(tmp_path, capsys):
    from jrl.cli import main

    spec = tmp_path / "bad.yaml"
    spec.write_text("bad:\n  env: CartPole-v1\n  run: PPO\n"
                    "  config:\n    gamma: {grid_search: [0.9, 1.5]}\n")
    assert main(["train", "-f", str(spec), "--local-dir", str(tmp_path)]) == 2
    assert "config key 'gamma' must be <= 1.0, got 1.5" in capsys.readouterr().err
