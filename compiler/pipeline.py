"""Run pass pipelines over programs, optionally checking numbers after every pass.

``--verify-each`` runs the reference interpreter on the same inputs after each pass and names the
first pass whose outputs drift from the imported program's: the pass that broke the model, not
the symptom three levels later.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from xdsl.passes import ModulePass

from portc.compiler.artifact import Artifact
from portc.compiler.errors import IRError, VerificationMismatch
from portc.compiler.program import Program, make_context
from portc.compiler.targets import CompileOptions, Target
from portc.dialects import graph
from portc.passes.registry import get_pass


def parse_pipeline(spec: str | Sequence[str]) -> list[ModulePass]:
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    return [get_pass(n)() for n in names if n]


def run_passes(
    program: Program,
    passes: Sequence[ModulePass],
    after_each: Callable[[str, Program], None] | None = None,
    check_weights: bool = True,
) -> Program:
    ctx = make_context(program.weights)
    for p in passes:
        p.apply(ctx, program.module)
        try:
            program.verify(check_weights)
        except IRError as e:
            raise IRError(f"pass '{p.name}' left IR that does not verify: {e}") from e
        if after_each is not None:
            after_each(p.name, program)
    return program


def verify_each_hook(
    reference_outputs: Mapping[str, np.ndarray], inputs: Mapping[str, np.ndarray],
    rtol: float = 1e-5, atol: float = 1e-6,
) -> Callable[[str, Program], None]:
    """An after-pass hook that raises naming the first pass that changed the numbers."""
    from portc.runtimes.reference.interpreter import run_program

    def check(pass_name: str, program: Program) -> None:
        outs = run_program(program, inputs)
        for name, ref in reference_outputs.items():
            got = outs[name]
            if got.shape != ref.shape or not np.allclose(
                got.astype(np.float64), ref.astype(np.float64), rtol=rtol, atol=atol,
                equal_nan=True,
            ):
                raise VerificationMismatch(
                    f"pass '{pass_name}' changed output '{name}' (max abs diff "
                    f"{_maxdiff(got, ref)}); run `portc opt -p {pass_name}` on the IR to inspect it"
                )

    return check


def _maxdiff(a: np.ndarray, b: np.ndarray) -> str:
    if a.shape != b.shape:
        return f"shape {a.shape} vs {b.shape}"
    return f"{np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))):.3g}"


def compile_program(
    program: Program, target: Target, options: CompileOptions | None = None,
    after_each: Callable[[str, Program], None] | None = None,
) -> Artifact:
    """Graph pipeline of the target, then its lowering; returns the artifact. Its manifest
    records the model-level inputs and outputs: passes may move narrow dtypes (int4, fp8)
    into core storage dtypes, and runtimes convert back at the boundary from these."""
    io = {"inputs": tensor_rows(program.input_specs()),
          "outputs": tensor_rows(program.output_specs())}
    program = run_passes(program.clone(), parse_pipeline(target.graph_pipeline), after_each)
    artifact = target.compile(program, options or CompileOptions())
    artifact.manifest = {**io, **artifact.manifest}
    return artifact


def tensor_rows(specs: Mapping[str, graph.TensorSpec]) -> list[dict[str, object]]:
    """The manifest's rows for named tensors."""
    return [{"name": n, "shape": list(s.shape), "dtype": s.dtype} for n, s in specs.items()]
