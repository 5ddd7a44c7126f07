"""Place temporaries in one arena by liveness: two temps share bytes only when no kernel between
the first write of one and the last read of the other touches both.

Every hardware target's manifest carries the plan (buffer -> byte offset, arena size), so runtimes
allocate one block for all temporaries, as IREE's and TVM's static memory planners do.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import IntegerAttr, ModuleOp, i64
from xdsl.passes import ModulePass

from portc.dialects import kernel as k

#: byte alignment of every temporary (covers 16-byte vector loads, 32-byte NPU DMA, cache lines)
ARENA_ALIGN = 256


def buffers_touched(op: k.KernelOp) -> list[str]:
    if isinstance(op, k.GenericOp):
        return [*op.input_names, op.output_name]
    assert isinstance(op, k.SortOp)
    return [op.input.data, op.values.data, op.indices.data]


def live_ranges(module: ModuleOp) -> dict[str, tuple[int, int]]:
    """Temp buffer -> (first kernel index touching it, last kernel index touching it)."""
    temps = {n for n, b in k.buffers_of(module).items() if b.kind.data == "temp"}
    ranges: dict[str, tuple[int, int]] = {}
    for i, op in enumerate(k.kernels_of(module)):
        for name in buffers_touched(op):
            if name in temps:
                first, _ = ranges.get(name, (i, i))
                ranges[name] = (first, i)
    return ranges


def _align(n: int) -> int:
    return (n + ARENA_ALIGN - 1) // ARENA_ALIGN * ARENA_ALIGN


def plan_offsets(module: ModuleOp) -> tuple[dict[str, int], int]:
    """First-fit by first use; returns offsets and the arena size in bytes."""
    bufs = k.buffers_of(module)
    ranges = live_ranges(module)
    placed: list[tuple[int, int, int, int]] = []  # (offset, size, first, last)
    offsets: dict[str, int] = {}
    for name in sorted(ranges, key=lambda n: (ranges[n][0], -bufs[n].nbytes)):
        first, last = ranges[name]
        size = _align(max(bufs[name].nbytes, 1))
        busy = sorted((o, s) for o, s, f, lst in placed if not (lst < first or f > last))
        off = 0
        for o, s in busy:
            if off + size <= o:
                break
            off = max(off, o + s)
        placed.append((off, size, first, last))
        offsets[name] = off
    arena = max((o + s for o, s, _, _ in placed), default=0)
    return offsets, arena


@dataclass(frozen=True)
class PlanBuffers(ModulePass):
    """Set ``offset`` on every temporary ``kernel.buffer`` and ``portc.arena_bytes`` on the
    module."""

    name = "plan-buffers"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        offsets, arena = plan_offsets(op)
        for name, b in k.buffers_of(op).items():
            if name in offsets:
                b.properties["offset"] = IntegerAttr(offsets[name], i64)
        op.attributes["portc.arena_bytes"] = IntegerAttr(arena, i64)
