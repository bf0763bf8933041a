"""``jrl`` command line: ``jrl train``, ``jrl evaluate`` (alias ``jrl rollout``) and ``jrl plot``.

Bad input (config, env, checkpoint) prints one line on stderr and exits with code 2; ``-vv``
shows the traceback.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import math
import os
import shlex
import sys
from collections.abc import Mapping
from typing import Any

from jrl.errors import ConfigError, JrlError
from jrl.logger import result_value

EXIT_USAGE = 2
DEFAULT_MAX_TIMESTEPS = 200_000
DEFAULT_JAX_TIMESTEPS = 500_000
JAX_STEPS_PER_REPORT = 25_000
EXPERIMENT_KEYS = ("run", "env", "stop", "config", "checkpoint_freq", "checkpoint_at_end",
                   "local_dir", "keep_checkpoints_num", "checkpoint_score_attr")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        self.exit(EXIT_USAGE, f"jrl: error: {message}\n")


def _parse_json(text: str, what: str) -> dict[str, Any]:
    from jrl.config import check_depth

    if not text.strip():
        raise ConfigError(f"{what} is empty: give a JSON object such as '{{\"lr\": 0.001}}'")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{what} is not valid JSON: {e.msg} at position {e.pos}") from None
    except RecursionError:
        raise ConfigError(f"{what} is nested too deeply") from None
    if not isinstance(value, Mapping):
        raise ConfigError(f"{what} must be a JSON object, got {type(value).__name__}")
    check_depth(value, what)
    return dict(value)


def _parse_scalar(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_stop(items: list[str] | None) -> dict[str, Any]:
    """``--stop`` as one JSON object or as ``key=value`` pairs."""
    stop: dict[str, Any] = {}
    for item in items or []:
        item = item.strip()
        if item.startswith("{"):
            stop.update(_parse_json(item, "--stop"))
            continue
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--stop expects JSON or key=value, got '{item}'")
        stop[key.strip()] = _parse_scalar(value.strip())
    for key, value in stop.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(f"stop criterion {key!r} must be a result key such as "
                              "'episode_reward_mean'")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"stop criterion '{key}' must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"stop criterion '{key}' must be a finite number, got {value!r}: "
                              "it could never be met")
    return stop


def should_stop(result: Mapping[str, Any], stop: Mapping[str, Any]) -> bool:
    """True when any criterion ``result[key] >= value`` holds (keys may be ``a/b`` paths)."""
    for key, target in stop.items():
        value = result_value(result, key)
        if isinstance(value, (int, float)) and not math.isnan(value) and value >= target:
            return True
    return False


def _check_stop_keys(stop: Mapping[str, Any], result: Mapping[str, Any]) -> None:
    from jrl.config import unknown_key_error
    from jrl.logger import flatten_result

    valid = list(flatten_result({k: v for k, v in result.items() if k != "config"}))
    for key in stop:
        value = result_value(result, key)
        if value is None and not key.startswith("evaluation/"):
            raise unknown_key_error(key, valid, "stop.")
        if isinstance(value, Mapping) or isinstance(value, (bool, str, list, tuple)):
            raise ConfigError(f"stop criterion '{key}' names a {type(value).__name__} in the "
                              "result, not a number; use one of its numeric keys, e.g. "
                              + next((f"'{k}'" for k in valid if k.startswith(key + "/")),
                                     "'episode_reward_mean'"))


def load_experiments(path: str) -> dict[str, dict[str, Any]]:
    """Experiments from an RLlib tuned-example YAML: ``{name: {run, env, stop, config, ...}}``."""
    from jrl.config import load_file, unknown_key_error

    data = load_file(path)
    if not data:
        raise ConfigError(f"experiment file '{path}' holds no experiments")
    experiments = {}
    for name, spec in data.items():
        if not isinstance(spec, Mapping):
            raise ConfigError(f"experiment '{name}' in '{path}' must be a mapping, got "
                              f"{type(spec).__name__}")
        for key, value in spec.items():
            if key not in EXPERIMENT_KEYS:
                raise unknown_key_error(key, list(EXPERIMENT_KEYS), f"{name}.")
            _check_experiment_field(f"{name}.{key}", key, value)
        if str(name) in experiments:
            raise ConfigError(f"experiment '{name}' is defined twice in '{path}'")
        experiments[str(name)] = dict(spec)
    return experiments


_EXPERIMENT_TYPES = {"run": (str,), "env": (str,), "stop": (Mapping,), "config": (Mapping,),
                     "checkpoint_freq": (int,), "checkpoint_at_end": (bool,),
                     "local_dir": (str,), "keep_checkpoints_num": (int,),
                     "checkpoint_score_attr": (str,)}


def _check_experiment_field(path: str, key: str, value: Any) -> None:
    """One field of an experiment file, checked before anything runs."""
    if value is None and key in ("stop", "config"):
        return
    kinds = _EXPERIMENT_TYPES[key]
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        kind = {Mapping: "mapping"}.get(kinds[0], kinds[0].__name__)
        raise ConfigError(f"'{path}' must be a {kind}, got {type(value).__name__} {value!r:.60}")
    if key == "checkpoint_freq" and value < 0:
        raise ConfigError(f"'{path}' must be >= 0 (0: no periodic checkpoints), got {value}")
    if key == "keep_checkpoints_num" and value < 1:
        raise ConfigError(f"'{path}' must be >= 1, got {value}")
    if isinstance(value, str) and not value.strip():
        raise ConfigError(f"'{path}' is empty")


def _has_grid_search(value: Any) -> bool:
    if isinstance(value, Mapping):
        return "grid_search" in value or any(_has_grid_search(v) for v in value.values())
    return False


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if verbosity < 2:
        for noisy in ("absl", "jax", "orbax", "orbax.checkpoint"):
            logging.getLogger(noisy).setLevel(logging.ERROR)


def _default_stop(env_id: str) -> tuple[dict[str, Any], bool]:
    """Greedy evaluation reaching the env's reward threshold, or a timestep cap. JAX envs
    (several seeds at once, fast) train a fixed budget per seed."""
    from jrl.rollout.jax_envs import is_jax_env_id

    if is_jax_env_id(env_id):
        return {"timesteps_total": DEFAULT_JAX_TIMESTEPS}, False
    stop: dict[str, Any] = {"timesteps_total": DEFAULT_MAX_TIMESTEPS}
    try:
        import gymnasium as gym

        threshold = gym.spec(env_id).reward_threshold
    except Exception:  # registered or unknown envs have no gymnasium spec
        threshold = None
    if threshold is not None:
        stop["evaluation/episode_reward_mean"] = threshold
    return stop, threshold is not None


def cmd_train(args: argparse.Namespace) -> int:
    if args.eager:
        import jax

        jax.config.update("jax_disable_jit", True)
    experiments: dict[str, dict[str, Any]]
    if args.checkpoint_freq is not None and args.checkpoint_freq < 0:
        raise ConfigError(f"--checkpoint-freq must be >= 0 (0: no periodic checkpoints), got "
                          f"{args.checkpoint_freq}")
    if args.keep_checkpoints_num is not None and args.keep_checkpoints_num < 1:
        raise ConfigError(f"--keep-checkpoints-num must be >= 1, got {args.keep_checkpoints_num}")
    if args.file:
        experiments = load_experiments(args.file)
    else:
        if not args.run:
            raise ConfigError("jrl train needs --algo (e.g. --algo PPO) or -f experiment.yaml")
        experiments = {args.experiment_name or "default": {}}
    cli_config = _parse_json(args.config, "--config") if args.config is not None else {}
    flags: dict[str, Any] = {}
    if args.seed is not None:
        flags["seed"] = args.seed
    if args.num_workers is not None:
        flags["num_workers"] = args.num_workers
    if args.num_seeds is not None:
        flags["num_seeds"] = args.num_seeds
    if args.env:
        flags["env"] = args.env
    stop_flags = parse_stop(args.stop)
    plans = [prepare_experiment(args, name, spec, cli_config, flags, stop_flags)
             for name, spec in experiments.items()]
    if len(plans) > 1 or any(_has_grid_search(p.config) for p in plans):
        from jrl.tune import run_experiments

        grids = run_experiments(plans, address=args.address, verbose=args.verbose)
        failed = sum(1 for grid in grids for result in grid if result.error)
        if failed:
            print(f"jrl: error: {failed} trial(s) failed (see above)", file=sys.stderr)
            return 1
        return 0
    run_experiment(args, plans[0])
    return 0


@dataclasses.dataclass
class ExperimentPlan:
    """One experiment resolved from the YAML file, ``--config`` and flags."""

    name: str
    algo: str
    config: dict[str, Any]
    stop: dict[str, Any]
    local_dir: str
    checkpoint_freq: int
    checkpoint_at_end: bool
    keep_checkpoints_num: int | None = None
    checkpoint_score_attr: str | None = None


def prepare_experiment(args: argparse.Namespace, name: str, spec: Mapping[str, Any],
                       cli_config: dict, flags: dict, stop_flags: dict) -> ExperimentPlan:
    from jrl import registry
    from jrl.config import deep_merge
    from jrl.trainer import default_results_dir

    algo = args.run or spec.get("run")
    if not algo:
        raise ConfigError(f"experiment '{name}' names no algorithm ('run: PPO') and no --algo")
    algo = registry.get_algorithm_def(algo).name
    config = deep_merge(dict(spec.get("config") or {}), cli_config)
    if spec.get("env") and "env" not in flags:
        config["env"] = spec["env"]
    config = deep_merge(config, flags)
    if not config.get("env"):
        raise ConfigError("no env given: use --env CartPole-v1 (or 'env:' in the experiment file)")
    stop = spec.get("stop") or {}
    if not isinstance(stop, Mapping):
        raise ConfigError(f"experiment '{name}': 'stop' must be a mapping")
    stop = {**(parse_stop([json.dumps(dict(stop))]) if stop else {}), **stop_flags}
    if not stop:
        stop, evaluates = _default_stop(config["env"])
        if evaluates and "evaluation_interval" not in config:
            config["evaluation_interval"] = 1
    elif any(k.startswith("evaluation/") for k in stop) and "evaluation_interval" not in config:
        config["evaluation_interval"] = 1
    from jrl.rollout.jax_envs import is_jax_env_id

    if is_jax_env_id(config["env"]) and "timesteps_per_iteration" not in config:
        # one train() = one compiled chunk: report progress every ~25k steps per seed
        config["timesteps_per_iteration"] = JAX_STEPS_PER_REPORT
    for variant in _grid_variants(config):
        parsed = registry.parse_config(algo, variant)  # every grid point must be a valid config
        for key in stop:
            if key.startswith("evaluation/") and not parsed.evaluation_interval:
                raise ConfigError(f"stop criterion '{key}' can never be met: "
                                  "evaluation_interval is null, so no evaluation runs")
    local_dir = args.local_dir or spec.get("local_dir") or default_results_dir()
    check_writable_dir(local_dir, "--local-dir" if args.local_dir else "local_dir")
    checkpoint_at_end = (args.checkpoint_at_end if args.checkpoint_at_end is not None
                         else bool(spec.get("checkpoint_at_end", True)))
    return ExperimentPlan(
        name=name, algo=algo, config=config, stop=stop,
        local_dir=local_dir,
        checkpoint_freq=(args.checkpoint_freq if args.checkpoint_freq is not None
                         else int(spec.get("checkpoint_freq", 0))),
        checkpoint_at_end=checkpoint_at_end,
        keep_checkpoints_num=(args.keep_checkpoints_num if args.keep_checkpoints_num is not None
                              else spec.get("keep_checkpoints_num")),
        checkpoint_score_attr=args.checkpoint_score_attr or spec.get("checkpoint_score_attr"))


def check_writable_dir(path: str, what: str) -> None:
    """Raises ``ConfigError`` unless ``path`` is (or can be created as) a writable directory."""
    full = os.path.abspath(os.path.expanduser(path))
    existing = full
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError(f"{what} '{path}' is not a directory: '{existing}' is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} '{path}' is not writable")


def check_writable_file(path: str, what: str) -> None:
    """Raises ``ConfigError`` unless a file can be written at ``path``."""
    full = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(full):
        raise ConfigError(f"{what} '{path}' is a directory, not a file")
    if os.path.exists(full) and not os.access(full, os.W_OK):
        raise ConfigError(f"{what} '{path}' is not writable")
    check_writable_dir(os.path.dirname(full), f"the directory of {what}")


def _grid_variants(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The config once per value of each ``grid_search`` (one at a time, others at their first)."""
    def first(value):
        if isinstance(value, Mapping):
            if "grid_search" in value:
                if not isinstance(value["grid_search"], list) or not value["grid_search"]:
                    raise ConfigError("'grid_search' must be a non-empty list, got "
                                      f"{value['grid_search']!r}")
                return first(value["grid_search"][0])
            return {k: first(v) for k, v in value.items()}
        return value

    base = first(config)
    variants = [base]

    def walk(value, path):
        if isinstance(value, Mapping) and "grid_search" in value:
            grid = value["grid_search"]
            if not isinstance(grid, list) or not grid:
                raise ConfigError(f"'{'.'.join(path)}.grid_search' must be a non-empty list")
            for option in grid[1:]:
                variant = copy.deepcopy(base)
                target = variant
                for key in path[:-1]:
                    target = target[key]
                target[path[-1]] = first(option)
                variants.append(variant)
        elif isinstance(value, Mapping):
            for k, v in value.items():
                walk(v, [*path, k])

    walk(config, [])
    return variants


def run_experiment(args: argparse.Namespace, plan: ExperimentPlan) -> None:
    from jrl.checkpoint import prune_checkpoints
    from jrl.logger import PHASES, PROFILE_ENV, ProgressReporter, process_age_s
    from jrl.trainer import Trainer

    profile = os.environ.get(PROFILE_ENV, "") not in ("", "0")
    if profile:
        PHASES.watch_compiles()
        if "startup: Python, imports, config" not in PHASES.seconds:
            PHASES.add("startup: Python, imports, config", process_age_s() or 0.0)
    name, algo, config, stop = plan.name, plan.algo, plan.config, plan.stop
    local_dir, checkpoint_freq = plan.local_dir, plan.checkpoint_freq
    checkpoint_at_end = plan.checkpoint_at_end
    trainer = Trainer(algo, config=config, local_dir=local_dir, experiment=name,
                      address=args.address)
    out = sys.stdout
    print(f"Training {trainer.algo_name} on {trainer.env_id}; stop when "
          + " or ".join(f"{k} >= {v:g}" for k, v in stop.items()), file=out)
    print(f"Results: {trainer.logdir}", file=out)
    last_checkpoint = None
    interrupted: KeyboardInterrupt | None = None
    try:
        with ProgressReporter(enabled=not args.quiet) as progress:
            first = True
            while True:
                result = trainer.train()
                if first:
                    _check_stop_keys(stop, result)
                    first = False
                progress.update(result)
                if checkpoint_freq and trainer.iteration % checkpoint_freq == 0:
                    last_checkpoint = trainer.save()
                    prune_checkpoints(trainer.logdir, plan.keep_checkpoints_num,
                                      plan.checkpoint_score_attr)
                if should_stop(result, stop):
                    break
    except KeyboardInterrupt as e:
        interrupted = e
        print(f"\n{_interrupt_name(e)}: saving a checkpoint before exiting.", file=sys.stderr)
    finally:
        if (checkpoint_at_end or interrupted) and trainer.iteration > 0 and (
                last_checkpoint is None or not last_checkpoint.endswith(
                    f"checkpoint_{trainer.iteration:06d}")):
            last_checkpoint = trainer.save()
            prune_checkpoints(trainer.logdir, plan.keep_checkpoints_num,
                              plan.checkpoint_score_attr)
        trainer.stop()
    _print_summary(trainer, result if trainer.iteration else None, last_checkpoint)
    if profile:
        wall = process_age_s()
        print(f"\nWhere the time went ({PROFILE_ENV}=1; process wall time "
              f"{wall or float('nan'):.1f} s):\n{PHASES.table(wall)}")
    if interrupted:
        raise SystemExit(_interrupt_exit_code(interrupted))


class Terminated(KeyboardInterrupt):
    """SIGTERM (what schedulers send before preempting), handled like Ctrl-C."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def _interrupt_name(error: BaseException) -> str:
    return "Terminated (SIGTERM)" if isinstance(error, Terminated) else "Interrupted"


def _interrupt_exit_code(error: BaseException) -> int:
    return 143 if isinstance(error, Terminated) else 130


def _print_summary(trainer: Any, result: Mapping | None, checkpoint: str | None) -> None:
    print()
    if result is not None:
        reward = result.get("episode_reward_mean", float("nan"))
        line = (f"Done: {trainer.iteration} iterations, {trainer.timesteps_total} env steps, "
                f"{trainer.time_total_s:.1f}s, episode_reward_mean {reward:.2f}")
        evaluation = result.get("evaluation")
        if evaluation:
            line += f", greedy evaluation {evaluation['episode_reward_mean']:.2f}"
        print(line)
    print(f"Results:    {trainer.logdir}")
    output = getattr(trainer.algo_config, "output", None)
    if output:
        print(f"Experiences: {os.path.abspath(output)} (SampleBatch JSON lines)")
    if checkpoint:
        print(f"Checkpoint: {checkpoint}")
        print(f"Evaluate:   jrl evaluate {shlex.quote(checkpoint)} --episodes 10")


def cmd_evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from jrl.rollout.evaluation import render_episodes
    from jrl.trainer import Trainer

    if args.episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {args.episodes}")
    if args.steps is not None and args.steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {args.steps}")
    if args.out:
        check_writable_file(args.out, "--out")
    overrides = _parse_json(args.config, "--config") if args.config is not None else {}
    if args.env:
        overrides["env"] = args.env
    if args.run:
        from jrl import checkpoint as ckpt

        algo = str(ckpt.load_metadata(ckpt.resolve_checkpoint(args.checkpoint)).get("algo"))
        if args.run.upper() != algo.upper():
            raise ConfigError(f"--run {args.run} does not match the checkpoint's algorithm "
                              f"{algo}")
    trainer = Trainer.from_checkpoint(args.checkpoint, config=overrides, log_to_disk=False)
    try:
        common = dict(explore=args.explore, seed=args.seed, max_steps=args.steps)
        if args.render:
            policy = trainer.get_policy()
            mode = "human" if args.render == "human" else "rgb_array"
            video_dir = args.video_dir or os.path.join(os.getcwd(), "jrl_videos")
            if mode == "rgb_array":
                _require_moviepy()
            episodes = render_episodes(policy.episode_actor(), policy.acting,
                                       policy.preprocessor,
                                       trainer.env_id,
                                       trainer.algo_config, args.episodes, render_mode=mode,
                                       video_dir=video_dir, **common)
            if mode == "rgb_array":
                print(f"Videos: {video_dir}")
        else:
            episodes = trainer.rollout_episodes(args.episodes, record=bool(args.out), **common)
    finally:
        trainer.stop()
    for i, ep in enumerate(episodes):
        print(f"episode {i}: return {ep['episode_reward']:.2f}, length {ep['episode_len']}")
        for key, r in ep.get("agent_rewards", {}).items():  # multi-agent: "agent/policy"
            agent, _, pid = key.rpartition("/")
            print(f"  agent {agent} ({pid}): return {r:.2f}")
    if not episodes:
        print("no episode finished within --steps")
        return 0
    returns = np.array([e["episode_reward"] for e in episodes])
    print(f"mean return {returns.mean():.2f} ± {returns.std():.2f} over {len(returns)} episodes "
          f"({trainer.algo_name} on {trainer.env_id}, "
          f"{'exploring' if args.explore else 'greedy'})")
    if args.out:
        from jrl.rollout.offline import write_episodes

        write_episodes(args.out, episodes, trainer.algo_config.output_compress_columns,
                       trainer.algo_config.output_compress_codec)
        if "agent_batches" in episodes[0]:
            print(f"Episodes written to {args.out} (MultiAgentBatch JSON lines, one per "
                  f"episode)")
        else:
            print(f"Episodes written to {args.out} (SampleBatch JSON lines; train on them "
                  f"with input: {json.dumps(args.out)})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from jrl.serving.inference import serve_checkpoint

    overrides = _parse_json(args.config, "--config") if args.config else {}
    token = args.token or os.environ.get("JRL_SERVE_TOKEN")
    server = serve_checkpoint(args.checkpoint, args.host, args.port, token, overrides,
                              max_body_bytes=args.max_body_bytes)
    print(f"Serving {server.describe['algo']} ({server.describe['env']}) on {server.url}: "
          f"POST /v1/actions, GET /healthz (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        if server.trainer is not None:  # (checkpoints without spaces go through a Trainer)
            server.trainer.stop()
    return 0


def _require_moviepy() -> None:
    try:
        import moviepy  # noqa: F401
    except ImportError:
        raise ConfigError("--render video needs moviepy: pip install 'jrl[video]'") from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jrl", description="Train and evaluate RL policies with JAX.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    train = sub.add_parser("train", help="train an algorithm on an env")
    train.add_argument("--algo", "--run", dest="run", help="algorithm, e.g. PPO or DQN")
    train.add_argument("--env", help="gymnasium id or registered env name")
    train.add_argument("--config", help="config overrides as a JSON object")
    train.add_argument("-f", "--config-file", dest="file",
                       help="YAML experiment file (RLlib tuned-example format)")
    train.add_argument("--stop", action="append",
                       help="stop criteria as JSON or key=value (repeatable); any one met stops")
    train.add_argument("--checkpoint-freq", type=int, default=None,
                       help="save a checkpoint every N iterations")
    train.add_argument("--checkpoint-at-end", action="store_true", default=None,
                       help="save a checkpoint when training ends (default)")
    train.add_argument("--no-checkpoint-at-end", dest="checkpoint_at_end", action="store_false")
    train.add_argument("--keep-checkpoints-num", type=int, default=None,
                       help="keep only the N best checkpoints (and the newest)")
    train.add_argument("--checkpoint-score-attr", default=None,
                       help="result key ranking checkpoints for --keep-checkpoints-num "
                       "(higher is better; 'min-KEY' for lower); default: newest are best")
    train.add_argument("--local-dir", help="results root (default ~/jrl_results)")
    train.add_argument("--experiment-name", "--name", dest="experiment_name")
    train.add_argument("--seed", type=int)
    train.add_argument("--num-workers", type=int)
    train.add_argument("--num-seeds", type=int,
                       help="train this many seeds at once (JAX envs such as gymnax:CartPole-v1)")
    train.add_argument("--address", help="Ray cluster to join when num_workers > 0: 'auto' or "
                       "host:port (default: start a local Ray instance)")
    train.add_argument("--eager", action="store_true",
                       help="run without jit (jax.disable_jit) so print works in losses")
    train.add_argument("--trace", action="store_true",
                       help="jit-compile the learner and policy (the default)")
    train.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    train.add_argument("-v", "--verbose", action="count", default=0)
    train.set_defaults(func=cmd_train)

    for name in ("evaluate", "rollout"):
        ev = sub.add_parser(name, help="run a checkpointed policy and report its return")
        ev.add_argument("checkpoint", help="checkpoint dir (or a results dir: latest checkpoint)")
        ev.add_argument("--episodes", type=int, default=10)
        ev.add_argument("--steps", type=int, default=None, help="stop after this many env steps")
        ev.add_argument("--render", nargs="?", const="human", choices=("human", "video"),
                        help="render: a window (human) or an mp4 per episode (video)")
        ev.add_argument("--video-dir", help="where --render video writes (default ./jrl_videos)")
        ev.add_argument("--out", help="write the episodes to this file as SampleBatch JSON lines "
                        "(RLlib's offline format; input for MARWIL/BC)")
        ev.add_argument("--env", help="evaluate on another env id")
        ev.add_argument("--config", help="config overrides as a JSON object")
        ev.add_argument("--explore", action="store_true", help="sample actions (default greedy)")
        ev.add_argument("--seed", type=int, default=10_000)
        ev.add_argument("--algo", "--run", dest="run",
                        help="the checkpoint's algorithm (checked against it), as RLlib's "
                        "rollout script takes it")
        ev.add_argument("-v", "--verbose", action="count", default=0)
        ev.set_defaults(func=cmd_evaluate)

    plot = sub.add_parser("plot", help="draw learning curves from results directories")
    plot.add_argument("paths", nargs="+", help="results dirs or experiment dirs holding them")
    plot.add_argument("--x", default="timesteps_total",
                      choices=("timesteps_total", "time_total_s", "training_iteration"))
    plot.add_argument("--y", nargs="+", default=["episode_reward_mean"],
                      help="result keys to plot, one panel each (nested keys as a/b)")
    plot.add_argument("--band", default="minmax", choices=("minmax", "stderr", "none"),
                      help="band around the mean across seeds and trials")
    plot.add_argument("--title")
    plot.add_argument("--out", default="curves.png", help="image file to write (png/svg/pdf)")
    plot.add_argument("-v", "--verbose", action="count", default=0)
    plot.set_defaults(func=cmd_plot)
    serve = sub.add_parser("serve", help="serve a checkpointed policy over HTTP (JSON)")
    serve.add_argument("checkpoint", help="checkpoint dir (or a results dir: latest checkpoint)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="interface to bind (default loopback; others need --token)")
    serve.add_argument("--port", type=int, default=9900)
    serve.add_argument("--token", help="bearer token clients must send (or $JRL_SERVE_TOKEN)")
    serve.add_argument("--max-body-bytes", type=int, default=4 << 20)
    serve.add_argument("--config", help="config overrides as a JSON object")
    serve.add_argument("-v", "--verbose", action="count", default=0)
    serve.set_defaults(func=cmd_serve)
    return parser


def cmd_plot(args: argparse.Namespace) -> int:
    from jrl.plot import plot_results

    figure = plot_results(args.paths, x=args.x, y=args.y, out=args.out, band=args.band,
                          title=args.title)
    lines = sum(len(ax.get_lines()) for ax in figure.axes)
    print(f"Wrote {args.out} ({lines} curves)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"jrl {version('jrl')}")
        except PackageNotFoundError:  # a source tree without install
            print("jrl 0+unknown")
        return 0
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    _setup_logging(args.verbose)
    import signal
    import threading

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return args.func(args)
    except JrlError as e:
        if args.verbose >= 2:
            raise
        print(f"jrl: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as e:  # while starting up (training handles its own)
        if args.verbose >= 2:
            raise
        print(f"\njrl: {_interrupt_name(e).lower()}; nothing was saved", file=sys.stderr)
        return _interrupt_exit_code(e)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
