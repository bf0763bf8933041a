"""ES on CartPole-v1: time-to-solve with 0 and 2 Ray workers, and batched episode throughput.

Time-to-solve is the wall time from building the trainer (Ray start-up and worker creation
included; imports excluded) until a greedy 10-episode evaluation after an iteration averages
>= 475; evaluations are not timed. Config: ``configs/cartpole-es.yaml`` (only its ``config``;
``num_workers``, ``seed``, ``evaluation_interval`` and ``log_level`` are overridden). Each
(num_workers, seed) runs in its own subprocess; worker counts take turns for each seed.

Throughput (in the num_workers=0 runs, after solving, with the solved policy): env steps/s of
one worker evaluating 10 antithetic pairs as one batch (20 episodes stepped together, one
batched forward pass per step) against the same 10 pairs one at a time (2 episodes per forward
pass), to show what batching the perturbations buys.

    python benchmarks/es.py                                  # seeds 0 1 2, workers 0 and 2
    python benchmarks/es.py --out benchmarks/RESULTS.md
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

ENV_ID = "CartPole-v1"
THRESHOLD = 475.0
EVAL_EPISODES = 10
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/cartpole-es.yaml"
SECTION = "ES on CartPole-v1: time-to-solve with 0 and 2 workers"


def _config() -> dict:
    import yaml

    with open(os.path.join(REPO_ROOT, CONFIG)) as f:
        (entry,) = yaml.safe_load(f).values()
    return dict(entry["config"])


def _throughput(trainer, pairs: int, repeats: int) -> dict:
    """Env steps/s of ``pairs`` pairs in one batch vs one pair at a time (same seeds count)."""
    import jax

    from jrl.execution.evolution import run_round

    worker = trainer.workers.local_worker()
    policy = jax.device_get(trainer.algorithm.policy(trainer.state))
    modes = {"batched": [pairs], "one pair at a time": [1] * pairs}
    steps, seconds = dict.fromkeys(modes, 0), dict.fromkeys(modes, 0.0)
    for batches in modes.values():
        run_round(worker, policy, [0, 0], batches[0], 0.0)  # compile for this batch size
    for r in range(repeats):  # modes take turns, so load changes hit both
        for mode, batches in modes.items():
            start = time.perf_counter()
            for i, n in enumerate(batches):
                steps[mode] += run_round(worker, policy, [1, r, i], n, 0.0)["env_steps"]
            seconds[mode] += time.perf_counter() - start
    return {mode: steps[mode] / seconds[mode] for mode in modes}


def child(num_workers: int, seed: int, max_steps: int, out_path: str) -> None:
    import jrl

    config = _config()
    config.update(num_workers=num_workers, seed=seed, evaluation_interval=None,
                  log_level="ERROR")
    start = time.perf_counter()
    trainer = jrl.Trainer("ES", env=ENV_ID, config=config, log_to_disk=False)
    elapsed = build_s = time.perf_counter() - start
    solved, reward = False, float("nan")
    while trainer.timesteps_total < max_steps:
        t0 = time.perf_counter()
        trainer.train()
        elapsed += time.perf_counter() - t0
        reward = trainer.evaluate(EVAL_EPISODES)["evaluation"]["episode_reward_mean"]
        if reward >= THRESHOLD:
            solved = True
            break
    record = {"num_workers": num_workers, "seed": seed, "solved": solved, "time_s": elapsed,
              "build_s": build_s, "env_steps": trainer.timesteps_total,
              "iterations": trainer.iteration, "last_eval": reward}
    if num_workers == 0 and solved:
        record["throughput"] = _throughput(trainer, config["episodes_per_batch"] // 2, 4)
    trainer.stop()
    with open(out_path, "w") as f:
        json.dump(record, f)


def run_child(num_workers: int, seed: int, args) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    cmd = [sys.executable, os.path.abspath(__file__), "--child-workers", str(num_workers),
           "--child-seed", str(seed), "--max-steps", str(args.max_steps), "--child-out", out]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
    try:
        with open(out) as f:
            record = json.load(f)
    except (OSError, json.JSONDecodeError):
        record = {"num_workers": num_workers, "seed": seed, "error": proc.returncode,
                  "stderr_tail": proc.stderr[-2000:]}
    finally:
        if os.path.exists(out):
            os.unlink(out)
    record["process_s"] = time.perf_counter() - start
    return record


def _cell(r: dict) -> str:
    if "error" in r:
        return "error"
    if not r["solved"]:
        return f"not solved ({r['env_steps'] / 1000:.1f}k)"
    return f"{r['time_s']:.1f} s ({r['env_steps'] / 1000:.1f}k, {r['iterations']} it)"


def make_section(results: list[dict], workers: list[int], seeds: list[int], args,
                 total_s: float) -> str:
    lines = [*common.machine_lines(),
             f"- command: `{common.command_line()}`",
             f"- config: {CONFIG}; threshold: greedy {EVAL_EPISODES}-episode mean >= "
             f"{THRESHOLD:g} after an iteration; evaluation time excluded, trainer build (Ray "
             f"start-up and worker creation for 2 workers) and JIT included, imports excluded; "
             f"cap {args.max_steps / 1000:.0f}k env steps; one subprocess per run",
             "- the machine is shared with other jobs: timings are noisy, compare rows of the "
             "same run",
             f"- whole benchmark wall time: {total_s:.0f} s",
             "",
             "Cells: time-to-solve (env steps, iterations at the solving evaluation). \"after "
             "build\": without building the trainer (Ray start-up, worker creation, init).",
             "",
             "| num_workers | " + " | ".join(f"seed {s}" for s in seeds)
             + " | solved | median time | median time after build | median env steps "
             "| build (s) |",
             "|---|" + "---|" * (len(seeds) + 5)]
    for n in workers:
        runs = [r for r in results if r["num_workers"] == n]
        ok = [r for r in runs if r.get("solved")]
        times = sorted(r["time_s"] for r in ok) + [float("inf")] * (len(runs) - len(ok))
        steps = sorted(r["env_steps"] for r in ok) + [float("inf")] * (len(runs) - len(ok))
        after = sorted(r["time_s"] - r["build_s"] for r in ok) + [float("inf")] * (
            len(runs) - len(ok))
        med_t, med_s, med_a = common.median(times), common.median(steps), common.median(after)
        builds = [r["build_s"] for r in runs if "build_s" in r]
        lines.append("| " + " | ".join([
            str(n), *[_cell(r) for r in runs], f"{len(ok)}/{len(runs)}",
            "not solved" if med_t == float("inf") else f"{med_t:.1f} s",
            "not solved" if med_a == float("inf") else f"{med_a:.1f} s",
            "not solved" if med_s == float("inf") else f"{med_s / 1000:.1f}k",
            f"{common.median(builds):.2f}" if builds else "—"]) + " |")
    tput = [r["throughput"] for r in results if "throughput" in r]
    if tput:
        batched = common.median([t["batched"] for t in tput])
        single = common.median([t["one pair at a time"] for t in tput])
        lines += ["", "Episode evaluation throughput on one worker (solved policy, episodes of "
                  "~500 steps; median over the num_workers=0 runs):", "",
                  "| 10 antithetic pairs evaluated | env steps/s | vs one pair at a time |",
                  "|---|---|---|",
                  f"| together (20 episodes per batched forward pass) | {batched:,.0f} | "
                  f"{batched / single:.2f}× |",
                  f"| one pair at a time (2 episodes per forward pass) | {single:,.0f} | "
                  "1.00× |"]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", nargs="+", type=int, default=[0, 2])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--max-steps", type=int, default=200_000)
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per subprocess")
    p.add_argument("--out", default=None, help="markdown file to write the section into")
    p.add_argument("--child-workers", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-seed", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_workers is not None:
        child(args.child_workers, args.child_seed, args.max_steps, args.child_out)
        return
    start = time.perf_counter()
    results = []
    for seed in args.seeds:
        for n in args.workers:
            r = run_child(n, seed, args)
            results.append(r)
            print(f"[workers {n} seed {seed}] {_cell(r)}, process {r['process_s']:.1f} s"
                  + (f", throughput {r['throughput']}" if "throughput" in r else ""), flush=True)
            if "error" in r:
                print(r.get("stderr_tail", ""), file=sys.stderr)
    results.sort(key=lambda r: (r["num_workers"], r["seed"]))
    section = make_section(results, args.workers, args.seeds, args, time.perf_counter() - start)
    print()
    common.publish(args.out, SECTION, section)


if __name__ == "__main__":
    main()
