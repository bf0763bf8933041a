"""Action distributions as small pure classes, registered as pytrees so jit can return them.

Batch dimensions are the leading dimensions of the parameters; the last axis holds actions
(``Categorical``) or action dimensions (``DiagGaussian``).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from jrl.types import EnvSpec

_LOG_2PI = math.log(2.0 * math.pi)


class _LogitsPytree:
    """A distribution parameterized by one ``logits`` array, as a pytree (jit/vmap-able)."""

    def __init__(self, logits: jax.Array):
        self.logits = logits

    def tree_flatten(self):
        return (self.logits,), None

    @classmethod
    def tree_unflatten(cls, aux_data, children):
        del aux_data
        return cls(*children)


@jax.tree_util.register_pytree_node_class
class Categorical(_LogitsPytree):
    """Categorical distribution over the last axis of ``logits``.

    Attributes:
      logits: unnormalized log-probabilities, ``[..., num_actions]``.
    """

    @property
    def log_probs(self) -> jax.Array:
        """Normalized log-probabilities, ``[..., num_actions]``."""
        return jax.nn.log_softmax(self.logits, axis=-1)

    @property
    def probs(self) -> jax.Array:
        """Probabilities, ``[..., num_actions]``."""
        return jax.nn.softmax(self.logits, axis=-1)

    def sample(self, key: jax.Array) -> jax.Array:
        """Samples actions, int32 ``[...]``."""
        return jax.random.categorical(key, self.logits, axis=-1).astype(jnp.int32)

    def log_prob(self, x: jax.Array) -> jax.Array:
        """Log-probability of integer actions ``x`` ``[...]``; returns ``[...]``."""
        x = jnp.asarray(x).astype(jnp.int32)
        return jnp.take_along_axis(self.log_probs, x[..., None], axis=-1)[..., 0]

    def entropy(self) -> jax.Array:
        """Entropy, ``[...]``."""
        return -jnp.sum(self.probs * self.log_probs, axis=-1)

    def kl(self, other: Categorical) -> jax.Array:
        """``KL(self || other)``, ``[...]``."""
        return jnp.sum(self.probs * (self.log_probs - other.log_probs), axis=-1)

    def mode(self) -> jax.Array:
        """Most likely action, int32 ``[...]``."""
        return jnp.argmax(self.logits, axis=-1).astype(jnp.int32)


@jax.tree_util.register_pytree_node_class
class DiagGaussian:
    """Gaussian with diagonal covariance over the last axis (action dimensions).

    Attributes:
      mean: means, ``[..., action_dim]``.
      log_std: log standard deviations, broadcast against ``mean`` (e.g. ``[action_dim]``).
    """

    def __init__(self, mean: jax.Array, log_std: jax.Array):
        self.mean = mean
        self.log_std = log_std

    def tree_flatten(self):
        return (self.mean, self.log_std), None

    @classmethod
    def tree_unflatten(cls, aux_data, children):
        del aux_data
        return cls(*children)

    @property
    def _log_std(self) -> jax.Array:
        # Broadcast lazily: pytree transformations may rebuild the class with non-array leaves.
        return jnp.broadcast_to(self.log_std, jnp.shape(self.mean))

    @property
    def std(self) -> jax.Array:
        """Standard deviations, same shape as ``mean``."""
        return jnp.exp(self._log_std)

    def sample(self, key: jax.Array) -> jax.Array:
        """Samples actions, ``[..., action_dim]``."""
        mean = jnp.asarray(self.mean)
        noise = jax.random.normal(key, mean.shape, dtype=mean.dtype)
        return mean + self.std * noise

    def log_prob(self, x: jax.Array) -> jax.Array:
        """Log-density of actions ``x`` ``[..., action_dim]``, summed over action dims; ``[...]``."""
        log_std = self._log_std
        z = (x - self.mean) * jnp.exp(-log_std)
        return jnp.sum(-0.5 * jnp.square(z) - log_std - 0.5 * _LOG_2PI, axis=-1)

    def entropy(self) -> jax.Array:
        """Entropy summed over action dims, ``[...]``."""
        return jnp.sum(self._log_std + 0.5 * (1.0 + _LOG_2PI), axis=-1)

    def kl(self, other: DiagGaussian) -> jax.Array:
        """``KL(self || other)`` summed over action dims, ``[...]``."""
        log_std_p, log_std_q = self._log_std, other._log_std
        var_ratio = jnp.exp(2.0 * (log_std_p - log_std_q))
        mean_term = jnp.square((self.mean - other.mean) * jnp.exp(-log_std_q))
        return jnp.sum(log_std_q - log_std_p + 0.5 * (var_ratio + mean_term - 1.0), axis=-1)

    def mode(self) -> jax.Array:
        """Most likely action (the mean), ``[..., action_dim]``."""
        return self.mean


def tanh_log_det_jacobian(u: jax.Array) -> jax.Array:
    """``log(1 - tanh(u)^2)`` elementwise, computed stably as ``2 (log 2 - u - softplus(-2u))``."""
    return 2.0 * (math.log(2.0) - u - jax.nn.softplus(-2.0 * u))


@jax.tree_util.register_pytree_node_class
class SquashedGaussian:
    """A diagonal Gaussian pushed through ``tanh`` and scaled to box bounds ``[low, high]``.

    ``a = center + half_range * tanh(u)`` with ``u ~ N(mean, std)``, so
    ``log pi(a) = log N(u) - sum log(1 - tanh(u)^2) - sum log(half_range)``.

    Attributes:
      mean: pre-squash means, ``[..., action_dim]``.
      log_std: pre-squash log standard deviations, same shape as ``mean``.
      low / high: action bounds, broadcast against ``mean`` (e.g. ``[action_dim]``).
    """

    def __init__(self, mean: jax.Array, log_std: jax.Array, low: jax.Array, high: jax.Array):
        self.mean = mean
        self.log_std = log_std
        self.low = low
        self.high = high

    def tree_flatten(self):
        return (self.mean, self.log_std, self.low, self.high), None

    @classmethod
    def tree_unflatten(cls, aux_data, children):
        del aux_data
        return cls(*children)

    @property
    def _center(self) -> jax.Array:
        return 0.5 * (jnp.asarray(self.high) + jnp.asarray(self.low))

    @property
    def _half_range(self) -> jax.Array:
        return 0.5 * (jnp.asarray(self.high) - jnp.asarray(self.low))

    def _squash(self, u: jax.Array) -> jax.Array:
        return self._center + self._half_range * jnp.tanh(u)

    def _log_prob_pre_squash(self, u: jax.Array) -> jax.Array:
        gaussian = DiagGaussian(self.mean, self.log_std).log_prob(u)
        log_det = jnp.sum(tanh_log_det_jacobian(u)
                          + jnp.log(jnp.broadcast_to(self._half_range, jnp.shape(u))), axis=-1)
        return gaussian - log_det

    def sample_and_log_prob(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Reparameterized actions ``[..., action_dim]`` and their log-density ``[...]``."""
        u = DiagGaussian(self.mean, self.log_std).sample(key)
        return self._squash(u), self._log_prob_pre_squash(u)

    def sample(self, key: jax.Array) -> jax.Array:
        return self.sample_and_log_prob(key)[0]

    def log_prob(self, x: jax.Array) -> jax.Array:
        """Log-density of actions ``x`` inside the bounds (clipped just inside them first)."""
        y = jnp.clip((x - self._center) / self._half_range, -1.0 + 1e-6, 1.0 - 1e-6)
        return self._log_prob_pre_squash(jnp.arctanh(y))

    def mode(self) -> jax.Array:
        """The squashed mean (the deterministic action)."""
        return self._squash(jnp.asarray(self.mean))


@jax.tree_util.register_pytree_node_class
class MultiCategorical:
    """Independent categoricals, one per component of a MultiDiscrete action.

    Attributes:
      logits: the components' logits side by side, ``[..., sum(nvec)]``.
      nvec: number of values of each component (static).
    """

    def __init__(self, logits: jax.Array, nvec: tuple[int, ...]):
        self.logits = logits
        self.nvec = tuple(int(n) for n in nvec)

    def tree_flatten(self):
        return (self.logits,), self.nvec

    @classmethod
    def tree_unflatten(cls, aux_data, children):
        return cls(children[0], aux_data)

    @property
    def parts(self) -> list[Categorical]:
        """One ``Categorical`` per component."""
        bounds = [sum(self.nvec[:i]) for i in range(1, len(self.nvec))]
        return [Categorical(x) for x in jnp.split(self.logits, bounds, axis=-1)]

    def sample(self, key: jax.Array) -> jax.Array:
        """Samples actions, int32 ``[..., K]``."""
        keys = jax.random.split(key, len(self.nvec))
        return jnp.stack([p.sample(k) for p, k in zip(self.parts, keys, strict=True)], axis=-1)

    def log_prob(self, x: jax.Array) -> jax.Array:
        """Log-probability of actions ``x`` ``[..., K]`` (summed over components); ``[...]``."""
        x = jnp.asarray(x)
        return sum(p.log_prob(x[..., i]) for i, p in enumerate(self.parts))

    def entropy(self) -> jax.Array:
        """Entropy summed over components, ``[...]``."""
        return sum(p.entropy() for p in self.parts)

    def kl(self, other: MultiCategorical) -> jax.Array:
        """``KL(self || other)`` summed over components, ``[...]``."""
        return sum(p.kl(q) for p, q in zip(self.parts, other.parts, strict=True))

    def mode(self) -> jax.Array:
        """Most likely action of each component, int32 ``[..., K]``."""
        return jnp.stack([p.mode() for p in self.parts], axis=-1)


@jax.tree_util.register_pytree_node_class
class Bernoulli(_LogitsPytree):
    """Independent Bernoulli variables (MultiBinary actions).

    Attributes:
      logits: log-odds of each variable being 1, ``[..., n]``.
    """

    def sample(self, key: jax.Array) -> jax.Array:
        """Samples actions, int32 ``[..., n]`` of 0/1."""
        return jax.random.bernoulli(key, jax.nn.sigmoid(self.logits)).astype(jnp.int32)

    def log_prob(self, x: jax.Array) -> jax.Array:
        """Log-probability of 0/1 actions ``x`` ``[..., n]``, summed; ``[...]``."""
        x = jnp.asarray(x).astype(jnp.float32)
        return jnp.sum(x * jax.nn.log_sigmoid(self.logits)
                       + (1.0 - x) * jax.nn.log_sigmoid(-self.logits), axis=-1)

    def entropy(self) -> jax.Array:
        """Entropy summed over variables, ``[...]``."""
        p = jax.nn.sigmoid(self.logits)
        return -jnp.sum(p * jax.nn.log_sigmoid(self.logits)
                        + (1.0 - p) * jax.nn.log_sigmoid(-self.logits), axis=-1)

    def kl(self, other: Bernoulli) -> jax.Array:
        """``KL(self || other)`` summed over variables, ``[...]``."""
        p = jax.nn.sigmoid(self.logits)
        return jnp.sum(p * (jax.nn.log_sigmoid(self.logits) - jax.nn.log_sigmoid(other.logits))
                       + (1.0 - p) * (jax.nn.log_sigmoid(-self.logits)
                                      - jax.nn.log_sigmoid(-other.logits)), axis=-1)

    def mode(self) -> jax.Array:
        """The more likely value of each variable, int32 ``[..., n]``."""
        return (self.logits > 0).astype(jnp.int32)


def part_input_width(spec: EnvSpec) -> int:
    """Width of the flat model outputs one action part's distribution takes (RLlib's
    ``required_model_output_shape``): logits, or means then log-stds of a Box."""
    if spec.discrete:
        return spec.num_actions
    if spec.action_kind == "multi_discrete":
        return sum(spec.action_nvec)
    size = math.prod(spec.action_shape)
    return 2 * size if spec.continuous else size


def part_action_width(spec: EnvSpec) -> int:
    """Width of one action part in the flat action vector (1 for a Discrete part)."""
    return 1 if spec.discrete else math.prod(spec.action_shape)


def _part_distribution(spec: EnvSpec, inputs: jax.Array) -> Any:
    if spec.discrete:
        return Categorical(inputs)
    if spec.action_kind == "multi_discrete":
        return MultiCategorical(inputs, spec.action_nvec)
    if spec.action_kind == "multi_binary":
        return Bernoulli(inputs)
    size = math.prod(spec.action_shape)
    return DiagGaussian(inputs[..., :size], inputs[..., size:])


def _bounds(widths: list[int]) -> list[int]:
    return [sum(widths[:i]) for i in range(1, len(widths))]


@jax.tree_util.register_pytree_node_class
class MultiActionDistribution:
    """Independent distributions over the parts of a Tuple/Dict action (RLlib's
    ``MultiActionDistribution``): one flat inputs vector split into each part's inputs, actions
    flattened into one float32 vector; ``log_prob``, ``entropy`` and ``kl`` are the sums over
    the parts.

    Attributes:
      inputs: the parts' inputs side by side, ``[..., sum(part_input_width)]``.
      parts: the parts' specs (static; ``EnvSpec.action_parts``).
    """

    def __init__(self, inputs: jax.Array, parts: tuple[EnvSpec, ...]):
        self.inputs = inputs
        self.parts = tuple(parts)

    def tree_flatten(self):
        return (self.inputs,), self.parts

    @classmethod
    def tree_unflatten(cls, aux_data, children):
        return cls(children[0], aux_data)

    @property
    def components(self) -> list[Any]:
        """One pure distribution per part (``Categorical``, ``DiagGaussian``, ...)."""
        widths = [part_input_width(p) for p in self.parts]
        splits = jnp.split(jnp.asarray(self.inputs), _bounds(widths), axis=-1)
        return [_part_distribution(p, x) for p, x in zip(self.parts, splits, strict=True)]

    def split_actions(self, x: jax.Array) -> list[jax.Array]:
        """The flat actions ``[..., D]`` as each part's actions (ints for discrete parts)."""
        widths = [part_action_width(p) for p in self.parts]
        out = []
        for p, a in zip(self.parts, jnp.split(jnp.asarray(x), _bounds(widths), axis=-1),
                        strict=True):
            if p.discrete:
                a = a[..., 0]
            out.append(a if p.continuous else jnp.round(a).astype(jnp.int32))
        return out

    def sample(self, key: jax.Array) -> jax.Array:
        """Samples flat actions, float32 ``[..., D]``."""
        keys = jax.random.split(key, len(self.parts))
        return _concat([(d.sample(k), p) for d, k, p in
                        zip(self.components, keys, self.parts, strict=True)])

    def log_prob(self, x: jax.Array) -> jax.Array:
        """Log-probability of flat actions ``x`` ``[..., D]``, summed over parts; ``[...]``."""
        return sum(d.log_prob(a) for d, a in zip(self.components, self.split_actions(x),
                                                 strict=True))

    def entropy(self) -> jax.Array:
        """Entropy summed over parts, ``[...]``."""
        return sum(d.entropy() for d in self.components)

    def kl(self, other: MultiActionDistribution) -> jax.Array:
        """``KL(self || other)`` summed over parts, ``[...]``."""
        return sum(p.kl(q) for p, q in zip(self.components, other.components, strict=True))

    def mode(self) -> jax.Array:
        """The most likely action of each part, flat float32 ``[..., D]``."""
        return _concat([(d.mode(), p) for d, p in zip(self.components, self.parts,
                                                      strict=True)])


def _concat(samples: list[tuple[jax.Array, EnvSpec]]) -> jax.Array:
    """Parts' actions (``[...]`` for discrete parts, ``[..., n]`` otherwise) as one float32
    vector ``[..., D]``."""
    return jnp.concatenate([jnp.asarray(a, jnp.float32)[..., None] if p.discrete
                            else jnp.asarray(a, jnp.float32) for a, p in samples], axis=-1)
