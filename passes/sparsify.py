"""Magnitude pruning into compressed weight formats: ``sparsify-2-4`` and ``sparsify``.

Both passes rewrite ``graph.matmul(x, W)`` whose ``W`` is a 2-D float constant [K, N] (the form
every imported ``Linear`` takes) into a ``sparse`` dialect matmul fed by new constants holding the
compressed weight; the dense constant is erased once nothing else uses it, so the program (and its
bundle) carries only the compressed arrays.

* ``sparsify-2-4`` keeps the 2 largest-magnitude entries of every 4 consecutive K entries of each
  column: the NVIDIA sparse tensor core pattern (``mma.sp``), where the 4-group runs along the
  contraction dim. Needs K % 4 == 0; other matmuls are left dense.
* ``sparsify{fraction=F}`` prunes the F smallest-magnitude entries of each weight (unstructured)
  and stores the rest as bitmask + values, which beats CSR at the moderate sparsities magnitude
  pruning reaches (1 bit per entry instead of a 32-bit column index per kept entry).

Ties in magnitude break towards the lower position (stable sort), so pruning is deterministic.
Pruning changes the numbers: ``sparsity_report`` measures by how much instead of assuming.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

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
from portc.compiler.program import Program, weights_of
from portc.compiler.weights import WeightStore
from portc.dialects import dtypes
from portc.dialects import graph as g
from portc.dialects import sparse as sp
from portc.passes.registry import register_pass
from portc.runtimes.reference import sparse_kernels  # noqa: F401 - registers sparse kernels

# ------------------------------------------------------------------------------ compression


def prune_2_4(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[K, N] -> (values [K/2, N], uint8 indices [K/2, N]) keeping the 2 largest |w| of every
    group of 4 consecutive rows, per column; positions ascend within a group (the ``mma.sp``
    metadata order)."""
    k, n = w.shape
    if k % 4:
        raise ValueError(f"2:4 pruning needs K % 4 == 0, got K={k}")
    grp = w.reshape(k // 4, 4, n)
    top = np.argsort(-np.abs(grp), axis=1, kind="stable")[:, :2, :]
    keep = np.sort(top, axis=1)
    values = np.take_along_axis(grp, keep, axis=1).reshape(k // 2, n)
    return np.ascontiguousarray(values), keep.astype(np.uint8).reshape(k // 2, n)


def magnitude_mask(w: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean keep-mask that drops exactly ``round(fraction * w.size)`` smallest |w| entries."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"sparsity fraction must lie in [0, 1], got {fraction}")
    drop = int(round(fraction * w.size))
    keep = np.ones(w.size, dtype=bool)
    keep[np.argsort(np.abs(w).ravel(), kind="stable")[:drop]] = False
    return keep.reshape(w.shape)


def prune_bitmask(w: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """[K, N] -> (kept values 1-D in row-major order, uint8 mask [K, ceil(N/8)])."""
    keep = magnitude_mask(w, fraction)
    mask = np.packbits(keep, axis=1, bitorder="little")
    return np.ascontiguousarray(w[keep]), mask


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


def _replace(
    rewriter: PatternRewriter,
    op: g.MatMulOp,
    dense: g.ConstantOp,
    consts: list[g.ConstantOp],
    new: g.GraphOp,
) -> None:
    hint = op.result.name_hint
    rewriter.replace(op, [*consts, new], [new.results[0]])
    new.results[0].name_hint = hint
    if not dense.result.uses:
        rewriter.erase(dense)


class Sparsify24(RewritePattern):
    """``graph.matmul(x, const W)`` -> ``sparse.matmul_2_4(x, const values, const indices)``."""

    def __init__(self, weights: WeightStore) -> None:
        self.weights = weights
        self._done: dict[str, tuple[str, str]] = {}  # a weight shared by matmuls compresses once

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.MatMulOp, rewriter: PatternRewriter) -> None:
        found = _prunable_weight(op, self.weights)
        if found is None or found[1].shape[0] % 4:
            return
        dense, w = found
        res = dense.resource.data
        if res not in self._done:
            values, indices = prune_2_4(w)
            self._done[res] = (
                self.weights.add(values, f"{res}.sp24_values"),
                self.weights.add(indices, f"{res}.sp24_indices"),
            )
        consts = [_named_const(self.weights, n) for n in self._done[res]]
        new = sp.MatMul24Op.build_op(
            [op.lhs, consts[0].result, consts[1].result], op.result_specs(), {}
        )
        _replace(rewriter, op, dense, consts, new)


class SparsifyBitmask(RewritePattern):
    """``graph.matmul(x, const W)`` -> ``sparse.matmul_bitmask(x, const values, const mask)``."""

    def __init__(self, weights: WeightStore, fraction: float) -> None:
        self.weights = weights
        self.fraction = fraction
        self._done: dict[str, tuple[str, str]] = {}

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.MatMulOp, rewriter: PatternRewriter) -> None:
        found = _prunable_weight(op, self.weights)
        if found is None:
            return
        dense, w = found
        res = dense.resource.data
        if res not in self._done:
            values, mask = prune_bitmask(w, self.fraction)
            self._done[res] = (
                self.weights.add(values, f"{res}.sp_values"),
                self.weights.add(mask, f"{res}.sp_mask"),
            )
        consts = [_named_const(self.weights, n) for n in self._done[res]]
        new = sp.MatMulBitmaskOp.build_op(
            [op.lhs, consts[0].result, consts[1].result], op.result_specs(), {"n": int(w.shape[1])}
        )
        _replace(rewriter, op, dense, consts, new)


@register_pass
@dataclass(frozen=True)
class Sparsify24Pass(ModulePass):
    """2:4 structured magnitude pruning of constant matmul weights (K % 4 == 0)."""

    name = "sparsify-2-4"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(Sparsify24(weights_of(ctx)), apply_recursively=False).rewrite_module(
            op
        )


@register_pass
@dataclass(frozen=True)
class SparsifyPass(ModulePass):
    """Unstructured magnitude pruning of constant matmul weights to ``fraction`` sparsity,
    stored as bitmask + values."""

    name = "sparsify"
    fraction: float = field(default=0.5)

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"sparsify: fraction must lie in [0, 1], got {self.fraction}")
        PatternRewriteWalker(
            SparsifyBitmask(weights_of(ctx), self.fraction), apply_recursively=False
        ).rewrite_module(op)


# ------------------------------------------------------------------------------ reporting


def _live_constant_bytes(program: Program, pred: type | tuple[type, ...] | None = None) -> int:
    """Bytes of the constants the program uses (dead constants would not ship in a bundle);
    with ``pred``, only constants feeding an op of that type as its weight operands."""
    total, seen = 0, set()
    for op in program.main.walk():
        if not isinstance(op, g.ConstantOp) or not op.result.uses:
            continue
        if pred is not None and not any(
            isinstance(u.operation, pred) and u.index >= 1 for u in op.result.uses
        ):
            continue
        name = op.resource.data
        if name not in seen:
            seen.add(name)
            total += program.weights[name].nbytes
    return total


def _macs(program: Program, inputs: Mapping[str, np.ndarray]) -> tuple[int, dict[str, np.ndarray]]:
    """Multiply-accumulates actually needed by the matmuls (dense and sparse) at the given
    input shapes, and the outputs, from one reference run."""
    from portc.runtimes.reference.interpreter import run_program

    macs = 0

    def count(op: Operation, res: list[np.ndarray]) -> None:
        nonlocal macs
        if isinstance(op, g.MatMulOp):
            a, b = g.spec_of(op.lhs), g.spec_of(op.rhs)
            k = a.shape[-1] if a.shape[-1] is not None else b.shape[-2 if b.rank > 1 else 0]
            macs += res[0].size * int(k or 0)
        elif isinstance(op, sp.MatMul24Op):
            macs += res[0].size * int(g.spec_of(op.values).shape[0] or 0)
        elif isinstance(op, sp.MatMulBitmaskOp):
            n, nnz = op.props()["n"], g.spec_of(op.values).shape[0]
            macs += (res[0].size // n) * int(nnz or 0)

    outs = run_program(program, inputs, on_op=count)
    return macs, outs


def sparsity_report(original: Program, pruned: Program, inputs: Mapping[str, np.ndarray]) -> dict:
    """Bytes, MACs and accuracy of a pruned program against the unpruned one on ``inputs``.

    ``matmul_weight_bytes_*`` count only the weights of matmuls (dense rhs before, compressed
    arrays after); ``weight_bytes_*`` count every live constant. ``index_bytes_2bit`` is what the
    2:4 metadata takes once packed four per byte as ``mma.sp`` reads it (stored as uint8 here).
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
    idx_2bit = 0
    for op in pruned.main.walk():
        if isinstance(op, sp.MatMul24Op):
            idx_2bit += (g.spec_of(op.indices).numel() + 3) // 4
    sparse_ops = (sp.MatMul24Op, sp.MatMulBitmaskOp)
    return {
        "weight_bytes_before": _live_constant_bytes(original),
        "weight_bytes_after": _live_constant_bytes(pruned),
        "matmul_weight_bytes_before": _live_constant_bytes(original, g.MatMulOp),
        "matmul_weight_bytes_after": _live_constant_bytes(pruned, (g.MatMulOp, *sparse_ops)),
        "index_bytes_2bit": idx_2bit,
        "macs_before": macs_before,
        "macs_after": macs_after,
        "macs_saved": macs_before - macs_after,
        "outputs": outputs,
    }
