"""Cube-path builders: (batched) GEMM ``C = act(A @ B + bias)`` as an ``npu.kernel`` on the AIC.

This is what a matmul or an implicit-GEMM convolution lowers to on the NPU, and the entry point
the kernel-IR lowering calls (``build_gemm_kernel``/``build_gemm_module``). The data path is the
Da Vinci cube path::

    GM --MTE2--> L1 (ND tiles, ping-pong) --MTE1--> L0A zZ / L0B nZ (ping-pong, zero-padded)
       --M (mmad, fp32/int32 accumulate over K)--> L0C zN --FIX (bias, relu, cast)--> GM

Tiling comes from the SoC table (``plan_cube_tiling``): among output tiles ``tm x tn`` that fit
L0C (at most 128 x 256 fp32 = 128 KB on 910b), with the L0 K step ``tk`` letting two A and two
B tiles fit L0A/L0B and the L1 K chunk ``k1`` two A and two B chunks (plus the bias) fit L1, the
one with the fewest cycles under a closed form of npusim's cost model (``estimate_cycles``).
Output tiles are dealt round-robin to the cube cores (``t = block_idx, block_idx +
block_num, ...``). Ping-pong
buffers are distinct allocations and the K loop is unrolled by two so their identities are
static; no flag is placed here -- ``npu-insert-sync`` derives all of them
(``build_gemm_module`` runs it).

Edges: M and N tile sizes are ``min(tile, remaining)`` computed on the scalar unit; MTE1 pads
partial tiles with zeros to whole fractals, so rows/columns beyond the matrix contribute zeros
and FIX writes only the valid ``mt x nt`` rectangle. K is static: full L1 chunks run in the loop,
an odd leftover chunk and the partial last chunk are peeled.

GM arguments (flat, row-major): ``a`` [batch, M, K], ``b`` [batch, K, N] (``trans_b``: [batch,
N, K]), optional ``bias`` [N] float32 (int32 for int8), ``c`` [batch, M, N] of ``out_dtype``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.dialects import arith
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue

from portc.compiler.errors import LoweringError
from portc.dialects import dtypes, npu
from portc.dialects.npu_soc import SOC_910B, NpuSoc, ceil_to
from portc.passes.npu_sync import insert_sync


@dataclass(frozen=True)
class GemmSpec:
    """One (batched) GEMM: ``c[b] = act(a[b] @ b[b] + bias)`` with static shapes."""

    m: int
    n: int
    k: int
    batch: int = 1
    dtype: str = "float16"  # float16 | bfloat16 | int8 (A and B)
    out_dtype: str | None = None  # default: dtype for floats, int32 for int8
    bias: bool = False
    relu: bool = False
    trans_b: bool = False  # B given as [N, K] (a Linear layer's weight)

    @property
    def result_dtype(self) -> str:
        if self.out_dtype is not None:
            return self.out_dtype
        return "int32" if self.dtype == "int8" else self.dtype

    def acc_dtype(self, soc: NpuSoc) -> str:
        return soc.cube[self.dtype].acc


@dataclass(frozen=True)
class CubeTiling:
    """Tile sizes: L0C output tile ``tm x tn``, L0 K step ``tk``, L1 K unit ``k1``; an L1
    chunk of A spans ``ra`` units and one of B ``rb`` (one of them 1, the other 1 or 2), so
    the operand whose chunk costs fewer L1 bytes per K is loaded by fewer, longer DMAs."""

    tm: int
    tn: int
    tk: int
    k1: int
    ra: int = 1
    rb: int = 1

    @property
    def ka(self) -> int:
        return self.ra * self.k1

    @property
    def kb(self) -> int:
        return self.rb * self.k1


def _pow2_floor(x: int) -> int:
    return 1 << (max(1, x).bit_length() - 1)


def _fit_k(spec: GemmSpec, tm: int, tn: int, soc: NpuSoc) -> list[CubeTiling]:
    """The K steps for a ``tm x tn`` output tile: ``tk`` lets two A and two B tiles fit
    L0A/L0B; the L1 unit ``k1`` lets two A chunks of ``ra * k1`` and two B chunks of
    ``rb * k1`` (plus the bias) fit L1. Steps are power-of-two multiples of the fractal K so
    that power-of-two K splits evenly. One candidate per chunk ratio; none if nothing fits."""
    k0 = soc.cube[spec.dtype].k0
    s = dtypes.dtype(spec.dtype).bits // 8
    acc = dtypes.dtype(spec.acc_dtype(soc)).bits // 8
    if tm * tn * acc > soc.space("l0c").size:
        return []
    tk_cap = min(soc.space("l0a").size // (2 * tm * s), soc.space("l0b").size // (2 * tn * s))
    if tk_cap < k0:
        return []
    tk = k0 * _pow2_floor(min(tk_cap // k0, ceil_to(spec.k, k0) // k0))
    l1 = soc.space("l1").size - (2 * tn * acc if spec.bias else 0)
    out = []
    for ra, rb in ((1, 1), (2, 1), (1, 2)):
        k1_cap = l1 // (2 * (ra * tm + rb * tn) * s)
        if k1_cap < tk:
            continue
        k1 = tk * _pow2_floor(min(k1_cap // tk, ceil_to(spec.k, tk) // tk))
        if (ra, rb) != (1, 1) and max(ra, rb) * k1 > ceil_to(spec.k, tk):
            continue  # a chunk longer than K buys nothing
        out.append(CubeTiling(tm, tn, tk, k1, ra, rb))
    return out


def _k_units(K: int, t: CubeTiling) -> list[int]:
    """Lengths of the L1 K units of one tile, in order (the last one partial)."""
    return [min(t.k1, K - k) for k in range(0, K, t.k1)]


def estimate_cycles(spec: GemmSpec, t: CubeTiling, soc: NpuSoc = SOC_910B) -> float:
    """The GEMM's cycles under npusim's cost model, in closed form, for ``t``: each core runs
    its tiles (round-robin, edge tiles clipped) back to back; a tile takes the longest of its
    MTE2, MTE1 and cube work (they overlap through the ping-pong buffers) plus its FIX (the one
    L0C is busy until FIX has read it); the launch takes the busiest core's time plus the
    first chunk's load, which nothing hides. MTE2 runs at the core's share of the GM
    bandwidth, as in npusim. Used to choose the tiling; npusim's run is the measurement."""
    M, N, K, B = spec.m, spec.n, spec.k, spec.batch
    k0 = soc.cube[spec.dtype].k0
    s = dtypes.dtype(spec.dtype).bits // 8
    acc = dtypes.dtype(spec.acc_dtype(soc)).bits // 8
    mt_n, nt_n = -(-M // t.tm), -(-N // t.tn)
    tiles = B * mt_n * nt_n
    cores = min(soc.aic_cores, tiles)
    lat, bw = soc.engine_latency, soc.engine_bytes_per_cycle
    share = min(bw["MTE2"], soc.gm_bytes_per_cycle / cores)
    ti = np.arange(tiles)
    r = ti % (mt_n * nt_n)
    mt = np.minimum(t.tm, M - (r // nt_n) * t.tm)
    nt = np.minimum(t.tn, N - (r % nt_n) * t.tn)
    mp, np_ = -(-mt // 16) * 16, -(-nt // 16) * 16
    ksteps = [min(t.tk, ks - j * t.tk) for ks in _k_units(K, t) for j in range(-(-ks // t.tk))]
    kpad = sum(ceil_to(kk, k0) for kk in ksteps)
    mmad = soc.costs["mmad"]
    cube = len(ksteps) * mmad.startup + (mp // 16) * (np_ // 16) * (kpad // k0) * mmad.per_unit
    ndma = -(-K // t.ka) + -(-K // t.kb)
    mte2 = ndma * lat["MTE2"] + (mt + nt) * K * s / share
    mte1 = 2 * len(ksteps) * lat["MTE1"] + (mp + np_) * kpad * s / bw["MTE1"]
    fix = lat["FIX"] + mp * np_ * acc / bw["FIX"]
    tile = np.maximum(np.maximum(cube, mte2), mte1) + fix
    busiest = float(np.bincount(ti % cores, weights=tile).max())
    first = 2 * lat["MTE2"] + (t.tm * min(K, t.ka) + t.tn * min(K, t.kb)) * s / share
    return busiest + first


def plan_cube_tiling(spec: GemmSpec, soc: NpuSoc = SOC_910B) -> CubeTiling:
    """The tiling with the fewest estimated cycles (``estimate_cycles``) among output tiles
    ``tm x tn`` of whole fractals up to 256 x 256 that fill at most L0C (128 x 256 fp32 on
    910b), each with the largest double-buffered K steps (``_fit_k``). Big GEMMs get big
    tiles (arithmetic intensity: MTE2 is the limit); small ones get many small tiles, so all
    24 cube cores work (a 32 x 384 x 384 encoder projection: 24 tiles of 32 x 16, not 2 of
    32 x 256)."""
    if spec.dtype not in soc.cube:
        raise LoweringError(f"GEMM dtype {spec.dtype}: the {soc.name} cube takes "
                            f"{', '.join(soc.cube)}")
    s = dtypes.dtype(spec.dtype).bits // 8
    # B's L1 rows are tn elements long and must start 32-byte aligned: int8 needs tn % 32 == 0
    n_align = max(16, soc.block_bytes // s)
    best: tuple[float, int, CubeTiling] | None = None
    for tm in range(16, min(256, ceil_to(spec.m, 16)) + 1, 16):
        for tn in range(n_align, min(256, ceil_to(spec.n, n_align)) + 1, n_align):
            for t in _fit_k(spec, tm, tn, soc):
                key = (estimate_cycles(spec, t, soc), -tm * tn, t)
                if best is None or key[:2] < best[:2]:
                    best = key
    if best is None:
        raise LoweringError(f"GEMM {spec}: no tiling fits the {soc.name} buffers")
    return best[2]


def build_gemm_kernel(spec: GemmSpec, name: str = "gemm", soc: NpuSoc = SOC_910B,
                      tiling: CubeTiling | None = None) -> npu.KernelOp:
    """The GEMM as one AIC kernel *without* flags (run ``insert_sync`` or use
    ``build_gemm_module``). Arguments: ``a``, ``b``, [``bias``], ``c`` (module docstring)."""
    t = tiling or plan_cube_tiling(spec, soc)
    M, N, K, B = spec.m, spec.n, spec.k, spec.batch
    if min(M, N, K, B) < 1:
        raise LoweringError(f"GEMM {spec}: every dimension must be >= 1")
    dt, acc, out = spec.dtype, spec.acc_dtype(soc), spec.result_dtype
    mt_n, nt_n = -(-M // t.tm), -(-N // t.tn)
    tiles = B * mt_n * nt_n
    args = [("a", dt, B * M * K), ("b", dt, B * K * N)]
    if spec.bias:
        args.append(("bias", acc, N))
    args.append(("c", out, B * M * N))
    kernel = npu.KernelOp.make(name, "aic", min(soc.aic_cores, tiles), args, soc.name)
    gm = dict(zip([a[0] for a in args], kernel.body.block.args, strict=True))
    bld = npu.NpuBuilder(kernel)

    # on-chip buffers: two L1 chunks per operand, two L0 tiles per operand, one L0C tile
    l1a = [bld.alloc("l1", dt, t.tm * t.ka) for _ in range(2)]
    l1b = [bld.alloc("l1", dt, t.kb * t.tn) for _ in range(2)]
    l1bias = bld.alloc("l1", acc, t.tn) if spec.bias else None
    l0a = [bld.alloc("l0a", dt, t.tm * t.tk) for _ in range(2)]
    l0b = [bld.alloc("l0b", dt, t.tk * t.tn) for _ in range(2)]
    l0c = bld.alloc("l0c", acc, t.tm * t.tn)

    with bld.loop(bld.block_idx(), tiles, bld.block_num()) as ti:
        _tile(bld, spec, t, gm, (l1a, l1b, l1bias, l0a, l0b, l0c), ti)
    return kernel


def _tile(bld: npu.NpuBuilder, spec: GemmSpec, t: CubeTiling, gm: dict[str, SSAValue],
          bufs: tuple, ti: SSAValue) -> None:
    """One output tile ``ti``: the K loop over periods of L1 units, the peeled tail, FIX.

    A *period* is ``2 * max(ra, rb)`` units: after it both L1 ping-pongs and the L0 one are
    back at slot 0, so the loop body's buffer identities are static (the sync pass needs
    that). Unit ``u`` of a period loads A into slot ``(u // ra) % 2`` when ``u % ra == 0``
    (``ra`` units of K at once) and likewise B; every L0 step alternates the L0 slot."""
    l1a, l1b, l1bias, l0a, l0b, l0c = bufs
    M, N, K = spec.m, spec.n, spec.k
    mt_n, nt_n = -(-M // t.tm), -(-N // t.tn)
    per_batch = mt_n * nt_n
    bi = bld.div(ti, per_batch)
    r = bld.rem(ti, per_batch)
    m0 = bld.mul(bld.div(r, nt_n), t.tm)
    n0 = bld.mul(bld.rem(r, nt_n), t.tn)
    mt = bld.min(t.tm, bld.sub(M, m0))
    nt = bld.min(t.tn, bld.sub(N, n0))
    a_base = bld.add_i(bld.mul(bi, M * K), bld.mul(m0, K))
    b_base = bld.add_i(bld.mul(bi, K * N), bld.mul(n0, K) if spec.trans_b else n0)
    c_base = bld.add_i(bld.add_i(bld.mul(bi, M * N), bld.mul(m0, N)), n0)
    step = [0]  # L0 ping-pong position, counted over the static schedule

    def load_a(slot: int, kk: SSAValue | int, ks: int) -> None:
        kk_v = bld.val(kk)
        bld.add(npu.Mte2Op.make(l1a[slot], bld.c(0), gm["a"], bld.add_i(a_base, kk_v), mt,
                                bld.c(ks), bld.c(K - ks), bld.c(t.ka - ks)))

    def load_b(slot: int, kk: SSAValue | int, ks: int) -> None:
        kk_v = bld.val(kk)
        if spec.trans_b:
            bld.add(npu.Mte2Op.make(l1b[slot], bld.c(0), gm["b"], bld.add_i(b_base, kk_v), nt,
                                    bld.c(ks), bld.c(K - ks), bld.c(t.kb - ks)))
        else:
            bld.add(npu.Mte2Op.make(l1b[slot], bld.c(0), gm["b"],
                                    bld.add_i(b_base, bld.mul(kk_v, N)), bld.c(ks), nt,
                                    bld.sub(N, nt), bld.sub(t.tn, nt)))

    def unit(u: int, kk: SSAValue | int, ks: int, first: SSAValue | bool) -> None:
        """Unit ``u`` of the schedule at K offset ``kk``: its loads, then MTE1 + mmad."""
        sa, oa = (u // t.ra) % 2, (u % t.ra) * t.k1
        sb, ob = (u // t.rb) % 2, (u % t.rb) * t.k1
        if oa == 0:  # the chunk covers this unit and the next ra - 1 (the tail: what is left)
            load_a(sa, kk, min(t.ka, K - kk) if isinstance(kk, int) else t.ka)
        if ob == 0:
            load_b(sb, kk, min(t.kb, K - kk) if isinstance(kk, int) else t.kb)
        for j in range(-(-ks // t.tk)):
            kstep = min(t.tk, ks - j * t.tk)
            p = step[0] % 2
            step[0] += 1
            bld.add(npu.LoadL0Op.make(l0a[p], bld.c(0), l1a[sa], bld.c(oa + j * t.tk), mt,
                                      bld.c(kstep), bld.c(t.ka)))
            if spec.trans_b:
                bld.add(npu.LoadL0Op.make(l0b[p], bld.c(0), l1b[sb], bld.c(ob + j * t.tk), nt,
                                          bld.c(kstep), bld.c(t.kb), transpose=True))
            else:
                bld.add(npu.LoadL0Op.make(l0b[p], bld.c(0), l1b[sb],
                                          bld.c((ob + j * t.tk) * t.tn), bld.c(kstep), nt,
                                          bld.c(t.tn)))
            init = (first if isinstance(first, SSAValue) else bld.flag(first)) if j == 0 \
                else bld.flag(False)
            bld.add(npu.MmadOp.make(l0c, bld.c(0), l0a[p], bld.c(0), l0b[p], bld.c(0), mt, nt,
                                    bld.c(kstep), init))

    period = 2 * max(t.ra, t.rb)
    span = period * t.k1
    loops = K // span
    if loops:
        with bld.loop(0, loops * span, span) as kk:
            first = bld.add(arith.CmpiOp(kk, bld.c(0), "eq")).results[0]
            for u in range(period):
                unit(u, bld.add_i(kk, u * t.k1) if u else kk, t.k1, first if u == 0 else False)
    for u, k in enumerate(range(loops * span, K, t.k1)):
        unit(u, k, min(t.k1, K - k), loops == 0 and u == 0)
    bias = None
    if l1bias is not None:
        bld.add(npu.Mte2Op.make(l1bias, bld.c(0), gm["bias"], n0, bld.c(1), nt, bld.c(0),
                                bld.c(0)))
        bias = (l1bias, bld.c(0))
    bld.add(npu.FixOp.make(gm["c"], c_base, l0c, bld.c(0), mt, nt, bld.c(N), spec.relu, bias))


def build_gemm_module(spec: GemmSpec, name: str = "gemm", soc: NpuSoc = SOC_910B,
                      tiling: CubeTiling | None = None, sync: bool = True) -> ModuleOp:
    """A verified module holding the GEMM kernel, flags derived by ``npu-insert-sync``."""
    kernel = build_gemm_kernel(spec, name, soc, tiling)
    module = ModuleOp([kernel])
    if sync:
        insert_sync(module)
    module.verify()
    return module
