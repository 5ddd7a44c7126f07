"""Build graph-dialect programs from Python: what frontends and passes use to emit ops.

Every op goes through ``GraphBuilder.op``, which infers result types from the op's own inference
rule, so frontends never spell a shape by hand except where an op takes its shape from its result
(reshape, slice, broadcast). With ``fold=True`` an op whose operands are all constants is evaluated
on the spot by the reference kernels and becomes a constant: shape arithmetic in exported graphs
(Shape -> Gather -> Concat -> Reshape) disappears at import, like ONNX Runtime's constant folding.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, ModuleOp, StringAttr
from xdsl.ir import Block, Region, SSAValue

from portc.compiler.errors import LimitError
from portc.compiler.program import Program
from portc.compiler.weights import WeightStore
from portc.dialects import dtypes
from portc.dialects import graph as g
from portc.dialects.graph import Props, TensorSpec
from portc.runtimes.reference.kernels import run_kernel

_HINT_BAD = re.compile(r"[^A-Za-z0-9_]")

#: Constants folded at build time above this many elements stay ops (keeps imports fast).
FOLD_LIMIT_ELEMENTS = 1 << 24


def ssa_hint(name: str) -> str | None:
    """A tensor name as a legal SSA name hint (``%conv1_weight``), or None if nothing is left."""
    h = _HINT_BAD.sub("_", name).strip("_")
    if not h:
        return None
    if h[0].isdigit():
        h = "v" + h
    return h


class GraphBuilder:
    """Appends ops to the body of ``@main``; ``finish`` seals the function."""

    def __init__(self, weights: WeightStore | None = None, fold: bool = True) -> None:
        self.weights = weights if weights is not None else WeightStore()
        self.fold = fold
        self.block = Block()
        self.input_names: list[str] = []
        self._const_of: dict[SSAValue, str] = {}

    # -------------------------------------------------------------------------- inputs/outputs
    def add_input(self, name: str, spec: TensorSpec) -> SSAValue:
        arg = self.block.insert_arg(spec.to_ir(), len(self.block.args))
        arg.name_hint = ssa_hint(name)
        self.input_names.append(name)
        return arg

    def finish(self, outputs: Sequence[tuple[str, SSAValue]]) -> Program:
        vals = [v for _, v in outputs]
        self.block.add_op(func.ReturnOp(*vals))
        ftype = ([a.type for a in self.block.args], [v.type for v in vals])
        fn = func.FuncOp("main", ftype, Region(self.block))
        fn.attributes["portc.input_names"] = ArrayAttr([StringAttr(n) for n in self.input_names])
        fn.attributes["portc.output_names"] = ArrayAttr([StringAttr(n) for n, _ in outputs])
        return Program(ModuleOp([fn]), self.weights)

    # -------------------------------------------------------------------------- constants
    def const(self, array: np.ndarray | float | int | bool, dtype: str | None = None,
              hint: str = "const") -> SSAValue:
        arr = np.asarray(array)
        if dtype is not None:
            arr = arr.astype(dtypes.dtype(dtype).numpy)
        name = self.weights.add(arr, hint)
        return self._const_op(name, arr, hint)

    def const_named(self, name: str, array: np.ndarray) -> SSAValue:
        """A constant under an exact weight name (initializers keep the model's names)."""
        self.weights.put(name, array)
        return self._const_op(name, np.asarray(array), name)

    def _const_op(self, name: str, arr: np.ndarray, hint: str) -> SSAValue:
        spec = TensorSpec(tuple(arr.shape), dtypes.from_numpy(arr.dtype).name)
        op = g.ConstantOp.build_op([], [spec], {"resource": name})
        self.block.add_op(op)
        op.result.name_hint = ssa_hint(hint)
        self._const_of[op.result] = name
        return op.result

    def value_of(self, v: SSAValue) -> np.ndarray | None:
        """The array behind ``v`` if it is a constant, else None."""
        name = self._const_of.get(v)
        return None if name is None else self.weights[name]

    # -------------------------------------------------------------------------- generic op
    def op(self, cls: type[g.GraphOp], operands: Sequence[SSAValue], props: Props | None = None,
           results: Sequence[TensorSpec] | None = None, hint: str | None = None
           ) -> list[SSAValue]:
        props = {k: v for k, v in (props or {}).items() if v is not None}
        ins = [g.spec_of(v) for v in operands]
        if results is None:
            results = cls.infer(ins, props)
        if self.fold and operands and all(v in self._const_of for v in operands):
            if all(r.is_static and r.numel() <= FOLD_LIMIT_ELEMENTS for r in results):
                arrays = run_kernel(cls, props, [self._const_of_array(v) for v in operands],
                                    list(results))
                return [self.const(a, hint=hint or "folded") for a in arrays]
        op = cls.build_op(operands, results, props)
        self.block.add_op(op)
        if hint:
            for r in op.results:
                r.name_hint = ssa_hint(hint)
        return list(op.results)

    def _const_of_array(self, v: SSAValue) -> np.ndarray:
        return self.weights[self._const_of[v]]

    def one(self, cls: type[g.GraphOp], operands: Sequence[SSAValue], props: Props | None = None,
            result: TensorSpec | None = None, hint: str | None = None) -> SSAValue:
        return self.op(cls, operands, props, None if result is None else [result], hint)[0]

    # -------------------------------------------------------------------------- conveniences
    def unary(self, fn: str, x: SSAValue, hint: str | None = None) -> SSAValue:
        return self.one(g.UnaryOp, [x], {"fn": fn}, hint=hint)

    def binary(self, fn: str, a: SSAValue, b: SSAValue, hint: str | None = None) -> SSAValue:
        return self.one(g.BinaryOp, [a, b], {"fn": fn}, hint=hint)

    def where(self, c: SSAValue, a: SSAValue, b: SSAValue, hint: str | None = None) -> SSAValue:
        return self.one(g.WhereOp, [c, a, b], hint=hint)

    def cast(self, x: SSAValue, to: str, saturate: bool | None = None,
             hint: str | None = None) -> SSAValue:
        if g.spec_of(x).dtype == to:
            return x
        return self.one(g.CastOp, [x], {"to": to, "saturate": saturate}, hint=hint)

    def matmul(self, a: SSAValue, b: SSAValue, out_dtype: str | None = None,
               hint: str | None = None) -> SSAValue:
        return self.one(g.MatMulOp, [a, b], {"out_dtype": out_dtype}, hint=hint)

    def reshape(self, x: SSAValue, shape: Sequence[int | None], hint: str | None = None
                ) -> SSAValue:
        s = g.spec_of(x)
        if tuple(shape) == s.shape:
            return x
        return self.one(g.ReshapeOp, [x], result=TensorSpec(tuple(shape), s.dtype), hint=hint)

    def transpose(self, x: SSAValue, perm: Sequence[int], hint: str | None = None) -> SSAValue:
        if list(perm) == list(range(len(perm))):
            return x
        return self.one(g.TransposeOp, [x], {"perm": tuple(perm)}, hint=hint)

    def broadcast(self, x: SSAValue, shape: Sequence[int | None], hint: str | None = None
                  ) -> SSAValue:
        s = g.spec_of(x)
        if tuple(shape) == s.shape:
            return x
        return self.one(g.BroadcastOp, [x], result=TensorSpec(tuple(shape), s.dtype), hint=hint)

    def slice(self, x: SSAValue, starts: Sequence[int], steps: Sequence[int],
              counts: Sequence[int], hint: str | None = None) -> SSAValue:
        s = g.spec_of(x)
        if all(st == 0 and sp == 1 and c == d for st, sp, c, d in
               zip(starts, steps, counts, s.shape, strict=True)):
            return x
        return self.one(g.SliceOp, [x], {"starts": tuple(starts), "steps": tuple(steps)},
                        result=TensorSpec(tuple(counts), s.dtype), hint=hint)

    def concat(self, xs: Sequence[SSAValue], axis: int, hint: str | None = None) -> SSAValue:
        if len(xs) == 1:
            return xs[0]
        return self.one(g.ConcatOp, list(xs), {"axis": axis}, hint=hint)

    def reduce(self, kind: str, x: SSAValue, axes: Sequence[int], keepdims: bool,
               hint: str | None = None) -> SSAValue:
        return self.one(g.ReduceOp, [x], {"kind": kind, "axes": tuple(axes),
                                          "keepdims": keepdims}, hint=hint)

    def scalar(self, value: float | int | bool, like: SSAValue | str) -> SSAValue:
        """A 0-d constant in ``like``'s dtype (or the named dtype)."""
        dt = like if isinstance(like, str) else g.spec_of(like).dtype
        return self.const(np.array(value).astype(dtypes.dtype(dt).numpy), hint="c")


def check_size(spec: TensorSpec, limit_bytes: int, what: str) -> None:
    """Refuse a declared tensor larger than the limit before anything is allocated."""
    if not spec.is_static:
        return
    nbytes = spec.numel() * max(1, dtypes.dtype(spec.dtype).bits // 8)
    if nbytes > limit_bytes:
        raise LimitError(
            f"{what} declares {nbytes / 2**30:.1f} GiB ({spec}), over the {limit_bytes / 2**30:.1f}"
            " GiB limit; raise --max-tensor-gb if this is intended"
        )
