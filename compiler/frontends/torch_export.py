"""``torch.export`` ExportedProgram -> graph-dialect program, plus the PyTorch oracle.

Entry points:

* ``import_torch_module(module, example_inputs)``: ``torch.export.export`` then
  ``run_decompositions()`` (core ATen), then import. The module's train/eval mode is left as the
  caller set it; export models in ``eval()``.
* ``import_exported_program(ep)``: import an ExportedProgram. Programs that still contain ops
  outside ``torch_ops.ATEN_OPS`` (training IR straight from ``export``) are decomposed first.
* ``load_pt2(path)``: ``torch.export.load`` a ``.pt2`` archive after checking that loading it
  cannot run pickled code (see ``check_pt2_archive``).
* ``reference_outputs(ep_or_module, inputs)``: run the original PyTorch program; the oracle for
  ``portc verify``.

Naming: user inputs keep their placeholder names (the ``forward`` argument names), parameters,
buffers and lifted constants become ``graph.constant`` weights under their state-dict names
(``fc1.weight``), created on first use; outputs are ``output0``, ``output1``, ... in the order of
the flattened user outputs (``reference_outputs`` uses the same names).

Symbolic dims: a program exported with ``dynamic_shapes`` is specialised at import. Each symbol
(``s0``, ``s77``) is bound, in order of precedence, from ``dims={"s0": 8}``, from the shapes of
``example_inputs`` / ``input_shapes`` (matched by position against the placeholders' symbolic
shapes), from the ExportedProgram's stored ``example_inputs``, and finally from the trace-time hint.
The bindings are returned in ``TorchImportResult.dim_bindings``; every ``sym_size`` then folds to
an int and the program is fully static.

Constants: ops whose tensor operands are all compile-time constants fold at import: core ops
through the reference kernels (``GraphBuilder(fold=True)``), and creation ops (``full``,
``arange``, ``zeros_like``, ...) or ops without a decomposition by running the ATen op itself in
torch. Random ops are never folded.
"""

from __future__ import annotations

import inspect
import json
import math
import operator
import os
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind
from xdsl.ir import SSAValue
from xdsl.utils.exceptions import VerifyException

from portc.compiler.builder import FOLD_LIMIT_ELEMENTS, GraphBuilder, ssa_hint
from portc.compiler.errors import (
    DtypeError,
    InputError,
    ModelLoadError,
    PortcError,
    ShapeError,
    UnsupportedOpsError,
)
from portc.compiler.frontends import torch_ops  # noqa: F401 - registers decompositions
from portc.compiler.frontends.torch_moe import MoEBlock, find_moe_blocks
from portc.compiler.frontends.torch_ops.registry import (
    ATEN_OPS,
    NodeError,
    TorchContext,
    bind_schema,
    portc_dtype,
    target_key,
    to_numpy,
    to_torch,
)
from portc.compiler.program import Program
from portc.dialects import moe
from portc.dialects.graph import TensorSpec
from portc.runtimes.reference.kernels import KernelError

__all__ = [
    "TorchImportResult", "import_exported_program", "import_torch_module", "load_pt2",
    "check_pt2_archive", "reference_outputs", "supported_aten_ops",
]


@dataclass
class TorchImportResult:
    program: Program
    #: the ExportedProgram that was imported (after decomposition)
    exported_program: ExportedProgram
    #: symbolic dim name -> value it was bound to
    dim_bindings: dict[str, int] = field(default_factory=dict)


def supported_aten_ops() -> list[str]:
    """Every ATen overload with a decomposition (``add.Tensor``), plus the torch-folded ones."""
    return sorted(set(ATEN_OPS) | TORCH_FOLDED)


# ---------------------------------------------------------------------------------- loading

#: sympy names torch's deserializer resolves; anything else in an expression is refused, since
#: torch.export.load passes expression strings to ``sympy.sympify`` (which evaluates Python).
_SYMPY_NAMES = {
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv", "CeilToInt",
    "FloorToInt", "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv",
    "IntTrueDiv", "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt", "RoundToInt",
    "RoundDecimal", "ToFloat", "Identity", "Max", "Min", "Abs", "Eq", "Ne", "Lt", "Le", "Gt",
    "Ge", "And", "Or", "Not", "True", "False", "oo", "floor", "ceiling", "OpaqueUnaryFn_sqrt",
    "BitwiseFn_bitwise_and", "BitwiseFn_bitwise_or", "BitwiseFn_bitwise_xor", "Integer",
}
#: sympy's srepr vocabulary (``Symbol('s0', positive=True, integer=True)``, ``Add(...)``)
_SREPR_NAMES = {
    "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Mod", "Tuple",
    "positive", "negative", "nonnegative", "nonpositive", "integer", "real", "finite",
    "infinite", "zero", "nonzero", "even", "odd", "prime", "commutative", "precision",
    "Infinity", "NegativeInfinity", "One", "Zero", "NegativeOne", "Half", "BooleanTrue",
    "BooleanFalse", "StrictLessThan", "LessThan", "StrictGreaterThan", "GreaterThan",
    "Equality", "Unequality",
}
_SYMBOL = re.compile(r"^[a-z]+\d+$")
_QUOTED = re.compile(r"'([^']*)'")
_EXPR_CHARS = re.compile(r"^[A-Za-z0-9_+\-*/%().,<>=!&|~ ]*$")


def _check_expr(expr: str, path: str) -> None:
    """Allow only symbols, numbers, operators and sympy's own function/class names: no
    attribute access, no strings other than symbol names, no other identifiers."""
    for q in _QUOTED.findall(expr):
        if not _SYMBOL.match(q):
            raise ModelLoadError(f"'{path}' contains a symbolic expression quoting {q[:40]!r}, "
                                 "which a torch.export program never does; refusing to load it")
    bare = _QUOTED.sub("s0", expr)
    if not _EXPR_CHARS.match(bare) or "__" in bare:
        raise ModelLoadError(f"'{path}' contains a symbolic expression with unexpected "
                             f"characters ({expr[:60]!r}); refusing to load it")
    for ident in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", bare):
        if not (_SYMBOL.match(ident) or ident in _SYMPY_NAMES or ident in _SREPR_NAMES):
            raise ModelLoadError(f"'{path}' contains a symbolic expression naming '{ident}', "
                                 "which a torch.export program never does; refusing to load it")


def _walk_json(obj: Any, path: str) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "expr_str" and isinstance(v, str):
                _check_expr(v, path)
            elif k == "range_constraints" and isinstance(v, dict):
                for name in v:
                    _check_expr(str(name), path)
            _walk_json(v, path)
    elif isinstance(obj, list):
        for v in obj:
            _walk_json(v, path)


def check_pt2_archive(path: str | os.PathLike[str]) -> None:
    """Refuse ``.pt2`` archives whose loading would unpickle arbitrary objects.

    ``torch.export.load`` unpickles with ``weights_only=False`` in four places: payloads marked
    ``use_pickle`` (tensor subclasses), custom/opaque objects (torchbind, ``pickle.loads``),
    legacy ``.pt`` weight/constant files, and sample inputs when the weights-only load fails. It
    also hands symbolic-shape strings to ``sympy.sympify``, which evaluates Python. Plain
    ``torch.export.save`` output of dense tensors needs none of these, so we allow only that:
    configs without pickled payloads, sample inputs that load with ``weights_only=True``, and
    expressions made of symbols, numbers and sympy's shape functions.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"model file '{path}' does not exist")
    if p.stat().st_size == 0:
        raise ModelLoadError(f"'{path}' is empty; re-save it with torch.export.save")
    if not zipfile.is_zipfile(p):
        raise ModelLoadError(f"'{path}' is not a torch.export .pt2 archive (not a zip file; "
                             "truncated?); re-save it with torch.export.save(ep, path)")
    try:
        with zipfile.ZipFile(p) as z:
            bad = z.testzip()
            if bad is not None:
                raise ModelLoadError(f"'{path}' is corrupt (bad CRC in '{bad}'); re-save it")
            names = z.namelist()
            roots = {n.split("/", 1)[0] for n in names}
            if len(roots) != 1:
                raise ModelLoadError(f"'{path}' is not a torch.export .pt2 archive")
            root = roots.pop() + "/"
            rel = {n[len(root):]: n for n in names if n.startswith(root)}
            if rel.get("archive_format") is None or z.read(rel["archive_format"]).strip() != b"pt2":
                raise ModelLoadError(
                    f"'{path}' is not a torch.export .pt2 archive (no archive_format 'pt2'; "
                    "legacy pre-2.7 archives need pickle and are refused); re-save it with "
                    "torch.export.save from a current PyTorch")
            models = [r for r in rel if r.startswith("models/") and r.endswith(".json")]
            if not models:
                raise ModelLoadError(f"'{path}' holds no exported program (models/*.json)")
            for r, full in rel.items():
                if r.startswith(("data/weights/", "data/constants/")) and r.endswith(".pt"):
                    raise ModelLoadError(f"'{path}' stores '{r}' in the legacy pickled format; "
                                         "re-save it with torch.export.save")
                if r.startswith(("data/weights/", "data/constants/")) and r.endswith(".json"):
                    cfg = json.loads(z.read(full))
                    for fqn, meta in (cfg.get("config") or {}).items():
                        pname = str(meta.get("path_name", ""))
                        if meta.get("use_pickle") or pname.startswith(("custom_obj_",
                                                                       "opaque_obj_")):
                            raise ModelLoadError(
                                f"'{path}': '{fqn}' is stored as a pickled object, which could "
                                "run arbitrary code when loaded; portc loads dense tensors only")
                if r.startswith("models/") and r.endswith(".json"):
                    _walk_json(json.loads(z.read(full)), str(path))
                if r.startswith("data/sample_inputs/") and r.endswith(".pt"):
                    import io

                    data = z.read(full)
                    if data:
                        try:
                            torch.load(io.BytesIO(data), weights_only=True)
                        except Exception as e:  # noqa: BLE001 - any failure means "unsafe"
                            raise ModelLoadError(
                                f"'{path}': sample inputs '{r}' do not load as plain tensors "
                                f"({type(e).__name__}); refusing, since torch would unpickle "
                                "them") from e
    except (zipfile.BadZipFile, OSError, json.JSONDecodeError, KeyError) as e:
        raise ModelLoadError(f"'{path}' is not a readable .pt2 archive ({e}); re-save it with "
                             "torch.export.save") from e


def load_pt2(path: str | os.PathLike[str]) -> ExportedProgram:
    """``torch.export.load`` a ``.pt2`` file after ``check_pt2_archive`` has vetted it."""
    check_pt2_archive(path)
    try:
        ep = torch.export.load(os.fspath(path))
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad archives
        raise ModelLoadError(
            f"'{path}' could not be loaded by torch.export.load ({type(e).__name__}: {e}); "
            "re-save it with torch.export.save from this PyTorch version") from e
    if not isinstance(ep, ExportedProgram):
        raise ModelLoadError(f"'{path}' does not contain an ExportedProgram")
    return ep


# ---------------------------------------------------------------------------------- folding

#: Creation ops: no tensor data flows in, so they always fold by running them in torch.
TORCH_FOLDED = {
    "full.default", "zeros.default", "ones.default", "empty.memory_format", "empty.default",
    "empty_strided.default", "arange.default", "arange.start", "arange.start_step",
    "scalar_tensor.default", "linspace.default", "logspace.default", "eye.default", "eye.m",
    "full_like.default", "zeros_like.default", "ones_like.default", "empty_like.default",
    "new_zeros.default", "new_ones.default", "new_full.default", "new_empty.default",
    "new_empty_strided.default", "lift_fresh_copy.default", "tensor.default",
}
#: Creation ops whose tensor operands contribute only their shape and dtype.
_SHAPE_ONLY = {k for k in TORCH_FOLDED if "like" in k or k.startswith("new_")}
#: Ops whose values are unspecified: folded to zeros for determinism.
_UNINITIALISED = {k for k in TORCH_FOLDED if "empty" in k}

_SCALAR_MODULES = {"_operator", "operator", "math", "builtins"}


class _NotConstant(Exception):
    pass


def _is_scalar_fn(target: Any) -> bool:
    """Python-level shape arithmetic (``operator.mul``, ``math.ceil``, ``torch.sym_max``)."""
    if isinstance(target, (torch._ops.OpOverload, torch._ops.HigherOrderOperator)):
        return False
    mod = getattr(target, "__module__", None) or ""
    name = getattr(target, "__name__", "")
    return mod in _SCALAR_MODULES or (mod.startswith("torch") and name.startswith("sym_"))


# ---------------------------------------------------------------------------------- importing


class _Importer:
    def __init__(self, ep: ExportedProgram, bindings: dict[str, int]) -> None:
        self.ep = ep
        self.b = GraphBuilder()
        self.ctx = TorchContext(self.b, dim_bindings=bindings)
        self.env: dict[torch.fx.Node, Any] = {}
        self.lazy: dict[torch.fx.Node, tuple[str, torch.Tensor]] = {}
        self.failures: list[tuple[str, str, str]] = []
        self.poisoned: set[torch.fx.Node] = set()
        blocks, self.moe_rejected = find_moe_blocks(ep)
        #: every node of a recognised MoE block -> the block (imported whole at its output)
        self.moe_nodes: dict[torch.fx.Node, MoEBlock] = {n: blk for blk in blocks
                                                         for n in blk.nodes}

    # -------------------------------------------------------------- placeholders
    def bind_placeholders(self, example: Sequence[Any] | None) -> None:
        ep = self.ep
        by_name = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
        user_i = 0
        for spec in ep.graph_signature.input_specs:
            node = by_name[spec.arg.name]
            if spec.kind == InputKind.USER_INPUT:
                val = node.meta.get("val")
                if isinstance(val, torch.Tensor):
                    shape = tuple(int(d) for d in self.ctx.concrete(tuple(val.shape)))
                    spec_ = TensorSpec(shape, portc_dtype(val.dtype))
                    self.env[node] = self.b.add_input(node.name, spec_)
                elif example is not None and user_i < len(example):
                    self.env[node] = self.ctx.concrete(example[user_i])
                else:
                    self.env[node] = self.ctx.concrete(getattr(spec.arg, "value", val))
                user_i += 1
                continue
            target = spec.target
            if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER):
                t = ep.state_dict.get(target) if target in ep.state_dict else \
                    ep.constants.get(target)
            elif spec.kind == InputKind.CONSTANT_TENSOR:
                t = ep.constants.get(target)
            else:
                self.failures.append((node.name, f"input kind {spec.kind.name}",
                                      "custom objects and effect tokens are not supported"))
                self.poisoned.add(node)
                continue
            if not isinstance(t, torch.Tensor):
                raise ModelLoadError(f"{spec.kind.name.lower()} '{target}' has no tensor in the "
                                     "ExportedProgram (state_dict/constants)")
            self.lazy[node] = (str(target), t)

    def value(self, node: torch.fx.Node) -> Any:
        if node not in self.env and node in self.lazy:
            name, t = self.lazy[node]
            try:
                arr = to_numpy(t)
            except NodeError as e:
                raise DtypeError(f"weight '{name}': {e}") from None
            self.env[node] = self.b.const_named(name, arr)
        return self.env[node]

    def map_args(self, args: Any) -> Any:
        return torch.fx.node.map_arg(args, self.value)

    # -------------------------------------------------------------- nodes
    def run(self) -> list[tuple[str, SSAValue]]:
        outputs: list[tuple[str, SSAValue]] = []
        for node in self.ep.graph.nodes:
            blk = self.moe_nodes.get(node)
            if blk is not None:
                if node is blk.output:
                    try:
                        self.import_moe(blk)
                    except (VerifyException, KernelError, PortcError) as e:
                        self.fail(node, "sparse-MoE block", f"does not fit moe.moe: {e}")
            elif node.op == "call_function":
                self.import_node(node)
            elif node.op == "get_attr":
                self.fail(node, "get_attr", "submodule/attribute access (control flow "
                          "subgraphs) is not supported")
            elif node.op == "output":
                outputs = self.collect_outputs(node)
        return outputs

    def import_moe(self, blk: MoEBlock) -> None:
        """Emit one ``moe.moe`` for a recognised sparse-MoE block (see ``torch_moe``): flatten
        the tokens to [T, H], bring the parameters to moe.moe's layouts (router [H, E], experts
        [E, H, F] / [E, F, H]; small ones fold at import), and restore the block's shape."""
        node = blk.output
        if blk.input in self.poisoned:
            self.poisoned.add(node)
            return
        b = self.b
        x = self.value(blk.input)
        shape = self.ctx.shape(x)
        h = blk.hidden
        x2 = b.reshape(x, (math.prod(shape[:-1]), h), hint=f"{node.name}_tokens")

        def weight(ref: tuple[torch.fx.Node, bool]) -> SSAValue:
            w = self.value(ref[0])
            return b.transpose(w, (0, 2, 1)) if ref[1] else w

        router = b.transpose(self.value(blk.router), (1, 0))
        gate_up = weight(blk.gate_up)
        e, _, f2 = self.ctx.shape(gate_up)
        f = f2 // 2
        halves = [b.slice(gate_up, (0, 0, i * f), (1, 1, 1), (e, h, f)) for i in (0, 1)]
        w_gate, w_up = halves[blk.gate_half], halves[1 - blk.gate_half]
        w_down = weight(blk.down)
        dtype = self.ctx.spec(x2).dtype
        ws = [v if self.ctx.spec(v).dtype == dtype else b.cast(v, dtype)
              for v in (router, w_gate, w_up, w_down)]
        y = b.one(moe.MoEOp, [x2, *ws], moe.moe_props(blk.top_k, blk.normalize),
                  hint=node.name)
        self.env[node] = b.reshape(y, shape, hint=node.name)

    def has_impl(self, node: torch.fx.Node) -> bool:
        t = node.target
        key = target_key(t)
        return (t is operator.getitem or key in ATEN_OPS or key in TORCH_FOLDED
                or _is_scalar_fn(t))

    def fail(self, node: torch.fx.Node, target: str, why: str) -> None:
        self.failures.append((node.name, target, why))
        self.poisoned.add(node)

    def import_node(self, node: torch.fx.Node) -> None:
        deps = node.all_input_nodes
        if any(d in self.poisoned for d in deps):
            self.poisoned.add(node)
            if not self.has_impl(node):
                self.fail(node, str(node.target), self.moe_rejected.get(
                    node, "no decomposition into portc's core ops"))
            return
        t = node.target
        key = target_key(t)
        self.ctx.node = node
        try:
            args = self.map_args(node.args)
            kwargs = self.map_args(node.kwargs)
            if t is operator.getitem:
                out = args[0][args[1]]
                if out is None:
                    raise NodeError(f"output #{args[1]} of '{node.args[0]}' "
                                    f"({node.args[0].target}) is not supported by portc")
            elif isinstance(t, torch._ops.OpOverload) and key in ATEN_OPS:
                out = ATEN_OPS[key](self.ctx, bind_schema(t, args, kwargs))
            elif isinstance(t, torch._ops.OpOverload):
                try:
                    out = self.fold_with_torch(node, key, args, kwargs)
                except _NotConstant:
                    self.fail(node, str(t), self.moe_rejected.get(
                        node, "no decomposition into portc's core ops"))
                    return
            elif _is_scalar_fn(t):
                out = t(*self.ctx.concrete(args), **kwargs)
            else:
                self.fail(node, str(t), "not an ATen op; portc imports core-ATen programs")
                return
        except NodeError as e:
            self.fail(node, str(t), str(e))
            return
        except (VerifyException, KernelError) as e:
            self.fail(node, str(t), f"does not fit portc's op rules: {e}")
            return
        except PortcError as e:
            self.fail(node, str(t), str(e))
            return
        self.env[node] = out
        for v in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(v, SSAValue) and v.name_hint is None:
                v.name_hint = ssa_hint(node.name)

    def fold_with_torch(self, node: torch.fx.Node, key: str, args: Any, kwargs: Any) -> Any:
        """Evaluate an ATen op in torch on constant operands; raise _NotConstant otherwise."""
        t = node.target
        if torch.Tag.nondeterministic_seeded in t.tags:
            raise NodeError("is a random op; export the model in eval() mode without sampling")
        shape_only = key in _SHAPE_ONLY

        def conv(v: Any) -> Any:
            if isinstance(v, SSAValue):
                arr = self.b.value_of(v)
                if arr is not None:
                    return to_torch(arr)
                if shape_only:
                    spec = self.ctx.spec(v)
                    from portc.compiler.frontends.torch_ops.registry import PORTC_TO_TORCH

                    return torch.zeros(self.ctx.shape(v), dtype=PORTC_TO_TORCH[spec.dtype])
                raise _NotConstant
            if isinstance(v, (list, tuple)):
                return type(v)(conv(x) for x in v)
            return self.ctx.concrete(v)

        if key not in TORCH_FOLDED and not any(
                isinstance(v, SSAValue) for v in torch.utils._pytree.tree_leaves((args, kwargs))):
            raise _NotConstant  # no tensor inputs and not a known creation op: be conservative
        meta = node.meta.get("val")
        for m in meta if isinstance(meta, (tuple, list)) else [meta]:
            if isinstance(m, torch.Tensor):
                numel = math.prod(self.ctx.concrete(tuple(m.shape)))
                if numel > FOLD_LIMIT_ELEMENTS:
                    raise NodeError(f"would fold to a {numel}-element constant, over the limit")
        targs = conv(list(args))
        tkwargs = {k: conv(v) for k, v in kwargs.items()}
        if "device" in tkwargs:
            tkwargs["device"] = torch.device("cpu")
        if "pin_memory" in tkwargs:
            tkwargs["pin_memory"] = False
        with torch.no_grad():
            res = t(*targs, **tkwargs)
        if key in _UNINITIALISED:
            res = torch.zeros_like(res)

        def back(r: Any) -> Any:
            if isinstance(r, torch.Tensor):
                return self.b.const(to_numpy(r), hint=node.name)
            if isinstance(r, (list, tuple)):
                return type(r)(back(x) for x in r)
            return r

        return back(res)

    # -------------------------------------------------------------- outputs
    def collect_outputs(self, node: torch.fx.Node) -> list[tuple[str, SSAValue]]:
        outs: list[tuple[str, SSAValue]] = []
        specs = self.ep.graph_signature.output_specs
        vals = node.args[0] if isinstance(node.args[0], (tuple, list)) else [node.args[0]]
        i = 0
        for spec, arg in zip(specs, vals, strict=True):
            if spec.kind != OutputKind.USER_OUTPUT:
                continue  # buffer/input mutations: side effects that do not reach the outputs
            name = f"output{i}"
            i += 1
            if isinstance(arg, torch.fx.Node):
                if arg in self.poisoned:
                    continue
                v = self.value(arg)
            else:
                v = arg
            if isinstance(v, (bool, int, float)):
                v = self.ctx.tensor(v)
            if not isinstance(v, SSAValue):
                raise ShapeError(f"output {name} is {type(v).__name__}, not a tensor; portc "
                                 "programs return tensors only")
            outs.append((name, v))
        return outs


def _bind_dims(ep: ExportedProgram, dims: Mapping[str, int] | None,
               shapes: Sequence[Sequence[int] | None] | None) -> dict[str, int]:
    """Symbolic dim name -> value (precedence in the module docstring)."""
    bound: dict[str, int] = {str(k): int(v) for k, v in (dims or {}).items()}
    by_name = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    user = [by_name[s.arg.name] for s in ep.graph_signature.input_specs
            if s.kind == InputKind.USER_INPUT]
    for i, node in enumerate(user):
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            continue
        given = shapes[i] if shapes is not None and i < len(shapes) else None
        if given is not None and len(given) != val.dim():
            raise InputError(f"input '{node.name}' has rank {val.dim()} in the program but the "
                             f"example has shape {list(given)}")
        for j, d in enumerate(val.shape):
            if isinstance(d, torch.SymInt):
                expr = d.node.expr
                if expr.is_Symbol and str(expr) not in bound:
                    if given is not None:
                        bound[str(expr)] = int(given[j])
                    elif d.node.hint is not None:
                        bound[str(expr)] = int(d.node.hint)
            elif given is not None and int(given[j]) != int(d):
                raise InputError(f"input '{node.name}' dim {j} is {int(d)} in the program but "
                                 f"{int(given[j])} in the example inputs")
    return bound


def _needs_decomposition(ep: ExportedProgram) -> bool:
    for n in ep.graph.nodes:
        if n.op == "call_function" and isinstance(n.target, torch._ops.OpOverload):
            key = target_key(n.target)
            if key not in ATEN_OPS and key not in TORCH_FOLDED:
                return True
        if n.op == "call_function" and isinstance(n.target, torch._ops.HigherOrderOperator):
            return True
    return False


def _flat_shapes(values: Any) -> list[Sequence[int] | None]:
    leaves = torch.utils._pytree.tree_leaves(values)
    return [tuple(x.shape) if isinstance(x, (torch.Tensor, np.ndarray)) else None
            for x in leaves]


def import_exported_program(
    ep: ExportedProgram,
    *,
    dims: Mapping[str, int] | None = None,
    example_inputs: Any = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    decompose: bool | None = None,
) -> TorchImportResult:
    """Import an ExportedProgram into a verified graph-dialect program.

    ``decompose=None`` runs ``ep.run_decompositions()`` only if some op has no decomposition
    here (so training-IR programs work and core-ATen programs are imported as they are).
    """
    if decompose or (decompose is None and _needs_decomposition(ep)):
        try:
            ep = ep.run_decompositions()
        except Exception as e:  # noqa: BLE001 - decomposition failures are torch-internal
            raise ModelLoadError(f"torch could not decompose the program to core ATen: {e}") \
                from e
    shapes: list[Sequence[int] | None] | None = None
    if example_inputs is not None:
        shapes = _flat_shapes(example_inputs)
    elif input_shapes is not None:
        names = [s.arg.name for s in ep.graph_signature.input_specs
                 if s.kind == InputKind.USER_INPUT]
        shapes = [input_shapes.get(n) for n in names]
    elif getattr(ep, "example_inputs", None) is not None:
        shapes = _flat_shapes(ep.example_inputs)
    bindings = _bind_dims(ep, dims, shapes)
    imp = _Importer(ep, bindings)
    example = torch.utils._pytree.tree_leaves(example_inputs) if example_inputs is not None \
        else None
    imp.bind_placeholders(example)
    outputs = imp.run()
    if imp.failures:
        raise UnsupportedOpsError(imp.failures, framework="PyTorch")
    program = imp.b.finish(outputs)
    program.verify()
    return TorchImportResult(program, ep, bindings)


def import_torch_module(module: torch.nn.Module, example_inputs: tuple[Any, ...], *,
                        dynamic_shapes: Any = None, strict: bool = False,
                        dims: Mapping[str, int] | None = None) -> TorchImportResult:
    """``torch.export.export`` + ``run_decompositions()`` (core ATen) + import."""
    if not isinstance(example_inputs, tuple):
        example_inputs = (example_inputs,)
    try:
        ep = torch.export.export(module, example_inputs, dynamic_shapes=dynamic_shapes,
                                 strict=strict)
        ep = ep.run_decompositions()
    except Exception as e:  # noqa: BLE001 - export errors are the model's, report them whole
        raise ModelLoadError(f"torch.export failed for {type(module).__name__}: "
                             f"{type(e).__name__}: {e}") from e
    return import_exported_program(ep, dims=dims, example_inputs=example_inputs,
                                   decompose=False)


# ---------------------------------------------------------------------------------- oracle


def _user_input_names(ep: ExportedProgram) -> list[str]:
    return [s.arg.name for s in ep.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]


def reference_outputs(ep_or_module: ExportedProgram | torch.nn.Module,
                      inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the original PyTorch program on numpy inputs; outputs named like the import's.

    An ExportedProgram takes its inputs by placeholder name; a module by ``forward`` parameter
    name (the names torch.export gives the placeholders).
    """
    with torch.no_grad():
        if isinstance(ep_or_module, ExportedProgram):
            ep = ep_or_module
            names = _user_input_names(ep)
            _check_names(names, inputs)
            flat = [to_torch(np.asarray(inputs[n])) for n in names]
            args, kwargs = torch.utils._pytree.tree_unflatten(flat, ep.call_spec.in_spec)
            result = ep.module()(*args, **kwargs)
        else:
            module = ep_or_module
            params = list(inspect.signature(module.forward).parameters)
            _check_names([p for p in params if p in inputs], inputs)
            kw = {n: to_torch(np.asarray(inputs[n])) for n in params if n in inputs}
            result = module(**kw)
    leaves = torch.utils._pytree.tree_leaves(result)
    out: dict[str, np.ndarray] = {}
    for i, t in enumerate(x for x in leaves if isinstance(x, torch.Tensor)):
        out[f"output{i}"] = to_numpy(t)
    return out


def _check_names(names: list[str], inputs: Mapping[str, np.ndarray]) -> None:
    missing = [n for n in names if n not in inputs]
    extra = [n for n in inputs if n not in names]
    if missing or extra:
        raise InputError(f"inputs {sorted(inputs)} do not match the program's inputs {names}")
