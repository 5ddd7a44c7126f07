"""ptxsim: a simulator of the PTX text portc emits, executing a whole grid as numpy lanes.

    mod = parse_module(ptx_text, "module.ptx")
    mem = GlobalMemory()
    x = mem.alloc("x", 4 * n); mem.write(x, host_x)
    stats = PtxSim(mod, mem).launch("kernel", grid=(g, 1, 1), block=(256, 1, 1), params=[x, n])
    out = mem.read(x, np.float32, n)

Faults (out-of-bounds, misaligned, shared-memory races, barrier divergence, warp-collective
misuse, runaway loops) raise the ``PtxSimError`` subclasses below, naming kernel, instruction
with source line, block and thread.
"""

from portc.runtimes.ptxsim.errors import (
    BarrierDivergenceError,
    InstructionLimitError,
    LaunchError,
    MisalignedAccessError,
    OutOfBoundsError,
    PtxParseError,
    PtxSimError,
    SharedMemoryRaceError,
    TrapError,
    UnsupportedInstructionError,
    WarpSyncError,
)
from portc.runtimes.ptxsim.module import Entry, Param, PtxModule, SharedVar, parse_module
from portc.runtimes.ptxsim.sim import GlobalMemory, LaunchStats, PtxSim

__all__ = [
    "BarrierDivergenceError",
    "Entry",
    "GlobalMemory",
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
    "UnsupportedInstructionError",
    "WarpSyncError",
    "parse_module",
]
