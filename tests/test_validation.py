"""Hostile input: every bad config, flag, experiment file or stop criterion is one line and exit 2
(never a traceback, a hang or exit 0), and valid configs that hold NumPy values build.

The table calls the CLI's ``main`` in-process; each case is refused before any training starts
(except the stop key whose value is a dict, which needs one result to see)."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from jrl import registry
from jrl.cli import main
from jrl.errors import ConfigError


def _train(*extra: str, algo: str = "PPO") -> list[str]:
    return ["train", "--algo", algo, "--env", "CartPole-v1", "-q", *extra]


def _config(**keys) -> list[str]:
    return ["--config", json.dumps(keys)]


def _raw(text: str) -> list[str]:
    return ["--config", text]


NOT_UTF8 = b"bad:\n  run: PPO\n  env: CartPole-v1\n  config: {lr: \xff\xfe}\n"

# (case id, argv after "train ..." or a full argv, file contents {name: text}, expected text)
CASES = [
    ("hidden-zero", _train(*_config(model={"fcnet_hiddens": [0]})), {}, "fcnet_hiddens[0]"),
    ("hidden-negative", _train(*_config(model={"fcnet_hiddens": [-64]})), {}, "layer size"),
    ("seed-negative", _train(*_config(seed=-1)), {}, "'seed'"),
    ("seed-2**64", _train("--seed", str(2**64)), {}, "'seed'"),
    ("smoothing-1e300", _train(*_config(metrics_smoothing_episodes=1e300)), {},
     "metrics_smoothing_episodes"),
    ("target-update-1e21", _train(*_config(target_network_update_freq=1e21), algo="DQN"), {},
     "target_network_update_freq"),
    ("batch-too-big-for-memory", _train(*_config(train_batch_size=10**9)), {}, "GiB"),
    ("envs-too-many", _train(*_config(num_envs_per_worker=10**6)), {}, "GiB"),
    ("sgd-iter-huge", _train(*_config(num_sgd_iter=10**9)), {}, "num_sgd_iter"),
    ("eval-episodes-huge", _train(*_config(evaluation_num_episodes=10**9)), {},
     "evaluation_num_episodes"),
    ("timesteps-per-iter-huge", _train(*_config(timesteps_per_iteration=10**12)), {},
     "timesteps_per_iteration"),
    ("min-iter-time-huge", _train(*_config(min_iter_time_s=1e9)), {}, "min_iter_time_s"),
    ("lr-nan", _train(*_raw('{"lr": NaN}')), {}, "finite"),
    ("lr-inf", _train(*_raw('{"lr": Infinity}')), {}, "finite"),
    ("lr-1e308", _train(*_config(lr=1e308)), {}, "'lr'"),
    ("gamma-nan", _train(*_raw('{"gamma": NaN}')), {}, "finite"),
    ("clip-param-inf", _train(*_raw('{"clip_param": Infinity}')), {}, "finite"),
    ("clip-rewards-negative", _train(*_config(clip_rewards=-1)), {}, "clip_rewards"),
    ("dqn-buffer-below-batch", _train(*_config(buffer_size=10), algo="DQN"), {}, "buffer_size"),
    ("config-empty", _train("--config", ""), {}, "--config is empty"),
    ("config-deep", _train(*_raw('{"a": ' * 5000 + "1" + "}" * 5000)), {}, "nested too deep"),
    ("config-nested-100", _train(*_raw('{"env_config": ' + '{"a": ' * 100 + "1"
                                       + "}" * 101)), {}, "levels deep"),
    ("checkpoint-freq-negative", _train("--checkpoint-freq", "-1"), {}, "--checkpoint-freq"),
    ("stop-nan", _train("--stop", '{"episode_reward_mean": NaN}'), {}, "finite"),
    ("stop-infinity", _train("--stop", "episode_reward_mean=Infinity"), {}, "finite"),
    ("stop-eval-never", _train("--stop", "evaluation/episode_reward_mean=100",
                               *_config(evaluation_interval=None)), {}, "never be met"),
    ("local-dir-is-a-file", _train("--local-dir", "{tmp}/a_file"), {"a_file": "x"},
     "not a directory"),
    ("file-not-utf8", ["train", "-f", "{tmp}/bad.yaml"], {"bad.yaml": NOT_UTF8}, "UTF-8"),
    ("file-config-list", ["train", "-f", "{tmp}/e.yaml"],
     {"e.yaml": "e:\n  run: PPO\n  env: CartPole-v1\n  config: [1, 2]\n"}, "e.config"),
    ("file-checkpoint-freq-word", ["train", "-f", "{tmp}/e.yaml"],
     {"e.yaml": "e:\n  run: PPO\n  env: CartPole-v1\n  checkpoint_freq: often\n"},
     "checkpoint_freq"),
    ("file-env-int", ["train", "-f", "{tmp}/e.yaml"],
     {"e.yaml": "e:\n  run: PPO\n  env: 7\n"}, "e.env"),
    ("file-grid-not-list", ["train", "-f", "{tmp}/e.yaml"],
     {"e.yaml": "e:\n  run: PPO\n  env: CartPole-v1\n  config: {lr: {grid_search: 0.1}}\n"},
     "grid_search"),
    ("file-duplicate-experiment", ["train", "-f", "{tmp}/e.yaml"],
     {"e.yaml": "e:\n  run: PPO\n  env: CartPole-v1\ne:\n  run: DQN\n  env: CartPole-v1\n"},
     "defined twice"),
    ("address-unreachable", _train("--address", "127.0.0.1:1", *_config(num_workers=1)), {},
     "cannot reach"),
    ("evaluate-episodes-0", ["evaluate", "{tmp}/nothing", "--episodes", "0"], {}, "--episodes"),
    ("evaluate-out-unwritable", ["evaluate", "{tmp}/nothing", "--out", "{tmp}/a_file/out.json"],
     {"a_file": "x"}, "--out"),
]


@pytest.mark.parametrize("argv, files, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(argv, files, message, tmp_path, capsys):
    for name, text in files.items():
        (tmp_path / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if argv[0] == "train" and "--local-dir" not in argv and "-f" not in argv:
        argv += ["--local-dir", str(tmp_path / "results")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err, err
    assert len(err.splitlines()) == 1 and err.startswith("jrl: error:"), err
    assert not (tmp_path / "results").exists() or not list((tmp_path / "results").rglob("*.json"))


def test_stop_key_holding_a_dict_is_an_error(small_config, tmp_path, capsys):
    # the suite's small PPO: its programs are in the session's compilation cache
    argv = _train("--stop", "info/learner=1", *_config(**small_config("PPO")),
                  "--local-dir", str(tmp_path))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "'info/learner' names a dict" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("config", [
    {"train_batch_size": np.int64(256)},
    {"lr": np.float32(1e-3)},
    {"model": {"fcnet_hiddens": np.array([64, 64])}},
    {"model": {"fcnet_hiddens": [np.int32(32)]}},
    {"gamma": np.float64(0.9), "explore": np.bool_(False)},
    {"clip_rewards": 5.0},
    {"seed": 2**31 - 1},
])
def test_numpy_values_are_accepted_as_python_ones(config):
    parsed = registry.parse_config("PPO", {"env": "CartPole-v1", **config})
    for key, value in config.items():
        got = getattr(parsed, key)
        if key == "model":
            assert all(type(v) is int for v in got.fcnet_hiddens)
            assert list(got.fcnet_hiddens) == list(value["fcnet_hiddens"])
        else:
            assert type(got) in (int, float, bool) and got == pytest.approx(value)


# -- property-based: the config schema and the CLI -------------------------------------------

hypothesis = pytest.importorskip("hypothesis")
st = pytest.importorskip("hypothesis.strategies")

_SIZE_KEYS = ("train_batch_size", "rollout_fragment_length", "sgd_minibatch_size",
              "num_sgd_iter", "num_envs_per_worker", "metrics_smoothing_episodes",
              "evaluation_num_episodes")
_RATE_KEYS = ("lr", "gamma", "lambda", "clip_param", "vf_loss_coeff", "entropy_coeff")

_bad_numbers = st.one_of(st.just(math.nan), st.just(math.inf), st.just(-math.inf),
                         st.integers(max_value=0), st.integers(min_value=2**31),
                         st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False))
_wrong_types = st.one_of(st.text(max_size=5), st.lists(st.integers(), max_size=2),
                         st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                         st.booleans())


@st.composite
def invalid_configs(draw):
    kind = draw(st.sampled_from(["size", "rate", "type", "hidden", "seed"]))
    if kind == "size":
        return {draw(st.sampled_from(_SIZE_KEYS)): draw(_bad_numbers)}
    if kind == "rate":
        value = draw(st.one_of(st.just(math.nan), st.just(math.inf), st.just(-math.inf),
                               st.floats(max_value=-1e-6, allow_nan=False,
                                         allow_infinity=False)))
        return {draw(st.sampled_from(_RATE_KEYS)): value}
    if kind == "type":
        return {draw(st.sampled_from(_SIZE_KEYS + _RATE_KEYS)): draw(_wrong_types)}
    if kind == "hidden":
        sizes = draw(st.lists(st.integers(-10**6, 10**9), min_size=1, max_size=3)
                     .filter(lambda xs: any(x < 1 or x > 10**6 for x in xs)))
        return {"model": {"fcnet_hiddens": sizes}}
    return {"seed": draw(st.one_of(st.integers(max_value=-1), st.integers(min_value=2**31)))}


@st.composite
def valid_configs(draw):
    np_int = draw(st.sampled_from([int, np.int32, np.int64]))
    np_float = draw(st.sampled_from([float, np.float32, np.float64]))
    batch = draw(st.integers(1, 4096))
    return {
        "train_batch_size": np_int(batch),
        "sgd_minibatch_size": np_int(draw(st.integers(1, batch))),
        "num_sgd_iter": np_int(draw(st.integers(1, 50))),
        "lr": np_float(draw(st.floats(1e-6, 1.0))),
        "gamma": np_float(draw(st.floats(0.0, 1.0))),
        "seed": np_int(draw(st.integers(0, 2**31 - 1))),
        "model": {"fcnet_hiddens": np.array(draw(st.lists(st.integers(1, 512), max_size=3)),
                                            dtype=np.int64)},
    }


@hypothesis.settings(max_examples=150, deadline=None, derandomize=True)
@hypothesis.given(invalid_configs())
def test_every_generated_invalid_config_is_a_config_error(config):
    with pytest.raises(ConfigError):
        registry.parse_config("PPO", {"env": "CartPole-v1", **config})


@hypothesis.settings(max_examples=100, deadline=None, derandomize=True)
@hypothesis.given(valid_configs())
def test_every_generated_valid_config_builds(config):
    parsed = registry.parse_config("PPO", {"env": "CartPole-v1", **config})
    assert parsed.train_batch_size == int(config["train_batch_size"])


@hypothesis.settings(max_examples=150, deadline=None, derandomize=True)
@hypothesis.given(invalid_configs())
def test_cli_refuses_every_generated_invalid_config_in_one_line(config):
    import contextlib
    import io
    import tempfile

    text = json.dumps(config)  # NaN/Infinity become JSON's NaN/Infinity literals
    err = io.StringIO()
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stderr(err):
        rc = main(_train("--config", text, "--local-dir", tmp))
        assert not any(name.endswith(".json") for _, _, names in os.walk(tmp) for name in names)
    lines = err.getvalue().strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("jrl: error:"), lines


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_multi_experiment_file_with_a_failing_trial_exits_non_zero(ray_cluster, small_config,
                                                                   tmp_path, capsys):
    good = small_config("PPO")
    spec = tmp_path / "two.yaml"
    spec.write_text(json.dumps({
        "works": {"run": "PPO", "env": "CartPole-v1", "stop": {"training_iteration": 1},
                  "config": good},
        # valid config, but gymnasium refuses the env kwargs when the trial builds its env
        "fails": {"run": "PPO", "env": "CartPole-v1", "stop": {"training_iteration": 1},
                  "config": {**good, "env_config": {"no_such_kwarg": 1}}},
    }))
    rc = main(["train", "-f", str(spec), "--local-dir", str(tmp_path / "results")])
    assert rc == 1
    assert "1 trial(s) failed" in capsys.readouterr().err
