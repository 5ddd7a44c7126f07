"""``moe-routing``: lower ``moe.moe`` to core graph ops with a static-shape expert dispatch.

Targets implement only core ops, and core ops have static shapes, so the data-dependent part of a
mixture of experts (which token goes to which expert, how many each expert gets) must become
index arithmetic over fixed-size buffers. The lowering is the counting-sort dispatch of
Switch / GShard / MegaBlocks, with A = T*k assignments and C slots per expert::

    probs        = softmax(x @ router)                        [T, E]
    w, e         = topk(probs, k)   (/ sum(w) if normalize)   [T, k]
    se, perm     = sort(reshape(e, [A]))   (stable)           [A]   assignments grouped by expert
    tok          = perm / k                                   [A]   token of each assignment
    rank         = cumsum(onehot(se), exclusive)[a, se[a]]    [A]   position within its expert
    slot         = rank < C ? rank : C                        [A]   C = the drop slot
    buf          = scatter_nd(0[E, C+1, H], (se, slot), x[tok])
    y            = expert MLP over buf[:, :C], batched matmuls [E, C, H]  (SwiGLU or act, biases)
    ys           = gather_nd(pad(y, slot C = 0), (se, slot))  [A, H]  dropped rows read zeros
    out          = reduce_sum(reshape(unpermute(ys * w[perm]), [T, k, H]), axis 1)

The stable sort keeps assignments of one expert in row-major (token, k) order, so the ranks (and
therefore which assignments a capacity limit drops) are exactly those the ``moe.moe`` reference
kernel defines. With ``capacity_factor`` 0, C = A: no assignment can overflow, and the drop slot,
the select and the pad are left out. The combine unpermutes with a scatter (each row written
once) and reduces over k, so the sum order is fixed rather than that of a scatter-add.

With ``router_input="logits"`` the router operand already is the logits and the first matmul
is left out. Expert biases are added as [E, 1, F] / [E, 1, H] broadcasts; the buffer's empty
slots then hold bias-only rows, which no assignment reads back.

Only ops with a static token count are lowered (C depends on T); others are left as ``moe.moe``.
``moe_drop_statistics`` reports, for given inputs, how many assignments each expert receives and
how many a capacity limit drops.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)

from portc.compiler.builder import ssa_hint
from portc.compiler.program import Program, weights_of
from portc.compiler.weights import WeightStore
from portc.dialects import dtypes, moe
from portc.dialects import graph as g
from portc.passes.registry import register_pass
from portc.runtimes.reference import moe_kernels  # also registers the moe.moe kernel


class _Emitter:
    """Builds the replacement ops in order; results are inferred exactly as the verifier will
    infer them, so a wrong shape fails here, naming the op."""

    def __init__(self, weights: WeightStore, prefix: str) -> None:
        self.weights = weights
        self.prefix = prefix
        self.ops: list[Operation] = []

    def op(self, cls: type[g.GraphOp], operands: Sequence[SSAValue], props: g.Props,
           result: g.TensorSpec | None = None, hint: str | None = None) -> list[SSAValue]:
        results = [result] if result is not None else cls.infer(
            [g.spec_of(v) for v in operands], props)
        new = cls.build_op(operands, results, props)
        self.ops.append(new)
        if hint:
            for r in new.results:
                r.name_hint = ssa_hint(f"{self.prefix}_{hint}")
        return list(new.results)

    def one(self, cls: type[g.GraphOp], operands: Sequence[SSAValue], props: g.Props,
            result: g.TensorSpec | None = None, hint: str | None = None) -> SSAValue:
        return self.op(cls, operands, props, result, hint)[0]

    def const(self, arr: np.ndarray, hint: str) -> SSAValue:
        name = self.weights.add(arr, f"{self.prefix}_{hint}")
        spec = g.TensorSpec(tuple(arr.shape), dtypes.from_numpy(arr.dtype).name)
        c = g.ConstantOp.build_op([], [spec], {"resource": name})
        c.result.name_hint = ssa_hint(name)
        self.ops.append(c)
        return c.result

    def binary(self, fn: str, a: SSAValue, b: SSAValue, hint: str | None = None) -> SSAValue:
        return self.one(g.BinaryOp, [a, b], {"fn": fn}, hint=hint)

    def reshape(self, x: SSAValue, shape: Sequence[int], hint: str | None = None) -> SSAValue:
        spec = g.TensorSpec(tuple(shape), g.spec_of(x).dtype)
        return self.one(g.ReshapeOp, [x], {}, spec, hint)

    def zeros(self, shape: Sequence[int], dtype: str) -> SSAValue:
        """A zero tensor as broadcast of a scalar constant, so buffers cost no weight bytes."""
        zero = self.const(np.zeros((), dtypes.dtype(dtype).numpy), "zero")
        return self.one(g.BroadcastOp, [zero], {}, g.TensorSpec(tuple(shape), dtype))


def _activate(b: _Emitter, fn: str, v: SSAValue) -> SSAValue:
    """A non-gated expert activation in core ops (tanh-approximated GELU spelled out)."""
    if fn == "identity":
        return v
    if fn == "relu":
        return b.one(g.UnaryOp, [v], {"fn": "relu"})
    if fn == "silu":
        return b.binary("mul", v, b.one(g.UnaryOp, [v], {"fn": "sigmoid"}))
    if fn == "gelu_tanh":
        np_dt = dtypes.dtype(g.spec_of(v).dtype).numpy

        def c(val: float, hint: str) -> SSAValue:
            return b.const(np.array(val, np_dt), hint)

        cube = b.binary("mul", b.binary("mul", v, v), v)
        inner = b.binary("add", v, b.binary("mul", cube, c(0.044715, "gelu_c")))
        th = b.one(g.UnaryOp, [b.binary("mul", inner, c(float(np.sqrt(2.0 / np.pi)),
                                                               "gelu_s"))], {"fn": "tanh"})
        half = b.binary("mul", v, c(0.5, "half"))
        return b.binary("mul", half, b.binary("add", th, c(1.0, "one")))
    raise ValueError(f"moe-routing: unknown activation '{fn}'")


def lower_moe(op: moe.MoEOp, weights: WeightStore, prefix: str) -> tuple[list[Operation],
                                                                          SSAValue]:
    """Core-op replacement for one static-shape ``moe.moe``: (ops in order, result value)."""
    p = op.props()
    x_spec = g.spec_of(op.x)
    t, h = x_spec.shape
    e, _, f = g.spec_of(op.w_up).shape
    act_fn = moe.activation_of(p)
    k = p["top_k"]
    a = t * k
    cap = moe.expert_capacity(t, k, e, p["capacity_factor"])
    dropping = cap < a
    dt = x_spec.dtype
    b = _Emitter(weights, prefix)

    # routing
    if moe.router_input_of(p) == "logits":
        logits = op.router
    else:
        logits = b.one(g.MatMulOp, [op.x, op.router], {}, hint="logits")
    probs = b.one(g.SoftmaxOp, [logits], {"axis": 1}, hint="probs")
    topw, tope = b.op(g.TopKOp, [probs], {"axis": 1, "k": k, "largest": 1}, hint="top")
    if p["normalize"]:
        denom = b.one(g.ReduceOp, [topw], {"kind": "sum", "axes": (1,), "keepdims": 1})
        topw = b.binary("div", topw, denom, hint="weights")

    # dispatch: group assignments by expert, rank each within its expert
    sorted_e, perm = b.op(g.SortOp, [b.reshape(tope, [a])], {"axis": 0, "descending": 0},
                          hint="sorted")
    tok = b.binary("div", perm, b.const(np.array(k, np.int64), "k"), hint="token")
    xs = b.one(g.GatherOp, [op.x, tok], {"axis": 0}, hint="permuted")
    se_col = b.reshape(sorted_e, [a, 1])
    ids = b.const(np.arange(e, dtype=np.int64).reshape(1, e), "expert_ids")
    onehot = b.one(g.CastOp, [b.binary("eq", se_col, ids)], {"to": "int64"})
    ranks = b.one(g.CumSumOp, [onehot], {"axis": 0, "exclusive": 1, "reverse": 0})
    slot = b.one(g.GatherElementsOp, [ranks, se_col], {"axis": 1}, hint="rank")  # [A, 1]
    if dropping:
        capc = b.const(np.array(cap, np.int64), "capacity")
        slot = b.one(g.WhereOp, [b.binary("lt", slot, capc), slot, capc], {}, hint="slot")
    where = b.one(g.ConcatOp, [se_col, slot], {"axis": 1}, hint="where")  # [A, 2]
    rows = cap + 1 if dropping else cap
    buf = b.one(g.ScatterNDOp, [b.zeros([e, rows, h], dt), where, xs], {"reduction": "none"},
                hint="dispatch")
    if dropping:  # the drop slot collects overflow rows; the experts never see it
        buf = b.one(g.SliceOp, [buf], {"starts": (0, 0, 0), "steps": (1, 1, 1)},
                    g.TensorSpec((e, cap, h), dt))

    # experts: one batched GEMM per projection over [E, C, *]
    def proj(v: SSAValue, which: str, hint: str) -> SSAValue:
        w = op.expert_operand("w_" + which)
        assert w is not None
        y = b.one(g.MatMulOp, [v, w], {}, hint=hint)
        bias = op.expert_operand("b_" + which)
        if bias is None:
            return y
        n = g.spec_of(bias).shape[1]
        return b.binary("add", y, b.reshape(bias, [e, 1, n]), hint=f"{hint}_biased")

    if act_fn == "swiglu":
        act = b.binary("mul", _activate(b, "silu", proj(buf, "gate", "gate")),
                       proj(buf, "up", "up"))
    else:
        act = _activate(b, act_fn, proj(buf, "up", "up"))
    y = proj(act, "down", "expert_out")
    if dropping:  # zero row in the drop slot: dropped assignments read back zeros
        y = b.one(g.PadOp, [y], {"pads": (0, 0, 0, 0, 1, 0), "mode": "constant", "value": 0.0})

    # combine
    ys = b.one(g.GatherNDOp, [y, where], {"batch_dims": 0}, hint="gathered")  # [A, H]
    w_sorted = b.one(g.GatherOp, [b.reshape(topw, [a]), perm], {"axis": 0})
    scaled = b.binary("mul", ys, b.reshape(w_sorted, [a, 1]), hint="weighted")
    unperm = b.one(g.ScatterNDOp, [b.zeros([a, h], dt), b.reshape(perm, [a, 1]), scaled],
                   {"reduction": "none"})
    out = b.one(g.ReduceOp, [b.reshape(unperm, [t, k, h])],
                {"kind": "sum", "axes": (1,), "keepdims": 0})
    return b.ops, out


class LowerMoE(RewritePattern):
    """``moe.moe`` with a static token count -> core graph ops (see the module docstring)."""

    def __init__(self, weights: WeightStore) -> None:
        self.weights = weights
        self.count = 0

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: moe.MoEOp, rewriter: PatternRewriter) -> None:
        if not all(g.spec_of(v).is_static for v in op.operands):
            return
        ops, out = lower_moe(op, self.weights, f"moe{self.count}")
        self.count += 1
        hint = op.result.name_hint
        rewriter.replace(op, ops, [out])
        out.name_hint = hint


@register_pass
@dataclass(frozen=True)
class MoERoutingPass(ModulePass):
    """Lower ``moe.moe`` to softmax/top-k routing, sort-based dispatch into per-expert capacity
    buffers, batched expert GEMMs and a weighted combine, in core graph ops."""

    name = "moe-routing"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(LowerMoE(weights_of(ctx)), apply_recursively=False).rewrite_module(op)


# ------------------------------------------------------------------------------ reporting


def moe_drop_statistics(program: Program, inputs: Mapping[str, np.ndarray]) -> list[dict]:
    """Per ``moe.moe`` op of ``program`` (before ``moe-routing``), in program order, for one
    reference run on ``inputs``: ``capacity``, ``tokens_per_expert`` (assignments routed to each
    expert), ``kept_per_expert`` and ``dropped`` (assignments over capacity, contributing zero).
    The routing is the reference kernel's, which the lowering reproduces exactly."""
    from portc.runtimes.reference.interpreter import run_program

    moe_ops = [o for o in program.main.walk() if isinstance(o, moe.MoEOp)]
    wanted = {v for o in moe_ops for v in (o.x, o.router)}
    values: dict[SSAValue, np.ndarray] = {}
    for arg, name in zip(program.main.args, program.input_names, strict=True):
        if arg in wanted:
            values[arg] = np.asarray(inputs[name])

    def keep(op: Operation, res: list[np.ndarray]) -> None:
        for r, arr in zip(op.results, res, strict=True):
            if r in wanted:
                values[r] = arr

    run_program(program, inputs, on_op=keep)
    stats = []
    for o in moe_ops:
        p = o.props()
        x, router = values[o.x], values[o.router]
        r = moe_kernels.route(x, router, p["top_k"], bool(p["normalize"]), p["capacity_factor"],
                              moe.router_input_of(p))
        n_exp = router.shape[1]
        stats.append({
            "capacity": r.capacity,
            "tokens_per_expert": r.tokens_per_expert(n_exp).tolist(),
            "kept_per_expert": r.kept_per_expert(n_exp).tolist(),
            "dropped": int((~r.keep).sum()),
        })
    return stats
