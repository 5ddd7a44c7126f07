"""ONNX elementwise op decompositions into graph-dialect core ops.

Covers math, logic, comparison, cast, clip/where and the activation family. One-to-one ops are
table-driven (ONNX op name -> graph ``unary``/``binary`` fn); activations are short compositions
of core ops so that targets only ever implement the closed core set. Scalars an activation needs
(alpha, beta, ...) are built as 0-d constants in the operand's dtype, as ONNX's own function bodies
do with ``CastLike``, so the decomposition keeps the dtype of its input.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx
from xdsl.ir import SSAValue

from portc.compiler.frontends.onnx.registry import NodeError, OnnxContext, Outputs, onnx_op
from portc.dialects import dtypes
from portc.dialects import graph as g

# ---------------------------------------------------------------------------------- tables

#: ONNX op -> graph.unary fn, for ops that map one-to-one.
UNARY_OPS: dict[str, str] = {
    "Abs": "abs", "Neg": "neg", "Exp": "exp", "Log": "log", "Sqrt": "sqrt",
    "Reciprocal": "reciprocal", "Sin": "sin", "Cos": "cos", "Tan": "tan", "Asin": "asin",
    "Acos": "acos", "Atan": "atan", "Sinh": "sinh", "Cosh": "cosh", "Tanh": "tanh",
    "Asinh": "asinh", "Acosh": "acosh", "Atanh": "atanh", "Erf": "erf", "Sigmoid": "sigmoid",
    "Relu": "relu", "Floor": "floor", "Ceil": "ceil", "Round": "round", "Sign": "sign",
    "Not": "not", "BitwiseNot": "bitwise_not", "IsNaN": "isnan",
}

#: ONNX op -> graph.binary fn, for two-input ops that map one-to-one (numpy broadcasting).
BINARY_OPS: dict[str, str] = {
    "Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div",
    "And": "and", "Or": "or", "Xor": "xor",
    "BitwiseAnd": "bitwise_and", "BitwiseOr": "bitwise_or", "BitwiseXor": "bitwise_xor",
    "Equal": "eq", "Greater": "gt", "Less": "lt", "GreaterOrEqual": "ge", "LessOrEqual": "le",
}

#: Variadic ONNX ops -> the graph.binary fn folded over their inputs.
VARIADIC_OPS: dict[str, str] = {"Max": "max", "Min": "min", "Sum": "add", "Mean": "add"}


def _c(ctx: OnnxContext, value: float, like: SSAValue) -> SSAValue:
    """A 0-d constant in ``like``'s dtype (ONNX's ``CastLike(Constant, X)``)."""
    return ctx.b.scalar(value, like)


def _dtype(v: SSAValue) -> str:
    return g.spec_of(v).dtype


def _is_float(v: SSAValue) -> bool:
    return dtypes.is_float(_dtype(v))


def _widened(ctx: OnnxContext, x: SSAValue) -> tuple[SSAValue, Callable[[SSAValue], SSAValue]]:
    """Composite activations on 16-bit (or narrower) floats compute in float32 and round once
    at the end, like ONNX Runtime's kernels; rounding every intermediate to bfloat16 would cost
    several ulps. Returns the operand to compute with and the function that casts back."""
    dt = _dtype(x)
    if dtypes.is_float(dt) and dtypes.dtype(dt).bits < 32:
        return ctx.b.cast(x, "float32"), lambda y: ctx.b.cast(y, dt)
    return x, lambda y: y


# ---------------------------------------------------------------------------------- one-to-one


@onnx_op(*UNARY_OPS)
def unary(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    return [ctx.b.unary(UNARY_OPS[node.op_type], ctx.input(node, 0))]


@onnx_op(*BINARY_OPS)
def binary(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    return [ctx.b.binary(BINARY_OPS[node.op_type], ctx.input(node, 0), ctx.input(node, 1))]


@onnx_op(*VARIADIC_OPS)
def variadic(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    """Max/Min/Sum/Mean fold pairwise with broadcasting; Mean divides the sum by the count."""
    xs = ctx.inputs(node)
    if not xs:
        raise NodeError("needs at least one input")
    fn = VARIADIC_OPS[node.op_type]
    acc = xs[0]
    for x in xs[1:]:
        acc = ctx.b.binary(fn, acc, x)
    if node.op_type == "Mean" and len(xs) > 1:
        acc = ctx.b.binary("div", acc, _c(ctx, len(xs), acc))
    return [acc]


@onnx_op("IsInf")
def isinf(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    x = ctx.input(node, 0)
    pos = ctx.attr_int(node, "detect_positive", 1)
    neg = ctx.attr_int(node, "detect_negative", 1)
    if pos and neg:
        return [ctx.b.unary("isinf", x)]
    if pos:
        return [ctx.b.unary("isposinf", x)]
    if neg:
        return [ctx.b.unary("isneginf", x)]
    # neither sign detected: always false (no value is both +inf and -inf)
    return [ctx.b.binary("and", ctx.b.unary("isposinf", x), ctx.b.unary("isneginf", x))]


@onnx_op("Pow")
def pow_(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    """ONNX lets the exponent have its own dtype and the result takes the base's. An integer base
    with a float exponent is computed in float64 and truncated back, as ONNX Runtime does;
    otherwise the exponent is cast to the base dtype."""
    x, y = ctx.input(node, 0), ctx.input(node, 1)
    xd, yd = _dtype(x), _dtype(y)
    if xd == yd:
        return [ctx.b.binary("pow", x, y)]
    if not dtypes.is_float(xd) and dtypes.is_float(yd):
        r = ctx.b.binary("pow", ctx.b.cast(x, "float64"), ctx.b.cast(y, "float64"))
        return [ctx.b.cast(r, xd)]
    return [ctx.b.binary("pow", x, ctx.b.cast(y, xd))]


@onnx_op("Mod")
def mod(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    """``fmod=0``: the result takes the divisor's sign (Python ``%``); ``fmod=1``: the dividend's
    (C ``fmod``)."""
    fn = "fmod" if ctx.attr_int(node, "fmod", 0) else "mod"
    return [ctx.b.binary(fn, ctx.input(node, 0), ctx.input(node, 1))]


@onnx_op("BitShift")
def bitshift(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    direction = ctx.attr_str(node, "direction", "")
    if direction not in ("LEFT", "RIGHT"):
        raise NodeError(f"direction must be LEFT or RIGHT, got '{direction}'")
    fn = "shl" if direction == "LEFT" else "shr"
    return [ctx.b.binary(fn, ctx.input(node, 0), ctx.input(node, 1))]


@onnx_op("Where")
def where(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    return [ctx.b.where(ctx.input(node, 0), ctx.input(node, 1), ctx.input(node, 2))]


# ---------------------------------------------------------------------------------- casts


def _cast_target(ctx: OnnxContext, node: onnx.NodeProto, enum: int) -> str:
    if enum == onnx.TensorProto.STRING:
        raise NodeError("casts to or from strings are not supported; portc models numeric "
                        "tensors only")
    return ctx.onnx_dtype(enum, node)


def _cast(ctx: OnnxContext, node: onnx.NodeProto, x: SSAValue, to: str) -> SSAValue:
    """``saturate`` matters only for float8 targets (default on); other targets ignore it.
    ``round_mode`` (float8e8m0) supports only the default ``up``."""
    saturate = bool(ctx.attr_int(node, "saturate", 1))
    if to == "float8_e8m0fnu" and ctx.attr_str(node, "round_mode", "up") != "up":
        raise NodeError("only round_mode='up' is supported for casts to FLOAT8E8M0")
    narrow_float = dtypes.is_float(to) and dtypes.dtype(to).bits <= 8
    return ctx.b.cast(x, to, saturate=saturate if narrow_float else None)


@onnx_op("Cast")
def cast(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    to = ctx.attr(node, "to")
    if to is None:
        raise NodeError("attribute 'to' is required")
    return [_cast(ctx, node, ctx.input(node, 0), _cast_target(ctx, node, int(to)))]  # type: ignore[call-overload]


@onnx_op("CastLike")
def cast_like(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    return [_cast(ctx, node, ctx.input(node, 0), _dtype(ctx.input(node, 1)))]


# ---------------------------------------------------------------------------------- clip


@onnx_op("Clip")
def clip(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    """``min(max(x, lo), hi)``: with ``lo > hi`` every element becomes ``hi``, as ONNX says.
    Opset < 11 gives the bounds as attributes, later opsets as optional inputs."""
    x = ctx.input(node, 0)
    if ctx.opset < 11:
        lo_attr, hi_attr = ctx.attr(node, "min"), ctx.attr(node, "max")
        lo = None if lo_attr is None else _c(ctx, float(lo_attr), x)  # type: ignore[arg-type]
        hi = None if hi_attr is None else _c(ctx, float(hi_attr), x)  # type: ignore[arg-type]
    else:
        lo, hi = ctx.opt_input(node, 1), ctx.opt_input(node, 2)
    y = x
    if lo is not None:
        y = ctx.b.binary("max", y, lo)
    if hi is not None:
        y = ctx.b.binary("min", y, hi)
    return [y]


# ---------------------------------------------------------------------------------- activations


def _neg_where(ctx: OnnxContext, x: SSAValue, neg: SSAValue) -> SSAValue:
    """``x < 0 ? neg : x``."""
    return ctx.b.where(ctx.b.binary("lt", x, _c(ctx, 0, x)), neg, x)


def _softplus(ctx: OnnxContext, x: SSAValue) -> SSAValue:
    """``log(1 + exp(x))`` as ``relu(x) + log(1 + exp(-|x|))``: no overflow for large x."""
    t = ctx.b.unary("exp", ctx.b.unary("neg", ctx.b.unary("abs", x)))
    t = ctx.b.unary("log", ctx.b.binary("add", t, _c(ctx, 1, x)))
    return ctx.b.binary("add", ctx.b.unary("relu", x), t)


@onnx_op("LeakyRelu")
def leaky_relu(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    x = ctx.input(node, 0)
    alpha = ctx.attr_float(node, "alpha", 0.01)
    return [_neg_where(ctx, x, ctx.b.binary("mul", x, _c(ctx, alpha, x)))]


@onnx_op("PRelu")
def prelu(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    x, slope = ctx.input(node, 0), ctx.input(node, 1)
    return [_neg_where(ctx, x, ctx.b.binary("mul", x, slope))]


def _expm1_times(ctx: OnnxContext, x: SSAValue, alpha: float) -> SSAValue:
    """``alpha * (exp(x) - 1)``."""
    em1 = ctx.b.binary("sub", ctx.b.unary("exp", x), _c(ctx, 1, x))
    return ctx.b.binary("mul", em1, _c(ctx, alpha, x))


# Composite float activations: each body maps an operand (already widened to float32 when it
# is a 16-bit float) to the result; ``float_activation`` registers them all.
Body = Callable[[OnnxContext, onnx.NodeProto, SSAValue], SSAValue]


def _elu(ctx: OnnxContext, node: onnx.NodeProto, x: SSAValue) -> SSAValue:
    return _neg_where(ctx, x, _expm1_times(ctx, x, ctx.attr_float(node, "alpha", 1.0)))


def _selu(ctx: OnnxContext, node: onnx.NodeProto, x: SSAValue) -> SSAValue:
    alpha = ctx.attr_float(node, "alpha", 1.67326319217681884765625)
    gamma = ctx.attr_float(node, "gamma", 1.05070102214813232421875)
    inner = ctx.b.where(ctx.b.binary("le", x, _c(ctx, 0, x)), _expm1_times(ctx, x, alpha), x)
    return ctx.b.binary("mul", inner, _c(ctx, gamma, x))


def _celu(ctx: OnnxContext, node: onnx.NodeProto, x: SSAValue) -> SSAValue:
    """``max(0, x) + min(0, alpha * (exp(x / alpha) - 1))``."""
    alpha = ctx.attr_float(node, "alpha", 1.0)
    scaled = ctx.b.binary("div", x, _c(ctx, alpha, x))
    neg = ctx.b.binary("min", _expm1_times(ctx, scaled, alpha), _c(ctx, 0, x))
    return ctx.b.binary("add", ctx.b.unary("relu", x), neg)


def _hard_sigmoid_of(ctx: OnnxContext, x: SSAValue, alpha: float, beta: float) -> SSAValue:
    """``clamp(alpha * x + beta, 0, 1)``."""
    y = ctx.b.binary("add", ctx.b.binary("mul", x, _c(ctx, alpha, x)), _c(ctx, beta, x))
    return ctx.b.binary("max", ctx.b.binary("min", y, _c(ctx, 1, x)), _c(ctx, 0, x))


def _hard_sigmoid(ctx: OnnxContext, node: onnx.NodeProto, x: SSAValue) -> SSAValue:
    return _hard_sigmoid_of(ctx, x, ctx.attr_float(node, "alpha", 0.2),
                            ctx.attr_float(node, "beta", 0.5))


def _hard_swish(ctx: OnnxContext, node: onnx.NodeProto, x: SSAValue) -> SSAValue:
    return ctx.b.binary("mul", x, _hard_sigmoid_of(ctx, x, 1.0 / 6.0, 0.5))


def _softsign(ctx: OnnxContext, node: onnx.NodeProto, x: SSAValue) -> SSAValue:
    den = ctx.b.binary("add", ctx.b.unary("abs", x), _c(ctx, 1, x))
    return ctx.b.binary("div", x, den)


def _mish(ctx: OnnxContext, node: onnx.NodeProto, x: SSAValue) -> SSAValue:
    return ctx.b.binary("mul", x, ctx.b.unary("tanh", _softplus(ctx, x)))


def _swish(ctx: OnnxContext, node: onnx.NodeProto, x: SSAValue) -> SSAValue:
    alpha = ctx.attr_float(node, "alpha", 1.0)
    ax = x if alpha == 1.0 else ctx.b.binary("mul", x, _c(ctx, alpha, x))
    return ctx.b.binary("mul", x, ctx.b.unary("sigmoid", ax))


def _gelu(ctx: OnnxContext, node: onnx.NodeProto, x: SSAValue) -> SSAValue:
    """``0.5 x (1 + erf(x / sqrt 2))``, or with ``approximate='tanh'``
    ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``."""
    approx = ctx.attr_str(node, "approximate", "none")
    if approx == "none":
        inner = ctx.b.unary("erf", ctx.b.binary("mul", x, _c(ctx, 1 / math.sqrt(2), x)))
    elif approx == "tanh":
        x3 = ctx.b.binary("mul", ctx.b.binary("mul", x, x), x)
        t = ctx.b.binary("add", x, ctx.b.binary("mul", x3, _c(ctx, 0.044715, x)))
        inner = ctx.b.unary("tanh", ctx.b.binary("mul", t, _c(ctx, math.sqrt(2 / math.pi), x)))
    else:
        raise NodeError(f"approximate must be 'none' or 'tanh', got '{approx}'")
    half_x = ctx.b.binary("mul", x, _c(ctx, 0.5, x))
    return ctx.b.binary("mul", half_x, ctx.b.binary("add", inner, _c(ctx, 1, x)))


FLOAT_ACTIVATIONS: dict[str, Body] = {
    "Elu": _elu, "Selu": _selu, "Celu": _celu, "HardSigmoid": _hard_sigmoid,
    "HardSwish": _hard_swish, "Softplus": lambda ctx, node, x: _softplus(ctx, x),
    "Softsign": _softsign, "Mish": _mish, "Swish": _swish, "Gelu": _gelu,
}


@onnx_op(*FLOAT_ACTIVATIONS)
def float_activation(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    x, back = _widened(ctx, ctx.input(node, 0))
    return [back(FLOAT_ACTIVATIONS[node.op_type](ctx, node, x))]


@onnx_op("ThresholdedRelu")
def thresholded_relu(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    x = ctx.input(node, 0)
    alpha = ctx.attr_float(node, "alpha", 1.0)
    return [ctx.b.where(ctx.b.binary("gt", x, _c(ctx, alpha, x)), x, _c(ctx, 0, x))]


@onnx_op("Shrink")
def shrink(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    """``x < -l ? x + bias : x > l ? x - bias : 0``."""
    x = ctx.input(node, 0)
    lambd = ctx.attr_float(node, "lambd", 0.5)
    bias = ctx.attr_float(node, "bias", 0.0)
    if not _is_float(x) and (lambd != int(lambd) or bias != int(bias)):
        raise NodeError("integer Shrink needs integral lambd and bias")
    b = _c(ctx, bias, x)
    hi = ctx.b.where(ctx.b.binary("gt", x, _c(ctx, lambd, x)), ctx.b.binary("sub", x, b),
                     _c(ctx, 0, x))
    if dtypes.dtype(_dtype(x)).kind == "uint" and lambd >= 0:
        return [hi]  # no unsigned value lies below -lambd
    lo_cond = ctx.b.binary("lt", x, _c(ctx, -lambd, x))
    return [ctx.b.where(lo_cond, ctx.b.binary("add", x, b), hi)]


# ---------------------------------------------------------------------------------- softmax


def _coerce_2d(ctx: OnnxContext, node: onnx.NodeProto, x: SSAValue, axis: int
               ) -> tuple[SSAValue, int]:
    """Opset < 13 softmax family: flatten to [prod(dims[:axis]), prod(dims[axis:])], axis 1."""
    shape = ctx.static_shape(x, node)
    a = axis % max(len(shape), 1)
    rows = int(np.prod(shape[:a], dtype=np.int64))
    cols = int(np.prod(shape[a:], dtype=np.int64))
    return ctx.b.reshape(x, (rows, cols)), 1


def _softmax_family(ctx: OnnxContext, node: onnx.NodeProto, body: str) -> Outputs:
    x = ctx.input(node, 0)
    legacy = ctx.opset < 13
    axis = ctx.attr_int(node, "axis", 1 if legacy else -1)
    rank = g.spec_of(x).rank
    if not -rank <= axis < max(rank, 1):
        raise NodeError(f"axis {axis} is out of range for rank {rank}")
    shape = g.spec_of(x).shape
    xin = x
    if legacy:
        xin, axis = _coerce_2d(ctx, node, x, axis)
    else:
        axis %= max(rank, 1)
    if body == "softmax":
        y = ctx.b.one(g.SoftmaxOp, [xin], {"axis": axis})
    elif body == "logsoftmax":
        # x - max - log(sum(exp(x - max))): never log(0) for tiny probabilities
        xw, back = _widened(ctx, xin)
        s = ctx.b.binary("sub", xw, ctx.b.reduce("max", xw, [axis], True))
        lse = ctx.b.unary("log", ctx.b.reduce("sum", ctx.b.unary("exp", s), [axis], True))
        y = back(ctx.b.binary("sub", s, lse))
    else:
        y = _hardmax(ctx, xin, axis)
    return [ctx.b.reshape(y, shape) if legacy else y]


def _hardmax(ctx: OnnxContext, x: SSAValue, axis: int) -> SSAValue:
    """One-hot of the first maximum along ``axis``: argmax compared with an iota."""
    spec = g.spec_of(x)
    n = spec.shape[axis]
    if n is None:
        raise NodeError("Hardmax needs a static size along its axis")
    idx = ctx.b.one(g.ArgReduceOp, [x], {"kind": "max", "axis": axis, "keepdims": True,
                                         "select_last_index": False})
    iota_shape = [1] * spec.rank
    iota_shape[axis] = n
    iota = ctx.b.const(np.arange(n, dtype=np.int64).reshape(iota_shape), hint="iota")
    return ctx.b.cast(ctx.b.binary("eq", idx, iota), spec.dtype)


@onnx_op("Softmax")
def softmax(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    return _softmax_family(ctx, node, "softmax")


@onnx_op("LogSoftmax")
def log_softmax(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    return _softmax_family(ctx, node, "logsoftmax")


@onnx_op("Hardmax")
def hardmax(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    return _softmax_family(ctx, node, "hardmax")
