"""ONNX recurrent ops (RNN, GRU, LSTM) decomposed into graph-dialect core ops.

portc has no loop op, so a recurrence is unrolled statically over the sequence length: the input
projection of every time step is one matmul (``X @ W^T + Wb + Rb``), then each step is a slice, a
matmul against ``R^T`` and a handful of elementwise ops. ``sequence_lens`` is handled with masks
(``t < len[b]``): a masked step keeps the previous state and writes zeros to ``Y``, which is exactly
ONNX's semantics for both directions (a reverse pass over padded steps leaves the initial state
untouched until the first valid step), so no runtime re-indexing is needed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from xdsl.ir import SSAValue

from portc.compiler.builder import GraphBuilder
from portc.compiler.frontends.onnx.registry import NodeError, OnnxContext, Outputs, onnx_op
from portc.dialects import dtypes

Act = Callable[[GraphBuilder, SSAValue], SSAValue]

# --------------------------------------------------------------------------------- activations

#: activation name (lower case) -> (number of alpha/beta parameters it consumes, default alpha,
#: default beta). Parameters are consumed in activation order, only by functions that use them
#: (ONNX Runtime's rule), so ``activation_alpha`` is not indexed by activation position.
_ACT_PARAMS: dict[str, tuple[bool, bool, float, float]] = {
    "relu": (False, False, 0.0, 0.0),
    "tanh": (False, False, 0.0, 0.0),
    "sigmoid": (False, False, 0.0, 0.0),
    "softsign": (False, False, 0.0, 0.0),
    "softplus": (False, False, 0.0, 0.0),
    "affine": (True, True, 1.0, 0.0),
    "leakyrelu": (True, False, 0.01, 0.0),
    "thresholdedrelu": (True, False, 1.0, 0.0),
    "scaledtanh": (True, True, 1.0, 1.0),
    "hardsigmoid": (True, True, 0.2, 0.5),
    "elu": (True, False, 1.0, 0.0),
}


def _make_act(name: str, alpha: float, beta: float) -> Act:
    """One activation as core ops; alpha/beta are baked in as scalar constants."""

    def act(b: GraphBuilder, x: SSAValue) -> SSAValue:
        def c(v: float) -> SSAValue:
            return b.scalar(v, x)

        if name in ("relu", "tanh", "sigmoid"):
            return b.unary(name, x)
        if name == "softsign":
            return b.binary("div", x, b.binary("add", c(1.0), b.unary("abs", x)))
        if name == "softplus":
            return b.unary("log", b.binary("add", c(1.0), b.unary("exp", x)))
        if name == "affine":
            return b.binary("add", b.binary("mul", x, c(alpha)), c(beta))
        if name == "leakyrelu":
            return b.where(b.binary("lt", x, c(0.0)), b.binary("mul", x, c(alpha)), x)
        if name == "thresholdedrelu":
            return b.where(b.binary("gt", x, c(alpha)), x, c(0.0))
        if name == "scaledtanh":
            return b.binary("mul", c(alpha), b.unary("tanh", b.binary("mul", x, c(beta))))
        if name == "hardsigmoid":
            y = b.binary("add", b.binary("mul", x, c(alpha)), c(beta))
            return b.binary("max", c(0.0), b.binary("min", c(1.0), y))
        if name == "elu":
            neg = b.binary("mul", c(alpha), b.binary("sub", b.unary("exp", x), c(1.0)))
            return b.where(b.binary("lt", x, c(0.0)), neg, x)
        raise NodeError(f"activation '{name}' is not supported")

    return act


def _activations(ctx: OnnxContext, node: onnx.NodeProto, defaults: Sequence[str],
                 num_dirs: int) -> list[list[Act]]:
    """Per direction, the op's activation functions (f, g[, h])."""
    names = ctx.attr(node, "activations", None)
    per_dir = len(defaults)
    if not names:
        names = list(defaults) * num_dirs
    names = [str(n).lower() for n in names]  # type: ignore[union-attr]
    if len(names) == per_dir and num_dirs == 2:
        names = names * 2
    if len(names) != per_dir * num_dirs:
        raise NodeError(f"expects {per_dir * num_dirs} activations, got {len(names)}")
    alphas = [float(v) for v in ctx.attr(node, "activation_alpha", []) or []]  # type: ignore[union-attr]
    betas = [float(v) for v in ctx.attr(node, "activation_beta", []) or []]  # type: ignore[union-attr]
    acts: list[Act] = []
    for n in names:
        if n not in _ACT_PARAMS:
            raise NodeError(f"activation '{n}' is not supported")
        uses_a, uses_b, da, db = _ACT_PARAMS[n]
        a = alphas.pop(0) if uses_a and alphas else da
        bt = betas.pop(0) if uses_b and betas else db
        acts.append(_make_act(n, a, bt))
    return [acts[d * per_dir:(d + 1) * per_dir] for d in range(num_dirs)]


# --------------------------------------------------------------------------------- shared frame


@dataclass
class _Rnn:
    """Everything the per-cell step functions share, normalised to time-major layout."""

    b: GraphBuilder
    x: SSAValue  # [T, B, I]
    seq: int
    batch: int
    hidden: int
    num_dirs: int
    directions: list[str]  # "forward" / "reverse" per direction
    clip: float | None
    dtype: str
    lens: SSAValue | None  # int64 [B]

    def take(self, x: SSAValue, axis: int, start: int, count: int) -> SSAValue:
        """``x[..., start:start+count, ...]`` along one axis."""
        shape = list(self.b_shape(x))
        starts = [0] * len(shape)
        starts[axis] = start
        shape[axis] = count
        return self.b.slice(x, starts, [1] * len(shape), shape)

    @staticmethod
    def b_shape(x: SSAValue) -> tuple[int, ...]:
        return tuple(int(d) for d in OnnxContext.spec(x).shape)  # type: ignore[arg-type]

    def clipped(self, x: SSAValue) -> SSAValue:
        if self.clip is None:
            return x
        c = self.clip
        return self.b.binary("min", self.b.binary("max", x, self.b.scalar(-c, x)),
                             self.b.scalar(c, x))

    def mask(self, t: int) -> SSAValue | None:
        """bool [B, 1]: which batch rows are still inside their sequence at step ``t``."""
        if self.lens is None:
            return None
        m = self.b.binary("lt", self.b.scalar(t, "int64"), self.lens)
        return self.b.reshape(m, (self.batch, 1))


def _frame(ctx: OnnxContext, node: onnx.NodeProto, gates: int) -> tuple[_Rnn, int]:
    b = ctx.b
    x = ctx.input(node, 0)
    dt = ctx.spec(x).dtype
    if dtypes.dtype(dt).kind != "float":
        raise NodeError(f"needs a floating-point input, got {dt}")
    layout = ctx.attr_int(node, "layout", 0)
    if layout == 1:
        x = b.transpose(x, (1, 0, 2))
    seq, batch, _ = ctx.static_shape(x, node)
    direction = ctx.attr_str(node, "direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise NodeError(f"unknown direction '{direction}'")
    dirs = ["forward", "reverse"] if direction == "bidirectional" else [direction]
    w_shape = ctx.static_shape(ctx.input(node, 1), node)
    hidden = ctx.attr_int(node, "hidden_size", w_shape[1] // gates)
    clip_v = ctx.attr(node, "clip", None)
    lens = ctx.opt_input(node, 4)
    if lens is not None:
        lens = b.cast(lens, "int64")
        arr = b.value_of(lens)
        if arr is not None and (arr >= seq).all():
            lens = None  # every sequence is full length: no masking needed
    st = _Rnn(b, x, seq, batch, hidden, len(dirs), dirs,
              None if clip_v is None else float(clip_v), dt, lens)  # type: ignore[arg-type]
    return st, layout


def _state_input(ctx: OnnxContext, node: onnx.NodeProto, i: int, st: _Rnn, layout: int
                 ) -> list[SSAValue]:
    """Initial state per direction as [B, H] (zeros when absent)."""
    b = ctx.b
    v = ctx.opt_input(node, i)
    if v is None:
        z = b.const(np.zeros((st.batch, st.hidden)), st.dtype, hint="h0")
        return [z] * st.num_dirs
    if layout == 1:
        v = b.transpose(v, (1, 0, 2))
    return [b.reshape(st.take(v, 0, d, 1), (st.batch, st.hidden)) for d in range(st.num_dirs)]


def _weights(ctx: OnnxContext, node: onnx.NodeProto, st: _Rnn, gates: int, d: int
             ) -> tuple[SSAValue, SSAValue, SSAValue | None, SSAValue | None]:
    """Direction ``d``'s ``W^T`` [I, G*H], ``R^T`` [H, G*H], ``Wb`` and ``Rb`` ([G*H] or None)."""
    b = ctx.b
    gh = gates * st.hidden
    w = ctx.input(node, 1)
    r = ctx.input(node, 2)
    wd = b.transpose(b.reshape(st.take(w, 0, d, 1), st.b_shape(w)[1:]), (1, 0))
    rd = b.transpose(b.reshape(st.take(r, 0, d, 1), st.b_shape(r)[1:]), (1, 0))
    bias = ctx.opt_input(node, 3)
    if bias is None:
        return wd, rd, None, None
    bd = b.reshape(st.take(bias, 0, d, 1), (2 * gh,))
    return wd, rd, st.take(bd, 0, 0, gh), st.take(bd, 0, gh, gh)


def _input_proj(st: _Rnn, wt: SSAValue, bias: SSAValue | None) -> SSAValue:
    """``X @ W^T (+ bias)`` for every time step at once: [T, B, G*H]."""
    p = st.b.matmul(st.x, wt)
    return p if bias is None else st.b.binary("add", p, bias)


def _step_input(st: _Rnn, proj: SSAValue, t: int) -> SSAValue:
    gh = st.b_shape(proj)[2]
    return st.b.reshape(st.take(proj, 0, t, 1), (st.batch, gh))


def _gate(st: _Rnn, x: SSAValue, k: int) -> SSAValue:
    """Gate ``k`` of a [B, G*H] pre-activation."""
    return st.take(x, 1, k * st.hidden, st.hidden)


def _run_direction(st: _Rnn, d: int, states: list[SSAValue],
                   step: Callable[[int, list[SSAValue]], list[SSAValue]]
                   ) -> tuple[list[SSAValue], list[SSAValue]]:
    """Unroll one direction; returns the per-time-step hidden outputs (in time order, masked) and
    the final states."""
    b = st.b
    order = range(st.seq) if st.directions[d] == "forward" else range(st.seq - 1, -1, -1)
    ys: dict[int, SSAValue] = {}
    zero = None
    for t in order:
        new = step(t, states)
        m = st.mask(t)
        if m is None:
            states = new
            ys[t] = new[0]
        else:
            if zero is None:
                zero = b.scalar(0.0, st.dtype)
            states = [b.where(m, n, s) for n, s in zip(new, states, strict=True)]
            ys[t] = b.where(m, new[0], zero)
    return [ys[t] for t in range(st.seq)], states


def _outputs(ctx: OnnxContext, node: onnx.NodeProto, st: _Rnn, layout: int,
             ys: list[list[SSAValue]], finals: list[list[SSAValue]]) -> list[SSAValue | None]:
    """Assemble ``Y`` [T, D, B, H] and the final states [D, B, H] in the requested layout."""
    b = ctx.b
    bh = (st.batch, st.hidden)
    outs: list[SSAValue | None] = []
    want_y = len(node.output) > 0 and node.output[0] != ""
    if want_y:
        per_t = [b.concat([b.reshape(ys[d][t], (1, 1, *bh)) for d in range(st.num_dirs)], 1)
                 for t in range(st.seq)]
        y = b.concat(per_t, 0) if st.seq > 0 else None
        if y is not None and layout == 1:
            y = b.transpose(y, (2, 0, 1, 3))
        outs.append(y)
    else:
        outs.append(None)
    for k in range(len(finals[0])):
        s = b.concat([b.reshape(finals[d][k], (1, *bh)) for d in range(st.num_dirs)], 0)
        if layout == 1:
            s = b.transpose(s, (1, 0, 2))
        outs.append(s)
    return outs


# --------------------------------------------------------------------------------- the cells


@onnx_op("RNN")
def rnn(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    """``H_t = f(X_t W^T + H_{t-1} R^T + Wb + Rb)``."""
    st, layout = _frame(ctx, node, 1)
    b = st.b
    acts = _activations(ctx, node, ["Tanh"], st.num_dirs)
    h0 = _state_input(ctx, node, 5, st, layout)
    ys, finals = [], []
    for d in range(st.num_dirs):
        wt, rt, wb, rb = _weights(ctx, node, st, 1, d)
        bias = None if wb is None else b.binary("add", wb, rb)  # type: ignore[arg-type]
        proj = _input_proj(st, wt, bias)
        f = acts[d][0]

        def step(t: int, s: list[SSAValue], proj: SSAValue = proj, rt: SSAValue = rt,
                 f: Act = f) -> list[SSAValue]:
            pre = b.binary("add", _step_input(st, proj, t), b.matmul(s[0], rt))
            return [f(b, st.clipped(pre))]

        y, fin = _run_direction(st, d, [h0[d]], step)
        ys.append(y)
        finals.append(fin)
    return _outputs(ctx, node, st, layout, ys, finals)


@onnx_op("GRU")
def gru(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    """Gates z, r, h; ``linear_before_reset`` applies r after the recurrent matmul and its bias."""
    st, layout = _frame(ctx, node, 3)
    b = st.b
    acts = _activations(ctx, node, ["Sigmoid", "Tanh"], st.num_dirs)
    lbr = ctx.attr_int(node, "linear_before_reset", 0)
    h0 = _state_input(ctx, node, 5, st, layout)
    hs = st.hidden
    ys, finals = [], []
    for d in range(st.num_dirs):
        wt, rt, wb, rb = _weights(ctx, node, st, 3, d)
        # z and r take both biases up front; h's recurrent bias depends on linear_before_reset
        if wb is None:
            in_bias = None
            rbh = None
        else:
            assert rb is not None
            rb_zr0 = b.concat([st.take(rb, 0, 0, 2 * hs), b.const(
                np.zeros(hs), st.dtype)], 0)
            in_bias = b.binary("add", wb, rb_zr0)
            rbh = st.take(rb, 0, 2 * hs, hs)
        proj = _input_proj(st, wt, in_bias)
        rt_zr = st.take(rt, 1, 0, 2 * hs)
        rt_h = st.take(rt, 1, 2 * hs, hs)
        f, g_ = acts[d]

        def step(t: int, s: list[SSAValue], proj: SSAValue = proj, rt_zr: SSAValue = rt_zr,
                 rt_h: SSAValue = rt_h, rbh: SSAValue | None = rbh, f: Act = f,
                 g_: Act = g_) -> list[SSAValue]:
            h = s[0]
            xp = _step_input(st, proj, t)
            hzr = b.matmul(h, rt_zr)
            z = f(b, st.clipped(b.binary("add", _gate(st, xp, 0), _gate(st, hzr, 0))))
            r = f(b, st.clipped(b.binary("add", _gate(st, xp, 1), _gate(st, hzr, 1))))
            if lbr:
                hh = b.matmul(h, rt_h)
                if rbh is not None:
                    hh = b.binary("add", hh, rbh)
                rec = b.binary("mul", r, hh)
            else:
                rec = b.matmul(b.binary("mul", r, h), rt_h)
                if rbh is not None:
                    rec = b.binary("add", rec, rbh)
            n = g_(b, st.clipped(b.binary("add", _gate(st, xp, 2), rec)))
            # H = (1 - z) * n + z * h = n + z * (h - n)
            return [b.binary("add", n, b.binary("mul", z, b.binary("sub", h, n)))]

        y, fin = _run_direction(st, d, [h0[d]], step)
        ys.append(y)
        finals.append(fin)
    return _outputs(ctx, node, st, layout, ys, finals)


@onnx_op("LSTM")
def lstm(ctx: OnnxContext, node: onnx.NodeProto) -> Outputs:
    """Gates i, o, f, c with optional peepholes ``P = [Pi, Po, Pf]``; ``input_forget`` couples
    the forget gate to ``1 - i``."""
    st, layout = _frame(ctx, node, 4)
    b = st.b
    acts = _activations(ctx, node, ["Sigmoid", "Tanh", "Tanh"], st.num_dirs)
    coupled = ctx.attr_int(node, "input_forget", 0)
    h0 = _state_input(ctx, node, 5, st, layout)
    c0 = _state_input(ctx, node, 6, st, layout)
    peep = ctx.opt_input(node, 7)
    hs = st.hidden
    ys, finals = [], []
    for d in range(st.num_dirs):
        wt, rt, wb, rb = _weights(ctx, node, st, 4, d)
        bias = None if wb is None else b.binary("add", wb, rb)  # type: ignore[arg-type]
        proj = _input_proj(st, wt, bias)
        pv: list[SSAValue] | None = None
        if peep is not None:
            pd = b.reshape(st.take(peep, 0, d, 1), (3 * hs,))
            pv = [st.take(pd, 0, k * hs, hs) for k in range(3)]
        f, g_, h_ = acts[d]

        def step(t: int, s: list[SSAValue], proj: SSAValue = proj, rt: SSAValue = rt,
                 pv: list[SSAValue] | None = pv, f: Act = f, g_: Act = g_,
                 h_: Act = h_) -> list[SSAValue]:
            h, c = s
            pre = b.binary("add", _step_input(st, proj, t), b.matmul(h, rt))
            gi, go, gf, gc = (_gate(st, pre, k) for k in range(4))
            if pv is not None:
                gi = b.binary("add", gi, b.binary("mul", pv[0], c))
                gf = b.binary("add", gf, b.binary("mul", pv[2], c))
            i = f(b, st.clipped(gi))
            if coupled:
                fg = b.binary("sub", b.scalar(1.0, i), i)
            else:
                fg = f(b, st.clipped(gf))
            cc = g_(b, st.clipped(gc))
            c_new = b.binary("add", b.binary("mul", fg, c), b.binary("mul", i, cc))
            if pv is not None:
                go = b.binary("add", go, b.binary("mul", pv[1], c_new))
            o = f(b, st.clipped(go))
            return [b.binary("mul", o, h_(b, c_new)), c_new]

        y, fin = _run_direction(st, d, [h0[d], c0[d]], step)
        ys.append(y)
        finals.append(fin)
    return _outputs(ctx, node, st, layout, ys, finals)
