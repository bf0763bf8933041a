"""Helpers shared by the benchmark scripts: machine info and RESULTS.md section updates."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import re
import shlex
import statistics
import sys


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
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
    exe = sys.executable
    try:
        exe = os.path.relpath(exe)
    except ValueError:
        pass
    return " ".join(shlex.quote(a) for a in [exe, *sys.argv])


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


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
    """Prints a results section and, with ``out``, writes it into that markdown file."""
    print(body)
    if out:
        update_section(out, header, body)
        print(f"\nwrote section '{header}' to {out}")
