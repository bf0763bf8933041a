"""RLlib's action-distribution API over jrl's pure distributions (``policy.dist_class``).

``dist = policy.dist_class(inputs, policy.model)`` wraps the model's flat outputs (logits
``[N, A]``, or means and log-stds ``[N, 2 * action_dim]``) and offers ``sample()``,
``deterministic_sample()``, ``logp(actions)``, ``sampled_action_logp()``, ``entropy()`` and
``kl(other)``, returning NumPy arrays. ``sample()`` draws its key from the model's policy (or
from ``key=``), so the pure distributions in ``jrl.networks.distributions`` stay keyed.
"""

from __future__ import annotations

import abc
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jrl.config import ModelConfig
from jrl.errors import ConfigError
from jrl.networks import catalog, distributions
from jrl.networks.custom import actor_critic_outputs
from jrl.rollout.envs import flatten_actions, unflatten_actions
from jrl.types import EnvSpec


class ActionDistribution(abc.ABC):
    """Base class: an action distribution over a batch of model outputs ``inputs [N, K]``.

    Args:
      inputs: the model outputs (``policy.model.from_batch(...)[0]``).
      model: the policy's model (``sample()`` draws keys from its policy); optional.
      key: a ``jax.random`` key for ``sample()`` instead of the model's.
    """

    spec: EnvSpec

    def __init__(self, inputs: Any, model: Any = None, key: jax.Array | None = None):
        self.inputs = jnp.asarray(inputs, jnp.float32)
        width = self.required_model_output_shape(None, None)
        if self.inputs.ndim != 2 or self.inputs.shape[1] != width:
            raise ConfigError(f"{type(self).__name__} needs inputs shaped [N, {width}], got "
                              f"{tuple(self.inputs.shape)}")
        self.model = model
        self._key = key
        self._sampled: jax.Array | None = None
        self.dist = self._build(self.inputs)

    @abc.abstractmethod
    def _build(self, inputs: jax.Array) -> Any:
        """The pure distribution of ``inputs``."""

    @classmethod
    @abc.abstractmethod
    def required_model_output_shape(cls, action_space: Any, model_config: Any) -> int:
        """Width of the model outputs this distribution takes (RLlib's classmethod)."""

    def _next_key(self) -> jax.Array:
        if self._key is not None:
            self._key, key = jax.random.split(self._key)
            return key
        policy = getattr(self.model, "policy", None)
        if policy is not None:
            return policy.next_key()
        return jax.random.PRNGKey(int(np.random.default_rng().integers(2**31)))

    def sample(self) -> np.ndarray:
        """Draws actions ``[N, ...]``."""
        self._sampled = self.dist.sample(self._next_key())
        return np.asarray(self._sampled)

    def deterministic_sample(self) -> np.ndarray:
        """The most likely actions ``[N, ...]``."""
        self._sampled = self.dist.mode()
        return np.asarray(self._sampled)

    def sampled_action_logp(self) -> np.ndarray:
        """Log-probabilities ``[N]`` of the last ``sample()``/``deterministic_sample()``."""
        if self._sampled is None:
            raise ConfigError("sampled_action_logp() needs a sample() first")
        return np.asarray(self.dist.log_prob(self._sampled))

    def logp(self, actions: Any) -> np.ndarray:
        """Log-probabilities ``[N]`` of ``actions``."""
        return np.asarray(self.dist.log_prob(jnp.asarray(actions)))

    def entropy(self) -> np.ndarray:
        """Entropies ``[N]``."""
        return np.asarray(self.dist.entropy())

    def kl(self, other: ActionDistribution) -> np.ndarray:
        """``KL(self || other)`` ``[N]``."""
        if type(other) is not type(self):
            raise ConfigError(f"kl needs another {type(self).__name__}, got "
                              f"{type(other).__name__}")
        return np.asarray(self.dist.kl(other.dist))


class Categorical(ActionDistribution):
    """Categorical over discrete actions; ``inputs`` are logits ``[N, num_actions]``."""

    def _build(self, inputs: jax.Array) -> distributions.Categorical:
        return distributions.Categorical(inputs)

    @classmethod
    def required_model_output_shape(cls, action_space: Any, model_config: Any) -> int:
        return cls.spec.num_actions


class DiagGaussian(ActionDistribution):
    """Diagonal Gaussian; ``inputs`` are means then log-stds ``[N, 2 * action_dim]``."""

    def _build(self, inputs: jax.Array) -> distributions.DiagGaussian:
        size = math.prod(self.spec.action_shape)
        shape = (inputs.shape[0], *self.spec.action_shape)
        return distributions.DiagGaussian(inputs[:, :size].reshape(shape),
                                          inputs[:, size:].reshape(shape))

    @classmethod
    def required_model_output_shape(cls, action_space: Any, model_config: Any) -> int:
        return 2 * math.prod(cls.spec.action_shape)


class MultiCategorical(ActionDistribution):
    """Independent categoricals (MultiDiscrete); ``inputs`` are the logits of every component
    side by side ``[N, sum(nvec)]``."""

    def _build(self, inputs: jax.Array) -> distributions.MultiCategorical:
        return distributions.MultiCategorical(inputs, self.spec.action_nvec)

    @classmethod
    def required_model_output_shape(cls, action_space: Any, model_config: Any) -> int:
        return sum(cls.spec.action_nvec)


class Bernoulli(ActionDistribution):
    """Independent Bernoullis (MultiBinary); ``inputs`` are log-odds ``[N, n]``."""

    def _build(self, inputs: jax.Array) -> distributions.Bernoulli:
        return distributions.Bernoulli(inputs)

    @classmethod
    def required_model_output_shape(cls, action_space: Any, model_config: Any) -> int:
        return cls.spec.action_shape[0]


class MultiActionDistribution(ActionDistribution):
    """Independent distributions over the parts of a Tuple/Dict action space (RLlib's): the
    parts' inputs side by side ``[N, sum(widths)]`` (logits, or means then log-stds of a Box);
    ``sample()`` returns the space's nested structure of batches, ``logp`` takes it (or flat
    actions ``[N, D]``); ``logp``, ``entropy`` and ``kl`` sum over the parts."""

    def _build(self, inputs: jax.Array) -> distributions.MultiActionDistribution:
        return distributions.MultiActionDistribution(inputs, self.spec.action_parts)

    @classmethod
    def required_model_output_shape(cls, action_space: Any, model_config: Any) -> int:
        return sum(distributions.part_input_width(p) for p in cls.spec.action_parts)

    def sample(self) -> Any:
        return unflatten_actions(self.spec, super().sample(), clip=False)

    def deterministic_sample(self) -> Any:
        return unflatten_actions(self.spec, super().deterministic_sample(), clip=False)

    def logp(self, actions: Any) -> np.ndarray:
        return super().logp(flatten_actions(self.spec, actions))


_BY_KIND = {"discrete": Categorical, "continuous": DiagGaussian,
            "multi_discrete": MultiCategorical, "multi_binary": Bernoulli,
            "tuple": MultiActionDistribution, "dict": MultiActionDistribution}


class CustomActionDistribution(ActionDistribution):
    """A registered custom action distribution (``model.custom_action_dist``) behind RLlib's
    method names."""

    model_config: ModelConfig

    def _build(self, inputs: jax.Array) -> Any:
        return catalog.make_distribution(self.spec, inputs, self.model_config)

    @classmethod
    def required_model_output_shape(cls, action_space: Any, model_config: Any) -> int:
        return actor_critic_outputs(cls.spec, cls.model_config)


def dist_class_for(spec: EnvSpec, model: ModelConfig | None = None
                   ) -> type[ActionDistribution]:
    """The ``ActionDistribution`` subclass for ``spec``'s actions (bound to ``spec``), or for
    ``model.custom_action_dist``."""
    if model is not None and model.custom_action_dist:
        return type(model.custom_action_dist, (CustomActionDistribution,), {
            "spec": spec, "model_config": model, "__module__": __name__})
    base = _BY_KIND[spec.action_kind]
    return type(base.__name__, (base,), {"spec": spec, "__doc__": base.__doc__,
                                         "__module__": __name__})


def flat_inputs(spec: EnvSpec, dist_params: Any, model: ModelConfig | None = None
                ) -> jax.Array:
    """The network's distribution parameters as RLlib's flat model outputs ``[N, K]``."""
    if not spec.continuous or (model is not None and model.custom_action_dist):
        return dist_params
    mean, log_std = dist_params
    n = mean.shape[0]
    return jnp.concatenate([mean.reshape(n, -1), jnp.broadcast_to(log_std, mean.shape)
                            .reshape(n, -1)], axis=-1)
