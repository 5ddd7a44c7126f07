"""Assembly text -> ``Program``: instructions with source lines, labels resolved to indices.

The lark grammar (``rvv.lark``) describes one source line; the text is parsed line by line so
an error always names its line, and operand *meaning* (which register file, immediate range,
label) is checked later when the machine decodes each instruction against its signature.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from lark import Lark, Token, Tree
from lark.exceptions import LarkError

from portc.runtimes.rvvsim.errors import AsmSyntaxError

# operand kinds: ("name", str) register/vtype/rounding-mode/symbol, ("imm", int),
# ("label", int) an instruction index (branch/jump/call targets, numeric labels resolved),
# ("mem", (offset, regname))
Operand = tuple[str, object]

IGNORED_DIRECTIVES = frozenset(
    ".text .data .bss .rodata .section .p2align .align .balign .option .attribute .size .file "
    ".ident .addrsig .cfi_startproc .cfi_endproc .cfi_def_cfa_offset .cfi_offset .cfi_restore "
    ".cfi_def_cfa .local .hidden .previous .variant_cc".split()
)


@dataclass(frozen=True)
class Instr:
    """One decoded source instruction: mnemonic, raw operands, where it came from."""

    mnemonic: str
    operands: tuple[Operand, ...]
    line: int
    text: str
    index: int


@dataclass
class Program:
    """A parsed assembly file: the instruction list and label -> instruction index maps."""

    source: str
    instrs: list[Instr]
    labels: dict[str, int]
    globals: set[str]
    functions: list[tuple[int, str]] = field(default_factory=list)  # (start index, name), sorted

    def function_of(self, index: int) -> str:
        """Name of the function (global or named label) whose body holds instruction ``index``."""
        starts = [s for s, _ in self.functions]
        i = bisect.bisect_right(starts, index) - 1
        return self.functions[i][1] if i >= 0 else "<top>"

    def entry(self, name: str) -> int:
        if name not in self.globals or name not in self.labels:
            known = ", ".join(sorted(self.globals & self.labels.keys())) or "none"
            raise AsmSyntaxError(
                f"{self.source}: no .globl function '{name}' (callable functions: {known})"
            )
        return self.labels[name]


@lru_cache(maxsize=1)
def _parser() -> Lark:
    grammar = resources.files("portc.runtimes.rvvsim").joinpath("rvv.lark").read_text()
    return Lark(grammar, parser="lalr", maybe_placeholders=False)


@lru_cache(maxsize=65536)
def _parse_line(text: str) -> tuple[tuple[str, tuple], ...]:
    """One source line -> (kind, payload) items; memoised because emitted code repeats lines."""
    items: list[tuple[str, tuple]] = []
    for node in _parser().parse(text).children:
        if node.data == "label":
            tok = node.children[0]
            items.append(("label", (str(tok), isinstance(tok, Token) and tok.type == "INT")))
        elif node.data == "directive":
            args = str(node.children[1]).split("#")[0] if len(node.children) > 1 else ""
            items.append(("directive", (str(node.children[0]), args)))
        else:
            items.append(("instruction", (str(node.children[0]).lower(),
                                          tuple(_operand(t) for t in node.children[1:]))))
    return tuple(items)


def _int(tok: str) -> int:
    return int(tok, 0)


def _operand(tree: Tree) -> Operand:
    kind = tree.data
    kids = tree.children
    if kind == "name":
        return ("name", str(kids[0]))
    if kind == "imm":
        return ("imm", _int(str(kids[0])))
    if kind == "localref":
        return ("local", str(kids[0]))
    # mem: [INT] "(" NAME ")"
    off = _int(str(kids[0])) if len(kids) == 2 else 0
    return ("mem", (off, str(kids[-1])))


def _label_operand(mnemonic: str, position: int, count: int) -> bool:
    """Only the last operand of a branch/jump/call names a code label."""
    jumps = mnemonic.startswith("b") or mnemonic in ("j", "jal", "call", "tail")
    return jumps and position == count - 1


def parse_program(text: str, source: str = "<asm>") -> Program:
    """Parse GNU-as text once; raises ``AsmSyntaxError`` naming the first bad line."""
    instrs: list[Instr] = []
    labels: dict[str, int] = {}
    globals_: set[str] = set()
    typed_functions: set[str] = set()
    local_defs: dict[str, list[tuple[int, int]]] = {}  # "1" -> [(line, index)]
    pending_local: list[tuple[int, str, tuple[Operand, ...], int, str]] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            # ';' separates statements (outside strings, which only directives carry)
            parts = [stripped] if '"' in stripped else stripped.split("#")[0].split(";")
            items = tuple(it for part in parts if part.strip()
                          for it in _parse_line(part.strip()))
        except LarkError as exc:
            raise AsmSyntaxError(f"{source}:{lineno}: cannot parse `{stripped}`: "
                                 f"{str(exc).splitlines()[0]}") from None
        for kind, payload in items:
            if kind == "label":
                name, numeric = payload
                if numeric:
                    local_defs.setdefault(name, []).append((lineno, len(instrs)))
                    continue
                if name in labels:
                    raise AsmSyntaxError(f"{source}:{lineno}: label '{name}' defined twice")
                labels[name] = len(instrs)
            elif kind == "directive":
                directive, args = payload
                if directive in (".globl", ".global"):
                    globals_.update(a.strip() for a in args.split(",") if a.strip())
                elif directive == ".type":
                    parts = [a.strip() for a in args.split(",")]
                    if len(parts) == 2 and parts[1] in ("@function", "%function"):
                        typed_functions.add(parts[0])
                elif directive not in IGNORED_DIRECTIVES:
                    raise AsmSyntaxError(f"{source}:{lineno}: unsupported directive "
                                         f"'{directive}' in `{stripped}`")
            else:  # instruction
                mnemonic, ops = payload
                if any(k == "local" for k, _ in ops):
                    pending_local.append((len(instrs), mnemonic, ops, lineno, stripped))
                instrs.append(Instr(mnemonic, ops, lineno, stripped, len(instrs)))
    for index, mnemonic, ops, lineno, stripped in pending_local:
        resolved = []
        for kind, value in ops:
            if kind == "local":
                ref = str(value)
                num, direction = ref[:-1], ref[-1]
                defs = local_defs.get(num, [])
                if direction == "b":
                    cands = [i for ln, i in defs if ln <= lineno]
                    target = cands[-1] if cands else None
                else:
                    cands = [i for ln, i in defs if ln > lineno]
                    target = cands[0] if cands else None
                if target is None:
                    raise AsmSyntaxError(f"{source}:{lineno}: local label '{ref}' in "
                                         f"`{stripped}` has no definition")
                resolved.append(("label", target))
            else:
                resolved.append((kind, value))
        instrs[index] = Instr(mnemonic, tuple(resolved), lineno, stripped, index)
    # named label operands become instruction indices too (the decoder still accepts names)
    for i, ins in enumerate(instrs):
        if any(k == "name" and v in labels for k, v in ins.operands):
            ops = tuple(("label", labels[v]) if k == "name" and v in labels and _label_operand(
                ins.mnemonic, j, len(ins.operands)) else (k, v)
                for j, (k, v) in enumerate(ins.operands))
            instrs[i] = Instr(ins.mnemonic, ops, ins.line, ins.text, ins.index)
    names = (globals_ | typed_functions) & labels.keys()
    if not names:  # a bare file: every non-local named label starts a function
        names = {n for n in labels if not n.startswith(".L")}
    functions = sorted((labels[n], n) for n in names)
    return Program(source, instrs, labels, globals_, functions)
