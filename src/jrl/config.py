"""Frozen config dataclasses and their strict parser.

Configs are frozen dataclasses. Users hand in plain dicts (RLlib style), JSON or YAML; ``parse``
checks every key against the dataclass fields (unknown key -> ``ConfigError`` naming the dotted path
and the closest valid key), checks types and ranges, and builds the frozen instance. ``merge`` layers
overrides on an existing config: defaults < YAML < ``--config`` JSON < flags.

Field metadata understood by the parser:
  ``key``: external name when it is not a valid Python identifier (``lambda``).
  ``min`` / ``max``: inclusive numeric bounds.  ``gt``: exclusive lower bound.
  ``choices``: allowed values.
  ``overrides``: the field is a dict of overrides of this same config (``evaluation_config``),
    checked key by key like the config itself.

Beyond a field's own bounds: numbers are finite, ints fit in 32 bits, NumPy scalars and arrays
count as the Python numbers and lists they hold, ``LIMITS`` bounds well-known keys (seed, lr,
iteration sizes) for every algorithm, and a whole config is refused when its buffers and batches
cannot fit in this machine's memory (``check_memory``), before anything is allocated.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import json
import math
import os
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar, Union

from jrl.errors import ConfigError

C = TypeVar("C")

# Every int in a config fits in 32 bits (JAX's default integer; seeds have their own range).
INT_MIN, INT_MAX = -(2**31), 2**31 - 1

# Limits by key, for every config class that has the key (algorithm configs redeclare common
# keys with their own defaults). They stop values that would hang or overflow long before they
# mean anything: (lowest, highest, why).
LIMITS: dict[str, tuple[float | None, float | None, str]] = {
    "seed": (0, 2**31 - 1, ""),
    "lr": (None, 10.0, ""),
    "actor_lr": (None, 10.0, ""),
    "critic_lr": (None, 10.0, ""),
    "stepsize": (None, 10.0, ""),
    "num_sgd_iter": (None, 10_000, ""),
    "evaluation_num_episodes": (None, 100_000, ""),
    "timesteps_per_iteration": (None, 100_000_000, ""),
    "min_iter_time_s": (None, 86_400.0, " (one day)"),
    "metrics_smoothing_episodes": (None, 1_000_000, ""),
    "num_workers": (None, 4096, ""),
    "num_envs_per_worker": (None, 1_000_000, ""),
    "num_seeds": (None, 100_000, ""),
    "rollout_fragment_length": (None, 100_000_000, ""),
    "train_batch_size": (None, 1_000_000_000, ""),
    "sgd_minibatch_size": (None, 1_000_000_000, ""),
    "buffer_size": (None, 1_000_000_000, ""),
    "episodes_per_batch": (None, 10_000_000, ""),
}


def field(default: Any = dataclasses.MISSING, *, key: str | None = None, min: float | None = None,
          max: float | None = None, gt: float | None = None, choices: tuple | None = None,
          overrides: bool | None = None, default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with validation metadata (see module docstring)."""
    meta = {k: v for k, v in dict(key=key, min=min, max=max, gt=gt, choices=choices,
                                  overrides=overrides).items() if v is not None}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _frozen_dict(**kwargs: Any) -> Any:
    return dataclasses.field(default_factory=lambda: dict(kwargs))


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExplorationConfig:
    """Epsilon-greedy exploration (RLlib's ``exploration_config``).

    Attributes:
      type: exploration kind; ``EpsilonGreedy`` is the one jrl has for discrete actions.
      initial_epsilon: epsilon at timestep 0.
      final_epsilon: epsilon after ``epsilon_timesteps`` env steps.
      epsilon_timesteps: env steps over which epsilon decays linearly.
    """

    type: str = field("EpsilonGreedy", choices=("EpsilonGreedy",))
    initial_epsilon: float = field(1.0, min=0.0, max=1.0)
    final_epsilon: float = field(0.02, min=0.0, max=1.0)
    epsilon_timesteps: int = field(10_000, min=1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Network architecture (RLlib's ``model`` dict).

    Attributes:
      fcnet_hiddens: sizes of the fully connected layers.
      fcnet_activation: activation of the fully connected layers.
      conv_filters: ``[[out_channels, [kh, kw], stride], ...]`` for image inputs; ``None`` picks the
        Nature-CNN stack for 84x84 inputs.
      conv_activation: activation of the conv layers.
      vf_share_layers: actor-critic algorithms share the torso between policy and value heads.
      free_log_std: continuous policies learn a state-independent log std.
      dueling: override the algorithm's dueling setting for Q networks (``None``: keep it).
      grayscale: image observations are converted to one channel.
      dim: side of the square image after resizing.
      custom_model: name given to ``jrl.ModelCatalog.register_custom_model`` (``None``: the
        built-in network).
      custom_model_config: keyword arguments for the custom model's constructor.
      custom_preprocessor: name given to ``jrl.ModelCatalog.register_custom_preprocessor``.
      custom_action_dist: name given to ``jrl.ModelCatalog.register_custom_action_dist``.
      framestack: the DeepMind Atari wrappers stack the last 4 frames (``preprocessor_pref:
        deepmind``).
      use_lstm: wrap the network's torso in an LSTM (RLlib's auto-wrap): the policy carries a
        recurrent state between steps and learns on sequences of ``max_seq_len`` steps.
      use_gru: the same with a GRU cell (jrl's key; RLlib has only ``use_lstm``/``use_attention``).
      lstm_cell_size: units of the LSTM (or GRU) cell.
      max_seq_len: steps per training sequence (truncated backpropagation through time).
      lstm_use_prev_action: the cell also reads the previous action (one-hot if discrete).
      lstm_use_prev_reward: the cell also reads the previous reward.
      lstm_use_prev_action_reward: RLlib's older key: both of the above.
    """

    fcnet_hiddens: tuple[int, ...] = (256, 256)
    fcnet_activation: str = field("tanh", choices=("tanh", "relu", "swish", "elu", "gelu", "linear"))
    conv_filters: tuple[tuple[int, tuple[int, int], int], ...] | None = None
    conv_activation: str = field("relu", choices=("tanh", "relu", "swish", "elu", "gelu", "linear"))
    vf_share_layers: bool = False
    free_log_std: bool = False
    dueling: bool | None = None
    grayscale: bool = False
    dim: int = field(84, min=8)
    custom_model: str | None = None
    custom_model_config: dict = _frozen_dict()
    custom_preprocessor: str | None = None
    custom_action_dist: str | None = None
    framestack: bool = True
    use_lstm: bool = False
    use_gru: bool = False
    lstm_cell_size: int = field(256, min=1)
    max_seq_len: int = field(20, min=1)
    lstm_use_prev_action: bool = False
    lstm_use_prev_reward: bool = False
    lstm_use_prev_action_reward: bool = False

    def validate(self) -> None:
        if self.use_lstm and self.use_gru:
            raise ConfigError("model.use_lstm and model.use_gru are both set; pick one cell")

    @property
    def recurrent(self) -> bool:
        """Whether the network carries state between steps (``use_lstm`` or ``use_gru``)."""
        return self.use_lstm or self.use_gru

    @property
    def use_prev_action(self) -> bool:
        return self.lstm_use_prev_action or self.lstm_use_prev_action_reward

    @property
    def use_prev_reward(self) -> bool:
        return self.lstm_use_prev_reward or self.lstm_use_prev_action_reward


@dataclasses.dataclass(frozen=True, kw_only=True)
class MultiAgentConfig:
    """Several policies in one trainer (RLlib's ``multiagent`` dict).

    Attributes:
      policies: ``{policy_id: (policy_class_or_None, obs_space, act_space, config_overrides)}``
        or ``{policy_id: {"observation_space": ..., "action_space": ..., "config": {...}}}``
        (spaces may be None/omitted: inferred from the env's agents mapped to the policy), or
        a list or set of policy ids. Empty: one ``default_policy`` for every agent.
      policy_mapping_fn: ``fn(agent_id, episode, worker, **kwargs) -> policy_id`` (or
        ``fn(agent_id)``), or its ``"module:function"`` import path.
      policies_to_train: the policies that learn (``None``: all); the others stay unchanged.
      count_steps_by: ``env_steps`` (one per env step) or ``agent_steps`` (one per agent
        action) for ``timesteps_total`` and ``timesteps_per_iteration``.
    """

    policies: Any = _frozen_dict()
    policy_mapping_fn: Any = None
    policies_to_train: tuple[str, ...] | None = None
    count_steps_by: str = field("env_steps", choices=("env_steps", "agent_steps"))

    def validate(self) -> None:
        if not isinstance(self.policies, (Mapping, list, tuple, set, frozenset)):
            raise ConfigError("config key 'multiagent.policies' must be a mapping of policy ids "
                              f"or a list/set of them, got {_describe(self.policies)}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class CommonConfig:
    """Keys every algorithm understands; names follow RLlib's where users know them.

    Attributes:
      env: environment id (gymnasium id or a name given to ``jrl.register_env``).
      env_config: dict passed to registered env creators (and as kwargs to ``gymnasium.make``).
      framework: jrl always runs on JAX; RLlib's values (``tf``, ``tf2``, ``torch``) are accepted
        so RLlib configs keep working, and the trainer logs that JAX is used instead.
      num_workers: rollout workers as Ray actors; 0 samples in the trainer's process.
      num_envs_per_worker: envs stepped together in each worker's vector env.
      rollout_fragment_length: steps per env in one sampled fragment.
      train_batch_size: env steps (on-policy) or replay samples (off-policy) per learner update.
      gamma: discount factor.
      lr: learning rate.
      grad_clip: clip gradients to this global norm (``None``: no clipping).
      seed: seed for params, exploration and envs.
      explore: act stochastically (sampling / epsilon-greedy) while training.
      horizon: cut episodes after this many steps (truncation); ``None`` keeps the env's limit.
      clip_rewards: ``True`` clips rewards to their sign, a number clips to ``[-x, x]``.
      clip_actions: clip continuous actions to the action space bounds before ``env.step``.
      observation_filter: ``NoFilter`` or ``MeanStdFilter`` (running mean/std normalization).
      model: network architecture, see ``ModelConfig``.
      callbacks: a ``jrl.DefaultCallbacks`` subclass or instance, a dict of functions keyed by
        hook name, or a ``"module:attr"`` import path.
      metrics_smoothing_episodes: episode statistics cover at least this many recent episodes.
      timesteps_per_iteration: each ``train()`` samples at least this many env steps.
      min_iter_time_s: each ``train()`` runs at least this many seconds.
      evaluation_interval: run greedy evaluation every this many iterations (``None``: never).
      evaluation_num_episodes: episodes per evaluation.
      evaluation_config: config overrides for evaluation episodes, checked like the config itself
        (e.g. ``{"explore": True}``, ``{"env_config": {...}}``, ``{"horizon": 200}``).
        Evaluation is greedy unless this sets ``explore``.
      num_gpus: GPUs for the learner; fractions share a GPU between trainers.
      num_cpus_per_worker / num_gpus_per_worker / custom_resources_per_worker: Ray resources
        for each rollout worker.
      num_cpus_for_driver: CPUs reserved for the trainer process (Tune placement).
      recreate_failed_workers: replace a rollout worker that dies and re-sample its fragment.
      ignore_worker_failures: drop a dead worker and go on with the others (when not recreating).
      log_level: ``DEBUG``, ``INFO``, ``WARN`` or ``ERROR``.
      output: directory to write sampled experiences to as JSON lines in RLlib's SampleBatch
        format (``"logdir"``: the trainer's results directory; ``None``: off).
      output_compress_columns: columns stored as base64 of compressed ``.npy`` bytes.
      output_compress_codec: their codec: ``lz4`` (default; inflates several times faster) or
        ``zlib``. Readers take either (the bytes name their codec).
      output_max_file_size: start a new output file after this many bytes.
      num_seeds: independent seeds trained at once with ``vmap`` (JAX envs only, e.g.
        ``gymnax:CartPole-v1``).
      monitor: record videos of the first env's training episodes into ``<logdir>/videos``
        (needs moviepy: ``pip install 'jrl[video]'``).
      nan_policy: what a NaN or infinite reward or observation from an env does: ``raise`` an
        ``EnvError`` naming the env, worker and step, or ``skip_episode`` (the episode ends at
        that step with reward 0, is left out of the episode statistics, and the env is reset).
      restart_failed_sub_environments: an env whose ``step``/``reset`` raises is rebuilt and
        reset in place (its episode is dropped) instead of failing the worker.
      sample_timeout_s: a remote worker whose fragment takes longer than this is replaced like
        a crashed one (``None``: wait forever).
      store_buffer_in_checkpoints: replay algorithms save the replay buffer in checkpoints, so a
        restored run goes on with the same data.
      preprocessor_pref: ``deepmind`` wraps Atari envs in the DeepMind wrappers (no-op reset,
        frame skip with max-pool, episodic life, fire reset, 84x84 gray, 4-frame stack);
        ``rllib`` (or ``None``) leaves frames to the image preprocessor (resize to ``model.dim``).
      vectorization: how each worker steps its ``num_envs_per_worker`` envs: ``sync`` (one
        process), ``async`` (gymnasium's ``AsyncVectorEnv``, a subprocess per env) or
        ``envpool`` (envpool's C++ thread pool; Atari and classic-control ids).
      multiagent: policies, agent -> policy mapping and which policies learn, see
        ``MultiAgentConfig``.
    """

    env: str | None = None
    env_config: dict = _frozen_dict()
    framework: str = field("jax", choices=("jax", "tf", "tf2", "tfe", "torch"))
    num_workers: int = field(0, min=0)
    num_envs_per_worker: int = field(1, min=1)
    rollout_fragment_length: int = field(200, min=1)
    train_batch_size: int = field(4000, min=1)
    gamma: float = field(0.99, min=0.0, max=1.0)
    lr: float = field(5e-4, gt=0.0)
    grad_clip: float | None = field(None, gt=0.0)
    seed: int = 0
    explore: bool = True
    horizon: int | None = field(None, min=1)
    clip_rewards: bool | float | None = None
    clip_actions: bool = True
    observation_filter: str = field("NoFilter", choices=("NoFilter", "MeanStdFilter"))
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    callbacks: Any = None
    metrics_smoothing_episodes: int = field(100, min=1)
    timesteps_per_iteration: int = field(0, min=0)
    min_iter_time_s: float = field(0.0, min=0.0)
    evaluation_interval: int | None = field(None, min=1)
    evaluation_num_episodes: int = field(10, min=1)
    evaluation_config: dict = field(overrides=True, default_factory=dict)
    num_gpus: float = field(0.0, min=0.0)
    num_cpus_per_worker: float = field(1.0, min=0.0)
    num_gpus_per_worker: float = field(0.0, min=0.0)
    custom_resources_per_worker: dict = _frozen_dict()
    num_cpus_for_driver: float = field(1.0, min=0.0)
    recreate_failed_workers: bool = True
    ignore_worker_failures: bool = False
    log_level: str = field("WARN", choices=("DEBUG", "INFO", "WARN", "WARNING", "ERROR"))
    output: str | None = None
    output_compress_columns: tuple[str, ...] = ("obs", "new_obs")
    output_compress_codec: str = field("lz4", choices=("lz4", "zlib"))
    output_max_file_size: int = field(64 * 1024 * 1024, min=1)
    monitor: bool = False
    num_seeds: int = field(1, min=1)
    nan_policy: str = field("raise", choices=("raise", "skip_episode"))
    restart_failed_sub_environments: bool = False
    sample_timeout_s: float | None = field(None, gt=0.0)
    store_buffer_in_checkpoints: bool = False
    preprocessor_pref: str | None = field("deepmind", choices=("deepmind", "rllib", None))
    vectorization: str = field("sync", choices=("sync", "async", "envpool"))
    multiagent: MultiAgentConfig = dataclasses.field(default_factory=MultiAgentConfig)


INPUT_ESTIMATORS = ("is", "wis")


@dataclasses.dataclass(frozen=True, kw_only=True)
class InputConfig:
    """Keys of algorithms that learn from recorded experience (RLlib's offline keys).

    Attributes:
      input: ``"sampler"`` (sample the env), a directory of ``.json`` files, a glob, a file,
        a list of files/globs, or ``{source: probability}`` mixing them
        (``{"sampler": 0.4, "data/": 0.6}``; probabilities sum to 1).
      shuffle_buffer_size: read recorded rows through a buffer of this many, in random order
        (0: file order).
      input_evaluation: off-policy estimators of the learned policy's value run on every batch
        read from files: ``"is"`` and/or ``"wis"`` (results under
        ``off_policy_estimator/<name>/...``).
      postprocess_inputs: run the algorithm's trajectory postprocessing on batches read from
        files with the CURRENT policy, episode by episode (rows are cut wherever ``eps_id``/``t``
        jump, the cut bootstrapping from the current value of ``new_obs``): GAE advantages and
        value targets for PPO/A2C/PG, n-step returns for DQN, returns for MARWIL. On-policy
        algorithms (PPO, A2C, PG) read files only with it.
    """

    input: str | tuple[str, ...] | dict = "sampler"
    shuffle_buffer_size: int = field(0, min=0)
    input_evaluation: tuple[str, ...] = INPUT_ESTIMATORS
    postprocess_inputs: bool = False

    def validate(self) -> None:
        check_input(self.input)
        if not isinstance(self.postprocess_inputs, bool):
            raise ConfigError("config key 'postprocess_inputs' must be true or false, got "
                              f"{self.postprocess_inputs!r}")
        for name in self.input_evaluation:
            if name not in INPUT_ESTIMATORS:
                raise ConfigError(f"config key 'input_evaluation' holds unknown estimator "
                                  f"'{name}' (available: {', '.join(INPUT_ESTIMATORS)})")


def check_on_policy_input(config: Any, algo: str) -> None:
    """Validates ``InputConfig`` keys of an on-policy algorithm: it learns from files only with
    ``postprocess_inputs`` (its advantages come from the current value function) and a
    feed-forward model (recorded rows hold no recurrent state)."""
    InputConfig.validate(config)
    if config.input == "sampler":
        return
    if not config.postprocess_inputs:
        raise ConfigError(f"{algo} learns from 'input' files only with postprocess_inputs: true "
                          "(advantages are recomputed with the current value function)")
    if config.model.recurrent:
        raise ConfigError(f"{algo} with 'input' files needs a feed-forward model: recorded rows "
                          "hold no recurrent state (set model.use_lstm: false)")


def check_input(value: Any) -> None:
    """Raises ``ConfigError`` unless ``value`` is an ``input``: a source, a list of sources or
    ``{source: probability}`` with probabilities summing to 1."""
    if isinstance(value, str):
        if not value:
            raise ConfigError("config key 'input' is empty")
        return
    if isinstance(value, (list, tuple)):
        if not value or not all(isinstance(v, str) and v for v in value):
            raise ConfigError("config key 'input' as a list must hold file names or globs")
        if "sampler" in value:
            raise ConfigError("config key 'input': mix 'sampler' with files as a dict of "
                              "probabilities, e.g. {'sampler': 0.5, 'data/': 0.5}")
        return
    if isinstance(value, Mapping):
        if not value:
            raise ConfigError("config key 'input' as a dict must name at least one source")
        for key, p in value.items():
            if not isinstance(p, (int, float)) or isinstance(p, bool) or p < 0:
                raise ConfigError(f"config key 'input.{key}' must be a probability >= 0, "
                                  f"got {p!r}")
        total = sum(float(p) for p in value.values())
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(f"the probabilities of config key 'input' must sum to 1, got "
                              f"{total:g}")
        return
    raise ConfigError("config key 'input' must be 'sampler', a path, a glob, a list of files or "
                      f"a dict of sources to probabilities, got {type(value).__name__}")


# --------------------------------------------------------------------------------------------
# Parsing


def _key_of(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {_key_of(f): f for f in dataclasses.fields(cls)}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is tuple:
        return "list"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    if tp is Any:
        return "any"
    return getattr(tp, "__name__", str(tp))


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Returns ``value`` converted to ``tp`` or raises ConfigError."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    value = _plain(value)
    if origin in (Union, types.UnionType):
        errors = []
        args = typing.get_args(tp)
        # Try exact-kind members first so that ``bool | float`` keeps ``True`` a bool.
        for arg in sorted(args, key=lambda a: 0 if _exact(value, a) else 1):
            try:
                return _coerce(value, arg, path)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(
            f"config key '{path}' must be {_type_name(tp)}, got {_describe(value)}") from None
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"config key '{path}' must be null, got {_describe(value)}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{path}' must be a mapping, got {_describe(value)}")
        return parse(tp, value, path=path)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{path}' must be bool, got {_describe(value)}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise ConfigError(f"config key '{path}' must be int, got {_describe(value)}")
        if not INT_MIN <= value <= INT_MAX:
            raise ConfigError(f"config key '{path}' must be an int between {INT_MIN:,} and "
                              f"{INT_MAX:,}, got {value:.3g}")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{path}' must be float, got {_describe(value)}")
        try:
            value = float(value)
        except OverflowError:  # an int too large for a float
            value = math.inf
        if not math.isfinite(value):
            raise ConfigError(f"config key '{path}' must be a finite number, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{path}' must be str, got {_describe(value)}")
        return value
    if tp is dict or origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{path}' must be a mapping, got {_describe(value)}")
        return dict(value)
    if origin is tuple:
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{path}' must be a list, got {_describe(value)}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(
                f"config key '{path}' must be a list of {len(args)} items, got {_describe(value)}")
        return tuple(_coerce(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    raise ConfigError(f"config key '{path}' has an unsupported type {tp!r}")


def _plain(value: Any) -> Any:
    """NumPy (or JAX) scalars and arrays as the Python numbers and lists they hold."""
    if hasattr(value, "dtype") and hasattr(value, "tolist") and not isinstance(value, type):
        try:
            return value.tolist()
        except Exception:  # not a numeric array after all
            return value
    if isinstance(value, (list, tuple)) and any(hasattr(v, "dtype") for v in value):
        return type(value)(_plain(v) for v in value)
    return value


def _exact(value: Any, tp: Any) -> bool:
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp in (int, float, str):
        return type(_plain(value)) is tp
    return False


def _check_range(value: Any, f: dataclasses.Field, path: str) -> None:
    meta = f.metadata
    if _key_of(f).endswith("hiddens") and isinstance(value, tuple):
        for i, size in enumerate(value):
            if not 1 <= size <= 1_000_000:
                raise ConfigError(f"config key '{path}[{i}]' is a layer size and must be between "
                                  f"1 and 1,000,000, got {size}")
    if _key_of(f) == "conv_filters" and value:
        for i, (channels, kernel, stride) in enumerate(value):
            if channels < 1 or stride < 1 or min(kernel) < 1:
                raise ConfigError(f"config key '{path}[{i}]' must hold sizes >= 1 "
                                  f"([out_channels, [kh, kw], stride]), got "
                                  f"{[channels, list(kernel), stride]}")
    if "choices" in meta and value not in meta["choices"]:
        options = ", ".join(repr(c) for c in meta["choices"])
        near = difflib.get_close_matches(str(value), [str(c) for c in meta["choices"]], n=1)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        raise ConfigError(f"config key '{path}' must be one of {options}, got {value!r}{hint}")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    if "min" in meta and value < meta["min"]:
        raise ConfigError(f"config key '{path}' must be >= {meta['min']}, got {value!r}")
    if "max" in meta and value > meta["max"]:
        raise ConfigError(f"config key '{path}' must be <= {meta['max']}, got {value!r}")
    if "gt" in meta and value <= meta["gt"]:
        raise ConfigError(f"config key '{path}' must be > {meta['gt']}, got {value!r}")
    if _key_of(f) == "clip_rewards" and value <= 0:
        raise ConfigError(f"config key '{path}' must be true, false or a number > 0 (rewards "
                          f"are clipped to [-x, x]), got {value!r}")
    low, high, why = LIMITS.get(_key_of(f), (None, None, ""))
    if (low is not None and value < low) or (high is not None and value > high):
        bound = (f"between {low:,} and {high:,}" if low is not None and high is not None
                 else f">= {low:,}" if low is not None else f"<= {high:,}")
        raise ConfigError(f"config key '{path}' must be {bound}, got {value:.6g}{why}")


def unknown_key_error(key: str, valid: list[str], prefix: str) -> ConfigError:
    """The error for an unknown key, naming its dotted path and the nearest valid key."""
    path = f"{prefix}{key}"
    near = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.5)
    hint = f"; did you mean '{prefix}{near[0]}'?" if near else ""
    return ConfigError(f"unknown config key '{path}'{hint}")


def parse(cls: type[C], data: Mapping[str, Any] | None = None, *, path: str = "") -> C:
    """Builds a frozen ``cls`` from a mapping of external keys, checking every key and value."""
    data = dict(data or {})
    fields = _fields(cls)
    hints = _hints(cls)
    prefix = f"{path}." if path else ""
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise unknown_key_error(key, list(fields), prefix)
        f = fields[key]
        value = _coerce(value, hints[f.name], prefix + key)
        _check_range(value, f, prefix + key)
        if f.metadata.get("overrides"):
            _check_keys(cls, value, prefix + key)
        kwargs[f.name] = value
    instance = cls(**kwargs)
    validate = getattr(instance, "validate", None)
    if callable(validate):
        validate()
    if not path:
        check_memory(instance)
    return instance


# Bytes per env step held in a batch or the replay buffer, counting a small observation (obs and
# next obs, action, reward, flags, log-prob, value, advantage as float32) and the
# copies made while a batch is concatenated and moved to the learner.
_BYTES_PER_STEP = 4 * 16 * 3
# A gymnasium env object with its wrappers and buffers.
_BYTES_PER_ENV = 16 * 1024


def memory_estimate(config: Any) -> dict[str, int]:
    """A lower bound of the bytes ``config``'s batches, replay buffer and envs take, by part
    (observations are counted as a few floats; image observations take far more)."""
    get = lambda key, default=0: getattr(config, key, default) or default  # noqa: E731
    workers = get("num_workers") + 1
    envs = get("num_envs_per_worker", 1) * workers * get("num_seeds", 1)
    fragment = get("rollout_fragment_length", 1) * get("num_envs_per_worker", 1) * workers
    parts = {
        "train_batch_size": get("train_batch_size") * _BYTES_PER_STEP,
        "rollout_fragment_length": fragment * _BYTES_PER_STEP,
        "buffer_size": get("buffer_size") * _BYTES_PER_STEP,
        "num_envs_per_worker": envs * _BYTES_PER_ENV,
    }
    return {k: v for k, v in parts.items() if v}


def machine_memory() -> int | None:
    """Physical memory of this machine in bytes (``None`` where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(config: Any) -> None:
    """Raises ``ConfigError`` with the estimate when ``config`` cannot fit in this machine's
    memory (checked before anything is allocated, so a huge size refuses instead of hanging)."""
    parts = memory_estimate(config)
    total, available = sum(parts.values()), machine_memory()
    if available is None or total <= available:
        return
    biggest = max(parts, key=parts.get)
    names = {"rollout_fragment_length": "rollout_fragment_length x num_envs_per_worker x "
                                        "workers"}
    raise ConfigError(
        f"config needs at least {total / 2**30:.1f} GiB of memory, mostly for "
        f"{names.get(biggest, biggest)} ({parts[biggest] / 2**30:.1f} GiB), and this machine has "
        f"{available / 2**30:.1f} GiB: lower "
        + ("'num_envs_per_worker' or 'rollout_fragment_length'"
           if biggest == "rollout_fragment_length" else f"'{biggest}'"))


def to_dict(config: Any) -> dict[str, Any]:
    """The config as a plain dict of external keys (nested dataclasses become dicts)."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = to_dict(value)
        elif isinstance(value, dict):
            value = dict(value)
        out[_key_of(f)] = value
    return out


def jsonable(value: Any) -> Any:
    """``value`` with tuples as lists and non-JSON objects (callbacks) as import paths."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((jsonable(v) for v in value), key=str)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, type) or callable(value):
        return f"{getattr(value, '__module__', '?')}:{getattr(value, '__qualname__', repr(value))}"
    return repr(value)


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``overrides``; nested mappings merge key by key."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def merge(config: C, *overrides: Mapping[str, Any] | None) -> C:
    """``config`` with each mapping of overrides applied in order, strictly parsed again."""
    data = to_dict(config)
    # Free-form dict fields (env_config, ...) are replaced, not merged, except nested dataclasses.
    for override in overrides:
        if not override:
            continue
        if not isinstance(override, Mapping):
            raise ConfigError(f"config must be a mapping, got {_describe(override)}")
        for key, value in override.items():
            if isinstance(value, Mapping) and isinstance(data.get(key), Mapping) and \
                    _is_dataclass_field(type(config), key):
                data[key] = deep_merge(data[key], value)
            else:
                data[key] = value
    return parse(type(config), data)


def _check_keys(cls: type, data: Mapping[str, Any], path: str) -> None:
    """Checks a dict of overrides of ``cls`` key by key, errors named under ``path``."""
    fields, hints, prefix = _fields(cls), _hints(cls), f"{path}."
    for key, value in data.items():
        if key not in fields:
            raise unknown_key_error(key, list(fields), prefix)
        f = fields[key]
        if dataclasses.is_dataclass(hints[f.name]) and isinstance(value, Mapping):
            _check_keys(hints[f.name], value, prefix + key)
            continue
        _check_range(_coerce(value, hints[f.name], prefix + key), f, prefix + key)


def _is_dataclass_field(cls: type, key: str) -> bool:
    f = _fields(cls).get(key)
    return f is not None and dataclasses.is_dataclass(_hints(cls)[f.name])


def load_file(path: str) -> dict[str, Any]:
    """Reads a YAML or JSON mapping from ``path``."""
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as e:
        raise ConfigError(f"cannot read config file '{path}': {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file '{path}' is not UTF-8 text (byte {e.start})") from None
    try:
        if path.endswith(".json"):
            data = json.loads(text, object_pairs_hook=_unique_keys)
        else:
            data = yaml.load(text, Loader=_unique_keys_loader())  # noqa: S506 (a SafeLoader)
    except (json.JSONDecodeError, yaml.YAMLError, ConfigError) as e:
        first = str(e).strip().splitlines()[0]
        raise ConfigError(f"config file '{path}' is not valid YAML/JSON: {first}") from None
    except RecursionError:
        raise ConfigError(f"config file '{path}' is nested too deeply") from None
    check_depth(data, f"config file '{path}'")
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file '{path}' must hold a mapping, got {type(data).__name__}")
    return dict(data)


MAX_DEPTH = 32


def check_depth(value: Any, what: str, limit: int = MAX_DEPTH) -> None:
    """Raises ``ConfigError`` when mappings/lists in ``value`` nest deeper than ``limit``."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children = list(item.values())
        elif isinstance(item, (list, tuple)):
            children = list(item)
        else:
            continue
        if depth > limit:
            raise ConfigError(f"{what} nests more than {limit} levels deep")
        stack.extend((child, depth + 1) for child in children)


def _unique_keys(pairs: list[tuple[Any, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise ConfigError(f"key '{key}' is defined twice")
        out[key] = value
    return out


def _unique_keys_loader() -> type:
    """A YAML ``SafeLoader`` that refuses a key defined twice in one mapping."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                try:
                    duplicate = key in seen
                except TypeError:  # an unhashable key: SafeLoader says so itself
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key '{key}' is defined twice (line "
                        f"{key_node.start_mark.line + 1})", key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def resolve_import(spec: str, what: str = "object") -> Any:
    """Imports ``"module:attr"`` or ``"module.attr"``."""
    module_name, _, attr = spec.partition(":") if ":" in spec else spec.rpartition(".")
    try:
        obj = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError) as e:
        raise ConfigError(f"cannot import {what} '{spec}': {e}") from None
    return obj
