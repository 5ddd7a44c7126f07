"""Matmul-shaped kernels as a register-blocked ``vfmacc.vf`` microkernel.

A ``kernel.generic`` is GEMM-shaped here when its combiner is ``sum``, its body is one float
``mul`` of its two inputs (float32 or float64, no casts) and there are no indirect terms. Its
dims then classify by the operand strides: the *vector* dim moves B and the output but not A
(B is loaded as a vector, unit-stride or strided), the *row* dim moves A and the output but not
B (MR rows of A are MR scalars per step), reduction dims are K; every other parallel dim (batch,
conv's output rows) is a scalar loop. A matmul is one row, vector and K dim; a convolution
``[oc, oh, ow, c, kh, kw]`` has rows = oc, vector = ow, K = (c, kh, kw), with the input read
through its strided (padded) view.

Per step of K the microkernel issues one vector load of B, MR scalar loads of A and MR
``vfmacc.vf``: MR accumulator groups plus one B group must fit the 32 vector registers, so LMUL
8 allows MR = 3, LMUL 4 MR = 7 and so on. A scalar of A feeds one ``vfmacc`` because the next
LMUL-8 strip of B would need a fourth group: MR + 1 + 1 (pointer bump) + MR instructions per step
is the floor of this formulation. LMUL and MR come from a cost model over the tuning VLEN (the
code stays VLEN-agnostic: ``vsetvli`` strips the vector dim at run time). The innermost K dims
are unrolled (all of a small kernel window, else 16 steps with a tail), so A's scalars load with
immediate offsets from one pointer when they fit 12 bits (else one pointer per row) and loop
overhead is a bump and a branch per unrolled group. Pointer displacements are tracked at
compile time, so every loop bump is one ``addi`` or one ``add`` of a hoisted constant.

Each output element is a sequential fused multiply-add over K in index order: results do not
depend on VLEN or on the blocking.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from portc.dialects import kernel as k
from portc.dialects import rvv
from portc.passes.lower_rvv import (
    X_POOL,
    Code,
    OutOfRegisters,
    Shape,
    float_bits,
    simplify,
)

FLOAT_BITS = {"float32": 32, "float64": 64}
#: vector registers (v0 holds data here: the microkernel has no masked instruction)
VREGS = 32
#: most rows per block (scalar registers for row pointers stay within the pool)
MAX_ROWS = 8
#: steps of the innermost K dim unrolled per loop iteration (a whole window when it is <= WINDOW)
UNROLL = 16
WINDOW = 16
IMM_LO, IMM_HI = -2048, 2047
#: float registers holding A's scalars (rotating)
F_ROWS = tuple(f"ft{i}" for i in range(8)) + tuple(f"fa{i}" for i in range(8))


def _fits(v: int) -> bool:
    return IMM_LO <= v <= IMM_HI


@dataclass(frozen=True)
class GemmPlan:
    a: int  # slot read as scalars (moves along rows, constant along the vector dim)
    b: int  # slot read as vectors
    vdim: int
    rdim: int | None
    outer: tuple[int, ...]
    red: tuple[int, ...]
    lmul: int
    mr: int
    bits: int

    @property
    def dtype(self) -> str:
        return "float32" if self.bits == 32 else "float64"


def per_step_cost(m: int, n: int, lmul: int, mr: int, bits: int, vlen: int) -> int:
    """Instructions per K step for the whole M x N at ``vlen``: per strip and row block one
    vector load + its pointer bump, then one scalar load and one vfmacc per row."""
    vlmax = vlen // bits * lmul
    strips = max(1, math.ceil(n / vlmax))
    full, rest = divmod(m, mr)
    per_block = full * (2 * mr + 2) + ((2 * rest + 2) if rest else 0)
    return strips * per_block


def choose_blocking(m: int, n: int, bits: int, vlen: int) -> tuple[int, int]:
    """(LMUL, MR) with the fewest instructions per K step (ties: the larger LMUL)."""
    best: tuple[int, int, int] | None = None
    for lmul in (8, 4, 2, 1):
        mr_cap = min(MAX_ROWS, VREGS // lmul - 1, max(1, m))
        for mr in range(1, mr_cap + 1):
            cost = per_step_cost(m, n, lmul, mr, bits, vlen)
            if best is None or cost < best[0]:
                best = (cost, lmul, mr)
    assert best is not None
    return best[1], best[2]


def match(op: k.GenericOp, buffers: dict[str, k.BufferOp], vlen: int) -> tuple[GemmPlan,
                                                                                   Shape] | None:
    if op.combine != "sum" or op.indirect_terms or len(op.input_names) != 2:
        return None
    if any(e == 0 for e in op.extents):
        return None
    ops = list(op.body.block.ops)
    args = list(op.body.block.args)
    if len(ops) != 2:
        return None
    mul = ops[0]
    if not isinstance(mul, k.BinaryOp) or mul.fn.data != "mul" or op.yielded is not mul.result:
        return None
    if {mul.a, mul.b} != set(args):
        return None
    dt = buffers[op.output_name].dtype.data
    if dt not in FLOAT_BITS or any(buffers[n].dtype.data != dt for n in op.input_names):
        return None
    if k.dtype_of_type(mul.result.type) != dt:
        return None
    sh = simplify(op, buffers)
    par = [d for d in range(len(sh.extents)) if not sh.is_red[d]]
    red = tuple(d for d in range(len(sh.extents)) if sh.is_red[d])
    if not red or any(sh.out.strides[d] == 0 for d in par):
        return None
    out = sh.out
    best: tuple[tuple[int, int, int], GemmPlan] | None = None
    for a, b in ((0, 1), (1, 0)):
        sa, sb = sh.ins[a].strides, sh.ins[b].strides
        for v in par:
            if sa[v] != 0 or sb[v] == 0:
                continue
            rows = [d for d in par if d != v and sa[d] != 0 and sb[d] == 0]
            r = max(rows, key=lambda d: (sh.extents[d], d)) if rows else None
            outer = tuple(d for d in par if d not in (v, r))
            m = sh.extents[r] if r is not None else 1
            n = sh.extents[v]
            lmul, mr = choose_blocking(m, n, FLOAT_BITS[dt], vlen)
            score = (int(out.strides[v] == 1) + int(sb[v] == 1), n, m)
            plan = GemmPlan(a, b, v, r, outer, red, lmul, mr, FLOAT_BITS[dt])
            if best is None or score > best[0]:
                best = (score, plan)
    if best is None:
        return None
    return best[1], sh


class GemmLowering:
    """Emits one GEMM-shaped generic (see the module docstring)."""

    def __init__(self, op: k.GenericOp, buf_index: dict[str, int], plan: GemmPlan,
                 shape: Shape) -> None:
        self.op = op
        self.where = f"kernel {op.kernel_name()} (from {op.origin()})"
        self.p = plan
        self.sh = shape
        self.buf_index = buf_index
        self.c = Code(op.kernel_name())
        self.xpool = list(X_POOL)
        self.used_s: list[str] = []
        self.ever: set[str] = set()
        self.es = plan.bits // 8
        #: pointer register -> byte displacement from its home at the current emission point
        self.disp: dict[str, int] = {}
        #: hoisted constants (value -> register), materialised at ``self.hoist_at``
        self.consts: dict[int, str] = {}
        self.hoist_at = 0
        self.fi = 0

    # -- registers and pointer arithmetic ------------------------------------------------
    def xreg(self, fresh: bool = False) -> str:
        """A free scalar register; ``fresh``: one never used so far in the function (a
        constant hoisted to the entry must not be clobbered by earlier code)."""
        pool = [r for r in self.xpool if r not in self.ever] if fresh else self.xpool
        if not pool:
            raise OutOfRegisters()  # try_gemm falls back to the general lowering
        r = pool[0]
        self.xpool.remove(r)
        self.ever.add(r)
        if r.startswith("s") and r not in self.used_s:
            self.used_s.append(r)
        return r

    def release(self, r: str) -> None:
        self.xpool.insert(0, r)

    def const_reg(self, value: int) -> str | None:
        """A register holding ``value`` for the whole function (None when none is left)."""
        if value in self.consts:
            return self.consts[value]
        if len([r for r in self.xpool if r not in self.ever]) <= 4:  # keep some for loops
            return None
        r = self.xreg(fresh=True)
        self.consts[value] = r
        return r

    def bump(self, reg: str, delta: int) -> None:
        """reg += delta, one instruction (a hoisted constant when delta needs more than 12 bits)."""
        if delta == 0:
            return
        self.disp[reg] += delta
        if _fits(delta):
            self.c("addi", reg, reg, delta)
            return
        cr = self.const_reg(delta)
        if cr is None:
            self.c("li", "t2", delta)
            self.c("add", reg, reg, "t2")
        else:
            self.c("add", reg, reg, cr)

    def move_to(self, reg: str, want: int) -> None:
        self.bump(reg, want - self.disp[reg])

    def addr_into(self, dst: str, reg: str, want: int) -> None:
        """dst = home(reg) + want, leaving reg where it is."""
        off = want - self.disp[reg]
        if _fits(off):
            self.c("addi", dst, reg, off)
        else:
            cr = self.const_reg(off)
            if cr is None:
                self.c("li", "t2", off)
                cr = "t2"
            self.c("add", dst, reg, cr)

    def counted_loop(self, ext: int, strides: dict[str, int], body: Callable[[], None]) -> None:
        """``ext`` iterations of ``body``; every tracked pointer returns to its displacement
        at the loop top plus its stride (one bump per pointer per iteration)."""
        if ext == 1:
            body()
            return
        c = self.c
        cnt = self.xreg()
        c("li", cnt, ext)
        top = c.label()
        c.place(top)
        d0 = dict(self.disp)
        body()
        for reg in d0:
            self.bump(reg, d0[reg] + strides.get(reg, 0) - self.disp[reg])
            self.disp[reg] = d0[reg]
        c("addi", cnt, cnt, -1)
        c("bnez", cnt, top)
        for reg in d0:
            self.disp[reg] = d0[reg] + ext * strides.get(reg, 0)
        self.release(cnt)

    def fresh_f(self) -> str:
        r = F_ROWS[self.fi % len(F_ROWS)]
        self.fi += 1
        return r

    # -- the function --------------------------------------------------------------------
    def lower(self) -> rvv.FuncOp:
        p, sh, c = self.p, self.sh, self.c
        c.comment(f"{self.op.kernel_name()}: {self.op.origin()} GEMM microkernel dims="
                  f"{list(self.op.extents)} -> {sh.extents} vector dim {p.vdim}, rows "
                  f"{p.rdim}, K {list(p.red)}, LMUL {p.lmul}, MR {p.mr}")
        body_start = len(c.ops)
        sa, sb, so = sh.ins[p.a], sh.ins[p.b], sh.out
        self.A, self.B, self.C = self.xreg(), self.xreg(), self.xreg()
        for reg, s in ((self.A, sa), (self.B, sb), (self.C, so)):
            c.load_buffer_address(reg, self.buf_index[s.buf], s.offset * self.es)
            self.disp[reg] = 0
        self.hoist_at = len(c.ops)
        self.bstride_v = sb.strides[p.vdim] * self.es
        self.ostride_v = so.strides[p.vdim] * self.es
        self.vtype = f"e{p.bits}, m{p.lmul}, ta, ma"
        if self.bstride_v != self.es:
            self.breg_v = self.xreg()
            c("li", self.breg_v, self.bstride_v)
        if self.ostride_v != self.es:
            self.oreg_v = self.xreg()
            c("li", self.oreg_v, self.ostride_v)
        self.outer_loops(list(p.outer))
        consts = [rvv.OPS["li"].make(r, v) for v, r in self.consts.items()]
        c.ops[self.hoist_at:self.hoist_at] = consts
        c.wrap_in_frame(body_start, self.used_s)
        c("ret")
        return rvv.FuncOp.make(self.op.kernel_name(), c.ops,
                               schedule=f"gemm LMUL {p.lmul} MR {p.mr}, e{p.bits}")

    def strides_of(self, d: int) -> dict[str, int]:
        sh, p = self.sh, self.p
        return {self.A: sh.ins[p.a].strides[d] * self.es, self.B: sh.ins[p.b].strides[d] *
                self.es, self.C: sh.out.strides[d] * self.es}

    def outer_loops(self, dims: list[int]) -> None:
        if not dims:
            self.row_blocks()
            return
        d = dims[0]
        self.counted_loop(self.sh.extents[d], self.strides_of(d),
                          lambda: self.outer_loops(dims[1:]))

    def row_blocks(self) -> None:
        p, sh = self.p, self.sh
        m = sh.extents[p.rdim] if p.rdim is not None else 1
        full, rest = divmod(m, p.mr)
        if p.rdim is not None:
            st = self.strides_of(p.rdim)
            self.row_sa = sh.ins[p.a].strides[p.rdim] * self.es
            self.row_so = sh.out.strides[p.rdim] * self.es
        else:
            st = {}
            self.row_sa = self.row_so = 0
        if full:
            self.counted_loop(full, {r: s * p.mr for r, s in st.items()},
                              lambda: self.strips(p.mr))
        if rest:
            for reg, s in st.items():
                self.disp[reg] -= full * p.mr * s  # the remainder block's home
            self.strips(rest)
            for reg, s in st.items():
                self.disp[reg] += full * p.mr * s

    def strips(self, mr: int) -> None:
        """The vector dim strip-mined with vsetvli, one block of ``mr`` rows per strip."""
        p, c = self.p, self.c
        n = self.sh.extents[p.vdim]
        rem, vl = self.xreg(), self.xreg()
        c("li", rem, n)
        top = c.label()
        c.place(top)
        c("vsetvli", vl, rem, self.vtype)
        d0 = dict(self.disp)
        self.block(mr)
        for reg in d0:
            self.move_to(reg, d0[reg])
        for reg, stride, sreg in ((self.B, self.bstride_v, getattr(self, "breg_v", "")),
                                  (self.C, self.ostride_v, getattr(self, "oreg_v", ""))):
            if stride == self.es:
                c("slli", "t1", vl, int(math.log2(self.es)))
            else:
                c("mul", "t1", vl, sreg)
            c("add", reg, reg, "t1")
        c("sub", rem, rem, vl)
        c("bnez", rem, top)
        self.disp[self.B] = d0[self.B] + n * self.bstride_v
        self.disp[self.C] = d0[self.C] + n * self.ostride_v
        self.release(vl)
        self.release(rem)

    # -- one block: MR rows x one strip ----------------------------------------------------
    def block(self, mr: int) -> None:
        p, c = self.p, self.c
        acc = [f"v{i * p.lmul}" for i in range(mr)]
        bv = f"v{mr * p.lmul}"
        init = self.op.init_value
        if init is None:
            for i, a in enumerate(acc):
                self.load_c(a, i)
        elif init == 0.0 and math.copysign(1.0, init) > 0:
            for a in acc:
                c("vmv.v.i", a, 0, group=p.lmul)
        else:
            bits = float_bits(init, p.dtype)
            c("li", "t0", bits if p.bits == 32 else bits - (1 << 64) * (bits >> 63))
            c("fmv.w.x" if p.bits == 32 else "fmv.d.x", "ft11", "t0")
            for a in acc:
                c("vfmv.v.f", a, "ft11", group=p.lmul)
        # A's row pointers: one (with row offsets as immediates) or one per row
        rows = self.row_pointers(mr)
        self.reduce(list(p.red), acc, bv, rows)
        for reg in dict.fromkeys(r for r, _ in rows):
            del self.disp[reg]
            self.release(reg)
        for i, a in enumerate(acc):
            self.store_c(a, i)

    def row_pointers(self, mr: int) -> list[tuple[str, int]]:
        """(register, immediate row offset) per row; the registers are tracked pointers."""
        span = self.k_span()
        bias = mr // 2
        offs = [(i - bias) * self.row_sa for i in range(mr)]
        lo, hi = span
        if all(_fits(o + lo) and _fits(o + hi) for o in offs):
            reg = self.xreg()
            self.addr_into(reg, self.A, bias * self.row_sa)
            self.disp[reg] = 0
            return [(reg, o) for o in offs]
        out = []
        for i in range(mr):
            reg = self.xreg()
            self.addr_into(reg, self.A, i * self.row_sa)
            self.disp[reg] = 0
            out.append((reg, 0))
        return out

    def k_span(self) -> tuple[int, int]:
        """Range of A's byte offsets within one unrolled group (for the immediate check)."""
        lo = hi = 0
        for d, ext in self.group_dims():
            s = self.sh.ins[self.p.a].strides[d] * self.es * (ext - 1)
            lo, hi = min(lo, lo + s), max(hi, hi + s)
        return lo, hi

    def group_dims(self) -> list[tuple[int, int]]:
        """The innermost K dims unrolled as one group: (dim, steps)."""
        red = list(self.p.red)
        ext = self.sh.extents
        inner = red[-1]
        if ext[inner] > WINDOW:
            return [(inner, UNROLL)]
        out = [(inner, ext[inner])]
        total = ext[inner]
        for d in reversed(red[:-1]):
            if total * ext[d] > WINDOW:
                break
            out.insert(0, (d, ext[d]))
            total *= ext[d]
        return out

    def reduce(self, red: list[int], acc: list[str], bv: str,
               rows: list[tuple[str, int]]) -> None:
        p, sh = self.p, self.sh
        group = self.group_dims()
        gdims = [d for d, _ in group]
        loop_dims = [d for d in red if d not in gdims]
        inner = gdims[-1]
        split = sh.extents[inner] > WINDOW
        a_s = sh.ins[p.a].strides
        b_s = sh.ins[p.b].strides

        def strides(d: int) -> dict[str, int]:
            st = {reg: a_s[d] * self.es for reg, _ in rows}
            st[self.B] = b_s[d] * self.es
            return st

        def steps(dims: list[tuple[int, int]]) -> list[tuple[int, int]]:
            """(A, B) byte offsets of every step of a group, in K order."""
            offs = [(0, 0)]
            for d, n in dims:
                offs = [(oa + j * a_s[d] * self.es, ob + j * b_s[d] * self.es)
                        for oa, ob in offs for j in range(n)]
            return offs

        def emit_group(offs: list[tuple[int, int]]) -> None:
            for oa, ob in offs:
                self.move_to(self.B, ob)
                self.load_b(bv)
                for (reg, ro), a in zip(rows, acc, strict=True):
                    f = self.fresh_f()
                    imm = ro + oa - self.disp[reg]
                    if not _fits(imm):
                        self.move_to(reg, oa)
                        imm = ro
                    self.c("flw" if p.bits == 32 else "fld", f, imm, reg)
                    self.c("vfmacc.vf", a, f, bv, group=p.lmul)

        def innermost() -> None:
            if not split:
                emit_group(steps(group))
                return
            e = sh.extents[inner]
            loops, tail = divmod(e, UNROLL)
            st = {reg: s * UNROLL for reg, s in strides(inner).items()}
            self.counted_loop(loops, st, lambda: emit_group(steps(group)))
            if tail:
                base_a = loops * UNROLL * a_s[inner] * self.es
                base_b = loops * UNROLL * b_s[inner] * self.es
                emit_group([(base_a + oa, base_b + ob) for oa, ob in steps([(inner, tail)])])

        def nest(dims: list[int]) -> None:
            if not dims:
                innermost()
                return
            d = dims[0]
            self.counted_loop(sh.extents[d], strides(d), lambda: nest(dims[1:]))

        nest(loop_dims)

    def load_b(self, bv: str) -> None:
        p = self.p
        if self.bstride_v == self.es:
            self.c(f"vle{p.bits}.v", bv, self.B, group=p.lmul)
        else:
            self.c(f"vlse{p.bits}.v", bv, self.B, self.breg_v, group=p.lmul)

    def _c_row(self, i: int) -> str:
        if i == 0 and self.disp[self.C] == 0:
            return self.C
        self.addr_into("t1", self.C, i * self.row_so)
        return "t1"

    def load_c(self, vd: str, i: int) -> None:
        p = self.p
        reg = self._c_row(i)
        if self.ostride_v == self.es:
            self.c(f"vle{p.bits}.v", vd, reg, group=p.lmul)
        else:
            self.c(f"vlse{p.bits}.v", vd, reg, self.oreg_v, group=p.lmul)

    def store_c(self, vs: str, i: int) -> None:
        p = self.p
        reg = self._c_row(i)
        if self.ostride_v == self.es:
            self.c(f"vse{p.bits}.v", vs, reg, group=p.lmul)
        else:
            self.c(f"vsse{p.bits}.v", vs, reg, self.oreg_v, group=p.lmul)


def try_gemm(op: k.GenericOp, buf_index: dict[str, int],
             buffers: dict[str, k.BufferOp], vlen: int = 256) -> rvv.FuncOp | None:
    """The microkernel for ``op`` when it is a float GEMM, else None (general lowering).
    ``vlen`` only tunes LMUL and MR; the code runs at any VLEN."""
    m = match(op, buffers, vlen)
    if m is None:
        return None
    plan, shape = m
    try:
        return GemmLowering(op, buf_index, plan, shape).lower()
    except OutOfRegisters:
        return None
