"""V-trace against the paper's sum form (a plain Python loop), hand cases, GAE and rlax."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rlax

from jrl.ops.returns import discounted_returns, gae, vtrace


@pytest.fixture(params=["jit", "nojit"])
def variant(request):
    return jax.jit if request.param == "jit" else (lambda fn: fn)


def _clip(x, threshold):
    return x if threshold is None else min(threshold, x)


def vtrace_by_the_paper(v, v_next, r, term, trunc, rho, gamma, lambda_, rho_bar, pg_rho_bar,
                        c_bar):
    """Eq. 1 of Espeholt et al. (2018) as a sum, one stream at a time:
    ``v_s = V(x_s) + sum_{t>=s} gamma^(t-s) (prod_{i<t} c_i) delta_t V`` over the steps of the
    episode left in the fragment, ``c_i = lambda * min(c_bar, rho_i)``."""
    T, B = r.shape
    vs, pg = np.zeros((T, B)), np.zeros((T, B))
    for b in range(B):
        for s in range(T):
            total, coef = v[s, b], 1.0
            for t in range(s, T):
                bootstrap = 0.0 if term[t, b] else gamma * v_next[t, b]
                total += coef * _clip(rho[t, b], rho_bar) * (r[t, b] + bootstrap - v[t, b])
                if term[t, b] or trunc[t, b]:
                    break
                coef *= gamma * lambda_ * _clip(rho[t, b], c_bar)
            vs[s, b] = total
        for s in range(T):
            done = term[s, b] or trunc[s, b]
            next_target = vs[s + 1, b] if s + 1 < T and not done else v_next[s, b]
            bootstrap = 0.0 if term[s, b] else gamma * next_target
            pg[s, b] = _clip(rho[s, b], pg_rho_bar) * (r[s, b] + bootstrap - v[s, b])
    return vs, pg


def random_fragment(seed, T=7, B=3, episode_ends=True):
    """Values of consecutive observations, with the true final observation's value at ends."""
    rng = np.random.default_rng(seed)
    r = rng.normal(size=(T, B))
    v = rng.normal(size=(T, B))
    term = np.zeros((T, B), bool)
    trunc = np.zeros((T, B), bool)
    if episode_ends:
        ends = rng.random((T, B))
        term = ends < 0.15
        trunc = (ends >= 0.15) & (ends < 0.3)
    v_next = np.concatenate([v[1:], rng.normal(size=(1, B))])
    done = term | trunc
    v_next[done] = rng.normal(size=done.sum())  # final observation of the ending episode
    log_rho = rng.normal(scale=0.7, size=(T, B))
    return v, v_next, r, term, trunc, log_rho


def _jnp(*xs):
    return [jnp.asarray(x, jnp.float32) if x.dtype != bool else jnp.asarray(x) for x in xs]


@pytest.mark.parametrize("episode_ends", [True, False])
@pytest.mark.parametrize("lambda_", [1.0, 0.9])
@pytest.mark.parametrize("thresholds", [(1.0, 1.0, 1.0), (0.5, 2.0, 0.8), (None, None, None)],
                         ids=["default", "tight", "unclipped"])
@pytest.mark.parametrize("seed", [0, 1])
def test_vtrace_matches_the_papers_sum_form(variant, seed, thresholds, lambda_, episode_ends):
    v, v_next, r, term, trunc, log_rho = random_fragment(seed, episode_ends=episode_ends)
    rho_bar, pg_rho_bar, c_bar = thresholds
    gamma = 0.95
    expected_vs, expected_pg = vtrace_by_the_paper(
        v, v_next, r, term, trunc, np.exp(log_rho), gamma, lambda_, rho_bar, pg_rho_bar, c_bar)
    out = variant(lambda *a: vtrace(*a, gamma, lambda_, rho_bar, pg_rho_bar, c_bar))(
        *_jnp(v, v_next, r, term, trunc, log_rho))
    np.testing.assert_allclose(out.vs, expected_vs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.pg_advantages, expected_pg, rtol=1e-5, atol=1e-5)


def test_vtrace_bootstraps_on_truncation_but_not_on_termination(variant):
    v = jnp.array([[1.0], [2.0]])
    v_next = jnp.array([[10.0], [3.0]])  # step 0 ends an episode whose final obs is worth 10
    r = jnp.array([[1.0], [0.0]])
    no = jnp.zeros((2, 1), bool)
    ends = jnp.array([[True], [False]])
    zero = jnp.zeros((2, 1))
    truncated = variant(lambda *a: vtrace(*a, 0.5))(v, v_next, r, no, ends, zero)
    terminated = variant(lambda *a: vtrace(*a, 0.5))(v, v_next, r, ends, no, zero)
    # truncated: vs_0 = 1 + 0.5 * 10, no trace into step 1; terminated: vs_0 = r_0 = 1
    np.testing.assert_allclose(truncated.vs[:, 0], [6.0, 1.5])
    np.testing.assert_allclose(terminated.vs[:, 0], [1.0, 1.5])
    np.testing.assert_allclose(truncated.pg_advantages[:, 0], [5.0, -0.5])
    np.testing.assert_allclose(terminated.pg_advantages[:, 0], [0.0, -0.5])


def test_vtrace_clips_importance_weights_by_hand(variant):
    v = jnp.array([[0.0], [0.0]])
    v_next = jnp.array([[0.0], [4.0]])
    r = jnp.array([[1.0], [1.0]])
    no = jnp.zeros((2, 1), bool)
    log_rho = jnp.log(jnp.array([[3.0], [0.5]]))
    out = variant(lambda *a: vtrace(*a, 1.0, 1.0, 2.0, 1.5, 0.8))(v, v_next, r, no, no, log_rho)
    # step 1: delta = min(2, 0.5) * (1 + 4 - 0) = 2.5; vs_1 = 2.5
    # step 0: delta = min(2, 3) * (1 + 0 - 0) = 2; c_0 = min(0.8, 3) = 0.8; vs_0 = 2 + 0.8 * 2.5
    np.testing.assert_allclose(out.vs[:, 0], [4.0, 2.5], rtol=1e-6)
    # pg_0 = min(1.5, 3) * (1 + vs_1) = 5.25; pg_1 = 0.5 * (1 + 4) = 2.5
    np.testing.assert_allclose(out.pg_advantages[:, 0], [5.25, 2.5], rtol=1e-6)


@pytest.mark.parametrize("lambda_", [1.0, 0.8])
def test_on_policy_vtrace_gives_lambda_returns(variant, lambda_):
    v, v_next, r, term, trunc, _ = random_fragment(3)
    v, v_next, r, term, trunc = _jnp(v, v_next, r, term, trunc)
    out = variant(lambda *a: vtrace(*a, 0.9, lambda_))(v, v_next, r, term, trunc,
                                                       jnp.zeros_like(r))
    advantages, targets = gae(r, v, v_next, term, trunc, 0.9, lambda_)
    np.testing.assert_allclose(out.vs, targets, rtol=1e-5, atol=1e-5)
    if lambda_ == 1.0:  # the pg advantage is the one-step TD error on vs, i.e. GAE(1)
        np.testing.assert_allclose(out.pg_advantages, advantages, rtol=1e-5, atol=1e-5)


def test_on_policy_vtrace_with_lambda_one_gives_n_step_returns(variant):
    v, v_next, r, *_ = random_fragment(4, episode_ends=False)
    v, v_next, r = _jnp(v, v_next, r)
    no = jnp.zeros(r.shape, bool)
    out = variant(lambda *a: vtrace(*a, 0.9))(v, v_next, r, no, no, jnp.zeros_like(r))
    expected = discounted_returns(r, jnp.full_like(r, 0.9), v_next[-1])
    np.testing.assert_allclose(out.vs, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("lambda_", [1.0, 0.7])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vtrace_matches_rlax(seed, lambda_):
    """rlax works on one stream with ``discount_t`` (0 at termination) and c_bar = 1."""
    v, v_next, r, term, _, log_rho = random_fragment(seed, T=9, B=1)
    trunc = np.zeros_like(term)
    v_next[:-1][~term[:-1]] = v[1:][~term[:-1]]
    gamma, rho_bar, pg_rho_bar = 0.97, 1.2, 0.9
    out = vtrace(*_jnp(v, v_next, r, term, trunc, log_rho), gamma, lambda_, rho_bar, pg_rho_bar,
                 1.0)
    discount = jnp.asarray(gamma * (1.0 - term[:, 0]), jnp.float32)
    args = (jnp.asarray(v[:, 0], jnp.float32), jnp.asarray(v_next[:, 0], jnp.float32),
            jnp.asarray(r[:, 0], jnp.float32), discount,
            jnp.asarray(np.exp(log_rho[:, 0]), jnp.float32))
    errors = rlax.vtrace(*args, lambda_=lambda_, clip_rho_threshold=rho_bar)
    np.testing.assert_allclose(out.vs[:, 0], errors + args[0], rtol=1e-5, atol=1e-5)
    if lambda_ == 1.0:  # rlax's pg bootstrap mixes in V(x_{s+1}) when lambda < 1
        rlax_out = rlax.vtrace_td_error_and_advantage(
            *args, lambda_=lambda_, clip_rho_threshold=rho_bar, clip_pg_rho_threshold=pg_rho_bar)
        np.testing.assert_allclose(out.pg_advantages[:, 0], rlax_out.pg_advantage, rtol=1e-5,
                                   atol=1e-5)


def test_vtrace_targets_carry_no_gradient():
    v, v_next, r, term, trunc, log_rho = _jnp(*random_fragment(5))

    def total(v, log_rho):
        out = vtrace(v, v_next, r, term, trunc, log_rho, 0.9)
        return out.vs.sum() + out.pg_advantages.sum()

    grads = jax.grad(total, argnums=(0, 1))(v, log_rho)
    assert all(math.isclose(float(jnp.abs(g).sum()), 0.0) for g in grads)
