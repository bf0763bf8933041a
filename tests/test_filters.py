"""Observation filters: running statistics against NumPy, merging, normalization, jit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrl.errors import ConfigError, EnvError
from jrl.ops.filters import (
    FilterState,
    MeanStdFilter,
    NoFilter,
    get_filter,
    init_filter_state,
    merge_filter_states,
    std,
    update_filter_state,
)

SHAPE = (3, 2)


def chunks(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    scale = np.array([[1.0, 5.0], [0.1, 2.0], [3.0, 0.5]])
    return [rng.normal(4.0, 1.0, (n, *SHAPE)) * scale - 2.0 for n in (1, 7, 32, 5)]


def assert_matches(state: FilterState, data: np.ndarray) -> None:
    assert float(state.count) == len(data)
    np.testing.assert_allclose(state.mean, data.mean(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(state.var, data.var(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(std(state), data.std(axis=0), rtol=1e-5, atol=1e-5)


def test_init_is_zeros_of_shape():
    state = init_filter_state(SHAPE)
    assert state.count.shape == () and state.count.dtype == jnp.float32
    assert state.mean.shape == SHAPE and state.m2.shape == SHAPE
    assert float(state.count) == 0 and not np.any(state.mean) and not np.any(state.m2)


def test_updates_match_numpy_mean_and_var_of_all_data():
    filt = MeanStdFilter()
    state = filt.init(SHAPE)
    for chunk in chunks():
        state = filt.update(state, chunk)
    assert_matches(state, np.concatenate(chunks()))


def test_merging_two_states_equals_updating_with_all_data():
    data = chunks()
    a = update_filter_state(update_filter_state(init_filter_state(SHAPE), data[0]), data[1])
    b = update_filter_state(update_filter_state(init_filter_state(SHAPE), data[2]), data[3])
    merged = merge_filter_states(a, b)
    assert_matches(merged, np.concatenate(data))
    # An empty state is the identity of merging.
    for other in (merge_filter_states(a, init_filter_state(SHAPE)),
                  merge_filter_states(init_filter_state(SHAPE), a)):
        np.testing.assert_allclose(other.mean, a.mean, rtol=1e-6)
        np.testing.assert_allclose(other.m2, a.m2, rtol=1e-6)


def test_update_accepts_extra_leading_dims_and_rejects_wrong_shape():
    data = np.concatenate(chunks())[:40].reshape(8, 5, *SHAPE)
    state = update_filter_state(init_filter_state(SHAPE), data)
    assert_matches(state, data.reshape(40, *SHAPE))
    with pytest.raises(EnvError, match="shape"):
        update_filter_state(init_filter_state(SHAPE), np.zeros((4, 3, 3)))


def test_apply_normalizes_to_zero_mean_unit_std():
    filt = MeanStdFilter()
    data = np.concatenate(chunks())
    state = filt.update(filt.init(SHAPE), data)
    out = filt.apply(state, data)
    assert out.dtype == jnp.float32 and out.shape == data.shape
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(out.std(axis=0), 1.0, atol=1e-4)


def test_apply_clips_and_does_not_divide_by_zero_before_two_observations():
    filt = MeanStdFilter(clip=2.0)
    state = filt.update(filt.init((2,)), np.array([[1.0, 1.0]]))
    # One observation: variance is taken as 1, so only the mean is removed.
    np.testing.assert_allclose(filt.apply(state, jnp.array([3.0, -0.5])), [2.0, -1.5])
    np.testing.assert_allclose(filt.apply(filt.init((2,)), jnp.array([1.5, 9.0])), [1.5, 2.0])


def test_no_filter_is_identity():
    filt = NoFilter()
    state = filt.init(SHAPE)
    data = np.concatenate(chunks())
    assert filt.update(state, data) is state
    out = filt.apply(state, data.astype(np.float64))
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, data, rtol=1e-6)


@pytest.mark.parametrize("name", ["NoFilter", "MeanStdFilter"])
def test_filters_work_under_jit(name):
    filt = get_filter(name)
    data = [jnp.asarray(c, jnp.float32) for c in chunks()]
    update, apply = jax.jit(filt.update), jax.jit(filt.apply)
    state = filt.init(SHAPE)
    eager = filt.init(SHAPE)
    for chunk in data:
        state, eager = update(state, chunk), filt.update(eager, chunk)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6), state, eager)
    batched = jnp.stack(data[2][:6]).reshape(2, 3, *SHAPE)
    np.testing.assert_allclose(apply(state, batched), filt.apply(eager, batched), rtol=1e-5)
    merged = jax.jit(merge_filter_states)(state, eager)
    assert merged.mean.shape == SHAPE


def test_get_filter_rejects_unknown_name_listing_valid_ones():
    assert isinstance(get_filter("MeanStdFilter"), MeanStdFilter)
    with pytest.raises(ConfigError, match="'NoFilter', 'MeanStdFilter'"):
        get_filter("ConcurrentMeanStdFilter")
