"""``jrl plot``: learning curves from results directories (``pip install 'jrl[plot]'``).

Reads each run's ``result.json`` (or ``progress.csv``) and ``params.json``, groups runs that
differ only in their seed (same algorithm, env and other config), and draws per group the mean
curve with a band: min-max across the group's seeds and trials, or the standard error. A run of
several vmapped seeds (``num_seeds``, the jitted path) counts as one curve per seed.

    jrl plot ~/jrl_results/default --x timesteps_total --y episode_reward_mean --out curves.png
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jrl.errors import ConfigError, DataError
from jrl.logger import result_value

X_KEYS = ("timesteps_total", "time_total_s", "training_iteration")
BANDS = ("minmax", "stderr", "none")
# Config keys that differ between runs of one experiment without making a different one.
_NOT_GROUPING = ("seed", "callbacks", "output", "log_level", "num_seeds")
_GRID_POINTS = 200


@dataclass
class Run:
    """One results directory: its config and its rows (one per iteration)."""

    path: str
    params: dict
    rows: list[dict] = field(default_factory=list)

    @property
    def algo(self) -> str:
        if self.params.get("algo"):
            return str(self.params["algo"])
        return os.path.basename(self.path.rstrip(os.sep)).split("_")[0]


def find_runs(paths: Sequence[str]) -> list[Run]:
    """Every results directory (one holding ``result.json`` or ``progress.csv``) at or below
    ``paths``, except the per-seed ``seed_<i>/`` logs of vmapped runs (their parent's rows carry
    every seed)."""
    runs: list[Run] = []
    for path in paths:
        path = os.path.expanduser(path)
        if not os.path.isdir(path):
            raise ConfigError(f"'{path}' is not a directory (give results or experiment dirs)")
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not (d.startswith("seed_") and d[5:].isdigit())
                             and not d.startswith("checkpoint"))
            if "result.json" in files or "progress.csv" in files:
                runs.append(_load_run(root, files))
    runs = [run for run in runs if run.rows]
    if not runs:
        raise DataError(f"no results (result.json or progress.csv) under {', '.join(paths)}")
    return runs


def _load_run(root: str, files: list[str]) -> Run:
    params: dict = {}
    if "params.json" in files:
        try:
            with open(os.path.join(root, "params.json"), encoding="utf-8") as f:
                params = json.load(f) or {}
        except (OSError, json.JSONDecodeError):
            params = {}
    rows: list[dict] = []
    if "result.json" in files:
        with open(os.path.join(root, "result.json"), encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a run cut off mid-write: keep what was complete
    else:
        with open(os.path.join(root, "progress.csv"), encoding="utf-8", newline="") as f:
            rows = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]
    return Run(root, params if isinstance(params, dict) else {}, rows)


def _number(text: str) -> Any:
    try:
        return float(text)
    except (TypeError, ValueError):
        return text


def _value(row: Mapping[str, Any], key: str) -> float:
    value = row.get(key) if key in row else result_value(row, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def curves(run: Run, x: str, y: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(x, y)`` arrays of a run, one per seed for vmapped runs (``seeds/<y>`` lists)."""
    xs = np.array([_value(row, x) for row in run.rows])
    per_seed = [row.get("seeds", {}).get(y) if isinstance(row.get("seeds"), Mapping) else None
                for row in run.rows]
    if all(isinstance(v, list) and v for v in per_seed) and \
            len({len(v) for v in per_seed}) == 1:
        ys = np.array(per_seed, dtype=float)  # [iterations, seeds]
        return [_finite(xs, ys[:, i]) for i in range(ys.shape[1])]
    return [_finite(xs, np.array([_value(row, y) for row in run.rows]))]


def _finite(xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = np.isfinite(xs) & np.isfinite(ys)
    return xs[keep], ys[keep]


def group_key(run: Run) -> tuple[str, str]:
    """``(algorithm, config without the seed)`` as a sortable key."""
    config = {k: v for k, v in run.params.items() if k not in _NOT_GROUPING and k != "algo"}
    return run.algo, json.dumps(config, sort_keys=True, default=str)


def _labels(groups: dict[tuple[str, str], list[Run]]) -> dict[tuple[str, str], str]:
    """``PPO CartPole-v1`` plus the config values that differ between groups of the same
    algorithm and env."""
    configs = {key: json.loads(key[1]) for key in groups}
    labels = {}
    for key, config in configs.items():
        siblings = [c for k, c in configs.items()
                    if k[0] == key[0] and c.get("env") == config.get("env")]
        varying = sorted(k for k in config if k != "env" and len(
            {json.dumps(c.get(k), sort_keys=True) for c in siblings}) > 1)
        parts = [key[0], *([str(config["env"])] if config.get("env") else [])]
        parts += [f"{k}={json.dumps(config[k], sort_keys=True)}" for k in varying]
        labels[key] = " ".join(parts)
    return labels


def aggregate(curve_list: list[tuple[np.ndarray, np.ndarray]], band: str
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Mean and band of several curves on a common x grid (where every curve has data)."""
    curve_list = [(x, y) for x, y in curve_list if len(x)]
    if len(curve_list) == 1:
        x, y = curve_list[0]
        return x, y, None, None
    lo = max(float(x.min()) for x, _ in curve_list)
    hi = min(float(x.max()) for x, _ in curve_list)
    if hi <= lo:  # no common range: fall back to the longest curve
        x, y = max(curve_list, key=lambda c: len(c[0]))
        return x, y, None, None
    grid = np.linspace(lo, hi, _GRID_POINTS)
    values = np.stack([np.interp(grid, *_sorted(x, y)) for x, y in curve_list])
    mean = values.mean(axis=0)
    if band == "minmax":
        return grid, mean, values.min(axis=0), values.max(axis=0)
    if band == "stderr":
        err = values.std(axis=0, ddof=1) / math.sqrt(len(values))
        return grid, mean, mean - err, mean + err
    return grid, mean, None, None


def _sorted(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(x, kind="stable")
    return x[order], y[order]


def plot_results(paths: Sequence[str], *, x: str = "timesteps_total",
                 y: Sequence[str] = ("episode_reward_mean",), out: str = "curves.png",
                 band: str = "minmax", title: str | None = None) -> Any:
    """Draws learning curves of the runs under ``paths`` into ``out`` (PNG, SVG or PDF).

    Args:
      paths: results directories and/or experiment directories holding them.
      x: ``timesteps_total``, ``time_total_s`` or ``training_iteration``.
      y: result keys (nested ones as ``a/b``); one panel each.
      out: the image file to write.
      band: ``minmax`` (range across seeds and trials), ``stderr`` or ``none``.

    Returns:
      The matplotlib ``Figure``: one mean line per group and panel.
    """
    if x not in X_KEYS:
        raise ConfigError(f"--x must be one of {', '.join(X_KEYS)}, got '{x}'")
    if band not in BANDS:
        raise ConfigError(f"--band must be one of {', '.join(BANDS)}, got '{band}'")
    if not y:
        raise ConfigError("give at least one --y key")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("jrl plot needs matplotlib: pip install 'jrl[plot]'") from None
    runs = find_runs(paths)
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault(group_key(run), []).append(run)
    labels = _labels(groups)
    fig, axes = plt.subplots(len(y), 1, figsize=(7, 3.6 * len(y)), squeeze=False)
    drawn = 0
    for ax, key in zip(axes[:, 0], y, strict=True):
        for group, group_runs in sorted(groups.items()):
            curve_list = [c for run in group_runs for c in curves(run, x, key) if len(c[0])]
            if not curve_list:
                continue
            grid, mean, low, high = aggregate(curve_list, band)
            n = len(curve_list)
            label = labels[group] + (f" ({n} seeds/trials)" if n > 1 else "")
            (line,) = ax.plot(grid, mean, label=label)
            if low is not None:
                ax.fill_between(grid, low, high, color=line.get_color(), alpha=0.2, lw=0)
            drawn += 1
        ax.set_xlabel(x)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize="small")
    if not drawn:
        plt.close(fig)
        raise DataError(f"no run has numbers for {', '.join(y)} against {x}")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    directory = os.path.dirname(os.path.abspath(out))
    os.makedirs(directory, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return fig
