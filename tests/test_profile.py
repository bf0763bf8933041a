"""Speed plumbing: phase times (JRL_PROFILE), TensorBoard logging without torch's import, and the
jitted backend's compiled programs."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import pytest

from jrl.errors import NumericError
from jrl.logger import PhaseTimes, ResultLogger, process_age_s


def test_phase_times_are_exclusive_and_add_up():
    phases = PhaseTimes()
    start = time.perf_counter()
    with phases.phase("outer"):
        time.sleep(0.05)
        with phases.phase("inner"):
            time.sleep(0.1)
        phases.add("reported", 0.02)  # e.g. a compile that happened inside "outer"
    wall = time.perf_counter() - start
    # sleeps only ever overshoot (a loaded machine), so bound from below
    assert phases.seconds["inner"] >= 0.1
    assert phases.seconds["reported"] == 0.02
    assert phases.seconds["outer"] >= 0.05 - 0.02 - 1e-3  # its own sleep minus the reported
    assert wall - 0.5 <= sum(phases.seconds.values()) <= wall
    table = phases.table(wall)
    assert table.splitlines()[0].split()[0] == "inner"  # longest first
    assert "other (not in a phase)" in table


def test_watch_compiles_counts_each_program_once():
    phases = PhaseTimes()
    phases.watch_compiles()

    @jax.jit
    def inner(x):
        return jnp.sin(x) * 2

    @jax.jit
    def outer(x):
        return inner(x) + 1  # traced inside outer's trace: its time counts once

    with phases.phase("work"):
        outer(jnp.arange(3.0)).block_until_ready()
    assert phases.programs and any("outer" in name for name in phases.programs)
    assert phases.counts["compile: XLA"] >= 1
    compile_s = sum(v for k, v in phases.seconds.items() if k.startswith("compile:"))
    assert phases.seconds["work"] >= 0 and compile_s > 0


def test_process_age_is_positive():
    age = process_age_s()
    assert age is None or age > 0


def test_result_logging_keeps_torch_out_and_leaves_it_importable(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        from jrl.logger import ResultLogger
        with ResultLogger({str(tmp_path)!r}) as log:
            log.log({{"timesteps_total": 1, "episode_reward_mean": 2.0}})
        print("torch" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"}, check=True).stdout
    assert out.strip() == "False"  # tensorboardX's torch probe was not followed
    assert glob.glob(str(tmp_path / "events.out.tfevents.*"))


def test_torch_imports_normally_after_logging_when_installed(tmp_path):
    pytest.importorskip("torch")
    code = textwrap.dedent(f"""
        from jrl.logger import ResultLogger
        with ResultLogger({str(tmp_path)!r}) as log:
            log.log({{"timesteps_total": 1, "x": 1.0}})
        import torch
        print(torch.zeros(2).sum().item())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"}, check=True).stdout
    assert out.strip() == "0.0"


def test_two_loggers_in_one_dir_write_separate_event_files(tmp_path):
    for _ in range(2):
        with ResultLogger(str(tmp_path)) as log:
            log.log({"timesteps_total": 1, "x": 1.0})
    assert len(glob.glob(str(tmp_path / "events.out.tfevents.*"))) == 2


@pytest.mark.slow  # one PPO chunk compile (~5-10 s on 2 cores)
def test_jitted_trainer_compiles_nothing_after_the_first_iteration(tmp_path):
    pytest.importorskip("gymnax")
    import jrl
    from jrl.logger import PHASES

    trainer = jrl.Trainer("PPO", env="gymnax:CartPole-v1", logdir=str(tmp_path), config={
        "num_seeds": 2, "num_envs_per_worker": 2, "rollout_fragment_length": 8,
        "train_batch_size": 16, "sgd_minibatch_size": 16, "num_sgd_iter": 1,
        "timesteps_per_iteration": 16, "model": {"fcnet_hiddens": [8]}})
    PHASES.watch_compiles()
    try:
        trainer.train()
        compiled = PHASES.counts.get("compile: XLA", 0)
        trainer.train()
        trainer.train()
        assert PHASES.counts.get("compile: XLA", 0) == compiled
        # a non-finite update is rolled back to the runner from before the chunk
        params = jax.tree.map(lambda x: x.at[0].set(jnp.inf) if x.ndim == 2 else x,
                              trainer.state.params)
        trainer.state = trainer.state._replace(params=params)
        before = trainer.backend.runner
        with pytest.raises(NumericError, match="iteration 4"):
            trainer.train()
        assert trainer.backend.runner is before and trainer.iteration == 3
    finally:
        trainer.stop()


def test_check_update_reads_a_cpu_state_without_compiling():
    from jrl.backends import check_update

    good = {"w": jnp.ones((3, 2)), "steps": jnp.asarray(4), "b": (jnp.zeros(2),)}
    bad = {"w": jnp.ones((3, 2)).at[1, 1].set(jnp.nan), "steps": jnp.asarray(4)}
    phases = PhaseTimes()
    phases.watch_compiles()  # after building the arrays (which compiles small programs)
    check_update({"loss": 0.5}, good, 1)
    with pytest.raises(NumericError, match="iteration 2: the update made the learner state"):
        check_update({"loss": 0.5}, bad, 2)
    assert not phases.programs  # NumPy reads CPU arrays in place
