"""Faults have answers: SIGTERM saves like Ctrl-C, Ctrl-C during start-up is one line, every
corrupt checkpoint is one line naming it. The fault suite (``-m slow``) kills workers, SIGKILLs
savers and corrupts checkpoints many times over; ``benchmarks/fault_suite.py`` prints its table.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import pytest

import jrl
from jrl.cli import main

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import fault_suite  # noqa: E402


def _train_argv(small_config, tmp_path, *extra: str) -> list[str]:
    return ["train", "--algo", "PPO", "--env", "CartPole-v1", "-q", "--local-dir", str(tmp_path),
            "--config", json.dumps(small_config("PPO")), *extra]


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(small_config, tmp_path, capsys,
                                                      monkeypatch):
    train = jrl.Trainer.train

    def train_then_sigterm(self):
        result = train(self)
        if self.iteration == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # what a scheduler sends before preempting
        return result

    monkeypatch.setattr(jrl.Trainer, "train", train_then_sigterm)
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exit_info:
        main(_train_argv(small_config, tmp_path, "--stop", "training_iteration=100"))
    assert exit_info.value.code == 143
    out, err = capsys.readouterr()
    assert "Terminated (SIGTERM): saving a checkpoint" in err and "Traceback" not in err
    checkpoint = next(line.split(":", 1)[1].strip() for line in out.splitlines()
                      if line.startswith("Checkpoint:"))
    assert checkpoint.endswith("checkpoint_000002")
    assert signal.getsignal(signal.SIGTERM) is handler  # main put the old handler back


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_during_start_up_is_one_line(signum, code, small_config, tmp_path, capsys,
                                               monkeypatch):
    def interrupted_start(*args, **kwargs):
        os.kill(os.getpid(), signum)

    monkeypatch.setattr(jrl.Trainer, "__init__", interrupted_start)
    assert main(_train_argv(small_config, tmp_path)) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nothing was saved" in err


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory) -> str:
    from conftest import SMALL_CONFIGS

    directory = tmp_path_factory.mktemp("good")
    with jrl.Trainer("PPO", env="CartPole-v1", config=SMALL_CONFIGS["PPO"],
                     log_to_disk=False) as trainer:
        trainer.train()
        return trainer.save(str(directory))


@pytest.mark.parametrize("kind", sorted(fault_suite.CORRUPTIONS))
def test_corrupt_checkpoint_is_one_line_naming_it(kind, good_checkpoint, tmp_path, capsys):
    path = fault_suite.corrupt_copy(good_checkpoint, str(tmp_path), kind)
    assert main(["evaluate", path, "--episodes", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and path in err and err.startswith("jrl: error:"), err


# -- the fault suite ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_killing_one_of_four_workers_every_five_iterations(ray_cluster):
    report = fault_suite.kill_workers(iterations=50, kill_every=5)
    assert report["faults_survived"] == report["faults_injected"] == 10
    assert report["short_batches"] == 0
    assert report["final_return"] >= 0.9 * report["fault_free_return"]


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_sigkill_during_saves_always_leaves_a_restorable_checkpoint(tmp_path):
    report = fault_suite.kill_during_saves(str(tmp_path), trials=100)
    assert report["restored"] == report["trials"] == 100
    assert report["tmp_dirs_left"] == 0


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_corrupt_checkpoints_in_a_fresh_process_print_one_line(good_checkpoint, tmp_path):
    report = fault_suite.corrupt_checkpoints_cli(good_checkpoint, str(tmp_path))
    assert report["clean_errors"] == report["corrupted"] == len(fault_suite.CORRUPTIONS)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_hung_env_worker_is_replaced_after_sample_timeout(ray_cluster, tmp_path):
    report = fault_suite.hung_worker(str(tmp_path))
    assert report["num_worker_restarts"] >= 1 and report["timesteps_this_iter"] == 256
