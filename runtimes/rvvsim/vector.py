"""RVV 1.0 semantics: every instruction is a handful of numpy operations over its whole vl.

Register groups are views of the byte register file (``State.V``) reinterpreted at the element
width; the parallel ``State.P`` bytes mark *undefined* bits (poison): tail-agnostic and
mask-agnostic elements are written as all ones, as qemu does with ``rvv_ta_all_1s`` /
``rvv_ma_all_1s``, and poisoned at the same time. Poison flows from an active source element
into the result element; it raises ``TailRelianceError`` only when it becomes observable:
a store, a move to a scalar register, a reduction, a mask population count.

Tables, not chains: integer/fp binary ops, compares, fused multiply-adds, widening ops and
conversions are each one dict from mnemonic stem to a numpy function; a handful of engines
(``_elementwise``, ``_compare``, ``_reduce``) turn a table row into a closure.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from portc.runtimes.rvvsim import fpu
from portc.runtimes.rvvsim.core import Ctx, Op, State, isa, sext
from portc.runtimes.rvvsim.errors import (
    AsmSyntaxError,
    IllegalInstructionError,
    TailRelianceError,
)
from portc.runtimes.rvvsim.fpu import FTYPE, STYPE, UTYPE
from portc.runtimes.rvvsim.scalar import get_d, get_s, put_f

LOG2 = {8: 3, 16: 4, 32: 5, 64: 6}
ONES = {w: UTYPE[w](np.iinfo(UTYPE[w]).max) for w in UTYPE}
KIND_T = {"u": UTYPE, "s": STYPE, "f": FTYPE}
LMUL_NAMES = {"mf8": -3, "mf4": -2, "mf2": -1, "m1": 0, "m2": 1, "m4": 2, "m8": 3}
SEW_NAMES = {"e8": 8, "e16": 16, "e32": 32, "e64": 64}
ELEN = 64


def _lmul_str(lg: int) -> str:
    return f"m{1 << lg}" if lg >= 0 else f"mf{1 << -lg}"


# --- register-group access ---------------------------------------------------------------------

def ready(st: State) -> int:
    if st.vill:
        raise IllegalInstructionError("vector instruction executed while vtype.vill is set "
                                      "(no valid vsetvli/vsetivli before it)")
    return st.vl


def rne_only(st: State) -> None:
    """Rounding fp arithmetic is modelled for frm = rne (what portc emits and qemu defaults to)."""
    if st.frm:
        raise IllegalInstructionError(f"fp arithmetic under dynamic rounding mode "
                                      f"{fpu.FRM_NAMES[st.frm]} is not modelled (only rne; "
                                      f"float->int conversions honour every mode)")


def width(st: State, wl: int) -> int:
    eew = st.sew << wl if wl >= 0 else st.sew >> -wl
    if eew not in LOG2:
        raise IllegalInstructionError(f"element width {eew} bits is not supported at SEW={st.sew} "
                                      f"(ELEN={ELEN}, widening needs SEW<=32)")
    return eew


def span(st: State, reg: int, eew: int) -> tuple[int, int]:
    """Byte range of the register group of ``reg`` at element width ``eew`` (EMUL checked)."""
    el = st.lmul + LOG2[eew] - LOG2[st.sew]
    if not -3 <= el <= 3:
        raise IllegalInstructionError(f"EEW={eew} at SEW={st.sew}, LMUL={_lmul_str(st.lmul)} "
                                      f"gives EMUL={_lmul_str(el) if -6 < el < 6 else el}, "
                                      f"outside 1/8..8")
    n = 1 << el if el > 0 else 1
    if reg % n or reg + n > 32:
        raise IllegalInstructionError(f"v{reg} cannot start a group of {n} registers "
                                      f"(EMUL={_lmul_str(el)}): the register number must be a "
                                      f"multiple of {n}")
    a = reg * st.vlenb
    return a, a + n * st.vlenb


def _nregs(st: State, eew: int) -> tuple[int, int]:
    el = st.lmul + LOG2[eew] - LOG2[st.sew]
    return el, (1 << el if el > 0 else 1)


def check_overlap(st: State, vd: int, deew: int, srcs: list[tuple[int, int]]) -> None:
    """RVV 1.0 section 5.2: where a destination group may overlap a source group of another EEW
    (qemu traps on the rest). ``deew`` 1 means a mask destination."""
    dn = 1 if deew == 1 else _nregs(st, deew)[1]
    for reg, seew in srcs:
        sel, sn = _nregs(st, seew)
        if vd >= reg + sn or reg >= vd + dn or seew == deew:
            continue
        if deew < seew and vd == reg:
            continue  # narrower destination in the lowest-numbered part of the source
        if deew > seew and sel >= 0 and reg + sn == vd + dn:
            continue  # wider destination; source EMUL >= 1 in its highest-numbered part
        raise IllegalInstructionError(
            f"destination v{vd} (EEW={deew}) overlaps source group v{reg}..v{reg + sn - 1} "
            f"(EEW={seew}) in a way RVV 1.0 forbids (section 5.2)")


def no_overlap(st: State, what: str, vd: int, deew: int, srcs: list[tuple[int, int]]) -> None:
    """Instructions whose destination may not overlap a source at all (slideup, gather, ...)."""
    dn = 1 if deew == 1 else _nregs(st, deew)[1]
    for reg, seew in srcs:
        sn = 1 if seew == 1 else _nregs(st, seew)[1]
        if vd < reg + sn and reg < vd + dn:
            raise IllegalInstructionError(f"{what}: destination v{vd} must not overlap source "
                                          f"v{reg}")


def vget(st: State, reg: int, eew: int, n: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """First ``n`` elements of a group as numeric ``kind`` and their poison flags."""
    a, b = span(st, reg, eew)
    u = UTYPE[eew]
    vals = st.V[a:b].view(u)[:n]
    pois = st.P[a:b].view(u)[:n] != 0
    return (vals if kind == "u" else vals.view(KIND_T[kind][eew])), pois


def mask_bits(st: State, reg: int, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Mask bits 0..n-1 of ``reg`` (bool) and their poison (None when clean)."""
    a = reg * st.vlenb
    bits = np.unpackbits(st.V[a:a + st.vlenb], bitorder="little")[:n].view(bool)
    pb = np.unpackbits(st.P[a:a + st.vlenb], bitorder="little")[:n].view(bool)
    return bits, (pb if pb.any() else None)


def _or(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    if a is None:
        return b
    return a if b is None else a | b


def elem_org(st: State, reg: int, eew: int, n: int) -> np.ndarray:
    """Origin ids of the first ``n`` elements (any undefined byte of an element counts)."""
    a, b = span(st, reg, eew)
    return st.O[a:b].reshape(-1, eew // 8)[:n].max(axis=1)


def mask_org(st: State, reg: int, n: int) -> np.ndarray:
    a = reg * st.vlenb
    return np.repeat(st.O[a:a + st.vlenb], 8)[:n]


def _merge_org(pa: np.ndarray | None, oa: np.ndarray | None, pb: np.ndarray | None,
               ob: np.ndarray | None) -> np.ndarray | None:
    """Origin of a result poisoned by a or b: a's where a is poisoned, else b's."""
    if pa is None:
        return ob
    if pb is None:
        return oa
    return np.where(pa, oa, ob)


def vwrite(st: State, me: str, vd: int, eew: int, res: np.ndarray, pois: np.ndarray | None,
           mask: tuple[np.ndarray, np.ndarray | None] | None,
           origin: np.ndarray | None) -> None:
    """Write the body [0, vl) with mask policy, then the tail with tail policy; track poison.
    ``pois``/``origin``: which result elements are undefined and which event caused it."""
    vl = st.vl
    a, b = span(st, vd, eew)
    u, ones = UTYPE[eew], ONES[eew]
    d = st.V[a:b].view(u)
    p = st.P[a:b].view(u)
    if mask is not None:
        if vd == 0:
            raise IllegalInstructionError("the destination of a masked instruction overlaps the "
                                          "mask register v0")
        active, mp = mask
        if mp is not None:
            origin = _merge_org(pois, origin, mp, mask_org(st, 0, vl))
            pois = _or(pois, mp)
        if st.vma:
            res = np.where(active, res, ones)
            inactive = ~active
            if inactive.any():
                mid = st.origin_id(f"{me}: masked-off elements (mask agnostic)")
                origin = np.where(inactive, mid, origin if origin is not None else 0)
                pois = _or(pois, inactive)
        else:
            res = np.where(active, res, d[:vl])
            old = p[:vl] != 0
            if old.any() or pois is not None:
                oorg = elem_org(st, vd, eew, vl)
                origin = np.where(active, origin if origin is not None else 0, oorg)
                pois = np.where(active, pois if pois is not None else False, old)
    d[:vl] = res
    r0, r1 = vd, vd + (b - a) // st.vlenb
    poisoned = pois is not None and bool(pois.any())
    if not poisoned:
        if any(st.dirty[r0:r1]):
            p[:vl] = 0
    else:
        p[:vl] = np.where(pois, ones, u(0))
        st.O[a:b].reshape(-1, eew // 8)[:vl][pois] = origin[pois][:, None]
    if vl < d.size:
        if st.vta:
            d[vl:] = ones
            p[vl:] = ones
            st.O[a:b].reshape(-1, eew // 8)[vl:] = st.origin_id(
                f"{me}: tail elements {vl}.. (tail agnostic, vl={vl})")
            poisoned = True
        elif poisoned:
            pass
        else:
            return  # tail undisturbed: the registers keep whatever flag they had
    st.dirty[r0:r1] = [poisoned] * (r1 - r0)


def mwrite(st: State, me: str, vd: int, bits: np.ndarray, pois: np.ndarray | None,
           mask: tuple[np.ndarray, np.ndarray | None] | None,
           origin: np.ndarray | None) -> None:
    """Write mask bits [0, vl); the rest of the register is tail (always agnostic)."""
    vl, vlenb = st.vl, st.vlenb
    a = vd * vlenb
    full = np.unpackbits(st.V[a:a + vlenb], bitorder="little").view(bool)
    fullp = np.unpackbits(st.P[a:a + vlenb], bitorder="little").view(bool)
    if mask is not None:
        active, mp = mask
        if mp is not None:
            origin = _merge_org(pois, origin, mp, mask_org(st, 0, vl))
            pois = _or(pois, mp)
        if st.vma:
            bits = bits | ~active
            if not active.all():
                mid = st.origin_id(f"{me}: masked-off mask bits (mask agnostic)")
                origin = np.where(~active, mid, origin if origin is not None else 0)
                pois = _or(pois, ~active)
        else:
            bits = np.where(active, bits, full[:vl])
            if fullp[:vl].any() or pois is not None:
                origin = np.where(active, origin if origin is not None else 0,
                                  mask_org(st, vd, vl))
                pois = np.where(active, pois if pois is not None else False, fullp[:vl])
    borg = np.zeros(st.vlen, np.int32)
    full[:vl] = bits
    fullp[:vl] = False if pois is None else pois
    if pois is not None:
        borg[:vl] = np.where(pois, origin, 0)
    if vl < st.vlen:
        full[vl:] = True
        fullp[vl:] = True
        borg[vl:] = st.origin_id(f"{me}: mask tail bits {vl}.. (always agnostic)")
    st.V[a:a + vlenb] = np.packbits(full, bitorder="little")
    st.P[a:a + vlenb] = np.packbits(fullp, bitorder="little")
    st.dirty[vd] = True if vl < st.vlen else bool(fullp.any())
    st.O[a:a + vlenb] = borg.reshape(vlenb, 8).max(axis=1)


def raise_poison(st: State, pois: np.ndarray | None, reg: int, bits: int, what: str,
                 elems: np.ndarray | None = None) -> None:
    """Raise ``TailRelianceError`` at the first poisoned element (if any); ``bits`` is the
    element width (1 for mask bits) to find the bytes that hold it, ``elems`` maps
    positions of ``pois`` back to element indices when it was filtered."""
    if pois is None or not pois.any():
        return
    pos = int(np.argmax(pois))
    k = int(elems[pos]) if elems is not None else pos
    byte = reg * st.vlenb + k * bits // 8
    oid = int(st.O[byte:byte + max(1, bits // 8)].max())
    origin = st.origins[oid] if 0 < oid < len(st.origins) else ""
    src = f"; it was left undefined by {origin}" if origin else ""
    raise TailRelianceError(f"{what}: element {k} (register v{min(31, byte // st.vlenb)}) is "
                            f"undefined{src}. Code must not rely on tail or masked-off "
                            f"(agnostic) element values", element=k)


# --- scalar operands ---------------------------------------------------------------------------

def xscalar(v: int, eew: int, kind: str) -> np.ndarray:
    arr = np.array([v & ((1 << eew) - 1)], UTYPE[eew])
    return arr if kind == "u" else arr.view(KIND_T[kind][eew])


def fscalar(st: State, r: int, eew: int) -> np.ndarray:
    if eew == 32:
        return get_s(st, r)
    if eew == 64:
        return get_d(st, r)
    raise IllegalInstructionError(f"floating-point SEW={eew} is not supported (no Zvfh)")


Src = tuple[str, int, int, str]  # (operand kind v/x/f/i, reg or imm, width log2 vs SEW, numeric)


def _fetch(st: State, s: Src, vl: int) -> tuple[np.ndarray, np.ndarray | None,
                                                 np.ndarray | None]:
    """Operand values plus, when any is undefined, the poison flags and their origins."""
    kind, val, wl, nk = s
    eew = width(st, wl)
    if kind == "v":
        a, b = span(st, val, eew)
        u = UTYPE[eew]
        vals = st.V[a:b].view(u)[:vl]
        if nk != "u":
            vals = vals.view(KIND_T[nk][eew])
        # common case: the group is known clean, or its active bytes are
        if not any(st.dirty[val:val + (b - a) // st.vlenb]) or \
                not st.P[a:a + vl * (eew >> 3)].any():
            return vals, None, None
        return vals, st.P[a:b].view(u)[:vl] != 0, elem_org(st, val, eew, vl)
    if kind == "x":
        return xscalar(st.x[val], eew, nk), None, None
    if kind == "i":
        return xscalar(val, eew, nk), None, None
    return fscalar(st, val, eew), None, None


USE_PLANS = True  # False forces the generic path (debugging the cached one)


class _Plan:
    """Views an unmasked element-wise instruction needs at one (SEW, LMUL, vl, vta): built on
    first use, reused while vtype/vl stay put (the usual strip-mined loop body)."""

    __slots__ = ("args", "scalars", "src_regs", "dst_regs", "d", "p", "tail", "tail_id", "t",
                 "u")


def _plan(st: State, me: str, vd: int, dwl: int, dkind: str, srcs: list[Src]) -> _Plan:
    vl = st.vl
    pl = _Plan()
    pl.args, pl.scalars, pl.src_regs = [], [], []
    for i, (kind, val, wl, nk) in enumerate(srcs):
        eew = width(st, wl)
        if kind == "v":
            a, b = span(st, val, eew)
            v = st.V[a:b].view(UTYPE[eew])[:vl]
            pl.args.append(v if nk == "u" else v.view(KIND_T[nk][eew]))
            pl.src_regs.append((val, val + (b - a) // st.vlenb, a, vl * (eew >> 3)))
        elif kind == "i":
            pl.args.append(xscalar(val, eew, nk))
        else:
            pl.args.append(None)
            pl.scalars.append((i, kind, val, eew, nk))
    deew = width(st, dwl)
    wide = [(s[1], width(st, s[2])) for s in srcs if s[0] == "v" and s[2] != dwl]
    if wide:
        check_overlap(st, vd, deew, wide)
    a, b = span(st, vd, deew)
    pl.u = UTYPE[deew]
    pl.t = KIND_T[dkind][deew]
    d = st.V[a:b].view(pl.u)
    p = st.P[a:b].view(pl.u)
    pl.d, pl.p = d[:vl], p[:vl]
    pl.dst_regs = (vd, vd + (b - a) // st.vlenb)
    pl.tail = None
    if st.vta and vl < d.size:
        pl.tail = (d[vl:], p[vl:], st.O[a:b].reshape(-1, deew // 8)[vl:], ONES[deew])
        pl.tail_id = st.origin_id(f"{me}: tail elements {vl}.. (tail agnostic, vl={vl})")
    return pl


def elementwise(st: State, me: str, vd: int, dwl: int, dkind: str, srcs: list[Src],
                fn: Callable[..., np.ndarray], masked: bool, sel: bool = False) -> None:
    """The engine of every element-wise instruction: fetch, compute once, write with policies."""
    vl = ready(st)
    if vl == 0:
        return
    if USE_PLANS and not masked and not sel:
        key = (id(srcs), vd, st.sew, st.lmul, vl, st.vta)
        pl = st.plans.get(key)
        if pl is None:
            pl = st.plans[key] = _plan(st, me, vd, dwl, dkind, srcs)
        dirty = st.dirty
        if not any(any(dirty[r0:r1]) and st.P[a:a + nb].any() for r0, r1, a, nb in pl.src_regs):
            args = pl.args
            if pl.scalars:
                args = list(args)
                for i, kind, val, eew, nk in pl.scalars:
                    args[i] = xscalar(st.x[val], eew, nk) if kind == "x" else \
                        fscalar(st, val, eew)
            res = np.asarray(fn(*args))
            if res.dtype != pl.t:
                res = res.astype(pl.t)
            pl.d[:] = res.view(pl.u)
            r0, r1 = pl.dst_regs
            if any(dirty[r0:r1]):
                pl.p[:] = 0
            if pl.tail is not None:
                td, tp, to, ones = pl.tail
                td[:] = ones
                tp[:] = ones
                to[:] = pl.tail_id
                dirty[r0:r1] = [True] * (r1 - r0)
            elif pl.p.size * pl.p.itemsize == (r1 - r0) * st.vlenb:
                dirty[r0:r1] = [False] * (r1 - r0)
            return
    args: list[np.ndarray] = []
    pois = origin = None
    if sel:  # vmerge/vfmerge: v0 selects, it does not mask
        bits, pois = mask_bits(st, 0, vl)
        args.append(bits)
        origin = mask_org(st, 0, vl) if pois is not None else None
    for s in srcs:
        v, p, o = _fetch(st, s, vl)
        args.append(v)
        if p is not None:
            origin, pois = _merge_org(pois, origin, p, o), _or(pois, p)
    deew = width(st, dwl)
    wide = [(s[1], width(st, s[2])) for s in srcs if s[0] == "v" and s[2] != dwl]
    if wide:
        check_overlap(st, vd, deew, wide)
    res = np.asarray(fn(*args))  # fp exceptions are silenced by RvvMachine.call
    t = KIND_T[dkind][deew]
    if res.dtype != t:
        res = res.astype(t)
    mask = mask_bits(st, 0, vl) if masked else None
    vwrite(st, me, vd, deew, res.view(UTYPE[deew]), pois, mask, origin)


def compare(st: State, me: str, vd: int, srcs: list[Src], fn: Callable[..., np.ndarray],
            masked: bool) -> None:
    vl = ready(st)
    if vl == 0:
        return
    check_overlap(st, vd, 1, [(s[1], width(st, s[2])) for s in srcs if s[0] == "v"])
    args, pois, origin = [], None, None
    for s in srcs:
        v, p, o = _fetch(st, s, vl)
        args.append(v)
        if p is not None:
            origin, pois = _merge_org(pois, origin, p, o), _or(pois, p)
    bits = np.asarray(fn(*args), bool)
    if bits.shape != (vl,):
        bits = np.full(vl, bits.reshape(-1)[0])
    mwrite(st, me, vd, bits, pois, mask_bits(st, 0, vl) if masked else None, origin)


def _me(c: Ctx) -> str:
    return f"line {c.instr.line} `{c.instr.text}`"


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
        st.vill, st.vl = True, 0
    else:
        vlmax = (st.vlen << lmul >> LOG2[sew]) if lmul >= 0 else (st.vlen >> -lmul >> LOG2[sew])
        st.vill, st.sew, st.lmul, st.vta, st.vma = False, sew, lmul, ta, ma
        if avl is None:  # rs1 = x0, rd = x0: keep vl
            st.vl = min(st.vl, vlmax)
        else:
            st.vl = min(avl, vlmax)
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
    return op


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
    return op


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


def _ident(x: np.ndarray) -> np.ndarray:
    return x


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
                me, nxt, dk = _me(c), c.nxt, dkind_of(kind)
                if stem in ("vxor", "vsub") and form == "vv" and vs2 == s1:
                    # the zeroing idiom: the result is 0 whatever (even undefined) the source
                    srcs, fn = [("i", 0, 0, kind)], _ident

                def op(st: State) -> int:
                    if rounds and st.frm and not stem.startswith("vfsgnj"):
                        rne_only(st)
                    elementwise(st, me, vd, 0, dk, srcs, fn, masked)
                    return nxt
                return op
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
                 dkind: str, rounds: bool = False) -> Callable[[Ctx, list], Op]:
    def build(c: Ctx, a: list) -> Op:
        vd, s1, vs2, masked = a
        srcs: list[Src] = [("v", vd, dwl, kinds[0])]
        srcs.append(("v", s1, 0, kinds[1]) if form[1] == "v" else
                    (form[1], s1, 0, kinds[1]))
        srcs.append(("v", vs2, 0, kinds[2]))
        me, nxt = _me(c), c.nxt

        def op(st: State) -> int:
            if rounds and st.frm:
                rne_only(st)
            elementwise(st, me, vd, dwl, dkind, srcs, fn, masked)
            return nxt
        return op
    return build


for _stem, _fn in INT_MAC.items():
    for _form in ("vv", "vx"):
        isa(f"{_stem}.{_form}", "v" + _form[1] + "vm")(
            _mac_builder(_fn, _form, ("u", "u", "u"), 0, "u"))


# widening integer: dest 2*SEW
def _wide(kind: str) -> Callable[[np.ndarray], np.ndarray]:
    return (lambda a: a.astype(np.int64)) if kind == "s" else (lambda a: a.astype(np.uint64))


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
            me, nxt = _me(c), c.nxt

            def op(st: State) -> int:
                elementwise(st, me, vd, 1, "u", srcs, fn, masked)
                return nxt
            return op
        isa(f"{_stem}.{_form}", "vv" + _form[1] + "m")(_build_w)
    # .wv / .wx: vs2 is already 2*SEW
    if _stem in ("vwadd", "vwaddu", "vwsub", "vwsubu"):
        for _form in ("wv", "wx"):
            def _build_ww(c: Ctx, a: list, k2: str = _k2, k1: str = _k1, fn: Callable = _fn,
                          form: str = _form) -> Op:
                vd, vs2, s1, masked = a
                srcs: list[Src] = [("v", vs2, 1, k2), (form[1], s1, 0, k1)]
                me, nxt = _me(c), c.nxt

                def op(st: State) -> int:
                    elementwise(st, me, vd, 1, "u", srcs, fn, masked)
                    return nxt
                return op
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
            fn, me, nxt = _nshift(signed), _me(c), c.nxt

            def op(st: State) -> int:
                elementwise(st, me, vd, 0, "u", srcs, lambda x, y: fn(x, y).view(
                    UTYPE[x.dtype.itemsize * 8]).astype(UTYPE[x.dtype.itemsize * 4]), masked)
                return nxt
            return op
        isa(f"{_stem}.{_form}", "vv" + {"wv": "v", "wx": "x", "wi": "i"}[_form] + "m")(_build_n)


# zero/sign extension
for _sign, _kind in (("vzext", "u"), ("vsext", "s")):
    for _f, _wl in (("vf2", -1), ("vf4", -2), ("vf8", -3)):
        def _build_ext(c: Ctx, a: list, kind: str = _kind, wl: int = _wl) -> Op:
            vd, vs2, masked = a
            srcs: list[Src] = [("v", vs2, wl, kind)]
            me, nxt = _me(c), c.nxt

            def op(st: State) -> int:
                elementwise(st, me, vd, 0, kind, srcs, lambda x: x, masked)
                return nxt
            return op
        isa(f"{_sign}.{_f}", "vvm")(_build_ext)


# --- moves and merges --------------------------------------------------------------------------

def _build_mv(form: str) -> Callable[[Ctx, list], Op]:
    def build(c: Ctx, a: list) -> Op:
        vd, s = a
        src: Src = ("v", s, 0, "u") if form == "v" else _scalar_src(
            c, {"x": "vx", "i": "vi", "f": "vf"}[form], s, 0, "u", "vmv")
        me, nxt, dk = _me(c), c.nxt, "f" if form == "f" else "u"

        def op(st: State) -> int:
            elementwise(st, me, vd, 0, dk, [src], _ident, False)
            return nxt
        return op
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
        me, nxt = _me(c), c.nxt

        def fn(sel: np.ndarray, a2: np.ndarray, b1: np.ndarray) -> np.ndarray:
            return np.where(sel, b1, a2)

        def op(st: State) -> int:
            elementwise(st, me, vd, 0, nk, srcs, fn, False, sel=True)
            return nxt
        return op
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
        me, nxt = _me(c), c.nxt

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
            st.dirty[vd:vd + n] = st.dirty[vs2:vs2 + n]
            st.O[vd * b:(vd + n) * b] = st.O[vs2 * b:(vs2 + n) * b]
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
        me, nxt = _me(c), c.nxt

        def op(st: State) -> int:
            compare(st, me, vd, srcs, fn, masked)
            return nxt
        return op
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
        me, nxt = _me(c), c.nxt
        constant = vs1 == vs2 and stem in CONST_IF_SAME

        def op(st: State) -> int:
            vl = ready(st)
            if vl == 0:
                return nxt
            a2, p2 = mask_bits(st, vs2, vl)
            a1, p1 = mask_bits(st, vs1, vl)
            if constant:
                p1 = p2 = None
            origin = _merge_org(p2, None if p2 is None else mask_org(st, vs2, vl),
                                p1, None if p1 is None else mask_org(st, vs1, vl))
            mwrite(st, me, vd, fn(a2, a1), _or(p2, p1), None, origin)
            return nxt
        return op
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
    me, nxt = _me(c), c.nxt

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
    me, nxt = _me(c), c.nxt

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
        me, nxt = _me(c), c.nxt

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
    me, nxt = _me(c), c.nxt

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
    me, nxt = _me(c), c.nxt

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
        if acc_vd:  # vd = ±(s*v) ± vd
            return fpu.fma(s * t(ps), v, d * t(cs))
        return fpu.fma(s * t(ps), d, v * t(cs))  # vd = ±(s*vd) ± vs2
    return fn


for _stem, (_ps, _cs, _acc) in FP_MAC.items():
    for _form in ("vv", "vf"):
        isa(f"{_stem}.{_form}", "v" + _form[1] + "vm")(
            _mac_builder(_fmac_fn(_ps, _cs, _acc), _form, ("f", "f", "f"), 0, "f", True))


def _fwmac_fn(ps: float, cs: float) -> Callable:
    def fn(d: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
        return fpu.fma64(s.astype(np.float64) * ps, v.astype(np.float64), d * cs)
    return fn


for _stem, (_ps, _cs, _acc) in FP_MAC.items():
    if _acc:
        for _form in ("vv", "vf"):
            isa(f"vfw{_stem[2:]}.{_form}", "v" + _form[1] + "vm")(
                _mac_builder(_fwmac_fn(_ps, _cs), _form, ("f", "f", "f"), 1, "f", True))


FP_WIDE_BIN: dict[str, Callable] = {
    "vfwadd": lambda a, b: fpu.canon(a.astype(np.float64) + b.astype(np.float64)),
    "vfwsub": lambda a, b: fpu.canon(a.astype(np.float64) - b.astype(np.float64)),
    "vfwmul": lambda a, b: fpu.canon(a.astype(np.float64) * b.astype(np.float64)),
}
for _stem, _fn in FP_WIDE_BIN.items():
    for _form in ("vv", "vf"):
        def _build_fw(c: Ctx, a: list, fn: Callable = _fn, form: str = _form) -> Op:
            vd, vs2, s1, masked = a
            srcs: list[Src] = [("v", vs2, 0, "f"), (form[1], s1, 0, "f")]
            me, nxt = _me(c), c.nxt

            def op(st: State) -> int:
                if st.sew != 32:
                    raise IllegalInstructionError("widening fp ops need SEW=32 (no Zvfh)")
                rne_only(st)
                elementwise(st, me, vd, 1, "f", srcs, fn, masked)
                return nxt
            return op
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
ROUNDING_TO_FLOAT = {"vfsqrt.v", "vfcvt.f.xu.v", "vfcvt.f.x.v", "vfncvt.f.f.w", "vfncvt.f.xu.w",
                     "vfncvt.f.x.w"}  # supported under frm = rne only


def _build_unary(name: str) -> Callable[[Ctx, list], Op]:
    swl, dwl, sk, dk, fn = FP_UNARY[name]

    def build(c: Ctx, a: list) -> Op:
        vd, vs2, masked = a
        srcs: list[Src] = [("v", vs2, swl, sk)]
        me, nxt = _me(c), c.nxt

        def op(st: State) -> int:
            if (sk == "f" and width(st, swl) < 32) or (dk == "f" and width(st, dwl) < 32):
                raise IllegalInstructionError(f"{name} at SEW={st.sew} needs 16-bit floats "
                                              f"(Zvfh), which rvvsim does not model")
            f = fn
            if name in DYN_TO_INT and st.frm:
                f = functools.partial(fn, rm=fpu.FRM_NAMES[st.frm])
            elif name in ROUNDING_TO_FLOAT:
                rne_only(st)
            elementwise(st, me, vd, dwl, dk, srcs, f, masked)
            return nxt
        return op
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
        me, nxt = _me(c), c.nxt

        def op(st: State) -> int:
            vl = ready(st)
            if vl == 0:
                return nxt
            if kind == "f" and st.frm:
                rne_only(st)
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
            with np.errstate(all="ignore"):
                res = np.asarray(fn(acc, vals)).astype(acc.dtype)
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

def _vlmax(st: State) -> int:
    return (st.vlen << st.lmul >> LOG2[st.sew]) if st.lmul >= 0 else \
        (st.vlen >> -st.lmul >> LOG2[st.sew])


def _build_slide(kind: str, form: str) -> Callable[[Ctx, list], Op]:
    """vslideup/vslidedown (.vx/.vi) and vslide1up/vslide1down/vfslide1up/vfslide1down."""
    def build(c: Ctx, a: list) -> Op:
        vd, vs2, s1, masked = a
        me, nxt = _me(c), c.nxt
        if form == "vi" and not 0 <= s1 < 32:
            raise AsmSyntaxError(f"{c.program.source}:{c.instr.line}: slide amount must be 0..31 "
                                 f"in `{c.instr.text}`")

        def op(st: State) -> int:
            vl = ready(st)
            if vl == 0:
                return nxt
            sew, vlmax = st.sew, _vlmax(st)
            if kind in ("up", "1up"):
                no_overlap(st, "slide up", vd, sew, [(vs2, sew)])
            u = UTYPE[sew]
            src, spois = vget(st, vs2, sew, vlmax, "u")
            src, spois = src.copy(), spois.copy()
            sorg = elem_org(st, vs2, sew, vlmax) if spois.any() else np.zeros(vlmax, np.int32)
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
                    j = idx + off if off < vlmax else np.full(vl, vlmax)
                    inside = j < vlmax
                    jj = np.minimum(j, vlmax - 1)
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
        me, nxt = _me(c), c.nxt

        def op(st: State) -> int:
            vl = ready(st)
            if vl == 0:
                return nxt
            sew, vlmax = st.sew, _vlmax(st)
            no_overlap(st, "vrgather", vd, sew, [(vs2, sew)] + (
                [(s1, 16 if ei16 else sew)] if form == "vv" else []))
            src, spois = vget(st, vs2, sew, vlmax, "u")
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
            inside = idx < np.uint64(vlmax)
            j = np.where(inside, idx, 0).astype(np.int64)
            res = np.where(inside, src[j], UTYPE[sew](0))
            gp = np.where(inside, spois[j], False)
            gorg = elem_org(st, vs2, sew, vlmax)[j] if gp.any() else None
            origin = _merge_org(ipois, iorg, gp, gorg)
            pois = _or(ipois, gp)
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
    me, nxt = _me(c), c.nxt

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


# --- loads and stores --------------------------------------------------------------------------

def _addr_check(c: Ctx, mem: tuple[int, int]) -> int:
    off, rs1 = mem
    if off != 0:
        raise AsmSyntaxError(f"{c.program.source}:{c.instr.line}: vector memory operands take "
                             f"no offset, write (reg) in `{c.instr.text}`")
    return rs1


def _elem_addrs(st: State, base: int, n: int, stride: int) -> np.ndarray:
    return (np.uint64(base & ((1 << 64) - 1))
            + np.arange(n, dtype=np.uint64) * np.uint64(stride & ((1 << 64) - 1)))


def _load(st: State, me: str, vd: int, eew: int, addrs: np.ndarray | None, base: int,
          n: int, mask: tuple[np.ndarray, np.ndarray | None] | None, fixed: bool) -> None:
    """Load elements [0, n) (only the mask's active ones are accessed) into vd at width eew;
    ``addrs`` None means unit stride from ``base``."""
    u = UTYPE[eew]
    nb = eew // 8
    res = None
    if addrs is None:
        view = st.mem.contiguous(base, n * nb)
        if view is not None:  # the whole span is in one region: one slice (copied on write)
            res = view.view(u)
        else:
            addrs = _elem_addrs(st, base, n, nb)
    if res is None:
        elems = np.arange(n)
        if mask is not None:
            res = np.zeros(n, u)
            sel = np.nonzero(mask[0])[0]
            res[sel] = st.mem.gather(addrs[sel], nb, elems[sel]).view(u).ravel()
        else:
            res = st.mem.gather(addrs, nb, elems).view(u).ravel()
    if fixed:  # whole-register load: every element, no tail, no mask
        a = vd * st.vlenb
        st.V[a:a + n * nb] = res.view(np.uint8)
        regs = n * nb // st.vlenb
        off = st.mem.stack_span(base, n * nb) if st.mem.stack_poisoned else None
        if off is not None:  # reload of a spill: undefined bytes stay undefined
            st.P[a:a + n * nb] = st.mem.stack_poison[off:off + n * nb]
            st.O[a:a + n * nb] = st.mem.stack_origin[off:off + n * nb]
            st.dirty[vd:vd + regs] = [True] * regs
        else:
            st.P[a:a + n * nb] = 0
            st.dirty[vd:vd + regs] = [False] * regs
        return
    pois = origin = None
    if st.mem.stack_poisoned:
        und = st.mem.undefined(addrs if addrs is not None else _elem_addrs(st, base, n, nb), nb)
        if und is not None:
            pois, origin = und
            if mask is not None:
                pois = pois & mask[0]
    vwrite(st, me, vd, eew, res, pois, mask, origin)


def _store(st: State, me: str, vs3: int, eew: int, addrs: np.ndarray | None, base: int, n: int,
           masked: bool, fixed: bool = False) -> None:
    """Store elements [0, n) (active ones); undefined elements raise before memory changes."""
    u = UTYPE[eew]
    nb = eew // 8
    if fixed:
        a, b = vs3 * st.vlenb, vs3 * st.vlenb + n * nb
    else:
        a, b = span(st, vs3, eew)
    vals = st.V[a:b].view(u)[:n]
    active = None
    if masked:
        active, mp = mask_bits(st, 0, n)
        raise_poison(st, mp, 0, 1, "mask v0")
    if fixed and st.mem.stack_span(base, n * nb) is not None:
        # a whole-register spill to the stack: undefined bytes travel with it (checked on use)
        st.mem.spill(base, st.P[a:b], st.O[a:b])
        st.mem.contiguous(base, n * nb)[:] = st.V[a:b]
        return
    if any(st.dirty[vs3:vs3 + (b - a) // st.vlenb]) and st.P[a:a + n * nb].any():
        pois = st.P[a:b].view(u)[:n] != 0
        raise_poison(st, pois if active is None else pois & active, vs3, eew, "stored value")
    if st.mem.stack_poisoned:
        ea = addrs if addrs is not None else _elem_addrs(st, base, n, nb)
        st.mem.defined(ea if active is None else ea[active], nb)
    if addrs is None:
        view = st.mem.contiguous(base, n * nb)
        if view is not None:
            if active is None:
                view.view(u)[:] = vals
            else:
                view.view(u)[active] = vals[active]
            return
        addrs = _elem_addrs(st, base, n, nb)
    elems = np.arange(n)
    data = vals.view(np.uint8).reshape(n, nb)
    if active is not None:
        sel = np.nonzero(active)[0]
        st.mem.scatter(addrs[sel], data[sel], elems[sel])
    else:
        st.mem.scatter(addrs, data, elems)


def _fast_unit(st: State, me: str, key: object, vreg: int, eew: int, vl: int, view: np.ndarray,
               store: bool) -> bool:
    """Unmasked unit-stride access whose bytes lie in one region, through a cached plan of
    register views; False sends the access down the generic (checking) path."""
    pk = (key, st.sew, st.lmul, vl, st.vta)
    pl = st.plans.get(pk)
    if pl is None:
        a, b = span(st, vreg, eew)
        u = UTYPE[eew]
        d = st.V[a:b].view(u)
        tail = None
        if not store and st.vta and vl < d.size:
            tail = (d[vl:], st.P[a:b].view(u)[vl:], st.O[a:b].reshape(-1, eew // 8)[vl:],
                    ONES[eew], st.origin_id(f"{me}: tail elements {vl}.. (tail agnostic, vl={vl})"))
        pl = st.plans[pk] = (d[:vl], st.P[a:a + vl * (eew >> 3)], u, vreg,
                             vreg + (b - a) // st.vlenb, tail, vl * (eew >> 3) == b - a)
    body, pbody, u, r0, r1, tail, full = pl
    dirty = st.dirty
    if store:
        if any(dirty[r0:r1]) and pbody.any():
            return False  # undefined elements: the generic path names them
        view.view(u)[:] = body
        return True
    body[:] = view.view(u)
    if any(dirty[r0:r1]):
        pbody[:] = 0
    if tail is not None:
        td, tp, to, ones, tid = tail
        td[:] = ones
        tp[:] = ones
        to[:] = tid
        dirty[r0:r1] = [True] * (r1 - r0)
    elif full:
        dirty[r0:r1] = [False] * (r1 - r0)
    return True


def _build_unit(eew: int, store: bool, strided: bool) -> Callable[[Ctx, list], Op]:
    def build(c: Ctx, a: list) -> Op:
        if strided:
            vreg, mem, rs2, masked = a
        else:
            vreg, mem, masked = a
            rs2 = 0
        rs1 = _addr_check(c, mem)
        me, nxt = _me(c), c.nxt

        key = object()  # this instruction's slot in State.plans

        def op(st: State) -> int:
            vl = ready(st)
            if vl == 0:
                return nxt
            base = st.x[rs1]
            if USE_PLANS and not masked and not strided and not st.mem.stack_poisoned:
                view = st.mem.contiguous(base, vl * (eew >> 3))
                if view is not None and _fast_unit(st, me, key, vreg, eew, vl, view, store):
                    return nxt
            span(st, vreg, eew)  # EMUL / register-group legality
            addrs = _elem_addrs(st, base, vl, st.x[rs2]) if strided else None
            if store:
                _store(st, me, vreg, eew, addrs, base, vl, masked)
            else:
                _load(st, me, vreg, eew, addrs, base, vl,
                      mask_bits(st, 0, vl) if masked else None, False)
            return nxt
        return op
    return build


def _build_indexed(ieew: int, store: bool) -> Callable[[Ctx, list], Op]:
    def build(c: Ctx, a: list) -> Op:
        vreg, mem, vs2, masked = a
        rs1 = _addr_check(c, mem)
        me, nxt = _me(c), c.nxt

        def op(st: State) -> int:
            vl = ready(st)
            if vl == 0:
                return nxt
            sew = st.sew
            span(st, vreg, sew)
            idx, ipois = vget(st, vs2, ieew, vl, "u")
            mask = mask_bits(st, 0, vl) if masked else None
            raise_poison(st, ipois & mask[0] if mask is not None else ipois, vs2, ieew,
                         "index operand")
            addrs = np.uint64(st.x[rs1] & ((1 << 64) - 1)) + idx.astype(np.uint64)
            if store:
                _store(st, me, vreg, sew, addrs, 0, vl, masked)
            else:
                _load(st, me, vreg, sew, addrs, 0, vl, mask, False)
            return nxt
        return op
    return build


def _build_whole(nregs: int, eew: int, store: bool) -> Callable[[Ctx, list], Op]:
    def build(c: Ctx, a: list) -> Op:
        vreg, mem = a
        rs1 = _addr_check(c, mem)
        if vreg % nregs:
            raise AsmSyntaxError(f"{c.program.source}:{c.instr.line}: v{vreg} must be a multiple "
                                 f"of {nregs} in `{c.instr.text}`")
        me, nxt = _me(c), c.nxt

        def op(st: State) -> int:
            n = nregs * st.vlenb // (eew // 8)
            if store:
                _store(st, me, vreg, eew, None, st.x[rs1], n, False, fixed=True)
            else:
                _load(st, me, vreg, eew, None, st.x[rs1], n, None, True)
            return nxt
        return op
    return build


def _build_mask_mem(store: bool) -> Callable[[Ctx, list], Op]:
    """vlm.v / vsm.v: ceil(vl/8) bytes, EEW=8, always unmasked."""
    def build(c: Ctx, a: list) -> Op:
        vreg, mem = a
        rs1 = _addr_check(c, mem)
        me, nxt = _me(c), c.nxt

        def op(st: State) -> int:
            vl = ready(st)
            n = (vl + 7) // 8
            if n == 0:
                return nxt
            if store:
                # only bits below vl must be defined: the rest of the last byte is the mask's
                # tail, which software storing a mask legitimately ignores
                raise_poison(st, mask_bits(st, vreg, vl)[1], vreg, 1, "stored mask bit")
                data = st.V[vreg * st.vlenb:vreg * st.vlenb + n]
                st.mem.defined(_elem_addrs(st, st.x[rs1], n, 1), 1)
                view = st.mem.contiguous(st.x[rs1], n)
                if view is None:
                    st.mem.scatter(_elem_addrs(st, st.x[rs1], n, 1), data.reshape(n, 1),
                                   np.arange(n))
                else:
                    view[:] = data
                return nxt
            saved = (st.vl, st.sew, st.lmul)
            st.vl, st.sew, st.lmul = n, 8, 0
            try:
                _load(st, me, vreg, 8, None, st.x[rs1], n, None, False)
            finally:
                st.vl, st.sew, st.lmul = saved
            return nxt
        return op
    return build


for _eew in (8, 16, 32, 64):
    isa(f"vle{_eew}.v", "vam")(_build_unit(_eew, False, False))
    isa(f"vse{_eew}.v", "vam")(_build_unit(_eew, True, False))
    isa(f"vlse{_eew}.v", "vaxm")(_build_unit(_eew, False, True))
    isa(f"vsse{_eew}.v", "vaxm")(_build_unit(_eew, True, True))
    for _o in ("u", "o"):
        isa(f"vl{_o}xei{_eew}.v", "vavm")(_build_indexed(_eew, False))
        isa(f"vs{_o}xei{_eew}.v", "vavm")(_build_indexed(_eew, True))
    for _n in (1, 2, 4, 8):
        isa(f"vl{_n}re{_eew}.v", "va")(_build_whole(_n, _eew, False))
for _n in (1, 2, 4, 8):
    isa(f"vs{_n}r.v", "va")(_build_whole(_n, 8, True))
    isa(f"vl{_n}r.v", "va")(_build_whole(_n, 8, False))
isa("vlm.v vle1.v", "va")(_build_mask_mem(False))
isa("vsm.v vse1.v", "va")(_build_mask_mem(True))
