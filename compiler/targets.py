"""The target registry: one object per target, as DESIGN.md's "Targets" section describes.

A target names its description (the facts lowerings read), the pipeline that lowers a graph
program into its artifact, and the runtimes that execute that artifact. Adding a target is one
``register_target`` call; ``portc targets`` lists what is registered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from portc.compiler.artifact import Artifact
from portc.compiler.errors import UnknownTargetError
from portc.compiler.program import Program


class Executable(Protocol):
    def run(self, inputs: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Execute once; returns outputs by name and runtime statistics."""
        ...


@dataclass(frozen=True)
class Runtime:
    name: str
    summary: str
    load: Callable[[Artifact], Executable]
    #: None when usable here, else why not (missing tool, no GPU)
    unavailable: Callable[[], str | None] = lambda: None


#: (rtol, atol) for ports that compute in fp32 like the float64/fp32 oracles, up to reassociation
FP32_TOLERANCE = (1e-4, 1e-5)

#: (rtol, atol) per matmul operand precision (``--precision``): fp16/tf32 operands carry 2^-11
#: relative rounding each, bf16 2^-8, and fp32 accumulation of K such products leaves ~sqrt(K)
#: of them in a result, so the examples and the encoder land near 1e-4..1e-3 absolute (fp16)
#: and 1e-3..1e-2 (bf16); the e2e tests of cuda and ascend check at these.
OPERAND_PRECISION_TOLERANCE: dict[str, tuple[float, float]] = {
    "fp32": FP32_TOLERANCE, "tf32": (1e-2, 1e-3), "fp16": (1e-2, 1e-3), "bf16": (3e-2, 1e-2)}


def operand_precision_tolerance(target: str, precision: str) -> tuple[float, float, str]:
    """The verify tolerance of a target whose matmul operands round to ``precision``."""
    rtol, atol = OPERAND_PRECISION_TOLERANCE.get(precision, FP32_TOLERANCE)
    why = ("fp32 arithmetic" if precision == "fp32" else
           f"{target} --precision {precision}: matmul operands in {precision}, fp32 accumulation")
    return rtol, atol, why


@dataclass
class CompileOptions:
    """Options every target understands; target-specific ones go in ``extra``."""

    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    name: str
    summary: str
    description: Mapping[str, Any]
    compile: Callable[[Program, CompileOptions], Artifact]
    runtimes: tuple[Runtime, ...]
    #: graph-level passes run before lowering (names from the pass registry)
    graph_pipeline: tuple[str, ...] = ()
    #: options -> (rtol, atol, why): what ``portc verify`` compares at when the user gives no
    #: ``--rtol``/``--atol`` (targets whose arithmetic is narrower than fp32 widen it)
    verify_tolerance: Callable[[Mapping[str, Any]], tuple[float, float, str]] = (
        lambda options: (*FP32_TOLERANCE, "fp32 arithmetic"))

    @property
    def default_runtime(self) -> Runtime:
        return self.runtimes[0]

    def runtime(self, name: str | None) -> Runtime:
        if name is None:
            return self.default_runtime
        for r in self.runtimes:
            if r.name == name:
                return r
        raise UnknownTargetError(
            f"target '{self.name}' has no runtime '{name}'; it has: "
            + ", ".join(r.name for r in self.runtimes)
        )


_TARGETS: dict[str, Target] = {}


def register_target(t: Target) -> None:
    _TARGETS[t.name] = t


def _load_builtin_targets() -> None:
    from portc.compiler import (
        target_ascend,  # noqa: F401
        target_cuda,  # noqa: F401
        target_reference,  # noqa: F401
        target_rvv,  # noqa: F401
    )


def all_targets() -> list[Target]:
    _load_builtin_targets()
    return list(_TARGETS.values())


def get_target(name: str) -> Target:
    _load_builtin_targets()
    try:
        return _TARGETS[name]
    except KeyError:
        raise UnknownTargetError(
            f"unknown target '{name}'; available: {', '.join(sorted(_TARGETS))} (see `portc targets`)"
        ) from None
