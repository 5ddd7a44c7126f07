"""Lower a planned kernel-IR module to the ``ptx`` dialect: one ``.entry`` per kernel.

Each ``kernel.generic`` picks a schedule from its shape (``choose_schedule``):

- ``vector``: no reduction, every access contiguous and 16-byte aligned along the innermost dim:
  one thread per 4 elements with ``ld/st.global.v4`` (or v2 for 8-byte types).
- ``thread``: one thread per output point, a bounds guard on the last block, nested loops over
  the reduction dims with pointer increments. The general fallback: any strides, indirect terms
  (gathers), ``kernel.index``.
- ``warp``: long reductions (rows of softmax/layernorm/reduce, matmul's K): one warp per output,
  lanes stride over the flattened reduction space, then a ``shfl.sync.bfly`` butterfly.
- ``gemm``: ``passes/ptx_gemm.py`` — tiled shared-memory GEMM for matmul/conv-shaped generics.
- ``serial``: writes whose destination is data-dependent (scatter through an indirect output
  term) or not one-to-one with the parallel points: a single thread runs the loop nest in the
  kernel IR's sequential order, so duplicate indices combine exactly as the reference does
  (last write wins for ``none``; no atomics whose order would be unspecified).

``kernel.sort`` becomes a rank kernel: one thread per element counts the elements that sort
before it (NaN as the largest value, ties by index: a stable order) and writes itself there.

Launch geometry, parameter buffers and shared-memory bytes go into ``Launch`` records that the
target puts in the manifest: the artifact carries every fact a runtime needs.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from xdsl.ir import Operation, SSAValue

from portc.compiler.errors import LoweringError
from portc.dialects import dtypes, ptx
from portc.dialects import kernel as k
from portc.passes import ptx_body as pb
from portc.passes.ptx_body import Emitter, Val

BLOCK = 256
WARP = 32
#: reductions at least this long get a warp per output point
WARP_MIN_REDUCTION = 32
PRECISIONS = ("fp32", "tf32", "fp16", "bf16")


@dataclass
class Launch:
    """How the runtime launches one entry (all of it goes into the manifest)."""

    entry: str
    kernel: str
    origin: str
    schedule: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    #: one buffer name per ``.u64`` parameter, in order
    params: list[str]
    shared_bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["grid"], d["block"] = list(self.grid), list(self.block)
        return d


@dataclass
class LoweredModule:
    module: ptx.PtxModuleOp
    launches: list[Launch] = field(default_factory=list)

    @property
    def text(self) -> str:
        return ptx.emit_module(self.module)


def entry_name(kernel: str, used: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_]", "_", kernel) or "k"
    if not (base[0].isalpha() or base[0] == "_"):
        base = "k_" + base
    name, i = base, 1
    while name in used:
        i += 1
        name = f"{base}_{i}"
    used.add(name)
    return name


def injective(extents: tuple[int, ...], strides: tuple[int, ...]) -> bool:
    """Whether ``sum(stride_d * i_d)`` takes a distinct value at every point of the box (a
    sufficient check: sorted by |stride|, each stride exceeds the span of the smaller ones)."""
    dims = sorted((abs(s), e) for s, e in zip(strides, extents, strict=True) if e > 1)
    span = 0
    for s, e in dims:
        if s <= span:
            return False
        span += s * (e - 1)
    return True


def init_value(init: float, dtype: str) -> float | int | bool:
    d = dtypes.dtype(dtype)
    if d.kind in ("int", "uint"):
        info = np.iinfo(d.numpy)
        if math.isinf(init):
            return int(info.min if init < 0 else info.max)
        return int(np.clip(init, info.min, info.max))
    if d.kind == "bool":
        return init > 0
    return float(init)


IDENTITY = {"sum": 0.0, "prod": 1.0, "max": -math.inf, "min": math.inf}


def combine(e: Emitter, comb: str, acc: Val, v: Val, into: str | None = None) -> str:
    """``acc (comb) v`` in the accumulator's class; writes ``into`` when given (loop-carried
    registers are updated in place)."""
    t = acc.cls
    if t == "pred":
        mn = {"sum": "or.pred", "max": "or.pred", "prod": "and.pred", "min": "and.pred"}[comb]
    elif t in ("f32", "f64"):
        if comb in ("max", "min"):
            return pb.nan_max_min(e, comb, acc.reg, v.reg, t, into=into)
        mn = {"sum": f"add.rn.{t}", "prod": f"mul.rn.{t}"}[comb]
    else:
        mn = {"sum": f"add.{t}", "prod": f"mul.lo.{t}", "max": f"max.{t}", "min": f"min.{t}"}[comb]
    d = into if into is not None else e.reg(t)
    e(mn, d, acc.reg, v.reg)
    return d


class GenericLowering:
    """Shared machinery of the generic schedules: parameters, global ids, coordinates,
    addresses and the body."""

    def __init__(self, op: k.GenericOp, bufs: dict[str, k.BufferOp], name: str) -> None:
        self.op, self.bufs, self.name = op, bufs, name
        self.e = Emitter()
        self.where = f"kernel {op.kernel_name()} (from {op.origin()})"
        self.dims = op.extents
        self.npar = op.parallel_count
        self.names = op.input_names
        self.out = op.output_name
        self.params: list[str] = []
        for b in [*self.names, self.out]:
            if b not in self.params:
                self.params.append(b)
        for b in self.params:
            pb.check_dtype(self.dtype(b), self.where)
        self.base: dict[str, str] = {}
        self.terms = op.indirect_terms

    def dtype(self, buf: str) -> str:
        return self.bufs[buf].dtype.data

    def strides(self, slot: int) -> tuple[int, ...]:
        return self.op.output_strides if slot == -1 else self.op.input_strides(slot)

    def offset(self, slot: int) -> int:
        return self.op.output_offset if slot == -1 else self.op.input_offset(slot)

    def buf(self, slot: int) -> str:
        return self.out if slot == -1 else self.names[slot]

    def load_params(self) -> None:
        e = self.e
        for i, b in enumerate(self.params):
            r = e.op("ld.param.u64", "u64", f"[p{i}]")
            self.base[b] = e.op("cvta.to.global.u64", "u64", r)

    def global_id(self) -> str:
        e = self.e
        c = e.op("mov.u32", "u32", "%ctaid.x")
        n = e.op("mov.u32", "u32", "%ntid.x")
        t = e.op("mov.u32", "u32", "%tid.x")
        return e.op("mad.lo.s32", "u32", c, n, t)

    def split(self, idx: str, dims: list[int]) -> dict[int, str]:
        """Coordinates (u32 registers) of the row-major point ``idx`` over ``dims``."""
        e = self.e
        live = [d for d in dims if self.dims[d] > 1]
        coords: dict[int, str] = {}
        q = idx
        for j, d in enumerate(reversed(live)):
            ext = self.dims[d]
            if j == len(live) - 1:
                coords[d] = q
            else:
                coords[d] = e.op("rem.u32", "u32", q, ext)
                q = e.op("div.u32", "u32", q, ext)
        return coords

    def address(self, slot: int, coords: dict[int, str], base: str | None = None) -> str:
        """Byte address of ``slot`` at ``coords`` (dims not in coords count as 0)."""
        e = self.e
        es = pb.esize(self.dtype(self.buf(slot)))
        st = self.strides(slot)
        a = base if base is not None else e.op("add.s64", "s64", self.base[self.buf(slot)],
                                                self.offset(slot) * es)
        for d, c in coords.items():
            s = st[d] * es
            if s == 0:
                continue
            if abs(s) < 2**31:
                t = e.op("mul.wide.s32", "s64", c, s)
            else:
                t = e.op("mul.lo.s64", "s64", e.op("cvt.u64.u32", "u64", c), s)
            a = e.op("add.s64", "s64", a, t)
        return a

    def indirect(self, slot: int, addr: str, loaded: dict[int, Val]) -> str:
        e = self.e
        es = pb.esize(self.dtype(self.buf(slot)))
        for s, islot, stride, bound in self.terms:
            if s != slot:
                continue
            v = loaded[islot]
            if v.cls in ("s64", "u64"):
                i64 = v.reg
            elif v.cls in ("s32", "u32"):
                i64 = e.op(f"cvt.s64.{v.cls}", "s64", v.reg)
            else:
                raise LoweringError(f"{self.where}: index slot {islot} holds {v.dtype}, not "
                                    "an integer")
            neg = e.op("setp.lt.s64", "pred", i64, 0)
            w = e.op("add.s64", "s64", i64, bound)
            i64 = e.op("selp.s64", "s64", w, i64, neg)
            addr = e.op("mad.lo.s64", "s64", i64, stride * es, addr)
        return addr

    def load_slots(self, addrs: dict[int, str]) -> dict[int, Val]:
        """Load every input slot (gathered slots after the slots their indices come from)."""
        gathered = {t[0] for t in self.terms}
        order = [i for i in range(len(self.names)) if i not in gathered] + \
            sorted(gathered - {-1})
        loaded: dict[int, Val] = {}
        for i in order:
            a = self.indirect(i, addrs[i], loaded)
            loaded[i] = pb.load(self.e, a, self.dtype(self.names[i]))
        return loaded

    def body(self, loaded: dict[int, Val], index: dict[int, str]) -> Val:
        """Evaluate the scalar body; ``index`` maps dims to u32 coordinate registers."""
        e = self.e
        op = self.op
        vals: dict[SSAValue, Val] = {a: loaded[i] for i, a in enumerate(op.body.block.args)}
        for b in op.body.block.ops:
            if isinstance(b, k.YieldOp):
                v = vals[b.value]
                want = self.dtype(self.out)
                return v if v.dtype == want else pb.cast(e, v, want)
            res = b.results[0]
            dt = k.dtype_of_type(res.type)
            pb.check_dtype(dt, self.where)
            if isinstance(b, k.UnaryOp):
                v = pb.unary(e, b.fn.data, vals[b.x])
            elif isinstance(b, k.BinaryOp):
                v = pb.binary(e, b.fn.data, vals[b.a], vals[b.b], _const_of(b.b))
            elif isinstance(b, k.SelectOp):
                v = pb.select(e, vals[b.cond], vals[b.a], vals[b.b])
            elif isinstance(b, k.CastOp):
                v = pb.cast(e, vals[b.x], dt)
            elif isinstance(b, k.ConstOp):
                cls = pb.CLASS_OF[dt]
                num = b.number
                if cls == "f32" and dt != "float32":
                    num = float(np.array(num).astype(dtypes.dtype(dt).numpy))
                v = Val(e.const(num, cls), cls, dt)
            elif isinstance(b, k.IndexOp):
                d = b.dim.value.data
                c = index.get(d)
                v = Val(e.op("cvt.u64.u32", "s64", c) if c is not None else e.const(0, "s64"),
                        "s64", "int64")
            else:
                raise LoweringError(f"{self.where}: body op {b.name} has no PTX lowering")
            vals[res] = v
        raise LoweringError(f"{self.where}: body has no kernel.yield")

    def acc_start(self, out_addr: str | None) -> Val:
        """The accumulator's first value: ``init`` or what the output holds."""
        e = self.e
        dt = self.dtype(self.out)
        cls = pb.CLASS_OF[dt]
        if self.op.init_value is not None:
            r = e.const(init_value(self.op.init_value, dt), cls)
        else:
            assert out_addr is not None
            r = e.op(f"mov.{'pred' if cls == 'pred' else 'b' + cls[1:]}", cls,
                     pb.load(e, out_addr, dt).reg)
        return Val(r, cls, dt)

    def finish(self, params_types: list[str] | None = None) -> ptx.EntryOp:
        self.e("ret")
        params = [f"p{i}:u64" for i in range(len(self.params))]
        return ptx.EntryOp.make(self.name, params, [], self.e.ops)


def _const_of(v: SSAValue) -> float | None:
    owner = v.owner
    if isinstance(owner, k.ConstOp):
        return float(owner.number)
    return None


# ---------------------------------------------------------------------------------- schedules
def _parallel_count(op: k.GenericOp) -> int:
    return int(np.prod(op.extents[:op.parallel_count], dtype=np.int64))


def _reduction_count(op: k.GenericOp) -> int:
    return int(np.prod(op.extents[op.parallel_count:], dtype=np.int64))


def choose_schedule(op: k.GenericOp, bufs: dict[str, k.BufferOp], precision: str) -> str:
    from portc.passes import ptx_gemm

    terms = op.indirect_terms
    npar = op.parallel_count
    if any(t[0] == -1 for t in terms) or not injective(op.extents[:npar],
                                                       op.output_strides[:npar]):
        return "serial"
    if op.combine == "none":
        return "vector" if vector_width(op, bufs) > 1 else "thread"
    if ptx_gemm.match_gemm(op, bufs) is not None:
        return "gemm"
    out_cls = pb.CLASS_OF.get(bufs[op.output_name].dtype.data, "")
    if _reduction_count(op) >= WARP_MIN_REDUCTION and out_cls != "pred":
        return "warp"
    return "thread"


def vector_width(op: k.GenericOp, bufs: dict[str, k.BufferOp]) -> int:
    """Elements per thread for 16-byte accesses, or 1 when some access is not contiguous and
    16-byte aligned along the innermost dim (or the kernel gathers or reads its own index)."""
    if op.indirect_terms or op.parallel_count == 0:
        return 1
    if any(isinstance(b, k.IndexOp) for b in op.body.block.ops):
        return 1
    inner = op.parallel_count - 1
    if any(e != 1 for e in op.extents[op.parallel_count:]):
        return 1
    slots = [(-1, op.output_name)] + list(enumerate(op.input_names))
    sizes = {pb.esize(bufs[b].dtype.data) for _, b in slots}
    if len(sizes) != 1:
        return 1
    es = sizes.pop()
    width = 16 // es
    if es not in (4, 8) or op.extents[inner] % width:
        return 1
    for slot, _b in slots:
        st = op.output_strides if slot == -1 else op.input_strides(slot)
        off = op.output_offset if slot == -1 else op.input_offset(slot)
        if st[inner] not in (0, 1):
            return 1
        if st[inner] == 1 and (off % width or any(s % width for s in st[:inner])):
            return 1
    if op.output_strides[inner] != 1:
        return 1
    return width


def _grid(threads: int, block: int = BLOCK) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    b = min(block, max(WARP, -(-threads // WARP) * WARP))
    return (max(1, -(-threads // b)), 1, 1), (b, 1, 1)


def lower_thread(op: k.GenericOp, bufs: dict[str, k.BufferOp], name: str) -> tuple[
        ptx.EntryOp, Launch]:
    """One thread per output point; nested loops over the reduction dims."""
    g = GenericLowering(op, bufs, name)
    e = g.e
    P = _parallel_count(op)
    g.load_params()
    gid = g.global_id()
    done = e.new_label("done")
    e("bra.uni", done, guard=e.op("setp.ge.u32", "pred", gid, P))
    pc = g.split(gid, list(range(g.npar)))
    slots = list(range(len(g.names)))
    addrs = {s: g.address(s, pc) for s in slots}
    out_addr = g.address(-1, pc)
    if op.combine == "none":
        loaded = g.load_slots(addrs)
        v = g.body(loaded, dict(pc))
        pb.store(e, out_addr, v, g.dtype(g.out))
    else:
        acc = g.acc_start(out_addr)
        loops = [d for d in range(g.npar, len(g.dims)) if g.dims[d] > 1]
        if _reduction_count(op) > 0:
            _nested_loops(g, loops, addrs, dict(pc), acc)
        res = Val(pb.normalize(e, acc.reg, acc.dtype), acc.cls, acc.dtype)
        pb.store(e, out_addr, res, g.dtype(g.out))
    e.place(done)
    grid, block = _grid(P)
    return g.finish(), Launch(name, op.kernel_name(), op.origin(), "thread", grid, block,
                              g.params)


def _nested_loops(g: GenericLowering, loops: list[int], addrs: dict[int, str],
                  index: dict[int, str], acc: Val) -> None:
    e = g.e
    if not loops:
        loaded = g.load_slots(addrs)
        v = g.body(loaded, index)
        combine(e, g.op.combine, acc, v, into=acc.reg)
        return
    d = loops[0]
    moving = {s: g.strides(s)[d] * pb.esize(g.dtype(g.buf(s))) for s in addrs}
    cur = {s: (e.op("mov.b64", "s64", a) if moving[s] else a) for s, a in addrs.items()}
    cnt = e.op("mov.u32", "u32", 0)
    top = e.new_label("r")
    e.place(top)
    _nested_loops(g, loops[1:], cur, {**index, d: cnt}, acc)
    for s, step in moving.items():
        if step:
            e("add.s64", cur[s], cur[s], step)
    e("add.u32", cnt, cnt, 1)
    e("bra.uni", top, guard=e.op("setp.lt.u32", "pred", cnt, g.dims[d]))


def lower_vector(op: k.GenericOp, bufs: dict[str, k.BufferOp], name: str) -> tuple[
        ptx.EntryOp, Launch]:
    """Elementwise with 16-byte ``ld/st.global.v{2,4}``: each thread owns ``width``
    consecutive innermost elements; broadcast slots (stride 0 there) load one scalar."""
    width = vector_width(op, bufs)
    g = GenericLowering(op, bufs, name)
    e = g.e
    P = _parallel_count(op)
    groups = P // width
    inner = g.npar - 1
    g.load_params()
    gid = g.global_id()
    done = e.new_label("done")
    e("bra.uni", done, guard=e.op("setp.ge.u32", "pred", gid, groups))
    first = e.op("mul.lo.s32", "u32", gid, width)
    pc = g.split(first, list(range(g.npar)))
    dt_out = g.dtype(g.out)
    lanes: list[dict[int, Val]] = [dict() for _ in range(width)]
    for s in range(len(g.names)):
        a = g.address(s, pc)
        dt = g.dtype(g.names[s])
        if g.strides(s)[inner] == 0:
            v = pb.load(e, a, dt)
            for ln in lanes:
                ln[s] = v
            continue
        cls = pb.CLASS_OF[dt]
        regs = [e.reg(cls) for _ in range(width)]
        e(f"ld.global.v{width}.{pb.MEM_TYPE[dt][0]}", "{" + ", ".join(regs) + "}", f"[{a}]")
        for j, r in enumerate(regs):
            lanes[j][s] = Val(r, cls, dt)
    outs = []
    for j in range(width):
        idx = dict(pc)
        if inner in idx:
            idx[inner] = e.op("add.u32", "u32", pc[inner], j) if j else pc[inner]
        outs.append(g.body(lanes[j], idx))
    out_addr = g.address(-1, pc)
    mt = pb.MEM_TYPE[dt_out][0]
    regs = [pb.store_value(e, v, dt_out)[1] for v in outs]
    e(f"st.global.v{width}.{mt}", f"[{out_addr}]", "{" + ", ".join(regs) + "}")
    e.place(done)
    grid, block = _grid(groups)
    return g.finish(), Launch(name, op.kernel_name(), op.origin(), "vector", grid, block,
                              g.params)


def _shfl_combine(e: Emitter, comb: str, acc: Val) -> None:
    """Butterfly over the warp: every lane ends with the warp's combined value."""
    for off in (16, 8, 4, 2, 1):
        if acc.cls in ("f64", "s64", "u64"):
            lo, hi = e.reg("b32"), e.reg("b32")
            e("mov.b64", "{" + f"{lo}, {hi}" + "}", acc.reg)
            lo2 = e.op("shfl.sync.bfly.b32", "b32", lo, off, 31, -1)
            hi2 = e.op("shfl.sync.bfly.b32", "b32", hi, off, 31, -1)
            other = e.reg(acc.cls)
            e("mov.b64", other, "{" + f"{lo2}, {hi2}" + "}")
        else:
            other = e.op("shfl.sync.bfly.b32", acc.cls, acc.reg, off, 31, -1)
        combine(e, comb, acc, Val(other, acc.cls, acc.dtype), into=acc.reg)


def lower_warp(op: k.GenericOp, bufs: dict[str, k.BufferOp], name: str) -> tuple[
        ptx.EntryOp, Launch]:
    """One warp per output point: lanes stride the flattened reduction space by 32, then a
    shfl butterfly; lane 0 applies ``init`` (or the output's old value) and stores."""
    g = GenericLowering(op, bufs, name)
    e = g.e
    P, R = _parallel_count(op), _reduction_count(op)
    g.load_params()
    gid = g.global_id()
    row = e.op("shr.u32", "u32", gid, 5)
    lane = e.op("and.b32", "u32", gid, 31)
    done = e.new_label("done")
    e("bra.uni", done, guard=e.op("setp.ge.u32", "pred", row, P))
    pc = g.split(row, list(range(g.npar)))
    slots = list(range(len(g.names)))
    bases = {s: g.address(s, pc) for s in slots}
    dt = g.dtype(g.out)
    cls = pb.CLASS_OF[dt]
    acc = Val(e.const(init_value(IDENTITY[op.combine], dt) if cls not in ("f32", "f64")
                      else IDENTITY[op.combine], cls), cls, dt)
    rdims = [d for d in range(g.npar, len(g.dims)) if g.dims[d] > 1]
    r = e.op("mov.u32", "u32", lane)
    top, end = e.new_label("w"), e.new_label("wend")
    e.place(top)
    e("bra.uni", end, guard=e.op("setp.ge.u32", "pred", r, R))
    rc = g.split(r, rdims) if rdims else {}
    addrs = {s: g.address(s, rc, base=bases[s]) for s in slots}
    loaded = g.load_slots(addrs)
    v = g.body(loaded, {**pc, **rc})
    combine(e, op.combine, acc, v, into=acc.reg)
    e("add.u32", r, r, WARP)
    e("bra.uni", top)
    e.place(end)
    _shfl_combine(e, op.combine, acc)
    is0 = e.op("setp.eq.u32", "pred", lane, 0)
    skip = e.new_label("nz")
    e("bra.uni", skip, guard=f"!{is0}")
    out_addr = g.address(-1, pc)
    start = g.acc_start(out_addr)
    combine(e, op.combine, start, acc, into=start.reg)
    res = Val(pb.normalize(e, start.reg, dt), cls, dt)
    pb.store(e, out_addr, res, dt)
    e.place(skip)
    e.place(done)
    grid, block = _grid(P * WARP)
    return g.finish(), Launch(name, op.kernel_name(), op.origin(), "warp", grid, block,
                              g.params)


def lower_serial(op: k.GenericOp, bufs: dict[str, k.BufferOp], name: str) -> tuple[
        ptx.EntryOp, Launch]:
    """A single thread runs the whole loop nest in sequential order: data-dependent or
    overlapping destinations combine exactly as the kernel IR specifies."""
    g = GenericLowering(op, bufs, name)
    g.load_params()
    dt = g.dtype(g.out)
    if op.init_value is not None and op.combine != "none" and \
            any(t[0] == -1 for t in g.terms):
        raise LoweringError(f"{g.where}: a scatter with both an init value and an indirect "
                            "output has no defined order to lower")
    if _parallel_count(op) == 0 or (_reduction_count(op) == 0 and op.combine == "none"):
        return g.finish(), Launch(name, op.kernel_name(), op.origin(), "serial", (1, 1, 1),
                                  (1, 1, 1), g.params)
    slots = list(range(len(g.names)))
    addrs = {s: g.address(s, {}) for s in slots}
    addrs[-1] = g.address(-1, {})
    per_point = op.combine != "none" and op.init_value is not None
    _serial_loops(g, [d for d in range(len(g.dims)) if g.dims[d] > 1 and
                      (d < g.npar or not per_point)], addrs, {}, dt, per_point)
    return g.finish(), Launch(name, op.kernel_name(), op.origin(), "serial", (1, 1, 1),
                              (1, 1, 1), g.params)


def _serial_loops(g: GenericLowering, loops: list[int], addrs: dict[int, str],
                  index: dict[int, str], dt: str, per_point: bool) -> None:
    e = g.e
    op = g.op
    if not loops:
        ins = {s: a for s, a in addrs.items() if s != -1}
        if per_point:
            acc = g.acc_start(None)
            rl = [d for d in range(g.npar, len(g.dims)) if g.dims[d] > 1]
            if _reduction_count(op) > 0:
                _nested_loops(g, rl, ins, index, acc)
            pb.store(e, addrs[-1], Val(pb.normalize(e, acc.reg, dt), acc.cls, dt), dt)
            return
        loaded = g.load_slots(ins)
        v = g.body(loaded, index)
        oa = g.indirect(-1, addrs[-1], loaded)
        if op.combine == "none":
            pb.store(e, oa, v, dt)
        else:
            old = pb.load(e, oa, dt)
            r = combine(e, op.combine, old, v)
            pb.store(e, oa, Val(pb.normalize(e, r, dt), old.cls, dt), dt)
        return
    d = loops[0]
    moving = {s: g.strides(s)[d] * pb.esize(g.dtype(g.buf(s))) for s in addrs}
    cur = {s: (e.op("mov.b64", "s64", a) if moving[s] else a) for s, a in addrs.items()}
    cnt = e.op("mov.u32", "u32", 0)
    top = e.new_label("s")
    e.place(top)
    _serial_loops(g, loops[1:], cur, {**index, d: cnt}, dt, per_point)
    for s, step in moving.items():
        if step:
            e("add.s64", cur[s], cur[s], step)
    e("add.u32", cnt, cnt, 1)
    e("bra.uni", top, guard=e.op("setp.lt.u32", "pred", cnt, g.dims[d]))


def lower_sort(op: k.SortOp, bufs: dict[str, k.BufferOp], name: str) -> tuple[
        ptx.EntryOp, Launch]:
    """Rank sort: thread (row, i) counts the elements ordered before element i (stable, NaN
    largest) and, if that rank is below k, writes value and index at it."""
    e = Emitter()
    where = f"kernel {op.kernel_name()} (from {op.origin()})"
    rows, n, kk = op.rows.value.data, op.n.value.data, op.k.value.data
    desc = bool(op.descending.value.data)
    src, vals, idxs = op.input.data, op.values.data, op.indices.data
    dt = bufs[src].dtype.data
    pb.check_dtype(dt, where)
    params = [src, vals, idxs]
    base = {}
    for i, b in enumerate(params):
        base[b] = e.op("cvta.to.global.u64", "u64", e.op("ld.param.u64", "u64", f"[p{i}]"))
    c = e.op("mov.u32", "u32", "%ctaid.x")
    nt = e.op("mov.u32", "u32", "%ntid.x")
    t = e.op("mov.u32", "u32", "%tid.x")
    gid = e.op("mad.lo.s32", "u32", c, nt, t)
    done = e.new_label("done")
    e("bra.uni", done, guard=e.op("setp.ge.u32", "pred", gid, rows * n))
    row = e.op("div.u32", "u32", gid, n)
    i = e.op("rem.u32", "u32", gid, n)
    es = pb.esize(dt)
    rowbase = e.op("mad.wide.u32", "s64", row, n * es,
                   e.op("add.s64", "s64", base[src], op.input_offset.value.data * es))
    xi = pb.load(e, e.op("mad.wide.u32", "s64", i, es, rowbase), dt)

    def key(v: Val) -> Val:
        if v.cls == "pred":
            return Val(e.op("selp.u32", "u32", 1, 0, v.reg), "u32", "uint32")
        if v.cls in ("f32", "f64"):
            nan = e.op(f"setp.nan.{v.cls}", "pred", v.reg, v.reg)
            return Val(e.op(f"selp.{v.cls}", v.cls, e.imm(math.inf, v.cls), v.reg, nan),
                       v.cls, v.dtype)
        return v

    ki = key(xi)
    rank = e.op("mov.u32", "u32", 0)
    m = e.op("mov.u32", "u32", 0)
    ptr = e.op("mov.b64", "s64", rowbase)
    top = e.new_label("rank")
    e.place(top)
    km = key(pb.load(e, ptr, dt))
    before = e.op(f"setp.{'gt' if desc else 'lt'}.{ki.cls}", "pred", km.reg, ki.reg)
    tie = e.op("and.pred", "pred", e.op(f"setp.eq.{ki.cls}", "pred", km.reg, ki.reg),
               e.op("setp.lt.u32", "pred", m, i))
    e("add.u32", rank, rank, 1, guard=e.op("or.pred", "pred", before, tie))
    e("add.s64", ptr, ptr, es)
    e("add.u32", m, m, 1)
    e("bra.uni", top, guard=e.op("setp.lt.u32", "pred", m, n))
    e("bra.uni", done, guard=e.op("setp.ge.u32", "pred", rank, kk))
    slot = e.op("mad.lo.s32", "u32", row, kk, rank)
    pb.store(e, e.op("mad.wide.u32", "s64", slot, es, base[vals]), xi, dt)
    i64 = e.op("cvt.u64.u32", "s64", i)
    e("st.global.s64", f"[{e.op('mad.wide.u32', 's64', slot, 8, base[idxs])}]", i64)
    e.place(done)
    e("ret")
    grid, block = _grid(rows * n)
    entry = ptx.EntryOp.make(name, [f"p{j}:u64" for j in range(3)], [], e.ops)
    return entry, Launch(name, op.kernel_name(), op.origin(), "sort", grid, block, params)


SCHEDULES = {"thread": lower_thread, "vector": lower_vector, "warp": lower_warp,
             "serial": lower_serial}


def lower_kernel_module(module: Operation, sm: int = 80, precision: str = "fp32"
                        ) -> LoweredModule:
    """Kernel-IR module -> ptx module + launch sequence (kernels with no points are skipped)."""
    if precision not in PRECISIONS:
        raise LoweringError(f"cuda: --precision '{precision}' is not one of {PRECISIONS}")
    if sm not in ptx.SUPPORTED_SM:
        raise LoweringError(f"cuda: --sm {sm} is not one of {ptx.SUPPORTED_SM}")
    bufs = k.buffers_of(module)
    used: set[str] = set()
    entries: list[ptx.EntryOp] = []
    launches: list[Launch] = []
    for op in k.kernels_of(module):
        name = entry_name(op.kernel_name(), used)
        if isinstance(op, k.SortOp):
            if op.rows.value.data * op.n.value.data == 0:
                continue
            ent, ln = lower_sort(op, bufs, name)
        else:
            assert isinstance(op, k.GenericOp)
            if _parallel_count(op) == 0:
                continue
            sched = choose_schedule(op, bufs, precision)
            if sched == "gemm":
                from portc.passes import ptx_gemm

                ent, ln = ptx_gemm.lower_gemm(op, bufs, name, precision, sm)
            else:
                ent, ln = SCHEDULES[sched](op, bufs, name)
        entries.append(ent)
        launches.append(ln)
    mod = ptx.PtxModuleOp.make(sm, entries)
    return LoweredModule(mod, launches)
