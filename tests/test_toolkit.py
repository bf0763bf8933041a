"""The learner toolkit (``jrl.algorithms.toolkit``) by hand: optimizer builder, gradient and SGD
steps, the epochs x minibatches loop, batch statistics and the actor-critic functions. Device
averaging is checked with ``jax.vmap(..., axis_name=...)`` over two halves of a batch."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jrl.algorithms import toolkit
from jrl.errors import ConfigError
from jrl.networks.distributions import Categorical
from jrl.types import EnvSpec, NetworkPolicy, Transition

AXIS = "devices"


def _halves(x):
    """``x [N, ...]`` as two device shards ``[2, N / 2, ...]``."""
    return x.reshape((2, x.shape[0] // 2, *x.shape[1:]))


# ---------------------------------------------------------------- make_optimizer


def _first_update(optimizer, grads):
    params = jnp.zeros_like(grads)
    return optimizer.update(grads, optimizer.init(params), params)[0]


def test_make_optimizer_without_clipping_is_the_bare_optax_optimizer():
    grads = jnp.array([0.5, -2.0])
    adam = toolkit.make_optimizer(0.1, eps=1e-5)
    # Same state structure (checkpoints stay compatible) and the same step.
    assert (jax.tree.structure(adam.init(grads))
            == jax.tree.structure(optax.adam(0.1, eps=1e-5).init(grads)))
    np.testing.assert_allclose(_first_update(adam, grads),
                               _first_update(optax.adam(0.1, eps=1e-5), grads))


def test_make_optimizer_maps_rmsprop_settings():
    grads = jnp.array([0.5, -2.0])
    rmsprop = toolkit.make_optimizer(0.1, optimizer="rmsprop", eps=0.1, decay=0.99, momentum=0.0)
    # First step (optax's RMSProp adds eps under the root): -lr * g / sqrt((1 - decay) g^2 + eps),
    # with no momentum (0 means none).
    expected = -0.1 * grads / jnp.sqrt(0.01 * jnp.square(grads) + 0.1)
    np.testing.assert_allclose(_first_update(rmsprop, grads), expected, rtol=1e-6)


def test_make_optimizer_clips_the_global_norm_before_the_optimizer():
    grads = jnp.array([3.0, 4.0])  # global norm 5
    sgd_like = toolkit.make_optimizer(0.1, optimizer="rmsprop", decay=0.0, eps=1e-3,
                                      grad_clip=1.0)
    # decay 0: the step is -lr * g / sqrt(g^2 + eps) of the clipped g = (0.6, 0.8).
    clipped = grads / 5.0
    np.testing.assert_allclose(_first_update(sgd_like, grads),
                               -0.1 * clipped / jnp.sqrt(jnp.square(clipped) + 1e-3), rtol=1e-6)


def test_make_optimizer_rejects_unknown_optimizers():
    with pytest.raises(ConfigError, match="unknown optimizer 'sgd'"):
        toolkit.make_optimizer(0.1, optimizer="sgd")


# ---------------------------------------------------------------- gradient_step / sgd_step


def _quadratic(params, x):
    """``0.5 * mean((params - x)^2)``: the gradient is ``params - mean(x)``."""
    return 0.5 * jnp.mean(jnp.square(params - x))


def test_gradient_step_applies_the_gradient_with_the_optimizer():
    step = toolkit.gradient_step(_quadratic, optax.sgd(0.5))
    params, _, loss, grads = step(jnp.float32(1.0), optax.sgd(0.5).init(1.0),
                                  jnp.array([2.0, 4.0]))
    # grad = 1 - 3 = -2; loss = 0.5 * mean(1, 9) = 2.5; params = 1 - 0.5 * -2 = 2
    np.testing.assert_allclose(grads, -2.0)
    np.testing.assert_allclose(loss, 2.5)
    np.testing.assert_allclose(params, 2.0)


def test_gradient_step_averages_gradients_over_devices():
    x = jnp.array([2.0, 4.0, 10.0, 0.0])
    one = toolkit.gradient_step(_quadratic, optax.sgd(0.5))
    two = toolkit.gradient_step(_quadratic, optax.sgd(0.5), axis_name=AXIS)
    state = optax.sgd(0.5).init(jnp.float32(1.0))
    expected, _, _, _ = one(jnp.float32(1.0), state, x)
    params, _, _, _ = jax.vmap(two, in_axes=(None, None, 0), axis_name=AXIS)(
        jnp.float32(1.0), state, _halves(x))
    np.testing.assert_allclose(params, [expected, expected], rtol=1e-6)


def test_sgd_step_reports_the_loss_stats_and_the_gradient_norm():
    def loss_fn(params, minibatch):
        loss = _quadratic(params, minibatch)
        return loss, {"loss": loss}

    step = toolkit.sgd_step(loss_fn, optax.sgd(0.5))
    params = jnp.array([1.0, 1.0])
    (params, _), stats = step((params, optax.sgd(0.5).init(params)), jnp.array([4.0, 5.0]))
    # mean over 2 coordinates: grad = (params - x) / 2 = (-1.5, -2)
    np.testing.assert_allclose(stats["grad_gnorm"], 2.5)
    np.testing.assert_allclose(stats["loss"], 0.5 * (9.0 + 16.0) / 2)
    np.testing.assert_allclose(params, [1.75, 2.0])


# ---------------------------------------------------------------- sgd_epochs


def _visit_counter(n):
    """A step whose carry counts how often each sample index was in a minibatch."""

    def step(counts, minibatch):
        return counts.at[minibatch["index"]].add(1), {"size": jnp.float32(
            minibatch["index"].shape[0])}

    return step, jnp.zeros(n, jnp.int32), {"index": jnp.arange(n)}


@pytest.mark.parametrize("jit", [False, True], ids=["nojit", "jit"])
def test_sgd_epochs_visits_every_sample_once_per_epoch(jit):
    step, counts, batch = _visit_counter(12)

    def run(counts, batch, key):
        return toolkit.sgd_epochs(step, counts, batch, key, num_epochs=3, minibatch_size=4)

    counts, stats, key = (jax.jit(run) if jit else run)(counts, batch, jax.random.PRNGKey(0))
    np.testing.assert_array_equal(counts, 3)
    np.testing.assert_allclose(stats["size"], 4.0)


def test_sgd_epochs_leaves_the_remainder_out_of_each_epoch():
    step, counts, batch = _visit_counter(10)
    counts, _, _ = toolkit.sgd_epochs(step, counts, batch, jax.random.PRNGKey(0), num_epochs=5,
                                      minibatch_size=4)
    # Two minibatches of 4 per epoch: 8 of the 10 samples, a fresh permutation each time.
    assert int(counts.sum()) == 5 * 8
    assert int(counts.max()) <= 5
    assert int(counts.min()) < 5


def test_sgd_epochs_shuffles_with_the_key_and_returns_a_new_one():
    def order(counts, minibatch):
        return counts, {"first": minibatch["index"][0].astype(jnp.float32)}

    batch = {"index": jnp.arange(64)}
    key = jax.random.PRNGKey(1)
    _, a, key_a = toolkit.sgd_epochs(order, 0, batch, key, num_epochs=2, minibatch_size=8)
    _, b, key_b = toolkit.sgd_epochs(order, 0, batch, key, num_epochs=2, minibatch_size=8)
    _, c, _ = toolkit.sgd_epochs(order, 0, batch, key_a, num_epochs=2, minibatch_size=8)
    np.testing.assert_array_equal(key_a, key_b)
    assert not np.array_equal(key_a, key)
    np.testing.assert_allclose(a["first"], b["first"])  # the same key, the same order
    assert float(a["first"]) != float(c["first"])  # the next key, another order


def test_sgd_epochs_without_minibatches_steps_on_the_whole_batch_in_order():
    def step(carry, batch):
        # Records that each step sees the batch as it is (time order kept).
        return carry + 1, {"first": batch[0], "size": jnp.float32(batch.shape[0])}

    key = jax.random.PRNGKey(0)
    steps, stats, new_key = toolkit.sgd_epochs(step, 0, jnp.arange(5.0) + 7.0, key,
                                               num_epochs=3)
    assert int(steps) == 3
    np.testing.assert_allclose(stats["first"], 7.0)
    np.testing.assert_allclose(stats["size"], 5.0)
    np.testing.assert_array_equal(new_key, key)  # nothing drawn


def test_sgd_epochs_minibatch_larger_than_the_batch_is_the_whole_batch():
    step, counts, batch = _visit_counter(6)
    counts, stats, _ = toolkit.sgd_epochs(step, counts, batch, jax.random.PRNGKey(0),
                                          num_epochs=2, minibatch_size=100)
    np.testing.assert_array_equal(counts, 2)
    np.testing.assert_allclose(stats["size"], 6.0)


# ---------------------------------------------------------------- batch statistics


@pytest.mark.parametrize("kl, expected", [
    (0.03, 0.3),     # above 2 * target: x 1.5
    (0.004, 0.1),    # below target / 2: x 0.5
    (0.01, 0.2),     # in between: unchanged
    (0.02, 0.2),     # exactly 2 * target is not above it
    (0.005, 0.2),    # exactly target / 2 is not below it
])
def test_adaptive_kl_coeff_by_hand(kl, expected):
    np.testing.assert_allclose(toolkit.adaptive_kl_coeff(jnp.float32(0.2), jnp.float32(kl), 0.01),
                               expected, rtol=1e-6)


def test_normalize_advantages_standardizes_over_the_batch():
    advantages = jnp.array([1.0, 2.0, 3.0, 6.0])
    # mean 3, population std sqrt((4 + 1 + 0 + 9) / 4) = sqrt(3.5)
    np.testing.assert_allclose(toolkit.normalize_advantages(advantages),
                               (advantages - 3.0) / np.sqrt(3.5), rtol=1e-5)


def test_normalize_advantages_uses_the_statistics_of_every_device():
    advantages = jnp.array([1.0, 2.0, 3.0, 6.0])
    sharded = jax.vmap(lambda a: toolkit.normalize_advantages(a, AXIS), axis_name=AXIS)(
        _halves(advantages))
    np.testing.assert_allclose(sharded.reshape(-1), toolkit.normalize_advantages(advantages),
                               rtol=1e-5)


def test_explained_variance_by_hand():
    targets = jnp.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(toolkit.explained_variance(targets, targets), 1.0)
    # Predicting the mean explains nothing.
    np.testing.assert_allclose(toolkit.explained_variance(targets, jnp.full(4, 2.5)), 0.0,
                               atol=1e-6)
    # residuals (0, 0, 0, -1): variance 0.25 - 0.0625 = 0.1875; Var(targets) = 1.25
    np.testing.assert_allclose(
        toolkit.explained_variance(targets, jnp.array([1.0, 2.0, 3.0, 5.0])), 1.0 - 0.15,
        rtol=1e-5)


def test_explained_variance_covers_the_batch_of_every_device():
    targets = jnp.array([1.0, 2.0, 3.0, 4.0])
    values = jnp.array([1.0, 2.0, 3.0, 5.0])
    sharded = jax.vmap(lambda t, v: toolkit.explained_variance(t, v, AXIS), axis_name=AXIS)(
        _halves(targets), _halves(values))
    np.testing.assert_allclose(sharded, [0.85, 0.85], rtol=1e-5)


# ---------------------------------------------------------------- actor-critic functions

SPEC = EnvSpec(obs_shape=(3,), action_kind="discrete", num_actions=4)


class _FixedActorCritic:
    """A stand-in network: logits ``obs @ W``, value ``sum(obs)``."""

    def init(self, key, obs):
        return {"w": jax.random.normal(key, (obs.shape[-1], SPEC.num_actions))}

    def apply(self, params, obs):
        return obs @ params["w"], jnp.sum(obs, axis=-1)


def _fns():
    return toolkit.make_actor_critic_fns(SPEC, None, "NoFilter", _FixedActorCritic())


def test_actor_critic_act_samples_when_exploring_and_takes_the_mode_otherwise():
    fns = _fns()
    state = toolkit.init_learner_state(jax.random.PRNGKey(0), fns.init_params,
                                       optax.adam(1e-3), fns.obs_filter, SPEC.obs_shape)
    policy = toolkit.network_policy(state)
    assert isinstance(policy, NetworkPolicy)
    obs = jax.random.normal(jax.random.PRNGKey(1), (64, 3))
    logits = obs @ state.params["w"]
    greedy, extras = fns.act(policy, obs, jax.random.PRNGKey(2), False)
    np.testing.assert_array_equal(greedy, jnp.argmax(logits, axis=-1))
    np.testing.assert_allclose(extras["action_logp"], Categorical(logits).log_prob(greedy),
                               rtol=1e-5)
    np.testing.assert_allclose(extras["vf_preds"], obs.sum(-1), rtol=1e-6)
    sampled, extras = fns.act(policy, obs, jax.random.PRNGKey(2), True)
    np.testing.assert_array_equal(sampled, Categorical(logits).sample(jax.random.PRNGKey(2)))
    np.testing.assert_allclose(extras["action_logp"], Categorical(logits).log_prob(sampled),
                               rtol=1e-5)


def test_actor_critic_evaluate_gives_the_values_of_obs_and_next_obs():
    fns = _fns()
    params = fns.init_params(jax.random.PRNGKey(0))
    T, B = 3, 2
    obs = jax.random.normal(jax.random.PRNGKey(1), (T, B, 3))
    next_obs = obs + 1.0
    flags = jnp.zeros((T, B), bool)
    batch = Transition(obs=obs, action=jnp.zeros((T, B), jnp.int32), reward=jnp.zeros((T, B)),
                       terminated=flags, truncated=flags, next_obs=next_obs,
                       behaviour_logp=jnp.zeros((T, B)))
    state = toolkit.init_learner_state(jax.random.PRNGKey(0), fns.init_params, optax.adam(1e-3),
                                       fns.obs_filter, SPEC.obs_shape)
    dist, v_t, v_tp1 = fns.evaluate(params, state.obs_filter, batch)
    np.testing.assert_allclose(v_t, obs.sum(-1), rtol=1e-6)
    np.testing.assert_allclose(v_tp1, next_obs.sum(-1), rtol=1e-6)
    np.testing.assert_allclose(dist.logits, obs.reshape(T * B, 3) @ params["w"], rtol=1e-6)


def test_learner_state_starts_at_zero_and_advance_counts_one_update():
    fns = _fns()
    state = toolkit.init_learner_state(jax.random.PRNGKey(0), fns.init_params, optax.adam(1e-3),
                                       fns.obs_filter, SPEC.obs_shape)
    assert int(state.num_updates) == 0 and int(state.env_steps) == 0
    assert state.env_steps.dtype == jnp.int32
    advanced = toolkit.advance_learner_state(state, obs_filter=state.obs_filter, env_steps=64,
                                             key=jnp.zeros_like(state.key))
    assert int(advanced.num_updates) == 1 and int(advanced.env_steps) == 64
    assert advanced.env_steps.dtype == jnp.int32
    np.testing.assert_array_equal(advanced.key, 0)
    assert advanced.params is state.params
