"""Target ``reference``: the graph program itself, executed by the numpy interpreter.

It is the golden model made into a target, so that `portc verify --target reference` checks the
frontend against onnxruntime/torch and the bundle format end to end.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from portc.compiler.artifact import Artifact
from portc.compiler.program import Program, parse_program
from portc.compiler.targets import CompileOptions, Runtime, Target, register_target
from portc.dialects import dtypes

PROGRAM_FILE = "program.graph.mlir"
#: programs with more ops than this show a progress bar on a terminal
PROGRESS_MIN_OPS = 300


def compile_reference(program: Program, options: CompileOptions) -> Artifact:
    used = {op.resource.data for op in program.module.walk() if op.name == "graph.constant"}
    return Artifact("reference", {PROGRAM_FILE: program.to_text()}, program.weights.subset(used))


class InterpreterExecutable:
    def __init__(self, artifact: Artifact) -> None:
        self.program = parse_program(artifact.files[PROGRAM_FILE], artifact.weights, PROGRAM_FILE)
        self.program.verify()

    def run(self, inputs: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        from portc.runtimes.reference.interpreter import run_program

        counts: dict[str, int] = {}
        n_ops = len(self.program.main.body.block.ops)
        bar = None
        if sys.stderr.isatty() and n_ops > PROGRESS_MIN_OPS:
            from tqdm import tqdm

            bar = tqdm(total=n_ops, desc="reference", unit="op", leave=False)

        def count(op: Any, _res: Any) -> None:
            counts[op.name] = counts.get(op.name, 0) + 1
            if bar is not None:
                bar.update()

        try:
            outs = run_program(self.program, inputs, on_op=count)
        finally:
            if bar is not None:
                bar.close()
        return outs, {"ops_executed": counts}


class KernelIRExecutable:
    """The same graph program lowered by the shared graph-to-kernel lowering and executed by the
    kernel-IR numpy executor: checks the lowering every hardware target starts from, without
    any target's emitter in the way."""

    def __init__(self, artifact: Artifact) -> None:
        from portc.compiler.kernel_targets import HARDWARE_GRAPH_PIPELINE
        from portc.compiler.pipeline import parse_pipeline, run_passes
        from portc.passes.lower_graph_to_kernel import lower_to_kernels

        # a store of its own: the passes add weights, the artifact's stay as shipped
        weights = artifact.weights.subset(set(artifact.weights))
        program = parse_program(artifact.files[PROGRAM_FILE], weights, PROGRAM_FILE)
        self.model_outputs = program.output_specs()
        run_passes(program, parse_pipeline(HARDWARE_GRAPH_PIPELINE))
        # narrow (int4, fp8) inputs/outputs now travel in core storage dtypes, as on hardware
        self.storage_inputs = program.input_specs()
        self.kernels = lower_to_kernels(program)
        self.kernels.module.verify()

    def run(self, inputs: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        from portc.dialects.kernel import kernels_of
        from portc.runtimes.reference.kernel_ir import run_kernel_module

        feeds = {n: (np.asarray(v).astype(dtypes.dtype(self.storage_inputs[n].dtype).numpy)
                     if n in self.storage_inputs else v) for n, v in inputs.items()}
        outs = run_kernel_module(self.kernels.module, self.kernels.weights, feeds)
        with np.errstate(all="ignore"):  # storage -> model dtype: exact, the values fit
            outs = {n: (v.astype(dtypes.dtype(self.model_outputs[n].dtype).numpy)
                        if n in self.model_outputs else v) for n, v in outs.items()}
        return outs, {"kernels": len(kernels_of(self.kernels.module))}


REFERENCE = Target(
    name="reference",
    summary="graph IR executed by portc's numpy reference interpreter (float64 accumulation)",
    description={"artifact": PROGRAM_FILE, "precision": "float64 compute, rounded per op"},
    compile=compile_reference,
    runtimes=(Runtime("interpreter", "numpy reference interpreter", InterpreterExecutable),
              Runtime("kernels", "shared kernel-IR lowering executed in numpy (checks the "
                      "lowering all hardware targets start from)", KernelIRExecutable)),
    # moe-routing first: the reference then executes the same dispatch/grouped-GEMM form that
    # targets lower, checked against moe.moe's direct kernel in the changed model's reference
    graph_pipeline=("moe-routing", "canonicalize", "fold-constants", "cse", "dce"),
)
register_target(REFERENCE)
