"""Algorithm registry: names -> algorithm records (``jrl.types.AlgorithmDef``).

The registry knows where each record lives (``module:attribute``) and imports it on first use, so
``import jrl`` stays light and no algorithm module imports another's to be found. It is the only
place in jrl that imports jrl modules by name. Adding an algorithm is one file exporting its
record plus one line here (or ``register_algorithm`` from user code).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from collections.abc import Mapping
from typing import Any

from jrl.config import merge, parse
from jrl.errors import ConfigError
from jrl.types import Algorithm, AlgorithmDef, EnvSpec

# name -> "module:attribute" of the record (imported lazily) or the record itself.
_ALGORITHMS: dict[str, str | AlgorithmDef] = {
    "PPO": "jrl.algorithms.ppo:ALGORITHM_DEF",
    "PG": "jrl.algorithms.pg:ALGORITHM_DEF",
    "A2C": "jrl.algorithms.a2c:ALGORITHM_DEF",
    "A3C": "jrl.algorithms.a3c:ALGORITHM_DEF",
    "DQN": "jrl.algorithms.dqn:ALGORITHM_DEF",
    "ES": "jrl.algorithms.es:ALGORITHM_DEF",
    "IMPALA": "jrl.algorithms.impala:ALGORITHM_DEF",
    "APPO": "jrl.algorithms.appo:ALGORITHM_DEF",
    "APEX": "jrl.algorithms.apex:ALGORITHM_DEF",
    "DDPG": "jrl.algorithms.ddpg:ALGORITHM_DEF",
    "TD3": "jrl.algorithms.td3:ALGORITHM_DEF",
    "APEX_DDPG": "jrl.algorithms.apex_ddpg:ALGORITHM_DEF",
    "SAC": "jrl.algorithms.sac:ALGORITHM_DEF",
    "MARWIL": "jrl.algorithms.marwil:ALGORITHM_DEF",
    "BC": "jrl.algorithms.bc:ALGORITHM_DEF",
}

# Execution plan name -> "module:Class"; the class is built as ``Class(algorithm_def,
# algorithm, workers, config, spec)`` and runs one ``step(state) -> (state, metrics or None,
# env_steps)`` at a time (see ``jrl.execution``).
_PLANS: dict[str, str] = {
    "on_policy": "jrl.execution.on_policy:OnPolicyPlan",
    "off_policy": "jrl.execution.off_policy:OffPolicyPlan",
    "evolution": "jrl.execution.evolution:EvolutionPlan",
    "async_samples": "jrl.execution.async_samples:AsyncSamplesPlan",
    "async_gradients": "jrl.execution.async_gradients:AsyncGradientsPlan",
    "distributed_replay": "jrl.execution.distributed_replay:DistributedReplayPlan",
    "offline": "jrl.execution.offline:OfflinePlan",
}

# The trainer layer: ``make_trainer_class(record) -> type``.
_TRAINER_FACTORY = "jrl.trainer:make_trainer_class"


def _load(path: str) -> Any:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def register_algorithm(definition: AlgorithmDef | str, name: str | None = None) -> None:
    """Registers an algorithm record, or the ``"module:attribute"`` path of one (then ``name``
    is required and the module is imported on first use)."""
    if isinstance(definition, AlgorithmDef):
        _ALGORITHMS[definition.name.upper()] = definition
        return
    if not isinstance(definition, str) or ":" not in definition or not name:
        raise ConfigError("register_algorithm takes an AlgorithmDef, or a 'module:attribute' "
                          "path and its name")
    _ALGORITHMS[name.upper()] = definition


def unregister_algorithm(name: str) -> None:
    """Forgets a registered algorithm (no error when it is not registered)."""
    _ALGORITHMS.pop(name.upper(), None)


def algorithm_names() -> list[str]:
    return sorted(_ALGORITHMS)


def get_algorithm_def(name: str) -> AlgorithmDef:
    """The record for ``name`` (case-insensitive) or a ConfigError naming the closest one."""
    if not isinstance(name, str):
        raise ConfigError(f"algorithm must be a name like 'PPO', got {type(name).__name__}")
    key = name.upper()
    if key not in _ALGORITHMS:
        near = difflib.get_close_matches(key, list(_ALGORITHMS), n=1, cutoff=0.5)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        raise ConfigError(f"unknown algorithm '{name}'{hint} (available: "
                          f"{', '.join(algorithm_names())})")
    found = _ALGORITHMS[key]
    if isinstance(found, str):
        found = _ALGORITHMS[key] = _load(found)
        if not isinstance(found, AlgorithmDef) or found.name.upper() != key:
            raise ConfigError(f"algorithm '{key}' is registered at a path that does not hold "
                              "its AlgorithmDef")
    return found


def plan_class(plan: str) -> type:
    """The execution plan class registered as ``plan``."""
    if plan not in _PLANS:
        raise ConfigError(f"unknown execution plan '{plan}' (available: {', '.join(_PLANS)})")
    return _load(_PLANS[plan])


def plan_names() -> list[str]:
    return sorted(_PLANS)


def parse_config(name: str, config: Any = None, *overrides: Mapping[str, Any] | None) -> Any:
    """The algorithm's frozen config from a dict (or a config instance) plus overrides."""
    definition = get_algorithm_def(name)
    cls = definition.config_class
    if config is None:
        base = cls()
    elif isinstance(config, cls):
        base = config
    elif dataclasses.is_dataclass(config):
        raise ConfigError(f"config is a {type(config).__name__}, but {definition.name} "
                          f"needs a {cls.__name__} or a dict")
    elif isinstance(config, Mapping):
        base = parse(cls, config)
    else:
        raise ConfigError(f"config must be a dict, got {type(config).__name__}")
    return merge(base, *overrides) if any(overrides) else base


def make_algorithm(definition: AlgorithmDef | str, config: Any, spec: EnvSpec,
                   networks: Any = None, axis_name: str | None = None) -> Algorithm:
    """``definition.make(config, networks, spec)``; with ``axis_name`` its update averages over
    that mapped device axis."""
    if isinstance(definition, str):
        definition = get_algorithm_def(definition)
    model = getattr(config, "model", None)
    if getattr(model, "recurrent", False) and not definition.recurrent:
        supported = ", ".join(n for n in _ALGORITHMS if get_algorithm_def(n).recurrent)
        raise ConfigError(f"{definition.name} has no recurrent policies (model.use_lstm/"
                          f"use_gru); use {supported}, or drop the key")
    if axis_name is None:
        return definition.make(config, networks, spec)
    return definition.make(config, networks, spec, axis_name=axis_name)


def algo_for_trainer_class_name(attr: str) -> str | None:
    """The algorithm whose trainer class is called ``attr`` (``"ApexTrainer"`` -> ``"APEX"``)."""
    if not attr.endswith("Trainer"):
        return None
    for name in _ALGORITHMS:
        if attr == f"{name}Trainer":
            return name
    for name in _ALGORITHMS:
        if attr == get_algorithm_def(name).trainer_name:
            return name
    return None


def get_trainer_class(name: str) -> type:
    """The ``Trainer`` subclass for an algorithm name (RLlib's ``get_trainer_class``)."""
    return _load(_TRAINER_FACTORY)(get_algorithm_def(name))


def trainer_class_getattr(module_name: str, algo_name: str):
    """A module ``__getattr__`` that serves ``<ALGO>Trainer`` (and RLlib's class name) from an
    algorithm module, built by the trainer layer on first access, so ``from
    jrl.algorithms.ppo import PPOTrainer`` works while algorithm modules import nothing above
    them."""

    def __getattr__(attr: str) -> Any:
        names = {f"{algo_name}Trainer", get_algorithm_def(algo_name).trainer_name}
        if attr not in names:
            raise AttributeError(f"module {module_name!r} has no attribute {attr!r}")
        return get_trainer_class(algo_name)

    return __getattr__
