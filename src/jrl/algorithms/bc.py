"""Behaviour cloning: MARWIL with ``beta = 0`` (RLlib's ``BC``), learning to repeat the logged
actions; no value function is trained. See ``jrl.algorithms.marwil``."""

from __future__ import annotations

import dataclasses
from typing import Any

from jrl import registry
from jrl.algorithms.examples import train_batch_example
from jrl.algorithms.marwil import MARWILConfig, action_logp, make_marwil
from jrl.config import field, to_dict
from jrl.types import Algorithm, AlgorithmDef, EnvSpec


@dataclasses.dataclass(frozen=True, kw_only=True)
class BCConfig(MARWILConfig):
    """BC settings: MARWIL's keys with ``beta`` fixed at 0 (any other value is refused).

    Attributes:
      beta: 0 (behaviour cloning).
    """

    beta: float = field(0.0, min=0.0, max=0.0)


DEFAULT_CONFIG: dict[str, Any] = to_dict(BCConfig())


def make_bc(config: BCConfig, networks: Any = None, spec: EnvSpec | None = None,
            axis_name: str | None = None) -> Algorithm:
    """MARWIL's ``Algorithm`` with ``beta = 0``, named BC."""
    return make_marwil(config, networks, spec, axis_name)._replace(name="BC")


ALGORITHM_DEF = AlgorithmDef(
    name="BC",
    config_class=BCConfig,
    make=make_bc,
    plan="offline",
    example_batch=train_batch_example,
    action_logp=action_logp,
)
__getattr__ = registry.trainer_class_getattr(__name__, "BC")
