"""ptxsim: a simulator of the PTX text portc emits, executing a whole grid as numpy lanes.

    mod = parse_module(ptx_text, "module.ptx")          # PtxModule; mod.entries[name].params ...
    mem = GlobalMemory()
    x = mem.alloc("x", 4 * n); mem.write(x, host_x)
    stats = PtxSim(mod, mem).launch("kernel", grid=(g, 1, 1), block=(256, 1, 1), params=[x, n])
    out = mem.read(x, np.float32, n)                    # stats.warp_instructions, .by_opcode

Faults (out-of-bounds, misaligned, shared-memory races and reads of never-written shared memory,
conflicting global stores within one instruction, barrier divergence, warp-collective misuse,
trap, runaway loops) raise the ``PtxSimError`` subclasses below, naming kernel,
instruction with source line, block and thread; text that does not parse or decode raises
``PtxParseError`` (an ``IRError``) naming the line.

Modelling choices (what a reader of a result must know):
- ``.approx`` functions, ``div.full`` and ``rcp/sqrt.approx`` return the correctly rounded value
  of the float64 function; ``mma`` accumulates exact products in float64 and rounds once.
- Every other float result is IEEE-exact for its rounding modifier (fp.py).
- Atomics serialise in lane order and are exempt from race tracking.
- ``cp.async`` data lands in shared memory at the wait that completes its (per-thread) group;
  reading it earlier, even from the issuing thread, sees the old bytes.
- Shared-memory accesses are ordered by ``bar.sync`` (per block) and ``bar.warp.sync`` (per
  warp); two readers of a byte followed by a writer in the same epoch are reported even when a
  warp sync orders them (conservative).
- Only barrier 0 without a thread count; ``.global``/``.const`` variables at module scope only
  (allocated in ``GlobalMemory`` when ``PtxSim`` is made); ``.local`` arrays per thread (also
  through generic pointers); no ``.func``/``call``, no ``mma.sp``; unknown qualifiers are
  refused rather than ignored.
- Integer division by zero yields the values NVIDIA hardware returns (all ones / the dividend).
- Large grids run in batches of whole blocks (``launch(max_lanes=...)``); blocks never
  communicate except through atomics, so results do not depend on the batch size.
"""

from portc.runtimes.ptxsim.errors import (
    BarrierDivergenceError,
    GlobalWriteConflictError,
    InstructionLimitError,
    LaunchError,
    MisalignedAccessError,
    OutOfBoundsError,
    PtxParseError,
    PtxSimError,
    SharedMemoryRaceError,
    TrapError,
    UninitializedSharedError,
    UnsupportedInstructionError,
    WarpSyncError,
)
from portc.runtimes.ptxsim.module import (
    Entry,
    GlobalVar,
    Param,
    PtxModule,
    SharedVar,
    parse_module,
)
from portc.runtimes.ptxsim.sim import GlobalMemory, LaunchStats, PtxSim

__all__ = [
    "BarrierDivergenceError",
    "Entry",
    "GlobalMemory",
    "GlobalVar",
    "GlobalWriteConflictError",
    "InstructionLimitError",
    "LaunchError",
    "LaunchStats",
    "MisalignedAccessError",
    "OutOfBoundsError",
    "Param",
    "PtxModule",
    "PtxParseError",
    "PtxSim",
    "PtxSimError",
    "SharedMemoryRaceError",
    "SharedVar",
    "TrapError",
    "UninitializedSharedError",
    "UnsupportedInstructionError",
    "WarpSyncError",
    "parse_module",
]
