"""rvvsim vs qemu on whole strip-mined kernels of the kind portc's rvv backend emits: loops
whose last iteration runs with vl < VLMAX, tail-undisturbed accumulators, widening int8 dot
products, a register-blocked GEMM microkernel, strided gathers and a stack frame."""

from __future__ import annotations

import numpy as np
import pytest

from .harness import Case, compare, need_tools, run_qemu

VLENS = [128, 256, 512, 1024]

SAXPY = """
    flw fa0, 0(a2)
1:  vsetvli t0, a4, e32, m2, ta, ma
    vle32.v v8, (a0)
    vle32.v v16, (a1)
    vfmacc.vf v16, fa0, v8
    vse32.v v16, (a3)
    sub a4, a4, t0
    slli t0, t0, 2
    add a0, a0, t0
    add a1, a1, t0
    add a3, a3, t0
    bnez a4, 1b"""

# sum of squares: a tail-undisturbed accumulator, then one unordered reduction over VLMAX
SUMSQ = """
    vsetvli t1, zero, e32, m4, ta, ma
    vmv.v.i v8, 0
1:  vsetvli t0, a4, e32, m4, tu, ma
    vle32.v v16, (a0)
    vfmacc.vv v8, v16, v16
    sub a4, a4, t0
    slli t0, t0, 2
    add a0, a0, t0
    bnez a4, 1b
    vsetvli t1, zero, e32, m4, ta, ma
    vmv.s.x v0, zero
    vfredusum.vs v0, v8, v0
    vfmv.f.s fa0, v0
    fsw fa0, 0(a3)"""

# int8 dot product: vwmul to int16, vwredsum into int32, scalar accumulate
DOT_I8 = """
    li a6, 0
1:  vsetvli t0, a4, e8, m1, ta, ma
    vle8.v v8, (a0)
    vle8.v v9, (a1)
    vwmul.vv v10, v8, v9
    vsetivli zero, 1, e32, m1, ta, ma
    vmv.s.x v12, zero
    vsetvli zero, t0, e16, m2, ta, ma
    vwredsum.vs v12, v10, v12
    vsetivli zero, 1, e32, m1, ta, ma
    vmv.x.s t2, v12
    add a6, a6, t2
    sub a4, a4, t0
    add a0, a0, t0
    add a1, a1, t0
    bnez a4, 1b
    sd a6, 0(a3)"""

# C[4 x n] = A[4 x K] * B[K x n], K = a5, row stride of B and C = n floats, n strip-mined
GEMM = """
    addi sp, sp, -32
    sd s0, 24(sp)
    sd s1, 16(sp)
    slli s1, a4, 2
1:  vsetvli t0, a4, e32, m1, ta, ma
    vmv.v.i v0, 0
    vmv.v.i v1, 0
    vmv.v.i v2, 0
    vmv.v.i v3, 0
    mv t1, a0
    mv t2, a1
    mv s0, a5
2:  vle32.v v8, (t2)
    flw ft0, 0(t1)
    slli t3, a5, 2
    add t4, t1, t3
    flw ft1, 0(t4)
    add t4, t4, t3
    flw ft2, 0(t4)
    add t4, t4, t3
    flw ft3, 0(t4)
    vfmacc.vf v0, ft0, v8
    vfmacc.vf v1, ft1, v8
    vfmacc.vf v2, ft2, v8
    vfmacc.vf v3, ft3, v8
    addi t1, t1, 4
    add t2, t2, s1
    addi s0, s0, -1
    bnez s0, 2b
    mv t4, a3
    vse32.v v0, (t4)
    add t4, t4, s1
    vse32.v v1, (t4)
    add t4, t4, s1
    vse32.v v2, (t4)
    add t4, t4, s1
    vse32.v v3, (t4)
    sub a4, a4, t0
    slli t0, t0, 2
    add a1, a1, t0
    add a3, a3, t0
    bnez a4, 1b
    ld s0, 24(sp)
    ld s1, 16(sp)
    addi sp, sp, 32"""

# column k of a row-major [n x 8] float64 matrix via a strided load, then vfsqrt and masked max
COLUMN = """
    slli t1, a5, 3
    add a0, a0, t1
    li t2, 64
1:  vsetvli t0, a4, e64, m2, ta, mu
    vlse64.v v8, (a0), t2
    vfabs.v v8, v8
    vfsqrt.v v10, v8
    vmfgt.vf v0, v10, fa0
    vfmv.v.f v12, fa0
    vfmax.vv v12, v12, v10, v0.t
    vse64.v v12, (a3)
    sub a4, a4, t0
    slli t3, t0, 6
    add a0, a0, t3
    slli t3, t0, 3
    add a3, a3, t3
    bnez a4, 1b"""


def _cases() -> list[Case]:
    rng = np.random.default_rng(7)
    cases = []
    for n in (1, 37, 200):
        x = rng.standard_normal(n).astype(np.float32)
        y = rng.standard_normal(n).astype(np.float32)
        cases.append(Case(f"saxpy_{n}", SAXPY, [x, y, np.array([1.75], np.float32)], 4 * n, n))
        cases.append(Case(f"sumsq_{n}", SUMSQ, [x], 4, n))
        a = rng.integers(-128, 128, n).astype(np.int8)
        b = rng.integers(-128, 128, n).astype(np.int8)
        cases.append(Case(f"dot_i8_{n}", DOT_I8, [a, b], 8, n))
        m = rng.standard_normal((n, 8))
        cases.append(Case(f"column_{n}", COLUMN.replace("fa0", "ft0").replace(
            "    slli t1, a5, 3", "    fmv.d.x ft0, zero\n    slli t1, a5, 3"), [m], 8 * n, n, 3))
    for n, k in ((5, 3), (33, 7), (70, 16)):
        a = rng.standard_normal((4, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        cases.append(Case(f"gemm_{n}_{k}", GEMM, [a, b], 16 * n, n, k))
    return cases


@pytest.fixture(scope="module")
def qemu_results() -> tuple[list[Case], dict]:
    need_tools()
    cases = _cases()
    return cases, run_qemu(cases, VLENS)


@pytest.mark.parametrize("vlen", VLENS)
def test_strip_mined_kernels_match_qemu(qemu_results: tuple, vlen: int) -> None:
    cases, qemu = qemu_results
    compare(cases, qemu, vlen)


def test_gemm_kernel_matches_numpy() -> None:
    """The same GEMM against numpy (fp32 fma chains vs float64 reference, loose tolerance)."""
    from .harness import run_sim
    case = next(c for c in _cases() if c.name == "gemm_33_7")
    out = np.frombuffer(run_sim([case], 256)[0], np.float32).reshape(4, 33)
    a, b = case.inputs
    np.testing.assert_allclose(out, a.astype(np.float64) @ b, rtol=1e-5, atol=1e-5)
