"""PG, A2C and A3C: returns and advantages by hand, microbatch accumulation, the A3C plan."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrl import registry
from jrl.algorithms.a2c import a2c_targets, make_gradient_fns
from jrl.algorithms.pg import pg_returns
from jrl.types import EnvSpec, Transition

GAMMA = 0.5
R = [1.0, 2.0, 3.0, 4.0]
V_TP1 = [10.0, 20.0, 30.0, 40.0]
NO_END = [0, 0, 0, 0]
AT_1 = [0, 1, 0, 0]



@pytest.fixture(params=["jit", "nojit"])
def variant(request):
    """Runs a kernel under ``jax.jit`` or eagerly."""
    return jax.jit if request.param == "jit" else (lambda fn: fn)


def _f(x):
    return jnp.asarray(x, jnp.float32)


def _flags(x):
    return jnp.asarray(x, bool)


# ---------------------------------------------------------------- PG returns

@pytest.mark.parametrize("terminated, truncated", [(AT_1, NO_END), (NO_END, AT_1)])
def test_pg_returns_without_baseline_end_at_any_episode_end_and_the_fragment_end(
        variant, terminated, truncated):
    # G3 = 4 (fragment end, nothing to bootstrap from), G2 = 3 + .5 * 4 = 5, G1 = 2 (episode
    # ends), G0 = 1 + .5 * 2 = 2.
    returns = variant(pg_returns)(_f(R), _flags(terminated), _flags(truncated), GAMMA)
    np.testing.assert_allclose(returns, [2.0, 2.0, 5.0, 4.0])


def test_pg_returns_with_baseline_bootstrap_on_truncation_and_at_the_fragment_end(variant):
    # G3 = 4 + .5 * 40 = 24, G2 = 3 + .5 * 24 = 15, G1 = 2 + .5 * 20 = 12 (truncated:
    # bootstraps from its final observation's value), G0 = 1 + .5 * 12 = 7.
    returns = variant(pg_returns)(_f(R), _flags(NO_END), _flags(AT_1), GAMMA, _f(V_TP1))
    np.testing.assert_allclose(returns, [7.0, 12.0, 15.0, 24.0])


@pytest.mark.parametrize("truncated", [NO_END, AT_1])
def test_pg_returns_with_baseline_do_not_bootstrap_through_termination(variant, truncated):
    # G1 = 2 whether or not the terminated step is also flagged truncated.
    returns = variant(pg_returns)(_f(R), _flags(AT_1), _flags(truncated), GAMMA, _f(V_TP1))
    np.testing.assert_allclose(returns, [2.0, 2.0, 15.0, 24.0])


def _returns_loop(r, terminated, truncated, gamma, v_tp1=None):
    T, B = r.shape
    out = np.zeros_like(r)
    for b in range(B):
        g = 0.0 if v_tp1 is None else v_tp1[T - 1, b]
        for t in reversed(range(T)):
            if terminated[t, b]:
                g = r[t, b]
            elif truncated[t, b]:
                g = r[t, b] + (0.0 if v_tp1 is None else gamma * v_tp1[t, b])
            elif t == T - 1:
                g = r[t, b] + (0.0 if v_tp1 is None else gamma * v_tp1[t, b])
            else:
                g = r[t, b] + gamma * g
            out[t, b] = g
    return out


@pytest.mark.parametrize("baseline", [False, True])
def test_pg_returns_match_python_loop_on_random_data(baseline):
    rng = np.random.default_rng(3)
    r = rng.normal(size=(12, 5)).astype(np.float32)
    terminated = rng.random((12, 5)) < 0.15
    truncated = rng.random((12, 5)) < 0.15
    v_tp1 = rng.normal(size=(12, 5)).astype(np.float32) if baseline else None
    got = pg_returns(_f(r), terminated, truncated, 0.9, None if v_tp1 is None else _f(v_tp1))
    np.testing.assert_allclose(got, _returns_loop(r, terminated, truncated, 0.9, v_tp1),
                               rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- A2C targets

def _batch(r, terminated, truncated):
    r = _f(r)[:, None]
    zeros = jnp.zeros((r.shape[0], 1, 1))
    return Transition(obs=zeros, action=jnp.zeros(r.shape, jnp.int32), reward=r,
                      terminated=_flags(terminated)[:, None], truncated=_flags(truncated)[:, None],
                      next_obs=zeros, behaviour_logp=jnp.zeros_like(r))


def test_a2c_n_step_targets_by_hand_with_termination_and_truncation():
    # Values as a fragment has them: v_tp1[t] = v_t[t + 1] except across the episode boundary
    # after step 1 (v_tp1[1] = 20 is the final observation's value, v_t[2] = 7 the reset's).
    v_t = _f([5.0, 10.0, 7.0, 30.0])[:, None]
    v_tp1 = _f(V_TP1)[:, None]
    # Truncated at 1: targets as PG's bootstrapped returns above.
    adv, targets = a2c_targets(_batch(R, NO_END, AT_1), v_t, v_tp1, GAMMA, 1.0)
    np.testing.assert_allclose(targets[:, 0], [7.0, 12.0, 15.0, 24.0])
    np.testing.assert_allclose(adv[:, 0], [2.0, 2.0, 8.0, -6.0])
    # Terminated at 1: no bootstrap there.
    _, targets = a2c_targets(_batch(R, AT_1, NO_END), v_t, v_tp1, GAMMA, 1.0)
    np.testing.assert_allclose(targets[:, 0], [2.0, 2.0, 15.0, 24.0])


def test_a2c_gae_targets_by_hand():
    # lambda .5, gamma .5, no episode end. deltas: r + .5 v_tp1 - v_t = [1+5-5, 2+10-6,
    # 3+15-7, 4+20-8] = [1, 6, 11, 16]; A3 = 16, A2 = 11 + .25 * 16 = 15, A1 = 6 + .25 * 15 =
    # 9.75, A0 = 1 + .25 * 9.75 = 3.4375.
    v_t = _f([5.0, 6.0, 7.0, 8.0])[:, None]
    adv, targets = a2c_targets(_batch(R, NO_END, NO_END), v_t, _f(V_TP1)[:, None], GAMMA, 0.5)
    np.testing.assert_allclose(adv[:, 0], [3.4375, 9.75, 15.0, 16.0])
    np.testing.assert_allclose(targets, adv + v_t)


# ---------------------------------------------------------------- gradients

SPEC = EnvSpec(obs_shape=(3,), action_kind="discrete", num_actions=2)


def _random_batch(T=8, B=4, seed=0):
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(T, B, 3)).astype(np.float32)
    next_obs = np.concatenate([obs[1:], rng.normal(size=(1, B, 3)).astype(np.float32)])
    return Transition(obs=obs, action=rng.integers(0, 2, (T, B)).astype(np.int32),
                      reward=rng.normal(size=(T, B)).astype(np.float32),
                      terminated=rng.random((T, B)) < 0.1, truncated=rng.random((T, B)) < 0.1,
                      next_obs=next_obs, behaviour_logp=np.zeros((T, B), np.float32))


def _config(algo, **overrides):
    base = {"model": {"fcnet_hiddens": [8]}, "entropy_coeff": 0.01, "train_batch_size": 32,
            **({"lambda": 0.9} if algo == "A2C" else {}), **overrides}
    return registry.parse_config(algo, base)


def _grads(config, batch):
    algo = make_gradient_fns(config, SPEC)
    state = registry.make_algorithm("A2C", config, SPEC).init(jax.random.PRNGKey(0))
    policy = registry.make_algorithm("A2C", config, SPEC).policy(state)
    return jax.jit(algo.compute)(policy, batch)


@pytest.mark.parametrize("microbatch_size", [8, 7, 1])
def test_microbatch_accumulation_equals_the_full_batch_gradient(microbatch_size):
    """32 samples in microbatches of 8 (even), 7 (last one padded) or 1."""
    batch = _random_batch()
    full_grads, full_stats, _ = _grads(_config("A2C"), batch)
    grads, stats, _ = _grads(_config("A2C", microbatch_size=microbatch_size), batch)
    chex.assert_trees_all_close(grads, full_grads, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(stats, full_stats, rtol=1e-5, atol=1e-6)
    norm = float(jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(full_grads))))
    assert norm > 1e-3  # the comparison is not between zeros


def test_microbatched_update_takes_one_optimizer_step_like_the_full_batch():
    batch = _random_batch()
    states = []
    for mb in (None, 5):
        config = _config("A2C", microbatch_size=mb)
        algo = registry.make_algorithm("A2C", config, SPEC)
        state, _ = jax.jit(algo.update)(algo.init(jax.random.PRNGKey(0)), batch)
        states.append(state)
    assert int(states[1].num_updates) == 1
    chex.assert_trees_all_close(states[0].params, states[1].params, rtol=1e-5, atol=1e-6)


def test_a2c_without_gae_uses_n_step_returns_whatever_lambda():
    batch = _random_batch()
    n_step, _, _ = _grads(_config("A2C", use_gae=False, **{"lambda": 0.5}), batch)
    gae_one, _, _ = _grads(_config("A2C", use_gae=True, **{"lambda": 1.0}), batch)
    gae_half, _, _ = _grads(_config("A2C", use_gae=True, **{"lambda": 0.5}), batch)
    chex.assert_trees_all_close(n_step, gae_one, rtol=1e-6)
    with pytest.raises(AssertionError):
        chex.assert_trees_all_close(n_step, gae_half, rtol=1e-3)


def test_pg_trains_the_value_head_only_with_a_baseline():
    batch = _random_batch()
    for use_baseline in (False, True):
        config = _config("PG", use_baseline=use_baseline)
        algo = registry.make_algorithm("PG", config, SPEC)
        state = algo.init(jax.random.PRNGKey(0))
        new_state, _ = jax.jit(algo.update)(state, batch)
        kernel = lambda s: s.params["params"]["value_head"]["value"]["kernel"]  # noqa: E731
        value_moved = not np.array_equal(kernel(new_state), kernel(state))
        assert value_moved == use_baseline


def test_microbatch_larger_than_the_batch_is_a_config_error():
    import jrl

    with pytest.raises(jrl.ConfigError, match="microbatch_size.*train_batch_size"):
        _config("A2C", microbatch_size=64)
    # A3C's gradients come from one fragment: 16 steps x 8 envs by default.
    assert _config("A3C", microbatch_size=128).microbatch_size == 128
    with pytest.raises(jrl.ConfigError, match="microbatch_size.*rollout_fragment_length"):
        _config("A3C", microbatch_size=129)


# ---------------------------------------------------------------- A3C with Ray workers

def test_a3c_applies_worker_gradients_as_they_arrive_and_reports_staleness(ray_cluster,
                                                                           make_trainer):
    trainer = make_trainer("A3C", num_workers=2, num_envs_per_worker=1,
                           rollout_fragment_length=16, timesteps_per_iteration=64)
    initial = jax.tree.map(np.asarray, trainer.state.params)
    applied, max_staleness = 0, 0
    # Gradients computed on weights that another worker's gradient has since changed are stale;
    # with two workers sampling at once that happens within a few iterations, but a loaded
    # machine can serialize the first ones, so train until it is seen (at least 3 iterations).
    for iteration in range(12):
        if iteration >= 3 and max_staleness >= 1:
            break
        result = trainer.train()
        assert result["num_grads_applied"] >= 4  # 64 steps / 16 per gradient
        assert 0.0 <= result["grad_staleness_mean"] <= result["grad_staleness_max"]
        applied += result["num_grads_applied"]
        max_staleness = max(max_staleness, result["grad_staleness_max"])
        assert result["info"]["learner"]["default_policy"]["grad_gnorm"] > 0
    assert max_staleness >= 1
    state = trainer.state
    assert int(state.num_updates) == applied
    assert int(state.env_steps) == trainer.timesteps_total == applied * 16
    assert result["episodes_total"] > 0  # episodes reach the trainer from remote workers
    leaves = jax.tree.leaves(state.params)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in leaves)
    assert any(not np.array_equal(a, np.asarray(b))
               for a, b in zip(jax.tree.leaves(initial), leaves, strict=True))
