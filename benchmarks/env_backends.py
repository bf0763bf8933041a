"""Env steps/s of jrl's vectorization backends with a PPO policy in the loop (Pong, CartPole).

For each env it measures, in one process and run:

- raw env: one env (Pong with the DeepMind wrappers) stepped with random actions, no policy;
- ``vectorization`` sync / async / envpool: the local ``RolloutWorker`` of a PPO trainer
  (``num_envs_per_worker`` 8; Nature CNN on Pong, fcnet [64, 64] on CartPole) calling
  ``sample()`` after warm-up;
- 1 and 2 Ray workers x 8 envs (sync vectorization): the remote workers sampling at once;
- Pong only, stable-baselines3 (``.[bench]``): ``make_atari_env`` (its DeepMind wrappers) x 8 in
  a ``DummyVecEnv`` + ``VecFrameStack(4)``, stepped with its ``CnnPolicy`` PPO's ``predict``
  (CPU, 1 torch thread), the same policy-in-the-loop measurement.

    python benchmarks/env_backends.py
    python benchmarks/env_backends.py --envs CartPole-v1 --out benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bench_common as common  # noqa: E402

SECTION = "Env backends: sync, async, envpool and Ray workers with PPO acting (Pong, CartPole)"
STEPS = {"CartPole-v1": 40_000, "PongDeterministic-v4": 4_000}


def bench_raw(env_id: str, steps: int) -> float:
    from jrl.config import ModelConfig
    from jrl.rollout.envs import make_env

    env = make_env(env_id, preprocessor_pref="deepmind", model=ModelConfig())
    env.reset(seed=0)
    env.action_space.seed(0)
    t0 = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    dt = time.perf_counter() - t0
    env.close()
    return steps / dt


def make_trainer(env_id: str, vectorization: str, num_workers: int, fragment: int):
    import jrl

    model = {"fcnet_hiddens": [64, 64]} if env_id == "CartPole-v1" else {}
    return jrl.Trainer("PPO", env=env_id, log_to_disk=False, config={
        "num_workers": num_workers, "num_envs_per_worker": 8, "rollout_fragment_length": fragment,
        "train_batch_size": fragment * 8 * max(1, num_workers), "sgd_minibatch_size": 128,
        "vectorization": vectorization, "model": model, "log_level": "ERROR"})


def bench_local(trainer, steps: int, warmup: int = 1) -> float:
    worker = trainer.workers.local_worker()
    worker.set_policy(trainer.algorithm.policy(trainer.state))
    for _ in range(warmup):
        worker.sample()
    calls = max(1, math.ceil(steps / (worker.fragment_length * worker.num_envs)))
    t0 = time.perf_counter()
    total = sum(worker.sample().count for _ in range(calls))
    dt = time.perf_counter() - t0
    worker.pop_episodes()
    return total / dt


def bench_remote(trainer, steps: int) -> float:
    import ray

    policy = ray.put(trainer.algorithm.policy(trainer.state))
    workers = trainer.workers.remote_workers()
    ray.get([w.sample_with_episodes.remote(policy) for w in workers])  # warm-up (jit)
    per_round = trainer.algo_config.rollout_fragment_length * 8 * len(workers)
    rounds = max(1, math.ceil(steps / per_round))
    t0 = time.perf_counter()
    for _ in range(rounds):
        ray.get([w.sample_with_episodes.remote(policy) for w in workers])
    return rounds * per_round / (time.perf_counter() - t0)


def bench_sb3(env_id: str, steps: int) -> float | None:
    try:
        import torch
        from stable_baselines3 import PPO
        from stable_baselines3.common.env_util import make_atari_env
        from stable_baselines3.common.vec_env import VecFrameStack
    except ImportError:
        return None
    torch.set_num_threads(1)
    env = VecFrameStack(make_atari_env(env_id, n_envs=8, seed=0), n_stack=4)
    model = PPO("CnnPolicy", env, device="cpu", seed=0)
    obs = env.reset()
    for _ in range(5):
        action, _ = model.predict(obs)
        obs, *_ = env.step(action)
    rounds = max(1, steps // 8)
    t0 = time.perf_counter()
    for _ in range(rounds):
        action, _ = model.predict(obs)
        obs, *_ = env.step(action)
    dt = time.perf_counter() - t0
    env.close()
    return rounds * 8 / dt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--envs", nargs="+", default=list(STEPS))
    p.add_argument("--scale", type=float, default=1.0, help="multiplies the steps measured")
    p.add_argument("--out", default=None, help="markdown file to write/update the section in")
    args = p.parse_args()
    import jax  # noqa: F401  (import before timing anything)

    start = time.perf_counter()
    rows = []
    for env_id in args.envs:
        steps = int(STEPS.get(env_id, 10_000) * args.scale)
        fragment = 128 if env_id == "CartPole-v1" else 32
        raw = bench_raw(env_id, steps)
        row = {"env": env_id, "raw": raw}
        print(f"{env_id}: raw env {raw:,.0f} steps/s", flush=True)
        for vec in ("sync", "async", "envpool"):
            try:
                trainer = make_trainer(env_id, vec, 0, fragment)
            except Exception as e:  # envpool not installed / env not in envpool
                print(f"  {vec}: skipped ({e})", flush=True)
                continue
            row[vec] = bench_local(trainer, steps)
            trainer.stop()
            print(f"  {vec}: {row[vec]:,.0f} steps/s ({row[vec] / raw:.2f}x raw)", flush=True)
        for n in (1, 2):
            trainer = make_trainer(env_id, "sync", n, fragment)
            row[f"ray{n}"] = bench_remote(trainer, steps)
            trainer.stop()
            print(f"  {n} Ray worker(s): {row[f'ray{n}']:,.0f} steps/s", flush=True)
        if env_id != "CartPole-v1":
            sb3 = bench_sb3(env_id.replace("Deterministic", "NoFrameskip"), steps)
            if sb3 is not None:
                row["sb3"] = sb3
                print(f"  stable-baselines3: {sb3:,.0f} steps/s", flush=True)
        rows.append(row)
    total = time.perf_counter() - start

    def cell(row, key):
        return f"{row[key]:,.0f} ({row[key] / row['raw']:.2f}x)" if key in row else "—"

    table = common.markdown_table(
        ["env", "raw env, random actions (steps/s)", "sync, 8 envs", "async, 8 envs",
         "envpool, 8 envs", "1 Ray worker x 8 envs", "2 Ray workers x 8 envs",
         "SB3 PPO, 8 envs (its Atari wrappers)"],
        [[r["env"], f"{r['raw']:,.0f}", *(cell(r, k) for k in
                                            ("sync", "async", "envpool", "ray1", "ray2", "sb3"))]
         for r in rows])
    body = [*common.section_header(),
            "- PPO acting (explore) in every column but the raw one; local columns are the "
            "trainer's own worker (`num_workers: 0`), Ray columns the remote workers sampling "
            "at once (sync vectorization); ratios are to the raw single env",
            f"- whole benchmark wall time: {total:.0f} s",
            "", table]
    print()
    common.publish(args.out, SECTION, "\n".join(body))


if __name__ == "__main__":
    main()
