"""Model a 4096 x 4096 x 4096 fp16 GEMM on the 910b NPU: build the cube kernel, derive its flags,
print it to text, parse it back and run npusim's timing model on all 24 cube cores.

Usage: .venv/bin/python bench/npu_gemm.py [--m M --n N --k K] [--dtype float16|bfloat16]
                                          [--races] [--trace out.json]

Prints cycles, time at the SoC clock, achieved TFLOPS, cube utilisation against the modelled
peak (one 16x16x16 step per cycle per core), the planner's estimate, the ceiling the shared GM
bandwidth puts on this tiling (L0C holds at most 128 x 256 fp32 accumulators, so each tile
must stream (tm + tn) x K operands), per-pipe busy %, and the wall time of each stage.
All numbers are outputs of the documented model in dialects/npu_soc.py, not measurements.
"""

from __future__ import annotations

import argparse
import time

from portc.dialects import dtypes, npu
from portc.dialects.npu_soc import PIPES, get_soc
from portc.passes.lower_npu_cube import (
    GemmSpec,
    build_gemm_module,
    estimate_cycles,
    plan_cube_tiling,
)
from portc.runtimes.npusim import NpuSim, parse_program


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--m", type=int, default=4096)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--k", type=int, default=4096)
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--soc", default="910b")
    ap.add_argument("--races", action="store_true", help="also run the race checker (slower)")
    ap.add_argument("--trace", help="write a Chrome trace (chrome://tracing) here")
    a = ap.parse_args()
    soc = get_soc(a.soc)
    spec = GemmSpec(a.m, a.n, a.k, dtype=a.dtype)

    t0 = time.perf_counter()
    module = build_gemm_module(spec, soc=soc)
    text = npu.print_program(module)
    t1 = time.perf_counter()
    program = parse_program(text, "gemm.npu.mlir")
    t2 = time.perf_counter()
    _, st = NpuSim(program, soc, functional=False, check_races=a.races).run(
        "gemm", trace_path=a.trace)
    t3 = time.perf_counter()

    tiling = plan_cube_tiling(spec, soc)
    k0 = soc.cube[a.dtype].k0
    flops = 2.0 * a.m * a.n * a.k
    peak_steps = st.cycles * soc.aic_cores  # one cube step per cycle per core
    util = st.pipe_utilisation()
    # the model's ceiling for this tiling: every tile streams its A rows and B columns over K
    # through the GM bandwidth all cores share, and the cube needs M*N*K/4096 steps
    item = dtypes.dtype(a.dtype).bits // 8
    mts = [min(tiling.tm, a.m - m0) for m0 in range(0, a.m, tiling.tm)]
    nts = [min(tiling.tn, a.n - n0) for n0 in range(0, a.n, tiling.tn)]
    gm_bytes = sum((mt + nt) * a.k * item for mt in mts for nt in nts)
    gm_floor = gm_bytes / soc.gm_bytes_per_cycle
    cube_floor = -(-a.m // 16) * -(-a.n // 16) * -(-a.k // k0) / soc.aic_cores
    print(f"GEMM {a.m}x{a.n}x{a.k} {a.dtype} on {soc.name}: tiles {tiling.tm}x{tiling.tn}, "
          f"L0 K step {tiling.tk}, L1 K chunks A {tiling.ka} / B {tiling.kb}, "
          f"{st.block_dim} cube cores")
    rows = [
        ("cycles (slowest core)", f"{st.cycles:,.0f}"),
        ("time at clock", f"{st.seconds * 1e6:,.1f} us"),
        ("achieved", f"{flops / st.seconds / 1e12:,.1f} TFLOPS"),
        ("modelled peak", f"{soc.aic_cores * 16 * 16 * k0 * 2 * soc.clock_hz / 1e12:,.1f} "
                          "TFLOPS"),
        ("cube utilisation (useful steps / peak)", f"{100 * st.cube_steps / peak_steps:.1f} %"),
        ("cube utilisation (M busy / cycles)", f"{100 * st.cube_utilisation:.1f} %"),
        ("cost-model estimate", f"{estimate_cycles(spec, tiling, soc):,.0f} cycles"),
        ("ceiling: GM traffic / shared GM bandwidth",
         f"{gm_floor:,.0f} cycles ({gm_bytes / 2**20:,.0f} MiB at "
         f"{soc.gm_bytes_per_cycle:.0f} B/cycle) -> at most "
         f"{100 * cube_floor / max(cube_floor, gm_floor):.1f} % of peak"),
        *((f"pipe {p} busy", f"{100 * util[p]:.1f} %") for p in PIPES),
        ("program lines", f"{len(text.splitlines())}"),
        ("wall: build + sync + print", f"{t1 - t0:.2f} s"),
        ("wall: parse", f"{t2 - t1:.2f} s"),
        (f"wall: simulate (timing only, races {'on' if a.races else 'off'})", f"{t3 - t2:.2f} s"),
    ]
    w = max(len(r[0]) for r in rows)
    for name, val in rows:
        print(f"  {name:<{w}}  {val}")


if __name__ == "__main__":
    main()
