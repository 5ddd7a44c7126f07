"""Shape, movement, indexing, casting and no-op ATen ops.

Views are values in the graph dialect (there is no aliasing to preserve once the program is
functional, which ``run_decompositions`` guarantees), so ``view``/``alias``/``clone`` and friends are
reshapes or nothing at all. Index arithmetic follows ATen: negative dims and indices wrap, slice
bounds clamp to the dim.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from xdsl.ir import SSAValue

from portc.compiler.frontends.torch_ops.registry import Args, NodeError, TorchContext, aten_op
from portc.dialects import dtypes
from portc.dialects import graph as g

# ------------------------------------------------------------------------------ no-ops


@aten_op("clone.default", "alias.default", "detach.default", "lift_fresh_copy.default",
         "contiguous.default", "alias_copy.default", "detach_copy.default", "dropout.default",
         "feature_dropout.default", "alpha_dropout.default", "native_dropout.default")
def identity(ctx: TorchContext, a: Args) -> Any:
    if "dropout" in str(ctx.node.target):
        if a.get("train"):
            raise NodeError("dropout in training mode is random; export the model in eval()")
        if "native_dropout" in str(ctx.node.target):
            return (a.input, None)
        return a.input
    return a.self


@aten_op("_to_copy.default", "to.dtype", "to.dtype_layout", "to.device", "to.other",
         "_to_dim_order_copy.default", "type_as.default")
def to_copy(ctx: TorchContext, a: Args) -> SSAValue:
    return ctx.b.cast(a.self, ctx.out_dtype())


@aten_op("_assert_scalar.default", "_assert_tensor_metadata.default",
         "sym_constrain_range.default", "sym_constrain_range_for_size.default",
         "_assert_async.msg", "_assert_async.default", "_functional_assert_scalar.default",
         "_functional_assert_async.msg")
def assertion(ctx: TorchContext, a: Args) -> None:
    """Shape assertions were checked by torch.export for the bound sizes; nothing to emit."""
    return None


@aten_op("sym_size.int")
def sym_size(ctx: TorchContext, a: Args) -> int:
    return ctx.shape(a.self)[ctx.axis(a.dim, ctx.rank(a.self))]


@aten_op("sym_numel.default")
def sym_numel(ctx: TorchContext, a: Args) -> int:
    return math.prod(ctx.shape(a.self))


@aten_op("sym_stride.int")
def sym_stride(ctx: TorchContext, a: Args) -> int:
    shape = ctx.shape(a.self)
    return math.prod(shape[ctx.axis(a.dim, len(shape)) + 1:])


@aten_op("sym_storage_offset.default")
def sym_storage_offset(ctx: TorchContext, a: Args) -> int:
    return 0


# ------------------------------------------------------------------------------ reshapes


def resolve_shape(shape: Sequence[int], numel: int, what: str = "view") -> list[int]:
    """Fill in one ``-1`` the way ATen's ``infer_size`` does."""
    out = [int(d) for d in shape]
    if out.count(-1) > 1:
        raise NodeError(f"{what} size {out} has more than one -1")
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        out[out.index(-1)] = numel // known if known else 0
    if math.prod(out) != numel:
        raise NodeError(f"{what} size {out} does not hold {numel} elements")
    return out


@aten_op("view.default", "_unsafe_view.default", "reshape.default", "view_copy.default",
         "_reshape_alias.default")
def view(ctx: TorchContext, a: Args) -> SSAValue:
    shape = ctx.shape(a.self)
    return ctx.b.reshape(a.self, resolve_shape(a.size if "size" in a else a.shape,
                                               math.prod(shape)))


@aten_op("view_as.default", "reshape_as.default")
def view_as(ctx: TorchContext, a: Args) -> SSAValue:
    return ctx.b.reshape(a.self, ctx.shape(a.other))


@aten_op("flatten.using_ints")
def flatten(ctx: TorchContext, a: Args) -> SSAValue:
    shape = ctx.shape(a.self)
    if not shape:
        return ctx.b.reshape(a.self, [1])
    s, e = ctx.axis(a.start_dim, len(shape)), ctx.axis(a.end_dim, len(shape))
    return ctx.b.reshape(a.self, [*shape[:s], math.prod(shape[s:e + 1]), *shape[e + 1:]])


@aten_op("unflatten.int")
def unflatten(ctx: TorchContext, a: Args) -> SSAValue:
    shape = ctx.shape(a.self)
    d = ctx.axis(a.dim, len(shape))
    sizes = resolve_shape(a.sizes, shape[d], "unflatten")
    return ctx.b.reshape(a.self, [*shape[:d], *sizes, *shape[d + 1:]])


@aten_op("permute.default", "permute_copy.default")
def permute(ctx: TorchContext, a: Args) -> SSAValue:
    r = ctx.rank(a.self)
    return ctx.b.transpose(a.self, [ctx.axis(d, r) for d in a.dims])


def _swap(ctx: TorchContext, x: SSAValue, d0: int, d1: int) -> SSAValue:
    r = ctx.rank(x)
    if r < 2:
        return x
    perm = list(range(r))
    i, j = ctx.axis(d0, r), ctx.axis(d1, r)
    perm[i], perm[j] = perm[j], perm[i]
    return ctx.b.transpose(x, perm)


@aten_op("transpose.int", "transpose_copy.int", "swapaxes.default", "swapdims.default")
def transpose(ctx: TorchContext, a: Args) -> SSAValue:
    d0 = a.dim0 if "dim0" in a else a.axis0
    d1 = a.dim1 if "dim1" in a else a.axis1
    return _swap(ctx, a.self, d0, d1)


@aten_op("t.default", "t_copy.default", "numpy_T.default")
def t(ctx: TorchContext, a: Args) -> SSAValue:
    r = ctx.rank(a.self)
    return ctx.b.transpose(a.self, list(range(r))[::-1])


@aten_op("movedim.int")
def movedim(ctx: TorchContext, a: Args) -> SSAValue:
    r = ctx.rank(a.self)
    src, dst = ctx.axis(a.source, r), ctx.axis(a.destination, r)
    perm = [i for i in range(r) if i != src]
    perm.insert(dst, src)
    return ctx.b.transpose(a.self, perm)


@aten_op("expand.default", "expand_copy.default", "broadcast_to.default")
def expand(ctx: TorchContext, a: Args) -> SSAValue:
    shape = ctx.shape(a.self)
    size = [int(d) for d in a.size]
    lead = len(size) - len(shape)
    if lead < 0:
        raise NodeError(f"expand to {size} has fewer dims than the input {list(shape)}")
    out = [shape[i - lead] if d == -1 else d for i, d in enumerate(size)]
    x = ctx.b.reshape(a.self, [1] * lead + list(shape)) if lead else a.self
    return ctx.b.broadcast(x, out)


@aten_op("expand_as.default")
def expand_as(ctx: TorchContext, a: Args) -> SSAValue:
    shape = ctx.shape(a.other)
    x = ctx.b.reshape(a.self, [1] * (len(shape) - ctx.rank(a.self)) + list(ctx.shape(a.self)))
    return ctx.b.broadcast(x, shape)


@aten_op("unsqueeze.default", "unsqueeze_copy.default")
def unsqueeze(ctx: TorchContext, a: Args) -> SSAValue:
    shape = list(ctx.shape(a.self))
    d = g.norm_axis(int(a.dim), len(shape) + 1)
    return ctx.b.reshape(a.self, [*shape[:d], 1, *shape[d:]])


@aten_op("squeeze.default", "squeeze.dim", "squeeze.dims", "squeeze_copy.dims",
         "squeeze_copy.dim", "squeeze_copy.default")
def squeeze(ctx: TorchContext, a: Args) -> SSAValue:
    shape = ctx.shape(a.self)
    dims = a.get("dim")
    sel = set(range(len(shape))) if dims is None else set(ctx.axes(dims, len(shape))) \
        if shape else set()
    return ctx.b.reshape(a.self, [d for i, d in enumerate(shape) if not (i in sel and d == 1)])


# ------------------------------------------------------------------------------ slicing


def slice_dim(ctx: TorchContext, x: SSAValue, dim: int, start: int | None, end: int | None,
              step: int = 1) -> SSAValue:
    """``x[..., start:end:step, ...]`` on one dim with Python's clamping of the bounds."""
    shape = ctx.shape(x)
    d = ctx.axis(dim, len(shape))
    n = shape[d]
    if step <= 0:
        raise NodeError(f"slice step must be positive, got {step}")
    s, e, _ = slice(start, end, step).indices(n)
    count = max(0, -(-(e - s) // step))
    starts = [0] * len(shape)
    steps = [1] * len(shape)
    counts = list(shape)
    starts[d], steps[d], counts[d] = (s if count else 0), step, count
    return ctx.b.slice(x, starts, steps, counts)


@aten_op("slice.Tensor", "slice_copy.Tensor")
def slice_(ctx: TorchContext, a: Args) -> SSAValue:
    return slice_dim(ctx, a.self, a.dim, a.start, a.end, int(a.step))


@aten_op("narrow.default")
def narrow(ctx: TorchContext, a: Args) -> SSAValue:
    n = ctx.shape(a.self)[ctx.axis(a.dim, ctx.rank(a.self))]
    start = a.start + n if a.start < 0 else a.start
    return slice_dim(ctx, a.self, a.dim, start, start + a.length)


@aten_op("select.int", "select_copy.int")
def select(ctx: TorchContext, a: Args) -> SSAValue:
    shape = ctx.shape(a.self)
    d = ctx.axis(a.dim, len(shape))
    i = int(a.index)
    if not -shape[d] <= i < shape[d]:
        raise NodeError(f"select index {i} is out of range for dim {d} of size {shape[d]}")
    i %= shape[d]
    y = slice_dim(ctx, a.self, d, i, i + 1)
    return ctx.b.reshape(y, [s for j, s in enumerate(shape) if j != d])


def _split(ctx: TorchContext, x: SSAValue, sizes: Sequence[int], dim: int) -> list[SSAValue]:
    out, pos = [], 0
    for s in sizes:
        out.append(slice_dim(ctx, x, dim, pos, pos + int(s)))
        pos += int(s)
    return out


@aten_op("split.Tensor", "split_copy.Tensor", "unsafe_split.Tensor")
def split(ctx: TorchContext, a: Args) -> list[SSAValue]:
    n = ctx.shape(a.self)[ctx.axis(a.dim, ctx.rank(a.self))]
    k = int(a.split_size)
    sizes = [min(k, n - i) for i in range(0, n, k)] if k else [0]
    return _split(ctx, a.self, sizes or [0], a.dim)


@aten_op("split_with_sizes.default", "split_with_sizes_copy.default",
         "unsafe_split_with_sizes.default")
def split_with_sizes(ctx: TorchContext, a: Args) -> list[SSAValue]:
    return _split(ctx, a.self, a.split_sizes, a.dim)


@aten_op("chunk.default")
def chunk(ctx: TorchContext, a: Args) -> list[SSAValue]:
    n = ctx.shape(a.self)[ctx.axis(a.dim, ctx.rank(a.self))]
    k = -(-n // int(a.chunks))
    return _split(ctx, a.self, [min(k, n - i) for i in range(0, n, k)] if k else [0], a.dim)


@aten_op("unbind.int", "unbind_copy.int")
def unbind(ctx: TorchContext, a: Args) -> list[SSAValue]:
    shape = ctx.shape(a.self)
    d = ctx.axis(a.dim, len(shape))
    rest = [s for j, s in enumerate(shape) if j != d]
    return [ctx.b.reshape(p, rest) for p in _split(ctx, a.self, [1] * shape[d], d)]


@aten_op("cat.default", "concat.default", "concatenate.default")
def cat(ctx: TorchContext, a: Args) -> SSAValue:
    dt = ctx.out_dtype()
    xs = [ctx.tensor(x, dt) for x in a.tensors]
    # ATen still accepts legacy empty 1-D tensors in cat next to tensors of any rank
    keep = [x for x in xs if not (ctx.spec(x).shape == (0,) and any(ctx.rank(y) > 1 for y in xs))]
    if not keep:
        return xs[0]
    return ctx.b.concat(keep, ctx.axis(a.dim, ctx.rank(keep[0])))


@aten_op("stack.default")
def stack(ctx: TorchContext, a: Args) -> SSAValue:
    dt = ctx.out_dtype()
    xs = [ctx.tensor(x, dt) for x in a.tensors]
    shape = list(ctx.shape(xs[0]))
    d = g.norm_axis(int(a.dim), len(shape) + 1)
    return ctx.b.concat([ctx.b.reshape(x, [*shape[:d], 1, *shape[d:]]) for x in xs], d)


@aten_op("flip.default")
def flip(ctx: TorchContext, a: Args) -> SSAValue:
    shape = ctx.shape(a.self)
    dims = set(ctx.axes(a.dims, len(shape))) if a.dims else set()
    starts = [n - 1 if i in dims and n else 0 for i, n in enumerate(shape)]
    steps = [-1 if i in dims else 1 for i in range(len(shape))]
    if not dims or 0 in shape:
        return a.self
    return ctx.b.one(g.SliceOp, [a.self], {"starts": tuple(starts), "steps": tuple(steps)},
                     result=ctx.spec(a.self))


@aten_op("roll.default")
def roll(ctx: TorchContext, a: Args) -> SSAValue:
    x = a.self
    shape = ctx.shape(x)
    shifts, dims = list(a.shifts), list(a.dims)
    if not dims:
        flat = ctx.b.reshape(x, [math.prod(shape)])
        return ctx.b.reshape(_roll1(ctx, flat, int(shifts[0]), 0), shape)
    for s, d in zip(shifts, dims, strict=True):
        x = _roll1(ctx, x, int(s), ctx.axis(d, len(shape)))
    return x


def _roll1(ctx: TorchContext, x: SSAValue, shift: int, d: int) -> SSAValue:
    n = ctx.shape(x)[d]
    k = shift % n if n else 0
    if k == 0:
        return x
    return ctx.b.concat([slice_dim(ctx, x, d, n - k, n), slice_dim(ctx, x, d, 0, n - k)], d)


@aten_op("repeat.default")
def repeat(ctx: TorchContext, a: Args) -> SSAValue:
    """Tile: each dim becomes ``[r, d]`` broadcast from ``[1, d]``, then merged to ``r*d``."""
    reps = [int(r) for r in a.repeats]
    shape = list(ctx.shape(a.self))
    shape = [1] * (len(reps) - len(shape)) + shape
    x = ctx.b.reshape(a.self, [v for d in shape for v in (1, d)])
    x = ctx.b.broadcast(x, [v for r, d in zip(reps, shape, strict=True) for v in (r, d)])
    return ctx.b.reshape(x, [r * d for r, d in zip(reps, shape, strict=True)])


# ------------------------------------------------------------------------------ padding

_PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge",
              "circular": "wrap"}


def _pad(ctx: TorchContext, x: SSAValue, pad: Sequence[int], mode: str, value: float
         ) -> SSAValue:
    """ATen pads list (begin, end) pairs from the last dim backwards."""
    r = ctx.rank(x)
    begins, ends = [0] * r, [0] * r
    for i in range(len(pad) // 2):
        begins[r - 1 - i], ends[r - 1 - i] = int(pad[2 * i]), int(pad[2 * i + 1])
    return ctx.b.one(g.PadOp, [x], {"pads": tuple(begins + ends), "mode": _PAD_MODES[mode],
                                    "value": float(value)})


@aten_op("constant_pad_nd.default")
def constant_pad_nd(ctx: TorchContext, a: Args) -> SSAValue:
    return _pad(ctx, a.self, a.pad, "constant", a.value)


@aten_op("pad.default")
def pad(ctx: TorchContext, a: Args) -> SSAValue:
    if a.mode not in _PAD_MODES:
        raise NodeError(f"pad mode '{a.mode}' is not supported")
    return _pad(ctx, a.self, a.pad, a.mode, a.value or 0.0)


@aten_op("reflection_pad1d.default", "reflection_pad2d.default", "reflection_pad3d.default",
         "replication_pad1d.default", "replication_pad2d.default", "replication_pad3d.default")
def mode_pad(ctx: TorchContext, a: Args) -> SSAValue:
    mode = "reflect" if "reflection" in str(ctx.node.target) else "replicate"
    return _pad(ctx, a.self, a.padding, mode, 0.0)


# ------------------------------------------------------------------------------ masks


@aten_op("tril.default", "triu.default")
def tril(ctx: TorchContext, a: Args) -> SSAValue:
    shape = ctx.shape(a.self)
    rows, cols = shape[-2], shape[-1]
    i = np.arange(rows)[:, None]
    j = np.arange(cols)[None, :]
    keep = (j - i <= a.diagonal) if "tril" in str(ctx.node.target) else (j - i >= a.diagonal)
    dt = ctx.spec(a.self).dtype
    zero = ctx.b.scalar(False if dt == "bool" else 0, dt)
    return ctx.b.where(ctx.b.const(keep), a.self, zero)


# ------------------------------------------------------------------------------ indexing


def _index_tensor(ctx: TorchContext, idx: SSAValue) -> SSAValue:
    dt = ctx.spec(idx).dtype
    if dt == "bool":
        raise NodeError("boolean-mask indexing has a data-dependent shape; use torch.where")
    return idx if dt in ("int32", "int64") else ctx.b.cast(idx, "int64")


@aten_op("embedding.default")
def embedding(ctx: TorchContext, a: Args) -> SSAValue:
    return ctx.b.one(g.GatherOp, [a.weight, _index_tensor(ctx, a.indices)], {"axis": 0})


@aten_op("index_select.default")
def index_select(ctx: TorchContext, a: Args) -> SSAValue:
    r = ctx.rank(a.self)
    idx = _index_tensor(ctx, a.index)
    if ctx.rank(idx) == 0:
        idx = ctx.b.reshape(idx, [1])
    return ctx.b.one(g.GatherOp, [a.self, idx], {"axis": ctx.axis(a.dim, r)})


@aten_op("gather.default")
def gather(ctx: TorchContext, a: Args) -> SSAValue:
    """``torch.gather``; the index may be smaller than ``self`` off ``dim``, so crop first."""
    x, idx = a.self, _index_tensor(ctx, a.index)
    xs, isz = ctx.shape(x), ctx.shape(idx)
    d = ctx.axis(a.dim, len(xs))
    for j, (n, m) in enumerate(zip(xs, isz, strict=True)):
        if j != d and m < n:
            x = slice_dim(ctx, x, j, 0, m)
    return ctx.b.one(g.GatherElementsOp, [x, idx], {"axis": d})


@aten_op("index.Tensor", "_unsafe_index.Tensor")
def index(ctx: TorchContext, a: Args) -> SSAValue:
    """``x[..., i0, i1, ...]`` with one adjacent block of index tensors: the block's dims are
    flattened into one and indexed with the row-major combined index, ATen's result layout."""
    x = a.self
    shape = ctx.shape(x)
    idxs = list(a.indices) + [None] * (len(shape) - len(a.indices))
    pos = [i for i, v in enumerate(idxs) if v is not None]
    if not pos:
        return x
    if pos != list(range(pos[0], pos[-1] + 1)):
        raise NodeError("index tensors separated by ':' are not supported (non-adjacent "
                        "advanced indexing); index one dim at a time")
    first, k = pos[0], len(pos)
    block = shape[first:first + k]
    flat: SSAValue | None = None
    stride = 1
    for j in reversed(range(k)):
        idx = ctx.b.cast(_index_tensor(ctx, idxs[first + j]), "int64")
        n = block[j]
        idx = ctx.b.binary("mod", idx, ctx.b.scalar(n, "int64"))  # wrap negative indices
        term = idx if stride == 1 else ctx.b.binary("mul", idx, ctx.b.scalar(stride, "int64"))
        flat = term if flat is None else ctx.b.binary("add", term, flat)
        stride *= n
    assert flat is not None
    merged = ctx.b.reshape(x, [*shape[:first], math.prod(block), *shape[first + k:]])
    return ctx.b.one(g.GatherOp, [merged, flat], {"axis": first})


@aten_op("index_put.default", "_unsafe_index_put.default")
def index_put(ctx: TorchContext, a: Args) -> SSAValue:
    """``x[i0, i1, ...] = values`` (or ``+=``) with index tensors on leading dims."""
    x = a.self
    shape = ctx.shape(x)
    idxs = list(a.indices)
    if any(v is None for v in idxs):
        raise NodeError("index_put with ':' before an index tensor is not supported")
    k = len(idxs)
    ts = [ctx.b.cast(_index_tensor(ctx, v), "int64") for v in idxs]
    bshape = g.broadcast_shapes(*(ctx.spec(v).shape for v in ts))
    cols = [ctx.b.reshape(ctx.b.broadcast(v, bshape), [*bshape, 1]) for v in ts]
    nd = ctx.b.concat(cols, len(bshape))
    upd_shape = [*bshape, *shape[k:]]
    vals = ctx.tensor(a.values, ctx.spec(x).dtype)
    vs = ctx.spec(vals).shape
    vals = ctx.b.broadcast(ctx.b.reshape(vals, [1] * (len(upd_shape) - len(vs)) + list(vs)),
                           upd_shape)
    return ctx.b.one(g.ScatterNDOp, [x, nd, vals],
                     {"reduction": "add" if a.accumulate else "none"})


_SCATTER_REDUCE = {"sum": "add", "add": "add", "prod": "mul", "multiply": "mul", "amax": "max",
                   "amin": "min"}


@aten_op("scatter.src", "scatter.value", "scatter_add.default", "scatter.reduce",
         "scatter.value_reduce", "scatter_reduce.two")
def scatter(ctx: TorchContext, a: Args) -> SSAValue:
    x, idx = a.self, _index_tensor(ctx, a.index)
    d = ctx.axis(a.dim, ctx.rank(x))
    isz = ctx.shape(idx)
    dt = ctx.spec(x).dtype
    if "src" in a and a.src is not None:
        src = ctx.tensor(a.src, dt)
        for j, m in enumerate(isz):
            if ctx.shape(src)[j] > m:
                src = slice_dim(ctx, src, j, 0, m)
    else:
        src = ctx.b.broadcast(ctx.tensor(a.value, dt), isz)
    red = "add" if "scatter_add" in str(ctx.node.target) else "none"
    r = a.get("reduce")
    if r is not None:
        if r not in _SCATTER_REDUCE or not a.get("include_self", True):
            raise NodeError(f"scatter reduce='{r}' (include_self={a.get('include_self')}) is "
                            "not supported")
        red = _SCATTER_REDUCE[r]
    return ctx.b.one(g.ScatterElementsOp, [x, idx, src], {"axis": d, "reduction": red})


# ------------------------------------------------------------------------------ creation


@aten_op("fill.Scalar", "fill.Tensor")
def fill(ctx: TorchContext, a: Args) -> SSAValue:
    dt = ctx.spec(a.self).dtype
    return ctx.b.broadcast(ctx.tensor(a.value, dt), ctx.shape(a.self))


def zeros_of(ctx: TorchContext, shape: Sequence[int], dt: str) -> SSAValue:
    return ctx.b.const(np.zeros(tuple(shape), dtypes.dtype(dt).numpy), hint="zeros")
