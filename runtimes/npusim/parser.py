"""Text -> program: the npu artifact as npusim sees it, parsed by ``npu.lark``.

The simulator never touches xDSL objects: what it executes is what portc ships. The parse keeps
every op's source line (and the line's text) so that faults can name the instruction.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from lark import Lark, Transformer, v_args
from lark.exceptions import LarkError

from portc.compiler.errors import IRError

_SCALARS = {"f16": "float16", "bf16": "bfloat16", "f32": "float32", "f64": "float64",
            "i1": "bool", "i8": "int8", "i16": "int16", "i32": "int32", "i64": "int64",
            "ui8": "uint8", "ui16": "uint16", "ui32": "uint32", "ui64": "uint64"}
_MEMREF = re.compile(r'memref<\s*(\d+)\s*x\s*([a-z0-9]+)\s*(?:,\s*"([a-z0-9]+)"\s*)?>')
_DENSE = re.compile(r"array<\s*([a-z0-9]+)\s*(?::\s*([-+0-9,\s]*))?>")


class NpuParseError(IRError):
    """The npu program text does not parse (names source and line)."""


@dataclass(frozen=True)
class MemType:
    """A flat buffer type: ``size`` elements of ``dtype`` in ``space``."""

    dtype: str
    size: int
    space: str

    @property
    def itemsize(self) -> int:
        return {"float16": 2, "bfloat16": 2, "float32": 4, "int8": 1, "uint8": 1, "int16": 2,
                "uint16": 2, "int32": 4, "uint32": 4, "float64": 8, "int64": 8,
                "uint64": 8}[self.dtype]


@dataclass
class Block:
    args: list[tuple[str, Any]]
    ops: list[Op]


@dataclass
class Op:
    """One parsed op: names of results/operands, Python-valued properties, nested regions."""

    name: str
    results: list[str]
    operands: list[str]
    props: dict[str, Any]
    regions: list[list[Block]]
    operand_types: list[Any]
    result_types: list[Any]
    line: int
    text: str = ""

    def prop(self, key: str) -> Any:
        try:
            return self.props[key]
        except KeyError:
            raise NpuParseError(f"line {self.line}: {self.name} lacks property '{key}'") from None


@dataclass
class KernelDef:
    """One ``npu.kernel``: metadata plus its body block."""

    name: str
    core: str
    block_dim: int
    soc: str
    arg_names: list[str]
    arg_types: list[MemType]
    body: Block
    line: int


@dataclass
class Program:
    source: str
    kernels: dict[str, KernelDef] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)


def _type(tok: str) -> Any:
    if tok.startswith("memref"):
        m = _MEMREF.fullmatch(tok.strip())
        if not m:
            raise ValueError(f"unsupported buffer type {tok} (npu buffers are memref<N x T, "
                             "\"space\">)")
        return MemType(_SCALARS.get(m.group(2), m.group(2)), int(m.group(1)), m.group(3) or "gm")
    return tok if tok == "index" else _SCALARS.get(tok, tok)


class _ToProgram(Transformer):
    """Lark tree -> ``Op``/``Block`` objects with Python attribute values."""

    def start(self, items: list) -> list[Op]:
        return items

    @v_args(meta=True)
    def op(self, meta: Any, items: list) -> Op:
        results, name, operands, props, regions, attrs, ftype = items
        p = dict(props or {})
        p.update(attrs or {})
        return Op(name=str(name)[1:-1], results=results or [], operands=operands or [],
                  props=p, regions=regions or [], operand_types=ftype[0],
                  result_types=ftype[1], line=meta.line)

    def results(self, items: list) -> list[str]:
        return [str(t) for t in items]

    values = results

    def props(self, items: list) -> dict[str, Any]:
        return dict(i for i in items if i is not None)

    attrdict = props

    def entry(self, items: list) -> tuple[str, Any]:
        return str(items[0]), items[1]

    def regions(self, items: list) -> list[list[Block]]:
        return items

    def region(self, items: list) -> list[Block]:
        return items

    def block(self, items: list) -> Block:
        if items and isinstance(items[0], list):
            return Block(items[0], items[1:])
        if items and items[0] is None:
            items = items[1:]
        return Block([], items)

    def label(self, items: list) -> list[tuple[str, Any]]:
        return [a for a in items[1:] if a is not None]

    def blockarg(self, items: list) -> tuple[str, Any]:
        return str(items[0]), items[1]

    def functype(self, items: list) -> tuple[list, list]:
        return (items[0] or []), items[1]

    def restype(self, items: list) -> list:
        if not items or items[0] is None:
            return []
        return items[0] if isinstance(items[0], list) else [items[0]]

    def types(self, items: list) -> list:
        return items

    def type(self, items: list) -> Any:
        return _type(str(items[0]))

    def int_attr(self, items: list) -> int | bool:
        v = int(str(items[0]))
        return bool(v) if len(items) > 1 and items[1] == "bool" else v

    def hex_attr(self, items: list) -> float | int:
        bits = int(str(items[0]), 16)
        ty = items[1] if len(items) > 1 else None
        if ty == "float64":
            return struct.unpack("<d", struct.pack("<Q", bits))[0]
        if ty == "float32":
            return struct.unpack("<f", struct.pack("<I", bits))[0]
        return bits

    def float_attr(self, items: list) -> float:
        return float(str(items[0]))

    def true_attr(self, _: list) -> bool:
        return True

    def false_attr(self, _: list) -> bool:
        return False

    def str_attr(self, items: list) -> str:
        return bytes(str(items[0])[1:-1], "utf-8").decode("unicode_escape")

    def list_attr(self, items: list) -> list:
        return [i for i in items if i is not None]

    def dense_attr(self, items: list) -> tuple[int, ...]:
        m = _DENSE.fullmatch(str(items[0]))
        if not m:
            raise ValueError(f"unsupported dense array {items[0]}")
        body = (m.group(2) or "").strip()
        return tuple(int(x) for x in body.split(",")) if body else ()

    def opaque_attr(self, items: list) -> str:
        return str(items[0])

    def symbol_attr(self, items: list) -> str:
        return str(items[0])[1:]

    def type_attr(self, items: list) -> Any:
        return _type(str(items[0]))


@lru_cache(maxsize=1)
def _parser() -> Lark:
    grammar = resources.files("portc.runtimes.npusim").joinpath("npu.lark").read_text()
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True)


def _attach_text(ops: list[Op], lines: list[str]) -> None:
    for op in ops:
        op.text = lines[op.line - 1].strip() if 0 < op.line <= len(lines) else op.name
        for region in op.regions:
            for block in region:
                _attach_text(block.ops, lines)


def parse_program(text: str, source: str = "<npu program>") -> Program:
    """Parse an npu program's generic MLIR text into kernels; ``NpuParseError`` names the line."""
    try:
        tree = _parser().parse(text)
        ops: list[Op] = _ToProgram().transform(tree)
    except LarkError as e:
        line = getattr(e, "line", "?")
        col = getattr(e, "column", "?")
        inner = getattr(e, "orig_exc", None)
        detail = str(inner) if inner is not None else str(e).splitlines()[0]
        raise NpuParseError(f"{source}:{line}:{col}: cannot parse npu program: {detail}") \
            from None
    lines = text.splitlines()
    _attach_text(ops, lines)
    prog = Program(source=source, lines=lines)
    top = ops
    if len(ops) == 1 and ops[0].name == "builtin.module":
        top = [o for b in ops[0].regions[0] for o in b.ops] if ops[0].regions else []
    for op in top:
        if op.name != "npu.kernel":
            raise NpuParseError(f"{source}:{op.line}: only npu.kernel ops may appear at module "
                                f"level, found {op.name}")
        if not op.regions or len(op.regions[0]) != 1:
            raise NpuParseError(f"{source}:{op.line}: npu.kernel needs one body block")
        body = op.regions[0][0]
        names = list(op.prop("arg_names"))
        types = [t for _, t in body.args]
        if len(names) != len(types) or not all(isinstance(t, MemType) for t in types):
            raise NpuParseError(f"{source}:{op.line}: kernel arguments must be one named gm "
                                "buffer each")
        k = KernelDef(name=op.prop("sym_name"), core=op.prop("core"),
                      block_dim=int(op.prop("block_dim")), soc=op.prop("soc"), arg_names=names,
                      arg_types=types, body=body, line=op.line)
        if k.name in prog.kernels:
            raise NpuParseError(f"{source}:{op.line}: kernel @{k.name} defined twice")
        prog.kernels[k.name] = k
    return prog


__all__ = ["Block", "KernelDef", "MemType", "NpuParseError", "Op", "Program", "parse_program"]
