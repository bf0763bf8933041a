"""``postprocess_inputs``: offline rows postprocessed per episode with the current policy, so
on-policy algorithms (PPO, A2C, PG) learn from ``input`` files."""

from __future__ import annotations

import json
import math

import jax
import numpy as np
import pytest

import jrl
from jrl import registry
from jrl.algorithms import toolkit
from jrl.errors import ConfigError
from jrl.execution.offline import make_input
from jrl.ops.returns import gae
from jrl.rollout.offline import BatchAssembler, JsonReader
from jrl.rollout.worker import SampleBatch

GAMMA, LAMBDA = 0.9, 0.8


def _line(eps_id, t, dones, seed):
    rng = np.random.default_rng(seed)
    n = len(t)
    obs = rng.normal(size=(n + 1, 4)).round(3)
    return json.dumps({
        "type": "SampleBatch", "obs": obs[:-1].tolist(), "new_obs": obs[1:].tolist(),
        "actions": rng.integers(0, 2, n).tolist(), "rewards": rng.normal(size=n).round(3).tolist(),
        "dones": dones, "action_logp": [math.log(0.5)] * n, "eps_id": eps_id, "t": t})


@pytest.fixture
def two_episode_row(tmp_path):
    """One recorded row holding the last 2 steps of episode 7 (cut, not done) and a whole
    3-step episode 8 (terminated)."""
    path = tmp_path / "row.json"
    path.write_text(_line([7, 7, 8, 8, 8], [4, 5, 0, 1, 2], [False] * 4 + [True], 0) + "\n")
    return str(path)


def _ppo(make_trainer, path, **overrides):
    config = dict(input=path, postprocess_inputs=True, train_batch_size=5,
                  rollout_fragment_length=5, sgd_minibatch_size=5, num_envs_per_worker=1,
                  gamma=GAMMA, normalize_advantages=False, input_evaluation=[])
    config["lambda"] = LAMBDA
    return make_trainer("PPO", **{**config, **overrides})


def test_ppo_advantages_are_gae_by_hand_per_episode_with_the_current_value_function(
        two_episode_row, make_trainer):
    trainer = _ppo(make_trainer, two_episode_row)
    cfg, spec = trainer.algo_config, trainer.spec
    source, batch = make_input(registry.get_algorithm_def("PPO"), cfg, spec, 5, 1, None)[0].next()
    assert source == two_episode_row
    # The cut between the episodes is a truncation; the recorded end a termination.
    np.testing.assert_array_equal(batch["truncateds"][:, 0], [False, True, False, False, False])
    np.testing.assert_array_equal(batch["terminateds"][:, 0], [False] * 4 + [True])

    fns = toolkit.make_actor_critic_fns(spec, cfg.model, cfg.observation_filter)
    state = trainer.state
    value = jax.jit(lambda o: fns.forward(state.params, state.obs_filter, o)[1])
    v = np.asarray(value(batch["obs"][:, 0]), np.float64)
    v_next = np.asarray(value(batch["new_obs"][:, 0]), np.float64)
    r = batch["rewards"][:, 0].astype(np.float64)
    # Episode 7: cut after its 2nd step -> bootstrap from V(new_obs), nothing from episode 8.
    a1 = r[1] + GAMMA * v_next[1] - v[1]
    a0 = r[0] + GAMMA * v_next[0] - v[0] + GAMMA * LAMBDA * a1
    # Episode 8 (3 steps): terminated at its last step -> no bootstrap there.
    a4 = r[4] - v[4]
    a3 = r[3] + GAMMA * v_next[3] - v[3] + GAMMA * LAMBDA * a4
    a2 = r[2] + GAMMA * v_next[2] - v[2] + GAMMA * LAMBDA * a3
    by_hand = np.array([a0, a1, a2, a3, a4])

    tr = SampleBatch(batch).to_transition()
    advantages, targets = gae(tr.reward, v[:, None].astype(np.float32),
                              v_next[:, None].astype(np.float32), tr.terminated, tr.truncated,
                              GAMMA, LAMBDA)
    np.testing.assert_allclose(np.asarray(advantages)[:, 0], by_hand, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(targets)[:, 0], by_hand + v, rtol=1e-5, atol=1e-6)

    # Without postprocess_inputs the row is one stream: episode 8 leaks into episode 7.
    plain = JsonReader(two_episode_row, BatchAssembler(5, 1, np.float32, np.int64)).next()
    assert not plain["truncateds"][1, 0]

    # PPO's update learns from the same row (one update on the 5 recorded steps).
    before = jax.tree.leaves(jax.tree.map(np.asarray, state.params))
    result = trainer.train()
    assert result["timesteps_total"] == 5
    assert int(trainer.state.num_updates) == 1
    after = jax.tree.leaves(jax.tree.map(np.asarray, trainer.state.params))
    assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["PPO", "A2C", "PG"])
def test_on_policy_algorithms_learn_from_files_with_off_policy_estimates(algo, two_episode_row,
                                                             make_trainer):
    extra = {"microbatch_size": None, "num_envs_per_worker": 1} if algo == "A2C" else {}
    if algo == "PPO":
        extra = {"sgd_minibatch_size": 10}
    trainer = make_trainer(algo, input=two_episode_row, postprocess_inputs=True,
                           train_batch_size=10, rollout_fragment_length=10, **extra)
    result = trainer.train()
    assert result["timesteps_total"] == 10
    assert set(result["off_policy_estimator"]) == {"is", "wis"}
    assert int(trainer.state.num_updates) == 1


def test_on_policy_input_needs_postprocess_inputs_and_a_feed_forward_model(two_episode_row):
    with pytest.raises(ConfigError, match="postprocess_inputs: true"):
        jrl.Trainer("PPO", env="CartPole-v1", config={"input": two_episode_row},
                    log_to_disk=False)
    with pytest.raises(ConfigError, match="feed-forward"):
        jrl.Trainer("A2C", env="CartPole-v1", config={
            "input": two_episode_row, "postprocess_inputs": True,
            "model": {"use_lstm": True}}, log_to_disk=False)
    with pytest.raises(ConfigError, match="postprocess_inputs"):
        jrl.Trainer("PG", env="CartPole-v1", config={"postprocess_inputs": "yes"},
                    log_to_disk=False)
    with pytest.raises(ConfigError, match="A3C"):
        jrl.Trainer("A3C", env="CartPole-v1", config={"input": two_episode_row},
                    log_to_disk=False)


def test_assembler_joins_a_row_that_continues_the_open_episode():
    def row(eps, t, done_last):
        n = len(t)
        return {"obs": np.zeros((n, 4)), "new_obs": np.zeros((n, 4)),
                "actions": np.zeros(n, np.int64), "rewards": np.ones(n),
                "terminateds": np.array([False] * (n - 1) + [done_last]),
                "truncateds": np.zeros(n, bool), "action_logp": np.zeros(n),
                "eps_id": np.array(eps), "t": np.array(t)}

    assembler = BatchAssembler(6, 1, np.float32, np.int64, episode_cuts=True)
    assembler.add(row([1, 1], [0, 1], False))
    assembler.add(row([1, 2], [2, 0], False))  # continues episode 1, then starts episode 2
    assembler.add(row([3, 3], [0, 1], True))   # does not continue episode 2: cut stays
    batch = assembler.pop()
    np.testing.assert_array_equal(batch["truncateds"][:, 0],
                                  [False, False, True, True, False, False])
    np.testing.assert_array_equal(batch["episode_start"][:, 0],
                                  [True, False, False, True, True, False])
