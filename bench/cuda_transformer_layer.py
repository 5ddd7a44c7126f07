"""Time a transformer encoder layer compiled by the cuda target on a real GPU against torch.

Usage: .venv/bin/python bench/cuda_transformer_layer.py [--seq 128 --d 384 --heads 6]
                                   [--precision fp32|tf32|fp16|bf16] [--iters 20] [--quick]

The layer is torch.nn.TransformerEncoderLayer (post-norm, GELU-free default ReLU FFN of 4d)
exported with torch.export and imported by portc's torch frontend; portc's launch sequence
runs through the CUDA driver and torch runs the same module on the same GPU. Without a GPU it
says so and exits 0.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from portc.runtimes.cuda_driver import unavailable


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="seq 32, 3 iterations")
    a = ap.parse_args()
    if a.quick:
        a.seq, a.iters = 32, 3
    why = unavailable()
    if why is not None:
        print(f"cuda_transformer_layer: no GPU here ({why}); nothing to time")
        return 0
    import torch

    from portc.compiler import api
    from portc.compiler.kernel_targets import BufferLayout
    from portc.runtimes.cuda_driver import GpuExecutable

    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(a.d, a.heads, 4 * a.d, dropout=0.0,
                                             batch_first=True).eval()
    x = torch.randn(1, a.seq, a.d)
    imported = api.import_model(layer, (x,))
    cm = api.compile(None, target="cuda", imported=imported, options={"precision": a.precision})
    art = cm.artifact
    print(art.manifest["compile_report"].splitlines()[0])
    exe = GpuExecutable(art.files["module.ptx"], BufferLayout(art.manifest),
                        art.manifest["cuda"]["launches"], art.weights)
    name = imported.program.input_names[0]
    out, _ = exe.run({name: x.numpy()})
    with torch.no_grad():
        ref = layer(x).numpy()
    err = float(np.abs(next(iter(out.values())) - ref).max())
    t = []
    for _ in range(a.iters):
        t0 = time.perf_counter()
        for ln in exe.launches:
            exe.cx.launch(ln["entry"], ln["grid"], ln["block"],
                          [exe.addr[p] for p in ln["params"]])
        exe.cx.synchronize()
        t.append(time.perf_counter() - t0)
    print(f"portc {a.precision}: {min(t) * 1e3:.3f} ms for {len(exe.launches)} launches, "
          f"max abs error vs torch {err:.2e}")
    if not torch.cuda.is_available():
        print("torch has no CUDA build here: no comparison")
        return 0
    g = layer.cuda()
    xg = x.cuda()
    with torch.no_grad():
        g(xg)
        torch.cuda.synchronize()
        tt = []
        for _ in range(a.iters):
            t0 = time.perf_counter()
            g(xg)
            torch.cuda.synchronize()
            tt.append(time.perf_counter() - t0)
    print(f"torch fp32: {min(tt) * 1e3:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
