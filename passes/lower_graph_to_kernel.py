"""Lower a graph program to the kernel dialect: the level all three hardware targets share.

Elementwise ops stay lazy expressions and fuse into whichever kernel consumes them (one use, no
broadcast growth); transposes, slices, broadcasts and contiguous reshapes become addressing;
everything else becomes ``kernel.generic`` loop nests (matmul and conv as reductions, pooling as
windowed reductions over a strided view, softmax/norms as a few reductions plus a fused map) or
``kernel.sort``. Constants become weight buffers, scalar constants literals in kernel bodies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Operation, SSAValue
from xdsl.passes import ModulePass

from portc.compiler.errors import LoweringError
from portc.compiler.program import Program, weights_of
from portc.compiler.weights import WeightStore
from portc.dialects import dtypes
from portc.dialects import graph as g
from portc.dialects import kernel as k
from portc.passes.kernel_exprs import (
    Binary,
    Cast,
    Const,
    Expr,
    Index,
    Leaf,
    Node,
    Select,
    Unary,
    View,
    binary,
    cast,
    children,
    const,
    identity_value,
    leaf,
    leaves,
    numel,
    unary,
)

#: an expression with more ops than this is materialised even when it has one use, so that a
#: broadcast consumer does not recompute it per element
FUSE_LIMIT = 24


@dataclass
class KernelProgramBuilder:
    """Collects buffers and kernels while graph ops are lowered in order."""

    weights: WeightStore
    ops: list[Operation] = field(default_factory=list)
    buffers: dict[str, k.BufferOp] = field(default_factory=dict)
    weight_buffers: dict[str, str] = field(default_factory=dict)
    kernel_count: int = 0

    # -- buffers --------------------------------------------------------------------------
    def buffer(self, prefix: str, dtype: str, size: int, kind: str = "temp",
               binding: str | None = None, shape: Sequence[int] | None = None) -> str:
        name = f"{prefix}{len(self.buffers)}"
        self.buffers[name] = k.BufferOp.make(name, dtype, max(size, 0), kind, binding, shape)
        return name

    def weight(self, resource: str) -> View:
        arr = self.weights[resource]
        dt = dtypes.from_numpy(arr.dtype).name
        if resource not in self.weight_buffers:
            self.weight_buffers[resource] = self.buffer("w", dt, arr.size, "weight", resource)
        return View.contiguous(self.weight_buffers[resource], dt, arr.shape)

    def new_weight(self, stem: str, arr: np.ndarray) -> View:
        return self.weight(self.weights.add(np.ascontiguousarray(arr), stem))

    def temp(self, dtype: str, shape: Sequence[int]) -> View:
        return View.contiguous(self.buffer("t", dtype, numel(shape)), dtype, shape)

    # -- kernels --------------------------------------------------------------------------
    def kernel_name(self, origin: str) -> str:
        self.kernel_count += 1
        return f"k{self.kernel_count - 1}_{origin.split('.')[-1]}"

    def generic(self, origin: str, expr: Expr, out: View, n_parallel: int | None = None,
                combiner: str = "none", init: float | None = None) -> None:
        """One loop nest over ``expr.shape``: dims ``[:n_parallel]`` are parallel and map onto
        ``out`` (whose shape they equal); the rest reduce with ``combiner``."""
        shape = expr.shape
        nd = len(shape)
        npar = nd if n_parallel is None else n_parallel
        out_strides = tuple(out.strides[:npar]) + (0,) * (nd - npar)
        slots = leaves(expr.node)
        slot_of = {id(lf): i for i, lf in enumerate(slots)}
        ins = [(lf.view.buffer, lf.view.strides, lf.view.offset) for lf in slots]
        indirect = [(slot_of[id(lf)], slot_of[id(ix)], s, b)
                    for lf in slots for ix, s, b in lf.gather]
        dims, ins, out_spec = _collapse_dims(list(shape), npar, ins, (out.buffer, out_strides,
                                                                        out.offset),
                                             has_index=_has_index(expr.node))
        npar_c = dims[1]
        body = _build_body(expr.node, slots)
        self.ops.append(k.GenericOp.make(self.kernel_name(origin), origin, dims[0], npar_c, ins,
                                         out_spec, combiner, init, indirect, body))

    def materialize(self, origin: str, expr: Expr) -> View:
        out = self.temp(expr.dtype, expr.shape)
        self.generic(origin, expr, out)
        return out

    def as_view(self, origin: str, expr: Expr) -> View:
        v = expr.view
        return v if v is not None else self.materialize(origin, expr)


def _has_index(n: Node) -> bool:
    return isinstance(n, Index) or any(_has_index(c) for c in children(n)) or (
        isinstance(n, Leaf) and any(_has_index(i) for i, _, _ in n.gather))


def _collapse_dims(shape: list[int], npar: int, ins: list[tuple[str, Sequence[int], int]],
                   out: tuple[str, Sequence[int], int], has_index: bool,
                   ) -> tuple[tuple[list[int], int], list[tuple[str, Sequence[int], int]],
                              tuple[str, Sequence[int], int]]:
    """Drop unit dims and merge neighbours every access walks contiguously, so emitters see the
    fewest, longest loops (a contiguous elementwise op becomes one flat loop)."""
    if has_index or not shape:
        return (shape, npar), ins, out
    strides = [list(s) for _, s, _ in ins] + [list(out[1])]
    iters = ["p"] * npar + ["r"] * (len(shape) - npar)
    keep = [i for i, d in enumerate(shape) if d != 1]
    if len(keep) < len(shape) and all(d != 0 for d in shape):
        shape = [shape[i] for i in keep]
        iters = [iters[i] for i in keep]
        strides = [[s[i] for i in keep] for s in strides]
    i = len(shape) - 2
    while i >= 0:
        if iters[i] == iters[i + 1] and all(s[i] == s[i + 1] * shape[i + 1] for s in strides):
            shape[i] *= shape[i + 1]
            del shape[i + 1]
            del iters[i + 1]
            for s in strides:
                s[i] = s[i + 1]
                del s[i + 1]
        i -= 1
    new_ins = [(b, tuple(s), o) for (b, _, o), s in zip(ins, strides[:-1], strict=True)]
    return (shape, iters.count("p")), new_ins, (out[0], tuple(strides[-1]), out[2])


def _build_body(root: Node, slots: list[Leaf]) -> Block:
    block = Block(arg_types=[k.type_of_dtype(lf.dtype) for lf in slots])
    values: dict[int, SSAValue] = {id(lf): block.args[i] for i, lf in enumerate(slots)}

    def emit(n: Node) -> SSAValue:
        if id(n) in values:
            return values[id(n)]
        t = k.type_of_dtype(n.dtype)
        if isinstance(n, Const):
            op: Operation = k.ConstOp.make(n.value, n.dtype)
        elif isinstance(n, Index):
            op = k.IndexOp.create(properties={"dim": _i64(n.dim)}, result_types=[t])
        elif isinstance(n, Unary):
            op = k.UnaryOp.create(operands=[emit(n.x)], result_types=[t],
                                  properties={"fn": _str(n.fn)})
        elif isinstance(n, Binary):
            op = k.BinaryOp.create(operands=[emit(n.a), emit(n.b)], result_types=[t],
                                   properties={"fn": _str(n.fn)})
        elif isinstance(n, Select):
            op = k.SelectOp.create(operands=[emit(n.cond), emit(n.a), emit(n.b)], result_types=[t])
        elif isinstance(n, Cast):
            op = k.CastOp.create(operands=[emit(n.x)], result_types=[t], properties={} if
                                 n.saturate is None else {"saturate": _i64(int(n.saturate))})
        else:
            raise AssertionError(f"unexpected node {n}")
        block.add_op(op)
        values[id(n)] = op.results[0]
        return op.results[0]

    block.add_op(k.YieldOp.create(operands=[emit(root)]))
    return block


def _i64(v: int) -> object:
    from xdsl.dialects.builtin import IntegerAttr, i64

    return IntegerAttr(v, i64)


def _str(s: str) -> object:
    from xdsl.dialects.builtin import StringAttr

    return StringAttr(s)


# ------------------------------------------------------------------------------------ lowering

Lowering = Callable[["GraphLowering", g.GraphOp, list[Expr]], list[Expr]]
LOWERINGS: dict[type[g.GraphOp], Lowering] = {}


def lowers(*ops: type[g.GraphOp]) -> Callable[[Lowering], Lowering]:
    def reg(fn: Lowering) -> Lowering:
        for op in ops:
            LOWERINGS[op] = fn
        return fn

    return reg


def _shape(v: SSAValue) -> tuple[int, ...]:
    spec = g.spec_of(v)
    if not spec.is_static:
        raise LoweringError(f"tensor of type {spec} has dynamic dims; bind them at import "
                                 "(--dim NAME=N) before lowering to a hardware target")
    return tuple(int(d) for d in spec.shape)  # type: ignore[arg-type]


def broadcast_expr(x: Expr, shape: Sequence[int]) -> Expr:
    if x.shape == tuple(shape):
        return x
    if isinstance(x.node, Const):
        return Expr(x.node, tuple(shape))
    return x.map_views(lambda v: v.broadcast_to(shape), shape)


class GraphLowering:
    def __init__(self, program: Program) -> None:
        self.program = program
        self.kb = KernelProgramBuilder(program.weights)
        self.uses: dict[SSAValue, int] = {}
        #: graph op that produced each lazy expression: kernels that materialise it are named
        #: after it, so a fault or a slow kernel points at the model op it came from
        self.producer: dict[int, str] = {}

    def origin(self, op: Operation) -> str:
        return op.name

    def run(self) -> ModuleOp:
        main = self.program.main
        env: dict[SSAValue, Expr] = {}
        for name, arg in zip(self.program.input_names, main.args, strict=True):
            spec = g.spec_of(arg)
            shape = _shape(arg)
            buf = self.kb.buffer("in", spec.dtype, numel(shape), "input", name, shape)
            env[arg] = leaf(View.contiguous(buf, spec.dtype, shape))
        for op in main.body.block.ops:
            for r in op.results:
                self.uses[r] = len(list(r.uses))
        unsupported = sorted({op.name for op in main.body.block.ops
                              if not isinstance(op, func.ReturnOp) and type(op) not in LOWERINGS})
        if unsupported:
            raise LoweringError(
                "cannot lower to kernels: " + ", ".join(unsupported) + " (run the target's graph "
                "pipeline first: moe-routing and decompose-for-targets rewrite these into core ops)")
        outputs: list[SSAValue] = []
        for op in main.body.block.ops:
            if isinstance(op, func.ReturnOp):
                outputs = list(op.operands)
                break
            assert isinstance(op, g.GraphOp)
            ins = [env[v] for v in op.operands]
            try:
                res = LOWERINGS[type(op)](self, op, ins)
            except LoweringError as e:
                raise LoweringError(f"{op.name}: {e}") from None
            for r, e in zip(op.results, res, strict=True):
                self.producer.setdefault(id(e.node), op.name)
                env[r] = self._settle(op, r, e)
        self._bind_outputs(outputs, env)
        module = ModuleOp([*self.kb.buffers.values(), *self.kb.ops])
        return module

    def _settle(self, op: Operation, r: SSAValue, e: Expr) -> Expr:
        """Materialise expressions that several consumers would otherwise recompute."""
        if e.view is not None or isinstance(e.node, Const):
            return e
        if self.uses.get(r, 0) > 1 or e.cost() > FUSE_LIMIT:
            return leaf(self.kb.materialize(self.producer.get(id(e.node), op.name), e))
        return e

    def _bind_outputs(self, outputs: list[SSAValue], env: dict[SSAValue, Expr]) -> None:
        claimed: set[str] = set()
        for name, v in zip(self.program.output_names, outputs, strict=True):
            e = env[v]
            view = e.view
            buf = self.kb.buffers.get(view.buffer) if view is not None else None
            if (view is not None and buf is not None and buf.kind.data == "temp"
                    and view.offset == 0 and view.is_contiguous()
                    and buf.elements == numel(view.shape) and view.buffer not in claimed):
                self.kb.buffers[view.buffer] = k.BufferOp.make(
                    view.buffer, buf.dtype.data, buf.elements, "output", name, view.shape)
                claimed.add(view.buffer)
                continue
            shape = e.shape
            out = self.kb.buffer("out", e.dtype, numel(shape), "output", name, shape)
            self.kb.generic(self.producer.get(id(e.node), "output"), broadcast_expr(e, shape),
                            View.contiguous(out, e.dtype, shape))
            claimed.add(out)

    # helpers shared by lowerings
    def view_of(self, op: Operation, x: Expr) -> View:
        return self.kb.as_view(self.producer.get(id(x.node), self.origin(op)), x)


# ---------------------------------------------------------------------------- elementwise ops


@lowers(g.ConstantOp)
def _constant(lw: GraphLowering, op: g.GraphOp, ins: list[Expr]) -> list[Expr]:
    assert isinstance(op, g.ConstantOp)
    res = op.resource.data
    arr = lw.program.weights[res]
    dt = g.spec_of(op.result).dtype
    if arr.size == 1 and dtypes.dtype(dt).bits >= 8 and not dt.startswith("float8"):
        v = arr.reshape(()).item()
        return [const(v, dt, arr.shape)]
    return [leaf(lw.kb.weight(res))]


@lowers(g.UnaryOp)
def _unary(lw: GraphLowering, op: g.GraphOp, ins: list[Expr]) -> list[Expr]:
    spec = g.spec_of(op.results[0])
    return [unary(op.props()["fn"], ins[0], spec.dtype)]


@lowers(g.BinaryOp)
def _binary(lw: GraphLowering, op: g.GraphOp, ins: list[Expr]) -> list[Expr]:
    spec = g.spec_of(op.results[0])
    shape = _shape(op.results[0])
    a, b = (broadcast_expr(x, shape) for x in ins)
    return [binary(op.props()["fn"], a, b, shape, spec.dtype)]


@lowers(g.WhereOp)
def _where(lw: GraphLowering, op: g.GraphOp, ins: list[Expr]) -> list[Expr]:
    shape = _shape(op.results[0])
    c, a, b = (broadcast_expr(x, shape) for x in ins)
    return [Expr(Select(a.dtype, c.node, a.node, b.node), shape)]


@lowers(g.CastOp)
def _cast(lw: GraphLowering, op: g.GraphOp, ins: list[Expr]) -> list[Expr]:
    p = op.props()
    sat = p.get("saturate")
    return [cast(ins[0], p["to"], None if sat is None else bool(sat))]


# ---------------------------------------------------------------------------- data movement


@lowers(g.ReshapeOp)
def _reshape(lw: GraphLowering, op: g.GraphOp, ins: list[Expr]) -> list[Expr]:
    shape = _shape(op.results[0])
    x = ins[0]
    if isinstance(x.node, Const):
        return [Expr(x.node, shape)]
    v = lw.view_of(op, x).reshape(shape)
    if v is None:
        v = lw.kb.materialize(lw.origin(op), x).reshape(shape)
    assert v is not None
    return [leaf(v)]


@lowers(g.TransposeOp)
def _transpose(lw: GraphLowering, op: g.GraphOp, ins: list[Expr]) -> list[Expr]:
    perm = op.props()["perm"]
    shape = _shape(op.results[0])
    x = ins[0]
    if isinstance(x.node, Const):
        return [Expr(x.node, shape)]
    return [x.map_views(lambda v: v.transpose(perm), shape)]


@lowers(g.SliceOp)
def _slice(lw: GraphLowering, op: g.GraphOp, ins: list[Expr]) -> list[Expr]:
    p = op.props()
    shape = _shape(op.results[0])
    x = ins[0]
    if isinstance(x.node, Const):
        return [Expr(x.node, shape)]
    return [x.map_views(lambda v: v.slice(p["starts"], p["steps"], shape), shape)]


@lowers(g.BroadcastOp)
def _broadcast(lw: GraphLowering, op: g.GraphOp, ins: list[Expr]) -> list[Expr]:
    return [broadcast_expr(ins[0], _shape(op.results[0]))]


@lowers(g.ConcatOp)
def _concat(lw: GraphLowering, op: g.GraphOp, ins: list[Expr]) -> list[Expr]:
    shape = _shape(op.results[0])
    ax = op.props()["axis"] % len(shape)
    dt = g.spec_of(op.results[0]).dtype
    out = lw.kb.temp(dt, shape)
    pos = 0
    for x in ins:
        n = x.shape[ax]
        if n:
            starts = [0] * len(shape)
            starts[ax] = pos
            lw.kb.generic(lw.origin(op), broadcast_expr(x, x.shape),
                          out.slice(starts, [1] * len(shape), x.shape))
        pos += n
    return [leaf(out)]


def _segments(n: int, pb: int, pe: int, mode: str) -> list[tuple[int, int, int, int | None]]:
    """Per dim of a pad: (out_start, count, src_start, src_step or None for the fill value)."""
    segs: list[tuple[int, int, int, int | None]] = [(pb, n, 0, 1)]
    if pb > 0:
        if mode == "constant":
            segs.append((0, pb, 0, None))
        elif mode == "edge":
            segs.append((0, pb, 0, 0))
        elif mode == "reflect":
            segs.append((0, pb, pb, -1))
        else:  # wrap
            segs.append((0, pb, n - pb, 1))
    if pe > 0:
        if mode == "constant":
            segs.append((pb + n, pe, 0, None))
        elif mode == "edge":
            segs.append((pb + n, pe, n - 1, 0))
        elif mode == "reflect":
            segs.append((pb + n, pe, n - 2, -1))
        else:
            segs.append((pb + n, pe, 0, 1))
    return segs


def pad_expr(lw: GraphLowering, origin: str, x: Expr, begins: Sequence[int], ends: Sequence[int],
             mode: str, value: float) -> View:
    """Write a padded copy of ``x``: one region kernel per combination of (before, inside,
    after) segments, each an affine view (reflections are negative strides)."""
    r = len(x.shape)
    # negative pads crop first
    starts = [max(-b, 0) for b in begins]
    shape = [x.shape[i] - starts[i] - max(-ends[i], 0) for i in range(r)]
    if starts != [0] * r or shape != list(x.shape):
        x = x.map_views(lambda v: v.slice(starts, [1] * r, shape), shape) \
            if not isinstance(x.node, Const) else Expr(x.node, tuple(shape))
    pb = [max(b, 0) for b in begins]
    pe = [max(e, 0) for e in ends]
    for i in range(r):
        n = x.shape[i]
        if mode in ("reflect", "wrap", "edge") and (pb[i] or pe[i]):
            limit = n - 1 if mode == "reflect" else n
            if n == 0 or pb[i] > limit or pe[i] > limit:
                raise LoweringError(f"{mode} padding of {pb[i]}/{pe[i]} on a dim of size {n} "
                                         "is larger than the dim")
    out_shape = [x.shape[i] + pb[i] + pe[i] for i in range(r)]
    out = lw.kb.temp(x.dtype, out_shape)
    seg_lists = [_segments(x.shape[i], pb[i], pe[i], mode) for i in range(r)]
    for combo in np.ndindex(*[len(s) for s in seg_lists]):
        segs = [seg_lists[i][c] for i, c in enumerate(combo)]
        region = [s[1] for s in segs]
        if 0 in region:
            continue
        dst = out.slice([s[0] for s in segs], [1] * r, region)
        if any(s[3] is None for s in segs):
            lw.kb.generic(origin, const(value, x.dtype, region), dst)
            continue
        if isinstance(x.node, Const):
            lw.kb.generic(origin, Expr(x.node, tuple(region)), dst)
            continue
        src_starts = [s[2] for s in segs]
        steps = [s[3] for s in segs]

        def view_region(v: View, src_starts: list[int] = src_starts,
                        steps: list[int | None] = steps, region: list[int] = region) -> View:
            off = v.offset + sum(st * s for st, s in zip(src_starts, v.strides, strict=True))
            strides = tuple(s * (k or 0) for s, k in zip(v.strides, steps, strict=True))
            return View(v.buffer, v.dtype, tuple(region), strides, off)

        lw.kb.generic(origin, x.map_views(view_region, region), dst)
    return out


@lowers(g.PadOp)
def _pad(lw: GraphLowering, op: g.GraphOp, ins: list[Expr]) -> list[Expr]:
    p = op.props()
    r = len(ins[0].shape)
    pads = p["pads"]
    val = p["value"]
    dt = ins[0].dtype
    if dtypes.dtype(dt).kind in ("int", "uint"):
        val = int(val)
    elif dt == "bool":
        val = bool(val)
    return [leaf(pad_expr(lw, lw.origin(op), ins[0], pads[:r], pads[r:], p["mode"], val))]


# ---------------------------------------------------------------------------- reductions


def _move_axes_last(x: Expr, axes: Sequence[int]) -> tuple[Expr, list[int]]:
    keep = [i for i in range(len(x.shape)) if i not in axes]
    perm = keep + list(axes)
    shape = tuple(x.shape[i] for i in perm)
    if isinstance(x.node, Const):
        return Expr(x.node, shape), keep
    return x.map_views(lambda v: v.transpose(perm), shape), keep


def reduce_expr(lw: GraphLowering, origin: str, x: Expr, axes: Sequence[int], kind: str,
                out_dtype: str | None = None) -> View:
    """Reduce ``x`` over ``axes`` into a new contiguous buffer shaped like the kept dims."""
    axes = sorted(a % len(x.shape) for a in axes) if x.shape else []
    xt, keep = _move_axes_last(x, axes)
    kept_shape = [x.shape[i] for i in keep]
    dt = out_dtype or x.dtype
    out = lw.kb.temp(dt, kept_shape)
    full = out.with_dims(xt.shape, list(out.strides) + [0] * len(axes))
    lw.kb.generic(origin, cast(xt, dt), full, n_parallel=len(keep), combiner=kind,
                  init=identity_value(kind, dt))
    return out


def _keepdims_view(v: View, in_shape: Sequence[int], axes: Sequence[int]) -> View:
    shape = [1 if i in axes else d for i, d in enumerate(in_shape)]
    r = v.reshape(shape)
    assert r is not None
    return r


@lowers(g.ReduceOp)
def _reduce(lw: GraphLowering, op: g.GraphOp, ins: list[Expr]) -> list[Expr]:
    p = op.props()
    x = ins[0]
    shape = _shape(op.results[0])
    if not p["axes"] or not x.shape:
        return [Expr(x.node, shape) if isinstance(x.node, Const) else
                x.map_views(lambda v: v.reshape(shape) or v, shape)]
    kind = p["kind"]
    if x.dtype == "bool":
        kind = {"max": "max", "min": "min", "sum": "max", "prod": "min"}[kind]
    v = reduce_expr(lw, lw.origin(op), x, p["axes"], kind)
    r = v.reshape(shape)
    assert r is not None
    return [leaf(r)]


@lowers(g.ArgReduceOp)
def _arg_reduce(lw: GraphLowering, op: g.GraphOp, ins: list[Expr]) -> list[Expr]:
    """Two reductions: the extreme value, then the first (or last) position holding it."""
    p = op.props()
    x = ins[0]
    ax = p["axis"] % len(x.shape)
    origin = lw.origin(op)
    xv = leaf(lw.view_of(op, x))
    m = reduce_expr(lw, origin, xv, [ax], p["kind"])
    mb = leaf(_keepdims_view(m, x.shape, [ax]).broadcast_to(x.shape))
    xt, keep = _move_axes_last(xv, [ax])
    mt, _ = _move_axes_last(mb, [ax])
    n = x.shape[ax]
    hit = Binary("bool", "eq", xt.node, mt.node)
    if dtypes.is_float(x.dtype):  # a NaN row: its first NaN wins, as numpy's argmax
        hit = Binary("bool", "or", hit, Unary("bool", "isnan", xt.node))
    pos = Index("int64", len(xt.shape) - 1)
    last = bool(p["select_last_index"])
    miss = Const("int64", -1 if last else n)
    body = Expr(Select("int64", hit, pos, miss), xt.shape)
    out = lw.kb.temp("int64", [x.shape[i] for i in keep])
    full = out.with_dims(xt.shape, list(out.strides) + [0])
    lw.kb.generic(origin, body, full, n_parallel=len(keep), combiner="max" if last else "min",
                  init=identity_value("max" if last else "min", "int64"))
    shape = _shape(op.results[0])
    r = out.reshape(shape)
    assert r is not None
    return [leaf(r)]


def _mean_over(lw: GraphLowering, origin: str, x: Expr, axes: list[int]) -> Expr:
    """Mean over ``axes`` as a keepdims expression broadcast back to ``x``'s shape."""
    s = reduce_expr(lw, origin, x, axes, "sum")
    n = numel([x.shape[a] for a in axes])
    sv = leaf(_keepdims_view(s, x.shape, axes).broadcast_to(x.shape))
    return binary("div", sv, const(float(n), x.dtype), x.shape)


@lowers(g.SoftmaxOp)
def _softmax(lw: GraphLowering, op: g.GraphOp, ins: list[Expr]) -> list[Expr]:
    x = leaf(lw.view_of(op, ins[0]))
    ax = op.props()["axis"] % len(x.shape)
    origin = lw.origin(op)
    m = reduce_expr(lw, origin, x, [ax], "max")
    mb = leaf(_keepdims_view(m, x.shape, [ax]).broadcast_to(x.shape))
    e = unary("exp", binary("sub", x, mb, x.shape))
    s = reduce_expr(lw, origin, e, [ax], "sum")
    sb = leaf(_keepdims_view(s, x.shape, [ax]).broadcast_to(x.shape))
    return [binary("div", e, sb, x.shape)]


@lowers(g.LayerNormOp)
def _layer_norm(lw: GraphLowering, op: g.GraphOp, ins: list[Expr]) -> list[Expr]:
    p = op.props()
    x = leaf(lw.view_of(op, ins[0]))
    axes = list(range(p["axis"] % len(x.shape), len(x.shape)))
    origin = lw.origin(op)
    mean = leaf(lw.kb.materialize(origin, _mean_over(lw, origin, x, axes)))
    d = binary("sub", x, mean, x.shape)
    var = _mean_over(lw, origin, binary("mul", d, d, x.shape), axes)
    den = unary("sqrt", binary("add", var, const(p["epsilon"], x.dtype), x.shape))
    y = binary("mul", binary("div", d, den, x.shape), broadcast_expr(ins[1], x.shape), x.shape)
    if len(ins) == 3:
        y = binary("add", y, broadcast_expr(ins[2], x.shape), x.shape)
    return [y]


@lowers(g.RMSNormOp)
def _rms_norm(lw: GraphLowering, op: g.GraphOp, ins: list[Expr]) -> list[Expr]:
    p = op.props()
    x = leaf(lw.view_of(op, ins[0]))
    axes = list(range(p["axis"] % len(x.shape), len(x.shape)))
    origin = lw.origin(op)
    ms = _mean_over(lw, origin, binary("mul", x, x, x.shape), axes)
    den = unary("sqrt", binary("add", ms, const(p["epsilon"], x.dtype), x.shape))
    return [binary("mul", binary("div", x, den, x.shape), broadcast_expr(ins[1], x.shape),
                   x.shape)]


@lowers(g.CumSumOp)
def _cumsum(lw: GraphLowering, op: g.GraphOp, ins: list[Expr]) -> list[Expr]:
    """A masked reduction over a second copy of the scanned axis: y[i] = sum_j [j <= i] x[j]
    (quadratic, but one generic loop nest every target already has)."""
    p = op.props()
    x = leaf(lw.view_of(op, ins[0]))
    ax = p["axis"] % len(x.shape)
    v = x.view
    assert v is not None
    n = x.shape[ax]
    shape = [*x.shape, n]
    strides = list(v.strides) + [v.strides[ax]]
    strides[ax] = 0
    xj = Leaf(x.dtype, View(v.buffer, v.dtype, tuple(shape), tuple(strides), v.offset))
    i_, j_ = Index("int64", ax), Index("int64", len(x.shape))
    cmp = {(False, False): "le", (True, False): "lt", (False, True): "ge", (True, True): "gt"}[
        (bool(p["exclusive"]), bool(p["reverse"]))]
    take = Binary("bool", cmp, j_, i_)
    body = Expr(Select(x.dtype, take, xj, Const(x.dtype, 0)), tuple(shape))
    out = lw.kb.temp(x.dtype, x.shape)
    lw.kb.generic(lw.origin(op), body, out.with_dims(shape, list(out.strides) + [0]),
                  n_parallel=len(x.shape), combiner="sum", init=0.0)
    return [leaf(out)]


# ---------------------------------------------------------------------------- linear algebra


def _matmul_view_shapes(a: View, b: View) -> tuple[View, View, tuple[int, ...]]:
    if len(a.shape) == 1:
        a = a.with_dims((1, a.shape[0]), (0, a.strides[0]))
    if len(b.shape) == 1:
        b = b.with_dims((b.shape[0], 1), (b.strides[0], 0))
    batch = tuple(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]))
    a = a.broadcast_to((*batch, *a.shape[-2:]))
    b = b.broadcast_to((*batch, *b.shape[-2:]))
    return a, b, batch


@lowers(g.MatMulOp)
def _matmul(lw: GraphLowering, op: g.GraphOp, ins: list[Expr]) -> list[Expr]:
    a, b, batch = _matmul_view_shapes(lw.view_of(op, ins[0]), lw.view_of(op, ins[1]))
    m, kk = a.shape[-2:]
    n = b.shape[-1]
    nb = len(batch)
    shape = (*batch, m, n, kk)
    av = a.with_dims(shape, (*a.strides[:nb], a.strides[-2], 0, a.strides[-1]))
    bv = b.with_dims(shape, (*b.strides[:nb], 0, b.strides[-1], b.strides[-2]))
    out_dt = g.spec_of(op.results[0]).dtype
    prod = binary("mul", cast(leaf(av), out_dt), cast(leaf(bv), out_dt), shape)
    out = lw.kb.temp(out_dt, (*batch, m, n))
    full = out.with_dims(shape, (*out.strides, 0))
    lw.kb.generic(lw.origin(op), prod, full, n_parallel=nb + 2, combiner="sum", init=0.0)
    r = out.reshape(_shape(op.results[0]))
    assert r is not None
    return [leaf(r)]


@lowers(g.ConvOp)
def _conv(lw: GraphLowering, op: g.GraphOp, ins: list[Expr]) -> list[Expr]:
    """Direct convolution as one reduction over (channel, window) of a strided view of the
    padded input: no im2col copy."""
    p = op.props()
    origin = lw.origin(op)
    x = ins[0]
    nsp = len(x.shape) - 2
    pads = p["pads"]
    if any(pads):
        xv = pad_expr(lw, origin, x, [0, 0, *pads[:nsp]], [0, 0, *pads[nsp:]], "constant",
                      0 if dtypes.is_int(x.dtype) else 0.0)
    else:
        xv = lw.view_of(op, x)
    wv = lw.view_of(op, ins[1])
    out_shape = _shape(op.results[0])
    out_dt = g.spec_of(op.results[0]).dtype
    grp = p["group"]
    n, c = xv.shape[:2]
    f = wv.shape[0]
    cg, fg = c // grp, f // grp
    ks = wv.shape[2:]
    osp = out_shape[2:]
    s, d = p["strides"], p["dilations"]
    xs, ws = xv.strides, wv.strides
    shape = (n, grp, fg, *osp, cg, *ks)
    x_str = (xs[0], cg * xs[1], 0, *[s[i] * xs[2 + i] for i in range(nsp)], xs[1],
             *[d[i] * xs[2 + i] for i in range(nsp)])
    w_str = (0, fg * ws[0], ws[0], *([0] * nsp), ws[1], *ws[2:])
    out = lw.kb.temp(out_dt, out_shape)
    os_ = out.strides
    o_str = (os_[0], fg * os_[1], os_[1], *os_[2:], 0, *([0] * nsp))
    xl = leaf(xv.with_dims(shape, x_str))
    wl = leaf(wv.with_dims(shape, w_str))
    prod = binary("mul", cast(xl, out_dt), cast(wl, out_dt), shape)
    lw.kb.generic(origin, prod, out.with_dims(shape, o_str), n_parallel=3 + nsp, combiner="sum",
                  init=0.0)
    y = leaf(out)
    if len(ins) == 3:
        bias = ins[2]
        bshape = (1, f, *([1] * nsp))
        bias = Expr(bias.node, bshape) if isinstance(bias.node, Const) else \
            bias.map_views(lambda v: v.reshape(bshape) or v, bshape)
        y = binary("add", y, cast(broadcast_expr(bias, out_shape), out_dt), out_shape)
    return [y]


@lowers(g.PoolOp)
def _pool(lw: GraphLowering, op: g.GraphOp, ins: list[Expr]) -> list[Expr]:
    p = op.props()
    origin = lw.origin(op)
    x = ins[0]
    nsp = len(x.shape) - 2
    kind = p["kind"]
    ks, s, d, pads = p["kernel"], p["strides"], p["dilations"], p["pads"]
    out_shape = _shape(op.results[0])
    osp = out_shape[2:]
    need = [(osp[i] - 1) * s[i] + d[i] * (ks[i] - 1) + 1 for i in range(nsp)]
    extra = [max(0, need[i] - (x.shape[2 + i] + pads[i] + pads[nsp + i])) for i in range(nsp)]
    ends = [pads[nsp + i] + extra[i] for i in range(nsp)]
    fill: float | int = float("-inf") if kind == "max" else 0.0
    if dtypes.is_int(x.dtype):
        fill = int(np.iinfo(dtypes.dtype(x.dtype).numpy).min) if kind == "max" else 0
    if any(pads[:nsp]) or any(ends):
        xv = pad_expr(lw, origin, x, [0, 0, *pads[:nsp]], [0, 0, *ends], "constant", fill)
    else:
        xv = lw.view_of(op, x)
    xs = xv.strides
    shape = (*out_shape, *ks)
    strides = (xs[0], xs[1], *[s[i] * xs[2 + i] for i in range(nsp)],
               *[d[i] * xs[2 + i] for i in range(nsp)])
    win = leaf(xv.with_dims(shape, strides))
    dt = x.dtype
    if kind == "lp":
        pw = float(p.get("p", 2))
        win = unary("abs", win) if pw == 1 else binary("pow", unary("abs", win), const(pw, dt),
                                                       shape)
    out = lw.kb.temp(dt, out_shape)
    lw.kb.generic(origin, win, out.with_dims(shape, (*out.strides, *([0] * nsp))),
                  n_parallel=2 + nsp, combiner="max" if kind == "max" else "sum",
                  init=identity_value("max" if kind == "max" else "sum", dt))
    y = leaf(out)
    if kind == "avg":
        # divisor per output position: window cells inside the input (or its explicit pads)
        if p["count_include_pad"]:  # explicit pads count, ceil-mode overhang does not
            ones = np.ones([x.shape[2 + i] + pads[i] + pads[nsp + i] for i in range(nsp)])
            ones = np.pad(ones, [(0, extra[i]) for i in range(nsp)])
        else:
            ones = np.pad(np.ones([x.shape[2 + i] for i in range(nsp)]),
                          [(pads[i], pads[nsp + i] + extra[i]) for i in range(nsp)])
        count = np.zeros(osp)
        for koff in np.ndindex(*ks):
            sl = tuple(slice(koff[i] * d[i], koff[i] * d[i] + (osp[i] - 1) * s[i] + 1, s[i])
                       for i in range(nsp))
            count += ones[sl]
        count = np.maximum(count, 1)
        if np.all(count == count.flat[0]):
            den = const(float(count.flat[0]), dt, out_shape)
        else:
            cw = lw.kb.new_weight("pool_count", count.astype(dtypes.dtype(dt).numpy))
            den = leaf(cw.reshape((1, 1, *osp)).broadcast_to(out_shape))  # type: ignore[union-attr]
        y = binary("div", y, den, out_shape)
    elif kind == "lp":
        pw = float(p.get("p", 2))
        if pw != 1:
            y = binary("pow", y, const(1.0 / pw, dt), out_shape)
    return [y]


# ---------------------------------------------------------------------------- indexed ops


def _index_leaf(lw: GraphLowering, op: g.GraphOp, idx: Expr, shape: Sequence[int],
                strides: Sequence[int], extra_offset: int = 0) -> Leaf:
    v = lw.view_of(op, idx)
    return Leaf(v.dtype, View(v.buffer, v.dtype, tuple(shape), tuple(strides),
                              v.offset + extra_offset))


@lowers(g.GatherOp)
def _gather(lw: GraphLowering, op: g.GraphOp, ins: list[Expr]) -> list[Expr]:
    data = lw.view_of(op, ins[0])
    idx = lw.view_of(op, ins[1])
    ax = op.props()["axis"] % len(data.shape)
    out_shape = _shape(op.results[0])
    ni = len(idx.shape)
    ds = data.strides
    d_str = (*ds[:ax], *([0] * ni), *ds[ax + 1:])
    i_str = (*([0] * ax), *idx.strides, *([0] * (len(data.shape) - ax - 1)))
    il = _index_leaf(lw, op, leaf(idx), out_shape, i_str)
    dl = Leaf(data.dtype, data.with_dims(out_shape, d_str), ((il, ds[ax], data.shape[ax]),))
    return [Expr(dl, tuple(out_shape))]


@lowers(g.GatherElementsOp)
def _gather_elements(lw: GraphLowering, op: g.GraphOp, ins: list[Expr]) -> list[Expr]:
    data = lw.view_of(op, ins[0])
    idx = lw.view_of(op, ins[1])
    ax = op.props()["axis"] % len(data.shape)
    shape = idx.shape
    d_str = tuple(0 if i == ax else s for i, s in enumerate(data.strides))
    il = Leaf(idx.dtype, idx)
    dl = Leaf(data.dtype, data.with_dims(shape, d_str),
              ((il, data.strides[ax], data.shape[ax]),))
    return [Expr(dl, tuple(shape))]


@lowers(g.GatherNDOp)
def _gather_nd(lw: GraphLowering, op: g.GraphOp, ins: list[Expr]) -> list[Expr]:
    data = lw.view_of(op, ins[0])
    idx = lw.view_of(op, ins[1])
    b = op.props()["batch_dims"]
    kk = idx.shape[-1]
    out_shape = _shape(op.results[0])
    lead = idx.shape[:-1]  # batch dims then index dims
    trail = data.shape[b + kk:]
    i_str = (*idx.strides[:-1], *([0] * len(trail)))
    d_str = (*data.strides[:b], *([0] * (len(lead) - b)), *data.strides[b + kk:])
    terms = tuple(
        (_index_leaf(lw, op, leaf(idx), out_shape, i_str, j * idx.strides[-1]),
         data.strides[b + j], data.shape[b + j])
        for j in range(kk))
    dl = Leaf(data.dtype, data.with_dims(out_shape, d_str), terms)
    return [Expr(dl, tuple(out_shape))]


_SCATTER_COMBINER = {"none": "none", "add": "sum", "mul": "prod", "max": "max", "min": "min"}


def _copy_of(lw: GraphLowering, op: g.GraphOp, x: Expr) -> View:
    out = lw.kb.temp(x.dtype, x.shape)
    lw.kb.generic(lw.origin(op), x, out)
    return out


def _scatter(lw: GraphLowering, op: g.GraphOp, out: View, upd: Expr, shape: Sequence[int],
             out_strides: Sequence[int], terms: list[tuple[Leaf, int, int]]) -> None:
    """``out[addr(p) + sum(stride * idx)] (op)= upd[p]`` in iteration order."""
    comb = _SCATTER_COMBINER[op.props()["reduction"]]
    upd_leaf = leaf(lw.view_of(op, upd)).node
    # the index leaves ride along as extra slots: a select that never picks them keeps them in
    # the body without changing the value (their loads are what the output address needs)
    root: Node = upd_leaf
    kb = lw.kb
    slots = [upd_leaf, *[t[0] for t in terms]]
    ins = [(lf.view.buffer, lf.view.strides, lf.view.offset) for lf in slots]  # type: ignore
    indirect = [(-1, 1 + i, s, bnd) for i, (_, s, bnd) in enumerate(terms)]
    body = _build_body(root, slots)  # type: ignore[arg-type]
    kb.ops.append(k.GenericOp.make(kb.kernel_name(lw.origin(op)), lw.origin(op), list(shape),
                                   len(shape), ins, (out.buffer, tuple(out_strides), out.offset),
                                   comb, None, indirect, body))


@lowers(g.ScatterElementsOp)
def _scatter_elements(lw: GraphLowering, op: g.GraphOp, ins: list[Expr]) -> list[Expr]:
    out = _copy_of(lw, op, ins[0])
    idx = lw.view_of(op, ins[1])
    ax = op.props()["axis"] % len(out.shape)
    o_str = [0 if i == ax else s for i, s in enumerate(out.strides)]
    _scatter(lw, op, out, ins[2], idx.shape, o_str,
             [(Leaf(idx.dtype, idx), out.strides[ax], out.shape[ax])])
    return [leaf(out)]


@lowers(g.ScatterNDOp)
def _scatter_nd(lw: GraphLowering, op: g.GraphOp, ins: list[Expr]) -> list[Expr]:
    out = _copy_of(lw, op, ins[0])
    idx = lw.view_of(op, ins[1])
    kk = idx.shape[-1]
    lead = idx.shape[:-1]
    trail = out.shape[kk:]
    shape = (*lead, *trail)
    o_str = [0] * len(lead) + list(out.strides[kk:])
    i_str = (*idx.strides[:-1], *([0] * len(trail)))
    terms = [(_index_leaf(lw, op, leaf(idx), shape, i_str, j * idx.strides[-1]),
              out.strides[j], out.shape[j]) for j in range(kk)]
    upd = ins[2]
    upd = Expr(upd.node, shape) if isinstance(upd.node, Const) else upd.map_views(
        lambda v: v.reshape(shape) or v, shape)
    _scatter(lw, op, out, upd, shape, o_str, terms)
    return [leaf(out)]


def _sort_rows(lw: GraphLowering, op: g.GraphOp, x: Expr, ax: int, kk: int,
               descending: bool) -> list[Expr]:
    r = len(x.shape)
    perm = [i for i in range(r) if i != ax] + [ax]
    inv = list(np.argsort(perm))
    xt = x.map_views(lambda v: v.transpose(perm), [x.shape[i] for i in perm]) \
        if not isinstance(x.node, Const) else Expr(x.node, tuple(x.shape[i] for i in perm))
    src = lw.kb.materialize(lw.origin(op), xt) if xt.view is None or not xt.view.is_contiguous() \
        else xt.view
    n = x.shape[ax]
    rows = numel(x.shape) // max(n, 1) if n else numel([x.shape[i] for i in perm[:-1]])
    oshape = [*(x.shape[i] for i in perm[:-1]), kk]
    vals = lw.kb.temp(x.dtype, oshape)
    idxs = lw.kb.temp("int64", oshape)
    lw.kb.ops.append(k.SortOp.make(lw.kb.kernel_name(lw.origin(op)), lw.origin(op), src.buffer,
                                   src.offset, vals.buffer, idxs.buffer, rows, n, kk, descending))
    return [leaf(vals.transpose(inv)), leaf(idxs.transpose(inv))]


@lowers(g.TopKOp)
def _topk(lw: GraphLowering, op: g.GraphOp, ins: list[Expr]) -> list[Expr]:
    p = op.props()
    return _sort_rows(lw, op, ins[0], p["axis"] % len(ins[0].shape), p["k"], bool(p["largest"]))


@lowers(g.SortOp)
def _sort(lw: GraphLowering, op: g.GraphOp, ins: list[Expr]) -> list[Expr]:
    p = op.props()
    ax = p["axis"] % len(ins[0].shape)
    return _sort_rows(lw, op, ins[0], ax, ins[0].shape[ax], bool(p["descending"]))


# ---------------------------------------------------------------------------- the pass


def lower_to_kernels(program: Program) -> Program:
    """A new program whose module holds kernel-dialect buffers and kernels; weights shared."""
    module = GraphLowering(program).run()
    attrs = {"portc.input_names": program.main.attributes.get("portc.input_names"),
             "portc.output_names": program.main.attributes.get("portc.output_names")}
    for key, val in attrs.items():
        if val is not None:
            module.attributes[key] = val
    return Program(module, program.weights)


@dataclass(frozen=True)
class LowerGraphToKernel(ModulePass):
    """Replace ``func.func @main`` (graph ops) with the kernel-dialect program."""

    name = "lower-graph-to-kernel"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        prog = Program(op, weights_of(ctx))
        new = lower_to_kernels(prog)
        for o in list(op.ops):
            o.detach()
            o.erase()
        for o in list(new.module.ops):
            o.detach()
            op.body.block.add_op(o)
        op.attributes.update(new.module.attributes)


