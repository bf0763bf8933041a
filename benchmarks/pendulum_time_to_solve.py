"""Time-to-solve Pendulum-v1: jrl SAC / TD3 / DDPG vs stable-baselines3, per seed.

Time-to-solve is the wall time from building the agent (envs, networks, optimizer; imports
excluded) until a greedy 10-episode evaluation averages >= -200. JIT compilation counts; the
evaluations do not (the clock is paused around each one). Both systems are evaluated every
``--eval-every`` env steps. A run that reaches ``--max-steps`` without solving is reported as
"not solved". Each (system, algo, seed) runs in its own subprocess with an empty JAX
compilation cache (cold start) or one primed by a short unmeasured run (``jrl-warm``); systems
are interleaved per (algo, seed).

    python benchmarks/pendulum_time_to_solve.py                      # SAC TD3 DDPG, seed 0
    python benchmarks/pendulum_time_to_solve.py --algos SAC TD3 --seeds 0 1 2 \\
        --out benchmarks/RESULTS.md
    python benchmarks/pendulum_time_to_solve.py --systems jrl --algos SAC \\
        --override '{"training_intensity": 128}'                    # try a config change

jrl configs: ``configs/pendulum-<algo>.yaml``. SB3: the rl-zoo hyperparameters below.
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
from cartpole_time_to_solve import PausableClock, _peak_rss_mb  # noqa: E402

ENV_ID = "Pendulum-v1"
THRESHOLD = -200.0
EVAL_EPISODES = 10
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTION = "Pendulum-v1 time-to-solve: jrl vs stable-baselines3 (SAC, TD3, DDPG)"

# rl-zoo hyperparams/{sac,td3,ddpg}.yml, Pendulum-v1 (other keys: SB3 defaults).
SB3_ZOO = {
    "SAC": dict(learning_rate=1e-3),
    "TD3": dict(gamma=0.98, buffer_size=200_000, learning_starts=10_000, noise_std=0.1,
                gradient_steps=1, train_freq=1, learning_rate=1e-3, net_arch=[400, 300]),
    "DDPG": dict(gamma=0.98, buffer_size=200_000, learning_starts=10_000, noise_std=0.1,
                 gradient_steps=1, train_freq=1, learning_rate=1e-3, net_arch=[400, 300]),
}


def jrl_config(algo: str) -> dict:
    import yaml

    with open(os.path.join(REPO_ROOT, f"configs/pendulum-{algo.lower()}.yaml")) as f:
        (entry,) = yaml.safe_load(f).values()
    return dict(entry["config"])


def run_jrl(algo: str, seed: int, max_steps: int, eval_every: int, override: dict) -> dict:
    import jax  # noqa: F401  (imports are not timed)

    import jrl

    config = jrl_config(algo)
    config.update(override)
    config.update(seed=seed, evaluation_interval=None, log_level="ERROR")
    config.pop("env", None)
    clock = PausableClock()
    clock.start()
    trainer = jrl.Trainer(algo, env=ENV_ID, config=config, log_to_disk=False)
    build_s = clock.read()
    evals, solved, steps, next_eval = [], False, 0, eval_every
    while True:
        steps = int(trainer.train()["timesteps_total"])
        if steps >= next_eval or steps >= max_steps:
            clock.pause()
            reward = trainer.evaluate(EVAL_EPISODES)["evaluation"]["episode_reward_mean"]
            evals.append((steps, round(clock.elapsed, 3), round(reward, 1)))
            next_eval = (steps // eval_every + 1) * eval_every
            solved = reward >= THRESHOLD
            if solved or steps >= max_steps:
                break
            clock.resume()
    trainer.stop()
    return {"solved": solved, "time_s": clock.elapsed, "env_steps": steps, "build_s": build_s,
            "evals": evals, "config": config, "peak_rss_mb": _peak_rss_mb()}


def _sb3_greedy_eval(model, seed: int) -> float:
    import gymnasium as gym
    import numpy as np

    envs = gym.vector.SyncVectorEnv([lambda: gym.make(ENV_ID) for _ in range(EVAL_EPISODES)])
    try:
        obs, _ = envs.reset(seed=seed)
        returns, active = np.zeros(EVAL_EPISODES), np.ones(EVAL_EPISODES, bool)
        while active.any():
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = envs.step(action)
            returns += np.where(active, reward, 0.0)
            active &= ~(terminated | truncated)
        return float(returns.mean())
    finally:
        envs.close()


def run_sb3(algo: str, seed: int, max_steps: int, eval_every: int, override: dict) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from stable_baselines3 import DDPG, SAC, TD3
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.noise import NormalActionNoise

    zoo = dict(SB3_ZOO[algo])
    clock = PausableClock()
    state = {"evals": [], "solved": False, "last_eval": 0}

    def evaluate(model, steps: int) -> bool:
        clock.pause()
        reward = _sb3_greedy_eval(model, seed + 10_000 + len(state["evals"]))
        state["evals"].append((steps, round(clock.elapsed, 3), round(reward, 1)))
        state["last_eval"], state["solved"] = steps, reward >= THRESHOLD
        clock.resume()
        return state["solved"]

    class EvalCallback(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps - state["last_eval"] >= eval_every:
                return not evaluate(self.model, self.num_timesteps)
            return True

    clock.start()
    env = make_vec_env(ENV_ID, n_envs=1, seed=seed)
    if algo == "SAC":
        model = SAC("MlpPolicy", env, learning_rate=zoo["learning_rate"], seed=seed,
                    device="cpu", verbose=0)
    else:
        noise = NormalActionNoise(np.zeros(1), zoo["noise_std"] * np.ones(1))
        model = {"TD3": TD3, "DDPG": DDPG}[algo](
            "MlpPolicy", env, gamma=zoo["gamma"], buffer_size=zoo["buffer_size"],
            learning_starts=zoo["learning_starts"], action_noise=noise,
            gradient_steps=zoo["gradient_steps"], train_freq=zoo["train_freq"],
            learning_rate=zoo["learning_rate"], policy_kwargs={"net_arch": zoo["net_arch"]},
            seed=seed, device="cpu", verbose=0)
    build_s = clock.read()
    model.learn(total_timesteps=max_steps, callback=EvalCallback())
    if not state["solved"] and state["last_eval"] < model.num_timesteps:
        evaluate(model, model.num_timesteps)
    clock.pause()
    steps = state["evals"][-1][0] if state["evals"] else model.num_timesteps
    return {"solved": state["solved"], "time_s": clock.elapsed, "env_steps": steps,
            "build_s": build_s, "evals": state["evals"], "config": zoo,
            "peak_rss_mb": _peak_rss_mb()}


def run_child(system: str, algo: str, seed: int, args) -> dict:
    with tempfile.NamedTemporaryFile("r", suffix=".json", delete=False) as tmp:
        path = tmp.name
    cmd = [sys.executable, os.path.abspath(__file__), "--child-system", system, "--child-algo",
           algo, "--child-seed", str(seed), "--child-out", path, "--max-steps",
           str(args.max_steps), "--eval-every", str(args.eval_every), "--override",
           args.override]
    cache = (warm_cache_dir(algo, args) if system == "jrl-warm"
             else tempfile.mkdtemp(prefix="jrl-cold-cache-"))
    env = dict(os.environ, PYTHONWARNINGS="ignore", TF_CPP_MIN_LOG_LEVEL="3",
               JRL_COMPILATION_CACHE_DIR=cache)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
        if proc.returncode != 0:
            return {"system": system, "algo": algo, "seed": seed,
                    "error": f"exit code {proc.returncode}",
                    "stderr_tail": (proc.stderr or proc.stdout)[-2000:]}
        with open(path) as f:
            return json.load(f)
    except subprocess.TimeoutExpired:
        return {"system": system, "algo": algo, "seed": seed,
                "error": f"timeout after {args.timeout} s"}
    finally:
        if os.path.exists(path):
            os.unlink(path)


_WARM_CACHES: dict[str, str] = {}


def warm_cache_dir(algo: str, args) -> str:
    """A compilation cache primed by one unmeasured short jrl run of ``algo`` (what a user has
    from their previous ``jrl train`` with the same config)."""
    if algo not in _WARM_CACHES:
        path = _WARM_CACHES[algo] = tempfile.mkdtemp(prefix=f"jrl-warm-cache-{algo.lower()}-")
        cmd = [sys.executable, os.path.abspath(__file__), "--child-system", "jrl", "--child-algo",
               algo, "--child-seed", "100", "--child-out", os.path.join(path, "prime.json"),
               "--max-steps", "2048", "--eval-every", "1024", "--override", args.override]
        subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout,
                       env=dict(os.environ, JRL_COMPILATION_CACHE_DIR=path,
                                PYTHONWARNINGS="ignore"))
    return _WARM_CACHES[algo]


def _fmt_run(r: dict) -> str:
    if "error" in r:
        return r["error"]
    if not r["solved"]:
        return f"not solved ({r['env_steps'] / 1000:.1f}k steps, {r['time_s']:.1f} s)"
    return f"{r['time_s']:.1f} s ({r['env_steps'] / 1000:.1f}k)"


def _median(runs: list[dict], key: str) -> float:
    values = [r[key] if r.get("solved") else math.inf for r in runs]
    return common.median(values) if values else math.nan


def make_table(results: list[dict], algos: list[str], seeds: list[int]) -> str:
    label = {"jrl": "jrl, cold start (empty compilation cache)",
             "jrl-warm": "jrl, warm compilation cache", "sb3": "SB3 (torch CPU, 1 thread)"}
    head = ["algo", "system"] + [f"seed {s}" for s in seeds] + [
        "solved", "median time", "median env steps", "peak RSS"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ratios = []
    for algo in algos:
        medians = {}
        for system in ("jrl", "jrl-warm", "sb3"):
            runs = [r for r in results if r["algo"] == algo and r["system"] == system]
            if not runs:
                continue
            by_seed = {r["seed"]: r for r in runs}
            t, s = _median(runs, "time_s"), _median(runs, "env_steps")
            medians[system] = t
            rss = [r["peak_rss_mb"] for r in runs if "peak_rss_mb" in r]
            lines.append("| " + " | ".join([
                algo, label[system], *[_fmt_run(by_seed[x]) if x in by_seed else "—"
                                       for x in seeds],
                f"{sum(bool(r.get('solved')) for r in runs)}/{len(runs)}",
                "not solved" if math.isinf(t) else f"{t:.1f} s",
                "not solved" if math.isinf(s) else f"{s / 1000:.1f}k",
                f"{max(rss):.0f} MB" if rss else "—"]) + " |")
        for system in ("jrl", "jrl-warm"):
            a, b = medians.get(system, math.nan), medians.get("sb3", math.nan)
            if math.isfinite(a) and math.isfinite(b) and b > 0:
                ratios.append(f"- {algo}: median time-to-solve {system} / SB3 = {a / b:.2f}× "
                              f"({a:.1f} s / {b:.1f} s)")
    return "\n".join(lines) + ("\n\n" + "\n".join(ratios) if ratios else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--algos", nargs="+", default=["SAC", "TD3", "DDPG"])
    parser.add_argument("--systems", nargs="+", default=["jrl", "jrl-warm", "sb3"],
                        choices=["jrl", "jrl-warm", "sb3"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--max-steps", type=int, default=30_000)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--override", default="{}", help="JSON merged into the jrl configs")
    parser.add_argument("--out", help="write the section into this markdown file")
    parser.add_argument("--child-system", help=argparse.SUPPRESS)
    parser.add_argument("--child-algo", help=argparse.SUPPRESS)
    parser.add_argument("--child-seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_system:
        runner = run_sb3 if args.child_system == "sb3" else run_jrl
        out = runner(args.child_algo, args.child_seed, args.max_steps, args.eval_every,
                     json.loads(args.override))
        out.update(system=args.child_system, algo=args.child_algo, seed=args.child_seed)
        with open(args.child_out, "w") as f:
            json.dump(out, f)
        return
    start = time.time()
    machine = common.machine_lines()  # load average at the start
    results = []
    for algo in args.algos:
        for seed in args.seeds:
            for system in args.systems:
                r = run_child(system, algo, seed, args)
                results.append(r)
                print(f"{algo} seed {seed} {system}: {_fmt_run(r)} evals={r.get('evals')}",
                      r.get("stderr_tail", ""), flush=True)
    body = "\n".join([
        f"Command: `{common.command_line()}` ({time.time() - start:.0f} s in all)", "",
        "Time-to-solve: wall time from building the agent until a greedy 10-episode "
        "evaluation averages >= -200 (evaluations every "
        f"{args.eval_every} env steps, their time excluded; JIT compile included; cold: empty "
        "compilation cache, warm: the cache a previous short run of the same config left). "
        "jrl: `configs/pendulum-<algo>.yaml`; SB3: rl-zoo hyperparameters, 1 env.", "",
        make_table(results, args.algos, args.seeds), "",
        *machine,
        "- the machine is shared with other jobs: absolute times are noisy, ratios from one "
        "run are what count"])
    common.publish(args.out, SECTION, body)


if __name__ == "__main__":
    main()
