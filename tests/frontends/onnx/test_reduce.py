"""ONNX reduction, arg-reduction and scan decompositions against ONNX Runtime.

Each test builds a one-node model, imports it into graph-dialect core ops, runs the reference
interpreter and compares with onnxruntime on seeded random (never all-zero) inputs. Axes fed as
inputs are initializers, as exported models have them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from portc.compiler.errors import PortcError
from portc.compiler.frontends.onnx.importer import import_onnx
from portc.dialects import dtypes
from portc.runtimes.reference.interpreter import run_program

RNG_SEED = 7

REDUCE_OPS = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
              "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"]


def make_model(op: str, x: np.ndarray, opset: int, second: np.ndarray | None = None,
               **attrs: Any) -> onnx.ModelProto:
    """One node ``op(x[, second])``; ``second`` (axes) is an initializer."""
    inputs = ["x"]
    inits = []
    if second is not None:
        inputs.append("k")
        inits.append(numpy_helper.from_array(second, "k"))
    node = helper.make_node(op, inputs, ["y"], **attrs)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", dtypes.from_numpy(x.dtype).onnx,
                                                    x.shape)],
        [onnx.ValueInfoProto(name="y")], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              ir_version=10)
    return onnx.shape_inference.infer_shapes(model)


def run_both(model: onnx.ModelProto, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    got = run_program(import_onnx(model).program, {"x": x})["y"]
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return got, sess.run(None, {"x": x})[0]


def check(op: str, x: np.ndarray, opset: int = 18, second: np.ndarray | None = None,
          rtol: float = 1e-5, **attrs: Any) -> None:
    got, want = run_both(make_model(op, x, opset, second, **attrs), x)
    assert got.dtype == want.dtype and got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-6, err_msg=op)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(RNG_SEED)


def randx(rng: np.random.Generator, shape: Sequence[int] = (2, 3, 4)) -> np.ndarray:
    return rng.uniform(0.2, 2.0, shape).astype(np.float32) * rng.choice([-1, 1], shape).astype(
        np.float32)


def positive(rng: np.random.Generator, shape: Sequence[int] = (2, 3, 4)) -> np.ndarray:
    return rng.uniform(0.2, 2.0, shape).astype(np.float32)


def _input_for(op: str, rng: np.random.Generator) -> np.ndarray:
    return positive(rng) if op == "ReduceLogSum" else randx(rng)


AXES_CASES: list[tuple[list[int], int]] = [([1], 1), ([1], 0), ([0, 2], 1), ([-1], 0),
                                           ([-3, -1], 1)]


@pytest.mark.parametrize("op", REDUCE_OPS)
@pytest.mark.parametrize(("axes", "keepdims"), AXES_CASES)
def test_reduce_with_axes_input(op: str, axes: list[int], keepdims: int,
                                rng: np.random.Generator) -> None:
    check(op, _input_for(op, rng), 18, np.array(axes, np.int64), keepdims=keepdims)


@pytest.mark.parametrize("op", REDUCE_OPS)
@pytest.mark.parametrize(("axes", "keepdims"), AXES_CASES[:3])
def test_reduce_with_axes_attribute_before_opset_18(op: str, axes: list[int], keepdims: int,
                                                    rng: np.random.Generator) -> None:
    opset = 11 if op == "ReduceSum" else 13
    check(op, _input_for(op, rng), opset, axes=axes, keepdims=keepdims)


@pytest.mark.parametrize("op", REDUCE_OPS)
@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_without_axes_reduces_everything(op: str, keepdims: int,
                                                rng: np.random.Generator) -> None:
    check(op, _input_for(op, rng), 18, keepdims=keepdims)


@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce_with_empty_axes_and_noop_flag_keeps_the_shape(op: str,
                                                              rng: np.random.Generator) -> None:
    check(op, _input_for(op, rng), 18, np.array([], np.int64), noop_with_empty_axes=1)


def test_reduce_sum_takes_axes_input_from_opset_13(rng: np.random.Generator) -> None:
    check("ReduceSum", randx(rng), 13, np.array([0, 2], np.int64), keepdims=0)


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd"])
@pytest.mark.parametrize("dt", [np.int32, np.int64])
def test_integer_reductions_are_exact(op: str, dt: Any, rng: np.random.Generator) -> None:
    x = rng.integers(-9, 10, (3, 4, 2)).astype(dt)
    x.flat[0] = 5
    check(op, x, 18, np.array([1], np.int64))


def test_reduce_log_sum_exp_does_not_overflow() -> None:
    x = np.array([[1000.0, 999.0, -np.inf], [-np.inf, -np.inf, 3.0]], np.float32)
    check("ReduceLogSumExp", x, 18, np.array([1], np.int64))


def test_reduce_of_an_empty_axis_gives_the_identity() -> None:
    x = np.zeros((2, 0, 3), np.float32)
    for op, want in [("ReduceSum", 0.0), ("ReduceProd", 1.0), ("ReduceMax", -np.inf),
                     ("ReduceMin", np.inf)]:
        got = run_program(import_onnx(make_model(op, x, 18, np.array([1], np.int64))).program,
                          {"x": x})["y"]
        np.testing.assert_array_equal(got, np.full((2, 1, 3), want, np.float32))


def test_reduce_rejects_an_out_of_range_axis(rng: np.random.Generator) -> None:
    with pytest.raises(PortcError, match="out of range"):
        import_onnx(make_model("ReduceSum", randx(rng), 18, np.array([3], np.int64)))


# ------------------------------------------------------------------------------ arg reduce


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("last", [0, 1])
def test_arg_reduce_with_ties(op: str, axis: int, keepdims: int, last: int,
                              rng: np.random.Generator) -> None:
    x = rng.integers(-2, 3, (3, 4, 5)).astype(np.float32)  # many ties
    x.flat[0] = 7
    got, want = run_both(make_model(op, x, 13, axis=axis, keepdims=keepdims,
                                    select_last_index=last), x)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------------------------ scans


@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("dt", [np.float32, np.int32])
def test_cumsum(exclusive: int, reverse: int, axis: int, dt: Any,
                rng: np.random.Generator) -> None:
    x = (randx(rng, (3, 5)) * 4).astype(dt)
    x.flat[0] = 3
    check("CumSum", x, 14, np.array(axis, np.int64), exclusive=exclusive, reverse=reverse)


def _np_cumprod(x: np.ndarray, axis: int, exclusive: int, reverse: int) -> np.ndarray:
    if reverse:
        x = np.flip(x, axis)
    r = np.cumprod(x, axis=axis, dtype=x.dtype)
    if exclusive:
        r = np.concatenate([np.ones_like(np.take(r, [0], axis)),
                            np.take(r, range(x.shape[axis] - 1), axis)], axis)
    return np.flip(r, axis) if reverse else r


@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("dt", [np.float64, np.int32])
def test_cumprod_scan_matches_sequential_product(exclusive: int, reverse: int, axis: int,
                                                 dt: Any, rng: np.random.Generator) -> None:
    """onnxruntime has no CumProd yet (opset 26): numpy's sequential product is the oracle."""
    x = rng.uniform(-2, 2, (3, 7)).astype(dt) if dt == np.float64 else \
        rng.integers(-3, 4, (3, 7)).astype(dt)
    x.flat[0] = 2
    model = make_model("CumProd", x, 26, np.array(axis, np.int64), exclusive=exclusive,
                       reverse=reverse)
    got = run_program(import_onnx(model).program, {"x": x})["y"]
    want = _np_cumprod(x, axis % 2, exclusive, reverse)
    assert got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_cumprod_int_wraps_like_a_sequential_product() -> None:
    x = np.array([1000, 1000, 1000, -7, 3], np.int32)
    model = make_model("CumProd", x, 26, np.array(0, np.int64))
    got = run_program(import_onnx(model).program, {"x": x})["y"]
    np.testing.assert_array_equal(got, np.cumprod(x, dtype=np.int32))


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceL2", "ReduceLogSumExp"])
def test_float16_reductions_do_not_overflow_in_intermediates(op: str) -> None:
    """Squares of 400 and sums of 200 x 400 overflow float16 (max 65504); the results do not."""
    x = np.full((2, 200), 400.0, np.float16)
    got, want = run_both(make_model(op, x, 18, np.array([1], np.int64)), x)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=2e-3)
