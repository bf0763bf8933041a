"""Result files (result.json, progress.csv, TensorBoard, params.json), run dirs and the reporter."""

from __future__ import annotations

import csv
import datetime
import glob
import io
import json
import math
import os
import re
import struct

import jax.numpy as jnp
import numpy as np
import pytest

from jrl.logger import ProgressReporter, ResultLogger, flatten_result, make_logdir, progress_line


def make_result(iteration: int, reward: float = 10.0, **extra) -> dict:
    return {
        "training_iteration": iteration,
        "timesteps_total": 1000 * iteration,
        "episode_reward_mean": reward,
        "episode_reward_min": np.float32(1.0),
        "episode_reward_max": jnp.asarray(20.0),
        "episodes_total": np.int64(5 * iteration),
        "time_total_s": 1.5 * iteration,
        "time_this_iter_s": 1.5,
        "done": False,
        "hist_stats": {"episode_reward": [1.0, 20.0]},
        "custom_metrics": {"pole_angle_mean": 0.01 * iteration},
        "info": {"learner": {"default_policy": {"policy_loss": np.float32(-0.25)}}},
        "config": {"lr": 1e-3},
        **extra,
    }


def read_events(path: str) -> list:
    """Events of a TensorBoard file (TFRecord framing: length, crc, payload, crc)."""
    from tensorboardX.proto import event_pb2

    events = []
    with open(path, "rb") as f:
        data = f.read()
    offset = 0
    while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset:offset + 8])
        payload = data[offset + 12:offset + 12 + length]
        offset += 12 + length + 4
        event = event_pb2.Event()
        event.ParseFromString(payload)
        events.append(event)
    return events


def test_flatten_result_joins_keys_and_keeps_scalars():
    flat = flatten_result(make_result(2, note="x", nothing=None, vector=np.ones(3)))
    assert flat["info/learner/default_policy/policy_loss"] == pytest.approx(-0.25)
    assert flat["custom_metrics/pole_angle_mean"] == pytest.approx(0.02)
    assert flat["episodes_total"] == 10 and type(flat["episodes_total"]) is int
    assert type(flat["episode_reward_max"]) is float
    assert flat["note"] == "x"
    assert not any(key.startswith("hist_stats") for key in flat)
    assert "nothing" not in flat and "vector" not in flat
    assert list(flatten_result({"a": {"b": 1}}, sep=".")) == ["a.b"]


def test_result_logger_writes_every_file(tmp_path):
    logdir = str(tmp_path / "run")
    with ResultLogger(logdir, {"env": "CartPole-v1", "lr": np.float32(0.5), "hiddens": (8, 8)}) as log:
        log.log(make_result(1, reward=float("nan")))
        log.log(make_result(2, reward=12.5, new_key=1))
        log.log({**make_result(3, reward=float("inf")), "custom_metrics": {}})

    params = json.loads((tmp_path / "run" / "params.json").read_text())
    assert params == {"env": "CartPole-v1", "lr": 0.5, "hiddens": [8, 8]}

    lines = (tmp_path / "run" / "result.json").read_text().splitlines()
    results = [json.loads(line) for line in lines]
    assert [r["training_iteration"] for r in results] == [1, 2, 3]
    assert results[0]["episode_reward_mean"] is None and results[1]["episode_reward_mean"] == 12.5
    assert results[0]["hist_stats"] == {"episode_reward": [1.0, 20.0]}
    assert results[0]["config"] == {"lr": 1e-3}

    with open(tmp_path / "run" / "progress.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    assert "info/learner/default_policy/policy_loss" in rows[0]
    assert not any(k.startswith("config") for k in rows[0])
    # a key that first appears at iteration 2 still gets its column (header rewritten)
    assert [row["new_key"] for row in rows] == ["", "1", ""]
    assert float(rows[1]["episode_reward_mean"]) == 12.5
    assert math.isnan(float(rows[0]["episode_reward_mean"]))
    assert rows[2]["custom_metrics/pole_angle_mean"] == ""

    event_files = glob.glob(str(tmp_path / "run" / "events.out.tfevents.*"))
    assert event_files and all(os.path.getsize(f) > 0 for f in event_files)
    scalars = {(value.tag, event.step): value.simple_value
               for f in event_files for event in read_events(f) for value in event.summary.value}
    assert scalars[("ray/tune/episode_reward_mean", 2000)] == 12.5
    assert scalars[("ray/tune/custom_metrics/pole_angle_mean", 1000)] == pytest.approx(0.01)
    assert ("ray/tune/info/learner/default_policy/policy_loss", 3000) in scalars
    assert ("ray/tune/episode_reward_mean", 1000) not in scalars  # NaN is not plotted


def test_reopening_logdir_appends(tmp_path):
    logdir = str(tmp_path / "run")
    with ResultLogger(logdir, {"seed": 0}) as log:
        log.log(make_result(1))
    with open(os.path.join(logdir, "result.json"), "a") as f:
        f.write('{"training_iteration": 2, "cut')  # a crash in the middle of a line
    with ResultLogger(logdir, {"seed": 0}) as log:
        log.log(make_result(3))

    lines = (tmp_path / "run" / "result.json").read_text().splitlines()
    assert json.loads(lines[0])["training_iteration"] == 1
    assert json.loads(lines[-1])["training_iteration"] == 3
    with open(tmp_path / "run" / "progress.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["training_iteration"] for row in rows] == ["1", "3"]


def test_progress_csv_keeps_keys_that_appear_later(tmp_path):
    logdir = str(tmp_path / "run")
    with ResultLogger(logdir) as log:
        log.log(make_result(1))
    with ResultLogger(logdir) as log:  # a resumed run whose results grow evaluation keys
        log.log(make_result(2, evaluation={"episode_reward_mean": 475.0}))
        log.log(make_result(3))
    with open(tmp_path / "run" / "progress.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["training_iteration"] for row in rows] == ["1", "2", "3"]
    assert [row["evaluation/episode_reward_mean"] for row in rows] == ["", "475.0", ""]
    assert rows[0]["episode_reward_mean"] == "10.0"


def test_make_logdir_names_and_uniqueness(tmp_path):
    first = make_logdir(str(tmp_path), "exp", "PPO", "gymnax:CartPole-v1")
    second = make_logdir(str(tmp_path), "exp", "PPO", "gymnax:CartPole-v1")
    assert os.path.isdir(first) and os.path.isdir(second) and first != second
    assert os.path.dirname(first) == str(tmp_path / "exp")
    match = re.fullmatch(r"PPO_gymnax_CartPole-v1_(\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d)(_\d+)?",
                         os.path.basename(first))
    assert match, first
    datetime.datetime.strptime(match.group(1), "%Y-%m-%d_%H-%M-%S")

    nested = make_logdir(str(tmp_path), "exp", "DQN", "ALE/Pong-v5")
    assert os.path.basename(nested).startswith("DQN_ALE_Pong-v5_")


def test_make_logdir_defaults_to_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    path = make_logdir(None, "default", "PPO", "CartPole-v1")
    assert path.startswith(str(tmp_path / "jrl_results" / "default" / "PPO_CartPole-v1_"))


def test_progress_reporter_prints_plain_lines_when_not_a_tty():
    stream = io.StringIO()
    with ProgressReporter(stream=stream) as reporter:
        reporter.update(make_result(1, reward=123.25))
        reporter.update(make_result(2, reward=float("nan")))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert "iter 1" in lines[0] and "123" in lines[0] and "timesteps 1000" in lines[0]
    assert "reward nan" in lines[1]
    assert progress_line({}).startswith("iter - |")


def test_progress_reporter_quiet_prints_nothing():
    stream = io.StringIO()
    with ProgressReporter(enabled=False, stream=stream) as reporter:
        reporter.update(make_result(1))
    assert stream.getvalue() == ""


def test_progress_reporter_live_table_on_terminal():
    stream = io.StringIO()
    with ProgressReporter(stream=stream, force_terminal=True) as reporter:
        reporter.update(make_result(4, reward=55.5))
    assert "55.5" in stream.getvalue()


def test_logger_without_held_files_or_tensorboard(tmp_path):
    """Per-seed loggers of vmapped runs: files opened per result, no event files."""
    logger = ResultLogger(str(tmp_path), {"seed_index": 3}, tensorboard=False, hold_files=False)
    def held():  # this process's open files under tmp_path
        fds = os.listdir("/proc/self/fd")
        return [p for p in (os.path.realpath(f"/proc/self/fd/{fd}") for fd in fds)
                if p.startswith(str(tmp_path))]

    assert held() == []
    logger.log({"timesteps_total": 10, "episode_reward_mean": 1.5})
    assert held() == []  # nothing held between results
    logger.log({"timesteps_total": 20, "episode_reward_mean": 2.5, "evaluation": {"r": 3.0}})
    logger.close()
    rows = [json.loads(line) for line in (tmp_path / "result.json").read_text().splitlines()]
    assert [r["timesteps_total"] for r in rows] == [10, 20]
    with open(tmp_path / "progress.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [row["episode_reward_mean"] for row in table] == ["1.5", "2.5"]
    assert table[0]["evaluation/r"] == "" and table[1]["evaluation/r"] == "3.0"
    assert not list(tmp_path.glob("events.out.tfevents*"))
