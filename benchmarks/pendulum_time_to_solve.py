"""Time-to-solve Pendulum-v1: jrl SAC / TD3 / DDPG vs stable-baselines3, per seed.

Time-to-solve is the wall time from building the agent (envs, networks, optimizer; imports
excluded) until a greedy 10-episode evaluation averages >= -200. JIT compilation counts; the
evaluations do not (the clock is paused around each one). Both systems are evaluated every
``--eval-every`` env steps. A run that reaches ``--max-steps`` without solving is reported as
"not solved". Each (system, algo, seed) runs in its own subprocess with an empty JAX
compilation cache (cold start) or one primed by a short unmeasured run (``jrl-warm``); systems
are interleaved per (algo, seed).

    python benchmarks/pendulum_time_to_solve.py                      # SAC TD3 DDPG, seed 0
    python benchmarks/pendulum_time_to_solve.py --algos SAC TD3 --seeds 0 1 2 \\
        --out benchmarks/RESULTS.md
    python benchmarks/pendulum_time_to_solve.py --systems jrl --algos SAC \\
        --override '{"training_intensity": 128}'                    # try a config change

jrl configs: ``configs/pendulum-<algo>.yaml``. SB3: the rl-zoo hyperparameters below.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bench_common as common  # noqa: E402

ENV_ID = "Pendulum-v1"
THRESHOLD = -200.0
SECTION = "Pendulum-v1 time-to-solve: jrl vs stable-baselines3 (SAC, TD3, DDPG)"

# rl-zoo hyperparams/{sac,td3,ddpg}.yml, Pendulum-v1 (other keys: SB3 defaults).
SB3_ZOO = {
    "SAC": dict(learning_rate=1e-3),
    "TD3": dict(gamma=0.98, buffer_size=200_000, learning_starts=10_000, noise_std=0.1,
                gradient_steps=1, train_freq=1, learning_rate=1e-3, net_arch=[400, 300]),
    "DDPG": dict(gamma=0.98, buffer_size=200_000, learning_starts=10_000, noise_std=0.1,
                 gradient_steps=1, train_freq=1, learning_rate=1e-3, net_arch=[400, 300]),
}


def _round_evals(record: dict) -> dict:
    """Mean returns in the evaluation history to 0.1 (they are printed with each run)."""
    record["evals"] = [(steps, t, round(reward, 1)) for steps, t, reward in record["evals"]]
    return record


def run_jrl(algo: str, seed: int, max_steps: int, eval_every: int, override: dict) -> dict:
    config = common.tuned_config(f"configs/pendulum-{algo.lower()}.yaml")
    config.update(override)
    return _round_evals(common.jrl_time_to_solve(
        algo, ENV_ID, config, seed=seed, max_steps=max_steps, eval_every=eval_every,
        threshold=THRESHOLD))


def run_sb3(algo: str, seed: int, max_steps: int, eval_every: int, override: dict,
            library: str = "sb3") -> dict:
    """SB3 (or, with ``library="sbx"``, SBX: the same API on JAX) with the zoo's settings."""
    import numpy as np

    if library == "sbx":
        from sbx import DDPG, SAC, TD3
    else:
        from stable_baselines3 import DDPG, SAC, TD3
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.noise import NormalActionNoise

    zoo = dict(SB3_ZOO[algo])

    def build():
        env = make_vec_env(ENV_ID, n_envs=1, seed=seed)
        if algo == "SAC":
            return SAC("MlpPolicy", env, learning_rate=zoo["learning_rate"], seed=seed,
                       device="cpu", verbose=0)
        noise = NormalActionNoise(np.zeros(1), zoo["noise_std"] * np.ones(1))
        return {"TD3": TD3, "DDPG": DDPG}[algo](
            "MlpPolicy", env, gamma=zoo["gamma"], buffer_size=zoo["buffer_size"],
            learning_starts=zoo["learning_starts"], action_noise=noise,
            gradient_steps=zoo["gradient_steps"], train_freq=zoo["train_freq"],
            learning_rate=zoo["learning_rate"], policy_kwargs={"net_arch": zoo["net_arch"]},
            seed=seed, device="cpu", verbose=0)

    record = common.sb3_time_to_solve(build, ENV_ID, seed=seed, max_steps=max_steps,
                                      eval_every=eval_every, threshold=THRESHOLD)
    return _round_evals({**record, "config": zoo})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--algos", nargs="+", default=["SAC", "TD3", "DDPG"])
    parser.add_argument("--systems", nargs="+", default=list(common.DEFAULT_SYSTEMS),
                        choices=list(common.SYSTEMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--max-steps", type=int, default=30_000)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--override", default="{}", help="JSON merged into the jrl configs")
    parser.add_argument("--out", help="write the section into this markdown file")
    common.add_time_to_solve_child_flags(parser)
    args = parser.parse_args()
    if args.child_system:
        override = json.loads(args.override)
        common.time_to_solve_child_main(args, functools.partial(run_jrl, override=override),
                                        functools.partial(run_sb3, override=override))
        return
    start = time.time()
    machine = common.machine_lines()  # load average at the start
    results = []
    for r in common.time_to_solve_runs(
            __file__, args.algos, args.seeds, args.systems, lambda _: args.max_steps,
            eval_every=args.eval_every, timeout=args.timeout,
            extra_args=["--override", args.override], prime_steps=(2048, 1024),
            prime_timeout=args.timeout):
        results.append(r)
        print(f"{r['algo']} seed {r['seed']} {r['system']}: {common.format_run(r)} "
              f"evals={r.get('evals')}", r.get("stderr_tail", ""), flush=True)
    body = "\n".join([
        f"Command: `{common.command_line()}` ({time.time() - start:.0f} s in all)", "",
        "Time-to-solve: wall time from building the agent until a greedy 10-episode "
        "evaluation averages >= -200 (evaluations every "
        f"{args.eval_every} env steps, their time excluded; JIT compile included; cold: empty "
        "compilation cache, warm: the cache a previous short run of the same config left). "
        "jrl: `configs/pendulum-<algo>.yaml`; SB3 and SBX: rl-zoo hyperparameters, 1 env.", "",
        common.time_to_solve_table(results, args.algos, args.seeds, timing_columns=False), "",
        *machine,
        "- the machine is shared with other jobs: absolute times are noisy, ratios from one "
        "run are what count"])
    common.publish(args.out, SECTION, body)


if __name__ == "__main__":
    main()
