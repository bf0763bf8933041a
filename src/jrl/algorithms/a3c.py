"""Asynchronous advantage actor-critic (A3C; Mnih et al., 2016).

The loss and the update are A2C's (``jrl.algorithms.a2c``). What differs is the execution plan
(``async_gradients``): each rollout worker samples a fragment, computes the gradient of the loss
against the weights it holds, and sends the gradient; the learner applies gradients as they
arrive and sends fresh weights back to that worker only. With ``num_workers=0`` the trainer's
own worker samples and the learner updates on each fragment (A2C with one fragment per update).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jrl import registry
from jrl.algorithms.a2c import A2CConfig, make_a2c_learner, make_gradient_fns
from jrl.algorithms.examples import fragment_example
from jrl.config import field, to_dict
from jrl.errors import ConfigError
from jrl.types import Algorithm, AlgorithmDef, EnvSpec


@dataclasses.dataclass(frozen=True, kw_only=True)
class A3CConfig(A2CConfig):
    """A3C settings: A2C's keys (see ``A2CConfig``); each gradient comes from one worker's
    fragment of ``rollout_fragment_length * num_envs_per_worker`` env steps, so
    ``train_batch_size`` is not used.

    Attributes:
      rollout_fragment_length: steps per env in each worker's gradient fragment.
    """

    rollout_fragment_length: int = field(16, min=1)

    def validate(self) -> None:
        if self.input != "sampler":
            raise ConfigError("A3C samples its own envs: config key 'input' must be 'sampler' "
                              "(learn from files with A2C or PPO and postprocess_inputs: true)")
        fragment = self.rollout_fragment_length * self.num_envs_per_worker
        if self.microbatch_size is not None and self.microbatch_size > fragment:
            raise ConfigError(f"config key 'microbatch_size' ({self.microbatch_size}) must be "
                              f"<= rollout_fragment_length * num_envs_per_worker ({fragment})")


DEFAULT_CONFIG: dict[str, Any] = to_dict(A3CConfig())


def make_a3c(config: A3CConfig, networks: Any = None, spec: EnvSpec | None = None,
             axis_name: str | None = None) -> Algorithm:
    """A3C's ``Algorithm``: A2C's functions under the name ``A3C``."""
    return make_a2c_learner(config, networks, spec, axis_name, name="A3C")[0]


ALGORITHM_DEF = AlgorithmDef(
    name="A3C",
    config_class=A3CConfig,
    make=make_a3c,
    plan="async_gradients",
    example_batch=fragment_example,
    gradient_fns=make_gradient_fns,
    recurrent=True,
)
__getattr__ = registry.trainer_class_getattr(__name__, "A3C")
