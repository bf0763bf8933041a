"""Time-to-solve CartPole-v1 for jrl's A2C (vs stable-baselines3's A2C), PG and A3C, per seed.

The same measurement as ``cartpole_time_to_solve.py`` (both use the time-to-solve runs and child
processes of ``_bench_common.py``): wall time from building the agent (imports excluded, JIT included) until a
greedy 10-episode evaluation averages >= 475, evaluations excluded, one subprocess per
(system, algo, seed), systems interleaved per seed. jrl reads ``configs/cartpole-<algo>.yaml``.
SB3 runs A2C with rl-zoo's CartPole-v1 entry (``hyperparams/a2c.yml``: 8 envs, ``ent_coef``
0, SB3 defaults otherwise: ``n_steps`` 5, RMSprop lr 7e-4, ``gae_lambda`` 1, ``vf_coef`` 0.5,
``max_grad_norm`` 0.5, no normalization). PG and A3C have no SB3 counterpart and run for jrl
only (A3C with the Ray workers its YAML asks for; Ray start-up counts).

    python benchmarks/a2c_time_to_solve.py                              # A2C, PG, A3C, seeds 0 1 2
    python benchmarks/a2c_time_to_solve.py --algos A2C --seeds 0 --max-steps 100000
    python benchmarks/a2c_time_to_solve.py --out benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bench_common as common  # noqa: E402

ENV_ID = "CartPole-v1"
THRESHOLD = 475.0
SECTION = "CartPole-v1 time-to-solve: jrl A2C vs stable-baselines3 A2C, jrl PG and A3C"
ALGOS = ("A2C", "PG", "A3C")
DEFAULT_MAX_STEPS = {"A2C": 500_000, "PG": 300_000, "A3C": 300_000}
# rl-zoo hyperparams/a2c.yml, CartPole-v1 (the rest are SB3's A2C defaults).
SB3_ZOO_A2C = dict(n_envs=8, n_timesteps=500_000, ent_coef=0.0)


def run_jrl(algo: str, seed: int, max_steps: int, eval_every: int) -> dict:
    rel = f"configs/cartpole-{algo.lower()}.yaml"
    record = common.jrl_time_to_solve(algo, ENV_ID, common.tuned_config(rel, algo), seed=seed,
                                      max_steps=max_steps, eval_every=eval_every,
                                      threshold=THRESHOLD)
    return {**record, "config_source": rel}


def run_sb3(algo: str, seed: int, max_steps: int, eval_every: int, library: str = "sb3") -> dict:
    if library != "sb3":
        raise SystemExit(f"{library} has no A2C; peers here: sb3")
    from stable_baselines3 import A2C
    from stable_baselines3.common.env_util import make_vec_env

    def build():
        env = make_vec_env(ENV_ID, n_envs=SB3_ZOO_A2C["n_envs"], seed=seed)
        return A2C("MlpPolicy", env, ent_coef=SB3_ZOO_A2C["ent_coef"], seed=seed, device="cpu",
                   verbose=0)

    record = common.sb3_time_to_solve(build, ENV_ID, seed=seed, max_steps=max_steps,
                                      eval_every=eval_every, threshold=THRESHOLD)
    return {**record, "config_source": "rl-zoo CartPole-v1", "config": SB3_ZOO_A2C}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_time_to_solve_flags(
        p, algos=ALGOS, default_algos=ALGOS, default_systems=["jrl", "sb3"],
        systems_help="sb3 applies to A2C only",
        max_steps_help="env-step cap per run (default: A2C 500k, PG and A3C 300k)",
        out_help="markdown file to write/update the section in")
    common.time_to_solve_main(
        p, script=__file__, section=SECTION, run_jrl=run_jrl, run_sb3=run_sb3,
        default_caps=DEFAULT_MAX_STEPS, threshold=THRESHOLD,
        build_note=" (and Ray start-up for A3C)",
        notes=["- SB3 A2C: rl-zoo CartPole-v1 (`n_envs` 8, `ent_coef` 0; SB3 defaults "
               "otherwise: `n_steps` 5, RMSprop lr 7e-4, `gae_lambda` 1, `vf_coef` 0.5, "
               "`max_grad_norm` 0.5), `device=\"cpu\"`, `torch.set_num_threads(1)`",
               "- the machine was shared with other jobs while this ran: compare the ratios "
               "measured in the same run rather than absolute times"],
        skip=lambda system, algo: system == "sb3" and algo != "A2C")


if __name__ == "__main__":
    main()
