"""ONNX quantization op decompositions into graph-dialect core ops.

Quantized arithmetic is kept exact: zero points are subtracted after widening to int32, integer
products accumulate in ``graph.matmul``/``graph.conv`` with ``out_dtype="int32"``, and the float
steps (divide by scale, round half-to-even, add zero point, saturate with max/min, cast) happen in
the dtypes ONNX's reference implementation uses, so results match it bit for bit.
"""

from __future__ import annotations

import onnx
from xdsl.ir import SSAValue

from portc.compiler.frontends.onnx.registry import NodeError, OnnxContext, Outputs, onnx_op
from portc.dialects import dtypes
from portc.dialects import graph as g

_FLOAT8 = ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz")
_FLOAT4 = ("float4_e2m1fn",)


def int_range(dt: str) -> tuple[int, int]:
    """Saturation bounds of an integer dtype (int4 is [-8, 7], uint2 [0, 3], ...)."""
    d = dtypes.dtype(dt)
    if d.kind == "uint":
        return 0, (1 << d.bits) - 1
    return -(1 << (d.bits - 1)), (1 << (d.bits - 1)) - 1


def _float_dtype(*names: str) -> str:
    """numpy's promotion among float dtypes (float16 with float32 computes in float32)."""
    if len(set(names)) == 1:
        return names[0]
    if "float64" in names:
        return "float64"
    return "float32"


def broadcast_param(ctx: OnnxContext, v: SSAValue, xshape: tuple[int | None, ...], axis: int,
                    block: int) -> SSAValue:
    """Reshape or replicate a scale/zero point so that it broadcasts against ``x``: scalars stay,
    1-D per-axis values lie along ``axis``, and blocked values repeat ``block`` times along
    ``axis`` (the last block may be partial)."""
    s = ctx.spec(v)
    r = len(xshape)
    if s.rank == 0:
        return v
    if s.is_static and s.numel() == 1:
        return ctx.b.reshape(v, ())
    if block <= 0:
        if s.rank != 1:
            raise NodeError(f"a per-axis scale/zero point must be 1-D, got shape {s.shape}")
        ax = _axis(axis, r)
        if xshape[ax] is not None and s.shape[0] not in (None, xshape[ax]):
            raise NodeError(f"{s.shape[0]} scales for axis {ax} of size {xshape[ax]}")
        return ctx.b.reshape(v, [s.shape[0] if i == ax else 1 for i in range(r)])
    if s.rank != r or not s.is_static:
        raise NodeError(f"blocked scale shape {s.shape} must have the input's rank {r}")
    ax = _axis(axis, r)
    n = s.shape[ax]
    assert n is not None
    shp = [int(d) for d in s.shape]  # type: ignore[arg-type]
    rep = ctx.b.reshape(v, [*shp[:ax + 1], 1, *shp[ax + 1:]])
    rep = ctx.b.broadcast(rep, [*shp[:ax + 1], block, *shp[ax + 1:]])
    rep = ctx.b.reshape(rep, [*shp[:ax], n * block, *shp[ax + 1:]])
    want = xshape[ax]
    if want is None or want > n * block or want <= (n - 1) * block:
        raise NodeError(f"blocked scale dim {n} x block {block} does not cover dim {want}")
    counts = list(ctx.spec(rep).shape)
    counts[ax] = want
    return ctx.b.slice(rep, [0] * r, [1] * r, counts)  # type: ignore[arg-type]


def _axis(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise NodeError(f"axis {axis} is out of range for a rank-{rank} input")
    return axis % rank if rank else 0


def saturate_cast(ctx: OnnxContext, y: SSAValue, to: str) -> SSAValue:
    """Clamp a float tensor of integral values to ``to``'s range, then cast (exact)."""
    lo, hi = int_range(to)
    y = ctx.b.binary("max", y, ctx.b.scalar(lo, y))
    y = ctx.b.binary("min", y, ctx.b.scalar(hi, y))
    return ctx.b.cast(y, to)


def requantize(ctx: OnnxContext, acc: SSAValue, multiplier: SSAValue, zp: SSAValue | None,
               to: str) -> SSAValue:
    """``saturate(round(acc * multiplier) + zp)`` for an int32 accumulator; the product is
    taken in float64 as ONNX's reference does (int32 times a float scale promotes to float64)."""
    y = ctx.b.binary("mul", ctx.b.cast(acc, "float64"), ctx.b.cast(multiplier, "float64"))
    y = ctx.b.unary("round", y)
    if zp is not None:
        y = ctx.b.binary("add", y, ctx.b.cast(zp, "float64"))
    return saturate_cast(ctx, y, to)


def _minus_zp(ctx: OnnxContext, x: SSAValue, zp: SSAValue | None) -> SSAValue:
    """``int32(x) - int32(zp)``: exact for every 8/16-bit quantized type."""
    x32 = ctx.b.cast(x, "int32")
    if zp is None:
        return x32
    return ctx.b.binary("sub", x32, ctx.b.cast(zp, "int32"))


# ============================================================================================
# Quantize / dequantize


@onnx_op("QuantizeLinear")
def quantize_linear(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    x, scale, zp = ctx.input(node, 0), ctx.input(node, 1), ctx.opt_input(node, 2)
    xs = ctx.spec(x).shape
    axis = ctx.attr_int(node, "axis", 1)
    block = ctx.attr_int(node, "block_size", 0)
    enum = ctx.attr_int(node, "output_dtype", 0)
    out = ctx.spec(zp).dtype if zp is not None else (
        ctx.onnx_dtype(enum, node) if enum else "uint8")
    if enum and zp is not None and ctx.onnx_dtype(enum, node) != out:
        raise NodeError(f"output_dtype {ctx.onnx_dtype(enum, node)} differs from the zero "
                        f"point's {out}")
    prec = ctx.attr_int(node, "precision", 0)
    cd = ctx.onnx_dtype(prec, node) if prec else _float_dtype(ctx.spec(x).dtype,
                                                               ctx.spec(scale).dtype)
    s = broadcast_param(ctx, scale, xs, axis, block)
    y = ctx.b.binary("div", ctx.b.cast(x, cd), ctx.b.cast(s, cd))
    kind = dtypes.dtype(out).kind
    if kind in ("int", "uint"):
        # rounding is exact in the compute dtype; the zero point is added in float32 (exact
        # below 2^24, and anything larger saturates anyway)
        y = ctx.b.unary("round", y)
        acc = "float64" if cd == "float64" else "float32"
        y = ctx.b.cast(y, acc)
        if zp is not None:
            z = broadcast_param(ctx, zp, xs, axis, block)
            y = ctx.b.binary("add", y, ctx.b.cast(z, acc))
        return [saturate_cast(ctx, y, out)]
    if out in _FLOAT8:
        # the float8 zero point is always 0 and the reference ignores it
        return [ctx.b.cast(y, out, saturate=bool(ctx.attr_int(node, "saturate", 1)))]
    if out in _FLOAT4:
        if zp is not None:
            z = broadcast_param(ctx, zp, xs, axis, block)
            y = ctx.b.binary("add", y, ctx.b.cast(z, cd))
        return [ctx.b.cast(y, out)]
    raise NodeError(f"quantizing to {out} is not supported")


@onnx_op("DequantizeLinear")
def dequantize_linear(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    x, scale, zp = ctx.input(node, 0), ctx.input(node, 1), ctx.opt_input(node, 2)
    xspec = ctx.spec(x)
    axis = ctx.attr_int(node, "axis", 1)
    block = ctx.attr_int(node, "block_size", 0)
    enum = ctx.attr_int(node, "output_dtype", 0)
    out = ctx.onnx_dtype(enum, node) if enum else ctx.spec(scale).dtype
    xd = dtypes.dtype(xspec.dtype)
    # float32 holds every 8/16-bit difference exactly; int32 inputs need float64
    cd = "float64" if xd.bits > 16 or ctx.spec(scale).dtype == "float64" else "float32"
    if xd.kind == "float":
        dx = ctx.b.cast(x, cd)  # float8/float4: the zero point is 0 by definition
    elif zp is None:
        dx = ctx.b.cast(x, cd)
    else:
        wide = "int64" if xd.bits > 16 else "int32"
        z = broadcast_param(ctx, zp, xspec.shape, axis, block)
        dx = ctx.b.cast(ctx.b.binary("sub", ctx.b.cast(x, wide), ctx.b.cast(z, wide)), cd)
    s = broadcast_param(ctx, scale, xspec.shape, axis, block)
    return [ctx.b.cast(ctx.b.binary("mul", dx, ctx.b.cast(s, cd)), out)]


@onnx_op("DynamicQuantizeLinear")
def dynamic_quantize_linear(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    """uint8 asymmetric quantization with the range taken from the data (always including 0);
    every step is float32 arithmetic, as in the ONNX reference and ONNX Runtime."""
    x = ctx.input(node, 0)
    spec = ctx.spec(x)
    xf = ctx.b.cast(x, "float32")
    axes = tuple(range(spec.rank))
    zero = ctx.b.scalar(0.0, "float32")
    mx = ctx.b.binary("max", ctx.b.reduce("max", xf, axes, False), zero)
    mn = ctx.b.binary("min", ctx.b.reduce("min", xf, axes, False), zero)
    rng = ctx.b.where(ctx.b.binary("eq", mx, mn), ctx.b.scalar(1.0, "float32"),
                      ctx.b.binary("sub", mx, mn))
    scale = ctx.b.binary("div", rng, ctx.b.scalar(255.0, "float32"))
    izp = ctx.b.binary("sub", zero, ctx.b.binary("div", mn, scale))
    izp = ctx.b.binary("min", ctx.b.binary("max", izp, zero), ctx.b.scalar(255.0, "float32"))
    zpr = ctx.b.unary("round", izp)
    y = ctx.b.binary("add", ctx.b.unary("round", ctx.b.binary("div", xf, scale)), zpr)
    return [saturate_cast(ctx, y, "uint8"), ctx.b.cast(scale, spec.dtype),
            ctx.b.cast(zpr, "uint8")]


# ============================================================================================
# Integer matmul / conv


def _row_zp(ctx: OnnxContext, zp: SSAValue | None, a: SSAValue) -> SSAValue | None:
    """A per-row zero point of the left matmul operand lies along dim -2."""
    if zp is None:
        return None
    s = ctx.spec(zp)
    if s.rank == 1 and s.shape[0] != 1:
        return ctx.b.reshape(zp, (s.shape[0], 1))
    return ctx.b.reshape(zp, ()) if s.rank else zp


def _col_param(ctx: OnnxContext, v: SSAValue | None) -> SSAValue | None:
    """A per-column parameter of the right operand broadcasts along the last dim as is."""
    if v is None:
        return None
    s = ctx.spec(v)
    return ctx.b.reshape(v, ()) if s.rank and s.is_static and s.numel() == 1 else v


@onnx_op("MatMulInteger")
def matmul_integer(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    a, b = ctx.input(node, 0), ctx.input(node, 1)
    a32 = _minus_zp(ctx, a, _row_zp(ctx, ctx.opt_input(node, 2), a))
    b32 = _minus_zp(ctx, b, _col_param(ctx, ctx.opt_input(node, 3)))
    return [ctx.b.matmul(a32, b32, out_dtype="int32")]


@onnx_op("QLinearMatMul")
def qlinear_matmul(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    a, a_s, a_zp = ctx.input(node, 0), ctx.input(node, 1), ctx.opt_input(node, 2)
    b, b_s, b_zp = ctx.input(node, 3), ctx.input(node, 4), ctx.opt_input(node, 5)
    y_s, y_zp = ctx.input(node, 6), ctx.opt_input(node, 7)
    out = ctx.spec(y_zp).dtype if y_zp is not None else ctx.spec(a).dtype
    if dtypes.dtype(out).kind not in ("int", "uint"):
        raise NodeError(f"QLinearMatMul with {out} output is not supported (integer types only)")
    acc = ctx.b.matmul(_minus_zp(ctx, a, _row_zp(ctx, a_zp, a)),
                       _minus_zp(ctx, b, _col_param(ctx, b_zp)), out_dtype="int32")
    # the multiplier is computed in the scales' own dtype, like the reference
    mult = ctx.b.binary("div", ctx.b.binary("mul", _row_zp(ctx, a_s, a) or a_s,
                                            _col_param(ctx, b_s) or b_s),
                        _col_param(ctx, y_s) or y_s)
    z = _col_param(ctx, y_zp)
    return [requantize(ctx, acc, mult, z, out)]


def conv_geometry(ctx: OnnxContext, node: onnx.NodeProto, xshape: tuple[int, ...],
                  wshape: tuple[int, ...]) -> dict[str, object]:
    """strides/pads/dilations/group of an ONNX Conv-style node, with auto_pad resolved."""
    nsp = len(xshape) - 2
    kernel = ctx.attr_ints(node, "kernel_shape") or list(wshape[2:])
    if list(kernel) != list(wshape[2:]):
        raise NodeError(f"kernel_shape {kernel} differs from the weight's {wshape[2:]}")
    strides = ctx.attr_ints(node, "strides") or [1] * nsp
    dil = ctx.attr_ints(node, "dilations") or [1] * nsp
    pads = ctx.attr_ints(node, "pads") or [0] * (2 * nsp)
    auto = ctx.attr_str(node, "auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = [0] * (2 * nsp)
        for i in range(nsp):
            n, s = xshape[2 + i], strides[i]
            total = max(0, (-(-n // s) - 1) * s + (kernel[i] - 1) * dil[i] + 1 - n)
            small = total // 2
            pads[i], pads[nsp + i] = (small, total - small) if auto == "SAME_UPPER" else (
                total - small, small)
    elif auto == "VALID":
        pads = [0] * (2 * nsp)
    elif auto != "NOTSET":
        raise NodeError(f"unknown auto_pad '{auto}'")
    return {"strides": tuple(strides), "pads": tuple(pads), "dilations": tuple(dil),
            "group": ctx.attr_int(node, "group", 1)}


def _w_zp(ctx: OnnxContext, zp: SSAValue | None, rank: int) -> SSAValue | None:
    """A per-output-channel weight zero point lies along dim 0 of the weight."""
    if zp is None:
        return None
    s = ctx.spec(zp)
    if s.rank == 1 and s.shape[0] != 1:
        return ctx.b.reshape(zp, [s.shape[0]] + [1] * (rank - 1))
    return ctx.b.reshape(zp, ()) if s.rank else zp


def _int_conv(ctx: OnnxContext, node: onnx.NodeProto, x: SSAValue, x_zp: SSAValue | None,
              w: SSAValue, w_zp: SSAValue | None, bias: SSAValue | None) -> SSAValue:
    """Exact int32 convolution of zero-point-shifted operands; padding is zero after the shift,
    i.e. the zero point before it, as the ONNX spec requires."""
    xshape, wshape = ctx.static_shape(x, node), ctx.static_shape(w, node)
    props = conv_geometry(ctx, node, xshape, wshape)
    props["out_dtype"] = "int32"
    x32 = _minus_zp(ctx, x, None if x_zp is None else (
        ctx.b.reshape(x_zp, ()) if ctx.spec(x_zp).rank else x_zp))
    w32 = _minus_zp(ctx, w, _w_zp(ctx, w_zp, len(wshape)))
    ops = [x32, w32] + ([ctx.b.cast(bias, "int32")] if bias is not None else [])
    return ctx.b.one(g.ConvOp, ops, props)


@onnx_op("ConvInteger")
def conv_integer(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    return [_int_conv(ctx, node, ctx.input(node, 0), ctx.opt_input(node, 2),
                      ctx.input(node, 1), ctx.opt_input(node, 3), None)]


@onnx_op("QLinearConv")
def qlinear_conv(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    x, x_s, x_zp = ctx.input(node, 0), ctx.input(node, 1), ctx.opt_input(node, 2)
    w, w_s, w_zp = ctx.input(node, 3), ctx.input(node, 4), ctx.opt_input(node, 5)
    y_s, y_zp = ctx.input(node, 6), ctx.opt_input(node, 7)
    bias = ctx.opt_input(node, 8)
    out = ctx.spec(y_zp).dtype if y_zp is not None else ctx.spec(x).dtype
    acc = _int_conv(ctx, node, x, x_zp, w, w_zp, bias)
    r = ctx.spec(acc).rank
    ws = ctx.spec(w_s)
    if ws.rank == 1 and ws.shape[0] != 1:
        w_s = ctx.b.reshape(w_s, [1, ws.shape[0]] + [1] * (r - 2))
    elif ws.rank:
        w_s = ctx.b.reshape(w_s, ())
    mult = ctx.b.binary("div", ctx.b.binary("mul", _scalar(ctx, x_s), w_s), _scalar(ctx, y_s))
    return [requantize(ctx, acc, mult, None if y_zp is None else _scalar(ctx, y_zp), out)]


def _scalar(ctx: OnnxContext, v: SSAValue) -> SSAValue:
    return ctx.b.reshape(v, ()) if ctx.spec(v).rank else v
