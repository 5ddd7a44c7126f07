"""Reductions, softmax family, statistics, cumulative sums and sorting.

ATen reductions name their axes ``dim`` and treat ``None`` or ``[]`` as "every axis"; integer and
bool sums accumulate in int64 (the recorded result dtype), so inputs are cast to the result dtype
before reducing.
"""

from __future__ import annotations

import math
from typing import Any

from xdsl.ir import SSAValue

from portc.compiler.frontends.torch_ops.registry import Args, NodeError, TorchContext, aten_op
from portc.dialects import graph as g


def _count(ctx: TorchContext, x: SSAValue, axes: list[int]) -> int:
    shape = ctx.shape(x)
    return math.prod(shape[i] for i in axes)


@aten_op("sum.dim_IntList", "sum.default", "prod.dim_int", "prod.default")
def sum_(ctx: TorchContext, a: Args) -> SSAValue:
    kind = "prod" if "prod" in str(ctx.node.target) else "sum"
    x = ctx.b.cast(a.self, ctx.out_dtype())
    axes = ctx.axes(a.get("dim"), ctx.rank(x))
    return ctx.b.reduce(kind, x, axes, bool(a.get("keepdim", False)))


def _mean(ctx: TorchContext, x: SSAValue, axes: list[int], keep: bool) -> SSAValue:
    s = ctx.b.reduce("sum", x, axes, keep)
    n = _count(ctx, x, axes)
    return ctx.b.binary("div", s, ctx.b.scalar(n, x)) if n != 1 else s


@aten_op("mean.dim", "mean.default")
def mean(ctx: TorchContext, a: Args) -> SSAValue:
    x = ctx.b.cast(a.self, ctx.out_dtype())
    return _mean(ctx, x, ctx.axes(a.get("dim"), ctx.rank(x)), bool(a.get("keepdim", False)))


@aten_op("amax.default", "amin.default", "max.default", "min.default")
def amax(ctx: TorchContext, a: Args) -> SSAValue:
    kind = "max" if "max" in str(ctx.node.target) else "min"
    axes = ctx.axes(a.get("dim"), ctx.rank(a.self))
    return ctx.b.reduce(kind, a.self, axes, bool(a.get("keepdim", False)))


@aten_op("max.dim", "min.dim")
def max_dim(ctx: TorchContext, a: Args) -> tuple[SSAValue, SSAValue]:
    kind = "max" if "max" in str(ctx.node.target) else "min"
    r = ctx.rank(a.self)
    d = ctx.axis(a.dim, r)
    vals = ctx.b.reduce(kind, a.self, [d], bool(a.keepdim))
    idx = ctx.b.one(g.ArgReduceOp, [a.self], {"kind": kind, "axis": d,
                                               "keepdims": bool(a.keepdim),
                                               "select_last_index": False})
    return vals, idx


@aten_op("max.other", "min.other")
def max_other(ctx: TorchContext, a: Args) -> SSAValue:
    dt = ctx.out_dtype()
    fn = "max" if "max" in str(ctx.node.target) else "min"
    return ctx.b.binary(fn, ctx.tensor(a.self, dt), ctx.tensor(a.other, dt))


@aten_op("argmax.default", "argmin.default")
def argmax(ctx: TorchContext, a: Args) -> SSAValue:
    kind = "max" if "argmax" in str(ctx.node.target) else "min"
    x = a.self
    shape = ctx.shape(x)
    if a.dim is None:
        flat = ctx.b.reshape(x, [math.prod(shape)])
        r = ctx.b.one(g.ArgReduceOp, [flat], {"kind": kind, "axis": 0, "keepdims": False,
                                              "select_last_index": False})
        return ctx.b.reshape(r, [1] * len(shape)) if a.keepdim else r
    return ctx.b.one(g.ArgReduceOp, [x], {"kind": kind, "axis": ctx.axis(a.dim, len(shape)),
                                          "keepdims": bool(a.keepdim),
                                          "select_last_index": False})


@aten_op("any.default", "any.dim", "any.dims", "all.default", "all.dim", "all.dims")
def any_(ctx: TorchContext, a: Args) -> SSAValue:
    kind = "max" if "any" in str(ctx.node.target) else "min"
    x = ctx.b.cast(a.self, "bool")
    axes = ctx.axes(a.get("dim"), ctx.rank(x))
    r = ctx.b.reduce(kind, x, axes, bool(a.get("keepdim", False)))
    return ctx.b.cast(r, ctx.out_dtype(fallback="bool"))


def _var(ctx: TorchContext, x: SSAValue, dims: Any, correction: float, keep: bool
         ) -> tuple[SSAValue, SSAValue]:
    """(var, mean) with ``sum((x - mean)^2) / (n - correction)`` (two-pass, like ATen)."""
    axes = ctx.axes(dims, ctx.rank(x))
    m = _mean(ctx, x, axes, True)
    d = ctx.b.binary("sub", x, m)
    ss = ctx.b.reduce("sum", ctx.b.binary("mul", d, d), axes, keep)
    denom = max(_count(ctx, x, axes) - correction, 0)
    var = ctx.b.binary("div", ss, ctx.b.scalar(float(denom), x))
    if not keep:
        m = ctx.b.reshape(m, ctx.spec(var).shape)
    return var, m


def _correction(a: Args) -> float:
    if "correction" in a:
        return 1.0 if a.correction is None else float(a.correction)
    return 1.0 if a.get("unbiased", True) else 0.0


@aten_op("var.correction", "var.dim", "var.default", "std.correction", "std.dim",
         "std.default")
def var(ctx: TorchContext, a: Args) -> SSAValue:
    x = ctx.b.cast(a.self, ctx.out_dtype())
    v, _ = _var(ctx, x, a.get("dim"), _correction(a), bool(a.get("keepdim", False)))
    return ctx.b.unary("sqrt", v) if "std" in str(ctx.node.target) else v


@aten_op("var_mean.correction", "var_mean.dim", "std_mean.correction", "std_mean.dim")
def var_mean(ctx: TorchContext, a: Args) -> tuple[SSAValue, SSAValue]:
    x = ctx.b.cast(a.self, ctx.out_dtype(0))
    v, m = _var(ctx, x, a.get("dim"), _correction(a), bool(a.get("keepdim", False)))
    return (ctx.b.unary("sqrt", v) if "std" in str(ctx.node.target) else v), m


@aten_op("logsumexp.default")
def logsumexp(ctx: TorchContext, a: Args) -> SSAValue:
    x = ctx.b.cast(a.self, ctx.out_dtype())
    axes = ctx.axes(a.dim, ctx.rank(x))
    keep = bool(a.keepdim)
    mx = ctx.b.reduce("max", x, axes, True)
    # a row of -inf would give nan from (-inf) - (-inf); shift by 0 there instead
    finite = ctx.b.unary("isinf", mx)
    mx = ctx.b.where(finite, ctx.b.scalar(0.0, x), mx)
    s = ctx.b.reduce("sum", ctx.b.unary("exp", ctx.b.binary("sub", x, mx)), axes, keep)
    shift = mx if keep else ctx.b.reshape(mx, ctx.spec(s).shape)
    return ctx.b.binary("add", ctx.b.unary("log", s), shift)


@aten_op("linalg_vector_norm.default", "norm.ScalarOpt_dim")
def vector_norm(ctx: TorchContext, a: Args) -> SSAValue:
    ordv = a.get("ord", a.get("p", 2))
    ordv = 2.0 if ordv is None else float(ordv)
    x = ctx.b.unary("abs", ctx.b.cast(a.self, ctx.out_dtype()))
    axes = ctx.axes(a.dim, ctx.rank(x))
    keep = bool(a.keepdim)
    if math.isinf(ordv):
        return ctx.b.reduce("max" if ordv > 0 else "min", x, axes, keep)
    if ordv == 1:
        return ctx.b.reduce("sum", x, axes, keep)
    if ordv == 2:
        return ctx.b.unary("sqrt", ctx.b.reduce("sum", ctx.b.binary("mul", x, x), axes, keep))
    if ordv == 0:
        raise NodeError("vector norm with ord=0 is not supported")
    p = ctx.b.scalar(ordv, x)
    s = ctx.b.reduce("sum", ctx.b.binary("pow", x, p), axes, keep)
    return ctx.b.binary("pow", s, ctx.b.scalar(1.0 / ordv, x))


# ------------------------------------------------------------------------------ softmax


@aten_op("_softmax.default", "softmax.int", "_safe_softmax.default")
def softmax(ctx: TorchContext, a: Args) -> SSAValue:
    x = ctx.b.cast(a.self, ctx.out_dtype())
    d = ctx.axis(a.dim, ctx.rank(x))
    y = ctx.b.one(g.SoftmaxOp, [x], {"axis": d})
    if "_safe_softmax" in str(ctx.node.target):
        # rows that are entirely -inf give 0 instead of nan (masked-out attention rows)
        mx = ctx.b.reduce("max", x, [d], True)
        dead = ctx.b.binary("eq", mx, ctx.b.scalar(-math.inf, x))
        y = ctx.b.where(dead, ctx.b.scalar(0.0, x), y)
    return y


@aten_op("_log_softmax.default", "log_softmax.int")
def log_softmax(ctx: TorchContext, a: Args) -> SSAValue:
    """``(x - max) - log(sum(exp(x - max)))``: no log of a rounded-to-zero probability."""
    x = ctx.b.cast(a.self, ctx.out_dtype())
    d = ctx.axis(a.dim, ctx.rank(x))
    s = ctx.b.binary("sub", x, ctx.b.reduce("max", x, [d], True))
    lse = ctx.b.unary("log", ctx.b.reduce("sum", ctx.b.unary("exp", s), [d], True))
    return ctx.b.binary("sub", s, lse)


# ------------------------------------------------------------------------------ scans, sorting


@aten_op("cumsum.default")
def cumsum(ctx: TorchContext, a: Args) -> SSAValue:
    x = ctx.b.cast(a.self, ctx.out_dtype())
    if ctx.rank(x) == 0:
        return x
    return ctx.b.one(g.CumSumOp, [x], {"axis": ctx.axis(a.dim, ctx.rank(x)), "exclusive": False,
                                       "reverse": False})


@aten_op("topk.default")
def topk(ctx: TorchContext, a: Args) -> list[SSAValue]:
    r = ctx.rank(a.self)
    return ctx.b.op(g.TopKOp, [a.self], {"axis": ctx.axis(a.dim, r), "k": int(a.k),
                                         "largest": bool(a.largest)})


@aten_op("sort.default", "sort.stable")
def sort(ctx: TorchContext, a: Args) -> list[SSAValue]:
    r = ctx.rank(a.self)
    return ctx.b.op(g.SortOp, [a.self], {"axis": ctx.axis(a.dim, r),
                                         "descending": bool(a.descending)})


@aten_op("argsort.default", "argsort.stable")
def argsort(ctx: TorchContext, a: Args) -> SSAValue:
    return sort(ctx, a)[1]

