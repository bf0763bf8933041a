"""Action distributions against closed forms computed with ``math``."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrl.networks.distributions import Categorical, DiagGaussian

P = [0.2, 0.3, 0.5]
Q = [0.5, 0.25, 0.25]


def _logits(probs, shift=0.0):
    # A shift checks that logits need not be normalized.
    return jnp.log(jnp.array(probs)) + shift


# ---------------------------------------------------------------- Categorical


def test_categorical_probs_and_log_prob_by_hand():
    dist = Categorical(_logits(P, shift=3.0))
    np.testing.assert_allclose(dist.probs, P, rtol=1e-6)
    np.testing.assert_allclose(dist.log_prob(jnp.int32(1)), math.log(0.3), rtol=1e-6)


def test_categorical_batched_log_prob_picks_each_rows_action():
    dist = Categorical(jnp.stack([_logits(P), _logits(Q)]))
    np.testing.assert_allclose(
        dist.log_prob(jnp.array([2, 0])), [math.log(0.5), math.log(0.5)], rtol=1e-6
    )


def test_categorical_entropy_by_hand():
    # -(0.2 ln 0.2 + 0.3 ln 0.3 + 0.5 ln 0.5) = 1.0297
    expected = -sum(p * math.log(p) for p in P)
    np.testing.assert_allclose(Categorical(_logits(P, -1.0)).entropy(), expected, rtol=1e-6)


def test_categorical_kl_by_hand():
    # 0.2 ln(0.2/0.5) + 0.3 ln(0.3/0.25) + 0.5 ln(0.5/0.25) = 0.2103
    expected = sum(p * math.log(p / q) for p, q in zip(P, Q, strict=True))
    kl = Categorical(_logits(P)).kl(Categorical(_logits(Q, 2.0)))
    np.testing.assert_allclose(kl, expected, rtol=1e-5)


def test_categorical_kl_with_itself_is_zero():
    dist = Categorical(jax.random.normal(jax.random.PRNGKey(0), (4, 5)))
    np.testing.assert_allclose(dist.kl(dist), np.zeros(4), atol=1e-6)


def test_categorical_mode_is_argmax():
    dist = Categorical(jnp.array([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]]))
    mode = dist.mode()
    np.testing.assert_array_equal(mode, [1, 0])
    assert mode.dtype == jnp.int32


def test_categorical_sample_frequencies_match_probs():
    dist = Categorical(_logits(P))
    keys = jax.random.split(jax.random.PRNGKey(42), 20000)
    samples = jax.jit(jax.vmap(dist.sample))(keys)
    assert samples.dtype == jnp.int32
    freqs = np.bincount(np.asarray(samples), minlength=3) / samples.size
    np.testing.assert_allclose(freqs, P, atol=0.02)


def test_categorical_samples_batch_shape():
    dist = Categorical(jnp.zeros((4, 2, 6)))
    assert jax.jit(dist.sample)(jax.random.PRNGKey(0)).shape == (4, 2)


# ---------------------------------------------------------------- DiagGaussian


def _normal_logpdf(x, mu, sigma):
    return -0.5 * ((x - mu) / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)


def test_gaussian_log_prob_matches_normal_density():
    mean, sigma, x = [0.5, -1.0], [1.0, 2.0], [1.0, 0.0]
    dist = DiagGaussian(jnp.array(mean), jnp.log(jnp.array(sigma)))
    expected = sum(_normal_logpdf(*args) for args in zip(x, mean, sigma, strict=True))
    np.testing.assert_allclose(dist.log_prob(jnp.array(x)), expected, rtol=1e-6)


def test_gaussian_broadcasts_log_std_over_batch():
    mean = [[0.0, 0.0], [1.0, -1.0], [2.0, 3.0]]
    sigma = [0.5, 3.0]
    x = [[0.1, 0.2], [1.0, 1.0], [0.0, 0.0]]
    dist = DiagGaussian(jnp.array(mean), jnp.log(jnp.array(sigma)))
    expected = [
        sum(_normal_logpdf(x[i][d], mean[i][d], sigma[d]) for d in range(2)) for i in range(3)
    ]
    np.testing.assert_allclose(dist.log_prob(jnp.array(x)), expected, rtol=1e-5)
    # Entropy of N(mu, s^2) is 0.5 ln(2 pi e s^2), summed over dims.
    entropy = sum(0.5 * math.log(2 * math.pi * math.e * s**2) for s in sigma)
    np.testing.assert_allclose(dist.entropy(), [entropy] * 3, rtol=1e-6)
    assert jax.jit(dist.sample)(jax.random.PRNGKey(0)).shape == (3, 2)


def test_gaussian_kl_matches_closed_form():
    mu_p, s_p, mu_q, s_q = [0.0, 1.0], [1.0, 0.5], [1.0, -1.0], [2.0, 1.5]
    p = DiagGaussian(jnp.array(mu_p), jnp.log(jnp.array(s_p)))
    q = DiagGaussian(jnp.array(mu_q), jnp.log(jnp.array(s_q)))
    # KL(N(a, s^2) || N(b, t^2)) = ln(t/s) + (s^2 + (a-b)^2) / (2 t^2) - 1/2
    expected = sum(
        math.log(t / s) + (s**2 + (a - b) ** 2) / (2 * t**2) - 0.5
        for a, s, b, t in zip(mu_p, s_p, mu_q, s_q, strict=True)
    )
    np.testing.assert_allclose(p.kl(q), expected, rtol=1e-6)
    np.testing.assert_allclose(p.kl(p), 0.0, atol=1e-7)


def test_gaussian_mode_is_mean():
    mean = jnp.array([[0.3, -0.7]])
    np.testing.assert_array_equal(DiagGaussian(mean, jnp.zeros(2)).mode(), mean)


def test_gaussian_sample_moments_match_parameters():
    dist = DiagGaussian(jnp.array([1.0, -2.0]), jnp.log(jnp.array([0.5, 2.0])))
    keys = jax.random.split(jax.random.PRNGKey(7), 20000)
    samples = np.asarray(jax.jit(jax.vmap(dist.sample))(keys))
    np.testing.assert_allclose(samples.mean(0), [1.0, -2.0], atol=0.05)
    np.testing.assert_allclose(samples.std(0), [0.5, 2.0], rtol=0.03)


# ---------------------------------------------------------------- both


@pytest.mark.parametrize(
    "make",
    [
        lambda x: Categorical(x),
        lambda x: DiagGaussian(x, jnp.zeros(x.shape[-1])),
    ],
    ids=["categorical", "gaussian"],
)
def test_distributions_are_pytrees_returned_from_jit(make):
    x = jnp.array([[0.1, 0.2, 0.3]])
    dist = jax.jit(make)(x)
    assert type(dist) is type(make(x))
    np.testing.assert_allclose(dist.entropy(), make(x).entropy(), rtol=1e-6)
    doubled = jax.tree_util.tree_map(lambda a: 2 * a, dist)
    assert type(doubled) is type(dist)
