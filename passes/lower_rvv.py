"""Kernel IR -> ``rvv`` dialect: one C-callable LP64D function per kernel.

Calling convention of every kernel: ``void kN(void **bufs)``: ``a0`` points at a table of base
addresses, one 8-byte entry per buffer in the module's declaration order (the manifest's buffer
table order), so the driver and the simulator runtime lay buffers out however they like.

``kernel.generic`` becomes a strip-mined loop nest (VLEN-agnostic: ``vsetvli`` picks vl at run
time; ``vlen`` only tunes the GEMM microkernel's blocking). After dropping unit dims and merging dims
that are contiguous for every operand, one dim is vectorised:

- mode P (a parallel dim, preferring one where the output is unit-stride): the other dims are
  scalar loops; reduction dims run inside the strip with a vector accumulator. Unit strides load
  with ``vle``, other strides with ``vlse``, stride 0 with a scalar load + splat, indirect terms
  with ``vluxei64`` (offsets computed in 64-bit lanes, negative indices wrapped). A scatter with a
  combiner runs with vl = 1 (serial, so duplicate indices accumulate in order).
- mode R (no useful parallel dim): the innermost reduction dim is vectorised and every strip is
  folded into element 0 of an accumulator with an ordered reduction (``vfredosum``/``vredsum``/
  ``vfredmax``...).
- matmul-shaped kernels (a float sum of products, B moving along the vector dim, A constant
  along it: matmuls and convolutions) use the register-blocked ``vfmacc.vf`` microkernel of
  ``passes/rvv_gemm.py``.

Mixed dtypes in a body keep vl and switch SEW with LMUL scaled so SEW/LMUL stays constant; LMUL
of the widest type is the largest of 8/4/2/1 for which the body's values fit the 31 allocatable
vector registers (a linear scan over the body DAG, scheduled Sethi-Ullman style so few values
are live; slots load at first use; groups aligned to LMUL). When the operands and loops need
more scalar registers than the pool holds, the last operands keep no pointer register and their
addresses are rebuilt from the loop counters at each access. Transcendentals come from
``passes/rvv_polynomials.py`` (no libm). ``kernel.sort`` is scalar insertion code.
float16/bfloat16 are 16-bit storage computed in float32 (``passes/rvv_half.py``: integer-op
conversions, no Zvfh). A reduction over an empty set writes the init value and reads nothing.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from xdsl.ir import Block, Operation, SSAValue

from portc.compiler.errors import LoweringError
from portc.dialects import dtypes, rvv
from portc.dialects import kernel as k

#: scalar registers the loop nest may hold pointers/counters in (s-registers are saved)
X_POOL = ("a1", "a2", "a3", "a4", "a5", "a6", "a7", "t3", "t4", "t5", "t6", "s1", "s2", "s3",
          "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "s0")
#: scratch scalar registers (never live across instructions of different helpers)
XS = ("t0", "t1", "t2")
F_SCRATCH = tuple(f"ft{i}" for i in range(11)) + tuple(f"fa{i}" for i in range(8))
#: callee-saved float registers that hold a kernel's constants for its whole run
F_POOL = tuple(f"fs{i}" for i in range(12))
SPLATS = ("vmv.v.v", "vmv.v.i", "vmv.v.x", "vfmv.v.f")
SUPPORTED_BITS = {"float32": 32, "float64": 64, "int8": 8, "int16": 16, "int32": 32,
                  "int64": 64, "uint8": 8, "uint16": 16, "uint32": 32, "uint64": 64, "bool": 8,
                  "float16": 16, "bfloat16": 16}
#: 16-bit floats: raw bits in registers, float32 compute (``passes/rvv_half.py``)
HALF = ("float16", "bfloat16")


class RvvLoweringError(LoweringError):
    """A kernel the rvv backend cannot lower (names the kernel and its graph op)."""


class OutOfRegisters(Exception):
    """Internal: the body does not fit at this LMUL; the caller retries with a smaller one."""


def _kind(dt: str) -> str:
    return dtypes.dtype(dt).kind


def lmul_text(lmul: float) -> str:
    return f"m{int(lmul)}" if lmul >= 1 else f"mf{int(round(1 / lmul))}"


def float_bits(value: float, dt: str) -> int:
    if dt == "float32":
        return struct.unpack("<I", struct.pack("<f", value))[0]
    return struct.unpack("<Q", struct.pack("<d", value))[0]


def acc_dtype(dt: str) -> str:
    """The dtype a reduction into ``dt`` accumulates in."""
    return "float32" if dt in HALF else dt


def _signed(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


# ------------------------------------------------------------------------------ code buffer
class Code:
    """An instruction list being built for one function, with fresh labels."""

    def __init__(self, fname: str) -> None:
        self.fname = fname
        self.ops: list[Operation] = []
        self._n = 0

    def __call__(self, mnemonic: str, *operands: str | int, vm: str = "",
                 group: int = 1) -> None:
        if mnemonic in SPLATS and not vm:
            self._splat(mnemonic, operands, group)
            return
        if ".rtz." in mnemonic:
            # qemu 7.2 aborts (decode_save_opc assertion) on an rtz conversion that is the
            # first vector fp instruction of a translation block; a sign-injection no-op on
            # the destination (overwritten next) before it avoids that
            vd = str(operands[0])
            g = max(1, group // 2) if mnemonic.startswith("vfwcvt") else group
            self.ops.append(rvv.OPS["vfsgnj.vv"].make(vd, vd, vd, group=g))
        self.ops.append(rvv.OPS[mnemonic].make(*operands, vm=vm, group=group))

    def _splat(self, mnemonic: str, operands: tuple[str | int, ...], group: int) -> None:
        """Unmasked copies are ``vor.vv vd, vs, vs`` (one vector-vector form for every
        copy); splats are emitted as they are."""
        vd, src = operands
        mk = rvv.OPS
        if mnemonic == "vmv.v.v":
            self.ops.append(mk["vor.vv"].make(vd, src, src, group=group))
        else:
            self.ops.append(mk[mnemonic].make(vd, src, group=group))

    def label(self) -> str:
        self._n += 1
        return f".L{self.fname}_{self._n}"

    def place(self, label: str) -> None:
        self.ops.append(rvv.LabelOp.make(label))

    def comment(self, text: str) -> None:
        self.ops.append(rvv.CommentOp.make(text))

    def add_imm(self, rd: str, rs: str, imm: int, scratch: str = "t2") -> None:
        """rd = rs + imm for any 64-bit imm."""
        if imm == 0:
            if rd != rs:
                self("mv", rd, rs)
        elif -2048 <= imm < 2048:
            self("addi", rd, rs, imm)
        else:
            self("li", scratch, imm)
            self("add", rd, rs, scratch)

    def load_buffer_address(self, rd: str, table_index: int, byte_offset: int) -> None:
        """rd = entry ``table_index`` of the a0 buffer table + ``byte_offset`` (every kernel
        is ``void kN(void **bufs)``; a slot's offset inside its buffer is added once)."""
        if table_index * 8 < 2048:
            self("ld", rd, table_index * 8, "a0")
        else:
            self.add_imm("t0", "a0", table_index * 8)
            self("ld", rd, 0, "t0")
        self.add_imm(rd, rd, byte_offset)

    def wrap_in_frame(self, body_start: int, xregs: Sequence[str],
                      fregs: Sequence[str] = ()) -> None:
        """Save the callee-saved ``xregs``/``fregs`` the body used in a 16-byte aligned stack
        frame: the saves go in at ``body_start`` and the restores at the end (LP64D keeps
        s0-s11 and fs0-fs11 across calls); what the caller put at ``body_start`` before
        (pooled constants) runs after the saves."""
        frame = ((len(xregs) + len(fregs)) * 8 + 15) // 16 * 16
        pro: list[Operation] = []
        if frame:
            pro.append(rvv.OPS["addi"].make("sp", "sp", -frame))
            for i, r in enumerate(xregs):
                pro.append(rvv.OPS["sd"].make(r, i * 8, "sp"))
                self.ops.append(rvv.OPS["ld"].make(r, i * 8, "sp"))
            for i, r in enumerate(fregs, start=len(xregs)):
                pro.append(rvv.OPS["fsd"].make(r, i * 8, "sp"))
                self.ops.append(rvv.OPS["fld"].make(r, i * 8, "sp"))
            self.ops.append(rvv.OPS["addi"].make("sp", "sp", frame))
        self.ops[body_start:body_start] = pro

    def mul_imm(self, rd: str, rs: str, imm: int, scratch: str = "t2") -> None:
        """rd = rs * imm (shift when imm is a power of two)."""
        if imm > 0 and imm & (imm - 1) == 0:
            sh = imm.bit_length() - 1
            if sh:
                self("slli", rd, rs, sh)
            elif rd != rs:
                self("mv", rd, rs)
        else:
            self("li", scratch, imm)
            self("mul", rd, rs, scratch)


# ------------------------------------------------------------------------------ registers
class VRegs:
    """Vector register groups v1..v31 (v0 is the mask register), aligned to their size."""

    def __init__(self) -> None:
        self.free = [True] * 32
        self.free[0] = False

    def alloc(self, n: int) -> int:
        for r in range(n, 32, n) if n > 1 else range(1, 32):
            if all(self.free[r:r + n]) and r + n <= 32:
                for i in range(r, r + n):
                    self.free[i] = False
                return r
        raise OutOfRegisters()

    def release(self, r: int, n: int) -> None:
        for i in range(r, r + n):
            self.free[i] = True


@dataclass
class V:
    """A vector value: register group ``reg`` of ``n`` registers holding ``dtype`` lanes."""

    reg: int
    dtype: str
    n: int
    owned: bool = True

    @property
    def name(self) -> str:
        return f"v{self.reg}"


# ------------------------------------------------------------------------------ kernel shape
@dataclass
class Slot:
    """One operand of a generic: buffer, element type, per-dim strides, offset, indirects."""

    buf: str
    dtype: str
    strides: list[int]
    offset: int
    #: (index slot, stride, bound) terms adding stride * wrap(index) to the address
    indirect: list[tuple[int, int, int]] = field(default_factory=list)
    reg: str = ""
    #: no register of its own: the address is rebuilt from the loop counters at each access
    spilled: bool = False

    @property
    def esize(self) -> int:
        return SUPPORTED_BITS[self.dtype] // 8


@dataclass
class Shape:
    extents: list[int]
    is_red: list[bool]
    #: original dim index of each kept dim (None for merged ones, which no index op reads)
    orig: list[int | None]
    ins: list[Slot]
    out: Slot


def simplify(op: k.GenericOp, buffers: dict[str, k.BufferOp]) -> Shape:
    """Drop unit dims, merge dims contiguous for every operand (index ops pin their dims)."""
    nd = len(op.extents)
    names = op.input_names
    indexed = {b.dim.value.data for b in op.body.block.ops if isinstance(b, k.IndexOp)}
    ins = [Slot(n, buffers[n].dtype.data, list(op.input_strides(i)), op.input_offset(i))
           for i, n in enumerate(names)]
    out = Slot(op.output_name, buffers[op.output_name].dtype.data, list(op.output_strides),
               op.output_offset)
    for slot, islot, stride, bound in op.indirect_terms:
        (out if slot == -1 else ins[slot]).indirect.append((islot, stride, bound))
    slots = [*ins, out]
    keep = [d for d in range(nd) if op.extents[d] != 1]
    extents = [op.extents[d] for d in keep]
    is_red = [d >= op.parallel_count for d in keep]
    orig: list[int | None] = list(keep)
    for s in slots:
        s.strides = [s.strides[d] for d in keep]
    d = len(extents) - 2
    while d >= 0:
        can = (is_red[d] == is_red[d + 1] and orig[d] not in indexed and orig[d + 1] not in
               indexed and all(s.strides[d] == s.strides[d + 1] * extents[d + 1] for s in slots))
        if can:
            extents[d] *= extents[d + 1]
            for s in slots:
                s.strides[d] = s.strides[d + 1]
                del s.strides[d + 1]
            del extents[d + 1], is_red[d + 1], orig[d + 1]
            orig[d] = None
        d -= 1
    return Shape(extents, is_red, orig, ins, out)


# ------------------------------------------------------------------------------ scheduling
def schedule(block: Block) -> list[Operation]:
    """The body's ops in an order that keeps few vector values live (Sethi-Ullman on the
    DAG): each op's operands are computed deepest-first right before it, so constants and
    masks are made next to their use instead of all up front. Body ops are pure, so any
    topological order computes the same values; unused ops are dropped."""
    term = block.last_op
    assert isinstance(term, k.YieldOp)
    own = {op for op in block.ops if op is not term}
    need: dict[Operation, int] = {}

    def producer(v: SSAValue) -> Operation | None:
        o = v.owner
        return o if isinstance(o, Operation) and o in own else None

    for op in block.ops:  # definition order is topological
        if op is term:
            continue
        subs = sorted((need[p] for v in dict.fromkeys(op.operands)
                       if (p := producer(v)) is not None), reverse=True)
        need[op] = max([1] + [n + i for i, n in enumerate(subs)])
    order: list[Operation] = []
    done: set[Operation] = set()
    root = producer(term.operands[0])
    stack: list[tuple[Operation, bool]] = [(root, False)] if root is not None else []
    while stack:
        op, expanded = stack.pop()
        if op in done:
            continue
        if expanded:
            done.add(op)
            order.append(op)
            continue
        stack.append((op, True))
        subs = [p for v in dict.fromkeys(op.operands) if (p := producer(v)) is not None]
        subs.sort(key=lambda p: need[p], reverse=True)
        for p in reversed(subs):  # the deepest one is popped (computed) first
            if p not in done:
                stack.append((p, False))
    return [*order, term]


# ------------------------------------------------------------------------------ lowering
class GenericLowering:
    """Emits one ``kernel.generic`` at a given LMUL for its widest element type."""

    def __init__(self, op: k.GenericOp, buf_index: dict[str, int],
                 buffers: dict[str, k.BufferOp], lmul_wide: int) -> None:
        self.op = op
        self.where = f"kernel {op.kernel_name()} (from {op.origin()})"
        self.buf_index = buf_index
        self.shape = simplify(op, buffers)
        sh = self.shape
        #: a reduction over an empty set: the output is the init value, nothing is read
        self.empty_red = any(r and e == 0 for r, e in zip(sh.is_red, sh.extents, strict=True))
        if self.empty_red:
            keep = [d for d in range(len(sh.extents)) if not sh.is_red[d]]
            for sl in [*sh.ins, sh.out]:
                sl.strides = [sl.strides[d] for d in keep]
            sh.extents = [sh.extents[d] for d in keep]
            sh.is_red = [False] * len(keep)
            sh.orig = [sh.orig[d] for d in keep]
        self.c = Code(op.kernel_name())
        self.vr = VRegs()
        self.lw = lmul_wide
        self.cur_sew = 0
        self.fs = 0
        self.xpool = list(X_POOL)
        self.used_s: list[str] = []
        #: (bits, dtype) -> callee-saved float register holding that constant
        self.fpool: dict[tuple[int, str], str] = {}
        body_types = [dtypes.from_ir(v.type).name for b in op.body.block.ops for v in b.results]
        all_types = {s.dtype for s in [*self.shape.ins, self.shape.out]} | set(body_types)
        for t in all_types:
            if t not in SUPPORTED_BITS:
                raise RvvLoweringError(f"{self.where}: dtype {t} is not supported by the rvv "
                                       "target; cast it to a supported type in the model")
        widths = {SUPPORTED_BITS[t] for t in all_types}
        if all_types & set(HALF):
            widths.add(32)  # half values compute in float32
            for b in op.body.block.ops:
                if isinstance(b, k.CastOp) and dtypes.from_ir(b.result.type).name == \
                        "bfloat16" and _kind(dtypes.from_ir(b.x.type).name) != "float" and \
                        SUPPORTED_BITS[dtypes.from_ir(b.x.type).name] >= 32:
                    widths.add(64)  # wide integers reach bfloat16 through float64
        wide = max(widths)
        if any(b for b in op.body.block.ops if isinstance(b, k.IndexOp)) or \
                op.indirect_terms:
            wide = 64
        self.wide = wide
        self.counters: dict[int, str] = {}
        #: slot -> its value in the strip being emitted (indirect stores read index slots)
        self.loaded: dict[int, V] = {}
        self.vdim: int | None = None
        self.rem = ""
        self.vl = ""

    # -- helpers -----------------------------------------------------------------------
    def xreg(self) -> str:
        if not self.xpool:
            raise RvvLoweringError(f"{self.where}: too many operands and loops for the scalar "
                                   "registers")
        r = self.xpool.pop(0)
        if r.startswith("s") and r not in self.used_s:
            self.used_s.append(r)
        return r

    def freg(self) -> str:
        r = F_SCRATCH[self.fs % len(F_SCRATCH)]
        self.fs += 1
        return r

    def lmul(self, dt: str) -> float:
        return self.lw * SUPPORTED_BITS[dt] / self.wide

    def regs_of(self, dt: str) -> int:
        return max(1, int(self.lmul(dt)))

    def vtype(self, dt: str, tail: str = "ta") -> str:
        return f"e{SUPPORTED_BITS[dt]}, {lmul_text(self.lmul(dt))}, {tail}, ma"

    def sew(self, dt: str) -> None:
        """Switch SEW (keeping vl and SEW/LMUL) when the next instruction needs ``dt``."""
        bits = SUPPORTED_BITS[dt]
        if bits != self.cur_sew:
            self.c("vsetvli", "zero", "zero", self.vtype(dt))
            self.cur_sew = bits

    def new(self, dt: str) -> V:
        n = self.regs_of(dt)
        return V(self.vr.alloc(n), dt, n)

    def free(self, v: V) -> None:
        if v.owned:
            self.vr.release(v.reg, v.n)
            v.owned = False

    def g(self, v: V) -> int:
        return v.n

    def fconst(self, value: float, dt: str) -> str:
        """A float register holding ``value``: the first ``len(F_POOL)`` distinct constants of
        a kernel live in callee-saved registers set once at entry (polynomials reuse theirs
        every strip); later ones are built where they are used."""
        bits = float_bits(value, dt)
        key = (bits, dt)
        if key in self.fpool:
            return self.fpool[key]
        if len(self.fpool) < len(F_POOL):
            reg = F_POOL[len(self.fpool)]
            self.fpool[key] = reg
            return reg
        f = self.freg()
        self._fmaterialise(self.c.ops, f, bits, dt)
        return f

    def _fmaterialise(self, ops: list[Operation], f: str, bits: int, dt: str) -> None:
        mv = "fmv.w.x" if dt == "float32" else "fmv.d.x"
        if bits == 0:
            ops.append(rvv.OPS[mv].make(f, "zero"))
        else:
            ops.append(rvv.OPS["li"].make("t0", _signed(bits, 64) if dt == "float64" else bits))
            ops.append(rvv.OPS[mv].make(f, "t0"))

    def splat(self, value: float | int, dt: str, tag: str | None = None) -> V:
        """A fresh group with every lane ``value`` of ``dt`` (tagged ``tag``: raw half bits
        are splatted as uint16)."""
        v = self.new(dt)
        self.sew(dt)
        if tag is not None:
            v.dtype = tag
        if _kind(dt) == "float":
            self.c("vfmv.v.f", v.name, self.fconst(float(value), dt), group=v.n)
        elif -16 <= int(value) < 16:
            self.c("vmv.v.i", v.name, int(value), group=v.n)
        else:
            self.c("li", "t0", _signed(int(value), 64))
            self.c("vmv.v.x", v.name, "t0", group=v.n)
        return v

    # -- planning ----------------------------------------------------------------------
    def plan(self) -> tuple[str, int | None, bool]:
        """(mode, vector dim, serial)."""
        sh = self.shape
        out = sh.out
        comb = self.op.combine
        scatter_comb = bool(out.indirect) and comb != "none"
        par = [d for d in range(len(sh.extents)) if not sh.is_red[d]]
        red = [d for d in range(len(sh.extents)) if sh.is_red[d]]
        if scatter_comb:
            if self.op.init_value is not None:
                raise RvvLoweringError(f"{self.where}: a scatter with an initial value is not "
                                       "supported")
            return "P", (par[-1] if par else None), True
        best = None
        if par:
            unit = [d for d in par if out.strides[d] == 1]
            best = unit[-1] if unit else par[-1]
        if red and comb in ("sum", "max", "min") and (
                best is None or (sh.extents[best] < 4 and
                                 math.prod(sh.extents[d] for d in red) >= 16)):
            # vectorise the reduction dim where most inputs are unit-stride
            def score(d: int) -> tuple[int, int]:
                return (sum(s.strides[d] == 1 for s in sh.ins), d)
            return "R", max(red, key=score), False
        return "P", best, False

    # -- function skeleton ---------------------------------------------------------------
    def lower(self) -> rvv.FuncOp:
        mode, vdim, serial = self.plan()
        self.vdim = vdim
        self.mode = mode
        self.serial = serial
        sh = self.shape
        c = self.c
        c.comment(f"{self.op.kernel_name()}: {self.op.origin()} dims={list(self.op.extents)} "
                  f"-> {sh.extents} red={sh.is_red} mode={mode} vdim={vdim} "
                  f"LMUL(e{self.wide})={self.lw}{' serial' if serial else ''}")
        body_start = len(c.ops)
        if any(e == 0 for e in sh.extents) or (self.empty_red and self.op.init_value is None):
            c.comment("nothing to compute: an empty iteration space (or an empty reduction "
                      "into the output as it is)")
            c("ret")
            return rvv.FuncOp.make(self.op.kernel_name(), c.ops, schedule="empty")
        slots = [*sh.ins, sh.out]
        # scalar registers: one pointer per slot, rem/vl, a counter per loop, the NaN flag;
        # when they do not fit, the last slots are rebuilt at each access from the counters
        need = len(slots) + 2 + len(sh.extents) + 1
        spill = 0 if need <= len(self.xpool) else need - len(self.xpool) + 1
        if spill:
            self.remat = self.xreg()
        for i, s in enumerate(slots):
            if i >= len(slots) - spill - 1 and i != len(slots) - 1 and spill:
                s.spilled = True
                s.reg = self.remat
                continue
            s.reg = self.xreg()
            self.base_address(s, s.reg)
        if vdim is not None:
            self.rem = self.xreg()
            self.vl = self.xreg()
        order = [d for d in range(len(sh.extents)) if d != vdim]
        if mode == "P":
            outer = [d for d in order if not sh.is_red[d] or serial]
            inner = [d for d in order if sh.is_red[d] and not serial]
            self.loops(outer, lambda: self.p_strip(inner))
        else:
            outer = [d for d in order if not sh.is_red[d]]
            inner = [d for d in order if sh.is_red[d]]
            self.loops(outer, lambda: self.r_point(inner))
        # prologue/epilogue for callee-saved registers, then the pooled float constants
        consts: list[Operation] = []
        for (bits, dt), r in self.fpool.items():
            self._fmaterialise(consts, r, bits, dt)
        c.ops[body_start:body_start] = consts
        c.wrap_in_frame(body_start, self.used_s, list(self.fpool.values()))
        c("ret")
        spilled = sum(sl.spilled for sl in [*sh.ins, sh.out])
        sched = f"{'vector reduction' if mode == 'R' else 'strip-mined'} LMUL {self.lw}, " \
                f"e{self.wide}{', serial' if serial else ''}" \
                f"{f', {spilled} operand addresses rebuilt per access' if spilled else ''}"
        return rvv.FuncOp.make(self.op.kernel_name(), c.ops, schedule=sched)

    def base_address(self, s: Slot, reg: str) -> None:
        """reg = the slot's buffer base + its offset (the a0 table entry)."""
        self.c.load_buffer_address(reg, self.buf_index[s.buf], s.offset * s.esize)

    def ptr(self, s: Slot) -> str:
        """The register holding the slot's current address (rebuilt for a spilled slot from
        the live loop counters: index = extent - counter, and extent - rem on the vector
        dim)."""
        if not s.spilled:
            return s.reg
        c = self.c
        reg = s.reg
        self.base_address(s, reg)
        terms = [(d, cnt) for d, cnt in self.counters.items()]
        if self.vdim is not None and self.rem:
            terms.append((self.vdim, self.rem))
        for d, cnt in terms:
            st = s.strides[d] * s.esize
            if st:
                c("li", "t1", self.shape.extents[d])
                c("sub", "t1", "t1", cnt)
                c.mul_imm("t1", "t1", st)
                c("add", reg, reg, "t1")
        return reg

    def loops(self, dims: Sequence[int], inner: Callable[[], None]) -> None:
        """Scalar counted loops over ``dims`` (outermost first), advancing every pointer."""
        if not dims:
            inner()
            return
        d, rest = dims[0], dims[1:]
        sh = self.shape
        cnt = self.xreg()
        self.counters[d] = cnt
        c = self.c
        c("li", cnt, sh.extents[d])
        top = c.label()
        c.place(top)
        self.loops(rest, inner)
        for s in [*sh.ins, sh.out]:
            if s.strides[d] and not s.spilled:
                c.add_imm(s.reg, s.reg, s.strides[d] * s.esize)
        c("addi", cnt, cnt, -1)
        c("bnez", cnt, top)
        for s in [*sh.ins, sh.out]:
            if s.strides[d] and not s.spilled:
                c.add_imm(s.reg, s.reg, -s.strides[d] * s.esize * sh.extents[d])
        self.xpool.insert(0, cnt)
        del self.counters[d]

    def strip_head(self, top: str) -> None:
        c = self.c
        c.place(top)
        if self.serial:
            c("vsetivli", self.vl, 1, self.vtype(self._wide_dt()))
        else:
            c("vsetvli", self.vl, self.rem, self.vtype(self._wide_dt()))
        self.cur_sew = self.wide

    def _wide_dt(self) -> str:
        return {8: "uint8", 16: "int16", 32: "int32", 64: "int64"}[self.wide]

    def strip_advance(self, top: str) -> None:
        """Pointers move by vl elements along the vector dim; loop while elements remain."""
        c = self.c
        d = self.vdim
        assert d is not None
        for s in [*self.shape.ins, self.shape.out]:
            if s.strides[d] and not s.spilled:
                c.mul_imm("t1", self.vl, s.strides[d] * s.esize)
                c("add", s.reg, s.reg, "t1")
        c("sub", self.rem, self.rem, self.vl)
        c("bnez", self.rem, top)
        ext = self.shape.extents[d]
        for s in [*self.shape.ins, self.shape.out]:
            if s.strides[d] and not s.spilled:
                c.add_imm(s.reg, s.reg, -s.strides[d] * s.esize * ext)

    # -- mode P ----------------------------------------------------------------------------
    def p_strip(self, inner: list[int]) -> None:
        sh = self.shape
        op = self.op
        c = self.c
        comb = op.combine
        out_dt = acc_dtype(sh.out.dtype)
        if self.vdim is None:  # every dim is a scalar loop: one lane
            self.rem = self.rem or self.xreg()
            self.vl = self.vl or self.xreg()
        c("li", self.rem, sh.extents[self.vdim] if self.vdim is not None else 1)
        top = c.label()
        self.strip_head(top)
        if comb != "none" and inner:
            acc = self.acc_init(out_dt)

            def step() -> None:
                val = self.body()
                self.combine(acc, val)
                self.free(val)
            self.loops(inner, step)
            self.store(acc)
            self.free(acc)
        elif self.empty_red:
            acc = self.acc_init(out_dt)
            self.store(acc)
            self.free(acc)
        else:
            val = self.body()
            if comb != "none":
                acc = self.acc_init(out_dt)
                self.combine(acc, val)
                self.free(val)
                val = acc
            self.store(val)
            self.free(val)
        if self.vdim is None:
            self.c("addi", self.rem, self.rem, -1)
            self.c("bnez", self.rem, top)
        else:
            self.strip_advance(top)

    def acc_init(self, dt: str) -> V:
        init = self.op.init_value
        if init is not None:
            return self.splat(self._init_value(init, dt), dt)
        v = self.load_slot(self.shape.out, self.loaded)
        return self.to_acc(v)

    def to_acc(self, v: V) -> V:
        """Half values accumulate in float32 (one rounding at the store)."""
        if v.dtype not in HALF:
            return v
        from portc.passes import rvv_half

        w = rvv_half.widen(self, v)
        self.free(v)
        return w

    def _init_value(self, init: float, dt: str) -> float | int:
        kind = _kind(dt)
        if kind == "float":
            return init
        if kind == "bool":
            return int(init > 0)
        bits = SUPPORTED_BITS[dt]
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if kind == "int" else \
            (0, (1 << bits) - 1)
        if math.isinf(init):
            return lo if init < 0 else hi
        return int(min(max(init, lo), hi))

    def combine(self, acc: V, val: V) -> None:
        if val.dtype in HALF:
            from portc.passes import rvv_half

            w = rvv_half.widen(self, val)
            self.combine(acc, w)
            self.free(w)
            return
        comb = self.op.combine
        dt = acc.dtype
        kind = _kind(dt)
        self.sew(dt)
        if kind == "float":
            mn = {"sum": "vfadd.vv", "prod": "vfmul.vv", "max": "vfmax.vv",
                  "min": "vfmin.vv"}[comb]
            if comb in ("max", "min"):
                self.nan_binary(acc, acc, val, mn)
                return
        else:
            u = kind in ("uint", "bool")
            mn = {"sum": "vadd.vv", "prod": "vmul.vv", "max": "vmaxu.vv" if u else "vmax.vv",
                  "min": "vminu.vv" if u else "vmin.vv"}[comb]
        self.c(mn, acc.name, acc.name, val.name, group=acc.n)

    def nan_binary(self, dst: V, a: V, b: V, mn: str) -> None:
        """Float max/min that propagates NaN like numpy (vfmax returns the non-NaN one)."""
        c = self.c
        g = dst.n
        t = self.new(dst.dtype)
        c(mn, t.name, a.name, b.name, group=g)
        c("vmfne.vv", "v0", a.name, a.name, group=g)
        c("vmerge.vvm", t.name, t.name, a.name, vm="v0", group=g)
        c("vmfne.vv", "v0", b.name, b.name, group=g)
        c("vmerge.vvm", dst.name, t.name, b.name, vm="v0", group=g)
        self.free(t)

    # -- mode R ----------------------------------------------------------------------------
    RED = {("float", "sum"): "vfredosum.vs", ("float", "max"): "vfredmax.vs",
           ("float", "min"): "vfredmin.vs", ("int", "sum"): "vredsum.vs",
           ("int", "max"): "vredmax.vs", ("int", "min"): "vredmin.vs",
           ("uint", "sum"): "vredsum.vs", ("uint", "max"): "vredmaxu.vs",
           ("uint", "min"): "vredminu.vs", ("bool", "sum"): "vredsum.vs",
           ("bool", "max"): "vredmaxu.vs", ("bool", "min"): "vredminu.vs"}

    def r_point(self, inner: list[int]) -> None:
        sh = self.shape
        c = self.c
        out_dt = sh.out.dtype
        dt = acc_dtype(out_dt)
        is_half = out_dt in HALF
        # a half output accumulates in a float32 group (converted with the vector routines)
        acc = self.new(dt) if is_half else V(self.vr.alloc(1), dt, 1)
        bits = SUPPORTED_BITS[dt]
        c("vsetivli", "zero", 1, self.vtype(dt) if is_half else f"e{bits}, m1, ta, ma")
        self.cur_sew = bits if is_half else -1
        init = self.op.init_value
        if init is None and is_half:
            self.free(acc)
            h = self.new(out_dt)
            self.sew(out_dt)
            c("vle16.v", h.name, self.ptr(sh.out), group=h.n)
            acc = self.to_acc(h)
        elif init is not None:
            v = self._init_value(init, dt)
            if _kind(dt) == "float":
                c("vfmv.s.f", acc.name, self.fconst(float(v), dt))
            else:
                c("li", "t0", _signed(int(v), 64))
                c("vmv.s.x", acc.name, "t0")
        else:
            c(f"vle{bits}.v", acc.name, self.ptr(sh.out))
        red = self.RED[(_kind(dt), self.op.combine)]
        nanflag = _kind(dt) == "float" and self.op.combine in ("max", "min")
        if nanflag:
            self.nanflag = self.xreg()
            c("li", self.nanflag, 0)

        def strip() -> None:
            assert self.vdim is not None
            c("li", self.rem, sh.extents[self.vdim])
            top = c.label()
            self.strip_head(top)
            val = self.to_acc(self.body())
            self.sew(dt)
            if nanflag:
                self.red_nan(val)
            c(red, acc.name, val.name, acc.name, group=val.n)
            self.free(val)
            self.strip_advance(top)
        self.loops(inner, strip)
        c("vsetivli", "zero", 1, self.vtype(dt) if is_half else f"e{bits}, m1, ta, ma")
        self.cur_sew = bits if is_half else -1
        if nanflag:
            skip = c.label()
            c("beqz", self.nanflag, skip)
            c("vfmv.s.f", acc.name, self.fconst(math.nan, dt))
            c.place(skip)
            self.xpool.insert(0, self.nanflag)
        if is_half:
            from portc.passes import rvv_half

            r = rvv_half.narrow(self, acc, out_dt)
            self.sew(out_dt)
            c("vse16.v", r.name, self.ptr(sh.out), group=r.n)
            self.free(r)
            self.free(acc)
        else:
            c(f"vse{bits}.v", acc.name, self.ptr(sh.out))
            self.vr.release(acc.reg, 1)

    def red_nan(self, val: V) -> None:
        """vfredmax/vfredmin ignore NaN lanes; numpy propagates them: count NaN lanes into a
        flag that turns the result into NaN at the end."""
        c = self.c
        c("vmfne.vv", "v0", val.name, val.name, group=val.n)
        c("vcpop.m", "t0", "v0")
        c("or", self.nanflag, self.nanflag, "t0")

    # -- loads and stores ------------------------------------------------------------------
    def offsets(self, s: Slot, loaded: dict[int, V]) -> V | None:
        """64-bit byte offsets for an indirect slot (None when the slot is not indirect)."""
        if not s.indirect:
            return None
        d = self.vdim
        c = self.c
        off = self.new("int64")
        self.sew("int64")
        stride = s.strides[d] if d is not None else 0
        if stride:
            c("vid.v", off.name, group=off.n)
            c("li", "t1", stride * s.esize)
            c("vmul.vx", off.name, off.name, "t1", group=off.n)
        else:
            c("vmv.v.i", off.name, 0, group=off.n)
        for islot, istride, bound in s.indirect:
            iv = self.cast(loaded[islot], "int64", keep=True)
            self.sew("int64")
            t = self.new("int64")
            c("li", "t1", bound)
            c("vmslt.vx", "v0", iv.name, "zero", group=iv.n)
            c("vadd.vx", t.name, iv.name, "t1", group=t.n)
            c("vmerge.vvm", t.name, iv.name, t.name, vm="v0", group=t.n)
            c("li", "t1", istride * s.esize)
            c("vmul.vx", t.name, t.name, "t1", group=t.n)
            c("vadd.vv", off.name, off.name, t.name, group=off.n)
            self.free(t)
            if iv is not loaded[islot]:
                self.free(iv)
        return off

    def load_slot(self, s: Slot, loaded: dict[int, V]) -> V:
        c = self.c
        dt = s.dtype
        bits = SUPPORTED_BITS[dt]
        d = self.vdim
        stride = s.strides[d] if d is not None else 0
        off = self.offsets(s, loaded)
        v = self.new(dt)
        if off is not None:
            self.sew(dt)
            c("vluxei64.v", v.name, self.ptr(s), off.name, group=v.n)
            self.free(off)
            return v
        if stride == 0:
            self.sew(dt)
            if _kind(dt) == "float" and dt not in HALF:
                f = self.freg()
                c("flw" if bits == 32 else "fld", f, 0, self.ptr(s))
                c("vfmv.v.f", v.name, f, group=v.n)
            else:
                ld = {8: "lbu", 16: "lhu" if dt in HALF else "lh", 32: "lw", 64: "ld"}[bits]
                if ld not in rvv.OPS:
                    raise RvvLoweringError(f"{self.where}: no scalar load for {dt}")
                c(ld, "t0", 0, self.ptr(s))
                c("vmv.v.x", v.name, "t0", group=v.n)
            return v
        self.sew(dt)
        if stride == 1:
            c(f"vle{bits}.v", v.name, self.ptr(s), group=v.n)
        else:
            reg = self.ptr(s)
            c("li", "t1", stride * s.esize)
            c(f"vlse{bits}.v", v.name, reg, "t1", group=v.n)
        return v

    def store(self, v: V) -> None:
        s = self.shape.out
        c = self.c
        dt = s.dtype
        if dt in HALF and v.dtype == "float32":  # a float32 accumulator
            from portc.passes import rvv_half

            n = rvv_half.narrow(self, v, dt)
            self.store(n)
            self.free(n)
            return
        if v.dtype != dt:
            raise RvvLoweringError(f"{self.where}: body yields {v.dtype}, output is {dt}")
        bits = SUPPORTED_BITS[dt]
        d = self.vdim
        stride = s.strides[d] if d is not None else 0
        if s.indirect:
            off = self.offsets(s, self.loaded)
            assert off is not None
            self.sew(dt)
            c("vsoxei64.v", v.name, self.ptr(s), off.name, group=v.n)
            self.free(off)
            return
        self.sew(dt)
        if stride == 1 or d is None:
            c(f"vse{bits}.v", v.name, self.ptr(s), group=v.n)
        elif stride == 0:
            raise RvvLoweringError(f"{self.where}: the output does not move along the "
                                   "vectorised parallel dim")
        else:
            reg = self.ptr(s)
            c("li", "t1", stride * s.esize)
            c(f"vsse{bits}.v", v.name, reg, "t1", group=v.n)

    # -- the body --------------------------------------------------------------------------
    def body(self) -> V:
        """The body's value for the current strip. Slots load on first use (an indirect
        slot after its index slots) and every value is freed after its last use, so only
        what is live occupies vector registers."""
        from portc.passes import rvv_ops

        blk = self.op.body.block
        sh = self.shape
        args = list(blk.args)
        loaded: dict[int, V] = {}
        self.loaded = loaded
        vals: dict[SSAValue, V] = {}
        ops = schedule(blk)
        uses: dict[SSAValue, int] = {}
        for b in ops:
            for o in dict.fromkeys(b.operands):
                uses[o] = uses.get(o, 0) + 1
        for sl in sh.ins:
            for islot, _, _ in sl.indirect:
                uses[args[islot]] = uses.get(args[islot], 0) + 1
        yielded = blk.last_op.operands[0] if blk.last_op is not None else None
        pinned = {args[t[0]] for t in sh.out.indirect} | {yielded}

        def release(v: SSAValue) -> None:
            uses[v] -= 1
            if uses[v] == 0 and v not in pinned:
                self.free(vals[v])

        def slot(i: int) -> V:
            if i not in loaded:
                for islot, _, _ in sh.ins[i].indirect:
                    slot(islot)
                loaded[i] = vals[args[i]] = self.load_slot(sh.ins[i], loaded)
                for islot, _, _ in sh.ins[i].indirect:
                    release(args[islot])
            return loaded[i]

        def value(v: SSAValue) -> V:
            return vals[v] if v in vals else slot(args.index(v))

        for islot, _, _ in sh.out.indirect:
            slot(islot)
        result: V | None = None
        for b in ops:
            if isinstance(b, k.YieldOp):
                result = value(b.value)
                break
            vals[b.results[0]] = rvv_ops.lower_body_op(self, b, [value(o) for o in b.operands])
            for o in dict.fromkeys(b.operands):
                release(o)
        assert result is not None
        return result

    def index(self, dim: int) -> V:
        """The iteration index along original dim ``dim`` as int64 lanes."""
        sh = self.shape
        c = self.c
        v = self.new("int64")
        self.sew("int64")
        kept = [i for i, o in enumerate(sh.orig) if o == dim]
        if not kept:
            c("vmv.v.i", v.name, 0, group=v.n)
            return v
        d = kept[0]
        ext = sh.extents[d]
        if d == self.vdim:
            c("vid.v", v.name, group=v.n)
            if not self.serial:
                c("li", "t1", ext)
                c("sub", "t1", "t1", self.rem)
                c("vadd.vx", v.name, v.name, "t1", group=v.n)
            else:
                c("li", "t1", ext)
                c("sub", "t1", "t1", self.rem)
                c("vadd.vx", v.name, v.name, "t1", group=v.n)
            return v
        cnt = self.counters[d]
        c("li", "t1", ext)
        c("sub", "t1", "t1", cnt)
        c("vmv.v.x", v.name, "t1", group=v.n)
        return v

    def cast(self, v: V, to: str, keep: bool = False) -> V:
        from portc.passes import rvv_ops

        return rvv_ops.cast(self, v, to, keep)


def lower_generic(op: k.GenericOp, buf_index: dict[str, int],
                  buffers: dict[str, k.BufferOp], vlen: int = 256) -> rvv.FuncOp:
    """Lower with the largest LMUL whose register allocation succeeds (GEMMs through the
    microkernel, tuned for ``vlen``)."""
    from portc.passes import rvv_gemm

    fast = rvv_gemm.try_gemm(op, buf_index, buffers, vlen)
    if fast is not None:
        return fast
    for lw in (8, 4, 2, 1):
        try:
            return GenericLowering(op, buf_index, buffers, lw).lower()
        except OutOfRegisters:
            continue
    raise RvvLoweringError(f"kernel {op.kernel_name()} (from {op.origin()}): the body needs "
                           "more than 31 vector registers even at LMUL=1")


def lower_module(module: Operation, vlen: int = 256) -> list[rvv.FuncOp]:
    """Every kernel of a planned kernel module as an rvv function (execution order); ``vlen``
    tunes blocking only, the code runs at any VLEN."""
    from portc.passes import rvv_sort

    buffers = k.buffers_of(module)
    buf_index = {name: i for i, name in enumerate(buffers)}
    funcs: list[rvv.FuncOp] = []
    for op in k.kernels_of(module):
        if isinstance(op, k.GenericOp):
            funcs.append(lower_generic(op, buf_index, buffers, vlen))
        elif isinstance(op, k.SortOp):
            funcs.append(rvv_sort.lower_sort(op, buf_index, buffers))
        else:
            raise RvvLoweringError(f"kernel {op.kernel_name()}: unknown kernel op {op.name}")
    for f in funcs:
        f.verify()
    return funcs
