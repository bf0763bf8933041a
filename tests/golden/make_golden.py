"""Writes tests/golden/<ALGO>/: a small checkpoint of every algorithm after one training
iteration, and ``expected.json`` with its greedy ``compute_action`` outputs on fixed
observations. ``tests/test_golden.py`` restores them with every later version of jrl.

    PYTHONPATH=src python tests/golden/make_golden.py [ALGO ...]

Run it only for a new algorithm (existing goldens are kept as the release wrote them); a
checkpoint layout change bumps ``jrl.checkpoint.FORMAT_VERSION`` and adds a migration instead.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/, for conftest's small configs

CONTINUOUS = {"DDPG", "TD3", "APEX_DDPG"}


def env_for(algo: str) -> str:
    return "Pendulum-v1" if algo in CONTINUOUS else "CartPole-v1"


def observations(env: str) -> list[list[float]]:
    rng = np.random.default_rng(0)
    if env == "Pendulum-v1":
        angles = rng.uniform(-np.pi, np.pi, 4)
        return [[float(np.cos(a)), float(np.sin(a)), float(v)]
                for a, v in zip(angles, rng.uniform(-8, 8, 4), strict=True)]
    return rng.uniform(-0.2, 0.2, (4, 4)).round(6).tolist()


def write(algo: str) -> None:
    import jrl
    from conftest import SMALL_CONFIGS

    env = env_for(algo)
    directory = os.path.join(HERE, algo)
    shutil.rmtree(directory, ignore_errors=True)
    config = {**SMALL_CONFIGS[algo], "num_workers": 0}
    with jrl.Trainer(algo, env=env, config=config, log_to_disk=False) as trainer:
        trainer.train()
        path = trainer.save(directory)
        obs = observations(env)
        actions = [np.asarray(trainer.compute_action(np.asarray(o, np.float32))).tolist()
                   for o in obs]
    with open(os.path.join(directory, "expected.json"), "w") as f:
        json.dump({"algo": algo, "env": env, "checkpoint": os.path.basename(path),
                   "observations": obs, "actions": actions}, f, indent=1)
        f.write("\n")
    print(algo, env, path)


if __name__ == "__main__":
    from jrl import registry

    for name in sys.argv[1:] or registry.algorithm_names():
        write(name)
