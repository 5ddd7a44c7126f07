"""``com.microsoft.MoE`` import against ONNX Runtime's CPU kernel, before and after
``moe-routing``.

Each test builds a one-node MoE model (router logits as a graph input, expert weights as
initializers so that the layout transposes fold), imports it, and compares the reference
interpreter with onnxruntime on fresh random inputs; the lowered program must agree too, since
the lowering of the new variants (logits router, biases, non-gated activations) is what a target
runs.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from portc.compiler.frontends.onnx.importer import import_onnx
from portc.compiler.pipeline import run_passes
from portc.dialects import moe
from portc.passes.moe_routing import MoERoutingPass
from portc.runtimes.reference.interpreter import run_program

T, H, E, F = 7, 6, 4, 10


def _model(x_shape: tuple[int, ...], weights: dict[str, np.ndarray | None],
           **attrs: object) -> onnx.ModelProto:
    order = ["fc1_w", "fc1_b", "fc2_w", "fc2_b"]
    names = ["x", "router"] + [n if weights.get(n) is not None else "" for n in order]
    while names[-1] == "":
        names.pop()
    node = helper.make_node("MoE", names, ["y"], domain="com.microsoft", **attrs)
    inits = [numpy_helper.from_array(a, n) for n, a in weights.items() if a is not None]
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape),
         helper.make_tensor_value_info("router", TensorProto.FLOAT, (T, E))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, x_shape)], initializer=inits)
    return helper.make_model(graph, ir_version=10, opset_imports=[
        helper.make_opsetid("", 22), helper.make_opsetid("com.microsoft", 1)])


def _weights(rng: np.random.Generator, fc1_rows: int, bias: bool) -> dict[str, np.ndarray | None]:
    return {
        "fc1_w": rng.standard_normal((E, fc1_rows, H)).astype(np.float32),
        "fc1_b": rng.standard_normal((E, fc1_rows)).astype(np.float32) if bias else None,
        "fc2_w": rng.standard_normal((E, H, F)).astype(np.float32),
        "fc2_b": rng.standard_normal((E, H)).astype(np.float32) if bias else None,
    }


def _check(model: onnx.ModelProto, x_shape: tuple[int, ...], seed: int) -> None:
    rng = np.random.default_rng(seed)
    program = import_onnx(model).program
    program.verify()
    (op,) = [o for o in program.main.walk() if isinstance(o, moe.MoEOp)]
    assert moe.router_input_of(op.props()) == "logits"
    lowered = run_passes(program.clone(), [MoERoutingPass()])
    lowered.verify()
    assert not any(isinstance(o, moe.MoEOp) for o in lowered.main.walk())
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for _ in range(2):  # fresh inputs each round, never zeros
        feeds = {"x": rng.standard_normal(x_shape).astype(np.float32),
                 "router": rng.standard_normal((T, E)).astype(np.float32)}
        want = sess.run(None, feeds)[0]
        got = run_program(program, feeds)["y"]
        atol = 1e-5 * np.abs(want).max()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=atol)
        np.testing.assert_allclose(run_program(lowered, feeds)["y"], want, rtol=1e-4, atol=atol)


@pytest.mark.parametrize("act", ["relu", "silu", "gelu", "identity"])
@pytest.mark.parametrize("k,normalize,bias", [(2, 1, False), (2, 1, True), (1, 0, True),
                                              (3, 0, False)])
def test_non_gated_experts_match_ort(act: str, k: int, normalize: int, bias: bool) -> None:
    rng = np.random.default_rng(11)
    model = _model((T, H), _weights(rng, F, bias), k=k, normalize_routing_weights=normalize,
                   activation_type=act)
    _check(model, (T, H), seed=k * 10 + bias)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (1.702, 1.0)])
def test_interleaved_swiglu_matches_ort(bias: bool, alpha: float, beta: float) -> None:
    rng = np.random.default_rng(12)
    model = _model((T, H), _weights(rng, 2 * F, bias), k=2, normalize_routing_weights=1,
                   activation_type="swiglu", swiglu_fusion=1, activation_alpha=alpha,
                   activation_beta=beta)
    _check(model, (T, H), seed=3)


def test_3d_input_is_flattened_to_tokens() -> None:
    rng = np.random.default_rng(13)
    model = _model((1, T, H), _weights(rng, F, True), k=2, normalize_routing_weights=1,
                   activation_type="relu")
    _check(model, (1, T, H), seed=4)


@pytest.mark.parametrize("attrs,match", [
    ({"activation_type": "swiglu", "swiglu_fusion": 2}, "swiglu_fusion=1"),
    ({"activation_type": "relu", "use_sparse_mixer": 1}, "sparse_mixer"),
    ({"activation_type": "swiglu", "swiglu_fusion": 1, "swiglu_limit": 7.0}, "swiglu_limit"),
])
def test_variants_ort_cpu_does_not_define_are_refused(attrs: dict, match: str) -> None:
    rng = np.random.default_rng(14)
    model = _model((T, H), _weights(rng, 2 * F, False), k=2, **attrs)
    with pytest.raises(Exception, match=match):
        import_onnx(model)


def test_verifier_checks_variant_operands() -> None:
    """The expert operand count must fit the activation; logits must be [T, E]."""
    from xdsl.utils.exceptions import VerifyException

    from portc.dialects.graph import TensorSpec

    def s(*shape: int) -> TensorSpec:
        return TensorSpec(shape, "float32")

    p = moe.moe_props(2, True, 0.0, "relu", "logits")
    ok = [s(T, H), s(T, E), s(E, H, F), s(E, F, H)]
    assert moe.MoEOp.infer(ok, p) == [s(T, H)]
    assert moe.MoEOp.infer([*ok, s(E, F), s(E, H)], p) == [s(T, H)]
    for bad in ([*ok, s(E, F)], [s(T, H), s(T + 1, E), *ok[2:]], [*ok, s(E, H), s(E, H)]):
        with pytest.raises(VerifyException):
            moe.MoEOp.infer(bad, p)
    with pytest.raises(VerifyException, match="activation"):
        moe.MoEOp.infer(ok, {**p, "activation": "tanh"})
