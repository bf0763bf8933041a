"""Example of training a policy over HTTP with an external CartPole (RLlib's cartpole_server.py).

Start this, then one or more ``cartpole_client.py``; the server trains on what the clients send:

    python examples/serving/cartpole_server.py --run PPO
    python examples/serving/cartpole_client.py --inference-mode local
"""

from __future__ import annotations

import argparse
import os

import gymnasium as gym
import numpy as np

import jrl
from jrl import ExternalEnv
from jrl.serving import PolicyServer

SERVER_ADDRESS = "127.0.0.1"
SERVER_PORT = 9900


class CartpoleServing(ExternalEnv):
    def __init__(self, address: str = SERVER_ADDRESS, port: int = SERVER_PORT,
                 token: str | None = None):
        ExternalEnv.__init__(self, gym.spaces.Discrete(2),
                             gym.spaces.Box(low=-10, high=10, shape=(4,), dtype=np.float32))
        self.address, self.port, self.token = address, port, token

    def run(self):
        print(f"Starting policy server at {self.address}:{self.port}", flush=True)
        server = PolicyServer(self, self.address, self.port, token=self.token)
        server.serve_forever()


CONFIGS = {
    # RLlib's example settings, sized so CartPole solves within a few minutes on 2 CPUs.
    "DQN": {"num_workers": 0, "learning_starts": 1000, "timesteps_per_iteration": 1000,
            "exploration_config": {"initial_epsilon": 1.0, "final_epsilon": 0.02,
                                   "epsilon_timesteps": 5000},
            "n_step": 3, "dueling": True, "double_q": True, "hiddens": [64], "lr": 1e-3,
            "rollout_fragment_length": 4, "train_batch_size": 128, "training_intensity": 16,
            "buffer_size": 50_000, "target_network_update_freq": 500,
            "model": {"fcnet_hiddens": [64, 64]}},
    "PPO": {"num_workers": 0, "rollout_fragment_length": 1000, "train_batch_size": 4000,
            "sgd_minibatch_size": 256, "num_sgd_iter": 10, "lr": 1e-3, "gamma": 0.99,
            "model": {"fcnet_hiddens": [64, 64]}},
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="PPO", choices=sorted(CONFIGS))
    parser.add_argument("--port", type=int, default=SERVER_PORT)
    parser.add_argument("--address", default=SERVER_ADDRESS)
    parser.add_argument("--token", default=os.environ.get("JRL_SERVER_TOKEN"))
    parser.add_argument("--checkpoint-dir", default=None, help="save a checkpoint after each "
                        "iteration there (and resume from the latest one)")
    parser.add_argument("--stop-iters", type=int, default=0, help="0: train forever")
    parser.add_argument("--stop-reward", type=float, default=0.0,
                        help="stop once episode_reward_mean reaches it (0: never)")
    parser.add_argument("--config", default="{}", help="JSON config overrides")
    args = parser.parse_args(argv)

    import json

    jrl.register_env("srv", lambda env_config: CartpoleServing(args.address, args.port,
                                                               args.token))
    config = {**CONFIGS[args.run], **json.loads(args.config)}
    trainer = jrl.Trainer(args.run, env="srv", config=config, log_to_disk=False)
    if args.checkpoint_dir and os.path.isdir(args.checkpoint_dir):
        from jrl.checkpoint import latest_checkpoint

        latest = latest_checkpoint(args.checkpoint_dir)
        if latest:
            print(f"Restoring from checkpoint {latest}", flush=True)
            trainer.restore(latest)
    try:
        iteration = 0
        while not args.stop_iters or iteration < args.stop_iters:
            result = trainer.train()
            iteration += 1
            print(f"iter {iteration} timesteps {result['timesteps_total']} "
                  f"episode_reward_mean {result['episode_reward_mean']:.1f} "
                  f"episodes {result['episodes_total']}", flush=True)
            if args.checkpoint_dir:
                print(f"Last checkpoint {trainer.save(args.checkpoint_dir)}", flush=True)
            if args.stop_reward and result["episode_reward_mean"] >= args.stop_reward:
                break
    finally:
        trainer.stop()


if __name__ == "__main__":
    main()
