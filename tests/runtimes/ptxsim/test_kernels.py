"""ptxsim executes hand-written PTX kernels and matches numpy references computed independently."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from portc.runtimes.ptxsim import GlobalMemory, PtxSim, parse_module

from .kernels import ALL


def sim(name: str) -> tuple[PtxSim, GlobalMemory]:
    mem = GlobalMemory()
    return PtxSim(parse_module(ALL[name], f"{name}.ptx"), mem), mem


def put(mem: GlobalMemory, name: str, arr: np.ndarray) -> int:
    addr = mem.alloc(name, arr.nbytes)
    mem.write(addr, arr)
    return addr


def test_vector_add_with_tail_guard(rng):
    s, mem = sim("vadd")
    n = 1000  # 4 blocks of 256: the last block has 232 idle threads
    a = rng.standard_normal(n).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    pa, pb = put(mem, "a", a), put(mem, "b", b)
    pc = mem.alloc("c", 4 * n)
    st = s.launch("vadd", grid=(4, 1, 1), block=(256, 1, 1), params=[pa, pb, pc, n])
    np.testing.assert_array_equal(mem.read(pc, np.float32, n), a + b)
    # warp-level issue counts: every one of the 32 warps issues the 9 instructions up to the
    # guard branch; the 31 warps with an in-range lane issue the body
    assert st.by_opcode["setp.ge.u32"] == 32
    assert st.by_opcode["st.global.f32"] == 32  # warp 31 has lanes 992..999 in range
    assert st.by_opcode["ret"] == 32


def test_block_reduction_with_shared_memory_and_barriers(rng):
    s, mem = sim("block_sum")
    x = rng.standard_normal(256 * 3).astype(np.float32)
    pin, pout = put(mem, "in", x), mem.alloc("out", 12)
    st = s.launch("block_sum", grid=(3,), block=(256,), params=[pin, pout])
    # reference: the same tree order in float32 arithmetic
    ref = x.reshape(3, 256).copy()
    width = 256
    while width > 1:
        width //= 2
        ref[:, :width] = ref[:, :width] + ref[:, width:2 * width]
    np.testing.assert_array_equal(mem.read(pout, np.float32, 3), ref[:, 0])
    np.testing.assert_allclose(mem.read(pout, np.float32, 3), x.reshape(3, 256).sum(1, dtype=np.float64),
                               rtol=1e-5)
    assert st.barriers == 1 + 8  # after the store, then one per tree level


def test_warp_reduction_with_shfl_bfly(rng):
    s, mem = sim("warp_sum")
    x = rng.standard_normal(128).astype(np.float32)
    pin, pout = put(mem, "in", x), mem.alloc("out", 16)
    s.launch("warp_sum", grid=(2,), block=(64,), params=[pin, pout])
    v = x.reshape(4, 32).copy()
    lane = np.arange(32)
    for off in (16, 8, 4, 2, 1):
        v = v + v[:, lane ^ off]
    np.testing.assert_array_equal(mem.read(pout, np.float32, 4), v[:, 0])


def test_shfl_up_down_idx_follow_the_clamp_and_segment_rules():
    s, mem = sim("shfl_modes")
    pout = mem.alloc("out", 32 * 16)
    s.launch("shfl_modes", grid=(1,), block=(32,), params=[pout])
    out = mem.read(pout, np.uint32, 32 * 4).reshape(32, 4)
    lane = np.arange(32)
    val = lane * 10
    # up by 1 (c = 0): lane 0 keeps its own value and its predicate is false
    up_src = np.where(lane >= 1, lane - 1, lane)
    np.testing.assert_array_equal(out[:, 0], val[up_src])
    # down by 3 (c = 31): lanes 29..31 keep their own value
    down_src = np.where(lane + 3 <= 31, lane + 3, lane)
    np.testing.assert_array_equal(out[:, 1], val[down_src])
    # idx with c = 0x181f (segments of 8 lanes: mask 0x18, clamp 31): source is
    # (lane & 0x18) | (b & ~0x18) with b = (lane & 7) ^ 5
    b = (lane & 7) ^ 5
    idx_src = (lane & 0x18) | (b & 7)
    np.testing.assert_array_equal(out[:, 2], val[idx_src])
    np.testing.assert_array_equal(out[:, 3], (lane >= 1).astype(np.uint32) | 2 * (lane + 3 <= 31))


def test_divergent_if_else_reconverges_at_the_join(rng):
    s, mem = sim("diverge")
    x = rng.integers(0, 1000, 64).astype(np.uint32)
    pin, pout = put(mem, "in", x), mem.alloc("out", 256)
    st = s.launch("diverge", grid=(1,), block=(64,), params=[pin, pout])
    tid = np.arange(64, dtype=np.uint32)
    then = np.where(tid % 2 == 0, 2 * x, 2 * x + 1000)
    val = np.where(tid % 3 == 0, then, x + 1)
    np.testing.assert_array_equal(mem.read(pout, np.uint32, 64), val * tid + 7)
    # reconvergence: the code after the join is issued once per warp, not once per path
    assert st.by_opcode["mul.lo.s32"] == 2
    assert st.by_opcode["st.global.u32"] == 2
    assert st.by_opcode["shl.b32"] == 2  # the then-path (both warps have tid % 3 == 0 lanes)


def test_loop_with_per_thread_trip_counts(rng):
    s, mem = sim("loop_count")
    cnt = rng.integers(0, 40, 96).astype(np.uint32)
    cnt[5] = 0
    pin, pout = put(mem, "cnt", cnt), mem.alloc("out", 4 * 96)
    st = s.launch("loop_count", grid=(3,), block=(32,), params=[pin, pout])
    ref = np.array([sum(3 * k + 1 for k in range(c)) for c in cnt], np.uint32)
    np.testing.assert_array_equal(mem.read(pout, np.uint32, 96), ref)
    # the loop body is issued by a warp as long as any of its lanes still iterates
    per_warp = cnt.reshape(3, 32).max(1)
    assert st.by_opcode["mad.lo.s32"] == 3 + per_warp.sum()  # 3 for the global-id mad


def _f16_inputs(rng, dt, shape):
    return (rng.integers(-8, 9, shape) / 4).astype(dt)


@pytest.mark.parametrize("kind,dt", [("f16", np.float16), ("bf16", ml_dtypes.bfloat16)])
def test_mma_m16n8k16_matches_numpy_matmul(rng, kind, dt):
    s, mem = sim(f"mma_{kind}")
    A = _f16_inputs(rng, dt, (16, 16))
    B = _f16_inputs(rng, dt, (16, 8))
    C = rng.integers(-16, 17, (16, 8)).astype(np.float32)
    pa, pbt = put(mem, "A", A), put(mem, "Bt", np.ascontiguousarray(B.T))
    pc, pd = put(mem, "C", C), mem.alloc("D", 16 * 8 * 4)
    s.launch(f"mma_{kind}", grid=(1,), block=(32,), params=[pa, pbt, pc, pd])
    ref = A.astype(np.float64) @ B.astype(np.float64) + C
    np.testing.assert_array_equal(mem.read(pd, np.float32, 128).reshape(16, 8), ref.astype(np.float32))


def test_mma_m16n8k16_f16_rounds_the_f32_accumulation_once(rng):
    """Non-integer data: the result must be the f32 rounding of the exact dot product + C."""
    s, mem = sim("mma_f16")
    A = rng.standard_normal((16, 16)).astype(np.float16)
    B = rng.standard_normal((16, 8)).astype(np.float16)
    C = rng.standard_normal((16, 8)).astype(np.float32)
    pa, pbt = put(mem, "A", A), put(mem, "Bt", np.ascontiguousarray(B.T))
    pc, pd = put(mem, "C", C), mem.alloc("D", 512)
    s.launch("mma_f16", grid=(1,), block=(32,), params=[pa, pbt, pc, pd])
    ref = A.astype(np.float64) @ B.astype(np.float64) + C.astype(np.float64)
    np.testing.assert_allclose(mem.read(pd, np.float32, 128).reshape(16, 8), ref, rtol=1e-6, atol=1e-6)


def test_mma_m16n8k8_tf32_matches_numpy_on_tf32_values(rng):
    s, mem = sim("mma_tf32")
    A = rng.integers(-64, 65, (16, 8)).astype(np.float32) / 8
    B = rng.integers(-64, 65, (8, 8)).astype(np.float32) / 8
    pa, pbt = put(mem, "A", A), put(mem, "Bt", np.ascontiguousarray(B.T))
    pd = mem.alloc("D", 512)
    s.launch("mma_tf32", grid=(1,), block=(32,), params=[pa, pbt, pd])
    np.testing.assert_array_equal(mem.read(pd, np.float32, 128).reshape(16, 8),
                                  (A.astype(np.float64) @ B).astype(np.float32))


def test_ldmatrix_feeds_mma_like_cutlass(rng):
    s, mem = sim("ldsm_mma")
    A = _f16_inputs(rng, np.float16, (16, 16))
    B = _f16_inputs(rng, np.float16, (16, 8))
    pa, pb, pd = put(mem, "A", A), put(mem, "B", B), mem.alloc("D", 512)
    s.launch("ldsm_mma", grid=(1,), block=(32,), params=[pa, pb, pd])
    np.testing.assert_array_equal(mem.read(pd, np.float32, 128).reshape(16, 8),
                                  (A.astype(np.float64) @ B).astype(np.float32))


@pytest.mark.parametrize("trans", [False, True])
def test_ldmatrix_x4_fragment_layout(trans):
    name = "ldsm_t" if trans else "ldsm"
    s, mem = sim(name)
    M = np.arange(4 * 64, dtype=np.uint16).reshape(4, 8, 8)  # 4 matrices, row-major
    pin, pout = put(mem, "in", M), mem.alloc("out", 32 * 16)
    s.launch(name, grid=(1,), block=(32,), params=[pin, pout])
    out = mem.read(pout, np.uint32, 128).reshape(32, 4)
    # PTX ISA: lane l holds row l/4, columns 2(l%4) and 2(l%4)+1 (transposed: rows and
    # columns swapped); the first element sits in the low half of the register
    for lane in range(32):
        r, c = lane // 4, 2 * (lane % 4)
        for i in range(4):
            e0, e1 = (M[i, c, r], M[i, c + 1, r]) if trans else (M[i, r, c], M[i, r, c + 1])
            assert out[lane, i] == int(e0) | (int(e1) << 16), (lane, i)


def test_cp_async_double_buffer(rng):
    s, mem = sim("cp_pipe")
    ntiles = 5
    x = rng.standard_normal(ntiles * 128).astype(np.float32)
    pin, pout = put(mem, "in", x), mem.alloc("out", 512)
    s.launch("cp_pipe", grid=(2,), block=(128,), params=[pin, pout, ntiles])
    tiles = x.reshape(ntiles, 128)[:, np.arange(128) ^ 1]
    ref = np.zeros(128, np.float32)
    for k in range(ntiles):
        ref = ref + tiles[k]
    np.testing.assert_array_equal(mem.read(pout, np.float32, 128), ref)


def test_atomics_histogram_tickets_float_sum_minmax_cas_exch(rng):
    s, mem = sim("atomics")
    n_blocks, nt = 4, 64
    n = n_blocks * nt
    x = rng.integers(-1000, 1000, n).astype(np.int32)
    pin = put(mem, "in", x)
    phist = put(mem, "hist", np.zeros(16, np.uint32))
    ptick = mem.alloc("tick", 4 * n)
    scal = np.zeros(16, np.int32)
    scal[2], scal[3] = -(2**31), 2**31 - 1
    scal[12], scal[13] = 77, 77  # cas compares scal[13] with scal[12]: thread 0's swap succeeds
    pscal = put(mem, "scal", scal)
    s.launch("atomics", grid=(n_blocks,), block=(nt,), params=[pin, phist, ptick, pscal])
    np.testing.assert_array_equal(mem.read(phist, np.uint32, 16),
                                  np.bincount(x & 15, minlength=16).astype(np.uint32))
    np.testing.assert_array_equal(np.sort(mem.read(ptick, np.uint32, n)), np.arange(n))
    got = mem.read(pscal, np.int32, 16)
    assert got[0] == n
    assert mem.read(pscal + 4, np.float32, 1)[0] == float(x.sum())  # small ints: exact
    assert got[2] == x.max() and got[3] == x.min()
    np.testing.assert_array_equal(got[4:8], x.reshape(n_blocks, nt).max(1))
    # cas: exactly the first thread saw 77 and wrote its id (0); later ones saw 0 != 77
    assert got[13] == 0
    # exch: the last write in serialisation order stays, and it is some thread id
    assert 0 <= got[14] < n


def test_kernel_stats_accumulate_per_kernel():
    s, mem = sim("vadd")
    pa, pb, pc = (mem.alloc(k, 4 * 64) for k in "abc")
    st1 = s.launch("vadd", grid=(1,), block=(64,), params=[pa, pb, pc, 64])
    s.launch("vadd", grid=(1,), block=(64,), params=[pa, pb, pc, 64])
    assert st1.warp_instructions == 22 * 2  # 22 instructions, 2 warps, no divergence
    assert sum(s.kernel_stats["vadd"].values()) == 2 * st1.warp_instructions
    assert st1.by_mnemonic["ld"] == 2 * 6


def test_large_grids_run_in_batches_of_blocks_with_identical_results(rng):
    n = 40 * 64 - 5
    a = rng.standard_normal(n).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    results = []
    for max_lanes in (1 << 16, 128, 64):
        s, mem = sim("vadd")
        pa, pb, pc = put(mem, "a", a), put(mem, "b", b), mem.alloc("c", 4 * n)
        st = s.launch("vadd", grid=(40,), block=(64,), params=[pa, pb, pc, n], max_lanes=max_lanes)
        np.testing.assert_array_equal(mem.read(pc, np.float32, n), a + b)
        results.append((st.warp_instructions, st.by_opcode))
    assert results[0] == results[1] == results[2]


def test_mma_m16n8k8_with_f16_accumulators(rng):
    s, mem = sim("mma_k8_f16acc")
    A = _f16_inputs(rng, np.float16, (16, 8))
    B = _f16_inputs(rng, np.float16, (8, 8))
    C = _f16_inputs(rng, np.float16, (16, 8))
    pa, pbt, pc = put(mem, "A", A), put(mem, "Bt", np.ascontiguousarray(B.T)), put(mem, "C", C)
    pd = mem.alloc("D", 256)
    s.launch("mma_k8_f16acc", grid=(1,), block=(32,), params=[pa, pbt, pc, pd])
    want = (A.astype(np.float64) @ B.astype(np.float64) + C).astype(np.float16)
    np.testing.assert_array_equal(mem.read(pd, np.float16, 128).reshape(16, 8), want)


def test_nested_loops_with_per_thread_break_and_continue(rng):
    rows, limit = 24, 60
    data = rng.integers(-20, 20, (rows, 32)).astype(np.int32)
    lens = rng.integers(0, 33, 64).astype(np.uint32)
    s, mem = sim("search")
    pd, pl, po = put(mem, "data", data), put(mem, "len", lens), mem.alloc("out", 256)
    st = s.launch("search", grid=(1,), block=(64,), params=[pd, pl, po, rows, limit])
    want = []
    for n in lens:
        sums = np.where(data[:, :n] > 0, data[:, :n], 0).sum(1)
        hit = np.flatnonzero(sums > limit)
        want.append(int(hit[0]) if hit.size else -1)
    np.testing.assert_array_equal(mem.read(po, np.int32, 64), want)
    assert st.by_opcode["st.global.s32"] == 2  # everyone reconverges before the store
