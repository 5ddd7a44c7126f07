"""Transcendental fns as RVV vector code: range reduction + polynomials, no libm.

Each fn takes a float32/float64 vector value and returns a fresh one; constants are built with
``li`` + ``fmv.w.x``/``fmv.d.x`` (the artifact needs no data section). Polynomial degrees are
chosen per dtype so that the truncation error is below the type's rounding error; what remains
is the rounding of the evaluation itself.

Maximum errors, measured against numpy float64 on dense sweeps by
``tests/passes/test_lower_rvv.py::test_polynomial_max_error`` (running the emitted code in
rvvsim), are ``MAX_ERROR[fn][dtype] = (abs, rel)``: a result passes when
``|got - want| <= abs + rel * |want|``. The sweeps are the ranges in ``SWEEPS``.

- exp: x = n ln2 + r (Cody-Waite, |r| <= ln2/2), Taylor to r^7 (f32) / r^13 (f64), 2^(n-1) built
  in the exponent bits (times 2 at the end so n = 128/1024 stays finite); x < -86 (f32) /
  -707 (f64) flushes to 0, x > ln(max) gives inf, NaN stays NaN.
- log: exponent/mantissa split (subnormals pre-scaled), m in [sqrt(1/2), sqrt(2)),
  log m = 2 atanh(s), s = (m-1)/(m+1), odd series to s^11 (f32) / s^23 (f64); log 0 = -inf,
  log(x<0) = NaN.
- tanh: |x| < 0.125 odd Taylor series, else 1 - 2/(exp(2|x|)+1), sign restored; sigmoid:
  1/(1+exp(-x)); erf: |x| < 1 Maclaurin series, else Abramowitz-Stegun 7.1.26 (abs error
  1.5e-7, also for float64); sin/cos/tan: n = round(x 2/pi), three-part Cody-Waite reduction,
  Taylor sin/cos on |r| <= pi/4, quadrant select; atan: 1/x and (x-1)/(x+1) reductions then an
  odd series on |t| <= tan(pi/8); asin/acos/sinh/cosh/asinh/acosh/atanh/atan2 from those;
  pow: integer exponents by squaring (a run-time loop over the exponent bits), others
  exp(b log|a|).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from portc.passes.lower_rvv import GenericLowering, V

#: fn -> dtype -> (abs, rel) bounds the sweep test asserts
MAX_ERROR: dict[str, dict[str, tuple[float, float]]] = {
    "exp": {"float32": (1e-37, 4e-7), "float64": (1e-300, 2e-15)},
    "log": {"float32": (0.0, 4e-7), "float64": (0.0, 2e-15)},
    "tanh": {"float32": (2e-7, 4e-7), "float64": (1e-15, 4e-15)},
    "sigmoid": {"float32": (1e-37, 6e-7), "float64": (1e-300, 4e-15)},
    "erf": {"float32": (2e-7, 4e-7), "float64": (2e-7, 1e-15)},
    "sin": {"float32": (3e-7, 0.0), "float64": (1e-15, 0.0)},
    "cos": {"float32": (3e-7, 0.0), "float64": (1e-15, 0.0)},
    "atan": {"float32": (0.0, 5e-7), "float64": (0.0, 3e-15)},
}
#: fn -> sweep range (start, stop) used by the measurement
SWEEPS: dict[str, tuple[float, float]] = {
    "exp": (-100.0, 100.0), "log": (1e-30, 1e30), "tanh": (-12.0, 12.0),
    "sigmoid": (-60.0, 60.0), "erf": (-6.0, 6.0), "sin": (-20.0, 20.0), "cos": (-20.0, 20.0),
    "atan": (-1e4, 1e4),
}


class Vm:
    """Tiny helper: vector float arithmetic on ``V`` values of one dtype, fresh results."""

    def __init__(self, gl: GenericLowering, dt: str) -> None:
        self.gl = gl
        self.dt = dt
        self.f32 = dt == "float32"
        self.bits = 32 if self.f32 else 64
        self.it = "int32" if self.f32 else "int64"

    def k(self, c: float) -> str:
        return self.gl.fconst(c, self.dt)

    def new(self, dt: str | None = None) -> V:
        return self.gl.new(dt or self.dt)

    def op(self, mn: str, a: V, b: V | str, dt: str | None = None) -> V:
        d = self.new(dt)
        self.gl.sew(a.dtype)
        self.gl.c(mn, d.name, a.name, b if isinstance(b, str) else b.name, group=a.n)
        return d

    def un(self, mn: str, a: V, dt: str | None = None) -> V:
        d = self.new(dt)
        self.gl.sew(a.dtype)
        self.gl.c(mn, d.name, a.name, group=a.n)
        return d

    def add(self, a: V, b: V) -> V:
        return self.op("vfadd.vv", a, b)

    def sub(self, a: V, b: V) -> V:
        return self.op("vfsub.vv", a, b)

    def mul(self, a: V, b: V) -> V:
        return self.op("vfmul.vv", a, b)

    def div(self, a: V, b: V) -> V:
        return self.op("vfdiv.vv", a, b)

    def addk(self, a: V, c: float) -> V:
        return self.op("vfadd.vf", a, self.k(c))

    def mulk(self, a: V, c: float) -> V:
        return self.op("vfmul.vf", a, self.k(c))

    def rsubk(self, c: float, a: V) -> V:
        return self.op("vfrsub.vf", a, self.k(c))

    def rdivk(self, c: float, a: V) -> V:
        return self.op("vfrdiv.vf", a, self.k(c))

    def abs(self, a: V) -> V:
        return self.op("vfsgnjx.vv", a, a)

    def neg(self, a: V) -> V:
        return self.op("vfsgnjn.vv", a, a)

    def copysign(self, a: V, s: V) -> V:
        return self.op("vfsgnj.vv", a, s)

    def sqrt(self, a: V) -> V:
        return self.un("vfsqrt.v", a)

    def free(self, *vs: V) -> None:
        for v in vs:
            self.gl.free(v)

    def fma_into(self, acc: V, a: V, b: V) -> None:
        """acc += a * b (fused)."""
        self.gl.sew(self.dt)
        self.gl.c("vfmacc.vv", acc.name, a.name, b.name, group=acc.n)

    def horner(self, x: V, coeffs: Sequence[float]) -> V:
        """sum coeffs[i] x^i, highest degree first in the evaluation (fused steps)."""
        p = self.gl.splat(coeffs[-1], self.dt)
        for c in reversed(coeffs[:-1]):
            t = self.gl.splat(c, self.dt)
            self.fma_into(t, p, x)
            self.free(p)
            p = t
        return p

    def mask_cmp(self, mn: str, a: V, c: float, dest: str = "v0") -> None:
        self.gl.sew(a.dtype)
        self.gl.c(mn, dest, a.name, self.k(c), group=a.n)

    def merge_k(self, d: V, c: float) -> None:
        self.gl.sew(d.dtype)
        self.gl.c("vfmerge.vfm", d.name, d.name, self.k(c), vm="v0", group=d.n)

    def merge(self, d: V, s: V) -> None:
        self.gl.sew(d.dtype)
        self.gl.c("vmerge.vvm", d.name, d.name, s.name, vm="v0", group=d.n)

    def keep_nan(self, d: V, x: V) -> None:
        """d = x where x is NaN."""
        self.gl.sew(self.dt)
        self.gl.c("vmfne.vv", "v0", x.name, x.name, group=x.n)
        self.merge(d, x)

    def to_int_round(self, a: V) -> tuple[V, V]:
        """(int lanes rounded to nearest even, the same as floats)."""
        n = self.un("vfcvt.x.f.v", a, self.it)
        nf = self.un("vfcvt.f.x.v", n)
        nf.dtype = self.dt
        return n, nf


def _taylor_exp(dt: str) -> list[float]:
    deg = 7 if dt == "float32" else 13
    return [1.0 / math.factorial(i) for i in range(deg + 1)]


#: ln 2 = hi + lo per dtype (hi has 17 significant bits, so n * hi is exact; lo is the rest
#: rounded to the dtype)
LN2_HI = 0.693145751953125
LN2_LO = {"float32": 1.428606765330187045e-06, "float64": 1.42860682030941723212e-06}


def exp(gl: GenericLowering, x: V, consume: bool = False) -> V:
    """``consume``: the caller hands ``x`` over; it is freed once the special lanes are
    recorded as masks (one register each), so the polynomial has its registers back."""
    m = Vm(gl, x.dtype)
    c = gl.c
    hi = 88.72283172607421875 if m.f32 else 709.782712893384
    lo = -86.0 if m.f32 else -707.0
    t = m.op("vfmin.vf", x, m.k(hi))
    c("vfmax.vf", t.name, t.name, m.k(lo), group=t.n)
    over, under = gl.vr.alloc(1), gl.vr.alloc(1)
    c("vmfgt.vf", f"v{over}", x.name, m.k(hi), group=x.n)
    c("vmflt.vf", f"v{under}", x.name, m.k(lo), group=x.n)
    nan = None
    if consume:
        nan = gl.vr.alloc(1)
        c("vmfne.vv", f"v{nan}", x.name, x.name, group=x.n)
        m.free(x)
    y = m.mulk(t, 1.4426950408889634)
    n = m.un("vfcvt.x.f.v", y, m.it)  # round to nearest even
    m.free(y)
    nf = m.un("vfcvt.f.x.v", n)
    nf.dtype = m.dt
    gl.sew(m.dt)
    c("vfnmsac.vf", t.name, m.k(LN2_HI), nf.name, group=t.n)
    c("vfnmsac.vf", t.name, m.k(LN2_LO[m.dt]), nf.name, group=t.n)
    m.free(nf)
    r = m.horner(t, _taylor_exp(m.dt))
    m.free(t)
    bias, mbits = (127, 23) if m.f32 else (1023, 52)
    gl.sew(m.it)
    c("li", "t0", bias - 1)
    c("vadd.vx", n.name, n.name, "t0", group=n.n)
    c("li", "t0", mbits)
    c("vsll.vx", n.name, n.name, "t0", group=n.n)
    gl.sew(m.dt)
    c("vfmul.vv", r.name, r.name, n.name, group=r.n)
    m.free(n)
    c("vfadd.vv", r.name, r.name, r.name, group=r.n)
    for mask, value in ((over, math.inf), (under, 0.0), (nan, math.nan)):
        if mask is not None:
            c("vmand.mm", "v0", f"v{mask}", f"v{mask}")
            m.merge_k(r, value)
            gl.vr.release(mask, 1)
    if not consume:
        m.keep_nan(r, x)
    return r


def log(gl: GenericLowering, x: V) -> V:
    m = Vm(gl, x.dtype)
    bias, mbits, tiny, sc = (127, 23, 1.1754943508222875e-38, 24) if m.f32 else \
        (1023, 52, 2.2250738585072014e-308, 54)
    xs = m.mulk(x, float(2 ** sc))
    m.mask_cmp("vmflt.vf", x, tiny)
    xm = m.un("vmv.v.v", x)
    m.merge(xm, xs)
    m.free(xs)
    # exponent (as int lanes) with the pre-scale folded in
    e = m.new(m.it)
    gl.sew(m.it)
    gl.c("li", "t0", mbits)
    gl.c("vsrl.vx", e.name, xm.name, "t0", group=e.n)
    gl.c("li", "t0", -bias)
    gl.c("vadd.vx", e.name, e.name, "t0", group=e.n)
    es = m.new(m.it)
    gl.c("li", "t0", -sc)
    gl.c("vadd.vx", es.name, e.name, "t0", group=e.n)
    gl.sew(m.dt)
    m.mask_cmp("vmflt.vf", x, tiny)
    gl.sew(m.it)
    gl.c("vmerge.vvm", e.name, e.name, es.name, vm="v0", group=e.n)
    m.free(es)
    # mantissa in [1, 2)
    gl.c("li", "t0", (1 << mbits) - 1)
    gl.c("vand.vx", xm.name, xm.name, "t0", group=xm.n)
    gl.c("li", "t0", bias << mbits)
    gl.c("vor.vx", xm.name, xm.name, "t0", group=xm.n)
    # m > sqrt2: halve it, bump e
    m.mask_cmp("vmfgt.vf", xm, math.sqrt(2.0))
    h = m.mulk(xm, 0.5)
    m.merge(xm, h)
    m.free(h)
    gl.sew(m.it)
    e1 = m.new(m.it)
    gl.c("vadd.vi", e1.name, e.name, 1, group=e.n)
    gl.c("vmerge.vvm", e.name, e.name, e1.name, vm="v0", group=e.n)
    m.free(e1)
    f = m.addk(xm, -1.0)
    d = m.addk(xm, 1.0)
    m.free(xm)
    s = m.div(f, d)
    m.free(f, d)
    s2 = m.mul(s, s)
    terms = 6 if m.f32 else 12
    p = m.horner(s2, [2.0 / (2 * i + 1) for i in range(terms)])
    m.free(s2)
    r = m.mul(p, s)
    m.free(p, s)
    ef = m.un("vfcvt.f.x.v", e)
    ef.dtype = m.dt
    m.free(e)
    gl.sew(m.dt)
    gl.c("vfmacc.vf", r.name, m.k(LN2_LO[m.dt]), ef.name, group=r.n)
    gl.c("vfmacc.vf", r.name, m.k(LN2_HI), ef.name, group=r.n)
    m.free(ef)
    m.mask_cmp("vmfeq.vf", x, math.inf)
    m.merge_k(r, math.inf)
    m.mask_cmp("vmflt.vf", x, 0.0)
    m.merge_k(r, math.nan)
    m.mask_cmp("vmfeq.vf", x, 0.0)
    m.merge_k(r, -math.inf)
    m.keep_nan(r, x)
    return r


def sigmoid(gl: GenericLowering, x: V) -> V:
    m = Vm(gl, x.dtype)
    nx = m.neg(x)
    e = exp(gl, nx, consume=True)
    d = m.addk(e, 1.0)
    m.free(e)
    r = m.rdivk(1.0, d)
    m.free(d)
    return r


def tanh(gl: GenericLowering, x: V) -> V:
    m = Vm(gl, x.dtype)
    a = m.abs(x)
    cap = 10.0 if m.f32 else 20.0
    gl.c("vfmin.vf", a.name, a.name, m.k(cap), group=a.n)
    a2 = m.op("vfadd.vv", a, a)
    e = exp(gl, a2, consume=True)
    d = m.addk(e, 1.0)
    m.free(e)
    q = m.rdivk(-2.0, d)
    m.free(d)
    r = m.addk(q, 1.0)
    m.free(q)
    # small |x| (< 0.125): the odd Taylor series, to x^11 (float32) / x^21 (float64)
    x2 = m.mul(x, x)
    p = m.horner(x2, list(TANH_SERIES[:6 if m.f32 else 11]))
    m.free(x2)
    small = m.mul(p, x)
    m.free(p)
    out = m.copysign(r, x)
    m.free(r)
    m.mask_cmp("vmflt.vf", a, 0.125)
    m.merge(out, small)
    m.free(small, a)
    m.keep_nan(out, x)
    return out


TANH_SERIES = (1.0, -1.0 / 3, 2.0 / 15, -17.0 / 315, 62.0 / 2835, -1382.0 / 155925,
               21844.0 / 6081075, -929569.0 / 638512875, 6404582.0 / 10854718875,
               -443861162.0 / 1856156927625, 18888466084.0 / 194896477400625)
AS_P = 0.3275911
AS_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def erf(gl: GenericLowering, x: V) -> V:
    """Ordered so that few values are live at once (exp's temporaries die before the
    rational part is built): GELU's erf then fits LMUL 4."""
    m = Vm(gl, x.dtype)
    c = gl.c
    a = m.abs(x)
    c("vfmin.vf", a.name, a.name, m.k(10.0), group=a.n)
    # large |x|: 1 - t (a1 + a2 t + ...) exp(-x^2), t = 1 / (1 + p |x|)
    big = m.mul(a, a)
    c("vfsgnjn.vv", big.name, big.name, big.name, group=big.n)
    e = exp(gl, big, consume=True)
    t = m.mulk(a, AS_P)
    c("vfadd.vf", t.name, t.name, m.k(1.0), group=t.n)
    c("vfrdiv.vf", t.name, t.name, m.k(1.0), group=t.n)
    p = m.horner(t, list(AS_A))
    c("vfmul.vv", p.name, p.name, t.name, group=p.n)
    m.free(t)
    c("vfmul.vv", e.name, e.name, p.name, group=e.n)
    m.free(p)
    c("vfrsub.vf", e.name, e.name, m.k(1.0), group=e.n)
    # small |x|: 2/sqrt(pi) sum (-1)^n x^(2n+1) / (n! (2n+1))
    terms = 11 if m.f32 else 18
    coef = [2 / math.sqrt(math.pi) * (-1) ** n / (math.factorial(n) * (2 * n + 1))
            for n in range(terms)]
    a2 = m.mul(a, a)
    small = m.horner(a2, coef)
    m.free(a2)
    c("vfmul.vv", small.name, small.name, a.name, group=small.n)
    m.mask_cmp("vmflt.vf", a, 1.0)
    m.merge(e, small)
    m.free(small, a)
    out = m.copysign(e, x)
    m.free(e)
    m.keep_nan(out, x)
    return out


#: pi/2 in three parts per dtype (Cody-Waite): each part exact in the dtype, so the fused
#: r - n*part steps lose nothing for |n| up to the sweep's range
PIO2 = {"float64": (1.5707963267341256, 6.077100506506192e-11, 2.0222662487959506e-21),
        "float32": (1.5707963705062866, -4.371138828673793e-08, -1.7763568394002505e-15)}


def _sincos_core(gl: GenericLowering, x: V, cos_shift: int) -> tuple[V, V, V]:
    """(sin poly, cos poly, quadrant ints (+cos_shift)) of the reduced argument."""
    m = Vm(gl, x.dtype)
    y = m.mulk(x, 2 / math.pi)
    n, nf = m.to_int_round(y)
    m.free(y)
    r = m.un("vmv.v.v", x)
    gl.sew(m.dt)
    for part in PIO2[m.dt]:
        gl.c("vfnmsac.vf", r.name, m.k(part), nf.name, group=r.n)
    m.free(nf)
    if cos_shift:
        gl.sew(m.it)
        gl.c("vadd.vi", n.name, n.name, cos_shift, group=n.n)
    r2 = m.mul(r, r)
    ns = 6 if m.f32 else 9
    sp = m.horner(r2, [(-1) ** i / math.factorial(2 * i + 1) for i in range(ns)])
    s = m.mul(sp, r)
    m.free(sp)
    c = m.horner(r2, [(-1) ** i / math.factorial(2 * i) for i in range(ns + 1)])
    m.free(r2, r)
    return s, c, n


def _quadrant(gl: GenericLowering, m: Vm, s: V, c: V, n: V) -> V:
    """sin(x) from the reduced sin/cos and quadrant n: odd -> cos, bit 1 -> negate."""
    t = m.new(m.it)
    gl.sew(m.it)
    gl.c("vand.vi", t.name, n.name, 1, group=t.n)
    gl.c("vmsne.vi", "v0", t.name, 0, group=t.n)
    m.merge(s, c)
    gl.sew(m.it)
    gl.c("vand.vi", t.name, n.name, 2, group=t.n)
    gl.c("vmsne.vi", "v0", t.name, 0, group=t.n)
    neg = m.neg(s)
    m.merge(s, neg)
    m.free(neg, t)
    return s


def sin(gl: GenericLowering, x: V) -> V:
    m = Vm(gl, x.dtype)
    s, c, n = _sincos_core(gl, x, 0)
    r = _quadrant(gl, m, s, c, n)
    m.free(c, n)
    m.keep_nan(r, x)
    return r


def cos(gl: GenericLowering, x: V) -> V:
    m = Vm(gl, x.dtype)
    s, c, n = _sincos_core(gl, x, 1)
    r = _quadrant(gl, m, s, c, n)
    m.free(c, n)
    m.keep_nan(r, x)
    return r


def tan(gl: GenericLowering, x: V) -> V:
    m = Vm(gl, x.dtype)
    sv = sin(gl, x)
    cv = cos(gl, x)
    r = m.div(sv, cv)
    m.free(sv, cv)
    return r


def atan(gl: GenericLowering, x: V) -> V:
    m = Vm(gl, x.dtype)
    a = m.abs(x)
    # a > 1: atan(a) = pi/2 - atan(1/a)
    inv = m.rdivk(1.0, a)
    big = gl.vr.alloc(1)
    gl.sew(m.dt)
    gl.c("vmfgt.vf", f"v{big}", a.name, m.k(1.0), group=a.n)
    gl.c("vmand.mm", "v0", f"v{big}", f"v{big}")
    m.merge(a, inv)
    m.free(inv)
    # a > tan(pi/8): pi/4 + atan((a-1)/(a+1))
    num = m.addk(a, -1.0)
    den = m.addk(a, 1.0)
    q = m.div(num, den)
    m.free(num, den)
    mid = gl.vr.alloc(1)
    gl.c("vmfgt.vf", f"v{mid}", a.name, m.k(0.41421356237309503), group=a.n)
    gl.c("vmand.mm", "v0", f"v{mid}", f"v{mid}")
    m.merge(a, q)
    m.free(q)
    t2 = m.mul(a, a)
    terms = 10 if m.f32 else 21
    p = m.horner(t2, [(-1) ** i / (2 * i + 1) for i in range(terms)])
    m.free(t2)
    r = m.mul(p, a)
    m.free(p, a)
    off = m.addk(r, math.pi / 4)
    gl.c("vmand.mm", "v0", f"v{mid}", f"v{mid}")
    m.merge(r, off)
    m.free(off)
    gl.vr.release(mid, 1)
    fl = m.rsubk(math.pi / 2, r)
    gl.c("vmand.mm", "v0", f"v{big}", f"v{big}")
    m.merge(r, fl)
    m.free(fl)
    gl.vr.release(big, 1)
    out = m.copysign(r, x)
    m.free(r)
    m.keep_nan(out, x)
    return out


def asin(gl: GenericLowering, x: V) -> V:
    m = Vm(gl, x.dtype)
    x2 = m.mul(x, x)
    om = m.rsubk(1.0, x2)
    m.free(x2)
    sq = m.sqrt(om)
    m.free(om)
    q = m.div(x, sq)
    m.free(sq)
    r = atan(gl, q)
    m.free(q)
    return r


def acos(gl: GenericLowering, x: V) -> V:
    m = Vm(gl, x.dtype)
    a = asin(gl, x)
    r = m.rsubk(math.pi / 2, a)
    m.free(a)
    return r


def _exp_pair(gl: GenericLowering, x: V) -> tuple[V, V]:
    m = Vm(gl, x.dtype)
    e = exp(gl, x)
    ie = m.rdivk(1.0, e)
    return e, ie


def sinh(gl: GenericLowering, x: V) -> V:
    m = Vm(gl, x.dtype)
    e, ie = _exp_pair(gl, x)
    r = m.sub(e, ie)
    m.free(e, ie)
    gl.c("vfmul.vf", r.name, r.name, m.k(0.5), group=r.n)
    x2 = m.mul(x, x)
    terms = 6 if m.f32 else 10
    p = m.horner(x2, [1.0 / math.factorial(2 * i + 1) for i in range(terms)])
    m.free(x2)
    small = m.mul(p, x)
    m.free(p)
    a = m.abs(x)
    m.mask_cmp("vmflt.vf", a, 0.5)
    m.free(a)
    m.merge(r, small)
    m.free(small)
    return r


def cosh(gl: GenericLowering, x: V) -> V:
    m = Vm(gl, x.dtype)
    e, ie = _exp_pair(gl, x)
    r = m.add(e, ie)
    m.free(e, ie)
    gl.c("vfmul.vf", r.name, r.name, m.k(0.5), group=r.n)
    return r


def asinh(gl: GenericLowering, x: V) -> V:
    m = Vm(gl, x.dtype)
    a = m.abs(x)
    a2 = m.mul(a, a)
    gl.c("vfadd.vf", a2.name, a2.name, m.k(1.0), group=a2.n)
    s = m.sqrt(a2)
    m.free(a2)
    t = m.add(a, s)
    m.free(a, s)
    r = log(gl, t)
    m.free(t)
    out = m.copysign(r, x)
    m.free(r)
    return out


def acosh(gl: GenericLowering, x: V) -> V:
    m = Vm(gl, x.dtype)
    x2 = m.mul(x, x)
    gl.c("vfadd.vf", x2.name, x2.name, m.k(-1.0), group=x2.n)
    s = m.sqrt(x2)
    m.free(x2)
    t = m.add(x, s)
    m.free(s)
    r = log(gl, t)
    m.free(t)
    return r


def atanh(gl: GenericLowering, x: V) -> V:
    m = Vm(gl, x.dtype)
    num = m.addk(x, 1.0)
    den = m.rsubk(1.0, x)
    q = m.div(num, den)
    m.free(num, den)
    r = log(gl, q)
    m.free(q)
    gl.c("vfmul.vf", r.name, r.name, m.k(0.5), group=r.n)
    return r


def _trunc(gl: GenericLowering, m: Vm, x: V, mode: str) -> V:
    """floor/ceil/round/trunc for |x| < 2^mantissa; larger, inf and NaN pass through."""
    n = m.un("vfcvt.x.f.v" if mode == "round" else "vfcvt.rtz.x.f.v", x, m.it)
    t = m.un("vfcvt.f.x.v", n)
    t.dtype = m.dt
    m.free(n)
    if mode in ("floor", "ceil"):
        gl.sew(m.dt)
        gl.c("vmflt.vv" if mode == "floor" else "vmflt.vv", "v0",
             *((x.name, t.name) if mode == "floor" else (t.name, x.name)), group=x.n)
        adj = m.addk(t, -1.0 if mode == "floor" else 1.0)
        m.merge(t, adj)
        m.free(adj)
    out = m.copysign(t, x)
    m.free(t)
    a = m.abs(x)
    m.mask_cmp("vmfge.vf", a, float(2 ** (23 if m.f32 else 52)))
    m.free(a)
    m.merge(out, x)
    m.keep_nan(out, x)
    return out


def floor(gl: GenericLowering, x: V) -> V:
    return _trunc(gl, Vm(gl, x.dtype), x, "floor")


def ceil(gl: GenericLowering, x: V) -> V:
    return _trunc(gl, Vm(gl, x.dtype), x, "ceil")


def round_(gl: GenericLowering, x: V) -> V:
    return _trunc(gl, Vm(gl, x.dtype), x, "round")


def fmod(gl: GenericLowering, a: V, b: V) -> V:
    """C fmod: a - trunc(a/b) b with the sign of a (also for a zero result); a finite a
    over an infinite b is a itself."""
    m = Vm(gl, a.dtype)
    q = m.div(a, b)
    t = _trunc(gl, m, q, "trunc")
    m.free(q)
    r = m.un("vmv.v.v", a)
    gl.sew(m.dt)
    gl.c("vfnmsac.vv", r.name, t.name, b.name, group=r.n)
    m.free(t)
    ab = m.abs(b)
    inf = gl.vr.alloc(1)
    gl.sew(m.dt)
    gl.c("vmfeq.vf", f"v{inf}", ab.name, m.k(math.inf), group=ab.n)
    m.free(ab)
    aa = m.abs(a)
    m.mask_cmp("vmflt.vf", aa, math.inf)  # finite a (NaN compares false)
    m.free(aa)
    gl.c("vmand.mm", "v0", "v0", f"v{inf}")
    gl.vr.release(inf, 1)
    m.merge(r, a)
    out = m.copysign(r, a)
    m.free(r)
    return out


def mod(gl: GenericLowering, a: V, b: V) -> V:
    """numpy's float mod: the remainder takes the divisor's sign (a zero one too)."""
    m = Vm(gl, a.dtype)
    r = fmod(gl, a, b)
    x = m.op("vfsgnjx.vv", r, b)  # negative exactly when the signs differ
    mk = gl.vr.alloc(1)
    gl.sew(m.dt)
    gl.c("vmflt.vf", "v0", x.name, m.k(0.0), group=x.n)
    gl.c("vmfne.vf", f"v{mk}", r.name, m.k(0.0), group=r.n)
    gl.c("vmand.mm", "v0", "v0", f"v{mk}")
    gl.vr.release(mk, 1)
    m.free(x)
    s = m.add(r, b)
    m.merge(r, s)
    m.free(s)
    z = m.op("vfsgnj.vv", r, b)
    m.mask_cmp("vmfeq.vf", r, 0.0)
    m.merge(r, z)
    m.free(z)
    return r


def power_by_squaring(gl: GenericLowering, base: V, e: V, mul: str, one: V) -> V:
    """one * base^e per lane (e: non-negative integer lanes, consumed), by squaring in a
    run-time loop that ends when every lane's exponent is exhausted: exact whenever the
    result is representable, log2(e) roundings otherwise."""
    c = gl.c
    g = base.n
    r = gl.new(base.dtype)
    gl.sew(base.dtype)
    c("vmv.v.v", r.name, one.name, group=g)
    x = gl.new(base.dtype)
    c("vmv.v.v", x.name, base.name, group=g)
    t = gl.new(base.dtype)
    top = c.label()
    c.place(top)
    gl.sew(e.dtype)
    c("vand.vi", t.name, e.name, 1, group=e.n)
    c("vmsne.vi", "v0", t.name, 0, group=e.n)
    gl.sew(base.dtype)
    c(mul, t.name, r.name, x.name, group=g)
    c("vmerge.vvm", r.name, r.name, t.name, vm="v0", group=g)
    c(mul, x.name, x.name, x.name, group=g)
    gl.sew(e.dtype)
    c("vsrl.vi", e.name, e.name, 1, group=e.n)
    c("vmsne.vi", "v0", e.name, 0, group=e.n)
    c("vcpop.m", "t0", "v0")
    c("bnez", "t0", top)
    gl.free(x)
    gl.free(t)
    return r


def pow_(gl: GenericLowering, a: V, b: V) -> V:
    """numpy's float power. Integer exponents (|b| < 2^62) multiply by squaring (exact
    integer powers, the sign of odd powers of negative bases, 0^-n = inf); others are
    exp(b log|a|), NaN for a negative base. a^0 = 1, 1^b = 1 and (-1)^(+-inf) = 1 even for NaN
    operands."""
    m = Vm(gl, a.dtype)
    c = gl.c
    g = a.n
    # integer exponent test: b == trunc(b) and |b| < 2^62
    bi = m.un("vfcvt.rtz.x.f.v", b, m.it)
    bf = m.un("vfcvt.f.x.v", bi)
    bf.dtype = m.dt
    isint = gl.vr.alloc(1)
    gl.sew(m.dt)
    c("vmfeq.vv", f"v{isint}", bf.name, b.name, group=g)
    m.free(bf)
    ab = m.abs(b)
    m.mask_cmp("vmflt.vf", ab, 2.0 ** 62)
    m.free(ab)
    c("vmand.mm", f"v{isint}", f"v{isint}", "v0")
    # |int(b)| where integer, else 0 (the loop then ends at once for those lanes)
    gl.sew(m.it)
    nb = m.new(m.it)
    c("vrsub.vi", nb.name, bi.name, 0, group=bi.n)
    c("vmax.vv", nb.name, nb.name, bi.name, group=bi.n)
    c("vmand.mm", "v0", f"v{isint}", f"v{isint}")
    z = m.new(m.it)
    c("vmv.v.i", z.name, 0, group=z.n)
    c("vmerge.vvm", bi.name, z.name, nb.name, vm="v0", group=bi.n)
    m.free(nb, z)
    one = gl.splat(1.0, m.dt)
    r = power_by_squaring(gl, a, bi, "vfmul.vv", one)
    m.free(bi)
    inv = m.rdivk(1.0, r)
    m.mask_cmp("vmflt.vf", b, 0.0)
    m.merge(r, inv)
    m.free(inv)
    # non-integer exponents: exp(b log|a|), NaN for a < 0
    aa = m.abs(a)
    la = log(gl, aa)
    m.free(aa)
    y = m.mul(la, b)
    m.free(la)
    ex = exp(gl, y, consume=True)
    neg = gl.vr.alloc(1)
    gl.sew(m.dt)
    c("vmflt.vf", f"v{neg}", a.name, m.k(0.0), group=g)
    c("vmandn.mm", "v0", f"v{neg}", f"v{isint}")
    m.merge_k(ex, math.nan)
    c("vmnand.mm", "v0", f"v{isint}", f"v{isint}")
    m.merge(r, ex)
    m.free(ex)
    gl.vr.release(neg, 1)
    gl.vr.release(isint, 1)
    # a == 1, b == 0, a == -1 with b = +-inf: 1
    m.mask_cmp("vmfeq.vf", a, 1.0)
    m.merge(r, one)
    m.mask_cmp("vmfeq.vf", b, 0.0)
    m.merge(r, one)
    ab = m.abs(b)
    t = gl.vr.alloc(1)
    gl.sew(m.dt)
    c("vmfeq.vf", f"v{t}", ab.name, m.k(math.inf), group=g)
    m.mask_cmp("vmfeq.vf", a, -1.0)
    c("vmand.mm", "v0", "v0", f"v{t}")
    gl.vr.release(t, 1)
    m.free(ab)
    m.merge(r, one)
    m.free(one)
    return r


def pow_const(gl: GenericLowering, a: V, e: float) -> V | None:
    """a^e for a compile-time exponent: small integers as an unrolled square-and-multiply
    chain (then 1/x for negative ones), non-integers as exp(e log|a|) with NaN for a < 0 and
    1 for a == 1; None where the general lowering is needed (large integers)."""
    m = Vm(gl, a.dtype)
    if e == 0.0:
        return gl.splat(1.0, m.dt)
    if e == int(e) and abs(e) <= 64:
        n = int(abs(e))
        r: V | None = None
        x = m.un("vmv.v.v", a)
        while True:
            if n & 1:
                if r is None:
                    r = m.un("vmv.v.v", x)
                else:
                    t = m.mul(r, x)
                    m.free(r)
                    r = t
            n >>= 1
            if not n:
                break
            t = m.mul(x, x)
            m.free(x)
            x = t
        m.free(x)
        assert r is not None
        if e < 0:
            t = m.rdivk(1.0, r)
            m.free(r)
            r = t
        return r
    if e == int(e):
        return None
    aa = m.abs(a)
    la = log(gl, aa)
    m.free(aa)
    y = m.mulk(la, e)
    m.free(la)
    r = exp(gl, y, consume=True)
    m.mask_cmp("vmflt.vf", a, 0.0)
    m.merge_k(r, math.nan)
    m.mask_cmp("vmfeq.vf", a, 1.0)
    m.merge_k(r, 1.0)
    return r


def int_pow(gl: GenericLowering, a: V, b: V) -> V:
    """The reference's integer power: a^b wrapping at the width for b >= 0; for b < 0 it is
    1 for a = 1, (-1)^|b| for a = -1, else 0."""
    c = gl.c
    g = a.n
    e = gl.new(b.dtype)
    gl.sew(b.dtype)
    c("vmax.vx", e.name, b.name, "zero", group=g)
    one = gl.splat(1, a.dtype)
    r = power_by_squaring(gl, a, e, "vmul.vv", one)
    gl.free(e)
    # b < 0: only |a| == 1 survives; (-1)^|b| is -1 for odd |b|
    neg = gl.vr.alloc(1)
    gl.sew(b.dtype)
    c("vmslt.vx", f"v{neg}", b.name, "zero", group=g)
    z = gl.new(a.dtype)
    c("vmv.v.i", z.name, 0, group=g)
    c("vmand.mm", "v0", f"v{neg}", f"v{neg}")
    c("vmerge.vvm", r.name, r.name, z.name, vm="v0", group=g)
    c("vmseq.vi", "v0", a.name, 1, group=g)
    c("vmand.mm", "v0", "v0", f"v{neg}")
    c("vmerge.vvm", r.name, r.name, one.name, vm="v0", group=g)
    # a == -1, b < 0: 1 - 2 (|b| & 1)
    c("vand.vi", z.name, b.name, 1, group=g)
    c("vadd.vv", z.name, z.name, z.name, group=g)
    c("vrsub.vi", z.name, z.name, 1, group=g)
    c("vmseq.vi", "v0", a.name, -1, group=g)
    c("vmand.mm", "v0", "v0", f"v{neg}")
    c("vmerge.vvm", r.name, r.name, z.name, vm="v0", group=g)
    gl.vr.release(neg, 1)
    gl.free(z)
    gl.free(one)
    return r


def atan2(gl: GenericLowering, y: V, x: V) -> V:
    m = Vm(gl, y.dtype)
    q = m.div(y, x)
    r = atan(gl, q)
    m.free(q)
    pi = m.gl.splat(math.pi, m.dt)
    sp = m.copysign(pi, y)
    m.free(pi)
    r2 = m.add(r, sp)
    m.free(sp)
    m.mask_cmp("vmflt.vf", x, 0.0)
    m.merge(r, r2)
    m.free(r2)
    return r


UNARY: dict[str, Callable[[GenericLowering, V], V]] = {
    "exp": exp, "log": log, "sigmoid": sigmoid, "tanh": tanh, "erf": erf, "sin": sin,
    "cos": cos, "tan": tan, "atan": atan, "asin": asin, "acos": acos, "sinh": sinh,
    "cosh": cosh, "asinh": asinh, "acosh": acosh, "atanh": atanh, "floor": floor,
    "ceil": ceil, "round": round_,
}
BINARY: dict[str, Callable[[GenericLowering, V, V], V]] = {
    "pow": pow_, "atan2": atan2, "mod": mod, "fmod": fmod,
}
