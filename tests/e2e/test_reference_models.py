"""Target ``reference`` end to end: examples, the onnx package's light_* CNNs and the
BERT-style encoder verify against onnxruntime / torch on seeded random inputs."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from portc.compiler.api import verify

LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
LIGHT_MODELS = sorted(p.stem.removeprefix("light_") for p in LIGHT_DIR.glob("light_*.onnx"))


@pytest.mark.parametrize("name", ["mlp", "small_cnn", "tiny_transformer"])
@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_example_verifies_on_reference(examples_dir: Path, name: str, fmt: str) -> None:
    rep = verify(examples_dir / f"{name}.{fmt}", "reference", seed=5)
    assert rep.ok, rep.table()


def test_light_models_are_present() -> None:
    assert {"resnet50", "squeezenet", "inception_v1", "densenet121", "vgg19"} <= set(LIGHT_MODELS)


@pytest.mark.slow
@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model_verifies_on_reference(name: str) -> None:
    rep = verify(LIGHT_DIR / f"light_{name}.onnx", "reference", seed=1, rtol=1e-4, atol=1e-5)
    assert rep.ok, rep.table()


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_minilm_encoder_verifies_on_reference(minilm_dir: Path, fmt: str) -> None:
    rep = verify(minilm_dir / f"minilm_encoder.{fmt}", "reference", seed=2, rtol=1e-4, atol=1e-4)
    assert rep.ok, rep.table()


@pytest.mark.slow
def test_minilm_int8_per_token_keeps_cosine_above_0_99(minilm_dir: Path) -> None:
    from portc.compiler.model_changes import ModelChangeOptions

    rep = verify(minilm_dir / "minilm_encoder.onnx", "reference", seed=3,
                 changes=ModelChangeOptions(quantize="int8", act_granularity="per_token"))
    assert rep.ok, rep.table()
    (quant,) = rep.changes
    assert quant["outputs"]["last_hidden_state"]["cosine"] >= 0.99


@pytest.mark.slow
def test_minilm_int8_static_per_tensor_keeps_cosine_above_0_99(minilm_dir: Path) -> None:
    """The default ``--quantize int8``: static per-tensor activation scales (SmoothQuant,
    clipping and zero point tuned per layer) verify bit-exactly against the quantized
    reference and keep cosine >= 0.99 with the float encoder, measured on an input the
    calibration never saw."""
    from portc.compiler.model_changes import ModelChangeOptions

    rep = verify(minilm_dir / "minilm_encoder.onnx", "reference", seed=3, rtol=0, atol=0,
                 changes=ModelChangeOptions(quantize="int8"))
    assert rep.ok, rep.table()
    (quant,) = rep.changes
    assert quant["activations"].startswith("per_tensor")
    assert quant["outputs"]["last_hidden_state"]["cosine"] >= 0.99
    # every constant-weight matmul (6 per layer) is tuned and at most the fallback's few stay
    assert len(quant["int8_layers"]) == 36
    assert quant["quantized_ops"]["matmuls_int8"] >= 36 - 4


@pytest.mark.slow
def test_minilm_w4_gptq_keeps_cosine_above_0_98(minilm_dir: Path) -> None:
    from portc.compiler.model_changes import ModelChangeOptions

    rep = verify(minilm_dir / "minilm_encoder.onnx", "reference", seed=0,
                 changes=ModelChangeOptions(quantize="w4", group_size=64, gptq=True))
    assert rep.ok, rep.table()
    (quant,) = rep.changes
    assert quant["outputs"]["last_hidden_state"]["cosine"] >= 0.98


@pytest.mark.slow
def test_minilm_2_4_pruned_verifies_against_its_pruned_reference(minilm_dir: Path) -> None:
    from portc.compiler.model_changes import ModelChangeOptions

    rep = verify(minilm_dir / "minilm_encoder.onnx", "reference", seed=4,
                 changes=ModelChangeOptions(sparsity="2:4"))
    assert rep.ok, rep.table()
    (prune,) = rep.changes
    # every constant-weight matmul loses half its MACs; attention matmuls (activations) stay
    assert prune["macs_saved"] > 0.45 * prune["macs_before"]


@pytest.mark.slow
@pytest.mark.parametrize("change", ["sparsity=2:4", "quantize=fp8"])
def test_minilm_changed_and_decomposed_for_targets_is_bit_identical(minilm_dir: Path,
                                                                    change: str) -> None:
    """What hardware targets compile: the changed encoder after ``decompose-for-targets`` holds
    only core graph ops and computes exactly what the changed model's reference computes."""
    import numpy as np

    from portc.compiler.api import import_model, random_inputs
    from portc.compiler.model_changes import ModelChangeOptions, apply_model_changes
    from portc.compiler.pipeline import parse_pipeline, run_passes
    from portc.compiler.program import Program
    from portc.runtimes.reference.interpreter import run_program

    program = import_model(minilm_dir / "minilm_encoder.onnx").program
    x = random_inputs(program, 4)
    key, value = change.split("=")
    changed, _ = apply_model_changes(program, ModelChangeOptions(**{key: value}), 4, x)
    decomposed = run_passes(Program(changed.module.clone(), changed.weights.subset(
        set(changed.weights))), parse_pipeline("decompose-for-targets"))
    assert {o.name.split(".")[0] for o in decomposed.main.walk()} == {"graph", "func"}
    want, got = run_program(changed, x), run_program(decomposed, x)
    for name, ref in want.items():
        np.testing.assert_array_equal(got[name], ref)
