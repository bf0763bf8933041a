"""Time-to-solve CartPole-v1 for jrl's A2C (vs stable-baselines3's A2C), PG and A3C, per seed.

The same measurement as ``cartpole_time_to_solve.py`` (whose child runner this script reuses
for the jrl runs): wall time from building the agent (imports excluded, JIT included) until a
greedy 10-episode evaluation averages >= 475, evaluations excluded, one subprocess per
(system, algo, seed), systems interleaved per seed. jrl reads ``configs/cartpole-<algo>.yaml``.
SB3 runs A2C with rl-zoo's CartPole-v1 entry (``hyperparams/a2c.yml``: 8 envs, ``ent_coef``
0, SB3 defaults otherwise: ``n_steps`` 5, RMSprop lr 7e-4, ``gae_lambda`` 1, ``vf_coef`` 0.5,
``max_grad_norm`` 0.5, no normalization). PG and A3C have no SB3 counterpart and run for jrl
only (A3C with the Ray workers its YAML asks for; Ray start-up counts).

    python benchmarks/a2c_time_to_solve.py                              # A2C, PG, A3C, seeds 0 1 2
    python benchmarks/a2c_time_to_solve.py --algos A2C --seeds 0 --max-steps 100000
    python benchmarks/a2c_time_to_solve.py --out benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bench_common as common  # noqa: E402
import cartpole_time_to_solve as tts  # noqa: E402

SECTION = "CartPole-v1 time-to-solve: jrl A2C vs stable-baselines3 A2C, jrl PG and A3C"
ALGOS = ("A2C", "PG", "A3C")
DEFAULT_MAX_STEPS = {"A2C": 500_000, "PG": 300_000, "A3C": 300_000}
# rl-zoo hyperparams/a2c.yml, CartPole-v1 (the rest are SB3's A2C defaults).
SB3_ZOO_A2C = dict(n_envs=8, n_timesteps=500_000, ent_coef=0.0)


def run_sb3_a2c(seed: int, max_steps: int, eval_every: int) -> dict:
    import torch

    torch.set_num_threads(1)
    from stable_baselines3 import A2C
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    clock = tts.PausableClock()
    state = {"evals": [], "solved": False, "last_eval": 0}

    def evaluate(model, steps: int) -> bool:
        clock.pause()
        reward = tts._sb3_greedy_eval(model, seed + 10_000 + len(state["evals"]))
        state["evals"].append((steps, round(clock.elapsed, 3), reward))
        state["last_eval"] = steps
        state["solved"] = reward >= tts.THRESHOLD
        clock.resume()
        return state["solved"]

    class EvalCallback(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps - state["last_eval"] >= eval_every:
                return not evaluate(self.model, self.num_timesteps)
            return True

    clock.start()
    env = make_vec_env(tts.ENV_ID, n_envs=SB3_ZOO_A2C["n_envs"], seed=seed)
    model = A2C("MlpPolicy", env, ent_coef=SB3_ZOO_A2C["ent_coef"], seed=seed, device="cpu",
                verbose=0)
    build_s = clock.read()
    model.learn(total_timesteps=max_steps, callback=EvalCallback())
    if not state["solved"] and state["last_eval"] < model.num_timesteps:
        evaluate(model, model.num_timesteps)
    clock.pause()
    steps = state["evals"][-1][0] if state["evals"] else model.num_timesteps
    return {"solved": state["solved"], "time_s": clock.elapsed, "env_steps": steps,
            "build_s": build_s, "first_iter_s": None, "evals": state["evals"],
            "config_source": "rl-zoo CartPole-v1", "config": SB3_ZOO_A2C,
            "peak_rss_mb": tts._peak_rss_mb(), "torch_threads": torch.get_num_threads()}


def run_sb3_child(seed: int, max_steps: int, args) -> dict:
    """SB3 A2C in a subprocess of this script (jrl runs go through ``tts.run_child``)."""
    with tempfile.NamedTemporaryFile("r", suffix=".json", delete=False) as tmp:
        path = tmp.name
    cmd = [sys.executable, os.path.abspath(__file__), "--child-seed", str(seed),
           "--child-max-steps", str(max_steps), "--child-out", path, "--eval-every",
           str(args.eval_every)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout,
                              env=dict(os.environ, PYTHONWARNINGS="ignore"))
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            return {"system": "sb3", "algo": "A2C", "seed": seed,
                    "error": f"exit code {proc.returncode}",
                    "stderr_tail": (proc.stderr or proc.stdout)[-2000:], "process_s": wall}
        with open(path) as f:
            out = json.load(f)
        out.update(system="sb3", algo="A2C", seed=seed, process_s=wall)
        return out
    except subprocess.TimeoutExpired:
        return {"system": "sb3", "algo": "A2C", "seed": seed,
                "error": f"timeout after {args.timeout} s", "process_s": args.timeout}
    finally:
        if os.path.exists(path):
            os.unlink(path)


def make_section(results: list[dict], algos: list[str], seeds: list[int], args,
                 total_s: float) -> str:
    sources = sorted({(r["algo"], r.get("config_source")) for r in results
                      if r["system"].startswith("jrl") and "error" not in r})
    body = [*common.machine_lines(),
            f"- command: `{common.command_line()}`",
            f"- threshold: greedy {tts.EVAL_EPISODES}-episode mean >= {tts.THRESHOLD:g}, "
            f"evaluated every {args.eval_every} env steps; evaluation time excluded, agent "
            "build + JIT included (and Ray start-up for A3C), imports excluded; one subprocess "
            "per (system, algo, seed)",
            "- caps: " + ", ".join(f"{a} {cap_for(a, args) / 1000:.0f}k steps" for a in algos),
            *[f"- jrl {a} config: {src}" for a, src in sources],
            "- SB3 A2C: rl-zoo CartPole-v1 (`n_envs` 8, `ent_coef` 0; SB3 defaults otherwise: "
            "`n_steps` 5, RMSprop lr 7e-4, `gae_lambda` 1, `vf_coef` 0.5, `max_grad_norm` 0.5), "
            "`device=\"cpu\"`, `torch.set_num_threads(1)`",
            "- the machine was shared with other jobs while this ran: compare the ratios "
            "measured in the same run rather than absolute times",
            f"- whole benchmark wall time: {total_s:.0f} s",
            "",
            "Cells: time-to-solve (env steps at the solving evaluation). Medians count unsolved "
            "runs as infinitely slow.",
            "",
            tts.make_table(results, algos, seeds)]
    return "\n".join(body)


def cap_for(algo: str, args) -> int:
    return args.max_steps if args.max_steps else DEFAULT_MAX_STEPS[algo]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--algos", nargs="+", default=list(ALGOS), type=str.upper, choices=ALGOS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--systems", nargs="+", default=["jrl", "sb3"], choices=tts.SYSTEMS,
                   help="sb3 applies to A2C only")
    p.add_argument("--max-steps", type=int, default=None,
                   help="env-step cap per run (default: A2C 500k, PG and A3C 300k)")
    p.add_argument("--eval-every", type=int, default=2048, help="env steps between evaluations")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per subprocess")
    p.add_argument("--out", default=None, help="markdown file to write/update the section in")
    p.add_argument("--json", default=None, help="also dump all per-run records to this file")
    for name, tp in [("--child-seed", int), ("--child-max-steps", int), ("--child-out", str)]:
        p.add_argument(name, type=tp, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_out:
        out = run_sb3_a2c(args.child_seed, args.child_max_steps, args.eval_every)
        with open(args.child_out, "w") as f:
            json.dump(out, f)
        return

    start = time.perf_counter()
    results = []
    for algo in args.algos:
        for seed in args.seeds:
            for system in args.systems:
                if system == "sb3" and algo != "A2C":
                    continue
                cap = cap_for(algo, args)
                r = (run_sb3_child(seed, cap, args) if system == "sb3"
                     else tts.run_child(system, algo, seed, cap, args))
                results.append(r)
                print(f"[{system} {algo} seed {seed}] {tts._fmt_run(r)}, "
                      f"process {r['process_s']:.1f} s", flush=True)
                if "error" in r and r.get("stderr_tail"):
                    print(r["stderr_tail"], file=sys.stderr)
    total = time.perf_counter() - start
    section = make_section(results, args.algos, args.seeds, args, total)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
    print()
    common.publish(args.out, SECTION, section)


if __name__ == "__main__":
    main()
