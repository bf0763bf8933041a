"""The ``Trainer`` facade: ``train()``, ``save()``, ``restore()``, ``compute_action()``, ...

A thin, stateful shell around the pure pieces: it owns the rollout workers, the algorithm's
``TrainState``, the execution plan, the results directory and the counters.
"""

from __future__ import annotations

import collections
import logging
import os
import platform
import socket
import time
import uuid
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from jrl import checkpoint as ckpt
from jrl import registry
from jrl.backends.jax_env import JaxEnvBackend
from jrl.backends.jax_multi_agent import JaxMultiAgentBackend
from jrl.backends.multi_agent import MultiAgentBackend, is_multi_agent
from jrl.backends.workers import WorkerBackend
from jrl.config import jsonable, merge, to_dict
from jrl.errors import CheckpointError, ConfigError, EnvError
from jrl.logger import PHASES, ResultLogger, flatten_result, make_logdir
from jrl.rollout.envs import MultiAgentEnvFound
from jrl.rollout.jax_envs import is_jax_env_id, resolve_jax_env
from jrl.rollout.policy import DEFAULT_POLICY_ID, Policy, PolicyMapAccess, index_actions
from jrl.rollout.worker_set import WorkerSet
from jrl.types import AlgorithmDef

logger = logging.getLogger("jrl")

RESULTS_DIR_ENV = "JRL_RESULTS_DIR"


def default_results_dir() -> str:
    return os.environ.get(RESULTS_DIR_ENV) or os.path.expanduser("~/jrl_results")



COMPILATION_CACHE_ENV = "JRL_COMPILATION_CACHE_DIR"


def enable_compilation_cache() -> str | None:
    """Turns on JAX's persistent compilation cache (``~/.cache/jrl/xla`` by default, or
    ``$JRL_COMPILATION_CACHE_DIR``; set it to ``0`` to turn the cache off). A second run of the
    same algorithm, env and config skips XLA compilation. A cache directory already configured
    in JAX (by the user) is left alone."""
    if jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir
    path = os.environ.get(COMPILATION_CACHE_ENV, os.path.expanduser("~/.cache/jrl/xla"))
    if path in ("", "0", "off", "false"):
        return None
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        logger.warning("compilation cache disabled: cannot create %s (%s)", path, e.strerror)
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    return path


def _summarize_episodes(episodes: list[dict]) -> dict[str, Any]:
    rewards = [e["episode_reward"] for e in episodes]
    lengths = [e["episode_len"] for e in episodes]
    nan = float("nan")
    result = {
        "episode_reward_mean": float(np.mean(rewards)) if rewards else nan,
        "episode_reward_min": float(np.min(rewards)) if rewards else nan,
        "episode_reward_max": float(np.max(rewards)) if rewards else nan,
        "episode_len_mean": float(np.mean(lengths)) if lengths else nan,
    }
    custom: dict[str, list[float]] = collections.defaultdict(list)
    hist: dict[str, list] = {"episode_reward": rewards, "episode_lengths": lengths}
    for e in episodes:
        for k, v in e.get("custom_metrics", {}).items():
            custom[k].append(float(v))
        for k, v in e.get("hist_data", {}).items():
            hist.setdefault(k, []).extend(v)
    result["custom_metrics"] = {}
    for k, values in custom.items():
        result["custom_metrics"][f"{k}_mean"] = float(np.mean(values))
        result["custom_metrics"][f"{k}_min"] = float(np.min(values))
        result["custom_metrics"][f"{k}_max"] = float(np.max(values))
    result["hist_stats"] = hist
    policy_rewards: dict[str, list[float]] = collections.defaultdict(list)
    for e in episodes:  # multi-agent episodes: summed rewards of each policy's agents
        for pid, r in e.get("policy_reward", {}).items():
            policy_rewards[pid].append(float(r))
    if policy_rewards:
        for stat, fn in (("mean", np.mean), ("min", np.min), ("max", np.max)):
            result[f"policy_reward_{stat}"] = {p: float(fn(r)) for p, r in policy_rewards.items()}
        for pid, r in policy_rewards.items():
            hist[f"policy_{pid}_reward"] = r
    return result


class Trainer(PolicyMapAccess):
    """Trains one algorithm on one env (RLlib's ``Trainer``).

    Args:
      algo: registered algorithm name (``"PPO"``, ``"DQN"``); per-algorithm subclasses such as
        ``PPOTrainer`` fix it.
      env: env id or registered name (or ``config["env"]``).
      config: a dict of config keys (RLlib style) or the algorithm's config dataclass.
      local_dir: root of the results directory (default ``~/jrl_results`` or ``$JRL_RESULTS_DIR``).
      experiment: experiment name, the directory level under ``local_dir``.
      logdir: exact results directory (overrides ``local_dir``/``experiment``).
      log_to_disk: write params.json / result.json / progress.csv / TensorBoard events.
      address: Ray cluster to join (``"auto"`` or ``host:port``) when ``num_workers > 0``;
        default: start a local Ray instance sized to the machine.
    """

    _algo_name: str | None = None
    _POLICY_OWNER = "this trainer"

    def __init__(self, algo: str | None = None, env: str | None = None, config: Any = None, *,
                 local_dir: str | None = None, experiment: str = "default",
                 logdir: str | None = None, log_to_disk: bool = True,
                 address: str | None = None):
        if isinstance(algo, Mapping) and config is None:  # RLlib's PPOTrainer(config, env)
            algo, config = None, algo
        name = algo or self._algo_name
        if name is None:
            raise ConfigError("no algorithm given: Trainer('PPO', env=...) or PPOTrainer(...)")
        if self._algo_name is not None and algo is not None and \
                registry.get_algorithm_def(algo).name != self._algo_name:
            raise ConfigError(f"{type(self).__name__} trains {self._algo_name}, not {algo}")
        self.definition = registry.get_algorithm_def(name)
        self.algo_name = self.definition.name
        overrides = {"env": env} if env is not None else {}
        self.algo_config = registry.parse_config(self.algo_name, config, overrides)
        if not self.algo_config.env:
            raise ConfigError("no env given: pass env='CartPole-v1' or config['env']")
        self.env_id = self.algo_config.env
        self.config = to_dict(self.algo_config)
        self._eval_config = merge(self.algo_config, {
            "explore": False, **self.algo_config.evaluation_config})
        _set_log_level(self.algo_config.log_level)
        if self.algo_config.framework != "jax":
            logger.warning("framework=%r: jrl runs on JAX; the config is used as is",
                           self.algo_config.framework)
        enable_compilation_cache()
        self.logdir = logdir
        output_to_logdir = self.algo_config.output == "logdir"
        if self.logdir is None and (log_to_disk or self.algo_config.monitor or output_to_logdir):
            self.logdir = make_logdir(local_dir or default_results_dir(), experiment,
                                      self.algo_name, self.env_id)
        if output_to_logdir:  # RLlib's output: "logdir" writes next to the results
            self.algo_config = merge(self.algo_config, {"output": self.logdir})
            self.config = to_dict(self.algo_config)
        video_dir = os.path.join(self.logdir, "videos") if self.algo_config.monitor else None
        jax_multi_agent, built_jax_env = resolve_jax_env(
            self.env_id, self.algo_config.env_config, bool(self.algo_config.multiagent.policies)
        ) if is_jax_env_id(self.env_id) else (False, None)
        backend = JaxMultiAgentBackend if jax_multi_agent else \
            JaxEnvBackend if is_jax_env_id(self.env_id) else (
            MultiAgentBackend if is_multi_agent(self.algo_config) else WorkerBackend)
        backend_args = dict(eval_config=self._eval_config, video_dir=video_dir, address=address,
                            logdir=self.logdir, log_to_disk=log_to_disk)
        if built_jax_env is not None:
            backend_args["jax_env"] = built_jax_env
        try:
            with PHASES.phase("build: envs, workers, algorithm, init"):
                self.backend = backend(self.definition, self.algo_config, self.env_id,
                                       **backend_args)
        except MultiAgentEnvFound:  # a registered creator returned a jrl.MultiAgentEnv
            self.backend = MultiAgentBackend(self.definition, self.algo_config, self.env_id,
                                             **backend_args)
        self.spec = self.backend.spec
        self.algorithm = self.backend.algorithm
        self.callbacks = self.backend.callbacks
        self.observation_space = self.backend.observation_space
        self.action_space = self.backend.action_space
        self.iteration = 0
        self.timesteps_total = 0
        self.episodes_total = 0
        self.time_total_s = 0.0
        self._recent_episodes: collections.deque = collections.deque(
            maxlen=self.algo_config.metrics_smoothing_episodes)
        self.experiment_id = uuid.uuid4().hex
        self._last_result: dict[str, Any] | None = None
        self._result_logger: ResultLogger | None = None
        if log_to_disk:
            os.makedirs(self.logdir, exist_ok=True)
            params = {"algo": self.algo_name, **jsonable(self.config)}
            self._result_logger = ResultLogger(self.logdir, params)

    # -- state and workers ----------------------------------------------------------------------

    @property
    def state(self) -> Any:
        """The learner's ``TrainState`` (seed 0's for JAX envs with several seeds)."""
        return self.backend.state

    @state.setter
    def state(self, value: Any) -> None:
        self.backend.state = value

    @property
    def workers(self) -> WorkerSet:
        """The rollout workers (RLlib's ``trainer.workers``)."""
        if self.backend.workers is None:
            raise ConfigError("JAX envs train inside one compiled loop and have no rollout "
                              "workers; use a gymnasium env id for worker/env access")
        return self.backend.workers

    @property
    def policy_map(self) -> dict[str, Policy]:
        """``{policy_id: Policy}``: the local worker's policies, bound to the learner."""
        return self.backend.policy_map

    @classmethod
    def from_checkpoint(cls, path: str, **kwargs: Any) -> Trainer:
        """A trainer rebuilt from a checkpoint's metadata (algo, env, config), then restored."""
        if path is None or not isinstance(path, (str, os.PathLike)):
            raise CheckpointError(f"from_checkpoint() needs a checkpoint path, got {path!r}")
        path = ckpt.resolve_checkpoint(path)
        meta = ckpt.load_metadata(path)
        algo = meta.get("algo")
        if not isinstance(algo, str) or not isinstance(meta.get("config", {}), Mapping):
            raise CheckpointError(f"checkpoint '{path}' is incomplete or corrupt: metadata.json "
                                  "needs an 'algo' name and a 'config' mapping")
        if cls._algo_name is not None and algo != cls._algo_name:
            raise CheckpointError(f"checkpoint '{path}' was written by {algo}, not "
                                  f"{cls._algo_name}")
        config = dict(meta.get("config") or {})
        config["callbacks"] = _restorable_callbacks(config.get("callbacks"))
        config.update(kwargs.pop("config", None) or {})
        trainer_cls = cls if cls._algo_name is not None else Trainer
        args = (algo,) if trainer_cls is Trainer else ()
        trainer = trainer_cls(*args, config=config, **kwargs)
        trainer.restore(path)
        return trainer

    # -- training -------------------------------------------------------------------------------

    def train(self) -> dict[str, Any]:
        """Runs one training iteration and returns its RLlib-style result dict."""
        start = time.time()
        cfg = self.algo_config
        with PHASES.phase("train: sample + learn"):
            it = self.backend.run_iteration(start, self.iteration + 1, self.timesteps_total)
        steps_this_iter, learner, episodes = it.env_steps, it.learner, it.episodes
        self.iteration += 1
        self.timesteps_total += steps_this_iter
        self.episodes_total += it.num_episodes
        window = list(self._recent_episodes)
        self._recent_episodes.extend(episodes)
        smoothing = cfg.metrics_smoothing_episodes
        shown = episodes if len(episodes) >= smoothing else (
            window[-(smoothing - len(episodes)):] + episodes if window else episodes)
        time_this_iter = time.time() - start
        self.time_total_s += time_this_iter
        result: dict[str, Any] = _summarize_episodes(shown)
        result.update(
            episodes_this_iter=it.num_episodes,
            episodes_total=self.episodes_total,
            timesteps_this_iter=steps_this_iter,
            timesteps_total=self.timesteps_total,
            num_env_steps_sampled=self.timesteps_total,
            training_iteration=self.iteration,
            time_this_iter_s=time_this_iter,
            time_total_s=self.time_total_s,
            info={"learner": learner if getattr(self.backend, "learner_per_policy", False)
                  else {DEFAULT_POLICY_ID: learner},
                  "num_steps_sampled": self.timesteps_total,
                  "num_steps_trained": _num_updates(self.state)},
            num_workers=cfg.num_workers,
            done=False,
            experiment_id=self.experiment_id,
            date=time.strftime("%Y-%m-%d_%H-%M-%S"),
            timestamp=int(time.time()),
            hostname=socket.gethostname(),
            node_ip="127.0.0.1",
            pid=os.getpid(),
            config=jsonable(self.config),
        )
        result.update(it.extra)
        replay_size = getattr(self.backend, "replay_buffer_size", None)
        if replay_size is not None:
            result["info"]["replay_buffer_size"] = replay_size
        if cfg.evaluation_interval and self.iteration % cfg.evaluation_interval == 0:
            with PHASES.phase("evaluation"):
                result.update(self.evaluate())
        self.callbacks.on_train_result(trainer=self, result=result)
        if self._result_logger is not None:
            with PHASES.phase("results: result.json, progress.csv, TensorBoard"):
                self._result_logger.log({k: v for k, v in result.items() if k != "config"})
        self._last_result = result
        return result

    def rollout_episodes(self, num_episodes: int, *, explore: bool = False, seed: int = 10_000,
                         max_steps: int | None = None, record: bool = False) -> list[dict]:
        """Runs ``num_episodes`` episodes with the current policy outside training; each is
        ``{"episode_reward", "episode_len"}`` (plus ``obs``/``actions``/``rewards`` with
        ``record``)."""
        return self.backend.rollout_episodes(num_episodes, explore=explore, seed=seed,
                                             max_steps=max_steps, record=record)

    def evaluate(self, num_episodes: int | None = None) -> dict[str, Any]:
        """Runs evaluation episodes (greedy unless ``evaluation_config`` sets ``explore``);
        returns ``{"evaluation": {episode_reward_mean, ...}}``."""
        cfg = self._eval_config
        n = num_episodes or cfg.evaluation_num_episodes
        episodes = self.rollout_episodes(n, explore=cfg.explore,
                                         seed=cfg.seed + 10_000 + self.iteration)
        summary = _summarize_episodes(episodes)
        summary["episodes_this_iter"] = len(episodes)
        return {"evaluation": summary}

    # -- acting ---------------------------------------------------------------------------------

    def compute_action(self, observation: Any, state: list | None = None,
                       prev_action: Any = None, prev_reward: float | None = None,
                       info: dict | None = None, policy_id: str = "default_policy",
                       full_fetch: bool = False, explore: bool | None = False) -> Any:
        """The action for one raw observation (preprocessed and filtered first).

        With ``state`` (a recurrent policy's ``get_initial_state()`` or last ``state_out``) or
        ``full_fetch`` returns ``(action, state_out, extras)`` as RLlib does; ``prev_action``
        and ``prev_reward`` feed models with ``lstm_use_prev_action``/``_reward``.
        """
        explore = self.algo_config.explore if explore is None else explore
        action, state_out, extras = self.get_policy(policy_id).compute_single_action(
            observation, state, prev_action, prev_reward, info, explore=explore)
        if full_fetch or (state is not None and len(state) > 0):
            return action, state_out, extras
        return action

    compute_single_action = compute_action

    def compute_actions(self, observations: Mapping | list, state: Mapping | list | None = None,
                        *, prev_action: Any = None, prev_reward: Any = None,
                        info: Any = None, policy_id: str = DEFAULT_POLICY_ID,
                        full_fetch: bool = False, explore: bool | None = False,
                        **kwargs: Any) -> Any:
        """Actions for a dict ``{key: obs}`` (returns a dict) or a list of observations.

        As in RLlib, with ``state`` (``{key: state}`` for a dict, a list of states for a list;
        each a recurrent policy's ``get_initial_state()`` or last ``state_out``; keys missing
        from it start from the initial state) or ``full_fetch`` returns ``(actions, states,
        extras)``: ``states`` keyed like ``observations`` and ``extras`` batched in their
        order. ``prev_action`` / ``prev_reward`` (keyed, or batched in the observations'
        order) feed models with ``lstm_use_prev_action``/``_reward``.
        """
        explore = self.algo_config.explore if explore is None else explore
        policy = self.get_policy(policy_id)
        keyed = isinstance(observations, Mapping)
        keys = list(observations) if keyed else list(range(len(observations)))
        obs = [observations[k] for k in keys]

        def batch(value: Any) -> Any:
            if value is None or not isinstance(value, Mapping):
                return value
            return [value[k] for k in keys]

        states = None
        if state is not None:
            given = state if isinstance(state, Mapping) else dict(enumerate(state))
            initial = policy.get_initial_state()
            per_key = [initial if given.get(k) is None or len(given[k]) == 0 else given[k]
                       for k in keys]
            states = [np.stack([np.asarray(s[i]) for s in per_key])
                      for i in range(len(initial))] or None
        actions, state_out, extras = policy.compute_actions(
            obs, states, batch(prev_action), batch(prev_reward), explore=explore)
        if policy.spec.composite:  # Tuple/Dict actions: one nested action per observation
            actions = [index_actions(actions, i) for i in range(len(keys))]
        out_actions = dict(zip(keys, actions, strict=True)) if keyed else actions
        if state is None and not full_fetch:
            return out_actions
        out_states = [[s[j] for s in state_out] for j in range(len(keys))]
        return out_actions, dict(zip(keys, out_states, strict=True)) if keyed else out_states, \
            extras

    # -- checkpoints ----------------------------------------------------------------------------

    def _metadata(self) -> dict[str, Any]:
        config = getattr(self.backend, "metadata_config", lambda c: c)(self.config)
        return {"algo": self.algo_name, "env": self.env_id, "config": jsonable(config),
                "timesteps_total": self.timesteps_total, "episodes_total": self.episodes_total,
                "time_total_s": self.time_total_s, "training_iteration": self.iteration,
                "python": platform.python_version(), "jax_version": jax.__version__,
                **_spaces_metadata(self.observation_space, self.action_space)}

    def save(self, checkpoint_dir: str | None = None) -> str:
        """Writes ``checkpoint_<iteration>/`` (atomically) and returns its path.

        It holds everything training needs to go on exactly: the learner state, the sampler
        (keys, counters, each env's episode seed and running episode's actions), the plan's
        counters, the jitted loop's runner state, and the replay buffer with
        ``store_buffer_in_checkpoints``."""
        directory = checkpoint_dir or self.logdir
        if directory is None:
            raise CheckpointError("save() needs a checkpoint_dir when the trainer has no logdir")
        with PHASES.phase("checkpoint"):
            return self._save(directory)

    def _save(self, directory: str) -> str:
        parts = self.backend.checkpoint_parts()
        meta = self._metadata()
        if self._last_result is not None:  # for checkpoint_score_attr
            meta["result"] = {k: v for k, v in flatten_result(self._last_result).items()
                              if not k.startswith(("config/", "hist_stats/"))}
        meta.update(parts=sorted(parts), resume=self.backend.checkpoint_extra(),
                    recent_episodes=[{"episode_reward": e["episode_reward"],
                                      "episode_len": e["episode_len"]}
                                     for e in self._recent_episodes])
        return ckpt.save_checkpoint(directory, self.iteration, jax.device_get(parts), meta)

    def restore(self, checkpoint_path: str) -> None:
        """Restores state and counters from a checkpoint written by ``save`` (see there)."""
        if checkpoint_path is None or not isinstance(checkpoint_path, (str, os.PathLike)):
            raise CheckpointError("restore() needs a checkpoint path (a checkpoint_* directory "
                                  f"or a results directory), got {checkpoint_path!r}")
        path = ckpt.resolve_checkpoint(checkpoint_path)
        meta = ckpt.load_metadata(path)
        if meta.get("algo") != self.algo_name:
            raise CheckpointError(f"checkpoint '{path}' was written by {meta.get('algo')}, "
                                  f"not {self.algo_name}")
        counters = ckpt.read_counters(path, meta)
        saved_parts = meta.get("parts", ["algo"])
        current = self.backend.checkpoint_parts(include_replay="replay" in saved_parts)
        if not isinstance(saved_parts, list) or any(p not in current for p in saved_parts):
            raise CheckpointError(f"cannot restore checkpoint '{path}': it holds parts "
                                  f"{saved_parts!r}, this trainer has {sorted(current)}")
        abstract = jax.eval_shape(lambda: {k: current[k] for k in saved_parts})
        restored = ckpt.restore_state(path, abstract)
        resume = meta.get("resume") if isinstance(meta.get("resume"), dict) else {}
        self.backend.load_checkpoint(restored, resume)
        self.iteration = counters["training_iteration"]
        self.timesteps_total = counters["timesteps_total"]
        self.episodes_total = counters["episodes_total"]
        self.time_total_s = counters["time_total_s"]
        recent = meta.get("recent_episodes")
        if isinstance(recent, list):
            self._recent_episodes.clear()
            self._recent_episodes.extend(e for e in recent if isinstance(e, dict))

    # -- lifecycle ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stops the execution plan's threads (if any), closes envs and result files."""
        self.backend.stop()
        if self._result_logger is not None:
            self._result_logger.close()

    cleanup = stop

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"{self.algo_name}Trainer(env={self.env_id!r}, iteration={self.iteration})"


def _restorable_callbacks(spec: Any) -> Any:
    """Callbacks from checkpoint metadata: import paths come back, anything else is dropped."""
    if isinstance(spec, str):
        try:
            from jrl.config import resolve_import

            return resolve_import(spec, "callbacks")
        except ConfigError as e:
            logger.warning("not restoring callbacks: %s", e)
    return None


def _spaces_metadata(observation_space: Any, action_space: Any) -> dict[str, Any]:
    """``{"spaces": ...}``: the raw observation and action spaces as JSON, so ``jrl serve`` can
    rebuild the policy without making the env ({} for spaces JSON cannot describe)."""
    from jrl.rollout.spaces import space_to_json

    try:
        return {"spaces": {"observation_space": space_to_json(observation_space),
                           "action_space": space_to_json(action_space)}}
    except (EnvError, TypeError, ValueError):
        return {}


def _num_updates(state: Any) -> int:
    """Learner updates so far (summed over a multi-agent trainer's policies)."""
    if isinstance(state, Mapping):
        return sum(int(s.num_updates) for s in state.values())
    return int(state.num_updates)


def _set_log_level(level: str) -> None:
    logging.getLogger("jrl").setLevel("WARNING" if level == "WARN" else level)


_TRAINER_CLASSES: dict[str, type[Trainer]] = {}


def make_trainer_class(definition: AlgorithmDef) -> type[Trainer]:
    """``PPOTrainer``-style subclass with the algorithm fixed (one class per algorithm)."""
    name = definition.name
    if name not in _TRAINER_CLASSES:
        _TRAINER_CLASSES[name] = type(definition.trainer_name, (Trainer,),
                                      {"_algo_name": name, "__doc__": f"Trainer for {name}."})
    return _TRAINER_CLASSES[name]
