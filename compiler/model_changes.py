"""Apply the model-changing passes a user asked for (``--quantize``, ``--sparsity``) and report
what they did and cost.

The transformed program becomes the model every target is checked against (bit-exact where its
arithmetic is integer); accuracy against the unchanged model is measured separately on the same
inputs and reported, never assumed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from portc.compiler.errors import InputError
from portc.compiler.program import Program

QUANTIZE_SCHEMES = ("int8", "w4", "w2", "fp8")


@dataclass
class ModelChangeOptions:
    quantize: str | None = None
    group_size: int | None = None
    calib: str | None = None
    calib_method: str = "minmax"
    percentile: float = 99.99
    sparsity: str | None = None
    #: int8 activation scales: "per_tensor" (static, calibrated) or "per_token" (dynamic rows)
    act_granularity: str = "per_tensor"
    #: capacity factor for every moe.moe op (None keeps the model's; 0 = unlimited)
    moe_capacity_factor: float | None = None
    #: w4/w2: GPTQ error compensation with AWQ scaling and act-order (needs calibration data)
    gptq: bool = False
    gptq_damp: float = 0.1
    #: int8 per-tensor: search SmoothQuant strength, clipping and zero point per layer on the
    #: calibration data (``tune_int8``); False gives plain min-max/percentile scales
    int8_tune: bool = True
    #: int8 per-tensor: keep the most sensitive matmuls in float (at most ``int8_max_float``)
    #: until every output's cosine against the float model on a held-out batch reaches this
    #: (0 disables the fallback)
    int8_min_cosine: float = 0.99
    int8_max_float: int = 4

    @property
    def any(self) -> bool:
        return bool(self.quantize or self.sparsity or self.moe_capacity_factor is not None)

    @property
    def rounds_activations(self) -> bool:
        """Whether the changed model rounds activations at run time (int8 and fp8 quantize
        them; weight-only w4/w2, pruning and MoE capacity do not)."""
        return self.quantize in ("int8", "fp8")


def calibration_batches(program: Program, path: str | None, seed: int,
                        n_random: int = 8) -> tuple[list[dict[str, np.ndarray]], str]:
    """Batches from an .npz (arrays shaped like the inputs, or with one extra leading batch
    dim), else seeded random inputs; returns the batches and where they came from."""
    from portc.compiler.api import load_npz, random_inputs

    specs = program.input_specs()
    if path is None:
        return [random_inputs(program, seed + 1000 + i) for i in range(n_random)], \
            f"{n_random} random batches (pass --calib data.npz for representative data)"
    arrays = load_npz(path)
    missing = [n for n in specs if n not in arrays]
    if missing:
        raise InputError(f"calibration file '{path}' lacks input(s) {missing}")
    counts = set()
    for name, spec in specs.items():
        a = arrays[name]
        if a.ndim == spec.rank + 1:
            counts.add(a.shape[0])
        elif a.ndim == spec.rank:
            counts.add(0)
        else:
            raise InputError(f"calibration array '{name}' has shape {list(a.shape)}; expected "
                             f"{list(spec.shape)} or [N, *{list(spec.shape)}]")
    if len(counts) != 1:
        raise InputError(f"calibration arrays in '{path}' disagree on the batch count")
    n = counts.pop()
    if n == 0:
        return [{k: arrays[k] for k in specs}], f"1 batch from {path}"
    return [{k: arrays[k][i] for k in specs} for i in range(n)], f"{n} batches from {path}"


def _quantize(program: Program, opts: ModelChangeOptions, seed: int
              ) -> tuple[Program, dict[str, Any]]:
    from portc.passes.calibration import calibrate
    from portc.passes.quantize import (
        QuantizeFP8Pass,
        QuantizeInt8Pass,
        QuantizeW2Pass,
        QuantizeW4Pass,
        quantize,
    )

    scheme = opts.quantize
    info: dict[str, Any] = {"pass": f"quantize-{scheme}"}
    if scheme == "int8" and opts.act_granularity == "per_tensor" and opts.int8_tune:
        return _quantize_int8_tuned(program, opts, seed, info)
    if scheme in ("int8", "fp8"):
        batches, source = calibration_batches(program, opts.calib, seed)
        try:
            cal = calibrate(program, batches, opts.calib_method, opts.percentile)
        except ValueError as e:
            raise InputError(f"calibration: {e}") from e
        info["calibration"] = f"{opts.calib_method} over {source}"
        pass_ = (QuantizeInt8Pass(act_granularity=opts.act_granularity) if scheme == "int8"
                 else QuantizeFP8Pass())
        if scheme == "int8":
            info["activations"] = opts.act_granularity
        return quantize(program, pass_, cal), info
    cls = QuantizeW4Pass if scheme == "w4" else QuantizeW2Pass
    kwargs: dict[str, Any] = {"group_size": opts.group_size} if opts.group_size else {}
    cal = None
    if opts.gptq:
        batches, source = calibration_batches(program, opts.calib, seed)
        cal = calibrate(program, batches, "minmax", hessian=True)
        kwargs.update(act_aware=True, gptq=True, gptq_act_order=True, gptq_damp=opts.gptq_damp)
        info["calibration"] = f"Hessians over {source}"
        info["method"] = f"gptq (act-order, AWQ scaling, damp {opts.gptq_damp})"
    try:
        pass_ = cls(**kwargs)
        info["group_size"] = pass_.group_size
        return quantize(program, pass_, cal), info
    except ValueError as e:
        raise InputError(f"--quantize {scheme}: {e}") from e


#: activation rows per matmul kept for the int8 layer-wise search
TUNE_ROWS = 512


def _quantize_int8_tuned(program: Program, opts: ModelChangeOptions, seed: int,
                         info: dict[str, Any]) -> tuple[Program, dict[str, Any]]:
    """Static per-tensor int8 with per-layer tuned SmoothQuant strength, clipping and zero
    point, then the mixed-precision fallback checked on a held-out batch (a calibration batch
    would flatter the tuned scales). Reports every layer's choice and error. The tuned
    clipping (searched on the layer output error) replaces the calibrated range of every tuned
    matmul, so ``--calib-method percentile`` then only matters for convs."""
    from portc.compiler.api import random_inputs
    from portc.passes.calibration import calibrate
    from portc.passes.quantize import quantize_int8_with_fallback, tune_int8

    batches, source = calibration_batches(program, opts.calib, seed)
    if opts.calib is not None and len(batches) >= 2:  # the user's data: hold out its last batch
        source += " (the last held out from calibration for the fallback check)"
        batches, held_out = batches[:-1], batches[-1:]
    else:
        held_out = [random_inputs(program, seed + 2000)]
    try:
        cal = calibrate(program, batches, opts.calib_method, opts.percentile, samples=TUNE_ROWS)
    except ValueError as e:
        raise InputError(f"calibration: {e}") from e
    tuned, choices = tune_int8(program, cal)
    quantized, fallbacks = quantize_int8_with_fallback(
        program, tuned, choices, held_out, opts.int8_min_cosine, opts.int8_max_float)
    info["calibration"] = f"{opts.calib_method} over {source}"
    info["activations"] = "per_tensor (static), tuned per layer"
    info["int8_layers"] = {
        c.key: f"smooth={c.alpha:g} {'asym' if c.asym else 'sym'} clip={c.clip:g} "
               f"err={c.rel_error:.2e} (min-max {c.baseline:.2e})" for c in choices}
    info["fallback_to_float"] = {f["key"]: f["reason"] for f in fallbacks} or "none needed"
    return quantized, info


def _sparsify(program: Program, spec: str) -> tuple[Program, dict[str, Any]]:
    from portc.compiler.pipeline import run_passes
    from portc.passes.sparsify import Sparsify24Pass, SparsifyPass

    if spec == "2:4":
        pass_: Any = Sparsify24Pass()
    else:
        try:
            fraction = float(spec)
        except ValueError:
            fraction = -1.0
        if not 0.0 <= fraction <= 1.0:
            raise InputError(f"--sparsity '{spec}' must be 2:4 or a fraction in [0, 1]")
        pass_ = SparsifyPass(fraction=fraction)
    pruned = Program(program.module.clone(), program.weights.subset(set(program.weights)))
    run_passes(pruned, [pass_])
    return pruned, {"pass": pass_.name}


def _set_moe_capacity(program: Program, factor: float) -> tuple[Program, dict[str, Any]]:
    from xdsl.dialects.builtin import FloatAttr, f64

    from portc.dialects import moe

    if factor < 0:
        raise InputError(f"--moe-capacity-factor {factor} must be >= 0 (0 = unlimited)")
    changed = Program(program.module.clone(), program.weights)
    ops = [op for op in changed.module.walk() if isinstance(op, moe.MoEOp)]
    if not ops:
        raise InputError("--moe-capacity-factor given, but the model has no MoE block (moe.moe)")
    for op in ops:
        op.properties["capacity_factor"] = FloatAttr(float(factor), f64)
    info: dict[str, Any] = {"pass": "moe-capacity", "capacity_factor": factor,
                            "moe_ops": len(ops)}
    return changed, info


def apply_model_changes(program: Program, opts: ModelChangeOptions, seed: int = 0,
                        eval_inputs: Mapping[str, np.ndarray] | None = None
                        ) -> tuple[Program, list[dict[str, Any]]]:
    """Quantize and/or prune; each step's report compares against the unchanged model."""
    from portc.compiler.api import random_inputs
    from portc.passes.quantize import quantization_report
    from portc.passes.sparsify import sparsity_report

    if opts.quantize and opts.quantize not in QUANTIZE_SCHEMES:
        raise InputError(f"--quantize '{opts.quantize}' is not one of {', '.join(QUANTIZE_SCHEMES)}")
    feeds = dict(eval_inputs) if eval_inputs is not None else random_inputs(program, seed)
    reports: list[dict[str, Any]] = []
    current = program
    if opts.moe_capacity_factor is not None:
        current, info = _set_moe_capacity(current, opts.moe_capacity_factor)
        from portc.passes.moe_routing import moe_drop_statistics

        for i, st in enumerate(moe_drop_statistics(current, feeds)):
            info[f"moe{i}"] = dict(st)
        from portc.runtimes.reference.interpreter import run_program

        base, new = run_program(program, feeds), run_program(current, feeds)
        info["outputs"] = {n: _accuracy(base[n], new[n]) for n in base}
        reports.append(info)
    if opts.sparsity:
        pruned, info = _sparsify(current, opts.sparsity)
        info.update(sparsity_report(program, pruned, feeds))
        reports.append(info)
        current = pruned
    if opts.quantize:
        quantized, info = _quantize(current, opts, seed)
        info.update(quantization_report(program, quantized, feeds))
        reports.append(info)
        current = quantized
    current.verify()
    return current, reports


def _accuracy(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    a, b = ref.astype(np.float64).ravel(), got.astype(np.float64).ravel()
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    cos = float(a @ b / denom) if denom else 1.0
    return {"max_abs_error": float(np.max(np.abs(a - b))) if a.size else 0.0, "cosine": cos}


def format_reports(reports: list[dict[str, Any]]) -> str:
    """One block per pass: what it did (bytes, MACs, ops) and what it cost (accuracy)."""
    lines = []
    for rep in reports:
        lines.append(f"{rep['pass']}:")
        for key, val in rep.items():
            if key == "pass":
                continue
            if isinstance(val, dict):
                for sub, v in val.items():
                    lines.append(f"    {key}.{sub}: {_fmt(v)}")
            else:
                lines.append(f"    {key}: {_fmt(val)}")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items())
    return str(v)


def write_report(path: Path, reports: list[dict[str, Any]]) -> None:
    import json

    path.write_text(json.dumps(reports, indent=2, default=str) + "\n")
