"""Reference kernels for the ``sparse`` dialect.

``sparse.assemble`` decodes its components into the dense [K, N] matrix (in the values' dtype)
and ``sparse.matmul`` runs the same ``np.matmul`` the ``graph.matmul`` kernel runs: the golden
model of a pruned program is then bit-identical to the dense program with the pruned weight, so
any difference a target shows is the target's, not the format's. Format invariants the verifier
cannot see (positions in range and distinct, popcount == number of values, monotone row
pointers, column ids in range and ascending) are checked here and reported as ``KernelError``.
Decoding is whole-array numpy (fancy indexing), never a Python loop over entries.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from portc.dialects import sparse as sp
from portc.dialects.graph import Props, TensorSpec
from portc.runtimes.reference.kernels import KernelError, finish, kernel, wide


def unpack_fields(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """uint8 [R, B] holding ``bits``-wide little-endian fields -> int64 [R, count]."""
    per = 8 // bits
    shifts = np.arange(per, dtype=np.uint8) * bits
    fields = (packed[..., None] >> shifts) & np.uint8((1 << bits) - 1)
    return fields.reshape(packed.shape[0], -1)[:, :count].astype(np.int64)


def decode_nm(values: np.ndarray, indices: np.ndarray, enc: sp.NMEncoding, k: int
              ) -> np.ndarray:
    """Dense [K, N] from N:M ``values`` [K*n/m, N] and packed position ``indices``."""
    rows_kept, n_cols = values.shape
    pos = unpack_fields(indices, enc.index_bits, n_cols)
    if pos.size and int(pos.max()) >= enc.m:
        raise KernelError(f"{enc} position {int(pos.max())} is out of range 0..{enc.m - 1}")
    grp = pos.reshape(k // enc.m, enc.n, n_cols)
    if enc.n > 1 and np.any(np.diff(grp, axis=1) <= 0):
        raise KernelError(f"{enc} metadata repeats or unorders positions within a group")
    rows = enc.m * np.arange(k // enc.m, dtype=np.int64)[:, None, None] + grp
    dense = np.zeros((k, n_cols), dtype=values.dtype)
    cols = np.broadcast_to(np.arange(n_cols), rows.shape)
    dense[rows, cols] = values.reshape(grp.shape)
    return dense


def decode_bitmask(mask: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Dense [K, n] from a packed little-endian bitmask and row-major kept ``values``."""
    keep = np.unpackbits(mask, axis=1, count=n, bitorder="little").astype(bool)
    count = int(keep.sum())
    if count != values.shape[0]:
        raise KernelError(f"bitmask keeps {count} entries but {values.shape[0]} values are given")
    dense = np.zeros(keep.shape, dtype=values.dtype)
    dense[keep] = values
    return dense


def decode_csr(row_ptr: np.ndarray, col_idx: np.ndarray, values: np.ndarray, k: int, n: int
               ) -> np.ndarray:
    """Dense [K, N] from CSR arrays (row pointers, ascending column ids per row, values)."""
    rp = row_ptr.astype(np.int64)
    if rp[0] != 0 or rp[-1] != values.shape[0] or np.any(np.diff(rp) < 0):
        raise KernelError(f"CSR row pointers must rise from 0 to nnz={values.shape[0]}, got "
                          f"{rp[0]}..{rp[-1]}")
    cols = col_idx.astype(np.int64)
    if cols.size and (int(cols.min()) < 0 or int(cols.max()) >= n):
        raise KernelError(f"CSR column id {int(cols.max())} is out of range 0..{n - 1}")
    rows = np.repeat(np.arange(k, dtype=np.int64), np.diff(rp))
    same_row = rows[1:] == rows[:-1]
    if np.any(same_row & (cols[1:] <= cols[:-1])):
        raise KernelError("CSR column ids must ascend within each row (no duplicates)")
    dense = np.zeros((k, n), dtype=values.dtype)
    dense[rows, cols] = values
    return dense


#: encoding class -> decoder(components, encoding, K, N): one row per format
DECODERS: dict[type[sp.SparseEncoding],
               Callable[[list[np.ndarray], sp.SparseEncoding, int, int], np.ndarray]] = {
    sp.NMEncoding: lambda c, e, k, n: decode_nm(c[0], c[1], e, k),  # type: ignore[arg-type]
    sp.BitmaskEncoding: lambda c, e, k, n: decode_bitmask(c[0], c[1], n),
    sp.CSREncoding: lambda c, e, k, n: decode_csr(c[0], c[1], c[2], k, n),
}


def decode(components: list[np.ndarray], enc: sp.SparseEncoding, k: int, n: int) -> np.ndarray:
    """The dense matrix a compressed weight stands for."""
    return DECODERS[type(enc)](components, enc, k, n)


@kernel(sp.AssembleOp)
def assemble(p: Props, ins: list[np.ndarray], outs: list[TensorSpec]) -> list[np.ndarray]:
    k, n = (int(d) for d in outs[0].shape)  # type: ignore[arg-type]
    return [decode(ins, p["encoding"], k, n)]


@kernel(sp.MatMulOp)
def matmul(p: Props, ins: list[np.ndarray], outs: list[TensorSpec]) -> list[np.ndarray]:
    x, w = ins
    return [finish(np.matmul(wide(x), wide(w)), outs[0])]
