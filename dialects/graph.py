"""The ``graph`` dialect: portc's closed set of core tensor ops.

Frontends decompose every model op into these; targets implement only these. Each op infers its
result types from its operands and properties (``infer``) and its verifier checks that the result
types it carries agree, so a pass that builds a wrong shape fails at the pass, not three levels
later in a simulator. Semantics follow ONNX/numpy (broadcasting, negative axes normalised at
import); each op's docstring states them in one line.

Constants are ``graph.constant "name"``: the array lives in the program's ``WeightStore`` behind the
name, like MLIR's ``dense_resource``, so weights are never Python lists and are shared by reference.
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from xdsl.dialects.builtin import (
    DYNAMIC_INDEX,
    ArrayAttr,
    DenseArrayBase,
    FloatAttr,
    IntegerAttr,
    StringAttr,
    TensorType,
    f64,
    i1,
    i64,
)
from xdsl.ir import Attribute, Dialect, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
    var_operand_def,
)
from xdsl.traits import ConstantLike, HasCanonicalizationPatternsTrait, Pure
from xdsl.utils.exceptions import VerifyException

from portc.dialects import dtypes

# --------------------------------------------------------------------------------------------
# Canonicalization hooks: patterns live in portc.passes.canonicalize_graph (imported lazily so
# that the dialect does not depend on the pass layer at import time).


def _canonicalization_trait(op_name: str) -> HasCanonicalizationPatternsTrait:
    class GraphCanonicalization(HasCanonicalizationPatternsTrait):
        @classmethod
        def get_canonicalization_patterns(cls) -> tuple:
            from portc.passes.canonicalize_graph import PATTERNS

            return next((v for k, v in PATTERNS.items() if k.name == op_name), ())

    return GraphCanonicalization()


# --------------------------------------------------------------------------------------------
# Tensor types as plain Python values


@dataclass(frozen=True)
class TensorSpec:
    """A tensor type as Python sees it: ``None`` marks a dynamic (symbolic) dimension."""

    shape: tuple[int | None, ...]
    dtype: str

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(d is not None for d in self.shape)

    def numel(self) -> int:
        n = 1
        for d in self.shape:
            if d is None:
                raise ValueError(f"tensor {self} has dynamic dimensions")
            n *= d
        return n

    def to_ir(self) -> TensorType:
        dims = [DYNAMIC_INDEX if d is None else d for d in self.shape]
        return TensorType(dtypes.dtype(self.dtype).ir, dims)

    @staticmethod
    def from_ir(t: Attribute) -> TensorSpec:
        if not isinstance(t, TensorType):
            raise VerifyException(f"expected a ranked tensor type, got {t}")
        shape = tuple(None if d == DYNAMIC_INDEX else int(d) for d in t.get_shape())
        return TensorSpec(shape, dtypes.from_ir(t.get_element_type()).name)

    def __str__(self) -> str:
        return str(self.to_ir())


def spec_of(value: SSAValue) -> TensorSpec:
    return TensorSpec.from_ir(value.type)


# --------------------------------------------------------------------------------------------
# Properties <-> Python values


def to_attr(value: Any) -> Attribute:
    """Python value -> property attribute (bool, int, float, str, int tuple, float tuple)."""
    if isinstance(value, bool):
        return IntegerAttr(int(value), i1)
    if isinstance(value, int):
        return IntegerAttr(value, i64)
    if isinstance(value, float):
        return FloatAttr(value, f64)
    if isinstance(value, str):
        return StringAttr(value)
    if isinstance(value, (tuple, list)):
        items = list(value)
        if all(isinstance(v, str) for v in items) and items:
            return ArrayAttr([StringAttr(v) for v in items])
        if any(isinstance(v, float) for v in items):
            return DenseArrayBase.from_list(f64, [float(v) for v in items])
        return DenseArrayBase.from_list(i64, [int(v) for v in items])
    raise TypeError(f"cannot store {value!r} as a graph op property")


def from_attr(attr: Attribute) -> Any:
    if isinstance(attr, IntegerAttr):
        v = attr.value.data
        return bool(v) if attr.type == i1 else int(v)
    if isinstance(attr, FloatAttr):
        return float(attr.value.data)
    if isinstance(attr, StringAttr):
        return attr.data
    if isinstance(attr, DenseArrayBase):
        return tuple(attr.get_values())
    if isinstance(attr, ArrayAttr):
        return tuple(from_attr(a) for a in attr.data)
    raise TypeError(f"unexpected property attribute {attr}")


Props = dict[str, Any]


# --------------------------------------------------------------------------------------------
# Shape helpers shared by inference rules


def broadcast_shapes(*shapes: Sequence[int | None]) -> tuple[int | None, ...]:
    """Numpy broadcasting with dynamic dims: ``?`` against 1 stays ``?``."""
    rank = max((len(s) for s in shapes), default=0)
    out: list[int | None] = []
    for i in range(rank):
        dims = [s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0]
        known = {d for d in dims if d is not None and d != 1}
        if len(known) > 1:
            raise VerifyException(f"shapes {[tuple(s) for s in shapes]} do not broadcast")
        if known:
            out.append(known.pop())
        elif any(d is None for d in dims):
            out.append(None)
        else:
            out.append(1)
    return tuple(out)


def norm_axis(axis: int, rank: int, what: str = "axis") -> int:
    if not -rank <= axis < max(rank, 1):
        raise VerifyException(f"{what} {axis} is out of range for rank {rank}")
    return axis % rank if rank else 0


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise VerifyException(msg)


def _same_dtype(specs: Sequence[TensorSpec], opname: str) -> str:
    kinds = {s.dtype for s in specs}
    _require(len(kinds) == 1, f"{opname}: operand dtypes differ: {[s.dtype for s in specs]}")
    return specs[0].dtype


# --------------------------------------------------------------------------------------------
# Base class


class GraphOp(IRDLOperation):
    """Common machinery: property access as Python values and type inference in the verifier."""

    irdl_options = (ParsePropInAttrDict(),)

    def props(self) -> Props:
        return {k: from_attr(v) for k, v in self.properties.items()}

    @classmethod
    def infer(cls, ins: list[TensorSpec], p: Props) -> list[TensorSpec]:
        """Result types from operand types and properties. Ops whose result type is a
        parameter of its own (reshape, slice, broadcast, constant) have no such rule and must
        be built with explicit result types."""
        raise TypeError(f"{cls.name} has no type inference rule; build it with explicit "
                        "result types")

    def input_specs(self) -> list[TensorSpec]:
        return [spec_of(v) for v in self.operands]

    def result_specs(self) -> list[TensorSpec]:
        return [spec_of(r) for r in self.results]

    def verify_(self) -> None:
        got = self.result_specs()
        want = self.infer(self.input_specs(), self.props())
        _require(len(got) == len(want), f"{self.name}: expected {len(want)} results")
        for g, w in zip(got, want, strict=True):
            _require(g.dtype == w.dtype, f"{self.name}: result dtype {g.dtype}, inferred {w.dtype}")
            _require(g.rank == w.rank, f"{self.name}: result rank {g.rank}, inferred {w.rank}")
            for gd, wd in zip(g.shape, w.shape, strict=True):
                _require(
                    gd is None or wd is None or gd == wd,
                    f"{self.name}: result shape {g.shape}, inferred {w.shape}",
                )

    @classmethod
    def build_op(
        cls, operands: Sequence[SSAValue], results: Sequence[TensorSpec], props: Props
    ) -> GraphOp:
        """Create the op from Python values; ``None`` properties are left unset."""
        return cls.create(
            operands=list(operands),
            result_types=[r.to_ir() for r in results],
            properties={k: to_attr(v) for k, v in props.items() if v is not None},
        )


def _fmt(*operands: str, optional: Sequence[str] = ()) -> str:
    parts = " `,` ".join(f"${o}" for o in operands)
    for o in optional:
        parts += f" (`,` ${o}^)?"
    return parts + " attr-dict `:` functional-type(operands, results)"


class XToResultOp(GraphOp, ABC):
    """Operand shape shared by most ops: one tensor in (``x``), one tensor out."""

    x = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = _fmt("x")


class ShapeFromResultOp(XToResultOp, ABC):
    """Ops whose result shape is a parameter carried by the result type itself (no ``infer``
    rule: builders pass the result type)."""


class IndexedReadOp(GraphOp, ABC):
    """``result = data[f(indices)]``: the gather family."""

    data = operand_def(TensorType)
    indices = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = _fmt("data", "indices")


class IndexedWriteOp(GraphOp, ABC):
    """``result = data`` with ``updates`` written at ``f(indices)``: the scatter family."""

    data = operand_def(TensorType)
    indices = operand_def(TensorType)
    updates = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = _fmt("data", "indices", "updates")


class ValuesIndicesOp(GraphOp, ABC):
    """Selection ops returning the chosen values and their int64 positions."""

    x = operand_def(TensorType)
    values = result_def(TensorType)
    indices = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = _fmt("x")


# --------------------------------------------------------------------------------------------
# Constants


@irdl_op_definition
class ConstantOp(GraphOp):
    """``%c = weights[resource]``: an array held by the program's weight store."""

    name = "graph.constant"
    resource = prop_def(StringAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure(), ConstantLike())
    assembly_format = "$resource attr-dict `:` type($result)"

    def verify_(self) -> None:  # the type is the stored array's; Program.verify checks it
        spec_of(self.result)


# --------------------------------------------------------------------------------------------
# Elementwise

UNARY_FNS: dict[str, str] = {
    # fn -> operand domain: "float", "num" (float or int), "int", "bool", "any"
    "neg": "num", "abs": "num", "sign": "num", "exp": "float", "log": "float", "sqrt": "float",
    "rsqrt": "float", "reciprocal": "float", "sin": "float", "cos": "float", "tan": "float",
    "asin": "float", "acos": "float", "atan": "float", "sinh": "float", "cosh": "float",
    "tanh": "float", "asinh": "float", "acosh": "float", "atanh": "float", "erf": "float",
    "sigmoid": "float", "relu": "num", "floor": "float", "ceil": "float", "round": "float",
    "not": "bool", "bitwise_not": "int", "isnan": "float", "isinf": "float",
    "isposinf": "float", "isneginf": "float", "identity": "any",
}
UNARY_BOOL_RESULT = {"isnan", "isinf", "isposinf", "isneginf"}

BINARY_FNS: dict[str, str] = {
    "add": "num", "sub": "num", "mul": "num", "div": "num", "pow": "num", "max": "num",
    "min": "num", "mod": "num", "fmod": "num", "atan2": "float", "and": "bool", "or": "bool",
    "xor": "bool", "bitwise_and": "int", "bitwise_or": "int", "bitwise_xor": "int", "shl": "int",
    "shr": "int", "eq": "any", "ne": "any", "lt": "num", "le": "num", "gt": "num", "ge": "num",
}
BINARY_BOOL_RESULT = {"eq", "ne", "lt", "le", "gt", "ge"}


def _check_domain(fn: str, domain: str, dt: str, opname: str) -> None:
    kind = dtypes.dtype(dt).kind
    ok = {
        "float": kind == "float",
        "num": kind in ("float", "int", "uint"),
        "int": kind in ("int", "uint"),
        "bool": kind == "bool",
        "any": True,
    }[domain]
    _require(ok, f"{opname} '{fn}' does not accept {dt} operands")


@irdl_op_definition
class UnaryOp(XToResultOp):
    """``y[i] = fn(x[i])`` for fn in ``UNARY_FNS``."""

    name = "graph.unary"
    fn = prop_def(StringAttr)
    traits = traits_def(Pure(), _canonicalization_trait("graph.unary"))

    @classmethod
    def infer(cls, ins: list[TensorSpec], p: Props) -> list[TensorSpec]:
        fn = p["fn"]
        _require(fn in UNARY_FNS, f"graph.unary: unknown fn '{fn}'")
        _check_domain(fn, UNARY_FNS[fn], ins[0].dtype, "graph.unary")
        return [TensorSpec(ins[0].shape, "bool" if fn in UNARY_BOOL_RESULT else ins[0].dtype)]


@irdl_op_definition
class BinaryOp(GraphOp):
    """``y = fn(lhs, rhs)`` with numpy broadcasting; comparisons give bool."""

    name = "graph.binary"
    fn = prop_def(StringAttr)
    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = _fmt("lhs", "rhs")

    @classmethod
    def infer(cls, ins: list[TensorSpec], p: Props) -> list[TensorSpec]:
        fn = p["fn"]
        _require(fn in BINARY_FNS, f"graph.binary: unknown fn '{fn}'")
        dt = _same_dtype(ins, f"graph.binary '{fn}'")
        _check_domain(fn, BINARY_FNS[fn], dt, "graph.binary")
        shape = broadcast_shapes(ins[0].shape, ins[1].shape)
        return [TensorSpec(shape, "bool" if fn in BINARY_BOOL_RESULT else dt)]


@irdl_op_definition
class WhereOp(GraphOp):
    """``y = cond ? lhs : rhs`` with three-way broadcasting."""

    name = "graph.where"
    cond = operand_def(TensorType)
    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = _fmt("cond", "lhs", "rhs")

    @classmethod
    def infer(cls, ins: list[TensorSpec], p: Props) -> list[TensorSpec]:
        _require(ins[0].dtype == "bool", "graph.where: condition must be bool")
        dt = _same_dtype(ins[1:], "graph.where")
        return [TensorSpec(broadcast_shapes(*(s.shape for s in ins)), dt)]


@irdl_op_definition
class CastOp(XToResultOp):
    """``y = convert(x, to)``: round-to-nearest-even for floats, truncation toward zero float->int,
    modular wrap int->int; ``saturate`` clamps to the finite range for fp8 targets."""

    name = "graph.cast"
    to = prop_def(StringAttr)
    saturate = opt_prop_def(IntegerAttr)
    traits = traits_def(Pure(), _canonicalization_trait("graph.cast"))

    @classmethod
    def infer(cls, ins: list[TensorSpec], p: Props) -> list[TensorSpec]:
        _require(p["to"] in dtypes.DTYPES, f"graph.cast: unknown dtype '{p['to']}'")
        return [TensorSpec(ins[0].shape, p["to"])]


# --------------------------------------------------------------------------------------------
# Linear algebra


@irdl_op_definition
class MatMulOp(GraphOp):
    """``y = lhs @ rhs`` with numpy matmul semantics (batch broadcasting, 1-D promotion).
    ``out_dtype`` widens the accumulator and result (int8 x int8 -> int32)."""

    name = "graph.matmul"
    out_dtype = opt_prop_def(StringAttr)
    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = _fmt("lhs", "rhs")

    @classmethod
    def infer(cls, ins: list[TensorSpec], p: Props) -> list[TensorSpec]:
        a, b = ins
        dt = _same_dtype(ins, "graph.matmul")
        _require(a.rank >= 1 and b.rank >= 1, "graph.matmul: operands must have rank >= 1")
        ash = a.shape if a.rank > 1 else (1, *a.shape)
        bsh = b.shape if b.rank > 1 else (*b.shape, 1)
        k1, k2 = ash[-1], bsh[-2]
        _require(k1 is None or k2 is None or k1 == k2,
                 f"graph.matmul: contraction dims differ: {a.shape} @ {b.shape}")
        batch = broadcast_shapes(ash[:-2], bsh[:-2])
        shape: tuple[int | None, ...] = (*batch, ash[-2], bsh[-1])
        if a.rank == 1:
            shape = (*shape[:-2], shape[-1])
        if b.rank == 1:
            shape = shape[:-1]
        return [TensorSpec(shape, p.get("out_dtype") or dt)]


def conv_out_dim(n: int | None, k: int, stride: int, pad_begin: int, pad_end: int, dil: int,
                 ceil_mode: bool = False) -> int | None:
    """Output length of a sliding window; with ``ceil_mode`` the last window must still start
    inside the input or its leading padding (the ONNX and PyTorch rule)."""
    if n is None:
        return None
    eff = dil * (k - 1) + 1
    num = n + pad_begin + pad_end - eff
    out = (-(-num // stride) if ceil_mode else num // stride) + 1
    if ceil_mode and (out - 1) * stride >= n + pad_begin:
        out -= 1
    return out


@irdl_op_definition
class ConvOp(GraphOp):
    """N-d convolution, NC[D]HW layout: ``y[n,f,o] = sum_{c,k} x[n,g*C/G+c, o*s+k*d-pb] w[f,c,k]
    (+ bias[f])``; ``pads`` lists begins then ends."""

    name = "graph.conv"
    strides = prop_def(DenseArrayBase)
    pads = prop_def(DenseArrayBase)
    dilations = prop_def(DenseArrayBase)
    group = prop_def(IntegerAttr)
    out_dtype = opt_prop_def(StringAttr)
    x = operand_def(TensorType)
    w = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = _fmt("x", "w", optional=["bias"])

    @classmethod
    def infer(cls, ins: list[TensorSpec], p: Props) -> list[TensorSpec]:
        x, w = ins[0], ins[1]
        nsp = x.rank - 2
        _require(nsp >= 1 and w.rank == x.rank, f"graph.conv: bad ranks x{x.shape} w{w.shape}")
        _same_dtype([x, w], "graph.conv")
        s, d, pads, g = p["strides"], p["dilations"], p["pads"], p["group"]
        _require(len(s) == nsp and len(d) == nsp and len(pads) == 2 * nsp,
                 "graph.conv: strides/dilations/pads do not match the spatial rank")
        if x.shape[1] is not None and w.shape[1] is not None:
            _require(x.shape[1] == w.shape[1] * g,
                     f"graph.conv: input channels {x.shape[1]} != {w.shape[1]} x group {g}")
        if len(ins) == 3:
            _require(ins[2].shape == (w.shape[0],), "graph.conv: bias must be [out_channels]")
        spatial = [
            conv_out_dim(x.shape[2 + i], int(w.shape[2 + i] or 1), s[i], pads[i], pads[nsp + i],
                         d[i])
            for i in range(nsp)
        ]
        return [TensorSpec((x.shape[0], w.shape[0], *spatial), p.get("out_dtype") or x.dtype)]


@irdl_op_definition
class PoolOp(XToResultOp):
    """Sliding-window max/avg/lp pooling, NC[D]HW; padding is excluded from max and (unless
    ``count_include_pad``) from the average's divisor."""

    name = "graph.pool"
    kind = prop_def(StringAttr)
    kernel = prop_def(DenseArrayBase)
    strides = prop_def(DenseArrayBase)
    pads = prop_def(DenseArrayBase)
    dilations = prop_def(DenseArrayBase)
    ceil_mode = prop_def(IntegerAttr)
    count_include_pad = prop_def(IntegerAttr)
    p = opt_prop_def(IntegerAttr)

    @classmethod
    def infer(cls, ins: list[TensorSpec], p: Props) -> list[TensorSpec]:
        x = ins[0]
        nsp = x.rank - 2
        _require(p["kind"] in ("max", "avg", "lp"), f"graph.pool: unknown kind {p['kind']}")
        k, s, d, pads = p["kernel"], p["strides"], p["dilations"], p["pads"]
        _require(len(k) == nsp and len(s) == nsp and len(d) == nsp and len(pads) == 2 * nsp,
                 "graph.pool: kernel/strides/dilations/pads do not match the spatial rank")
        spatial = [
            conv_out_dim(x.shape[2 + i], k[i], s[i], pads[i], pads[nsp + i], d[i],
                         bool(p["ceil_mode"]))
            for i in range(nsp)
        ]
        return [TensorSpec((x.shape[0], x.shape[1], *spatial), x.dtype)]


# --------------------------------------------------------------------------------------------
# Reductions and normalisations


def _reduced_shape(x: TensorSpec, axes: Sequence[int], keepdims: bool) -> tuple[int | None, ...]:
    ax = {norm_axis(a, x.rank) for a in axes}
    if keepdims:
        return tuple(1 if i in ax else d for i, d in enumerate(x.shape))
    return tuple(d for i, d in enumerate(x.shape) if i not in ax)


@irdl_op_definition
class ReduceOp(XToResultOp):
    """``y = kind(x over axes)`` for kind in sum, prod, max, min; empty axes reduce nothing."""

    name = "graph.reduce"
    kind = prop_def(StringAttr)
    axes = prop_def(DenseArrayBase)
    keepdims = prop_def(IntegerAttr)

    @classmethod
    def infer(cls, ins: list[TensorSpec], p: Props) -> list[TensorSpec]:
        _require(p["kind"] in ("sum", "prod", "max", "min"), f"graph.reduce: kind {p['kind']}")
        return [TensorSpec(_reduced_shape(ins[0], p["axes"], p["keepdims"]), ins[0].dtype)]


@irdl_op_definition
class ArgReduceOp(XToResultOp):
    """``y = index of max/min of x along axis`` (int64); ties pick the first or last index."""

    name = "graph.arg_reduce"
    kind = prop_def(StringAttr)
    axis = prop_def(IntegerAttr)
    keepdims = prop_def(IntegerAttr)
    select_last_index = prop_def(IntegerAttr)

    @classmethod
    def infer(cls, ins: list[TensorSpec], p: Props) -> list[TensorSpec]:
        _require(p["kind"] in ("max", "min"), f"graph.arg_reduce: kind {p['kind']}")
        return [TensorSpec(_reduced_shape(ins[0], [p["axis"]], p["keepdims"]), "int64")]


@irdl_op_definition
class SoftmaxOp(XToResultOp):
    """``y = exp(x - max) / sum(exp(x - max))`` along one axis."""

    name = "graph.softmax"
    axis = prop_def(IntegerAttr)

    @classmethod
    def infer(cls, ins: list[TensorSpec], p: Props) -> list[TensorSpec]:
        norm_axis(p["axis"], ins[0].rank)
        _check_domain("softmax", "float", ins[0].dtype, "graph.softmax")
        return [ins[0]]


@irdl_op_definition
class LayerNormOp(GraphOp):
    """``y = (x - mean) / sqrt(var + eps) * scale (+ bias)`` over dims ``axis..rank-1``."""

    name = "graph.layer_norm"
    axis = prop_def(IntegerAttr)
    epsilon = prop_def(FloatAttr)
    x = operand_def(TensorType)
    scale = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = _fmt("x", "scale", optional=["bias"])

    @classmethod
    def infer(cls, ins: list[TensorSpec], p: Props) -> list[TensorSpec]:
        x = ins[0]
        ax = norm_axis(p["axis"], x.rank)
        normed = x.shape[ax:]
        for s in ins[1:]:
            broadcast_shapes(normed, s.shape)
            _require(s.rank <= len(normed), "graph.layer_norm: scale/bias rank exceeds normalised dims")
        _same_dtype(ins, "graph.layer_norm")
        return [x]


@irdl_op_definition
class RMSNormOp(GraphOp):
    """``y = x / sqrt(mean(x^2) + eps) * scale`` over dims ``axis..rank-1``."""

    name = "graph.rms_norm"
    axis = prop_def(IntegerAttr)
    epsilon = prop_def(FloatAttr)
    x = operand_def(TensorType)
    scale = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = _fmt("x", "scale")

    @classmethod
    def infer(cls, ins: list[TensorSpec], p: Props) -> list[TensorSpec]:
        ax = norm_axis(p["axis"], ins[0].rank)
        broadcast_shapes(ins[0].shape[ax:], ins[1].shape)
        _same_dtype(ins, "graph.rms_norm")
        return [ins[0]]


@irdl_op_definition
class CumSumOp(XToResultOp):
    """Running sum along ``axis``; ``exclusive`` shifts by one, ``reverse`` runs from the end."""

    name = "graph.cumsum"
    axis = prop_def(IntegerAttr)
    exclusive = prop_def(IntegerAttr)
    reverse = prop_def(IntegerAttr)

    @classmethod
    def infer(cls, ins: list[TensorSpec], p: Props) -> list[TensorSpec]:
        norm_axis(p["axis"], ins[0].rank)
        return [ins[0]]


# --------------------------------------------------------------------------------------------
# Data movement


@irdl_op_definition
class ReshapeOp(ShapeFromResultOp):
    """Same elements in row-major order, new shape (the result type)."""

    name = "graph.reshape"
    traits = traits_def(Pure(), _canonicalization_trait("graph.reshape"))

    def verify_(self) -> None:
        x, y = spec_of(self.x), spec_of(self.result)
        _require(x.dtype == y.dtype, "graph.reshape: dtype changes")
        if x.is_static and y.is_static:
            _require(x.numel() == y.numel(),
                     f"graph.reshape: {x.shape} has {x.numel()} elements, {y.shape} {y.numel()}")


@irdl_op_definition
class TransposeOp(XToResultOp):
    """``y[i_perm[0], ...] = x[i_0, ...]``: ``y.shape[k] = x.shape[perm[k]]``."""

    name = "graph.transpose"
    perm = prop_def(DenseArrayBase)
    traits = traits_def(Pure(), _canonicalization_trait("graph.transpose"))

    @classmethod
    def infer(cls, ins: list[TensorSpec], p: Props) -> list[TensorSpec]:
        perm = p["perm"]
        _require(sorted(perm) == list(range(ins[0].rank)), f"graph.transpose: bad perm {perm}")
        return [TensorSpec(tuple(ins[0].shape[i] for i in perm), ins[0].dtype)]


@irdl_op_definition
class SliceOp(ShapeFromResultOp):
    """``y[i] = x[starts + i * steps]`` per dim; the result type gives the count per dim."""

    name = "graph.slice"
    starts = prop_def(DenseArrayBase)
    steps = prop_def(DenseArrayBase)
    traits = traits_def(Pure(), _canonicalization_trait("graph.slice"))

    def verify_(self) -> None:
        x, y = spec_of(self.x), spec_of(self.result)
        p = self.props()
        _require(x.dtype == y.dtype and x.rank == y.rank, "graph.slice: type mismatch")
        _require(len(p["starts"]) == x.rank and len(p["steps"]) == x.rank,
                 "graph.slice: starts/steps must cover every dim")
        for dim, (n, c, s, st) in enumerate(zip(x.shape, y.shape, p["starts"], p["steps"],
                                                strict=True)):
            _require(st != 0, "graph.slice: zero step")
            if n is None or c is None or c == 0:
                continue
            last = s + (c - 1) * st
            _require(0 <= s < n and 0 <= last < n,
                     f"graph.slice: dim {dim} reads [{s}..{last}] outside 0..{n - 1}")


@irdl_op_definition
class ConcatOp(GraphOp):
    """Join operands along ``axis``."""

    name = "graph.concat"
    axis = prop_def(IntegerAttr)
    inputs = var_operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$inputs attr-dict `:` functional-type(operands, results)"

    @classmethod
    def infer(cls, ins: list[TensorSpec], p: Props) -> list[TensorSpec]:
        _require(len(ins) >= 1, "graph.concat: needs operands")
        dt = _same_dtype(ins, "graph.concat")
        r = ins[0].rank
        ax = norm_axis(p["axis"], r)
        total: int | None = 0
        for s in ins:
            _require(s.rank == r, "graph.concat: ranks differ")
            total = None if total is None or s.shape[ax] is None else total + s.shape[ax]
        out = list(ins[0].shape)
        for i in range(r):
            if i != ax:
                known = {s.shape[i] for s in ins if s.shape[i] is not None}
                _require(len(known) <= 1, f"graph.concat: dim {i} differs: {[s.shape for s in ins]}")
                out[i] = known.pop() if known else None
        out[ax] = total
        return [TensorSpec(tuple(out), dt)]


@irdl_op_definition
class PadOp(XToResultOp):
    """Pad (or crop, for negative amounts) each dim; ``pads`` lists begins then ends; ``mode`` is
    constant (with ``value``), reflect, edge or wrap."""

    name = "graph.pad"
    pads = prop_def(DenseArrayBase)
    mode = prop_def(StringAttr)
    value = prop_def(FloatAttr)

    @classmethod
    def infer(cls, ins: list[TensorSpec], p: Props) -> list[TensorSpec]:
        x, pads = ins[0], p["pads"]
        _require(len(pads) == 2 * x.rank, "graph.pad: pads must list begins and ends of every dim")
        _require(p["mode"] in ("constant", "reflect", "edge", "wrap"), f"graph.pad: mode {p['mode']}")
        shape = tuple(None if d is None else d + pads[i] + pads[x.rank + i]
                      for i, d in enumerate(x.shape))
        return [TensorSpec(shape, x.dtype)]


@irdl_op_definition
class BroadcastOp(ShapeFromResultOp):
    """``y = broadcast_to(x, result shape)`` (numpy rules)."""

    name = "graph.broadcast"
    traits = traits_def(Pure(), _canonicalization_trait("graph.broadcast"))

    def verify_(self) -> None:
        x, y = spec_of(self.x), spec_of(self.result)
        _require(x.dtype == y.dtype, "graph.broadcast: dtype changes")
        _require(broadcast_shapes(x.shape, y.shape) == tuple(y.shape) or not y.is_static,
                 f"graph.broadcast: {x.shape} does not broadcast to {y.shape}")


def _index_dtype(s: TensorSpec, opname: str) -> None:
    _require(s.dtype in ("int32", "int64"), f"{opname}: indices must be int32/int64, got {s.dtype}")


@irdl_op_definition
class GatherOp(IndexedReadOp):
    """``y[a.., i.., b..] = data[a.., idx[i..], b..]`` along ``axis``; negative indices wrap."""

    name = "graph.gather"
    axis = prop_def(IntegerAttr)

    @classmethod
    def infer(cls, ins: list[TensorSpec], p: Props) -> list[TensorSpec]:
        d, idx = ins
        _index_dtype(idx, "graph.gather")
        ax = norm_axis(p["axis"], d.rank)
        return [TensorSpec((*d.shape[:ax], *idx.shape, *d.shape[ax + 1:]), d.dtype)]


@irdl_op_definition
class GatherElementsOp(IndexedReadOp):
    """``y[i..] = data[i.. with i[axis] = idx[i..]]``; the result has the indices' shape."""

    name = "graph.gather_elements"
    axis = prop_def(IntegerAttr)

    @classmethod
    def infer(cls, ins: list[TensorSpec], p: Props) -> list[TensorSpec]:
        d, idx = ins
        _index_dtype(idx, "graph.gather_elements")
        _require(d.rank == idx.rank, "graph.gather_elements: ranks differ")
        norm_axis(p["axis"], d.rank)
        return [TensorSpec(idx.shape, d.dtype)]


@irdl_op_definition
class GatherNDOp(IndexedReadOp):
    """``y[b.., i..] = data[b.., idx[b.., i.., :]]`` (ONNX GatherND with ``batch_dims``)."""

    name = "graph.gather_nd"
    batch_dims = prop_def(IntegerAttr)

    @classmethod
    def infer(cls, ins: list[TensorSpec], p: Props) -> list[TensorSpec]:
        d, idx = ins
        _index_dtype(idx, "graph.gather_nd")
        b = p["batch_dims"]
        k = idx.shape[-1]
        _require(k is not None and b + k <= d.rank, "graph.gather_nd: index depth exceeds data rank")
        return [TensorSpec((*idx.shape[:-1], *d.shape[b + k:]), d.dtype)]


REDUCTIONS = ("none", "add", "mul", "max", "min")


@irdl_op_definition
class ScatterElementsOp(IndexedWriteOp):
    """``y = data; y[i.. with i[axis] = idx[i..]] (op)= updates[i..]``."""

    name = "graph.scatter_elements"
    axis = prop_def(IntegerAttr)
    reduction = prop_def(StringAttr)

    @classmethod
    def infer(cls, ins: list[TensorSpec], p: Props) -> list[TensorSpec]:
        d, idx, upd = ins
        _index_dtype(idx, "graph.scatter_elements")
        _require(idx.shape == upd.shape, "graph.scatter_elements: indices/updates shapes differ")
        _require(p["reduction"] in REDUCTIONS, f"graph.scatter_elements: {p['reduction']}")
        norm_axis(p["axis"], d.rank)
        return [d]


@irdl_op_definition
class ScatterNDOp(IndexedWriteOp):
    """``y = data; y[idx[i.., :]] (op)= updates[i..]`` (ONNX ScatterND)."""

    name = "graph.scatter_nd"
    reduction = prop_def(StringAttr)

    @classmethod
    def infer(cls, ins: list[TensorSpec], p: Props) -> list[TensorSpec]:
        d, idx, _ = ins
        _index_dtype(idx, "graph.scatter_nd")
        _require(p["reduction"] in REDUCTIONS, f"graph.scatter_nd: {p['reduction']}")
        return [d]


@irdl_op_definition
class TopKOp(ValuesIndicesOp):
    """The ``k`` largest (or smallest) values along ``axis`` and their int64 indices; ties keep
    the lower index first."""

    name = "graph.topk"
    axis = prop_def(IntegerAttr)
    k = prop_def(IntegerAttr)
    largest = prop_def(IntegerAttr)

    @classmethod
    def infer(cls, ins: list[TensorSpec], p: Props) -> list[TensorSpec]:
        x = ins[0]
        ax = norm_axis(p["axis"], x.rank)
        n = x.shape[ax]
        _require(n is None or 0 <= p["k"] <= n, f"graph.topk: k={p['k']} exceeds dim {n}")
        shape = tuple(p["k"] if i == ax else d for i, d in enumerate(x.shape))
        return [TensorSpec(shape, x.dtype), TensorSpec(shape, "int64")]


@irdl_op_definition
class SortOp(ValuesIndicesOp):
    """Stable sort along ``axis`` with the int64 permutation that produced it."""

    name = "graph.sort"
    axis = prop_def(IntegerAttr)
    descending = prop_def(IntegerAttr)

    @classmethod
    def infer(cls, ins: list[TensorSpec], p: Props) -> list[TensorSpec]:
        norm_axis(p["axis"], ins[0].rank)
        return [ins[0], TensorSpec(ins[0].shape, "int64")]


GRAPH_OPS: list[type[GraphOp]] = [
    ConstantOp, UnaryOp, BinaryOp, WhereOp, CastOp, MatMulOp, ConvOp, PoolOp, ReduceOp,
    ArgReduceOp, SoftmaxOp, LayerNormOp, RMSNormOp, CumSumOp, ReshapeOp, TransposeOp, SliceOp,
    ConcatOp, PadOp, BroadcastOp, GatherOp, GatherElementsOp, GatherNDOp, ScatterElementsOp,
    ScatterNDOp, TopKOp, SortOp,
]

Graph = Dialect("graph", GRAPH_OPS, [])
