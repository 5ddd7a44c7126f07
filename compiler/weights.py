"""Weights as numpy arrays behind names, shared by reference between passes.

IR refers to an array by name (``graph.constant "conv1.weight"``), the way MLIR refers to a
``dense_resource`` blob. Arrays are made read-only when stored so that a pass that wants a
different array must add a new one instead of silently changing a shared one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from portc.compiler.errors import BundleError
from portc.dialects import dtypes

_NAME_OK = re.compile(r"[^A-Za-z0-9_.\-]")


class WeightStore:
    """Name -> read-only numpy array."""

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def add(self, array: np.ndarray, hint: str = "const") -> str:
        """Store ``array`` under a fresh name derived from ``hint``; return the name."""
        base = _NAME_OK.sub("_", hint) or "const"
        name, i = base, 0
        while name in self._arrays:
            i += 1
            name = f"{base}_{i}"
        self.put(name, array)
        return name

    def put(self, name: str, array: np.ndarray) -> None:
        arr = np.asarray(array).view()  # a read-only view leaves the caller's array writable
        arr.flags.writeable = False
        self._arrays[name] = arr

    def __getitem__(self, name: str) -> np.ndarray:
        return self._arrays[name]

    def __contains__(self, name: object) -> bool:
        return name in self._arrays

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        return iter(self._arrays.items())

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._arrays.values())

    def subset(self, names: set[str]) -> WeightStore:
        out = WeightStore()
        out._arrays = {n: a for n, a in self._arrays.items() if n in names}
        return out

    # safetensors has no int4/fp8-fnuz/bool-as-bits types, so every array is stored as raw bytes
    # of an unsigned type of the same item size, with the real dtype in the header metadata.
    # Sub-byte types (int4, int2, fp4) are packed, 8 // bits values per byte, low bits first:
    # a w4 bundle is half the size of the same weights one byte per value.
    def save(self, path: Path) -> None:
        from safetensors.numpy import save_file

        raw: dict[str, np.ndarray] = {}
        meta: dict[str, str] = {}
        for name, arr in self._arrays.items():
            dt = dtypes.from_numpy(arr.dtype)
            info: dict[str, object] = {"dtype": dt.name, "shape": list(arr.shape)}
            if dt.bits < 8:
                raw[name] = pack_sub_byte(arr, dt.bits)
                info["packed_bits"] = dt.bits
            else:
                raw[name] = np.ascontiguousarray(arr).view(np.dtype(f"u{arr.dtype.itemsize}"))
            meta[name] = json.dumps(info)
        save_file(raw, str(path), metadata=meta)

    @staticmethod
    def load(path: Path) -> WeightStore:
        from safetensors import safe_open

        store = WeightStore()
        try:
            with safe_open(str(path), framework="numpy") as f:
                meta = f.metadata() or {}
                for name in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                    info = json.loads(meta[name])
                    data = f.get_tensor(name)
                    if "packed_bits" in info:
                        count = int(np.prod(info["shape"], dtype=np.int64))
                        data = unpack_sub_byte(data, int(info["packed_bits"]), count)
                    arr = data.view(dtypes.dtype(info["dtype"]).numpy)
                    store.put(name, arr.reshape(info["shape"]))
        except (OSError, KeyError, ValueError, json.JSONDecodeError) as e:
            raise BundleError(f"cannot read weights from {path}: {e}. Re-run `portc compile`.") from e
        return store


def pack_sub_byte(arr: np.ndarray, bits: int) -> np.ndarray:
    """Values of a sub-byte dtype (one per byte in numpy, the value's bits in the low bits) ->
    uint8 bytes holding ``8 // bits`` of them, the first in the lowest bits."""
    per = 8 // bits
    codes = np.ascontiguousarray(arr).reshape(-1).view(np.uint8) & np.uint8((1 << bits) - 1)
    codes = np.concatenate([codes, np.zeros((-codes.size) % per, np.uint8)]).reshape(-1, per)
    shifts = (np.arange(per, dtype=np.uint8) * bits).astype(np.uint8)
    return np.bitwise_or.reduce(codes << shifts, axis=1).astype(np.uint8)


def unpack_sub_byte(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of ``pack_sub_byte``: one uint8 code per value, ``count`` values."""
    per = 8 // bits
    shifts = (np.arange(per, dtype=np.uint8) * bits).astype(np.uint8)
    codes = (packed.reshape(-1, 1) >> shifts) & np.uint8((1 << bits) - 1)
    if codes.size < count:
        raise ValueError(f"{codes.size} packed {bits}-bit values, the header says {count}")
    return np.ascontiguousarray(codes.reshape(-1)[:count])
