"""graph dialect: type inference, verifiers, and exact MLIR text round trips."""

from __future__ import annotations

import numpy as np
import pytest
from xdsl.utils.exceptions import VerifyException

from portc.compiler.builder import GraphBuilder
from portc.compiler.errors import IRError
from portc.compiler.program import parse_program
from portc.dialects import graph as g
from portc.dialects.graph import TensorSpec


def _sample_program() -> tuple:
    b = GraphBuilder(fold=False)
    x = b.add_input("x", TensorSpec((None, 3, 8, 8), "float32"))
    w = b.const(np.ones((4, 3, 3, 3), np.float32), hint="conv.w")
    y = b.one(g.ConvOp, [x, w], {"strides": (1, 1), "pads": (1, 1, 1, 1),
                                 "dilations": (1, 1), "group": 1})
    y = b.unary("relu", y)
    m = b.reduce("max", y, [2, 3], keepdims=False)
    v, i = b.op(g.TopKOp, [m], {"axis": 1, "k": 2, "largest": True})
    return b.finish([("values", v), ("indices", i)]), y


def test_symbolic_batch_dim_propagates_through_inference() -> None:
    prog, conv_out = _sample_program()
    assert g.spec_of(conv_out).shape == (None, 4, 8, 8)
    assert prog.output_specs()["indices"] == TensorSpec((None, 2), "int64")


def test_module_prints_and_parses_back_identically() -> None:
    prog, _ = _sample_program()
    text = prog.to_text()
    again = parse_program(text, prog.weights)
    again.verify()
    assert again.to_text() == text
    assert "tensor<?x3x8x8xf32>" in text


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "int8", "uint8", "int4", "bool",
                                   "float8_e4m3fn"])
def test_every_dtype_round_trips_through_ir_text(dtype: str) -> None:
    b = GraphBuilder(fold=False)
    x = b.add_input("x", TensorSpec((2, 3), dtype))
    prog = b.finish([("y", b.reshape(x, (3, 2)))])
    text = prog.to_text()
    assert parse_program(text, prog.weights).to_text() == text


def test_matmul_rejects_mismatched_contraction() -> None:
    with pytest.raises(VerifyException, match="contraction"):
        g.MatMulOp.infer([TensorSpec((2, 3), "float32"), TensorSpec((4, 5), "float32")], {})


def test_binary_rejects_mixed_dtypes() -> None:
    with pytest.raises(VerifyException, match="dtypes differ"):
        g.BinaryOp.infer([TensorSpec((2,), "float32"), TensorSpec((2,), "int64")], {"fn": "add"})


def test_broadcasting_follows_numpy_with_dynamic_dims() -> None:
    assert g.broadcast_shapes((None, 1, 4), (3, 1)) == (None, 3, 4)
    with pytest.raises(VerifyException):
        g.broadcast_shapes((2, 3), (4, 3))


def test_slice_verifier_catches_out_of_bounds_reads() -> None:
    text = """builtin.module {
  func.func @main(%x: tensor<4xf32>) -> tensor<3xf32> {
    %0 = graph.slice %x {starts = array<i64: 2>, steps = array<i64: 1>} : (tensor<4xf32>) -> tensor<3xf32>
    func.return %0 : tensor<3xf32>
  }
}"""
    with pytest.raises(IRError, match="outside"):
        parse_program(text).verify()


def test_wrong_result_type_in_text_fails_verification() -> None:
    text = """builtin.module {
  func.func @main(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
    %0 = graph.unary %x {fn = "exp"} : (tensor<2x3xf32>) -> tensor<3x2xf32>
    func.return %0 : tensor<3x2xf32>
  }
}"""
    with pytest.raises(IRError, match="result shape"):
        parse_program(text).verify()


def test_constant_must_match_its_weight() -> None:
    prog, _ = _sample_program()
    prog.weights.put("conv.w", np.ones((1,), np.float32))
    with pytest.raises(IRError, match="conv.w"):
        prog.verify()


def test_unparseable_text_is_an_ir_error() -> None:
    with pytest.raises(IRError, match="cannot parse"):
        parse_program("builtin.module { this is not IR }")
