"""Invalid actions taken while training on ``jrl/ActionMask-v0``, with the mask applied and with
the same observation under another key (so nothing masks), PPO and DQN, same seeds.

Counts every env step of training (all sampling envs), from ``ActionMaskEnv.invalid_actions``.

    python benchmarks/action_masking.py --iterations 5
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym

import jrl
from jrl.rollout.example_envs import ActionMaskEnv

CONFIGS = {
    "PPO": {"train_batch_size": 800, "rollout_fragment_length": 100, "num_envs_per_worker": 8,
            "sgd_minibatch_size": 200, "lr": 1e-3},
    "DQN": {"learning_starts": 500, "timesteps_per_iteration": 800,
            "exploration_config": {"epsilon_timesteps": 2000}},
}


class Unmasked(gym.ObservationWrapper):
    """The same observations with ``action_mask`` renamed ``allowed``: seen, never applied."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        spaces = dict(env.observation_space.spaces)
        spaces["allowed"] = spaces.pop("action_mask")
        self.observation_space = gym.spaces.Dict(spaces)

    def observation(self, obs):
        obs = dict(obs)
        obs["allowed"] = obs.pop("action_mask")
        return obs


def run(algo: str, env: str, iterations: int) -> tuple[int, int, float, float]:
    trainer = jrl.Trainer(algo, env=env, config={"seed": 0, **CONFIGS[algo]}, log_to_disk=False)
    start = time.perf_counter()
    for _ in range(iterations):
        result = trainer.train()
    seconds = time.perf_counter() - start
    invalid = sum(trainer.workers.local_worker().foreach_env(
        lambda e: e.unwrapped.invalid_actions))
    trainer.stop()
    return invalid, result["timesteps_total"], result["episode_reward_mean"], seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=5)
    args = p.parse_args()
    jrl.register_env("ActionMaskUnmasked", lambda cfg: Unmasked(ActionMaskEnv(cfg)))
    print("| algorithm | mask | env steps | invalid actions | episode_reward_mean (max 20) | s |")
    print("|---|---|---|---|---|---|")
    for algo in CONFIGS:
        for label, env in (("applied", "jrl/ActionMask-v0"), ("not applied", "ActionMaskUnmasked")):
            invalid, steps, reward, seconds = run(algo, env, args.iterations)
            print(f"| {algo} | {label} | {steps} | {invalid} | {reward:.2f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
