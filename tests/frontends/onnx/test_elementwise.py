"""ONNX elementwise, activation, cast, logic and comparison decompositions against ONNX Runtime.

Each test builds a one-node model, imports it into graph-dialect core ops, runs the reference
interpreter and compares with onnxruntime on seeded random (never all-zero) inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ml_dtypes
import numpy as np
import onnx
import onnx.reference
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper

from portc.compiler.errors import PortcError
from portc.compiler.frontends.onnx.importer import import_onnx
from portc.dialects import dtypes
from portc.runtimes.reference.interpreter import run_program

RNG_SEED = 20241122


def make_model(op: str, inputs: Sequence[np.ndarray], opset: int = 18, n_out: int = 1,
               **attrs: Any) -> onnx.ModelProto:
    names = [f"x{i}" for i in range(len(inputs))]
    node = helper.make_node(op, names, [f"y{i}" for i in range(n_out)], **attrs)
    vis = [helper.make_tensor_value_info(n, dtypes.from_numpy(a.dtype).onnx, a.shape)
           for n, a in zip(names, inputs, strict=True)]
    outs = [onnx.ValueInfoProto(name=f"y{i}") for i in range(n_out)]
    graph = helper.make_graph([node], "g", vis, outs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              ir_version=10)
    return onnx.shape_inference.infer_shapes(model)  # output types, as ONNX Runtime wants


def run_portc(model: onnx.ModelProto, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    res = import_onnx(model)
    feeds = {f"x{i}": a for i, a in enumerate(inputs)}
    out = run_program(res.program, feeds)
    return [out[o.name] for o in model.graph.output]


def run_ort(model: onnx.ModelProto, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {f"x{i}": a for i, a in enumerate(inputs)})


def run_onnx_reference(model: onnx.ModelProto, inputs: Sequence[np.ndarray]
                       ) -> list[np.ndarray]:
    """ONNX's own evaluator: the oracle for dtypes onnxruntime cannot hand to numpy."""
    feeds = {f"x{i}": a for i, a in enumerate(inputs)}
    return list(onnx.reference.ReferenceEvaluator(model).run(None, feeds))


def check(op: str, inputs: Sequence[np.ndarray], opset: int = 18, rtol: float = 1e-5,
          atol: float = 1e-6, oracle: str = "ort", **attrs: Any) -> None:
    model = make_model(op, inputs, opset, **attrs)
    got = run_portc(model, inputs)
    want = run_ort(model, inputs) if oracle == "ort" else run_onnx_reference(model, inputs)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype, f"{op}: dtype {g.dtype}, onnxruntime {w.dtype}"
        assert g.shape == w.shape
        if g.dtype.kind == "f" or g.dtype.itemsize <= 2 and g.dtype.kind not in "iub":
            np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), rtol=rtol,
                                       atol=atol, equal_nan=True, err_msg=op)
        else:
            np.testing.assert_array_equal(g, w, err_msg=op)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(RNG_SEED)


def randf(rng: np.random.Generator, shape: Sequence[int], lo: float = -3, hi: float = 3,
          dtype: Any = np.float32) -> np.ndarray:
    return rng.uniform(lo, hi, shape).astype(dtype)


def randi(rng: np.random.Generator, shape: Sequence[int], lo: int, hi: int,
          dtype: Any) -> np.ndarray:
    a = rng.integers(lo, hi, shape).astype(dtype)
    a.flat[0] = hi - 1  # never all zero
    return a


# ------------------------------------------------------------------------------ unary

#: op -> (low, high) of the input range inside the op's domain
UNARY_FLOAT_RANGES: dict[str, tuple[float, float]] = {
    "Abs": (-3, 3), "Neg": (-3, 3), "Exp": (-5, 5), "Log": (0.1, 5), "Sqrt": (0.1, 5),
    "Reciprocal": (0.5, 4), "Sin": (-3, 3), "Cos": (-3, 3), "Tan": (-1.2, 1.2),
    "Asin": (-0.99, 0.99), "Acos": (-0.99, 0.99), "Atan": (-3, 3), "Sinh": (-3, 3),
    "Cosh": (-3, 3), "Tanh": (-3, 3), "Asinh": (-3, 3), "Acosh": (1.01, 5),
    "Atanh": (-0.99, 0.99), "Erf": (-3, 3), "Sigmoid": (-8, 8), "Relu": (-3, 3),
    "Floor": (-3, 3), "Ceil": (-3, 3), "Sign": (-3, 3), "Softplus": (-10, 10),
    "Softsign": (-5, 5), "HardSwish": (-5, 5), "Mish": (-5, 5), "Round": (-3, 3),
}


@pytest.mark.parametrize("op", sorted(UNARY_FLOAT_RANGES))
def test_float_unary_matches_onnxruntime(op: str, rng: np.random.Generator) -> None:
    lo, hi = UNARY_FLOAT_RANGES[op]
    check(op, [randf(rng, (3, 5), lo, hi)])


def test_round_is_half_to_even() -> None:
    x = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 0.49999997], np.float32)
    check("Round", [x])
    got = run_portc(make_model("Round", [x]), [x])[0]
    np.testing.assert_array_equal(got, [-2, -2, -0, 0, 2, 2, 4, 0])


@pytest.mark.parametrize("dt", [np.int8, np.int32, np.int64])
def test_integer_abs_neg_sign_relu_keep_dtype(dt: Any, rng: np.random.Generator) -> None:
    x = randi(rng, (4, 4), -100, 100, dt)
    for op in ("Abs", "Neg", "Sign") + (("Relu",) if dt != np.int64 else ()):
        check(op, [x], opset=14)


def test_not_and_bitwise_not(rng: np.random.Generator) -> None:
    check("Not", [rng.random((3, 4)) > 0.5])
    check("BitwiseNot", [randi(rng, (3, 4), -1000, 1000, np.int32)])
    check("BitwiseNot", [randi(rng, (3, 4), 0, 255, np.uint8)])


def test_isnan_and_isinf_honour_sign_attributes() -> None:
    x = np.array([1.0, np.nan, np.inf, -np.inf, -2.0, 0.5], np.float32)
    check("IsNaN", [x])
    for pos in (0, 1):
        for neg in (0, 1):
            check("IsInf", [x], detect_positive=pos, detect_negative=neg)


# ------------------------------------------------------------------------------ binary

ARITH = ("Add", "Sub", "Mul", "Div")


@pytest.mark.parametrize("op", ARITH)
@pytest.mark.parametrize("dt", [np.float32, np.float64, np.float16])
def test_float_arithmetic_broadcasts(op: str, dt: Any, rng: np.random.Generator) -> None:
    a, b = randf(rng, (2, 3, 4), dtype=dt), randf(rng, (3, 1), 0.5, 3, dtype=dt)
    check(op, [a, b], opset=14, rtol=1e-3 if dt == np.float16 else 1e-6)


@pytest.mark.parametrize("op", ARITH)
@pytest.mark.parametrize("dt", [np.int8, np.int32, np.int64, np.uint8, np.uint32])
def test_integer_arithmetic_wraps_like_onnxruntime(op: str, dt: Any,
                                                   rng: np.random.Generator) -> None:
    lo = 0 if np.dtype(dt).kind == "u" else -100
    a = randi(rng, (4, 5), lo, 100, dt)
    b = randi(rng, (5,), max(lo, 1), 20, dt)
    if np.dtype(dt).kind == "i":
        b[::2] = -b[::2]  # negative divisors
    check(op, [a, b], opset=14)


def test_integer_div_truncates_toward_zero() -> None:
    a = np.array([7, -7, 7, -7, 1, -1], np.int32)
    b = np.array([2, 2, -2, -2, 3, 3], np.int32)
    check("Div", [a, b], opset=14)
    got = run_portc(make_model("Div", [a, b], 14), [a, b])[0]
    np.testing.assert_array_equal(got, [3, -3, -3, 3, 0, 0])


@pytest.mark.parametrize("dt", [np.int32, np.int64, np.int8])
def test_mod_without_fmod_follows_divisor_sign(dt: Any) -> None:
    a = np.array([5, -5, 5, -5, 7, -9], dt)
    b = np.array([3, 3, -3, -3, 7, 4], dt)
    check("Mod", [a, b], opset=13)
    got = run_portc(make_model("Mod", [a, b], 13), [a, b])[0]
    np.testing.assert_array_equal(got, [2, 1, -1, -2, 0, 3])


@pytest.mark.parametrize("dt", [np.float32, np.int32])
def test_mod_with_fmod_follows_dividend_sign(dt: Any, rng: np.random.Generator) -> None:
    a = np.array([5.5, -5.5, 5.5, -5.5, 7, -9], dt)
    b = np.array([3, 3, -3, -3, 2, 4], dt)
    check("Mod", [a, b], opset=13, fmod=1)


@pytest.mark.parametrize(("base_dt", "exp_dt"), [
    (np.float32, np.float32), (np.float32, np.int64), (np.float32, np.int32),
    (np.int32, np.int32), (np.int64, np.float32), (np.float64, np.float32),
])
def test_pow_casts_exponent_to_base_dtype(base_dt: Any, exp_dt: Any,
                                          rng: np.random.Generator) -> None:
    base = (randf(rng, (3, 4), 0.5, 3) if np.dtype(base_dt).kind == "f"
            else randi(rng, (3, 4), 1, 6, np.int64)).astype(base_dt)
    exp = np.array([2, 3, 0, 1], exp_dt)
    check("Pow", [base, exp], opset=15, rtol=1e-5)


@pytest.mark.parametrize("op", ["Max", "Min", "Sum", "Mean"])
def test_variadic_ops_broadcast_all_inputs(op: str, rng: np.random.Generator) -> None:
    xs = [randf(rng, (2, 1, 4)), randf(rng, (3, 1)), randf(rng, (4,))]
    check(op, xs, opset=13)
    check(op, xs[:1], opset=13)


def test_integer_max_min(rng: np.random.Generator) -> None:
    xs = [randi(rng, (3, 4), -50, 50, np.int32), randi(rng, (4,), -50, 50, np.int32)]
    check("Max", xs, opset=13)
    check("Min", xs, opset=13)


@pytest.mark.parametrize("op", ["Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual"])
@pytest.mark.parametrize("dt", [np.float32, np.int32, np.uint8])
def test_comparisons_give_bool(op: str, dt: Any, rng: np.random.Generator) -> None:
    a = randi(rng, (3, 4), 0, 5, np.int64).astype(dt)
    b = randi(rng, (4,), 0, 5, np.int64).astype(dt)
    check(op, [a, b], opset=16)


@pytest.mark.parametrize("op", ["And", "Or", "Xor"])
def test_logic_ops(op: str, rng: np.random.Generator) -> None:
    check(op, [rng.random((2, 3, 4)) > 0.5, rng.random((3, 1)) > 0.5])


@pytest.mark.parametrize("op", ["BitwiseAnd", "BitwiseOr", "BitwiseXor"])
@pytest.mark.parametrize("dt", [np.int32, np.uint8, np.int64])
def test_bitwise_ops(op: str, dt: Any, rng: np.random.Generator) -> None:
    lo = 0 if np.dtype(dt).kind == "u" else -1000
    hi = 255 if dt == np.uint8 else 1000
    check(op, [randi(rng, (3, 4), lo, hi, dt), randi(rng, (4,), lo, hi, dt)])


@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
@pytest.mark.parametrize("dt", [np.uint8, np.uint32, np.uint64])
def test_bitshift(direction: str, dt: Any, rng: np.random.Generator) -> None:
    x = randi(rng, (3, 4), 1, 200, dt)
    s = np.array([0, 1, 3, 7], dt)
    check("BitShift", [x, s], opset=11, direction=direction)


def test_where_broadcasts_three_ways(rng: np.random.Generator) -> None:
    check("Where", [rng.random((3, 1)) > 0.5, randf(rng, (1, 4)), randf(rng, (3, 4))], opset=16)
    check("Where", [rng.random((4,)) > 0.5, randi(rng, (3, 4), -9, 9, np.int64),
                    randi(rng, (4,), -9, 9, np.int64)], opset=16)


# ------------------------------------------------------------------------------ cast

CAST_TARGETS = [T.FLOAT16, T.DOUBLE, T.BFLOAT16, T.INT8, T.INT32, T.INT64, T.UINT8, T.BOOL,
                T.FLOAT8E4M3FN, T.FLOAT8E5M2, T.INT4, T.UINT4, T.FLOAT4E2M1]
#: targets onnxruntime cannot return to numpy: checked against ONNX's reference evaluator
NARROW_TARGETS = {T.BFLOAT16, T.FLOAT8E4M3FN, T.FLOAT8E5M2, T.INT4, T.UINT4, T.FLOAT4E2M1}


@pytest.mark.parametrize("to", CAST_TARGETS, ids=[T.DataType.Name(t) for t in CAST_TARGETS])
def test_cast_from_float32(to: int, rng: np.random.Generator) -> None:
    x = randf(rng, (4, 6), -7, 7)
    x[0, :3] = [0.5, 1.5, -2.5]  # ties round to even in float targets, truncate in int ones
    check("Cast", [x], opset=23, oracle="ref" if to in NARROW_TARGETS else "ort", to=to)


@pytest.mark.parametrize("src", [np.int32, np.int8, np.uint8, np.int64, np.float16, np.bool_])
@pytest.mark.parametrize("to", [T.FLOAT, T.INT16, T.UINT16, T.INT64])
def test_cast_between_numeric_types(src: Any, to: int, rng: np.random.Generator) -> None:
    x = randi(rng, (3, 5), -100, 100, np.int64).astype(src)
    check("Cast", [x], opset=21, to=to)


@pytest.mark.parametrize("to", [T.FLOAT8E4M3FN, T.FLOAT8E4M3FNUZ, T.FLOAT8E5M2, T.FLOAT8E5M2FNUZ])
@pytest.mark.parametrize("saturate", [0, 1])
def test_cast_to_float8_saturates_only_when_asked(to: int, saturate: int) -> None:
    x = np.array([1e6, -1e6, 500.0, np.inf, -np.inf, np.nan, 0.3, -3.14159, 1e-9], np.float32)
    check("Cast", [x], opset=21, oracle="ref", to=to, saturate=saturate)


def test_cast_float_to_uint4_wraps_like_onnx_reference() -> None:
    x = np.arange(-9, 11, dtype=np.float32)
    model = make_model("Cast", [x], opset=21, to=T.UINT4)
    got = run_portc(model, [x])[0]
    assert got.dtype == ml_dtypes.uint4
    np.testing.assert_array_equal(got.astype(np.int64), np.mod(np.arange(-9, 11), 16))


@pytest.mark.parametrize("like", [np.float16, np.int32, np.float64])
def test_castlike_takes_the_second_inputs_dtype(like: Any, rng: np.random.Generator) -> None:
    check("CastLike", [randf(rng, (3, 4), -50, 50), np.ones((1,), like)], opset=21)


def test_cast_to_string_fails_with_a_clear_error() -> None:
    x = np.ones((2,), np.float32)
    with pytest.raises(PortcError, match="strings are not supported"):
        import_onnx(make_model("Cast", [x], opset=21, to=T.STRING))


# ------------------------------------------------------------------------------ clip


def test_clip_with_min_max_inputs(rng: np.random.Generator) -> None:
    x = randf(rng, (3, 4), -5, 5)
    check("Clip", [x, np.array(-1.0, np.float32), np.array(2.0, np.float32)], opset=13)
    check("Clip", [x, np.array(-1.0, np.float32)], opset=13)
    check("Clip", [randi(rng, (3, 4), -9, 9, np.int8), np.array(-2, np.int8),
                   np.array(3, np.int8)], opset=13)


def test_clip_with_min_above_max_gives_max(rng: np.random.Generator) -> None:
    x = randf(rng, (3, 4), -5, 5)
    check("Clip", [x, np.array(2.0, np.float32), np.array(1.0, np.float32)], opset=13)


def test_clip_reads_bounds_from_attributes_before_opset_11(rng: np.random.Generator) -> None:
    check("Clip", [randf(rng, (3, 4), -5, 5)], opset=6, min=-0.5, max=1.5)


# ------------------------------------------------------------------------------ activations

#: (op, attributes, opset)
ACTIVATIONS: list[tuple[str, dict[str, Any], int]] = [
    ("LeakyRelu", {}, 16), ("LeakyRelu", {"alpha": 0.2}, 16),
    ("Elu", {}, 18), ("Elu", {"alpha": 0.5}, 18),
    ("Selu", {}, 18), ("Selu", {"alpha": 2.0, "gamma": 3.0}, 18),
    ("Celu", {}, 18), ("Celu", {"alpha": 2.0}, 18),
    ("HardSigmoid", {}, 18), ("HardSigmoid", {"alpha": 0.5, "beta": 0.6}, 18),
    ("HardSwish", {}, 18), ("Softplus", {}, 18), ("Softsign", {}, 18), ("Mish", {}, 18),
    ("Gelu", {}, 20), ("Gelu", {"approximate": "tanh"}, 20),
    ("ThresholdedRelu", {}, 18), ("ThresholdedRelu", {"alpha": 0.5}, 18),
    ("Shrink", {}, 18), ("Shrink", {"lambd": 1.5, "bias": 0.5}, 18),
    ("Swish", {}, 24), ("Swish", {"alpha": 1.5}, 24),
]


@pytest.mark.parametrize(("op", "attrs", "opset"), ACTIVATIONS,
                         ids=[f"{o}-{a}" for o, a, _ in ACTIVATIONS])
def test_activation_matches_onnxruntime(op: str, attrs: dict[str, Any], opset: int,
                                        rng: np.random.Generator) -> None:
    check(op, [randf(rng, (4, 6), -4, 4)], opset=opset, **attrs)


@pytest.mark.parametrize("op", ["Elu", "Gelu", "Softplus", "Mish", "HardSwish"])
def test_half_precision_activations_round_once(op: str, rng: np.random.Generator) -> None:
    """16-bit activations compute in float32: within one ulp of the exactly rounded result."""
    x = randf(rng, (4, 8), -3, 3, np.float16)
    check(op, [x], opset=20, rtol=1e-3, atol=1e-3)


def test_prelu_broadcasts_slope(rng: np.random.Generator) -> None:
    check("PRelu", [randf(rng, (2, 3, 4)), randf(rng, (3, 1), 0.1, 0.5)], opset=16)
    check("PRelu", [randf(rng, (2, 3, 4)), np.array([0.25], np.float32)], opset=16)


def test_integer_shrink(rng: np.random.Generator) -> None:
    check("Shrink", [randi(rng, (3, 4), -9, 9, np.int32)], opset=18, lambd=2.0, bias=1.0)


# ------------------------------------------------------------------------------ softmax family


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_softmax_family_on_one_axis(op: str, axis: int, rng: np.random.Generator) -> None:
    check(op, [randf(rng, (2, 3, 4), -5, 5)], opset=13, axis=axis)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_softmax_family_before_opset_13_coerces_to_2d(op: str, axis: int,
                                                       rng: np.random.Generator) -> None:
    check(op, [randf(rng, (2, 3, 4), -5, 5)], opset=11, axis=axis)
    check(op, [randf(rng, (2, 3, 4), -5, 5)], opset=11)


def test_hardmax_picks_the_first_of_tied_maxima() -> None:
    x = np.array([[1, 3, 3, 0], [2, 2, 2, 2]], np.float32)
    check("Hardmax", [x], opset=13)


def test_log_softmax_stays_finite_for_tiny_probabilities() -> None:
    x = np.array([[0.0, 200.0, -200.0]], np.float32)
    got = run_portc(make_model("LogSoftmax", [x], 13), [x])[0]
    assert np.all(np.isfinite(got))
    check("LogSoftmax", [x], opset=13)


def test_signed_shifts_past_the_width_give_zero_or_the_sign_fill() -> None:
    """ONNX (opset 28 cases): arithmetic right shift for signed types; a shift amount >= the
    width, or negative, empties the value to 0 (left) or the sign fill (right)."""
    x = np.array([-8, 4, -1, -128, 64], np.int8)
    s = np.array([8, 9, -1, 1, 1], np.int8)
    right = run_portc(make_model("BitShift", [x, s], 18, direction="RIGHT"), [x, s])[0]
    left = run_portc(make_model("BitShift", [x, s], 18, direction="LEFT"), [x, s])[0]
    np.testing.assert_array_equal(right, [-1, 0, -1, -64, 32])
    np.testing.assert_array_equal(left, [0, 0, 0, 0, -128])


def test_unsigned_shrink_never_takes_the_negative_branch(rng: np.random.Generator) -> None:
    check("Shrink", [randi(rng, (3, 4), 0, 9, np.uint8)], opset=18, lambd=2.0, bias=1.0)
