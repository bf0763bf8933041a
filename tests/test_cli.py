"""The ``jrl`` command line end to end, in a temp dir."""

import base64
import json
import os
import subprocess
import sys

import pytest

from jrl.cli import main

TINY = json.dumps({"train_batch_size": 256, "rollout_fragment_length": 64,
                   "num_envs_per_worker": 4, "sgd_minibatch_size": 64, "num_sgd_iter": 2,
                   "model": {"fcnet_hiddens": [16, 16]}})


def _checkpoint_from(output: str) -> str:
    line = next(x for x in output.splitlines() if x.startswith("Checkpoint:"))
    return line.split(":", 1)[1].strip()


def test_train_then_evaluate_the_checkpoint(tmp_path, capsys):
    rc = main(["train", "--algo", "ppo", "--env", "CartPole-v1", "--config", TINY,
               "--stop", "training_iteration=2", "--local-dir", str(tmp_path), "-q"])
    assert rc == 0
    out = capsys.readouterr().out
    checkpoint = _checkpoint_from(out)
    assert os.path.basename(checkpoint) == "checkpoint_000002"
    assert f"jrl evaluate {checkpoint}" in out
    trial = os.path.dirname(checkpoint)
    for name in ("params.json", "result.json", "progress.csv"):
        assert os.path.exists(os.path.join(trial, name)), name
    with open(os.path.join(trial, "result.json")) as fh:
        assert [json.loads(line)["training_iteration"] for line in fh] == [1, 2]
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(trial))

    episodes_file = tmp_path / "episodes.jsonl"
    rc = main(["evaluate", checkpoint, "--episodes", "2", "--out", str(episodes_file)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "mean return" in out and "over 2 episodes" in out
    rows = [json.loads(line) for line in episodes_file.read_text().splitlines()]
    assert len(rows) == 2 and all(row["type"] == "SampleBatch" for row in rows)
    assert len(rows[0]["actions"]) == len(rows[0]["rewards"]) == len(rows[0]["t"])
    assert rows[0]["dones"][-1] and not any(rows[0]["dones"][:-1])
    assert base64.b64decode(rows[0]["obs"])[:4] == b"\x04\x22\x4d\x18"  # lz4 by default


def test_rollout_alias_accepts_a_results_dir_and_steps_cap(tmp_path, capsys):
    main(["train", "--algo", "DQN", "--env", "CartPole-v1", "--stop", "timesteps_total=300",
          "--config", json.dumps({"timesteps_per_iteration": 100, "learning_starts": 100}),
          "--local-dir", str(tmp_path), "-q"])
    trial = os.path.dirname(_checkpoint_from(capsys.readouterr().out))
    assert main(["rollout", trial, "--episodes", "3", "--steps", "50"]) == 0
    out = capsys.readouterr().out
    assert "no episode finished within --steps" in out or "mean return" in out


def test_experiment_file_in_rllib_format(tmp_path, capsys):
    spec = tmp_path / "exp.yaml"
    spec.write_text(
        "my-exp:\n  env: CartPole-v1\n  run: PPO\n  stop:\n    training_iteration: 1\n"
        f"  config: {TINY}\n")
    assert main(["train", "-f", str(spec), "--local-dir", str(tmp_path), "-q",
                 "--config", '{"lr": 0.001}']) == 0
    out = capsys.readouterr().out
    trial = os.path.dirname(_checkpoint_from(out))
    assert os.path.basename(os.path.dirname(trial)) == "my-exp"
    with open(os.path.join(trial, "params.json")) as fh:
        params = json.load(fh)
    assert params["lr"] == 0.001 and params["train_batch_size"] == 256


@pytest.mark.parametrize("argv, message", [
    (["train", "--algo", "PPOO", "--env", "CartPole-v1"], "unknown algorithm 'PPOO'"),
    (["train", "--algo", "PPO", "--env", "CartPol-v1"], "unknown env 'CartPol-v1'"),
    (["train", "--algo", "PPO", "--env", "CartPole-v1", "--config", '{"lrr": 1}'],
     "did you mean 'lr'"),
    (["train", "--algo", "PPO", "--env", "CartPole-v1", "--config", "{bad"], "not valid JSON"),
    (["train", "--algo", "PPO", "--env", "CartPole-v1", "--stop", "reward"], "--stop"),
    (["train", "--algo", "DQN", "--env", "Pendulum-v1"], "discrete action space"),
    (["evaluate", "/nonexistent/checkpoint_000001"], "does not exist"),
])
def test_bad_input_is_one_line_and_exit_code_2(argv, message, tmp_path, capsys):
    assert main(argv + (["--local-dir", str(tmp_path)] if argv[0] == "train" else [])) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_unknown_stop_key_is_rejected_without_losing_results(tmp_path, capsys):
    rc = main(["train", "--algo", "PPO", "--env", "CartPole-v1", "--config", TINY,
               "--stop", "episode_reward_meen=10", "--local-dir", str(tmp_path), "-q"])
    assert rc == 2
    assert "did you mean 'stop.episode_reward_mean'" in capsys.readouterr().err
    results = list(tmp_path.rglob("result.json"))
    assert results and results[0].read_text().strip()  # the iteration that ran was kept


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, capsys):
    main(["train", "--algo", "PPO", "--env", "CartPole-v1", "--config", TINY, "--stop",
          "training_iteration=1", "--local-dir", str(tmp_path), "-q"])
    checkpoint = _checkpoint_from(capsys.readouterr().out)
    with open(os.path.join(checkpoint, "metadata.json"), "w") as fh:
        fh.write("{not json")
    assert main(["evaluate", checkpoint]) == 2
    err = capsys.readouterr().err
    assert checkpoint in err and len(err.strip().splitlines()) == 1


def test_console_script_exits_2_on_bad_input(tmp_path):
    env = {**os.environ, "JRL_RESULTS_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "jrl", "train", "--algo", "nope", "--env",
                           "CartPole-v1"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("jrl: error: unknown algorithm 'nope'")
