"""Tensor-core GEMM entries: ``mma.sync`` m16n8k16 (f16/bf16) and m16n8k8 (tf32), fp32 accumulate.

Block tile 64x64, K tile 16, four warps each owning a 32x32 quarter (2 x 4 mma tiles, 32 f32
accumulators per thread). Operands are read from global memory through their strided views
(so batched matmul and implicit-GEMM convolution share the kernel), rounded to the mma type
(``cvt.rn.f16/bf16.f32`` or ``cvt.rna.tf32.f32``) and staged in shared memory; f16/bf16
fragments come from ``ldmatrix`` (A: ``.x4``, B: ``.x2.trans``), tf32 fragments from plain
shared loads (ldmatrix moves 16-bit elements only). Shared memory is double-buffered, one
``bar.sync`` per tile: while the current K tile is multiplied the next one is in flight into
the other buffer. An operand already stored in the mma type with 16 aligned bytes per thread
(``cp_async_contiguous``: fp16/bf16 models, and fp32 weights that
``round_gemm_weights_to_mma_type`` stored rounded at compile time) is copied by
``cp.async.cg`` (zero-filled outside the matrix, landed by ``cp.async.wait_group`` before the
barrier); any other operand needs a conversion on the way, which ``cp.async`` cannot do, so it
is fetched into registers before the multiply, rounded, and stored into the other buffer after.

Fragment layouts (PTX ISA 8.x, "Matrix Fragments for mma.m16n8k16 / m16n8k8"): groupID
g = lane >> 2, t = lane & 3; C/D: c0,c1 = (g, 2t..2t+1), c2,c3 = (g+8, 2t..2t+1).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import ml_dtypes
import numpy as np
from xdsl.dialects.builtin import StringAttr
from xdsl.rewriter import InsertPoint, Rewriter

from portc.dialects import kernel as k
from portc.dialects import ptx
from portc.passes.ptx_body import Emitter
from portc.passes.ptx_gemm import BK, BM, BN, GemmLowering, GemmShape, _epilogue

THREADS = 128
MMA_TYPE = {"fp16": "f16", "bf16": "bf16", "tf32": "tf32"}
#: the storage dtype of each 16-bit mma operand type
MMA_DTYPE = {"fp16": "float16", "bf16": "bfloat16"}
#: elements of a 16-bit operand one ``cp.async`` moves (16 bytes, the .cg size)
CP_ELEMS = 8


def round_gemm_weights_to_mma_type(kp: Any, precision: str) -> list[str]:
    """Store fp32 weights that only feed tensor-core GEMMs in the mma operand type.

    The mma path rounds every operand to f16/bf16 (``cvt.rn``) while staging it; rounding a
    weight once at compile time (numpy's and ml_dtypes' casts are the same round-to-nearest-
    even) gives bit-identical products, halves the weight's bytes and global traffic, and lets
    the kernel copy it into shared memory with ``cp.async`` instead of through registers. The
    kernel body reads the 16-bit buffer through an explicit widening ``kernel.cast`` so the
    kernel IR in the bundle states what the PTX computes. Returns the buffers changed."""
    from portc.passes.lower_ptx import choose_schedule
    from portc.passes.ptx_gemm import match_gemm

    if precision not in MMA_DTYPE:
        return []
    dt = MMA_DTYPE[precision]
    bufs = k.buffers_of(kp.module)
    kernels = k.kernels_of(kp.module)
    readers = Counter(name for op in kernels for name in (
        op.input_names if isinstance(op, k.GenericOp) else
        [op.input.data] if isinstance(op, k.SortOp) else []))
    bindings = Counter(b.binding.data for b in bufs.values() if b.binding is not None)
    uses: dict[str, list[tuple[k.GenericOp, int]]] = {}
    for op in kernels:
        if not isinstance(op, k.GenericOp) or choose_schedule(op, bufs, precision) != "gemm":
            continue
        shape = match_gemm(op, bufs)
        assert shape is not None
        args = list(op.body.block.args)
        for slot in (shape.a, shape.b):
            name = op.input_names[slot]
            buf = bufs[name]
            if buf.kind.data != "weight" or buf.dtype.data != "float32":
                continue
            if op.input_names.count(name) != 1 or len(list(args[slot].uses)) != 1:
                continue
            if _uses_directly(op, args[slot]):
                uses.setdefault(name, []).append((op, slot))
    changed = []
    for name, sites in sorted(uses.items()):
        buf = bufs[name]
        if len(sites) != readers[name] or bindings[buf.binding.data] != 1:
            continue  # some other kernel reads the fp32 values
        binding = buf.binding.data
        kp.weights.put(binding, np.asarray(kp.weights[binding], np.float32).astype(
            np.float16 if dt == "float16" else ml_dtypes.bfloat16))
        buf.properties["dtype"] = StringAttr(dt)
        for op, slot in sites:
            arg = op.body.block.args[slot]
            Rewriter.replace_value_with_new_type(arg, k.type_of_dtype(dt))
            arg = op.body.block.args[slot]
            (use,) = list(arg.uses)
            widen = k.CastOp.create(operands=[arg], result_types=[k.type_of_dtype("float32")])
            Rewriter.insert_op(widen, InsertPoint.before(use.operation))
            use.operation.operands[use.index] = widen.result
        changed.append(name)
    return changed


def _uses_directly(op: k.GenericOp, arg: object) -> bool:
    """The block argument is an operand of the GEMM's ``mul`` itself (no cast in between)."""
    mul = op.yielded.owner
    return isinstance(mul, k.BinaryOp) and arg in (mul.a, mul.b)


def cp_async_contiguous(L: GemmLowering, slot: int, dims: tuple[int, ...], precision: str
                        ) -> bool:
    """Whether each thread's 8 staged elements of ``slot`` (consecutive along the last of
    ``dims``, from a multiple of 8) are 16 aligned bytes of global memory already in the mma
    type, so one ``cp.async.cg`` can move them: the buffer holds the mma dtype (read as is or
    widened to f32 only), the last dim is unit-stride with an extent divisible by 8, and every
    other stride and the slot's offset keep 8-element alignment."""
    if precision not in MMA_DTYPE or not dims:
        return False
    g, op = L.g, L.op
    if g.dtype(g.names[slot]) != MMA_DTYPE[precision]:
        return False
    if any(c != "float32" for c in L.cast_chain(slot)):
        return False
    strides = op.input_strides(slot)
    inner = dims[-1]
    if strides[inner] != 1 or op.extents[inner] % CP_ELEMS:
        return False
    others = [strides[d] for d in range(len(strides)) if d != inner and op.extents[d] > 1]
    return all(st % CP_ELEMS == 0 for st in others) and op.input_offset(slot) % CP_ELEMS == 0


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
    # operands already in the mma type, 16 aligned bytes per thread: cp.async straight into
    # shared memory; the others are loaded, rounded and stored through registers
    a_cp = cp_async_contiguous(L, s.a, s.kdims, precision)
    b_cp = cp_async_contiguous(L, s.b, s.ndims, precision)
    b_cols, n_oks = [], []
    for j in range(1 if b_cp else 8):
        n = e.op("add.u32", "u32", e.op("mad.lo.s32", "u32", bx, BN, b_n), j)
        n_oks.append(e.op("setp.lt.u32", "pred", n, s.N))
        b_cols.append(L.offset(s.b, L.split(n, s.ndims), base[s.b]))
    a_st = e.op("mad.lo.s32", "u32", a_r, BK * es, e.op("mad.lo.s32", "u32", a_k, es, sa))
    b_st = e.op("mad.lo.s32", "u32", b_k, BN * es, e.op("mad.lo.s32", "u32", b_n, es, sb))

    def a_address(k0: str, j: int) -> tuple[str, str]:
        kk = e.op("add.u32", "u32", e.op("add.u32", "u32", k0, a_k), j)
        ok = e.op("and.pred", "pred", m_ok, e.op("setp.lt.u32", "pred", kk, s.K))
        return (L.offset(s.a, L.split(kk, s.kdims), a_row) if s.kdims else a_row), ok

    def b_k_coords(k0: str) -> tuple[dict[int, str], str]:
        kk = e.op("add.u32", "u32", k0, b_k)
        return (L.split(kk, s.kdims) if s.kdims else {}), e.op("setp.lt.u32", "pred", kk, s.K)

    def copy_async(slot: int, addr: str, ok: str, dst: str) -> None:
        """16 bytes global -> shared, zero-filled (src-size 0) outside the matrix, where the
        source address is the operand's base so that no out-of-range address is formed."""
        src = e.op("selp.b64", "s64", addr, base[slot], ok)
        size = e.op("selp.u32", "u32", 16, 0, ok)
        e("cp.async.cg.shared.global", f"[{dst}]", f"[{src}]", 16, size)

    def issue_copies(k0: str, buf: str) -> None:
        """cp.async of this thread's A and/or B chunk of the K tile at k0 into ``buf``."""
        if a_cp:
            addr, ok = a_address(k0, 0)
            copy_async(s.a, addr, ok, e.op("mad.lo.s32", "u32", buf, a_buf, a_st))
        if b_cp:
            kc, k_ok = b_k_coords(k0)
            addr = L.offset(s.b, kc, b_cols[0]) if kc else b_cols[0]
            ok = e.op("and.pred", "pred", k_ok, n_oks[0])
            copy_async(s.b, addr, ok, e.op("mad.lo.s32", "u32", buf, b_buf, b_st))
        if a_cp or b_cp:
            e("cp.async.commit_group")

    def fetch(k0: str) -> tuple[list[str], list[str]]:
        """This thread's 8 A and 8 B elements of the K tile at k0 as mma-type registers
        (none for an operand that cp.async copies)."""
        av = []
        for j in range(0 if a_cp else 8):
            addr, ok = a_address(k0, j)
            av.append(_to_mma(e, L.guarded_load(s.a, addr, ok), precision))
        bv = []
        if not b_cp:
            kc, k_ok = b_k_coords(k0)
            for j in range(8):
                addr = L.offset(s.b, kc, b_cols[j]) if kc else b_cols[j]
                ok = e.op("and.pred", "pred", k_ok, n_oks[j])
                bv.append(_to_mma(e, L.guarded_load(s.b, addr, ok), precision))
        return av, bv

    def stash(av: list[str], bv: list[str], buf: str) -> None:
        """Store the fetched elements into shared buffer ``buf`` (0/1 register)."""
        for vals, addr in ((av, a_st), (bv, b_st)):
            if not vals:
                continue
            addr = e.op("mad.lo.s32", "u32", buf, a_buf if vals is av else b_buf, addr)
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

    def land_copies() -> None:
        if a_cp or b_cp:
            e("cp.async.wait_group", 0)

    acc = [[[e.const(0.0, "f32") for _ in range(4)] for _ in range(4)] for _ in range(2)]
    gid = e.op("shr.u32", "u32", lane, 2)
    tq = e.op("and.b32", "u32", lane, 3)
    zero = e.op("mov.u32", "u32", 0)
    issue_copies(zero, zero)
    av, bv = fetch(zero)
    stash(av, bv, zero)
    land_copies()
    e("bar.sync", 0)
    k0 = e.op("mov.u32", "u32", 0)
    cur = e.op("mov.u32", "u32", 0)
    top, no_next, no_stash = e.new_label("kt"), e.new_label("nonext"), e.new_label("nostash")
    e.place(top)
    nxt = e.op("add.u32", "u32", k0, BK)
    more = e.op("setp.lt.u32", "pred", nxt, s.K)
    other = e.op("xor.b32", "u32", cur, 1)
    # registers carrying the next tile across the multiply
    n_carry = (0 if a_cp else 8) + (0 if b_cp else 8)
    carry = [e.reg("b32" if tf32 else "b16") for _ in range(n_carry)]
    e("bra.uni", no_next, guard=f"!{more}")
    # the other buffer was last read before the previous bar.sync: free to fill now
    issue_copies(nxt, other)
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
    na = 0 if a_cp else 8
    stash(carry[:na], carry[na:], other)
    e.place(no_stash)
    land_copies()
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
    kind = f"gemm-mma-{precision}" + ("-cp.async" if a_cp or b_cp else "")
    return entry, Launch(name, op.kernel_name(), op.origin(), kind, grid,
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
