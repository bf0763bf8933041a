"""Multi-agent CartPole (2 agents, PPO): jrl's time-to-solve and env steps/s, against jrl's
single-agent CartPole and RLlib 2.x's own multi-agent CartPole example (when RLlib and torch are
installed), one run each in its own subprocess.

- jrl, ``two policies``: ``configs/multi-agent-cartpole-ppo.yaml`` (p0 for agent 0, p1 for agent
  1); solved when a greedy 10-episode evaluation's return summed over both agents is >= 975
  (then each policy's is >= 475). ``shared``: the same with one shared policy. ``single``:
  ``configs/cartpole-ppo.yaml`` on CartPole-v1, solved at >= 475. The clock counts building
  the trainer (JIT included), sampling and learning; evaluations are not counted.
- RLlib: ``PPOConfig`` on RLlib's ``MultiAgentCartPole`` (``num_agents=2``, policies p0/p1,
  the settings of ``rllib/examples/multi_agent/multi_agent_cartpole.py``: ``vf_loss_coeff=0.005``,
  ``vf_share_layers``), 0 env runners (sampling in the driver, like jrl's ``num_workers=0``),
  ``OMP_NUM_THREADS=1``. Solved when both policies' mean training return is >= 475 (RLlib's
  ``module_episode_returns_mean``); stopped unsolved at ``--rllib-cap-s``.

    python benchmarks/multi_agent.py --out benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _bench_common import (  # noqa: E402
    jrl_time_to_solve,
    markdown_table,
    publish,
    section_header,
    tuned_config,
)

MA_ENV = "jrl.rollout.multi_agent_examples:MultiAgentCartPole"
RUNS = {
    "two policies": ("configs/multi-agent-cartpole-ppo.yaml", MA_ENV, 975.0),
    "shared": ("configs/multi-agent-cartpole-shared-ppo.yaml", MA_ENV, 975.0),
    "single": ("configs/cartpole-ppo.yaml", "CartPole-v1", 475.0),
}


def jrl_child(name: str, seed: int, max_steps: int) -> dict:
    rel, env, threshold = RUNS[name]
    config = tuned_config(rel, "PPO")
    config.pop("evaluation_interval", None)
    return jrl_time_to_solve("PPO", env, config, seed=seed, max_steps=max_steps,
                             eval_every=8192 if env == MA_ENV else 2048, threshold=threshold)


def throughput_child(name: str, seed: int, iterations: int) -> dict:
    """Env (and agent) steps/s of ``train()`` after 5 warm-up iterations (compiled)."""
    import jrl

    rel, env, _ = RUNS[name]
    config = tuned_config(rel, "PPO")
    config.update(evaluation_interval=None, seed=seed, log_level="ERROR")
    trainer = jrl.Trainer("PPO", env=env, config=config, log_to_disk=False)
    for _ in range(5):
        result = trainer.train()
    steps0, agents0 = result["timesteps_total"], result.get("num_agent_steps_sampled", 0)
    start = time.time()
    for _ in range(iterations):
        result = trainer.train()
    elapsed = time.time() - start
    trainer.stop()
    env_steps = result["timesteps_total"] - steps0
    agent_steps = (result.get("num_agent_steps_sampled", 0) - agents0) or env_steps
    return {"env_steps_per_s": env_steps / elapsed, "agent_steps_per_s": agent_steps / elapsed,
            "iterations": iterations, "time_s": elapsed}


def rllib_child(seed: int, cap_s: float) -> dict:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.examples.envs.classes.multi_agent import MultiAgentCartPole
    from ray.tune.registry import register_env

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    register_env("ma_cartpole", lambda cfg: MultiAgentCartPole(config={"num_agents": 2}))
    config = (PPOConfig().environment("ma_cartpole").framework("torch")
              .env_runners(num_env_runners=0).debugging(seed=seed)
              .multi_agent(policies={"p0", "p1"},
                           policy_mapping_fn=lambda agent_id, *a, **k: f"p{agent_id}")
              .training(vf_loss_coeff=0.005)
              .rl_module(model_config={"vf_share_layers": True}))
    start = time.time()
    algo = config.build_algo()
    solved, steps, returns = False, 0, {}
    while time.time() - start < cap_s:
        result = algo.train()
        steps = int(result.get("num_env_steps_sampled_lifetime", 0))
        returns = {k: float(v) for k, v in
                   result["env_runners"].get("module_episode_returns_mean", {}).items()}
        if returns and all(v >= 475 for v in returns.values()):
            solved = True
            break
    elapsed = time.time() - start
    algo.stop()
    ray.shutdown()
    return {"solved": solved, "time_s": elapsed, "env_steps": steps, "returns": returns}


def run(args: list[str], timeout: float) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                         timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})
    for line in out.stdout.splitlines()[::-1]:
        if line.startswith("RECORD "):
            return json.loads(line[len("RECORD "):])
    return {"solved": False, "time_s": float("nan"), "env_steps": 0,
            "error": (out.stderr.strip().splitlines() or ["?"])[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=300_000)
    parser.add_argument("--rllib-cap-s", type=float, default=480.0)
    parser.add_argument("--out", help="markdown file to write the section into")
    parser.add_argument("--throughput-iterations", type=int, default=40)
    parser.add_argument("--only", choices=("solve", "throughput"),
                        help="run only the time-to-solve runs or only the throughput runs")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child == "rllib":
            record = rllib_child(args.seed, args.rllib_cap_s)
        elif args.child.startswith("throughput:"):
            record = throughput_child(args.child.split(":", 1)[1], args.seed,
                                      args.throughput_iterations)
        else:
            record = jrl_child(args.child, args.seed, args.max_steps)
        print("RECORD " + json.dumps(record, default=str))
        return
    body = "\n".join(section_header()) + "\n- one run each, seed " + str(args.seed) + \
        "; the machine is shared and noisy: compare within this run only\n"
    if args.only != "throughput":
        body += solve_table(args)
    if args.only != "solve":
        body += throughput_table(args)
    publish(args.out, "Multi-agent CartPole (2 agents, PPO): jrl vs RLlib", body)


def solve_table(args: argparse.Namespace) -> str:
    rows, records = [], {}
    for name in ("two policies", "shared", "single", "rllib"):
        child = ["--child", name, "--seed", str(args.seed), "--max-steps", str(args.max_steps),
                 "--rllib-cap-s", str(args.rllib_cap_s)]
        r = run(child, timeout=args.rllib_cap_s + 600)
        records[name] = r
        rate = r["env_steps"] / r["time_s"] if r.get("time_s") else float("nan")
        system = "RLlib 2.x PPO (torch)" if name == "rllib" else f"jrl PPO, {name}"
        rows.append([system, "yes" if r["solved"] else "no", f"{r['time_s']:.0f}",
                     r["env_steps"], f"{rate:.0f}"])
        print(system, r, flush=True)
    ma, ref = records["two policies"], records["rllib"]
    ratio = ""
    if ma["solved"] and ref.get("time_s"):
        word = "" if ref["solved"] else " (RLlib unsolved at its cap: an upper bound)"
        ratio = f"- jrl / RLlib time: {ma['time_s'] / ref['time_s']:.2f}x{word}\n"
    return "\n### Time to solve\n\n" + ratio + "\n" + markdown_table(
        ["system", "solved", "time s", "env steps", "env steps/s (incl. build)"], rows) + "\n"


def throughput_table(args: argparse.Namespace) -> str:
    rows = []
    for name in ("two policies", "shared", "single"):
        r = run(["--child", f"throughput:{name}", "--seed", str(args.seed),
                 "--throughput-iterations", str(args.throughput_iterations)], timeout=1200)
        print(name, r, flush=True)
        rows.append([f"jrl PPO, {name}", f"{r.get('env_steps_per_s', float('nan')):.0f}",
                     f"{r.get('agent_steps_per_s', float('nan')):.0f}"])
    return (f"\n### Throughput\n\n`train()` after 5 warm-up iterations, "
            f"{args.throughput_iterations} iterations (sampling and learning):\n\n"
            + markdown_table(["run", "env steps/s", "agent steps/s"], rows) + "\n")


if __name__ == "__main__":
    main()
