"""Time import, compile and one reference run per model; print a table.

Usage: .venv/bin/python bench/reference_models.py [--examples DIR]
(DIR from examples/build_examples.py; the onnx package's light_* models are always included.)
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import onnx

from portc.compiler.api import compile as compile_model
from portc.compiler.api import import_model, random_inputs

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def bench(path: Path) -> tuple[str, float, float, float, int]:
    t0 = time.perf_counter()
    imported = import_model(path)
    t1 = time.perf_counter()
    cm = compile_model(None, target="reference", imported=imported)
    t2 = time.perf_counter()
    cm.run(random_inputs(imported.program, 0))
    t3 = time.perf_counter()
    n_ops = len(imported.program.main.body.block.ops)
    return path.name, t1 - t0, t2 - t1, t3 - t2, n_ops


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=Path)
    a = ap.parse_args()
    models = sorted(LIGHT.glob("light_*.onnx"))
    if a.examples:
        models = sorted(a.examples.glob("*.onnx")) + sorted(a.examples.glob("*.pt2")) + models
    print(f"{'model':<28} {'ops':>6} {'import s':>9} {'compile s':>10} {'run s':>8}")
    for m in models:
        name, ti, tc, tr, n = bench(m)
        print(f"{name:<28} {n:>6} {ti:>9.2f} {tc:>10.2f} {tr:>8.2f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS {peak:.2f} GiB")


if __name__ == "__main__":
    main()
