"""The vector register file as numpy views, undefined-element (poison) tracking, and the
engines every RVV instruction runs through.

Register groups are views of the byte register file (``State.V``) reinterpreted at the element
width; the parallel ``State.P`` bytes mark *undefined* bits (poison): tail-agnostic and
mask-agnostic elements are written as all ones, as qemu does with ``rvv_ta_all_1s`` /
``rvv_ma_all_1s``, and poisoned at the same time (``State.O`` remembers which instruction did
it). Poison flows from an active source element into the result element; it raises
``TailRelianceError`` only when it becomes observable: a store, a move to a scalar register,
a reduction, a mask population count.

``elementwise`` and ``compare`` are the two engines table rows are turned into closures with;
unmasked element-wise instructions reuse a cached plan of views while vtype/vl stay put.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from portc.runtimes.rvvsim.core import Ctx, State, gmask
from portc.runtimes.rvvsim.errors import IllegalInstructionError, TailRelianceError
from portc.runtimes.rvvsim.fpu import FTYPE, STYPE, UTYPE
from portc.runtimes.rvvsim.scalar import get_d, get_s

LOG2 = {8: 3, 16: 4, 32: 5, 64: 6}
ONES = {w: UTYPE[w](np.iinfo(UTYPE[w]).max) for w in UTYPE}
KIND_T = {"u": UTYPE, "s": STYPE, "f": FTYPE}
LMUL_NAMES = {"mf8": -3, "mf4": -2, "mf2": -1, "m1": 0, "m2": 1, "m4": 2, "m8": 3}
SEW_NAMES = {"e8": 8, "e16": 16, "e32": 32, "e64": 64}
ELEN = 64


def lmul_str(lg: int) -> str:
    return f"m{1 << lg}" if lg >= 0 else f"mf{1 << -lg}"


# --- register-group access ---------------------------------------------------------------------

def ready(st: State) -> int:
    if st.vill:
        raise IllegalInstructionError("vector instruction executed while vtype.vill is set "
                                      "(no valid vsetvli/vsetivli before it)")
    return st.vl


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
        raise IllegalInstructionError(f"EEW={eew} at SEW={st.sew}, LMUL={lmul_str(st.lmul)} "
                                      f"gives EMUL={lmul_str(el) if -6 < el < 6 else el}, "
                                      f"outside 1/8..8")
    n = 1 << el if el > 0 else 1
    if reg % n or reg + n > 32:
        raise IllegalInstructionError(f"v{reg} cannot start a group of {n} registers "
                                      f"(EMUL={lmul_str(el)}): the register number must be a "
                                      f"multiple of {n}")
    a = reg * st.vlenb
    return a, a + n * st.vlenb


def group_regs(st: State, eew: int) -> tuple[int, int]:
    el = st.lmul + LOG2[eew] - LOG2[st.sew]
    return el, (1 << el if el > 0 else 1)


def check_overlap(st: State, vd: int, deew: int, srcs: list[tuple[int, int]]) -> None:
    """RVV 1.0 section 5.2: where a destination group may overlap a source group of another EEW
    (qemu traps on the rest). ``deew`` 1 means a mask destination."""
    dn = 1 if deew == 1 else group_regs(st, deew)[1]
    for reg, seew in srcs:
        sel, sn = group_regs(st, seew)
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
    dn = 1 if deew == 1 else group_regs(st, deew)[1]
    for reg, seew in srcs:
        sn = 1 if seew == 1 else group_regs(st, seew)[1]
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


def por(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    if a is None:
        return b
    return a if b is None else a | b


def elem_org(st: State, reg: int, eew: int, n: int) -> np.ndarray:
    """Origin ids of the first ``n`` elements (any undefined byte of an element counts)."""
    a, b = span(st, reg, eew)
    return st.O[a:b].reshape(-1, eew // 8)[:n].max(axis=1)


def mask_org(st: State, reg: int, n: int) -> np.ndarray:
    """Origin ids of mask bits 0..n-1 (per bit when the register was written as a mask)."""
    if st.mfmt >> reg & 1:
        return st.OM[reg, :n]
    a = reg * st.vlenb
    return np.repeat(st.O[a:a + st.vlenb], 8)[:n]


def merge_org(pa: np.ndarray | None, oa: np.ndarray | None, pb: np.ndarray | None,
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
            origin = merge_org(pois, origin, mp, mask_org(st, 0, vl))
            pois = por(pois, mp)
        if st.vma:
            res = np.where(active, res, ones)
            inactive = ~active
            if inactive.any():
                mid = st.origin_id(f"{me}: masked-off elements (mask agnostic)")
                origin = np.where(inactive, mid, origin if origin is not None else 0)
                pois = por(pois, inactive)
        else:
            res = np.where(active, res, d[:vl])
            old = p[:vl] != 0
            if old.any() or pois is not None:
                oorg = elem_org(st, vd, eew, vl)
                origin = np.where(active, origin if origin is not None else 0, oorg)
                pois = np.where(active, pois if pois is not None else False, old)
    d[:vl] = res
    gm = gmask(vd, (b - a) // st.vlenb)
    st.mfmt &= ~gm
    poisoned = pois is not None and bool(pois.any())
    if not poisoned:
        if st.dirty & gm:
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
    st.dirty = st.dirty | gm if poisoned else st.dirty & ~gm


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
            origin = merge_org(pois, origin, mp, mask_org(st, 0, vl))
            pois = por(pois, mp)
        if st.vma:
            bits = bits | ~active
            if not active.all():
                mid = st.origin_id(f"{me}: masked-off mask bits (mask agnostic)")
                origin = np.where(~active, mid, origin if origin is not None else 0)
                pois = por(pois, ~active)
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
    if vl < st.vlen or fullp.any():
        st.dirty |= 1 << vd
    else:
        st.dirty &= ~(1 << vd)
    st.O[a:a + vlenb] = borg.reshape(vlenb, 8).max(axis=1)
    st.OM[vd] = borg
    st.mfmt |= 1 << vd


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
    if bits == 1 and st.mfmt >> (reg + k // st.vlen) & 1:
        oid = int(st.OM[reg + k // st.vlen, k % st.vlen])
    else:
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


def fetch(st: State, s: Src, vl: int) -> tuple[np.ndarray, np.ndarray | None,
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
        nb = vl * (eew >> 3)
        if not st.dirty & gmask(val, (b - a) // st.vlenb) or st.Pb[a:a + nb] == bytes(nb):
            return vals, None, None
        return vals, st.P[a:b].view(u)[:vl] != 0, elem_org(st, val, eew, vl)
    if kind == "x":
        return xscalar(st.x[val], eew, nk), None, None
    if kind == "i":
        return xscalar(val, eew, nk), None, None
    return fscalar(st, val, eew), None, None


USE_PLANS = True  # False forces the generic path (debugging the cached one)


class Slot:
    """One instruction's cache of its plan: valid while ``State.vcfg`` is the configuration
    it was built for (interned, so ``is`` compares), other configurations kept by key."""

    __slots__ = ("cfg", "plan", "plans")

    def __init__(self) -> None:
        self.cfg: tuple | None = None
        self.plan: _Plan | None = None
        self.plans: dict[tuple, _Plan] = {}


class _Plan:
    """What an unmasked element-wise instruction needs at one vtype/vl: views of its source
    and destination groups, the register masks for the poison test, the tail to fill. Built
    (with every legality check of the generic path) on first use at a configuration."""

    __slots__ = ("args", "scalars", "smask", "src_p", "d", "p", "dmask", "tail", "t", "u",
                 "full", "splat")


def _plan(st: State, me: str, vd: int, dwl: int, dkind: str, srcs: list[Src],
          copy: bool) -> _Plan:
    """``copy``: the function is ``ident`` (a splat or move)."""
    vl = st.vl
    pl = _Plan()
    pl.args, pl.scalars, pl.src_p, pl.smask = [], [], [], 0
    for kind, val, wl, nk in srcs:
        eew = width(st, wl)
        if kind == "v":
            a, b = span(st, val, eew)
            v = st.V[a:b].view(UTYPE[eew])[:vl]
            pl.args.append(v if nk == "u" else v.view(KIND_T[nk][eew]))
            pl.smask |= gmask(val, (b - a) // st.vlenb)
            nb = vl * (eew >> 3)
            pl.src_p.append((a, a + nb, bytes(nb)))
        elif kind == "i":
            pl.args.append(xscalar(val, eew, nk))
        else:
            if kind == "f":
                fscalar(st, val, eew)  # the SEW check (no Zvfh) before anything is cached
            buf = np.zeros(1, UTYPE[eew])  # refilled with the register's bits on every use
            pl.args.append(buf if nk == "u" else buf.view(KIND_T[nk][eew]))
            pl.scalars.append((buf, kind, val, eew))
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
    pl.dmask = gmask(vd, (b - a) // st.vlenb)
    pl.full = vl == d.size
    pl.tail = None
    if st.vta and vl < d.size:
        pl.tail = (d[vl:], p[vl:], st.O[a:b].reshape(-1, deew // 8)[vl:], ONES[deew],
                   st.origin_id(f"{me}: tail elements {vl}.. (tail agnostic, vl={vl})"))
    pl.splat = None
    if copy and len(srcs) == 1 and srcs[0][0] != "v" and srcs[0][2] == dwl and \
            pl.t == KIND_T[srcs[0][3]][deew]:
        pl.splat = pl.scalars[0] if pl.scalars else int(pl.args[0].view(pl.u)[0])
    return pl


def scalar_bits(st: State, kind: str, r: int, eew: int) -> int:
    """An x or f register as the raw ``eew``-bit element it splats to (what ``xscalar`` /
    ``fscalar`` produce, as an int)."""
    if kind == "x":
        return st.x[r] & ((1 << eew) - 1)
    v = st.f[r]
    if eew == 32:
        return v & 0xFFFFFFFF if v >> 32 == 0xFFFFFFFF else 0x7FC00000
    return v


def elementwise(st: State, me: str, vd: int, dwl: int, dkind: str, srcs: list[Src],
                fn: Callable[..., np.ndarray], masked: bool, sel: bool = False,
                slot: Slot | None = None) -> None:
    """The engine of every element-wise instruction: fetch, compute once, write with policies.
    With a ``slot`` (unmasked instructions) the cached plan serves every execution whose
    sources are defined; anything else takes the generic path below."""
    vl = ready(st)
    if vl == 0:
        return
    if slot is not None and USE_PLANS:
        cfg = st.vcfg
        if slot.cfg is cfg:
            pl = slot.plan
        else:
            pl = slot.plans.get(cfg)  # type: ignore[arg-type]
            if pl is None:
                pl = slot.plans[cfg] = _plan(  # type: ignore[index]
                    st, me, vd, dwl, dkind, srcs, fn is ident)
            slot.cfg, slot.plan = cfg, pl
        assert pl is not None
        if not st.dirty & pl.smask or all(st.Pb[a:b] == z for a, b, z in pl.src_p):
            sp = pl.splat
            if sp is None:
                for buf, kind, val, eew in pl.scalars:
                    buf[0] = scalar_bits(st, kind, val, eew)
                res = fn(*pl.args)
                if type(res) is not np.ndarray:
                    res = np.asarray(res)
                if res.dtype != pl.t:
                    res = res.astype(pl.t)
                pl.d[:] = res.view(pl.u)
            else:  # vmv.v.x / vmv.v.i / vfmv.v.f: fill with the scalar's bits
                pl.d[:] = sp if type(sp) is int else scalar_bits(st, sp[1], sp[2], sp[3])
            dm = pl.dmask
            st.mfmt &= ~dm
            if st.dirty & dm:
                pl.p[:] = 0
            if pl.tail is not None:
                td, tp, to, ones, tid = pl.tail
                td[:] = ones
                tp[:] = ones
                to[:] = tid
                st.dirty |= dm
            elif pl.full:
                st.dirty &= ~dm
            return
    args: list[np.ndarray] = []
    pois = origin = None
    if sel:  # vmerge/vfmerge: v0 selects, it does not mask; only the chosen source is read
        bits, pois = mask_bits(st, 0, vl)
        args.append(bits)
        origin = mask_org(st, 0, vl) if pois is not None else None
        (v2, p2, o2), (v1, p1, o1) = (fetch(st, s, vl) for s in srcs)
        args += [v2, v1]
        if p2 is not None:  # element i reads vs2 where the selector bit is 0
            p2 = p2 & ~bits
        if p1 is not None:
            p1 = p1 & bits
        po, oo = p2, o2
        if p1 is not None:
            oo, po = merge_org(p2, o2, p1, o1), por(p2, p1)
        if po is not None:
            origin, pois = merge_org(pois, origin, po, oo), por(pois, po)
        srcs = []
    for s in srcs:
        v, p, o = fetch(st, s, vl)
        args.append(v)
        if p is not None:
            origin, pois = merge_org(pois, origin, p, o), por(pois, p)
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
        v, p, o = fetch(st, s, vl)
        args.append(v)
        if p is not None:
            origin, pois = merge_org(pois, origin, p, o), por(pois, p)
    bits = np.asarray(fn(*args), bool)
    if bits.shape != (vl,):
        bits = np.full(vl, bits.reshape(-1)[0])
    mwrite(st, me, vd, bits, pois, mask_bits(st, 0, vl) if masked else None, origin)


def describe(c: Ctx) -> str:
    return f"line {c.instr.line} `{c.instr.text}`"



def vlmax(st: State) -> int:
    return (st.vlen << st.lmul >> LOG2[st.sew]) if st.lmul >= 0 else \
        (st.vlen >> -st.lmul >> LOG2[st.sew])


def ident(x: np.ndarray) -> np.ndarray:
    return x
