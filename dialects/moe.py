"""The ``moe`` dialect: a mixture-of-experts feed-forward block as one op.

Frontends recognise the whole sparse-MoE block (router, top-k, per-expert SwiGLU MLPs, weighted
combine) and emit ``moe.moe`` so that the routing decision stays visible to passes: the
``moe-routing`` pass lowers it to core ``graph`` ops with a static-shape dispatch (sort by expert,
per-expert capacity buffers, one batched GEMM over experts), while a target with a native grouped
GEMM may keep it whole. Keeping it as one op also gives the reference kernel one place to define
what "the MoE block" means, including which assignments a capacity limit drops.

``moe.moe(x, router, w_gate, w_up, w_down)`` with x [T, H], router [H, E], w_gate/w_up [E, H, F],
w_down [E, F, H] computes, for every token t (Mixtral / Qwen-MoE semantics)::

    p[t]            = softmax(x[t] @ router)                  # [E]
    idx[t], w[t]    = topk(p[t], top_k)                       # ties keep the lower expert first
    w[t]           /= sum(w[t])            if normalize       # Mixtral renormalises, Qwen optional
    y[t]            = sum_k keep[t,k] * w[t,k] * expert(idx[t,k], x[t])
    expert(e, v)    = (silu(v @ w_gate[e]) * (v @ w_up[e])) @ w_down[e]

Capacity (Switch / GShard token dropping): the T*top_k assignments are ranked per expert in
row-major (token, k) order; with ``capacity_factor`` c > 0 each expert serves at most
``C = min(T*top_k, ceil(c * T * top_k / E))`` of them and ``keep`` is 0 for the rest (their
contribution is zero, the token is *not* re-routed). ``capacity_factor`` 0 means unlimited
(``keep`` is all ones, C = T*top_k).
"""

from __future__ import annotations

import math

from xdsl.dialects.builtin import FloatAttr, IntegerAttr, TensorType
from xdsl.ir import Dialect
from xdsl.irdl import irdl_op_definition, operand_def, prop_def, result_def, traits_def
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

from portc.dialects import dtypes
from portc.dialects.graph import GraphOp, Props, TensorSpec


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise VerifyException(msg)


def _dims_agree(a: int | None, b: int | None) -> bool:
    return a is None or b is None or a == b


def expert_capacity(tokens: int, top_k: int, experts: int, capacity_factor: float) -> int:
    """Slots per expert: every assignment fits when ``capacity_factor`` is 0; otherwise
    ``ceil(cf * T * k / E)`` (the Switch Transformer rule), never more than T*k since no expert
    can receive more assignments than exist."""
    total = tokens * top_k
    if capacity_factor == 0:
        return total
    return min(total, math.ceil(capacity_factor * total / experts))


def moe_props(top_k: int, normalize: bool = True, capacity_factor: float = 0.0) -> Props:
    """Properties for ``moe.moe`` with the Python types the attributes need (an int capacity
    factor would otherwise become an IntegerAttr and fail the FloatAttr property)."""
    return {"top_k": int(top_k), "normalize": bool(normalize),
            "capacity_factor": float(capacity_factor)}


@irdl_op_definition
class MoEOp(GraphOp):
    """Top-k routed mixture of SwiGLU experts; see the module docstring for the semantics."""

    name = "moe.moe"
    top_k = prop_def(IntegerAttr)
    normalize = prop_def(IntegerAttr)
    capacity_factor = prop_def(FloatAttr)
    x = operand_def(TensorType)
    router = operand_def(TensorType)
    w_gate = operand_def(TensorType)
    w_up = operand_def(TensorType)
    w_down = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = (
        "$x `,` $router `,` $w_gate `,` $w_up `,` $w_down attr-dict `:` "
        "functional-type(operands, results)"
    )

    @classmethod
    def infer(cls, ins: list[TensorSpec], p: Props) -> list[TensorSpec]:
        x, router, w_gate, w_up, w_down = ins
        n = cls.name
        _require(x.rank == 2, f"{n}: x must be [T, H], got {x}")
        _require(dtypes.dtype(x.dtype).kind == "float", f"{n}: x must be floating point, got {x}")
        for what, s in (("router", router), ("w_gate", w_gate), ("w_up", w_up),
                        ("w_down", w_down)):
            _require(s.dtype == x.dtype, f"{n}: {what} is {s.dtype} but x is {x.dtype}")
        _require(router.rank == 2, f"{n}: router must be [H, E], got {router}")
        _require(w_gate.rank == 3 and w_up.rank == 3 and w_down.rank == 3,
                 f"{n}: expert weights must be rank 3: w_gate/w_up [E, H, F], w_down [E, F, H]")
        h, (rh, e) = x.shape[1], router.shape
        _require(_dims_agree(h, rh), f"{n}: x has H={h} but router is {router.shape}")
        _require(all(_dims_agree(a, b) for a, b in zip(w_gate.shape, w_up.shape, strict=True)),
                 f"{n}: w_gate {w_gate.shape} and w_up {w_up.shape} differ")
        ge, gh, gf = w_gate.shape
        de, df, dh = w_down.shape
        _require(_dims_agree(ge, e) and _dims_agree(de, e),
                 f"{n}: router has E={e} experts but w_gate has {ge}, w_down {de}")
        _require(_dims_agree(gh, h) and _dims_agree(dh, h),
                 f"{n}: hidden size H={h} disagrees with w_gate {w_gate.shape} / w_down "
                 f"{w_down.shape}")
        _require(_dims_agree(gf, df), f"{n}: w_gate has F={gf} but w_down has F={df}")
        k = p["top_k"]
        _require(k >= 1 and (e is None or k <= e), f"{n}: top_k={k} must lie in 1..E={e}")
        cf = p["capacity_factor"]
        _require(cf >= 0 and math.isfinite(cf), f"{n}: capacity_factor must be >= 0, got {cf}")
        return [x]


MOE_OPS: list[type[GraphOp]] = [MoEOp]

MoE = Dialect("moe", MOE_OPS, [])
