"""The ``moe`` dialect and the ``moe-routing`` pass: verifier, reference kernel against
transformers' own Mixtral sparse-MoE block (an independent implementation of the routing), the
lowering against the kernel with and without capacity drops, drop statistics, and the MLIR round
trip of both the ``moe.moe`` program and its lowered form."""

from __future__ import annotations

import numpy as np
import pytest
from xdsl.parser import Parser
from xdsl.utils.exceptions import VerifyException

from portc.compiler.builder import GraphBuilder
from portc.compiler.pipeline import parse_pipeline, run_passes
from portc.compiler.program import Program, make_context
from portc.dialects import graph as g
from portc.dialects import moe
from portc.dialects.graph import TensorSpec
from portc.passes.moe_routing import MoERoutingPass, moe_drop_statistics
from portc.runtimes.reference.interpreter import run_program
from portc.runtimes.reference.kernels import run_kernel
from portc.runtimes.reference.moe_kernels import route

T, H, E, F, K = 9, 8, 4, 16, 2


def _context():
    ctx = make_context()
    if "moe" not in ctx.registered_dialect_names:
        ctx.load_dialect(moe.MoE)
    return ctx


def _weights(rng: np.random.Generator, dtype: str = "float32") -> list[np.ndarray]:
    shapes = [(H, E), (E, H, F), (E, H, F), (E, F, H)]
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def _program(weights: list[np.ndarray], props: g.Props, dtype: str = "float32") -> Program:
    b = GraphBuilder()
    x = b.add_input("x", TensorSpec((T, H), dtype))
    ws = [b.const(w, hint=n) for w, n in zip(weights, ["router", "w_gate", "w_up", "w_down"],
                                             strict=True)]
    return b.finish([("y", b.one(moe.MoEOp, [x, *ws], props, hint="moe"))])


def _specs(*shapes: tuple[int, ...]) -> list[TensorSpec]:
    return [TensorSpec(s, "float32") for s in shapes]


# ------------------------------------------------------------------------------ verifier


def test_infer_and_verifier_reject_bad_shapes():
    ok = _specs((T, H), (H, E), (E, H, F), (E, H, F), (E, F, H))
    assert moe.MoEOp.infer(ok, moe.moe_props(2)) == [TensorSpec((T, H), "float32")]
    bad = {
        "router": _specs((T, H), (H + 1, E), (E, H, F), (E, H, F), (E, F, H)),
        "experts": _specs((T, H), (H, E), (E + 1, H, F), (E + 1, H, F), (E + 1, F, H)),
        "F": _specs((T, H), (H, E), (E, H, F), (E, H, F), (E, F + 1, H)),
        "w_up": _specs((T, H), (H, E), (E, H, F), (E, H, F + 1), (E, F, H)),
        "rank": _specs((1, T, H), (H, E), (E, H, F), (E, H, F), (E, F, H)),
    }
    for why, ins in bad.items():
        with pytest.raises(VerifyException):
            moe.MoEOp.infer(ins, moe.moe_props(2))
        assert why
    for props in (moe.moe_props(0), moe.moe_props(E + 1), moe.moe_props(2, True, -1.0)):
        with pytest.raises(VerifyException):
            moe.MoEOp.infer(ok, props)
    mixed = [*ok[:4], TensorSpec((E, F, H), "float64")]
    with pytest.raises(VerifyException, match="w_down is float64"):
        moe.MoEOp.infer(mixed, moe.moe_props(2))


def test_capacity_rule():
    assert moe.expert_capacity(9, 2, 4, 0.0) == 18
    assert moe.expert_capacity(9, 2, 4, 1.0) == 5  # ceil(18 / 4)
    assert moe.expert_capacity(9, 2, 4, 1.25) == 6
    assert moe.expert_capacity(9, 2, 4, 100.0) == 18  # never more than all assignments


# ------------------------------------------------------------------------------ kernel


def _hf_mixtral_block(weights: list[np.ndarray], top_k: int):
    """transformers' MixtralSparseMoeBlock carrying ``weights`` (router [H, E], w_gate/w_up
    [E, H, F], w_down [E, F, H] mapped to its [E, 2F, H] / [E, H, F] parameters)."""
    torch = pytest.importorskip("torch")
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    cfg = MixtralConfig(hidden_size=H, intermediate_size=F, num_local_experts=E,
                        num_experts_per_tok=top_k, num_hidden_layers=1, num_attention_heads=2,
                        num_key_value_heads=1, vocab_size=16)
    blk = MixtralSparseMoeBlock(cfg).eval().double()
    router, wg, wu, wd = (torch.from_numpy(w.astype(np.float64)) for w in weights)
    with torch.no_grad():
        blk.gate.weight.copy_(router.T)
        blk.experts.gate_up_proj.copy_(torch.cat([wg, wu], dim=2).transpose(1, 2))
        blk.experts.down_proj.copy_(wd.transpose(1, 2))
    return blk


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_kernel_matches_transformers_mixtral_block(rng, top_k):
    torch = pytest.importorskip("torch")
    weights = _weights(rng, "float64")
    x = rng.standard_normal((T, H))
    blk = _hf_mixtral_block(weights, top_k)
    with torch.no_grad():
        want = blk(torch.from_numpy(x)[None]).numpy()[0]
    got = run_kernel(moe.MoEOp, moe.moe_props(top_k), [x, *weights],
                     [TensorSpec((T, H), "float64")])[0]
    # transformers computes the router softmax in float32 even for a float64 block
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_kernel_without_normalize_and_with_capacity(rng):
    """Unnormalised weights are the raw softmax probabilities (Qwen-MoE norm_topk_prob=False);
    a capacity cut removes exactly the over-capacity assignments' terms."""
    weights = _weights(rng, "float64")
    x = rng.standard_normal((T, H))
    out = [TensorSpec((T, H), "float64")]
    norm = run_kernel(moe.MoEOp, moe.moe_props(K, True), [x, *weights], out)[0]
    raw = run_kernel(moe.MoEOp, moe.moe_props(K, False), [x, *weights], out)[0]
    r = route(x, weights[0], K, False, 0.0)
    np.testing.assert_allclose(raw, norm * r.weights.sum(axis=1, keepdims=True), rtol=1e-10)

    capped = run_kernel(moe.MoEOp, moe.moe_props(K, False, 0.5), [x, *weights], out)[0]
    rc = route(x, weights[0], K, False, 0.5)
    assert (~rc.keep).any()
    # per-assignment contributions, independently of the kernel's loop
    _, wg, wu, wd = weights
    sel = rc.experts
    gate = np.einsum("th,tkhf->tkf", x, wg[sel])
    y = np.einsum("tkf,tkfh->tkh", gate / (1 + np.exp(-gate)) * np.einsum(
        "th,tkhf->tkf", x, wu[sel]), wd[sel])
    want = (y * (rc.weights * rc.keep)[..., None]).sum(axis=1)
    np.testing.assert_allclose(capped, want, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------ pass


@pytest.mark.parametrize("top_k,normalize", [(1, True), (2, True), (2, False), (4, True)])
def test_routing_pass_equals_kernel(rng, top_k, normalize):
    program = _program(_weights(rng), moe.moe_props(top_k, normalize))
    program.verify()
    lowered = run_passes(program.clone(), [MoERoutingPass()])
    lowered.verify()
    names = {op.name for op in lowered.main.walk()} - {"func.func", "func.return"}
    assert names and all(n.startswith("graph.") for n in names), names
    assert {"graph.sort", "graph.cumsum", "graph.scatter_nd", "graph.gather_nd"} <= names
    x = rng.standard_normal((T, H)).astype(np.float32)
    want = run_program(program, {"x": x})["y"]
    got = run_program(lowered, {"x": x})["y"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    stats = moe_drop_statistics(program, {"x": x})
    assert stats[0]["dropped"] == 0 and sum(stats[0]["tokens_per_expert"]) == T * top_k


def test_routing_pass_float64_is_tight(rng):
    program = _program(_weights(rng, "float64"), moe.moe_props(K), "float64")
    lowered = run_passes(program.clone(), parse_pipeline("moe-routing"))
    x = rng.standard_normal((T, H))
    np.testing.assert_allclose(run_program(lowered, {"x": x})["y"],
                               run_program(program, {"x": x})["y"], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cf", [0.5, 1.0])
def test_capacity_factor_drops_and_lowering_agrees(rng, cf):
    weights = _weights(rng)
    x = rng.standard_normal((T, H)).astype(np.float32)
    capped = _program(weights, moe.moe_props(K, True, cf))
    full = _program(weights, moe.moe_props(K, True, 0.0))
    (stats,) = moe_drop_statistics(capped, {"x": x})
    cap = moe.expert_capacity(T, K, E, cf)
    assert stats["capacity"] == cap
    assert sum(stats["tokens_per_expert"]) == T * K
    assert stats["kept_per_expert"] == [min(n, cap) for n in stats["tokens_per_expert"]]
    assert stats["dropped"] == T * K - sum(stats["kept_per_expert"]) > 0
    want = run_program(capped, {"x": x})["y"]
    assert not np.allclose(want, run_program(full, {"x": x})["y"])  # the drops matter
    lowered = run_passes(capped.clone(), [MoERoutingPass()])
    lowered.verify()
    (disp,) = [op for op in lowered.main.walk() if isinstance(op, g.MatMulOp)
               and g.spec_of(op.lhs).rank == 3 and op.rhs.name_hint == "w_gate"]
    assert g.spec_of(disp.lhs).shape == (E, cap, H)  # the grouped GEMM runs on C slots
    np.testing.assert_allclose(run_program(lowered, {"x": x})["y"], want, rtol=1e-5,
                               atol=1e-5 * np.abs(want).max())


# ------------------------------------------------------------------------------ round trip


@pytest.mark.parametrize("lower", [False, True])
def test_mlir_round_trip(rng, lower):
    program = _program(_weights(rng), moe.moe_props(K, True, 1.25))
    if lower:
        program = run_passes(program, [MoERoutingPass()])
    text = program.to_text()
    assert ("moe.moe" in text) != lower
    module = Parser(_context(), text).parse_module()
    module.verify()
    assert str(module) + "\n" == text
