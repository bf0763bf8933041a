"""jrl against jrl: the same measurements on two source trees, interleaved, in one run.

For a refactor that must not slow anything down: each measurement runs in a fresh subprocess
whose ``PYTHONPATH`` points at the ``--before`` or the ``--after`` tree's ``src/``, alternating
which goes first per seed so that load drift hits both alike. Only jrl's public API is used, so
any two trees that share it compare.

Measurements (every one a fresh process, cold compilation cache):

- ``ppo``/``dqn``: CartPole-v1 time-to-solve of the tuned examples (``configs/cartpole-*.yaml``),
  the clock of ``cartpole_time_to_solve.py`` (build + JIT + training, evaluations excluded);
- ``sac``: Pendulum-v1 time-to-solve of ``configs/pendulum-sac.yaml`` (mean return >= -200);
- ``sampler``: env steps/s of ``Trainer.train()``'s sampling side: a PPO trainer's local
  ``RolloutWorker.sample()`` with 8 envs;
- ``anakin``: env steps/s of the fully-jitted PPO loop on ``gymnax:CartPole-v1`` (1 seed,
  after compilation).

    python benchmarks/before_after.py --before ../before --after . --out benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bench_common as common  # noqa: E402

SECTION = "Before/after: jrl against an earlier jrl tree, same run"
MEASURES = ("ppo", "dqn", "sac", "sampler", "anakin")
# (algo, env, tuned config, threshold, step cap, evaluation interval)
SOLVES = {
    "ppo": ("PPO", "CartPole-v1", "configs/cartpole-ppo.yaml", 475.0, 300_000, 10_000),
    "dqn": ("DQN", "CartPole-v1", "configs/cartpole-dqn.yaml", 475.0, 150_000, 5_000),
    "sac": ("SAC", "Pendulum-v1", "configs/pendulum-sac.yaml", -200.0, 30_000, 1_000),
}


def measure_solve(name: str, seed: int) -> dict:
    algo, env_id, path, threshold, max_steps, eval_every = SOLVES[name]
    config = common.tuned_config(path, algo)
    return common.jrl_time_to_solve(algo, env_id, config, seed=seed, max_steps=max_steps,
                                    eval_every=eval_every, threshold=threshold)


def measure_sampler(seed: int, steps: int = 40_000) -> dict:
    import jrl

    trainer = jrl.Trainer("PPO", env="CartPole-v1", log_to_disk=False, config={
        "seed": seed, "num_envs_per_worker": 8, "rollout_fragment_length": 128,
        "train_batch_size": 1024, "model": {"fcnet_hiddens": [64, 64]}})
    try:
        worker = trainer.workers.local_worker()
        worker.set_policy(trainer.algorithm.policy(trainer.state))
        for _ in range(2):
            worker.sample()
        t0, done = time.perf_counter(), 0
        while done < steps:
            done += worker.sample().count
        return {"steps_per_s": done / (time.perf_counter() - t0)}
    finally:
        trainer.stop()


def measure_anakin(seed: int, iterations: int = 200) -> dict:
    import jrl

    trainer = jrl.Trainer("PPO", env="gymnax:CartPole-v1", log_to_disk=False, config={
        "seed": seed, "num_envs_per_worker": 4, "rollout_fragment_length": 128,
        "train_batch_size": 512, "sgd_minibatch_size": 128, "num_sgd_iter": 4,
        "model": {"fcnet_hiddens": [64, 64]}, "timesteps_per_iteration": 512 * iterations})
    try:
        trainer.train()  # compile
        t0 = time.perf_counter()
        steps = trainer.train()["timesteps_this_iter"]
        return {"steps_per_s": steps / (time.perf_counter() - t0)}
    finally:
        trainer.stop()


def child_main(args: argparse.Namespace) -> None:
    if args.child_measure in SOLVES:
        record = measure_solve(args.child_measure, args.child_seed)
    elif args.child_measure == "sampler":
        record = measure_sampler(args.child_seed)
    else:
        record = measure_anakin(args.child_seed)
    import jrl

    record["jrl_file"] = jrl.__file__
    common.write_child_record(args.child_out, record)


def run_one(tree: str, measure: str, seed: int, timeout: float) -> dict:
    src = os.path.join(os.path.abspath(tree), "src")
    env = {"PYTHONPATH": src, "PYTHONWARNINGS": "ignore",
           "JRL_COMPILATION_CACHE_DIR": "0"}
    record = common.run_child(__file__, ["--child-measure", measure, "--child-seed", str(seed)],
                              ident={"tree": tree, "measure": measure, "seed": seed},
                              timeout=timeout, env=env)
    record = {"tree": tree, "measure": measure, "seed": seed, **record}
    if "error" not in record and not record["jrl_file"].startswith(src):
        record["error"] = f"child imported jrl from {record['jrl_file']}, not {src}"
    return record


def value(record: dict, measure: str) -> float | None:
    if "error" in record:
        return None
    if measure in SOLVES:
        return record["time_s"] if record["solved"] else float("inf")
    return record["steps_per_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", required=False, help="source tree before the change")
    p.add_argument("--after", default=common.REPO_ROOT, help="source tree after the change")
    p.add_argument("--measures", nargs="+", choices=MEASURES, default=list(MEASURES))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--timeout", type=float, default=900.0)
    p.add_argument("--out", default=None, help="markdown file to write/update the section in")
    p.add_argument("--json", default=None)
    p.add_argument("--child-measure", choices=MEASURES, help=argparse.SUPPRESS)
    p.add_argument("--child-seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_out:
        child_main(args)
        return
    if not args.before:
        p.error("--before is required")
    load_start = open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") \
        else ["?"]
    records = []
    for measure in args.measures:
        for i, seed in enumerate(args.seeds):
            order = [("before", args.before), ("after", args.after)]
            for label, tree in (order if i % 2 == 0 else order[::-1]):
                record = {**run_one(tree, measure, seed, args.timeout), "side": label}
                records.append(record)
                v = value(record, measure)
                common.print_run(f"{measure} seed {seed} {label}", record,
                                 record.get("error") or f"{v:.3g}")
    rows = []
    for measure in args.measures:
        unit = "time-to-solve (s, lower is better)" if measure in SOLVES else \
            "env steps/s (higher is better)"
        med = {side: common.median([v for r in records if r["measure"] == measure
                                    and r["side"] == side
                                    and (v := value(r, measure)) is not None])
               for side in ("before", "after")}
        ratio = None
        if med["before"] and med["after"]:
            # A ratio above 1 is worse: slower to solve, or fewer steps per second.
            ratio = (med["after"] / med["before"] if measure in SOLVES
                     else med["before"] / med["after"])
        per_seed = "; ".join(
            f"{r['side'][0]}{r['seed']} " + (r.get("error") or f"{value(r, measure):.3g}")
            for r in records if r["measure"] == measure)
        rows.append([measure, unit, common.format_optional(med["before"], ".3g"),
                     common.format_optional(med["after"], ".3g"),
                     common.format_optional(ratio, ".2f") + "×", per_seed])
    load_end = open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") \
        else ["?"]
    body = "\n".join([
        *common.section_header(),
        f"- before: `{os.path.abspath(args.before)}`; after: `{os.path.abspath(args.after)}`",
        f"- load average at start {' '.join(load_start)}, at end {' '.join(load_end)}",
        "- ratio: how much worse the after tree is (after/before time, before/after "
        "throughput); 1.10× is the limit a refactor may cost",
        "",
        common.markdown_table(["measure", "unit", "before (median)", "after (median)",
                               "ratio", "runs (b=before, a=after, seed)"], rows),
    ])
    common.publish(args.out, SECTION, body)
    common.dump_json(args.json, records)


if __name__ == "__main__":
    main()
