"""The fault suite: inject faults into training and checkpoints and count what survives.

    PYTHONPATH=src python benchmarks/fault_suite.py [--quick] [--out report.json]

prints a table of faults injected / survived, kill-during-save trials / restores and corrupted
checkpoints / clean one-line errors. ``tests/test_faults.py`` runs the same functions (marked
slow) with assertions, and a fast variant of the corruption check in the default run.

- ``kill_workers``: PPO with 4 rollout workers; one worker is killed every 5 iterations. Every
  iteration must still train on a full batch, and the final return must be >= 0.9x that of a
  fault-free run with the same seed.
- ``kill_during_saves``: a process saves checkpoints in a loop and is SIGKILLed at a random
  moment; the newest complete checkpoint must restore, and the next save must clean the temp
  directory the kill left.
- ``corrupt_checkpoints_cli``: ``jrl evaluate`` in a fresh process on checkpoints damaged in
  ``len(CORRUPTIONS)`` ways must print exactly one line naming the checkpoint and exit 2.
- ``hung_worker``: a worker whose env hangs is replaced after ``sample_timeout_s``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np


def _edit_metadata(change: Callable[[dict], None]) -> Callable[[str], None]:
    def damage(path: str) -> None:
        meta_file = os.path.join(path, "metadata.json")
        with open(meta_file) as f:
            meta = json.load(f)
        change(meta)
        with open(meta_file, "w") as f:
            json.dump(meta, f)
    return damage


def _first(path: str, pattern: str) -> str:
    return sorted(glob.glob(os.path.join(path, pattern), recursive=True))[0]


def _truncate(path: str) -> None:
    with open(_first(path, "state/**/d/*"), "r+b") as f:
        f.truncate(10)


def _remove_all(pattern: str) -> Callable[[str], None]:
    def damage(path: str) -> None:
        for name in glob.glob(os.path.join(path, pattern), recursive=True):
            os.remove(name)
    return damage


def _write(relative: str, text: str) -> Callable[[str], None]:
    def damage(path: str) -> None:
        with open(os.path.join(path, relative), "w") as f:
            f.write(text)
    return damage


# name -> damage(checkpoint_dir)
CORRUPTIONS: dict[str, Callable[[str], None]] = {
    "metadata-missing": lambda p: os.remove(os.path.join(p, "metadata.json")),
    "metadata-not-json": _write("metadata.json", "{not json"),
    "metadata-not-utf8": lambda p: open(os.path.join(p, "metadata.json"), "wb").write(b"\xff\xfe"),
    "config-not-a-mapping": _edit_metadata(lambda m: m.__setitem__("config", [1, 2])),
    "iteration-not-an-integer": _edit_metadata(
        lambda m: m.__setitem__("training_iteration", "abc")),
    "algo-not-a-name": _edit_metadata(lambda m: m.__setitem__("algo", 5)),
    "newer-format-version": _edit_metadata(lambda m: m.__setitem__("format_version", 99)),
    "complete-marker-missing": lambda p: os.remove(os.path.join(p, ".complete")),
    "state-dir-missing": lambda p: shutil.rmtree(os.path.join(p, "state")),
    "array-file-truncated": _truncate,
    "array-index-missing": _remove_all("state/**/manifest.ocdbt"),
    "orbax-metadata-garbage": _write("state/state/_METADATA", "garbage"),
    "state-structure-differs": _edit_metadata(
        lambda m: m["state_tree"]["paths"].__setitem__(0, "['algo'].bogus")),
}


def corrupt_copy(checkpoint: str, workdir: str, kind: str) -> str:
    """A copy of ``checkpoint`` under ``workdir/kind/`` damaged the ``kind`` way; its path."""
    path = os.path.join(workdir, kind, os.path.basename(checkpoint))
    shutil.rmtree(os.path.dirname(path), ignore_errors=True)
    shutil.copytree(checkpoint, path)
    CORRUPTIONS[kind](path)
    return path


def corrupt_checkpoints_cli(checkpoint: str, workdir: str) -> dict:
    """Runs ``jrl evaluate`` in a fresh process on each corruption of ``checkpoint``."""
    clean, failures = 0, {}
    for kind in sorted(CORRUPTIONS):
        path = corrupt_copy(checkpoint, workdir, kind)
        proc = subprocess.run([sys.executable, "-m", "jrl", "evaluate", path, "--episodes", "1"],
                              capture_output=True, text=True, timeout=300, env=_child_env())
        lines = proc.stderr.strip().splitlines()
        if proc.returncode == 2 and len(lines) == 1 and path in lines[0]:
            clean += 1
        else:
            failures[kind] = (proc.returncode, lines[:3])
    return {"corrupted": len(CORRUPTIONS), "clean_errors": clean, "failures": failures}


_SAVER = """
import sys, numpy as np
from jrl import checkpoint as ckpt
directory = sys.argv[1]
i = 0
while True:
    i += 1
    state = {"w": np.full((256, 256), i, np.float32), "iteration": np.int32(i)}
    ckpt.save_checkpoint(directory, i, state, {"algo": "FAULT", "config": {}})
    print(i, flush=True)
"""


def kill_during_saves(workdir: str, trials: int = 100, seed: int = 0) -> dict:
    """SIGKILLs a checkpoint-saving loop at random moments; restores the newest checkpoint."""
    from jrl import checkpoint as ckpt

    rng = random.Random(seed)
    restored = tmp_left = tmp_seen = saves = 0
    abstract = {"w": np.zeros((256, 256), np.float32), "iteration": np.int32(0)}
    for trial in range(trials):
        directory = os.path.join(workdir, f"trial_{trial:03d}")
        proc = subprocess.Popen([sys.executable, "-c", _SAVER, directory], stdout=subprocess.PIPE,
                                text=True, env=_child_env())
        proc.stdout.readline()  # one checkpoint is complete
        time.sleep(rng.uniform(0.0, 0.5))
        proc.kill()
        proc.wait()
        proc.stdout.close()
        tmp_seen += len(glob.glob(os.path.join(directory, ".tmp_checkpoint_*")))
        latest = ckpt.latest_checkpoint(directory)
        state = ckpt.restore_state(latest, abstract)
        iteration = int(os.path.basename(latest).split("_")[1])
        saves += iteration
        if int(state["iteration"]) == iteration and float(state["w"][0, 0]) == iteration:
            restored += 1
        ckpt.clean_stale_tmp(directory)  # what the next save does first
        tmp_left += len(glob.glob(os.path.join(directory, ".tmp_checkpoint_*")))
        shutil.rmtree(directory, ignore_errors=True)
    return {"trials": trials, "restored": restored, "checkpoints_written": saves,
            "tmp_dirs_after_kill": tmp_seen, "tmp_dirs_left": tmp_left}


KILL_CONFIG = {"num_workers": 4, "num_envs_per_worker": 1, "rollout_fragment_length": 250,
               "train_batch_size": 1000, "sgd_minibatch_size": 250, "num_sgd_iter": 10,
               "lr": 1e-3, "model": {"fcnet_hiddens": [32, 32]}, "seed": 1,
               "num_cpus_per_worker": 0}


def _train_run(iterations: int, kill_every: int | None) -> dict:
    import ray

    import jrl

    trainer = jrl.Trainer("PPO", env="CartPole-v1", config=KILL_CONFIG, log_to_disk=False)
    injected = survived = short = 0
    rewards = []
    try:
        for i in range(1, iterations + 1):
            killed = False
            if kill_every and i % kill_every == 0:
                workers = trainer.workers.remote_workers_by_index()
                victim = sorted(workers)[(i // kill_every) % len(workers)]
                ray.kill(workers[victim], no_restart=True)
                injected += 1
                killed = True
            result = trainer.train()
            full = result["timesteps_this_iter"] >= KILL_CONFIG["train_batch_size"]
            short += not full
            survived += killed and full and result["num_healthy_workers"] == 4
            rewards.append(result["episode_reward_mean"])
        restarts = trainer.workers.num_worker_restarts
    finally:
        trainer.stop()
    return {"faults_injected": injected, "faults_survived": survived, "short_batches": short,
            "final_return": float(np.mean(rewards[-5:])), "worker_restarts": restarts}


def kill_workers(iterations: int = 50, kill_every: int = 5) -> dict:
    """Fault-free run, then the same run with one of 4 workers killed every ``kill_every``."""
    clean = _train_run(iterations, None)
    faulty = _train_run(iterations, kill_every)
    return {**faulty, "fault_free_return": clean["final_return"]}


def hung_worker(workdir: str) -> dict:
    """Worker 1's env hangs on its first life; ``sample_timeout_s`` replaces the worker."""
    import jrl

    marker = os.path.join(workdir, "hung_once")
    config = {"num_workers": 2, "rollout_fragment_length": 128, "train_batch_size": 256,
              "sgd_minibatch_size": 128, "num_sgd_iter": 1, "sample_timeout_s": 20.0,
              "num_cpus_per_worker": 0, "model": {"fcnet_hiddens": [16]},
              "env_config": {"marker": marker}}
    jrl.register_env("hangs_once", _hanging_env)
    with jrl.Trainer("PPO", env="hangs_once", config=config, log_to_disk=False) as trainer:
        result = trainer.train()
    return {"timesteps_this_iter": result["timesteps_this_iter"],
            "num_worker_restarts": result["num_worker_restarts"]}


def _hanging_env(ctx):
    import gymnasium as gym

    env = gym.make("CartPole-v1")
    if ctx.worker_index == 1 and not os.path.exists(ctx["marker"]):
        open(ctx["marker"], "w").close()
        step = env.step

        def hang(action):
            time.sleep(3600)
            return step(action)

        env.step = hang
    return env


def _child_env() -> dict:
    env = dict(os.environ)
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.path.abspath(src),
                                                    env.get("PYTHONPATH")) if p)
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def _good_checkpoint(workdir: str) -> str:
    import jrl

    config = {"train_batch_size": 64, "rollout_fragment_length": 32, "sgd_minibatch_size": 32,
              "num_sgd_iter": 1, "model": {"fcnet_hiddens": [16]}}
    with jrl.Trainer("PPO", env="CartPole-v1", config=config, log_to_disk=False) as trainer:
        trainer.train()
        return trainer.save(workdir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="10 kill-during-save trials and 10 iterations with worker kills")
    parser.add_argument("--out", help="also write the report as JSON here")
    args = parser.parse_args()
    import ray

    from jrl.rollout.worker_set import init_ray

    work = tempfile.mkdtemp(prefix="jrl-faults-")
    report = {}
    start = time.time()
    report["corrupt"] = corrupt_checkpoints_cli(_good_checkpoint(os.path.join(work, "good")),
                                                os.path.join(work, "corrupt"))
    report["saves"] = kill_during_saves(os.path.join(work, "saves"),
                                        trials=10 if args.quick else 100)
    init_ray(num_cpus=4)
    report["workers"] = kill_workers(iterations=10 if args.quick else 50, kill_every=5)
    report["hung"] = hung_worker(work)
    ray.shutdown()
    report["wall_s"] = round(time.time() - start, 1)
    shutil.rmtree(work, ignore_errors=True)
    w, s, c, h = report["workers"], report["saves"], report["corrupt"], report["hung"]
    print("| fault | injected | survived / restored / clean |")
    print("|---|---|---|")
    print(f"| worker killed (1 of 4, every 5 iterations) | {w['faults_injected']} | "
          f"{w['faults_survived']} (short batches: {w['short_batches']}; final return "
          f"{w['final_return']:.1f} vs fault-free {w['fault_free_return']:.1f}) |")
    print(f"| SIGKILL during checkpoint saves | {s['trials']} | {s['restored']} restored "
          f"(temp dirs left by kills: {s['tmp_dirs_after_kill']}, after next save: "
          f"{s['tmp_dirs_left']}) |")
    print(f"| corrupted checkpoints ({c['corrupted']} kinds) | {c['corrupted']} | "
          f"{c['clean_errors']} one-line errors naming the path |")
    print(f"| hung env (sample_timeout_s) | 1 | worker restarts {h['num_worker_restarts']}, "
          f"full batch {h['timesteps_this_iter'] == 256} |")
    print(f"wall time {report['wall_s']} s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
