"""Offline experience in RLlib's format: JSON lines, one ``SampleBatch`` object per line; no pickle.

Multi-agent episodes (``jrl evaluate --out`` on a multi-agent checkpoint) are written as RLlib
writes a ``MultiAgentBatch``: one line per episode, ``{"type": "MultiAgentBatch",
"policy_batches": {policy_id: <SampleBatch columns>}, "count": <env steps>}``; a policy's batch
holds its agents' steps one agent after another, told apart by ``agent_index``. A reader for
one policy (``policy_id``: a multi-agent trainer's policy) takes that policy's batch of each
such line (lines without it are skipped; plain ``SampleBatch`` lines count as
``default_policy``'s); a single-agent reader takes a ``MultiAgentBatch`` line of exactly one
policy.

Writing (``output``): ``JsonWriter`` appends one line per env column of each sampled fragment (or
one per recorded episode) to ``output-<date>_worker-<index>_<n>.json``, starting a new file once
``output_max_file_size`` bytes are written. A line maps column names to per-step lists:
``obs``, ``new_obs``, ``actions``, ``rewards``, ``dones`` (plus ``terminateds``/``truncateds``),
``action_prob``, ``action_logp``, ``eps_id``, ``agent_index``, ``t``, ``prev_actions``,
``prev_rewards``, ``infos``. Columns named in ``output_compress_columns`` are one string instead:
base64 of the compressed ``.npy`` bytes of the array (``np.save(allow_pickle=False)``), an LZ4
frame or a zlib stream (``output_compress_codec``; the bytes name their codec, so both read).

Reading (``input``): ``JsonReader`` streams lines from a directory, a glob, a file or a list of
them (never the whole data set in memory), ``ShuffledInput`` mixes rows through a buffer, and
``BatchAssembler`` cuts the step stream into the fixed ``[T, B]`` batches a jitted update needs.
``MixedInput`` draws each batch from one of several sources (``{"sampler": 0.4, "data/":
0.6}``). A malformed line raises one ``DataError`` naming its file and line.
"""

from __future__ import annotations

import base64
import binascii
import glob
import io
import json
import math
import os
import re
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import lz4.frame
import numpy as np
import orjson

from jrl.errors import DataError

try:  # SIMD base64 (a core dependency): several times faster than binascii on long columns
    from pybase64 import b64decode as _b64decode
except ImportError:  # pragma: no cover (binascii decodes the same strings, slower)
    def _b64decode(text: str, validate: bool = True) -> bytes:
        return binascii.a2b_base64(text, strict_mode=validate)

# The columns of a written SampleBatch line, in RLlib's names.
COLUMNS = ("obs", "new_obs", "actions", "rewards", "dones", "terminateds", "truncateds",
           "action_prob", "action_logp", "eps_id", "agent_index", "t", "prev_actions",
           "prev_rewards", "infos")
# Columns a reader needs; the others have defaults (see ``decode_row``).
REQUIRED = ("obs", "new_obs", "actions", "rewards")
# dtypes of uncompressed columns whose JSON lists lose them (obs and actions keep JSON's int or
# float and are cast to the env spec's dtypes when batches are assembled).
_DTYPES = {"rewards": np.float32, "prev_rewards": np.float32, "dones": np.bool_,
           "terminateds": np.bool_, "truncateds": np.bool_, "action_prob": np.float32,
           "action_logp": np.float32, "eps_id": np.int64, "agent_index": np.int64, "t": np.int64}
DEFAULT_MAX_FILE_SIZE = 64 * 1024 * 1024


# -- columns ------------------------------------------------------------------------------------


# Codecs of compressed columns (``output_compress_codec``). A value names its codec by the
# first bytes of its base64-decoded payload: an LZ4 frame (magic ``04 22 4D 18``) or a zlib
# stream (RFC 1950 header), so files of either codec, and files mixing them, read alike.
CODECS = ("lz4", "zlib")
DEFAULT_CODEC = "lz4"
_LZ4_MAGIC = b"\x04\x22\x4d\x18"


def pack(array: np.ndarray, codec: str = DEFAULT_CODEC) -> str:
    """base64 of the compressed ``.npy`` bytes of ``array`` (dtype and shape included);
    ``codec``: ``lz4`` (an LZ4 frame, several times faster to inflate) or ``zlib``."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    if codec == "lz4":
        data = lz4.frame.compress(buf.getvalue())
    elif codec == "zlib":
        data = zlib.compress(buf.getvalue(), 1)
    else:
        raise ValueError(f"unknown codec '{codec}' (one of {', '.join(CODECS)})")
    return base64.b64encode(data).decode("ascii")


# The header ``np.save`` writes for a plain array; anything else goes through ``np.load``.
_NPY_HEADER = re.compile(
    rb"\{'descr': '([<>|=][a-zA-Z]\d*)', 'fortran_order': False, 'shape': \(([\d, ]*)\), \}")


_HEADERS: dict[bytes, tuple[np.dtype, tuple[int, ...]] | None] = {}


def _npy_header(header: bytes) -> tuple[np.dtype, tuple[int, ...]] | None:
    """dtype and shape of a plain array's ``.npy`` header (None: let ``np.load`` read it)."""
    if header not in _HEADERS:
        if len(_HEADERS) > 4096:
            _HEADERS.clear()
        match = _NPY_HEADER.match(header)
        parsed = None
        if match is not None:
            dtype = np.dtype(match.group(1).decode())
            shape = tuple(int(x) for x in match.group(2).split(b",") if x.strip())
            parsed = None if dtype.kind in "OV" else (dtype, shape)
        _HEADERS[header] = parsed
    return _HEADERS[header]


def unpack(text: str, writable: bool = True) -> np.ndarray:
    """The array ``pack`` encoded (no pickle: object arrays are refused); read-only without
    ``writable`` (a view of the decompressed bytes, no copy)."""
    data = _b64decode(text, validate=True)
    if data[:4] == _LZ4_MAGIC:
        raw = lz4.frame.decompress(data)
    elif len(data) > 1 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0:
        raw = zlib.decompress(data)
    else:
        raise ValueError("not an LZ4 frame or zlib stream of .npy bytes")
    # Fast path for version-1.0 headers of plain arrays (what ``pack`` writes): parsing them
    # with ``np.load`` (``ast.literal_eval``) costs more than decompressing a column.
    if raw[:8] == b"\x93NUMPY\x01\x00":
        end = 10 + int.from_bytes(raw[8:10], "little")
        parsed = _npy_header(raw[10:end])
        if parsed is not None:
            dtype, shape = parsed
            array = np.frombuffer(raw, dtype, count=math.prod(shape), offset=end).reshape(shape)
            return array.copy() if writable else array
    if raw[:1] == b"\x80":  # RLlib's compressed columns: LZ4-compressed pickles
        raise ValueError("it holds a pickle (RLlib's compressed format), which jrl never loads; "
                         "write the column uncompressed")
    return np.load(io.BytesIO(raw), allow_pickle=False)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def encode_row(row: Mapping[str, Any], compress_columns: Iterable[str] = (),
               codec: str = DEFAULT_CODEC) -> str:
    """One JSON line (without newline) for a row of ``[T, ...]`` columns."""
    return json.dumps(encode_columns(row, compress_columns, codec))


def encode_columns(row: Mapping[str, Any], compress_columns: Iterable[str] = (),
                   codec: str = DEFAULT_CODEC) -> dict:
    """The JSON object of a ``SampleBatch`` row of ``[T, ...]`` columns (``compress_columns``
    ``pack``ed with ``codec``)."""
    compress = set(compress_columns)
    out: dict[str, Any] = {"type": "SampleBatch"}
    for key, value in row.items():
        if key == "infos":
            out[key] = [_jsonable(v) for v in value]
        elif key in compress:
            out[key] = pack(np.asarray(value), codec)
        else:
            out[key] = np.asarray(value).tolist()
    return out


def complete_row(row: Mapping[str, np.ndarray], prev_action: Any = None,
                 prev_reward: float = 0.0) -> dict[str, Any]:
    """``row`` plus the derived columns of the format: ``dones``, ``action_prob``,
    ``agent_index``, ``prev_actions``, ``prev_rewards`` and ``infos`` (empty dicts) where absent.

    ``prev_action``/``prev_reward`` are the episode's step before the row's first one (used
    when the row starts mid-episode, ``t[0] > 0``)."""
    row = {k: np.asarray(v) if k != "infos" else v for k, v in row.items()}
    n = len(row["rewards"])
    actions = row["actions"]
    out = dict(row)
    out.setdefault("dones", np.asarray(row["terminateds"]) | np.asarray(row["truncateds"]))
    logp = row.get("action_logp", np.zeros(n, np.float32))
    out.setdefault("action_logp", logp)
    out.setdefault("action_prob", np.exp(logp).astype(np.float32))
    out.setdefault("agent_index", np.zeros(n, np.int64))
    t = np.asarray(row.get("t", np.arange(n)))
    out.setdefault("t", t)
    if "prev_actions" not in out:
        prev = np.zeros_like(actions)
        prev[1:] = actions[:-1]
        if n and t[0] > 0 and prev_action is not None:
            prev[0] = prev_action
        prev[t == 0] = 0
        out["prev_actions"] = prev
    if "prev_rewards" not in out:
        rewards = np.asarray(row["rewards"], np.float32)
        prev_r = np.zeros_like(rewards)
        prev_r[1:] = rewards[:-1]
        if n and t[0] > 0:
            prev_r[0] = prev_reward
        prev_r[t == 0] = 0.0
        out["prev_rewards"] = prev_r
    out.setdefault("infos", [{} for _ in range(n)])
    return out


class JsonWriter:
    """Writes sample batches as JSON lines (RLlib's ``JsonWriter``).

    Args:
      path: output directory (created), or a file path ending in ``.json`` to write exactly
        that file (``jrl evaluate --out``; no size cap then).
      compress_columns: columns stored as ``pack``ed strings.
      compress_codec: their codec, ``lz4`` or ``zlib`` (``output_compress_codec``).
      worker_index: the writing worker's index (part of the file name).
      max_file_size: start a new file once the current one holds this many bytes.
      single_file: write exactly the file ``path`` (default: when ``path`` ends in ``.json``
        and is not a directory).
    """

    def __init__(self, path: str, compress_columns: Iterable[str] = (), worker_index: int = 0,
                 max_file_size: int = DEFAULT_MAX_FILE_SIZE, single_file: bool | None = None,
                 compress_codec: str = DEFAULT_CODEC):
        if compress_codec not in CODECS:
            raise ValueError(f"unknown codec '{compress_codec}' (one of {', '.join(CODECS)})")
        self.compress_columns = tuple(compress_columns)
        self.compress_codec = compress_codec
        self.max_file_size = int(max_file_size)
        self.worker_index = worker_index
        if single_file is None:
            single_file = path.endswith(".json") and not os.path.isdir(path)
        self._single_file = single_file
        self.directory = os.path.dirname(os.path.abspath(path)) if self._single_file else path
        os.makedirs(self.directory, exist_ok=True)
        self._fixed_path = path if self._single_file else None
        self._date = time.strftime("%Y-%m-%d_%H-%M-%S")
        self._file_index = 0
        self._fh: io.TextIOBase | None = None
        self._bytes = 0
        self._prev: dict[int, tuple[Any, float]] = {}
        self.paths: list[str] = []

    def _next_path(self) -> str:
        if self._fixed_path is not None:
            return self._fixed_path
        while True:
            name = (f"output-{self._date}_worker-{self.worker_index}_{self._file_index}.json")
            self._file_index += 1
            path = os.path.join(self.directory, name)
            if not os.path.exists(path):
                return path

    def _handle(self) -> io.TextIOBase:
        rollover = (self._fixed_path is None and self._fh is not None
                    and self._bytes >= self.max_file_size)
        if rollover:
            self._fh.close()
            self._fh = None
        if self._fh is None:
            path = self._next_path()
            self._fh = open(path, "w")  # noqa: SIM115 (kept open across writes, closed in close)
            self._bytes = 0
            self.paths.append(path)
        return self._fh

    def write_row(self, row: Mapping[str, Any], lane: int | None = None) -> None:
        """Writes one row of ``[T, ...]`` columns (derived columns are added)."""
        prev_action, prev_reward = self._prev.get(lane, (None, 0.0)) if lane is not None \
            else (None, 0.0)
        full = complete_row(row, prev_action, prev_reward)
        if lane is not None and len(full["rewards"]):
            self._prev[lane] = (full["actions"][-1], float(full["rewards"][-1]))
        self._write_line(encode_row(_ordered(full), self.compress_columns, self.compress_codec)
                         + "\n")

    def write_multi_agent(self, policy_rows: Mapping[str, list], count: int) -> None:
        """Writes one ``MultiAgentBatch`` line: for each policy, its rows (one per agent, each
        completed with the derived columns on its own) one after another."""
        batches = {}
        for pid, rows in policy_rows.items():
            full = [complete_row(row) for row in rows]
            joined = {k: ([x for f in full for x in f[k]] if k == "infos"
                          else np.concatenate([f[k] for f in full])) for k in full[0]}
            batches[str(pid)] = encode_columns(_ordered(joined), self.compress_columns,
                                               self.compress_codec)
        self._write_line(json.dumps({"type": "MultiAgentBatch", "policy_batches": batches,
                                     "count": int(count)}) + "\n")

    def _write_line(self, line: str) -> None:
        fh = self._handle()
        fh.write(line)
        fh.flush()
        self._bytes += len(line)

    def write(self, batch: Mapping[str, np.ndarray], infos: Any = None) -> None:
        """Writes a ``[T, B]`` fragment as ``B`` lines; ``infos`` is ``[T][B]`` dicts or None."""
        columns = {k: np.asarray(v) for k, v in batch.items()}
        num_envs = columns["rewards"].shape[1]
        for b in range(num_envs):
            row = {k: v[:, b] for k, v in columns.items()}
            if infos is not None:
                row["infos"] = [step[b] for step in infos]
            self.write_row(row, lane=b)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _ordered(row: Mapping[str, Any]) -> dict[str, Any]:
    ordered = {k: row[k] for k in COLUMNS if k in row}  # RLlib's columns first
    ordered.update((k, v) for k, v in row.items() if k not in COLUMNS)
    return ordered


_RECORDED = ("obs", "new_obs", "actions", "rewards", "terminateds", "truncateds", "action_logp")


def write_episodes(path: str, episodes: Iterable[Mapping[str, Any]],
                   compress_columns: Iterable[str] = (), compress_codec: str = DEFAULT_CODEC
                   ) -> None:
    """Writes recorded episodes (``obs``, ``new_obs``, ``actions``, ``rewards``,
    ``terminateds``, ``truncateds``, ``action_logp``), one line each, to the file ``path``.

    A multi-agent episode (``agent_batches``: ``{policy_id: [one such dict per agent, with
    its ``agent_index``]}``) becomes one ``MultiAgentBatch`` line."""
    writer = JsonWriter(path, compress_columns, single_file=True, compress_codec=compress_codec)
    try:
        for eps_id, episode in enumerate(episodes):
            if "agent_batches" in episode:
                policy_rows = {}
                for pid, agents in episode["agent_batches"].items():
                    rows = []
                    for agent in agents:
                        n = len(agent["rewards"])
                        row = {k: np.asarray(agent[k]) for k in _RECORDED}
                        row["eps_id"] = np.full(n, episode.get("eps_id", eps_id), np.int64)
                        row["agent_index"] = np.full(n, agent["agent_index"], np.int64)
                        row["t"] = np.arange(n, dtype=np.int64)
                        rows.append(row)
                    if rows:
                        policy_rows[pid] = rows
                writer.write_multi_agent(policy_rows, episode["episode_len"])
                continue
            n = len(episode["rewards"])
            row = {k: np.asarray(episode[k]) for k in (
                "obs", "new_obs", "actions", "rewards", "terminateds", "truncateds",
                "action_logp")}
            row["eps_id"] = np.full(n, episode.get("eps_id", eps_id), np.int64)
            row["t"] = np.arange(n, dtype=np.int64)
            writer.write_row(row)
    finally:
        writer.close()


# -- reading ------------------------------------------------------------------------------------


def resolve_files(source: str | Iterable[str]) -> list[str]:
    """The files of an ``input`` source: a directory (its ``*.json`` files), a glob, a file, or
    a list of those; a source without files is a ``DataError``."""
    sources = [source] if isinstance(source, str) else list(source)
    files: list[str] = []
    for item in sources:
        item = os.path.expanduser(str(item))
        if os.path.isdir(item):
            found = sorted(glob.glob(os.path.join(item, "*.json")))
        elif glob.has_magic(item):
            found = sorted(p for p in glob.glob(item) if os.path.isfile(p))
        elif os.path.isfile(item):
            found = [item]
        else:
            raise DataError(f"input '{item}' is not a file, directory or glob that exists")
        if not found:
            raise DataError(f"input '{item}' holds no .json files")
        files.extend(found)
    return files


def decode_row(obj: Any, columns: Iterable[str] | None = None) -> dict[str, Any]:
    """Arrays ``[T, ...]`` of one parsed line; ``ValueError`` says what is wrong with it.

    With ``columns`` only those (and the required ones) are decoded, and decoded compressed
    columns may be read-only (the batch assembler copies them anyway)."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    kind = obj.get("type", "SampleBatch")
    if kind != "SampleBatch":
        raise ValueError(f"type '{kind}' is not supported (only SampleBatch)")
    missing = [c for c in REQUIRED if c not in obj]
    if missing:
        raise ValueError(f"missing column(s) {', '.join(missing)}")
    row: dict[str, Any] = {}
    wanted = None
    if columns is not None:  # plus what stands in for a missing column (RLlib's data)
        wanted = {*columns, *REQUIRED}
        wanted |= {"dones"} if "terminateds" not in obj else set()
        wanted |= {"action_prob"} if "action_logp" not in obj else set()
    for key, value in obj.items():
        if key == "type" or (wanted is not None and key not in wanted):
            continue
        if key == "infos":
            row[key] = value
            continue
        try:
            if isinstance(value, str):
                array = unpack(value, writable=columns is None)
            else:
                array = np.array(value, dtype=_DTYPES.get(key))
        except Exception as e:  # noqa: BLE001 (any decoding failure is a data error)
            raise ValueError(f"column '{key}' cannot be decoded ({e})") from None
        if array.dtype == object or array.ndim == 0:
            raise ValueError(f"column '{key}' is ragged or not numeric")
        row[key] = array
    n = len(row["rewards"])
    for key, value in row.items():
        if len(value) != n:
            raise ValueError(f"column '{key}' has {len(value)} steps, 'rewards' has {n}")
    if "terminateds" not in row:
        row["terminateds"] = row["dones"].astype(bool) if "dones" in row else np.zeros(n, bool)
    if "truncateds" not in row:
        row["truncateds"] = np.zeros(n, bool)
    if "action_logp" not in row:
        row["action_logp"] = (np.log(row["action_prob"]).astype(np.float32)
                              if "action_prob" in row else np.zeros(n, np.float32))
    return row


def parse_line(line: bytes | str) -> Any:
    """One JSON line parsed: orjson (several times faster on the long number lists of a
    row), falling back to the standard library for what strict JSON refuses but RLlib's
    writer (``json.dumps``) may write: ``NaN``, ``Infinity``, ``-Infinity``."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return json.loads(line)


def policy_batch(obj: Any, policy_id: str | None) -> Any:
    """The ``SampleBatch`` object of a parsed line for ``policy_id`` (None: a single-agent
    reader), or None when the line holds nothing for that policy."""
    if not isinstance(obj, Mapping):
        return obj  # decode_row says what is wrong
    if obj.get("type") == "MultiAgentBatch":
        batches = obj.get("policy_batches")
        if not isinstance(batches, Mapping):
            raise ValueError("a MultiAgentBatch needs a 'policy_batches' object")
        if policy_id is not None:
            return batches.get(policy_id)
        if len(batches) != 1:
            raise ValueError(f"a MultiAgentBatch of policies {sorted(batches)}; a single-agent "
                             f"trainer reads SampleBatch lines or MultiAgentBatch lines of one "
                             f"policy")
        return next(iter(batches.values()))
    if policy_id is not None and policy_id != "default_policy":
        return None
    return obj


_INFOS_MEMBER = b', "infos": ['


def drop_empty_infos(line: bytes) -> bytes:
    """``line`` without its last member when that is ``"infos": [{}, {}, ..., {}]`` exactly as
    ``json.dumps`` writes it (RLlib's and jrl's writers), else ``line`` itself: a reader that
    does not want ``infos`` then parses no per-step dicts, which cost as much as all the
    compressed columns of a line."""
    if not line.endswith(b"{}]}\n"):
        return line
    pos = line.rfind(_INFOS_MEMBER)
    if pos < 0:
        return line
    start, stop = pos + len(_INFOS_MEMBER), len(line) - 3  # the list's items, ending in {}
    if stop - start != 4 * line.count(b"{}, ", start, stop) + 2:
        return line
    return line[:pos] + b"}"


def iter_rows(files: Iterable[str], columns: Iterable[str] | None = None,
              policy_id: str | None = None) -> Iterator[dict[str, Any]]:
    """Decoded rows of ``files`` (``columns`` only, when given), streamed line by line;
    with ``policy_id`` that policy's batches of ``MultiAgentBatch`` lines."""
    columns = None if columns is None else tuple(columns)
    skip_infos = columns is not None and "infos" not in columns
    for path in files:
        # A 1 MiB buffer: rows are long lines, which the default 8 KiB buffer reads in pieces.
        with open(path, "rb", buffering=1 << 20) as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = policy_batch(parse_line(drop_empty_infos(line) if skip_infos
                                                  else line), policy_id)
                    if obj is None:
                        continue
                    row = decode_row(obj, columns)
                except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError: a ValueError
                    raise DataError(f"{path}, line {lineno}: malformed SampleBatch line: {e}"
                                    ) from None
                yield row


def read_json(path: str | Iterable[str]) -> Iterator[dict[str, Any]]:
    """Every row written to ``path`` (a directory, glob, file or list), once, in file order."""
    return iter_rows(resolve_files(path))


class ShuffledInput:
    """Rows of ``rows`` in random order through a buffer of ``size`` rows (RLlib's
    ``shuffle_buffer_size``); ``size <= 1`` keeps the order."""

    def __init__(self, rows: Iterator[dict], size: int, seed: int = 0):
        self.rows, self.size = rows, size
        self.rng = np.random.default_rng(seed)
        self.buffer: list[dict] = []

    def __iter__(self) -> Iterator[dict]:
        if self.size <= 1:
            yield from self.rows
            return
        for row in self.rows:
            self.buffer.append(row)
            if len(self.buffer) >= self.size:
                i = int(self.rng.integers(len(self.buffer)))
                self.buffer[i], self.buffer[-1] = self.buffer[-1], self.buffer[i]
                yield self.buffer.pop()
        while self.buffer:
            i = int(self.rng.integers(len(self.buffer)))
            self.buffer[i], self.buffer[-1] = self.buffer[-1], self.buffer[i]
            yield self.buffer.pop()


# Columns of an assembled training batch.
BATCH_COLUMNS = ("obs", "new_obs", "actions", "rewards", "terminateds", "truncateds",
                 "action_logp", "eps_id", "t")


class BatchAssembler:
    """Cuts a stream of rows into ``[T, B]`` batches (``B`` lanes of ``T`` consecutive steps).

    Rows are laid end to end; where a row ends without its episode ending, the step is marked
    ``truncated`` so that returns bootstrap there instead of running into the next row. Each
    batch also holds ``episode_start`` ``[T, B]``: the first step of each (part of an) episode
    in a lane, for off-policy estimation.

    With ``episode_cuts`` (``postprocess_inputs``) the rows are cut per episode: a step after
    which ``eps_id`` changes or ``t`` does not count on by one ends its episode there
    (``truncated`` unless terminated), so postprocessing never runs across two episodes of one
    row; and a row that continues the episode the previous row left open (same ``eps_id``,
    ``t`` counting on) is joined to it without the cut.

    Args:
      T, B: batch shape.
      obs_dtype, action_dtype: dtypes the batch's ``obs``/``new_obs`` and ``actions`` get.
      obs_shape: the env's observation shape (a row of another shape is a ``DataError``).
      episode_cuts: cut rows by ``eps_id``/``t`` as above.
    """

    def __init__(self, T: int, B: int, obs_dtype: Any, action_dtype: Any,
                 obs_shape: tuple[int, ...] | None = None, episode_cuts: bool = False):
        self.episode_cuts = episode_cuts
        # (eps_id, t) of the last pending step when only the row's end cut its episode
        self._open_end: tuple[int, int] | None = None
        self.T, self.B = T, B
        self.obs_dtype, self.action_dtype = np.dtype(obs_dtype), np.dtype(action_dtype)
        self.obs_shape = tuple(obs_shape) if obs_shape is not None else None
        self._pending: list[dict[str, np.ndarray]] = []
        self._count = 0

    def _columns(self, row: dict) -> dict[str, np.ndarray]:
        n = len(row["rewards"])
        if self.obs_shape is not None and row["obs"].shape[1:] != self.obs_shape:
            raise DataError(f"recorded observations have shape {row['obs'].shape[1:]}, the env's "
                            f"are {self.obs_shape}: the data was recorded on another env")
        cols = {
            "obs": row["obs"].astype(self.obs_dtype, copy=False),
            "new_obs": row["new_obs"].astype(self.obs_dtype, copy=False),
            "actions": row["actions"].astype(self.action_dtype, copy=False),
            "rewards": row["rewards"].astype(np.float32, copy=False),
            "terminateds": row["terminateds"].astype(bool, copy=False),
            "truncateds": row["truncateds"].astype(bool, copy=True),
            "action_logp": row["action_logp"].astype(np.float32, copy=False),
            "eps_id": row.get("eps_id", np.zeros(n, np.int64)).astype(np.int64, copy=False),
            "t": row.get("t", np.arange(n)).astype(np.int64, copy=False),
        }
        if self.episode_cuts and n > 1:
            eps_id, t = cols["eps_id"], cols["t"]
            new_episode = (eps_id[1:] != eps_id[:-1]) | (t[1:] != t[:-1] + 1)
            cols["truncateds"][:-1] |= new_episode & ~cols["terminateds"][:-1]
        if n:
            cols["truncateds"][-1] |= not cols["terminateds"][-1]
        start = np.zeros(n, bool)
        if n:
            start[0] = True
            done = cols["terminateds"] | cols["truncateds"]
            start[1:] = done[:-1]
        cols["episode_start"] = start
        return cols

    def add(self, row: dict) -> None:
        if not len(row["rewards"]):
            return
        cols = self._columns(row)
        if self.episode_cuts:
            if (self._open_end is not None and self._pending
                    and (int(cols["eps_id"][0]), int(cols["t"][0])) == self._open_end):
                last = self._pending[-1]
                last["truncateds"][-1] = False
                cols["episode_start"][0] = False
            recorded_end = bool(np.asarray(row["truncateds"])[-1] or cols["terminateds"][-1])
            self._open_end = (None if recorded_end
                              else (int(cols["eps_id"][-1]), int(cols["t"][-1]) + 1))
        self._pending.append(cols)
        self._count += len(row["rewards"])

    @property
    def ready(self) -> bool:
        return self._count >= self.T * self.B

    def pop(self) -> dict[str, np.ndarray]:
        """The next ``[T, B]`` batch (needs ``ready``)."""
        return {k: v[0] for k, v in self.pop_stacked(1).items()}

    def pop_stacked(self, count: int | None = None) -> dict[str, np.ndarray]:
        """The next ``count`` batches (default: every full one pending) stacked,
        ``{column: [count, T, B, ...]}``: one concatenation and one copy per column however
        many batches (needs ``ready``)."""
        n = self.T * self.B
        count = self._count // n if count is None else count
        if count < 1 or count * n > self._count:
            raise ValueError(f"{count} batches of {n} steps asked, {self._count} steps pending")
        m = count * n
        flat = {k: np.concatenate([p[k] for p in self._pending]) for k in self._pending[0]}
        rest = {k: v[m:] for k, v in flat.items()}
        self._pending = [rest] if len(rest["rewards"]) else []
        if self._pending:
            rest["episode_start"][0] = True
        self._count -= m
        batch = {}
        for k, v in flat.items():
            lanes = v[:m].reshape(count, self.B, self.T, *v.shape[1:])
            batch[k] = np.ascontiguousarray(np.swapaxes(lanes, 1, 2))
        batch["episode_start"][:, 0] = True
        return batch


class JsonReader:
    """``[T, B]`` batches from JSON files, streamed; the files are read again from the start
    when exhausted (``loop``), in a new shuffled order when ``shuffle_buffer_size > 1``."""

    def __init__(self, source: str | Iterable[str], assembler: BatchAssembler,
                 shuffle_buffer_size: int = 0, seed: int = 0, loop: bool = True,
                 policy_id: str | None = None):
        self.files = resolve_files(source)
        self.policy_id = policy_id
        self.assembler = assembler
        self.shuffle_buffer_size = shuffle_buffer_size
        self.loop = loop
        self._seed = seed
        self._rows = self._stream()

    def _stream(self) -> Iterator[dict]:
        passes = 0
        while True:
            yielded = False
            rows = ShuffledInput(iter_rows(self.files, BATCH_COLUMNS, self.policy_id),
                                 self.shuffle_buffer_size,
                                 self._seed + passes)
            for row in rows:
                yielded = True
                yield row
            passes += 1
            if not self.loop:
                return
            if not yielded:
                whose = f" of policy '{self.policy_id}'" if self.policy_id is not None else ""
                raise DataError(f"input files {self.files[:3]} hold no rows{whose}")

    def next(self) -> dict[str, np.ndarray] | None:
        """The next batch, or None once a non-looping reader is exhausted."""
        while not self.assembler.ready:
            row = next(self._rows, None)
            if row is None:
                return None
            self.assembler.add(row)
        return self.assembler.pop()


class MixedInput:
    """Each ``next()`` draws one source by probability (RLlib's ``MixedInput``).

    Args:
      sources: ``{name: probability}``; probabilities sum to 1.
      readers: ``{name: () -> batch}``.
      seed: seed of the draws.
    """

    def __init__(self, sources: Mapping[str, float], readers: Mapping[str, Callable[[], Any]],
                 seed: int = 0):
        self.names = list(sources)
        probs = np.asarray([float(sources[n]) for n in self.names])
        self.probs = probs / probs.sum()
        self.readers = readers
        self.rng = np.random.default_rng(seed)
        self.counts = dict.fromkeys(self.names, 0)

    def next(self) -> tuple[str, Any]:
        name = self.names[int(self.rng.choice(len(self.names), p=self.probs))]
        self.counts[name] += 1
        return name, self.readers[name]()


def load_dataset(source: str | Iterable[str], T: int, B: int, obs_dtype: Any,
                 action_dtype: Any, obs_shape: tuple[int, ...] | None = None
                 ) -> dict[str, np.ndarray]:
    """Every full ``[T, B]`` batch of ``source`` stacked: ``{column: [K, T, B, ...]}`` (for
    training inside one jit; the steps of a last partial batch are dropped)."""
    assembler = BatchAssembler(T, B, obs_dtype, action_dtype, obs_shape)
    reader = JsonReader(source, assembler, loop=False)
    for row in reader._rows:
        assembler.add(row)
    if not assembler.ready:
        raise DataError(f"input {source!r} holds fewer than one batch of {T * B} steps")
    return assembler.pop_stacked()
