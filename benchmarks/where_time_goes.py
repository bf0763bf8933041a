"""Where the time goes: jrl's phase breakdown (``jrl.logger.PHASES``, what ``JRL_PROFILE=1``
prints) for the workloads of the speed table, each in a fresh process with no compilation cache.

Rows (tuned configs, fixed step counts close to where each solves):

- ``ppo``: PPO CartPole-v1 (``configs/cartpole-ppo.yaml``), 20k steps, in-process sampling;
- ``ppo2w``: the same with ``num_workers: 2`` (Ray started by the trainer);
- ``dqn``: DQN CartPole-v1 (``configs/cartpole-dqn.yaml``), 40k steps;
- ``sac``: SAC Pendulum-v1 (``configs/pendulum-sac.yaml``), 3k steps;
- ``jitted``: ``jrl train -f configs/gymnax-cartpole-ppo.yaml`` through the CLI (8 seeds x 500k).

Times are exclusive (a phase inside another is taken out of it), so the phases add up to the
process wall time; "compile: XLA" counts every compiled program, wherever it happened.

    python benchmarks/where_time_goes.py --rows ppo dqn --out benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bench_common as common  # noqa: E402

SECTION = "Where the time goes (JRL_PROFILE phase breakdown per workload)"
ROWS = {
    "ppo": ("PPO", "CartPole-v1", "configs/cartpole-ppo.yaml", 20_000, {}),
    "ppo2w": ("PPO", "CartPole-v1", "configs/cartpole-ppo.yaml", 20_000, {"num_workers": 2}),
    "dqn": ("DQN", "CartPole-v1", "configs/cartpole-dqn.yaml", 40_000, {}),
    "sac": ("SAC", "Pendulum-v1", "configs/pendulum-sac.yaml", 3_000, {}),
}


def child(row: str) -> dict:
    from jrl.logger import PHASES, process_age_s

    PHASES.watch_compiles()
    PHASES.add("startup: Python, imports", process_age_s() or 0.0)
    import jrl

    algo, env_id, path, steps, extra = ROWS[row]
    config = common.tuned_config(path, algo)
    config.pop("env", None)
    if config.get("framework", "jax") != "jax":
        config.pop("framework")
    config.update(extra, seed=0, log_level="ERROR", evaluation_interval=None)
    trainer = jrl.Trainer(algo, env=env_id, config=config, log_to_disk=False)
    result = {}
    while trainer.timesteps_total < steps:
        result = trainer.train()
    with PHASES.phase("stop (workers, Ray)"):
        trainer.stop()
    wall = process_age_s()
    return {"wall_s": wall, "phases": PHASES.seconds, "counts": PHASES.counts,
            "programs": len(PHASES.programs), "steps": trainer.timesteps_total,
            "reward": result.get("episode_reward_mean"), "peak_rss_mb": common.peak_rss_mb(),
            "table": PHASES.table(wall)}


def run_row(row: str) -> dict:
    env = {**os.environ, "JRL_COMPILATION_CACHE_DIR": "0",
           "PYTHONPATH": os.path.join(common.REPO_ROOT, "src")}
    if row == "jitted":
        import tempfile

        cmd = [sys.executable, "-m", "jrl", "train", "-f",
               os.path.join(common.REPO_ROOT, "configs/gymnax-cartpole-ppo.yaml"),
               "--local-dir", tempfile.mkdtemp(prefix="jrl-wtg-"), "--quiet"]
        env["JRL_PROFILE"] = "1"
    else:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", row]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=common.REPO_ROOT)
    outside = time.perf_counter() - start
    if proc.returncode != 0:
        return {"row": row, "error": proc.stderr[-1500:], "outside_s": outside}
    if row == "jitted":
        text = proc.stdout.split("Where the time went", 1)[-1]
        wall = re.search(r"process wall time ([0-9.]+) s", proc.stdout)
        return {"row": row, "outside_s": outside, "table": "\n".join(text.splitlines()[1:]),
                "wall_s": float(wall.group(1)) if wall else outside}
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    record.update(row=row, outside_s=outside)
    return record


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", nargs="+", default=[*ROWS, "jitted"],
                   choices=[*ROWS, "jitted"])
    p.add_argument("--out", default=None)
    p.add_argument("--child", default=None)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return
    header = common.section_header()
    started = time.perf_counter()
    records = []
    for row in args.rows:
        r = run_row(row)
        records.append(r)
        print(f"[{row}] {r.get('wall_s', float('nan')):.1f} s"
              + (f" ERROR {r['error']}" if "error" in r else ""), flush=True)
        print(r.get("table", ""), flush=True)
    lines = [*header,
             "- each row a fresh process, no persistent compilation cache, evaluation off; "
             "times exclusive (they add up to the process wall time)",
             "- the machine is shared and was loaded while this ran (see load average): read "
             "the shares, not the absolute seconds",
             f"- whole benchmark wall time: {time.perf_counter() - started:.0f} s", ""]
    for r in records:
        if "error" in r:
            lines += [f"### {r['row']}: failed", "", "```", r["error"], "```", ""]
            continue
        what = {"jitted": "`jrl train -f configs/gymnax-cartpole-ppo.yaml` (8 seeds x 500k)"}.get(
            r["row"])
        if what is None:
            algo, env_id, path, steps, extra = ROWS[r["row"]]
            what = (f"{algo} {env_id} ({path}{', ' + json.dumps(extra) if extra else ''}), "
                    f"{r['steps']:,} env steps, peak RSS {r['peak_rss_mb']:.0f} MB")
        lines += [f"### {what}: {r['wall_s']:.1f} s", "", "```", r["table"], "```", ""]
    common.publish(args.out, SECTION, "\n".join(lines))


if __name__ == "__main__":
    main()
