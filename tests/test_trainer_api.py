"""The Trainer facade behaves as RLlib users expect: config, results, callbacks, policy, workers.

Every trainer here is tiny (``tests/conftest.py``'s ``SMALL_CONFIGS``) and trains for an iteration
or two at most.
"""

from __future__ import annotations

import csv
import glob
import json
import os

import gymnasium as gym
import jax
import numpy as np
import pytest
from gymnasium import spaces

import jrl
from jrl.callbacks import DefaultCallbacks
from jrl.rollout.offline import read_json

PHASE_ENV = "jrl-test-PhaseEnv"
# All PhaseEnv trainers share these shapes, so their programs compile once.
PHASE_CONFIG = {"num_envs_per_worker": 2, "rollout_fragment_length": 32}


class PhaseEnv(gym.Env):
    """Dict observations, a curriculum phase set from outside, reward ``reward * phase``.

    ``env_config``: ``episode_len`` (steps until termination), ``reward``.
    """

    def __init__(self, config: jrl.EnvContext):
        self.config = config
        self.phase = 1
        self.episode_len = int(config.get("episode_len", 10))
        self.reward = float(config.get("reward", 1.0))
        self.observation_space = spaces.Dict({
            "pos": spaces.Box(-1.0, 1.0, (2,), np.float32),
            "phase": spaces.Discrete(4),
        })
        self.action_space = spaces.Discrete(2)
        self.t = 0

    def set_phase(self, phase: int) -> None:
        self.phase = phase

    def _obs(self) -> dict:
        x = self.t / self.episode_len
        return {"pos": np.array([x, -x], np.float32), "phase": min(self.phase, 3)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        terminated = self.t >= self.episode_len
        return self._obs(), self.reward * self.phase, terminated, False, {}


@pytest.fixture
def phase_env() -> list:
    """Registers ``PhaseEnv`` under ``PHASE_ENV``; returns the ``EnvContext``s its creator got."""
    contexts: list = []

    def creator(ctx):
        contexts.append(ctx)
        return PhaseEnv(ctx)

    jrl.register_env(PHASE_ENV, creator)
    return contexts


class SampleRecorder(DefaultCallbacks):
    """Keeps every sampled batch (``on_sample_end``)."""

    def __init__(self):
        self.samples = []

    def on_sample_end(self, *, worker, samples, **kwargs):
        self.samples.append({k: np.array(v) for k, v in samples.items()})


def _train_until_episodes(trainer, max_iters: int = 5) -> dict:
    for _ in range(max_iters):
        result = trainer.train()
        if result["episodes_this_iter"] > 0:
            return result
    raise AssertionError("no episode finished")


def _cartpole_observations(n: int, seed: int = 0) -> list:
    env = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=seed)
    out = []
    rng = np.random.default_rng(seed)
    for _ in range(n):
        out.append(obs)
        obs, _, terminated, truncated, _ = env.step(int(rng.integers(2)))
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    return out


# -- construction ---------------------------------------------------------------------------------


def test_ppo_trainer_takes_rllib_style_default_config_copy(small_config):
    from jrl.algorithms import ppo

    default_before = json.dumps(ppo.DEFAULT_CONFIG, default=str, sort_keys=True)
    config = ppo.DEFAULT_CONFIG.copy()
    config.update(small_config("PPO"))
    config["seed"] = 3
    trainer = ppo.PPOTrainer(config=config, env="CartPole-v1", log_to_disk=False)
    try:
        assert trainer.algo_name == "PPO"
        assert trainer.env_id == "CartPole-v1"
        assert trainer.config["lambda"] == ppo.DEFAULT_CONFIG["lambda"]
        assert trainer.config["seed"] == 3
        assert trainer.config["model"]["fcnet_hiddens"] == (16, 16)
        assert trainer.train()["training_iteration"] == 1
    finally:
        trainer.stop()
    assert json.dumps(ppo.DEFAULT_CONFIG, default=str, sort_keys=True) == default_before


def test_ppo_trainer_takes_positional_config_and_env(small_config):
    from jrl.algorithms.ppo import PPOTrainer

    trainer = PPOTrainer(small_config("PPO"), "CartPole-v1", log_to_disk=False)
    try:
        assert trainer.algo_name == "PPO" and trainer.env_id == "CartPole-v1"
        assert repr(trainer) == "PPOTrainer(env='CartPole-v1', iteration=0)"
    finally:
        trainer.stop()


def test_algorithm_trainer_class_refuses_other_algorithm(small_config):
    from jrl.algorithms.ppo import PPOTrainer

    with pytest.raises(jrl.ConfigError, match="PPO"):
        PPOTrainer("DQN", env="CartPole-v1", config=small_config("DQN"), log_to_disk=False)


def test_trainer_classes_are_found_by_rllib_names():
    from jrl import registry
    from jrl.algorithms.dqn import DQNTrainer

    assert jrl.DQNTrainer is DQNTrainer is jrl.get_trainer_class("dqn")
    assert DQNTrainer.__name__ == "DQNTrainer"
    for name in registry.algorithm_names():
        cls = getattr(jrl, registry.get_algorithm_def(name).trainer_name)
        assert cls._algo_name == name
    assert registry.get_algorithm_def("APEX").trainer_name == "ApexTrainer"
    with pytest.raises(AttributeError):
        jrl.NoSuchTrainer  # noqa: B018
    with pytest.raises(jrl.ConfigError, match="unknown algorithm"):
        jrl.get_trainer_class("NoSuch")


# -- train() results -----------------------------------------------------------------------------


def test_train_result_has_rllib_keys_and_counts_timesteps(make_trainer):
    trainer = make_trainer("PPO")
    batch = trainer.config["train_batch_size"]
    first = trainer.train()
    for key in ("episode_reward_mean", "episode_reward_min", "episode_reward_max",
                "episode_len_mean", "episodes_this_iter", "timesteps_total",
                "training_iteration", "time_this_iter_s", "custom_metrics"):
        assert key in first, key
    learner = first["info"]["learner"]["default_policy"]
    assert {"policy_loss", "vf_loss", "entropy", "kl"} <= set(learner)
    assert all(np.isfinite(v) for v in learner.values())
    assert first["training_iteration"] == 1
    assert first["timesteps_total"] >= batch
    assert first["time_this_iter_s"] > 0
    assert first["episodes_this_iter"] > 0
    assert first["episode_reward_min"] <= first["episode_reward_mean"] <= \
        first["episode_reward_max"]
    second = trainer.train()
    assert second["training_iteration"] == 2
    assert second["timesteps_total"] - first["timesteps_total"] >= batch
    assert second["info"]["num_steps_trained"] == 2


# -- callbacks -----------------------------------------------------------------------------------


class CountingCallbacks(DefaultCallbacks):
    def on_episode_start(self, *, worker, base_env, policies, episode, env_index, **kwargs):
        episode.user_data["steps"] = 0

    def on_episode_step(self, *, worker, base_env, episode, env_index, **kwargs):
        episode.user_data["steps"] += 1

    def on_episode_end(self, *, worker, base_env, policies, episode, env_index, **kwargs):
        assert episode.user_data["steps"] == episode.length
        episode.custom_metrics["steps"] = episode.user_data["steps"]

    def on_train_result(self, *, trainer, result, **kwargs):
        result["callback_ok"] = True


def test_callbacks_class_reports_custom_metrics_and_edits_result(make_trainer):
    trainer = make_trainer("PPO", callbacks=CountingCallbacks)
    result = _train_until_episodes(trainer)
    custom = result["custom_metrics"]
    assert set(custom) == {"steps_mean", "steps_min", "steps_max"}
    assert custom["steps_mean"] == pytest.approx(result["episode_len_mean"])
    assert custom["steps_min"] <= custom["steps_mean"] <= custom["steps_max"]
    assert result["callback_ok"] is True


def test_callbacks_dict_of_functions_gets_info_dicts(make_trainer):
    seen = {"start": 0, "end": 0}

    def on_episode_start(info):
        assert set(info) >= {"env", "policy", "episode"}
        seen["start"] += 1

    def on_episode_end(info):
        episode = info["episode"]
        assert isinstance(episode, jrl.Episode)
        episode.custom_metrics["reward_seen"] = episode.total_reward
        seen["end"] += 1

    def on_train_result(info):
        info["result"]["from_dict_callback"] = info["trainer"].iteration

    trainer = make_trainer("PPO", callbacks={"on_episode_start": on_episode_start,
                                             "on_episode_end": on_episode_end,
                                             "on_train_result": on_train_result})
    result = _train_until_episodes(trainer)
    assert seen["end"] == result["episodes_this_iter"] > 0
    assert seen["start"] >= seen["end"]
    assert result["custom_metrics"]["reward_seen_mean"] == \
        pytest.approx(result["episode_reward_mean"])
    assert result["from_dict_callback"] == result["training_iteration"]


def test_callbacks_dict_with_unknown_hook_is_a_config_error(small_config):
    with pytest.raises(jrl.ConfigError, match="on_episode_end"):
        jrl.Trainer("PPO", env="CartPole-v1", log_to_disk=False,
                    config=small_config("PPO", callbacks={"on_episode_ends": print}))


@pytest.mark.parametrize("how", ["in_place", "replace_column"])
def test_on_postprocess_trajectory_rewrites_rewards_the_learner_sees(make_trainer, how):
    originals = []

    class ZeroRewards(SampleRecorder):
        def on_postprocess_trajectory(self, *, worker, episode, agent_id, policy_id, policies,
                                      postprocessed_batch, original_batches, **kwargs):
            originals.append(np.array(original_batches["default_policy"][1]["rewards"]))
            if how == "in_place":
                postprocessed_batch["rewards"][:] = 0.0
            else:
                postprocessed_batch["rewards"] = np.zeros_like(postprocessed_batch["rewards"])

    callbacks = ZeroRewards()
    trainer = make_trainer("PPO", callbacks=callbacks)
    learner_batches = []
    learner = trainer.backend.plan.learner
    plan_update = learner.update

    def spy(state, batch):
        learner_batches.append(np.array(batch.reward))
        return plan_update(state, batch)

    learner.update = spy
    result = trainer.train()
    assert callbacks.samples and learner_batches
    for sample in callbacks.samples:
        np.testing.assert_array_equal(sample["rewards"], 0.0)
    np.testing.assert_array_equal(learner_batches[0], 0.0)
    # The hook saw the env's rewards (CartPole pays 1 per step); episode stats keep them.
    assert originals and all(np.all(r == 1.0) for r in originals)
    assert result["episode_reward_mean"] > 0


# -- acting, policy and model --------------------------------------------------------------------


@pytest.mark.parametrize("algo,extra_keys", [("PPO", {"action_logp", "vf_preds"}),
                                             ("DQN", {"q_values"})])
def test_compute_action_full_fetch_returns_extras(make_trainer, algo, extra_keys):
    trainer = make_trainer(algo)
    obs = _cartpole_observations(1)[0]
    action, state_out, extras = trainer.compute_action(obs, full_fetch=True)
    assert trainer.get_policy().action_space.contains(int(action))
    assert state_out == []
    assert extra_keys <= set(extras)
    if algo == "DQN":
        assert extras["q_values"].shape == (2,)
        assert action == np.argmax(extras["q_values"])
    else:
        assert np.shape(extras["action_logp"]) == () and np.shape(extras["vf_preds"]) == ()
        assert extras["action_logp"] <= 0.0
    assert trainer.compute_action(obs) == action  # greedy by default
    assert trainer.compute_single_action(obs) == action
    actions = trainer.compute_actions({"a": obs, "b": obs})
    assert set(actions) == {"a", "b"} and actions["a"] == action


def test_set_weights_changes_actions_and_get_weights_restores_them(make_trainer):
    trainer = make_trainer("PPO")
    policy = trainer.get_policy()
    observations = _cartpole_observations(12)
    weights = policy.get_weights()
    assert all(isinstance(w, np.ndarray) for w in jax.tree.leaves(weights))
    before = [int(trainer.compute_action(o)) for o in observations]

    # Negating the policy head negates the logits, so every greedy action of 2 flips.
    flipped = jax.tree_util.tree_map_with_path(
        lambda path, w: -w if "policy_head" in jax.tree_util.keystr(path) else w, weights)
    policy.set_weights(flipped)
    assert [int(trainer.compute_action(o)) for o in observations] == [1 - a for a in before]

    policy.set_weights(weights)
    assert [int(trainer.compute_action(o)) for o in observations] == before
    trainer.set_weights({"default_policy": flipped})
    assert [int(trainer.compute_action(o)) for o in observations] == [1 - a for a in before]
    bad = jax.tree.map(lambda w: np.zeros(w.shape + (2,), w.dtype), weights)
    with pytest.raises(jrl.ConfigError, match="set_weights"):
        policy.set_weights(bad)


def test_policy_model_value_function_and_summary(make_trainer):
    trainer = make_trainer("PPO")
    model = trainer.get_policy().model
    observations = _cartpole_observations(5)
    values = model.value_function(observations)
    assert values.shape == (5,) and np.all(np.isfinite(values))
    _, _, extras = trainer.compute_action(observations[0], full_fetch=True)
    assert values[0] == pytest.approx(float(extras["vf_preds"]), rel=1e-5, abs=1e-6)
    num_params = model.num_params()
    weights = trainer.get_policy().get_weights()
    assert num_params == sum(w.size for w in jax.tree.leaves(weights))
    summary = model.summary()
    assert f"{num_params:,}" in summary
    assert "policy_head" in summary
    with pytest.raises(jrl.ConfigError):
        model.q_values(observations)


def test_dqn_model_q_values(make_trainer):
    trainer = make_trainer("DQN")
    model = trainer.get_policy().model
    observations = _cartpole_observations(5)
    q = model.q_values(observations)
    assert q.shape == (5, 2) and np.all(np.isfinite(q))
    np.testing.assert_allclose(model.value_function(observations), q.max(axis=-1))
    greedy = [int(trainer.compute_action(o)) for o in observations]
    assert greedy == list(np.argmax(q, axis=-1))
    assert f"{model.num_params():,}" in model.summary()


# -- workers and envs ----------------------------------------------------------------------------


def test_workers_reach_the_users_env_and_its_env_context(make_trainer, phase_env):
    callbacks = SampleRecorder()
    trainer = make_trainer("PPO", PHASE_ENV, callbacks=callbacks,
                           env_config={"episode_len": 5, "reward": 1.0}, **PHASE_CONFIG)
    workers = trainer.workers
    local = workers.local_worker()
    assert local.worker_index == 0
    assert workers.foreach_worker(lambda w: w.worker_index) == [0]
    assert workers.foreach_worker_with_index(lambda w, i: (w is local, i)) == [(True, 0)]

    # The creator got the env_config as an EnvContext that says where the env lives.
    assert len(phase_env) >= 2
    for ctx in phase_env[:2]:
        assert isinstance(ctx, jrl.EnvContext)
        assert ctx["episode_len"] == 5 and ctx.worker_index == 0
    assert sorted(ctx.vector_index for ctx in phase_env[:2]) == [0, 1]

    # Dict observations are flattened: Box(2) + one-hot Discrete(4).
    assert trainer.spec.obs_shape == (6,)
    assert workers.foreach_env(lambda e: type(e).__name__) == [["PhaseEnv", "PhaseEnv"]]
    assert workers.foreach_worker(lambda w: w.foreach_env(lambda e: e.set_phase(2))) == \
        [[None, None]]
    assert workers.foreach_env(lambda e: e.phase) == [[2, 2]]
    contexts = local.foreach_env_with_context(lambda e, ctx: (ctx.worker_index, ctx.vector_index))
    assert contexts == [(0, 0), (0, 1)]

    result = trainer.train()
    for sample in callbacks.samples:  # the phase reached the envs that are sampled
        np.testing.assert_array_equal(sample["rewards"], 2.0)
    assert result["episode_reward_mean"] == pytest.approx(2.0 * 5)
    assert result["episode_len_mean"] == 5


def test_env_config_reaches_gymnasium_make_as_kwargs(make_trainer):
    trainer = make_trainer("PPO", "Pendulum-v1", env_config={"g": 3.0})
    assert trainer.workers.foreach_env(lambda e: e.g) == [[3.0]]


# -- observation filter --------------------------------------------------------------------------


@pytest.mark.parametrize("algo", ["PPO", "DQN"])
def test_mean_std_filter_learns_statistics_that_survive_checkpoints(make_trainer, tmp_path,
                                                                    algo):
    trainer = make_trainer(algo, observation_filter="MeanStdFilter")
    assert float(trainer.state.obs_filter.count) == 0.0
    result = trainer.train()
    stats = trainer.state.obs_filter
    assert float(stats.count) == result["timesteps_total"]
    assert np.any(np.asarray(stats.mean) != 0.0) and np.all(np.asarray(stats.m2) > 0.0)

    restored = jrl.Trainer.from_checkpoint(trainer.save(str(tmp_path)), log_to_disk=False)
    try:
        for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(restored.state.obs_filter),
                        strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        for obs in _cartpole_observations(6):
            np.testing.assert_array_equal(trainer.compute_action(obs),
                                          restored.compute_action(obs))
    finally:
        restored.stop()


# -- results on disk -----------------------------------------------------------------------------


def test_results_dir_has_params_results_progress_and_events(make_trainer, results_dir):
    trainer = make_trainer("PPO", log_to_disk=True)
    assert os.path.commonpath([trainer.logdir, results_dir]) == results_dir
    assert os.path.basename(trainer.logdir).startswith("PPO_CartPole-v1_")
    trainer.train()
    trainer.train()
    trainer.stop()
    with open(os.path.join(trainer.logdir, "params.json")) as f:
        params = json.load(f)
    assert params["train_batch_size"] == 64 and params["algo"] == "PPO"
    with open(os.path.join(trainer.logdir, "result.json")) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    assert [r["training_iteration"] for r in lines] == [1, 2]
    assert "config" not in lines[0]
    with open(os.path.join(trainer.logdir, "progress.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["training_iteration"]) for r in rows] == [1, 2]
    assert "info/learner/default_policy/policy_loss" in rows[0]
    assert glob.glob(os.path.join(trainer.logdir, "events.out.tfevents.*"))


# -- config errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides,message", [
    ({"lrr": 1}, "'lr'"),
    ({"model": {"fcnet_hidens": [8]}}, "model.fcnet_hiddens"),
    ({"train_batch_size": "big"}, "train_batch_size"),
    ({"model": {"fcnet_hiddens": "16"}}, "model.fcnet_hiddens"),
    ({"gamma": 1.5}, "gamma"),
    ({"num_workers": -1}, "num_workers"),
    ({"observation_filter": "MeanStd"}, "MeanStdFilter"),
    ({"sgd_minibatch_size": 128}, "sgd_minibatch_size"),
], ids=["unknown-key", "nested-unknown-key", "wrong-type", "nested-wrong-type", "above-max",
        "below-min", "bad-choice", "inconsistent"])
def test_bad_config_is_a_config_error_naming_the_key(small_config, overrides, message):
    config = small_config("PPO")
    config.update(overrides)
    with pytest.raises(jrl.ConfigError) as info:
        jrl.Trainer("PPO", env="CartPole-v1", config=config, log_to_disk=False)
    assert message in str(info.value)


def test_unknown_env_is_an_error_naming_it(small_config):
    with pytest.raises((jrl.EnvError, jrl.ConfigError), match="CartPoel-v1") as info:
        jrl.Trainer("PPO", env="CartPoel-v1", config=small_config("PPO"), log_to_disk=False)
    assert "CartPole-v1" in str(info.value)  # the suggestion


def test_unknown_algorithm_is_a_config_error_naming_it():
    with pytest.raises(jrl.ConfigError, match="PPPO") as info:
        jrl.Trainer("PPPO", env="CartPole-v1", log_to_disk=False)
    assert "'PPO'" in str(info.value)


# -- evaluation ----------------------------------------------------------------------------------


def test_evaluate_returns_evaluation_episode_stats(make_trainer):
    trainer = make_trainer("PPO", evaluation_num_episodes=2)
    out = trainer.evaluate()
    assert set(out) == {"evaluation"}
    evaluation = out["evaluation"]
    assert evaluation["episodes_this_iter"] == 2
    assert np.isfinite(evaluation["episode_reward_mean"]) and evaluation["episode_reward_mean"] > 0
    assert evaluation["episode_len_mean"] == pytest.approx(evaluation["episode_reward_mean"])


def test_evaluation_interval_adds_evaluation_to_train_results(make_trainer):
    trainer = make_trainer("PPO", evaluation_interval=2, evaluation_num_episodes=2)
    assert "evaluation" not in trainer.train()
    result = trainer.train()
    assert result["evaluation"]["episodes_this_iter"] == 2
    assert "episode_reward_mean" in result["evaluation"]


# -- sampling options ----------------------------------------------------------------------------


@pytest.mark.parametrize("clip,expected", [(True, 1.0), (2.0, 2.0), (None, 5.0)])
def test_clip_rewards_clips_learner_rewards_not_episode_returns(make_trainer, phase_env, clip,
                                                                expected):
    callbacks = SampleRecorder()
    trainer = make_trainer("PPO", PHASE_ENV, clip_rewards=clip, callbacks=callbacks,
                           env_config={"episode_len": 4, "reward": 5.0}, **PHASE_CONFIG)
    result = trainer.train()
    for sample in callbacks.samples:
        np.testing.assert_array_equal(sample["rewards"], expected)
    assert result["episode_reward_mean"] == pytest.approx(5.0 * 4)


def test_horizon_caps_cartpole_episodes(make_trainer):
    trainer = make_trainer("PPO", horizon=20)
    result = trainer.train()
    lengths = result["hist_stats"]["episode_lengths"]
    assert lengths and max(lengths) <= 20
    assert result["episode_len_mean"] <= 20


def test_horizon_truncates_long_episodes(make_trainer, phase_env):
    callbacks = SampleRecorder()
    trainer = make_trainer("PPO", PHASE_ENV, horizon=20, callbacks=callbacks,
                           env_config={"episode_len": 50}, **PHASE_CONFIG)
    result = trainer.train()
    assert result["hist_stats"]["episode_lengths"] == [20] * result["episodes_this_iter"]
    assert result["episodes_this_iter"] >= 2
    truncated = np.concatenate([s["truncateds"] for s in callbacks.samples])  # [T, B]
    terminated = np.concatenate([s["terminateds"] for s in callbacks.samples])
    assert not terminated.any()
    for column in truncated.T:
        np.testing.assert_array_equal(np.flatnonzero(column) % 20, 19)


def test_output_writes_json_lines_that_read_json_reads(make_trainer, tmp_path):
    out = str(tmp_path / "experiences")
    trainer = make_trainer("PPO", output=out)
    result = trainer.train()
    assert any(name.endswith(".json") for name in os.listdir(out))
    rows = list(read_json(out))
    fragment = trainer.config["rollout_fragment_length"]
    assert len(rows) * fragment == result["timesteps_total"]
    for row in rows:
        assert row["obs"].shape == (fragment, 4) and row["obs"].dtype == np.float32
        assert row["new_obs"].shape == (fragment, 4)
        assert row["actions"].shape == (fragment,)
        np.testing.assert_array_equal(row["rewards"], 1.0)
        assert {"terminateds", "truncateds", "action_logp", "eps_id"} <= set(row)
    # Consecutive steps chain: the next observation is the following step's observation
    # unless the episode ended in between.
    row = rows[0]
    done = row["terminateds"] | row["truncateds"]
    same = ~done[:-1]
    np.testing.assert_array_equal(row["new_obs"][:-1][same], row["obs"][1:][same])
