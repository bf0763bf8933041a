"""The data-parallel learner on 2 CPU devices equals the 1-device update on the same batch."""

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent('''
    import jax, jax.numpy as jnp, numpy as np
    import jrl
    from jrl.algorithms.dqn import postprocess
    from jrl.execution.learner import Learner, learner_devices
    from jrl.registry import make_algorithm
    from jrl.replay.uniform import replay_add, replay_init, replay_sample

    devices = learner_devices(0)
    assert len(devices) == 2, devices

    def compare(a, b):
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64),
                                       rtol=2e-4, atol=2e-5)

    # PPO: full-batch minibatches, so the split batch sees the same data per SGD step.
    trainer = jrl.Trainer("PPO", env="CartPole-v1", log_to_disk=False, config={
        "num_envs_per_worker": 4, "rollout_fragment_length": 16, "train_batch_size": 64,
        "sgd_minibatch_size": 64, "num_sgd_iter": 3, "observation_filter": "MeanStdFilter",
        "model": {"fcnet_hiddens": [16, 16]}})
    assert trainer.backend.plan.learner.num_devices == 2
    worker = trainer.workers.local_worker()
    worker.set_policy(trainer.algorithm.policy(trainer.state))
    batch = worker.sample().to_transition()
    one = jax.jit(make_algorithm("PPO", trainer.algo_config, trainer.spec).update)
    single_state, single_metrics = one(trainer.state, batch)
    two_state, two_metrics = trainer.backend.plan.learner.update(trainer.state, batch)
    compare(single_state, two_state)
    compare(single_metrics, two_metrics)
    result = trainer.train()  # the plan itself runs on both devices
    assert np.isfinite(result["info"]["learner"]["default_policy"]["total_loss"])
    trainer.stop()

    # DQN: the replay batch is split over devices, gradients averaged.
    trainer = jrl.Trainer("DQN", env="CartPole-v1", log_to_disk=False, config={
        "num_envs_per_worker": 2, "train_batch_size": 32, "learning_starts": 0,
        "training_intensity": 16, "model": {"fcnet_hiddens": [16]}, "hiddens": [16]})
    plan = trainer.backend.plan
    assert plan.learner.num_devices == 2
    worker = trainer.workers.local_worker()
    worker.set_policy(plan._policy(trainer.state))
    fragment = worker.sample().to_transition()
    state, replay, batches, _ = plan._add_and_sample(trainer.state, plan.replay, fragment)
    from jrl.execution.learner import scan_updates

    single = jax.jit(scan_updates(trainer.algorithm.update))
    single_state, single_metrics = single(state, batches)
    two_state, two_metrics = plan.learner.update(state, batches)
    compare(single_state, two_state)
    compare(single_metrics, two_metrics)  # td_error [K, N] gathered from both devices
    assert two_metrics["td_error"].shape == (plan.config.updates_per_fragment, 32)
    plan.replay = replay
    for _ in range(3):
        trainer.train()
    trainer.stop()

    # DQN with prioritized replay: priorities come back from the gathered td errors.
    trainer = jrl.Trainer("DQN", env="CartPole-v1", log_to_disk=False, config={
        "num_envs_per_worker": 2, "train_batch_size": 32, "learning_starts": 0,
        "training_intensity": 16, "model": {"fcnet_hiddens": [16]}, "hiddens": [16],
        "prioritized_replay": True, "timesteps_per_iteration": 64})
    plan = trainer.backend.plan
    assert plan.learner.num_devices == 2 and plan.prioritized
    result = trainer.train()
    learner = result["info"]["learner"]["default_policy"]
    assert "td_error" not in learner and np.isfinite(learner["loss"])
    size = int(plan.replay.size)
    leaves = np.asarray(plan.replay.tree[plan.replay.tree.shape[0] // 2:][:size])
    assert len(set(leaves.round(6).tolist())) > 2, "priorities were never written back"
    trainer.stop()

    # APEX in-process: the distributed-replay learner runs on both devices too.
    trainer = jrl.Trainer("APEX", env="CartPole-v1", log_to_disk=False, config={
        "num_workers": 0, "num_envs_per_worker": 2, "rollout_fragment_length": 8,
        "train_batch_size": 32, "learning_starts": 0, "training_intensity": 16,
        "model": {"fcnet_hiddens": [16]}, "hiddens": [16], "timesteps_per_iteration": 64})
    assert trainer.backend.plan.learner.num_devices == 2
    result = trainer.train()
    assert result["replay_shards"]["priority_updates_0"] > 0
    assert np.isfinite(result["info"]["learner"]["default_policy"]["loss"])
    trainer.stop()
    print("OK")
''')


def _run_on_two_cpu_devices(script: str, tmp_path) -> None:
    """Runs ``script`` in a fresh process that sees 2 CPU devices; it must print OK."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_PLATFORMS": "cpu", "JRL_RESULTS_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("OK")


def test_two_device_update_equals_one_device_update(tmp_path):
    _run_on_two_cpu_devices(SCRIPT, tmp_path)


SEEDS_SCRIPT = textwrap.dedent('''
    import jax, numpy as np
    import jrl

    config = {"num_seeds": 4, "num_envs_per_worker": 4, "rollout_fragment_length": 32,
              "train_batch_size": 128, "sgd_minibatch_size": 64, "num_sgd_iter": 2,
              "model": {"fcnet_hiddens": [16]}, "timesteps_per_iteration": 256}
    sharded = jrl.Trainer("PPO", env="gymnax:CartPole-v1", config=config, log_to_disk=False)
    assert len(sharded.backend.seed_devices) == 2
    leaf = jax.tree.leaves(sharded.backend.runner.train_state)[0]
    shards = {s.device for s in leaf.addressable_shards}
    assert len(shards) == 2, shards
    sharded.train()
    one = jrl.Trainer("PPO", env="gymnax:CartPole-v1", config={**config, "num_seeds": 3},
                      log_to_disk=False)
    assert len(one.backend.seed_devices) == 1  # 3 seeds do not divide over 2 devices
    one.train()
    for a, b in zip(jax.tree.leaves(sharded.backend.runner.train_state.params),
                    jax.tree.leaves(one.backend.runner.train_state.params), strict=True):
        np.testing.assert_allclose(np.asarray(a)[:3], np.asarray(b), rtol=2e-4, atol=2e-5)
    print("OK")
''')


@pytest.mark.slow  # CI time; the two-device update test keeps multi-device code in the default run
def test_seeds_shard_over_devices_with_the_same_results(tmp_path):
    _run_on_two_cpu_devices(SEEDS_SCRIPT, tmp_path)


ACTOR_CRITIC_SCRIPT = textwrap.dedent('''
    import jax, numpy as np
    import jrl

    for algo, nets in [("SAC", {"Q_model": {"fcnet_hiddens": [16]},
                                "policy_model": {"fcnet_hiddens": [16]}}),
                       ("TD3", {"actor_hiddens": [16], "critic_hiddens": [16]})]:
        trainer = jrl.Trainer(algo, env="Pendulum-v1", log_to_disk=False, config={
            "num_envs_per_worker": 2, "rollout_fragment_length": 4, "train_batch_size": 32,
            "learning_starts": 0, "training_intensity": 16, "timesteps_per_iteration": 64,
            **nets})
        assert trainer.backend.plan.learner.num_devices == 2
        for _ in range(2):
            result = trainer.train()
        assert np.isfinite(result["info"]["learner"]["default_policy"]["critic_loss"])
        assert int(trainer.state.num_updates) == 64
        trainer.stop()
    print("OK")
''')


def test_replay_actor_critics_train_on_two_devices(tmp_path):
    """SAC and TD3 updates (per-device noise keys, three optimizers) run data-parallel."""
    _run_on_two_cpu_devices(ACTOR_CRITIC_SCRIPT, tmp_path)


def test_rollout_workers_act_on_the_host_unless_given_gpus(monkeypatch):
    """With an accelerator as JAX's default backend, workers act on the CPU unless
    ``num_gpus_per_worker > 0`` (RLlib's placement); on a CPU backend nothing is moved."""
    import jax

    from jrl.registry import parse_config
    from jrl.rollout import worker

    config = parse_config("PPO", {})
    assert worker.acting_device(config) is None  # CPU backend: JAX's default device
    monkeypatch.setattr(worker.jax, "default_backend", lambda: "gpu")
    assert worker.acting_device(config) == jax.devices("cpu")[0]
    assert worker.acting_device(parse_config("PPO", {"num_gpus_per_worker": 1})) is None
