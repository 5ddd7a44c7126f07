"""ONNX tensor, shape, indexing and control-flow decompositions into graph-dialect core ops.

Shapes, axes, pads and counts become op properties, so they must be known at import: they come
from constants, from known graph inputs (``const_value`` also evaluates small shape-arithmetic
chains rooted in those), or the node is refused with a reason. Ops whose output shape depends on
data (NonZero, Unique, Compress) and If are supported only when the deciding value is known;
their result is then a constant or the inlined taken branch.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper
from xdsl.ir import SSAValue
from xdsl.utils.exceptions import VerifyException

from portc.compiler.frontends.onnx.registry import NodeError, OnnxContext, Outputs, onnx_op
from portc.dialects import dtypes
from portc.dialects import graph as g


@onnx_op("Constant")
def constant(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        v = ctx.attr(node, key)
        if v is None:
            continue
        if key in ("value_float", "value_floats"):
            arr = np.asarray(v, dtype=np.float32)
        elif key in ("value_int", "value_ints"):
            arr = np.asarray(v, dtype=np.int64)
        else:
            arr = np.asarray(v)
        return [ctx.b.const(arr, hint=node.output[0])]
    raise NodeError("only numeric Constant values are supported (not strings or sparse tensors)")


@onnx_op("Identity")
def identity(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    return [ctx.input(node, 0)]


# ============================================================================================
# Helpers


def _norm_axis(axis: int, rank: int, what: str = "axis") -> int:
    """Normalise a possibly negative ONNX axis, naming the bad value rather than crashing."""
    if not -rank <= axis < max(rank, 1):
        raise NodeError(f"{what} {axis} is out of range for a rank-{rank} input")
    return axis % rank if rank else 0


def _axes_attr_or_input(ctx: OnnxContext, node: onnx.NodeProto, input_since: int, i: int,
                        what: str = "axes") -> list[int] | None:
    """``axes`` moved from an attribute to an input in several ops (opset 13, 18)."""
    if ctx.opset >= input_since:
        return ctx.const_ints(node, i, what)
    return ctx.attr_ints(node, "axes")


def _dims(ctx: OnnxContext, v: SSAValue, node: onnx.NodeProto) -> tuple[int, ...]:
    return ctx.static_shape(v, node)


def _scalar_of(ctx: OnnxContext, v: SSAValue) -> SSAValue:
    """A one-element tensor as a 0-d one, so that it broadcasts like a scalar."""
    return ctx.b.reshape(v, ())


# ============================================================================================
# Shapes


@onnx_op("Shape")
def shape_(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    s = ctx.spec(ctx.input(node, 0))
    r = s.rank
    start = ctx.attr_int(node, "start", 0)
    end = ctx.attr_int(node, "end", r)
    start = min(max(start + r if start < 0 else start, 0), r)
    end = min(max(end + r if end < 0 else end, 0), r)
    dims = s.shape[start:end] if end > start else ()
    if any(d is None for d in dims):
        raise NodeError(f"the input shape {s} has dynamic dims; bind them with --dim so that "
                        "Shape folds to a constant")
    return [ctx.b.const(np.asarray(dims, dtype=np.int64), hint=node.output[0])]


@onnx_op("Size")
def size_(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    s = ctx.spec(ctx.input(node, 0))
    if not s.is_static:
        raise NodeError(f"the input shape {s} has dynamic dims; bind them with --dim")
    return [ctx.b.const(np.asarray(s.numel(), dtype=np.int64), hint=node.output[0])]


@onnx_op("ConstantOfShape")
def constant_of_shape(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    shape = ctx.const_ints(node, 0, "shape") or []
    v = ctx.attr(node, "value")
    val = np.zeros((), np.float32) if v is None else np.asarray(v).reshape(())
    # broadcasting a scalar keeps huge fills as one op; small ones fold to constants
    return [ctx.b.broadcast(ctx.b.const(val, hint="fill"), shape)]


@onnx_op("Reshape")
def reshape_(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    x = ctx.input(node, 0)
    if ctx.opset < 5:
        target = ctx.attr_ints(node, "shape") or []
    else:
        target = ctx.const_ints(node, 1, "target shape") or []
    allowzero = ctx.attr_int(node, "allowzero", 0)
    src = ctx.spec(x).shape
    out: list[int | None] = []
    for i, d in enumerate(target):
        if d == 0 and not allowzero:
            if i >= len(src):
                raise NodeError(f"shape entry {i} is 0 (copy) but the input has rank {len(src)}")
            out.append(src[i])
        else:
            out.append(d)
    if out.count(-1) > 1:
        raise NodeError(f"target shape {target} has more than one -1")
    if -1 in out:
        known = [d for d in out if d != -1]
        k = out.index(-1)
        if ctx.spec(x).is_static and all(d is not None for d in known):
            rest = int(np.prod([d for d in known], dtype=np.int64))
            total = ctx.spec(x).numel()
            if rest == 0 or total % rest:
                raise NodeError(f"cannot reshape {src} into {target}")
            out[k] = total // rest
        else:
            out[k] = None
    if any(d is not None and d < 0 for d in out):
        raise NodeError(f"target shape {target} has a negative entry other than -1")
    return [ctx.b.reshape(x, out)]


@onnx_op("Flatten")
def flatten(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    x = ctx.input(node, 0)
    dims = _dims(ctx, x, node)
    r = len(dims)
    axis = ctx.attr_int(node, "axis", 1)
    if not -r <= axis <= r:
        raise NodeError(f"axis {axis} is out of range for rank {r}")
    axis = axis + r if axis < 0 else axis
    outer = int(np.prod(dims[:axis], dtype=np.int64))
    inner = int(np.prod(dims[axis:], dtype=np.int64))
    return [ctx.b.reshape(x, (outer, inner))]


@onnx_op("Squeeze")
def squeeze(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    x = ctx.input(node, 0)
    s = ctx.spec(x).shape
    axes = _axes_attr_or_input(ctx, node, 13, 1)
    if axes is None:
        if any(d is None for d in s):
            raise NodeError("Squeeze without axes needs a static input shape")
        drop = {i for i, d in enumerate(s) if d == 1}
    else:
        drop = {_norm_axis(a, len(s)) for a in axes}
        bad = [i for i in drop if s[i] not in (1, None)]
        if bad:
            raise NodeError(f"cannot squeeze dims {bad} of shape {s}: they are not 1")
    return [ctx.b.reshape(x, [1 if d is None and i in drop else d
                              for i, d in enumerate(s) if i not in drop])]


@onnx_op("Unsqueeze")
def unsqueeze(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    x = ctx.input(node, 0)
    s = list(ctx.spec(x).shape)
    axes = _axes_attr_or_input(ctx, node, 13, 1)
    if axes is None:
        raise NodeError("Unsqueeze needs axes")
    r = len(s) + len(axes)
    norm = sorted({_norm_axis(a, r) for a in axes})
    if len(norm) != len(axes):
        raise NodeError(f"axes {axes} repeat an axis")
    for a in norm:
        s.insert(a, 1)
    return [ctx.b.reshape(x, s)]


def _unsqueeze_to(ctx: OnnxContext, v: SSAValue, rank: int, axis: int) -> SSAValue:
    """A 1-D tensor laid along ``axis`` of a rank-``rank`` shape (for broadcasting)."""
    n = ctx.spec(v).shape[0]
    return ctx.b.reshape(v, [n if i == axis else 1 for i in range(rank)])


# ============================================================================================
# Data movement


@onnx_op("Transpose")
def transpose(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    x = ctx.input(node, 0)
    r = ctx.spec(x).rank
    perm = ctx.attr_ints(node, "perm") or list(reversed(range(r)))
    return [ctx.b.transpose(x, [_norm_axis(p, r, "perm entry") for p in perm])]


@onnx_op("Concat")
def concat(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    xs = ctx.inputs(node)
    axis = ctx.attr(node, "axis")
    if axis is None:
        if ctx.opset >= 4:
            raise NodeError("Concat needs an axis attribute")
        axis = 1
    ax = _norm_axis(int(axis), ctx.spec(xs[0]).rank)  # type: ignore[arg-type]
    return [ctx.b.concat(xs, ax)]


@onnx_op("Split")
def split(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    x = ctx.input(node, 0)
    dims = _dims(ctx, x, node)
    ax = _norm_axis(ctx.attr_int(node, "axis", 0), len(dims))
    n = dims[ax]
    nout = len(node.output)
    sizes: list[int] | None
    if ctx.opset >= 13 or (ctx.opset < 2 and ctx.has_input(node, 1)):
        sizes = ctx.const_ints(node, 1, "split sizes")
    else:
        sizes = ctx.attr_ints(node, "split")
    if sizes is None:
        parts = ctx.attr_int(node, "num_outputs", nout) if ctx.opset >= 18 else nout
        if parts <= 0:
            raise NodeError(f"num_outputs {parts} must be positive")
        chunk = -(-n // parts)
        if ctx.opset < 18 and n % parts:
            raise NodeError(f"dim {n} does not split into {parts} equal parts")
        sizes = [max(0, min(chunk, n - i * chunk)) for i in range(parts)]
    if sum(sizes) != n or any(s < 0 for s in sizes):
        raise NodeError(f"split sizes {sizes} do not add up to dim {n}")
    outs: list[SSAValue | None] = []
    off = 0
    for size in sizes:
        starts = [off if i == ax else 0 for i in range(len(dims))]
        counts = [size if i == ax else d for i, d in enumerate(dims)]
        outs.append(ctx.b.slice(x, starts if size else [0] * len(dims), [1] * len(dims), counts))
        off += size
    return outs


def slice_params(dim: int, start: int, end: int, step: int) -> tuple[int, int]:
    """ONNX Slice clamping -> (first index, count) for one axis."""
    if step == 0:
        raise NodeError("slice step is 0")
    if start < 0:
        start += dim
    if end < 0:
        end += dim
    if step > 0:
        start = min(max(start, 0), dim)
        end = min(max(end, 0), dim)
        count = max(0, -(-(end - start) // step))
    else:
        start = min(max(start, 0), dim - 1)
        end = min(max(end, -1), dim - 1)
        count = max(0, -(-(start - end) // -step))
    return (start if count else 0), count


@onnx_op("Slice")
def slice_(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    x = ctx.input(node, 0)
    dims = _dims(ctx, x, node)
    r = len(dims)
    if ctx.opset < 10:
        starts = ctx.attr_ints(node, "starts") or []
        ends = ctx.attr_ints(node, "ends") or []
        axes = ctx.attr_ints(node, "axes")
        steps = None
    else:
        starts = ctx.const_ints(node, 1, "starts") or []
        ends = ctx.const_ints(node, 2, "ends") or []
        axes = ctx.const_ints(node, 3, "axes")
        steps = ctx.const_ints(node, 4, "steps")
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise NodeError("starts, ends, axes and steps differ in length")
    first, step_all, counts = [0] * r, [1] * r, list(dims)
    for st, en, ax, sp in zip(starts, ends, axes, steps, strict=True):
        a = _norm_axis(ax, r)
        first[a], counts[a] = slice_params(dims[a], st, en, sp)
        step_all[a] = sp
    return [ctx.b.slice(x, first, step_all, counts)]


@onnx_op("Expand")
def expand(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    x = ctx.input(node, 0)
    shape = ctx.const_ints(node, 1, "shape") or []
    try:
        out = g.broadcast_shapes(ctx.spec(x).shape, shape)
    except VerifyException as e:
        raise NodeError(f"input shape {ctx.spec(x).shape} does not expand to {shape}") from e
    return [ctx.b.broadcast(x, out)]


@onnx_op("Tile")
def tile(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    """``tile`` = interleave a size-``r`` axis before each dim, broadcast it, merge the pairs."""
    x = ctx.input(node, 0)
    dims = _dims(ctx, x, node)
    reps = ctx.const_ints(node, 1, "repeats") or []
    if len(reps) != len(dims) or any(r < 0 for r in reps):
        raise NodeError(f"repeats {reps} must list a non-negative count per dim of {dims}")
    if all(r == 1 for r in reps):
        return [x]
    inter = [v for d in dims for v in (1, d)]
    big = [v for d, r in zip(dims, reps, strict=True) for v in (r, d)]
    y = ctx.b.broadcast(ctx.b.reshape(x, inter), big)
    return [ctx.b.reshape(y, [d * r for d, r in zip(dims, reps, strict=True)])]


@onnx_op("Pad")
def pad(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    x = ctx.input(node, 0)
    r = ctx.spec(x).rank
    mode = ctx.attr_str(node, "mode", "constant")
    if ctx.opset < 11:
        pads = ctx.attr_ints(node, "pads" if ctx.opset >= 2 else "paddings") or []
        value = ctx.attr_float(node, "value", 0.0)
        axes = None
    else:
        pads = ctx.const_ints(node, 1, "pads") or []
        cv = ctx.const_input(node, 2, "constant value")
        value = 0.0 if cv is None or np.asarray(cv).size == 0 else \
            float(np.asarray(cv).astype(np.float64).reshape(-1)[0])
        axes = ctx.const_ints(node, 3, "axes") if ctx.opset >= 18 else None
    if axes is None:
        axes = list(range(r))
    axes = [_norm_axis(a, r) for a in axes]
    if len(pads) != 2 * len(axes):
        raise NodeError(f"pads {pads} must list begins and ends for {len(axes)} axes")
    full = [0] * (2 * r)
    for i, a in enumerate(axes):
        full[a] = pads[i]
        full[r + a] = pads[len(axes) + i]
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise NodeError(f"pad mode '{mode}' is not supported")
    if all(p == 0 for p in full):
        return [x]
    return [ctx.b.one(g.PadOp, [x], {"pads": tuple(full), "mode": mode, "value": value})]


@onnx_op("CenterCropPad")
def center_crop_pad(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    """A centred crop is a pad by negative amounts, so one ``graph.pad`` does both."""
    x = ctx.input(node, 0)
    dims = _dims(ctx, x, node)
    r = len(dims)
    shape = ctx.const_ints(node, 1, "shape") or []
    axes = [_norm_axis(a, r) for a in (ctx.attr_ints(node, "axes") or range(r))]
    if len(shape) != len(axes):
        raise NodeError(f"shape {shape} must give one size per axis {axes}")
    pads = [0] * (2 * r)
    for a, want in zip(axes, shape, strict=True):
        d = want - dims[a]  # > 0 pads, < 0 crops; the extra element goes to the end
        begin = d // 2 if d >= 0 else -((-d) // 2)
        pads[a], pads[r + a] = begin, d - begin
    if all(p == 0 for p in pads):
        return [x]
    return [ctx.b.one(g.PadOp, [x], {"pads": tuple(pads), "mode": "constant", "value": 0.0})]


@onnx_op("DepthToSpace")
def depth_to_space(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    x = ctx.input(node, 0)
    dims = _dims(ctx, x, node)
    if len(dims) != 4:
        raise NodeError(f"expects a 4-D NCHW input, got {dims}")
    n, c, h, w = dims
    bs = ctx.attr_int(node, "blocksize", 0)
    if bs <= 0 or c % (bs * bs):
        raise NodeError(f"channels {c} are not divisible by blocksize^2 ({bs}^2)")
    mode = ctx.attr_str(node, "mode", "DCR")
    oc = c // (bs * bs)
    if mode == "DCR":
        y = ctx.b.transpose(ctx.b.reshape(x, (n, bs, bs, oc, h, w)), (0, 3, 4, 1, 5, 2))
    elif mode == "CRD":
        y = ctx.b.transpose(ctx.b.reshape(x, (n, oc, bs, bs, h, w)), (0, 1, 4, 2, 5, 3))
    else:
        raise NodeError(f"unknown mode '{mode}'")
    return [ctx.b.reshape(y, (n, oc, h * bs, w * bs))]


@onnx_op("SpaceToDepth")
def space_to_depth(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    x = ctx.input(node, 0)
    dims = _dims(ctx, x, node)
    if len(dims) != 4:
        raise NodeError(f"expects a 4-D NCHW input, got {dims}")
    n, c, h, w = dims
    bs = ctx.attr_int(node, "blocksize", 0)
    if bs <= 0 or h % bs or w % bs:
        raise NodeError(f"spatial dims {h}x{w} are not divisible by blocksize {bs}")
    mode = ctx.attr_str(node, "mode", "DCR")
    if mode not in ("DCR", "CRD"):
        raise NodeError(f"unknown mode '{mode}'")
    y = ctx.b.reshape(x, (n, c, h // bs, bs, w // bs, bs))
    # DCR puts the block offset before the channel in the output depth, CRD after it
    y = ctx.b.transpose(y, (0, 3, 5, 1, 2, 4) if mode == "DCR" else (0, 1, 3, 5, 2, 4))
    return [ctx.b.reshape(y, (n, c * bs * bs, h // bs, w // bs))]


# ============================================================================================
# Indexing


@onnx_op("Gather")
def gather(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    x, idx = ctx.input(node, 0), ctx.input(node, 1)
    ax = _norm_axis(ctx.attr_int(node, "axis", 0), ctx.spec(x).rank)
    return [ctx.b.one(g.GatherOp, [x, idx], {"axis": ax})]


@onnx_op("GatherElements")
def gather_elements(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    x, idx = ctx.input(node, 0), ctx.input(node, 1)
    ax = _norm_axis(ctx.attr_int(node, "axis", 0), ctx.spec(x).rank)
    return [ctx.b.one(g.GatherElementsOp, [x, idx], {"axis": ax})]


@onnx_op("GatherND")
def gather_nd(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    x, idx = ctx.input(node, 0), ctx.input(node, 1)
    return [ctx.b.one(g.GatherNDOp, [x, idx], {"batch_dims": ctx.attr_int(node, "batch_dims", 0)})]


@onnx_op("ScatterElements", "Scatter")
def scatter_elements(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    x, idx, upd = ctx.input(node, 0), ctx.input(node, 1), ctx.input(node, 2)
    ax = _norm_axis(ctx.attr_int(node, "axis", 0), ctx.spec(x).rank)
    red = ctx.attr_str(node, "reduction", "none")
    return [ctx.b.one(g.ScatterElementsOp, [x, idx, upd], {"axis": ax, "reduction": red})]


@onnx_op("ScatterND")
def scatter_nd(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    x, idx, upd = ctx.input(node, 0), ctx.input(node, 1), ctx.input(node, 2)
    red = ctx.attr_str(node, "reduction", "none")
    return [ctx.b.one(g.ScatterNDOp, [x, idx, upd], {"reduction": red})]


@onnx_op("TensorScatter")
def tensor_scatter(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    """KV-cache write: a scatter_elements along the sequence axis whose indices are
    ``write_indices[batch] + arange(seq)`` (mod max_seq when circular), so the write offsets
    may be run-time values."""
    cache, upd = ctx.input(node, 0), ctx.input(node, 1)
    cdims, udims = _dims(ctx, cache, node), _dims(ctx, upd, node)
    r = len(cdims)
    ax = _norm_axis(ctx.attr_int(node, "axis", -2), r)
    if ax == 0:
        raise NodeError("axis 0 is the batch axis and cannot be the sequence axis")
    mode = ctx.attr_str(node, "mode", "linear")
    seq = ctx.b.const(np.arange(udims[ax], dtype=np.int64).reshape(
        [udims[ax] if i == ax else 1 for i in range(r)]), hint="seq")
    wi = ctx.opt_input(node, 2)
    if wi is not None:
        wi = _unsqueeze_to(ctx, ctx.b.cast(wi, "int64"), r, 0)
        seq = ctx.b.binary("add", seq, wi)
    if mode == "circular":
        seq = ctx.b.binary("mod", seq, ctx.b.scalar(cdims[ax], "int64"))
    elif mode != "linear":
        raise NodeError(f"unknown mode '{mode}'")
    idx = ctx.b.broadcast(seq, udims)
    return [ctx.b.one(g.ScatterElementsOp, [cache, idx, upd], {"axis": ax, "reduction": "none"})]


@onnx_op("TopK")
def topk(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    x = ctx.input(node, 0)
    r = ctx.spec(x).rank
    if ctx.opset < 10:
        k = ctx.attr_int(node, "k", 0)
    else:
        k = (ctx.const_ints(node, 1, "k") or [0])[0]
    ax = _norm_axis(ctx.attr_int(node, "axis", -1), r)
    largest = ctx.attr_int(node, "largest", 1)
    # sorted=0 leaves the order unspecified, so the sorted order is a valid answer
    vals, idx = ctx.b.op(g.TopKOp, [x], {"axis": ax, "k": k, "largest": bool(largest)})
    return [vals, idx]


@onnx_op("ReverseSequence")
def reverse_sequence(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    """``y[t, b] = x[lens[b]-1-t, b]`` for ``t < lens[b]`` else ``x[t, b]``: a gather_elements
    along the time axis with indices computed from the (possibly run-time) lengths."""
    x, lens = ctx.input(node, 0), ctx.input(node, 1)
    dims = _dims(ctx, x, node)
    r = len(dims)
    bax = _norm_axis(ctx.attr_int(node, "batch_axis", 1), r)
    tax = _norm_axis(ctx.attr_int(node, "time_axis", 0), r)
    t = ctx.b.const(np.arange(dims[tax], dtype=np.int64).reshape(
        [dims[tax] if i == tax else 1 for i in range(r)]), hint="t")
    n = _unsqueeze_to(ctx, ctx.b.cast(lens, "int64"), r, bax)
    rev = ctx.b.binary("sub", ctx.b.binary("sub", n, ctx.b.scalar(1, "int64")), t)
    idx = ctx.b.where(ctx.b.binary("lt", t, n), rev, t)
    idx = ctx.b.broadcast(idx, dims)
    return [ctx.b.one(g.GatherElementsOp, [x, idx], {"axis": tax})]


# ============================================================================================
# Generators


@onnx_op("Range")
def range_(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    start = ctx.const_input(node, 0, "start")
    limit = ctx.const_input(node, 1, "limit")
    delta = ctx.const_input(node, 2, "delta")
    assert start is not None and limit is not None and delta is not None
    start, limit, delta = (np.asarray(v).reshape(()) for v in (start, limit, delta))
    if delta.item() == 0:
        raise NodeError("delta is 0")
    if start.dtype.kind in "iu":
        n = max(0, -(-(int(limit) - int(start)) // int(delta)))
        arr = (int(start) + np.arange(n, dtype=np.int64) * int(delta)).astype(start.dtype)
    else:
        stash = ctx.attr(node, "stash_type")
        cd: type = np.float64 if stash == onnx.TensorProto.DOUBLE else np.float32
        if start.dtype in (np.float32, np.float64):
            cd = start.dtype.type
        arr = np.arange(cd(start.item()), float(limit.item()), float(delta.item()),
                        dtype=cd).astype(start.dtype)
    return [ctx.b.const(arr, hint=node.output[0])]


@onnx_op("OneHot")
def one_hot(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    idx, values = ctx.input(node, 0), ctx.input(node, 2)
    depth_arr = ctx.const_input(node, 1, "depth")
    assert depth_arr is not None
    depth = int(np.asarray(depth_arr).reshape(-1)[0])
    r = ctx.spec(idx).rank + 1
    ax = _norm_axis(ctx.attr_int(node, "axis", -1), r)
    i64 = ctx.b.cast(idx, "int64")
    d = ctx.b.scalar(depth, "int64")
    i64 = ctx.b.where(ctx.b.binary("lt", i64, ctx.b.scalar(0, "int64")),
                      ctx.b.binary("add", i64, d), i64)
    shape = list(ctx.spec(i64).shape)
    shape.insert(ax, 1)
    i64 = ctx.b.reshape(i64, shape)
    classes = ctx.b.const(np.arange(depth, dtype=np.int64).reshape(
        [depth if i == ax else 1 for i in range(r)]), hint="classes")
    hot = ctx.b.binary("eq", i64, classes)
    vals = ctx.b.reshape(values, (2,))
    off = _scalar_of(ctx, ctx.b.slice(vals, [0], [1], [1]))
    on = _scalar_of(ctx, ctx.b.slice(vals, [1], [1], [1]))
    return [ctx.b.where(hot, on, off)]


@onnx_op("Trilu")
def trilu(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    x = ctx.input(node, 0)
    dims = _dims(ctx, x, node)
    if len(dims) < 2:
        raise NodeError(f"expects rank >= 2, got {dims}")
    k = (ctx.const_ints(node, 1, "k") or [0])[0]
    n, m = dims[-2:]
    diff = np.arange(m)[None, :] - np.arange(n)[:, None]
    mask = diff >= k if ctx.attr_int(node, "upper", 1) else diff <= k
    zero = ctx.b.scalar(0, x)
    return [ctx.b.where(ctx.b.const(mask, hint="mask"), x, zero)]


@onnx_op("EyeLike")
def eye_like(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    x = ctx.input(node, 0)
    dims = _dims(ctx, x, node)
    if len(dims) != 2:
        raise NodeError(f"expects a 2-D input, got {dims}")
    enum = ctx.attr(node, "dtype")
    dt = ctx.spec(x).dtype if enum is None else ctx.onnx_dtype(int(enum), node)  # type: ignore[arg-type]
    arr = np.eye(dims[0], dims[1], ctx.attr_int(node, "k", 0)).astype(dtypes.dtype(dt).numpy)
    return [ctx.b.const(arr, hint=node.output[0])]


# ============================================================================================
# Data-dependent output shapes: only when the deciding input is a compile-time constant


def _const_for_shape(ctx: OnnxContext, node: onnx.NodeProto, i: int, what: str) -> np.ndarray:
    try:
        arr = ctx.const_input(node, i, what)
    except NodeError:
        arr = None
    if arr is None:
        raise NodeError(
            f"its output shape depends on the values of its {what} (input '{node.input[i]}'), "
            "which are computed at run time; portc compiles static shapes only. Make that input "
            "a constant, or rewrite the model without data-dependent shapes")
    return np.asarray(arr)


@onnx_op("Compress")
def compress(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    x = ctx.input(node, 0)
    cond = _const_for_shape(ctx, node, 1, "condition").reshape(-1).astype(bool)
    axis = ctx.attr(node, "axis")
    if axis is None:
        x = ctx.b.reshape(x, (ctx.spec(x).numel(),) if ctx.spec(x).is_static else (None,))
        ax = 0
    else:
        ax = _norm_axis(int(axis), ctx.spec(x).rank)  # type: ignore[arg-type]
    n = ctx.spec(x).shape[ax]
    if n is not None and len(cond) > n:
        raise NodeError(f"condition has {len(cond)} entries for a dim of {n}")
    idx = ctx.b.const(np.nonzero(cond)[0].astype(np.int64), hint="kept")
    return [ctx.b.one(g.GatherOp, [x, idx], {"axis": ax})]


@onnx_op("NonZero")
def non_zero(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    arr = _const_for_shape(ctx, node, 0, "input")
    res = np.array(np.nonzero(arr), dtype=np.int64).reshape(arr.ndim, -1)
    return [ctx.b.const(res, hint=node.output[0])]


@onnx_op("Unique")
def unique(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    x = _const_for_shape(ctx, node, 0, "input")
    axis = ctx.attr(node, "axis")
    if axis is None:
        flat = x.reshape(-1)
        y, first, inv, counts = np.unique(flat, True, True, True)
        take_from, ax = flat, 0
    else:
        ax = _norm_axis(int(axis), x.ndim)  # type: ignore[arg-type]
        y, first, inv, counts = np.unique(x, True, True, True, axis=ax)
        take_from = x
    inv = inv.reshape(-1)
    if not ctx.attr_int(node, "sorted", 1):
        order = np.argsort(first, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        first, counts, inv = first[order], counts[order], rank[inv]
        y = np.take(take_from, first, axis=ax)
    outs = [y.astype(x.dtype), first, inv, counts]
    return [ctx.b.const(np.asarray(a) if i == 0 else np.asarray(a, dtype=np.int64),
                        hint=name or "unique")
            for i, (a, name) in enumerate(zip(outs, list(node.output) + [""] * 4, strict=False))]


# ============================================================================================
# Control flow with a compile-time condition


def inline_subgraph(ctx: OnnxContext, graph: onnx.GraphProto, what: str, prefix: str
                    ) -> list[SSAValue]:
    """Import a subgraph's nodes into the enclosing context and return its outputs.

    Subgraphs may read outer-scope values by name (ONNX forbids shadowing), so the branch's nodes
    are imported as if they were written in the outer graph. Model-local functions are not
    visible here (the importer keeps them); schema functions still expand.
    """
    from portc.compiler.frontends.onnx.importer import _Importer  # the importer imports us

    if len(graph.input):
        raise NodeError(f"its {what} takes graph inputs, which portc cannot bind")
    if len(graph.sparse_initializer):
        raise NodeError(f"its {what} has sparse initializers")
    for t in graph.initializer:
        if dtypes.from_onnx(t.data_type) is None:
            raise NodeError(f"its {what} has an initializer '{t.name}' of an unsupported type")
        ctx.values[t.name] = ctx.b.const_named(t.name, numpy_helper.to_array(t))
    imp = _Importer(onnx.ModelProto(), ctx)
    # labels carry a unique prefix: function expansion derives tensor names from them, and
    # this importer's expansion counter starts again from zero
    for i, n in enumerate(graph.node):
        imp.import_node(n, f"{prefix}{n.name or f'{n.op_type}#{i}'}")
    if imp.failures:
        why = "; ".join(f"{label} ({op}): {reason}" for label, op, reason in imp.failures)
        raise NodeError(f"its {what} cannot be imported: {why}")
    outs = []
    for vo in graph.output:
        if vo.name not in ctx.values:
            raise NodeError(f"its {what} never produces its output '{vo.name}'")
        outs.append(ctx.values[vo.name])
    return outs


@onnx_op("If")
def if_(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    """Only the branch a compile-time condition selects is imported (inlined)."""
    try:
        cond = ctx.const_input(node, 0, "condition")
    except NodeError:
        cond = None
    if cond is None:
        raise NodeError(
            f"its condition (input '{node.input[0]}') is computed at run time; portc inlines If "
            "only when the condition is a compile-time constant (data-dependent control flow "
            "is not supported)")
    taken = bool(np.asarray(cond).reshape(-1)[0])
    branch = "then_branch" if taken else "else_branch"
    graph = ctx.attr(node, branch)
    if not isinstance(graph, onnx.GraphProto):
        raise NodeError(f"has no {branch} graph")
    outs = inline_subgraph(ctx, graph, branch, f"{node.output[0]}/{branch}/")
    if len(outs) != len(node.output):
        raise NodeError(f"its {branch} has {len(outs)} outputs, the node {len(node.output)}")
    return outs
