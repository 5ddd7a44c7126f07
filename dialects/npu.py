"""The ``npu`` dialect: an Ascend-like AI core (Da Vinci model) at instruction level.

The artifact portc ships for the ``ascend`` target is this dialect's MLIR text in *generic* form
(``print_program``), which ``runtimes/npusim`` parses with a lark grammar and executes.

Storage model. Every buffer is a flat 1-D ``memref<N x T, "space">`` whose memory space is a
string attribute: ``"gm"`` (kernel arguments, global memory shared by all cores) or one of the
per-core buffers ``"l1" "l0a" "l0b" "l0c" "ub"``. On-chip buffers come from ``npu.alloc`` at a
fixed byte ``offset`` inside their space (the program, not a runtime allocator, places them, as in
Ascend C's TPipe/TQue; allocations may alias and the simulator's race checker sees overlaps by
address). Every instruction names a buffer plus an ``index`` *element* offset operand, so loops
address tiles with ``arith`` on ``index`` values (``scf.for`` + ``arith`` are the scalar unit).

Pipes. Each instruction belongs to one pipe (``PIPE``): ``MTE2`` GM->L1/UB, ``MTE1`` L1->L0A/L0B,
``M`` the cube, ``FIX`` L0C->GM/L1, ``V`` vector, ``MTE3`` UB->GM, ``S`` scalar. Pipes run
concurrently; order between them exists only through ``npu.set_flag``/``npu.wait_flag`` (events
0..7) and ``npu.pipe_barrier "ALL"`` -- the ``npu-insert-sync`` pass derives them.

Vector addressing (Ascend C "high-dimensional sharding" semantics): one instruction runs
``repeat`` iterations (0..255, 0 is a no-op); each iteration covers 256 bytes as 8 blocks of
32 bytes. Element ``e`` of iteration ``r`` of an operand with element size ``s`` lives at byte
``base + r*rep*32 + (e // (32/s))*blk*32 + (e % (32/s))*s``; ``blk``/``rep`` are per operand in
32-byte units. ``mask = [hi, lo]`` (two 64-bit words, bit ``i`` of ``lo`` selects element ``i``,
bit ``i`` of ``hi`` element ``64+i``) selects elements within an iteration; 32-bit types have 64
elements per iteration so ``hi`` must be 0, except in ``FULL_MASK = [-1, -1]``, which selects
every lane of any dtype (the builders' default). Conversions run ``256 / max(src, dst bytes)``
elements per iteration.

Cube (fractal formats of the Ascend C ``Mmad`` documentation, fractal = 16 x k0 with
``k0 * bytes = 32``): L0A holds A in zZ (fractals row-major, row-major inside), L0B holds B in nZ
(fractals row-major over k0 x 16 fractals, column-major inside), L0C holds C in zN (fractals
column-major, row-major inside, 16x16, fp32/int32). ``npu.load_l0`` converts an ND tile in L1 to
these formats, padding with zeros to whole fractals; ``npu.fix`` converts C back to ND (to GM or
L1: on the 910B "separated" architecture the cube core has no UB, so cube results reach the
vector cores through GM).

Values computed at run time reach a whole-row instruction without the scalar unit: reduce into
a 32-byte-aligned slot (``npu.vreduce``), ``npu.vbrcb`` it into one block, and read that block as
an operand with ``blk = rep = 0`` (every lane sees the value), as row-wise softmax/norms need.

For lowerings: ``NpuBuilder`` (constants, index arithmetic, aligned buffer placement, loops),
``repeat_plan`` (full repeats + masked tail for n elements), ``print_program`` (the artifact).
The SoC facts live in ``npu_soc.py``.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import ClassVar

from xdsl.dialects import arith, scf
from xdsl.dialects.builtin import (
    ArrayAttr,
    DenseArrayBase,
    FloatAttr,
    IndexType,
    IntegerAttr,
    IntegerType,
    MemRefType,
    ModuleOp,
    StringAttr,
    f64,
    i1,
    i64,
)
from xdsl.ir import Attribute, Block, Dialect, Operation, Region, SSAValue
from xdsl.irdl import (
    AttrSizedOperandSegments,
    IRDLOperation,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    prop_def,
    region_def,
    result_def,
    traits_def,
)
from xdsl.printer import Printer
from xdsl.traits import IsolatedFromAbove, NoTerminator
from xdsl.utils.exceptions import VerifyException

from portc.dialects import dtypes
from portc.dialects.npu_soc import PIPES, SPACES, NpuSoc, ceil_to, get_soc

FULL_MASK: tuple[int, int] = (-1, -1)
ROUND_MODES = ("none", "rint", "floor", "ceil", "round", "trunc")
CMP_MODES = ("eq", "ne", "lt", "le", "gt", "ge")
REDUCE_KINDS = ("sum", "max", "min")
CORE_TYPES = ("aic", "aiv")


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise VerifyException(msg)


def _ints(values: Sequence[int]) -> DenseArrayBase:
    return DenseArrayBase.from_list(i64, [int(v) for v in values])


def _bool(v: bool) -> IntegerAttr:
    return IntegerAttr(int(v), i1)


def memref(dtype: str, size: int, space: str) -> MemRefType:
    """The flat buffer type ``memref<size x dtype, "space">``."""
    return MemRefType(dtypes.dtype(dtype).ir, [size], memory_space=StringAttr(space))


def buffer_info(value: SSAValue | Attribute) -> tuple[str, str, int]:
    """(space, dtype name, elements) of a buffer value or type; VerifyException otherwise."""
    t = value if isinstance(value, Attribute) else value.type
    _require(isinstance(t, MemRefType) and len(t.get_shape()) == 1
             and isinstance(t.memory_space, StringAttr),
             f"expected a flat npu buffer memref<N x T, \"space\">, got {t}")
    assert isinstance(t, MemRefType) and isinstance(t.memory_space, StringAttr)
    space = t.memory_space.data
    _require(space in SPACES, f"unknown address space '{space}' (known: {SPACES})")
    return space, dtypes.from_ir(t.get_element_type()).name, int(t.get_shape()[0])


def mask_first(n: int) -> tuple[int, int]:
    """The bit-mode mask selecting the first ``n`` elements of an iteration (as signed words)."""
    bits = (1 << n) - 1 if n < 128 else (1 << 128) - 1
    lo, hi = bits & (2**64 - 1), bits >> 64
    return (hi - 2**64 if hi >= 2**63 else hi, lo - 2**64 if lo >= 2**63 else lo)


def _kernel_of(op: Operation) -> KernelOp | None:
    p = op.parent_op()
    while p is not None and not isinstance(p, KernelOp):
        p = p.parent_op()
    return p


def _soc_of(op: Operation) -> NpuSoc:
    k = _kernel_of(op)
    return get_soc(k.soc.data if k is not None else "910b")


def _where(op: Operation) -> str:
    k = _kernel_of(op)
    return f"{op.name} in kernel @{k.sym_name.data}" if k is not None else op.name


# ------------------------------------------------------------------------------------ base


class NpuOp(IRDLOperation):
    """Every npu instruction: its pipe and which buffer operands it reads and writes.

    ``BUFFERS`` names ``(buffer, offset)`` operand pairs with their role (``"r"``, ``"w"``,
    ``"rw"``) so that the sync pass and the verifiers see accesses through one table."""

    PIPE: ClassVar[str] = "S"
    BUFFERS: ClassVar[tuple[tuple[str, str, str], ...]] = ()
    SPACES_OK: ClassVar[dict[str, tuple[str, ...]]] = {}

    def buffer_operands(self) -> list[tuple[SSAValue, SSAValue, str]]:
        out = []
        for buf, off, role in self.BUFFERS:
            b = getattr(self, buf)
            if b is not None:
                out.append((b, getattr(self, off), role))
        return out

    def _check_spaces(self) -> None:
        k = _kernel_of(self)
        for buf, _, _ in self.BUFFERS:
            v = getattr(self, buf)
            if v is None:
                continue
            space, _, _ = buffer_info(v)
            ok = self.SPACES_OK.get(buf)
            if ok is not None:
                _require(space in ok, f"{_where(self)}: operand '{buf}' is in '{space}', "
                         f"the {self.PIPE} engine accepts {ok}")
            if k is not None and space != "gm":
                owner = _soc_of(self).space(space).core
                _require(owner == k.core.data, f"{_where(self)}: '{space}' does not exist on "
                         f"an {k.core.data} core (it belongs to {owner})")


def _index_operand() -> object:
    return operand_def(IndexType)


# ------------------------------------------------------------------------------------ kernel


@irdl_op_definition
class KernelOp(IRDLOperation):
    """``npu.kernel @name`` on ``core`` (aic|aiv) launched on ``block_dim`` cores; the body's
    block arguments are the GM buffers, named by ``arg_names`` (launch binds arrays by name)."""

    name = "npu.kernel"
    sym_name = prop_def(StringAttr)
    core = prop_def(StringAttr)
    block_dim = prop_def(IntegerAttr)
    arg_names = prop_def(ArrayAttr)
    soc = prop_def(StringAttr)
    body = region_def("single_block")
    traits = traits_def(NoTerminator(), IsolatedFromAbove())

    @staticmethod
    def make(name: str, core: str, block_dim: int, args: Sequence[tuple[str, str, int]],
             soc: str = "910b") -> KernelOp:
        """An empty kernel whose GM arguments are ``(name, dtype, elements)``."""
        block = Block(arg_types=[memref(dt, n, "gm") for _, dt, n in args])
        return KernelOp.create(
            properties={"sym_name": StringAttr(name), "core": StringAttr(core),
                        "block_dim": IntegerAttr(block_dim, i64),
                        "arg_names": ArrayAttr([StringAttr(a) for a, _, _ in args]),
                        "soc": StringAttr(soc)},
            regions=[Region(block)])

    @property
    def names(self) -> list[str]:
        return [a.data for a in self.arg_names.data]  # type: ignore[union-attr]

    def verify_(self) -> None:
        where = f"npu.kernel @{self.sym_name.data}"
        _require(self.core.data in CORE_TYPES, f"{where}: core '{self.core.data}' is not one of "
                 f"{CORE_TYPES}")
        try:
            soc = get_soc(self.soc.data)
        except KeyError as e:
            raise VerifyException(f"{where}: {e.args[0]}") from None
        cores = soc.aic_cores if self.core.data == "aic" else soc.aiv_cores
        bd = self.block_dim.value.data
        _require(1 <= bd <= cores, f"{where}: block_dim {bd} outside 1..{cores} "
                 f"({self.core.data} cores of {soc.name})")
        args = self.body.block.args
        _require(len(args) == len(self.names), f"{where}: {len(args)} arguments but "
                 f"{len(self.names)} arg_names")
        _require(len(set(self.names)) == len(self.names), f"{where}: duplicate argument names")
        for a in args:
            _require(buffer_info(a)[0] == "gm", f"{where}: kernel arguments must be gm buffers")


# ------------------------------------------------------------------------------------ scalar


@irdl_op_definition
class AllocOp(NpuOp):
    """``%b = npu.alloc {offset}``: the on-chip buffer at byte ``offset`` of its result's space."""

    name = "npu.alloc"
    offset = prop_def(IntegerAttr)
    result = result_def(MemRefType)

    @staticmethod
    def make(space: str, dtype: str, size: int, offset: int) -> AllocOp:
        return AllocOp.create(properties={"offset": IntegerAttr(offset, i64)},
                              result_types=[memref(dtype, size, space)])

    def verify_(self) -> None:
        space, dt, n = buffer_info(self.result)
        _require(space != "gm", f"{_where(self)}: gm buffers are kernel arguments, not allocs")
        spec = _soc_of(self).space(space)
        off = self.offset.value.data
        nbytes = n * max(1, dtypes.dtype(dt).bits // 8)
        _require(off >= 0 and off % spec.align == 0, f"{_where(self)}: offset {off} is not a "
                 f"multiple of the {space} alignment ({spec.align} bytes)")
        _require(off + nbytes <= spec.size, f"{_where(self)}: [{off}, {off + nbytes}) overflows "
                 f"{space} ({spec.size} bytes)")
        k = _kernel_of(self)
        if k is not None:
            _require(spec.core == k.core.data, f"{_where(self)}: '{space}' does not exist on an "
                     f"{k.core.data} core")


@irdl_op_definition
class GetBlockIdxOp(NpuOp):
    """``%i = npu.get_block_idx``: this core's index in the launch, 0..block_dim-1."""

    name = "npu.get_block_idx"
    result = result_def(IndexType)

    @staticmethod
    def make() -> GetBlockIdxOp:
        return GetBlockIdxOp.create(result_types=[IndexType()])


@irdl_op_definition
class GetBlockNumOp(NpuOp):
    """``%n = npu.get_block_num``: the launch's block_dim."""

    name = "npu.get_block_num"
    result = result_def(IndexType)

    @staticmethod
    def make() -> GetBlockNumOp:
        return GetBlockNumOp.create(result_types=[IndexType()])


def _scalar_type(dt: str) -> Attribute:
    """The scalar unit's register type for an element of ``dt``: ``index`` (64-bit) for
    integers and bools, the element's own type for floats."""
    return dtypes.dtype(dt).ir if dtypes.dtype(dt).kind == "float" else IndexType()


@irdl_op_definition
class GetValueOp(NpuOp):
    """``%v = npu.get_value %buf[%off]``: the scalar unit reads one element of a GM or UB
    buffer (Ascend C ``GlobalTensor::GetValue`` / ``LocalTensor::GetValue``, through the
    scalar data cache): integers and bools as a sign-extended ``index``, floats as their own
    type. Gathers address with it (``v = table[offset + stride * idx]``: ``idx`` feeds a DMA
    offset) and small integer kernels compute with it (``npu.set_value``)."""

    name = "npu.get_value"
    BUFFERS: ClassVar[tuple[tuple[str, str, str], ...]] = (("buf", "off", "r"),)
    SPACES_OK: ClassVar[dict[str, tuple[str, ...]]] = {"buf": ("gm", "ub")}
    buf = operand_def(MemRefType)
    off = _index_operand()
    result = result_def()

    @staticmethod
    def make(buf: SSAValue, off: SSAValue) -> GetValueOp:
        return GetValueOp.create(operands=[buf, off],
                                 result_types=[_scalar_type(buffer_info(buf)[1])])

    def verify_(self) -> None:
        self._check_spaces()
        dt = buffer_info(self.buf)[1]
        _require(dtypes.dtype(dt).kind in ("int", "uint", "bool", "float"),
                 f"{_where(self)}: the scalar unit does not read {dt}")
        _require(self.result.type == _scalar_type(dt), f"{_where(self)}: reading {dt} gives "
                 f"{_scalar_type(dt)}, not {self.result.type}")


@irdl_op_definition
class SetValueOp(NpuOp):
    """``npu.set_value %buf[%off] = %v``: the scalar unit writes one element (``SetValue``):
    an ``index`` stored to an integer or bool element keeps its low bits (two's-complement
    wrap, bools keep bit 0), a float must have the element's type."""

    name = "npu.set_value"
    BUFFERS: ClassVar[tuple[tuple[str, str, str], ...]] = (("buf", "off", "w"),)
    SPACES_OK: ClassVar[dict[str, tuple[str, ...]]] = {"buf": ("gm", "ub")}
    buf = operand_def(MemRefType)
    off = _index_operand()
    value = operand_def()

    @staticmethod
    def make(buf: SSAValue, off: SSAValue, value: SSAValue) -> SetValueOp:
        return SetValueOp.create(operands=[buf, off, value])

    def verify_(self) -> None:
        self._check_spaces()
        dt = buffer_info(self.buf)[1]
        _require(dtypes.dtype(dt).kind in ("int", "uint", "bool", "float"),
                 f"{_where(self)}: the scalar unit does not write {dt}")
        _require(self.value.type == _scalar_type(dt), f"{_where(self)}: a {dt} element takes "
                 f"{_scalar_type(dt)}, not {self.value.type}")


# ------------------------------------------------------------------------------------ sync


class _FlagOp(NpuOp):
    src = prop_def(StringAttr)
    dst = prop_def(StringAttr)
    event = prop_def(IntegerAttr)

    @classmethod
    def make(cls, src: str, dst: str, event: int) -> _FlagOp:
        return cls.create(properties={"src": StringAttr(src), "dst": StringAttr(dst),
                                      "event": IntegerAttr(event, i64)})

    def verify_(self) -> None:
        s, d, e = self.src.data, self.dst.data, self.event.value.data
        _require(s in PIPES and d in PIPES, f"{_where(self)}: pipes {s}->{d} must be in {PIPES}")
        _require(s != d, f"{_where(self)}: a flag orders two different pipes (got {s}->{d}); "
                 "use pipe_barrier inside one pipe")
        n = _soc_of(self).events
        _require(0 <= e < n, f"{_where(self)}: event {e} outside 0..{n - 1}")


@irdl_op_definition
class SetFlagOp(_FlagOp):
    """``npu.set_flag src->dst, event``: on pipe ``src``, after all earlier ``src`` work."""

    name = "npu.set_flag"


@irdl_op_definition
class WaitFlagOp(_FlagOp):
    """``npu.wait_flag src->dst, event``: pipe ``dst`` stalls until the matching set fired."""

    name = "npu.wait_flag"


@irdl_op_definition
class PipeBarrierOp(NpuOp):
    """``npu.pipe_barrier pipe``: later ``pipe`` work waits for earlier ``pipe`` work; ``"ALL"``
    makes every pipe wait for all earlier work on every pipe."""

    name = "npu.pipe_barrier"
    pipe = prop_def(StringAttr)

    @staticmethod
    def make(pipe: str) -> PipeBarrierOp:
        return PipeBarrierOp.create(properties={"pipe": StringAttr(pipe)})

    def verify_(self) -> None:
        _require(self.pipe.data in PIPES + ("ALL",), f"{_where(self)}: pipe '{self.pipe.data}'")


# ------------------------------------------------------------------------------------ DMA


class _BurstDmaOp(NpuOp):
    """``nburst`` bursts of ``burst_len`` elements; burst ``i`` reads
    ``src[src_off + i*(burst_len+src_gap)]`` and writes ``dst[dst_off + i*(burst_len+dst_gap)]``
    (gaps in elements). On-chip burst starts must be 32-byte aligned; GM side is free."""

    BUFFERS: ClassVar[tuple[tuple[str, str, str], ...]] = (("dst", "dst_off", "w"), ("src", "src_off", "r"))
    dst = operand_def(MemRefType)
    dst_off = _index_operand()
    src = operand_def(MemRefType)
    src_off = _index_operand()
    nburst = _index_operand()
    burst_len = _index_operand()
    src_gap = _index_operand()
    dst_gap = _index_operand()

    @classmethod
    def make(cls, dst: SSAValue, dst_off: SSAValue, src: SSAValue, src_off: SSAValue,
             nburst: SSAValue, burst_len: SSAValue, src_gap: SSAValue,
             dst_gap: SSAValue) -> _BurstDmaOp:
        return cls.create(operands=[dst, dst_off, src, src_off, nburst, burst_len, src_gap,
                                    dst_gap])

    def verify_(self) -> None:
        self._check_spaces()
        _require(buffer_info(self.dst)[1] == buffer_info(self.src)[1],
                 f"{_where(self)}: DMA does not convert: dst {buffer_info(self.dst)[1]} vs src "
                 f"{buffer_info(self.src)[1]}")


@irdl_op_definition
class Mte2Op(_BurstDmaOp):
    """``npu.mte2``: GM -> L1/UB burst copy on the MTE2 engine (``DataCopy`` GM->local)."""

    name = "npu.mte2"
    PIPE: ClassVar[str] = "MTE2"
    SPACES_OK: ClassVar[dict[str, tuple[str, ...]]] = {"dst": ("l1", "ub"), "src": ("gm",)}


@irdl_op_definition
class Mte3Op(_BurstDmaOp):
    """``npu.mte3``: UB -> GM burst copy on the MTE3 engine (``DataCopy`` local->GM)."""

    name = "npu.mte3"
    PIPE: ClassVar[str] = "MTE3"
    SPACES_OK: ClassVar[dict[str, tuple[str, ...]]] = {"dst": ("gm",), "src": ("ub",)}


@irdl_op_definition
class LoadL0Op(NpuOp):
    """``npu.load_l0``: ND tile ``src[src_off + r*src_pitch + c]`` (``rows x cols``) -> fractal
    tile in L0A (zZ) or L0B (nZ), zero-padded to whole fractals; with ``transpose`` the logical
    matrix is the tile's transpose (B stored as [N, K])."""

    name = "npu.load_l0"
    PIPE: ClassVar[str] = "MTE1"
    BUFFERS: ClassVar[tuple[tuple[str, str, str], ...]] = (("dst", "dst_off", "w"), ("src", "src_off", "r"))
    SPACES_OK: ClassVar[dict[str, tuple[str, ...]]] = {"dst": ("l0a", "l0b"), "src": ("l1",)}
    dst = operand_def(MemRefType)
    dst_off = _index_operand()
    src = operand_def(MemRefType)
    src_off = _index_operand()
    rows = _index_operand()
    cols = _index_operand()
    src_pitch = _index_operand()
    transpose = prop_def(IntegerAttr)

    @staticmethod
    def make(dst: SSAValue, dst_off: SSAValue, src: SSAValue, src_off: SSAValue,
             rows: SSAValue, cols: SSAValue, src_pitch: SSAValue,
             transpose: bool = False) -> LoadL0Op:
        return LoadL0Op.create(operands=[dst, dst_off, src, src_off, rows, cols, src_pitch],
                               properties={"transpose": _bool(transpose)})

    def verify_(self) -> None:
        self._check_spaces()
        dt = buffer_info(self.dst)[1]
        _require(dt == buffer_info(self.src)[1], f"{_where(self)}: L1 and L0 dtypes differ")
        _require(dt in _soc_of(self).cube, f"{_where(self)}: the cube does not take {dt}")


@irdl_op_definition
class MmadOp(NpuOp):
    """``npu.mmad``: ``C[m,n] (=|+=) A[m,k] @ B[k,n]`` on the cube, A zZ in L0A, B nZ in L0B,
    C zN in L0C, accumulating in fp32 (int32 for int8); ``init`` (i1) != 0 overwrites C."""

    name = "npu.mmad"
    PIPE: ClassVar[str] = "M"
    BUFFERS: ClassVar[tuple[tuple[str, str, str], ...]] = (("c", "c_off", "rw"), ("a", "a_off", "r"), ("b", "b_off", "r"))
    SPACES_OK: ClassVar[dict[str, tuple[str, ...]]] = {"c": ("l0c",), "a": ("l0a",), "b": ("l0b",)}
    c = operand_def(MemRefType)
    c_off = _index_operand()
    a = operand_def(MemRefType)
    a_off = _index_operand()
    b = operand_def(MemRefType)
    b_off = _index_operand()
    m = _index_operand()
    n = _index_operand()
    k = _index_operand()
    init = operand_def(IntegerType)

    @staticmethod
    def make(c: SSAValue, c_off: SSAValue, a: SSAValue, a_off: SSAValue, b: SSAValue,
             b_off: SSAValue, m: SSAValue, n: SSAValue, k: SSAValue, init: SSAValue) -> MmadOp:
        return MmadOp.create(operands=[c, c_off, a, a_off, b, b_off, m, n, k, init])

    def verify_(self) -> None:
        self._check_spaces()
        soc = _soc_of(self)
        ta, tb, tc = (buffer_info(v)[1] for v in (self.a, self.b, self.c))
        _require(ta == tb, f"{_where(self)}: A is {ta}, B is {tb}")
        _require(ta in soc.cube, f"{_where(self)}: the cube takes {tuple(soc.cube)}, not {ta}")
        _require(tc == soc.cube[ta].acc, f"{_where(self)}: {ta} accumulates in "
                 f"{soc.cube[ta].acc}, C is {tc}")
        _require(self.init.type == i1, f"{_where(self)}: init must be i1")


@irdl_op_definition
class FixOp(NpuOp):
    """``npu.fix``: FixPipe, L0C zN tile (``m x n`` valid of a ceil16(m) x ceil16(n) tile) ->
    ND ``dst[dst_off + i*dst_pitch + j] = cast(relu?(C[i,j] + bias[j]))``, rounding to nearest
    even; ``bias`` (optional, fp32 in L1) models the FixPipe bias stage."""

    name = "npu.fix"
    PIPE: ClassVar[str] = "FIX"
    BUFFERS: ClassVar[tuple[tuple[str, str, str], ...]] = (("dst", "dst_off", "w"), ("src", "src_off", "r"), ("bias", "bias_off", "r"))
    SPACES_OK: ClassVar[dict[str, tuple[str, ...]]] = {"dst": ("gm", "l1"), "src": ("l0c",), "bias": ("l1",)}
    dst = operand_def(MemRefType)
    dst_off = _index_operand()
    src = operand_def(MemRefType)
    src_off = _index_operand()
    m = _index_operand()
    n = _index_operand()
    dst_pitch = _index_operand()
    bias = opt_operand_def(MemRefType)
    bias_off = opt_operand_def(IndexType)
    relu = prop_def(IntegerAttr)
    irdl_options = (AttrSizedOperandSegments(as_property=True),)

    @staticmethod
    def make(dst: SSAValue, dst_off: SSAValue, src: SSAValue, src_off: SSAValue, m: SSAValue,
             n: SSAValue, dst_pitch: SSAValue, relu: bool = False,
             bias: tuple[SSAValue, SSAValue] | None = None) -> FixOp:
        opt: list[Sequence[SSAValue]] = [[bias[0]], [bias[1]]] if bias else [[], []]
        return FixOp.build(operands=[dst, dst_off, src, src_off, m, n, dst_pitch, *opt],
                           properties={"relu": _bool(relu)})

    def verify_(self) -> None:
        self._check_spaces()
        src_dt, dst_dt = buffer_info(self.src)[1], buffer_info(self.dst)[1]
        _require(src_dt in ("float32", "int32"), f"{_where(self)}: L0C holds {src_dt}")
        ok = ("float32", "float16", "bfloat16") if src_dt == "float32" else ("int32",)
        _require(dst_dt in ok, f"{_where(self)}: cannot convert {src_dt} to {dst_dt}; "
                 f"FixPipe writes {ok}")
        _require((self.bias is None) == (self.bias_off is None),
                 f"{_where(self)}: bias needs both buffer and offset")
        if self.bias is not None:
            _require(buffer_info(self.bias)[1] == src_dt,
                     f"{_where(self)}: bias must be {src_dt}")


# ------------------------------------------------------------------------------------ vector


class VecOp(NpuOp):
    """Shared shape of vector instructions: ``repeat`` iterations of 256 bytes, ``mask`` =
    ``[hi, lo]``, per-operand ``blk``/``rep`` strides (32-byte units) for the operands named in
    ``STRIDED`` (module docstring gives the address formula). ``DTYPES`` is a key of the SoC's
    ``vector_dtypes`` table; ``COST`` a key of its ``costs`` table."""

    PIPE: ClassVar[str] = "V"
    STRIDED: ClassVar[tuple[str, ...]] = ()
    DTYPES: ClassVar[str] = "float"
    COST: ClassVar[str] = "vec_simple"
    SAME_DTYPE: ClassVar[tuple[str, ...]] = ()
    USES_MASK: ClassVar[bool] = True
    repeat = prop_def(IntegerAttr)
    mask = prop_def(DenseArrayBase)
    blk = prop_def(DenseArrayBase)
    rep = prop_def(DenseArrayBase)

    @classmethod
    def _vec_props(cls, repeat: int, mask: tuple[int, int], blk: Sequence[int] | None,
                   rep: Sequence[int] | None) -> dict[str, Attribute]:
        n = len(cls.STRIDED)
        return {"repeat": IntegerAttr(repeat, i64), "mask": _ints(mask),
                "blk": _ints(blk if blk is not None else [1] * n),
                "rep": _ints(rep if rep is not None else [8] * n)}

    def elem_dtype(self) -> str:
        return buffer_info(getattr(self, self.STRIDED[0]))[1]

    def elems_per_repeat(self) -> int:
        soc = _soc_of(self)
        nbytes = max(dtypes.dtype(buffer_info(getattr(self, b))[1]).bits // 8
                     for b in self.STRIDED)
        return soc.elements_per_repeat(nbytes)

    def verify_(self) -> None:
        self._check_spaces()
        soc = _soc_of(self)
        w = _where(self)
        for buf, _, _ in self.BUFFERS:
            v = getattr(self, buf)
            if v is not None:
                _require(buffer_info(v)[0] == "ub", f"{w}: vector operands live in ub")
        r = self.repeat.value.data
        _require(0 <= r <= soc.max_repeat, f"{w}: repeat {r} outside 0..{soc.max_repeat}")
        n = len(self.STRIDED)
        blk, rep = tuple(self.blk.get_values()), tuple(self.rep.get_values())
        _require(len(blk) == n and len(rep) == n, f"{w}: blk/rep need {n} entries "
                 f"({', '.join(self.STRIDED)})")
        _require(all(0 <= s < 65536 for s in blk + rep), f"{w}: strides outside 0..65535")
        mask = tuple(self.mask.get_values())
        _require(len(mask) == 2, f"{w}: mask is [hi, lo]")
        epr = self.elems_per_repeat()
        if epr <= 64 and self.USES_MASK and mask != FULL_MASK:
            _require(mask[0] == 0, f"{w}: {epr} elements per repeat: mask hi must be 0 "
                     "(or the mask [-1, -1], which selects every lane of any dtype)")
        dt = self.elem_dtype()
        allowed = soc.vector_dtypes[self.DTYPES]
        _require(dt in allowed, f"{w}: {dt} not supported (takes {allowed})")
        for name in self.SAME_DTYPE:
            _require(buffer_info(getattr(self, name))[1] == dt,
                     f"{w}: operand '{name}' must be {dt}")


class _VecBinary(VecOp):
    """``dst = src0 (op) src1`` elementwise over the masked elements."""

    STRIDED: ClassVar[tuple[str, ...]] = ("dst", "src0", "src1")
    BUFFERS: ClassVar[tuple[tuple[str, str, str], ...]] = (("dst", "dst_off", "w"), ("src0", "src0_off", "r"), ("src1", "src1_off", "r"))
    SAME_DTYPE: ClassVar[tuple[str, ...]] = ("src0", "src1")
    DTYPES: ClassVar[str] = "arith"
    dst = operand_def(MemRefType)
    dst_off = _index_operand()
    src0 = operand_def(MemRefType)
    src0_off = _index_operand()
    src1 = operand_def(MemRefType)
    src1_off = _index_operand()

    @classmethod
    def make(cls, dst: tuple[SSAValue, SSAValue], src0: tuple[SSAValue, SSAValue],
             src1: tuple[SSAValue, SSAValue], repeat: int, mask: tuple[int, int] = FULL_MASK,
             blk: Sequence[int] | None = None, rep: Sequence[int] | None = None) -> _VecBinary:
        return cls.create(operands=[*dst, *src0, *src1],
                          properties=cls._vec_props(repeat, mask, blk, rep))


@irdl_op_definition
class VAddOp(_VecBinary):
    """``dst = src0 + src1``."""

    name = "npu.vadd"


@irdl_op_definition
class VSubOp(_VecBinary):
    """``dst = src0 - src1``."""

    name = "npu.vsub"


@irdl_op_definition
class VMulOp(_VecBinary):
    """``dst = src0 * src1``."""

    name = "npu.vmul"


@irdl_op_definition
class VDivOp(_VecBinary):
    """``dst = src0 / src1`` (IEEE)."""

    name = "npu.vdiv"
    DTYPES: ClassVar[str] = "float"
    COST: ClassVar[str] = "vec_transcendental"


@irdl_op_definition
class VMaxOp(_VecBinary):
    """``dst = max(src0, src1)``."""

    name = "npu.vmax"


@irdl_op_definition
class VMinOp(_VecBinary):
    """``dst = min(src0, src1)``."""

    name = "npu.vmin"


class _VecUnaryBase(VecOp):
    STRIDED: ClassVar[tuple[str, ...]] = ("dst", "src")
    BUFFERS: ClassVar[tuple[tuple[str, str, str], ...]] = (("dst", "dst_off", "w"), ("src", "src_off", "r"))
    dst = operand_def(MemRefType)
    dst_off = _index_operand()
    src = operand_def(MemRefType)
    src_off = _index_operand()


class _VecScalar(_VecUnaryBase):
    """``dst = src (op) scalar``."""

    SAME_DTYPE: ClassVar[tuple[str, ...]] = ("src",)
    DTYPES: ClassVar[str] = "arith"
    scalar = prop_def(FloatAttr)

    @classmethod
    def make(cls, dst: tuple[SSAValue, SSAValue], src: tuple[SSAValue, SSAValue], scalar: float,
             repeat: int, mask: tuple[int, int] = FULL_MASK, blk: Sequence[int] | None = None,
             rep: Sequence[int] | None = None) -> _VecScalar:
        props = cls._vec_props(repeat, mask, blk, rep)
        props["scalar"] = FloatAttr(float(scalar), f64)
        return cls.create(operands=[*dst, *src], properties=props)


@irdl_op_definition
class VAddsOp(_VecScalar):
    """``dst = src + scalar``."""

    name = "npu.vadds"


@irdl_op_definition
class VMulsOp(_VecScalar):
    """``dst = src * scalar``."""

    name = "npu.vmuls"


@irdl_op_definition
class VMaxsOp(_VecScalar):
    """``dst = max(src, scalar)``."""

    name = "npu.vmaxs"


@irdl_op_definition
class VMinsOp(_VecScalar):
    """``dst = min(src, scalar)``."""

    name = "npu.vmins"


class _VecUnary(_VecUnaryBase):
    """``dst = f(src)``."""

    SAME_DTYPE: ClassVar[tuple[str, ...]] = ("src",)
    COST: ClassVar[str] = "vec_transcendental"

    @classmethod
    def make(cls, dst: tuple[SSAValue, SSAValue], src: tuple[SSAValue, SSAValue], repeat: int,
             mask: tuple[int, int] = FULL_MASK, blk: Sequence[int] | None = None,
             rep: Sequence[int] | None = None) -> _VecUnary:
        return cls.create(operands=[*dst, *src], properties=cls._vec_props(repeat, mask, blk, rep))


@irdl_op_definition
class VExpOp(_VecUnary):
    """``dst = exp(src)``."""

    name = "npu.vexp"


@irdl_op_definition
class VLnOp(_VecUnary):
    """``dst = ln(src)``."""

    name = "npu.vln"


@irdl_op_definition
class VSqrtOp(_VecUnary):
    """``dst = sqrt(src)``."""

    name = "npu.vsqrt"


@irdl_op_definition
class VRsqrtOp(_VecUnary):
    """``dst = 1 / sqrt(src)``."""

    name = "npu.vrsqrt"


@irdl_op_definition
class VRecOp(_VecUnary):
    """``dst = 1 / src``."""

    name = "npu.vrec"


@irdl_op_definition
class VAbsOp(_VecUnary):
    """``dst = |src|``."""

    name = "npu.vabs"
    COST: ClassVar[str] = "vec_simple"


@irdl_op_definition
class VReluOp(_VecUnary):
    """``dst = max(src, 0)``."""

    name = "npu.vrelu"
    COST: ClassVar[str] = "vec_simple"


@irdl_op_definition
class VNegOp(_VecUnary):
    """``dst = -src``."""

    name = "npu.vneg"
    COST: ClassVar[str] = "vec_simple"


@irdl_op_definition
class VCopyOp(_VecUnary):
    """``dst = src`` (strided copy inside UB)."""

    name = "npu.vcopy"
    COST: ClassVar[str] = "vec_simple"
    DTYPES: ClassVar[str] = "move"


@irdl_op_definition
class VCastOp(_VecUnaryBase):
    """``dst = convert(src)`` with rounding ``round`` (``none`` = nearest-even for floats; for
    float -> int one of rint floor ceil round trunc); ``256/max(bytes)`` elements per repeat."""

    name = "npu.vcast"
    DTYPES: ClassVar[str] = "cast"
    COST: ClassVar[str] = "vec_cast"
    round = prop_def(StringAttr)

    @staticmethod
    def make(dst: tuple[SSAValue, SSAValue], src: tuple[SSAValue, SSAValue], repeat: int,
             round: str = "none", mask: tuple[int, int] = FULL_MASK,
             blk: Sequence[int] | None = None, rep: Sequence[int] | None = None) -> VCastOp:
        props = VCastOp._vec_props(repeat, mask, blk, rep)
        props["round"] = StringAttr(round)
        return VCastOp.create(operands=[*dst, *src], properties=props)

    def verify_(self) -> None:
        super().verify_()
        w, rnd = _where(self), self.round.data
        _require(rnd in ROUND_MODES, f"{w}: round '{rnd}' not in {ROUND_MODES}")
        sdt, ddt = buffer_info(self.src)[1], buffer_info(self.dst)[1]
        _require(sdt in _soc_of(self).vector_dtypes["cast"], f"{w}: cannot cast from {sdt}")
        if dtypes.is_float(sdt) and dtypes.is_float(ddt):
            _require(rnd in ("none", "rint"), f"{w}: float -> float casts round to nearest even "
                     f"(got '{rnd}')")
        if dtypes.is_float(sdt) and dtypes.is_int(ddt):
            _require(rnd != "none", f"{w}: float -> int needs an explicit rounding mode")


@irdl_op_definition
class VDupOp(VecOp):
    """``dst = scalar`` on the masked elements (``Duplicate``)."""

    name = "npu.vdup"
    STRIDED: ClassVar[tuple[str, ...]] = ("dst",)
    BUFFERS: ClassVar[tuple[tuple[str, str, str], ...]] = (("dst", "dst_off", "w"),)
    DTYPES: ClassVar[str] = "move"
    dst = operand_def(MemRefType)
    dst_off = _index_operand()
    scalar = prop_def(FloatAttr)

    @staticmethod
    def make(dst: tuple[SSAValue, SSAValue], scalar: float, repeat: int,
             mask: tuple[int, int] = FULL_MASK, blk: Sequence[int] | None = None,
             rep: Sequence[int] | None = None) -> VDupOp:
        props = VDupOp._vec_props(repeat, mask, blk, rep)
        props["scalar"] = FloatAttr(float(scalar), f64)
        return VDupOp.create(operands=list(dst), properties=props)


@irdl_op_definition
class VBrcbOp(VecOp):
    """``npu.vbrcb``: block ``b`` of iteration ``r`` of dst is filled with
    ``src[src_off + 8*r + b]`` (``Brcb``: broadcast 8 scalars per iteration, one per 32-byte
    block); no lane mask (the property must be full), src is read contiguously."""

    name = "npu.vbrcb"
    STRIDED: ClassVar[tuple[str, ...]] = ("dst",)
    BUFFERS: ClassVar[tuple[tuple[str, str, str], ...]] = (("dst", "dst_off", "w"), ("src", "src_off", "r"))
    DTYPES: ClassVar[str] = "move"
    USES_MASK: ClassVar[bool] = False
    dst = operand_def(MemRefType)
    dst_off = _index_operand()
    src = operand_def(MemRefType)
    src_off = _index_operand()

    @staticmethod
    def make(dst: tuple[SSAValue, SSAValue], src: tuple[SSAValue, SSAValue], repeat: int,
             blk: Sequence[int] | None = None, rep: Sequence[int] | None = None) -> VBrcbOp:
        return VBrcbOp.create(operands=[*dst, *src],
                              properties=VBrcbOp._vec_props(repeat, FULL_MASK, blk, rep))

    def verify_(self) -> None:
        super().verify_()
        _require(tuple(self.mask.get_values()) == FULL_MASK, f"{_where(self)}: mask must be full")
        _require(buffer_info(self.src)[1] == self.elem_dtype(), f"{_where(self)}: dtypes differ")


@irdl_op_definition
class VCmpOp(VecOp):
    """``npu.vcmp``: bit ``e`` of iteration ``r`` of the ui8 bitmask ``dst`` (packed, ``epr/8``
    bytes per iteration, contiguous from ``dst_off``) = ``src0 (cmp) src1``; unselected bits 0."""

    name = "npu.vcmp"
    STRIDED: ClassVar[tuple[str, ...]] = ("src0", "src1")
    BUFFERS: ClassVar[tuple[tuple[str, str, str], ...]] = (("dst", "dst_off", "w"), ("src0", "src0_off", "r"), ("src1", "src1_off", "r"))
    SAME_DTYPE: ClassVar[tuple[str, ...]] = ("src1",)
    dst = operand_def(MemRefType)
    dst_off = _index_operand()
    src0 = operand_def(MemRefType)
    src0_off = _index_operand()
    src1 = operand_def(MemRefType)
    src1_off = _index_operand()
    cmp = prop_def(StringAttr)

    @staticmethod
    def make(dst: tuple[SSAValue, SSAValue], src0: tuple[SSAValue, SSAValue],
             src1: tuple[SSAValue, SSAValue], cmp: str, repeat: int,
             mask: tuple[int, int] = FULL_MASK, blk: Sequence[int] | None = None,
             rep: Sequence[int] | None = None) -> VCmpOp:
        props = VCmpOp._vec_props(repeat, mask, blk, rep)
        props["cmp"] = StringAttr(cmp)
        return VCmpOp.create(operands=[*dst, *src0, *src1], properties=props)

    def verify_(self) -> None:
        super().verify_()
        _require(self.cmp.data in CMP_MODES, f"{_where(self)}: cmp '{self.cmp.data}'")
        _require(buffer_info(self.dst)[1] == "uint8", f"{_where(self)}: dst bitmask must be ui8")


@irdl_op_definition
class VSelOp(VecOp):
    """``npu.vsel``: ``dst = bit ? src0 : src1`` with bits read from the ui8 bitmask ``sel`` in
    the packed layout ``npu.vcmp`` writes."""

    name = "npu.vsel"
    STRIDED: ClassVar[tuple[str, ...]] = ("dst", "src0", "src1")
    BUFFERS: ClassVar[tuple[tuple[str, str, str], ...]] = (("dst", "dst_off", "w"), ("sel", "sel_off", "r"), ("src0", "src0_off", "r"),
               ("src1", "src1_off", "r"))
    SAME_DTYPE: ClassVar[tuple[str, ...]] = ("src0", "src1")
    dst = operand_def(MemRefType)
    dst_off = _index_operand()
    sel = operand_def(MemRefType)
    sel_off = _index_operand()
    src0 = operand_def(MemRefType)
    src0_off = _index_operand()
    src1 = operand_def(MemRefType)
    src1_off = _index_operand()

    @staticmethod
    def make(dst: tuple[SSAValue, SSAValue], sel: tuple[SSAValue, SSAValue],
             src0: tuple[SSAValue, SSAValue], src1: tuple[SSAValue, SSAValue], repeat: int,
             mask: tuple[int, int] = FULL_MASK, blk: Sequence[int] | None = None,
             rep: Sequence[int] | None = None) -> VSelOp:
        return VSelOp.create(operands=[*dst, *sel, *src0, *src1],
                             properties=VSelOp._vec_props(repeat, mask, blk, rep))

    def verify_(self) -> None:
        super().verify_()
        _require(buffer_info(self.sel)[1] == "uint8", f"{_where(self)}: sel must be ui8")


@irdl_op_definition
class VWholeReduceOp(VecOp):
    """``npu.vwhole_reduce``: ``dst[dst_off + r] = reduce(kind, masked elements of iteration r
    of src)`` (``WholeReduceSum/Max/Min``; one result per iteration, written contiguously)."""

    name = "npu.vwhole_reduce"
    STRIDED: ClassVar[tuple[str, ...]] = ("src",)
    BUFFERS: ClassVar[tuple[tuple[str, str, str], ...]] = (("dst", "dst_off", "w"), ("src", "src_off", "r"))
    COST: ClassVar[str] = "vec_reduce"
    dst = operand_def(MemRefType)
    dst_off = _index_operand()
    src = operand_def(MemRefType)
    src_off = _index_operand()
    kind = prop_def(StringAttr)

    @staticmethod
    def make(dst: tuple[SSAValue, SSAValue], src: tuple[SSAValue, SSAValue], kind: str,
             repeat: int, mask: tuple[int, int] = FULL_MASK, blk: Sequence[int] | None = None,
             rep: Sequence[int] | None = None) -> VWholeReduceOp:
        props = VWholeReduceOp._vec_props(repeat, mask, blk, rep)
        props["kind"] = StringAttr(kind)
        return VWholeReduceOp.create(operands=[*dst, *src], properties=props)

    def verify_(self) -> None:
        super().verify_()
        _require(self.kind.data in REDUCE_KINDS, f"{_where(self)}: kind '{self.kind.data}'")
        _require(buffer_info(self.dst)[1] == self.elem_dtype(), f"{_where(self)}: dtypes differ")


@irdl_op_definition
class VReduceOp(NpuOp):
    """``npu.vreduce``: ``dst[dst_off] = reduce(kind, src[src_off : src_off + count])`` over a
    contiguous range (``ReduceSum/Max/Min``), costing ``ceil(count/epr)`` iterations plus a tree."""

    name = "npu.vreduce"
    PIPE: ClassVar[str] = "V"
    BUFFERS: ClassVar[tuple[tuple[str, str, str], ...]] = (("dst", "dst_off", "w"), ("src", "src_off", "r"))
    SPACES_OK: ClassVar[dict[str, tuple[str, ...]]] = {"dst": ("ub",), "src": ("ub",)}
    dst = operand_def(MemRefType)
    dst_off = _index_operand()
    src = operand_def(MemRefType)
    src_off = _index_operand()
    kind = prop_def(StringAttr)
    count = prop_def(IntegerAttr)

    @staticmethod
    def make(dst: tuple[SSAValue, SSAValue], src: tuple[SSAValue, SSAValue], kind: str,
             count: int) -> VReduceOp:
        return VReduceOp.create(operands=[*dst, *src],
                                properties={"kind": StringAttr(kind),
                                            "count": IntegerAttr(count, i64)})

    def verify_(self) -> None:
        self._check_spaces()
        w = _where(self)
        _require(self.kind.data in REDUCE_KINDS, f"{w}: kind '{self.kind.data}'")
        _require(self.count.value.data >= 1, f"{w}: count must be >= 1")
        dt = buffer_info(self.src)[1]
        _require(dt in _soc_of(self).vector_dtypes["float"], f"{w}: {dt} not supported")
        _require(buffer_info(self.dst)[1] == dt, f"{w}: dtypes differ")


# ------------------------------------------------------------------------------------ tables

NPU_OPS: tuple[type[IRDLOperation], ...] = (
    KernelOp, AllocOp, GetBlockIdxOp, GetBlockNumOp, GetValueOp, SetValueOp, SetFlagOp,
    WaitFlagOp, PipeBarrierOp,
    Mte2Op, Mte3Op, LoadL0Op, MmadOp, FixOp,
    VAddOp, VSubOp, VMulOp, VDivOp, VMaxOp, VMinOp, VAddsOp, VMulsOp, VMaxsOp, VMinsOp,
    VExpOp, VLnOp, VSqrtOp, VRsqrtOp, VRecOp, VAbsOp, VReluOp, VNegOp, VCopyOp, VCastOp,
    VDupOp, VBrcbOp, VCmpOp, VSelOp, VWholeReduceOp, VReduceOp,
)

#: public names of the vector operand-shape base classes (for lowering tables' type hints)
VecBinaryOp = _VecBinary
VecScalarOp = _VecScalar
VecUnaryOp = _VecUnary

#: op name -> pipe, for every npu instruction (scalar-unit ops map to "S")
OP_PIPES: dict[str, str] = {
    op.name: getattr(op, "PIPE", "S") for op in NPU_OPS if op is not KernelOp
}
#: vector op name -> cost class in the SoC's ``costs`` table
VEC_COSTS: dict[str, str] = {op.name: op.COST for op in NPU_OPS if issubclass(op, VecOp)}
VEC_COSTS["npu.vreduce"] = "vec_reduce"

Npu = Dialect("npu", list(NPU_OPS), [])


def print_program(module: ModuleOp | Operation) -> str:
    """The shipped artifact text: generic MLIR form, which ``npusim``'s grammar reads and which
    xDSL parses back to the same module."""
    s = io.StringIO()
    Printer(stream=s, print_generic_format=True).print_op(module)
    return s.getvalue() + "\n"


def fractal_k0(dtype: str, soc: NpuSoc) -> int:
    """Columns of one A fractal (rows of one B fractal): 32 bytes of ``dtype``."""
    return soc.cube[dtype].k0


def l0_tile_elems(rows: int, cols: int, space: str, dtype: str, soc: NpuSoc) -> int:
    """Elements a ``rows x cols`` logical tile occupies in L0A/L0B after fractal padding."""
    k0 = fractal_k0(dtype, soc)
    if space == "l0a":
        return ceil_to(rows, 16) * ceil_to(cols, k0)
    return ceil_to(rows, k0) * ceil_to(cols, 16)


def repeat_plan(n: int, dtype: str, soc: NpuSoc | None = None
                ) -> list[tuple[int, int, tuple[int, int]]]:
    """Cover ``n`` contiguous elements with vector instructions: ``(element offset, repeat,
    mask)`` triples, full 256-byte repeats in chunks of at most ``max_repeat``, then one
    instruction with a partial mask for the tail (the Ascend C "repeat + tail" pattern), so an
    elementwise lowering emits each op once per triple with default strides."""
    soc = soc or get_soc("910b")
    epr = soc.elements_per_repeat(max(1, dtypes.dtype(dtype).bits // 8))
    full_mask = mask_first(epr)
    out: list[tuple[int, int, tuple[int, int]]] = []
    full, tail = divmod(n, epr)
    done = 0
    while full:
        r = min(full, soc.max_repeat)
        out.append((done, r, full_mask))
        done += r * epr
        full -= r
    if tail:
        out.append((done, 1, mask_first(tail)))
    return out


# ------------------------------------------------------------------------------------ builder


class NpuBuilder:
    """Builds the body of one ``npu.kernel`` for lowerings (the cube GEMM builder and the vector
    lowering use it), so that none of them re-derives the same plumbing:

    * ``c(v)`` / ``flag(b)``: index / i1 constants, created once and hoisted to the kernel top;
    * ``add_i sub mul div rem min``: scalar-unit index arithmetic taking SSA values or ints;
    * ``alloc(space, dtype, n)``: bump placement per address space honouring the SoC's
      alignment and capacity (``offset=`` places by hand); ``free_bytes(space)`` says what is
      left; ``VerifyException`` when a space is full;
    * ``with b.loop(lb, ub, step) as iv:`` an ``scf.for`` whose body receives the ops added
      inside the ``with``; ``block_idx()``/``block_num()``.
    """

    def __init__(self, kernel: KernelOp) -> None:
        self.kernel = kernel
        self.soc = get_soc(kernel.soc.data)
        self.top = kernel.body.block
        self.block = self.top
        self._consts: dict[tuple[int, str], SSAValue] = {}
        self._anchor: Operation | None = None
        self._next: dict[str, int] = {}

    def add(self, op: Operation) -> Operation:
        self.block.add_op(op)
        return op

    def _hoist(self, key: tuple[int, str], op: Operation) -> SSAValue:
        if self._anchor is not None:
            self.top.insert_op_after(op, self._anchor)
        elif self.top.first_op is not None:
            self.top.insert_op_before(op, self.top.first_op)
        else:
            self.top.add_op(op)
        self._anchor = op
        self._consts[key] = op.results[0]
        return op.results[0]

    def c(self, v: int) -> SSAValue:
        """The index constant ``v``."""
        key = (int(v), "index")
        got = self._consts.get(key)
        return got if got is not None else self._hoist(
            key, arith.ConstantOp.from_int_and_width(int(v), IndexType()))

    def flag(self, v: bool) -> SSAValue:
        """The i1 constant ``v`` (e.g. ``mmad``'s init operand)."""
        key = (int(v), "i1")
        got = self._consts.get(key)
        return got if got is not None else self._hoist(key, arith.ConstantOp(_bool(v)))

    def val(self, v: SSAValue | int) -> SSAValue:
        return self.c(v) if isinstance(v, int) else v

    def _bin(self, name: str, a: SSAValue | int, b: SSAValue | int) -> SSAValue:
        cls = {"add": arith.AddiOp, "sub": arith.SubiOp, "mul": arith.MuliOp,
               "div": arith.DivUIOp, "rem": arith.RemUIOp, "min": arith.MinSIOp}[name]
        return self.add(cls(self.val(a), self.val(b))).results[0]

    def add_i(self, a: SSAValue | int, b: SSAValue | int) -> SSAValue:
        return self._bin("add", a, b)

    def sub(self, a: SSAValue | int, b: SSAValue | int) -> SSAValue:
        return self._bin("sub", a, b)

    def mul(self, a: SSAValue | int, b: SSAValue | int) -> SSAValue:
        return self._bin("mul", a, b)

    def div(self, a: SSAValue | int, b: SSAValue | int) -> SSAValue:
        return self._bin("div", a, b)

    def rem(self, a: SSAValue | int, b: SSAValue | int) -> SSAValue:
        return self._bin("rem", a, b)

    def min(self, a: SSAValue | int, b: SSAValue | int) -> SSAValue:
        return self._bin("min", a, b)

    def alloc(self, space: str, dtype: str, n: int, offset: int | None = None) -> SSAValue:
        """An ``n``-element buffer in ``space``, placed after the previous one (aligned)."""
        spec = self.soc.space(space)
        nbytes = n * max(1, dtypes.dtype(dtype).bits // 8)
        off = ceil_to(self._next.get(space, 0), spec.align) if offset is None else offset
        _require(off + nbytes <= spec.size, f"npu.kernel @{self.kernel.sym_name.data}: "
                 f"{space} is full ({off} + {nbytes} > {spec.size} bytes)")
        self._next[space] = max(self._next.get(space, 0), off + nbytes)
        return self.add(AllocOp.make(space, dtype, n, off)).results[0]

    def free_bytes(self, space: str) -> int:
        spec = self.soc.space(space)
        return spec.size - ceil_to(self._next.get(space, 0), spec.align)

    def block_idx(self) -> SSAValue:
        return self.add(GetBlockIdxOp.make()).results[0]

    def block_num(self) -> SSAValue:
        return self.add(GetBlockNumOp.make()).results[0]

    @contextmanager
    def loop(self, lb: SSAValue | int, ub: SSAValue | int, step: SSAValue | int
             ) -> Iterator[SSAValue]:
        """``scf.for iv = lb to ub step step``; ops added inside the ``with`` form the body."""
        body = Block(arg_types=[IndexType()])
        op = scf.ForOp(self.val(lb), self.val(ub), self.val(step), [], body)
        self.add(op)
        outer, self.block = self.block, body
        try:
            yield body.args[0]
        finally:
            body.add_op(scf.YieldOp())
            self.block = outer
