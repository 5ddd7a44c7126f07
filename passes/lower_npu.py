"""Kernel IR -> ``npu`` program: the lowering behind target ``ascend``.

Every ``kernel.generic``/``kernel.sort`` of a planned kernel module becomes one or more launches
of an Ascend-like SoC (``--soc 910b``), in execution order:

* **cube path** (AIC): a matmul-shaped generic (body ``mul`` of two loads, optionally through
  casts; combiner ``sum`` with ``init`` 0; no indirect terms; at least ``CUBE_MIN_MACS``
  multiply-adds -- smaller products run on the vector path in fp32) is split into *batch*, *M*, *N*
  and *K* dims by which operand moves along each dim (both: batch; only A: M; only B: N;
  reduction dims: K). Its operands are first *packed* by two vector-path launches into
  contiguous ``[batch, M, K]`` / ``[batch, K, N]`` GM temporaries in the cube dtype (``fp16``
  by default, ``bf16`` with ``--precision bf16``, fp32 with ``--precision fp32``, like ATC's
  ``--precision_mode`` ``allow_fp32_to_fp16``/``allow_fp32_to_bf16``/``force_fp32``); the
  pack is an ordinary strided generic, so transposed operands, broadcast batch dims and convolutions all take the same road: a convolution's A operand is
  its im2col view (the kernel IR's window strides, pads already materialised by the graph
  lowering), gathered by MTE2 bursts into the packed matrix -- *explicit im2col through GM*.
  Operands that are weights are packed once at compile time instead (ATC converts weights
  offline too) and ship in the bundle. A and B are swapped (``C^T = B^T A^T``) when that lets
  FIX write the output in place: a convolution's weights become A, its im2col B, and the
  ``[Cout, OH*OW]`` result is the NCHW output.
  ``build_gemm_kernel`` (``passes/lower_npu_cube.py``) then runs the GEMM with fp32
  accumulation, FIX writing fp32 ``[batch, M, N]`` straight into the output when the output
  is laid out that way, else into a temporary that one more vector launch scatters.
* **vector path** (AIV): everything else whose dtypes the vector unit executes (fp32 compute;
  fp16/bf16 loaded and cast to fp32; int32 for add/sub/mul/max/min). After merging dims that
  are contiguous for every operand, a *vector dim* ``v`` is chosen where every input moves by
  0 or 1 element and the output by 1 (transposed operands move by more: inputs are gathered
  one element per 32-byte block by MTE2 and compacted by a one-lane ``vwhole_reduce``; outputs
  are spread by ``vbrcb`` and scattered by MTE3). The other parallel dims and the tiles of
  ``v`` form *tasks* dealt round-robin to the 48 AIV cores; each task copies its inputs in
  (MTE2), computes the scalar body as whole-tile vector instructions (one UB slot per SSA
  value, ``repeat = tile/64``) and copies the result out (MTE3). Inputs that do not move
  along ``v`` are broadcast into a tile with ``vbrcb`` + a zero-stride ``vcopy``.
  When every operand moves by a whole row along a second parallel dim ``u``, a tile holds
  many rows (*2-D tiles*: one MTE2/MTE3 burst per row, rows at a 32-byte-aligned UB pitch).
  Reductions: if a reduction dim can be the vector dim and the combiner is sum/max/min on
  floats, each task reduces its row with ``vreduce`` per tile and combines the partial results
  in a one-lane accumulator (*row mode*); rows of at most 64 elements are packed one per
  256-byte repeat, up to 255 per task, and reduced by one ``vwhole_reduce`` (a softmax over 32
  keys); otherwise reduction dims are scalar loops around the body and the combine is
  elementwise over the tile (*column mode*, also prod and int32). The plan (row/column mode,
  vector dim, 2-D tiles) is the one with the fewest estimated instructions per core.
  When a core runs more than one task, the task loop is unrolled by two over two slot sets
  (ping-pong), so MTE2 of one task overlaps the vector work of the other;
  ``npu-insert-sync`` then derives every flag.
  *Gathers* (indirect terms on inputs: Gather, GatherElements, GatherND, embedding lookups)
  run on the vector path too: per task the scalar unit reads each index from GM
  (``npu.get_value``, any integer dtype, int64 included), wraps negative ones and adds
  ``stride * index`` to the gathered operand's DMA offset. Index operands therefore may not
  move along the vector dim (a GatherElements index moves with every element: one element
  per task) and 2-D tiles are off.
* **scalar path** (AIV scalar unit, ``passes/lower_npu_scalar.py``): what the vector unit
  cannot run but is small (at most ``SCALAR_MAX_EVALS`` body evaluations) and integer or
  bool -- int64/int8/uint8/bool arithmetic, masks, casts, ``kernel.index``, small scatters (on
  one core) -- element by element through ``npu.get_value``/``npu.set_value`` on the scalar
  unit's 64-bit registers. The encoder's attention-mask path runs here.
* **AI CPU** (``aicpu``): what the AI core model cannot express -- large scatters (indirect
  outputs: cores would race on colliding indices), ``kernel.sort``, large kernels with
  ``kernel.index`` or dtypes other than fp32/fp16/bf16/int32 in computation (int64, bool,
  int8, float64), float functions without a vector composition (sin, mod, pow with a
  run-time exponent, ...), negative strides. Ascend runs such operators on the SoC's AI CPU;
  here the launch names the kernel-IR kernel and the runtime executes it with the kernel-IR
  executor, so its numbers are exact. The manifest and the run statistics list every AI CPU
  launch with its reason (the vector unit's and the scalar unit's).

Functions the vector unit lacks are compositions (documented where they are built):
``sigmoid = 1/(1+exp(-x))``, ``tanh = 2/(1+exp(-2x)) - 1``, ``erf`` by Abramowitz-Stegun
7.1.26 (|error| < 1.5e-7 in exact arithmetic, < 5e-7 in fp32), ``pow`` with a constant
exponent by multiplications, (r)sqrt or ``exp(c * ln x)`` (``_pow``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import ml_dtypes
import numpy as np
from numpy.lib.stride_tricks import as_strided
from xdsl.dialects import arith, scf
from xdsl.dialects.builtin import IndexType, ModuleOp
from xdsl.ir import Block, Operation, SSAValue

from portc.compiler.errors import LoweringError
from portc.dialects import dtypes, npu
from portc.dialects import kernel as k
from portc.dialects.npu_soc import NpuSoc, ceil_to, get_soc
from portc.passes.lower_npu_cube import GemmSpec, build_gemm_kernel
from portc.passes.lower_npu_scalar import ScalarKernel, ScalarUnsupported
from portc.passes.npu_sync import insert_sync

#: cube operand dtype per ``--precision`` (ATC ``--precision_mode`` analogue)
PRECISIONS: dict[str, str] = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}
#: dtypes a vector-path GM operand may have, and the dtype the body computes them in
LOAD_DTYPES: dict[str, str] = {"float32": "float32", "float16": "float32",
                               "bfloat16": "float32", "int32": "int32"}
I32_MAX = 2147483647.0
#: GEMMs with fewer multiply-adds than one 16x16x16 cube step stay on the vector path (fp32):
#: two packs and an AIC launch cost more than the whole product there
CUBE_MIN_MACS = 16 * 16 * 16
#: the most repeats one vector instruction takes with fp32 (64 elements each)
MAX_TILE = 64 * 255


class Unsupported(Exception):
    """This kernel cannot run on the AI core model; the message is the reason (AI CPU)."""


class _UbFull(Exception):
    """The slots of one tile size do not fit the UB (the builder retries with a smaller tile)."""


@dataclass
class Launch:
    """One launch of the lowered program, in execution order.

    ``kind`` is ``aiv``/``aic`` (an ``npu.kernel`` of the program text) or ``aicpu`` (the
    kernel-IR kernel ``origin`` run by the AI CPU); ``bind`` maps GM argument names to the
    program's buffers (kernel-IR buffers or the lowering's ``temps``)."""

    name: str
    kind: str
    origin: str
    block_dim: int
    bind: dict[str, str]
    role: str = "vector"  # vector | pack | gemm | unpack | scalar | aicpu
    reason: str = ""

    def manifest(self) -> dict[str, Any]:
        row: dict[str, Any] = {"name": self.name, "core": self.kind, "origin": self.origin,
                               "block_dim": self.block_dim, "gm_args": self.bind,
                               "role": self.role}
        if self.reason:
            row["reason"] = self.reason
        return row


@dataclass
class NpuProgram:
    """The lowering's result: the npu module (all AI-core kernels), the launch sequence and
    the GM temporaries the lowering added (name -> (dtype, elements))."""

    module: ModuleOp
    launches: list[Launch]
    temps: dict[str, tuple[str, int]] = field(default_factory=dict)
    #: temps whose contents the compiler computed (weights packed offline, as ATC converts
    #: weights to the cube dtype at compile time); the bundle ships them as weights
    constants: dict[str, np.ndarray] = field(default_factory=dict)

    def text(self) -> str:
        return npu.print_program(self.module)


# ------------------------------------------------------------------------------------ builder


class _Builder:
    """Appends scalar/npu ops to the current block; index constants live at the kernel top."""

    def __init__(self, kernel: npu.KernelOp) -> None:
        self.top = kernel.body.block
        self.block = self.top
        self.consts: dict[int, SSAValue] = {}
        self.anchor: Operation | None = None

    def add(self, op: Operation) -> Operation:
        self.block.add_op(op)
        return op

    def c(self, v: int) -> SSAValue:
        if v not in self.consts:
            op = arith.ConstantOp.from_int_and_width(int(v), IndexType())
            if self.anchor is None:
                if self.top.first_op is not None:
                    self.top.insert_op_before(op, self.top.first_op)
                else:
                    self.top.add_op(op)
            else:
                self.top.insert_op_after(op, self.anchor)
            self.anchor = op
            self.consts[v] = op.result
        return self.consts[v]

    def val(self, v: SSAValue | int) -> SSAValue:
        return self.c(v) if isinstance(v, int) else v

    def _bin(self, cls: type, a: SSAValue | int, b: SSAValue | int) -> SSAValue:
        return self.add(cls(self.val(a), self.val(b))).results[0]

    def addi(self, a: SSAValue | int, b: SSAValue | int) -> SSAValue | int:
        if isinstance(a, int) and isinstance(b, int):
            return a + b
        if isinstance(b, int) and b == 0:
            return a
        if isinstance(a, int) and a == 0:
            return b
        return self._bin(arith.AddiOp, a, b)

    def muli(self, a: SSAValue | int, b: int) -> SSAValue | int:
        if isinstance(a, int):
            return a * b
        if b == 0:
            return 0
        if b == 1:
            return a
        return self._bin(arith.MuliOp, a, b)

    def div(self, a: SSAValue, b: int) -> SSAValue:
        return a if b == 1 else self._bin(arith.DivUIOp, a, b)

    def rem(self, a: SSAValue, b: int) -> SSAValue | int:
        return 0 if b == 1 else self._bin(arith.RemUIOp, a, b)

    def minsi(self, a: SSAValue | int, b: SSAValue | int) -> SSAValue:
        return self._bin(arith.MinSIOp, a, b)

    def subi(self, a: SSAValue | int, b: SSAValue | int) -> SSAValue:
        return self._bin(arith.SubiOp, a, b)

    @contextmanager
    def loop(self, lb: SSAValue | int, ub: SSAValue | int, step: SSAValue | int
             ) -> Iterator[SSAValue]:
        body = Block(arg_types=[IndexType()])
        self.add(scf.ForOp(self.val(lb), self.val(ub), self.val(step), [], body))
        outer, self.block = self.block, body
        try:
            yield body.args[0]
        finally:
            body.add_op(scf.YieldOp())
            self.block = outer

    @contextmanager
    def when(self, a: SSAValue, b: int) -> Iterator[None]:
        """``if a < b``."""
        cond = self.add(arith.CmpiOp(a, self.c(b), "slt")).results[0]
        then = Block()
        self.add(scf.IfOp(cond, [], [then]))
        outer, self.block = self.block, then
        try:
            yield
        finally:
            then.add_op(scf.YieldOp())
            self.block = outer


# ------------------------------------------------------------------------------------ shapes


@dataclass
class _Access:
    """One GM operand stream of a generic: buffer, dtype, stride per dim, offset."""

    buf: str
    dtype: str
    strides: list[int]
    offset: int


def _coalesce(dims: list[int], npar: int, acc: list[_Access]) -> tuple[list[int], int]:
    """Drop extent-1 dims and merge neighbours that are contiguous for every operand (in place
    on the accesses' strides); returns the new dims and parallel count."""
    keep = [d for d in range(len(dims)) if dims[d] != 1]
    npar2 = sum(1 for d in keep if d < npar)
    dims2 = [dims[d] for d in keep]
    for a in acc:
        a.strides = [a.strides[d] for d in keep]
    d = len(dims2) - 1
    while d > 0:
        same_kind = (d - 1 < npar2) == (d < npar2)
        if same_kind and all(a.strides[d - 1] == a.strides[d] * dims2[d] for a in acc):
            dims2[d] *= dims2[d - 1]
            del dims2[d - 1]
            for a in acc:
                del a.strides[d - 1]
            if d - 1 < npar2:
                npar2 -= 1
        d -= 1
    return dims2, npar2


def _compute_dtype(t: Any) -> str:
    name = k.dtype_of_type(t)
    if name == "bool":
        return "mask"
    if name in LOAD_DTYPES:
        return LOAD_DTYPES[name]
    raise Unsupported(f"dtype {name} has no vector-unit arithmetic on the NPU model")


# ------------------------------------------------------------------------------------ UB plan


@dataclass
class _Slot:
    """A UB buffer: the alloc's value, its dtype, element count."""

    value: SSAValue
    dtype: str
    size: int


class _Ub:
    """Bump allocator over the AIV core's UB (32-byte aligned slots)."""

    def __init__(self, bld: _Builder, soc: NpuSoc) -> None:
        self.bld, self.soc, self.used = bld, soc, 0
        self.cap = soc.space("ub").size

    def alloc(self, dtype: str, n: int) -> _Slot:
        item = max(1, dtypes.dtype(dtype).bits // 8)
        # whole 256-byte repeats: an instruction over the last partial repeat stays inside
        nbytes = ceil_to(max(n, 1) * item, 256)
        if self.used + nbytes > self.cap:
            raise _UbFull
        op = self.bld.add(npu.AllocOp.make("ub", dtype, nbytes // item, self.used))
        self.used += nbytes
        return _Slot(op.results[0], dtype, nbytes // item)


def _itemsize(dtype: str) -> int:
    return 1 if dtype == "mask" else max(1, dtypes.dtype(dtype).bits // 8)


# ------------------------------------------------------------------------------------ vector


_UNARY_SIMPLE: dict[str, type[npu._VecUnary]] = {
    "exp": npu.VExpOp, "log": npu.VLnOp, "sqrt": npu.VSqrtOp, "rsqrt": npu.VRsqrtOp,
    "reciprocal": npu.VRecOp, "abs": npu.VAbsOp, "relu": npu.VReluOp, "neg": npu.VNegOp,
    "identity": npu.VCopyOp,
}
_BINARY_SIMPLE: dict[str, type[npu._VecBinary]] = {
    "add": npu.VAddOp, "sub": npu.VSubOp, "mul": npu.VMulOp, "div": npu.VDivOp,
    "max": npu.VMaxOp, "min": npu.VMinOp,
}
_INT_OK = {"add", "sub", "mul", "max", "min", "identity"}
_SCALAR_FORM: dict[str, type[npu._VecScalar]] = {
    "add": npu.VAddsOp, "mul": npu.VMulsOp, "max": npu.VMaxsOp, "min": npu.VMinsOp,
}
_CMP = {"eq": "eq", "ne": "ne", "lt": "lt", "le": "le", "gt": "gt", "ge": "ge"}
_COMBINE: dict[str, type[npu._VecBinary]] = {
    "sum": npu.VAddOp, "prod": npu.VMulOp, "max": npu.VMaxOp, "min": npu.VMinOp,
}
#: Abramowitz & Stegun 7.1.26: erf(x) ~ 1 - t*(a1 + t*(a2 + ...)) * exp(-x^2), t = 1/(1+p|x|)
_ERF_P = 0.3275911
_ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def _narrow_masks(kern: npu.KernelOp) -> None:
    """Full masks of 64-element repeats (32-bit data) name only the low word: hardware
    ignores nothing, so the high word must be 0."""
    for op in kern.walk():
        if isinstance(op, npu.VecOp) and op.USES_MASK and op.elems_per_repeat() <= 64 and \
                tuple(op.mask.get_values()) == npu.FULL_MASK:
            op.mask = npu._ints((0, -1))


def _cost(tasks: int, cores: int, steps: float) -> float:
    """A plan's estimated instructions: the busiest core's (simulated time), plus a little of
    the total (simulator wall time) so that ties go to fewer, larger tasks."""
    return -(-tasks // cores) * steps + 0.05 * tasks * steps


def _init_scalar(init: float, dtype: str) -> float:
    """The accumulator's start: floats keep +-inf (the artifact prints them as hex floats),
    int32 takes its extremes."""
    if dtype == "float32" or abs(init) != float("inf"):
        return init
    return I32_MAX if init > 0 else -I32_MAX - 1


class _VectorKernel:
    """Builds one AIV kernel for a (possibly rewritten) generic; raises Unsupported."""

    def __init__(self, op: k.GenericOp, name: str, bufs: dict[str, tuple[str, int]],
                 soc: NpuSoc) -> None:
        self.op, self.name, self.soc, self.bufs = op, name, soc, bufs
        body = op.body.block
        for b in body.ops:
            if isinstance(b, k.IndexOp):
                raise Unsupported("kernel.index in the body")
        self.acc = [_Access(nm, bufs[nm][0], list(op.input_strides(i)), op.input_offset(i))
                    for i, nm in enumerate(op.input_names)]
        self.out = _Access(op.output_name, bufs[op.output_name][0], list(op.output_strides),
                           op.output_offset)
        self._gathers(op)
        for i, a in enumerate([*self.acc, self.out]):
            if i not in self.addr_only and a.dtype not in LOAD_DTYPES:
                raise Unsupported(f"buffer @{a.buf} is {a.dtype}")
            if any(s < 0 for s in a.strides):
                raise Unsupported(f"negative stride on @{a.buf}")
        self.comb = op.combine
        self.vals_dt = {v: _compute_dtype(v.type) for b in body.ops for v in b.results}
        for arg in body.args:
            if arg.index not in self.addr_only:
                self.vals_dt[arg] = _compute_dtype(arg.type)
        self.res_dt = self.vals_dt[op.yielded]
        if self.res_dt == "mask":
            raise Unsupported("a bool result")
        if self.res_dt != LOAD_DTYPES[self.out.dtype]:
            raise Unsupported(f"result {self.res_dt} stored as {self.out.dtype}")
        dims, npar = _coalesce(list(op.extents), op.parallel_count, [*self.acc, self.out])
        self.dims, self.npar = dims, npar
        self.red = list(range(npar, len(dims)))
        if self.comb == "none":
            self.red = []
        self._choose_mode()

    def _gathers(self, op: k.GenericOp) -> None:
        """Gathers (indirect terms on inputs) address on the scalar unit: per task, each index
        is read by ``npu.get_value`` and moves its operand's DMA offset. So index operands must
        not move along the vector dim (one index per tile; ``_index_ok``), must not be gathered
        themselves, and need no vector load unless the body also computes with them
        (``addr_only``: any integer dtype, int64 included). Scatters (indirect outputs) stay
        on the AI CPU: their writes could collide across cores."""
        self.terms = op.indirect_terms
        if any(t[0] == -1 for t in self.terms):
            raise Unsupported("indirect (scatter) addressing of the output")
        self.index_slots = {t[1] for t in self.terms}
        if self.index_slots & {t[0] for t in self.terms}:
            raise Unsupported("an index operand that is itself gathered")
        body = op.body.block
        self.addr_only = {i for i in self.index_slots if not body.args[i].uses}
        for i in self.index_slots:
            if dtypes.dtype(self.acc[i].dtype).kind not in ("int", "uint"):
                raise Unsupported(f"index buffer @{self.acc[i].buf} is {self.acc[i].dtype}")

    # -- mode ------------------------------------------------------------------------------
    def _index_ok(self, d: int) -> bool:
        """Dim ``d`` may be the vector dim: no index operand moves along it."""
        return all(self.acc[i].strides[d] == 0 for i in self.index_slots)

    def _in_ok(self, d: int) -> bool:
        return all(a.strides[d] in (0, 1) for a in self.acc) and self._index_ok(d)

    def _find_u(self, v: int, row: bool = False) -> int | None:
        """A second parallel dim for 2-D tiles (rows of ``v``, one DMA burst each): every
        operand moves by 1 along ``v`` and by at least a row along ``u``. Rows of at most 64
        elements may also take 32-bit *row scalars* (0 along ``v``, 0 or 1 along ``u``: a
        softmax's row max), broadcast by ``vbrcb`` + a block-replicating ``vcopy``; in row
        mode (``row``) each 64-element row reduces to one result, contiguous along ``u``."""
        L = self.dims[v]
        short = L <= 64

        def ok(a: _Access, d: int) -> bool:
            if a.strides[v] == 1:
                return a.strides[d] >= L
            return (a.strides[v] == 0 and short and a is not self.out
                    and a.strides[d] in (0, 1) and _itemsize(a.dtype) == 4)

        if self.terms or (row and not (short and len(self.red) == 1
                                       and self.op.init_value is not None)):
            return None  # gathers address per task: one row per tile
        cand = [d for d in range(self.npar) if d != v and self.dims[d] > 1
                and all(ok(a, d) for a in self.acc)
                and (self.out.strides[d] == 1 if row else ok(self.out, d))]
        return min(cand, key=lambda d: self.out.strides[d]) if cand else None

    def _choose_mode(self) -> None:
        """Pick the plan with the fewest estimated instructions (tasks x loop steps): row mode
        on a reduction dim, column mode on a parallel dim (2-D tiles when possible, spread
        when transposed), or one element per task."""
        dims, npar = self.dims, self.npar
        P = 1
        for d in range(npar):
            P *= dims[d]
        R = 1
        for d in self.red:
            R *= dims[d]
        cores = self.soc.aiv_cores
        plans: list[tuple[float, int, str, int | None, int | None]] = [
            (_cost(P, cores, R * 1.5), 0, "col", None, None)]
        for d in range(npar):
            if self.out.strides[d] < 1 or dims[d] == 1 or not self._index_ok(d):
                continue
            spread = [a for a in self.acc if a.strides[d] > 1]
            if any(a.dtype != "float32" for a in spread):
                continue
            sp = bool(spread) or self.out.strides[d] > 1
            tg = 2048 if sp else 8192
            tasks = P // dims[d] * -(-dims[d] // tg)
            u = None if sp else self._find_u(d)
            if u is not None:
                rows = max(1, tg // ceil_to(dims[d], 16))
                if rows > 1 and ceil_to(dims[d], 16) <= tg:
                    tasks = tasks // dims[u] * -(-dims[u] // rows)
                else:
                    u = None
            plans.append((_cost(tasks, cores, R * (3 if sp else 1)), 1, "col", d, u))
        if self.comb in ("sum", "max", "min") and self.res_dt == "float32":
            for r in self.red:
                if self._in_ok(r) and dims[r] > 1:
                    u = self._find_u(r, row=True)
                    if u is not None:
                        tasks = P // dims[u] * -(-dims[u] // 255)
                        plans.append((_cost(tasks, cores, 1.0), 2, "row", r, u))
                    plans.append((_cost(P, cores, (R // dims[r]) * -(-dims[r] // 8192) * 1.2),
                                  1, "row", r, None))
        _, _, self.mode, self.v, self.u = min(plans, key=lambda p: (p[0], -p[1]))

    # -- build -------------------------------------------------------------------------------
    def build(self) -> npu.KernelOp:
        """The AIV kernel; the tile shrinks until every slot fits the UB."""
        v = self.v
        L = self.dims[v] if v is not None else 1
        spread_in = {i for i, a in enumerate(self.acc) if v is not None and a.strides[v] > 1}
        spread_out = self.mode != "row" and v is not None and self.out.strides[v] > 1
        span = L if self.u is None else 64 * self.dims[self.u]  # 2-D tiles hold many rows
        T = self._tile(span, self._slot_count(spread_in, spread_out),
                       bool(spread_in or spread_out))
        if self.mode == "col" and self.u is None and v is not None:
            # enough tiles to give every core work (tiles of at least 256 elements)
            outer = 1
            for d in range(self.npar):
                outer *= self.dims[d] if d != v else 1
            want = -(-self.soc.aiv_cores // outer)
            T = min(T, max(256, ceil_to(-(-L // want), 64)))
        while True:
            try:
                return self._build(T, L, spread_in, spread_out)
            except _UbFull:
                if T <= 64:
                    raise Unsupported("the body needs more UB slots than the UB holds") \
                        from None
                T = max(64, T // 2 // 64 * 64)

    def _build(self, T: int, L: int, spread_in: set[int], spread_out: bool) -> npu.KernelOp:
        dims, v, u = self.dims, self.v, self.u
        row_scalars = u is not None and any(a.strides[v] == 0 for a in self.acc)
        packed_rows = u is not None and (self.mode == "row" or row_scalars)
        self.pitch = 64 if packed_rows else ceil_to(L, 16)
        if u is not None and T // self.pitch < 2:
            if self.mode == "row":
                self.u = None
                raise _UbFull  # retry as a one-row-per-task reduction
            u = self.u = None
        outer = [d for d in range(self.npar) if d not in (v, u)]
        red_loops = [d for d in self.red if d != v]
        row = self.mode == "row"
        if u is not None:
            # vcopy / vwhole_reduce take one row per repeat: at most 255 rows
            self.rows = min(T // self.pitch, 255) if packed_rows else T // self.pitch
            ntiles = -(-dims[u] // self.rows)
        else:
            ntiles = -(-L // T)
        tasks = 1
        for d in outer:
            tasks *= dims[d]
        if not row or u is not None:
            tasks *= ntiles
        if tasks == 0:
            raise Unsupported("empty iteration space")
        args = sorted({a.buf for a in [*self.acc, self.out]})
        kern = npu.KernelOp.make(self.name, "aiv", min(self.soc.aiv_cores, tasks),
                                 [(b, self.bufs[b][0], self.bufs[b][1]) for b in args],
                                 self.soc.name)
        self.gm = dict(zip(args, kern.body.block.args, strict=True))
        bld = self.bld = _Builder(kern)
        self.ub = _Ub(bld, self.soc)
        self.T = T
        self.n = T if v is not None else 1
        if u is not None:
            self.n = self.rows * self.pitch
        # constants: one slot each, filled once before the task loop
        self.const_slots: dict[SSAValue, _Slot] = {}
        for b in self.op.body.block.ops:
            if isinstance(b, k.ConstOp):
                dt = self.vals_dt[b.result]
                if dt == "mask":
                    raise Unsupported("bool constants")
                cs = self.ub.alloc(dt, T)
                self.vdup(cs, float(b.number), self.n)
                self.const_slots[b.result] = cs
        self.zero = None
        if any(isinstance(b, k.UnaryOp) and b.fn.data == "erf" for b in self.op.body.block.ops):
            self.zero = self.ub.alloc("float32", T)
            self.vdup(self.zero, 0.0, self.n)
        # ping-pong only pays when a core runs more than one task
        pingpong = tasks > min(self.soc.aiv_cores, tasks)
        sets = [self._slot_set(spread_in, spread_out, row) for _ in range(1 + pingpong)]
        bid = bld.add(npu.GetBlockIdxOp.make()).results[0]
        bnum = bld.add(npu.GetBlockNumOp.make()).results[0]
        if not pingpong:
            self._task(bid, sets[0], outer, red_loops, ntiles, L, spread_in, spread_out)
            _narrow_masks(kern)
            return kern
        step = bld._bin(arith.MuliOp, bnum, 2)
        with bld.loop(bid, tasks, step) as t0:
            self._task(t0, sets[0], outer, red_loops, ntiles, L, spread_in, spread_out)
            t1 = bld.addi(t0, bnum)
            assert isinstance(t1, SSAValue)
            with bld.when(t1, tasks):
                self._task(t1, sets[1], outer, red_loops, ntiles, L, spread_in, spread_out)
        _narrow_masks(kern)
        return kern

    def _slot_count(self, spread_in: set[int], spread_out: bool) -> float:
        """Estimated UB bytes per tile element over all slots (the first tile guess)."""
        body = self.op.body.block
        n_vals = sum(1 for b in body.ops if b.results and not isinstance(b, k.ConstOp))
        extra = 4 if any(isinstance(b, k.UnaryOp) and b.fn.data in ("erf", "tanh", "sigmoid")
                         for b in body.ops) else 0
        per_set = 0.0
        for i, a in enumerate(self.acc):
            if i in self.addr_only:
                continue
            per_set += _itemsize(a.dtype) + (4 if a.dtype in ("float16", "bfloat16") else 0)
            if i in spread_in:
                per_set += 32
        per_set += 4 * (n_vals + extra + 2) + _itemsize(self.out.dtype)
        if spread_out:
            per_set += 32
        n_consts = sum(1 for b in body.ops if isinstance(b, k.ConstOp)) + 1
        return 2 * per_set + 4 * n_consts

    def _tile(self, L: int, per_elem: float, spread: bool) -> int:
        budget = self.soc.space("ub").size - 8 * 1024
        T = int(budget // per_elem) // 64 * 64
        T = min(T, MAX_TILE, ceil_to(L, 64))
        if spread:
            T = min(T, 64 * 32)
        return max(64, T)

    def _slot_set(self, spread_in: set[int], spread_out: bool, row: bool) -> dict[str, Any]:
        T, ub = self.T, self.ub
        s: dict[str, Any] = {"raw": [], "spread": {}, "bc": {}, "val": {}}
        s["rb"] = {}
        for i, a in enumerate(self.acc):
            if i in self.addr_only:  # read by the scalar unit only
                s["raw"].append(None)
                continue
            s["raw"].append(ub.alloc(a.dtype, T))
            if self.u is not None and a.strides[self.v] == 0 and a.strides[self.u] == 1:
                s["rb"][i] = (ub.alloc(a.dtype, T), ub.alloc(a.dtype, T))
            if i in spread_in:
                s["spread"][i] = ub.alloc(a.dtype, T * (32 // _itemsize(a.dtype)))
            if a.dtype in ("float16", "bfloat16"):
                s["val"][i] = ub.alloc("float32", T)
        for b in self.op.body.block.ops:
            for r in b.results:
                if isinstance(b, k.ConstOp):
                    continue
                dt = self.vals_dt[r]
                s["val"][r] = ub.alloc("uint8", T // 8) if dt == "mask" else ub.alloc(dt, T)
        for dt in sorted({a.dtype for i, a in enumerate(self.acc) if i not in self.addr_only}):
            s[f"bc_{dt}"] = ub.alloc(dt, 256 // _itemsize(dt))
        for b in self.op.body.block.ops:
            if isinstance(b, k.CastOp):
                dn = k.dtype_of_type(b.result.type)
                if dn in ("float16", "bfloat16"):
                    s[f"cast_{dn}"] = ub.alloc(dn, T)
        s["scratch"] = [ub.alloc("float32", T) for _ in range(4)] if any(
            isinstance(b, k.UnaryOp) and b.fn.data in ("erf", "tanh", "sigmoid")
            for b in self.op.body.block.ops) else []
        s["mask"] = ub.alloc("uint8", T // 8)
        if self.comb != "none":
            s["acc"] = ub.alloc(self.res_dt, 64 if row and self.u is None else T)
            s["red"] = ub.alloc(self.res_dt, 64 if self.u is None else T)
        if self.out.dtype != self.res_dt:
            s["out"] = ub.alloc(self.out.dtype, T)
        if spread_out:
            s["ospread"] = ub.alloc(self.out.dtype, T * (32 // _itemsize(self.out.dtype)))
        return s

    # -- vector helpers --------------------------------------------------------------------
    def rep(self, n: int, item: int = 4) -> int:
        return max(1, -(-n // (256 // item)))

    def o(self, slot: _Slot, off: int = 0) -> tuple[SSAValue, SSAValue]:
        return slot.value, self.bld.c(off)

    def vdup(self, slot: _Slot, value: float, n: int) -> None:
        self.bld.add(npu.VDupOp.make(self.o(slot), value, self.rep(n)))

    def unary(self, cls: type, dst: _Slot, src: _Slot, n: int) -> None:
        self.bld.add(cls.make(self.o(dst), self.o(src), self.rep(n)))

    def binary(self, cls: type, dst: _Slot, a: _Slot, b: _Slot, n: int,
               mask: tuple[int, int] = npu.FULL_MASK) -> None:
        self.bld.add(cls.make(self.o(dst), self.o(a), self.o(b), self.rep(n), mask))

    def scalar(self, cls: type, dst: _Slot, a: _Slot, s: float, n: int) -> None:
        self.bld.add(cls.make(self.o(dst), self.o(a), s, self.rep(n)))

    def cast(self, dst: _Slot, src: _Slot, n: int, rnd: str = "none") -> None:
        """Conversions run 256/max(bytes) elements per repeat, so the narrow side advances
        by fewer blocks per repeat."""
        items = [_itemsize(dst.dtype), _itemsize(src.dtype)]
        epr = 256 // max(items)
        self.bld.add(npu.VCastOp.make(self.o(dst), self.o(src), self.rep(n, max(items)), rnd,
                                      rep=[epr * i // 32 for i in items]))

    # -- one task --------------------------------------------------------------------------
    def _task(self, task: SSAValue, s: dict[str, Any], outer: list[int], red_loops: list[int],
              ntiles: int, L: int, spread_in: set[int], spread_out: bool) -> None:
        bld, dims, v, T = self.bld, self.dims, self.v, self.T
        row = self.mode == "row"
        rest: SSAValue | int = task
        coords: dict[int, SSAValue | int] = {}
        v0: SSAValue | int = 0
        u = self.u
        if u is not None:
            assert isinstance(rest, SSAValue)
            u0 = bld.muli(bld.rem(rest, ntiles), self.rows)
            rest = bld.div(rest, ntiles)
            coords[u] = u0
            self.cur_rows = (bld.minsi(self.rows, bld.subi(dims[u], u0))
                             if dims[u] % self.rows else self.rows)
        elif not row and v is not None:
            assert isinstance(rest, SSAValue)
            v0 = bld.muli(bld.rem(rest, ntiles), T)
            rest = bld.div(rest, ntiles)
        for d in reversed(outer):
            assert isinstance(rest, SSAValue)
            coords[d] = bld.rem(rest, dims[d])
            rest = bld.div(rest, dims[d])

        def base(a: _Access, extra: dict[int, SSAValue | int]) -> SSAValue | int:
            off: SSAValue | int = a.offset
            for d, c in {**coords, **extra}.items():
                off = bld.addi(off, bld.muli(c, a.strides[d]))
            for slot, islot, stride, bound in self.terms:
                if self.acc[slot] is a:
                    off = bld.addi(off, bld.muli(self._index(base(self.acc[islot], extra),
                                                             self.acc[islot], bound), stride))
            return off

        if row and u is not None:
            self._rowpack_task(s, base, L, spread_in)
            return
        if row:
            self._row_task(s, base, red_loops, L, spread_in)
            return
        tlen: SSAValue | int = 1
        if u is not None:
            tlen = L
        elif v is not None:
            tlen = bld.minsi(T, bld.subi(L, v0)) if L % T else T
        vco: dict[int, SSAValue | int] = {v: v0} if v is not None else {}
        if self.comb != "none":
            acc = s["acc"]
            if self.op.init_value is not None:
                self.vdup(acc, _init_scalar(self.op.init_value, self.res_dt), self.n)
            else:
                self._load_out_into(acc, s, base(self.out, vco), tlen)
            self._red_nest(red_loops, 0, {}, lambda ex: self._col_step(
                s, base, {**vco, **ex}, tlen, spread_in, acc))
            result = acc
        else:
            result = self._load_and_body(s, base, vco, tlen, self.n, spread_in)
        self._store(s, result, base(self.out, vco), tlen, self.n, spread_out)

    def _index(self, off: SSAValue | int, a: _Access, bound: int) -> SSAValue:
        """One gather index: read by the scalar unit, negative values wrapped by ``bound``
        (the kernel IR's ``wrap``). Out-of-range indices are not trapped: they address
        another row, or fault in npusim's bounds check of the DMA that uses them."""
        bld = self.bld
        v = bld.add(npu.GetValueOp.make(self.gm[a.buf], bld.val(off))).results[0]
        if dtypes.dtype(a.dtype).kind == "uint":
            return v
        neg = bld.add(arith.CmpiOp(v, bld.c(0), "slt")).results[0]
        wrapped = bld.addi(v, bound)
        return bld.add(arith.SelectOp(neg, wrapped, v)).results[0]

    def _red_nest(self, loops: list[int], i: int, ex: dict[int, SSAValue | int],
                  fn: Callable[[dict[int, SSAValue | int]], None]) -> None:
        if i == len(loops):
            fn(ex)
            return
        with self.bld.loop(0, self.dims[loops[i]], 1) as r:
            self._red_nest(loops, i + 1, {**ex, loops[i]: r}, fn)

    def _col_step(self, s: dict[str, Any], base: Callable, ex: dict[int, SSAValue | int],
                  tlen: SSAValue | int, spread_in: set[int], acc: _Slot) -> None:
        val = self._load_and_body(s, base, ex, tlen, self.n, spread_in)
        self.binary(_COMBINE[self.comb], acc, acc, val, self.n)

    def _rowpack_task(self, s: dict[str, Any], base: Callable, L: int,
                      spread_in: set[int]) -> None:
        """Rows of at most 64 elements, one per 256-byte repeat: ``vwhole_reduce`` gives one
        result per row, combined with ``init`` and stored as one burst."""
        bld, v, R = self.bld, self.v, self.rows
        assert v is not None and self.op.init_value is not None
        acc, red = s["acc"], s["red"]
        val = self._load_and_body(s, base, {v: 0}, L, self.n, spread_in)
        bld.add(npu.VWholeReduceOp.make(self.o(red), self.o(val), self.comb, R,
                                        npu.mask_first(L), blk=[1], rep=[8]))
        self.vdup(acc, _init_scalar(self.op.init_value, self.res_dt), R)
        self.binary(_COMBINE[self.comb], acc, acc, red, R)
        self._store(s, acc, base(self.out, {}), self.cur_rows, R, False)

    def _row_task(self, s: dict[str, Any], base: Callable, red_loops: list[int], L: int,
                  spread_in: set[int]) -> None:
        bld, v, T = self.bld, self.v, self.T
        acc, red = s["acc"], s["red"]
        one = npu.mask_first(1)
        if self.op.init_value is not None:
            bld.add(npu.VDupOp.make(self.o(acc), _init_scalar(self.op.init_value, self.res_dt),
                                    1, one))
        else:
            self._load_out_into(acc, s, base(self.out, {}), 1)
        nfull, tail = divmod(L, T)

        def tile(v0: SSAValue | int, n: int, ex: dict[int, SSAValue | int]) -> None:
            val = self._load_and_body(s, base, {**ex, v: v0}, n, n, spread_in)
            bld.add(npu.VReduceOp.make(self.o(red), self.o(val), self.comb, n))
            self.binary(_COMBINE[self.comb], acc, acc, red, 1, one)

        def inner(ex: dict[int, SSAValue | int]) -> None:
            if nfull == 1:
                tile(0, T, ex)
            elif nfull > 1:
                with bld.loop(0, nfull * T, T) as v0:
                    tile(v0, T, ex)
            if tail:
                tile(nfull * T, tail, ex)

        self._red_nest(red_loops, 0, {}, inner)
        self._store(s, acc, base(self.out, {}), 1, 1, False)

    def _load_out_into(self, acc: _Slot, s: dict[str, Any], off: SSAValue | int,
                       tlen: SSAValue | int) -> None:
        """Accumulate into what the output holds (a combiner without ``init``)."""
        if self.out.dtype != self.res_dt or (self.v is not None and self.out.strides[self.v] > 1
                                             and self.mode != "row"):
            raise Unsupported("accumulating into a converted or strided output")
        self._dma_in(acc, self.gm[self.out.buf], off, tlen, self.out)

    def _load_and_body(self, s: dict[str, Any], base: Callable, ex: dict[int, SSAValue | int],
                       tlen: SSAValue | int, n: int, spread_in: set[int]) -> _Slot:
        """Copy the inputs of one tile in and evaluate the body; returns the result slot."""
        bld, v = self.bld, self.v
        vals: dict[SSAValue, _Slot] = dict(self.const_slots)
        body = self.op.body.block
        for i, a in enumerate(self.acc):
            if i in self.addr_only:
                continue
            raw: _Slot = s["raw"][i]
            gm = self.gm[a.buf]
            off = bld.val(base(a, ex))
            stride = a.strides[v] if v is not None else 0
            if i in s["rb"]:  # row scalars: one per row, replicated over the row's 64 lanes
                tmp, rb = s["rb"][i]
                bld.add(npu.Mte2Op.make(raw.value, bld.c(0), gm, off, bld.c(1),
                                        bld.val(self.cur_rows), bld.c(0), bld.c(0)))
                bld.add(npu.VBrcbOp.make(self.o(tmp), self.o(raw), -(-self.rows // 8)))
                bld.add(npu.VCopyOp.make(self.o(rb), self.o(tmp), self.rows, blk=[1, 0],
                                         rep=[8, 1]))
                vals[body.args[i]] = rb
                continue
            if v is None or stride == 0:
                bld.add(npu.Mte2Op.make(raw.value, bld.c(0), gm, off, bld.c(1), bld.c(1),
                                        bld.c(0), bld.c(0)))
                if n > 1:  # broadcast: 8 copies by vbrcb, then a zero-stride copy to n
                    bc = s[f"bc_{a.dtype}"]
                    bld.add(npu.VBrcbOp.make(self.o(bc), self.o(raw), 1))
                    bld.add(npu.VCopyOp.make(self.o(raw), self.o(bc),
                                             self.rep(n, _itemsize(a.dtype)),
                                             blk=[1, 0], rep=[8, 0]))
            elif stride == 1:
                self._dma_in(raw, gm, off, tlen, a)
            else:
                sp: _Slot = s["spread"][i]
                epb = 32 // _itemsize(a.dtype)
                bld.add(npu.Mte2Op.make(sp.value, bld.c(0), gm, off, bld.val(tlen), bld.c(1),
                                        bld.c(stride - 1), bld.c(epb - 1)))
                for c0 in range(0, n, 248):  # compact: one lane per 32-byte block
                    cnt = min(248, n - c0)  # 248: chunk starts stay 32-byte aligned
                    bld.add(npu.VWholeReduceOp.make(self.o(raw, c0), self.o(sp, c0 * epb),
                                                    "max", cnt, npu.mask_first(1),
                                                    blk=[1], rep=[1]))
            if a.dtype in ("float16", "bfloat16"):
                self.cast(s["val"][i], raw, n)
                vals[body.args[i]] = s["val"][i]
            else:
                vals[body.args[i]] = raw
        for b in body.ops:
            if isinstance(b, k.ConstOp | k.YieldOp):
                continue
            self._emit(b, vals, s, n)
        return vals[self.op.yielded]

    def _emit(self, b: Operation, vals: dict[SSAValue, _Slot], s: dict[str, Any],
              n: int) -> None:
        dst: _Slot = s["val"][b.results[0]]
        vals[b.results[0]] = dst
        dt = self.vals_dt[b.results[0]]
        if isinstance(b, k.UnaryOp):
            self._unary(b.fn.data, dst, vals[b.x], s, n, self.vals_dt[b.x])
        elif isinstance(b, k.BinaryOp):
            self._binary(b.fn.data, dst, b.a, b.b, vals, n, self.vals_dt[b.a])
        elif isinstance(b, k.SelectOp):
            if dt != "float32":
                raise Unsupported(f"select of {dt}")
            self.bld.add(npu.VSelOp.make(self.o(dst), self.o(vals[b.cond]), self.o(vals[b.a]),
                                         self.o(vals[b.b]), self.rep(n)))
        elif isinstance(b, k.CastOp):
            self._cast(b, dst, vals[b.x], s, n)
        else:
            raise Unsupported(f"body op {b.name}")

    def _unary(self, fn: str, dst: _Slot, x: _Slot, s: dict[str, Any], n: int,
               dt: str) -> None:
        if dt == "int32" and fn not in _INT_OK:
            raise Unsupported(f"{fn} on int32")
        if dt == "mask":
            raise Unsupported(f"{fn} on bool")
        if fn in _UNARY_SIMPLE:
            self.unary(_UNARY_SIMPLE[fn], dst, x, n)
            return
        sc = s["scratch"]
        if fn == "sigmoid":  # 1 / (1 + exp(-x))
            self.scalar(npu.VMulsOp, sc[0], x, -1.0, n)
            self.unary(npu.VExpOp, sc[0], sc[0], n)
            self.scalar(npu.VAddsOp, sc[0], sc[0], 1.0, n)
            self.unary(npu.VRecOp, dst, sc[0], n)
        elif fn == "tanh":  # 2 / (1 + exp(-2x)) - 1
            self.scalar(npu.VMulsOp, sc[0], x, -2.0, n)
            self.unary(npu.VExpOp, sc[0], sc[0], n)
            self.scalar(npu.VAddsOp, sc[0], sc[0], 1.0, n)
            self.unary(npu.VRecOp, sc[0], sc[0], n)
            self.scalar(npu.VMulsOp, sc[0], sc[0], 2.0, n)
            self.scalar(npu.VAddsOp, dst, sc[0], -1.0, n)
        elif fn == "erf":  # Abramowitz-Stegun 7.1.26 on |x|, sign restored by compare/select
            t, p, e, y = sc
            self.unary(npu.VAbsOp, t, x, n)
            self.scalar(npu.VMulsOp, t, t, _ERF_P, n)
            self.scalar(npu.VAddsOp, t, t, 1.0, n)
            self.unary(npu.VRecOp, t, t, n)
            self.scalar(npu.VMulsOp, p, t, _ERF_A[4], n)
            for a in reversed(_ERF_A[:4]):
                self.scalar(npu.VAddsOp, p, p, a, n)
                self.binary(npu.VMulOp, p, p, t, n)
            self.binary(npu.VMulOp, e, x, x, n)
            self.scalar(npu.VMulsOp, e, e, -1.0, n)
            self.unary(npu.VExpOp, e, e, n)
            self.binary(npu.VMulOp, p, p, e, n)
            self.scalar(npu.VMulsOp, y, p, -1.0, n)
            self.scalar(npu.VAddsOp, y, y, 1.0, n)  # erf(|x|)
            assert self.zero is not None
            self.bld.add(npu.VCmpOp.make(self.o(s["mask"]), self.o(x), self.o(self.zero),
                                         "lt", self.rep(n)))
            self.unary(npu.VNegOp, t, y, n)
            self.bld.add(npu.VSelOp.make(self.o(dst), self.o(s["mask"]), self.o(t),
                                         self.o(y), self.rep(n)))
        else:
            raise Unsupported(f"unary '{fn}' has no vector composition")

    def _pow(self, dst: _Slot, x: _Slot, c: float, n: int) -> None:
        """``x ** c`` for a constant exponent (LRN's ``^0.75``, ``x^2``): integers up to 64 by
        square-and-multiply (exact signs for negative bases; ``vrec`` for negative ``c``),
        ``+-0.5`` by (r)sqrt, anything else ``exp(c * ln x)``, which gives what pow does
        for x <= 0 too (NaN for x < 0, 0 or inf at x = 0); run-time exponents stay on the AI CPU
        (a negative base with an integer exponent needs a parity test the unit lacks)."""
        if c == 0.5 or c == -0.5:
            self.unary(npu.VSqrtOp if c > 0 else npu.VRsqrtOp, dst, x, n)
            return
        if c == int(c) and 1 <= abs(c) <= 64:
            e = int(abs(c))
            self.unary(npu.VCopyOp, dst, x, n)
            for bit in bin(e)[3:]:  # left to right after the leading 1
                self.binary(npu.VMulOp, dst, dst, dst, n)
                if bit == "1":
                    self.binary(npu.VMulOp, dst, dst, x, n)
            if c < 0:
                self.unary(npu.VRecOp, dst, dst, n)
            return
        if c == 0:
            self.vdup(dst, 1.0, n)  # pow(x, 0) = 1 for every x, NaN included
            return
        self.unary(npu.VLnOp, dst, x, n)
        self.scalar(npu.VMulsOp, dst, dst, c, n)
        self.unary(npu.VExpOp, dst, dst, n)

    def _binary(self, fn: str, dst: _Slot, a: SSAValue, b: SSAValue,
                vals: dict[SSAValue, _Slot], n: int, dt: str) -> None:
        if dt == "mask":
            raise Unsupported(f"{fn} on bool")
        if fn in _CMP:
            if dt != "float32":
                raise Unsupported(f"compare of {dt}")
            self.bld.add(npu.VCmpOp.make(self.o(dst), self.o(vals[a]), self.o(vals[b]),
                                         _CMP[fn], self.rep(n)))
            return
        if fn == "pow" and dt == "float32" and isinstance(b.owner, k.ConstOp):
            self._pow(dst, vals[a], float(b.owner.number), n)
            return
        if fn not in _BINARY_SIMPLE or (dt == "int32" and fn not in _INT_OK):
            raise Unsupported(f"binary '{fn}' on {dt}")
        ca = a.owner if isinstance(a.owner, k.ConstOp) else None
        cb = b.owner if isinstance(b.owner, k.ConstOp) else None
        if dt == "float32" and cb is not None and fn in _SCALAR_FORM:
            self.scalar(_SCALAR_FORM[fn], dst, vals[a], float(cb.number), n)
        elif dt == "float32" and ca is not None and fn in _SCALAR_FORM:
            self.scalar(_SCALAR_FORM[fn], dst, vals[b], float(ca.number), n)
        elif dt == "float32" and cb is not None and fn == "sub":
            self.scalar(npu.VAddsOp, dst, vals[a], -float(cb.number), n)
        else:
            self.binary(_BINARY_SIMPLE[fn], dst, vals[a], vals[b], n)

    def _cast(self, b: k.CastOp, dst: _Slot, x: _Slot, s: dict[str, Any], n: int) -> None:
        src_name, dst_name = k.dtype_of_type(b.x.type), k.dtype_of_type(b.result.type)
        sdt, ddt = self.vals_dt[b.x], self.vals_dt[b.result]
        if sdt == "float32" and ddt == "float32":
            if dst_name in ("float16", "bfloat16") and src_name == "float32":
                tmp = s[f"cast_{dst_name}"]  # round through the narrow type
                self.cast(tmp, x, n)
                self.cast(dst, tmp, n)
            else:
                self.unary(npu.VCopyOp, dst, x, n)
        elif sdt == "float32" and ddt == "int32":
            self.cast(dst, x, n, "trunc")
        elif sdt == "int32" and ddt == "float32":
            self.cast(dst, x, n)
        elif sdt == ddt:
            self.unary(npu.VCopyOp, dst, x, n)
        else:
            raise Unsupported(f"cast {src_name} -> {dst_name}")

    def _store(self, s: dict[str, Any], res: _Slot, off: SSAValue | int, tlen: SSAValue | int,
               n: int, spread_out: bool) -> None:
        bld = self.bld
        src = res
        if self.out.dtype != self.res_dt:
            self.cast(s["out"], res, n)
            src = s["out"]
        gm = self.gm[self.out.buf]
        if spread_out:
            assert self.v is not None
            sp = s["ospread"]
            epb = 32 // _itemsize(self.out.dtype)
            for c0 in range(0, n, 255 * 8):
                cnt = min(255 * 8, n - c0)
                bld.add(npu.VBrcbOp.make(self.o(sp, c0 * epb), self.o(src, c0), -(-cnt // 8)))
            bld.add(npu.Mte3Op.make(gm, bld.val(off), sp.value, bld.c(0), bld.val(tlen),
                                    bld.c(1), bld.c(epb - 1), bld.c(self.out.strides[self.v] - 1)))
            return
        if self.u is not None and self.mode != "row":
            L = self.dims[self.v]  # type: ignore[index]
            bld.add(npu.Mte3Op.make(gm, bld.val(off), src.value, bld.c(0),
                                    bld.val(self.cur_rows), bld.c(L), bld.c(self.pitch - L),
                                    bld.c(self.out.strides[self.u] - L)))
            return
        bld.add(npu.Mte3Op.make(gm, bld.val(off), src.value, bld.c(0), bld.c(1), bld.val(tlen),
                                bld.c(0), bld.c(0)))

    def _dma_in(self, slot: _Slot, gm: SSAValue, off: SSAValue | int, tlen: SSAValue | int,
                a: _Access) -> None:
        """A contiguous tile (one burst) or, with 2-D tiles, one burst per row at the UB
        pitch."""
        bld = self.bld
        if self.u is not None:
            L = self.dims[self.v]  # type: ignore[index]
            bld.add(npu.Mte2Op.make(slot.value, bld.c(0), gm, bld.val(off),
                                    bld.val(self.cur_rows), bld.c(L),
                                    bld.c(a.strides[self.u] - L), bld.c(self.pitch - L)))
            return
        bld.add(npu.Mte2Op.make(slot.value, bld.c(0), gm, bld.val(off), bld.c(1),
                                bld.val(tlen), bld.c(0), bld.c(0)))


# ------------------------------------------------------------------------------------ cube


def _trace_arg(v: SSAValue, block: Block) -> int | None:
    """The body argument ``v`` loads, through float casts; None if it is computed."""
    while isinstance(v.owner, k.CastOp):
        if dtypes.dtype(k.dtype_of_type(v.type)).kind != "float":
            return None
        v = v.owner.x
    return v.index if v.owner is block else None  # type: ignore[attr-defined]


def matmul_operands(op: k.GenericOp) -> tuple[int, int] | None:
    """(A slot, B slot) when ``op`` is matmul-shaped (module docstring), else None."""
    block = op.body.block
    ops = [b for b in block.ops if not isinstance(b, k.YieldOp | k.CastOp)]
    if op.combine != "sum" or op.init_value != 0.0 or op.indirect_terms or len(ops) != 1:
        return None
    mul = ops[0]
    if not (isinstance(mul, k.BinaryOp) and mul.fn.data == "mul"):
        return None
    y = op.yielded
    while isinstance(y.owner, k.CastOp):
        y = y.owner.x
    if y is not mul.result or len(op.input_names) != 2 or op.parallel_count == len(op.extents):
        return None
    a, b = _trace_arg(mul.a, block), _trace_arg(mul.b, block)
    if a is None or b is None or a == b:
        return None
    return a, b


def _identity_generic(name: str, dims: Sequence[int], src: tuple[str, str, Sequence[int], int],
                      dst: tuple[str, Sequence[int], int]) -> k.GenericOp:
    """A copy ``dst[...] = src[...]`` over ``dims`` (all parallel); the store converts."""
    body = Block(arg_types=[k.type_of_dtype(src[1])])
    body.add_op(k.YieldOp.create(operands=[body.args[0]]))
    return k.GenericOp.make(name, name, dims, len(dims), [(src[0], src[2], src[3])], dst,
                            "none", None, [], body)


def _contiguous(dims: Sequence[int]) -> list[int]:
    out, acc = [], 1
    for d in reversed(dims):
        out.append(acc)
        acc *= d
    return out[::-1]


class _Lowering:
    def __init__(self, module: Any, soc: NpuSoc, precision: str, verify: bool,
                 weights: Mapping[str, np.ndarray] | None) -> None:
        self.verify = verify
        self.weights = weights
        self.constants: dict[str, np.ndarray] = {}
        self.bindings = {n: b.binding.data for n, b in k.buffers_of(module).items()
                         if b.kind.data == "weight" and b.binding is not None}
        if precision not in PRECISIONS:
            raise LoweringError(f"ascend: precision '{precision}' is not one of "
                                f"{', '.join(PRECISIONS)}")
        self.soc, self.cube_dt = soc, PRECISIONS[precision]
        self.bufs = {n: (b.dtype.data, b.elements) for n, b in k.buffers_of(module).items()}
        self.module = module
        self.out = ModuleOp([])
        self.launches: list[Launch] = []
        self.temps: dict[str, tuple[str, int]] = {}

    def run(self) -> NpuProgram:
        for kop in k.kernels_of(self.module):
            name = kop.kernel_name()
            if isinstance(kop, k.SortOp):
                self._aicpu(kop, "kernel.sort (stable row sort) runs on the AI CPU")
                continue
            assert isinstance(kop, k.GenericOp)
            if 0 in kop.extents[:kop.parallel_count]:
                continue
            if 0 in kop.extents:
                if kop.init_value is not None:  # reducing nothing: the output is the init
                    try:
                        self._vector(self._fill(kop), name, name, "vector")
                    except Unsupported as e:
                        self._scalar_or_aicpu(self._fill(kop), str(e))
                continue
            try:
                mm = matmul_operands(kop)
                if mm is not None and self._cube(kop, name, *mm):
                    continue
                self._vector(kop, name, name, "vector")
            except Unsupported as e:
                self._scalar_or_aicpu(kop, str(e))
        insert_sync(self.out)
        if self.verify:
            self.out.verify()
        return NpuProgram(self.out, self.launches, self.temps, self.constants)

    def _fill(self, op: k.GenericOp) -> k.GenericOp:
        """``out = init`` over the parallel dims of a reduction whose reduction dims are empty."""
        npar = op.parallel_count
        dt = self.bufs[op.output_name][0]
        init = float(op.init_value)  # type: ignore[arg-type]
        kind = dtypes.dtype(dt).kind
        if kind == "bool":  # max of nothing is False, min of nothing True
            init = float(init > 0)
        elif kind != "float":
            info = np.iinfo(dtypes.dtype(dt).numpy)
            init = float(min(max(init, info.min), info.max))
        body = Block()
        c = k.ConstOp.make(init, dt)
        body.add_op(c)
        body.add_op(k.YieldOp.create(operands=[c.result]))
        return k.GenericOp.make(op.kernel_name(), op.origin(), op.extents[:npar], npar, [],
                                (op.output_name, op.output_strides[:npar], op.output_offset),
                                "none", None, [], body)

    def _scalar_or_aicpu(self, kop: k.GenericOp, why: str) -> None:
        """What the vector unit cannot run: the scalar unit when it is small and integer
        (``passes/lower_npu_scalar.py``), else the AI CPU with both reasons."""
        name = kop.kernel_name()
        try:
            kern = ScalarKernel(kop, name, {**self.bufs, **self.temps}, self.soc).build()
        except ScalarUnsupported as e:
            self._aicpu(kop, f"{why}; scalar unit: {e}")
            return
        self.out.body.block.add_op(kern)
        self.launches.append(Launch(name, "aiv", name, kern.block_dim.value.data,
                                    {n: n for n in kern.names}, "scalar"))

    def _aicpu(self, kop: k.KernelOp, reason: str) -> None:
        if isinstance(kop, k.SortOp):
            used = [kop.input.data, kop.values.data, kop.indices.data]
        else:
            assert isinstance(kop, k.GenericOp)
            used = [*kop.input_names, kop.output_name]
        name = kop.kernel_name()
        self.launches.append(Launch(name, "aicpu", name, 1, {b: b for b in dict.fromkeys(used)},
                                    "aicpu", reason))

    def _pack(self, op: k.GenericOp) -> npu.KernelOp | None:
        """The pack's AIV kernel, or None when its source is a weight, packed here instead."""
        src = op.input_names[0]
        binding = self.bindings.get(src)
        if binding is None or self.weights is None or binding not in self.weights:
            return _VectorKernel(op, op.kernel_name(), {**self.bufs, **self.temps},
                                 self.soc).build()
        w = np.ascontiguousarray(self.weights[binding]).reshape(-1)
        item = w.itemsize
        view = as_strided(w[op.input_offset(0):], shape=op.extents,
                          strides=[st * item for st in op.input_strides(0)], writeable=False)
        dt = self.temps[op.output_name][0]
        npdt = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16,
                "float32": np.float32}[dt]
        packed = np.ascontiguousarray(view.astype(npdt)).reshape(-1)
        bad = np.isfinite(w) & ~np.isfinite(w.astype(npdt))
        if bad.any():
            kernel = op.kernel_name().rsplit("_pack_", 1)[0]
            raise LoweringError(
                f"ascend: weight '{binding}' (a cube operand of {kernel}) has "
                f"{int(bad.sum())} value(s) up to {float(np.abs(w[bad]).max()):.3g} beyond the "
                f"{dt} range; compile with --precision bf16 (fp32 range) or --precision fp32")
        self.constants[op.output_name] = packed
        return None

    def _add_vector(self, kern: npu.KernelOp, origin: str, role: str) -> None:
        self.out.body.block.add_op(kern)
        self.launches.append(Launch(kern.sym_name.data, "aiv", origin,
                                    kern.block_dim.value.data, {n: n for n in kern.names}, role))

    def _vector(self, op: k.GenericOp, name: str, origin: str, role: str) -> None:
        kern = _VectorKernel(op, name, {**self.bufs, **self.temps}, self.soc).build()
        self.out.body.block.add_op(kern)
        self.launches.append(Launch(name, "aiv", origin, kern.block_dim.value.data,
                                    {n: n for n in kern.names}, role))

    def _cube(self, op: k.GenericOp, name: str, ia: int, ib: int) -> bool:
        """Pack A and B, GEMM on the AIC, write or unpack C; False if not cube-able."""
        names = op.input_names
        dta, dtb, dto = (self.bufs[n][0] for n in (names[ia], names[ib], op.output_name))
        if any(dtypes.dtype(d).kind != "float" or d == "float64" for d in (dta, dtb)) or \
                dto not in ("float32", "float16", "bfloat16"):
            return False
        ext = op.extents
        npar = op.parallel_count
        sa, sb, so = op.input_strides(ia), op.input_strides(ib), op.output_strides
        batch, ms, ns = [], [], []
        for d in range(npar):
            (ns if sa[d] == 0 and sb[d] != 0 else ms if sb[d] == 0 and sa[d] != 0
             else batch).append(d)
        ks = list(range(npar, len(ext)))

        def size(ds: list[int]) -> int:
            n = 1
            for d in ds:
                n *= ext[d]
            return n

        def direct_order(do: list[int]) -> bool:
            return (op.output_offset == 0 and self.bufs[op.output_name][1] == size(do)
                    and all(so[d] == c for d, c in zip(do, _contiguous([ext[d] for d in do]),
                                                       strict=True) if ext[d] > 1))

        if not direct_order(batch + ms + ns) and direct_order(batch + ns + ms):
            # C^T = B^T A^T: the operand that moves along the output's inner dims is B, so FIX
            # writes the output in place (a convolution's NCHW output: weights are A)
            ia, ib, sa, sb, ms, ns = ib, ia, sb, sa, ns, ms
            dta, dtb = dtb, dta
        B, M, N, K = size(batch), size(ms), size(ns), size(ks)
        if B * M * N * K < CUBE_MIN_MACS:
            return False  # smaller than one cube step: the vector unit, in fp32, is cheaper
        cdt = self.cube_dt
        ta, tb = f"{name}__a", f"{name}__b"
        self.temps[ta] = (cdt, B * M * K)
        self.temps[tb] = (cdt, B * K * N)
        da, db = batch + ms + ks, batch + ks + ns
        pa = _identity_generic(f"{name}_pack_a", [ext[d] for d in da],
                               (names[ia], dta, [sa[d] for d in da], op.input_offset(ia)),
                               (ta, _contiguous([ext[d] for d in da]), 0))
        pb = _identity_generic(f"{name}_pack_b", [ext[d] for d in db],
                               (names[ib], dtb, [sb[d] for d in db], op.input_offset(ib)),
                               (tb, _contiguous([ext[d] for d in db]), 0))
        do = batch + ms + ns
        direct = direct_order(do)
        tc = op.output_name if direct else f"{name}__c"
        out_dt = dto if direct else "float32"
        if not direct:
            self.temps[tc] = ("float32", B * M * N)
        # pack both before adding either, so a refused pack leaves no launch behind
        packs = [self._pack(p) for p in (pa, pb)]
        for kern in packs:
            if kern is not None:
                self._add_vector(kern, name, "pack")
        spec = GemmSpec(m=M, n=N, k=K, batch=B, dtype=cdt, out_dtype=out_dt)
        gemm = build_gemm_kernel(spec, f"{name}_gemm", self.soc)
        self.out.body.block.add_op(gemm)
        self.launches.append(Launch(f"{name}_gemm", "aic", name, gemm.block_dim.value.data,
                                    {"a": ta, "b": tb, "c": tc}, "gemm"))
        if not direct:
            up = _identity_generic(f"{name}_unpack", [ext[d] for d in do],
                                   (tc, "float32", _contiguous([ext[d] for d in do]), 0),
                                   (op.output_name, [so[d] for d in do], op.output_offset))
            self._vector(up, up.kernel_name(), name, "unpack")
        return True


def lower_kernel_module(module: Any, soc: str = "910b", precision: str = "fp16",
                        verify: bool = False, weights: Mapping[str, np.ndarray] | None = None
                        ) -> NpuProgram:
    """Planned kernel module -> npu program + launch sequence (module docstring); ``verify``
    runs the npu dialect's verifiers over the result (tests do; it costs seconds on an
    encoder); with ``weights`` (binding -> array), cube operands that are weights are packed
    to the cube dtype here instead of by a launch."""
    try:
        s = get_soc(soc)
    except KeyError as e:
        raise LoweringError(f"ascend: {e.args[0]}") from None
    return _Lowering(module, s, precision, verify, weights).run()
