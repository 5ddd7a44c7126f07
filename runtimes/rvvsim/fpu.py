"""RISC-V floating-point semantics on numpy arrays (scalar F/D ops use 1-element arrays).

numpy float32/float64 arithmetic is IEEE round-to-nearest-even with subnormals, which is what
RISC-V computes under ``frm = rne``; what numpy does differently is fixed up here:

- NaN results are the canonical NaN (0x7fc00000 / 0x7ff8000000000000), never a payload;
- fmin/fmax are IEEE 754-2019 minimumNumber/maximumNumber with -0 < +0;
- float -> int conversions saturate and send NaN to the maximum;
- fused multiply-add rounds once. fp32: the product of two float32 values is exact in float64,
  the float64 sum is rounded, its error is recovered exactly with TwoSum, and the only case where
  rounding the float64 sum to float32 differs from rounding the exact sum (the sum sits exactly
  on a float32 midpoint) is corrected from the error's sign. fp64 (Python 3.11 has no
  ``math.fma``): the product is split exactly with Dekker's TwoProduct, ``c + p`` with TwoSum, the
  two low parts are added with round-to-odd, and the final add rounds once (Boldo-Melquiond);
  elements whose exponents make the split or the round-to-odd step unsafe (huge/tiny/non-finite
  operands) are recomputed exactly with Python integers, element by element (rare);
- scalar ops under a directed rounding mode (rtz/rdn/rup/rmm) are recomputed exactly with
  ``fractions.Fraction`` and rounded by hand (``round_rational``): slow, but scalar and rare.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction

import numpy as np

CNAN32 = np.uint32(0x7FC00000)
CNAN64 = np.uint64(0x7FF8000000000000)
FTYPE = {32: np.float32, 64: np.float64}
UTYPE = {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}
STYPE = {8: np.int8, 16: np.int16, 32: np.int32, 64: np.int64}


def canon(x: np.ndarray) -> np.ndarray:
    """Replace every NaN by the canonical quiet NaN of its width. The common no-NaN case is
    told by one dot product: a sum of squares (all >= 0, +inf at worst) is NaN exactly when an
    element is, and one BLAS call is cheaper than ``isnan`` plus a reduction."""
    if x.ndim == 1:
        s = x.dot(x)
        if s == s:
            return x
    nan = np.isnan(x)
    if not nan.any():
        return x
    bits = CNAN32 if x.dtype == np.float32 else CNAN64
    out = x.copy()
    out.view(bits.dtype)[nan] = bits
    return out


def fmax(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """maximumNumber: the non-NaN operand wins, +0 > -0, two NaNs give the canonical NaN."""
    r = np.where(a > b, a, b)
    zero = (a == 0) & (b == 0)
    r = np.where(zero, np.where(np.signbit(a), b, a), r)
    r = np.where(np.isnan(a), b, np.where(np.isnan(b), a, r))
    return canon(r)


def fmin(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """minimumNumber: the non-NaN operand wins, -0 < +0, two NaNs give the canonical NaN."""
    r = np.where(a < b, a, b)
    zero = (a == 0) & (b == 0)
    r = np.where(zero, np.where(np.signbit(a), a, b), r)
    r = np.where(np.isnan(a), b, np.where(np.isnan(b), a, r))
    return canon(r)


def _two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


#: the float64 bits of 2**-125, below which a float64 sum may round twice into a float32
#: subnormal
TINY32 = int(np.array([2.0**-125]).view(np.uint64)[0])


def fma32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Single-rounding a*b + c for float32 arrays (see module docstring)."""
    p = np.multiply(a, b, dtype=np.float64)  # exact: 24+24 bit significands
    s = np.add(p, c, dtype=np.float64)
    r = s.astype(np.float32)
    # rounding s again is only wrong when s sits exactly on a float32 midpoint (low 29 bits
    # of the float64 significand = 1000...0) or in float32's subnormal range, and the float64
    # sum was inexact (sums of float32 values land on midpoints exactly all the time)
    bits = s.view(np.uint64)
    mag = bits & np.uint64(0x7FFFFFFFFFFFFFFF)  # |s| as bits: 0 < |s| < 2**-125 is one range
    risky = ((bits & np.uint64(0x1FFFFFFF)) == np.uint64(0x10000000)) | (
        (mag - np.uint64(1)) < np.uint64(TINY32 - 1))
    if np.count_nonzero(risky):
        c64 = np.asarray(c, np.float64)
        idx = np.nonzero(risky & np.isfinite(s))[0]
        if p.shape != s.shape:
            p = np.broadcast_to(p, s.shape)
        if c64.shape != s.shape:
            c64 = np.broadcast_to(c64, s.shape)
        ps, cs, ss = p[idx], c64[idx], s[idx]
        bb = ss - ps
        e = (ps - (ss - bb)) + (cs - bb)  # TwoSum: the exact error of s
        inexact = e != 0
        if inexact.any():
            r = _fix_midpoints(r.copy(), idx[inexact], ss[inexact], e[inexact])
    return canon(r)


def _fix_midpoints(r: np.ndarray, idx: np.ndarray, s: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Round s + e (s the float64 sum, e its exact error) to float32 at ``idx``."""
    rv = r[idx]
    toward = np.where(s > rv.astype(np.float64), np.float32(np.inf), np.float32(-np.inf))
    other = np.nextafter(rv, toward)
    lo64 = np.where(np.isinf(rv), np.copysign(2.0**128, rv.astype(np.float64)), rv)
    hi64 = np.where(np.isinf(other), np.copysign(2.0**128, other.astype(np.float64)), other)
    mid = (lo64.astype(np.float64) + hi64.astype(np.float64)) * 0.5
    on_mid = (mid == s) & (rv.astype(np.float64) != s)
    # the exact value lies on the side of the midpoint given by the error's sign
    big = np.where(rv > other, rv, other)
    small = np.where(rv > other, other, rv)
    r[idx] = np.where(on_mid, np.where(e > 0, big, small), rv)
    return r


_SPLIT = 134217729.0  # 2**27 + 1 (Veltkamp)


def _two_prod(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = a * b
    t = _SPLIT * a
    ah = t - (t - a)
    al = a - ah
    t = _SPLIT * b
    bh = t - (t - b)
    bl = b - bh
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def _round_odd_add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a + b rounded to odd: truncate toward zero and set the last bit when inexact."""
    s, e = _two_sum(a, b)
    bits = s.view(np.int64)
    even = (bits & 1) == 0
    adj = (e != 0) & even
    # s is the nearest value; when inexact and even, the odd neighbour toward the exact value
    return np.where(adj, np.nextafter(s, np.where(e > 0, np.inf, -np.inf)), s)


def _exact_fma64(a: float, b: float, c: float) -> float:
    """Correctly rounded a*b+c with Python integers (slow path for the rare unsafe elements)."""
    if not (math.isfinite(a) and math.isfinite(b)):
        return a * b + c  # the product is exactly inf/nan
    if not math.isfinite(c):
        return c  # finite product + inf/nan (a rounded product could overflow to inf wrongly)
    if a == 0 or b == 0:
        return a * b + c  # exact signed-zero product, then one rounding
    if c == 0:
        return a * b  # nonzero exact product: its rounding keeps its sign even on underflow
    ma, ea = math.frexp(a)
    mb, eb = math.frexp(b)
    mc, ec = math.frexp(c)
    ia, ib, ic = int(ma * 2**53), int(mb * 2**53), int(mc * 2**53)
    ep, ecc = ea + eb - 106, ec - 53
    e = min(ep, ecc)
    n = (ia * ib << (ep - e)) + (ic << (ecc - e))
    if n == 0:
        return 0.0  # exact cancellation rounds to +0 under rne
    try:
        return float(n << e) if e >= 0 else n / (1 << -e)  # int true division rounds once
    except OverflowError:
        return math.inf if n > 0 else -math.inf


def fma64(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Single-rounding a*b + c for float64 arrays (see module docstring)."""
    a, b, c = np.broadcast_arrays(*(np.asarray(v, np.float64) for v in (a, b, c)))
    with np.errstate(all="ignore"):
        ph, pl = _two_prod(a, b)
        sh, sl = _two_sum(c, ph)
        r = sh + _round_odd_add(sl, pl)
        ab, bb, cb = np.abs(a), np.abs(b), np.abs(c)
        p = ab * bb
    # no overflow in the split or the sums, no underflow of the product's error term
    safe = (
        (ab < 2.0**500) & (bb < 2.0**500) & (cb < 2.0**1000) & (p >= 2.0**-900)
        & ((cb == 0) | (cb >= 2.0**-900)) & np.isfinite(r)
    )
    if not safe.all():
        r = np.array(r, copy=True)
        for i in np.nonzero(~safe.ravel())[0]:
            r.flat[i] = _exact_fma64(float(a.flat[i]), float(b.flat[i]), float(c.flat[i]))
    return canon(r)


def fma(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Dispatch on element width: float32 or float64 single-rounding fma."""
    return fma32(a, b, c) if np.asarray(a).dtype == np.float32 else fma64(a, b, c)


def _round_away(x: np.ndarray) -> np.ndarray:
    t = np.trunc(x)
    return t + np.where(np.abs(x - t) >= 0.5, np.sign(x), 0.0)


FRM_NAMES = ("rne", "rtz", "rdn", "rup", "rmm")  # frm encodings 0..4
ROUND: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "rne": np.rint,
    "dyn": np.rint,
    "rtz": np.trunc,
    "rdn": np.floor,
    "rup": np.ceil,
    "rmm": _round_away,
}


def f2i(x: np.ndarray, bits: int, signed: bool, rm: str = "rne") -> np.ndarray:
    """Float -> int with saturation (NaN -> max); returns an int64/uint64 array."""
    with np.errstate(invalid="ignore"):
        r = ROUND[rm](np.asarray(x, np.float64))
    if signed:
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        out_t = np.int64
    else:
        lo, hi = 0, 2**bits - 1
        out_t = np.uint64
    nan = np.isnan(r)
    over = (r >= float(hi) + 1) | nan
    under = r < float(lo)
    safe = np.where(over | under, 0.0, r)
    with np.errstate(invalid="ignore"):
        out = safe.astype(out_t)
    out = np.where(over, out_t(hi), out)
    return np.where(under, out_t(lo), out).astype(out_t)


def fclass(x: np.ndarray) -> np.ndarray:
    """The 10-bit RISC-V class mask of every element (as int64)."""
    w = x.dtype.itemsize * 8
    u = x.view(UTYPE[w])
    mbits = 23 if w == 32 else 52
    exp_max = np.asarray(0xFF if w == 32 else 0x7FF, UTYPE[w])
    exp = (u >> UTYPE[w](mbits)) & exp_max
    man = u & UTYPE[w]((1 << mbits) - 1)
    neg = np.signbit(x)
    quiet = (man >> UTYPE[w](mbits - 1)) & UTYPE[w](1)
    cls = np.select(
        [
            (exp == exp_max) & (man == 0),
            (exp == exp_max) & (quiet == 0),
            exp == exp_max,
            (exp == 0) & (man == 0),
            exp == 0,
        ],
        [
            np.where(neg, 1 << 0, 1 << 7),
            np.full(x.shape, 1 << 8),
            np.full(x.shape, 1 << 9),
            np.where(neg, 1 << 3, 1 << 4),
            np.where(neg, 1 << 2, 1 << 5),
        ],
        np.where(neg, 1 << 1, 1 << 6),
    )
    return cls.astype(np.int64)


def i2f(x: np.ndarray, bits: int) -> np.ndarray:
    """Int (int64/uint64 array) -> float32/64, rounded to nearest even by the cast."""
    return np.asarray(x).astype(FTYPE[bits])


# --- directed rounding for scalar F/D ops (exact rationals: slow, scalar-only, rare) ---------

FORMATS = {32: (24, -126, 127), 64: (53, -1022, 1023)}  # significand bits, emin, emax


def round_rational(x: Fraction, bits: int, mode: str) -> np.ndarray:
    """Round a nonzero rational to float32/float64 (1-element array) with rounding ``mode``."""
    p, emin, emax = FORMATS[bits]
    neg = x < 0
    ax = -x if neg else x
    e = ax.numerator.bit_length() - ax.denominator.bit_length()
    if Fraction(2) ** e > ax:
        e -= 1  # now 2**e <= ax < 2**(e+1)
    e = max(e, emin)  # subnormals share emin's quantum
    q = Fraction(2) ** (e - (p - 1))
    m = ax / q
    n = m.numerator // m.denominator
    rem = m - n
    half = Fraction(1, 2)
    up = {
        "rne": rem > half or (rem == half and n % 2 == 1),
        "rmm": rem >= half,
        "rtz": False,
        "rdn": neg and rem > 0,
        "rup": (not neg) and rem > 0,
    }[mode]
    val = (n + int(up)) * q
    t = FTYPE[bits]
    if val >= Fraction(2) ** (emax + 1):  # overflow: infinity or the largest finite value
        to_inf = mode in ("rne", "rmm") or (mode == "rup" and not neg) or (mode == "rdn" and neg)
        big = t(np.inf) if to_inf else np.finfo(t).max
        return np.array([-big if neg else big], t)
    f = float(val)
    return np.array([-f if neg else f], t)


def round_sqrt(x: Fraction, bits: int, mode: str) -> np.ndarray:
    """sqrt of a positive rational rounded with ``mode``, by integer square roots."""
    p = FORMATS[bits][0]
    ex = x.numerator.bit_length() - x.denominator.bit_length()
    if Fraction(2) ** ex > x:
        ex -= 1
    e = ex // 2  # 2**e <= sqrt(x) < 2**(e+1)
    y = x * Fraction(4) ** (p - 1 - e)  # sqrt(y) in [2**(p-1), 2**p)
    n, d = y.numerator, y.denominator
    q = math.isqrt(n * d) // d  # floor(sqrt(y))
    inexact = q * q * d != n
    half = 4 * n - (2 * q + 1) ** 2 * d  # sign of sqrt(y) - (q + 1/2)
    up = {
        "rne": half > 0 or (half == 0 and q % 2 == 1),
        "rmm": half >= 0,
        "rtz": False,
        "rdn": False,
        "rup": inexact,
    }[mode]
    return np.array([float((q + int(up)) * Fraction(2) ** (e - (p - 1)))], FTYPE[bits])


def directed(kind: str, ops: list[np.ndarray], mode: str, rne: np.ndarray) -> np.ndarray:
    """add/sub/mul/div/fma/sqrt/convert of one element under a non-nearest rounding mode
    (``kind`` "cvt" narrows a float, "icvt" converts an integer). ``rne`` is numpy's
    round-to-nearest result, right for every special case (NaN, infinite operands, division by
    zero, exact zeros of products); finite cases are recomputed exactly and rounded."""
    bits = rne.dtype.itemsize * 8
    if kind == "sqrt":
        x = float(ops[0][0])
        if not math.isfinite(x) or x <= 0:
            return rne  # NaN, +inf, +-0: exact
        return round_sqrt(Fraction(x), bits, mode)
    if kind == "icvt":  # an integer to a float format
        v = int(ops[0][0])
        return rne if v == 0 else round_rational(Fraction(v), bits, mode)
    vals = [float(v[0]) for v in ops]
    if not all(math.isfinite(v) for v in vals) or (kind == "div" and vals[1] == 0):
        return rne
    fr = [Fraction(v) for v in vals]
    if kind == "add":
        exact, summands = fr[0] + fr[1], (fr[0], fr[1])
    elif kind == "sub":
        exact, summands = fr[0] - fr[1], (fr[0], -fr[1])
    elif kind == "mul":
        exact, summands = fr[0] * fr[1], None
    elif kind == "div":
        exact, summands = fr[0] / fr[1], None
    elif kind == "fma":
        exact, summands = fr[0] * fr[1] + fr[2], (fr[0] * fr[1], fr[2])
    else:  # "cvt": a value converted to a narrower format
        exact, summands = fr[0], None
    if exact == 0:
        if summands is not None and all(v != 0 for v in summands):
            return np.array([-0.0 if mode == "rdn" else 0.0], rne.dtype)  # x - x
        return rne  # exact zero from zero operands: IEEE sign rules, no rounding
    return round_rational(exact, bits, mode)


def directed_vec(kind: str, prep: Callable[..., list[np.ndarray]], fn: Callable[..., np.ndarray],
                 mode: str) -> Callable[..., np.ndarray]:
    """A vector op under a directed frm: numpy's rne result, then every element recomputed
    exactly (``directed``). Slow, but only code that changes frm around arithmetic pays."""
    def run(*arrays: np.ndarray) -> np.ndarray:
        rne = np.atleast_1d(np.asarray(fn(*arrays)))
        ops = np.broadcast_arrays(*prep(*arrays))
        out = rne.copy()
        for i in range(out.size):
            out[i] = directed(kind, [o[i:i + 1] for o in ops], mode, rne[i:i + 1])[0]
        return out
    return run
