"""--quantize / --sparsity through the CLI: the target is checked against the changed model's
reference, and the report states accuracy against the unchanged model."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import portc_cli


@pytest.fixture
def mlp(tmp_path: Path) -> Path:
    rng = np.random.default_rng(21)
    w1 = numpy_helper.from_array(rng.standard_normal((256, 512)).astype(np.float32) * 0.05, "W1")
    w2 = numpy_helper.from_array(rng.standard_normal((512, 10)).astype(np.float32) * 0.05, "W2")
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "W2"], ["logits"])]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                        [4, 256])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [4, 10])],
                          [w1, w2])
    path = tmp_path / "mlp.onnx"
    onnx.save(helper.make_model(g, ir_version=10), path)
    return path


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*portc_cli(), *args], capture_output=True, text=True, timeout=300)


def test_int8_verify_is_exact_against_changed_reference_and_reports_accuracy(mlp: Path) -> None:
    r = _cli("verify", str(mlp), "--quantize", "int8")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "reference interpreter of the changed model" in r.stdout
    cos = float(r.stdout.split("cosine=")[1].split(",")[0])
    assert cos > 0.99
    assert "weight_bytes_after" in r.stdout


def test_calibration_file_with_batch_dim_is_used(tmp_path: Path, mlp: Path) -> None:
    np.savez(tmp_path / "calib.npz",
             x=np.random.default_rng(2).standard_normal((5, 4, 256)).astype(np.float32))
    r = _cli("verify", str(mlp), "--quantize", "int8", "--calib", str(tmp_path / "calib.npz"),
             "--calib-method", "percentile")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "percentile over 5 batches" in r.stdout


def test_sparsity_2_4_halves_macs(mlp: Path) -> None:
    r = _cli("verify", str(mlp), "--sparsity", "2:4")
    assert r.returncode == 0, r.stdout + r.stderr
    before = int(r.stdout.split("macs_before: ")[1].split()[0])
    after = int(r.stdout.split("macs_after: ")[1].split()[0])
    assert after * 2 == before


def test_compile_with_w4_writes_a_smaller_bundle(tmp_path: Path, mlp: Path) -> None:
    assert _cli("compile", str(mlp), "-o", str(tmp_path / "f")).returncode == 0
    r = _cli("compile", str(mlp), "--quantize", "w4", "--group-size", "32", "-o",
             str(tmp_path / "q"))
    assert r.returncode == 0, r.stderr
    f = (tmp_path / "f" / "weights.safetensors").stat().st_size
    q = (tmp_path / "q" / "weights.safetensors").stat().st_size
    assert q < f


@pytest.mark.parametrize(("args", "msg"), [
    (["--sparsity", "1.5"], "must be 2:4 or a fraction"),
    (["--quantize", "int8", "--calib", "missing.npz"], "does not exist"),
])
def test_bad_model_change_options_exit_2(mlp: Path, args: list[str], msg: str) -> None:
    r = _cli("verify", str(mlp), *args)
    assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr


def test_w4_gptq_is_calibrated_and_reported(mlp: Path) -> None:
    r = _cli("verify", str(mlp), "--quantize", "w4", "--group-size", "32", "--gptq")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "gptq (act-order" in r.stdout and "Hessians over" in r.stdout
