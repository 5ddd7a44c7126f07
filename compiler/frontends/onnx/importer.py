"""ONNX ModelProto -> graph-dialect program.

Loading never executes anything from the model: protobuf parsing only, external-data paths are
confined to the model's folder, and declared tensor sizes are checked before data is read. Every
node is decomposed through ``registry.ONNX_OPS``; ops without a decomposition but with an ONNX
function body (model-local functions, or schema functions such as Celu or Gelu) are expanded into
their bodies. Unsupported ops are reported all at once, with node names, before any work is done.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper
from xdsl.ir import SSAValue
from xdsl.utils.exceptions import VerifyException

from portc.compiler.builder import GraphBuilder, check_size
from portc.compiler.errors import (
    DtypeError,
    ModelLoadError,
    PortcError,
    ShapeError,
    UnsupportedOpsError,
)
from portc.compiler.frontends.onnx import ops  # noqa: F401 - registers decompositions
from portc.compiler.frontends.onnx.registry import ONNX_OPS, NodeError, OnnxContext
from portc.compiler.program import Program
from portc.dialects import dtypes
from portc.dialects.graph import TensorSpec
from portc.runtimes.reference.kernels import KernelError

DEFAULT_MAX_TENSOR_BYTES = 8 << 30


@dataclass
class ImportResult:
    program: Program
    opset: int
    #: symbolic dim name -> value it was bound to
    dim_bindings: dict[str, int] = field(default_factory=dict)
    #: graph inputs whose values were compiled in (ONNX backend specialisation)
    baked_inputs: dict[str, np.ndarray] = field(default_factory=dict)


# ---------------------------------------------------------------------------------- loading


def load_onnx(path: str | os.PathLike[str], max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES
              ) -> onnx.ModelProto:
    """Parse an ONNX file and its external data, refusing anything unsafe or malformed."""
    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"model file '{path}' does not exist")
    raw = p.read_bytes()
    if not raw:
        raise ModelLoadError(f"'{path}' is empty; re-export the model")
    try:
        model = onnx.ModelProto()
        model.ParseFromString(raw)
    except (DecodeError, RuntimeWarning, ValueError) as e:
        raise ModelLoadError(
            f"'{path}' is not a valid ONNX model (truncated or not protobuf: {e}); re-export it"
        ) from e
    if model.ir_version == 0 or not model.HasField("graph") or not model.opset_import:
        raise ModelLoadError(
            f"'{path}' parses but is not an ONNX model (no ir_version/graph/opset_import); "
            "check that you passed the .onnx file"
        )
    _check_tensor_sizes(model, max_tensor_bytes)
    _load_external_data(model, p.parent.resolve())
    return model


def _all_initializers(graph: onnx.GraphProto) -> list[onnx.TensorProto]:
    out = list(graph.initializer)
    for node in graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                out.append(a.t)
            elif a.type == onnx.AttributeProto.GRAPH:
                out.extend(_all_initializers(a.g))
    return out


def _check_tensor_sizes(model: onnx.ModelProto, limit: int) -> None:
    for t in _all_initializers(model.graph):
        d = dtypes.from_onnx(t.data_type)
        n = int(np.prod(t.dims, dtype=np.float64)) if t.dims else 1
        nbytes = n * max(1, (d.bits if d else 8) // 8)
        if nbytes > limit:
            raise ModelLoadError(
                f"initializer '{t.name}' declares {nbytes / 2**30:.1f} GiB, over the "
                f"{limit / 2**30:.1f} GiB limit; raise --max-tensor-gb if this is intended"
            )


def _load_external_data(model: onnx.ModelProto, base: Path) -> None:
    from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data

    for t in _all_initializers(model.graph):
        if not uses_external_data(t):
            continue
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location", "")
        target = (base / loc).resolve()
        if os.path.isabs(loc) or not target.is_relative_to(base):
            raise ModelLoadError(
                f"initializer '{t.name}' points its external data at '{loc}', outside the model's "
                f"folder {base}; move the data file next to the model"
            )
        if not target.is_file():
            raise ModelLoadError(
                f"initializer '{t.name}' needs external data file '{loc}', which is missing from "
                f"{base}; copy it next to the model"
            )
        try:
            load_external_data_for_tensor(t, str(base))
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"cannot read external data of '{t.name}' from '{loc}': {e}") from e
        del t.external_data[:]
        t.data_location = onnx.TensorProto.DEFAULT


# ---------------------------------------------------------------------------------- importing


def _opset(model: onnx.ModelProto) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return 1


def _tensor_spec(vi: onnx.ValueInfoProto, dims: Mapping[str, int], bound: dict[str, int],
                 override: tuple[int, ...] | None) -> TensorSpec:
    tt = vi.type
    if not tt.HasField("tensor_type"):
        kind = tt.WhichOneof("value")
        raise DtypeError(f"graph input '{vi.name}' is a {kind}; portc imports tensor inputs only")
    d = dtypes.from_onnx(tt.tensor_type.elem_type)
    if d is None:
        enum = tt.tensor_type.elem_type
        raise DtypeError(
            f"graph input '{vi.name}' has element type {onnx.TensorProto.DataType.Name(enum)}, "
            "which portc does not support"
        )
    if override is not None:
        return TensorSpec(tuple(int(x) for x in override), d.name)
    if not tt.tensor_type.HasField("shape"):
        raise ShapeError(f"graph input '{vi.name}' has no shape; give one with --input-shape")
    shape: list[int] = []
    for i, dim in enumerate(tt.tensor_type.shape.dim):
        if dim.HasField("dim_value"):
            shape.append(int(dim.dim_value))
        else:
            name = dim.dim_param or f"{vi.name}_dim{i}"
            val = dims.get(name)
            if val is None:
                val = 1
            bound[name] = int(val)
            shape.append(int(val))
    return TensorSpec(tuple(shape), d.name)


class _Importer:
    def __init__(self, model: onnx.ModelProto, ctx: OnnxContext) -> None:
        self.model = model
        self.ctx = ctx
        self.local_functions = {(f.domain, f.name): f for f in model.functions}
        self.failures: list[tuple[str, str, str]] = []
        self.poisoned: set[str] = set()
        self._uid = 0

    # -------------------------------------------------------------- unsupported-op pre-scan
    def has_impl(self, node: onnx.NodeProto) -> bool:
        key = (node.domain if node.domain != "ai.onnx" else "", node.op_type)
        return key in ONNX_OPS or key in self.local_functions or self.schema_function_available(
            node)

    def schema_function_available(self, node: onnx.NodeProto) -> bool:
        try:
            s = onnx.defs.get_schema(node.op_type, self.ctx.opset, node.domain)
        except onnx.defs.SchemaError:
            return False
        return bool(s.has_function or s.has_context_dependent_function)

    def prescan(self, graph: onnx.GraphProto) -> list[tuple[str, str, str]]:
        bad = []
        for i, node in enumerate(graph.node):
            if not self.has_impl(node):
                dom = f"{node.domain}." if node.domain else ""
                bad.append((node.name or f"#{i}", dom + node.op_type,
                            "no decomposition into portc's core ops"))
        return bad

    # -------------------------------------------------------------- node import
    def import_nodes(self, nodes: list[onnx.NodeProto]) -> None:
        for i, node in enumerate(nodes):
            self.import_node(node, node.name or f"{node.op_type}#{i}")

    def import_node(self, node: onnx.NodeProto, label: str) -> None:
        if any(n in self.poisoned for n in node.input if n):
            self.poisoned.update(o for o in node.output if o)
            return
        missing = [n for n in node.input if n and n not in self.ctx.values]
        if missing:
            self._fail(node, label, f"uses undefined tensor(s) {missing}")
            return
        key = (node.domain if node.domain != "ai.onnx" else "", node.op_type)
        fn = ONNX_OPS.get(key)
        if fn is None and not self.has_impl(node):
            self._fail(node, label, "no decomposition into portc's core ops")
            return
        try:
            if fn is not None:
                outs = list(fn(self.ctx, node))
                self._bind_outputs(node, outs)
            elif key in self.local_functions:
                self.expand_function(node, self.local_functions[key], label)
            else:
                self.expand_function(node, self.schema_function(node), label)
        except NodeError as e:
            self._fail(node, label, str(e))
        except (VerifyException, KernelError) as e:
            self._fail(node, label, f"does not fit portc's op rules: {e}")
        except PortcError as e:
            self._fail(node, label, str(e))

    def _fail(self, node: onnx.NodeProto, label: str, why: str) -> None:
        self.failures.append((label, node.op_type, why))
        self.poisoned.update(o for o in node.output if o)

    def _bind_outputs(self, node: onnx.NodeProto, outs: list[SSAValue | None]) -> None:
        for i, name in enumerate(node.output):
            if not name:
                continue
            v = outs[i] if i < len(outs) else None
            if v is None:
                raise NodeError(f"output #{i} ('{name}') is not supported by portc's import")
            self.ctx.values[name] = v
            if v.name_hint is None or v.name_hint.startswith(("c", "folded")):
                from portc.compiler.builder import ssa_hint

                v.name_hint = ssa_hint(name)

    def schema_function(self, node: onnx.NodeProto) -> onnx.FunctionProto:
        s = onnx.defs.get_schema(node.op_type, self.ctx.opset, node.domain)
        fp = onnx.FunctionProto()
        if s.has_function:
            versions = [v for v in s.function_opset_versions if v <= self.ctx.opset]
            fp.ParseFromString(s.get_function_with_opset_version(max(versions)) if versions
                               else s.function_body.SerializeToString())
            return fp
        types = []
        for n in node.input:
            if not n:
                types.append(onnx.TypeProto())
                continue
            spec = self.ctx.spec(self.ctx.values[n])
            types.append(onnx.helper.make_tensor_type_proto(
                dtypes.dtype(spec.dtype).onnx, [d for d in spec.shape]))
        versions = [v for v in s.context_dependent_function_opset_versions if v <= self.ctx.opset]
        body = s.get_context_dependent_function_with_opset_version(
            max(versions) if versions else self.ctx.opset, node.SerializeToString(),
            [t.SerializeToString() for t in types])
        fp.ParseFromString(body)
        # defaults of attributes the node leaves out are visible to the body
        return fp

    def expand_function(self, node: onnx.NodeProto, fp: onnx.FunctionProto, label: str) -> None:
        """Inline a function body: rename its internal tensors and bind attribute references."""
        self._uid += 1
        prefix = f"{label}/{fp.name}{self._uid}/"
        rename: dict[str, str] = {"": ""}
        for formal, actual in zip(fp.input, node.input, strict=False):
            rename[formal] = actual
        for formal in list(fp.input)[len(node.input):]:
            rename[formal] = ""
        attrs = {a.name: a for a in node.attribute}
        try:
            schema = onnx.defs.get_schema(node.op_type, self.ctx.opset, node.domain)
            for name, a in schema.attributes.items():
                if name not in attrs and a.default_value and a.default_value.name:
                    attrs[name] = a.default_value
        except onnx.defs.SchemaError:
            pass
        for a in fp.attribute_proto:
            attrs.setdefault(a.name, a)
        for inner in fp.node:
            n = onnx.NodeProto()
            n.CopyFrom(inner)
            del n.input[:]
            n.input.extend(rename.get(x, prefix + x) if x else "" for x in inner.input)
            del n.output[:]
            for x in inner.output:
                rename.setdefault(x, prefix + x)
                n.output.append(rename[x] if x else "")
            del n.attribute[:]
            for a in inner.attribute:
                if a.ref_attr_name:
                    if a.ref_attr_name in attrs:
                        b = onnx.AttributeProto()
                        b.CopyFrom(attrs[a.ref_attr_name])
                        b.name = a.name
                        n.attribute.append(b)
                else:
                    n.attribute.append(a)
            n.name = prefix + (inner.name or inner.op_type)
            self.import_node(n, label)
        for formal, actual in zip(fp.output, node.output, strict=False):
            if actual and rename.get(formal) in self.ctx.values:
                self.ctx.values[actual] = self.ctx.values[rename[formal]]
            elif actual:
                self.poisoned.add(actual)


def import_onnx(
    model: onnx.ModelProto | str | os.PathLike[str],
    *,
    dims: Mapping[str, int] | None = None,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    known_inputs: Mapping[str, np.ndarray] | None = None,
    max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES,
) -> ImportResult:
    """Import an ONNX model into a verified graph-dialect program."""
    if not isinstance(model, onnx.ModelProto):
        model = load_onnx(model, max_tensor_bytes)
    graph = model.graph
    opset = _opset(model)
    b = GraphBuilder()
    ctx = OnnxContext(b=b, opset=opset, known_inputs=dict(known_inputs or {}))
    imp = _Importer(model, ctx)

    unsupported = imp.prescan(graph)
    if unsupported:
        raise UnsupportedOpsError(unsupported)

    init_names = {t.name for t in graph.initializer}
    bound: dict[str, int] = {}
    for vi in graph.input:
        if vi.name in init_names:
            continue
        spec = _tensor_spec(vi, dims or {}, bound, (input_shapes or {}).get(vi.name))
        check_size(spec, max_tensor_bytes, f"graph input '{vi.name}'")
        ctx.values[vi.name] = b.add_input(vi.name, spec)
        ctx.graph_inputs.add(vi.name)
    for t in graph.initializer:
        if t.name in ctx.values:
            continue  # an input with a default (IR < 4 style): the user's value wins
        if dtypes.from_onnx(t.data_type) is None:
            raise DtypeError(f"initializer '{t.name}' has an unsupported element type "
                             f"{onnx.TensorProto.DataType.Name(t.data_type)}")
        ctx.values[t.name] = b.const_named(t.name, numpy_helper.to_array(t))

    imp.import_nodes(list(graph.node))
    if imp.failures:
        raise UnsupportedOpsError(imp.failures)

    outputs: list[tuple[str, SSAValue]] = []
    for vo in graph.output:
        if vo.name not in ctx.values:
            raise ShapeError(f"graph output '{vo.name}' is never produced by any node")
        outputs.append((vo.name, ctx.values[vo.name]))
    program = b.finish(outputs)
    program.verify()
    baked = {n: np.asarray(ctx.known_inputs[n]) for n in ctx.baked_inputs}
    return ImportResult(program, opset, bound, baked)
