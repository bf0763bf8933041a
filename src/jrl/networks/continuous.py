"""Actor and critic networks of the off-policy actor-critics (DDPG, TD3, SAC).

- ``DeterministicActor``: ``obs -> a``, a ``tanh`` output scaled to the action box.
- ``GaussianActor``: ``obs -> (mean, log_std)`` of a ``SquashedGaussian`` (continuous SAC), or
  logits (discrete SAC).
- ``QEnsemble``: ``num_q`` independent critics in one module (``nn.vmap`` over their params):
  ``Q(s, a) [num_q, B]`` for continuous actions, ``Q(s, .) [num_q, B, A]`` for discrete ones.

Layers start as torch's ``nn.Linear`` does (uniform, variance ``1 / (3 fan_in)``), the
initialization these algorithms were tuned with.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jrl.networks.torsos import activation
from jrl.types import EnvSpec

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


def _dense(features: int, name: str | None = None) -> nn.Dense:
    return nn.Dense(features, kernel_init=nn.initializers.variance_scaling(
        1.0 / 3.0, "fan_in", "uniform"), name=name)


def _flat(x: jax.Array) -> jax.Array:
    return jnp.reshape(x, (x.shape[0], -1)).astype(jnp.float32)


def action_bounds(spec: EnvSpec) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` of ``spec``'s box, each shaped like one action (float32)."""
    shape = tuple(spec.action_shape)
    return (np.asarray(spec.action_low, np.float32).reshape(shape),
            np.asarray(spec.action_high, np.float32).reshape(shape))


class MLPHead(nn.Module):
    """Hidden layers then a linear output of ``out`` units.

    Attributes:
      hiddens: hidden layer sizes.
      activation: activation name (see ``jrl.networks.torsos.ACTIVATIONS``).
      out: output units.
    """

    hiddens: tuple[int, ...]
    activation: str
    out: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = activation(self.activation)
        for size in self.hiddens:
            x = act(_dense(size)(x))
        return _dense(self.out, name="out")(x)


class DeterministicActor(nn.Module):
    """``obs [B, ...] -> action [B, *action_shape]`` inside ``[action_low, action_high]``.

    Attributes:
      spec: the environment spec (continuous actions).
      hiddens: hidden layer sizes.
      activation: hidden activation.
    """

    spec: EnvSpec
    hiddens: tuple[int, ...] = (400, 300)
    activation: str = "relu"

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        shape = tuple(self.spec.action_shape)
        low, high = action_bounds(self.spec)
        out = MLPHead(self.hiddens, self.activation, math.prod(shape), name="mlp")(_flat(obs))
        squashed = jnp.tanh(out).reshape((obs.shape[0], *shape))
        return 0.5 * (high + low) + 0.5 * (high - low) * squashed


class GaussianActor(nn.Module):
    """Discrete spec: logits ``[B, A]``. Continuous: pre-squash ``(mean, log_std)``, each
    ``[B, *action_shape]``, with ``log_std`` clipped to ``[LOG_STD_MIN, LOG_STD_MAX]``.

    Attributes:
      spec: the environment spec.
      hiddens: hidden layer sizes.
      activation: hidden activation.
    """

    spec: EnvSpec
    hiddens: tuple[int, ...] = (256, 256)
    activation: str = "relu"

    @nn.compact
    def __call__(self, obs: jax.Array):
        if self.spec.discrete:
            return MLPHead(self.hiddens, self.activation, self.spec.num_actions,
                           name="mlp")(_flat(obs))
        shape = (obs.shape[0], *self.spec.action_shape)
        size = math.prod(self.spec.action_shape)
        out = MLPHead(self.hiddens, self.activation, 2 * size, name="mlp")(_flat(obs))
        mean, log_std = jnp.split(out, 2, axis=-1)
        return mean.reshape(shape), jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX).reshape(shape)


class QEnsemble(nn.Module):
    """``num_q`` critics with their own params, evaluated together.

    Continuous spec: ``(obs [B, ...], action [B, ...]) -> Q [num_q, B]``.
    Discrete spec: ``obs -> Q [num_q, B, A]`` (``action`` is not used).

    Attributes:
      spec: the environment spec.
      hiddens: hidden layer sizes of each critic.
      activation: hidden activation.
      num_q: number of critics (2 for twin Q).
    """

    spec: EnvSpec
    hiddens: tuple[int, ...] = (400, 300)
    activation: str = "relu"
    num_q: int = 2

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array | None = None) -> jax.Array:
        critics = nn.vmap(MLPHead, variable_axes={"params": 0}, split_rngs={"params": True},
                          in_axes=None, out_axes=0, axis_size=self.num_q)
        if self.spec.discrete:
            return critics(self.hiddens, self.activation, self.spec.num_actions,
                           name="critics")(_flat(obs))
        x = jnp.concatenate([_flat(obs), _flat(action)], axis=-1)
        return critics(self.hiddens, self.activation, 1, name="critics")(x)[..., 0]
