"""Resampling and signal decompositions agree with onnxruntime on seeded random inputs.

Resize/Upsample become compile-time gather/weight tables, so the cases sweep the attributes that
shape those tables; GridSample computes indices at run time from a random grid that reaches
outside [-1, 1] so every padding rule is exercised; the signal ops are constant matmuls.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from portc.compiler.frontends.onnx.importer import import_onnx
from portc.runtimes.reference.interpreter import run_program


@dataclass
class Case:
    op: str
    #: runtime inputs: name -> array; constant inputs: name -> array (initializers)
    inputs: dict[str, np.ndarray]
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # node input names ("" = absent)
    attrs: dict = field(default_factory=dict)
    opset: int = 19
    out: int = TensorProto.FLOAT


def _model(case: Case) -> onnx.ModelProto:
    graph_inputs = [helper.make_tensor_value_info(
        n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape) for n, a in case.inputs.items()]
    inits = [numpy_helper.from_array(a, n) for n, a in case.consts.items()]
    node = helper.make_node(case.op, case.order or list(case.inputs), ["y"], **case.attrs)
    graph = helper.make_graph([node], "t", graph_inputs,
                              [helper.make_tensor_value_info("y", case.out, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", case.opset)],
                             ir_version=9)


def _run_both(case: Case) -> tuple[np.ndarray, np.ndarray]:
    model = _model(case)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(["y"], case.inputs)[0]
    got = run_program(import_onnx(model).program, case.inputs)["y"]
    return got, want


def _rng(name: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(name.encode()))


# ----------------------------------------------------------------------------------- Resize


def _resize(x: np.ndarray, scales: list[float] | None = None, sizes: list[int] | None = None,
            roi: list[float] | None = None, opset: int = 19, **attrs: object) -> Case:
    consts: dict[str, np.ndarray] = {}
    order = ["x", "", "", ""]
    if roi is not None:
        consts["roi"] = np.array(roi, np.float32)
        order[1] = "roi"
    if scales is not None:
        consts["scales"] = np.array(scales, np.float32)
        order[2] = "scales"
    if sizes is not None:
        consts["sizes"] = np.array(sizes, np.int64)
        order[3] = "sizes"
    while order[-1] == "":
        order.pop()
    return Case("Resize", {"x": x}, consts, order, dict(attrs), opset)


def _img(shape: tuple[int, ...] = (1, 2, 5, 7)) -> np.ndarray:
    return np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)


RESIZE = {
    "nearest_upsample_scales_round_prefer_floor": _resize(_img(), [1, 1, 2, 1.5]),
    "nearest_downsample_sizes_floor_align_corners": _resize(
        _img(), sizes=[1, 2, 3, 4], mode="nearest", nearest_mode="floor",
        coordinate_transformation_mode="align_corners"),
    "nearest_ceil_half_pixel": _resize(_img(), [1, 1, 1.7, 2.3], mode="nearest",
                                       nearest_mode="ceil"),
    "nearest_round_prefer_ceil_asymmetric": _resize(
        _img(), sizes=[1, 2, 9, 11], nearest_mode="round_prefer_ceil",
        coordinate_transformation_mode="asymmetric"),
    "linear_half_pixel_upsample": _resize(_img(), [1, 1, 2.5, 1.25], mode="linear"),
    "linear_pytorch_half_pixel_downsample_to_one": _resize(
        _img(), sizes=[1, 2, 1, 3], mode="linear",
        coordinate_transformation_mode="pytorch_half_pixel"),
    "linear_align_corners_sizes": _resize(_img(), sizes=[1, 2, 8, 4], mode="linear",
                                          coordinate_transformation_mode="align_corners"),
    "linear_half_pixel_symmetric": _resize(_img(), [1, 1, 1.6, 0.7], mode="linear",
                                           coordinate_transformation_mode="half_pixel_symmetric"),
    "linear_antialias_downsample": _resize(_img((1, 1, 12, 9)), [1, 1, 0.4, 0.6], mode="linear",
                                           antialias=1),
    "cubic_default_a": _resize(_img(), [1, 1, 1.8, 2.0], mode="cubic"),
    "cubic_a_half_exclude_outside": _resize(_img(), [1, 1, 0.6, 1.4], mode="cubic",
                                            cubic_coeff_a=-0.5, exclude_outside=1),
    "cubic_antialias_downsample": _resize(_img((1, 1, 11, 13)), sizes=[1, 1, 4, 5],
                                          mode="cubic", antialias=1),
    "tf_crop_and_resize_extrapolates": _resize(
        _img(), sizes=[1, 2, 4, 6], roi=[0, 0, -0.2, 0.1, 1, 1, 0.9, 1.3], mode="linear",
        coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=7.0),
    "axes_subset_with_sizes_not_larger": _resize(
        _img(), sizes=[9, 9], axes=[2, 3], keep_aspect_ratio_policy="not_larger"),
    "axes_reordered_with_scales_not_smaller_sizes": _resize(
        _img(), sizes=[4, 3], axes=[3, 2], mode="linear", keep_aspect_ratio_policy="not_smaller"),
    "negative_axes": _resize(_img(), [2.0, 0.5], axes=[-1, -2], mode="linear"),
}
RESIZE["uint8_nearest_is_exact"] = Case(
    "Resize", {"x": np.random.default_rng(3).integers(0, 255, (1, 1, 4, 5)).astype(np.uint8)},
    {"scales": np.array([1, 1, 2, 3], np.float32)}, ["x", "", "scales"], {}, 19,
    TensorProto.UINT8)
RESIZE["resize10_nearest_legacy"] = Case("Resize", {"x": _img()},
                                         {"scales": np.array([1, 1, 2, 0.5], np.float32)},
                                         ["x", "scales"], {"mode": "nearest"}, 10)


@pytest.mark.parametrize("name", list(RESIZE))
def test_resize_matches_onnxruntime(name: str) -> None:
    got, want = _run_both(RESIZE[name])
    if want.dtype.kind in "iu":
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_resize_nearest_is_a_single_gather_per_axis() -> None:
    """Nearest resize copies elements: no multiplies, so it is exact for every dtype."""
    case = RESIZE["nearest_upsample_scales_round_prefer_floor"]
    model_ops = _op_names(case)
    assert model_ops.count("graph.gather") == 2
    assert "graph.binary" not in model_ops


def test_resize_skips_identity_axes() -> None:
    case = _resize(_img(), [1, 1, 1, 2], mode="linear")
    assert _op_names(case).count("graph.gather") == 1


def _op_names(case: Case) -> list[str]:
    return [op.name for op in import_onnx(_model(case)).program.main.body.ops]


def test_upsample9_nearest_integer_scales() -> None:
    x = _img((1, 2, 3, 4))
    case = Case("Upsample", {"x": x}, {"scales": np.array([1, 1, 2, 3], np.float32)},
                ["x", "scales"], {"mode": "nearest"}, 9)
    got, want = _run_both(case)
    np.testing.assert_array_equal(got, want)


def test_upsample9_linear_fractional_scales() -> None:
    case = Case("Upsample", {"x": _img((1, 1, 4, 5))},
                {"scales": np.array([1, 1, 1.5, 2.5], np.float32)}, ["x", "scales"],
                {"mode": "linear"}, 9)
    got, want = _run_both(case)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------- GridSample


def _grid_case(name: str, spatial: tuple[int, ...], out: tuple[int, ...], **attrs: object
               ) -> Case:
    rng = _rng(name)
    x = rng.standard_normal((2, 3, *spatial)).astype(np.float32)
    grid = rng.uniform(-1.4, 1.4, (2, *out, len(spatial))).astype(np.float32)
    return Case("GridSample", {"x": x, "grid": grid}, attrs=dict(attrs), opset=20)


GRID = {
    f"{mode}_{pad}_align{ac}": _grid_case(f"{mode}{pad}{ac}", (5, 6), (4, 3), mode=mode,
                                          padding_mode=pad, align_corners=ac)
    for mode in ("nearest", "linear", "cubic")
    for pad in ("zeros", "border", "reflection")
    for ac in (0, 1)
}
GRID["linear_3d_reflection"] = _grid_case("3d", (3, 4, 5), (2, 3, 2), mode="linear",
                                          padding_mode="reflection")
GRID["nearest_3d_zeros_align"] = _grid_case("3dn", (3, 4, 5), (2, 2, 2), mode="nearest",
                                            align_corners=1)


@pytest.mark.parametrize("name", list(GRID))
def test_grid_sample_matches_onnxruntime(name: str) -> None:
    got, want = _run_both(GRID[name])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_grid_sample16_bilinear_name() -> None:
    case = _grid_case("gs16", (4, 4), (3, 3), mode="bilinear", padding_mode="border")
    case.opset = 16
    got, want = _run_both(case)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------- others


def test_affine_grid_2d_and_3d() -> None:
    rng = _rng("affine")
    for size, ac in (([2, 3, 4, 5], 0), ([2, 3, 4, 5], 1), ([2, 1, 3, 4, 2], 0)):
        k = len(size) - 2
        theta = rng.standard_normal((2, k, k + 1)).astype(np.float32)
        case = Case("AffineGrid", {"theta": theta}, {"size": np.array(size, np.int64)},
                    ["theta", "size"], {"align_corners": ac}, 20)
        got, want = _run_both(case)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("attrs", [{}, {"strides": [2, 1], "pads": [1, 0, 1, 2],
                                        "dilations": [1, 2]}])
def test_col2im_sums_overlapping_blocks(attrs: dict) -> None:
    image, block = [6, 5], [2, 3]
    strides = attrs.get("strides", [1, 1])
    pads = attrs.get("pads", [0, 0, 0, 0])
    dil = attrs.get("dilations", [1, 1])
    blocks = [(image[i] + pads[i] + pads[i + 2] - dil[i] * (block[i] - 1) - 1) // strides[i] + 1
              for i in range(2)]
    x = _rng(str(attrs)).standard_normal((2, 3 * 6, blocks[0] * blocks[1])).astype(np.float32)
    case = Case("Col2Im", {"x": x}, {"image": np.array(image, np.int64),
                                     "block": np.array(block, np.int64)},
                ["x", "image", "block"], attrs, 18)
    got, want = _run_both(case)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


DFT = {
    "real_forward": ({"axis": 1}, (2, 8, 1), None),
    "complex_inverse": ({"axis": 1, "inverse": 1}, (2, 6, 2), None),
    "onesided_padded_length": ({"axis": 1, "onesided": 1}, (2, 6, 1), 9),
    "truncated_length_axis2": ({"axis": 2}, (2, 3, 7, 2), 5),
}


@pytest.mark.parametrize("name", list(DFT))
def test_dft17_matches_onnxruntime(name: str) -> None:
    attrs, shape, length = DFT[name]
    x = _rng(name).standard_normal(shape).astype(np.float32)
    consts = {} if length is None else {"n": np.array(length, np.int64)}
    case = Case("DFT", {"x": x}, consts, ["x", "n"] if length else ["x"], attrs, 17)
    got, want = _run_both(case)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_stft_with_runtime_window() -> None:
    rng = _rng("stft")
    x = rng.standard_normal((2, 40, 1)).astype(np.float32)
    w = rng.uniform(0.1, 1, 8).astype(np.float32)
    case = Case("STFT", {"x": x, "w": w}, {"step": np.array(5, np.int64)},
                ["x", "step", "w"], {"onesided": 1}, 17)
    got, want = _run_both(case)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("op", ["HannWindow", "HammingWindow", "BlackmanWindow"])
@pytest.mark.parametrize("periodic", [0, 1])
def test_windows_are_constants(op: str, periodic: int) -> None:
    case = Case(op, {}, {"size": np.array(10, np.int64)}, ["size"], {"periodic": periodic}, 17)
    got, want = _run_both(case)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_mel_weight_matrix_is_a_constant() -> None:
    consts = {"bins": np.array(8, np.int64), "dft": np.array(64, np.int64),
              "rate": np.array(8000, np.int64), "lo": np.array(100, np.float32),
              "hi": np.array(3500, np.float32)}
    case = Case("MelWeightMatrix", {}, consts, list(consts), {}, 17)
    got, want = _run_both(case)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_resize_with_runtime_scales_asks_for_a_constant() -> None:
    """Resize tables are compile-time; runtime scales are refused with a fix, not mis-imported."""
    from portc.compiler.errors import UnsupportedOpsError

    case = Case("Resize", {"x": _img(), "scales": np.array([1, 1, 2, 2], np.float32)},
                order=["x", "", "scales"])
    with pytest.raises(UnsupportedOpsError, match="compile time"):
        import_onnx(_model(case))
