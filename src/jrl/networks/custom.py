"""User models, preprocessors and action distributions by name (RLlib's ``ModelCatalog``).

``ModelCatalog.register_custom_model("my_model", MyFlaxModule)`` makes ``model: {custom_model:
"my_model", custom_model_config: {...}}`` build ``MyFlaxModule(**custom_model_config)`` where the
catalog would build its own network. What the module must return depends on the algorithm's
network kind (see ``CustomActorCritic``, ``CustomTorso``, ``CustomPolicyOutput``); a module that
returns something else is a ``ConfigError`` naming the expected shape.

Registrations are per process: rollout workers started as Ray actors get the driver's
registrations with their arguments (``registrations`` / ``restore_registrations``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jrl.config import ModelConfig
from jrl.errors import ConfigError
from jrl.networks.distributions import part_input_width
from jrl.types import EnvSpec

DIST_METHODS = ("sample", "log_prob", "entropy", "kl", "mode", "required_model_output_shape")


class ModelCatalog:
    """Registries of custom models, preprocessors and action distributions (class methods only,
    as RLlib's ``ModelCatalog``)."""

    _models: ClassVar[dict[str, type]] = {}
    _preprocessors: ClassVar[dict[str, type]] = {}
    _action_dists: ClassVar[dict[str, type]] = {}

    @classmethod
    def register_custom_model(cls, name: str, model_class: type) -> None:
        """Registers a ``flax.linen.Module`` subclass for ``model: {custom_model: name}``."""
        if not (isinstance(model_class, type) and issubclass(model_class, nn.Module)):
            raise ConfigError(f"custom model '{name}' must be a flax.linen.Module subclass, got "
                              f"{model_class!r}")
        cls._models[_name(name)] = model_class

    @classmethod
    def register_custom_preprocessor(cls, name: str, preprocessor_class: type) -> None:
        """Registers a ``jrl.rollout.preprocessors.Preprocessor`` subclass for ``model:
        {custom_preprocessor: name}``."""
        if not isinstance(preprocessor_class, type):
            raise ConfigError(f"custom preprocessor '{name}' must be a class, got "
                              f"{preprocessor_class!r}")
        cls._preprocessors[_name(name)] = preprocessor_class

    @classmethod
    def register_custom_action_dist(cls, name: str, dist_class: type) -> None:
        """Registers an action distribution class for ``model: {custom_action_dist: name}``.

        The class is built as ``dist_class(inputs)`` from the network's outputs ``[B, K]``
        inside jitted code, so it must be a pytree (``jax.tree_util.register_pytree_node_class``)
        with ``sample(key)``, ``log_prob(actions)``, ``entropy()``, ``kl(other)`` and ``mode()``
        (each over the batch), and a classmethod ``required_model_output_shape(action_space,
        model_config) -> K`` (called with the ``EnvSpec`` and the ``ModelConfig``).
        """
        if not isinstance(dist_class, type):
            raise ConfigError(f"custom action distribution '{name}' must be a class, got "
                              f"{dist_class!r}")
        missing = [m for m in DIST_METHODS if not callable(getattr(dist_class, m, None))]
        if missing:
            raise ConfigError(f"custom action distribution '{name}' lacks "
                              f"{', '.join(missing)}; it needs {', '.join(DIST_METHODS)}")
        cls._action_dists[_name(name)] = dist_class

    @classmethod
    def get_custom_model(cls, name: str) -> type:
        return _lookup(cls._models, name, "model", "register_custom_model")

    @classmethod
    def get_custom_preprocessor(cls, name: str) -> type:
        return _lookup(cls._preprocessors, name, "preprocessor", "register_custom_preprocessor")

    @classmethod
    def get_custom_action_dist(cls, name: str) -> type:
        return _lookup(cls._action_dists, name, "action distribution",
                       "register_custom_action_dist")

    @classmethod
    def registrations(cls) -> dict[str, dict[str, type]]:
        """A copy of every registration (to hand to another process)."""
        return {"models": dict(cls._models), "preprocessors": dict(cls._preprocessors),
                "action_dists": dict(cls._action_dists)}

    @classmethod
    def restore_registrations(cls, registrations: dict[str, dict[str, type]] | None) -> None:
        """Adds registrations made in another process (``registrations()``)."""
        for key, store in (("models", cls._models), ("preprocessors", cls._preprocessors),
                           ("action_dists", cls._action_dists)):
            store.update((registrations or {}).get(key, {}))

    @classmethod
    def unregister(cls, name: str) -> None:
        """Forgets ``name`` in every registry (no error when it is not registered)."""
        for store in (cls._models, cls._preprocessors, cls._action_dists):
            store.pop(name, None)


def _name(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"a custom model/preprocessor/distribution name must be a non-empty "
                          f"string, got {name!r}")
    return name


def _lookup(store: dict[str, type], name: str, what: str, register: str) -> type:
    if name not in store:
        known = ", ".join(sorted(store)) or "none"
        raise ConfigError(f"unknown custom {what} '{name}' (registered: {known}); call "
                          f"jrl.ModelCatalog.{register}('{name}', ...) first")
    return store[name]


def build_custom_model(model: ModelConfig, num_outputs: int, name: str) -> nn.Module:
    """``model.custom_model``'s class built with ``model.custom_model_config`` as keyword
    arguments, plus ``num_outputs`` and ``model_config`` where the class declares such fields."""
    cls = ModelCatalog.get_custom_model(model.custom_model)
    kwargs = dict(model.custom_model_config)
    fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    if "num_outputs" in fields:
        kwargs.setdefault("num_outputs", num_outputs)
    if "model_config" in fields:
        kwargs.setdefault("model_config", model)
    try:
        return cls(**kwargs, name=name)
    except TypeError as e:
        raise ConfigError(f"custom model '{model.custom_model}' cannot be built with "
                          f"custom_model_config {dict(model.custom_model_config)}: {e}") from None


def _shape_error(model: ModelConfig, expected: str, got: Any) -> ConfigError:
    shapes = jax.tree.map(lambda x: tuple(jnp.shape(x)), got)
    return ConfigError(f"custom model '{model.custom_model}' returned {shapes}, but this "
                       f"algorithm needs {expected}")


def actor_critic_outputs(spec: EnvSpec, model: ModelConfig) -> int:
    """Width of an actor-critic model's outputs (RLlib's ``num_outputs``): what
    ``model.custom_action_dist`` requires, else the number of actions (discrete), the summed
    ``nvec`` (multi-discrete), the number of bits (multi-binary), or means and log-stds of every
    action dimension (continuous; only means with ``free_log_std``)."""
    if model.custom_action_dist:
        dist = ModelCatalog.get_custom_action_dist(model.custom_action_dist)
        return int(dist.required_model_output_shape(spec, model))
    if spec.discrete:
        return spec.num_actions
    if spec.action_kind == "multi_discrete":
        return sum(spec.action_nvec)
    if spec.composite:
        return sum(part_input_width(p) for p in spec.action_parts)
    size = math.prod(spec.action_shape)
    if spec.action_kind == "multi_binary":
        return size
    return size if model.free_log_std else 2 * size


class CustomActorCritic(nn.Module):
    """An actor-critic around a custom model that returns ``(outputs [B, num_outputs], value
    [B] or [B, 1])``; returns ``(dist_params, value [B])`` like ``catalog.ActorCritic``.

    Attributes:
      spec: the environment spec.
      model: the model config naming the custom model.
    """

    spec: EnvSpec
    model: ModelConfig

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[Any, jax.Array]:
        num_outputs = actor_critic_outputs(self.spec, self.model)
        out = build_custom_model(self.model, num_outputs, "custom_model")(obs)
        batch = obs.shape[0]
        expected = f"(outputs [B, {num_outputs}], value [B]) with B = {batch}"
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise _shape_error(self.model, expected, out)
        outputs, value = out
        if jnp.shape(outputs) != (batch, num_outputs) or jnp.shape(value) not in (
                (batch,), (batch, 1)):
            raise _shape_error(self.model, expected, out)
        value = jnp.reshape(value, (batch,))
        if not self.spec.continuous or self.model.custom_action_dist:
            return outputs, value
        shape = (batch, *self.spec.action_shape)
        size = math.prod(self.spec.action_shape)
        mean = outputs[:, :size].reshape(shape)
        if self.model.free_log_std:
            log_std = self.param("log_std", nn.initializers.zeros, tuple(self.spec.action_shape),
                                 jnp.float32)
            return (mean, jnp.broadcast_to(log_std, shape)), value
        return (mean, outputs[:, size:].reshape(shape)), value


class CustomTorso(nn.Module):
    """A custom model used as a torso: it must return features ``[B, F]`` (any ``F``); heads
    (e.g. DQN's Q head) are put on top.

    Attributes:
      model: the model config naming the custom model.
      num_outputs: the feature width suggested to the model (``num_outputs`` field).
    """

    model: ModelConfig
    num_outputs: int

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        out = build_custom_model(self.model, self.num_outputs, "custom_model")(obs)
        if not isinstance(out, jax.Array) or out.ndim != 2 or out.shape[0] != obs.shape[0]:
            raise _shape_error(self.model, f"features [B, F] with B = {obs.shape[0]}", out)
        return out


class CustomPolicyOutput(nn.Module):
    """A custom model as a whole deterministic policy (ES): it must return ``[B, num_outputs]``
    (logits of each action, or the flattened action).

    Attributes:
      spec: the environment spec.
      model: the model config naming the custom model.
    """

    spec: EnvSpec
    model: ModelConfig

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        shape = (self.spec.num_actions,) if self.spec.discrete else tuple(self.spec.action_shape)
        size = math.prod(shape)
        out = build_custom_model(self.model, size, "custom_model")(obs)
        if jnp.shape(out) != (obs.shape[0], size):
            raise _shape_error(self.model, f"outputs [B, {size}] with B = {obs.shape[0]}", out)
        return out.reshape((obs.shape[0], *shape))
