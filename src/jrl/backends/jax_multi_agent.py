"""The JAX multi-agent backend: ``multiagent.policies`` on a ``JaxMultiAgentEnv`` in the
fully-jitted loop (``jrl.execution.multi_agent_anakin``), ``vmap``ped over ``num_seeds``.

Agent ids are the indices ``0 .. num_agents - 1``; ``policy_mapping_fn`` maps each once, when
the trainer is built. Policies share the trainer's algorithm: without ``config_overrides`` their
learner states are stacked and updated in one ``vmap``; with overrides of hyperparameters that
keep the learner state's shapes (``lr``, ``gamma``, ``entropy_coeff``, ...) each policy updates
with its own config, one after another in the same compiled loop. Overrides of shape-setting
keys and heuristic policy classes are refused. ``get_policy``,
``compute_action(policy_id=...)`` and checkpoints use seed 0.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import jax
import numpy as np

from jrl.backends import Iteration, check_update, jit_init
from jrl.callbacks import make_callbacks
from jrl.errors import ConfigError, NumericError
from jrl.execution.anakin import steps_per_env
from jrl.execution.multi_agent_anakin import evaluate_multi_agent_jax, make_multi_agent_anakin
from jrl.registry import make_algorithm
from jrl.rollout.jax_envs import is_multi_agent_jax_env, make_jax_env
from jrl.rollout.multi_agent import PolicyMapping, parse_policies, policy_config
from jrl.rollout.policy import DEFAULT_POLICY_ID, Policy
from jrl.rollout.preprocessors import get_preprocessor
from jrl.types import AlgorithmDef

# Config keys that set array shapes of the compiled loop: one value for every policy.
_SHAPE_KEYS = frozenset({"num_envs_per_worker", "rollout_fragment_length", "train_batch_size",
                         "model", "num_seeds", "observation_filter", "buffer_size"})


class JaxMultiAgentBackend:
    """Several policies (or one shared) on a JAX multi-agent env, in one compiled loop.

    Args: as ``JaxEnvBackend``.
    """

    workers = None
    learner_per_policy = True

    def __init__(self, definition: AlgorithmDef, config: Any, env_id: str, *,
                 eval_config: Any = None, video_dir: str | None = None,
                 address: str | None = None, logdir: str | None = None,
                 log_to_disk: bool = False, jax_env: Any = None):
        cfg = config
        if cfg.num_workers:
            raise ConfigError("JAX envs train inside one compiled loop; set num_workers=0 "
                              "(use num_seeds to train several seeds at once)")
        self.definition, self.config, self.env_id = definition, cfg, env_id
        self.jax_env = env = jax_env if jax_env is not None else \
            make_jax_env(env_id, cfg.env_config)
        if not is_multi_agent_jax_env(env):
            raise ConfigError(f"multiagent policies need a multi-agent env; the JAX env "
                              f"'{env_id}' has no num_agents (see JaxMultiAgentEnv)")
        ma = cfg.multiagent
        specs = parse_policies(ma.policies) or {DEFAULT_POLICY_ID: None}
        for pid, spec in specs.items():
            if spec is not None and spec.policy_class is not None:
                raise ConfigError(f"multiagent.policies.{pid}: policies on a JAX env share the "
                                  "trainer's algorithm (no policy class)")
            for key in sorted(set(spec.config if spec is not None else ()) & _SHAPE_KEYS):
                raise ConfigError(f"multiagent.policies.{pid}.config.{key}: on a JAX env every "
                                  f"policy keeps the trainer's {key} (it sets array shapes in "
                                  f"the compiled loop); override hyperparameters such as lr, "
                                  f"gamma or entropy_coeff")
        self.policy_ids = list(specs)
        mapping = PolicyMapping(ma.policy_mapping_fn, self.policy_ids)
        self.agent_policy = tuple(self.policy_ids.index(mapping(i, None, None))
                                  for i in range(env.num_agents))
        groups = [[i for i, p in enumerate(self.agent_policy) if p == j]
                  for j in range(len(self.policy_ids))]
        to_train = list(ma.policies_to_train if ma.policies_to_train is not None
                        else self.policy_ids)
        for pid in to_train:
            if pid not in specs:
                raise ConfigError(f"multiagent.policies_to_train names unknown policy '{pid}' "
                                  f"(policies: {', '.join(self.policy_ids)})")
        self.policies_to_train = to_train
        self.spec = spec = env.spec
        self.algorithm = make_algorithm(definition, cfg, spec)
        if self.algorithm.recurrent is not None:
            raise ConfigError("recurrent policies (model.use_lstm/use_gru) run in single-agent "
                              "training only so far")
        # Per-policy config_overrides: each policy its own config and algorithm (updated one
        # after another in the compiled loop; without overrides they update stacked).
        self.policy_configs = {pid: policy_config(cfg, spec_.config if spec_ else {})
                               for pid, spec_ in specs.items()}
        overridden = any(spec_ is not None and spec_.config for spec_ in specs.values())
        algorithms = None
        if overridden:
            algorithms = [make_algorithm(definition, self.policy_configs[pid], spec)
                          for pid in self.policy_ids]
            want = jax.eval_shape(self.algorithm.init, jax.random.PRNGKey(0))
            for pid, algo in zip(self.policy_ids, algorithms, strict=True):
                have = jax.eval_shape(algo.init, jax.random.PRNGKey(0))
                if jax.tree.structure(have) != jax.tree.structure(want) or any(
                        (a.shape, a.dtype) != (b.shape, b.dtype)
                        for a, b in zip(jax.tree.leaves(have), jax.tree.leaves(want),
                                        strict=True)):
                    raise ConfigError(
                        f"multiagent.policies.{pid}.config {sorted(specs[pid].config)} changes "
                        f"the shapes of the policy's learner state; on a JAX env policies may "
                        f"only override hyperparameters that keep them (lr, gamma, "
                        f"entropy_coeff, ...)")
        self.callbacks = make_callbacks(cfg.callbacks)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, spec.obs_shape, np.float32)
        self.action_space = (gym.spaces.Discrete(spec.num_actions) if spec.discrete else
                             gym.spaces.Box(np.reshape(spec.action_low, spec.action_shape),
                                            np.reshape(spec.action_high, spec.action_shape),
                                            dtype=np.float32))
        steps = steps_per_env(definition, cfg) * cfg.num_envs_per_worker
        self.iterations_per_chunk = max(1, math.ceil(cfg.timesteps_per_iteration / steps))
        self._anakin = make_multi_agent_anakin(
            definition, env, cfg, groups, self.iterations_per_chunk,
            train_mask=[pid in to_train for pid in self.policy_ids], algorithm=self.algorithm,
            algorithms=algorithms,
            configs=[self.policy_configs[pid] for pid in self.policy_ids] if algorithms else None)
        keys = jax.random.split(jax.random.PRNGKey(cfg.seed), cfg.num_seeds)
        self.runner = jit_init(jax.vmap(self._anakin.init))(keys)
        # Not donated: the runner before the chunk is kept to roll back to on a NumericError,
        # which with donation took a copy (one small compiled program per leaf shape).
        self._train_chunk = jax.jit(jax.vmap(self._anakin.train_chunk))
        self._evaluate = jax.jit(evaluate_multi_agent_jax, static_argnums=(0, 1, 3, 5, 6, 7))
        self.policy_map: dict[str, Policy] = {}
        for p, pid in enumerate(self.policy_ids):
            policy = Policy(definition, algorithms[p] if algorithms else self.algorithm,
                            self.policy_configs[pid], spec,
                            get_preprocessor(self.observation_space, cfg.model),
                            self.observation_space, self.action_space, seed=cfg.seed + p)
            policy.bind_learner(lambda p=p: self._policy_state(p),
                                lambda state, p=p: self._set_policy_state(p, state))
            self.policy_map[pid] = policy

    # -- state: seed 0's, per policy -----------------------------------------------------------

    def _policy_state(self, p: int) -> Any:
        return jax.tree.map(lambda x: x[0, p], self.runner.train_state)

    def _set_policy_state(self, p: int, value: Any) -> None:
        stacked = jax.tree.map(lambda all_, one: all_.at[0, p].set(one),
                               self.runner.train_state, value)
        self.runner = self.runner._replace(train_state=stacked)

    @property
    def state(self) -> dict[str, Any]:
        return {pid: self._policy_state(p) for p, pid in enumerate(self.policy_ids)}

    @state.setter
    def state(self, states: dict[str, Any]) -> None:
        for p, pid in enumerate(self.policy_ids):
            if pid in states:
                self._set_policy_state(p, states[pid])

    # -- training -------------------------------------------------------------------------------

    def run_iteration(self, start: float, iteration: int, timesteps_total: int) -> Iteration:
        previous = self.runner  # kept to roll back to
        self.runner, metrics = self._train_chunk(self.runner)
        metrics = jax.device_get(metrics)  # [seeds, iterations, ...]
        episodes = metrics.pop("episodes").sum(axis=1)  # [seeds]
        reward_sum = metrics.pop("episode_reward_sum").sum(axis=1)
        policy_sum = metrics.pop("policy_reward_sum").sum(axis=1)  # [seeds, P]
        length_sum = metrics.pop("episode_len_sum").sum(axis=1)
        steps = int(metrics.pop("timesteps").sum(axis=1)[0])
        total = max(int(episodes.sum()), 1)
        learner = {pid: {k: _nanmean(v[..., p]) for k, v in metrics.items()}
                   for p, pid in enumerate(self.policy_ids) if pid in self.policies_to_train}
        try:
            check_update({f"{pid}/{k}": v for pid, m in learner.items() for k, v in m.items()},
                         self.runner.train_state, iteration)
        except NumericError:
            self.runner = previous
            raise
        nan = float("nan")
        with np.errstate(invalid="ignore", divide="ignore"):
            per_seed_reward = np.where(episodes > 0, reward_sum / np.maximum(episodes, 1), nan)
        finite = per_seed_reward[np.isfinite(per_seed_reward)]
        has = episodes.sum() > 0
        policy_mean = {pid: float(policy_sum[:, p].sum() / total) if has else nan
                       for p, pid in enumerate(self.policy_ids)}
        extra = {
            "episode_reward_mean": float(finite.mean()) if finite.size else nan,
            "episode_reward_min": float(finite.min()) if finite.size else nan,
            "episode_reward_max": float(finite.max()) if finite.size else nan,
            "episode_len_mean": float(length_sum.sum() / total) if has else nan,
            "policy_reward_mean": policy_mean,
            "num_seeds": int(len(episodes)),
            "seeds": {"episode_reward_mean": per_seed_reward.tolist(),
                      "episodes_this_iter": episodes.astype(int).tolist()},
            "num_env_steps_sampled_this_iter": steps,
            "num_agent_steps_sampled_this_iter": steps * self.jax_env.num_agents,
            "num_healthy_workers": 0, "num_worker_restarts": 0,
        }
        if self.config.multiagent.count_steps_by == "agent_steps":
            steps *= self.jax_env.num_agents
        return Iteration(steps, learner, [], int(episodes.sum()), extra)

    def rollout_episodes(self, num_episodes: int, *, explore: bool = False, seed: int = 10_000,
                         max_steps: int | None = None, record: bool = False) -> list[dict]:
        if record:
            raise ConfigError("recording episodes (--out) is not available for JAX envs")
        limit = max_steps if max_steps is not None else 100_000
        acting = jax.vmap(self.algorithm.policy)(
            jax.tree.map(lambda x: x[0], self.runner.train_state))
        returns, lengths, finished = self._evaluate(
            self.algorithm, self.jax_env, acting, self.agent_policy, jax.random.PRNGKey(seed),
            num_episodes, bool(explore), int(limit))
        episodes = []
        for r, n, done in zip(np.asarray(returns), np.asarray(lengths), np.asarray(finished),
                              strict=True):
            if not done:
                continue
            policy_reward: dict[str, float] = {}
            for i, p in enumerate(self.agent_policy):
                pid = self.policy_ids[p]
                policy_reward[pid] = policy_reward.get(pid, 0.0) + float(r[i])
            episodes.append({"episode_reward": float(r.sum()), "episode_len": int(n),
                             "agent_rewards": {f"{i}/{self.policy_ids[p]}": float(r[i])
                                               for i, p in enumerate(self.agent_policy)},
                             "policy_reward": policy_reward})
        return episodes

    # -- checkpoints: every seed's and every policy's state --------------------------------------

    def checkpoint_state(self) -> Any:
        return self.runner.train_state

    def load_checkpoint_state(self, state: Any) -> None:
        self.runner = self.runner._replace(train_state=state)

    replay_buffer_size = None

    def checkpoint_parts(self, *, include_replay: bool | None = None) -> dict[str, Any]:
        """``algo`` (learner states ``[seeds, policies, ...]``) and ``runner`` (env states,
        observations, keys, running episode counters)."""
        return {"algo": self.runner.train_state,
                "runner": self.runner._replace(train_state=None)}

    def checkpoint_extra(self) -> dict[str, Any]:
        return {"policy_ids": list(self.policy_ids)}

    def load_checkpoint(self, parts: dict[str, Any], extra: dict[str, Any]) -> None:
        ids = extra.get("policy_ids")
        if ids is not None and list(ids) != self.policy_ids:
            raise ConfigError(f"the checkpoint holds policies {list(ids)}, this trainer "
                              f"{self.policy_ids}")
        runner = parts.get("runner", self.runner)
        self.runner = runner._replace(train_state=parts["algo"])

    def stop(self) -> None:
        pass


def _nanmean(x: np.ndarray) -> float:
    finite = np.asarray(x, np.float64)
    finite = finite[~np.isnan(finite)]
    return float(finite.mean()) if finite.size else float("nan")
