"""float16/bfloat16 on RVV 1.0 without Zvfh: 16-bit storage, float32 compute.

qemu 7.2 (and many RVV 1.0 cores) have no half-precision vector arithmetic, so a half value lives
in a vector register as its raw 16 bits (SEW 16: loads, stores, copies, selects and gathers move
bits and never touch the value). An op that computes widens its operands to float32 with integer
ops, computes in float32 and narrows the result back, rounding to nearest even. For +, -, *, /
and sqrt of half operands the float32 result rounded once more is the correctly rounded half
result (float32 has 24 >= 2p + 2 bits for p = 11 and p = 8), so these equal the reference's
float64-compute-then-round; transcendentals carry float32's polynomial error into that one
rounding. Reductions into a half output accumulate in float32 and round once at the store.

Conversions are integer bit manipulation at the source width:

- widen float16: normal numbers rebias the exponent (``(a << 13) + (112 << 23)``), inf/NaN get
  the all-ones exponent (payload kept), subnormals ``m * 2^-24`` are the exact conversion of the
  10-bit integer ``m`` scaled by a power of two (both exact); bfloat16 is a 16-bit shift.
- narrow float32/float64 -> float16/bfloat16: sign split off; normal results are the rebiased
  bits shifted right with round-to-nearest-even (``(x + 2^(s-1) - 1 + lsb) >> s``), clamped to
  inf (overflow; 65520 and above for float16); subnormal results shift the significand with its
  implicit bit by ``C - e`` (per lane, ``vsrl.vv``) with the same rounding, so underflow rounds
  exactly once; NaN keeps its top payload bits and is made quiet. Going from float64 directly
  avoids double rounding through float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from portc.passes.lower_rvv import GenericLowering, V


@dataclass(frozen=True)
class Fmt:
    """An IEEE-style binary format: exponent and stored mantissa bits."""

    ebits: int
    mbits: int

    @property
    def width(self) -> int:
        return 1 + self.ebits + self.mbits

    @property
    def bias(self) -> int:
        return (1 << (self.ebits - 1)) - 1

    @property
    def inf(self) -> int:
        return ((1 << self.ebits) - 1) << self.mbits


HALF: dict[str, Fmt] = {"float16": Fmt(5, 10), "bfloat16": Fmt(8, 7)}
WIDE: dict[str, Fmt] = {"float32": Fmt(8, 23), "float64": Fmt(11, 52)}
UINT = {16: "uint16", 32: "uint32", 64: "uint64"}


def is_half(dt: str) -> bool:
    return dt in HALF


def _li(gl: GenericLowering, value: int, bits: int) -> str:
    """t0 = value as a ``bits``-wide lane constant (sign-extended for the 64-bit ``li``)."""
    value &= (1 << bits) - 1
    if bits == 64 and value >> 63:
        value -= 1 << 64
    gl.c("li", "t0", value)
    return "t0"


def widen(gl: GenericLowering, h: V) -> V:
    """Raw float16/bfloat16 lanes -> a fresh group of float32 lanes (exact)."""
    u = gl.new("uint32")
    gl.sew("uint32")
    g = u.n
    gl.c("vzext.vf2", u.name, h.name, group=g)
    if h.dtype == "bfloat16":
        gl.c("vsll.vi", u.name, u.name, 16, group=g)
        u.dtype = "float32"
        return u
    s = gl.new("uint32")
    gl.c("vand.vx", s.name, u.name, _li(gl, 0x8000, 32), group=g)
    gl.c("vsll.vi", s.name, s.name, 16, group=g)
    gl.c("vand.vx", u.name, u.name, _li(gl, 0x7FFF, 32), group=g)  # a = |h|
    r = gl.new("uint32")
    gl.c("vsll.vi", r.name, u.name, 13, group=g)
    gl.c("vadd.vx", r.name, r.name, _li(gl, 112 << 23, 32), group=g)  # normal: rebias
    t = gl.new("uint32")
    gl.c("vadd.vx", t.name, r.name, "t0", group=g)  # inf/NaN: exponent 255
    gl.c("vmsgtu.vx", "v0", u.name, _li(gl, 0x7BFF, 32), group=g)
    gl.c("vmerge.vvm", r.name, r.name, t.name, vm="v0", group=g)
    gl.c("vfcvt.f.xu.v", t.name, u.name, group=g)  # subnormal/zero: m * 2^-24, exact
    gl.c("vfmul.vf", t.name, t.name, gl.fconst(2.0 ** -24, "float32"), group=g)
    gl.c("vmsltu.vx", "v0", u.name, _li(gl, 0x400, 32), group=g)
    gl.c("vmerge.vvm", r.name, r.name, t.name, vm="v0", group=g)
    gl.c("vor.vv", r.name, r.name, s.name, group=g)
    for x in (u, s, t):
        gl.free(x)
    r.dtype = "float32"
    return r


def narrow(gl: GenericLowering, x: V, to: str) -> V:
    """float32/float64 lanes -> a fresh group of raw ``to`` (float16/bfloat16) lanes, rounded
    to nearest even exactly once (see the module docstring)."""
    from portc.passes.rvv_ops import int_resize

    src, dst = WIDE[x.dtype], HALF[to]
    w = src.width
    it = UINT[w]
    sh = src.mbits - dst.mbits
    gl.sew(it)
    g = gl.regs_of(it)
    c = gl.c
    s = gl.new(it)
    c("vsrl.vx", s.name, x.name, _li(gl, w - 16, w), group=g)
    c("vand.vx", s.name, s.name, _li(gl, 0x8000, w), group=g)
    a = gl.new(it)
    c("vand.vx", a.name, x.name, _li(gl, (1 << (w - 1)) - 1, w), group=g)
    # subnormal results: significand (implicit bit where e > 0) >> (C - max(e, 1)), RNE
    n = gl.new(it)
    c("vsrl.vx", n.name, a.name, _li(gl, src.mbits, w), group=g)
    m = gl.new(it)
    c("vand.vx", m.name, a.name, _li(gl, (1 << src.mbits) - 1, w), group=g)
    t = gl.new(it)
    c("vor.vx", t.name, m.name, _li(gl, 1 << src.mbits, w), group=g)
    c("vmsne.vi", "v0", n.name, 0, group=g)
    c("vmerge.vvm", m.name, m.name, t.name, vm="v0", group=g)
    c("vmaxu.vx", n.name, n.name, _li(gl, 1, w), group=g)
    cshift = src.bias + src.mbits + 1 - dst.bias - dst.mbits
    c("vrsub.vx", n.name, n.name, _li(gl, cshift, w), group=g)
    c("vminu.vx", n.name, n.name, _li(gl, src.mbits + 2, w), group=g)
    _rne_shift_var(gl, m, n, t, g)
    gl.free(n)
    # normal results: rebias, shift by sh with RNE, clamp to inf
    hn = gl.new(it)
    c("vadd.vx", hn.name, a.name, _li(gl, -((src.bias - dst.bias) << src.mbits), w), group=g)
    c("vsrl.vx", t.name, hn.name, _li(gl, sh, w), group=g)
    c("vand.vi", t.name, t.name, 1, group=g)
    c("vadd.vv", hn.name, hn.name, t.name, group=g)
    c("vadd.vx", hn.name, hn.name, _li(gl, (1 << (sh - 1)) - 1, w), group=g)
    c("vsrl.vx", hn.name, hn.name, _li(gl, sh, w), group=g)
    c("vminu.vx", hn.name, hn.name, _li(gl, dst.inf, w), group=g)
    c("vmsltu.vx", "v0", a.name, _li(gl, (src.bias - dst.bias + 1) << src.mbits, w), group=g)
    c("vmerge.vvm", hn.name, hn.name, m.name, vm="v0", group=g)
    gl.free(m)
    # NaN: top payload bits, quiet bit set
    c("vsrl.vx", t.name, a.name, _li(gl, sh, w), group=g)
    c("vand.vx", t.name, t.name, _li(gl, (1 << dst.mbits) - 1, w), group=g)
    c("vor.vx", t.name, t.name, _li(gl, dst.inf | 1 << (dst.mbits - 1), w), group=g)
    c("vmsgtu.vx", "v0", a.name, _li(gl, src.inf, w), group=g)
    c("vmerge.vvm", hn.name, hn.name, t.name, vm="v0", group=g)
    c("vor.vv", hn.name, hn.name, s.name, group=g)
    for v in (s, a, t):
        gl.free(v)
    hn.dtype = it
    r = int_resize(gl, hn, 16, False)
    gl.free(hn)
    r.dtype = to
    return r


def _rne_shift_var(gl: GenericLowering, m: V, n: V, t: V, g: int) -> None:
    """m = m >> n per lane, rounded to nearest even: (m + 2^(n-1) - 1 + lsb) >> n (n >= 1)."""
    c = gl.c
    c("vsrl.vv", t.name, m.name, n.name, group=g)
    c("vand.vi", t.name, t.name, 1, group=g)
    c("vadd.vv", m.name, m.name, t.name, group=g)
    c("vmv.v.i", t.name, 1, group=g)
    c("vadd.vi", n.name, n.name, -1, group=g)
    c("vsll.vv", t.name, t.name, n.name, group=g)
    c("vadd.vi", t.name, t.name, -1, group=g)
    c("vadd.vv", m.name, m.name, t.name, group=g)
    c("vadd.vi", n.name, n.name, 1, group=g)
    c("vsrl.vv", m.name, m.name, n.name, group=g)


def raw_bits(value: float, dt: str) -> int:
    """The 16-bit pattern of ``value`` rounded to ``dt`` (constants and splats)."""
    import numpy as np

    from portc.dialects import dtypes

    with np.errstate(all="ignore"):
        return int(np.array([value], np.float64).astype(dtypes.dtype(dt).numpy)
                   .view(np.uint16)[0])
