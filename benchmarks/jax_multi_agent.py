"""Fully-jitted multi-agent PPO (issue 12 items 3 and 6): independent policies on stacked gymnax
CartPoles (``jax_ma:CartPole-v1x<A>``, one policy per agent), their PPO updates either stacked
and ``vmap``ped over the policy axis or run one after another in the same jit. Reports env
steps/s (compile excluded) for both, and their ratio, in one run.

    python benchmarks/jax_multi_agent.py --agents 2 4 --chunks 3
"""

from __future__ import annotations

import argparse
import os
import time

import jax

from jrl.cli import load_experiments
from jrl.execution.multi_agent_anakin import make_multi_agent_anakin
from jrl.registry import parse_config
from jrl.rollout.jax_envs import make_jax_env

CONFIG = os.path.join(os.path.dirname(__file__), os.pardir, "configs",
                      "gymnax-multi-agent-cartpole-ppo.yaml")


def measure(num_agents: int, stacked: bool, chunks: int, iterations: int, seeds: int) -> dict:
    (spec,) = load_experiments(CONFIG).values()
    config = dict(spec["config"])
    config.pop("multiagent")
    cfg = parse_config("PPO", config)
    env = make_jax_env(f"jax_ma:CartPole-v1x{num_agents}")
    anakin = make_multi_agent_anakin("PPO", env, cfg, [[i] for i in range(num_agents)],
                                     iterations=iterations, stacked=stacked)
    runner = jax.jit(jax.vmap(anakin.init))(jax.random.split(jax.random.PRNGKey(0), seeds))
    chunk = jax.jit(jax.vmap(anakin.train_chunk))
    t0 = time.perf_counter()
    compiled = chunk.lower(runner).compile()
    compile_s = time.perf_counter() - t0
    runner, _ = compiled(runner)  # warm-up
    jax.block_until_ready(runner)
    t0 = time.perf_counter()
    for _ in range(chunks):
        runner, metrics = compiled(runner)
    jax.block_until_ready(runner)
    run_s = time.perf_counter() - t0
    steps = chunks * iterations * anakin.steps_per_iteration * seeds
    return {"compile_s": compile_s, "run_s": run_s, "steps_per_s": steps / run_s,
            "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agents", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--chunks", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args()
    print(f"load average: {os.getloadavg()}")
    print("| agents = policies | update | compile (s) | run (s) | env steps/s | stacked / sequential |")
    print("|---|---|---|---|---|---|")
    for agents in args.agents:
        rows = {mode: measure(agents, mode == "stacked (vmap)", args.chunks, args.iterations,
                              args.seeds) for mode in ("stacked (vmap)", "sequential")}
        ratio = rows["stacked (vmap)"]["steps_per_s"] / rows["sequential"]["steps_per_s"]
        for mode, r in rows.items():
            print(f"| {agents} | {mode} | {r['compile_s']:.1f} | {r['run_s']:.2f} | "
                  f"{r['steps_per_s']:,.0f} | {f'{ratio:.2f}x' if mode == 'sequential' else ''} |",
                  flush=True)
    print(f"load average: {os.getloadavg()}")


if __name__ == "__main__":
    main()
