"""Errors raised by rvvsim; each one names the function, instruction and source line.

Semantics helpers raise these with a bare message (they do not know where they run); the
dispatch loop in ``machine.py`` catches them once and prefixes the location, so the location
logic lives in one place and the hot path pays nothing for it.
"""

from __future__ import annotations

from portc.compiler.errors import IRError, LimitError, PortcError


class RvvSimError(PortcError):
    """Base class of every rvvsim failure."""

    def __init__(self, message: str, *, element: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.element = element
        self.function: str | None = None
        self.line: int | None = None
        self.text: str | None = None

    def locate(self, function: str, line: int, text: str) -> None:
        """Attach the faulting instruction once (the innermost location wins)."""
        if self.line is not None:
            return
        self.function, self.line, self.text = function, line, text
        where = f"in function '{function}', line {line} `{text}`"
        if self.element is not None:
            where += f", element {self.element}"
        self.args = (f"{where}: {self.message}",)


class AsmSyntaxError(RvvSimError, IRError):
    """Assembly text that does not parse or names an unsupported instruction/operand."""


class IllegalInstructionError(RvvSimError):
    """An instruction the hardware would trap on (vill, misaligned register group, bad jump)."""


class OutOfBoundsError(RvvSimError):
    """A scalar or vector access that leaves every allocated memory region."""


class TailRelianceError(RvvSimError):
    """An undefined (tail/mask-agnostic) element reached memory, a scalar or a reduction."""


class AbiError(RvvSimError):
    """A callee-saved register (s0-s11, fs0-fs11, sp) was not restored by the callee."""


class InstructionLimitError(RvvSimError, LimitError):
    """The call executed more instructions than ``max_instructions`` allows."""
