"""GEMM-shaped ``kernel.generic`` -> tiled shared-memory GEMM entries.

A generic is GEMM-shaped when its body is ``mul`` of two loads (each possibly cast), the
combiner is ``sum`` and there are no indirect terms. Its dims then classify by the operand
strides alone: *M* dims move operand A but not B, *N* dims move B but not A, *batch* dims
move both (or neither), reduction dims are *K*. A matmul is one M, N and K dim; a convolution
is the implicit GEMM M = (n, oh, ow), N = oc, K = (c, kh, kw), its addresses taken from the
strided view of the (padded) input — no im2col buffer.

Schedules (``--precision``):
- ``fp32``: 64x64 block tile, BK = 16, 256 threads each accumulating a 4x4 register block
  with ``fma.rn.f32``; tiles staged through shared memory (A transposed so that a thread's
  four rows are one ``ld.shared.v4``), zero-filled outside the matrix. Each thread stages one
  k of four consecutive rows of A (one ``st.shared.v4``; the transposed tile's rows are padded
  by ``A_PAD`` floats so that the eight threads of a 128-bit phase hit distinct banks) and
  four consecutive columns at one k of B, so every shared access moves 16 bytes and a K tile
  decomposes its k coordinate once per operand.
- ``fp16``/``bf16``: tensor cores, ``mma.sync.aligned.m16n8k16`` with fp32 accumulation:
  64x64 block tile, 4 warps of 32x32, operands rounded to f16/bf16 while staged in shared
  memory, fragments loaded with ``ldmatrix`` (B with ``.trans``), the next K tile staged
  while the current one is multiplied (double-buffered shared memory; by ``cp.async`` for
  operands already in the mma type, see ``ptx_mma``).
- ``tf32``: the same warp tiling with ``mma.sync.aligned.m16n8k8`` on tf32 operands.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from portc.dialects import kernel as k
from portc.dialects import ptx
from portc.passes import ptx_body as pb
from portc.passes.ptx_body import Val

BM, BN, BK = 64, 64, 16
THREADS = 256
#: floats of padding per k row of the fp32 kernel's transposed A tile (bank-conflict-free stores)
A_PAD = 4
#: smallest M, N and K worth a tiled kernel (smaller ones go to the warp/thread schedules)
MIN_M, MIN_N, MIN_K = 8, 8, 8
FLOAT_IN = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class GemmShape:
    a: int  # slot whose strides move along M
    b: int
    mdims: tuple[int, ...]
    ndims: tuple[int, ...]
    kdims: tuple[int, ...]
    bdims: tuple[int, ...]
    M: int
    N: int
    K: int
    batch: int
    #: dtype each operand has at the multiply (after its casts)
    mul_dtype: str


def _source_slot(v: object, args: list, chain: list[str]) -> int | None:
    """Follow casts back to a block argument; ``chain`` collects the cast dtypes."""
    while isinstance(getattr(v, "owner", None), k.CastOp):
        cop = v.owner  # type: ignore[union-attr]
        chain.insert(0, k.dtype_of_type(cop.result.type))
        v = cop.x
    return args.index(v) if v in args else None


def match_gemm(op: k.GenericOp, bufs: dict[str, k.BufferOp]) -> GemmShape | None:
    if op.combine != "sum" or op.indirect_terms or len(op.input_names) != 2:
        return None
    ops = list(op.body.block.ops)
    y = op.yielded
    mul = y.owner
    if not isinstance(mul, k.BinaryOp) or mul.fn.data != "mul":
        return None
    args = list(op.body.block.args)
    ca: list[str] = []
    cb: list[str] = []
    sa, sb = _source_slot(mul.a, args, ca), _source_slot(mul.b, args, cb)
    if sa is None or sb is None or sa == sb:
        return None
    if len(ops) != 2 + len(ca) + len(cb):
        return None
    mdt = k.dtype_of_type(mul.result.type)
    out_dt = bufs[op.output_name].dtype.data
    if mdt not in FLOAT_IN or out_dt != mdt:
        return None
    if any(bufs[n].dtype.data not in FLOAT_IN for n in op.input_names):
        return None
    if any(c not in FLOAT_IN for c in ca + cb):
        return None
    npar, ext = op.parallel_count, op.extents
    st_a, st_b = op.input_strides(sa), op.input_strides(sb)
    mdims, ndims, bdims = [], [], []
    for d in range(npar):
        if ext[d] == 1:
            continue
        if st_a[d] and not st_b[d]:
            mdims.append(d)
        elif st_b[d] and not st_a[d]:
            ndims.append(d)
        else:
            bdims.append(d)
    kdims = tuple(d for d in range(npar, len(ext)) if ext[d] > 1)
    if not ndims or not mdims:
        return None
    M = int(np.prod([ext[d] for d in mdims]))
    N = int(np.prod([ext[d] for d in ndims]))
    K = int(np.prod([ext[d] for d in kdims])) if kdims else 1
    if M < MIN_M or N < MIN_N or K < MIN_K:
        return None
    B = int(np.prod([ext[d] for d in bdims])) if bdims else 1
    return GemmShape(sa, sb, tuple(mdims), tuple(ndims), kdims, tuple(bdims), M, N, K, B, mdt)


class GemmLowering:
    def __init__(self, op: k.GenericOp, bufs: dict[str, k.BufferOp], name: str,
                 shape: GemmShape) -> None:
        from portc.passes.lower_ptx import GenericLowering

        self.g = GenericLowering(op, bufs, name)
        self.e = self.g.e
        self.op, self.s = op, shape

    def split(self, idx: str, dims: tuple[int, ...]) -> dict[int, str]:
        """Row-major coordinates over ``dims`` (the first one unbounded: out-of-range rows
        give addresses that predicated-off loads never touch)."""
        e = self.e
        coords: dict[int, str] = {}
        q = idx
        for j, d in enumerate(reversed(dims)):
            if j == len(dims) - 1:
                coords[d] = q
            else:
                ext = self.op.extents[d]
                coords[d] = e.op("rem.u32", "u32", q, ext)
                q = e.op("div.u32", "u32", q, ext)
        return coords

    def offset(self, slot: int, coords: dict[int, str], base: str) -> str:
        return self.g.address(slot, coords, base=base)

    def guarded_load(self, slot: int, addr: str, ok: str) -> str:
        """The f32 value of the operand (its casts applied), 0 where ``ok`` is false."""
        e = self.e
        dt = self.g.dtype(self.g.names[slot])
        mt = pb.MEM_TYPE[dt][0]
        if dt == "float32":
            r = e.const(0.0, "f32")
            e(f"ld.global.{mt}", r, f"[{addr}]", guard=ok)
        else:
            h = e.op("mov.b16", "b16", 0)
            e("ld.global.b16", h, f"[{addr}]", guard=ok)
            if dt == "float16":
                r = e.op("cvt.f32.f16", "f32", h)
            else:
                r = pb.bf16_to_f32(e, h)
        v = Val(r, "f32", dt)
        for c in self.cast_chain(slot):
            v = pb.cast(e, v, c)
        return v.reg

    def cast_chain(self, slot: int) -> list[str]:
        """The dtypes the body casts operand ``slot`` through on its way to the ``mul``."""
        mul = self.op.yielded.owner
        assert isinstance(mul, k.BinaryOp)
        chain: list[str] = []
        _source_slot(mul.a if slot == self.s.a else mul.b, list(self.op.body.block.args), chain)
        return chain


def lower_gemm(op: k.GenericOp, bufs: dict[str, k.BufferOp], name: str, precision: str,
               sm: int) -> tuple[ptx.EntryOp, object]:
    from portc.passes.lower_ptx import Launch

    shape = match_gemm(op, bufs)
    assert shape is not None
    if precision in ("fp16", "bf16", "tf32"):
        from portc.passes.ptx_mma import lower_mma

        return lower_mma(op, bufs, name, precision, shape)
    L = GemmLowering(op, bufs, name, shape)
    g, e, s = L.g, L.e, shape
    g.load_params()
    t = e.op("mov.u32", "u32", "%tid.x")
    tx = e.op("and.b32", "u32", t, 15)
    ty = e.op("shr.u32", "u32", t, 4)
    bx = e.op("mov.u32", "u32", "%ctaid.x")
    by = e.op("mov.u32", "u32", "%ctaid.y")
    bz = e.op("mov.u32", "u32", "%ctaid.z")
    bc = L.split(bz, s.bdims) if s.bdims else {}
    base = {slot: g.address(slot, bc) for slot in (s.a, s.b, -1)}
    sa, sb = e.op("mov.u32", "u32", "As"), e.op("mov.u32", "u32", "Bs")
    a_row_bytes = (BM + A_PAD) * 4
    # A loader: one k (t & 15), four consecutive rows from (t >> 4) * 4
    ka = e.op("and.b32", "u32", t, 15)
    mq = e.op("shl.b32", "u32", ty, 2)
    m0 = e.op("mad.lo.s32", "u32", by, BM, mq)
    a_rows, m_oks = [], []
    for j in range(4):
        m = e.op("add.u32", "u32", m0, j)
        m_oks.append(e.op("setp.lt.u32", "pred", m, s.M))
        a_rows.append(L.offset(s.a, L.split(m, s.mdims), base[s.a]))
    zero64 = e.op("mov.b64", "s64", 0)
    # B loader: one k, four consecutive n
    kb = e.op("shr.u32", "u32", t, 4)
    nq = e.op("shl.b32", "u32", tx, 2)
    b_cols, n_oks = [], []
    for j in range(4):
        n = e.op("add.u32", "u32", e.op("mad.lo.s32", "u32", bx, BN, nq), j)
        n_oks.append(e.op("setp.lt.u32", "pred", n, s.N))
        b_cols.append(L.offset(s.b, L.split(n, s.ndims), base[s.b]))
    # shared addresses this thread stores to / reads from
    a_st = e.op("mad.lo.s32", "u32", ka, a_row_bytes, e.op("mad.lo.s32", "u32", mq, 4, sa))
    b_st = e.op("mad.lo.s32", "u32", kb, BN * 4, e.op("mad.lo.s32", "u32", nq, 4, sb))
    a_rd = e.op("mad.lo.s32", "u32", ty, 16, sa)
    b_rd = e.op("mad.lo.s32", "u32", tx, 16, sb)
    acc = [[e.const(0.0, "f32") for _ in range(4)] for _ in range(4)]
    k0 = e.op("mov.u32", "u32", 0)
    top = e.new_label("kt")
    e.place(top)
    kk = e.op("add.u32", "u32", k0, ka)
    k_ok = e.op("setp.lt.u32", "pred", kk, s.K)
    koff = L.offset(s.a, L.split(kk, s.kdims), zero64) if s.kdims else None
    vals = []
    for j in range(4):
        ok = e.op("and.pred", "pred", m_oks[j], k_ok)
        addr = e.op("add.s64", "s64", a_rows[j], koff) if koff is not None else a_rows[j]
        vals.append(L.guarded_load(s.a, addr, ok))
    e("st.shared.v4.f32", f"[{a_st}]", "{" + ", ".join(vals) + "}")
    kk = e.op("add.u32", "u32", k0, kb)
    k_ok = e.op("setp.lt.u32", "pred", kk, s.K)
    kc = L.split(kk, s.kdims) if s.kdims else {}
    vals = []
    for j in range(4):
        addr = L.offset(s.b, kc, b_cols[j]) if kc else b_cols[j]
        ok = e.op("and.pred", "pred", k_ok, n_oks[j])
        vals.append(L.guarded_load(s.b, addr, ok))
    e("st.shared.v4.f32", f"[{b_st}]", "{" + ", ".join(vals) + "}")
    e("bar.sync", 0)
    for q in range(BK):
        av = [e.reg("f32") for _ in range(4)]
        bv = [e.reg("f32") for _ in range(4)]
        e("ld.shared.v4.f32", "{" + ", ".join(av) + "}", f"[{a_rd}+{q * a_row_bytes}]")
        e("ld.shared.v4.f32", "{" + ", ".join(bv) + "}", f"[{b_rd}+{q * BN * 4}]")
        for i in range(4):
            for j in range(4):
                e("fma.rn.f32", acc[i][j], av[i], bv[j], acc[i][j])
    e("bar.sync", 0)
    e("add.u32", k0, k0, BK)
    e("bra.uni", top, guard=e.op("setp.lt.u32", "pred", k0, s.K))
    _epilogue(L, acc, by, bx, ty, tx, base[-1], 4)
    e("ret")
    shared = [f"As:{BK * a_row_bytes}:16", f"Bs:{BK * BN * 4}:16"]
    entry = ptx.EntryOp.make(name, [f"p{i}:u64" for i in range(len(g.params))], shared, e.ops)
    grid = (math.ceil(s.N / BN), math.ceil(s.M / BM), s.batch)
    return entry, Launch(name, op.kernel_name(), op.origin(), "gemm-fp32", grid,
                         (THREADS, 1, 1), g.params, shared_bytes=0)


def _epilogue(L: GemmLowering, acc: list[list[str]], by: str, bx: str, ty: str, tx: str,
              out_base: str, per: int, rows: list[str] | None = None,
              cols: list[str] | None = None) -> None:
    """acc[i][j] (+ init or the output's old value) -> out[m_i, n_j] where in range."""
    g, e, s, op = L.g, L.e, L.s, L.op
    dt = g.dtype(g.out)
    ms = rows if rows is not None else [
        e.op("add.u32", "u32", e.op("mad.lo.s32", "u32", by, BM,
                                    e.op("shl.b32", "u32", ty, 2)), i) for i in range(per)]
    ns = cols if cols is not None else [
        e.op("add.u32", "u32", e.op("mad.lo.s32", "u32", bx, BN,
                                    e.op("shl.b32", "u32", tx, 2)), j) for j in range(per)]
    n_off = []
    n_ok = []
    for n in ns:
        n_ok.append(e.op("setp.lt.u32", "pred", n, s.N))
        n_off.append(L.offset(-1, L.split(n, s.ndims), out_base))
    for i, m in enumerate(ms):
        m_ok = e.op("setp.lt.u32", "pred", m, s.M)
        mc = L.split(m, s.mdims)
        for j in range(len(ns)):
            skip = e.new_label("st")
            ok = e.op("and.pred", "pred", m_ok, n_ok[j])
            e("bra.uni", skip, guard=f"!{ok}")
            addr = L.offset(-1, mc, n_off[j])
            v = Val(acc[i][j], "f32", dt)
            start = g.acc_start(addr)
            r = e.op("add.rn.f32", "f32", start.reg, v.reg)
            pb.store(e, addr, Val(pb.normalize(e, r, dt), "f32", dt), dt)
            e.place(skip)
    _ = op
