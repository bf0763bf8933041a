"""The learner step: ``jit`` on one device, ``pmap`` with averaged gradients on several.

Devices: with ``num_gpus > 0`` the first ``ceil(num_gpus)`` GPUs (a fraction shares one GPU with
other trainers); otherwise every local CPU device (one, unless XLA is asked for more with
``XLA_FLAGS=--xla_force_host_platform_device_count=N``). The batch is split along axis 1 (the env
axis of ``[T, B]`` fragments, the sample axis of ``[K, N]`` replay batches) and the state is
replicated, so callers pass and get plain arrays.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from jrl.algorithms.examples import random_fragment
from jrl.errors import ConfigError
from jrl.registry import make_algorithm
from jrl.types import AlgorithmDef

AXIS = "learner_devices"


def learner_devices(num_gpus: float) -> list:
    """The devices the learner's update runs on, chosen by ``num_gpus``."""
    if num_gpus > 0:
        try:
            gpus = jax.devices("gpu")
        except RuntimeError:
            gpus = []
        if not gpus:
            raise ConfigError(f"num_gpus={num_gpus:g} but JAX sees no GPU; set num_gpus=0 or "
                              "install jax with CUDA support")
        wanted = max(1, math.ceil(num_gpus))
        if wanted > len(gpus):
            raise ConfigError(f"num_gpus={num_gpus:g} but only {len(gpus)} GPUs are visible")
        return gpus[:wanted]
    if jax.default_backend() != "cpu":
        return [jax.devices()[0]]
    return jax.devices("cpu")


class Learner:
    """Runs ``update(state, batch)`` on the learner devices.

    Args:
      make_update: ``make_update(axis_name) -> update``; called with ``None`` for one device, or
        with the mapped axis name for several (``jax.shard_map`` over a 1-D device mesh).
      devices: from ``learner_devices``.
      batch_axis_size: size of the batch's axis 1, which must divide evenly over the devices.
    """

    def __init__(self, make_update: Callable[[str | None], Callable], devices: list,
                 batch_axis_size: int):
        self.devices = list(devices)
        n = len(self.devices)
        if n == 1:
            self._update = jax.jit(make_update(None))
            return
        if batch_axis_size % n:
            raise ConfigError(f"the learner splits each batch over {n} devices, but its size "
                              f"along the env/sample axis ({batch_axis_size}) is not divisible "
                              f"by {n}")
        mesh = jax.make_mesh((n,), (AXIS,), devices=self.devices,
                             axis_types=(jax.sharding.AxisType.Auto,))
        # State and metrics are replicated (the update averages over AXIS); the batch is split
        # along axis 1.
        self._update = jax.jit(jax.shard_map(
            make_update(AXIS), mesh=mesh, in_specs=(P(), P(None, AXIS)), out_specs=(P(), P()),
            check_vma=False))

    @classmethod
    def for_algorithm(cls, definition: AlgorithmDef, algorithm: Any, config: Any, spec: Any,
                      batch_axis_size: int, wrap: Callable | None = None) -> Learner:
        """The learner of ``algorithm`` on ``config.num_gpus``' devices: its own ``update`` on
        one device, the record's ``make(..., axis_name=AXIS)`` one on several;
        ``wrap(update, axis_name)`` builds what runs around it (e.g. ``scan_updates``)."""
        wrap = wrap or (lambda update, axis: update)

        def make_update(axis: str | None) -> Callable:
            update = algorithm.update if axis is None else make_algorithm(
                definition, config, spec, axis_name=axis).update
            return wrap(update, axis)

        return cls(make_update, learner_devices(config.num_gpus), batch_axis_size)

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    def update(self, state: Any, batch: Any) -> tuple[Any, Any]:
        return self._update(state, batch)


def scan_updates(update: Callable, axis_name: str | None = None) -> Callable:
    """``run(state, batches [K, N, ...])``: K updates in one ``lax.scan``; metrics averaged over
    K, except ``td_error`` which comes back whole, ``[K, N]`` (gathered from every device)."""

    def run(state, batches):
        state, metrics = jax.lax.scan(update, state, batches)
        td = metrics.pop("td_error", None)
        metrics = jax.tree.map(jnp.mean, metrics)
        if td is not None:
            if axis_name is not None:
                td = jax.lax.all_gather(td, axis_name, axis=1, tiled=True)
            metrics["td_error"] = td
        return state, metrics

    return run


def replay_item_example(definition: AlgorithmDef, config: Any, spec: Any) -> Any:
    """Zeros shaped like one replay item of ``definition.postprocess`` (what replay buffers
    are initialized with); nothing is computed."""
    postprocess = definition.require("postprocess")
    items = jax.eval_shape(lambda key: postprocess(config, random_fragment(
        spec, config.rollout_fragment_length, 1, key)),
                           jax.random.PRNGKey(0))
    return jax.tree.map(lambda s: jnp.zeros(s.shape[1:], s.dtype), items)
