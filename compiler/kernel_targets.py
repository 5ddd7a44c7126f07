"""What the three hardware targets share between the graph pipeline and their emitters.

``lower_for_target`` runs the graph-to-kernel lowering and the buffer planner; the result goes to a
target's emitter. ``buffer_manifest`` is the buffer table every hardware bundle's manifest carries,
and ``BufferLayout`` is its runtime-side reading: which buffers the caller provides, which come
from the bundle's weights and where each temporary sits in the one arena. Runtimes see only the
manifest and the emitted text, never compiler objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from portc.compiler.errors import BundleError, InputError
from portc.compiler.pipeline import run_passes
from portc.compiler.program import Program
from portc.compiler.weights import WeightStore
from portc.dialects import dtypes
from portc.dialects import kernel as k
from portc.passes.lower_graph_to_kernel import lower_to_kernels
from portc.passes.plan_buffers import PlanBuffers

#: graph passes every hardware target runs before lowering: the reference target's list plus
#: decompose-for-targets, which rewrites compressed/sub-byte/fp8 forms into core ops and dtypes
HARDWARE_GRAPH_PIPELINE = ("moe-routing", "decompose-for-targets", "canonicalize",
                           "fold-constants", "cse", "dce")
#: the kernel-IR text each hardware bundle carries next to its target text, for inspection
KERNEL_IR_FILE = "kernels.kernel.mlir"


def lower_for_target(program: Program) -> Program:
    """Graph program (after the target's graph pipeline) -> planned kernel program."""
    kp = lower_to_kernels(program)
    run_passes(kp, [PlanBuffers()], check_weights=False)
    return kp


def buffer_manifest(module: Any) -> dict[str, Any]:
    rows = []
    for b in k.buffers_of(module).values():
        row: dict[str, Any] = {"name": b.buffer_name, "kind": b.kind.data, "dtype": b.dtype.data,
                               "elements": b.elements, "nbytes": b.nbytes}
        if b.binding is not None:
            row["binding"] = b.binding.data
        if b.shape is not None:
            row["shape"] = list(b.tensor_shape)
        if b.offset is not None:
            row["offset"] = b.offset.value.data
        rows.append(row)
    arena = module.attributes.get("portc.arena_bytes")
    temps = sum(r["nbytes"] for r in rows if r["kind"] == "temp")
    return {"buffers": rows, "arena_bytes": arena.value.data if arena is not None else 0,
            "temp_bytes_unplanned": temps}


@dataclass(frozen=True)
class BufferInfo:
    name: str
    kind: str
    dtype: str
    elements: int
    nbytes: int
    binding: str | None
    shape: tuple[int, ...] | None
    offset: int | None

    @property
    def numpy_dtype(self) -> np.dtype:
        return dtypes.dtype(self.dtype).numpy


class BufferLayout:
    """The manifest's buffer table as runtimes use it."""

    def __init__(self, manifest: Mapping[str, Any]) -> None:
        try:
            self.buffers = [BufferInfo(r["name"], r["kind"], r["dtype"], r["elements"],
                                       r["nbytes"], r.get("binding"),
                                       tuple(r["shape"]) if "shape" in r else None,
                                       r.get("offset"))
                            for r in manifest["buffers"]]
            self.arena_bytes = int(manifest["arena_bytes"])
        except (KeyError, TypeError) as e:
            raise BundleError(f"the manifest's buffer table is malformed ({e}); recompile") from e
        self.by_name = {b.name: b for b in self.buffers}
        #: model-level output dtypes (the manifest's ``outputs``), where decompose-for-targets
        #: moved a narrow dtype (int4, fp8, ...) into a core storage dtype
        self.output_dtypes = {o["name"]: o["dtype"] for o in manifest.get("outputs", ())
                              if isinstance(o, Mapping) and "name" in o and "dtype" in o}

    def of_kind(self, kind: str) -> list[BufferInfo]:
        return [b for b in self.buffers if b.kind == kind]

    def initial_data(self, b: BufferInfo, inputs: Mapping[str, np.ndarray],
                     weights: WeightStore) -> np.ndarray | None:
        """Flat contents a buffer starts with: the caller's input, the bundle's weight, or None
        (outputs and temporaries start undefined)."""
        if b.kind == "input":
            assert b.binding is not None
            if b.binding not in inputs:
                raise InputError(f"missing input '{b.binding}'")
            arr = np.asarray(inputs[b.binding])
            if b.shape is not None and tuple(arr.shape) != b.shape:
                raise InputError(f"input '{b.binding}' has shape {tuple(arr.shape)}, the bundle "
                                 f"was compiled for {b.shape}")
            # a narrow model dtype (int4, fp8) converts exactly into its storage dtype
            return np.ascontiguousarray(arr, dtype=b.numpy_dtype).reshape(-1)
        if b.kind == "weight":
            assert b.binding is not None
            return np.ascontiguousarray(weights[b.binding]).reshape(-1)
        return None

    def shape_output(self, b: BufferInfo, flat: np.ndarray) -> np.ndarray:
        out = flat.reshape(b.shape if b.shape is not None else (-1,))
        model_dtype = self.output_dtypes.get(b.binding or b.name)
        if model_dtype is not None and model_dtype != b.dtype:
            # storage -> narrow model dtype; the values are representable, so this is exact
            with np.errstate(all="ignore"):
                out = out.astype(dtypes.dtype(model_dtype).numpy)
        return out
