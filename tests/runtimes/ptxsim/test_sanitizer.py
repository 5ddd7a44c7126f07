"""Seeded bugs: each fault is an exception naming kernel, instruction (with line) and thread."""

from __future__ import annotations

import numpy as np
import pytest

from portc.compiler.errors import PortcError
from portc.runtimes.ptxsim import (
    BarrierDivergenceError,
    GlobalMemory,
    GlobalWriteConflictError,
    InstructionLimitError,
    LaunchError,
    MisalignedAccessError,
    OutOfBoundsError,
    PtxSim,
    SharedMemoryRaceError,
    UninitializedSharedError,
    WarpSyncError,
    parse_module,
)

from .kernels import ALL


def sim(name: str, text: str | None = None) -> tuple[PtxSim, GlobalMemory]:
    mem = GlobalMemory()
    return PtxSim(parse_module(text or ALL[name], f"{name}.ptx"), mem), mem


def line_of(text: str, needle: str) -> int:
    return next(i for i, ln in enumerate(text.splitlines(), 1) if needle in ln)


def test_out_of_bounds_store_names_kernel_instruction_and_first_bad_thread():
    s, mem = sim("vadd_noguard")
    n = 1000
    pa, pb, pc = (mem.alloc(k, 4 * n) for k in "abc")
    with pytest.raises(OutOfBoundsError) as e:
        s.launch("vadd_noguard", grid=(4,), block=(256,), params=[pa, pb, pc, n])
    msg = str(e.value)
    # the loads of a and b by thread 1000 already fall off: the first faulting instruction
    # is the load of a (its own 4-byte word at a + 4000 lies in the red zone)
    assert "kernel 'vadd_noguard'" in msg
    assert f"line {line_of(ALL['vadd_noguard'], 'ld.global.f32')}" in msg
    assert "block (3,0,0) thread (232,0,0)" in msg  # 3 * 256 + 232 = 1000
    assert "0 bytes past the end of allocation 'a'" in msg
    assert isinstance(e.value, PortcError)


def test_out_of_bounds_store_only():
    """Inputs large enough, output one element short: the store is what faults."""
    s, mem = sim("vadd")
    n = 64
    pa, pb = mem.alloc("a", 4 * n), mem.alloc("b", 4 * n)
    pc = mem.alloc("c", 4 * (n - 1))
    with pytest.raises(OutOfBoundsError, match=r"st\.global\.f32.*block \(0,0,0\) thread \(63,0,0\)"):
        s.launch("vadd", grid=(1,), block=(64,), params=[pa, pb, pc, n])


def test_missing_barrier_between_shared_write_and_read_is_a_race():
    s, mem = sim("block_sum_racy")
    pin, pout = mem.alloc("in", 4 * 256), mem.alloc("out", 4)
    with pytest.raises(SharedMemoryRaceError) as e:
        s.launch("block_sum_racy", grid=(1,), block=(256,), params=[pin, pout])
    msg = str(e.value)
    text = ALL["block_sum_racy"]
    # thread 0 reads sdata[128], written by thread 128 with st.shared and no bar.sync between
    assert f"line {line_of(text, 'ld.shared.f32 %f2')}" in msg
    assert "thread (0,0,0)" in msg and "thread (128,0,0)" in msg
    assert f"line {line_of(text, 'st.shared.f32 [%r7], %f1')}" in msg
    assert "sdata+512" in msg


def test_cp_async_data_read_by_another_thread_without_barrier_is_a_race():
    s, mem = sim("cp_pipe_racy")
    pin, pout = mem.alloc("in", 4 * 128 * 3), mem.alloc("out", 512)
    with pytest.raises(SharedMemoryRaceError, match=r"ld\.shared\.f32.*cp\.async|cp\.async.*ld\.shared"):
        s.launch("cp_pipe_racy", grid=(1,), block=(128,), params=[pin, pout, 3])


def test_misaligned_vector_load_names_the_address():
    s, mem = sim("misaligned")
    pin, pout = mem.alloc("in", 16 * 33), mem.alloc("out", 16 * 32)
    with pytest.raises(MisalignedAccessError, match=r"ld\.global\.v4\.f32.*thread \(0,0,0\).*16-byte aligned"):
        s.launch("misaligned", grid=(1,), block=(32,), params=[pin, pout])


def test_barrier_under_divergence_is_reported():
    s, _ = sim("bar_divergent")
    with pytest.raises(BarrierDivergenceError, match=r"bar\.sync 0.*thread \(0,0,0\)"):
        s.launch("bar_divergent", grid=(1,), block=(64,))


def test_runaway_loop_hits_the_instruction_limit():
    s, _ = sim("spin")
    with pytest.raises(InstructionLimitError, match="max_instructions"):
        s.launch("spin", grid=(1,), block=(32,), max_instructions=1000)




def test_shfl_reading_a_lane_that_does_not_take_part_is_reported():
    s, mem = sim("shfl_partial")
    pout = mem.alloc("out", 128)
    with pytest.raises(WarpSyncError, match="reads lane 16"):
        s.launch("shfl_partial", grid=(1,), block=(32,), params=[pout])


def test_mma_in_a_partial_warp_is_reported(rng):
    s, mem = sim("mma_f16")
    bufs = [mem.alloc(k, 1024) for k in "abcd"]
    with pytest.raises(WarpSyncError, match="all 32 lanes"):
        s.launch("mma_f16", grid=(1,), block=(16,), params=bufs)




def test_shared_store_past_the_declared_size_is_out_of_bounds():
    s, _ = sim("shared_oob")
    s.launch("shared_oob", grid=(1,), block=(32,))  # 32 * 4 = 128 bytes: fits
    with pytest.raises(OutOfBoundsError, match=r"thread \(32,0,0\).*128 bytes of shared memory"):
        s.launch("shared_oob", grid=(1,), block=(33,))


def test_launch_checks_parameter_count_and_values():
    s, mem = sim("vadd")
    with pytest.raises(LaunchError, match="takes 4 parameters"):
        s.launch("vadd", grid=(1,), block=(32,), params=[1, 2])
    with pytest.raises(LaunchError, match="does not fit"):
        s.launch("vadd", grid=(1,), block=(32,), params=[0, 0, 0, 2**40])
    with pytest.raises(LaunchError, match="no entry"):
        s.launch("nope")


def test_host_reads_outside_allocations_are_refused():
    mem = GlobalMemory()
    a = mem.alloc("a", 16)
    mem.write(a, np.arange(4, dtype=np.int32))
    np.testing.assert_array_equal(mem.read(a, np.int32, 4), np.arange(4))
    with pytest.raises(OutOfBoundsError):
        mem.read(a, np.int32, 5)


def test_fault_in_a_later_batch_names_the_global_block():
    s, mem = sim("vadd")
    n = 40 * 64
    pa, pb = mem.alloc("a", 4 * n), mem.alloc("b", 4 * n)
    pc = mem.alloc("c", 4 * (n - 1))
    with pytest.raises(OutOfBoundsError, match=r"block \(39,0,0\) thread \(63,0,0\)"):
        s.launch("vadd", grid=(40,), block=(64,), params=[pa, pb, pc, n], max_lanes=128)


def test_bar_warp_sync_orders_shared_accesses_within_a_warp_only():
    s, mem = sim("wx_1_1")
    pout = mem.alloc("out", 256)
    s.launch("wx_1_1", grid=(1,), block=(64,), params=[pout])
    np.testing.assert_array_equal(mem.read(pout, np.uint32, 64), np.arange(64) ^ 1)
    s, mem = sim("wx_0_1")  # no sync: lane 0 reads what lane 1 wrote
    with pytest.raises(SharedMemoryRaceError, match=r"thread \(0,0,0\).*thread \(1,0,0\)"):
        s.launch("wx_0_1", grid=(1,), block=(64,), params=[mem.alloc("out", 256)])
    s, mem = sim("wx_1_32")  # the partner sits in the other warp: a warp sync is not enough
    with pytest.raises(SharedMemoryRaceError, match=r"thread \(0,0,0\).*thread \(32,0,0\)"):
        s.launch("wx_1_32", grid=(1,), block=(64,), params=[mem.alloc("out", 256)])


def test_reading_shared_memory_nobody_wrote_is_reported():
    """The block reduction with its input store removed reads sdata before any write."""
    text = ALL["block_sum"].replace("    st.shared.f32 [%r7], %f1;\n", "")
    s, mem = sim("block_sum", text)
    pin, pout = mem.alloc("in", 1024), mem.alloc("out", 4)
    with pytest.raises(UninitializedSharedError, match=r"ld\.shared\.f32 %f2.*sdata\+512"):
        s.launch("block_sum", grid=(1,), block=(256,), params=[pin, pout])


def test_blocks_storing_different_values_to_one_element_is_a_conflict(rng):
    s, mem = sim("copy_bad")
    n = 128
    a = rng.standard_normal(n).astype(np.float32)
    pa, pb, pc = mem.alloc("a", 4 * n), mem.alloc("b", 4 * n), mem.alloc("c", 4 * n)
    mem.write(pa, a)
    with pytest.raises(GlobalWriteConflictError,
                       match=r"block \(0,0,0\) thread \(0,0,0\).*offset 0 in allocation 'c'.*block \(1,0,0\) thread \(0,0,0\)"):
        s.launch("copy_bad", grid=(2,), block=(64,), params=[pa, pb, pc, n])
    # identical values are benign: with zero inputs every block writes 0.0
    s2, mem2 = sim("copy_bad")
    pa, pb, pc = mem2.alloc("a", 4 * n), mem2.alloc("b", 4 * n), mem2.alloc("c", 4 * n)
    s2.launch("copy_bad", grid=(2,), block=(64,), params=[pa, pb, pc, n])


def test_race_on_one_byte_of_a_vector_stored_word_is_found():
    """Race state is kept per 16 bytes while every access covers whole 16-byte units; a byte
    store splits the units without losing what the vector store recorded."""
    s, mem = sim("bytes_after_vector")
    pout = mem.alloc("out", 16)
    s.launch("bytes_after_vector", grid=(1,), block=(64,), params=[pout])
    want = np.zeros(16, np.uint8)
    want[5] = 255
    np.testing.assert_array_equal(mem.read(pout, np.uint8, 16), want)
    text = ALL["bytes_after_vector_racy"]
    s, mem = sim("bytes_after_vector", text)
    with pytest.raises(SharedMemoryRaceError) as e:
        s.launch("bytes_after_vector", grid=(1,), block=(64,), params=[mem.alloc("out", 16)])
    msg = str(e.value)
    assert "ld.shared.v4.b32" in msg and "sbuf+5" in msg
    assert "thread (0,0,0)" in msg and "thread (1,0,0)" in msg
    assert f"line {line_of(text, 'st.shared.u8')}" in msg
