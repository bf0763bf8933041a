"""Env steps/s of jrl's local sampler vs a raw gymnasium SyncVectorEnv, CartPole-v1.

For each N in ``--num-envs`` (default 1 8 32) it measures, in the same process and run:

- raw: ``gymnasium.vector.SyncVectorEnv`` of N CartPole-v1 envs stepped with
  ``envs.action_space.sample()`` (the env-only ceiling; same SAME_STEP autoreset mode as jrl);
- env + jitted act: the same vector env driven by jrl's jitted PPO ``act`` (one jitted call
  per vector step plus ``np.asarray`` of the action): the floor for any sampler that calls a
  JAX policy once per step, without jrl's per-step bookkeeping;
- jrl sample(): the ``RolloutWorker`` of a PPO ``Trainer`` (``num_envs_per_worker`` = N,
  fcnet [64, 64]) calling ``sample()`` repeatedly after warm-up.

Each measurement runs ``--steps`` env steps (rounded up to whole fragments) ``--repeats`` times;
the median is reported.

    python benchmarks/sampler_throughput.py
    python benchmarks/sampler_throughput.py --num-envs 1 8 --steps 10000 --repeats 1
    python benchmarks/sampler_throughput.py --out benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bench_common as common  # noqa: E402

ENV_ID = "CartPole-v1"
SECTION = "Sampler throughput: jrl RolloutWorker vs raw gymnasium SyncVectorEnv (CartPole-v1)"


def make_raw_envs(n: int):
    import gymnasium as gym

    return gym.vector.SyncVectorEnv([lambda: gym.make(ENV_ID) for _ in range(n)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def bench_raw(n: int, steps: int, seed: int) -> float:
    envs = make_raw_envs(n)
    envs.reset(seed=seed)
    envs.action_space.seed(seed)
    for _ in range(10):  # warm-up
        envs.step(envs.action_space.sample())
    iters = math.ceil(steps / n)
    t0 = time.perf_counter()
    for _ in range(iters):
        envs.step(envs.action_space.sample())
    dt = time.perf_counter() - t0
    envs.close()
    return iters * n / dt


def bench_env_plus_act(trainer, n: int, steps: int, seed: int) -> float:
    import jax
    import numpy as np

    algorithm = trainer.algorithm

    def act(policy, obs, key):
        key, act_key = jax.random.split(key)
        action, _ = algorithm.act(policy, obs, act_key, True)
        return action, key

    act = jax.jit(act)
    policy = algorithm.policy(trainer.state)
    key = jax.random.PRNGKey(seed)
    envs = make_raw_envs(n)
    obs, _ = envs.reset(seed=seed)
    for _ in range(10):  # warm-up (includes the jit)
        action, key = act(policy, obs.astype(np.float32), key)
        obs, *_ = envs.step(np.asarray(action))
    iters = math.ceil(steps / n)
    t0 = time.perf_counter()
    for _ in range(iters):
        action, key = act(policy, obs.astype(np.float32), key)
        obs, *_ = envs.step(np.asarray(action))
    dt = time.perf_counter() - t0
    envs.close()
    return iters * n / dt


def make_trainer(n: int, fragment: int, seed: int):
    import jrl

    config = {
        "num_envs_per_worker": n,
        "rollout_fragment_length": fragment,
        "train_batch_size": fragment * n,
        "sgd_minibatch_size": min(128, fragment * n),
        "model": {"fcnet_hiddens": [64, 64]},
        "seed": seed,
        "log_level": "ERROR",
    }
    return jrl.Trainer("PPO", env=ENV_ID, config=config, log_to_disk=False)


def bench_jrl(trainer, steps: int, warmup: int) -> float:
    worker = trainer.workers.local_worker()
    worker.set_policy(trainer.algorithm.policy(trainer.state))
    for _ in range(warmup):
        worker.sample()
    worker.pop_episodes()
    per_sample = worker.fragment_length * worker.num_envs
    calls = max(1, math.ceil(steps / per_sample))
    t0 = time.perf_counter()
    total = 0
    for _ in range(calls):
        total += worker.sample().count
    dt = time.perf_counter() - t0
    worker.pop_episodes()
    return total / dt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num-envs", nargs="+", type=int, default=[1, 8, 32])
    p.add_argument("--steps", type=int, default=50_000, help="env steps per measurement")
    p.add_argument("--fragment", type=int, default=128, help="jrl rollout_fragment_length")
    p.add_argument("--warmup", type=int, default=2, help="jrl sample() calls before timing")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="markdown file to write/update the section in")
    args = p.parse_args()

    import jax  # noqa: F401  (import before timing anything)

    start = time.perf_counter()
    rows = []
    for n in args.num_envs:
        trainer = make_trainer(n, args.fragment, args.seed)
        raw, plus_act, sampled = [], [], []
        for r in range(args.repeats):  # interleaved, so load changes hit all three alike
            raw.append(bench_raw(n, args.steps, args.seed + r))
            plus_act.append(bench_env_plus_act(trainer, n, args.steps, args.seed + r))
            sampled.append(bench_jrl(trainer, args.steps, args.warmup if r == 0 else 0))
        trainer.stop()
        row = {"n": n, "raw": common.median(raw), "act": common.median(plus_act),
               "jrl": common.median(sampled)}
        rows.append(row)
        print(f"N={n:>3}: raw {row['raw']:,.0f} steps/s, env+jitted act {row['act']:,.0f} "
              f"steps/s, jrl sample() {row['jrl']:,.0f} steps/s "
              f"(jrl/raw {row['jrl'] / row['raw']:.3f})", flush=True)
    total = time.perf_counter() - start

    table = common.markdown_table(
        ["N envs", "raw SyncVectorEnv, random actions (steps/s)", "env + jitted act (steps/s)",
         "jrl `RolloutWorker.sample()` (steps/s)", "jrl / raw", "jrl / (env + act)",
         "jrl µs per vector step"],
        [[r["n"], f"{r['raw']:,.0f}", f"{r['act']:,.0f}", f"{r['jrl']:,.0f}",
          f"{r['jrl'] / r['raw']:.3f}", f"{r['jrl'] / r['act']:.2f}",
          f"{1e6 * r['n'] / r['jrl']:,.0f}"] for r in rows])
    body = [*common.section_header(),
            f"- {args.steps} env steps per measurement, median of {args.repeats}; jrl: PPO "
            f"trainer's local worker, fcnet [64, 64], rollout_fragment_length {args.fragment}, "
            f"{args.warmup} warm-up `sample()` calls; all vector envs use SAME_STEP autoreset",
            f"- whole benchmark wall time: {total:.0f} s",
            "",
            "\"env + jitted act\" drives the same SyncVectorEnv with jrl's jitted PPO `act` "
            "(one call per vector step): the gap between it and `sample()` is the worker's "
            "per-step Python bookkeeping; the gap between raw and it is the per-step policy "
            "call (dispatch + device-to-host copy).",
            "",
            table]
    print()
    common.publish(args.out, SECTION, "\n".join(body))


if __name__ == "__main__":
    main()
