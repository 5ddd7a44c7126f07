"""Strided views and lazy elementwise expressions: the values graph-to-kernel lowering passes
around before anything is materialised.

A ``View`` is a tensor as addressing: buffer, shape, element strides and offset. Transpose, slice,
broadcast and (contiguous) reshape are new views, never kernels. An ``Expr`` is an elementwise tree
whose leaves are views of the expression's own shape; applying a view transform to an expression
applies it to every leaf, which is what lets a producer chain fuse into whichever kernel consumes it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from portc.dialects import dtypes


def row_major_strides(shape: Sequence[int]) -> tuple[int, ...]:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return tuple(reversed(out))


def numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


@dataclass(frozen=True)
class View:
    buffer: str
    dtype: str
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    offset: int = 0

    @staticmethod
    def contiguous(buffer: str, dtype: str, shape: Sequence[int], offset: int = 0) -> View:
        return View(buffer, dtype, tuple(shape), row_major_strides(shape), offset)

    def is_contiguous(self) -> bool:
        return all(
            s == rs or d == 1
            for s, rs, d in zip(self.strides, row_major_strides(self.shape), self.shape, strict=True)
        )

    def transpose(self, perm: Sequence[int]) -> View:
        return replace(self, shape=tuple(self.shape[p] for p in perm),
                       strides=tuple(self.strides[p] for p in perm))

    def slice(self, starts: Sequence[int], steps: Sequence[int], shape: Sequence[int]) -> View:
        off = self.offset + sum(s * st for s, st in zip(starts, self.strides, strict=True))
        return replace(self, shape=tuple(shape), offset=off,
                       strides=tuple(st * k for st, k in zip(self.strides, steps, strict=True)))

    def broadcast_to(self, shape: Sequence[int]) -> View:
        pad = len(shape) - len(self.shape)
        src_shape = (1,) * pad + self.shape
        src_strides = (0,) * pad + self.strides
        strides = tuple(0 if (s == 1 and d != 1) else st
                        for s, st, d in zip(src_shape, src_strides, shape, strict=True))
        return replace(self, shape=tuple(shape), strides=strides)

    def reshape(self, shape: Sequence[int]) -> View | None:
        """The same elements under a new shape, if addressing can express it (contiguous)."""
        if not self.is_contiguous():
            return None
        return View.contiguous(self.buffer, self.dtype, shape, self.offset)

    def with_dims(self, shape: Sequence[int], strides: Sequence[int]) -> View:
        return replace(self, shape=tuple(shape), strides=tuple(strides))


# ------------------------------------------------------------------------------------ expressions


@dataclass(frozen=True, eq=False)
class Node:
    dtype: str


@dataclass(frozen=True, eq=False)
class Leaf(Node):
    view: View
    #: indirect addressing: (index leaf, stride, bound) terms added to the view's address
    gather: tuple[tuple[Leaf, int, int], ...] = ()


@dataclass(frozen=True, eq=False)
class Const(Node):
    value: float | int | bool


@dataclass(frozen=True, eq=False)
class Unary(Node):
    fn: str
    x: Node


@dataclass(frozen=True, eq=False)
class Binary(Node):
    fn: str
    a: Node
    b: Node


@dataclass(frozen=True, eq=False)
class Select(Node):
    cond: Node
    a: Node
    b: Node


@dataclass(frozen=True, eq=False)
class Cast(Node):
    x: Node
    saturate: bool | None = None


@dataclass(frozen=True, eq=False)
class Index(Node):
    """The iteration index along one dim of the kernel the expression ends up in."""

    dim: int


@dataclass(frozen=True)
class Expr:
    """A tensor value during lowering: an elementwise tree over views of ``shape``."""

    node: Node
    shape: tuple[int, ...]
    _cost: int = field(default=-1, compare=False)

    @property
    def dtype(self) -> str:
        return self.node.dtype

    @property
    def view(self) -> View | None:
        """The view when the expression is a plain (non-gathering) leaf."""
        n = self.node
        return n.view if isinstance(n, Leaf) and not n.gather else None

    def cost(self) -> int:
        return count_ops(self.node)

    def map_views(self, fn: Callable[[View], View], shape: Sequence[int]) -> Expr:
        return Expr(map_leaves(self.node, fn), tuple(shape))


def children(n: Node) -> tuple[Node, ...]:
    if isinstance(n, Unary | Cast):
        return (n.x,)
    if isinstance(n, Binary):
        return (n.a, n.b)
    if isinstance(n, Select):
        return (n.cond, n.a, n.b)
    return ()


def count_ops(n: Node) -> int:
    seen: set[int] = set()

    def walk(x: Node) -> int:
        if id(x) in seen:
            return 0
        seen.add(id(x))
        own = 0 if isinstance(x, Leaf | Const | Index) else 1
        return own + sum(walk(c) for c in children(x))

    return walk(n)


def map_leaves(n: Node, fn: Callable[[View], View]) -> Node:
    memo: dict[int, Node] = {}

    def walk(x: Node) -> Node:
        if id(x) in memo:
            return memo[id(x)]
        if isinstance(x, Leaf):
            r: Node = Leaf(x.dtype, fn(x.view),
                           tuple((walk(i), s, b) for i, s, b in x.gather))  # type: ignore[misc]
        elif isinstance(x, Unary):
            r = Unary(x.dtype, x.fn, walk(x.x))
        elif isinstance(x, Cast):
            r = Cast(x.dtype, walk(x.x), x.saturate)
        elif isinstance(x, Binary):
            r = Binary(x.dtype, x.fn, walk(x.a), walk(x.b))
        elif isinstance(x, Select):
            r = Select(x.dtype, walk(x.cond), walk(x.a), walk(x.b))
        elif isinstance(x, Index):
            raise ValueError("index expressions cannot be re-viewed")
        else:
            r = x
        memo[id(x)] = r
        return r

    return walk(n)


def leaves(n: Node) -> list[Leaf]:
    """Leaves in first-visit order, index leaves of gathers included (each once)."""
    out: list[Leaf] = []
    seen: set[int] = set()

    def walk(x: Node) -> None:
        if id(x) in seen:
            return
        seen.add(id(x))
        if isinstance(x, Leaf):
            for i, _, _ in x.gather:
                walk(i)
            out.append(x)
        for c in children(x):
            walk(c)

    walk(n)
    return out


def leaf(view: View) -> Expr:
    return Expr(Leaf(view.dtype, view), view.shape)


def const(value: float | int | bool, dtype: str, shape: Sequence[int] = ()) -> Expr:
    return Expr(Const(dtype, value), tuple(shape))


def unary(fn: str, x: Expr, dtype: str | None = None) -> Expr:
    return Expr(Unary(dtype or x.dtype, fn, x.node), x.shape)


def binary(fn: str, a: Expr, b: Expr, shape: Sequence[int], dtype: str | None = None) -> Expr:
    return Expr(Binary(dtype or a.dtype, fn, a.node, b.node), tuple(shape))


def cast(x: Expr, dtype: str, saturate: bool | None = None) -> Expr:
    return x if x.dtype == dtype else Expr(Cast(dtype, x.node, saturate), x.shape)


def identity_value(kind: str, dtype: str) -> float:
    """The combiner's identity; ``-inf``/``inf`` mean the dtype's lowest/highest value (targets
    saturate the init into the accumulator's type)."""
    return {"sum": 0.0, "prod": 1.0, "max": float("-inf"), "min": float("inf")}[kind]


def is_plain_dtype(name: str) -> bool:
    """Dtypes kernels compute in directly (sub-byte and fp8 storage is decomposed earlier)."""
    d = dtypes.dtype(name)
    return d.bits >= 8 and not name.startswith("float8") or name == "bool"
