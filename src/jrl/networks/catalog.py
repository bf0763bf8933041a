"""Spaces -> networks: the actor-critic and Q networks every algorithm builds from a spec and config."""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax

from jrl.config import ModelConfig
from jrl.errors import ConfigError
from jrl.networks.heads import POLICY_INIT_SCALE, PolicyHead, QHead, ValueHead
from jrl.networks.init import orthogonal
from jrl.networks.torsos import make_torso
from jrl.types import EnvSpec

DistParams = Any  # logits [B, A], or (mean, log_std) each [B, *action_shape]


class ActorCritic(nn.Module):
    """Policy and value function over one observation batch.

    With ``model.vf_share_layers`` one torso (``torso``) feeds both heads; otherwise the policy and
    value function have their own torsos (``policy_torso``, ``value_torso``).

    Attributes:
      spec: the environment spec.
      model: the network architecture.
    """

    spec: EnvSpec
    model: ModelConfig = ModelConfig()

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[DistParams, jax.Array]:
        """``obs`` ``[B, *obs_shape]`` -> ``(dist_params, value [B])``."""
        if self.model.vf_share_layers:
            features = make_torso(self.spec, self.model, name="torso")(obs)
            policy_features = value_features = features
        else:
            policy_features = make_torso(self.spec, self.model, name="policy_torso")(obs)
            value_features = make_torso(self.spec, self.model, name="value_torso")(obs)
        dist_params = PolicyHead(self.spec, self.model.free_log_std, name="policy_head")(
            policy_features)
        value = ValueHead(name="value_head")(value_features)
        return dist_params, value


def _check_discrete(spec: EnvSpec) -> None:
    if not spec.discrete:
        raise ConfigError(
            "Q networks need a discrete action space, got a continuous action space of shape "
            f"{tuple(spec.action_shape)}; use an algorithm for continuous actions (e.g. SAC, DDPG, "
            "TD3, PPO)")


class QNetwork(nn.Module):
    """Q-values for every discrete action.

    Attributes:
      spec: the environment spec (discrete actions).
      model: the network architecture; ``model.dueling``, when not ``None``, overrides ``dueling``.
      dueling: separate value and advantage streams.
      hiddens: ReLU layers of the Q head (per stream when dueling), after the torso.
    """

    spec: EnvSpec
    model: ModelConfig = ModelConfig()
    dueling: bool = True
    hiddens: tuple[int, ...] = (256,)

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        """``obs`` ``[B, *obs_shape]`` -> Q-values ``[B, A]``."""
        _check_discrete(self.spec)
        dueling = self.dueling if self.model.dueling is None else self.model.dueling
        features = make_torso(self.spec, self.model, name="torso")(obs)
        return QHead(self.spec.num_actions, dueling, tuple(self.hiddens), name="q_head")(features)


def make_actor_critic(spec: EnvSpec, model: ModelConfig | None = None) -> ActorCritic:
    """The actor-critic network for ``spec`` (``model`` defaults to ``ModelConfig()``)."""
    return ActorCritic(spec=spec, model=ModelConfig() if model is None else model)


def make_q_network(spec: EnvSpec, model: ModelConfig | None = None, dueling: bool = True,
                   hiddens: tuple[int, ...] = (256,)) -> QNetwork:
    """The Q network for ``spec``; raises ``ConfigError`` for continuous action spaces."""
    _check_discrete(spec)
    return QNetwork(spec=spec, model=ModelConfig() if model is None else model, dueling=dueling,
                    hiddens=tuple(int(h) for h in hiddens))


class DeterministicPolicy(nn.Module):
    """A policy-only network with one output per action: logits ``[B, A]`` (the action is their
    argmax) or the action itself ``[B, *action_shape]`` (continuous). Used by ES.

    Attributes:
      spec: the environment spec.
      model: the network architecture (``fcnet_hiddens: []`` gives a linear policy).
    """

    spec: EnvSpec
    model: ModelConfig = ModelConfig()

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        features = make_torso(self.spec, self.model, name="torso")(obs)
        shape = (self.spec.num_actions,) if self.spec.discrete else tuple(self.spec.action_shape)
        out = nn.Dense(math.prod(shape), kernel_init=orthogonal(POLICY_INIT_SCALE),
                       bias_init=nn.initializers.zeros, name="action")(features)
        return out.reshape((features.shape[0], *shape))


def make_deterministic_policy(spec: EnvSpec, model: ModelConfig | None = None
                              ) -> DeterministicPolicy:
    """The deterministic policy network for ``spec`` (``model`` defaults to ``ModelConfig()``)."""
    return DeterministicPolicy(spec=spec, model=ModelConfig() if model is None else model)


def make_distribution(spec: EnvSpec, dist_params: DistParams) -> Any:
    """``Categorical(logits)`` for discrete specs, ``DiagGaussian(mean, log_std)`` otherwise."""
    from jrl.networks.distributions import Categorical, DiagGaussian

    if spec.discrete:
        return Categorical(dist_params)
    mean, log_std = dist_params
    return DiagGaussian(mean, log_std)


def _path_name(path: tuple) -> str:
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def count_params(params: Any) -> int:
    """Number of scalars in a params pytree (arrays or ``ShapeDtypeStruct``s)."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params))


def param_summary(params: Any) -> str:
    """A table of each parameter's path, shape and size, ending with the total count."""
    rows = [(_path_name(path), str(tuple(leaf.shape)), f"{math.prod(leaf.shape):,}")
            for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]]
    total = f"{count_params(params):,}"
    header = ("parameter", "shape", "size")
    footer = ("total", "", total)
    widths = [max(len(r[i]) for r in [header, footer, *rows]) for i in range(3)]

    def line(row: tuple[str, str, str]) -> str:
        return f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}".rstrip()

    rule = "-" * (sum(widths) + 4)
    return "\n".join([line(header), rule, *(line(r) for r in rows), rule,
                      line(footer)])
