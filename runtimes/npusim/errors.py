"""Faults npusim reports: each names the kernel, the core, and the instruction with its line."""

from __future__ import annotations

from portc.compiler.errors import LimitError, PortcError


class NpuSimError(PortcError):
    """A fault the hardware would turn into corrupt data or a hang, found while simulating.

    ``kernel``, ``core``, ``line`` and ``instruction`` locate it; the message says what to fix."""

    kind = "fault"

    def __init__(self, detail: str, kernel: str = "?", core: int | None = None,
                 line: int | None = None, instruction: str = "") -> None:
        self.detail, self.kernel, self.core, self.line = detail, kernel, core, line
        self.instruction = instruction
        where = f"kernel @{kernel}"
        if core is not None:
            where += f", core {core}"
        if line is not None:
            where += f", line {line}"
        text = f": `{instruction}`" if instruction else ""
        super().__init__(f"npusim {self.kind} in {where}{text}: {detail}")


class NpuBoundsError(NpuSimError):
    """An access beyond its buffer (allocation or GM argument) or beyond its address space."""

    kind = "out-of-bounds access"


class NpuAlignmentError(NpuSimError):
    """An address or DMA stride that breaks the space's alignment (32 B; L0C 512 B)."""

    kind = "misaligned access"


class NpuEventError(NpuSimError):
    """An event id outside 0..7, or a set_flag that is never waited for."""

    kind = "bad event"


class NpuDeadlockError(NpuSimError):
    """A wait_flag with no earlier matching set_flag: the pipe would wait forever."""

    kind = "deadlock"


class NpuRaceError(NpuSimError):
    """Two pipes touch the same bytes (at least one writing) with no flag/barrier order."""

    kind = "data race"


class NpuProgramError(NpuSimError):
    """An op, operand or parameter the simulator cannot execute (bad sizes, unknown op)."""

    kind = "invalid instruction"


class NpuOverflowError(NpuSimError):
    """Finite values that a conversion the *compiler* chose (the cube operand pack under
    ``--precision fp16``) turned into infinities; raised by the ascend runtime from the
    launch's overflow status, since the simulator itself only records it as hardware does."""

    kind = "fp16 overflow"


class NpuLimitError(LimitError):
    """The run exceeded the instruction budget (``max_instructions``)."""
