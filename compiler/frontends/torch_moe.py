"""Recognise sparse mixture-of-experts blocks in a ``torch.export`` graph and import them as one
``moe.moe`` op.

Why a recogniser instead of per-op decompositions: transformers (5.x) exports the Mixtral-style
sparse-MoE block as data-dependent dispatch (``sort`` by expert, ``histc`` + ``cumsum`` group
offsets, the ``transformers.grouped_mm_fallback`` custom op, an inverse permutation through
``empty_permuted`` + ``index_put``). Group sizes are runtime values, which portc's static-shape
core ops cannot express, and the custom op has no ATen decomposition. The block as a whole,
however, has fixed semantics that ``moe.moe`` defines exactly (softmax router, top-k, optional
renormalisation, SwiGLU experts, weighted combine), and keeping it whole lets the
``moe-routing`` pass choose the static dispatch.

How a block is found: each grouped-GEMM node is anchored to the innermost module in its
``nn_module_stack`` (which torch.export keeps in node meta) that also contains the router's
``topk``; every node of that module call becomes part of the block. The parts that decide the
semantics are then checked structurally, not assumed from the module's class name:

* router: ``softmax(x @ W_router^T, -1)`` (dtype casts allowed) feeding ``topk(k)`` on the last
  dim, largest first; ``normalize`` is whether the top-k values are divided by their sum;
* experts: two grouped GEMMs, the first producing ``[gate | up]`` split in halves on the last
  dim, ``silu(gate) * up`` feeding the second; weights are parameters, possibly transposed;
* boundary: exactly one activation enters the block and exactly one value leaves it, of the
  same shape.

Only the routed part of the module call is replaced (``_Matcher.routed``): what the router and
grouped GEMMs read, plus what is computed from them alone. Anything else in the module, such as
Qwen2-MoE's shared expert, its sigmoid gate and the add that joins it to the routed output, is
left to the ordinary op-by-op import and reads the ``moe.moe`` result like any other value.

A block that fails a check is left alone, so its ops fail the import as before, with the reason
attached to the grouped-GEMM nodes.
"""

from __future__ import annotations

import itertools
import operator
from dataclasses import dataclass, field

import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind

__all__ = ["MoEBlock", "find_moe_blocks"]

Node = torch.fx.Node

_GROUPED_MM = ("grouped_mm",)
_CASTS = {"_to_copy.default", "to.dtype", "to.dtype_layout", "to.device", "alias.default",
          "clone.default", "contiguous.default"}
_VIEWS = {"view.default", "reshape.default", "_unsafe_view.default"}
_SOFTMAX = {"_softmax.default", "softmax.int"}
_SPLITS = {"split_with_sizes.default", "split.Tensor", "chunk.default"}


@dataclass
class MoEBlock:
    """One recognised block: ``nodes`` are replaced, ``output`` is where ``moe.moe`` is
    emitted; weights are parameter placeholders with how to bring them to moe.moe's layout."""

    path: str
    nodes: set[Node]
    input: Node
    output: Node
    top_k: int
    normalize: bool
    router: Node
    #: (placeholder, transposed?) of the [E, H, 2F] gate|up weight and the [E, F, H] down weight
    gate_up: tuple[Node, bool]
    down: tuple[Node, bool]
    #: which half of the gate_up output is the gate (0 = first)
    gate_half: int
    hidden: int = field(default=0)


class _NoMatch(Exception):
    pass


def _key(n: Node) -> str:
    """``mm.default``-style name for any namespace (aten or custom ops like transformers')."""
    t = n.target
    if isinstance(t, torch._ops.OpOverload):
        return f"{t._schema.name.split('::')[-1]}.{t._overloadname}"
    return str(t)


def _is_call(n: object, keys: set[str]) -> bool:
    return isinstance(n, Node) and n.op == "call_function" and _key(n) in keys


def _require(cond: bool, why: str) -> None:
    if not cond:
        raise _NoMatch(why)


def _skip(n: Node, keys: set[str]) -> Node:
    while _is_call(n, keys) and isinstance(n.args[0], Node):
        n = n.args[0]
    return n


def _chain(n: Node, keys: set[str]) -> list[Node]:
    """``n`` and what it reads through ops in ``keys`` (first argument), nearest first."""
    out = [n]
    while _is_call(n, keys) and isinstance(n.args[0], Node):
        n = n.args[0]
        out.append(n)
    return out


def _paths(n: Node) -> list[str]:
    stack = n.meta.get("nn_module_stack") or {}
    return [v[0] for v in stack.values()]


def _shape(n: Node) -> tuple[int, ...]:
    v = n.meta.get("val")
    _require(isinstance(v, torch.Tensor), f"'{n.name}' has no tensor metadata")
    return tuple(int(d) for d in v.shape)


class _Matcher:
    def __init__(self, ep: ExportedProgram) -> None:
        self.ep = ep
        self.params = {n for n in ep.graph.nodes if n.op == "placeholder"} - self._user_inputs()

    def _user_inputs(self) -> set[Node]:
        names = {s.arg.name for s in self.ep.graph_signature.input_specs
                 if s.kind == InputKind.USER_INPUT}
        return {n for n in self.ep.graph.nodes if n.op == "placeholder" and n.name in names}

    def weight(self, n: Node) -> tuple[Node, bool]:
        """A parameter, optionally through a transpose of its last two dims."""
        n = _skip(n, _CASTS)
        transposed = False
        if _is_call(n, {"permute.default"}):
            perm = list(n.args[1])
            _require(perm == [0, 2, 1], f"expert weight permuted by {perm}")
            n, transposed = n.args[0], True
        elif _is_call(n, {"transpose.int"}):
            dims = sorted(d % 3 for d in n.args[1:3])
            _require(dims == [1, 2], "expert weight transposed on the expert dim")
            n, transposed = n.args[0], True
        _require(n in self.params, f"'{n.name}' is not a parameter")
        return n, transposed

    def match(self, path: str, nodes: list[Node]) -> MoEBlock:
        topks = [n for n in nodes if _is_call(n, {"topk.default"})]
        gmms = [n for n in nodes if n.op == "call_function" and "grouped_mm" in _key(n)]
        _require(len(topks) == 1 and len(gmms) == 2,
                 f"expected one topk and two grouped GEMMs, found {len(topks)} and {len(gmms)}")
        topk = topks[0]
        nodes = self.routed(nodes, [topk, *gmms])
        members = set(nodes)
        # ---- router
        k = int(topk.args[1])
        dim = topk.args[2] if len(topk.args) > 2 else topk.kwargs.get("dim", -1)
        largest = topk.args[3] if len(topk.args) > 3 else topk.kwargs.get("largest", True)
        _require(largest is True, "topk takes the smallest values")
        probs = _skip(topk.args[0], _CASTS)
        _require(dim in (-1, len(_shape(probs)) - 1), f"topk over dim {dim}")
        _require(_is_call(probs, _SOFTMAX), "topk does not read a softmax of the router logits")
        _require(probs.args[1] in (-1, len(_shape(probs)) - 1), "softmax not over experts")
        logits = _skip(probs.args[0], _CASTS)
        if _is_call(logits, {"linear.default"}):
            _require(len(logits.args) < 3 or logits.args[2] is None, "router has a bias")
            router_x, router = logits.args[0], logits.args[1]
        else:
            _require(_is_call(logits, {"mm.default"}), "router logits are not a matmul")
            router_x, wt = logits.args
            _require(_is_call(wt, {"permute.default"}) and list(wt.args[1]) == [1, 0]
                     or _is_call(wt, {"t.default"}), "router weight is not W^T")
            router = wt.args[0]
        router = _skip(router, _CASTS)
        _require(router in self.params, "router weight is not a parameter")
        e, h = _shape(router)
        _require(1 <= k <= e, f"top_k={k} with {e} experts")
        values = [u for u in topk.users if u.target is operator.getitem and u.args[1] == 0]
        normalize = any(_is_call(u, {"sum.dim_IntList"}) for v in values for u in v.users)
        # ---- experts
        g1, g2 = sorted(gmms, key=lambda n: nodes.index(n))
        gate_up, down = self.weight(g1.args[1]), self.weight(g2.args[1])
        gu_shape, d_shape = _shape(gate_up[0]), _shape(down[0])
        if gate_up[1]:
            gu_shape = (gu_shape[0], gu_shape[2], gu_shape[1])
        if down[1]:
            d_shape = (d_shape[0], d_shape[2], d_shape[1])
        _require(gu_shape[0] == e and gu_shape[1] == h and gu_shape[2] % 2 == 0,
                 f"gate_up weight is {gu_shape}, not [E={e}, H={h}, 2F]")
        f = gu_shape[2] // 2
        _require(d_shape == (e, f, h), f"down weight is {d_shape}, not [E, F={f}, H={h}]")
        splits = [u for u in g1.users if _is_call(u, _SPLITS)]
        _require(len(splits) == 1 and len(g1.users) == 1, "gate|up output is not split once")
        sp = splits[0]
        if _key(sp) == "split_with_sizes.default":
            _require(list(sp.args[1]) == [f, f], f"gate|up split as {sp.args[1]}")
        elif _key(sp) == "split.Tensor":
            _require(sp.args[1] == f, "gate|up split size")
        else:
            _require(sp.args[1] == 2, "gate|up chunk count")
        sdim = sp.args[2] if len(sp.args) > 2 else sp.kwargs.get("dim", 0)
        _require(sdim in (-1, 1), "gate|up not split on the feature dim")
        halves: dict[int, Node] = {}
        for u in sp.users:
            _require(u.target is operator.getitem, "split result used whole")
            halves[int(u.args[1])] = u
        _require(set(halves) == {0, 1}, "gate|up halves")
        act = _skip(g2.args[0], _CASTS)
        _require(_is_call(act, {"mul.Tensor"}), "second grouped GEMM does not read gate * up")
        gate_half = -1
        for i in (0, 1):
            a, b = act.args
            for silu_in, other in ((a, b), (b, a)):
                if self.is_silu(silu_in, halves[i]) and other is halves[1 - i]:
                    gate_half = i
        _require(gate_half >= 0, "experts are not silu(gate) * up")
        # ---- boundary
        inputs = {d for n in nodes for d in n.all_input_nodes
                  if d not in members and d not in self.params}
        _require(len(inputs) == 1, f"{len(inputs)} activations enter the block")
        outputs = [n for n in nodes if any(u not in members for u in n.users)]
        _require(len(outputs) == 1, f"{len(outputs)} values leave the block")
        (x,), out = inputs, outputs[0]
        _require(_shape(x) == _shape(out) and _shape(x)[-1] == h,
                 f"block maps {_shape(x)} to {_shape(out)}")
        _require(x in _chain(router_x, _VIEWS | _CASTS), "router does not read the block input")
        return MoEBlock(path, members, x, out, k, normalize, router, gate_up, down, gate_half, h)

    def routed(self, nodes: list[Node], anchors: list[Node]) -> list[Node]:
        """The routed-expert part of a module call: what the router and grouped GEMMs read
        (within the module), plus what is computed only from that. Anything else in the module
        (a shared expert and its gate, as in Qwen2-MoE, and the sum that adds it to the routed
        output) stays outside and is imported op by op. A view/cast chain of the module input
        that is also read outside the routed part is left outside too, so the block reads it."""
        members = set(nodes)
        part: set[Node] = set(anchors)
        todo = list(anchors)
        while todo:  # ancestors of the anchors within the module
            for d in todo.pop().all_input_nodes:
                if d in members and d not in part:
                    part.add(d)
                    todo.append(d)
        consts = {n for n in nodes if not any(d not in self.params for d in n.all_input_nodes)}
        derived = set(anchors)
        changed = True
        while changed:  # computed from the anchors (or checks with no users) and only from
            # the routed part and constants
            changed = False
            for n in nodes:
                ins = [d for d in n.all_input_nodes if d not in self.params]
                if n not in derived and (any(d in derived for d in ins) or ins and not n.users
                                         ) and all(d in part or d in consts for d in ins):
                    part.add(n)
                    derived.add(n)
                    changed = True
        part |= {c for c in consts if c.users and all(u in part for u in c.users)}
        leaks = [n for n in nodes if n in part and any(u not in part for u in n.users)]
        for n in leaks:  # a view/cast of the module input, also read by the shared part
            chain = _chain(n, _VIEWS | _CASTS)
            prefix = list(itertools.takewhile(lambda c: c in part, chain))
            if len(prefix) < len(chain):  # reaches outside the routed part: not its output
                part.difference_update(prefix)
        return [n for n in nodes if n in part]

    @staticmethod
    def is_silu(n: object, x: Node) -> bool:
        if _is_call(n, {"silu.default"}):
            return n.args[0] is x
        if _is_call(n, {"mul.Tensor"}):
            a, b = n.args
            return any(p is x and _is_call(q, {"sigmoid.default"}) and q.args[0] is x
                       for p, q in ((a, b), (b, a)))
        return False


def find_moe_blocks(ep: ExportedProgram) -> tuple[list[MoEBlock], dict[Node, str]]:
    """Recognised blocks, and for grouped-GEMM nodes of unrecognised ones, why not."""
    nodes = [n for n in ep.graph.nodes if n.op == "call_function"]
    anchors = [n for n in nodes if any(s in _key(n) for s in _GROUPED_MM)]
    if not anchors:
        return [], {}
    m = _Matcher(ep)
    by_path: dict[str, list[Node]] = {}
    for n in nodes:
        for p in _paths(n):
            by_path.setdefault(p, []).append(n)
    blocks: list[MoEBlock] = []
    rejected: dict[Node, str] = {}
    seen: set[str] = set()
    for a in anchors:
        path = next((p for p in reversed(_paths(a))
                     if any(_is_call(n, {"topk.default"}) for n in by_path[p])), None)
        if path is None:
            rejected[a] = "no enclosing module with a top-k router (nn_module_stack)"
            continue
        if path in seen:
            continue
        seen.add(path)
        try:
            blocks.append(m.match(path, by_path[path]))
        except _NoMatch as e:
            for n in by_path[path]:
                if any(s in _key(n) for s in _GROUPED_MM):
                    rejected[n] = f"sparse-MoE block '{path}' not recognised: {e}"
    return blocks, rejected
