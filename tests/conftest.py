"""Shared test setup: results go to temp dirs, Ray needs no auth, JAX compiles each program once.

Fixtures:
  results_dir: the per-test ``JRL_RESULTS_DIR`` (autouse), so trainers never write to ``~``.
  small_config: ``small_config(algo, **overrides)`` -> a tiny RLlib-style config dict.
  make_trainer: ``make_trainer(algo, env, log_to_disk=False, **overrides)`` -> a ``jrl.Trainer``
    built from ``small_config``; stopped when the test ends.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest

# Per-algorithm configs small enough that building and training a trainer takes well under a
# second: tiny networks, short fragments, few SGD passes. New algorithms add an entry here.
SMALL_CONFIGS: dict[str, dict[str, Any]] = {
    "PPO": {
        "train_batch_size": 64,
        "rollout_fragment_length": 32,
        "sgd_minibatch_size": 32,
        "num_sgd_iter": 2,
        "model": {"fcnet_hiddens": [16, 16]},
        "seed": 0,
    },
    "IMPALA": {
        "train_batch_size": 64,
        "rollout_fragment_length": 16,
        "num_envs_per_worker": 2,
        "model": {"fcnet_hiddens": [16, 16]},
        "seed": 0,
    },
    "APPO": {
        "train_batch_size": 64,
        "rollout_fragment_length": 16,
        "num_envs_per_worker": 2,
        "num_sgd_iter": 2,
        "sgd_minibatch_size": 32,
        "model": {"fcnet_hiddens": [16, 16]},
        "seed": 0,
    },
    "PG": {
        "train_batch_size": 64,
        "rollout_fragment_length": 32,
        "use_baseline": True,
        "model": {"fcnet_hiddens": [16, 16]},
        "seed": 0,
    },
    "A2C": {
        "train_batch_size": 64,
        "rollout_fragment_length": 16,
        "num_envs_per_worker": 2,
        "microbatch_size": 24,
        "model": {"fcnet_hiddens": [16, 16]},
        "seed": 0,
    },
    "A3C": {
        "rollout_fragment_length": 16,
        "num_envs_per_worker": 2,
        "model": {"fcnet_hiddens": [16, 16]},
        "seed": 0,
    },
    "DQN": {
        "train_batch_size": 16,
        "rollout_fragment_length": 4,
        "n_step": 2,
        "learning_starts": 16,
        "buffer_size": 256,
        "timesteps_per_iteration": 32,
        "target_network_update_freq": 8,
        "hiddens": [16],
        "model": {"fcnet_hiddens": [16, 16]},
        "exploration_config": {"epsilon_timesteps": 100},
        "seed": 0,
    },
    "ES": {
        "episodes_per_batch": 2,
        "train_batch_size": 1,
        "noise_size": 1000,
        "eval_prob": 0.5,
        "model": {"fcnet_hiddens": [16]},
        "seed": 0,
    },
    "APEX": {
        "num_workers": 0,
        "train_batch_size": 16,
        "rollout_fragment_length": 4,
        "num_envs_per_worker": 4,
        "n_step": 2,
        "learning_starts": 16,
        "buffer_size": 256,
        "timesteps_per_iteration": 32,
        "target_network_update_freq": 8,
        "hiddens": [16],
        "model": {"fcnet_hiddens": [16, 16]},
        "seed": 0,
    },
    "APEX_DDPG": {
        "num_workers": 0,
        "train_batch_size": 16,
        "rollout_fragment_length": 4,
        "num_envs_per_worker": 2,
        "n_step": 2,
        "learning_starts": 16,
        "buffer_size": 256,
        "timesteps_per_iteration": 32,
        "actor_hiddens": [16],
        "critic_hiddens": [16],
        "exploration_config": {"random_timesteps": 8},
        "seed": 0,
    },
    "DDPG": {
        "train_batch_size": 16,
        "rollout_fragment_length": 4,
        "num_envs_per_worker": 2,
        "n_step": 2,
        "learning_starts": 16,
        "buffer_size": 256,
        "timesteps_per_iteration": 32,
        "actor_hiddens": [16],
        "critic_hiddens": [16],
        "exploration_config": {"random_timesteps": 8},
        "seed": 0,
    },
    "TD3": {
        "train_batch_size": 16,
        "rollout_fragment_length": 4,
        "num_envs_per_worker": 2,
        "learning_starts": 16,
        "buffer_size": 256,
        "timesteps_per_iteration": 32,
        "training_intensity": 8,
        "actor_hiddens": [16],
        "critic_hiddens": [16],
        "exploration_config": {"random_timesteps": 8},
        "seed": 0,
    },
    "SAC": {
        "train_batch_size": 16,
        "rollout_fragment_length": 4,
        "num_envs_per_worker": 2,
        "n_step": 2,
        "learning_starts": 16,
        "buffer_size": 256,
        "timesteps_per_iteration": 32,
        "Q_model": {"fcnet_hiddens": [16]},
        "policy_model": {"fcnet_hiddens": [16]},
        "exploration_config": {"random_timesteps": 8},
        "seed": 0,
    },
    "MARWIL": {
        "train_batch_size": 64,
        "rollout_fragment_length": 32,
        "input": "sampler",
        "model": {"fcnet_hiddens": [16, 16]},
        "seed": 0,
    },
    "BC": {
        "train_batch_size": 64,
        "rollout_fragment_length": 32,
        "input": "sampler",
        "model": {"fcnet_hiddens": [16, 16]},
        "seed": 0,
    },
}

# Config overrides that give an algorithm a different network (for checkpoint-refusal tests);
# algorithms not listed here build their networks from ``model``.
OTHER_NETWORK: dict[str, dict[str, Any]] = {
    "DDPG": {"actor_hiddens": [8]},
    "APEX_DDPG": {"actor_hiddens": [8]},
    "TD3": {"critic_hiddens": [8]},
    "SAC": {"Q_model": {"fcnet_hiddens": [8]}},
}

_JAX_CACHE_DIR: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    # Every Trainer jits fresh closures, so without a compilation cache each test would pay XLA's
    # compile time again for identical programs. A per-session persistent cache makes the second
    # and later trainers with the same shapes cheap (tracing still happens, so trace-count checks
    # are unaffected). Set JRL_TEST_JAX_CACHE=0 to turn it off.
    global _JAX_CACHE_DIR
    if os.environ.get("JRL_TEST_JAX_CACHE", "1") == "0":
        return
    import jax

    _JAX_CACHE_DIR = tempfile.mkdtemp(prefix="jrl-test-jax-cache-")
    jax.config.update("jax_compilation_cache_dir", _JAX_CACHE_DIR)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _JAX_CACHE_DIR is not None:
        shutil.rmtree(_JAX_CACHE_DIR, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _session_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Session-wide defaults, so that module- and session-scoped fixtures are covered too."""
    saved = {k: os.environ.get(k) for k in ("JRL_RESULTS_DIR", "RAY_AUTH_MODE")}
    os.environ["JRL_RESULTS_DIR"] = str(tmp_path_factory.mktemp("jrl_results_session"))
    os.environ["RAY_AUTH_MODE"] = "disabled"
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(autouse=True)
def results_dir(tmp_path_factory: pytest.TempPathFactory,
                monkeypatch: pytest.MonkeyPatch) -> str:
    """This test's ``JRL_RESULTS_DIR`` (trainers with ``log_to_disk`` write under it)."""
    path = str(tmp_path_factory.mktemp("jrl_results"))
    monkeypatch.setenv("JRL_RESULTS_DIR", path)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    return path


@pytest.fixture(autouse=True)
def _clear_chex_trace_counter() -> None:
    # chex keys trace counts by source and call stack, so parametrized cases would share counts.
    import chex

    chex.clear_trace_counter()


def _small_config(algo: str, **overrides: Any) -> dict[str, Any]:
    import copy

    from jrl import registry

    name = registry.get_algorithm_def(algo).name
    if name not in SMALL_CONFIGS:
        raise KeyError(f"no small test config for {name}: add one to SMALL_CONFIGS in "
                       "tests/conftest.py")
    config = copy.deepcopy(SMALL_CONFIGS[name])
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


@pytest.fixture
def small_config() -> Callable[..., dict[str, Any]]:
    """``small_config(algo, **overrides)``: a tiny config dict (nested dicts merge)."""
    return _small_config


@pytest.fixture
def other_network() -> Callable[[str], dict[str, Any]]:
    """``other_network(algo)``: config overrides giving ``algo`` a different network."""
    import copy

    return lambda algo: copy.deepcopy(OTHER_NETWORK.get(algo, {"model": {"fcnet_hiddens": [8]}}))


@pytest.fixture
def make_trainer() -> Iterator[Callable[..., Any]]:
    """``make_trainer(algo="PPO", env="CartPole-v1", log_to_disk=False, **overrides)``."""
    import jrl

    trainers: list[Any] = []

    def make(algo: str = "PPO", env: str = "CartPole-v1", *, log_to_disk: bool = False,
             **overrides: Any) -> Any:
        trainer = jrl.Trainer(algo, env=env, config=_small_config(algo, **overrides),
                              log_to_disk=log_to_disk)
        trainers.append(trainer)
        return trainer

    yield make
    for trainer in trainers:
        trainer.stop()


@pytest.fixture(scope="module")
def ray_cluster():
    """A 2-CPU local Ray cluster for one test module, shut down afterwards. Workers and trials
    import the test modules (as a user's would import their own script)."""
    ray = pytest.importorskip("ray")
    here = os.path.dirname(os.path.abspath(__file__))
    if ray.is_initialized():  # a trainer earlier in the session started its own local Ray
        ray.shutdown()
    # Keep the caller's PYTHONPATH after the tests' folder, so workers import the same jrl.
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path, "RAY_AUTH_MODE": "disabled"}})
    yield
    ray.shutdown()
