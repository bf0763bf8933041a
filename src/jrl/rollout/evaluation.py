"""Greedy (or exploring) evaluation episodes with a policy, outside the training sampler."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import jax
import numpy as np

from jrl.rollout.envs import make_env, make_vector_env


def run_episodes(act: Callable, policy: Any, preprocessor: Any, env_id: str, config: Any,
                 num_episodes: int, *, explore: bool = False, seed: int = 10_000,
                 max_steps: int | None = None, record: bool = False) -> list[dict]:
    """Runs ``num_episodes`` episodes in parallel envs (one episode per env) and returns their
    ``{"episode_reward", "episode_len"}``. ``act`` is the jitted ``(policy, obs, key, explore)``
    (or a recurrent policy's ``RecurrentStepper``, told each step's rewards).
    ``max_steps`` caps the total number of env steps over all episodes. With ``record`` each
    episode also holds the columns of an offline SampleBatch row (``jrl.rollout.offline``):
    preprocessed ``obs`` and ``new_obs``, ``actions``, ``rewards``, ``terminateds``,
    ``truncateds`` and ``action_logp`` (the behaviour's: 0, probability 1, for greedy
    actions)."""
    results: list[dict] = []
    key = jax.random.PRNGKey(seed)
    steps_left = max_steps if max_steps is not None else np.inf
    while len(results) < num_episodes and steps_left > 0:
        n = min(num_episodes - len(results), 16)
        env = make_vector_env(env_id, n, config.env_config, horizon=config.horizon,
                              preprocessor_pref=config.preprocessor_pref, model=config.model)
        try:
            raw, _ = env.reset(seed=seed + len(results))
            returns, lengths = np.zeros(n), np.zeros(n, np.int64)
            active = np.ones(n, bool)
            bounds = _action_bounds(env.single_action_space, config)
            trajectories = [{k: [] for k in ("obs", "new_obs", "actions", "rewards",
                                              "terminateds", "truncateds", "action_logp")}
                            for _ in range(n)]
            while active.any() and steps_left > 0:
                key, act_key = jax.random.split(key)
                obs = preprocessor.transform_batch(raw)
                action, extras = act(policy, obs, act_key, explore)
                action = np.asarray(action)
                if record:
                    # Greedy actions are deterministic: the behaviour chose them with prob. 1.
                    logp = (np.asarray(extras.get("action_logp", np.zeros(n)), np.float32)
                            if explore else np.zeros(n, np.float32))
                    for i in np.flatnonzero(active):
                        trajectories[i]["obs"].append(obs[i])
                        trajectories[i]["actions"].append(action[i])
                        trajectories[i]["action_logp"].append(logp[i])
                if bounds is not None:
                    action = np.clip(action, *bounds)
                raw, reward, terminated, truncated, info = env.step(action)
                if hasattr(act, "observe"):  # a recurrent policy's stepper
                    act.observe(reward, terminated | truncated)
                returns += np.where(active, reward, 0.0)
                if record:
                    done = terminated | truncated
                    next_obs = preprocessor.transform_batch(raw)
                    for i in np.flatnonzero(active):
                        final = (preprocessor.transform(info["final_obs"][i]) if done[i]
                                 else next_obs[i])
                        trajectories[i]["new_obs"].append(final)
                        trajectories[i]["rewards"].append(np.float32(reward[i]))
                        trajectories[i]["terminateds"].append(bool(terminated[i]))
                        trajectories[i]["truncateds"].append(bool(truncated[i]))
                lengths += active
                steps_left -= int(active.sum())
                active &= ~(terminated | truncated)
            for i in range(n):
                if not active[i]:
                    recorded = {k: np.asarray(v) for k, v in trajectories[i].items()}
                    results.append({"episode_reward": float(returns[i]),
                                    "episode_len": int(lengths[i]),
                                    **(recorded if record else {})})
        finally:
            env.close()
    return results


def _action_bounds(space: gym.Space, config: Any):
    if isinstance(space, gym.spaces.Box) and config.clip_actions:
        return space.low, space.high
    return None


def render_episodes(act: Callable, policy: Any, preprocessor: Any, env_id: str, config: Any,
                    num_episodes: int, *, render_mode: str, video_dir: str | None = None,
                    explore: bool = False, seed: int = 10_000,
                    max_steps: int | None = None) -> list[dict]:
    """Like ``run_episodes`` but one env at a time with rendering: ``human`` opens a window,
    ``rgb_array`` writes one video per episode into ``video_dir`` (needs moviepy)."""
    env = make_env(env_id, config.env_config, horizon=config.horizon, render_mode=render_mode,
                   preprocessor_pref=config.preprocessor_pref, model=config.model)
    if render_mode == "rgb_array":
        env = gym.wrappers.RecordVideo(env, video_folder=video_dir, episode_trigger=lambda _: True,
                                       name_prefix="rollout", disable_logger=True)
    key = jax.random.PRNGKey(seed)
    bounds = _action_bounds(env.action_space, config)
    results = []
    steps_left = max_steps if max_steps is not None else np.inf
    try:
        for episode in range(num_episodes):
            raw, _ = env.reset(seed=seed + episode)
            total, length, done = 0.0, 0, False
            while not done and steps_left > 0:
                key, act_key = jax.random.split(key)
                obs = preprocessor.transform(raw)[None]
                action = np.asarray(act(policy, obs, act_key, explore)[0])[0]
                if bounds is not None:
                    action = np.clip(action, *bounds)
                raw, reward, terminated, truncated, _ = env.step(action)
                if hasattr(act, "observe"):  # a recurrent policy's stepper
                    act.observe(np.asarray([reward]), np.asarray([terminated or truncated]))
                total += float(reward)
                length += 1
                steps_left -= 1
                done = terminated or truncated
            if done:
                results.append({"episode_reward": total, "episode_len": length})
            if steps_left <= 0:
                break
    finally:
        env.close()
    return results
