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
from xdsl.ir import SSAValue

from portc.compiler.builder import GraphBuilder
from portc.compiler.frontends.onnx.registry import NodeError, OnnxContext, Outputs, onnx_op
from portc.dialects import dtypes
from portc.dialects import graph as g

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
            # float32 product, as ONNX Runtime (and PyTorch's double scale) size it: 1.8 x 5 is 9
            sizes[d] = int(np.float32(scales_in[i]) * np.float32(shape[d]))
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
    sizes = [int(np.float32(s) * np.float32(d)) for s, d in zip(sc, shape, strict=True)]
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


# ============================================================================ GridSample


def _cubic_weights(b: GraphBuilder, t: SSAValue, a: float = -0.75) -> list[SSAValue]:
    """Keys cubic weights for taps -1, 0, 1, 2 at fractional offset ``t`` in [0, 1)."""

    def c(v: float) -> SSAValue:
        return b.scalar(v, t)

    def near(x: SSAValue) -> SSAValue:  # |x| <= 1: ((a+2)x - (a+3)) x^2 + 1
        p = b.binary("sub", b.binary("mul", c(a + 2), x), c(a + 3))
        return b.binary("add", b.binary("mul", b.binary("mul", p, x), x), c(1.0))

    def far(x: SSAValue) -> SSAValue:  # 1 < |x| < 2: ((a x - 5a) x + 8a) x - 4a
        p = b.binary("sub", b.binary("mul", c(a), x), c(5 * a))
        p = b.binary("add", b.binary("mul", p, x), c(8 * a))
        return b.binary("sub", b.binary("mul", p, x), c(4 * a))

    one_m = b.binary("sub", c(1.0), t)
    return [far(b.binary("add", t, c(1.0))), near(t), near(one_m),
            far(b.binary("sub", c(2.0), t))]


def _reflect(b: GraphBuilder, v: SSAValue, lo: float, hi: float) -> SSAValue:
    """Reflect ``v`` at the borders until it lies in [lo, hi] (values inside stay bit-exact)."""
    rng = hi - lo
    if rng <= 0:
        return b.binary("mul", v, b.scalar(0.0, v))  # a single-pixel axis: everything maps to 0
    m = b.binary("mod", b.binary("sub", v, b.scalar(lo, v)), b.scalar(2 * rng, v))
    folded = b.where(b.binary("gt", m, b.scalar(rng, v)),
                     b.binary("sub", b.scalar(2 * rng, v), m), m)
    r = b.binary("add", folded, b.scalar(lo, v))
    outside = b.binary("or", b.binary("lt", v, b.scalar(lo, v)), b.binary("gt", v, b.scalar(hi, v)))
    return b.where(outside, r, v)


def _clamp(b: GraphBuilder, v: SSAValue, lo: float, hi: float) -> SSAValue:
    return b.binary("min", b.binary("max", v, b.scalar(lo, v)), b.scalar(hi, v))


@onnx_op("GridSample")
def grid_sample(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    """Sample ``X`` [N, C, D...] at the runtime ``grid`` [N, O..., k] (normalised coordinates,
    innermost dim first). Per tap: coordinates -> integer source indices and weights with core
    ops, a flat index into ``X`` reshaped to [N, C, S], and a ``gather_elements``; the taps'
    weighted values are summed. Follows PyTorch's grid_sampler (and ONNX Runtime): where ONNX's
    reference also pads the sample coordinate of a cubic sample, PyTorch pads only its taps."""
    b = ctx.b
    x = ctx.input(node, 0)
    grid = ctx.input(node, 1)
    xs = ctx.static_shape(x, node)
    gs = ctx.static_shape(grid, node)
    dt = ctx.spec(x).dtype
    k = len(xs) - 2
    if gs[-1] != k or len(gs) != k + 2 or gs[0] != xs[0]:
        raise NodeError(f"grid shape {gs} does not match input shape {xs}")
    mode = ctx.attr_str(node, "mode", "linear" if ctx.opset >= 20 else "bilinear")
    mode = {"bilinear": "linear", "bicubic": "cubic"}.get(mode, mode)
    if mode not in ("nearest", "linear", "cubic"):
        raise NodeError(f"unknown mode '{mode}'")
    pad = ctx.attr_str(node, "padding_mode", "zeros")
    if pad not in ("zeros", "border", "reflection"):
        raise NodeError(f"unknown padding_mode '{pad}'")
    align = bool(ctx.attr_int(node, "align_corners", 0))
    n, c, dims = xs[0], xs[1], xs[2:]
    out_sp = gs[1:-1]
    p = int(np.prod(out_sp))
    s = int(np.prod(dims))
    narrow = dt not in ("float32", "float64")
    cdt = "float32" if narrow else dt
    gridf = b.cast(grid, cdt)
    xf = b.reshape(b.cast(x, cdt), (n, c, s))

    # per spatial dim: taps as (float index, weight or None)
    taps_per_dim: list[list[tuple[SSAValue, SSAValue | None]]] = []
    for i, length in enumerate(dims):
        comp = k - 1 - i  # grid component for this dim
        v = b.reshape(b.slice(gridf, [0] * (k + 1) + [comp], [1] * (k + 2), [*gs[:-1], 1]),
                      (n, p))
        one = b.scalar(1.0, v)
        if align:
            v = b.binary("mul", b.binary("mul", b.binary("add", v, one), b.scalar(0.5, v)),
                         b.scalar(float(length - 1), v))
            lo, hi = 0.0, float(length - 1)
        else:
            v = b.binary("mul", b.binary("sub", b.binary("mul", b.binary("add", v, one),
                                                        b.scalar(float(length), v)), one),
                         b.scalar(0.5, v))
            lo, hi = -0.5, length - 0.5
        if mode == "nearest":
            v = b.unary("round", v)  # half to even, as PyTorch's nearbyint
        if mode == "cubic":
            pass  # PyTorch/ORT pad each cubic tap, not the sample coordinate
        elif pad == "border":
            outside = b.binary("or", b.binary("lt", v, b.scalar(lo, v)),
                               b.binary("gt", v, b.scalar(hi, v)))
            v = b.where(outside, _clamp(b, v, 0.0, float(length - 1)), v)
        elif pad == "reflection":
            v = _reflect(b, v, lo, hi)
        if mode == "nearest":
            taps_per_dim.append([(v, None)])
            continue
        f = b.unary("floor", v)
        t = b.binary("sub", v, f)
        if mode == "linear":
            taps_per_dim.append([(f, b.binary("sub", one, t)),
                                 (b.binary("add", f, one), t)])
        else:
            ws = _cubic_weights(b, t)
            taps_per_dim.append([(b.binary("add", f, b.scalar(float(o), f)), w)
                                 for o, w in zip((-1, 0, 1, 2), ws, strict=True)])

    # per dim and tap: integer index into the axis and (zeros padding) validity
    resolved: list[list[tuple[SSAValue, SSAValue | None, SSAValue | None]]] = []
    for i, length in enumerate(dims):
        lo, hi = (0.0, float(length - 1)) if align else (-0.5, length - 0.5)
        row = []
        for fidx, w in taps_per_dim[i]:
            valid = None
            if pad == "zeros":
                valid = b.binary("and", b.binary("ge", fidx, b.scalar(0.0, fidx)),
                                 b.binary("le", fidx, b.scalar(float(length - 1), fidx)))
                fidx = _clamp(b, fidx, 0.0, float(length - 1))
            elif pad == "border":
                fidx = _clamp(b, fidx, 0.0, float(length - 1))
            else:
                fidx = _clamp(b, _reflect(b, fidx, lo, hi), 0.0, float(length - 1))
            row.append((b.cast(fidx, "int64"), w, valid))
        resolved.append(row)

    strides = [int(np.prod(dims[i + 1:])) for i in range(k)]
    acc: SSAValue | None = None
    for combo in np.ndindex(*[len(r) for r in resolved]):
        flat: SSAValue | None = None
        weight: SSAValue | None = None
        valid: SSAValue | None = None
        for i, j in enumerate(combo):
            ii, w, ok = resolved[i][j]
            term = ii if strides[i] == 1 else b.binary("mul", ii, b.scalar(strides[i], "int64"))
            flat = term if flat is None else b.binary("add", flat, term)
            if w is not None:
                weight = w if weight is None else b.binary("mul", weight, w)
            if ok is not None:
                valid = ok if valid is None else b.binary("and", valid, ok)
        assert flat is not None
        idx = b.broadcast(b.reshape(flat, (n, 1, p)), (n, c, p))
        val = b.one(g.GatherElementsOp, [xf, idx], {"axis": 2})
        if valid is not None:
            val = b.where(b.reshape(valid, (n, 1, p)), val, b.scalar(0.0, val))
        if weight is not None:
            val = b.binary("mul", val, b.reshape(weight, (n, 1, p)))
        acc = val if acc is None else b.binary("add", acc, val)
    assert acc is not None
    return [b.cast(b.reshape(acc, (n, c, *out_sp)), dt)]


# ============================================================================ AffineGrid, Col2Im


@onnx_op("AffineGrid")
def affine_grid(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    """``grid[n, ...] = theta[n] @ [x, y(, z), 1]``: the homogeneous base grid depends only on the
    compile-time ``size``, so the op is one batched matmul against a constant."""
    b = ctx.b
    theta = ctx.input(node, 0)
    size = ctx.const_ints(node, 1, "size")
    assert size is not None
    align = bool(ctx.attr_int(node, "align_corners", 0))
    sp = size[2:]
    k = len(sp)
    if k not in (2, 3):
        raise NodeError(f"supports 2-D and 3-D grids, got size {size}")
    dt = ctx.spec(theta).dtype
    axes = []
    for length in sp:
        if align:
            axes.append(np.linspace(-1.0, 1.0, length) if length > 1 else np.zeros(length))
        else:
            axes.append((2.0 * np.arange(length) + 1.0) / length - 1.0)
    mesh = np.meshgrid(*axes, indexing="ij")  # D/H/W order
    comps = [m.reshape(-1) for m in reversed(mesh)]  # x (innermost) first
    base = np.stack([*comps, np.ones_like(comps[0])], axis=1)  # [S, k + 1]
    out = b.matmul(b.const(base, dt, hint="affine_base"), b.transpose(theta, (0, 2, 1)))
    return [b.reshape(out, (size[0], *sp, k))]


@onnx_op("Col2Im")
def col2im(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    """Sum sliding blocks back into an image: the block -> pixel map is compile-time, so the op
    is a ``scatter_elements`` (add) of the in-bounds columns onto zeros."""
    b = ctx.b
    x = ctx.input(node, 0)
    image = ctx.const_ints(node, 1, "image_shape")
    block = ctx.const_ints(node, 2, "block_shape")
    assert image is not None and block is not None
    nd = len(image)
    dil = ctx.attr_ints(node, "dilations", [1] * nd) or [1] * nd
    pads = ctx.attr_ints(node, "pads", [0] * 2 * nd) or [0] * 2 * nd
    strides = ctx.attr_ints(node, "strides", [1] * nd) or [1] * nd
    n, ckl, length = ctx.static_shape(x, node)
    kprod = int(np.prod(block))
    if ckl % kprod:
        raise NodeError(f"input dim 1 ({ckl}) is not a multiple of the block size {kprod}")
    ch = ckl // kprod
    cols = [(image[i] + pads[i] + pads[nd + i] - dil[i] * (block[i] - 1) - 1) // strides[i] + 1
            for i in range(nd)]
    if int(np.prod(cols)) != length:
        raise NodeError(f"input has {length} blocks, the attributes give {cols}")
    koff = np.indices(block).reshape(nd, -1)  # [nd, K]
    coff = np.indices(cols).reshape(nd, -1)  # [nd, L]
    pos = (coff[:, None, :] * np.array(strides)[:, None, None]
           - np.array(pads[:nd])[:, None, None] + koff[:, :, None] * np.array(dil)[:, None, None])
    inside = np.all((pos >= 0) & (pos < np.array(image)[:, None, None]), axis=0).reshape(-1)
    flat = np.ravel_multi_index(tuple(np.clip(pos, 0, np.array(image)[:, None, None] - 1)),
                                image).reshape(-1)  # [K * L]
    src = np.nonzero(inside)[0]
    total = int(np.prod(image))
    dt = ctx.spec(x).dtype
    xr = b.reshape(x, (n, ch, kprod * length))
    vals = b.one(g.GatherOp, [xr, b.const(src, "int64", hint="col2im_src")], {"axis": 2})
    idx = b.broadcast(b.const(flat[src].reshape(1, 1, -1), "int64", hint="col2im_dst"),
                      (n, ch, len(src)))
    zeros = b.broadcast(b.scalar(0, dt), (n, ch, total))
    out = b.one(g.ScatterElementsOp, [zeros, idx, vals], {"axis": 2, "reduction": "add"})
    return [b.reshape(out, (n, ch, *image))]


# ============================================================================ signal ops


def _dft_matrix(length: int, in_c: int, n: int, inverse: bool, onesided: bool
                ) -> tuple[np.ndarray, int, int]:
    """Real matrix M with ``y = x @ M`` for x laid out [L, in_c] flattened (interleaved re/im)
    and y [n_out, out_c] flattened; samples past ``n`` are dropped, missing ones are zeros."""
    j = np.arange(length)[:, None]
    use = (j < n).astype(np.float64)
    if inverse and onesided:  # one-sided spectrum -> real signal (numpy irfft)
        kk = np.arange(length)[:, None]
        t = 2 * np.pi * kk * np.arange(n)[None, :] / n
        coef = np.where((kk == 0) | ((n % 2 == 0) & (kk == n // 2)), 1.0, 2.0)
        coef = np.where(kk <= n // 2, coef, 0.0)
        re = coef * np.cos(t) / n
        im = -coef * np.sin(t) / n
        m = np.stack([re, im], axis=1)[:, :in_c, :]  # [L, in_c, n]
        return m.reshape(length * in_c, n), n, 1
    n_out = n // 2 + 1 if onesided else n
    k = np.arange(n_out)[None, :]
    t = 2 * np.pi * j * k / n
    sign = 1.0 if inverse else -1.0
    cos, sin = np.cos(t) * use, sign * np.sin(t) * use
    scale = 1.0 / n if inverse else 1.0
    # (xr + i xi)(cos + i sin) = (xr cos - xi sin) + i (xr sin + xi cos)
    m = np.zeros((length, in_c, n_out, 2))
    m[:, 0, :, 0], m[:, 0, :, 1] = cos, sin
    if in_c == 2:
        m[:, 1, :, 0], m[:, 1, :, 1] = -sin, cos
    return (m * scale).reshape(length * in_c, n_out * 2), n_out, 2


def _dft_along(b: GraphBuilder, x: SSAValue, axis: int, n: int, inverse: bool, onesided: bool
               ) -> SSAValue:
    """DFT of ``x`` (trailing dim 1 or 2) along ``axis`` as one matmul with a constant matrix."""
    spec = g.spec_of(x)
    shape = [int(d) for d in spec.shape]  # type: ignore[arg-type]
    rank = len(shape)
    in_c = shape[-1]
    if in_c not in (1, 2):
        raise NodeError(f"the last dim must be 1 (real) or 2 (complex), got {in_c}")
    if not 0 <= axis < rank - 1:
        raise NodeError(f"axis {axis} must name a signal dim, not the complex dim")
    perm = [d for d in range(rank - 1) if d != axis] + [axis, rank - 1]
    xt = b.transpose(x, perm)
    lead = [shape[d] for d in perm[:-2]]
    m, n_out, out_c = _dft_matrix(shape[axis], in_c, n, inverse, onesided)
    xm = b.reshape(xt, (*lead, shape[axis] * in_c))
    y = b.matmul(xm, b.const(m, spec.dtype, hint="dft"))
    y = b.reshape(y, (*lead, n_out, out_c))
    inv = [perm.index(d) for d in range(rank)]
    return b.transpose(y, inv)


@onnx_op("DFT")
def dft(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    """DFT-17/20 with compile-time length and axis."""
    x = ctx.input(node, 0)
    rank = ctx.spec(x).rank
    shape = ctx.static_shape(x, node)
    if ctx.opset >= 20:
        ax = ctx.const_ints(node, 2, "axis")
        axis = -2 if ax is None else ax[0]
    else:
        axis = ctx.attr_int(node, "axis", 1)
    axis %= rank
    inverse = bool(ctx.attr_int(node, "inverse", 0))
    onesided = bool(ctx.attr_int(node, "onesided", 0))
    ln = ctx.const_ints(node, 1, "dft_length")
    if ln is not None:
        n = ln[0]
    else:
        n = 2 * (shape[axis] - 1) if inverse and onesided else shape[axis]
    return [_dft_along(ctx.b, x, axis, n, inverse, onesided)]


@onnx_op("STFT")
def stft(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    """Frames are a compile-time gather of the signal, weighted by the window, then a DFT."""
    b = ctx.b
    x = ctx.input(node, 0)
    bsz, length, c = ctx.static_shape(x, node)
    step = ctx.const_ints(node, 1, "frame_step")
    assert step is not None
    window = ctx.opt_input(node, 2)
    fl = ctx.const_ints(node, 3, "frame_length")
    if fl is not None:
        frame = fl[0]
    elif window is not None:
        frame = ctx.static_shape(window, node)[0]
    else:
        frame = length
    frames = 1 + (length - frame) // step[0]
    idx = np.arange(frames)[:, None] * step[0] + np.arange(frame)[None, :]
    xf = b.one(g.GatherOp, [x, b.const(idx, "int64", hint="frames")], {"axis": 1})
    if window is not None:
        xf = b.binary("mul", xf, b.reshape(b.cast(window, ctx.spec(x).dtype), (frame, 1)))
    onesided = bool(ctx.attr_int(node, "onesided", 1))
    return [_dft_along(b, xf, 2, frame, False, onesided)]


def _window(kind: str, size: int, periodic: bool) -> np.ndarray:
    n = np.arange(size, dtype=np.float64)
    den = size if periodic else size - 1
    if kind == "HannWindow":
        return np.sin(n * np.pi / den) ** 2
    if kind == "HammingWindow":
        a = 25.0 / 46.0
        return a - np.cos(n * np.pi * 2 / den) * (1 - a)
    return 0.42 - 0.5 * np.cos(n * 2 * np.pi / den) + 0.08 * np.cos(n * 4 * np.pi / den)


@onnx_op("HannWindow", "HammingWindow", "BlackmanWindow")
def window_fn(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    """Windows of compile-time size are constants."""
    size = ctx.const_ints(node, 0, "size")
    assert size is not None
    periodic = bool(ctx.attr_int(node, "periodic", 1))
    dt = ctx.onnx_dtype(ctx.attr_int(node, "output_datatype", onnx.TensorProto.FLOAT), node)
    return [ctx.b.const(_window(node.op_type, size[0], periodic), dt, hint=node.op_type)]


@onnx_op("MelWeightMatrix")
def mel_weight_matrix(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    """The triangular mel filter bank [dft_length // 2 + 1, num_mel_bins] as a constant."""
    vals = [ctx.const_input(node, i, w) for i, w in enumerate(
        ("num_mel_bins", "dft_length", "sample_rate", "lower_edge_hertz", "upper_edge_hertz"))]
    if any(v is None for v in vals):
        raise NodeError("needs all five inputs")
    bins, dft_len, rate = (int(np.asarray(v).reshape(-1)[0]) for v in vals[:3])
    lo, hi = (np.asarray(v).reshape(-1)[0] for v in vals[3:])
    nspec = dft_len // 2 + 1
    fb = np.arange(0, bins + 2)
    lo_mel = 2595 * np.log1p(lo / 700) / np.log(10)
    hi_mel = 2595 * np.log1p(hi / 700) / np.log(10)
    step = (hi_mel - lo_mel) / fb.shape[0]
    freq = 700 * np.expm1((fb * step + lo_mel) / 2595 * np.log(10))
    fbin = (((dft_len + 1) * freq) // rate).astype(int)
    out = np.zeros((nspec, bins))
    for i in range(bins):
        left, center, right = fbin[i], fbin[i + 1], fbin[i + 2]
        if center == left:
            out[center, i] = 1
        else:
            for j in range(left, center + 1):
                out[j, i] = (j - left) / (center - left)
        if right > center:
            for j in range(center, right):
                out[j, i] = (right - j) / (right - center)
    dt = ctx.onnx_dtype(ctx.attr_int(node, "output_datatype", onnx.TensorProto.FLOAT), node)
    return [ctx.b.const(out, dt, hint="mel")]
