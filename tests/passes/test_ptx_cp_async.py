"""Tensor-core GEMMs copy operands that are already in the mma type straight into shared
memory with ``cp.async`` (double-buffered: the next K tile is in flight during the multiply),
and fp32 weights that only feed such GEMMs are stored rounded to that type at compile time.
Checked on ptxsim against numpy, bit for bit against the register-staged path, and with the
``cp.async.wait_group`` removed (ptxsim must then refuse the read of bytes not yet landed)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import portc.passes.ptx_mma as ptx_mma
from portc.compiler.builder import GraphBuilder
from portc.compiler.program import Program
from portc.compiler.target_cuda import PTX_FILE, PtxSimExecutable, compile_cuda
from portc.compiler.targets import CompileOptions
from portc.dialects.graph import TensorSpec
from portc.runtimes.ptxsim import PtxSimError

ROUND = {"fp16": np.float16, "bf16": ml_dtypes.bfloat16}


def _weight_matmul(w: np.ndarray, m: int, dtype: str = "float32") -> Program:
    b = GraphBuilder()
    x = b.add_input("x", TensorSpec((m, w.shape[0]), dtype))
    return b.finish([("y", b.matmul(x, b.const(w)))])


def _schedules(art: object) -> list[str]:
    return [ln["schedule"] for ln in art.manifest["cuda"]["launches"]]  # type: ignore[attr-defined]


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_fp32_weight_is_stored_rounded_and_copied_with_cp_async(
        precision: str, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    # ragged M (70) and a K (40) that ends inside a K tile: zero-filled copies (src-size 0)
    w = rng.standard_normal((40, 72)).astype(np.float32)
    x = rng.standard_normal((70, 40)).astype(np.float32)
    art = compile_cuda(_weight_matmul(w, 70), CompileOptions({"precision": precision}))
    assert _schedules(art) == [f"gemm-mma-{precision}-cp.async"]
    text = art.files[PTX_FILE]
    assert "cp.async.cg.shared.global" in text and "cp.async.wait_group 0" in text
    (stored,) = [art.weights[n] for n in art.weights]
    assert stored.dtype == ROUND[precision] and stored.nbytes == w.size * 2
    got, _ = PtxSimExecutable(art).run({"x": x})
    r = ROUND[precision]
    want = x.astype(r).astype(np.float64) @ w.astype(r).astype(np.float64)
    np.testing.assert_allclose(got["y"], want, rtol=1e-5, atol=1e-5)
    # the same products as rounding the fp32 weight while staging it through registers
    monkeypatch.setattr(ptx_mma, "round_gemm_weights_to_mma_type", lambda kp, p: [])
    plain = compile_cuda(_weight_matmul(w, 70), CompileOptions({"precision": precision}))
    assert _schedules(plain) == [f"gemm-mma-{precision}"]
    assert "cp.async" not in plain.files[PTX_FILE]
    ref, _ = PtxSimExecutable(plain).run({"x": x})
    assert np.array_equal(got["y"].view(np.uint32), ref["y"].view(np.uint32))


def test_fp16_activations_and_weights_both_take_cp_async(rng: np.random.Generator) -> None:
    w = rng.standard_normal((48, 64)).astype(np.float16)
    x = rng.standard_normal((33, 48)).astype(np.float16)
    art = compile_cuda(_weight_matmul(w, 33, "float16"), CompileOptions({"precision": "fp16"}))
    assert _schedules(art) == ["gemm-mma-fp16-cp.async"]
    text = art.files[PTX_FILE]
    assert text.count("cp.async.cg.shared.global") == 4  # A and B, prologue and loop
    assert "ld.global.b16" not in text  # no operand staged through registers
    got, _ = PtxSimExecutable(art).run({"x": x})
    want = x.astype(np.float64) @ w.astype(np.float64)
    np.testing.assert_allclose(got["y"].astype(np.float64), want, rtol=2e-3, atol=2e-3)


def test_operands_not_in_16_byte_groups_stay_on_the_register_path(
        rng: np.random.Generator) -> None:
    """N = 36 is not a multiple of 8 halves: a 16-byte copy would straddle two rows."""
    w = rng.standard_normal((32, 36)).astype(np.float32)
    art = compile_cuda(_weight_matmul(w, 16), CompileOptions({"precision": "fp16"}))
    assert _schedules(art) == ["gemm-mma-fp16"]
    x = rng.standard_normal((16, 32)).astype(np.float32)
    got, _ = PtxSimExecutable(art).run({"x": x})
    want = x.astype(np.float16).astype(np.float64) @ w.astype(np.float16).astype(np.float64)
    np.testing.assert_allclose(got["y"], want, rtol=1e-5, atol=1e-5)


def test_a_weight_other_kernels_read_in_fp32_is_left_alone(rng: np.random.Generator) -> None:
    w = rng.standard_normal((32, 64)).astype(np.float32)
    b = GraphBuilder()
    x = b.add_input("x", TensorSpec((16, 32), "float32"))
    u = b.add_input("u", TensorSpec((32, 64), "float32"))
    wc = b.const(w)
    prog = b.finish([("y", b.matmul(x, wc)), ("z", b.binary("add", wc, u))])
    art = compile_cuda(prog, CompileOptions({"precision": "fp16"}))
    assert [art.weights[n].dtype for n in art.weights] == [np.float32]
    assert _schedules(art)[0] == "gemm-mma-fp16"
    uv = rng.standard_normal((32, 64)).astype(np.float32)
    got, _ = PtxSimExecutable(art).run({"x": rng.standard_normal((16, 32)).astype(np.float32),
                                        "u": uv})
    np.testing.assert_array_equal(got["z"], w + uv)


def test_ptxsim_refuses_a_tile_read_before_its_copy_landed(rng: np.random.Generator) -> None:
    w = rng.standard_normal((48, 64)).astype(np.float32)
    art = compile_cuda(_weight_matmul(w, 32), CompileOptions({"precision": "fp16"}))
    text = art.files[PTX_FILE]
    assert "cp.async.wait_group 0;" in text
    art.files[PTX_FILE] = text.replace("cp.async.wait_group 0;", "")
    with pytest.raises(PtxSimError, match=r"ldmatrix.*no thread of its block has written"):
        PtxSimExecutable(art).run({"x": rng.standard_normal((32, 48)).astype(np.float32)})
