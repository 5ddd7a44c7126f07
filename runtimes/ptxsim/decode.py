"""Instruction decoding: one table from PTX mnemonic to a decoder that binds semantics once.

Each decoder reads the instruction's qualifiers (``add.rz.ftz.f32`` -> op add, rounding rz, ftz,
type f32) and returns an executor ``run(ctx, m)`` that applies the instruction to every lane in the
boolean mask ``m`` at once with numpy.  Decoding up front means a launch never re-parses text,
and an unsupported qualifier combination is reported at parse time with its source line.

Numerics (PTX ISA 8.x, "Floating-Point Instructions"):
- f32/f64 ``.rn`` add/sub/mul/div/sqrt are IEEE round-to-nearest-even (numpy's own arithmetic);
  ``.rz/.rm/.rp`` and every ``fma`` round exactly once via fp.py's error-free transforms.
- f16/bf16 (and the x2 packed forms) compute exactly in float64 and round once to the format.
- ``.approx`` functions (rcp, sqrt, rsqrt, ex2, lg2, sin, cos, tanh, div) are modelled as the
  correctly rounded result of the float64 function: hardware is within a few ulp of that, so a
  test that needs bit-exactness against a real GPU must not rely on approximations.
- ``mma`` products are exact and accumulated in float64 before a single rounding to f32 (the
  tensor core's internal order is unspecified; this is its most accurate reading).
"""

from __future__ import annotations

from collections.abc import Callable

import ml_dtypes
import numpy as np

from portc.runtimes.ptxsim import fp
from portc.runtimes.ptxsim.errors import UnsupportedInstructionError
from portc.runtimes.ptxsim.module import (
    Addr,
    Entry,
    Imm,
    Instr,
    NotPred,
    PredPair,
    Reg,
    Sym,
    Vec,
)

Run = Callable[..., None]

DT: dict[str, np.dtype] = {
    "pred": np.dtype(bool),
    "b8": np.dtype(np.uint8), "u8": np.dtype(np.uint8), "s8": np.dtype(np.int8),
    "b16": np.dtype(np.uint16), "u16": np.dtype(np.uint16), "s16": np.dtype(np.int16),
    "f16": fp.F16, "bf16": fp.BF16,
    "b32": np.dtype(np.uint32), "u32": np.dtype(np.uint32), "s32": np.dtype(np.int32),
    "f32": fp.F32, "f16x2": np.dtype(np.uint32), "bf16x2": np.dtype(np.uint32),
    "tf32": np.dtype(np.uint32),
    "b64": np.dtype(np.uint64), "u64": np.dtype(np.uint64), "s64": np.dtype(np.int64),
    "f64": fp.F64,
}
FLOATS = {"f16", "bf16", "f32", "f64", "f16x2", "bf16x2"}
# 8-bit floats (sm_89+): the element formats and their largest finite magnitudes (.satfinite)
FP8 = {"e4m3": (np.dtype(ml_dtypes.float8_e4m3fn), 448.0),
       "e5m2": (np.dtype(ml_dtypes.float8_e5m2), 57344.0)}
FP8X2 = {"e4m3x2": "e4m3", "e5m2x2": "e5m2"}
SPACES_ALL = ("global", "shared", "param", "local", "const")
PACKED = {"f16x2": fp.F16, "bf16x2": fp.BF16}
SIGNED = {"s8", "s16", "s32", "s64"}
ROUND = {"rn", "rz", "rm", "rp"}
IROUND = {"rni": "rn", "rzi": "rz", "rmi": "rm", "rpi": "rp"}
# qualifiers that change nothing in a functional, sequentially consistent model
IGNORED = {"ca", "cg", "cs", "lu", "cv", "nc", "wb", "wt", "volatile", "relaxed", "acquire",
           "release", "weak", "gpu", "cta", "sys", "cluster", "uni", "aligned", "sync",
           "approx", "full", "noftz"}

# every qualifier some decoder interprets (or IGNORED); anything else is refused at parse time
KNOWN_QUALIFIERS = (
    IGNORED | ROUND | set(IROUND) | {"rna", "ftz", "sat", "relu", "satfinite"}
    | set(SPACES_ALL) | {"v2", "v4", "v8", "to", "hi", "lo", "wide"}
    | {"eq", "ne", "lt", "le", "gt", "ge", "lo", "ls", "hi", "hs", "equ", "neu", "ltu", "leu",
       "gtu", "geu", "num", "nan", "and", "or", "xor"}
    | {"up", "down", "bfly", "idx", "all", "any", "uni", "ballot", "warp"}
    | {"add", "min", "max", "exch", "cas", "inc", "dec"}
    | {"m16n8k16", "m16n8k8", "m16n8k32", "row", "col", "m8n8", "x1", "x2", "x4", "trans"}
    | {"async", "commit_group", "wait_group", "wait_all", "proxy", "acq_rel", "sc", "gl",
       "mbarrier_init", "f4e", "b4e", "rc8", "ecl", "ecr", "rc16", "finite", "infinite",
       "number", "notanumber", "normal", "subnormal"}
    | set(FP8) | set(FP8X2)
)


class Dec:
    """Qualifier view of one instruction: what decoders ask about its dotted opcode."""

    def __init__(self, ins: Instr, ent: Entry) -> None:
        self.ins, self.ent = ins, ent
        self.parts = ins.parts
        self.quals = [p.split("::")[0] for p in ins.parts[1:]]

    def has(self, q: str) -> bool:
        return q in self.quals

    def types(self) -> list[str]:
        return [q for q in self.quals if q in DT]

    def type(self) -> str:
        ts = self.types()
        if not ts:
            self.fail("no operand type qualifier")
        return ts[-1]

    def rnd(self, default: str = "rn") -> str:
        r = [q for q in self.quals if q in ROUND]
        return r[0] if r else default

    def one_of(self, options: set[str] | dict, what: str) -> str:
        got = [q for q in self.quals if q in options]
        if len(got) != 1:
            self.fail(f"expected one {what} qualifier")
        return got[0]

    def ops(self, n: int | tuple[int, ...]) -> tuple:
        ns = (n,) if isinstance(n, int) else n
        if len(self.ins.operands) not in ns:
            self.fail(f"expected {' or '.join(map(str, ns))} operands, got {len(self.ins.operands)}")
        return self.ins.operands

    def fail(self, why: str) -> None:
        raise UnsupportedInstructionError(self.ent.source, self.ins.line, self.ins.text, why)


# ----------------------------------------------------------------------------- helpers

def _to64(x: np.ndarray) -> np.ndarray:
    """A float operand (f16, bf16, f32 or f64) as exact float64."""
    return np.asarray(x).astype(fp.F64)


def _unpack(bits: np.ndarray, dt: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    b = np.asarray(bits, np.uint32)
    lo = (b & np.uint32(0xFFFF)).astype(np.uint16).view(dt)
    hi = (b >> np.uint32(16)).astype(np.uint16).view(dt)
    return lo, hi


def _pack(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    lo16 = np.asarray(lo).view(np.uint16).astype(np.uint32)
    hi16 = np.asarray(hi).view(np.uint16).astype(np.uint32)
    return lo16 | (hi16 << np.uint32(16))


def _sat(x: np.ndarray) -> np.ndarray:
    """``.sat`` for floats: clamp to [0, 1], NaN -> +0."""
    y = np.clip(x, x.dtype.type(0), x.dtype.type(1))
    return np.where(np.isnan(y), x.dtype.type(0), y).astype(x.dtype)


def _ftz(x: np.ndarray, on: bool) -> np.ndarray:
    return fp.flush_subnormal(np.asarray(x)) if on else x


# ----------------------------------------------------------------------------- float arithmetic

def _f_add(a: np.ndarray, b: np.ndarray, dt: np.dtype, mode: str) -> np.ndarray:
    return fp.add_exact(a, b, dt, mode)


def _f_sub(a: np.ndarray, b: np.ndarray, dt: np.dtype, mode: str) -> np.ndarray:
    return fp.add_exact(a, -b, dt, mode)


def _fmin(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """PTX min: a NaN operand yields the other one; -0.0 counts as smaller than +0.0."""
    r = np.fmin(a, b)
    zeros = (a == 0) & (b == 0)
    return np.where(zeros, np.where(np.signbit(a), a, b), r) if np.any(zeros) else r


def _fmax(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    r = np.fmax(a, b)
    zeros = (a == 0) & (b == 0)
    return np.where(zeros, np.where(np.signbit(a), b, a), r) if np.any(zeros) else r


def _f_min(a: np.ndarray, b: np.ndarray, dt: np.dtype, mode: str) -> np.ndarray:
    return _fmin(a, b).astype(dt)


def _f_max(a: np.ndarray, b: np.ndarray, dt: np.dtype, mode: str) -> np.ndarray:
    return _fmax(a, b).astype(dt)


FLOAT_BINARY: dict[str, Callable] = {
    "add": _f_add, "sub": _f_sub, "mul": fp.mul_exact, "div": fp.div_exact,
    "min": _f_min, "max": _f_max,
}
# round-to-nearest f32/f64 results numpy computes correctly rounded by itself
NATIVE_BINARY: dict[str, Callable] = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
    "min": _fmin, "max": _fmax,
}


def _float_elementwise(d: Dec, kind: str, n_in: int) -> Run:
    """add/sub/mul/div/min/max/fma/mad on f16/bf16/f32/f64 and the packed x2 forms."""
    ty = d.type()
    mode = d.rnd()
    ftz, sat = d.has("ftz"), d.has("sat")
    dst, *src = d.ops(n_in + 1)
    if kind == "div" and ty in ("f32",) and not any(q in d.quals for q in ROUND | {"approx", "full"}):
        d.fail("div.f32 needs .rn/.rz/.rm/.rp, .approx or .full")

    def compute(vals: list[np.ndarray], dt: np.dtype) -> np.ndarray:
        if dt == fp.F32 and ftz:
            vals = [_ftz(v, True) for v in vals]
        native = mode == "rn" and dt in (fp.F32, fp.F64) and kind in NATIVE_BINARY
        with np.errstate(all="ignore"):
            if native:
                out = NATIVE_BINARY[kind](*[np.asarray(v, dt) for v in vals])
            elif kind == "fma" and dt == fp.F32 and mode == "rn":
                out = fp.fma_rn_f32(*vals)
            elif kind == "fma":
                out = fp.fma_exact(*[_to64(v) for v in vals], dt, mode)
            else:
                out = FLOAT_BINARY[kind](*[_to64(v) for v in vals], dt, mode)
        out = np.asarray(out, dt)
        if dt == fp.F32 and ftz:
            out = _ftz(out, True)
        return _sat(out) if sat else out

    if ty in PACKED:
        el = PACKED[ty]

        def run_packed(ctx: object, m: np.ndarray) -> None:
            halves = [_unpack(ctx.read(s, "b32"), el) for s in src]
            lo = compute([h[0] for h in halves], el)
            hi = compute([h[1] for h in halves], el)
            ctx.write(dst, _pack(lo, hi), "b32", m)
        return run_packed
    if ty not in FLOATS:
        d.fail(f"float {kind} on .{ty}")
    dt = DT[ty]

    def run(ctx: object, m: np.ndarray) -> None:
        ctx.write(dst, compute([ctx.read(s, ty) for s in src], dt), ty, m)
    return run


# ----------------------------------------------------------------------------- integer arithmetic

def _wide(ty: str) -> str:
    return {"u16": "u32", "s16": "s32", "u32": "u64", "s32": "s64"}[ty]


def _mulhi(a: np.ndarray, b: np.ndarray, ty: str) -> np.ndarray:
    bits = np.dtype(DT[ty]).itemsize * 8
    if bits < 64:
        w = np.int64 if ty in SIGNED else np.uint64
        p = np.asarray(a).astype(w) * np.asarray(b).astype(w)
        return (p >> bits).astype(DT[ty])
    ua = np.asarray(a).view(np.uint64) if np.ndim(a) else np.uint64(np.asarray(a).view(np.uint64))
    ub = np.asarray(b).view(np.uint64) if np.ndim(b) else np.uint64(np.asarray(b).view(np.uint64))
    ua, ub = np.broadcast_arrays(np.asarray(ua, np.uint64), np.asarray(ub, np.uint64))
    m32 = np.uint64(0xFFFF_FFFF)
    s32 = np.uint64(32)
    al, ah, bl, bh = ua & m32, ua >> s32, ub & m32, ub >> s32
    ll, lh, hl, hh = al * bl, al * bh, ah * bl, ah * bh
    mid = (ll >> s32) + (lh & m32) + (hl & m32)
    hi = hh + (lh >> s32) + (hl >> s32) + (mid >> s32)
    if ty in SIGNED:
        hi = hi - np.where(np.asarray(a) < 0, ub, np.uint64(0)) - np.where(np.asarray(b) < 0, ua, np.uint64(0))
    return hi.astype(np.uint64).view(DT[ty])


def _idiv(a: np.ndarray, b: np.ndarray, ty: str, rem: bool) -> np.ndarray:
    """Truncating integer division; x/0 gives the all-ones quotient and x%0 gives x, the values
    NVIDIA GPUs produce (PTX leaves them unspecified; no trap exists on the hardware)."""
    dt = DT[ty]
    a, b = np.broadcast_arrays(np.asarray(a, dt), np.asarray(b, dt))
    zero = b == 0
    bs = np.where(zero, dt.type(1), b)
    with np.errstate(all="ignore"):
        if ty in SIGNED:
            r = np.fmod(a, bs)
            q = (a - r) // bs
            q = np.where((a == np.iinfo(dt).min) & (bs == -1), a, q)
        else:
            q = a // bs
            r = a % bs
    if rem:
        return np.where(zero, a, r).astype(dt)
    return np.where(zero, dt.type(-1) if ty in SIGNED else np.iinfo(dt).max, q).astype(dt)


def _int_binary(kind: str) -> Callable:
    def f(a: np.ndarray, b: np.ndarray, ty: str) -> np.ndarray:
        dt = DT[ty]
        with np.errstate(all="ignore"):
            if kind == "add":
                return np.add(a, b, dtype=dt)
            if kind == "sub":
                return np.subtract(a, b, dtype=dt)
            if kind == "min":
                return np.minimum(a, b).astype(dt)
            if kind == "max":
                return np.maximum(a, b).astype(dt)
            if kind == "div":
                return _idiv(a, b, ty, False)
            if kind == "rem":
                return _idiv(a, b, ty, True)
        raise AssertionError(kind)
    return f


def _dec_int_or_float(kind: str) -> Callable[[Dec], Run]:
    """add/sub/min/max/div/rem: float types go to the exact float path, integers wrap."""
    def dec(d: Dec) -> Run:
        ty = d.type()
        if ty in FLOATS:
            return _float_elementwise(d, kind, 2)
        dst, a, b = d.ops(3)
        sat = d.has("sat")
        if sat and not (ty == "s32" and kind in ("add", "sub")):
            d.fail(".sat applies to add/sub.s32 only")
        fn = _int_binary(kind)

        def run(ctx: object, m: np.ndarray) -> None:
            x, y = ctx.read(a, ty), ctx.read(b, ty)
            if sat:
                w = np.asarray(x).astype(np.int64)
                w = w + y if kind == "add" else w - y
                out = np.clip(w, -(2**31), 2**31 - 1).astype(np.int32)
            else:
                out = fn(x, y, ty)
            ctx.write(dst, out, ty, m)
        return run
    return dec


def _dec_mul(d: Dec) -> Run:
    ty = d.type()
    if ty in FLOATS:
        return _float_elementwise(d, "mul", 2)
    dst, a, b = d.ops(3)
    mode = "hi" if d.has("hi") else "wide" if d.has("wide") else "lo"
    out_ty = _wide(ty) if mode == "wide" else ty

    def run(ctx: object, m: np.ndarray) -> None:
        x, y = ctx.read(a, ty), ctx.read(b, ty)
        with np.errstate(all="ignore"):
            if mode == "lo":
                out = np.multiply(x, y, dtype=DT[ty])
            elif mode == "wide":
                out = np.multiply(np.asarray(x).astype(DT[out_ty]), np.asarray(y).astype(DT[out_ty]))
            else:
                out = _mulhi(x, y, ty)
        ctx.write(dst, out, out_ty, m)
    return run


def _dec_mad(d: Dec) -> Run:
    ty = d.type()
    if ty in FLOATS:
        if ty in ("f32", "f64") and not any(q in d.quals for q in ROUND):
            d.fail(f"mad.{ty} needs a rounding modifier (it is fma)")
        return _float_elementwise(d, "fma", 3)
    dst, a, b, c = d.ops(4)
    mode = "hi" if d.has("hi") else "wide" if d.has("wide") else "lo"
    out_ty = _wide(ty) if mode == "wide" else ty

    def run(ctx: object, m: np.ndarray) -> None:
        x, y, z = ctx.read(a, ty), ctx.read(b, ty), ctx.read(c, out_ty)
        with np.errstate(all="ignore"):
            if mode == "lo":
                out = np.add(np.multiply(x, y, dtype=DT[ty]), z, dtype=DT[ty])
            elif mode == "wide":
                wd = DT[out_ty]
                out = np.add(np.asarray(x).astype(wd) * np.asarray(y).astype(wd), z, dtype=wd)
            else:
                out = np.add(_mulhi(x, y, ty), z, dtype=DT[ty])
        ctx.write(dst, out, out_ty, m)
    return run


def _dec_fma(d: Dec) -> Run:
    if d.type() in ("f32", "f64") and not any(q in d.quals for q in ROUND):
        d.fail("fma.f32/f64 needs .rn/.rz/.rm/.rp")
    if d.type() == "f64" and d.rnd() != "rn":
        d.fail("fma.f64 with a directed rounding mode is not modelled")
    return _float_elementwise(d, "fma", 3)


def _dec_unary_int_float(kind: str) -> Callable[[Dec], Run]:
    """abs/neg: bit operations on floats (sign bit), wrapping negation on integers."""
    def dec(d: Dec) -> Run:
        ty = d.type()
        dst, a = d.ops(2)
        ftz = d.has("ftz")
        if ty in PACKED or ty in ("f16", "bf16"):
            width = 32 if ty in PACKED else 16
            sign = 0x8000_8000 if width == 32 else 0x8000
            bty = "b32" if width == 32 else "b16"

            def run_h(ctx: object, m: np.ndarray) -> None:
                x = ctx.read(a, bty)
                s = DT[bty].type(sign)
                ctx.write(dst, (x & ~s) if kind == "abs" else (x ^ s), bty, m)
            return run_h

        def run(ctx: object, m: np.ndarray) -> None:
            x = np.asarray(ctx.read(a, ty))
            if ty in FLOATS:
                x = _ftz(x, ftz)
                out = np.abs(x) if kind == "abs" else np.negative(x)
            else:
                with np.errstate(all="ignore"):
                    out = np.abs(x) if kind == "abs" else np.negative(x)
            ctx.write(dst, out.astype(DT[ty]), ty, m)
        return run
    return dec


# transcendental and reciprocal: float64 function, then one rounding to the operand format
APPROX: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "rsqrt": lambda x: 1.0 / np.sqrt(x),
    "ex2": np.exp2,
    "lg2": np.log2,
    "sin": np.sin,
    "cos": np.cos,
    "tanh": np.tanh,
}


def _dec_approx(kind: str) -> Callable[[Dec], Run]:
    def dec(d: Dec) -> Run:
        ty = d.type()
        dst, a = d.ops(2)
        ftz = d.has("ftz")
        fn = APPROX[kind]
        if ty in PACKED:
            el = PACKED[ty]

            def run_p(ctx: object, m: np.ndarray) -> None:
                lo, hi = _unpack(ctx.read(a, "b32"), el)
                with np.errstate(all="ignore"):
                    r = [fp.round_f64(fn(v.astype(fp.F64)), el, "rn") for v in (lo, hi)]
                ctx.write(dst, _pack(*r), "b32", m)
            return run_p
        dt = DT[ty]

        def run(ctx: object, m: np.ndarray) -> None:
            x = _ftz(np.asarray(ctx.read(a, ty)), ftz and dt == fp.F32)
            with np.errstate(all="ignore"):
                out = fp.round_f64(fn(x.astype(fp.F64)), dt, "rn")
            ctx.write(dst, _ftz(out, ftz and dt == fp.F32), ty, m)
        return run
    return dec


def _dec_rcp(d: Dec) -> Run:
    ty = d.type()
    dst, a = d.ops(2)
    mode = d.rnd()
    ftz = d.has("ftz")
    dt = DT[ty]

    def run(ctx: object, m: np.ndarray) -> None:
        x = _ftz(np.asarray(ctx.read(a, ty)), ftz and dt == fp.F32)
        with np.errstate(all="ignore"):
            out = fp.div_exact(np.ones_like(x, fp.F64), x.astype(fp.F64), dt, mode)
        ctx.write(dst, _ftz(out, ftz and dt == fp.F32), ty, m)
    return run


def _dec_sqrt(d: Dec) -> Run:
    ty = d.type()
    dst, a = d.ops(2)
    mode = d.rnd()
    ftz = d.has("ftz")
    dt = DT[ty]

    def run(ctx: object, m: np.ndarray) -> None:
        x = _ftz(np.asarray(ctx.read(a, ty)), ftz and dt == fp.F32)
        with np.errstate(all="ignore"):
            out = np.sqrt(x) if mode == "rn" else fp.sqrt_exact(x, dt, mode)
        ctx.write(dst, _ftz(np.asarray(out, dt), ftz and dt == fp.F32), ty, m)
    return run


# ----------------------------------------------------------------------------- logic and shifts

LOGIC: dict[str, Callable] = {
    "and": np.bitwise_and, "or": np.bitwise_or, "xor": np.bitwise_xor,
}


def _dec_logic(kind: str) -> Callable[[Dec], Run]:
    def dec(d: Dec) -> Run:
        ty = d.type()
        if kind in ("not", "cnot"):
            dst, a = d.ops(2)

            def run1(ctx: object, m: np.ndarray) -> None:
                x = np.asarray(ctx.read(a, ty))
                if kind == "not":
                    out = ~x
                else:
                    out = (x == 0).astype(DT[ty])
                ctx.write(dst, out, ty, m)
            return run1
        dst, a, b = d.ops(3)
        fn = LOGIC[kind]

        def run(ctx: object, m: np.ndarray) -> None:
            ctx.write(dst, fn(ctx.read(a, ty), ctx.read(b, ty)), ty, m)
        return run
    return dec


def _dec_shift(kind: str) -> Callable[[Dec], Run]:
    """shl/shr: the shift amount is an unsigned 32-bit value clamped to the operand width."""
    def dec(d: Dec) -> Run:
        ty = d.type()
        dst, a, b = d.ops(3)
        dt = DT[ty]
        bits = dt.itemsize * 8

        def run(ctx: object, m: np.ndarray) -> None:
            x = np.asarray(ctx.read(a, ty))
            amount = ctx.read(b, "u32")
            if np.ndim(amount) == 0:
                # one shift for all lanes (the common immediate): native dtype arithmetic
                k = int(amount)
                if k < bits:
                    res = (x << dt.type(k)) if kind == "shl" else (x >> dt.type(k))
                elif kind == "shr" and ty in SIGNED:
                    res = x >> dt.type(bits - 1)
                else:
                    res = np.zeros_like(x)
                ctx.write(dst, res.astype(dt, copy=False), ty, m)
                return
            n = np.minimum(np.asarray(amount).astype(np.uint64), bits)
            if kind == "shl":
                u = x.view(fp.uint_of(dt)) if x.ndim else np.asarray(x).view(fp.uint_of(dt))
                wide = u.astype(np.uint64)
                out = np.where(n >= bits, 0, wide << np.minimum(n, bits - 1)).astype(fp.uint_of(dt))
                res = out.view(dt)
            elif ty in SIGNED:
                res = (x.astype(np.int64) >> np.minimum(n, 63).astype(np.int64)).astype(dt)
            else:
                u = x.astype(np.uint64)
                res = np.where(n >= bits, 0, u >> np.minimum(n, bits - 1)).astype(dt)
            ctx.write(dst, res, ty, m)
        return run
    return dec


def _dec_bitcount(kind: str) -> Callable[[Dec], Run]:
    def dec(d: Dec) -> Run:
        ty = d.type()
        dst, a = d.ops(2)
        bits = DT[ty].itemsize * 8

        def run(ctx: object, m: np.ndarray) -> None:
            x = np.asarray(ctx.read(a, ty)).astype(np.uint64)
            if kind == "popc":
                out = np.bitwise_count(x).astype(np.uint32)
            elif kind == "clz":
                # binary search for the highest set bit, all lanes at once
                nbits = np.zeros(x.shape, np.int64)
                y = x.copy()
                for sh in (32, 16, 8, 4, 2, 1):
                    big = (y >> np.uint64(sh)) != 0
                    nbits += np.where(big, sh, 0)
                    y = np.where(big, y >> np.uint64(sh), y)
                nbits += (y != 0)
                out = (bits - nbits).astype(np.uint32)
            else:  # brev
                out = np.zeros_like(x)
                for i in range(bits):
                    out |= ((x >> np.uint64(i)) & np.uint64(1)) << np.uint64(bits - 1 - i)
                out = out.astype(DT[ty])
                ctx.write(dst, out, ty, m)
                return
            ctx.write(dst, out, "u32", m)
        return run
    return dec


def _dec_bfe(d: Dec) -> Run:
    """bfe.{u,s}{32,64} d, a, pos, len (PTX ISA): bit i of d is a[pos + i] while i < len and
    pos + i <= msb, else the sign bit a[min(pos + len - 1, msb)] (.s) or 0 (.u)."""
    ty = d.type()
    dst, a, b, c = d.ops(4)
    bits = DT[ty].itemsize * 8
    full = np.uint64((1 << bits) - 1)

    def run(ctx: object, m: np.ndarray) -> None:
        x = np.broadcast_to(np.asarray(ctx.read(a, ty)).view(fp.uint_of(DT[ty])).astype(np.uint64), (ctx.T,))
        pos = np.broadcast_to((np.asarray(ctx.read(b, "u32")) & 0xFF).astype(np.int64), (ctx.T,))
        ln = np.broadcast_to((np.asarray(ctx.read(c, "u32")) & 0xFF).astype(np.int64), (ctx.T,))
        eff = np.clip(np.minimum(ln, bits - pos), 0, bits)
        keep = np.where(eff >= 64, np.uint64(2**64 - 1),
                        (np.uint64(1) << np.minimum(eff, 63).astype(np.uint64)) - np.uint64(1))
        val = (x >> np.minimum(pos, bits - 1).astype(np.uint64)) & keep
        val = np.where(eff == 0, np.uint64(0), val)
        if ty in SIGNED:
            msb_i = np.minimum(pos + ln - 1, bits - 1).clip(0)
            sbit = ((x >> msb_i.astype(np.uint64)) & np.uint64(1)) == 1
            sbit &= ln != 0
            val = np.where(sbit, val | (~keep & full), val)
        ctx.write(dst, (val & full).astype(fp.uint_of(DT[ty])).view(DT[ty]), ty, m)
    return run


# ----------------------------------------------------------------------------- compare and select

def _cmp(op: str, x: np.ndarray, y: np.ndarray, is_float: bool) -> np.ndarray:
    if is_float:
        nan = np.isnan(x) | np.isnan(y)
        base = op[:-1] if op.endswith("u") and op not in ("nu",) and len(op) == 3 else op
        if op == "num":
            return ~nan
        if op == "nan":
            return nan
        unordered = op.endswith("u") and len(op) == 3
        table = {"eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal,
                 "gt": np.greater, "ge": np.greater_equal}
        r = table[base](x, y)
        return (r & ~nan) | nan if unordered else r & ~nan
    table = {"eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal,
             "gt": np.greater, "ge": np.greater_equal, "lo": np.less, "ls": np.less_equal,
             "hi": np.greater, "hs": np.greater_equal}
    return table[op](x, y)


CMP_OPS = {"eq", "ne", "lt", "le", "gt", "ge", "lo", "ls", "hi", "hs", "equ", "neu", "ltu",
           "leu", "gtu", "geu", "num", "nan"}
BOOL_OPS = {"and": np.logical_and, "or": np.logical_or, "xor": np.logical_xor}


def _dec_setp(d: Dec) -> Run:
    ty = d.type()
    cmp = d.one_of(CMP_OPS, "comparison")
    bop = [q for q in d.quals if q in BOOL_OPS]
    ops = d.ops((3, 4))
    dst, a, b = ops[:3]
    c = ops[3] if len(ops) == 4 else None
    if (c is None) != (not bop):
        d.fail("a combining .and/.or/.xor needs exactly one extra predicate operand")
    is_float = ty in FLOATS
    if ty in PACKED:
        d.fail("setp on packed f16x2/bf16x2 is not modelled")
    if cmp in ("lo", "ls", "hi", "hs") and (is_float or ty in SIGNED):
        d.fail(f".{cmp} compares unsigned integers only")
    ftz = d.has("ftz")
    p, q = (dst.p, dst.q) if isinstance(dst, PredPair) else (dst, None)
    pdst = Reg(p) if isinstance(p, str) else p
    qdst = Reg(q) if q is not None else None

    def run(ctx: object, m: np.ndarray) -> None:
        x, y = ctx.read(a, ty), ctx.read(b, ty)
        if is_float:
            x, y = np.asarray(x).astype(fp.F64), np.asarray(y).astype(fp.F64)
            if ftz:
                x, y = _ftz(np.asarray(x, fp.F32), True), _ftz(np.asarray(y, fp.F32), True)
        r = np.broadcast_to(_cmp(cmp, x, y, is_float), (ctx.T,))
        if bop:
            cv = ctx.read(c, "pred")
            fn = BOOL_OPS[bop[0]]
            ctx.write(pdst, fn(r, cv), "pred", m)
            if qdst is not None:
                ctx.write(qdst, fn(~r, cv), "pred", m)
        else:
            ctx.write(pdst, r, "pred", m)
            if qdst is not None:
                ctx.write(qdst, ~r, "pred", m)
    return run


def _dec_selp(d: Dec) -> Run:
    ty = d.type()
    dst, a, b, c = d.ops(4)

    def run(ctx: object, m: np.ndarray) -> None:
        ctx.write(dst, np.where(ctx.read(c, "pred"), ctx.read(a, ty), ctx.read(b, ty)).astype(DT[ty]), ty, m)
    return run


# ----------------------------------------------------------------------------- moves and conversions

def _dec_mov(d: Dec) -> Run:
    ty = d.type()
    dst, a = d.ops(2)
    bits = DT[ty].itemsize * 8 if ty != "pred" else 1
    if isinstance(a, Vec) or isinstance(dst, Vec):
        vec = a if isinstance(a, Vec) else dst
        n = len(vec.items)
        if n not in (2, 4) or bits % n:
            d.fail("vector mov packs 2 or 4 parts")
        part = bits // n
        pty = {8: "b8", 16: "b16", 32: "b32"}[part]
        ut = np.uint64

        if isinstance(a, Vec):
            def run_pack(ctx: object, m: np.ndarray) -> None:
                acc = np.zeros(ctx.T, ut)
                for i, it in enumerate(a.items):
                    v = np.asarray(ctx.read(it, pty)).astype(ut)
                    acc = acc | (v << ut(part * i))
                ctx.write(dst, acc.astype(fp.uint_of(DT[ty]) if bits >= 16 else np.uint8).view(DT[ty]), ty, m)
            return run_pack

        def run_unpack(ctx: object, m: np.ndarray) -> None:
            v = np.asarray(ctx.read(a, ty)).view(fp.uint_of(DT[ty])).astype(ut)
            for i, it in enumerate(dst.items):
                if isinstance(it, Sym) and it.name == "_":
                    continue
                piece = ((v >> ut(part * i)) & ut((1 << part) - 1)).astype(DT[pty])
                ctx.write(it, np.broadcast_to(piece, (ctx.T,)), pty, m)
        return run_unpack

    def run(ctx: object, m: np.ndarray) -> None:
        ctx.write(dst, ctx.read(a, ty), ty, m)
    return run


def _dec_cvt_fp8(d: Dec) -> Run:
    """cvt.rn.satfinite{.relu}.{e4m3x2,e5m2x2}.f32 d, a, b (a -> upper byte, b -> lower),
    cvt.rn.satfinite{.relu}.{e4m3x2,e5m2x2}.f16x2 d, a, and cvt.rn{.relu}.f16x2.{e4m3x2,e5m2x2}.
    Narrowing rounds to nearest even and, with .satfinite, clamps to the largest finite value
    (NaN stays NaN); widening to f16 is exact."""
    types = [q for q in d.quals if q in DT or q in FP8X2]  # destination type first
    relu = d.has("relu")
    if d.rnd() != "rn":
        d.fail("fp8 conversions round to nearest (.rn)")
    if len(types) == 2 and types[0] in FP8X2 and types[1] in ("f32", "f16x2"):
        # narrowing: fp8x2 destination, f32 pair or f16x2 source
        el, big = FP8[FP8X2[types[0]]]
        if not d.has("satfinite"):
            d.fail("cvt to fp8 needs .satfinite")
        src = types[1]
        ops = d.ops(3 if src == "f32" else 2)
        dst = ops[0]

        def narrow(v: np.ndarray) -> np.ndarray:
            v = np.asarray(v, np.float32)
            if relu:
                v = np.where(v < 0, np.float32(0), v)
            v = np.where(np.isnan(v), v, np.clip(v, -big, big)).astype(np.float32)
            return v.astype(el).view(np.uint8).astype(np.uint16)

        def run_narrow(ctx: object, m: np.ndarray) -> None:
            if src == "f32":
                hi, lo = (np.broadcast_to(np.asarray(ctx.read(o, "f32")), (ctx.T,)) for o in ops[1:])
            else:
                lo16, hi16 = _unpack(np.broadcast_to(np.asarray(ctx.read(ops[1], "b32")), (ctx.T,)), fp.F16)
                lo, hi = lo16.astype(np.float32), hi16.astype(np.float32)
            ctx.write(dst, (narrow(hi) << np.uint16(8)) | narrow(lo), "b16", m)
        return run_narrow
    if len(types) == 2 and types[0] == "f16x2" and types[1] in FP8X2:
        el, _ = FP8[FP8X2[types[1]]]
        dst, a = d.ops(2)

        def run_widen(ctx: object, m: np.ndarray) -> None:
            w = np.broadcast_to(np.asarray(ctx.read(a, "b16")), (ctx.T,)).astype(np.uint16)
            lo = (w & np.uint16(0xFF)).astype(np.uint8).view(el).astype(np.float16)
            hi = (w >> np.uint16(8)).astype(np.uint8).view(el).astype(np.float16)
            if relu:
                lo, hi = (np.where(v < 0, np.float16(0), v) for v in (lo, hi))
            ctx.write(dst, _pack(lo, hi), "b32", m)
        return run_widen
    d.fail("fp8 conversion form not modelled")
    raise AssertionError


def _dec_cvt(d: Dec) -> Run:
    if any(q in FP8X2 for q in d.quals):
        return _dec_cvt_fp8(d)
    ts = d.types()
    if len(ts) != 2:
        d.fail("cvt needs a destination and a source type")
    dty, aty = ts
    ops = d.ops((2, 3))
    sat, ftz, relu = d.has("sat"), d.has("ftz"), d.has("relu")
    irnd = [q for q in d.quals if q in IROUND]
    frnd = [q for q in d.quals if q in ROUND or q == "rna"]
    dfloat, afloat = dty in FLOATS or dty == "tf32", aty in FLOATS
    if dty in PACKED:
        if aty != "f32" or len(ops) != 3:
            d.fail(f"cvt.{dty} packs two .f32 operands")
        dst, a, b = ops
        el = PACKED[dty]
        if not frnd:
            d.fail("cvt to a packed type needs .rn/.rz/.rm/.rp")
        mode = frnd[0]

        def run_pack(ctx: object, m: np.ndarray) -> None:
            hi = fp.round_f64(np.asarray(ctx.read(a, "f32")).astype(fp.F64), el, mode)
            lo = fp.round_f64(np.asarray(ctx.read(b, "f32")).astype(fp.F64), el, mode)
            if relu:
                hi, lo = (np.where(v < 0, el.type(0), v).astype(el) for v in (hi, lo))
            ctx.write(dst, np.broadcast_to(_pack(lo, hi), (ctx.T,)), "b32", m)
        return run_pack
    dst, a = d.ops(2)
    if dty == "tf32":
        rna = "rna" in frnd

        def run_tf32(ctx: object, m: np.ndarray) -> None:
            u = np.asarray(ctx.read(a, "b32")).astype(np.uint64)
            x = np.asarray(ctx.read(a, "f32"))
            if rna:
                r = (u + 0x1000) & ~np.uint64(0x1FFF)
            else:
                r = (u + 0xFFF + ((u >> np.uint64(13)) & np.uint64(1))) & ~np.uint64(0x1FFF)
            r = np.where(np.isfinite(x), r, u).astype(np.uint32)
            ctx.write(dst, r, "b32", m)
        return run_tf32
    if not dfloat and not afloat:
        lo_d, hi_d = _int_range(dty)

        def run_ii(ctx: object, m: np.ndarray) -> None:
            x = np.asarray(ctx.read(a, aty))
            if sat:
                if x.dtype == np.uint64:
                    out = np.minimum(x, np.uint64(hi_d)).astype(DT[dty])
                else:
                    xi = x.astype(np.int64)
                    out = np.clip(xi, max(lo_d, -(2**63)), min(hi_d, 2**63 - 1)).astype(DT[dty])
            else:
                out = x.astype(DT[dty])
            ctx.write(dst, out, dty, m)
        return run_ii
    if afloat and dfloat:
        ddt = DT[dty]
        if irnd and dty != aty:
            d.fail("integer rounding (.rni...) applies between equal float types")
        if irnd:
            fn = {"rn": np.rint, "rz": np.trunc, "rm": np.floor, "rp": np.ceil}[IROUND[irnd[0]]]
        mode = frnd[0] if frnd else "rn"
        narrowing = ddt.itemsize < DT[aty].itemsize or (dty == "bf16" and aty == "f16") or \
            (dty == "f16" and aty == "bf16")
        if narrowing and not frnd:
            d.fail(f"cvt.{dty}.{aty} narrows and needs a rounding modifier")

        def run_ff(ctx: object, m: np.ndarray) -> None:
            x = np.asarray(ctx.read(a, aty))
            if ftz and x.dtype == fp.F32:
                x = _ftz(x, True)
            with np.errstate(all="ignore"):
                if irnd:
                    out = fn(x).astype(ddt)
                else:
                    out = fp.round_f64(x.astype(fp.F64), ddt, mode)
            if ftz and ddt == fp.F32:
                out = _ftz(out, True)
            if relu:
                out = np.where(out < 0, ddt.type(0), out).astype(ddt)
            if sat:
                out = _sat(out)
            ctx.write(dst, out, dty, m)
        return run_ff
    if afloat:
        if not irnd:
            d.fail(f"cvt.{dty}.{aty} (float to integer) needs .rni/.rzi/.rmi/.rpi")
        fn = {"rn": np.rint, "rz": np.trunc, "rm": np.floor, "rp": np.ceil}[IROUND[irnd[0]]]
        lo_d, hi_d = _int_range(dty)
        # the largest double that converts to the destination without overflow
        top = float(hi_d) if hi_d < 2**53 else float(np.nextafter(float(hi_d) + 1.0, 0.0))

        def run_fi(ctx: object, m: np.ndarray) -> None:
            x = np.asarray(ctx.read(a, aty))
            if ftz and x.dtype == fp.F32:
                x = _ftz(x, True)
            v = fn(x.astype(fp.F64))
            nan = np.isnan(v)
            too_big = v >= float(hi_d) + 1.0
            too_small = v < float(lo_d)
            safe = np.clip(np.where(nan, 0.0, v), float(lo_d), top)
            out = safe.astype(DT[dty])
            out = np.where(too_big, DT[dty].type(hi_d), out)
            out = np.where(too_small, DT[dty].type(lo_d), out)
            out = np.where(nan, DT[dty].type(0), out).astype(DT[dty])
            ctx.write(dst, out, dty, m)
        return run_fi
    # integer -> float
    if irnd:
        d.fail("integer to float conversion takes .rn/.rz/.rm/.rp")
    mode = frnd[0] if frnd else "rn"
    ddt = DT[dty]

    def run_if(ctx: object, m: np.ndarray) -> None:
        x = np.broadcast_to(np.asarray(ctx.read(a, aty)), (ctx.T,))
        hi, lo = fp.int_to_pair(x)
        out = fp.round_pair(hi, lo, ddt, mode)
        if ftz and ddt == fp.F32:
            out = _ftz(out, True)
        if sat:
            out = _sat(out)
        ctx.write(dst, out, dty, m)
    return run_if


def _int_range(ty: str) -> tuple[int, int]:
    info = np.iinfo(DT[ty])
    return int(info.min), int(info.max)


def _dec_cvta(d: Dec) -> Run:
    """cvta: generic <-> state-space addresses.  Global (and .const) addresses are identical in
    both; shared and local addresses live in generic windows at ``ctx.SHARED_WINDOW`` and
    ``ctx.LOCAL_WINDOW``."""
    ty = d.type()
    dst, a = d.ops(2)
    to = d.has("to")
    space = d.one_of({"global", "shared", "local", "param", "const"}, "state space")
    if space not in ("global", "shared", "local", "const"):
        d.fail(f"cvta for .{space} is not modelled")

    def run(ctx: object, m: np.ndarray) -> None:
        x = np.asarray(ctx.read(a, ty)).astype(np.uint64)
        if space in ("shared", "local"):
            w = np.uint64(ctx.SHARED_WINDOW if space == "shared" else ctx.LOCAL_WINDOW)
            x = (x - w) if to else (x + w)
        ctx.write(dst, np.broadcast_to(x.astype(DT[ty]), (ctx.T,)), ty, m)
    return run


def _dec_special_noop(d: Dec) -> Run:
    def run(ctx: object, m: np.ndarray) -> None:
        return None
    return run


def _dec_prmt(d: Dec) -> Run:
    """prmt.b32{.mode} d, a, b, c: pick bytes of the 8-byte value {b, a} (a = bytes 0..3).
    Default mode: nibble i of c selects byte i of d (low 3 bits: byte, bit 3: replicate sign)."""
    if any(q in d.quals for q in ("f4e", "b4e", "rc8", "ecl", "ecr", "rc16")):
        d.fail("prmt modes other than the default byte selection are not modelled")
    dst, a, b, c = d.ops(4)

    def run(ctx: object, m: np.ndarray) -> None:
        x = np.broadcast_to(np.asarray(ctx.read(a, "b32")).astype(np.uint64), (ctx.T,))
        y = np.broadcast_to(np.asarray(ctx.read(b, "b32")).astype(np.uint64), (ctx.T,))
        cv = np.broadcast_to(np.asarray(ctx.read(c, "b32")).astype(np.uint64), (ctx.T,))
        src = x | (y << np.uint64(32))
        out = np.zeros(ctx.T, np.uint64)
        for i in range(4):
            sel = (cv >> np.uint64(4 * i)) & np.uint64(0xF)
            byte = (src >> ((sel & np.uint64(7)) * np.uint64(8))) & np.uint64(0xFF)
            sign = np.where(byte & np.uint64(0x80), np.uint64(0xFF), np.uint64(0))
            byte = np.where(sel & np.uint64(8), sign, byte)
            out |= byte << np.uint64(8 * i)
        ctx.write(dst, out.astype(np.uint32), "b32", m)
    return run


def _dec_copysign(d: Dec) -> Run:
    """copysign.f32/f64 d, a, b: |b| with the sign of a."""
    ty = d.type()
    dst, a, b = d.ops(3)

    def run(ctx: object, m: np.ndarray) -> None:
        ctx.write(dst, np.copysign(ctx.read(b, ty), ctx.read(a, ty)).astype(DT[ty]), ty, m)
    return run


TESTP = {
    "finite": np.isfinite, "infinite": np.isinf, "notanumber": np.isnan,
    "number": lambda x: ~np.isnan(x),
    "normal": lambda x: np.isfinite(x) & (np.abs(x) >= np.finfo(x.dtype).tiny),
    "subnormal": lambda x: (x != 0) & (np.abs(x) < np.finfo(x.dtype).tiny),
}


def _dec_testp(d: Dec) -> Run:
    op = d.one_of(set(TESTP), "test")
    ty = d.type()
    dst, a = d.ops(2)

    def run(ctx: object, m: np.ndarray) -> None:
        x = np.broadcast_to(np.asarray(ctx.read(a, ty)), (ctx.T,))
        ctx.write(dst, TESTP[op](x), "pred", m)
    return run


def _dec_trap(d: Dec) -> Run:
    d.ops(0)
    ins = d.ins

    def run(ctx: object, m: np.ndarray) -> None:
        ctx.trap(ins, m)
    return run



# ----------------------------------------------------------------------------- memory

SPACES = SPACES_ALL


def _mem_shape(d: Dec) -> tuple[str, int, str]:
    space = next((q for q in d.quals if q in SPACES), "generic")
    vec = next((int(q[1]) for q in d.quals if q in ("v2", "v4", "v8")), 1)
    return space, vec, d.type()


def _dec_ld(d: Dec) -> Run:
    space, vec, ty = _mem_shape(d)
    dst, a = d.ops(2)
    if not isinstance(a, Addr):
        d.fail("ld needs an address operand [..]")
    items = list(dst.items) if isinstance(dst, Vec) else [dst]
    if len(items) != vec:
        d.fail(f"{len(items)} destination registers for a .v{vec} load")
    if space == "const":
        # .const variables live in global memory (allocated by PtxSim): same checks and data
        space = "global"
    esize = DT[ty].itemsize
    ins = d.ins
    if space == "param":
        par = {p.name: p for p in d.ent.params}.get(a.base)
        if par is None:
            d.fail(f"ld.param needs a kernel parameter name, not '{a.base}'")
        off = par.offset + a.offset
        if off < 0 or off + esize * vec > d.ent.param_bytes:
            d.fail("ld.param reads past the parameter block")

        def run_param(ctx: object, m: np.ndarray) -> None:
            raw = ctx.param_buf[off:off + esize * vec].view(fp.uint_of(DT[ty]) if esize > 1 else np.uint8)
            for k, it in enumerate(items):
                if isinstance(it, Sym) and it.name == "_":
                    continue
                ctx.write(it, np.broadcast_to(raw[k:k + 1].view(DT[ty]), (ctx.T,)), ty, m)
        return run_param

    def run(ctx: object, m: np.ndarray) -> None:
        addr = ctx.address(a, space)
        vals = ctx.load(ins, space, addr, m, ty, vec)  # [T, vec] bit patterns
        for k, it in enumerate(items):
            if isinstance(it, Sym) and it.name == "_":
                continue
            ctx.write(it, vals[:, k].view(DT[ty]), ty, m)
    return run


def _dec_st(d: Dec) -> Run:
    space, vec, ty = _mem_shape(d)
    a, src = d.ops(2)
    if not isinstance(a, Addr):
        d.fail("st needs an address operand [..]")
    if space in ("const", "param"):
        d.fail(f"st.{space}: the state space is read-only")
    items = list(src.items) if isinstance(src, Vec) else [src]
    if len(items) != vec:
        d.fail(f"{len(items)} source registers for a .v{vec} store")
    ins = d.ins
    ut = fp.uint_of(DT[ty]) if DT[ty].itemsize > 1 else np.dtype(np.uint8)

    def run(ctx: object, m: np.ndarray) -> None:
        addr = ctx.address(a, space)
        vals = np.empty((ctx.T, vec), ut)
        for k, it in enumerate(items):
            vals[:, k] = np.asarray(ctx.read(it, ty)).view(ut)
        ctx.store(ins, space, addr, m, ty, vals)
    return run


ATOM_OPS = {"add", "min", "max", "exch", "cas", "and", "or", "xor", "inc", "dec"}


def _dec_atom(d: Dec, red: bool = False) -> Run:
    space = next((q for q in d.quals if q in SPACES), "generic")
    if space not in ("global", "shared", "generic"):
        d.fail(f"atomics on .{space} do not exist")
    op = d.one_of(ATOM_OPS, "atomic operation")
    ty = d.type()
    if ty in ("f16", "bf16", "f16x2", "bf16x2"):
        d.fail(f"atomic .{ty} is not modelled")
    if op in ("and", "or", "xor", "exch", "cas") and ty not in ("b32", "b64", "u32", "u64", "s32"):
        d.fail(f"atom.{op} takes .b32/.b64")
    if op in ("inc", "dec") and ty != "u32":
        d.fail(f"atom.{op} takes .u32")
    if red:
        a, b = d.ops(2)
        dst, c = None, None
    elif op == "cas":
        dst, a, b, c = d.ops(4)
    else:
        dst, a, b = d.ops(3)
        c = None
    if not isinstance(a, Addr):
        d.fail("atom needs an address operand [..]")
    ins = d.ins

    def run(ctx: object, m: np.ndarray) -> None:
        addr = ctx.address(a, space)
        bv = np.broadcast_to(np.asarray(ctx.read(b, ty)), (ctx.T,))
        cv = np.broadcast_to(np.asarray(ctx.read(c, ty)), (ctx.T,)) if c is not None else None
        old = ctx.atomic(ins, space, addr, m, ty, op, bv, cv)
        if dst is not None:
            ctx.write(dst, old, ty, m)
    return run


def _dec_red(d: Dec) -> Run:
    return _dec_atom(d, red=True)


def _dec_cp_async(d: Dec) -> Run:
    """cp.async.{ca,cg}.shared.global [dst], [src], size{, src-size}; commit/wait group forms."""
    if d.has("commit_group"):
        d.ops(0)
        return lambda ctx, m: ctx.cp_commit(m)
    if d.has("wait_group"):
        (n,) = d.ops(1)
        if not isinstance(n, Imm):
            d.fail("cp.async.wait_group takes an immediate")
        return lambda ctx, m: ctx.cp_wait(d.ins, m, int(n.value))
    if d.has("wait_all"):
        d.ops(0)

        def wait_all(ctx: object, m: np.ndarray) -> None:
            ctx.cp_commit(m)
            ctx.cp_wait(d.ins, m, 0)
        return wait_all
    ops = d.ops((3, 4))
    dst, src, size = ops[:3]
    if not (isinstance(dst, Addr) and isinstance(src, Addr) and isinstance(size, Imm)):
        d.fail("cp.async needs [shared], [global], cp-size")
    n = int(size.value)
    if n not in (4, 8, 16) or (d.has("cg") and n != 16):
        d.fail("cp.async copies 4, 8 or 16 bytes (.cg: 16)")
    src_size = ops[3] if len(ops) == 4 else None
    ins = d.ins

    def run(ctx: object, m: np.ndarray) -> None:
        daddr = ctx.address(dst, "shared")
        saddr = ctx.address(src, "global")
        ss = None
        if src_size is not None:
            ss = np.broadcast_to(np.asarray(ctx.read(src_size, "u32")).astype(np.int64), (ctx.T,))
        ctx.cp_async(ins, daddr, saddr, m, n, ss)
    return run


# ----------------------------------------------------------------------------- warp collectives

def _dec_shfl(d: Dec) -> Run:
    mode = d.one_of({"up", "down", "bfly", "idx"}, "shuffle mode")
    if not d.has("sync"):
        d.fail("only shfl.sync is modelled (shfl without .sync is gone since sm_70)")
    dst, a, b, c, mm = d.ops(5)
    p = None
    if isinstance(dst, PredPair):
        dst, p = Reg(dst.p), Reg(dst.q)
    ins = d.ins

    def run(ctx: object, m: np.ndarray) -> None:
        ctx.shfl(ins, m, mode, dst, p, a, b, c, mm)
    return run


def _dec_vote(d: Dec) -> Run:
    mode = d.one_of({"all", "any", "uni", "ballot"}, "vote mode")
    dst, a, mm = d.ops(3)
    ins = d.ins

    def run(ctx: object, m: np.ndarray) -> None:
        ctx.vote(ins, m, mode, dst, a, mm)
    return run


def _dec_bar(d: Dec) -> Run:
    if d.ins.parts[0] == "bar" and d.has("warp"):
        (mm,) = d.ops(1)
        ins = d.ins
        return lambda ctx, m: ctx.warp_sync(ins, m, mm)
    if not (d.has("sync") or len(d.quals) == 0 or d.has("aligned")):
        d.fail("only bar.sync / barrier.sync (and bar.warp.sync) are modelled")
    ops = d.ops((1, 2))
    if not isinstance(ops[0], Imm) or int(ops[0].value) != 0:
        d.fail("only barrier 0 is modelled")
    if len(ops) == 2:
        d.fail("barriers with a thread count are not modelled")
    d.ins.kind = "bar"
    return _dec_special_noop(d)


# (shape, A/B type) -> (A registers, B registers); C/D take 4 f32 registers or 2 f16x2 ones
MMA_SHAPES = {
    ("m16n8k16", "f16"): (4, 2), ("m16n8k16", "bf16"): (4, 2),
    ("m16n8k8", "f16"): (2, 1), ("m16n8k8", "bf16"): (2, 1),
    ("m16n8k8", "tf32"): (4, 2),
    ("m16n8k32", "s8"): (4, 2), ("m16n8k32", "u8"): (4, 2),
    ("m16n8k32", "e4m3"): (4, 2), ("m16n8k32", "e5m2"): (4, 2),
}


def _dec_mma(d: Dec) -> Run:
    """mma.sync.aligned.shape.row.col.dtype.atype.btype.ctype d, a, b, c."""
    shape = next((q for q in d.quals if q.startswith("m") and "n" in q and "k" in q), None)
    ts = [q for q in d.quals if q in DT or q in FP8]
    if len(ts) != 4 or (shape, ts[1]) not in MMA_SHAPES:
        d.fail(f"mma {shape} {'.'.join(ts)} is not modelled")
    dty, aty, bty, cty = ts
    integer = aty in ("s8", "u8")
    if integer:
        if bty not in ("s8", "u8") or dty != "s32" or cty != "s32":
            d.fail("integer mma takes .s32 accumulators and .s8/.u8 operands")
    elif aty in FP8:
        if bty not in FP8 or dty != "f32" or cty != "f32":
            d.fail("fp8 mma takes .e4m3/.e5m2 operands and .f32 accumulators")
    elif bty != aty or dty not in ("f32", "f16") or cty not in ("f32", "f16") or \
            ("f16" in (dty, cty) and aty != "f16"):
        d.fail(f"mma types .{dty}.{aty}.{bty}.{cty} are not a valid combination")
    if not (d.has("row") and d.has("col")):
        d.fail("mma.sync needs .row.col")
    dst, a, b, c = d.ops(4)
    na, nb = MMA_SHAPES[(shape, aty)]
    for v, n, what in ((a, na, "A"), (b, nb, "B"), (dst, 2 if dty == "f16" else 4, "D"),
                       (c, 2 if cty == "f16" else 4, "C")):
        if not isinstance(v, Vec) or len(v.items) != n:
            d.fail(f"mma {shape} .{aty}: {what} is a vector of {n} registers")
    if d.has("satfinite") and not integer:
        d.fail(".satfinite is modelled on integer mma only")
    ins = d.ins
    kind = f"{aty}.{bty}" if integer or aty in FP8 else aty
    sat = d.has("satfinite")

    def run(ctx: object, m: np.ndarray) -> None:
        ctx.mma(ins, m, shape, kind, dst, a, b, c, sat, dty, cty)
    return run


def _dec_ldmatrix(d: Dec) -> Run:
    num = d.one_of({"x1", "x2", "x4"}, "matrix count")
    if not d.has("m8n8") or d.type() != "b16":
        d.fail("ldmatrix.sync.aligned.m8n8.{x1,x2,x4}[.trans].shared.b16 only")
    dst, a = d.ops(2)
    n = int(num[1])
    items = list(dst.items) if isinstance(dst, Vec) else [dst]
    if len(items) != n or not isinstance(a, Addr):
        d.fail(f"ldmatrix .{num} writes {n} registers from an address")
    trans = d.has("trans")
    ins = d.ins

    def run(ctx: object, m: np.ndarray) -> None:
        ctx.ldmatrix(ins, m, n, trans, items, a)
    return run


def _dec_bra(d: Dec) -> Run:
    (t,) = d.ops(1)
    if not isinstance(t, Sym) or t.name not in d.ent.labels:
        d.fail(f"branch target {t} is not a label of this entry")
    d.ins.kind = "bra"
    d.ins.branch = t.name
    return _dec_special_noop(d)


def _dec_exit(d: Dec) -> Run:
    d.ops(0)
    d.ins.kind = "exit"
    return _dec_special_noop(d)


DECODERS: dict[str, Callable[[Dec], Run]] = {
    "add": _dec_int_or_float("add"),
    "sub": _dec_int_or_float("sub"),
    "min": _dec_int_or_float("min"),
    "max": _dec_int_or_float("max"),
    "div": _dec_int_or_float("div"),
    "rem": _dec_int_or_float("rem"),
    "mul": _dec_mul,
    "mad": _dec_mad,
    "fma": _dec_fma,
    "abs": _dec_unary_int_float("abs"),
    "neg": _dec_unary_int_float("neg"),
    "rcp": _dec_rcp,
    "sqrt": _dec_sqrt,
    "rsqrt": _dec_approx("rsqrt"),
    "ex2": _dec_approx("ex2"),
    "lg2": _dec_approx("lg2"),
    "sin": _dec_approx("sin"),
    "cos": _dec_approx("cos"),
    "tanh": _dec_approx("tanh"),
    "and": _dec_logic("and"),
    "or": _dec_logic("or"),
    "xor": _dec_logic("xor"),
    "not": _dec_logic("not"),
    "cnot": _dec_logic("cnot"),
    "shl": _dec_shift("shl"),
    "shr": _dec_shift("shr"),
    "popc": _dec_bitcount("popc"),
    "clz": _dec_bitcount("clz"),
    "brev": _dec_bitcount("brev"),
    "bfe": _dec_bfe,
    "setp": _dec_setp,
    "selp": _dec_selp,
    "mov": _dec_mov,
    "cvt": _dec_cvt,
    "cvta": _dec_cvta,
    "ld": _dec_ld,
    "st": _dec_st,
    "atom": _dec_atom,
    "red": _dec_red,
    "cp": _dec_cp_async,
    "shfl": _dec_shfl,
    "vote": _dec_vote,
    "bar": _dec_bar,
    "barrier": _dec_bar,
    "mma": _dec_mma,
    "ldmatrix": _dec_ldmatrix,
    "bra": _dec_bra,
    "ret": _dec_exit,
    "exit": _dec_exit,
    "prmt": _dec_prmt,
    "copysign": _dec_copysign,
    "testp": _dec_testp,
    "trap": _dec_trap,
    "membar": _dec_special_noop,
    "fence": _dec_special_noop,
}


def decode_entry(ent: Entry) -> None:
    """Bind every instruction of ``ent`` to its executor; check registers are declared."""
    specials = ("%tid", "%ntid", "%ctaid", "%nctaid", "%laneid", "%warpid", "%nwarpid",
                "%clock", "%clock64", "%dynamic_smem_size", "%total_smem_size", "%smid", "%nsmid",
                "%lanemask_")
    for ins in ent.instrs:
        dec = Dec(ins, ent)
        fn = DECODERS.get(ins.parts[0])
        if fn is None:
            dec.fail(f"unknown or unmodelled instruction '{ins.parts[0]}'")
        if ins.parts[0] == "cp" and (len(ins.parts) < 2 or ins.parts[1] != "async"):
            dec.fail("only cp.async is modelled")
        for q in dec.quals:
            if q not in KNOWN_QUALIFIERS and q not in DT and not q.startswith(("L1", "L2")):
                dec.fail(f"qualifier .{q} is not modelled (refusing to guess its meaning)")
        if "relu" in dec.quals and ins.parts[0] != "cvt":
            dec.fail(".relu is modelled on cvt only")
        if ins.guard is not None and ent.regs.get(ins.guard) != "pred":
            dec.fail(f"guard {ins.guard} is not a declared .pred register")
        for op in _flat(ins.operands):
            name = op.name if isinstance(op, Sym | NotPred) else op.base if isinstance(op, Addr) else None
            if isinstance(op, PredPair):
                for n in (op.p, op.q):
                    if n not in ent.regs:
                        dec.fail(f"undeclared register {n}")
                continue
            if name is None or name in ent.regs or name in ent.labels or name in ent.shared \
                    or name in ent.globals or name in ent.local:
                continue
            if name == "_" or name.startswith(specials) or any(p.name == name for p in ent.params):
                continue
            dec.fail(f"undeclared register or symbol '{name}'")
        ins.run = fn(dec)


def _flat(ops: tuple) -> list:
    out = []
    for o in ops:
        if isinstance(o, Vec):
            out.extend(_flat(o.items))
        else:
            out.append(o)
    return out
