"""The ``ptx`` dialect: NVIDIA PTX ISA 8.x instructions as xDSL ops, and their text emitter.

Shaped like xDSL's riscv dialect: one small op class per instruction family, generated from a
table, grouped by operand shape in a few abstract bases (``d = op a, b``, ``d = op a, b, c``,
memory, control, warp collectives). Operands are PTX operand *text* (``%f3``, ``0f3F800000``,
``[%rd4+16]``): PTX is already register-allocated virtual-register code, so SSA values would only
add a second naming layer between the lowering and the text ptxas and ptxsim read. What the
verifiers check is what ptxas would reject: a type qualifier the family does not take, a state
space ld/st/atom cannot address, the wrong operand count.

Reference: PTX ISA 8.x, https://docs.nvidia.com/cuda/parallel-thread-execution/ (sections
"Instructions" 9.7.x). The emitter prints each op from a template (``emit_module``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import ClassVar

from xdsl.dialects.builtin import ArrayAttr, IntegerAttr, StringAttr, i64
from xdsl.ir import Attribute, Block, Dialect, Region
from xdsl.irdl import (
    IRDLOperation,
    irdl_op_definition,
    opt_prop_def,
    prop_def,
    region_def,
    traits_def,
)
from xdsl.traits import NoTerminator
from xdsl.utils.exceptions import VerifyException

PTX_VERSION = "8.0"
SUPPORTED_SM = (80, 90)

INT_TYPES = ("s8", "s16", "s32", "s64", "u8", "u16", "u32", "u64")
BIT_TYPES = ("b8", "b16", "b32", "b64", "pred")
FLOAT_TYPES = ("f16", "bf16", "f32", "f64")
ALL_TYPES = INT_TYPES + BIT_TYPES + FLOAT_TYPES + ("f16x2", "bf16x2", "tf32")
STATE_SPACES = ("param", "global", "shared", "local")
_TYPE_RE = re.compile(r"\.(" + "|".join(sorted(ALL_TYPES, key=len, reverse=True)) + r")\b")


def _strs(values: Sequence[str]) -> ArrayAttr:
    return ArrayAttr([StringAttr(v) for v in values])


class PtxInstruction(IRDLOperation):
    """One PTX instruction: ``[@guard] mnemonic.qualifiers operand, ...;``.

    Subclasses fix the mnemonic, how many operands it takes and which type qualifiers are legal."""

    qual = prop_def(StringAttr)
    args = prop_def(ArrayAttr)
    guard = opt_prop_def(StringAttr)
    line = opt_prop_def(IntegerAttr)

    MNEMONIC: ClassVar[str] = ""
    ARITY: ClassVar[tuple[int, ...]] = ()
    TYPES: ClassVar[tuple[str, ...]] = ALL_TYPES

    @classmethod
    def build_ins(cls, qual: str, operands: Sequence[str], guard: str | None = None
                  ) -> PtxInstruction:
        props: dict[str, Attribute] = {"qual": StringAttr(qual), "args": _strs(operands)}
        if guard:
            props["guard"] = StringAttr(guard)
        return cls.create(properties=props)

    @property
    def operand_texts(self) -> list[str]:
        return [a.data for a in self.args.data]  # type: ignore[union-attr]

    def types(self) -> list[str]:
        return _TYPE_RE.findall(self.qual.data)

    def verify_(self) -> None:
        where = f"ptx {self.MNEMONIC}{self.qual.data}"
        n = len(self.args.data)
        if self.ARITY and n not in self.ARITY:
            raise VerifyException(f"{where}: takes {' or '.join(map(str, self.ARITY))} "
                                  f"operands, got {n}")
        for t in self.types():
            if t not in self.TYPES:
                raise VerifyException(f"{where}: type .{t} is not legal here (legal: "
                                      f"{', '.join(self.TYPES)})")

    def text(self) -> str:
        g = f"@{self.guard.data} " if self.guard is not None else ""
        ops = ", ".join(self.operand_texts)
        return f"{g}{self.MNEMONIC}{self.qual.data}{' ' if ops else ''}{ops};"


class RdRsRs(PtxInstruction):
    """``d = a (op) b``."""

    ARITY: ClassVar[tuple[int, ...]] = (3,)


class RdRs(PtxInstruction):
    """``d = op(a)``."""

    ARITY: ClassVar[tuple[int, ...]] = (2,)


class RdRsRsRs(PtxInstruction):
    """``d = op(a, b, c)``."""

    ARITY: ClassVar[tuple[int, ...]] = (4,)


class MemoryInstruction(PtxInstruction):
    """Loads/stores/atomics name a state space first in their qualifiers."""

    def verify_(self) -> None:
        super().verify_()
        space = self.qual.data.split(".")[1] if self.qual.data.startswith(".") else ""
        if space not in STATE_SPACES:
            raise VerifyException(f"ptx {self.MNEMONIC}{self.qual.data}: state space "
                                  f"'.{space}' is not one of {STATE_SPACES}")


class Control(PtxInstruction):
    """Branches, barriers, returns: no data result."""


#: mnemonic -> (base, one-line semantics, legal types); the op classes below are generated
_NUM = INT_TYPES + FLOAT_TYPES + ("f16x2", "bf16x2")
_BITS = BIT_TYPES + INT_TYPES
_TABLE: dict[str, tuple[type[PtxInstruction], str, tuple[str, ...]]] = {
    "add": (RdRsRs, "d = a + b", _NUM), "sub": (RdRsRs, "d = a - b", _NUM),
    "mul": (RdRsRs, "d = a * b (.lo/.hi/.wide for integers)", _NUM),
    "div": (RdRsRs, "d = a / b (integers truncate)", _NUM),
    "rem": (RdRsRs, "d = a % b (C remainder)", INT_TYPES),
    "min": (RdRsRs, "d = min(a, b) (.NaN propagates NaN)", _NUM),
    "max": (RdRsRs, "d = max(a, b) (.NaN propagates NaN)", _NUM),
    "and": (RdRsRs, "d = a & b", _BITS), "or": (RdRsRs, "d = a | b", _BITS),
    "xor": (RdRsRs, "d = a ^ b", _BITS),
    "shl": (RdRsRs, "d = a << b (b > width gives 0)", _BITS),
    "shr": (RdRsRs, "d = a >> b (arithmetic for .s types)", _BITS),
    "setp": (RdRsRs, "p = a (cmp) b", _NUM + _BITS),
    "copysign": (RdRsRs, "d = |b| with the sign of a", FLOAT_TYPES),
    "mad": (RdRsRsRs, "d = a * b + c (.lo/.wide)", _NUM),
    "fma": (RdRsRsRs, "d = a * b + c rounded once", FLOAT_TYPES + ("f16x2", "bf16x2")),
    "selp": (RdRsRsRs, "d = c ? a : b", _NUM + _BITS),
    "bfe": (RdRsRsRs, "d = sign/zero-extended bits [b, b + c) of a", INT_TYPES + BIT_TYPES),
    "mov": (RdRs, "d = a", ALL_TYPES), "neg": (RdRs, "d = -a", _NUM),
    "abs": (RdRs, "d = |a|", _NUM), "not": (RdRs, "d = ~a", _BITS),
    "rcp": (RdRs, "d = 1 / a", FLOAT_TYPES), "sqrt": (RdRs, "d = sqrt(a)", FLOAT_TYPES),
    "rsqrt": (RdRs, "d = 1 / sqrt(a) (approx)", FLOAT_TYPES),
    "ex2": (RdRs, "d = 2^a (approx)", FLOAT_TYPES), "lg2": (RdRs, "d = log2(a) (approx)",
                                                             FLOAT_TYPES),
    "sin": (RdRs, "d = sin(a) (approx)", FLOAT_TYPES), "cos": (RdRs, "d = cos(a) (approx)",
                                                              FLOAT_TYPES),
    "cvt": (RdRs, "d = convert(a) with the rounding modifier", ALL_TYPES),
    "cvta": (RdRs, "d = generic <-> state-space address", ("u32", "u64")),
    "ld": (MemoryInstruction, "d = space[a]", ALL_TYPES),
    "st": (MemoryInstruction, "space[a] = b", ALL_TYPES),
    "atom": (MemoryInstruction, "d = space[a]; space[a] = op(space[a], b) atomically", ALL_TYPES),
    "red": (MemoryInstruction, "space[a] = op(space[a], b) atomically", ALL_TYPES),
    "shfl": (PtxInstruction, "d = a from lane f(lane, b, c) among the mask's lanes", ("b32",)),
    "bra": (Control, "jump to the label (uniformly or per guard)", ()),
    "bar": (Control, "block-wide barrier: wait until all threads arrive", ()),
    "ret": (Control, "thread exits", ()),
    "mma": (PtxInstruction, "D = A * B + C on a warp's fragments", ALL_TYPES),
    "ldmatrix": (PtxInstruction, "warp loads 8x8 b16 matrices from shared memory", ("b16",)),
    "cp": (PtxInstruction, "cp.async: asynchronous global -> shared copy", ()),
}


def _make(mn: str, base: type[PtxInstruction], doc: str, types: tuple[str, ...]
          ) -> type[PtxInstruction]:
    cls = type(f"{mn.capitalize()}Op", (base,), {
        "__doc__": f"``{doc}``", "name": f"ptx.{mn}", "MNEMONIC": mn, "TYPES": types,
        "__module__": __name__,
        "__annotations__": {"MNEMONIC": ClassVar[str], "TYPES": ClassVar[tuple[str, ...]]},
    })
    return irdl_op_definition(cls)  # type: ignore[arg-type]


INSTRUCTIONS: dict[str, type[PtxInstruction]] = {
    mn: _make(mn, base, doc, types) for mn, (base, doc, types) in _TABLE.items()}


@irdl_op_definition
class LabelOp(IRDLOperation):
    """A branch target ``$L:``."""

    name = "ptx.label"
    label = prop_def(StringAttr)

    def text(self) -> str:
        return f"{self.label.data}:"


@irdl_op_definition
class EntryOp(IRDLOperation):
    """``.visible .entry name(params) { body }``: one kernel. ``params`` are ``.u64`` pointers
    or ``.u32`` scalars (``"name:type"``); ``shared`` declares static shared arrays
    (``"name:bytes:align"``)."""

    name = "ptx.entry"
    sym_name = prop_def(StringAttr)
    params = prop_def(ArrayAttr)
    shared = prop_def(ArrayAttr)
    body = region_def("single_block")
    traits = traits_def(NoTerminator())

    @staticmethod
    def make(name: str, params: Sequence[str], shared: Sequence[str],
             ops: Sequence[IRDLOperation]) -> EntryOp:
        return EntryOp.create(properties={"sym_name": StringAttr(name), "params": _strs(params),
                                          "shared": _strs(shared)},
                              regions=[Region(Block(list(ops)))])

    def verify_(self) -> None:
        for p in self.params.data:
            _, _, ty = p.data.partition(":")  # type: ignore[union-attr]
            if ty not in ("u64", "u32", "s32", "f32"):
                raise VerifyException(f"ptx.entry {self.sym_name.data}: param type '{ty}'")


@irdl_op_definition
class PtxModuleOp(IRDLOperation):
    """A PTX module: ``.version``, ``.target sm_XX``, ``.address_size 64`` and its entries."""

    name = "ptx.module"
    sm = prop_def(IntegerAttr)
    body = region_def("single_block")
    traits = traits_def(NoTerminator())

    @staticmethod
    def make(sm: int, entries: Sequence[EntryOp]) -> PtxModuleOp:
        return PtxModuleOp.create(properties={"sm": IntegerAttr(sm, i64)},
                                  regions=[Region(Block(list(entries)))])

    def verify_(self) -> None:
        if self.sm.value.data not in SUPPORTED_SM:
            raise VerifyException(f"ptx.module: sm_{self.sm.value.data} is not one of "
                                  f"{SUPPORTED_SM}")

    @property
    def entries(self) -> list[EntryOp]:
        return [op for op in self.body.block.ops if isinstance(op, EntryOp)]


Ptx = Dialect("ptx", [*INSTRUCTIONS.values(), LabelOp, EntryOp, PtxModuleOp], [])


def ins(mnemonic: str, operands: Sequence[str], guard: str | None = None) -> PtxInstruction:
    """Build an instruction from its full mnemonic text: ``ins("add.rn.f32", ["%f1", ...])``."""
    head, dot, qual = mnemonic.partition(".")
    try:
        cls = INSTRUCTIONS[head]
    except KeyError:
        raise VerifyException(f"ptx: unknown instruction '{head}'") from None
    return cls.build_ins(dot + qual, operands, guard)


# ------------------------------------------------------------------------------------ emitter

#: register prefix -> declared type; the lowering names registers by class with these prefixes
REG_CLASSES = {"%p": "pred", "%h": "b16", "%r": "b32", "%rd": "b64", "%f": "f32", "%fd": "f64"}
_REG_RE = re.compile(r"(%(?:rd|fd|p|h|r|f))(\d+)\b")


def _reg_decls(lines: list[str]) -> list[str]:
    top: dict[str, int] = {}
    for ln in lines:
        for pre, num in _REG_RE.findall(ln):
            top[pre] = max(top.get(pre, 0), int(num))
    return [f"\t.reg .{REG_CLASSES[p]} {p}<{n + 1}>;" for p, n in sorted(top.items())]


def emit_entry(e: EntryOp) -> str:
    """One ``.entry`` as text: parameters, register and shared declarations, instructions."""
    name = e.sym_name.data
    params = []
    for p in e.params.data:
        pname, _, ty = p.data.partition(":")  # type: ignore[union-attr]
        params.append(f"\t.param .{ty} {pname}")
    body = [op.text() for op in e.body.block.ops]  # type: ignore[attr-defined]
    body = [("" if b.endswith(":") else "\t") + b for b in body if b]
    shared = []
    for s in e.shared.data:
        sname, nbytes, align = s.data.split(":")  # type: ignore[union-attr]
        shared.append(f"\t.shared .align {align} .b8 {sname}[{nbytes}];")
    head = f".visible .entry {name}(\n" + ",\n".join(params) + "\n)\n{\n"
    return head + "\n".join(_reg_decls(body) + shared + body) + "\n}\n"


def emit_module(m: PtxModuleOp) -> str:
    """The module as PTX text ptxas and ptxsim read."""
    sm = m.sm.value.data
    head = f"//\n// generated by portc\n//\n.version {PTX_VERSION}\n.target sm_{sm}\n" \
           ".address_size 64\n\n"
    return head + "\n".join(emit_entry(e) for e in m.entries)
