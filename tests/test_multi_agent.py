"""Multi-agent training: env contract, agent -> policy mapping, per-policy batches and learner
states, frozen policies, checkpoints of every policy, bad mappings, Ray workers, the CLI."""

from __future__ import annotations

import json

import gymnasium as gym
import jax
import numpy as np
import pytest

import jrl
from jrl import cli
from jrl.backends.multi_agent import PolicyWorkers
from jrl.rollout.multi_agent_env import ALL
from jrl.rollout.offline import unpack

CARTPOLE = "jrl.rollout.multi_agent_examples:MultiAgentCartPole"
OWN_POLICY = "jrl.rollout.multi_agent_examples:agent_to_own_policy"
SMALL_PPO = {"train_batch_size": 128, "rollout_fragment_length": 32, "num_envs_per_worker": 2,
             "sgd_minibatch_size": 128, "num_sgd_iter": 1, "model": {"fcnet_hiddens": [16]}}


class LateJoinEnv(jrl.MultiAgentEnv):
    """Agent "a" starts alone; "b" joins after the first step; "a" leaves (terminated) after
    the second; the episode ends after the fourth step. Observations are ``[code, t]``,
    rewards 1 for "a" and 2 for "b" whenever they acted."""

    def __init__(self, config=None):
        self.possible_agents = ["a", "b"]
        self.observation_space = gym.spaces.Box(-10.0, 10.0, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.t = 0

    def _obs(self, agent):
        return np.array([1.0 if agent == "a" else 2.0, self.t], np.float32)

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return {"a": self._obs("a")}, {"a": {}}

    def step(self, action_dict):
        self.t += 1
        rewards = {agent: 1.0 if agent == "a" else 2.0 for agent in action_dict}
        obs, terms = {}, {ALL: self.t >= 4}
        if "a" in action_dict:
            obs["a"] = self._obs("a")
            terms["a"] = self.t >= 2
        if self.t >= 1:
            obs["b"] = self._obs("b")
            terms["b"] = self.t >= 4
        return obs, rewards, terms, {ALL: False}, {}


class TurnEnv(jrl.MultiAgentEnv):
    """"x" acts on even steps, "y" on odd ones; every step both get a reward (x: 1, y: 10);
    six steps per episode."""

    def __init__(self, config=None):
        self.possible_agents = ["x", "y"]
        self.observation_space = gym.spaces.Box(-10.0, 10.0, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.t = 0

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return {"x": np.zeros(1, np.float32)}, {}

    def step(self, action_dict):
        assert list(action_dict) == ["x" if self.t % 2 == 0 else "y"]
        self.t += 1
        done = self.t >= 6
        who = "x" if self.t % 2 == 0 else "y"
        return ({who: np.full(1, self.t, np.float32)}, {"x": 1.0, "y": 10.0},
                {ALL: done}, {ALL: False}, {})


jrl.register_env("jrl-test-late-join", lambda cfg: LateJoinEnv(cfg))
jrl.register_env("jrl-test-turns", lambda cfg: TurnEnv(cfg))


def by_name(agent_id, *args, **kwargs):
    return f"p{agent_id}"


def _trainer(env, algo="PG", **config):
    return jrl.Trainer(algo, env=env, log_to_disk=False, config={
        "num_envs_per_worker": 1, "rollout_fragment_length": 4, "train_batch_size": 8,
        "model": {"fcnet_hiddens": [8]}, **config})


def _leaves_equal(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y))
                                      for x, y in zip(la, lb, strict=True))


def test_late_joining_and_early_leaving_agents_get_their_own_transitions():
    trainer = _trainer("jrl-test-late-join", multiagent={
        "policies": {"pb", "pa"}, "policy_mapping_fn": lambda agent_id: f"p{agent_id}"})
    try:
        assert list(trainer.policy_map) == ["pa", "pb"]
        worker = trainer.workers.local_worker()
        batch = worker.sample()  # 4 env steps: exactly one episode
        a, b = batch["pa"], batch["pb"]
        # per-policy batch sizes follow the agents' steps, not the env's
        assert batch.env_steps == 4 and batch.agent_steps == 5
        assert batch.policy_steps() == {"pa": 2, "pb": 3}
        np.testing.assert_array_equal(a["obs"][:, 1], [0, 1])
        np.testing.assert_array_equal(a["new_obs"][:, 1], [1, 2])
        np.testing.assert_array_equal(a["terminateds"], [False, True])
        np.testing.assert_array_equal(a["rewards"], [1, 1])
        assert (a["obs"][:, 0] == 1).all() and (b["obs"][:, 0] == 2).all()   # mapping
        np.testing.assert_array_equal(b["obs"][:, 1], [1, 2, 3])
        np.testing.assert_array_equal(b["terminateds"], [False, False, True])
        np.testing.assert_array_equal(b["rewards"], [2, 2, 2])
        (episode,) = worker.pop_episodes()
        assert episode["episode_reward"] == 8 and episode["episode_len"] == 4
        assert episode["policy_reward"] == {"pa": 2, "pb": 6}
    finally:
        trainer.stop()


def test_turn_based_agents_sum_the_rewards_between_their_turns():
    trainer = _trainer("jrl-test-turns", rollout_fragment_length=6, multiagent={
        "policies": ["px", "py"], "policy_mapping_fn": by_name})
    try:
        batch = trainer.workers.local_worker().sample()
        np.testing.assert_array_equal(batch["px"]["rewards"], [2, 2, 2])
        np.testing.assert_array_equal(batch["py"]["rewards"], [20, 20, 10])
        np.testing.assert_array_equal(batch["px"]["new_obs"][:2, 0], [2, 4])
        np.testing.assert_array_equal(batch["py"]["terminateds"], [False, False, True])
    finally:
        trainer.stop()


def test_default_policy_view_cuts_fragments_and_bootstraps_at_their_ends():
    """Without multiagent policies every agent shares default_policy; a plan sees its steps
    as [T, B] fragments whose columns end or bootstrap."""
    trainer = _trainer("jrl-test-late-join")
    try:
        assert list(trainer.policy_map) == ["default_policy"]
        view = PolicyWorkers(trainer.backend.sampler, "default_policy", 5, 2)
        frag = view.sample()                        # 5 agent steps per episode
        assert frag["obs"].shape == (5, 2, 2)
        np.testing.assert_array_equal(frag["rewards"][:, 0], [1, 1, 2, 2, 2])  # a, then b
        assert (frag["terminateds"][-1] | frag["truncateds"][-1]).all()
        assert not (frag["terminateds"] & frag["truncateds"]).any()
        trainer.backend.sampler.queues["default_policy"].clear()
        trainer.workers.local_worker().pop_episodes()
        trainer.workers.local_worker().sample()
        (episode,) = trainer.workers.local_worker().pop_episodes()
        assert episode["policy_reward"] == {"default_policy": 8}
    finally:
        trainer.stop()


def test_frozen_policy_overrides_checkpoint_and_evaluate(tmp_path, capsys):
    """policies_to_train leaves p1 bit-for-bit unchanged; each policy gets its overrides; a
    checkpoint restores every policy; jrl evaluate prints per-agent returns."""
    trainer = jrl.Trainer("PPO", env=CARTPOLE, log_to_disk=False, config={
        **SMALL_PPO, "multiagent": {
            "policies": {"p0": (None, None, None, {"lr": 1e-2}),
                         "p1": {"config": {"lr": 1e-5}}},
            "policy_mapping_fn": OWN_POLICY, "policies_to_train": ["p0"]}})
    try:
        before = jax.device_get(trainer.state)
        result = trainer.train()
        after = jax.device_get(trainer.state)
        assert _leaves_equal(before["p1"], after["p1"])
        assert not _leaves_equal(before["p0"].params, after["p0"].params)
        assert set(result["info"]["learner"]) == {"p0"}
        assert set(result["policy_reward_mean"]) == {"p0", "p1"}
        assert result["episode_reward_mean"] == pytest.approx(
            sum(result["policy_reward_mean"].values()))
        assert trainer.get_policy("p0").config["lr"] == 1e-2
        assert trainer.get_policy("p1").config["lr"] == 1e-5
        assert isinstance(trainer.compute_action(np.zeros(4, np.float32), policy_id="p1"),
                          np.integer)
        actions = trainer.compute_actions({0: np.zeros(4), 1: np.ones(4) * 0.1},
                                          policy_id="p0")
        assert set(actions) == {0, 1}
        weights = trainer.get_weights()
        assert not _leaves_equal(weights["p0"], weights["p1"])
        path = trainer.save(str(tmp_path))
        trainer.set_weights({"p1": weights["p0"]})
        assert _leaves_equal(trainer.get_policy("p1").get_weights(), weights["p0"])
        trainer.restore(path)
        for pid in ("p0", "p1"):
            assert _leaves_equal(trainer.get_weights([pid])[pid], weights[pid])
        assert _leaves_equal(trainer.state["p1"], before["p1"])
    finally:
        trainer.stop()
    # a fresh trainer from the checkpoint's metadata alone (policies, overrides, mapping path)
    out_file = tmp_path / "episodes.json"
    assert cli.main(["evaluate", path, "--episodes", "2", "--out", str(out_file)]) == 0
    out = capsys.readouterr().out
    assert "agent 0 (p0)" in out and "agent 1 (p1)" in out and "mean return" in out
    lines = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert len(lines) == 2 and {line["type"] for line in lines} == {"MultiAgentBatch"}
    for line in lines:
        assert set(line["policy_batches"]) == {"p0", "p1"}
        for i, pid in enumerate(("p0", "p1")):
            batch = line["policy_batches"][pid]
            assert set(batch["agent_index"]) == {i} or set(batch["agent_index"]) == {1 - i}
            obs = batch["obs"]  # compressed by default (output_compress_columns)
            obs = unpack(obs) if isinstance(obs, str) else np.asarray(obs)
            assert obs.shape == (len(batch["rewards"]), 4)
        assert line["count"] == max(len(b["rewards"]) for b in line["policy_batches"].values())


def test_bad_mappings_are_one_clear_error_naming_agent_and_policy():
    with pytest.raises(jrl.ConfigError, match="agent '0' to unknown policy 'nope'"):
        _trainer(CARTPOLE, multiagent={"policies": ["p0"],
                                       "policy_mapping_fn": lambda agent_id: "nope"})
    wrong = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    with pytest.raises(jrl.ConfigError, match="agent '1' has observation space .* policy 'p1'"):
        _trainer(CARTPOLE, multiagent={"policies": {"p0": (None, None, None, {}),
                                                    "p1": (None, wrong, None, {})},
                                       "policy_mapping_fn": OWN_POLICY})
    with pytest.raises(jrl.ConfigError, match="policies_to_train names unknown policy 'p9'"):
        _trainer(CARTPOLE, multiagent={"policies": ["p0", "p1"], "policy_mapping_fn": OWN_POLICY,
                                       "policies_to_train": ["p9"]})
    with pytest.raises(jrl.ConfigError, match="policy_mapping_fn is needed"):
        _trainer(CARTPOLE, multiagent={"policies": ["p0", "p1"]})
    with pytest.raises(jrl.ConfigError, match="cannot import"):
        _trainer(CARTPOLE, multiagent={"policies": ["p0"], "policy_mapping_fn": "nowhere:fn"})


def test_off_policy_algorithms_keep_one_replay_and_learner_per_policy():
    trainer = jrl.Trainer("DQN", env=CARTPOLE, log_to_disk=False, config={
        "learning_starts": 32, "rollout_fragment_length": 8, "train_batch_size": 16,
        "model": {"fcnet_hiddens": [16]}, "hiddens": [16], "timesteps_per_iteration": 64,
        "multiagent": {"policies": ["p0", "p1"], "policy_mapping_fn": OWN_POLICY}})
    try:
        result = trainer.train()
        assert set(result["info"]["learner"]) == {"p0", "p1"}
        plans = trainer.backend.plans
        assert plans["p0"].replay is not plans["p1"].replay
        assert all(int(s.num_updates) > 0 for s in trainer.state.values())
    finally:
        trainer.stop()


def test_heuristic_policy_plays_but_never_learns():
    from jrl.rollout.multi_agent_examples import AlwaysSameHeuristic

    trainer = _trainer("jrl.rollout.multi_agent_examples:RockPaperScissors", multiagent={
        "policies": {"learned": {}, "heuristic": (AlwaysSameHeuristic, None, None, {})},
        "policy_mapping_fn": "jrl.rollout.multi_agent_examples:rps_learner_vs_heuristic"})
    try:
        result = trainer.train()
        assert set(result["info"]["learner"]) == {"learned"}
        assert trainer.get_weights(["heuristic"]) == {"heuristic": {}}
        batch = trainer.workers.local_worker().sample()
        assert set(batch) == {"learned"}
        opponent_last = batch["learned"]["obs"][:, 4:]   # one-hot: rock, paper, scissors, none
        assert (opponent_last[:, 0] + opponent_last[:, 3] == 1).all()
    finally:
        trainer.stop()
    with pytest.raises(jrl.ConfigError, match="heuristic policy that cannot learn"):
        _trainer("jrl.rollout.multi_agent_examples:RockPaperScissors", multiagent={
            "policies": {"learned": {}, "heuristic": (AlwaysSameHeuristic, None, None, {})},
            "policy_mapping_fn": "jrl.rollout.multi_agent_examples:rps_learner_vs_heuristic",
            "policies_to_train": ["heuristic"]})


def test_make_multi_agent_ends_each_agent_on_its_own():
    env = jrl.make_multi_agent("CartPole-v1")({"num_agents": 2})
    obs, _ = env.reset(seed=0)
    assert set(obs) == {0, 1}
    assert env.get_observation_space(1) == env.envs[1].observation_space
    done = set()
    for _ in range(600):
        obs, rewards, terms, truncs, _ = env.step({i: 0 for i in obs if i not in done})
        done |= {i for i in obs if terms[i] or truncs[i]}
        if terms[ALL] or truncs[ALL]:
            break
    assert done == {0, 1} and terms[ALL]


def test_pettingzoo_parallel_env_samples_per_agent_policies():
    pytest.importorskip("pettingzoo")
    trainer = _trainer("pettingzoo:pettingzoo.classic.rps_v2", multiagent={
        "policies": ["player_0", "player_1"],
        "policy_mapping_fn": lambda agent_id, *a, **k: agent_id})
    try:
        assert trainer.get_policy("player_0").observation_space == gym.spaces.Discrete(4)
        batch = trainer.workers.local_worker().sample()
        assert batch.policy_steps() == {"player_0": 4, "player_1": 4}
        np.testing.assert_array_equal(batch["player_0"]["rewards"],
                                      -batch["player_1"]["rewards"])   # zero-sum
    finally:
        trainer.stop()


@pytest.mark.slow
def test_ray_workers_sample_every_policy(ray_cluster):
    trainer = jrl.Trainer("PPO", env=CARTPOLE, log_to_disk=False, config={
        **SMALL_PPO, "num_workers": 1, "multiagent": {
            "policies": ["p0", "p1"], "policy_mapping_fn": OWN_POLICY,
            "policies_to_train": ["p1"]}})
    try:
        result = trainer.train()
        assert set(result["info"]["learner"]) == {"p1"}
        remote = trainer.workers.foreach_worker(lambda w: w.get_weights())[1]
        assert _leaves_equal(remote["p1"], trainer.get_weights(["p1"])["p1"])
        assert result["timesteps_total"] >= 128
    finally:
        trainer.stop()


@pytest.mark.slow
@pytest.mark.parametrize("name,check", [
    ("multi-agent-cartpole-ppo", lambda r: r["evaluation"]["policy_reward_mean"]["p0"] >= 475
     and r["evaluation"]["policy_reward_mean"]["p1"] >= 475),
    ("multi-agent-cartpole-shared-ppo", lambda r: r["evaluation"]["episode_reward_mean"] >= 975),
    ("rps-ppo-vs-heuristic", lambda r: r["custom_metrics"]["win_rate_mean"] >= 0.85),
    ("pettingzoo-rps-ppo", lambda r: r["policy_reward_mean"]["learned"] >= 13),
])
def test_tuned_multi_agent_examples_solve(name, check, tmp_path):
    import glob
    import json
    import os

    if name.startswith("pettingzoo"):
        pytest.importorskip("pettingzoo")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    assert cli.main(["train", "-f", os.path.join(root, "configs", f"{name}.yaml"),
                     "--local-dir", str(tmp_path)]) == 0
    (results,) = glob.glob(str(tmp_path / name / "*" / "result.json"))
    with open(results) as f:
        last = [json.loads(line) for line in f][-1]
    assert check(last)


def test_impala_trains_each_policy_in_process():
    trainer = jrl.Trainer("IMPALA", env=CARTPOLE, log_to_disk=False, config={
        "rollout_fragment_length": 16, "train_batch_size": 32, "num_envs_per_worker": 2,
        "model": {"fcnet_hiddens": [16]},
        "multiagent": {"policies": ["p0", "p1"], "policy_mapping_fn": OWN_POLICY}})
    try:
        result = trainer.train()
        assert set(result["info"]["learner"]) == {"p0", "p1"}
    finally:
        trainer.stop()


@pytest.mark.slow  # ~15 s of Ray start-up and compiles on 2 cores
def test_appo_streams_each_policy_from_ray_workers(ray_cluster):
    """2 Ray workers stream fragments of both policies; only p1 learns (its own V-trace
    learner thread, its weights sent to the workers), p0 stays bit-for-bit the same."""
    trainer = jrl.Trainer("APPO", env=CARTPOLE, log_to_disk=False, config={
        "num_workers": 2, "rollout_fragment_length": 16, "train_batch_size": 32,
        "num_envs_per_worker": 1, "timesteps_per_iteration": 256,
        "model": {"fcnet_hiddens": [8]},
        "multiagent": {"policies": ["p0", "p1"], "policy_mapping_fn": OWN_POLICY,
                       "policies_to_train": ["p1"]}})
    try:
        before = trainer.get_weights()
        for _ in range(5):  # the first update compiles while the workers keep sampling
            result = trainer.train()
            if result["info"]["learner"]:
                break
        assert set(result["info"]["learner"]) == {"p1"}
        assert set(result["num_learner_updates"]) == {"p1"}
        assert result["num_weight_broadcasts"]["p1"] >= 1
        assert result["num_healthy_workers"] == 2 and result["timesteps_total"] >= 256
        assert set(result["policy_reward_mean"]) == {"p0", "p1"}
        after = trainer.get_weights()
        assert _leaves_equal(before["p0"], after["p0"])
        assert not _leaves_equal(before["p1"], after["p1"])
        remote = trainer.workers.foreach_worker(lambda w: w.get_weights())[1:]
        for weights in remote:  # a worker looked at holds every policy's newest weights
            assert _leaves_equal(weights["p0"], before["p0"])
            assert _leaves_equal(weights["p1"], after["p1"])
    finally:
        trainer.stop()


class RecordingCallbacks(jrl.DefaultCallbacks):
    """Multi-agent hooks as RLlib users write them; scales the learned rewards by 10."""

    def __init__(self):
        self.calls = []

    def on_episode_start(self, *, worker, base_env, policies, episode, env_index, **kwargs):
        episode.user_data["seen"] = []

    def on_episode_step(self, *, worker, base_env, episode, env_index, **kwargs):
        for agent in ("x", "y"):
            obs = episode.last_observation_for(agent)
            if obs is not None:
                episode.user_data["seen"].append((agent, episode.policy_for(agent)))

    def on_postprocess_trajectory(self, *, worker, episode, agent_id, policy_id, policies,
                                  postprocessed_batch, original_batches, **kwargs):
        self.calls.append((agent_id, policy_id, sorted(original_batches),
                           original_batches[agent_id][1]["rewards"].tolist(),
                           type(original_batches[agent_id][0]).__name__))
        postprocessed_batch["rewards"] *= 10

    def on_episode_end(self, *, worker, base_env, policies, episode, env_index, **kwargs):
        episode.custom_metrics["y_reward"] = episode.agent_rewards[("y", "py")]
        episode.custom_metrics["steps_seen"] = len(episode.user_data["seen"])
        episode.custom_metrics["y_last_obs"] = float(episode.last_observation_for("y")[0])


def test_multi_agent_callbacks_see_episode_and_rewrite_each_agents_trajectory():
    callbacks = RecordingCallbacks()
    trainer = _trainer("jrl-test-turns", rollout_fragment_length=6, callbacks=callbacks,
                       multiagent={"policies": ["px", "py"], "policy_mapping_fn": by_name})
    try:
        worker = trainer.workers.local_worker()
        worker.callbacks = callbacks
        batch = worker.sample()  # one episode: both agents' pieces end at its last step
        np.testing.assert_array_equal(batch["px"]["rewards"], [20, 20, 20])
        np.testing.assert_array_equal(batch["py"]["rewards"], [200, 200, 100])
        assert sorted(callbacks.calls) == [
            ("x", "px", ["x", "y"], [2, 2, 2], "Policy"),
            ("y", "py", ["x", "y"], [20, 20, 10], "Policy")]
        (episode,) = worker.pop_episodes()
        # the episode's own returns are the env's, not the rewritten ones
        assert episode["policy_reward"] == {"px": 6, "py": 60}
        # x from the reset on, y from its first turn on: 2 agents seen in each of 6 steps
        assert episode["custom_metrics"] == {"y_reward": 60.0, "steps_seen": 12,
                                             "y_last_obs": 5.0}
    finally:
        trainer.stop()


def test_recorded_multi_agent_episodes_are_multi_agent_batch_lines(tmp_path):
    """evaluate --out's format: one MultiAgentBatch line per episode, each policy's batch its
    agents' transitions (rewards summed between turns) with agent_index."""
    from jrl.rollout.offline import write_episodes

    trainer = _trainer("jrl-test-turns", multiagent={"policies": ["px", "py"],
                                                     "policy_mapping_fn": by_name})
    try:
        (episode,) = trainer.backend.rollout_episodes(1, record=True)
    finally:
        trainer.stop()
    write_episodes(str(tmp_path / "ep.json"), [episode])
    (line,) = [json.loads(x) for x in (tmp_path / "ep.json").read_text().splitlines()]
    assert line["type"] == "MultiAgentBatch" and line["count"] == 6
    x, y = line["policy_batches"]["px"], line["policy_batches"]["py"]
    assert x["rewards"] == [2, 2, 2] and y["rewards"] == [20, 20, 10]
    assert x["agent_index"] == [0, 0, 0] and y["agent_index"] == [1, 1, 1]
    assert x["t"] == [0, 1, 2] and x["eps_id"] == [0, 0, 0]
    assert [o[0] for o in x["obs"]] == [0, 2, 4] and [o[0] for o in x["new_obs"]] == [2, 4, 6]
    assert y["terminateds"] == [False, False, True] and y["dones"] == [False, False, True]
    assert [o[0] for o in y["obs"]] == [1, 3, 5]
    assert x["prev_rewards"] == [0, 2, 2]


def test_multi_agent_trainer_reads_each_policys_batches_of_recorded_episodes(tmp_path):
    """evaluate --out's MultiAgentBatch lines as `input`: BC trains each policy on its own
    agents' steps; a single-agent reader refuses a line of two policies."""
    from jrl.rollout.offline import iter_rows, write_episodes

    ma = {"policies": ["px", "py"], "policy_mapping_fn": by_name}
    trainer = _trainer("jrl-test-turns", multiagent=ma)
    try:
        episodes = trainer.backend.rollout_episodes(4, record=True)
    finally:
        trainer.stop()
    path = str(tmp_path / "turns.json")
    write_episodes(path, episodes)
    rows = list(iter_rows([path], policy_id="py"))
    assert len(rows) == 4 and all(r["rewards"].tolist() == [20, 20, 10] for r in rows)
    with pytest.raises(jrl.DataError, match="MultiAgentBatch of policies"):
        list(iter_rows([path]))
    trainer = _trainer("jrl-test-turns", algo="BC", input=path, timesteps_per_iteration=16,
                       multiagent=ma)
    try:
        result = trainer.train()
        assert set(result["info"]["learner"]) == {"px", "py"}
        assert result["timesteps_this_iter"] >= 16
    finally:
        trainer.stop()
