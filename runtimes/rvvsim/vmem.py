"""RVV 1.0 loads and stores: unit-stride, strided, indexed (ordered stores in element order),
whole-register and mask. Each is one bounds-checked numpy slice or fancy-index operation;
undefined elements raise before memory changes, except whole-register spills to the stack,
which carry their undefined bytes along (``Memory.spill``)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from portc.runtimes.rvvsim import vregs
from portc.runtimes.rvvsim.core import Ctx, Op, State, gmask, isa, spec
from portc.runtimes.rvvsim.errors import AsmSyntaxError
from portc.runtimes.rvvsim.fpu import UTYPE
from portc.runtimes.rvvsim.vregs import (
    ONES,
    describe,
    mask_bits,
    raise_poison,
    ready,
    span,
    vget,
    vwrite,
)

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
        gm = gmask(vd, n * nb // st.vlenb)
        st.mfmt &= ~gm
        off = st.mem.stack_span(base, n * nb) if st.mem.stack_poisoned else None
        if off is not None:  # reload of a spill: undefined bytes stay undefined
            st.P[a:a + n * nb] = st.mem.stack_poison[off:off + n * nb]
            st.O[a:a + n * nb] = st.mem.stack_origin[off:off + n * nb]
            st.dirty |= gm
        else:
            st.P[a:a + n * nb] = 0
            st.dirty &= ~gm
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
    if st.dirty & gmask(vs3, (b - a) // st.vlenb) and st.P[a:a + n * nb].any():
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


class _UnitPlan:
    """An unmasked unit-stride access at one vtype/vl: the register body, its poison bytes,
    the tail to fill (loads), the group's register mask."""

    __slots__ = ("body", "pbody", "pstart", "pend", "zero", "u", "gm", "tail", "full",
                 "nbytes")


def _unit_plan(st: State, me: str, vreg: int, eew: int, vl: int, store: bool) -> _UnitPlan:
    a, b = span(st, vreg, eew)
    u = UTYPE[eew]
    d = st.V[a:b].view(u)
    pl = _UnitPlan()
    pl.nbytes = vl * (eew >> 3)
    pl.body, pl.pbody, pl.zero = d[:vl], st.P[a:a + pl.nbytes], bytes(pl.nbytes)
    pl.pstart, pl.pend = a, a + pl.nbytes
    pl.u, pl.gm, pl.full = u, gmask(vreg, (b - a) // st.vlenb), pl.nbytes == b - a
    pl.tail = None
    if not store and st.vta and vl < d.size:
        pl.tail = (d[vl:], st.P[a:b].view(u)[vl:], st.O[a:b].reshape(-1, eew // 8)[vl:],
                   ONES[eew], st.origin_id(f"{me}: tail elements {vl}.. (tail agnostic, vl={vl})"))
    return pl


def _fast_unit(st: State, pl: _UnitPlan, view: np.ndarray, store: bool) -> bool:
    """Unmasked unit-stride access whose bytes lie in one region, through the cached plan;
    False sends the access down the generic (checking) path."""
    gm = pl.gm
    if store:
        if st.dirty & gm and st.Pb[pl.pstart:pl.pend] != pl.zero:
            return False  # undefined elements: the generic path names them
        view.view(pl.u)[:] = pl.body
        return True
    st.mfmt &= ~gm
    pl.body[:] = view.view(pl.u)
    if st.dirty & gm:
        pl.pbody[:] = 0
    if pl.tail is not None:
        td, tp, to, ones, tid = pl.tail
        td[:] = ones
        tp[:] = ones
        to[:] = tid
        st.dirty |= gm
    elif pl.full:
        st.dirty &= ~gm
    return True


def _build_unit(eew: int, store: bool, strided: bool) -> Callable[[Ctx, list], Op]:
    def build(c: Ctx, a: list) -> Op:
        if strided:
            vreg, mem, rs2, masked = a
        else:
            vreg, mem, masked = a
            rs2 = 0
        rs1 = _addr_check(c, mem)
        me, nxt = describe(c), c.nxt
        slot: list = [None, None, {}]  # [vcfg, plan, plans by vcfg]
        fast = not masked and not strided

        def op(st: State) -> int:
            vl = ready(st)
            if vl == 0:
                return nxt
            base = st.x[rs1]
            if fast and vregs.USE_PLANS and not st.mem.stack_poisoned:
                cfg = st.vcfg
                if slot[0] is cfg:
                    pl = slot[1]
                else:
                    pl = slot[2].get(cfg)
                    if pl is None:
                        pl = slot[2][cfg] = _unit_plan(st, me, vreg, eew, vl, store)
                    slot[0], slot[1] = cfg, pl
                view = st.mem.contiguous(base, pl.nbytes)
                if view is not None and _fast_unit(st, pl, view, store):
                    return nxt
            span(st, vreg, eew)  # EMUL / register-group legality
            addrs = _elem_addrs(st, base, vl, st.x[rs2]) if strided else None
            if store:
                _store(st, me, vreg, eew, addrs, base, vl, masked)
            else:
                _load(st, me, vreg, eew, addrs, base, vl,
                      mask_bits(st, 0, vl) if masked else None, False)
            return nxt
        kind = "vst" if store else "vld"
        return spec(op, kind, eew, vreg, rs1, rs2 if strided else None, masked, me)
    return build


def _build_indexed(ieew: int, store: bool) -> Callable[[Ctx, list], Op]:
    def build(c: Ctx, a: list) -> Op:
        vreg, mem, vs2, masked = a
        rs1 = _addr_check(c, mem)
        me, nxt = describe(c), c.nxt

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
        me, nxt = describe(c), c.nxt

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
        me, nxt = describe(c), c.nxt

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
