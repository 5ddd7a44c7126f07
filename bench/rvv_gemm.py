"""Dynamic instruction count of portc's rvv GEMM microkernel against the ideal, on rvvsim.

Usage: .venv/bin/python bench/rvv_gemm.py [--m 256 --n 256 --k 256] [--vlen 128,256,512,1024]
                                         [--dtype float32|float64] [--general]

For each VLEN the M x K @ K x N matmul is compiled for the rvv target (tuned for that VLEN),
run on rvvsim with fresh random inputs, checked against numpy (float64 product, rtol 1e-4), and
its dynamic instructions counted per mnemonic. Two yardsticks (VLMAX = VLEN/SEW * 8, LMUL 8):

- ideal: M*N*K / VLMAX multiply-adds plus every operand element loaded once and every result
  stored once as full LMUL-8 vectors ((M*K + K*N + M*N) / VLMAX). No vfmacc.vf kernel can reach
  it: each scalar of A has to be loaded into a float register by its own instruction.
- floor(vf): the same MACs plus what a vfmacc.vf microkernel with the chosen blocking cannot
  avoid: per K step and block of MR rows one vector load of B (and its pointer bump) and one
  scalar load per row (``passes/rvv_gemm.py``, ``per_step_cost``).

``--general`` also counts the general strip-mined lowering (no microkernel) for comparison.
Wall times are rvvsim's and inflated on a shared machine.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from portc.compiler.builder import GraphBuilder
from portc.compiler.target_rvv import RvvSimExecutable, compile_rvv
from portc.compiler.targets import CompileOptions
from portc.dialects.graph import TensorSpec
from portc.passes import rvv_gemm


def build(m: int, n: int, kk: int, dtype: str) -> object:
    b = GraphBuilder()
    a = b.add_input("a", TensorSpec((m, kk), dtype))
    w = b.add_input("b", TensorSpec((kk, n), dtype))
    return b.finish([("y", b.matmul(a, w))])


def run(m: int, n: int, kk: int, dtype: str, vlen: int, general: bool,
        rng: np.random.Generator) -> dict[str, object]:
    saved = rvv_gemm.try_gemm
    if general:
        rvv_gemm.try_gemm = lambda *a, **kw: None  # type: ignore[assignment]
    try:
        art = compile_rvv(build(m, n, kk, dtype), CompileOptions({"vlen": vlen}))
    finally:
        rvv_gemm.try_gemm = saved
    feeds = {"a": rng.standard_normal((m, kk)).astype(dtype),
             "b": rng.standard_normal((kk, n)).astype(dtype)}
    t0 = time.perf_counter()
    c0 = time.process_time()
    outs, st = RvvSimExecutable(art).run(feeds)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    want = feeds["a"].astype(np.float64) @ feeds["b"].astype(np.float64)
    np.testing.assert_allclose(outs["y"], want, rtol=1e-4, atol=1e-4 * math.sqrt(kk))
    return {"count": st["instructions"], "per": st["per_mnemonic"], "wall": wall, "cpu": cpu,
            "asm": art.files["kernels.s"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--m", type=int, default=256)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--k", type=int, default=256)
    ap.add_argument("--vlen", default="128,256,512,1024")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--general", action="store_true", help="also count the general lowering")
    a = ap.parse_args()
    m, n, kk = a.m, a.n, a.k
    bits = 32 if a.dtype == "float32" else 64
    rng = np.random.default_rng(7)
    print(f"GEMM {m}x{n}x{kk} {a.dtype} on rvvsim ({m * n * kk:,} MACs)")
    head = (f"{'VLEN':>5} {'LMUL':>4} {'MR':>3} {'instructions':>13} {'ideal':>11} {'ratio':>6} "
            f"{'floor(vf)':>11} {'ratio':>6} {'vfmacc':>9} {'vle':>8} {'flw/fld':>9} "
            f"{'wall s':>7} {'cpu s':>7}")
    print(head)
    for vlen in [int(v) for v in a.vlen.split(",")]:
        vlmax = vlen // bits * 8
        ideal = math.ceil(m * n * kk / vlmax) + math.ceil((m * kk + kk * n + m * n) / vlmax)
        lmul, mr = rvv_gemm.choose_blocking(m, n, bits, vlen)
        floor_vf = kk * rvv_gemm.per_step_cost(m, n, lmul, mr, bits, vlen)
        r = run(m, n, kk, a.dtype, vlen, False, rng)
        per = r["per"]
        assert isinstance(per, dict)
        count = int(r["count"])  # type: ignore[call-overload]
        sl = "flw" if bits == 32 else "fld"
        print(f"{vlen:>5} {lmul:>4} {mr:>3} {count:>13,} {ideal:>11,} {count / ideal:>6.2f} "
              f"{floor_vf:>11,} {count / floor_vf:>6.2f} {per.get('vfmacc.vf', 0):>9,} "
              f"{per.get(f'vle{bits}.v', 0):>8,} {per.get(sl, 0):>9,} {r['wall']:>7.1f} "
              f"{r['cpu']:>7.1f}")
        if a.general:
            g = run(m, n, kk, a.dtype, vlen, True, rng)
            gc = int(g["count"])  # type: ignore[call-overload]
            print(f"{'':>5} general lowering: {gc:,} instructions ({gc / ideal:.2f} x ideal, "
                  f"{gc / count:.1f} x the microkernel), {g['wall']:.1f} s wall")
    print("ideal = MACs/VLMAX(LMUL 8) + (M*K + K*N + M*N)/VLMAX; floor(vf) = what a vfmacc.vf "
          "kernel with this LMUL/MR must issue")


if __name__ == "__main__":
    main()
