"""``npu-insert-sync``: derive ``set_flag``/``wait_flag`` pairs from buffer dependences.

Pipes of an AI core run concurrently, so every pair of instructions on different pipes that
touch the same buffer (at least one writing) needs an order, and lowerings must not place flags
by hand (they get them wrong exactly where it hurts: inside double-buffered loops). This pass
computes them from the IR:

1. *Accesses.* Every npu instruction's buffer operands (``NpuOp.BUFFERS``) resolve to a
   region: an ``npu.alloc`` is ``(space, [offset, offset+bytes))``, a kernel argument is the
   whole GM argument. Two accesses conflict when the regions overlap and one writes.
2. *Edges.* For conflicting X before Y (program order) on pipes px != py, take the deepest block
   B holding both and their ancestors X', Y' in B: a *forward* edge sets px->py after X' and
   waits before Y' (hoisting flags out of loops that hold only one side). If B lies in a loop L
   (innermost ``scf.for`` around B), Y of iteration i also precedes X of iteration i+1: a
   *loop-carried* edge sets py->px after Y'' and waits before X'' (ancestors in L's body) --
   the "buffer free" flag of ping-pong pipelines -- primed by one set before the outermost
   loop around L (so the first iteration does not wait) and drained by one wait after it (so
   sets and waits balance); the last set of one execution of L is consumed by the first wait
   of its next one, so a producer can run ahead into the next outer iteration. When that needs
   more than 8 live flags, flags are primed and drained around L itself.
3. *Pruning.* Pipes are in-order queues, so an edge (p, c) is implied by a kept edge (p2, c2) of
   the same pipes and kind in the same block with p2 >= p and c2 <= c.
4. *Events.* Each edge's flag is live from its set to its wait (a loop-carried flag for all
   of the loop it is primed around); edges of one pipe pair get event ids by interval
   colouring, so sets and waits of one id alternate in program order. More than 8 live flags
   of one pipe pair is a LoweringError.

Ping-pong buffers must be distinct allocations (lowerings unroll a double-buffered loop by two),
so the analysis sees each buffer's identity statically. Same-pipe dependences need nothing: the
model's pipes are in-order (see ``runtimes/npusim``). Kernels that already contain flags are
left as they are.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import scf
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, BlockArgument, Operation, SSAValue
from xdsl.passes import ModulePass

from portc.compiler.errors import LoweringError
from portc.dialects import dtypes, npu
from portc.dialects.npu_soc import get_soc
from portc.passes.registry import register_pass

Region_ = tuple[str, int, int, int]  # (space, gm arg index or -1, byte lo, byte hi)


@dataclass(frozen=True)
class _Access:
    op: Operation
    pipe: str
    region: Region_
    write: bool


@dataclass(frozen=True)
class _Edge:
    block: Block
    producer: Operation  # flag set after this op (on ``src``)
    consumer: Operation  # flag waited before this op (on ``dst``)
    src: str
    dst: str
    loop: scf.ForOp | None  # set for loop-carried edges
    #: where a loop-carried flag is primed and drained: ``loop`` itself or an enclosing loop
    outer: scf.ForOp | None = None


def _region(value: SSAValue) -> Region_:
    owner = value.owner
    if isinstance(owner, npu.AllocOp):
        space, dt, n = npu.buffer_info(value)
        lo = owner.offset.value.data
        return space, -1, lo, lo + n * max(1, dtypes.dtype(dt).bits // 8)
    if isinstance(value, BlockArgument) and isinstance(owner, Block) and \
            isinstance(owner.parent_op(), npu.KernelOp):
        return "gm", value.index, 0, 1 << 62
    raise LoweringError(f"npu-insert-sync: buffer {value} is neither an npu.alloc nor a kernel "
                        "argument; the sync analysis needs static buffer identities")


def _conflict(a: _Access, b: _Access) -> bool:
    ra, rb = a.region, b.region
    return (a.write or b.write) and ra[0] == rb[0] and ra[1] == rb[1] and ra[2] < rb[3] \
        and rb[2] < ra[3]


def _ancestor_in(op: Operation, block: Block) -> Operation | None:
    cur: Operation | None = op
    while cur is not None and cur.parent_block() is not block:
        cur = cur.parent_op()
    return cur


def _blocks_of(op: Operation) -> list[Block]:
    out = []
    b = op.parent_block()
    while b is not None:
        out.append(b)
        p = b.parent_op()
        b = p.parent_block() if p is not None else None
    return out


def _enclosing_loop(block: Block, stop: Operation) -> scf.ForOp | None:
    p = block.parent_op()
    while p is not None and p is not stop:
        if isinstance(p, scf.ForOp):
            return p
        p = p.parent_op()
    return None


class _KernelSync:
    """Sync insertion for one kernel."""

    def __init__(self, kernel: npu.KernelOp) -> None:
        self.kernel = kernel
        self.events = get_soc(kernel.soc.data).events
        self.order: dict[Operation, tuple[int, int]] = {}  # op -> (first, last) pre-order index
        self._number(kernel.body.block, 0)

    def _number(self, block: Block, n: int) -> int:
        for op in block.ops:
            first = n
            n += 1
            for r in op.regions:
                for b in r.blocks:
                    n = self._number(b, n)
            self.order[op] = (first, n - 1)
        return n

    def accesses(self) -> list[_Access]:
        out = []
        for op in self.kernel.body.block.walk():
            if isinstance(op, npu.NpuOp):  # S: scalar reads (npu.get_value) have buffers
                for buf, _, role in op.buffer_operands():
                    reg = _region(buf)
                    if "r" in role:
                        out.append(_Access(op, op.PIPE, reg, False))
                    if "w" in role:
                        out.append(_Access(op, op.PIPE, reg, True))
        out.sort(key=lambda a: self.order[a.op][0])
        return out

    def edges(self) -> list[_Edge]:
        acc = self.accesses()
        found: set[_Edge] = set()
        for i, x in enumerate(acc):
            for y in acc[i + 1:]:
                if x.pipe == y.pipe or x.op is y.op or not _conflict(x, y):
                    continue
                xb = _blocks_of(x.op)
                common = next(b for b in xb if b in set(_blocks_of(y.op)))
                xa, ya = _ancestor_in(x.op, common), _ancestor_in(y.op, common)
                assert xa is not None and ya is not None
                if xa is not ya:
                    found.add(_Edge(common, xa, ya, x.pipe, y.pipe, None))
                loop = _enclosing_loop(common, self.kernel)
                if loop is not None:
                    body = loop.body.block
                    xl, yl = _ancestor_in(x.op, body), _ancestor_in(y.op, body)
                    assert xl is not None and yl is not None
                    found.add(_Edge(body, yl, xl, y.pipe, x.pipe, loop))
        return self._prune(found)

    def _prune(self, edges: set[_Edge]) -> list[_Edge]:
        groups: dict[tuple, list[_Edge]] = defaultdict(list)
        for e in edges:
            groups[(id(e.block), e.src, e.dst, e.loop is not None)].append(e)
        kept: list[_Edge] = []
        for group in groups.values():
            group.sort(key=lambda e: (self.order[e.consumer][0], -self.order[e.producer][0]))
            best = -1
            for e in group:
                p = self.order[e.producer][0]
                if p > best:
                    kept.append(e)
                    best = p
        kept.sort(key=lambda e: (self.order[e.producer][0], self.order[e.consumer][0]))
        return kept

    def interval(self, e: _Edge) -> tuple[float, float]:
        if e.loop is not None:
            first, last = self.order[e.outer or e.loop]
            return first - 0.5, last + 0.5
        return self.order[e.producer][1] + 0.5, self.order[e.consumer][0] - 0.5

    def assign_events(self, edges: list[_Edge]) -> dict[_Edge, int]:
        by_pair: dict[tuple[str, str], list[_Edge]] = defaultdict(list)
        for e in edges:
            by_pair[(e.src, e.dst)].append(e)
        ids: dict[_Edge, int] = {}
        for (s, d), group in by_pair.items():
            group.sort(key=lambda e: self.interval(e))
            last_end = [float("-inf")] * self.events
            for e in group:
                lo, hi = self.interval(e)
                free = next((i for i in range(self.events) if last_end[i] < lo), None)
                if free is None:
                    raise LoweringError(
                        f"npu-insert-sync: kernel @{self.kernel.sym_name.data} needs more than "
                        f"{self.events} live {s}->{d} flags at once; use fewer buffers per "
                        "pipe pair (or split the kernel)")
                ids[e] = free
                last_end[free] = hi
        return ids

    def hoisted(self, edges: list[_Edge]) -> list[_Edge]:
        """Prime and drain each loop-carried flag around the outermost enclosing loop instead
        of around its own loop: the last "buffer free" set of one execution of the inner loop
        is then consumed by the first wait of its next execution, so the producer pipe may run
        ahead into the next outer iteration instead of draining after every inner loop."""
        out = []
        for e in edges:
            outer = e.loop
            p = e.loop.parent_op() if e.loop is not None else None
            while p is not None and p is not self.kernel:
                if isinstance(p, scf.ForOp):
                    outer = p
                p = p.parent_op()
            out.append(_Edge(e.block, e.producer, e.consumer, e.src, e.dst, e.loop, outer))
        return out

    def run(self) -> int:
        if any(isinstance(o, npu.SetFlagOp | npu.WaitFlagOp) for o in self.kernel.walk()):
            return 0
        edges = self.edges()
        try:
            edges = self.hoisted(edges)
            ids = self.assign_events(edges)
        except LoweringError:  # too many live flags: prime/drain around each own loop
            edges = [_Edge(e.block, e.producer, e.consumer, e.src, e.dst, e.loop)
                     for e in edges]
            ids = self.assign_events(edges)
        for e in edges:
            ev = ids[e]
            e.block.insert_op_after(npu.SetFlagOp.make(e.src, e.dst, ev), e.producer)
            e.block.insert_op_before(npu.WaitFlagOp.make(e.src, e.dst, ev), e.consumer)
            if e.loop is not None:
                around = e.outer or e.loop
                outer = around.parent_block()
                assert outer is not None
                outer.insert_op_before(npu.SetFlagOp.make(e.src, e.dst, ev), around)
                outer.insert_op_after(npu.WaitFlagOp.make(e.src, e.dst, ev), around)
        return len(edges)


def insert_sync(module: ModuleOp | npu.KernelOp) -> int:
    """Insert flags into every kernel of ``module``; returns the number of flag pairs placed."""
    kernels = [module] if isinstance(module, npu.KernelOp) else \
        [o for o in module.walk() if isinstance(o, npu.KernelOp)]
    return sum(_KernelSync(k).run() for k in kernels)


@register_pass
class NpuInsertSyncPass(ModulePass):
    """Derive set_flag/wait_flag pairs for every npu kernel from buffer dependences."""

    name = "npu-insert-sync"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        insert_sync(op)
