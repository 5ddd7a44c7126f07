"""The ``kernel`` dialect: the loop-nest level every hardware target lowers from.

A kernel module is a list of ``kernel.buffer`` declarations (flat, typed storage: model inputs,
outputs, weights and temporaries) followed by kernels in execution order. Almost every kernel is a
``kernel.generic``: a perfectly nested loop over an iteration space whose dims are parallel first,
then reduction, like ``linalg.generic`` restricted to *strided* accesses::

    for p in parallel dims, r in reduction dims (row-major order):
        v = body(in_0[addr_0(p, r)], ..., in_k[addr_k(p, r)])
        out[addr_out(p)] = v                      # combiner "none"
        out[addr_out(p)] = combine(acc, v)        # sum/prod/max/min, acc starts at ``init``

``addr = offset + sum(stride_d * i_d)`` plus optional *indirect* terms ``stride * wrap(value)``
where ``value`` is the element another operand slot loads (gathers and scatters; ``wrap`` adds the
bound to negative values). Without ``init`` a combiner accumulates into what the output already
holds (scatter with reduction). Strided views let transposes, slices, broadcasts, im2col windows
and pads' reflections stay addressing instead of copies, so a target needs only three things: a
loop nest over a scalar body, a reduction, and a stable ``kernel.sort``.

The body is a region of scalar ops (``kernel.unary``/``binary``/``select``/``cast``/``const``/
``index``) whose functions are the graph dialect's tables, so a target's emitter is one table
from (fn, dtype) to instructions.
"""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.dialects.builtin import (
    ArrayAttr,
    DenseArrayBase,
    FloatAttr,
    IntegerAttr,
    StringAttr,
    f64,
    i1,
    i64,
)
from xdsl.ir import Attribute, Block, Dialect, Operation, Region, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    operand_def,
    opt_prop_def,
    prop_def,
    region_def,
    result_def,
    traits_def,
)
from xdsl.traits import IsTerminator, Pure
from xdsl.utils.exceptions import VerifyException

from portc.dialects import dtypes
from portc.dialects.graph import BINARY_BOOL_RESULT, BINARY_FNS, UNARY_BOOL_RESULT, UNARY_FNS

COMBINERS = ("none", "sum", "prod", "max", "min")
BUFFER_KINDS = ("input", "output", "weight", "temp")


def _ints(values: Sequence[int]) -> DenseArrayBase:
    return DenseArrayBase.from_list(i64, [int(v) for v in values])


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise VerifyException(msg)


def dtype_of_type(t: Attribute) -> str:
    return dtypes.from_ir(t).name


def type_of_dtype(name: str) -> Attribute:
    return dtypes.dtype(name).ir


# ------------------------------------------------------------------------------------ storage


@irdl_op_definition
class BufferOp(IRDLOperation):
    """``@sym_name``: ``size`` elements of ``dtype``. ``kind`` says who owns the storage: the
    caller (input/output, ``binding`` = the model's tensor name), the bundle's weights
    (``binding`` = resource name) or the program (temp, placed at ``offset`` bytes of one arena
    by ``plan-buffers``)."""

    name = "kernel.buffer"
    sym_name = prop_def(StringAttr)
    dtype = prop_def(StringAttr)
    size = prop_def(IntegerAttr)
    kind = prop_def(StringAttr)
    binding = opt_prop_def(StringAttr)
    offset = opt_prop_def(IntegerAttr)
    #: the tensor shape of inputs and outputs (how the caller sees the flat storage)
    shape = opt_prop_def(DenseArrayBase)
    assembly_format = "$sym_name attr-dict"
    irdl_options = (ParsePropInAttrDict(),)

    @staticmethod
    def make(name: str, dtype: str, size: int, kind: str, binding: str | None = None,
             shape: Sequence[int] | None = None) -> BufferOp:
        props: dict[str, Attribute] = {
            "sym_name": StringAttr(name), "dtype": StringAttr(dtype),
            "size": IntegerAttr(size, i64), "kind": StringAttr(kind),
        }
        if binding is not None:
            props["binding"] = StringAttr(binding)
        if shape is not None:
            props["shape"] = _ints(shape)
        return BufferOp.create(properties=props)

    @property
    def tensor_shape(self) -> tuple[int, ...]:
        return tuple(self.shape.get_values()) if self.shape is not None else (self.elements,)

    @property
    def buffer_name(self) -> str:
        return self.sym_name.data

    @property
    def elements(self) -> int:
        return self.size.value.data

    @property
    def nbytes(self) -> int:
        return self.elements * max(1, dtypes.dtype(self.dtype.data).bits // 8)

    def verify_(self) -> None:
        _require(self.kind.data in BUFFER_KINDS, f"kernel.buffer @{self.buffer_name}: kind "
                 f"'{self.kind.data}' is not one of {BUFFER_KINDS}")
        _require(self.dtype.data in dtypes.DTYPES, f"kernel.buffer @{self.buffer_name}: unknown "
                 f"dtype '{self.dtype.data}'")
        _require(self.elements >= 0, f"kernel.buffer @{self.buffer_name}: negative size")
        if self.kind.data != "temp":
            _require(self.binding is not None,
                     f"kernel.buffer @{self.buffer_name}: {self.kind.data} buffers need a binding")


# ------------------------------------------------------------------------------------ kernels


class KernelOp(IRDLOperation):
    """Common accessors: every kernel has a symbol name and the graph op it came from."""

    def kernel_name(self) -> str:
        return self.properties["sym_name"].data  # type: ignore[union-attr]

    def origin(self) -> str:
        a = self.properties.get("origin")
        return a.data if isinstance(a, StringAttr) else "?"


@irdl_op_definition
class GenericOp(KernelOp):
    """A strided loop nest over a scalar body (see the module docstring)."""

    name = "kernel.generic"
    sym_name = prop_def(StringAttr)
    origin_ = prop_def(StringAttr, prop_name="origin")
    dims = prop_def(DenseArrayBase)
    n_parallel = prop_def(IntegerAttr)
    ins = prop_def(ArrayAttr)
    in_strides = prop_def(DenseArrayBase)
    in_offsets = prop_def(DenseArrayBase)
    out = prop_def(StringAttr)
    out_strides = prop_def(DenseArrayBase)
    out_offset = prop_def(IntegerAttr)
    combiner = prop_def(StringAttr)
    init = opt_prop_def(FloatAttr)
    #: flattened (slot, index_slot, stride, bound) quadruples; slot -1 is the output
    indirect = prop_def(DenseArrayBase)
    body = region_def("single_block")

    # -- Python views of the properties ---------------------------------------------------
    @property
    def extents(self) -> tuple[int, ...]:
        return tuple(self.dims.get_values())

    @property
    def parallel_count(self) -> int:
        return self.n_parallel.value.data

    @property
    def input_names(self) -> list[str]:
        return [a.data for a in self.ins.data]  # type: ignore[union-attr]

    def input_strides(self, slot: int) -> tuple[int, ...]:
        nd = len(self.extents)
        return tuple(self.in_strides.get_values()[slot * nd:(slot + 1) * nd])

    def input_offset(self, slot: int) -> int:
        return int(self.in_offsets.get_values()[slot])

    @property
    def output_strides(self) -> tuple[int, ...]:
        return tuple(self.out_strides.get_values())

    @property
    def output_offset(self) -> int:
        return self.out_offset.value.data

    @property
    def output_name(self) -> str:
        return self.out.data

    @property
    def combine(self) -> str:
        return self.combiner.data

    @property
    def init_value(self) -> float | None:
        return None if self.init is None else float(self.init.value.data)

    @property
    def indirect_terms(self) -> list[tuple[int, int, int, int]]:
        v = list(self.indirect.get_values())
        return [tuple(v[i:i + 4]) for i in range(0, len(v), 4)]  # type: ignore[misc]

    @property
    def yielded(self) -> SSAValue:
        term = self.body.block.last_op
        assert isinstance(term, YieldOp)
        return term.value

    @staticmethod
    def make(name: str, origin: str, dims: Sequence[int], n_parallel: int,
             ins: Sequence[tuple[str, Sequence[int], int]], out: tuple[str, Sequence[int], int],
             combiner: str, init: float | None, indirect: Sequence[tuple[int, int, int, int]],
             body: Block) -> GenericOp:
        props: dict[str, Attribute] = {
            "sym_name": StringAttr(name), "origin": StringAttr(origin),
            "dims": _ints(dims), "n_parallel": IntegerAttr(n_parallel, i64),
            "ins": ArrayAttr([StringAttr(b) for b, _, _ in ins]),
            "in_strides": _ints([s for _, st, _ in ins for s in st]),
            "in_offsets": _ints([o for _, _, o in ins]),
            "out": StringAttr(out[0]), "out_strides": _ints(out[1]),
            "out_offset": IntegerAttr(out[2], i64), "combiner": StringAttr(combiner),
            "indirect": _ints([x for t in indirect for x in t]),
        }
        if init is not None:
            props["init"] = FloatAttr(float(init), f64)
        return GenericOp.create(properties=props, regions=[Region(body)])

    def verify_(self) -> None:
        nd, n_in = len(self.extents), len(self.input_names)
        where = f"kernel.generic @{self.kernel_name()} (from {self.origin()})"
        _require(all(d >= 0 for d in self.extents), f"{where}: negative extent")
        _require(0 <= self.parallel_count <= nd, f"{where}: n_parallel out of range")
        _require(len(self.in_strides.get_values()) == nd * n_in, f"{where}: in_strides must "
                 "hold one stride per dim per input")
        _require(len(self.in_offsets.get_values()) == n_in, f"{where}: one offset per input")
        _require(len(self.output_strides) == nd, f"{where}: one output stride per dim")
        _require(self.combine in COMBINERS, f"{where}: combiner '{self.combine}'")
        red = self.extents[self.parallel_count:]
        if self.combine == "none":
            _require(all(e == 1 for e in red), f"{where}: reduction dims need a combiner")
        for d in range(self.parallel_count, nd):
            _require(self.output_strides[d] == 0,
                     f"{where}: the output may not move along reduction dim {d}")
        _require(len(self.indirect.get_values()) % 4 == 0, f"{where}: indirect terms are quads")
        for slot, islot, _, bound in self.indirect_terms:
            _require(-1 <= slot < n_in and 0 <= islot < n_in and bound > 0,
                     f"{where}: bad indirect term ({slot}, {islot}, _, {bound})")
        block = self.body.block
        _require(len(block.args) == n_in, f"{where}: body takes one argument per input")
        _require(isinstance(block.last_op, YieldOp), f"{where}: body must end in kernel.yield")


@irdl_op_definition
class SortOp(KernelOp):
    """Stable sort of each row of a contiguous ``[rows, n]`` buffer, keeping the first ``k``:
    values into ``values`` and their int64 column indices into ``indices`` (both ``[rows, k]``).
    NaN sorts as the largest value; ties keep the lower index first."""

    name = "kernel.sort"
    sym_name = prop_def(StringAttr)
    origin_ = prop_def(StringAttr, prop_name="origin")
    input = prop_def(StringAttr)
    input_offset = prop_def(IntegerAttr)
    values = prop_def(StringAttr)
    indices = prop_def(StringAttr)
    rows = prop_def(IntegerAttr)
    n = prop_def(IntegerAttr)
    k = prop_def(IntegerAttr)
    descending = prop_def(IntegerAttr)
    assembly_format = "$sym_name attr-dict"
    irdl_options = (ParsePropInAttrDict(),)

    @staticmethod
    def make(name: str, origin: str, inp: str, inp_offset: int, values: str, indices: str,
             rows: int, n: int, k: int, descending: bool) -> SortOp:
        return SortOp.create(properties={
            "sym_name": StringAttr(name), "origin": StringAttr(origin), "input": StringAttr(inp),
            "input_offset": IntegerAttr(inp_offset, i64), "values": StringAttr(values),
            "indices": StringAttr(indices), "rows": IntegerAttr(rows, i64),
            "n": IntegerAttr(n, i64), "k": IntegerAttr(k, i64),
            "descending": IntegerAttr(int(descending), i64),
        })

    def verify_(self) -> None:
        _require(0 <= self.k.value.data <= self.n.value.data,
                 f"kernel.sort @{self.kernel_name()}: k exceeds the row length")


# ------------------------------------------------------------------------------------ body ops


@irdl_op_definition
class UnaryOp(IRDLOperation):
    """``y = fn(x)`` for fn in the graph dialect's ``UNARY_FNS``."""

    name = "kernel.unary"
    fn = prop_def(StringAttr)
    x = operand_def()
    irdl_options = (ParsePropInAttrDict(),)
    result = result_def()
    traits = traits_def(Pure())
    assembly_format = "$fn $x attr-dict `:` type($x) `->` type($result)"

    def verify_(self) -> None:
        fn = self.fn.data
        _require(fn in UNARY_FNS, f"kernel.unary: unknown fn '{fn}'")
        want = i1 if fn in UNARY_BOOL_RESULT else self.x.type
        _require(self.result.type == want, f"kernel.unary {fn}: result type {self.result.type}")


@irdl_op_definition
class BinaryOp(IRDLOperation):
    """``y = fn(a, b)`` for fn in the graph dialect's ``BINARY_FNS``; comparisons give i1."""

    name = "kernel.binary"
    fn = prop_def(StringAttr)
    a = operand_def()
    irdl_options = (ParsePropInAttrDict(),)
    b = operand_def()
    result = result_def()
    traits = traits_def(Pure())
    assembly_format = "$fn $a `,` $b attr-dict `:` functional-type(operands, results)"

    def verify_(self) -> None:
        fn = self.fn.data
        _require(fn in BINARY_FNS, f"kernel.binary: unknown fn '{fn}'")
        _require(self.a.type == self.b.type, f"kernel.binary {fn}: operand types differ")
        want = i1 if fn in BINARY_BOOL_RESULT else self.a.type
        _require(self.result.type == want, f"kernel.binary {fn}: result type {self.result.type}")


@irdl_op_definition
class SelectOp(IRDLOperation):
    """``y = cond ? a : b``."""

    name = "kernel.select"
    cond = operand_def()
    a = operand_def()
    b = operand_def()
    result = result_def()
    traits = traits_def(Pure())
    assembly_format = "$cond `,` $a `,` $b attr-dict `:` functional-type(operands, results)"

    def verify_(self) -> None:
        _require(self.cond.type == i1, "kernel.select: condition must be i1")
        _require(self.a.type == self.b.type == self.result.type, "kernel.select: types differ")


@irdl_op_definition
class CastOp(IRDLOperation):
    """``y = convert(x)`` with the graph dialect's cast rules (RNE, truncation to int, wrap);
    ``saturate`` = 0 lets float8 overflow to inf/NaN instead of clamping."""

    name = "kernel.cast"
    x = operand_def()
    result = result_def()
    saturate = opt_prop_def(IntegerAttr)
    irdl_options = (ParsePropInAttrDict(),)
    traits = traits_def(Pure())
    assembly_format = "$x attr-dict `:` type($x) `->` type($result)"


@irdl_op_definition
class ConstOp(IRDLOperation):
    """A scalar literal of the result type (floats held as f64, exact for every narrower type)."""

    name = "kernel.const"
    value = prop_def(Attribute)
    result = result_def()
    irdl_options = (ParsePropInAttrDict(),)
    traits = traits_def(Pure())
    assembly_format = "$value attr-dict `:` type($result)"

    @staticmethod
    def make(value: float | int | bool, dtype: str) -> ConstOp:
        kind = dtypes.dtype(dtype).kind
        attr: Attribute = FloatAttr(float(value), f64) if kind == "float" else \
            IntegerAttr(int(value), i64)
        return ConstOp.create(properties={"value": attr}, result_types=[type_of_dtype(dtype)])

    @property
    def number(self) -> float | int:
        v = self.value
        if isinstance(v, FloatAttr):
            return float(v.value.data)
        assert isinstance(v, IntegerAttr)
        return int(v.value.data)


@irdl_op_definition
class IndexOp(IRDLOperation):
    """The current iteration index along ``dim`` (int64)."""

    name = "kernel.index"
    dim = prop_def(IntegerAttr)
    result = result_def()
    irdl_options = (ParsePropInAttrDict(),)
    traits = traits_def(Pure())
    assembly_format = "$dim attr-dict `:` type($result)"


@irdl_op_definition
class YieldOp(IRDLOperation):
    """Ends a generic body with the value to store or combine."""

    name = "kernel.yield"
    value = operand_def()
    traits = traits_def(IsTerminator())
    assembly_format = "$value attr-dict `:` type($value)"


BODY_OPS = (UnaryOp, BinaryOp, SelectOp, CastOp, ConstOp, IndexOp, YieldOp)
Kernel = Dialect("kernel", [BufferOp, GenericOp, SortOp, *BODY_OPS], [])


def buffers_of(module: Operation) -> dict[str, BufferOp]:
    """The module's buffer declarations by symbol name."""
    return {op.buffer_name: op for op in module.walk() if isinstance(op, BufferOp)}


def kernels_of(module: Operation) -> list[KernelOp]:
    """Kernels in execution order."""
    return [op for op in module.walk() if isinstance(op, KernelOp)]


def bound_buffers(module: Operation, kind: str) -> list[BufferOp]:
    """Input or output buffers in declaration order (the model's order)."""
    return [b for b in buffers_of(module).values() if b.kind.data == kind]
