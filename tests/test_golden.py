"""Golden checkpoints: every algorithm's checkpoint written by an earlier release (under
tests/golden/, made by tests/golden/make_golden.py) still restores, and its greedy actions are
the ones recorded then. A layout change must come with a migration in ``jrl.checkpoint``."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import jrl
from jrl import checkpoint as ckpt
from jrl import registry

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
NAMES = sorted(name for name in os.listdir(GOLDEN)
               if os.path.isfile(os.path.join(GOLDEN, name, "expected.json")))


def test_every_algorithm_has_a_golden_checkpoint():
    assert set(registry.algorithm_names()) <= set(NAMES)


@pytest.mark.parametrize("algo", NAMES)
def test_golden_checkpoint_restores_with_the_same_actions(algo):
    with open(os.path.join(GOLDEN, algo, "expected.json")) as f:
        expected = json.load(f)
    path = os.path.join(GOLDEN, algo, expected["checkpoint"])
    with jrl.Trainer.from_checkpoint(path, log_to_disk=False) as trainer:
        assert trainer.algo_name == algo and trainer.iteration == 1
        actions = [np.asarray(trainer.compute_action(np.asarray(obs, np.float32)))
                   for obs in expected["observations"]]
    for got, want in zip(actions, expected["actions"], strict=True):
        np.testing.assert_allclose(got, np.asarray(want), rtol=1e-5, atol=1e-5)


def test_format_1_metadata_is_migrated(tmp_path):
    path = ckpt.save_checkpoint(str(tmp_path), 3, {"algo": {"w": np.ones(2, np.float32)}},
                                {"algo": "PPO", "config": {}})
    meta_file = os.path.join(path, ckpt.METADATA_FILE)
    with open(meta_file) as f:
        meta = json.load(f)
    for key in ("parts", "resume"):
        meta.pop(key, None)
    with open(meta_file, "w") as f:
        json.dump({**meta, "format_version": 1}, f)
    migrated = ckpt.load_metadata(path)
    assert migrated["format_version"] == ckpt.FORMAT_VERSION
    assert migrated["parts"] == ["algo"] and migrated["resume"] == {}
