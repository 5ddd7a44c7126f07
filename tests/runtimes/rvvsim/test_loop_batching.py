"""The loop batcher (``batch.py``) against qemu and against rvvsim stepping every instruction.

Each loop is of a shape portc emits (a matmul K loop, a strip-mined element-wise loop with
compares and merges, accumulators of several kinds) or one the batcher must refuse (a store
read back by a later iteration, a directed rounding mode, a loaded value used as an address
increment). Every case must give qemu's bytes at every VLEN, with the batcher on and off,
with equal instruction counts; the cases marked ``batched`` must actually have been batched.
Faults inside a batchable loop must be the faults of the instruction-by-instruction run.
"""

from __future__ import annotations

import numpy as np
import pytest

from portc.runtimes.rvvsim import (
    InstructionLimitError,
    Memory,
    OutOfBoundsError,
    RunStats,
    RvvMachine,
    TailRelianceError,
    parse_program,
)

from .harness import Case, assembly, compare, need_tools, run_qemu, run_sim

VLENS = [128, 256, 512, 1024]

# portc's matmul K loop: out[0:vl] = sum_k a[k] * b[k, 0:vl] (one rounding per mul and add)
MATMUL_K = """
    vsetvli t0, a5, e32, m4, ta, ma
    fmv.w.x ft0, zero
    fsgnj.d ft11, ft0, ft0
    vfmv.v.f v4, ft11
    mv a7, a4
    slli t2, a5, 2
1:  flw ft1, 0(a0)
    fsgnj.d ft11, ft1, ft1
    vfmv.v.f v8, ft11
    vle32.v v12, (a1)
    vfmul.vv v16, v8, v12
    vfadd.vv v4, v4, v16
    addi a0, a0, 4
    add a1, a1, t2
    addi a7, a7, -1
    bnez a7, 1b
    vse32.v v4, (a3)"""

# the same down a column of b with a strided load whose stride is rewritten every iteration
MATMUL_STRIDED = """
    vsetvli t0, a5, e32, m2, ta, ma
    vmv.v.i v4, 0
    mv a7, a4
1:  flw ft1, 0(a0)
    vfmv.v.f v8, ft1
    slli t1, a4, 2
    vlse32.v v12, (a1), t1
    vfmul.vv v16, v8, v12
    vfadd.vv v4, v16, v4
    addi a0, a0, 4
    addi a1, a1, 4
    addi a7, a7, -1
    bnez a7, 1b
    vse32.v v4, (a3)"""

# portc's vfmacc.vf microkernel shape: accumulators updated several times per iteration
# (vfmacc/vfnmsac add, vfmsac subtracts the accumulator: two sign patterns, run as two stacks)
MICROKERNEL = """
    vsetvli t0, a5, e32, m4, ta, ma
    flw ft9, 0(a2)
    vfmv.v.f v0, ft9
    vfmv.v.f v4, ft9
    vfmv.v.f v8, ft9
    slli t2, a5, 2
1:  vle32.v v12, (a1)
    flw ft0, 0(a0)
    vfmacc.vf v0, ft0, v12
    flw ft1, 4(a0)
    vfnmsac.vf v4, ft1, v12
    vfmsac.vf v8, ft0, v12
    add a1, a1, t2
    vle32.v v12, (a1)
    flw ft0, 8(a0)
    vfmacc.vf v0, ft0, v12
    flw ft1, 12(a0)
    vfnmsac.vf v4, ft1, v12
    vfmsac.vf v8, ft1, v12
    add a1, a1, t2
    addi a0, a0, 16
    addi a4, a4, -1
    bnez a4, 1b
    vse32.v v0, (a3)
    add a3, a3, t2
    vse32.v v4, (a3)
    add a3, a3, t2
    vse32.v v8, (a3)"""

# a loop whose only vector register written is the accumulator (its tail is set by the batch)
ACC_ONLY = """
    vsetvli t0, a5, e32, m2, ta, ma
    vle32.v v4, (a1)
    vmv.v.i v2, 0
1:  vfadd.vv v2, v2, v4
    addi a4, a4, -1
    bnez a4, 1b
    vse32.v v2, (a3)"""

# strip-mined element-wise: vsetvli in the body, compares into v0, merges, fma, conversions
ELEMENTWISE = """
    li t1, 1065353216
    fmv.w.x ft2, t1
1:  vsetvli t0, a4, e32, m2, ta, ma
    vle32.v v2, (a0)
    vle32.v v4, (a1)
    vfmul.vv v6, v2, v4
    vfadd.vf v6, v6, ft2
    vfmacc.vv v6, v2, v4
    vfmin.vf v10, v6, ft2
    vmflt.vf v0, v2, ft2
    vfmerge.vfm v8, v6, ft2, v0
    vmfne.vv v0, v6, v6
    vmerge.vvm v8, v8, v2, v0
    vfcvt.x.f.v v12, v8
    vadd.vx v12, v12, t1
    vfcvt.f.x.v v14, v12
    vfsub.vv v8, v8, v14
    vfsgnjx.vv v8, v8, v10
    vse32.v v8, (a3)
    sub a4, a4, t0
    slli t0, t0, 2
    add a0, a0, t0
    add a1, a1, t0
    add a3, a3, t0
    bnez a4, 1b"""

# compares into several mask registers combined by mask logic (moves, not, or, the vmclr idiom)
MASK_LOGIC = """
    flw ft0, 0(a2)
1:  vsetvli t0, a4, e32, m1, ta, ma
    vle32.v v4, (a0)
    vle32.v v5, (a1)
    vmflt.vv v1, v4, v5
    vmfne.vv v2, v5, v5
    vmor.mm v3, v1, v2
    vmnot.m v0, v3
    vfmerge.vfm v6, v4, ft0, v0
    vmand.mm v0, v1, v1
    vmerge.vvm v6, v6, v5, v0
    vmxor.mm v7, v7, v7
    vmandn.mm v0, v2, v7
    vfmerge.vfm v6, v6, ft0, v0
    vse32.v v6, (a3)
    sub a4, a4, t0
    slli t0, t0, 2
    add a0, a0, t0
    add a1, a1, t0
    add a3, a3, t0
    bnez a4, 1b"""

# integer accumulator (wraps) and a vfmacc.vf accumulator (stepped row by row), blt loop
ACCUMULATE = """
    vsetvli t0, a5, e32, m1, ta, ma
    vmv.v.i v1, 0
    vmv.v.i v2, 0
    li a6, 0
    slli t2, a5, 2
1:  vle32.v v3, (a0)
    vmul.vx v4, v3, a6
    vadd.vv v1, v4, v1
    flw ft1, 0(a1)
    vfcvt.f.x.v v5, v3
    vfmacc.vf v2, ft1, v5
    add a0, a0, t2
    addi a1, a1, 4
    addi a6, a6, 1
    blt a6, a4, 1b
    vse32.v v1, (a3)
    slli t2, a5, 2
    add a3, a3, t2
    vse32.v v2, (a3)"""

# in place: each iteration reads and then overwrites its own strip (allowed), bgeu loop
IN_PLACE = """
    mv a6, a0
    add a7, a0, a4
1:  vsetvli t0, a5, e64, m1, ta, ma
    vle64.v v1, (a6)
    vle64.v v2, (a1)
    vxor.vv v1, v1, v2
    vsll.vi v1, v1, 3
    vse64.v v1, (a6)
    slli t1, t0, 3
    add a6, a6, t1
    add a1, a1, t1
    bgtu a7, a6, 1b
    vsetvli t0, a4, e8, m8, ta, ma
    vle8.v v8, (a0)
    vse8.v v8, (a3)"""

# scalar loads feeding a splat, scalar stores of an induction value
SCALARS = """
    mv a6, a3
    li t3, 0
1:  ld t1, 0(a0)
    lw t2, 8(a0)
    vsetivli zero, 2, e64, m1, ta, ma
    vmv.v.x v1, t1
    vadd.vx v1, v1, t2
    vse64.v v1, (a6)
    sd t3, 16(a6)
    addi t3, t3, 3
    addi a0, a0, 16
    addi a6, a6, 24
    addi a4, a4, -1
    bnez a4, 1b"""

# a later iteration reads what an earlier one stored: must run instruction by instruction
FORWARD = """
    lw t1, 0(a0)
    sw t1, 0(a3)
1:  lw t1, 0(a3)
    sw t1, 4(a3)
    addi a3, a3, 4
    addi a4, a4, -1
    bnez a4, 1b"""

FORWARD_VECTOR = """
    vsetivli zero, 4, e32, m1, ta, ma
    vle32.v v1, (a0)
    vse32.v v1, (a3)
    addi a6, a3, 16
    flw ft0, 0(a1)
1:  vle32.v v1, (a3)
    vfadd.vf v1, v1, ft0
    vse32.v v1, (a6)
    addi a3, a3, 16
    addi a6, a6, 16
    addi a4, a4, -1
    bnez a4, 1b"""

# iterations store over each other (the later one wins)
OVERLAPPING_STORES = """
    vsetivli zero, 4, e32, m1, ta, ma
1:  vle32.v v1, (a0)
    vse32.v v1, (a3)
    addi a0, a0, 16
    addi a3, a3, 4
    addi a4, a4, -1
    bnez a4, 1b"""

# a directed rounding mode: the batcher declines, the exact per-element path runs
ROUND_DOWN = """
    fsrmi 2
    vsetvli t0, a5, e32, m1, ta, ma
    vmv.v.i v1, 0
    vfcvt.f.x.v v1, v1
1:  vle32.v v2, (a0)
    vfadd.vv v1, v1, v2
    addi a0, a0, 16
    addi a4, a4, -1
    bnez a4, 1b
    fsrmi 0
    vse32.v v1, (a3)"""


def _cases() -> tuple[list[Case], dict[str, bool]]:
    rng = np.random.default_rng(7)
    cases: list[Case] = []
    batched: dict[str, bool] = {}

    def add(case: Case, expect_batch: bool) -> None:
        cases.append(case)
        batched[case.name] = expect_batch

    for kk, width in ((50, 32), (9, 20)):
        a = rng.standard_normal(kk).astype(np.float32)
        b = rng.standard_normal((kk, width)).astype(np.float32) * 3
        add(Case(f"matmul_k{kk}_w{width}", MATMUL_K, [a, b], 4 * width, kk, width), True)
        add(Case(f"matmul_strided_k{kk}_w{width}", MATMUL_STRIDED, [a, b.T.copy()],
                 4 * width, kk, width), True)
    a = rng.standard_normal(40).astype(np.float32)
    b = rng.standard_normal((40, 16)).astype(np.float32)
    a[3], a[9], b[9, 2], b[20, 5] = np.inf, -np.inf, 0.0, np.nan  # inf * 0 and NaN in a sum
    b[30, 7] = 30.0
    with np.errstate(over="ignore"):  # products and sums that overflow to inf
        b = (b.astype(np.float64) * 1e37).astype(np.float32)
    add(Case("matmul_specials", MATMUL_K, [a, b], 64, 40, 16), True)
    kk, width = 40, 24
    a = rng.standard_normal(2 * kk).astype(np.float32)
    b = rng.standard_normal((kk, width)).astype(np.float32)
    add(Case("microkernel", MICROKERNEL, [a, b, np.array([0.25], np.float32)],
             12 * width, kk // 2, width), True)
    # 1 + s*b with s*b = 2**-24 + 2**-60: float64 rounds the sum onto the float32 midpoint
    # 1 + 2**-24 (ties to 1.0), the exact fma rounds up; the batched chain must notice, at
    # its first step, later, and at two steps in a row (v0's step 2i + q: a[4i + 2q], b[2i + q])
    a = np.zeros(2 * kk, np.float32)
    b = np.zeros((kk, width), np.float32)
    for row, col in ((0, 0), (7, 14), (23, 46), (24, 48)):
        a[col] = 1 + 2.0**-12
        b[row] = 2.0**-24 * (1 - 2.0**-12 + 2.0**-24)
    a[6], b[3] = 1.0, 2.0**-22  # an exact step between two of them
    add(Case("microkernel_midpoint", MICROKERNEL, [a, b, np.array([1.0], np.float32)],
             12 * width, kk // 2, width), True)
    add(Case("acc_only", ACC_ONLY, [np.zeros(1, np.float32),
                                    rng.standard_normal(12).astype(np.float32)], 48, 30, 12),
        True)
    for n in (1000, 777):
        x = (rng.standard_normal(n) * 4).astype(np.float32)
        y = rng.standard_normal(n).astype(np.float32)
        x[::13] = -0.0
        y[5::17] = np.nan
        add(Case(f"elementwise_{n}", ELEMENTWISE, [x, y], 4 * n, n), True)
    x = rng.standard_normal(300).astype(np.float32)
    y = rng.standard_normal(300).astype(np.float32)
    y[::7] = np.nan
    add(Case("mask_logic", MASK_LOGIC, [x, y, np.array([-2.5], np.float32)], 1200, 300), True)
    v = rng.integers(-2**31, 2**31, (60, 8)).astype(np.int32)
    s = rng.standard_normal(60).astype(np.float32)
    add(Case("accumulate", ACCUMULATE, [v, s], 64, 60, 8), True)
    u = rng.integers(0, 2**63, 96, dtype=np.uint64)
    w = rng.integers(0, 2**63, 96, dtype=np.uint64)
    add(Case("in_place", IN_PLACE, [u, w], 768, 768, 3), True)
    pairs = rng.integers(-2**62, 2**62, (30, 2)).astype(np.int64)
    add(Case("scalars", SCALARS, [pairs], 24 * 15, 15), True)
    add(Case("forward", FORWARD, [rng.integers(-1000, 1000, 41).astype(np.int32)], 164, 40),
        False)
    add(Case("forward_vector", FORWARD_VECTOR, [rng.standard_normal(4).astype(np.float32),
                                                np.array([0.5], np.float32)], 16 * 31, 30),
        False)
    add(Case("overlapping_stores", OVERLAPPING_STORES,
             [rng.integers(0, 2**31, 4 * 20).astype(np.int32)], 4 * 23, 20), False)
    add(Case("round_down", ROUND_DOWN, [rng.standard_normal(4 * 30).astype(np.float32)], 16,
             30, 4), False)
    return cases, batched


@pytest.fixture(scope="module")
def qemu_results() -> tuple[list[Case], dict[str, bool], dict[int, list[bytes]]]:
    need_tools()
    cases, batched = _cases()
    return cases, batched, run_qemu(cases, VLENS)


@pytest.mark.parametrize("vlen", VLENS)
def test_batched_loops_match_qemu_and_stepping(qemu_results: tuple, vlen: int) -> None:
    cases, batched, qemu = qemu_results
    compare(cases, qemu, vlen)  # the batcher is on by default
    on: list[RunStats] = []
    off: list[RunStats] = []
    assert run_sim(cases, vlen, stats=on) == run_sim(cases, vlen, batch_loops=False, stats=off)
    for c, a, b in zip(cases, on, off, strict=True):
        assert (a.instructions, a.per_mnemonic) == (b.instructions, b.per_mnemonic), c.name
        assert b.batched_iterations == 0
        assert (a.batched_iterations > 0) == batched[c.name], (c.name, a.batched_iterations)


def _machine(body: str, buffers: dict[str, np.ndarray], batch: bool, vlen: int = 256
             ) -> tuple[RvvMachine, dict[str, int]]:
    mem = Memory()
    addrs = {}
    for name, data in buffers.items():
        addrs[name] = mem.alloc(name, data.nbytes)
        mem.write(addrs[name], data)
    text = f"    .text\n    .globl f\nf:\n{body.strip(chr(10))}\n    ret\n"
    return RvvMachine(parse_program(text, "t.s"), mem, vlen, batch_loops=batch), addrs


def _fault(body: str, buffers: dict[str, np.ndarray], args: list[str | int],
           **kw: object) -> list[str]:
    """The fault message with the batcher on and off (they must agree)."""
    out = []
    for batch in (True, False):
        m, addrs = _machine(body, buffers, batch)
        with pytest.raises(Exception) as exc:
            m.call("f", [addrs[a] if isinstance(a, str) else a for a in args], **kw)
        out.append(f"{type(exc.value).__name__}: {exc.value}")
    return out


def test_out_of_bounds_inside_a_batchable_loop_names_the_iterations_access() -> None:
    a = np.ones(30, np.float32)  # the loop reads 50
    b = np.ones((50, 32), np.float32)
    on, off = _fault(MATMUL_K, {"a": a, "b": b, "o": np.zeros(32, np.float32)},
                     ["a", "b", 0, "o", 50, 32])
    assert on == off
    assert on.startswith(OutOfBoundsError.__name__) and "flw ft1, 0(a0)`" in on
    # iteration 30 (the first past the buffer) faults, at its own address
    assert "4-byte access at address 0x10000078" in on and "(0 bytes past the end)" in on


def test_instruction_limit_inside_a_batchable_loop_is_exact() -> None:
    bufs = {"a": np.ones(50, np.float32), "b": np.ones((50, 32), np.float32),
            "o": np.zeros(32, np.float32)}
    for limit in (100, 137, 495):
        on, off = _fault(MATMUL_K, bufs, ["a", "b", 0, "o", 50, 32], max_instructions=limit)
        assert on == off and on.startswith(InstructionLimitError.__name__), (limit, on)


def test_undefined_source_in_a_batchable_loop_raises_as_without_batching() -> None:
    # v20 is never written: it is undefined since the call, and the loop stores a sum with it
    body = """
    vsetvli t0, a5, e32, m4, ta, ma
1:  vle32.v v8, (a0)
    vfadd.vv v12, v8, v20
    vse32.v v12, (a3)
    addi a4, a4, -1
    bnez a4, 1b"""
    on, off = _fault(body, {"a": np.ones(32, np.float32), "o": np.zeros(32, np.float32)},
                     ["a", 0, 0, "o", 20, 32])
    assert on == off and on.startswith(TailRelianceError.__name__)
    assert "function entry" in on


def _state(m: RvvMachine) -> tuple:
    """Everything a later instruction could observe (origins as their descriptions: the ids
    are interning order)."""
    st = m.state
    return (list(st.x), list(st.f), st.V.tobytes(), st.P.tobytes(),
            [st.origins[o] for o in st.O], [st.origins[o] for o in st.OM.ravel()],
            st.dirty, st.mfmt, st.vcfg, st.frm)


@pytest.mark.parametrize("vlen", [256, 1024])
def test_batched_loops_leave_the_registers_of_the_stepped_ones(vlen: int) -> None:
    cases, batched = _cases()
    program = parse_program(assembly(cases), "cases.s")
    for c in cases:
        states = []
        for batch in (True, False):
            mem = Memory()
            ptrs = []
            for j in range(3):
                data = c.inputs[j] if j < len(c.inputs) else np.zeros(1, np.uint8)
                ptrs.append(mem.alloc(f"in{j}", max(data.nbytes, 1)))
                mem.write(ptrs[-1], np.ascontiguousarray(data).view(np.uint8).ravel())
            out = mem.alloc("out", c.out_bytes)
            m = RvvMachine(program, mem, vlen, batch_loops=batch)
            stats = m.call(c.name, ptrs + [out, c.n, c.k])
            states.append(_state(m) + (stats.instructions,
                                       mem.read(out, np.uint8, c.out_bytes).tobytes()))
        assert states[0] == states[1], c.name


def test_long_loops_run_in_several_bounded_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    from portc.runtimes.rvvsim import batch

    monkeypatch.setattr(batch, "MAX_ELEMENTS", 3000)  # a few iterations per batch
    cases = [c for c in _cases()[0] if c.name in ("elementwise_1000", "microkernel")]
    on: list[RunStats] = []
    off: list[RunStats] = []
    assert run_sim(cases, 256, stats=on) == run_sim(cases, 256, batch_loops=False, stats=off)
    for a, b in zip(on, off, strict=True):
        assert (a.instructions, a.per_mnemonic) == (b.instructions, b.per_mnemonic)
        assert 0 < a.batched_instructions < a.instructions
    # one batch of elementwise_1000 holds 3000 // (22 + vl 16 * 16 vector instructions) = 10
    # iterations; its 63 then take several
    stats = dict(zip((c.name for c in cases), on, strict=True))
    assert stats["elementwise_1000"].batched_iterations > 3 * 10
