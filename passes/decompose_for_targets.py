"""``decompose-for-targets``: rewrite what the model-changing passes add beyond the core
``graph`` dialect into core ``graph`` ops over dtypes every target has.

Hardware targets implement the closed core op set over float64/32/16, bfloat16, (u)int8..64 and
bool. Quantization, pruning and MoE add more: compressed weights (``sparse.assemble`` /
``sparse.matmul`` in any encoding), int4/int2 and fp8 storage, run-time fp8 casts of
activations, and ``moe.moe``. A target puts this pass at the start of its graph pipeline; until
it has native sparse, int4 or fp8 units it then compiles every changed model through the core
ops, with results *bit-identical* to the reference interpreter of the changed model:

* ``moe.moe`` -> the ``moe-routing`` lowering (counting-sort dispatch, grouped GEMM, combine).
* ``sparse.assemble`` of constants -> the dense constant it decodes to (compile-time work; the
  reference kernel decodes the same way, so values are equal); of run-time components -> core
  ops decoding them (integer div/mod bit unpacking, then scatter for N:M and CSR, cumsum +
  gather + select for bitmask); ``sparse.matmul`` -> ``graph.matmul`` (the sparse kernel *is*
  the dense matmul on the decoded weight).
* a constant of a narrow dtype -> the same values in a core storage dtype (``STORAGE``): int4 and
  int2 unpack to int8, uint4/uint2 to uint8, fp8/fp4 convert exactly to float16 (every e4m3,
  e5m2 and e2m1 value is a float16), e8m0 to float32. Its readers must be ``graph.cast`` ops,
  which then cast the same values from the storage dtype.
* a ``graph.cast`` *to* an fp8 type (the fp8 pass quantizing activations) -> the value it
  produces, computed in the source float type by core ops: round to the format's mantissa at
  the value's binade (``round(x / step) * step`` with ``step`` picked by comparisons against the
  binade thresholds, exact power-of-two scaling, round-half-even like the cast), then the
  cast's overflow rule (saturate to +-max, else NaN for e4m3fn and the fnuz forms / +-inf for
  e5m2; fnuz formats have no negative zero).
* a ``graph.cast`` to float4_e2m1fn -> the same rounding with e2m1's binades (0.5 steps below
  2, then 1, then 2 up to 6), always saturating (e2m1 has no inf/NaN; NaN gives -0).
* a ``graph.cast`` to int4/int2/uint4/uint2 -> int64 (the core cast: floats truncate), wrapped
  modulo ``2^bits`` by core integer ops, held in int8/uint8 as the reference computes it.
* ``@main`` inputs and results of narrow dtypes travel in their STORAGE dtype (same values);
  they may only be cast or returned. The bundle's manifest keeps the model-level dtypes, and
  runtimes convert the caller's arrays exactly at the boundary (``BufferLayout``).

Anything else outside the core set (an op reading a narrow
dtype other than a cast, a ``moe.moe`` with a dynamic token count, a run-time cast to e8m0) is
refused with ``DecompositionError`` naming the op, rather than handed to a target that would
miscompile it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import InsertPoint, Rewriter

from portc.compiler.builder import ssa_hint
from portc.compiler.errors import IRError
from portc.compiler.program import weights_of
from portc.compiler.weights import WeightStore
from portc.dialects import dtypes, moe
from portc.dialects import graph as g
from portc.dialects import sparse as sp
from portc.passes.registry import register_pass
from portc.runtimes.reference.sparse_kernels import decode


class DecompositionError(IRError):
    """An op or dtype outside the core set that ``decompose-for-targets`` cannot express in
    core ops (the message names the op and its result)."""


#: dtypes every target implements
CORE_DTYPES = frozenset({"float64", "float32", "float16", "bfloat16", "int8", "int16", "int32",
                         "int64", "uint8", "uint16", "uint32", "uint64", "bool"})

#: non-core dtype -> core dtype that holds every one of its values exactly
STORAGE: dict[str, str] = {
    "int4": "int8", "int2": "int8", "uint4": "uint8", "uint2": "uint8",
    "float8_e4m3fn": "float16", "float8_e4m3fnuz": "float16", "float8_e5m2": "float16",
    "float8_e5m2fnuz": "float16", "float4_e2m1fn": "float16", "float8_e8m0fnu": "float32",
}


@dataclass(frozen=True)
class Fp8Format:
    """What a run-time cast to an fp8 type does to a value: ``mantissa`` bits, smallest normal
    and largest binade exponents, largest finite value, and what overflow gives without
    ``saturate``."""

    mantissa: int
    emin: int
    emax: int
    max: float
    overflow: str  # "nan" | "inf"
    signed_zero: bool = True


FP8_CASTS: dict[str, Fp8Format] = {
    "float8_e4m3fn": Fp8Format(3, -6, 8, 448.0, "nan"),
    "float8_e5m2": Fp8Format(2, -14, 15, 57344.0, "inf"),
    # fnuz: one NaN, no infinities, no negative zero (exponent bias one larger)
    "float8_e4m3fnuz": Fp8Format(3, -7, 7, 240.0, "nan", signed_zero=False),
    "float8_e5m2fnuz": Fp8Format(2, -15, 15, 57344.0, "nan", signed_zero=False),
}
#: e2m1 has no infinities or NaN: every cast saturates (ONNX's ``saturate`` is for float8
#: only) and NaN becomes -0 (0x8), as the reference's conversion (ml_dtypes) gives for the
#: NaN arithmetic produces (it gives +0 for a NaN with the sign bit set; core ops have no
#: test for the sign of a NaN, so that one input differs in the sign of its zero)
FP4_E2M1 = Fp8Format(1, 0, 2, 6.0, "saturate")

#: ops that only move or copy elements: a narrow value passes through them in its storage dtype
VALUE_PRESERVING: tuple[type[Operation], ...] = (g.ReshapeOp, g.TransposeOp, g.BroadcastOp,
                                                 g.SliceOp, g.ConcatOp)

#: narrow integer dtype -> its bit width (values live sign- or zero-extended in STORAGE)
NARROW_INTS: dict[str, int] = {"int4": 4, "int2": 2, "uint4": 4, "uint2": 2}


def _where(op: Operation) -> str:
    hints = [r.name_hint for r in op.results if r.name_hint]
    return f"'{op.name}' (result %{hints[0]})" if hints else f"'{op.name}'"


def _dtype_of(v: SSAValue) -> str | None:
    try:
        return g.spec_of(v).dtype
    except Exception:  # noqa: BLE001 - a non-tensor value has no portc dtype
        return None


class _Emit:
    """Builds core graph ops before an anchor, inferring result types."""

    def __init__(self, rewriter: Rewriter, anchor: Operation, weights: WeightStore,
                 hint: str) -> None:
        self.rewriter, self.anchor, self.weights, self.hint = rewriter, anchor, weights, hint

    def insert(self, op: Operation) -> None:
        self.rewriter.insert_op(op, InsertPoint.before(self.anchor))

    def op(self, cls: type[g.GraphOp], operands: list[SSAValue], props: g.Props) -> SSAValue:
        new = cls.build_op(operands, cls.infer([g.spec_of(v) for v in operands], props), props)
        self.insert(new)
        return new.results[0]

    def shaped(self, cls: type[g.GraphOp], x: SSAValue, shape: tuple[int, ...],
               props: g.Props | None = None) -> SSAValue:
        """An op whose result shape is its own parameter (reshape, slice, broadcast)."""
        spec = g.TensorSpec(shape, g.spec_of(x).dtype)
        new = cls.build_op([x], [spec], props or {})
        self.insert(new)
        return new.results[0]

    def const(self, arr: np.ndarray, suffix: str) -> SSAValue:
        arr = np.ascontiguousarray(arr)  # (0-d arrays become [1]; they broadcast alike)
        name = self.weights.add(arr, f"{self.hint}.{suffix}")
        spec = g.TensorSpec(tuple(arr.shape), dtypes.from_numpy(arr.dtype).name)
        c = g.ConstantOp.build_op([], [spec], {"resource": name})
        c.results[0].name_hint = ssa_hint(name)
        self.insert(c)
        return c.results[0]

    def scalar(self, value: float, dtype: str, suffix: str) -> SSAValue:
        return self.const(np.array(value, dtypes.dtype(dtype).numpy), suffix)


def emulate_fp8_cast(e: _Emit, x: SSAValue, fmt: Fp8Format, saturate: bool) -> SSAValue:
    """Core ops computing the values of ``cast(x -> fp8)`` in x's float dtype (module doc)."""
    dt = g.spec_of(x).dtype
    a = e.op(g.UnaryOp, [x], {"fn": "abs"})
    step = e.scalar(2.0 ** (fmt.emin - fmt.mantissa), dt, "fp8_step")
    for k in range(fmt.emin + 1, fmt.emax + 1):  # binade thresholds 2^k, step 2^(k - m)
        ge = e.op(g.BinaryOp, [a, e.scalar(2.0 ** k, dt, "fp8_binade")], {"fn": "ge"})
        step = e.op(g.WhereOp, [ge, e.scalar(2.0 ** (k - fmt.mantissa), dt, "fp8_step"), step],
                    {})
    q = e.op(g.UnaryOp, [e.op(g.BinaryOp, [x, step], {"fn": "div"})], {"fn": "round"})
    q = e.op(g.BinaryOp, [q, step], {"fn": "mul"})
    if not fmt.signed_zero:  # -0 rounds to the format's only zero
        zero = e.scalar(0.0, dt, "zero")
        q = e.op(g.WhereOp, [e.op(g.BinaryOp, [q, zero], {"fn": "eq"}), zero, q], {})
    if saturate:  # the cast clamps first; rounding a clamped value never exceeds max
        q = e.op(g.BinaryOp, [q, e.scalar(-fmt.max, dt, "fp8_min")], {"fn": "max"})
        return e.op(g.BinaryOp, [q, e.scalar(fmt.max, dt, "fp8_max")], {"fn": "min"})
    big = e.op(g.BinaryOp, [e.op(g.UnaryOp, [q], {"fn": "abs"}),
                            e.scalar(fmt.max, dt, "fp8_max")], {"fn": "gt"})
    if fmt.overflow == "nan":
        return e.op(g.WhereOp, [big, e.scalar(np.nan, dt, "nan"), q], {})
    inf = e.op(g.BinaryOp, [e.scalar(np.inf, dt, "inf"), e.op(g.UnaryOp, [q], {"fn": "sign"})],
               {"fn": "mul"})
    return e.op(g.WhereOp, [big, inf, q], {})


def emulate_fp4_cast(e: _Emit, x: SSAValue) -> SSAValue:
    """Core ops computing ``cast(x -> float4_e2m1fn)``: the fp8 rounding with e2m1's binades,
    always saturating, NaN -> -0."""
    dt = g.spec_of(x).dtype
    q = emulate_fp8_cast(e, x, FP4_E2M1, saturate=True)
    nan = e.op(g.UnaryOp, [x], {"fn": "isnan"})
    return e.op(g.WhereOp, [nan, e.scalar(-0.0, dt, "fp4_nan"), q], {})


def emulate_narrow_int_cast(e: _Emit, x: SSAValue, to: str) -> SSAValue:
    """Core ops computing ``cast(x -> int4/int2/uint4/uint2)`` as the reference does: to int64
    (floats truncate; the core cast's wrap), then wrap modulo ``2^bits``, held in STORAGE."""
    bits = NARROW_INTS[to]
    t = e.op(g.CastOp, [x], {"to": "int64"})
    v = e.op(g.BinaryOp, [t, e.scalar(2 ** bits, "int64", "wrap")], {"fn": "mod"})  # [0, 2^b)
    if dtypes.dtype(to).kind == "int":
        neg = e.op(g.BinaryOp, [v, e.scalar(2 ** (bits - 1), "int64", "sign")], {"fn": "ge"})
        low = e.op(g.BinaryOp, [v, e.scalar(2 ** bits, "int64", "wrap")], {"fn": "sub"})
        v = e.op(g.WhereOp, [neg, low, v], {})
    return e.op(g.CastOp, [v], {"to": STORAGE[to]})


# ------------------------------------------------------------------------------ run-time decoding
# A compressed weight assembled from run-time values (not constants) is decoded by core ops:
# bit fields are unpacked with integer div/mod, positions become indices, and the values land in
# a zero [K, N] tensor by scatter (N:M, CSR) or gather + select (bitmask). Each computes the
# same dense matrix as the reference ``sparse.assemble`` kernel for well-formed metadata.


def _unpack_fields(e: _Emit, packed: SSAValue, bits: int, count: int) -> SSAValue:
    """uint8 [R, B] of little-endian ``bits``-wide fields -> int64 [R, count]."""
    r, b = (int(d) for d in g.spec_of(packed).shape)  # type: ignore[arg-type]
    per = 8 // bits
    p64 = e.op(g.CastOp, [packed], {"to": "int64"})
    fields = []
    for f in range(per):
        v = e.op(g.BinaryOp, [p64, e.scalar(2 ** (bits * f), "int64", "shift")], {"fn": "div"})
        v = e.op(g.BinaryOp, [v, e.scalar(2 ** bits, "int64", "field")], {"fn": "mod"})
        fields.append(e.shaped(g.ReshapeOp, v, (r, b, 1)))
    allf = e.shaped(g.ReshapeOp, e.op(g.ConcatOp, fields, {"axis": 2}), (r, b * per))
    if count == b * per:
        return allf
    return e.shaped(g.SliceOp, allf, (r, count), {"starts": (0, 0), "steps": (1, 1)})


def _zeros(e: _Emit, k: int, n: int, dtype: str) -> SSAValue:
    return e.shaped(g.BroadcastOp, e.scalar(0, dtype, "zero"), (k, n))


def _expand_nm(e: _Emit, comps: list[SSAValue], enc: sp.SparseEncoding, k: int, n: int,
               dtype: str) -> SSAValue:
    assert isinstance(enc, sp.NMEncoding)
    values, indices = comps
    rows_kept = k // enc.m * enc.n
    pos = _unpack_fields(e, indices, enc.index_bits, n)
    base = (enc.m * (np.arange(rows_kept, dtype=np.int64) // enc.n)).reshape(rows_kept, 1)
    rows = e.op(g.BinaryOp, [pos, e.const(base, "group_row")], {"fn": "add"})
    return e.op(g.ScatterElementsOp, [_zeros(e, k, n, dtype), rows, values],
                {"axis": 0, "reduction": "none"})


def _expand_bitmask(e: _Emit, comps: list[SSAValue], enc: sp.SparseEncoding, k: int, n: int,
                    dtype: str) -> SSAValue:
    mask, values = comps
    nnz = enc.nnz(k, n)
    if nnz == 0:
        return _zeros(e, k, n, dtype)
    keep = e.shaped(g.ReshapeOp, _unpack_fields(e, mask, 1, n), (k * n,))
    slot = e.op(g.CumSumOp, [keep], {"axis": 0, "exclusive": True, "reverse": False})
    slot = e.op(g.BinaryOp, [slot, e.scalar(nnz - 1, "int64", "last")], {"fn": "min"})
    picked = e.op(g.GatherOp, [values, slot], {"axis": 0})
    kept = e.op(g.CastOp, [keep], {"to": "bool"})
    flat = e.op(g.WhereOp, [kept, picked, e.scalar(0, dtype, "zero")], {})
    return e.shaped(g.ReshapeOp, flat, (k, n))


def _expand_csr(e: _Emit, comps: list[SSAValue], enc: sp.SparseEncoding, k: int, n: int,
                dtype: str) -> SSAValue:
    row_ptr, col_idx, values = comps
    nnz = enc.nnz(k, n)
    if nnz == 0:
        return _zeros(e, k, n, dtype)
    ends = e.shaped(g.SliceOp, e.op(g.CastOp, [row_ptr], {"to": "int64"}), (k,),
                    {"starts": (1,), "steps": (1,)})
    ends = e.shaped(g.ReshapeOp, ends, (1, k))
    j = e.const(np.arange(nnz, dtype=np.int64).reshape(nnz, 1), "entry")
    # the row of entry j is the number of rows that end at or before j
    done = e.op(g.CastOp, [e.op(g.BinaryOp, [ends, j], {"fn": "le"})], {"to": "int64"})
    rows = e.op(g.ReduceOp, [done], {"kind": "sum", "axes": (1,), "keepdims": True})
    cols = e.shaped(g.ReshapeOp, e.op(g.CastOp, [col_idx], {"to": "int64"}), (nnz, 1))
    idx = e.op(g.ConcatOp, [rows, cols], {"axis": 1})
    return e.op(g.ScatterNDOp, [_zeros(e, k, n, dtype), idx, values], {"reduction": "none"})


#: encoding -> core-op decoder of run-time components: one row per format
RUNTIME_DECODERS: dict[type[sp.SparseEncoding],
                       Callable[[_Emit, list[SSAValue], sp.SparseEncoding, int, int, str],
                                SSAValue]] = {
    sp.NMEncoding: _expand_nm,
    sp.BitmaskEncoding: _expand_bitmask,
    sp.CSREncoding: _expand_csr,
}


class _Decomposer:
    """One walk over ``@main`` in program order; each handler rewrites one kind of op."""

    def __init__(self, weights: WeightStore) -> None:
        self.weights = weights
        self.rewriter = Rewriter()
        self.handlers: dict[type[Operation], Callable[[Operation], None]] = {
            sp.AssembleOp: self.assemble,
            sp.MatMulOp: self.sparse_matmul,
            g.ConstantOp: self.constant,
            g.CastOp: self.cast,
            **{cls: self.movement for cls in VALUE_PRESERVING},
        }

    def run(self, main: func.FuncOp) -> None:
        for arg in list(main.args):
            self.narrow_input(arg)
        for op in list(main.body.block.ops):
            handler = self.handlers.get(type(op))
            if handler is not None:
                handler(op)
            else:
                self.check_core(op)
        # narrow inputs and outputs now travel in their storage dtypes: runtimes convert the
        # caller's arrays (exactly) at the boundary, from the manifest's model-level dtypes
        main.update_function_type()

    def narrow_input(self, arg: SSAValue) -> None:
        """An int4/fp8/... input arrives in its core storage dtype (same values); it may only be
        cast or returned, as a narrow constant may."""
        src = _dtype_of(arg)
        if src in CORE_DTYPES:
            return
        if src not in STORAGE:
            raise DecompositionError(f"decompose-for-targets: @main takes a {src} input, which "
                                     "has no exact core storage type; pass it as a core dtype")
        self._check_narrow_readers(arg, f"input %{arg.name_hint or 'arg'}")
        spec = g.spec_of(arg)
        Rewriter.replace_value_with_new_type(arg, g.TensorSpec(spec.shape, STORAGE[src]).to_ir())

    # ---------------------------------------------------------------------------- handlers

    def check_core(self, op: Operation) -> None:
        if isinstance(op, func.ReturnOp):
            bad = [d for v in op.operands if (d := _dtype_of(v)) not in CORE_DTYPES]
            if bad:  # (narrow results were retyped to their storage dtype before the return)
                raise DecompositionError(f"decompose-for-targets: @main returns {bad[0]}; "
                                         "targets return only core dtypes")
            return
        if not op.name.startswith("graph."):
            hint = (" (its token count is not static, so moe-routing could not lower it)"
                    if isinstance(op, moe.MoEOp) else "")
            raise DecompositionError(f"decompose-for-targets: {_where(op)} is outside the core "
                                     f"graph dialect and has no decomposition{hint}")
        for v in (*op.operands, *op.results):
            if (d := _dtype_of(v)) not in CORE_DTYPES:
                raise DecompositionError(f"decompose-for-targets: {_where(op)} computes on {d}, "
                                         "which targets lack; only casts from narrow storage "
                                         "types are decomposed")
            if sp.encoding_of(v.type) is not None:
                raise DecompositionError(f"decompose-for-targets: {_where(op)} reads a "
                                         "compressed weight; only sparse.matmul may")

    def movement(self, op: Operation) -> None:
        """Reshape/transpose/broadcast/slice/concat of narrow values held in storage: the same
        op over the storage dtype (no element changes value)."""
        out = g.spec_of(op.results[0])
        if out.dtype in CORE_DTYPES:
            self.check_core(op)
            return
        storage = STORAGE.get(out.dtype)
        if storage is None or any(_dtype_of(v) != storage for v in op.operands):
            raise DecompositionError(f"decompose-for-targets: {_where(op)} moves {out.dtype} "
                                     "values that were not decomposed into a storage dtype")
        self._check_narrow_readers(op.results[0], _where(op))
        Rewriter.replace_value_with_new_type(op.results[0],
                                             g.TensorSpec(out.shape, storage).to_ir())

    def assemble(self, op: Operation) -> None:
        assert isinstance(op, sp.AssembleOp)
        owners = [v.owner for v in op.operands]
        spec = g.spec_of(op.result)
        k, n = (int(d) for d in spec.shape)  # type: ignore[arg-type]
        e = _Emit(self.rewriter, op, self.weights, op.result.name_hint or "sparse")
        if all(isinstance(o, g.ConstantOp) for o in owners):  # decode at compile time
            arrays = [self.weights[o.resource.data] for o in owners]  # type: ignore[union-attr]
            dense = e.const(decode(arrays, op.encoding, k, n), "dense")
        else:
            dense = RUNTIME_DECODERS[type(op.encoding)](e, list(op.operands), op.encoding, k, n,
                                                        spec.dtype)
        self.rewriter.replace_op(op, [], [dense])
        for o in owners:
            if isinstance(o, g.ConstantOp) and not o.results[0].uses:
                self.rewriter.erase_op(o)

    def sparse_matmul(self, op: Operation) -> None:
        assert isinstance(op, sp.MatMulOp)
        mm = g.MatMulOp.build_op([op.x, op.weight], op.result_specs(), {})
        mm.results[0].name_hint = op.result.name_hint
        self.rewriter.replace_op(op, mm)

    @staticmethod
    def _check_narrow_readers(value: SSAValue, what: str) -> None:
        """A narrow value held in its storage dtype keeps its meaning only for readers that
        cast it (they then cast the same values) or return it (the runtime converts back)."""
        for use in value.uses:
            if not isinstance(use.operation, (g.CastOp, func.ReturnOp, *VALUE_PRESERVING)):
                raise DecompositionError(
                    f"decompose-for-targets: {_where(use.operation)} reads the "
                    f"{g.spec_of(value).dtype} value of {what}; only casts from narrow "
                    "storage types are decomposed")

    def _retype(self, op: Operation, new: SSAValue) -> None:
        """Replace ``op``'s narrow result by ``new`` (same values, core dtype); every reader
        must be a cast or the return."""
        old = op.results[0]
        self._check_narrow_readers(old, _where(op))
        new.name_hint = old.name_hint
        self.rewriter.replace_op(op, [], [new])

    def constant(self, op: Operation) -> None:
        assert isinstance(op, g.ConstantOp)
        src = g.spec_of(op.result).dtype
        if src in CORE_DTYPES:
            return
        if src not in STORAGE:
            raise DecompositionError(f"decompose-for-targets: {_where(op)} holds {src}, which "
                                     "has no exact core storage type")
        arr = self.weights[op.resource.data]
        wide = arr.astype(dtypes.dtype(STORAGE[src]).numpy)
        # exactness is the contract: every value must survive the round trip
        back = wide.astype(arr.dtype)
        if not np.array_equal(back, arr, equal_nan=dtypes.is_float(src)):
            raise DecompositionError(f"decompose-for-targets: {_where(op)}: {src} -> "
                                     f"{STORAGE[src]} is not exact")
        e = _Emit(self.rewriter, op, self.weights, op.resource.data)
        self._retype(op, e.const(wide, STORAGE[src]))

    def cast(self, op: Operation) -> None:
        assert isinstance(op, g.CastOp)
        to = g.spec_of(op.result).dtype
        src = g.spec_of(op.x).dtype
        if to in CORE_DTYPES:
            if src not in CORE_DTYPES:  # its producer was not decomposed (a run-time narrow value)
                raise DecompositionError(f"decompose-for-targets: {_where(op)} casts a run-time "
                                         f"{src} value, which targets cannot hold")
            return
        if src not in CORE_DTYPES:
            raise DecompositionError(f"decompose-for-targets: {_where(op)} casts a run-time "
                                     f"{src} value, which targets cannot hold")
        e = _Emit(self.rewriter, op, self.weights, op.result.name_hint or to)
        if to in NARROW_INTS:
            self._retype(op, emulate_narrow_int_cast(e, op.x, to))
            return
        if to == "float4_e2m1fn" and dtypes.is_float(src):
            self._retype(op, emulate_fp4_cast(e, op.x))
            return
        fmt = FP8_CASTS.get(to)
        if fmt is None or not dtypes.is_float(src):
            raise DecompositionError(f"decompose-for-targets: {_where(op)} casts {src} to {to} "
                                     "at run time; only float -> float8 (e4m3fn, e5m2 and their "
                                     "fnuz forms), float -> float4_e2m1fn and any -> "
                                     "int4/int2/uint4/uint2 casts are decomposed")
        self._retype(op, emulate_fp8_cast(e, op.x, fmt, bool(op.props().get("saturate", True))))


@register_pass
@dataclass(frozen=True)
class DecomposeForTargetsPass(ModulePass):
    """Rewrite sparse, narrow-dtype (int4/int2/fp8) and MoE ops into core graph ops over core
    dtypes, bit-identical to the reference of the changed model."""

    name = "decompose-for-targets"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        from portc.passes.moe_routing import MoERoutingPass

        if any(isinstance(o, moe.MoEOp) for o in op.walk()):
            MoERoutingPass().apply(ctx, op)
        decomposer = _Decomposer(weights_of(ctx))
        for f in op.ops:
            if isinstance(f, func.FuncOp):
                decomposer.run(f)
