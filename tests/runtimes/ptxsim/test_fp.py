"""ptxsim's exact-rounding helpers on float64 and bfloat16, against Fraction arithmetic."""

from __future__ import annotations

import math
from fractions import Fraction

import ml_dtypes
import numpy as np

from portc.runtimes.ptxsim import fp


def _f64_bracket(q: Fraction) -> tuple[float, float]:
    c = float(q)
    while Fraction(c) > q:
        c = math.nextafter(c, -math.inf)
    while Fraction(math.nextafter(c, math.inf)) <= q:
        c = math.nextafter(c, math.inf)
    return c, (c if Fraction(c) == q else math.nextafter(c, math.inf))


def _pick(q: Fraction, lo: float, hi: float, mode: str) -> float:
    if lo == hi:
        return lo
    if mode == "rz":
        return lo if q > 0 else hi
    if mode == "rm":
        return lo
    if mode == "rp":
        return hi
    raise AssertionError(mode)


def test_fma_f64_rounds_once(rng):
    a = rng.standard_normal(2000) * 2.0 ** rng.integers(-30, 30, 2000)
    b = rng.standard_normal(2000) * 2.0 ** rng.integers(-30, 30, 2000)
    c = -(a * b) * (1 + rng.standard_normal(2000) * 2.0**-40)  # heavy cancellation
    got = fp.fma_exact(a, b, c, fp.F64, "rn")
    for i in range(a.size):
        q = Fraction(a[i]) * Fraction(b[i]) + Fraction(c[i])
        lo, hi = _f64_bracket(q)
        want = lo if lo == hi or q - Fraction(lo) < Fraction(hi) - q else hi
        if lo != hi and q - Fraction(lo) == Fraction(hi) - q:
            want = lo if np.array(lo).view(np.uint64) % 2 == 0 else hi
        assert got[i] == want, i


def test_f64_directed_division_sqrt_and_addition(rng):
    a = rng.standard_normal(500) * 2.0 ** rng.integers(-60, 60, 500)
    b = rng.standard_normal(500) * 2.0 ** rng.integers(-60, 60, 500)
    for mode in ("rz", "rm", "rp"):
        d = fp.div_exact(a, b, fp.F64, mode)
        s = fp.add_exact(a, b, fp.F64, mode)
        r = fp.sqrt_exact(np.abs(a), fp.F64, mode)
        for i in range(a.size):
            q = Fraction(a[i]) / Fraction(b[i])
            assert d[i] == _pick(q, *_f64_bracket(q), mode), ("div", mode, i)
            q = Fraction(a[i]) + Fraction(b[i])
            assert s[i] == _pick(q, *_f64_bracket(q), mode), ("add", mode, i)
            # sqrt: rz/rm give the largest r with r^2 <= |a|, rp the smallest with r^2 >= |a|
            x, ri = Fraction(abs(a[i])), float(r[i])
            if mode == "rp":
                assert Fraction(math.nextafter(ri, 0.0)) ** 2 < x <= Fraction(ri) ** 2, i
            else:
                assert Fraction(ri) ** 2 <= x < Fraction(math.nextafter(ri, math.inf)) ** 2, i


def test_bf16_rounding_of_f32_values_in_all_modes(rng):
    x = (rng.standard_normal(4000) * 2.0 ** rng.integers(-20, 20, 4000)).astype(np.float32)
    bits = x.view(np.uint32).astype(np.uint64)
    mag = bits & 0x7FFF_FFFF
    low = mag & 0xFFFF
    trunc = (mag >> 16).astype(np.uint64)            # toward zero, magnitude
    away = trunc + (low != 0)                       # away from zero, magnitude
    neg = (bits >> 31) == 1
    half = np.uint64(0x8000)
    nearest = np.where((low > half) | ((low == half) & (trunc % 2 == 1)), trunc + 1, trunc)
    want = {
        "rz": trunc,
        "rn": nearest,
        "rp": np.where(neg, trunc, away),
        "rm": np.where(neg, away, trunc),
    }
    for mode, mag16 in want.items():
        got = fp.round_f64(x.astype(np.float64), fp.BF16, mode).view(np.uint16)
        expect = (mag16 | (neg.astype(np.uint64) << 15)).astype(np.uint16)
        np.testing.assert_array_equal(got, expect, err_msg=mode)
    # ml_dtypes' own conversion is round-to-nearest-even too
    np.testing.assert_array_equal(fp.round_f64(x.astype(np.float64), fp.BF16, "rn"),
                                  x.astype(ml_dtypes.bfloat16))


def _f32_nearest(q: Fraction) -> np.float32:
    """Round a rational to float32, ties to even, by bracketing with float32 neighbours."""
    lo = np.float32(float(q))
    while Fraction(float(lo)) > q:
        lo = np.nextafter(lo, np.float32(-np.inf))
    while Fraction(float(np.nextafter(lo, np.float32(np.inf)))) <= q:
        lo = np.nextafter(lo, np.float32(np.inf))
    hi = np.nextafter(lo, np.float32(np.inf))
    if Fraction(float(lo)) == q:
        return lo
    dl, dh = q - Fraction(float(lo)), Fraction(float(hi)) - q
    if dl != dh:
        return lo if dl < dh else hi
    return lo if lo.view(np.uint32) % 2 == 0 else hi


def _check_fma_f32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> None:
    got = fp.fma_rn_f32(a, b, c)
    np.testing.assert_array_equal(
        got.view(np.uint32),
        fp.fma_exact(*(x.astype(np.float64) for x in (a, b, c)), fp.F32, "rn").view(np.uint32))
    for i in range(a.size):
        q = Fraction(float(a[i])) * Fraction(float(b[i])) + Fraction(float(c[i]))
        want = _f32_nearest(q)
        assert got[i].view(np.uint32) == want.view(np.uint32) or (got[i] == want == 0), \
            (i, a[i], b[i], c[i], got[i], want)


def test_fma_f32_rn_rounds_once(rng):
    """fma.rn.f32 takes a four-operation path unless fl64(a*b + c) sits on a float32 midpoint
    or in float32's subnormal range; both paths must match one exact rounding."""
    n = 3000
    a = (rng.standard_normal(n) * 2.0 ** rng.integers(-20, 20, n)).astype(np.float32)
    b = (rng.standard_normal(n) * 2.0 ** rng.integers(-20, 20, n)).astype(np.float32)
    c = (rng.standard_normal(n) * 2.0 ** rng.integers(-40, 40, n)).astype(np.float32)
    assert fp._fma_rn_f32(a, b, c) is not None
    _check_fma_f32(a, b, c)
    # double-rounding traps: a*b = 1 + 2^-11 + 2^-24 is a float32 midpoint, and a tiny c
    # decides the side; rounding a*b + c to float64 first would land on the midpoint
    k = rng.integers(60, 100, n)
    sign = rng.choice([-1.0, 1.0], n)
    a = np.full(n, 1 + 2.0**-12, np.float32) * rng.choice([1, -1, 2, 0.5], n).astype(np.float32)
    b = np.full(n, 1 + 2.0**-12, np.float32)
    c = (sign * 2.0 ** -k.astype(np.float64)).astype(np.float32)
    _check_fma_f32(a, b, c)
    # results in float32's subnormal range, where the midpoint bit sits higher
    a = (rng.standard_normal(n) * 2.0**-70).astype(np.float32)
    b = (rng.standard_normal(n) * 2.0**-64).astype(np.float32)
    c = (rng.standard_normal(n) * 2.0**-140).astype(np.float32)
    _check_fma_f32(a, b, c)
