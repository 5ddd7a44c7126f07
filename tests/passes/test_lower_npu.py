"""kernel IR -> npu lowering (``passes/lower_npu.py``): per-kernel-shape differential tests.

Each test builds the smallest ONNX graph that produces one kernel shape, compiles it for
``ascend`` (the shared graph-to-kernel lowering, then this lowering with the npu verifiers on),
runs the shipped ``program.npu.mlir`` on npusim (race, bounds and alignment checks on) and
compares with the kernel-IR numpy executor running the bundle's kernel IR on the same fresh
random inputs. Cube kernels round operands to fp16 (ATC's default precision mode), so their
tolerance is fp16's (rtol 1e-2 on unit-scale data); vector kernels compute in fp32.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from portc.compiler.api import import_model
from portc.compiler.errors import LoweringError
from portc.compiler.kernel_targets import HARDWARE_GRAPH_PIPELINE, KERNEL_IR_FILE, lower_for_target
from portc.compiler.pipeline import parse_pipeline, run_passes
from portc.compiler.program import parse_program
from portc.compiler.target_ascend import NpuSimExecutable, compile_ascend
from portc.compiler.targets import CompileOptions
from portc.dialects import npu
from portc.dialects.npu_soc import SOC_910B
from portc.passes.lower_npu import lower_kernel_module
from portc.runtimes.reference.kernel_ir import run_kernel_module

F = TensorProto.FLOAT


def _model(nodes: list, inputs: list, outputs: list, inits: list | None = None) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "t", inputs, outputs, initializer=inits or [])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _vi(name: str, shape: list[int], dt: int = F) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dt, shape)


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], precision: str = "fp16"
         ) -> tuple[dict, dict, dict, list[dict]]:
    """(npusim outputs, kernel-IR executor outputs, stats, launches)."""
    imp = import_model(model)
    run_passes(imp.program, parse_pipeline(HARDWARE_GRAPH_PIPELINE))
    art = compile_ascend(imp.program, CompileOptions({"precision": precision}))
    # the lowering's result passes the npu dialect's verifiers
    kp = lower_for_target(imp.program.clone())
    lower_kernel_module(kp.module, precision=precision, verify=True)
    got, stats = NpuSimExecutable(art).run(feeds)
    kir = parse_program(art.files[KERNEL_IR_FILE], art.weights)
    want = run_kernel_module(kir.module, art.weights, feeds)
    return got, want, stats, art.manifest["npu"]["launches"]


def _close(got: dict, want: dict, rtol: float, atol: float) -> None:
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=rtol, atol=atol, err_msg=name)


def _roles(launches: list[dict]) -> list[str]:
    return [la["role"] for la in launches]


def test_elementwise_chain_runs_on_the_vector_unit(rng: np.random.Generator) -> None:
    nodes = [helper.make_node("Add", ["x", "y"], ["a"]), helper.make_node("Exp", ["a"], ["b"]),
             helper.make_node("Sigmoid", ["b"], ["c"]), helper.make_node("Tanh", ["x"], ["d"]),
             helper.make_node("Mul", ["c", "d"], ["e"]), helper.make_node("Erf", ["e"], ["z"])]
    m = _model(nodes, [_vi("x", [5, 131]), _vi("y", [5, 131])], [_vi("z", [5, 131])])
    feeds = {"x": rng.standard_normal((5, 131), np.float32),
             "y": rng.standard_normal((5, 131), np.float32) * 0.5}
    got, want, _, launches = _run(m, feeds)
    assert set(_roles(launches)) == {"vector"}
    _close(got, want, 1e-5, 1e-6)


def test_erf_composition_error_is_below_5e_7(rng: np.random.Generator) -> None:
    from math import erf

    x = np.linspace(-4, 4, 4001, dtype=np.float32)
    m = _model([helper.make_node("Erf", ["x"], ["z"])], [_vi("x", [4001])], [_vi("z", [4001])])
    got, _, _, _ = _run(m, {"x": x})
    exact = np.array([erf(float(v)) for v in x])
    assert np.max(np.abs(got["z"] - exact)) < 5e-7


def test_broadcast_operands_along_rows_and_columns(rng: np.random.Generator) -> None:
    nodes = [helper.make_node("Add", ["x", "b"], ["a"]), helper.make_node("Mul", ["a", "c"], ["z"])]
    m = _model(nodes, [_vi("x", [6, 37]), _vi("b", [37]), _vi("c", [6, 1])], [_vi("z", [6, 37])])
    feeds = {"x": rng.standard_normal((6, 37), np.float32),
             "b": rng.standard_normal(37).astype(np.float32),
             "c": rng.standard_normal((6, 1)).astype(np.float32)}
    got, want, _, _ = _run(m, feeds)
    _close(got, want, 1e-6, 1e-6)


@pytest.mark.parametrize("op,axes", [("ReduceSum", [1]), ("ReduceSum", [0]), ("ReduceMax", [1]),
                                     ("ReduceMin", [0, 2]), ("ReduceProd", [2])])
def test_reductions_over_inner_and_outer_dims(rng: np.random.Generator, op: str,
                                              axes: list[int]) -> None:
    ax = helper.make_tensor("axes", TensorProto.INT64, [len(axes)], axes)
    node = helper.make_node(op, ["x", "axes"], ["z"], keepdims=0) if op == "ReduceSum" else \
        helper.make_node(op, ["x"], ["z"], axes=axes, keepdims=0)
    shape = [7, 300, 3]
    out = [d for i, d in enumerate(shape) if i not in axes]
    m = _model([node], [_vi("x", shape)], [_vi("z", out)], [ax] if op == "ReduceSum" else [])
    m.opset_import[0].version = 13 if op != "ReduceSum" else 17
    x = rng.uniform(0.9, 1.1, shape).astype(np.float32)
    got, want, _, launches = _run(m, {"x": x})
    assert "aicpu" not in _roles(launches)
    _close(got, want, 1e-5, 1e-6)


def test_softmax_rows(rng: np.random.Generator) -> None:
    m = _model([helper.make_node("Softmax", ["x"], ["z"], axis=-1)], [_vi("x", [3, 9, 70])],
               [_vi("z", [3, 9, 70])])
    got, want, _, launches = _run(m, {"x": rng.standard_normal((3, 9, 70), np.float32) * 3})
    assert "aicpu" not in _roles(launches)
    _close(got, want, 1e-5, 1e-7)


def test_layernorm(rng: np.random.Generator) -> None:
    g = helper.make_tensor("g", F, [96], rng.standard_normal(96).astype(np.float32))
    b = helper.make_tensor("b", F, [96], rng.standard_normal(96).astype(np.float32))
    m = _model([helper.make_node("LayerNormalization", ["x", "g", "b"], ["z"], axis=-1)],
               [_vi("x", [10, 96])], [_vi("z", [10, 96])], [g, b])
    got, want, _, launches = _run(m, {"x": rng.standard_normal((10, 96), np.float32)})
    assert "aicpu" not in _roles(launches)
    _close(got, want, 1e-4, 1e-5)


@pytest.mark.parametrize("precision,rtol", [("fp16", 1e-2), ("bf16", 1e-1)])
def test_matmul_on_the_cube_with_fp16_or_bf16_operands(rng: np.random.Generator, precision: str,
                                                       rtol: float) -> None:
    m = _model([helper.make_node("MatMul", ["a", "b"], ["z"])], [_vi("a", [33, 29]),
               _vi("b", [29, 47])], [_vi("z", [33, 47])])
    a = rng.standard_normal((33, 29), np.float32)
    b = rng.standard_normal((29, 47), np.float32)
    got, want, stats, launches = _run(m, {"a": a, "b": b}, precision)
    assert "gemm" in _roles(launches)
    _close(got, want, rtol, rtol)
    # the rounding is the cube dtype's: operands rounded once, fp32 accumulation
    dt = np.float16 if precision == "fp16" else ml_dtypes.bfloat16
    exact = a.astype(dt).astype(np.float64) @ b.astype(dt).astype(np.float64)
    np.testing.assert_allclose(got["z"], exact, rtol=1e-5, atol=1e-5)
    assert stats["cube_utilisation"] > 0


def test_batched_matmul_with_transposed_operand(rng: np.random.Generator) -> None:
    nodes = [helper.make_node("Transpose", ["bt"], ["b"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["a", "b"], ["z"])]
    m = _model(nodes, [_vi("a", [3, 17, 20]), _vi("bt", [3, 9, 20])], [_vi("z", [3, 17, 9])])
    feeds = {"a": rng.standard_normal((3, 17, 20), np.float32),
             "bt": rng.standard_normal((3, 9, 20), np.float32)}
    got, want, _, launches = _run(m, feeds)
    assert "gemm" in _roles(launches)
    _close(got, want, 1e-2, 1e-2)


def test_conv_as_explicit_im2col_gemm(rng: np.random.Generator) -> None:
    w = helper.make_tensor("w", F, [4, 3, 3, 3], rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
                           .ravel())
    m = _model([helper.make_node("Conv", ["x", "w"], ["z"], pads=[1, 1, 1, 1])],
               [_vi("x", [1, 3, 10, 10])], [_vi("z", [1, 4, 10, 10])], [w])
    got, want, _, launches = _run(m, {"x": rng.standard_normal((1, 3, 10, 10), np.float32)})
    assert "gemm" in _roles(launches)
    _close(got, want, 1e-2, 2e-2)


def test_maxpool_and_transpose(rng: np.random.Generator) -> None:
    nodes = [helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Transpose", ["p"], ["z"], perm=[0, 3, 2, 1])]
    m = _model(nodes, [_vi("x", [1, 5, 12, 16])], [_vi("z", [1, 8, 6, 5])])
    got, want, _, launches = _run(m, {"x": rng.standard_normal((1, 5, 12, 16), np.float32)})
    assert "aicpu" not in _roles(launches)
    _close(got, want, 0, 0)


def test_gather_rows_run_on_the_ai_core_with_scalar_index_reads(rng: np.random.Generator
                                                                ) -> None:
    """An embedding lookup: the scalar unit reads each int64 index (``npu.get_value``), wraps
    negative ones, and moves the row's DMA offset; no AI CPU launch."""
    table = helper.make_tensor("t", F, [50, 8], rng.standard_normal((50, 8)).astype(np.float32))
    m = _model([helper.make_node("Gather", ["t", "i"], ["g"]),
                helper.make_node("Relu", ["g"], ["z"])],
               [_vi("i", [6], TensorProto.INT64)], [_vi("z", [6, 8])], [table])
    feeds = {"i": rng.integers(-50, 50, 6).astype(np.int64)}
    got, want, stats, launches = _run(m, feeds)
    assert not stats["aicpu_launches"] and "aicpu" not in _roles(launches)
    _close(got, want, 0, 0)
    t = onnx.numpy_helper.to_array(table)
    np.testing.assert_array_equal(got["z"], np.maximum(t[feeds["i"]], 0))


@pytest.mark.parametrize("axis, data, idx", [(1, [3, 40, 5], [2, 3]), (0, [30, 70], [4])])
def test_gather_along_any_axis_with_nd_indices(rng: np.random.Generator, axis: int,
                                               data: list[int], idx: list[int]) -> None:
    m = _model([helper.make_node("Gather", ["x", "i"], ["z"], axis=axis)],
               [_vi("x", data), _vi("i", idx, TensorProto.INT32)],
               [_vi("z", data[:axis] + idx + data[axis + 1:])])
    feeds = {"x": rng.standard_normal(data).astype(np.float32),
             "i": rng.integers(-data[axis], data[axis], idx).astype(np.int32)}
    got, want, stats, _ = _run(m, feeds)
    assert not stats["aicpu_launches"]
    np.testing.assert_array_equal(got["z"], np.take(feeds["x"], feeds["i"], axis=axis))
    _close(got, want, 0, 0)


def test_gather_elements_reads_one_index_per_element(rng: np.random.Generator) -> None:
    """GatherElements: the index moves with every output element, so each element is a task
    of its own (scalar read + one-element DMA) -- slow but on the AI core."""
    m = _model([helper.make_node("GatherElements", ["x", "i"], ["z"], axis=1)],
               [_vi("x", [4, 9]), _vi("i", [4, 5], TensorProto.INT64)], [_vi("z", [4, 5])])
    feeds = {"x": rng.standard_normal((4, 9)).astype(np.float32),
             "i": rng.integers(-9, 9, (4, 5)).astype(np.int64)}
    got, want, stats, _ = _run(m, feeds)
    assert not stats["aicpu_launches"]
    np.testing.assert_array_equal(got["z"], np.take_along_axis(feeds["x"], feeds["i"] % 9,
                                                               axis=1))
    _close(got, want, 0, 0)


def _scatter_model(rows: int, cols: int, upd: int) -> onnx.ModelProto:
    return _model([helper.make_node("ScatterElements", ["x", "i", "u"], ["z"], axis=0)],
                  [_vi("x", [rows, cols]), _vi("i", [upd, cols], TensorProto.INT64),
                   _vi("u", [upd, cols])], [_vi("z", [rows, cols])])


def test_small_scatter_runs_on_one_scalar_core(rng: np.random.Generator) -> None:
    """Scatters write through run-time indices, so they run in order on one core's scalar
    unit (cores would race on colliding indices); the copy of x runs on the vector unit."""
    feeds = {"x": rng.standard_normal((6, 3)).astype(np.float32),
             "i": np.array([[0, 5, 2], [3, 1, 4]], np.int64),
             "u": rng.standard_normal((2, 3)).astype(np.float32)}
    got, want, stats, launches = _run(_scatter_model(6, 3, 2), feeds)
    scalar = [la for la in launches if la["role"] == "scalar"]
    assert len(scalar) == 1 and scalar[0]["block_dim"] == 1 and not stats["aicpu_launches"]
    ref = feeds["x"].copy()
    np.put_along_axis(ref, feeds["i"], feeds["u"], axis=0)
    np.testing.assert_array_equal(got["z"], ref)
    _close(got, want, 0, 0)


def test_large_scatter_stays_on_the_ai_cpu_with_both_reasons(rng: np.random.Generator) -> None:
    feeds = {"x": rng.standard_normal((200, 40)).astype(np.float32),
             "i": rng.permutation(200)[:150, None].repeat(40, 1).astype(np.int64),
             "u": rng.standard_normal((150, 40)).astype(np.float32)}
    got, want, stats, launches = _run(_scatter_model(200, 40, 150), feeds)
    cpu = [la for la in launches if la["core"] == "aicpu"]
    assert cpu and "scatter" in cpu[0]["reason"] and "too many" in cpu[0]["reason"]
    assert stats["aicpu_launches"]
    _close(got, want, 0, 0)


@pytest.mark.parametrize("op, dt, a, b", [
    ("Add", TensorProto.INT64, [2**62, -2**63, 7], [2**62, -1, -9]),  # 64-bit wrap
    ("Add", TensorProto.INT8, [100, -128, 5], [100, -1, -9]),  # int8 wrap
    ("Mul", TensorProto.UINT8, [200, 3, 255], [2, 7, 255]),
    ("Sub", TensorProto.INT16, [-32768, 5, 100], [1, 9, -32000]),
    ("Div", TensorProto.INT32, [-7, 7, -2**31], [2, -2, -1]),  # truncation, INT_MIN / -1
    ("Mod", TensorProto.INT32, [-7, 7, -8], [3, -3, 4]),  # the divisor's sign
    ("Max", TensorProto.INT64, [-2**40, 5, 0], [3, -(2**50), 0]),
])
def test_small_integer_arithmetic_runs_on_the_scalar_unit(op: str, dt: int, a: list[int],
                                                           b: list[int]) -> None:
    """int64/int16/int8/uint8 have no vector arithmetic; a few elements run on the scalar
    unit's 64-bit registers, wrapped to the dtype exactly like the kernel IR."""
    m = _model([helper.make_node(op, ["x", "y"], ["z"])], [_vi("x", [3], dt), _vi("y", [3], dt)],
               [_vi("z", [3], dt)])
    npdt = onnx.helper.tensor_dtype_to_np_dtype(dt)
    feeds = {"x": np.array(a).astype(npdt), "y": np.array(b).astype(npdt)}
    got, want, stats, launches = _run(m, feeds)
    assert [la["role"] for la in launches] == ["scalar"] and not stats["aicpu_launches"]
    np.testing.assert_array_equal(got["z"], want["z"])
    with np.errstate(over="ignore"):
        ref = {"Add": np.add, "Mul": np.multiply, "Sub": np.subtract, "Max": np.maximum,
               "Mod": np.mod, "Div": lambda p, q: (np.abs(p.astype(np.int64))
                                                    // np.abs(q.astype(np.int64))
                                                    * np.sign(p.astype(np.int64) * q)
                                                    ).astype(p.dtype)}[op](feeds["x"], feeds["y"])
    np.testing.assert_array_equal(got["z"], ref)


def test_attention_mask_cast_and_where_run_on_the_scalar_unit(rng: np.random.Generator) -> None:
    """The encoder's mask path: int64 mask -> bool -> where(mask, 0, -inf-ish) as float."""
    m = _model([helper.make_node("Cast", ["mask"], ["b"], to=TensorProto.BOOL),
                helper.make_node("Where", ["b", "zero", "big"], ["z"])],
               [_vi("mask", [2, 16], TensorProto.INT64)], [_vi("z", [2, 16])],
               [helper.make_tensor("zero", F, [], [0.0]),
                helper.make_tensor("big", F, [], [-3.4e38])])
    feeds = {"mask": rng.integers(0, 2, (2, 16)).astype(np.int64)}
    got, want, stats, launches = _run(m, feeds)
    assert not stats["aicpu_launches"]
    np.testing.assert_array_equal(got["z"], np.where(feeds["mask"] != 0, 0.0,
                                                     np.float32(-3.4e38)).astype(np.float32))
    _close(got, want, 0, 0)


@pytest.mark.parametrize("dt", [TensorProto.BFLOAT16, TensorProto.FLOAT16, F])
def test_where_over_a_bool_input_moves_floats_through_the_scalar_unit(
        rng: np.random.Generator, dt: int) -> None:
    m = _model([helper.make_node("Where", ["c", "x", "y"], ["z"])],
               [_vi("c", [3, 7], TensorProto.BOOL), _vi("x", [3, 7], dt), _vi("y", [3, 7], dt)],
               [_vi("z", [3, 7], dt)])
    npdt = onnx.helper.tensor_dtype_to_np_dtype(dt)
    feeds = {"c": rng.integers(0, 2, (3, 7)).astype(bool),
             "x": rng.standard_normal((3, 7)).astype(npdt),
             "y": rng.standard_normal((3, 7)).astype(npdt)}
    got, want, stats, launches = _run(m, feeds)
    assert "scalar" in _roles(launches) and not stats["aicpu_launches"]
    np.testing.assert_array_equal(got["z"], np.where(feeds["c"], feeds["x"], feeds["y"]))
    _close(got, want, 0, 0)


def test_large_int64_arithmetic_goes_to_the_ai_cpu() -> None:
    i64 = TensorProto.INT64
    m = _model([helper.make_node("Add", ["x", "y"], ["z"])],
               [_vi("x", [5000], i64), _vi("y", [5000], i64)], [_vi("z", [5000], i64)])
    feeds = {"x": np.arange(5000, dtype=np.int64) * 2**40, "y": np.arange(5000, dtype=np.int64)}
    got, want, stats, launches = _run(m, feeds)
    assert [la["core"] for la in launches] == ["aicpu"]
    assert "int64" in launches[0]["reason"]
    # leaving the AI core costs the modelled AI CPU dispatch plus its per-element loop
    assert stats["total_cycles"] == SOC_910B.aicpu_launch_cycles \
        + 5000 * SOC_910B.aicpu_cycles_per_element
    np.testing.assert_array_equal(got["z"], feeds["x"] + feeds["y"])


@pytest.mark.parametrize("c", [0.75, 3.0, -2.0, 0.5, -1.5])
def test_pow_with_a_constant_exponent_runs_on_the_vector_unit(rng: np.random.Generator,
                                                              c: float) -> None:
    """Integer exponents by multiplication (negative bases keep numpy's signs), the rest by
    exp(c ln x) (NaN for negative bases, as numpy)."""
    e = helper.make_tensor("e", F, [], [c])
    m = _model([helper.make_node("Pow", ["x", "e"], ["z"])], [_vi("x", [4, 300])],
               [_vi("z", [4, 300])], [e])
    x = rng.uniform(0.2, 4, (4, 300)).astype(np.float32)
    x[0] = -x[0]
    got, want, stats, _ = _run(m, {"x": x})
    assert not stats["aicpu_launches"]
    with np.errstate(invalid="ignore"):
        ref = np.power(x.astype(np.float64), c)
    np.testing.assert_allclose(got["z"], ref, rtol=2e-6, atol=0, equal_nan=True)
    _close(got, want, 2e-6, 0)


def test_lrn_runs_on_the_ai_core(rng: np.random.Generator) -> None:
    m = _model([helper.make_node("LRN", ["x"], ["z"], size=5, alpha=1e-4, beta=0.75, bias=1.0)],
               [_vi("x", [1, 8, 6, 6])], [_vi("z", [1, 8, 6, 6])])
    got, want, stats, _ = _run(m, {"x": rng.standard_normal((1, 8, 6, 6)).astype(np.float32)})
    assert not stats["aicpu_launches"]
    _close(got, want, 1e-5, 1e-6)


def test_fp16_model_loads_and_stores_through_casts(rng: np.random.Generator) -> None:
    H = TensorProto.FLOAT16
    m = _model([helper.make_node("Mul", ["x", "y"], ["a"]), helper.make_node("Relu", ["a"], ["z"])],
               [_vi("x", [4, 100], H), _vi("y", [4, 100], H)], [_vi("z", [4, 100], H)])
    feeds = {"x": rng.standard_normal((4, 100)).astype(np.float16),
             "y": rng.standard_normal((4, 100)).astype(np.float16)}
    got, want, _, launches = _run(m, feeds)
    assert "aicpu" not in _roles(launches)
    _close(got, want, 1e-3, 1e-3)


def test_unknown_precision_is_a_lowering_error() -> None:
    m = _model([helper.make_node("Relu", ["x"], ["z"])], [_vi("x", [4])], [_vi("z", [4])])
    imp = import_model(m)
    kp = lower_for_target(imp.program)
    with pytest.raises(LoweringError, match="precision 'fp8'"):
        lower_kernel_module(kp.module, precision="fp8")


def test_program_text_is_the_npu_dialect_and_has_derived_flags(rng: np.random.Generator) -> None:
    m = _model([helper.make_node("Relu", ["x"], ["z"])], [_vi("x", [64, 1000])],
               [_vi("z", [64, 1000])])
    imp = import_model(m)
    kp = lower_for_target(imp.program)
    prog = lower_kernel_module(kp.module, verify=True)
    text = prog.text()
    assert '"npu.kernel"' in text and '"npu.set_flag"' in text and '"npu.vrelu"' in text
    kern = next(o for o in prog.module.walk() if isinstance(o, npu.KernelOp))
    assert kern.core.data == "aiv" and kern.block_dim.value.data == 48


def test_short_softmax_rows_reduce_one_row_per_repeat(rng: np.random.Generator) -> None:
    """Rows of <= 64 elements: many rows per task, one ``vwhole_reduce`` result per row, the
    row max broadcast back over its row by vbrcb + a block-replicating vcopy."""
    m = _model([helper.make_node("Softmax", ["x"], ["z"], axis=-1)], [_vi("x", [300, 32])],
               [_vi("z", [300, 32])])
    x = rng.standard_normal((300, 32), np.float32) * 4
    got, want, stats, launches = _run(m, {"x": x})
    _close(got, want, 1e-5, 1e-7)
    e = np.exp(x.astype(np.float64) - x.max(axis=1, keepdims=True))
    np.testing.assert_allclose(got["z"], e / e.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-7)
    imp = import_model(m)
    text = lower_kernel_module(lower_for_target(imp.program).module).text()
    assert "npu.vwhole_reduce" in text and "npu.vbrcb" in text
    # many rows per task: fewer tasks than the 48 cores (one row per task would be 300)
    assert all(la["block_dim"] < 48 for la in launches)


@pytest.mark.parametrize(("kind", "dtype", "want"), [("max", "bool", False), ("min", "bool", True),
                                                     ("max", "float32", -np.inf),
                                                     ("sum", "int32", 0)])
def test_reductions_over_an_empty_axis_give_the_identity(kind: str, dtype: str,
                                                         want: object) -> None:
    """An empty reduction is a fill on ascend and in the kernel-IR executor alike; bool max/min
    of nothing is False/True (the -inf/+inf init clamped to the type)."""
    from portc.compiler.builder import GraphBuilder
    from portc.dialects.graph import TensorSpec

    b = GraphBuilder(fold=False)
    x = b.add_input("x", TensorSpec((2, 0, 3), dtype))
    prog = b.finish([("y", b.reduce(kind, x, [1], keepdims=True))])
    feeds = {"x": np.zeros((2, 0, 3), np.dtype(dtype))}
    kp = lower_for_target(prog.clone())
    ref = run_kernel_module(kp.module, kp.weights, feeds)["y"]
    got, _ = NpuSimExecutable(compile_ascend(prog, CompileOptions())).run(feeds)
    for out in (ref, got["y"]):
        assert out.shape == (2, 1, 3) and out.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(out, np.full((2, 1, 3), want, np.dtype(dtype)))
