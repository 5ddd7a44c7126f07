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
    estimate_cycles,
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


@pytest.mark.parametrize("ra, rb", [(1, 1), (2, 1), (1, 2)])
@pytest.mark.parametrize("trans_b", [False, True])
def test_many_tiles_odd_chunk_count_partial_chunk_and_transposed_b(rng, ra, rb, trans_b):
    """M, N span 2x3 tiles with ragged edges; K = 7 full L1 units + a partial one, so the
    period loop and a peeled tail with a partial A or B chunk run; A (or B) chunks may span
    two units; B is [K, N] or [N, K]."""
    tiling = CubeTiling(tm=32, tn=32, tk=32, k1=32, ra=ra, rb=rb)
    spec = GemmSpec(50, 70, 7 * 32 + 19, trans_b=trans_b, out_dtype="float32")
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


def _timing(spec: GemmSpec, tiling: CubeTiling | None = None) -> float:
    text = npu.print_program(build_gemm_module(spec, tiling=tiling))
    return NpuSim(parse_program(text), functional=False, check_races=False).run("gemm")[1].cycles


def _fits(t: CubeTiling, spec: GemmSpec) -> bool:
    """Double-buffered L1 chunks, L0 tiles and one L0C tile within the 910b buffers."""
    s = 2 if spec.dtype in ("float16", "bfloat16") else 1
    return (2 * (t.tm * t.ka + t.tn * t.kb) * s <= 512 * 1024 and t.tm * t.tn * 4 <= 128 * 1024
            and 2 * t.tm * t.tk * s <= 64 * 1024 and 2 * t.tk * t.tn * s <= 64 * 1024)


def test_tiling_from_the_soc_table_fits_the_buffers_and_beats_one_fixed_shape():
    """The planner's tiling (fewest cycles under the closed-form cost model) is never slower
    in npusim than the L0C-filling 128 x 256 tile, and its estimate is within 10% of npusim."""
    for spec in (GemmSpec(2048, 2048, 1024), GemmSpec(512, 768, 1024)):
        t = plan_cube_tiling(spec)
        assert _fits(t, spec)
        sim = _timing(spec, t)
        assert sim <= _timing(spec, CubeTiling(128, 256, 64, 256))
        assert abs(estimate_cycles(spec, t) - sim) <= 0.1 * sim
    assert build_gemm_kernel(GemmSpec(4096, 4096, 4096)).block_dim.value.data == 24
    with pytest.raises(LoweringError, match="float64"):
        plan_cube_tiling(GemmSpec(16, 16, 16, dtype="float64"))


def test_small_gemms_are_spread_over_the_cube_cores():
    """An encoder projection (32 tokens x 384 x 384) as one or two 32 x 256 tiles would keep
    22 of 24 cube cores idle; the planner cuts it into enough tiles for all of them."""
    spec = GemmSpec(32, 384, 384)
    t = plan_cube_tiling(spec)
    assert _fits(t, spec)
    assert build_gemm_kernel(spec).block_dim.value.data >= 12
    assert _timing(spec) * 2 < _timing(spec, CubeTiling(32, 256, 64, 384))


def test_timing_only_run_matches_functional_cycles(rng):
    spec = GemmSpec(96, 160, 300)
    text = npu.print_program(build_gemm_module(spec))
    _, _, stats = _run_gemm(spec, rng)
    _, timing = NpuSim(parse_program(text), functional=False).run("gemm")
    assert timing.cycles == stats.cycles and timing.cube_steps == stats.cube_steps
    # every 16x16x16 step of the padded problem is executed exactly once
    assert stats.cube_steps == (96 // 16) * (160 // 16) * -(-300 // 16)
