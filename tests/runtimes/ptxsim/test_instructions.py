"""Integer, bit, predicate, vote and generic-addressing instructions against Python integers."""

from __future__ import annotations

import numpy as np
import pytest

from portc.runtimes.ptxsim import GlobalMemory, OutOfBoundsError, PtxSim, parse_module

from .kernels import ALL


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
