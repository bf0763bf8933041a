"""Example of an external CartPole talking to a policy server (RLlib's cartpole_client.py).

    python examples/serving/cartpole_client.py                       # the server acts
    python examples/serving/cartpole_client.py --inference-mode local
    python examples/serving/cartpole_client.py --off-policy          # random actions, logged
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import deque

import gymnasium as gym

from jrl.serving import PolicyClient


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-train", action="store_true", help="episodes are not trained on")
    parser.add_argument("--off-policy", action="store_true",
                        help="take random actions and log them")
    parser.add_argument("--inference-mode", default="remote", choices=["remote", "local"])
    parser.add_argument("--update-interval", type=float, default=5.0)
    parser.add_argument("--port", type=int, default=9900)
    parser.add_argument("--server", default="http://localhost")
    parser.add_argument("--token", default=os.environ.get("JRL_SERVER_TOKEN"))
    parser.add_argument("--stop-at-reward", type=float, default=475.0,
                        help="exit 0 once the mean of the last 20 episodes reaches it (0: never)")
    parser.add_argument("--max-episodes", type=int, default=0,
                        help="exit 1 after this many episodes (0: no limit)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    env = gym.make("CartPole-v1")
    client = PolicyClient(f"{args.server}:{args.port}", token=args.token,
                          inference_mode=args.inference_mode,
                          update_interval=args.update_interval)
    eid = client.start_episode(training_enabled=not args.no_train)
    obs, _ = env.reset(seed=args.seed)
    rewards, recent, episodes = 0.0, deque(maxlen=20), 0
    while True:
        if args.off_policy:
            action = env.action_space.sample()
            client.log_action(eid, obs, action)
        else:
            action = client.get_action(eid, obs)
        obs, reward, terminated, truncated, info = env.step(action)
        rewards += reward
        client.log_returns(eid, reward, info=info)
        if terminated or truncated:
            episodes += 1
            recent.append(rewards)
            mean = sum(recent) / len(recent)
            print(f"episode {episodes} reward {rewards:.0f} mean(last {len(recent)}) "
                  f"{mean:.1f}", flush=True)
            client.end_episode(eid, obs, truncated=truncated and not terminated)
            if args.stop_at_reward and len(recent) == recent.maxlen and \
                    mean >= args.stop_at_reward:
                client.close()
                return 0
            if args.max_episodes and episodes >= args.max_episodes:
                client.close()
                return 1 if args.stop_at_reward else 0
            rewards = 0.0
            obs, _ = env.reset()
            eid = client.start_episode(training_enabled=not args.no_train)


if __name__ == "__main__":
    sys.exit(main())
