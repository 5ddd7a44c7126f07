"""RV64IM + F/D semantics and the common pseudo-instructions, as closure builders.

Integer registers hold signed Python ints (x0 writes are dropped at build time); fp registers
hold raw 64-bit patterns with singles NaN-boxed (upper 32 bits all ones) as the spec requires.
Scalar fp arithmetic reuses the vector fp helpers on 1-element arrays, so scalar and vector
rounding/NaN rules cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import numpy as np

from portc.runtimes.rvvsim import fpu
from portc.runtimes.rvvsim.core import (
    HALT,
    RET_SENTINEL,
    TEXT_BASE,
    WRAP,
    Ctx,
    Op,
    State,
    inline,
    isa,
    s64,
    sext,
    spec,
)
from portc.runtimes.rvvsim.errors import AsmSyntaxError, IllegalInstructionError

M64 = (1 << 64) - 1
BOX = 0xFFFFFFFF_00000000


def _imm_range(c: Ctx, imm: int, lo: int, hi: int) -> None:
    """The assembler's encoding limits (12-bit signed, shift amounts, 20-bit upper)."""
    if not lo <= imm <= hi:
        raise AsmSyntaxError(f"{c.program.source}:{c.instr.line}: immediate {imm} out of range "
                             f"{lo}..{hi} in `{c.instr.text}`")


def _text_addr(index: int) -> int:
    return TEXT_BASE + 4 * index


def jump_target(st: State, addr: int) -> int:
    """Instruction index of a code address (``jalr``/``ret``), or HALT at the return sentinel."""
    if addr == RET_SENTINEL:
        return HALT
    idx, rem = divmod(addr - TEXT_BASE, 4)
    if rem or not 0 <= idx < len(st.program.instrs):
        raise IllegalInstructionError(f"jump to {addr:#x}, which is not an instruction address")
    return idx


# --- integer register-register / register-immediate ------------------------------------------

def _div(a: int, b: int) -> int:
    if b == 0:
        return -1
    if a == -(1 << 63) and b == -1:
        return a
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def _rem(a: int, b: int) -> int:
    if b == 0:
        return a
    if a == -(1 << 63) and b == -1:
        return 0
    return a - _div(a, b) * b


def _u(a: int) -> int:
    return a & M64


RRR: dict[str, Callable[[int, int], int]] = {
    "add": lambda a, b: s64(a + b),
    "sub": lambda a, b: s64(a - b),
    "mul": lambda a, b: s64(a * b),
    "mulh": lambda a, b: (a * b) >> 64,
    "mulhu": lambda a, b: s64((_u(a) * _u(b)) >> 64),
    "mulhsu": lambda a, b: s64((a * _u(b)) >> 64),
    "div": _div,
    "divu": lambda a, b: -1 if b == 0 else s64(_u(a) // _u(b)),
    "rem": _rem,
    "remu": lambda a, b: a if b == 0 else s64(_u(a) % _u(b)),
    "and": lambda a, b: a & b,
    "or": lambda a, b: a | b,
    "xor": lambda a, b: a ^ b,
    "sll": lambda a, b: s64(a << (b & 63)),
    "srl": lambda a, b: s64(_u(a) >> (b & 63)),
    "sra": lambda a, b: a >> (b & 63),
    "slt": lambda a, b: int(a < b),
    "sltu": lambda a, b: int(_u(a) < _u(b)),
    "addw": lambda a, b: sext(a + b, 32),
    "subw": lambda a, b: sext(a - b, 32),
    "mulw": lambda a, b: sext(a * b, 32),
    "sllw": lambda a, b: sext(a << (b & 31), 32),
    "srlw": lambda a, b: sext((a & 0xFFFFFFFF) >> (b & 31), 32),
    "sraw": lambda a, b: sext(a, 32) >> (b & 31),
    "divw": lambda a, b: sext(_div(sext(a, 32), sext(b, 32)), 32),
    "divuw": lambda a, b: -1 if b & 0xFFFFFFFF == 0 else sext((a & 0xFFFFFFFF) // (b & 0xFFFFFFFF), 32),
    "remw": lambda a, b: sext(_rem(sext(a, 32), sext(b, 32)), 32),
    "remuw": lambda a, b: sext(a, 32) if b & 0xFFFFFFFF == 0 else sext((a & 0xFFFFFFFF) % (b & 0xFFFFFFFF), 32),
}
IMM_OPS: dict[str, str] = {
    "addi": "add", "andi": "and", "ori": "or", "xori": "xor", "slti": "slt", "sltiu": "sltu",
    "slli": "sll", "srli": "srl", "srai": "sra", "addiw": "addw", "slliw": "sllw",
    "srliw": "srlw", "sraiw": "sraw",
}


#: RRR rows whose result is a plain Python expression of the operands (inlined in blocks)
INLINE_RRR = {"add": "x[{a}] + x[{b}]", "sub": "x[{a}] - x[{b}]", "mul": "x[{a}] * x[{b}]",
              "and": "x[{a}] & x[{b}]", "or": "x[{a}] | x[{b}]", "xor": "x[{a}] ^ x[{b}]"}
#: the same with an immediate second operand
INLINE_RRI = {"add": "x[{a}] + {b}", "and": "x[{a}] & {b}", "or": "x[{a}] | {b}",
              "xor": "x[{a}] ^ {b}", "sll": "x[{a}] << {b}"}


def _inline_alu(op: Op, name: str, rd: int, rs1: int, b: int, imm: bool) -> Op:
    table = INLINE_RRI if imm else INLINE_RRR
    if name in table:
        expr = table[name].format(a=rs1, b=b)
        if name in ("and", "or", "xor"):  # two in-range operands give an in-range result
            inline(op, (f"x[{rd}] = {expr}",))
        else:
            inline(op, (f"v = {expr}", f"x[{rd}] = {WRAP}"))
    return spec(op, "alu", name, rd, rs1, b, imm)


@isa(list(RRR), "xxx")
def _b_rrr(c: Ctx, a: list) -> Op:
    rd, rs1, rs2 = a
    fn, nxt = RRR[c.mnemonic], c.nxt
    if rd == 0:
        return spec(inline(lambda st: nxt), "nop")

    def op(st: State) -> int:
        x = st.x
        x[rd] = fn(x[rs1], x[rs2])
        return nxt
    return _inline_alu(op, c.mnemonic, rd, rs1, rs2, False)


# GNU as also accepts the register form with an immediate (``add a3, a3, 76``)
IMM_ALIASES = ["add", "and", "or", "xor", "sll", "srl", "sra", "slt", "sltu", "addw", "sllw",
               "srlw", "sraw"]


@isa(list(IMM_OPS) + IMM_ALIASES, "xxi")
def _b_rri(c: Ctx, a: list) -> Op:
    rd, rs1, imm = a
    m = c.mnemonic
    lo, hi = (0, 31) if m in ("slliw", "srliw", "sraiw", "sllw", "srlw", "sraw") else \
        (0, 63) if m in ("slli", "srli", "srai", "sll", "srl", "sra") else (-2048, 2047)
    _imm_range(c, imm, lo, hi)
    name = IMM_OPS.get(c.mnemonic, c.mnemonic)
    fn, nxt = RRR[name], c.nxt
    if rd == 0:
        return spec(inline(lambda st: nxt), "nop")
    if name == "add":
        def addi(st: State) -> int:
            x = st.x
            v = x[rs1] + imm
            x[rd] = v if -(1 << 63) <= v < (1 << 63) else s64(v)
            return nxt
        return _inline_alu(addi, name, rd, rs1, imm, True)

    def op(st: State) -> int:
        x = st.x
        x[rd] = fn(x[rs1], imm)
        return nxt
    return _inline_alu(op, name, rd, rs1, imm, True)


@isa("li", "xi")
def _b_li(c: Ctx, a: list) -> Op:
    rd, imm = a
    v, nxt = s64(imm), c.nxt

    def op(st: State) -> int:
        if rd:
            st.x[rd] = v
        return nxt
    return spec(inline(op, (f"x[{rd}] = {v}",) if rd else ()), "li", rd, v)


@isa("lui", "xi")
def _b_lui(c: Ctx, a: list) -> Op:
    rd, imm = a
    _imm_range(c, imm, 0, 0xFFFFF)
    v, nxt = sext(imm << 12, 32), c.nxt

    def op(st: State) -> int:
        if rd:
            st.x[rd] = v
        return nxt
    return spec(inline(op, (f"x[{rd}] = {v}",) if rd else ()), "li", rd, v)


UNARY: dict[str, Callable[[int], int]] = {
    "mv": lambda a: a,
    "neg": lambda a: s64(-a),
    "negw": lambda a: sext(-a, 32),
    "not": lambda a: ~a,
    "seqz": lambda a: int(a == 0),
    "snez": lambda a: int(a != 0),
    "sltz": lambda a: int(a < 0),
    "sgtz": lambda a: int(a > 0),
    "sext.w": lambda a: sext(a, 32),
    "zext.b": lambda a: a & 0xFF,
}


@isa(list(UNARY), "xx")
def _b_unary(c: Ctx, a: list) -> Op:
    rd, rs = a
    fn, nxt = UNARY[c.mnemonic], c.nxt

    def op(st: State) -> int:
        if rd:
            st.x[rd] = fn(st.x[rs])
        return nxt
    if c.mnemonic == "mv":
        inline(op, (f"x[{rd}] = x[{rs}]",) if rd else ())
    return spec(op, "unary", c.mnemonic, rd, rs)


@isa("nop", "")
def _b_nop(c: Ctx, a: list) -> Op:
    nxt = c.nxt
    return spec(inline(lambda st: nxt), "nop")


# --- loads / stores ---------------------------------------------------------------------------

LOADS = {"ld": (8, True), "lw": (4, True), "lwu": (4, False), "lh": (2, True),
         "lhu": (2, False), "lb": (1, True), "lbu": (1, False)}
STORES = {"sd": 8, "sw": 4, "sh": 2, "sb": 1}


@isa(list(LOADS), "xa")
def _b_load(c: Ctx, a: list) -> Op:
    rd, (off, rs1) = a
    _imm_range(c, off, -2048, 2047)
    n, signed = LOADS[c.mnemonic]
    nxt = c.nxt

    def op(st: State) -> int:
        v = st.mem.load_int(st.x[rs1] + off, n, signed)
        if rd:
            st.x[rd] = v
        return nxt
    return spec(op, "ld", n, signed, rd, rs1, off, "x")


@isa(list(STORES), "xa")
def _b_store(c: Ctx, a: list) -> Op:
    rs2, (off, rs1) = a
    _imm_range(c, off, -2048, 2047)
    n, nxt = STORES[c.mnemonic], c.nxt

    def op(st: State) -> int:
        st.mem.store_int(st.x[rs1] + off, n, st.x[rs2])
        return nxt
    return spec(op, "st", n, rs2, rs1, off, "x")


# --- branches and jumps -----------------------------------------------------------------------

BRANCH: dict[str, Callable[[int, int], bool]] = {
    "beq": lambda a, b: a == b, "bne": lambda a, b: a != b,
    "blt": lambda a, b: a < b, "bge": lambda a, b: a >= b,
    "bltu": lambda a, b: _u(a) < _u(b), "bgeu": lambda a, b: _u(a) >= _u(b),
    "bgt": lambda a, b: a > b, "ble": lambda a, b: a <= b,
    "bgtu": lambda a, b: _u(a) > _u(b), "bleu": lambda a, b: _u(a) <= _u(b),
}
BRANCH_OPS = {"beq": "==", "bne": "!=", "blt": "<", "bge": ">=", "bgt": ">", "ble": "<="}
BRANCH_Z: dict[str, Callable[[int], bool]] = {
    "beqz": lambda a: a == 0, "bnez": lambda a: a != 0, "blez": lambda a: a <= 0,
    "bgez": lambda a: a >= 0, "bltz": lambda a: a < 0, "bgtz": lambda a: a > 0,
}


#: mnemonics that may transfer control: they end a basic block (``blocks.py``)
CONTROL = frozenset(BRANCH) | frozenset(BRANCH_Z) | {"j", "jal", "jalr", "jr", "ret", "call",
                                                     "tail"}


@isa(list(BRANCH), "xxl")
def _b_branch(c: Ctx, a: list) -> Op:
    rs1, rs2, tgt = a
    nxt = c.nxt
    m = c.mnemonic
    fn = BRANCH[m]
    op = spec(lambda st: tgt if fn(st.x[rs1], st.x[rs2]) else nxt, "br", m, rs1, rs2, tgt)
    a_, b_ = f"x[{rs1}]", f"x[{rs2}]"
    if m.endswith("u"):
        a_, b_ = f"({a_} & {M64:#x})", f"({b_} & {M64:#x})"
    return inline(op, (), f"{tgt} if {a_} {BRANCH_OPS[m.rstrip('u')]} {b_} else {nxt}")


@isa(list(BRANCH_Z), "xl")
def _b_branch_z(c: Ctx, a: list) -> Op:
    rs, tgt = a
    nxt = c.nxt
    m = c.mnemonic
    fn = BRANCH_Z[m]
    op = spec(lambda st: tgt if fn(st.x[rs]) else nxt, "br", "b" + m[1:-1], rs, 0, tgt)
    return inline(op, (), f"{tgt} if x[{rs}] {BRANCH_OPS['b' + m[1:-1]]} 0 else {nxt}")


@isa("j", "l")
def _b_j(c: Ctx, a: list) -> Op:
    tgt = a[0]
    return inline(lambda st: tgt, (), str(tgt))


def _link(rd: int, ret_addr: int, tgt: int) -> Op:
    def op(st: State) -> int:
        if rd:
            st.x[rd] = ret_addr
        return tgt
    return op


@isa("call tail", "l")
def _b_call(c: Ctx, a: list) -> Op:
    rd = 1 if c.mnemonic == "call" else 0  # tail: jump without link (t1 clobber not modelled)
    return _link(rd, _text_addr(c.nxt), a[0])


@isa("jal", "l")
def _b_jal1(c: Ctx, a: list) -> Op:
    return _link(1, _text_addr(c.nxt), a[0])


@isa("jal", "xl")
def _b_jal2(c: Ctx, a: list) -> Op:
    return _link(a[0], _text_addr(c.nxt), a[1])


def _indirect(rd: int, rs: int, off: int, ret_addr: int) -> Op:
    def op(st: State) -> int:
        tgt = jump_target(st, (st.x[rs] + off) & ~1)
        if rd:
            st.x[rd] = ret_addr
        return tgt
    return op


@isa("ret", "")
def _b_ret(c: Ctx, a: list) -> Op:
    return _indirect(0, 1, 0, 0)


@isa("jr", "x")
def _b_jr(c: Ctx, a: list) -> Op:
    return _indirect(0, a[0], 0, 0)


@isa("jalr", "x")
def _b_jalr1(c: Ctx, a: list) -> Op:
    return _indirect(1, a[0], 0, _text_addr(c.nxt))


@isa("jalr", "xa")
def _b_jalr2(c: Ctx, a: list) -> Op:
    rd, (off, rs) = a
    return _indirect(rd, rs, off, _text_addr(c.nxt))


@isa("jalr", "xxi")
def _b_jalr3(c: Ctx, a: list) -> Op:
    rd, rs, off = a
    return _indirect(rd, rs, off, _text_addr(c.nxt))


# --- floating point ---------------------------------------------------------------------------

def get_s(st: State, r: int) -> np.ndarray:
    """f[r] as a float32 1-element array (an improperly NaN-boxed value reads as canonical NaN)."""
    v = st.f[r]
    bits = v & 0xFFFFFFFF if v >> 32 == 0xFFFFFFFF else 0x7FC00000
    return np.array([bits], np.uint32).view(np.float32)


def get_d(st: State, r: int) -> np.ndarray:
    return np.array([st.f[r]], np.uint64).view(np.float64)


def put_f(st: State, r: int, val: np.ndarray) -> None:
    """Write a float32 (NaN-boxed) or float64 1-element array to f[r]."""
    if val.dtype == np.float32:
        st.f[r] = BOX | int(val.view(np.uint32)[0])
    else:
        st.f[r] = int(val.view(np.uint64)[0])


GET = {"s": get_s, "d": get_d}
FT = {"s": np.float32, "d": np.float64}


FBIN: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "fadd": lambda a, b: fpu.canon(a + b),
    "fsub": lambda a, b: fpu.canon(a - b),
    "fmul": lambda a, b: fpu.canon(a * b),
    "fdiv": lambda a, b: fpu.canon(a / b),
    "fmin": fpu.fmin,
    "fmax": fpu.fmax,
}
FMA: dict[str, tuple[float, float]] = {  # (product sign, addend sign)
    "fmadd": (1.0, 1.0), "fmsub": (1.0, -1.0), "fnmsub": (-1.0, 1.0), "fnmadd": (-1.0, -1.0),
}
FCMP: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "feq": np.equal, "flt": np.less, "fle": np.less_equal,
}


def _mode(st: State, rm: str) -> str:
    """The effective rounding mode: the static one, or frm for ``dyn``."""
    return fpu.FRM_NAMES[st.frm] if rm == "dyn" else rm


def _fbuild(names: list[str], sig: str) -> Callable[[Callable], Callable]:
    return isa([f"{n}.{k}" for n in names for k in "sd"], sig)


ROUNDING_FBIN = ["fadd", "fsub", "fmul", "fdiv"]  # take a rounding-mode operand; the rest do not


SIGN_INJECT = {"fsgnj": "j", "fsgnjn": "n", "fsgnjx": "x"}


def sgnj_bits(kind: str, k: str, a: int, b: int) -> int:
    """fsgnj{,n,x}.{s,d} on raw register patterns: the magnitude of ``a`` with a sign from
    ``b``. Pure bit manipulation on the NaN-boxed patterns (an improperly boxed single reads
    as the canonical NaN), so there is no float rounding to reproduce."""
    if k == "s":
        a = a & 0xFFFFFFFF if a >> 32 == 0xFFFFFFFF else 0x7FC00000
        b = b & 0xFFFFFFFF if b >> 32 == 0xFFFFFFFF else 0x7FC00000
        sign = 1 << 31
    else:
        sign = 1 << 63
    s = b & sign if kind == "j" else ~b & sign if kind == "n" else (a ^ b) & sign
    r = (a & (sign - 1)) | s
    return BOX | r if k == "s" else r


def _sgnj_op(kind: str, k: str, rd: int, r1: int, r2: int, nxt: int) -> Op:
    def op(st: State) -> int:
        f = st.f
        f[rd] = sgnj_bits(kind, k, f[r1], f[r2])
        return nxt
    if k == "d":  # raw 64-bit patterns: one expression
        s = {"j": f"f[{r2}] & {1 << 63:#x}", "n": f"~f[{r2}] & {1 << 63:#x}",
             "x": f"(f[{r1}] ^ f[{r2}]) & {1 << 63:#x}"}[kind]
        inline(op, (f"f[{rd}] = (f[{r1}] & {(1 << 63) - 1:#x}) | ({s})",))
    return spec(op, "fsgnj", kind, k, rd, r1, r2)


@_fbuild([n for n in FBIN if n not in ROUNDING_FBIN] + list(SIGN_INJECT), "fff")
@_fbuild(ROUNDING_FBIN, "fffr")
def _b_fbin(c: Ctx, a: list) -> Op:
    rd, r1, r2 = a[:3]
    rm = a[3] if len(a) > 3 else "rne"
    base, k = c.mnemonic.split(".")
    if base in SIGN_INJECT:
        return _sgnj_op(SIGN_INJECT[base], k, rd, r1, r2, c.nxt)
    fn, get, nxt = FBIN[base], GET[k], c.nxt
    kind = {"fadd": "add", "fsub": "sub", "fmul": "mul", "fdiv": "div"}.get(base)

    def op(st: State) -> int:
        x, y = get(st, r1), get(st, r2)
        with np.errstate(all="ignore"):
            r = fn(x, y)
            mode = _mode(st, rm)
            if kind is not None and mode != "rne":
                r = fpu.directed(kind, [x, y], mode, r)
        put_f(st, rd, r)
        return nxt
    return op


@_fbuild(["fsqrt"], "ffr")
def _b_fsqrt(c: Ctx, a: list) -> Op:
    rd, r1, rm = a
    get, nxt = GET[c.mnemonic[-1]], c.nxt

    def op(st: State) -> int:
        x = get(st, r1)
        with np.errstate(all="ignore"):
            r = fpu.canon(np.sqrt(x))
        mode = _mode(st, rm)
        if mode != "rne":
            r = fpu.directed("sqrt", [x], mode, r)
        put_f(st, rd, r)
        return nxt
    return op


@_fbuild(list(FMA), "ffffr")
def _b_fma(c: Ctx, a: list) -> Op:
    rd, r1, r2, r3, rm = a
    base, k = c.mnemonic.split(".")
    ps, cs = FMA[base]
    get, nxt = GET[k], c.nxt
    t = FT[k]

    def op(st: State) -> int:
        ops = [get(st, r1) * t(ps), get(st, r2), get(st, r3) * t(cs)]
        with np.errstate(all="ignore"):
            r = fpu.fma(*ops)
            mode = _mode(st, rm)
            if mode != "rne":
                r = fpu.directed("fma", ops, mode, r)
        put_f(st, rd, r)
        return nxt
    return op


FUN = {"fmv": "j", "fneg": "n", "fabs": "x"}


@_fbuild(list(FUN), "ff")
def _b_fmv(c: Ctx, a: list) -> Op:
    rd, r1 = a
    base, k = c.mnemonic.split(".")
    return _sgnj_op(FUN[base], k, rd, r1, r1, c.nxt)


@_fbuild(list(FCMP), "xff")
def _b_fcmp(c: Ctx, a: list) -> Op:
    rd, r1, r2 = a
    base, k = c.mnemonic.split(".")
    fn, get, nxt = FCMP[base], GET[k], c.nxt

    def op(st: State) -> int:
        v = int(fn(get(st, r1), get(st, r2))[0])
        if rd:
            st.x[rd] = v
        return nxt
    return op


@_fbuild(["fclass"], "xf")
def _b_fclass(c: Ctx, a: list) -> Op:
    rd, r1 = a
    get, nxt = GET[c.mnemonic[-1]], c.nxt

    def op(st: State) -> int:
        v = int(fpu.fclass(get(st, r1))[0])
        if rd:
            st.x[rd] = v
        return nxt
    return op


@isa("flw fld", "fa")
def _b_fload(c: Ctx, a: list) -> Op:
    rd, (off, rs1) = a
    _imm_range(c, off, -2048, 2047)
    n, nxt = (4 if c.mnemonic == "flw" else 8), c.nxt

    def op(st: State) -> int:
        v = st.mem.load_int(st.x[rs1] + off, n, False)
        st.f[rd] = BOX | v if n == 4 else v
        return nxt
    return spec(op, "ld", n, False, rd, rs1, off, "f")


@isa("fsw fsd", "fa")
def _b_fstore(c: Ctx, a: list) -> Op:
    rs2, (off, rs1) = a
    _imm_range(c, off, -2048, 2047)
    n, nxt = (4 if c.mnemonic == "fsw" else 8), c.nxt

    def op(st: State) -> int:
        st.mem.store_int(st.x[rs1] + off, n, st.f[rs2])
        return nxt
    return spec(op, "st", n, rs2, rs1, off, "f")


@isa("fmv.x.w fmv.x.d", "xf")
def _b_fmv_x(c: Ctx, a: list) -> Op:
    rd, r1 = a
    w, nxt = (32 if c.mnemonic.endswith("w") else 64), c.nxt

    def op(st: State) -> int:
        if rd:
            st.x[rd] = sext(st.f[r1], w)
        return nxt
    return op


@isa("fmv.w.x fmv.d.x", "fx")
def _b_fmv_f(c: Ctx, a: list) -> Op:
    rd, r1 = a
    single, nxt = c.mnemonic == "fmv.w.x", c.nxt

    def op(st: State) -> int:
        v = st.x[r1]
        st.f[rd] = BOX | (v & 0xFFFFFFFF) if single else v & M64
        return nxt
    expr = f"{BOX:#x} | (x[{r1}] & 0xFFFFFFFF)" if single else f"x[{r1}] & {M64:#x}"
    return spec(inline(op, (f"f[{rd}] = {expr}",)), "fmv.f.x", single, rd, r1)


INT_KINDS = {"w": (32, True), "wu": (32, False), "l": (64, True), "lu": (64, False)}


@isa([f"fcvt.{i}.{k}" for i in INT_KINDS for k in "sd"], "xfr")
def _b_fcvt_to_int(c: Ctx, a: list) -> Op:
    rd, r1, rm = a
    _, ik, fk = c.mnemonic.split(".")
    bits, signed = INT_KINDS[ik]
    get, nxt = GET[fk], c.nxt
    def op(st: State) -> int:
        rmode = fpu.FRM_NAMES[st.frm] if rm == "dyn" else rm
        v = int(fpu.f2i(get(st, r1), bits, signed, rmode)[0])
        if rd:
            st.x[rd] = sext(v, bits)  # 32-bit results are sign-extended, unsigned ones too
        return nxt
    return op


@isa(["fcvt.d.w", "fcvt.d.wu"], "fx")  # exact: GNU as takes no rounding mode here
@isa(["fcvt.s.w", "fcvt.s.wu", "fcvt.s.l", "fcvt.s.lu", "fcvt.d.l", "fcvt.d.lu"], "fxr")
def _b_fcvt_from_int(c: Ctx, a: list) -> Op:
    rd, r1 = a[:2]
    rm = a[2] if len(a) > 2 else "rne"
    _, fk, ik = c.mnemonic.split(".")
    bits, signed = INT_KINDS[ik]
    t, nxt = FT[fk], c.nxt

    def op(st: State) -> int:
        v = st.x[r1]
        v = sext(v, bits) if signed else v & ((1 << bits) - 1)
        r = np.array([v], np.int64 if signed else np.uint64).astype(t)
        mode = _mode(st, rm)
        if mode != "rne" and v != 0:
            r = fpu.round_rational(Fraction(v), 32 if t == np.float32 else 64, mode)
        put_f(st, rd, r)
        return nxt
    return op


@isa("fcvt.d.s", "ff")
@isa("fcvt.s.d", "ffr")
def _b_fcvt_ff(c: Ctx, a: list) -> Op:
    rd, r1 = a[:2]
    rm = a[2] if len(a) > 2 else "rne"
    to_single, nxt = c.mnemonic == "fcvt.s.d", c.nxt

    def op(st: State) -> int:
        with np.errstate(all="ignore"):
            if to_single:
                x = get_d(st, r1)
                r = fpu.canon(x.astype(np.float32))
                mode = _mode(st, rm)
                if mode != "rne":
                    r = fpu.directed("cvt", [x], mode, r)
                put_f(st, rd, r)
            else:
                put_f(st, rd, fpu.canon(get_s(st, r1).astype(np.float64)))
        return nxt
    return op
