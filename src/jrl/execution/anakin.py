"""Fully-jitted training ("Anakin"): a JAX env, ``act`` and ``update`` inside one ``lax.scan``.

The same ``Algorithm`` the gymnasium path uses (built by ``registry.make_algorithm``) runs here;
only the sampling moves into XLA. ``train_chunk`` advances ``iterations`` learner iterations per
call, so a host loop can report progress between chunks; ``jax.vmap`` over ``init``'s keys trains
independent seeds at once::

    env = make_jax_env("gymnax:CartPole-v1")
    anakin = make_anakin("PPO", env, config, iterations=50)
    runners = jax.vmap(anakin.init)(jax.random.split(jax.random.PRNGKey(0), 8))
    runners, metrics = jax.jit(jax.vmap(anakin.train_chunk))(runners)   # metrics [seeds, 50]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jrl.errors import ConfigError
from jrl.execution.learner import replay_item_example
from jrl.ops.filters import get_filter
from jrl.registry import get_algorithm_def, make_algorithm
from jrl.replay.uniform import ReplayState, replay_add, replay_init, replay_sample
from jrl.rollout.jax_envs import JaxEnv
from jrl.types import Algorithm, AlgorithmDef, Transition


class RunnerState(NamedTuple):
    """Everything the jitted loop carries, per seed."""

    train_state: Any
    env_state: Any
    obs: jax.Array
    key: jax.Array
    episode_return: jax.Array
    episode_length: jax.Array
    replay: ReplayState | None
    recurrent: Any = None  # (state, prev_action [B, ...], prev_reward [B]) of a recurrent policy


class Anakin(NamedTuple):
    """``init(key) -> RunnerState`` and ``train_chunk(runner) -> (runner, metrics)``; metrics
    are per iteration (``[iterations]``), including ``episode_reward_sum``, ``episodes`` and
    ``timesteps``."""

    init: Callable[[jax.Array], RunnerState]
    train_chunk: Callable[[RunnerState], tuple[RunnerState, dict]]
    algorithm: Algorithm
    steps_per_iteration: int


def make_anakin(definition: AlgorithmDef | str, env: JaxEnv, config: Any, iterations: int = 10,
                algorithm: Algorithm | None = None) -> Anakin:
    """Builds the fully-jitted loop for the algorithm ``definition`` (a record or a registered
    name) on ``env``.

    Each iteration steps ``num_envs_per_worker`` envs for ``T`` steps, then: on-policy
    algorithms run one ``update`` on the ``[T, B]`` batch (``T`` covers ``train_batch_size``
    like the gymnasium plan); off-policy ones add the fragment to a jittable replay buffer and
    run ``updates_per_fragment`` updates once ``learning_starts`` steps were sampled.
    """
    if isinstance(definition, str):
        definition = get_algorithm_def(definition)
    if not definition.jittable:
        raise ConfigError(f"{definition.name} ({definition.plan.replace('_', ' ')} plan) does "
                          "not run in the fully-jitted loop for JAX envs; use a gymnasium env id")
    algorithm = algorithm or make_algorithm(definition, config, env.spec)
    B = config.num_envs_per_worker
    T = steps_per_env(definition, config)
    off_policy = definition.plan == "off_policy"
    rnn = algorithm.recurrent
    if off_policy:
        postprocess = definition.require("postprocess")

    def init(key: jax.Array) -> RunnerState:
        key, init_key, reset_key = jax.random.split(key, 3)
        train_state = algorithm.init(init_key)
        obs, env_state = jax.vmap(env.reset)(jax.random.split(reset_key, B))
        replay = None
        if off_policy:
            replay = replay_init(replay_item_example(definition, config, env.spec),
                                 config.buffer_size)
        zeros = jnp.zeros((B,), jnp.float32)
        carried = None
        if rnn is not None:
            carried = (rnn.initial_state(B), jnp.zeros((B, *env.spec.action_shape),
                                                       env.spec.action_dtype), zeros)
        return RunnerState(train_state, env_state, obs, key, zeros, zeros, replay, carried)

    def env_step(runner: RunnerState, _):
        key, act_key, step_key = jax.random.split(runner.key, 3)
        policy = algorithm.policy(runner.train_state)
        if rnn is None:
            action, extras = algorithm.act(policy, runner.obs, act_key, True)
        else:
            state, prev_action, prev_reward = runner.recurrent
            action, extras, state_out = rnn.act(policy, runner.obs, state, prev_action,
                                                prev_reward, act_key, True)
        step = jax.vmap(env.step)(jax.random.split(step_key, B), runner.env_state, action)
        logp = extras.get("action_logp", jnp.zeros((B,), jnp.float32))
        transition = Transition(runner.obs, action, step.reward, step.terminated,
                                step.truncated, step.final_obs, logp)
        done = step.terminated | step.truncated
        if rnn is not None:  # carry the state on; a lane whose episode ended starts afresh
            transition = transition._replace(state_in=state, prev_action=prev_action,
                                             prev_reward=prev_reward)
            keep = ~done
            runner = runner._replace(recurrent=(
                tuple(jnp.where(keep[:, None], s, 0.0) for s in state_out),
                jnp.where(keep.reshape((B,) + (1,) * (action.ndim - 1)), action,
                          jnp.zeros_like(action)),
                jnp.where(keep, step.reward, 0.0)))
        ep_return = runner.episode_return + step.reward
        ep_length = runner.episode_length + 1
        finished = (jnp.where(done, ep_return, 0.0).sum(), jnp.where(done, ep_length, 0.0).sum(),
                    done.sum())
        runner = runner._replace(
            env_state=step.state, obs=step.obs, key=key,
            episode_return=jnp.where(done, 0.0, ep_return),
            episode_length=jnp.where(done, 0.0, ep_length))
        if off_policy:  # the sampled steps count for the epsilon schedule as they happen
            ts = runner.train_state
            runner = runner._replace(train_state=ts._replace(env_steps=ts.env_steps + B))
        return runner, (transition, finished)

    def learn_on_policy(runner: RunnerState, batch: Transition):
        train_state, metrics = algorithm.update(runner.train_state, batch)
        return runner._replace(train_state=train_state), metrics

    def learn_off_policy(runner: RunnerState, batch: Transition):
        ts, replay, metrics = replay_learn(algorithm, config, postprocess, runner.train_state,
                                           runner.replay, batch)
        return runner._replace(train_state=ts, replay=replay), metrics

    learn = learn_off_policy if off_policy else learn_on_policy

    def iteration(runner: RunnerState, _):
        runner, (batch, finished) = jax.lax.scan(env_step, runner, None, length=T)
        runner, metrics = learn(runner, batch)
        reward_sum, length_sum, episodes = jax.tree.map(jnp.sum, finished)
        metrics = dict(metrics, episode_reward_sum=reward_sum, episode_len_sum=length_sum,
                       episodes=episodes, timesteps=jnp.asarray(T * B, jnp.int32))
        return runner, metrics

    def train_chunk(runner: RunnerState) -> tuple[RunnerState, dict]:
        return jax.lax.scan(iteration, runner, None, length=iterations)

    return Anakin(init=init, train_chunk=train_chunk, algorithm=algorithm,
                  steps_per_iteration=T * B)


def steps_per_env(definition: AlgorithmDef, config: Any) -> int:
    """Env steps ``T`` each env takes per learner iteration: one fragment for off-policy
    algorithms, enough fragments to cover ``train_batch_size`` for on-policy ones (as the
    gymnasium plans do)."""
    fragment = config.rollout_fragment_length
    if definition.plan == "off_policy":
        return fragment
    return fragment * max(1, math.ceil(
        config.train_batch_size / (fragment * config.num_envs_per_worker)))


def replay_learn(algorithm: Algorithm, config: Any, postprocess: Callable, ts: Any,
                 replay: ReplayState, batch: Transition) -> tuple[Any, ReplayState, dict]:
    """Off-policy learning inside the jitted loop, for one policy.

    ``batch`` (a ``[T, B]`` fragment) updates the observation filter and goes into ``replay``
    (after the algorithm's ``postprocess``, e.g. n-step); then ``updates_per_fragment`` updates
    on uniformly sampled batches run once ``learning_starts`` env steps were taken (before that
    the metrics are NaN, of the same shapes). Returns ``(train_state, replay, mean metrics)``.
    Shared by the single- and multi-agent loops.
    """
    ts = ts._replace(obs_filter=get_filter(config.observation_filter).update(
        ts.obs_filter, batch.obs))
    replay = replay_add(replay, postprocess(config, batch))

    def one_update(ts, _):
        key, sample_key = jax.random.split(ts.key)
        ts, metrics = algorithm.update(
            ts._replace(key=key), replay_sample(replay, sample_key, config.train_batch_size))
        # Per-sample td errors [N] are for prioritized replay; learner metrics stay scalars.
        return ts, {k: v for k, v in metrics.items() if k != "td_error"}

    def learn(ts):
        ts, metrics = jax.lax.scan(one_update, ts, None, length=config.updates_per_fragment)
        return ts, jax.tree.map(jnp.mean, metrics)

    metrics_shape = jax.eval_shape(learn, ts)[1]
    ts, metrics = jax.lax.cond(
        ts.env_steps >= config.learning_starts, learn,
        lambda ts: (ts, jax.tree.map(lambda s: jnp.full(s.shape, jnp.nan, s.dtype),
                                     metrics_shape)), ts)
    return ts, replay, metrics
