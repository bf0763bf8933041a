"""Where the default test suite's time goes: wall and CPU seconds per test and per file.

Runs pytest (default selection, or the files/args given) with a small plugin that records, for
every test, its wall time and the CPU seconds of this process plus its reaped children (user +
system), with the load average when it started. CPU seconds move much less than wall time when
the machine is shared, so they are what to compare before/after a change on a busy machine
(compile time is CPU time; Ray worker processes that are still alive are not counted).

    python benchmarks/suite_durations.py --jsonl /tmp/before.jsonl tests/test_anakin.py
    python benchmarks/suite_durations.py --report /tmp/before.jsonl            # per-file table
    python benchmarks/suite_durations.py --report /tmp/after.jsonl --base /tmp/before.jsonl
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)


def _load(path: str) -> dict[str, dict]:
    with open(path) as f:
        return {r["id"]: r for r in (json.loads(line) for line in f if line.strip())}


def _per_file(rows: dict[str, dict]) -> dict[str, list[float]]:
    files: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0, 0.0])
    for r in rows.values():
        entry = files[r["id"].split("::")[0]]
        entry[0] += 1
        entry[1] += r["wall"]
        entry[2] += r["cpu"]
    return files


def report(path: str, base: str | None, top: int) -> str:
    rows = _load(path)
    files = _per_file(rows)
    lines = []
    if base:
        before = _per_file(_load(base))
        lines += ["| file | tests | CPU s before | CPU s after | wall s before | wall s after |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name in sorted(files):
            n, wall, cpu = files[name]
            b = before.get(name, [0, float("nan"), float("nan")])
            lines.append(f"| `{name}` | {n} | {b[2]:.1f} | {cpu:.1f} | {b[1]:.1f} | {wall:.1f} |")
    else:
        lines += ["| file | tests | CPU s | wall s |", "|---|---:|---:|---:|"]
        for name, (n, wall, cpu) in sorted(files.items(), key=lambda kv: -kv[1][2]):
            lines.append(f"| `{name}` | {n} | {cpu:.1f} | {wall:.1f} |")
    total_cpu = sum(v[2] for v in files.values())
    total_wall = sum(v[1] for v in files.values())
    lines += ["", f"total: {len(rows)} tests, {total_cpu:.0f} CPU s, {total_wall:.0f} wall s", "",
              f"slowest {top} tests by CPU seconds:", ""]
    for r in sorted(rows.values(), key=lambda r: -r["cpu"])[:top]:
        lines.append(f"- {r['cpu']:.1f} CPU s, {r['wall']:.1f} wall s (load {r['load']:.0f}): "
                     f"`{r['id']}`")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jsonl", default="suite_durations.jsonl", help="where the records go")
    p.add_argument("--report", metavar="JSONL", help="only print the tables of a record file")
    p.add_argument("--base", metavar="JSONL", help="with --report: a 'before' record file")
    p.add_argument("--top", type=int, default=20)
    args, pytest_args = p.parse_known_args()
    if args.report:
        print(report(args.report, args.base, args.top))
        return
    env = {**os.environ, "JRL_TEST_DURATIONS_OUT": os.path.abspath(args.jsonl),
           "PYTHONPATH": os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")])}
    if os.path.exists(args.jsonl):
        os.remove(args.jsonl)
    rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "-p", "_pytest_durations", *pytest_args], cwd=REPO_ROOT, env=env)
    if os.path.exists(args.jsonl):
        print(report(args.jsonl, None, args.top))
    sys.exit(rc)


if __name__ == "__main__":
    main()
