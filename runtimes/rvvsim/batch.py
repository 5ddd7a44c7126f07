"""Run a loop's iterations at once: one numpy operation per instruction for all of them.

portc's kernels spend nearly all their instructions in innermost loops that are one basic
block ending in a branch back to its start (a matmul's K loop, a strip-mined element-wise
loop). Interpreting them pays Python overhead per instruction; this module runs the loop's
iterations as one *batch*, where every value that changes from iteration to iteration carries
a leading iteration axis:

- integer registers are affine in the iteration number, ``c0 + c1 * i`` (pointer bumps, down
  counters, ``vsetvli`` results at full strips). A register the body reads before writing it
  must come back as itself plus a constant, found by running the body's arithmetic on the
  affine forms to a fixed point; the branch then gives the trip count in closed form;
- scalar and vector loads gather every iteration's elements with one strided view, element-wise
  instructions and compares run their own table function (``vector.py``) over all iterations'
  elements flattened into one array, stores scatter once after the aliasing checks below;
- a vector register the body reads before writing (an accumulator) may be read only by the
  instructions that update it: one ``vfadd`` is ``np.add.accumulate`` along the iteration axis
  (each row one float add of the previous sum, in order: the interpreter's sequence), one
  integer ``vadd`` a modular sum, float32 ``vfmacc``-family chains (the GEMM microkernel: each
  accumulator updated several times per iteration) run stacked across accumulators with
  products formed at once (``_fma32_chains``), anything else is stepped row by row with the
  instruction's function.

The batch is all or nothing: everything is computed and checked before any state changes, and
whenever exactness is not certain (undefined elements in a source, a non-default rounding
mode, an access outside one region, aliasing between a store and a later load, a value that
would wrap, a masked instruction, a loop shape not listed above) it declines and the loop runs
instruction by instruction, which raises any fault exactly where it happens. When the branch
falls through within the batch, the leaving iteration is part of it and every register the
body writes is set as its last writer would leave it (``vwrite``/``mwrite``: tails, undefined
elements, vtype); otherwise the interpreter takes the remaining iterations. Instruction counts
are the interpreter's: ``k`` batched iterations count ``k`` times every instruction.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np

from portc.runtimes.rvvsim import fpu, vector
from portc.runtimes.rvvsim.core import Op, State, gmask
from portc.runtimes.rvvsim.errors import RvvSimError
from portc.runtimes.rvvsim.fpu import FTYPE, UTYPE
from portc.runtimes.rvvsim.parser import Program
from portc.runtimes.rvvsim.scalar import BOX, RRR, UNARY, sgnj_bits
from portc.runtimes.rvvsim.vregs import (
    KIND_T,
    LOG2,
    check_overlap,
    mask_bits,
    mwrite,
    vwrite,
    xscalar,
)

#: fewest iterations, and fewest instructions, worth a batch (the analysis costs about as much
#: as interpreting a few dozen instructions)
MIN_TRIPS = 2
MIN_INSTRUCTIONS = 32
#: most elements (iterations x vl x vector instructions) one batch holds: a longer loop runs
#: in several batches, so memory stays bounded (8-byte elements: 64 MiB)
MAX_ELEMENTS = 1 << 23
LO, HI = -(1 << 63), (1 << 63) - 1
M64 = (1 << 64) - 1

Affine = tuple[int, int]  # c0 + c1 * i
IntVal = Affine | int  # an affine form, or the index of the load that produced the value


class Decline(Exception):
    """The batch cannot be proven exact here: run the loop instruction by instruction."""


def _x_reads_writes(sp: tuple) -> tuple[list[int], list[int]]:
    """Integer registers a spec reads and writes."""
    kind = sp[0]
    if kind == "alu":
        _, _, rd, rs1, b, imm = sp
        return ([rs1] if imm else [rs1, b]), [rd]
    if kind == "li":
        return [], [sp[1]]
    if kind == "unary":
        return [sp[3]], [sp[2]]
    if kind == "ld":
        return [sp[4]], ([sp[3]] if sp[6] == "x" else [])
    if kind == "st":
        return [sp[3]] + ([sp[2]] if sp[5] == "x" else []), []
    if kind == "fmv.f.x":
        return [sp[3]], []
    if kind == "vsetvli":
        return ([sp[2]] if sp[2] else []), [sp[1]]
    if kind == "vew":
        return [s[1] for s in sp[4] if s[0] == "x"], []
    if kind == "vcmp":
        return [s[1] for s in sp[2] if s[0] == "x"], []
    if kind in ("vld", "vst"):
        return [sp[3]] + ([sp[4]] if sp[4] is not None else []), []
    if kind == "br":
        return [sp[2], sp[3]], []
    return [], []


def _f_reads_writes(sp: tuple) -> tuple[list[int], list[int]]:
    kind = sp[0]
    if kind == "ld" and sp[6] == "f":
        return [], [sp[3]]
    if kind == "st" and sp[5] == "f":
        return [sp[2]], []
    if kind == "fsgnj":
        return [sp[4], sp[5]], [sp[3]]
    if kind == "fmv.f.x":
        return [], [sp[2]]
    if kind == "vew":
        return [s[1] for s in sp[4] if s[0] == "f"], []
    if kind == "vcmp":
        return [s[1] for s in sp[2] if s[0] == "f"], []
    return [], []


def _v_reads_writes(sp: tuple) -> tuple[list[int], list[int]]:
    kind = sp[0]
    if kind == "vew":  # a v0-selected merge reads v0 as a mask
        return [0] * sp[8] + [s[1] for s in sp[4] if s[0] == "v"], [sp[1]]
    if kind == "vcmp":
        return [s[1] for s in sp[2] if s[0] == "v"], [sp[1]]
    if kind == "vmlogic":  # a constant one (vmclr/vmset idioms) reads nothing
        return ([] if sp[5] else [sp[2], sp[3]]), [sp[1]]
    if kind == "vld":
        return [], [sp[2]]
    if kind == "vst":
        return [sp[2]], []
    return [], []


KINDS = {"nop", "alu", "li", "unary", "ld", "st", "fsgnj", "fmv.f.x", "vsetvli", "vew", "vcmp",
         "vmlogic", "vld", "vst"}
VECTOR = ("vew", "vcmp", "vmlogic", "vld", "vst")
MASKED_AT = {"vew": 6, "vcmp": 4, "vld": 5, "vst": 5}  # where a spec says "v0.t"


def _classify(specs: list[tuple], rw: Callable[[tuple], tuple[list[int], list[int]]],
              zero_reg: bool) -> tuple[set[int], set[int]]:
    """(carried, temps): registers written in the body whose first access is a read / a write.
    x0 is neither (reads give 0, writes are dropped)."""
    first: dict[int, str] = {}
    written: set[int] = set()
    for sp in specs:
        reads, writes = rw(sp)
        for r in reads:
            first.setdefault(r, "r")
        for r in writes:
            if zero_reg and r == 0:
                continue
            first.setdefault(r, "w")
            written.add(r)
    carried = {r for r in written if first[r] == "r"}
    return carried, written - carried


def plan_loop(blk: Any, ops: list[Op], program: Program) -> LoopPlan | None:
    """A ``LoopPlan`` when ``blk`` ends in a conditional branch to its own start and every
    instruction in it has a batch spec and fits the shapes the batcher runs; else None."""
    last = getattr(ops[blk.end], "spec", None)
    if last is None or last[0] != "br" or last[4] != blk.start or blk.end == blk.start:
        return None
    specs = [getattr(ops[k], "spec", None) for k in range(blk.start, blk.end)]
    if any(sp is None or sp[0] not in KINDS for sp in specs):
        return None
    specs = [sp for sp in specs if sp is not None]
    if any(sp[0] in MASKED_AT and sp[MASKED_AT[sp[0]]] for sp in specs):
        return None  # masked instructions (their inactive elements become undefined)
    kinds = [sp[0] for sp in specs]
    if kinds.count("vsetvli") > 1:
        return None
    if "vsetvli" in kinds:
        first_vec = min((i for i, k in enumerate(kinds) if k in VECTOR), default=len(kinds))
        if kinds.index("vsetvli") > first_vec:
            return None  # vector instructions before it would run at the previous vtype
    for sp in specs:  # one element width everywhere: register groups are equal or disjoint
        if sp[0] == "vew" and (sp[2] != 0 or any(s[2] != 0 for s in sp[4])):
            return None
        if sp[0] == "vcmp" and any(s[2] != 0 for s in sp[2]):
            return None
    x_carried, x_temps = _classify(specs + [last], _x_reads_writes, True)
    f_carried, _ = _classify(specs, _f_reads_writes, False)
    v_carried, _ = _classify(specs, _v_reads_writes, False)
    if f_carried:
        return None
    recur: dict[int, int] = {}  # writer of an accumulator -> the accumulator
    for r in v_carried:  # read only by the instructions that update it, once each
        writers = [i for i, sp in enumerate(specs) if r in _v_reads_writes(sp)[1]]
        readers = [i for i, sp in enumerate(specs) if r in _v_reads_writes(sp)[0]]
        if readers != writers or any(specs[w][0] != "vew" or specs[w][8] for w in writers):
            return None
        for w in writers:
            if sum(1 for s in specs[w][4] if s[0] == "v" and s[1] == r) != 1:
                return None
            recur[w] = r
    masks = {sp[1] for sp in specs if sp[0] == "vcmp"} | (
        {0} if any(sp[0] == "vew" and sp[8] for sp in specs) else set()) | {
        r for sp in specs if sp[0] == "vmlogic" for r in sp[1:4]}
    data = {sp[1] for sp in specs if sp[0] == "vew"} | {sp[2] for sp in specs if sp[0] in (
        "vld", "vst")} | {s[1] for sp in specs if sp[0] in ("vew", "vcmp")
                          for s in sp[4 if sp[0] == "vew" else 2] if s[0] == "v"}
    return LoopPlan(blk.start, blk.end - blk.start + 1, specs, last, x_carried, x_temps,
                    v_carried, recur, masks, data)


class LoopPlan:
    """The static facts of one batchable loop; ``run`` does one batch at loop entry."""

    def __init__(self, start: int, size: int, specs: list[tuple], branch: tuple,
                 x_carried: set[int], x_temps: set[int], v_carried: set[int],
                 recur: dict[int, int], masks: set[int], data: set[int]) -> None:
        self.start, self.size, self.specs, self.branch = start, size, specs, branch
        self.x_carried = sorted(x_carried)
        self.v_carried, self.recur = v_carried, recur
        self.masks, self.data = masks, data  # registers written/read as masks, as data groups
        self.delta: dict[int, int] = {}
        self.x_temps = sorted(x_temps)
        self.last_me: dict[int, str] = {}  # vector register -> its last writer (this batch)
        self.n_vector = sum(1 for sp in specs if sp[0] in VECTOR)
        self.vector = self.n_vector > 0

    # --- entry point --------------------------------------------------------------------------
    def run(self, st: State, limit: int) -> tuple[int, bool]:
        """Run as many whole iterations as can be proven exact, at most ``limit``, commit
        their effect on ``st``: (how many, whether the last of them left the loop). Without
        the exit, the interpreter takes the loop from there; 0 leaves ``st`` untouched."""
        if limit < MIN_TRIPS or st.frm or st.mem.stack_poisoned:
            return 0, False
        try:
            k, exits, commit = self._run(st, limit)
        except (Decline, RvvSimError, ArithmeticError, ValueError, IndexError, TypeError,
                KeyError):
            # any doubt (including a check that would trap) leaves the loop to the interpreter,
            # and nothing has been written yet
            return 0, False
        if commit is not None:
            commit()
        return k, exits

    # --- scalar analysis: affine forms and the trip count ------------------------------------
    def _vtype(self, st: State) -> SimpleNamespace | None:
        """The vtype the body's vector instructions run at (sew, lmul, vl before clamping)."""
        for sp in self.specs:
            if sp[0] == "vsetvli":
                _, rd, rs1, sew, lmul, ta, ma, imm = sp
                if sew > 64 or (lmul < 0 and sew > (64 >> -lmul)):
                    raise Decline
                vlmax = (st.vlen << lmul >> LOG2[sew]) if lmul >= 0 else \
                    (st.vlen >> -lmul >> LOG2[sew])
                if rs1 == 0 and rd == 0 and imm is None:  # keeps vl
                    if st.vill:
                        raise Decline
                    vl = min(st.vl, vlmax)
                else:
                    vl = vlmax  # full strips; ``_run`` clamps it to a constant AVL
                return SimpleNamespace(sew=sew, lmul=lmul, vl=vl, vta=ta, vma=ma,
                                       vlmax=vlmax, vlen=st.vlen, vlenb=st.vlenb)
        if not self.vector:
            return None
        if st.vill:
            raise Decline
        return SimpleNamespace(sew=st.sew, lmul=st.lmul, vl=st.vl, vta=st.vta, vma=st.vma,
                               vlmax=vector.vlmax(st), vlen=st.vlen, vlenb=st.vlenb)

    def _affine(self, st: State, vt: SimpleNamespace | None, delta: dict[int, int]
                ) -> tuple[list[Any], dict[int, Affine], list[Affine], Affine | None]:
        """One symbolic iteration with carried registers at ``x + delta * i``: per spec the
        values it uses, the carried registers' values at the end, every value computed (for
        the range check) and the AVL of the body's vsetvli."""
        xs: dict[int, IntVal] = {r: (st.x[r], delta[r]) for r in self.x_carried}

        def get(r: int) -> IntVal:
            if r == 0:
                return (0, 0)
            v = xs.get(r)
            return (st.x[r], 0) if v is None else v

        def aff(r: int) -> Affine:
            v = get(r)
            if isinstance(v, int):
                raise Decline  # a loaded value used as an integer operand
            return v

        seen: list[Affine] = []
        used: list[Any] = []
        avl: Affine | None = None
        for j, sp in enumerate(self.specs):
            kind = sp[0]
            u: Any = None
            if kind == "alu":
                _, name, rd, rs1, b, imm = sp
                a0, a1 = aff(rs1)
                b0, b1 = (b, 0) if imm else aff(b)
                if name == "add":
                    res = (a0 + b0, a1 + b1)
                elif name == "sub":
                    res = (a0 - b0, a1 - b1)
                elif name == "mul" and (a1 == 0 or b1 == 0):
                    res = (a0 * b0, a0 * b1 + a1 * b0)
                elif name == "sll" and b1 == 0:
                    res = (a0 << (b0 & 63), a1 << (b0 & 63))
                elif a1 == 0 and b1 == 0:
                    res = (RRR[name](a0, b0), 0)
                else:
                    raise Decline
                seen.append(res)
                xs[rd] = res
            elif kind == "li":
                if sp[1]:
                    xs[sp[1]] = (sp[2], 0)
            elif kind == "unary":
                _, name, rd, rs = sp
                a0, a1 = aff(rs)
                if name == "mv":
                    res = (a0, a1)
                elif name == "neg":
                    res = (-a0, -a1)
                elif name == "not":
                    res = (-a0 - 1, -a1)
                elif a1 == 0:
                    res = (UNARY[name](a0), 0)
                else:
                    raise Decline
                seen.append(res)
                if rd:
                    xs[rd] = res
            elif kind == "ld":
                _, n, signed, rd, rs1, off, file = sp
                a0, a1 = aff(rs1)
                u = (a0 + off, a1)
                if file == "x" and rd:
                    xs[rd] = j
            elif kind == "st":
                _, n, rs2, rs1, off, file = sp
                a0, a1 = aff(rs1)
                u = ((a0 + off, a1), get(rs2) if file == "x" else None)
            elif kind == "fmv.f.x":
                u = get(sp[3])
            elif kind == "vsetvli":
                _, rd, rs1, *_rest, imm = sp
                assert vt is not None
                if imm is not None:
                    avl = (imm, 0)
                elif rs1:
                    avl = aff(rs1)
                if rd:
                    xs[rd] = (vt.vl, 0)
            elif kind in ("vew", "vcmp"):
                u = [get(s[1]) if s[0] == "x" else None for s in sp[4 if kind == "vew" else 2]]
            elif kind in ("vld", "vst"):
                base = aff(sp[3])
                stride = aff(sp[4]) if sp[4] is not None else None
                if stride is not None and stride[1]:
                    raise Decline  # a stride that changes between iterations
                u = (base, stride)
            used.append(u)
        _, name, r1, r2, _ = self.branch
        e = (aff(r1), aff(r2))
        used.append(e)
        out = {r: aff(r) for r in self.x_carried}
        return used, out, seen, avl, xs

    def _trips(self, e: tuple[Affine, Affine], horizon: int) -> int:
        """How many iterations from now take the branch, up to ``horizon`` (the comparison of
        two affine forms in closed form)."""
        name = self.branch[1]
        (a0, a1), (b0, b1) = e
        e0, e1 = a0 - b0, a1 - b1
        base = name[:-1] if name.endswith("u") else name
        if base in ("bgt", "ble"):
            e0, e1, base = -e0, -e1, {"bgt": "blt", "ble": "bge"}[base]
        if base == "bne":  # taken until the one iteration (if any) where e = 0
            if e1 == 0:
                return horizon if e0 else 0
            zero = -e0 // e1
            return min(zero, horizon) if -e0 % e1 == 0 and zero >= 0 else horizon
        if base == "blt":  # e < 0
            if e0 >= 0:
                return 0
            return horizon if e1 <= 0 else min((-e0 + e1 - 1) // e1, horizon)
        if base == "bge":  # e >= 0
            if e0 < 0:
                return 0
            return horizon if e1 >= 0 else min(e0 // -e1 + 1, horizon)
        return horizon if e0 == e1 == 0 else 0  # beq

    def _run(self, st: State, limit: int) -> tuple[int, bool, Callable[[], None] | None]:
        """(iterations, whether they leave the loop, the writes that commit them)."""
        vt = self._vtype(st)
        if vt is not None and vt.vl == 0:
            return 0, False, None
        for _ in range(2):
            # the increments found at the last entry are the likely fixed point
            delta = dict(self.delta) if self.delta else dict.fromkeys(self.x_carried, 0)
            for _ in range(3):
                used, out, seen, avl, xs = self._affine(st, vt, delta)
                new = {r: out[r][0] - st.x[r] for r in self.x_carried}
                if all(out[r][1] == delta[r] and new[r] == delta[r] for r in self.x_carried):
                    break
                delta = new
            else:
                return 0, False, None
            self.delta = delta
            if vt is None or avl is None or avl[1] or min(avl[0] & M64, vt.vlmax) == vt.vl:
                break
            vt.vl = min(avl[0] & M64, vt.vlmax)  # a constant AVL below VLMAX: that vl
            if vt.vl == 0:
                return 0, False, None
        else:
            return 0, False, None
        horizon = limit
        if avl is not None and avl[1]:  # a moving AVL must give full strips in every iteration
            assert vt is not None
            a0, a1 = avl
            if a0 < vt.vlmax:
                return 0, False, None
            if a1 < 0:
                horizon = min(horizon, (a0 - vt.vlmax) // -a1 + 1)
        taken = self._trips(used[-1], horizon)
        # the loop is left within the horizon: run the leaving iteration too, and set every
        # register it writes; else all iterations known to branch back, the rest stepped
        exits = taken < horizon
        k = taken + 1 if exits else taken
        per_iteration = len(self.specs) + (vt.vl * self.n_vector if vt is not None else 0)
        if k * per_iteration > MAX_ELEMENTS:  # the rest in later batches
            exits, k = False, MAX_ELEMENTS // per_iteration
        if k < MIN_TRIPS or k * self.size < MIN_INSTRUCTIONS:
            return 0, False, None
        for c0, c1 in seen + list(out.values()):
            if not (LO <= c0 <= HI and LO <= c0 + c1 * (k - 1) <= HI):
                return 0, False, None
        if self.branch[1].endswith("u"):
            for c0, c1 in used[-1]:
                if c0 < 0 or c0 + c1 * (k - 1) < 0:
                    return 0, False, None
        writes, loaded, ffinal = self._execute(st, vt, used, k, exits)
        written = self.x_carried + (self.x_temps if exits else [])
        final = {r: _at(xs[r], k - 1, loaded) for r in written}

        def commit() -> None:
            writes()
            for r, v in final.items():
                st.x[r] = v
            for r, v in ffinal.items():
                st.f[r] = v
        return k, exits, commit

    # --- the batch itself --------------------------------------------------------------------
    def _execute(self, st: State, vt: SimpleNamespace | None, used: list[Any], k: int,
                 exits: bool) -> tuple[Callable[[], None], dict[int, np.ndarray],
                                       dict[int, int]]:
        """Compute every iteration's values and check them; returns the writes, the values
        loaded into integer registers (by load) and, leaving the loop, the f registers."""
        self.last_me = {}
        if vt is not None:  # a mask register inside a data group would be read two ways
            n = 1 << vt.lmul if vt.lmul > 0 else 1
            if any(g <= m < g + n for m in self.masks for g in self.data):
                raise Decline
        it = np.arange(k, dtype=np.int64)
        loaded: dict[int, np.ndarray] = {}
        fregs: dict[int, int | np.ndarray | Boxed] = {}
        vregs: dict[int, np.ndarray] = {}
        accs: dict[int, list[tuple]] = {}
        loads: list[tuple[int, int, int, int]] = []  # (spec index, start c0, c1, length)
        stores: list[tuple[int, Any, int, int, int, int, int, np.ndarray]] = []
        mem = st.mem

        def ints(v: IntVal) -> np.ndarray | int:
            if isinstance(v, int):
                return loaded[v]
            return v[0] if v[1] == 0 else v[0] + v[1] * it

        def freg(r: int) -> int | np.ndarray | Boxed:
            return fregs[r] if r in fregs else st.f[r]

        for j, sp in enumerate(self.specs):
            kind = sp[0]
            u = used[j]
            if kind == "ld":
                _, n, signed, rd, _, _, file = sp
                region, off0 = self._region(mem, u, 1, 0, n, k)
                vals = np.ndarray((k,), f"<{'i' if signed and file == 'x' else 'u'}{n}",
                                  region.buf, off0, (u[1],)).copy()
                loads.append((j, u[0], u[1], n))
                if file == "x":
                    loaded[j] = vals.astype(np.int64)
                else:
                    fregs[rd] = Boxed(vals) if n == 4 else vals
            elif kind == "st":
                _, n, rs2, _, _, file = sp
                (a0, a1), xv = u
                val = ints(xv) if file == "x" else _f64(freg(rs2))
                data = np.broadcast_to(np.asarray(val).astype(np.int64 if file == "x" else
                                                              np.uint64), (k,))
                data = (data.astype(np.uint64) & np.uint64((1 << (8 * n)) - 1)).astype(
                    f"<u{n}").view(np.uint8).reshape(k, n)
                stores.append((j, None, a0, a1, 1, 0, n, data))
            elif kind == "fsgnj":
                _, variant, fk, rd, r1, r2 = sp
                fregs[rd] = _sgnj(variant, fk, freg(r1), freg(r2))
            elif kind == "fmv.f.x":
                _, single, rd, _ = sp
                v = ints(u)
                if isinstance(v, np.ndarray):
                    fregs[rd] = Boxed(v.astype(np.uint32)) if single else v.astype(np.uint64)
                else:
                    fregs[rd] = BOX | (v & 0xFFFFFFFF) if single else v & M64
            elif kind == "vld":
                assert vt is not None
                _, eew, vd, *_ = sp
                self._group(vt, vd, eew)
                (b0, b1), stride = u
                nb = eew // 8
                s = nb if stride is None else stride[0]
                region, off0 = self._region(mem, (b0, b1), vt.vl, s, nb, k)
                vregs[vd] = np.ndarray((k, vt.vl), f"<u{nb}", region.buf, off0, (b1, s)).copy()
                self.last_me[vd] = sp[6]
                loads.append((j, b0, b1, (vt.vl - 1) * abs(s) + nb))
                if s < 0:
                    loads[-1] = (j, b0 + (vt.vl - 1) * s, b1, (vt.vl - 1) * -s + nb)
            elif kind == "vst":
                assert vt is not None
                _, eew, vs3, *_ = sp
                self._group(vt, vs3, eew)
                (b0, b1), stride = u
                nb = eew // 8
                s = nb if stride is None else stride[0]
                if vs3 in self.v_carried:
                    raise Decline
                vals = vregs[vs3] if vs3 in vregs else self._invariant(st, vt, vs3, "u")
                data = np.broadcast_to(vals, (k, vt.vl)).view(np.uint8).reshape(k, vt.vl, nb)
                stores.append((j, None, b0, b1, vt.vl, s, nb, data))
            elif kind in ("vew", "vcmp"):
                assert vt is not None
                self._vew(st, vt, j, sp, u, k, ints, freg, vregs, accs)
            elif kind == "vmlogic":
                assert vt is not None
                _, vd, vs2, vs1, fn, constant, me = sp
                bits = [self._mask(st, vt, vregs, r, constant) for r in (vs2, vs1)]
                vregs[vd] = np.ascontiguousarray(np.broadcast_to(fn(*bits), (k, vt.vl)))
                self.last_me[vd] = me
        assert vt is not None or not accs
        ffinal: dict[int, int] = {}
        finals: list[tuple[int, np.ndarray]] = []
        if exits:  # the leaving iteration's values stay in the registers
            ffinal = {r: int(np.asarray(_f64(v)).reshape(-1)[-1]) for r, v in fregs.items()}
            finals = [(r, v[-1]) for r, v in vregs.items()]
        return self._commit(st, vt, stores, loads, self._chains(accs, k, vt), k, exits,
                            finals), loaded, ffinal

    def _group(self, vt: SimpleNamespace, reg: int, eew: int) -> None:
        """EEW must be SEW (one group size in the whole body) and the group aligned."""
        if eew != vt.sew:
            raise Decline
        n = 1 << vt.lmul if vt.lmul > 0 else 1
        if reg % n or reg + n > 32:
            raise Decline

    @staticmethod
    def _mask(st: State, vt: SimpleNamespace, vregs: dict[int, np.ndarray], reg: int,
              constant: bool) -> np.ndarray:
        """Mask bits 0..vl-1 of a register: this batch's (per iteration) or the entry value
        (all defined, unless the instruction's result does not depend on them)."""
        v = vregs.get(reg)
        if v is None:
            bits, pois = mask_bits(st, reg, vt.vl)
            if pois is not None and not constant:
                raise Decline
            return bits
        if v.dtype != np.bool_:
            raise Decline  # data bits read as a mask
        return v

    def _invariant(self, st: State, vt: SimpleNamespace, reg: int, nk: str) -> np.ndarray:
        """A vector register the body only reads: its first vl elements, all defined."""
        nb = vt.sew // 8
        a = reg * st.vlenb
        if st.dirty & gmask(reg, max(1, (1 << vt.lmul) if vt.lmul > 0 else 1)) and \
                st.Pb[a:a + vt.vl * nb] != bytes(vt.vl * nb):
            raise Decline
        v = st.V[a:a + vt.vl * nb].view(UTYPE[vt.sew])
        return v if nk == "u" else v.view(KIND_T[nk][vt.sew])

    @staticmethod
    def _region(mem: Any, base: Affine, n: int, stride: int, nb: int, k: int) -> tuple[Any, int]:
        """The one region holding every iteration's elements (hull of the access), and the
        offset of iteration 0's first element in it."""
        b0, b1 = base
        ends = [b0, b0 + b1 * (k - 1)]
        ends += [e + stride * (n - 1) for e in ends]
        lo, hi = min(ends), max(ends) + nb
        region = mem.find(lo, hi - lo)  # raises outside one region: the batch declines
        return region, b0 - region.base

    def _vew(self, st: State, vt: SimpleNamespace, j: int, sp: tuple, u: list, k: int,
             ints: Callable, freg: Callable, vregs: dict[int, np.ndarray],
             accs: dict[int, list[tuple]]) -> None:
        """An element-wise instruction (``vew``) or a compare (``vcmp``) over all iterations."""
        sew, vl = vt.sew, vt.vl
        if sp[0] == "vcmp":
            _, vd, srcs, fn, _, me = sp
            guard = sel = None
            dkind = "b"
            check_overlap(vt, vd, 1, [(s[1], sew) for s in srcs if s[0] == "v"])  # type: ignore
        else:
            _, vd, _, dkind, srcs, fn, _, guard, sel, me = sp
            self._group(vt, vd, sew)
        if guard is not None:
            guard(vt)
        if (dkind == "f" or any(s[3] == "f" for s in srcs)) and sew not in FTYPE:
            raise Decline
        acc_reg = self.recur.get(j)
        args: list[np.ndarray] = []
        if sel:  # vmerge/vfmerge: the bits of v0 select
            m = vregs.get(0)
            if m is None:
                m, pois = mask_bits(st, 0, vl)
                if pois is not None:
                    raise Decline
            elif m.dtype != np.bool_:
                raise Decline
            args.append(m)
        acc_pos = -1
        for pos, (kind, val, _, nk) in enumerate(srcs):
            if kind == "v":
                self._group(vt, val, sew)
                if val == acc_reg:
                    acc_pos = len(args)
                    args.append(self._invariant(st, vt, val, nk).copy())
                elif val in vregs:
                    if vregs[val].dtype == np.bool_:
                        raise Decline  # a mask read as data
                    args.append(vregs[val].view(KIND_T[nk][sew]))
                else:
                    args.append(self._invariant(st, vt, val, nk))
            elif kind == "i":
                args.append(xscalar(val, sew, nk))
            elif kind == "x":
                v = ints(u[pos])
                if isinstance(v, np.ndarray):
                    bits = (v.astype(np.uint64) & np.uint64((1 << sew) - 1)).astype(UTYPE[sew])
                    args.append(bits.view(KIND_T[nk][sew]).reshape(k, 1))
                else:
                    args.append(xscalar(v, sew, nk))
            else:  # f
                v = freg(val)
                if isinstance(v, (np.ndarray, Boxed)):
                    args.append(_fbits(v, sew).reshape(k, 1))
                else:  # the same pattern every iteration: one element, as fscalar gives it
                    args.append(_fbits(np.array([v], np.uint64), sew))
        self.last_me[vd] = me
        if sp[0] == "vcmp":
            bits = np.asarray(fn(*[_flat(a, k, vl) for a in args]), bool)
            vregs[vd] = np.ascontiguousarray(np.broadcast_to(bits.reshape(-1), (k * vl,))
                                             ).reshape(k, vl)
            return
        t = KIND_T[dkind][sew]
        if acc_reg is None:
            res = np.asarray(fn(*[_flat(a, k, vl) for a in args]))
            if res.dtype != t:
                res = res.astype(t)
            vregs[vd] = np.ascontiguousarray(np.broadcast_to(res.reshape(-1), (k * vl,))
                                             ).view(UTYPE[sew]).reshape(k, vl)
            return
        accs.setdefault(vd, []).append((fn, args, acc_pos, t))  # run once all are known

    def _chains(self, accs: dict[int, list[tuple]], k: int, vt: SimpleNamespace | None
                ) -> dict[int, np.ndarray]:
        """Every accumulator's value after k iterations of its updates."""
        out: dict[int, np.ndarray] = {}
        groups: dict[tuple, list[int]] = {}
        for reg, ups in accs.items():
            if len(ups) == 1:
                out[reg] = self._recurrence(*ups[0], k, vt.vl)  # type: ignore[union-attr]
                continue
            signs = tuple(getattr(fn, "fma_signs", None) for fn, _, _, _ in ups)
            if all(sg is not None and pos == 0 for sg, (_, _, pos, _) in zip(signs, ups,
                                                                           strict=True)) \
                    and ups[0][3] == np.float32:
                groups.setdefault(tuple(cs for _, cs in signs), []).append(reg)  # type: ignore
            else:
                out[reg] = _stepped(ups, k)
        for cs, regs in groups.items():
            res = _fma32_chains([accs[r] for r in regs], cs, k, vt.vl)  # type: ignore[union-attr]
            for r, v in zip(regs, res or [_stepped(accs[r], k) for r in regs], strict=True):
                out[r] = v
        return out

    @staticmethod
    def _recurrence(fn: Callable, args: list[np.ndarray], acc_pos: int, t: type, k: int,
                    vl: int) -> np.ndarray:
        """The accumulator after k updates ``acc = fn(..acc..)``."""
        acc = args[acc_pos].astype(t)
        if len(args) == 2:
            x = np.broadcast_to(args[1 - acc_pos], (k, vl))
            if fn is vector.FP_BIN["vfadd"][1]:  # an ordered float sum, row after row
                run = np.empty((k + 1, vl), t)
                run[0] = acc
                run[1:] = x
                return fpu.canon(np.add.accumulate(run, axis=0, dtype=t)[-1])
            if fn is vector.INT_BIN["vadd"][1] and np.dtype(t).kind == "u":  # modular
                return (acc + x.sum(axis=0, dtype=t)).astype(t)
        return _stepped([(fn, args, acc_pos, t)], k)

    def _commit(self, st: State, vt: SimpleNamespace | None, stores: list, loads: list,
                accs: dict[int, np.ndarray], k: int, exits: bool,
                finals: list[tuple[int, np.ndarray]]) -> Callable[[], None]:
        """Aliasing checks now; every write of the batch in the returned function. When the
        batch ``exits`` the loop, every vector register the body writes (``finals`` and the
        accumulators) gets its last value through ``vwrite``/``mwrite``, as its last writer
        leaves it (tail and mask policies, undefined tails), at the body's vtype."""
        regions = []
        for j, _, a0, a1, n, s, nb, data in stores:
            fp = (a0 + min(0, s * (n - 1)), a1, abs(s) * (n - 1) + nb)  # one iteration's hull
            if k > 1 and abs(a1) < fp[2]:
                raise Decline  # iterations store over each other
            for lj, l0, l1, llen in loads:
                if not _disjoint(fp, (l0, l1, llen), k) and not (lj < j and (l0, l1, llen) == fp):
                    raise Decline  # a later iteration could read what an earlier one stored
            for _, other in regions:
                if not _disjoint(fp, other, k):
                    raise Decline
            region, off0 = self._region(st.mem, (a0, a1), n, s, nb, k)
            regions.append(((region, off0, a1, n, s, nb, data.reshape(k, n, nb)), fp))
        acc_bytes = [(reg * st.vlenb, np.ascontiguousarray(val).view(np.uint8), gmask(
            reg, (1 << vt.lmul) if vt.lmul > 0 else 1)) for reg, val in accs.items()
            if vt is not None]

        last_me = dict(self.last_me)

        def writes() -> None:
            for (region, off0, a1, n, s, nb, data), _ in regions:
                np.ndarray((k, n, nb), np.uint8, region.buf, off0, (a1, s, 1))[...] = data
            if not exits:  # the stepped last iteration writes the rest
                for a, raw, gm in acc_bytes:
                    st.V[a:a + raw.size] = raw
                    st.mfmt &= ~gm
                return
            assert vt is not None
            if any(sp[0] == "vsetvli" for sp in self.specs):
                st.set_vtype(vt.sew, vt.lmul, vt.vl, vt.vta, vt.vma)
            for reg, val in finals + list(accs.items()):
                if val.dtype == np.bool_:
                    mwrite(st, last_me[reg], reg, val, None, None, None)
                else:
                    vwrite(st, last_me[reg], reg, vt.sew, np.ascontiguousarray(val).view(
                        UTYPE[vt.sew]), None, None, None)
        return writes


def _at(v: IntVal, i: int, loaded: dict[int, np.ndarray]) -> int:
    """An integer register's value in iteration i (an affine form, or what a load gave)."""
    if isinstance(v, int):
        return int(loaded[v][i])
    return v[0] + v[1] * i


def _stepped(ups: list[tuple], k: int) -> np.ndarray:
    """An accumulator through its updates (fn, operands, its position, dtype) in program
    order, iteration by iteration, with each instruction's own function: exact for anything."""
    acc = ups[0][1][ups[0][2]].astype(ups[0][3])
    for i in range(k):
        for fn, args, pos, t in ups:
            call = [acc if p == pos else (a[i] if a.ndim == 2 else a) for p, a in enumerate(args)]
            acc = np.asarray(fn(*call)).astype(t)
    return acc


def _fma32_chains(chains: list[list[tuple]], cs: tuple[float, ...], k: int, vl: int
                  ) -> list[np.ndarray] | None:
    """Float32 accumulators, each updated m times per iteration by ``vd = ±(s*v) ± vd`` (the
    addend sign ``cs`` per update, the same for every chain), stacked and run together.

    The products of float32 operands are exact in float64, so all of them are formed at once;
    then each step is one float64 add (or subtract) of the accumulator and one rounding to
    float32: what ``fpu.fma32`` does, less its fix-up of a float64 sum that lands on a float32
    midpoint or in the float32 subnormal range. Such sums are looked for afterwards over all
    steps at once; the first step that has one is redone with the instruction's own function
    and the chain resumes after it (None, for the stepped path, if that keeps happening).
    NaNs are made canonical at the end (a NaN accumulator stays NaN whatever its payload)."""
    n, m = len(chains), len(chains[0])
    prod = np.empty((k, m, n, vl), np.float64)
    for ci, ups in enumerate(chains):
        for q, (fn, args, _, _) in enumerate(ups):
            prod[:, q, ci, :] = (args[1].astype(np.float64) * fn.fma_signs[0]) * \
                args[2].astype(np.float64)
    steps = k * m
    prod = prod.reshape(steps, n, vl)
    accs = np.empty((steps + 1, n, vl), np.float32)  # accs[t]: the accumulators before step t
    accs[0] = np.stack([ups[0][1][0] for ups in chains])
    ops = [np.add if c > 0 else np.subtract for c in cs]
    sign = np.array(cs, np.float64).reshape(1, m, 1, 1)
    prod_rows, acc_rows = list(prod), list(accs)
    start = 0
    for _ in range(8):
        for t in range(start, steps):  # the float64 sum, rounded to float32 on the way out
            ops[t % m](prod_rows[t], acc_rows[t], out=acc_rows[t + 1], dtype=np.float64,
                       casting="same_kind")
        # the float64 sums again, all at once, for fpu.fma32's double-rounding test
        sums = (prod.reshape(k, m, n, vl) + sign * accs[:-1].reshape(k, m, n, vl)).reshape(
            steps, n, vl)[start:]
        bits = sums.view(np.uint64)
        mag = bits & np.uint64(0x7FFFFFFFFFFFFFFF)
        risky = ((bits & np.uint64(0x1FFFFFFF)) == np.uint64(0x10000000)) | (
            (mag - np.uint64(1)) < np.uint64(fpu.TINY32 - 1))
        hit = np.flatnonzero(risky.reshape(len(sums), -1).any(axis=1))
        if not hit.size:
            break
        t = start + int(hit[0])  # steps before t were exact: redo t exactly, go on after it
        i, q = divmod(t, m)
        for ci, ups in enumerate(chains):
            fn, args, _, _ = ups[q]
            accs[t + 1, ci] = fn(accs[t, ci], *[a[i] if a.ndim == 2 else a for a in args[1:]])
        start = t + 1
    else:
        return None
    return [fpu.canon(a) for a in accs[-1]]


def _disjoint(x: tuple[int, int, int], y: tuple[int, int, int], k: int) -> bool:
    """Whether two accesses (start, step per iteration, bytes per iteration) share no byte
    over k iterations: their hulls are apart, or they advance together and sit in separate
    parts of every step (a vector strip and a scalar beside it)."""
    (x0, x1, xl), (y0, y1, yl) = x, y
    xh = (min(x0, x0 + x1 * (k - 1)), max(x0, x0 + x1 * (k - 1)) + xl)
    yh = (min(y0, y0 + y1 * (k - 1)), max(y0, y0 + y1 * (k - 1)) + yl)
    if xh[1] <= yh[0] or yh[1] <= xh[0]:
        return True
    if x1 != y1 or x1 == 0 or abs(x1) < max(xl, yl):
        return False
    d = (y0 - x0) % abs(x1)
    return d >= xl and d + yl <= abs(x1)


def _flat(a: np.ndarray, k: int, vl: int) -> np.ndarray:
    """An operand over all iterations as one flat array (scalars stay 1-element)."""
    if a.ndim == 1:
        return a if a.size == 1 else np.broadcast_to(a, (k, vl)).reshape(-1)
    return np.broadcast_to(a, (k, vl)).reshape(-1)


class Boxed:
    """Per-iteration singles, NaN-boxed in their f register (``flw``, ``fmv.w.x``): the
    float32 patterns, without building the 64-bit ones unless something needs them."""

    __slots__ = ("u32",)

    def __init__(self, u32: np.ndarray) -> None:
        self.u32 = u32


def _f64(v: int | np.ndarray | Boxed) -> int | np.ndarray:
    """The raw 64-bit register patterns."""
    if isinstance(v, Boxed):
        return v.u32.astype(np.uint64) | np.uint64(BOX)
    return v


def _fbits(v: np.ndarray | Boxed, sew: int) -> np.ndarray:
    """Per-iteration f-register patterns as ``fscalar`` reads them at SEW."""
    if isinstance(v, Boxed):
        if sew == 32:
            return v.u32.view(np.float32)
        v = _f64(v)  # type: ignore[assignment]
    if sew == 32:
        boxed = (v >> np.uint64(32)) == np.uint64(0xFFFFFFFF)
        return np.where(boxed, v & np.uint64(0xFFFFFFFF), np.uint64(0x7FC00000)).astype(
            np.uint32).view(np.float32)
    if sew == 64:
        return v.view(np.float64)  # type: ignore[union-attr]
    raise Decline


def _sgnj(kind: str, k: str, a: int | np.ndarray | Boxed, b: int | np.ndarray | Boxed
          ) -> int | np.ndarray | Boxed:
    """``scalar.sgnj_bits`` over per-iteration patterns."""
    if isinstance(a, int) and isinstance(b, int):
        return sgnj_bits(kind, k, a, b)
    if kind == "j" and a is b and (k == "d" or isinstance(a, Boxed)):
        return a  # fsgnj x, y, y is a move (fmv): the pattern itself
    if k == "s" and isinstance(a, Boxed) and isinstance(b, Boxed):
        sign = np.uint32(1 << 31)
        ua, ub = a.u32, b.u32
        sb = ub & sign if kind == "j" else ~ub & sign if kind == "n" else (ua ^ ub) & sign
        return Boxed((ua & ~sign) | sb)
    a, b = _f64(a), _f64(b)
    a = np.asarray(a, np.uint64)
    b = np.asarray(b, np.uint64)
    if k == "s":
        m32, qnan = np.uint64(0xFFFFFFFF), np.uint64(0x7FC00000)
        a = np.where((a >> np.uint64(32)) == m32, a & m32, qnan)
        b = np.where((b >> np.uint64(32)) == m32, b & m32, qnan)
        sign = np.uint64(1 << 31)
    else:
        sign = np.uint64(1 << 63)
    s = b & sign if kind == "j" else ~b & sign if kind == "n" else (a ^ b) & sign
    r = (a & (sign - np.uint64(1))) | s
    return r | np.uint64(BOX) if k == "s" else r
