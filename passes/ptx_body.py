"""Scalar PTX for kernel-IR bodies: one table from (fn, value class) to an instruction sequence.

Values live in registers by *class*: ``f32`` (float32, and float16/bfloat16 computed in f32 and
rounded back after every op, as the reference rounds per op), ``f64``, ``s32``/``u32`` (all
integers up to 32 bits, re-normalised to their width after each op so wrap-around matches),
``s64``/``u64`` and ``pred`` (bool). Transcendentals have no PTX instruction beyond the
``.approx`` base-2 set, so they are short sequences on top of ``ex2``/``lg2``/``sin``/``cos`` and
polynomials fitted once (Chebyshev nodes, numpy) when this module loads; float64 transcendentals
are computed through float32 (documented precision: ~1e-7 relative), float64 arithmetic is exact.
"""

from __future__ import annotations

import math
import struct
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from xdsl.dialects.builtin import StringAttr
from xdsl.ir import Operation

from portc.compiler.errors import LoweringError
from portc.dialects import dtypes, ptx

#: dtype -> register class it computes in
CLASS_OF: dict[str, str] = {
    "float32": "f32", "float16": "f32", "bfloat16": "f32", "float64": "f64",
    "int8": "s32", "int16": "s32", "int32": "s32", "uint8": "u32", "uint16": "u32",
    "uint32": "u32", "int64": "s64", "uint64": "u64", "bool": "pred",
}
PREFIX = {"pred": "%p", "b16": "%h", "s32": "%r", "u32": "%r", "b32": "%r", "s64": "%rd",
          "u64": "%rd", "b64": "%rd", "f32": "%f", "f64": "%fd"}
#: dtype -> (ld/st type qualifier, bytes)
MEM_TYPE: dict[str, tuple[str, int]] = {
    "float32": ("f32", 4), "float64": ("f64", 8), "float16": ("b16", 2), "bfloat16": ("u16", 2),
    "int8": ("s8", 1), "int16": ("s16", 2), "int32": ("s32", 4), "int64": ("s64", 8),
    "uint8": ("u8", 1), "uint16": ("u16", 2), "uint32": ("u32", 4), "uint64": ("u64", 8),
    "bool": ("u8", 1),
}


def esize(dt: str) -> int:
    return MEM_TYPE[dt][1]


def check_dtype(dt: str, where: str) -> None:
    if dt not in CLASS_OF:
        raise LoweringError(f"{where}: dtype {dt} has no PTX lowering (sub-byte and float8 "
                            "types are rewritten by decompose-for-targets first)")


@dataclass(frozen=True)
class Val:
    """A body value: its register, register class and the dtype it stands for."""

    reg: str
    cls: str
    dtype: str


def f32_imm(v: float) -> str:
    return "0f{:08X}".format(struct.unpack("<I", struct.pack("<f", float(v)))[0])


def f64_imm(v: float) -> str:
    return "0d{:016X}".format(struct.unpack("<Q", struct.pack("<d", float(v)))[0])


class Emitter:
    """Collects ptx ops for one entry, hands out virtual registers and labels."""

    def __init__(self) -> None:
        self.ops: list[Operation] = []
        self.count: dict[str, int] = defaultdict(int)
        self.labels = 0

    def reg(self, cls: str) -> str:
        p = PREFIX[cls]
        self.count[p] += 1
        return f"{p}{self.count[p]}"

    def __call__(self, mnemonic: str, *args: str | int, guard: str | None = None) -> None:
        self.ops.append(ptx.ins(mnemonic, [str(a) for a in args], guard))

    def op(self, mnemonic: str, cls: str, *args: str | int) -> str:
        """``d = mnemonic args`` into a fresh register of ``cls``; returns ``d``."""
        d = self.reg(cls)
        self(mnemonic, d, *args)
        return d

    def new_label(self, hint: str = "L") -> str:
        self.labels += 1
        return f"$L_{hint}{self.labels}"

    def place(self, label: str) -> None:
        self.ops.append(ptx.LabelOp.create(properties={"label": StringAttr(label)}))

    # -- constants -------------------------------------------------------------------------
    def imm(self, v: float | int, cls: str) -> str:
        if cls == "f32":
            return f32_imm(v)
        if cls == "f64":
            return f64_imm(v)
        return str(int(v))

    def const(self, v: float | int | bool, cls: str) -> str:
        if cls == "pred":
            r = self.op("mov.u32", "u32", int(bool(v)))
            return self.op("setp.ne.u32", "pred", r, 0)
        return self.op(f"mov.{_ty(cls)}", cls, self.imm(v, cls))


def _ty(cls: str) -> str:
    return {"pred": "pred"}.get(cls, cls)


# ------------------------------------------------------------------------- narrow-type rounding
def normalize(e: Emitter, r: str, dtype: str) -> str:
    """Round/wrap a value computed in its class back to its dtype (per-op rounding)."""
    if dtype == "float16":
        h = e.op("cvt.rn.f16.f32", "b16", r)
        return e.op("cvt.f32.f16", "f32", h)
    if dtype == "bfloat16":
        h = e.op("cvt.rn.bf16.f32", "b16", r)
        return bf16_to_f32(e, h)
    bits = dtypes.dtype(dtype).bits
    if dtype in ("int8", "int16"):
        return e.op("bfe.s32", "s32", r, 0, bits)
    if dtype in ("uint8", "uint16"):
        return e.op("and.b32", "u32", r, (1 << bits) - 1)
    return r


def bf16_to_f32(e: Emitter, h: str) -> str:
    """bf16 bits -> f32 by a shift (``cvt.f32.bf16`` needs sm_90)."""
    w = e.op("cvt.u32.u16", "u32", h)
    w = e.op("shl.b32", "u32", w, 16)
    return e.op("mov.b32", "f32", w)


# ------------------------------------------------------------------------------ float helpers
F = "f32"


def _fit_odd_over_x(fn: Callable[[np.ndarray], np.ndarray], hi: float, deg: int) -> list[float]:
    """Coefficients c_i (in s = x^2, lowest first) with fn(x) ~ x * sum c_i s^i on [0, hi],
    least squares on Chebyshev nodes: fitted once at import, in float64."""
    t = np.cos(np.pi * (np.arange(400) + 0.5) / 400)
    x = (t + 1) / 2 * hi
    x = x[x > 1e-6]
    s = x * x
    y = fn(x) / x
    return list(np.polynomial.polynomial.polyfit(s, y, deg))


ATAN_C = _fit_odd_over_x(np.arctan, 1.0, 11)
#: tanh/sinh near 0, where the exp-based forms cancel
TANH_SMALL, TANH_C = 0.625, _fit_odd_over_x(np.tanh, 0.625, 8)
SINH_SMALL, SINH_C = 0.75, _fit_odd_over_x(np.sinh, 0.75, 6)
#: log(m) = 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172 for m in [sqrt(1/2), sqrt(2))
LOG_C = _fit_odd_over_x(lambda s: 2 * np.arctanh(s), 0.1716, 5)
LOG2E = 1.0 / math.log(2.0)
LN2 = math.log(2.0)


def fmul(e: Emitter, a: str, b: str) -> str:
    return e.op("mul.rn.f32", F, a, b)


def fadd(e: Emitter, a: str, b: str) -> str:
    return e.op("add.rn.f32", F, a, b)


def fsub(e: Emitter, a: str, b: str) -> str:
    return e.op("sub.rn.f32", F, a, b)


def fdiv(e: Emitter, a: str, b: str) -> str:
    return e.op("div.rn.f32", F, a, b)


def ffma(e: Emitter, a: str, b: str, c: str) -> str:
    return e.op("fma.rn.f32", F, a, b, c)


def fexp(e: Emitter, x: str) -> str:
    return e.op("ex2.approx.f32", F, fmul(e, x, f32_imm(LOG2E)))


def _odd_poly(e: Emitter, x: str, coeffs: list[float]) -> str:
    """x * sum c_i (x^2)^i by Horner."""
    s = fmul(e, x, x)
    p = e.const(coeffs[-1], F)
    for c in reversed(coeffs[:-1]):
        p = ffma(e, p, s, f32_imm(c))
    return fmul(e, p, x)


def flog(e: Emitter, x: str) -> str:
    """Natural log to ~1 ulp for normal positive x: exponent * ln2 + 2 atanh(s) of the mantissa
    scaled into [sqrt(1/2), sqrt(2)); zero, negative, subnormal, inf and NaN take lg2.approx
    (whose special values are IEEE's)."""
    bits = e.op("mov.b32", "u32", x)
    ex = e.op("shr.u32", "u32", bits, 23)
    mant = e.op("or.b32", "u32", e.op("and.b32", "u32", bits, 0x7FFFFF), 0x3F800000)
    m = e.op("mov.b32", F, mant)
    big = fset(e, "gt", m, f32_imm(math.sqrt(2.0)))
    m = fselp(e, big, fmul(e, m, f32_imm(0.5)), m)
    ex = e.op("selp.u32", "u32", e.op("add.u32", "u32", ex, 1), ex, big)
    ef = e.op("cvt.rn.f32.s32", F, e.op("sub.s32", "s32", ex, 127))
    sq = fdiv(e, fsub(e, m, f32_imm(1.0)), fadd(e, m, f32_imm(1.0)))
    r = ffma(e, ef, f32_imm(LN2), _odd_poly(e, sq, LOG_C))
    approx = fmul(e, e.op("lg2.approx.f32", F, x), f32_imm(LN2))
    normal = e.op("and.pred", "pred", fset(e, "ge", x, f32_imm(2.0 ** -126)),
                  fset(e, "lt", x, f32_imm(math.inf)))
    return fselp(e, normal, r, approx)


def fsqrt(e: Emitter, x: str) -> str:
    return e.op("sqrt.rn.f32", F, x)


def fselp(e: Emitter, p: str, a: str, b: str) -> str:
    return e.op("selp.f32", F, a, b, p)


def fset(e: Emitter, cmp: str, a: str, b: str) -> str:
    return e.op(f"setp.{cmp}.f32", "pred", a, b)


def fcopysign_of(e: Emitter, mag: str, sign_of: str) -> str:
    """|mag| with the sign of ``sign_of`` (PTX copysign takes the sign operand first)."""
    return e.op("copysign.f32", F, sign_of, mag)


def _reduce_2pi(e: Emitter, x: str) -> str:
    """x - 2*pi*round(x / 2pi) in two steps (Cody-Waite) so sin/cos.approx see [-pi, pi]."""
    k = e.op("cvt.rni.f32.f32", F, fmul(e, x, f32_imm(1 / (2 * math.pi))))
    hi = float(np.float32(2 * math.pi))
    lo = 2 * math.pi - hi
    r = ffma(e, k, f32_imm(-hi), x)
    return ffma(e, k, f32_imm(-lo), r)


def fatan(e: Emitter, x: str) -> str:
    a = e.op("abs.f32", F, x)
    big = fset(e, "gt", a, f32_imm(1.0))
    inv = e.op("rcp.rn.f32", F, a)
    t = fselp(e, big, inv, a)
    s = fmul(e, t, t)
    p = e.const(ATAN_C[-1], F)
    for c in reversed(ATAN_C[:-1]):
        p = ffma(e, p, s, f32_imm(c))
    r = fmul(e, p, t)
    r = fselp(e, big, fsub(e, f32_imm(math.pi / 2), r), r)
    return fcopysign_of(e, r, x)


def fatan2(e: Emitter, y: str, x: str) -> str:
    ax, ay = e.op("abs.f32", F, x), e.op("abs.f32", F, y)
    mx = e.op("max.f32", F, ax, ay)
    mn = e.op("min.f32", F, ax, ay)
    zero = fset(e, "eq", mx, f32_imm(0.0))
    t = fdiv(e, mn, mx)
    t = fselp(e, zero, f32_imm(0.0), t)
    s = fmul(e, t, t)
    p = e.const(ATAN_C[-1], F)
    for c in reversed(ATAN_C[:-1]):
        p = ffma(e, p, s, f32_imm(c))
    a = fmul(e, p, t)
    a = fselp(e, fset(e, "gt", ay, ax), fsub(e, f32_imm(math.pi / 2), a), a)
    a = fselp(e, fset(e, "lt", x, f32_imm(0.0)), fsub(e, f32_imm(math.pi), a), a)
    a = fselp(e, fset(e, "lt", y, f32_imm(0.0)), e.op("neg.f32", F, a), a)
    # NaN in either operand propagates through the ordered compares above as NaN inputs
    nan = e.op("or.pred", "pred", fset(e, "nan", x, x), fset(e, "nan", y, y))
    return fselp(e, nan, fadd(e, x, y), a)


def _one_minus_sq_sqrt(e: Emitter, x: str) -> str:
    return fsqrt(e, fmul(e, fsub(e, f32_imm(1.0), x), fadd(e, f32_imm(1.0), x)))


def ferf(e: Emitter, x: str) -> str:
    """Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), odd extension."""
    a = e.op("abs.f32", F, x)
    t = e.op("rcp.rn.f32", F, ffma(e, a, f32_imm(0.3275911), f32_imm(1.0)))
    coeffs = (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592)
    p = e.const(coeffs[0], F)
    for c in coeffs[1:]:
        p = ffma(e, p, t, f32_imm(c))
    p = fmul(e, p, t)
    ex = fexp(e, e.op("neg.f32", F, fmul(e, a, a)))
    r = fsub(e, f32_imm(1.0), fmul(e, p, ex))
    return fcopysign_of(e, r, x)


def _sinh_cosh(e: Emitter, x: str, sign: float) -> str:
    p = fexp(e, x)
    m = fexp(e, e.op("neg.f32", F, x))
    s = fadd(e, p, m) if sign > 0 else fsub(e, p, m)
    r = fmul(e, s, f32_imm(0.5))
    if sign > 0:
        return r
    small = fset(e, "lt", e.op("abs.f32", F, x), f32_imm(SINH_SMALL))
    return fselp(e, small, _odd_poly(e, x, SINH_C), r)


def ftanh(e: Emitter, x: str) -> str:
    a = e.op("abs.f32", F, x)
    q = fexp(e, fmul(e, a, f32_imm(-2.0)))
    r = fdiv(e, fsub(e, f32_imm(1.0), q), fadd(e, f32_imm(1.0), q))
    r = fcopysign_of(e, r, x)
    return fselp(e, fset(e, "lt", a, f32_imm(TANH_SMALL)), _odd_poly(e, x, TANH_C), r)


def fsign(e: Emitter, x: str) -> str:
    r = fselp(e, fset(e, "lt", x, f32_imm(0.0)), f32_imm(-1.0), x)
    return fselp(e, fset(e, "gt", x, f32_imm(0.0)), f32_imm(1.0), r)


def _fsin(e: Emitter, x: str) -> str:
    return e.op("sin.approx.f32", F, _reduce_2pi(e, x))


def _fcos(e: Emitter, x: str) -> str:
    return e.op("cos.approx.f32", F, _reduce_2pi(e, x))


def _ftan(e: Emitter, x: str) -> str:
    r = _reduce_2pi(e, x)
    return fdiv(e, e.op("sin.approx.f32", F, r), e.op("cos.approx.f32", F, r))


def _fasinh(e: Emitter, x: str) -> str:
    a = e.op("abs.f32", F, x)
    r = flog(e, fadd(e, a, fsqrt(e, ffma(e, a, a, f32_imm(1.0)))))
    return fcopysign_of(e, r, x)


def _facosh(e: Emitter, x: str) -> str:
    return flog(e, fadd(e, x, fsqrt(e, ffma(e, x, x, f32_imm(-1.0)))))


def _fatanh(e: Emitter, x: str) -> str:
    q = fdiv(e, fadd(e, f32_imm(1.0), x), fsub(e, f32_imm(1.0), x))
    return fmul(e, flog(e, q), f32_imm(0.5))


def _fsigmoid(e: Emitter, x: str) -> str:
    d = fadd(e, f32_imm(1.0), fexp(e, e.op("neg.f32", F, x)))
    return e.op("rcp.rn.f32", F, d)


def _frelu(e: Emitter, x: str) -> str:
    return fselp(e, fset(e, "lt", x, f32_imm(0.0)), f32_imm(0.0), x)


#: float unary fn -> f32 sequence (float64 values go through f32 for these)
FLOAT_UNARY: dict[str, Callable[[Emitter, str], str]] = {
    "exp": fexp, "log": flog, "sqrt": fsqrt,
    "rsqrt": lambda e, x: e.op("rcp.rn.f32", F, fsqrt(e, x)),
    "reciprocal": lambda e, x: e.op("rcp.rn.f32", F, x),
    "sin": _fsin, "cos": _fcos, "tan": _ftan,
    "asin": lambda e, x: fatan2(e, x, _one_minus_sq_sqrt(e, x)),
    "acos": lambda e, x: fatan2(e, _one_minus_sq_sqrt(e, x), x),
    "atan": fatan, "sinh": lambda e, x: _sinh_cosh(e, x, -1.0),
    "cosh": lambda e, x: _sinh_cosh(e, x, 1.0), "tanh": ftanh, "asinh": _fasinh,
    "acosh": _facosh, "atanh": _fatanh, "erf": ferf, "sigmoid": _fsigmoid,
}
#: unary fns with an exact instruction form for both f32 and f64 (``{t}`` = type)
EXACT_FLOAT_UNARY: dict[str, str] = {
    "neg": "neg.{t}", "abs": "abs.{t}", "floor": "cvt.rmi.{t}.{t}", "ceil": "cvt.rpi.{t}.{t}",
    "round": "cvt.rni.{t}.{t}",
}


def float_unary(e: Emitter, fn: str, x: Val) -> Val:
    t = x.cls
    if fn in EXACT_FLOAT_UNARY:
        return Val(e.op(EXACT_FLOAT_UNARY[fn].format(t=t), t, x.reg), t, x.dtype)
    if fn == "identity":
        return x
    if fn in ("isnan", "isinf", "isposinf", "isneginf"):
        inf = e.imm(math.inf, t)
        if fn == "isnan":
            p = e.op(f"setp.nan.{t}", "pred", x.reg, x.reg)
        elif fn == "isinf":
            p = e.op(f"setp.eq.{t}", "pred", e.op(f"abs.{t}", t, x.reg), inf)
        else:
            p = e.op(f"setp.eq.{t}", "pred", x.reg, inf if fn == "isposinf" else
                     e.imm(-math.inf, t))
        return Val(p, "pred", "bool")
    if t == "f64" and fn == "sqrt":
        return Val(e.op("sqrt.rn.f64", t, x.reg), t, x.dtype)
    if t == "f64" and fn == "reciprocal":
        return Val(e.op("rcp.rn.f64", t, x.reg), t, x.dtype)
    r = x.reg if t == "f32" else e.op("cvt.rn.f32.f64", F, x.reg)
    if fn == "sign":
        out = fsign(e, r)
    elif fn == "relu":
        out = _frelu(e, r)
    elif fn in FLOAT_UNARY:
        out = FLOAT_UNARY[fn](e, r)
    else:
        raise LoweringError(f"ptx: unary '{fn}' is not defined on {x.dtype}")
    if t == "f64":
        out = e.op("cvt.f64.f32", "f64", out)
    return Val(normalize(e, out, x.dtype) if t == "f32" else out, t, x.dtype)


def int_unary(e: Emitter, fn: str, x: Val) -> Val:
    t = x.cls
    signed = t[0] == "s"
    b = t[1:]
    if fn == "identity":
        return x
    if fn == "neg":
        r = e.op(f"neg.s{b}", t, x.reg)
    elif fn == "abs":
        r = e.op(f"abs.s{b}", t, x.reg) if signed else x.reg
    elif fn == "relu":
        r = e.op(f"max.s{b}", t, x.reg, 0) if signed else x.reg
    elif fn == "bitwise_not":
        r = e.op(f"not.b{b}", t, x.reg)
    elif fn == "sign":
        pos = e.op(f"setp.gt.{t}", "pred", x.reg, 0)
        r = e.op(f"selp.{t}", t, 1, 0, pos)
        if signed:
            neg = e.op(f"setp.lt.{t}", "pred", x.reg, 0)
            r = e.op(f"selp.{t}", t, -1, r, neg)
    else:
        raise LoweringError(f"ptx: unary '{fn}' is not defined on {x.dtype}")
    return Val(normalize(e, r, x.dtype), t, x.dtype)


def bool_unary(e: Emitter, fn: str, x: Val) -> Val:
    if fn == "identity":
        return x
    if fn == "not":
        return Val(e.op("not.pred", "pred", x.reg), "pred", "bool")
    raise LoweringError(f"ptx: unary '{fn}' is not defined on bool")


def unary(e: Emitter, fn: str, x: Val) -> Val:
    if x.cls in ("f32", "f64"):
        return float_unary(e, fn, x)
    if x.cls == "pred":
        return bool_unary(e, fn, x)
    return int_unary(e, fn, x)


# ------------------------------------------------------------------------------------ binary
CMP = {"eq": "eq", "ne": "ne", "lt": "lt", "le": "le", "gt": "gt", "ge": "ge"}


def _fpow(e: Emitter, a: str, b: str, t: str, exponent: float | None) -> str:
    """a ** b. Constant exponents 1, 2, 3, 0.5, -1 are exact sequences; the general case is
    exp2(b * log2|a|) with the sign of odd integer powers of negative bases restored."""
    if exponent == 1.0:
        return a
    if exponent == 2.0:
        return e.op(f"mul.rn.{t}", t, a, a)
    if exponent == 3.0:
        return e.op(f"mul.rn.{t}", t, e.op(f"mul.rn.{t}", t, a, a), a)
    if exponent == 0.5:
        return e.op(f"sqrt.rn.{t}", t, a)
    if exponent == -1.0:
        return e.op(f"rcp.rn.{t}", t, a)
    fa = a if t == "f32" else e.op("cvt.rn.f32.f64", F, a)
    fb = b if t == "f32" else e.op("cvt.rn.f32.f64", F, b)
    mag = e.op("ex2.approx.f32", F, fmul(e, fb, e.op("lg2.approx.f32", F, e.op("abs.f32", F,
                                                                              fa))))
    bi = e.op("cvt.rzi.f32.f32", F, fb)
    is_int = fset(e, "eq", bi, fb)
    half = fmul(e, fb, f32_imm(0.5))
    odd = e.op("and.pred", "pred", is_int, fset(e, "neu", e.op("cvt.rzi.f32.f32", F, half),
                                                half))
    neg = fset(e, "lt", fa, f32_imm(0.0))
    r = fselp(e, e.op("and.pred", "pred", neg, odd), e.op("neg.f32", F, mag), mag)
    bad = e.op("and.pred", "pred", neg, e.op("not.pred", "pred", is_int))
    r = fselp(e, bad, f32_imm(math.nan), r)
    r = fselp(e, fset(e, "eq", fb, f32_imm(0.0)), f32_imm(1.0), r)
    return r if t == "f32" else e.op("cvt.f64.f32", "f64", r)


def nan_max_min(e: Emitter, fn: str, a: str, b: str, t: str, into: str | None = None) -> str:
    """max/min that propagate NaN like numpy (PTX max/min return the non-NaN operand; the
    ``.NaN`` qualifier is f32-only and sm_80+): an unordered compare picks ``a + b`` (NaN)."""
    r = e.op(f"{fn}.{t}", t, a, b)
    nan = e.op(f"setp.nan.{t}", "pred", a, b)
    d = into if into is not None else e.reg(t)
    e(f"selp.{t}", d, e.op(f"add.rn.{t}", t, a, b), r, nan)
    return d


def _fmod(e: Emitter, fn: str, a: str, b: str, t: str) -> str:
    """C fmod (sign of a) or Python mod (sign of b). f32 operands go through f64, where
    a - trunc(a/b) * b with one fma is exact; a quotient rounded across an integer is corrected
    by one |b|; an infinite divisor leaves a finite dividend unchanged."""
    D = "f64"
    ad = a if t == D else e.op("cvt.f64.f32", D, a)
    bd = b if t == D else e.op("cvt.f64.f32", D, b)
    q = e.op("cvt.rzi.f64.f64", D, e.op("div.rn.f64", D, ad, bd))
    r = e.op("fma.rn.f64", D, e.op("neg.f64", D, q), bd, ad)
    zero = f64_imm(0.0)
    wrong = e.op("and.pred", "pred", e.op("setp.ne.f64", "pred", r, zero), e.op(
        "xor.pred", "pred", e.op("setp.lt.f64", "pred", r, zero),
        e.op("setp.lt.f64", "pred", ad, zero)))
    step = e.op("copysign.f64", D, ad, e.op("abs.f64", D, bd))
    r = e.op("selp.f64", D, e.op("add.rn.f64", D, r, step), r, wrong)
    binf = e.op("setp.eq.f64", "pred", e.op("abs.f64", D, bd), f64_imm(math.inf))
    afin = e.op("setp.lt.f64", "pred", e.op("abs.f64", D, ad), f64_imm(math.inf))
    r = e.op("selp.f64", D, ad, r, e.op("and.pred", "pred", binf, afin))
    if fn == "mod":
        nz = e.op("setp.ne.f64", "pred", r, zero)
        diff = e.op("xor.pred", "pred", e.op("setp.lt.f64", "pred", r, zero),
                    e.op("setp.lt.f64", "pred", bd, zero))
        fix = e.op("and.pred", "pred", nz, diff)
        r = e.op("selp.f64", D, e.op("add.rn.f64", D, r, bd), r, fix)
    return r if t == D else e.op("cvt.rn.f32.f64", F, r)


def float_binary(e: Emitter, fn: str, a: Val, b: Val, exponent: float | None) -> Val:
    t = a.cls
    if fn in CMP:
        cmp = "neu" if fn == "ne" else fn
        return Val(e.op(f"setp.{cmp}.{t}", "pred", a.reg, b.reg), "pred", "bool")
    if fn in ("add", "sub", "mul", "div"):
        r = e.op(f"{fn}.rn.{t}", t, a.reg, b.reg)
    elif fn in ("max", "min"):
        r = nan_max_min(e, fn, a.reg, b.reg, t)
    elif fn == "pow":
        r = _fpow(e, a.reg, b.reg, t, exponent)
    elif fn in ("fmod", "mod"):
        r = _fmod(e, fn, a.reg, b.reg, t)
    elif fn == "atan2":
        fa = a.reg if t == "f32" else e.op("cvt.rn.f32.f64", F, a.reg)
        fb = b.reg if t == "f32" else e.op("cvt.rn.f32.f64", F, b.reg)
        r = fatan2(e, fa, fb)
        if t == "f64":
            r = e.op("cvt.f64.f32", "f64", r)
    else:
        raise LoweringError(f"ptx: binary '{fn}' is not defined on {a.dtype}")
    return Val(normalize(e, r, a.dtype) if t == "f32" else r, t, a.dtype)


def _ipow(e: Emitter, a: str, b: str, t: str) -> str:
    """Integer power by squaring; negative exponents give 0 except for bases +-1."""
    w = t[1:]
    res = e.const(1, t)
    base = e.op(f"mov.b{w}", t, a)
    ex = e.op(f"mov.b{w}", t, b)
    top, done = e.new_label("pow"), e.new_label("powend")
    e.place(top)
    stop = e.op(f"setp.le.{t}" if t[0] == "s" else f"setp.eq.{t}", "pred", ex, 0)
    e("bra.uni", done, guard=stop)
    low = e.op(f"and.b{w}", t, ex, 1)
    odd = e.op(f"setp.ne.{t}", "pred", low, 0)
    e(f"mul.lo.{t}", res, res, base, guard=odd)
    e(f"mul.lo.{t}", base, base, base)
    e(f"shr.{t}", ex, ex, 1)
    e("bra.uni", top)
    e.place(done)
    if t[0] == "s":
        neg = e.op(f"setp.lt.{t}", "pred", b, 0)
        one = e.op(f"setp.eq.{t}", "pred", a, 1)
        m1 = e.op(f"setp.eq.{t}", "pred", a, -1)
        oddb = e.op(f"setp.ne.{t}", "pred", e.op(f"and.b{w}", t, b, 1), 0)
        neg_r = e.op(f"selp.{t}", t, e.op(f"selp.{t}", t, -1, 1, oddb), 0, m1)
        neg_r = e.op(f"selp.{t}", t, 1, neg_r, one)
        res = e.op(f"selp.{t}", t, neg_r, res, neg)
    return res


def int_binary(e: Emitter, fn: str, a: Val, b: Val) -> Val:
    t = a.cls
    w = t[1:]
    signed = t[0] == "s"
    if fn in CMP:
        return Val(e.op(f"setp.{fn}.{t}", "pred", a.reg, b.reg), "pred", "bool")
    simple = {"add": f"add.{t}", "sub": f"sub.{t}", "mul": f"mul.lo.{t}", "max": f"max.{t}",
              "min": f"min.{t}", "bitwise_and": f"and.b{w}", "bitwise_or": f"or.b{w}",
              "bitwise_xor": f"xor.b{w}"}
    if fn in simple:
        r = e.op(simple[fn], t, a.reg, b.reg)
    elif fn in ("div", "fmod", "mod"):
        # division by zero divides by one, as the reference does
        zero = e.op(f"setp.eq.{t}", "pred", b.reg, 0)
        d = e.op(f"selp.{t}", t, 1, b.reg, zero)
        if fn == "div":
            r = e.op(f"div.{t}", t, a.reg, d)
        else:
            r = e.op(f"rem.{t}", t, a.reg, d)
            if fn == "mod" and signed:
                nz = e.op(f"setp.ne.{t}", "pred", r, 0)
                diff = e.op("xor.pred", "pred", e.op(f"setp.lt.{t}", "pred", r, 0),
                            e.op(f"setp.lt.{t}", "pred", d, 0))
                fix = e.op("and.pred", "pred", nz, diff)
                r = e.op(f"selp.{t}", t, e.op(f"add.{t}", t, r, d), r, fix)
    elif fn in ("shl", "shr"):
        amount = b.reg
        if w == "64":
            amount = e.op("cvt.u32.u64", "u32", e.op("min.u64", "u64", b.reg, 64))
        kind = f"shr.{t}" if fn == "shr" else f"shl.b{w}"
        r = e.op(kind, t, a.reg, amount)
    elif fn == "pow":
        r = _ipow(e, a.reg, b.reg, t)
    else:
        raise LoweringError(f"ptx: binary '{fn}' is not defined on {a.dtype}")
    return Val(normalize(e, r, a.dtype), t, a.dtype)


def bool_binary(e: Emitter, fn: str, a: Val, b: Val) -> Val:
    table = {"and": "and.pred", "or": "or.pred", "xor": "xor.pred", "ne": "xor.pred"}
    if fn in table:
        return Val(e.op(table[fn], "pred", a.reg, b.reg), "pred", "bool")
    if fn == "eq":
        return Val(e.op("not.pred", "pred", e.op("xor.pred", "pred", a.reg, b.reg)), "pred",
                   "bool")
    if fn in ("lt", "le", "gt", "ge", "max", "min", "add", "mul"):
        ia = e.op("selp.u32", "u32", 1, 0, a.reg)
        ib = e.op("selp.u32", "u32", 1, 0, b.reg)
        if fn in ("lt", "le", "gt", "ge"):
            return Val(e.op(f"setp.{fn}.u32", "pred", ia, ib), "pred", "bool")
        op = {"max": "or.pred", "add": "or.pred", "min": "and.pred", "mul": "and.pred"}[fn]
        return Val(e.op(op, "pred", a.reg, b.reg), "pred", "bool")
    raise LoweringError(f"ptx: binary '{fn}' is not defined on bool")


def binary(e: Emitter, fn: str, a: Val, b: Val, exponent: float | None = None) -> Val:
    if a.cls in ("f32", "f64"):
        return float_binary(e, fn, a, b, exponent)
    if a.cls == "pred":
        return bool_binary(e, fn, a, b)
    return int_binary(e, fn, a, b)


def select(e: Emitter, c: Val, a: Val, b: Val) -> Val:
    if a.cls == "pred":
        x = e.op("and.pred", "pred", c.reg, a.reg)
        y = e.op("and.pred", "pred", e.op("not.pred", "pred", c.reg), b.reg)
        return Val(e.op("or.pred", "pred", x, y), "pred", "bool")
    return Val(e.op(f"selp.{a.cls}", a.cls, a.reg, b.reg, c.reg), a.cls, a.dtype)


# -------------------------------------------------------------------------------------- cast
def cast(e: Emitter, x: Val, to: str) -> Val:
    """Kernel-IR cast rules: RNE between floats, truncation then wrap from float to int, wrap
    between ints, != 0 to bool."""
    dst = CLASS_OF[to]
    if dst == "pred":
        if x.cls == "pred":
            return x
        cmp = "neu" if x.cls in ("f32", "f64") else "ne"
        return Val(e.op(f"setp.{cmp}.{x.cls}", "pred", x.reg, e.imm(0, x.cls)), "pred", "bool")
    if x.cls == "pred":
        return Val(e.op(f"selp.{dst}", dst, e.imm(1, dst), e.imm(0, dst), x.reg), dst, to)
    src = x.cls
    if dst in ("f32", "f64"):
        if src == dst:
            r = x.reg
        elif src in ("f32", "f64"):
            r = e.op(f"cvt.{'rn.' if dst == 'f32' else ''}{dst}.{src}", dst, x.reg)
        else:
            r = e.op(f"cvt.rn.{dst}.{src}", dst, x.reg)
        return Val(normalize(e, r, to) if dst == "f32" else r, dst, to)
    # -> integer
    if src in ("f32", "f64"):
        wide = e.op(f"cvt.rzi.s64.{src}", "s64", x.reg)
        src_w = "s64"
    else:
        wide, src_w = x.reg, src
    if dst[1:] == "64":
        r = wide if src_w[1:] == "64" else e.op(f"cvt.{dst}.{src_w}", dst, wide)
    elif src_w[1:] == "64":
        r = e.op("cvt.u32.u64", dst, wide)
    else:
        r = wide
    return Val(normalize(e, r, to), dst, to)


# ------------------------------------------------------------------------------- load / store
def load(e: Emitter, addr: str, dtype: str) -> Val:
    """``dtype`` element at byte address ``addr`` (a %rd register) into its class register."""
    mt, _ = MEM_TYPE[dtype]
    cls = CLASS_OF[dtype]
    if dtype == "float16":
        h = e.op("ld.global.b16", "b16", f"[{addr}]")
        return Val(e.op("cvt.f32.f16", "f32", h), cls, dtype)
    if dtype == "bfloat16":
        w = e.op("ld.global.u16", "u32", f"[{addr}]")
        w = e.op("shl.b32", "u32", w, 16)
        return Val(e.op("mov.b32", "f32", w), cls, dtype)
    if dtype == "bool":
        w = e.op("ld.global.u8", "u32", f"[{addr}]")
        return Val(e.op("setp.ne.u32", "pred", w, 0), "pred", dtype)
    return Val(e.op(f"ld.global.{mt}", cls, f"[{addr}]"), cls, dtype)


def store_value(e: Emitter, v: Val, dtype: str) -> tuple[str, str]:
    """(st type, register) that stores ``v`` as ``dtype``."""
    mt, _ = MEM_TYPE[dtype]
    if dtype == "float16":
        return "b16", e.op("cvt.rn.f16.f32", "b16", v.reg)
    if dtype == "bfloat16":
        return "b16", e.op("cvt.rn.bf16.f32", "b16", v.reg)
    if dtype == "bool":
        return "u8", e.op("selp.u32", "u32", 1, 0, v.reg)
    return mt, v.reg


def store(e: Emitter, addr: str, v: Val, dtype: str, guard: str | None = None) -> None:
    mt, r = store_value(e, v, dtype)
    e(f"st.global.{mt}", f"[{addr}]", r, guard=guard)
