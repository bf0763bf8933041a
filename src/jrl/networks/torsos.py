"""Torsos: observation -> feature vector ``[B, F]``.

``MLP`` for vector (and any non-image) observations, ``NatureCNN`` for images ``[B, H, W, C]``.
``make_torso`` picks one from the ``EnvSpec`` and ``ModelConfig``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jrl.config import ModelConfig
from jrl.errors import ConfigError
from jrl.networks.init import orthogonal
from jrl.types import EnvSpec

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": jnp.tanh,
    "relu": nn.relu,
    "swish": nn.swish,
    "elu": nn.elu,
    "gelu": nn.gelu,
    "linear": lambda x: x,
}

# Nature DQN (Mnih et al., 2015) for 84x84 inputs: [out_channels, [kh, kw], stride].
NATURE_CONV_FILTERS: tuple[tuple[int, tuple[int, int], int], ...] = (
    (32, (8, 8), 4),
    (64, (4, 4), 2),
    (64, (3, 3), 1),
)

TORSO_INIT_SCALE = math.sqrt(2.0)


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation function called ``name`` (tanh, relu, swish, elu, gelu, linear)."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        options = ", ".join(ACTIVATIONS)
        raise ConfigError(f"unknown activation '{name}'; use one of {options}") from None


def _dense(features: int, scale: float = TORSO_INIT_SCALE, name: str | None = None) -> nn.Dense:
    return nn.Dense(features, kernel_init=orthogonal(scale), bias_init=nn.initializers.zeros,
                    name=name)


class MLP(nn.Module):
    """Fully connected layers over the flattened observation.

    Attributes:
      hiddens: sizes of the hidden layers; empty gives the flattened input back.
      activation: activation after every layer (see ``ACTIVATIONS``).
    """

    hiddens: tuple[int, ...] = (256, 256)
    activation: str = "tanh"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``x`` ``[B, ...]`` -> features ``[B, hiddens[-1]]``."""
        act = activation(self.activation)
        x = jnp.reshape(x, (x.shape[0], -1)).astype(jnp.float32)
        for size in self.hiddens:
            x = act(_dense(size)(x))
        return x


class NatureCNN(nn.Module):
    """Conv stack (VALID padding), flatten, then an ``MLP``.

    Attributes:
      conv_filters: ``[[out_channels, [kh, kw], stride], ...]``; ``None`` is the Nature DQN stack
        ``NATURE_CONV_FILTERS`` (meant for 84x84 inputs).
      activation: activation after every conv layer.
      hiddens: sizes of the dense layers after the convs.
      hidden_activation: activation of the dense layers (``None``: same as ``activation``).
    """

    conv_filters: tuple[tuple[int, tuple[int, int], int], ...] | None = None
    activation: str = "relu"
    hiddens: tuple[int, ...] = (512,)
    hidden_activation: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Images ``[B, H, W, C]`` (uint8 in [0, 255] or float) -> features ``[B, F]``."""
        if x.ndim != 4:
            raise ValueError(f"NatureCNN needs images shaped [B, H, W, C], got shape {x.shape}")
        if x.dtype == jnp.uint8:
            x = x.astype(jnp.float32) / 255.0
        else:
            x = x.astype(jnp.float32)
        act = activation(self.activation)
        filters = NATURE_CONV_FILTERS if self.conv_filters is None else self.conv_filters
        height, width = x.shape[1], x.shape[2]
        for out_channels, kernel, stride in filters:
            kh, kw = kernel
            height, width = (height - kh) // stride + 1, (width - kw) // stride + 1
            if height < 1 or width < 1:
                raise ConfigError(
                    f"model.conv_filters {_as_lists(filters)} shrink a {x.shape[1]}x{x.shape[2]} "
                    "image to nothing; use smaller kernels/strides or resize the image "
                    "(model.dim)")
            x = nn.Conv(int(out_channels), (int(kh), int(kw)), strides=int(stride),
                        padding="VALID", kernel_init=orthogonal(TORSO_INIT_SCALE),
                        bias_init=nn.initializers.zeros)(x)
            x = act(x)
        return MLP(self.hiddens, self.hidden_activation or self.activation, name="fc")(x)


def _as_lists(filters: Sequence) -> list:
    return [[int(o), [int(k) for k in kernel], int(s)] for o, kernel, s in filters]


def _conv_filters(filters: Sequence | None) -> tuple[tuple[int, tuple[int, int], int], ...] | None:
    """``conv_filters`` as nested tuples (hashable module field), checking each entry's form."""
    if filters is None:
        return None
    out = []
    for i, entry in enumerate(filters):
        try:
            channels, kernel, stride = entry
            kh, kw = kernel
            out.append((int(channels), (int(kh), int(kw)), int(stride)))
        except (TypeError, ValueError):
            raise ConfigError(
                f"model.conv_filters[{i}] must be [out_channels, [kh, kw], stride], "
                f"got {entry!r}") from None
    return tuple(out)


def make_torso(spec: EnvSpec, model: ModelConfig, name: str | None = None) -> nn.Module:
    """The torso for ``spec``'s observations: ``NatureCNN`` for rank-3 (image) obs, else ``MLP``.

    The CNN's dense layers use ``model.fcnet_hiddens`` and ``model.fcnet_activation``; its convs use
    ``model.conv_filters`` and ``model.conv_activation``.
    """
    hiddens = tuple(int(h) for h in model.fcnet_hiddens)
    if len(spec.obs_shape) == 3:
        return NatureCNN(conv_filters=_conv_filters(model.conv_filters),
                         activation=model.conv_activation, hiddens=hiddens,
                         hidden_activation=model.fcnet_activation, name=name)
    return MLP(hiddens=hiddens, activation=model.fcnet_activation, name=name)
