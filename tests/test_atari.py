"""Atari through ale-py: the classic ids, the DeepMind wrappers (order, frame stack, episodic life,
reward clipping for training only) and envpool giving the gymnasium path's frames and returns."""

from __future__ import annotations

import gymnasium as gym
import jax
import numpy as np
import pytest

pytest.importorskip("ale_py")
pytest.importorskip("cv2")

from jrl.config import ModelConfig  # noqa: E402
from jrl.errors import EnvError  # noqa: E402
from jrl.rollout import atari  # noqa: E402
from jrl.rollout.envs import make_env  # noqa: E402

TINY_CNN = {"conv_filters": [[4, [8, 8], 8], [8, [4, 4], 4]], "fcnet_hiddens": [16]}


def _chain(env: gym.Env) -> list[str]:
    names = []
    while isinstance(env, gym.Wrapper):
        names.append(type(env).__name__)
        env = env.env
    return [*names, type(env).__name__]


def test_deterministic_ids_map_onto_ale_with_frame_skip_4_and_no_sticky_actions():
    for env_id, skip in (("PongDeterministic-v4", 4), ("SpaceInvadersDeterministic-v4", 3),
                         ("PongNoFrameskip-v4", 1), ("ALE/Pong-v5", 4)):
        env = make_env(env_id, preprocessor_pref="rllib")
        ale = env.unwrapped
        assert type(ale).__module__.startswith("ale_py")
        assert ale._frameskip == skip, env_id
        sticky = ale.ale.getFloat("repeat_action_probability")
        assert sticky == pytest.approx(0.25 if env_id.startswith("ALE/") else 0.0), env_id
        assert env.observation_space.shape == (210, 160, 3)
        env.close()


def test_unknown_atari_id_suggests_the_closest():
    with pytest.raises(EnvError, match="PongDeterministic-v4"):
        make_env("PongDeterministc-v4")


def test_deepmind_wrappers_in_baselines_order_with_the_skip_moved_into_the_max_pool():
    env = make_env("PongDeterministic-v4", preprocessor_pref="deepmind", model=ModelConfig())
    assert _chain(env) == ["ChannelsLast", "FrameStackObservation", "FireResetEnv",
                           "EpisodicLifeEnv", "AtariPreprocessing", "OrderEnforcing", "AtariEnv"]
    preprocessing = env.env.env.env.env
    assert preprocessing.frame_skip == 4 and preprocessing.noop_max == atari.NOOP_MAX
    assert env.unwrapped._frameskip == 1  # the wrapper skips (and max-pools) instead
    assert env.observation_space == gym.spaces.Box(0, 255, (84, 84, 4), np.uint8)
    env.close()


def test_frame_stack_is_channel_last_uint8_and_shifts_one_frame_per_step():
    env = make_env("BreakoutNoFrameskip-v4", preprocessor_pref="deepmind", model=ModelConfig())
    obs, _ = env.reset(seed=0)
    assert obs.shape == (84, 84, 4) and obs.dtype == np.uint8
    frames = [obs]
    for action in (2, 3, 2, 3, 2):
        obs, *_ = env.step(action)
        assert obs.shape == (84, 84, 4) and obs.dtype == np.uint8
        frames.append(obs)
    for before, after in zip(frames, frames[1:], strict=False):
        np.testing.assert_array_equal(after[..., :3], before[..., 1:])
    assert len({f[..., -1].tobytes() for f in frames}) > 1  # the newest frame moves on
    env.close()
    no_stack = make_env("PongNoFrameskip-v4", preprocessor_pref="deepmind",
                        model=ModelConfig(framestack=False, dim=42))
    assert no_stack.observation_space.shape == (42, 42, 1)
    no_stack.close()


def test_losing_a_life_ends_the_episode_but_not_the_game():
    env = make_env("BreakoutNoFrameskip-v4", preprocessor_pref="deepmind", model=ModelConfig())
    env.reset(seed=0)
    ale = env.unwrapped.ale
    lives = ale.lives()
    for _ in range(2000):  # the paddle stays put: the ball is lost within a few hundred steps
        _, _, terminated, truncated, _ = env.step(0)
        if terminated:
            break
    assert terminated and not truncated
    assert ale.lives() == lives - 1 and not ale.game_over()
    env.reset()
    assert ale.lives() == lives - 1  # a soft reset: the same game goes on
    env.close()


def test_rewards_are_sign_clipped_for_training_and_reported_raw():
    from jrl.algorithms.a2c import A2CConfig
    from jrl.backends import jit_init
    from jrl.callbacks import DefaultCallbacks
    from jrl.config import parse
    from jrl.rollout.worker import RolloutWorker

    raw: list[float] = []

    class Raw(DefaultCallbacks):
        def on_episode_step(self, *, worker, base_env, episode, env_index=None, **kw):
            raw.append(float(episode.total_reward))

    config = parse(A2CConfig, {"model": TINY_CNN, "rollout_fragment_length": 150,
                               "num_envs_per_worker": 1, "callbacks": Raw})
    worker = RolloutWorker("SpaceInvadersNoFrameskip-v4", config, "A2C")
    assert worker.get_policy().observation_space == gym.spaces.Box(0, 255, (84, 84, 4),
                                                                    np.uint8)
    algorithm = worker.algorithm
    worker.set_policy(algorithm.policy(jit_init(algorithm.init)(jax.random.PRNGKey(0))))
    batch = worker.sample()
    assert batch["obs"].dtype == np.uint8 and batch["obs"].shape == (150, 1, 84, 84, 4)
    assert set(np.unique(batch["rewards"])) <= {0.0, 1.0}
    assert max(raw) > batch["rewards"].sum() > 0  # invaders are worth 5..30 points each
    worker.close()


def test_envpool_gives_the_gymnasium_paths_frames_and_returns_for_fixed_actions():
    pytest.importorskip("envpool")
    from jrl.rollout.envpool_env import EnvPoolVectorEnv

    atari.register_atari_envs()
    # One no-op frame and no FIRE on reset: envpool's reset then does what the wrappers do.
    env = atari.wrap_deepmind(gym.make("PongDeterministic-v4", frameskip=1), frame_skip=4,
                              noop_max=1, fire_reset=False)
    pool = EnvPoolVectorEnv("PongDeterministic-v4", 1, noop_max=1, fire_reset=False)
    obs, _ = env.reset(seed=0)
    pool_obs, _ = pool.reset(seed=0)
    np.testing.assert_array_equal(obs, pool_obs[0])
    returns, pool_returns = 0.0, 0.0
    for t in range(5000):
        action = (t // 7) % 6
        obs, reward, terminated, truncated, _ = env.step(action)
        pool_obs, pool_reward, pool_term, pool_trunc, info = pool.step(np.array([action]))
        returns += reward
        pool_returns += float(pool_reward[0])
        if pool_term[0] or pool_trunc[0]:
            pool_obs = info["final_obs"]
        np.testing.assert_array_equal(obs, pool_obs[0])
        assert (terminated, truncated) == (pool_term[0], pool_trunc[0])
        if terminated or truncated:
            break
    assert terminated and returns == pool_returns and -21 <= returns < 0
    env.close()
    pool.close()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pong-ppo.yaml", "pong-impala.yaml"])
def test_pong_tuned_examples_start_and_train(name):
    """configs/pong-{ppo,impala}.yaml as written (env, wrappers, network, loss settings) start
    and run a few iterations; only the hardware they ask for (workers, GPUs) and the batch
    sizes are cut to this machine's."""
    import os

    import jrl
    from jrl.cli import load_experiments

    configs = os.path.join(os.path.dirname(__file__), os.pardir, "configs")
    (spec,) = load_experiments(os.path.join(configs, name)).values()
    config = dict(spec["config"])
    config.update(num_workers=0, num_gpus=0, num_envs_per_worker=2, seed=0,
                  rollout_fragment_length=25, train_batch_size=100, timesteps_per_iteration=0)
    if "sgd_minibatch_size" in config:
        config.update(sgd_minibatch_size=50, num_sgd_iter=2)
    trainer = jrl.Trainer(spec["run"], env=spec["env"], config=config, log_to_disk=False)
    try:
        policy = trainer.get_policy()
        want = (42, 42, 4) if name == "pong-impala.yaml" else (84, 84, 4)
        assert policy.observation_space.shape == want
        assert policy.observation_space.dtype == np.uint8 and policy.action_space.n == 6
        for _ in range(3):
            result = trainer.train()
        assert result["timesteps_total"] >= 300
        stats = result["info"]["learner"]["default_policy"]
        assert np.isfinite(stats["total_loss"]) and stats["entropy"] > 0
    finally:
        trainer.stop()
