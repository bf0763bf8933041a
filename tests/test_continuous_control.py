"""DDPG, TD3 and SAC kernels against hand-worked values; the squashed Gaussian's density."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrl.algorithms import ddpg, sac
from jrl.algorithms.replay_ac import polyak, weighted_critic_loss
from jrl.algorithms.td3 import TD3Config
from jrl.config import parse
from jrl.errors import ConfigError
from jrl.networks.distributions import SquashedGaussian, tanh_log_det_jacobian
from jrl.types import EnvSpec, ReplayBatch

BOX = EnvSpec(obs_shape=(3,), action_kind="continuous", action_shape=(1,), action_low=(-2.0,),
              action_high=(2.0,))
DISCRETE = EnvSpec(obs_shape=(3,), action_kind="discrete", num_actions=2)


def _batch(spec, n=4, seed=0, discount=None):
    rng = np.random.default_rng(seed)
    action = (rng.integers(0, spec.num_actions, n).astype(np.int32) if spec.discrete
              else rng.uniform(-2, 2, (n, 1)).astype(np.float32))
    disc = np.array([0.99, 0.0, 0.99, 0.5], np.float32)[:n] if discount is None else discount
    return ReplayBatch(obs=rng.normal(size=(n, 3)).astype(np.float32), action=action,
                       reward=rng.normal(size=n).astype(np.float32), discount=disc,
                       next_obs=rng.normal(size=(n, 3)).astype(np.float32),
                       weight=np.ones(n, np.float32))


# -- shared kernels --------------------------------------------------------------------------

def test_weighted_critic_loss_sums_weighted_half_squared_errors_over_critics():
    q_tm1 = jnp.array([[1.0, 2.0], [0.0, 4.0]])  # [num_q, N]
    target = jnp.array([2.0, 2.0])
    weight = jnp.array([1.0, 0.5])
    loss, td = weighted_critic_loss(q_tm1, target, weight)
    # critic 1: errors (1, 0); critic 2: errors (2, -2) -> 0.5*mean(w*e^2) each
    expected = 0.5 * np.mean([1.0, 0.0]) + 0.5 * np.mean([4.0, 0.5 * 4.0])
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    np.testing.assert_allclose(td, [1.0, 0.0])  # the first critic's: replay priorities


def test_polyak_moves_targets_by_tau_only_when_due():
    target, online = {"w": jnp.array([0.0, 1.0])}, {"w": jnp.array([1.0, 3.0])}
    np.testing.assert_allclose(polyak(target, online, 0.1, jnp.array(True))["w"], [0.1, 1.2])
    np.testing.assert_allclose(polyak(target, online, 0.1, jnp.array(False))["w"], [0.0, 1.0])


# -- TD3 --------------------------------------------------------------------------------------

def test_target_policy_smoothing_noise_is_clipped_and_stays_in_bounds():
    action = jnp.array([[0.0], [1.9], [-1.9]] * 200)
    smoothed = ddpg.smoothed_target_action(action, jax.random.PRNGKey(0), noise=10.0,
                                           noise_clip=0.5, low=-2.0, high=2.0)
    offset = np.asarray(smoothed - action)
    # noise_clip 0.5 in half-range units on [-2, 2] is 1.0; a noise of 10 saturates it.
    assert np.all(np.abs(offset) <= 1.0 + 1e-6)
    # Mid-range actions: all but the ~4% of draws with |N(0, 10)| < 0.5 hit the clip.
    assert np.mean(np.isclose(np.abs(offset[::3]), 1.0)) > 0.9
    assert np.all((np.asarray(smoothed) >= -2.0) & (np.asarray(smoothed) <= 2.0))


def _ddpg_target_by_hand(config, state, batch, algorithm_nets, next_action=None):
    actor, critic = algorithm_nets
    if next_action is None:
        next_action = actor.apply(state.target_params["actor"], batch.next_obs)
    q_t = np.asarray(critic.apply(state.target_params["critic"], batch.next_obs, next_action))
    return batch.reward + batch.discount * q_t.min(axis=0)


def test_ddpg_critic_loss_uses_target_actor_and_min_of_target_critics():
    config = parse(ddpg.DDPGConfig, {"actor_hiddens": [8], "critic_hiddens": [8],
                                     "twin_q": True})
    nets = ddpg.make_networks(config, BOX)
    algo = ddpg.make_ddpg(config, nets, BOX)
    state = jax.jit(algo.init)(jax.random.PRNGKey(0))
    # Make the target networks differ from the online ones.
    state = state._replace(target_params=jax.tree.map(lambda x: x * 0.5, state.params))
    batch = _batch(BOX)
    target = _ddpg_target_by_hand(config, state, batch, nets)
    q_tm1 = np.asarray(nets[1].apply(state.params["critic"], batch.obs, batch.action))
    expected = np.sum(np.mean(0.5 * np.square(target[None] - q_tm1), axis=1))
    _, metrics = jax.jit(algo.update)(state, batch)
    np.testing.assert_allclose(metrics["critic_loss"], expected, rtol=1e-5)
    np.testing.assert_allclose(metrics["td_error"], target - q_tm1[0], rtol=1e-5, atol=1e-6)
    assert metrics["td_error"].shape == (4,)


def test_td3_updates_actor_and_targets_only_every_policy_delay_steps():
    config = parse(TD3Config, {"actor_hiddens": [8], "critic_hiddens": [8]})
    algo = ddpg.make_ddpg(config, spec=BOX, name="TD3")
    state = jax.jit(algo.init)(jax.random.PRNGKey(0))
    update = jax.jit(algo.update)
    batch = _batch(BOX)
    s1, _ = update(state, batch)  # num_updates 0: actor step
    s2, _ = update(s1, batch)  # num_updates 1: critic only
    changed = lambda a, b: any(jax.tree.leaves(jax.tree.map(  # noqa: E731
        lambda x, y: not np.array_equal(x, y), a, b)))
    assert changed(s1.params["actor"], state.params["actor"])
    assert changed(s1.target_params["critic"], state.target_params["critic"])
    assert not changed(s2.params["actor"], s1.params["actor"])
    assert not changed(s2.target_params, s1.target_params)
    assert changed(s2.params["critic"], s1.params["critic"])


def test_ddpg_and_td3_reject_discrete_actions():
    with pytest.raises(ConfigError, match="continuous"):
        ddpg.make_ddpg(ddpg.DDPGConfig(), spec=DISCRETE)


def test_exploring_actions_stay_inside_the_box():
    config = parse(ddpg.DDPGConfig, {"actor_hiddens": [8], "critic_hiddens": [8],
                                     "exploration_config": {"stddev": 5.0,
                                                            "random_timesteps": 0}})
    algo = ddpg.make_ddpg(config, spec=BOX)
    state = jax.jit(algo.init)(jax.random.PRNGKey(0))
    obs = np.random.default_rng(0).normal(size=(256, 3)).astype(np.float32)
    act = jax.jit(algo.act, static_argnums=3)
    action, _ = act(algo.policy(state), obs, jax.random.PRNGKey(1), True)
    assert np.all(np.abs(np.asarray(action)) <= 2.0)
    assert np.std(np.asarray(action)) > 1.0  # the noise is there


def test_random_warm_up_actions_cover_the_box_then_stop():
    config = parse(ddpg.DDPGConfig, {"actor_hiddens": [8], "critic_hiddens": [8],
                                     "exploration_config": {"stddev": 0.0,
                                                            "random_timesteps": 100}})
    algo = ddpg.make_ddpg(config, spec=BOX)
    state = jax.jit(algo.init)(jax.random.PRNGKey(0))
    obs = np.zeros((512, 3), np.float32)
    warm, _ = algo.act(algo.policy(state), obs, jax.random.PRNGKey(1), True)
    assert np.asarray(warm).min() < -1.8 and np.asarray(warm).max() > 1.8
    later = algo.policy(state._replace(env_steps=jnp.asarray(100, jnp.int32)))
    after, _ = algo.act(later, obs, jax.random.PRNGKey(1), True)
    np.testing.assert_allclose(after, np.broadcast_to(after[:1], after.shape))


# -- SAC --------------------------------------------------------------------------------------

def test_tanh_log_det_is_stable_and_matches_the_direct_formula():
    u = jnp.array([-3.0, -0.5, 0.0, 0.7, 2.5])
    np.testing.assert_allclose(tanh_log_det_jacobian(u), np.log(1 - np.tanh(u) ** 2),
                               rtol=1e-5)
    assert np.all(np.isfinite(tanh_log_det_jacobian(jnp.array([-50.0, 50.0]))))


def test_squashed_gaussian_density_matches_change_of_variables_by_finite_differences():
    dist = SquashedGaussian(jnp.array([0.3]), jnp.array([math.log(0.8)]), jnp.array([-2.0]),
                            jnp.array([2.0]))
    u = np.linspace(-2.5, 2.5, 11)
    a = 2.0 * np.tanh(u)
    eps = 1e-3
    jacobian = (2.0 * np.tanh(u + eps) - 2.0 * np.tanh(u - eps)) / (2 * eps)
    gaussian = (-0.5 * ((u - 0.3) / 0.8) ** 2 - math.log(0.8) - 0.5 * math.log(2 * math.pi))
    expected = gaussian - np.log(jacobian)
    np.testing.assert_allclose(dist.log_prob(jnp.asarray(a)[:, None]), expected, rtol=1e-3)


def test_squashed_gaussian_density_integrates_to_one_over_the_box():
    dist = SquashedGaussian(jnp.array([0.4]), jnp.array([math.log(0.5)]), jnp.array([-1.0]),
                            jnp.array([3.0]))
    a = np.linspace(-1.0, 3.0, 200_001)[1:-1]
    density = np.exp(np.asarray(dist.log_prob(jnp.asarray(a)[:, None])))
    assert abs(np.trapezoid(density, a) - 1.0) < 2e-3


def test_squashed_gaussian_samples_carry_their_own_log_prob():
    dist = SquashedGaussian(jnp.zeros((1000, 2)), jnp.full((1000, 2), -0.5),
                            jnp.array([-2.0, 0.0]), jnp.array([2.0, 1.0]))
    action, logp = dist.sample_and_log_prob(jax.random.PRNGKey(0))
    assert np.all((action[:, 0] >= -2) & (action[:, 0] <= 2))
    assert np.all((action[:, 1] >= 0) & (action[:, 1] <= 1))
    np.testing.assert_allclose(dist.log_prob(action), logp, rtol=1e-3, atol=1e-3)


def test_sac_actor_loss_is_alpha_logp_minus_min_q():
    logp = jnp.array([-1.0, 0.5])
    q = jnp.array([[1.0, 2.0], [3.0, 0.0]])
    np.testing.assert_allclose(sac.sac_actor_loss(logp, q, jnp.asarray(0.5)),
                               np.mean([0.5 * -1.0 - 1.0, 0.5 * 0.5 - 0.0]), rtol=1e-6)


def test_sac_alpha_grows_when_entropy_is_below_target():
    # log pi = 1 -> entropy -1, below a target entropy of 0.5: the loss must push log alpha up.
    grad_low = jax.grad(sac.sac_alpha_loss)(jnp.asarray(0.0), jnp.array([1.0]), 0.5)
    assert grad_low < 0  # gradient descent increases log alpha
    # entropy 3 above the target: alpha shrinks.
    grad_high = jax.grad(sac.sac_alpha_loss)(jnp.asarray(0.0), jnp.array([-3.0]), 0.5)
    assert grad_high > 0


def test_sac_auto_target_entropy_is_minus_action_dim_in_the_normalized_box():
    assert sac.auto_target_entropy(BOX) == pytest.approx(-1.0 + math.log(2.0))
    assert sac.auto_target_entropy(DISCRETE) == pytest.approx(0.98 * math.log(2.0))


def test_discrete_sac_target_is_the_exact_soft_value_of_the_next_state():
    config = parse(sac.SACConfig, {"Q_model": {"fcnet_hiddens": [8]},
                                   "policy_model": {"fcnet_hiddens": [8]},
                                   "initial_alpha": 0.3})
    actor, critic = nets = sac.make_networks(config, DISCRETE)
    algo = sac.make_sac(config, nets, DISCRETE)
    state = jax.jit(algo.init)(jax.random.PRNGKey(0))
    state = state._replace(target_params=jax.tree.map(lambda x: x * 0.7, state.target_params))
    batch = _batch(DISCRETE)
    logits = np.asarray(actor.apply(state.params["actor"], batch.next_obs), np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    q_t = np.asarray(critic.apply(state.target_params, batch.next_obs)).min(axis=0)
    v_t = np.sum(np.exp(logp) * (q_t - 0.3 * logp), axis=-1)
    target = batch.reward + batch.discount * v_t
    q_all = np.asarray(critic.apply(state.params["critic"], batch.obs))
    q_tm1 = q_all[:, np.arange(4), batch.action]
    expected = np.sum(np.mean(0.5 * np.square(target[None] - q_tm1), axis=1))
    _, metrics = jax.jit(algo.update)(state, batch)
    np.testing.assert_allclose(metrics["critic_loss"], expected, rtol=1e-4)


def test_sac_update_on_box_actions_moves_alpha_and_reports_per_sample_td_errors():
    config = parse(sac.SACConfig, {"Q_model": {"fcnet_hiddens": [8]},
                                   "policy_model": {"fcnet_hiddens": [8]}})
    algo = sac.make_sac(config, spec=BOX)
    state = jax.jit(algo.init)(jax.random.PRNGKey(0))
    new_state, metrics = jax.jit(algo.update)(state, _batch(BOX))
    assert metrics["td_error"].shape == (4,)
    assert float(new_state.log_alpha) != float(state.log_alpha)
    assert all(np.isfinite(np.asarray(v)).all() for v in metrics.values())


def test_sac_rejects_an_unknown_target_entropy_word():
    with pytest.raises(ConfigError, match="target_entropy"):
        parse(sac.SACConfig, {"target_entropy": "automatic"})


def test_policy_model_gives_the_critic_of_greedy_or_given_actions(make_trainer):
    trainer = make_trainer("TD3", "Pendulum-v1")
    model = trainer.get_policy().model
    space = trainer.observation_space
    space.seed(0)
    obs = [space.sample() for _ in range(3)]
    greedy = trainer.compute_actions(obs)
    np.testing.assert_allclose(model.value_function(obs), model.q_values(obs, greedy), rtol=1e-5)
    other = model.q_values(obs, np.full((3, 1), 2.0, np.float32))
    assert other.shape == (3,) and not np.allclose(other, model.q_values(obs))
    assert np.all(np.abs(greedy) <= 2.0)
