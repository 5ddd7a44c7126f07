"""Machine state, operand decoding and the mnemonic -> semantics table shared by all ISA parts.

Each mnemonic registers a *signature* (one letter per operand) and a *builder*. The builder runs
once per static instruction, with its operands already decoded to register numbers, immediates
and instruction indices, and returns a closure ``op(state) -> next_pc``; the dispatch loop then
only calls closures. Signature letters:

    x int register   f fp register   v vector register   i immediate   a memory ``off(xN)``
    l label          m optional trailing ``v0.t``        r optional trailing rounding mode
    t vtype list (``e32, m1, ta, ma``)                   c CSR name
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from portc.runtimes.rvvsim.errors import AsmSyntaxError
from portc.runtimes.rvvsim.memory import Memory
from portc.runtimes.rvvsim.parser import Instr, Operand, Program

TEXT_BASE = 0x0001_0000
RET_SENTINEL = 0x0000_0FF0  # ra at entry: a return to it ends the call
HALT = -1

XNAMES = ["zero", "ra", "sp", "gp", "tp", "t0", "t1", "t2", "s0", "s1"] + [
    f"a{i}" for i in range(8)] + [f"s{i}" for i in range(2, 12)] + [f"t{i}" for i in range(3, 7)]
FNAMES = [f"ft{i}" for i in range(8)] + ["fs0", "fs1"] + [f"fa{i}" for i in range(8)] + [
    f"fs{i}" for i in range(2, 12)] + [f"ft{i}" for i in range(8, 12)]
XREG = {n: i for i, n in enumerate(XNAMES)} | {f"x{i}": i for i in range(32)} | {"fp": 8}
FREG = {n: i for i, n in enumerate(FNAMES)} | {f"f{i}": i for i in range(32)}
VREG = {f"v{i}": i for i in range(32)}
ROUNDING = ("rne", "rtz", "rdn", "rup", "rmm", "dyn")
CSRS = ("vl", "vtype", "vlenb", "frm", "fflags", "fcsr", "vstart")

M64 = (1 << 64) - 1


def s64(v: int) -> int:
    """Wrap a Python int to a signed 64-bit register value."""
    v &= M64
    return v - (1 << 64) if v >> 63 else v


def sext(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def gmask(reg: int, n: int) -> int:
    """Bit mask of registers reg..reg+n-1 (``State.dirty``/``State.mfmt`` are such masks)."""
    return ((1 << n) - 1) << reg


#: interned vtype/vl configurations (``State.vcfg``): equal configurations are one object, so
#: a cached per-instruction plan is valid exactly when its configuration ``is`` the current one
_CFGS: dict[tuple, tuple] = {}


class State:
    """Architectural state. x: signed Python ints; f: raw 64-bit patterns; V/P: vector bytes
    and their per-bit "undefined" (poison) map, 32 registers of VLEN/8 bytes laid end to end
    (``Pb`` is the bytearray behind ``P``: comparing a slice of it with zero bytes is the
    cheapest "is this span defined" test); O: per byte, the id of the instruction that made it
    undefined (for error messages)."""

    __slots__ = ("x", "f", "V", "P", "Pb", "O", "origins", "origin_ids", "vl", "sew", "lmul",
                 "vta", "vma", "vill", "vlen", "vlenb", "mem", "program", "frm", "dirty", "OM",
                 "mfmt", "vcfg")

    def __init__(self, vlen: int, mem: Memory, program: Program) -> None:
        self.x = [0] * 32
        self.f = [0] * 32
        self.vlen = vlen
        self.vlenb = vlen // 8
        self.V = np.zeros(32 * self.vlenb, np.uint8)
        self.Pb = bytearray(32 * self.vlenb)
        self.P = np.frombuffer(self.Pb, np.uint8)
        # O: per byte, which event left it undefined (index into origins; read only where P != 0)
        self.O = np.zeros(32 * self.vlenb, np.int32)
        # OM: per mask *bit* origins, valid for registers last written as masks (bit r of mfmt)
        self.OM = np.zeros((32, vlen), np.int32)
        self.mfmt = 0
        # bit r of dirty: register r may hold undefined bytes (a clear bit proves P is zero there)
        self.dirty = 0
        self.origins: list[str] = [""]
        self.origin_ids: dict[str, int] = {}
        self.vl = 0
        self.sew = 8
        self.lmul = 0  # log2
        self.vta = self.vma = False
        self.vill = True
        self.vcfg: tuple | None = None  # (sew, lmul, vl, vta, vma), interned; None when vill
        self.frm = 0  # dynamic rounding mode (0 = rne)
        self.mem = mem
        self.program = program

    def origin_id(self, text: str) -> int:
        """Intern the description of an event that makes elements undefined."""
        i = self.origin_ids.get(text)
        if i is None:
            i = self.origin_ids[text] = len(self.origins)
            self.origins.append(text)
        return i

    def set_vtype(self, sew: int, lmul: int, vl: int, vta: bool, vma: bool) -> None:
        """A successful vsetvl*: the fields and the interned configuration they form."""
        self.vill, self.sew, self.lmul, self.vl, self.vta, self.vma = False, sew, lmul, vl, vta, vma
        key = (sew, lmul, vl, vta, vma)
        self.vcfg = _CFGS.setdefault(key, key)

    def set_vill(self) -> None:
        self.vill, self.vl, self.vcfg = True, 0, None

    @property
    def vtype(self) -> int:
        if self.vill:
            return 1 << 63
        sew_code = {8: 0, 16: 1, 32: 2, 64: 3}[self.sew]
        return (self.lmul & 7) | sew_code << 3 | int(self.vta) << 6 | int(self.vma) << 7


Op = Callable[[State], int]


@dataclass(frozen=True)
class Ctx:
    """What a builder knows about the static instruction it compiles."""

    instr: Instr
    program: Program
    mnemonic: str

    @property
    def nxt(self) -> int:
        return self.instr.index + 1

    @property
    def where(self) -> str:
        return f"line {self.instr.line} `{self.instr.text}`"


Builder = Callable[[Ctx, list], Op]
TABLE: dict[str, list[tuple[str, Builder]]] = {}

#: wraps an unbounded Python int ``v`` to a signed 64-bit value in inlined code (see ``inline``)
WRAP = "v if -0x8000000000000000 <= v <= 0x7FFFFFFFFFFFFFFF else s64(v)"


def inline(op: Op, lines: tuple[str, ...] = (), ret: str | None = None) -> Op:
    """Attach the same semantics as Python source, for the block compiler (``blocks.py``) to
    paste into a basic block's function instead of calling ``op``: a hot scalar instruction
    then costs a few bytecodes, not a call. ``lines`` are statements over ``x``/``f`` (the
    register lists), ``v`` (scratch) and ``s64``; ``ret`` is the next-index expression of a
    control-flow instruction. The closure stays the reference: the single-step path (and the
    instruction-limit path) runs it, and the qemu differential tests run both."""
    op.inline = lines  # type: ignore[attr-defined]
    op.inline_ret = ret  # type: ignore[attr-defined]
    return op


def spec(op: Op, *desc: object) -> Op:
    """Attach what the loop batcher (``batch.py``) needs to run this instruction over many
    iterations at once: a tuple whose first item names the kind (``alu``, ``vew``, ``vld``...).
    Instructions without one make their loop run instruction by instruction."""
    op.spec = desc  # type: ignore[attr-defined]
    return op


def isa(names: str | list[str], sig: str) -> Callable[[Builder], Builder]:
    """Register a builder for every mnemonic in ``names`` (space separated or a list); a
    mnemonic registered twice gets alternative signatures (``jal label`` / ``jal rd, label``),
    tried in registration order."""
    names_l = names.split() if isinstance(names, str) else names

    def reg(fn: Builder) -> Builder:
        for n in names_l:
            TABLE.setdefault(n, []).append((sig, fn))
        return fn

    return reg


def _bad(c: Ctx, what: str) -> AsmSyntaxError:
    return AsmSyntaxError(f"{c.program.source}:{c.instr.line}: {what} in `{c.instr.text}`")


def decode(c: Ctx, sig: str) -> list:
    """Check the raw operands against ``sig`` and turn them into numbers."""
    ops: list[Operand] = list(c.instr.operands)
    out: list = []
    i = 0
    for k, letter in enumerate(sig):
        if letter == "t":
            toks = [str(v) if kind == "name" else None for kind, v in ops[i:]]
            if not toks or None in toks:
                raise _bad(c, "expected vtype operands (e8..e64, m1..m8/mf2..mf8, ta/tu, ma/mu)")
            out.append(toks)
            i = len(ops)
            continue
        optional = letter in "mr"
        if i >= len(ops):
            if optional:
                out.append(False if letter == "m" else "dyn")
                continue
            raise _bad(c, f"too few operands (expected {len(sig.replace('m', '').replace('r', ''))})")
        kind, val = ops[i]
        if letter == "m":
            if kind == "name" and val == "v0.t":
                out.append(True)
                i += 1
                continue
            raise _bad(c, f"operand {k + 1} must be the mask operand v0.t")
        if letter == "r":
            if kind == "name" and val in ROUNDING:
                out.append(val)
                i += 1
                continue
            raise _bad(c, f"operand {k + 1} must be a rounding mode ({', '.join(ROUNDING)})")
        i += 1
        if letter in "xfv":
            table = {"x": XREG, "f": FREG, "v": VREG}[letter]
            if kind != "name" or val not in table:
                what = {"x": "an integer", "f": "a floating-point", "v": "a vector"}[letter]
                raise _bad(c, f"operand {k + 1} must be {what} register, got {_show(kind, val)}")
            out.append(table[val])
        elif letter == "i":
            if kind != "imm":
                raise _bad(c, f"operand {k + 1} must be an immediate, got {_show(kind, val)}")
            out.append(val)
        elif letter == "a":
            if kind != "mem" or val[1] not in XREG:
                raise _bad(c, f"operand {k + 1} must be a memory operand off(reg), "
                              f"got {_show(kind, val)}")
            out.append((val[0], XREG[val[1]]))
        elif letter == "l":
            if kind == "label":
                out.append(val)
            elif kind == "name" and val in c.program.labels:
                out.append(c.program.labels[val])
            else:
                raise _bad(c, f"operand {k + 1}: unknown label {_show(kind, val)}")
        elif letter == "c":
            if kind != "name" or val not in CSRS:
                raise _bad(c, f"operand {k + 1}: unsupported CSR {_show(kind, val)}")
            out.append(val)
        else:  # pragma: no cover - table error
            raise AssertionError(letter)
    if i < len(ops):
        raise _bad(c, f"too many operands ({len(ops)} given)")
    return out


def _show(kind: str, val: object) -> str:
    if kind == "mem":
        off, reg = val  # type: ignore[misc]
        return f"'{off}({reg})'"
    return f"'{val}'"
