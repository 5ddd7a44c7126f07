"""PTX text -> ``PtxModule``: entries with parameters, registers, shared variables and a flat,
decoded instruction list with its control-flow graph and immediate post-dominators.

Parsing happens once per module; launches only execute the decoded instructions.  Post-dominators
are computed here because the SIMT reconvergence point of every conditional branch is a static
property of the code: divergent lanes meet again at the branch's immediate post-dominator.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

import lark
import ml_dtypes
import numpy as np

from portc.runtimes.ptxsim.errors import PtxParseError

# register/operand storage by PTX type: bit pattern dtype per type
TYPE_BITS = {
    "pred": 1, "b8": 8, "u8": 8, "s8": 8, "b16": 16, "u16": 16, "s16": 16, "f16": 16, "bf16": 16,
    "b32": 32, "u32": 32, "s32": 32, "f32": 32, "f16x2": 32, "bf16x2": 32, "tf32": 32,
    "b64": 64, "u64": 64, "s64": 64, "f64": 64, "b128": 128,
}


@dataclass(frozen=True)
class Reg:
    name: str


@dataclass(frozen=True)
class Imm:
    """An immediate as written: an exact Python int, a float, or raw float bits (0f/0d)."""

    value: int | float
    bits: int | None = None  # 0fXXXXXXXX / 0dXXXXXXXXXXXXXXXX
    width: int = 0           # 32 or 64 for bit-pattern floats


@dataclass(frozen=True)
class Sym:
    """A symbol operand: a label, a parameter, a shared variable, or a special register."""

    name: str


@dataclass(frozen=True)
class NotPred:
    name: str


@dataclass(frozen=True)
class PredPair:
    p: str
    q: str


@dataclass(frozen=True)
class Vec:
    items: tuple


@dataclass(frozen=True)
class Addr:
    base: str | None  # register or symbol name; None for an absolute address
    offset: int


Operand = Reg | Imm | Sym | NotPred | PredPair | Vec | Addr


@dataclass
class Instr:
    """One instruction as written, with its position; ``run`` is filled in by the decoder."""

    opcode: str
    parts: tuple[str, ...]
    operands: tuple
    guard: str | None
    guard_neg: bool
    line: int
    text: str
    index: int = 0
    run: object = None           # decoded executor: (ctx, mask) -> None
    branch: str | None = None    # label target for bra
    kind: str = "op"             # op | bra | exit | bar
    ipdom: int = -1              # reconvergence point for a divergent bra


@dataclass
class SharedVar:
    name: str
    offset: int
    size: int           # 0 for extern (dynamic) arrays
    align: int
    extern: bool


@dataclass
class GlobalVar:
    """A module-scope ``.global``/``.const`` variable: allocated in global memory by PtxSim,
    filled from its initializer (zeros without one)."""

    name: str
    space: str
    type: str
    align: int
    data: np.ndarray  # uint8 bytes


@dataclass
class Param:
    name: str
    type: str
    offset: int
    size: int


@dataclass
class Entry:
    name: str
    params: list[Param]
    regs: dict[str, str]            # register name -> PTX type
    shared: dict[str, SharedVar]
    shared_bytes: int               # static shared size; dynamic shared starts here (aligned)
    dynamic_align: int
    instrs: list[Instr]
    labels: dict[str, int]
    source: str
    line: int
    param_bytes: int = 0
    reqntid: tuple[int, ...] | None = None
    globals: dict[str, GlobalVar] = field(default_factory=dict)
    local: dict[str, SharedVar] = field(default_factory=dict)  # per-thread .local arrays
    local_bytes: int = 0

    @property
    def param_types(self) -> list[str]:
        return [p.type for p in self.params]


@dataclass
class PtxModule:
    version: str
    target: list[str]
    address_size: int
    entries: dict[str, Entry] = field(default_factory=dict)
    source: str = "<ptx>"
    globals: dict[str, GlobalVar] = field(default_factory=dict)


@cache
def _parser() -> lark.Lark:
    grammar = resources.files("portc.runtimes.ptxsim").joinpath("ptx.lark").read_text()
    return lark.Lark(grammar, parser="lalr", maybe_placeholders=True)


def _line(tree: lark.Tree | lark.Token) -> int:
    """Source line of a statement: its first token's (positions are not propagated to trees,
    which halves parse time on large modules)."""
    node = tree
    while isinstance(node, lark.Tree):
        node = next((c for c in node.children if c is not None), None)
        if node is None:
            return 0
    return node.line or 0


def _int(tok: str) -> int:
    t = tok.rstrip("U")
    if t.lower().startswith("0x"):
        return int(t, 16)
    if len(t) > 1 and t.startswith("0"):
        return int(t, 8)
    return int(t)


def _imm(children: list) -> Imm:
    sign = -1 if len(children) == 2 and str(children[0]) == "-" else 1
    tok = children[-1]
    s = str(tok)
    if tok.type == "HEXF":
        if sign < 0:
            return Imm(0.0, int(s[2:], 16) ^ 0x8000_0000, 32)
        return Imm(0.0, int(s[2:], 16), 32)
    if tok.type == "HEXD":
        bits = int(s[2:], 16)
        return Imm(0.0, bits ^ (1 << 63) if sign < 0 else bits, 64)
    if tok.type == "FLOAT":
        return Imm(sign * float(s))
    return Imm(sign * _int(s))


def _operand(tree: lark.Tree | lark.Token, regs: dict[str, str]) -> Operand:
    if isinstance(tree, lark.Token):
        raise AssertionError(tree)
    d = tree.data
    if d == "sym":
        name = str(tree.children[0])
        return Reg(name) if name in regs else Sym(name)
    if d == "notpred":
        return NotPred(str(tree.children[1]))
    if d == "predpair":
        return PredPair(str(tree.children[0]), str(tree.children[1]))
    if d == "imm":
        return _imm(tree.children)
    if d == "vec":
        return Vec(tuple(_operand(c, regs) for c in tree.children))
    if d == "addr":
        a = tree.children[0]
        if a.data == "addr_abs":
            return Addr(None, _int(str(a.children[0])))
        base = str(a.children[0])
        off = 0
        if len(a.children) == 3:
            off = _int(str(a.children[2])) * (-1 if str(a.children[1]) == "-" else 1)
        return Addr(base, off)
    raise AssertionError(d)


_RANGE = re.compile(r"^(.*)<(\d+)>$")


def _align_up(x: int, a: int) -> int:
    return (x + a - 1) // a * a


def parse_module(text: str, source: str = "<ptx>") -> PtxModule:
    """Parse PTX text into a ``PtxModule``; instructions are decoded (semantics bound) here."""
    from portc.runtimes.ptxsim.decode import decode_entry

    try:
        tree = _parser().parse(text)
    except lark.exceptions.UnexpectedInput as e:
        line = getattr(e, "line", 0) or 0
        src_line = text.splitlines()[line - 1].strip() if 0 < line <= len(text.splitlines()) else ""
        raise PtxParseError(source, line, src_line, f"syntax error: {str(e).splitlines()[0]}") from None
    lines = text.splitlines()
    mod = PtxModule(version="", target=[], address_size=64, source=source)
    module_shared: list[lark.Tree] = []
    for item in tree.children:
        if item.data == "version":
            mod.version = str(item.children[0])
        elif item.data == "target":
            mod.target = [str(c) for c in item.children]
        elif item.data == "address_size":
            mod.address_size = int(str(item.children[0]))
            if mod.address_size != 64:
                raise PtxParseError(source, _line(item), lines[_line(item) - 1].strip(),
                                    "only .address_size 64 is modelled")
        elif item.data == "var_decl":
            space = next(str(t) for t in item.children
                         if isinstance(t, lark.Token) and t.type == "STATE_SPACE")
            if space == ".shared":
                module_shared.append(item)
            else:
                gv = _global_var(item, lines, source)
                if gv.name in mod.globals:
                    raise PtxParseError(source, _line(item), lines[_line(item) - 1].strip(),
                                        f"duplicate symbol '{gv.name}'")
                mod.globals[gv.name] = gv
        elif item.data == "debug_file":
            continue
        elif item.data == "entry":
            ent = _entry(item, lines, source, module_shared)
            if ent.name in mod.entries:
                raise PtxParseError(source, ent.line, f".entry {ent.name}", "duplicate entry")
            mod.entries[ent.name] = ent
    if not mod.version:
        raise PtxParseError(source, 1, "", "missing .version directive")
    for ent in mod.entries.values():
        ent.globals = mod.globals
        decode_entry(ent)
        _post_dominators(ent)
    return mod


def _entry(tree: lark.Tree, lines: list[str], source: str, module_shared: list) -> Entry:
    ch = [c for c in tree.children if not (isinstance(c, lark.Token) and c.type == "LINKAGE")]
    name = str(ch[0])
    params: list[Param] = []
    off = 0
    rest = ch[1:]
    reqntid = None
    for c in rest:
        if isinstance(c, lark.Tree) and c.data == "param":
            toks = [t for t in c.children if t is not None]
            ty = str(next(t for t in toks if t.type == "TYPE"))[1:]
            align = TYPE_BITS.get(ty, 8) // 8 or 1
            ints = [t for t in toks if t.type == "INT"]
            names = [t for t in toks if t.type == "IDENT"]
            # `.align N` before the name; an `[N]` after it makes an array of bytes
            count = 1
            pname = str(names[0])
            for t in ints:
                if t.end_pos <= names[0].start_pos:
                    align = max(align, _int(str(t)))
                else:
                    count = _int(str(t))
            size = (TYPE_BITS[ty] // 8 or 1) * count
            off = _align_up(off, align)
            params.append(Param(pname, ty, off, size))
            off += size
        elif isinstance(c, lark.Tree) and c.data == "perf":
            if str(c.children[0]) == ".reqntid":
                reqntid = tuple(_int(str(t)) for t in c.children[1:])
    ent = Entry(name=name, params=params, regs={}, shared={}, shared_bytes=0, dynamic_align=16,
                instrs=[], labels={}, source=source, line=_line(tree), param_bytes=off,
                reqntid=reqntid)
    for decl in module_shared:
        _var_decl(ent, decl, lines, source)
    stmts = [c for c in rest if isinstance(c, lark.Tree) and c.data not in ("param", "perf")]
    _body(ent, stmts, lines, source)
    return ent


def _var_decl(ent: Entry, tree: lark.Tree, lines: list[str], source: str) -> None:
    toks = [t for t in tree.children if isinstance(t, lark.Token)]
    line = _line(tree)
    extern = any(t.type == "EXTERN" for t in toks)
    space = next(str(t) for t in toks if t.type == "STATE_SPACE")
    if space == ".local":
        _local_decl(ent, tree, lines, source)
        return
    if space != ".shared":
        raise PtxParseError(source, line, lines[line - 1].strip(),
                            f"{space} variables are modelled at module scope only")
    if any(isinstance(c, lark.Tree) and c.data == "initializer" for c in tree.children):
        raise PtxParseError(source, line, lines[line - 1].strip(),
                            ".shared variables cannot have initializers")
    ty = str(next(t for t in toks if t.type == "TYPE"))[1:]
    name = str(next(t for t in toks if t.type == "IDENT"))
    ints = [_int(str(t)) for t in toks if t.type == "INT"]
    elem = TYPE_BITS[ty] // 8 or 1
    align = ints[0] if ints else elem
    dims_tree = next((c for c in tree.children if isinstance(c, lark.Tree) and c.data == "dims"),
                     None)
    count = 1
    if dims_tree is not None:
        dims = [c for c in dims_tree.children]
        for dtok in dims:
            if dtok is None:
                if not extern:
                    raise PtxParseError(source, line, lines[line - 1].strip(),
                                        "an array without a size must be .extern")
                count = 0
            else:
                count *= _int(str(dtok))
    if name in ent.shared:
        raise PtxParseError(source, line, lines[line - 1].strip(), f"duplicate symbol '{name}'")
    if extern:
        ent.dynamic_align = max(ent.dynamic_align, align)
        ent.shared[name] = SharedVar(name, -1, 0, align, True)
        return
    off = _align_up(ent.shared_bytes, align)
    ent.shared[name] = SharedVar(name, off, elem * count, align, False)
    ent.shared_bytes = off + elem * count


def _local_decl(ent: Entry, tree: lark.Tree, lines: list[str], source: str) -> None:
    """A per-thread ``.local`` array (nvcc's ``__local_depot``): laid out like shared memory,
    one copy per thread."""
    toks = [t for t in tree.children if isinstance(t, lark.Token)]
    line = _line(tree)
    if any(isinstance(c, lark.Tree) and c.data == "initializer" for c in tree.children) or \
            any(t.type == "EXTERN" for t in toks):
        raise PtxParseError(source, line, lines[line - 1].strip(),
                            ".local variables take neither initializers nor .extern")
    ty = str(next(t for t in toks if t.type == "TYPE"))[1:]
    name = str(next(t for t in toks if t.type == "IDENT"))
    ints = [_int(str(t)) for t in toks if t.type == "INT"]
    elem = TYPE_BITS[ty] // 8 or 1
    align = ints[0] if ints else elem
    count = 1
    dims_tree = next((c for c in tree.children if isinstance(c, lark.Tree) and c.data == "dims"),
                     None)
    for dtok in (dims_tree.children if dims_tree is not None else []):
        if dtok is None:
            raise PtxParseError(source, line, lines[line - 1].strip(), ".local arrays need a size")
        count *= _int(str(dtok))
    if name in ent.local or name in ent.shared:
        raise PtxParseError(source, line, lines[line - 1].strip(), f"duplicate symbol '{name}'")
    off = _align_up(ent.local_bytes, align)
    ent.local[name] = SharedVar(name, off, elem * count, align, False)
    ent.local_bytes = off + elem * count


def _init_leaves(node: lark.Tree) -> list[Imm]:
    if node.data == "imm":
        return [_imm(node.children)]
    return [leaf for c in node.children for leaf in _init_leaves(c)]


def _global_var(tree: lark.Tree, lines: list[str], source: str) -> GlobalVar:
    toks = [t for t in tree.children if isinstance(t, lark.Token)]
    line = _line(tree)
    text = lines[line - 1].strip()
    if any(t.type == "EXTERN" for t in toks):
        raise PtxParseError(source, line, text, ".extern .global/.const variables are not modelled")
    space = next(str(t) for t in toks if t.type == "STATE_SPACE")[1:]
    if space not in ("global", "const"):
        raise PtxParseError(source, line, text, f".{space} variables are not modelled")
    ty = str(next(t for t in toks if t.type == "TYPE"))[1:]
    if ty == "pred":
        raise PtxParseError(source, line, text, ".pred variables are not memory")
    name = str(next(t for t in toks if t.type == "IDENT"))
    ints = [_int(str(t)) for t in toks if t.type == "INT"]
    elem = TYPE_BITS[ty] // 8 or 1
    align = ints[0] if ints else elem
    init = next((c for c in tree.children if isinstance(c, lark.Tree) and c.data == "initializer"),
                None)
    leaves = _init_leaves(init.children[0]) if init is not None else []
    dims_tree = next((c for c in tree.children if isinstance(c, lark.Tree) and c.data == "dims"),
                     None)
    count = 1
    if dims_tree is not None:
        for dtok in dims_tree.children:
            count = count * _int(str(dtok)) if dtok is not None else max(len(leaves), 1)
    if len(leaves) > count:
        raise PtxParseError(source, line, text, f"{len(leaves)} initializers for {count} elements")
    data = np.zeros(count * elem, np.uint8)
    for i, imm in enumerate(leaves):
        data[i * elem:(i + 1) * elem] = _imm_bytes(imm, ty)
    return GlobalVar(name, space, ty, align, data)


def _imm_bytes(imm: Imm, ty: str) -> np.ndarray:
    """Little-endian bytes of an initializer element of type ``ty``."""
    bits = TYPE_BITS[ty]
    if imm.bits is not None:
        raw = np.array([imm.bits], np.uint32 if imm.width == 32 else np.uint64)
        if ty in ("f32", "f64") and bits != imm.width:
            val = raw.view(np.float32 if imm.width == 32 else np.float64)[0]
            return np.array([val], np.float32 if ty == "f32" else np.float64).view(np.uint8)
        return np.array([imm.bits & ((1 << bits) - 1)], f"<u{bits // 8}").view(np.uint8) \
            if bits >= 16 else np.array([imm.bits & 0xFF], np.uint8)
    if ty in ("f32", "f64", "f16", "bf16"):
        return np.array([imm.value], {"f32": np.float32, "f64": np.float64, "f16": np.float16,
                                      "bf16": ml_dtypes.bfloat16}[ty]).view(np.uint8)
    v = int(imm.value) & ((1 << bits) - 1)
    return np.array([v], f"<u{max(bits, 8) // 8}").view(np.uint8)


def _body(ent: Entry, stmts: list, lines: list[str], source: str) -> None:
    for st in stmts:
        line = _line(st)
        if st.data == "block":
            _body(ent, [c for c in st.children if isinstance(c, lark.Tree)], lines, source)
        elif st.data == "reg_decl":
            toks = [t for t in st.children if isinstance(t, lark.Token)]
            ty = str(next(t for t in toks if t.type == "TYPE"))[1:]
            if any(t.type == "VECTOR_WIDTH" for t in toks):
                raise PtxParseError(source, line, lines[line - 1].strip(),
                                    "vector registers (.reg .v2/.v4) are not modelled")
            for item in (c for c in st.children if isinstance(c, lark.Tree)):
                base = str(item.children[0])
                if len(item.children) > 1 and item.children[1] is not None:
                    n = _int(str(item.children[1]))
                    for i in range(n):
                        ent.regs[f"{base}{i}"] = ty
                else:
                    ent.regs[base] = ty
        elif st.data == "var_decl":
            _var_decl(ent, st, lines, source)
        elif st.data == "label":
            lab = str(st.children[0])
            if lab in ent.labels:
                raise PtxParseError(source, line, lines[line - 1].strip(), f"duplicate label {lab}")
            ent.labels[lab] = len(ent.instrs)
        elif st.data in ("pragma", "debug_loc"):
            continue
        elif st.data == "instr":
            kids = list(st.children)
            guard = kids.pop(0) if isinstance(kids[0], lark.Tree) else None
            opc, *ops = kids
            gname, gneg = None, False
            if guard is not None:
                gneg = len(guard.children) == 2
                gname = str(guard.children[-1])
            operands = tuple(_operand(o, ent.regs) for o in ops if o is not None)
            text = " ".join(lines[line - 1].split("//")[0].split()).rstrip()
            # an instruction may share a line with others; keep the whole statement text short
            if text.count(";") > 1:
                text = f"{opc} ..."
            op = str(opc)
            ent.instrs.append(Instr(op, tuple(op.split(".")), operands, gname, gneg, line,
                                    text.rstrip(";").strip(), len(ent.instrs)))


def _post_dominators(ent: Entry) -> None:
    """Immediate post-dominator of every conditional branch (exit node = len(instrs)).

    Works on instruction granularity with the classic iterative set algorithm over basic-block
    leaders; kernels are small (hundreds to a few thousand instructions), so bit sets as Python
    ints keep it fast and simple.
    """
    n = len(ent.instrs)
    if n == 0:
        return
    leaders = {0}
    for i, ins in enumerate(ent.instrs):
        if ins.kind in ("bra", "exit"):
            if i + 1 < n:
                leaders.add(i + 1)
            if ins.kind == "bra":
                leaders.add(ent.labels[ins.branch])
    starts = sorted(leaders)
    block_of = np.zeros(n + 1, dtype=np.int64)
    for b, s in enumerate(starts):
        block_of[s:] = b
    nb = len(starts)
    exit_b = nb
    ends = [*starts[1:], n]
    succ: list[list[int]] = []
    for b in range(nb):
        last = ent.instrs[ends[b] - 1]
        nxt = ends[b]
        follow = int(block_of[nxt]) if nxt < n else exit_b
        if last.kind == "exit" and last.guard is None:
            succ.append([exit_b])
        elif last.kind == "exit":
            succ.append([exit_b, follow])
        elif last.kind == "bra":
            tgt = ent.labels[last.branch]
            t = int(block_of[tgt]) if tgt < n else exit_b
            succ.append([t] if last.guard is None else [t, follow])
        else:
            succ.append([follow])
    full = (1 << (nb + 1)) - 1
    pdom = [full] * nb + [1 << exit_b]
    changed = True
    while changed:
        changed = False
        for b in reversed(range(nb)):
            inter = full
            for s in succ[b]:
                inter &= pdom[s]
            new = inter | (1 << b)
            if new != pdom[b]:
                pdom[b] = new
                changed = True
    for b in range(nb):
        last = ent.instrs[ends[b] - 1]
        if last.kind not in ("bra", "exit") or last.guard is None:
            continue
        cands = pdom[b] & ~(1 << b)
        # the immediate post-dominator is the strict post-dominator post-dominated by all others
        best = exit_b
        c = cands
        while c:
            x = (c & -c).bit_length() - 1
            c &= c - 1
            if (cands & ~pdom[x]) == 0:
                best = x
                break
        last.ipdom = starts[best] if best < nb else n
