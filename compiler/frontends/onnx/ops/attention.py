"""ONNX transformer-block decompositions: Attention (opsets 23-25), RotaryEmbedding, SwiGLU.

Attention follows the ONNX reference step for step (scale split as sqrt on both Q and K, cache
concat, additive bias built from mask/causal/window/padding, softcap before the bias, softmax,
fully-masked rows zeroed) so that the decomposition and the ``_expanded`` function body agree.
Masks that are compile-time constants fold into one constant bias at import.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from xdsl.ir import SSAValue

from portc.compiler.frontends.onnx.registry import NodeError, OnnxContext, Outputs, onnx_op
from portc.dialects import dtypes
from portc.dialects import graph as g


def _to_4d(ctx: OnnxContext, x: SSAValue, heads: int, node: onnx.NodeProto) -> SSAValue:
    """[B, S, H*D] -> [B, H, S, D]."""
    b, s, hid = ctx.static_shape(x, node)
    if heads <= 0 or hid % heads:
        raise NodeError(f"hidden size {hid} is not a multiple of the head count {heads}")
    x = ctx.b.reshape(x, (b, s, heads, hid // heads))
    return ctx.b.transpose(x, (0, 2, 1, 3))


def _repeat_heads(ctx: OnnxContext, x: SSAValue, reps: int) -> SSAValue:
    """[B, H, S, D] -> [B, H*reps, S, D] with each head repeated in place (h0, h0, h1, h1...)."""
    if reps == 1:
        return x
    b, h, s, d = ctx.spec(x).shape
    x = ctx.b.reshape(x, (b, h, 1, s, d))
    x = ctx.b.broadcast(x, (b, h, reps, s, d))
    return ctx.b.reshape(x, (b, h * reps, s, d))  # type: ignore[operator]


def _neg_inf_where(ctx: OnnxContext, allowed: SSAValue, dt: str) -> SSAValue:
    """bool ``allowed`` -> additive bias: 0 where allowed, -inf elsewhere."""
    return ctx.b.where(allowed, ctx.b.scalar(0.0, dt), ctx.b.scalar(-np.inf, dt))


def _frontier(ctx: OnnxContext, q: int, kv: int, offset: int | SSAValue, lo: int | None,
              hi: int | None) -> SSAValue:
    """bool ``allowed[.., i, j]``: ``i + offset - lo <= j <= i + offset + hi`` (None = open).
    A per-batch offset ([B] int64) gives [B, 1, q, kv]."""
    b = ctx.b
    i = b.const(np.arange(q, dtype=np.int64).reshape(q, 1))
    j = b.const(np.arange(kv, dtype=np.int64).reshape(1, kv))
    if isinstance(offset, int):
        pos = b.binary("add", i, b.scalar(offset, "int64"))
    else:
        nb = ctx.spec(offset).shape[0]
        off = b.reshape(b.cast(offset, "int64"), (nb, 1, 1, 1))
        pos = b.binary("add", b.reshape(i, (1, 1, q, 1)), off)
    diff = b.binary("sub", pos, j)  # i + offset - j
    allowed: SSAValue | None = None
    if hi is not None:  # j <= pos + hi  <=>  -diff <= hi
        allowed = b.binary("ge", diff, b.scalar(-hi, "int64"))
    if lo is not None:
        c = b.binary("le", diff, b.scalar(lo, "int64"))
        allowed = c if allowed is None else b.binary("and", allowed, c)
    assert allowed is not None
    return allowed


@onnx_op("Attention")
def attention(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    b = ctx.b
    q, k, v = ctx.input(node, 0), ctx.input(node, 1), ctx.input(node, 2)
    mask = ctx.opt_input(node, 3)
    past_k, past_v = ctx.opt_input(node, 4), ctx.opt_input(node, 5)
    nonpad = ctx.opt_input(node, 6)
    if (past_k is None) != (past_v is None):
        raise NodeError("past_key and past_value must be given together")
    if nonpad is not None and past_k is not None:
        raise NodeError("nonpad_kv_seqlen cannot be combined with past_key/past_value")
    rank = ctx.spec(q).rank
    if rank == 3:
        q = _to_4d(ctx, q, ctx.attr_int(node, "q_num_heads", 0), node)
        kvh = ctx.attr_int(node, "kv_num_heads", 0)
        k, v = _to_4d(ctx, k, kvh, node), _to_4d(ctx, v, kvh, node)
    elif rank != 4:
        raise NodeError(f"Q must be 3-D or 4-D, got rank {rank}")
    dt = ctx.spec(q).dtype
    nb, hq, sq, dq = ctx.static_shape(q, node)
    scale = ctx.attr_float(node, "scale", 0.0) or 1.0 / math.sqrt(dq)
    sqrt_scale = b.scalar(math.sqrt(scale), dt)

    if past_k is not None:
        k = b.concat([past_k, k], 2)
        v = b.concat([past_v, v], 2)  # type: ignore[list-item]
    present_k, present_v = k, v
    skv = ctx.static_shape(k, node)[2]
    hkv = ctx.static_shape(k, node)[1]

    # ---- additive bias [.., sq, skv]
    bias: SSAValue | None = None
    if mask is not None:
        ms = ctx.static_shape(mask, node)
        if ms[-1] < skv:  # a short mask leaves the extra keys masked out
            fill = np.zeros if ctx.spec(mask).dtype == "bool" else (
                lambda s, dtype: np.full(s, -np.inf, dtype))
            npdt = dtypes.dtype(ctx.spec(mask).dtype).numpy
            mask = b.concat([mask, b.const(fill((*ms[:-1], skv - ms[-1]), dtype=npdt))], -1)
        bias = _neg_inf_where(ctx, mask, dt) if ctx.spec(mask).dtype == "bool" else \
            b.cast(mask, dt)
    past_len = ctx.static_shape(past_k, node)[2] if past_k is not None else 0
    offset: int | SSAValue = past_len
    if nonpad is not None and past_k is None:
        offset = b.binary("sub", b.cast(nonpad, "int64"), b.scalar(sq, "int64"))
    if ctx.attr_int(node, "is_causal", 0):
        causal = _neg_inf_where(ctx, _frontier(ctx, sq, skv, offset, None, 0), dt)
        bias = causal if bias is None else b.binary("add", bias, causal)
    left, right = ctx.attr_int(node, "left_window_size", -1), ctx.attr_int(
        node, "right_window_size", -1)
    if left >= 0 or right >= 0:
        win = _neg_inf_where(ctx, _frontier(ctx, sq, skv, offset, left if left >= 0 else None,
                                            right if right >= 0 else None), dt)
        bias = win if bias is None else b.binary("add", bias, win)
    if nonpad is not None:
        j = b.const(np.arange(skv, dtype=np.int64).reshape(1, skv))
        valid = b.binary("lt", j, b.reshape(b.cast(nonpad, "int64"), (nb, 1)))
        pm = b.reshape(_neg_inf_where(ctx, valid, dt), (nb, 1, 1, skv))
        bias = pm if bias is None else b.binary("add", bias, pm)

    # ---- grouped-query heads
    if hq != hkv:
        if hq % hkv:
            raise NodeError(f"q heads {hq} are not a multiple of kv heads {hkv}")
        k, v = _repeat_heads(ctx, k, hq // hkv), _repeat_heads(ctx, v, hq // hkv)

    qs = b.binary("mul", q, sqrt_scale)
    kt = b.binary("mul", b.transpose(k, (0, 1, 3, 2)), sqrt_scale)
    qk = b.matmul(qs, kt)
    softcap = ctx.attr_float(node, "softcap", 0.0)
    if softcap > 0:
        cap = b.scalar(softcap, dt)
        qk = b.binary("mul", b.unary("tanh", b.binary("div", qk, cap)), cap)
    scores = qk if bias is None else b.binary("add", qk, bias)
    mode = ctx.attr_int(node, "qk_matmul_output_mode", 0)
    qk_out = scores if mode == 2 else qk
    prec = ctx.attr_int(node, "softmax_precision", 0)
    sm_in = b.cast(scores, ctx.onnx_dtype(prec, node)) if prec else scores
    probs = b.one(g.SoftmaxOp, [sm_in], {"axis": -1})
    if bias is not None:
        # rows whose bias masks every key have no attendable key: probabilities are 0, not NaN
        dead = b.unary("isneginf", b.reduce("max", bias, [-1], True))
        known = b.value_of(dead)
        if known is None or bool(np.any(known)):
            probs = b.where(dead, b.scalar(0.0, ctx.spec(probs).dtype), probs)
    probs = b.cast(probs, dt)
    if mode == 3:
        qk_out = probs
    y = b.matmul(probs, v)
    if rank == 3:
        y = b.transpose(y, (0, 2, 1, 3))
        y = b.reshape(y, (nb, sq, hq * ctx.static_shape(v, node)[3]))
    return [y, present_k, present_v, qk_out]


@onnx_op("RotaryEmbedding")
def rotary_embedding(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    """Rotate (x1, x2) pairs by the cached angles: halves of the rotary dims, or even/odd
    elements when ``interleaved``; the dims past ``rotary_embedding_dim`` pass through."""
    b = ctx.b
    x, cos, sin = ctx.input(node, 0), ctx.input(node, 1), ctx.input(node, 2)
    pos = ctx.opt_input(node, 3)
    shape = ctx.static_shape(x, node)
    if len(shape) == 4:
        xb = b.transpose(x, (0, 2, 1, 3))  # [B, S, H, D]
    elif len(shape) == 3:
        heads = ctx.attr_int(node, "num_heads", 0)
        if heads <= 0 or shape[2] % heads:
            raise NodeError(f"3-D input needs num_heads dividing {shape[2]}, got {heads}")
        xb = b.reshape(x, (shape[0], shape[1], heads, shape[2] // heads))
    else:
        raise NodeError(f"input must be 3-D or 4-D, got rank {len(shape)}")
    nb, s, h, d = ctx.static_shape(xb, node)
    rd = ctx.attr_int(node, "rotary_embedding_dim", 0) or d
    half = rd // 2
    if pos is not None:
        cos = b.one(g.GatherOp, [cos, pos], {"axis": 0})
        sin = b.one(g.GatherOp, [sin, pos], {"axis": 0})
    if ctx.static_shape(cos, node)[-1] != half:
        raise NodeError(f"cos/sin caches must have rotary_embedding_dim/2 = {half} columns")
    cos = b.reshape(cos, (nb, s, 1, half))
    sin = b.reshape(sin, (nb, s, 1, half))
    interleaved = bool(ctx.attr_int(node, "interleaved", 0))
    step, second = (2, 1) if interleaved else (1, half)
    x1 = b.slice(xb, [0, 0, 0, 0], [1, 1, 1, step], [nb, s, h, half])
    x2 = b.slice(xb, [0, 0, 0, second], [1, 1, 1, step], [nb, s, h, half])
    real = b.binary("sub", b.binary("mul", cos, x1), b.binary("mul", sin, x2))
    imag = b.binary("add", b.binary("mul", sin, x1), b.binary("mul", cos, x2))
    if interleaved:
        rot = b.concat([b.reshape(real, (nb, s, h, half, 1)),
                        b.reshape(imag, (nb, s, h, half, 1))], 4)
        rot = b.reshape(rot, (nb, s, h, rd))
    else:
        rot = b.concat([real, imag], 3)
    if rd < d:
        rot = b.concat([rot, b.slice(xb, [0, 0, 0, rd], [1, 1, 1, 1], [nb, s, h, d - rd])], 3)
    if len(shape) == 4:
        return [b.transpose(rot, (0, 2, 1, 3))]
    return [b.reshape(rot, shape)]


@onnx_op("SwiGLU")
def swiglu(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    """``a * sigmoid(alpha * a) * b``."""
    b = ctx.b
    a, gate = ctx.input(node, 0), ctx.input(node, 1)
    alpha = ctx.attr_float(node, "alpha", 1.0)
    z = a if alpha == 1.0 else b.binary("mul", a, b.scalar(alpha, a))
    return [b.binary("mul", b.binary("mul", a, b.unary("sigmoid", z)), gate)]
