"""Target ``ascend``: an Ascend-like NPU (Da Vinci model, ``--soc 910b``) executed by npusim.

Compile: the hardware graph pipeline, the shared graph-to-kernel lowering and buffer plan, then
``passes/lower_npu.py`` (cube path for matmul/conv, vector path for the rest, the scalar unit
for small integer/bool kernels, AI CPU for what the AI core model cannot express) and
``npu-insert-sync``. The bundle carries
``program.npu.mlir`` (the npu dialect's text: what npusim parses and executes), the kernel IR
(``KERNEL_IR_FILE``; AI CPU launches execute kernels from it) and a manifest with the launch
sequence (name, core type, block_dim, GM argument bindings) and the buffer table.

Options (``CompileOptions.extra``): ``soc`` (default ``910b``), ``precision`` (``fp16``
default: cube operands in fp16 with fp32 accumulation, like ATC's ``--precision_mode``
``allow_fp32_to_fp16``; ``bf16``: fp32's range with an 8-bit mantissa, ATC's
``allow_fp32_to_bf16``; ``fp32``: fp32 operands in 16x8 fractals at half the MACs per cube step,
ATC's ``force_fp32``); ``trace`` (a path: npusim writes one Chrome trace per launch next to it,
``<stem>.<launch>.json``). Vector work is fp32 in every mode. Verification tolerances must allow
the rounding of cube operands: ``verify_tolerance`` gives them per precision, and ``portc
verify`` uses them when the user passes no ``--rtol``/``--atol``.

fp16 range. Models whose activations leave fp16's range (|x| > 65504: the random-weight
``light_*`` models reach 5e5) cannot run with fp16 cube operands. A weight that overflows is a
compile-time ``LoweringError``; an activation that overflows sets the launch's overflow status
in npusim (as the hardware's float status register would), and the runtime turns an overflow
in a pack launch -- a narrowing the compiler chose -- into ``NpuOverflowError`` naming the
kernel, the graph op, the buffer and the largest value, and telling the user to pass
``--precision bf16`` or ``fp32``. Overflows of the model's own fp16 arithmetic are its
semantics and are only listed in the stats (``overflows``).

Runtime ``npusim`` (default): every AI-core launch runs on npusim with its race, bounds and
alignment checks; AI CPU launches run on the kernel-IR executor and are charged the SoC
table's modelled AI CPU cost (dispatch plus a per-element loop), so leaving the AI core is
never free in the totals. Stats: total simulated cycles (launches back to back), per-pipe
busy cycles, cube utilisation of the cube launches, and one row per launch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from portc.compiler.artifact import Artifact
from portc.compiler.errors import BundleError
from portc.compiler.kernel_targets import (
    HARDWARE_GRAPH_PIPELINE,
    KERNEL_IR_FILE,
    BufferLayout,
    buffer_manifest,
    lower_for_target,
)
from portc.compiler.program import Program
from portc.compiler.targets import (
    OPERAND_PRECISION_TOLERANCE,
    CompileOptions,
    Runtime,
    Target,
    operand_precision_tolerance,
    register_target,
)
from portc.dialects.npu_soc import PIPES, get_soc

PROGRAM_FILE = "program.npu.mlir"

def verify_tolerance(options: Mapping[str, Any]) -> tuple[float, float, str]:
    """(rtol, atol, why) for verifying an ascend port compiled with ``options``: the cube's
    operands round to ``--precision`` (fp16 by default), so ``portc verify`` compares at that
    precision's tolerance when the user gives no ``--rtol``/``--atol``."""
    return operand_precision_tolerance("ascend", str(options.get("precision") or "fp16"))


def compile_ascend(program: Program, options: CompileOptions) -> Artifact:
    from portc.passes.lower_npu import lower_kernel_module

    soc = str(options.extra.get("soc") or "910b")
    precision = str(options.extra.get("precision") or "fp16")
    kp = lower_for_target(program)
    lowered = lower_kernel_module(kp.module, soc, precision, weights=kp.weights)
    for name, arr in lowered.constants.items():
        kp.weights.put(name, arr)
    manifest: dict[str, Any] = {
        **buffer_manifest(kp.module),
        "npu": {"soc": soc, "precision": precision,
                "launches": [la.manifest() for la in lowered.launches],
                "temps": [{"name": n, "dtype": dt, "elements": e,
                           **({"weight": n} if n in lowered.constants else {})}
                          for n, (dt, e) in lowered.temps.items()]},
    }
    if options.extra.get("trace"):
        manifest["npu"]["trace"] = str(options.extra["trace"])
    files = {PROGRAM_FILE: lowered.text(), KERNEL_IR_FILE: kp.to_text()}
    return Artifact("ascend", files, kp.weights, manifest)


class NpuSimExecutable:
    """Runs a bundle's launch sequence: npusim for AI-core kernels, the kernel-IR executor for
    AI CPU kernels, over one flat array per buffer."""

    def __init__(self, artifact: Artifact) -> None:
        from portc.compiler.program import parse_program as parse_ir
        from portc.dialects import kernel as k
        from portc.runtimes.npusim import NpuSim, parse_program

        man = artifact.manifest
        if "npu" not in man or PROGRAM_FILE not in artifact.files:
            raise BundleError("not an ascend bundle (no npu launch table or program.npu.mlir); "
                              "recompile with --target ascend")
        self.layout = BufferLayout(man)
        self.weights = artifact.weights
        self.launches = man["npu"]["launches"]
        self.temps = man["npu"]["temps"]
        self.trace = man["npu"].get("trace")
        text = artifact.files[PROGRAM_FILE]
        # a program whose every launch is on the AI CPU has no npu kernel to parse
        self.soc = get_soc(man["npu"]["soc"])
        self.sim = NpuSim(parse_program(text, PROGRAM_FILE), soc=self.soc) \
            if any(la["core"] != "aicpu" for la in self.launches) else None
        self.kir = parse_ir(artifact.files[KERNEL_IR_FILE], artifact.weights, KERNEL_IR_FILE)
        self.kernels = {op.kernel_name(): op for op in k.kernels_of(self.kir.module)}

    def run(self, inputs: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        from portc.dialects import dtypes
        from portc.runtimes.reference.kernel_ir import KernelModuleExecutor

        mem: dict[str, np.ndarray] = {}
        for b in self.layout.buffers:
            init = self.layout.initial_data(b, inputs, self.weights)
            mem[b.name] = (np.array(init, copy=True) if init is not None
                           else np.zeros(b.elements, b.numpy_dtype))
        for t in self.temps:
            mem[t["name"]] = (np.array(self.weights[t["weight"]], copy=True).reshape(-1)
                              if "weight" in t else
                              np.zeros(t["elements"], dtypes.dtype(t["dtype"]).numpy))
        cpu = KernelModuleExecutor(self.kir.module, self.weights)
        rows: list[dict[str, Any]] = []
        self.overflows: list[str] = []
        busy = dict.fromkeys(PIPES, 0.0)
        for la in self.launches:
            if la["core"] == "aicpu":
                op = self.kernels[la["origin"]]
                from portc.dialects import kernel as k

                if isinstance(op, k.SortOp):
                    cpu._sort(op, mem)
                    n = op.rows.value.data * op.n.value.data
                    evals = n * max(1.0, math.log2(max(2, op.n.value.data)))
                else:
                    cpu._generic(op, mem)  # type: ignore[arg-type]
                    evals = float(math.prod(op.extents))  # type: ignore[attr-defined]
                rows.append({"name": la["name"], "core": "aicpu", "role": "aicpu",
                             "origin": la["origin"], "block_dim": 1,
                             "cycles": self.soc.aicpu_launch_cycles
                             + evals * self.soc.aicpu_cycles_per_element,
                             "reason": la.get("reason", "")})
                continue
            trace = None
            if self.trace:
                p = Path(self.trace)
                trace = p.with_name(f"{p.stem}.{la['name']}{p.suffix or '.json'}")
            arrays = {arg: mem[buf] for arg, buf in la["gm_args"].items()}
            assert self.sim is not None
            outs, st = self.sim.run(la["name"], arrays, trace_path=trace)
            if st.overflow is not None:
                self._overflowed(la, st.overflow)
            for arg, buf in la["gm_args"].items():
                mem[buf] = outs[arg].reshape(-1)
            for c in st.cores:
                for p_, v in c.busy.items():
                    busy[p_] += v
            rows.append({"name": la["name"], "core": la["core"], "role": la["role"],
                         "origin": la["origin"], "block_dim": st.block_dim,
                         "cycles": st.cycles, "cube_utilisation": st.cube_utilisation,
                         "pipe_utilisation": st.pipe_utilisation()})
        outs_final = {b.binding: self.layout.shape_output(b, mem[b.name])
                      for b in self.layout.of_kind("output") if b.binding is not None}
        stats = summarise(rows, busy)
        if self.overflows:
            stats["overflows"] = self.overflows
        return outs_final, stats


    def _overflowed(self, la: dict[str, Any], ov: dict[str, Any]) -> None:
        """A pack (the compiler's narrowing of fp32 cube operands) that overflowed is an error
        the user fixes with ``--precision``; an overflow the model's own arithmetic produced
        (an fp16 model, an explicit Cast) is the model's semantics and only noted in stats."""
        if la["role"] != "pack":
            self.overflows.append(f"{la['name']}: {ov['elements']} value(s) overflowed to inf "
                                  f"in {ov['dtype']} (line {ov['line']})")
            return
        from portc.runtimes.npusim import NpuOverflowError

        origin = self.kernels.get(la["origin"])
        op = origin.origin() if origin is not None else "?"
        src = [b for b in la["gm_args"].values() if not b.startswith(la["origin"] + "__")]
        raise NpuOverflowError(
            f"the {ov['dtype']} cube operands of kernel {la['origin']} ({op}) overflow: "
            f"{ov['elements']} value(s) of buffer @{', @'.join(src) or '?'}, up to "
            f"{ov['max_abs']:.3g}, exceed the {ov['dtype']} range "
            f"({float(ml_dtypes.finfo(np.dtype(ov['dtype'])).max):.6g}) when packed for the cube. The "
            "activations of this model leave fp16's range: recompile with --precision bf16 "
            "(fp32 range, 8-bit mantissa; ATC's allow_fp32_to_bf16) or --precision fp32 "
            "(fp32 operands at half the cube rate; ATC's force_fp32)",
            kernel=ov["kernel"], core=ov["core"], line=ov["line"], instruction=ov["instruction"])


def summarise(rows: list[dict[str, Any]], busy: dict[str, float]) -> dict[str, Any]:
    """Run statistics: totals, cube utilisation over the cube launches, per-launch rows."""
    cube_rows = [r for r in rows if r["core"] == "aic"]
    cube_cycles = sum(r["cycles"] * r["block_dim"] for r in cube_rows)
    cube_busy = sum(r["cube_utilisation"] * r["cycles"] * r["block_dim"] for r in cube_rows)
    return {
        "total_cycles": sum(r["cycles"] for r in rows),
        "pipe_busy_cycles": busy,
        "cube_utilisation": cube_busy / cube_cycles if cube_cycles else 0.0,
        "launches": len(rows),
        "aicpu_launches": [f"{r['name']}: {r['reason']}" for r in rows if r["core"] == "aicpu"],
        "per_launch": rows,
    }


ASCEND = Target(
    name="ascend",
    summary="Ascend-like NPU (Da Vinci model, 910b): npu dialect text run on npusim",
    description={"artifact": PROGRAM_FILE, "socs": ["910b"],
                 "precision": "cube fp16 (or bf16, fp32) operands, fp32 accumulate; vector fp32",
                 "verify_tolerance": {p: {"rtol": r, "atol": a}
                                      for p, (r, a) in OPERAND_PRECISION_TOLERANCE.items()}},
    compile=compile_ascend,
    runtimes=(Runtime("npusim", "npusim: functional + timing simulator of the npu program "
                      "(AI CPU kernels on the kernel-IR executor)", NpuSimExecutable),),
    graph_pipeline=HARDWARE_GRAPH_PIPELINE,
    verify_tolerance=verify_tolerance,
)
register_target(ASCEND)
