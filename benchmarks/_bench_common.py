"""Helpers shared by the benchmark scripts.

- machine info and the command line for a section's header (:func:`section_header`), and the
  config of a tuned-example YAML (:func:`tuned_config`);
- one measured child process per run (:func:`run_child`, :func:`write_child_record`);
- timing and memory: :class:`PausableClock`, :func:`peak_rss_mb`;
- time-to-solve, child side: the loops for jrl and stable-baselines3 (:func:`jrl_time_to_solve`,
  :func:`sb3_time_to_solve`, :func:`sb3_greedy_return`, :func:`time_to_solve_child_main`);
- time-to-solve, parent side: cold/warm compilation caches and the run grid
  (:func:`run_time_to_solve_child`, :func:`time_to_solve_runs`), and the whole ``main`` of a
  CartPole time-to-solve script (:func:`add_time_to_solve_flags`, :func:`time_to_solve_main`);
- summaries and tables: :func:`median`, :func:`median_solved`, :func:`format_run`,
  :func:`markdown_table`, :func:`time_to_solve_table`, :func:`time_to_solve_section`;
- RESULTS.md: :func:`update_section`, :func:`publish`, :func:`dump_json`.

Heavy packages (jax, jrl, torch, stable-baselines3, gymnasium) are imported inside the functions
that use them, so importing this module costs nothing and imports stay out of the timings.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVAL_EPISODES = 10
SYSTEMS = ("jrl", "jrl-warm", "sb3", "sbx")
SYSTEM_LABELS = {"jrl": "jrl, cold start (empty compilation cache)",
                 "jrl-warm": "jrl, warm compilation cache", "sb3": "SB3 (torch CPU, 1 thread)",
                 "sbx": "SBX (SB3's JAX port, same hyperparameters)"}
# Peers a time-to-solve script runs by default: SBX only where it is installed (`bench` extra).
DEFAULT_SYSTEMS = tuple(s for s in SYSTEMS
                        if s != "sbx" or importlib.util.find_spec("sbx") is not None)
PEERS = ("sb3", "sbx")

# ----------------------------------------------------------------------------------------------
# Machine info and the section header

def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (or what ``platform`` knows)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, str]:
    """Machine and package versions, read without importing the heavy packages."""
    return {
        "nproc": str(os.cpu_count()),
        "usable CPUs": str(len(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity")
        else "?",
        "CPU": cpu_model(),
        "python": platform.python_version(),
        "jax": _version("jax"),
        "jaxlib": _version("jaxlib"),
        "gymnasium": _version("gymnasium"),
        "torch": _version("torch"),
        "stable-baselines3": _version("stable-baselines3"),
        "jrl": _version("jrl"),
    }


def machine_lines() -> list[str]:
    """Markdown bullets: date, machine, load average now, package versions."""
    info = machine_info()
    load = ""
    try:
        load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        pass
    lines = [f"- date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}",
             f"- machine: {info['nproc']} CPUs (nproc; {info['usable CPUs']} usable), "
             f"{info['CPU']}"]
    if load:
        lines.append(f"- load average at start (1/5/15 min): {load}")
    lines.append(f"- python {info['python']}, jax {info['jax']} (jaxlib {info['jaxlib']}), "
                 f"gymnasium {info['gymnasium']}, torch {info['torch']}, "
                 f"stable-baselines3 {info['stable-baselines3']}, jrl {info['jrl']}")
    return lines


def command_line() -> str:
    """The command this process was started with, quoted for a shell."""
    exe = sys.executable
    try:
        exe = os.path.relpath(exe)
    except ValueError:
        pass
    return " ".join(shlex.quote(a) for a in [exe, *sys.argv])


def section_header() -> list[str]:
    """The first bullets of a results section: :func:`machine_lines` and the command."""
    return [*machine_lines(), f"- command: `{command_line()}`"]


def tuned_config(rel: str, algo: str | None = None) -> dict:
    """The ``config`` of the first entry of an RLlib tuned-example YAML.

    Args:
      rel: path of the YAML relative to the repository root, e.g. ``configs/cartpole-es.yaml``.
      algo: when given, the entry's ``run`` must name this algorithm.

    Returns:
      A fresh dict the caller may change.
    """
    import yaml

    with open(os.path.join(REPO_ROOT, rel)) as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict) or not data:
        raise SystemExit(f"{rel}: expected {{name: {{env, run, stop, config}}}}")
    name, entry = next(iter(data.items()))
    run = str(entry.get("run", algo))
    if algo is not None and run.upper() != algo:
        raise SystemExit(f"{rel}: entry '{name}' runs {run}, not {algo}")
    return dict(entry.get("config") or {})


# ----------------------------------------------------------------------------------------------
# Child processes: one measured run each, so imports, JIT caches, thread pools and memory do not
# leak between runs.

def run_child(script: str, child_args: Sequence[str], *, ident: dict[str, Any],
              timeout: float | None = None, env: dict[str, str] | None = None,
              cwd: str | None = None) -> dict:
    """Runs ``python script *child_args --child-out PATH`` and returns the record it wrote.

    The child writes one JSON object to ``PATH`` with :func:`write_child_record`.

    Args:
      script: the benchmark script to run (usually the caller's ``__file__``).
      child_args: its arguments, without ``--child-out``.
      ident: keys that name the run (e.g. system, algo, seed); they start an error record.
      timeout: seconds the child may run; ``None`` for no limit.
      env: variables set on top of this process's environment.
      cwd: the child's working directory.

    Returns:
      The child's record plus ``process_s`` (the child's wall time). When the child fails,
      times out or writes no record: ``ident`` plus ``error`` (a short reason),
      ``stderr_tail`` (where there is output) and ``process_s``.
    """
    with tempfile.NamedTemporaryFile("r", suffix=".json", delete=False) as tmp:
        path = tmp.name
    cmd = [sys.executable, os.path.abspath(script), *child_args, "--child-out", path]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                              env={**os.environ, **(env or {})})
        wall = time.perf_counter() - start
        tail = (proc.stderr or proc.stdout)[-2000:]
        if proc.returncode != 0:
            return {**ident, "error": f"exit code {proc.returncode}", "stderr_tail": tail,
                    "process_s": wall}
        try:
            with open(path) as f:
                record = json.load(f)
        except (OSError, json.JSONDecodeError):
            return {**ident, "error": "no result written", "stderr_tail": tail,
                    "process_s": wall}
        record["process_s"] = wall
        return record
    except subprocess.TimeoutExpired:
        return {**ident, "error": f"timeout after {timeout} s", "process_s": timeout}
    finally:
        if os.path.exists(path):
            os.unlink(path)


def write_child_record(path: str, record: dict) -> None:
    """Child side of :func:`run_child`: writes the run's record as JSON."""
    with open(path, "w") as f:
        json.dump(record, f)


def print_run(label: str, record: dict, summary: str, extra: str = "") -> None:
    """Prints one progress line ``[label] summary, process N s{extra}``; on an error, the
    child's stderr."""
    print(f"[{label}] {summary}, process {record['process_s']:.1f} s{extra}", flush=True)
    if "error" in record and record.get("stderr_tail"):
        print(record["stderr_tail"], file=sys.stderr)


# ----------------------------------------------------------------------------------------------
# Timing and memory

class PausableClock:
    """Accumulates wall time between ``start``/``resume`` and ``pause``."""

    def __init__(self) -> None:
        self.elapsed = 0.0
        self._t0: float | None = None

    def start(self) -> None:
        self._t0 = time.perf_counter()

    resume = start

    def pause(self) -> float:
        if self._t0 is not None:
            self.elapsed += time.perf_counter() - self._t0
            self._t0 = None
        return self.elapsed

    def read(self) -> float:
        """Time counted so far, including the running stretch."""
        extra = time.perf_counter() - self._t0 if self._t0 is not None else 0.0
        return self.elapsed + extra


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB (``ru_maxrss``, KiB on Linux)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ----------------------------------------------------------------------------------------------
# Time-to-solve, child side: one run until a greedy evaluation reaches the threshold

def jrl_time_to_solve(algo: str, env_id: str, config: dict, *, seed: int, max_steps: int,
                      eval_every: int, threshold: float,
                      eval_episodes: int = EVAL_EPISODES) -> dict:
    """Trains a jrl ``Trainer`` until a greedy evaluation reaches ``threshold``.

    The clock runs from building the trainer (JIT included) and is paused around each
    evaluation, which happens after the ``train()`` iteration that crosses the next multiple of
    ``eval_every`` env steps (or reaches ``max_steps``).

    Args:
      config: the jrl config; ``env`` and a non-JAX ``framework`` (RLlib YAMLs name tf/torch)
        are dropped, and ``seed``, ``evaluation_interval`` and ``log_level`` are set.

    Returns:
      A record: ``solved``, ``time_s``, ``env_steps``, ``build_s``, ``first_iter_s``,
      ``evals`` (``[env steps, time, mean return]`` per evaluation), ``config``,
      ``peak_rss_mb``.
    """
    import jax  # noqa: F401  (imports are not timed)
    import numpy as np  # noqa: F401

    import jrl

    config = dict(config)
    config.pop("env", None)
    if config.get("framework", "jax") != "jax":
        config.pop("framework")
    config.update(seed=seed, evaluation_interval=None, log_level="ERROR")

    clock = PausableClock()
    clock.start()
    trainer = jrl.Trainer(algo, env=env_id, config=config, log_to_disk=False)
    build_s = clock.read()
    evals, first_iter_s, solved, steps = [], None, False, 0
    next_eval = eval_every
    while True:
        t0 = clock.read()
        result = trainer.train()
        if first_iter_s is None:
            first_iter_s = clock.read() - t0
        steps = int(result["timesteps_total"])
        if steps >= next_eval or steps >= max_steps:
            clock.pause()
            reward = trainer.evaluate(eval_episodes)["evaluation"]["episode_reward_mean"]
            evals.append((steps, round(clock.elapsed, 3), reward))
            next_eval = (steps // eval_every + 1) * eval_every
            solved = reward >= threshold
            if solved or steps >= max_steps:
                break
            clock.resume()
    trainer.stop()
    return {"solved": solved, "time_s": clock.elapsed, "env_steps": steps, "build_s": build_s,
            "first_iter_s": first_iter_s, "evals": evals, "config": config,
            "peak_rss_mb": peak_rss_mb()}


def sb3_greedy_return(model: Any, env_id: str, seed: int,
                      episodes: int = EVAL_EPISODES) -> float:
    """Mean return of ``episodes`` greedy episodes of an SB3 model, stepped as one vector env."""
    import gymnasium as gym
    import numpy as np

    envs = gym.vector.SyncVectorEnv([lambda: gym.make(env_id) for _ in range(episodes)])
    try:
        obs, _ = envs.reset(seed=seed)
        returns = np.zeros(episodes)
        active = np.ones(episodes, bool)
        while active.any():
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = envs.step(action)
            returns += np.where(active, reward, 0.0)
            active &= ~(terminated | truncated)
        return float(returns.mean())
    finally:
        envs.close()


def sb3_time_to_solve(build_model: Callable[[], Any], env_id: str, *, seed: int,
                      max_steps: int, eval_every: int, threshold: float,
                      eval_episodes: int = EVAL_EPISODES) -> dict:
    """Trains an SB3 model until a greedy evaluation reaches ``threshold``.

    Torch runs on 1 thread. The clock runs from ``build_model()`` (envs, networks, optimizer)
    and is paused around each evaluation, made from a callback every ``eval_every`` env steps
    and once more at the end if the last steps were not evaluated.

    Args:
      build_model: makes the model (called with the clock running).

    Returns:
      A record with the keys of :func:`jrl_time_to_solve` but ``config`` (``first_iter_s`` is
      ``None``), plus ``torch_threads``.
    """
    import torch

    torch.set_num_threads(1)
    from stable_baselines3.common.callbacks import BaseCallback

    clock = PausableClock()
    state = {"evals": [], "solved": False, "last_eval": 0}

    def evaluate(model, steps: int) -> bool:
        clock.pause()
        reward = sb3_greedy_return(model, env_id, seed + 10_000 + len(state["evals"]),
                                   eval_episodes)
        state["evals"].append((steps, round(clock.elapsed, 3), reward))
        state["last_eval"], state["solved"] = steps, reward >= threshold
        clock.resume()
        return state["solved"]

    class EvalCallback(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps - state["last_eval"] >= eval_every:
                return not evaluate(self.model, self.num_timesteps)
            return True

    clock.start()
    model = build_model()
    build_s = clock.read()
    model.learn(total_timesteps=max_steps, callback=EvalCallback())
    if not state["solved"] and state["last_eval"] < model.num_timesteps:
        evaluate(model, model.num_timesteps)
    clock.pause()
    steps = state["evals"][-1][0] if state["evals"] else model.num_timesteps
    return {"solved": state["solved"], "time_s": clock.elapsed, "env_steps": steps,
            "build_s": build_s, "first_iter_s": None, "evals": state["evals"],
            "peak_rss_mb": peak_rss_mb(), "torch_threads": torch.get_num_threads()}


def add_time_to_solve_child_flags(parser: argparse.ArgumentParser) -> None:
    """Adds the hidden flags of a time-to-solve child (see :func:`run_time_to_solve_child`)."""
    for name, tp in [("--child-system", str), ("--child-algo", str), ("--child-seed", int),
                     ("--child-max-steps", int), ("--child-out", str)]:
        parser.add_argument(name, type=tp, default=None, help=argparse.SUPPRESS)


def time_to_solve_child_main(args: argparse.Namespace, run_jrl: Callable[..., dict],
                             run_sb3: Callable[..., dict]) -> None:
    """Child side of :func:`run_time_to_solve_child`: one run, its record written to
    ``--child-out``. The runners take ``(algo, seed, max_steps, eval_every)``."""
    if args.child_system in PEERS:  # SBX keeps SB3's API: the same runner, another library
        record = run_sb3(args.child_algo, args.child_seed, args.child_max_steps,
                         args.eval_every, library=args.child_system)
    else:
        record = run_jrl(args.child_algo, args.child_seed, args.child_max_steps,
                         args.eval_every)
    record.update(system=args.child_system, algo=args.child_algo, seed=args.child_seed,
                  max_steps=args.child_max_steps)
    write_child_record(args.child_out, record)


# ----------------------------------------------------------------------------------------------
# Time-to-solve, parent side: the (algo, seed, system) grid of children

_WARM_CACHES: dict[str, str] = {}


def warm_cache_dir(key: str, script: str, prime_args: Sequence[str], timeout: float) -> str:
    """A JAX compilation cache primed by one unmeasured child run (what a user has from their
    previous ``jrl train`` with the same config). Made once per ``key`` per process."""
    if key not in _WARM_CACHES:
        path = _WARM_CACHES[key] = tempfile.mkdtemp(prefix=f"jrl-warm-cache-{key.lower()}-")
        run_child(script, prime_args, ident={}, timeout=timeout,
                  env={"JRL_COMPILATION_CACHE_DIR": path, "PYTHONWARNINGS": "ignore"})
    return _WARM_CACHES[key]


def run_time_to_solve_child(script: str, system: str, algo: str, seed: int, max_steps: int, *,
                            eval_every: int, timeout: float, extra_args: Sequence[str] = (),
                            prime_steps: tuple[int, int] = (4096, 2048),
                            prime_timeout: float = 600.0) -> dict:
    """Runs one (system, algo, seed) time-to-solve child of ``script`` (see :func:`run_child`).

    ``jrl`` runs with an empty compilation cache of its own (cold start), ``jrl-warm`` with the
    cache one short unmeasured run of the same algo left behind (``prime_steps``: its step cap
    and evaluation interval), ``sb3`` with neither.

    Args:
      script: the benchmark script; its parser has :func:`add_time_to_solve_child_flags` and
        ``--eval-every``, and its ``main`` calls :func:`time_to_solve_child_main`.
      extra_args: further arguments for the measured and the priming child alike.
    """
    def child_args(system: str, seed: int, max_steps: int, eval_every: int) -> list[str]:
        return ["--child-system", system, "--child-algo", algo, "--child-seed", str(seed),
                "--child-max-steps", str(max_steps), "--eval-every", str(eval_every),
                *extra_args]

    env = {"PYTHONWARNINGS": "ignore", "TF_CPP_MIN_LOG_LEVEL": "3"}
    if system == "jrl":
        env["JRL_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jrl-cold-cache-")
    elif system == "jrl-warm":
        prime = child_args("jrl-warm", 100, *prime_steps)
        env["JRL_COMPILATION_CACHE_DIR"] = warm_cache_dir(algo, script, prime, prime_timeout)
    return run_child(script, child_args(system, seed, max_steps, eval_every),
                     ident={"system": system, "algo": algo, "seed": seed}, timeout=timeout,
                     env=env)


def time_to_solve_runs(script: str, algos: Sequence[str], seeds: Sequence[int],
                       systems: Sequence[str], max_steps: Callable[[str], int], *,
                       skip: Callable[[str, str], bool] | None = None,
                       **child_kwargs: Any) -> Iterator[dict]:
    """Runs the (algo, seed, system) grid through :func:`run_time_to_solve_child`, systems
    taking turns for each (algo, seed) so that a change in machine load hits them alike.

    Args:
      max_steps: the step cap of an algo.
      skip: ``skip(system, algo)`` is true for pairs not to run.
      child_kwargs: passed on (``eval_every``, ``timeout``, ...).

    Yields:
      Each run's record as soon as it is done.
    """
    for algo in algos:
        for seed in seeds:
            for system in systems:
                if skip is None or not skip(system, algo):
                    yield run_time_to_solve_child(script, system, algo, seed, max_steps(algo),
                                                  **child_kwargs)


def step_caps(max_steps: int | None, defaults: dict[str, int]) -> Callable[[str], int]:
    """The env-step cap of each algo: ``max_steps`` (the ``--max-steps`` flag) when given, else
    the algo's default."""
    return lambda algo: max_steps if max_steps else defaults[algo]


def add_time_to_solve_flags(parser: argparse.ArgumentParser, *, algos: Sequence[str],
                            default_algos: Sequence[str], default_systems: Sequence[str],
                            systems_help: str | None, max_steps_help: str,
                            out_help: str) -> None:
    """Adds the flags of a CartPole time-to-solve script and the hidden flags of its child.

    Flags: ``--algos``, ``--seeds`` (0 1 2), ``--systems`` (of :data:`SYSTEMS`),
    ``--max-steps`` (default ``None``: the per-algo caps, see :func:`step_caps`),
    ``--eval-every`` (2048), ``--timeout`` (1800 s per subprocess), ``--out``, ``--json``.
    """
    parser.add_argument("--algos", nargs="+", default=list(default_algos), type=str.upper,
                        choices=list(algos))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--systems", nargs="+", default=list(default_systems), choices=SYSTEMS,
                        help=systems_help)
    parser.add_argument("--max-steps", type=int, default=None, help=max_steps_help)
    parser.add_argument("--eval-every", type=int, default=2048,
                        help="env steps between evaluations")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per subprocess")
    parser.add_argument("--out", default=None, help=out_help)
    parser.add_argument("--json", default=None, help="also dump all per-run records to this file")
    add_time_to_solve_child_flags(parser)


def time_to_solve_main(parser: argparse.ArgumentParser, *, script: str, section: str,
                       run_jrl: Callable[..., dict], run_sb3: Callable[..., dict],
                       default_caps: dict[str, int], threshold: float, notes: Sequence[str],
                       build_note: str = "", cells_note: str = "",
                       skip: Callable[[str, str], bool] | None = None) -> None:
    """The ``main`` of a script whose parser has :func:`add_time_to_solve_flags`.

    As a child, runs one measurement (:func:`time_to_solve_child_main`). Otherwise runs the
    grid (:func:`time_to_solve_runs`), printing a line per run, and publishes
    :func:`time_to_solve_section` (given ``threshold``, ``notes``, ``build_note`` and
    ``cells_note``) under the title ``section``.
    """
    args = parser.parse_args()
    if args.child_system:
        time_to_solve_child_main(args, run_jrl, run_sb3)
        return
    caps = step_caps(args.max_steps, default_caps)
    start = time.perf_counter()
    results = []
    for r in time_to_solve_runs(script, args.algos, args.seeds, args.systems, caps, skip=skip,
                                eval_every=args.eval_every, timeout=args.timeout):
        results.append(r)
        extra = ""
        if "error" not in r and r.get("first_iter_s") is not None:
            extra = f", build {r['build_s']:.2f} s, 1st iter {r['first_iter_s']:.2f} s"
        print_run(f"{r['system']} {r['algo']} seed {r['seed']}", r, format_run(r) + extra)
    body = time_to_solve_section(args, caps, results, time.perf_counter() - start,
                                 threshold=threshold, notes=notes, build_note=build_note,
                                 cells_note=cells_note)
    dump_json(args.json, results)
    print()
    publish(args.out, section, body)


# ----------------------------------------------------------------------------------------------
# Summaries and tables

def median(values: Iterable[float]) -> float | None:
    """The median, or ``None`` for no values."""
    values = list(values)
    return statistics.median(values) if values else None


def median_solved(runs: list[dict], key: str | Callable[[dict], float]) -> float:
    """Median of ``key`` over runs, unsolved and failed runs counted as infinitely slow.

    ``key`` is a record key or a function of the record; no runs give NaN.
    """
    value = (lambda r: r[key]) if isinstance(key, str) else key
    values = [value(r) if r.get("solved") else math.inf for r in runs]
    return statistics.median(values) if values else math.nan


def format_optional(value: float | None, spec: str, missing: str = "—") -> str:
    """``format(value, spec)``, or ``missing`` for ``None``."""
    return missing if value is None else format(value, spec)


def format_seconds(x: float) -> str:
    """A time-to-solve median: ``12.3 s``, ``not solved`` (inf) or ``—`` (NaN)."""
    return "not solved" if math.isinf(x) else ("—" if math.isnan(x) else f"{x:.1f} s")


def format_run(r: dict) -> str:
    """One time-to-solve table cell: ``12.3 s (45.1k)``, not solved, or the error."""
    if "error" in r:
        return r["error"]
    if not r["solved"]:
        return f"not solved ({r['env_steps'] / 1000:.1f}k steps, {r['time_s']:.1f} s)"
    return f"{r['time_s']:.1f} s ({r['env_steps'] / 1000:.1f}k)"


def markdown_table(head: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A markdown table; cells are written with ``str``."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def time_to_solve_table(results: list[dict], algos: Sequence[str], seeds: Sequence[int], *,
                        timing_columns: bool = True) -> str:
    """The table of time-to-solve records (one row per algo and system) and, below it, the
    median time-to-solve ratio of each jrl system to SB3.

    Args:
      results: records of :func:`jrl_time_to_solve` / :func:`sb3_time_to_solve` with
        ``system``, ``algo`` and ``seed``, or error records of :func:`run_child`.
      timing_columns: add the median "build (s)" and "1st iter (s)" columns.
    """
    head = ["algo", "system", *[f"seed {s}" for s in seeds], "solved", "median time",
            "median env steps", *(["build (s)", "1st iter (s)"] if timing_columns else []),
            "peak RSS"]
    rows, ratio_lines = [], []
    for algo in algos:
        medians = {}
        for system in SYSTEMS:
            runs = [r for r in results if r["algo"] == algo and r["system"] == system]
            if not runs:
                continue
            by_seed = {r["seed"]: r for r in runs}
            ok = [r for r in runs if "error" not in r]
            med_t, med_s = median_solved(runs, "time_s"), median_solved(runs, "env_steps")
            medians[system] = med_t
            timings = []
            if timing_columns:
                builds = [r["build_s"] for r in ok]
                firsts = [r["first_iter_s"] for r in ok if r.get("first_iter_s") is not None]
                timings = [format_optional(median(builds), ".2f"),
                           format_optional(median(firsts), ".2f")]
            rss = [r["peak_rss_mb"] for r in ok]
            rows.append([
                algo, SYSTEM_LABELS[system],
                *[format_run(by_seed[s]) if s in by_seed else "—" for s in seeds],
                f"{sum(bool(r.get('solved')) for r in runs)}/{len(runs)}",
                format_seconds(med_t),
                "not solved" if math.isinf(med_s) else f"{med_s / 1000:.1f}k",
                *timings, f"{max(rss):.0f} MB" if rss else "—"])
        for peer, name in (("sb3", "SB3"), ("sbx", "SBX")):
            for system in ("jrl", "jrl-warm"):
                if system not in medians or peer not in medians:
                    continue
                a, b = medians[system], medians[peer]
                if math.isfinite(a) and math.isfinite(b) and b > 0:
                    ratio = f"{a / b:.2f}× ({system} {a:.1f} s / {name} {b:.1f} s)"
                else:
                    ratio = f"n/a ({system} {format_seconds(a)}, {name} {format_seconds(b)})"
                ratio_lines.append(
                    f"- {algo}: median time-to-solve ratio {system} / {name} = {ratio}")
    return markdown_table(head, rows) + ("\n\n" + "\n".join(ratio_lines) if ratio_lines else "")


def time_to_solve_section(args: argparse.Namespace, max_steps: Callable[[str], int],
                          results: list[dict], total_s: float, *, threshold: float,
                          notes: Sequence[str], build_note: str = "",
                          cells_note: str = "") -> str:
    """The body of a time-to-solve results section.

    Machine and command, what was timed, the step caps, where each jrl config came from (the
    records' ``config_source``), ``notes``, the wall time, then :func:`time_to_solve_table`.

    Args:
      args: the flags of :func:`add_time_to_solve_flags`.
      max_steps: the step cap of an algo.
      notes: further markdown bullets (e.g. the SB3 side's settings).
      build_note: what else building the agent includes, e.g. `` (and Ray start-up)``.
      cells_note: sentences after the one that explains the table cells.
    """
    sources = sorted({(r["algo"], r.get("config_source")) for r in results
                      if r["system"].startswith("jrl") and "error" not in r})
    return "\n".join([
        *section_header(),
        f"- threshold: greedy {EVAL_EPISODES}-episode mean >= {threshold:g}, evaluated every "
        f"{args.eval_every} env steps; evaluation time excluded, agent build + JIT "
        f"included{build_note}, imports excluded; one subprocess per (system, algo, seed)",
        "- caps: " + ", ".join(f"{a} {max_steps(a) / 1000:.0f}k steps" for a in args.algos),
        *[f"- jrl {a} config: {src}" for a, src in sources],
        *notes,
        f"- whole benchmark wall time: {total_s:.0f} s",
        "",
        "Cells: time-to-solve (env steps at the solving evaluation). Medians count unsolved "
        "runs as infinitely slow." + (f" {cells_note}" if cells_note else ""),
        "",
        time_to_solve_table(results, args.algos, args.seeds)])


# ----------------------------------------------------------------------------------------------
# RESULTS.md

def update_section(path: str, header: str, body: str) -> None:
    """Writes ``## header`` + body into ``path``, replacing an existing section with the same
    header (up to the next ``## `` header); other sections are kept."""
    title = f"## {header}"
    section = f"{title}\n\n{body.strip()}\n"
    text = ""
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
    if not text.strip():
        text = "# jrl benchmark results\n\nWritten by the scripts in `benchmarks/` (see README.md).\n"
    pattern = re.compile(rf"^{re.escape(title)}[ \t]*\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(path, "w") as f:
        f.write(text.rstrip("\n") + "\n")


def publish(out: str | None, header: str, body: str) -> None:
    """Prints a results section (``## header`` and body) and, with ``out``, writes it into that
    markdown file."""
    print(f"## {header}\n")
    print(body)
    if out:
        update_section(out, header, body)
        print(f"\nwrote section '{header}' to {out}")


def dump_json(path: str | None, records: list[dict]) -> None:
    """With ``path``, writes every run record there (the ``--json`` flag)."""
    if path:
        with open(path, "w") as f:
            json.dump(records, f, indent=1, default=str)
