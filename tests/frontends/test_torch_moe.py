"""Sparse-MoE recognition in the torch.export frontend, against transformers' own Mixtral.

transformers 5.x exports the Mixtral sparse-MoE block as a data-dependent grouped-GEMM dispatch
that portc's static core ops cannot express; the frontend imports each block as one ``moe.moe``.
These tests check the whole tiny model (attention, RMSNorm, rotary and the MoE blocks) against
torch on fresh inputs, that the ``moe-routing`` lowering leaves the result unchanged, and that a
block the recogniser cannot prove equivalent (a non-SiLU expert activation) is refused with a
reason rather than mis-imported."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

from portc.compiler.errors import UnsupportedOpsError  # noqa: E402
from portc.compiler.frontends.torch_export import TorchImportResult, import_torch_module  # noqa: E402
from portc.compiler.pipeline import run_passes  # noqa: E402
from portc.dialects import moe  # noqa: E402
from portc.passes.moe_routing import MoERoutingPass  # noqa: E402
from portc.runtimes.reference.interpreter import run_program  # noqa: E402
from tests.frontends.causal_lm import LogitsOnly  # noqa: E402

RTOL, ATOL = 1e-4, 1e-4
SEQ = 8


def _mixtral(hidden_act: str = "silu") -> nn.Module:
    torch.manual_seed(0)
    cfg = transformers.MixtralConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, vocab_size=100,
        max_position_embeddings=64, hidden_act=hidden_act)
    return LogitsOnly(transformers.MixtralForCausalLM(cfg).eval()).eval()


@pytest.fixture(scope="module")
def mixtral() -> tuple[nn.Module, TorchImportResult]:
    model = _mixtral()
    ids = torch.randint(0, 100, (1, SEQ), generator=torch.Generator().manual_seed(1))
    return model, import_torch_module(model, (ids,))


def _moe_ops(result: TorchImportResult) -> list[moe.MoEOp]:
    return [op for op in result.program.module.walk() if isinstance(op, moe.MoEOp)]


def _run(program, ids: torch.Tensor) -> np.ndarray:
    return run_program(program, {"input_ids": ids.numpy()})["output0"]


def test_each_moe_block_becomes_one_moe_op(mixtral):
    _, result = mixtral
    ops = _moe_ops(result)
    assert len(ops) == 2  # one per decoder layer
    for op in ops:
        assert op.top_k.value.data == 2
        assert bool(op.normalize.value.data)  # Mixtral renormalises the top-k weights
        assert op.capacity_factor.value.data == 0.0
        assert [tuple(o.type.get_shape()) for o in op.operands] == [
            (SEQ, 32), (32, 4), (4, 32, 64), (4, 32, 64), (4, 64, 32)]


def test_mixtral_logits_match_torch_before_and_after_moe_routing(mixtral):
    model, result = mixtral
    gen = torch.Generator().manual_seed(1234)
    cases = [torch.randint(0, 100, (1, SEQ), generator=gen) for _ in range(3)]
    with torch.no_grad():
        refs = [model(ids).numpy() for ids in cases]
    before = [_run(result.program, ids) for ids in cases]
    for got, ref in zip(before, refs, strict=True):
        np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL)

    program = run_passes(result.program, [MoERoutingPass()])
    assert not _moe_ops(result)  # lowered to core ops
    for ids, ref, pre in zip(cases, refs, before, strict=True):
        got = _run(program, ids)
        np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(got, pre, rtol=RTOL, atol=ATOL)


def test_verify_api_on_mixtral():
    import portc

    model = _mixtral()
    ids = torch.randint(0, 100, (1, SEQ), generator=torch.Generator().manual_seed(7))
    report = portc.verify(model, "reference", example_inputs=(ids,),
                          inputs={"input_ids": ids.numpy()}, rtol=RTOL, atol=ATOL)
    assert report.ok, report.table()


def test_unrecognised_expert_activation_is_refused_with_reason():
    model = _mixtral(hidden_act="gelu")
    ids = torch.randint(0, 100, (1, SEQ))
    with pytest.raises(UnsupportedOpsError, match="not silu"):
        import_torch_module(model, (ids,))


def test_capacity_factor_reports_drops_and_lowered_form_matches_kernel() -> None:
    """--moe-capacity-factor: the reference target runs the moe-routing lowering, which must
    equal moe.moe's direct kernel with the same capacity; dropped assignments are reported."""
    from portc.compiler.api import verify
    from portc.compiler.model_changes import ModelChangeOptions

    model = _mixtral()
    ids = torch.randint(0, 100, (1, 8), generator=torch.Generator().manual_seed(9))
    rep = verify(model, "reference", example_inputs=(ids,),
                 changes=ModelChangeOptions(moe_capacity_factor=0.5))
    assert rep.ok, rep.table()
    (info,) = rep.changes
    assert info["moe_ops"] == 2
    assert info["moe0"]["dropped"] > 0
    assert sum(info["moe0"]["tokens_per_expert"]) == 8 * 2
    assert info["outputs"][rep.checks[0].name]["cosine"] < 1.0
