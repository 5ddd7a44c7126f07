"""Magnitude pruning into compressed weight formats: ``sparsify-2-4`` and ``sparsify``.

Both passes rewrite ``graph.matmul(x, W)`` whose ``W`` is a 2-D float constant [K, N] (the form
every imported ``Linear`` takes) into ``sparse.matmul(x, sparse.assemble(components))``: the
weight becomes a tensor with a sparse encoding (``#sparse.nm<2:4>``, ``#sparse.bitmask``,
``#sparse.csr``; see ``portc.dialects.sparse``) whose component arrays are new constants stored
under one name; the dense constant is erased once nothing else uses it, so the program (and its
bundle) carries only the compressed arrays.

* ``sparsify-2-4`` keeps the 2 largest-magnitude entries of every 4 consecutive K entries of each
  column: the NVIDIA sparse tensor core pattern (``mma.sp``), where the 4-group runs along the
  contraction dim; positions are 2-bit fields packed four per byte. Needs K % 4 == 0; other
  matmuls are left dense.
* ``sparsify{fraction=F, format=auto|bitmask|csr}`` prunes the F smallest-magnitude entries of
  each weight (unstructured). ``auto`` stores each weight in whichever of bitmask (1 bit per
  entry + values), CSR (narrowest column ids + row pointers + values) and plain dense takes the
  fewest bytes: bitmask wins at the moderate sparsities magnitude pruning usually reaches; CSR
  wins once its per-entry index costs less than the bitmask's bit for every entry (for N <= 65536
  columns, 16-bit ids: beyond ~15/16 = 94% sparsity); dense wins when so little is pruned that
  neither format pays (the pruned weight then stays a ``graph.matmul`` constant).

Ties in magnitude break towards the lower position (stable sort), so pruning is deterministic.
Pruning changes the numbers: ``sparsity_report`` measures by how much instead of assuming, and
reports bytes per format.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)

from portc.compiler.builder import ssa_hint
from portc.compiler.errors import IRError
from portc.compiler.program import Program, weights_of
from portc.compiler.weights import WeightStore
from portc.dialects import dtypes
from portc.dialects import graph as g
from portc.dialects import sparse as sp
from portc.passes.registry import register_pass
from portc.runtimes.reference import sparse_kernels  # noqa: F401 - registers sparse kernels

# ------------------------------------------------------------------------------ pruning


def prune_nm(w: np.ndarray, n: int = 2, m: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """[K, N] -> (values [K*n/m, N], positions int64 [K*n/m, N]) keeping the n largest |w| of
    every group of m consecutive rows, per column; positions ascend within a group (the
    ``mma.sp`` metadata order)."""
    k, cols = w.shape
    if k % m:
        raise ValueError(f"{n}:{m} pruning needs K % {m} == 0, got K={k}")
    grp = w.reshape(k // m, m, cols)
    top = np.argsort(-np.abs(grp), axis=1, kind="stable")[:, :n, :]
    keep = np.sort(top, axis=1)
    values = np.take_along_axis(grp, keep, axis=1).reshape(k // m * n, cols)
    return np.ascontiguousarray(values), keep.reshape(k // m * n, cols)


def pack_fields(fields: np.ndarray, bits: int) -> np.ndarray:
    """int [R, C] with values < 2**bits -> uint8 [R, ceil(C*bits/8)], little-endian fields."""
    per = 8 // bits
    r, c = fields.shape
    padded = np.zeros((r, -(-c // per) * per), np.uint8)
    padded[:, :c] = fields
    shifts = (np.arange(per, dtype=np.uint8) * bits)
    return np.bitwise_or.reduce(padded.reshape(r, -1, per) << shifts, axis=2).astype(np.uint8)


def encode_nm(w: np.ndarray, n: int = 2, m: int = 4) -> sp.SparseWeight:
    """Prune ``w`` to n:m and encode it (values + packed positions)."""
    enc = sp.NMEncoding(n, m)
    values, pos = prune_nm(w, n, m)
    return sp.SparseWeight(w.shape, dtypes.from_numpy(w.dtype).name, enc,
                           {"values": values, "indices": pack_fields(pos, enc.index_bits)})


def prune_2_4(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2:4 pruning: (values [K/2, N], positions 0..3 as uint8 [K/2, N], unpacked)."""
    values, pos = prune_nm(w, 2, 4)
    return values, pos.astype(np.uint8)


def magnitude_mask(w: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean keep-mask that drops exactly ``round(fraction * w.size)`` smallest |w| entries."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"sparsity fraction must lie in [0, 1], got {fraction}")
    drop = int(round(fraction * w.size))
    keep = np.ones(w.size, dtype=bool)
    keep[np.argsort(np.abs(w).ravel(), kind="stable")[:drop]] = False
    return keep.reshape(w.shape)


def encode_bitmask(w: np.ndarray, keep: np.ndarray) -> sp.SparseWeight:
    """Kept entries of ``w`` [K, N] as a packed little-endian bitmask + row-major values."""
    values = np.ascontiguousarray(w[keep])
    mask = np.packbits(keep, axis=1, bitorder="little")
    return sp.SparseWeight(w.shape, dtypes.from_numpy(w.dtype).name,
                           sp.BitmaskEncoding(int(values.size)), {"mask": mask, "values": values})


def encode_csr(w: np.ndarray, keep: np.ndarray) -> sp.SparseWeight:
    """Kept entries of ``w`` [K, N] as CSR with the narrowest column id type for N."""
    k, n = w.shape
    rows, cols = np.nonzero(keep)  # row-major: rows ascend, columns ascend within a row
    row_ptr = np.zeros(k + 1, np.int32)
    np.cumsum(np.bincount(rows, minlength=k), out=row_ptr[1:])
    idx = sp.csr_index_dtype(n)
    values = np.ascontiguousarray(w[rows, cols])
    return sp.SparseWeight(w.shape, dtypes.from_numpy(w.dtype).name,
                           sp.CSREncoding(int(values.size), idx),
                           {"row_ptr": row_ptr, "col_idx": cols.astype(dtypes.dtype(idx).numpy),
                            "values": values})


def prune_bitmask(w: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """[K, N] -> (kept values 1-D in row-major order, uint8 mask [K, ceil(N/8)])."""
    sw = encode_bitmask(w, magnitude_mask(w, fraction))
    return sw.arrays["values"], sw.arrays["mask"]


FORMATS = ("auto", "bitmask", "csr")


def choose_unstructured(w: np.ndarray, keep: np.ndarray, fmt: str = "auto"
                        ) -> sp.SparseWeight | None:
    """The encoding of the pruned ``w`` in format ``fmt``; with ``auto`` the smallest of
    bitmask, CSR and dense (None = dense: no compressed format pays)."""
    if fmt == "bitmask":
        return encode_bitmask(w, keep)
    if fmt == "csr":
        return encode_csr(w, keep)
    best = min((encode_bitmask(w, keep), encode_csr(w, keep)), key=lambda s: s.nbytes())
    return best if best.nbytes() < w.nbytes else None


# ------------------------------------------------------------------------------ rewriting


def _prunable_weight(
    op: g.MatMulOp, weights: WeightStore
) -> tuple[g.ConstantOp, np.ndarray] | None:
    """The rhs constant and its array if ``op`` is ``x @ W`` with W a static 2-D float
    constant and no widened accumulator (quantized matmuls are not pruned here)."""
    if op.out_dtype is not None:
        return None
    owner = op.rhs.owner
    if not isinstance(owner, g.ConstantOp):
        return None
    spec = g.spec_of(op.rhs)
    if spec.rank != 2 or not spec.is_static or dtypes.dtype(spec.dtype).kind != "float":
        return None
    if g.spec_of(op.lhs).rank < 1:
        return None
    return owner, weights[owner.resource.data]


def _named_const(weights: WeightStore, name: str) -> g.ConstantOp:
    """A ``graph.constant`` for a stored array, typed from the array so it always verifies."""
    arr = weights[name]
    spec = g.TensorSpec(tuple(arr.shape), dtypes.from_numpy(arr.dtype).name)
    c = g.ConstantOp.build_op([], [spec], {"resource": name})
    c.result.name_hint = ssa_hint(name)
    return c


def sparse_weight_ops(weights: WeightStore, name: str, w: sp.SparseWeight
                      ) -> list[Operation]:
    """``graph.constant`` per stored component of ``name`` followed by the ``sparse.assemble``
    that makes them one encoded [K, N] tensor (the last op)."""
    consts = [_named_const(weights, sp.component_name(name, c)) for c in w.encoding.COMPONENTS]
    k, n = w.shape
    asm = sp.AssembleOp.make([c.result for c in consts], k, n, w.dtype, w.encoding)
    asm.result.name_hint = ssa_hint(name)
    return [*consts, asm]


def _replace(rewriter: PatternRewriter, op: g.MatMulOp, dense: g.ConstantOp,
             new_ops: list[Operation]) -> None:
    hint = op.result.name_hint
    rewriter.replace(op, new_ops, [new_ops[-1].results[0]])
    new_ops[-1].results[0].name_hint = hint
    if not dense.result.uses:
        rewriter.erase(dense)


class SparsifyWeights(RewritePattern):
    """``graph.matmul(x, const W)`` -> ``sparse.matmul(x, sparse.assemble(components))`` with
    the encoding ``compress(W)`` returns; a plain array from ``compress`` is a pruned weight
    kept dense (a new constant for the same ``graph.matmul``); None leaves the matmul alone."""

    def __init__(self, weights: WeightStore, suffix: str,
                 compress: Callable[[np.ndarray], sp.SparseWeight | np.ndarray | None]) -> None:
        self.weights, self.suffix, self.compress = weights, suffix, compress
        # a weight shared by several matmuls compresses (and is stored) once
        self._done: dict[str, tuple[str, sp.SparseWeight | None] | None] = {}

    def _compressed(self, res: str, w: np.ndarray) -> tuple[str, sp.SparseWeight | None] | None:
        if res not in self._done:
            sw = self.compress(w)
            if isinstance(sw, np.ndarray):
                self._done[res] = (self.weights.add(sw, f"{res}.pruned"), None)
            elif sw is not None:
                self._done[res] = (sp.store_sparse(self.weights, f"{res}.{self.suffix}", sw), sw)
            else:
                self._done[res] = None
        return self._done[res]

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.MatMulOp, rewriter: PatternRewriter) -> None:
        found = _prunable_weight(op, self.weights)
        if found is None:
            return
        dense, w = found
        done = self._compressed(dense.resource.data, w)
        if done is None:
            return
        name, sw = done
        if sw is None:
            c = _named_const(self.weights, name)
            mm = g.MatMulOp.build_op([op.lhs, c.result], op.result_specs(), op.props())
            _replace(rewriter, op, dense, [c, mm])
            return
        wops = sparse_weight_ops(self.weights, name, sw)
        mm = sp.MatMulOp.build_op([op.lhs, wops[-1].results[0]], op.result_specs(), {})
        _replace(rewriter, op, dense, [*wops, mm])


def _walk(module: ModuleOp, pattern: RewritePattern) -> None:
    PatternRewriteWalker(pattern, apply_recursively=False).rewrite_module(module)


@register_pass
@dataclass(frozen=True)
class Sparsify24Pass(ModulePass):
    """2:4 structured magnitude pruning of constant matmul weights (K % 4 == 0), stored as
    ``#sparse.nm<2:4>`` (values + 2-bit positions)."""

    name = "sparsify-2-4"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        _walk(op, SparsifyWeights(weights_of(ctx), "sp24",
                                  lambda w: encode_nm(w, 2, 4) if w.shape[0] % 4 == 0 else None))


@register_pass
@dataclass(frozen=True)
class SparsifyPass(ModulePass):
    """Unstructured magnitude pruning of constant matmul weights to ``fraction`` sparsity,
    stored as bitmask, CSR, or (``format=auto``) whichever of those and dense is smallest."""

    name = "sparsify"
    fraction: float = field(default=0.5)
    format: str = field(default="auto")

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if not 0.0 <= self.fraction <= 1.0:
            raise IRError(f"sparsify: fraction must lie in [0, 1], got {self.fraction}")
        if self.format not in FORMATS:
            raise IRError(f"sparsify: format '{self.format}' is not one of {FORMATS}")

        def compress(w: np.ndarray) -> sp.SparseWeight | np.ndarray:
            keep = magnitude_mask(w, self.fraction)
            sw = choose_unstructured(w, keep, self.format)
            return sw if sw is not None else np.where(keep, w, np.zeros((), w.dtype))

        _walk(op, SparsifyWeights(weights_of(ctx), "sp", compress))


# ------------------------------------------------------------------------------ reporting


def _live_constant_bytes(program: Program, pred: Any = None) -> int:
    """Bytes of the constants the program uses (dead constants would not ship in a bundle);
    with ``pred(use) -> bool``, only constants with a use it accepts."""
    total, seen = 0, set()
    for op in program.main.walk():
        if not isinstance(op, g.ConstantOp) or not op.result.uses:
            continue
        if pred is not None and not any(pred(u) for u in op.result.uses):
            continue
        name = op.resource.data
        if name not in seen:
            seen.add(name)
            total += program.weights[name].nbytes
    return total


def _is_weight_use(use: Any) -> bool:
    """A constant feeding a matmul's weight operand, or a compressed weight's components."""
    o = use.operation
    return (isinstance(o, (g.MatMulOp, sp.MatMulOp)) and use.index == 1) or isinstance(
        o, sp.AssembleOp)


def _macs(program: Program, inputs: Mapping[str, np.ndarray]) -> tuple[int, dict[str, np.ndarray]]:
    """Multiply-accumulates actually needed by the matmuls (dense and sparse: rows of x times
    stored entries) at the given input shapes, and the outputs, from one reference run."""
    from portc.runtimes.reference.interpreter import run_program

    macs = 0

    def count(op: Operation, res: list[np.ndarray]) -> None:
        nonlocal macs
        if isinstance(op, g.MatMulOp):
            a, b = g.spec_of(op.lhs), g.spec_of(op.rhs)
            k = a.shape[-1] if a.shape[-1] is not None else b.shape[-2 if b.rank > 1 else 0]
            macs += res[0].size * int(k or 0)
        elif isinstance(op, sp.MatMulOp):
            k, n = (int(d or 0) for d in g.spec_of(op.weight).shape)
            enc = sp.encoding_of(op.weight.type)
            nnz = enc.nnz(k, n) if enc is not None else k * n
            macs += (res[0].size // max(n, 1)) * nnz

    outs = run_program(program, inputs, on_op=count)
    return macs, outs


def format_bytes(program: Program) -> dict[str, dict[str, int]]:
    """Per storage format of the compressed weights: how many, and their stored bytes."""
    out: dict[str, dict[str, int]] = {}
    for op in program.main.walk():
        if isinstance(op, sp.AssembleOp):
            enc = op.encoding
            key = enc.name.split(".")[-1] + (f"<{enc.n}:{enc.m}>" if isinstance(
                enc, sp.NMEncoding) else "")
            e = out.setdefault(key, {"weights": 0, "bytes": 0, "dense_bytes": 0})
            spec = g.spec_of(op.result)
            e["weights"] += 1
            e["bytes"] += sum(program.weights[c.owner.resource.data].nbytes
                              for c in op.operands if isinstance(c.owner, g.ConstantOp))
            e["dense_bytes"] += spec.numel() * dtypes.dtype(spec.dtype).bits // 8
    return out


def sparsity_report(original: Program, pruned: Program, inputs: Mapping[str, np.ndarray]
                    ) -> dict[str, Any]:
    """Bytes, MACs and accuracy of a pruned program against the unpruned one on ``inputs``.

    ``matmul_weight_bytes_*`` count only the weights of matmuls (dense rhs before, compressed
    components after); ``weight_bytes_*`` count every live constant; ``formats`` breaks the
    compressed ones down by storage format (count, stored bytes, bytes the dense matrix took).
    """
    macs_before, ref = _macs(original, inputs)
    macs_after, got = _macs(pruned, inputs)
    outputs = {}
    for name, want in ref.items():
        a, b = want.astype(np.float64).ravel(), got[name].astype(np.float64).ravel()
        denom = float(np.linalg.norm(a) * np.linalg.norm(b))
        outputs[name] = {
            "max_abs_error": float(np.max(np.abs(a - b))) if a.size else 0.0,
            "cosine": float(a @ b / denom) if denom > 0 else float(np.array_equal(a, b)),
        }
    return {
        "weight_bytes_before": _live_constant_bytes(original),
        "weight_bytes_after": _live_constant_bytes(pruned),
        "matmul_weight_bytes_before": _live_constant_bytes(original, _is_weight_use),
        "matmul_weight_bytes_after": _live_constant_bytes(pruned, _is_weight_use),
        "formats": format_bytes(pruned),
        "macs_before": macs_before,
        "macs_after": macs_after,
        "macs_saved": macs_before - macs_after,
        "outputs": outputs,
    }
