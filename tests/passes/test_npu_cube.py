"""Cube-path GEMM builder through npusim against numpy: odd shapes (edge tiles padded with
zeros, output clipped), batches, bias + relu, B transposed, bf16, fp32 and int8, K split into an odd
number of L1 chunks plus a partial one, and work spread over the cube cores."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from portc.compiler.errors import LoweringError
from portc.dialects import npu
from portc.passes.lower_npu_cube import (
    CubeTiling,
    GemmSpec,
    build_gemm_kernel,
    build_gemm_module,
    plan_cube_tiling,
)
from portc.runtimes.npusim import NpuRaceError, NpuSim, parse_program, run_program

_NP = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "int8": np.int8,
       "float32": np.float32, "int32": np.int32}


def _run_gemm(spec: GemmSpec, rng: np.random.Generator, tiling: CubeTiling | None = None):
    text = npu.print_program(build_gemm_module(spec, tiling=tiling))
    dt = _NP[spec.dtype]
    if spec.dtype == "int8":
        a = rng.integers(-128, 128, (spec.batch, spec.m, spec.k)).astype(dt)
        b_shape = (spec.batch, spec.n, spec.k) if spec.trans_b else (spec.batch, spec.k, spec.n)
        b = rng.integers(-128, 128, b_shape).astype(dt)
        bias = rng.integers(-1000, 1000, spec.n).astype(np.int32)
    else:
        a = rng.standard_normal((spec.batch, spec.m, spec.k)).astype(dt)
        b_shape = (spec.batch, spec.n, spec.k) if spec.trans_b else (spec.batch, spec.k, spec.n)
        b = rng.standard_normal(b_shape).astype(dt)
        bias = rng.standard_normal(spec.n).astype(np.float32)
    bufs = {"a": a, "b": b, "c": np.zeros((spec.batch, spec.m, spec.n), _NP[spec.result_dtype])}
    if spec.bias:
        bufs["bias"] = bias
    outs, stats = run_program(text, "gemm", bufs)
    bm = b.astype(np.float64)
    ref = a.astype(np.float64) @ (bm.transpose(0, 2, 1) if spec.trans_b else bm)
    if spec.bias:
        ref = ref + bias.astype(np.float64)
    if spec.relu:
        ref = np.maximum(ref, 0)
    return outs["c"], ref, stats


def _close(out: np.ndarray, ref: np.ndarray, dtype: str) -> None:
    """Within one rounding of a 16-bit output dtype (fp32 accumulation error is far below it);
    for fp32 outputs, within the accumulation error of a few hundred fp32 additions."""
    eps = {"float16": 2**-10, "bfloat16": 2**-7, "float32": 2**-16}[dtype]
    tol = 2 * eps * np.maximum(np.abs(ref), 1.0)
    assert np.all(np.abs(out.astype(np.float64) - ref) <= tol), \
        f"max error {np.abs(out.astype(np.float64) - ref).max()}"


def test_odd_shape_gemm_matches_numpy(rng):
    out, ref, _ = _run_gemm(GemmSpec(37, 53, 70), rng)
    _close(out, ref, "float16")


def test_batched_gemm_with_bias_and_relu(rng):
    out, ref, _ = _run_gemm(GemmSpec(37, 53, 70, batch=3, bias=True, relu=True), rng)
    _close(out, ref, "float16")
    assert (out >= 0).all() and (ref == 0).any()


def test_many_tiles_odd_chunk_count_partial_chunk_and_transposed_b(rng):
    """M, N span 2x3 tiles with ragged edges; K = 3 full L1 chunks + a partial one (the pair
    loop, the peeled odd chunk and the peeled partial chunk all run); B is [N, K]."""
    tiling = CubeTiling(tm=32, tn=32, tk=32, k1=64)
    spec = GemmSpec(50, 70, 3 * 64 + 38, trans_b=True, out_dtype="float32")
    out, ref, stats = _run_gemm(spec, rng, tiling)
    _close(out, ref, "float32")
    assert stats.block_dim == 6 and len(stats.cores) == 6


def test_bf16_gemm(rng):
    out, ref, _ = _run_gemm(GemmSpec(20, 33, 48, dtype="bfloat16"), rng)
    _close(out, ref, "bfloat16")


def test_fp32_gemm_takes_16x8_fractals_and_half_the_macs_per_step(rng):
    """fp32 operands (``--precision fp32``): k0 = 8 (32 bytes), so a 16x16x8 step; results
    within fp32 accumulation error, with twice the steps of the fp16 GEMM of the same shape."""
    spec = GemmSpec(20, 33, 64, dtype="float32")
    out, ref, stats = _run_gemm(spec, rng)
    _close(out, ref, "float32")
    assert stats.cube_steps == 2 * 3 * (64 // 8)
    _, _, half = _run_gemm(GemmSpec(20, 33, 64), rng)
    assert half.cube_steps * 2 == stats.cube_steps


def test_int8_gemm_is_exact_in_int32(rng):
    out, ref, _ = _run_gemm(GemmSpec(19, 40, 100, dtype="int8", bias=True), rng)
    np.testing.assert_array_equal(out, ref.astype(np.int64))


def test_gemm_without_sync_races(rng):
    module = build_gemm_module(GemmSpec(16, 16, 16), sync=False)
    z = np.zeros((1, 16, 16), np.float16)
    with pytest.raises(NpuRaceError):
        run_program(npu.print_program(module), "gemm", {"a": z, "b": z, "c": z})


def test_tiling_from_the_soc_table_fills_l0c_and_double_buffers():
    t = plan_cube_tiling(GemmSpec(4096, 4096, 4096))
    assert (t.tm, t.tn, t.tk, t.k1) == (128, 256, 64, 256)
    # 128 x 256 fp32 = all of L0C; 2 x (128 + 256) x 256 fp16 = 384 KB of L1's 512 KB
    kernel = build_gemm_kernel(GemmSpec(4096, 4096, 4096))
    assert kernel.block_dim.value.data == 24
    small = plan_cube_tiling(GemmSpec(37, 53, 70))
    assert small.tm == 48 and small.tn == 64
    with pytest.raises(LoweringError, match="float64"):
        plan_cube_tiling(GemmSpec(16, 16, 16, dtype="float64"))


def test_timing_only_run_matches_functional_cycles(rng):
    spec = GemmSpec(96, 160, 300)
    text = npu.print_program(build_gemm_module(spec))
    _, _, stats = _run_gemm(spec, rng)
    _, timing = NpuSim(parse_program(text), functional=False).run("gemm")
    assert timing.cycles == stats.cycles and timing.cube_steps == stats.cube_steps
    # every 16x16x16 step of the padded problem is executed exactly once
    assert stats.cube_steps == (96 // 16) * (160 // 16) * -(-300 // 16)
