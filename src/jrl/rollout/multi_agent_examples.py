"""Small multi-agent envs, heuristic opponents and mapping functions for the tuned examples.

Use them by import path from YAML or the command line, e.g.
``env: jrl.rollout.multi_agent_examples:MultiAgentCartPole`` and
``policy_mapping_fn: jrl.rollout.multi_agent_examples:agent_to_own_policy``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from jrl.callbacks import DefaultCallbacks
from jrl.rollout.multi_agent import HeuristicPolicy
from jrl.rollout.multi_agent_env import ALL, MultiAgentEnv, make_multi_agent

# ``num_agents`` (default 2) independent CartPole-v1 copies, agent ids 0..n-1 (RLlib's
# MultiAgentCartPole).
MultiAgentCartPole = make_multi_agent("CartPole-v1")


def agent_to_own_policy(agent_id: Any, episode: Any = None, worker: Any = None, **kwargs) -> str:
    """Agent ``i`` -> policy ``"p{i}"`` (one policy per agent)."""
    return f"p{agent_id}"


def all_to_shared_policy(agent_id: Any, episode: Any = None, worker: Any = None,
                         **kwargs) -> str:
    """Every agent -> policy ``"shared"``."""
    return "shared"


ROCK, PAPER, SCISSORS = 0, 1, 2
_BEATS = {ROCK: PAPER, PAPER: SCISSORS, SCISSORS: ROCK}  # move -> the move that beats it


class RockPaperScissors(MultiAgentEnv):
    """Two players, ``episode_len`` (default 10) simultaneous rounds of rock-paper-scissors.

    Agent ids ``"player_0"`` and ``"player_1"``. Each observes ``[own previous move, the
    other's previous move]`` (``MultiDiscrete([4, 4])``: 3 before the first round). Rewards per round: +1 win, -1 loss, 0 draw.
    ``info["win"]`` is 1.0 for the round's winner.
    """

    def __init__(self, config: dict | None = None):
        config = dict(config or {})
        self.episode_len = int(config.get("episode_len", 10))
        self.possible_agents = ["player_0", "player_1"]
        self.agents = []
        self.observation_space = gym.spaces.MultiDiscrete([4, 4])
        self.action_space = gym.spaces.Discrete(3)
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self._t = 0
        self.agents = list(self.possible_agents)
        first = np.array([3, 3], np.int64)
        return {a: first.copy() for a in self.agents}, {a: {} for a in self.agents}

    def step(self, action_dict: dict):
        a0, a1 = int(action_dict["player_0"]), int(action_dict["player_1"])
        r0 = 0.0 if a0 == a1 else (1.0 if _BEATS[a1] == a0 else -1.0)
        self._t += 1
        done = self._t >= self.episode_len
        obs = {"player_0": np.array([a0, a1], np.int64),
               "player_1": np.array([a1, a0], np.int64)}
        rewards = {"player_0": r0, "player_1": -r0}
        infos = {"player_0": {"win": float(r0 > 0)}, "player_1": {"win": float(r0 < 0)}}
        terms = {"player_0": done, "player_1": done, ALL: done}
        truncs = {"player_0": False, "player_1": False, ALL: False}
        return obs, rewards, terms, truncs, infos


class AlwaysSameHeuristic(HeuristicPolicy):
    """Always plays rock (works on this module's RockPaperScissors and PettingZoo's
    ``rps_v2``, where rock is action 0 too)."""

    def compute_actions(self, obs_batch: list, state_batches: Any = None, **kwargs: Any):
        return np.full(len(obs_batch), ROCK, np.int64), [], {}


class BeatLastHeuristic(HeuristicPolicy):
    """Plays the move that beats the opponent's previous move (random in the first round)."""

    def compute_actions(self, obs_batch: list, state_batches: Any = None, **kwargs: Any):
        moves = [_BEATS[int(o[1])] if int(o[1]) < 3 else int(np.random.randint(3))
                 for o in obs_batch]
        return np.asarray(moves, np.int64), [], {}


def rps_learner_vs_heuristic(agent_id: Any, episode: Any = None, worker: Any = None,
                             **kwargs) -> str:
    """``player_0`` -> ``"learned"``, ``player_1`` -> ``"heuristic"``."""
    return "learned" if agent_id == "player_0" else "heuristic"


class RockPaperScissorsWinRate(DefaultCallbacks):
    """``custom_metrics["win_rate"]``: the share of rounds ``player_0`` won in each episode."""

    def on_episode_start(self, *, episode, **kwargs) -> None:
        episode.user_data["wins"] = 0.0

    def on_episode_step(self, *, episode, **kwargs) -> None:
        episode.user_data["wins"] += float(episode.last_info_for("player_0").get("win", 0.0))

    def on_episode_end(self, *, episode, **kwargs) -> None:
        episode.custom_metrics["win_rate"] = episode.user_data["wins"] / max(episode.length, 1)
