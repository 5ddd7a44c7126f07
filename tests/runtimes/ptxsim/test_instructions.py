"""Integer, bit, predicate, vote and generic-addressing instructions against Python integers."""

from __future__ import annotations

import numpy as np
import pytest

from portc.runtimes.ptxsim import (
    GlobalMemory,
    OutOfBoundsError,
    PtxSim,
    TrapError,
    UninitializedSharedError,
    UnsupportedInstructionError,
    parse_module,
)

from .kernels import ALL, HEADER, SETP_OPS


def _s32(v: int) -> int:
    v &= 0xFFFF_FFFF
    return v - (1 << 32) if v >= 1 << 31 else v


def _u32(v: int) -> int:
    return v & 0xFFFF_FFFF


def _trunc_div(a: int, b: int) -> tuple[int, int]:
    q = abs(a) // abs(b) * (1 if (a >= 0) == (b >= 0) else -1)
    return q, a - q * b


def _bfe(a: int, pos: int, ln: int, signed: bool) -> int:
    """The PTX ISA pseudo-code for bfe, bit by bit."""
    msb = 31
    sbit = ((a >> min(pos + ln - 1, msb)) & 1) if signed and ln else 0
    d = 0
    for i in range(msb + 1):
        bit = (a >> (pos + i)) & 1 if i < ln and pos + i <= msb else sbit
        d |= bit << i
    return d


def test_integer_bit_predicate_and_vote_instructions(rng):
    n = 64
    a = rng.integers(-(2**31), 2**31, n).astype(np.int64)
    b = rng.integers(-(2**31), 2**31, n).astype(np.int64)
    a[:8] = [-(2**31), 7, -7, 0, 1, 2**31 - 1, -1, 100]
    b[:8] = [-1, -2, 2, 5, 40, 1, 0x3E1, 0x7FF]
    b[b == 0] = 3
    mem = GlobalMemory()
    s = PtxSim(parse_module(ALL["int_ops"], "int_ops.ptx"), mem)
    pa, pb = mem.alloc("a", 4 * n), mem.alloc("b", 4 * n)
    mem.write(pa, a.astype(np.int32))
    mem.write(pb, b.astype(np.int32))
    pout = mem.alloc("out", 112 * n)
    s.launch("int_ops", grid=(1,), block=(n,), params=[pa, pb, pout])
    out = mem.read(pout, np.uint32, 28 * n).reshape(n, 28)[:, :26]
    for i in range(n):
        x, y = int(a[i]), int(b[i])
        ux, uy = _u32(x), _u32(y)
        sh = y & 63
        q, r = _trunc_div(x, y)
        if x == -(2**31) and y == -1:
            q, r = x, 0  # the overflowing quotient wraps
        warp = range(32 * (i // 32), 32 * (i // 32) + 32)
        want = [
            _u32((x * y) >> 32), _u32((ux * uy) >> 32), _u32(q), _u32(r), ux // uy, ux % uy,
            _u32(x >> min(sh, 31)), ux >> sh if sh < 32 else 0, _u32(ux << sh) if sh < 32 else 0,
            _u32(min(x, y)), max(ux, uy), _u32(abs(x)), _u32(-x), bin(ux).count("1"),
            32 - ux.bit_length(), _bfe(ux, y & 31, (y >> 5) & 31, False),
            _bfe(ux, y & 31, (y >> 5) & 31, True), int(f"{ux:032b}"[::-1], 2),
            _u32(max(-128, min(127, x))), ux & 0xFFFF,
            int(x < y and x % 2 != 0) | (int(x >= y and x % 2 != 0) << 1),
            _u32(x * y), _u32((x * y) >> 32), _u32(max(-(2**31), min(2**31 - 1, x + y))),
            sum(1 << (j % 32) for j in warp if a[j] > 0),
            int(any(a[j] < b[j] and a[j] % 2 != 0 for j in warp)),
        ]
        got = [int(v) for v in out[i]]
        assert got == want, (i, x, y, [(k, g, e) for k, (g, e) in enumerate(zip(got, want, strict=True)) if g != e])


def test_generic_addressing_and_dynamic_shared(rng):
    x = rng.standard_normal(32).astype(np.float32)
    mem = GlobalMemory()
    s = PtxSim(parse_module(ALL["generic"], "generic.ptx"), mem)
    pin, pout = mem.alloc("in", 128), mem.alloc("out", 128)
    mem.write(pin, x)
    s.launch("generic", grid=(1,), block=(32,), params=[pin, pout], dynamic_shared=128)
    partner = x[np.arange(32) ^ 31]
    np.testing.assert_array_equal(mem.read(pout, np.float32, 32), partner + (partner + partner) + 128)
    with pytest.raises(OutOfBoundsError, match="dynbuf"):
        s.launch("generic", grid=(1,), block=(32,), params=[pin, pout], dynamic_shared=64)


def test_mma_m16n8k32_s8_matches_integer_matmul(rng):
    A = rng.integers(-128, 128, (16, 32)).astype(np.int8)
    B = rng.integers(-128, 128, (32, 8)).astype(np.int8)
    C = rng.integers(-(2**20), 2**20, (16, 8)).astype(np.int32)
    mem = GlobalMemory()
    s = PtxSim(parse_module(ALL["mma_s8"], "mma_s8.ptx"), mem)
    ptrs = []
    for name, arr in (("A", A), ("Bt", np.ascontiguousarray(B.T)), ("C", C)):
        p = mem.alloc(name, arr.nbytes)
        mem.write(p, arr)
        ptrs.append(p)
    pd = mem.alloc("D", 512)
    s.launch("mma_s8", grid=(1,), block=(32,), params=[*ptrs, pd])
    want = A.astype(np.int64) @ B.astype(np.int64) + C
    np.testing.assert_array_equal(mem.read(pd, np.int32, 128).reshape(16, 8), want)


def test_prmt_copysign_testp(rng):
    words = rng.integers(0, 2**32, 32, dtype=np.uint64).astype(np.uint32)
    words[0] = np.float32(1e-40).view(np.uint32)  # subnormal
    words[1] = np.float32(np.inf).view(np.uint32)
    words[2] = np.float32(np.nan).view(np.uint32)
    words[3] = np.float32(-2.5).view(np.uint32)
    mem = GlobalMemory()
    s = PtxSim(parse_module(ALL["misc"], "misc.ptx"), mem)
    pa, pout = mem.alloc("a", 128), mem.alloc("out", 512)
    mem.write(pa, words)
    s.launch("misc", grid=(1,), block=(32,), params=[pa, pout])
    out = mem.read(pout, np.uint32, 128).reshape(32, 4)
    for i in range(32):
        a, b = int(words[i]), i
        src = a | (b << 32)
        byte = [(src >> (8 * k)) & 0xFF for k in range(8)]
        # selector 0x7531: d bytes = src bytes 1, 3, 5, 7
        assert out[i, 0] == byte[1] | byte[3] << 8 | byte[5] << 16 | byte[7] << 24
        # selector 0x8880: byte 0, then three copies of byte 0's sign
        sign = 0xFF if byte[0] & 0x80 else 0
        assert out[i, 1] == byte[0] | sign << 8 | sign << 16 | sign << 24
    f = words.view(np.float32)
    want_sign = np.copysign(np.float32(-1.0), f)
    np.testing.assert_array_equal(out[:, 2].view(np.float32)[~np.isnan(f)], want_sign[~np.isnan(f)])
    finite = np.isfinite(f)
    sub = (f != 0) & (np.abs(f) < np.finfo(np.float32).tiny)
    np.testing.assert_array_equal(out[:, 3], finite.astype(np.uint32) | 2 * sub)
    assert out[0, 3] == 3 and out[1, 3] == 0 and out[2, 3] == 0


def test_trap_is_reported_with_the_trapping_thread():
    s = PtxSim(parse_module(ALL["trap"], "trap.ptx"), GlobalMemory())
    with pytest.raises(TrapError, match=r"thread \(5,0,0\)"):
        s.launch("trap_kernel", grid=(1,), block=(32,))


def test_unknown_qualifier_is_refused_rather_than_ignored():
    text = HEADER + """
.visible .entry k()
{
    .reg .f32 %f<4>;
    max.NaN.f32 %f1, %f2, %f3;
    ret;
}
"""
    with pytest.raises(UnsupportedInstructionError, match=r"qualifier \.NaN"):
        parse_module(text, "k.ptx")


def test_lane_masks_and_immediate_shifts():
    mem = GlobalMemory()
    s = PtxSim(parse_module(ALL["lanemask"], "lanemask.ptx"), mem)
    pout = mem.alloc("out", 64 * 32)
    s.launch("lanemask", grid=(1,), block=(64,), params=[pout])
    out = mem.read(pout, np.uint32, 64 * 8).reshape(64, 8)
    for t in range(64):
        lane = t % 32
        neg = -t
        assert out[t, 0] == (1 << lane) - 1
        assert out[t, 1] == _u32(~((1 << lane) - 1))
        assert out[t, 2] == _u32(neg >> 3)
        assert out[t, 3] == _u32(neg >> 31)       # shift amounts clamp to the width
        assert out[t, 4] == 0
        assert out[t, 5] == _u32(t << 29)


def test_setp_all_float_comparisons_including_unordered(rng):
    x = rng.integers(-3, 4, 64).astype(np.float32)
    y = rng.integers(-3, 4, 64).astype(np.float32)
    x[:4] = [np.nan, 1.0, np.nan, -0.0]
    y[:4] = [1.0, np.nan, np.nan, 0.0]
    mem = GlobalMemory()
    s = PtxSim(parse_module(ALL["setp_all"], "setp.ptx"), mem)
    px, py, po = mem.alloc("x", 256), mem.alloc("y", 256), mem.alloc("out", 1024)
    mem.write(px, x)
    mem.write(py, y)
    s.launch("setp_all", grid=(1,), block=(64,), params=[px, py, po])
    out = mem.read(po, np.uint32, 256).reshape(64, 4)
    with np.errstate(invalid="ignore"):
        nan = np.isnan(x) | np.isnan(y)
        ordered = {"eq": x == y, "ne": (x != y) & ~nan, "lt": x < y, "le": x <= y, "gt": x > y,
                   "ge": x >= y}
    ref = dict(ordered)
    for k, v in ordered.items():
        ref[k + "u"] = v | nan
    ref["num"], ref["nan"] = ~nan, nan
    t = np.arange(64)
    for k, op in enumerate(SETP_OPS):
        np.testing.assert_array_equal((out[:, 0] >> k) & 1, ref[op].astype(np.uint32), err_msg=op)
    lt_or = ordered["lt"] | (t % 2 == 1)
    np.testing.assert_array_equal((out[:, 0] >> 14) & 1, lt_or)
    np.testing.assert_array_equal((out[:, 0] >> 15) & 1, ~lt_or & 1)
    # shl.b16 by 12 then arithmetic shr.s16 by 4; 64-bit shifts
    shifted = ((t << 12) & 0xFFFF).astype(np.uint16).view(np.int16) >> 4
    np.testing.assert_array_equal(out[:, 1], shifted.view(np.uint16))
    np.testing.assert_array_equal(out[:, 2], (t << 8) & 0xFFFFFFFF)
    # cvt.rn.f16x2.f32 d, x, y: x in the upper half, y in the lower
    np.testing.assert_array_equal(out[:, 3] >> 16, x.astype(np.float16).view(np.uint16))
    np.testing.assert_array_equal(out[:, 3] & 0xFFFF, y.astype(np.float16).view(np.uint16))


def test_cp_async_src_size_zero_fills_and_ldmatrix_x1(rng):
    src = rng.integers(1, 256, 32 * 16).astype(np.uint8)
    mem = GlobalMemory()
    s = PtxSim(parse_module(ALL["cp_zfill"], "cp.ptx"), mem)
    pin, pout, pmat = mem.alloc("in", 512), mem.alloc("out", 512), mem.alloc("mat", 128)
    mem.write(pin, src)
    s.launch("cp_zfill", grid=(1,), block=(32,), params=[pin, pout, pmat])
    got = mem.read(pout, np.uint8, 512).reshape(32, 16)
    want = src.reshape(32, 16).copy()
    for t in range(32):
        want[t, t % 17:] = 0
    np.testing.assert_array_equal(got, want)
    # ldmatrix.x1: rows 0..7 come from lanes 0..7 (16 bytes each, i.e. the first 128 bytes)
    m = want[:8].reshape(8, 16).view(np.uint16)  # 8 x 8 b16
    mat = mem.read(pmat, np.uint32, 32)
    for lane in range(32):
        r, c = lane // 4, 2 * (lane % 4)
        assert mat[lane] == int(m[r, c]) | (int(m[r, c + 1]) << 16)


def test_64bit_shared_and_wrapping_atomics(rng):
    vals = rng.integers(0, 2**40, 96, dtype=np.uint64)
    mem = GlobalMemory()
    s = PtxSim(parse_module(ALL["atomics2"], "atomics2.ptx"), mem)
    pin, pout = mem.alloc("in", 8 * 96), mem.alloc("out", 32)
    mem.write(pin, vals)
    mem.write(pout, np.array([2**63, 0, 0, 0], np.uint64))
    s.launch("atomics2", grid=(1,), block=(96,), params=[pin, pout])
    out = mem.read(pout, np.uint64, 4)
    assert int(out[0]) == (2**63 + int(vals.sum())) % 2**64
    words = mem.read(pout + 8, np.uint32, 2)
    # inc with limit 4 cycles 0..4; 96 increments from 0 end at 96 % 5; dec from 0 wraps to 4
    assert words[0] == 96 % 5
    dec = 0
    for _ in range(96):
        dec = 4 if dec == 0 or dec > 4 else dec - 1
    assert words[1] == dec
    low = (vals & 0xFFFF_FFFF).astype(np.uint32).view(np.int32).astype(np.int64)
    assert int(mem.read(pout + 16, np.int32, 1)[0]) == _s32(-int(low.sum()))


def test_cp_async_groups_are_counted_per_thread():
    words = np.arange(1, 65, dtype=np.uint32) * 7
    mem = GlobalMemory()
    mod = parse_module(ALL["cp_groups"], "cp_groups.ptx")
    pin, pout = mem.alloc("in", 256), mem.alloc("out", 256)
    mem.write(pin, words)
    # even threads read their destination before its group completed: with the
    # uninitialised-shared check on, that read is the fault
    with pytest.raises(UninitializedSharedError, match=r"thread \(0,0,0\).*wa\+0"):
        PtxSim(mod, mem).launch("cp_groups", grid=(1,), block=(32,), params=[pin, pout])
    s = PtxSim(mod, mem, check_shared_init=False)
    s.launch("cp_groups", grid=(1,), block=(32,), params=[pin, pout])
    out = mem.read(pout, np.uint32, 64).reshape(32, 2)
    t = np.arange(32)
    # after wait_group 1, only odd threads (two groups committed) are sure of group 0;
    # even threads' single group may still be in flight (ptxsim: not landed yet)
    np.testing.assert_array_equal(out[:, 0], np.where(t % 2 == 1, words[:32], 0))
    np.testing.assert_array_equal(out[:, 1], words[:32])  # after wait_all


def test_64bit_integer_arithmetic(rng):
    n = 32
    a = rng.integers(-(2**63), 2**63, n, dtype=np.int64)
    b = rng.integers(-(2**63), 2**63, n, dtype=np.int64)
    a[:4] = [-(2**63), -7, 7, 2**63 - 1]
    b[:4] = [-1, 2, -2, 2**62 + 3]
    b[4] = rng.integers(1, 1000)
    mem = GlobalMemory()
    s = PtxSim(parse_module(ALL["int64_ops"], "int64.ptx"), mem)
    pa, pb, po = mem.alloc("a", 8 * n), mem.alloc("b", 8 * n), mem.alloc("out", 80 * n)
    mem.write(pa, a)
    mem.write(pb, b)
    s.launch("int64_ops", grid=(1,), block=(n,), params=[pa, pb, po])
    out = mem.read(po, np.uint64, 10 * n).reshape(n, 10)
    m64 = 2**64 - 1
    for i in range(n):
        x, y = int(a[i]), int(b[i])
        ux, uy = x & m64, y & m64
        q = abs(x) // abs(y) * (1 if (x >= 0) == (y >= 0) else -1)
        r = x - q * y
        want = [((x * y) >> 64) & m64, (ux * uy) >> 64, q & m64, r & m64, ux // uy, ux % uy,
                min(x, y) & m64, max(ux, uy), (x * y + x) & m64]
        assert [int(v) for v in out[i, :9]] == want, i


def test_float_min_max_ignore_nan_and_order_signed_zeros():
    from portc.runtimes.ptxsim.decode import _fmax, _fmin

    a = np.array([0.0, -0.0, np.nan, 1.0, np.nan], np.float32)
    b = np.array([-0.0, 0.0, 2.0, np.nan, np.nan], np.float32)
    lo, hi = _fmin(a, b), _fmax(a, b)
    np.testing.assert_array_equal(np.signbit(lo[:2]), [True, True])
    np.testing.assert_array_equal(np.signbit(hi[:2]), [False, False])
    np.testing.assert_array_equal(lo[2:4], [2.0, 1.0])
    assert np.isnan(lo[4]) and np.isnan(hi[4])


def test_module_global_and_const_variables_with_initializers():
    mod = parse_module(ALL["globals"], "globals.ptx")
    assert mod.globals["tbl"].data.view(np.float32).tolist() == [1.0, 2.5, 3.0, -1.0]
    mem = GlobalMemory()
    s = PtxSim(mod, mem)
    pout = mem.alloc("out", 16 * 32)
    for launch in range(2):
        s.launch("globals", grid=(1,), block=(32,), params=[pout])
        out = mem.read(pout, np.uint32, 128).reshape(32, 4)
        t = np.arange(32)
        np.testing.assert_array_equal(out[:, 0].view(np.float32), np.array([1.0, 2.5, 3.0, -1.0], np.float32)[t % 4])
        np.testing.assert_array_equal(out[:, 1], np.array([7, 16, 0xFFFFFFFF], np.uint32)[t % 3])
        assert (out[:, 2] == 16).all()
        # the counter persists across launches: tickets 0..31, then 32..63
        np.testing.assert_array_equal(np.sort(out[:, 3]), np.arange(32) + 32 * launch)
    assert mem.read(s.global_addr["counter"], np.uint64, 1)[0] == 64


def test_per_thread_local_memory_through_local_and_generic_pointers():
    mem = GlobalMemory()
    s = PtxSim(parse_module(ALL["local_depot"], "local.ptx"), mem)
    pout = mem.alloc("out", 4 * 64)
    s.launch("local_depot", grid=(1,), block=(64,), params=[pout, 8])
    t = np.arange(64)
    np.testing.assert_array_equal(mem.read(pout, np.uint32, 64),
                                  (t * (t % 8) + 1) + (t * (7 - t % 8) + 1))
    # element 8 is even, so it goes through the generic pointer into the local window
    with pytest.raises(OutOfBoundsError, match=r"`st\.u32 \[%rd3\], %r3`.*local offset 32"):
        s.launch("local_depot", grid=(1,), block=(64,), params=[pout, 9])
