"""Activation calibration for post-training quantization.

Quantizing activations needs their range, which only running the model on representative inputs
reveals. ``calibrate`` runs the reference interpreter over calibration inputs and records, through
the interpreter's ``on_op`` hook, the range of every value that feeds a ``graph.matmul`` or
``graph.conv`` as its activation (operand 0).

Results are keyed by the consumer's ordinal among matmul/conv ops in ``@main`` (``"graph.conv#0"``,
``"graph.matmul#3"``): SSA values have no stable identity across printing and passes, and name
hints are neither unique nor always present. ``Calibration.annotate`` then writes each range onto
its consumer op as the discardable attribute ``portc.act_range = array<f64: lo, hi>``. The quantize
passes read only that attribute, so calibration travels *with the IR*: it survives MLIR text round
trips, ``portc opt`` runs on an annotated file, and passes that add or remove other ops in between;
the passes themselves keep only primitive options, as xDSL's pass-pipeline syntax requires.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from xdsl.dialects.builtin import DenseArrayBase, ModuleOp, f64
from xdsl.ir import Operation, SSAValue

from portc.compiler.errors import IRError
from portc.compiler.program import Program
from portc.dialects import dtypes
from portc.dialects import graph as g

#: discardable attribute carrying [lo, hi] of a matmul/conv's activation operand
ACT_RANGE_ATTR = "portc.act_range"

#: at most this many samples per value and batch are kept for percentiles (memory stays bounded)
MAX_SAMPLES_PER_BATCH = 1 << 18

METHODS = ("minmax", "percentile")


def quantizable_ops(module: ModuleOp) -> list[Operation]:
    """Matmul/conv ops in program order: the ordinals behind calibration keys."""
    return [op for op in module.walk() if isinstance(op, (g.MatMulOp, g.ConvOp))]


def op_key(op: Operation, ordinal: int) -> str:
    return f"{op.name}#{ordinal}"


@dataclass
class Calibration:
    """Activation ranges ``key -> (lo, hi)`` for the activation operand of each matmul/conv."""

    method: str = "minmax"
    percentile: float = 99.99
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)

    def absmax(self, key: str) -> float:
        lo, hi = self.ranges[key]
        return max(abs(lo), abs(hi))

    def annotate(self, module: ModuleOp) -> int:
        """Write ranges onto the consumer ops as ``portc.act_range``; returns how many.

        Refuses a module whose matmul/conv count differs from the calibrated one: ordinals would
        then point at different ops and silently mis-scale them.
        """
        ops = quantizable_ops(module)
        keys = [op_key(op, i) for i, op in enumerate(ops)]
        unknown = set(self.ranges) - set(keys)
        if unknown:
            raise IRError(f"calibration keys {sorted(unknown)[:3]} do not name matmul/conv ops of "
                          "this module; calibrate the program you quantize")
        n = 0
        for op, key in zip(ops, keys, strict=True):
            if key in self.ranges:
                lo, hi = self.ranges[key]
                op.attributes[ACT_RANGE_ATTR] = DenseArrayBase.from_list(f64, [lo, hi])
                n += 1
        return n

    def to_json(self) -> str:
        return json.dumps({"method": self.method, "percentile": self.percentile,
                           "ranges": {k: list(v) for k, v in self.ranges.items()}}, indent=1)

    @staticmethod
    def from_json(text: str) -> Calibration:
        d = json.loads(text)
        return Calibration(d["method"], float(d["percentile"]),
                           {k: (float(v[0]), float(v[1])) for k, v in d["ranges"].items()})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @staticmethod
    def load(path: str | Path) -> Calibration:
        return Calibration.from_json(Path(path).read_text())


def act_range(op: Operation) -> tuple[float, float] | None:
    attr = op.attributes.get(ACT_RANGE_ATTR)
    if not isinstance(attr, DenseArrayBase):
        return None
    lo, hi = attr.get_values()
    return float(lo), float(hi)


def calibrate(program: Program, batches: Iterable[Mapping[str, np.ndarray]],
              method: str = "minmax", percentile: float = 99.99, seed: int = 0) -> Calibration:
    """Run ``program`` on each input batch and record activation ranges.

    ``minmax`` keeps the exact extremes; ``percentile`` clips outliers to the ``percentile``-th
    (and ``100 - percentile``-th) percentile of the observed values, which spends the int8 levels
    on the bulk of the distribution rather than on one rare spike.
    """
    from portc.runtimes.reference.interpreter import run_program

    if method not in METHODS:
        raise ValueError(f"unknown calibration method '{method}' (known: {', '.join(METHODS)})")
    if not 50.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (50, 100], got {percentile}")
    ops = quantizable_ops(program.module)
    watch: dict[SSAValue, list[str]] = {}
    for i, op in enumerate(ops):
        watch.setdefault(op.operands[0], []).append(op_key(op, i))
    rng = np.random.default_rng(seed)
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    samples: dict[str, list[np.ndarray]] = {}

    def record(value: SSAValue, arr: np.ndarray) -> None:
        keys = watch.get(value)
        if not keys or dtypes.from_numpy(arr.dtype).kind != "float":
            return
        a = np.asarray(arr, dtype=np.float64).ravel()
        if a.size == 0:
            return
        mn, mx = float(a.min()), float(a.max())
        sub = a if a.size <= MAX_SAMPLES_PER_BATCH else rng.choice(a, MAX_SAMPLES_PER_BATCH)
        for k in keys:
            lo[k] = min(lo.get(k, mn), mn)
            hi[k] = max(hi.get(k, mx), mx)
            if method == "percentile":
                samples.setdefault(k, []).append(sub)

    def on_op(op: Operation, results: list[np.ndarray]) -> None:
        for r, arr in zip(op.results, results, strict=True):
            record(r, arr)

    n = 0
    for feeds in batches:
        n += 1
        for arg, name in zip(program.main.args, program.input_names, strict=True):
            if name in feeds:
                record(arg, np.asarray(feeds[name]))
        run_program(program, feeds, on_op=on_op)
    if n == 0:
        raise ValueError("calibration needs at least one input batch")
    ranges: dict[str, tuple[float, float]] = {}
    for k in lo:
        if method == "percentile":
            allv = np.concatenate(samples[k])
            ranges[k] = (min(0.0, float(np.percentile(allv, 100.0 - percentile))),
                         max(0.0, float(np.percentile(allv, percentile))))
        else:
            ranges[k] = (lo[k], hi[k])
    return Calibration(method, percentile, ranges)
