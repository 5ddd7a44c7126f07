"""The ``rvv`` dialect: RV64GC + RVV 1.0 instructions after register allocation.

Shaped like xDSL's ``xdsl/dialects/riscv``: every instruction is a small op class whose docstring
is its one-line semantics (RISC-V ISA manual vol. I and the RVV 1.0 spec,
https://github.com/riscv/riscv-v-spec/releases/tag/v1.0), and operand shapes live in a few
abstract bases (vector-vector, vector-scalar, vector-immediate, unary, loads/stores, vsetvli,
scalar R/I types, branches). Instructions are generated from one table (mnemonic -> base,
semantics) because they differ only in the mnemonic and the docstring.

Registers are already allocated: operands are properties holding register names (``v8``,
``ft0``, ``a3``), immediates or labels, never SSA values, because the dialect's only consumer is
the emitter and the register allocation happened in ``passes/lower_rvv.py``. A vector operand may
name a register *group*; ``group`` (the LMUL/EMUL register count of the destination and sources)
lets the verifier check group alignment. The emitter (``emit_asm``) prints GNU-as text from each
op's ``FORMAT`` template, table-driven.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import ClassVar

from xdsl.dialects.builtin import IntegerAttr, StringAttr, i64
from xdsl.ir import Block, Dialect, Region
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

X_REGS = ("zero", "ra", "sp", "gp", "tp", "t0", "t1", "t2", "s0", "s1", "a0", "a1", "a2", "a3",
          "a4", "a5", "a6", "a7", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11",
          "t3", "t4", "t5", "t6")
F_REGS = tuple([f"ft{i}" for i in range(8)] + ["fs0", "fs1"] + [f"fa{i}" for i in range(8)]
               + [f"fs{i}" for i in range(2, 12)] + [f"ft{i}" for i in range(8, 12)])
V_REGS = tuple(f"v{i}" for i in range(32))
_IMM = re.compile(r"^-?\d+$")
_LABEL = re.compile(r"^[.A-Za-z_][\w.$]*$|^\d+[fb]$")
_VTYPE = re.compile(r"^e(8|16|32|64), m(f8|f4|f2|1|2|4|8), t[au], m[au]$")

#: operand kinds a field may hold: x/f/v registers, an immediate, a label, a vtype string,
#: a memory operand ``imm(xreg)`` split into two fields, or a mask operand
KIND_CHECK = {
    "x": lambda s: s in X_REGS,
    "f": lambda s: s in F_REGS,
    "v": lambda s: s in V_REGS,
    "imm": lambda s: bool(_IMM.match(s)),
    "label": lambda s: bool(_LABEL.match(s)),
    "vtype": lambda s: bool(_VTYPE.match(s)),
}


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise VerifyException(msg)


class RvvInstrOp(IRDLOperation):
    """One assembly instruction. ``FIELDS`` lists (property name, operand kind) in assembly
    order; ``FORMAT`` prints them. ``vm`` is ``v0.t`` for a masked instruction, ``v0`` for the
    merge carrier of vmerge/vadc-style ops, empty otherwise."""

    MNEMONIC: ClassVar[str] = ""
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = ()
    FORMAT: ClassVar[str] = ""
    #: vector fields whose register group is ``group`` registers (others are single masks)
    GROUPED: ClassVar[tuple[str, ...]] = ()

    a = opt_prop_def(StringAttr)
    b = opt_prop_def(StringAttr)
    c = opt_prop_def(StringAttr)
    d = opt_prop_def(StringAttr)
    vm = opt_prop_def(StringAttr)
    group = opt_prop_def(IntegerAttr)
    #: source line of the kernel IR construct this instruction implements (for messages)
    note = opt_prop_def(StringAttr)

    @classmethod
    def make(cls, *operands: str | int, vm: str = "", group: int = 1,
             note: str | None = None) -> RvvInstrOp:
        if len(operands) != len(cls.FIELDS):
            raise VerifyException(f"{cls.MNEMONIC}: expected {len(cls.FIELDS)} operands "
                                  f"{[f for f, _ in cls.FIELDS]}, got {operands}")
        props: dict = {slot: StringAttr(str(v)) for slot, v in
                       zip("abcd", operands, strict=False)}
        if vm:
            props["vm"] = StringAttr(vm)
        if group != 1:
            props["group"] = IntegerAttr(group, i64)
        if note:
            props["note"] = StringAttr(note)
        return cls.create(properties=props)

    def operand_texts(self) -> list[str]:
        out = []
        for slot, _ in zip("abcd", self.FIELDS, strict=False):
            attr = self.properties.get(slot)
            assert isinstance(attr, StringAttr)
            out.append(attr.data)
        return out

    @property
    def group_size(self) -> int:
        return self.group.value.data if self.group is not None else 1

    def verify_(self) -> None:
        texts = self.operand_texts() if all(s in self.properties for s in "abcd"[
            :len(self.FIELDS)]) else None
        _require(texts is not None, f"{self.MNEMONIC}: missing operands")
        assert texts is not None
        g = self.group_size
        _require(g in (1, 2, 4, 8), f"{self.MNEMONIC}: register group of {g}")
        for (field, kind), text in zip(self.FIELDS, texts, strict=True):
            _require(KIND_CHECK[kind](text), f"`{self.assembly()}`: operand {field} = "
                     f"'{text}' is not a {kind} operand")
            if kind == "v" and field in self.GROUPED:
                n = int(text[1:])
                _require(n % g == 0 and n + g <= 32, f"`{self.assembly()}`: {field} = {text} "
                         f"is not aligned to its register group of {g} (LMUL)")
        if self.vm is not None:
            _require(self.vm.data in ("v0.t", "v0"), f"{self.MNEMONIC}: bad mask operand")

    def assembly(self) -> str:
        """The GNU-as text of this instruction."""
        ops = dict(zip([f for f, _ in self.FIELDS], self.operand_texts(), strict=True))
        text = self.FORMAT.format(**ops)
        if self.vm is not None:
            text += f", {self.vm.data}"
        return f"{self.MNEMONIC} {text}".rstrip()


# ----------------------------------------------------------------------- operand-shape bases
class VVOp(RvvInstrOp):
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("vd", "v"), ("vs2", "v"), ("vs1", "v"))
    FORMAT: ClassVar[str] = "{vd}, {vs2}, {vs1}"
    GROUPED: ClassVar[tuple[str, ...]] = ("vd", "vs2", "vs1")


class VXOp(RvvInstrOp):
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("vd", "v"), ("vs2", "v"), ("rs1", "x"))
    FORMAT: ClassVar[str] = "{vd}, {vs2}, {rs1}"
    GROUPED: ClassVar[tuple[str, ...]] = ("vd", "vs2")


class VFOp(RvvInstrOp):
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("vd", "v"), ("vs2", "v"), ("rs1", "f"))
    FORMAT: ClassVar[str] = "{vd}, {vs2}, {rs1}"
    GROUPED: ClassVar[tuple[str, ...]] = ("vd", "vs2")


class VIOp(RvvInstrOp):
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("vd", "v"), ("vs2", "v"), ("imm", "imm"))
    FORMAT: ClassVar[str] = "{vd}, {vs2}, {imm}"
    GROUPED: ClassVar[tuple[str, ...]] = ("vd", "vs2")


class VFMaccOp(RvvInstrOp):
    """Multiply-accumulate with a scalar: the scalar comes first (``vd, rs1, vs2``)."""

    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("vd", "v"), ("rs1", "f"), ("vs2", "v"))
    FORMAT: ClassVar[str] = "{vd}, {rs1}, {vs2}"
    GROUPED: ClassVar[tuple[str, ...]] = ("vd", "vs2")


class VXMaccOp(VFMaccOp):
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("vd", "v"), ("rs1", "x"), ("vs2", "v"))


class VCmpVVOp(VVOp):
    """Compares write a single mask register (vd is not grouped)."""

    GROUPED: ClassVar[tuple[str, ...]] = ("vs2", "vs1")


class VCmpVXOp(VXOp):
    GROUPED: ClassVar[tuple[str, ...]] = ("vs2",)


class VCmpVFOp(VFOp):
    GROUPED: ClassVar[tuple[str, ...]] = ("vs2",)


class VCmpVIOp(VIOp):
    GROUPED: ClassVar[tuple[str, ...]] = ("vs2",)


class VRedOp(VVOp):
    """Reductions read/write element 0 of single registers vd/vs1 and a group vs2."""

    GROUPED: ClassVar[tuple[str, ...]] = ("vs2",)


class VUnOp(RvvInstrOp):
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("vd", "v"), ("vs2", "v"))
    FORMAT: ClassVar[str] = "{vd}, {vs2}"
    GROUPED: ClassVar[tuple[str, ...]] = ("vd",)


class VFromXOp(RvvInstrOp):
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("vd", "v"), ("rs1", "x"))
    FORMAT: ClassVar[str] = "{vd}, {rs1}"
    GROUPED: ClassVar[tuple[str, ...]] = ("vd",)


class VFromFOp(RvvInstrOp):
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("vd", "v"), ("rs1", "f"))
    FORMAT: ClassVar[str] = "{vd}, {rs1}"
    GROUPED: ClassVar[tuple[str, ...]] = ("vd",)


class VFromIOp(RvvInstrOp):
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("vd", "v"), ("imm", "imm"))
    FORMAT: ClassVar[str] = "{vd}, {imm}"
    GROUPED: ClassVar[tuple[str, ...]] = ("vd",)


class VNullOp(RvvInstrOp):
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("vd", "v"),)
    FORMAT: ClassVar[str] = "{vd}"
    GROUPED: ClassVar[tuple[str, ...]] = ("vd",)


class XFromVOp(RvvInstrOp):
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("rd", "x"), ("vs2", "v"))
    FORMAT: ClassVar[str] = "{rd}, {vs2}"


class FFromVOp(RvvInstrOp):
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("rd", "f"), ("vs2", "v"))
    FORMAT: ClassVar[str] = "{rd}, {vs2}"


class VLoadUnitOp(RvvInstrOp):
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("vd", "v"), ("rs1", "x"))
    FORMAT: ClassVar[str] = "{vd}, ({rs1})"
    GROUPED: ClassVar[tuple[str, ...]] = ("vd",)


class VLoadStridedOp(RvvInstrOp):
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("vd", "v"), ("rs1", "x"), ("rs2", "x"))
    FORMAT: ClassVar[str] = "{vd}, ({rs1}), {rs2}"
    GROUPED: ClassVar[tuple[str, ...]] = ("vd",)


class VLoadIndexedOp(RvvInstrOp):
    """Indexed accesses: the index group's EMUL differs from the data's, so only the data
    register is checked against ``group``."""

    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("vd", "v"), ("rs1", "x"), ("vs2", "v"))
    FORMAT: ClassVar[str] = "{vd}, ({rs1}), {vs2}"
    GROUPED: ClassVar[tuple[str, ...]] = ("vd",)


class VSetVliOp(RvvInstrOp):
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("rd", "x"), ("rs1", "x"), ("vtype", "vtype"))
    FORMAT: ClassVar[str] = "{rd}, {rs1}, {vtype}"


class VSetIVliOp(RvvInstrOp):
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("rd", "x"), ("uimm", "imm"), ("vtype", "vtype"))
    FORMAT: ClassVar[str] = "{rd}, {uimm}, {vtype}"


class RTypeOp(RvvInstrOp):
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("rd", "x"), ("rs1", "x"), ("rs2", "x"))
    FORMAT: ClassVar[str] = "{rd}, {rs1}, {rs2}"


class ITypeOp(RvvInstrOp):
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("rd", "x"), ("rs1", "x"), ("imm", "imm"))
    FORMAT: ClassVar[str] = "{rd}, {rs1}, {imm}"


class XXOp(RvvInstrOp):
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("rd", "x"), ("rs1", "x"))
    FORMAT: ClassVar[str] = "{rd}, {rs1}"


class LiOp(RvvInstrOp):
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("rd", "x"), ("imm", "imm"))
    FORMAT: ClassVar[str] = "{rd}, {imm}"


class XLoadOp(RvvInstrOp):
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("rd", "x"), ("imm", "imm"), ("rs1", "x"))
    FORMAT: ClassVar[str] = "{rd}, {imm}({rs1})"


class XStoreOp(RvvInstrOp):
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("rs2", "x"), ("imm", "imm"), ("rs1", "x"))
    FORMAT: ClassVar[str] = "{rs2}, {imm}({rs1})"


class FLoadOp(RvvInstrOp):
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("rd", "f"), ("imm", "imm"), ("rs1", "x"))
    FORMAT: ClassVar[str] = "{rd}, {imm}({rs1})"


class FStoreOp(RvvInstrOp):
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("rs2", "f"), ("imm", "imm"), ("rs1", "x"))
    FORMAT: ClassVar[str] = "{rs2}, {imm}({rs1})"


class FFOp(RvvInstrOp):
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("rd", "f"), ("rs1", "f"), ("rs2", "f"))
    FORMAT: ClassVar[str] = "{rd}, {rs1}, {rs2}"


class FFromXOp(RvvInstrOp):
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("rd", "f"), ("rs1", "x"))
    FORMAT: ClassVar[str] = "{rd}, {rs1}"


class XFromFOp(RvvInstrOp):
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("rd", "x"), ("rs1", "f"))
    FORMAT: ClassVar[str] = "{rd}, {rs1}"


class XFromFFOp(RvvInstrOp):
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("rd", "x"), ("rs1", "f"), ("rs2", "f"))
    FORMAT: ClassVar[str] = "{rd}, {rs1}, {rs2}"


class BranchOp(RvvInstrOp):
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("rs1", "x"), ("rs2", "x"), ("target", "label"))
    FORMAT: ClassVar[str] = "{rs1}, {rs2}, {target}"


class BranchZOp(RvvInstrOp):
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("rs1", "x"), ("target", "label"))
    FORMAT: ClassVar[str] = "{rs1}, {target}"


class JumpOp(RvvInstrOp):
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("target", "label"),)
    FORMAT: ClassVar[str] = "{target}"


class NullaryOp(RvvInstrOp):
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = ()
    FORMAT: ClassVar[str] = ""


# ----------------------------------------------------------------------- the instruction table
#: mnemonic -> (operand-shape base, one-line semantics). ``i`` ranges over [0, vl) (active
#: elements); tail elements follow vtype's ta/tu policy.
INSTRUCTIONS: dict[str, tuple[type[RvvInstrOp], str]] = {}


def _add(base: type[RvvInstrOp], doc: str, *mnemonics: str) -> None:
    for m in mnemonics:
        INSTRUCTIONS[m] = (base, doc.replace("OP", m.split(".")[0]))


for _sfx, _base in (("vv", VVOp), ("vx", VXOp), ("vi", VIOp)):
    _add(_base, f"vd[i] = OP(vs2[i], {'vs1[i]' if _sfx == 'vv' else 'rs1/imm'}) (integer)",
         *[f"{m}.{_sfx}" for m in ("vadd", "vand", "vor", "vxor", "vsll", "vsrl", "vsra")])
for _sfx, _base in (("vv", VVOp), ("vx", VXOp)):
    _add(_base, "vd[i] = OP(vs2[i], second operand) (integer)",
         *[f"{m}.{_sfx}" for m in ("vsub", "vmul", "vdiv", "vdivu", "vrem", "vremu", "vmin",
                                    "vminu", "vmax", "vmaxu", "vmulh", "vmulhu")])
    _add(_base if _sfx == "vv" else VXMaccOp, "vd[i] = vd[i] + vs1/rs1 * vs2[i] (integer "
         "multiply-add)", f"vmacc.{_sfx}")
_add(VXOp, "vd[i] = rs1 - vs2[i]", "vrsub.vx")
_add(VIOp, "vd[i] = imm - vs2[i]", "vrsub.vi")
for _sfx, _base in (("vv", VVOp), ("vf", VFOp)):
    _add(_base, "vd[i] = OP(vs2[i], second operand) (IEEE binary op, RNE)",
         *[f"{m}.{_sfx}" for m in ("vfadd", "vfsub", "vfmul", "vfdiv", "vfmin", "vfmax",
                                    "vfsgnj", "vfsgnjn", "vfsgnjx")])
    _mb = _base if _sfx == "vv" else VFMaccOp
    _add(_mb, "vd[i] = vd[i] + first * vs2[i] (fused, one rounding)", f"vfmacc.{_sfx}")
    _add(_mb, "vd[i] = -(first * vs2[i]) + vd[i] (fused)", f"vfnmsac.{_sfx}")
    _add(_mb, "vd[i] = first * vd[i] + vs2[i] (fused)", f"vfmadd.{_sfx}")
    _add(_mb, "vd[i] = -(first * vd[i]) + vs2[i] (fused)", f"vfnmsub.{_sfx}")
_add(VFOp, "vd[i] = rs1 OP vs2[i] (reversed operands)", "vfrsub.vf", "vfrdiv.vf")
for _m in ("vmfeq", "vmfne", "vmflt", "vmfle"):
    _add(VCmpVVOp, "mask vd[i] = vs2[i] OP vs1[i] (float compare)", f"{_m}.vv")
for _m in ("vmfeq", "vmfne", "vmflt", "vmfle", "vmfgt", "vmfge"):
    _add(VCmpVFOp, "mask vd[i] = vs2[i] OP rs1 (float compare)", f"{_m}.vf")
for _m in ("vmseq", "vmsne", "vmslt", "vmsltu", "vmsle", "vmsleu"):
    _add(VCmpVVOp, "mask vd[i] = vs2[i] OP vs1[i] (integer compare)", f"{_m}.vv")
for _m in ("vmseq", "vmsne", "vmslt", "vmsltu", "vmsle", "vmsleu", "vmsgt", "vmsgtu"):
    _add(VCmpVXOp, "mask vd[i] = vs2[i] OP rs1 (integer compare)", f"{_m}.vx")
for _m in ("vmseq", "vmsne", "vmsle", "vmsleu", "vmsgt", "vmsgtu"):
    _add(VCmpVIOp, "mask vd[i] = vs2[i] OP imm (integer compare)", f"{_m}.vi")
_add(VVOp, "mask vd = vs2 OP vs1 (mask logic, all VLEN bits as elements)",
     "vmand.mm", "vmor.mm", "vmxor.mm", "vmandn.mm", "vmnand.mm")
_add(VVOp, "vd[i] = v0.mask[i] ? vs1[i] : vs2[i]", "vmerge.vvm")
_add(VXOp, "vd[i] = v0.mask[i] ? rs1 : vs2[i]", "vmerge.vxm")
_add(VIOp, "vd[i] = v0.mask[i] ? imm : vs2[i]", "vmerge.vim")
_add(VFOp, "vd[i] = v0.mask[i] ? rs1 : vs2[i]", "vfmerge.vfm")
_add(VRedOp, "vd[0] = OP(vs1[0], vs2[0..vl)) (ordered for vfredosum)",
     "vfredosum.vs", "vfredusum.vs", "vfredmax.vs", "vfredmin.vs", "vredsum.vs",
     "vredmax.vs", "vredmaxu.vs", "vredmin.vs", "vredminu.vs", "vredand.vs", "vredor.vs")
_add(VUnOp, "vd[i] = OP(vs2[i])", "vfsqrt.v", "vmv.v.v", "vfcvt.x.f.v", "vfcvt.xu.f.v",
     "vfcvt.rtz.x.f.v", "vfcvt.rtz.xu.f.v", "vfcvt.f.x.v", "vfcvt.f.xu.v", "vfclass.v")
_add(VUnOp, "vd[i] = widen/narrow-convert(vs2[i]) (vd has twice/half SEW)",
     "vfwcvt.f.f.v", "vfwcvt.f.x.v", "vfwcvt.f.xu.v", "vfwcvt.rtz.x.f.v",
     "vfwcvt.rtz.xu.f.v", "vfncvt.f.f.w", "vfncvt.f.x.w", "vfncvt.f.xu.w",
     "vfncvt.rtz.x.f.w", "vfncvt.rtz.xu.f.w")
_add(VUnOp, "vd[i] = sign/zero-extend(vs2[i]) from SEW/2, /4 or /8",
     "vsext.vf2", "vsext.vf4", "vsext.vf8", "vzext.vf2", "vzext.vf4", "vzext.vf8")
_add(VIOp, "vd[i] = (vs2[i] >> imm) narrowed to SEW (vs2 is 2*SEW wide)", "vnsrl.wi")
_add(VNullOp, "vd[i] = i", "vid.v")
_add(VFromXOp, "vd[i] = rs1", "vmv.v.x")
_add(VFromXOp, "vd[0] = rs1", "vmv.s.x")
_add(VFromFOp, "vd[i] = rs1", "vfmv.v.f")
_add(VFromFOp, "vd[0] = rs1", "vfmv.s.f")
_add(VFromIOp, "vd[i] = imm", "vmv.v.i")
_add(XFromVOp, "rd = vs2[0] (sign-extended)", "vmv.x.s")
_add(XFromVOp, "rd = number of set mask bits of vs2 in [0, vl)", "vcpop.m")
_add(FFromVOp, "rd = vs2[0]", "vfmv.f.s")
for _e in (8, 16, 32, 64):
    _add(VLoadUnitOp, f"vd[i] = mem{_e}[rs1 + i*{_e // 8}]", f"vle{_e}.v")
    _add(VLoadUnitOp, f"mem{_e}[rs1 + i*{_e // 8}] = vd[i] (vd is the stored data)",
         f"vse{_e}.v")
    _add(VLoadStridedOp, f"vd[i] = mem{_e}[rs1 + i*rs2]", f"vlse{_e}.v")
    _add(VLoadStridedOp, f"mem{_e}[rs1 + i*rs2] = vd[i]", f"vsse{_e}.v")
    _add(VLoadIndexedOp, "vd[i] = mem[rs1 + vs2[i]] (unordered)", f"vluxei{_e}.v")
    _add(VLoadIndexedOp, "mem[rs1 + vs2[i]] = vd[i] in element order", f"vsoxei{_e}.v")
    _add(VLoadUnitOp, f"registers vd..vd+3 = mem{_e}[rs1 ..] (whole registers, vl ignored)",
         f"vl4re{_e}.v")
_add(VSetVliOp, "vl = min(rs1, VLMAX(vtype)); rd = vl", "vsetvli")
_add(VSetIVliOp, "vl = min(uimm, VLMAX(vtype)); rd = vl", "vsetivli")
_add(RTypeOp, "rd = OP(rs1, rs2) (64-bit)", "add", "sub", "mul", "div", "divu", "rem", "and",
     "or", "xor", "sll", "srl", "sra", "slt", "sltu")
_add(ITypeOp, "rd = OP(rs1, imm) (64-bit, 12-bit signed imm)", "addi", "andi", "ori", "xori",
     "slli", "srli", "srai", "slti")
_add(XXOp, "rd = rs1", "mv")
_add(XXOp, "rd = -rs1", "neg")
_add(LiOp, "rd = imm (any 64-bit constant, expanded by the assembler)", "li")
_add(XLoadOp, "rd = mem[rs1 + imm] (ld 64-bit, lw sign-extended 32-bit)", "ld", "lw", "lwu", "lh", "lhu", "lb", "lbu")
_add(XStoreOp, "mem[rs1 + imm] = rs2", "sd", "sw", "sh", "sb")
_add(FLoadOp, "rd = mem[rs1 + imm] (flw single, fld double)", "flw", "fld")
_add(FStoreOp, "mem[rs1 + imm] = rs2", "fsw", "fsd")
_add(FFOp, "rd = OP(rs1, rs2) (scalar IEEE; fsgnj with rs1 == rs2 is a move)", "fadd.s",
     "fmul.s", "fadd.d", "fmul.d", "fsgnj.s", "fsgnj.d")
_add(FFromXOp, "rd = bits of rs1 (fmv.w.x low 32 bits NaN-boxed, fmv.d.x 64 bits)",
     "fmv.w.x", "fmv.d.x")
_add(XFromFOp, "rd = bits of rs1", "fmv.x.w", "fmv.x.d")
_add(XFromFFOp, "rd = (rs1 OP rs2) as 0/1 (scalar float compare)", "flt.s", "flt.d", "feq.s",
     "feq.d", "fle.s", "fle.d")
_add(BranchOp, "if OP(rs1, rs2): goto target", "beq", "bne", "blt", "bge", "bltu", "bgeu")
_add(BranchZOp, "if rs1 OP 0: goto target", "beqz", "bnez", "blez", "bgtz")
_add(JumpOp, "goto target", "j")
_add(NullaryOp, "return to ra", "ret")


def _op_class(mnemonic: str, base: type[RvvInstrOp], doc: str) -> type[RvvInstrOp]:
    cls_name = "".join(p.capitalize() for p in re.split(r"[._]", mnemonic)) + "Op"
    cls = type(cls_name, (base,), {
        "name": f"rvv.{mnemonic}", "MNEMONIC": mnemonic, "__doc__": f"``{doc}``",
        "__module__": __name__, "__annotations__": {"MNEMONIC": ClassVar[str]},
    })
    return irdl_op_definition(cls)


#: mnemonic -> op class (the emitter's and the lowering's one lookup)
OPS: dict[str, type[RvvInstrOp]] = {m: _op_class(m, b, d) for m, (b, d) in INSTRUCTIONS.items()}


# ----------------------------------------------------------------------- structure
@irdl_op_definition
class LabelOp(IRDLOperation):
    """A branch target inside a function (``.L`` local label)."""

    name = "rvv.label"
    label = prop_def(StringAttr)

    @staticmethod
    def make(label: str) -> LabelOp:
        return LabelOp.create(properties={"label": StringAttr(label)})

    def verify_(self) -> None:
        _require(bool(_LABEL.match(self.label.data)), f"bad label '{self.label.data}'")


@irdl_op_definition
class CommentOp(IRDLOperation):
    """A ``#`` comment line (which kernel-IR construct the following code implements)."""

    name = "rvv.comment"
    text = prop_def(StringAttr)

    @staticmethod
    def make(text: str) -> CommentOp:
        return CommentOp.create(properties={"text": StringAttr(text.replace("\n", " "))})


@irdl_op_definition
class FuncOp(IRDLOperation):
    """A global C-callable function (LP64D): a body of instructions, labels and comments."""

    name = "rvv.func"
    sym_name = prop_def(StringAttr)
    #: how the lowering scheduled the kernel (for the compile report), e.g. ``gemm LMUL 8 MR 3``
    schedule = opt_prop_def(StringAttr)
    body = region_def("single_block")
    traits = traits_def(NoTerminator())

    @staticmethod
    def make(name: str, ops: Iterable[IRDLOperation], schedule: str = "") -> FuncOp:
        props: dict = {"sym_name": StringAttr(name)}
        if schedule:
            props["schedule"] = StringAttr(schedule)
        return FuncOp.create(properties=props, regions=[Region(Block(list(ops)))])

    def instruction_count(self) -> int:
        """Static instructions (labels and comments excluded)."""
        return sum(isinstance(op, RvvInstrOp) for op in self.body.block.ops)

    def verify_(self) -> None:
        labels = [op.label.data for op in self.body.block.ops if isinstance(op, LabelOp)]
        _require(len(labels) == len(set(labels)),
                 f"rvv.func @{self.sym_name.data}: duplicate labels")
        known = set(labels)
        for op in self.body.block.ops:
            if isinstance(op, (BranchOp, BranchZOp, JumpOp)):
                target = op.operand_texts()[-1]
                _require(target in known, f"rvv.func @{self.sym_name.data}: `{op.assembly()}` "
                         f"jumps to an undefined label")


Rvv = Dialect("rvv", [*OPS.values(), LabelOp, CommentOp, FuncOp], [])


# ----------------------------------------------------------------------- emitter
_LINE = {
    LabelOp: lambda op: f"{op.label.data}:",
    CommentOp: lambda op: f"    # {op.text.data}",
}


def emit_function(func: FuncOp) -> str:
    name = func.sym_name.data
    lines = [f"    .globl {name}", "    .p2align 2", f"    .type {name}, @function", f"{name}:"]
    for op in func.body.block.ops:
        render = _LINE.get(type(op))
        lines.append(render(op) if render else f"    {op.assembly()}")  # type: ignore[attr-defined]
    lines.append(f"    .size {name}, .-{name}")
    return "\n".join(lines)


def emit_asm(funcs: Iterable[FuncOp], header: str = "") -> str:
    """GNU-as text of a list of functions (a whole ``kernels.s``)."""
    parts = [f"# {line}" for line in header.splitlines()]
    parts += ["    .option nopic", "    .text"]
    parts += [emit_function(f) for f in funcs]
    return "\n".join(parts) + "\n"
