"""Tensor-core GEMM entries: ``mma.sync`` m16n8k16 (f16/bf16) and m16n8k8 (tf32), fp32 accumulate.

Block tile 64x64, K tile 16, four warps each owning a 32x32 quarter (2 x 4 mma tiles, 32 f32
accumulators per thread). Operands are read from global memory through their strided views
(so batched matmul and implicit-GEMM convolution share the kernel), rounded to the mma type
(``cvt.rn.f16/bf16.f32`` or ``cvt.rna.tf32.f32``) and staged in shared memory; f16/bf16
fragments come from ``ldmatrix`` (A: ``.x4``, B: ``.x2.trans``), tf32 fragments from plain
shared loads (ldmatrix moves 16-bit elements only). Shared memory is double-buffered: the next
K tile is fetched into registers before the current one is multiplied and stored into the
other buffer afterwards, one ``bar.sync`` per tile. Staging goes through registers rather than
``cp.async`` because every operand may need a conversion on the way (cp.async copies bytes).

Fragment layouts (PTX ISA 8.x, "Matrix Fragments for mma.m16n8k16 / m16n8k8"): groupID
g = lane >> 2, t = lane & 3; C/D: c0,c1 = (g, 2t..2t+1), c2,c3 = (g+8, 2t..2t+1).
"""

from __future__ import annotations

import math

from portc.dialects import kernel as k
from portc.dialects import ptx
from portc.passes.ptx_body import Emitter
from portc.passes.ptx_gemm import BK, BM, BN, GemmLowering, GemmShape, _epilogue

THREADS = 128
MMA_TYPE = {"fp16": "f16", "bf16": "bf16", "tf32": "tf32"}


def _brace(regs: list[str]) -> str:
    return "{" + ", ".join(regs) + "}"


def _to_mma(e: Emitter, v: str, precision: str) -> str:
    """An f32 value rounded to the mma operand type (b16 register, or b32 for tf32)."""
    if precision == "tf32":
        return e.op("cvt.rna.tf32.f32", "b32", v)
    return e.op(f"cvt.rn.{MMA_TYPE[precision]}.f32", "b16", v)


def lower_mma(op: k.GenericOp, bufs: dict[str, k.BufferOp], name: str, precision: str,
              shape: GemmShape) -> tuple[ptx.EntryOp, object]:
    from portc.passes.lower_ptx import Launch

    L = GemmLowering(op, bufs, name, shape)
    g, e, s = L.g, L.e, shape
    tf32 = precision == "tf32"
    es = 4 if tf32 else 2
    a_buf = BM * BK * es  # one A tile: [64 m][16 k]
    b_buf = BK * BN * es  # one B tile: [16 k][64 n]
    g.load_params()
    t = e.op("mov.u32", "u32", "%tid.x")
    lane = e.op("and.b32", "u32", t, 31)
    warp = e.op("shr.u32", "u32", t, 5)
    wm = e.op("shr.u32", "u32", warp, 1)
    wn = e.op("and.b32", "u32", warp, 1)
    bx = e.op("mov.u32", "u32", "%ctaid.x")
    by = e.op("mov.u32", "u32", "%ctaid.y")
    bz = e.op("mov.u32", "u32", "%ctaid.z")
    bc = L.split(bz, s.bdims) if s.bdims else {}
    base = {slot: g.address(slot, bc) for slot in (s.a, s.b, -1)}
    sa, sb = e.op("mov.u32", "u32", "As"), e.op("mov.u32", "u32", "Bs")
    # loaders: A row (t >> 1), 8 consecutive k from (t & 1) * 8; B k-row (t >> 3), 8
    # consecutive n from (t & 7) * 8
    a_r = e.op("shr.u32", "u32", t, 1)
    a_k = e.op("shl.b32", "u32", e.op("and.b32", "u32", t, 1), 3)
    m = e.op("mad.lo.s32", "u32", by, BM, a_r)
    m_ok = e.op("setp.lt.u32", "pred", m, s.M)
    a_row = L.offset(s.a, L.split(m, s.mdims), base[s.a])
    b_k = e.op("shr.u32", "u32", t, 3)
    b_n = e.op("shl.b32", "u32", e.op("and.b32", "u32", t, 7), 3)
    b_cols, n_oks = [], []
    for j in range(8):
        n = e.op("add.u32", "u32", e.op("mad.lo.s32", "u32", bx, BN, b_n), j)
        n_oks.append(e.op("setp.lt.u32", "pred", n, s.N))
        b_cols.append(L.offset(s.b, L.split(n, s.ndims), base[s.b]))
    a_st = e.op("mad.lo.s32", "u32", a_r, BK * es, e.op("mad.lo.s32", "u32", a_k, es, sa))
    b_st = e.op("mad.lo.s32", "u32", b_k, BN * es, e.op("mad.lo.s32", "u32", b_n, es, sb))

    def fetch(k0: str) -> tuple[list[str], list[str]]:
        """This thread's 8 A and 8 B elements of the K tile at k0, as mma-type registers."""
        av = []
        for j in range(8):
            kk = e.op("add.u32", "u32", e.op("add.u32", "u32", k0, a_k), j)
            ok = e.op("and.pred", "pred", m_ok, e.op("setp.lt.u32", "pred", kk, s.K))
            addr = L.offset(s.a, L.split(kk, s.kdims), a_row) if s.kdims else a_row
            av.append(_to_mma(e, L.guarded_load(s.a, addr, ok), precision))
        kk = e.op("add.u32", "u32", k0, b_k)
        k_ok = e.op("setp.lt.u32", "pred", kk, s.K)
        kc = L.split(kk, s.kdims) if s.kdims else {}
        bv = []
        for j in range(8):
            addr = L.offset(s.b, kc, b_cols[j]) if kc else b_cols[j]
            ok = e.op("and.pred", "pred", k_ok, n_oks[j])
            bv.append(_to_mma(e, L.guarded_load(s.b, addr, ok), precision))
        return av, bv

    def stash(av: list[str], bv: list[str], buf: str) -> None:
        """Store the fetched elements into shared buffer ``buf`` (0/1 register)."""
        ao = e.op("mad.lo.s32", "u32", buf, a_buf, a_st)
        bo = e.op("mad.lo.s32", "u32", buf, b_buf, b_st)
        for vals, addr in ((av, ao), (bv, bo)):
            if tf32:
                e("st.shared.v4.b32", f"[{addr}]", _brace(vals[:4]))
                e("st.shared.v4.b32", f"[{addr}+16]", _brace(vals[4:]))
            else:
                words = []
                for j in range(0, 8, 2):
                    w = e.reg("b32")
                    e("mov.b32", w, _brace([vals[j], vals[j + 1]]))
                    words.append(w)
                e("st.shared.v4.b32", f"[{addr}]", _brace(words))

    acc = [[[e.const(0.0, "f32") for _ in range(4)] for _ in range(4)] for _ in range(2)]
    gid = e.op("shr.u32", "u32", lane, 2)
    tq = e.op("and.b32", "u32", lane, 3)
    zero = e.op("mov.u32", "u32", 0)
    av, bv = fetch(zero)
    stash(av, bv, zero)
    e("bar.sync", 0)
    k0 = e.op("mov.u32", "u32", 0)
    cur = e.op("mov.u32", "u32", 0)
    top, no_next, no_stash = e.new_label("kt"), e.new_label("nonext"), e.new_label("nostash")
    e.place(top)
    nxt = e.op("add.u32", "u32", k0, BK)
    more = e.op("setp.lt.u32", "pred", nxt, s.K)
    # registers carrying the next tile across the multiply
    carry = [e.reg("b32" if tf32 else "b16") for _ in range(16)]
    e("bra.uni", no_next, guard=f"!{more}")
    nav, nbv = fetch(nxt)
    for r, v in zip(carry, nav + nbv, strict=True):
        e("mov.b32" if tf32 else "mov.b16", r, v)
    e.place(no_next)
    a_base = e.op("mad.lo.s32", "u32", cur, a_buf, sa)
    b_base = e.op("mad.lo.s32", "u32", cur, b_buf, sb)
    if tf32:
        _tf32_step(e, acc, a_base, b_base, wm, wn, gid, tq)
    else:
        _f16_step(e, acc, a_base, b_base, wm, wn, lane, precision)
    e("bra.uni", no_stash, guard=f"!{more}")
    other = e.op("xor.b32", "u32", cur, 1)
    stash(carry[:8], carry[8:], other)
    e.place(no_stash)
    e("bar.sync", 0)
    e("xor.b32", cur, cur, 1)
    e("mov.u32", k0, nxt)
    e("bra.uni", top, guard=more)
    # epilogue: each 16x8 tile's fragment rows g, g+8 and columns 2t, 2t+1
    row0 = e.op("add.u32", "u32", e.op("mad.lo.s32", "u32", by, BM,
                                       e.op("shl.b32", "u32", wm, 5)), gid)
    col0 = e.op("add.u32", "u32", e.op("mad.lo.s32", "u32", bx, BN,
                                       e.op("shl.b32", "u32", wn, 5)),
                e.op("shl.b32", "u32", tq, 1))
    for i in range(2):
        for j in range(4):
            r = e.op("add.u32", "u32", row0, i * 16)
            c = e.op("add.u32", "u32", col0, j * 8)
            rows = [r, e.op("add.u32", "u32", r, 8)]
            cols = [c, e.op("add.u32", "u32", c, 1)]
            f = acc[i][j]
            _epilogue(L, [[f[0], f[1]], [f[2], f[3]]], by, bx, wm, wn, base[-1], 2,
                      rows=rows, cols=cols)
    e("ret")
    shared = [f"As:{2 * a_buf}:16", f"Bs:{2 * b_buf}:16"]
    entry = ptx.EntryOp.make(name, [f"p{i}:u64" for i in range(len(g.params))], shared, e.ops)
    grid = (math.ceil(s.N / BN), math.ceil(s.M / BM), s.batch)
    return entry, Launch(name, op.kernel_name(), op.origin(), f"gemm-mma-{precision}", grid,
                         (THREADS, 1, 1), g.params, shared_bytes=0)


def _f16_step(e: Emitter, acc: list, a_base: str, b_base: str, wm: str, wn: str, lane: str,
              precision: str) -> None:
    """One K16 step of the warp's 32x32 tile: 2 ldmatrix.x4 (A), 4 ldmatrix.x2.trans (B),
    8 mma.m16n8k16."""
    ty = MMA_TYPE[precision]
    lr = e.op("and.b32", "u32", lane, 15)
    lc = e.op("shl.b32", "u32", e.op("shr.u32", "u32", lane, 4), 3)
    afr = []
    for i in range(2):
        row = e.op("add.u32", "u32", e.op("shl.b32", "u32", wm, 5), i * 16)
        row = e.op("add.u32", "u32", row, lr)
        addr = e.op("mad.lo.s32", "u32", row, BK * 2, e.op("mad.lo.s32", "u32", lc, 2, a_base))
        regs = [e.reg("b32") for _ in range(4)]
        e("ldmatrix.sync.aligned.m8n8.x4.shared.b16", _brace(regs), f"[{addr}]")
        afr.append(regs)
    bfr = []
    for j in range(4):
        col = e.op("add.u32", "u32", e.op("shl.b32", "u32", wn, 5), j * 8)
        addr = e.op("mad.lo.s32", "u32", lr, BN * 2, e.op("mad.lo.s32", "u32", col, 2, b_base))
        regs = [e.reg("b32") for _ in range(2)]
        e("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16", _brace(regs), f"[{addr}]")
        bfr.append(regs)
    for i in range(2):
        for j in range(4):
            d = acc[i][j]
            e(f"mma.sync.aligned.m16n8k16.row.col.f32.{ty}.{ty}.f32", _brace(d), _brace(afr[i]),
              _brace(bfr[j]), _brace(d))


def _tf32_step(e: Emitter, acc: list, a_base: str, b_base: str, wm: str, wn: str, gid: str,
               tq: str) -> None:
    """Two K8 halves of the K16 tile, fragments by plain shared loads:
    a0 (g, t), a1 (g+8, t), a2 (g, t+4), a3 (g+8, t+4); b0 (k=t, n=g), b1 (k=t+4, n=g)."""
    for kh in range(2):
        afr = []
        for i in range(2):
            row = e.op("add.u32", "u32", e.op("shl.b32", "u32", wm, 5), i * 16)
            row = e.op("add.u32", "u32", row, gid)
            col = e.op("add.u32", "u32", tq, kh * 8)
            addr = e.op("mad.lo.s32", "u32", row, BK * 4, e.op("mad.lo.s32", "u32", col, 4,
                                                               a_base))
            regs = [e.reg("b32") for _ in range(4)]
            for q, off in enumerate((0, 8 * BK * 4, 16, 8 * BK * 4 + 16)):
                e("ld.shared.b32", regs[q], f"[{addr}+{off}]")
            afr.append(regs)
        bfr = []
        for j in range(4):
            n = e.op("add.u32", "u32", e.op("shl.b32", "u32", wn, 5), j * 8)
            n = e.op("add.u32", "u32", n, gid)
            kk = e.op("add.u32", "u32", tq, kh * 8)
            addr = e.op("mad.lo.s32", "u32", kk, BN * 4, e.op("mad.lo.s32", "u32", n, 4, b_base))
            regs = [e.reg("b32") for _ in range(2)]
            e("ld.shared.b32", regs[0], f"[{addr}]")
            e("ld.shared.b32", regs[1], f"[{addr}+{4 * BN * 4}]")
            bfr.append(regs)
        for i in range(2):
            for j in range(4):
                d = acc[i][j]
                e("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32", _brace(d),
                  _brace(afr[i]), _brace(bfr[j]), _brace(d))
