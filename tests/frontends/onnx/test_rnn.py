"""RNN/GRU/LSTM decompositions agree with onnxruntime on seeded random inputs.

Weights are initializers (as exported models have them); X, the initial states and
``sequence_lens`` are runtime inputs, so the unrolled recurrence and its masks run in the
reference interpreter rather than being folded at import.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from portc.compiler.frontends.onnx.importer import import_onnx
from portc.runtimes.reference.interpreter import run_program

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
SEQ, BATCH, INPUT, HIDDEN = 4, 3, 5, 6


@dataclass
class Case:
    op: str
    attrs: dict = field(default_factory=dict)
    bias: bool = True
    initial: bool = False
    seq_lens: list[int] | None = None
    peepholes: bool = False
    outputs: tuple[str, ...] = ("Y", "Y_h")


def _build(case: Case, rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    g = GATES[case.op]
    dirs = 2 if case.attrs.get("direction") == "bidirectional" else 1
    layout = case.attrs.get("layout", 0)
    x_shape = (BATCH, SEQ, INPUT) if layout else (SEQ, BATCH, INPUT)
    st_shape = (BATCH, dirs, HIDDEN) if layout else (dirs, BATCH, HIDDEN)
    inits = [
        numpy_helper.from_array(rng.uniform(-0.6, 0.6, (dirs, g * HIDDEN, INPUT)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.uniform(-0.6, 0.6, (dirs, g * HIDDEN, HIDDEN)).astype(np.float32), "R"),
    ]
    feeds = {"X": rng.standard_normal(x_shape).astype(np.float32)}
    graph_inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)]
    names = ["X", "W", "R", "", "", "", "", ""]
    if case.bias:
        inits.append(numpy_helper.from_array(
            rng.uniform(-0.5, 0.5, (dirs, 2 * g * HIDDEN)).astype(np.float32), "B"))
        names[3] = "B"
    if case.seq_lens is not None:
        feeds["lens"] = np.array(case.seq_lens, dtype=np.int32)
        graph_inputs.append(helper.make_tensor_value_info("lens", TensorProto.INT32, (BATCH,)))
        names[4] = "lens"
    if case.initial:
        for i, nm in ((5, "h0"), (6, "c0")) if case.op == "LSTM" else ((5, "h0"),):
            feeds[nm] = rng.standard_normal(st_shape).astype(np.float32)
            graph_inputs.append(helper.make_tensor_value_info(nm, TensorProto.FLOAT, st_shape))
            names[i] = nm
    if case.peepholes:
        inits.append(numpy_helper.from_array(
            rng.uniform(-0.5, 0.5, (dirs, 3 * HIDDEN)).astype(np.float32), "P"))
        names[7] = "P"
    while names and names[-1] == "":
        names.pop()
    outs = [o if o in case.outputs else "" for o in ("Y", "Y_h", "Y_c")[:3 if case.op == "LSTM" else 2]]
    while outs and outs[-1] == "":
        outs.pop()
    node = helper.make_node(case.op, names, outs, hidden_size=HIDDEN, **case.attrs)
    graph = helper.make_graph([node], "rnn", graph_inputs,
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                               for o in outs if o], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)],
                              ir_version=9)
    return model, feeds


CASES = {
    "rnn_forward_default_tanh": Case("RNN"),
    "rnn_reverse_with_initial_state": Case("RNN", {"direction": "reverse"}, initial=True),
    "rnn_bidirectional_relu_no_bias": Case("RNN", {"direction": "bidirectional",
                                                   "activations": ["Relu", "Tanh"]}, bias=False),
    "rnn_clip_bounds_preactivation": Case("RNN", {"clip": 0.4}),
    "rnn_seq_lens_mask_state_and_zero_y": Case("RNN", {"direction": "bidirectional"},
                                               seq_lens=[4, 2, 1]),
    "gru_default_gates": Case("GRU"),
    "gru_linear_before_reset": Case("GRU", {"linear_before_reset": 1}, initial=True),
    "gru_bidirectional_batchwise_layout": Case("GRU", {"direction": "bidirectional", "layout": 1},
                                               initial=True),
    "gru_reverse_seq_lens": Case("GRU", {"direction": "reverse"}, seq_lens=[3, 4, 2]),
    "gru_parametric_activations": Case("GRU", {"activations": ["HardSigmoid", "LeakyRelu"],
                                               "activation_alpha": [0.3, 0.2],
                                               "activation_beta": [0.4]}),
    "lstm_default_all_outputs": Case("LSTM", outputs=("Y", "Y_h", "Y_c")),
    "lstm_peepholes_initial_state": Case("LSTM", initial=True, peepholes=True,
                                         outputs=("Y", "Y_h", "Y_c")),
    "lstm_bidirectional_seq_lens": Case("LSTM", {"direction": "bidirectional"}, seq_lens=[2, 4, 3],
                                        initial=True, outputs=("Y", "Y_h", "Y_c")),
    "lstm_batchwise_layout": Case("LSTM", {"layout": 1}, initial=True,
                                  outputs=("Y", "Y_h", "Y_c")),
    "lstm_clip_and_input_forget": Case("LSTM", {"clip": 0.5, "input_forget": 1},
                                       outputs=("Y_h", "Y_c")),
    "lstm_only_final_state_output": Case("LSTM", {"direction": "reverse"}, outputs=("Y_h",)),
}


def _oracle(model: onnx.ModelProto, case: Case) -> object:
    """onnxruntime, except for ``layout=1``, which its CPU kernels refuse: there ONNX's own
    reference evaluator is the oracle."""
    if case.attrs.get("layout", 0):
        return ReferenceEvaluator(model)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", list(CASES))
def test_recurrent_matches_onnxruntime(name: str) -> None:
    case = CASES[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    model, feeds = _build(case, rng)
    out_names = [o.name for o in model.graph.output]
    want = dict(zip(out_names, _oracle(model, case).run(out_names, feeds), strict=True))
    res = import_onnx(model)
    got = run_program(res.program, feeds)
    for n in out_names:
        np.testing.assert_allclose(got[n], want[n], rtol=1e-4, atol=1e-5, err_msg=n)


def test_sequence_lens_with_full_length_constant_needs_no_mask() -> None:
    """A constant ``sequence_lens`` covering the whole sequence folds away the masking ops."""
    rng = np.random.default_rng(7)
    model, feeds = _build(Case("GRU"), rng)
    lens = numpy_helper.from_array(np.full(BATCH, SEQ, np.int32), "lens")
    model.graph.initializer.append(lens)
    assert list(model.graph.node[0].input) == ["X", "W", "R", "B"]
    model.graph.node[0].input.append("lens")
    res = import_onnx(model)
    ops = {op.name for op in res.program.main.body.ops}
    assert "graph.where" not in ops
    want = ort.InferenceSession(model.SerializeToString()).run(None, feeds)
    got = run_program(res.program, feeds)
    np.testing.assert_allclose(got["Y"], want[0], rtol=1e-4, atol=1e-5)


def test_unknown_activation_is_reported_with_the_node() -> None:
    from portc.compiler.errors import UnsupportedOpsError

    model, _ = _build(Case("RNN", {"activations": ["Gelu"]}), np.random.default_rng(1))
    with pytest.raises(UnsupportedOpsError, match="activation 'gelu'"):
        import_onnx(model)
