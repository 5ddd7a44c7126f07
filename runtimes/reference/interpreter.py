"""Execute a graph-dialect program with numpy: the golden model and the ``reference`` target.

The interpreter walks ``@main`` in order and keeps one array per SSA value, dropping each as soon
as its last user has run so that peak memory follows the model's liveness, not its size.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from xdsl.dialects import func
from xdsl.ir import Operation, SSAValue

from portc.compiler.errors import InputError, PortcError
from portc.compiler.program import Program
from portc.dialects import dtypes
from portc.dialects import graph as g
from portc.runtimes.reference import (
    moe_kernels,  # noqa: F401 - registers moe.* kernels
    sparse_kernels,  # noqa: F401 - registers sparse.* kernels
)
from portc.runtimes.reference.kernels import KernelError, run_kernel

OpHook = Callable[[Operation, list[np.ndarray]], None]


class ExecutionError(PortcError):
    """A value-dependent failure while executing (index out of range, missing kernel)."""


def check_inputs(program: Program, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Order, shape- and dtype-check user inputs against @main's signature."""
    specs = program.input_specs()
    missing = [n for n in specs if n not in inputs]
    if missing:
        raise InputError(f"missing model input(s) {missing}; the model takes {list(specs)}")
    extra = [n for n in inputs if n not in specs]
    if extra:
        raise InputError(f"unknown input(s) {extra}; the model takes {list(specs)}")
    out = []
    for name, spec in specs.items():
        arr = np.asarray(inputs[name])
        want = dtypes.dtype(spec.dtype).numpy
        if arr.dtype != want:
            raise InputError(f"input '{name}' has dtype {arr.dtype}, the model expects {want}")
        if arr.ndim != spec.rank or any(
            d is not None and d != a for d, a in zip(spec.shape, arr.shape, strict=True)
        ):
            raise InputError(
                f"input '{name}' has shape {list(arr.shape)}, the model expects "
                f"{['?' if d is None else d for d in spec.shape]}"
            )
        out.append(arr)
    return out


def run_program(
    program: Program, inputs: Mapping[str, np.ndarray], on_op: OpHook | None = None
) -> dict[str, np.ndarray]:
    main = program.main
    env: dict[SSAValue, np.ndarray] = {}
    for arg, arr in zip(main.args, check_inputs(program, inputs), strict=True):
        env[arg] = arr
    last_use: dict[SSAValue, Operation] = {}
    ops = list(main.body.block.ops)
    for op in ops:
        for v in op.operands:
            last_use[v] = op
    outputs: list[np.ndarray] = []
    for op in ops:
        if isinstance(op, func.ReturnOp):
            outputs = [env[v] for v in op.arguments]
            break
        if isinstance(op, g.ConstantOp):
            res = [program.weights[op.resource.data]]
        elif isinstance(op, g.GraphOp):
            try:
                res = run_kernel(type(op), op.props(), [env[v] for v in op.operands],
                                 op.result_specs())
            except KernelError as e:
                raise ExecutionError(f"{op.name} ({_where(op)}): {e}") from e
        else:
            raise ExecutionError(f"the reference interpreter cannot execute '{op.name}'")
        for r, a in zip(op.results, res, strict=True):
            env[r] = a
        if on_op is not None:
            on_op(op, res)
        for v in set(op.operands):
            if last_use.get(v) is op and not isinstance(v.owner, func.FuncOp):
                env.pop(v, None)
    return dict(zip(program.output_names, outputs, strict=True))


def _where(op: Operation) -> str:
    names = [r.name_hint for r in op.results if r.name_hint]
    return f"result %{names[0]}" if names else "unnamed result"
