"""The conformance runner counts every ONNX node case and the reference target clears 80%."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from portc.compiler.conformance import compare_outputs, load_cases, run_conformance, summarize
from tests.conftest import portc_cli


def test_every_onnx_node_case_is_in_the_denominator() -> None:
    results = run_conformance("reference", ops={"Relu", "TfIdfVectorizer"}, progress=False)
    summary = summarize(results)
    assert summary["total"] == len(results) == summary["passed"] + summary["failed"]
    assert summary["ops"]["Relu"]["passed"] == summary["ops"]["Relu"]["total"]
    assert summary["ops"]["TfIdfVectorizer"]["passed"] == 0  # unsupported ops count as failures


def test_compare_outputs_flags_dtype_and_value_differences() -> None:
    import numpy as np

    a = np.ones(3, np.float32)
    assert compare_outputs([a], [a.copy()], 1e-3, 1e-7) is None
    assert "dtype" in compare_outputs([a], [a.astype(np.float64)], 1e-3, 1e-7)
    assert "max abs error" in compare_outputs([a], [a + 1], 1e-3, 1e-7)


def test_cli_json_output_is_machine_readable() -> None:
    r = subprocess.run([*portc_cli(), "conformance", "--target", "reference", "--ops", "Abs,Add",
                        "--json", "--jobs", "1"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["ops"]["Abs"]["total"] == 1 and data["total"] == data["passed"] + data["failed"]


@pytest.mark.slow
def test_reference_target_passes_at_least_80_percent_of_all_cases() -> None:
    total = len(load_cases())
    results = run_conformance("reference", progress=False, jobs=os.cpu_count() or 1)
    summary = summarize(results)
    assert summary["total"] == total
    assert summary["pass_rate"] >= 0.80, f"{summary['passed']}/{total}"


@pytest.mark.slow
def test_shared_kernel_lowering_passes_at_least_85_percent_of_all_cases() -> None:
    """Every hardware target starts from this lowering: its pass rate bounds theirs."""
    results = run_conformance("reference", runtime="kernels", progress=False,
                              jobs=os.cpu_count() or 1)
    summary = summarize(results)
    assert summary["pass_rate"] >= 0.85, f"{summary['passed']}/{summary['total']}"
