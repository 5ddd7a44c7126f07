"""ONNX op decompositions, one module per op family; importing this package registers them all."""

from portc.compiler.frontends.onnx.ops import (  # noqa: F401
    attention,
    elementwise,
    nn,
    quant,
    reduce,
    resample,
    rnn,
    tensor,
)
