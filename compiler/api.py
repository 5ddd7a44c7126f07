"""The programmatic API behind the CLI: import, compile, run and verify models.

``portc.compile(module, example_inputs, target="cuda")`` mirrors ``torch.compile``; the CLI is a
thin argument parser over these functions so that CI scripts and notebooks get the same behaviour.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from portc.compiler.artifact import Artifact
from portc.compiler.errors import InputError, ModelLoadError, OracleError, VerificationMismatch
from portc.compiler.model_changes import ModelChangeOptions
from portc.compiler.program import Program
from portc.compiler.targets import CompileOptions, get_target
from portc.dialects import dtypes
from portc.dialects import graph as g

ModelLike = Any  # path, onnx.ModelProto, torch.nn.Module or torch.export.ExportedProgram


@dataclass
class ImportedModel:
    """A model in graph IR plus what verification needs to run the original."""

    program: Program
    kind: str  # "onnx" or "torch"
    source_hash: str
    oracle: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]
    dim_bindings: dict[str, int] = field(default_factory=dict)
    name: str = "model"


def _sha256_file(p: Path) -> str:
    h = hashlib.sha256()
    with p.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _onnx_oracle(model_bytes: bytes) -> Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]:
    def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import onnx
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3
        try:
            sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
        except Exception as first:  # noqa: BLE001 - onnxruntime raises its own Fail types
            # Newer onnx writers stamp IR versions onnxruntime does not know yet; the IR version
            # does not change operator semantics (the opset does), so retry with IR 10.
            m = onnx.load_from_string(model_bytes)
            if m.ir_version <= 10:
                raise OracleError(f"onnxruntime cannot run the model: {first}") from first
            m.ir_version = 10
            try:
                sess = ort.InferenceSession(m.SerializeToString(), so,
                                            providers=["CPUExecutionProvider"])
            except Exception as e:  # noqa: BLE001
                raise OracleError(f"onnxruntime cannot run the model: {e}") from e
        names = [o.name for o in sess.get_outputs()]
        feeds = {i.name: np.asarray(inputs[i.name]) for i in sess.get_inputs()}
        return dict(zip(names, sess.run(names, feeds), strict=True))

    return run


def import_model(model: ModelLike, example_inputs: Sequence[Any] | None = None, *,
                 dims: Mapping[str, int] | None = None,
                 input_shapes: Mapping[str, tuple[int, ...]] | None = None,
                 max_tensor_bytes: int | None = None) -> ImportedModel:
    """Import an ONNX file/ModelProto, a ``.pt2`` file, an ExportedProgram or an nn.Module."""
    import onnx

    from portc.compiler.frontends.onnx.importer import (
        DEFAULT_MAX_TENSOR_BYTES,
        import_onnx,
        load_onnx,
    )

    limit = max_tensor_bytes or DEFAULT_MAX_TENSOR_BYTES
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.exists():
            raise ModelLoadError(f"model file '{path}' does not exist")
        if path.suffix == ".pt2":
            from portc.compiler.frontends import torch_export

            ep = torch_export.load_pt2(path)
            res = torch_export.import_exported_program(ep)
            return ImportedModel(res.program, "torch", _sha256_file(path),
                                 lambda ins: torch_export.reference_outputs(ep, ins),
                                 getattr(res, "dim_bindings", {}), path.stem)
        if path.suffix not in (".onnx", ".pb", ""):
            raise ModelLoadError(
                f"'{path}': unknown model format '{path.suffix}'; portc reads .onnx (ONNX) and "
                ".pt2 (torch.export.save) files")
        proto = load_onnx(path, limit)
        res = import_onnx(proto, dims=dims, input_shapes=input_shapes, max_tensor_bytes=limit)
        return ImportedModel(res.program, "onnx", _sha256_file(path),
                             _onnx_oracle(proto.SerializeToString()),
                             res.dim_bindings, path.stem)
    if isinstance(model, onnx.ModelProto):
        res = import_onnx(model, dims=dims, input_shapes=input_shapes, max_tensor_bytes=limit)
        raw = model.SerializeToString()
        return ImportedModel(res.program, "onnx", hashlib.sha256(raw).hexdigest(),
                             _onnx_oracle(raw), res.dim_bindings, model.graph.name or "model")
    import torch

    from portc.compiler.frontends import torch_export

    if isinstance(model, torch.export.ExportedProgram):
        ep = model
    elif isinstance(model, torch.nn.Module):
        if example_inputs is None:
            raise InputError("compiling a torch.nn.Module needs example_inputs (a tuple of tensors)")
        ep = torch.export.export(model.eval(), tuple(example_inputs))
    else:
        raise ModelLoadError(
            f"cannot import a {type(model).__name__}; pass an .onnx/.pt2 path, an onnx.ModelProto,"
            " a torch.nn.Module or a torch.export.ExportedProgram")
    res = torch_export.import_exported_program(ep)
    digest = hashlib.sha256(res.program.to_text().encode()).hexdigest()
    return ImportedModel(res.program, "torch", digest,
                         lambda ins: torch_export.reference_outputs(ep, ins),
                         getattr(res, "dim_bindings", {}), type(model).__name__)


# ------------------------------------------------------------------------------------ inputs


def _index_bounds(program: Program) -> dict[str, int]:
    """Integer inputs used as gather indices get values inside the gathered dimension."""
    bounds: dict[str, int] = {}
    for name, arg in zip(program.input_names, program.main.args, strict=True):
        for use in arg.uses:
            op = use.operation
            if isinstance(op, g.GatherOp) and use.index == 1:
                d = g.spec_of(op.data)
                n = d.shape[op.props()["axis"] % d.rank]
                if n is not None:
                    bounds[name] = min(bounds.get(name, n), n)
    return bounds


def random_inputs(program: Program, seed: int = 0) -> dict[str, np.ndarray]:
    """Fresh seeded inputs: normal floats, in-range indices, padding-style attention masks,
    random 0/1 for other ints and bools."""
    rng = np.random.default_rng(seed)
    bounds = _index_bounds(program)
    out: dict[str, np.ndarray] = {}
    for name, spec in program.input_specs().items():
        if not spec.is_static:
            raise InputError(f"input '{name}' has symbolic dims {spec}; bind them with --dim")
        shape = tuple(int(d) for d in spec.shape)  # type: ignore[arg-type]
        dt = dtypes.dtype(spec.dtype)
        if dt.kind == "float":
            out[name] = rng.standard_normal(shape).astype(dt.numpy)
        elif dt.kind == "bool":
            out[name] = rng.integers(0, 2, shape).astype(bool)
        elif "mask" in name.lower() and name not in bounds and len(shape) >= 1:
            # attention masks: real ones are 1 over the text and 0 over trailing padding
            mask = np.ones(shape, dt.numpy)
            valid = int(rng.integers(max(1, shape[-1] * 3 // 4), shape[-1] + 1))
            mask[..., valid:] = 0
            out[name] = mask
        else:
            hi = bounds.get(name, 2)
            out[name] = rng.integers(0, max(hi, 1), shape).astype(dt.numpy)
            if name in bounds and out[name].size > 1 and hi > 1:
                out[name].flat[0] = hi - 1  # exercise the last row as well
    return out


def load_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Arrays from an .npz, never unpickling objects."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise InputError(f"inputs file '{p}' does not exist") from None
    except (OSError, ValueError) as e:
        raise InputError(f"'{p}' is not a readable .npz file ({e}); save inputs with "
                         "numpy.savez(path, name=array, ...)") from e


def load_inputs(path: str | os.PathLike[str], program: Program) -> dict[str, np.ndarray]:
    arrays = load_npz(path)
    from portc.runtimes.reference.interpreter import check_inputs

    check_inputs(program, arrays)
    return arrays


# ------------------------------------------------------------------------------------ compile


@dataclass
class CompiledModel:
    artifact: Artifact
    program: Program
    target: str

    def run(self, inputs: Mapping[str, np.ndarray], runtime: str | None = None
            ) -> dict[str, np.ndarray]:
        exe = get_target(self.target).runtime(runtime).load(self.artifact)
        return exe.run(inputs)[0]

    def save(self, out_dir: str | os.PathLike[str]) -> Path:
        return self.artifact.write(Path(out_dir))


def build_manifest(imported: ImportedModel, program: Program, target: str) -> dict[str, Any]:
    from portc import __version__
    from portc.compiler.pipeline import tensor_rows as tensors

    return {
        "portc_version": __version__,
        "model": imported.name,
        "source_kind": imported.kind,
        "source_sha256": imported.source_hash,
        "inputs": tensors(program.input_specs()),
        "outputs": tensors(program.output_specs()),
        "dim_bindings": imported.dim_bindings,
    }


def compile(model: ModelLike, example_inputs: Sequence[Any] | None = None,  # noqa: A001
            target: str = "reference", out_dir: str | os.PathLike[str] | None = None,
            options: Mapping[str, Any] | None = None,
            after_each: Callable[[str, Program], None] | None = None,
            imported: ImportedModel | None = None) -> CompiledModel:
    from portc.compiler.pipeline import compile_program

    tgt = get_target(target)
    imported = imported or import_model(model, example_inputs)
    artifact = compile_program(imported.program, tgt, CompileOptions(dict(options or {})),
                               after_each)
    artifact.manifest = {**build_manifest(imported, imported.program, target),
                         **artifact.manifest}
    cm = CompiledModel(artifact, imported.program, target)
    if out_dir is not None:
        cm.save(out_dir)
    return cm


# ------------------------------------------------------------------------------------ verify


@dataclass
class OutputCheck:
    name: str
    max_abs: float
    max_rel: float
    ok: bool
    detail: str = ""


@dataclass
class VerifyReport:
    model: str
    target: str
    runtime: str
    checks: list[OutputCheck]
    oracle: str
    stats: dict[str, Any] = field(default_factory=dict)
    #: reports of model-changing passes (quantize/sparsify) vs the unchanged model
    changes: list[dict[str, Any]] = field(default_factory=list)
    #: (rtol, atol, where they came from) the checks used
    tolerance: tuple[float, float, str] | None = None

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def table(self) -> str:
        lines = [f"{'output':<28} {'max abs err':>12} {'max rel err':>12}  result"]
        for c in self.checks:
            lines.append(f"{c.name:<28} {c.max_abs:>12.3e} {c.max_rel:>12.3e}  "
                         f"{'ok' if c.ok else 'MISMATCH'} {c.detail}".rstrip())
        verdict = "PASS" if self.ok else "FAIL"
        lines.append(f"{verdict}: {self.model} on {self.target}/{self.runtime} vs {self.oracle}")
        if self.tolerance is not None:
            rtol, atol, source = self.tolerance
            lines.append(f"tolerance: rtol {rtol:g}, atol {atol:g} ({source})")
        if self.changes:
            from portc.compiler.model_changes import format_reports

            lines.append("model changes (accuracy is against the unchanged model):")
            lines.append(format_reports(self.changes))
        return "\n".join(lines)


def compare(name: str, got: np.ndarray, want: np.ndarray, rtol: float, atol: float
            ) -> OutputCheck:
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return OutputCheck(name, float("inf"), float("inf"), False,
                           f"shape {list(got.shape)} != {list(want.shape)}")
    if got.dtype != want.dtype:
        return OutputCheck(name, float("inf"), float("inf"), False,
                           f"dtype {got.dtype} != {want.dtype}")
    a, b = got.astype(np.float64), want.astype(np.float64)
    with np.errstate(all="ignore"):
        diff = np.where(np.isnan(a) & np.isnan(b), 0.0, np.abs(a - b))
        rel = diff / np.maximum(np.abs(b), np.finfo(np.float64).tiny)
    max_abs = float(np.nanmax(diff)) if diff.size else 0.0
    max_rel = float(np.nanmax(np.where(diff == 0, 0, rel))) if diff.size else 0.0
    ok = bool(np.all(diff <= atol + rtol * np.abs(b))) and not np.isnan(diff).any()
    return OutputCheck(name, max_abs, max_rel, ok)


def verify(model: ModelLike, target: str = "reference", *, example_inputs: Sequence[Any] | None
           = None, inputs: Mapping[str, np.ndarray] | None = None, seed: int = 0,
           rtol: float | None = None, atol: float | None = None, runtime: str | None = None,
           verify_each: bool = False, imported: ImportedModel | None = None,
           options: Mapping[str, Any] | None = None,
           changes: ModelChangeOptions | None = None) -> VerifyReport:
    """Compile for ``target``, run on its runtime and compare with onnxruntime/torch; with
    model changes, compare with the reference interpreter of the changed model instead and
    report accuracy against the unchanged one. ``rtol``/``atol`` left as None take the
    target's tolerance for ``options`` (fp32: 1e-4/1e-5; wider where matmul operands round to
    fp16/bf16/tf32); the report says which and why."""
    from portc.compiler.pipeline import verify_each_hook

    default_tolerance = rtol is None and atol is None
    rtol, atol, tolerance_source = resolve_tolerance(target, options, rtol, atol)

    imported = imported or import_model(model, example_inputs)
    program = imported.program
    feeds = dict(inputs) if inputs is not None else random_inputs(program, seed)
    change_reports: list[dict[str, Any]] = []
    if changes is not None and changes.any:
        from dataclasses import replace

        from portc.compiler.model_changes import apply_model_changes
        from portc.runtimes.reference.interpreter import run_program

        program, change_reports = apply_model_changes(program, changes, seed, feeds)
        imported = replace(imported, program=program,
                           oracle=lambda ins, p=program: run_program(p, ins))
        expected = run_program(program, feeds)
    else:
        expected = imported.oracle(feeds)
    hook = None
    if verify_each:
        from portc.runtimes.reference.interpreter import run_program

        before = run_program(program, feeds)
        for name, ref in expected.items():
            chk = compare(name, before[name], ref, rtol, atol)
            if not chk.ok:
                raise VerificationMismatch(
                    f"the imported program already differs from the "
                    f"{'onnxruntime' if imported.kind == 'onnx' else 'torch'} output '{name}' "
                    f"(max abs err {chk.max_abs:.3g}) before any pass: a frontend bug")
        hook = verify_each_hook(before, feeds, rtol, atol)
    cm = compile(None, target=target, imported=imported, after_each=hook, options=options)
    rt = get_target(target).runtime(runtime)
    outs, stats = rt.load(cm.artifact).run(feeds)
    checks = [compare(n, outs[n], expected[n], rtol, atol) for n in program.output_names]
    if change_reports and changes is not None and changes.rounds_activations \
            and default_tolerance:
        checks = [allow_activation_rounding(c, change_reports) for c in checks]
    oracle = "onnxruntime" if imported.kind == "onnx" else "torch"
    if change_reports:
        oracle = "reference interpreter of the changed model"
    return VerifyReport(imported.name, target, rt.name, checks, oracle, stats, change_reports,
                        (rtol, atol, tolerance_source))


#: how much of a change's own error (changed vs unchanged model) a port may add when the
#: changed model rounds activations at run time (see ``allow_activation_rounding``)
ACTIVATION_ROUNDING_SHARE = 0.5


def allow_activation_rounding(chk: OutputCheck, change_reports: list[dict[str, Any]]
                              ) -> OutputCheck:
    """A port of a model that quantizes activations at run time computes the quantizers'
    inputs in its own float arithmetic (fp32, other summation orders) while the reference uses
    float64, so a value on a rounding tie can land one quantization step away, and that step
    propagates. Such a port is held to at most ``ACTIVATION_ROUNDING_SHARE`` of the error the
    change itself introduces on these inputs, and the check says so; only the defaults get this
    (a user's --rtol/--atol are applied as given)."""
    if chk.ok or not np.isfinite(chk.max_abs):
        return chk
    own = max((r["outputs"][chk.name]["max_abs_error"] for r in change_reports
               if chk.name in r.get("outputs", {})), default=0.0)
    allowed = ACTIVATION_ROUNDING_SHARE * own
    if chk.max_abs > allowed:
        return chk
    return OutputCheck(chk.name, chk.max_abs, chk.max_rel, True,
                       f"(run-time activation rounding: within {ACTIVATION_ROUNDING_SHARE:g}x "
                       f"of the change's own error {own:.3g})")


def resolve_tolerance(target: str, options: Mapping[str, Any] | None, rtol: float | None,
                      atol: float | None) -> tuple[float, float, str]:
    """The (rtol, atol) a verify compares at, and where they came from: what the user gave,
    else the target's ``verify_tolerance`` for these options."""
    t_rtol, t_atol, why = get_target(target).verify_tolerance(options or {})
    if rtol is not None and atol is not None:
        return rtol, atol, "given"
    source = f"target default ({why})" if rtol is None and atol is None else (
        f"given, the other from the target default ({why})")
    return (t_rtol if rtol is None else rtol), (t_atol if atol is None else atol), source
