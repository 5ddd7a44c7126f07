"""RVV 1.0 arithmetic, compare, mask, floating-point, reduction and permutation instructions.

Tables, not chains: integer/fp binary ops, compares, fused multiply-adds, widening ops and
conversions are each one dict from mnemonic stem to a numpy function; the engines in
``vregs.py`` turn a table row into a closure that runs a handful of numpy operations over the
whole vl. Loads and stores live in ``vmem.py``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from portc.runtimes.rvvsim import fpu
from portc.runtimes.rvvsim.core import Ctx, Op, State, gmask, isa, sext, spec
from portc.runtimes.rvvsim.errors import AsmSyntaxError, IllegalInstructionError
from portc.runtimes.rvvsim.fpu import FTYPE, UTYPE
from portc.runtimes.rvvsim.scalar import put_f
from portc.runtimes.rvvsim.vregs import (
    ELEN,
    KIND_T,
    LMUL_NAMES,
    LOG2,
    SEW_NAMES,
    Slot,
    Src,
    compare,
    describe,
    elem_org,
    elementwise,
    fscalar,
    ident,
    mask_bits,
    mask_org,
    merge_org,
    mwrite,
    no_overlap,
    por,
    raise_poison,
    ready,
    vget,
    vlmax,
    vwrite,
    width,
    xscalar,
)

# --- vsetvl ------------------------------------------------------------------------------------

def _vtype_from_tokens(c: Ctx, toks: list[str]) -> tuple[int, int, bool, bool]:
    sew, lmul, ta, ma = None, 0, False, False
    for t in toks:
        if t in SEW_NAMES:
            sew = SEW_NAMES[t]
        elif t in LMUL_NAMES:
            lmul = LMUL_NAMES[t]
        elif t in ("ta", "tu"):
            ta = t == "ta"
        elif t in ("ma", "mu"):
            ma = t == "ma"
        else:
            raise AsmSyntaxError(f"{c.program.source}:{c.instr.line}: bad vtype token '{t}' in "
                                 f"`{c.instr.text}`")
    if sew is None:
        raise AsmSyntaxError(f"{c.program.source}:{c.instr.line}: vtype needs an element width "
                             f"(e8/e16/e32/e64) in `{c.instr.text}`")
    return sew, lmul, ta, ma


def _set_vtype(st: State, rd: int, avl: int | None, sew: int, lmul: int, ta: bool, ma: bool,
               legal: bool) -> None:
    """vl = min(AVL, VLMAX) as qemu computes it; an illegal vtype sets vill and vl = 0."""
    if not legal or sew > ELEN or (lmul < 0 and sew > (ELEN >> -lmul)):
        st.set_vill()
    else:
        vlmax = (st.vlen << lmul >> LOG2[sew]) if lmul >= 0 else (st.vlen >> -lmul >> LOG2[sew])
        # rs1 = x0, rd = x0 (avl None): keep vl
        st.set_vtype(sew, lmul, min(st.vl if avl is None else avl, vlmax), ta, ma)
    if rd:
        st.x[rd] = st.vl


@isa("vsetvli", "xxt")
def _b_vsetvli(c: Ctx, a: list) -> Op:
    rd, rs1, toks = a
    sew, lmul, ta, ma = _vtype_from_tokens(c, toks)
    nxt = c.nxt

    def op(st: State) -> int:
        if rs1 == 0:
            avl = None if rd == 0 else (1 << 64) - 1
        else:
            avl = st.x[rs1] & ((1 << 64) - 1)
        _set_vtype(st, rd, avl, sew, lmul, ta, ma, True)
        return nxt
    return spec(op, "vsetvli", rd, rs1, sew, lmul, ta, ma, None)


@isa("vsetivli", "xit")
def _b_vsetivli(c: Ctx, a: list) -> Op:
    rd, uimm, toks = a
    if not 0 <= uimm < 32:
        raise AsmSyntaxError(f"{c.program.source}:{c.instr.line}: vsetivli AVL must be 0..31 in "
                             f"`{c.instr.text}`")
    sew, lmul, ta, ma = _vtype_from_tokens(c, toks)
    nxt = c.nxt

    def op(st: State) -> int:
        _set_vtype(st, rd, uimm, sew, lmul, ta, ma, True)
        return nxt
    return spec(op, "vsetvli", rd, 0, sew, lmul, ta, ma, uimm)


@isa("vsetvl", "xxx")
def _b_vsetvl(c: Ctx, a: list) -> Op:
    rd, rs1, rs2 = a
    nxt = c.nxt

    def op(st: State) -> int:
        vt = st.x[rs2] & ((1 << 64) - 1)
        lm = vt & 7
        lmul = lm - 8 if lm >= 4 else lm
        sew_code = (vt >> 3) & 7
        legal = lm != 4 and sew_code <= 3 and vt >> 8 == 0
        avl = (None if rd == 0 else (1 << 64) - 1) if rs1 == 0 else st.x[rs1] & ((1 << 64) - 1)
        _set_vtype(st, rd, avl, 8 << min(sew_code, 3), lmul, bool(vt >> 6 & 1),
                   bool(vt >> 7 & 1), legal)
        return nxt
    return op


CSR_READ: dict[str, Callable[[State], int]] = {
    "vl": lambda st: st.vl, "vlenb": lambda st: st.vlenb,
    "vtype": lambda st: sext(st.vtype, 64), "vstart": lambda st: 0,
    "frm": lambda st: st.frm, "fflags": lambda st: 0, "fcsr": lambda st: st.frm << 5,
}


def _csr_write(csr: str, st: State, v: int) -> None:
    if csr == "frm":
        v &= 7
    elif csr == "fcsr":
        v = (v >> 5) & 7
    elif csr == "fflags":
        return  # exception flags are not modelled; writes are harmless
    else:
        raise IllegalInstructionError(f"CSR {csr} is read-only")
    if v > 4:
        raise IllegalInstructionError(f"frm={v} is a reserved rounding mode")
    st.frm = v


def _csr_op(rd: int, csr: str, src: Callable[[State], int] | None, nxt: int) -> Op:
    """csrr/csrw/csrwi/fsrm/fsrmi/frrm: read the old value into rd, then write src."""
    read = CSR_READ[csr]

    def op(st: State) -> int:
        old = read(st)
        if src is not None:
            _csr_write(csr, st, src(st))
        if rd:
            st.x[rd] = old
        return nxt
    return op


@isa("csrr", "xc")
def _b_csrr(c: Ctx, a: list) -> Op:
    return _csr_op(a[0], a[1], None, c.nxt)


@isa("csrw", "cx")
def _b_csrw(c: Ctx, a: list) -> Op:
    rs = a[1]
    return _csr_op(0, a[0], lambda st: st.x[rs], c.nxt)


@isa("csrwi", "ci")
def _b_csrwi(c: Ctx, a: list) -> Op:
    imm = a[1]
    return _csr_op(0, a[0], lambda st: imm, c.nxt)


@isa("csrrw", "xcx")
def _b_csrrw(c: Ctx, a: list) -> Op:
    rs = a[2]
    return _csr_op(a[0], a[1], lambda st: st.x[rs], c.nxt)


@isa("frrm", "x")
def _b_frrm(c: Ctx, a: list) -> Op:
    return _csr_op(a[0], "frm", None, c.nxt)


@isa("fsrm", "x")
def _b_fsrm1(c: Ctx, a: list) -> Op:
    rs = a[0]
    return _csr_op(0, "frm", lambda st: st.x[rs], c.nxt)


@isa("fsrm", "xx")
def _b_fsrm2(c: Ctx, a: list) -> Op:
    rs = a[1]
    return _csr_op(a[0], "frm", lambda st: st.x[rs], c.nxt)


@isa("fsrmi", "i")
def _b_fsrmi1(c: Ctx, a: list) -> Op:
    imm = a[0]
    return _csr_op(0, "frm", lambda st: imm, c.nxt)


@isa("fsrmi", "xi")
def _b_fsrmi2(c: Ctx, a: list) -> Op:
    imm = a[1]
    return _csr_op(a[0], "frm", lambda st: imm, c.nxt)


# --- integer arithmetic ------------------------------------------------------------------------

def _sh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Shift amount: the low log2(SEW) bits of b, in a's dtype."""
    bits = a.dtype.itemsize * 8
    return (b.view(UTYPE[bits]) & UTYPE[bits](bits - 1)).astype(a.dtype)


def _mulhu64(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    m32 = np.uint64(0xFFFFFFFF)
    s32 = np.uint64(32)
    a0, a1, b0, b1 = a & m32, a >> s32, b & m32, b >> s32
    p00, p01, p10, p11 = a0 * b0, a0 * b1, a1 * b0, a1 * b1
    mid = (p00 >> s32) + (p01 & m32) + (p10 & m32)
    return p11 + (p01 >> s32) + (p10 >> s32) + (mid >> s32)


def _mulh(a: np.ndarray, b: np.ndarray, sa: bool, sb: bool) -> np.ndarray:
    """High SEW bits of the 2*SEW product with signed/unsigned operands."""
    bits = a.dtype.itemsize * 8
    u = UTYPE[bits]
    if bits <= 32:  # the 2*SEW product fits 64 bits (uint64 when both are unsigned 32-bit)
        wt = np.uint64 if not sa and not sb else np.int64
        wide = (a if sa else a.view(u)).astype(wt) * (b if sb else b.view(u)).astype(wt)
        return (wide >> wt(bits)).astype(u)
    ua, ub = a.view(np.uint64), b.view(np.uint64)
    hi = _mulhu64(ua, ub)
    if sa:
        hi = hi - np.where(a.view(np.int64) < 0, ub, np.uint64(0))
    if sb:
        hi = hi - np.where(b.view(np.int64) < 0, ua, np.uint64(0))
    return hi


def _divs(a: np.ndarray, b: np.ndarray, rem: bool) -> np.ndarray:
    t = a.dtype
    a, b = np.broadcast_arrays(a, b)
    mn = np.iinfo(t).min
    zero = b == 0
    ovf = (a == mn) & (b == -1)
    bs = np.where(zero | ovf, t.type(1), b)
    r = np.fmod(a, bs)
    if rem:
        return np.where(zero, a, np.where(ovf, t.type(0), r)).astype(t)
    q = (a - r) // bs
    return np.where(zero, t.type(-1), np.where(ovf, a, q)).astype(t)


def _divu(a: np.ndarray, b: np.ndarray, rem: bool) -> np.ndarray:
    t = a.dtype
    a, b = np.broadcast_arrays(a, b)
    zero = b == 0
    bs = np.where(zero, t.type(1), b)
    if rem:
        return np.where(zero, a, a % bs).astype(t)
    return np.where(zero, np.iinfo(t).max, a // bs).astype(t)


# stem -> (numeric kind of operands, fn(vs2, op1)), forms .vv .vx .vi
INT_BIN: dict[str, tuple[str, Callable[[np.ndarray, np.ndarray], np.ndarray], str]] = {
    "vadd": ("u", lambda a, b: a + b, "vv vx vi"),
    "vsub": ("u", lambda a, b: a - b, "vv vx"),
    "vrsub": ("u", lambda a, b: b - a, "vx vi"),
    "vand": ("u", np.bitwise_and, "vv vx vi"),
    "vor": ("u", np.bitwise_or, "vv vx vi"),
    "vxor": ("u", np.bitwise_xor, "vv vx vi"),
    "vsll": ("u", lambda a, b: a << _sh(a, b), "vv vx vi"),
    "vsrl": ("u", lambda a, b: a >> _sh(a, b), "vv vx vi"),
    "vsra": ("s", lambda a, b: a >> _sh(a, b), "vv vx vi"),
    "vmin": ("s", np.minimum, "vv vx"),
    "vmax": ("s", np.maximum, "vv vx"),
    "vminu": ("u", np.minimum, "vv vx"),
    "vmaxu": ("u", np.maximum, "vv vx"),
    "vmul": ("u", lambda a, b: a * b, "vv vx"),
    "vmulh": ("s", lambda a, b: _mulh(a, b, True, True), "vv vx"),
    "vmulhu": ("u", lambda a, b: _mulh(a, b, False, False), "vv vx"),
    "vmulhsu": ("s", lambda a, b: _mulh(a, b, True, False), "vv vx"),
    "vdiv": ("s", lambda a, b: _divs(a, b, False), "vv vx"),
    "vrem": ("s", lambda a, b: _divs(a, b, True), "vv vx"),
    "vdivu": ("u", lambda a, b: _divu(a, b, False), "vv vx"),
    "vremu": ("u", lambda a, b: _divu(a, b, True), "vv vx"),
}
UIMM_STEMS = {"vsll", "vsrl", "vsra"}  # .vi takes an unsigned 5-bit immediate


def _scalar_src(c: Ctx, form: str, val: int, wl: int, kind: str, stem: str) -> Src:
    if form in ("vx", "wx"):
        return ("x", val, wl, kind)
    if form in ("vf", "wf"):
        return ("f", val, wl, "f")
    lo, hi = (0, 31) if stem in UIMM_STEMS or stem.startswith(("vnsr", "vslide", "vrgather")) \
        else (-16, 15)
    if not lo <= val <= hi:
        raise AsmSyntaxError(f"{c.program.source}:{c.instr.line}: immediate {val} out of range "
                             f"{lo}..{hi} in `{c.instr.text}`")
    return ("i", val, wl, kind)




def _same(*a: np.ndarray) -> list[np.ndarray]:
    return list(a)


def _swap(a: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
    return [b, a]


def _wide2(a: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
    return [a.astype(np.float64), b.astype(np.float64)]


# rounding fp ops under a directed frm: (exact-operation kind, operands in that order)
FP_DIRECTED: dict[str, tuple[str, Callable[..., list[np.ndarray]]]] = {
    "vfadd": ("add", _same), "vfsub": ("sub", _same), "vfrsub": ("sub", _swap),
    "vfmul": ("mul", _same), "vfdiv": ("div", _same), "vfrdiv": ("div", _swap),
    "vfwadd": ("add", _wide2), "vfwsub": ("sub", _wide2), "vfwmul": ("mul", _wide2),
}


def ew_op(c: Ctx, vd: int, dwl: int, dkind: str, srcs: list[Src], fn: Callable,
          masked: bool, *, directed: Callable[[State], Callable] | None = None,
          guard: Callable[[State], None] | None = None, sel: bool = False) -> Op:
    """The closure of one element-wise instruction, and its spec for the loop batcher.
    ``guard(st)`` raises what the instruction traps on at the current vtype (before anything
    is read); ``directed(st)`` is the function to use under a non-zero frm."""
    me, nxt = describe(c), c.nxt
    slot = None if masked or sel else Slot()

    def op(st: State) -> int:
        if guard is not None:
            guard(st)
        f = directed(st) if directed is not None and st.frm else fn
        elementwise(st, me, vd, dwl, dkind, srcs, f, masked, sel, slot)
        return nxt
    return spec(op, "vew", vd, dwl, dkind, tuple(srcs), fn, masked, guard, sel, me)


def _directed(kind: str, prep: Callable[..., list[np.ndarray]],
              fn: Callable) -> Callable[[State], Callable]:
    """``directed`` for ``ew_op``: the exact per-element recomputation under frm."""
    return lambda st: fpu.directed_vec(kind, prep, fn, fpu.FRM_NAMES[st.frm])


def _binary(table: dict, dkind_of: Callable[[str], str], rounds: bool = False) -> None:
    for stem, (kind, fn, forms) in table.items():
        for form in forms.split():
            sig = "vv" + ("v" if form[1] == "v" else "x" if form[1] == "x" else
                          "f" if form[1] == "f" else "i") + "m"

            def build(c: Ctx, a: list, stem: str = stem, kind: str = kind, fn: Callable = fn,
                      form: str = form) -> Op:
                vd, vs2, s1, masked = a
                srcs: list[Src] = [("v", vs2, 0, kind)]
                srcs.append(("v", s1, 0, kind) if form[1] == "v" else
                            _scalar_src(c, form, s1, 0, kind, stem))
                dk = dkind_of(kind)
                if stem in ("vxor", "vsub") and form == "vv" and vs2 == s1:
                    # the zeroing idiom: the result is 0 whatever (even undefined) the source
                    srcs, fn = [("i", 0, 0, kind)], ident
                rnd = FP_DIRECTED.get(stem) if rounds else None
                return ew_op(c, vd, 0, dk, srcs, fn, masked,
                             directed=None if rnd is None else _directed(*rnd, fn))
            isa(f"{stem}.{form}", sig)(build)


_binary(INT_BIN, lambda k: k)

# multiply-add (asm order vd, vs1|rs1, vs2): fn(vd, s1, vs2)
INT_MAC: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "vmacc": lambda d, s, v: s * v + d,
    "vnmsac": lambda d, s, v: d - s * v,
    "vmadd": lambda d, s, v: s * d + v,
    "vnmsub": lambda d, s, v: v - s * d,
}


def _mac_builder(fn: Callable, form: str, kinds: tuple[str, str, str], dwl: int,
                 dkind: str, prep: Callable[..., list[np.ndarray]] | None = None
                 ) -> Callable[[Ctx, list], Op]:
    """Multiply-adds; ``prep`` maps (vd, s1, vs2) to the fma operands (a, b, c) for the exact
    recomputation under a directed frm (fp forms only)."""
    def build(c: Ctx, a: list) -> Op:
        vd, s1, vs2, masked = a
        srcs: list[Src] = [("v", vd, dwl, kinds[0])]
        srcs.append(("v", s1, 0, kinds[1]) if form[1] == "v" else
                    (form[1], s1, 0, kinds[1]))
        srcs.append(("v", vs2, 0, kinds[2]))
        return ew_op(c, vd, dwl, dkind, srcs, fn, masked,
                     directed=None if prep is None else _directed("fma", prep, fn))
    return build


for _stem, _fn in INT_MAC.items():
    for _form in ("vv", "vx"):
        isa(f"{_stem}.{_form}", "v" + _form[1] + "vm")(
            _mac_builder(_fn, _form, ("u", "u", "u"), 0, "u"))


# widening integer: dest 2*SEW
WIDE_BIN: dict[str, tuple[str, str, Callable]] = {  # stem -> (vs2 kind, op1 kind, fn)
    "vwadd": ("s", "s", lambda a, b: a.astype(np.int64) + b.astype(np.int64)),
    "vwaddu": ("u", "u", lambda a, b: a.astype(np.uint64) + b.astype(np.uint64)),
    "vwsub": ("s", "s", lambda a, b: a.astype(np.int64) - b.astype(np.int64)),
    "vwsubu": ("u", "u", lambda a, b: a.astype(np.uint64) - b.astype(np.uint64)),
    "vwmul": ("s", "s", lambda a, b: a.astype(np.int64) * b.astype(np.int64)),
    "vwmulu": ("u", "u", lambda a, b: a.astype(np.uint64) * b.astype(np.uint64)),
    "vwmulsu": ("s", "u", lambda a, b: a.astype(np.int64) * b.astype(np.int64)),
}

for _stem, (_k2, _k1, _fn) in WIDE_BIN.items():
    for _form in ("vv", "vx"):
        def _build_w(c: Ctx, a: list, k2: str = _k2, k1: str = _k1, fn: Callable = _fn,
                     form: str = _form) -> Op:
            vd, vs2, s1, masked = a
            srcs: list[Src] = [("v", vs2, 0, k2), (form[1], s1, 0, k1)]
            return ew_op(c, vd, 1, "u", srcs, fn, masked)
        isa(f"{_stem}.{_form}", "vv" + _form[1] + "m")(_build_w)
    # .wv / .wx: vs2 is already 2*SEW
    if _stem in ("vwadd", "vwaddu", "vwsub", "vwsubu"):
        for _form in ("wv", "wx"):
            def _build_ww(c: Ctx, a: list, k2: str = _k2, k1: str = _k1, fn: Callable = _fn,
                          form: str = _form) -> Op:
                vd, vs2, s1, masked = a
                srcs: list[Src] = [("v", vs2, 1, k2), (form[1], s1, 0, k1)]
                return ew_op(c, vd, 1, "u", srcs, fn, masked)
            isa(f"{_stem}.{_form}", "vv" + _form[1] + "m")(_build_ww)

WIDE_MAC: dict[str, tuple[str, str, str]] = {  # stem -> (op1 kind, vs2 kind, forms)
    "vwmacc": ("s", "s", "vv vx"),
    "vwmaccu": ("u", "u", "vv vx"),
    "vwmaccsu": ("s", "u", "vv vx"),
    "vwmaccus": ("u", "s", "vx"),
}


def _wmac(d: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    return d.astype(np.int64) + s.astype(np.int64) * v.astype(np.int64)


for _stem, (_k1, _k2, _forms) in WIDE_MAC.items():
    for _form in _forms.split():
        isa(f"{_stem}.{_form}", "v" + _form[1] + "vm")(
            _mac_builder(_wmac, _form, ("s", _k1, _k2), 1, "s"))


# narrowing shifts: vs2 is 2*SEW, result SEW
def _nshift(signed: bool) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    def fn(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        bits = a.dtype.itemsize * 8
        sh = (b.astype(np.uint64) & np.uint64(bits - 1)).astype(a.dtype)
        return a >> sh
    return fn


for _stem, _signed in (("vnsrl", False), ("vnsra", True)):
    for _form in ("wv", "wx", "wi"):
        def _build_n(c: Ctx, a: list, stem: str = _stem, signed: bool = _signed,
                     form: str = _form) -> Op:
            vd, vs2, s1, masked = a
            k = "s" if signed else "u"
            srcs: list[Src] = [("v", vs2, 1, k)]
            srcs.append(("v", s1, 0, "u") if form == "wv" else
                        _scalar_src(c, form, s1, 0, "u", stem))
            fn = _nshift(signed)

            def narrow(x: np.ndarray, y: np.ndarray) -> np.ndarray:
                return fn(x, y).view(UTYPE[x.dtype.itemsize * 8]).astype(
                    UTYPE[x.dtype.itemsize * 4])
            return ew_op(c, vd, 0, "u", srcs, narrow, masked)
        isa(f"{_stem}.{_form}", "vv" + {"wv": "v", "wx": "x", "wi": "i"}[_form] + "m")(_build_n)


def _extend(x: np.ndarray) -> np.ndarray:
    """vzext/vsext: the numeric kind of the source does the work in the cast to the result."""
    return x


# zero/sign extension
for _sign, _kind in (("vzext", "u"), ("vsext", "s")):
    for _f, _wl in (("vf2", -1), ("vf4", -2), ("vf8", -3)):
        def _build_ext(c: Ctx, a: list, kind: str = _kind, wl: int = _wl) -> Op:
            vd, vs2, masked = a
            srcs: list[Src] = [("v", vs2, wl, kind)]
            return ew_op(c, vd, 0, kind, srcs, _extend, masked)
        isa(f"{_sign}.{_f}", "vvm")(_build_ext)


# --- moves and merges --------------------------------------------------------------------------

def _build_mv(form: str) -> Callable[[Ctx, list], Op]:
    def build(c: Ctx, a: list) -> Op:
        vd, s = a
        src: Src = ("v", s, 0, "u") if form == "v" else _scalar_src(
            c, {"x": "vx", "i": "vi", "f": "vf"}[form], s, 0, "u", "vmv")
        return ew_op(c, vd, 0, "f" if form == "f" else "u", [src], ident, False)
    return build


isa("vmv.v.v", "vv")(_build_mv("v"))
isa("vmv.v.x", "vx")(_build_mv("x"))
isa("vmv.v.i", "vi")(_build_mv("i"))
isa("vfmv.v.f", "vf")(_build_mv("f"))


def _build_merge(form: str) -> Callable[[Ctx, list], Op]:
    def build(c: Ctx, a: list) -> Op:
        vd, vs2, s1, v0 = a
        if v0 != 0:
            raise AsmSyntaxError(f"{c.program.source}:{c.instr.line}: merge selector must be v0 "
                                 f"in `{c.instr.text}`")
        nk = "f" if form == "f" else "u"
        src: Src = ("v", s1, 0, nk) if form == "v" else _scalar_src(
            c, {"x": "vx", "i": "vi", "f": "vf"}[form], s1, 0, nk, "vmerge")
        srcs: list[Src] = [("v", vs2, 0, nk), src]

        def fn(sel: np.ndarray, a2: np.ndarray, b1: np.ndarray) -> np.ndarray:
            return np.where(sel, b1, a2)
        return ew_op(c, vd, 0, nk, srcs, fn, False, sel=True)
    return build


isa("vmerge.vvm", "vvvv")(_build_merge("v"))
isa("vmerge.vxm", "vvxv")(_build_merge("x"))
isa("vmerge.vim", "vviv")(_build_merge("i"))
isa("vfmerge.vfm", "vvfv")(_build_merge("f"))


@isa("vmv.x.s", "xv")
def _b_vmv_x_s(c: Ctx, a: list) -> Op:
    rd, vs2 = a
    nxt = c.nxt

    def op(st: State) -> int:
        ready(st)
        eew = st.sew
        u = UTYPE[eew]
        base = vs2 * st.vlenb
        v = int(st.V[base:base + eew // 8].view(u)[0])
        raise_poison(st, st.P[base:base + eew // 8].view(u)[:1] != 0, vs2, eew, "element 0 of vs2")
        if rd:
            st.x[rd] = sext(v, eew)
        return nxt
    return op


@isa("vfmv.f.s", "fv")
def _b_vfmv_f_s(c: Ctx, a: list) -> Op:
    rd, vs2 = a
    nxt = c.nxt

    def op(st: State) -> int:
        ready(st)
        eew = st.sew
        if eew not in FTYPE:
            raise IllegalInstructionError(f"vfmv.f.s needs SEW 32 or 64, not {eew}")
        u = UTYPE[eew]
        base = vs2 * st.vlenb
        raise_poison(st, st.P[base:base + eew // 8].view(u)[:1] != 0, vs2, eew, "element 0 of vs2")
        put_f(st, rd, st.V[base:base + eew // 8].view(FTYPE[eew])[:1].copy())
        return nxt
    return op


def _build_to_s(form: str) -> Callable[[Ctx, list], Op]:
    """vmv.s.x / vfmv.s.f: element 0 when vl > 0; the rest of vd (one register) is tail."""
    def build(c: Ctx, a: list) -> Op:
        vd, r = a
        me, nxt = describe(c), c.nxt

        def op(st: State) -> int:
            vl = ready(st)
            if vl == 0:
                return nxt
            eew = st.sew
            val = xscalar(st.x[r], eew, "u") if form == "x" else fscalar(st, r, eew).view(
                UTYPE[eew])
            saved_vl, saved_lmul = st.vl, st.lmul
            st.vl, st.lmul = 1, min(st.lmul, 0)  # one element, one register
            try:
                vwrite(st, me, vd, eew, val, None, None, None)
            finally:
                st.vl, st.lmul = saved_vl, saved_lmul
            return nxt
        return op
    return build


isa("vmv.s.x", "vx")(_build_to_s("x"))
isa("vfmv.s.f", "vf")(_build_to_s("f"))


def _build_whole_mv(n: int) -> Callable[[Ctx, list], Op]:
    def build(c: Ctx, a: list) -> Op:
        vd, vs2 = a
        if vd % n or vs2 % n:
            raise AsmSyntaxError(f"{c.program.source}:{c.instr.line}: vmv{n}r.v registers must be "
                                 f"multiples of {n} in `{c.instr.text}`")
        nxt = c.nxt

        def op(st: State) -> int:
            b = st.vlenb
            st.V[vd * b:(vd + n) * b] = st.V[vs2 * b:(vs2 + n) * b]
            st.P[vd * b:(vd + n) * b] = st.P[vs2 * b:(vs2 + n) * b]
            st.O[vd * b:(vd + n) * b] = st.O[vs2 * b:(vs2 + n) * b]
            st.OM[vd:vd + n] = st.OM[vs2:vs2 + n]
            src, keep = (1 << n) - 1, ~gmask(vd, n)
            st.dirty = (st.dirty & keep) | ((st.dirty >> vs2 & src) << vd)
            st.mfmt = (st.mfmt & keep) | ((st.mfmt >> vs2 & src) << vd)
            return nxt
        return op
    return build


for _n in (1, 2, 4, 8):
    isa(f"vmv{_n}r.v", "vv")(_build_whole_mv(_n))


# --- integer compares --------------------------------------------------------------------------

INT_CMP: dict[str, tuple[str, Callable, str]] = {
    "vmseq": ("u", np.equal, "vv vx vi"),
    "vmsne": ("u", np.not_equal, "vv vx vi"),
    "vmsltu": ("u", np.less, "vv vx"),
    "vmslt": ("s", np.less, "vv vx"),
    "vmsleu": ("u", np.less_equal, "vv vx vi"),
    "vmsle": ("s", np.less_equal, "vv vx vi"),
    "vmsgtu": ("u", np.greater, "vx vi"),
    "vmsgt": ("s", np.greater, "vx vi"),
}
FP_CMP: dict[str, tuple[str, Callable, str]] = {
    "vmfeq": ("f", np.equal, "vv vf"),
    "vmfne": ("f", np.not_equal, "vv vf"),
    "vmflt": ("f", np.less, "vv vf"),
    "vmfle": ("f", np.less_equal, "vv vf"),
    "vmfgt": ("f", np.greater, "vf"),
    "vmfge": ("f", np.greater_equal, "vf"),
}
SWAPPED_CMP = {"vmsgt.vv": "vmslt", "vmsgtu.vv": "vmsltu", "vmsge.vv": "vmsle",
               "vmsgeu.vv": "vmsleu", "vmfgt.vv": "vmflt", "vmfge.vv": "vmfle"}


def _cmp_builder(kind: str, fn: Callable, form: str, stem: str,
                 swap: bool = False) -> Callable[[Ctx, list], Op]:
    def build(c: Ctx, a: list) -> Op:
        vd, vs2, s1, masked = a
        srcs: list[Src] = [("v", vs2, 0, kind)]
        srcs.append(("v", s1, 0, kind) if form[1] == "v" else
                    _scalar_src(c, form, s1, 0, kind, stem))
        if swap:
            srcs.reverse()
        me, nxt = describe(c), c.nxt

        def op(st: State) -> int:
            compare(st, me, vd, srcs, fn, masked)
            return nxt
        return spec(op, "vcmp", vd, tuple(srcs), fn, masked, me)
    return build


for _table in (INT_CMP, FP_CMP):
    for _stem, (_kind, _fn, _forms) in _table.items():
        for _form in _forms.split():
            _s = {"v": "v", "x": "x", "i": "i", "f": "f"}[_form[1]]
            isa(f"{_stem}.{_form}", f"vv{_s}m")(_cmp_builder(_kind, _fn, _form, _stem))
# GNU-as immediate pseudos: vmslt{u}.vi a, i == vmsle{u}.vi a, i-1, vmsge{u}.vi == vmsgt{u}.vi;
# the unsigned forms with 0 become constant false/true
IMM_PSEUDO_CMP = {"vmslt.vi": "vmsle", "vmsltu.vi": "vmsleu", "vmsge.vi": "vmsgt",
                  "vmsgeu.vi": "vmsgtu"}


def _pseudo_cmp(name: str) -> Callable[[Ctx, list], Op]:
    stem = IMM_PSEUDO_CMP[name]
    kind, fn, _ = INT_CMP[stem]

    def build(c: Ctx, a: list) -> Op:
        vd, vs2, imm, masked = a
        if not -15 <= imm <= 16:
            raise AsmSyntaxError(f"{c.program.source}:{c.instr.line}: immediate {imm} out of "
                                 f"range -15..16 in `{c.instr.text}`")
        if imm == 0 and stem.endswith("u"):
            const = stem == "vmsgtu"  # x >= 0 unsigned is always true, x < 0 never

            def fn0(x: np.ndarray, y: np.ndarray) -> np.ndarray:
                return np.full(x.shape, const)
            return _cmp_builder(kind, fn0, "vv", stem)(c, [vd, vs2, vs2, masked])
        return _cmp_builder(kind, fn, "vi", stem)(c, [vd, vs2, imm - 1, masked])
    return build


for _name in IMM_PSEUDO_CMP:
    isa(_name, "vvim")(_pseudo_cmp(_name))
for _name, _stem in SWAPPED_CMP.items():
    _k, _fn, _ = (INT_CMP | FP_CMP)[_stem]
    isa(_name, "vvvm")(_cmp_builder(_k, _fn, "vv", _stem, swap=True))


# --- mask instructions -------------------------------------------------------------------------

MASK_LOGIC: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "vmand": lambda a, b: a & b, "vmnand": lambda a, b: ~(a & b),
    "vmandn": lambda a, b: a & ~b, "vmxor": lambda a, b: a ^ b,
    "vmor": lambda a, b: a | b, "vmnor": lambda a, b: ~(a | b),
    "vmorn": lambda a, b: a | ~b, "vmxnor": lambda a, b: ~(a ^ b),
}


# with both operands the same register these give a constant (the vmclr/vmset idioms), so
# undefined inputs do not make the result undefined
CONST_IF_SAME = {"vmxor", "vmxnor", "vmandn", "vmorn"}


def _mask_logic(fn: Callable, unary: bool, stem: str = "") -> Callable[[Ctx, list], Op]:
    def build(c: Ctx, a: list) -> Op:
        if unary:
            vd, vs2 = a
            vs1 = vs2
        else:
            vd, vs2, vs1 = a
        me, nxt = describe(c), c.nxt
        constant = vs1 == vs2 and stem in CONST_IF_SAME

        def op(st: State) -> int:
            vl = ready(st)
            if vl == 0:
                return nxt
            a2, p2 = mask_bits(st, vs2, vl)
            a1, p1 = mask_bits(st, vs1, vl)
            if constant:
                p1 = p2 = None
            origin = merge_org(p2, None if p2 is None else mask_org(st, vs2, vl),
                                p1, None if p1 is None else mask_org(st, vs1, vl))
            mwrite(st, me, vd, fn(a2, a1), por(p2, p1), None, origin)
            return nxt
        return spec(op, "vmlogic", vd, vs2, vs1, fn, constant, me)
    return build


for _stem, _fn in MASK_LOGIC.items():
    isa(f"{_stem}.mm", "vvv")(_mask_logic(_fn, False, _stem))
isa("vmmv.m vmcpy.m", "vv")(_mask_logic(MASK_LOGIC["vmand"], True))
isa("vmnot.m", "vv")(_mask_logic(MASK_LOGIC["vmnand"], True))
isa("vmclr.m", "v")(lambda c, a: _mask_logic(MASK_LOGIC["vmxor"], True, "vmxor")(c, [a[0], a[0]]))
isa("vmset.m", "v")(
    lambda c, a: _mask_logic(MASK_LOGIC["vmxnor"], True, "vmxnor")(c, [a[0], a[0]]))


def _active_bits(st: State, vs2: int, vl: int, masked: bool, me: str) -> np.ndarray:
    bits, pois = mask_bits(st, vs2, vl)
    if masked:
        m, mp = mask_bits(st, 0, vl)
        raise_poison(st, mp, 0, 1, "mask v0")
        bits = bits & m
        pois = pois & m if pois is not None else None
    raise_poison(st, pois, vs2, 1, "mask operand vs2")
    return bits


@isa("vcpop.m vpopc.m", "xvm")
def _b_vcpop(c: Ctx, a: list) -> Op:
    rd, vs2, masked = a
    me, nxt = describe(c), c.nxt

    def op(st: State) -> int:
        vl = ready(st)
        v = int(np.count_nonzero(_active_bits(st, vs2, vl, masked, me))) if vl else 0
        if rd:
            st.x[rd] = v
        return nxt
    return op


@isa("vfirst.m", "xvm")
def _b_vfirst(c: Ctx, a: list) -> Op:
    rd, vs2, masked = a
    me, nxt = describe(c), c.nxt

    def op(st: State) -> int:
        vl = ready(st)
        bits = _active_bits(st, vs2, vl, masked, me) if vl else np.zeros(0, bool)
        v = int(np.argmax(bits)) if bits.any() else -1
        if rd:
            st.x[rd] = v
        return nxt
    return op


def _build_set_first(kind: str) -> Callable[[Ctx, list], Op]:
    """vmsbf.m / vmsif.m / vmsof.m: bits before / up to / only at the first active set bit."""
    def build(c: Ctx, a: list) -> Op:
        vd, vs2, masked = a
        if vd == vs2 or (masked and vd == 0):
            raise AsmSyntaxError(f"{c.program.source}:{c.instr.line}: {c.mnemonic} destination "
                                 f"must not overlap its source or v0 in `{c.instr.text}`")
        me, nxt = describe(c), c.nxt

        def op(st: State) -> int:
            vl = ready(st)
            if vl == 0:
                return nxt
            mask = mask_bits(st, 0, vl) if masked else None
            bits = _active_bits(st, vs2, vl, masked, me)
            first = int(np.argmax(bits)) if bits.any() else vl
            idx = np.arange(vl)
            res = {"bf": idx < first, "if": idx <= first, "of": idx == first}[kind]
            mwrite(st, me, vd, res, None, mask, None)
            return nxt
        return op
    return build


for _k in ("bf", "if", "of"):
    isa(f"vms{_k}.m", "vvm")(_build_set_first(_k))


@isa("vid.v", "vm")
def _b_vid(c: Ctx, a: list) -> Op:
    vd, masked = a
    me, nxt = describe(c), c.nxt

    def op(st: State) -> int:
        vl = ready(st)
        if vl:
            vwrite(st, me, vd, st.sew, np.arange(vl, dtype=np.uint64).astype(UTYPE[st.sew]),
                   None, mask_bits(st, 0, vl) if masked else None, None)
        return nxt
    return op


@isa("viota.m", "vvm")
def _b_viota(c: Ctx, a: list) -> Op:
    vd, vs2, masked = a
    me, nxt = describe(c), c.nxt

    def op(st: State) -> int:
        vl = ready(st)
        if not vl:
            return nxt
        no_overlap(st, "viota.m", vd, st.sew, [(vs2, 1)])
        bits, pois = mask_bits(st, vs2, vl)
        mask = mask_bits(st, 0, vl) if masked else None
        if mask is not None:
            bits = bits & mask[0]
        csum = np.cumsum(bits) - bits
        # an element's count depends on every earlier source bit: poison spreads forward
        origin = None
        if pois is not None:
            org = mask_org(st, vs2, vl)
            first = int(np.argmax(pois))
            pois = np.cumsum(pois) > 0
            origin = np.full(vl, org[first], np.int32)
        vwrite(st, me, vd, st.sew, csum.astype(UTYPE[st.sew]), pois, mask, origin)
        return nxt
    return op


# --- floating point ----------------------------------------------------------------------------

def _fsgnj(kind: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    def fn(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        u = UTYPE[a.dtype.itemsize * 8]
        sign = u(1) << u(a.dtype.itemsize * 8 - 1)
        ua, ub = a.view(u), b.view(u)
        s = {"j": ub & sign, "n": ~ub & sign, "x": (ua ^ ub) & sign}[kind]
        return ((ua & ~sign) | s).view(a.dtype)
    return fn


FP_BIN: dict[str, tuple[str, Callable, str]] = {
    "vfadd": ("f", lambda a, b: fpu.canon(a + b), "vv vf"),
    "vfsub": ("f", lambda a, b: fpu.canon(a - b), "vv vf"),
    "vfrsub": ("f", lambda a, b: fpu.canon(b - a), "vf"),
    "vfmul": ("f", lambda a, b: fpu.canon(a * b), "vv vf"),
    "vfdiv": ("f", lambda a, b: fpu.canon(a / b), "vv vf"),
    "vfrdiv": ("f", lambda a, b: fpu.canon(b / a), "vf"),
    "vfmin": ("f", fpu.fmin, "vv vf"),
    "vfmax": ("f", fpu.fmax, "vv vf"),
    "vfsgnj": ("f", _fsgnj("j"), "vv vf"),
    "vfsgnjn": ("f", _fsgnj("n"), "vv vf"),
    "vfsgnjx": ("f", _fsgnj("x"), "vv vf"),
}
_binary(FP_BIN, lambda k: k, rounds=True)

# fused multiply-add (asm order vd, vs1|rs1, vs2): (product sign, addend sign, addend is vd?)
FP_MAC: dict[str, tuple[float, float, bool]] = {
    "vfmacc": (1.0, 1.0, True), "vfnmacc": (-1.0, -1.0, True),
    "vfmsac": (1.0, -1.0, True), "vfnmsac": (-1.0, 1.0, True),
    "vfmadd": (1.0, 1.0, False), "vfnmadd": (-1.0, -1.0, False),
    "vfmsub": (1.0, -1.0, False), "vfnmsub": (-1.0, 1.0, False),
}


def _fmac_fn(ps: float, cs: float, acc_vd: bool) -> Callable:
    def fn(d: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
        t = d.dtype.type
        if ps != 1.0:  # (a product by +1 changes no value, only a NaN's payload: canonical)
            s = s * t(ps)
        if acc_vd:  # vd = ±(s*v) ± vd
            return fpu.fma(s, v, d if cs == 1.0 else d * t(cs))
        return fpu.fma(s, d, v if cs == 1.0 else v * t(cs))  # vd = ±(s*vd) ± vs2
    if acc_vd:  # the loop batcher runs chains of these on an accumulator (batch.py)
        fn.fma_signs = (ps, cs)  # type: ignore[attr-defined]
    return fn


def _fmac_prep(ps: float, cs: float, acc_vd: bool, wide: bool = False) -> Callable:
    def prep(d: np.ndarray, s: np.ndarray, v: np.ndarray) -> list[np.ndarray]:
        if wide:
            s, v = s.astype(np.float64), v.astype(np.float64)
        t = d.dtype.type
        if acc_vd:
            return [s * t(ps), v, d * t(cs)]
        return [s * t(ps), d, v * t(cs)]
    return prep


for _stem, (_ps, _cs, _acc) in FP_MAC.items():
    for _form in ("vv", "vf"):
        isa(f"{_stem}.{_form}", "v" + _form[1] + "vm")(
            _mac_builder(_fmac_fn(_ps, _cs, _acc), _form, ("f", "f", "f"), 0, "f",
                         _fmac_prep(_ps, _cs, _acc)))


def _fwmac_fn(ps: float, cs: float) -> Callable:
    def fn(d: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
        return fpu.fma64(s.astype(np.float64) * ps, v.astype(np.float64), d * cs)
    return fn


for _stem, (_ps, _cs, _acc) in FP_MAC.items():
    if _acc:
        for _form in ("vv", "vf"):
            isa(f"vfw{_stem[2:]}.{_form}", "v" + _form[1] + "vm")(
                _mac_builder(_fwmac_fn(_ps, _cs), _form, ("f", "f", "f"), 1, "f",
                             _fmac_prep(_ps, _cs, True, wide=True)))


FP_WIDE_BIN: dict[str, Callable] = {
    "vfwadd": lambda a, b: fpu.canon(a.astype(np.float64) + b.astype(np.float64)),
    "vfwsub": lambda a, b: fpu.canon(a.astype(np.float64) - b.astype(np.float64)),
    "vfwmul": lambda a, b: fpu.canon(a.astype(np.float64) * b.astype(np.float64)),
}
def _sew32(st: State) -> None:
    if st.sew != 32:
        raise IllegalInstructionError("widening fp ops need SEW=32 (no Zvfh)")


for _stem, _fn in FP_WIDE_BIN.items():
    for _form in ("vv", "vf"):
        def _build_fw(c: Ctx, a: list, fn: Callable = _fn, form: str = _form,
                      stem: str = _stem) -> Op:
            vd, vs2, s1, masked = a
            srcs: list[Src] = [("v", vs2, 0, "f"), (form[1], s1, 0, "f")]
            return ew_op(c, vd, 1, "f", srcs, fn, masked, guard=_sew32,
                         directed=_directed(*FP_DIRECTED[stem], fn))
        isa(f"{_stem}.{_form}", "vv" + _form[1] + "m")(_build_fw)


FP_UNARY: dict[str, tuple[int, int, str, str, Callable]] = {
    # name -> (src width log2, dst width log2, src kind, dst kind, fn)
    "vfsqrt.v": (0, 0, "f", "f", lambda a: fpu.canon(np.sqrt(a))),
    "vfclass.v": (0, 0, "f", "u", fpu.fclass),
    "vfcvt.xu.f.v": (0, 0, "f", "u",
                     lambda a, rm="rne": fpu.f2i(a, a.dtype.itemsize * 8, False, rm)),
    "vfcvt.x.f.v": (0, 0, "f", "s",
                    lambda a, rm="rne": fpu.f2i(a, a.dtype.itemsize * 8, True, rm)),
    "vfcvt.rtz.xu.f.v": (0, 0, "f", "u",
                         lambda a: fpu.f2i(a, a.dtype.itemsize * 8, False, "rtz")),
    "vfcvt.rtz.x.f.v": (0, 0, "f", "s", lambda a: fpu.f2i(a, a.dtype.itemsize * 8, True, "rtz")),
    "vfcvt.f.xu.v": (0, 0, "u", "f", lambda a: a.astype(FTYPE[a.dtype.itemsize * 8])),
    "vfcvt.f.x.v": (0, 0, "s", "f", lambda a: a.astype(FTYPE[a.dtype.itemsize * 8])),
    "vfwcvt.f.f.v": (0, 1, "f", "f", lambda a: fpu.canon(a.astype(np.float64))),
    "vfwcvt.f.xu.v": (0, 1, "u", "f", lambda a: a.astype(FTYPE[a.dtype.itemsize * 16])),
    "vfwcvt.f.x.v": (0, 1, "s", "f", lambda a: a.astype(FTYPE[a.dtype.itemsize * 16])),
    "vfwcvt.xu.f.v": (0, 1, "f", "u", lambda a, rm="rne": fpu.f2i(a, 64, False, rm)),
    "vfwcvt.x.f.v": (0, 1, "f", "s", lambda a, rm="rne": fpu.f2i(a, 64, True, rm)),
    "vfwcvt.rtz.xu.f.v": (0, 1, "f", "u", lambda a: fpu.f2i(a, 64, False, "rtz")),
    "vfwcvt.rtz.x.f.v": (0, 1, "f", "s", lambda a: fpu.f2i(a, 64, True, "rtz")),
    "vfncvt.f.f.w": (1, 0, "f", "f", lambda a: fpu.canon(a.astype(np.float32))),
    "vfncvt.f.xu.w": (1, 0, "u", "f", lambda a: a.astype(FTYPE[a.dtype.itemsize * 4])),
    "vfncvt.f.x.w": (1, 0, "s", "f", lambda a: a.astype(FTYPE[a.dtype.itemsize * 4])),
    "vfncvt.xu.f.w": (1, 0, "f", "u",
                      lambda a, rm="rne": fpu.f2i(a, a.dtype.itemsize * 4, False, rm)),
    "vfncvt.x.f.w": (1, 0, "f", "s",
                     lambda a, rm="rne": fpu.f2i(a, a.dtype.itemsize * 4, True, rm)),
    "vfncvt.rtz.xu.f.w": (1, 0, "f", "u",
                          lambda a: fpu.f2i(a, a.dtype.itemsize * 4, False, "rtz")),
    "vfncvt.rtz.x.f.w": (1, 0, "f", "s",
                         lambda a: fpu.f2i(a, a.dtype.itemsize * 4, True, "rtz")),
    "vfneg.v": (0, 0, "f", "f", lambda a: _fsgnj("n")(a, a)),
    "vfabs.v": (0, 0, "f", "f", lambda a: _fsgnj("x")(a, a)),
    "vneg.v": (0, 0, "u", "u", lambda a: -a),
    "vnot.v": (0, 0, "u", "u", lambda a: ~a),
    "vncvt.x.x.w": (1, 0, "u", "u", lambda a: a.astype(UTYPE[a.dtype.itemsize * 4])),
    "vwcvt.x.x.v": (0, 1, "s", "s", lambda a: a.astype(np.int64)),
    "vwcvtu.x.x.v": (0, 1, "u", "u", lambda a: a.astype(np.uint64)),
}


DYN_TO_INT = {"vfcvt.xu.f.v", "vfcvt.x.f.v", "vfwcvt.xu.f.v", "vfwcvt.x.f.v", "vfncvt.xu.f.w",
              "vfncvt.x.f.w"}  # round with the dynamic frm
# conversions that round to a float: exact per-element recomputation under a directed frm
DIRECTED_CVT = {"vfcvt.f.xu.v": "icvt", "vfcvt.f.x.v": "icvt", "vfncvt.f.xu.w": "icvt",
                "vfncvt.f.x.w": "icvt", "vfncvt.f.f.w": "cvt", "vfsqrt.v": "sqrt"}


def _build_unary(name: str) -> Callable[[Ctx, list], Op]:
    swl, dwl, sk, dk, fn = FP_UNARY[name]

    def build(c: Ctx, a: list) -> Op:
        vd, vs2, masked = a
        srcs: list[Src] = [("v", vs2, swl, sk)]

        def guard(st: State) -> None:
            if (sk == "f" and width(st, swl) < 32) or (dk == "f" and width(st, dwl) < 32):
                raise IllegalInstructionError(f"{name} at SEW={st.sew} needs 16-bit floats "
                                              f"(Zvfh), which rvvsim does not model")

        def directed(st: State) -> Callable:
            if name in DYN_TO_INT:
                return functools.partial(fn, rm=fpu.FRM_NAMES[st.frm])
            if name in DIRECTED_CVT:
                return fpu.directed_vec(DIRECTED_CVT[name], _same, fn, fpu.FRM_NAMES[st.frm])
            return fn
        return ew_op(c, vd, dwl, dk, srcs, fn, masked, guard=guard, directed=directed)
    return build


for _name in FP_UNARY:
    isa(_name, "vvm")(_build_unary(_name))


# --- reductions --------------------------------------------------------------------------------

def _ordered_fsum(acc: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """acc + v0 + v1 + ... rounding after every add (qemu's element order). ``add.accumulate``
    is numpy's sequential running sum in the array dtype (unlike ``add.reduce``, which sums
    pairwise), so its last element is exactly the ordered sum."""
    run = np.add.accumulate(np.concatenate([acc[:1], vals.astype(acc.dtype)]), dtype=acc.dtype)
    return fpu.canon(run[-1:])


SUMS = {"vfredosum", "vfredusum", "vfwredosum", "vfwredusum"}


def _directed_fsum(acc: np.ndarray, vals: np.ndarray, mode: str) -> np.ndarray:
    """The ordered sum with every add rounded by a directed mode (element by element)."""
    s = acc[:1].copy()
    for v in vals.astype(acc.dtype):
        with np.errstate(all="ignore"):
            rne = fpu.canon(s + v)
        s = fpu.directed("add", [s, np.array([v])], mode, rne)
    return fpu.canon(s)


def _fred_max(acc: np.ndarray, vals: np.ndarray, is_max: bool) -> np.ndarray:
    """maximumNumber/minimumNumber over acc and vals: NaNs ignored, +0 > -0."""
    allv = np.concatenate([acc[:1], vals])
    ok = allv[~np.isnan(allv)]
    if ok.size == 0:
        return fpu.canon(np.array([np.nan], acc.dtype))
    m = ok.max() if is_max else ok.min()
    if m == 0:
        neg = np.signbit(ok[ok == 0])
        negative = neg.all() if is_max else neg.any()
        m = acc.dtype.type(-0.0 if negative else 0.0)
    return np.array([m], acc.dtype)


def _iredsum(acc: np.ndarray, vals: np.ndarray) -> np.ndarray:
    return np.array([acc[0] + vals.sum(dtype=acc.dtype)], acc.dtype)


REDUCE: dict[str, tuple[str, int, Callable[[np.ndarray, np.ndarray], np.ndarray]]] = {
    # stem -> (numeric kind, accumulator width log2, fn(acc[1], active elements))
    "vredsum": ("u", 0, _iredsum),
    "vredand": ("u", 0, lambda acc, v: np.array([np.bitwise_and.reduce(v, initial=acc[0])])),
    "vredor": ("u", 0, lambda acc, v: np.array([np.bitwise_or.reduce(v, initial=acc[0])])),
    "vredxor": ("u", 0, lambda acc, v: np.array([np.bitwise_xor.reduce(v, initial=acc[0])])),
    "vredmax": ("s", 0, lambda acc, v: np.array([max(acc[0], v.max(initial=acc[0]))])),
    "vredmin": ("s", 0, lambda acc, v: np.array([min(acc[0], v.min(initial=acc[0]))])),
    "vredmaxu": ("u", 0, lambda acc, v: np.array([v.max(initial=acc[0])])),
    "vredminu": ("u", 0, lambda acc, v: np.array([v.min(initial=acc[0])])),
    "vwredsum": ("s", 1, lambda acc, v: np.array([acc[0] + v.astype(np.int64).sum()])),
    "vwredsumu": ("u", 1, lambda acc, v: np.array([acc[0] + v.astype(np.uint64).sum()])),
    "vfredosum": ("f", 0, _ordered_fsum),
    "vfredusum": ("f", 0, _ordered_fsum),
    "vfredmax": ("f", 0, lambda acc, v: _fred_max(acc, v, True)),
    "vfredmin": ("f", 0, lambda acc, v: _fred_max(acc, v, False)),
    "vfwredosum": ("f", 1, lambda acc, v: _ordered_fsum(acc, v.astype(np.float64))),
    "vfwredusum": ("f", 1, lambda acc, v: _ordered_fsum(acc, v.astype(np.float64))),
}


def _build_reduce(stem: str) -> Callable[[Ctx, list], Op]:
    kind, awl, fn = REDUCE[stem]

    def build(c: Ctx, a: list) -> Op:
        vd, vs2, vs1, masked = a
        me, nxt = describe(c), c.nxt

        def op(st: State) -> int:
            vl = ready(st)
            if vl == 0:
                return nxt
            eew = width(st, 0)
            aeew = width(st, awl)
            vals, pois = vget(st, vs2, eew, vl, kind)
            elems = None
            if masked:
                m, mp = mask_bits(st, 0, vl)
                raise_poison(st, mp, 0, 1, "mask v0")
                elems = np.nonzero(m)[0]
                vals, pois = vals[m], pois[m]
            raise_poison(st, pois, vs2, eew, "reduced operand vs2", elems)
            base = vs1 * st.vlenb
            u = UTYPE[aeew]
            raise_poison(st, st.P[base:base + aeew // 8].view(u)[:1] != 0, vs1, aeew,
                         "scalar operand vs1[0]")
            acc = st.V[base:base + aeew // 8].view(KIND_T[kind][aeew])[:1].copy()
            f = fn
            if st.frm and stem in SUMS:  # each add rounded with the directed mode (slow path)
                f = functools.partial(_directed_fsum, mode=fpu.FRM_NAMES[st.frm])
            with np.errstate(all="ignore"):
                res = np.asarray(f(acc, vals)).astype(acc.dtype)
            saved_vl, saved_lmul, saved_sew = st.vl, st.lmul, st.sew
            st.vl, st.lmul, st.sew = 1, 0, aeew  # vd is one register, element 0
            try:
                vwrite(st, me, vd, aeew, res.view(u), None, None, None)
            finally:
                st.vl, st.lmul, st.sew = saved_vl, saved_lmul, saved_sew
            return nxt
        return op
    return build


for _stem in REDUCE:
    isa(f"{_stem}.vs", "vvvm")(_build_reduce(_stem))
isa("vfredsum.vs", "vvvm")(_build_reduce("vfredusum"))  # pre-1.0 spelling GNU as still takes
isa("vfwredsum.vs", "vvvm")(_build_reduce("vfwredusum"))


# --- permutations ------------------------------------------------------------------------------



def _build_slide(kind: str, form: str) -> Callable[[Ctx, list], Op]:
    """vslideup/vslidedown (.vx/.vi) and vslide1up/vslide1down/vfslide1up/vfslide1down."""
    def build(c: Ctx, a: list) -> Op:
        vd, vs2, s1, masked = a
        me, nxt = describe(c), c.nxt
        if form == "vi" and not 0 <= s1 < 32:
            raise AsmSyntaxError(f"{c.program.source}:{c.instr.line}: slide amount must be 0..31 "
                                 f"in `{c.instr.text}`")

        def op(st: State) -> int:
            vl = ready(st)
            if vl == 0:
                return nxt
            sew, vmax = st.sew, vlmax(st)
            if kind in ("up", "1up"):
                no_overlap(st, "slide up", vd, sew, [(vs2, sew)])
            u = UTYPE[sew]
            src, spois = vget(st, vs2, sew, vmax, "u")
            src, spois = src.copy(), spois.copy()
            sorg = elem_org(st, vs2, sew, vmax) if spois.any() else np.zeros(vmax, np.int32)
            old, opois = vget(st, vd, sew, vl, "u")
            oorg = elem_org(st, vd, sew, vl) if opois.any() else np.zeros(vl, np.int32)
            res = np.empty(vl, u)
            pois = np.zeros(vl, bool)
            org = np.zeros(vl, np.int32)
            idx = np.arange(vl)
            if kind in ("up", "down"):
                off = (st.x[s1] & ((1 << 64) - 1)) if form == "vx" else s1
                if kind == "up":
                    keep = idx < off  # elements below OFFSET are not written
                    j = np.maximum(idx - min(off, vl), 0)
                    res = np.where(keep, old, src[j])
                    pois = np.where(keep, opois, spois[j])
                    org = np.where(keep, oorg, sorg[j])
                else:
                    j = idx + off if off < vmax else np.full(vl, vmax)
                    inside = j < vmax
                    jj = np.minimum(j, vmax - 1)
                    res = np.where(inside, src[jj], u(0))
                    pois = np.where(inside, spois[jj], False)
                    org = sorg[jj]
            else:
                scal = xscalar(st.x[s1], sew, "u") if form == "vx" else \
                    fscalar(st, s1, sew).view(u)
                if kind == "1up":
                    res[1:], pois[1:], org[1:] = src[:vl - 1], spois[:vl - 1], sorg[:vl - 1]
                    res[0], pois[0] = scal[0], False
                else:
                    res[:vl - 1], pois[:vl - 1], org[:vl - 1] = src[1:vl], spois[1:vl], \
                        sorg[1:vl]
                    res[vl - 1], pois[vl - 1] = scal[0], False
            mask = mask_bits(st, 0, vl) if masked else None
            vwrite(st, me, vd, sew, res, pois if pois.any() else None, mask, org)
            return nxt
        return op
    return build


isa("vslideup.vx", "vvxm")(_build_slide("up", "vx"))
isa("vslideup.vi", "vvim")(_build_slide("up", "vi"))
isa("vslidedown.vx", "vvxm")(_build_slide("down", "vx"))
isa("vslidedown.vi", "vvim")(_build_slide("down", "vi"))
isa("vslide1up.vx", "vvxm")(_build_slide("1up", "vx"))
isa("vslide1down.vx", "vvxm")(_build_slide("1down", "vx"))
isa("vfslide1up.vf", "vvfm")(_build_slide("1up", "vf"))
isa("vfslide1down.vf", "vvfm")(_build_slide("1down", "vf"))


def _build_gather(form: str, ei16: bool = False) -> Callable[[Ctx, list], Op]:
    def build(c: Ctx, a: list) -> Op:
        vd, vs2, s1, masked = a
        me, nxt = describe(c), c.nxt

        def op(st: State) -> int:
            vl = ready(st)
            if vl == 0:
                return nxt
            sew, vmax = st.sew, vlmax(st)
            no_overlap(st, "vrgather", vd, sew, [(vs2, sew)] + (
                [(s1, 16 if ei16 else sew)] if form == "vv" else []))
            src, spois = vget(st, vs2, sew, vmax, "u")
            ipois = iorg = None
            if form == "vv":
                ieew = 16 if ei16 else sew
                iv, ip = vget(st, s1, ieew, vl, "u")
                idx = iv.astype(np.uint64)
                if ip.any():
                    ipois, iorg = ip, elem_org(st, s1, ieew, vl)
            else:
                v = (st.x[s1] & ((1 << 64) - 1)) if form == "vx" else s1
                idx = np.full(vl, v, np.uint64)
            inside = idx < np.uint64(vmax)
            j = np.where(inside, idx, 0).astype(np.int64)
            res = np.where(inside, src[j], UTYPE[sew](0))
            gp = np.where(inside, spois[j], False)
            gorg = elem_org(st, vs2, sew, vmax)[j] if gp.any() else None
            origin = merge_org(ipois, iorg, gp, gorg)
            pois = por(ipois, gp)
            mask = mask_bits(st, 0, vl) if masked else None
            vwrite(st, me, vd, sew, res, pois if pois.any() else None, mask, origin)
            return nxt
        return op
    return build


isa("vrgather.vv", "vvvm")(_build_gather("vv"))
isa("vrgatherei16.vv", "vvvm")(_build_gather("vv", ei16=True))
isa("vrgather.vx", "vvxm")(_build_gather("vx"))
isa("vrgather.vi", "vvim")(_build_gather("vi"))


@isa("vcompress.vm", "vvv")
def _b_vcompress(c: Ctx, a: list) -> Op:
    vd, vs2, vs1 = a
    me, nxt = describe(c), c.nxt

    def op(st: State) -> int:
        vl = ready(st)
        if vl == 0:
            return nxt
        sew = st.sew
        no_overlap(st, "vcompress", vd, sew, [(vs2, sew), (vs1, 1)])
        bits, mp = mask_bits(st, vs1, vl)
        raise_poison(st, mp, vs1, 1, "selector mask vs1")
        src, spois = vget(st, vs2, sew, vl, "u")
        packed, ppois = src[bits].copy(), spois[bits].copy()
        porg = elem_org(st, vs2, sew, vl)[bits] if ppois.any() else None
        saved = st.vl
        st.vl = packed.size  # elements past the packed count are tail
        try:
            vwrite(st, me, vd, sew, packed, ppois if ppois.any() else None, None, porg)
        finally:
            st.vl = saved
        return nxt
    return op
