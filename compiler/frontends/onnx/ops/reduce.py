"""ONNX reduction op decompositions into graph-dialect core ops.

The Reduce* family is one core ``graph.reduce`` (sum/prod/max/min) with elementwise pre- and
post-processing (abs, square, log, exp). Axes come from an attribute in old opsets and from an
input in new ones (ReduceSum from 13, the rest from 18); both must be known at compile time since
core ops take axes as properties. Empty axes mean "all axes" unless ``noop_with_empty_axes``.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx
from xdsl.ir import SSAValue

from portc.compiler.frontends.onnx.registry import NodeError, OnnxContext, Outputs, onnx_op
from portc.dialects import dtypes
from portc.dialects import graph as g

#: First opset in which each Reduce op takes ``axes`` as an input instead of an attribute.
_AXES_INPUT_SINCE: dict[str, int] = {"ReduceSum": 13}
_AXES_INPUT_DEFAULT = 18


def _axes(ctx: OnnxContext, node: onnx.NodeProto, rank: int) -> list[int] | None:
    """Normalised axes to reduce, or None for "reduce nothing" (noop_with_empty_axes)."""
    if ctx.opset >= _AXES_INPUT_SINCE.get(node.op_type, _AXES_INPUT_DEFAULT):
        axes = ctx.const_ints(node, 1, "axes")
    else:
        axes = ctx.attr_ints(node, "axes")
    if not axes:
        if ctx.attr_int(node, "noop_with_empty_axes", 0):
            return None
        return list(range(rank))
    out = []
    for a in axes:
        if not -rank <= a < max(rank, 1):
            raise NodeError(f"axis {a} is out of range for rank {rank}")
        out.append(a % rank if rank else 0)
    return sorted(set(out))


def _reduce(ctx: OnnxContext, kind: str, x: SSAValue, axes: Sequence[int], keepdims: bool
            ) -> SSAValue:
    return ctx.b.reduce(kind, x, axes, keepdims)


def _count(shape: Sequence[int | None], axes: Sequence[int]) -> int:
    n = 1
    for a in axes:
        d = shape[a]
        if d is None:
            raise NodeError("ReduceMean needs static sizes along the reduced axes")
        n *= d
    return n


#: Reductions that are one core reduce.
CORE_REDUCTIONS: dict[str, str] = {"ReduceSum": "sum", "ReduceProd": "prod", "ReduceMax": "max",
                                   "ReduceMin": "min"}


def _reduce_op(ctx: OnnxContext, node: onnx.NodeProto) -> SSAValue:
    x = ctx.input(node, 0)
    spec = g.spec_of(x)
    keep = bool(ctx.attr_int(node, "keepdims", 1))
    axes = _axes(ctx, node, spec.rank)
    op = node.op_type
    b = ctx.b
    if axes is None:
        # noop: the pre/post-processing still applies (ReduceL1 of x is |x|, as ONNX's reference)
        axes = []
    if op in CORE_REDUCTIONS:
        return _reduce(ctx, CORE_REDUCTIONS[op], x, axes, keep)
    # Composite reductions of 16-bit floats run in float32 and round once: squares and partial
    # sums overflow float16 long before a mean or an L2 norm does.
    dt = spec.dtype
    if dtypes.is_float(dt) and dtypes.dtype(dt).bits < 32:
        x = b.cast(x, "float32")
    if op == "ReduceMean":
        y = _reduce(ctx, "sum", x, axes, keep)
        n = _count(spec.shape, axes)
        if n != 1:
            y = b.binary("div", y, b.scalar(n, y))
    elif op == "ReduceL1":
        y = _reduce(ctx, "sum", b.unary("abs", x), axes, keep)
    elif op == "ReduceSumSquare":
        y = _reduce(ctx, "sum", b.binary("mul", x, x), axes, keep)
    elif op == "ReduceL2":
        y = _reduce(ctx, "sum", b.binary("mul", x, x), axes, keep)
        y = b.unary("sqrt", y if _is_float(y) else b.cast(y, "float64"))
    elif op == "ReduceLogSum":
        y = b.unary("log", _reduce(ctx, "sum", x, axes, keep))
    elif op == "ReduceLogSumExp":
        y = _log_sum_exp(ctx, x, axes, keep)
    else:  # pragma: no cover - the registry only routes the ops above here
        raise NodeError(f"unknown reduction {op}")
    return b.cast(y, dt)


def _is_float(v: SSAValue) -> bool:
    return dtypes.is_float(g.spec_of(v).dtype)


def _log_sum_exp(ctx: OnnxContext, x: SSAValue, axes: Sequence[int], keep: bool) -> SSAValue:
    """``m + log(sum(exp(x - m)))`` with ``m = max(x)``, so large inputs do not overflow; an
    all ``-inf`` (or empty) slice gives ``-inf`` rather than NaN."""
    b = ctx.b
    if not axes:
        return b.unary("log", b.unary("exp", x))
    m_keep = _reduce(ctx, "max", x, axes, True)
    # a slice of -inf (or an empty one) has max -inf; shift by 0 there to avoid inf - inf
    finite = b.unary("not", b.unary("isinf", m_keep))
    shift = b.where(finite, m_keep, b.scalar(0, x))
    s = _reduce(ctx, "sum", b.unary("exp", b.binary("sub", x, shift)), axes, keep)
    if not keep:
        shift = b.reshape(shift, g.spec_of(s).shape)
    return b.binary("add", b.unary("log", s), shift)


@onnx_op("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
         "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")
def reduce(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    return [_reduce_op(ctx, node)]


@onnx_op("ArgMax", "ArgMin")
def arg_reduce(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    x = ctx.input(node, 0)
    rank = g.spec_of(x).rank
    axis = ctx.attr_int(node, "axis", 0)
    if not -rank <= axis < max(rank, 1):
        raise NodeError(f"axis {axis} is out of range for rank {rank}")
    props = {"kind": "max" if node.op_type == "ArgMax" else "min", "axis": axis % max(rank, 1),
             "keepdims": bool(ctx.attr_int(node, "keepdims", 1)),
             "select_last_index": bool(ctx.attr_int(node, "select_last_index", 0))}
    return [ctx.b.one(g.ArgReduceOp, [x], props)]


def _scan_axis(ctx: OnnxContext, node: onnx.NodeProto, x: SSAValue) -> int:
    rank = g.spec_of(x).rank
    vals = ctx.const_ints(node, 1, "axis")
    if not vals or len(vals) != 1:
        raise NodeError("axis must be a single value")
    axis = vals[0]
    if not -rank <= axis < max(rank, 1):
        raise NodeError(f"axis {axis} is out of range for rank {rank}")
    return axis % max(rank, 1)


@onnx_op("CumSum")
def cumsum(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    x = ctx.input(node, 0)
    props = {"axis": _scan_axis(ctx, node, x),
             "exclusive": bool(ctx.attr_int(node, "exclusive", 0)),
             "reverse": bool(ctx.attr_int(node, "reverse", 0))}
    return [ctx.b.one(g.CumSumOp, [x], props)]


def _shift(ctx: OnnxContext, x: SSAValue, axis: int, d: int, fill: float) -> SSAValue:
    """``y[..i..] = x[..i-d..]`` along ``axis``, with ``fill`` in the first ``d`` places: a pad at
    the front and an equal crop (negative pad) at the end."""
    rank = g.spec_of(x).rank
    pads = [0] * (2 * rank)
    pads[axis] = d
    pads[rank + axis] = -d
    return ctx.b.one(g.PadOp, [x], {"pads": tuple(pads), "mode": "constant",
                                    "value": float(fill)})


def _flip(ctx: OnnxContext, x: SSAValue, axis: int) -> SSAValue:
    shape = g.spec_of(x).shape
    n = shape[axis]
    assert n is not None
    starts = [0] * len(shape)
    steps = [1] * len(shape)
    starts[axis] = n - 1
    steps[axis] = -1
    return ctx.b.one(g.SliceOp, [x], {"starts": tuple(starts), "steps": tuple(steps)},
                     result=g.spec_of(x))


@onnx_op("CumProd")
def cumprod(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    """There is no core scan-product, so CumProd is a Hillis-Steele scan: ``ceil(log2 n)`` rounds
    of ``y *= shift(y, 2^k)`` with ones shifted in. Exact for integers (wrapping products commute);
    for floats the products associate differently from a sequential loop, within rounding."""
    x = ctx.input(node, 0)
    axis = _scan_axis(ctx, node, x)
    n = g.spec_of(x).shape[axis]
    if n is None:
        raise NodeError("CumProd needs a static size along its axis")
    exclusive = bool(ctx.attr_int(node, "exclusive", 0))
    reverse = bool(ctx.attr_int(node, "reverse", 0))
    if n == 0:
        return [x]
    y = _flip(ctx, x, axis) if reverse and n > 1 else x
    if exclusive:
        y = _shift(ctx, y, axis, 1, 1.0)
    d = 1
    while d < n:
        y = ctx.b.binary("mul", y, _shift(ctx, y, axis, d, 1.0))
        d *= 2
    if reverse and n > 1:
        y = _flip(ctx, y, axis)
    return [y]


