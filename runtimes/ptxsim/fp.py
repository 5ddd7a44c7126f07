"""Exact IEEE rounding for PTX's rounding modifiers, vectorised over lanes.

numpy gives round-to-nearest-even for float32/float16 (and ml_dtypes for bfloat16).  PTX also
asks for ``.rz/.rm/.rp`` and for a single rounding in ``fma``.  Every such result is computed as an
*unevaluated sum* ``hi + lo`` of two float64 arrays that equals the exact value (error-free
transforms: TwoSum, Dekker's TwoProduct), then rounded once into the target format by
``round_pair``: round ``hi`` to nearest, then step one ulp when the exact value lies on the other
side of the candidate (directed modes) or when ``hi`` sits exactly on a midpoint that ``lo``
breaks (nearest mode).  Steps are done on the bit pattern, so the same code serves f16, bf16,
f32 and f64.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
F32 = np.dtype(np.float32)
F64 = np.dtype(np.float64)

_UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}
_SIGN = {2: 0x8000, 4: 0x8000_0000, 8: 0x8000_0000_0000_0000}

MODES = ("rn", "rz", "rm", "rp")


def uint_of(dt: np.dtype) -> np.dtype:
    """The unsigned integer dtype with ``dt``'s width (register bit patterns)."""
    return np.dtype(_UINT[np.dtype(dt).itemsize])


def step(x: np.ndarray, up: np.ndarray) -> np.ndarray:
    """One ulp towards +inf where ``up`` else towards -inf, on the bit pattern (any IEEE format)."""
    dt = x.dtype
    ut = uint_of(dt)
    sign = ut.type(_SIGN[dt.itemsize])
    u = x.view(ut)
    neg = (u & sign) != 0
    zero = (u & ~sign) == 0
    away = up != neg
    one = ut.type(1)
    res = np.where(away, u + one, u - one)
    res = np.where(zero, np.where(up, one, sign | one), res).astype(ut)
    out = np.where(np.isnan(x), u, res).astype(ut)
    return out.view(dt)


def two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Knuth's TwoSum: s + e == a + b exactly, s = fl(a + b)."""
    with np.errstate(over="ignore", invalid="ignore"):
        s = a + b
        bb = s - a
        e = (a - (s - bb)) + (b - bb)
    return s, np.where(np.isfinite(s), e, 0.0)


_SPLIT = 134217729.0  # 2**27 + 1, Veltkamp splitter for binary64


def _split(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(over="ignore", invalid="ignore"):
        c = _SPLIT * a
        hi = c - (c - a)
    return hi, a - hi


def two_prod(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dekker's TwoProduct: p + e == a * b exactly (barring overflow/underflow), p = fl(a * b)."""
    with np.errstate(over="ignore", invalid="ignore"):
        p = a * b
        ah, al = _split(a)
        bh, bl = _split(b)
        e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return p, np.where(np.isfinite(p), e, 0.0)


def round_pair(hi: np.ndarray, lo: np.ndarray, dt: np.dtype, mode: str) -> np.ndarray:
    """Round the exact value ``hi + lo`` (float64 pair, |lo| <= ulp(hi)/2) into ``dt`` once.

    ``hi`` rounded to nearest gives candidate ``r``; ``d = hi - r`` is exact (it is the bits
    below r's precision), and the sign of the residual ``d + lo`` says on which side of ``r`` the
    exact value lies — enough for the directed modes.  For nearest, ``r`` is wrong only when
    ``hi`` is exactly halfway between two ``dt`` values and ``lo`` pushes the exact value off
    the midpoint, towards the other neighbour.
    """
    dt = np.dtype(dt)
    hi = np.asarray(hi, dtype=F64)
    lo = np.asarray(lo, dtype=F64)
    with np.errstate(over="ignore", invalid="ignore"):
        r = hi.astype(dt)
        r64 = r.astype(F64)
        d = hi - r64
    finite = np.isfinite(hi)
    d = np.where(finite & np.isfinite(d), d, 0.0)
    lo = np.where(finite, lo, 0.0)
    # residual sign, exact: d is a multiple of ulp64(hi) and |lo| < ulp64(hi) unless d == 0
    res = np.where(d != 0, np.sign(d), np.sign(lo))
    if mode == "rn":
        if dt == F64:
            return r
        towards_up = d > 0
        nb = step(r, towards_up)
        with np.errstate(over="ignore", invalid="ignore"):
            gap = np.abs(nb.astype(F64) - r64)
            midpoint = (d != 0) & (np.abs(d) * 2 == gap)
        fix = midpoint & (lo != 0) & (np.sign(lo) == np.sign(d))
        return np.where(fix, nb, r).astype(dt) if fix.any() else r
    if mode == "rz":
        fix = ((r > 0) & (res < 0)) | ((r < 0) & (res > 0))
        if np.isinf(r).any():
            # |hi| beyond the largest finite value: RZ keeps the largest finite
            fix |= np.isinf(r) & finite
        up = r < 0
    elif mode == "rm":
        fix = res < 0
        up = np.zeros(r.shape, dtype=bool)
    elif mode == "rp":
        fix = res > 0
        up = np.ones(r.shape, dtype=bool)
    else:
        raise ValueError(f"unknown rounding mode {mode!r}")
    if np.isinf(r).any() and mode != "rz":
        # nearest overflowed to inf but the exact value is finite: rm of +huge keeps MAX, etc.
        fix = fix | (np.isinf(r) & finite & ((r > 0) != up))
        fix = fix & ~(np.isinf(r) & finite & ((r > 0) == up))
    fix = fix & ~np.isnan(r)
    if not fix.any():
        return r
    return np.where(fix, step(r, np.broadcast_to(up, r.shape)), r).astype(dt)


def round_f64(x: np.ndarray | float, dt: np.dtype, mode: str) -> np.ndarray:
    """Round exact float64 values into ``dt`` (the exact value is ``x`` itself)."""
    x = np.asarray(x, dtype=F64)
    return round_pair(x, np.zeros_like(x), dt, mode)


def add_exact(a: np.ndarray, b: np.ndarray, dt: np.dtype, mode: str) -> np.ndarray:
    """``a + b`` for operands exactly representable in float64, rounded once into ``dt``."""
    s, e = two_sum(np.asarray(a, F64), np.asarray(b, F64))
    return round_pair(s, e, dt, mode)


def mul_exact(a: np.ndarray, b: np.ndarray, dt: np.dtype, mode: str) -> np.ndarray:
    p, e = two_prod(np.asarray(a, F64), np.asarray(b, F64))
    return round_pair(p, e, dt, mode)


def _round_to_odd_add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """fl_odd(a + b): nearest sum, moved one ulp to the odd neighbour when inexact and even."""
    s, e = two_sum(a, b)
    even = (s.view(np.uint64) & np.uint64(1)) == 0
    fix = (e != 0) & even & np.isfinite(s)
    if not fix.any():
        return s
    return np.where(fix, step(s, e > 0), s)


#: low bits of a float64 below float32's precision (53 - 24 = 29), and their midpoint pattern
_F32_TAIL = np.uint64((1 << 29) - 1)
_F32_HALF = np.uint64(1 << 28)
#: float64 bits of float32's smallest normal, and the mask that drops the sign
_F32_TINY_BITS = np.float64(np.finfo(np.float32).tiny).view(np.uint64)
_ABS64 = np.uint64((1 << 63) - 1)
_ONE64 = np.uint64(1)


def _fma_rn_f32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray | None:
    """``fma.rn.f32`` in a few numpy operations where that is provably exact, else None.

    With float32 operands (of any float dtype) the float64 product is exact, so
    ``s = fl64(a*b + c)`` is the only rounding before the final one to f32. Rounding twice to
    nearest differs from rounding once only when ``s`` lands exactly on a midpoint between two
    f32 values (its 29 tail bits are ``1 << 28``) or in f32's subnormal range, where the
    midpoint sits higher; those (rare) calls take the error-free path. Everything else, NaN and
    infinity included, is what ``round_pair`` returns as well: its candidate is the same
    ``s.astype(f32)``."""
    with np.errstate(over="ignore", invalid="ignore"):
        s = np.multiply(a, b, dtype=F64)
        s = np.add(s, c, out=s) if isinstance(s, np.ndarray) and s.shape == np.shape(c) \
            else s + np.asarray(c, F64)
        u = np.asarray(s).view(np.uint64)
        odd = (u & _F32_TAIL) == _F32_HALF
        odd |= ((u & _ABS64) - _ONE64) < (_F32_TINY_BITS - _ONE64)  # 0 < |s| < tiny
        if odd.any():
            return None
        return np.asarray(s).astype(F32)


def fma_rn_f32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``fma.rn.f32`` of float32 operands: the fast path, or ``fma_exact`` where it is not
    exact."""
    fast = _fma_rn_f32(a, b, c)
    if fast is not None:
        return fast
    return fma_exact(*(np.asarray(v, F64) for v in (a, b, c)), F32, "rn")


def fma_exact(a: np.ndarray, b: np.ndarray, c: np.ndarray, dt: np.dtype, mode: str) -> np.ndarray:
    """``a * b + c`` with one rounding into ``dt``.

    For formats narrower than float64 the product is exact in float64 and TwoSum makes the sum
    exact, so ``round_pair`` applies.  For float64 itself (nearest only) we use Boldo and
    Melquiond's emulation: TwoProduct, TwoSum, then a round-to-odd addition of the two error
    terms before the final nearest addition, which is proved to round only once.
    """
    a, b, c = (np.asarray(v, F64) for v in (a, b, c))
    dt = np.dtype(dt)
    if dt != F64:
        with np.errstate(over="ignore", invalid="ignore"):
            p = a * b
        s, e = two_sum(p, c)
        return round_pair(s, e, dt, mode)
    if mode != "rn":
        raise ValueError("fma.f64 with a directed rounding mode is not modelled")
    uh, ul = two_prod(a, b)
    th, tl = two_sum(c, uh)
    v = _round_to_odd_add(tl, ul)
    with np.errstate(over="ignore", invalid="ignore"):
        out = th + v
        plain = a * b + c
    return np.where(np.isfinite(out), out, plain)


def div_exact(a: np.ndarray, b: np.ndarray, dt: np.dtype, mode: str) -> np.ndarray:
    """``a / b`` rounded once into ``dt``: the float64 quotient plus the sign of its remainder."""
    a = np.asarray(a, F64)
    b = np.asarray(b, F64)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        q = a / b
        ph, pl = two_prod(q, b)
        rem = (a - ph) - pl
        lo = np.sign(rem) * np.sign(b) * np.abs(q) * 2.0**-80
    lo = np.where(np.isfinite(q) & np.isfinite(lo), lo, 0.0)
    return round_pair(q, lo, dt, mode)


def sqrt_exact(a: np.ndarray, dt: np.dtype, mode: str) -> np.ndarray:
    a = np.asarray(a, F64)
    with np.errstate(invalid="ignore"):
        s = np.sqrt(a)
        ph, pl = two_prod(s, s)
        rem = (a - ph) - pl
        lo = np.sign(rem) * np.abs(s) * 2.0**-80
    lo = np.where(np.isfinite(s) & np.isfinite(lo), lo, 0.0)
    return round_pair(s, lo, dt, mode)


def int_to_pair(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An int64/uint64 array as an exact float64 pair: split into 32-bit halves, then TwoSum."""
    if x.dtype.itemsize < 8:
        return x.astype(F64), np.zeros(x.shape, F64)
    if x.dtype.kind == "i":
        high = (x >> 32).astype(F64) * 4294967296.0
    else:
        high = (x >> np.uint64(32)).astype(F64) * 4294967296.0
    low = (x.view(np.uint64) & np.uint64(0xFFFF_FFFF)).astype(F64)
    return two_sum(high, low)


def flush_subnormal(x: np.ndarray) -> np.ndarray:
    """``.ftz``: subnormal inputs and results become sign-preserving zero."""
    tiny = np.finfo(x.dtype).tiny if x.dtype != BF16 else ml_dtypes.finfo(BF16).tiny
    sub = (np.abs(x) < tiny) & (x != 0)
    if not sub.any():
        return x
    return np.where(sub, np.copysign(np.zeros((), x.dtype), x), x).astype(x.dtype)
