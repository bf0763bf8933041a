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
import jax.numpy as jnp
import numpy as np

from jrl import checkpoint as ckpt
from jrl import registry
from jrl.config import jsonable, merge, to_dict
from jrl.errors import CheckpointError, ConfigError
from jrl.logger import ResultLogger, make_logdir
from jrl.networks import catalog
from jrl.rollout.evaluation import run_episodes
from jrl.rollout.worker_set import WorkerSet
from jrl.types import AlgorithmDef

logger = logging.getLogger("jrl")

RESULTS_DIR_ENV = "JRL_RESULTS_DIR"


def default_results_dir() -> str:
    return os.environ.get(RESULTS_DIR_ENV) or os.path.expanduser("~/jrl_results")


def _to_host(tree: Any) -> Any:
    return jax.tree.map(lambda x: np.asarray(x), tree)


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
    return result


class Policy:
    """The trainer's policy as RLlib users know it: weights, actions and the model."""

    def __init__(self, trainer: Trainer):
        self._trainer = trainer
        self.model = PolicyModel(trainer)
        self.observation_space = trainer.observation_space
        self.action_space = trainer.action_space
        self.config = trainer.config

    def get_weights(self) -> Any:
        """The network params as a nested dict of NumPy arrays."""
        return _to_host(self._trainer.state.params)

    def set_weights(self, weights: Any) -> None:
        """Replaces the network params (structure, shapes and dtypes must match)."""
        current = self._trainer.state.params
        try:
            new = jax.tree.map(lambda c, w: jnp.asarray(w, c.dtype).reshape(c.shape), current,
                               weights)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"set_weights: weights do not match the policy's params: {e}"
                              ) from None
        self._trainer.state = self._trainer.state._replace(params=new)

    def compute_actions(self, obs_batch: Any, explore: bool = False) -> tuple[np.ndarray, list,
                                                                              dict]:
        """Actions for a batch of raw observations: ``(actions, [], extras)``."""
        return self._trainer._compute_batch(list(obs_batch), explore)

    def compute_single_action(self, obs: Any, explore: bool = False) -> tuple[Any, list, dict]:
        actions, state, extras = self._trainer._compute_batch([obs], explore)
        return actions[0], state, {k: v[0] for k, v in extras.items()}

    def get_state(self) -> dict:
        return {"weights": self.get_weights()}

    def set_state(self, state: Mapping) -> None:
        self.set_weights(state["weights"])


class PolicyModel:
    """Forward passes of the policy's network on raw observations (preprocessed and filtered)."""

    def __init__(self, trainer: Trainer):
        self._trainer = trainer
        spec = trainer.spec
        algo_config = trainer.algo_config
        self.dist_class = None
        self.kind = trainer.definition.model
        self._q_function = None
        if self.kind == "actor_q":
            # A policy plus critics (DDPG, TD3, SAC): the module gives the critic's forward.
            from jrl.ops.filters import get_filter

            q_fn, obs_filter = trainer.definition.require("q_function")(algo_config, spec), get_filter(
                algo_config.observation_filter)
            self._q_function = jax.jit(lambda params, fstate, obs, actions: q_fn(
                params, obs_filter.apply(fstate, obs), actions))
            return
        if self.kind == "q":
            self.network = catalog.make_q_network(spec, algo_config.model,
                                                  dueling=algo_config.dueling,
                                                  hiddens=tuple(algo_config.hiddens))
        elif self.kind == "deterministic":
            self.network = catalog.make_deterministic_policy(spec, algo_config.model)
        else:
            self.network = catalog.make_actor_critic(spec, algo_config.model)
            self.dist_class = (catalog.make_distribution(spec, _dummy_dist_params(spec))
                               .__class__)
        from jrl.ops.filters import get_filter

        obs_filter = get_filter(algo_config.observation_filter)
        self._forward = jax.jit(lambda params, fstate, obs: self.network.apply(
            params, obs_filter.apply(fstate, obs)))

    def _run(self, obs_batch: Any) -> Any:
        obs = self._trainer._preprocess(list(obs_batch))
        state = self._trainer.state
        return self._forward(state.params, state.obs_filter, obs)

    def _no(self, what: str) -> ConfigError:
        return ConfigError(f"{self._trainer.algo_name}'s policy network has no {what}; use "
                           "actions()")

    def actions(self, obs_batch: Any) -> np.ndarray:
        """Greedy actions ``[N, ...]`` for a batch of raw observations."""
        return self._trainer._compute_batch(list(obs_batch), False)[0]

    def _critic(self, obs_batch: Any, actions: Any = None) -> np.ndarray:
        obs_list = list(obs_batch)
        if actions is None and not self._trainer.spec.discrete:
            actions = self._trainer._compute_batch(obs_list, False)[0]
        state = self._trainer.state
        return np.asarray(self._q_function(
            state.params, state.obs_filter, self._trainer._preprocess(obs_list),
            None if actions is None else jnp.asarray(actions, jnp.float32)))

    def value_function(self, obs_batch: Any) -> np.ndarray:
        """State values ``[N]`` (actor-critic algorithms), max Q-values (DQN) or the critic's
        Q-values of the greedy actions (DDPG, TD3, SAC)."""
        if self.kind == "deterministic":
            raise self._no("value function")
        if self._q_function is not None:
            q = self._critic(obs_batch)
            if not self._trainer.spec.discrete:
                return q
            greedy = self.actions(obs_batch)
            return np.take_along_axis(q, greedy[:, None].astype(np.int64), axis=-1)[:, 0]
        out = self._run(obs_batch)
        if self.dist_class is None:
            return np.asarray(out).max(axis=-1)
        return np.asarray(out[1])

    def q_values(self, obs_batch: Any, actions: Any = None) -> np.ndarray:
        """Q-values ``[N, num_actions]`` (DQN, discrete SAC), or the first critic's ``Q(s, a)``
        ``[N]`` of ``actions`` (default: the greedy ones) for DDPG, TD3 and box-action SAC."""
        if self.kind == "deterministic":
            raise self._no("Q-values")
        if self._q_function is not None:
            return self._critic(obs_batch, actions)
        if self.dist_class is not None:
            raise ConfigError(f"{self._trainer.algo_name} has no Q-values; use value_function")
        return np.asarray(self._run(obs_batch))

    def distribution(self, obs_batch: Any):
        """The action distribution for a batch of raw observations (actor-critic algorithms)."""
        if self.dist_class is None:
            raise ConfigError(f"{self._trainer.algo_name} has no action distribution")
        dist_params, _ = self._run(obs_batch)
        return catalog.make_distribution(self._trainer.spec, dist_params)

    def logp(self, obs_batch: Any, actions: Any) -> np.ndarray:
        """Log-probabilities ``[N]`` of ``actions`` under the policy."""
        return np.asarray(self.distribution(obs_batch).log_prob(jnp.asarray(actions)))

    def summary(self) -> str:
        """Parameter paths, shapes and the total count."""
        return catalog.param_summary(self._trainer.state.params)

    def num_params(self) -> int:
        return catalog.count_params(self._trainer.state.params)


def _dummy_dist_params(spec):
    if spec.discrete:
        return jnp.zeros((1, spec.num_actions))
    return (jnp.zeros((1, *spec.action_shape)), jnp.zeros((1, *spec.action_shape)))


class Trainer:
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
        if self.logdir is None and (log_to_disk or self.algo_config.monitor):
            self.logdir = make_logdir(local_dir or default_results_dir(), experiment,
                                      self.algo_name, self.env_id)
        video_dir = os.path.join(self.logdir, "videos") if self.algo_config.monitor else None
        self._setup_sampling(video_dir, address)
        self._act = jax.jit(self.algorithm.act, static_argnums=3)
        self._policy_fn = jax.jit(self.algorithm.policy)
        self._action_key = jax.random.PRNGKey(self.algo_config.seed + 7919)
        self.iteration = 0
        self.timesteps_total = 0
        self.episodes_total = 0
        self.time_total_s = 0.0
        self._recent_episodes: collections.deque = collections.deque(
            maxlen=self.algo_config.metrics_smoothing_episodes)
        self.experiment_id = uuid.uuid4().hex
        self._policy: Policy | None = None
        self._result_logger: ResultLogger | None = None
        if log_to_disk:
            os.makedirs(self.logdir, exist_ok=True)
            params = {"algo": self.algo_name, **jsonable(self.config)}
            self._result_logger = ResultLogger(self.logdir, params)

    def __new__(cls, *args: Any, **kwargs: Any):
        # A JAX env id (``gymnax:...``) trains with the fully-jitted loop instead of workers.
        if not issubclass(cls, _JaxEnvTrainer) and _is_jax_env(_env_argument(args, kwargs)):
            return super().__new__(_anakin_variant(cls))
        return super().__new__(cls)

    # -- construction helpers -------------------------------------------------------------------

    def _setup_sampling(self, video_dir: str | None, address: str | None) -> None:
        """Rollout workers, the algorithm, its initial state and the execution plan."""
        if self.algo_config.num_seeds > 1:
            raise ConfigError(f"num_seeds={self.algo_config.num_seeds} needs a JAX env "
                              f"(e.g. 'gymnax:CartPole-v1'); '{self.env_id}' is a gymnasium env")
        self.workers = WorkerSet.create(self.env_id, self.algo_config, self.definition,
                                        video_dir=video_dir, address=address)
        local = self.workers.local_worker()
        self.spec = local.spec
        self.algorithm = local.algorithm
        self.callbacks = local.callbacks
        self.observation_space = local.env.single_observation_space
        self.action_space = local.action_space
        self.state = _jit_init(self.algorithm)(jax.random.PRNGKey(self.algo_config.seed))
        self._plan = self._make_plan()

    def _preprocess(self, obs_list: list) -> np.ndarray:
        """Raw observations -> a preprocessed batch (checked against the observation space)."""
        preprocessor = self.workers.local_worker().preprocessor
        for obs in obs_list:
            preprocessor.check(obs)
        return np.stack([preprocessor.transform(o) for o in obs_list])

    def _make_plan(self):
        plan = registry.plan_class(self.definition.plan)
        return plan(self.definition, self.algorithm, self.workers, self.algo_config, self.spec)

    @classmethod
    def from_checkpoint(cls, path: str, **kwargs: Any) -> Trainer:
        """A trainer rebuilt from a checkpoint's metadata (algo, env, config), then restored."""
        path = ckpt.resolve_checkpoint(path)
        meta = ckpt.load_metadata(path)
        algo = meta.get("algo")
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
        steps_this_iter, learner, episodes, extra = self._run_iteration(start)
        self.iteration += 1
        self.timesteps_total += steps_this_iter
        self.episodes_total += len(episodes)
        window = list(self._recent_episodes)
        self._recent_episodes.extend(episodes)
        smoothing = cfg.metrics_smoothing_episodes
        shown = episodes if len(episodes) >= smoothing else (
            window[-(smoothing - len(episodes)):] + episodes if window else episodes)
        time_this_iter = time.time() - start
        self.time_total_s += time_this_iter
        result: dict[str, Any] = _summarize_episodes(shown)
        result.update(
            episodes_this_iter=len(episodes),
            episodes_total=self.episodes_total,
            timesteps_this_iter=steps_this_iter,
            timesteps_total=self.timesteps_total,
            num_env_steps_sampled=self.timesteps_total,
            training_iteration=self.iteration,
            time_this_iter_s=time_this_iter,
            time_total_s=self.time_total_s,
            info={"learner": {"default_policy": learner},
                  "num_steps_sampled": self.timesteps_total,
                  "num_steps_trained": int(self.state.num_updates)},
            num_workers=cfg.num_workers,
            num_healthy_workers=len(self.workers.remote_workers()),
            num_worker_restarts=self.workers.num_worker_restarts,
            done=False,
            experiment_id=self.experiment_id,
            date=time.strftime("%Y-%m-%d_%H-%M-%S"),
            timestamp=int(time.time()),
            hostname=socket.gethostname(),
            node_ip="127.0.0.1",
            pid=os.getpid(),
            config=jsonable(self.config),
        )
        result.update(extra)
        if cfg.evaluation_interval and self.iteration % cfg.evaluation_interval == 0:
            result.update(self.evaluate())
        self.callbacks.on_train_result(trainer=self, result=result)
        if self._result_logger is not None:
            self._result_logger.log({k: v for k, v in result.items() if k != "config"})
        return result

    def _run_iteration(self, start: float) -> tuple[int, dict, list[dict], dict]:
        """Samples and learns until the iteration's step/time minimum is met; returns the env
        steps, learner stats, completed episodes and extra result keys."""
        cfg = self.algo_config
        steps_this_iter, metrics_list = 0, []
        while True:
            self.state, metrics, steps = self._plan.step(self.state)
            steps_this_iter += steps
            if metrics is not None:
                metrics_list.append(metrics)
            enough_steps = steps_this_iter >= cfg.timesteps_per_iteration
            if enough_steps and time.time() - start >= cfg.min_iter_time_s:
                break
        learner = {}
        if metrics_list:
            learner = jax.tree.map(lambda *xs: float(np.mean([np.asarray(x) for x in xs])),
                                   *metrics_list)
        # Plans with their own bookkeeping (queue sizes, staleness, idle time) report it here.
        extra = self._plan.stats() if hasattr(self._plan, "stats") else {}
        return steps_this_iter, learner, self.workers.pop_episodes(), extra

    def rollout_episodes(self, num_episodes: int, *, explore: bool = False, seed: int = 10_000,
                         max_steps: int | None = None, record: bool = False) -> list[dict]:
        """Runs ``num_episodes`` episodes with the current policy outside training; each is
        ``{"episode_reward", "episode_len"}`` (plus ``obs``/``actions``/``rewards`` with
        ``record``)."""
        return run_episodes(self._act, self._policy_fn(self.state),
                            self.workers.local_worker().preprocessor, self._eval_config.env,
                            self._eval_config, num_episodes, explore=explore, seed=seed,
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

    def _compute_batch(self, obs_list: list, explore: bool) -> tuple[np.ndarray, list, dict]:
        obs = self._preprocess(obs_list)
        self._action_key, key = jax.random.split(self._action_key)
        action, extras = self._act(self._policy_fn(self.state), obs, key, bool(explore))
        action = np.asarray(action)
        if not self.spec.discrete and self.algo_config.clip_actions:
            action = np.clip(action, np.asarray(self.spec.action_low).reshape(
                self.spec.action_shape), np.asarray(self.spec.action_high).reshape(
                self.spec.action_shape))
        return action, [], {k: np.asarray(v) for k, v in extras.items()}

    def compute_action(self, observation: Any, state: list | None = None,
                       prev_action: Any = None, prev_reward: float | None = None,
                       info: dict | None = None, policy_id: str = "default_policy",
                       full_fetch: bool = False, explore: bool | None = False) -> Any:
        """The action for one raw observation (preprocessed and filtered first).

        With ``full_fetch`` returns ``(action, state_out, extras)`` as RLlib does.
        ``state``, ``prev_action``, ``prev_reward`` and ``info`` are accepted for RLlib
        compatibility; jrl's networks are not recurrent, so they do not change the action.
        """
        if policy_id != "default_policy":
            raise ConfigError(f"unknown policy_id '{policy_id}' (jrl trains one policy: "
                              "'default_policy')")
        explore = self.algo_config.explore if explore is None else explore
        actions, state_out, extras = self._compute_batch([observation], explore)
        action = actions[0]
        if full_fetch:
            return action, state_out, {k: v[0] for k, v in extras.items()}
        return action

    compute_single_action = compute_action

    def compute_actions(self, observations: Mapping | list, explore: bool | None = False
                        ) -> Any:
        """Actions for a dict ``{key: obs}`` (returns a dict) or a list of observations."""
        explore = self.algo_config.explore if explore is None else explore
        if isinstance(observations, Mapping):
            keys = list(observations)
            actions, _, _ = self._compute_batch([observations[k] for k in keys], explore)
            return dict(zip(keys, actions, strict=True))
        return self._compute_batch(list(observations), explore)[0]

    def get_policy(self, policy_id: str = "default_policy") -> Policy:
        if policy_id != "default_policy":
            raise ConfigError(f"unknown policy_id '{policy_id}' (jrl trains one policy: "
                              "'default_policy')")
        if self._policy is None:
            self._policy = Policy(self)
        return self._policy

    def get_weights(self) -> dict[str, Any]:
        return {"default_policy": self.get_policy().get_weights()}

    def set_weights(self, weights: Mapping[str, Any]) -> None:
        self.get_policy().set_weights(weights["default_policy"])

    # -- checkpoints ----------------------------------------------------------------------------

    def _metadata(self) -> dict[str, Any]:
        return {"algo": self.algo_name, "env": self.env_id, "config": jsonable(self.config),
                "timesteps_total": self.timesteps_total, "episodes_total": self.episodes_total,
                "time_total_s": self.time_total_s, "training_iteration": self.iteration,
                "python": platform.python_version(), "jax_version": jax.__version__}

    def save(self, checkpoint_dir: str | None = None) -> str:
        """Writes ``checkpoint_<iteration>/`` (atomically) and returns its path."""
        directory = checkpoint_dir or self.logdir
        if directory is None:
            raise CheckpointError("save() needs a checkpoint_dir when the trainer has no logdir")
        return ckpt.save_checkpoint(directory, self.iteration,
                                    {"algo": _to_host(self._checkpoint_state())},
                                    self._metadata())

    def restore(self, checkpoint_path: str) -> None:
        """Restores state and counters from a checkpoint written by ``save``."""
        path = ckpt.resolve_checkpoint(checkpoint_path)
        meta = ckpt.load_metadata(path)
        if meta.get("algo") != self.algo_name:
            raise CheckpointError(f"checkpoint '{path}' was written by {meta.get('algo')}, "
                                  f"not {self.algo_name}")
        abstract = jax.eval_shape(lambda: {"algo": self._checkpoint_state()})
        restored = ckpt.restore_state(path, abstract)
        self._load_checkpoint_state(jax.tree.map(jnp.asarray, restored["algo"]))
        self.iteration = int(meta.get("training_iteration", meta.get("iteration", 0)))
        self.timesteps_total = int(meta.get("timesteps_total", 0))
        self.episodes_total = int(meta.get("episodes_total", 0))
        self.time_total_s = float(meta.get("time_total_s", 0.0))

    def _checkpoint_state(self) -> Any:
        return self.state

    def _load_checkpoint_state(self, state: Any) -> None:
        self.state = state

    # -- lifecycle ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stops the execution plan's threads (if any), closes envs and result files."""
        stop_plan = getattr(getattr(self, "_plan", None), "stop", None)
        if stop_plan is not None:
            stop_plan()
        self.workers.stop()
        if self._result_logger is not None:
            self._result_logger.close()

    cleanup = stop

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"{self.algo_name}Trainer(env={self.env_id!r}, iteration={self.iteration})"


def _jit_init(algorithm: Any):
    # init runs once: XLA's backend optimizations would cost more compile time (~1 s of a cold
    # start on 2 cores) than they could ever save.
    return jax.jit(algorithm.init, compiler_options={"xla_backend_optimization_level": 0})


def _env_argument(args: tuple, kwargs: dict) -> Any:
    """The env a ``Trainer(...)`` call names: ``env=``, the second positional, or the config's."""
    if "env" in kwargs and kwargs["env"] is not None:
        return kwargs["env"]
    config = kwargs.get("config")
    if len(args) >= 2 and isinstance(args[1], str):
        return args[1]
    if args and isinstance(args[0], Mapping):  # PPOTrainer(config, env)
        config = args[0]
        if len(args) >= 2:
            return args[1]
    if len(args) >= 3:
        config = args[2]
    if isinstance(config, Mapping):
        return config.get("env")
    return getattr(config, "env", None)


def _is_jax_env(env: Any) -> bool:
    from jrl.rollout.jax_envs import is_jax_env_id

    return isinstance(env, str) and is_jax_env_id(env)


def _anakin_variant(cls: type) -> type:
    from jrl.anakin_trainer import AnakinTrainerMixin as Mixin

    return type(cls.__name__, (Mixin, cls), {"__module__": cls.__module__})


class _JaxEnvTrainer:
    """Marker base of trainers that run the fully-jitted loop (``jrl.anakin_trainer``)."""


def _restorable_callbacks(spec: Any) -> Any:
    """Callbacks from checkpoint metadata: import paths come back, anything else is dropped."""
    if isinstance(spec, str):
        try:
            from jrl.config import resolve_import

            return resolve_import(spec, "callbacks")
        except ConfigError as e:
            logger.warning("not restoring callbacks: %s", e)
    return None


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
