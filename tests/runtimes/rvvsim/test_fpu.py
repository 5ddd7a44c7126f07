"""rvvsim's single-rounding fma against exact rational arithmetic (``fractions.Fraction``)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from portc.runtimes.rvvsim import fpu


def _round_exact(x: Fraction, dtype: type) -> np.floating:
    """Round a rational to float32/float64, nearest-even, by checking the neighbours."""
    near = dtype(float(x)) if abs(x) < 2**1023 else dtype(np.inf if x > 0 else -np.inf)
    with np.errstate(all="ignore"):
        cands = [np.nextafter(near, dtype(-np.inf)), near, np.nextafter(near, dtype(np.inf))]
    finite = [c for c in cands if np.isfinite(c)]
    if not finite:
        return near
    best = min(finite, key=lambda c: (abs(Fraction(float(c)) - x),
                                      int(np.array([c]).view(f"u{np.dtype(dtype).itemsize}")[0])
                                      & 1))
    if best == np.finfo(dtype).max and x > Fraction(float(best)):
        half_ulp = (Fraction(2) ** (128 if dtype == np.float32 else 1024) - Fraction(float(best))
                    ) / 2
        if x - Fraction(float(best)) >= half_ulp:
            return dtype(np.inf)
    return best


def _cases(rng: np.random.Generator, dtype: type, n: int) -> tuple[np.ndarray, ...]:
    lo, hi = (-70, 40) if dtype == np.float32 else (-600, 500)
    a = (rng.standard_normal(n) * np.exp2(rng.integers(lo, hi, n))).astype(dtype)
    b = (rng.standard_normal(n) * np.exp2(rng.integers(lo // 2, hi // 2, n))).astype(dtype)
    with np.errstate(all="ignore"):
        c = np.where(rng.random(n) < 0.6, -(a * b) * (1 + rng.standard_normal(n) * 1e-6),
                     rng.standard_normal(n) * np.exp2(rng.integers(lo, hi, n))).astype(dtype)
    return a, b, c


def _check(fn: object, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> None:
    with np.errstate(all="ignore"):
        got = fn(a, b, c)
    dtype = a.dtype.type
    bad = []
    for i in range(a.size):
        exact = Fraction(float(a[i])) * Fraction(float(b[i])) + Fraction(float(c[i]))
        want = _round_exact(exact, dtype)
        if exact == 0:
            continue  # the sign of an exact zero is pinned by the qemu tests
        if got[i] != want:
            bad.append((a[i], b[i], c[i], got[i], want))
    assert not bad, bad[:3]


def test_fma32_rounds_once_on_random_and_cancelling_inputs() -> None:
    _check(fpu.fma32, *_cases(np.random.default_rng(1), np.float32, 3000))


def test_fma32_breaks_float64_midpoint_ties_by_the_lost_addend() -> None:
    a = np.array([1 + 2.0**-23] * 2 + [2.0**-75] * 2, np.float32)
    b = np.array([1.5] * 2 + [2.0**-60] * 2, np.float32)  # second pair: subnormal results
    c = np.array([2.0**-80, -(2.0**-80), 2.0**-149, -(2.0**-149)], np.float32)
    _check(fpu.fma32, a, b, c)


def test_fma64_rounds_once_on_random_cancelling_and_extreme_inputs() -> None:
    a, b, c = _cases(np.random.default_rng(2), np.float64, 3000)
    a[:6] = [1 + 2.0**-52, 1 + 2.0**-52, 2.0**-537, 1e300, 3.0, 2.0**600]
    b[:6] = [1.5, 1.5, 2.0**-537, 1e10, 5e-324, 2.0**423]
    c[:6] = [2.0**-300, -(2.0**-300), 5e-324, -1e308, 1e-320, -1.0]
    _check(fpu.fma64, a, b, c)
