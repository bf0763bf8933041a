"""The learner shared by the plain actor-critic algorithms (PG, A2C, A3C).

One gradient step per train batch: values of ``obs`` and ``next_obs`` with the current params,
advantages and value targets from the algorithm's ``targets`` function, then the gradient of
``jrl.ops.losses.actor_critic_loss`` (accumulated over microbatches when asked) and one optimizer
step. The step is split in two pure functions, ``compute`` (gradients of a batch against given
weights) and ``apply`` (an optimizer step with given gradients), so that A3C can compute
gradients on rollout workers and apply them on the learner; ``update`` is the two in a row.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jrl.errors import ConfigError
from jrl.networks import catalog
from jrl.ops.filters import FilterState, get_filter, merge_filter_states
from jrl.ops.losses import actor_critic_loss
from jrl.ops.parallel import all_gather, num_devices, pmean
from jrl.types import Algorithm, EnvSpec, LearnerState, NetworkPolicy, Transition

# ``targets(batch, v_t, v_tp1) -> (advantages, value_targets)``, all ``[T, B]``.
TargetsFn = Callable[[Transition, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]

# Arrays only: params, optimizer state, key, filter statistics, counters; and what act needs.
ActorCriticState = LearnerState
ActorCriticPolicy = NetworkPolicy


class GradientFns(NamedTuple):
    """The learner step in two halves (both pure and jittable).

    Attributes:
      compute: ``compute(policy, batch) -> (grads, metrics, filter_delta)``: gradients of the
        batch's mean loss at ``policy.params``, and the observation statistics of the batch
        (to merge into the learner's filter).
      apply: ``apply(state, grads, filter_delta, env_steps) -> (state, metrics)``: one optimizer
        step; counts one update and ``env_steps`` sampled steps.
    """

    compute: Callable
    apply: Callable


def make_forward(net: Any, obs_filter: Any, spec: EnvSpec) -> Callable:
    """``forward(params, filter_state, obs [N, ...]) -> (distribution, value [N])``."""

    def forward(params, filter_state, obs):
        dist_params, value = net.apply(params, obs_filter.apply(filter_state, obs))
        return catalog.make_distribution(spec, dist_params), value

    return forward


def make_optimizer(config: Any) -> optax.GradientTransformation:
    """Adam or RMSProp (``config.optimizer``) after optional global-norm gradient clipping."""
    kind = getattr(config, "optimizer", "adam")
    eps = getattr(config, "optimizer_epsilon", 1e-8)
    if kind == "rmsprop":
        opt = optax.rmsprop(config.lr, decay=config.rmsprop_decay, eps=eps)
    else:
        opt = optax.adam(config.lr, eps=eps)
    if config.grad_clip is None:
        return opt
    return optax.chain(optax.clip_by_global_norm(config.grad_clip), opt)


def _pad_to(x: jax.Array, n: int) -> jax.Array:
    pad = n - x.shape[0]
    return x if pad == 0 else jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)])


def make_learner(name: str, config: Any, spec: EnvSpec, targets: TargetsFn, *,
                 networks: Any = None, vf_loss_coeff: float, entropy_coeff: float,
                 normalize_advantages: bool, microbatch_size: int | None = None,
                 axis_name: str | None = None) -> tuple[Algorithm, GradientFns]:
    """The ``Algorithm`` and its ``GradientFns`` for one actor-critic algorithm.

    Args:
      name: the algorithm's registered name.
      config: its config (``lr``, ``grad_clip``, ``model``, ``observation_filter``, optimizer).
      spec: the env spec.
      targets: advantages and value targets of a ``[T, B]`` batch given its values.
      networks: the actor-critic network (default: the catalog's for ``spec``).
      vf_loss_coeff, entropy_coeff: loss weights.
      normalize_advantages: standardize advantages over the batch.
      microbatch_size: accumulate gradients over microbatches of this many samples (the last
        one padded with zero-weight samples); the sum equals the full batch's gradient.
      axis_name: mapped device axis; gradients, statistics and filter data are averaged over it.
    """
    if spec is None:
        raise ConfigError(f"make_{name.lower()} needs the env spec")
    net = networks if networks is not None else catalog.make_actor_critic(spec, config.model)
    obs_filter = get_filter(config.observation_filter)
    optimizer = make_optimizer(config)
    forward = make_forward(net, obs_filter, spec)

    def loss_fn(params, filter_state, data):
        dist, value = forward(params, filter_state, data["obs"])
        return actor_critic_loss(dist.log_prob(data["actions"]), dist.entropy(), value,
                                 data["advantages"], data["value_targets"], vf_loss_coeff,
                                 entropy_coeff, data["weight"])

    def compute(policy: ActorCriticPolicy, batch: Transition):
        T, B = batch.reward.shape
        n = T * B
        flat = lambda x: x.reshape((n, *x.shape[2:]))  # noqa: E731
        obs = flat(batch.obs)
        # One forward pass for both (a smaller program compiles faster).
        _, both = forward(policy.params, policy.obs_filter,
                          jnp.concatenate([obs, flat(batch.next_obs)]))
        values, next_values = both[:n], both[n:]
        advantages, value_targets = targets(batch, values.reshape(T, B),
                                            next_values.reshape(T, B))
        advantages, value_targets = flat(advantages), flat(value_targets)
        if normalize_advantages:
            mean = pmean(advantages.mean(), axis_name)
            std = jnp.sqrt(pmean(jnp.mean(jnp.square(advantages - mean)), axis_name))
            advantages = (advantages - mean) / (std + 1e-8)
        mb = min(microbatch_size or n, n)
        num_mb = math.ceil(n / mb)
        size = num_mb * mb
        # Each microbatch's mean loss, scaled by mb / n, is its share of the full batch's mean.
        weight = _pad_to(jnp.full((n,), mb / n, jnp.float32), size)
        data = {"obs": obs, "actions": flat(batch.action), "advantages": advantages,
                "value_targets": value_targets}
        data = jax.tree.map(lambda x: _pad_to(x, size), data)
        data["weight"] = weight
        data = jax.tree.map(lambda x: x.reshape((num_mb, mb, *x.shape[1:])), data)

        grad_fn = jax.grad(loss_fn, has_aux=True)
        if num_mb == 1:
            grads, stats = grad_fn(policy.params, policy.obs_filter,
                                   jax.tree.map(lambda x: x[0], data))
        else:
            def accumulate(grads, microbatch):
                g, stats = grad_fn(policy.params, policy.obs_filter, microbatch)
                return jax.tree.map(jnp.add, grads, g), stats

            zeros = jax.tree.map(jnp.zeros_like, policy.params)
            grads, stats = jax.lax.scan(accumulate, zeros, data)
            stats = jax.tree.map(lambda x: jnp.sum(x, axis=0), stats)
        all_targets = all_gather(value_targets, axis_name)
        all_values = all_gather(values, axis_name)
        stats["vf_explained_var"] = 1.0 - jnp.var(all_targets - all_values) / (
            jnp.var(all_targets) + 1e-8)
        filter_delta = obs_filter.update(obs_filter.init(spec.obs_shape),
                                         all_gather(obs, axis_name))
        return grads, stats, filter_delta

    def apply(state: ActorCriticState, grads, filter_delta: FilterState, env_steps):
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = state._replace(
            params=params, opt_state=opt_state,
            obs_filter=merge_filter_states(state.obs_filter, filter_delta),
            num_updates=state.num_updates + 1,
            env_steps=state.env_steps + jnp.asarray(env_steps, state.env_steps.dtype))
        return new_state, {"grad_gnorm": optax.tree.norm(grads)}

    def init(key: jax.Array) -> ActorCriticState:
        key, init_key = jax.random.split(key)
        params = net.init(init_key, jnp.zeros((1, *spec.obs_shape), spec.obs_dtype))
        return ActorCriticState(params=params, opt_state=optimizer.init(params), key=key,
                                obs_filter=obs_filter.init(spec.obs_shape),
                                num_updates=jnp.zeros((), jnp.int32),
                                env_steps=jnp.zeros((), jnp.int32))

    def policy(state: ActorCriticState) -> ActorCriticPolicy:
        return ActorCriticPolicy(state.params, state.obs_filter)

    def act(policy: ActorCriticPolicy, obs: jax.Array, key: jax.Array, explore: bool = True):
        dist, value = forward(policy.params, policy.obs_filter, obs)
        action = dist.sample(key) if explore else dist.mode()
        return action, {"action_logp": dist.log_prob(action), "vf_preds": value}

    def update(state: ActorCriticState, batch: Transition):
        grads, stats, filter_delta = compute(policy(state), batch)
        grads, stats = pmean((grads, stats), axis_name)
        env_steps = batch.reward.size * num_devices(axis_name)
        state, apply_stats = apply(state, grads, filter_delta, env_steps)
        return state, {**stats, **apply_stats}

    return (Algorithm(init=init, update=update, act=act, policy=policy, name=name),
            GradientFns(compute=compute, apply=apply))
