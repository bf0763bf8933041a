"""APEX: per-worker exploration, replay shards as Ray actors, the prefetching learner."""

import threading
import time

import jax
import numpy as np
import pytest

import jrl
from jrl.algorithms.apex import per_worker_epsilon, worker_policy
from jrl.registry import parse_config

ray = pytest.importorskip("ray")

SMALL_APEX = {"train_batch_size": 32, "rollout_fragment_length": 10, "num_envs_per_worker": 2,
              "n_step": 3, "learning_starts": 200, "buffer_size": 2000,
              "timesteps_per_iteration": 400, "target_network_update_freq": 200,
              "training_intensity": 4, "max_weight_sync_delay": 100, "hiddens": [16],
              "model": {"fcnet_hiddens": [16]}, "seed": 0}


def test_per_worker_epsilon_follows_the_ape_x_formula():
    # eps_i = 0.4 ** (1 + 7 i / (N - 1)) for N = 8: i=0 -> 0.4, i=7 -> 0.4**8, i=1 -> 0.4**2
    assert per_worker_epsilon(0, 8) == pytest.approx(0.4)
    assert per_worker_epsilon(1, 8) == pytest.approx(0.16)
    assert per_worker_epsilon(7, 8) == pytest.approx(0.4 ** 8)
    assert per_worker_epsilon(2, 3) == pytest.approx(0.4 ** 8)
    assert per_worker_epsilon(1, 3) == pytest.approx(0.4 ** 4.5)
    assert per_worker_epsilon(0, 1) == pytest.approx(0.4)  # a single worker keeps eps
    assert per_worker_epsilon(1, 2, epsilon=0.5, alpha=1.0) == pytest.approx(0.25)


def test_remote_worker_i_acts_with_its_own_epsilon():
    from jrl.algorithms.dqn import DQNPolicy

    config = parse_config("APEX", {"num_workers": 3})
    policy = DQNPolicy(params={}, obs_filter=None, epsilon=np.float32(1.0))
    eps = [float(worker_policy(config, policy, i, 3).epsilon) for i in (1, 2, 3)]
    np.testing.assert_allclose(eps, [0.4, 0.4 ** 4.5, 0.4 ** 8], rtol=1e-6)
    off = parse_config("APEX", {"per_worker_exploration": False})
    assert float(worker_policy(off, policy, 2, 3).epsilon) == 1.0


def test_apex_refuses_uniform_replay():
    with pytest.raises(jrl.ConfigError, match="prioritized_replay"):
        parse_config("APEX", {"prioritized_replay": False})


def test_apex_with_remote_workers_fills_shards_and_updates_priorities(ray_cluster, tmp_path):
    trainer = jrl.Trainer("APEX", env="CartPole-v1", log_to_disk=False,
                          config={**SMALL_APEX, "num_workers": 2, "num_replay_buffer_shards": 2,
                                  "store_buffer_in_checkpoints": True})
    plan = trainer.backend.plan
    shards = list(plan.shards)
    try:
        assert len(shards) == 2 and len(trainer.workers.remote_workers()) == 2
        results = [trainer.train() for _ in range(3)]
        last = results[-1]
        sizes = [last["replay_shards"][f"size_{i}"] for i in range(2)]
        assert all(size > 0 for size in sizes), sizes  # round robin feeds both shards
        assert sum(sizes) <= 2000
        assert sum(last["replay_shards"][f"priority_updates_{i}"] for i in range(2)) > 0
        throughput = last["learner_throughput"]
        assert throughput["num_updates"] > 0 and throughput["updates_per_s"] > 0
        assert [t for t in threading.enumerate() if t.name == "jrl-replay-prefetch"]
        assert throughput["samples_per_s"] > 0
        learner = last["info"]["learner"]["default_policy"]
        assert "td_error" not in learner and np.isfinite(learner["loss"])
        assert last["timesteps_total"] >= 3 * 400
        # the replay ratio stays near training_intensity (samples trained / env steps)
        trained = throughput["num_updates"] * 32
        assert trained <= 4 * (last["timesteps_total"] - 200) + 2 * 32 * plan.num_updates_per_call
        # every shard holds priority mass to sample from
        stats = ray.get([s.stats.remote() for s in shards])
        assert all(s["total_priority"] > 0 for s in stats)
        assert last["episodes_total"] > 0
        # both shard actors' buffers go into the checkpoint and come back on restore (fragments
        # still in flight add to the shards after train() returns: let them land first)
        assert last["info"]["replay_buffer_size"] >= sum(sizes)  # read a moment later
        ray.wait(list(plan._pending), num_returns=len(plan._pending))
        saved = _arrays(plan.replay)
        path = trainer.save(str(tmp_path))
        trainer.train()  # the shards move on ...
        ray.wait(list(plan._pending), num_returns=len(plan._pending))
        assert trainer.backend.replay_buffer_size > sum(sizes)
        trainer.restore(path)  # ... and return to the saved buffers
        for x, y in zip(saved, _arrays(plan.replay), strict=True):
            np.testing.assert_array_equal(x, y)
    finally:
        trainer.stop()
    # clean shutdown: the prefetch thread is gone and the shard actors are dead
    assert not [t for t in threading.enumerate() if t.name == "jrl-replay-prefetch"]
    for shard in shards:
        assert _eventually_dead(shard)


def _eventually_dead(actor, timeout: float = 30.0) -> bool:
    """``ray.kill`` is asynchronous: a call right after it may still be served."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            ray.get(actor.stats.remote(), timeout=5)
        except ray.exceptions.RayActorError:
            return True
        except ray.exceptions.GetTimeoutError:
            continue
        time.sleep(0.2)
    return False


def test_apex_with_num_workers_zero_runs_in_process(tmp_path):
    from jrl import checkpoint as ckpt

    trainer = jrl.Trainer("APEX", env="CartPole-v1", log_to_disk=False,
                          config={**SMALL_APEX, "num_workers": 0})
    try:
        result = trainer.train()
        assert result["replay_shards"]["size_0"] >= 400 - 20
        assert result["info"]["replay_buffer_size"] == result["replay_shards"]["size_0"]
        assert result["learner_throughput"]["num_updates"] > 0
        assert result["replay_shards"]["priority_updates_0"] > 0
        assert not ray.is_initialized() or trainer.backend.plan._thread is None
        # without store_buffer_in_checkpoints: no shard in the checkpoint, counters still are
        meta = ckpt.load_metadata(trainer.save(str(tmp_path)))
        assert meta["parts"] == ["algo"]
        assert meta["resume"]["plan"]["env_steps"] == result["timesteps_total"]
        assert meta["resume"]["plan"]["shards"][0]["added"] == result["replay_shards"]["added_0"]
    finally:
        trainer.stop()


def test_apex_ddpg_worker_i_explores_with_its_own_noise_scale():
    from jrl.algorithms.apex_ddpg import worker_policy as ddpg_worker_policy
    from jrl.algorithms.ddpg import DDPGPolicy

    config = parse_config("APEX_DDPG", {"num_workers": 3, "exploration_config": {"stddev": 0.5}})
    policy = DDPGPolicy(params={}, obs_filter=None, noise_scale=np.float32(9.0),
                        random_actions=np.bool_(False))
    scales = [float(ddpg_worker_policy(config, policy, i, 3).noise_scale) for i in (1, 2, 3)]
    np.testing.assert_allclose(scales, [0.5 * 0.4, 0.5 * 0.4 ** 4.5, 0.5 * 0.4 ** 8], rtol=1e-6)


def test_replay_shard_adds_samples_and_takes_priority_updates():
    from jrl.execution.distributed_replay import ReplayShard
    from jrl.types import ReplayBatch

    def items(n, start):
        x = np.arange(start, start + n, dtype=np.float32)[:, None]
        return ReplayBatch(obs=x, action=np.zeros(n, np.int32), reward=x[:, 0],
                           discount=np.ones(n, np.float32), next_obs=x,
                           weight=np.ones(n, np.float32))

    example = jax.tree.map(lambda a: a[0], items(1, 0))
    shard = ReplayShard(example, capacity=8, alpha=1.0, seed=0)
    assert shard.sample(4, 2, 0.4) is None  # empty: nothing to sample yet
    assert shard.add(items(2, 0), np.array([1.0, 3.0], np.float32)) == 2  # worker-side
    assert shard.add(items(2, 2)) == 4  # no priorities: the max seen (3)
    leaves = np.asarray(shard._state.tree[8:12])
    np.testing.assert_allclose(leaves, [1.0, 3.0, 3.0, 3.0])
    batches, index = shard.sample(16, 3, 1.0)
    assert index.shape == (3, 16) and batches.obs.shape == (3, 16, 1)
    np.testing.assert_array_equal(batches.obs[..., 0], index)  # items match their indices
    np.testing.assert_allclose(batches.weight, np.where(index == 0, 1.0, 1.0 / 3.0), rtol=1e-6)
    shard.update_priorities(index[:, :1], np.full((3, 1), 10.0, np.float32))
    stats = shard.stats()
    assert stats["priority_updates"] == 3 and stats["sampled"] == 48 and stats["added"] == 4
    assert stats["total_priority"] > 10.0



def _arrays(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_apex_checkpoint_keeps_the_replay_shard_and_resume_is_exact(small_config, tmp_path):
    # num_workers 0: one in-process shard. Weights go out every step (delay 1), so after the
    # restore the resumed run acts with the same weights as the straight one.
    config = small_config("APEX", store_buffer_in_checkpoints=True, max_weight_sync_delay=1)
    straight = jrl.Trainer("APEX", env="CartPole-v1", config=config, log_to_disk=False)
    first = jrl.Trainer("APEX", env="CartPole-v1", config=config, log_to_disk=False)
    try:
        for _ in range(2):
            straight.train()
        first.train()
        saved_size = first.backend.replay_buffer_size
        path = first.save(str(tmp_path))
    finally:
        first.stop()
    resumed = jrl.Trainer.from_checkpoint(path, log_to_disk=False)
    try:
        assert resumed.backend.replay_buffer_size == saved_size == 32
        results = [resumed.train()]
        assert results[-1]["info"]["replay_buffer_size"] == 64
        assert results[-1]["replay_shards"]["size_0"] == 64
        assert results[-1]["learner_throughput"]["num_updates"] > 0
        expected = _arrays(straight.backend.checkpoint_parts(include_replay=True))
        got = _arrays(resumed.backend.checkpoint_parts(include_replay=True))
        assert len(expected) == len(got)
        for x, y in zip(expected, got, strict=True):
            np.testing.assert_array_equal(x, y)
    finally:
        straight.stop()
        resumed.stop()
