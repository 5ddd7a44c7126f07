"""Kernel IR -> PTX: every kernel shape runs on ptxsim and matches the kernel-IR numpy executor
(the oracle) or numpy on fresh random inputs; the schedule each shape gets is pinned too."""

from __future__ import annotations

import re

import ml_dtypes
import numpy as np
import pytest

from portc.compiler.builder import GraphBuilder
from portc.compiler.kernel_targets import lower_for_target
from portc.compiler.program import Program
from portc.compiler.target_cuda import PTX_FILE, PtxSimExecutable, compile_cuda
from portc.compiler.targets import CompileOptions
from portc.dialects import graph as g
from portc.dialects.graph import TensorSpec
from portc.passes.lower_ptx import injective, lower_kernel_module
from portc.runtimes.reference.kernel_ir import run_kernel_module


def _run(prog: Program, inputs: dict[str, np.ndarray], precision: str = "fp32"
         ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[str], str]:
    """(ptxsim outputs, kernel-IR oracle outputs, schedules, PTX text)."""
    kp = lower_for_target(prog.clone())
    want = run_kernel_module(kp.module, kp.weights, inputs)
    art = compile_cuda(prog.clone(), CompileOptions({"precision": precision}))
    got, _ = PtxSimExecutable(art).run(inputs)
    scheds = [ln["schedule"] for ln in art.manifest["cuda"]["launches"]]
    return got, want, scheds, art.files[PTX_FILE]


def _close(got: dict, want: dict, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    for name, w in want.items():
        assert got[name].dtype == w.dtype and got[name].shape == w.shape, name
        if w.dtype.kind in "iub":
            np.testing.assert_array_equal(got[name], w, err_msg=name)
        else:
            np.testing.assert_allclose(got[name].astype(np.float64), w.astype(np.float64),
                                       rtol=rtol, atol=atol, err_msg=name)


def test_elementwise_chain_uses_16_byte_vector_accesses(rng: np.random.Generator) -> None:
    b = GraphBuilder()
    x = b.add_input("x", TensorSpec((6, 32), "float32"))
    bias = b.const(rng.standard_normal(32).astype(np.float32))
    y = b.unary("tanh", b.binary("mul", b.binary("add", x, bias), b.scalar(0.5, x)))
    prog = b.finish([("y", b.unary("exp", y))])
    got, want, scheds, text = _run(prog, {"x": rng.standard_normal((6, 32)).astype(np.float32)})
    _close(got, want)
    assert scheds == ["vector"]
    assert "ld.global.v4.f32" in text and "st.global.v4.f32" in text


def test_broadcast_over_a_non_contiguous_view_uses_one_thread_per_element(
        rng: np.random.Generator) -> None:
    b = GraphBuilder()
    x = b.add_input("x", TensorSpec((5, 7), "float32"))
    col = b.add_input("c", TensorSpec((5, 1), "float32"))
    prog = b.finish([("y", b.binary("sub", b.transpose(x, [1, 0]),
                                    b.transpose(col, [1, 0])))])
    xs = {"x": rng.standard_normal((5, 7)).astype(np.float32),
          "c": rng.standard_normal((5, 1)).astype(np.float32)}
    got, want, scheds, _ = _run(prog, xs)
    _close(got, want)
    np.testing.assert_array_equal(got["y"], (xs["x"] - xs["c"]).T)
    assert scheds == ["thread"]


FLOAT_UNARY_DOMAINS = {
    "log": (0.1, 5), "sqrt": (0, 4), "rsqrt": (0.1, 4), "reciprocal": (0.5, 3),
    "asin": (-0.99, 0.99), "acos": (-0.99, 0.99), "acosh": (1.01, 6), "atanh": (-0.9, 0.9),
}


def test_every_float_unary_fn_matches_numpy(rng: np.random.Generator) -> None:
    fns = [f for f, dom in g.UNARY_FNS.items() if dom in ("float", "num", "any")]
    b = GraphBuilder()
    outs, feeds = [], {}
    for fn in fns:
        x = b.add_input(f"x_{fn}", TensorSpec((40,), "float32"))
        lo, hi = FLOAT_UNARY_DOMAINS.get(fn, (-6, 6))
        v = rng.uniform(lo, hi, 40).astype(np.float32)
        if fn in ("isnan", "isinf", "isposinf", "isneginf", "sign", "relu", "abs"):
            v[:4] = [np.nan, np.inf, -np.inf, 0.0]
        feeds[f"x_{fn}"] = v
        outs.append((fn, b.unary(fn, x)))
    got, want, _, _ = _run(b.finish(outs), feeds)
    _close(got, want, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("dtype", ["int32", "int64", "int8", "uint8"])
def test_integer_binary_fns_wrap_and_truncate_like_the_reference(
        dtype: str, rng: np.random.Generator) -> None:
    fns = ["add", "sub", "mul", "div", "mod", "fmod", "max", "min", "bitwise_and",
           "bitwise_or", "bitwise_xor", "shl", "shr", "pow", "eq", "lt", "ge"]
    info = np.iinfo(dtype)
    lo, hi = max(info.min, -100), min(info.max, 100)
    a = rng.integers(lo, hi, 64).astype(dtype)
    c = rng.integers(lo, hi, 64).astype(dtype)
    c[c == 0] = 3
    b = GraphBuilder()
    x = b.add_input("a", TensorSpec((64,), dtype))
    y = b.add_input("b", TensorSpec((64,), dtype))
    sh = b.add_input("s", TensorSpec((64,), dtype))
    outs = [(fn, b.binary(fn, x, sh if fn in ("shl", "shr", "pow") else y)) for fn in fns]
    s = rng.integers(0, 5, 64).astype(dtype)
    got, want, _, _ = _run(b.finish(outs), {"a": a, "b": c, "s": s})
    _close(got, want)


def test_float_binary_fns_and_nan_propagating_max(rng: np.random.Generator) -> None:
    fns = ["add", "sub", "mul", "div", "pow", "max", "min", "mod", "fmod", "atan2", "eq", "ne",
           "lt", "le", "gt", "ge"]
    a = rng.uniform(-4, 4, 48).astype(np.float32)
    c = rng.uniform(0.5, 3, 48).astype(np.float32) * rng.choice([-1, 1], 48).astype(np.float32)
    a[0], c[1] = np.nan, np.nan
    b = GraphBuilder()
    x = b.add_input("a", TensorSpec((48,), "float32"))
    y = b.add_input("b", TensorSpec((48,), "float32"))
    outs = [(fn, b.binary(fn, b.unary("abs", x) if fn == "pow" else x, y)) for fn in fns]
    got, want, _, _ = _run(b.finish(outs), {"a": a, "b": c})
    _close(got, want, rtol=1e-5, atol=1e-6)
    assert np.isnan(got["max"][0]) and np.isnan(got["min"][1])


def test_casts_round_to_nearest_even_and_wrap(rng: np.random.Generator) -> None:
    v = (rng.standard_normal(32) * 300).astype(np.float32)
    v[:3] = [0.0, -0.0, 2.5]
    b = GraphBuilder()
    x = b.add_input("x", TensorSpec((32,), "float32"))
    outs = [(to, b.cast(x, to)) for to in ("int8", "uint8", "int32", "int64", "float16",
                                            "bfloat16", "float64", "bool")]
    outs.append(("back", b.cast(b.cast(x, "float16"), "float32")))
    got, want, _, _ = _run(b.finish(outs), {"x": v})
    _close(got, want, rtol=0, atol=0)
    np.testing.assert_array_equal(got["bfloat16"], v.astype(ml_dtypes.bfloat16))


def test_row_reductions_take_a_warp_per_row_and_match(rng: np.random.Generator) -> None:
    b = GraphBuilder()
    x = b.add_input("x", TensorSpec((5, 300), "float32"))  # prod of ~1 values: finite
    outs = [(k, b.reduce(k, x, [1], False)) for k in ("sum", "max", "min", "prod")]
    outs.append(("short", b.reduce("sum", b.slice(x, [0, 0], [1, 1], [5, 6]), [1], False)))
    xv = rng.uniform(0.9, 1.1, (5, 300)).astype(np.float32) * rng.choice([-1, 1], (5, 300))
    got, want, scheds, text = _run(b.finish(outs), {"x": xv.astype(np.float32)})
    _close(got, want)
    np.testing.assert_allclose(got["sum"], xv.astype(np.float64).sum(1), rtol=1e-5, atol=1e-5)
    assert "warp" in scheds and "thread" in scheds
    assert "shfl.sync.bfly.b32" in text


def test_softmax_and_layer_norm_rows(rng: np.random.Generator) -> None:
    b = GraphBuilder()
    x = b.add_input("x", TensorSpec((4, 96), "float32"))
    (sm,) = b.op(g.SoftmaxOp, [x], {"axis": -1})
    scale = b.const(rng.standard_normal(96).astype(np.float32))
    bias = b.const(rng.standard_normal(96).astype(np.float32))
    (ln,) = b.op(g.LayerNormOp, [x, scale, bias], {"axis": -1, "epsilon": 1e-5})
    xv = (rng.standard_normal((4, 96)) * 3).astype(np.float32)
    got, want, _, _ = _run(b.finish([("sm", sm), ("ln", ln)]), {"x": xv})
    _close(got, want, rtol=1e-5, atol=1e-6)
    e = np.exp(xv - xv.max(1, keepdims=True))
    np.testing.assert_allclose(got["sm"], e / e.sum(1, keepdims=True), rtol=1e-5, atol=1e-7)


def _matmul_prog(shape_a: tuple[int, ...], shape_b: tuple[int, ...]) -> Program:
    b = GraphBuilder()
    x = b.add_input("a", TensorSpec(shape_a, "float32"))
    y = b.add_input("b", TensorSpec(shape_b, "float32"))
    return b.finish([("y", b.matmul(x, y))])


def test_fp32_matmul_is_a_tiled_gemm_with_ragged_edges(rng: np.random.Generator) -> None:
    a = rng.standard_normal((70, 45)).astype(np.float32)
    c = rng.standard_normal((45, 67)).astype(np.float32)
    got, want, scheds, text = _run(_matmul_prog(a.shape, c.shape), {"a": a, "b": c})
    assert scheds == ["gemm-fp32"]
    assert "bar.sync" in text and "ld.shared.v4.f32" in text
    # tiles are staged and read 16 bytes at a time (A transposed into padded rows)
    shared = re.findall(r"\b(?:ld|st)\.shared\.[\w.]+", text)
    assert shared and all(".v4." in m for m in shared), sorted(set(shared))
    np.testing.assert_allclose(got["y"], a.astype(np.float64) @ c, rtol=1e-5, atol=1e-5)
    _close(got, want, rtol=1e-5, atol=1e-5)


def test_batched_matmul_with_broadcast_batch(rng: np.random.Generator) -> None:
    a = rng.standard_normal((3, 20, 24)).astype(np.float32)
    c = rng.standard_normal((24, 36)).astype(np.float32)
    got, _, scheds, _ = _run(_matmul_prog(a.shape, c.shape), {"a": a, "b": c})
    assert scheds == ["gemm-fp32"]
    np.testing.assert_allclose(got["y"], a.astype(np.float64) @ c, rtol=1e-5, atol=1e-5)


ROUND = {"fp16": np.float16, "bf16": ml_dtypes.bfloat16}


@pytest.mark.parametrize("precision", ["fp16", "bf16", "tf32"])
def test_tensor_core_matmul_rounds_operands_and_accumulates_in_fp32(
        precision: str, rng: np.random.Generator) -> None:
    a = rng.standard_normal((40, 48)).astype(np.float32)
    c = rng.standard_normal((48, 72)).astype(np.float32)
    got, _, scheds, text = _run(_matmul_prog(a.shape, c.shape), {"a": a, "b": c}, precision)
    assert scheds == [f"gemm-mma-{precision}"]
    if precision == "tf32":
        assert "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32" in text
        ar, cr = (x.view(np.uint32) for x in (a, c))
        # cvt.rna: round half away from zero to 10 mantissa bits
        ra, rc = (((x + 0x1000) & 0xFFFFE000).view(np.float32) for x in (ar, cr))
    else:
        assert f"mma.sync.aligned.m16n8k16.row.col.f32.{precision.replace('fp', 'f')}" in text
        assert "ldmatrix.sync.aligned.m8n8.x4.shared.b16" in text
        ra, rc = (x.astype(ROUND[precision]).astype(np.float32) for x in (a, c))
    want = ra.astype(np.float64) @ rc.astype(np.float64)
    np.testing.assert_allclose(got["y"], want, rtol=1e-5, atol=1e-5)


def test_conv_is_an_implicit_gemm_without_im2col(rng: np.random.Generator) -> None:
    b = GraphBuilder()
    x = b.add_input("x", TensorSpec((2, 3, 10, 10), "float32"))
    w = b.const(rng.standard_normal((16, 3, 3, 3)).astype(np.float32))
    (y,) = b.op(g.ConvOp, [x, w], {"strides": (1, 1), "pads": (1, 1, 1, 1),
                                   "dilations": (1, 1), "group": 1})
    xv = rng.standard_normal((2, 3, 10, 10)).astype(np.float32)
    got, want, scheds, _ = _run(b.finish([("y", y)]), {"x": xv})
    assert "gemm-fp32" in scheds
    _close(got, want, rtol=1e-5, atol=1e-5)


def test_gather_scatter_with_duplicates_and_topk(rng: np.random.Generator) -> None:
    b = GraphBuilder()
    x = b.add_input("x", TensorSpec((4, 6), "float32"))
    idx = b.add_input("idx", TensorSpec((3,), "int64"))
    (gat,) = b.op(g.GatherOp, [x, idx], {"axis": 1})
    upd = b.add_input("upd", TensorSpec((4, 3), "float32"))
    sidx = b.add_input("sidx", TensorSpec((4, 3), "int64"))
    (sc,) = b.op(g.ScatterElementsOp, [x, sidx, upd], {"axis": 1, "reduction": "add"})
    vals, order = b.op(g.TopKOp, [x], {"axis": 1, "k": 3, "largest": 1})
    prog = b.finish([("gat", gat), ("sc", sc), ("vals", vals), ("order", order)])
    xv = rng.standard_normal((4, 6)).astype(np.float32)
    xv[0, :3] = xv[0, 3]  # ties: the lower index first
    xv[1, 2] = np.nan  # NaN sorts as the largest
    feeds = {"x": xv, "idx": np.array([5, -1, 0]),
             "upd": rng.standard_normal((4, 3)).astype(np.float32),
             "sidx": np.array([[1, 1, 1], [0, 5, 0], [2, 3, 4], [5, 5, 5]])}
    got, want, scheds, _ = _run(prog, feeds)
    _close(got, want, rtol=1e-6, atol=1e-6)
    assert "serial" in scheds and "sort" in scheds
    np.testing.assert_array_equal(got["gat"], xv[:, [5, 5, 0]])
    assert got["order"][1, 0] == 2


def test_injectivity_check_spots_overlapping_writes() -> None:
    assert injective((4, 5), (5, 1))
    assert not injective((4, 5), (1, 1))
    assert not injective((4, 5), (0, 1))


def test_bad_precision_is_a_clear_error(rng: np.random.Generator) -> None:
    kp = lower_for_target(_matmul_prog((8, 8), (8, 8)))
    with pytest.raises(Exception, match="--precision 'fp8'"):
        lower_kernel_module(kp.module, precision="fp8")
