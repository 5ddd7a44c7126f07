"""Basic blocks of a compiled program as generated Python functions.

A per-instruction dispatch loop pays for the loop itself (bounds check, hit counter, limit
check, the indexed call) on every instruction; that was most of rvvsim's time on scalar code.
Here a *block* is a straight-line run from a leader (a label target, a function entry, the
instruction after a control transfer) to the next control transfer or leader. The machine
compiles it once, on first execution, into one Python function that calls the instructions'
closures in order, or pastes their source (``core.inline``) for the hot scalar ones, and
returns the next instruction index. The dispatch loop then runs once per block.

Faults stay exact: the line of the generated function that raised (from the traceback) names
the instruction, and every counter is per block and multiplied out at the end of a call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import CodeType, TracebackType
from typing import Any

from portc.runtimes.rvvsim.core import Op, s64
from portc.runtimes.rvvsim.parser import Program
from portc.runtimes.rvvsim.scalar import CONTROL


@dataclass
class Block:
    """Instructions [start, end] run by ``run(state) -> next index``."""

    start: int
    end: int
    run: Any  # Callable[[State], int]
    code: CodeType
    lines: dict[int, int] = field(default_factory=dict)  # generated line -> instruction index
    loop: Any = None  # a batch.LoopPlan when the block is a loop the batcher can run

    @property
    def size(self) -> int:
        return self.end - self.start + 1

    def fault_index(self, tb: TracebackType | None) -> int | None:
        """The instruction that raised, from the traceback of an exception out of ``run``."""
        while tb is not None:
            if tb.tb_frame.f_code is self.code:
                return self.lines.get(tb.tb_lineno)
            tb = tb.tb_next
        return None


def leaders(program: Program) -> set[int]:
    """Indices where a block must start: entries, branch targets, after control transfers."""
    out = {0} | set(program.labels.values())
    for ins in program.instrs:
        for kind, val in ins.operands:
            if kind == "label":
                out.add(int(val))  # type: ignore[call-overload]
        if ins.mnemonic in CONTROL:
            out.add(ins.index + 1)
    return out


def build_block(start: int, ops: list[Op], program: Program, lead: set[int]) -> Block:
    """Compile the block starting at ``start`` (any index: a computed jump may land anywhere)."""
    n = len(ops)
    end = start
    while (end < n - 1 and program.instrs[end].mnemonic not in CONTROL
           and end + 1 not in lead):
        end += 1
    src = ["def run(st):", "    x = st.x", "    f = st.f"]
    ns: dict[str, Any] = {"s64": s64}
    lines: dict[int, int] = {}

    def emit(text: str, index: int) -> None:
        src.append("    " + text)
        lines[len(src)] = index

    for k in range(start, end + 1):
        op = ops[k]
        body = getattr(op, "inline", None)
        ret = getattr(op, "inline_ret", None)
        last = k == end
        control = program.instrs[k].mnemonic in CONTROL
        if body is not None and (not last or not control or ret is not None):
            for line in body:
                emit(line, k)
            if last:
                emit(f"return {ret if control else k + 1}", k)
            continue
        ns[f"o{k}"] = op
        if last and control:
            emit(f"return o{k}(st)", k)
        else:
            emit(f"o{k}(st)", k)
            if last:
                emit(f"return {k + 1}", k)
    name = f"<rvvsim block {program.source}:{program.instrs[start].line}>"
    code = compile("\n".join(src) + "\n", name, "exec")
    exec(code, ns)  # noqa: S102 - generated from the instruction table, no user text
    run = ns["run"]
    return Block(start, end, run, run.__code__, lines)
