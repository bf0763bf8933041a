"""The seed's command lines, as printed (with a stop criterion and a small network added so they
finish in seconds; today's CartPole-v1 where the old CartPole-v0 is gone)."""

from __future__ import annotations

import glob
import json
import os

import pytest

from jrl.cli import main

TINY_CNN = {"conv_filters": [[4, [8, 8], 8], [8, [4, 4], 4]], "fcnet_hiddens": [16]}


def _checkpoint_from(output: str) -> str:
    line = next(x for x in output.splitlines() if x.startswith("Checkpoint:"))
    return line.split(":", 1)[1].strip()


def test_rollout_with_run_and_env_as_rllib_prints_them(tmp_path, capsys):
    import jrl

    trainer = jrl.Trainer("DQN", env="CartPole-v1", config={"model": {"fcnet_hiddens": [16]}},
                          local_dir=str(tmp_path))
    checkpoint = trainer.save()
    trainer.stop()
    assert main(["rollout", checkpoint, "--run", "DQN", "--env", "CartPole-v1",
                 "--steps", "10000"]) == 0
    out = capsys.readouterr().out
    assert "mean return" in out and "DQN on CartPole-v1" in out
    assert main(["rollout", checkpoint, "--run", "PPO", "--env", "CartPole-v1"]) == 2
    assert "--run PPO does not match the checkpoint's algorithm DQN" in capsys.readouterr().err


def test_train_with_debug_traces_output(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # test_cli's small PPO settings: the same compiled programs (compilation cache)
    config = ('{"output": "debug_traces", "output_compress_columns": [], '
              '"train_batch_size": 256, "rollout_fragment_length": 64, "num_envs_per_worker": 4, '
              '"sgd_minibatch_size": 64, "num_sgd_iter": 2, "model": {"fcnet_hiddens": [16, 16]}}')
    assert main(["train", "--run=PPO", "--env=CartPole-v1", f"--config={config}",
                 "--stop", "training_iteration=1", "--local-dir", str(tmp_path / "res"),
                 "-q"]) == 0
    out = capsys.readouterr().out
    assert f"Experiences: {tmp_path / 'debug_traces'}" in out
    files = glob.glob(str(tmp_path / "debug_traces" / "*.json"))
    assert files
    row = json.loads(open(files[0]).readline())
    assert row["type"] == "SampleBatch" and isinstance(row["obs"], list)  # not compressed


def test_train_atari_with_monitor_records_videos_in_the_results_dir(tmp_path, capsys):
    pytest.importorskip("ale_py")
    pytest.importorskip("moviepy")
    config = {"num_workers": 0, "monitor": True, "rollout_fragment_length": 50,
              "train_batch_size": 50, "model": TINY_CNN}
    assert main(["train", "--env=PongDeterministic-v4", "--run=A2C",
                 "--config", json.dumps(config), "--stop", "timesteps_total=50",
                 "--local-dir", str(tmp_path), "-q"]) == 0
    trial = os.path.dirname(_checkpoint_from(capsys.readouterr().out))
    assert glob.glob(os.path.join(trial, "videos", "*.mp4"))


@pytest.mark.slow
def test_seed_pong_a2c_command_with_two_workers_and_monitor(tmp_path, capsys):
    """``jrl train --env=PongDeterministic-v4 --run=A2C --config '{"num_workers": 2,
    "monitor": true}'`` (~1 min on 2 cores: Ray and two workers compiling the CNN)."""
    pytest.importorskip("ale_py")
    pytest.importorskip("moviepy")
    config = {"num_workers": 2, "monitor": True, "rollout_fragment_length": 50,
              "train_batch_size": 100, "model": TINY_CNN}
    assert main(["train", "--env=PongDeterministic-v4", "--run=A2C",
                 "--config", json.dumps(config), "--stop", "timesteps_total=200",
                 "--local-dir", str(tmp_path), "-q"]) == 0
    trial = os.path.dirname(_checkpoint_from(capsys.readouterr().out))
    assert glob.glob(os.path.join(trial, "videos", "*.mp4"))
