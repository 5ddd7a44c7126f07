"""Time a GEMM emitted by the cuda target on a real GPU against torch.matmul.

Usage: .venv/bin/python bench/cuda_gemm.py [--m 4096 --n 4096 --k 4096]
                                         [--precision fp32|tf32|fp16|bf16] [--iters 20] [--quick]

Compiles ``y = a @ b`` through portc (graph -> kernel IR -> PTX), loads the PTX with the CUDA
driver (runtimes/cuda_driver.py), checks the result against numpy, and times the launch
sequence (kernel time only: inputs stay on the device) and torch.matmul on the same device
with the same precision setting. Without a GPU it says so and exits 0.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from portc.compiler.builder import GraphBuilder
from portc.compiler.target_cuda import compile_cuda
from portc.compiler.targets import CompileOptions
from portc.dialects.graph import TensorSpec
from portc.runtimes.cuda_driver import unavailable


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--m", type=int, default=4096)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--k", type=int, default=4096)
    ap.add_argument("--precision", default="fp16")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="1024^3, 3 iterations")
    a = ap.parse_args()
    if a.quick:
        a.m = a.n = a.k = 1024
        a.iters = 3
    why = unavailable()
    if why is not None:
        print(f"cuda_gemm: no GPU here ({why}); nothing to time")
        return 0
    from portc.compiler.kernel_targets import BufferLayout
    from portc.runtimes.cuda_driver import GpuExecutable

    b = GraphBuilder()
    x = b.add_input("a", TensorSpec((a.m, a.k), "float32"))
    w = b.add_input("b", TensorSpec((a.k, a.n), "float32"))
    prog = b.finish([("y", b.matmul(x, w))])
    art = compile_cuda(prog, CompileOptions({"precision": a.precision}))
    print(art.manifest["compile_report"].splitlines()[0])
    exe = GpuExecutable(art.files["module.ptx"], BufferLayout(art.manifest),
                        art.manifest["cuda"]["launches"], art.weights)
    rng = np.random.default_rng(0)
    feeds = {"a": rng.standard_normal((a.m, a.k)).astype(np.float32),
             "b": rng.standard_normal((a.k, a.n)).astype(np.float32)}
    out, _ = exe.run(feeds)
    rows = min(a.m, 256)
    ref = feeds["a"][:rows].astype(np.float64) @ feeds["b"]
    rel = np.abs(out["y"][:rows] - ref).max() / np.abs(ref).max()
    t = []
    for _ in range(a.iters):
        t0 = time.perf_counter()
        for ln in exe.launches:
            exe.cx.launch(ln["entry"], ln["grid"], ln["block"],
                          [exe.addr[p] for p in ln["params"]])
        exe.cx.synchronize()
        t.append(time.perf_counter() - t0)
    best = min(t)
    flops = 2.0 * a.m * a.n * a.k
    print(f"portc {a.precision}: {best * 1e3:.3f} ms, {flops / best / 1e12:.2f} TFLOP/s, "
          f"max rel error {rel:.2e}")
    try:
        import torch
    except ImportError:
        print("torch is not installed: no comparison")
        return 0
    if not torch.cuda.is_available():
        print("torch has no CUDA build here: no comparison")
        return 0
    dt = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(a.precision, torch.float32)
    torch.backends.cuda.matmul.allow_tf32 = a.precision == "tf32"
    ta = torch.from_numpy(feeds["a"]).cuda().to(dt)
    tb = torch.from_numpy(feeds["b"]).cuda().to(dt)
    torch.matmul(ta, tb)
    torch.cuda.synchronize()
    tt = []
    for _ in range(a.iters):
        t0 = time.perf_counter()
        torch.matmul(ta, tb)
        torch.cuda.synchronize()
        tt.append(time.perf_counter() - t0)
    print(f"torch {dt}: {min(tt) * 1e3:.3f} ms, {flops / min(tt) / 1e12:.2f} TFLOP/s "
          f"(portc at {min(tt) / best * 100:.0f}% of torch)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
