"""ONNX Runtime's ``com.microsoft.MoE`` contrib op as one ``moe.moe``.

The model computes the router logits itself and passes them as ``router_probs`` (despite the
name they are logits: ORT applies the softmax), so the op is imported with
``router_input="logits"``. ORT stores expert weights like ``nn.Linear`` (fc1 [E, F, H],
fc2 [E, H, F]); ``moe.moe`` wants [E, H, F] / [E, F, H], hence one transpose each, which folds
for initializers. What ORT 1.31's CPU kernel runs, and so what is imported (checked against it):

* ``activation_type`` relu / silu / identity, and gelu, which ORT computes with the tanh
  approximation (imported as ``gelu_tanh``), with or without fc1/fc2 biases;
* ``swiglu`` only with ``swiglu_fusion=1`` (gate and linear columns interleaved in fc1; the CPU
  kernel refuses 0 and 2). ORT's ``g * sigmoid(alpha * g) * (l + beta)`` is folded into plain
  SwiGLU by scaling: ``silu(alpha * g) * (l + beta) / alpha``, so the gate projection is
  multiplied by alpha and the linear one (with beta added to its bias) divided by it;
* 2-D [T, H] or 3-D [B, S, H] input (3-D is flattened to tokens and restored).

``swiglu_limit`` (clamping) and ``use_sparse_mixer`` (a CUDA-only routing that the CPU kernel
ignores) are refused rather than imported with a meaning ORT does not agree on.
"""

from __future__ import annotations

import numpy as np
import onnx
from xdsl.ir import SSAValue

from portc.compiler.frontends.onnx.registry import NodeError, OnnxContext, Outputs, onnx_op
from portc.dialects import moe

_ACTIVATIONS = {"relu": "relu", "gelu": "gelu_tanh", "silu": "silu", "identity": "identity",
                "swiglu": "swiglu"}


def _zeros(ctx: OnnxContext, shape: tuple[int, ...], like: SSAValue) -> SSAValue:
    """A zero bias, so that a bias-carrying ``moe.moe`` gets all of its bias operands."""
    return ctx.b.const(np.zeros(shape), ctx.spec(like).dtype, hint="zero_bias")


@onnx_op("MoE", domain="com.microsoft")
def moe_op(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    b = ctx.b
    act_type = ctx.attr_str(node, "activation_type", "relu")
    if act_type not in _ACTIVATIONS:
        raise NodeError(f"activation_type '{act_type}' is not one of {sorted(_ACTIVATIONS)}")
    if ctx.attr_int(node, "use_sparse_mixer", 0):
        raise NodeError("use_sparse_mixer=1 (a CUDA-only routing) is not supported")
    if ctx.attr(node, "swiglu_limit") is not None:
        raise NodeError("swiglu_limit (clamped SwiGLU) is not supported")
    if ctx.has_input(node, 6) or ctx.has_input(node, 7):
        raise NodeError("fc3 weights (unfused SwiGLU) are not supported: ONNX Runtime's CPU "
                        "kernel accepts only swiglu_fusion=1")
    k = ctx.attr_int(node, "k", 1)
    normalize = bool(ctx.attr_int(node, "normalize_routing_weights", 0))

    x, logits = ctx.input(node, 0), ctx.input(node, 1)
    x_shape = ctx.static_shape(x, node)
    if len(x_shape) not in (2, 3):
        raise NodeError(f"input must be [T, H] or [B, S, H], got {x_shape}")
    h = x_shape[-1]
    t = int(np.prod(x_shape[:-1]))
    x2 = b.reshape(x, (t, h))
    fc1 = ctx.static_shape(ctx.input(node, 2), node)
    fc2 = ctx.static_shape(ctx.input(node, 4), node)
    e, f = fc2[0], fc2[2]
    w1 = b.transpose(ctx.input(node, 2), (0, 2, 1))  # [E, H, F or 2F]
    w2 = b.transpose(ctx.input(node, 4), (0, 2, 1))  # [E, F, H]
    b1, b2 = ctx.opt_input(node, 3), ctx.opt_input(node, 5)
    act = _ACTIVATIONS[act_type]

    if act == "swiglu":
        if ctx.attr_int(node, "swiglu_fusion", 0) != 1:
            raise NodeError("swiglu needs swiglu_fusion=1 (interleaved), the only layout ONNX "
                            "Runtime's CPU kernel runs")
        if fc1[1] != 2 * f:
            raise NodeError(f"fused fc1 {fc1} must have 2 * inter_size = {2 * f} rows")
        alpha = ctx.attr_float(node, "activation_alpha", 1.0)
        beta = ctx.attr_float(node, "activation_beta", 0.0)
        if alpha == 0.0:
            raise NodeError("activation_alpha 0 cannot be folded into SwiGLU")
        w_gate = b.slice(w1, (0, 0, 0), (1, 1, 2), (e, h, f))
        w_up = b.slice(w1, (0, 0, 1), (1, 1, 2), (e, h, f))
        weights = [w_gate, w_up, w2]
        if alpha != 1.0:
            w_gate = b.binary("mul", w_gate, b.scalar(alpha, x))
            w_up = b.binary("div", w_up, b.scalar(alpha, x))
            weights = [w_gate, w_up, w2]
        biases: list[SSAValue] = []
        if b1 is not None or b2 is not None or beta != 0.0:
            b1 = b1 if b1 is not None else _zeros(ctx, (e, 2 * f), x)
            b_gate = b.slice(b1, (0, 0), (1, 2), (e, f))
            b_up = b.slice(b1, (0, 1), (1, 2), (e, f))
            if beta != 0.0:
                b_up = b.binary("add", b_up, b.scalar(beta, x))
            if alpha != 1.0:
                b_gate = b.binary("mul", b_gate, b.scalar(alpha, x))
                b_up = b.binary("div", b_up, b.scalar(alpha, x))
            biases = [b_gate, b_up, b2 if b2 is not None else _zeros(ctx, (e, h), x)]
    else:
        if fc1[1] != f:
            raise NodeError(f"fc1 {fc1} must have inter_size = {f} rows")
        weights = [w1, w2]
        biases = []
        if b1 is not None or b2 is not None:
            biases = [b1 if b1 is not None else _zeros(ctx, (e, f), x),
                      b2 if b2 is not None else _zeros(ctx, (e, h), x)]

    y = b.one(moe.MoEOp, [x2, logits, *weights, *biases],
              moe.moe_props(k, normalize, 0.0, act, "logits"), hint="moe")
    return [b.reshape(y, x_shape)]
