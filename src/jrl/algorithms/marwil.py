"""MARWIL (Wang et al., 2018: Exponentially Weighted Imitation Learning for Batched Historical
Data) and BC (MARWIL with ``beta = 0``) as ``Algorithm`` records on the offline plan.

MARWIL imitates the logged actions weighted by ``exp(beta * A / c)``, where ``A = R - V(s)`` is
the advantage of the discounted return ``R`` over a learned value function and ``c`` the square
root of a moving average of ``A^2`` (RLlib's ``moving_average_sqd_adv_norm``). With ``beta = 0``
every weight is 1: plain behaviour cloning, and no value function is trained.

``update`` takes a time-major ``[T, B]`` batch (recorded or sampled, see
``jrl.execution.offline``), computes the returns ``R`` with the current value function
(bootstrapping where a lane or recorded row ends without the episode ending) and takes one
gradient step. The same ``update`` trains inside one jit over a whole in-memory data set
(``jrl.execution.offline.fit_epochs``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from jrl import registry
from jrl.algorithms import toolkit
from jrl.algorithms.examples import train_batch_example
from jrl.config import CommonConfig, InputConfig, field, to_dict
from jrl.errors import ConfigError
from jrl.ops.filters import FilterState
from jrl.ops.parallel import all_gather, num_devices, pmean
from jrl.ops.returns import gae
from jrl.types import Algorithm, AlgorithmDef, EnvSpec, NetworkPolicy, Transition


@dataclasses.dataclass(frozen=True, kw_only=True)
class MARWILConfig(InputConfig, CommonConfig):
    """MARWIL settings (RLlib names and defaults) on top of the common and input keys.

    Attributes:
      beta: advantage exponent; 0 is behaviour cloning.
      vf_coeff: weight of the value function loss.
      moving_average_sqd_adv_norm_start: initial moving average of the squared advantage.
      moving_average_sqd_adv_norm_update_rate: rate of that moving average.
      train_batch_size: steps per update (a ``[T, B]`` batch of at least this many).
    """

    lr: float = field(1e-4, gt=0.0)
    train_batch_size: int = field(2000, min=1)
    beta: float = field(1.0, min=0.0)
    vf_coeff: float = field(1.0, min=0.0)
    moving_average_sqd_adv_norm_start: float = field(100.0, gt=0.0)
    moving_average_sqd_adv_norm_update_rate: float = field(1e-8, min=0.0, max=1.0)


DEFAULT_CONFIG: dict[str, Any] = to_dict(MARWILConfig())


class MARWILState(NamedTuple):
    """Learner state of MARWIL and BC: ``jrl.types.LearnerState``'s arrays plus the moving
    average of the squared advantage.

    Attributes:
      params, opt_state, key, obs_filter, num_updates, env_steps: as in
        ``jrl.types.LearnerState`` (``env_steps`` counts the steps trained on).
      moving_average_sqd_adv_norm: the moving average of ``A^2``, float32 ``[]``.
    """

    params: Any
    opt_state: Any
    key: jax.Array
    obs_filter: FilterState
    moving_average_sqd_adv_norm: jax.Array
    num_updates: jax.Array
    env_steps: jax.Array


MARWILPolicy = NetworkPolicy


def update_sqd_adv_norm(average: jax.Array, adv_squared: jax.Array, rate: float) -> jax.Array:
    """The moving average of the squared advantage norm after one batch:
    ``average + rate * (mean(A^2) - average)``."""
    return average + rate * (adv_squared - average)


def marwil_loss(logp: jax.Array, values: jax.Array, returns: jax.Array,
                sqd_adv_norm: jax.Array, *, beta: float, vf_coeff: float
                ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """MARWIL's loss for ``[N]`` samples, as in RLlib.

    ``A = R - V``; ``v_loss = 0.5 * mean(A^2)``;
    ``policy_loss = -mean(exp(beta * A / (1e-8 + sqrt(sqd_adv_norm))) * logp)`` with the
    weights held constant; ``total = policy_loss + vf_coeff * v_loss``. With ``beta == 0`` (BC)
    the weights are 1 and there is no value loss.

    Args:
      logp: log-probabilities of the logged actions under the current policy ``[N]``.
      values: ``V(obs)`` ``[N]``.
      returns: discounted returns ``R`` ``[N]``.
      sqd_adv_norm: ``[]`` the moving average of ``A^2``, already updated with this batch
        (``update_sqd_adv_norm``).
      beta, vf_coeff: MARWIL's coefficients.

    Returns:
      ``(total, stats)``.
    """
    chex.assert_rank([logp, values, returns], 1)
    chex.assert_equal_shape([logp, values, returns])
    if beta == 0.0:
        policy_loss = -jnp.mean(logp)
        return policy_loss, {"policy_loss": policy_loss, "vf_loss": jnp.zeros(()),
                             "total_loss": policy_loss}
    advantages = returns - values
    vf_loss = 0.5 * jnp.mean(jnp.square(advantages))
    weights = jax.lax.stop_gradient(jnp.exp(beta * advantages / (1e-8 + jnp.sqrt(sqd_adv_norm))))
    policy_loss = -jnp.mean(weights * logp)
    total = policy_loss + vf_coeff * vf_loss
    return total, {"policy_loss": policy_loss, "vf_loss": vf_loss, "total_loss": total,
                   "mean_advantage_weight": jnp.mean(weights)}


def discounted_returns_of(batch: Transition, values: jax.Array, next_values: jax.Array,
                          gamma: float) -> jax.Array:
    """Returns ``R_t`` ``[T, B]`` of a time-major batch: discounted rewards to the episode's
    end, bootstrapped from ``next_values`` where a lane or recorded row stops first
    (truncated steps and the last step)."""
    _, returns = gae(batch.reward, values, next_values, batch.terminated, batch.truncated,
                     gamma, 1.0)
    return returns


def make_marwil(config: MARWILConfig, networks: Any = None, spec: EnvSpec | None = None,
                axis_name: str | None = None) -> Algorithm:
    """Builds MARWIL's (or BC's) ``Algorithm``; ``networks`` defaults to the catalog's
    actor-critic. With ``axis_name`` gradients, the advantage statistics and filter statistics
    are averaged over that mapped device axis."""
    if spec is None:
        raise ConfigError("make_marwil needs the env spec")
    fns = toolkit.make_actor_critic_fns(spec, config.model, config.observation_filter, networks)
    optimizer = toolkit.make_optimizer(config.lr, grad_clip=config.grad_clip)
    beta = float(config.beta)

    def init(key: jax.Array) -> MARWILState:
        state = toolkit.init_learner_state(key, fns.init_params, optimizer, fns.obs_filter,
                                           spec.obs_shape)
        return MARWILState(**state._asdict(), moving_average_sqd_adv_norm=jnp.asarray(
            config.moving_average_sqd_adv_norm_start, jnp.float32))

    def update(state: MARWILState, batch: Transition) -> tuple[MARWILState, dict]:
        T, B = batch.reward.shape
        flat = lambda x: x.reshape((T * B, *x.shape[2:]))  # noqa: E731
        obs, actions = flat(batch.obs), flat(batch.action)
        average = state.moving_average_sqd_adv_norm
        extra = {}
        if beta == 0.0:
            returns = jnp.zeros(T * B)
        else:
            _, values, next_values = fns.evaluate(state.params, state.obs_filter, batch)
            returns = discounted_returns_of(batch, values, next_values, config.gamma)
            # A^2 of the whole batch (every device's part) moves the average, as on one device.
            adv_squared = pmean(jnp.mean(jnp.square(returns - values)), axis_name)
            average = update_sqd_adv_norm(average, adv_squared,
                                          config.moving_average_sqd_adv_norm_update_rate)
            extra["vf_explained_var"] = toolkit.explained_variance(returns, values, axis_name)
            returns = flat(returns)

        def loss_fn(params):
            dist, value = fns.forward(params, state.obs_filter, obs)
            return marwil_loss(dist.log_prob(actions), value, returns, average, beta=beta,
                               vf_coeff=config.vf_coeff)

        step = toolkit.gradient_step(loss_fn, optimizer, axis_name, has_aux=True)
        params, opt_state, (_, stats), grads = step(state.params, state.opt_state)
        stats = pmean(stats, axis_name)
        stats.update(extra, grad_gnorm=optax.tree.norm(grads), moving_average_sqd_adv_norm=average)
        obs_filter = fns.obs_filter.update(state.obs_filter, all_gather(obs, axis_name))
        return toolkit.advance_learner_state(
            state, obs_filter=obs_filter, env_steps=T * B * num_devices(axis_name),
            params=params, opt_state=opt_state, moving_average_sqd_adv_norm=average), stats

    return Algorithm(init=init, update=update, act=fns.act, policy=toolkit.network_policy,
                     name="MARWIL")


def action_logp(config: MARWILConfig, spec: EnvSpec, networks: Any = None):
    """``logp(policy, obs [N, ...], actions [N, ...]) -> [N]``: the policy's log-probability
    of given actions (off-policy estimation)."""
    fns = toolkit.make_actor_critic_fns(spec, config.model, config.observation_filter, networks)

    def logp(policy: MARWILPolicy, obs: jax.Array, actions: jax.Array) -> jax.Array:
        dist, _ = fns.forward(policy.params, policy.obs_filter, obs)
        return dist.log_prob(actions)

    return logp


ALGORITHM_DEF = AlgorithmDef(
    name="MARWIL",
    config_class=MARWILConfig,
    make=make_marwil,
    plan="offline",
    example_batch=train_batch_example,
    action_logp=action_logp,
)
__getattr__ = registry.trainer_class_getattr(__name__, "MARWIL")
