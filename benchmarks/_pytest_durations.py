"""pytest plugin for ``benchmarks/suite_durations.py``: one JSON line per test with its wall time,
CPU seconds (this process and its reaped children) and the load average when it started."""

from __future__ import annotations

import json
import os
import resource
import time

import pytest


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    wall0, cpu0, load = time.perf_counter(), _cpu_seconds(), os.getloadavg()[0]
    yield
    record = {"id": item.nodeid, "wall": time.perf_counter() - wall0,
              "cpu": _cpu_seconds() - cpu0, "load": load}
    with open(os.environ["JRL_TEST_DURATIONS_OUT"], "a") as f:
        f.write(json.dumps(record) + "\n")
