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
#: (target, runtime, change): every target gets the encoder quantized or pruned
ENCODER_RUNS = [("cuda", None, "int8"), ("cuda", None, "2:4"), ("ascend", None, "w4"),
                ("ascend", None, "int8-per-token"), ("rvv", "qemu", "int8"),
                ("rvv", "qemu", "w4")]


@pytest.mark.slow
@pytest.mark.parametrize(("target", "runtime", "change"), ENCODER_RUNS)
def test_changed_minilm_encoder_verifies_on_target(minilm_dir: Path, target: str,
                                                   runtime: str | None, change: str) -> None:
    if runtime == "qemu":
        from portc.runtimes.qemu import unavailable

        need(unavailable() is None, f"qemu runtime ({unavailable()})")
    opts = CHANGES[change]
    if change == "w4":
        opts = ModelChangeOptions(quantize="w4", group_size=64)
    rep = verify(minilm_dir / "minilm_encoder.onnx", target, seed=2, rtol=1e-2, atol=2e-2,
                 runtime=runtime, changes=opts)
    if opts.sparsity:  # float arithmetic throughout: the tolerances above apply
        assert rep.ok, rep.table()
        return
    # static quantizers may round a few fp32 activations to the neighbouring step (module
    # doc): the port must reproduce the changed model far inside the change's own error
    quant_err = rep.changes[-1]["outputs"]["last_hidden_state"]["max_abs_error"]
    for c in rep.checks:
        assert c.max_abs < 0.3 * quant_err, f"{quant_err}\n{rep.table()}"
    assert rep.changes[-1]["outputs"]["last_hidden_state"]["cosine"] > 0.98
