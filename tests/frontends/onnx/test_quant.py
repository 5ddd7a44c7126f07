"""ONNX quantization decompositions against ONNX Runtime, compared exactly.

Quantized outputs are integers (or float8 codes), so portc must match ORT bit for bit: round
half-to-even ties, saturation at the type's range, per-axis and blocked scales, and exact int32
accumulation in MatMulInteger/ConvInteger/QLinear*. Inputs are seeded random, with some values
placed exactly on .5 rounding ties.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from portc.compiler.frontends.onnx.importer import import_onnx
from portc.dialects import dtypes
from portc.runtimes.reference.interpreter import run_program

SEED = 7


def model(op: str, inputs: Mapping[str, np.ndarray], consts: Mapping[str, np.ndarray],
          order: Sequence[str], n_out: int = 1, opset: int = 21, **attrs: Any
          ) -> onnx.ModelProto:
    node = helper.make_node(op, list(order), [f"y{i}" for i in range(n_out)], **attrs)
    vis = [helper.make_tensor_value_info(n, dtypes.from_numpy(a.dtype).onnx, a.shape)
           for n, a in inputs.items()]
    inits = [numpy_helper.from_array(np.asarray(a), n) for n, a in consts.items()]
    outs = [onnx.ValueInfoProto(name=f"y{i}") for i in range(n_out)]
    g = helper.make_graph([node], "g", vis, outs, initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def check(m: onnx.ModelProto, inputs: Mapping[str, np.ndarray], oracle: str = "ort"
          ) -> list[np.ndarray]:
    """Exact comparison with ORT, or with ONNX's reference evaluator for 4-bit types, which
    ORT's Python API cannot pass as numpy arrays."""
    got = run_program(import_onnx(m).program, dict(inputs))
    if oracle == "ort":
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        want = sess.run(None, dict(inputs))
    else:
        want = ReferenceEvaluator(m).run(None, dict(inputs))
    outs = [got[o.name] for o in m.graph.output]
    for w, o in zip(want, outs, strict=True):
        assert o.shape == w.shape
        if o.dtype.kind == "V" or w.dtype != o.dtype:  # ORT hands float8 back as raw bytes
            assert o.dtype.itemsize == w.dtype.itemsize == 1
            o, w = o.view(np.uint8), w.view(np.uint8)
        np.testing.assert_array_equal(o, w)
    return outs


def with_ties(shape: Sequence[int], scale: float, seed: int = SEED) -> np.ndarray:
    """Random floats, a quarter of them exactly on a half-step of ``scale`` (rounding ties),
    and some far outside any quantized range (saturation)."""
    r = np.random.default_rng(seed)
    x = r.standard_normal(shape) * 60 * scale
    ties = (r.integers(-300, 300, size=shape) + 0.5) * scale
    pick = r.random(shape)
    x = np.where(pick < 0.25, ties, x)
    x = np.where(pick > 0.95, 1e4 * scale * np.sign(x), x)
    return x.astype(np.float32)


ZP = {"uint8": 37, "int8": -5, "uint16": 1000, "int16": -300, "uint4": 3, "int4": -2}


@pytest.mark.parametrize("qt", list(ZP))
def test_quantize_per_tensor_rounds_ties_to_even_and_saturates(qt: str) -> None:
    x = with_ties((4, 6), 0.25)
    zp = np.array(ZP[qt], dtype=dtypes.dtype(qt).numpy)
    m = model("QuantizeLinear", {"x": x}, {"s": np.array(0.25, np.float32), "z": zp},
              ["x", "s", "z"])
    check(m, {"x": x}, "ref" if "4" in qt else "ort")


def test_quantize_per_axis_int8() -> None:
    x = with_ties((2, 3, 4), 0.5)
    s = np.array([0.5, 0.25, 1.0], np.float32)
    z = np.array([-3, 0, 7], np.int8)
    check(model("QuantizeLinear", {"x": x}, {"s": s, "z": z}, ["x", "s", "z"], axis=1),
          {"x": x})


def test_quantize_blocked_with_partial_last_block() -> None:
    x = with_ties((3, 7), 0.5)
    s = np.array([[0.5, 0.25, 1.0]] * 3, np.float32)
    z = np.array([[1, -2, 3]] * 3, np.int8)
    check(model("QuantizeLinear", {"x": x}, {"s": s, "z": z}, ["x", "s", "z"], axis=1,
                block_size=3), {"x": x})


def test_quantize_without_zero_point_defaults_to_uint8() -> None:
    x = with_ties((5,), 0.125)
    check(model("QuantizeLinear", {"x": x}, {"s": np.array(0.125, np.float32)}, ["x", "s"]),
          {"x": x})


@pytest.mark.parametrize("saturate", [0, 1])
def test_quantize_float8_e4m3fn_saturate(saturate: int) -> None:
    x = with_ties((16,), 2.0)
    z = np.zeros((), ml_dtypes.float8_e4m3fn)
    m = model("QuantizeLinear", {"x": x}, {"s": np.array(2.0, np.float32), "z": z},
              ["x", "s", "z"], saturate=saturate)
    got = run_program(import_onnx(m).program, {"x": x})["y0"]
    if saturate:
        check(m, {"x": x})
    else:  # ORT's non-saturating path differs by build; pin the spec: overflow gives NaN
        big = np.abs(x / 2.0) > 464
        assert np.isnan(got.astype(np.float32)[big]).all()


@pytest.mark.parametrize("qt", ["uint8", "int8", "int16", "int4"])
def test_dequantize_per_tensor_is_exact(qt: str) -> None:
    lo, hi = (-8, 8) if qt == "int4" else (-100, 100) if qt != "uint8" else (0, 256)
    q = np.random.default_rng(1).integers(lo, hi, size=(3, 4)).astype(dtypes.dtype(qt).numpy)
    zp = np.array(ZP[qt], dtype=dtypes.dtype(qt).numpy)
    check(model("DequantizeLinear", {"q": q}, {"s": np.array(0.37, np.float32), "z": zp},
                ["q", "s", "z"]), {"q": q}, "ref" if qt == "int4" else "ort")


def test_dequantize_per_axis_and_blocked() -> None:
    q = np.random.default_rng(2).integers(-128, 128, size=(2, 6)).astype(np.int8)
    s = np.array([0.1, 0.3], np.float32)
    z = np.array([4, -9], np.int8)
    check(model("DequantizeLinear", {"q": q}, {"s": s, "z": z}, ["q", "s", "z"], axis=0),
          {"q": q})
    sb = np.array([[0.1, 0.2], [0.3, 0.5]], np.float32)
    zb = np.array([[1, 2], [3, -4]], np.int8)
    check(model("DequantizeLinear", {"q": q}, {"s": sb, "z": zb}, ["q", "s", "z"], axis=1,
                block_size=3), {"q": q})


def test_dequantize_int32_bias_without_zero_point() -> None:
    q = np.random.default_rng(3).integers(-(1 << 30), 1 << 30, size=(5,)).astype(np.int32)
    check(model("DequantizeLinear", {"q": q}, {"s": np.array(1e-3, np.float32)}, ["q", "s"]),
          {"q": q})


def test_dynamic_quantize_linear_matches_ort() -> None:
    x = (np.random.default_rng(4).standard_normal((3, 5)) * 3 + 1).astype(np.float32)
    check(model("DynamicQuantizeLinear", {"x": x}, {}, ["x"], n_out=3), {"x": x})


def _u8(shape: Sequence[int], seed: int, dt: Any = np.uint8) -> np.ndarray:
    info = np.iinfo(dt)
    return np.random.default_rng(seed).integers(info.min, info.max + 1, size=shape).astype(dt)


def test_matmul_integer_per_column_zero_point_and_batch() -> None:
    a, b = _u8((2, 4, 5), 1), _u8((5, 3), 2, np.int8)
    c = {"az": np.array(200, np.uint8), "bz": np.array([-1, 0, 5], np.int8)}
    check(model("MatMulInteger", {"a": a, "b": b}, c, ["a", "b", "az", "bz"]), {"a": a, "b": b})


def test_matmul_integer_per_row_zero_point_of_a() -> None:
    """The spec's per-row form (an M-vector); ORT accepts only scalars, so numpy is the oracle."""
    a, b = _u8((4, 5), 1), _u8((5, 3), 2)
    az = np.array([1, 200, 3, 128], np.uint8)
    m = model("MatMulInteger", {"a": a, "b": b}, {"az": az}, ["a", "b", "az"])
    got = run_program(import_onnx(m).program, {"a": a, "b": b})["y0"]
    want = (a.astype(np.int32) - az.astype(np.int32)[:, None]) @ b.astype(np.int32)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dt", [np.uint8, np.int8])
def test_qlinear_matmul_requantizes_exactly(dt: Any) -> None:
    a, b = _u8((2, 3, 8), 5, dt), _u8((8, 4), 6, dt)
    c = {"as": np.array(0.02, np.float32), "az": np.array(3, dt),
         "bs": np.array(0.015, np.float32), "bz": np.array(-2 if dt == np.int8 else 130, dt),
         "ys": np.array(0.5, np.float32), "yz": np.array(10, dt)}
    check(model("QLinearMatMul", {"a": a, "b": b}, c,
                ["a", "as", "az", "b", "bs", "bz", "ys", "yz"]), {"a": a, "b": b})


def test_conv_integer_pads_with_the_zero_point() -> None:
    x, w = _u8((1, 2, 5, 5), 7), _u8((3, 2, 3, 3), 8)
    c = {"w": w, "xz": np.array(120, np.uint8), "wz": np.array(128, np.uint8)}
    check(model("ConvInteger", {"x": x}, c, ["x", "w", "xz", "wz"], pads=[1, 0, 1, 2],
                strides=[2, 1]), {"x": x})


def test_qlinear_conv_per_channel_weights_bias_group_and_same_padding() -> None:
    """Checked against ONNX's reference evaluator: ORT's u8 x s8 convolution on x86 CPUs
    without VNNI (AVX2's vpmaddubsw) saturates pairwise int16 sums, and full-range random
    uint8/int8 operands like these reach 2 * 255 * 127 (ORT's documented reduce_range caveat),
    so ORT's answer depends on the machine's CPU while the spec's does not."""
    x = _u8((1, 4, 6, 5), 9)
    w = _u8((4, 2, 3, 3), 10, np.int8)
    c = {"xs": np.array(0.05, np.float32), "xz": np.array(100, np.uint8), "w": w,
         "ws": np.array([0.01, 0.02, 0.015, 0.03], np.float32),
         "wz": np.zeros(4, np.int8), "ys": np.array(0.7, np.float32),
         "yz": np.array(128, np.uint8),
         "b": np.random.default_rng(11).integers(-500, 500, size=4).astype(np.int32)}
    check(model("QLinearConv", {"x": x}, c, ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"],
                group=2, auto_pad="SAME_UPPER", strides=[2, 2]), {"x": x}, oracle="reference")
