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
from xdsl.dialects.builtin import (
    DenseArrayBase,
    FloatAttr,
    IntegerAttr,
    ModuleOp,
    StringAttr,
    f64,
    i1,
)
from xdsl.ir import Operation, SSAValue

from portc.compiler.errors import IRError
from portc.compiler.program import Program
from portc.compiler.weights import WeightStore
from portc.dialects import dtypes
from portc.dialects import graph as g

#: discardable attribute carrying [lo, hi] of a matmul/conv's activation operand
ACT_RANGE_ATTR = "portc.act_range"
#: per-input-channel (last axis) statistics of a matmul's activation: max |x| and mean x^2,
#: used by SmoothQuant-style migration (int8) and activation-aware scaling (w4/w2)
CHAN_ABSMAX_ATTR = "portc.act_chan_absmax"
CHAN_SQMEAN_ATTR = "portc.act_chan_sqmean"
#: per-layer SmoothQuant migration strength chosen by ``tune_int8``; when present, the op's
#: ``portc.act_range`` is the range of the *smoothed* activation ``x / s`` (already clipped)
SMOOTH_ALPHA_ATTR = "portc.smooth_alpha"
#: per-layer choice of an asymmetric (zero-point) activation quantizer, chosen by ``tune_int8``
ACT_ASYM_ATTR = "portc.act_asym"
#: name (in the weight store) of a matmul activation's second-moment matrix ``E[x x^T]`` [K, K]
#: (float64), the GPTQ Hessian up to a factor; written by ``annotate(module, weights)`` only
HESSIAN_ATTR = "portc.act_hessian"

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
    #: matmul keys only: per-channel max |x| and mean x^2 over the activation's last axis
    chan_absmax: dict[str, list[float]] = field(default_factory=dict)
    chan_sqmean: dict[str, list[float]] = field(default_factory=dict)
    #: matmul keys only, with ``calibrate(..., hessian=True)``: ``E[x x^T]`` over all rows [K, K]
    #: (not serialized by ``to_json``; too large for text, and recomputable)
    hessians: dict[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)
    #: matmul keys only, with ``calibrate(..., samples=R)``: up to R activation rows [R, K]
    #: (float32) kept for layer-wise scale searches (``tune_int8``); not serialized
    rows: dict[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)
    #: matmul keys only: per-channel min and max of the activation (for searches; not serialized)
    chan_lo: dict[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)
    chan_hi: dict[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)
    #: tuned per-layer choices (``tune_int8``): SmoothQuant strength and zero-point use; for a
    #: key in ``smooth``, ``ranges[key]`` is the clipped range of the smoothed activation
    smooth: dict[str, float] = field(default_factory=dict)
    asym: dict[str, bool] = field(default_factory=dict)

    def absmax(self, key: str) -> float:
        lo, hi = self.ranges[key]
        return max(abs(lo), abs(hi))

    def annotate(self, module: ModuleOp, weights: WeightStore | None = None) -> int:
        """Write ranges onto the consumer ops as ``portc.act_range``; returns how many.

        With ``weights``, each Hessian is also added to that store and named on its op by
        ``portc.act_hessian`` (matrices are too large for IR attributes).

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
            if key in self.smooth:
                op.attributes[SMOOTH_ALPHA_ATTR] = FloatAttr(float(self.smooth[key]), f64)
            if key in self.asym:
                op.attributes[ACT_ASYM_ATTR] = IntegerAttr(int(self.asym[key]), i1)
            for attr, table in ((CHAN_ABSMAX_ATTR, self.chan_absmax),
                                (CHAN_SQMEAN_ATTR, self.chan_sqmean)):
                if key in table:
                    op.attributes[attr] = DenseArrayBase.from_list(f64, list(table[key]))
            if weights is not None and key in self.hessians:
                name = weights.add(self.hessians[key], f"calib.hessian.{key}")
                op.attributes[HESSIAN_ATTR] = StringAttr(name)
        return n

    def to_json(self) -> str:
        return json.dumps({"method": self.method, "percentile": self.percentile,
                           "ranges": {k: list(v) for k, v in self.ranges.items()},
                           "chan_absmax": self.chan_absmax, "chan_sqmean": self.chan_sqmean,
                           "smooth": self.smooth, "asym": self.asym},
                          indent=1)

    @staticmethod
    def from_json(text: str) -> Calibration:
        d = json.loads(text)
        return Calibration(d["method"], float(d["percentile"]),
                           {k: (float(v[0]), float(v[1])) for k, v in d["ranges"].items()},
                           {k: [float(x) for x in v] for k, v in d.get("chan_absmax", {}).items()},
                           {k: [float(x) for x in v] for k, v in d.get("chan_sqmean", {}).items()},
                           smooth={k: float(v) for k, v in d.get("smooth", {}).items()},
                           asym={k: bool(v) for k, v in d.get("asym", {}).items()})

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


def smooth_alpha_of(op: Operation) -> float | None:
    """The tuned per-layer SmoothQuant strength of ``op`` (``SMOOTH_ALPHA_ATTR``), or None."""
    a = op.attributes.get(SMOOTH_ALPHA_ATTR)
    return float(a.value.data) if isinstance(a, FloatAttr) else None


def act_asym_of(op: Operation) -> bool | None:
    """The tuned per-layer zero-point choice of ``op`` (``ACT_ASYM_ATTR``), or None."""
    a = op.attributes.get(ACT_ASYM_ATTR)
    return bool(a.value.data) if isinstance(a, IntegerAttr) else None


def chan_stat(op: Operation, attr: str) -> np.ndarray | None:
    """A per-channel statistic (``CHAN_ABSMAX_ATTR`` / ``CHAN_SQMEAN_ATTR``) as float64, or None."""
    a = op.attributes.get(attr)
    if not isinstance(a, DenseArrayBase):
        return None
    return np.asarray(a.get_values(), np.float64)


def calibrate(program: Program, batches: Iterable[Mapping[str, np.ndarray]],
              method: str = "minmax", percentile: float = 99.99, seed: int = 0,
              hessian: bool = False, samples: int = 0) -> Calibration:
    """Run ``program`` on each input batch and record activation ranges.

    ``minmax`` keeps the exact extremes; ``percentile`` clips outliers to the ``percentile``-th
    (and ``100 - percentile``-th) percentile of the observed values, which spends the int8 levels
    on the bulk of the distribution rather than on one rare spike.

    ``hessian=True`` also accumulates ``E[x x^T]`` of each matmul activation (rows = all leading
    axes), the layer Hessian GPTQ error compensation needs (``quantize-w4{gptq}``).

    ``samples=R`` keeps up to R activation rows of every matmul (a seeded uniform subset over
    all batches; each batch contributes at most R rows, so memory stays bounded) plus
    per-channel min/max, the data ``tune_int8`` searches
    smoothing and clipping on.
    """
    from portc.runtimes.reference.interpreter import run_program

    if method not in METHODS:
        raise ValueError(f"unknown calibration method '{method}' (known: {', '.join(METHODS)})")
    if not 50.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (50, 100], got {percentile}")
    ops = quantizable_ops(program.module)
    watch: dict[SSAValue, list[str]] = {}
    matmul_keys: set[str] = set()
    for i, op in enumerate(ops):
        watch.setdefault(op.operands[0], []).append(op_key(op, i))
        if isinstance(op, g.MatMulOp):
            matmul_keys.add(op_key(op, i))
    cmax: dict[str, np.ndarray] = {}
    csq: dict[str, np.ndarray] = {}
    crows: dict[str, int] = {}
    hess: dict[str, np.ndarray] = {}
    kept: dict[str, list[np.ndarray]] = {}
    clo: dict[str, np.ndarray] = {}
    chi: dict[str, np.ndarray] = {}
    rng = np.random.default_rng(seed)
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    pct_samples: dict[str, list[np.ndarray]] = {}

    def record(value: SSAValue, arr: np.ndarray) -> None:
        keys = watch.get(value)
        if not keys or dtypes.from_numpy(arr.dtype).kind != "float":
            return
        a = np.asarray(arr, dtype=np.float64).ravel()
        if a.size == 0:
            return
        mn, mx = float(a.min()), float(a.max())
        sub = a if a.size <= MAX_SAMPLES_PER_BATCH else rng.choice(a, MAX_SAMPLES_PER_BATCH)
        rows = None
        if arr.ndim >= 1 and any(k in matmul_keys for k in keys):
            rows = np.asarray(arr, dtype=np.float64).reshape(-1, arr.shape[-1])
            rmax, rsq = np.abs(rows).max(axis=0), (rows * rows).sum(axis=0)
            xtx = rows.T @ rows if hessian else None
        for k in keys:
            if rows is not None and k in matmul_keys:
                cmax[k] = np.maximum(cmax[k], rmax) if k in cmax else rmax
                csq[k] = csq[k] + rsq if k in csq else rsq
                crows[k] = crows.get(k, 0) + rows.shape[0]
                if xtx is not None:
                    hess[k] = hess[k] + xtx if k in hess else xtx.copy()
                if samples:
                    rlo, rhi = rows.min(axis=0), rows.max(axis=0)
                    clo[k] = np.minimum(clo[k], rlo) if k in clo else rlo
                    chi[k] = np.maximum(chi[k], rhi) if k in chi else rhi
                    pick = rows if rows.shape[0] <= samples else rows[np.sort(
                        rng.choice(rows.shape[0], samples, replace=False))]
                    kept.setdefault(k, []).append(pick.astype(np.float32))
            lo[k] = min(lo.get(k, mn), mn)
            hi[k] = max(hi.get(k, mx), mx)
            if method == "percentile":
                pct_samples.setdefault(k, []).append(sub)

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
            allv = np.concatenate(pct_samples[k])
            ranges[k] = (min(0.0, float(np.percentile(allv, 100.0 - percentile))),
                         max(0.0, float(np.percentile(allv, percentile))))
        else:
            ranges[k] = (lo[k], hi[k])
    rows_kept: dict[str, np.ndarray] = {}
    for k, parts in kept.items():
        allr = np.concatenate(parts)
        if allr.shape[0] > samples:
            allr = allr[np.sort(rng.choice(allr.shape[0], samples, replace=False))]
        rows_kept[k] = allr
    return Calibration(method, percentile, ranges,
                       {k: [float(x) for x in v] for k, v in cmax.items()},
                       {k: [float(x) for x in csq[k] / crows[k]] for k in csq},
                       {k: hess[k] / crows[k] for k in hess}, rows_kept, clo, chi)


def token_batches(program: Program, n: int, seed: int = 0, vocab: tuple[int, int] = (1000, 30522),
                  min_len: int = 8, cls_sep: tuple[int, int] | None = (101, 102)
                  ) -> list[dict[str, np.ndarray]]:
    """Realistic calibration inputs for a BERT-style encoder: token ids drawn from the
    vocabulary range, framed by [CLS]/[SEP], padded to a random length with the attention mask
    zero on the padding, and token types zero. Inputs named other than ``input_ids``,
    ``attention_mask`` and ``token_type_ids`` are left to ``random_inputs``."""
    from portc.compiler.api import random_inputs

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        f = random_inputs(program, seed + i)
        ids = f.get("input_ids")
        if ids is None:
            out.append(f)
            continue
        b, t = ids.shape
        new = rng.integers(vocab[0], vocab[1], ids.shape)
        mask = np.zeros(ids.shape, np.int64)
        for r in range(b):
            length = int(rng.integers(min(min_len, t), t + 1))
            mask[r, :length] = 1
            new[r, length:] = 0
            if cls_sep is not None and length >= 2:
                new[r, 0], new[r, length - 1] = cls_sep
        f["input_ids"] = new.astype(ids.dtype)
        if "attention_mask" in f:
            f["attention_mask"] = mask.astype(f["attention_mask"].dtype)
        if "token_type_ids" in f:
            f["token_type_ids"] = np.zeros_like(f["token_type_ids"])
        out.append(f)
    return out
