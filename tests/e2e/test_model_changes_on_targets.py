"""Every hardware target compiles and verifies what the model-changing passes produce: int8,
w4, w2 and fp8 quantization, 2:4 and unstructured pruning, and MoE (a tiny Mixtral through the
PyTorch frontend). Each run is checked against the reference interpreter of the *changed* model
on seeded random inputs, and must also state its accuracy against the unchanged model.

Tolerances: cuda and rvv compute in fp32 where the reference computes in float64, so a static
int8 activation quantizer may round a handful of values to the neighbouring step (x/scale within
an fp32 ulp of a .5 boundary); the small models here have no such ties at these seeds and are
checked at fp32 tolerances. The ascend cube multiplies in fp16 (ATC's default precision mode),
hence its wider tolerances. The MiniLM encoder runs (slow) compare within a tenth of the
quantization's own error against the float model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from portc.compiler.api import verify
from portc.compiler.model_changes import ModelChangeOptions
from tests.conftest import need

#: target -> (runtime, rtol, atol) for the small models
TARGETS = {"cuda": (None, 1e-4, 1e-5), "rvv": (None, 1e-4, 1e-5),
           "ascend": (None, 1e-2, 1e-3)}

CHANGES = {
    "int8": ModelChangeOptions(quantize="int8"),
    "int8-per-token": ModelChangeOptions(quantize="int8", act_granularity="per_token"),
    "w4": ModelChangeOptions(quantize="w4", group_size=32),
    "w2": ModelChangeOptions(quantize="w2", group_size=32),
    "fp8": ModelChangeOptions(quantize="fp8"),
    "2:4": ModelChangeOptions(sparsity="2:4"),
    "sparse-0.7": ModelChangeOptions(sparsity="0.7"),
}


def _check_reports(rep: object, change: str) -> None:
    changes = rep.changes  # type: ignore[attr-defined]
    assert changes, "a changed model must report what the change did"
    outs = changes[-1]["outputs"]
    assert all(0.0 < v["cosine"] <= 1.0 + 1e-9 for v in outs.values()), outs
    if change in ("2:4", "sparse-0.7"):
        assert changes[-1]["macs_saved"] > 0


@pytest.mark.parametrize("change", list(CHANGES))
@pytest.mark.parametrize("target", list(TARGETS))
def test_changed_cnn_verifies_on_target(examples_dir: Path, target: str, change: str) -> None:
    runtime, rtol, atol = TARGETS[target]
    rep = verify(examples_dir / "small_cnn.onnx", target, seed=4, rtol=rtol, atol=atol,
                 runtime=runtime, changes=CHANGES[change])
    assert rep.ok, rep.table()
    assert rep.oracle == "reference interpreter of the changed model"
    _check_reports(rep, change)


@pytest.mark.parametrize("target", list(TARGETS))
def test_quantized_transformer_verifies_on_target(examples_dir: Path, target: str) -> None:
    runtime, rtol, atol = TARGETS[target]
    for change in ("int8-per-token", "w4", "2:4"):
        tol = max(atol, 1e-4)
        if target == "ascend" and change.startswith("int8"):
            # the fp16 cube's attention products (about 1e-3 off) move per-token int8
            # quantizers of the next matmuls to neighbouring steps: errors of about one step
            tol = 3e-2
        rep = verify(examples_dir / "tiny_transformer.onnx", target, seed=6, rtol=rtol,
                     atol=tol, runtime=runtime, changes=CHANGES[change])
        assert rep.ok, f"{change}\n{rep.table()}"


def test_qemu_runs_the_quantized_and_pruned_cnn(examples_dir: Path) -> None:
    from portc.runtimes.qemu import unavailable

    need(unavailable() is None, f"qemu runtime ({unavailable()})")
    for change in ("int8", "w4", "2:4"):
        rep = verify(examples_dir / "small_cnn.onnx", "rvv", seed=4, rtol=1e-4, atol=1e-5,
                     runtime="qemu", changes=CHANGES[change])
        assert rep.ok, f"{change}\n{rep.table()}"


# ------------------------------------------------------------------------------------ MoE
@pytest.fixture(scope="module")
def mixtral() -> tuple[object, object]:
    transformers = pytest.importorskip("transformers")
    import torch

    from tests.frontends.causal_lm import LogitsOnly

    torch.manual_seed(0)
    cfg = transformers.MixtralConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, vocab_size=100,
        max_position_embeddings=64)
    model = LogitsOnly(transformers.MixtralForCausalLM(cfg).eval()).eval()
    ids = torch.randint(0, 100, (1, 8), generator=torch.Generator().manual_seed(7))
    return model, ids


@pytest.mark.parametrize("target", list(TARGETS))
def test_tiny_mixtral_verifies_on_target_against_torch(mixtral: tuple, target: str) -> None:
    model, ids = mixtral
    _, rtol, atol = TARGETS[target]
    rep = verify(model, target, example_inputs=(ids,), inputs={"input_ids": ids.numpy()},
                 rtol=max(rtol, 1e-3), atol=max(atol, 1e-4))
    assert rep.ok, rep.table()
    assert rep.oracle == "torch"


@pytest.mark.parametrize("target", list(TARGETS))
def test_tiny_mixtral_with_capacity_drops_verifies_on_target(mixtral: tuple, target: str) -> None:
    model, ids = mixtral
    _, rtol, atol = TARGETS[target]
    rep = verify(model, target, example_inputs=(ids,), inputs={"input_ids": ids.numpy()},
                 rtol=max(rtol, 1e-3), atol=max(atol, 1e-4),
                 changes=ModelChangeOptions(moe_capacity_factor=0.5))
    assert rep.ok, rep.table()
    info = rep.changes[0]
    assert sum(v["dropped"] for k, v in info.items() if k.startswith("moe")
               and isinstance(v, dict)) > 0, info


# -------------------------------------------------------------------------------- MiniLM
#: (target, runtime, change): every target gets the encoder int8-quantized (each run is about
#: a minute on 2 cores; the small models above cover every change on every target; cuda 2:4,
#: ascend w4 pass too and are left out of CI for time)
ENCODER_RUNS = [("cuda", None, "int8"), ("ascend", None, "int8-per-token"),
                ("rvv", "qemu", "int8"), ("rvv", "qemu", "w4")]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a64 @ b64 / (np.linalg.norm(a64) * np.linalg.norm(b64)))


@pytest.mark.slow
@pytest.mark.parametrize(("target", "runtime", "change"), ENCODER_RUNS)
def test_changed_minilm_encoder_verifies_on_target(minilm_dir: Path, target: str,
                                                   runtime: str | None, change: str) -> None:
    """Weight-only and pruned encoders compute in float: the port must match the changed
    model's reference at the target's tolerance. With int8 activations a quantizer can round
    a perturbed value to the neighbouring step: on fp32 targets the port still lands far
    inside the change's own error; on ascend, whose fp16 cube perturbs attention by ~1e-3,
    those flips add up to the size of the quantization noise, so there the port is held to
    being as accurate a quantized model as the reference (cosine against the float model)."""
    from dataclasses import replace

    from portc.compiler.api import compile as compile_model
    from portc.compiler.api import import_model, random_inputs
    from portc.compiler.model_changes import apply_model_changes
    from portc.compiler.targets import get_target
    from portc.runtimes.reference.interpreter import run_program

    if runtime == "qemu":
        from portc.runtimes.qemu import unavailable

        need(unavailable() is None, f"qemu runtime ({unavailable()})")
    opts = CHANGES[change]
    if change == "w4":
        opts = ModelChangeOptions(quantize="w4", group_size=64)
    imported = import_model(minilm_dir / "minilm_encoder.onnx")
    feeds = random_inputs(imported.program, 2)
    changed, reports = apply_model_changes(imported.program, opts, 2, feeds)
    cm = compile_model(None, target=target, imported=replace(imported, program=changed))
    outs, _ = get_target(target).runtime(runtime).load(cm.artifact).run(feeds)
    port = outs["last_hidden_state"]
    ref = run_program(changed, feeds)["last_hidden_state"]
    flt = imported.oracle(feeds)["last_hidden_state"]
    if opts.quantize == "int8":
        change_err = float(np.max(np.abs(ref - flt)))
        port_err = float(np.max(np.abs(port - ref)))
        if target == "ascend":
            assert _cosine(port, flt) >= min(0.99, _cosine(ref, flt) - 2e-3), reports
        else:
            assert port_err < 0.3 * change_err, (port_err, change_err)
    else:
        np.testing.assert_allclose(port, ref, rtol=1e-2, atol=2e-2)
