"""Target ``cuda``: PTX for NVIDIA GPUs, run on ptxsim (default) or a real GPU.

The bundle carries ``module.ptx`` (one ``.entry`` per kernel), the kernel IR it came from
(``KERNEL_IR_FILE``), the weights, and a manifest with the buffer table and the launch sequence
(entry, grid, block, parameter buffers, shared bytes). When ``ptxas`` is on the PATH the
manifest also records what it reports per kernel (registers, shared memory, spills), and
``portc compile`` prints that summary. Runtimes use only the manifest and the PTX text.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from portc.compiler.artifact import Artifact
from portc.compiler.errors import BundleError, PortcError
from portc.compiler.kernel_targets import (
    HARDWARE_GRAPH_PIPELINE,
    KERNEL_IR_FILE,
    BufferLayout,
    buffer_manifest,
    lower_for_target,
)
from portc.compiler.program import Program
from portc.compiler.targets import (
    CompileOptions,
    Runtime,
    Target,
    operand_precision_tolerance,
    register_target,
)

PTX_FILE = "module.ptx"
DEFAULT_SM = 80
#: ptxsim's per-launch bound on warp-instruction steps (a runaway loop is a fault, not a hang)
MAX_INSTRUCTIONS = 50_000_000


class PtxasError(PortcError):
    """ptxas rejected a module portc emitted (a portc bug: the message has ptxas's output)."""


def ptxas_report(text: str, sm: int) -> dict[str, Any]:
    """Run ``ptxas -v`` on the module; per-entry registers, shared bytes, spill bytes, stack.
    ``{"available": False}`` without ptxas; PtxasError when it rejects the text."""
    exe = shutil.which("ptxas")
    if exe is None:
        return {"available": False}
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, PTX_FILE)
        with open(src, "w") as f:
            f.write(text)
        p = subprocess.run([exe, f"-arch=sm_{sm}", "-v", src, "-o", os.devnull],
                           capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise PtxasError(f"ptxas -arch=sm_{sm} rejected the emitted PTX:\n{p.stderr[-4000:]}")
    kernels: dict[str, dict[str, int]] = {}
    cur: dict[str, int] | None = None
    for line in p.stderr.splitlines():
        m = re.search(r"Compiling entry function '([^']+)'", line)
        if m:
            cur = kernels.setdefault(m.group(1), {"registers": 0, "shared_bytes": 0,
                                                  "spill_stores": 0, "spill_loads": 0,
                                                  "stack_bytes": 0})
            continue
        if cur is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill "
                      r"loads", line)
        if m:
            cur["stack_bytes"], cur["spill_stores"], cur["spill_loads"] = map(int, m.groups())
        m = re.search(r"Used (\d+) registers", line)
        if m:
            cur["registers"] = int(m.group(1))
        m = re.search(r"(\d+) bytes smem", line)
        if m:
            cur["shared_bytes"] = int(m.group(1))
    return {"available": True, "sm": sm, "kernels": kernels,
            "max_registers": max((v["registers"] for v in kernels.values()), default=0),
            "total_spill_bytes": sum(v["spill_stores"] + v["spill_loads"]
                                     for v in kernels.values())}


def format_report(rep: Mapping[str, Any]) -> str:
    """The compile report ``portc compile`` prints."""
    if not rep.get("available"):
        return "ptxas: not found on PATH (no register/spill report)"
    ks = rep["kernels"]
    spilled = [n for n, v in ks.items() if v["spill_stores"] or v["spill_loads"]]
    lines = [f"ptxas sm_{rep['sm']}: {len(ks)} kernels, max {rep['max_registers']} registers, "
             f"{rep['total_spill_bytes']} spill bytes"
             + (f" (spilling: {', '.join(spilled)})" if spilled else "")]
    for n, v in ks.items():
        lines.append(f"  {n}: {v['registers']} regs, {v['shared_bytes']} B smem, "
                     f"{v['spill_stores']}+{v['spill_loads']} B spill")
    return "\n".join(lines)


def compile_cuda(program: Program, options: CompileOptions) -> Artifact:
    from portc.passes.lower_ptx import lower_kernel_module
    from portc.passes.ptx_mma import round_gemm_weights_to_mma_type

    sm = int(options.extra.get("sm") or DEFAULT_SM)
    precision = str(options.extra.get("precision") or "fp32")
    kp = lower_for_target(program)
    round_gemm_weights_to_mma_type(kp, precision)
    lowered = lower_kernel_module(kp.module, sm=sm, precision=precision)
    lowered.module.verify()
    text = lowered.text
    report = ptxas_report(text, sm)
    if report.get("available"):  # ptxas lists entries last-first: show them in launch order
        ks = report["kernels"]
        report["kernels"] = {ln.entry: ks[ln.entry] for ln in lowered.launches if ln.entry in ks}
    used = {b.binding.data for b in kp.module.walk()
            if b.name == "kernel.buffer" and b.kind.data == "weight"}  # type: ignore[attr-defined]
    manifest = {
        "cuda": {"sm": sm, "precision": precision,
                 "launches": [ln.to_json() for ln in lowered.launches],
                 "ptxas": report},
        **buffer_manifest(kp.module),
        "compile_report": format_report(report),
    }
    return Artifact("cuda", {PTX_FILE: text, KERNEL_IR_FILE: kp.to_text()},
                    kp.weights.subset(used), manifest)


def _launches(artifact: Artifact) -> list[dict[str, Any]]:
    try:
        return list(artifact.manifest["cuda"]["launches"])
    except (KeyError, TypeError) as e:
        raise BundleError(f"the bundle's manifest has no cuda launch sequence ({e}); "
                          "recompile with --target cuda") from e


class PtxSimExecutable:
    """Runs the bundle's PTX on ptxsim. Every buffer (temporaries included) is its own
    allocation, so an access past a buffer's end faults instead of landing in a neighbour."""

    def __init__(self, artifact: Artifact) -> None:
        from portc.runtimes.ptxsim import parse_module

        self.artifact = artifact
        self.layout = BufferLayout(artifact.manifest)
        self.launches = _launches(artifact)
        self.module = parse_module(artifact.files[PTX_FILE], PTX_FILE)

    def run(self, inputs: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        from portc.runtimes.ptxsim import GlobalMemory, PtxSim

        mem = GlobalMemory()
        addr: dict[str, int] = {}
        for b in self.layout.buffers:
            addr[b.name] = mem.alloc(b.name, max(b.nbytes, 1))
            data = self.layout.initial_data(b, inputs, self.artifact.weights)
            if data is not None and data.size:
                mem.write(addr[b.name], data)
        sim = PtxSim(self.module, mem)
        t0 = time.perf_counter()
        per_kernel: dict[str, int] = {}
        total = 0
        for ln in self.launches:
            st = sim.launch(ln["entry"], grid=tuple(ln["grid"]), block=tuple(ln["block"]),
                            params=[addr[p] for p in ln["params"]],
                            max_instructions=MAX_INSTRUCTIONS)
            per_kernel[ln["entry"]] = st.warp_instructions
            total += st.warp_instructions
        outs = {}
        for b in self.layout.of_kind("output"):
            flat = mem.read(addr[b.name], b.numpy_dtype, b.elements)
            outs[b.binding or b.name] = self.layout.shape_output(b, flat)
        return outs, {"launches": len(self.launches), "warp_instructions": total,
                      "seconds": round(time.perf_counter() - t0, 3),
                      "warp_instructions_per_kernel": per_kernel}


def _gpu_unavailable() -> str | None:
    from portc.runtimes.cuda_driver import unavailable

    return unavailable()


def _load_gpu(artifact: Artifact) -> Any:
    from portc.runtimes.cuda_driver import GpuExecutable

    return GpuExecutable(artifact.files[PTX_FILE], BufferLayout(artifact.manifest),
                         _launches(artifact), artifact.weights)


CUDA = Target(
    name="cuda",
    summary="NVIDIA PTX (ISA 8.0, sm_80/sm_90) executed by ptxsim or a real GPU",
    description={"artifact": PTX_FILE, "sm": [80, 90], "precision": ["fp32", "tf32", "fp16",
                                                                     "bf16"],
                 "warp": 32, "block": 256, "shared_bytes_per_block": 48 * 1024},
    compile=compile_cuda,
    runtimes=(Runtime("ptxsim", "portc's PTX simulator (numpy lanes, sanitizer checks)",
                      PtxSimExecutable),
              Runtime("gpu", "the same PTX on an NVIDIA GPU through the CUDA driver API",
                      _load_gpu, _gpu_unavailable)),
    graph_pipeline=HARDWARE_GRAPH_PIPELINE,
    verify_tolerance=lambda options: operand_precision_tolerance(
        "cuda", str(options.get("precision") or "fp32")),
)
register_target(CUDA)
