"""Evolution strategies (Salimans et al., 2017, "Evolution Strategies as a Scalable Alternative to
Reinforcement Learning") as an ``Algorithm`` triple.

Rollout workers evaluate antithetic pairs of perturbed policies ``theta + sigma * eps_i`` and
``theta - sigma * eps_i`` for whole episodes; ``update`` takes their returns and noise indices,
shapes the returns to centered ranks and takes one Adam step along
``-(sum_i (rank(R+_i) - rank(R-_i)) * eps_i) / (2 * num_pairs) + l2_coeff * theta`` (the formula of
OpenAI's ``es-distributed`` and RLlib, which leave ``1 / sigma`` to the step size).

Noise: ``eps_i`` is row ``i`` of a shared table of ``noise_size`` standard-normal rows that is
never built: ``noise_rows`` draws row ``i`` from a fixed key folded with ``i`` (counter-based
Threefry), so the driver and every worker agree on it without shipping or storing anything, and
``update`` stays a pure function of ``(state, batch)``. (A materialized table closed over by the
jitted update would be embedded in the compiled program: ~1.5 s of compile time for 10M floats.)
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from jrl import registry
from jrl.algorithms import toolkit
from jrl.config import CommonConfig, field, to_dict
from jrl.errors import ConfigError
from jrl.networks import catalog
from jrl.ops.filters import FilterState, get_filter, merge_filter_states
from jrl.types import Algorithm, AlgorithmDef, EnvSpec, LearnerState, NetworkPolicy

# Seed of the shared noise table (RLlib's and es-distributed's table is seeded with 123 too).
NOISE_SEED = 123
# Rows of noise generated at a time inside ``update`` (bounds its memory at CHUNK x num_params).
NOISE_CHUNK = 64


@dataclasses.dataclass(frozen=True, kw_only=True)
class ESConfig(CommonConfig):
    """ES settings (RLlib names) on top of the common ones.

    Attributes:
      episodes_per_batch: minimum perturbed episodes per iteration (each antithetic pair counts
        two); ``ceil(episodes_per_batch / 2)`` pairs are evaluated per sampling round, split
        evenly over the workers.
      train_batch_size: minimum env steps per iteration: sampling rounds repeat until the
        perturbed episodes add up to this many steps.
      noise_stdev: standard deviation ``sigma`` of the parameter perturbations.
      stepsize: Adam's step size.
      l2_coeff: weight decay added to the ES gradient before Adam.
      noise_size: rows of the shared noise table; noise indices are drawn uniformly from
        ``[0, noise_size)``. Rows are generated on demand from a fixed seed, so the size costs
        no memory or start-up time.
      eval_prob: probability per perturbation pair of also running one episode with the
        unperturbed policy (no action noise); reported as ``unperturbed_reward_mean``.
      report_length: ``unperturbed_reward_mean`` averages the per-iteration means of this many
        most recent iterations that ran unperturbed episodes.
      action_noise_std: Gaussian noise added to continuous actions in perturbed episodes.
      return_proc_mode: how returns are shaped; ``centered_rank`` is the one ES uses.
      observation_filter: ``MeanStdFilter`` (default, as in RLlib) or ``NoFilter``; statistics
        come from every episode's observations and are fixed within an iteration.
    """

    episodes_per_batch: int = field(1000, min=1)
    train_batch_size: int = field(10_000, min=0)
    noise_stdev: float = field(0.02, gt=0.0)
    stepsize: float = field(0.01, gt=0.0)
    l2_coeff: float = field(0.005, min=0.0)
    noise_size: int = field(250_000_000, min=1, max=2**31 - 1)
    eval_prob: float = field(0.003, min=0.0, max=1.0)
    report_length: int = field(10, min=1)
    action_noise_std: float = field(0.01, min=0.0)
    return_proc_mode: str = field("centered_rank", choices=("centered_rank",))
    observation_filter: str = field("MeanStdFilter", choices=("NoFilter", "MeanStdFilter"))

    @property
    def num_pairs(self) -> int:
        """Antithetic pairs evaluated per sampling round over all workers."""
        per_worker = -(-self.episodes_per_batch // (2 * max(1, self.num_workers)))
        return per_worker * max(1, self.num_workers)


DEFAULT_CONFIG: dict[str, Any] = to_dict(ESConfig())

# The one-network learner state and what act needs (fields documented in ``jrl.types``).
ESState = LearnerState
ESPolicy = NetworkPolicy


class ESBatch(NamedTuple):
    """Results of the perturbed episodes of one iteration, padded to ``[P]`` pairs.

    Attributes:
      noise_indices: row of the noise table of each pair, int32 ``[P]``.
      returns: episode returns of ``theta + sigma * eps`` and ``theta - sigma * eps``, float32
        ``[P, 2]``.
      lengths: episode lengths, int32 ``[P, 2]``.
      mask: which pairs are real (padding is False), bool ``[P]``.
      obs_filter: statistics of the observations seen in these episodes (merged into the state),
        ``FilterState``.
    """

    noise_indices: jax.Array
    returns: jax.Array
    lengths: jax.Array
    mask: jax.Array
    obs_filter: FilterState


def noise_rows(indices: jax.Array, dim: int) -> jax.Array:
    """Rows ``indices`` ``[N]`` of the shared noise table: standard normals ``[N, dim]``.

    Row ``i`` depends on ``i`` and ``dim`` only (not on the other indices, the batch size, jit or
    the process), which is what lets the driver and every worker agree on it.
    """
    chex.assert_rank(indices, 1)
    base = jax.random.PRNGKey(NOISE_SEED)
    return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(base, i), (dim,)))(
        indices.astype(jnp.uint32))


def compute_centered_ranks(x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Fitness shaping: each entry's rank among all entries of ``x``, scaled to ``[-0.5, 0.5]``.

    The smallest value maps to -0.5 and the largest to 0.5 (``rank / (n - 1) - 0.5`` as in
    es-distributed and RLlib). Ties share their average rank, so equal returns get equal
    weights (RLlib breaks ties by position instead). With ``mask`` (broadcastable to ``x``) only
    the True entries are ranked; the others get 0. A single entry gets 0.
    """
    x = jnp.asarray(x, jnp.float32)
    valid = jnp.ones(x.shape, bool) if mask is None else jnp.broadcast_to(mask, x.shape)
    flat, valid = x.ravel(), valid.ravel()
    n = jnp.sum(valid)
    ranked = jnp.sort(jnp.where(valid, flat, jnp.inf))
    first = jnp.searchsorted(ranked, flat, side="left")
    last = jnp.searchsorted(ranked, flat, side="right") - 1
    ranks = 0.5 * (first + last).astype(jnp.float32)
    centered = ranks / jnp.maximum(n - 1, 1).astype(jnp.float32) - 0.5
    return jnp.where(valid & (n > 1), centered, 0.0).reshape(x.shape)


def weighted_noise_sum(weights: jax.Array, noise_indices: jax.Array, dim: int,
                       chunk: int = NOISE_CHUNK) -> jax.Array:
    """``sum_i weights[i] * noise_rows(noise_indices)[i]`` ``[dim]``, ``chunk`` rows at a time."""
    chex.assert_equal_shape([weights, noise_indices])
    chex.assert_rank(weights, 1)
    n = weights.shape[0]
    chunk = max(1, min(chunk, n))
    pad = -n % chunk
    weights = jnp.pad(weights.astype(jnp.float32), (0, pad)).reshape(-1, chunk)
    noise_indices = jnp.pad(noise_indices, (0, pad)).reshape(-1, chunk)

    def add(total, xs):
        w, idx = xs
        return total + w @ noise_rows(idx, dim), None

    total, _ = jax.lax.scan(add, jnp.zeros((dim,), jnp.float32), (weights, noise_indices))
    return total


def es_gradient(shaped_returns: jax.Array, noise_indices: jax.Array, mask: jax.Array,
                dim: int) -> jax.Array:
    """The ES ascent direction ``sum_i (s+_i - s-_i) eps_i / (2 n)`` over the ``n`` real pairs.

    Args:
      shaped_returns: shaped returns of the ``+`` and ``-`` perturbation of each pair ``[P, 2]``.
      noise_indices: noise row of each pair ``[P]``.
      mask: real pairs ``[P]`` (padding contributes nothing).
      dim: number of parameters.
    """
    chex.assert_rank([shaped_returns, noise_indices, mask], [2, 1, 1])
    weights = (shaped_returns[:, 0] - shaped_returns[:, 1]) * mask
    num_returns = 2.0 * jnp.maximum(jnp.sum(mask), 1).astype(jnp.float32)
    return weighted_noise_sum(weights, noise_indices, dim) / num_returns


def make_es(config: ESConfig, networks: Any = None, spec: EnvSpec | None = None,
            axis_name: str | None = None) -> Algorithm:
    """Builds ES's ``Algorithm`` for ``spec``; ``networks`` defaults to the catalog's
    deterministic policy (greedy action: argmax of the logits, or the clipped mean)."""
    if spec is None:
        raise ConfigError("make_es needs the env spec")
    if axis_name is not None:
        raise ConfigError("ES updates on one device: its learner step is one small vector op")
    net = networks if networks is not None else catalog.make_deterministic_policy(
        spec, config.model)
    obs_filter = get_filter(config.observation_filter)
    optimizer = toolkit.make_optimizer(config.stepsize)
    catalog.reject_action_mask(spec, "ES")
    if not (spec.discrete or spec.continuous):
        raise ConfigError(f"ES needs a Discrete or Box action space, got a {spec.action_kind} "
                          "one; use PPO, A2C, PG, IMPALA or APPO")
    if not spec.discrete:
        low = jnp.reshape(jnp.asarray(spec.action_low, jnp.float32), spec.action_shape)
        high = jnp.reshape(jnp.asarray(spec.action_high, jnp.float32), spec.action_shape)

    def init_params(key: jax.Array):
        return net.init(key, jnp.zeros((1, *spec.obs_shape), spec.obs_dtype))

    def init(key: jax.Array) -> ESState:
        return toolkit.init_learner_state(key, init_params, optimizer, obs_filter, spec.obs_shape)

    def act(policy: ESPolicy, obs: jax.Array, key: jax.Array, explore: Any = True):
        """Greedy actions; with ``explore`` (a bool, or a traced bool when vmapped) continuous
        actions get ``action_noise_std`` Gaussian noise before clipping."""
        out = net.apply(policy.params, obs_filter.apply(policy.obs_filter, obs))
        if spec.discrete:
            return jnp.argmax(out, axis=-1).astype(jnp.int32), {}
        noise = config.action_noise_std * jax.random.normal(key, out.shape, out.dtype)
        action = out + jnp.where(explore, noise, jnp.zeros_like(noise))
        return jnp.clip(action, low, high), {}

    def update(state: ESState, batch: ESBatch) -> tuple[ESState, dict[str, jax.Array]]:
        chex.assert_rank([batch.returns, batch.noise_indices, batch.mask], [2, 1, 1])
        theta, unravel = ravel_pytree(state.params)
        mask = batch.mask.astype(jnp.float32)
        shaped = compute_centered_ranks(batch.returns, batch.mask[:, None])
        g = es_gradient(shaped, batch.noise_indices, mask, theta.size)
        # Adam minimizes: descend along minus the ascent direction, plus weight decay.
        grad = -g + config.l2_coeff * theta
        updates, opt_state = optimizer.update(unravel(grad), state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        step = ravel_pytree(updates)[0]
        num_pairs = jnp.sum(mask)
        returns = jnp.where(batch.mask[:, None], batch.returns, jnp.nan)
        steps = jnp.sum(batch.lengths * batch.mask[:, None])
        metrics = {
            "weights_norm": jnp.sum(jnp.square(theta)),
            "grad_norm": jnp.sum(jnp.square(g)),
            "update_ratio": jnp.linalg.norm(step) / (jnp.linalg.norm(theta) + 1e-8),
            "num_pairs": num_pairs,
            "perturbed_return_mean": jnp.nanmean(returns),
            "perturbed_return_max": jnp.nanmax(returns),
            "perturbed_return_min": jnp.nanmin(returns),
        }
        new_state = toolkit.advance_learner_state(
            state, obs_filter=merge_filter_states(state.obs_filter, batch.obs_filter),
            env_steps=steps.astype(jnp.int32), params=params, opt_state=opt_state,
            key=jax.random.split(state.key)[0])
        return new_state, metrics

    return Algorithm(init=init, update=update, act=act, policy=toolkit.network_policy, name="ES")


def example_batch(config: ESConfig, spec: EnvSpec, key: jax.Array) -> ESBatch:
    """One iteration's results of ``num_pairs`` random antithetic pairs (none padded), with the
    observation statistics of random episodes."""
    k_index, k_ret, k_len, k_obs = jax.random.split(key, 4)
    P = config.num_pairs
    lengths = jax.random.randint(k_len, (P, 2), 1, 50)
    obs = jax.random.normal(k_obs, (16, *spec.obs_shape))
    stats = FilterState(count=jnp.asarray(16.0, jnp.float32), mean=obs.mean(0),
                        m2=jnp.square(obs - obs.mean(0)).sum(0))
    return ESBatch(noise_indices=jax.random.randint(k_index, (P,), 0, config.noise_size),
                   returns=jax.random.normal(k_ret, (P, 2)) * 10.0,
                   lengths=lengths.astype(jnp.int32), mask=jnp.ones((P,), bool),
                   obs_filter=stats)


ALGORITHM_DEF = AlgorithmDef(
    name="ES",
    config_class=ESConfig,
    make=make_es,
    plan="evolution",
    example_batch=example_batch,
    model="deterministic",
    noise_rows=noise_rows,
    batch_type=ESBatch,
)
__getattr__ = registry.trainer_class_getattr(__name__, "ES")
