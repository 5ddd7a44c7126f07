"""ONNX op decompositions, one module per op family; importing this package registers them all."""

from portc.compiler.frontends.onnx.ops import (  # noqa: F401
    attention,
    elementwise,
    moe,
    nn,
    quant,
    reduce,
    resample,
    rnn,
    tensor,
)
