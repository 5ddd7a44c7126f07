"""``portc conformance``: run ONNX's own node test cases on a target and tabulate the results.

Every case in ``onnx.backend.test`` (kind ``node``) counts; a case that fails to import, compile or
run is a failure with its reason, never dropped from the denominator. Cases are grouped by the op
they test: the single node's type, or for ``*_expanded`` function-body cases the op whose name the
test carries.
"""

from __future__ import annotations

import contextlib
import re
import signal
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import onnx

CASE_TIMEOUT_S = 60


@dataclass
class CaseResult:
    name: str
    op: str
    passed: bool
    stage: str  # "ok", "import", "compile", "run", "compare", "timeout"
    reason: str
    seconds: float


def load_cases() -> list:  # list of onnx TestCase namedtuples
    from onnx.backend.test.loader import load_model_tests

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            return load_model_tests(kind="node")


_ALL_OPS: list[str] | None = None


def _op_names() -> list[str]:
    global _ALL_OPS
    if _ALL_OPS is None:
        _ALL_OPS = sorted({s.name for s in onnx.defs.get_all_schemas_with_history()},
                          key=len, reverse=True)
    return _ALL_OPS


def case_op(case: object) -> str:
    """The op a case tests."""
    model: onnx.ModelProto = case.model  # type: ignore[attr-defined]
    types = {n.op_type for n in model.graph.node}
    if len(model.graph.node) == 1 or len(types) == 1:
        return model.graph.node[0].op_type
    name = re.sub(r"^test_", "", case.name).replace("_", "").lower()  # type: ignore[attr-defined]
    for op in _op_names():
        if name.startswith(op.lower()):
            return op
    return sorted(types)[0]


class _Timeout(Exception):
    pass


@contextlib.contextmanager
def _deadline(seconds: int) -> Iterator[None]:
    def fire(signum: int, frame: object) -> None:
        raise _Timeout()

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def compare_outputs(expected: list[np.ndarray], got: list[np.ndarray], rtol: float, atol: float
                    ) -> str | None:
    """None when equal within tolerance; else a one-line description of the first mismatch."""
    if len(expected) != len(got):
        return f"{len(got)} outputs, expected {len(expected)}"
    for i, (e, o) in enumerate(zip(expected, got, strict=True)):
        e, o = np.asarray(e), np.asarray(o)
        if e.dtype == object:
            return f"output {i}: non-numeric expected output"
        if e.dtype != o.dtype:
            return f"output {i}: dtype {o.dtype}, expected {e.dtype}"
        if e.shape != o.shape:
            return f"output {i}: shape {o.shape}, expected {e.shape}"
        if e.dtype.kind in "fc" or e.dtype.kind == "V" or e.dtype.itemsize == 1 and \
                e.dtype.kind not in "iub":
            ef, of = e.astype(np.float64), o.astype(np.float64)
            if not np.allclose(of, ef, rtol=rtol, atol=atol, equal_nan=True):
                err = np.nanmax(np.abs(of - ef)) if ef.size else 0.0
                return f"output {i}: max abs error {err:.3g} (rtol {rtol}, atol {atol})"
        elif not np.array_equal(e, o):
            return f"output {i}: {int(np.sum(e != o))} of {e.size} elements differ"
    return None


def _arrays(values: list) -> list[np.ndarray]:
    """The loader hands some cases' data (exotic dtypes) over as TensorProtos."""
    from onnx import numpy_helper

    return [numpy_helper.to_array(v) if isinstance(v, onnx.TensorProto) else np.asarray(v)
            for v in values]


def run_case(case: object, target: str, runtime: str | None = None) -> CaseResult:
    """Run one case through the ONNX backend API, exactly as ``onnx.backend.test`` would."""
    from portc.compiler.onnx_backend import PortcBackend

    model: onnx.ModelProto = case.model  # type: ignore[attr-defined]
    op = case_op(case)
    name = case.name  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    stage = "prepare"
    try:
        with _deadline(CASE_TIMEOUT_S), warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            rep = PortcBackend.prepare(model, target, runtime=runtime)
            for raw_inputs, raw_expected in case.data_sets:  # type: ignore[attr-defined]
                stage = "run"
                inputs, expected = _arrays(raw_inputs), _arrays(raw_expected)
                if any(np.asarray(a).dtype == object for a in inputs):
                    raise TypeError("string/object tensors are not supported")
                outs = rep.run(list(inputs))
                stage = "compare"
                why = compare_outputs(list(expected), list(outs),
                                      case.rtol, case.atol)  # type: ignore[attr-defined]
                if why:
                    return CaseResult(name, op, False, stage, why, time.perf_counter() - t0)
    except _Timeout:
        return CaseResult(name, op, False, "timeout", f"over {CASE_TIMEOUT_S}s",
                          time.perf_counter() - t0)
    except Exception as e:  # noqa: BLE001 - every failure is a counted, reported result
        msg = " ".join(str(e).split())[:300] or type(e).__name__
        return CaseResult(name, op, False, stage, f"{type(e).__name__}: {msg}",
                          time.perf_counter() - t0)
    return CaseResult(name, op, True, "ok", "", time.perf_counter() - t0)


_WORKER_CASES: dict[str, object] = {}


def _worker_init() -> None:
    _WORKER_CASES.update({c.name: c for c in load_cases()})


def _worker_run(job: tuple[str, str, str | None]) -> CaseResult:
    name, target, runtime = job
    return run_case(_WORKER_CASES[name], target, runtime)


def run_conformance(target: str, runtime: str | None = None, ops: set[str] | None = None,
                    name_filter: str | None = None, progress: bool = True,
                    jobs: int = 1) -> list[CaseResult]:
    """Run the selected cases; ``jobs > 1`` spreads them over spawned worker processes (not
    forked: torch's and onnxruntime's thread pools can deadlock a forked child). Each worker loads
    the cases itself, since TestCase objects carry protobufs that do not pickle cheaply."""
    cases = load_cases()
    if ops:
        cases = [c for c in cases if case_op(c) in ops]
    if name_filter:
        rx = re.compile(name_filter)
        cases = [c for c in cases if rx.search(c.name)]
    bar = None
    if progress and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=len(cases), desc=f"conformance[{target}]", unit="case")
    results: list[CaseResult] = []
    if jobs > 1 and len(cases) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(jobs, initializer=_worker_init) as pool:
            todo = [(c.name, target, runtime) for c in cases]
            for r in pool.imap(_worker_run, todo, chunksize=8):
                results.append(r)
                if bar is not None:
                    bar.update()
    else:
        for c in cases:
            results.append(run_case(c, target, runtime))
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    return results


def summarize(results: list[CaseResult]) -> dict:
    by_op: dict[str, list[CaseResult]] = defaultdict(list)
    for r in results:
        by_op[r.op].append(r)
    passed = sum(r.passed for r in results)
    return {
        "total": len(results),
        "passed": passed,
        "failed": len(results) - passed,
        "pass_rate": passed / len(results) if results else 0.0,
        "ops": {
            op: {"passed": sum(r.passed for r in rs), "total": len(rs)}
            for op, rs in sorted(by_op.items())
        },
        "failures": [asdict(r) for r in results if not r.passed],
    }


def format_table(summary: dict, show_failures: bool = False) -> str:
    lines = [f"{'op':<32} {'pass':>5} {'total':>5}  status"]
    for op, s in summary["ops"].items():
        status = "ok" if s["passed"] == s["total"] else ("FAIL" if s["passed"] == 0 else "partial")
        lines.append(f"{op:<32} {s['passed']:>5} {s['total']:>5}  {status}")
    if show_failures:
        lines.append("")
        lines.append("failures:")
        for f in summary["failures"]:
            lines.append(f"  {f['name']} [{f['stage']}]: {f['reason']}")
    lines.append("")
    lines.append(f"TOTAL: {summary['passed']}/{summary['total']} cases pass "
                 f"({100 * summary['pass_rate']:.1f}%), {summary['failed']} fail")
    return "\n".join(lines)


if __name__ == "__main__":
    # same options as `portc conformance`
    from portc.compiler.cli import main

    raise SystemExit(main(["conformance", *sys.argv[1:]]))
