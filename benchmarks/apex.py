"""Ape-X time-to-solve and learner throughput: APEX vs DQN, APEX_DDPG vs DDPG.

Runs the tuned examples ``configs/cartpole-apex.yaml`` (APEX, 2 rollout workers, 2 replay shards)
and ``configs/pendulum-apex-ddpg.yaml`` (APEX_DDPG) next to their single-process peers in the same
invocation: DQN from ``configs/cartpole-dqn.yaml`` (uniform and prioritized replay) and DDPG with
the APEX_DDPG example's hyperparameters minus the distributed keys, sampling in-process.

Time-to-solve is the wall time from building the trainer (Ray start-up, worker start-up and JIT
compilation included; imports excluded) until a greedy 10-episode evaluation after a ``train()``
iteration reaches the threshold; the evaluations themselves are left out. Each run is its own
subprocess; APEX runs start a 2-CPU local Ray instance.

    python benchmarks/apex.py                                  # all runs, seed 0
    python benchmarks/apex.py --runs APEX DQN --seeds 0 1 --out benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bench_common as common  # noqa: E402

REPO_ROOT = common.REPO_ROOT
SECTION = "Ape-X (APEX, APEX_DDPG): time-to-solve and learner throughput"
DISTRIBUTED_KEYS = ("num_workers", "num_replay_buffer_shards", "max_weight_sync_delay",
                    "per_worker_noise_scale", "prioritized_replay_alpha",
                    "prioritized_replay_beta", "final_prioritized_replay_beta",
                    "prioritized_replay_beta_annealing_timesteps")

# name -> (algo, env, yaml, threshold, config changes)
RUNS = {
    "APEX": ("APEX", "CartPole-v1", "cartpole-apex.yaml", 475.0, {}),
    "DQN": ("DQN", "CartPole-v1", "cartpole-dqn.yaml", 475.0, {}),
    "DQN+PER": ("DQN", "CartPole-v1", "cartpole-dqn.yaml", 475.0, {
        "prioritized_replay": True, "final_prioritized_replay_beta": 1.0,
        "prioritized_replay_beta_annealing_timesteps": 50_000}),
    "APEX_DDPG": ("APEX_DDPG", "Pendulum-v1", "pendulum-apex-ddpg.yaml", -200.0, {}),
    "DDPG": ("DDPG", "Pendulum-v1", "pendulum-apex-ddpg.yaml", -200.0, {"drop": DISTRIBUTED_KEYS}),
}


def run_one(name: str, seed: int) -> dict:
    """Child process: one training run until solved or out of steps."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import jrl
    from jrl.cli import load_experiments

    algo, env, yaml_name, threshold, changes = RUNS[name]
    (spec,) = load_experiments(os.path.join(REPO_ROOT, "configs", yaml_name)).values()
    config = dict(spec["config"])
    for key in changes.get("drop", ()):
        config.pop(key, None)
    config.update({k: v for k, v in changes.items() if k != "drop"})
    config.update(seed=seed, evaluation_interval=None)
    max_steps = spec["stop"]["timesteps_total"]
    if config.get("num_workers"):
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    clock = common.PausableClock()
    clock.start()
    trainer = jrl.Trainer(algo, env=env, config=config, log_to_disk=False)
    best, solved_at, result = float("-inf"), None, {}
    try:
        while trainer.timesteps_total < max_steps:
            result = trainer.train()
            clock.pause()
            score = trainer.evaluate(10)["evaluation"]["episode_reward_mean"]
            best = max(best, score)
            if score >= threshold:
                solved_at = clock.read()
                break
            clock.resume()
        wall = clock.pause()
        throughput = result.get("learner_throughput", {})
        return {"name": name, "seed": seed, "solved": solved_at is not None,
                "time_to_solve_s": solved_at, "steps": trainer.timesteps_total,
                "best_eval": best, "wall_s": wall,
                "env_steps_per_s": trainer.timesteps_total / wall,
                "updates": int(trainer.state.num_updates),
                "learner_updates_per_s": throughput.get("updates_per_s"),
                "learner_samples_per_s": throughput.get("samples_per_s"),
                "shard_sizes": [v for k, v in sorted(result.get("replay_shards", {}).items())
                                if k.startswith("size_")]}
    finally:
        trainer.stop()


def _row(r: dict) -> list:
    """The table row of one run record (or error record)."""
    if "error" in r:
        return [r["name"], r["seed"], r["error"], *[""] * 7]
    fmt = common.format_optional
    return [r["name"], r["seed"], "yes" if r["solved"] else "no",
            fmt(r["time_to_solve_s"], ".1f"), f"{r['steps']:,}",
            fmt(r["env_steps_per_s"], ",.0f"), f"{r['updates']:,}",
            fmt(r["learner_updates_per_s"], ",.0f"), fmt(r["learner_samples_per_s"], ",.0f"),
            ", ".join(str(s) for s in r["shard_sizes"]) or "—"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--out", default=None, help="markdown file to write the section into")
    parser.add_argument("--child", nargs=2, metavar=("RUN", "SEED"), help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        common.write_child_record(args.child_out, run_one(args.child[0], int(args.child[1])))
        return
    started = time.time()
    header = common.section_header()
    env = {"PYTHONPATH": os.pathsep.join(
        [os.path.join(REPO_ROOT, "src"), os.environ.get("PYTHONPATH", "")]),
        "RAY_AUTH_MODE": "disabled"}
    rows = []
    for seed in args.seeds:
        for name in args.runs:
            r = common.run_child(__file__, ["--child", name, str(seed)],
                                 ident={"name": name, "seed": seed}, env=env, cwd=REPO_ROOT)
            common.print_run(f"{name} seed {seed}", r, str(r))
            rows.append(r)
    table = common.markdown_table(
        ["run", "seed", "solved", "time-to-solve (s)", "env steps", "env steps/s",
         "learner updates", "learner updates/s", "learner samples/s", "shard sizes"],
        [_row(r) for r in rows])
    body = "\n".join([
        *header,
        "- APEX / APEX_DDPG: 2 rollout workers + 2 replay shards (Ray, 2 CPUs) and the learner "
        "in the driver; DQN / DDPG: one process. Thresholds: greedy 10-episode mean >= 475 "
        "(CartPole-v1), >= -200 (Pendulum-v1). Time-to-solve includes Ray and worker start-up "
        "and compilation, excludes evaluations.",
        "- learner updates/s and samples/s (APEX only) time the learner's jitted calls after the "
        "first (compiling) one; the machine was shared with other jobs, so timings are noisy.",
        "- on this 2-core machine Ape-X is slower to solve than its single-process peer: Ray, 2 "
        "worker processes and 2 shard actors start and compile before the first fragment "
        "arrives (most of its time-to-solve); whether it pays off with more cores is not "
        "measured here.",
        f"- whole benchmark wall time: {time.time() - started:.0f} s", "", table])
    common.publish(args.out, SECTION, body)


if __name__ == "__main__":
    main()
