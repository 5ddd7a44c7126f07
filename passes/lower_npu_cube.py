"""Cube-path builders: (batched) GEMM ``C = act(A @ B + bias)`` as an ``npu.kernel`` on the AIC.

This is what a matmul or an implicit-GEMM convolution lowers to on the NPU, and the entry point
the kernel-IR lowering calls (``build_gemm_kernel``/``build_gemm_module``). The data path is the
Da Vinci cube path::

    GM --MTE2--> L1 (ND tiles, ping-pong) --MTE1--> L0A zZ / L0B nZ (ping-pong, zero-padded)
       --M (mmad, fp32/int32 accumulate over K)--> L0C zN --FIX (bias, relu, cast)--> GM

Tiling comes from the SoC table (``plan_cube_tiling``): the output tile ``tm x tn`` fills L0C
(128 x 256 fp32 = 128 KB on 910b), the L0 K step ``tk`` lets two A and two B tiles fit L0A/L0B,
and the L1 K chunk ``k1`` lets two A and two B chunks (plus the bias) fit L1. Output tiles are
dealt round-robin to the cube cores (``t = block_idx, block_idx + block_num, ...``). Ping-pong
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
    """Tile sizes: L0C output tile ``tm x tn``, L0 K step ``tk``, L1 K chunk ``k1``."""

    tm: int
    tn: int
    tk: int
    k1: int


def _pow2_floor(x: int) -> int:
    return 1 << (max(1, x).bit_length() - 1)


def plan_cube_tiling(spec: GemmSpec, soc: NpuSoc = SOC_910B) -> CubeTiling:
    """Largest tiles the SoC's buffers hold with double buffering (see the module docstring).

    ``tm`` is at most 128 and ``tn`` at most 256 (L0C holds exactly 128 x 256 fp32); ``tk`` and
    ``k1`` are power-of-two multiples of the fractal K so that power-of-two K splits evenly."""
    if spec.dtype not in soc.cube:
        raise LoweringError(f"GEMM dtype {spec.dtype}: the {soc.name} cube takes "
                            f"{', '.join(soc.cube)}")
    k0 = soc.cube[spec.dtype].k0
    s = dtypes.dtype(spec.dtype).bits // 8
    acc = dtypes.dtype(spec.acc_dtype(soc)).bits // 8
    l0c = soc.space("l0c").size
    tm = min(128, ceil_to(spec.m, 16))
    # B's L1 rows are tn elements long and must start 32-byte aligned: int8 needs tn % 32 == 0
    n_align = max(16, soc.block_bytes // s)
    tn = min(256, ceil_to(spec.n, n_align), (l0c // (tm * acc)) // n_align * n_align)
    tk_cap = min(soc.space("l0a").size // (2 * tm * s), soc.space("l0b").size // (2 * tn * s))
    tk = k0 * _pow2_floor(min(tk_cap // k0, ceil_to(spec.k, k0) // k0))
    bias_bytes = 2 * tn * acc if spec.bias else 0
    k1_cap = (soc.space("l1").size - bias_bytes) // (2 * (tm + tn) * s)
    k1 = tk * _pow2_floor(min(k1_cap // tk, ceil_to(spec.k, tk) // tk))
    if tk < k0 or k1 < tk:
        raise LoweringError(f"GEMM {spec}: no tiling fits the {soc.name} buffers")
    return CubeTiling(tm, tn, tk, k1)


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
    l1a = [bld.alloc("l1", dt, t.tm * t.k1) for _ in range(2)]
    l1b = [bld.alloc("l1", dt, t.k1 * t.tn) for _ in range(2)]
    l1bias = bld.alloc("l1", acc, t.tn) if spec.bias else None
    l0a = [bld.alloc("l0a", dt, t.tm * t.tk) for _ in range(2)]
    l0b = [bld.alloc("l0b", dt, t.tk * t.tn) for _ in range(2)]
    l0c = bld.alloc("l0c", acc, t.tm * t.tn)

    with bld.loop(bld.block_idx(), tiles, bld.block_num()) as ti:
        _tile(bld, spec, t, gm, (l1a, l1b, l1bias, l0a, l0b, l0c), ti)
    return kernel


def _tile(bld: npu.NpuBuilder, spec: GemmSpec, t: CubeTiling, gm: dict[str, SSAValue],
          bufs: tuple, ti: SSAValue) -> None:
    """One output tile ``ti``: K loop over L1 chunks (pairs, then peeled odd/partial), FIX."""
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

    def chunk(slot: int, kk: SSAValue | int, ks: int, first: SSAValue | bool) -> None:
        """One L1 chunk of ``ks`` K-elements at K offset ``kk``: MTE2 A/B, then MTE1+mmad."""
        kk_v = bld.val(kk)
        bld.add(npu.Mte2Op.make(l1a[slot], bld.c(0), gm["a"], bld.add_i(a_base, kk_v), mt,
                                bld.c(ks), bld.c(K - ks), bld.c(t.k1 - ks)))
        if spec.trans_b:
            bld.add(npu.Mte2Op.make(l1b[slot], bld.c(0), gm["b"], bld.add_i(b_base, kk_v), nt,
                                    bld.c(ks), bld.c(K - ks), bld.c(t.k1 - ks)))
        else:
            bld.add(npu.Mte2Op.make(l1b[slot], bld.c(0), gm["b"],
                                    bld.add_i(b_base, bld.mul(kk_v, N)), bld.c(ks), nt,
                                    bld.sub(N, nt), bld.sub(t.tn, nt)))
        for j in range(-(-ks // t.tk)):
            kstep = min(t.tk, ks - j * t.tk)
            p = j % 2
            bld.add(npu.LoadL0Op.make(l0a[p], bld.c(0), l1a[slot], bld.c(j * t.tk), mt,
                                      bld.c(kstep), bld.c(t.k1)))
            if spec.trans_b:
                bld.add(npu.LoadL0Op.make(l0b[p], bld.c(0), l1b[slot], bld.c(j * t.tk), nt,
                                          bld.c(kstep), bld.c(t.k1), transpose=True))
            else:
                bld.add(npu.LoadL0Op.make(l0b[p], bld.c(0), l1b[slot], bld.c(j * t.tk * t.tn),
                                          bld.c(kstep), nt, bld.c(t.tn)))
            init = (first if isinstance(first, SSAValue) else bld.flag(first)) if j == 0 \
                else bld.flag(False)
            bld.add(npu.MmadOp.make(l0c, bld.c(0), l0a[p], bld.c(0), l0b[p], bld.c(0), mt, nt,
                                    bld.c(kstep), init))

    nfull, rem = divmod(K, t.k1)
    npair = nfull // 2
    if npair:
        with bld.loop(0, npair * 2 * t.k1, 2 * t.k1) as kk:
            first = bld.add(arith.CmpiOp(kk, bld.c(0), "eq")).results[0]
            chunk(0, kk, t.k1, first)
            chunk(1, bld.add_i(kk, t.k1), t.k1, False)
    if nfull % 2:
        chunk(0, (nfull - 1) * t.k1, t.k1, nfull == 1)
    if rem:
        chunk(nfull % 2, nfull * t.k1, rem, nfull == 0)
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
