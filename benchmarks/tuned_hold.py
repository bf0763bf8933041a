"""Do the tuned examples hold? Train each tuned YAML with 3 seeds, then evaluate the final
checkpoint afresh.

For every selected ``configs/*.yaml`` whose stop criterion is a greedy evaluation return
(``evaluation/episode_reward_mean``), and every training seed: ``jrl train -f <yaml> --seed S``
(the YAML's own stop criteria), then ``jrl evaluate <results dir> --episodes 10 --seed E`` on the
final checkpoint with env seeds (``E`` = 900000 + 1000 * S) that training's evaluations never
used. A run *holds* when that fresh greedy 10-episode mean reaches the YAML's threshold.

One training at a time, under ``nice -n 10`` (the machine is shared). Results are appended as
JSON lines to ``--jsonl`` as they come (a rerun skips the (config, seed) pairs already there), so
the table can be written while runs are still going:

    python benchmarks/tuned_hold.py                                  # every CI-sized config
    python benchmarks/tuned_hold.py --configs cartpole-a2c cartpole-appo --seeds 0 1 2
    python benchmarks/tuned_hold.py --report-only --out benchmarks/RESULTS.md

Excluded (not CI-sized on a CPU, or no evaluation-return threshold): ``pong-*`` (Atari, hours),
``minatar-breakout-ppo`` (minutes per 100k steps; threshold on the training mean),
``gymnax-cartpole-ppo`` (fixed step budget, no threshold), ``rps-ppo-vs-heuristic`` and
``pettingzoo-rps-ppo`` (thresholds on a custom win rate and a policy's training return, not on an
evaluation). ``cartpole-bc`` and ``cartpole-marwil`` train from recorded expert episodes; the
script records them first (``--expert-dir``) from a ``cartpole-ppo`` checkpoint.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bench_common as common  # noqa: E402

SECTION = "Tuned examples that hold: fresh 10-episode greedy evaluation, 3 training seeds"
CONFIGS = ("cartpole-a2c", "cartpole-appo", "cartpole-impala", "cartpole-ppo", "cartpole-pg",
           "cartpole-dqn", "cartpole-es", "cartpole-apex", "cartpole-a3c",
           "multi-agent-cartpole-ppo", "multi-agent-cartpole-shared-ppo",
           "multi-agent-cartpole-impala", "gymnax-multi-agent-cartpole-ppo",
           "gymnax-multi-agent-cartpole-dqn", "stateless-cartpole-lstm-ppo", "pendulum-sac", "pendulum-td3", "pendulum-ddpg",
           "pendulum-apex-ddpg", "cartpole-bc", "cartpole-marwil")
EXCLUDED = {
    "pong-ppo": "Atari Pong: hours on a CPU",
    "pong-impala": "Atari Pong: hours on a CPU",
    "minatar-breakout-ppo": "minutes per 100k steps; its threshold is on the training mean",
    "gymnax-cartpole-ppo": "a fixed step budget (500k x 8 seeds), no threshold to hold",
    "rps-ppo-vs-heuristic": "threshold on a custom win-rate metric, not an evaluation return",
    "pettingzoo-rps-ppo": "threshold on a policy's training return, not an evaluation return",
    "brax-inverted-pendulum-ppo": "3M steps; brax is an optional extra",
}
OFFLINE = ("cartpole-bc", "cartpole-marwil")
# The level a run must hold where the YAML stops on a stricter evaluation than its solve level.
HOLD_THRESHOLD = {"cartpole-a2c": 475.0, "cartpole-es": 475.0, "cartpole-impala": 475.0,
                  "cartpole-a3c": 475.0, "cartpole-apex": 475.0, "cartpole-dqn": 475.0,
                  "pendulum-sac": -200.0, "pendulum-ddpg": -200.0, "pendulum-td3": -200.0}
EVAL_EPISODES = 10
FRESH_SEED_BASE = 900_000
JRL = [sys.executable, "-m", "jrl"]


def _yaml(name: str) -> tuple[str, dict]:
    import yaml

    path = os.path.join(common.REPO_ROOT, "configs", f"{name}.yaml")
    with open(path) as f:
        (exp_name, spec), = yaml.safe_load(f).items()
    return path, spec


def _nice(cmd: list[str]) -> list[str]:
    return ["nice", "-n", "10", *cmd]


def _last_row(results_dir: str) -> dict:
    rows: list[dict] = []
    for root, _, files in os.walk(results_dir):
        if "progress.csv" in files:
            with open(os.path.join(root, "progress.csv")) as f:
                rows = list(csv.DictReader(f))
    return rows[-1] if rows else {}


def _float(row: dict, key: str) -> float | None:
    try:
        return float(row[key])
    except (KeyError, TypeError, ValueError):
        return None


def _final_checkpoint(results_dir: str) -> str | None:
    """The newest ``checkpoint_<n>`` directory under ``results_dir`` (any depth)."""
    found = []
    for root, dirs, _ in os.walk(results_dir):
        for d in dirs:
            match = re.fullmatch(r"checkpoint_(\d+)", d)
            if match:
                found.append((int(match.group(1)), os.path.join(root, d)))
    return max(found)[1] if found else None


def record_expert(expert_dir: str, timeout: float) -> None:
    """Trains cartpole-ppo (seed 0) and records 100 greedy episodes into ``expert_dir``."""
    if os.path.isdir(expert_dir) and os.listdir(expert_dir):
        return
    path, _ = _yaml("cartpole-ppo")
    with tempfile.TemporaryDirectory(prefix="jrl-hold-expert-") as tmp:
        subprocess.run(_nice([*JRL, "train", "-f", path, "--seed", "0", "--local-dir", tmp,
                              "-q"]), check=True, timeout=timeout)
        os.makedirs(expert_dir, exist_ok=True)
        subprocess.run(_nice([*JRL, "evaluate", _final_checkpoint(tmp) or tmp, "--episodes",
                              "100", "--config", json.dumps({"num_workers": 0}), "--out",
                              os.path.join(expert_dir, "expert.json")]), check=True,
                       timeout=timeout, stdout=subprocess.DEVNULL)


def run_one(name: str, seed: int, timeout: float, expert_dir: str) -> dict:
    path, spec = _yaml(name)
    threshold = HOLD_THRESHOLD.get(name, float(spec["stop"]["evaluation/episode_reward_mean"]))
    record: dict = {"config": name, "seed": seed, "threshold": threshold,
                    "stop_threshold": float(spec["stop"]["evaluation/episode_reward_mean"])}
    extra: list[str] = []
    if name in OFFLINE:
        extra = ["--config", json.dumps({"input": expert_dir})]
    with tempfile.TemporaryDirectory(prefix="jrl-hold-") as tmp:
        t0 = time.perf_counter()
        for _ in range(3):
            train = subprocess.run(_nice([*JRL, "train", "-f", path, "--seed", str(seed),
                                          "--local-dir", tmp, "-q", *extra]),
                                   capture_output=True, text=True, timeout=timeout)
            # Ray gives its raylet 30 s to start; on a loaded machine (and under nice) that
            # can pass: start again rather than count it as a failed run.
            if "timed out during startup" not in train.stderr:
                break
            record["ray_start_retries"] = record.get("ray_start_retries", 0) + 1
        record["train_s"] = round(time.perf_counter() - t0, 1)
        record["train_rc"] = train.returncode
        last = _last_row(tmp)
        record["timesteps_total"] = _float(last, "timesteps_total")
        record["training_iteration"] = _float(last, "training_iteration")
        record["last_eval_mean"] = _float(last, "evaluation/episode_reward_mean")
        if train.returncode != 0:
            record["error"] = (train.stderr.strip().splitlines() or ["?"])[-1][:200]
            return record
        fresh_seed = FRESH_SEED_BASE + 1000 * seed
        checkpoint = _final_checkpoint(tmp) or tmp
        # Evaluation runs its episodes in-process: no Ray workers to start for it.
        ev = subprocess.run(_nice([*JRL, "evaluate", checkpoint, "--episodes", str(EVAL_EPISODES),
                                   "--seed", str(fresh_seed), "--config",
                                   json.dumps({"num_workers": 0})]),
                            capture_output=True, text=True, timeout=timeout)
        match = re.search(r"mean return (-?[\d.]+)", ev.stdout)
        record["fresh_seed"] = fresh_seed
        record["fresh_mean"] = float(match.group(1)) if match else None
        if match is None:
            record["error"] = (ev.stderr.strip().splitlines() or ["?"])[-1][:200]
    record["holds"] = record.get("fresh_mean") is not None and \
        record["fresh_mean"] >= threshold
    return record


def load(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def table(records: list[dict], configs: list[str], seeds: list[int]) -> str:
    by_key = {(r["config"], r["seed"]): r for r in records}
    rows = []
    for name in configs:
        runs = [by_key[(name, s)] for s in seeds if (name, s) in by_key]
        if not runs:
            continue
        cells = []
        for r in runs:
            fresh = r.get("fresh_mean")
            steps = r.get("timesteps_total")
            cell = (f"{fresh:.1f}" if fresh is not None else f"error: {r.get('error', '?')}")
            cell += f" ({steps / 1000:.0f}k steps)" if steps else ""
            cells.append(cell)
        held = sum(bool(r.get("holds")) for r in runs)
        train_s = "; ".join(f"{r['train_s']:.0f}" if r.get("train_s") is not None else "-"
                            for r in runs)
        rows.append([f"`configs/{name}.yaml`", f"{runs[0]['threshold']:g}", "; ".join(cells),
                     train_s, f"{held}/{len(runs)}"])
    return common.markdown_table(["config", "threshold", "fresh mean per seed 0,1,2 "
                                  "(training steps)", "train s per seed", "hold"], rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", default=list(CONFIGS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--jsonl", default=os.path.join(tempfile.gettempdir(), "jrl-tuned-hold.jsonl"))
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per training run")
    p.add_argument("--expert-dir", default=os.path.join(tempfile.gettempdir(),
                                                        "jrl-hold-expert"))
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--out", help="write the section into this markdown file (RESULTS.md)")
    args = p.parse_args()
    done = {(r["config"], r["seed"]) for r in load(args.jsonl)}
    if not args.report_only:
        for name in args.configs:
            if name in EXCLUDED:
                print(f"skip {name}: {EXCLUDED[name]}")
                continue
            if name in OFFLINE:
                record_expert(args.expert_dir, args.timeout)
            for seed in args.seeds:
                if (name, seed) in done:
                    continue
                try:
                    record = run_one(name, seed, args.timeout, args.expert_dir)
                except subprocess.TimeoutExpired:
                    stop = float(_yaml(name)[1]["stop"]["evaluation/episode_reward_mean"])
                    record = {"config": name, "seed": seed, "error": "timeout",
                              "threshold": HOLD_THRESHOLD.get(name, stop)}
                print(json.dumps(record), flush=True)
                with open(args.jsonl, "a") as f:
                    f.write(json.dumps(record) + "\n")
    records = load(args.jsonl)
    names = [n for n in args.configs if n not in EXCLUDED]
    body = "\n".join([
        *common.section_header(),
        f"- load average at the end: {os.getloadavg()[0]:.1f} (2 cores shared with other "
        "engineers' jobs; wall times are noisy)",
        "- each run: `jrl train -f configs/<name>.yaml --seed S` (its own stop criteria), then "
        f"`jrl evaluate <dir> --episodes {EVAL_EPISODES} --seed {FRESH_SEED_BASE}+1000*S` "
        "(greedy, env seeds training never used); *hold* = fresh mean >= the YAML's threshold "
        "(the solve level where a YAML stops on a stricter 20-episode evaluation: A2C, A3C, DQN, ES, "
        "IMPALA and APEX stop at 495 and hold 475; Pendulum SAC, DDPG and TD3 stop at -150 and hold -200)",
        "- excluded: " + "; ".join(f"`{k}` ({v})" for k, v in EXCLUDED.items()),
        "",
        table(records, names, args.seeds),
    ])
    common.publish(args.out, SECTION, body)


if __name__ == "__main__":
    main()
