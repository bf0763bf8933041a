"""The fully-jitted loop for JAX multi-agent envs (``JaxMultiAgentEnv``: agents on a leading axis).

Agents map to policies once, at build time (``groups``: ``[P, k]`` agent indices, every policy
gets the same number ``k`` of agents). Policies' learner states are stacked on a leading policy
axis ``P``: acting is ``vmap``ped over it, each policy's batch folds its ``k`` agents into the env
batch axis (``[T, B * k]``), and the update is ``vmap``ped over the policies (``stacked=True``) or
run for one policy after another in the same jit (``stacked=False``, for comparison). Policies
with their own hyperparameters (``algorithms``: one per policy, built from the policy's
``config_overrides``; the learner states must keep the same shapes) update one after another,
each with its own algorithm. Policies outside ``train_mask`` keep their state bit for bit. One
shared policy is ``P = 1, k = A``.

Off-policy algorithms (DQN, SAC, ...) keep one jittable replay buffer per policy, stacked on the
policy axis like the learner states: each iteration adds every policy's ``[T, B * k]`` fragment
to its buffer and, once the policy's agents sampled ``learning_starts`` steps, runs its
``updates_per_fragment`` updates on batches drawn from its own buffer.

    anakin = make_multi_agent_anakin("PPO", env, config, groups=[[0], [1]], iterations=10)
    runners = jax.vmap(anakin.init)(seed_keys)
    runners, metrics = jax.jit(jax.vmap(anakin.train_chunk))(runners)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jrl.errors import ConfigError
from jrl.execution.anakin import replay_learn, steps_per_env
from jrl.execution.learner import replay_item_example
from jrl.registry import get_algorithm_def, make_algorithm
from jrl.replay.uniform import replay_init
from jrl.rollout.jax_envs import JaxMultiAgentEnv
from jrl.types import Algorithm, AlgorithmDef, Transition


class MultiAgentRunnerState(NamedTuple):
    """Per seed: ``train_state`` stacked over policies ``[P, ...]``, envs ``[B, A, ...]``."""

    train_state: Any
    env_state: Any
    obs: jax.Array
    key: jax.Array
    episode_return: jax.Array  # [B, A]
    episode_length: jax.Array  # [B]
    replay: Any = None         # off-policy: every policy's buffer, stacked [P, ...]


class MultiAgentAnakin(NamedTuple):
    """``init``/``train_chunk`` as ``Anakin``; metrics per iteration carry ``episode_reward_sum``
    (summed over agents), ``policy_reward_sum`` ``[P]``, ``episodes``, ``timesteps`` and the
    learner metrics with a trailing policy axis ``[P]``."""

    init: Callable[[jax.Array], MultiAgentRunnerState]
    train_chunk: Callable[[MultiAgentRunnerState], tuple[MultiAgentRunnerState, dict]]
    algorithm: Algorithm
    steps_per_iteration: int


def check_groups(groups: Sequence[Sequence[int]], num_agents: int) -> np.ndarray:
    """``groups`` as a ``[P, k]`` int array; ConfigError unless every agent is in exactly one
    group and all groups have the same size."""
    sizes = {len(g) for g in groups}
    if not groups or len(sizes) != 1 or 0 in sizes:
        raise ConfigError("the fully-jitted multi-agent loop needs every policy mapped to the "
                          f"same number (>= 1) of agents; got agents per policy "
                          f"{[list(g) for g in groups]}")
    index = np.asarray(groups, np.int32)
    if sorted(index.ravel().tolist()) != list(range(num_agents)):
        raise ConfigError(f"every one of the env's {num_agents} agents must map to exactly one "
                          f"policy; got {[list(g) for g in groups]}")
    return index


def make_multi_agent_anakin(definition: AlgorithmDef | str, env: JaxMultiAgentEnv, config: Any,
                            groups: Sequence[Sequence[int]], iterations: int = 10,
                            train_mask: Sequence[bool] | None = None,
                            algorithm: Algorithm | None = None,
                            stacked: bool = True,
                            algorithms: Sequence[Algorithm] | None = None,
                            configs: Sequence[Any] | None = None) -> MultiAgentAnakin:
    """Builds the multi-agent jitted loop (on-policy: PPO, A2C, PG; off-policy: DQN, SAC, ...).

    ``algorithms`` and ``configs`` (one per policy, same learner-state and replay shapes as
    ``algorithm``/``config``) give each policy its own update (its ``config_overrides``);
    acting stays ``algorithm``'s."""
    if isinstance(definition, str):
        definition = get_algorithm_def(definition)
    if not definition.jittable or definition.plan not in ("on_policy", "off_policy"):
        raise ConfigError(f"multi-agent JAX envs train on-policy (PPO, A2C, PG) or off-policy "
                          f"(DQN, SAC, ...) algorithms in the fully-jitted loop; "
                          f"{definition.name} uses the '{definition.plan}' plan")
    off_policy = definition.plan == "off_policy"
    algorithm = algorithm or make_algorithm(definition, config, env.spec)
    index = check_groups(groups, env.num_agents)
    P, k = index.shape
    if algorithms is not None:
        if len(algorithms) != P:
            raise ValueError(f"algorithms: one per policy ({P}), got {len(algorithms)}")
        stacked = False
    configs = list(configs) if configs is not None else [config] * P
    A = env.num_agents
    flat_index = jnp.asarray(index.ravel())
    mask = np.ones(P, bool) if train_mask is None else np.asarray(train_mask, bool)
    B = config.num_envs_per_worker
    T = steps_per_env(definition, config)

    def per_policy(x: jax.Array) -> jax.Array:
        """``[B, A, ...]`` -> ``[P, B * k, ...]`` (each policy's agents folded into the batch)."""
        x = x[:, flat_index].reshape((B, P, k) + x.shape[2:])
        return jnp.moveaxis(x, 1, 0).reshape((P, B * k) + x.shape[3:])

    def per_agent(x: jax.Array) -> jax.Array:
        """``[P, B * k, ...]`` -> ``[B, A, ...]``."""
        x = jnp.moveaxis(x.reshape((P, B, k) + x.shape[2:]), 0, 1).reshape((B, P * k) +
                                                                            x.shape[2:])
        return jnp.zeros((B, A) + x.shape[2:], x.dtype).at[:, flat_index].set(x)

    def init(key: jax.Array) -> MultiAgentRunnerState:
        key, init_key, reset_key = jax.random.split(key, 3)
        train_state = jax.vmap(algorithm.init)(jax.random.split(init_key, P))
        obs, env_state = jax.vmap(env.reset)(jax.random.split(reset_key, B))
        replay = None
        if off_policy:
            one = replay_init(replay_item_example(definition, config, env.spec),
                              config.buffer_size)
            replay = jax.tree.map(lambda x: jnp.broadcast_to(x, (P,) + x.shape), one)
        return MultiAgentRunnerState(train_state, env_state, obs, key,
                                     jnp.zeros((B, A), jnp.float32), jnp.zeros((B,), jnp.float32),
                                     replay)

    def env_step(runner: MultiAgentRunnerState, _):
        key, act_key, step_key = jax.random.split(runner.key, 3)
        policies = jax.vmap(algorithm.policy)(runner.train_state)
        obs = per_policy(runner.obs)
        action, extras = jax.vmap(algorithm.act, in_axes=(0, 0, 0, None))(
            policies, obs, jax.random.split(act_key, P), True)
        step = jax.vmap(env.step)(jax.random.split(step_key, B), runner.env_state,
                                  per_agent(action))
        logp = extras.get("action_logp", jnp.zeros((P, B * k), jnp.float32))
        transition = Transition(obs, action, per_policy(step.reward),
                                per_policy(step.terminated), per_policy(step.truncated),
                                per_policy(step.final_obs), logp)
        ended = jnp.any(step.terminated | step.truncated, axis=1)  # [B]
        ep_return = runner.episode_return + step.reward
        ep_length = runner.episode_length + 1
        done_return = jnp.where(ended[:, None], ep_return, 0.0)  # [B, A]
        finished = (done_return.sum(), per_policy(done_return).sum(axis=1),
                    jnp.where(ended, ep_length, 0.0).sum(), ended.sum())
        runner = runner._replace(
            env_state=step.state, obs=step.obs, key=key,
            episode_return=jnp.where(ended[:, None], 0.0, ep_return),
            episode_length=jnp.where(ended, 0.0, ep_length))
        if off_policy:  # each trained policy's agents' steps count for its epsilon schedule
            ts = runner.train_state
            steps = jnp.where(jnp.asarray(mask), ts.env_steps + B * k, ts.env_steps)
            runner = runner._replace(train_state=ts._replace(env_steps=steps))
        return runner, (transition, finished)

    def update_all(train_state: Any, batch: Transition) -> tuple[Any, dict]:
        """Each policy's update on its ``[T, B * k]`` batch (batch arrays are ``[T, P, ...]``)."""
        batch = jax.tree.map(lambda x: jnp.moveaxis(x, 1, 0), batch)  # [P, T, ...]
        if stacked:
            return jax.vmap(algorithm.update)(train_state, batch)
        updates = [a.update for a in algorithms] if algorithms is not None else \
            [algorithm.update] * P
        results = [updates[p](jax.tree.map(lambda x, p=p: x[p], train_state),
                              jax.tree.map(lambda x, p=p: x[p], batch)) for p in range(P)]
        return jax.tree.map(lambda *xs: jnp.stack(xs), *results)

    def learn_off_policy(algo: Algorithm, cfg: Any, ts: Any, replay: Any, batch: Transition):
        """One policy: its fragment into its buffer, then its updates (once it may learn)."""
        return replay_learn(algo, cfg, definition.require("postprocess"), ts, replay, batch)

    def learn_all_off_policy(train_state: Any, replay: Any, batch: Transition):
        batch = jax.tree.map(lambda x: jnp.moveaxis(x, 1, 0), batch)  # [P, T, ...]
        if stacked:
            return jax.vmap(lambda ts, r, b: learn_off_policy(algorithm, config, ts, r, b))(
                train_state, replay, batch)
        algos = list(algorithms) if algorithms is not None else [algorithm] * P
        results = [learn_off_policy(algos[p], configs[p],
                                    *jax.tree.map(lambda x, p=p: x[p],
                                                  (train_state, replay, batch)))
                   for p in range(P)]
        return jax.tree.map(lambda *xs: jnp.stack(xs), *results)

    def iteration(runner: MultiAgentRunnerState, _):
        runner, (batch, finished) = jax.lax.scan(env_step, runner, None, length=T)
        if off_policy:
            new_state, replay, metrics = learn_all_off_policy(runner.train_state, runner.replay,
                                                              batch)
            runner = runner._replace(replay=replay)
        else:
            new_state, metrics = update_all(runner.train_state, batch)
        # Frozen policies (not in policies_to_train) keep every leaf bit for bit.
        keep = jnp.asarray(mask)
        new_state = jax.tree.map(
            lambda new, old: jnp.where(keep.reshape((P,) + (1,) * (new.ndim - 1)), new, old),
            new_state, runner.train_state)
        runner = runner._replace(train_state=new_state)
        reward_sum, policy_sum, length_sum, episodes = jax.tree.map(
            lambda x: jnp.sum(x, axis=0), finished)
        metrics = dict(metrics, episode_reward_sum=reward_sum, policy_reward_sum=policy_sum,
                       episode_len_sum=length_sum, episodes=episodes,
                       timesteps=jnp.asarray(T * B, jnp.int32))
        return runner, metrics

    def train_chunk(runner: MultiAgentRunnerState) -> tuple[MultiAgentRunnerState, dict]:
        return jax.lax.scan(iteration, runner, None, length=iterations)

    return MultiAgentAnakin(init=init, train_chunk=train_chunk, algorithm=algorithm,
                            steps_per_iteration=T * B)


def evaluate_multi_agent_jax(algorithm: Any, env: JaxMultiAgentEnv, policies: Any,
                             agent_policy: tuple[int, ...], key: jax.Array, num_episodes: int,
                             explore: bool, max_steps: int):
    """One episode in each of ``num_episodes`` envs; ``policies`` is the acting pytree stacked
    over policies and ``agent_policy[i]`` agent ``i``'s policy index. Returns per-episode
    ``(agent_returns [N, A], lengths [N], finished [N])``."""
    reset_key, key = jax.random.split(key)
    obs, state = jax.vmap(env.reset)(jax.random.split(reset_key, num_episodes))
    agent_policy = jnp.asarray(agent_policy)
    A = env.num_agents

    def act(obs, act_key):  # every agent with its own policy's acting tree
        per_agent = jax.tree.map(lambda x: x[agent_policy], policies)
        action, _ = jax.vmap(algorithm.act, in_axes=(0, 1, 0, None), out_axes=1)(
            per_agent, obs, jax.random.split(act_key, A), explore)
        return action

    def cond(carry):
        *_, active, t = carry
        return jnp.any(active) & (t < max_steps)

    def body(carry):
        obs, state, key, returns, lengths, active, t = carry
        key, act_key, step_key = jax.random.split(key, 3)
        step = jax.vmap(env.step)(jax.random.split(step_key, num_episodes), state,
                                  act(obs, act_key))
        returns = returns + jnp.where(active[:, None], step.reward, 0.0)
        lengths = lengths + active
        active = active & ~jnp.any(step.terminated | step.truncated, axis=1)
        return step.obs, step.state, key, returns, lengths, active, t + 1

    init = (obs, state, key, jnp.zeros((num_episodes, A), jnp.float32),
            jnp.zeros((num_episodes,), jnp.float32), jnp.ones((num_episodes,), bool), 0)
    *_, returns, lengths, active, _ = jax.lax.while_loop(cond, body, init)
    return returns, lengths, ~active
