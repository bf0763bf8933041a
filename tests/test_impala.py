"""IMPALA and APPO losses by hand; the async-samples plan with Ray workers."""

import math
import os
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrl
from jrl.algorithms.appo import APPOConfig, appo_loss
from jrl.algorithms.impala import ImpalaConfig, impala_loss
from jrl.networks.distributions import Categorical
from jrl.types import Transition
from phase_env import PhaseEnv

LEARNER_THREAD = "jrl-async-learner"


def _batch(reward, behaviour_logp, terminated=None):
    T, B = np.shape(reward)
    flags = jnp.zeros((T, B), bool)
    zeros = jnp.zeros((T, B, 1))
    return Transition(obs=zeros, action=jnp.zeros((T, B), jnp.int32),
                      reward=jnp.asarray(reward, jnp.float32),
                      terminated=flags if terminated is None else jnp.asarray(terminated),
                      truncated=flags, next_obs=zeros,
                      behaviour_logp=jnp.asarray(behaviour_logp, jnp.float32))


def test_impala_loss_by_hand():
    config = ImpalaConfig(gamma=0.9, vf_loss_coeff=0.5, entropy_coeff=0.01)
    logp = jnp.log(jnp.array([[0.5], [0.25]]))
    batch = _batch([[1.0], [1.0]], jnp.log(jnp.array([[0.5], [0.5]])))  # rho = 1, 0.5
    v_t, v_tp1 = jnp.array([[1.0], [2.0]]), jnp.array([[2.0], [3.0]])
    entropy = jnp.array([[0.6], [0.4]])
    total, stats = impala_loss(logp, entropy, v_t, v_tp1, batch, config)
    # vs_1 = 2 + 0.5 * (1 + 0.9 * 3 - 2) = 2.85
    # vs_0 = 1 + (1 + 0.9 * 2 - 1) + 0.9 * 1 * (2.85 - 2) = 3.565
    # pg_0 = 1 * (1 + 0.9 * 2.85 - 1) = 2.565,  pg_1 = 0.5 * (1 + 0.9 * 3 - 2) = 0.85
    policy_loss = -(math.log(0.5) * 2.565 + math.log(0.25) * 0.85) / 2
    vf_loss = 0.5 * ((3.565 - 1.0) ** 2 + (2.85 - 2.0) ** 2) / 2
    expected = policy_loss + 0.5 * vf_loss - 0.01 * 0.5
    np.testing.assert_allclose(stats["policy_loss"], policy_loss, rtol=1e-5)
    np.testing.assert_allclose(stats["vf_loss"], vf_loss, rtol=1e-5)
    np.testing.assert_allclose(total, expected, rtol=1e-5)
    np.testing.assert_allclose(stats["mean_rho"], 0.75, rtol=1e-6)
    # The targets are constants: d/dlogp = -pg / N, d/dv = (v - vs) * vf_coeff / N.
    d_logp, d_v = jax.grad(lambda lp, v: impala_loss(lp, entropy, v, v_tp1, batch, config)[0],
                           argnums=(0, 1))(logp, v_t)
    np.testing.assert_allclose(d_logp[:, 0], [-2.565 / 2, -0.85 / 2], rtol=1e-5)
    np.testing.assert_allclose(d_v[:, 0], [0.5 * (1 - 3.565) / 2, 0.5 * (2 - 2.85) / 2],
                               rtol=1e-5)


def test_impala_without_vtrace_treats_the_batch_as_on_policy():
    config = ImpalaConfig(vtrace=False, gamma=0.9)
    logp = jnp.log(jnp.array([[0.5], [0.25]]))
    batch = _batch([[1.0], [1.0]], jnp.log(jnp.array([[0.1], [0.9]])))
    v_t, v_tp1 = jnp.array([[1.0], [2.0]]), jnp.array([[2.0], [3.0]])
    _, stats = impala_loss(logp, jnp.zeros((2, 1)), v_t, v_tp1, batch, config)
    # on-policy lambda=1 targets: vs_1 = 1 + 0.9 * 3 = 3.7, vs_0 = 1 + 0.9 * 3.7 = 4.33
    np.testing.assert_allclose(stats["mean_rho"], 1.0)
    np.testing.assert_allclose(stats["vf_loss"], 0.5 * ((4.33 - 1) ** 2 + (3.7 - 2) ** 2) / 2,
                               rtol=1e-5)


def test_appo_loss_clips_the_ratio_to_the_old_policy():
    config = APPOConfig(clip_param=0.2, vf_loss_coeff=0.0, entropy_coeff=0.0)
    old = Categorical(jnp.log(jnp.array([[0.5, 0.5], [0.5, 0.5]])))
    new = Categorical(jnp.log(jnp.array([[0.75, 0.25], [0.75, 0.25]])))  # ratio 1.5 for a=0
    minibatch = {"actions": jnp.array([0, 0]), "old_logp": jnp.log(jnp.array([0.5, 0.5])),
                 "pg_advantages": jnp.array([1.0, -1.0]), "vs": jnp.zeros(2)}
    total, stats = appo_loss(new, jnp.zeros(2), minibatch, old, config, jnp.asarray(0.0))
    # A > 0: min(1.5, 1.2) * 1 = 1.2;  A < 0: min(-1.5, -1.2) = -1.5
    np.testing.assert_allclose(stats["policy_loss"], -(1.2 - 1.5) / 2, rtol=1e-6)
    np.testing.assert_allclose(stats["clip_frac"], 1.0)
    with_kl = APPOConfig(clip_param=0.2, vf_loss_coeff=0.0, entropy_coeff=0.0, use_kl_loss=True)
    total_kl, _ = appo_loss(new, jnp.zeros(2), minibatch, old, with_kl, jnp.asarray(2.0))
    np.testing.assert_allclose(total_kl - total, 2.0 * stats["kl"], rtol=1e-5)


def test_sync_plan_reports_the_async_metrics(make_trainer):
    trainer = make_trainer("IMPALA")
    result = trainer.train()
    assert result["policy_lag"]["mean"] == 0
    assert result["learner_queue"]["size_mean"] == 0
    assert 0.0 <= result["learner_idle_fraction"] <= 1.0
    assert result["num_learner_updates"] == 1


# ------------------------------------------------------------------- with Ray workers

ray = pytest.importorskip("ray")

ASYNC = {"num_workers": 2, "train_batch_size": 32, "rollout_fragment_length": 16,
         "num_envs_per_worker": 2, "learner_queue_size": 4, "model": {"fcnet_hiddens": [16]}}


def _learner_threads():
    return [t for t in threading.enumerate() if t.name == LEARNER_THREAD and t.is_alive()]


def test_async_plan_learns_reports_its_metrics_and_surfaces_learner_errors(ray_cluster):
    trainer = jrl.Trainer("IMPALA", env="CartPole-v1", config=ASYNC, log_to_disk=False)
    try:
        updates, results = 0, []
        while updates < 6:
            results.append(trainer.train())
            updates += results[-1]["num_learner_updates"]
            assert len(results) < 200, "the learner thread never learned"
        assert len(_learner_threads()) == 1
        assert int(trainer.state.num_updates) >= 1
        lags = [r["policy_lag"]["mean"] for r in results if r["num_learner_updates"]]
        assert lags and all(lag >= 0 for lag in lags)
        last = results[-1]
        assert set(last["learner_queue"]) == {"size_mean", "size_max", "capacity"}
        assert 0 <= last["learner_queue"]["size_max"] <= 4
        assert 0.0 <= last["learner_idle_fraction"] <= 1.0
        assert all(r["timesteps_this_iter"] == 32 for r in results)
        assert math.isfinite(last["info"]["learner"]["default_policy"]["total_loss"])

        # Weights set between iterations replace the learner's state (an update running on the
        # old state is dropped): after a few Adam steps from zero every weight is still tiny.
        zeros = jax.tree.map(np.zeros_like, trainer.get_weights())
        trainer.set_weights(zeros)
        trainer.train()
        leaves = jax.tree.leaves(trainer.get_weights())
        assert max(float(np.abs(w).max()) for w in leaves) < 0.05

        def broken_update(state, batch):
            raise FloatingPointError("injected learner failure")

        trainer.backend.plan.learner.update = broken_update
        with pytest.raises(FloatingPointError, match="injected learner failure"):
            for _ in range(100):
                trainer.train()
    finally:
        trainer.stop()
    assert not _learner_threads()


class CrashingEnv(PhaseEnv):
    """Raises once, on a step of worker 1's first incarnation (a file marks the crash)."""

    def step(self, action):
        marker = self.crash_marker
        if self.worker_index == 1 and self.t == 5 and marker and not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError("injected env failure")
        return super().step(action)


def test_dead_worker_is_replaced_and_streaming_goes_on(ray_cluster, tmp_path):
    jrl.register_env("jrl-test-impala-crash", lambda cfg: CrashingEnv(cfg))
    config = {**ASYNC, "env_config": {"crash_marker": str(tmp_path / "c")}}
    trainer = jrl.Trainer("IMPALA", env="jrl-test-impala-crash", config=config,
                          log_to_disk=False)
    try:
        # Workers stream independently: worker 2 may deliver many fragments before worker 1
        # reaches its crash, so train until the failure has been handled.
        results = []
        while not results or results[-1]["num_worker_restarts"] < 1:
            results.append(trainer.train())
            assert len(results) < 300, "the crash of worker 1 was never handled"
        assert (tmp_path / "c").exists()
        results += [trainer.train() for _ in range(4)]
        assert results[-1]["num_worker_restarts"] == 1
        assert results[-1]["num_healthy_workers"] == 2
        assert all(r["timesteps_this_iter"] == 32 for r in results)
    finally:
        trainer.stop()


DATA_PARALLEL_SCRIPT = """
import jax, numpy as np
import jrl
from jrl.execution.async_samples import concat_envs
from jrl.registry import make_algorithm

for algo, extra in [("IMPALA", {"num_sgd_iter": 2}), ("APPO", {"num_sgd_iter": 2})]:
    trainer = jrl.Trainer(algo, env="CartPole-v1", log_to_disk=False, config={
        "num_envs_per_worker": 2, "rollout_fragment_length": 16, "train_batch_size": 64,
        "observation_filter": "MeanStdFilter", "model": {"fcnet_hiddens": [16]}, **extra})
    plan = trainer.backend.plan
    assert plan.learner.num_devices == 2
    worker = trainer.workers.local_worker()
    worker.set_policy(trainer.algorithm.policy(trainer.state))
    batch = concat_envs([worker.sample() for _ in range(plan.fragments_per_batch)])
    batch = batch.to_transition()
    one = jax.jit(make_algorithm(algo, trainer.algo_config, trainer.spec).update)
    for a, b in zip(jax.tree.leaves(one(trainer.state, batch)),
                    jax.tree.leaves(plan.learner.update(trainer.state, batch)), strict=True):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                                   rtol=2e-4, atol=2e-5)
    trainer.train()
    trainer.stop()
print("OK")
"""


def test_two_device_update_equals_one_device_update(tmp_path):
    """IMPALA and APPO split the batch's env axis over 2 CPU devices: same state and metrics."""
    from test_data_parallel import _run_on_two_cpu_devices

    _run_on_two_cpu_devices(DATA_PARALLEL_SCRIPT, tmp_path)
