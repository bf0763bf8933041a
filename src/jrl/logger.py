"""Training results on disk and on the terminal.

A run's directory (``make_logdir``) follows RLlib's layout:
``~/jrl_results/<experiment>/<ALGO>_<env>_<timestamp>/`` with ``params.json``, ``result.json`` (one
JSON object per iteration), ``progress.csv`` and TensorBoard events (tags ``ray/tune/<key>``), so
tools written for RLlib/Tune results read jrl's too. ``ProgressReporter`` shows the run on the
terminal, or prints one plain line per iteration when stdout is not a terminal.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import itertools
import json
import math
import os
import re
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any, TextIO

import numpy as np

from jrl.config import jsonable
from jrl.errors import ConfigError

DEFAULT_RESULTS_DIR = "~/jrl_results"
TENSORBOARD_PREFIX = "ray/tune/"

# Left out of progress.csv and TensorBoard, as RLlib does; params.json already has the config.
_NOT_SCALARS = ("config",)


def make_logdir(local_dir: str | None, experiment: str, algo: str, env: str) -> str:
    """Creates and returns a new run directory.

    The path is ``<local_dir or ~/jrl_results>/<experiment>/<algo>_<env>_<YYYY-MM-DD_HH-MM-SS>``,
    with ``_1``, ``_2``, ... appended when that directory exists. The env id is made safe for file
    names (``gymnax:CartPole-v1`` -> ``gymnax_CartPole-v1``).
    """
    root = os.path.abspath(os.path.expanduser(local_dir or DEFAULT_RESULTS_DIR))
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    base = os.path.join(root, _file_name(experiment), f"{_file_name(algo)}_{_file_name(env)}_{stamp}")
    try:
        os.makedirs(os.path.dirname(base), exist_ok=True)
    except OSError as e:  # a file in the way, no permission, read-only file system
        raise ConfigError(f"cannot create the results directory under '{root}': "
                          f"{e.strerror}") from None
    path, suffix = base, 0
    while True:
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            suffix += 1
            path = f"{base}_{suffix}"


def flatten_result(result: Mapping[str, Any], sep: str = "/") -> dict[str, Any]:
    """Numeric and string leaves of ``result`` with nested keys joined by ``sep``.

    ``{"info": {"learner": {"default_policy": {"policy_loss": 0.1}}}}`` becomes
    ``{"info/learner/default_policy/policy_loss": 0.1}``. numpy/jax scalars become Python numbers;
    lists, ``None`` and arrays with more than one element are skipped.
    """
    flat: dict[str, Any] = {}

    def visit(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                visit(f"{prefix}{sep}{key}" if prefix else str(key), item)
            return
        scalar = _scalar(value)
        if scalar is not None:
            flat[prefix] = scalar

    visit("", result)
    return flat


def json_safe(value: Any) -> Any:
    """``value`` with numpy/jax values as Python ones, tuples as lists and NaN/inf as ``None``.

    Objects JSON cannot hold (callables, dataclasses) are left for ``jrl.config.jsonable``.
    """
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.generic) or _is_jax_array(value) or isinstance(value, np.ndarray):
        return json_safe(np.asarray(value).tolist())
    return value


class ResultLogger:
    """Writes each training result to ``result.json``, ``progress.csv`` and TensorBoard.

    Opening a directory that already holds results appends to them (a resumed run), never
    truncates. Use as a context manager, or call ``close()``.
    """

    def __init__(self, logdir: str, params: Mapping[str, Any] | None = None, *,
                 tensorboard: bool = True, hold_files: bool = True):
        """Args:
          tensorboard: also write TensorBoard event files.
          hold_files: keep ``result.json`` and ``progress.csv`` open between results;
            ``False`` opens them for each result, so that many loggers (one per vmapped seed)
            hold no file descriptors.
        """
        self.logdir = os.path.abspath(os.path.expanduser(logdir))
        os.makedirs(self.logdir, exist_ok=True)
        self._write_params(params or {})
        self._hold = hold_files
        self._with_tensorboard = tensorboard
        self._json: TextIO | None = None
        self._csv_file: TextIO | None = None
        self._csv_columns = _csv_header(os.path.join(self.logdir, "progress.csv"))
        self._csv: csv.DictWriter | None = None
        self._tensorboard: Any = None
        self._closed = False
        if hold_files:
            self._open_files()

    def log(self, result: Mapping[str, Any]) -> None:
        """Appends one iteration's ``result``."""
        if self._closed:
            raise RuntimeError("ResultLogger is closed")
        if not self._hold:
            self._open_files()
        try:
            self._json.write(json.dumps(jsonable(json_safe(result)), allow_nan=False) + "\n")
            self._json.flush()
            scalars = flatten_result({k: v for k, v in result.items() if k not in _NOT_SCALARS})
            self._write_csv(scalars)
        finally:
            if not self._hold:
                self._close_files()
        if self._with_tensorboard:
            self._write_tensorboard(result, scalars)

    def close(self) -> None:
        """Flushes and closes every file; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._close_files()
        if self._tensorboard is not None:
            self._tensorboard.close()

    def _open_files(self) -> None:
        self._json = _open_append(os.path.join(self.logdir, "result.json"))
        self._csv_file = _open_append(os.path.join(self.logdir, "progress.csv"), newline="")
        self._csv = None  # a writer is bound to the file object it was made with

    def _close_files(self) -> None:
        for f in (self._json, self._csv_file):
            if f is not None:
                f.close()
        self._json = self._csv_file = self._csv = None

    def __enter__(self) -> ResultLogger:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def _write_params(self, params: Mapping[str, Any]) -> None:
        path = os.path.join(self.logdir, "params.json")
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(jsonable(json_safe(params)), f, indent=2, allow_nan=False)
            f.write("\n")
        os.replace(tmp, path)

    def _write_csv(self, scalars: dict[str, Any]) -> None:
        new_keys = [k for k in scalars if k not in (self._csv_columns or ())]
        if self._csv is None or new_keys:
            if self._csv_columns is None:
                self._csv_columns = list(scalars)
                self._csv = csv.DictWriter(self._csv_file, fieldnames=self._csv_columns,
                                           extrasaction="ignore", restval="")
                self._csv.writeheader()
            else:
                if new_keys:  # keys that appear later (evaluation/*) get columns too
                    self._rewrite_csv([*self._csv_columns, *new_keys])
                self._csv = csv.DictWriter(self._csv_file, fieldnames=self._csv_columns,
                                           extrasaction="ignore", restval="")
        self._csv.writerow(scalars)
        self._csv_file.flush()

    def _rewrite_csv(self, columns: list[str]) -> None:
        """Rewrites ``progress.csv`` with the wider header ``columns`` (old rows keep their
        values, new columns are empty in them), then appends to it."""
        path = os.path.join(self.logdir, "progress.csv")
        self._csv_file.close()
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore", restval="")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)
        self._csv_columns = columns
        self._csv_file = _open_append(path, newline="")

    def _write_tensorboard(self, result: Mapping[str, Any], scalars: dict[str, Any]) -> None:
        if self._tensorboard is None:
            self._tensorboard = summary_writer(self.logdir)
        step = _scalar(result.get("timesteps_total"))
        if not isinstance(step, (int, float)):
            step = _scalar(result.get("training_iteration"))
        step = int(step) if isinstance(step, (int, float)) and math.isfinite(step) else None
        for key, value in scalars.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self._tensorboard.add_scalar(TENSORBOARD_PREFIX + key, float(value), global_step=step)
        self._tensorboard.flush()


def summary_writer(logdir: str) -> Any:
    """tensorboardX's ``SummaryWriter`` for ``logdir``, imported without torch.

    tensorboardX probes ``import torch`` when its writer module loads, only to accept torch
    tensors; jrl logs Python floats, and torch's import costs seconds and ~200 MB per run where
    torch is installed. So unless the process already imported torch, the probe is answered
    "not installed" for the length of tensorboardX's import, and torch stays importable after.
    """
    probe_blocked = "torch" not in sys.modules
    if probe_blocked:
        sys.modules["torch"] = None  # type: ignore[assignment]  # makes `import torch` raise
    try:
        from tensorboardX import SummaryWriter  # slow import; only runs that log need it
    finally:
        if probe_blocked and sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]
    # tensorboardX names files by the second; a suffix keeps two writers in one run directory
    # (a restored run logging where it left off) from overwriting each other's file.
    return SummaryWriter(logdir, flush_secs=30,
                         filename_suffix=f".{os.getpid()}.{next(_EVENT_FILE_IDS)}")


_EVENT_FILE_IDS = itertools.count()


PROFILE_ENV = "JRL_PROFILE"
_COMPILE_EVENTS = {"/jax/core/compile/jaxpr_trace_duration": "compile: trace (Python -> jaxpr)",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration": "compile: lower (jaxpr -> MLIR)",
                   "/jax/core/compile/backend_compile_duration": "compile: XLA"}


class PhaseTimes:
    """Wall time spent in each phase of a run: ``with phases.phase("env creation"): ...``.

    Times are exclusive: a phase inside another (and JAX's tracing, lowering and XLA compiling,
    recorded from ``jax.monitoring`` once ``watch_compiles()`` was called) is taken out of the
    outer one, so the phases add up to the wall time they cover. ``jrl train`` prints the table
    at the end when ``JRL_PROFILE=1`` is set.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.programs: dict[str, float] = {}  # XLA compile seconds per compiled program
        self._stack: list[list] = []  # [name, start, seconds taken by inner phases]
        self._watching = False

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        frame = [name, time.perf_counter(), 0.0]
        self._stack.append(frame)
        try:
            yield
        finally:
            self._stack.pop()
            total = time.perf_counter() - frame[1]
            self._add(name, total - frame[2])
            if self._stack:
                self._stack[-1][2] += total

    def add(self, name: str, seconds: float) -> None:
        """Adds ``seconds`` spent in ``name`` inside the current phase (taken out of it)."""
        self._add(name, seconds)
        if self._stack:
            self._stack[-1][2] += seconds

    def watch_compiles(self) -> None:
        """Records JAX's trace/lower/XLA compile durations as phases (idempotent)."""
        if self._watching:
            return
        import jax.monitoring

        recent: list[tuple[float, float]] = []  # (start, seconds counted) of recent events

        def on_duration(event: str, duration: float, fun_name: str = "?", **_: Any) -> None:
            name = _COMPILE_EVENTS.get(event)
            if name is None:
                return
            if name == "compile: XLA":
                self.programs[fun_name] = self.programs.get(fun_name, 0.0) + duration
            # A jit traced inside another's trace reports both: count the outer's own time.
            end = time.perf_counter()
            start = end - duration
            inner = sum(counted for s, counted in recent if s >= start)
            recent[:] = [(s, c) for s, c in recent if s < start]
            recent.append((start, duration))
            self.add(name, max(0.0, duration - inner))

        jax.monitoring.register_event_duration_secs_listener(on_duration)
        self._watching = True

    def _add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.counts[name] = self.counts.get(name, 0) + 1

    def table(self, wall_s: float | None = None) -> str:
        """The phases, longest first, as aligned text lines (with ``wall_s``: the share of it
        and the time no phase covers)."""
        rows = sorted(self.seconds.items(), key=lambda kv: -kv[1])
        if wall_s is not None:
            rows.append(("other (not in a phase)", max(0.0, wall_s - sum(self.seconds.values()))))
        width = max((len(name) for name, _ in rows), default=10) + 2
        lines = []
        for name, seconds in rows:
            count = self.counts.get(name, 0)
            share = f"  {100 * seconds / wall_s:5.1f}%" if wall_s else ""
            calls = f"  ({count}x)" if count > 1 else ""
            lines.append(f"  {name:<{width}} {seconds:8.2f} s{share}{calls}")
        if self.programs:
            top = sorted(self.programs.items(), key=lambda kv: -kv[1])[:5]
            lines.append(f"  XLA programs compiled: {self.counts.get('compile: XLA', 0)}"
                         "; longest: " + ", ".join(f"{n} {t:.2f} s" for n, t in top))
        return "\n".join(lines)


PHASES = PhaseTimes()  # this process's phases: effects at the edge, like jax's own profiler


def process_age_s() -> float | None:
    """Seconds since this process started (Linux), or ``None`` where unknown."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class ProgressReporter:
    """Shows training progress: a live table on a terminal, one plain line per iteration otherwise.

    Args:
      enabled: ``False`` prints nothing (quiet mode).
      stream: where to write; defaults to ``sys.stdout`` at ``start()``.
      force_terminal: override terminal detection (``None``: ask the stream).
    """

    def __init__(self, enabled: bool = True, stream: TextIO | None = None,
                 force_terminal: bool | None = None):
        self.enabled = enabled
        self._stream = stream
        self._force_terminal = force_terminal
        self._live: Any = None
        self._plain_stream: TextIO | None = None
        self._started = False

    def start(self) -> None:
        """Starts showing progress (called by ``update`` if needed)."""
        if self._started or not self.enabled:
            return
        self._started = True
        stream = self._stream if self._stream is not None else sys.stdout
        interactive = self._force_terminal
        if interactive is None:
            isatty = getattr(stream, "isatty", None)
            interactive = bool(isatty and isatty())
        if not interactive:
            self._plain_stream = stream
            return
        from rich.console import Console
        from rich.live import Live

        console = Console(file=stream, force_terminal=True)
        self._live = Live(_table(None), console=console, refresh_per_second=4, transient=False)
        self._live.start()

    def update(self, result: Mapping[str, Any]) -> None:
        """Shows ``result`` (one training iteration's result dict)."""
        if not self.enabled:
            return
        self.start()
        if self._live is not None:
            self._live.update(_table(result), refresh=True)
        elif self._plain_stream is not None:
            print(progress_line(result), file=self._plain_stream, flush=True)

    def stop(self) -> None:
        """Stops the live display, leaving the last table on screen."""
        if self._live is not None:
            self._live.stop()
            self._live = None
        self._plain_stream = None
        self._started = False

    def __enter__(self) -> ProgressReporter:
        self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


_COLUMNS = (
    ("iter", "training_iteration", "{:d}"),
    ("timesteps", "timesteps_total", "{:d}"),
    ("reward", "episode_reward_mean", "{:.2f}"),
    ("min", "episode_reward_min", "{:.2f}"),
    ("max", "episode_reward_max", "{:.2f}"),
    ("episodes", "episodes_total", "{:d}"),
    ("eval reward", "evaluation/episode_reward_mean", "{:.2f}"),
    ("time (s)", "time_total_s", "{:.1f}"),
    ("iter time (s)", "time_this_iter_s", "{:.2f}"),
)


def progress_line(result: Mapping[str, Any]) -> str:
    """One plain line describing a training result, as printed when stdout is not a terminal."""
    cells = {key: _format(result_value(result, key), fmt) for _, key, fmt in _COLUMNS}
    evaluation = cells["evaluation/episode_reward_mean"]
    return (f"iter {cells['training_iteration']} | timesteps {cells['timesteps_total']} | "
            f"reward {cells['episode_reward_mean']} (min {cells['episode_reward_min']}, "
            f"max {cells['episode_reward_max']}) | episodes {cells['episodes_total']} | "
            + (f"eval {evaluation} | " if evaluation != "-" else "")
            + f"time {cells['time_total_s']}s (iter {cells['time_this_iter_s']}s)")


def result_value(result: Mapping[str, Any], key: str) -> Any:
    """``result[key]`` where ``key`` may be a ``a/b`` path into nested dicts."""
    value: Any = result
    for part in key.split("/"):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _table(result: Mapping[str, Any] | None) -> Any:
    from rich.table import Table

    table = Table(title="jrl training", title_justify="left")
    for title, _, _ in _COLUMNS:
        table.add_column(title, justify="right")
    if result is not None:
        table.add_row(*(_format(result_value(result, key), fmt) for _, key, fmt in _COLUMNS))
    return table


def _format(value: Any, fmt: str) -> str:
    value = _scalar(value)
    if value is None or isinstance(value, str):
        return "-" if value is None else value
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if fmt == "{:d}":
        value = int(value)
    return fmt.format(value)


def _scalar(value: Any) -> int | float | str | bool | None:
    """``value`` as a Python scalar, or ``None`` when it is not one."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.generic, np.ndarray)) or _is_jax_array(value):
        array = np.asarray(value)
        if array.size != 1 or array.dtype.kind not in "biuf":
            return None
        return array.reshape(()).item()
    return None


def _is_jax_array(value: Any) -> bool:
    jax = sys.modules.get("jax")  # only jax arrays can exist when jax is imported
    return jax is not None and isinstance(value, jax.Array)


def _file_name(text: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_")
    return safe.lstrip(".") or "default"


def _open_append(path: str, newline: str | None = None) -> TextIO:
    """Opens ``path`` for appending, first ending a last line that a crash left unfinished."""
    partial = False
    if os.path.exists(path) and os.path.getsize(path) > 0:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            partial = f.read(1) != b"\n"
    f = open(path, "a", encoding="utf-8", newline=newline)  # closed by ResultLogger.close()
    if partial:
        f.write("\n")
    return f


def _csv_header(path: str) -> list[str] | None:
    """The columns of an existing ``progress.csv``, or ``None`` when it has none."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            header = next(csv.reader(f), None)
    except OSError:
        return None
    return header or None
