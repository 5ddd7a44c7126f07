"""npusim's engine: functional numpy execution, the per-pipe timing model, and the checkers.

Execution. Every core of a launch (``block_dim`` of them) runs the kernel body with its own
buffers (L1/L0A/L0B/L0C for an AIC core, UB for an AIV core) over the shared GM arrays; cores run
one after another (they cannot synchronise with each other inside a launch, so the order does not
change results). Each instruction is one numpy operation over everything it touches: a vector
instruction gathers all its repeats through one index array, a DMA is one strided copy, an
``mmad`` one matmul. On-chip memory starts filled with 0xFF bytes (NaN for floats) so a program
that reads what it never wrote produces visibly wrong numbers, as hardware would.

Timing model (per core, cycles of the SoC clock):
* the scalar unit issues in program order, one cycle per op (``arith``, loop steps, issue of
  every pipe instruction);
* each pipe is an in-order queue: an instruction starts when it has been issued, its pipe is
  free, and the pipe's earlier ``wait_flag``s are satisfied; ``end = start + cost``;
* costs come from the SoC table: DMA ``latency + bytes / bandwidth`` (MTE2/MTE3 capped at the
  core's fair share of the shared GM bandwidth), ``mmad`` ``startup + steps`` where a step is one
  16 x 16 x k0 cube operation, vector ``startup + repeats * per_repeat``;
* ``set_flag`` fires when its source pipe has finished everything before it; ``wait_flag`` holds
  its destination pipe until then (flags are FIFO counters per (src, dst, event));
  ``pipe_barrier "ALL"`` joins every pipe. A core's cycles are when its last pipe goes idle;
  the launch's cycles are the slowest core's.

Checkers (all raise ``NpuSimError`` subclasses naming kernel, core and instruction line):
bounds (buffer and space), alignment, event ids, deadlock (wait without an earlier set) and
unbalanced sets, and data races. Races use vector clocks: each pipe ``p`` keeps ``vc[p]``; an
instruction on ``p`` ticks ``vc[p][p]``; ``set_flag`` snapshots ``vc[src]`` and ``wait_flag``
merges the snapshot into ``vc[dst]``; a barrier merges all. Shadow memory (32-byte granules)
records the last writer (pipe, tick, line) and the last read tick per pipe; an access by pipe
``q`` conflicts when another pipe's recorded tick is not ``<= vc[q]`` for that pipe (RAW, WAW on
reads/writes, WAR on writes). Same-pipe accesses are ordered by the in-order queue. Across cores
(which a launch never orders) an element-exact owner map of GM rejects one core reading or
writing elements another core wrote in the same launch. ``check_races=False`` turns both off.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from portc.dialects import dtypes
from portc.dialects.npu_soc import PIPES, NpuSoc, ceil_to, get_soc
from portc.runtimes.npusim.errors import (
    NpuAlignmentError,
    NpuBoundsError,
    NpuDeadlockError,
    NpuEventError,
    NpuLimitError,
    NpuProgramError,
    NpuRaceError,
    NpuSimError,
)
from portc.runtimes.npusim.parser import Block, KernelDef, MemType, Op, Program

PIPE_ID: dict[str, int] = {p: i for i, p in enumerate(PIPES)}
_S, _V, _M, _MTE1, _MTE2, _MTE3, _FIX = range(7)
GRANULE = 32


@dataclass(frozen=True)
class Buf:
    """A buffer value at run time: ``size`` elements of ``dtype`` at byte ``base`` of ``space``
    (``key`` is the GM argument name for GM, the space name otherwise)."""

    space: str
    key: str
    base: int
    size: int
    dtype: np.dtype
    label: str

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize


class _Shadow:
    """Race-checker state for one memory (a space of one core, or one GM argument)."""

    def __init__(self, nbytes: int) -> None:
        n = -(-nbytes // GRANULE)
        self.wpipe = np.full(n, -1, np.int8)
        self.wtick = np.zeros(n, np.int64)
        self.wline = np.zeros(n, np.int32)
        self.rtick: dict[int, np.ndarray] = {}
        self.rline: dict[int, np.ndarray] = {}


# ------------------------------------------------------------------------------------ stats


@dataclass
class CoreStats:
    """One core's timing: total cycles, busy cycles per pipe, instructions per pipe."""

    core: int
    cycles: float
    busy: dict[str, float]
    instructions: dict[str, int]

    @property
    def cube_utilisation(self) -> float:
        return self.busy["M"] / self.cycles if self.cycles else 0.0


@dataclass
class RunStats:
    """What a launch cost: slowest-core cycles, per-core detail, cube work done."""

    kernel: str
    soc: str
    clock_hz: float
    block_dim: int
    cycles: float
    cores: list[CoreStats]
    cube_steps: int = 0
    functional: bool = True
    #: the first narrowing conversion of the launch that turned finite values into +-inf (the
    #: hardware's float overflow status, ``aclrtGetOverflowStatus``): kernel, core, line,
    #: instruction, element count and the largest finite magnitude; None when none overflowed
    overflow: dict[str, Any] | None = None

    @property
    def seconds(self) -> float:
        return self.cycles / self.clock_hz

    def pipe_utilisation(self) -> dict[str, float]:
        """Busy fraction of each pipe over the launch, averaged over the launched cores."""
        denom = self.cycles * max(1, len(self.cores))
        return {p: (sum(c.busy[p] for c in self.cores) / denom if denom else 0.0)
                for p in PIPES}

    @property
    def cube_utilisation(self) -> float:
        """mmad-busy cycles / launch cycles, averaged over the launched cores."""
        return self.pipe_utilisation()["M"]

    def table(self, per_core: bool = False) -> str:
        """A text report: launch cycles and pipe busy %, optionally one line per core."""
        util = self.pipe_utilisation()
        rows = [f"kernel @{self.kernel} on {self.soc}: {self.block_dim} cores, "
                f"{self.cycles:,.0f} cycles ({self.seconds * 1e6:,.1f} us), "
                f"cube utilisation {100 * self.cube_utilisation:.1f}%",
                "pipe busy%: " + "  ".join(f"{p} {100 * u:5.1f}" for p, u in util.items())]
        if per_core:
            for c in self.cores:
                rows.append(f"  core {c.core:2d}: {c.cycles:12,.0f} cycles  " + "  ".join(
                    f"{p} {100 * c.busy[p] / c.cycles if c.cycles else 0:5.1f}" for p in PIPES))
        return "\n".join(rows)


# ------------------------------------------------------------------------------------ tables

_BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "npu.vadd": np.add, "npu.vsub": np.subtract, "npu.vmul": np.multiply,
    "npu.vdiv": np.divide, "npu.vmax": np.maximum, "npu.vmin": np.minimum,
}
_SCALAR: dict[str, Callable[[np.ndarray, Any], np.ndarray]] = {
    "npu.vadds": np.add, "npu.vmuls": np.multiply, "npu.vmaxs": np.maximum,
    "npu.vmins": np.minimum,
}
_UNARY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "npu.vexp": np.exp, "npu.vln": np.log, "npu.vsqrt": np.sqrt,
    "npu.vrsqrt": lambda x: np.reciprocal(np.sqrt(x)), "npu.vrec": np.reciprocal,
    "npu.vabs": np.abs, "npu.vrelu": lambda x: np.maximum(x, np.zeros((), x.dtype)),
    "npu.vneg": np.negative, "npu.vcopy": lambda x: x.copy(),
}
_CMP: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal,
    "gt": np.greater, "ge": np.greater_equal,
}
_REDUCE: dict[str, Callable[..., np.ndarray]] = {"sum": np.sum, "max": np.max, "min": np.min}
_ROUND: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "rint": np.rint, "none": np.rint, "floor": np.floor, "ceil": np.ceil, "trunc": np.trunc,
    "round": lambda x: np.sign(x) * np.floor(np.abs(x) + 0.5),
}
#: vector op -> (operand layout, strided operand positions among the buffer pairs)
_VEC_LAYOUT: dict[str, tuple[str, tuple[int, ...]]] = {
    **{k: ("binary", (0, 1, 2)) for k in _BINARY},
    **{k: ("scalar", (0, 1)) for k in _SCALAR},
    **{k: ("unary", (0, 1)) for k in _UNARY},
    "npu.vcast": ("cast", (0, 1)), "npu.vdup": ("dup", (0,)), "npu.vbrcb": ("brcb", (0,)),
    "npu.vcmp": ("cmp", (1, 2)), "npu.vsel": ("sel", (0, 2, 3)),
    "npu.vwhole_reduce": ("wreduce", (1,)),
}
_VEC_COST: dict[str, str] = {
    **{k: "vec_simple" for k in _VEC_LAYOUT}, "npu.vdiv": "vec_transcendental",
    **{k: "vec_transcendental" for k in ("npu.vexp", "npu.vln", "npu.vsqrt", "npu.vrsqrt",
                                         "npu.vrec")},
    "npu.vcast": "vec_cast", "npu.vwhole_reduce": "vec_reduce", "npu.vreduce": "vec_reduce",
}

def _w64(v: int) -> int:
    """The scalar unit's registers are 64-bit: results wrap in two's complement."""
    return v if -(1 << 63) <= v < (1 << 63) else ((v + (1 << 63)) % (1 << 64)) - (1 << 63)


def _is_float(dt: np.dtype) -> bool:
    """numpy floats and ml_dtypes' bfloat16 (whose numpy kind is 'V')."""
    return dt.kind == "f" or dtypes.from_numpy(dt).kind == "float"


def _divsi(a: int, b: int) -> int:
    """Signed division truncating toward zero, exactly (no float detour)."""
    q = abs(a) // abs(b)
    return -q if (a < 0) != (b < 0) else q


_ARITH: dict[str, Callable[..., Any]] = {
    "arith.addi": lambda a, b: _w64(a + b), "arith.subi": lambda a, b: _w64(a - b),
    "arith.muli": lambda a, b: _w64(a * b),
    "arith.divsi": lambda a, b: _w64(_divsi(a, b)), "arith.divui": lambda a, b: a // b,
    "arith.remsi": lambda a, b: a - b * _divsi(a, b), "arith.remui": lambda a, b: a % b,
    "arith.shli": lambda a, b: _w64(a << b), "arith.shrsi": lambda a, b: a >> b,
    "arith.shrui": lambda a, b: (a % (1 << 64)) >> b,
    "arith.sitofp": float, "arith.uitofp": lambda a: float(a % (1 << 64)),
    "arith.floordivsi": lambda a, b: a // b, "arith.ceildivsi": lambda a, b: -(-a // b),
    "arith.minsi": min, "arith.maxsi": max, "arith.minui": min, "arith.maxui": max,
    "arith.andi": lambda a, b: a & b, "arith.ori": lambda a, b: a | b,
    "arith.xori": lambda a, b: a ^ b,
    "arith.index_cast": lambda a: a, "arith.index_castui": lambda a: a,
    "arith.select": lambda c, a, b: a if c else b,
}
_CMPI: dict[int, Callable[[int, int], bool]] = {
    0: lambda a, b: a == b, 1: lambda a, b: a != b, 2: lambda a, b: a < b,
    3: lambda a, b: a <= b, 4: lambda a, b: a > b, 5: lambda a, b: a >= b,
    6: lambda a, b: a < b, 7: lambda a, b: a <= b, 8: lambda a, b: a > b, 9: lambda a, b: a >= b,
}


# Fractal formats (Ascend C ``Mmad`` documentation): the matrix is cut into ``fr x fc``
# fractals; the first letter says how elements are ordered inside a fractal, the second how
# fractals are ordered: z/Z row-major, n/N column-major. A is zZ, B nZ, C zN.
TO_FRACTAL: dict[str, Callable[[np.ndarray, int, int], np.ndarray]] = {
    "zZ": lambda x, fr, fc: x.reshape(x.shape[0] // fr, fr, x.shape[1] // fc, fc)
    .transpose(0, 2, 1, 3).ravel(),
    "nZ": lambda x, fr, fc: x.reshape(x.shape[0] // fr, fr, x.shape[1] // fc, fc)
    .transpose(0, 2, 3, 1).ravel(),
    "zN": lambda x, fr, fc: x.reshape(x.shape[0] // fr, fr, x.shape[1] // fc, fc)
    .transpose(2, 0, 1, 3).ravel(),
}
FROM_FRACTAL: dict[str, Callable[[np.ndarray, int, int, int, int], np.ndarray]] = {
    "zZ": lambda v, r, c, fr, fc: v.reshape(r // fr, c // fc, fr, fc).transpose(0, 2, 1, 3)
    .reshape(r, c),
    "nZ": lambda v, r, c, fr, fc: v.reshape(r // fr, c // fc, fc, fr).transpose(0, 3, 1, 2)
    .reshape(r, c),
    "zN": lambda v, r, c, fr, fc: v.reshape(c // fc, r // fr, fr, fc).transpose(1, 2, 0, 3)
    .reshape(r, c),
}


@functools.lru_cache(maxsize=4096)
def _mask_cols(mask: tuple[int, ...], epr: int) -> np.ndarray:
    """Lanes a mask selects in one repeat (cached: programs reuse a handful of masks; the
    result is shared, callers never modify it)."""
    hi, lo = (int(m) & (2**64 - 1) for m in mask)
    bits = (hi << 64) | lo
    sel = np.array([(bits >> i) & 1 for i in range(min(epr, 128))], bool)
    if epr > 128:  # 8-bit data: the mask covers only the first 128 lanes
        sel = np.concatenate([sel, np.zeros(epr - 128, bool)])
    return np.nonzero(sel)[0]


@functools.lru_cache(maxsize=4096)
def _blocks(raw: bytes) -> np.ndarray:
    """The distinct 32-byte block numbers of a repeat's lanes (cached by the lanes' bytes)."""
    return np.unique(np.frombuffer(raw, np.int64))


def _nth(granules: np.ndarray | slice, i: int) -> int:
    return granules.start + i if isinstance(granules, slice) else int(granules[i])


def _runs_to_granules(starts: np.ndarray, length: int) -> np.ndarray:
    """Byte runs ``[s, s+length)`` -> the 32-byte granule indices they touch."""
    if length <= 0 or starts.size == 0:
        return np.zeros(0, np.int64)
    first = starts // GRANULE
    counts = (starts + length - 1) // GRANULE - first + 1
    if counts.size == 1:
        return np.arange(first[0], first[0] + counts[0])
    total = int(counts.sum())
    offs = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(first, counts) + offs


# ------------------------------------------------------------------------------------ core


class _Core:
    """One AI core running one block of a launch."""

    def __init__(self, sim: NpuSim, kernel: KernelDef, idx: int, gm: dict[str, np.ndarray],
                 trace: list[dict] | None) -> None:
        self.sim, self.kernel, self.idx, self.gm = sim, kernel, idx, gm
        self.soc = sim.soc
        self.functional, self.check_races = sim.functional, sim.check_races
        self.mem: dict[str, np.ndarray] = {}
        self.shadows: dict[tuple[str, str], _Shadow] = {}
        self.t_s = 0.0
        self.free = [0.0] * len(PIPES)
        self.busy = [0.0] * len(PIPES)
        self.count: Counter[str] = Counter()
        self.vc = np.zeros((len(PIPES), len(PIPES)), np.int64)
        self.flags: dict[tuple[int, int, int], deque] = {}
        self.trace = trace
        self.cube_steps = 0
        self.overflow: dict[str, Any] | None = None
        active = min(kernel.block_dim, sim.soc.aic_cores if kernel.core == "aic"
                     else sim.soc.aiv_cores)
        share = sim.soc.gm_bytes_per_cycle / max(1, active)
        bw = sim.soc.engine_bytes_per_cycle
        self.bw = {"MTE2": min(bw["MTE2"], share), "MTE3": min(bw["MTE3"], share),
                   "MTE1": bw["MTE1"], "FIX": bw["FIX"]}
        self.op: Op | None = None

    # -- errors -----------------------------------------------------------------------------
    def fail(self, cls: type[NpuSimError], detail: str, op: Op | None = None) -> NpuSimError:
        op = op or self.op
        return cls(detail, kernel=self.kernel.name, core=self.idx,
                   line=op.line if op else None, instruction=op.text if op else "")

    # -- memory -----------------------------------------------------------------------------
    def view(self, buf: Buf) -> np.ndarray:
        """The typed 1-D array of ``buf`` (functional mode)."""
        if buf.space == "gm":
            return self.gm[buf.key]
        raw = self.mem.get(buf.space)
        if raw is None:
            raw = np.full(self.soc.space(buf.space).size, 0xFF, np.uint8)
            self.mem[buf.space] = raw
        return raw[buf.base:buf.base + buf.size * buf.itemsize].view(buf.dtype)

    def check_range(self, buf: Buf, lo: int, hi: int, what: str) -> None:
        """Element range ``[lo, hi)`` (hi exclusive) must lie inside ``buf``."""
        if lo < 0 or hi > buf.size:
            raise self.fail(NpuBoundsError, f"{what} touches elements [{lo}, {hi}) of "
                            f"{buf.label}, which holds {buf.size} {buf.dtype} elements")

    def check_align(self, buf: Buf, elem_off: int, what: str, pitch: int | None = None) -> None:
        """On-chip start (and row pitch, for multi-row moves) must keep the space alignment."""
        if buf.space == "gm":
            return
        align = self.soc.space(buf.space).align
        addr = buf.base + elem_off * buf.itemsize
        if addr % align:
            raise self.fail(NpuAlignmentError, f"{what} starts at {buf.space} byte {addr}, not "
                            f"a multiple of {align} ({buf.label} + element {elem_off})")
        if pitch is not None and (pitch * buf.itemsize) % align:
            raise self.fail(NpuAlignmentError, f"{what} row pitch is {pitch * buf.itemsize} "
                            f"bytes in {buf.space}, not a multiple of {align}")

    def strided2d(self, buf: Buf, off: int, rows: int, cols: int, pitch: int) -> np.ndarray:
        v = self.view(buf)
        s = buf.itemsize
        return as_strided(v[off:], shape=(rows, cols), strides=(pitch * s, s))

    # -- race checking --------------------------------------------------------------------------
    def shadow(self, buf: Buf) -> tuple[_Shadow, int]:
        key = (buf.space, buf.key)
        sh = self.shadows.get(key)
        if sh is None:
            nbytes = (buf.size * buf.itemsize if buf.space == "gm"
                      else self.soc.space(buf.space).size)
            sh = _Shadow(nbytes)
            self.shadows[key] = sh
        return sh, (0 if buf.space == "gm" else buf.base)

    def access(self, pipe: int, buf: Buf, granules: np.ndarray | slice, write: bool) -> None:
        """Check one access against the shadow memory, then record it. ``granules`` is a
        slice when the access covers a contiguous granule range (cheap views) or an index
        array otherwise."""
        if not self.check_races:
            return
        if isinstance(granules, slice):
            if granules.stop <= granules.start:
                return
        elif granules.size == 0:
            return
        sh, _ = self.shadow(buf)
        vcq = self.vc[pipe]
        w = sh.wpipe[granules]
        other = (w >= 0) & (w != pipe)
        if other.any():
            wt = sh.wtick[granules]
            bad = other & (wt > vcq[np.where(w >= 0, w, 0)])
            if bad.any():
                i = int(np.argmax(bad))
                gi = _nth(granules, i)
                raise self.race(pipe, buf, gi, "write" if write else "read",
                                PIPES[w[i]], int(sh.wline[gi]), "written")
        if write:
            for p, rt in sh.rtick.items():
                if p == pipe:
                    continue
                bad = rt[granules] > vcq[p]
                if bad.any():
                    i = int(np.argmax(bad))
                    gi = _nth(granules, i)
                    raise self.race(pipe, buf, gi, "write", PIPES[p], int(sh.rline[p][gi]),
                                    "read")
            tick = vcq[pipe]
            sh.wpipe[granules] = pipe
            sh.wtick[granules] = tick
            sh.wline[granules] = self.op.line if self.op else 0
        else:
            rt = sh.rtick.get(pipe)
            if rt is None:
                rt = sh.rtick[pipe] = np.zeros_like(sh.wtick)
                sh.rline[pipe] = np.zeros_like(sh.wline)
            rt[granules] = vcq[pipe]
            sh.rline[pipe][granules] = self.op.line if self.op else 0

    def race(self, pipe: int, buf: Buf, granule: int, how: str, other: str, line: int,
             other_how: str) -> NpuSimError:
        space = buf.space if buf.space != "gm" else f"gm '{buf.key}'"
        return self.fail(NpuRaceError, f"{PIPES[pipe]} {how}s {space} bytes "
                         f"[{granule * GRANULE}, {(granule + 1) * GRANULE}) ({buf.label}) "
                         f"{other_how} by {other} at line {line} with no set_flag/wait_flag "
                         f"or pipe_barrier ordering the two; run npu-insert-sync or add a "
                         f"flag {other}->{PIPES[pipe]}")

    def runs(self, buf: Buf, off: int, rows: int, length: int, pitch: int
             ) -> np.ndarray | slice:
        """Granules of ``rows`` runs of ``length`` elements ``pitch`` apart; a slice when they
        form one contiguous granule range (gaps shorter than a granule)."""
        s = buf.itemsize
        base = 0 if buf.space == "gm" else buf.base
        if rows <= 0 or length <= 0:
            return slice(0, 0)
        if rows == 1 or (pitch - length) * s < GRANULE:
            start = base + off * s
            end = start + ((rows - 1) * pitch + length) * s
            return slice(start // GRANULE, (end - 1) // GRANULE + 1)
        starts = base + (off + np.arange(rows, dtype=np.int64) * pitch) * s
        return _runs_to_granules(starts, length * s)

    def cross_core(self, buf: Buf, off: int, rows: int, cols: int, pitch: int,
                   write: bool) -> None:
        """Cores of one launch are unordered: GM elements one core writes may be neither
        written nor read by another core of the same launch (element-exact owner map)."""
        if buf.space != "gm" or rows <= 0 or cols <= 0:
            return
        owner = self.sim.gm_owner.get(buf.key)
        if owner is None:
            if not write:
                return
            owner = self.sim.gm_owner[buf.key] = np.full(buf.size, -1, np.int16)
        view = as_strided(owner[off:], shape=(rows, cols), strides=(pitch * 2, 2))
        clash = (view != -1) & (view != self.idx)
        if clash.any():
            r, c = np.argwhere(clash)[0]
            other = int(view[r, c])
            raise self.fail(NpuRaceError, f"core {self.idx} {'writes' if write else 'reads'} "
                            f"gm '{buf.key}' element {off + r * pitch + c} that core {other} "
                            "wrote in the same launch; cores of one launch are not ordered, "
                            "so their GM footprints must not overlap")
        if write:
            view[...] = self.idx

    def _vec_granules(self, buf: Buf, off: int, repeat: int, blk: int, rep: int,
                      blocks: np.ndarray) -> np.ndarray | slice:
        """Granules a vector operand touches, block by block: block ``b`` of repeat ``r`` is
        granule ``g0 + r * rep + b * blk`` (operands start 32-byte aligned, so every block is
        one whole granule); a slice when they are one run (the dense case). Duplicates are
        harmless to the race checker, so nothing is made unique."""
        g0 = (buf.base + off * buf.itemsize) // GRANULE
        bsel = _blocks(blocks.tobytes())
        nb = len(bsel)
        if blk == 1 and int(bsel[0]) == 0 and int(bsel[-1]) == nb - 1 and rep in (nb, 0):
            return slice(g0, g0 + (repeat * nb if rep else nb))
        return (g0 + np.arange(repeat, dtype=np.int64)[:, None] * rep
                + bsel[None, :].astype(np.int64) * blk).ravel()

    # -- timing -----------------------------------------------------------------------------
    def scalar(self, cycles: float) -> None:
        """The scalar unit spends ``cycles`` issuing (counted as S-pipe busy time)."""
        self.t_s += cycles
        self.busy[_S] += cycles

    def issue(self, pipe: int, cost: float, name: str) -> None:
        """Issue one instruction to ``pipe`` and advance the pipe's in-order queue."""
        t_issue = self.t_s
        self.scalar(self.soc.costs["scalar"].startup)
        start = max(t_issue, self.free[pipe])
        end = start + cost
        self.free[pipe] = end
        self.busy[pipe] += cost
        self.vc[pipe, pipe] += 1
        self.count[PIPES[pipe]] += 1
        if self.trace is not None:
            us = 1e6 / self.soc.clock_hz
            self.trace.append({"name": name, "ph": "X", "ts": start * us, "dur": cost * us,
                               "pid": self.idx, "tid": pipe,
                               "args": {"line": self.op.line if self.op else 0}})

    # -- interpreter ------------------------------------------------------------------------
    def run(self) -> None:
        env: dict[str, Any] = {}
        for (name, _), t, argname in zip(self.kernel.body.args, self.kernel.arg_types,
                                         self.kernel.arg_names, strict=True):
            env[name] = Buf("gm", argname, 0, t.size, np.dtype(dtypes.dtype(t.dtype).numpy),
                            f"gm argument '{argname}'")
        self.block(self.kernel.body, env)
        for (s, d, e), q in self.flags.items():
            if q:
                raise NpuEventError(
                    f"set_flag {PIPES[s]}->{PIPES[d]} event {e} (line {q[0][2]}) is never "
                    "waited for; every set_flag needs a matching wait_flag",
                    kernel=self.kernel.name, core=self.idx, line=q[0][2])

    def block(self, block: Block, env: dict[str, Any]) -> None:
        sim = self.sim
        for op in block.ops:
            self.op = op
            sim.executed += 1
            if sim.executed > sim.max_instructions:
                raise NpuLimitError(f"npusim: kernel @{self.kernel.name} exceeded "
                                    f"{sim.max_instructions} instructions (core {self.idx}, "
                                    f"line {op.line}); raise max_instructions")
            handler = _HANDLERS.get(op.name)
            try:
                if handler is not None:
                    handler(self, op, env)
                    continue
                fn = _ARITH.get(op.name)
                if fn is None:
                    raise self.fail(NpuProgramError, f"unknown op {op.name}")
                env[op.results[0]] = fn(*(env[v] for v in op.operands))
                self.scalar(1)
            except KeyError as e:
                raise self.fail(NpuProgramError, f"value {e.args[0]} is used before it is "
                                "defined") from None
            except (AttributeError, TypeError, ValueError) as e:
                raise self.fail(NpuProgramError, f"operands do not fit {op.name}: {e}") \
                    from None

    # scalar unit ----------------------------------------------------------------------------
    def _constant(self, op: Op, env: dict[str, Any]) -> None:
        v = op.prop("value")
        env[op.results[0]] = int(v) if isinstance(v, bool | int) else v
        self.scalar(1)

    def _cmpi(self, op: Op, env: dict[str, Any]) -> None:
        a, b = (env[v] for v in op.operands)
        env[op.results[0]] = int(_CMPI[int(op.prop("predicate"))](a, b))
        self.scalar(1)

    def _for(self, op: Op, env: dict[str, Any]) -> None:
        lb, ub, step = (env[v] for v in op.operands[:3])
        if len(op.operands) > 3:
            raise self.fail(NpuProgramError, "scf.for with iter_args is not supported")
        if step <= 0:
            raise self.fail(NpuProgramError, f"scf.for step {step} must be positive")
        body = op.regions[0][0]
        iv = body.args[0][0]
        for i in range(lb, ub, step):
            env[iv] = i
            self.scalar(1)
            self.block(body, env)
            self.op = op

    def _if(self, op: Op, env: dict[str, Any]) -> None:
        if op.results:
            raise self.fail(NpuProgramError, "scf.if with results is not supported")
        self.scalar(1)
        region = op.regions[0] if env[op.operands[0]] else (op.regions[1] if len(op.regions) > 1
                                                            else [])
        for b in region:
            self.block(b, env)

    def _nop(self, op: Op, env: dict[str, Any]) -> None:
        pass

    def _block_idx(self, op: Op, env: dict[str, Any]) -> None:
        env[op.results[0]] = self.idx
        self.scalar(1)

    def _block_num(self, op: Op, env: dict[str, Any]) -> None:
        env[op.results[0]] = self.kernel.block_dim
        self.scalar(1)

    def _get_value(self, op: Op, env: dict[str, Any]) -> None:
        """Scalar read of one integer element (the S pipe stalls for the data cache); in
        timing-only mode without the array the value is 0 (addresses then only feed checks)."""
        buf, off = (env[v] for v in op.operands)
        if not isinstance(buf, Buf) or not (buf.dtype.kind in "iub" or _is_float(buf.dtype)):
            raise self.fail(NpuProgramError, "npu.get_value reads an integer, bool or float "
                            "buffer")
        if buf.space not in ("gm", "ub"):
            raise self.fail(NpuProgramError, f"the scalar unit reads gm or ub, not {buf.space}")
        self.check_range(buf, off, off + 1, "npu.get_value")
        self.scalar(self.soc.costs["scalar_load"].startup)
        self.vc[_S, _S] += 1  # a read later writers must be ordered after (WAR)
        if self.check_races:
            self.access(_S, buf, self.runs(buf, off, 1, 1, 1), False)
            self.cross_core(buf, off, 1, 1, 1, False)
        known = self.functional or (buf.space == "gm" and buf.key in self.gm)
        v = self.view(buf)[off] if known else 0
        env[op.results[0]] = float(v) if _is_float(buf.dtype) else int(v)

    def _set_value(self, op: Op, env: dict[str, Any]) -> None:
        """Scalar write of one element: integers keep their low bits (bools bit 0), floats
        round to the element type."""
        buf, off, value = (env[v] for v in op.operands)
        if not isinstance(buf, Buf) or buf.space not in ("gm", "ub"):
            raise self.fail(NpuProgramError, "npu.set_value writes a gm or ub buffer")
        self.check_range(buf, off, off + 1, "npu.set_value")
        self.scalar(self.soc.costs["scalar_store"].startup)
        self.vc[_S, _S] += 1
        if self.check_races:
            self.access(_S, buf, self.runs(buf, off, 1, 1, 1), True)
            self.cross_core(buf, off, 1, 1, 1, True)
        if not self.functional:
            return
        if _is_float(buf.dtype):
            self.view(buf)[off] = np.asarray(value, np.float64).astype(buf.dtype)
        elif buf.dtype.kind == "b":
            self.view(buf)[off] = bool(int(value) & 1)
        else:
            bits = 8 * buf.itemsize
            low = int(value) % (1 << bits)
            self.view(buf)[off] = low - (1 << bits) if buf.dtype.kind == "i" and \
                low >= 1 << (bits - 1) else low

    def _alloc(self, op: Op, env: dict[str, Any]) -> None:
        t = op.result_types[0]
        if not isinstance(t, MemType) or t.space == "gm":
            raise self.fail(NpuProgramError, "npu.alloc must produce an on-chip buffer")
        try:
            spec = self.soc.space(t.space)
        except KeyError as e:
            raise self.fail(NpuProgramError, str(e.args[0])) from None
        if spec.core != self.kernel.core:
            raise self.fail(NpuProgramError, f"'{t.space}' does not exist on an "
                            f"{self.kernel.core} core")
        off = int(op.prop("offset"))
        nbytes = t.size * t.itemsize
        if off % spec.align:
            raise self.fail(NpuAlignmentError, f"allocation at {t.space} byte {off} is not a "
                            f"multiple of {spec.align}")
        if off < 0 or off + nbytes > spec.size:
            raise self.fail(NpuBoundsError, f"allocation [{off}, {off + nbytes}) overflows "
                            f"{t.space} ({spec.size} bytes on {self.soc.name})")
        env[op.results[0]] = Buf(t.space, t.space, off, t.size,
                                 np.dtype(dtypes.dtype(t.dtype).numpy),
                                 f"{op.results[0]} ({t.space} bytes {off}..{off + nbytes})")
        self.scalar(1)

    # sync -------------------------------------------------------------------------------------
    def _flag_ids(self, op: Op) -> tuple[int, int, int]:
        s, d, e = op.prop("src"), op.prop("dst"), int(op.prop("event"))
        if s not in PIPE_ID or d not in PIPE_ID or s == d:
            raise self.fail(NpuEventError, f"flag pipes {s}->{d} must be two different pipes "
                            f"of {PIPES}")
        if not 0 <= e < self.soc.events:
            raise self.fail(NpuEventError, f"event id {e} outside 0..{self.soc.events - 1}")
        return PIPE_ID[s], PIPE_ID[d], e

    def _set_flag(self, op: Op, env: dict[str, Any]) -> None:
        s, d, e = self._flag_ids(op)
        t_issue = self.t_s
        self.scalar(self.soc.costs["sync"].startup)
        t = max(self.free[s], t_issue)
        self.flags.setdefault((s, d, e), deque()).append((t, self.vc[s].copy(), op.line))

    def _wait_flag(self, op: Op, env: dict[str, Any]) -> None:
        s, d, e = self._flag_ids(op)
        t_issue = self.t_s
        self.scalar(self.soc.costs["sync"].startup)
        q = self.flags.get((s, d, e))
        if not q:
            raise self.fail(NpuDeadlockError, f"wait_flag {PIPES[s]}->{PIPES[d]} event {e} has "
                            "no earlier matching set_flag: the pipe would wait forever")
        t, vcs, _ = q.popleft()
        self.free[d] = max(self.free[d], t, t_issue)
        np.maximum(self.vc[d], vcs, out=self.vc[d])
        if d == _S:
            self.t_s = max(self.t_s, t)

    def _barrier(self, op: Op, env: dict[str, Any]) -> None:
        pipe = op.prop("pipe")
        cost = self.soc.costs["barrier"].startup
        if pipe == "ALL":
            t = max(max(self.free), self.t_s) + cost
            self.free = [t] * len(PIPES)
            self.t_s = t
            self.vc[:] = self.vc.max(axis=0)
        elif pipe in PIPE_ID:
            self.issue(PIPE_ID[pipe], cost, "pipe_barrier")
        else:
            raise self.fail(NpuProgramError, f"pipe_barrier pipe '{pipe}'")

    # DMA ------------------------------------------------------------------------------------
    def _burst(self, op: Op, env: dict[str, Any]) -> None:
        dst, doff, src, soff, nb, bl, sg, dg = (env[v] for v in op.operands)
        engine, pipe = ("MTE2", _MTE2) if op.name == "npu.mte2" else ("MTE3", _MTE3)
        ok = {"npu.mte2": (("l1", "ub"), ("gm",)), "npu.mte3": (("gm",), ("ub",))}[op.name]
        if dst.space not in ok[0] or src.space not in ok[1]:
            raise self.fail(NpuProgramError, f"{engine} moves {ok[1]} -> {ok[0]}, not "
                            f"{src.space} -> {dst.space}")
        if dst.dtype != src.dtype:
            raise self.fail(NpuProgramError, f"DMA does not convert {src.dtype} -> {dst.dtype}")
        if min(nb, bl, sg, dg) < 0:
            raise self.fail(NpuProgramError, f"negative burst parameter (nburst {nb}, len {bl}, "
                            f"gaps {sg}/{dg})")
        nbytes = nb * bl * src.itemsize
        self.issue(pipe, self.soc.engine_latency[engine] + nbytes / self.bw[engine], op.name)
        if nb == 0 or bl == 0:
            return
        sp, dp = bl + sg, bl + dg
        self.check_range(src, soff, soff + (nb - 1) * sp + bl, f"{engine} source")
        self.check_range(dst, doff, doff + (nb - 1) * dp + bl, f"{engine} destination")
        for b, off, pitch in ((src, soff, sp), (dst, doff, dp)):
            self.check_align(b, off, f"{engine} burst", pitch if nb > 1 else None)
        if self.check_races:
            self.access(pipe, src, self.runs(src, soff, nb, bl, sp), False)
            self.access(pipe, dst, self.runs(dst, doff, nb, bl, dp), True)
            self.cross_core(src, soff, nb, bl, sp, False)
            self.cross_core(dst, doff, nb, bl, dp, True)
        if self.functional:
            self.strided2d(dst, doff, nb, bl, dp)[...] = self.strided2d(src, soff, nb, bl, sp)

    # cube -------------------------------------------------------------------------------------
    def _k0(self, dt: np.dtype) -> tuple[str, int]:
        name = dtypes.from_numpy(dt).name
        shape = self.soc.cube.get(name)
        if shape is None:
            raise self.fail(NpuProgramError, f"the cube does not take {name}")
        return name, shape.k0

    def _load_l0(self, op: Op, env: dict[str, Any]) -> None:
        dst, doff, src, soff, rows, cols, pitch = (env[v] for v in op.operands)
        transpose = bool(op.props.get("transpose", False))
        if src.space != "l1" or dst.space not in ("l0a", "l0b"):
            raise self.fail(NpuProgramError, f"MTE1 loads l1 -> l0a/l0b, not {src.space} -> "
                            f"{dst.space}")
        if rows < 1 or cols < 1 or pitch < cols:
            raise self.fail(NpuProgramError, f"tile {rows}x{cols} with pitch {pitch} is empty "
                            "or overlaps itself")
        _, k0 = self._k0(src.dtype)
        lr, lc = (cols, rows) if transpose else (rows, cols)
        rp, cp = ((ceil_to(lr, 16), ceil_to(lc, k0)) if dst.space == "l0a"
                  else (ceil_to(lr, k0), ceil_to(lc, 16)))
        self.issue(_MTE1, self.soc.engine_latency["MTE1"] + rp * cp * src.itemsize
                   / self.bw["MTE1"], op.name)
        self.check_range(src, soff, soff + (rows - 1) * pitch + cols, "MTE1 source tile")
        self.check_range(dst, doff, doff + rp * cp, "MTE1 fractal tile")
        self.check_align(src, soff, "MTE1 source tile", pitch if rows > 1 else None)
        self.check_align(dst, doff, "MTE1 fractal tile")
        if self.check_races:
            self.access(_MTE1, src, self.runs(src, soff, rows, cols, pitch), False)
            self.access(_MTE1, dst, self.runs(dst, doff, 1, rp * cp, rp * cp), True)
        if not self.functional:
            return
        tile = self.strided2d(src, soff, rows, cols, pitch)
        logical = tile.T if transpose else tile
        pad = np.zeros((rp, cp), src.dtype)
        pad[:lr, :lc] = logical
        layout, fr, fc = ("zZ", 16, k0) if dst.space == "l0a" else ("nZ", k0, 16)
        self.view(dst)[doff:doff + rp * cp] = TO_FRACTAL[layout](pad, fr, fc)

    def _mmad(self, op: Op, env: dict[str, Any]) -> None:
        c, coff, a, aoff, b, boff, m, n, k, init = (env[v] for v in op.operands)
        if (a.space, b.space, c.space) != ("l0a", "l0b", "l0c"):
            raise self.fail(NpuProgramError, f"mmad reads l0a/l0b and writes l0c, got "
                            f"{a.space}/{b.space}/{c.space}")
        if a.dtype != b.dtype:
            raise self.fail(NpuProgramError, f"A is {a.dtype}, B is {b.dtype}")
        if min(m, n, k) < 1:
            raise self.fail(NpuProgramError, f"mmad needs m, n, k >= 1 (got {m}, {n}, {k})")
        name, k0 = self._k0(a.dtype)
        acc = self.soc.cube[name].acc
        if c.dtype != dtypes.dtype(acc).numpy:
            raise self.fail(NpuProgramError, f"{name} accumulates in {acc}, C is {c.dtype}")
        mp, kp, np_ = ceil_to(m, 16), ceil_to(k, k0), ceil_to(n, 16)
        steps = (mp // 16) * (np_ // 16) * (kp // k0)
        self.cube_steps += steps
        cost = self.soc.costs["mmad"]
        self.issue(_M, cost.startup + steps * cost.per_unit, op.name)
        self.check_range(a, aoff, aoff + mp * kp, "mmad A")
        self.check_range(b, boff, boff + kp * np_, "mmad B")
        self.check_range(c, coff, coff + mp * np_, "mmad C")
        for buf, off, what in ((a, aoff, "mmad A"), (b, boff, "mmad B"), (c, coff, "mmad C")):
            self.check_align(buf, off, what)
        if self.check_races:
            self.access(_M, a, self.runs(a, aoff, 1, mp * kp, mp * kp), False)
            self.access(_M, b, self.runs(b, boff, 1, kp * np_, kp * np_), False)
            cg = self.runs(c, coff, 1, mp * np_, mp * np_)
            if not init:
                self.access(_M, c, cg, False)
            self.access(_M, c, cg, True)
        if not self.functional:
            return
        am = FROM_FRACTAL["zZ"](self.view(a)[aoff:aoff + mp * kp], mp, kp, 16, k0)
        bm = FROM_FRACTAL["nZ"](self.view(b)[boff:boff + kp * np_], kp, np_, k0, 16)
        if acc == "int32":
            prod = (am.astype(np.int64) @ bm.astype(np.int64)).astype(np.int32)
        else:
            prod = am.astype(np.float32) @ bm.astype(np.float32)
        cv = self.view(c)[coff:coff + mp * np_]
        res = prod if init else FROM_FRACTAL["zN"](cv, mp, np_, 16, 16) + prod
        cv[...] = TO_FRACTAL["zN"](res, 16, 16)

    def _fix(self, op: Op, env: dict[str, Any]) -> None:
        vals = [env[v] for v in op.operands]
        dst, doff, src, soff, m, n, pitch = vals[:7]
        bias = tuple(vals[7:9]) if len(vals) >= 9 else None
        relu = bool(op.props.get("relu", False))
        if src.space != "l0c" or dst.space not in ("gm", "l1"):
            raise self.fail(NpuProgramError, f"FIX moves l0c -> gm/l1, not {src.space} -> "
                            f"{dst.space}")
        if min(m, n) < 1 or pitch < n:
            raise self.fail(NpuProgramError, f"FIX tile {m}x{n} with pitch {pitch}")
        mp, np_ = ceil_to(m, 16), ceil_to(n, 16)
        self.issue(_FIX, self.soc.engine_latency["FIX"] + mp * np_ * src.itemsize
                   / self.bw["FIX"], op.name)
        self.check_range(src, soff, soff + mp * np_, "FIX source")
        self.check_range(dst, doff, doff + (m - 1) * pitch + n, "FIX destination")
        self.check_align(src, soff, "FIX source")
        self.check_align(dst, doff, "FIX destination", pitch if m > 1 else None)
        if bias is not None:
            self.check_range(bias[0], bias[1], bias[1] + n, "FIX bias")
            self.check_align(bias[0], bias[1], "FIX bias")
        if self.check_races:
            self.access(_FIX, src, self.runs(src, soff, 1, mp * np_, mp * np_), False)
            if bias is not None:
                self.access(_FIX, bias[0], self.runs(bias[0], bias[1], 1, n, n), False)
            self.access(_FIX, dst, self.runs(dst, doff, m, n, pitch), True)
            self.cross_core(dst, doff, m, n, pitch, True)
        if not self.functional:
            return
        cv = self.view(src)[soff:soff + mp * np_]
        cm = FROM_FRACTAL["zN"](cv, mp, np_, 16, 16)
        out = cm[:m, :n]
        if bias is not None:
            out = out + self.view(bias[0])[bias[1]:bias[1] + n][None, :]
        if relu:
            out = np.maximum(out, 0)
        y = out.astype(dst.dtype)
        if y.dtype.itemsize < out.dtype.itemsize and y.dtype.kind == "f":
            self._note_overflow(out, y)
        self.strided2d(dst, doff, m, n, pitch)[...] = y

    # vector -----------------------------------------------------------------------------------
    def _vector(self, op: Op, env: dict[str, Any]) -> None:
        layout, strided = _VEC_LAYOUT[op.name]
        vals = [env[v] for v in op.operands]
        pairs = [(vals[i], vals[i + 1]) for i in range(0, len(vals), 2)]
        for b, _ in pairs:
            if b.space != "ub":
                raise self.fail(NpuProgramError, f"vector operands live in ub, {b.label} is in "
                                f"{b.space}")
        repeat = int(op.prop("repeat"))
        if not 0 <= repeat <= self.soc.max_repeat:
            raise self.fail(NpuProgramError, f"repeat {repeat} outside 0..{self.soc.max_repeat}")
        blk, rep = op.prop("blk"), op.prop("rep")
        if len(blk) != len(strided) or len(rep) != len(strided):
            raise self.fail(NpuProgramError, f"blk/rep need {len(strided)} entries")
        itemsize = max(pairs[i][0].itemsize for i in strided)
        epr = self.soc.elements_per_repeat(itemsize)
        cost = self.soc.costs[_VEC_COST[op.name]]
        self.issue(_V, cost.startup + repeat * cost.per_unit, op.name)
        for b, off in pairs:
            self.check_align(b, off, f"{op.name} operand")
        if repeat == 0:
            return
        cols = _mask_cols(op.prop("mask"), epr)
        if layout == "brcb":
            cols = np.arange(epr)
        r = np.arange(repeat, dtype=np.int64)[:, None]
        idx: dict[int, np.ndarray] = {}
        gran: dict[int, np.ndarray | slice] = {}
        for j, i in enumerate(strided):
            b, off = pairs[i]
            epb = GRANULE // b.itemsize
            colpart = (cols // epb) * (blk[j] * epb) + cols % epb
            idx[i] = off + r * (rep[j] * epb) + colpart[None, :]
            if cols.size:
                self.check_range(b, off + int(colpart.min()),
                                 off + (repeat - 1) * rep[j] * epb + int(colpart.max()) + 1,
                                 f"{op.name} operand {i}")
                if self.check_races:
                    gran[i] = self._vec_granules(b, off, repeat, blk[j], rep[j], cols // epb)
        bits = epr // 8
        extra: dict[int, tuple[int, int]] = {}  # contiguous (non-strided) operand ranges
        if layout == "brcb":
            extra[1] = (pairs[1][1], pairs[1][1] + 8 * repeat)
        elif layout == "cmp":
            extra[0] = (pairs[0][1], pairs[0][1] + bits * repeat)
        elif layout == "sel":
            extra[1] = (pairs[1][1], pairs[1][1] + bits * repeat)
        elif layout == "wreduce":
            extra[0] = (pairs[0][1], pairs[0][1] + repeat)
        for i, (lo, hi) in extra.items():
            self.check_range(pairs[i][0], lo, hi, f"{op.name} operand {i}")
        writes = {0}
        if self.check_races and cols.size:
            def granules(i: int) -> np.ndarray | slice:
                b = pairs[i][0]
                return gran[i] if i in gran else \
                    self.runs(b, extra[i][0], 1, extra[i][1] - extra[i][0], 1)

            for i, (b, _) in enumerate(pairs):
                if i not in writes:
                    self.access(_V, b, granules(i), False)
            for i in writes:
                self.access(_V, pairs[i][0], granules(i), True)
        if self.functional:
            with np.errstate(all="ignore"):
                self._vector_compute(op, layout, pairs, idx, extra, cols, repeat, epr)

    def _vector_compute(self, op: Op, layout: str, pairs: list[tuple[Buf, int]],
                        idx: dict[int, np.ndarray], extra: dict[int, tuple[int, int]],
                        cols: np.ndarray, repeat: int, epr: int) -> None:
        dst = pairs[0][0]
        dv = self.view(dst)
        if layout == "binary":
            a, b = self.view(pairs[1][0])[idx[1]], self.view(pairs[2][0])[idx[2]]
            dv[idx[0]] = _BINARY[op.name](a, b).astype(dst.dtype)
        elif layout == "scalar":
            a = self.view(pairs[1][0])[idx[1]]
            s = np.asarray(op.prop("scalar")).astype(a.dtype)
            dv[idx[0]] = _SCALAR[op.name](a, s).astype(dst.dtype)
        elif layout == "unary":
            dv[idx[0]] = _UNARY[op.name](self.view(pairs[1][0])[idx[1]]).astype(dst.dtype)
        elif layout == "cast":
            x = self.view(pairs[1][0])[idx[1]]
            rnd = op.prop("round")
            if x.dtype.kind == "f" and dst.dtype.kind in "iu":
                info = np.iinfo(dst.dtype)
                y = np.clip(_ROUND[rnd](x.astype(np.float64)), info.min, info.max)
                dv[idx[0]] = np.nan_to_num(y).astype(dst.dtype)
            else:
                y = x.astype(dst.dtype)
                if y.dtype.itemsize < x.dtype.itemsize and y.dtype.kind == "f":
                    self._note_overflow(x, y)
                dv[idx[0]] = y
        elif layout == "dup":
            dv[idx[0]] = np.asarray(op.prop("scalar")).astype(dst.dtype)
        elif layout == "brcb":
            lo, hi = extra[1]
            vals = self.view(pairs[1][0])[lo:hi].reshape(repeat, 8)
            epb = GRANULE // dst.itemsize
            dv[idx[0]] = np.repeat(vals, epb, axis=1)[:, cols]
        elif layout == "cmp":
            a, b = self.view(pairs[1][0])[idx[1]], self.view(pairs[2][0])[idx[2]]
            bits = np.zeros((repeat, epr), bool)
            bits[:, cols] = _CMP[op.prop("cmp")](a, b)
            lo, hi = extra[0]
            dv[lo:hi] = np.packbits(bits, axis=1, bitorder="little").ravel()
        elif layout == "sel":
            lo, hi = extra[1]
            packed = self.view(pairs[1][0])[lo:hi].reshape(repeat, epr // 8)
            bits = np.unpackbits(packed, axis=1, bitorder="little")[:, cols].astype(bool)
            a, b = self.view(pairs[2][0])[idx[2]], self.view(pairs[3][0])[idx[3]]
            dv[idx[0]] = np.where(bits, a, b)
        elif layout == "wreduce":
            x = self.view(pairs[1][0])[idx[1]]
            acc = x.astype(np.float32) if x.dtype.kind == "f" else x
            lo, hi = extra[0]
            dv[lo:hi] = _REDUCE[op.prop("kind")](acc, axis=1).astype(dst.dtype)

    def _note_overflow(self, x: np.ndarray, y: np.ndarray) -> None:
        """Record the first conversion that overflowed (finite in, infinite out): hardware
        sets its float overflow status and goes on, so this is a status, not a fault."""
        if self.overflow is not None:
            return
        bad = np.isfinite(x) & ~np.isfinite(y)
        if bad.any():
            op = self.op
            self.overflow = {"kernel": self.kernel.name, "core": self.idx,
                             "line": op.line if op else None, "instruction": op.text if op else "",
                             "elements": int(bad.sum()),
                             "max_abs": float(np.abs(x[bad].astype(np.float64)).max()),
                             "dtype": str(y.dtype)}

    def _vreduce(self, op: Op, env: dict[str, Any]) -> None:
        dst, doff, src, soff = (env[v] for v in op.operands)
        count = int(op.prop("count"))
        if count < 1:
            raise self.fail(NpuProgramError, f"count {count} must be >= 1")
        epr = self.soc.elements_per_repeat(src.itemsize)
        cost = self.soc.costs["vec_reduce"]
        self.issue(_V, cost.startup + math.ceil(count / epr) * cost.per_unit
                   + math.ceil(math.log2(max(2, epr))), op.name)
        self.check_range(src, soff, soff + count, "vreduce source")
        self.check_range(dst, doff, doff + 1, "vreduce destination")
        self.check_align(src, soff, "vreduce source")
        self.check_align(dst, doff, "vreduce destination")
        if self.check_races:
            self.access(_V, src, self.runs(src, soff, 1, count, count), False)
            self.access(_V, dst, self.runs(dst, doff, 1, 1, 1), True)
        if self.functional:
            x = self.view(src)[soff:soff + count]
            acc = x.astype(np.float32) if x.dtype.kind == "f" else x
            self.view(dst)[doff] = _REDUCE[op.prop("kind")](acc).astype(dst.dtype)


_HANDLERS: dict[str, Callable[[_Core, Op, dict[str, Any]], None]] = {
    "arith.constant": _Core._constant, "arith.cmpi": _Core._cmpi,
    "scf.for": _Core._for, "scf.if": _Core._if, "scf.yield": _Core._nop,
    "npu.get_block_idx": _Core._block_idx, "npu.get_block_num": _Core._block_num,
    "npu.get_value": _Core._get_value, "npu.set_value": _Core._set_value,
    "npu.alloc": _Core._alloc,
    "npu.set_flag": _Core._set_flag, "npu.wait_flag": _Core._wait_flag,
    "npu.pipe_barrier": _Core._barrier,
    "npu.mte2": _Core._burst, "npu.mte3": _Core._burst, "npu.load_l0": _Core._load_l0,
    "npu.mmad": _Core._mmad, "npu.fix": _Core._fix,
    **{k: _Core._vector for k in _VEC_LAYOUT}, "npu.vreduce": _Core._vreduce,
}


# ------------------------------------------------------------------------------------ driver


@dataclass
class NpuSim:
    """Simulator for one parsed program on one SoC.

    ``functional=False`` runs only the timing model and the bounds/alignment/event checks (no
    data is moved, GM arrays are optional); ``check_races`` turns the happens-before checker
    on (default) or off; ``trace_path`` writes a Chrome trace (one track per core x pipe).
    ``max_instructions`` and ``max_gm_bytes`` bound a run before it can exhaust the host."""

    program: Program
    soc: NpuSoc | None = None
    functional: bool = True
    check_races: bool = True
    max_instructions: int = 50_000_000
    max_gm_bytes: int = 4 << 30
    executed: int = field(default=0, init=False)
    gm_owner: dict[str, np.ndarray] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if self.soc is None:
            names = {k.soc for k in self.program.kernels.values()} or {"910b"}
            self.soc = get_soc(sorted(names)[0])

    def run(self, kernel_name: str, gm_buffers: dict[str, np.ndarray] | None = None,
            trace_path: str | Path | None = None) -> tuple[dict[str, np.ndarray], RunStats]:
        """Run every core of ``kernel_name``'s launch; returns (GM arrays after the launch,
        keyed by argument name and shaped like the inputs, and the timing statistics).
        Inputs are copied, never modified."""
        kernel = self.program.kernels.get(kernel_name)
        if kernel is None:
            raise NpuProgramError(f"no kernel @{kernel_name} in {self.program.source} (has "
                                  f"{', '.join(self.program.kernels) or 'none'})",
                                  kernel=kernel_name)
        assert self.soc is not None
        if kernel.soc != self.soc.name:
            raise NpuProgramError(f"kernel targets soc '{kernel.soc}', simulator is "
                                  f"'{self.soc.name}'", kernel=kernel_name)
        gm, shapes = self._bind(kernel, gm_buffers or {})
        trace: list[dict] | None = [] if trace_path is not None else None
        cores: list[CoreStats] = []
        steps = 0
        overflow: dict[str, Any] | None = None
        self.executed = 0
        self.gm_owner = {}
        with _one_blas_thread(kernel.core == "aic"):
            for i in range(kernel.block_dim):
                core = _Core(self, kernel, i, gm, trace)
                core.run()
                total = max(max(core.free), core.t_s)
                cores.append(CoreStats(i, total, dict(zip(PIPES, core.busy, strict=True)),
                                       dict(core.count)))
                steps += core.cube_steps
                overflow = overflow or core.overflow
        stats = RunStats(kernel.name, self.soc.name, self.soc.clock_hz, kernel.block_dim,
                         max(c.cycles for c in cores), cores, steps, self.functional, overflow)
        if trace is not None:
            _write_trace(Path(trace_path), trace, kernel)  # type: ignore[arg-type]
        outs = {k: v.reshape(shapes[k]) for k, v in gm.items()} if self.functional else {}
        return outs, stats

    def _bind(self, kernel: KernelDef, given: dict[str, np.ndarray]
              ) -> tuple[dict[str, np.ndarray], dict[str, tuple[int, ...]]]:
        unknown = set(given) - set(kernel.arg_names)
        if unknown:
            raise NpuProgramError(f"arrays {sorted(unknown)} bind no argument (arguments: "
                                  f"{kernel.arg_names})", kernel=kernel.name)
        gm: dict[str, np.ndarray] = {}
        shapes: dict[str, tuple[int, ...]] = {}
        for name, t in zip(kernel.arg_names, kernel.arg_types, strict=True):
            want = np.dtype(dtypes.dtype(t.dtype).numpy)
            if t.size * want.itemsize > self.max_gm_bytes:
                raise NpuLimitError(f"npusim: kernel @{kernel.name} declares GM argument "
                                    f"'{name}' of {t.size * want.itemsize} bytes, over the "
                                    f"{self.max_gm_bytes}-byte limit (max_gm_bytes)")
            if name not in given:
                if self.functional:
                    raise NpuProgramError(f"GM argument '{name}' ({t.size} x {t.dtype}) has no "
                                          "array", kernel=kernel.name)
                continue
            arr = np.asarray(given[name])
            if arr.dtype != want or arr.size != t.size:
                raise NpuProgramError(f"GM argument '{name}' wants {t.size} x {t.dtype}, got "
                                      f"{arr.size} x {arr.dtype}", kernel=kernel.name)
            gm[name] = np.array(arr, copy=True).reshape(-1)
            shapes[name] = arr.shape
        return gm, shapes


def _one_blas_thread(cube: bool) -> contextlib.AbstractContextManager:
    """``mmad``'s matmuls are a few MFLOP each: a multi-threaded BLAS spends more time waking
    and spinning its threads than multiplying (400x slower on a busy 2-core machine), so
    cube launches run with one BLAS thread when ``threadpoolctl`` is installed."""
    if not cube:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _write_trace(path: Path, events: list[dict], kernel: KernelDef) -> None:
    meta: list[dict] = []
    for core in range(kernel.block_dim):
        meta.append({"name": "process_name", "ph": "M", "pid": core,
                     "args": {"name": f"{kernel.name} core {core} ({kernel.core})"}})
        for i, p in enumerate(PIPES):
            meta.append({"name": "thread_name", "ph": "M", "pid": core, "tid": i,
                         "args": {"name": p}})
    path.write_text(json.dumps({"traceEvents": meta + events, "displayTimeUnit": "ns"}))


def run_program(text: str, kernel_name: str, gm_buffers: dict[str, np.ndarray],
                source: str = "<npu program>", **kwargs: Any
                ) -> tuple[dict[str, np.ndarray], RunStats]:
    """Parse and run in one call (``kwargs`` go to ``NpuSim``)."""
    from portc.runtimes.npusim.parser import parse_program

    trace = kwargs.pop("trace_path", None)
    return NpuSim(parse_program(text, source), **kwargs).run(kernel_name, gm_buffers, trace)
