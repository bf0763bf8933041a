"""Torsos, heads, the network catalog and the LAPACK-free orthogonal initializer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrl.config import ModelConfig
from jrl.errors import ConfigError
from jrl.networks.catalog import (
    count_params,
    make_actor_critic,
    make_distribution,
    make_q_network,
    param_summary,
)
from jrl.networks.init import orthogonal
from jrl.networks.torsos import MLP, NatureCNN, make_torso
from jrl.types import EnvSpec

SMALL = ModelConfig(fcnet_hiddens=(16, 16))
SMALL_CONV = ((4, (8, 8), 4), (8, (4, 4), 2))
SMALL_CNN = ModelConfig(fcnet_hiddens=(16,), conv_filters=SMALL_CONV)

DISCRETE = EnvSpec(obs_shape=(4,), num_actions=3)
CONTINUOUS = EnvSpec(obs_shape=(4,), action_kind="continuous", action_shape=(2,),
                     action_low=(-1.0, -1.0), action_high=(1.0, 1.0))
IMAGE = EnvSpec(obs_shape=(84, 84, 3), obs_dtype="uint8", num_actions=6)
BATCH = 5


def _obs(spec: EnvSpec, seed: int = 0) -> jax.Array:
    key = jax.random.key(seed)
    if spec.obs_dtype == "uint8":
        return jax.random.randint(key, (BATCH, *spec.obs_shape), 0, 256).astype(jnp.uint8)
    return jax.random.normal(key, (BATCH, *spec.obs_shape))


def _init_apply(net, obs):
    params = net.init(jax.random.key(1), obs)
    return params, net.apply(params, obs)


def _top_level(params) -> set[str]:
    return set(params["params"].keys())


# --------------------------------------------------------------------------------------------
# orthogonal init


def _gram(w: np.ndarray) -> np.ndarray:
    w = w.reshape(-1, w.shape[-1])
    return w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T


@pytest.mark.parametrize("shape", [(6, 6), (3, 8), (8, 3), (256, 64), (3, 3, 4, 8)],
                         ids=["square", "wide", "tall", "dense", "conv"])
def test_orthogonal_gives_orthonormal_rows_or_columns(shape):
    w = np.asarray(orthogonal()(jax.random.key(0), shape))
    assert w.shape == shape
    gram = _gram(w)
    np.testing.assert_allclose(gram, np.eye(gram.shape[0]), atol=1e-5)


def test_orthogonal_scale_multiplies_the_matrix():
    w = np.asarray(orthogonal(np.sqrt(2.0))(jax.random.key(0), (5, 5)))
    np.testing.assert_allclose(_gram(w), 2.0 * np.eye(5), atol=1e-5)


def test_orthogonal_equals_sign_fixed_qr_of_the_same_normal_draw():
    key, shape = jax.random.key(3), (7, 4)
    a = np.asarray(jax.random.normal(key, shape), np.float64)
    q, r = np.linalg.qr(a)
    expected = q * np.sign(np.diag(r))
    np.testing.assert_allclose(np.asarray(orthogonal()(key, shape)), expected, atol=1e-5)


def test_orthogonal_rejects_vectors():
    with pytest.raises(ValueError, match="rank >= 2"):
        orthogonal()(jax.random.key(0), (4,))


@pytest.mark.timeout(60)
def test_init_inside_vmap_over_keys_completes():
    net = make_actor_critic(DISCRETE, SMALL)
    obs = _obs(DISCRETE)
    keys = jax.random.split(jax.random.key(0), 4)
    params = jax.jit(jax.vmap(lambda k: net.init(k, obs)))(keys)
    kernels = np.asarray(params["params"]["policy_torso"]["Dense_1"]["kernel"])
    assert kernels.shape == (4, 16, 16)
    for w in kernels:
        np.testing.assert_allclose(w.T @ w, 2.0 * np.eye(16), atol=1e-5)
    assert not np.allclose(kernels[0], kernels[1])


# --------------------------------------------------------------------------------------------
# torsos


def test_mlp_flattens_non_batch_dims():
    x = jnp.ones((BATCH, 3, 4))
    params, out = _init_apply(MLP((8,), "relu"), x)
    assert out.shape == (BATCH, 8)
    assert params["params"]["Dense_0"]["kernel"].shape == (12, 8)


def test_mlp_unknown_activation_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown activation 'sigmoid'"):
        MLP((8,), "sigmoid").init(jax.random.key(0), jnp.ones((1, 4)))


def test_make_torso_picks_cnn_for_images_and_mlp_otherwise():
    assert isinstance(make_torso(IMAGE, SMALL_CNN), NatureCNN)
    assert isinstance(make_torso(EnvSpec(obs_shape=(3, 4), num_actions=2), SMALL), MLP)
    assert isinstance(make_torso(DISCRETE, SMALL), MLP)


def test_cnn_defaults_to_nature_stack():
    x = jnp.zeros((1, 84, 84, 4), jnp.uint8)
    shapes = jax.eval_shape(lambda: NatureCNN(hiddens=(512,)).init(jax.random.key(0), x))
    conv = shapes["params"]
    assert conv["Conv_0"]["kernel"].shape == (8, 8, 4, 32)
    assert conv["Conv_1"]["kernel"].shape == (4, 4, 32, 64)
    assert conv["Conv_2"]["kernel"].shape == (3, 3, 64, 64)
    assert conv["fc"]["Dense_0"]["kernel"].shape == (7 * 7 * 64, 512)


def test_cnn_scales_uint8_images_to_unit_range():
    cnn = NatureCNN(SMALL_CONV, "relu", (8,))
    images = _obs(IMAGE)
    params, out_uint8 = _init_apply(cnn, images)
    out_float = cnn.apply(params, images.astype(jnp.float32) / 255.0)
    np.testing.assert_allclose(out_uint8, out_float, rtol=1e-5, atol=1e-6)


def test_cnn_filters_that_shrink_the_image_away_are_a_config_error():
    cnn = NatureCNN(((4, (8, 8), 4), (8, (8, 8), 4)), "relu", (8,))
    with pytest.raises(ConfigError, match="conv_filters"):
        cnn.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))


# --------------------------------------------------------------------------------------------
# actor-critic


@pytest.mark.parametrize("spec", [DISCRETE, EnvSpec(obs_shape=(3, 4), num_actions=3), IMAGE],
                         ids=["box", "rank2_box", "image"])
def test_actor_critic_discrete_outputs_logits_and_values(spec):
    model = SMALL_CNN if len(spec.obs_shape) == 3 else SMALL
    _, (logits, value) = _init_apply(make_actor_critic(spec, model), _obs(spec))
    assert logits.shape == (BATCH, spec.num_actions)
    assert value.shape == (BATCH,)
    # Policy init scale 0.01 keeps the first policy close to uniform.
    assert float(jnp.abs(logits).max()) < 0.5


@pytest.mark.parametrize("free_log_std", [False, True])
def test_actor_critic_continuous_outputs_mean_and_log_std(free_log_std):
    model = ModelConfig(fcnet_hiddens=(16,), free_log_std=free_log_std)
    params, ((mean, log_std), value) = _init_apply(make_actor_critic(CONTINUOUS, model),
                                                   _obs(CONTINUOUS))
    assert mean.shape == log_std.shape == (BATCH, 2)
    assert value.shape == (BATCH,)
    head = params["params"]["policy_head"]
    if free_log_std:
        assert head["log_std"].shape == (2,)
        np.testing.assert_array_equal(log_std, np.zeros((BATCH, 2)))
    else:
        assert set(head) == {"mean", "log_std"}
        assert head["log_std"]["kernel"].shape == (16, 2)


def test_free_log_std_is_learned_and_state_independent():
    net = make_actor_critic(CONTINUOUS, ModelConfig(fcnet_hiddens=(16,), free_log_std=True))
    obs = _obs(CONTINUOUS)
    params = net.init(jax.random.key(0), obs)
    params["params"]["policy_head"]["log_std"] = jnp.array([-1.0, 0.5])
    (_, log_std), _ = net.apply(params, obs)
    np.testing.assert_array_equal(log_std, np.tile([-1.0, 0.5], (BATCH, 1)))


def test_shared_torso_has_one_torso_and_separate_has_two():
    obs = _obs(DISCRETE)
    shared, _ = _init_apply(make_actor_critic(DISCRETE, ModelConfig(fcnet_hiddens=(16,),
                                                                    vf_share_layers=True)), obs)
    separate, _ = _init_apply(make_actor_critic(DISCRETE, ModelConfig(fcnet_hiddens=(16,))), obs)
    assert _top_level(shared) == {"torso", "policy_head", "value_head"}
    assert _top_level(separate) == {"policy_torso", "value_torso", "policy_head", "value_head"}
    assert count_params(separate) - count_params(shared) == 4 * 16 + 16


# --------------------------------------------------------------------------------------------
# Q networks


@pytest.mark.parametrize("spec", [DISCRETE, IMAGE], ids=["box", "image"])
@pytest.mark.parametrize("dueling", [False, True])
def test_q_network_outputs_one_value_per_action(spec, dueling):
    model = SMALL_CNN if len(spec.obs_shape) == 3 else SMALL
    net = make_q_network(spec, model, dueling=dueling, hiddens=(8,))
    params, q = _init_apply(net, _obs(spec))
    assert q.shape == (BATCH, spec.num_actions)
    streams = {"value_out", "advantage_out"} if dueling else {"q_out"}
    assert streams <= set(params["params"]["q_head"])


def test_dueling_q_is_value_plus_mean_centred_advantages():
    net = make_q_network(DISCRETE, SMALL, dueling=True, hiddens=(8,))
    obs = _obs(DISCRETE)
    params = net.init(jax.random.key(0), obs)
    q, state = net.apply(params, obs, mutable=["intermediates"])
    value = state["intermediates"]["q_head"]["value"][0]
    advantages = state["intermediates"]["q_head"]["advantages"][0]
    assert value.shape == (BATCH,)
    expected = value[:, None] + advantages - advantages.mean(axis=-1, keepdims=True)
    np.testing.assert_allclose(q, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose((q - value[:, None]).mean(axis=-1), np.zeros(BATCH), atol=1e-6)


def test_model_dueling_overrides_the_dueling_argument():
    obs = _obs(DISCRETE)
    off = make_q_network(DISCRETE, ModelConfig(fcnet_hiddens=(8,), dueling=False), dueling=True)
    on = make_q_network(DISCRETE, ModelConfig(fcnet_hiddens=(8,), dueling=True), dueling=False)
    assert "q_out" in _init_apply(off, obs)[0]["params"]["q_head"]
    assert "value_out" in _init_apply(on, obs)[0]["params"]["q_head"]


def test_q_network_on_continuous_actions_is_a_config_error():
    with pytest.raises(ConfigError, match="Q networks need a discrete action space"):
        make_q_network(CONTINUOUS, SMALL)


# --------------------------------------------------------------------------------------------
# distributions and summaries


def test_make_distribution_matches_the_action_space():
    dists = pytest.importorskip("jrl.networks.distributions")
    logits = jnp.zeros((BATCH, 3))
    assert isinstance(make_distribution(DISCRETE, logits), dists.Categorical)
    mean_log_std = (jnp.zeros((BATCH, 2)), jnp.zeros((BATCH, 2)))
    assert isinstance(make_distribution(CONTINUOUS, mean_log_std), dists.DiagGaussian)


def test_param_summary_lists_paths_and_total_count():
    params = make_q_network(DISCRETE, SMALL, hiddens=(8,)).init(jax.random.key(0),
                                                                _obs(DISCRETE))
    total = count_params(params)
    assert total == sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params))
    summary = param_summary(params)
    assert f"{total:,}" in summary.splitlines()[-1]
    assert "params/torso/Dense_0/kernel" in summary
    assert "(4, 16)" in summary
