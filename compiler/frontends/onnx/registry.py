"""ONNX op -> graph-dialect decomposition table, and the context decompositions see.

A decomposition is a function ``(ctx, node) -> outputs`` registered for one or more ONNX op types
with ``@onnx_op("Relu", "LeakyRelu")``. It reads inputs and attributes through ``OnnxContext`` and
emits core ops with ``ctx.b`` (a ``GraphBuilder``); operands that must be known at compile time
(shapes, axes, pads) come from ``ctx.const_input``, which folds or names the node that failed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper
from xdsl.ir import Block, BlockArgument, OpResult, SSAValue

from portc.compiler.builder import GraphBuilder
from portc.dialects import dtypes
from portc.dialects import graph as g
from portc.dialects.graph import TensorSpec
from portc.runtimes.reference.kernels import KernelError, run_kernel


class NodeError(Exception):
    """A node this frontend cannot import as written; the message says why and what to do."""


Outputs = Sequence[SSAValue | None]
Decomposition = Callable[["OnnxContext", onnx.NodeProto], Outputs]

#: Intermediate results larger than this are not evaluated at import (it is for shape math).
EVAL_LIMIT_ELEMENTS = 1 << 16

#: (domain, op_type) -> decomposition. Domain "" is the default ONNX domain.
ONNX_OPS: dict[tuple[str, str], Decomposition] = {}


def onnx_op(*op_types: str, domain: str = "") -> Callable[[Decomposition], Decomposition]:
    def reg(fn: Decomposition) -> Decomposition:
        for t in op_types:
            ONNX_OPS[(domain, t)] = fn
        return fn

    return reg


@dataclass
class OnnxContext:
    """What a decomposition may use: the builder, the opset, named values and attributes."""

    b: GraphBuilder
    opset: int
    values: dict[str, SSAValue] = field(default_factory=dict)
    #: graph inputs whose runtime values are known (the ONNX backend specialises on them)
    known_inputs: dict[str, np.ndarray] = field(default_factory=dict)
    #: names of graph inputs that were baked in as constants because an op needed their value
    baked_inputs: set[str] = field(default_factory=set)
    graph_inputs: set[str] = field(default_factory=set)

    # ------------------------------------------------------------------ inputs
    def has_input(self, node: onnx.NodeProto, i: int) -> bool:
        return i < len(node.input) and node.input[i] != ""

    def input(self, node: onnx.NodeProto, i: int) -> SSAValue:
        if not self.has_input(node, i):
            raise NodeError(f"input #{i} is required")
        return self.values[node.input[i]]

    def opt_input(self, node: onnx.NodeProto, i: int) -> SSAValue | None:
        return self.input(node, i) if self.has_input(node, i) else None

    def inputs(self, node: onnx.NodeProto) -> list[SSAValue]:
        return [self.values[n] for n in node.input if n]

    def const_input(self, node: onnx.NodeProto, i: int, what: str) -> np.ndarray | None:
        """The compile-time value of input ``i`` (None if absent); errors if it is computed at
        run time, since core ops take shapes/axes as properties."""
        if not self.has_input(node, i):
            return None
        name = node.input[i]
        v = self.values[name]
        arr = self.b.value_of(v)
        if arr is not None:
            return arr
        if name in self.known_inputs:
            self.baked_inputs.add(name)
            return np.asarray(self.known_inputs[name])
        # A run-time chain rooted only in constants and known graph inputs
        # (``Max(Shape(x), shape_input)`` in function bodies): the builder folds constants only,
        # and a known input stays a block argument until some op needs its value.
        used: set[str] = set()
        try:
            arr = self._evaluate(v, {}, used)
        except (RecursionError, KernelError):
            arr = None
        if arr is not None:
            self.baked_inputs.update(used)
            return arr
        raise NodeError(
            f"its {what} (input '{name}') is computed at run time; portc needs it at compile "
            "time. Make it an initializer or constant (for example with onnxsim), or fix the "
            "model's input shapes so that it folds"
        )

    def _evaluate(self, v: SSAValue, memo: dict[SSAValue, np.ndarray | None],
                  used: set[str]) -> np.ndarray | None:
        """Evaluate ``v`` with the reference kernels if it depends only on constants and known
        inputs, recording which inputs it used; None otherwise."""
        if v in memo:
            return memo[v]
        arr = self.b.value_of(v)
        if arr is None:
            owner = v.owner
            if isinstance(owner, Block) and isinstance(v, BlockArgument):
                name = self.b.input_names[v.index]
                if name in self.known_inputs:
                    used.add(name)
                    arr = np.asarray(self.known_inputs[name]).astype(
                        dtypes.dtype(g.spec_of(v).dtype).numpy, copy=False)
            elif isinstance(owner, g.GraphOp) and isinstance(v, OpResult):
                specs = owner.result_specs()
                if all(s.is_static and s.numel() <= EVAL_LIMIT_ELEMENTS for s in specs):
                    ins = [self._evaluate(o, memo, used) for o in owner.operands]
                    if all(a is not None for a in ins):
                        arr = run_kernel(type(owner), owner.props(), ins,  # type: ignore[arg-type]
                                         specs)[v.index]
        memo[v] = arr
        return arr

    def const_ints(self, node: onnx.NodeProto, i: int, what: str) -> list[int] | None:
        arr = self.const_input(node, i, what)
        return None if arr is None else [int(v) for v in np.asarray(arr).reshape(-1)]

    # ------------------------------------------------------------------ attributes
    @staticmethod
    def attr(node: onnx.NodeProto, name: str, default: object = None) -> object:
        for a in node.attribute:
            if a.name == name:
                if a.ref_attr_name:
                    raise NodeError(f"attribute '{name}' refers to an outer function attribute")
                v = helper.get_attribute_value(a)
                if isinstance(v, bytes):
                    return v.decode()
                if isinstance(v, onnx.TensorProto):
                    return numpy_helper.to_array(v)
                if isinstance(v, list) and v and isinstance(v[0], bytes):
                    return [x.decode() for x in v]
                return v
        return default

    def attr_int(self, node: onnx.NodeProto, name: str, default: int) -> int:
        return int(self.attr(node, name, default))  # type: ignore[arg-type]

    def attr_float(self, node: onnx.NodeProto, name: str, default: float) -> float:
        return float(self.attr(node, name, default))  # type: ignore[arg-type]

    def attr_ints(self, node: onnx.NodeProto, name: str,
                  default: Sequence[int] | None = None) -> list[int] | None:
        v = self.attr(node, name, None)
        if v is None:
            return None if default is None else list(default)
        return [int(x) for x in v]  # type: ignore[union-attr]

    def attr_str(self, node: onnx.NodeProto, name: str, default: str) -> str:
        return str(self.attr(node, name, default))

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def spec(v: SSAValue) -> TensorSpec:
        return g.spec_of(v)

    def static_shape(self, v: SSAValue, node: onnx.NodeProto) -> tuple[int, ...]:
        s = g.spec_of(v)
        if not s.is_static:
            raise NodeError(f"needs a static shape but got {s}; bind symbolic dims with --dim")
        return tuple(int(d) for d in s.shape)  # type: ignore[arg-type]

    def onnx_dtype(self, enum: int, node: onnx.NodeProto) -> str:
        d = dtypes.from_onnx(enum)
        if d is None:
            raise NodeError(
                f"element type {onnx.TensorProto.DataType.Name(enum)} is not supported "
                "(portc models numeric tensors only)")
        return d.name
