"""The learner toolkit every algorithm builds its ``update`` and ``act`` from.

- ``make_optimizer``: the one optimizer builder (each algorithm maps its RLlib keys onto it);
- ``gradient_step`` / ``sgd_step``: loss -> gradient -> mean over devices -> optimizer step;
- ``sgd_epochs``: epochs x shuffled minibatches of a step over a batch (PPO, APPO, IMPALA);
- ``adaptive_kl_coeff``, ``normalize_advantages``, ``explained_variance``: batch statistics;
- ``make_actor_critic_fns``: forward pass, evaluation of a fragment, and the ``act`` of an
  actor-critic network behind an observation filter (PG, A2C, A3C, PPO, IMPALA, APPO);
- ``init_learner_state`` / ``advance_learner_state`` / ``network_policy``: the ``LearnerState``
  of a one-network learner before and after an update, and the policy its ``act`` needs.

Everything here is pure and jittable. With an ``axis_name`` the gradients and statistics are
averaged over that mapped device axis, so a data-parallel update equals the one-device update.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jrl.errors import ConfigError
from jrl.networks import catalog
from jrl.networks.recurrent import initial_state, make_recurrent_actor_critic
from jrl.ops.filters import Filter, get_filter
from jrl.ops.parallel import pmean
from jrl.ops.sequences import chop, chop_into_sequences, episode_starts, unchop
from jrl.types import EnvSpec, LearnerState, NetworkPolicy, RecurrentFns, Transition

# ``step(carry, minibatch) -> (carry, stats)``: one SGD step (see ``sgd_step``).
StepFn = Callable[[Any, Any], tuple[Any, dict[str, jax.Array]]]


def make_optimizer(lr: float | optax.Schedule, *, optimizer: str = "adam",
                   grad_clip: float | None = None, eps: float = 1e-8, decay: float = 0.9,
                   momentum: float | None = None) -> optax.GradientTransformation:
    """Adam or RMSProp, after global-norm gradient clipping when ``grad_clip`` is set.

    Args:
      lr: learning rate, or an optax schedule of it (in optimizer steps).
      optimizer: ``"adam"`` or ``"rmsprop"``.
      grad_clip: clip gradients to this global norm first (``None``: no clipping).
      eps: the optimizer's epsilon.
      decay: RMSProp's decay of the squared-gradient average (not used by Adam).
      momentum: RMSProp's momentum (``None`` or 0: none; not used by Adam).
    """
    if optimizer == "adam":
        opt = optax.adam(lr, eps=eps)
    elif optimizer == "rmsprop":
        opt = optax.rmsprop(lr, decay=decay, eps=eps, momentum=momentum or None)
    else:
        raise ConfigError(f"unknown optimizer {optimizer!r}; valid optimizers are 'adam' and "
                          "'rmsprop'")
    if grad_clip is None:
        return opt
    return optax.chain(optax.clip_by_global_norm(grad_clip), opt)


def gradient_step(loss_fn: Callable, optimizer: optax.GradientTransformation,
                  axis_name: str | None = None, has_aux: bool = False) -> Callable:
    """One optimizer step on the gradient of ``loss_fn(params, *args)``.

    Returns ``step(params, opt_state, *args) -> (params, opt_state, loss, grads)``: ``loss`` is
    what ``loss_fn`` returns (``(value, aux)`` with ``has_aux``) and ``grads`` the gradients,
    averaged over the devices of ``axis_name``, that the step applied.
    """
    grad_fn = jax.value_and_grad(loss_fn, has_aux=has_aux)

    def step(params, opt_state, *args):
        loss, grads = grad_fn(params, *args)
        grads = pmean(grads, axis_name)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, grads

    return step


def sgd_step(loss_fn: Callable, optimizer: optax.GradientTransformation,
             axis_name: str | None = None) -> StepFn:
    """``step((params, opt_state), minibatch) -> ((params, opt_state), stats)`` for ``sgd_epochs``.

    ``loss_fn(params, minibatch) -> (loss, stats)``; the step adds the global norm of the
    (device-averaged) gradients to the stats as ``grad_gnorm``.
    """
    update = gradient_step(loss_fn, optimizer, axis_name, has_aux=True)

    def step(carry, minibatch):
        params, opt_state, (_, stats), grads = update(*carry, minibatch)
        return (params, opt_state), {**stats, "grad_gnorm": optax.tree.norm(grads)}

    return step


def sgd_epochs(step: StepFn, carry: Any, batch: Any, key: jax.Array, *, num_epochs: int,
               minibatch_size: int | None = None) -> tuple[Any, dict[str, jax.Array], jax.Array]:
    """``num_epochs`` passes of ``step`` over ``batch``, in shuffled minibatches.

    Args:
      step: ``step(carry, minibatch) -> (carry, stats)`` (e.g. ``sgd_step``).
      carry: what the steps thread through (params and optimizer state).
      batch: a pytree of arrays with a leading sample axis ``[N, ...]``.
      key: the key the shuffles are drawn from.
      num_epochs: passes over the batch.
      minibatch_size: samples per step: each epoch steps through ``N // minibatch_size``
        minibatches of a fresh permutation (the remainder sits that epoch out). ``None``: each
        epoch is one step on the whole batch as it is, unshuffled (time-major batches keep
        their order) and ``key`` is not used.

    Returns:
      ``(carry, stats, key)``: the final carry, the steps' stats averaged over every step, and
      the key to keep for the next update.
    """
    if minibatch_size is None:
        carry, stats = jax.lax.scan(lambda c, _: step(c, batch), carry, None, length=num_epochs)
        return carry, jax.tree.map(jnp.mean, stats), key
    n = jax.tree.leaves(batch)[0].shape[0]
    mb = min(minibatch_size, n)
    num_mb = n // mb

    def epoch(carry, epoch_key):
        perm = jax.random.permutation(epoch_key, n)[: num_mb * mb].reshape(num_mb, mb)
        return jax.lax.scan(lambda c, idx: step(c, jax.tree.map(lambda x: x[idx], batch)),
                            carry, perm)

    key, *epoch_keys = jax.random.split(key, num_epochs + 1)
    carry, stats = jax.lax.scan(epoch, carry, jnp.stack(epoch_keys))
    return carry, jax.tree.map(jnp.mean, stats), key


def adaptive_kl_coeff(kl_coeff: jax.Array, kl: jax.Array, kl_target: float) -> jax.Array:
    """The KL penalty weight for the next update (Schulman et al., 2017, sec. 4; RLlib's rule).

    ``1.5 * kl_coeff`` when the measured ``kl`` exceeds twice ``kl_target``, ``0.5 * kl_coeff``
    when it is below half of it, else unchanged.
    """
    return jnp.where(kl > 2.0 * kl_target, kl_coeff * 1.5,
                     jnp.where(kl < 0.5 * kl_target, kl_coeff * 0.5, kl_coeff))


def normalize_advantages(advantages: jax.Array, axis_name: str | None = None) -> jax.Array:
    """``(A - mean(A)) / (std(A) + 1e-8)``, with the statistics over the batch of every device."""
    mean = pmean(advantages.mean(), axis_name)
    std = jnp.sqrt(pmean(jnp.mean(jnp.square(advantages - mean)), axis_name))
    return (advantages - mean) / (std + 1e-8)


def explained_variance(targets: jax.Array, values: jax.Array, axis_name: str | None = None
                       ) -> jax.Array:
    """``1 - Var(targets - values) / Var(targets)`` over the batch of every device.

    1 when the values predict the targets exactly, 0 when they do no better than the targets'
    mean (the shards of every device have the same size).
    """

    def var(x):
        mean = pmean(jnp.mean(x), axis_name)
        return pmean(jnp.mean(jnp.square(x - mean)), axis_name)

    return 1.0 - var(targets - values) / (var(targets) + 1e-8)


class ActorCriticFns(NamedTuple):
    """An actor-critic network behind an observation filter, as pure functions.

    Attributes:
      obs_filter: the observation filter (``init``/``update``/``apply`` of its statistics).
      init_params: ``init_params(key) -> params``.
      forward: ``forward(params, filter_state, obs [N, ...]) -> (dist, value [N])``.
      evaluate: ``evaluate(params, filter_state, batch [T, B]) -> (dist, v_t, v_tp1)``: the
        distribution over the ``T * B`` (time-major, flattened) observations and the values of
        ``obs`` and ``next_obs`` ``[T, B]``, from one network call.
      act: ``act(policy, obs [N, ...], key, explore) -> (action, extras)``: a sample of the
        distribution (its mode without ``explore``), with ``action_logp`` and ``vf_preds``
        ``[N]`` in ``extras``; ``policy`` is a ``NetworkPolicy``.
    """

    obs_filter: Filter
    init_params: Callable
    forward: Callable
    evaluate: Callable
    act: Callable


def make_actor_critic_fns(spec: EnvSpec, model: Any, observation_filter: str,
                          networks: Any = None) -> ActorCriticFns:
    """``ActorCriticFns`` of ``networks`` (default: the catalog's actor-critic for ``spec`` and
    the ``model`` config) behind the filter named ``observation_filter``."""
    if getattr(model, "recurrent", False) and networks is None:
        raise ConfigError("model.use_lstm/use_gru (recurrent policies) are supported by PPO, PG, "
                          "A2C, A3C, IMPALA and APPO; drop them for this algorithm")
    net = networks if networks is not None else catalog.make_actor_critic(spec, model)
    obs_filter = get_filter(observation_filter)

    def init_params(key):
        return net.init(key, jnp.zeros((1, *spec.obs_shape), spec.obs_dtype))

    def forward(params, filter_state, obs):
        dist_params, value = net.apply(params, obs_filter.apply(filter_state, obs))
        if spec.action_mask is not None:
            # The mask is read from the unfiltered observation.
            dist_params = catalog.mask_logits(dist_params, catalog.action_mask(spec, obs))
        return catalog.make_distribution(spec, dist_params, model), value

    def evaluate(params, filter_state, batch: Transition):
        T, B = batch.reward.shape
        flat = lambda x: x.reshape((T * B, *x.shape[2:]))  # noqa: E731
        obs = jnp.concatenate([flat(batch.obs), flat(batch.next_obs)])
        dist_params, values = net.apply(params, obs_filter.apply(filter_state, obs))
        dist_params = jax.tree.map(lambda x: x[: T * B], dist_params)
        if spec.action_mask is not None:
            dist_params = catalog.mask_logits(dist_params,
                                              catalog.action_mask(spec, flat(batch.obs)))
        dist = catalog.make_distribution(spec, dist_params, model)
        return dist, values[: T * B].reshape(T, B), values[T * B:].reshape(T, B)

    def act(policy: NetworkPolicy, obs: jax.Array, key: jax.Array, explore: bool = True):
        dist, value = forward(policy.params, policy.obs_filter, obs)
        action = dist.sample(key) if explore else dist.mode()
        return action, {"action_logp": dist.log_prob(action), "vf_preds": value}

    return ActorCriticFns(obs_filter, init_params, forward, evaluate, act)


class RecurrentActorCriticFns(NamedTuple):
    """A recurrent actor-critic network (``model.use_lstm``/``use_gru``) behind an observation
    filter, as pure functions.

    Attributes:
      obs_filter: the observation filter.
      init_params: ``init_params(key) -> params``.
      unroll: ``unroll(params, filter_state, inputs, state) -> (dist, value [L * N], states)``
        over time-major sequences: ``inputs`` holds ``obs``, ``resets``, ``prev_action`` and
        ``prev_reward``, each ``[L, N, ...]``; ``dist`` and ``value`` are flattened
        ``l * N + n``; ``states`` the state after each step (each ``[L, N, H]``).
      evaluate: ``evaluate(params, filter_state, batch [T, B]) -> (sequences, v_t, v_tp1,
        dist)``: the batch's inputs cut into ``model.max_seq_len`` sequences (``ops.sequences.
        Sequences``), the values of ``obs`` and ``next_obs`` ``[T, B]`` (``next_obs`` with
        the state after its step), and the distribution over the sequences' steps (``[L * S]``,
        see ``per_step``).
      act: ``act(policy, obs, key, explore)`` from the initial state (one step, no memory).
      recurrent: the step-by-step acting with state (``RecurrentFns``).
      max_seq_len: steps per training sequence.
    """

    obs_filter: Filter
    init_params: Callable
    unroll: Callable
    evaluate: Callable
    act: Callable
    recurrent: RecurrentFns
    max_seq_len: int


def make_recurrent_fns(spec: EnvSpec, model: Any, observation_filter: str
                       ) -> RecurrentActorCriticFns:
    """``RecurrentActorCriticFns`` of the catalog's recurrent actor-critic for ``spec``."""
    net = make_recurrent_actor_critic(spec, model)
    obs_filter = get_filter(observation_filter)
    action_dtype = jnp.dtype(spec.action_dtype)

    def zero_inputs(obs):
        L, N = obs.shape[:2]
        return {"obs": obs, "resets": jnp.zeros((L, N), bool),
                "prev_action": jnp.zeros((L, N, *spec.action_shape), action_dtype),
                "prev_reward": jnp.zeros((L, N), jnp.float32)}

    def init_params(key):
        inputs = zero_inputs(jnp.zeros((1, 1, *spec.obs_shape), spec.obs_dtype))
        return net.init(key, inputs["obs"], initial_state(model, 1), inputs["resets"],
                        inputs["prev_action"], inputs["prev_reward"])

    def unroll(params, filter_state, inputs, state):
        obs = inputs["obs"]
        L, N = obs.shape[:2]
        dist_params, value, states = net.apply(
            params, obs_filter.apply(filter_state, obs), tuple(state), inputs["resets"],
            inputs["prev_action"], inputs["prev_reward"])
        if spec.action_mask is not None:
            flat_obs = obs.reshape((L * N, *obs.shape[2:]))
            dist_params = catalog.mask_logits(dist_params, catalog.action_mask(spec, flat_obs))
        return catalog.make_distribution(spec, dist_params, model), value, states

    def evaluate(params, filter_state, batch: Transition):
        T, B = batch.reward.shape
        inputs = {"obs": batch.obs, "resets": episode_starts(batch.terminated, batch.truncated),
                  "prev_action": batch.prev_action, "prev_reward": batch.prev_reward}
        seqs = chop_into_sequences(inputs, tuple(batch.state_in), model.max_seq_len)
        L, S = seqs.mask.shape
        dist, values, states = unroll(params, filter_state, seqs.features, seqs.initial_state)
        v_t = unchop(values.reshape(L, S), T)
        # V(next_obs[t]) with the state after step t, its action and reward.
        after = tuple(unchop(s, T).reshape((T * B, -1)) for s in states)
        _, v_tp1, _ = unroll(params, filter_state, {
            "obs": batch.next_obs.reshape((1, T * B, *batch.next_obs.shape[2:])),
            "resets": jnp.zeros((1, T * B), bool),
            "prev_action": batch.action.reshape((1, T * B, *batch.action.shape[2:])),
            "prev_reward": batch.reward.reshape((1, T * B))}, after)
        return seqs, v_t, v_tp1.reshape(T, B), dist

    def step(policy, obs, state, prev_action, prev_reward, key, explore=True):
        dist, value, states = unroll(policy.params, policy.obs_filter, {
            "obs": obs[None], "resets": jnp.zeros((1, obs.shape[0]), bool),
            "prev_action": jnp.asarray(prev_action, action_dtype)[None],
            "prev_reward": jnp.asarray(prev_reward, jnp.float32)[None]}, state)
        action = dist.sample(key) if explore else dist.mode()
        extras = {"action_logp": dist.log_prob(action), "vf_preds": value}
        return action, extras, tuple(s[0] for s in states)

    def act(policy, obs, key, explore=True):
        n = obs.shape[0]
        action, extras, _ = step(policy, obs, initial_state(model, n),
                                 jnp.zeros((n, *spec.action_shape), action_dtype),
                                 jnp.zeros((n,), jnp.float32), key, explore)
        return action, extras

    recurrent = RecurrentFns(lambda n: initial_state(model, n), step)
    return RecurrentActorCriticFns(obs_filter, init_params, unroll, evaluate, act, recurrent,
                                   int(model.max_seq_len))


def sequence_data(data: dict, T: int, max_seq_len: int) -> dict:
    """``[T, B, ...]`` columns cut like ``chop_into_sequences`` and laid out sequence-major
    ``[S, L, ...]`` (so minibatches draw whole sequences)."""
    L = min(max_seq_len, T)
    return jax.tree.map(lambda x: jnp.swapaxes(chop(x, L), 0, 1), data)


def per_step(values: jax.Array, T: int, max_seq_len: int) -> jax.Array:
    """Per-step values of sequences flattened ``l * S + s`` (``unroll``'s order) back to the
    fragment's ``[T, B]`` (padding dropped)."""
    L = min(max_seq_len, T)
    return unchop(values.reshape((L, -1, *values.shape[1:])), T)


def time_major(minibatch: Any) -> Any:
    """Sequence-major ``[M, L, ...]`` columns back to time-major ``[L, M, ...]``."""
    return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), minibatch)


def flatten_time(x: jax.Array) -> jax.Array:
    """``[L, M, ...]`` -> ``[L * M, ...]`` (the order ``unroll`` flattens in)."""
    return x.reshape((x.shape[0] * x.shape[1], *x.shape[2:]))


def init_learner_state(key: jax.Array, init_params: Callable[[jax.Array], Any],
                       optimizer: optax.GradientTransformation, obs_filter: Filter,
                       obs_shape: tuple[int, ...]) -> LearnerState:
    """A fresh ``LearnerState``: params from one half of ``key``, the other half kept; empty
    filter statistics; zero counters."""
    key, init_key = jax.random.split(key)
    params = init_params(init_key)
    zero = jnp.zeros((), jnp.int32)
    return LearnerState(params=params, opt_state=optimizer.init(params), key=key,
                        obs_filter=obs_filter.init(obs_shape), num_updates=zero, env_steps=zero)


def advance_learner_state(state: Any, *, obs_filter: Any, env_steps: Any, **changes: Any) -> Any:
    """``state`` after one learner update: new filter statistics, one more update and
    ``env_steps`` more env steps trained on; ``changes`` replace further fields (``params``,
    ``opt_state``, ``key``). Works for every NamedTuple with ``LearnerState``'s fields."""
    return state._replace(
        obs_filter=obs_filter, num_updates=state.num_updates + 1,
        env_steps=state.env_steps + jnp.asarray(env_steps, state.env_steps.dtype), **changes)


def network_policy(state: Any) -> NetworkPolicy:
    """What ``act`` needs from a learner state: its params and filter statistics."""
    return NetworkPolicy(state.params, state.obs_filter)


def actor_critic_action_logp(config: Any, spec: Any, networks: Any = None) -> Callable:
    """``logp(policy, obs [N, ...], actions [N, ...]) -> [N]`` of a feed-forward actor-critic
    policy (off-policy estimation of ``input`` files)."""
    fns = make_actor_critic_fns(spec, config.model, config.observation_filter, networks)

    def logp(policy: Any, obs: jax.Array, actions: jax.Array) -> jax.Array:
        dist, _ = fns.forward(policy.params, policy.obs_filter, obs)
        return dist.log_prob(actions)

    return logp
