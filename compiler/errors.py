"""The one error hierarchy every user-caused failure ends in.

The CLI catches ``PortcError`` and prints ``error: <message>`` with exit code 2 (1 for a
verification mismatch), so messages must stand alone: they name the model element (node, op,
tensor, file) and say what to do about it.
"""

from __future__ import annotations


class PortcError(Exception):
    """Base class: a failure the user can fix, reported without a traceback."""

    exit_code: int = 2


class ModelLoadError(PortcError):
    """The model file is missing, truncated, not ONNX/ExportedProgram, or unsafe to load."""


class UnsupportedOpsError(PortcError):
    """Ops the frontend cannot decompose; all of them are listed at once."""

    def __init__(self, entries: list[tuple[str, str, str]], framework: str = "ONNX") -> None:
        self.entries = entries
        lines = [f"  - node '{name}' ({op}): {why}" for name, op, why in entries]
        kinds = sorted({op for _, op, _ in entries})
        super().__init__(
            f"{len(entries)} {framework} node(s) use unsupported ops ({', '.join(kinds)}):\n"
            + "\n".join(lines)
            + "\nReplace these ops in the model, or add a decomposition to portc's frontend."
        )


class ShapeError(PortcError):
    """Shapes that do not fit an op, or a dimension that must be known and is not."""


class DtypeError(PortcError):
    """An element type an op or target does not accept."""


class UnknownTargetError(PortcError):
    """``--target`` or ``--runtime`` names nothing registered."""


class UnknownPassError(PortcError):
    """``-p`` names a pass that is not registered."""


class InputError(PortcError):
    """Input files (``--inputs``, calibration data) that do not match the model."""


class BundleError(PortcError):
    """A bundle directory that is incomplete, tampered with, or from another target."""


class LimitError(PortcError):
    """A tensor or an execution larger than the configured limit, refused up front."""


class IRError(PortcError):
    """IR text that does not parse or verify (``portc opt``)."""


class OracleError(PortcError):
    """The reference executor (onnxruntime/torch) itself cannot run the model."""


class VerificationMismatch(PortcError):
    """Outputs differ from the reference executor beyond tolerance."""

    exit_code = 1


class LoweringError(PortcError):
    """A graph op, dtype or shape a target's lowering cannot handle; names the op and the way
    out (another target, a pass to run first, a model change)."""
