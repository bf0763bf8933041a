"""jrl's serving protocol, version 1: JSON bodies, arrays as nested lists (weights as base64).

Every error answer is ``{"error": "<one line>"}`` with a 4xx status for bad input (400 malformed
or out of space, 401 token, 404 unknown episode or path, 405 method, 409 episode conflict, 413
body too large, 429 too many episodes) and 503 when the server cannot answer now (closed,
timed out, busy). Nothing is ever unpickled.
"""

from __future__ import annotations

import base64
from typing import Any

import gymnasium as gym
import numpy as np
import orjson

from jrl.errors import EnvError

PROTOCOL_VERSION = 1
PREFIX = f"/v{PROTOCOL_VERSION}"
_ARRAY_KINDS = "biuf"


class ProtocolError(EnvError):
    """A request (or response) that breaks the protocol; ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def loads(body: bytes | str) -> Any:
    """Parses JSON (orjson: strict RFC 8259, so NaN, Infinity and numbers that overflow to inf
    are rejected)."""
    try:
        return orjson.loads(body)
    except (orjson.JSONDecodeError, TypeError) as e:
        reason = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        if "infinity" in reason:
            raise ProtocolError(f"JSON numbers must be finite: {reason}") from None
        raise ProtocolError(f"malformed JSON: {reason}") from None


def dumps(value: Any) -> bytes:
    """JSON bytes; NumPy scalars and arrays are written as numbers and lists."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY
                            | orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError as e:
        raise ProtocolError(f"cannot encode the answer as JSON: {e}", status=500) from None


def parse_object(body: bytes, required: tuple[str, ...], optional: tuple[str, ...] = ()
                 ) -> dict[str, Any]:
    """A JSON object with ``required`` keys and nothing outside ``required + optional``."""
    return check_fields(loads(body), required, optional)


def check_fields(obj: Any, required: tuple[str, ...], optional: tuple[str, ...] = ()
                 ) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ProtocolError(f"the body must be a JSON object, got {type(obj).__name__}")
    missing = [k for k in required if k not in obj]
    if missing:
        raise ProtocolError(f"missing field(s): {', '.join(missing)}")
    unknown = sorted(set(obj) - set(required) - set(optional))
    if unknown:
        raise ProtocolError(f"unknown field(s): {', '.join(unknown)[:120]} (expected "
                            f"{', '.join(required + optional)})")
    return obj


def jsonable(value: Any) -> Any:
    """NumPy scalars and arrays as plain JSON values."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def encode_array(array: Any) -> dict[str, Any]:
    """``{"dtype", "shape", "data"}``: the raw little-endian bytes, base64."""
    a = np.asarray(array, order="C")
    if a.dtype.kind not in _ARRAY_KINDS:
        raise ProtocolError(f"cannot encode arrays of dtype {a.dtype}", status=500)
    a = a.astype(a.dtype.newbyteorder("<"), copy=False)
    return {"dtype": a.dtype.name, "shape": list(a.shape),
            "data": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_array(obj: Any) -> np.ndarray:
    obj = check_fields(obj, ("dtype", "shape", "data"))
    try:
        dtype = np.dtype(obj["dtype"]).newbyteorder("<")
        shape = tuple(int(n) for n in obj["shape"])
        data = base64.b64decode(obj["data"], validate=True)
        if dtype.kind not in _ARRAY_KINDS or any(n < 0 for n in shape):
            raise ValueError(f"bad dtype or shape {obj['dtype']} {shape}")
        return np.frombuffer(data, dtype).reshape(shape).astype(dtype.newbyteorder("="))
    except (TypeError, ValueError) as e:
        raise ProtocolError(f"malformed array: {e}") from None


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
        return {"type": "MultiBinary", "n": jsonable(space.n)}
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
        raise ProtocolError(f"malformed space: {e}") from None
    raise ProtocolError(f"unknown space type {str(kind)[:40]!r}")
