"""Users' own JAX envs (``register_jax_env``, ``module:factory``) and MinAtar through gymnax, in
the fully-jitted loop behind the Trainer and the CLI."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import jrl
from jrl.cli import main
from jrl.errors import EnvError
from jrl.rollout.jax_envs import is_jax_env_id, make_jax_env, registered_jax_envs

LINE_PPO = {"num_envs_per_worker": 8, "rollout_fragment_length": 16, "train_batch_size": 128,
            "sgd_minibatch_size": 64, "num_sgd_iter": 2, "lr": 3e-3,
            "timesteps_per_iteration": 128 * 10, "model": {"fcnet_hiddens": [16]}}


def test_register_jax_env_builds_the_users_env_with_its_env_config():
    from line_jax_env import LineEnv

    jrl.register_jax_env("line-v1", lambda env_config: LineEnv(**env_config))
    assert is_jax_env_id("line-v1") and "line-v1" in registered_jax_envs()
    env = make_jax_env("line-v1", {"length": 6})
    assert isinstance(env, LineEnv) and env.spec.obs_shape == (7,)
    jrl.register_jax_env("line-v2", lambda: LineEnv(limit=3))  # a factory without env_config
    assert make_jax_env("line-v2").limit == 3


@pytest.mark.slow
def test_register_jax_env_trains_a_users_env_in_the_jitted_loop():
    from line_jax_env import LineEnv

    jrl.register_jax_env("line-v0", lambda env_config: LineEnv(**env_config))
    trainer = jrl.Trainer("PPO", env="line-v0",
                          config={**LINE_PPO, "env_config": {"length": 3}, "num_seeds": 2})
    assert trainer.get_policy().observation_space.shape == (4,)
    for _ in range(4):
        result = trainer.train()
    # walking right reaches the end in 3 steps; random walks mostly time out at 12
    assert result["episode_reward_mean"] > 0.8 and result["episode_len_mean"] < 6
    assert len(result["seeds"]["episode_reward_mean"]) == 2
    episodes = trainer.rollout_episodes(4)
    assert [e["episode_len"] for e in episodes] == [3] * 4
    trainer.stop()


@pytest.mark.slow  # the Trainer path of a module:factory env is in the default suite above
def test_module_factory_env_from_the_cli(tmp_path, capsys):
    assert is_jax_env_id("line_jax_env:make") and not is_jax_env_id("CartPole-v1")
    assert not is_jax_env_id("my_module:MyEnv-v0")  # gymnasium's module:id form
    jrl.register_env("team:arena", lambda cfg: None)  # a gymnasium creator's name stays one
    assert not is_jax_env_id("team:arena")
    assert main(["train", "--run", "PPO", "--env", "line_jax_env:make", "--config",
                 jrl_config(LINE_PPO), "--stop", "training_iteration=1", "--local-dir",
                 str(tmp_path), "-q"]) == 0
    out = capsys.readouterr().out
    assert "Training PPO on line_jax_env:make" in out and "Checkpoint:" in out


def jrl_config(config: dict) -> str:
    import json

    return json.dumps(config)


def test_jax_env_factory_errors_say_what_is_wrong():
    jrl.register_jax_env("not-a-jax-env", lambda: object())
    with pytest.raises(EnvError, match="must implement jrl.rollout.jax_envs.JaxEnv"):
        make_jax_env("not-a-jax-env")
    with pytest.raises(EnvError, match="cannot import JAX env factory 'line_jax_env:nope'"):
        make_jax_env("line_jax_env:nope")
    with pytest.raises(EnvError, match="did you mean 'minatar:Breakout'"):
        make_jax_env("minatar:Breakot")


def test_minatar_breakout_keeps_truncation_apart_from_termination():
    pytest.importorskip("gymnax")
    env = make_jax_env("minatar:Breakout")
    assert env.spec.obs_shape == (10, 10, 4) and env.spec.num_actions == 3
    assert env.spec.max_episode_steps == 1000
    obs, state = env.reset(jax.random.PRNGKey(0))
    step = jax.jit(env.step)
    key = jax.random.PRNGKey(1)
    terminated = False
    for _ in range(200):  # a still paddle loses the ball: a termination, not a time limit
        key, k = jax.random.split(key)
        out = step(k, state, 0)
        state = out.state
        assert not bool(out.truncated)
        if bool(out.terminated):
            terminated = True
            break
    assert terminated
    assert np.isin(np.asarray(out.final_obs), (0.0, 1.0)).all()


def _run_steps(env, actions, key=0):
    obs, state = env.reset(jax.random.PRNGKey(key))
    step = jax.jit(env.step)
    outs = []
    for i, a in enumerate(actions):
        out = step(jax.random.PRNGKey(100 + i), state, np.asarray(a, np.float32))
        state = out.state
        outs.append(out)
    return outs


def test_brax_shaped_env_from_module_factory_keeps_truncation_apart_from_termination():
    """A user's env in brax's shape (reset(rng)/step(state, action) -> State) is adapted by
    BraxEnv: a fall terminates, the episode_length cut and the env's own info['truncation']
    truncate, and the next step starts a fresh episode."""
    from jrl.rollout.jax_envs import BraxEnv

    env = make_jax_env("brax_like_env:make")
    assert isinstance(env, BraxEnv)
    assert env.spec.continuous and env.spec.action_shape == (1,)
    assert env.spec.action_low == (-1.0,) and env.spec.action_high == (1.0,)
    assert env.spec.obs_shape == (2,) and env.spec.max_episode_steps == 1000
    # pushing one way always (clipped to 1) drives |x| past 1: a termination
    outs = _run_steps(env, [[5.0]] * 40)
    ends = [i for i, o in enumerate(outs) if bool(o.terminated)]
    assert ends and not any(bool(o.truncated) for o in outs[:ends[0] + 1])
    end = outs[ends[0]]
    assert abs(float(end.final_obs[0])) > 1.0 and abs(float(end.obs[0])) <= 0.05
    assert float(end.reward) == 1.0
    # the adapter's own time limit (episode_length) is a truncation
    short = BraxEnv(env.env, episode_length=3)
    assert short.spec.max_episode_steps == 3
    outs = _run_steps(short, [[0.0]] * 7)
    assert [bool(o.truncated) for o in outs] == [False, False, True, False, False, True, False]
    assert not any(bool(o.terminated) for o in outs)
    # an env that cuts episodes itself (info['truncation'], as brax's EpisodeWrapper does)
    own = make_jax_env("brax_like_env:make", {"truncate_at": 2})
    assert own.spec.max_episode_steps is None  # the limit is the env's, not known to jrl
    outs = _run_steps(own, [[0.0]] * 4)
    assert [(bool(o.terminated), bool(o.truncated)) for o in outs] == \
        [(False, False), (False, True), (False, False), (False, True)]


def test_brax_ids_and_their_errors():
    assert is_jax_env_id("brax:ant") and is_jax_env_id("brax:ant?backend=generalized")
    with pytest.raises(EnvError, match="must be key=value pairs"):
        make_jax_env("brax:ant?backend")
    pytest.importorskip("brax")
    with pytest.raises(EnvError, match="did you mean 'brax:inverted_pendulum'"):
        make_jax_env("brax:inverted_pendulm")
    # options in the id and in env_config reach brax (env_config wins)
    env = make_jax_env("brax:inverted_pendulum?backend=spring&episode_length=50",
                       {"episode_length": 20})
    assert env.env.backend == "spring" and env.spec.max_episode_steps == 20
    assert env.spec.obs_shape == (4,) and env.spec.action_shape == (1,)
    with pytest.raises(EnvError, match="brax env 'inverted_pendulum'"):
        make_jax_env("brax:inverted_pendulum", {"backend": "nope"})


BRAX_PPO = {"num_envs_per_worker": 16, "rollout_fragment_length": 32, "train_batch_size": 512,
            "sgd_minibatch_size": 128, "num_sgd_iter": 4, "lr": 3e-3,
            "timesteps_per_iteration": 2048, "model": {"fcnet_hiddens": [32, 32]}}


@pytest.mark.slow
def test_ppo_learns_a_brax_shaped_env_from_module_factory():
    """A brax-shaped user env (no brax installed) trains with PPO in the jitted loop: a random
    force falls in ~25 steps; a learned one holds the point up to the env's own cut at 200."""
    trainer = jrl.Trainer("PPO", env="brax_like_env:make",
                          config={**BRAX_PPO, "env_config": {"truncate_at": 200}})
    space = trainer.get_policy().action_space
    assert space.shape == (1,) and float(space.low[0]) == -1.0 and float(space.high[0]) == 1.0
    for _ in range(8):
        result = trainer.train()
        if result["episode_reward_mean"] >= 150:
            break
    assert result["episode_reward_mean"] >= 150
    trainer.stop()


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["PPO", "SAC"])
def test_brax_inverted_pendulum_trains_with_ppo_and_sac(algo):
    pytest.importorskip("brax")
    config = dict(BRAX_PPO) if algo == "PPO" else {
        "num_envs_per_worker": 4, "rollout_fragment_length": 8, "train_batch_size": 64,
        "learning_starts": 64, "buffer_size": 10_000, "timesteps_per_iteration": 256,
        "Q_model": {"fcnet_hiddens": [32]}, "policy_model": {"fcnet_hiddens": [32]}}
    config["env_config"] = {"backend": "spring", "episode_length": 100}
    trainer = jrl.Trainer(algo, env="brax:inverted_pendulum", config=config)
    assert trainer.get_policy().observation_space.shape == (4,)
    for _ in range(2):
        result = trainer.train()
    assert result["timesteps_total"] >= 2 * config["timesteps_per_iteration"]
    assert result["episodes_total"] > 0 and 1 <= result["episode_len_mean"] <= 100
    action = trainer.compute_action(np.zeros(4, np.float32))
    assert action.shape == (1,) and -1.0 <= float(action[0]) <= 1.0
    trainer.stop()
