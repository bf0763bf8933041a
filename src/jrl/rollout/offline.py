"""Experience output as JSON lines (RLlib's ``output`` option); no pickle."""

from __future__ import annotations

import base64
import json
import os
import zlib
from collections.abc import Iterator, Mapping

import numpy as np


def _encode(array: np.ndarray, compress: bool) -> object:
    array = np.asarray(array)
    if not compress:
        return array.tolist()
    payload = zlib.compress(np.ascontiguousarray(array).tobytes())
    return {"dtype": array.dtype.str, "shape": list(array.shape),
            "data": base64.b64encode(payload).decode("ascii")}


def _decode(value: object) -> np.ndarray:
    if isinstance(value, Mapping) and "data" in value:
        raw = zlib.decompress(base64.b64decode(value["data"]))
        return np.frombuffer(raw, dtype=np.dtype(value["dtype"])).reshape(value["shape"]).copy()
    return np.asarray(value)


class JsonWriter:
    """Appends sample batches as JSON lines: one object per env column of each fragment.

    Each line maps column names to per-step lists ``[T, ...]``; columns named in
    ``compress_columns`` are stored as zlib-compressed, base64-encoded raw arrays.
    """

    def __init__(self, path: str, compress_columns: tuple[str, ...] = (), worker_index: int = 0):
        os.makedirs(path, exist_ok=True)
        self.path = os.path.join(path, f"output-worker{worker_index}-{os.getpid()}.json")
        self.compress_columns = set(compress_columns)

    def write(self, batch: Mapping[str, np.ndarray]) -> None:
        columns = {k: np.asarray(v) for k, v in batch.items()}
        num_envs = next(iter(columns.values())).shape[1]
        with open(self.path, "a") as fh:
            for b in range(num_envs):
                row = {k: _encode(v[:, b], k in self.compress_columns) for k, v in columns.items()}
                fh.write(json.dumps(row) + "\n")


def read_json(path: str) -> Iterator[dict[str, np.ndarray]]:
    """Yields the rows written by ``JsonWriter`` (files in a directory, or one file)."""
    files = ([os.path.join(path, f) for f in sorted(os.listdir(path)) if f.endswith(".json")]
             if os.path.isdir(path) else [path])
    for name in files:
        with open(name) as fh:
            for line in fh:
                if line.strip():
                    yield {k: _decode(v) for k, v in json.loads(line).items()}
