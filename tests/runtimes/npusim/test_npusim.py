"""npusim: vector semantics (repeat/mask/stride), cube numerics, the timing model, the Chrome
trace, and the checkers (seeded bugs: missing wait, UB overflow, misaligned DMA, event 8, ...).

References are numpy on the same inputs, hand-computed index sets from the Ascend C addressing
rule, and costs computed by hand from the SoC table."""

from __future__ import annotations

import json
import re

import ml_dtypes
import numpy as np
import pytest
from xdsl.dialects import arith
from xdsl.dialects.builtin import IntegerAttr, i1

from portc.dialects import npu
from portc.dialects.npu_soc import SOC_910B
from portc.runtimes.npusim import (
    NpuAlignmentError,
    NpuBoundsError,
    NpuDeadlockError,
    NpuEventError,
    NpuLimitError,
    NpuParseError,
    NpuProgramError,
    NpuRaceError,
    NpuSim,
    parse_program,
    run_program,
)

from .programs import KernelBuilder, vector_unary_program

F16 = np.float16


def _run(text: str, kernel: str, bufs: dict, **kw):
    return run_program(text, kernel, bufs, **kw)


# ------------------------------------------------------------------------------ vector


@pytest.mark.parametrize("op_cls, ref, lo, hi", [
    (npu.VExpOp, np.exp, -3, 3), (npu.VLnOp, np.log, 0.1, 5), (npu.VSqrtOp, np.sqrt, 0, 9),
    (npu.VRsqrtOp, lambda x: 1 / np.sqrt(x), 0.5, 9), (npu.VRecOp, lambda x: 1 / x, 0.5, 4),
    (npu.VAbsOp, np.abs, -4, 4), (npu.VReluOp, lambda x: np.maximum(x, 0), -4, 4),
    (npu.VNegOp, np.negative, -4, 4),
])
def test_unary_vector_ops_match_numpy_in_fp16(op_cls, ref, lo, hi, rng):
    n = 384  # 3 repeats of 128 fp16 lanes
    x = rng.uniform(lo, hi, n).astype(F16)
    outs, _ = _run(vector_unary_program(op_cls, n), "k", {"x": x, "y": np.zeros(n, F16)})
    want = ref(x.astype(np.float64))
    np.testing.assert_allclose(outs["y"].astype(np.float64), want, rtol=2e-3, atol=2e-3)


def _binary_program(op_cls: type, dtype: str, n_src: int, n_dst: int, repeat: int,
                    mask: tuple[int, int], blk: list[int], rep: list[int]) -> str:
    kb = KernelBuilder("k", "aiv", [("a", dtype, n_src), ("b", dtype, n_src),
                                    ("y", dtype, n_dst)])
    ub = [kb.alloc("ub", dtype, n, off) for n, off in
          ((n_src, 0), (n_src, 8192), (n_dst, 16384))]
    kb.copy_in(ub[0], kb.arg["a"], n_src)
    kb.copy_in(ub[1], kb.arg["b"], n_src)
    kb.copy_in(ub[2], kb.arg["y"], n_dst)  # masked-off lanes keep these values
    kb.flag("MTE2", "V")
    kb.add(op_cls.make((ub[2], kb.c(0)), (ub[0], kb.c(0)), (ub[1], kb.c(0)), repeat=repeat,
                       mask=mask, blk=blk, rep=rep))
    kb.flag("V", "MTE3")
    kb.copy_out(kb.arg["y"], ub[2], n_dst)
    return kb.text()


def test_vector_mask_selects_lanes_within_each_repeat(rng):
    """fp16: 128 lanes per repeat; mask_first(40) updates lanes 0..39 of both repeats only."""
    a, b = rng.standard_normal(256).astype(F16), rng.standard_normal(256).astype(F16)
    y0 = np.full(256, 7, F16)
    text = _binary_program(npu.VAddOp, "float16", 256, 256, 2, npu.mask_first(40),
                           [1, 1, 1], [8, 8, 8])
    outs, _ = _run(text, "k", {"a": a, "b": b, "y": y0})
    want = y0.copy()
    for r in range(2):
        want[r * 128:r * 128 + 40] = a[r * 128:r * 128 + 40] + b[r * 128:r * 128 + 40]
    np.testing.assert_array_equal(outs["y"], want)


def test_vector_block_and_repeat_strides_follow_the_32_byte_block_rule(rng):
    """fp32 (8 lanes per block, 64 per repeat): src0 reads every other block (blk 2) and its
    repeats are 16 blocks apart; dst and src1 are contiguous."""
    a = rng.standard_normal(256).astype(np.float32)
    b = rng.standard_normal(128).astype(np.float32)
    text = _binary_program(npu.VMulOp, "float32", 256, 128, 2, (0, -1), [1, 2, 1],
                           [8, 16, 8])
    bpad = np.concatenate([b, np.zeros(128, np.float32)])
    outs, _ = _run(text, "k", {"a": a, "b": bpad, "y": np.zeros(128, np.float32)})
    # hand-derived: lane e of repeat r -> r*16*8 + (e//8)*2*8 + e%8
    idx = np.array([r * 128 + (e // 8) * 16 + e % 8 for r in range(2) for e in range(64)])
    np.testing.assert_array_equal(outs["y"], a[idx] * bpad[:128])


def test_scalar_cast_dup_reduce_and_select(rng):
    """One kernel exercising the scalar, cast, duplicate, compare/select and reduce forms."""
    n = 128
    kb = KernelBuilder("k", "aiv", [("x", "float32", n), ("h", "float16", n),
                                    ("i", "int32", n), ("s", "float32", n),
                                    ("r", "float32", 8), ("z", "float32", 64),
                                    ("q", "float32", 8)])
    x = kb.alloc("ub", "float32", n, 0)
    h = kb.alloc("ub", "float16", n, 1024)
    i = kb.alloc("ub", "int32", n, 2048)
    d = kb.alloc("ub", "float32", n, 3072)
    bits = kb.alloc("ub", "uint8", 32, 4096)
    s = kb.alloc("ub", "float32", n, 4608)
    r = kb.alloc("ub", "float32", 8, 5120)
    z = kb.alloc("ub", "float32", 64, 5376)
    q = kb.alloc("ub", "float32", 8, 5632)  # vector operands start 32-byte aligned
    c0 = kb.c(0)
    kb.copy_in(x, kb.arg["x"], n)
    kb.flag("MTE2", "V")
    kb.add(npu.VMulsOp.make((x, c0), (x, c0), 3.0, repeat=2, mask=(0, -1)))
    # 64 fp16 results fill 4 blocks per repeat: the narrow side's repeat stride is 4 blocks
    kb.add(npu.VCastOp.make((h, c0), (x, c0), repeat=2, mask=(0, -1), rep=[4, 8]))
    kb.add(npu.VCastOp.make((i, c0), (x, c0), repeat=2, round="floor", mask=(0, -1)))
    kb.add(npu.VDupOp.make((d, c0), 0.5, repeat=2, mask=(0, -1)))
    kb.add(npu.VCmpOp.make((bits, c0), (x, c0), (d, c0), "gt", repeat=2, mask=(0, -1)))
    kb.add(npu.VSelOp.make((s, c0), (bits, c0), (x, c0), (d, c0), repeat=2, mask=(0, -1)))
    kb.add(npu.VWholeReduceOp.make((r, c0), (x, c0), "max", repeat=2, mask=(0, -1)))
    kb.add(npu.VReduceOp.make((q, c0), (x, c0), "sum", 100))
    kb.add(npu.VBrcbOp.make((z, c0), (r, c0), repeat=1))
    kb.flag("V", "MTE3")
    for name, buf, cnt in (("h", h, n), ("i", i, n), ("s", s, n), ("r", r, 8), ("z", z, 64),
                           ("q", q, 1)):
        kb.copy_out(kb.arg[name], buf, cnt)
    xv = (rng.standard_normal(n) * 2).astype(np.float32)
    bufs = {"x": xv, "h": np.zeros(n, F16), "i": np.zeros(n, np.int32),
            "s": np.zeros(n, np.float32), "r": np.zeros(8, np.float32),
            "z": np.zeros(64, np.float32), "q": np.zeros(8, np.float32)}
    outs, _ = _run(kb.text(), "k", bufs)
    x3 = xv * np.float32(3)
    np.testing.assert_array_equal(outs["h"], x3.astype(F16))
    np.testing.assert_array_equal(outs["i"], np.floor(x3).astype(np.int32))
    np.testing.assert_array_equal(outs["s"], np.where(x3 > 0.5, x3, np.float32(0.5)))
    assert outs["r"][0] == x3[:64].max() and outs["r"][1] == x3[64:].max()
    np.testing.assert_allclose(outs["q"][0], x3[:100].sum(dtype=np.float64), rtol=1e-6)
    # brcb: block b (8 fp32 lanes) of the one repeat holds r[b]
    np.testing.assert_array_equal(outs["z"], np.repeat(outs["r"], 8))


def test_narrowing_cast_that_overflows_sets_the_overflow_status(rng):
    """fp32 -> fp16 of values beyond 65504 gives inf (as hardware does) and records the
    first such instruction in the launch's overflow status; in-range values leave it None."""
    n = 64
    kb = KernelBuilder("k", "aiv", [("x", "float32", n), ("h", "float16", n)])
    x = kb.alloc("ub", "float32", n, 0)
    h = kb.alloc("ub", "float16", n, 256)
    c0 = kb.c(0)
    kb.copy_in(x, kb.arg["x"], n)
    kb.flag("MTE2", "V")
    kb.add(npu.VCastOp.make((h, c0), (x, c0), repeat=1, mask=(0, -1), rep=[4, 8]))
    kb.flag("V", "MTE3")
    kb.copy_out(kb.arg["h"], h, n)
    text = kb.text()
    xv = rng.standard_normal(n).astype(np.float32)
    _, ok = _run(text, "k", {"x": xv, "h": np.zeros(n, F16)})
    assert ok.overflow is None
    xv[[3, 40]] = [7e4, -2e5]
    outs, st = _run(text, "k", {"x": xv, "h": np.zeros(n, F16)})
    assert np.isinf(outs["h"][[3, 40]]).all() and np.isfinite(np.delete(outs["h"], [3, 40])).all()
    assert st.overflow is not None and st.overflow["elements"] == 2
    assert st.overflow["max_abs"] == 2e5 and "npu.vcast" in st.overflow["instruction"]
    assert text.splitlines()[st.overflow["line"] - 1].strip().startswith('"npu.vcast"')


def _scalar_read_program(flag: bool) -> str:
    """MTE2 copies int64 indices into UB; the scalar unit reads index 2 and uses it as the GM
    offset of a one-row copy ``y = x[idx[2]]`` (8 floats)."""
    kb = KernelBuilder("k", "aiv", [("idx", "int64", 4), ("x", "float32", 80),
                                    ("y", "float32", 8)])
    iu = kb.alloc("ub", "int64", 4, 0)
    row = kb.alloc("ub", "float32", 8, 256)
    kb.copy_in(iu, kb.arg["idx"], 4)
    if flag:
        kb.flag("MTE2", "S")
    v = kb.add(npu.GetValueOp.make(iu, kb.c(2))).results[0]
    off = kb.add(arith.MuliOp(v, kb.c(8))).results[0]
    kb.copy_in(row, kb.arg["x"], 8, off)
    kb.flag("MTE2", "MTE3")
    kb.copy_out(kb.arg["y"], row, 8)
    return kb.text()


def test_scalar_read_addresses_a_dma_and_needs_a_flag_after_the_copy_in(rng):
    x = rng.standard_normal(80).astype(np.float32)
    idx = np.array([5, 1, 7, 0], np.int64)
    bufs = {"idx": idx, "x": x, "y": np.zeros(8, np.float32)}
    outs, st = _run(_scalar_read_program(True), "k", bufs)
    np.testing.assert_array_equal(outs["y"], x[56:64])
    # the scalar unit stalls for the read: its cost is in the S pipe's busy time
    assert st.cores[0].busy["S"] >= SOC_910B.costs["scalar_load"].startup
    with pytest.raises(NpuRaceError, match="S reads ub"):
        _run(_scalar_read_program(False), "k", bufs)


def test_scalar_unit_is_64_bit_and_narrow_stores_keep_the_low_bits():
    """Index arithmetic wraps at 64 bits and divides exactly (no float detour); set_value to
    int8/uint8/bool elements keeps the low bits, as a narrow store does."""
    kb = KernelBuilder("k", "aiv", [("i8", "int8", 2), ("u8", "uint8", 1), ("b", "bool", 1),
                                    ("q", "int64", 3)])
    big = kb.c(2**62 + 1)
    wrapped = kb.add(arith.AddiOp(big, big)).results[0]  # 2^63 + 2 wraps to -2^63 + 2
    quot = kb.add(arith.DivSIOp(wrapped, kb.c(-3))).results[0]
    rem = kb.add(arith.RemSIOp(wrapped, kb.c(-3))).results[0]
    for name, off, v in (("i8", 0, kb.c(200)), ("i8", 1, kb.c(-129)), ("u8", 0, kb.c(-1)),
                         ("b", 0, kb.c(6)), ("q", 0, wrapped), ("q", 1, quot), ("q", 2, rem)):
        kb.add(npu.SetValueOp.make(kb.arg[name], kb.c(off), v))
    outs, _ = _run(kb.text(), "k", {"i8": np.zeros(2, np.int8), "u8": np.zeros(1, np.uint8),
                                    "b": np.ones(1, bool), "q": np.zeros(3, np.int64)})
    assert outs["i8"].tolist() == [-56, 127] and outs["u8"].tolist() == [255]
    assert outs["b"].tolist() == [False]
    w = -(2**63) + 2
    q = -(abs(w) // 3) * -1  # truncation toward zero of w / -3 (w < 0, divisor < 0)
    assert outs["q"].tolist() == [w, q, w - (-3) * q]


# ------------------------------------------------------------------------------ cube


def _cube_program(m: int, n: int, k: int, dtype: str, out: str, acc_chunks: int) -> str:
    """C = sum over ``acc_chunks`` of A_j @ B_j via L1 -> L0 -> mmad (init, then +=) -> FIX."""
    kb = KernelBuilder("mm", "aic", [("a", dtype, acc_chunks * m * k),
                                     ("b", dtype, acc_chunks * k * n), ("c", out, m * n)])
    l1a = kb.alloc("l1", dtype, m * k, 0)
    l1b = kb.alloc("l1", dtype, k * n, 65536)
    l0a = kb.alloc("l0a", dtype, m * k, 0)
    l0b = kb.alloc("l0b", dtype, k * n, 0)
    acc = "int32" if dtype == "int8" else "float32"
    l0c = kb.alloc("l0c", acc, m * n, 0)
    c0 = kb.c(0)
    for j in range(acc_chunks):
        kb.copy_in(l1a, kb.arg["a"], m * k, j * m * k)
        kb.copy_in(l1b, kb.arg["b"], k * n, j * k * n)
        kb.flag("MTE2", "MTE1")
        kb.add(npu.LoadL0Op.make(l0a, c0, l1a, c0, kb.c(m), kb.c(k), kb.c(k)))
        kb.add(npu.LoadL0Op.make(l0b, c0, l1b, c0, kb.c(k), kb.c(n), kb.c(n)))
        kb.flag("MTE1", "M")
        init = kb.add(arith.ConstantOp(IntegerAttr(int(j == 0), i1))).results[0]
        kb.add(npu.MmadOp.make(l0c, c0, l0a, c0, l0b, c0, kb.c(m), kb.c(n), kb.c(k), init))
        kb.flag("M", "MTE2")  # next chunk overwrites L1 only after the cube is done
        kb.flag("M", "MTE1")
    kb.flag("M", "FIX")
    kb.add(npu.FixOp.make(kb.arg["c"], c0, l0c, c0, kb.c(m), kb.c(n), kb.c(n)))
    return kb.text()


def test_mmad_accumulates_in_fp32():
    """1 + 2048 ones: an fp16 accumulator would stall at 2048 (ulp 2); the cube keeps fp32."""
    m = n = 16
    k = 16
    a = np.zeros((2, m, k), F16)
    b = np.zeros((2, k, n), F16)
    a[0, :, 0], b[0, 0, :] = 2048, 1  # first chunk: 2048 per element
    a[1, :, :], b[1, :, :] = 1, 1 / 16  # second chunk adds 16 * (1/16) = 1
    outs, _ = _run(_cube_program(m, n, k, "float16", "float32", 2), "mm",
                   {"a": a, "b": b, "c": np.zeros(m * n, np.float32)})
    np.testing.assert_array_equal(outs["c"], np.full(m * n, 2049, np.float32))


def test_int8_cube_accumulates_exactly_in_int32(rng):
    m, n, k = 16, 32, 64  # int8 fractals are 16 x 32
    a = rng.integers(-128, 128, (1, m, k)).astype(np.int8)
    b = rng.integers(-128, 128, (1, k, n)).astype(np.int8)
    outs, _ = _run(_cube_program(m, n, k, "int8", "int32", 1), "mm",
                   {"a": a, "b": b, "c": np.zeros(m * n, np.int32)})
    np.testing.assert_array_equal(outs["c"].reshape(m, n),
                                  a[0].astype(np.int64) @ b[0].astype(np.int64))


def test_bf16_cube_path(rng):
    m, n, k = 32, 48, 32
    a = rng.standard_normal((1, m, k)).astype(ml_dtypes.bfloat16)
    b = rng.standard_normal((1, k, n)).astype(ml_dtypes.bfloat16)
    outs, _ = _run(_cube_program(m, n, k, "bfloat16", "float32", 1), "mm",
                   {"a": a, "b": b, "c": np.zeros(m * n, np.float32)})
    ref = a[0].astype(np.float64) @ b[0].astype(np.float64)
    np.testing.assert_allclose(outs["c"].reshape(m, n), ref, rtol=1e-5, atol=1e-4)


# ------------------------------------------------------------------------------ timing


def test_dma_cost_is_latency_plus_bytes_over_bandwidth():
    n = 2048  # fp16 -> 4096 bytes
    kb = KernelBuilder("k", "aiv", [("x", "float16", n)])
    kb.copy_in(kb.alloc("ub", "float16", n, 0), kb.arg["x"], n)
    _, st = _run(kb.text(), "k", {"x": np.zeros(n, F16)})
    # one core active: its MTE2 share of GM bandwidth is min(128, 2048 / 1) = 128 B/cycle
    assert st.cores[0].busy["MTE2"] == 120 + 4096 / 128


def test_independent_pipes_overlap_and_flags_order_them(tmp_path):
    """MTE2 into one buffer and MTE3 out of another run concurrently; a flag makes V start
    only after the MTE2 it depends on has ended (read from the Chrome trace)."""
    n = 8192
    kb = KernelBuilder("k", "aiv", [("x", "float16", n), ("y", "float16", n)])
    u = kb.alloc("ub", "float16", n, 0)
    w = kb.alloc("ub", "float16", n, 2 * n)
    kb.copy_in(u, kb.arg["x"], n)
    kb.copy_out(kb.arg["y"], w, n)  # independent of the load (reads garbage, never used)
    kb.flag("MTE2", "V")
    kb.add(npu.VAbsOp.make((u, kb.c(0)), (u, kb.c(0)), repeat=n // 128))
    trace = tmp_path / "t.json"
    _, st = _run(kb.text(), "k", {"x": np.zeros(n, F16), "y": np.zeros(n, F16)},
                 trace_path=trace)
    busy = st.cores[0].busy
    assert st.cycles < busy["MTE2"] + busy["MTE3"]
    ev = json.loads(trace.read_text())["traceEvents"]
    spans = {e["name"]: e for e in ev if e["ph"] == "X"}
    mte2, vabs = spans["npu.mte2"], spans["npu.vabs"]
    assert vabs["ts"] >= mte2["ts"] + mte2["dur"] - 1e-9
    tracks = {(e["pid"], e["args"]["name"]) for e in ev if e["name"] == "thread_name"}
    assert {(0, p) for p in ("S", "V", "M", "MTE1", "MTE2", "MTE3", "FIX")} <= tracks


def test_timing_only_mode_reports_the_same_cycles(rng):
    text = vector_unary_program(npu.VExpOp, 1024)
    bufs = {"x": rng.standard_normal(1024).astype(F16), "y": np.zeros(1024, F16)}
    _, full = _run(text, "k", bufs)
    outs, timing = NpuSim(parse_program(text), functional=False).run("k")
    assert outs == {} and timing.cycles == full.cycles


def test_every_core_of_the_launch_runs():
    """block_dim 4: core i writes its block index into element i (via a UB dup)."""
    kb = KernelBuilder("k", "aiv", [("y", "float32", 32)], block_dim=4)
    u = kb.alloc("ub", "float32", 8, 0)
    bid = kb.add(npu.GetBlockIdxOp.make()).results[0]
    off = kb.add(arith.MuliOp(bid, kb.c(8))).results[0]
    kb.add(npu.VDupOp.make((u, kb.c(0)), 1.0, repeat=1, mask=npu.mask_first(8)))
    kb.flag("V", "MTE3")
    kb.copy_out(kb.arg["y"], u, 8, off)
    outs, st = _run(kb.text(), "k", {"y": np.zeros(32, np.float32)})
    np.testing.assert_array_equal(outs["y"], np.ones(32, np.float32))
    assert len(st.cores) == 4


# ------------------------------------------------------------------------------ seeded bugs


def _good() -> str:
    return vector_unary_program(npu.VExpOp, 256)


def _bufs() -> dict:
    return {"x": np.zeros(256, F16), "y": np.zeros(256, F16)}


def test_missing_wait_flag_is_a_race_naming_both_pipes():
    lines = _good().splitlines()
    i = next(i for i, ln in enumerate(lines) if "npu.wait_flag" in ln and '"MTE2"' in ln)
    text = "\n".join(lines[:i] + lines[i + 1:])
    # the unmatched set is reported only at the end; the race comes first
    with pytest.raises(NpuRaceError, match=r"V reads ub .* written by MTE2") as e:
        _run(text, "k", _bufs())
    assert e.value.kernel == "k" and e.value.core == 0 and "npu.vexp" in e.value.instruction


def test_write_after_read_race_is_caught():
    """MTE3 reads dst while V overwrites it again with no flag V->MTE3 in between... reversed:
    a second vexp writes the buffer MTE3 is still reading."""
    kb = KernelBuilder("k", "aiv", [("x", "float16", 128), ("y", "float16", 128)])
    u = kb.alloc("ub", "float16", 128, 0)
    kb.copy_in(u, kb.arg["x"], 128)
    kb.flag("MTE2", "V")
    kb.add(npu.VExpOp.make((u, kb.c(0)), (u, kb.c(0)), repeat=1))
    kb.flag("V", "MTE3")
    kb.copy_out(kb.arg["y"], u, 128)
    kb.add(npu.VAbsOp.make((u, kb.c(0)), (u, kb.c(0)), repeat=1))  # no MTE3->V flag
    with pytest.raises(NpuRaceError, match="V writes ub .* read by MTE3"):
        _run(kb.text(), "k", {"x": np.zeros(128, F16), "y": np.zeros(128, F16)})


def test_ub_overflow_is_refused():
    text = _good().replace("<{offset = 1024 : i64}>", f"<{{offset = {192 * 1024 - 256} : i64}}>")
    assert text != _good()
    with pytest.raises(NpuBoundsError, match=r"overflows ub \(196608 bytes"):
        _run(text, "k", _bufs())


def test_access_beyond_an_allocation_is_refused():
    text = re.sub(r"repeat = 2 : i64", "repeat = 3 : i64", _good())
    with pytest.raises(NpuBoundsError, match=r"elements \[0, 384\) of %\d+ \(ub"):
        _run(text, "k", _bufs())


def test_misaligned_dma_is_refused():
    text = _good().replace("<{offset = 1024 : i64}>", "<{offset = 1040 : i64}>")
    with pytest.raises(NpuAlignmentError, match="not a multiple of 32"):
        _run(text, "k", _bufs())
    # a DMA into an aligned buffer at an odd element offset is caught at the DMA itself
    kb = KernelBuilder("k", "aiv", [("x", "float16", 64)])
    u = kb.alloc("ub", "float16", 64, 0)
    kb.add(npu.Mte2Op.make(u, kb.c(3), kb.arg["x"], kb.c(0), kb.c(1), kb.c(16), kb.c(0),
                           kb.c(0)))
    with pytest.raises(NpuAlignmentError, match=r"MTE2 burst starts at ub byte 6") as e:
        _run(kb.text(), "k", {"x": np.zeros(64, F16)})
    assert e.value.line is not None and "npu.mte2" in e.value.instruction


def test_event_id_8_is_refused():
    text = _good().replace("event = 0 : i64", "event = 8 : i64")
    with pytest.raises(NpuEventError, match=r"event id 8 outside 0\.\.7"):
        _run(text, "k", _bufs())


def test_wait_without_set_is_a_deadlock_and_unwaited_set_an_error():
    lines = _good().splitlines()
    i = next(i for i, ln in enumerate(lines) if "npu.set_flag" in ln)
    with pytest.raises(NpuDeadlockError, match="no earlier matching set_flag"):
        _run("\n".join(lines[:i] + lines[i + 1:]), "k", _bufs())
    kb = KernelBuilder("k", "aiv", [("x", "float16", 16)])
    kb.add(npu.SetFlagOp.make("MTE2", "V", 3))
    with pytest.raises(NpuEventError, match="never waited"):
        _run(kb.text(), "k", {"x": np.zeros(16, F16)})


def test_oversized_gm_argument_and_runaway_loops_hit_limits():
    text = _good().replace("memref<256xf16, \"gm\">", "memref<4000000000xf16, \"gm\">")
    with pytest.raises(NpuLimitError, match="over the"):
        NpuSim(parse_program(text), functional=False).run("k")
    with pytest.raises(NpuLimitError, match="exceeded 5 instructions"):
        NpuSim(parse_program(_good()), max_instructions=5).run("k", _bufs())


def test_parse_error_names_the_line():
    text = _good().replace('"npu.vexp"(', '"npu.vexp"(,', 1)
    with pytest.raises(NpuParseError, match=r"prog\.mlir:\d+:"):
        parse_program(text, "prog.mlir")


def test_soc_table_drives_the_checks():
    assert SOC_910B.space("ub").size == 192 * 1024 and SOC_910B.space("l0c").align == 512


def test_repeat_plan_instructions_cover_a_ragged_length_exactly(rng):
    """n = 2 full repeats + 44 lanes: the masked tail instruction touches exactly the rest;
    elements past n keep what GM held."""
    n, cap = 300, 384
    kb = KernelBuilder("k", "aiv", [("x", "float16", cap), ("y", "float16", cap)])
    u = kb.alloc("ub", "float16", cap, 0)
    kb.copy_in(u, kb.arg["x"], cap)
    kb.flag("MTE2", "V")
    for off, repeat, mask in npu.repeat_plan(n, "float16"):
        kb.add(npu.VReluOp.make((u, kb.c(off)), (u, kb.c(off)), repeat=repeat, mask=mask))
    kb.flag("V", "MTE3")
    kb.copy_out(kb.arg["y"], u, cap)
    x = rng.standard_normal(cap).astype(F16)
    outs, _ = _run(kb.text(), "k", {"x": x, "y": np.zeros(cap, F16)})
    np.testing.assert_array_equal(outs["y"][:n], np.maximum(x[:n], 0))
    np.testing.assert_array_equal(outs["y"][n:], x[n:])


def test_malformed_programs_fail_with_the_instruction_named():
    text = re.sub(r'"npu\.vexp"\(%\d+', '"npu.vexp"(%999', _good())
    with pytest.raises(NpuProgramError, match="%999 is used before it is defined"):
        _run(text, "k", _bufs())
    text = _good().replace('"npu.vexp"', '"npu.vfrobnicate"')
    with pytest.raises(NpuProgramError, match="unknown op npu.vfrobnicate"):
        _run(text, "k", _bufs())


@pytest.mark.parametrize("layout, order", [
    # the Ascend C Mmad documentation's 4x4 example with 2x2 fractals
    ("zZ", [0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15]),
    ("nZ", [0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15]),
    ("zN", [0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15]),
])
def test_fractal_layouts_follow_the_documented_orders(layout, order):
    from portc.runtimes.npusim.sim import FROM_FRACTAL, TO_FRACTAL

    m = np.arange(16).reshape(4, 4)
    assert TO_FRACTAL[layout](m, 2, 2).tolist() == order
    np.testing.assert_array_equal(FROM_FRACTAL[layout](np.array(order), 4, 4, 2, 2), m)


def test_two_cores_writing_the_same_gm_elements_is_a_race():
    """block_dim 2, both cores store to y[0:8] (the block index is not used in the address)."""
    kb = KernelBuilder("k", "aiv", [("y", "float32", 16)], block_dim=2)
    u = kb.alloc("ub", "float32", 8, 0)
    kb.add(npu.VDupOp.make((u, kb.c(0)), 1.0, repeat=1, mask=npu.mask_first(8)))
    kb.flag("V", "MTE3")
    kb.copy_out(kb.arg["y"], u, 8, 4)
    with pytest.raises(NpuRaceError, match=r"core 1 writes gm 'y' element 4 that core 0 wrote"):
        _run(kb.text(), "k", {"y": np.zeros(16, np.float32)})


def test_row_softmax_composes_from_reduce_brcb_and_zero_strides(rng):
    """Softmax over 8 rows of 128 fp32 (2 repeats a row) with the documented broadcast
    pattern: reduce a row into an aligned slot, vbrcb it into one block, then read that block
    with blk = rep = 0 as the second operand of a whole-row instruction."""
    rows, cols = 8, 128
    kb = KernelBuilder("k", "aiv", [("x", "float32", rows * cols), ("y", "float32", rows * cols)])
    x = kb.alloc("ub", "float32", rows * cols, 0)
    slot = kb.alloc("ub", "float32", rows * 8, 4096)  # one 32-byte slot per row
    blk = kb.alloc("ub", "float32", rows * 64, 8192)  # one repeat of brcb output per row
    kb.copy_in(x, kb.arg["x"], rows * cols)
    kb.flag("MTE2", "V")
    for i in range(rows):
        row, s, b = kb.c(i * cols), kb.c(i * 8), kb.c(i * 64)
        bcast = dict(blk=[1, 1, 0], rep=[8, 8, 0])
        kb.add(npu.VReduceOp.make((slot, s), (x, row), "max", cols))
        kb.add(npu.VBrcbOp.make((blk, b), (slot, s), repeat=1))
        kb.add(npu.VSubOp.make((x, row), (x, row), (blk, b), repeat=2, mask=(0, -1), **bcast))
        kb.add(npu.VExpOp.make((x, row), (x, row), repeat=2, mask=(0, -1)))
        kb.add(npu.VReduceOp.make((slot, s), (x, row), "sum", cols))
        kb.add(npu.VBrcbOp.make((blk, b), (slot, s), repeat=1))
        kb.add(npu.VDivOp.make((x, row), (x, row), (blk, b), repeat=2, mask=(0, -1), **bcast))
    kb.flag("V", "MTE3")
    kb.copy_out(kb.arg["y"], x, rows * cols)
    xv = (rng.standard_normal((rows, cols)) * 3).astype(np.float32)
    outs, _ = _run(kb.text(), "k", {"x": xv, "y": np.zeros_like(xv)})
    e = np.exp(xv.astype(np.float64) - xv.max(axis=1, keepdims=True))
    np.testing.assert_allclose(outs["y"], e / e.sum(axis=1, keepdims=True), rtol=1e-5,
                               atol=1e-7)


def test_full_mask_selects_all_64_lanes_of_fp32(rng):
    n = 128
    x = rng.standard_normal(n).astype(np.float32)
    outs, _ = _run(vector_unary_program(npu.VAbsOp, n, "float32"), "k",
                   {"x": x, "y": np.zeros(n, np.float32)})
    np.testing.assert_array_equal(outs["y"], np.abs(x))
