"""Time-to-solve CartPole-v1: jrl vs stable-baselines3, PPO and DQN, per seed.

Time-to-solve is the wall time from building the agent (envs, networks, optimizer; imports
excluded) until a greedy 10-episode evaluation averages >= 475. JIT compilation counts; the
evaluations themselves do not (the clock is paused around each one). Both systems are evaluated
every ``--eval-every`` env steps (jrl: after the ``train()`` iteration that crosses the next
multiple; SB3: from a callback). A run that reaches ``--max-steps`` without solving is reported
as "not solved".

Each (system, algo, seed) runs in its own subprocess, so imports, JIT caches, thread pools and
memory do not leak between runs. Systems are interleaved per (algo, seed), so a change in the
machine's load hits both about equally.

    python benchmarks/cartpole_time_to_solve.py                       # PPO + DQN, seeds 0 1 2
    python benchmarks/cartpole_time_to_solve.py --algos PPO --seeds 0 --max-steps 50000
    python benchmarks/cartpole_time_to_solve.py --out benchmarks/RESULTS.md

jrl configs: ``configs/cartpole-ppo.yaml`` / ``configs/cartpole-dqn.yaml`` (RLlib tuned-example
format ``{name: {env, run, stop, config}}``) when they exist, else ``FALLBACK_CONFIGS`` below,
which mirror the rl-zoo hyperparameters used on the SB3 side.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bench_common as common  # noqa: E402

ENV_ID = "CartPole-v1"
THRESHOLD = 475.0
SECTION = "CartPole-v1 time-to-solve: jrl vs stable-baselines3"
DEFAULT_MAX_STEPS = {"PPO": 300_000, "DQN": 150_000}

# jrl configs used when configs/cartpole-<algo>.yaml does not exist. They follow the rl-zoo
# hyperparameters of the SB3 side as closely as jrl's config keys allow.
FALLBACK_CONFIGS = {
    "PPO": {
        "num_envs_per_worker": 8,
        "rollout_fragment_length": 32,
        "train_batch_size": 256,
        "sgd_minibatch_size": 256,
        "num_sgd_iter": 20,
        "lambda": 0.8,
        "gamma": 0.98,
        "lr": 1e-3,
        "lr_annealing": True,            # zoo: lin_0.001 over its n_timesteps 1e5
        "lr_annealing_timesteps": 100_000,
        "entropy_coeff": 0.0,
        "clip_param": 0.2,               # zoo anneals this too; jrl has no clip schedule
        "vf_loss_coeff": 0.5,
        "vf_clip_param": None,           # SB3 default: no value clipping
        "grad_clip": 0.5,                # SB3 max_grad_norm
        "model": {"fcnet_hiddens": [64, 64], "fcnet_activation": "tanh"},
    },
    "DQN": {
        "lr": 2.3e-3,
        "train_batch_size": 64,
        "buffer_size": 100_000,
        "learning_starts": 1000,
        "gamma": 0.99,
        "target_network_update_freq": 10,
        "num_envs_per_worker": 1,
        "rollout_fragment_length": 256,  # SB3 train_freq 256
        "training_intensity": 32.0,      # 128 gradient steps x 64 samples per 256 env steps
        "timesteps_per_iteration": 1024,
        "n_step": 1,
        "dueling": False,
        "double_q": False,
        "hiddens": [],
        "grad_clip": 10.0,               # SB3 DQN max_grad_norm
        "td_error_loss_fn": "huber",     # SB3 smooth_l1
        "model": {"fcnet_hiddens": [256, 256], "fcnet_activation": "relu"},
        "exploration_config": {"initial_epsilon": 1.0, "final_epsilon": 0.04,
                               "epsilon_timesteps": 8000},  # 0.16 x zoo n_timesteps 5e4
    },
}

# rl-zoo (hyperparams/ppo.yml, dqn.yml) CartPole-v1 entries; n_timesteps sets the horizon of the
# zoo's schedules (lin_* and exploration_fraction), which we keep fixed whatever --max-steps is.
SB3_ZOO = {
    "PPO": dict(n_envs=8, n_timesteps=100_000, n_steps=32, batch_size=256, gae_lambda=0.8,
                gamma=0.98, n_epochs=20, ent_coef=0.0, learning_rate=1e-3, clip_range=0.2),
    "DQN": dict(n_envs=1, n_timesteps=50_000, learning_rate=2.3e-3, batch_size=64,
                buffer_size=100_000, learning_starts=1000, gamma=0.99, target_update_interval=10,
                train_freq=256, gradient_steps=128, exploration_fraction=0.16,
                exploration_final_eps=0.04, net_arch=[256, 256]),
}


# ----------------------------------------------------------------------------------------------
# Child side: one (system, algo, seed) run


def jrl_config(algo: str) -> tuple[dict, str]:
    """The jrl config dict for ``algo`` and where it came from."""
    rel = f"configs/cartpole-{algo.lower()}.yaml"
    if not os.path.exists(os.path.join(common.REPO_ROOT, rel)):
        return json.loads(json.dumps(FALLBACK_CONFIGS[algo])), "fallback dict in the script"
    return common.tuned_config(rel, algo), rel


def run_jrl(algo: str, seed: int, max_steps: int, eval_every: int) -> dict:
    config, source = jrl_config(algo)
    record = common.jrl_time_to_solve(algo, ENV_ID, config, seed=seed, max_steps=max_steps,
                                      eval_every=eval_every, threshold=THRESHOLD)
    return {**record, "config_source": source}


def run_sb3(algo: str, seed: int, max_steps: int, eval_every: int, library: str = "sb3") -> dict:
    """SB3 (or, with ``library="sbx"``, SBX: the same API on JAX) with the zoo's settings."""
    if library == "sbx":
        from sbx import DQN, PPO
    else:
        from stable_baselines3 import DQN, PPO
    from stable_baselines3.common.env_util import make_vec_env

    zoo = SB3_ZOO[algo]

    def zoo_linear(initial: float):
        # zoo's lin_<x> decays to 0 over its n_timesteps; SB3 hands schedules the progress
        # remaining of learn(total_timesteps=max_steps), so rescale to keep the zoo's horizon.
        horizon = zoo["n_timesteps"]
        return lambda p: initial * max(0.0, 1.0 - (1.0 - p) * max_steps / horizon)

    def build():
        env = make_vec_env(ENV_ID, n_envs=zoo["n_envs"], seed=seed)
        if algo == "PPO":
            return PPO("MlpPolicy", env, n_steps=zoo["n_steps"], batch_size=zoo["batch_size"],
                       gae_lambda=zoo["gae_lambda"], gamma=zoo["gamma"],
                       n_epochs=zoo["n_epochs"], ent_coef=zoo["ent_coef"],
                       learning_rate=zoo_linear(zoo["learning_rate"]),
                       clip_range=zoo_linear(zoo["clip_range"]), seed=seed, device="cpu",
                       verbose=0)
        fraction = min(1.0, zoo["exploration_fraction"] * zoo["n_timesteps"] / max_steps)
        return DQN("MlpPolicy", env, learning_rate=zoo["learning_rate"],
                   batch_size=zoo["batch_size"], buffer_size=zoo["buffer_size"],
                   learning_starts=zoo["learning_starts"], gamma=zoo["gamma"],
                   target_update_interval=zoo["target_update_interval"],
                   train_freq=zoo["train_freq"], gradient_steps=zoo["gradient_steps"],
                   exploration_fraction=fraction,
                   exploration_final_eps=zoo["exploration_final_eps"],
                   policy_kwargs={"net_arch": zoo["net_arch"]}, seed=seed, device="cpu",
                   verbose=0)

    record = common.sb3_time_to_solve(build, ENV_ID, seed=seed, max_steps=max_steps,
                                      eval_every=eval_every, threshold=THRESHOLD)
    return {**record, "config_source": f"rl-zoo CartPole-v1 ({library})", "config": zoo}


# ----------------------------------------------------------------------------------------------
# Parent side: the run grid, table and RESULTS.md section are _bench_common.time_to_solve_main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_time_to_solve_flags(
        p, algos=["PPO", "DQN"], default_algos=["PPO", "DQN"], default_systems=common.DEFAULT_SYSTEMS,
        systems_help=None, max_steps_help="env-step cap per run (default: PPO 300k, DQN 150k)",
        out_help="markdown file to write/update the results section in "
                 "(e.g. benchmarks/RESULTS.md)")
    common.time_to_solve_main(
        p, script=__file__, section=SECTION, run_jrl=run_jrl, run_sb3=run_sb3,
        default_caps=DEFAULT_MAX_STEPS, threshold=THRESHOLD,
        notes=["- SB3 and SBX (where installed): rl-zoo CartPole-v1 hyperparameters (lin_* schedules and exploration "
               "fraction keep the zoo's n_timesteps horizon), `device=\"cpu\"`, "
               "`torch.set_num_threads(1)`; jrl uses JAX's default CPU threading"],
        cells_note="\"build\" = constructing the agent (incl. jit of init for jrl); \"1st "
                   "iter\" = jrl's first `train()` (mostly JIT compile of the update).")


if __name__ == "__main__":
    main()
