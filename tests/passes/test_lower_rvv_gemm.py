"""The rvv GEMM microkernel (``passes/rvv_gemm.py``): which kernels take it, exact results on
integer-valued data across shapes that exercise row remainders, K tails, many strips and
strided B, convolutions through their strided input view, and its multiply-add count."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from portc.compiler import api
from portc.compiler.builder import GraphBuilder
from portc.compiler.program import Program
from portc.compiler.target_rvv import RvvSimExecutable, compile_rvv
from portc.compiler.targets import CompileOptions
from portc.dialects.graph import TensorSpec
from portc.passes import rvv_gemm


def matmul_program(m: int, kk: int, n: int, dt: str, transpose_b: bool = False) -> Program:
    b = GraphBuilder()
    a = b.add_input("a", TensorSpec((m, kk), dt))
    w = b.add_input("b", TensorSpec((n, kk) if transpose_b else (kk, n), dt))
    return b.finish([("y", b.matmul(a, b.transpose(w, [1, 0]) if transpose_b else w))])


def small_ints(rng: np.random.Generator, shape: tuple[int, ...], dt: str) -> np.ndarray:
    """Values whose products and sums are exact in float32: any summation order agrees."""
    return rng.integers(-8, 9, shape).astype(dt)


@pytest.mark.parametrize("vlen", [128, 1024])
@pytest.mark.parametrize(("m", "kk", "n"), [(1, 7, 5), (4, 64, 128), (7, 33, 70),
                                             (13, 300, 19), (3, 16, 1000)])
def test_gemm_is_exact_on_integer_data(m: int, kk: int, n: int, vlen: int,
                                       rng: np.random.Generator) -> None:
    art = compile_rvv(matmul_program(m, kk, n, "float32"), CompileOptions({"vlen": vlen}))
    (sched,) = art.manifest["rvv"]["schedules"].values()
    assert sched.startswith("gemm"), sched
    a, w = small_ints(rng, (m, kk), "float32"), small_ints(rng, (kk, n), "float32")
    got = RvvSimExecutable(art).run({"a": a, "b": w})[0]["y"]
    np.testing.assert_array_equal(got, a.astype(np.float64) @ w.astype(np.float64))


def test_gemm_float64_and_random_data(rng: np.random.Generator) -> None:
    for dt, rtol in (("float32", 2e-5), ("float64", 1e-13)):
        art = compile_rvv(matmul_program(9, 50, 37, dt), CompileOptions())
        a = rng.standard_normal((9, 50)).astype(dt)
        w = rng.standard_normal((50, 37)).astype(dt)
        got = RvvSimExecutable(art).run({"a": a, "b": w})[0]["y"]
        np.testing.assert_allclose(got, a.astype(np.float64) @ w.astype(np.float64), rtol=rtol,
                                   atol=rtol * 10)
        assert f"e{64 if dt == 'float64' else 32}" in art.manifest["compile_report"]


def test_gemm_with_a_transposed_b_uses_strided_loads(rng: np.random.Generator) -> None:
    art = compile_rvv(matmul_program(6, 24, 10, "float32", transpose_b=True), CompileOptions())
    assert "vlse32.v" in art.files["kernels.s"]
    assert any(s.startswith("gemm") for s in art.manifest["rvv"]["schedules"].values())
    a, w = small_ints(rng, (6, 24), "float32"), small_ints(rng, (10, 24), "float32")
    got = RvvSimExecutable(art).run({"a": a, "b": w})[0]["y"]
    np.testing.assert_array_equal(got, a.astype(np.float64) @ w.T.astype(np.float64))


def _conv_model(path: Path, rng: np.random.Generator) -> Path:
    w = small_ints(rng, (5, 3, 3, 3), "float32")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], strides=[1, 1])],
        "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 9, 11])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, 9, 11])],
        [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_convolution_runs_as_a_gemm_over_its_window(tmp_path: Path,
                                                   rng: np.random.Generator) -> None:
    """Rows = output channels, vector = output columns, K = (c, kh, kw) with the 3x3 window
    unrolled: equal to onnxruntime on integer data (exact)."""
    model = _conv_model(tmp_path / "conv.onnx", rng)
    m = api.import_model(model)
    art = api.compile(None, target="rvv", imported=m).artifact
    scheds = art.manifest["rvv"]["schedules"]
    assert any(s.startswith("gemm") for s in scheds.values()), scheds
    x = small_ints(rng, (1, 3, 9, 11), "float32")
    got = RvvSimExecutable(art).run({"x": x})[0]["y"]
    np.testing.assert_array_equal(got, m.oracle({"x": x})["y"])


def test_non_float_or_non_product_bodies_take_the_general_lowering(
        rng: np.random.Generator) -> None:
    b = GraphBuilder()
    a = b.add_input("a", TensorSpec((4, 9), "int32"))
    w = b.add_input("b", TensorSpec((9, 6), "int32"))
    prog = b.finish([("y", b.matmul(a, w))])
    art = compile_rvv(prog, CompileOptions())
    assert not any(s.startswith("gemm") for s in art.manifest["rvv"]["schedules"].values())
    av, wv = small_ints(rng, (4, 9), "int32"), small_ints(rng, (9, 6), "int32")
    got = RvvSimExecutable(art).run({"a": av, "b": wv})[0]["y"]
    np.testing.assert_array_equal(got, av @ wv)


def test_each_vector_multiply_add_is_issued_once(rng: np.random.Generator) -> None:
    """M * K * strips vfmacc.vf, one vector load of B per K step per row block and strip,
    one scalar load of A per multiply-add: the microkernel's floor (``per_step_cost``)
    plus loop overhead."""
    m, kk, n, vlen = 20, 40, 100, 256
    lmul, mr = rvv_gemm.choose_blocking(m, n, 32, vlen)
    art = compile_rvv(matmul_program(m, kk, n, "float32"), CompileOptions({"vlen": vlen}))
    a, w = small_ints(rng, (m, kk), "float32"), small_ints(rng, (kk, n), "float32")
    st = RvvSimExecutable(art).run({"a": a, "b": w})[1]
    strips = math.ceil(n / (vlen // 32 * lmul))
    per = st["per_mnemonic"]
    assert per["vfmacc.vf"] == m * kk * strips
    assert per["flw"] == m * kk * strips
    assert per["vle32.v"] == math.ceil(m / mr) * kk * strips
    floor = kk * rvv_gemm.per_step_cost(m, n, lmul, mr, 32, vlen)
    assert floor <= st["instructions"] <= 1.15 * floor


def test_blocking_for_a_square_gemm_is_lmul8_three_rows() -> None:
    """Three LMUL-8 accumulators plus one B group fill the 32 vector registers; narrow N
    trades LMUL for more rows per B load."""
    assert rvv_gemm.choose_blocking(256, 256, 32, 256) == (8, 3)
    lmul, mr = rvv_gemm.choose_blocking(64, 8, 32, 256)
    assert lmul <= 2 and mr == rvv_gemm.MAX_ROWS
