"""Programmatic API (portc.compile / verify / import_model) and the ONNX backend interface."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import portc
from portc.compiler.errors import InputError, ShapeError, UnsupportedOpsError
from portc.compiler.frontends.onnx.importer import import_onnx, load_onnx
from portc.compiler.onnx_backend import PortcBackend


class TwoLayer(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(16, 32)
        self.fc2 = torch.nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.fc2(torch.nn.functional.gelu(self.fc1(x))), dim=-1)


def test_portc_compile_takes_a_torch_module_and_runs_it(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TwoLayer().eval()
    x = torch.randn(3, 16)
    cm = portc.compile(model, (x,), target="reference", out_dir=tmp_path / "b")
    assert (tmp_path / "b" / "manifest.json").is_file()
    (name,) = cm.program.input_names
    out = cm.run({name: x.numpy()})
    np.testing.assert_allclose(next(iter(out.values())), model(x).detach().numpy(), rtol=1e-5,
                               atol=1e-6)


def test_portc_verify_reports_per_output_errors() -> None:
    torch.manual_seed(1)
    rep = portc.verify(TwoLayer().eval(), "reference", example_inputs=(torch.randn(2, 16),))
    assert rep.ok and rep.oracle == "torch" and rep.checks[0].max_abs < 1e-5


def _two_node_model(op1: str, op2: str) -> onnx.ModelProto:
    g = helper.make_graph(
        [helper.make_node(op1, ["x"], ["t"], name="first", domain="custom"),
         helper.make_node(op2, ["t"], ["y"], name="second", domain="custom")], "u",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18),
                                               helper.make_opsetid("custom", 1)])


def test_all_unsupported_ops_are_reported_at_once_with_node_names() -> None:
    with pytest.raises(UnsupportedOpsError) as e:
        import_onnx(_two_node_model("Foo", "Bar"))
    msg = str(e.value)
    assert "node 'first' (custom.Foo)" in msg and "node 'second' (custom.Bar)" in msg


def test_input_without_shape_is_a_shape_error() -> None:
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "s",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    with pytest.raises(ShapeError, match="graph input 'x' has no shape"):
        import_onnx(helper.make_model(g))


def test_wrong_input_dtype_is_named() -> None:
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "s",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    cm = portc.compile(helper.make_model(g), target="reference")
    with pytest.raises(InputError, match="input 'x' has dtype float64"):
        cm.run({"x": np.ones(2)})


def test_external_data_inside_model_folder_loads(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    w = numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32), "W")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "e",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 64])], [w])
    onnx.save(helper.make_model(g), tmp_path / "m.onnx", save_as_external_data=True,
              location="m.data", size_threshold=0)
    assert (tmp_path / "m.data").is_file()
    res = import_onnx(load_onnx(tmp_path / "m.onnx"))
    x = rng.standard_normal((2, 64)).astype(np.float32)
    from portc.runtimes.reference.interpreter import run_program

    y = run_program(res.program, {"x": x})["y"]
    np.testing.assert_allclose(y, x @ numpy_helper.to_array(w), rtol=1e-5, atol=1e-5)


def test_onnx_backend_specialises_on_shape_inputs_and_recompiles_on_change() -> None:
    g = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"])], "r",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6]),
                           helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    rep = PortcBackend.prepare(helper.make_model(g), "reference")
    x = np.arange(12, dtype=np.float32).reshape(2, 6) + 0.5
    (y1,) = rep.run([x, np.array([3, 4])])
    (y2,) = rep.run([x, np.array([4, 3])])
    assert y1.shape == (3, 4) and y2.shape == (4, 3)
    np.testing.assert_array_equal(y2, x.reshape(4, 3))


def test_backend_devices_are_target_names() -> None:
    assert PortcBackend.supports_device("reference") and PortcBackend.supports_device("CPU")
    assert not PortcBackend.supports_device("tpu")


def test_activation_rounding_allowance_is_a_share_of_the_change_error() -> None:
    """A port of a model with run-time activation quantizers may differ from the changed
    reference by up to half the change's own error (ties rounded the other way at fp32); more
    than that, or a check that already passed, is left as it is."""
    from portc.compiler.api import OutputCheck, allow_activation_rounding

    reports = [{"name": "quantize-int8", "outputs": {"y": {"max_abs_error": 0.2, "cosine": 0.99}}}]
    within = allow_activation_rounding(OutputCheck("y", 0.06, 3.0, False), reports)
    assert within.ok and "within 0.5x of the change's own error 0.2" in within.detail
    beyond = allow_activation_rounding(OutputCheck("y", 0.11, 3.0, False), reports)
    assert not beyond.ok
    other = allow_activation_rounding(OutputCheck("z", 1e-9, 0.0, False), reports)
    assert not other.ok  # no change error known for this output: nothing to share


def test_user_tolerances_are_applied_as_given_to_changed_models(tmp_path: Path) -> None:
    """The allowance belongs to the target defaults only: an impossible --atol still fails."""
    from portc.compiler.api import verify
    from portc.compiler.model_changes import ModelChangeOptions

    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])], [w])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    change = ModelChangeOptions(quantize="int8")
    assert verify(path, "reference", changes=change).ok
    assert not verify(path, "reference", changes=change, rtol=0.0, atol=-1.0).ok
