"""Pointwise ATen ops: unary math, activations, arithmetic with PyTorch type promotion, compares.

Operands are cast to the dtype the exported program records for the result (``meta['val']``)
before the core op runs, which is exactly PyTorch's "compute in the promoted type" rule; compares
cast to the promoted operand type instead, since their result is bool.
"""

from __future__ import annotations

import math
from typing import Any

from xdsl.ir import SSAValue

from portc.compiler.frontends.torch_ops.registry import Args, NodeError, TorchContext, aten_op
from portc.dialects import dtypes

# ------------------------------------------------------------------------------ unary

#: ATen overload -> graph.unary fn (same semantics, computed in the result dtype).
UNARY: dict[str, str] = {
    "relu.default": "relu", "sigmoid.default": "sigmoid", "tanh.default": "tanh",
    "exp.default": "exp", "log.default": "log", "sqrt.default": "sqrt", "rsqrt.default": "rsqrt",
    "neg.default": "neg", "abs.default": "abs", "erf.default": "erf", "sin.default": "sin",
    "cos.default": "cos", "tan.default": "tan", "asin.default": "asin", "acos.default": "acos",
    "atan.default": "atan", "sinh.default": "sinh", "cosh.default": "cosh",
    "asinh.default": "asinh", "acosh.default": "acosh", "atanh.default": "atanh",
    "floor.default": "floor", "ceil.default": "ceil", "reciprocal.default": "reciprocal",
    "sign.default": "sign", "sgn.default": "sign", "round.default": "round",
    "bitwise_not.default": "bitwise_not", "isnan.default": "isnan", "isinf.default": "isinf",
    "isposinf.default": "isposinf", "isneginf.default": "isneginf",
}
_INT_IDENTITY = {"floor", "ceil", "round"}  # integer inputs pass through unchanged


def _unary(fn: str) -> Any:
    def decomp(ctx: TorchContext, a: Args) -> SSAValue:
        x = a.self
        if fn in ("isnan", "isinf", "isposinf", "isneginf"):
            src = ctx.spec(x).dtype
            return ctx.b.unary(fn, x if dtypes.is_float(src) else ctx.b.cast(x, "float32"))
        out = ctx.out_dtype(fallback=ctx.spec(x).dtype)
        if fn in _INT_IDENTITY and not dtypes.is_float(out):
            return x
        if fn == "bitwise_not" and out == "bool":
            return ctx.b.unary("not", x)
        return ctx.b.unary(fn, ctx.b.cast(x, out))

    return decomp


for _name, _fn in UNARY.items():
    aten_op(_name)(_unary(_fn))


@aten_op("logical_not.default")
def logical_not(ctx: TorchContext, a: Args) -> SSAValue:
    return ctx.b.cast(ctx.b.unary("not", ctx.b.cast(a.self, "bool")), ctx.out_dtype())


def _scalar(ctx: TorchContext, v: float, like: SSAValue) -> SSAValue:
    return ctx.b.scalar(v, like)


def _float_in(ctx: TorchContext, x: SSAValue) -> SSAValue:
    return ctx.b.cast(x, ctx.out_dtype(fallback=ctx.spec(x).dtype))


@aten_op("gelu.default")
def gelu(ctx: TorchContext, a: Args) -> SSAValue:
    """``none``: x/2 (1 + erf(x/sqrt 2)); ``tanh``: x/2 (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3)))."""
    b, x = ctx.b, _float_in(ctx, a.self)
    half = b.binary("mul", x, _scalar(ctx, 0.5, x))
    if a.approximate == "tanh":
        cube = b.binary("mul", b.binary("mul", x, x), x)
        inner = b.binary("add", x, b.binary("mul", cube, _scalar(ctx, 0.044715, x)))
        t = b.unary("tanh", b.binary("mul", inner, _scalar(ctx, math.sqrt(2 / math.pi), x)))
    elif a.approximate == "none":
        t = b.unary("erf", b.binary("mul", x, _scalar(ctx, 1 / math.sqrt(2), x)))
    else:
        raise NodeError(f"gelu approximate='{a.approximate}' is not a PyTorch mode")
    return b.binary("mul", half, b.binary("add", t, _scalar(ctx, 1.0, x)))


@aten_op("silu.default")
def silu(ctx: TorchContext, a: Args) -> SSAValue:
    x = _float_in(ctx, a.self)
    return ctx.b.binary("mul", x, ctx.b.unary("sigmoid", x))


def _softplus(ctx: TorchContext, x: SSAValue, beta: float = 1.0, threshold: float = 20.0
              ) -> SSAValue:
    """log(1 + exp(beta x)) / beta, linear above ``threshold`` like PyTorch (and overflow-free)."""
    b = ctx.b
    bx = b.binary("mul", x, _scalar(ctx, beta, x)) if beta != 1 else x
    # log1p(exp(-|bx|)) + max(bx, 0) is exact in float64 and never overflows
    soft = b.binary("add", b.unary("log", b.binary("add", _scalar(ctx, 1.0, x), b.unary(
        "exp", b.unary("neg", b.unary("abs", bx))))), b.unary("relu", bx))
    if beta != 1:
        soft = b.binary("div", soft, _scalar(ctx, beta, x))
    return b.where(b.binary("gt", bx, _scalar(ctx, threshold, x)), x, soft)


@aten_op("softplus.default")
def softplus(ctx: TorchContext, a: Args) -> SSAValue:
    return _softplus(ctx, _float_in(ctx, a.self), float(a.beta), float(a.threshold))


@aten_op("mish.default")
def mish(ctx: TorchContext, a: Args) -> SSAValue:
    x = _float_in(ctx, a.self)
    return ctx.b.binary("mul", x, ctx.b.unary("tanh", _softplus(ctx, x)))


@aten_op("hardtanh.default")
def hardtanh(ctx: TorchContext, a: Args) -> SSAValue:
    return _clamp(ctx, a.self, a.min_val, a.max_val)


@aten_op("hardsigmoid.default")
def hardsigmoid(ctx: TorchContext, a: Args) -> SSAValue:
    x = _float_in(ctx, a.self)
    t = ctx.b.binary("div", ctx.b.binary("add", x, _scalar(ctx, 3.0, x)), _scalar(ctx, 6.0, x))
    return _clamp(ctx, t, 0.0, 1.0)


@aten_op("hardswish.default")
def hardswish(ctx: TorchContext, a: Args) -> SSAValue:
    x = _float_in(ctx, a.self)
    return ctx.b.binary("mul", x, hardsigmoid(ctx, a))


@aten_op("leaky_relu.default")
def leaky_relu(ctx: TorchContext, a: Args) -> SSAValue:
    x = _float_in(ctx, a.self)
    neg = ctx.b.binary("mul", x, _scalar(ctx, float(a.negative_slope), x))
    return ctx.b.where(ctx.b.binary("gt", x, _scalar(ctx, 0.0, x)), x, neg)


@aten_op("elu.default")
def elu(ctx: TorchContext, a: Args) -> SSAValue:
    """scale * (x if x > 0 else alpha * (exp(input_scale x) - 1))."""
    b, x = ctx.b, _float_in(ctx, a.self)
    e = b.binary("sub", b.unary("exp", b.binary("mul", x, _scalar(ctx, float(a.input_scale), x))),
                 _scalar(ctx, 1.0, x))
    y = b.where(b.binary("gt", x, _scalar(ctx, 0.0, x)), x,
                b.binary("mul", e, _scalar(ctx, float(a.alpha), x)))
    return b.binary("mul", y, _scalar(ctx, float(a.scale), x)) if float(a.scale) != 1 else y


@aten_op("log1p.default")
def log1p(ctx: TorchContext, a: Args) -> SSAValue:
    x = _float_in(ctx, a.self)
    return ctx.b.unary("log", ctx.b.binary("add", x, _scalar(ctx, 1.0, x)))


@aten_op("expm1.default")
def expm1(ctx: TorchContext, a: Args) -> SSAValue:
    x = _float_in(ctx, a.self)
    return ctx.b.binary("sub", ctx.b.unary("exp", x), _scalar(ctx, 1.0, x))


@aten_op("log2.default", "log10.default")
def log_base(ctx: TorchContext, a: Args) -> SSAValue:
    x = _float_in(ctx, a.self)
    base = 2.0 if str(ctx.node.target).startswith("aten.log2") else 10.0
    return ctx.b.binary("div", ctx.b.unary("log", x), _scalar(ctx, math.log(base), x))


@aten_op("exp2.default")
def exp2(ctx: TorchContext, a: Args) -> SSAValue:
    x = _float_in(ctx, a.self)
    return ctx.b.binary("pow", _scalar(ctx, 2.0, x), x)


@aten_op("trunc.default")
def trunc(ctx: TorchContext, a: Args) -> SSAValue:
    return _trunc(ctx, a.self)


def _trunc(ctx: TorchContext, x: SSAValue) -> SSAValue:
    if not dtypes.is_float(ctx.spec(x).dtype):
        return x
    b = ctx.b
    return b.where(b.binary("lt", x, _scalar(ctx, 0.0, x)), b.unary("ceil", x), b.unary("floor", x))


# ------------------------------------------------------------------------------ binary

#: ATen overload -> (graph.binary fn, is a comparison)
BINARY: dict[str, tuple[str, bool]] = {
    "mul.Tensor": ("mul", False), "mul.Scalar": ("mul", False),
    "pow.Tensor_Tensor": ("pow", False), "pow.Tensor_Scalar": ("pow", False),
    "maximum.default": ("max", False), "minimum.default": ("min", False),
    "fmod.Tensor": ("fmod", False), "fmod.Scalar": ("fmod", False),
    "remainder.Tensor": ("mod", False), "remainder.Scalar": ("mod", False),
    "atan2.default": ("atan2", False),
    "eq.Tensor": ("eq", True), "eq.Scalar": ("eq", True), "ne.Tensor": ("ne", True),
    "ne.Scalar": ("ne", True), "lt.Tensor": ("lt", True), "lt.Scalar": ("lt", True),
    "le.Tensor": ("le", True), "le.Scalar": ("le", True), "gt.Tensor": ("gt", True),
    "gt.Scalar": ("gt", True), "ge.Tensor": ("ge", True), "ge.Scalar": ("ge", True),
}


def _binary(fn: str, compare: bool) -> Any:
    def decomp(ctx: TorchContext, a: Args) -> SSAValue:
        lhs, rhs = a.self, a.other if "other" in a else a.exponent
        dt = ctx.promote(lhs, rhs) if compare else ctx.out_dtype(fallback=ctx.promote(lhs, rhs))
        return ctx.b.binary(fn, ctx.tensor(lhs, dt), ctx.tensor(rhs, dt))

    return decomp


for _name, (_fn, _cmp) in BINARY.items():
    aten_op(_name)(_binary(_fn, _cmp))


@aten_op("pow.Scalar")
def pow_scalar(ctx: TorchContext, a: Args) -> SSAValue:
    dt = ctx.out_dtype()
    return ctx.b.binary("pow", ctx.tensor(a.self, dt), ctx.tensor(a.exponent, dt))


@aten_op("add.Tensor", "add.Scalar", "sub.Tensor", "sub.Scalar", "rsub.Tensor", "rsub.Scalar")
def add_sub(ctx: TorchContext, a: Args) -> SSAValue:
    """``self +/- alpha * other``; rsub is ``other - alpha * self``."""
    op = str(ctx.node.target).split(".")[1]
    dt = ctx.out_dtype(fallback=ctx.promote(a.self, a.other))
    x, y = ctx.tensor(a.self, dt), ctx.tensor(a.other, dt)
    if op == "rsub":
        x, y = y, x
    if a.alpha is not None and a.alpha != 1:
        y = ctx.b.binary("mul", y, ctx.b.scalar(a.alpha, dt))
    return ctx.b.binary("add" if op == "add" else "sub", x, y)


@aten_op("div.Tensor", "div.Scalar", "div.Tensor_mode", "div.Scalar_mode",
         "floor_divide.default", "floor_divide.Scalar")
def div(ctx: TorchContext, a: Args) -> SSAValue:
    """True division, or rounded toward zero (``trunc``) or down (``floor``)."""
    mode = a.get("rounding_mode")
    if "floor_divide" in str(ctx.node.target):
        mode = "floor"
    dt = ctx.out_dtype(fallback=ctx.promote(a.self, a.other))
    b = ctx.b
    x, y = ctx.tensor(a.self, dt), ctx.tensor(a.other, dt)
    q = b.binary("div", x, y)
    if mode is None:
        return q
    if dtypes.is_float(dt):
        return b.unary("floor", q) if mode == "floor" else _trunc(ctx, q)
    if mode == "trunc":
        return q  # graph.div on integers truncates, as C and PyTorch do
    r = b.binary("sub", x, b.binary("mul", q, y))
    zero = b.scalar(0, dt)
    fix = b.binary("and", b.binary("ne", r, zero),
                   b.binary("ne", b.binary("lt", r, zero), b.binary("lt", y, zero)))
    return b.where(fix, b.binary("sub", q, b.scalar(1, dt)), q)


@aten_op("bitwise_and.Tensor", "bitwise_and.Scalar", "bitwise_or.Tensor", "bitwise_or.Scalar",
         "bitwise_xor.Tensor", "bitwise_xor.Scalar")
def bitwise(ctx: TorchContext, a: Args) -> SSAValue:
    op = str(ctx.node.target).split(".")[1].split("_")[1]
    dt = ctx.out_dtype(fallback=ctx.promote(a.self, a.other))
    fn = op if dt == "bool" else f"bitwise_{op}"
    return ctx.b.binary(fn, ctx.tensor(a.self, dt), ctx.tensor(a.other, dt))


@aten_op("logical_and.default", "logical_or.default", "logical_xor.default")
def logical(ctx: TorchContext, a: Args) -> SSAValue:
    op = str(ctx.node.target).split(".")[1].split("_")[1]
    r = ctx.b.binary(op, ctx.tensor(a.self, "bool"), ctx.tensor(a.other, "bool"))
    return ctx.b.cast(r, ctx.out_dtype(fallback="bool"))


def _clamp(ctx: TorchContext, x: SSAValue, lo: Any, hi: Any) -> SSAValue:
    """``min(max(x, lo), hi)``: PyTorch's order, so lo > hi gives hi everywhere."""
    dt = ctx.out_dtype(fallback=ctx.spec(x).dtype)
    y = ctx.tensor(x, dt)
    if lo is not None:
        y = ctx.b.binary("max", y, ctx.tensor(lo, dt))
    if hi is not None:
        y = ctx.b.binary("min", y, ctx.tensor(hi, dt))
    return y


@aten_op("clamp.default", "clamp.Tensor", "clip.default", "clip.Tensor")
def clamp(ctx: TorchContext, a: Args) -> SSAValue:
    return _clamp(ctx, a.self, a.min, a.max)


@aten_op("clamp_min.default", "clamp_min.Tensor")
def clamp_min(ctx: TorchContext, a: Args) -> SSAValue:
    return _clamp(ctx, a.self, a.min, None)


@aten_op("clamp_max.default", "clamp_max.Tensor")
def clamp_max(ctx: TorchContext, a: Args) -> SSAValue:
    return _clamp(ctx, a.self, None, a.max)


@aten_op("where.self", "where.ScalarSelf", "where.ScalarOther", "where.Scalar")
def where(ctx: TorchContext, a: Args) -> SSAValue:
    dt = ctx.out_dtype(fallback=ctx.promote(a.self, a.other))
    return ctx.b.where(ctx.tensor(a.condition, "bool"), ctx.tensor(a.self, dt),
                       ctx.tensor(a.other, dt))


@aten_op("masked_fill.Scalar", "masked_fill.Tensor")
def masked_fill(ctx: TorchContext, a: Args) -> SSAValue:
    dt = ctx.spec(a.self).dtype
    return ctx.b.where(ctx.tensor(a.mask, "bool"), ctx.tensor(a.value, dt), a.self)


@aten_op("addcmul.default", "addcdiv.default")
def addcmul(ctx: TorchContext, a: Args) -> SSAValue:
    """``self + value * (t1 op t2)`` with op = mul or div."""
    dt = ctx.out_dtype()
    fn = "div" if "addcdiv" in str(ctx.node.target) else "mul"
    t = ctx.b.binary(fn, ctx.tensor(a.tensor1, dt), ctx.tensor(a.tensor2, dt))
    if a.value != 1:
        t = ctx.b.binary("mul", t, ctx.b.scalar(a.value, dt))
    return ctx.b.binary("add", ctx.tensor(a.self, dt), t)


@aten_op("lerp.Scalar", "lerp.Tensor")
def lerp(ctx: TorchContext, a: Args) -> SSAValue:
    dt = ctx.out_dtype()
    x, e = ctx.tensor(a.self, dt), ctx.tensor(a.end, dt)
    w = ctx.tensor(a.weight, dt)
    return ctx.b.binary("add", x, ctx.b.binary("mul", w, ctx.b.binary("sub", e, x)))
