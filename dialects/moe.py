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

Variants (ONNX Runtime's ``com.microsoft.MoE`` and other non-Mixtral blocks), chosen by two
optional properties so that existing ``moe.moe`` ops, their builders and their text are unchanged:

* ``router_input`` = ``"weight"`` (default; ``router`` is [H, E] and the logits are
  ``x @ router``) or ``"logits"`` (``router`` is the [T, E] logits, computed by the model).
* ``activation`` = ``"swiglu"`` (default; gated experts as above) or one of ``"relu"``,
  ``"gelu_tanh"`` (tanh approximation), ``"silu"``, ``"identity"`` for non-gated experts
  ``expert(e, v) = act(v @ w_up[e]) @ w_down[e]``, which have no ``w_gate``.

The expert operands follow ``router`` and their count says whether experts carry biases:
gated ``w_gate, w_up, w_down [, b_gate, b_up, b_down]``, non-gated ``w_up, w_down [, b_up,
b_down]``, with b_gate/b_up [E, F] added after the corresponding product and b_down [E, H] after
the down projection (inside the routing weight, as in ONNX Runtime).
"""

from __future__ import annotations

import math

from xdsl.dialects.builtin import FloatAttr, IntegerAttr, StringAttr, TensorType
from xdsl.ir import Dialect, SSAValue
from xdsl.irdl import (
    irdl_op_definition,
    operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
    var_operand_def,
)
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


#: expert activations; only "swiglu" is gated (has a w_gate operand)
ACTIVATIONS = ("swiglu", "relu", "gelu_tanh", "silu", "identity")
ROUTER_INPUTS = ("weight", "logits")


def moe_props(top_k: int, normalize: bool = True, capacity_factor: float = 0.0,
              activation: str = "swiglu", router_input: str = "weight") -> Props:
    """Properties for ``moe.moe`` with the Python types the attributes need (an int capacity
    factor would otherwise become an IntegerAttr and fail the FloatAttr property). Default
    ``activation``/``router_input`` are left unset, so Mixtral-style ops print as they always
    have."""
    p: Props = {"top_k": int(top_k), "normalize": bool(normalize),
                "capacity_factor": float(capacity_factor)}
    if activation != "swiglu":
        p["activation"] = activation
    if router_input != "weight":
        p["router_input"] = router_input
    return p


def activation_of(p: Props) -> str:
    return str(p.get("activation", "swiglu"))


def router_input_of(p: Props) -> str:
    return str(p.get("router_input", "weight"))


def expert_layout(activation: str, n_expert_operands: int) -> dict[str, int]:
    """Which expert operand (index after ``router``) is which, for an activation and an operand
    count; raises VerifyException for a count the activation does not allow."""
    names = ["w_gate", "w_up", "w_down"] if activation == "swiglu" else ["w_up", "w_down"]
    allowed = (len(names), 2 * len(names))
    _require(n_expert_operands in allowed,
             f"moe.moe: activation '{activation}' takes {allowed[0]} expert weights "
             f"({', '.join(names)}), optionally followed by as many biases; got "
             f"{n_expert_operands} expert operands")
    if n_expert_operands == 2 * len(names):
        names += ["b" + n[1:] for n in names]
    return {n: i for i, n in enumerate(names)}


@irdl_op_definition
class MoEOp(GraphOp):
    """Top-k routed mixture of experts (SwiGLU by default); see the module docstring for the
    semantics. The expert operands are one variadic group rather than optional operands so that
    no segment-size attribute appears and the Mixtral form's text stays as it was."""

    name = "moe.moe"
    top_k = prop_def(IntegerAttr)
    normalize = prop_def(IntegerAttr)
    capacity_factor = prop_def(FloatAttr)
    activation = opt_prop_def(StringAttr)
    router_input = opt_prop_def(StringAttr)
    x = operand_def(TensorType)
    router = operand_def(TensorType)
    experts = var_operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = (
        "$x `,` $router `,` $experts attr-dict `:` functional-type(operands, results)"
    )

    def expert_operand(self, name: str) -> SSAValue | None:
        """The expert operand called ``name`` (w_gate, w_up, w_down, b_gate, b_up, b_down), or
        None where this variant has none."""
        layout = expert_layout(activation_of(self.props()), len(self.experts))
        return self.experts[layout[name]] if name in layout else None

    @property
    def w_gate(self) -> SSAValue | None:
        return self.expert_operand("w_gate")

    @property
    def w_up(self) -> SSAValue:
        v = self.expert_operand("w_up")
        assert v is not None
        return v

    @property
    def w_down(self) -> SSAValue:
        v = self.expert_operand("w_down")
        assert v is not None
        return v

    @classmethod
    def infer(cls, ins: list[TensorSpec], p: Props) -> list[TensorSpec]:
        n = cls.name
        _require(len(ins) >= 4, f"{n}: needs x, router and expert weights, got {len(ins)}")
        act, rin = activation_of(p), router_input_of(p)
        _require(act in ACTIVATIONS, f"{n}: activation '{act}' is not one of {ACTIVATIONS}")
        _require(rin in ROUTER_INPUTS, f"{n}: router_input '{rin}' is not one of {ROUTER_INPUTS}")
        x, router = ins[0], ins[1]
        layout = expert_layout(act, len(ins) - 2)
        ex = {name: ins[2 + i] for name, i in layout.items()}
        w_up, w_down = ex["w_up"], ex["w_down"]
        w_gate = ex.get("w_gate", w_up)
        _require(x.rank == 2, f"{n}: x must be [T, H], got {x}")
        _require(dtypes.dtype(x.dtype).kind == "float", f"{n}: x must be floating point, got {x}")
        for what, s in (("router", router), *ex.items()):
            _require(s.dtype == x.dtype, f"{n}: {what} is {s.dtype} but x is {x.dtype}")
        _require(w_gate.rank == 3 and w_up.rank == 3 and w_down.rank == 3,
                 f"{n}: expert weights must be rank 3: w_gate/w_up [E, H, F], w_down [E, F, H]")
        h = x.shape[1]
        if rin == "weight":
            _require(router.rank == 2, f"{n}: router must be [H, E], got {router}")
            rh, e = router.shape
            _require(_dims_agree(h, rh), f"{n}: x has H={h} but router is {router.shape}")
        else:
            _require(router.rank == 2, f"{n}: router logits must be [T, E], got {router}")
            rt, e = router.shape
            _require(_dims_agree(x.shape[0], rt),
                     f"{n}: x has T={x.shape[0]} tokens but router logits are {router.shape}")
        _require(all(_dims_agree(a, b) for a, b in zip(w_gate.shape, w_up.shape, strict=True)),
                 f"{n}: w_gate {w_gate.shape} and w_up {w_up.shape} differ")
        ge, gh, gf = w_up.shape
        de, df, dh = w_down.shape
        for bname, want in (("b_gate", (ge, gf)), ("b_up", (ge, gf)), ("b_down", (de, dh))):
            if bname in ex:
                bs = ex[bname].shape
                _require(len(bs) == 2 and all(_dims_agree(a, b)
                                              for a, b in zip(bs, want, strict=True)),
                         f"{n}: {bname} must be {want}, got {bs}")
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
