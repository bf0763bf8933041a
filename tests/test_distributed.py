"""Ray rollout workers: sampling across a pool, fan-out, fault tolerance, named actors."""

import os

import pytest

import jrl
from phase_env import PhaseEnv

ray = pytest.importorskip("ray")

SMALL_PPO = {"train_batch_size": 128, "rollout_fragment_length": 32, "num_envs_per_worker": 2,
             "sgd_minibatch_size": 64, "num_sgd_iter": 1, "model": {"fcnet_hiddens": [8]}}




class CrashingEnv(PhaseEnv):
    """Raises once, on a step of worker 1's first incarnation (a file marks the crash)."""

    def step(self, action):
        marker = self.crash_marker
        if self.worker_index == 1 and self.t == 5 and marker and not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError("injected env failure")
        return super().step(action)


def test_num_workers_zero_never_starts_ray():
    if ray.is_initialized():
        pytest.skip("a Ray cluster from another test is still up")
    trainer = jrl.Trainer("PPO", env="CartPole-v1", config=SMALL_PPO, log_to_disk=False)
    try:
        trainer.train()
        assert not ray.is_initialized()
    finally:
        trainer.stop()


def test_remote_workers_sample_full_batches_and_fan_out(ray_cluster):
    jrl.register_env("jrl-test-phase", lambda cfg: PhaseEnv(cfg))
    trainer = jrl.Trainer("PPO", env="jrl-test-phase",
                          config={**SMALL_PPO, "num_workers": 2}, log_to_disk=False)
    try:
        assert len(trainer.workers.remote_workers()) == 2
        assert trainer.workers.foreach_worker(lambda w: w.worker_index) == [0, 1, 2]
        assert trainer.workers.foreach_worker_with_index(lambda w, i: i) == [0, 1, 2]
        trainer.workers.foreach_worker(lambda w: w.foreach_env(lambda e: e.set_phase(3)))
        phases = trainer.workers.foreach_env(lambda e: e.phase)
        assert phases == [[3, 3], [3, 3], [3, 3]]
        result = trainer.train()
        # 2 workers x 2 envs x 32 steps = 128 per round: exactly one round
        assert result["timesteps_this_iter"] == 128
        assert result["episode_reward_mean"] == pytest.approx(30.0)  # 10 steps x reward 3
        assert result["num_healthy_workers"] == 2
    finally:
        trainer.stop()


def _assert_trees_equal(a, b):
    import jax
    import numpy as np

    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("algo,config", [
    ("PPO", SMALL_PPO),
    ("DQN", {"rollout_fragment_length": 16, "num_envs_per_worker": 1, "train_batch_size": 16,
             "learning_starts": 0, "timesteps_per_iteration": 64, "hiddens": [8],
             "model": {"fcnet_hiddens": [8]}}),
])
def test_every_worker_holds_the_learners_weights_after_train(ray_cluster, algo, config):
    trainer = jrl.Trainer(algo, env="CartPole-v1", config={**config, "num_workers": 2},
                          log_to_disk=False)
    try:
        local = trainer.workers.local_worker()
        assert local.policy_map["default_policy"] is trainer.get_policy()
        for _ in range(2):
            trainer.train()
            learner = trainer.get_policy().get_weights()
            # RLlib's documented call, on the local and both remote workers.
            weights = trainer.workers.foreach_worker(lambda ev: ev.get_policy().get_weights())
            assert len(weights) == 3
            for w in weights:
                _assert_trees_equal(w, learner)
        obs = [0.01, 0.02, -0.01, 0.0]
        remote_actions = trainer.workers.foreach_worker(
            lambda ev: int(ev.get_policy().compute_single_action(obs, explore=False)[0]))
        assert remote_actions == [int(trainer.compute_action(obs))] * 3
        states = trainer.workers.foreach_worker(
            lambda ev: sorted(ev.policy_map["default_policy"].get_state()))
        assert states == [["acting", "weights"]] * 3
        # set_weights on the trainer's policy reaches every worker at once.
        import jax

        halved = jax.tree.map(lambda w: w * 0.5, trainer.get_policy().get_weights())
        trainer.get_policy().set_weights(halved)
        for w in trainer.workers.foreach_worker(lambda ev: ev.get_policy().get_weights()):
            _assert_trees_equal(w, halved)
    finally:
        trainer.stop()


def test_dead_worker_is_replaced_and_its_fragment_resampled(ray_cluster, tmp_path):
    jrl.register_env("jrl-test-crash", lambda cfg: CrashingEnv(cfg))
    config = {**SMALL_PPO, "num_workers": 2, "env_config": {"crash_marker": str(tmp_path / "c")}}
    trainer = jrl.Trainer("PPO", env="jrl-test-crash", config=config, log_to_disk=False)
    try:
        results = [trainer.train() for _ in range(3)]
        assert (tmp_path / "c").exists()
        assert all(r["timesteps_this_iter"] == 128 for r in results)
        assert results[-1]["num_worker_restarts"] == 1
        ray.kill(trainer.workers.remote_workers()[1])
        result = trainer.train()
        assert result["timesteps_this_iter"] == 128
        assert result["num_worker_restarts"] == 2
    finally:
        trainer.stop()


@ray.remote
class Counter:
    def __init__(self):
        self.count = 0

    def inc(self, n):
        self.count += n

    def get(self):
        return self.count


class CountingEnv(PhaseEnv):
    def __init__(self, config):
        super().__init__(config)
        self.counter = ray.get_actor("jrl-test-global-counter")

    def step(self, action):
        self.counter.inc.remote(1)
        return super().step(action)


def test_envs_in_workers_reach_a_named_actor(ray_cluster):
    counter = Counter.options(name="jrl-test-global-counter").remote()
    jrl.register_env("jrl-test-counting", lambda cfg: CountingEnv(cfg))
    trainer = jrl.Trainer("PPO", env="jrl-test-counting",
                          config={**SMALL_PPO, "num_workers": 2}, log_to_disk=False)
    try:
        trainer.train()
        # the local worker samples nothing when remote workers exist
        assert ray.get(counter.get.remote()) >= 128
    finally:
        trainer.stop()
        ray.kill(counter)
