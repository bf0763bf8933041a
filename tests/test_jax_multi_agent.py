"""The fully-jitted multi-agent path: the stacked JAX multi-agent env, shared and independent
policies in the jitted loop (stacked vs sequential updates), frozen policies, results,
checkpoints, bad mappings, a learning smoke test and the tuned YAML (slow)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("gymnax")

import jrl  # noqa: E402
from jrl.cli import load_experiments  # noqa: E402
from jrl.errors import ConfigError, EnvError  # noqa: E402
from jrl.execution.multi_agent_anakin import make_multi_agent_anakin  # noqa: E402
from jrl.registry import parse_config  # noqa: E402
from jrl.rollout.jax_envs import is_multi_agent_jax_env, make_jax_env  # noqa: E402

ENV = "jax_ma:CartPole-v1x2"
OWN_POLICY = "jrl.rollout.multi_agent_examples:agent_to_own_policy"
TINY = {"num_envs_per_worker": 2, "rollout_fragment_length": 16, "train_batch_size": 32,
        "sgd_minibatch_size": 32, "num_sgd_iter": 1, "timesteps_per_iteration": 32,
        "model": {"fcnet_hiddens": [8]}}
CONFIGS = os.path.join(os.path.dirname(__file__), os.pardir, "configs")


def _same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b),
                                                    strict=True))


def test_stacked_env_agents_on_leading_axis_and_shared_episodes():
    env = make_jax_env(ENV)
    assert is_multi_agent_jax_env(env) and env.num_agents == 2 and env.spec.obs_shape == (4,)
    obs, state = env.reset(jax.random.PRNGKey(0))
    assert obs.shape == (2, 4)
    step = jax.jit(env.step)
    # Push agent 0 one way until its pole falls; agent 1 is still up and gets truncated.
    for t in range(200):
        out = step(jax.random.PRNGKey(t), state, jnp.array([1, t % 2]))
        assert out.reward.shape == (2,) and out.terminated.shape == (2,)
        state = out.state
        if bool(jnp.any(out.terminated | out.truncated)):
            break
    assert bool(out.terminated[0]) and not bool(out.terminated[1])
    assert bool(out.truncated[1])  # the episode ended for every agent
    assert not np.array_equal(np.asarray(out.final_obs), np.asarray(out.obs))  # reset all
    with pytest.raises(EnvError, match="x<agents>"):
        make_jax_env("jax_ma:CartPole-v1")


@pytest.mark.slow  # the default suite checks the policy axis through the Trainer tests below
@pytest.mark.parametrize("groups, P", [([[0, 1]], 1), ([[0], [1]], 2)])
def test_shared_and_independent_policy_shapes(groups, P):
    """Shared: agents folded into the batch of one policy; independent: a policy axis."""
    env = make_jax_env(ENV)
    cfg = parse_config("PPO", TINY)
    anakin = make_multi_agent_anakin("PPO", env, cfg, groups, iterations=2)
    runner = jax.vmap(anakin.init)(jax.random.split(jax.random.PRNGKey(0), 3))  # 3 seeds
    kernel = jax.tree.leaves(runner.train_state.params)[0]
    assert kernel.shape[:2] == (3, P)
    assert runner.obs.shape == (3, 2, 2, 4)  # [seeds, envs, agents, obs]
    runner, metrics = jax.jit(jax.vmap(anakin.train_chunk))(runner)
    assert metrics["policy_reward_sum"].shape == (3, 2, P)
    assert metrics["total_loss"].shape == (3, 2, P)
    assert int(metrics["timesteps"][0, 0]) == 16 * 2  # env steps of the 2 envs


@pytest.mark.slow
def test_stacked_update_equals_sequential_updates():
    env = make_jax_env(ENV)
    cfg = parse_config("PPO", TINY)
    results = []
    for stacked in (True, False):
        anakin = make_multi_agent_anakin("PPO", env, cfg, [[0], [1]], iterations=2,
                                         stacked=stacked)
        runner = anakin.init(jax.random.PRNGKey(1))
        results.append(jax.jit(anakin.train_chunk)(runner)[0].train_state.params)
    for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_unequal_groups_and_unknown_policy_are_config_errors():
    env = make_jax_env("jax_ma:CartPole-v1x3")
    cfg = parse_config("PPO", TINY)
    with pytest.raises(ConfigError, match="same number"):
        make_multi_agent_anakin("PPO", env, cfg, [[0, 1], [2]])
    with pytest.raises(ConfigError, match="unknown policy"):
        jrl.Trainer("PPO", env=ENV, config={**TINY, "multiagent": {
            "policies": ["p0", "p1"], "policy_mapping_fn": lambda a: "nope"}},
            log_to_disk=False)
    with pytest.raises(ConfigError, match="IMPALA"):
        jrl.Trainer("IMPALA", env=ENV, config={"multiagent": {"policies": ["p0"]}},
                    log_to_disk=False)


def test_frozen_policy_unchanged_results_and_checkpoint_round_trip(tmp_path):
    small = {k: v for k, v in TINY.items() if k not in ("sgd_minibatch_size", "num_sgd_iter")}
    trainer = jrl.Trainer("PG", env=ENV, config={**small, "num_seeds": 2, "multiagent": {
        "policies": {"p0": {}, "p1": {}}, "policy_mapping_fn": OWN_POLICY,
        "policies_to_train": ["p0"]}}, log_to_disk=False)
    kernel = jax.tree.leaves(trainer.backend.runner.train_state.params)[0]
    assert kernel.shape[:2] == (2, 2)  # [seeds, policies]
    frozen = trainer.get_policy("p1").get_weights()
    learned = trainer.get_policy("p0").get_weights()
    result = trainer.train()
    assert _same(frozen, trainer.get_policy("p1").get_weights())  # bit for bit
    assert not _same(learned, trainer.get_policy("p0").get_weights())
    assert set(result["policy_reward_mean"]) == {"p0", "p1"}
    assert set(result["info"]["learner"]) == {"p0"}
    assert result["num_agent_steps_sampled_this_iter"] == 2 * result["timesteps_this_iter"]
    assert trainer.compute_action(np.zeros(4, np.float32), policy_id="p1") in (0, 1)
    path = trainer.save(str(tmp_path))
    weights = trainer.get_weights()
    trainer.get_policy("p0").set_weights(jax.tree.map(np.zeros_like, weights["p0"]))
    trainer.restore(path)
    assert _same(weights, trainer.get_weights())


@pytest.mark.slow  # ~20 s of compiling; the frozen-policy test trains in the default suite
def test_shared_policy_learns_smoke():
    """One compiled chunk (16k env steps) of the tuned YAML's settings with one shared policy:
    the summed return, averaged over the chunk, rises well above random (about 45)."""
    run, config, _ = _tuned()
    config["multiagent"] = {"policies": ["shared"]}
    config.update(timesteps_per_iteration=16384, evaluation_interval=None)
    trainer = jrl.Trainer(run, env=ENV, config=config, log_to_disk=False)
    result = trainer.train()
    assert list(result["policy_reward_mean"]) == ["shared"]
    kernel = jax.tree.leaves(trainer.backend.runner.train_state.params)[0]
    assert kernel.shape[:2] == (1, 1)  # [seeds, policies]: both agents in one batch
    assert result["episode_reward_mean"] > 100  # 143 with this seed on CPU


def _tuned():
    (spec,) = load_experiments(
        os.path.join(CONFIGS, "gymnax-multi-agent-cartpole-ppo.yaml")).values()
    return spec["run"], dict(spec["config"]), dict(spec["stop"])


@pytest.mark.slow
def test_tuned_yaml_solves_each_policy():
    run, config, stop = _tuned()
    trainer = jrl.Trainer(run, env=ENV, config=config, log_to_disk=False)
    while trainer.timesteps_total < stop["timesteps_total"]:
        result = trainer.train()
        evaluation = result.get("evaluation", {})
        if evaluation.get("episode_reward_mean", 0.0) >= 975:
            break
    assert all(r >= 475 for r in evaluation["policy_reward_mean"].values())
    episodes = trainer.rollout_episodes(2)
    assert episodes and set(episodes[0]["policy_reward"]) == {"p0", "p1"}
    assert episodes[0]["episode_reward"] == pytest.approx(
        sum(episodes[0]["agent_rewards"].values()))


BUILT = []


def counting_factory(config):
    """A user's JAX multi-agent env factory that counts how often it is built."""
    BUILT.append(config)
    return make_jax_env(ENV)


def test_users_jax_env_factory_is_built_once():
    """Without multiagent policies the Trainer builds a user's JAX env to look for agents;
    the backend takes that env instead of building another."""
    BUILT.clear()
    trainer = jrl.Trainer("PPO", env=f"{__name__}:counting_factory", log_to_disk=False,
                          config=TINY)
    try:
        assert len(BUILT) == 1 and list(trainer.policy_map) == ["default_policy"]
        assert trainer.backend.jax_env.num_agents == 2
    finally:
        trainer.stop()


SMALL_PG = {k: v for k, v in TINY.items() if k not in ("sgd_minibatch_size", "num_sgd_iter")}


def test_shape_setting_policy_overrides_are_refused_on_jax_envs():
    with pytest.raises(ConfigError, match="p1.config.rollout_fragment_length"):
        jrl.Trainer("PG", env=ENV, config={**SMALL_PG, "multiagent": {
            "policies": {"p0": {}, "p1": {"config": {"rollout_fragment_length": 8}}},
            "policy_mapping_fn": OWN_POLICY}}, log_to_disk=False)
    with pytest.raises(ConfigError, match="p0.config.model"):
        jrl.Trainer("PG", env=ENV, config={**SMALL_PG, "multiagent": {
            "policies": {"p0": {"config": {"model": {"fcnet_hiddens": [4]}}}, "p1": {}},
            "policy_mapping_fn": OWN_POLICY}}, log_to_disk=False)


@pytest.mark.slow  # ~25 s of compiling two separate updates on 2 cores
def test_policy_config_overrides_each_update_with_its_own_hyperparameters():
    """lr per policy: one Adam step moves each weight by about its policy's lr (the first
    step is lr * g / |g|)."""
    small = SMALL_PG
    trainer = jrl.Trainer("PG", env=ENV, config={**small, "lr": 1e-3, "multiagent": {
        "policies": {"p0": {"config": {"lr": 1e-2}}, "p1": {"config": {"lr": 1e-4}}},
        "policy_mapping_fn": OWN_POLICY}}, log_to_disk=False)
    try:
        assert trainer.get_policy("p1").config["lr"] == 1e-4
        before = trainer.get_weights()
        trainer.train()  # one update per policy
        after = trainer.get_weights()
        for pid, lr in (("p0", 1e-2), ("p1", 1e-4)):
            step = max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(
                jax.tree.leaves(after[pid]), jax.tree.leaves(before[pid]), strict=True))
            assert step == pytest.approx(lr, rel=0.02)
    finally:
        trainer.stop()


@pytest.mark.slow  # ~30 s of compiling the replay loop on 2 cores
def test_dqn_keeps_one_replay_buffer_per_policy_in_the_jitted_loop():
    trainer = jrl.Trainer("DQN", env=ENV, log_to_disk=False, config={
        "num_envs_per_worker": 2, "rollout_fragment_length": 4, "train_batch_size": 16,
        "timesteps_per_iteration": 64, "learning_starts": 16, "buffer_size": 1000,
        "model": {"fcnet_hiddens": [8]},
        "multiagent": {"policies": ["p0", "p1"], "policy_mapping_fn": OWN_POLICY,
                       "policies_to_train": ["p0"]}})
    try:
        before = jax.device_get(trainer.state)
        result = trainer.train()  # 8 iterations of 4 steps x 2 envs, 1 agent per policy
        after = jax.device_get(trainer.state)
        assert _same(before["p1"], after["p1"])  # frozen: its step counter included
        assert not _same(before["p0"].params, after["p0"].params)
        assert int(after["p0"].env_steps) == 64
        replay = trainer.backend.runner.replay
        np.testing.assert_array_equal(np.asarray(replay.size), [[64, 64]])  # [seeds, P]
        assert set(result["info"]["learner"]) == {"p0"}
        assert np.isfinite(result["info"]["learner"]["p0"]["loss"])
        assert set(result["policy_reward_mean"]) == {"p0", "p1"}
    finally:
        trainer.stop()
