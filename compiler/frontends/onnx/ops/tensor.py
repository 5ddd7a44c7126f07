"""ONNX tensor op decompositions into graph-dialect core ops."""

from __future__ import annotations

import numpy as np
import onnx
from portc.compiler.frontends.onnx.registry import NodeError, OnnxContext, Outputs, onnx_op


@onnx_op("Constant")
def constant(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        v = ctx.attr(node, key)
        if v is None:
            continue
        if key in ("value_float", "value_floats"):
            arr = np.asarray(v, dtype=np.float32)
        elif key in ("value_int", "value_ints"):
            arr = np.asarray(v, dtype=np.int64)
        else:
            arr = np.asarray(v)
        return [ctx.b.const(arr, hint=node.output[0])]
    raise NodeError("only numeric Constant values are supported (not strings or sparse tensors)")


@onnx_op("Identity")
def identity(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    return [ctx.input(node, 0)]
