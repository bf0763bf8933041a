"""MinAtar Breakout (gymnax, fully jitted PPO): several settings x several seeds, return curves.

Finds settings under which ``configs/minatar-breakout-ppo.yaml`` reaches its target, and how
many env steps that takes, where compute is plentiful (a GPU machine, issue 16). Each variant
runs ``--seeds`` seeds vmapped in one Trainer (``num_seeds``) until ``--steps`` env steps per
seed; the table gives, per variant, the env steps at which the mean over seeds of the training
``episode_reward_mean`` first reached each of ``--returns``, and the final mean / min over seeds.

    python benchmarks/minatar_sweep.py --seeds 4 --steps 2000000 --out minatar_sweep.md
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bench_common as common  # noqa: E402

SECTION = "MinAtar Breakout (jitted PPO): settings x seeds, env steps to a return"

CONV = {"conv_filters": [[16, [3, 3], 1]], "conv_activation": "relu",
        "fcnet_hiddens": [64], "fcnet_activation": "relu"}
VARIANTS = {
    # configs/minatar-breakout-ppo.yaml as it stands
    "yaml": {},
    # the yaml before this sweep: 32 envs x 32 steps, constant lr 1e-3, entropy 0.01, fc 64
    "before": {"num_envs_per_worker": 32, "rollout_fragment_length": 32,
               "train_batch_size": 1024, "sgd_minibatch_size": 256, "num_sgd_iter": 4,
               "lr": 1e-3, "lr_annealing": False, "entropy_coeff": 0.01,
               "model": {**CONV, "fcnet_hiddens": [64]}},
    # gymnax-blines / PureJaxRL MinAtar PPO batch shape: 64 envs x 128 steps, 8 minibatches,
    # lr 5e-4 annealed; the yaml's conv layer, then fc 256
    "purejaxrl-conv": {"num_envs_per_worker": 64, "rollout_fragment_length": 128,
                       "train_batch_size": 8192, "sgd_minibatch_size": 1024, "num_sgd_iter": 4,
                       "lr": 5e-4, "lr_annealing": True,
                       "model": {**CONV, "fcnet_hiddens": [256]}},
    # conv-64x128 (below) with more entropy: configs/minatar-breakout-ppo.yaml since this sweep
    "conv-64x128-ent": {"num_envs_per_worker": 64, "rollout_fragment_length": 128,
                        "train_batch_size": 8192, "sgd_minibatch_size": 1024,
                        "num_sgd_iter": 4, "lr": 1e-3, "lr_annealing": True,
                        "entropy_coeff": 0.03, "model": {**CONV, "fcnet_hiddens": [128]}},
    # the earlier yaml's conv torso with PureJaxRL's batch shape and annealed lr
    "conv-64x128": {"num_envs_per_worker": 64, "rollout_fragment_length": 128,
                    "train_batch_size": 8192, "sgd_minibatch_size": 1024, "num_sgd_iter": 4,
                    "lr": 1e-3, "lr_annealing": True,
                    "model": {**CONV, "fcnet_hiddens": [128]}},
}


def run(name: str, overrides: dict, seeds: int, steps: int, returns: list[float],
        target: float) -> dict:
    import jrl

    config = common.tuned_config("configs/minatar-breakout-ppo.yaml", "PPO")
    config.update(overrides)
    config.update(num_seeds=seeds, timesteps_per_iteration=max(65_536, steps // 30))
    if config.get("lr_annealing"):
        config["lr_annealing_timesteps"] = steps
    trainer = jrl.Trainer("PPO", env="minatar:Breakout", config=config, log_to_disk=False)
    start = time.perf_counter()
    reached: dict[float, int] = {}
    seed_reached: dict[int, int] = {}  # seed -> env steps at which it first reached the target
    curve = []
    try:
        while trainer.timesteps_total < steps:
            result = trainer.train()
            per_seed = [r for r in result["seeds"]["episode_reward_mean"] if r == r]
            mean = sum(per_seed) / max(len(per_seed), 1)
            curve.append((result["timesteps_total"], round(mean, 2), round(min(per_seed), 2)))
            print(f"{name}: {result['timesteps_total']:>9} steps {time.perf_counter() - start:6.0f}"
                  f" s mean {mean:.2f} min {min(per_seed):.2f}", flush=True)
            for r in returns:
                if r not in reached and mean >= r:
                    reached[r] = result["timesteps_total"]
            for i, r in enumerate(result["seeds"]["episode_reward_mean"]):
                if i not in seed_reached and r == r and r >= target:
                    seed_reached[i] = result["timesteps_total"]
            final = [round(r, 2) for r in result["seeds"]["episode_reward_mean"]]
    finally:
        trainer.stop()
    return {"name": name, "overrides": overrides, "reached": reached, "curve": curve,
            "final_per_seed": final, "seeds_reached_target": f"{len(seed_reached)}/{seeds}",
            "seed_steps_to_target": seed_reached, "wall_s": time.perf_counter() - start}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--steps", type=int, default=2_000_000)
    p.add_argument("--returns", nargs="+", type=float, default=[5.0, 10.0, 15.0, 20.0])
    p.add_argument("--target", type=float, default=10.0, help="per-seed target return")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    rows = []
    for name in args.variants:
        rec = run(name, VARIANTS[name], args.seeds, args.steps, args.returns, args.target)
        rows.append(rec)
        print(json.dumps(rec), flush=True)
        table = common.markdown_table(
            ["variant", *[f"steps to {r:g}" for r in args.returns], "final mean / min",
             f"seeds >= {args.target:g}", "final per seed", "wall (s)"],
            [[row["name"], *[f"{row['reached'][r]:,}" if r in row["reached"] else "not reached"
                             for r in args.returns],
              f"{row['curve'][-1][1]} / {row['curve'][-1][2]}", row["seeds_reached_target"],
              ", ".join(f"{r:g}" for r in row["final_per_seed"]), f"{row['wall_s']:.0f}"]
             for row in rows])
        variants = "\n".join(f"- `{row['name']}`: {json.dumps(row['overrides'])}" for row in rows)
        common.publish(args.out, SECTION, "\n".join([
            *common.section_header(),
            f"- {args.seeds} seeds per variant (vmapped), {args.steps:,} env steps per seed; "
            "returns are the training `episode_reward_mean`, mean over seeds", "", table, "",
            "Variants (over `configs/minatar-breakout-ppo.yaml`):", variants]))


if __name__ == "__main__":
    main()
