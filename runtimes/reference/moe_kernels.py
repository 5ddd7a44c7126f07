"""Reference kernel for the ``moe`` dialect, and the routing decision it shares with reports.

The kernel computes ``moe.moe`` directly from its definition in float64 and rounds once, so the
``moe-routing`` lowering (sort, capacity buffers, batched GEMM, each op rounding to the program
dtype) is checked against an independent formulation rather than against itself. Experts are
visited one at a time (a Python loop over E, vectorised over the tokens each expert serves):
gathering the selected experts' weights per token would need T*k*H*F memory, which real MoE sizes
do not afford.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from portc.dialects import moe
from portc.dialects.graph import Props, TensorSpec
from portc.runtimes.reference.kernels import finish, kernel, wide


@dataclass(frozen=True)
class Routing:
    """One routing decision: ``experts``/``weights`` [T, k] per token, ``keep`` [T, k] whether
    the assignment fits its expert's capacity, ``position`` [T, k] its rank within its expert
    in row-major (token, k) order, and ``capacity`` (slots per expert)."""

    experts: np.ndarray
    weights: np.ndarray
    keep: np.ndarray
    position: np.ndarray
    capacity: int

    def tokens_per_expert(self, num_experts: int) -> np.ndarray:
        """Assignments routed to each expert before capacity is applied."""
        return np.bincount(self.experts.ravel(), minlength=num_experts)

    def kept_per_expert(self, num_experts: int) -> np.ndarray:
        return np.bincount(self.experts[self.keep], minlength=num_experts)


def route(x: np.ndarray, router: np.ndarray, top_k: int, normalize: bool,
          capacity_factor: float, router_input: str = "weight") -> Routing:
    """The routing half of ``moe.moe`` in float64 (softmax, stable top-k, renormalisation,
    per-expert ranks and the capacity cut). ``router`` is the [H, E] router weight, or with
    ``router_input="logits"`` the [T, E] logits themselves."""
    logits = wide(router) if router_input == "logits" else wide(x) @ wide(router)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs = e / e.sum(axis=-1, keepdims=True)
    idx = np.argsort(-probs, axis=-1, kind="stable")[:, :top_k]
    w = np.take_along_axis(probs, idx, axis=-1)
    if normalize:
        w = w / w.sum(axis=-1, keepdims=True)
    t, n_exp = x.shape[0], logits.shape[1]
    flat = idx.ravel()
    onehot = (flat[:, None] == np.arange(n_exp)[None, :]).astype(np.int64)
    ranks = np.cumsum(onehot, axis=0) - onehot
    pos = ranks[np.arange(flat.size), flat].reshape(idx.shape)
    cap = moe.expert_capacity(t, top_k, n_exp, capacity_factor)
    return Routing(idx.astype(np.int64), w, pos < cap, pos, cap)


def activate(fn: str, v: np.ndarray) -> np.ndarray:
    """A non-gated expert activation in float64 (``silu`` is also SwiGLU's gate half)."""
    if fn == "relu":
        return np.maximum(v, 0.0)
    if fn == "silu":
        with np.errstate(over="ignore"):  # exp(-v) -> inf gives silu -> -0, as it should
            return v / (1.0 + np.exp(-v))
    if fn == "gelu_tanh":
        return 0.5 * v * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (v + 0.044715 * v**3)))
    if fn == "identity":
        return v
    raise ValueError(f"moe.moe: unknown activation '{fn}'")


@kernel(moe.MoEOp)
def moe_moe(p: Props, ins: list[np.ndarray], outs: list[TensorSpec]) -> list[np.ndarray]:
    x, router = ins[0], ins[1]
    act_fn = moe.activation_of(p)
    layout = moe.expert_layout(act_fn, len(ins) - 2)
    ex = {name: ins[2 + i] for name, i in layout.items()}
    r = route(x, router, p["top_k"], bool(p["normalize"]), p["capacity_factor"],
              moe.router_input_of(p))
    x64 = wide(x)
    out = np.zeros(x64.shape, np.float64)

    def proj(name: str, e: int, v: np.ndarray) -> np.ndarray:
        y = v @ wide(ex["w" + name[1:]][e])
        return y + wide(ex[name][e]) if name in ex else y

    for e in range(ex["w_down"].shape[0]):
        tok, slot = np.nonzero((r.experts == e) & r.keep)
        if tok.size == 0:
            continue
        v = x64[tok]
        if act_fn == "swiglu":
            act = activate("silu", proj("b_gate", e, v)) * proj("b_up", e, v)
        else:
            act = activate(act_fn, proj("b_up", e, v))
        y = proj("b_down", e, act)
        np.add.at(out, tok, r.weights[tok, slot][:, None] * y)
    return [finish(out, outs[0])]
