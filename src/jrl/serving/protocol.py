"""jrl's serving protocol, version 1: JSON bodies, arrays as nested lists (weights as base64).

Every error answer is ``{"error": "<one line>"}`` with a 4xx status for bad input (400 malformed
or out of space, 401 token, 404 unknown episode or path, 405 method, 409 episode conflict, 413
body too large, 429 too many episodes) and 503 when the server cannot answer now (closed,
timed out, busy). Nothing is ever unpickled.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import orjson

from jrl.errors import EnvError
from jrl.rollout import spaces
from jrl.rollout.spaces import encode_array, space_to_json

__all__ = ["PREFIX", "PROTOCOL_VERSION", "ProtocolError", "check_fields", "decode_array",
           "dumps", "encode_array", "jsonable", "loads", "parse_object", "space_from_json",
           "space_to_json"]

PROTOCOL_VERSION = 1
PREFIX = f"/v{PROTOCOL_VERSION}"


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


def decode_array(obj: Any) -> np.ndarray:
    """An array from ``encode_array``'s JSON (``ProtocolError`` when malformed)."""
    try:
        return spaces.decode_array(obj)
    except EnvError as e:
        raise ProtocolError(str(e)) from None


def space_from_json(obj: Any) -> gym.Space:
    """A gymnasium space from ``space_to_json``'s JSON (``ProtocolError`` when malformed)."""
    try:
        return spaces.space_from_json(obj)
    except EnvError as e:
        raise ProtocolError(str(e)) from None
