"""ONNX nn op decompositions into graph-dialect core ops.

Convolution and pooling map onto ``graph.conv``/``graph.pool`` once ``auto_pad`` is resolved into
explicit pads (which is why spatial dims must be static). ConvTranspose has no core op: it is a
stride-1 ``graph.conv`` over the zero-stuffed input with the flipped, channel-swapped kernel.
Normalisations reuse ``graph.layer_norm``/``graph.rms_norm`` where their statistics match, and
otherwise spell out mean/variance with reductions; losses use gather/where/reduce.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import onnx
from xdsl.ir import SSAValue

from portc.compiler.builder import FOLD_LIMIT_ELEMENTS
from portc.compiler.frontends.onnx.registry import NodeError, OnnxContext, Outputs, onnx_op
from portc.dialects import dtypes
from portc.dialects import graph as g

# ------------------------------------------------------------------------------- shared helpers


def _spatial(ctx: OnnxContext, node: onnx.NodeProto, x: SSAValue) -> tuple[int, ...]:
    """Static spatial dims of an NC... tensor (auto_pad and output sizes need them)."""
    sh = ctx.spec(x).shape
    if len(sh) < 3:
        raise NodeError(f"expects an N x C x spatial input, got rank {len(sh)}")
    sp = sh[2:]
    if any(d is None for d in sp):
        raise NodeError(f"needs static spatial dims, got {ctx.spec(x)}; bind them with --dim")
    return tuple(int(d) for d in sp)  # type: ignore[arg-type]


def _window_pads(ctx: OnnxContext, node: onnx.NodeProto, in_sp: Sequence[int],
                 k: Sequence[int], s: Sequence[int], d: Sequence[int]) -> list[int]:
    """Explicit begin..end pads from ``auto_pad``/``pads``: SAME_* pads so that the output has
    ``ceil(in / stride)`` elements, with the odd element at the end (UPPER) or start (LOWER)."""
    nsp = len(in_sp)
    auto = ctx.attr_str(node, "auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = [], []
        for n, kk, ss, dd in zip(in_sp, k, s, d, strict=True):
            out = -(-n // ss)
            total = max((out - 1) * ss + (kk - 1) * dd + 1 - n, 0)
            small, big = total // 2, total - total // 2
            begins.append(small if auto == "SAME_UPPER" else big)
            ends.append(big if auto == "SAME_UPPER" else small)
        return begins + ends
    if auto == "VALID":
        return [0] * (2 * nsp)
    if auto != "NOTSET":
        raise NodeError(f"unknown auto_pad '{auto}'")
    pads = ctx.attr_ints(node, "pads") or [0] * (2 * nsp)
    if len(pads) != 2 * nsp:
        raise NodeError(f"pads {pads} do not list begin and end of {nsp} spatial dims")
    return pads


def _per_channel(ctx: OnnxContext, v: SSAValue, rank: int) -> SSAValue:
    """A [C] parameter as [C, 1, ...] so that it broadcasts against an N x C x ... tensor; a
    [C, D1, ...] one (BatchNormalization with spatial=0 before opset 9) already does."""
    if ctx.spec(v).rank != 1:
        return v
    return ctx.b.reshape(v, (ctx.spec(v).shape[0], *([1] * (rank - 2))))


def _fscalar(ctx: OnnxContext, value: float, like: SSAValue) -> SSAValue:
    return ctx.b.scalar(value, like)


def _mean(ctx: OnnxContext, x: SSAValue, axes: Sequence[int]) -> SSAValue:
    """Mean over ``axes`` (kept as size-1 dims)."""
    sh = ctx.spec(x).shape
    n = 1
    for a in axes:
        if sh[a] is None:
            raise NodeError(f"needs a static size along axis {a} to average over it")
        n *= int(sh[a])  # type: ignore[arg-type]
    s = ctx.b.reduce("sum", x, list(axes), True)
    return ctx.b.binary("div", s, _fscalar(ctx, float(n), x))


# ---------------------------------------------------------------------------------- linear algebra


def _numel(ctx: OnnxContext, v: SSAValue) -> int:
    return int(np.prod([d if d is not None else 1 for d in ctx.spec(v).shape]))


@onnx_op("MatMul")
def matmul(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    return [ctx.b.matmul(ctx.input(node, 0), ctx.input(node, 1))]


@onnx_op("Gemm")
def gemm(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    a, b = ctx.input(node, 0), ctx.input(node, 1)
    if ctx.spec(a).rank != 2 or ctx.spec(b).rank != 2:
        raise NodeError("Gemm takes 2-D A and B")
    ta, tb = ctx.attr_int(node, "transA", 0), ctx.attr_int(node, "transB", 0)
    folds = ctx.b.value_of(b) is not None and _numel(ctx, b) <= FOLD_LIMIT_ELEMENTS
    if tb and _numel(ctx, b) > _numel(ctx, a) and not folds:
        # a large B^T that did not fold (e.g. a 100M-element FC weight): transpose the small
        # side instead, y = (B @ A'^T)^T, rather than copying the weight on every run
        y = ctx.b.transpose(ctx.b.matmul(b, a if ta else ctx.b.transpose(a, (1, 0))), (1, 0))
    else:
        y = ctx.b.matmul(ctx.b.transpose(a, (1, 0)) if ta else a,
                         ctx.b.transpose(b, (1, 0)) if tb else b)
    alpha, beta = ctx.attr_float(node, "alpha", 1.0), ctx.attr_float(node, "beta", 1.0)
    if alpha != 1.0:
        y = ctx.b.binary("mul", y, _fscalar(ctx, alpha, y))
    c = ctx.opt_input(node, 2)
    if c is not None and beta != 0.0:
        if beta != 1.0:
            c = ctx.b.binary("mul", c, _fscalar(ctx, beta, c))
        y = ctx.b.binary("add", y, c)
    return [y]


# ------------------------------------------------------------------------------------ convolution


def _conv_attrs(ctx: OnnxContext, node: onnx.NodeProto, x: SSAValue, w: SSAValue
                ) -> tuple[list[int], list[int], list[int], list[int], int]:
    in_sp = _spatial(ctx, node, x)
    nsp = len(in_sp)
    wsh = ctx.spec(w).shape
    k = ctx.attr_ints(node, "kernel_shape") or [int(d) for d in wsh[2:]]  # type: ignore[misc]
    s = ctx.attr_ints(node, "strides") or [1] * nsp
    d = ctx.attr_ints(node, "dilations") or [1] * nsp
    return list(k), list(s), list(d), list(in_sp), ctx.attr_int(node, "group", 1)


@onnx_op("Conv")
def conv(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    x, w, bias = ctx.input(node, 0), ctx.input(node, 1), ctx.opt_input(node, 2)
    k, s, d, in_sp, grp = _conv_attrs(ctx, node, x, w)
    pads = _window_pads(ctx, node, in_sp, k, s, d)
    ops = [x, w] if bias is None else [x, w, bias]
    return [ctx.b.one(g.ConvOp, ops, {"strides": tuple(s), "pads": tuple(pads),
                                      "dilations": tuple(d), "group": grp})]


@onnx_op("ConvTranspose")
def conv_transpose(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    """y = conv(zero-stuffed x padded by d*(k-1)-pad, flipped W^T): the adjoint of a strided conv.

    Zero insertion is a reshape to [.., n, 1] and an end-pad of the unit dim to ``stride``; the
    trailing ``stride - 1`` zeros are cropped by a negative end pad in the same spatial pad.
    """
    x, w, bias = ctx.input(node, 0), ctx.input(node, 1), ctx.opt_input(node, 2)
    k, s, d, in_sp, grp = _conv_attrs(ctx, node, x, w)
    nsp = len(in_sp)
    xs, ws = ctx.spec(x), ctx.spec(w)
    wk = [int(v) for v in ws.shape[2:]]  # type: ignore[arg-type]
    if list(k) != wk:
        raise NodeError(f"kernel_shape {k} differs from the weight's spatial dims {wk}")
    outpad = ctx.attr_ints(node, "output_padding") or [0] * nsp
    out_shape = ctx.attr_ints(node, "output_shape")
    auto = ctx.attr_str(node, "auto_pad", "NOTSET")
    pads = ctx.attr_ints(node, "pads")
    natural = [s[i] * (in_sp[i] - 1) + outpad[i] + (k[i] - 1) * d[i] + 1 for i in range(nsp)]
    if pads is None and auto in ("SAME_UPPER", "SAME_LOWER"):
        want = out_shape[-nsp:] if out_shape else [in_sp[i] * s[i] for i in range(nsp)]
        total = [natural[i] - want[i] for i in range(nsp)]
        if auto == "SAME_UPPER":
            pads = [t // 2 for t in total] + [t - t // 2 for t in total]
        else:
            pads = [t - t // 2 for t in total] + [t // 2 for t in total]
    elif pads is None and out_shape:
        # explicit output_shape without pads: the output is the natural one cut/extended at the end
        pads = [0] * nsp + [natural[i] - out_shape[-nsp:][i] for i in range(nsp)]
    elif pads is None:
        pads = [0] * (2 * nsp)
    if len(pads) != 2 * nsp:
        raise NodeError(f"pads {pads} do not list begin and end of {nsp} spatial dims")

    n, c = xs.shape[0], xs.shape[1]
    if c is None or ws.shape[1] is None:
        raise NodeError("needs static channel counts")
    # zero insertion: [N, C, i1, 1, i2, 1, ...] -> pad unit dims to s -> [N, C, i1*s1, ...]
    if any(v != 1 for v in s):
        inter: list[int | None] = [n, c]
        for v in in_sp:
            inter += [v, 1]
        xv = ctx.b.reshape(x, inter)
        zp = [0] * (2 + 2 * nsp)
        for i in range(nsp):
            zp[2 + 2 * i + 1] = s[i] - 1
        xv = ctx.b.one(g.PadOp, [xv], {"pads": tuple([0] * len(zp) + zp), "mode": "constant",
                                       "value": 0.0})
        x = ctx.b.reshape(xv, (n, c, *[in_sp[i] * s[i] for i in range(nsp)]))
    begin = [d[i] * (k[i] - 1) - pads[i] for i in range(nsp)]
    end = [d[i] * (k[i] - 1) - pads[nsp + i] + outpad[i] - (s[i] - 1) for i in range(nsp)]
    if any(begin) or any(end):
        x = ctx.b.one(g.PadOp, [x], {"pads": tuple([0, 0, *begin, 0, 0, *end]),
                                     "mode": "constant", "value": 0.0})
    # W [C, M/g, k...] -> [M, C/g, k...] flipped spatially
    mg = int(ws.shape[1])  # type: ignore[arg-type]
    cg = int(c) // grp
    wv = ctx.b.reshape(w, (grp, cg, mg, *wk))
    wv = ctx.b.transpose(wv, (0, 2, 1, *range(3, 3 + nsp)))
    wv = ctx.b.reshape(wv, (grp * mg, cg, *wk))
    wv = ctx.b.slice(wv, [0, 0, *[v - 1 for v in wk]], [1, 1, *[-1] * nsp],
                     [grp * mg, cg, *wk])
    ops = [x, wv] if bias is None else [x, wv, bias]
    return [ctx.b.one(g.ConvOp, ops, {"strides": tuple([1] * nsp), "pads": tuple([0] * 2 * nsp),
                                      "dilations": tuple(d), "group": grp})]


# ---------------------------------------------------------------------------------------- pooling

_POOL_KIND = {"AveragePool": "avg", "MaxPool": "max", "LpPool": "lp"}


@onnx_op("AveragePool", "MaxPool", "LpPool")
def pool(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    x = ctx.input(node, 0)
    in_sp = _spatial(ctx, node, x)
    nsp = len(in_sp)
    k = ctx.attr_ints(node, "kernel_shape")
    if not k:
        raise NodeError("kernel_shape is required")
    s = ctx.attr_ints(node, "strides") or [1] * nsp
    d = ctx.attr_ints(node, "dilations") or [1] * nsp
    pads = _window_pads(ctx, node, in_sp, k, s, d)
    kind = _POOL_KIND[node.op_type]
    props = {"kind": kind, "kernel": tuple(k), "strides": tuple(s), "pads": tuple(pads),
             "dilations": tuple(d), "ceil_mode": bool(ctx.attr_int(node, "ceil_mode", 0)),
             "count_include_pad": bool(ctx.attr_int(node, "count_include_pad", 0)),
             "p": ctx.attr_int(node, "p", 2) if kind == "lp" else None}
    y = ctx.b.one(g.PoolOp, [x], props)
    if node.op_type == "MaxPool" and len(node.output) > 1 and node.output[1]:
        return [y, _maxpool_indices(ctx, node, x, y, k, s, d, pads, in_sp)]
    return [y]


def _maxpool_indices(ctx: OnnxContext, node: onnx.NodeProto, x: SSAValue, y: SSAValue,
                     k: Sequence[int], s: Sequence[int], d: Sequence[int], pads: Sequence[int],
                     in_sp: Sequence[int]) -> SSAValue:
    """MaxPool's Indices: every window is gathered through a constant index table (padding
    points at an appended -inf slot), the first maximum's position is picked with arg_reduce,
    and the table maps it back to the flat input offset (row- or column-major)."""
    nsp = len(in_sp)
    xs = ctx.spec(x)
    n, c = xs.shape[0], xs.shape[1]
    if n is None or c is None:
        raise NodeError("MaxPool Indices need static batch and channel dims")
    out_sp = [int(v) for v in ctx.spec(y).shape[2:]]  # type: ignore[arg-type]
    hw = int(np.prod(in_sp))
    grids = np.meshgrid(*[np.arange(o) for o in out_sp], *[np.arange(kk) for kk in k],
                        indexing="ij")
    coords = [grids[i] * s[i] + grids[nsp + i] * d[i] - pads[i] for i in range(nsp)]
    valid = np.ones(coords[0].shape, bool)
    for i in range(nsp):
        valid &= (coords[i] >= 0) & (coords[i] < in_sp[i])
    safe = [np.clip(cc, 0, in_sp[i] - 1) for i, cc in enumerate(coords)]
    flat = np.ravel_multi_index(tuple(safe), tuple(in_sp))
    order = "F" if ctx.attr_int(node, "storage_order", 0) else "C"
    onnx_flat = np.ravel_multi_index(tuple(safe), tuple(in_sp), order=order)
    table = np.where(valid, flat, hw).reshape(-1, int(np.prod(k))).astype(np.int64)
    onnx_table = onnx_flat.reshape(table.shape).astype(np.int64)
    dt = xs.dtype
    xf = ctx.b.reshape(x, (n, c, hw))
    kind = dtypes.dtype(dt).kind
    lowest = -np.inf if kind == "float" else np.iinfo(dtypes.dtype(dt).numpy).min
    fill = ctx.b.const(np.full((n, c, 1), lowest).astype(dtypes.dtype(dt).numpy))
    xf = ctx.b.concat([xf, fill], 2)
    win = ctx.b.one(g.GatherOp, [xf, ctx.b.const(table)], {"axis": 2})  # n, c, P, K
    am = ctx.b.one(g.ArgReduceOp, [win], {"kind": "max", "axis": 3, "keepdims": True,
                                          "select_last_index": False})  # n, c, P, 1
    tb = ctx.b.broadcast(ctx.b.const(onnx_table.reshape(1, 1, *table.shape)),
                         (n, c, *table.shape))
    idx = ctx.b.one(g.GatherElementsOp, [tb, am], {"axis": 3})
    base = (np.arange(n * c, dtype=np.int64) * hw).reshape(n, c, 1, 1)
    idx = ctx.b.binary("add", idx, ctx.b.const(base))
    return ctx.b.reshape(idx, (n, c, *out_sp))


@onnx_op("GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
def global_pool(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    x = ctx.input(node, 0)
    in_sp = _spatial(ctx, node, x)
    nsp = len(in_sp)
    if node.op_type == "GlobalMaxPool":
        return [ctx.b.reduce("max", x, list(range(2, 2 + nsp)), True)]
    kind = "avg" if node.op_type == "GlobalAveragePool" else "lp"
    props = {"kind": kind, "kernel": tuple(in_sp), "strides": tuple([1] * nsp),
             "pads": tuple([0] * 2 * nsp), "dilations": tuple([1] * nsp), "ceil_mode": False,
             "count_include_pad": False, "p": ctx.attr_int(node, "p", 2) if kind == "lp" else None}
    return [ctx.b.one(g.PoolOp, [x], props)]


# --------------------------------------------------------------------------------- normalisation


@onnx_op("BatchNormalization")
def batch_norm(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    """Inference: ``x * a + b`` with ``a = scale / sqrt(var + eps)``, ``b = bias - mean * a``
    (both fold to constants for a trained model). Training mode uses the batch statistics and
    also returns the momentum-updated running statistics."""
    x = ctx.input(node, 0)
    scale, bias, mean, var = (ctx.input(node, i) for i in range(1, 5))
    r = ctx.spec(x).rank
    eps = ctx.attr_float(node, "epsilon", 1e-5)
    training = ctx.attr_int(node, "training_mode", 0) if ctx.opset >= 14 else 0
    if ctx.opset < 7 and not ctx.attr_int(node, "is_test", 0) and len(node.output) > 1:
        raise NodeError("training-mode BatchNormalization (is_test=0) is not supported")
    b = ctx.b
    outs: list[SSAValue | None] = []
    if training:
        axes = [0, *range(2, r)]
        bmean = _mean(ctx, x, axes)
        cen = b.binary("sub", x, bmean)
        bvar = _mean(ctx, b.binary("mul", cen, cen), axes)
        c = ctx.spec(mean).shape
        m, v = b.reshape(bmean, c), b.reshape(bvar, c)
        mom = ctx.attr_float(node, "momentum", 0.9)
        run_mean = b.binary("add", b.binary("mul", mean, _fscalar(ctx, mom, mean)),
                            b.binary("mul", m, _fscalar(ctx, 1 - mom, m)))
        run_var = b.binary("add", b.binary("mul", var, _fscalar(ctx, mom, var)),
                           b.binary("mul", v, _fscalar(ctx, 1 - mom, v)))
        inv = b.unary("rsqrt", b.binary("add", bvar, _fscalar(ctx, eps, bvar)))
        y = b.binary("mul", b.binary("mul", cen, inv), _per_channel(ctx, scale, r))
        y = b.binary("add", y, _per_channel(ctx, bias, r))
        outs = [y, run_mean, run_var]
        return outs
    inv = b.unary("rsqrt", b.binary("add", var, _fscalar(ctx, eps, var)))
    a = b.binary("mul", scale, inv)
    shift = b.binary("sub", bias, b.binary("mul", mean, a))
    y = b.binary("add", b.binary("mul", x, _per_channel(ctx, a, r)), _per_channel(ctx, shift, r))
    return [y, mean, var, None, None][: max(1, len(node.output))]


def _unit_layer_norm(ctx: OnnxContext, x: SSAValue, axis: int, eps: float) -> SSAValue:
    """``(x - mean) / sqrt(var + eps)`` over ``axis..`` via graph.layer_norm with unit scale."""
    one = ctx.b.scalar(1.0, x)
    return ctx.b.one(g.LayerNormOp, [x, one], {"axis": axis, "epsilon": eps})


@onnx_op("InstanceNormalization")
def instance_norm(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    x, scale, bias = ctx.input(node, 0), ctx.input(node, 1), ctx.input(node, 2)
    r = ctx.spec(x).rank
    y = _unit_layer_norm(ctx, x, 2, ctx.attr_float(node, "epsilon", 1e-5))
    y = ctx.b.binary("mul", y, _per_channel(ctx, scale, r))
    return [ctx.b.binary("add", y, _per_channel(ctx, bias, r))]


@onnx_op("GroupNormalization")
def group_norm(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    """Normalise [N, G, C/G * spatial] rows; scale/bias are per channel from opset 21 and per
    group before it."""
    x, scale, bias = ctx.input(node, 0), ctx.input(node, 1), ctx.input(node, 2)
    xs = ctx.spec(x)
    shape = ctx.static_shape(x, node)
    groups = ctx.attr_int(node, "num_groups", 0)
    n, c = shape[0], shape[1]
    if groups <= 0 or c % groups:
        raise NodeError(f"num_groups {groups} does not divide {c} channels")
    rest = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    xg = ctx.b.reshape(x, (n, groups, (c // groups) * rest))
    y = _unit_layer_norm(ctx, xg, 2, ctx.attr_float(node, "epsilon", 1e-5))
    if ctx.spec(scale).shape[0] == groups and groups != c:
        y = ctx.b.binary("mul", y, ctx.b.reshape(scale, (groups, 1)))
        y = ctx.b.binary("add", y, ctx.b.reshape(bias, (groups, 1)))
        return [ctx.b.reshape(y, shape)]
    y = ctx.b.reshape(y, shape)
    y = ctx.b.binary("mul", y, _per_channel(ctx, scale, xs.rank))
    return [ctx.b.binary("add", y, _per_channel(ctx, bias, xs.rank))]


def _stash_dtype(ctx: OnnxContext, node: onnx.NodeProto) -> str:
    return ctx.onnx_dtype(ctx.attr_int(node, "stash_type", 1), node)


@onnx_op("LayerNormalization")
def layer_norm(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    """graph.layer_norm for Y; the optional Mean and InvStdDev (in the stash type) are spelled
    out with reductions only when the model asks for them."""
    x, scale, bias = ctx.input(node, 0), ctx.input(node, 1), ctx.opt_input(node, 2)
    r = ctx.spec(x).rank
    axis = g.norm_axis(ctx.attr_int(node, "axis", -1), r)
    eps = ctx.attr_float(node, "epsilon", 1e-5)
    ops = [x, scale] if bias is None else [x, scale, bias]
    y = ctx.b.one(g.LayerNormOp, ops, {"axis": axis, "epsilon": eps})
    outs: list[SSAValue | None] = [y]
    want = [len(node.output) > i and bool(node.output[i]) for i in (1, 2)]
    if any(want):
        xw = ctx.b.cast(x, _stash_dtype(ctx, node))
        axes = list(range(axis, r))
        mean = _mean(ctx, xw, axes)
        cen = ctx.b.binary("sub", xw, mean)
        var = _mean(ctx, ctx.b.binary("mul", cen, cen), axes)
        inv = ctx.b.unary("rsqrt", ctx.b.binary("add", var, _fscalar(ctx, eps, var)))
        outs += [mean, inv]
    return outs


@onnx_op("RMSNormalization")
def rms_norm(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    x, scale = ctx.input(node, 0), ctx.input(node, 1)
    axis = g.norm_axis(ctx.attr_int(node, "axis", -1), ctx.spec(x).rank)
    return [ctx.b.one(g.RMSNormOp, [x, scale],
                      {"axis": axis, "epsilon": ctx.attr_float(node, "epsilon", 1e-5)})]


@onnx_op("LpNormalization")
def lp_norm(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    x = ctx.input(node, 0)
    axis = g.norm_axis(ctx.attr_int(node, "axis", -1), ctx.spec(x).rank)
    p = ctx.attr_int(node, "p", 2)
    if p == 1:
        norm = ctx.b.reduce("sum", ctx.b.unary("abs", x), [axis], True)
    elif p == 2:
        norm = ctx.b.unary("sqrt", ctx.b.reduce("sum", ctx.b.binary("mul", x, x), [axis], True))
    else:
        raise NodeError(f"p must be 1 or 2, got {p}")
    # an all-zero slice has norm 0 and normalises to zeros, not 0/0
    safe = ctx.b.where(ctx.b.binary("eq", norm, _fscalar(ctx, 0.0, norm)),
                       _fscalar(ctx, 1.0, norm), norm)
    return [ctx.b.binary("div", x, safe)]


@onnx_op("MeanVarianceNormalization")
def mvn(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    """``(x - E[x]) / (sqrt(E[x^2] - E[x]^2) + 1e-9)``, exactly the ONNX function body."""
    x = ctx.input(node, 0)
    r = ctx.spec(x).rank
    axes = [g.norm_axis(a, r) for a in ctx.attr_ints(node, "axes", [0, 2, 3]) or []]
    b = ctx.b
    mean = _mean(ctx, x, axes)
    ex2 = _mean(ctx, b.binary("mul", x, x), axes)
    std = b.unary("sqrt", b.binary("sub", ex2, b.binary("mul", mean, mean)))
    return [b.binary("div", b.binary("sub", x, mean),
                     b.binary("add", std, _fscalar(ctx, 1e-9, std)))]


@onnx_op("LRN")
def lrn(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    """The cross-channel window sum is an average pool over [N, 1, C, rest] with the padding
    counted, so ``alpha / size * sum`` is ``alpha * avg``."""
    x = ctx.input(node, 0)
    shape = ctx.static_shape(x, node)
    size = ctx.attr_int(node, "size", 0)
    if size <= 0:
        raise NodeError("size is required")
    alpha, beta = ctx.attr_float(node, "alpha", 1e-4), ctx.attr_float(node, "beta", 0.75)
    bias = ctx.attr_float(node, "bias", 1.0)
    n, c = shape[0], shape[1]
    rest = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    b = ctx.b
    sq = b.reshape(b.binary("mul", x, x), (n, 1, c, rest))
    lo, hi = (size - 1) // 2, math.ceil((size - 1) / 2)
    avg = b.one(g.PoolOp, [sq], {"kind": "avg", "kernel": (size, 1), "strides": (1, 1),
                                 "pads": (lo, 0, hi, 0), "dilations": (1, 1), "ceil_mode": False,
                                 "count_include_pad": True})
    den = b.binary("add", b.binary("mul", avg, _fscalar(ctx, alpha, avg)),
                   _fscalar(ctx, bias, avg))
    den = b.binary("pow", den, _fscalar(ctx, beta, den))
    return [b.binary("div", x, b.reshape(den, shape))]


@onnx_op("Dropout")
def dropout(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    """Inference is the identity with an all-true mask; training with a non-zero ratio draws
    random numbers, which a deterministic compiler does not reproduce."""
    x = ctx.input(node, 0)
    training = False
    if ctx.opset >= 12 and ctx.has_input(node, 2):
        training = bool(np.asarray(ctx.const_input(node, 2, "training_mode")).reshape(()))
    if training:
        ratio = 0.5
        if ctx.has_input(node, 1):
            ratio = float(np.asarray(ctx.const_input(node, 1, "ratio")).reshape(()))
        if ratio != 0.0:
            raise NodeError("training-mode Dropout with a non-zero ratio is random; export the "
                            "model in eval mode")
    outs: list[SSAValue | None] = [x]
    if len(node.output) > 1 and node.output[1]:
        shape = ctx.static_shape(x, node)
        outs.append(ctx.b.broadcast(ctx.b.const(np.array(True)), shape))
    return outs


# ------------------------------------------------------------------------------------------ Einsum

_EINSUM_TERM = re.compile(r"^[A-Za-z]*(\.\.\.)?[A-Za-z]*$")


class _Term:
    """One einsum operand: its SSA value and one label per dim (ellipsis dims get digits)."""

    def __init__(self, v: SSAValue, labels: list[str]) -> None:
        self.v, self.labels = v, labels


def _expand_labels(term: str, rank: int, ell_rank: int) -> list[str]:
    if "..." in term:
        pre, post = term.split("...")
        n_ell = rank - len(pre) - len(post)
        return [*pre, *[str(ell_rank - n_ell + i) for i in range(n_ell)], *post]
    return list(term)


@onnx_op("Einsum")
def einsum(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    """Diagonals by strided slices of merged dims, private labels by sums, then a left-to-right
    chain of batched matmuls with [batch, free, contracted] layouts, then a final transpose."""
    eq = ctx.attr_str(node, "equation", "").replace(" ", "")
    xs = ctx.inputs(node)
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(xs) or not all(_EINSUM_TERM.match(t) for t in terms):
        raise NodeError(f"cannot parse equation '{eq}' for {len(xs)} inputs")
    ell_rank = max((ctx.spec(x).rank - len(t.replace("...", "")) for x, t in zip(xs, terms,
                                                                              strict=True)
                    if "..." in t), default=0)
    ops = [_Term(x, _expand_labels(t, ctx.spec(x).rank, ell_rank))
           for x, t in zip(xs, terms, strict=True)]
    ell = [str(i) for i in range(ell_rank)]
    if arrow:
        out = _expand_labels(rhs, len(rhs.replace("...", "")) + ell_rank, ell_rank)
    else:
        counts: dict[str, int] = {}
        for t in ops:
            for lab in t.labels:
                counts[lab] = counts.get(lab, 0) + 1
        out = ell + sorted(lab for lab, n in counts.items() if n == 1 and not lab.isdigit())
    sizes: dict[str, int] = {}
    for t in ops:
        for lab, dim in zip(t.labels, ctx.static_shape(t.v, node), strict=True):
            sizes[lab] = max(sizes.get(lab, 1), dim)
    ops = [_einsum_diagonals(ctx, t) for t in ops]
    for i in range(len(ops)):
        keep = set(out).union(*(set(o.labels) for j, o in enumerate(ops) if j != i))
        ops[i] = _einsum_sum(ctx, ops[i], keep)
    acc = ops[0]
    for i in range(1, len(ops)):
        keep = set(out).union(*(set(o.labels) for o in ops[i + 1:]))
        acc = _einsum_pair(ctx, acc, ops[i], keep, sizes)
        acc = _einsum_sum(ctx, acc, keep)
    acc = _einsum_sum(ctx, acc, set(out))
    missing = [lab for lab in out if lab not in acc.labels]
    if missing:
        raise NodeError(f"output labels {missing} of '{eq}' appear in no input")
    y = ctx.b.transpose(acc.v, [acc.labels.index(lab) for lab in out])
    return [ctx.b.broadcast(y, [sizes[lab] for lab in out])]


def _einsum_diagonals(ctx: OnnxContext, t: _Term) -> _Term:
    v, labels = t.v, list(t.labels)
    while len(set(labels)) != len(labels):
        lab = next(x for x in labels if labels.count(x) > 1)
        i, j = [k for k, x in enumerate(labels) if x == lab][:2]
        rest = [k for k in range(len(labels)) if k not in (i, j)]
        v = ctx.b.transpose(v, [*rest, i, j])
        sh = ctx.spec(v).shape
        n = int(sh[-1])  # type: ignore[arg-type]
        v = ctx.b.reshape(v, (*sh[:-2], n * n))
        r = len(sh) - 1
        v = ctx.b.slice(v, [0] * r, [*[1] * (r - 1), n + 1], [*sh[:-2], n])
        labels = [*(labels[k] for k in rest), lab]
    return _Term(v, labels)


def _einsum_sum(ctx: OnnxContext, t: _Term, keep: set[str]) -> _Term:
    drop = [i for i, lab in enumerate(t.labels) if lab not in keep]
    if not drop:
        return t
    v = ctx.b.reduce("sum", t.v, drop, False)
    return _Term(v, [lab for i, lab in enumerate(t.labels) if i not in drop])


def _einsum_pair(ctx: OnnxContext, a: _Term, b: _Term, keep: set[str],
                 sizes: dict[str, int]) -> _Term:
    shared = [lab for lab in a.labels if lab in b.labels]
    batch = [lab for lab in shared if lab in keep]
    contr = [lab for lab in shared if lab not in keep]
    fa = [lab for lab in a.labels if lab not in shared]
    fb = [lab for lab in b.labels if lab not in shared]

    def prep(t: _Term, order: list[str], rows: list[str], cols: list[str]) -> SSAValue:
        v = ctx.b.transpose(t.v, [t.labels.index(lab) for lab in order])
        sh = ctx.spec(v).shape
        nb = len(batch)
        v = ctx.b.broadcast(v, [sizes[lab] for lab in batch] + list(sh[nb:]))
        nr = int(np.prod([sizes[lab] for lab in rows]))
        nc = int(np.prod([sizes[lab] for lab in cols]))
        return ctx.b.reshape(v, ([sizes[lab] for lab in batch] if batch else []) + [nr, nc])

    av = prep(a, batch + fa + contr, fa, contr)
    bv = prep(b, batch + contr + fb, contr, fb)
    y = ctx.b.matmul(av, bv)
    y = ctx.b.reshape(y, [sizes[lab] for lab in batch + fa + fb])
    return _Term(y, batch + fa + fb)


# ------------------------------------------------------------------------------------------ losses


def _nll(ctx: OnnxContext, node: onnx.NodeProto, logp: SSAValue, target: SSAValue,
         weight: SSAValue | None) -> SSAValue:
    """``-logp[n, t[n, d], d] * w[t]`` with ignored targets contributing (and weighing) zero."""
    b = ctx.b
    red = ctx.attr_str(node, "reduction", "mean")
    ii = ctx.attr(node, "ignore_index", None)
    tdt = ctx.spec(target).dtype
    t = target
    mask = None
    if ii is not None:
        mask = b.binary("ne", target, b.scalar(int(ii), tdt))  # type: ignore[arg-type]
        t = b.where(mask, target, b.scalar(0, tdt))
    picked = b.one(g.GatherElementsOp, [logp, b.reshape(t, (ctx.spec(t).shape[0], 1,
                                                           *ctx.spec(t).shape[1:]))],
                   {"axis": 1})
    loss = b.unary("neg", b.reshape(picked, ctx.spec(target).shape))
    w = b.one(g.GatherOp, [weight, t], {"axis": 0}) if weight is not None else None
    if mask is not None:
        fmask = b.cast(mask, ctx.spec(loss).dtype)
        w = fmask if w is None else b.binary("mul", w, fmask)
    if w is not None:
        loss = b.binary("mul", loss, w)
    axes = list(range(ctx.spec(loss).rank))
    if red == "none":
        return loss
    total = b.reduce("sum", loss, axes, False)
    if red == "sum":
        return total
    if red != "mean":
        raise NodeError(f"unknown reduction '{red}'")
    if w is None:
        return b.binary("div", total, _fscalar(ctx, float(np.prod(ctx.static_shape(loss, node))),
                                               total))
    return b.binary("div", total, b.reduce("sum", w, axes, False))


@onnx_op("NegativeLogLikelihoodLoss")
def nll_loss(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    return [_nll(ctx, node, ctx.input(node, 0), ctx.input(node, 1), ctx.opt_input(node, 2))]


@onnx_op("SoftmaxCrossEntropyLoss")
def softmax_cross_entropy(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    x = ctx.input(node, 0)
    logp = ctx.b.unary("log", ctx.b.one(g.SoftmaxOp, [x], {"axis": 1}))
    return [_nll(ctx, node, logp, ctx.input(node, 1), ctx.opt_input(node, 2)), logp]
