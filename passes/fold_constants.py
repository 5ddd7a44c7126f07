"""``fold-constants``: evaluate ops whose operands are all constants, at compile time.

Frontends already fold while building; this pass catches what later passes expose (a quantizer
that makes a scale constant, a canonicalization that removes a cast). Folding runs the reference
kernels, so a folded value is bit-identical to what the reference interpreter would compute, and
the result is a new weight (the store's arrays are shared and never modified in place).
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
)

from portc.compiler.program import weights_of
from portc.compiler.weights import WeightStore
from portc.dialects import dtypes
from portc.dialects import graph as g
from portc.passes.registry import register_pass
from portc.runtimes.reference.kernels import KernelError, run_kernel

#: results larger than this stay computed at run time (folding must not bloat the bundle)
MAX_FOLDED_ELEMENTS = 1 << 22
#: results up to this size fold even when they are larger than their operands
SMALL_FOLD_BYTES = 1 << 16


def folding_pays(inputs: list, results: list[g.TensorSpec]) -> bool:
    """Fold unless it grows the stored data: dequantizing int4 weights or broadcasting a scalar
    into a big constant would undo what a quantizer saved and bloat the bundle. Small results
    (shape arithmetic) always fold."""
    out_bytes = sum(s.numel() * max(1, dtypes.dtype(s.dtype).bits // 8) for s in results)
    in_bytes = sum(a.nbytes for a in inputs)
    return out_bytes <= max(in_bytes, SMALL_FOLD_BYTES)


class FoldAllConstantOperands(RewritePattern):
    def __init__(self, weights: WeightStore) -> None:
        self.weights = weights

    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter) -> None:
        if not isinstance(op, g.GraphOp) or isinstance(op, g.ConstantOp) or not op.operands:
            return
        owners = [v.owner for v in op.operands]
        if not all(isinstance(o, g.ConstantOp) for o in owners):
            return
        specs = op.result_specs()
        if not all(s.is_static and s.numel() <= MAX_FOLDED_ELEMENTS for s in specs):
            return
        arrays = [self.weights[o.resource.data] for o in owners]  # type: ignore[union-attr]
        if not folding_pays(arrays, specs):
            return
        try:
            results = run_kernel(type(op), op.props(), arrays, specs)
        except KernelError:
            return  # a value-dependent failure stays in the program, where it reports at run time
        new_ops = []
        for r, arr in zip(op.results, results, strict=True):
            name = self.weights.add(arr, r.name_hint or "folded")
            new_ops.append(g.ConstantOp.build_op([], [g.spec_of(r)], {"resource": name}))
        rewriter.replace(op, new_ops, [c.results[0] for c in new_ops])


@register_pass
@dataclass(frozen=True)
class FoldConstantsPass(ModulePass):
    """Evaluate graph ops whose operands are all constants."""

    name = "fold-constants"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        walker = PatternRewriteWalker(
            GreedyRewritePatternApplier([FoldAllConstantOperands(weights_of(ctx))]),
            apply_recursively=True,
        )
        walker.rewrite_module(op)
