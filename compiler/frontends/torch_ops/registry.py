"""ATen op -> graph-dialect decomposition table, and the context decompositions see.

A decomposition is a function ``(ctx, args) -> outputs`` registered for one or more ATen overloads
with ``@aten_op("add.Tensor", "add.Scalar")`` (names without the ``aten.`` prefix). ``args`` is the
node's arguments bound to the overload's schema by name, defaults filled in (``args.self``,
``args.dim``), with tensors already turned into SSA values and SymInts into Python ints. Result
dtypes come from the exported program's own metadata (``node.meta["val"]``), so PyTorch's type
promotion is never re-derived by hand where the program already states it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ml_dtypes
import numpy as np
import torch
from xdsl.ir import SSAValue

from portc.compiler.builder import GraphBuilder
from portc.dialects import dtypes
from portc.dialects import graph as g
from portc.dialects.graph import TensorSpec


class NodeError(Exception):
    """A node this frontend cannot import as written; the message says why and what to do."""


Value = Any  # SSAValue | int | float | bool | None | list/tuple of those
Decomposition = Callable[["TorchContext", "Args"], Value]

#: "add.Tensor" (overload name without the ``aten.`` namespace) -> decomposition.
ATEN_OPS: dict[str, Decomposition] = {}


def aten_op(*names: str) -> Callable[[Decomposition], Decomposition]:
    """Register ``fn`` for the named ATen overloads (``"relu.default"``)."""

    def reg(fn: Decomposition) -> Decomposition:
        for n in names:
            ATEN_OPS[n] = fn
        return fn

    return reg


def target_key(target: object) -> str:
    """The table key of an FX call target: ``aten.add.Tensor`` -> ``add.Tensor``."""
    s = str(target)
    return s[len("aten."):] if s.startswith("aten.") else s


# ------------------------------------------------------------------------------ dtypes

TORCH_TO_PORTC: dict[torch.dtype, str] = {
    torch.float32: "float32", torch.float64: "float64", torch.float16: "float16",
    torch.bfloat16: "bfloat16", torch.int8: "int8", torch.int16: "int16", torch.int32: "int32",
    torch.int64: "int64", torch.uint8: "uint8", torch.uint16: "uint16", torch.uint32: "uint32",
    torch.uint64: "uint64", torch.bool: "bool", torch.float8_e4m3fn: "float8_e4m3fn",
    torch.float8_e4m3fnuz: "float8_e4m3fnuz", torch.float8_e5m2: "float8_e5m2",
    torch.float8_e5m2fnuz: "float8_e5m2fnuz",
}
PORTC_TO_TORCH: dict[str, torch.dtype] = {v: k for k, v in TORCH_TO_PORTC.items()}

#: torch dtypes numpy cannot hold natively: moved through a same-width integer view.
_VIEW_AS: dict[torch.dtype, tuple[torch.dtype, Any]] = {
    torch.bfloat16: (torch.int16, ml_dtypes.bfloat16),
    torch.float8_e4m3fn: (torch.uint8, ml_dtypes.float8_e4m3fn),
    torch.float8_e4m3fnuz: (torch.uint8, ml_dtypes.float8_e4m3fnuz),
    torch.float8_e5m2: (torch.uint8, ml_dtypes.float8_e5m2),
    torch.float8_e5m2fnuz: (torch.uint8, ml_dtypes.float8_e5m2fnuz),
}


def portc_dtype(dt: torch.dtype) -> str:
    try:
        return TORCH_TO_PORTC[dt]
    except KeyError:
        raise NodeError(f"element type {dt} has no portc dtype") from None


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A private numpy copy of a tensor (weights must not alias the user's live module)."""
    t = t.detach().cpu().contiguous()
    if t.dtype in _VIEW_AS:
        iview, npdt = _VIEW_AS[t.dtype]
        return t.view(iview).numpy().copy().view(npdt)
    portc_dtype(t.dtype)
    return t.numpy().copy()


def to_torch(a: np.ndarray) -> torch.Tensor:
    a = np.ascontiguousarray(a)
    name = dtypes.from_numpy(a.dtype).name
    tdt = PORTC_TO_TORCH[name]
    if tdt in _VIEW_AS:
        iview, _ = _VIEW_AS[tdt]
        return torch.from_numpy(a.view(np.dtype(str(iview).replace("torch.", "")))).view(tdt)
    return torch.from_numpy(a.copy())


# ------------------------------------------------------------------------------ arguments


class Args:
    """A node's arguments by schema name (``args.self``, ``args.dim``), defaults filled in."""

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def get(self, name: str, default: Any = None) -> Any:
        return self._values.get(name, default)

    def __contains__(self, name: str) -> bool:
        return name in self._values


def bind_schema(target: torch._ops.OpOverload, args: Sequence[Any], kwargs: dict[str, Any]
                ) -> Args:
    values: dict[str, Any] = {}
    pos = 0
    for a in target._schema.arguments:
        if not a.kwarg_only and pos < len(args):
            values[a.name] = args[pos]
            pos += 1
        elif a.name in kwargs:
            values[a.name] = kwargs[a.name]
        elif a.has_default_value():
            values[a.name] = a.default_value
        else:
            values[a.name] = None
    return Args(values)


# ------------------------------------------------------------------------------ context


@dataclass
class TorchContext:
    """What a decomposition may use: the builder, the node being imported and its metadata."""

    b: GraphBuilder
    node: Any = None  # torch.fx.Node
    #: symbolic dim (sympy symbol name) -> bound value
    dim_bindings: dict[str, int] = field(default_factory=dict)

    # ------------------------------------------------------------------ specs and metadata
    @staticmethod
    def spec(v: SSAValue) -> TensorSpec:
        return g.spec_of(v)

    def shape(self, v: SSAValue) -> tuple[int, ...]:
        s = g.spec_of(v)
        if not s.is_static:
            raise NodeError(f"needs a static shape but got {s}")
        return tuple(int(d) for d in s.shape)  # type: ignore[arg-type]

    def rank(self, v: SSAValue) -> int:
        return g.spec_of(v).rank

    def meta(self, i: int | None = None) -> Any:
        val = self.node.meta.get("val") if self.node is not None else None
        if i is not None and isinstance(val, (tuple, list)):
            return val[i]
        return val

    def out_dtype(self, i: int | None = None, fallback: str | None = None) -> str:
        """The dtype the exported program records for output ``i`` of the current node."""
        m = self.meta(i)
        if isinstance(m, torch.Tensor):
            return portc_dtype(m.dtype)
        if fallback is None:
            raise NodeError("has no recorded output dtype (node.meta['val'] is missing)")
        return fallback

    def concrete(self, x: Any) -> Any:
        """Python ints for SymInts, using the bound symbolic dims."""
        if isinstance(x, (torch.SymInt, torch.SymFloat, torch.SymBool)):
            expr = x.node.expr
            subs = {s: self.dim_bindings[s.name] for s in expr.free_symbols
                    if s.name in self.dim_bindings}
            val = expr.xreplace(subs)
            if getattr(val, "free_symbols", None):
                raise NodeError(f"symbolic size {expr} is not bound; pass dims={{...}} for "
                                f"{sorted(s.name for s in val.free_symbols)}")
            return {torch.SymInt: int, torch.SymFloat: float, torch.SymBool: bool}[type(x)](val)
        if isinstance(x, (list, tuple)):
            return type(x)(self.concrete(v) for v in x)
        return x

    def used_outputs(self) -> set[int]:
        """Indices of this multi-output node that some ``getitem`` user reads."""
        import operator

        used: set[int] = set()
        for u in self.node.users:
            if u.target is operator.getitem:
                used.add(int(u.args[1]))
            else:
                used.update(range(16))
        return used

    # ------------------------------------------------------------------ values
    def is_tensor(self, x: Any) -> bool:
        return isinstance(x, SSAValue)

    def tensor(self, x: Any, dtype: str | None = None) -> SSAValue:
        """``x`` as a tensor of ``dtype``: Python scalars become 0-d constants, tensors are cast."""
        if isinstance(x, SSAValue):
            return x if dtype is None else self.b.cast(x, dtype)
        if isinstance(x, (bool, int, float)):
            if dtype is None:
                dtype = "bool" if isinstance(x, bool) else "int64" if isinstance(x, int) \
                    else "float32"
            return self.b.scalar(x, dtype)
        raise NodeError(f"expected a tensor or number, got {type(x).__name__}")

    def const_value(self, x: Any) -> np.ndarray | None:
        if isinstance(x, SSAValue):
            return self.b.value_of(x)
        if isinstance(x, (bool, int, float)):
            return np.asarray(x)
        return None

    def promote(self, *xs: Any) -> str:
        """PyTorch's result dtype for the operands (tensors, 0-d tensors and Python numbers)."""
        dummies: list[Any] = []
        for x in xs:
            if isinstance(x, SSAValue):
                s = g.spec_of(x)
                dummies.append(torch.empty((1,) * min(s.rank, 1),
                                           dtype=PORTC_TO_TORCH[s.dtype]))
            elif x is not None:
                dummies.append(x)
        if not dummies:
            raise NodeError("no operands to promote")
        if len(dummies) == 1:
            d = dummies[0]
            return portc_dtype(d.dtype) if isinstance(d, torch.Tensor) else \
                portc_dtype(torch.tensor(d).dtype if not isinstance(d, float)
                            else torch.get_default_dtype())
        acc = dummies[0]
        for d in dummies[1:]:
            dt = torch.result_type(acc, d)
            acc = torch.empty((1,), dtype=dt) if (
                isinstance(acc, torch.Tensor) and acc.dim() > 0
                or isinstance(d, torch.Tensor) and d.dim() > 0) else torch.empty((), dtype=dt)
        return portc_dtype(acc.dtype)

    def axis(self, dim: int, rank: int) -> int:
        return g.norm_axis(int(dim), max(rank, 1)) if rank else 0

    def axes(self, dims: Iterable[int] | int | None, rank: int) -> list[int]:
        """Normalised reduction axes; None or [] means every axis (ATen's convention)."""
        if dims is None:
            return list(range(rank))
        if isinstance(dims, int):
            dims = [dims]
        dims = list(dims)
        if not dims:
            return list(range(rank))
        return sorted({self.axis(d, rank) for d in dims})

    def ones_like_dtype(self, n: int | Sequence[int], dtype: str) -> SSAValue:
        shape = (n,) if isinstance(n, int) else tuple(n)
        return self.b.const(np.ones(shape, dtypes.dtype(dtype).numpy), hint="ones")
