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
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bench_common as common  # noqa: E402

ENV_ID = "CartPole-v1"
THRESHOLD = 475.0
EVAL_EPISODES = common.EVAL_EPISODES
CONFIG = "configs/cartpole-es.yaml"
SECTION = "ES on CartPole-v1: time-to-solve with 0 and 2 workers"


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


def child(num_workers: int, seed: int, max_steps: int) -> dict:
    import jrl

    config = common.tuned_config(CONFIG)
    config.update(num_workers=num_workers, seed=seed, evaluation_interval=None,
                  log_level="ERROR")
    clock = common.PausableClock()
    clock.start()
    trainer = jrl.Trainer("ES", env=ENV_ID, config=config, log_to_disk=False)
    build_s = clock.read()
    solved, reward = False, float("nan")
    while trainer.timesteps_total < max_steps:
        trainer.train()
        clock.pause()
        reward = trainer.evaluate(EVAL_EPISODES)["evaluation"]["episode_reward_mean"]
        if reward >= THRESHOLD:
            solved = True
            break
        clock.resume()
    clock.pause()
    record = {"num_workers": num_workers, "seed": seed, "solved": solved,
              "time_s": clock.elapsed, "build_s": build_s,
              "env_steps": trainer.timesteps_total, "iterations": trainer.iteration,
              "last_eval": reward}
    if num_workers == 0 and solved:
        record["throughput"] = _throughput(trainer, config["episodes_per_batch"] // 2, 4)
    trainer.stop()
    return record


def run_child(num_workers: int, seed: int, args) -> dict:
    return common.run_child(
        __file__, ["--child-workers", str(num_workers), "--child-seed", str(seed),
                   "--max-steps", str(args.max_steps)],
        ident={"num_workers": num_workers, "seed": seed}, timeout=args.timeout,
        env={"RAY_AUTH_MODE": "disabled"})


def _cell(r: dict) -> str:
    if "error" in r:
        return "error"
    if not r["solved"]:
        return f"not solved ({r['env_steps'] / 1000:.1f}k)"
    return f"{r['time_s']:.1f} s ({r['env_steps'] / 1000:.1f}k, {r['iterations']} it)"


def make_section(results: list[dict], workers: list[int], seeds: list[int], args,
                 total_s: float) -> str:
    rows = []
    for n in workers:
        runs = [r for r in results if r["num_workers"] == n]
        solved = sum(bool(r.get("solved")) for r in runs)
        med_t = common.median_solved(runs, "time_s")
        med_a = common.median_solved(runs, lambda r: r["time_s"] - r["build_s"])
        med_s = common.median_solved(runs, "env_steps")
        builds = [r["build_s"] for r in runs if "build_s" in r]
        rows.append([n, *[_cell(r) for r in runs], f"{solved}/{len(runs)}",
                     common.format_seconds(med_t), common.format_seconds(med_a),
                     "not solved" if med_s == float("inf") else f"{med_s / 1000:.1f}k",
                     common.format_optional(common.median(builds), ".2f")])
    lines = [*common.section_header(),
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
             common.markdown_table(["num_workers", *[f"seed {s}" for s in seeds], "solved",
                                    "median time", "median time after build",
                                    "median env steps", "build (s)"], rows)]
    tput = [r["throughput"] for r in results if "throughput" in r]
    if tput:
        batched = common.median([t["batched"] for t in tput])
        single = common.median([t["one pair at a time"] for t in tput])
        lines += ["", "Episode evaluation throughput on one worker (solved policy, episodes of "
                  "~500 steps; median over the num_workers=0 runs):", "",
                  common.markdown_table(
                      ["10 antithetic pairs evaluated", "env steps/s", "vs one pair at a time"],
                      [["together (20 episodes per batched forward pass)", f"{batched:,.0f}",
                        f"{batched / single:.2f}×"],
                       ["one pair at a time (2 episodes per forward pass)", f"{single:,.0f}",
                        "1.00×"]])]
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
        common.write_child_record(args.child_out,
                                  child(args.child_workers, args.child_seed, args.max_steps))
        return
    start = time.perf_counter()
    results = []
    for seed in args.seeds:
        for n in args.workers:
            r = run_child(n, seed, args)
            results.append(r)
            common.print_run(f"workers {n} seed {seed}", r, _cell(r),
                             f", throughput {r['throughput']}" if "throughput" in r else "")
    results.sort(key=lambda r: (r["num_workers"], r["seed"]))
    section = make_section(results, args.workers, args.seeds, args, time.perf_counter() - start)
    print()
    common.publish(args.out, SECTION, section)


if __name__ == "__main__":
    main()
