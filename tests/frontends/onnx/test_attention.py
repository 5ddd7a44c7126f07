"""ONNX Attention, RotaryEmbedding and SwiGLU decompositions against ONNX Runtime.

Each test builds a one-node model, imports it into graph-dialect core ops, runs the reference
interpreter and compares with onnxruntime on seeded random (never all-zero) inputs; op versions
onnxruntime does not implement fall back to ONNX's own evaluator, and the test says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import onnx.reference
import onnxruntime as ort
import pytest
from onnx import helper

from portc.compiler.frontends.onnx.importer import import_onnx
from portc.dialects import dtypes
from portc.runtimes.reference.interpreter import run_program

RNG_SEED = 99173
_ORT_ERRORS = (ort.capi.onnxruntime_pybind11_state.NotImplemented,
               ort.capi.onnxruntime_pybind11_state.Fail,
               ort.capi.onnxruntime_pybind11_state.InvalidGraph)


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(RNG_SEED + seed).uniform(-1.5, 1.5, shape).astype(np.float32)


def make_model(op: str, inputs: Sequence[np.ndarray | None], opset: int, n_out: int,
               **attrs: Any) -> onnx.ModelProto:
    names = [f"x{i}" if a is not None else "" for i, a in enumerate(inputs)]
    outs = [f"y{i}" if want else "" for i, want in enumerate(_out_mask(n_out))]
    node = helper.make_node(op, names, outs, **attrs)
    vis = [helper.make_tensor_value_info(n, dtypes.from_numpy(a.dtype).onnx, a.shape)
           for n, a in zip(names, inputs, strict=True) if a is not None]
    graph = helper.make_graph([node], "g", vis, [onnx.ValueInfoProto(name=o) for o in outs if o])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              ir_version=10)
    return onnx.shape_inference.infer_shapes(model)


def _out_mask(n_out: int | Sequence[bool]) -> list[bool]:
    return [True] * n_out if isinstance(n_out, int) else list(n_out)


def feeds(inputs: Sequence[np.ndarray | None]) -> dict[str, np.ndarray]:
    return {f"x{i}": a for i, a in enumerate(inputs) if a is not None}


def oracle(model: onnx.ModelProto, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    try:
        sess = ort.InferenceSession(model.SerializeToString(),
                                    providers=["CPUExecutionProvider"])
    except _ORT_ERRORS as e:
        if "implementation" not in str(e) and "opset" not in str(e).lower():
            raise
        return list(onnx.reference.ReferenceEvaluator(model).run(None, feeds(inputs)))
    return sess.run(None, feeds(inputs))


def check(op: str, inputs: Sequence[np.ndarray | None], opset: int = 23,
          n_out: int | Sequence[bool] = 1, rtol: float = 1e-4, atol: float = 1e-5,
          **attrs: Any) -> list[np.ndarray]:
    model = make_model(op, inputs, opset, n_out, **attrs)
    got = run_program(import_onnx(model).program, feeds(inputs))
    want = oracle(model, inputs)
    names = [o.name for o in model.graph.output]
    for name, w in zip(names, want, strict=True):
        o = got[name]
        assert o.shape == w.shape and o.dtype == w.dtype, f"{name}: {o.shape} vs {w.shape}"
        np.testing.assert_allclose(o, w, rtol=rtol, atol=atol, err_msg=name)
    return [got[n] for n in names]


# ------------------------------------------------------------------------------ Attention


ATTN_4D: list[tuple[str, tuple, tuple, tuple, dict]] = [
    ("mha", (2, 3, 4, 8), (2, 3, 6, 8), (2, 3, 6, 8), {}),
    ("gqa", (2, 6, 4, 8), (2, 2, 6, 8), (2, 2, 6, 8), {}),
    ("v_head_size_differs", (1, 2, 3, 8), (1, 2, 5, 8), (1, 2, 5, 6), {}),
    ("scaled", (2, 3, 4, 8), (2, 3, 6, 8), (2, 3, 6, 8), {"scale": 0.3}),
    ("causal", (2, 3, 4, 8), (2, 3, 6, 8), (2, 3, 6, 8), {"is_causal": 1}),
    ("gqa_causal", (1, 4, 5, 4), (1, 2, 5, 4), (1, 2, 5, 4), {"is_causal": 1}),
    ("softcap", (2, 3, 4, 8), (2, 3, 6, 8), (2, 3, 6, 8), {"softcap": 2.0}),
]


@pytest.mark.parametrize("name,q,k,v,attrs", ATTN_4D, ids=[c[0] for c in ATTN_4D])
def test_attention_4d(name: str, q: tuple, k: tuple, v: tuple, attrs: dict) -> None:
    check("Attention", [rand(*q), rand(*k, seed=1), rand(*v, seed=2)], **attrs)


@pytest.mark.parametrize("q_heads,kv_heads,attrs", [(3, 3, {}), (6, 2, {"is_causal": 1}),
                                                    (4, 1, {"scale": 0.5})])
def test_attention_3d_splits_and_merges_heads(q_heads: int, kv_heads: int, attrs: dict) -> None:
    d = 4
    ins = [rand(2, 5, q_heads * d), rand(2, 7, kv_heads * d, seed=1),
           rand(2, 7, kv_heads * 3, seed=2)]
    check("Attention", ins, q_num_heads=q_heads, kv_num_heads=kv_heads, **attrs)


@pytest.mark.parametrize("mask_shape", [(4, 6), (2, 1, 4, 6), (2, 3, 4, 6)])
@pytest.mark.parametrize("kind", ["float", "bool"])
@pytest.mark.parametrize("causal", [0, 1])
def test_attention_mask_is_an_additive_bias(mask_shape: tuple, kind: str, causal: int) -> None:
    rng = np.random.default_rng(RNG_SEED + 7)
    if kind == "bool":
        mask = rng.random(mask_shape) > 0.3
        mask[..., 0] = True  # keep every row attendable: fully masked rows are pinned below
    else:
        mask = rng.uniform(-2, 1, mask_shape).astype(np.float32)
    ins = [rand(2, 3, 4, 8), rand(2, 3, 6, 8, seed=1), rand(2, 3, 6, 8, seed=2), mask]
    check("Attention", ins, is_causal=causal)


@pytest.mark.parametrize("kind", ["float", "bool"])
def test_attention_short_mask_leaves_the_extra_keys_masked(kind: str) -> None:
    """The spec pads a mask shorter than the key length with -inf/False; onnxruntime rejects
    such masks, so ONNX's evaluator is the oracle."""
    rng = np.random.default_rng(RNG_SEED + 8)
    mask = rng.random((4, 4)) > 0.3 if kind == "bool" else rng.uniform(-2, 1, (4, 4)).astype(
        np.float32)
    if kind == "bool":
        mask[:, 0] = True
    ins = [rand(2, 3, 4, 8), rand(2, 3, 6, 8, seed=1), rand(2, 3, 6, 8, seed=2), mask]
    model = make_model("Attention", ins, 23, 1)
    y = run_program(import_onnx(model).program, feeds(ins))["y0"]
    want = onnx.reference.ReferenceEvaluator(model).run(None, feeds(ins))[0]
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)


def test_attention_fully_masked_row_gives_zeros_not_nan() -> None:
    mask = np.ones((3, 4), bool)
    mask[1] = False
    ins = [rand(1, 2, 3, 4), rand(1, 2, 4, 4, seed=1), rand(1, 2, 4, 4, seed=2), mask]
    model = make_model("Attention", ins, 23, 1)
    y = run_program(import_onnx(model).program, feeds(ins))["y0"]
    assert not np.isnan(y).any()
    np.testing.assert_array_equal(y[:, :, 1], 0.0)
    want = onnx.reference.ReferenceEvaluator(model).run(None, feeds(ins))[0]
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("causal", [0, 1])
@pytest.mark.parametrize("gqa", [False, True])
def test_attention_past_kv_is_concatenated_into_present(causal: int, gqa: bool) -> None:
    hq = 4 if gqa else 2
    ins = [rand(2, hq, 3, 8), rand(2, 2, 3, 8, seed=1), rand(2, 2, 3, 8, seed=2),
           rand(3, 8, seed=3), rand(2, 2, 5, 8, seed=4), rand(2, 2, 5, 8, seed=5)]
    if causal:
        ins[3] = None  # type: ignore[call-overload]
    check("Attention", ins, n_out=3, is_causal=causal)


@pytest.mark.parametrize("mode,softcap", [(0, 0.0), (1, 3.0), (2, 0.0), (3, 0.0)])
def test_attention_qk_matmul_output_modes(mode: int, softcap: float) -> None:
    ins = [rand(2, 2, 3, 4), rand(2, 2, 5, 4, seed=1), rand(2, 2, 5, 4, seed=2),
           rand(3, 5, seed=3)]
    attrs: dict[str, Any] = {"qk_matmul_output_mode": mode}
    if softcap:
        attrs["softcap"] = softcap
    check("Attention", ins, n_out=[True, False, False, True], **attrs)


def test_attention_nonpad_kv_seqlen_masks_padding_keys() -> None:
    ins: list[np.ndarray | None] = [rand(2, 2, 3, 4), rand(2, 2, 6, 4, seed=1),
                                    rand(2, 2, 6, 4, seed=2), None, None, None,
                                    np.array([6, 4], np.int64)]
    check("Attention", ins, opset=24, is_causal=1)


# ------------------------------------------------------------------------------ RotaryEmbedding


ROPE_CASES: list[tuple[str, dict, bool, int]] = [
    ("halves", {}, True, 4),
    ("interleaved", {"interleaved": 1}, True, 4),
    ("partial_rotary_dim", {"rotary_embedding_dim": 4}, True, 4),
    ("interleaved_partial", {"interleaved": 1, "rotary_embedding_dim": 4}, True, 4),
    ("no_position_ids", {}, False, 4),
    ("3d_input", {"num_heads": 2}, True, 3),
]


@pytest.mark.parametrize("name,attrs,with_pos,rank", ROPE_CASES, ids=[c[0] for c in ROPE_CASES])
def test_rotary_embedding_rotates_pairs(name: str, attrs: dict, with_pos: bool,
                                        rank: int) -> None:
    b, h, s, d = 2, 2, 3, 8
    rd = attrs.get("rotary_embedding_dim", d)
    x = rand(b, h, s, d) if rank == 4 else rand(b, s, h * d)
    if with_pos:
        ang = rand(20, rd // 2, seed=1)
        pos = np.random.default_rng(RNG_SEED).integers(0, 20, (b, s)).astype(np.int64)
        ins = [x, np.cos(ang), np.sin(ang), pos]
    else:
        ang = rand(b, s, rd // 2, seed=1)
        ins = [x, np.cos(ang), np.sin(ang)]
    check("RotaryEmbedding", ins, **attrs)


# ------------------------------------------------------------------------------ SwiGLU


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_swiglu_gates_with_swish(alpha: float) -> None:
    if "SwiGLU" not in {s.name for s in onnx.defs.get_all_schemas()}:
        pytest.skip("this onnx has no SwiGLU schema")
    a, gate = rand(3, 8), rand(3, 8, seed=1)
    model = make_model("SwiGLU", [a, gate], onnx.defs.onnx_opset_version(), 1, alpha=alpha)
    got = run_program(import_onnx(model).program, feeds([a, gate]))["y0"]
    a64 = a.astype(np.float64)
    want = a64 / (1 + np.exp(-alpha * a64)) * gate
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
