"""Observation preprocessors: one per space kind, single vs vector-env batches, hand-worked values."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.vector.utils import iterate

from jrl.config import ModelConfig
from jrl.errors import EnvError
from jrl.rollout.preprocessors import (
    FlattenPreprocessor,
    ImagePreprocessor,
    NoPreprocessor,
    OneHotPreprocessor,
    get_preprocessor,
)

GRAY = ModelConfig(grayscale=True)


class SpaceEnv(gym.Env):
    """Returns random samples of ``observation_space``; just enough to sit in a vector env."""

    def __init__(self, observation_space: gym.Space):
        self.observation_space = copy.deepcopy(observation_space)
        self.action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.observation_space.seed(int(self.np_random.integers(2**31)))
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


def vector_obs(space: gym.Space, num_envs: int = 3):
    """A real SyncVectorEnv batch and the per-env observations it holds."""
    envs = gym.vector.SyncVectorEnv([lambda: SpaceEnv(space) for _ in range(num_envs)])
    envs.reset(seed=0)
    batch, *_ = envs.step(np.zeros(num_envs, dtype=np.int64))
    singles = list(iterate(envs.observation_space, batch))
    envs.close()
    return batch, singles


BOX = spaces.Box(-1.0, 1.0, (4,), np.float32)
BOX2D = spaces.Box(-2.0, 2.0, (3, 4), np.float32)
DISCRETE = spaces.Discrete(5, start=-2)
MULTI_DISCRETE = spaces.MultiDiscrete([2, 3, 4], start=[0, 1, -1])
TUPLE = spaces.Tuple((spaces.Discrete(3), BOX))
DICT = spaces.Dict({"pos": BOX2D, "mode": spaces.Discrete(2, start=1)})
NESTED = spaces.Tuple((spaces.Dict({"b": spaces.Discrete(4), "a": spaces.Tuple((BOX,))}),
                       spaces.MultiDiscrete([2, 2])))
IMAGE = spaces.Box(0, 255, (210, 160, 3), np.uint8)

CASES = {
    "box": (BOX, None, NoPreprocessor, (4,), np.float32),
    "box_rank2": (BOX2D, None, NoPreprocessor, (3, 4), np.float32),
    "discrete_start": (DISCRETE, None, OneHotPreprocessor, (5,), np.float32),
    "multi_discrete": (MULTI_DISCRETE, None, OneHotPreprocessor, (9,), np.float32),
    "tuple": (TUPLE, None, FlattenPreprocessor, (7,), np.float32),
    "dict": (DICT, None, FlattenPreprocessor, (14,), np.float32),
    "dict_in_tuple": (NESTED, None, FlattenPreprocessor, (12,), np.float32),
    "image": (IMAGE, None, ImagePreprocessor, (84, 84, 3), np.uint8),
    "image_gray": (IMAGE, GRAY, ImagePreprocessor, (84, 84, 1), np.uint8),
}


@pytest.mark.parametrize("name", list(CASES))
def test_space_picks_preprocessor_with_declared_shape(name):
    space, model, cls, shape, dtype = CASES[name]
    prep = get_preprocessor(space, model)
    assert type(prep) is cls
    assert prep.shape == shape
    assert prep.dtype == dtype
    assert prep.observation_space.shape == shape
    assert prep.observation_space.dtype == dtype
    out = prep.transform(space.sample())
    assert out.shape == shape and out.dtype == dtype
    assert prep.observation_space.contains(out)


@pytest.mark.parametrize("name", list(CASES))
def test_transform_batch_of_vector_env_equals_stacked_transform(name):
    space, model, *_ = CASES[name]
    prep = get_preprocessor(space, model)
    batch, singles = vector_obs(space)
    out = prep.transform_batch(batch)
    expected = np.stack([prep.transform(obs) for obs in singles])
    assert out.shape == (3, *prep.shape)
    assert out.dtype == prep.dtype
    np.testing.assert_array_equal(out, expected)


def test_discrete_one_hot_respects_start():
    prep = get_preprocessor(DISCRETE)
    np.testing.assert_array_equal(prep.transform(-2), [1, 0, 0, 0, 0])
    np.testing.assert_array_equal(prep.transform(np.int64(2)), [0, 0, 0, 0, 1])
    np.testing.assert_array_equal(prep.transform_batch(np.array([0, -1])),
                                  [[0, 0, 1, 0, 0], [0, 1, 0, 0, 0]])


def test_multi_discrete_concatenates_one_hots():
    prep = get_preprocessor(MULTI_DISCRETE)
    np.testing.assert_array_equal(prep.transform(np.array([1, 3, -1])),
                                  [0, 1, 0, 0, 1, 1, 0, 0, 0])


def test_flatten_orders_dict_keys_and_one_hots_discrete_leaves():
    prep = get_preprocessor(DICT)
    pos = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    # "mode" sorts before "pos"; mode=2 with start=1 is the second column.
    out = prep.transform({"pos": pos, "mode": 2})
    np.testing.assert_allclose(out, np.concatenate([[0.0, 1.0], pos.reshape(-1)]))


def test_flatten_nested_dict_in_tuple():
    prep = get_preprocessor(NESTED)
    box = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
    out = prep.transform(({"b": 3, "a": (box,)}, np.array([1, 0])))
    expected = np.concatenate([box, [0, 0, 0, 1], [0, 1], [1, 0]])
    np.testing.assert_allclose(out, expected)


def test_flatten_resizes_image_leaf_and_flattens_it():
    image = spaces.Box(0, 255, (20, 20, 3), np.uint8)
    prep = get_preprocessor(spaces.Dict({"img": image, "x": BOX}), ModelConfig(dim=10))
    assert prep.shape == (10 * 10 * 3 + 4,)
    frame = np.full((20, 20, 3), 7, np.uint8)
    out = prep.transform({"img": frame, "x": np.zeros(4, np.float32)})
    np.testing.assert_array_equal(out[:300], 7.0)


def test_non_image_boxes_keep_their_shape():
    for space in (spaces.Box(0.0, 1.0, (3, 4, 5), np.float32),
                  spaces.Box(0.0, 1.0, (10, 10, 3), np.float32)):
        prep = get_preprocessor(space)
        assert type(prep) is NoPreprocessor and prep.shape == space.shape


def test_resize_of_constant_image_stays_constant():
    for shape in [(210, 160, 3), (50, 30, 1), (40, 100, 3)]:
        frame = np.full(shape, 173, np.uint8)
        out = ImagePreprocessor(spaces.Box(0, 255, shape, np.uint8)).transform(frame)
        assert out.shape == (84, 84, shape[2])
        np.testing.assert_array_equal(out, 173)


def test_resize_of_gradient_keeps_ordering():
    ramp = np.linspace(0, 255, 160).astype(np.uint8)
    frame = np.broadcast_to(ramp[None, :, None], (210, 160, 3)).copy()
    out = get_preprocessor(IMAGE).transform(frame).astype(int)
    assert np.all(np.diff(out, axis=1) >= 0)
    assert np.all(np.diff(out, axis=0) == 0)
    assert out[0, 0, 0] < 5 and out[0, -1, 0] > 250
    # The same ramp down the rows, upsampled (50 -> 84) this time.
    column = np.linspace(0, 255, 50).astype(np.uint8)
    tall = np.broadcast_to(column[:, None, None], (50, 84, 1)).copy()
    out = get_preprocessor(spaces.Box(0, 255, (50, 84, 1), np.uint8)).transform(tall).astype(int)
    assert np.all(np.diff(out, axis=0) >= 0) and np.all(np.diff(out, axis=1) == 0)
    assert out[0, 0, 0] < out[-1, 0, 0]


def test_halving_resize_averages_two_by_two_blocks():
    frame = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    prep = get_preprocessor(spaces.Box(0, 255, (16, 16, 3), np.uint8), ModelConfig(dim=8))
    blocks = frame.astype(np.float64).reshape(8, 2, 8, 2, 3).mean(axis=(1, 3))
    np.testing.assert_array_equal(prep.transform(frame), np.rint(blocks).astype(np.uint8))


def test_grayscale_uses_itu_601_luma():
    frame = np.empty((210, 160, 3), np.uint8)
    frame[...] = (100, 150, 200)
    out = get_preprocessor(IMAGE, GRAY).transform(frame)
    # 0.299 * 100 + 0.587 * 150 + 0.114 * 200 = 140.75
    np.testing.assert_array_equal(out, np.full((84, 84, 1), 141, np.uint8))


def test_check_rejects_observation_of_wrong_shape():
    with pytest.raises(EnvError, match=r"shape \(3,\).*expects \(4,\)"):
        get_preprocessor(BOX).check(np.zeros(3))
    with pytest.raises(EnvError, match="shape"):
        get_preprocessor(IMAGE).transform(np.zeros((84, 84, 3), np.uint8))
    with pytest.raises(EnvError, match=r"\[B, 4\]"):
        get_preprocessor(BOX).transform_batch(np.zeros((2, 5)))
    with pytest.raises(EnvError, match="'pos'"):
        get_preprocessor(DICT).check({"pos": np.zeros(12), "mode": 1})


def test_check_rejects_bad_structure_and_values():
    with pytest.raises(EnvError, match="outside"):
        get_preprocessor(DISCRETE).check(3)
    with pytest.raises(EnvError, match="keys"):
        get_preprocessor(DICT).check({"pos": np.zeros((3, 4))})
    with pytest.raises(EnvError, match="tuple of 2"):
        get_preprocessor(TUPLE).check((1,))
    get_preprocessor(NESTED).check(NESTED.sample())


@pytest.mark.parametrize("space", [spaces.Text(5), spaces.Graph(BOX, None),
                                   spaces.Tuple((BOX, spaces.Text(3)))])
def test_unsupported_space_names_it(space):
    with pytest.raises(EnvError, match="Text|Graph"):
        get_preprocessor(space)
