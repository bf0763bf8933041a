"""``jrl plot``: runs grouped by config across seeds, one mean line (and band) per group."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from jrl.cli import main

pytest.importorskip("matplotlib")


def _write_run(path, params, rows):
    os.makedirs(path)
    with open(os.path.join(path, "params.json"), "w") as f:
        json.dump(params, f)
    with open(os.path.join(path, "result.json"), "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def _rows(slope, n=6, seeds=None):
    rows = []
    for i in range(1, n + 1):
        row = {"training_iteration": i, "timesteps_total": 1000 * i, "time_total_s": 0.5 * i,
               "episode_reward_mean": slope * i,
               "info": {"learner": {"default_policy": {"entropy": 1.0 / i}}}}
        if seeds:
            row["seeds"] = {"episode_reward_mean": [slope * i + s for s in range(seeds)]}
        rows.append(row)
    return rows


@pytest.fixture
def experiment(tmp_path):
    root = tmp_path / "exp"
    # PPO: two seeds of one config (one group), plus one with another lr (its own group)
    for seed in (0, 1):
        _write_run(str(root / f"PPO_CartPole-v1_{seed}"),
                   {"algo": "PPO", "env": "CartPole-v1", "lr": 5e-4, "seed": seed},
                   _rows(10 + seed))
    _write_run(str(root / "PPO_CartPole-v1_lr"),
               {"algo": "PPO", "env": "CartPole-v1", "lr": 1e-3, "seed": 0}, _rows(20))
    # A vmapped run of 4 seeds (the jitted path): one group of four curves; its seed_<i>/
    # logs are not runs of their own.
    vmapped = root / "DQN_gymnax_CartPole-v1"
    _write_run(str(vmapped), {"algo": "DQN", "env": "gymnax:CartPole-v1", "num_seeds": 4},
               _rows(5, seeds=4))
    _write_run(str(vmapped / "seed_0"), {"seed_index": 0}, _rows(5))
    # a run cut off mid-write keeps its complete lines
    with open(vmapped / "result.json", "a") as f:
        f.write('{"training_iteration": 7, "timest')
    return root


def test_plot_draws_one_line_per_config_and_panel_with_bands(experiment, tmp_path, capsys):
    from jrl.plot import find_runs, plot_results

    assert len(find_runs([str(experiment)])) == 4
    out = tmp_path / "curves.png"
    figure = plot_results([str(experiment)], y=["episode_reward_mean",
                                                "info/learner/default_policy/entropy"],
                          out=str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    reward_ax, entropy_ax = figure.axes
    labels = sorted(line.get_label() for line in reward_ax.get_lines())
    assert labels == ["DQN gymnax:CartPole-v1 (4 seeds/trials)",
                      "PPO CartPole-v1 lr=0.0005 (2 seeds/trials)", "PPO CartPole-v1 lr=0.001"]
    # per-seed lists hold only the reward: the vmapped run's entropy is its one mean curve
    assert len(entropy_ax.get_lines()) == 3 and len(entropy_ax.collections) == 1
    ppo = next(line for line in reward_ax.get_lines() if "(2 seeds" in line.get_label())
    x, y = ppo.get_data()
    np.testing.assert_allclose(y, 10.5 * x / 1000)  # mean of slopes 10 and 11
    assert len(reward_ax.collections) == 2  # min-max bands of the two multi-run groups

    assert main(["plot", str(experiment), "--x", "training_iteration", "--out",
                 str(tmp_path / "cli.png")]) == 0
    assert "3 curves" in capsys.readouterr().out
    assert (tmp_path / "cli.png").stat().st_size > 1000


def test_plot_errors_are_one_line(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert main(["plot", str(tmp_path)]) == 2
    assert "no results" in capsys.readouterr().err
