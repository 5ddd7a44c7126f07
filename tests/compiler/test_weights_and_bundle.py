"""Weights survive safetensors bit for bit in every dtype; bundles refuse tampering."""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from portc.compiler.artifact import Artifact
from portc.compiler.errors import BundleError
from portc.compiler.weights import WeightStore


@pytest.mark.parametrize("dt", [np.float32, np.float16, ml_dtypes.bfloat16, np.int8, np.int64,
                                ml_dtypes.int4, ml_dtypes.float8_e4m3fn, np.bool_])
def test_weights_round_trip_bit_exact(tmp_path: Path, rng: np.random.Generator, dt: type) -> None:
    arr = (rng.standard_normal((3, 5)) * 3).astype(dt)
    store = WeightStore()
    name = store.add(arr, "w")
    store.save(tmp_path / "w.safetensors")
    back = WeightStore.load(tmp_path / "w.safetensors")[name]
    assert back.dtype == arr.dtype and back.shape == arr.shape
    assert back.tobytes() == arr.tobytes()


@pytest.mark.parametrize(("dt", "per_byte"), [(ml_dtypes.int4, 2), (ml_dtypes.uint4, 2),
                                              (ml_dtypes.int2, 4), (ml_dtypes.uint2, 4),
                                              (ml_dtypes.float4_e2m1fn, 2)])
def test_sub_byte_weights_are_packed_and_round_trip(tmp_path: Path, rng: np.random.Generator,
                                                    dt: type, per_byte: int) -> None:
    from safetensors import safe_open

    info = ml_dtypes.iinfo(dt) if "int" in np.dtype(dt).name else None
    lo, hi = (info.min, info.max) if info else (-6, 6)
    arr = rng.integers(lo, hi + 1, (7, 13)).astype(dt)  # 91 values: a partial last byte
    store = WeightStore()
    name = store.add(arr, "w")
    store.save(tmp_path / "w.safetensors")
    with safe_open(str(tmp_path / "w.safetensors"), framework="numpy") as f:
        assert f.get_tensor(name).nbytes == -(-arr.size // per_byte)
    back = WeightStore.load(tmp_path / "w.safetensors")[name]
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back.astype(np.float32), arr.astype(np.float32))


def test_stored_arrays_are_read_only_but_callers_keep_theirs(rng: np.random.Generator) -> None:
    arr = rng.standard_normal(4)
    store = WeightStore()
    name = store.add(arr)
    with pytest.raises(ValueError):
        store[name][0] = 1.0
    arr[0] = 1.0  # the caller's array is still writable


def test_bundle_with_modified_file_is_refused(tmp_path: Path) -> None:
    art = Artifact("reference", {"program.graph.mlir": "builtin.module {}\n"})
    art.write(tmp_path)
    (tmp_path / "program.graph.mlir").write_text("builtin.module {}\n// edited\n")
    with pytest.raises(BundleError, match="modified"):
        Artifact.read(tmp_path)


def test_directory_without_manifest_is_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a portc bundle"):
        Artifact.read(tmp_path)
