"""Strict config parsing: unknown keys, types, ranges, merge order."""

import dataclasses

import pytest

from jrl import registry
from jrl.algorithms.dqn import DQNConfig
from jrl.algorithms.ppo import DEFAULT_CONFIG, PPOConfig
from jrl.config import CommonConfig, merge, parse, to_dict
from jrl.errors import ConfigError


def test_unknown_key_names_the_closest_valid_key():
    with pytest.raises(ConfigError, match=r"unknown config key 'lrr'; did you mean 'lr'\?"):
        parse(PPOConfig, {"lrr": 0.1})


def test_unknown_nested_key_names_its_dotted_path():
    with pytest.raises(ConfigError, match=r"'model\.fcnet_hidens'.*'model\.fcnet_hiddens'"):
        parse(PPOConfig, {"model": {"fcnet_hidens": [8]}})


def test_unknown_key_in_exploration_config_has_dotted_path():
    with pytest.raises(ConfigError, match=r"exploration_config\.final_epsilom"):
        parse(DQNConfig, {"exploration_config": {"final_epsilom": 0.1}})


@pytest.mark.parametrize("key, value, expected", [
    ("lr", "fast", "must be float, got str 'fast'"),
    ("num_workers", 1.5, "must be int"),
    ("explore", "yes", "must be bool"),
    ("model", 3, "must be a mapping"),
])
def test_wrong_type_names_key_value_and_expected_type(key, value, expected):
    with pytest.raises(ConfigError, match=f"config key '{key}' {expected}"):
        parse(PPOConfig, {key: value})


@pytest.mark.parametrize("key, value", [("gamma", 1.5), ("lr", 0.0), ("num_envs_per_worker", 0),
                                        ("num_gpus", -1)])
def test_out_of_range_values_are_rejected(key, value):
    with pytest.raises(ConfigError, match=f"config key '{key}' must be"):
        parse(PPOConfig, {key: value})


def test_choices_suggest_the_nearest_value():
    with pytest.raises(ConfigError, match="did you mean 'MeanStdFilter'"):
        parse(PPOConfig, {"observation_filter": "MeanStd"})


def test_num_gpus_accepts_fractions_and_ints_widen_to_float():
    config = parse(CommonConfig, {"num_gpus": 0.25, "lr": 1})
    assert config.num_gpus == 0.25 and config.lr == 1.0 and isinstance(config.lr, float)


def test_lambda_is_spelled_like_rllib():
    config = parse(PPOConfig, {"lambda": 0.9})
    assert config.lambda_ == 0.9
    assert to_dict(config)["lambda"] == 0.9
    assert "lambda" in DEFAULT_CONFIG


def test_merge_order_later_overrides_win_and_nested_configs_merge():
    base = parse(PPOConfig, {"lr": 1e-3, "model": {"fcnet_hiddens": [32]}})
    merged = merge(base, {"model": {"fcnet_activation": "relu"}}, {"lr": 5e-4})
    assert merged.lr == 5e-4
    assert merged.model.fcnet_hiddens == (32,)
    assert merged.model.fcnet_activation == "relu"


def test_config_is_frozen():
    config = parse(PPOConfig, {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 1.0  # type: ignore[misc]


def test_cross_field_validation():
    with pytest.raises(ConfigError, match="sgd_minibatch_size"):
        parse(PPOConfig, {"train_batch_size": 100, "sgd_minibatch_size": 200})
    with pytest.raises(ConfigError, match="n_step"):
        parse(DQNConfig, {"n_step": 10, "rollout_fragment_length": 4})


def test_rllib_framework_names_are_accepted_and_others_rejected():
    assert parse(PPOConfig, {"framework": "torch"}).framework == "torch"
    with pytest.raises(ConfigError, match="config key 'framework' must be one of"):
        parse(PPOConfig, {"framework": "mxnet"})


def test_unknown_algorithm_suggests_registered_one():
    with pytest.raises(ConfigError, match="did you mean 'PPO'"):
        registry.get_algorithm_def("PPOO")
    assert registry.get_algorithm_def("ppo").name == "PPO"


def test_default_config_copy_is_a_plain_dict_users_can_edit():
    config = DEFAULT_CONFIG.copy()
    config["lr"] = 1e-3
    assert registry.parse_config("PPO", config).lr == 1e-3
