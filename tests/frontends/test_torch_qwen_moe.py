"""Qwen2-MoE in the torch.export frontend, against transformers' own model.

Qwen2-MoE's sparse block is Mixtral's routed experts plus a shared expert (a dense SwiGLU MLP)
scaled by ``sigmoid(shared_expert_gate(x))`` and added to the routed output. The recogniser must
replace only the routed part with ``moe.moe``; the shared expert, its gate and the sum stay
ordinary ops. These tests check the whole tiny model against torch on fresh inputs, before and
after the ``moe-routing`` lowering, for both settings of ``norm_topk_prob``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

from portc.compiler.frontends.torch_export import TorchImportResult, import_torch_module  # noqa: E402
from portc.compiler.pipeline import run_passes  # noqa: E402
from portc.compiler.program import Program  # noqa: E402
from portc.dialects import moe  # noqa: E402
from portc.passes.moe_routing import MoERoutingPass  # noqa: E402
from portc.runtimes.reference.interpreter import run_program  # noqa: E402
from tests.frontends.causal_lm import LogitsOnly  # noqa: E402

RTOL, ATOL = 1e-4, 1e-4
SEQ = 8


def _qwen2_moe(norm_topk_prob: bool) -> nn.Module:
    torch.manual_seed(0)
    cfg = transformers.Qwen2MoeConfig(
        hidden_size=32, intermediate_size=64, moe_intermediate_size=32,
        shared_expert_intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, num_experts=4, num_experts_per_tok=2, vocab_size=100,
        max_position_embeddings=64, decoder_sparse_step=1, mlp_only_layers=[],
        norm_topk_prob=norm_topk_prob)
    return LogitsOnly(transformers.Qwen2MoeForCausalLM(cfg).eval()).eval()


@pytest.fixture(scope="module", params=[False, True], ids=["plain_topk", "norm_topk"])
def qwen(request: pytest.FixtureRequest) -> tuple[nn.Module, TorchImportResult, bool]:
    model = _qwen2_moe(request.param)
    ids = torch.randint(0, 100, (1, SEQ), generator=torch.Generator().manual_seed(1))
    return model, import_torch_module(model, (ids,)), request.param


def _moe_ops(program: Program) -> list[moe.MoEOp]:
    return [op for op in program.module.walk() if isinstance(op, moe.MoEOp)]


def _run(program: Program, ids: torch.Tensor) -> np.ndarray:
    return run_program(program, {"input_ids": ids.numpy()})["output0"]


def test_only_the_routed_experts_become_moe_ops(
        qwen: tuple[nn.Module, TorchImportResult, bool]) -> None:
    _, result, norm = qwen
    ops = _moe_ops(result.program)
    assert len(ops) == 2  # one per decoder layer; shared experts stay ordinary ops
    for op in ops:
        assert op.top_k.value.data == 2
        assert bool(op.normalize.value.data) is norm
        assert op.capacity_factor.value.data == 0.0
        assert [tuple(o.type.get_shape()) for o in op.operands] == [
            (SEQ, 32), (32, 4), (4, 32, 32), (4, 32, 32), (4, 32, 32)]


def test_qwen2_moe_logits_match_torch_before_and_after_moe_routing(
        qwen: tuple[nn.Module, TorchImportResult, bool]) -> None:
    model, result, _ = qwen
    gen = torch.Generator().manual_seed(1234)
    cases = [torch.randint(0, 100, (1, SEQ), generator=gen) for _ in range(3)]
    with torch.no_grad():
        refs = [model(ids).numpy() for ids in cases]
    before = [_run(result.program, ids) for ids in cases]
    for got, ref in zip(before, refs, strict=True):
        np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL)

    program = run_passes(result.program, [MoERoutingPass()])
    assert not _moe_ops(program)  # lowered to core ops
    for ids, ref, pre in zip(cases, refs, before, strict=True):
        got = _run(program, ids)
        np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(got, pre, rtol=RTOL, atol=ATOL)


def test_shared_expert_is_not_swallowed() -> None:
    """Scaling the shared experts' output projections must change the imported logits
    exactly as it changes torch's: the shared path is imported, not dropped with the block."""
    model = _qwen2_moe(False)
    with torch.no_grad():
        for layer in model.model.model.layers:
            layer.mlp.shared_expert.down_proj.weight.mul_(3.0)
    ids = torch.randint(0, 100, (1, SEQ), generator=torch.Generator().manual_seed(5))
    result = import_torch_module(model, (ids,))
    with torch.no_grad():
        ref = model(ids).numpy()
    np.testing.assert_allclose(_run(result.program, ids), ref, rtol=RTOL, atol=ATOL)
