"""npusim: executes the text of an npu program (``program.npu.mlir``) on a model of an
Ascend-like SoC (``910b``): numpy results, a per-pipe timing model, and checkers for what the
hardware would silently corrupt (out-of-bounds, misalignment, bad events, deadlocks, races).

API::

    from portc.runtimes.npusim import parse_program, NpuSim

    program = parse_program(text, source="out/program.npu.mlir")   # lark grammar npu.lark
    outs, stats = NpuSim(program, soc=None,            # None: the SoC the kernels name
                         functional=True,              # False: timing + checks only
                         check_races=True).run(
        "gemm", {"a": a, "b": b, "c": c},              # GM arrays by argument name
        trace_path=None)                               # or a path for a Chrome trace
    outs["c"]                     # GM contents after the launch (inputs are copied)
    stats.cycles, stats.pipe_utilisation(), stats.cube_utilisation, stats.cores[i].busy

Faults raise ``NpuSimError`` subclasses (``errors.py``) naming kernel, core and the
instruction's source line. The timing model and the checkers are described in ``sim.py``.
"""

from portc.runtimes.npusim.errors import (
    NpuAlignmentError,
    NpuBoundsError,
    NpuDeadlockError,
    NpuEventError,
    NpuLimitError,
    NpuOverflowError,
    NpuProgramError,
    NpuRaceError,
    NpuSimError,
)
from portc.runtimes.npusim.parser import NpuParseError, Program, parse_program
from portc.runtimes.npusim.sim import CoreStats, NpuSim, RunStats, run_program

__all__ = [
    "CoreStats", "NpuAlignmentError", "NpuBoundsError", "NpuDeadlockError", "NpuEventError",
    "NpuLimitError", "NpuOverflowError", "NpuParseError", "NpuProgramError", "NpuRaceError",
    "NpuSim", "NpuSimError", "Program", "RunStats", "parse_program", "run_program",
]
