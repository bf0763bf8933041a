"""Twin Delayed DDPG (Fujimoto et al., 2018): DDPG with TD3's defaults, as in RLlib.

Twin critics whose minimum forms the target (``twin_q``), actor and target updates every
``policy_delay`` critic updates, and clipped Gaussian noise on the target action
(``smooth_target_policy``, ``target_noise``, ``target_noise_clip``). The update is
``jrl.algorithms.ddpg``'s.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jrl import registry
from jrl.algorithms.ddpg import DDPGConfig, make_ddpg, postprocess, q_function
from jrl.algorithms.examples import replay_example
from jrl.algorithms.replay_ac import GaussianNoiseConfig
from jrl.config import field, to_dict
from jrl.types import Algorithm, AlgorithmDef, EnvSpec


@dataclasses.dataclass(frozen=True, kw_only=True)
class TD3Config(DDPGConfig):
    """DDPG's keys with TD3's defaults (see ``DDPGConfig`` for every attribute).

    Attributes:
      twin_q: two critics (on).
      policy_delay: actor and target updates every 2 critic updates.
      smooth_target_policy: target policy smoothing (on).
      tau: Polyak factor 0.005.
      exploration_config: Gaussian noise 0.1 after 10,000 random steps.
    """

    twin_q: bool = True
    policy_delay: int = field(2, min=1)
    smooth_target_policy: bool = True
    tau: float = field(0.005, min=0.0, max=1.0)
    learning_starts: int = field(10_000, min=0)
    exploration_config: GaussianNoiseConfig = dataclasses.field(
        default_factory=lambda: GaussianNoiseConfig(random_timesteps=10_000, stddev=0.1))


DEFAULT_CONFIG: dict[str, Any] = to_dict(TD3Config())


def make_td3(config: TD3Config, networks: Any = None, spec: EnvSpec | None = None,
             axis_name: str | None = None) -> Algorithm:
    """TD3's ``Algorithm``: ``make_ddpg`` under the name ``TD3``."""
    return make_ddpg(config, networks, spec, axis_name=axis_name, name="TD3")


ALGORITHM_DEF = AlgorithmDef(
    name="TD3",
    config_class=TD3Config,
    make=make_td3,
    plan="off_policy",
    example_batch=replay_example(postprocess),
    model="actor_q",
    postprocess=postprocess,
    q_function=q_function,
)
__getattr__ = registry.trainer_class_getattr(__name__, "TD3")
