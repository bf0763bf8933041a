"""Checkpoints: one directory per training iteration, written atomically, restored against a shape.

Layout of ``<checkpoint_dir>/checkpoint_<iteration:06d>/``::

    state/          the train state's leaves as an orbax pytree ``{"0": leaf0, "1": leaf1, ...}``
    metadata.json   caller's metadata + format_version, jrl_version, iteration, saved_at, state_tree
    .complete       empty marker, written last

Everything is written into a hidden sibling ``.tmp_checkpoint_*`` directory first and renamed into
place, so a crash never leaves a directory named ``checkpoint_*`` that looks complete. The state is
saved as a flat dict of leaves because orbax does not keep NamedTuple types; the leaves' key paths,
shapes and dtypes go into ``metadata.json`` and restoring unflattens them into the caller's abstract
state (``jax.eval_shape`` output), so a different network or algorithm is a clear ``CheckpointError``.
No pickle is involved anywhere.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import importlib.metadata
import json
import logging
import os
import re
import shutil
import sys
import time
import uuid
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jrl.config import jsonable
from jrl.errors import CheckpointError
from jrl.logger import json_safe

# 1: the learner state only.  2: named parts (``algo``, ``runner``, ``replay``) and the
# JSON-able resume state (sampler, plan counters) in metadata.json.
FORMAT_VERSION = 2

# ``MIGRATIONS[v]`` turns the metadata of a format-``v`` checkpoint into format ``v + 1``'s; a
# layout change bumps FORMAT_VERSION and adds one here, so every older checkpoint (the golden
# ones under tests/golden/ included) keeps restoring.
MIGRATIONS: dict[int, Any] = {}


def migration(from_version: int) -> Any:
    """Registers ``fn(metadata) -> metadata`` upgrading format ``from_version`` by one."""
    def register(fn: Any) -> Any:
        MIGRATIONS[from_version] = fn
        return fn
    return register


@migration(1)
def _state_becomes_the_algo_part(metadata: dict) -> dict:
    return {**metadata, "parts": ["algo"], "resume": {}}


def migrate(metadata: dict, directory: str = "") -> dict:
    """``metadata`` of any older format upgraded to FORMAT_VERSION, one step at a time."""
    version = metadata.get("format_version")
    while isinstance(version, int) and version < FORMAT_VERSION:
        if version not in MIGRATIONS:
            raise CheckpointError(f"checkpoint '{directory}' has format version {version}, "
                                  "which this jrl cannot read any more")
        metadata = {**MIGRATIONS[version](metadata), "format_version": version + 1}
        version += 1
    return metadata

METADATA_FILE = "metadata.json"
COMPLETE_MARKER = ".complete"
STATE_DIR = "state"
TMP_PREFIX = ".tmp_checkpoint_"

_CHECKPOINT_NAME = re.compile(r"^checkpoint_(\d+)$")


def checkpoint_name(iteration: int) -> str:
    """Directory name of the checkpoint of ``iteration``: ``checkpoint_000010``."""
    return f"checkpoint_{iteration:06d}"


def save_checkpoint(checkpoint_dir: str, iteration: int, state: Any, metadata: dict) -> str:
    """Writes ``state`` and ``metadata`` to ``<checkpoint_dir>/checkpoint_<iteration:06d>``.

    The directory appears complete or not at all; an existing checkpoint of the same iteration is
    replaced.

    Args:
      checkpoint_dir: directory holding the checkpoints (created if missing).
      iteration: training iteration; names the directory.
      state: pytree of arrays (jax or numpy; NamedTuples and dicts are fine).
      metadata: JSON-able description (algo, env, config, ...) stored in ``metadata.json``.

    Returns:
      The path of the checkpoint directory.
    """
    import orbax.checkpoint as ocp

    if int(iteration) < 0:
        raise CheckpointError(f"checkpoint iteration must be >= 0, got {iteration}")
    iteration = int(iteration)
    checkpoint_dir = os.path.abspath(os.path.expanduser(checkpoint_dir))
    os.makedirs(checkpoint_dir, exist_ok=True)
    name = checkpoint_name(iteration)
    final = os.path.join(checkpoint_dir, name)
    clean_stale_tmp(checkpoint_dir)
    tmp = os.path.join(checkpoint_dir,
                       f"{TMP_PREFIX}{iteration:06d}_{os.getpid()}_{uuid.uuid4().hex[:8]}")

    leaves_with_paths, treedef = jax.tree_util.tree_flatten_with_path(state)
    key_impls = [_key_impl(leaf) for _, leaf in leaves_with_paths]
    leaves = [_host_array(leaf) for _, leaf in leaves_with_paths]
    state_tree = {
        "treedef": str(treedef),
        "paths": [jax.tree_util.keystr(path) for path, _ in leaves_with_paths],
        "shapes": [list(leaf.shape) for leaf in leaves],
        "dtypes": [leaf.dtype.name for leaf in leaves],
        # Typed PRNG keys are saved as their raw data and wrapped again on restore.
        "key_impls": key_impls,
    }
    meta = dict(json_safe(metadata or {}))
    meta.update(
        format_version=FORMAT_VERSION,
        jrl_version=_jrl_version(),
        iteration=iteration,
        saved_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        state_tree=state_tree,
    )
    try:
        text = json.dumps(jsonable(meta), indent=2, allow_nan=False)
    except ValueError as e:
        raise CheckpointError(f"checkpoint metadata is not JSON-able: {e}") from None

    os.makedirs(tmp)
    try:
        with quiet_orbax():
            ocp.v1.save(os.path.join(tmp, STATE_DIR),
                        {str(i): leaf for i, leaf in enumerate(leaves)})
        _write_file(os.path.join(tmp, METADATA_FILE), text)
        _write_file(os.path.join(tmp, COMPLETE_MARKER), "")
        _replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


_TMP_NAME = re.compile(r"^\.tmp_checkpoint_\d+_(?:(\d+)_)?[0-9a-f]{8}(?:_old)?$")
# A temp directory of unknown owner (older naming, or another host) is stale after this long.
STALE_TMP_S = 3600.0


def clean_stale_tmp(checkpoint_dir: str) -> list[str]:
    """Removes half-written ``.tmp_checkpoint_*`` directories that a killed save left in
    ``checkpoint_dir`` (their writer process is gone, or they are over an hour old); returns
    the removed paths. Saves call it, so temp directories never pile up."""
    removed = []
    try:
        names = os.listdir(checkpoint_dir)
    except OSError:
        return removed
    for name in names:
        match = _TMP_NAME.match(name)
        if not match:
            continue
        path = os.path.join(checkpoint_dir, name)
        pid = int(match.group(1)) if match.group(1) else None
        try:
            age = time.time() - os.path.getmtime(path)
        except OSError:
            continue
        if (pid is not None and pid != os.getpid() and not _alive(pid)) or age > STALE_TMP_S:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def resolve_checkpoint(path: str) -> str:
    """The checkpoint directory meant by ``path``, checked to be complete.

    ``path`` may be the checkpoint directory, any path inside it (RLlib-style
    ``.../checkpoint_000010/checkpoint-10``, which need not exist), or a results/trial directory
    holding ``checkpoint_*`` directories (the latest complete one is taken).

    Raises:
      CheckpointError: nothing is there, or the checkpoint is incomplete or corrupt.
    """
    given = os.fspath(path)
    full = os.path.abspath(os.path.expanduser(given))
    candidate = full
    while True:
        if _CHECKPOINT_NAME.match(os.path.basename(candidate)) and os.path.isdir(candidate):
            # Tune names its own checkpoint directories the same way and keeps ours inside.
            nested = None if _has_checkpoint_files(candidate) else latest_checkpoint(candidate)
            if nested is not None:
                return nested
            _check_complete(candidate)
            return candidate
        parent = os.path.dirname(candidate)
        if parent == candidate:
            break
        candidate = parent

    if not os.path.exists(full):
        raise CheckpointError(f"checkpoint '{given}' does not exist")
    if not os.path.isdir(full):
        raise CheckpointError(f"'{given}' is not a checkpoint: not inside a checkpoint_* directory")
    if os.path.exists(os.path.join(full, METADATA_FILE)) or \
            os.path.exists(os.path.join(full, COMPLETE_MARKER)):
        # A checkpoint directory that was renamed by the user.
        _check_complete(full)
        return full
    latest = latest_checkpoint(full)
    if latest is not None:
        return latest
    if _numbered_dirs(full):
        raise CheckpointError(f"'{given}' holds no complete checkpoint: every checkpoint_* "
                              "directory in it is incomplete")
    raise CheckpointError(f"'{given}' is not a checkpoint and contains no checkpoint_* directories")


def _has_checkpoint_files(directory: str) -> bool:
    return any(os.path.exists(os.path.join(directory, name))
               for name in (METADATA_FILE, COMPLETE_MARKER, STATE_DIR))


def load_metadata(path: str) -> dict:
    """The metadata of the checkpoint at ``path`` (see ``resolve_checkpoint`` for accepted paths).

    Raises:
      CheckpointError: the checkpoint is missing, incomplete, corrupt, or from a newer jrl.
    """
    directory = resolve_checkpoint(path)
    return _read_metadata(directory)


def restore_state(path: str, abstract_state: Any) -> Any:
    """The state saved at ``path``, shaped like ``abstract_state``.

    Args:
      path: a checkpoint (see ``resolve_checkpoint`` for accepted paths).
      abstract_state: pytree of ``jax.ShapeDtypeStruct`` (``jax.eval_shape`` of the state's init) or
        arrays; its structure, shapes and dtypes must match the saved state's.

    Returns:
      A pytree with the structure of ``abstract_state`` (NamedTuples included) holding jax arrays;
      leaves whose abstract value carries a sharding are placed with it.

    Raises:
      CheckpointError: one line naming the checkpoint and what does not match or cannot be read.
    """
    import orbax.checkpoint as ocp

    directory = resolve_checkpoint(path)
    metadata = _read_metadata(directory)

    def fail(reason: str) -> CheckpointError:
        return CheckpointError(f"cannot restore checkpoint '{directory}': {reason}")

    abstract_with_paths, treedef = jax.tree_util.tree_flatten_with_path(abstract_state)
    abstract_leaves = [leaf for _, leaf in abstract_with_paths]
    saved_tree = metadata.get("state_tree")
    if isinstance(saved_tree, dict) and isinstance(saved_tree.get("paths"), list):
        saved_paths = saved_tree["paths"]
        paths = [jax.tree_util.keystr(p) for p, _ in abstract_with_paths]
        if len(saved_paths) != len(paths):
            raise fail(f"the state has {len(paths)} arrays but the checkpoint has {len(saved_paths)} "
                       "(different algorithm or model config?)")
        for saved, expected in zip(saved_paths, paths, strict=True):
            if saved != expected:
                raise fail(f"state structure differs: checkpoint has 'state{saved}' where "
                           f"'state{expected}' is expected (different algorithm or model config?)")

    try:
        with quiet_orbax():
            restored = ocp.v1.load(os.path.join(directory, STATE_DIR))
    except Exception as e:  # orbax/tensorstore raise many types for unreadable files
        raise fail(f"state files are unreadable: {_short(e)}") from None
    if not isinstance(restored, dict) or \
            sorted(restored, key=_int_or_inf) != [str(i) for i in range(len(restored))]:
        raise fail("state files do not hold a jrl state")
    if len(restored) != len(abstract_leaves):
        raise fail(f"the state has {len(abstract_leaves)} arrays but the checkpoint has "
                   f"{len(restored)} (different algorithm or model config?)")

    key_impls = saved_tree.get("key_impls") if isinstance(saved_tree, dict) else None
    if not isinstance(key_impls, list) or len(key_impls) != len(abstract_leaves):
        key_impls = [None] * len(abstract_leaves)
    leaves = []
    for i, (key_path, abstract) in enumerate(abstract_with_paths):
        saved = np.asarray(restored[str(i)])
        name = "state" + jax.tree_util.keystr(key_path)
        sharding = getattr(abstract, "sharding", None)
        if _is_key(abstract):
            leaf = _wrap_key(saved, key_impls[i], abstract, name, fail)
        elif key_impls[i] is not None:
            raise fail(f"{name} is a PRNG key in the checkpoint, expected an array of dtype "
                       f"{np.dtype(abstract.dtype).name}")
        else:
            shape, dtype = _shape_dtype(abstract)
            if tuple(saved.shape) != shape:
                raise fail(f"{name} has shape {tuple(saved.shape)} in the checkpoint, "
                           f"expected {shape}")
            if jax.dtypes.canonicalize_dtype(saved.dtype) != dtype:
                raise fail(f"{name} has dtype {saved.dtype.name} in the checkpoint, "
                           f"expected {dtype.name}")
            leaf = saved.astype(dtype, copy=False)
        if isinstance(sharding, jax.sharding.Sharding):
            leaves.append(jax.device_put(leaf, sharding))
        else:
            leaves.append(jnp.asarray(leaf))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def read_counters(path: str, metadata: dict) -> dict[str, Any]:
    """The run counters in ``metadata``, checked: a missing one is 0, a wrong one a
    ``CheckpointError`` naming the checkpoint."""
    counters: dict[str, Any] = {}
    for name, kind in (("training_iteration", int), ("timesteps_total", int),
                       ("episodes_total", int), ("time_total_s", float)):
        value = metadata.get(name, metadata.get("iteration", 0) if name == "training_iteration"
                             else 0)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
        if kind is int:
            ok = ok and float(value).is_integer()
        if not ok or (isinstance(value, float) and not np.isfinite(value)):
            raise CheckpointError(f"checkpoint '{path}' is incomplete or corrupt: "
                                  f"{METADATA_FILE} has {name} = {value!r}, expected a "
                                  f"{'non-negative integer' if kind is int else 'number >= 0'}")
        counters[name] = kind(value)
    config = metadata.get("config", {})
    if not isinstance(config, dict):
        raise CheckpointError(f"checkpoint '{path}' is incomplete or corrupt: {METADATA_FILE} "
                              f"has a config that is a {type(config).__name__}, not a mapping")
    return counters


# Loggers orbax and the libraries under it write failures to, besides raising them.
_NOISY_LOGGERS = ("absl", "orbax", "orbax.checkpoint", "asyncio", "tensorstore", "etils")


@contextlib.contextmanager
def quiet_orbax() -> Any:
    """Keeps orbax's own logging (and the asyncio tasks it leaves failed) off the terminal: the
    caller turns the exception into one line naming the checkpoint. ``-vv`` on the CLI (log
    level DEBUG) lets everything through."""
    if logging.getLogger("jrl").getEffectiveLevel() <= logging.DEBUG:
        yield
        return
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    saved = [(lg.level, lg.disabled) for lg in loggers]
    for lg in loggers:
        lg.disabled = True
    stderr = _StderrToFile()
    try:
        yield
    except BaseException:
        gc.collect()  # failed tasks report "exception was never retrieved" when collected
        # tensorstore's threads go on printing "Event loop is closed" tracebacks for the reads
        # still in flight after orbax gave up: let them finish while stderr goes to a file.
        stderr.settle()
        _drop_closed_loop_errors()  # and those that come later, at exit
        raise
    finally:
        stderr.restore()
        for lg, (level, disabled) in zip(loggers, saved, strict=True):
            lg.setLevel(level)
            lg.disabled = disabled


_CLOSED_LOOP_FILTERS = False


def _drop_closed_loop_errors() -> None:
    """Makes ``sys.excepthook`` skip the "Event loop is closed" errors that tensorstore's threads
    raise into orbax's closed event loop after a failed load, and asyncio's log skip the failed
    load's tasks (both printed at exit otherwise)."""
    global _CLOSED_LOOP_FILTERS
    if _CLOSED_LOOP_FILTERS:
        return
    _CLOSED_LOOP_FILTERS = True
    hook = sys.excepthook
    # the failed load's tasks are collected later and asyncio logs each one
    logging.getLogger("asyncio").addFilter(
        lambda record: not str(record.msg).startswith("Task exception was never retrieved"))

    def excepthook(kind, value, tb):
        if kind is RuntimeError and str(value) == "Event loop is closed":
            return
        hook(kind, value, tb)

    sys.excepthook = excepthook


class _StderrToFile:
    """Points file descriptor 2 at a temp file (C-level prints from library threads included)
    until ``restore``."""

    def __init__(self):
        import tempfile

        sys.stderr.flush()
        self._file = tempfile.TemporaryFile()
        try:
            self._saved: int | None = os.dup(2)
            os.dup2(self._file.fileno(), 2)
        except OSError:  # no fd 2 (embedded interpreters): nothing to redirect
            self._saved = None

    def settle(self, quiet_s: float = 0.2, max_s: float = 2.0) -> None:
        """Waits until nothing has been written for ``quiet_s`` (at most ``max_s``)."""
        deadline, size, since = time.monotonic() + max_s, -1, time.monotonic()
        while time.monotonic() < deadline:
            now = os.fstat(self._file.fileno()).st_size
            if now != size:
                size, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return
            time.sleep(0.05)

    def restore(self) -> None:
        if self._saved is not None:
            sys.stderr.flush()
            os.dup2(self._saved, 2)
            os.close(self._saved)
            self._saved = None
        self._file.close()


def latest_checkpoint(checkpoint_dir: str) -> str | None:
    """The complete checkpoint with the highest iteration in ``checkpoint_dir``, or ``None``."""
    checkpoints = list_checkpoints(checkpoint_dir)
    return checkpoints[-1] if checkpoints else None


def list_checkpoints(checkpoint_dir: str) -> list[str]:
    """Complete checkpoints in ``checkpoint_dir``, sorted by iteration.

    Half-written ``.tmp_checkpoint_*`` directories and directories without the ``.complete`` marker
    are left out.
    """
    directory = os.path.abspath(os.path.expanduser(checkpoint_dir))
    return [path for _, path in _numbered_dirs(directory) if _is_complete(path)]


def prune_checkpoints(checkpoint_dir: str, keep: int | None,
                      score_attr: str | None = None) -> list[str]:
    """Deletes checkpoints in ``checkpoint_dir`` beyond the ``keep`` best (RLlib/Tune's
    ``keep_checkpoints_num``); returns the deleted paths.

    ``score_attr`` (``checkpoint_score_attr``) names a result key saved with each checkpoint;
    higher is better, or lower with a ``min-`` prefix. Without it the newest are the best. The
    newest checkpoint is always kept too, so a run can resume. Checkpoints without the score
    count as the worst.
    """
    if keep is None:
        return []
    if keep < 1:
        raise CheckpointError(f"keep_checkpoints_num must be >= 1, got {keep}")
    checkpoints = list_checkpoints(checkpoint_dir)
    if len(checkpoints) <= keep:
        return []
    sign, attr = (-1.0, score_attr[4:]) if score_attr and score_attr.startswith("min-") else \
        (1.0, score_attr)

    def score(path: str) -> float:
        if not attr:
            return 0.0
        try:
            value = _read_metadata(path).get("result", {}).get(attr)
        except CheckpointError:
            value = None
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and \
            np.isfinite(value)
        return sign * float(value) if ok else -np.inf

    order = {path: i for i, path in enumerate(checkpoints)}  # newer wins ties
    best = sorted(checkpoints, key=lambda p: (score(p), order[p]), reverse=True)[:keep]
    kept = set(best) | {checkpoints[-1]}
    removed = [p for p in checkpoints if p not in kept]
    for path in removed:
        # Renamed first, so a crash while deleting never leaves a half-deleted checkpoint_*.
        doomed = os.path.join(os.path.dirname(path),
                              f"{TMP_PREFIX}{order[path]:06d}_{os.getpid()}_{uuid.uuid4().hex[:8]}")
        try:
            os.rename(path, doomed)
        except OSError:
            continue
        shutil.rmtree(doomed, ignore_errors=True)
    return removed


def _numbered_dirs(directory: str) -> list[tuple[int, str]]:
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    found = []
    for name in names:
        match = _CHECKPOINT_NAME.match(name)
        path = os.path.join(directory, name)
        if match and os.path.isdir(path):
            found.append((int(match.group(1)), path))
    return sorted(found)


def _is_complete(directory: str) -> bool:
    return all(os.path.exists(os.path.join(directory, name))
               for name in (COMPLETE_MARKER, METADATA_FILE, STATE_DIR))


def _check_complete(directory: str) -> None:
    def corrupt(reason: str) -> CheckpointError:
        return CheckpointError(f"checkpoint '{directory}' is incomplete or corrupt: {reason}")

    if not os.path.isfile(os.path.join(directory, METADATA_FILE)):
        raise corrupt(f"missing {METADATA_FILE}")
    if not os.path.isdir(os.path.join(directory, STATE_DIR)):
        raise corrupt(f"missing {STATE_DIR}/")
    if not os.path.exists(os.path.join(directory, COMPLETE_MARKER)):
        raise corrupt(f"missing {COMPLETE_MARKER} marker (the save did not finish)")


def _read_metadata(directory: str) -> dict:
    try:
        with open(os.path.join(directory, METADATA_FILE), encoding="utf-8") as f:
            metadata = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"checkpoint '{directory}' is incomplete or corrupt: "
                              f"{METADATA_FILE} is not valid JSON ({_short(e)})") from None
    if not isinstance(metadata, dict):
        raise CheckpointError(f"checkpoint '{directory}' is incomplete or corrupt: "
                              f"{METADATA_FILE} does not hold a JSON object")
    version = metadata.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"checkpoint '{directory}' is incomplete or corrupt: "
                              f"{METADATA_FILE} has no integer format_version")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint '{directory}' has format version {version}, but this jrl "
            f"({_jrl_version()}) reads versions up to {FORMAT_VERSION}: upgrade jrl to load it")
    return migrate(metadata, directory)


def _replace_dir(new: str, final: str) -> None:
    """Renames ``new`` to ``final``; an existing ``final`` is moved away first and removed last."""
    try:
        os.rename(new, final)
        return
    except OSError:
        if not os.path.exists(final):
            raise
    old = f"{new}_old"
    os.rename(final, old)
    try:
        os.rename(new, final)
    except BaseException:
        os.rename(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _write_file(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _host_array(leaf: Any) -> np.ndarray:
    if isinstance(leaf, (bool, int, float, complex)):
        leaf = jnp.asarray(leaf)  # the dtype jax gives Python scalars, as eval_shape does
    if _is_key(leaf):
        leaf = jax.random.key_data(leaf)
    return np.asarray(jax.device_get(leaf))


def _is_key(leaf: Any) -> bool:
    dtype = getattr(leaf, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _key_impl(leaf: Any) -> str | None:
    return str(jax.random.key_impl(leaf)) if _is_key(leaf) else None


def _wrap_key(data: np.ndarray, impl: Any, abstract: Any, name: str, fail: Any) -> jax.Array:
    """The typed PRNG key array saved as ``data``, checked against ``abstract``."""
    if not isinstance(impl, str):
        raise fail(f"{name} is raw {data.dtype.name} data in the checkpoint, expected a PRNG key")
    try:
        key = jax.random.wrap_key_data(data, impl=impl)
    except Exception as e:  # unknown impl or data of the wrong shape/dtype
        raise fail(f"{name} cannot be read as a '{impl}' PRNG key: {_short(e)}") from None
    if key.dtype != abstract.dtype or tuple(key.shape) != tuple(abstract.shape):
        raise fail(f"{name} is a {key.dtype} key of shape {tuple(key.shape)} in the checkpoint, "
                   f"expected {abstract.dtype} of shape {tuple(abstract.shape)}")
    return key


def _shape_dtype(leaf: Any) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and canonical dtype (float64 is float32 unless x64 is on) of an abstract leaf."""
    if not (hasattr(leaf, "shape") and hasattr(leaf, "dtype")):
        leaf = jnp.asarray(leaf)
    return tuple(leaf.shape), np.dtype(jax.dtypes.canonicalize_dtype(leaf.dtype))


def _int_or_inf(key: str) -> float:
    return int(key) if key.isdigit() else float("inf")


def _short(error: BaseException) -> str:
    """First line of ``error``'s message, with its type, at most 200 characters."""
    lines = str(error).strip().splitlines()
    text = type(error).__name__ + (": " + lines[0].split(" [tensorstore_spec")[0] if lines else "")
    return text if len(text) <= 200 else text[:197] + "..."


def _jrl_version() -> str:
    try:
        return importlib.metadata.version("jrl")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"
