"""Shared export helpers for the scripts in ``examples/``.

Both ``build_examples.py`` and ``build_minilm_encoder.py`` must produce artifacts with the same
guarantees, because portc's frontends and tests rely on them:

* ONNX files are a single self-contained file (no external-data side files), so a user can copy
  one path around and ``portc compile model.onnx`` just works.
* All graph inputs and outputs have static shapes; portc's kernels are shape-specialised.
* Output is byte-stable: node metadata that torch's exporter adds (stack traces with absolute
  paths of the machine that exported) is stripped, so rebuilding on another checkout yields the
  same bytes.
* The ONNX graph shows the model as authored: shape arithmetic is constant-folded and dead nodes
  removed, but onnxscript's pattern rewrites (e.g. folding BatchNorm into Conv) are *not*
  applied and parameters are never folded (``Transpose(weight)`` stays), because such fusions
  and folds are portc's own passes and the examples exist to exercise them. As a result every
  ONNX initializer that is a parameter keeps its torch ``state_dict`` name, as in the ``.pt2``.

This file is a plain module next to the scripts (``examples/`` is not a package).
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnx_ir
import torch

#: ONNX opset for every example. 18 has LayerNormalization (>=17) and is widely supported;
#: it predates the Gelu op (20), so GELU appears as its Erf decomposition.
OPSET = 18

_NOISY_LOGGERS = ("torch.onnx._internal.exporter._registration",)


@contextlib.contextmanager
def quiet_export() -> Iterator[None]:
    """Silence exporter chatter that is irrelevant here (missing torchvision ops, pytree warnings).

    The scripts print their own summary; hundreds of lines of exporter noise would bury it.
    """
    saved = {name: logging.getLogger(name).level for name in _NOISY_LOGGERS}
    try:
        for name in _NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _strip_metadata(model: onnx.ModelProto) -> None:
    """Drop per-node exporter metadata (stack traces, fx node dumps) and doc strings in place."""

    def strip_graph(graph: onnx.GraphProto) -> None:
        graph.ClearField("doc_string")
        for node in graph.node:
            node.ClearField("metadata_props")
            node.ClearField("doc_string")
            for attr in node.attribute:
                if attr.HasField("g"):
                    strip_graph(attr.g)
                for sub in attr.graphs:
                    strip_graph(sub)
        for value in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
            value.ClearField("metadata_props")

    strip_graph(model.graph)
    for fn in model.functions:
        for node in fn.node:
            node.ClearField("metadata_props")
            node.ClearField("doc_string")


def _keeps_parameters(node: onnx_ir.Node, params: set[str]) -> bool | None:
    """Constant-folding veto: never fold a node that reads a model parameter.

    Folding e.g. ``Transpose(weight)`` would replace the parameter by an anonymous copy
    (``val_49``), so initializer names would stop matching the torch ``state_dict`` keys that the
    ``.pt2`` uses, and the weights-as-authored would be hidden from portc's own fold pass.
    Returning ``None`` leaves every other node to onnxscript's default rules.
    """
    if any(value is not None and value.name in params for value in node.inputs):
        return False
    return None


def check_self_contained_static(model: onnx.ModelProto) -> None:
    """Raise ``ValueError`` unless ``model`` has no external data and only static I/O shapes."""
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise ValueError(f"initializer {tensor.name!r} uses external data")
    for value in (*model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if not dims and not value.type.tensor_type.HasField("shape"):
            raise ValueError(f"{value.name!r} has no shape")
        for dim in dims:
            if not dim.HasField("dim_value"):
                raise ValueError(f"{value.name!r} has a dynamic dimension {dim.dim_param!r}")


def export_onnx(
    model: torch.nn.Module,
    inputs: tuple[torch.Tensor, ...],
    path: str | os.PathLike[str],
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    opset: int = OPSET,
) -> onnx.ModelProto:
    """Export ``model`` with torch's dynamo ONNX exporter to one static-shape ``.onnx`` file.

    Uses ``torch.onnx.export(dynamo=True)`` (the default exporter since torch 2.9; needs
    ``onnxscript``) with ``optimize=False``, then runs only onnxscript's constant folding and
    dead-node removal (see the module docstring for why no rewrites). The proto is saved with
    ``onnx.save(..., save_as_external_data=False)`` so the file is always self-contained.
    """
    from onnxscript import optimizer

    with quiet_export(), torch.no_grad():
        program = torch.onnx.export(
            model,
            inputs,
            dynamo=True,
            opset_version=opset,
            input_names=list(input_names),
            output_names=list(output_names),
            external_data=False,
            optimize=False,
            verbose=False,
        )
        assert program is not None  # torch returns the ONNXProgram when dynamo=True
        params = set(program.model.graph.initializers)
        optimizer.fold_constants(
            program.model, should_fold=lambda node: _keeps_parameters(node, params)
        )
        optimizer.remove_unused_nodes(program.model)
        proto = onnx_ir.serde.serialize_model(program.model)
    _strip_metadata(proto)
    check_self_contained_static(proto)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, os.fspath(path), save_as_external_data=False)
    return proto


def export_pt2(
    model: torch.nn.Module,
    inputs: tuple[torch.Tensor, ...],
    path: str | os.PathLike[str],
) -> torch.export.ExportedProgram:
    """Export ``model`` with ``torch.export.export`` (static shapes) and save it as ``.pt2``.

    This is the artifact portc's torch frontend reads; it carries the ATen graph and weights.
    The returned program is the one saved, stack traces removed.
    """
    with quiet_export(), torch.no_grad():
        program = torch.export.export(model, inputs)
    # Stack traces name absolute source paths of the exporting machine; drop them so the
    # archive is identical whichever checkout built it. (Only debugging metadata is lost.)
    for node in program.graph.nodes:
        node.meta.pop("stack_trace", None)
    torch.export.save(program, os.fspath(path))
    return program


def op_histogram(model: onnx.ModelProto) -> Counter[str]:
    """Count ONNX op types in the main graph (``domain::Op`` for non-default domains)."""
    return Counter(
        f"{node.domain}::{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
        for node in model.graph.node
    )


def format_histogram(hist: Mapping[str, int]) -> str:
    """Render an op histogram as ``Op:count`` pairs, most frequent first, for one-line logs."""
    return " ".join(f"{op}:{n}" for op, n in sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])))


def run_onnxruntime(
    path: str | os.PathLike[str], feeds: Mapping[str, np.ndarray]
) -> list[np.ndarray]:
    """Run an ONNX file once on onnxruntime's CPU provider (the numeric oracle for the examples)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        os.fspath(path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    return [np.asarray(out) for out in session.run(None, dict(feeds))]


def file_size(path: str | os.PathLike[str]) -> str:
    """Human-readable size of ``path`` (KiB/MiB), for the scripts' summary tables."""
    size = Path(path).stat().st_size
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.1f} KiB"
