"""Exact resume: training N iterations straight and training N/2, saving, restoring into a new
trainer (``Trainer.from_checkpoint``) and training N/2 more end bit-identical on CPU — for the
gymnasium path (CartPole is deterministic given its reset seed and actions) and the jitted loop.
Plus ``info["replay_buffer_size"]``, the DQN buffer and counters surviving a restore, and
``keep_checkpoints_num`` / ``checkpoint_score_attr``."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

import jrl
from jrl import checkpoint as ckpt
from jrl.errors import CheckpointError


def _state(trainer) -> list[np.ndarray]:
    """Every array a run carries on with: learner, runner and replay buffer."""
    return [np.asarray(x) for x in
            jax.tree.leaves(trainer.backend.checkpoint_parts(include_replay=True))]


def _straight_and_resumed(algo: str, env: str, config: dict, tmp_path, iterations: int = 2):
    straight = jrl.Trainer(algo, env=env, config=config, log_to_disk=False)
    first = jrl.Trainer(algo, env=env, config=config, log_to_disk=False)
    try:
        for _ in range(iterations):
            straight.train()
        for _ in range(iterations // 2):
            first.train()
        path = first.save(str(tmp_path))
    finally:
        first.stop()
    resumed = jrl.Trainer.from_checkpoint(path, log_to_disk=False)
    try:
        assert resumed.iteration == iterations // 2
        results = [resumed.train() for _ in range(iterations - iterations // 2)]
        return _state(straight), _state(resumed), results, path
    finally:
        straight.stop()
        resumed.stop()


def _assert_identical(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_ppo_gymnasium_resume_is_bit_identical(small_config, tmp_path):
    straight, resumed, results, _ = _straight_and_resumed(
        "PPO", "CartPole-v1", small_config("PPO"), tmp_path)
    _assert_identical(straight, resumed)
    assert results[-1]["training_iteration"] == 2


def test_dqn_gymnasium_resume_keeps_buffer_and_counters(small_config, tmp_path):
    config = small_config("DQN", store_buffer_in_checkpoints=True, learning_starts=64)
    straight, resumed, results, path = _straight_and_resumed("DQN", "CartPole-v1", config,
                                                             tmp_path)
    _assert_identical(straight, resumed)
    meta = ckpt.load_metadata(path)
    # one 16-env x 4-step fragment per iteration: the first only fills the buffer, the second
    # (the resumed one) learns; bit-identical params show learning_starts was not waited out
    # again after the restore
    assert meta["parts"] == ["algo", "replay"] and meta["resume"]["plan"]["env_steps"] == 64
    assert results[-1]["info"]["replay_buffer_size"] == 128
    assert results[-1]["info"]["num_steps_trained"] > 0


# Both compile the jitted loop's chunk (tens of seconds on 2 cores), so they run with -m slow.
# PPO's is test_anakin's trainer config, so the compiled chunk is shared with that test.
_JITTED_PPO = {"gamma": 0.99, "lambda": 0.95, "lr": 2.5e-3, "num_envs_per_worker": 4,
               "rollout_fragment_length": 128, "train_batch_size": 512,
               "sgd_minibatch_size": 128, "num_sgd_iter": 4,
               "model": {"fcnet_hiddens": [32, 32]}, "num_seeds": 2,
               "timesteps_per_iteration": 1024}
_JITTED_DQN = {"train_batch_size": 16, "rollout_fragment_length": 4, "num_envs_per_worker": 4,
               "n_step": 2, "learning_starts": 16, "buffer_size": 256, "hiddens": [16],
               "timesteps_per_iteration": 32, "target_network_update_freq": 8,
               "store_buffer_in_checkpoints": True, "model": {"fcnet_hiddens": [16, 16]}}


@pytest.mark.parametrize("algo, config", [
    ("PPO", _JITTED_PPO),
    ("DQN", _JITTED_DQN),
])
@pytest.mark.slow
def test_jitted_loop_resume_is_bit_identical(algo, config, tmp_path):
    pytest.importorskip("gymnax")
    straight, resumed, _, path = _straight_and_resumed(algo, "gymnax:CartPole-v1", config,
                                                       tmp_path)
    _assert_identical(straight, resumed)
    assert "runner" in ckpt.load_metadata(path)["parts"]


def test_restore_none_and_bad_metadata_are_checkpoint_errors(make_trainer, tmp_path):
    trainer = make_trainer("PPO")
    with pytest.raises(CheckpointError, match="needs a checkpoint path"):
        trainer.restore(None)
    with pytest.raises(CheckpointError, match="needs a checkpoint path"):
        jrl.Trainer.from_checkpoint(None)
    path = trainer.save(str(tmp_path))
    meta_file = os.path.join(path, ckpt.METADATA_FILE)
    meta = json.loads(open(meta_file).read())
    for key, value, message in [("training_iteration", "abc", "training_iteration"),
                                ("config", [1, 2], "config")]:
        with open(meta_file, "w") as f:
            json.dump({**meta, key: value}, f)
        with pytest.raises(CheckpointError, match=message) as info:
            jrl.Trainer.from_checkpoint(path, log_to_disk=False)
        assert path in str(info.value)


def _fake_checkpoint(directory, iteration: int, reward: float) -> str:
    return ckpt.save_checkpoint(str(directory), iteration, {"x": np.zeros(2, np.float32)},
                                {"result": {"episode_reward_mean": reward}})


def test_keep_checkpoints_num_keeps_the_best_and_the_newest(tmp_path):
    for iteration, reward in enumerate([5.0, 9.0, 1.0, 7.0, 2.0], start=1):
        _fake_checkpoint(tmp_path, iteration, reward)
    removed = ckpt.prune_checkpoints(str(tmp_path), 2, "episode_reward_mean")
    kept = [os.path.basename(p) for p in ckpt.list_checkpoints(str(tmp_path))]
    assert kept == ["checkpoint_000002", "checkpoint_000004", "checkpoint_000005"]
    assert len(removed) == 2 and not [n for n in os.listdir(tmp_path) if n.startswith(".tmp")]
    ckpt.prune_checkpoints(str(tmp_path), 1, "min-episode_reward_mean")
    kept = [os.path.basename(p) for p in ckpt.list_checkpoints(str(tmp_path))]
    assert kept == ["checkpoint_000005"]  # the lowest reward is also the newest


def test_keep_checkpoints_num_from_the_cli(small_config, tmp_path, capsys):
    from jrl.cli import main

    rc = main(["train", "--algo", "PPO", "--env", "CartPole-v1", "-q",
               "--config", json.dumps(small_config("PPO")), "--stop", "training_iteration=3",
               "--checkpoint-freq", "1", "--keep-checkpoints-num", "1",
               "--local-dir", str(tmp_path)])
    assert rc == 0
    trial = next((tmp_path / "default").iterdir())
    assert [p.name for p in trial.iterdir() if p.name.startswith("checkpoint_")] == \
        ["checkpoint_000003"]


def test_stale_temp_directories_are_cleaned_on_save(tmp_path):
    dead = tmp_path / ".tmp_checkpoint_000003_999999999_0123abcd"  # a pid that cannot exist
    dead.mkdir()
    (dead / "state").mkdir()
    old_style = tmp_path / ".tmp_checkpoint_000002_89abcdef"
    old_style.mkdir()
    os.utime(old_style, (0, 0))  # written long ago by an unknown process
    mine = tmp_path / f".tmp_checkpoint_000004_{os.getpid()}_fedcba98"
    mine.mkdir()  # a save in progress in this process is left alone
    _fake_checkpoint(tmp_path, 5, 1.0)
    names = sorted(os.listdir(tmp_path))
    assert names == [mine.name, "checkpoint_000005"]
