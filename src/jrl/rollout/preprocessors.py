"""Host-side observation preprocessors, chosen from a gymnasium observation space (RLlib style).

A preprocessor turns what the env returns into one array the networks take: Discrete values become
one-hot vectors, Tuple/Dict observations are flattened into one vector, and image frames are resized
(and optionally made gray). They run in NumPy on the rollout side, before observations reach JAX.

``get_preprocessor(space)`` picks the class and returns an instance::

    prep = get_preprocessor(env.observation_space, model_config)
    x = prep.transform(obs)                     # one observation   -> [*prep.shape]
    xs = prep.transform_batch(vector_env_obs)   # vector env batch  -> [B, *prep.shape]

Batches follow ``gymnasium.vector.utils.batch_space``: a Box gives ``[B, *shape]``, a Discrete an int
array ``[B]``, a Tuple a tuple of batches and a Dict a dict of batches.
"""

from __future__ import annotations

import abc
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from jrl.config import ModelConfig, parse, to_dict
from jrl.errors import EnvError
from jrl.networks.custom import ModelCatalog

# ITU-R BT.601 luma weights for R, G, B.
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class Preprocessor(abc.ABC):
    """Base class: maps observations of ``space`` to arrays of ``shape`` and ``dtype``.

    A user preprocessor (``jrl.ModelCatalog.register_custom_preprocessor``) is written as in
    RLlib: subclass this, return the output shape from ``_init_shape(obs_space, options)``
    (``options`` is the ``model`` config as a dict) and turn one observation into a float32 array
    of that shape in ``transform(observation)``; batches are transformed one observation at a
    time.

    Attributes:
      space: the env's observation space this preprocessor reads.
      shape: shape of one preprocessed observation.
      dtype: numpy dtype of the preprocessed observation.
      observation_space: a ``gymnasium.spaces.Box`` describing the output.
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    observation_space: spaces.Box

    def __init__(self, space: gym.Space, model_config: ModelConfig | dict | None = None):
        self.space = space
        if isinstance(model_config, dict):
            model_config = parse(ModelConfig, model_config, path="model")
        self.model_config = model_config if model_config is not None else ModelConfig()
        init_shape = getattr(self, "_init_shape", None)
        if init_shape is not None:
            shape = init_shape(space, to_dict(self.model_config))
            self.shape = tuple(int(n) for n in np.atleast_1d(shape)) if shape != () else ()
            self.dtype = np.dtype(np.float32)
            self.observation_space = spaces.Box(-np.inf, np.inf, self.shape, np.float32)

    @property
    def size(self) -> int:
        """Number of elements of one preprocessed observation."""
        return int(np.prod(self.shape, dtype=np.int64))

    def check(self, obs: Any) -> None:
        """Raises ``EnvError`` when ``obs`` does not fit the observation space."""
        self._checked(self.transform(obs))

    @abc.abstractmethod
    def transform(self, obs: Any) -> np.ndarray:
        """Preprocesses one observation; returns ``[*shape]``."""

    def transform_batch(self, batch_obs: Any) -> np.ndarray:
        """Preprocesses a vector env batch; returns ``[B, *shape]``."""
        rows = [self._checked(self.transform(obs))
                for obs in gym.vector.utils.iterate(self.space, batch_obs)]
        return np.stack(rows) if rows else np.zeros((0, *self.shape), self.dtype)

    def _batch_size(self, batch_obs: Any) -> int:
        """Checks a batch against the space and returns its size ``B``."""
        return len(list(gym.vector.utils.iterate(self.space, batch_obs)))

    def _checked(self, out: Any) -> np.ndarray:
        out = np.asarray(out, self.dtype)
        if out.shape != self.shape:
            raise EnvError(f"{type(self).__name__}.transform returned shape {out.shape}, but "
                           f"its shape is {self.shape}")
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.space} -> {self.shape} {np.dtype(self.dtype).name})"


# --------------------------------------------------------------------------------------------
# Helpers


def _space_name(space: gym.Space) -> str:
    text = str(space)
    return text if len(text) <= 120 else text[:117] + "..."


def _where(path: str) -> str:
    return f" at '{path}'" if path else ""


def _array_shape(obs: Any) -> tuple[int, ...]:
    try:
        return np.shape(obs)
    except ValueError:  # ragged nested lists
        return (-1,)


def _check_shape(obs: Any, space: gym.Space, path: str) -> np.ndarray:
    shape = _array_shape(obs)
    if shape != space.shape:
        raise EnvError(
            f"observation{_where(path)} has shape {shape} but the observation space "
            f"{_space_name(space)} expects {space.shape}; make the env return observations that "
            f"fit its observation_space")
    return np.asarray(obs)


def _check_batch_shape(batch_obs: Any, space: gym.Space, path: str) -> np.ndarray:
    shape = _array_shape(batch_obs)
    if len(shape) != len(space.shape) + 1 or shape[1:] != space.shape:
        raise EnvError(
            f"batched observations{_where(path)} have shape {shape} but the observation space "
            f"{_space_name(space)} expects [B, {', '.join(map(str, space.shape))}]")
    return np.asarray(batch_obs)


def _check_integers(values: np.ndarray, low: np.ndarray, high: np.ndarray, space: gym.Space,
                    path: str) -> np.ndarray:
    """Checks that ``values`` are integers within ``[low, high)``; returns them as int64."""
    if values.dtype.kind not in "iub":
        if values.dtype.kind != "f" or not np.all(np.mod(values, 1) == 0):
            raise EnvError(
                f"observation{_where(path)} must be integers for {_space_name(space)}, "
                f"got {values.dtype.name} values")
    ints = values.astype(np.int64)
    bad = (ints < low) | (ints >= high)
    if np.any(bad):
        raise EnvError(
            f"observation{_where(path)} value {ints[bad].flat[0]} is outside the observation "
            f"space {_space_name(space)}")
    return ints


def is_image_space(space: gym.Space) -> bool:
    """Whether ``space`` holds image frames: a uint8 Box of shape ``(H, W, C)`` (RGB, gray, or
    stacked frames such as the DeepMind Atari wrappers' ``(84, 84, 4)``)."""
    return (isinstance(space, spaces.Box) and len(space.shape) == 3 and space.dtype == np.uint8)


# --------------------------------------------------------------------------------------------
# Leaf preprocessors


class NoPreprocessor(Preprocessor):
    """Box (any rank except images) and MultiBinary: cast to float32, shape kept."""

    def __init__(self, space: gym.Space, model_config: ModelConfig | None = None,
                 path: str = ""):
        super().__init__(space, model_config)
        self._path = path
        self.shape = tuple(space.shape)
        self.dtype = np.dtype(np.float32)
        if isinstance(space, spaces.Box):
            low, high = space.low.astype(np.float32), space.high.astype(np.float32)
        else:
            low, high = np.zeros(self.shape, np.float32), np.ones(self.shape, np.float32)
        self.observation_space = spaces.Box(low, high, self.shape, np.float32)

    def check(self, obs: Any) -> None:
        _check_shape(obs, self.space, self._path)

    def transform(self, obs: Any) -> np.ndarray:
        return _check_shape(obs, self.space, self._path).astype(np.float32)

    def transform_batch(self, batch_obs: Any) -> np.ndarray:
        return _check_batch_shape(batch_obs, self.space, self._path).astype(np.float32)

    def _batch_size(self, batch_obs: Any) -> int:
        return _check_batch_shape(batch_obs, self.space, self._path).shape[0]


class OneHotPreprocessor(Preprocessor):
    """Discrete -> one-hot ``[n]``; MultiDiscrete -> concatenated one-hots ``[sum(nvec)]``."""

    def __init__(self, space: spaces.Discrete | spaces.MultiDiscrete,
                 model_config: ModelConfig | None = None, path: str = ""):
        super().__init__(space, model_config)
        self._path = path
        if isinstance(space, spaces.Discrete):
            nvec = np.array([space.n], dtype=np.int64)
            start = np.array([space.start], dtype=np.int64)
        else:
            nvec = np.asarray(space.nvec, dtype=np.int64).reshape(-1)
            start = np.asarray(space.start, dtype=np.int64).reshape(-1)
        self._nvec = nvec
        self._start = start
        # Column of value ``start[i]`` of component ``i`` in the concatenated output.
        self._offsets = np.concatenate([[0], np.cumsum(nvec)[:-1]]).astype(np.int64)
        self.shape = (int(nvec.sum()),)
        self.dtype = np.dtype(np.float32)
        self.observation_space = spaces.Box(0.0, 1.0, self.shape, np.float32)

    def _columns(self, obs: np.ndarray) -> np.ndarray:
        """``[B, K]`` validated values -> ``[B, K]`` output columns."""
        ints = _check_integers(obs, self._start, self._start + self._nvec, self.space, self._path)
        return ints - self._start + self._offsets

    def _one_hot(self, batch_obs: np.ndarray) -> np.ndarray:
        columns = self._columns(batch_obs.reshape(batch_obs.shape[0], -1))
        out = np.zeros((columns.shape[0], self.shape[0]), dtype=np.float32)
        np.put_along_axis(out, columns, 1.0, axis=1)
        return out

    def check(self, obs: Any) -> None:
        obs = _check_shape(obs, self.space, self._path)
        self._columns(obs.reshape(1, -1))

    def transform(self, obs: Any) -> np.ndarray:
        return self._one_hot(_check_shape(obs, self.space, self._path)[None])[0]

    def transform_batch(self, batch_obs: Any) -> np.ndarray:
        return self._one_hot(_check_batch_shape(batch_obs, self.space, self._path))

    def _batch_size(self, batch_obs: Any) -> int:
        return _check_batch_shape(batch_obs, self.space, self._path).shape[0]


def _resize_weights(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]`` interpolation weights along one axis; each row sums to 1.

    Shrinking averages the input pixels each output pixel covers, weighted by overlap (area);
    growing interpolates linearly between the two nearest pixel centres (bilinear).
    """
    if n_out <= n_in:
        scale = n_in / n_out
        lo = np.arange(n_out, dtype=np.float64)[:, None] * scale
        hi = lo + scale
        k = np.arange(n_in, dtype=np.float64)[None, :]
        overlap = np.clip(np.minimum(hi, k + 1) - np.maximum(lo, k), 0.0, None)
        weights = overlap / overlap.sum(axis=1, keepdims=True)
    else:
        centres = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
        centres = np.clip(centres, 0.0, n_in - 1)
        left = np.floor(centres).astype(np.int64)
        right = np.minimum(left + 1, n_in - 1)
        frac = centres - left
        weights = np.zeros((n_out, n_in), dtype=np.float64)
        rows = np.arange(n_out)
        np.add.at(weights, (rows, left), 1.0 - frac)
        np.add.at(weights, (rows, right), frac)
    return weights.astype(np.float32)


class ImagePreprocessor(Preprocessor):
    """Image frames ``(H, W, C)`` uint8 -> ``(dim, dim, C)`` uint8, or ``(dim, dim, 1)`` in gray
    (RGB frames only; other channel counts, e.g. stacked gray frames, are kept). Frames already
    ``dim x dim`` pass through unchanged.

    Resizing is separable: a ``[dim, H]`` and a ``[dim, W]`` weight matrix (area when shrinking,
    bilinear when growing) applied as two matrix products over the whole batch. Gray uses the
    ITU-R 601 luma weights. Output stays uint8; the networks scale pixels by 1/255.
    """

    def __init__(self, space: spaces.Box, model_config: ModelConfig | None = None,
                 path: str = ""):
        super().__init__(space, model_config)
        self._path = path
        height, width, channels = space.shape
        dim = int(self.model_config.dim)
        self._gray = bool(self.model_config.grayscale) and channels == 3
        self._weights_h = None if height == dim else _resize_weights(height, dim)
        self._weights_w = None if width == dim else _resize_weights(width, dim)
        self.shape = (dim, dim, 1 if self._gray else channels)
        self.dtype = np.dtype(np.uint8)
        self.observation_space = spaces.Box(0, 255, self.shape, np.uint8)

    def _resize(self, frames: np.ndarray) -> np.ndarray:
        """``[B, H, W, C]`` -> ``[B, dim, dim, C']`` uint8."""
        if self._weights_h is None and self._weights_w is None and not self._gray:
            return np.array(frames, np.uint8)
        x = frames.astype(np.float32)
        if self._gray:
            # Luma is linear, so taking it before resizing gives the same result on fewer channels.
            x = x @ _LUMA_WEIGHTS[:, None] if x.shape[-1] == 3 else x
        b, h, w, c = x.shape
        if self._weights_h is not None:
            x = np.matmul(self._weights_h, x.reshape(b, h, w * c)).reshape(b, -1, w, c)
        if self._weights_w is not None:
            # [dim, W] @ [B, H', W, C] -> [B, H', dim, C]
            x = np.matmul(self._weights_w, x)
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)

    def check(self, obs: Any) -> None:
        _check_shape(obs, self.space, self._path)

    def transform(self, obs: Any) -> np.ndarray:
        return self._resize(_check_shape(obs, self.space, self._path)[None])[0]

    def transform_batch(self, batch_obs: Any) -> np.ndarray:
        return self._resize(_check_batch_shape(batch_obs, self.space, self._path))

    def _batch_size(self, batch_obs: Any) -> int:
        return _check_batch_shape(batch_obs, self.space, self._path).shape[0]


# --------------------------------------------------------------------------------------------
# Composite spaces


class FlattenPreprocessor(Preprocessor):
    """Tuple and Dict (nested to any depth) -> one float32 vector.

    Every leaf is preprocessed by its own preprocessor (Discrete -> one-hot, Box -> as is, image ->
    resized) and flattened; the pieces are concatenated in the space's order (Dict keys sorted,
    as ``gymnasium.spaces.Dict`` keeps them). Image leaves keep their 0..255 pixel values.
    """

    def __init__(self, space: spaces.Tuple | spaces.Dict, model_config: ModelConfig | None = None,
                 path: str = ""):
        super().__init__(space, model_config)
        self._path = path
        if isinstance(space, spaces.Dict):
            items = list(space.spaces.items())
        else:
            items = list(enumerate(space.spaces))
        self._keys = [key for key, _ in items]
        self._children = [
            _make(child, self.model_config, f"{path}.{key}" if path else str(key))
            for key, child in items]
        self.shape = (sum(child.size for child in self._children),)
        self.dtype = np.dtype(np.float32)
        lows = [np.asarray(c.observation_space.low, np.float32).reshape(-1)
                for c in self._children]
        highs = [np.asarray(c.observation_space.high, np.float32).reshape(-1)
                 for c in self._children]
        low = np.concatenate(lows) if lows else np.zeros((0,), np.float32)
        high = np.concatenate(highs) if highs else np.zeros((0,), np.float32)
        self.observation_space = spaces.Box(low, high, self.shape, np.float32)

    def _parts(self, obs: Any) -> list[Any]:
        """The observation's children in the space's order, checking its structure."""
        if isinstance(self.space, spaces.Dict):
            if not isinstance(obs, dict):
                raise EnvError(
                    f"observation{_where(self._path)} must be a dict for "
                    f"{_space_name(self.space)}, got {type(obs).__name__}")
            missing = [k for k in self._keys if k not in obs]
            extra = [k for k in obs if k not in self.space.spaces]
            if missing or extra:
                raise EnvError(
                    f"observation{_where(self._path)} has keys {sorted(map(str, obs))} but the "
                    f"observation space expects {sorted(map(str, self._keys))}")
            return [obs[k] for k in self._keys]
        if not isinstance(obs, (tuple, list)) or len(obs) != len(self._children):
            got = (f"{type(obs).__name__} of length {len(obs)}"
                   if isinstance(obs, (tuple, list)) else type(obs).__name__)
            raise EnvError(
                f"observation{_where(self._path)} must be a tuple of {len(self._children)} items "
                f"for {_space_name(self.space)}, got {got}")
        return list(obs)

    def check(self, obs: Any) -> None:
        for child, part in zip(self._children, self._parts(obs), strict=True):
            child.check(part)

    def transform(self, obs: Any) -> np.ndarray:
        pieces = [child.transform(part).reshape(-1).astype(np.float32, copy=False)
                  for child, part in zip(self._children, self._parts(obs), strict=True)]
        return np.concatenate(pieces) if pieces else np.zeros((0,), np.float32)

    def transform_batch(self, batch_obs: Any) -> np.ndarray:
        batch = self._batch_size(batch_obs)
        pieces = [child.transform_batch(part).reshape(batch, -1).astype(np.float32, copy=False)
                  for child, part in zip(self._children, self._parts(batch_obs), strict=True)]
        return np.concatenate(pieces, axis=1) if pieces else np.zeros((batch, 0), np.float32)

    def _batch_size(self, batch_obs: Any) -> int:
        sizes = {child._batch_size(part)
                 for child, part in zip(self._children, self._parts(batch_obs), strict=True)}
        if len(sizes) != 1:
            raise EnvError(
                f"batched observations{_where(self._path)} for {_space_name(self.space)} have "
                f"different batch sizes {sorted(sizes)} in their parts")
        return sizes.pop()


def action_mask_slice(preprocessor: Preprocessor) -> tuple[int, int] | None:
    """``(start, stop)`` of a top-level Dict observation's ``action_mask`` entry in the
    flattened output, or ``None`` when there is none (RLlib's and SB3-contrib's convention)."""
    if not isinstance(preprocessor, FlattenPreprocessor) or not isinstance(
            preprocessor.space, spaces.Dict) or "action_mask" not in preprocessor.space.spaces:
        return None
    start = 0
    for key, child in zip(preprocessor._keys, preprocessor._children, strict=True):
        if key == "action_mask":
            if isinstance(child.space, (spaces.Discrete, spaces.MultiDiscrete)) or is_image_space(
                    child.space):
                raise EnvError("observation 'action_mask' must be a Box or MultiBinary of 0/1 "
                               f"per action, got {_space_name(child.space)}")
            return start, start + child.size
        start += child.size
    return None


# --------------------------------------------------------------------------------------------
# Selection


def _make(space: gym.Space, model_config: ModelConfig, path: str) -> Preprocessor:
    if isinstance(space, (spaces.Tuple, spaces.Dict)):
        return FlattenPreprocessor(space, model_config, path)
    if isinstance(space, (spaces.Discrete, spaces.MultiDiscrete)):
        return OneHotPreprocessor(space, model_config, path)
    if is_image_space(space):
        return ImagePreprocessor(space, model_config, path)
    if isinstance(space, (spaces.Box, spaces.MultiBinary)):
        return NoPreprocessor(space, model_config, path)
    what = _space_name(space) if isinstance(space, gym.Space) else type(space).__name__
    raise EnvError(
        f"observation space {what}{_where(path)} is not supported; jrl handles Box, Discrete, "
        f"MultiDiscrete, MultiBinary, and Tuple/Dict of those")


def get_preprocessor(space: gym.Space, model_config: ModelConfig | None = None) -> Preprocessor:
    """The preprocessor for observations of ``space``.

    Args:
      space: the env's (single, unbatched) observation space.
      model_config: gives ``dim`` and ``grayscale`` for image spaces (default ``ModelConfig()``).

    Returns:
      ``FlattenPreprocessor`` for Tuple/Dict, ``OneHotPreprocessor`` for Discrete/MultiDiscrete,
      ``ImagePreprocessor`` for uint8 ``(H, W, 3|1)`` Boxes, ``NoPreprocessor`` for other Boxes.

    Raises:
      EnvError: the space (or a part of it) is of a kind jrl cannot feed to a network.
    """
    model_config = model_config if model_config is not None else ModelConfig()
    if model_config.custom_preprocessor:
        cls = ModelCatalog.get_custom_preprocessor(model_config.custom_preprocessor)
        return cls(space, model_config)
    return _make(space, model_config, "")
