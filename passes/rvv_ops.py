"""Kernel-IR body ops -> RVV instructions: one table row per (fn, dtype kind).

Every lowering here takes the vector values of its operands (``V``: a register group and a
dtype) and returns a *fresh* group holding the result, so the caller's linear-scan allocator can
free operands at their last use without aliasing. Semantics follow the reference kernels
(``runtimes/reference/kernels.py``): numpy's NaN-propagating max/min, C-truncating integer
division with a zero divisor treated as one, floor ``mod`` with the divisor's sign, shifts by at
least the width emptying the value, float -> int casts that truncate and wrap (NaN/inf -> 0).
Transcendental fns come from ``rvv_polynomials``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from xdsl.ir import Operation

from portc.dialects import dtypes
from portc.dialects import kernel as k
from portc.passes import rvv_half as half
from portc.passes import rvv_polynomials as poly

if TYPE_CHECKING:
    from portc.passes.lower_rvv import GenericLowering, V

BITS = {"float32": 32, "float64": 64, "int8": 8, "int16": 16, "int32": 32, "int64": 64,
        "uint8": 8, "uint16": 16, "uint32": 32, "uint64": 64, "bool": 8, "float16": 16,
        "bfloat16": 16}
INT_OF_BITS = {8: "int8", 16: "int16", 32: "int32", 64: "int64"}
UINT_OF_BITS = {8: "uint8", 16: "uint16", 32: "uint32", 64: "uint64"}


def kind(dt: str) -> str:
    return dtypes.dtype(dt).kind


def _err(gl: GenericLowering, msg: str) -> Exception:
    from portc.passes.lower_rvv import RvvLoweringError

    return RvvLoweringError(f"{gl.where}: {msg}")


# ------------------------------------------------------------------------------ small helpers
def vv(gl: GenericLowering, mn: str, a: V, b: V, dt: str | None = None) -> V:
    d = gl.new(dt or a.dtype)
    gl.sew(a.dtype)
    gl.c(mn, d.name, a.name, b.name, group=a.n)
    return d


def copy(gl: GenericLowering, a: V) -> V:
    d = gl.new(a.dtype)
    gl.sew(a.dtype)
    gl.c("vmv.v.v", d.name, a.name, group=a.n)
    return d


def mask_to_bool(gl: GenericLowering) -> V:
    """v0 (a mask) -> bool lanes (u8 0/1)."""
    d = gl.new("bool")
    gl.sew("bool")
    gl.c("vmv.v.i", d.name, 0, group=d.n)
    gl.c("vmerge.vim", d.name, d.name, 1, vm="v0", group=d.n)
    return d


def bool_to_mask(gl: GenericLowering, b: V) -> None:
    gl.sew("bool")
    gl.c("vmsne.vi", "v0", b.name, 0, group=b.n)


def merge_f(gl: GenericLowering, d: V, value: float) -> None:
    """d[i] = value where v0[i] (floats)."""
    gl.sew(d.dtype)
    gl.c("vfmerge.vfm", d.name, d.name, gl.fconst(value, d.dtype), vm="v0", group=d.n)


def merge_v(gl: GenericLowering, d: V, src: V) -> None:
    """d[i] = src[i] where v0[i]."""
    gl.sew(d.dtype)
    gl.c("vmerge.vvm", d.name, d.name, src.name, vm="v0", group=d.n)


def nan_mask(gl: GenericLowering, x: V) -> None:
    gl.sew(x.dtype)
    gl.c("vmfne.vv", "v0", x.name, x.name, group=x.n)


# ------------------------------------------------------------------------------ binary
FLOAT_BIN = {"add": "vfadd.vv", "sub": "vfsub.vv", "mul": "vfmul.vv", "div": "vfdiv.vv"}
INT_BIN = {"add": "vadd.vv", "sub": "vsub.vv", "mul": "vmul.vv", "bitwise_and": "vand.vv",
           "bitwise_or": "vor.vv", "bitwise_xor": "vxor.vv", "and": "vand.vv", "or": "vor.vv",
           "xor": "vxor.vv"}
#: compare fn -> (float mnemonic, signed int, unsigned int, swap operands)
CMP = {"eq": ("vmfeq.vv", "vmseq.vv", "vmseq.vv", False),
       "ne": ("vmfne.vv", "vmsne.vv", "vmsne.vv", False),
       "lt": ("vmflt.vv", "vmslt.vv", "vmsltu.vv", False),
       "le": ("vmfle.vv", "vmsle.vv", "vmsleu.vv", False),
       "gt": ("vmflt.vv", "vmslt.vv", "vmsltu.vv", True),
       "ge": ("vmfle.vv", "vmsle.vv", "vmsleu.vv", True)}


def float_minmax(gl: GenericLowering, a: V, b: V, mn: str) -> V:
    """numpy's maximum/minimum: NaN in either operand gives NaN."""
    d = vv(gl, mn, a, b)
    nan_mask(gl, a)
    merge_v(gl, d, a)
    nan_mask(gl, b)
    merge_v(gl, d, b)
    return d


def _nonzero_divisor(gl: GenericLowering, b: V) -> V:
    """The reference divides by 1 where the divisor is 0."""
    d = copy(gl, b)
    gl.c("vmseq.vi", "v0", b.name, 0, group=b.n)
    gl.c("vmerge.vim", d.name, d.name, 1, vm="v0", group=b.n)
    return d


def int_div(gl: GenericLowering, a: V, b: V, fn: str) -> V:
    u = kind(a.dtype) in ("uint", "bool")
    bb = _nonzero_divisor(gl, b)
    if fn == "div":
        d = vv(gl, "vdivu.vv" if u else "vdiv.vv", a, bb)
    else:
        d = vv(gl, "vremu.vv" if u else "vrem.vv", a, bb)
        if fn == "mod" and not u:
            # floor modulo: a nonzero remainder whose sign differs from the divisor's gets +b
            t = vv(gl, "vxor.vv", d, bb)
            m = gl.vr.alloc(1)
            gl.sew(d.dtype)
            gl.c("vmslt.vx", f"v{m}", t.name, "zero", group=t.n)
            gl.free(t)
            gl.c("vmsne.vi", "v0", d.name, 0, group=d.n)
            gl.c("vmand.mm", "v0", "v0", f"v{m}")
            gl.vr.release(m, 1)
            s = vv(gl, "vadd.vv", d, bb)
            merge_v(gl, d, s)
            gl.free(s)
    gl.free(bb)
    return d


def shift(gl: GenericLowering, a: V, b: V, fn: str) -> V:
    bits = BITS[a.dtype]
    signed = kind(a.dtype) == "int"
    mn = "vsll.vv" if fn == "shl" else ("vsra.vv" if signed else "vsrl.vv")
    d = vv(gl, mn, a, b)
    gl.c("li", "t0", bits - 1)
    gl.c("vmsgtu.vx", "v0", b.name, "t0", group=b.n)
    if fn == "shr" and signed:
        f = gl.new(a.dtype)
        gl.c("li", "t0", bits - 1)
        gl.c("vsra.vx", f.name, a.name, "t0", group=a.n)
        merge_v(gl, d, f)
        gl.free(f)
    else:
        gl.c("vmerge.vim", d.name, d.name, 0, vm="v0", group=d.n)
    return d


def compare(gl: GenericLowering, a: V, b: V, fn: str) -> V:
    fm, sm, um, swap = CMP[fn]
    kd = kind(a.dtype)
    mn = fm if kd == "float" else (sm if kd == "int" else um)
    x, y = (b, a) if swap else (a, b)
    gl.sew(a.dtype)
    gl.c(mn, "v0", x.name, y.name, group=a.n)
    return mask_to_bool(gl)


def binary(gl: GenericLowering, op: k.BinaryOp, args: list[V]) -> V:
    fn = op.fn.data
    a, b = args
    kd = kind(a.dtype)
    if fn in CMP:
        return compare(gl, a, b, fn)
    if kd == "float":
        if fn in FLOAT_BIN:
            return vv(gl, FLOAT_BIN[fn], a, b)
        if fn in ("max", "min"):
            return float_minmax(gl, a, b, "vfmax.vv" if fn == "max" else "vfmin.vv")
        if fn == "pow" and isinstance(op.b.owner, k.ConstOp):
            r = poly.pow_const(gl, a, float(op.b.owner.number))
            if r is not None:
                return r
        impl = poly.BINARY.get(fn)
        if impl is None:
            raise _err(gl, f"binary fn '{fn}' on {a.dtype} has no rvv lowering")
        return impl(gl, a, b)
    if fn in INT_BIN:
        return vv(gl, INT_BIN[fn], a, b)
    u = kd in ("uint", "bool")
    if fn == "max":
        return vv(gl, "vmaxu.vv" if u else "vmax.vv", a, b)
    if fn == "min":
        return vv(gl, "vminu.vv" if u else "vmin.vv", a, b)
    if fn in ("div", "mod", "fmod"):
        return int_div(gl, a, b, fn)
    if fn in ("shl", "shr"):
        return shift(gl, a, b, fn)
    if fn == "pow":
        return poly.int_pow(gl, a, b)
    raise _err(gl, f"binary fn '{fn}' on {a.dtype} has no rvv lowering")


# ------------------------------------------------------------------------------ unary
def _unary_int(gl: GenericLowering, fn: str, x: V) -> V:
    d = gl.new(x.dtype)
    gl.sew(x.dtype)
    g = x.n
    signed = kind(x.dtype) == "int"
    if fn == "neg":
        gl.c("vrsub.vi", d.name, x.name, 0, group=g)
    elif fn == "abs":
        if signed:
            gl.c("vrsub.vi", d.name, x.name, 0, group=g)
            gl.c("vmax.vv", d.name, d.name, x.name, group=g)
        else:
            gl.c("vmv.v.v", d.name, x.name, group=g)
    elif fn == "relu":
        if signed:
            gl.c("vmax.vx", d.name, x.name, "zero", group=g)
        else:
            gl.c("vmv.v.v", d.name, x.name, group=g)
    elif fn == "sign":
        gl.c("vmv.v.i", d.name, 0, group=g)
        gl.c("vmsgt.vi" if signed else "vmsgtu.vi", "v0", x.name, 0, group=g)
        gl.c("vmerge.vim", d.name, d.name, 1, vm="v0", group=g)
        if signed:
            gl.c("vmslt.vx", "v0", x.name, "zero", group=g)
            gl.c("vmerge.vim", d.name, d.name, -1, vm="v0", group=g)
    elif fn == "bitwise_not":
        gl.c("vxor.vi", d.name, x.name, -1, group=g)
    elif fn == "not":
        gl.c("vxor.vi", d.name, x.name, 1, group=g)
    elif fn == "identity":
        gl.c("vmv.v.v", d.name, x.name, group=g)
    else:
        gl.free(d)
        raise _err(gl, f"unary fn '{fn}' on {x.dtype} has no rvv lowering")
    return d


def _fclass_test(gl: GenericLowering, x: V, bits: int) -> V:
    """bool lanes: fclass(x) & bits != 0."""
    it = INT_OF_BITS[BITS[x.dtype]]
    t = gl.new(it)
    gl.sew(x.dtype)
    gl.c("vfclass.v", t.name, x.name, group=x.n)
    gl.c("li", "t0", bits)
    gl.c("vand.vx", t.name, t.name, "t0", group=t.n)
    gl.c("vmsne.vi", "v0", t.name, 0, group=t.n)
    gl.free(t)
    return mask_to_bool(gl)


FCLASS_TESTS = {"isinf": 0x81, "isposinf": 0x80, "isneginf": 0x01}


def unary(gl: GenericLowering, op: k.UnaryOp, args: list[V]) -> V:
    fn = op.fn.data
    x = args[0]
    kd = kind(x.dtype)
    if kd != "float":
        return _unary_int(gl, fn, x)
    g = x.n
    if fn in ("neg", "abs", "identity"):
        d = gl.new(x.dtype)
        gl.sew(x.dtype)
        mn = {"neg": "vfsgnjn.vv", "abs": "vfsgnjx.vv", "identity": "vfsgnj.vv"}[fn]
        gl.c(mn, d.name, x.name, x.name, group=g)
        return d
    if fn == "sqrt":
        d = gl.new(x.dtype)
        gl.sew(x.dtype)
        gl.c("vfsqrt.v", d.name, x.name, group=g)
        return d
    if fn == "reciprocal":
        d = gl.new(x.dtype)
        gl.sew(x.dtype)
        gl.c("vfrdiv.vf", d.name, x.name, gl.fconst(1.0, x.dtype), group=g)
        return d
    if fn == "rsqrt":
        d = gl.new(x.dtype)
        gl.sew(x.dtype)
        gl.c("vfsqrt.v", d.name, x.name, group=g)
        gl.c("vfrdiv.vf", d.name, d.name, gl.fconst(1.0, x.dtype), group=g)
        return d
    if fn == "relu":
        z = gl.splat(0.0, x.dtype)
        d = float_minmax(gl, x, z, "vfmax.vv")
        gl.free(z)
        return d
    if fn == "isnan":
        nan_mask(gl, x)
        return mask_to_bool(gl)
    if fn in FCLASS_TESTS:
        return _fclass_test(gl, x, FCLASS_TESTS[fn])
    if fn == "sign":
        d = gl.splat(1.0, x.dtype)
        gl.c("vfsgnj.vv", d.name, d.name, x.name, group=g)
        gl.c("vmfeq.vf", "v0", x.name, gl.fconst(0.0, x.dtype), group=g)
        merge_f(gl, d, 0.0)
        nan_mask(gl, x)
        merge_v(gl, d, x)
        return d
    impl = poly.UNARY.get(fn)
    if impl is None:
        raise _err(gl, f"unary fn '{fn}' on {x.dtype} has no rvv lowering")
    return impl(gl, x)


# ------------------------------------------------------------------------------ casts
def int_resize(gl: GenericLowering, v: V, to_bits: int, signed_src: bool) -> V:
    """Integer lanes to ``to_bits`` (sign/zero extension, or wrapping truncation)."""
    fb = BITS[v.dtype]
    cur = v
    if to_bits > fb:
        dt = (INT_OF_BITS if signed_src else UINT_OF_BITS)[to_bits]
        d = gl.new(dt)
        gl.sew(dt)
        gl.c(f"{'vsext' if signed_src else 'vzext'}.vf{to_bits // fb}", d.name, v.name,
             group=d.n)
        return d
    while BITS[cur.dtype] > to_bits:
        nb = BITS[cur.dtype] // 2
        dt = UINT_OF_BITS[nb]
        d = gl.new(dt)
        gl.sew(dt)
        gl.c("vnsrl.wi", d.name, cur.name, 0, group=d.n)
        if cur is not v:
            gl.free(cur)
        cur = d
    if cur is v:
        return copy(gl, v)
    return cur


def _retag(v: V, dt: str) -> V:
    v.dtype = dt
    return v


def cast(gl: GenericLowering, v: V, to: str, keep: bool = False) -> V:
    """A fresh group with ``v`` converted to ``to`` (reference cast rules)."""
    fr = v.dtype
    fk, tk = kind(fr), kind(to)
    if fr == to:
        return copy(gl, v)
    if half.is_half(fr) or half.is_half(to):
        return _half_cast(gl, v, to)
    if tk == "bool":
        gl.sew(fr)
        if fk == "float":
            gl.c("vmfne.vf", "v0", v.name, gl.fconst(0.0, fr), group=v.n)
        else:
            gl.c("vmsne.vi", "v0", v.name, 0, group=v.n)
        return mask_to_bool(gl)
    if fk != "float" and tk != "float":
        return _retag(int_resize(gl, v, BITS[to], fk == "int"), to)
    if fk != "float":  # int/bool -> float
        signed = fk == "int"
        fb, tb = BITS[fr], BITS[to]
        suffix = "x" if signed else "xu"
        if fb == 2 * tb:
            d = gl.new(to)
            gl.sew(to)
            gl.c(f"vfncvt.f.{suffix}.w", d.name, v.name, group=d.n)
            return d
        if fb * 2 == tb:
            d = gl.new(to)
            gl.sew(fr)
            gl.c(f"vfwcvt.f.{suffix}.v", d.name, v.name, group=d.n)
            return d
        src = int_resize(gl, v, tb, signed) if fb != tb else v
        d = gl.new(to)
        gl.sew(to)
        gl.c(f"vfcvt.f.{suffix}.v", d.name, src.name, group=d.n)
        if src is not v:
            gl.free(src)
        return d
    if tk == "float":  # float -> float
        d = gl.new(to)
        if BITS[to] > BITS[fr]:
            gl.sew(fr)
            gl.c("vfwcvt.f.f.v", d.name, v.name, group=d.n)
        else:
            gl.sew(to)
            gl.c("vfncvt.f.f.w", d.name, v.name, group=d.n)
        return d
    # float -> int: truncate toward zero in the float's width (or wider for unsigned 32-bit
    # targets of float32), then wrap; NaN and +-inf give 0 like the reference
    fb, tb = BITS[fr], BITS[to]
    wide_bits = 64 if (fb == 32 and (tb == 64 or (tk == "uint" and tb == 32))) else fb
    it = INT_OF_BITS[wide_bits]
    i = gl.new(it)
    if wide_bits > fb:
        gl.sew(fr)
        gl.c("vfwcvt.rtz.x.f.v", i.name, v.name, group=i.n)
    else:
        gl.sew(fr)
        gl.c("vfcvt.rtz.x.f.v", i.name, v.name, group=i.n)
    # non-finite lanes -> 0
    a = gl.new(fr)
    gl.c("vfsgnjx.vv", a.name, v.name, v.name, group=v.n)
    gl.c("vmfeq.vf", "v0", a.name, gl.fconst(float("inf"), fr), group=v.n)
    m = gl.vr.alloc(1)
    gl.c("vmfne.vv", f"v{m}", v.name, v.name, group=v.n)
    gl.c("vmor.mm", "v0", "v0", f"v{m}")
    gl.vr.release(m, 1)
    gl.free(a)
    gl.sew(it)
    gl.c("vmerge.vim", i.name, i.name, 0, vm="v0", group=i.n)
    if wide_bits == tb:
        return _retag(i, to)
    r = int_resize(gl, i, tb, True)
    gl.free(i)
    return _retag(r, to)


def _half_cast(gl: GenericLowering, v: V, to: str) -> V:
    """Casts from/to float16/bfloat16 through float32 lanes (float64 and wide integers to
    half narrow from float64 bits, so there is one rounding)."""
    if half.is_half(v.dtype):
        w = half.widen(gl, v)
        if to == "float32":
            return w
        r = half.narrow(gl, w, to) if half.is_half(to) else cast(gl, w, to)
        gl.free(w)
        return r
    fr = v.dtype
    if fr in ("float32", "float64"):
        return half.narrow(gl, v, to)
    via = "float64" if BITS[fr] >= 32 and to == "bfloat16" else "float32"
    t = cast(gl, v, via)
    r = half.narrow(gl, t, to)
    gl.free(t)
    return r


# ------------------------------------------------------------------------------ dispatch
def _select(gl: GenericLowering, op: k.SelectOp, args: list[V]) -> V:
    cond, a, b = args
    if a.dtype != b.dtype:
        wa = half.widen(gl, a) if half.is_half(a.dtype) else a
        wb = half.widen(gl, b) if half.is_half(b.dtype) else b
        r = _select(gl, op, [cond, wa, wb])
        for w, x in ((wa, a), (wb, b)):
            if w is not x:
                gl.free(w)
        return r
    bool_to_mask(gl, cond)
    d = gl.new(a.dtype)
    gl.sew(a.dtype)
    gl.c("vmerge.vvm", d.name, b.name, a.name, vm="v0", group=d.n)
    return d


def _const(gl: GenericLowering, op: k.ConstOp, args: list[V]) -> V:
    dt = dtypes.from_ir(op.result.type).name
    value = op.number
    if half.is_half(dt):
        return gl.splat(half.raw_bits(float(value), dt), "uint16", dt)
    if kind(dt) == "bool":
        value = int(bool(value))
    elif kind(dt) == "uint" and int(value) >= 1 << 63:
        value = int(value) - (1 << 64)
    return gl.splat(value, dt)


def _cast(gl: GenericLowering, op: k.CastOp, args: list[V]) -> V:
    return cast(gl, args[0], dtypes.from_ir(op.result.type).name)


def _index(gl: GenericLowering, op: k.IndexOp, args: list[V]) -> V:
    return gl.index(op.dim.value.data)


BODY: dict[type, Callable[[GenericLowering, Operation, list[V]], V]] = {
    k.UnaryOp: unary, k.BinaryOp: binary, k.SelectOp: _select, k.ConstOp: _const,
    k.CastOp: _cast, k.IndexOp: _index,
}


#: body ops that read their operands' values (half operands are widened to float32 for them)
COMPUTING = (k.UnaryOp, k.BinaryOp)


def lower_body_op(gl: GenericLowering, op: Operation, args: list[V]) -> V:
    impl = BODY.get(type(op))
    if impl is None:
        raise _err(gl, f"body op {op.name} has no rvv lowering")
    if not isinstance(op, COMPUTING) or not any(half.is_half(a.dtype) for a in args):
        return impl(gl, op, args)
    wide = [half.widen(gl, a) if half.is_half(a.dtype) else a for a in args]
    r = impl(gl, op, wide)
    for w, a in zip(wide, args, strict=True):
        if w is not a:
            gl.free(w)
    res = dtypes.from_ir(op.results[0].type).name
    if half.is_half(res):
        n = half.narrow(gl, r, res)
        gl.free(r)
        return n
    return r
