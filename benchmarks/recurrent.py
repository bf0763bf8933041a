"""Recurrent policies (issue 15): LSTM PPO against feed-forward PPO.

Two measurements, each in its own child process per run:

- ``throughput``: env steps/s of whole training iterations (sampling + learning) with the same
  PPO config, feed-forward vs ``model.use_lstm``, on the gymnasium path (``CartPole-v1``, one
  in-process worker) and on the fully-jitted path (``gymnax:CartPole-v1``). The first iteration
  (compilation) is left out.
- ``learning``: ``configs/stateless-cartpole-lstm-ppo.yaml`` on ``jrl/StatelessCartPole-v1``, and
  the same config without the LSTM, for the same env-step budget: the best greedy evaluation
  (10 episodes) and the last training ``episode_reward_mean``.

    python benchmarks/recurrent.py --out benchmarks/RESULTS.md
    python benchmarks/recurrent.py --measures throughput --iterations 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench_common import markdown_table, publish, section_header, tuned_config  # noqa: E402

HEADER = "Recurrent policies (issue 15): LSTM PPO vs feed-forward PPO"
THROUGHPUT_CONFIG = {"num_envs_per_worker": 16, "rollout_fragment_length": 64,
                     "train_batch_size": 1024, "sgd_minibatch_size": 256, "num_sgd_iter": 4,
                     "seed": 0}
LSTM = {"use_lstm": True, "lstm_cell_size": 64, "max_seq_len": 16}


def throughput_child(env: str, lstm: bool, iterations: int) -> dict:
    from jrl.trainer import Trainer

    model = {"fcnet_hiddens": [64, 64], **(LSTM if lstm else {})}
    trainer = Trainer("PPO", env=env, config={**THROUGHPUT_CONFIG, "model": model})
    trainer.train()  # compiles
    start_steps, start = trainer.timesteps_total, time.perf_counter()
    for _ in range(iterations):
        trainer.train()
    seconds = time.perf_counter() - start
    steps = trainer.timesteps_total - start_steps
    trainer.stop()
    return {"env": env, "lstm": lstm, "steps": steps, "seconds": seconds,
            "steps_per_s": steps / seconds}


def learning_child(lstm: bool, max_steps: int) -> dict:
    from jrl.trainer import Trainer

    config = tuned_config("configs/stateless-cartpole-lstm-ppo.yaml", "PPO")
    config["model"] = {**config["model"], "use_lstm": lstm, "lstm_use_prev_action": lstm}
    trainer = Trainer("PPO", env="jrl/StatelessCartPole-v1", config=config)
    best_eval, last_train, start = float("-inf"), float("nan"), time.perf_counter()
    solved_at = None
    while trainer.timesteps_total < max_steps:
        result = trainer.train()
        last_train = result["episode_reward_mean"]
        evaluation = result.get("evaluation", {}).get("episode_reward_mean")
        if evaluation is not None:
            best_eval = max(best_eval, evaluation)
            if evaluation >= 475 and solved_at is None:
                solved_at = trainer.timesteps_total
                break
    trainer.stop()
    return {"lstm": lstm, "steps": trainer.timesteps_total, "best_eval": best_eval,
            "last_train": last_train, "solved_at": solved_at,
            "seconds": time.perf_counter() - start}


def run_child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--measures", nargs="+", default=["throughput", "learning"])
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--max-steps", type=int, default=300_000)
    parser.add_argument("--out")
    parser.add_argument("--child", nargs="+")
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "throughput":
            record = throughput_child(rest[0], rest[1] == "1", int(rest[2]))
        else:
            record = learning_child(rest[0] == "1", int(rest[1]))
        print(json.dumps(record))
        return
    lines = section_header()
    loads = [os.getloadavg()[0]]
    if "throughput" in args.measures:
        rows = []
        for env in ("CartPole-v1", "gymnax:CartPole-v1"):
            ff = run_child(["throughput", env, "0", str(args.iterations)])
            lstm = run_child(["throughput", env, "1", str(args.iterations)])
            rows.append([env, f"{ff['steps_per_s']:.3g}", f"{lstm['steps_per_s']:.3g}",
                         f"{lstm['steps_per_s'] / ff['steps_per_s']:.2f}"])
        lines += ["", f"**Throughput** (PPO {json.dumps(THROUGHPUT_CONFIG)}, fcnet [64, 64]; "
                  f"LSTM: {json.dumps(LSTM)}; env steps/s over {args.iterations} iterations "
                  "after the first):", "",
                  markdown_table(["env (path)", "feed-forward steps/s", "LSTM steps/s",
                                  "LSTM / FF"], rows)]
        loads.append(os.getloadavg()[0])
    if "learning" in args.measures:
        rows = []
        for lstm in (True, False):
            r = run_child(["learning", "1" if lstm else "0", str(args.max_steps)])
            rows.append(["LSTM" if lstm else "feed-forward", str(r["steps"]),
                         f"{r['best_eval']:.1f}", f"{r['last_train']:.1f}",
                         str(r["solved_at"]) if r["solved_at"] else "no",
                         f"{r['seconds']:.0f}"])
        lines += ["", f"**Learning** (`configs/stateless-cartpole-lstm-ppo.yaml`, the "
                  f"feed-forward run drops `use_lstm`; budget {args.max_steps} env steps, stop "
                  "at a greedy 10-episode evaluation >= 475):", "",
                  markdown_table(["model", "env steps", "best greedy eval", "last train mean",
                                  "solved (eval >= 475) at", "s"], rows)]
        loads.append(os.getloadavg()[0])
    lines += ["", f"Load average during the runs: {' -> '.join(f'{x:.1f}' for x in loads)} "
              "(a shared, noisy 2-core machine: ratios from one run)."]
    publish(args.out, HEADER, "\n".join(lines))


if __name__ == "__main__":
    main()
