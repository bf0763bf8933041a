"""Time-to-solve CartPole-v1: jrl vs stable-baselines3, PPO and DQN, per seed.

Time-to-solve is the wall time from building the agent (envs, networks, optimizer; imports
excluded) until a greedy 10-episode evaluation averages >= 475. JIT compilation counts; the
evaluations themselves do not (the clock is paused around each one). Both systems are evaluated
every ``--eval-every`` env steps (jrl: after the ``train()`` iteration that crosses the next
multiple; SB3: from a callback). A run that reaches ``--max-steps`` without solving is reported
as "not solved".

Each (system, algo, seed) runs in its own subprocess, so imports, JIT caches, thread pools and
memory do not leak between runs. Systems are interleaved per (algo, seed), so a change in the
machine's load hits both about equally.

    python benchmarks/cartpole_time_to_solve.py                       # PPO + DQN, seeds 0 1 2
    python benchmarks/cartpole_time_to_solve.py --algos PPO --seeds 0 --max-steps 50000
    python benchmarks/cartpole_time_to_solve.py --out benchmarks/RESULTS.md

jrl configs: ``configs/cartpole-ppo.yaml`` / ``configs/cartpole-dqn.yaml`` (RLlib tuned-example
format ``{name: {env, run, stop, config}}``) when they exist, else ``FALLBACK_CONFIGS`` below,
which mirror the rl-zoo hyperparameters used on the SB3 side.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bench_common as common  # noqa: E402

ENV_ID = "CartPole-v1"
THRESHOLD = 475.0
EVAL_EPISODES = 10
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTION = "CartPole-v1 time-to-solve: jrl vs stable-baselines3"
DEFAULT_MAX_STEPS = {"PPO": 300_000, "DQN": 150_000}
SYSTEMS = ("jrl", "jrl-warm", "sb3")

# jrl configs used when configs/cartpole-<algo>.yaml does not exist. They follow the rl-zoo
# hyperparameters of the SB3 side as closely as jrl's config keys allow.
FALLBACK_CONFIGS = {
    "PPO": {
        "num_envs_per_worker": 8,
        "rollout_fragment_length": 32,
        "train_batch_size": 256,
        "sgd_minibatch_size": 256,
        "num_sgd_iter": 20,
        "lambda": 0.8,
        "gamma": 0.98,
        "lr": 1e-3,
        "lr_annealing": True,            # zoo: lin_0.001 over its n_timesteps 1e5
        "lr_annealing_timesteps": 100_000,
        "entropy_coeff": 0.0,
        "clip_param": 0.2,               # zoo anneals this too; jrl has no clip schedule
        "vf_loss_coeff": 0.5,
        "vf_clip_param": None,           # SB3 default: no value clipping
        "grad_clip": 0.5,                # SB3 max_grad_norm
        "model": {"fcnet_hiddens": [64, 64], "fcnet_activation": "tanh"},
    },
    "DQN": {
        "lr": 2.3e-3,
        "train_batch_size": 64,
        "buffer_size": 100_000,
        "learning_starts": 1000,
        "gamma": 0.99,
        "target_network_update_freq": 10,
        "num_envs_per_worker": 1,
        "rollout_fragment_length": 256,  # SB3 train_freq 256
        "training_intensity": 32.0,      # 128 gradient steps x 64 samples per 256 env steps
        "timesteps_per_iteration": 1024,
        "n_step": 1,
        "dueling": False,
        "double_q": False,
        "hiddens": [],
        "grad_clip": 10.0,               # SB3 DQN max_grad_norm
        "td_error_loss_fn": "huber",     # SB3 smooth_l1
        "model": {"fcnet_hiddens": [256, 256], "fcnet_activation": "relu"},
        "exploration_config": {"initial_epsilon": 1.0, "final_epsilon": 0.04,
                               "epsilon_timesteps": 8000},  # 0.16 x zoo n_timesteps 5e4
    },
}

# rl-zoo (hyperparams/ppo.yml, dqn.yml) CartPole-v1 entries; n_timesteps sets the horizon of the
# zoo's schedules (lin_* and exploration_fraction), which we keep fixed whatever --max-steps is.
SB3_ZOO = {
    "PPO": dict(n_envs=8, n_timesteps=100_000, n_steps=32, batch_size=256, gae_lambda=0.8,
                gamma=0.98, n_epochs=20, ent_coef=0.0, learning_rate=1e-3, clip_range=0.2),
    "DQN": dict(n_envs=1, n_timesteps=50_000, learning_rate=2.3e-3, batch_size=64,
                buffer_size=100_000, learning_starts=1000, gamma=0.99, target_update_interval=10,
                train_freq=256, gradient_steps=128, exploration_fraction=0.16,
                exploration_final_eps=0.04, net_arch=[256, 256]),
}


# ----------------------------------------------------------------------------------------------
# Child side: one (system, algo, seed) run


class PausableClock:
    """Accumulates wall time between ``start``/``resume`` and ``pause``."""

    def __init__(self) -> None:
        self.elapsed = 0.0
        self._t0: float | None = None

    def start(self) -> None:
        self._t0 = time.perf_counter()

    resume = start

    def pause(self) -> float:
        if self._t0 is not None:
            self.elapsed += time.perf_counter() - self._t0
            self._t0 = None
        return self.elapsed

    def read(self) -> float:
        extra = time.perf_counter() - self._t0 if self._t0 is not None else 0.0
        return self.elapsed + extra


def jrl_config(algo: str) -> tuple[dict, str]:
    """The jrl config dict for ``algo`` and where it came from."""
    rel = f"configs/cartpole-{algo.lower()}.yaml"
    path = os.path.join(REPO_ROOT, rel)
    if not os.path.exists(path):
        return json.loads(json.dumps(FALLBACK_CONFIGS[algo])), "fallback dict in the script"
    import yaml

    with open(path) as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict) or not data:
        raise SystemExit(f"{rel}: expected {{name: {{env, run, stop, config}}}}")
    name, entry = next(iter(data.items()))
    run = str(entry.get("run", algo))
    if run.upper() != algo:
        raise SystemExit(f"{rel}: entry '{name}' runs {run}, not {algo}")
    config = dict(entry.get("config") or {})
    return config, rel


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_jrl(algo: str, seed: int, max_steps: int, eval_every: int) -> dict:
    import jax  # noqa: F401  (imports are not timed)
    import numpy as np  # noqa: F401

    import jrl

    config, source = jrl_config(algo)
    config.pop("env", None)
    if config.get("framework", "jax") != "jax":  # RLlib YAMLs name tf/torch
        config.pop("framework")
    config.update(seed=seed, evaluation_interval=None, log_level="ERROR")

    clock = PausableClock()
    clock.start()
    trainer = jrl.Trainer(algo, env=ENV_ID, config=config, log_to_disk=False)
    build_s = clock.read()
    evals, first_iter_s, solved, steps = [], None, False, 0
    next_eval = eval_every
    while True:
        t0 = clock.read()
        result = trainer.train()
        if first_iter_s is None:
            first_iter_s = clock.read() - t0
        steps = int(result["timesteps_total"])
        if steps >= next_eval or steps >= max_steps:
            clock.pause()
            reward = trainer.evaluate(EVAL_EPISODES)["evaluation"]["episode_reward_mean"]
            evals.append((steps, round(clock.elapsed, 3), reward))
            next_eval = (steps // eval_every + 1) * eval_every
            if reward >= THRESHOLD:
                solved = True
                break
            if steps >= max_steps:
                break
            clock.resume()
    trainer.stop()
    return {"solved": solved, "time_s": clock.elapsed, "env_steps": steps, "build_s": build_s,
            "first_iter_s": first_iter_s, "evals": evals, "config_source": source,
            "config": config, "peak_rss_mb": _peak_rss_mb()}


def _sb3_greedy_eval(model, seed: int) -> float:
    """Mean return of ``EVAL_EPISODES`` greedy episodes, stepped as one vector env."""
    import gymnasium as gym
    import numpy as np

    envs = gym.vector.SyncVectorEnv([lambda: gym.make(ENV_ID) for _ in range(EVAL_EPISODES)])
    try:
        obs, _ = envs.reset(seed=seed)
        returns = np.zeros(EVAL_EPISODES)
        active = np.ones(EVAL_EPISODES, bool)
        while active.any():
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = envs.step(action)
            returns += np.where(active, reward, 0.0)
            active &= ~(terminated | truncated)
        return float(returns.mean())
    finally:
        envs.close()


def run_sb3(algo: str, seed: int, max_steps: int, eval_every: int) -> dict:
    import torch

    torch.set_num_threads(1)
    from stable_baselines3 import DQN, PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    zoo = SB3_ZOO[algo]
    clock = PausableClock()
    state = {"evals": [], "solved": False, "last_eval": 0}

    def evaluate(model, steps: int) -> bool:
        clock.pause()
        reward = _sb3_greedy_eval(model, seed + 10_000 + len(state["evals"]))
        state["evals"].append((steps, round(clock.elapsed, 3), reward))
        state["last_eval"] = steps
        state["solved"] = reward >= THRESHOLD
        clock.resume()
        return state["solved"]

    class EvalCallback(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps - state["last_eval"] >= eval_every:
                return not evaluate(self.model, self.num_timesteps)
            return True

    def zoo_linear(initial: float):
        # zoo's lin_<x> decays to 0 over its n_timesteps; SB3 hands schedules the progress
        # remaining of learn(total_timesteps=max_steps), so rescale to keep the zoo's horizon.
        horizon = zoo["n_timesteps"]
        return lambda p: initial * max(0.0, 1.0 - (1.0 - p) * max_steps / horizon)

    clock.start()
    env = make_vec_env(ENV_ID, n_envs=zoo["n_envs"], seed=seed)
    if algo == "PPO":
        model = PPO("MlpPolicy", env, n_steps=zoo["n_steps"], batch_size=zoo["batch_size"],
                    gae_lambda=zoo["gae_lambda"], gamma=zoo["gamma"], n_epochs=zoo["n_epochs"],
                    ent_coef=zoo["ent_coef"], learning_rate=zoo_linear(zoo["learning_rate"]),
                    clip_range=zoo_linear(zoo["clip_range"]), seed=seed, device="cpu", verbose=0)
    else:
        fraction = min(1.0, zoo["exploration_fraction"] * zoo["n_timesteps"] / max_steps)
        model = DQN("MlpPolicy", env, learning_rate=zoo["learning_rate"],
                    batch_size=zoo["batch_size"], buffer_size=zoo["buffer_size"],
                    learning_starts=zoo["learning_starts"], gamma=zoo["gamma"],
                    target_update_interval=zoo["target_update_interval"],
                    train_freq=zoo["train_freq"], gradient_steps=zoo["gradient_steps"],
                    exploration_fraction=fraction,
                    exploration_final_eps=zoo["exploration_final_eps"],
                    policy_kwargs={"net_arch": zoo["net_arch"]}, seed=seed, device="cpu",
                    verbose=0)
    build_s = clock.read()
    model.learn(total_timesteps=max_steps, callback=EvalCallback())
    if not state["solved"] and state["last_eval"] < model.num_timesteps:
        evaluate(model, model.num_timesteps)
    clock.pause()
    steps = state["evals"][-1][0] if state["evals"] else model.num_timesteps
    return {"solved": state["solved"], "time_s": clock.elapsed, "env_steps": steps,
            "build_s": build_s, "first_iter_s": None, "evals": state["evals"],
            "config_source": "rl-zoo CartPole-v1", "config": zoo, "peak_rss_mb": _peak_rss_mb(),
            "torch_threads": torch.get_num_threads()}


def child_main(args: argparse.Namespace) -> None:
    runner = run_sb3 if args.child_system == "sb3" else run_jrl
    out = runner(args.child_algo, args.child_seed, args.child_max_steps, args.eval_every)
    out.update(system=args.child_system, algo=args.child_algo, seed=args.child_seed,
               max_steps=args.child_max_steps)
    with open(args.child_out, "w") as f:
        json.dump(out, f)


# ----------------------------------------------------------------------------------------------
# Parent side: subprocesses, table, RESULTS.md


def run_child(system: str, algo: str, seed: int, max_steps: int, args) -> dict:
    with tempfile.NamedTemporaryFile("r", suffix=".json", delete=False) as tmp:
        path = tmp.name
    cmd = [sys.executable, os.path.abspath(__file__), "--child-system", system, "--child-algo",
           algo, "--child-seed", str(seed), "--child-max-steps", str(max_steps), "--child-out",
           path, "--eval-every", str(args.eval_every)]
    env = dict(os.environ, PYTHONWARNINGS="ignore", TF_CPP_MIN_LOG_LEVEL="3")
    if system == "jrl":  # cold start: an empty compilation cache of its own
        env["JRL_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jrl-cold-cache-")
    elif system == "jrl-warm":  # the cache a previous run of the same config left behind
        env["JRL_COMPILATION_CACHE_DIR"] = warm_cache_dir(algo)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout)[-2000:]
            return {"system": system, "algo": algo, "seed": seed, "error":
                    f"exit code {proc.returncode}", "stderr_tail": tail, "process_s": wall}
        with open(path) as f:
            out = json.load(f)
        out["process_s"] = wall
        return out
    except subprocess.TimeoutExpired:
        return {"system": system, "algo": algo, "seed": seed,
                "error": f"timeout after {args.timeout} s", "process_s": args.timeout}
    finally:
        if os.path.exists(path):
            os.unlink(path)


_WARM_CACHES: dict[str, str] = {}


def warm_cache_dir(algo: str) -> str:
    """A compilation cache primed by one unmeasured jrl run of ``algo`` (what a user has from
    their previous ``jrl train``)."""
    if algo not in _WARM_CACHES:
        path = tempfile.mkdtemp(prefix=f"jrl-warm-cache-{algo.lower()}-")
        _WARM_CACHES[algo] = path
        cmd = [sys.executable, os.path.abspath(__file__), "--child-system", "jrl-warm",
               "--child-algo", algo, "--child-seed", "100", "--child-max-steps", "4096",
               "--child-out", os.path.join(path, "prime.json"), "--eval-every", "2048"]
        subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, JRL_COMPILATION_CACHE_DIR=path,
                                PYTHONWARNINGS="ignore"))
    return _WARM_CACHES[algo]


def _fmt_run(r: dict) -> str:
    if "error" in r:
        return r["error"]
    if not r["solved"]:
        return f"not solved ({r['env_steps'] / 1000:.1f}k steps, {r['time_s']:.1f} s)"
    return f"{r['time_s']:.1f} s ({r['env_steps'] / 1000:.1f}k)"


def _median_time(runs: list[dict]) -> float:
    """Median time-to-solve with unsolved/failed runs counted as infinitely slow."""
    times = [r["time_s"] if r.get("solved") else math.inf for r in runs]
    return common.median(times) if times else math.nan


def _median_steps(runs: list[dict]) -> float:
    steps = [r["env_steps"] if r.get("solved") else math.inf for r in runs]
    return common.median(steps) if steps else math.nan


def _fmt_s(x: float) -> str:
    return "not solved" if math.isinf(x) else ("—" if math.isnan(x) else f"{x:.1f} s")


def make_table(results: list[dict], algos: list[str], seeds: list[int]) -> str:
    label = {"jrl": "jrl, cold start (empty compilation cache)",
             "jrl-warm": "jrl, warm compilation cache", "sb3": "SB3 (torch CPU, 1 thread)"}
    head = ["algo", "system"] + [f"seed {s}" for s in seeds] + [
        "solved", "median time", "median env steps", "build (s)", "1st iter (s)", "peak RSS"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ratio_lines = []
    for algo in algos:
        medians = {}
        for system in SYSTEMS:
            runs = [r for r in results if r["algo"] == algo and r["system"] == system]
            if not runs:
                continue
            by_seed = {r["seed"]: r for r in runs}
            cells = [_fmt_run(by_seed[s]) if s in by_seed else "—" for s in seeds]
            ok = [r for r in runs if "error" not in r]
            solved = sum(bool(r.get("solved")) for r in runs)
            med_t, med_s = _median_time(runs), _median_steps(runs)
            medians[system] = med_t
            builds = [r["build_s"] for r in ok]
            firsts = [r["first_iter_s"] for r in ok if r.get("first_iter_s") is not None]
            rss = [r["peak_rss_mb"] for r in ok]
            lines.append("| " + " | ".join([
                algo, label[system], *cells, f"{solved}/{len(runs)}", _fmt_s(med_t),
                "not solved" if math.isinf(med_s) else f"{med_s / 1000:.1f}k",
                f"{common.median(builds):.2f}" if builds else "—",
                f"{common.median(firsts):.2f}" if firsts else "—",
                f"{max(rss):.0f} MB" if rss else "—"]) + " |")
        for system in ("jrl", "jrl-warm"):
            if system not in medians or "sb3" not in medians:
                continue
            a, b = medians[system], medians["sb3"]
            if math.isfinite(a) and math.isfinite(b) and b > 0:
                ratio = f"{a / b:.2f}× ({system} {a:.1f} s / SB3 {b:.1f} s)"
            else:
                ratio = f"n/a ({system} {_fmt_s(a)}, SB3 {_fmt_s(b)})"
            ratio_lines.append(f"- {algo}: median time-to-solve ratio {system} / SB3 = {ratio}")
    return "\n".join(lines) + "\n\n" + "\n".join(ratio_lines)


def make_section(results, algos, seeds, args, total_s: float) -> str:
    sources = sorted({(r["algo"], r.get("config_source")) for r in results
                      if r["system"].startswith("jrl") and "error" not in r})
    body = [*common.machine_lines(),
            f"- command: `{common.command_line()}`",
            f"- threshold: greedy {EVAL_EPISODES}-episode mean >= {THRESHOLD:g}, evaluated every "
            f"{args.eval_every} env steps; evaluation time excluded, agent build + JIT "
            f"included, imports excluded; one subprocess per (system, algo, seed)",
            "- caps: " + ", ".join(f"{a} {cap_for(a, args) / 1000:.0f}k steps" for a in algos),
            *[f"- jrl {a} config: {src}" for a, src in sources],
            "- SB3: rl-zoo CartPole-v1 hyperparameters (lin_* schedules and exploration "
            "fraction keep the zoo's n_timesteps horizon), `device=\"cpu\"`, "
            "`torch.set_num_threads(1)`; jrl uses JAX's default CPU threading",
            f"- whole benchmark wall time: {total_s:.0f} s",
            "",
            "Cells: time-to-solve (env steps at the solving evaluation). Medians count unsolved "
            "runs as infinitely slow. \"build\" = constructing the agent (incl. jit of init for "
            "jrl); \"1st iter\" = jrl's first `train()` (mostly JIT compile of the update).",
            "",
            make_table(results, algos, seeds)]
    return "\n".join(body)


def cap_for(algo: str, args) -> int:
    return args.max_steps if args.max_steps else DEFAULT_MAX_STEPS[algo]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--algos", nargs="+", default=["PPO", "DQN"], type=str.upper,
                   choices=["PPO", "DQN"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    p.add_argument("--max-steps", type=int, default=None,
                   help="env-step cap per run (default: PPO 300k, DQN 150k)")
    p.add_argument("--eval-every", type=int, default=2048, help="env steps between evaluations")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per subprocess")
    p.add_argument("--out", default=None,
                   help="markdown file to write/update the results section in "
                        "(e.g. benchmarks/RESULTS.md)")
    p.add_argument("--json", default=None, help="also dump all per-run records to this file")
    for name, tp in [("--child-system", str), ("--child-algo", str), ("--child-seed", int),
                     ("--child-max-steps", int), ("--child-out", str)]:
        p.add_argument(name, type=tp, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_system:
        child_main(args)
        return

    start = time.perf_counter()
    results = []
    for algo in args.algos:
        for seed in args.seeds:
            for system in args.systems:
                r = run_child(system, algo, seed, cap_for(algo, args), args)
                results.append(r)
                extra = ""
                if "error" not in r and r.get("first_iter_s") is not None:
                    extra = f", build {r['build_s']:.2f} s, 1st iter {r['first_iter_s']:.2f} s"
                print(f"[{system} {algo} seed {seed}] {_fmt_run(r)}{extra}, "
                      f"process {r['process_s']:.1f} s", flush=True)
                if "error" in r and r.get("stderr_tail"):
                    print(r["stderr_tail"], file=sys.stderr)
    total = time.perf_counter() - start
    section = make_section(results, args.algos, args.seeds, args, total)
    print()
    print(f"## {SECTION}\n")
    print(section)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
    if args.out:
        common.update_section(args.out, SECTION, section)
        print(f"\nwrote section '{SECTION}' to {args.out}")


if __name__ == "__main__":
    main()
