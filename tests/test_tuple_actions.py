"""Tuple and Dict action spaces: RLlib's MultiActionDistribution over flat model outputs,
flat actions in batches, nested actions for envs and ``compute_single_action``."""

from __future__ import annotations

import gymnasium as gym
import jax
import numpy as np
import pytest

import jrl
from jrl.networks import distributions
from jrl.rollout.action_dist import dist_class_for
from jrl.rollout.envs import env_spec, flatten_actions, unflatten_actions

TUPLE_SPACE = gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Box(-1.0, 1.0, (2,))))
DICT_SPACE = gym.spaces.Dict({"move": gym.spaces.MultiDiscrete([2, 3]),
                              "bits": gym.spaces.MultiBinary(2),
                              "nested": gym.spaces.Tuple((gym.spaces.Discrete(3),))})


def _log_softmax(x):
    x = np.asarray(x, np.float64)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_multi_action_distribution_sums_its_components_by_hand():
    spec = env_spec((3,), np.float32, TUPLE_SPACE)
    assert spec.action_kind == "tuple" and spec.action_shape == (3,)
    dist_class = dist_class_for(spec)
    assert dist_class.required_model_output_shape(TUPLE_SPACE, None) == 2 + 4
    inputs = np.array([[0.5, -0.5, 0.1, -0.2, np.log(0.5), 0.0],
                       [2.0, 0.0, 0.0, 0.3, 0.0, np.log(2.0)]], np.float32)
    dist = dist_class(inputs, key=jax.random.PRNGKey(0))
    actions = (np.array([1, 0]), np.array([[0.3, -0.4], [0.0, 0.9]], np.float32))
    lp_cat = _log_softmax(inputs[:, :2])[np.arange(2), actions[0]]
    mean, std = inputs[:, 2:4], np.exp(inputs[:, 4:6])
    lp_gauss = (-0.5 * ((actions[1] - mean) / std) ** 2 - np.log(std)
                - 0.5 * np.log(2 * np.pi)).sum(-1)
    np.testing.assert_allclose(dist.logp(actions), lp_cat + lp_gauss, rtol=1e-5)
    p = np.exp(_log_softmax(inputs[:, :2]))
    ent = -(p * np.log(p)).sum(-1) + (np.log(std) + 0.5 * (1 + np.log(2 * np.pi))).sum(-1)
    np.testing.assert_allclose(dist.entropy(), ent, rtol=1e-5)
    other = dist_class(np.zeros_like(inputs))
    kl_cat = (p * (np.log(p) - np.log(0.5))).sum(-1)
    kl_gauss = (-np.log(std) + 0.5 * (std ** 2 + mean ** 2 - 1.0)).sum(-1)
    np.testing.assert_allclose(dist.kl(other), kl_cat + kl_gauss, rtol=1e-5, atol=1e-6)
    sample = dist.sample()
    assert isinstance(sample, tuple) and sample[0].shape == (2,) and sample[1].shape == (2, 2)
    np.testing.assert_allclose(dist.sampled_action_logp(), dist.logp(sample), rtol=1e-5)
    greedy = dist.deterministic_sample()
    np.testing.assert_array_equal(greedy[0], [0, 0])
    np.testing.assert_allclose(greedy[1], mean, rtol=1e-6)


def test_dict_actions_flatten_and_unflatten_in_the_space_order():
    spec = env_spec((3,), np.float32, DICT_SPACE)
    assert spec.action_kind == "dict" and spec.action_shape == (2 + 2 + 1,)
    action = DICT_SPACE.sample()
    flat = flatten_actions(spec, action)
    back = unflatten_actions(spec, flat)
    assert DICT_SPACE.contains(back)
    for key in ("move", "bits"):
        np.testing.assert_array_equal(back[key], action[key])
    assert int(back["nested"][0]) == int(action["nested"][0])
    pure = distributions.MultiActionDistribution(np.zeros((4, 5 + 2 + 3), np.float32),
                                                 spec.action_parts)
    logp = np.asarray(pure.log_prob(pure.sample(jax.random.PRNGKey(3))))
    np.testing.assert_allclose(logp, np.log(1 / 6 * 1 / 4 * 1 / 3), rtol=1e-5)


class TupleActionEnv(gym.Env):
    """Reward for picking the observed bit with the Discrete part and steering the Box part
    towards ``(+1, -1)``."""

    def __init__(self, config=None):
        config = config or {}
        self.observation_space = gym.spaces.Box(0.0, 1.0, (2,), np.float32)
        self.action_space = DICT_SPACE if config.get("dict") else TUPLE_SPACE
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.bit = 0, int(self.np_random.integers(0, 2))
        return self._obs(), {}

    def _obs(self):
        return np.eye(2, dtype=np.float32)[self.bit]

    def step(self, action):
        assert self.action_space.contains(action), action
        if isinstance(action, dict):
            reward = float(action["move"][0] == self.bit)
        else:
            reward = float(action[0] == self.bit) + 0.5 * float(action[1][0] - action[1][1])
        self.t, self.bit = self.t + 1, int(self.np_random.integers(0, 2))
        return self._obs(), reward, False, self.t >= 8, {}


def test_tuple_actions_train_with_ppo(make_trainer):
    jrl.register_env("TupleActionEnv", TupleActionEnv)
    trainer = make_trainer("PPO", "TupleActionEnv")
    assert trainer.train()["timesteps_total"] > 0
    policy = trainer.get_policy()
    obs = np.array([1.0, 0.0], np.float32)
    action = trainer.compute_single_action(obs)
    assert isinstance(action, tuple) and TUPLE_SPACE.contains(action)
    actions = trainer.compute_actions({"a": obs, "b": obs})
    assert all(TUPLE_SPACE.contains(a) for a in actions.values())
    inputs, _ = policy.model.from_batch({"obs": obs[None]})
    dist = policy.dist_class(inputs, policy.model)
    sample = dist.sample()
    np.testing.assert_allclose(dist.logp(sample), dist.sampled_action_logp(), rtol=1e-5)
    assert flatten_actions(policy.spec, sample).shape == (1, 3)
    assert np.isfinite(trainer.evaluate()["evaluation"]["episode_reward_mean"])


def test_dict_actions_step_the_env_and_come_back_nested(make_trainer):
    jrl.register_env("TupleActionEnv", TupleActionEnv)
    trainer = make_trainer("PPO", "TupleActionEnv", env_config={"dict": True})
    worker = trainer.workers.local_worker()
    worker.set_policy(trainer.get_policy().acting)
    batch = worker.sample()  # the env asserts that every action is in its space
    assert np.asarray(batch["actions"]).shape[-1] == 5
    action = trainer.compute_single_action(np.array([0.0, 1.0], np.float32))
    assert isinstance(action, dict) and DICT_SPACE.contains(action)


def test_value_based_algorithms_refuse_tuple_actions(make_trainer):
    jrl.register_env("TupleActionEnv", TupleActionEnv)
    with pytest.raises(jrl.ConfigError, match="DQN needs a Discrete action space, got a Tuple"):
        make_trainer("DQN", "TupleActionEnv")
    with pytest.raises(jrl.ConfigError, match="SAC needs a Discrete or Box action space"):
        make_trainer("SAC", "TupleActionEnv")
    with pytest.raises(jrl.ConfigError, match="DDPG needs a continuous .* got a tuple"):
        make_trainer("DDPG", "TupleActionEnv")


@pytest.mark.slow
def test_ppo_learns_a_tuple_action_task(make_trainer):
    """Both parts must learn: the Discrete one copies the observed bit (1 per step), the Box
    one pushes to (+1, -1) (1 per step); a random policy gets about 4 of the 16 per episode."""
    jrl.register_env("TupleActionEnv", TupleActionEnv)
    trainer = make_trainer("PPO", "TupleActionEnv", train_batch_size=512,
                           rollout_fragment_length=64, num_envs_per_worker=8,
                           sgd_minibatch_size=128, num_sgd_iter=8, lr=3e-3,
                           model={"fcnet_hiddens": [32]})
    for _ in range(15):
        trainer.train()
    assert trainer.evaluate()["evaluation"]["episode_reward_mean"] >= 14.0
