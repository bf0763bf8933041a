"""Spaces -> networks: the actor-critic and Q networks every algorithm builds from a spec and config."""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jrl.config import ModelConfig
from jrl.errors import ConfigError
from jrl.networks.custom import (
    CustomActorCritic,
    CustomPolicyOutput,
    CustomTorso,
    ModelCatalog,
    actor_critic_outputs,
)
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
        num_outputs = (actor_critic_outputs(self.spec, self.model)
                       if self.model.custom_action_dist else None)
        dist_params = PolicyHead(self.spec, self.model.free_log_std, num_outputs,
                                 name="policy_head")(policy_features)
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
        if self.model.custom_model:
            width = int(self.model.fcnet_hiddens[-1]) if self.model.fcnet_hiddens else 256
            features = CustomTorso(self.model, width, name="torso")(obs)
        else:
            features = make_torso(self.spec, self.model, name="torso")(obs)
        return QHead(self.spec.num_actions, dueling, tuple(self.hiddens), name="q_head")(features)


def make_actor_critic(spec: EnvSpec, model: ModelConfig | None = None) -> nn.Module:
    """The actor-critic network for ``spec`` (``model`` defaults to ``ModelConfig()``):
    ``obs [B, ...] -> (dist_params, value [B])``; ``model.custom_model`` replaces it with the
    registered module (``CustomActorCritic``)."""
    model = ModelConfig() if model is None else model
    if model.custom_model:
        return CustomActorCritic(spec=spec, model=model)
    return ActorCritic(spec=spec, model=model)


def make_q_network(spec: EnvSpec, model: ModelConfig | None = None, dueling: bool = True,
                   hiddens: tuple[int, ...] = (256,)) -> QNetwork:
    """The Q network for ``spec``; raises ``ConfigError`` for continuous action spaces."""
    _check_discrete(spec)
    _no_custom_dist(model, "Q networks act greedily on Q-values")
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


def make_deterministic_policy(spec: EnvSpec, model: ModelConfig | None = None) -> nn.Module:
    """The deterministic policy network for ``spec`` (``model`` defaults to ``ModelConfig()``;
    ``model.custom_model`` replaces it with the registered module)."""
    model = ModelConfig() if model is None else model
    _no_custom_dist(model, "a deterministic policy samples nothing")
    if model.custom_model:
        return CustomPolicyOutput(spec=spec, model=model)
    return DeterministicPolicy(spec=spec, model=model)


def reject_custom_model(model: ModelConfig, algo: str) -> None:
    """A ``ConfigError`` when ``model.custom_model`` is set for an algorithm whose networks
    (an actor plus critics) take no custom model."""
    _no_custom_dist(model, f"{algo} builds its own distributions")
    if model.custom_model:
        raise ConfigError(f"{algo} builds its own actor and critic networks and takes no "
                          f"model.custom_model ('{model.custom_model}'); use PPO, A2C, PG, "
                          "IMPALA, APPO, MARWIL, DQN or ES with a custom model")


def _no_custom_dist(model: ModelConfig | None, why: str) -> None:
    if model is not None and model.custom_action_dist:
        raise ConfigError(f"model.custom_action_dist ('{model.custom_action_dist}') is for the "
                          f"actor-critic algorithms: {why}")


# A masked action's logit: exp(-1e9 - logsumexp) is 0 in float32, and unlike -inf it keeps
# 0 * log p (entropy, KL) finite.
MASKED_LOGIT = -1e9


def reject_action_mask(spec: EnvSpec, algo: str) -> None:
    """A ``ConfigError`` when ``spec``'s observations carry an ``action_mask`` that ``algo``
    would not apply (better than silently taking forbidden actions)."""
    if spec.action_mask is not None:
        raise ConfigError(f"{algo} does not apply the observation's 'action_mask'; use PPO, "
                          "A2C, A3C, PG, IMPALA, APPO, MARWIL, DQN or APEX for masked actions")


def action_mask(spec: EnvSpec, obs: jax.Array) -> jax.Array | None:
    """The ``action_mask`` entry of a batch of preprocessed (unfiltered) observations ``[B,
    ...]`` as booleans ``[B, A]`` (True: allowed), or ``None`` when ``spec`` has no mask."""
    if spec.action_mask is None:
        return None
    start, stop = spec.action_mask
    return jnp.reshape(obs, (obs.shape[0], -1))[:, start:stop] > 0.5


def mask_logits(logits: jax.Array, mask: jax.Array | None) -> jax.Array:
    """``logits`` ``[B, A]`` with every action ``mask`` forbids set to ``MASKED_LOGIT`` (no
    gradient reaches them); ``mask=None`` returns ``logits`` unchanged."""
    if mask is None:
        return logits
    # A row that allows nothing (e.g. a final observation) allows everything instead.
    mask = mask | ~jnp.any(mask, axis=-1, keepdims=True)
    return jnp.where(mask, logits, MASKED_LOGIT)


def make_distribution(spec: EnvSpec, dist_params: DistParams, model: ModelConfig | None = None
                      ) -> Any:
    """``model.custom_action_dist``'s class of ``dist_params``, else ``Categorical(logits)`` for
    discrete specs, ``MultiCategorical`` (multi-discrete), ``Bernoulli`` (multi-binary),
    ``MultiActionDistribution`` (Tuple/Dict actions: flat inputs split over the parts),
    ``DiagGaussian(mean, log_std)`` for boxes."""
    from jrl.networks.distributions import (
        Bernoulli,
        Categorical,
        DiagGaussian,
        MultiActionDistribution,
        MultiCategorical,
    )

    if model is not None and model.custom_action_dist:
        return ModelCatalog.get_custom_action_dist(model.custom_action_dist)(dist_params)

    if spec.discrete:
        return Categorical(dist_params)
    if spec.composite:
        return MultiActionDistribution(dist_params, spec.action_parts)
    if spec.action_kind == "multi_discrete":
        return MultiCategorical(dist_params, spec.action_nvec)
    if spec.action_kind == "multi_binary":
        return Bernoulli(dist_params)
    mean, log_std = dist_params
    return DiagGaussian(mean, log_std)


def path_name(path: tuple) -> str:
    """A pytree path as ``"params/torso/Dense_0/kernel"``."""
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
    rows = [(path_name(path), str(tuple(leaf.shape)), f"{math.prod(leaf.shape):,}")
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


def _dims(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(["None", *map(str, shape[1:])]) + ("," if len(shape) == 1 else "") + ")"


def _own_params(params: Any, path: tuple[str, ...]) -> int:
    """Scalars of the params stored directly at ``path`` (not in its submodules)."""
    node = params.get("params", params) if hasattr(params, "get") else params
    for part in path:
        if not hasattr(node, "get") or part not in node:
            return 0
        node = node[part]
    if not hasattr(node, "values"):
        return 0
    return sum(math.prod(jnp.shape(v)) for v in node.values() if not hasattr(v, "values"))


def layer_summary(module: nn.Module, params: Any, obs_shape: tuple[int, ...], obs_dtype: Any,
                  title: str = "model", only: tuple[str, ...] | None = None,
                  input_name: str = "observations") -> str:
    """A Keras-like table of ``module``: its input, then each layer holding parameters with its
    type, output shape (``None``: the batch) and parameter count; totals at the end. With
    ``only``, just the layers whose path starts with one of those prefixes (and their total).

    The forward pass is traced with ``jax.eval_shape`` on a batch of one, so nothing runs.
    """
    rows: list[tuple[str, str, int]] = []

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__":
            path = tuple(context.module.path)
            own = _own_params(params, path)
            if own and (only is None or "/".join(path).startswith(only)):
                shapes = [_dims(tuple(x.shape)) for x in jax.tree_util.tree_leaves(out)]
                name = "/".join(path) or title
                rows.append((f"{name} ({type(context.module).__name__})", ", ".join(shapes),
                             own))
        return out

    def run(p, x):
        with nn.intercept_methods(record):
            return module.apply(p, x, mutable=["intermediates"])

    jax.eval_shape(run, params, jax.ShapeDtypeStruct((1, *obs_shape), obs_dtype))
    total = count_params(params) if only is None else sum(n for _, _, n in rows)
    table = [(f"{input_name} (InputLayer)", _dims((1, *obs_shape)), "0")]
    table += [(name, shape, f"{n:,}") for name, shape, n in rows]
    header = ("Layer (type)", "Output Shape", "Param #")
    widths = [max(len(r[i]) for r in [header, *table]) + 2 for i in range(3)]
    width = sum(widths)

    def line(row: tuple[str, str, str]) -> str:
        return "".join(f"{cell:<{w}}" for cell, w in zip(row, widths, strict=True)).rstrip()

    out = [f'Model: "{title}"', "_" * width, line(header), "=" * width]
    for i, row in enumerate(table):
        out.append(line(row))
        out.append(("=" if i == len(table) - 1 else "_") * width)
    out += [f"Total params: {total:,}", f"Trainable params: {total:,}",
            "Non-trainable params: 0", "_" * width]
    return "\n".join(out)
