"""Reference kernels for the ``sparse`` dialect.

Each kernel decompresses its weight to the dense [K, N] float64 matrix and runs the same
``np.matmul`` the ``graph.matmul`` kernel runs: the golden model of a pruned program is then
bit-identical to the dense program with the pruned weight, so any difference a target shows is the
target's, not the format's. Format invariants that the verifier cannot see (index range, distinct
positions, popcount == number of values) are checked here and reported as ``KernelError``.
"""

from __future__ import annotations

import numpy as np

from portc.dialects import sparse as sp
from portc.dialects.graph import Props, TensorSpec
from portc.runtimes.reference.kernels import KernelError, finish, kernel, wide


def decompress_2_4(values: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Dense [K, N] from 2:4 ``values`` / ``indices`` [K/2, N] (in the values' dtype)."""
    half, n = values.shape
    if indices.size and int(indices.max()) > 3:
        raise KernelError(f"2:4 index {int(indices.max())} is out of range 0..3")
    idx = indices.astype(np.int64).reshape(half // 2, 2, n)
    if np.any(idx[:, 0, :] == idx[:, 1, :]):
        raise KernelError("2:4 metadata names the same position twice in one group")
    rows = 4 * np.arange(half // 2, dtype=np.int64)[:, None, None] + idx
    dense = np.zeros((2 * half, n), dtype=values.dtype)
    cols = np.broadcast_to(np.arange(n), rows.shape)
    dense[rows, cols] = values.reshape(half // 2, 2, n)
    return dense


def decompress_bitmask(values: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    """Dense [K, n] from a packed little-endian bitmask and row-major kept ``values``."""
    keep = np.unpackbits(mask, axis=1, count=n, bitorder="little").astype(bool)
    count = int(keep.sum())
    if count != values.shape[0]:
        raise KernelError(f"bitmask keeps {count} entries but {values.shape[0]} values are given")
    dense = np.zeros(keep.shape, dtype=values.dtype)
    dense[keep] = values
    return dense


@kernel(sp.MatMul24Op)
def matmul_2_4(p: Props, ins: list[np.ndarray], outs: list[TensorSpec]) -> list[np.ndarray]:
    x, values, indices = ins
    return [finish(np.matmul(wide(x), wide(decompress_2_4(values, indices))), outs[0])]


@kernel(sp.MatMulBitmaskOp)
def matmul_bitmask(p: Props, ins: list[np.ndarray], outs: list[TensorSpec]) -> list[np.ndarray]:
    x, values, mask = ins
    dense = decompress_bitmask(values, mask, p["n"])
    return [finish(np.matmul(wide(x), wide(dense)), outs[0])]
