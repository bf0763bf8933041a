"""Gymnasium spaces and NumPy arrays as JSON: the serving protocol's space descriptions and
the spaces a checkpoint's metadata records (so ``jrl serve`` needs no env).

Arrays are ``{"dtype", "shape", "data"}`` with the raw little-endian bytes in base64; nothing
is ever pickled.
"""

from __future__ import annotations

import base64
from typing import Any

import gymnasium as gym
import numpy as np

from jrl.errors import EnvError

_ARRAY_KINDS = "biuf"


def encode_array(array: Any) -> dict[str, Any]:
    """``{"dtype", "shape", "data"}``: the raw little-endian bytes, base64."""
    a = np.asarray(array, order="C")
    if a.dtype.kind not in _ARRAY_KINDS:
        raise EnvError(f"cannot encode arrays of dtype {a.dtype}")
    a = a.astype(a.dtype.newbyteorder("<"), copy=False)
    return {"dtype": a.dtype.name, "shape": list(a.shape),
            "data": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_array(obj: Any) -> np.ndarray:
    if not isinstance(obj, dict) or sorted(obj) != ["data", "dtype", "shape"]:
        raise EnvError("malformed array: expected an object with dtype, shape and data")
    try:
        dtype = np.dtype(obj["dtype"]).newbyteorder("<")
        shape = tuple(int(n) for n in obj["shape"])
        data = base64.b64decode(obj["data"], validate=True)
        if dtype.kind not in _ARRAY_KINDS or any(n < 0 for n in shape):
            raise ValueError(f"bad dtype or shape {obj['dtype']} {shape}")
        return np.frombuffer(data, dtype).reshape(shape).astype(dtype.newbyteorder("="))
    except (TypeError, ValueError) as e:
        raise EnvError(f"malformed array: {e}") from None


def space_to_json(space: gym.Space) -> dict[str, Any]:
    """A gymnasium space as JSON (Box, Discrete, MultiDiscrete, MultiBinary, Tuple, Dict)."""
    if isinstance(space, gym.spaces.Box):
        return {"type": "Box", "low": encode_array(space.low), "high": encode_array(space.high),
                "dtype": np.dtype(space.dtype).name}
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": np.asarray(space.nvec).tolist()}
    if isinstance(space, gym.spaces.MultiBinary):
        return {"type": "MultiBinary", "n": np.asarray(space.n).tolist()}
    if isinstance(space, gym.spaces.Tuple):
        return {"type": "Tuple", "spaces": [space_to_json(s) for s in space.spaces]}
    if isinstance(space, gym.spaces.Dict):
        return {"type": "Dict", "spaces": {k: space_to_json(s) for k, s in space.spaces.items()}}
    raise EnvError(f"space {space} cannot be described in JSON")


def space_from_json(obj: Any) -> gym.Space:
    try:
        kind = obj["type"]
        if kind == "Box":
            low, high = decode_array(obj["low"]), decode_array(obj["high"])
            return gym.spaces.Box(low, high, low.shape, np.dtype(obj["dtype"]))
        if kind == "Discrete":
            return gym.spaces.Discrete(int(obj["n"]), start=int(obj.get("start", 0)))
        if kind == "MultiDiscrete":
            return gym.spaces.MultiDiscrete(obj["nvec"])
        if kind == "MultiBinary":
            return gym.spaces.MultiBinary(obj["n"])
        if kind == "Tuple":
            return gym.spaces.Tuple([space_from_json(s) for s in obj["spaces"]])
        if kind == "Dict":
            return gym.spaces.Dict({k: space_from_json(s) for k, s in obj["spaces"].items()})
    except (KeyError, TypeError, ValueError) as e:
        raise EnvError(f"malformed space: {e}") from None
    raise EnvError(f"unknown space type {str(kind)[:40]!r}")
