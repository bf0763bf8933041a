"""The ``Trainer`` on JAX envs: the fully-jitted loop behind the same facade.

``jrl.Trainer("PPO", env="gymnax:CartPole-v1", config={"num_seeds": 8})`` builds this variant.
Each ``train()`` runs one compiled chunk of learner iterations for every seed at once (``vmap``);
results report the mean over seeds (and each seed under ``seeds``), and with a results directory
each seed also gets its own ``seed_<i>/`` logs. ``compute_action``, ``evaluate`` and checkpoints
use seed 0's policy; checkpoints hold every seed's state.
"""

from __future__ import annotations

import math
import os
from typing import Any

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np

from jrl.callbacks import make_callbacks
from jrl.errors import ConfigError, EnvError
from jrl.execution.anakin import make_anakin, steps_per_env
from jrl.logger import ResultLogger
from jrl.registry import make_algorithm
from jrl.rollout.jax_envs import JaxEnv, make_jax_env
from jrl.trainer import _JaxEnvTrainer, _jit_init


class _NoWorkers:
    """JAX envs run inside the compiled loop: there are no rollout workers to reach."""

    num_worker_restarts = 0

    def _none(self, *args: Any, **kwargs: Any):
        raise ConfigError("JAX envs train inside one compiled loop and have no rollout "
                          "workers; use a gymnasium env id for worker/env access")

    local_worker = foreach_worker = foreach_worker_with_index = foreach_env = _none

    def remote_workers(self) -> list:
        return []

    def stop(self) -> None:
        pass


def evaluate_jax(algorithm: Any, env: JaxEnv, policy: Any, key: jax.Array, num_episodes: int,
                 explore: bool, max_steps: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Runs one episode in each of ``num_episodes`` envs (jittable; static count/explore).

    Returns per-episode ``(returns, lengths, finished)``.
    """
    reset_key, key = jax.random.split(key)
    obs, state = jax.vmap(env.reset)(jax.random.split(reset_key, num_episodes))
    zeros = jnp.zeros((num_episodes,), jnp.float32)
    active = jnp.ones((num_episodes,), bool)

    def cond(carry):
        *_, active, t = carry
        return jnp.any(active) & (t < max_steps)

    def body(carry):
        obs, state, key, returns, lengths, active, t = carry
        key, act_key, step_key = jax.random.split(key, 3)
        action, _ = algorithm.act(policy, obs, act_key, explore)
        step = jax.vmap(env.step)(jax.random.split(step_key, num_episodes), state, action)
        returns = returns + jnp.where(active, step.reward, 0.0)
        lengths = lengths + active
        active = active & ~(step.terminated | step.truncated)
        return step.obs, step.state, key, returns, lengths, active, t + 1

    *_, returns, lengths, active, _ = jax.lax.while_loop(
        cond, body, (obs, state, key, zeros, zeros, active, 0))
    return returns, lengths, ~active


class AnakinTrainerMixin(_JaxEnvTrainer):
    """``Trainer`` overrides for JAX envs (combined with ``Trainer`` or ``<ALGO>Trainer``)."""

    def _setup_sampling(self, video_dir: str | None, address: str | None) -> None:
        cfg = self.algo_config
        if cfg.num_workers:
            raise ConfigError("JAX envs train inside one compiled loop; set num_workers=0 "
                              "(use num_seeds to train several seeds at once)")
        if cfg.monitor:
            raise ConfigError("monitor=True records gymnasium renders; JAX envs do not render")
        self.jax_env = make_jax_env(self.env_id)
        self.spec = spec = self.jax_env.spec
        self.algorithm = make_algorithm(self.definition, cfg, spec)
        # Episode hooks cannot run inside the compiled loop; on_train_result still does.
        self.callbacks = make_callbacks(cfg.callbacks)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, spec.obs_shape, np.float32)
        self.action_space = (gym.spaces.Discrete(spec.num_actions) if spec.discrete else
                             gym.spaces.Box(np.reshape(spec.action_low, spec.action_shape),
                                            np.reshape(spec.action_high, spec.action_shape),
                                            dtype=np.float32))
        self.workers = _NoWorkers()
        steps = steps_per_env(self.definition, cfg) * cfg.num_envs_per_worker
        self.iterations_per_chunk = max(1, math.ceil(cfg.timesteps_per_iteration / steps))
        self._anakin = make_anakin(self.definition, self.jax_env, cfg, self.iterations_per_chunk,
                                   self.algorithm)
        keys = jax.random.split(jax.random.PRNGKey(cfg.seed), cfg.num_seeds)
        self.runner = _jit_init(self._anakin._replace(init=jax.vmap(self._anakin.init)))(keys)
        self.seed_devices = _seed_devices(cfg.num_seeds, cfg.num_gpus)
        if len(self.seed_devices) > 1:
            # Seeds are independent: lay the seed axis over the devices and let the compiled,
            # vmapped chunk run each device's seeds where they live.
            mesh = jax.make_mesh((len(self.seed_devices),), ("seeds",),
                                 devices=self.seed_devices,
                                 axis_types=(jax.sharding.AxisType.Auto,))
            self.runner = jax.device_put(
                self.runner, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("seeds")))
        self._train_chunk = jax.jit(jax.vmap(self._anakin.train_chunk), donate_argnums=0)
        self._evaluate = jax.jit(evaluate_jax, static_argnums=(0, 1, 4, 5, 6))
        self._seed_loggers: list[ResultLogger] | None = None

    # seed 0's state is "the" policy of the facade
    @property
    def state(self) -> Any:
        return jax.tree.map(lambda x: x[0], self.runner.train_state)

    @state.setter
    def state(self, value: Any) -> None:
        stacked = jax.tree.map(lambda all_, one: all_.at[0].set(one), self.runner.train_state,
                               value)
        self.runner = self.runner._replace(train_state=stacked)

    def _preprocess(self, obs_list: list) -> np.ndarray:
        obs = np.asarray(obs_list, np.float32)
        if obs.shape[1:] != self.spec.obs_shape:
            raise EnvError(f"observation has shape {obs.shape[1:]} but '{self.env_id}' "
                           f"expects {self.spec.obs_shape}")
        return obs

    def _run_iteration(self, start: float) -> tuple[int, dict, list[dict], dict]:
        self.runner, metrics = self._train_chunk(self.runner)
        metrics = jax.device_get(metrics)  # [seeds, iterations]
        episodes = metrics.pop("episodes").sum(axis=1)
        reward_sum = metrics.pop("episode_reward_sum").sum(axis=1)
        length_sum = metrics.pop("episode_len_sum").sum(axis=1)
        steps = int(metrics.pop("timesteps").sum(axis=1)[0])
        with np.errstate(invalid="ignore", divide="ignore"):
            per_seed_reward = np.where(episodes > 0, reward_sum / np.maximum(episodes, 1), np.nan)
            per_seed_len = np.where(episodes > 0, length_sum / np.maximum(episodes, 1), np.nan)
        per_seed_learner = {k: _nanmean(v, axis=1) for k, v in metrics.items()}
        learner = {k: float(_nanmean(v)) for k, v in per_seed_learner.items()}
        count = int(episodes.sum())
        self.episodes_total += count
        finite = per_seed_reward[np.isfinite(per_seed_reward)]
        extra = {
            "episode_reward_mean": float(finite.mean()) if finite.size else float("nan"),
            "episode_reward_min": float(finite.min()) if finite.size else float("nan"),
            "episode_reward_max": float(finite.max()) if finite.size else float("nan"),
            "episode_len_mean": float(np.nanmean(per_seed_len)) if finite.size else float("nan"),
            "episodes_this_iter": count, "episodes_total": self.episodes_total,
            "num_seeds": int(len(episodes)),
            "seeds": {"episode_reward_mean": per_seed_reward.tolist(),
                      "episodes_this_iter": episodes.astype(int).tolist()},
        }
        self._log_seeds(per_seed_reward, per_seed_len, episodes, per_seed_learner, steps)
        return steps, learner, [], extra

    def _log_seeds(self, rewards, lengths, episodes, learner, steps) -> None:
        if self._result_logger is None or len(rewards) == 1:
            return
        if self._seed_loggers is None:
            self._seed_loggers = [
                ResultLogger(os.path.join(self.logdir, f"seed_{i}"), {"seed_index": i})
                for i in range(len(rewards))]
        for i, seed_logger in enumerate(self._seed_loggers):
            seed_logger.log({
                "episode_reward_mean": float(rewards[i]), "episode_len_mean": float(lengths[i]),
                "episodes_this_iter": int(episodes[i]), "training_iteration": self.iteration + 1,
                "timesteps_total": self.timesteps_total + steps,
                "info": {"learner": {"default_policy": {
                    k: float(v[i]) for k, v in learner.items()}}}})

    def rollout_episodes(self, num_episodes: int, *, explore: bool = False, seed: int = 10_000,
                         max_steps: int | None = None, record: bool = False) -> list[dict]:
        if record:
            raise ConfigError("recording episodes (--out) is not available for JAX envs")
        limit = max_steps if max_steps is not None else 100_000
        returns, lengths, finished = self._evaluate(
            self.algorithm, self.jax_env, self._policy_fn(self.state), jax.random.PRNGKey(seed),
            num_episodes, bool(explore), int(limit))
        return [{"episode_reward": float(r), "episode_len": int(n)}
                for r, n, done in zip(np.asarray(returns), np.asarray(lengths),
                                      np.asarray(finished), strict=True) if done]

    def _checkpoint_state(self) -> Any:
        return self.runner.train_state

    def _load_checkpoint_state(self, state: Any) -> None:
        self.runner = self.runner._replace(train_state=state)

    def stop(self) -> None:
        super().stop()
        for seed_logger in self._seed_loggers or []:
            seed_logger.close()


def _seed_devices(num_seeds: int, num_gpus: float) -> list:
    """The learner devices when they divide the seeds evenly, else just the first one."""
    from jrl.execution.learner import learner_devices

    devices = learner_devices(num_gpus)
    return devices if len(devices) > 1 and num_seeds % len(devices) == 0 else devices[:1]


def _nanmean(x: np.ndarray, axis: int | None = None) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(x, axis=axis)
