"""The JAX-env backend: the fully-jitted loop (``jrl.execution.anakin``) behind the Trainer.

``jrl.Trainer("PPO", env="gymnax:CartPole-v1", config={"num_seeds": 8})`` trains with it.
Each ``train()`` runs one compiled chunk of learner iterations for every seed at once (``vmap``);
results report the mean over seeds (and each seed under ``seeds``), and with a results directory
each seed also gets its own ``seed_<i>/`` logs. ``compute_action``, ``evaluate`` and checkpoints
use seed 0's policy; checkpoints hold every seed's state.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np

from jrl.backends import Iteration, all_finite, check_update, jit_init
from jrl.callbacks import make_callbacks
from jrl.errors import ConfigError, NumericError
from jrl.execution.anakin import make_anakin, steps_per_env
from jrl.execution.learner import learner_devices
from jrl.logger import PHASES, ResultLogger
from jrl.registry import make_algorithm
from jrl.rollout.jax_envs import JaxEnv, make_jax_env
from jrl.rollout.policy import DEFAULT_POLICY_ID, Policy
from jrl.rollout.preprocessors import get_preprocessor
from jrl.types import AlgorithmDef

# Vmapped runs with at most this many seeds also write TensorBoard event files per seed.
SEED_TENSORBOARD_MAX = 16


def evaluate_jax(algorithm: Any, env: JaxEnv, policy: Any, key: jax.Array, num_episodes: int,
                 explore: bool, max_steps: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Runs one episode in each of ``num_episodes`` envs (jittable; static count/explore).

    Returns per-episode ``(returns, lengths, finished)``.
    """
    reset_key, key = jax.random.split(key)
    obs, state = jax.vmap(env.reset)(jax.random.split(reset_key, num_episodes))
    zeros = jnp.zeros((num_episodes,), jnp.float32)
    active = jnp.ones((num_episodes,), bool)
    rnn = algorithm.recurrent
    # A recurrent policy's state, previous action and reward (each env runs one episode).
    carried = None if rnn is None else (
        rnn.initial_state(num_episodes),
        jnp.zeros((num_episodes, *env.spec.action_shape), env.spec.action_dtype), zeros)

    def cond(carry):
        *_, active, t = carry
        return jnp.any(active) & (t < max_steps)

    def body(carry):
        obs, state, carried, key, returns, lengths, active, t = carry
        key, act_key, step_key = jax.random.split(key, 3)
        if rnn is None:
            action, _ = algorithm.act(policy, obs, act_key, explore)
        else:
            action, _, rnn_state = rnn.act(policy, obs, *carried, act_key, explore)
        step = jax.vmap(env.step)(jax.random.split(step_key, num_episodes), state, action)
        if rnn is not None:
            carried = (rnn_state, action.astype(carried[1].dtype),
                       step.reward.astype(jnp.float32))
        returns = returns + jnp.where(active, step.reward, 0.0)
        lengths = lengths + active
        active = active & ~(step.terminated | step.truncated)
        return step.obs, step.state, carried, key, returns, lengths, active, t + 1

    *_, returns, lengths, active, _ = jax.lax.while_loop(
        cond, body, (obs, state, carried, key, zeros, zeros, active, 0))
    return returns, lengths, ~active


class JaxEnvBackend:
    """JAX envs: env, ``act`` and ``update`` in one compiled chunk per ``train()``, ``vmap``ped
    over ``num_seeds`` seeds (laid over the learner devices when they divide the seeds).

    Args:
      definition: the algorithm record (on-policy or off-policy plan).
      config: the algorithm's frozen config.
      env_id: a JAX env id (``gymnax:CartPole-v1``, ``minatar:Breakout``, a name given to
        ``register_jax_env``, or ``module:factory``).
      eval_config: unused (evaluation runs in the compiled ``evaluate_jax``).
      logdir: with ``log_to_disk`` and several seeds, each seed also logs to ``seed_<i>/``.
      jax_env: the env ``env_id`` names, when the caller built it already (not built again).
    """

    workers = None

    def __init__(self, definition: AlgorithmDef, config: Any, env_id: str, *,
                 eval_config: Any = None, video_dir: str | None = None,
                 address: str | None = None, logdir: str | None = None,
                 log_to_disk: bool = False, jax_env: Any = None):
        cfg = config
        if cfg.num_workers:
            raise ConfigError("JAX envs train inside one compiled loop; set num_workers=0 "
                              "(use num_seeds to train several seeds at once)")
        if cfg.monitor:
            raise ConfigError("monitor=True records gymnasium renders; JAX envs do not render")
        self.definition = definition
        self.config = cfg
        self.env_id = env_id
        with PHASES.phase("build: env creation"):
            self.jax_env = jax_env if jax_env is not None else \
                make_jax_env(env_id, cfg.env_config)
        self.spec = spec = self.jax_env.spec
        self.algorithm = make_algorithm(definition, cfg, spec)
        # Episode hooks cannot run inside the compiled loop; on_train_result still does.
        self.callbacks = make_callbacks(cfg.callbacks)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, spec.obs_shape, np.float32)
        self.action_space = (gym.spaces.Discrete(spec.num_actions) if spec.discrete else
                             gym.spaces.Box(np.reshape(spec.action_low, spec.action_shape),
                                            np.reshape(spec.action_high, spec.action_shape),
                                            dtype=np.float32))
        steps = steps_per_env(definition, cfg) * cfg.num_envs_per_worker
        self.iterations_per_chunk = max(1, math.ceil(cfg.timesteps_per_iteration / steps))
        self._anakin = make_anakin(definition, self.jax_env, cfg, self.iterations_per_chunk,
                                   self.algorithm)
        keys = jax.random.split(jax.random.PRNGKey(cfg.seed), cfg.num_seeds)
        with PHASES.phase("build: init (run)"):
            self.runner = jax.block_until_ready(jit_init(jax.vmap(self._anakin.init))(keys))
        self.seed_devices = _seed_devices(cfg.num_seeds, cfg.num_gpus)
        if len(self.seed_devices) > 1:
            # Seeds are independent: lay the seed axis over the devices and let the compiled,
            # vmapped chunk run each device's seeds where they live.
            mesh = jax.make_mesh((len(self.seed_devices),), ("seeds",),
                                 devices=self.seed_devices,
                                 axis_types=(jax.sharding.AxisType.Auto,))
            self.runner = jax.device_put(
                self.runner, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("seeds")))
        # Not donated: the runner before the chunk is kept to roll back to on a NumericError,
        # which with donation took a copy (one small compiled program per leaf shape).
        self._train_chunk = jax.jit(_with_finite_check(jax.vmap(self._anakin.train_chunk)))
        self._evaluate = jax.jit(evaluate_jax, static_argnums=(0, 1, 4, 5, 6))
        self._logdir = logdir if log_to_disk else None
        self._seed_loggers: list[ResultLogger] | None = None
        policy = Policy(definition, self.algorithm, cfg, spec,
                        get_preprocessor(self.observation_space, cfg.model),
                        self.observation_space, self.action_space, seed=cfg.seed)
        policy.bind_learner(lambda: self.state, self._set_state)
        self.policy_map = {DEFAULT_POLICY_ID: policy}

    # seed 0's state is "the" policy of the facade
    @property
    def state(self) -> Any:
        return _first_seed(self.runner.train_state)

    @state.setter
    def state(self, value: Any) -> None:
        self._set_state(value)

    def _set_state(self, value: Any) -> None:
        stacked = jax.tree.map(lambda all_, one: all_.at[0].set(one), self.runner.train_state,
                               value)
        self.runner = self.runner._replace(train_state=stacked)

    def run_iteration(self, start: float, iteration: int, timesteps_total: int) -> Iteration:
        previous = self.runner  # kept to roll back to
        with PHASES.phase("train: jitted chunks (run)"):
            self.runner, metrics, finite = self._train_chunk(self.runner)
            metrics, finite = jax.device_get((metrics, finite))  # metrics: [seeds, iterations]
        episodes = metrics.pop("episodes").sum(axis=1)
        reward_sum = metrics.pop("episode_reward_sum").sum(axis=1)
        length_sum = metrics.pop("episode_len_sum").sum(axis=1)
        steps = int(metrics.pop("timesteps").sum(axis=1)[0])
        with np.errstate(invalid="ignore", divide="ignore"):
            per_seed_reward = np.where(episodes > 0, reward_sum / np.maximum(episodes, 1), np.nan)
            per_seed_len = np.where(episodes > 0, length_sum / np.maximum(episodes, 1), np.nan)
        per_seed_learner = {k: _nanmean(v, axis=1) for k, v in metrics.items()}
        learner = {k: float(_nanmean(v)) for k, v in per_seed_learner.items()}
        try:
            check_update(learner, self.runner.train_state, iteration, finite)
        except NumericError:
            self.runner = previous
            raise
        finite = per_seed_reward[np.isfinite(per_seed_reward)]
        extra = {
            "episode_reward_mean": float(finite.mean()) if finite.size else float("nan"),
            "episode_reward_min": float(finite.min()) if finite.size else float("nan"),
            "episode_reward_max": float(finite.max()) if finite.size else float("nan"),
            "episode_len_mean": float(np.nanmean(per_seed_len)) if finite.size else float("nan"),
            "num_seeds": int(len(episodes)),
            "seeds": {"episode_reward_mean": per_seed_reward.tolist(),
                      "episodes_this_iter": episodes.astype(int).tolist()},
            "num_healthy_workers": 0, "num_worker_restarts": 0,
        }
        with PHASES.phase("results: per-seed logs"):
            self._log_seeds(per_seed_reward, per_seed_len, episodes, per_seed_learner,
                            iteration, timesteps_total + steps)
        return Iteration(steps, learner, [], int(episodes.sum()), extra)

    def _log_seeds(self, rewards, lengths, episodes, learner, iteration, timesteps) -> None:
        if self._logdir is None or len(rewards) == 1:
            return
        if self._seed_loggers is None:
            # Files are opened per result (no descriptors held per seed), and TensorBoard gets
            # per-seed event files only for a few seeds: with hundreds, a writer thread and a
            # flush per seed cost more than the jitted chunk itself (issue 18, GPU run).
            tensorboard = len(rewards) <= SEED_TENSORBOARD_MAX
            self._seed_loggers = [
                ResultLogger(os.path.join(self._logdir, f"seed_{i}"), {"seed_index": i},
                             tensorboard=tensorboard, hold_files=False)
                for i in range(len(rewards))]
        for i, seed_logger in enumerate(self._seed_loggers):
            seed_logger.log({
                "episode_reward_mean": float(rewards[i]), "episode_len_mean": float(lengths[i]),
                "episodes_this_iter": int(episodes[i]), "training_iteration": iteration,
                "timesteps_total": timesteps,
                "info": {"learner": {"default_policy": {
                    k: float(v[i]) for k, v in learner.items()}}}})

    def rollout_episodes(self, num_episodes: int, *, explore: bool = False, seed: int = 10_000,
                         max_steps: int | None = None, record: bool = False) -> list[dict]:
        if record:
            raise ConfigError("recording episodes (--out) is not available for JAX envs")
        limit = max_steps if max_steps is not None else 100_000
        returns, lengths, finished = self._evaluate(
            self.algorithm, self.jax_env, self.policy_map[DEFAULT_POLICY_ID].acting,
            jax.random.PRNGKey(seed), num_episodes, bool(explore), int(limit))
        return [{"episode_reward": float(r), "episode_len": int(n)}
                for r, n, done in zip(np.asarray(returns), np.asarray(lengths),
                                      np.asarray(finished), strict=True) if done]

    def checkpoint_state(self) -> Any:
        return self.runner.train_state

    def load_checkpoint_state(self, state: Any) -> None:
        self.runner = self.runner._replace(train_state=state)

    @property
    def replay_buffer_size(self) -> int | None:
        replay = self.runner.replay
        return None if replay is None else int(np.asarray(replay.size).reshape(-1)[0])

    def checkpoint_parts(self, *, include_replay: bool | None = None) -> dict[str, Any]:
        """``algo`` (every seed's learner state), ``runner`` (env states, observations, keys,
        running episode counters) and, with ``store_buffer_in_checkpoints`` (or
        ``include_replay``), ``replay``."""
        parts = {"algo": self.runner.train_state,
                 "runner": self.runner._replace(train_state=None, replay=None)}
        keep = self.config.store_buffer_in_checkpoints if include_replay is None else include_replay
        if keep and self.runner.replay is not None:
            parts["replay"] = self.runner.replay
        return parts

    def checkpoint_extra(self) -> dict[str, Any]:
        return {}

    def load_checkpoint(self, parts: dict[str, Any], extra: dict[str, Any]) -> None:
        runner = parts.get("runner", self.runner)
        self.runner = runner._replace(train_state=parts["algo"],
                                      replay=parts.get("replay", self.runner.replay))

    def stop(self) -> None:
        for seed_logger in self._seed_loggers or []:
            seed_logger.close()


def _with_finite_check(train_chunk: Any) -> Any:
    """``train_chunk`` that also returns whether the new learner states are all finite (in the
    same compiled program, instead of a second one for ``check_update``)."""
    def chunk(runner: Any) -> tuple[Any, dict, jax.Array]:
        runner, metrics = train_chunk(runner)
        return runner, metrics, all_finite(runner.train_state)
    return chunk


def _first_seed_impl(tree: Any) -> Any:
    return jax.tree.map(lambda x: x[0], tree)


# One compiled program for the whole state (indexing leaf by leaf compiles one per shape);
# slicing gains nothing from XLA's optimizations, so they are skipped like init's.
_first_seed = jit_init(_first_seed_impl)


def _seed_devices(num_seeds: int, num_gpus: float) -> list:
    """The learner devices when they divide the seeds evenly, else just the first one."""
    devices = learner_devices(num_gpus)
    return devices if len(devices) > 1 and num_seeds % len(devices) == 0 else devices[:1]


def _nanmean(x: np.ndarray, axis: int | None = None) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(x, axis=axis)
