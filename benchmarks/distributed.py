"""Ray rollout workers: sampling throughput with 0, 1, 2 workers, pool overhead, and PPO
time-to-solve with ``num_workers=2`` vs local, CartPole-v1.

    python benchmarks/distributed.py --out benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import time

import _bench_common as common

SECTION = "Ray rollout workers: throughput, pool overhead, PPO time-to-solve"
ENV_ID = "CartPole-v1"


def sample_rate(num_workers: int, num_envs: int, rounds: int, fragment: int) -> float:
    """Env steps/s of ``WorkerSet.sample()`` (weights broadcast every round, as in training)."""
    import jrl

    trainer = jrl.Trainer("PPO", env=ENV_ID, log_to_disk=False, config={
        "num_workers": num_workers, "num_envs_per_worker": num_envs,
        "rollout_fragment_length": fragment, "train_batch_size": fragment * num_envs,
        "sgd_minibatch_size": fragment * num_envs, "model": {"fcnet_hiddens": [64, 64]}})
    workers, policy = trainer.workers, trainer._plan._policy(trainer.state)
    try:
        for _ in range(3):  # warm-up: compile act in every worker
            workers.set_policy(policy)
            workers.sample()
        start = time.perf_counter()
        steps = 0
        for _ in range(rounds):
            workers.set_policy(policy)
            steps += workers.sample().count
        return steps / (time.perf_counter() - start)
    finally:
        trainer.stop()


def time_to_solve(num_workers: int, seed: int, max_steps: int = 200_000) -> tuple[float, int]:
    import jrl

    config = {"gamma": 0.98, "lambda": 0.8, "lr": 1e-3, "num_envs_per_worker": 4,
              "rollout_fragment_length": 32, "train_batch_size": 256, "sgd_minibatch_size": 256,
              "num_sgd_iter": 20, "vf_clip_param": None, "model": {"fcnet_hiddens": [64, 64]},
              "num_workers": num_workers, "seed": seed}
    clock = common.PausableClock()
    clock.start()
    trainer = jrl.Trainer("PPO", env=ENV_ID, config=config, log_to_disk=False)
    next_eval = 2048
    try:
        while trainer.timesteps_total < max_steps:
            trainer.train()
            if trainer.timesteps_total >= next_eval:
                clock.pause()
                reward = trainer.evaluate(10)["evaluation"]["episode_reward_mean"]
                next_eval = (trainer.timesteps_total // 2048 + 1) * 2048
                if reward >= 475:
                    return clock.elapsed, trainer.timesteps_total
                clock.resume()
        return float("inf"), trainer.timesteps_total
    finally:
        trainer.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num-envs", type=int, default=8, help="envs per worker")
    p.add_argument("--fragment", type=int, default=64)
    p.add_argument("--rounds", type=int, default=60)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default=None)
    args = p.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    started = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        rates = {n: sample_rate(n, args.num_envs, args.rounds, args.fragment) for n in (0, 1, 2)}
        solve = {n: [time_to_solve(n, s) for s in args.seeds] for n in (0, 2)}
    finally:
        ray.shutdown()
    total = time.perf_counter() - started
    per_round = args.num_envs * args.fragment
    lines = [*common.section_header(),
             f"- sampling: PPO policy (fcnet [64, 64]), {args.num_envs} envs per worker, "
             f"fragments of {args.fragment} steps, weights broadcast every round, "
             f"{args.rounds} rounds after 3 warm-up rounds ({per_round} steps per worker per "
             "round); 0 workers = the trainer's in-process worker",
             f"- whole benchmark wall time: {total:.0f} s", "",
             common.markdown_table(
                 ["workers", "env steps/s", "vs 0 workers", "vs 1 worker"],
                 [[n, f"{rate:,.0f}", f"{rate / rates[0]:.2f}×", f"{rate / rates[1]:.2f}×"]
                  for n, rate in rates.items()])]
    overhead = 1.0 - rates[1] / rates[0]
    lines += ["", f"- 2 workers vs 1 worker: {rates[2] / rates[1]:.2f}× the steps/s",
              f"- pool overhead (1 remote worker vs in-process, same {args.num_envs} envs): "
              f"{overhead * 100:.0f}%", "",
              "PPO time-to-solve (greedy 10-episode mean >= 475, evaluated every 2048 steps, "
              "evaluation excluded, Ray start-up and worker creation included; 4 envs per "
              "worker, 256-step batches):", "",
              common.markdown_table(
                  ["num_workers", *[f"seed {s}" for s in args.seeds], "median"],
                  [[n, *[f"{t:.1f} s ({steps / 1000:.1f}k)" if t != float("inf")
                         else "not solved" for t, steps in runs],
                    f"{common.median(t for t, _ in runs):.1f} s"]
                   for n, runs in solve.items()])]
    common.publish(args.out, SECTION, "\n".join(lines))


if __name__ == "__main__":
    main()
