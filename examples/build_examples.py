"""Build the example models into ONNX and torch.export artifacts.

Usage::

    python examples/build_examples.py --out out/examples

writes, for each model in ``models.EXAMPLES`` (mlp, small_cnn, tiny_transformer),
``<out>/<name>.onnx`` (single file, static shapes, opset 18) and ``<out>/<name>.pt2``
(``torch.export.save``). These are the inputs of the README's first ``portc compile`` /
``portc verify`` runs, so the script is deterministic (seeded weights, metadata stripped) and
fast (a few seconds on a laptop CPU). Before writing each file it checks that onnxruntime
reproduces torch's output, so a broken export is caught here rather than blamed on portc.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from export_utils import (
    OPSET,
    export_onnx,
    export_pt2,
    file_size,
    format_histogram,
    op_histogram,
    run_onnxruntime,
)
from models import EXAMPLES, ExampleSpec


@dataclass(frozen=True)
class BuiltExample:
    """What one example produced; returned so tests and callers need not re-parse the files."""

    name: str
    onnx_path: Path
    pt2_path: Path
    op_histogram: dict[str, int]
    max_abs_err: float
    seconds: float


def build_one(spec: ExampleSpec, out_dir: Path, seed: int = 0) -> BuiltExample:
    """Export one example to ``.onnx`` and ``.pt2`` and cross-check onnxruntime against torch."""
    start = time.perf_counter()
    model, inputs = spec.build(seed)
    onnx_path = out_dir / f"{spec.name}.onnx"
    pt2_path = out_dir / f"{spec.name}.pt2"
    proto = export_onnx(
        model, inputs, onnx_path, input_names=spec.input_names, output_names=spec.output_names
    )
    export_pt2(model, inputs, pt2_path)

    with torch.no_grad():
        expected = model(*inputs).numpy()
    feeds = {name: t.numpy() for name, t in zip(spec.input_names, inputs, strict=True)}
    (got,) = run_onnxruntime(onnx_path, feeds)
    err = float(np.max(np.abs(got - expected)))
    if not np.allclose(got, expected, rtol=1e-4, atol=1e-5):
        raise RuntimeError(f"{spec.name}: onnxruntime differs from torch (max abs err {err:.3g})")
    return BuiltExample(
        name=spec.name,
        onnx_path=onnx_path,
        pt2_path=pt2_path,
        op_histogram=dict(op_histogram(proto)),
        max_abs_err=err,
        seconds=time.perf_counter() - start,
    )


def build_all(out_dir: Path, names: Sequence[str] | None = None) -> list[BuiltExample]:
    """Build the named examples (all of them by default) into ``out_dir``, creating it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    selected = list(EXAMPLES) if names is None else list(names)
    unknown = sorted(set(selected) - set(EXAMPLES))
    if unknown:
        raise KeyError(f"unknown example(s) {unknown}; choose from {sorted(EXAMPLES)}")
    return [build_one(EXAMPLES[name], out_dir) for name in selected]


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: build, then print one table row per model and its op histogram."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument(
        "--only", nargs="+", choices=sorted(EXAMPLES), help="build only these examples"
    )
    args = parser.parse_args(argv)

    start = time.perf_counter()
    built = build_all(args.out, args.only)
    print(f"{'model':<18}{'onnx':>12}{'pt2':>12}{'nodes':>7}{'max|err|':>11}{'time':>8}")
    for b in built:
        print(
            f"{b.name:<18}{file_size(b.onnx_path):>12}{file_size(b.pt2_path):>12}"
            f"{sum(b.op_histogram.values()):>7}{b.max_abs_err:>11.2e}{b.seconds:>7.2f}s"
        )
    for b in built:
        print(f"  {b.name} ops: {format_histogram(b.op_histogram)}")
    print(
        f"wrote {2 * len(built)} files (opset {OPSET}) to {args.out} "
        f"in {time.perf_counter() - start:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
