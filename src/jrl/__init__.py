"""jrl: reinforcement learning as pure JAX functions.

Quick use::

    import jrl
    trainer = jrl.Trainer("PPO", env="CartPole-v1", config={"lr": 3e-4})
    result = trainer.train()
    path = trainer.save()
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from jrl.callbacks import DefaultCallbacks, Episode
from jrl.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    EnvError,
    JrlError,
    NumericError,
)
from jrl.networks.custom import ModelCatalog
from jrl.ops.filters import get_filter
from jrl.registry import get_trainer_class, register_algorithm
from jrl.rollout.envs import EnvContext, register_env
from jrl.rollout.external_env import ExternalEnv
from jrl.rollout.jax_envs import JaxEnv, JaxStep, register_jax_env
from jrl.rollout.multi_agent import HeuristicPolicy, PolicySpec
from jrl.rollout.multi_agent_env import MultiAgentEnv, make_multi_agent
from jrl.rollout.policy import Policy
from jrl.rollout.preprocessors import get_preprocessor
from jrl.trainer import Trainer
from jrl.types import Algorithm, AlgorithmDef

try:
    __version__ = version("jrl")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0+unknown"

from jrl import tune as _tune  # noqa: E402

_tune.install_import_hook()
tune = _tune

__all__ = [
    "Algorithm", "AlgorithmDef", "CheckpointError", "ConfigError", "DataError", "DefaultCallbacks",
    "EnvContext", "EnvError", "Episode", "ExternalEnv", "HeuristicPolicy", "JaxEnv", "JaxStep",
    "JrlError", "ModelCatalog", "MultiAgentEnv", "NumericError", "Policy", "PolicySpec", "Trainer",
    "__version__", "get_filter", "get_preprocessor", "get_trainer_class", "make_multi_agent",
    "register_algorithm", "register_env", "register_jax_env",
]


def __getattr__(name: str):
    # ``jrl.PPOTrainer``, ``jrl.ApexTrainer``, ...: built on first use.
    from jrl import registry

    algo = registry.algo_for_trainer_class_name(name)
    if algo is None:
        raise AttributeError(f"module 'jrl' has no attribute {name!r}")
    return registry.get_trainer_class(algo)
