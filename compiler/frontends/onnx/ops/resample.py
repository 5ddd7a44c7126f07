"""ONNX resampling and signal ops decomposed into graph-dialect core ops.

Resize/Upsample are separable: for each resized axis the source positions and weights depend only
on shapes and attributes, so they are computed at compile time (with the same per-axis algorithm
as ONNX's reference implementation) and the op becomes ``gather`` + ``mul`` + ``reduce sum`` per
axis, or a single ``gather`` when every output picks exactly one source (nearest): exact and
trivially lowered by every target. GridSample's sample positions come from a runtime grid, so its
indices and weights are computed at run time with core ops (floor, cast, clamp, gather). The
signal ops (DFT, STFT, windows, mel matrix) have compile-time lengths, so their transforms are
matmuls against constant matrices; complex values use ONNX's trailing dim of 2.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx
from portc.compiler.builder import GraphBuilder
from portc.compiler.frontends.onnx.registry import NodeError, OnnxContext, Outputs, onnx_op
from portc.dialects import dtypes
from portc.dialects import graph as g
from xdsl.ir import SSAValue

# ============================================================================ Resize tables

Coeffs = Callable[[float, float], np.ndarray]


def _nearest_coeffs(mode: str) -> Coeffs:
    def fn(ratio: float, scale: float) -> np.ndarray:
        if float(ratio).is_integer():
            return np.array([0.0, 1.0])
        if mode == "round_prefer_floor":
            return np.array([ratio <= 0.5, ratio > 0.5], dtype=np.float64)
        if mode == "round_prefer_ceil":
            return np.array([ratio < 0.5, ratio >= 0.5], dtype=np.float64)
        if mode == "floor":
            return np.array([1.0, 0.0])
        if mode == "ceil":
            return np.array([0.0, 1.0])
        raise NodeError(f"unknown nearest_mode '{mode}'")

    return fn


def _linear_coeffs(antialias: bool) -> Coeffs:
    def fn(ratio: float, scale: float) -> np.ndarray:
        if not antialias:
            return np.array([1 - ratio, ratio])
        scale = min(scale, 1.0)
        start = int(np.floor(-1 / scale) + 1)
        footprint = 2 - 2 * start
        args = (np.arange(start, start + footprint) - ratio) * scale
        c = np.clip(1 - np.abs(args), 0, 1)
        return c / c.sum()

    return fn


def _cubic_coeffs(a: float, antialias: bool) -> Coeffs:
    def kernel(x: float) -> float:
        x = abs(x)
        if x <= 1:
            return (a + 2) * x**3 - (a + 3) * x**2 + 1
        if x < 2:
            return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
        return 0.0

    def fn(ratio: float, scale: float) -> np.ndarray:
        if not antialias:
            return np.array([kernel(ratio + 1), kernel(ratio), kernel(1 - ratio),
                             kernel(2 - ratio)])
        s = min(scale, 1.0)
        i0 = int(np.floor(-2 / s) + 1)
        c = np.array([kernel(s * (i - ratio)) for i in range(i0, 2 - i0)])
        return c / c.sum()

    return fn


def _source_coords(ctm: str, y: np.ndarray, scale: float, in_w: int, out_w_int: int,
                   roi: tuple[float, float] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Output index -> source coordinate; also which outputs extrapolate (tf_crop_and_resize)."""
    out_w = scale * in_w
    if ctm == "align_corners":
        x = np.zeros(out_w_int) if out_w == 1 else y * (in_w - 1) / (out_w - 1)
    elif ctm == "asymmetric":
        x = y / scale
    elif ctm == "tf_crop_and_resize":
        r0, r1 = roi if roi is not None else (0.0, 1.0)
        if out_w == 1:
            x = np.full(out_w_int, (r1 - r0) * (in_w - 1) / 2)
        else:
            x = y * (r1 - r0) * (in_w - 1) / (out_w - 1)
        x = x + r0 * (in_w - 1)
        return x, (x < 0) | (x > in_w - 1)
    elif ctm == "pytorch_half_pixel":
        x = np.full(out_w_int, -0.5) if out_w == 1 else (y + 0.5) / scale - 0.5
    elif ctm == "half_pixel":
        x = (y + 0.5) / scale - 0.5
    elif ctm == "half_pixel_symmetric":
        offset = in_w / 2 * (1 - out_w_int / out_w)
        x = offset + (y + 0.5) / scale - 0.5
    else:
        raise NodeError(f"unknown coordinate_transformation_mode '{ctm}'")
    return x, None


def resize_tables(in_w: int, out_w: int, scale: float, ctm: str, coeffs: Coeffs,
                  exclude_outside: bool, roi: tuple[float, float] | None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Per output position of one axis: source indices [out, n] (clamped, i.e. edge padding),
    weights [out, n] and the extrapolation mask [out] (or None). Follows ONNX's reference."""
    y = np.arange(out_w, dtype=np.float64)
    x, extrap = _source_coords(ctm, y, scale, in_w, out_w, roi)
    xi = np.floor(x).astype(np.int64)
    ratios = np.where(x == xi, 1.0, x - xi)
    rows = [np.asarray(coeffs(float(r), scale), dtype=np.float64) for r in ratios]
    n = len(rows[0]) if rows else 1
    w = np.stack(rows) if rows else np.zeros((0, n))
    pad = int(np.ceil(n / 2))
    xp = x + pad
    p = np.floor(xp).astype(np.int64)
    frac = xp - p
    if n % 2 == 0:
        off = np.where(frac == 0, -(n // 2), -(n // 2) + 1)
    else:
        base = -((n - 1) // 2)
        off = np.where(frac <= 0.5, base, base + 1)
    idx = (p + off)[:, None] + np.arange(n)[None, :] - pad
    if exclude_outside:
        w = np.where((idx < 0) | (idx >= in_w), 0.0, w)
        s = w.sum(axis=-1, keepdims=True)
        w = w / np.where(s == 0, 1.0, s)
    idx = np.clip(idx, 0, in_w - 1)
    if extrap is not None and not extrap.any():
        extrap = None
    return idx, w, extrap


def _apply_axis_tables(b: GraphBuilder, x: SSAValue, axis: int, idx: np.ndarray,
                       w: np.ndarray, extrap: np.ndarray | None, extrap_value: float
                       ) -> SSAValue:
    """Resample ``x`` along ``axis`` with compile-time index/weight tables."""
    spec = g.spec_of(x)
    rank = spec.rank
    out_w = idx.shape[0]
    tail = (1,) * (rank - axis - 1)
    nz = w != 0
    if out_w and (nz.sum(axis=1) == 1).all() and np.allclose(w[nz], 1.0, rtol=0, atol=0):
        # every output copies one source element: a single exact gather
        y = b.one(g.GatherOp, [x, b.const(idx[nz], "int64", hint="resize_idx")], {"axis": axis})
    else:
        keep = nz.any(axis=0)  # drop taps that are zero everywhere
        idx, w = idx[:, keep], w[:, keep]
        y = b.one(g.GatherOp, [x, b.const(idx, "int64", hint="resize_idx")], {"axis": axis})
        wt = b.const(w.reshape(out_w, w.shape[1], *tail), spec.dtype, hint="resize_w")
        y = b.reduce("sum", b.binary("mul", y, wt), [axis + 1], False)
    if extrap is not None:
        m = b.const(extrap.reshape(out_w, *tail), "bool", hint="extrap")
        y = b.where(m, b.scalar(extrap_value, y), y)
    return y


def _resample(ctx: OnnxContext, node: onnx.NodeProto, x: SSAValue, out_sizes: Sequence[int],
              scales: Sequence[float], axes: Sequence[int], ctm: str,
              coeffs_for_axis: Callable[[int], Coeffs], exclude_outside: bool,
              roi: Sequence[float] | None, extrap_value: float) -> SSAValue:
    b = ctx.b
    shape = ctx.static_shape(x, node)
    rank = len(shape)
    dt = ctx.spec(x).dtype
    narrow = dt not in ("float32", "float64")
    y = b.cast(x, "float32") if narrow else x
    for ax in axes:
        in_w, out_w, sc = shape[ax], int(out_sizes[ax]), float(scales[ax])
        r = None if roi is None else (float(roi[ax]), float(roi[rank + ax]))
        if np.isclose(sc, 1.0) and out_w == in_w and (
                r is None or (np.isclose(r[0], 0.0) and np.isclose(r[1], 1.0))):
            continue
        if in_w == 0 or out_w == 0:
            raise NodeError("resizing an empty axis is not supported")
        idx, w, ext = resize_tables(in_w, out_w, sc, ctm, coeffs_for_axis(ax), exclude_outside, r)
        y = _apply_axis_tables(b, y, ax, idx, w, ext, extrap_value)
    if narrow:
        if dtypes.dtype(dt).kind in ("int", "uint"):
            info = np.iinfo(dtypes.dtype(dt).numpy)
            y = b.unary("round", y)
            y = b.binary("min", b.binary("max", y, b.scalar(float(info.min), y)),
                         b.scalar(float(info.max), y))
        y = b.cast(y, dt)
    return y


def _const_floats(ctx: OnnxContext, node: onnx.NodeProto, i: int, what: str) -> list[float] | None:
    arr = ctx.const_input(node, i, what)
    if arr is None or np.asarray(arr).size == 0:
        return None
    return [float(v) for v in np.asarray(arr).reshape(-1)]


@onnx_op("Resize")
def resize(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    """Resize-10..19 with compile-time scales or sizes (see the module docstring)."""
    x = ctx.input(node, 0)
    shape = ctx.static_shape(x, node)
    rank = len(shape)
    mode = ctx.attr_str(node, "mode", "nearest")
    if ctx.opset < 11:
        scales_in = _const_floats(ctx, node, 1, "scales")
        sizes_in, roi = None, None
        ctm, nmode = "asymmetric", "legacy"
    else:
        roi = _const_floats(ctx, node, 1, "roi")
        scales_in = _const_floats(ctx, node, 2, "scales")
        sizes_f = _const_floats(ctx, node, 3, "sizes")
        sizes_in = None if sizes_f is None else [int(v) for v in sizes_f]
        ctm = ctx.attr_str(node, "coordinate_transformation_mode", "half_pixel")
        nmode = ctx.attr_str(node, "nearest_mode", "round_prefer_floor")
    axes = [a % rank for a in (ctx.attr_ints(node, "axes") or range(rank))]
    policy = ctx.attr_str(node, "keep_aspect_ratio_policy", "stretch")
    antialias = bool(ctx.attr_int(node, "antialias", 0))
    a = ctx.attr_float(node, "cubic_coeff_a", -0.75)
    exclude = bool(ctx.attr_int(node, "exclude_outside", 0))
    extrap = ctx.attr_float(node, "extrapolation_value", 0.0)
    if roi is not None and len(roi) == 2 * len(axes) and len(axes) != rank:
        full = [0.0] * rank + [1.0] * rank
        for i, d in enumerate(axes):
            full[d], full[rank + d] = roi[i], roi[len(axes) + i]
        roi = full
    if ctm != "tf_crop_and_resize":
        roi = None

    scales = [1.0] * rank
    sizes = list(shape)
    if sizes_in is not None:
        if len(sizes_in) != len(axes):
            raise NodeError(f"sizes has {len(sizes_in)} entries for {len(axes)} axes")
        for i, d in enumerate(axes):
            sizes[d] = sizes_in[i]
            scales[d] = sizes_in[i] / shape[d]
        if policy != "stretch":
            sel = [scales[d] for d in axes]
            if policy not in ("not_larger", "not_smaller"):
                raise NodeError(f"unknown keep_aspect_ratio_policy '{policy}'")
            s = min(sel) if policy == "not_larger" else max(sel)
            for d in axes:
                scales[d] = s
                sizes[d] = int(s * shape[d] + 0.5)
    elif scales_in is not None:
        if len(scales_in) != len(axes):
            raise NodeError(f"scales has {len(scales_in)} entries for {len(axes)} axes")
        for i, d in enumerate(axes):
            scales[d] = scales_in[i]
            sizes[d] = int(np.float64(scales_in[i]) * shape[d])
    else:
        raise NodeError("needs either scales or sizes")

    if mode == "nearest":
        if antialias:
            raise NodeError("antialias is not defined for mode 'nearest'")

        def coeffs(ax: int) -> Coeffs:
            if nmode == "legacy":  # Resize-10: truncate when upsampling, ceil when downsampling
                return _nearest_coeffs("ceil" if scales[ax] < 1 else "floor")
            return _nearest_coeffs(nmode)
    elif mode == "linear":
        def coeffs(ax: int) -> Coeffs:
            return _linear_coeffs(antialias)
    elif mode == "cubic":
        def coeffs(ax: int) -> Coeffs:
            return _cubic_coeffs(a, antialias)
    else:
        raise NodeError(f"unknown mode '{mode}'")
    return [_resample(ctx, node, x, sizes, scales, axes, ctm, coeffs, exclude, roi, extrap)]


@onnx_op("Upsample")
def upsample(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    """Upsample-7/9: asymmetric coordinates, nearest truncates; scales from the attribute (7)
    or a compile-time input (9)."""
    x = ctx.input(node, 0)
    shape = ctx.static_shape(x, node)
    rank = len(shape)
    if ctx.has_input(node, 1):
        sc = _const_floats(ctx, node, 1, "scales")
    else:
        v = ctx.attr(node, "scales", None)
        sc = None if v is None else [float(s) for s in v]  # type: ignore[union-attr]
    if sc is None or len(sc) != rank:
        raise NodeError("needs one scale per dimension")
    mode = ctx.attr_str(node, "mode", "nearest")
    sizes = [int(np.float64(s) * d) for s, d in zip(sc, shape, strict=True)]
    if mode == "nearest":
        def coeffs(ax: int) -> Coeffs:
            return _nearest_coeffs("ceil" if sc[ax] < 1 else "floor")
    elif mode in ("linear", "bilinear"):
        def coeffs(ax: int) -> Coeffs:
            return _linear_coeffs(False)
    else:
        raise NodeError(f"unknown mode '{mode}'")
    return [_resample(ctx, node, x, sizes, sc, list(range(rank)), "asymmetric", coeffs, False,
                      None, 0.0)]
