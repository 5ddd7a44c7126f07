"""A flat 64-bit address space made of named, bounds-checked regions.

Regions are laid out with unmapped guard gaps between them, so an access that runs off the end
of one buffer never lands silently in the next: it raises ``OutOfBoundsError`` naming the
address and the nearest region. Each region is a ``bytearray`` (fast scalar ``int.from_bytes``)
with a numpy view over the same bytes (one fancy-index op per vector access).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np

from portc.runtimes.rvvsim.errors import OutOfBoundsError, TailRelianceError

HEAP_BASE = 0x1000_0000
GUARD = 0x1000
STACK_TOP = 0x7FFF_F000


@dataclass
class Region:
    """One allocation: [base, base + size)."""

    name: str
    base: int
    size: int
    buf: bytearray
    arr: np.ndarray
    end: int = field(init=False)  # base + size (a field: it is read on every access)

    def __post_init__(self) -> None:
        self.end = self.base + self.size


class Memory:
    """Named regions plus a stack region for ``sp``; every access must stay inside one region."""

    def __init__(self, stack_bytes: int = 1 << 20) -> None:
        self._regions: list[Region] = []
        self._bases: list[int] = []
        self._next = HEAP_BASE
        self._bases_np = np.zeros(0, np.uint64)
        self._ends_np = np.zeros(0, np.uint64)
        stack_base = STACK_TOP - stack_bytes
        self.stack = Region("stack", stack_base, stack_bytes, *self._storage(stack_bytes))
        self._insert(self.stack)
        self.stack_top = STACK_TOP
        self._last = self._regions[0]
        # whole-register spills (vs<n>r.v) may put undefined vector bytes on the stack; they
        # stay undefined there (bit map + origin id per byte) until overwritten or reloaded
        self.stack_poison = np.zeros(stack_bytes, np.uint8)
        self.stack_origin = np.zeros(stack_bytes, np.int32)
        self.stack_poisoned = False

    @staticmethod
    def _storage(n: int) -> tuple[bytearray, np.ndarray]:
        buf = bytearray(n)
        return buf, np.frombuffer(buf, np.uint8)

    def _insert(self, region: Region) -> None:
        i = bisect.bisect_right(self._bases, region.base)
        self._regions.insert(i, region)
        self._bases.insert(i, region.base)
        self._bases_np = np.array(self._bases, np.uint64)
        self._ends_np = np.array([r.end for r in self._regions], np.uint64)

    def alloc(self, name: str, nbytes: int, align: int = 64) -> int:
        """Reserve ``nbytes`` (zeroed) and return the base address."""
        if nbytes < 0 or align <= 0 or align & (align - 1):
            raise ValueError(f"alloc('{name}'): bad size {nbytes} or alignment {align}")
        if any(r.name == name for r in self._regions):
            raise ValueError(f"alloc: region '{name}' already exists")
        base = (self._next + align - 1) // align * align
        if base + nbytes + GUARD >= STACK_TOP - self._regions[-1].size:
            raise ValueError(f"alloc('{name}'): address space exhausted")
        self._insert(Region(name, base, nbytes, *self._storage(nbytes)))
        self._next = base + nbytes + GUARD
        return base

    def region(self, name: str) -> Region:
        for r in self._regions:
            if r.name == name:
                return r
        raise KeyError(name)

    def _nearest(self, addr: int) -> str:
        best = min(self._regions, key=lambda r: 0 if r.base <= addr < r.end else
                   min(abs(addr - r.base), abs(addr - (r.end - 1))))
        if best.base <= addr:
            rel = f"{addr - best.base} bytes past the start" if addr < best.end else \
                f"{addr - best.end} bytes past the end"
        else:
            rel = f"{best.base - addr} bytes before the start"
        return f"nearest region '{best.name}' [{best.base:#x}, {best.end:#x}) ({rel})"

    def find(self, addr: int, nbytes: int) -> Region:
        """The region holding [addr, addr+nbytes), or ``OutOfBoundsError``."""
        r = self._last
        if r.base <= addr and addr + nbytes <= r.end:
            return r
        i = bisect.bisect_right(self._bases, addr) - 1
        if i >= 0:
            r = self._regions[i]
            if addr + nbytes <= r.end:
                self._last = r
                return r
        raise OutOfBoundsError(f"{nbytes}-byte access at address {addr:#x} is outside every "
                               f"region; {self._nearest(addr)}")

    # --- host-side access -------------------------------------------------------------------
    def write(self, addr: int, data: np.ndarray) -> None:
        raw = np.ascontiguousarray(data).view(np.uint8).ravel()
        r = self.find(addr, raw.size)
        r.arr[addr - r.base: addr - r.base + raw.size] = raw

    def read(self, addr: int, dtype: np.dtype | type, count: int) -> np.ndarray:
        dt = np.dtype(dtype)
        n = dt.itemsize * count
        r = self.find(addr, n)
        return r.arr[addr - r.base: addr - r.base + n].copy().view(dt)

    # --- scalar access (hot path) -----------------------------------------------------------
    def load_int(self, addr: int, nbytes: int, signed: bool) -> int:
        r = self.find(addr, nbytes)
        off = addr - r.base
        if self.stack_poisoned and r is self.stack and self.stack_poison[off:off + nbytes].any():
            raise TailRelianceError(f"scalar load at {addr:#x} reads stack bytes spilled from "
                                    f"undefined vector elements")
        return int.from_bytes(r.buf[off:off + nbytes], "little", signed=signed)

    def store_int(self, addr: int, nbytes: int, value: int) -> None:
        r = self.find(addr, nbytes)
        off = addr - r.base
        r.buf[off:off + nbytes] = (value & ((1 << (8 * nbytes)) - 1)).to_bytes(nbytes, "little")
        if self.stack_poisoned and r is self.stack:
            self.stack_poison[off:off + nbytes] = 0

    # --- undefined bytes on the stack ---------------------------------------------------------
    def stack_span(self, addr: int, nbytes: int) -> int | None:
        """Offset of [addr, addr+nbytes) in the stack region, or None when elsewhere."""
        st = self.stack
        if st.base <= addr and addr + nbytes <= st.end:
            return addr - st.base
        return None

    def spill(self, addr: int, poison: np.ndarray, origin: np.ndarray) -> None:
        """Record undefined bits for a whole-register store to the stack at ``addr``."""
        off = addr - self.stack.base
        self.stack_poison[off:off + poison.size] = poison
        self.stack_origin[off:off + poison.size] = origin
        self.stack_poisoned = self.stack_poisoned or bool(poison.any())

    def defined(self, addrs: np.ndarray, nbytes: int) -> None:
        """Mark element bytes at ``addrs`` (in the stack) defined after a store."""
        if not self.stack_poisoned:
            return
        base = np.uint64(self.stack.base)
        inside = (addrs >= base) & (addrs < np.uint64(self.stack.end))
        if inside.any():
            off = (addrs[inside] - base).astype(np.int64)
            idx = off[:, None] + np.arange(nbytes, dtype=np.int64)
            self.stack_poison[np.minimum(idx, self.stack.size - 1)] = 0

    def undefined(self, addrs: np.ndarray, nbytes: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Per element: any undefined byte (bool) and its origin id, for stack addresses."""
        if not self.stack_poisoned:
            return None
        base = np.uint64(self.stack.base)
        inside = (addrs >= base) & (addrs + np.uint64(nbytes) <= np.uint64(self.stack.end))
        if not inside.any():
            return None
        off = np.where(inside, addrs - base, 0).astype(np.int64)
        idx = off[:, None] + np.arange(nbytes, dtype=np.int64)
        pois = (self.stack_poison[idx] != 0).any(axis=1) & inside
        if not pois.any():
            return None
        return pois, self.stack_origin[idx].max(axis=1)

    # --- vector access ----------------------------------------------------------------------
    def _check_elems(self, addrs: np.ndarray, nbytes: int, elems: np.ndarray) -> np.ndarray:
        """Region index of every address; raises naming the first element outside all regions."""
        idx = np.searchsorted(self._bases_np, addrs, side="right").astype(np.int64) - 1
        ok = idx >= 0
        ends = self._ends_np[np.maximum(idx, 0)]
        ok &= addrs + np.uint64(nbytes) <= ends
        if not ok.all():
            k = int(np.argmin(ok))
            err = OutOfBoundsError(
                f"{nbytes}-byte element access at address {int(addrs[k]):#x} is outside every "
                f"region; {self._nearest(int(addrs[k]))}", element=int(elems[k]))
            raise err
        return idx

    def contiguous(self, addr: int, nbytes: int) -> np.ndarray | None:
        """A writable byte view of [addr, addr+nbytes) when it lies in one region, else None."""
        r = self._last
        if r.base <= addr and addr + nbytes <= r.end:
            return r.arr[addr - r.base: addr - r.base + nbytes]
        i = bisect.bisect_right(self._bases, addr) - 1
        if i < 0:
            return None
        r = self._regions[i]
        if addr + nbytes > r.end:
            return None
        self._last = r
        return r.arr[addr - r.base: addr - r.base + nbytes]

    def gather(self, addrs: np.ndarray, nbytes: int, elems: np.ndarray) -> np.ndarray:
        """Bytes [n, nbytes] at each address (addrs: uint64); ``elems`` names them in errors."""
        out = np.empty((addrs.size, nbytes), np.uint8)
        if addrs.size == 0:
            return out
        idx = self._check_elems(addrs, nbytes, elems)
        lane = np.arange(nbytes, dtype=np.int64)
        for ri in np.unique(idx):
            sel = idx == ri
            r = self._regions[int(ri)]
            off = (addrs[sel] - np.uint64(r.base)).astype(np.int64)
            out[sel] = r.arr[off[:, None] + lane]
        return out

    def scatter(self, addrs: np.ndarray, data: np.ndarray, elems: np.ndarray) -> None:
        """Store ``data`` [n, nbytes] in element order (a later element wins on overlap)."""
        if addrs.size == 0:
            return
        nbytes = data.shape[1]
        idx = self._check_elems(addrs, nbytes, elems)
        lane = np.arange(nbytes, dtype=np.int64)
        for ri in np.unique(idx):
            sel = idx == ri
            r = self._regions[int(ri)]
            off = (addrs[sel] - np.uint64(r.base)).astype(np.int64)
            r.arr[off[:, None] + lane] = data[sel]
