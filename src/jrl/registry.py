"""Algorithm registry: name -> config class, ``make_<algo>`` and execution plan."""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from collections.abc import Mapping
from typing import Any

from jrl.config import merge, parse
from jrl.errors import ConfigError
from jrl.types import Algorithm, EnvSpec


@dataclasses.dataclass(frozen=True)
class AlgoEntry:
    """Where an algorithm lives and how it trains.

    Attributes:
      name: registered name (upper case, as in RLlib: ``PPO``).
      module: module holding the config class and the ``make_`` function.
      config_class: name of the frozen config dataclass in ``module``.
      make: name of ``make_<algo>(config, networks, spec) -> Algorithm`` in ``module``.
      plan: execution plan, a key of ``PLANS`` (``on_policy``, ``off_policy``, ...).
      model: what ``Trainer.get_policy().model`` exposes: ``actor_critic`` (distribution and
        value function), ``q`` (Q-values), ``deterministic`` (a policy network whose output is
        the action or its logits, ES) or ``actor_q`` (a policy and critics: the module's
        ``q_function(config, spec)`` gives the Q-values); other algorithms name their own kind
        and ``jrl.trainer.PolicyModel`` handles it.
    """

    name: str
    module: str
    config_class: str
    make: str
    plan: str
    model: str = "actor_critic"

    def load(self, attr: str) -> Any:
        return getattr(importlib.import_module(self.module), attr)


_ALGORITHMS: dict[str, AlgoEntry] = {}

# Execution plan name -> ``module:Class``; the class is built as
# ``Class(algorithm, workers, config, spec)`` and runs one ``step(state) -> (state, metrics or
# None, env_steps)`` at a time; an optional ``stats() -> dict`` adds keys to each result.
PLANS: dict[str, str] = {
    "on_policy": "jrl.execution.on_policy:OnPolicyPlan",
    "off_policy": "jrl.execution.off_policy:OffPolicyPlan",
    "evolution": "jrl.execution.evolution:EvolutionPlan",
    "async_samples": "jrl.execution.async_samples:AsyncSamplesPlan",
    "async_gradients": "jrl.execution.async_gradients:AsyncGradientsPlan",
    "distributed_replay": "jrl.execution.distributed_replay:DistributedReplayPlan",
}


def plan_class(plan: str) -> type:
    """The execution plan class registered as ``plan``."""
    module, _, attr = PLANS[plan].partition(":")
    return getattr(importlib.import_module(module), attr)


def register_algorithm(entry: AlgoEntry) -> None:
    _ALGORITHMS[entry.name] = entry


register_algorithm(AlgoEntry("PPO", "jrl.algorithms.ppo", "PPOConfig", "make_ppo", "on_policy"))
register_algorithm(AlgoEntry("PG", "jrl.algorithms.pg", "PGConfig", "make_pg", "on_policy"))
register_algorithm(AlgoEntry("A2C", "jrl.algorithms.a2c", "A2CConfig", "make_a2c", "on_policy"))
register_algorithm(AlgoEntry("A3C", "jrl.algorithms.a3c", "A3CConfig", "make_a3c",
                             "async_gradients"))
register_algorithm(AlgoEntry("DQN", "jrl.algorithms.dqn", "DQNConfig", "make_dqn", "off_policy",
                             model="q"))
register_algorithm(AlgoEntry("ES", "jrl.algorithms.es", "ESConfig", "make_es", "evolution",
                             model="deterministic"))
register_algorithm(AlgoEntry("IMPALA", "jrl.algorithms.impala", "ImpalaConfig", "make_impala",
                             "async_samples"))
register_algorithm(AlgoEntry("APPO", "jrl.algorithms.appo", "APPOConfig", "make_appo",
                             "async_samples"))
register_algorithm(AlgoEntry("APEX", "jrl.algorithms.apex", "ApexConfig", "make_apex",
                             "distributed_replay", model="q"))
register_algorithm(AlgoEntry("DDPG", "jrl.algorithms.ddpg", "DDPGConfig", "make_ddpg",
                             "off_policy", model="actor_q"))
register_algorithm(AlgoEntry("TD3", "jrl.algorithms.td3", "TD3Config", "make_td3", "off_policy",
                             model="actor_q"))
register_algorithm(AlgoEntry("APEX_DDPG", "jrl.algorithms.apex_ddpg", "ApexDDPGConfig",
                             "make_apex_ddpg", "distributed_replay", model="actor_q"))
register_algorithm(AlgoEntry("SAC", "jrl.algorithms.sac", "SACConfig", "make_sac", "off_policy",
                             model="actor_q"))


def algorithm_names() -> list[str]:
    return sorted(_ALGORITHMS)


def get_entry(name: str) -> AlgoEntry:
    """The entry for ``name`` (case-insensitive) or a ConfigError naming the closest one."""
    if not isinstance(name, str):
        raise ConfigError(f"algorithm must be a name like 'PPO', got {type(name).__name__}")
    key = name.upper()
    if key in _ALGORITHMS:
        return _ALGORITHMS[key]
    near = difflib.get_close_matches(key, list(_ALGORITHMS), n=1, cutoff=0.5)
    hint = f"; did you mean '{near[0]}'?" if near else ""
    raise ConfigError(f"unknown algorithm '{name}'{hint} (available: {', '.join(algorithm_names())})")


def config_class(name: str) -> type:
    entry = get_entry(name)
    return entry.load(entry.config_class)


def parse_config(name: str, config: Any = None, *overrides: Mapping[str, Any] | None) -> Any:
    """The algorithm's frozen config from a dict (or a config instance) plus overrides."""
    cls = config_class(name)
    if config is None:
        base = cls()
    elif isinstance(config, cls):
        base = config
    elif dataclasses.is_dataclass(config):
        raise ConfigError(f"config is a {type(config).__name__}, but {get_entry(name).name} "
                          f"needs a {cls.__name__} or a dict")
    elif isinstance(config, Mapping):
        base = parse(cls, config)
    else:
        raise ConfigError(f"config must be a dict, got {type(config).__name__}")
    return merge(base, *overrides) if any(overrides) else base


def make_algorithm(name: str, config: Any, spec: EnvSpec, networks: Any = None,
                   axis_name: str | None = None) -> Algorithm:
    """``make_<algo>(config, networks, spec)``; with ``axis_name`` its update averages over
    that ``pmap`` axis."""
    entry = get_entry(name)
    make = entry.load(entry.make)
    if axis_name is None:
        return make(config, networks, spec)
    return make(config, networks, spec, axis_name=axis_name)


# RLlib's class names where they are not simply ``<NAME>Trainer``.
_RLLIB_TRAINER_NAMES = {"IMPALA": "ImpalaTrainer", "APEX": "ApexTrainer",
                        "APEX_DDPG": "ApexDDPGTrainer"}


def trainer_class_name(algo_name: str) -> str:
    """The trainer class name RLlib users know: ``PPOTrainer``, ``ImpalaTrainer``, ..."""
    return _RLLIB_TRAINER_NAMES.get(algo_name, f"{algo_name}Trainer")


def algo_for_trainer_class_name(attr: str) -> str | None:
    """The algorithm whose trainer class is called ``attr`` (``"ApexTrainer"`` -> ``"APEX"``)."""
    if not attr.endswith("Trainer"):
        return None
    for name in _ALGORITHMS:
        if attr in (trainer_class_name(name), f"{name}Trainer"):
            return name
    return None


def get_trainer_class(name: str) -> type:
    """The ``Trainer`` subclass for an algorithm name (RLlib's ``get_trainer_class``)."""
    from jrl.trainer import make_trainer_class

    return make_trainer_class(get_entry(name).name)


def lazy_trainer_class(module_name: str, attr: str, algo_name: str) -> type:
    """Module ``__getattr__`` body that builds ``<ALGO>Trainer`` on first access (algorithm
    modules stay free of the rollout stack until a trainer is asked for)."""
    if attr not in (f"{algo_name}Trainer", trainer_class_name(algo_name)):
        raise AttributeError(f"module {module_name!r} has no attribute {attr!r}")
    import sys

    trainer_cls = get_trainer_class(algo_name)
    setattr(sys.modules[module_name], attr, trainer_cls)
    return trainer_cls
