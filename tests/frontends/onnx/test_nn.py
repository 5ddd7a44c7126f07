"""ONNX nn decompositions (conv, pooling, normalisation, Einsum, losses) against ONNX Runtime.

Each test builds a one-node model, imports it into graph-dialect core ops, runs the reference
interpreter and compares with onnxruntime on seeded random (never all-zero) inputs. Where the
decomposition changes structure (ConvTranspose's zero stuffing, Gemm's transposed product,
MaxPool's index table) the test names the behaviour it pins.
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

from portc.compiler.errors import PortcError
from portc.compiler.frontends.onnx.importer import import_onnx
from portc.dialects import dtypes
from portc.runtimes.reference.interpreter import run_program

RNG_SEED = 7321
NotImplementedError_ = ort.capi.onnxruntime_pybind11_state.NotImplemented


def rand(*shape: int, seed: int = 0, lo: float = -2.0, hi: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(RNG_SEED + seed)
    return rng.uniform(lo, hi, shape).astype(np.float32)


def make_model(op: str, inputs: Sequence[np.ndarray | None], opset: int = 22, n_out: int = 1,
               **attrs: Any) -> onnx.ModelProto:
    """One ``op`` node over graph inputs ``x0, x1, ...``; a None input is left out ("")."""
    names = [f"x{i}" if a is not None else "" for i, a in enumerate(inputs)]
    node = helper.make_node(op, names, [f"y{i}" for i in range(n_out)], **attrs)
    vis = [helper.make_tensor_value_info(n, dtypes.from_numpy(a.dtype).onnx, a.shape)
           for n, a in zip(names, inputs, strict=True) if a is not None]
    outs = [onnx.ValueInfoProto(name=f"y{i}") for i in range(n_out)]
    graph = helper.make_graph([node], "g", vis, outs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              ir_version=10)
    return onnx.shape_inference.infer_shapes(model)


def feeds(inputs: Sequence[np.ndarray | None]) -> dict[str, np.ndarray]:
    return {f"x{i}": a for i, a in enumerate(inputs) if a is not None}


def oracle(model: onnx.ModelProto, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    """onnxruntime; ONNX's own evaluator only for op versions onnxruntime does not implement."""
    try:
        sess = ort.InferenceSession(model.SerializeToString(),
                                    providers=["CPUExecutionProvider"])
    except NotImplementedError_ as e:
        if "Could not find an implementation" not in str(e):
            raise
        return list(onnx.reference.ReferenceEvaluator(model).run(None, feeds(inputs)))
    return sess.run(None, feeds(inputs))


def check(op: str, inputs: Sequence[np.ndarray | None], opset: int = 22, n_out: int = 1,
          rtol: float = 1e-4, atol: float = 1e-5, **attrs: Any) -> list[np.ndarray]:
    model = make_model(op, inputs, opset, n_out, **attrs)
    got = run_program(import_onnx(model).program, feeds(inputs))
    want = oracle(model, inputs)
    outs = [got[f"y{i}"] for i in range(n_out)]
    for i, (o, w) in enumerate(zip(outs, want, strict=True)):
        assert o.dtype == w.dtype, f"output {i}: {o.dtype} vs {w.dtype}"
        assert o.shape == w.shape, f"output {i}: {o.shape} vs {w.shape}"
        if o.dtype.kind == "f":
            np.testing.assert_allclose(o, w, rtol=rtol, atol=atol, err_msg=f"output {i}")
        else:
            np.testing.assert_array_equal(o, w, err_msg=f"output {i}")
    return outs


# ------------------------------------------------------------------------------ linear algebra


@pytest.mark.parametrize("a_shape,b_shape", [
    ((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 1, 3, 4), (3, 4, 2)), ((4,), (2, 4, 3)),
    ((2, 3, 4), (4,)),
])
def test_matmul_broadcasts_batches_and_promotes_vectors(a_shape: tuple, b_shape: tuple) -> None:
    check("MatMul", [rand(*a_shape), rand(*b_shape, seed=1)])


@pytest.mark.parametrize("attrs,a_shape,b_shape,c_shape", [
    ({}, (3, 4), (4, 5), None),
    ({"transA": 1, "alpha": 0.5}, (4, 3), (4, 5), (5,)),
    ({"transB": 1, "beta": 2.0}, (3, 4), (5, 4), (3, 1)),
    ({"transA": 1, "transB": 1, "alpha": 1.5, "beta": 0.25}, (4, 3), (5, 4), (3, 5)),
    ({"transB": 1}, (1, 6), (40, 6), ()),  # large runtime B^T: transposed-product path
    ({"transA": 1, "transB": 1}, (6, 1), (40, 6), (40,)),
])
def test_gemm_transposes_scales_and_broadcasts_c(attrs: dict, a_shape: tuple, b_shape: tuple,
                                                 c_shape: tuple | None) -> None:
    ins = [rand(*a_shape), rand(*b_shape, seed=1)]
    if c_shape is not None:
        ins.append(rand(*c_shape, seed=2))
    check("Gemm", ins, **attrs)


# ------------------------------------------------------------------------------ convolution


CONV_CASES: list[tuple[str, tuple, tuple, dict]] = [
    ("same_upper_stride2", (1, 2, 7, 8), (4, 2, 3, 3), {"auto_pad": "SAME_UPPER",
                                                         "strides": [2, 2]}),
    ("same_lower_even_kernel", (1, 2, 6, 6), (3, 2, 2, 4), {"auto_pad": "SAME_LOWER"}),
    ("valid_dilated", (2, 3, 9, 9), (2, 3, 3, 3), {"auto_pad": "VALID", "dilations": [2, 1]}),
    ("groups_asym_pads", (1, 4, 6, 7), (6, 2, 3, 2), {"group": 2, "pads": [1, 0, 2, 1],
                                                        "strides": [1, 2]}),
    ("depthwise", (1, 3, 5, 5), (3, 1, 3, 3), {"group": 3, "pads": [1, 1, 1, 1]}),
    ("conv1d", (2, 2, 11), (3, 2, 4), {"strides": [3], "pads": [1, 2]}),
    ("conv3d", (1, 2, 4, 5, 6), (2, 2, 2, 3, 2), {"pads": [0, 1, 1, 1, 0, 0]}),
    ("no_kernel_shape_attr", (1, 1, 5, 5), (1, 1, 3, 3), {}),
]


@pytest.mark.parametrize("name,x_shape,w_shape,attrs", CONV_CASES, ids=[c[0] for c in CONV_CASES])
@pytest.mark.parametrize("with_bias", [False, True])
def test_conv_resolves_auto_pad_groups_and_rank(name: str, x_shape: tuple, w_shape: tuple,
                                                attrs: dict, with_bias: bool) -> None:
    ins = [rand(*x_shape), rand(*w_shape, seed=1)]
    if with_bias:
        ins.append(rand(w_shape[0], seed=2))
    check("Conv", ins, **attrs)


CONVT_CASES: list[tuple[str, tuple, tuple, dict]] = [
    ("plain", (1, 1, 3, 3), (1, 2, 3, 3), {}),
    ("strides_output_padding", (1, 2, 3, 4), (2, 3, 3, 3), {"strides": [3, 2],
                                                            "output_padding": [1, 1]}),
    ("pads", (2, 1, 4, 4), (1, 2, 3, 3), {"strides": [2, 2], "pads": [1, 2, 0, 1]}),
    ("groups", (1, 4, 3, 3), (4, 3, 2, 2), {"group": 2, "strides": [2, 1]}),
    ("dilations", (1, 2, 4, 3), (2, 2, 2, 3), {"dilations": [2, 3], "strides": [1, 2]}),
    ("same_upper", (1, 1, 3, 4), (1, 2, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ("same_lower", (1, 1, 3, 4), (1, 2, 4, 3), {"auto_pad": "SAME_LOWER", "strides": [2, 3]}),
    ("output_shape", (1, 1, 3, 3), (1, 2, 3, 3), {"strides": [3, 2], "output_shape": [10, 8]}),
    ("conv1d", (2, 2, 5), (2, 3, 3), {"strides": [2], "pads": [1, 0]}),
    ("conv3d", (1, 1, 2, 3, 2), (1, 2, 2, 2, 2), {"strides": [2, 1, 2]}),
]


@pytest.mark.parametrize("name,x_shape,w_shape,attrs", CONVT_CASES,
                         ids=[c[0] for c in CONVT_CASES])
def test_conv_transpose_is_conv_over_zero_stuffed_input(name: str, x_shape: tuple,
                                                        w_shape: tuple, attrs: dict) -> None:
    grp = attrs.get("group", 1)
    ins = [rand(*x_shape), rand(*w_shape, seed=1), rand(w_shape[1] * grp, seed=2)]
    check("ConvTranspose", ins, **attrs)


# ------------------------------------------------------------------------------ pooling


POOL_CASES: list[tuple[str, str, tuple, dict]] = [
    ("max_ceil", "MaxPool", (1, 2, 6, 7), {"kernel_shape": [3, 3], "strides": [2, 2],
                                           "ceil_mode": 1}),
    ("max_dilated_pads", "MaxPool", (1, 1, 7, 7), {"kernel_shape": [2, 3], "dilations": [2, 2],
                                                   "pads": [1, 1, 1, 0]}),
    ("max_same_lower", "MaxPool", (2, 2, 5, 6), {"kernel_shape": [2, 2], "strides": [2, 2],
                                                 "auto_pad": "SAME_LOWER"}),
    ("max_1d", "MaxPool", (1, 3, 10), {"kernel_shape": [3], "strides": [2]}),
    ("avg_exclude_pad", "AveragePool", (1, 2, 5, 5), {"kernel_shape": [3, 3],
                                                      "pads": [1, 1, 1, 1]}),
    ("avg_include_pad", "AveragePool", (1, 2, 5, 5), {"kernel_shape": [3, 3],
                                                      "pads": [1, 2, 1, 0],
                                                      "count_include_pad": 1}),
    ("avg_same_upper_ceil", "AveragePool", (1, 1, 7, 6), {"kernel_shape": [3, 2],
                                                          "strides": [2, 2],
                                                          "auto_pad": "SAME_UPPER"}),
    ("avg_3d", "AveragePool", (1, 1, 4, 5, 4), {"kernel_shape": [2, 2, 2]}),
    ("lp_p3", "LpPool", (1, 2, 6, 6), {"kernel_shape": [2, 2], "p": 3, "strides": [2, 1]}),
    ("lp_pads", "LpPool", (1, 1, 5, 5), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
]


@pytest.mark.parametrize("name,op,x_shape,attrs", POOL_CASES, ids=[c[0] for c in POOL_CASES])
def test_pool_windows_match(name: str, op: str, x_shape: tuple, attrs: dict) -> None:
    check(op, [rand(*x_shape)], **attrs)


@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]},
    {"kernel_shape": [2, 2], "strides": [2, 2], "storage_order": 1},
    {"kernel_shape": [2, 3], "strides": [2, 1], "dilations": [1, 2], "ceil_mode": 1},
])
def test_maxpool_indices_are_flat_input_offsets(attrs: dict) -> None:
    check("MaxPool", [rand(2, 3, 5, 6)], n_out=2, **attrs)


def test_maxpool_on_uint8_pads_with_the_lowest_value() -> None:
    x = np.random.default_rng(RNG_SEED).integers(1, 255, (1, 2, 5, 5)).astype(np.uint8)
    check("MaxPool", [x], kernel_shape=[3, 3], pads=[1, 1, 1, 1])


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 2, 7)])
def test_global_pools_reduce_all_spatial_dims(op: str, shape: tuple) -> None:
    check(op, [rand(*shape)])


def test_global_lp_pool_is_the_p_norm_of_each_channel() -> None:
    """Neither onnxruntime nor ONNX's evaluator implements GlobalLpPool: numpy is the oracle."""
    x = rand(2, 3, 4, 5)
    got = run_program(import_onnx(make_model("GlobalLpPool", [x], p=3)).program, feeds([x]))
    want = (np.abs(x.astype(np.float64)) ** 3).sum(axis=(2, 3), keepdims=True) ** (1 / 3)
    np.testing.assert_allclose(got["y0"], want, rtol=1e-6)


# ------------------------------------------------------------------------------ normalisation


def test_batchnorm_inference_uses_running_statistics() -> None:
    c = 3
    ins = [rand(2, c, 4, 5), rand(c, seed=1), rand(c, seed=2), rand(c, seed=3),
           rand(c, seed=4, lo=0.5, hi=2.0)]
    check("BatchNormalization", ins, epsilon=1e-3)


def test_batchnorm_training_mode_returns_updated_running_statistics() -> None:
    c = 3
    ins = [rand(2, c, 4, 5), rand(c, seed=1), rand(c, seed=2), rand(c, seed=3),
           rand(c, seed=4, lo=0.5, hi=2.0)]
    check("BatchNormalization", ins, n_out=3, training_mode=1, momentum=0.8)


def test_instance_norm_normalises_each_channel_of_each_sample() -> None:
    check("InstanceNormalization", [rand(2, 3, 4, 5), rand(3, seed=1), rand(3, seed=2)],
          epsilon=1e-4)


def test_group_norm_opset21_scales_per_channel() -> None:
    x = rand(2, 6, 3, 4)
    model = make_model("GroupNormalization", [x, rand(6, seed=1), rand(6, seed=2)], opset=21,
                       num_groups=3, epsilon=1e-4)
    got = run_program(import_onnx(model).program, feeds([x, rand(6, seed=1), rand(6, seed=2)]))
    xg = x.reshape(2, 3, -1).astype(np.float64)
    want = (xg - xg.mean(-1, keepdims=True)) / np.sqrt(xg.var(-1, keepdims=True) + 1e-4)
    want = want.reshape(x.shape) * rand(6, seed=1).reshape(6, 1, 1) + rand(6, seed=2).reshape(
        6, 1, 1)
    np.testing.assert_allclose(got["y0"], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("axis", [-1, 1, 0])
def test_layer_norm_returns_mean_and_inv_std_dev(axis: int) -> None:
    x = rand(3, 4, 5)
    norm_shape = x.shape[axis % 3:]
    check("LayerNormalization", [x, rand(*norm_shape, seed=1), rand(*norm_shape, seed=2)],
          opset=17, n_out=3, axis=axis, epsilon=1e-3)


def test_layer_norm_without_bias() -> None:
    check("LayerNormalization", [rand(2, 3, 8), rand(8, seed=1)], opset=17)


@pytest.mark.parametrize("axis", [-1, 1])
def test_rms_norm_maps_to_core_rms_norm(axis: int) -> None:
    x = rand(2, 3, 6)
    check("RMSNormalization", [x, rand(*x.shape[axis % 3:], seed=1)], opset=23, axis=axis,
          epsilon=1e-4)


@pytest.mark.parametrize("p", [1, 2])
def test_lp_normalization_leaves_all_zero_slices_zero(p: int) -> None:
    x = rand(3, 4)
    x[1] = 0.0
    out = check("LpNormalization", [x], axis=1, p=p)
    assert not np.isnan(out[0]).any()


def test_mean_variance_normalization_default_axes() -> None:
    check("MeanVarianceNormalization", [rand(2, 3, 4, 5)], opset=13)


def test_lrn_sums_squares_over_a_channel_window() -> None:
    check("LRN", [rand(2, 7, 3, 4)], opset=13, size=5, alpha=1e-2, beta=0.6, bias=1.5)


def test_dropout_in_inference_is_identity_with_true_mask() -> None:
    check("Dropout", [rand(3, 4), np.array(0.3, np.float32)], n_out=2)


def test_training_dropout_with_ratio_is_refused_with_a_reason() -> None:
    ins = [rand(3, 4), np.array(0.3, np.float32), np.array(True)]
    model = make_model("Dropout", ins)
    with pytest.raises(PortcError, match="random"):
        import_onnx(model, known_inputs={"x1": ins[1], "x2": ins[2]})


# ------------------------------------------------------------------------------ Einsum


EINSUM_CASES: list[tuple[str, list[tuple]]] = [
    ("ij->ji", [(3, 4)]),
    ("ij->i", [(3, 4)]),
    ("ii->i", [(4, 4)]),
    ("...ii->...i", [(2, 3, 3)]),
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("i,i", [(5,)]),
    ("ij,jk", [(3, 4), (4, 2)]),
    ("bhqd,bhkd->bhqk", [(2, 3, 4, 5), (2, 3, 6, 5)]),
    ("i,j->ij", [(3,), (4,)]),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]),
    ("...ij,...jk->...ik", [(2, 1, 3, 4), (1, 5, 4, 2)]),
    ("abc->", [(2, 3, 4)]),
]


@pytest.mark.parametrize("eq,shapes", EINSUM_CASES, ids=[c[0] for c in EINSUM_CASES])
def test_einsum_decomposes_into_matmul_chain(eq: str, shapes: list[tuple]) -> None:
    ins = [rand(*s, seed=i) for i, s in enumerate(shapes)]
    if eq == "i,i":
        ins.append(rand(5, seed=9))
    check("Einsum", ins, opset=12, equation=eq)


# ------------------------------------------------------------------------------ losses


def _targets(shape: tuple, c: int, ignore: int | None = None) -> np.ndarray:
    t = np.random.default_rng(RNG_SEED + 5).integers(0, c, shape).astype(np.int64)
    if ignore is not None:
        t.reshape(-1)[::3] = ignore
    return t


LOSS_CASES: list[tuple[str, tuple, dict, bool, int | None]] = [
    ("mean_2d", (4, 5), {}, False, None),
    ("sum_weighted", (4, 5), {"reduction": "sum"}, True, None),
    ("none_nd", (2, 5, 3, 2), {"reduction": "none"}, False, None),
    ("mean_weighted_ignore", (3, 5, 4), {"ignore_index": 2}, True, 2),
    ("mean_negative_ignore", (3, 5, 4), {"ignore_index": -5}, False, -5),
    ("none_weighted_ignore_out_of_range", (3, 5), {"reduction": "none", "ignore_index": 9},
     True, 9),
]


@pytest.mark.parametrize("name,x_shape,attrs,weighted,ignore", LOSS_CASES,
                         ids=[c[0] for c in LOSS_CASES])
@pytest.mark.parametrize("op", ["NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss"])
def test_losses_weight_ignore_and_reduce(name: str, x_shape: tuple, attrs: dict,
                                         weighted: bool, ignore: int | None, op: str) -> None:
    c = x_shape[1]
    ins = [rand(*x_shape), _targets((x_shape[0], *x_shape[2:]), c, ignore)]
    if weighted:
        ins.append(rand(c, seed=3, lo=0.1, hi=1.0))
    n_out = 2 if op == "SoftmaxCrossEntropyLoss" else 1
    check(op, ins, opset=13, n_out=n_out, **attrs)


def test_group_norm_opset18_scales_per_group() -> None:
    """Opset 18 GroupNormalization takes [num_groups] scale and bias."""
    check("GroupNormalization", [rand(2, 6, 3, 4), rand(3, seed=1), rand(3, seed=2)], opset=18,
          num_groups=3, epsilon=1e-4)
