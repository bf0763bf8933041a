"""brax envs in the fully-jitted loop on CPU: env steps/s of the raw env (vmapped, random
actions, in one ``lax.scan``) and with PPO acting and learning (the Trainer's jitted loop), and
time to a greedy evaluation return (10 episodes, every 2nd iteration) for
``configs/brax-inverted-pendulum-ppo.yaml``.

Times after compilation are steady-state rates; the compile time is reported apart (brax's
physics dominates it on a CPU).

    pip install 'jrl[brax]'
    python benchmarks/brax_envs.py --out benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bench_common as common  # noqa: E402

SECTION = "brax envs in the jitted loop (CPU): env steps/s, and PPO on inverted_pendulum"


def raw_rate(env_id: str, num_envs: int, steps: int) -> tuple[float, float]:
    """(compile s, env steps/s) of ``num_envs`` vmapped envs stepping random actions."""
    import jax

    from jrl.rollout.jax_envs import make_jax_env

    env = make_jax_env(env_id)
    shape = (num_envs, *env.spec.action_shape)

    def run(key):
        obs, state = jax.vmap(env.reset)(jax.random.split(key, num_envs))

        def body(carry, key):
            state, total = carry
            a_key, s_key = jax.random.split(key)
            action = jax.random.uniform(a_key, shape, minval=-1.0, maxval=1.0)
            out = jax.vmap(env.step)(jax.random.split(s_key, num_envs), state, action)
            return (out.state, total + out.reward.sum()), None

        (state, total), _ = jax.lax.scan(body, (state, 0.0), jax.random.split(key, steps))
        # the final states are returned so that XLA cannot drop the physics (a constant
        # reward, as inverted_pendulum's, does not depend on it)
        return total, state

    fn = jax.jit(run)
    start = time.perf_counter()
    jax.block_until_ready(fn(jax.random.PRNGKey(0)))
    compiled = time.perf_counter() - start
    start = time.perf_counter()
    jax.block_until_ready(fn(jax.random.PRNGKey(1)))
    return compiled, num_envs * steps / (time.perf_counter() - start)


def ppo_run(target: float, budget: float) -> dict:
    import jrl

    config = common.tuned_config("configs/brax-inverted-pendulum-ppo.yaml", "PPO")
    start = time.perf_counter()
    trainer = jrl.Trainer("PPO", env="brax:inverted_pendulum", config=config, log_to_disk=False)
    rows, reached, first_done = [], None, None
    while True:
        result = trainer.train()
        now = time.perf_counter() - start
        if first_done is None:
            first_done = (now, result["timesteps_total"])
        greedy = result.get("evaluation", {}).get("episode_reward_mean", float("nan"))
        rows.append((now, result["timesteps_total"], result["episode_reward_mean"]))
        print(f"  PPO: {result['timesteps_total']:>8} steps {now:6.0f} s return "
              f"{result['episode_reward_mean']:.1f} greedy {greedy:.1f}", flush=True)
        if reached is None and greedy >= target:
            reached = (now, result["timesteps_total"])
        if reached is not None or now > budget:
            break
    trainer.stop()
    (t0, s0), (t1, s1, _) = first_done, rows[-1]
    rate = (s1 - s0) / (t1 - t0) if t1 > t0 else float("nan")
    return {"first": first_done, "last": rows[-1], "reached": reached, "rate": rate}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--envs", nargs="+", default=["brax:inverted_pendulum?backend=spring",
                                                 "brax:ant?backend=spring"])
    p.add_argument("--num-envs", type=int, default=32)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--target", type=float, default=950.0)
    p.add_argument("--budget", type=float, default=900.0, help="seconds for the PPO run")
    p.add_argument("--skip-ppo", action="store_true")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    rows = []
    for env_id in args.envs:
        compiled, rate = raw_rate(env_id, args.num_envs, args.steps)
        print(f"  {env_id}: compile {compiled:.0f} s, {rate:,.0f} env steps/s", flush=True)
        rows.append([f"`{env_id}`", f"{compiled:,.0f}", f"{rate:,.0f}"])
    body = [*common.section_header(), "",
            f"Raw env: {args.num_envs} envs vmapped, {args.steps} steps of random actions in one "
            "`lax.scan` (auto-reset included), timed on the second call.", "",
            common.markdown_table(["env", "compile s", "env steps/s"], rows)]
    if not args.skip_ppo:
        run = ppo_run(args.target, args.budget)
        reached = ("not reached" if run["reached"] is None else
                   f"{run['reached'][0]:,.0f} s ({run['reached'][1] / 1000:,.0f}k steps)")
        body += ["", "PPO, `configs/brax-inverted-pendulum-ppo.yaml` (spring backend, 32 envs, "
                 "seed 0), Trainer's jitted loop:", "",
                 common.markdown_table(
                     ["first train() incl. compile", "env steps/s after it (incl. evaluation)",
                      f"greedy return {args.target:g}", "last (s, steps, training return)"],
                     [[f"{run['first'][0]:,.0f} s ({run['first'][1]:,} steps)",
                       f"{run['rate']:,.0f}", reached,
                       f"{run['last'][0]:,.0f} s, {run['last'][1] / 1000:,.0f}k, "
                       f"{run['last'][2]:.1f}"]])]
    common.publish(args.out, SECTION, "\n".join(body))


if __name__ == "__main__":
    main()
