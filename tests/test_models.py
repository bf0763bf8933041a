"""Models as RLlib users reach them: the model-access API, custom models and preprocessors
(``jrl.ModelCatalog``), and action masking from Dict observations."""

from __future__ import annotations

import json

import flax.linen as nn
import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

import jrl
from jrl.networks import catalog
from jrl.rollout.action_dist import dist_class_for
from jrl.rollout.example_envs import ActionMaskEnv
from jrl.rollout.policy import PolicyModel
from jrl.rollout.preprocessors import Preprocessor, get_preprocessor
from jrl.types import EnvSpec

OBS = np.array([[0.1, 0.2, 0.3, 0.4]], np.float32)
MASK_ENV = "jrl/ActionMask-v0"


class TwoHeads(nn.Module):
    """A custom actor-critic: ``(logits [B, num_outputs], value [B])``."""

    num_outputs: int
    hidden: int = 8

    @nn.compact
    def __call__(self, obs):
        x = nn.tanh(nn.Dense(self.hidden, name="hidden")(obs))
        return nn.Dense(self.num_outputs, name="logits")(x), nn.Dense(1, name="value")(x)[:, 0]


class Features(nn.Module):
    """A custom torso for Q models: features ``[B, width]``."""

    width: int = 8

    @nn.compact
    def __call__(self, obs):
        return nn.relu(nn.Dense(self.width, name="features")(obs))


class WrongWidth(nn.Module):
    @nn.compact
    def __call__(self, obs):
        return nn.Dense(3)(obs), nn.Dense(1)(obs)


class Doubler(Preprocessor):
    """An RLlib-style custom preprocessor: ``_init_shape`` and ``transform``."""

    def _init_shape(self, obs_space, options):
        return (obs_space.shape[0] * 2,)

    def transform(self, observation):
        observation = np.asarray(observation, np.float32)
        return np.concatenate([observation, 2.0 * observation])


@pytest.fixture
def registered():
    jrl.ModelCatalog.register_custom_model("two_heads", TwoHeads)
    jrl.ModelCatalog.register_custom_model("features", Features)
    jrl.ModelCatalog.register_custom_model("wrong_width", WrongWidth)
    jrl.ModelCatalog.register_custom_preprocessor("doubler", Doubler)
    yield
    for name in ("two_heads", "features", "wrong_width", "doubler"):
        jrl.ModelCatalog.unregister(name)


# -- distributions ------------------------------------------------------------------------------


def test_categorical_dist_class_matches_closed_forms():
    cls = dist_class_for(EnvSpec(obs_shape=(4,), num_actions=3))
    logits = np.array([[1.0, 2.0, 0.5], [0.0, 0.0, 0.0]], np.float32)
    other_logits = np.array([[0.3, -1.0, 2.0], [1.0, 0.0, -1.0]], np.float32)
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    q = np.exp(other_logits) / np.exp(other_logits).sum(-1, keepdims=True)
    dist = cls(logits, key=jax.random.PRNGKey(0))
    np.testing.assert_allclose(dist.logp(np.array([1, 2])), np.log([p[0, 1], p[1, 2]]),
                               rtol=1e-5)
    np.testing.assert_allclose(dist.entropy(), -(p * np.log(p)).sum(-1), rtol=1e-5)
    np.testing.assert_allclose(dist.kl(cls(other_logits)), (p * np.log(p / q)).sum(-1),
                               rtol=1e-5)
    np.testing.assert_array_equal(dist.deterministic_sample(), [1, 0])
    np.testing.assert_allclose(dist.sampled_action_logp(), np.log(p[[0, 1], [1, 0]]), rtol=1e-5)
    assert dist.sample().shape == (2,)
    with pytest.raises(jrl.ConfigError, match=r"inputs shaped \[N, 3\]"):
        cls(np.zeros((2, 4)))


def test_diag_gaussian_dist_class_matches_closed_forms():
    cls = dist_class_for(EnvSpec(obs_shape=(4,), action_kind="continuous", action_shape=(2,),
                                 action_low=(-1.0, -1.0), action_high=(1.0, 1.0)))
    mean, log_std = np.array([[0.5, -1.0]]), np.array([[0.1, -0.3]])
    other_mean, other_log_std = np.array([[0.0, 0.0]]), np.array([[0.0, 0.2]])
    dist = cls(np.concatenate([mean, log_std], -1))
    other = cls(np.concatenate([other_mean, other_log_std], -1))
    x = np.array([[0.2, 0.1]])
    std, other_std = np.exp(log_std), np.exp(other_log_std)
    logp = (-0.5 * ((x - mean) / std) ** 2 - log_std - 0.5 * np.log(2 * np.pi)).sum(-1)
    entropy = (log_std + 0.5 * np.log(2 * np.pi * np.e)).sum(-1)
    kl = (other_log_std - log_std + (std**2 + (mean - other_mean) ** 2) / (2 * other_std**2)
          - 0.5).sum(-1)
    np.testing.assert_allclose(dist.logp(x), logp, rtol=1e-5)
    np.testing.assert_allclose(dist.entropy(), entropy, rtol=1e-5)
    np.testing.assert_allclose(dist.kl(other), kl, rtol=1e-5)
    np.testing.assert_allclose(dist.deterministic_sample(), mean, rtol=1e-6)


def test_masked_logits_are_never_sampled():
    spec = EnvSpec(obs_shape=(6,), num_actions=3, action_mask=(0, 3))
    obs = jnp.asarray([[1.0, 0.0, 1.0, 5.0, 5.0, 5.0], [0.0, 1.0, 0.0, 5.0, 5.0, 5.0]])
    logits = catalog.mask_logits(jnp.asarray([[0.0, 9.0, 0.0], [9.0, 0.0, 9.0]]),
                                 catalog.action_mask(spec, obs))
    draws = jax.random.categorical(jax.random.PRNGKey(0), logits, axis=-1, shape=(2000, 2))
    assert not np.any(np.asarray(draws[:, 0]) == 1)
    assert np.all(np.asarray(draws[:, 1]) == 1)
    dist = catalog.make_distribution(spec, logits)
    assert np.all(np.isfinite(dist.entropy())) and np.all(np.isfinite(dist.kl(dist)))
    # a row that allows nothing falls back to every action rather than to NaNs
    nothing = catalog.mask_logits(jnp.zeros((1, 3)), jnp.zeros((1, 3), bool))
    np.testing.assert_array_equal(nothing, jnp.zeros((1, 3)))


# -- the model-access API ----------------------------------------------------------------------


def test_ppo_model_access_api_as_documented(make_trainer, capsys):
    policy = make_trainer("PPO", "CartPole-v1").get_policy()
    logits, state = policy.model.from_batch({"obs": OBS})
    assert logits.shape == (1, 2) and state == []
    values = policy.model.value_function()
    np.testing.assert_allclose(values, policy.model.value_function(list(OBS)), rtol=1e-6)
    dist = policy.dist_class(logits, policy.model)
    assert dist.sample().shape == (1,) and dist.deterministic_sample().shape == (1,)
    np.testing.assert_allclose(dist.logp(np.array([1])), policy.model.logp(list(OBS), [1]),
                               rtol=1e-5)
    assert policy.model.base_model.summary() is None
    table = capsys.readouterr().out
    assert "Layer (type)" in table and "policy_head/logits (Dense)" in table
    assert "(None, 2)" in table and "Total params: " in table
    named = policy.model.variables(as_dict=True)
    assert "params/policy_head/logits/kernel" in named
    assert sum(v.size for v in policy.model.variables()) == policy.model.num_params()
    assert f"Total params: {policy.model.num_params():,}" in table
    # called like RLlib's model(input_dict)
    np.testing.assert_allclose(policy.model({"obs": OBS})[0], logits)
    # concepts PPO's model does not have are clear errors
    with pytest.raises(jrl.ConfigError, match="no Q-value head"):
        policy.model.get_q_value_distributions(np.zeros((1, 16)))
    with pytest.raises(jrl.ConfigError, match="'obs'"):
        policy.model.from_batch(OBS)
    with pytest.raises(jrl.ConfigError, match="call policy.model.from_batch"):
        PolicyModel(policy).value_function()  # a model without a forward pass yet


def test_dqn_heads_rebuild_the_q_values(make_trainer, capsys):
    model = make_trainer("DQN", "CartPole-v1").get_policy().model
    model_out, state = model.from_batch({"obs": OBS})
    assert model_out.shape == (1, 16) and state == []
    advantages = model.get_q_value_distributions(model_out)[0]
    value = model.get_state_value(model_out)
    assert advantages.shape == (1, 2) and value.shape == (1, 1)
    np.testing.assert_allclose(value + advantages - advantages.mean(-1, keepdims=True),
                               model.q_values(list(OBS)), rtol=1e-5, atol=1e-6)
    model.q_value_head.summary()
    model.state_value_head.summary()
    out = capsys.readouterr().out
    assert 'Model: "q_value_head"' in out and "advantage_out (Dense)" in out
    assert 'Model: "state_value_head"' in out and "value_out (Dense)" in out
    assert "model_out (InputLayer)" in out and "(None, 16)" in out
    with pytest.raises(jrl.ConfigError, match="no action distribution class"):
        _ = model.policy.dist_class


# -- custom models and preprocessors -----------------------------------------------------------


def test_custom_model_from_yaml_trains_and_round_trips_a_checkpoint(registered, make_trainer,
                                                                    tmp_path):
    model = yaml.safe_load("custom_model: two_heads\ncustom_model_config: {hidden: 4}\n")
    trainer = make_trainer("PPO", "CartPole-v1", model=model)
    trainer.train()
    names = trainer.get_policy().model.variables(as_dict=True)
    assert names["params/custom_model/hidden/kernel"].shape == (4, 4)
    path = trainer.save(str(tmp_path))
    restored = jrl.Trainer.from_checkpoint(path, log_to_disk=False)
    try:
        for a, b in zip(jax.tree.leaves(trainer.get_weights()),
                        jax.tree.leaves(restored.get_weights()), strict=True):
            np.testing.assert_array_equal(a, b)
        assert restored.config["model"]["custom_model"] == "two_heads"
    finally:
        restored.stop()


def test_custom_torso_under_dqn_and_json_config(registered, make_trainer):
    model = json.loads('{"custom_model": "features", "custom_model_config": {"width": 5}}')
    trainer = make_trainer("DQN", "CartPole-v1", model=model)
    model_out, _ = trainer.get_policy().model.from_batch({"obs": OBS})
    assert model_out.shape == (1, 5)


def test_custom_model_with_the_wrong_outputs_says_what_was_expected(registered, make_trainer):
    with pytest.raises(jrl.ConfigError, match=r"needs \(outputs \[B, 2\], value \[B\]\)"):
        make_trainer("PPO", "CartPole-v1", model={"custom_model": "wrong_width"})
    with pytest.raises(jrl.ConfigError, match="unknown custom model 'nope'"):
        make_trainer("A2C", "CartPole-v1", model={"custom_model": "nope"})
    with pytest.raises(jrl.ConfigError, match="takes no model.custom_model"):
        make_trainer("SAC", "Pendulum-v1", model={"custom_model": "two_heads"})
    with pytest.raises(jrl.ConfigError, match="flax.linen.Module"):
        jrl.ModelCatalog.register_custom_model("not_a_module", dict)


def test_custom_preprocessor_feeds_the_network(registered, make_trainer):
    prep = get_preprocessor(gym.spaces.Box(-1.0, 1.0, (4,)),
                            catalog.ModelConfig(custom_preprocessor="doubler"))
    np.testing.assert_allclose(prep.transform_batch(OBS), [[0.1, 0.2, 0.3, 0.4, 0.2, 0.4,
                                                            0.6, 0.8]], rtol=1e-6)
    trainer = make_trainer("PG", "CartPole-v1", model={"custom_preprocessor": "doubler"})
    assert trainer.get_policy().spec.obs_shape == (8,)
    assert trainer.compute_single_action(OBS[0]) in (0, 1)


# -- action masking ----------------------------------------------------------------------------


def _invalid_actions(trainer, steps: int = 60) -> int:
    env = ActionMaskEnv()
    obs, _ = env.reset(seed=3)
    for _ in range(steps):
        obs, _, _, truncated, _ = env.step(trainer.compute_single_action(obs, explore=True))
        if truncated:
            obs, _ = env.reset()
    return env.invalid_actions


@pytest.mark.parametrize("algo", [
    "PPO", "DQN",
    *(pytest.param(a, marks=pytest.mark.slow) for a in ("A2C", "PG", "IMPALA", "APPO"))])
def test_masked_actions_are_never_taken(algo, make_trainer):
    # The env raises on a forbidden action, so training itself proves none was sampled.
    trainer = make_trainer(algo, MASK_ENV, env_config={"raise_on_invalid": True})
    assert trainer.get_policy().spec.action_mask == (0, 6)
    trainer.train()
    assert _invalid_actions(trainer) == 0


def test_algorithms_that_ignore_masks_refuse_them(make_trainer):
    with pytest.raises(jrl.ConfigError, match="does not apply the observation's 'action_mask'"):
        make_trainer("ES", MASK_ENV)


@pytest.mark.slow
def test_custom_model_in_the_jitted_loop(registered, make_trainer):
    pytest.importorskip("gymnax")
    trainer = make_trainer("PPO", "gymnax:CartPole-v1", timesteps_per_iteration=64,
                           model={"custom_model": "two_heads"})
    result = trainer.train()
    assert np.isfinite(result["info"]["learner"]["default_policy"]["total_loss"])
    assert "params/custom_model/hidden/kernel" in trainer.get_policy().model.variables(True)


@pytest.mark.slow
def test_custom_model_and_masking_on_ray_workers(registered, ray_cluster, make_trainer):
    # Remote workers get the driver's registrations; the env raises on a masked action.
    trainer = make_trainer("PPO", MASK_ENV, num_workers=1, env_config={"raise_on_invalid": True},
                           model={"custom_model": "two_heads"})
    result = trainer.train()
    assert result["timesteps_total"] >= 64


# -- MultiDiscrete and MultiBinary actions -----------------------------------------------------


def test_multi_categorical_and_bernoulli_match_closed_forms():
    md = dist_class_for(EnvSpec(obs_shape=(2,), action_kind="multi_discrete",
                                action_shape=(2,), action_nvec=(3, 2)))
    logits = np.array([[1.0, 0.0, -1.0, 0.5, -0.5]], np.float32)
    p0, p1 = np.exp(logits[0, :3]) / np.exp(logits[0, :3]).sum(), \
        np.exp(logits[0, 3:]) / np.exp(logits[0, 3:]).sum()
    dist = md(logits, key=jax.random.PRNGKey(1))
    np.testing.assert_allclose(dist.logp(np.array([[2, 1]])), np.log(p0[2] * p1[1]), rtol=1e-5)
    np.testing.assert_allclose(dist.entropy(), -(p0 * np.log(p0)).sum() - (p1 * np.log(p1)).sum(),
                               rtol=1e-5)
    np.testing.assert_array_equal(dist.deterministic_sample(), [[0, 0]])
    sample = dist.sample()
    assert sample.shape == (1, 2) and 0 <= sample[0, 0] < 3 and 0 <= sample[0, 1] < 2
    assert float(dist.kl(md(logits))[0]) == pytest.approx(0.0, abs=1e-6)

    mb = dist_class_for(EnvSpec(obs_shape=(2,), action_kind="multi_binary", action_shape=(2,)))
    log_odds = np.array([[0.3, -1.2]], np.float32)
    other = np.array([[0.0, 0.4]], np.float32)
    p, q = 1 / (1 + np.exp(-log_odds)), 1 / (1 + np.exp(-other))
    bern = mb(log_odds)
    np.testing.assert_allclose(bern.logp(np.array([[1, 0]])), np.log(p[0, 0] * (1 - p[0, 1])),
                               rtol=1e-5)
    np.testing.assert_allclose(
        bern.entropy(), -(p * np.log(p) + (1 - p) * np.log(1 - p)).sum(-1), rtol=1e-5)
    np.testing.assert_allclose(
        bern.kl(mb(other)), (p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))).sum(-1),
        rtol=1e-5)
    np.testing.assert_array_equal(bern.deterministic_sample(), [[1, 0]])


class MultiActionEnv(gym.Env):
    """Reward 1 per component of the action that matches the observed target bits."""

    def __init__(self, config=None):
        self.observation_space = gym.spaces.Box(0.0, 1.0, (2,), np.float32)
        self.action_space = gym.spaces.MultiDiscrete([2, 3])
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.target = 0, self.np_random.integers(0, 2, 2)
        return self.target.astype(np.float32), {}

    def step(self, action):
        assert self.action_space.contains(np.asarray(action, np.int64)), action
        reward = float(np.sum(np.asarray(action) == self.target))
        self.t, self.target = self.t + 1, self.np_random.integers(0, 2, 2)
        return self.target.astype(np.float32), reward, False, self.t >= 8, {}


def test_multi_discrete_actions_train_with_ppo(make_trainer):
    jrl.register_env("MultiActionEnv", MultiActionEnv)
    trainer = make_trainer("PPO", "MultiActionEnv")
    spec = trainer.get_policy().spec
    assert spec.action_kind == "multi_discrete" and spec.action_nvec == (2, 3)
    trainer.train()
    assert trainer.get_policy().action_space.contains(
        np.asarray(trainer.compute_single_action(np.ones(2, np.float32)), np.int64))
    with pytest.raises(jrl.ConfigError, match="multi_discrete"):
        make_trainer("DDPG", "MultiActionEnv")


@jax.tree_util.register_pytree_node_class
class HalfTemperature:
    """A custom action distribution: a categorical of ``2 * logits``."""

    def __init__(self, inputs):
        self.inner = catalog.make_distribution(SPEC2, 2.0 * inputs)
        self.inputs = inputs

    def tree_flatten(self):
        return (self.inputs,), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)

    @classmethod
    def required_model_output_shape(cls, action_space, model_config):
        return action_space.num_actions

    def sample(self, key):
        return self.inner.sample(key)

    def log_prob(self, x):
        return self.inner.log_prob(x)

    def entropy(self):
        return self.inner.entropy()

    def kl(self, other):
        return self.inner.kl(other.inner)

    def mode(self):
        return self.inner.mode()


SPEC2 = EnvSpec(obs_shape=(4,), num_actions=2)


def test_custom_action_dist_trains_and_backs_dist_class(make_trainer):
    jrl.ModelCatalog.register_custom_action_dist("half_temperature", HalfTemperature)
    try:
        trainer = make_trainer("PPO", "CartPole-v1",
                               model={"custom_action_dist": "half_temperature"})
        trainer.train()
        policy = trainer.get_policy()
        logits, _ = policy.model.from_batch({"obs": OBS})
        dist = policy.dist_class(logits, policy.model)
        p = np.exp(2 * logits) / np.exp(2 * logits).sum(-1, keepdims=True)
        np.testing.assert_allclose(dist.logp(np.array([0])), np.log(p[:, 0]), rtol=1e-5)
        with pytest.raises(jrl.ConfigError, match="actor-critic algorithms"):
            make_trainer("DQN", "CartPole-v1", model={"custom_action_dist": "half_temperature"})
        with pytest.raises(jrl.ConfigError, match="lacks"):
            jrl.ModelCatalog.register_custom_action_dist("broken", dict)
    finally:
        jrl.ModelCatalog.unregister("half_temperature")
