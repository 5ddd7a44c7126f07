"""ptxsim's faults: every one names the kernel, the instruction with its source line, and a thread.

A PTX module that does not parse is a compiler bug in the emitter (``PtxParseError`` is an
``IRError``); a kernel that touches memory it must not, races on shared memory or hits a barrier
under divergence is a bug in the generated code and must be reported at the first faulting
instruction, the way compute-sanitizer would, rather than producing plausible numbers.
"""

from __future__ import annotations

from portc.compiler.errors import InputError, IRError, LimitError, PortcError


class PtxParseError(IRError):
    """PTX text that does not parse, or names an instruction/register ptxsim cannot decode."""

    def __init__(self, source: str, line: int, text: str, why: str) -> None:
        self.source, self.line, self.text = source, line, text
        where = f"{source}:{line}" if line else source
        shown = f": `{text}`" if text else ""
        super().__init__(f"PTX {where}{shown}: {why}")


class UnsupportedInstructionError(PtxParseError):
    """A well-formed instruction whose opcode or qualifier combination ptxsim does not model."""


class PtxSimError(PortcError):
    """A fault raised while executing a kernel; the message locates it in kernel, text and grid."""

    def __init__(self, kernel: str, line: int, text: str, where: str, why: str) -> None:
        self.kernel, self.line, self.text, self.where = kernel, line, text, where
        super().__init__(f"{type(self).__name__} in kernel '{kernel}' at line {line} `{text}`: "
                         f"{where}: {why}")


class OutOfBoundsError(PtxSimError):
    """A global access outside every allocation, or a shared access past the declared size."""


class MisalignedAccessError(PtxSimError):
    """An address that is not a multiple of the access size (vector width included)."""


class SharedMemoryRaceError(PtxSimError):
    """Two threads of one block touch the same shared byte between barriers, one of them writing."""


class GlobalWriteConflictError(PtxSimError):
    """Two threads store different values to one global element in the same instruction."""


class UninitializedSharedError(PtxSimError):
    """A read of shared memory no thread of the block wrote in this launch (garbage on hardware)."""


class BarrierDivergenceError(PtxSimError):
    """``bar.sync`` reached by only part of a block's live threads (a hang on real hardware)."""


class WarpSyncError(PtxSimError):
    """A ``.sync``/``.aligned`` warp collective executed by a partial warp or reading a lane that
    does not take part (undefined on hardware)."""


class TrapError(PtxSimError):
    """The kernel executed ``trap`` (how device-side assertions end)."""


class InstructionLimitError(PtxSimError, LimitError):
    """The launch ran past ``max_instructions`` warp-level instructions (a runaway loop)."""


class LaunchError(InputError):
    """A launch whose geometry or parameters do not fit the entry's declaration."""
