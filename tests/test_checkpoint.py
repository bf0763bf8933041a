"""Checkpoints: round trip, atomic writes, path resolution and clear errors."""

from __future__ import annotations

import glob
import json
import os
import shutil
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrl import checkpoint
from jrl.checkpoint import (
    FORMAT_VERSION,
    latest_checkpoint,
    list_checkpoints,
    load_metadata,
    resolve_checkpoint,
    restore_state,
    save_checkpoint,
)
from jrl.errors import CheckpointError


class OptState(NamedTuple):
    count: jax.Array
    mu: dict


class State(NamedTuple):
    params: dict
    opt_state: OptState
    key: jax.Array
    step: jax.Array


def make_state(scale: float = 1.0) -> State:
    params = {"dense": {"kernel": jnp.arange(6, dtype=jnp.float32).reshape(2, 3) * scale,
                        "bias": jnp.full((3,), 0.5 * scale, jnp.float32)},
              "log_std": np.float32(-0.5) * np.ones((1,), np.float32)}
    return State(
        params=params,
        opt_state=OptState(count=jnp.asarray(7, jnp.int32), mu=jax.tree.map(jnp.zeros_like, params)),
        key=jax.random.key_data(jax.random.key(3)).astype(jnp.uint32),
        step=np.asarray(11, np.int32),
    )


def abstract_state() -> State:
    return jax.eval_shape(make_state)


def save(tmp_path, iteration: int = 1, state: State | None = None, **metadata) -> str:
    metadata = {"algo": "PPO", "env": "CartPole-v1", **metadata}
    return save_checkpoint(str(tmp_path / "ckpts"), iteration, state or make_state(), metadata)


def test_round_trip_keeps_arrays_dtypes_and_namedtuples(tmp_path):
    state = make_state(2.0)
    path = save(tmp_path, 3, state, config={"lr": 1e-3, "hiddens": (64, 64)})

    assert os.path.basename(path) == "checkpoint_000003"
    assert sorted(os.listdir(path)) == [".complete", "metadata.json", "state"]
    restored = restore_state(path, abstract_state())

    assert type(restored) is State and type(restored.opt_state) is OptState
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        assert isinstance(got, jax.Array)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert restored.key.dtype == jnp.uint32


def test_metadata_holds_caller_keys_and_versions(tmp_path):
    path = save(tmp_path, 5, config={"hiddens": (64, 64)}, reward=np.float32(1.5),
                last_loss=float("nan"))
    metadata = load_metadata(path)
    assert metadata["algo"] == "PPO" and metadata["env"] == "CartPole-v1"
    assert metadata["config"] == {"hiddens": [64, 64]}
    assert metadata["reward"] == 1.5 and metadata["last_loss"] is None
    assert metadata["format_version"] == FORMAT_VERSION
    assert metadata["iteration"] == 5
    assert isinstance(metadata["jrl_version"], str) and metadata["saved_at"]


def test_restore_accepts_concrete_arrays_as_abstract_state(tmp_path):
    path = save(tmp_path)
    restored = restore_state(path, make_state(0.0))
    np.testing.assert_array_equal(restored.params["dense"]["kernel"],
                                  make_state().params["dense"]["kernel"])


def test_half_written_checkpoints_are_never_latest(tmp_path):
    save(tmp_path, 1)
    ckpts = tmp_path / "ckpts"
    # A save that died while writing its temporary directory ...
    partial = ckpts / ".tmp_checkpoint_000002_deadbeef"
    (partial / "state").mkdir(parents=True)
    (partial / "metadata.json").write_text("{")
    # ... and a checkpoint directory without its completion marker.
    shutil.copytree(ckpts / "checkpoint_000001", ckpts / "checkpoint_000003")
    os.remove(ckpts / "checkpoint_000003" / ".complete")

    assert latest_checkpoint(str(ckpts)) == str(ckpts / "checkpoint_000001")
    assert list_checkpoints(str(ckpts)) == [str(ckpts / "checkpoint_000001")]
    assert resolve_checkpoint(str(ckpts)) == str(ckpts / "checkpoint_000001")
    with pytest.raises(CheckpointError, match="checkpoint_000003.*missing .complete"):
        resolve_checkpoint(str(ckpts / "checkpoint_000003"))


def test_list_checkpoints_sorts_by_iteration(tmp_path):
    for iteration in (10, 2, 100):
        save(tmp_path, iteration)
    ckpts = tmp_path / "ckpts"
    assert [os.path.basename(p) for p in list_checkpoints(str(ckpts))] == [
        "checkpoint_000002", "checkpoint_000010", "checkpoint_000100"]
    assert latest_checkpoint(str(ckpts)) == str(ckpts / "checkpoint_000100")
    assert latest_checkpoint(str(tmp_path / "nowhere")) is None
    assert list_checkpoints(str(tmp_path / "nowhere")) == []


def test_resolve_maps_paths_inside_and_above_the_checkpoint(tmp_path):
    first = save(tmp_path, 1)
    second = save(tmp_path, 10)
    assert resolve_checkpoint(second) == second
    # RLlib users pass the file inside the directory; it need not exist.
    assert resolve_checkpoint(os.path.join(second, "checkpoint-10")) == second
    assert resolve_checkpoint(os.path.join(first, "metadata.json")) == first
    assert resolve_checkpoint(str(tmp_path / "ckpts")) == second
    assert load_metadata(str(tmp_path / "ckpts"))["iteration"] == 10


def test_missing_path_raises(tmp_path):
    missing = str(tmp_path / "nope" / "checkpoint_000001")
    with pytest.raises(CheckpointError, match="does not exist") as info:
        load_metadata(missing)
    assert missing in str(info.value)


def test_directory_without_checkpoints_raises(tmp_path):
    with pytest.raises(CheckpointError, match="contains no checkpoint_"):
        resolve_checkpoint(str(tmp_path))


def test_missing_metadata_raises(tmp_path):
    path = save(tmp_path)
    os.remove(os.path.join(path, "metadata.json"))
    with pytest.raises(CheckpointError, match="incomplete or corrupt: missing metadata.json") as info:
        restore_state(path, abstract_state())
    assert path in str(info.value)


def test_corrupt_metadata_raises(tmp_path):
    path = save(tmp_path)
    with open(os.path.join(path, "metadata.json"), "w") as f:
        f.write('{"format_version": 1, "algo": ')
    with pytest.raises(CheckpointError, match="metadata.json is not valid JSON") as info:
        load_metadata(path)
    assert path in str(info.value)
    assert "\n" not in str(info.value)


def test_newer_format_version_raises(tmp_path):
    path = save(tmp_path)
    meta_file = os.path.join(path, "metadata.json")
    with open(meta_file) as f:
        metadata = json.load(f)
    metadata["format_version"] = FORMAT_VERSION + 1
    with open(meta_file, "w") as f:
        json.dump(metadata, f)
    with pytest.raises(CheckpointError, match="upgrade jrl"):
        load_metadata(path)


def test_missing_state_dir_raises(tmp_path):
    path = save(tmp_path)
    shutil.rmtree(os.path.join(path, "state"))
    with pytest.raises(CheckpointError, match="missing state/") as info:
        restore_state(path, abstract_state())
    assert path in str(info.value)


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_damaged_state_files_raise(tmp_path, damage):
    path = save(tmp_path)
    data_files = [f for f in glob.glob(os.path.join(path, "state", "**", "*"), recursive=True)
                  if os.path.isfile(f) and f.endswith(("manifest.ocdbt", "_METADATA"))
                  or os.path.basename(os.path.dirname(f)) == "d"]
    assert data_files
    for f in data_files:
        if damage == "delete":
            os.remove(f)
        else:
            with open(f, "r+b") as handle:
                handle.truncate(max(os.path.getsize(f) // 2, 1))
    with pytest.raises(CheckpointError, match="cannot restore checkpoint") as info:
        restore_state(path, abstract_state())
    message = str(info.value)
    assert path in message and "\n" not in message


def test_shape_mismatch_names_the_array(tmp_path):
    path = save(tmp_path)
    wrong = abstract_state()._replace(step=jax.ShapeDtypeStruct((2,), jnp.int32))
    with pytest.raises(CheckpointError, match=r"state\.step has shape \(\) .*expected \(2,\)") as info:
        restore_state(path, wrong)
    assert path in str(info.value)


def test_dtype_mismatch_raises(tmp_path):
    path = save(tmp_path)
    wrong = abstract_state()._replace(step=jax.ShapeDtypeStruct((), jnp.float32))
    with pytest.raises(CheckpointError, match="dtype int32 in the checkpoint, expected float32"):
        restore_state(path, wrong)


def test_structure_mismatch_raises(tmp_path):
    path = save(tmp_path)
    with pytest.raises(CheckpointError, match="has 4 arrays but the checkpoint has 9"):
        restore_state(path, abstract_state().params | {"extra": jnp.zeros(2)})
    renamed = {"weights": jnp.zeros((2, 3)), **{str(i): jnp.zeros(()) for i in range(8)}}
    with pytest.raises(CheckpointError, match="state structure differs"):
        restore_state(path, renamed)


def test_saving_same_iteration_replaces_checkpoint(tmp_path):
    first = save(tmp_path, 4, make_state(1.0), note="first")
    second = save(tmp_path, 4, make_state(3.0), note="second")
    assert first == second
    ckpts = tmp_path / "ckpts"
    assert sorted(os.listdir(ckpts)) == ["checkpoint_000004"]
    assert load_metadata(second)["note"] == "second"
    restored = restore_state(second, abstract_state())
    np.testing.assert_array_equal(restored.params["dense"]["bias"], np.full((3,), 1.5, np.float32))


def test_failed_save_leaves_no_directory(tmp_path, monkeypatch):
    def broken_write(path, text):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "_write_file", broken_write)
    with pytest.raises(OSError, match="disk full"):
        save(tmp_path, 1)
    assert os.listdir(tmp_path / "ckpts") == []


def test_typed_prng_keys_round_trip(tmp_path):
    state = {"key": jax.random.key(7), "keys": jax.random.split(jax.random.key(1), 4),
             "count": jnp.zeros((), jnp.int32)}
    path = save_checkpoint(str(tmp_path), 1, state, {})
    restored = restore_state(path, jax.eval_shape(lambda: state))
    assert restored["keys"].dtype == state["keys"].dtype and restored["keys"].shape == (4,)
    np.testing.assert_array_equal(jax.random.key_data(restored["key"]),
                                  jax.random.key_data(state["key"]))
    raw = {**jax.eval_shape(lambda: state), "key": jax.ShapeDtypeStruct((2,), jnp.uint32)}
    with pytest.raises(CheckpointError, match=r"state\['key'\] is a PRNG key in the checkpoint"):
        restore_state(path, raw)
