"""``PtxSim``: executes a decoded PTX entry over every thread of a grid as numpy lanes.

Lanes: block after block, each block padded to whole warps of 32 (padding lanes never live), so
lane ``b * P + t`` is thread ``t`` (linear, x fastest) of block ``b`` and warps are consecutive
groups of 32 lanes.  Every register is one array of shape ``[T]`` holding raw bits (pred: bool),
so ``mov.b32 %f1, %r1`` and friends are free reinterpretations.

Control flow: one program counter and one SIMT stack for the whole grid.  A conditional branch on
which the active lanes disagree pushes both paths; they meet again at the branch's immediate
post-dominator (computed at parse time).  ``exit``/``ret`` retire lanes for good.

Sanitizer: global memory is a set of allocations with red zones between them, shared memory is
``[blocks, bytes]`` and checked against the declared size, every access is checked for alignment,
and shared bytes carry their last writer/reader thread and the barrier epoch in which they were
touched, so two threads of a block meeting on a byte between barriers (one of them writing) is a
``SharedMemoryRaceError`` naming both instructions.  Atomics are exempt from race tracking.
``cp.async`` reads global memory when issued but its bytes land in shared memory (and count as
written) at the ``cp.async.wait_group``/``wait_all`` that completes their group; groups are
numbered per thread, as the PTX ISA defines them.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import ml_dtypes
import numpy as np

from portc.runtimes.ptxsim import fp
from portc.runtimes.ptxsim.decode import DT, SIGNED
from portc.runtimes.ptxsim.errors import (
    BarrierDivergenceError,
    GlobalWriteConflictError,
    InstructionLimitError,
    LaunchError,
    MisalignedAccessError,
    OutOfBoundsError,
    PtxSimError,
    SharedMemoryRaceError,
    TrapError,
    UninitializedSharedError,
    WarpSyncError,
)
from portc.runtimes.ptxsim.module import (
    TYPE_BITS,
    Addr,
    Entry,
    Imm,
    Instr,
    NotPred,
    PtxModule,
    Reg,
    Sym,
    Vec,
)

WARP = 32
SHARED_WINDOW = 1 << 48  # generic addresses of shared memory: window base + shared offset
LOCAL_WINDOW = 1 << 47   # generic addresses of a thread's .local memory
REG_STORE = {1: np.dtype(bool), 8: np.dtype(np.uint8), 16: np.dtype(np.uint16),
             32: np.dtype(np.uint32), 64: np.dtype(np.uint64)}


# ----------------------------------------------------------------------------- global memory

@dataclass
class Allocation:
    name: str
    address: int
    nbytes: int


class GlobalMemory:
    """Device global memory as named allocations in one byte array, red zones in between.

    Addresses start high (2**40) so a pointer truncated to 32 bits or a null pointer lands
    outside every allocation and is reported instead of silently aliasing.
    """

    BASE = 1 << 40
    RED_ZONE = 256

    def __init__(self, limit_bytes: int = 4 << 30) -> None:
        self.limit_bytes = limit_bytes
        self.allocations: list[Allocation] = []
        self.data = np.zeros(0, np.uint8)
        self._next = self.BASE
        self._starts = np.zeros(0, np.uint64)
        self._ends = np.zeros(0, np.uint64)

    def alloc(self, name: str, nbytes: int, align: int = 256) -> int:
        """Reserve ``nbytes`` (zero-filled) aligned to ``align``; returns the device address."""
        if nbytes < 0 or align <= 0 or align & (align - 1):
            raise LaunchError(f"alloc '{name}': bad size {nbytes} or alignment {align}")
        start = (self._next + align - 1) // align * align
        end = start + nbytes
        if end - self.BASE > self.limit_bytes:
            raise LaunchError(f"alloc '{name}' of {nbytes} bytes exceeds the {self.limit_bytes}-byte "
                              "global memory limit")
        self._next = end + self.RED_ZONE
        need = (self._next - self.BASE + 15) // 16 * 16
        if need > self.data.size:
            grown = np.zeros(max(need, self.data.size * 2), np.uint8)
            grown[:self.data.size] = self.data
            self.data = grown
        self.allocations.append(Allocation(name, start, nbytes))
        self._starts = np.array([a.address for a in self.allocations], np.uint64)
        self._ends = np.array([a.address + a.nbytes for a in self.allocations], np.uint64)
        return start

    def _host_range(self, addr: int, nbytes: int, what: str) -> int:
        for a in self.allocations:
            if a.address <= addr and addr + nbytes <= a.address + a.nbytes:
                return addr - self.BASE
        raise OutOfBoundsError("<host>", 0, what, f"address {addr:#x}",
                               f"{nbytes} bytes at {addr:#x} are not inside one allocation")

    def write(self, addr: int, array: np.ndarray) -> None:
        """Copy a host array's bytes to device address ``addr`` (bounds-checked)."""
        raw = np.ascontiguousarray(array).view(np.uint8).reshape(-1)
        off = self._host_range(addr, raw.size, "GlobalMemory.write")
        self.data[off:off + raw.size] = raw

    def read(self, addr: int, dtype: np.dtype | type, count: int) -> np.ndarray:
        """``count`` elements of ``dtype`` at ``addr``, as a new host array."""
        dt = np.dtype(dtype)
        off = self._host_range(addr, dt.itemsize * count, "GlobalMemory.read")
        return self.data[off:off + dt.itemsize * count].copy().view(dt)

    def allocation_of(self, addr: np.ndarray) -> np.ndarray:
        """Index of the allocation holding each address (-1 for none)."""
        k = np.searchsorted(self._starts, addr, side="right").astype(np.int64) - 1
        ok = k >= 0
        kk = np.maximum(k, 0)
        ok &= (self._ends[kk] > addr) if self._ends.size else np.zeros_like(ok)
        return np.where(ok, k, -1)

    def describe(self, addr: int) -> str:
        """Where ``addr`` lies relative to the nearest allocation, for fault messages."""
        if not self.allocations:
            return f"{addr:#x} (no allocations)"
        best = min(self.allocations, key=lambda a: min(abs(addr - a.address),
                                                      abs(addr - (a.address + a.nbytes))))
        if addr < best.address:
            return f"{addr:#x}, {best.address - addr} bytes before allocation '{best.name}' " \
                   f"({best.nbytes} bytes)"
        if addr >= best.address + best.nbytes:
            return f"{addr:#x}, {addr - best.address - best.nbytes} bytes past the end of " \
                   f"allocation '{best.name}' ({best.nbytes} bytes)"
        return f"{addr:#x}, offset {addr - best.address} in allocation '{best.name}'"


# ----------------------------------------------------------------------------- stats

@dataclass
class LaunchStats:
    """What one launch executed.  ``warp_instructions`` counts an instruction once per warp that
    issues it with any active lane (predicated-off lanes included); ``thread_instructions``
    counts active lanes."""

    kernel: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    warp_instructions: int = 0
    thread_instructions: int = 0
    steps: int = 0
    barriers: int = 0
    by_opcode: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def by_mnemonic(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for op, n in self.by_opcode.items():
            out[op.split(".")[0]] += n
        return dict(out)

    @property
    def warp_instructions_per_second(self) -> float:
        return self.warp_instructions / self.seconds if self.seconds else 0.0

    @property
    def thread_instructions_per_second(self) -> float:
        return self.thread_instructions / self.seconds if self.seconds else 0.0


@dataclass
class _Frame:
    pc: int
    mask: np.ndarray
    rpc: int
    gen: int = -1
    live: np.ndarray | None = None
    warps: int = 0
    lanes: int = 0
    full: bool = False


# ----------------------------------------------------------------------------- one launch

class _Launch:
    """State of one kernel launch; decoded executors call its methods with a lane mask."""

    SHARED_WINDOW = SHARED_WINDOW
    LOCAL_WINDOW = LOCAL_WINDOW

    def __init__(self, entry: Entry, memory: GlobalMemory, grid: tuple[int, int, int],
                 block: tuple[int, int, int], params: list, dynamic_shared: int,
                 blocks: range) -> None:
        """``blocks``: the linear block indices this batch of lanes executes."""
        self.entry, self.memory = entry, memory
        self.grid, self.block = grid, block
        nthreads = block[0] * block[1] * block[2]
        self.P = (nthreads + WARP - 1) // WARP * WARP
        self.B = len(blocks)
        self.T = self.B * self.P
        self.W = self.T // WARP
        lane = np.arange(self.T, dtype=np.int64)
        self.block_of = lane // self.P
        t = lane % self.P
        self.tid = t.astype(np.int32)
        self.alive = t < nthreads
        self.gen = 0
        self.full = False  # the executing instruction's mask covers every lane
        self.check_init = True
        self.global_addr: dict[str, int] = {}
        gblock = self.block_of + blocks.start
        bx = gblock % grid[0]
        by = (gblock // grid[0]) % grid[1]
        bz = gblock // (grid[0] * grid[1])
        tx = t % block[0]
        ty = (t // block[0]) % block[1]
        tz = t // (block[0] * block[1])
        u32 = np.uint32
        self.special: dict[str, np.ndarray | np.generic] = {
            "%tid.x": tx.astype(u32), "%tid.y": ty.astype(u32), "%tid.z": tz.astype(u32),
            "%ntid.x": u32(block[0]), "%ntid.y": u32(block[1]), "%ntid.z": u32(block[2]),
            "%ctaid.x": bx.astype(u32), "%ctaid.y": by.astype(u32), "%ctaid.z": bz.astype(u32),
            "%nctaid.x": u32(grid[0]), "%nctaid.y": u32(grid[1]), "%nctaid.z": u32(grid[2]),
            "%laneid": (t % WARP).astype(u32), "%warpid": (t // WARP).astype(u32),
            "%nwarpid": u32(self.P // WARP),
            "%smid": np.zeros(self.T, u32), "%nsmid": u32(1),
        }
        self._coords = (bx, by, bz, tx, ty, tz)
        self.warp_base = lane - (t % WARP)
        lid = (t % WARP).astype(np.uint64)
        eq = (np.uint64(1) << lid)
        self.special.update({
            "%lanemask_eq": eq.astype(u32), "%lanemask_lt": (eq - np.uint64(1)).astype(u32),
            "%lanemask_le": (eq * np.uint64(2) - np.uint64(1)).astype(u32),
            "%lanemask_gt": (~(eq * np.uint64(2) - np.uint64(1))).astype(u32),
            "%lanemask_ge": (~(eq - np.uint64(1))).astype(u32),
        })
        self.regs: dict[str, np.ndarray] = {}
        self.reg_store = {n: REG_STORE[min(64, max(TYPE_BITS[ty], 1 if ty == "pred" else 8))]
                          for n, ty in entry.regs.items()}
        self.param_buf = self._pack_params(params)
        # shared memory: static variables, then the dynamic (extern) array, aligned
        dyn_off = (entry.shared_bytes + entry.dynamic_align - 1) // entry.dynamic_align * entry.dynamic_align
        self.dyn_off = dyn_off if any(v.extern for v in entry.shared.values()) else entry.shared_bytes
        self.S = self.dyn_off + dynamic_shared
        self.S_pad = (self.S + 15) // 16 * 16
        self.special["%dynamic_smem_size"] = u32(dynamic_shared)
        self.special["%total_smem_size"] = u32(self.S)
        self.smem = np.zeros(self.B * self.S_pad, np.uint8)
        self.Lsz = entry.local_bytes
        self.L_pad = (self.Lsz + 15) // 16 * 16
        self.lmem = np.zeros(self.T * self.L_pad, np.uint8)
        # race state per unit of G bytes: while every shared access covers whole aligned units
        # all bytes of a unit share one history, so tracking units is exact; an access smaller
        # than G refines the units first (_units)
        self.G = 16
        if self.S:
            n = self.B * self.S_pad // self.G
            none = int(self._pack_state(np.array(-1), 0, np.array(-1)))
            self.w_state = np.full(n, none, np.int64)
            self.r_state = np.full(n, none, np.int64)
        self.wsync = np.zeros(self.W, np.int64)
        self.epoch = np.zeros(self.B, np.int32)
        self._tid64 = self.tid.astype(np.int64)
        self._block_byte = self.block_of * self.S_pad  # flat shared byte of each lane's block
        self._lane_state()
        # in-flight cp.async copies: (lanes, shared offsets, data, instruction, group per lane);
        # a lane's copies join group number cp_committed[lane] at its next commit_group
        self.cp_inflight: list[tuple] = []
        self.cp_committed = np.zeros(self.T, np.int64)
        self.clock = 0

    # -- naming faults ---------------------------------------------------------------------
    def where(self, lane: int) -> str:
        bx, by, bz, tx, ty, tz = (int(c[lane]) for c in self._coords)
        return f"block ({bx},{by},{bz}) thread ({tx},{ty},{tz})"

    def fault(self, cls: type[PtxSimError], ins: Instr, lane: int, why: str) -> PtxSimError:
        return cls(self.entry.name, ins.line, ins.text, self.where(lane), why)

    def _thread_in_block(self, block: int, tid: int) -> str:
        tx = tid % self.block[0]
        ty = (tid // self.block[0]) % self.block[1]
        tz = tid // (self.block[0] * self.block[1])
        return f"thread ({tx},{ty},{tz})"

    # -- parameters ------------------------------------------------------------------------
    def _pack_params(self, params: list) -> np.ndarray:
        ent = self.entry
        if len(params) != len(ent.params):
            raise LaunchError(f"kernel '{ent.name}' takes {len(ent.params)} parameters "
                              f"({', '.join(p.type + ' ' + p.name for p in ent.params)}), "
                              f"got {len(params)}")
        buf = np.zeros(max(ent.param_bytes, 8), np.uint8)
        for p, v in zip(ent.params, params, strict=True):
            if p.type not in DT or p.type == "pred" or p.size != DT[p.type].itemsize:
                if isinstance(v, bytes | bytearray | np.ndarray):
                    raw = np.frombuffer(bytes(v) if not isinstance(v, np.ndarray) else v.tobytes(), np.uint8)
                    if raw.size != p.size:
                        raise LaunchError(f"parameter '{p.name}' needs {p.size} bytes, got {raw.size}")
                    buf[p.offset:p.offset + p.size] = raw
                    continue
                raise LaunchError(f"parameter '{p.name}' (.{p.type}, {p.size} bytes) needs bytes")
            dt = DT[p.type]
            try:
                if dt.kind in "iu":
                    iv = int(v)
                    info = np.iinfo(dt)
                    if not (info.min <= iv <= info.max) and not (dt.kind == "u" and -(info.max // 2 + 1) <= iv < 0):
                        raise ValueError(f"{iv} does not fit .{p.type}")
                    arr = np.array([iv & int(info.max) if dt.kind == "u" else iv], dt)
                else:
                    arr = np.array([v], dt)
            except (TypeError, ValueError) as e:
                raise LaunchError(f"parameter '{p.name}' (.{p.type}): {e}") from None
            buf[p.offset:p.offset + p.size] = arr.view(np.uint8)
        return buf

    # -- registers -------------------------------------------------------------------------
    def read(self, op: object, ty: str) -> np.ndarray | np.generic:
        dt = DT[ty]
        if isinstance(op, Reg):
            bits = self.regs.get(op.name)
            if bits is None:
                bits = self.regs[op.name] = np.zeros(self.T, self.reg_store[op.name])
            if ty == "pred":
                return bits if bits.dtype == bool else bits != 0
            if bits.dtype == bool:
                return bits.astype(dt)
            if bits.itemsize != dt.itemsize:
                bits = bits.astype(fp.uint_of(dt) if dt.itemsize > 1 else np.uint8)
            return bits.view(dt)
        if isinstance(op, NotPred):
            return ~self.read(Reg(op.name), "pred")
        if isinstance(op, Imm):
            return _imm_value(op, ty)
        if isinstance(op, Sym):
            if op.name in self.special:
                v = self.special[op.name]
                return np.asarray(v).astype(dt) if np.ndim(v) == 0 else v.astype(dt)
            if op.name in ("%clock", "%clock64"):
                return dt.type(self.clock)
            var = self.entry.shared.get(op.name)
            if var is not None:
                return dt.type(self.dyn_off if var.extern else var.offset)
            if op.name in self.global_addr:
                return dt.type(self.global_addr[op.name])
            lvar = self.entry.local.get(op.name)
            if lvar is not None:
                return dt.type(lvar.offset)
            raise PtxSimError(self.entry.name, 0, op.name, "operand",
                              f"'{op.name}' cannot be read as a value")
        if isinstance(op, Addr) or isinstance(op, Vec):
            raise PtxSimError(self.entry.name, 0, str(op), "operand", "not a value operand")
        raise AssertionError(op)

    def write(self, op: object, value: np.ndarray | np.generic, ty: str, m: np.ndarray) -> None:
        if isinstance(op, Sym) and op.name == "_":
            return
        if not isinstance(op, Reg):
            raise PtxSimError(self.entry.name, 0, str(op), "operand", "destination is not a register")
        store = self.reg_store[op.name]
        dst = self.regs.get(op.name)
        if dst is None:
            dst = self.regs[op.name] = np.zeros(self.T, store)
        v = np.asarray(value)
        if store.kind == "b":
            bits = v.astype(bool) if v.dtype != bool else v
        else:
            dt = DT[ty]
            v = v.astype(dt, copy=False) if v.dtype != dt else v
            if store.itemsize == dt.itemsize or dt.kind == "b":
                bits = v.view(store) if v.dtype != bool else v.astype(store)
            elif store.itemsize > dt.itemsize:
                if ty in SIGNED:
                    bits = v.astype(np.dtype(f"i{store.itemsize}")).view(store)
                else:
                    bits = v.view(fp.uint_of(dt) if dt.itemsize > 1 else np.uint8).astype(store)
            else:
                bits = v.view(fp.uint_of(dt)).astype(store)
        if self.full:
            np.copyto(dst, bits)  # every lane executes: no mask needed (4x cheaper)
        else:
            np.copyto(dst, bits, where=m)

    # -- addresses and memory ------------------------------------------------------------------
    def address(self, a: Addr, space: str) -> np.ndarray:
        if a.base is None:
            base: np.ndarray | int = 0
        elif a.base in self.entry.regs:
            ty = self.entry.regs[a.base]
            width = TYPE_BITS[ty]
            base = np.asarray(self.read(Reg(a.base), "u64" if width == 64 else "u32")).astype(np.uint64)
        elif a.base in self.entry.shared:
            var = self.entry.shared[a.base]
            off = self.dyn_off if var.extern else var.offset
            base = off + (SHARED_WINDOW if space == "generic" else 0)
            if space not in ("shared", "generic"):
                raise PtxSimError(self.entry.name, 0, a.base, "operand",
                                  f"shared variable '{a.base}' used with .{space}")
        elif a.base in self.entry.local:
            if space not in ("local", "generic"):
                raise PtxSimError(self.entry.name, 0, a.base, "operand",
                                  f"local variable '{a.base}' used with .{space}")
            base = self.entry.local[a.base].offset + (LOCAL_WINDOW if space == "generic" else 0)
        elif a.base in self.global_addr:
            if space == "shared":
                raise PtxSimError(self.entry.name, 0, a.base, "operand",
                                  f"global variable '{a.base}' used with .shared")
            base = self.global_addr[a.base]
        else:
            raise PtxSimError(self.entry.name, 0, a.base, "operand",
                              f"'{a.base}' is not an address register or variable")
        with np.errstate(over="ignore"):
            out = np.asarray(base, np.uint64) + np.uint64(a.offset & (2**64 - 1))
        return np.broadcast_to(out, (self.T,))

    def _generic_parts(self, addr: np.ndarray, m: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """Split a generic access by window: (space, lanes, state-space address) per part."""
        parts = []
        rest = m
        for space, base in (("shared", SHARED_WINDOW), ("local", LOCAL_WINDOW)):
            w = np.uint64(base)
            sel = rest & (addr >= w) & (addr < w + np.uint64(1 << 32))
            if sel.any():
                parts.append((space, sel, addr - w))
                rest = rest & ~sel
        if rest.any():
            parts.append(("global", rest, addr))
        return parts

    def _check_global(self, ins: Instr, lanes: np.ndarray, a: np.ndarray, size: int, what: str) -> None:
        if not a.size:
            return
        lo, hi = a.min(), a.max()
        one = self.memory.allocation_of(np.array([lo], np.uint64))[0]
        # fast path: the whole access range lies in one allocation
        if one >= 0 and int(hi) + size <= int(self.memory._ends[one]) and not _misaligned(a, size).any():
            return
        k = self.memory.allocation_of(a)
        end_ok = np.ones(a.shape, bool)
        if self.memory.allocations:
            kk = np.maximum(k, 0)
            end_ok = a + np.uint64(size) <= self.memory._ends[kk]
        bad = (k < 0) | ~end_ok
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise self.fault(OutOfBoundsError, ins, int(lanes[i]),
                             f"{what} of {size} bytes at {self.memory.describe(int(a[i]))}")
        mis = _misaligned(a, size)
        if mis.any():
            i = int(np.flatnonzero(mis)[0])
            raise self.fault(MisalignedAccessError, ins, int(lanes[i]),
                             f"{what} of {size} bytes at {int(a[i]):#x} is not {size}-byte aligned")

    def _check_local(self, ins: Instr, lanes: np.ndarray, a: np.ndarray, size: int, what: str) -> None:
        bad = a + np.uint64(size) > np.uint64(self.Lsz)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise self.fault(OutOfBoundsError, ins, int(lanes[i]),
                             f"{what} of {size} bytes at local offset {int(a[i])} is outside the "
                             f"thread's {self.Lsz} bytes of .local memory")
        mis = _misaligned(a, size)
        if mis.any():
            i = int(np.flatnonzero(mis)[0])
            raise self.fault(MisalignedAccessError, ins, int(lanes[i]),
                             f"{what} of {size} bytes at local offset {int(a[i])} is not "
                             f"{size}-byte aligned")

    def _shared_var_at(self, off: int) -> str:
        best = None
        for v in self.entry.shared.values():
            start = self.dyn_off if v.extern else v.offset
            if start <= off and (best is None or start >= best[1]):
                best = (v.name, start)
        return f"{best[0]}+{off - best[1]}" if best else f"{off}"

    def _check_shared(self, ins: Instr, lanes: np.ndarray, a: np.ndarray, size: int, what: str) -> None:
        bad = a + np.uint64(size) > np.uint64(self.S)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise self.fault(OutOfBoundsError, ins, int(lanes[i]),
                             f"{what} of {size} bytes at shared offset {int(a[i])} "
                             f"({self._shared_var_at(int(a[i]))}) is outside the block's {self.S} "
                             "bytes of shared memory")
        mis = _misaligned(a, size)
        if mis.any():
            i = int(np.flatnonzero(mis)[0])
            raise self.fault(MisalignedAccessError, ins, int(lanes[i]),
                             f"{what} of {size} bytes at shared offset {int(a[i])} "
                             f"({self._shared_var_at(int(a[i]))}) is not {size}-byte aligned")

    # Per shared unit (G bytes), the last writer and the last reader(s) are packed in one int64:
    # barrier epoch (24 bits, signed) | warp-sync stamp (10) | instruction (19) | thread + 2 (11);
    # thread -1 = none, -2 = several readers.  One gather and one scatter per access.
    _TID_BITS = 11
    _INS_SHIFT = 11
    _INS_MASK = (1 << 19) - 1
    _STAMP_SHIFT = 30
    _STAMP_MASK = (1 << 10) - 1
    _EP_SHIFT = 40

    def _pack_state(self, ep: np.ndarray, ins_index: int, t: np.ndarray,
                    stamp: np.ndarray | int = 0) -> np.ndarray:
        return (np.asarray(ep, np.int64) << self._EP_SHIFT) | \
            ((np.asarray(stamp, np.int64) & self._STAMP_MASK) << self._STAMP_SHIFT) | \
            (np.int64(ins_index & self._INS_MASK) << self._INS_SHIFT) | (np.asarray(t, np.int64) + 2)

    @classmethod
    def _state_tid(cls, st: np.ndarray) -> np.ndarray:
        return (st & ((1 << cls._TID_BITS) - 1)) - 2

    @classmethod
    def _state_ins(cls, st: np.ndarray | int) -> np.ndarray | int:
        return (st >> cls._INS_SHIFT) & cls._INS_MASK

    def _lane_state(self) -> None:
        """Per lane, its packed state without the instruction (``_mine``) and the lowest packed
        value of its block's current barrier epoch (``_epoch_lo``); refreshed at every bar.sync
        and bar.warp.sync, so each shared access only gathers them."""
        ep = self.epoch[self.block_of].astype(np.int64)
        stamp = self.wsync[np.arange(self.T) // WARP]
        self._mine = self._pack_state(ep, 0, self._tid64, stamp)
        self._epoch_lo = ep << self._EP_SHIFT

    def _unordered(self, st: np.ndarray, ep: np.ndarray, t: np.ndarray, now: np.ndarray) -> np.ndarray:
        """Accesses recorded in ``st`` that race with thread ``t``: same barrier epoch, another
        thread, and not ordered by a bar.warp.sync of their common warp since."""
        same = (st >> self._EP_SHIFT) == ep
        if not same.any():  # the common case: last touched before the latest bar.sync
            return same
        other = self._state_tid(st)
        same &= (other != t) & (other != -1)
        if not same.any():
            return same
        stamp = (st >> self._STAMP_SHIFT) & self._STAMP_MASK
        synced = (other >= 0) & ((other >> 5) == (t >> 5)) & (stamp != now)
        return same & ~synced

    def _track(self, ins: Instr, lanes: np.ndarray, fb: np.ndarray, write: bool,
               writer_ins: int | None = None) -> None:
        """Race bookkeeping for the shared units ``fb`` ([n, k] flat unit indices, ``_units``)
        touched by ``lanes``.  The common case costs a few whole-array comparisons: a state
        below the block's current epoch (``_epoch_lo``) is ordered by a bar.sync already; only
        states of this epoch (or never written, for reads) take the detailed checks."""
        if not lanes.size:
            return
        every = lanes.size == self.T  # lanes are distinct: all of them, no gather needed
        lo = (self._epoch_lo if every else self._epoch_lo[lanes])[:, None]
        idx = ins.index if writer_ins is None else writer_ins
        own = (self._mine if every else self._mine[lanes])[:, None] | \
            np.int64((idx & self._INS_MASK) << self._INS_SHIFT)

        def detail() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            """(thread, epoch, warp-sync stamp) of each lane, for ``_unordered``."""
            t = self._tid64[lanes][:, None]
            return t, lo >> self._EP_SHIFT, (own >> self._STAMP_SHIFT) & self._STAMP_MASK

        w = self.w_state[fb]
        # unsigned: a never-written unit (epoch -1, negative) compares above every bound
        if not write and not (w.view(np.uint64) < lo.view(np.uint64)).all() or \
                write and (w >= lo).any():
            t, ep, now = detail()
            if not write and self.check_init:
                never = w < 0  # epoch -1 (the top field): never written in this launch
                if never.any():
                    i, j = (int(x[0]) for x in np.nonzero(never))
                    raise self.fault(UninitializedSharedError, ins, int(lanes[i]),
                                     f"reads shared byte "
                                     f"{self._shared_var_at(self._byte_off(fb[i, j]))} "
                                     "that no thread of its block has written in this launch")
            conflict = self._unordered(w, ep, t, now)
            if conflict.any():
                self._race(ins, lanes, fb, conflict, self.w_state, "wrote", write, writer_ins)
        r = self.r_state[fb]
        seen = None
        if (r >= lo).any():  # read in this epoch already (by this thread or others)
            t, ep, now = detail()
            seen = self._unordered(r, ep, t, now)
        mine = np.broadcast_to(own, fb.shape)
        if write:
            if seen is not None and seen.any():
                self._race(ins, lanes, fb, seen, self.r_state, "read", write, writer_ins)
            self.w_state[fb] = mine
            dup = self.w_state[fb] != mine
            if dup.any():
                i, j = (int(x[0]) for x in np.nonzero(dup))
                other = int(self._state_tid(self.w_state[fb[i, j]]))
                raise self.fault(SharedMemoryRaceError, ins, int(lanes[i]),
                                 f"writes shared byte {self._shared_var_at(self._byte_off(fb[i, j]))} "
                                 f"that {self._thread_in_block(0, other)} writes in the same "
                                 "instruction")
        else:
            self.r_state[fb] = mine
            several = self.r_state[fb] != mine
            if seen is not None:
                several |= seen
            if several.any():
                sel = fb[several]
                # thread field 0 encodes -2: several readers in this epoch
                self.r_state[sel] = self.r_state[sel] & ~np.int64((1 << self._TID_BITS) - 1)

    def _atomic_touch(self, ins: Instr, lanes: np.ndarray, fb: np.ndarray) -> None:
        """Atomics take no part in race tracking, but they read the old value: it must have been
        written before."""
        w = self.w_state[fb]
        never = (w >> self._EP_SHIFT) == -1
        if never.any() and self.check_init:
            i, j = (int(x[0]) for x in np.nonzero(never))
            raise self.fault(UninitializedSharedError, ins, int(lanes[i]),
                             f"atomically updates shared byte "
                             f"{self._shared_var_at(self._byte_off(fb[i, j]))} that no thread of "
                             "its block has written in this launch")

    def _byte_off(self, flat: int) -> int:
        return int(flat) * self.G % self.S_pad

    def _race(self, ins: Instr, lanes: np.ndarray, fb: np.ndarray, bad: np.ndarray,
              state: np.ndarray, how: str, write: bool, writer_ins: int | None) -> None:
        i, j = (int(x[0]) for x in np.nonzero(bad))
        flat = int(fb[i, j])
        other_tid = int(self._state_tid(state[flat]))
        other = self.entry.instrs[int(self._state_ins(state[flat]))]
        blk = int(self.block_of[lanes[i]])
        other_desc = self._thread_in_block(blk, other_tid) if other_tid >= 0 else "other threads"
        verb = "writes" if write else "reads"
        if writer_ins is not None:
            src = self.entry.instrs[writer_ins]
            verb = f"receives (cp.async at line {src.line} `{src.text}`, landing at this wait)"
        raise self.fault(SharedMemoryRaceError, ins, int(lanes[i]),
                         f"{verb} shared byte {self._shared_var_at(self._byte_off(flat))} that "
                         f"{other_desc} {how} at line {other.line} `{other.text}` with no bar.sync "
                         "in between")

    def _flat_bytes(self, lanes: np.ndarray, a: np.ndarray, size: int) -> np.ndarray:
        base = self.block_of[lanes].astype(np.int64) * self.S_pad + a.astype(np.int64)
        return base[:, None] + np.arange(size, dtype=np.int64)[None, :]

    def _units(self, lanes: np.ndarray, a: np.ndarray, size: int) -> np.ndarray:
        """Flat race-state unit indices ([n, size / G]) of a shared access of ``size`` bytes at
        offsets ``a`` (aligned to ``size``: checked before).  An access that does not cover
        whole units splits every unit first, each part inheriting the unit's history."""
        g = self.G
        while g > 1 and (size % g or (a & np.uint64(g - 1)).any()):
            g //= 2
        if g != self.G:
            self.w_state = np.repeat(self.w_state, self.G // g)
            self.r_state = np.repeat(self.r_state, self.G // g)
            self.G = g
        blk = self._block_byte if lanes.size == self.T else self._block_byte[lanes]
        base = (blk + a.astype(np.int64)) // g
        return base[:, None] + np.arange(size // g, dtype=np.int64)[None, :]

    def load(self, ins: Instr, space: str, addr: np.ndarray, m: np.ndarray, ty: str,
             vec: int) -> np.ndarray:
        esize = DT[ty].itemsize
        ut = fp.uint_of(DT[ty]) if esize > 1 else np.dtype(np.uint8)
        if space == "generic":
            out = np.zeros((self.T, vec), ut)
            for part, sel, a2 in self._generic_parts(addr, m):
                out[sel] = self.load(ins, part, a2, sel, ty, vec)[sel]
            return out
        lanes = np.flatnonzero(m)
        every = lanes.size == self.T  # every lane loads: no gathers and scatters by lane
        a = addr if every else addr[lanes]
        size = esize * vec
        if space == "global":
            self._check_global(ins, lanes, a, size, "load")
            view = self.memory.data.view(ut)
            idx = _elem_index(a - np.uint64(GlobalMemory.BASE), esize)
        elif space == "local":
            self._check_local(ins, lanes, a, size, "load")
            view = self.lmem.view(ut)
            idx = lanes * (self.L_pad // esize) + _elem_index(a, esize)
        else:
            self._check_shared(ins, lanes, a, size, "load")
            if self.S:
                self._track(ins, lanes, self._units(lanes, a, size), write=False)
            view = self.smem.view(ut)
            blk = self._block_byte if every else self._block_byte[lanes]
            idx = blk // esize + _elem_index(a, esize)
        got = view[idx[:, None] + np.arange(vec)[None, :]]
        if every:
            return got
        out = np.zeros((self.T, vec), ut)
        out[lanes] = got
        return out

    def store(self, ins: Instr, space: str, addr: np.ndarray, m: np.ndarray, ty: str,
              vals: np.ndarray) -> None:
        esize = DT[ty].itemsize
        vec = vals.shape[1]
        if space == "generic":
            for part, sel, a2 in self._generic_parts(addr, m):
                self.store(ins, part, a2, sel, ty, vals)
            return
        lanes = np.flatnonzero(m)
        a = addr[lanes]
        size = esize * vec
        if space == "global":
            self._check_global(ins, lanes, a, size, "store")
            view = self.memory.data.view(vals.dtype)
            idx = _elem_index(a - np.uint64(GlobalMemory.BASE), esize)
        elif space == "local":
            self._check_local(ins, lanes, a, size, "store")
            view = self.lmem.view(vals.dtype)
            idx = lanes * (self.L_pad // esize) + _elem_index(a, esize)
        else:
            self._check_shared(ins, lanes, a, size, "store")
            if self.S:
                self._track(ins, lanes, self._units(lanes, a, size), write=True)
            view = self.smem.view(vals.dtype)
            idx = (self.block_of[lanes] * (self.S_pad // esize) + _elem_index(a, esize))
        where = idx[:, None] + np.arange(vec)[None, :]
        mine = vals[lanes]
        view[where] = mine
        if space == "global":
            # two lanes of this store hit one element with different values: the result depends
            # on which write lands last (an indexing bug; identical values are benign)
            clash = view[where] != mine
            if clash.any():
                self._write_conflict(ins, lanes, where, mine, clash, a, esize)

    def _write_conflict(self, ins: Instr, lanes: np.ndarray, where: np.ndarray, mine: np.ndarray,
                        clash: np.ndarray, a: np.ndarray, esize: int) -> None:
        i, k = (int(x[0]) for x in np.nonzero(clash))
        other = np.flatnonzero((where == where[i, k]).any(1) & (np.arange(lanes.size) != i))
        who = self.where(int(lanes[other[-1]])) if other.size else "another thread"
        addr = int(a[i]) + k * esize
        raise self.fault(GlobalWriteConflictError, ins, int(lanes[i]),
                         f"stores to {self.memory.describe(addr)} in the same instruction as "
                         f"{who}, with a different value")

    # -- atomics -------------------------------------------------------------------------------
    def atomic(self, ins: Instr, space: str, addr: np.ndarray, m: np.ndarray, ty: str, op: str,
               b: np.ndarray, c: np.ndarray | None) -> np.ndarray:
        """Atomics serialised in lane order: lanes hitting the same element apply one after
        another, so returned old values and float rounding follow that order."""
        dt = DT[ty]
        esize = dt.itemsize
        old = np.zeros(self.T, dt)
        if space == "generic":
            for part, sel, a2 in self._generic_parts(addr, m):
                if part == "local":
                    lane = int(np.flatnonzero(sel)[0])
                    raise self.fault(OutOfBoundsError, ins, lane,
                                     "atomic on a generic address in the thread's .local window")
                old[sel] = self.atomic(ins, part, a2, sel, ty, op, b, c)[sel]
            return old
        lanes = np.flatnonzero(m)
        if not lanes.size:
            return old
        a = addr[lanes]
        if space == "global":
            self._check_global(ins, lanes, a, esize, "atomic")
            arr = self.memory.data.view(dt)
            e = _elem_index(a - np.uint64(GlobalMemory.BASE), esize)
        else:
            self._check_shared(ins, lanes, a, esize, "atomic")
            if self.S:
                self._atomic_touch(ins, lanes, self._units(lanes, a, esize))
            arr = self.smem.view(dt)
            e = self.block_of[lanes] * (self.S_pad // esize) + _elem_index(a, esize)
        bv = np.asarray(b[lanes], dt)
        cv = np.asarray(c[lanes], dt) if c is not None else None
        order = np.argsort(e, kind="stable")
        es = e[order]
        first = np.ones(es.size, bool)
        first[1:] = es[1:] != es[:-1]
        starts = np.flatnonzero(first)
        gid = np.cumsum(first) - 1
        rank_sorted = np.arange(es.size) - starts[gid]
        rank = np.empty_like(rank_sorted)
        rank[order] = rank_sorted
        res = np.zeros(lanes.size, dt)
        ufunc = ATOMIC_UFUNC.get(op)
        with np.errstate(all="ignore"):
            if ufunc is not None and rank.max() > 32 and starts.size <= 64:
                bs = bv[order]
                ends = [*starts[1:], es.size]
                out_sorted = np.zeros(es.size, dt)
                for s0, s1 in zip(starts, ends, strict=True):
                    seq = np.concatenate([arr[es[s0]:es[s0] + 1], bs[s0:s1]]).astype(dt)
                    acc = ufunc.accumulate(seq, dtype=dt)
                    out_sorted[s0:s1] = acc[:-1]
                    arr[es[s0]] = acc[-1]
                res[order] = out_sorted
            else:
                fn = ATOMIC_FN[op]
                for r in range(int(rank.max()) + 1):
                    sel = rank == r
                    ee = e[sel]
                    o = arr[ee].copy()
                    arr[ee] = fn(o, bv[sel], cv[sel] if cv is not None else None).astype(dt)
                    res[sel] = o
        old[lanes] = res
        return old

    # -- cp.async --------------------------------------------------------------------------
    def cp_async(self, ins: Instr, daddr: np.ndarray, saddr: np.ndarray, m: np.ndarray, n: int,
                 src_size: np.ndarray | None) -> None:
        lanes = np.flatnonzero(m)
        if not lanes.size:
            return
        d, s = daddr[lanes], saddr[lanes]
        self._check_shared(ins, lanes, d, n, "cp.async destination")
        nsrc = np.full(lanes.size, n, np.int64) if src_size is None else src_size[lanes]
        if (nsrc > n).any() or (nsrc < 0).any():
            i = int(np.flatnonzero((nsrc > n) | (nsrc < 0))[0])
            raise self.fault(OutOfBoundsError, ins, int(lanes[i]),
                             f"cp.async src-size {int(nsrc[i])} exceeds cp-size {n}")
        reads = nsrc > 0
        if reads.any():
            self._check_global(ins, lanes[reads], s[reads], n, "cp.async source")
        # only the first src-size bytes are read from global; the rest are zero-filled
        off = (s - np.uint64(GlobalMemory.BASE)).astype(np.int64)
        j = np.arange(n, dtype=np.int64)[None, :]
        take = j < nsrc[:, None]
        src_idx = np.where(take, off[:, None] + j, 0)
        data = np.where(take, self.memory.data[src_idx] if self.memory.data.size else 0, 0).astype(np.uint8)
        self.cp_inflight.append((lanes, d, data, ins.index,
                                 self.cp_committed[lanes].copy()))

    def cp_commit(self, m: np.ndarray) -> None:
        """cp.async.commit_group: each executing thread closes its current group."""
        self.cp_committed[m] += 1

    def cp_wait(self, ins: Instr, m: np.ndarray, keep: int) -> None:
        """cp.async.wait_group keep: for each executing thread, every committed group but the
        ``keep`` most recent completes; its bytes land in shared memory now (and count as written
        by the issuing thread at this point for the race check)."""
        still: list[tuple] = []
        for lanes, d, data, src, group in self.cp_inflight:
            done = m[lanes] & (group < self.cp_committed[lanes] - keep)
            if done.any():
                ln, dd = lanes[done], d[done]
                size = data.shape[1]
                self._track(ins, ln, self._units(ln, dd, size), write=True, writer_ins=src)
                self.smem[self._flat_bytes(ln, dd, size)] = data[done]
            if not done.all():
                rest = ~done
                still.append((lanes[rest], d[rest], data[rest], src, group[rest]))
        self.cp_inflight = still

    # -- warp collectives ----------------------------------------------------------------------
    def _member_check(self, ins: Instr, m: np.ndarray, mm: object) -> None:
        mv = self.read(mm, "u32")
        lane = self.special["%laneid"]
        if np.ndim(mv) == 0 and int(mv) == 0xFFFF_FFFF:
            # the full mask: every live lane of a participating warp must be here
            if (self.alive & ~m).any():
                self._missing_check(ins, m, self.alive)
            return
        mask = np.broadcast_to(np.asarray(mv).astype(np.uint32), (self.T,))
        inmask = ((mask >> lane) & 1).astype(bool)
        bad = m & ~inmask
        if bad.any():
            lane_i = int(np.flatnonzero(bad)[0])
            raise self.fault(WarpSyncError, ins, lane_i,
                             f"executing lane {int(lane[lane_i])} is not in membermask "
                             f"{int(mask[lane_i]):#010x}")
        self._missing_check(ins, m, inmask & self.alive)

    def _missing_check(self, ins: Instr, m: np.ndarray, named: np.ndarray) -> None:
        """Lanes named in the membermask that are alive but not executing would deadlock real
        hardware (or read undefined values): a fault for warps that do take part."""
        missing = named & ~m & np.repeat(m.reshape(self.W, WARP).any(1), WARP)
        if missing.any():
            lane_i = int(np.flatnonzero(missing)[0])
            raise self.fault(WarpSyncError, ins, lane_i,
                             "is named in membermask but did not reach this instruction "
                             "(divergent or predicated off)")

    def shfl(self, ins: Instr, m: np.ndarray, mode: str, dst: object, p: object, a: object,
             b: object, c: object, mm: object) -> None:
        self._member_check(ins, m, mm)
        lane = self.special["%laneid"].astype(np.int64)
        av = np.broadcast_to(np.asarray(self.read(a, "b32")), (self.T,))
        bval = np.broadcast_to(np.asarray(self.read(b, "u32")).astype(np.int64) & 31, (self.T,))
        cv = np.broadcast_to(np.asarray(self.read(c, "u32")).astype(np.int64), (self.T,))
        cval = cv & 31
        seg = (cv >> 8) & 31
        max_lane = (lane & seg) | (cval & ~seg)
        min_lane = lane & seg
        if mode == "up":
            j = lane - bval
            ok = j >= max_lane
        elif mode == "down":
            j = lane + bval
            ok = j <= max_lane
        elif mode == "bfly":
            j = lane ^ bval
            ok = j <= max_lane
        else:
            j = min_lane | (bval & ~seg)
            ok = j <= max_lane
        j = np.where(ok, j, lane)
        src = self.warp_base + j
        bad = m & ~m[src]
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise self.fault(WarpSyncError, ins, i,
                             f"reads lane {int(j[i])}, which does not execute this shfl.sync "
                             "(the value is undefined on hardware)")
        self.write(dst, av[src], "b32", m)
        if p is not None:
            self.write(p, ok, "pred", m)

    def vote(self, ins: Instr, m: np.ndarray, mode: str, dst: object, a: object, mm: object) -> None:
        self._member_check(ins, m, mm)
        pv = np.broadcast_to(np.asarray(self.read(a, "pred")), (self.T,)) & m
        mw = m.reshape(self.W, WARP)
        pw = pv.reshape(self.W, WARP)
        if mode == "ballot":
            weights = (np.uint64(1) << np.arange(WARP, dtype=np.uint64))
            word = (pw.astype(np.uint64) * weights).sum(1).astype(np.uint32)
            self.write(dst, np.repeat(word, WARP), "b32", m)
            return
        if mode == "all":
            r = (pw | ~mw).all(1)
        elif mode == "any":
            r = pw.any(1)
        else:
            r = (pw | ~mw).all(1) | ~pw.any(1)
        self.write(dst, np.repeat(r, WARP), "pred", m)

    def warp_sync(self, ins: Instr, m: np.ndarray, mm: object) -> None:
        """bar.warp.sync: orders the shared-memory accesses of the warp's threads before it
        with those after it (the race model stamps accesses with a per-warp sync count)."""
        self._member_check(ins, m, mm)
        self.wsync[m.reshape(self.W, WARP).any(1)] += 1
        self._lane_state()

    def _full_warps(self, ins: Instr, m: np.ndarray) -> np.ndarray:
        """Warps executing a ``.sync.aligned`` collective; every lane of each must take part."""
        mw = m.reshape(self.W, WARP)
        act = mw.any(1)
        partial = act & ~mw.all(1)
        if partial.any():
            w = int(np.flatnonzero(partial)[0])
            lane_i = w * WARP + int(np.flatnonzero(~mw[w])[0])
            raise self.fault(WarpSyncError, ins, lane_i,
                             "does not execute this warp-wide .sync.aligned instruction with the "
                             "rest of its warp (all 32 lanes must; partial warps cannot)")
        return np.flatnonzero(act)

    def mma(self, ins: Instr, m: np.ndarray, shape: str, kind: str, dst: Vec, a: Vec, b: Vec,
            c: Vec, sat: bool = False, dty: str = "f32", cty: str = "f32") -> None:
        warps = self._full_warps(ins, m)
        if not warps.size:
            return
        if shape == "m16n8k32":
            self._mma_8bit(warps, m, kind, dst, a, b, c, sat)
            return
        lay = MMA_LAYOUT[(shape, kind)]

        def regs(v: Vec, ty: str) -> np.ndarray:
            cols = [np.broadcast_to(np.asarray(self.read(r, ty)), (self.T,)).reshape(self.W, WARP)[warps]
                    for r in v.items]
            return np.stack(cols, axis=-1)  # [Wa, 32, nregs]

        nw = warps.size
        if kind == "tf32":
            av = (regs(a, "b32") & np.uint32(0xFFFFE000)).view(np.float32).astype(np.float64)
            bv = (regs(b, "b32") & np.uint32(0xFFFFE000)).view(np.float32).astype(np.float64)
        else:
            el = fp.F16 if kind == "f16" else fp.BF16
            ab = regs(a, "b32")
            bb = regs(b, "b32")
            av = np.stack(_halves(ab, el), axis=-1)  # [Wa, 32, 4, 2]
            bv = np.stack(_halves(bb, el), axis=-1)
        if cty == "f16":
            cw = regs(c, "b32")
            cv = np.stack(_halves(cw, fp.F16), axis=-1).reshape(nw, WARP, 4)
        else:
            cv = regs(c, "f32").astype(np.float64)
        M, N, K = lay["mnk"]
        A = np.zeros((nw, M, K))
        B = np.zeros((nw, K, N))
        C = np.zeros((nw, M, N))
        A[:, lay["a_row"], lay["a_col"]] = av
        B[:, lay["b_row"], lay["b_col"]] = bv
        C[:, lay["c_row"], lay["c_col"]] = cv
        exact = A @ B + C
        if dty == "f16":
            dv = fp.round_f64(exact[:, lay["c_row"], lay["c_col"]], fp.F16, "rn")  # [Wa, 32, 4]
            for i, r in enumerate(dst.items):
                full = np.zeros((self.W, WARP), np.uint32)
                full[warps] = _pack_halves(dv[..., 2 * i], dv[..., 2 * i + 1])
                self.write(r, full.reshape(-1), "b32", m)
            return
        dv = exact.astype(np.float32)[:, lay["c_row"], lay["c_col"]]  # [Wa, 32, 4]
        for i, r in enumerate(dst.items):
            full = np.zeros((self.W, WARP), np.float32)
            full[warps] = dv[..., i]
            self.write(r, full.reshape(-1), "f32", m)

    def _mma_8bit(self, warps: np.ndarray, m: np.ndarray, kind: str, dst: Vec, a: Vec, b: Vec,
                  c: Vec, sat: bool) -> None:
        """m16n8k32 with 8-bit operands (the PTX ISA gives s8/u8 and e4m3/e5m2 one layout).
        Integers: exact products, s32 sums that wrap (or saturate with .satfinite).  FP8: exact
        products accumulated in float64 with the f32 C, one rounding to f32."""
        lay = MMA_LAYOUT[("m16n8k32", "i8")]
        at, bt = kind.split(".")
        fp8 = at in ("e4m3", "e5m2")
        formats = {"s8": np.dtype(np.int8), "u8": np.dtype(np.uint8),
                   "e4m3": np.dtype(ml_dtypes.float8_e4m3fn), "e5m2": np.dtype(ml_dtypes.float8_e5m2)}
        acc = np.float64 if fp8 else np.int64

        def bytes_of(v: Vec, fmt: str) -> np.ndarray:
            words = np.stack([np.broadcast_to(np.asarray(self.read(r, "b32")), (self.T,))
                              .reshape(self.W, WARP)[warps] for r in v.items], axis=-1)
            raw = words.astype("<u4").view(np.uint8).reshape(*words.shape, 4)
            return raw.view(formats[fmt]).astype(acc)

        av = bytes_of(a, at)   # [Wa, 32, 4 regs, 4 bytes]
        bv = bytes_of(b, bt)   # [Wa, 32, 2 regs, 4 bytes]
        cty = "f32" if fp8 else "s32"
        cv = np.stack([np.broadcast_to(np.asarray(self.read(r, cty)), (self.T,))
                       .reshape(self.W, WARP)[warps] for r in c.items], axis=-1).astype(acc)
        nw = warps.size
        A = np.zeros((nw, 16, 32), acc)
        B = np.zeros((nw, 32, 8), acc)
        C = np.zeros((nw, 16, 8), acc)
        A[:, lay["a_row"], lay["a_col"]] = av
        B[:, lay["b_row"], lay["b_col"]] = bv
        C[:, lay["c_row"], lay["c_col"]] = cv
        D = A @ B + C
        if fp8:
            dvf = D.astype(np.float32)[:, lay["c_row"], lay["c_col"]]
            for i, r in enumerate(dst.items):
                full = np.zeros((self.W, WARP), np.float32)
                full[warps] = dvf[..., i]
                self.write(r, full.reshape(-1), "f32", m)
            return
        if sat:
            D = np.clip(D, -(2**31), 2**31 - 1)
        D = (D & 0xFFFF_FFFF).astype(np.uint32).view(np.int32)
        dv = D[:, lay["c_row"], lay["c_col"]]
        for i, r in enumerate(dst.items):
            full = np.zeros((self.W, WARP), np.int32)
            full[warps] = dv[..., i]
            self.write(r, full.reshape(-1), "s32", m)

    def trap(self, ins: Instr, m: np.ndarray) -> None:
        lane = int(np.flatnonzero(m)[0])
        raise self.fault(TrapError, ins, lane, "executed trap (a device-side assertion failed)")

    def ldmatrix(self, ins: Instr, m: np.ndarray, n: int, trans: bool, items: list,
                 a: Addr) -> None:
        warps = self._full_warps(ins, m)
        if not warps.size:
            return
        addr = self.address(a, "shared").reshape(self.W, WARP)[warps]  # [Wa, 32]
        lanes = (warps[:, None] * WARP + np.arange(WARP)[None, :])
        g = np.arange(WARP) // 4
        t = np.arange(WARP) % 4
        for i, r in enumerate(items):
            rows = addr[:, 8 * i:8 * i + 8].reshape(-1)
            row_lanes = lanes[:, 8 * i:8 * i + 8].reshape(-1)
            self._check_shared(ins, row_lanes, rows, 16, "ldmatrix row read")
            fb = self._flat_bytes(row_lanes, rows, 16)
            if self.S:
                self._track(ins, row_lanes, self._units(row_lanes, rows, 16), write=False)
            mat = self.smem[fb].reshape(warps.size, 8, 16).view(np.uint16)  # [Wa, 8 rows, 8 cols]
            if trans:
                e0, e1 = mat[:, 2 * t, g], mat[:, 2 * t + 1, g]
            else:
                e0, e1 = mat[:, g, 2 * t], mat[:, g, 2 * t + 1]
            word = e0.astype(np.uint32) | (e1.astype(np.uint32) << np.uint32(16))
            full = np.zeros((self.W, WARP), np.uint32)
            full[warps] = word
            self.write(r, full.reshape(-1), "b32", m)

    # -- barriers ------------------------------------------------------------------------------
    def barrier(self, ins: Instr, m: np.ndarray) -> None:
        mb = m.reshape(self.B, self.P)
        ab = self.alive.reshape(self.B, self.P)
        arrived = mb.any(1)
        missing = ab & ~mb & arrived[:, None]
        if missing.any():
            blk, t = (int(x[0]) for x in np.nonzero(missing))
            raise self.fault(BarrierDivergenceError, ins, blk * self.P + t,
                             "has not reached this bar.sync with the rest of its block (it is on "
                             "another path of a divergent branch or predicated off); real hardware "
                             "would hang or misbehave")
        self.epoch[arrived] += 1
        self._lane_state()


def _misaligned(a: np.ndarray, size: int) -> np.ndarray:
    """Per-lane ``a % size != 0``; access sizes are powers of two, so a mask test suffices."""
    if size & (size - 1) == 0:
        return (a & np.uint64(size - 1)) != 0
    return (a % np.uint64(size)) != 0


def _elem_index(off: np.ndarray, esize: int) -> np.ndarray:
    """Element index of aligned byte offsets (a shift: element sizes are powers of two)."""
    return (off >> np.uint64(esize.bit_length() - 1)).astype(np.int64)


def _pack_halves(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return lo.view(np.uint16).astype(np.uint32) | (hi.view(np.uint16).astype(np.uint32) << np.uint32(16))


def _halves(words: np.ndarray, el: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    lo = (words & np.uint32(0xFFFF)).astype(np.uint16).view(el).astype(np.float64)
    hi = (words >> np.uint32(16)).astype(np.uint16).view(el).astype(np.float64)
    return lo, hi


def _mma_layouts() -> dict[tuple[str, str], dict]:
    """Fragment layouts from the PTX ISA (mma.sync .m16n8k16 f16/bf16 and .m16n8k8 tf32):
    groupID = laneid >> 2, threadID_in_group = laneid % 4."""
    lane = np.arange(WARP)
    g, t = lane // 4, lane % 4
    out = {}
    # C/D (16x8 f32): c0,c1 at row g, c2,c3 at row g+8; col 2t + (i & 1)
    ci = np.arange(4)
    c_row = g[:, None] + 8 * (ci[None, :] >= 2)
    c_col = 2 * t[:, None] + (ci[None, :] & 1)
    # A (16x16 f16/bf16): element i = 2*reg + half; row g (+8 for i in 2,3,6,7), col 2t+(i&1) (+8 for i>=4)
    ai = np.arange(8).reshape(4, 2)
    a_row = g[:, None, None] + 8 * ((ai[None] // 2) % 2)
    a_col = 2 * t[:, None, None] + (ai[None] & 1) + 8 * (ai[None] >= 4)
    # B (16x8): element i = 2*reg + half; row 2t + (i&1) (+8 for i>=2), col g
    bi = np.arange(4).reshape(2, 2)
    b_row = 2 * t[:, None, None] + (bi[None] & 1) + 8 * (bi[None] >= 2)
    b_col = np.broadcast_to(g[:, None, None], b_row.shape)
    for kind in ("f16", "bf16"):
        out[("m16n8k16", kind)] = {"mnk": (16, 8, 16), "a_row": a_row, "a_col": a_col,
                                    "b_row": b_row, "b_col": b_col, "c_row": c_row, "c_col": c_col}
    # m16n8k8 f16/bf16: A a0a1 row g, a2a3 row g+8, col 2t + (i&1); B b0b1 row 2t + i, col g
    ai = np.arange(4).reshape(2, 2)
    a8_row = g[:, None, None] + 8 * (ai[None] // 2)
    a8_col = 2 * t[:, None, None] + (ai[None] & 1)
    bi8 = np.arange(2).reshape(1, 2)
    b8_row = 2 * t[:, None, None] + bi8[None]
    b8_col = np.broadcast_to(g[:, None, None], b8_row.shape)
    for kind in ("f16", "bf16"):
        out[("m16n8k8", kind)] = {"mnk": (16, 8, 8), "a_row": a8_row, "a_col": a8_col,
                                   "b_row": b8_row, "b_col": b8_col, "c_row": c_row, "c_col": c_col}
    # tf32 m16n8k8: A a0..a3 row g (+8 for a1,a3), col t (+4 for a2,a3); B b0,b1 row t (+4 for b1), col g
    ti = np.arange(4)
    a_row = g[:, None] + 8 * (ti[None, :] % 2)
    a_col = t[:, None] + 4 * (ti[None, :] >= 2)
    bi2 = np.arange(2)
    b_row = t[:, None] + 4 * bi2[None, :]
    b_col = np.broadcast_to(g[:, None], b_row.shape)
    out[("m16n8k8", "tf32")] = {"mnk": (16, 8, 8), "a_row": a_row, "a_col": a_col,
                                "b_row": b_row, "b_col": b_col, "c_row": c_row, "c_col": c_col}
    # m16n8k32 s8/u8: element i = 4*reg + byte; A row g (+8 for regs 1,3), col 4t + byte
    # (+16 for regs 2,3); B row 4t + byte (+16 for reg 1), col g
    ii = np.arange(16).reshape(4, 4)
    a_row = g[:, None, None] + 8 * ((ii[None] // 4) % 2)
    a_col = 4 * t[:, None, None] + (ii[None] & 3) + 16 * (ii[None] >= 8)
    jj = np.arange(8).reshape(2, 4)
    b_row = 4 * t[:, None, None] + (jj[None] & 3) + 16 * (jj[None] >= 4)
    b_col = np.broadcast_to(g[:, None, None], b_row.shape)
    out[("m16n8k32", "i8")] = {"mnk": (16, 8, 32), "a_row": a_row, "a_col": a_col,
                               "b_row": b_row, "b_col": b_col, "c_row": c_row, "c_col": c_col}
    return out


MMA_LAYOUT = _mma_layouts()

ATOMIC_UFUNC = {"add": np.add, "min": np.minimum, "max": np.maximum, "and": np.bitwise_and,
                "or": np.bitwise_or, "xor": np.bitwise_xor}


def _inc(o: np.ndarray, b: np.ndarray, c: object) -> np.ndarray:
    return np.where(o >= b, 0, o + 1)


def _dec(o: np.ndarray, b: np.ndarray, c: object) -> np.ndarray:
    return np.where((o == 0) | (o > b), b, o - 1)


ATOMIC_FN = {
    "add": lambda o, b, c: o + b,
    "min": lambda o, b, c: np.minimum(o, b),
    "max": lambda o, b, c: np.maximum(o, b),
    "and": lambda o, b, c: o & b,
    "or": lambda o, b, c: o | b,
    "xor": lambda o, b, c: o ^ b,
    "exch": lambda o, b, c: b,
    "cas": lambda o, b, c: np.where(o == b, c, o),
    "inc": _inc,
    "dec": _dec,
}


def _imm_value(op: Imm, ty: str) -> np.generic:
    dt = DT[ty]
    if op.bits is not None:
        src = np.array([op.bits], np.uint32 if op.width == 32 else np.uint64)
        f = src.view(np.float32 if op.width == 32 else np.float64)[0]
        if dt.kind == "f" or dt == fp.BF16:
            return dt.type(f) if dt.itemsize * 8 != op.width else src.view(dt)[0]
        if dt.itemsize * 8 == op.width:
            return src.view(dt)[0]
        return dt.type(op.bits & ((1 << (dt.itemsize * 8)) - 1))
    v = op.value
    if ty == "pred":
        return np.bool_(v != 0)
    if dt.kind in "iu" or ty in ("f16x2", "bf16x2", "tf32"):
        if isinstance(v, float):
            v = int(v)
        bits = dt.itemsize * 8
        return np.array([v & ((1 << bits) - 1)], fp.uint_of(dt) if dt.itemsize > 1 else np.uint8).view(dt)[0]
    return dt.type(v)


# ----------------------------------------------------------------------------- the simulator

class PtxSim:
    """Runs entries of one parsed module against one ``GlobalMemory``.

    ``kernel_stats`` accumulates warp-level instruction counts per kernel over all launches.
    """

    SHARED_BUDGET = 512 << 20  # bytes of shared memory + race state per batch of blocks

    def __init__(self, module: PtxModule, memory: GlobalMemory, check_shared_init: bool = True) -> None:
        """``check_shared_init``: reading a shared byte no thread of the block has written in
        this launch (its value is whatever the previous block left) is a fault."""
        self.module, self.memory = module, memory
        self.check_shared_init = check_shared_init
        self.kernel_stats: dict[str, Counter[str]] = {}
        # module-scope .global/.const variables: one allocation each, initialised once
        self.global_addr: dict[str, int] = {}
        for gv in module.globals.values():
            addr = memory.alloc(gv.name, max(gv.data.size, 1), align=max(16, gv.align))
            if gv.data.size:
                memory.write(addr, gv.data)
            self.global_addr[gv.name] = addr

    def launch(self, entry: str, grid: tuple[int, ...] | int = (1, 1, 1),
               block: tuple[int, ...] | int = (1, 1, 1),
               params: list | tuple = (), max_instructions: int = 200_000_000,
               dynamic_shared: int = 0, max_lanes: int = 1 << 16) -> LaunchStats:
        """Execute ``entry`` over the whole grid; raises the first fault it meets.

        ``max_instructions`` bounds warp-level instructions over the whole launch;
        ``dynamic_shared`` is the byte size of the ``.extern .shared`` array; at most
        ``max_lanes`` threads (whole blocks) execute side by side, the grid runs in batches.
        """
        ent = self.module.entries.get(entry)
        if ent is None:
            raise LaunchError(f"module {self.module.source} has no entry '{entry}' "
                              f"(entries: {', '.join(self.module.entries) or 'none'})")
        grid = (grid,) if isinstance(grid, int | np.integer) else grid
        block = (block,) if isinstance(block, int | np.integer) else block
        g = tuple(int(x) for x in (*grid, 1, 1)[:3])
        b = tuple(int(x) for x in (*block, 1, 1)[:3])
        if min(g) < 1 or min(b) < 1 or b[0] * b[1] * b[2] > 1024:
            raise LaunchError(f"launch of '{entry}': bad geometry grid={g} block={b} "
                              "(each dimension >= 1, at most 1024 threads per block)")
        if ent.reqntid is not None and tuple((*ent.reqntid, 1, 1)[:3]) != b:
            raise LaunchError(f"'{entry}' requires block {ent.reqntid} (.reqntid), got {b}")
        nblocks = g[0] * g[1] * g[2]
        padded = (b[0] * b[1] * b[2] + WARP - 1) // WARP * WARP
        shared = ent.shared_bytes + ent.dynamic_align + dynamic_shared
        # blocks are independent, so a large grid runs as batches of blocks: bounded memory
        # (registers are [lanes] arrays, shared memory and its race state [blocks, bytes])
        per_batch = max(1, min(max_lanes // padded, (self.SHARED_BUDGET // max(1, 17 * shared))))
        stats = LaunchStats(ent.name, g, b)
        counts = np.zeros(len(ent.instrs), np.int64)
        t0 = time.perf_counter()
        with np.errstate(all="ignore"):
            for first in range(0, nblocks, per_batch):
                blocks = range(first, min(nblocks, first + per_batch))
                L = _Launch(ent, self.memory, g, b, list(params), dynamic_shared, blocks)
                L.check_init = self.check_shared_init
                L.global_addr = self.global_addr
                self._run(L, ent, counts, stats, max_instructions)
        stats.seconds = time.perf_counter() - t0
        by_op: Counter[str] = Counter()
        for ins, n in zip(ent.instrs, counts, strict=True):
            if n:
                by_op[ins.opcode] += int(n)
        stats.by_opcode = dict(by_op)
        stats.warp_instructions = int(counts.sum())
        self.kernel_stats.setdefault(ent.name, Counter()).update(by_op)
        return stats

    def _run(self, L: _Launch, ent: Entry, counts: np.ndarray, stats: LaunchStats,
             limit: int) -> None:
        """The SIMT stack.  Each frame is (pc, lane mask, reconvergence pc); the top frame runs.
        A conditional branch on which live lanes disagree turns the top frame into the join
        (pc := the branch's immediate post-dominator) and pushes the taken and fall-through
        paths, each ending at that join; a frame that reaches its reconvergence pc pops.  When
        the join equals the top frame's own reconvergence pc the top frame is dropped instead,
        so loops with per-lane trip counts keep the stack bounded."""
        instrs = ent.instrs
        n = len(instrs)
        stack = [_Frame(0, L.alive.copy(), n)]
        total = stats.warp_instructions
        threads = stats.thread_instructions
        steps = stats.steps
        while stack:
            top = stack[-1]
            if top.pc >= n:
                # falling off the end of the entry retires the lanes like `ret`
                L.alive = L.alive & ~top.mask
                L.gen += 1
                stack.pop()
                continue
            if top.pc == top.rpc:
                stack.pop()
                continue
            if top.gen != L.gen:
                top.live = top.mask & L.alive
                top.gen = L.gen
                top.warps = int(top.live.reshape(L.W, WARP).any(1).sum())
                top.lanes = int(top.live.sum())
                top.full = top.lanes == L.T
            if top.lanes == 0:
                stack.pop()
                continue
            mask = top.live
            ins = instrs[top.pc]
            counts[ins.index] += top.warps
            total += top.warps
            threads += top.lanes
            steps += 1
            L.clock = steps
            if total > limit:
                raise L.fault(InstructionLimitError, ins, int(np.flatnonzero(mask)[0]),
                              f"more than {limit} warp instructions executed (max_instructions); "
                              "a loop that never ends?")
            if ins.guard is not None:
                g = L.regs.get(ins.guard)
                if g is None:
                    g = np.zeros(L.T, bool)
                m = mask & (~g if ins.guard_neg else g)
            else:
                m = mask
            kind = ins.kind
            if kind == "op":
                if m is mask or m.any():
                    L.full = m is mask and top.full
                    ins.run(L, m)
                top.pc += 1
            elif kind == "bra":
                target = ent.labels[ins.branch]
                if m is mask:
                    top.pc = target
                    continue
                taken_any = m.any()
                not_taken = mask & ~m
                nt_any = not_taken.any()
                if not nt_any:
                    top.pc = target
                elif not taken_any:
                    top.pc += 1
                else:
                    r = ins.ipdom
                    if r == top.rpc:
                        stack.pop()
                    else:
                        top.pc = r
                    stack.append(_Frame(target, m.copy(), r))
                    stack.append(_Frame(ins.index + 1, not_taken, r))
            elif kind == "exit":
                if m.any():
                    L.alive = L.alive & ~m
                    L.gen += 1
                top.pc += 1
            elif kind == "bar":
                if m.any():
                    L.barrier(ins, m)
                    stats.barriers += 1
                top.pc += 1
        stats.steps = steps
        stats.thread_instructions = threads
        stats.warp_instructions = total

