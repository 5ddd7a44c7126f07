"""Canonicalization patterns for graph ops, attached to the ops through traits.

They remove what frontends leave behind: reshape chains, inverse transposes, casts to the same
type, no-op broadcasts/slices and identity ops. xDSL's ``canonicalize`` pass picks them up from the
``HasCanonicalizationPatternsTrait`` on each op class, the way MLIR ops carry their folders.
"""

from __future__ import annotations

from xdsl.pattern_rewriter import PatternRewriter, RewritePattern, op_type_rewrite_pattern

from portc.dialects import graph as g


class ReshapeOfReshape(RewritePattern):
    """reshape(reshape(x)) -> reshape(x); reshape to the same type -> x."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.ReshapeOp, rewriter: PatternRewriter) -> None:
        if op.x.type == op.result.type:
            rewriter.replace(op, [], [op.x])
            return
        inner = op.x.owner
        if isinstance(inner, g.ReshapeOp):
            rewriter.replace(op, g.ReshapeOp.build_op([inner.x], [g.spec_of(op.result)], {}))


class TransposeOfTranspose(RewritePattern):
    """transpose(transpose(x, p), q) -> transpose(x, p[q]) or x when the composition is identity."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.TransposeOp, rewriter: PatternRewriter) -> None:
        perm = op.props()["perm"]
        if list(perm) == list(range(len(perm))):
            rewriter.replace(op, [], [op.x])
            return
        inner = op.x.owner
        if isinstance(inner, g.TransposeOp):
            p = inner.props()["perm"]
            composed = tuple(p[i] for i in perm)
            if list(composed) == list(range(len(composed))):
                rewriter.replace(op, [], [inner.x])
            else:
                rewriter.replace(op, g.TransposeOp.build_op(
                    [inner.x], [g.spec_of(op.result)], {"perm": composed}))


class NoOpCast(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.CastOp, rewriter: PatternRewriter) -> None:
        if op.x.type == op.result.type:
            rewriter.replace(op, [], [op.x])


class NoOpBroadcast(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.BroadcastOp, rewriter: PatternRewriter) -> None:
        if op.x.type == op.result.type:
            rewriter.replace(op, [], [op.x])


class NoOpSlice(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.SliceOp, rewriter: PatternRewriter) -> None:
        p = op.props()
        if op.x.type == op.result.type and all(s == 0 for s in p["starts"]) and all(
                s == 1 for s in p["steps"]):
            rewriter.replace(op, [], [op.x])


class IdentityUnary(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.UnaryOp, rewriter: PatternRewriter) -> None:
        if op.props()["fn"] == "identity":
            rewriter.replace(op, [], [op.x])


PATTERNS: dict[type[g.GraphOp], tuple[RewritePattern, ...]] = {
    g.ReshapeOp: (ReshapeOfReshape(),),
    g.TransposeOp: (TransposeOfTranspose(),),
    g.CastOp: (NoOpCast(),),
    g.BroadcastOp: (NoOpBroadcast(),),
    g.SliceOp: (NoOpSlice(),),
    g.UnaryOp: (IdentityUnary(),),
}
