"""MinAtar Breakout with PPO: time to reach stated returns, gymnasium path vs jitted path.

Both runs use the PPO settings of ``configs/minatar-breakout-ppo.yaml`` (32 envs x 32 steps,
4 epochs of 256-sample minibatches, conv [16, 3x3, 1] + fc 64):

- jitted: ``env: minatar:Breakout`` (gymnax), env + act + update in one compiled loop;
- gymnasium: ``env: MinAtar/Breakout-v1`` (the ``minatar`` package's gymnasium env, NumPy, the
  same minimal action set; ``horizon: 1000`` as gymnax's episode limit), sampled by the
  trainer's own ``RolloutWorker`` (``num_workers: 0``).

Each run trains until ``--target`` or ``--budget`` seconds; the table gives the wall time and
env steps at which ``episode_reward_mean`` first reached each of ``--returns``.

    pip install minatar
    python benchmarks/minatar_breakout.py --budget 900 --out benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bench_common as common  # noqa: E402

SECTION = "MinAtar Breakout (PPO): time to a return, gymnasium path vs jitted path"


def run(env_id: str, config: dict, returns: list[float], target: float, budget: float) -> dict:
    import jrl

    trainer = jrl.Trainer("PPO", env=env_id, config=config, log_to_disk=False)
    start = time.perf_counter()
    reached: dict[float, tuple[float, int]] = {}
    last = None
    while True:
        result = trainer.train()
        elapsed = time.perf_counter() - start
        reward = result["episode_reward_mean"]
        last = (elapsed, result["timesteps_total"], reward)
        print(f"  {env_id}: {result['timesteps_total']:>8} steps {elapsed:7.0f} s "
              f"return {reward:.2f}", flush=True)
        for r in returns:
            if r not in reached and reward == reward and reward >= r:
                reached[r] = (elapsed, result["timesteps_total"])
        if (reward == reward and reward >= target) or elapsed > budget:
            break
    trainer.stop()
    return {"env": env_id, "reached": reached, "last": last}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--returns", nargs="+", type=float, default=[3.0, 5.0, 8.0, 10.0])
    p.add_argument("--target", type=float, default=10.0)
    p.add_argument("--budget", type=float, default=900.0, help="seconds per run")
    p.add_argument("--paths", nargs="+", default=["jitted", "gymnasium"])
    p.add_argument("--out", default=None)
    args = p.parse_args()
    config = common.tuned_config("configs/minatar-breakout-ppo.yaml", "PPO")
    config["timesteps_per_iteration"] = 16_384
    rows = []
    for path in args.paths:
        if path == "jitted":
            rows.append(run("minatar:Breakout", config, args.returns, args.target, args.budget))
        else:
            import minatar.gym

            minatar.gym.register_envs()
            gym_config = {k: v for k, v in config.items() if k != "num_seeds"}
            gym_config.update(horizon=1000, timesteps_per_iteration=4096)
            rows.append(run("MinAtar/Breakout-v1", gym_config, args.returns, args.target,
                            args.budget))

    def cell(row, r):
        if r not in row["reached"]:
            return "not reached"
        seconds, steps = row["reached"][r]
        return f"{seconds:,.0f} s ({steps / 1000:,.0f}k steps)"

    table = common.markdown_table(
        ["path", *(f"return {r:g}" for r in args.returns), "last (s, steps, return)"],
        [[row["env"], *(cell(row, r) for r in args.returns),
          f"{row['last'][0]:,.0f} s, {row['last'][1] / 1000:,.0f}k, {row['last'][2]:.2f}"]
         for row in rows])
    body = [*common.section_header(),
            f"- PPO, configs/minatar-breakout-ppo.yaml, seed 0, one run per path; each stops at "
            f"return {args.target:g} or after {args.budget:.0f} s; times include compilation",
            "", table]
    common.publish(args.out, SECTION, "\n".join(body))


if __name__ == "__main__":
    main()
