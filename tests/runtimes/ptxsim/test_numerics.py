"""Rounding modifiers and conversions against an exact reference built on ``fractions.Fraction``:
the exact result is bracketed between neighbouring representable values by comparing rationals,
then the mode picks one — an algorithm independent of ptxsim's error-free transforms."""

from __future__ import annotations

import math
from fractions import Fraction

import ml_dtypes
import numpy as np

from portc.runtimes.ptxsim import GlobalMemory, PtxSim, parse_module

from .kernels import ALL


def _as_frac(v: np.floating) -> Fraction:
    return Fraction(float(v))


def round_ref(q: Fraction, dt: type, mode: str) -> float:
    """IEEE rounding of the rational ``q`` into ``dt`` (float16/float32); infinity behaves as
    the next power of two above the largest finite value, as IEEE overflow does."""
    with np.errstate(over="ignore"):
        return _round_ref(q, dt, mode)


def _round_ref(q: Fraction, dt: type, mode: str) -> float:
    fi = np.finfo(dt)
    big = Fraction(2) ** (fi.maxexp)

    def val(c: np.floating) -> Fraction:
        return big * (1 if c > 0 else -1) if np.isinf(c) else _as_frac(c)

    with np.errstate(over="ignore"):
        c = np.array(float(q) if abs(q) < 2 * big else math.copysign(math.inf, q)).astype(dt)[()]
    if np.isinf(c):
        c = dt(fi.max) if c > 0 else dt(-fi.max)
    while not np.isinf(c) and val(c) > q:
        c = np.nextafter(c, dt(-np.inf))
    while not np.isinf(np.nextafter(c, dt(np.inf))) and val(np.nextafter(c, dt(np.inf))) <= q:
        c = np.nextafter(c, dt(np.inf))
    lo = c
    if val(lo) == q:
        return float(lo)
    hi = np.nextafter(lo, dt(np.inf))
    if mode == "rz":
        return float(lo if q > 0 else hi)
    if mode == "rm":
        return float(lo)
    if mode == "rp":
        return float(hi)
    dlo, dhi = q - val(lo), val(hi) - q
    if dlo != dhi:
        return float(lo if dlo < dhi else hi)
    even_lo = int(np.array(lo).view(np.uint16 if dt == np.float16 else np.uint32)) % 2 == 0
    return float(lo if even_lo else hi)


def _inputs(rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = 256
    x = (rng.standard_normal(n) * 2.0 ** rng.integers(-12, 12, n)).astype(np.float32)
    y = (rng.standard_normal(n) * 2.0 ** rng.integers(-12, 12, n)).astype(np.float32)
    z = (rng.standard_normal(n) * 2.0 ** rng.integers(-12, 12, n)).astype(np.float32)
    special = [
        (1.0, 2.0**-24, 0.0),                # add: exact tie, nearest-even keeps 1.0
        (1.0 + 2.0**-11, 3.0, -1.0),         # f16: tie between 1 and 1 + 2^-10
        (1.0 + 3 * 2.0**-12, 1.0, 2.0**-30), # f16: above the tie
        (-(1.0 + 2.0**-11), -1.0, 1.0),
        (2.5, 1.0, 0.0), (-2.5, 3.0, 0.0), (3.5, -1.0, 0.0), (0.5, 7.0, 0.0),
        (3e9, 1.0, 0.0), (-3e9, 1.0, 0.0), (255.7, 1.0, 0.0), (-1.5, 1.0, 0.0), (300.0, 1.0, 0.0),
        (65520.0, 1.0, 0.0),                 # f16: tie between 65504 and infinity
        (65519.0, 1.0, 0.0), (70000.0, -1.0, 0.0),
        (1e-6, 1e-3, 0.0),                   # f16 subnormal result
        (1.0 + 2.0**-23, 1.0 - 2.0**-24, -1.0),  # fma: massive cancellation
        (3.0, 1.0 / 3.0, -1.0),
        (np.nan, 1.0, 0.0), (np.inf, 1.0, 0.0), (-np.inf, 1.0, 0.0),
        (1.0, 3.0, 0.0), (2.0, 3.0, 0.0), (-7.0, 3.0, 0.0), (1e-30, 3.0, 0.0),
    ]
    for i, (a, b, c) in enumerate(special):
        x[i], y[i], z[i] = a, b, c
    return x, y, z


def _run_rounding(rng):
    x, y, z = _inputs(rng)
    mem = GlobalMemory()
    s = PtxSim(parse_module(ALL["rounding"], "rounding.ptx"), mem)
    ptrs = []
    for name, arr in (("x", x), ("y", y), ("z", z)):
        p = mem.alloc(name, arr.nbytes)
        mem.write(p, arr)
        ptrs.append(p)
    pout = mem.alloc("out", 256 * 128)
    s.launch("rounding", grid=(2,), block=(128,), params=[*ptrs, pout])
    return x, y, z, mem.read(pout, np.uint32, 256 * 32).reshape(256, 32)


MODES = ("rn", "rz", "rm", "rp")


def test_f32_add_mul_fma_div_in_all_rounding_modes(rng):
    x, y, z, out = _run_rounding(rng)
    f = out.view(np.float32)
    fin = np.isfinite(x) & np.isfinite(y) & np.isfinite(z)
    for i in np.flatnonzero(fin):
        fx, fy, fz = _as_frac(x[i]), _as_frac(y[i]), _as_frac(z[i])
        for k, mode in enumerate(MODES):
            assert f[i, k] == round_ref(fx + fy, np.float32, mode), ("add", mode, x[i], y[i])
            assert f[i, 4 + k] == round_ref(fx * fy, np.float32, mode), ("mul", mode, x[i], y[i])
            assert f[i, 8 + k] == round_ref(fx * fy + fz, np.float32, mode), ("fma", mode, i)
            assert f[i, 12 + k] == round_ref(fx / fy, np.float32, mode), ("div", mode, x[i], y[i])
            # cvt.f32.f64 of the exact f64 product rounds the same rational as mul
            assert f[i, 24 + k] == round_ref(fx * fy, np.float32, mode), ("cvt.f32.f64", mode, i)
    assert np.isnan(f[19, 0]) and np.isnan(f[19, 8])  # NaN propagates


def test_fma_rounds_once_not_twice(rng):
    """(1 + 2^-23)(1 - 2^-24) - 1 = 2^-24 - 2^-47 exactly; a double rounding would differ."""
    x, y, z, out = _run_rounding(rng)
    got = out.view(np.float32)[17, 8]
    assert got == np.float32(2.0**-24 - 2.0**-47)
    separate = np.float32(np.float32(x[17] * y[17]) + z[17])
    assert got != separate


def test_cvt_f32_to_f16_in_all_modes_including_ties_overflow_and_subnormals(rng):
    x, _, _, out = _run_rounding(rng)
    h = (out[:, 16:20] & 0xFFFF).astype(np.uint16).view(np.float16)
    for i in np.flatnonzero(np.isfinite(x)):
        for k, mode in enumerate(MODES):
            assert h[i, k] == np.float16(round_ref(_as_frac(x[i]), np.float16, mode)), (x[i], mode)
    assert h[1, 0] == 1.0 and h[1, 3] == np.float16(1.0 + 2.0**-10)
    assert np.isinf(h[13, 0]) and h[13, 1] == 65504.0  # 65520 ties to infinity; rz stays finite
    assert np.isnan(h[19, 0])


def test_cvt_float_to_int_rounds_saturates_and_maps_nan_to_zero(rng):
    x, _, _, out = _run_rounding(rng)
    got = out[:, 20:24].view(np.int32)
    fns = (lambda q: round(q), math.trunc, math.floor, math.ceil)  # round(): half to even
    for i in range(256):
        for k, fn in enumerate(fns):
            if np.isnan(x[i]):
                want = 0
            elif np.isinf(x[i]):
                want = 2**31 - 1 if x[i] > 0 else -(2**31)
            else:
                want = min(max(fn(_as_frac(x[i])), -(2**31)), 2**31 - 1)
            assert got[i, k] == want, (x[i], k)
    # .sat.u8 via rzi: clamp to [0, 255], NaN -> 0
    u8 = out[:, 28]
    for i in range(256):
        v = 0 if np.isnan(x[i]) else min(max(math.trunc(float(x[i])) if np.isfinite(x[i]) else
                                             (10**9 if x[i] > 0 else -1), 0), 255)
        assert u8[i] == v, x[i]


def test_bf16_pack_rz_and_sqrt_rz(rng):
    x, y, _, out = _run_rounding(rng)
    fin = np.isfinite(x) & np.isfinite(y)
    packed = out[:, 29]
    hi = (packed >> 16).astype(np.uint16).view(ml_dtypes.bfloat16)
    lo = (packed & 0xFFFF).astype(np.uint16).view(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(hi[fin].astype(np.float32), x[fin].astype(ml_dtypes.bfloat16).astype(np.float32))
    np.testing.assert_array_equal(lo[fin].astype(np.float32), y[fin].astype(ml_dtypes.bfloat16).astype(np.float32))
    # f32 -> bf16 toward zero is truncation of the low 16 bits
    np.testing.assert_array_equal(out[fin, 31], x[fin].view(np.uint32) >> 16)
    # sqrt.rz(|x|): the largest f32 whose square does not exceed |x|
    sq = out[:, 30].view(np.float32)
    for i in np.flatnonzero(fin):
        q = abs(_as_frac(x[i]))
        s = sq[i]
        assert _as_frac(s) ** 2 <= q < _as_frac(np.nextafter(s, np.float32(np.inf))) ** 2, x[i]


def test_int_to_float_conversions_in_all_modes():
    vals = np.array([0, 1, 2**24 + 1, 2**24 + 3, 2**53 + 1, 2**63 + 2**39 + 1, 2**64 - 1,
                     0x8000_0001, 0x7FFF_FFFF, 0xFFFF_FFFF, 12345678901234567,
                     2**40 + 2**16, 3, 0x8000_0000, 2**32 + 2**31 + 2**7 + 1, 2**25 + 3,
                     *range(1000, 1016)], dtype=np.uint64)
    mem = GlobalMemory()
    s = PtxSim(parse_module(ALL["int_to_float"], "i2f.ptx"), mem)
    pin = mem.alloc("in", vals.nbytes)
    mem.write(pin, vals)
    pout = mem.alloc("out", 32 * len(vals))
    s.launch("int_to_float", grid=(1,), block=(len(vals),), params=[pin, pout])
    got = mem.read(pout, np.float32, 8 * len(vals)).reshape(-1, 8)
    for i, v in enumerate(vals):
        s32 = int(np.array(int(v) & 0xFFFF_FFFF, np.uint32).view(np.int32))
        for k, mode in enumerate(MODES):
            assert got[i, k] == round_ref(Fraction(int(v)), np.float32, mode), (int(v), mode)
            assert got[i, 4 + k] == round_ref(Fraction(s32), np.float32, mode), (s32, mode)


def test_packed_half_fma_and_unpacking(rng):
    n = 64
    a = (rng.integers(-64, 64, (n, 2)) / 16).astype(np.float16)
    b = (rng.standard_normal((n, 2))).astype(np.float16)
    c = (rng.standard_normal((n, 2))).astype(np.float16)
    mem = GlobalMemory()
    s = PtxSim(parse_module(ALL["half2"], "half2.ptx"), mem)
    ptrs = []
    for name, arr in (("a", a), ("b", b), ("c", c)):
        p = mem.alloc(name, arr.nbytes)
        mem.write(p, arr)  # element 0 of each pair lands in the low half of the word
        ptrs.append(p)
    pout = mem.alloc("out", 16 * n)
    s.launch("half2", grid=(1,), block=(n,), params=[*ptrs, pout])
    out = mem.read(pout, np.uint32, 4 * n).reshape(n, 4)
    exact = a.astype(np.float64) * b + c  # exact: 11-bit products plus an f16 addend fit f64
    want = exact.astype(np.float16)  # one IEEE rounding to nearest
    np.testing.assert_array_equal(np.ascontiguousarray(out[:, 0]).view(np.float16).reshape(n, 2), want)
    # bf16x2 fma on the same bit patterns reinterpreted as bf16
    ab, bb, cb = (v.view(np.uint16).view(ml_dtypes.bfloat16) for v in (a, b, c))
    exact_b = ab.astype(np.float64) * bb.astype(np.float64) + cb.astype(np.float64)
    fin = np.isfinite(exact_b)
    got_b = np.ascontiguousarray(out[:, 1]).view(ml_dtypes.bfloat16).reshape(n, 2)
    np.testing.assert_array_equal(got_b[fin].astype(np.float64), exact_b.astype(ml_dtypes.bfloat16)[fin].astype(np.float64))
    # mov.b32 {%h1, %h2} unpacks low half first; re-packing swapped exchanges the halves
    swapped = ((out[:, 0] >> 16) | (out[:, 0] << 16)).astype(np.uint32)
    np.testing.assert_array_equal(out[:, 2], swapped)
    np.testing.assert_array_equal(out[:, 3], np.arange(n))


def test_f64_to_64bit_integers_saturate_at_the_exact_boundaries():
    vals = np.array([2.0**63 - 1024, 2.0**63, 2.0**64 - 2048, 2.0**64, -1.5, -(2.0**63),
                     -(2.0**64), np.nan], np.float64)
    mem = GlobalMemory()
    s = PtxSim(parse_module(ALL["f2i64"], "f2i64.ptx"), mem)
    pin, pout = mem.alloc("in", 64), mem.alloc("out", 128)
    mem.write(pin, vals)
    s.launch("f2i64", grid=(1,), block=(8,), params=[pin, pout])
    out = mem.read(pout, np.uint64, 16).reshape(8, 2)
    for v, (got_s, got_u) in zip(vals, out, strict=True):
        if np.isnan(v):
            want_s = want_u = 0
        else:
            want_s = min(max(math.trunc(v), -(2**63)), 2**63 - 1)
            want_u = min(max(math.trunc(v), 0), 2**64 - 1)
        assert int(np.array(got_s).view(np.int64)) == want_s and int(got_u) == want_u, v


def test_fp8_conversions_saturate_and_round_to_nearest_even(rng):
    n = 64
    x = (rng.standard_normal(n) * 2.0 ** rng.integers(-10, 18, n)).astype(np.float32)
    y = (rng.standard_normal(n) * 4).astype(np.float32)
    x[:5] = [1000.0, -1e6, np.nan, 0.0, 460.0]
    mem = GlobalMemory()
    s = PtxSim(parse_module(ALL["fp8"], "fp8.ptx"), mem)
    px, py, po = mem.alloc("x", 4 * n), mem.alloc("y", 4 * n), mem.alloc("out", 16 * n)
    mem.write(px, x)
    mem.write(py, y)
    s.launch("fp8_cvt", grid=(1,), block=(n,), params=[px, py, po])
    out = mem.read(po, np.uint32, 4 * n).reshape(n, 4)
    for k, (fmt, big) in enumerate(((ml_dtypes.float8_e4m3fn, 448.0), (ml_dtypes.float8_e5m2, 57344.0))):
        sat = lambda v, big=big: np.where(np.isnan(v), v, np.clip(v, -big, big)).astype(np.float32)  # noqa: E731
        want_hi = sat(x).astype(fmt).view(np.uint8)
        want_lo = sat(y).astype(fmt).view(np.uint8)
        np.testing.assert_array_equal(out[:, k] >> 8, want_hi)
        np.testing.assert_array_equal(out[:, k] & 0xFF, want_lo)
        # widening back to f16x2 is exact
        back = np.ascontiguousarray(out[:, 2 + k]).view(np.float16).reshape(n, 2)
        fin = ~np.isnan(x)
        np.testing.assert_array_equal(back[fin, 1], sat(x[fin]).astype(fmt).astype(np.float16))
        np.testing.assert_array_equal(back[:, 0], sat(y).astype(fmt).astype(np.float16))
    assert (out[0, 0] >> 8) == np.float32(448).astype(ml_dtypes.float8_e4m3fn).view(np.uint8)


def test_mma_m16n8k32_fp8_matches_numpy(rng):
    A = (rng.integers(-8, 9, (16, 32)) / 4).astype(ml_dtypes.float8_e4m3fn)
    B = (rng.integers(-8, 9, (32, 8)) / 2).astype(ml_dtypes.float8_e5m2)
    mem = GlobalMemory()
    s = PtxSim(parse_module(ALL["fp8"], "fp8.ptx"), mem)
    pa, pbt, pd = mem.alloc("A", 512), mem.alloc("Bt", 256), mem.alloc("D", 512)
    mem.write(pa, A.view(np.uint8))
    mem.write(pbt, np.ascontiguousarray(B.T).view(np.uint8))
    s.launch("mma_fp8", grid=(1,), block=(32,), params=[pa, pbt, pd])
    want = A.astype(np.float64) @ B.astype(np.float64) + 1.0
    np.testing.assert_array_equal(mem.read(pd, np.float32, 128).reshape(16, 8), want.astype(np.float32))
