"""Dense, convolution, pooling, normalisation, embedding and attention ATen ops.

``graph.conv``/``graph.pool`` already speak PyTorch's NC[D]HW layout and ceil-mode rule, so most of
this file is argument plumbing: ATen passes one-element lists for "same value on every spatial dim"
and an empty ``stride`` for "stride = kernel".
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from xdsl.ir import SSAValue

from portc.compiler.frontends.torch_ops.registry import Args, NodeError, TorchContext, aten_op
from portc.compiler.frontends.torch_ops.tensor import slice_dim
from portc.dialects import dtypes
from portc.dialects import graph as g

# ------------------------------------------------------------------------------ dense


@aten_op("mm.default", "bmm.default", "matmul.default", "mv.default", "dot.default",
         "vdot.default")
def mm(ctx: TorchContext, a: Args) -> SSAValue:
    rhs = a.mat2 if "mat2" in a else a.vec if "vec" in a else a.other if "other" in a \
        else a.tensor
    return ctx.b.matmul(a.self, rhs)


def _scaled_sum(ctx: TorchContext, prod: SSAValue, bias: SSAValue | None, alpha: Any,
                beta: Any) -> SSAValue:
    """``beta * bias + alpha * prod``; beta = 0 ignores the bias (even its NaNs), as ATen does."""
    b = ctx.b
    if alpha is not None and alpha != 1:
        prod = b.binary("mul", prod, b.scalar(alpha, prod))
    if bias is None or beta == 0:
        return prod
    if beta is not None and beta != 1:
        bias = b.binary("mul", bias, b.scalar(beta, bias))
    return b.binary("add", prod, bias)


@aten_op("addmm.default", "baddbmm.default", "addmv.default", "addbmm.default")
def addmm(ctx: TorchContext, a: Args) -> SSAValue:
    name = str(ctx.node.target)
    if "addmv" in name:
        prod = ctx.b.matmul(a.mat, a.vec)
    elif "addbmm" in name:
        prod = ctx.b.reduce("sum", ctx.b.matmul(a.batch1, a.batch2), [0], False)
    elif "baddbmm" in name:
        prod = ctx.b.matmul(a.batch1, a.batch2)
    else:
        prod = ctx.b.matmul(a.mat1, a.mat2)
    return _scaled_sum(ctx, prod, a.self, a.alpha, a.beta)


@aten_op("linear.default")
def linear(ctx: TorchContext, a: Args) -> SSAValue:
    w = a.weight
    wt = ctx.b.transpose(w, [1, 0]) if ctx.rank(w) == 2 else w
    y = ctx.b.matmul(a.input, wt)
    return ctx.b.binary("add", y, a.bias) if a.bias is not None else y


# ------------------------------------------------------------------------------ convolution


def _per_dim(v: Any, n: int, what: str) -> list[int]:
    vals = [int(v)] if isinstance(v, int) else [int(x) for x in v]
    if len(vals) == 1:
        vals = vals * n
    if len(vals) != n:
        raise NodeError(f"{what} {vals} does not match {n} spatial dims")
    return vals


@aten_op("convolution.default", "_convolution.default", "conv1d.default", "conv2d.default",
         "conv3d.default", "conv1d.padding", "conv2d.padding", "conv3d.padding",
         "conv_transpose1d.default", "conv_transpose2d.input", "conv_transpose3d.input")
def convolution(ctx: TorchContext, a: Args) -> SSAValue:
    x, w = a.input, a.weight
    nsp = ctx.rank(w) - 2
    unbatched = ctx.rank(x) == nsp + 1
    if unbatched:
        x = ctx.b.reshape(x, [1, *ctx.shape(x)])
    transposed = bool(a.get("transposed", False)) or "conv_transpose" in str(ctx.node.target)
    stride = _per_dim(a.stride, nsp, "stride")
    dil = _per_dim(a.dilation, nsp, "dilation")
    groups = int(a.groups)
    ksz = ctx.shape(w)[2:]
    if isinstance(a.padding, str):
        if a.padding == "valid":
            begins = ends = [0] * nsp
        else:  # "same": extra padding goes at the end, like ATen
            tot = [d * (k - 1) for d, k in zip(dil, ksz, strict=True)]
            begins = [t // 2 for t in tot]
            ends = [t - t // 2 for t in tot]
    else:
        begins = ends = _per_dim(a.padding, nsp, "padding")
    if transposed:
        outpad = _per_dim(a.get("output_padding", 0), nsp, "output_padding")
        y = _conv_transpose(ctx, x, w, a.bias, stride, begins, dil, outpad, groups)
    else:
        ops = [x, w] + ([a.bias] if a.bias is not None else [])
        y = ctx.b.one(g.ConvOp, ops, {"strides": tuple(stride), "pads": tuple(begins + ends),
                                      "dilations": tuple(dil), "group": groups})
    return ctx.b.reshape(y, ctx.shape(y)[1:]) if unbatched else y


def _conv_transpose(ctx: TorchContext, x: SSAValue, w: SSAValue, bias: SSAValue | None,
                    stride: list[int], pad: list[int], dil: list[int], outpad: list[int],
                    groups: int) -> SSAValue:
    """Transposed conv = zero-stuff the input by ``stride``, pad by ``d(k-1) - p``, and run a
    stride-1 conv with the spatially flipped, in/out-swapped kernel."""
    b = ctx.b
    nsp = len(stride)
    xs = ctx.shape(x)
    if any(s > 1 for s in stride):
        # [N, C, H, W] -> [N, C, H, 1, W, 1] -> pad to [N, C, H, s, W, s] -> [N, C, H*s, W*s]
        inter = [xs[0], xs[1]]
        for n in xs[2:]:
            inter += [n, 1]
        x = b.reshape(x, inter)
        r = len(inter)
        ends = [0] * r
        for i, s in enumerate(stride):
            ends[3 + 2 * i] = s - 1
        x = b.one(g.PadOp, [x], {"pads": tuple([0] * r + ends), "mode": "constant",
                                 "value": 0.0})
        full = [xs[0], xs[1], *(n * s for n, s in zip(xs[2:], stride, strict=True))]
        x = b.reshape(x, full)
        for i, s in enumerate(stride):  # drop the trailing s-1 zeros after the last element
            x = slice_dim(ctx, x, 2 + i, 0, full[2 + i] - (s - 1))
    ws = ctx.shape(w)  # [Cin, Cout/g, k...]
    cin, coutg, ks = ws[0], ws[1], ws[2:]
    wf = b.reshape(w, [groups, cin // groups, coutg, *ks])
    perm = [0, 2, 1, *range(3, 3 + nsp)]
    wf = b.transpose(wf, perm)
    wf = b.reshape(wf, [groups * coutg, cin // groups, *ks])
    for i in range(nsp):  # flip every spatial axis
        starts = [0] * (2 + nsp)
        steps = [1] * (2 + nsp)
        starts[2 + i], steps[2 + i] = ks[i] - 1, -1
        wf = b.one(g.SliceOp, [wf], {"starts": tuple(starts), "steps": tuple(steps)},
                   result=ctx.spec(wf))
    begins = [d * (k - 1) - p for d, k, p in zip(dil, ks, pad, strict=True)]
    ends = [bg + op for bg, op in zip(begins, outpad, strict=True)]
    ops = [x, wf] + ([bias] if bias is not None else [])
    return b.one(g.ConvOp, ops, {"strides": (1,) * nsp, "pads": tuple(begins + ends),
                                 "dilations": tuple(dil), "group": groups})


# ------------------------------------------------------------------------------ pooling


def _pool_args(ctx: TorchContext, a: Args, nsp: int) -> tuple[list[int], list[int], list[int]]:
    k = _per_dim(a.kernel_size, nsp, "kernel_size")
    s = _per_dim(a.stride, nsp, "stride") if a.stride not in (None, []) else list(k)
    p = _per_dim(a.padding, nsp, "padding")
    return k, s, p


def _spatial(ctx: TorchContext, x: SSAValue, nsp: int) -> tuple[SSAValue, bool]:
    """Pool ops accept unbatched [C, *spatial] inputs: add the batch dim."""
    if ctx.rank(x) == nsp + 1:
        return ctx.b.reshape(x, [1, *ctx.shape(x)]), True
    return x, False


def _nsp(ctx: TorchContext) -> int:
    name = str(ctx.node.target)
    for n in (1, 2, 3):
        if f"{n}d" in name:
            return n
    raise NodeError("cannot tell the pooling rank")


@aten_op("max_pool1d.default", "max_pool2d.default", "max_pool3d.default",
         "max_pool2d_with_indices.default", "max_pool3d_with_indices.default",
         "max_pool1d_with_indices.default")
def max_pool(ctx: TorchContext, a: Args) -> Any:
    nsp = _nsp(ctx)
    x, unb = _spatial(ctx, a.self, nsp)
    k, s, p = _pool_args(ctx, a, nsp)
    y = ctx.b.one(g.PoolOp, [x], {"kind": "max", "kernel": tuple(k), "strides": tuple(s),
                                  "pads": tuple(p + p),
                                  "dilations": tuple(_per_dim(a.dilation, nsp, "dilation")),
                                  "ceil_mode": bool(a.ceil_mode), "count_include_pad": False})
    if unb:
        y = ctx.b.reshape(y, ctx.shape(y)[1:])
    return (y, None) if "with_indices" in str(ctx.node.target) else y


@aten_op("avg_pool1d.default", "avg_pool2d.default", "avg_pool3d.default")
def avg_pool(ctx: TorchContext, a: Args) -> SSAValue:
    nsp = _nsp(ctx)
    if a.get("divisor_override") is not None:
        raise NodeError("avg_pool with divisor_override is not supported")
    x, unb = _spatial(ctx, a.self, nsp)
    k, s, p = _pool_args(ctx, a, nsp)
    y = ctx.b.one(g.PoolOp, [x], {"kind": "avg", "kernel": tuple(k), "strides": tuple(s),
                                  "pads": tuple(p + p), "dilations": (1,) * nsp,
                                  "ceil_mode": bool(a.ceil_mode),
                                  "count_include_pad": bool(a.count_include_pad)})
    return ctx.b.reshape(y, ctx.shape(y)[1:]) if unb else y


@aten_op("adaptive_avg_pool1d.default", "adaptive_avg_pool2d.default",
         "_adaptive_avg_pool2d.default", "adaptive_avg_pool3d.default",
         "_adaptive_avg_pool3d.default", "adaptive_max_pool1d.default",
         "adaptive_max_pool2d.default", "adaptive_max_pool3d.default")
def adaptive_pool(ctx: TorchContext, a: Args) -> Any:
    """Divisible sizes are a plain pool; other average pools are one averaging matmul per
    spatial dim (adaptive windows are separable), which is exact."""
    nsp = _nsp(ctx)
    is_max = "max" in str(ctx.node.target)
    x, unb = _spatial(ctx, a.self, nsp)
    shape = ctx.shape(x)
    ins = list(shape[2:])
    outs = [ins[i] if o is None else int(o) for i, o in
            enumerate(_per_dim_opt(a.output_size, nsp))]
    if all(o and i % o == 0 for i, o in zip(ins, outs, strict=True)):
        k = [i // o for i, o in zip(ins, outs, strict=True)]
        y = ctx.b.one(g.PoolOp, [x], {"kind": "max" if is_max else "avg", "kernel": tuple(k),
                                      "strides": tuple(k), "pads": (0,) * (2 * nsp),
                                      "dilations": (1,) * nsp, "ceil_mode": False,
                                      "count_include_pad": False})
    elif is_max:
        raise NodeError(f"adaptive max pool from {ins} to {outs} (not divisible) is not supported")
    else:
        y = x
        r = len(shape)
        for i, (n, o) in enumerate(zip(ins, outs, strict=True)):
            m = np.zeros((n, o))
            for j in range(o):
                lo, hi = (j * n) // o, -(-((j + 1) * n) // o)
                m[lo:hi, j] = 1.0 / (hi - lo)
            perm = [d for d in range(r) if d != 2 + i] + [2 + i]
            inv = list(np.argsort(perm))
            yt = ctx.b.transpose(y, perm)
            yt = ctx.b.matmul(yt, ctx.b.const(m, ctx.spec(x).dtype, hint="adaptive_avg"))
            y = ctx.b.transpose(yt, [int(v) for v in inv])
    if unb:
        y = ctx.b.reshape(y, ctx.shape(y)[1:])
    return (y, None) if is_max else y


def _per_dim_opt(v: Any, n: int) -> list[int | None]:
    vals = [v] if isinstance(v, int) or v is None else list(v)
    return vals * n if len(vals) == 1 else vals


# ------------------------------------------------------------------------------ normalisation


def _channel_shape(ctx: TorchContext, x: SSAValue) -> list[int]:
    return [ctx.shape(x)[1]] + [1] * (ctx.rank(x) - 2)


@aten_op("_native_batch_norm_legit_no_training.default", "native_batch_norm.default",
         "_native_batch_norm_legit.default", "_native_batch_norm_legit.no_stats",
         "batch_norm.default", "_native_batch_norm_legit_functional.default")
def batch_norm(ctx: TorchContext, a: Args) -> Any:
    """``(x - mean) * (w / sqrt(var + eps)) + b`` over channel dim 1; with ``training`` the
    statistics are the batch's (biased variance), as ATen computes them."""
    b = ctx.b
    x = a.input
    dt = ctx.spec(x).dtype
    cshape = _channel_shape(ctx, x)
    training = "no_training" not in str(ctx.node.target) and bool(a.get("training", False))
    if "no_stats" in str(ctx.node.target):
        training = True
    eps = float(a.eps)
    if training:
        axes = [0] + list(range(2, ctx.rank(x)))
        n = math.prod(ctx.shape(x)[i] for i in axes)
        mean = b.binary("div", b.reduce("sum", x, axes, True), b.scalar(float(n), dt))
        d = b.binary("sub", x, mean)
        var = b.binary("div", b.reduce("sum", b.binary("mul", d, d), axes, True),
                       b.scalar(float(n), dt))
    else:
        if a.running_mean is None or a.running_var is None:
            raise NodeError("batch norm in eval mode needs running statistics")
        mean = b.reshape(a.running_mean, cshape)
        var = b.reshape(a.running_var, cshape)
    scale = b.unary("rsqrt", b.binary("add", var, b.scalar(eps, dt)))
    if a.weight is not None:
        scale = b.binary("mul", scale, b.reshape(a.weight, cshape))
    y = b.binary("mul", b.binary("sub", x, mean), scale)
    if a.bias is not None:
        y = b.binary("add", y, b.reshape(a.bias, cshape))
    if "batch_norm.default" == str(ctx.node.target).split("aten.")[-1]:
        return y
    return (y, None, None) if "functional" not in str(ctx.node.target) else (y, None, None,
                                                                           None, None)


@aten_op("native_layer_norm.default", "layer_norm.default")
def layer_norm(ctx: TorchContext, a: Args) -> Any:
    b = ctx.b
    x = a.input
    r = ctx.rank(x)
    nd = len(a.normalized_shape)
    axis = r - nd
    dt = ctx.spec(x).dtype
    scale = a.weight if a.weight is not None else ctx.ones_like_dtype(
        [int(d) for d in a.normalized_shape], dt)
    ops = [x, scale] + ([a.bias] if a.bias is not None else [])
    y = b.one(g.LayerNormOp, ops, {"axis": axis, "epsilon": float(a.eps)})
    if str(ctx.node.target).endswith("layer_norm.default") and "native" not in str(
            ctx.node.target):
        return y
    used = ctx.used_outputs()
    mean = rstd = None
    if used & {1, 2}:
        axes = list(range(axis, r))
        n = float(math.prod(ctx.shape(x)[axis:]))
        mean = b.binary("div", b.reduce("sum", x, axes, True), b.scalar(n, dt))
        d = b.binary("sub", x, mean)
        var = b.binary("div", b.reduce("sum", b.binary("mul", d, d), axes, True),
                       b.scalar(n, dt))
        rstd = b.unary("rsqrt", b.binary("add", var, b.scalar(float(a.eps), dt)))
    return y, mean, rstd


@aten_op("rms_norm.default", "_fused_rms_norm.default")
def rms_norm(ctx: TorchContext, a: Args) -> Any:
    x = a.input
    dt = ctx.spec(x).dtype
    nd = len(a.normalized_shape)
    eps = a.eps if a.eps is not None else float(np.finfo(dtypes.dtype(dt).numpy).eps)
    scale = a.weight if a.weight is not None else ctx.ones_like_dtype(
        [int(d) for d in a.normalized_shape], dt)
    y = ctx.b.one(g.RMSNormOp, [x, scale], {"axis": ctx.rank(x) - nd, "epsilon": float(eps)})
    return (y, None) if "_fused" in str(ctx.node.target) else y


@aten_op("native_group_norm.default", "group_norm.default")
def group_norm(ctx: TorchContext, a: Args) -> Any:
    """Normalise ``[N, G, C/G * spatial]`` rows, then the per-channel affine."""
    b = ctx.b
    x = a.input
    shape = ctx.shape(x)
    dt = ctx.spec(x).dtype
    grp = int(a.group if "group" in a else a.num_groups)
    rows = b.reshape(x, [shape[0], grp, math.prod(shape[1:]) // grp])
    y = b.one(g.LayerNormOp, [rows, ctx.ones_like_dtype(1, dt)], {"axis": 2,
                                                                 "epsilon": float(a.eps)})
    y = b.reshape(y, shape)
    cshape = _channel_shape(ctx, x)
    if a.weight is not None:
        y = b.binary("mul", y, b.reshape(a.weight, cshape))
    if a.bias is not None:
        y = b.binary("add", y, b.reshape(a.bias, cshape))
    return (y, None, None) if "native" in str(ctx.node.target) else y


# ------------------------------------------------------------------------------ attention


def _repeat_heads(ctx: TorchContext, kv: SSAValue, n_rep: int) -> SSAValue:
    """[B, Hkv, S, D] -> [B, Hkv * n_rep, S, D], each kv head used by n_rep query heads."""
    if n_rep == 1:
        return kv
    s = list(ctx.shape(kv))
    lead, (h, seq, d) = s[:-3], s[-3:]
    x = ctx.b.reshape(kv, [*lead, h, 1, seq, d])
    x = ctx.b.broadcast(x, [*lead, h, n_rep, seq, d])
    return ctx.b.reshape(x, [*lead, h * n_rep, seq, d])


def attention(ctx: TorchContext, q: SSAValue, k: SSAValue, v: SSAValue, mask: SSAValue | None,
              is_causal: bool, scale: float | None, gqa: bool) -> SSAValue:
    """softmax(q k^T * scale + mask) v; a bool mask keeps True positions, causal keeps j <= i."""
    b = ctx.b
    qs, ks = ctx.shape(q), ctx.shape(k)
    dt = ctx.spec(q).dtype
    if gqa and qs[-3] != ks[-3]:
        k = _repeat_heads(ctx, k, qs[-3] // ks[-3])
        v = _repeat_heads(ctx, v, qs[-3] // ks[-3])
    sc = 1.0 / math.sqrt(qs[-1]) if scale is None else float(scale)
    r = ctx.rank(k)
    kt = b.transpose(k, [*range(r - 2), r - 1, r - 2])
    s = b.binary("mul", b.matmul(q, kt), b.scalar(sc, dt))
    L, S = qs[-2], ks[-2]
    neg = b.scalar(-math.inf, dt)
    if is_causal:
        keep = np.tril(np.ones((L, S), dtype=bool))
        s = b.where(b.const(keep, hint="causal_mask"), s, neg)
    if mask is not None:
        if ctx.spec(mask).dtype == "bool":
            s = b.where(mask, s, neg)
        else:
            s = b.binary("add", s, b.cast(mask, dt))
    p = b.one(g.SoftmaxOp, [s], {"axis": ctx.rank(s) - 1})
    return b.matmul(p, v)


@aten_op("scaled_dot_product_attention.default")
def sdpa(ctx: TorchContext, a: Args) -> SSAValue:
    if a.dropout_p:
        raise NodeError("attention dropout is random; export with dropout_p=0 (eval mode)")
    return attention(ctx, a.query, a.key, a.value, a.attn_mask, bool(a.is_causal), a.scale,
                     bool(a.get("enable_gqa", False)))


@aten_op("_scaled_dot_product_flash_attention_for_cpu.default",
         "_scaled_dot_product_efficient_attention.default",
         "_scaled_dot_product_flash_attention.default",
         "_scaled_dot_product_cudnn_attention.default")
def sdpa_fused(ctx: TorchContext, a: Args) -> tuple[Any, ...]:
    if a.get("dropout_p"):
        raise NodeError("attention dropout is random; export with dropout_p=0 (eval mode)")
    mask = a.get("attn_mask", a.get("attn_bias"))
    out = attention(ctx, a.query, a.key, a.value, mask, bool(a.is_causal), a.scale, False)
    n = len(ctx.meta()) if isinstance(ctx.meta(), (tuple, list)) else 2
    return (out,) + (None,) * (n - 1)

