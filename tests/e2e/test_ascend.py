"""Target ``ascend`` end to end: ``portc verify --target ascend`` (npusim, race/bounds/alignment
checks on) against onnxruntime / torch on seeded random inputs.

Tolerances: matmuls and convolutions run on the cube with fp16 operands and fp32 accumulation
(ATC's default ``--precision_mode`` for fp32 models), so outputs carry fp16 operand rounding:
about 2^-11 relative per operand, growing with the reduction length. The examples are checked
at ``rtol=1e-2, atol=1e-3`` (the fp32 reference target uses 1e-4/1e-5); deep models at
``atol=1e-2`` on their normalised outputs.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import onnx
import pytest

from portc.compiler.api import verify
from tests.conftest import portc_cli

LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


@pytest.mark.parametrize("name", ["mlp", "small_cnn", "tiny_transformer"])
@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_example_verifies_on_ascend(examples_dir: Path, name: str, fmt: str) -> None:
    rep = verify(examples_dir / f"{name}.{fmt}", "ascend", seed=5, rtol=1e-2, atol=1e-3)
    assert rep.ok, rep.table()
    assert rep.stats["total_cycles"] > 0


def test_cnn_convs_run_on_the_cube(examples_dir: Path) -> None:
    rep = verify(examples_dir / "small_cnn.onnx", "ascend", seed=1, rtol=1e-2, atol=1e-3)
    assert rep.ok, rep.table()
    rows = rep.stats["per_launch"]
    # the two convs; the 1x32x10 classifier (320 MACs, under one 16x16x16 cube step) stays on
    # the vector path in fp32
    assert sum(r["role"] == "gemm" for r in rows) == 2
    assert 0 < rep.stats["cube_utilisation"] <= 1
    assert not rep.stats["aicpu_launches"]


def test_cli_compiles_a_bundle_with_manifest_and_trace(examples_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    subprocess.run([*portc_cli(), "compile", str(examples_dir / "mlp.onnx"), "--target", "ascend",
                    "--soc", "910b", "-o", str(out)], check=True, capture_output=True)
    man = json.loads((out / "manifest.json").read_text())
    assert (out / "program.npu.mlir").is_file() and (out / "kernels.kernel.mlir").is_file()
    launches = man["npu"]["launches"]
    assert {la["core"] for la in launches} >= {"aiv", "aic"}
    assert all(la["block_dim"] >= 1 and la["gm_args"] for la in launches)
    assert man["buffers"]


def test_unknown_soc_is_reported(examples_dir: Path, tmp_path: Path) -> None:
    r = subprocess.run([*portc_cli(), "compile", str(examples_dir / "mlp.onnx"), "--target",
                        "ascend", "--soc", "310p", "-o", str(tmp_path / "b")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "unknown NPU SoC '310p'" in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_minilm_encoder_verifies_on_ascend(minilm_dir: Path, fmt: str) -> None:
    rep = verify(minilm_dir / f"minilm_encoder.{fmt}", "ascend", seed=2, rtol=1e-2, atol=1e-2)
    assert rep.ok, rep.table()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["squeezenet", "inception_v1", "resnet50"])
def test_light_model_verifies_on_ascend_with_bf16_cube(name: str) -> None:
    """The light_* models carry random weights whose activations leave fp16's range (2e6 in
    squeezenet's last convolution: fp16 operands overflow to inf), so the cube runs bf16
    (``--precision bf16``, fp32 range) as ATC users do for such models."""
    rep = verify(LIGHT_DIR / f"light_{name}.onnx", "ascend", seed=1, rtol=1e-2, atol=1e-2,
                 options={"precision": "bf16"})
    assert rep.ok, rep.table()


def test_trace_option_writes_one_chrome_trace_per_launch(examples_dir: Path,
                                                         tmp_path: Path) -> None:
    trace = tmp_path / "trace.json"
    r = subprocess.run([*portc_cli(), "verify", str(examples_dir / "mlp.onnx"), "--target",
                        "ascend", "--rtol", "1e-2", "--atol", "1e-3", "--trace", str(trace)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    files = sorted(tmp_path.glob("trace.*.json"))
    assert files
    events = json.loads(files[0].read_text())["traceEvents"]
    assert any(e.get("ph") == "X" for e in events)
