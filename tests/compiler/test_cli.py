"""The portc CLI end to end: bundles, run, verify, opt, and clean failures on bad input."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import portc_cli


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*portc_cli(), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


@pytest.fixture
def small_model(tmp_path: Path) -> Path:
    """y = relu(x @ W + b), z = softmax(y): enough to exercise the whole flow."""
    rng = np.random.default_rng(7)
    w = numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["xw"], name="mm"),
             helper.make_node("Add", ["xw", "b"], ["pre"], name="add"),
             helper.make_node("Relu", ["pre"], ["y"], name="relu"),
             helper.make_node("Softmax", ["y"], ["z"], name="softmax", axis=-1)]
    graph = helper.make_graph(
        nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 4])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    path = tmp_path / "model" / "small.onnx"
    path.parent.mkdir()
    onnx.save(model, path)
    return path


def _files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_compile_writes_bundle_only_inside_output_dir(tmp_path: Path, small_model: Path) -> None:
    before = _files_under(tmp_path)
    r = _cli("compile", str(small_model), "--target", "reference", "--dim", "batch=3", "-o",
             str(tmp_path / "bundle"))
    assert r.returncode == 0, r.stderr
    new = _files_under(tmp_path) - before
    assert new and all(p.is_relative_to(tmp_path / "bundle") for p in new)
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["target"] == "reference"
    assert manifest["inputs"] == [{"name": "x", "shape": [3, 8], "dtype": "float32"}]
    assert manifest["dim_bindings"] == {"batch": 3}
    assert len(manifest["source_sha256"]) == 64


def test_run_bundle_matches_onnxruntime(tmp_path: Path, small_model: Path) -> None:
    import onnxruntime as ort

    assert _cli("compile", str(small_model), "--dim", "batch=2", "-o",
                str(tmp_path / "b")).returncode == 0
    x = np.random.default_rng(3).standard_normal((2, 8)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    r = _cli("run", str(tmp_path / "b"), "--inputs", str(tmp_path / "in.npz"), "--outputs",
             str(tmp_path / "out.npz"))
    assert r.returncode == 0, r.stderr
    got = np.load(tmp_path / "out.npz")
    sess = ort.InferenceSession(str(small_model), providers=["CPUExecutionProvider"])
    ref_y, ref_z = sess.run(["y", "z"], {"x": x})
    np.testing.assert_allclose(got["y"], ref_y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["z"], ref_z, rtol=1e-5, atol=1e-6)


def test_verify_prints_errors_and_writes_junit(tmp_path: Path, small_model: Path) -> None:
    junit = tmp_path / "report.xml"
    r = _cli("verify", str(small_model), "--target", "reference", "--dim", "batch=5",
             "--seed", "11", "--junit", str(junit))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "max abs err" in r.stdout and "PASS" in r.stdout
    xml = junit.read_text()
    assert 'tests="2"' in xml and 'failures="0"' in xml


def test_verify_each_names_no_pass_on_a_correct_pipeline(tmp_path: Path,
                                                          small_model: Path) -> None:
    r = _cli("verify", str(small_model), "--verify-each", "--dim", "batch=2")
    assert r.returncode == 0, r.stdout + r.stderr


def test_verify_prints_the_tolerance_it_used(small_model: Path) -> None:
    """No --rtol/--atol: the target's default for its precision, named in the report; one
    given: that one, the other from the target."""
    r = _cli("verify", str(small_model), "--target", "cuda", "--precision", "fp16",
             "--dim", "batch=2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert ("tolerance: rtol 0.01, atol 0.001 (target default (cuda --precision fp16: matmul "
            "operands in fp16, fp32 accumulation))") in r.stdout
    r = _cli("verify", str(small_model), "--dim", "batch=2", "--atol", "1e-6")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "tolerance: rtol 0.0001, atol 1e-06 (given, the other from the target default " \
        "(fp32 arithmetic))" in r.stdout


def test_verify_fails_with_exit_1_when_tolerance_is_impossible(small_model: Path) -> None:
    r = _cli("verify", str(small_model), "--rtol", "0", "--atol", "-1")
    assert r.returncode == 1 and "MISMATCH" in r.stdout


def test_opt_runs_named_passes_and_prints_ir(tmp_path: Path) -> None:
    ir = tmp_path / "in.mlir"
    ir.write_text("""builtin.module {
  func.func @main(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
    %0 = graph.transpose %x {perm = array<i64: 1, 0>} : (tensor<2x3xf32>) -> tensor<3x2xf32>
    %1 = graph.transpose %0 {perm = array<i64: 1, 0>} : (tensor<3x2xf32>) -> tensor<2x3xf32>
    %2 = graph.unary %1 {fn = "exp"} : (tensor<2x3xf32>) -> tensor<2x3xf32>
    func.return %2 : tensor<2x3xf32>
  }
}
""")
    r = _cli("opt", str(ir), "-p", "canonicalize,dce", "--print-ir-after-all")
    assert r.returncode == 0, r.stderr
    final = r.stdout.split("IR Dump After dce")[-1]
    assert "graph.transpose" not in final and "graph.unary %x" in final


def test_targets_lists_reference_with_its_runtime() -> None:
    r = _cli("targets")
    assert r.returncode == 0 and "reference" in r.stdout and "interpreter" in r.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["compile", "{missing}", "-o", "{out}"], "does not exist"),
        (["compile", "{garbage}", "-o", "{out}"], "not a valid ONNX model"),
        (["compile", "{truncated}", "-o", "{out}"], "not a valid ONNX model"),
        (["compile", "{model}", "--target", "tpu", "-o", "{out}"], "unknown target 'tpu'"),
        (["compile", "{model}", "--dim", "batch", "-o", "{out}"], "NAME=INT"),
        (["opt", "{ir}", "-p", "no-such-pass"], "unknown pass 'no-such-pass'"),
        (["run", "{tmp}", "--inputs", "{missing}"], "not a portc bundle"),
        (["verify", "{model}", "--inputs", "{garbage}"], "not a readable .npz"),
        (["verify", "{model}", "--inputs", "{wrongnpz}"], "input 'x' has shape"),
        (["compile", "{unsupported}", "-o", "{out}"], "node 'fft1' (DFT-like"),
        (["compile", "{model.pt}", "-o", "{out}"], "unknown model format"),
    ],
)
def test_bad_input_exits_2_with_one_clear_line(tmp_path: Path, small_model: Path,
                                               args: list[str], message: str) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\xffnot a model at all" * 10)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(small_model.read_bytes()[:50])
    ir = tmp_path / "x.mlir"
    ir.write_text("builtin.module {\n}\n")
    np.savez(tmp_path / "wrong.npz", x=np.ones((7, 7), np.float32))
    unsupported = tmp_path / "unsupported.onnx"
    g = helper.make_graph([helper.make_node("MyFancyOp", ["x"], ["y"], name="fft1",
                                            domain="com.example")], "u",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                                  helper.make_opsetid("com.example", 1)]),
              unsupported)
    pt = tmp_path / "model.pt"
    pt.write_bytes(b"x")
    subst = {"{missing}": str(tmp_path / "nope.onnx"), "{garbage}": str(garbage),
             "{truncated}": str(truncated), "{model}": str(small_model),
             "{out}": str(tmp_path / "out"), "{ir}": str(ir), "{tmp}": str(tmp_path),
             "{wrongnpz}": str(tmp_path / "wrong.npz"), "{unsupported}": str(unsupported),
             "{model.pt}": str(pt)}
    message = message.replace("(DFT-like", "(com.example.MyFancyOp")
    r = _cli(*[subst.get(a, a) for a in args])
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_debug_flag_shows_traceback(tmp_path: Path) -> None:
    r = _cli("--debug", "compile", str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "o"))
    assert r.returncode == 2 and "Traceback" in r.stderr


def test_external_data_outside_model_folder_is_refused(tmp_path: Path) -> None:
    w = numpy_helper.from_array(np.ones((4,), np.float32), "W")
    w.data_location = TensorProto.EXTERNAL
    entry = w.external_data.add()
    entry.key, entry.value = "location", "../secret.bin"
    w.ClearField("raw_data")
    (tmp_path / "secret.bin").write_bytes(np.ones(4, np.float32).tobytes())
    g = helper.make_graph([helper.make_node("Add", ["x", "W"], ["y"])], "e",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [w])
    d = tmp_path / "m"
    d.mkdir()
    onnx.save(helper.make_model(g, ir_version=10), d / "m.onnx")
    r = _cli("compile", str(d / "m.onnx"), "-o", str(tmp_path / "out"))
    assert r.returncode == 2 and "outside the model's folder" in r.stderr


def test_huge_declared_tensor_is_refused_before_allocation(tmp_path: Path) -> None:
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "h",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1 << 20, 1 << 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1 << 20, 1 << 16])])
    onnx.save(helper.make_model(g), tmp_path / "h.onnx")
    r = _cli("compile", str(tmp_path / "h.onnx"), "-o", str(tmp_path / "out"))
    assert r.returncode == 2 and "over the" in r.stderr and "limit" in r.stderr
