"""Heads: features ``[B, F]`` -> raw outputs (logits, mean/log-std, values, Q-values)."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jrl.networks.distributions import part_input_width
from jrl.networks.init import orthogonal
from jrl.networks.torsos import TORSO_INIT_SCALE
from jrl.types import EnvSpec

POLICY_INIT_SCALE = 0.01  # near-uniform / near-zero-mean initial policy
VALUE_INIT_SCALE = 1.0


def _dense(features: int, scale: float, name: str | None = None) -> nn.Dense:
    return nn.Dense(features, kernel_init=orthogonal(scale), bias_init=nn.initializers.zeros,
                    name=name)


class PolicyHead(nn.Module):
    """Policy outputs for ``spec``'s action space.

    Attributes:
      spec: the environment spec; its action space decides the output.
      free_log_std: continuous only; ``True`` learns a state-independent ``log_std`` parameter,
        ``False`` predicts it with a second dense layer.
      num_outputs: set, the head outputs ``[B, num_outputs]`` flat (a custom action
        distribution's inputs) whatever the action space.
    """

    spec: EnvSpec
    free_log_std: bool = False
    num_outputs: int | None = None

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array | tuple[jax.Array, jax.Array]:
        """Discrete: logits ``[B, A]``; multi-discrete: ``[B, sum(nvec)]``; multi-binary:
        ``[B, n]``. Continuous: ``(mean, log_std)``, each ``[B, *action_shape]``."""
        if self.num_outputs is not None:
            return _dense(self.num_outputs, POLICY_INIT_SCALE, name="logits")(features)
        if self.spec.discrete:
            return _dense(self.spec.num_actions, POLICY_INIT_SCALE, name="logits")(features)
        if self.spec.composite:
            width = sum(part_input_width(p) for p in self.spec.action_parts)
            return _dense(width, POLICY_INIT_SCALE, name="logits")(features)
        if self.spec.action_kind == "multi_discrete":
            return _dense(sum(self.spec.action_nvec), POLICY_INIT_SCALE, name="logits")(features)
        if self.spec.action_kind == "multi_binary":
            return _dense(self.spec.action_shape[0], POLICY_INIT_SCALE, name="logits")(features)
        action_shape = tuple(self.spec.action_shape)
        out_shape = (features.shape[0], *action_shape)
        size = math.prod(action_shape)
        mean = _dense(size, POLICY_INIT_SCALE, name="mean")(features).reshape(out_shape)
        if self.free_log_std:
            log_std = self.param("log_std", nn.initializers.zeros, action_shape, jnp.float32)
            log_std = jnp.broadcast_to(log_std, out_shape)
        else:
            log_std = _dense(size, POLICY_INIT_SCALE, name="log_std")(features).reshape(out_shape)
        return mean, log_std


class ValueHead(nn.Module):
    """State value ``[B]``."""

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        return _dense(1, VALUE_INIT_SCALE, name="value")(features).squeeze(-1)


class QHead(nn.Module):
    """Q-values ``[B, A]``, optionally dueling.

    With ``dueling`` a value stream ``V [B]`` and an advantage stream ``A [B, A]`` (each with its own
    ``hiddens`` layers) combine as ``Q = V + A - mean(A)``; both are sown into the
    ``"intermediates"`` collection as ``value`` and ``advantages``.

    Attributes:
      num_actions: number of discrete actions.
      dueling: use separate value and advantage streams.
      hiddens: ReLU layers before each output layer.
    """

    num_actions: int
    dueling: bool = True
    hiddens: tuple[int, ...] = (256,)

    def _stream(self, features: jax.Array, out: int, prefix: str) -> jax.Array:
        x = features
        for i, size in enumerate(self.hiddens):
            x = nn.relu(_dense(size, TORSO_INIT_SCALE, name=f"{prefix}_hidden_{i}")(x))
        return _dense(out, VALUE_INIT_SCALE, name=f"{prefix}_out")(x)

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        if not self.dueling:
            return self._stream(features, self.num_actions, "q")
        value = self._stream(features, 1, "value")
        advantages = self._stream(features, self.num_actions, "advantage")
        self.sow("intermediates", "value", value.squeeze(-1))
        self.sow("intermediates", "advantages", advantages)
        return value + advantages - advantages.mean(axis=-1, keepdims=True)
