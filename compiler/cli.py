"""``portc`` command line: compile, run, verify, opt, targets, conformance.

Each subcommand parses its arguments and calls ``portc.compiler.api``. A ``PortcError`` prints one
``error:`` line and exits 2 (1 for a verification mismatch); tracebacks only with ``--debug``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import traceback
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from portc.compiler.errors import InputError, IRError, PortcError


# --------------------------------------------------------------------------------- progress
@contextlib.contextmanager
def step(label: str, quiet: bool = False) -> Iterator[None]:
    """One line per slow step on a terminal (a spinner-free progress bar: label ... seconds)."""
    t0 = time.perf_counter()
    show = not quiet and sys.stderr.isatty()
    if show:
        print(f"[portc] {label} ...", end="", file=sys.stderr, flush=True)
    try:
        yield
    finally:
        if show:
            print(f" {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)


def _parse_dims(items: Sequence[str] | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for it in items or []:
        name, sep, val = it.partition("=")
        if not sep or not val.isdigit():
            raise InputError(f"--dim '{it}' must look like NAME=INT (e.g. --dim batch=1)")
        out[name] = int(val)
    return out


def _parse_shapes(items: Sequence[str] | None) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    for it in items or []:
        name, sep, val = it.rpartition("=")
        try:
            out[name] = tuple(int(x) for x in val.split("x"))
        except ValueError:
            sep = ""
        if not sep or not name:
            raise InputError(f"--input-shape '{it}' must look like NAME=1x3x224x224")
    return out


def _import(args: argparse.Namespace):  # noqa: ANN202 - returns api.ImportedModel
    from portc.compiler.api import import_model

    with step(f"importing {args.model}", args.quiet):
        return import_model(args.model, dims=_parse_dims(args.dim),
                            input_shapes=_parse_shapes(args.input_shape),
                            max_tensor_bytes=int(args.max_tensor_gb * 2**30))


def _target_options(args: argparse.Namespace) -> dict[str, object]:
    opts: dict[str, object] = {}
    for key in ("sm", "precision", "soc", "vlen", "trace"):
        v = getattr(args, key, None)
        if v is not None:
            opts[key] = v
    return opts


# --------------------------------------------------------------------------------- commands
def cmd_compile(args: argparse.Namespace) -> int:
    from portc.compiler.api import compile as compile_model
    from portc.compiler.targets import get_target

    get_target(args.target)  # fail fast on a bad target, before importing the model
    imported = _import(args)
    changes = _changes(args)
    if changes.any:
        from dataclasses import replace

        from portc.compiler.model_changes import apply_model_changes, format_reports

        with step("applying model changes", args.quiet):
            program, reports = apply_model_changes(imported.program, changes, args.seed)
        imported = replace(imported, program=program)
        print(format_reports(reports))
    with step(f"compiling for {args.target}", args.quiet):
        cm = compile_model(None, target=args.target, imported=imported,
                           options=_target_options(args))
    out = cm.save(args.output)
    report = cm.artifact.manifest.get("compile_report")
    if report and not args.quiet:
        print(report)
    files = sorted(os.listdir(out))
    print(f"wrote {out}/ ({', '.join(files)})")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from portc.compiler.artifact import Artifact
    from portc.compiler.targets import get_target

    artifact = Artifact.read(Path(args.bundle))
    target = get_target(artifact.target)
    rt = target.runtime(args.runtime)
    from portc.compiler.api import load_npz

    inputs = load_npz(args.inputs)
    with step(f"running on {target.name}/{rt.name}", args.quiet):
        exe = rt.load(artifact)
        outs, stats = exe.run(inputs)
    if args.outputs:
        out_path = Path(args.outputs)
        np.savez(out_path, **outs)  # type: ignore[arg-type]
        print(f"wrote {out_path} ({', '.join(outs)})")
    else:
        for name, arr in outs.items():
            print(f"{name}: {arr.dtype}{list(arr.shape)}")
    if stats and not args.quiet:
        print(f"stats: {json.dumps(stats, default=str)}")
    return 0


def _changes(args: argparse.Namespace):  # noqa: ANN202 - ModelChangeOptions
    from portc.compiler.model_changes import ModelChangeOptions

    return ModelChangeOptions(quantize=args.quantize, group_size=args.group_size,
                              calib=args.calib, calib_method=args.calib_method,
                              percentile=args.percentile, sparsity=args.sparsity,
                              act_granularity=args.act_granularity.replace("-", "_"),
                              moe_capacity_factor=args.moe_capacity_factor,
                              gptq=args.gptq, gptq_damp=args.gptq_damp)


def cmd_verify(args: argparse.Namespace) -> int:
    from portc.compiler.api import load_inputs, verify
    from portc.compiler.targets import all_targets, get_target

    names = [t.name for t in all_targets()] if args.target == "all" else [args.target]
    for n in names:
        get_target(n)
    imported = _import(args)
    inputs = load_inputs(args.inputs, imported.program) if args.inputs else None
    reports = []
    for name in names:
        with step(f"verifying on {name}", args.quiet):
            rep = verify(None, name, imported=imported, inputs=inputs, seed=args.seed,
                         rtol=args.rtol, atol=args.atol,
                         runtime=args.runtime if len(names) == 1 else None,
                         verify_each=args.verify_each, options=_target_options(args),
                         changes=_changes(args))
        print(rep.table())
        reports.append(rep)
    if args.junit:
        _write_junit(Path(args.junit), reports)
    return 0 if all(r.ok for r in reports) else 1


def _write_junit(path: Path, reports: list) -> None:  # list[api.VerifyReport]
    cases = []
    failures = 0
    for r in reports:
        for c in r.checks:
            body = ""
            if not c.ok:
                failures += 1
                msg = f"max abs {c.max_abs:.3e}, max rel {c.max_rel:.3e} {c.detail}".strip()
                body = f"<failure message={quoteattr(msg)}>{escape(msg)}</failure>"
            cases.append(f'  <testcase classname={quoteattr(f"portc.verify.{r.target}")} '
                         f'name={quoteattr(f"{r.model}:{c.name}")}>{body}</testcase>')
    xml = (f'<?xml version="1.0" encoding="utf-8"?>\n<testsuite name="portc-verify" '
           f'tests="{len(cases)}" failures="{failures}">\n' + "\n".join(cases) + "\n</testsuite>\n")
    path.write_text(xml)


def cmd_opt(args: argparse.Namespace) -> int:
    from portc.compiler.pipeline import parse_pipeline, run_passes
    from portc.compiler.program import parse_program
    from portc.compiler.weights import WeightStore

    src = Path(args.file)
    if not src.is_file():
        raise IRError(f"IR file '{src}' does not exist")
    weights = WeightStore.load(Path(args.weights)) if args.weights else WeightStore()
    program = parse_program(src.read_text(), weights, str(src))
    passes = parse_pipeline(args.passes or "")
    # without a weight file the constants' arrays are unknown: check structure only
    check_weights = bool(args.weights)
    program.verify(check_weights)

    def show(name: str, p: object) -> None:
        if args.print_ir_after_all:
            print(f"// -----// IR Dump After {name} //----- //")
            print(program.to_text())

    run_passes(program, passes, show, check_weights)
    text = program.to_text()
    if args.output:
        Path(args.output).write_text(text)
    else:
        print(text, end="")
    return 0


def cmd_targets(args: argparse.Namespace) -> int:
    from portc.compiler.targets import all_targets

    for t in all_targets():
        print(f"{t.name:<12} {t.summary}")
        for i, rt in enumerate(t.runtimes):
            why = rt.unavailable()
            state = "available" if why is None else f"unavailable: {why}"
            default = " (default)" if i == 0 else ""
            print(f"    runtime {rt.name:<12}{default:<10} {rt.summary} [{state}]")
    return 0


def cmd_passes(args: argparse.Namespace) -> int:
    from portc.passes.registry import all_passes

    for name, cls in all_passes().items():
        doc = (cls.__doc__ or "").strip().splitlines()
        print(f"{name:<28} {doc[0] if doc else ''}")
    return 0


def cmd_conformance(args: argparse.Namespace) -> int:
    from portc.compiler.conformance import format_table, run_conformance, summarize
    from portc.compiler.targets import get_target

    get_target(args.target)
    results = run_conformance(args.target, args.runtime,
                              set(args.ops.split(",")) if args.ops else None, args.k,
                              jobs=args.jobs or os.cpu_count() or 1)
    summary = summarize(results)
    print(json.dumps(summary, indent=2) if args.json else format_table(summary, args.failures))
    return 0


# --------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="portc",
        description="Port trained models to CUDA PTX, an Ascend-like NPU and RISC-V vector, "
                    "checked against reference execution.")
    ap.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    sub = ap.add_subparsers(dest="command", required=True)

    def model_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("model", help="model file: .onnx or .pt2 (torch.export.save)")
        p.add_argument("--target", "-t", default="reference", help="see `portc targets`")
        p.add_argument("--dim", action="append", metavar="NAME=INT",
                       help="bind a symbolic dimension (default 1)")
        p.add_argument("--input-shape", action="append", metavar="NAME=AxBxC",
                       help="override an input's shape")
        p.add_argument("--max-tensor-gb", type=float, default=8.0,
                       help="refuse declared tensors larger than this (default 8)")
        p.add_argument("--sm", type=int, choices=[80, 90], help="cuda: PTX target sm (80|90)")
        p.add_argument("--precision", help="target precision mode (e.g. fp32|fp16|bf16)")
        p.add_argument("--soc", help="ascend: SoC description (default 910b)")
        p.add_argument("--trace", metavar="TRACE.json",
                       help="ascend: npusim writes a Chrome trace per launch next to this path")
        p.add_argument("--vlen", type=int, help="rvv: specialise for a VLEN")
        p.add_argument("-q", "--quiet", action="store_true")
        p.add_argument("--quantize", choices=["int8", "w4", "w2", "fp8"],
                       help="post-training quantization scheme")
        p.add_argument("--group-size", type=int, choices=[32, 64, 128],
                       help="w4/w2: weights per scale along K")
        p.add_argument("--calib", help="int8/fp8: .npz of calibration inputs ([N, ...] or one)")
        p.add_argument("--calib-method", choices=["minmax", "percentile"], default="minmax")
        p.add_argument("--percentile", type=float, default=99.99)
        p.add_argument("--act-granularity", choices=["per-tensor", "per-token"],
                       default="per-tensor",
                       help="int8 activation scales: calibrated per tensor, or per row at run time")
        p.add_argument("--sparsity", help="2:4 or a fraction in [0, 1] of weights to prune")
        p.add_argument("--gptq", action="store_true",
                       help="w4/w2: GPTQ error compensation (calibrated; with AWQ scaling)")
        p.add_argument("--gptq-damp", type=float, default=0.1,
                       help="GPTQ Hessian damping as a fraction of its mean diagonal")
        p.add_argument("--moe-capacity-factor", type=float, metavar="F",
                       help="MoE expert capacity = ceil(F*tokens*top_k/experts); 0 = unlimited")

    p = sub.add_parser("compile", help="compile a model into a bundle directory")
    model_args(p)
    p.add_argument("-o", "--output", required=True, help="bundle directory to write")
    p.add_argument("--seed", type=int, default=0, help="seed of the inputs used for reports")
    p.set_defaults(fn=cmd_compile)

    p = sub.add_parser("run", help="run a compiled bundle on inputs from an .npz file")
    p.add_argument("bundle")
    p.add_argument("--inputs", required=True, help=".npz with one array per model input")
    p.add_argument("--outputs", help=".npz to write outputs to (default: print shapes)")
    p.add_argument("--runtime", help="one of the target's runtimes (default: its simulator)")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("verify", help="compile, run and compare with onnxruntime/torch")
    model_args(p)
    p.add_argument("--runtime", help="one of the target's runtimes (default: its simulator)")
    p.add_argument("--inputs", help=".npz inputs (default: seeded random)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rtol", type=float, default=None,
                   help="relative tolerance (default: the target's; 1e-4 for fp32 arithmetic)")
    p.add_argument("--atol", type=float, default=None,
                   help="absolute tolerance (default: the target's; 1e-5 for fp32 arithmetic)")
    p.add_argument("--verify-each", action="store_true",
                   help="run the reference after every pass; name the first that drifts")
    p.add_argument("--junit", help="write a JUnit XML report here")
    p.set_defaults(fn=cmd_verify)

    p = sub.add_parser("opt", help="run passes over an IR file")
    p.add_argument("file")
    p.add_argument("-p", "--passes", default="", help="comma-separated pass names")
    p.add_argument("--weights", help="weights.safetensors the IR's constants refer to")
    p.add_argument("--print-ir-after-all", action="store_true")
    p.add_argument("-o", "--output")
    p.set_defaults(fn=cmd_opt)

    p = sub.add_parser("targets", help="list targets and their runtimes")
    p.set_defaults(fn=cmd_targets)

    p = sub.add_parser("passes", help="list registered passes")
    p.set_defaults(fn=cmd_passes)

    p = sub.add_parser("conformance", help="run ONNX's node test cases on a target")
    p.add_argument("--target", "-t", default="reference")
    p.add_argument("--runtime")
    p.add_argument("--ops", help="only these op types (comma-separated)")
    p.add_argument("-k", help="only cases whose name matches this regex")
    p.add_argument("--json", action="store_true", help="machine-readable summary")
    p.add_argument("--failures", action="store_true", help="list every failing case")
    p.add_argument("--jobs", "-j", type=int, default=0,
                   help="worker processes (default: one per CPU core)")
    p.set_defaults(fn=cmd_conformance)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.debug:
        # library deprecation chatter (torch pytree, onnx) is not the user's business
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        return int(args.fn(args))
    except PortcError as e:
        if args.debug:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the last line of defence for users
        if args.debug:
            traceback.print_exc()
        else:
            print(f"internal error: {type(e).__name__}: {e}\n"
                  "This is a portc bug; rerun with --debug and report the traceback.",
                  file=sys.stderr)
        return 3
