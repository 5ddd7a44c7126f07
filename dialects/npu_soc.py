"""Target description of the Ascend-like NPU: one table per SoC (``--soc 910b``).

Every size, shape, rate and cost that the ``npu`` dialect's verifiers, the cube lowering and the
``npusim`` timing model need lives in one ``NpuSoc`` instance, the way LLVM keeps target facts in
description tables, so that a second SoC is one more instance and no lowering carries literals.

Sources: the public Da Vinci / Ascend C programming guides (buffer sizes, cube and vector shapes,
32-byte block granularity, repeat <= 255, 128-bit mask, event ids 0-7, fractal formats) and public
910B product figures (24 AIC + 48 AIV, ~1.8 GHz class clock, ~1.6 TB/s HBM, 192 MB L2). The
*costs and bandwidths* are modelling assumptions, not measurements: they are chosen to be
plausible for the 910B class (one 16x16x16 cube step per cycle per core gives
24 * 1.8e9 * 8192 flop = 354 TFLOPS fp16, the public 910B order of magnitude) and are documented
field by field below. Timing results from ``npusim`` are therefore model numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

#: the pipes of one AI core; ``S`` is the scalar unit that issues to all others
PIPES: tuple[str, ...] = ("S", "V", "M", "MTE1", "MTE2", "MTE3", "FIX")
#: address spaces; ``gm`` is global memory shared by all cores, the rest are per-core buffers
SPACES: tuple[str, ...] = ("gm", "l1", "l0a", "l0b", "l0c", "ub")


@dataclass(frozen=True)
class SpaceSpec:
    """One address space: capacity in bytes, required start alignment in bytes, and which core
    type owns it (``"aic"`` cube core, ``"aiv"`` vector core, ``"any"`` for GM)."""

    size: int
    align: int
    core: str


@dataclass(frozen=True)
class CubeShape:
    """One cube instruction step: ``m0 x k0`` A fractal times ``k0 x n0`` B fractal into an
    ``m0 x n0`` accumulator of ``acc`` dtype. ``k0 * bytes(dtype)`` is always 32 bytes, which is
    why fp16 fractals are 16x16 and int8 fractals 16x32."""

    m0: int
    k0: int
    n0: int
    acc: str


@dataclass(frozen=True)
class PipeCost:
    """Cycles of one instruction: ``startup`` plus ``per_unit`` times its work units (repeats for
    the vector unit, 16x16xk0 cube steps for ``M``, one for sync and scalar instructions)."""

    startup: int
    per_unit: float


@dataclass(frozen=True)
class NpuSoc:
    """The whole target description of one SoC (see the module docstring for sources)."""

    name: str
    clock_hz: float
    aic_cores: int
    aiv_cores: int
    spaces: Mapping[str, SpaceSpec]
    cube: Mapping[str, CubeShape]
    #: vector unit: 8 blocks of 32 bytes per repeat, repeat count 0..255 (0 is a no-op)
    vector_bytes_per_repeat: int
    block_bytes: int
    max_repeat: int
    mask_bits: int
    events: int
    #: dtypes each vector instruction class accepts (Ascend C basic API tables, 910B)
    vector_dtypes: Mapping[str, tuple[str, ...]]
    #: DMA engines: bytes per cycle and fixed latency per instruction (modelling assumptions)
    engine_bytes_per_cycle: Mapping[str, float]
    engine_latency: Mapping[str, int]
    #: GM (L2-backed) bandwidth shared by all cores of a launch; each core's MTE2/MTE3 rate is
    #: capped at its fair share ``gm_bytes_per_cycle / active cores`` (static fair-share model)
    gm_bytes_per_cycle: float
    #: per-instruction costs for the compute pipes, keyed by cost class (see ``cost_class``)
    costs: Mapping[str, PipeCost] = field(default_factory=dict)
    #: an AI CPU launch (operators the AI cores cannot run), in AI-core cycles: a fixed
    #: dispatch cost plus a per-element cost of the AI CPU's scalar loop (assumptions: ~10 us
    #: to hand an operator to the AI CPU and back, ~2 ns per element on its ARM cores)
    aicpu_launch_cycles: float = 18_000.0
    aicpu_cycles_per_element: float = 4.0

    def elements_per_repeat(self, nbytes: int) -> int:
        return self.vector_bytes_per_repeat // nbytes

    def space(self, name: str) -> SpaceSpec:
        try:
            return self.spaces[name]
        except KeyError:
            raise KeyError(f"unknown address space '{name}' (known: {', '.join(self.spaces)})") \
                from None

    def cycles_to_seconds(self, cycles: float) -> float:
        return cycles / self.clock_hz


_KB = 1024

SOC_910B = NpuSoc(
    name="910b",
    clock_hz=1.8e9,  # "1.8 GHz class" AI core clock (public 910B figure, rounded)
    aic_cores=24,
    aiv_cores=48,
    spaces=MappingProxyType({
        # GM: the model caps it only by the arrays a launch binds; 64 GiB HBM class
        "gm": SpaceSpec(64 * _KB * _KB * _KB, 1, "any"),
        "l1": SpaceSpec(512 * _KB, 32, "aic"),
        "l0a": SpaceSpec(64 * _KB, 32, "aic"),
        "l0b": SpaceSpec(64 * _KB, 32, "aic"),
        "l0c": SpaceSpec(128 * _KB, 512, "aic"),
        "ub": SpaceSpec(192 * _KB, 32, "aiv"),
    }),
    cube=MappingProxyType({
        "float16": CubeShape(16, 16, 16, "float32"),
        "bfloat16": CubeShape(16, 16, 16, "float32"),
        "int8": CubeShape(16, 32, 16, "int32"),
        # fp32 operands (``--precision fp32``): 16x8 fractals (k0 * 4 bytes = 32), so one
        # step does half the MACs of an fp16 step (assumption: same step rate, half the flops)
        "float32": CubeShape(16, 8, 16, "float32"),
    }),
    vector_bytes_per_repeat=256,
    block_bytes=32,
    max_repeat=255,
    mask_bits=128,
    events=8,
    vector_dtypes=MappingProxyType({
        "arith": ("float16", "float32", "int16", "int32"),  # add sub mul max min (+scalar forms)
        "float": ("float16", "float32"),  # div exp ln sqrt rsqrt rec, relu abs neg
        "move": ("float16", "float32", "int16", "int32", "bfloat16", "uint16", "uint32"),
        "cast": ("float16", "float32", "bfloat16", "int8", "uint8", "int16", "int32"),
    }),
    engine_bytes_per_cycle=MappingProxyType({
        "MTE2": 128.0,  # GM -> L1/UB per core (assumption: ~230 GB/s per core)
        "MTE3": 128.0,  # UB -> GM per core
        "MTE1": 256.0,  # L1 -> L0A/L0B (assumption: feeds a 16x16x16 step every ~4 cycles)
        "FIX": 256.0,  # L0C -> GM/L1, counted on the fp32/int32 bytes read from L0C
    }),
    engine_latency=MappingProxyType({"MTE2": 120, "MTE3": 100, "MTE1": 20, "FIX": 40}),
    # L2-resident working set: 2 KiB/cycle ~ 3.7 TB/s aggregate (assumption; HBM alone is
    # ~1.6 TB/s ~ 890 B/cycle at 1.8 GHz, the L2 in front of it is faster)
    gm_bytes_per_cycle=2048.0,
    costs=MappingProxyType({
        "mmad": PipeCost(8, 1.0),  # one 16 x 16 x k0 cube step per cycle after a short fill
        "vec_simple": PipeCost(6, 1.0),  # add/mul/max/copy/dup/select/compare: 1 repeat/cycle
        "vec_transcendental": PipeCost(10, 2.0),  # exp ln sqrt rsqrt rec div: 2 cycles/repeat
        "vec_cast": PipeCost(6, 1.0),
        "vec_reduce": PipeCost(12, 2.0),  # in-repeat tree (8 blocks, then 8 -> 1)
        "sync": PipeCost(1, 0.0),  # set_flag / wait_flag issue
        "barrier": PipeCost(2, 0.0),
        "scalar": PipeCost(1, 0.0),  # one scalar instruction per issued op
        # npu.get_value: a scalar read of GM/UB through the scalar data cache (assumption: an
        # L2 hit, ~30 ns); the scalar unit stalls for it, so gathers pay it once per row
        "scalar_load": PipeCost(50, 0.0),
        "scalar_store": PipeCost(20, 0.0),  # npu.set_value: a write into the data cache
    }),
)

SOCS: Mapping[str, NpuSoc] = MappingProxyType({"910b": SOC_910B})


def get_soc(name: str) -> NpuSoc:
    """The SoC table for ``--soc``; KeyError lists what exists."""
    try:
        return SOCS[name]
    except KeyError:
        raise KeyError(f"unknown NPU SoC '{name}' (known: {', '.join(SOCS)})") from None


def ceil_to(x: int, m: int) -> int:
    return -(-x // m) * m
