"""``RvvMachine``: compile a ``Program`` to closures once, then run calls block by block.

Every static instruction becomes ``op(state) -> next_index`` (see ``core.py``), and every basic
block one generated function over those closures (``blocks.py``); ``call`` sets up the LP64D
argument registers, a 16-byte aligned ``sp`` at the top of the memory's stack region and
``ra`` = a sentinel address, then runs ``pc = block(pc).run(state)`` until ``ret`` reaches the
sentinel. A block that is a loop of batchable instructions may first run its iterations at
once (``batch.py``). A fault inside any closure is caught once here and located
(function, source line, instruction text) before it propagates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from portc.runtimes.rvvsim import scalar, vector, vmem  # noqa: F401  (registers the ISA tables)
from portc.runtimes.rvvsim.batch import plan_loop
from portc.runtimes.rvvsim.blocks import Block, build_block, leaders
from portc.runtimes.rvvsim.core import (
    FNAMES,
    HALT,
    RET_SENTINEL,
    TABLE,
    XNAMES,
    Ctx,
    Op,
    State,
    decode,
    s64,
)
from portc.runtimes.rvvsim.errors import (
    AbiError,
    AsmSyntaxError,
    IllegalInstructionError,
    InstructionLimitError,
    RvvSimError,
)
from portc.runtimes.rvvsim.memory import Memory
from portc.runtimes.rvvsim.parser import Program

CALLEE_SAVED_X = [8, 9] + list(range(18, 28))  # s0-s11
CALLEE_SAVED_F = [8, 9] + list(range(18, 28))  # fs0-fs11
VLENS = (128, 256, 512, 1024)


@dataclass
class RunStats:
    """What one call did: dynamic instruction counts and the return registers."""

    instructions: int
    per_mnemonic: dict[str, int] = field(default_factory=dict)
    a0: int = 0
    a1: int = 0
    fa0_bits: int = 0
    #: loop iterations the batcher ran at once, and their instructions (included above)
    batched_iterations: int = 0
    batched_instructions: int = 0

    @property
    def fa0_double(self) -> float:
        return float(np.array([self.fa0_bits], np.uint64).view(np.float64)[0])

    @property
    def fa0_single(self) -> float:
        return float(np.array([self.fa0_bits & 0xFFFFFFFF], np.uint32).view(np.float32)[0])


def _compile(instr_index: int, program: Program) -> Op:
    ins = program.instrs[instr_index]
    alts = TABLE.get(ins.mnemonic)
    if alts is None:
        raise AsmSyntaxError(f"{program.source}:{ins.line}: unknown or unsupported mnemonic "
                             f"'{ins.mnemonic}' in `{ins.text}`")
    first_err: AsmSyntaxError | None = None
    for sig, builder in alts:
        c = Ctx(ins, program, ins.mnemonic)
        try:
            args = decode(c, sig)
        except AsmSyntaxError as exc:
            first_err = first_err or exc
            continue
        return builder(c, args)
    assert first_err is not None
    raise first_err


class RvvMachine:
    """An RV64IMFD + RVV 1.0 hart with VLEN ``vlen`` (ELEN=64) over a ``Memory``."""

    def __init__(self, program: Program, memory: Memory, vlen: int = 256,
                 batch_loops: bool = True) -> None:
        """``batch_loops=False`` runs every loop instruction by instruction (the reference the
        batcher is tested against)."""
        if vlen not in VLENS:
            raise ValueError(f"VLEN must be one of {VLENS}, not {vlen}")
        self.program = program
        self.vlen = vlen
        self.batch_loops = batch_loops
        self.ops: list[Op] = [_compile(i, program) for i in range(len(program.instrs))]
        self.state = State(vlen, memory, program)
        self._leaders = leaders(program)
        self._blocks: list[Block | None] = [None] * (len(self.ops) + 1)

    def _block(self, pc: int) -> Block:
        blk = build_block(pc, self.ops, self.program, self._leaders)
        if self.batch_loops:
            blk.loop = plan_loop(blk, self.ops, self.program)
        self._blocks[pc] = blk
        return blk

    @property
    def memory(self) -> Memory:
        return self.state.mem

    @memory.setter
    def memory(self, mem: Memory) -> None:
        """Swap the address space (reuse the compiled program on fresh buffers)."""
        self.state.mem = mem

    def call(self, name: str, int_args: Sequence[int] = (), fp_args: Sequence[float] = (),
             max_instructions: int = 100_000_000) -> RunStats:
        """Run function ``name`` under LP64D. ``fp_args``: a ``np.float32`` is passed NaN-boxed
        as a single, anything else as a double. Raises ``RvvSimError`` subclasses on faults."""
        if len(fp_args) > 8:
            raise ValueError("at most 8 fp arguments (fa0-fa7); pass more through memory")
        pc = self.program.entry(name)
        if pc >= len(self.ops):
            raise AsmSyntaxError(f"{self.program.source}: function '{name}' has no instructions")
        st = self.state
        x, f = st.x, st.f
        for i in range(32):
            x[i] = 0
        for i, v in enumerate(int_args[:8]):
            x[10 + i] = s64(int(v))
        for i, v in enumerate(fp_args):
            if isinstance(v, np.float32):
                f[10 + i] = scalar.BOX | int(np.array([v], np.float32).view(np.uint32)[0])
            else:
                f[10 + i] = int(np.array([float(v)], np.float64).view(np.uint64)[0])
        x[1] = RET_SENTINEL
        x[2] = self.memory.stack_top & ~15
        extra = list(int_args[8:])  # LP64D: the 9th integer argument on is at 0(sp), 8(sp), ...
        if extra:
            x[2] -= (8 * len(extra) + 15) & ~15
            for i, v in enumerate(extra):
                self.memory.store_int(x[2] + 8 * i, 8, int(v))
        for r in CALLEE_SAVED_X:
            x[r] = s64(0x5A5A_0000_0000_0000 | r)
        for r in CALLEE_SAVED_F:
            f[r] = 0x7FF4_0000_0000_0000 | r  # distinctive signalling-NaN patterns
        saved_x = [x[r] for r in CALLEE_SAVED_X] + [x[2]]
        saved_f = [f[r] for r in CALLEE_SAVED_F]
        # vector registers are undefined at entry (caller-saved): reading one is a bug
        st.V[:] = 0xFF
        st.P[:] = 0xFF
        st.dirty = (1 << 32) - 1
        st.mfmt = 0
        st.O[:] = st.origin_id("function entry (vector registers are undefined at a call)")
        st.set_vill()
        st.frm = 0

        ops = self.ops
        n = len(ops)
        blocks = self._blocks
        bhits = [0] * n  # executions per block start
        shits: list[int] | None = None  # per instruction, for blocks run one step at a time
        count = batched = batched_count = 0
        last = -1
        blk: Block | None = None
        stepping: int | None = None
        try:
            with np.errstate(all="ignore"):
                while pc >= 0:
                    blk = blocks[pc] if pc < n else None
                    if blk is None:
                        if pc >= n:
                            raise IllegalInstructionError("execution ran past the last "
                                                          "instruction (missing ret?)")
                        blk = self._block(pc)
                    size = blk.end - blk.start + 1
                    if blk.loop is not None and last != pc:
                        # entering a batchable loop: its iterations at once, as far as the
                        # batcher can prove them; the rest (if any) one block at a time
                        k, exits = blk.loop.run(st, (max_instructions - count) // size)
                        if k:
                            count += k * size
                            bhits[pc] += k
                            batched += k
                            batched_count += k * size
                            if exits:  # the last of them fell through the branch
                                last, pc = pc, blk.end + 1
                                continue
                            last = -1  # more iterations may batch after this one
                        else:
                            last = pc  # declined: step the rest of this loop
                    else:
                        last = pc
                    if count + size > max_instructions:  # the limit falls inside this block
                        shits = shits or [0] * n
                        for stepping in range(blk.start, blk.end + 1):
                            count += 1
                            if count > max_instructions:
                                raise InstructionLimitError(
                                    f"more than {max_instructions} instructions executed (raise "
                                    f"max_instructions or look for an endless loop)")
                            shits[stepping] += 1
                            pc = ops[stepping](st)
                        stepping = None
                        continue
                    count += size
                    bhits[pc] += 1
                    pc = blk.run(st)
        except Exception as exc:
            at = stepping if stepping is not None else (
                blk.fault_index(exc.__traceback__) if blk is not None else None)
            at = min(pc if at is None else at, n - 1)
            ins = self.program.instrs[at]
            if isinstance(exc, RvvSimError):
                exc.locate(self.program.function_of(at), ins.line, ins.text)
            else:  # a simulator bug: keep the traceback, say where it happened
                exc.add_note(f"rvvsim: while executing line {ins.line} `{ins.text}` in "
                             f"function '{self.program.function_of(ins.index)}'")
            raise
        assert pc == HALT
        for r, v in zip(CALLEE_SAVED_X + [2], saved_x, strict=True):
            if x[r] != v:
                raise AbiError(f"function '{name}' returned with callee-saved register "
                               f"{XNAMES[r]} changed ({v:#x} -> {x[r] & (2**64 - 1):#x}); "
                               f"save and restore it (LP64D)")
        for r, v in zip(CALLEE_SAVED_F, saved_f, strict=True):
            if f[r] != v:
                raise AbiError(f"function '{name}' returned with callee-saved register "
                               f"{FNAMES[r]} changed; save and restore it (LP64D)")
        if st.frm:
            raise AbiError(f"function '{name}' returned with frm={st.frm} (rounding mode "
                           f"changed); restore it (fsrm) before returning")
        instrs = self.program.instrs
        per: dict[str, int] = {}
        for start, h in enumerate(bhits):
            if h:
                b = blocks[start]
                assert b is not None
                for i in range(b.start, b.end + 1):
                    m = instrs[i].mnemonic
                    per[m] = per.get(m, 0) + h
        for i, h in enumerate(shits or ()):
            if h:
                per[instrs[i].mnemonic] = per.get(instrs[i].mnemonic, 0) + h
        return RunStats(count, per, x[10], x[11], f[10], batched, batched_count)
