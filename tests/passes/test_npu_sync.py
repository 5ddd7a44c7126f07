"""``npu-insert-sync``: a program without flags races in npusim; after the pass it runs race-free,
gives numpy's numbers, overlaps pipes (faster than barriers after every instruction), and
double-buffered loops get the ping-pong pattern including the reverse "buffer free" flags."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
from xdsl.context import Context
from xdsl.dialects import arith, scf
from xdsl.dialects.builtin import IndexType, ModuleOp
from xdsl.ir import Block, SSAValue

from portc.dialects import npu
from portc.passes.npu_sync import NpuInsertSyncPass, insert_sync
from portc.runtimes.npusim import NpuRaceError, parse_program, run_program

TILE, TILES = 256, 6


def _stream(tile: int = TILE, tiles: int = TILES, sync: bool = True) -> ModuleOp:
    """y = exp(x) streamed through two UB (in, out) buffer pairs, loop unrolled by two."""
    n = tile * tiles
    k = npu.KernelOp.make("stream", "aiv", 1, [("x", "float16", n), ("y", "float16", n)])
    top = k.body.block
    x, y = top.args

    def c(v: int, blk: Block = top) -> SSAValue:
        op = arith.ConstantOp.from_int_and_width(v, IndexType())
        blk.add_op(op)
        return op.result

    pairs = []
    for s in range(2):
        a = npu.AllocOp.make("ub", "float16", tile, 4 * tile * s)
        b = npu.AllocOp.make("ub", "float16", tile, 4 * tile * s + 2 * tile)
        top.add_op(a)
        top.add_op(b)
        pairs.append((a.result, b.result))
    body = Block(arg_types=[IndexType()])
    for s, (src, dst) in enumerate(pairs):
        off = arith.AddiOp(body.args[0], c(s * tile, body))
        body.add_op(off)
        z, one, length = c(0, body), c(1, body), c(tile, body)
        body.add_op(npu.Mte2Op.make(src, z, x, off.result, one, length, z, z))
        body.add_op(npu.VExpOp.make((dst, z), (src, z), repeat=tile // 128))
        body.add_op(npu.Mte3Op.make(y, off.result, dst, z, one, length, z, z))
    body.add_op(scf.YieldOp())
    top.add_op(scf.ForOp(c(0), c(n), c(2 * tile), [], body))
    m = ModuleOp([k])
    if sync:
        NpuInsertSyncPass().apply(Context(), m)
    m.verify()
    return m


def _run(module_or_text, rng: np.random.Generator, tile: int = TILE, tiles: int = TILES):
    text = module_or_text if isinstance(module_or_text, str) else npu.print_program(module_or_text)
    x = rng.uniform(-2, 2, tile * tiles).astype(np.float16)
    outs, stats = run_program(text, "stream", {"x": x, "y": np.zeros_like(x)})
    return x, outs["y"], stats


def test_unsynchronised_program_races(rng):
    with pytest.raises(NpuRaceError, match="V reads ub .* written by MTE2"):
        _run(_stream(sync=False), rng)


def test_synchronised_program_runs_race_free_with_numpys_numbers(rng):
    x, y, _ = _run(_stream(), rng)
    np.testing.assert_allclose(y.astype(np.float64), np.exp(x.astype(np.float64)), rtol=2e-3)


def test_ping_pong_loop_gets_forward_and_buffer_free_flags():
    text = npu.print_program(_stream())
    loop_start = text.index('"scf.for"')
    loop_end = text.index('"scf.yield"')
    pre, body, post = text[:loop_start], text[loop_start:loop_end], text[loop_end:]
    flag = re.compile(r'"npu\.(set|wait)_flag"\(\) <\{src = "(\w+)", dst = "(\w+)", event = (\d)')
    before = Counter(m.groups() for m in flag.finditer(pre))
    inside = [m.groups() for m in flag.finditer(body)]
    after = Counter(m.groups() for m in flag.finditer(post))
    # buffer free: V has consumed slot s's input before MTE2 refills it (one event per slot),
    # pre-set before the loop and drained after it
    free = {g for g in inside if g[:3] == ("wait", "V", "MTE2")}
    assert len(free) == 2
    for _, s, d, e in free:
        assert before[("set", s, d, e)] == 1 and after[("wait", s, d, e)] == 1
    # forward: each slot's load -> compute -> store is ordered inside the body
    assert {g[1:3] for g in inside if g[0] == "wait"} >= {("MTE2", "V"), ("V", "MTE3"),
                                                         ("V", "MTE2"), ("MTE3", "V")}
    # each mte2 inside the loop waits for its own slot's buffer-free flag, not the other one
    lines = body.splitlines()
    waits_before_mte2 = []
    for i, ln in enumerate(lines):
        if '"npu.mte2"' in ln:
            prev = [flag.search(p) for p in lines[max(0, i - 3):i]]
            waits_before_mte2.append({m.groups() for m in prev if m and m.group(1) == "wait"})
    assert len(waits_before_mte2) == 2 and waits_before_mte2[0] != waits_before_mte2[1]


def test_sets_and_waits_balance_and_events_fit_0_to_7():
    text = npu.print_program(_stream())
    flag = re.compile(r'"npu\.(set|wait)_flag"\(\) <\{src = "(\w+)", dst = "(\w+)", event = (\d+)')
    n = Counter((m.group(2), m.group(3), m.group(4), m.group(1)) for m in flag.finditer(text))
    for (s, d, e, kind), count in n.items():
        assert 0 <= int(e) <= 7
        assert n[(s, d, e, "wait" if kind == "set" else "set")] == count


def test_pass_overlaps_pipes_better_than_barriers_everywhere(rng):
    """The same program serialised by a full barrier after every instruction is race-free too,
    but slower: the derived flags let MTE2, V and MTE3 of different slots overlap."""
    plain = npu.print_program(_stream(sync=False))
    barrier = '"npu.pipe_barrier"() <{pipe = "ALL"}> : () -> ()'
    serial = "\n".join(ln + ("\n" + barrier if re.search(r'"npu\.(mte2|vexp|mte3)"', ln) else "")
                       for ln in plain.splitlines())
    x, y_serial, st_serial = _run(serial, np.random.default_rng(5))
    _, y_sync, st_sync = _run(_stream(), np.random.default_rng(5))
    np.testing.assert_array_equal(y_serial, y_sync)
    assert st_sync.cycles < 0.8 * st_serial.cycles


def test_flags_for_a_value_produced_before_a_loop_are_hoisted_out_of_it():
    """A UB table loaded once before the loop: its MTE2->V wait sits before the loop, not in
    every iteration."""
    k = npu.KernelOp.make("k", "aiv", 1, [("t", "float16", 128), ("y", "float16", 512)])
    top = k.body.block

    def c(v: int, blk: Block = top) -> SSAValue:
        op = arith.ConstantOp.from_int_and_width(v, IndexType())
        blk.add_op(op)
        return op.result

    tab = npu.AllocOp.make("ub", "float16", 128, 0)
    out = npu.AllocOp.make("ub", "float16", 128, 256)
    top.add_op(tab)
    top.add_op(out)
    z = c(0)
    top.add_op(npu.Mte2Op.make(tab.result, z, top.args[0], z, c(1), c(128), z, z))
    body = Block(arg_types=[IndexType()])
    body.add_op(npu.VExpOp.make((out.result, z), (tab.result, z), repeat=1))
    body.add_op(npu.Mte3Op.make(top.args[1], body.args[0], out.result, z, c(1, body),
                                c(128, body), z, z))
    body.add_op(scf.YieldOp())
    top.add_op(scf.ForOp(z, c(512), c(128), [], body))
    m = ModuleOp([k])
    insert_sync(m)
    m.verify()
    text = npu.print_program(m)
    loop = text[text.index('"scf.for"'):text.index('"scf.yield"')]
    assert 'src = "MTE2", dst = "V"' not in loop
    assert 'src = "MTE2", dst = "V"' in text[:text.index('"scf.for"')]
    t = np.linspace(-1, 1, 128).astype(np.float16)
    outs, _ = run_program(text, "k", {"t": t, "y": np.zeros(512, np.float16)})
    np.testing.assert_allclose(outs["y"].astype(np.float64),
                               np.tile(np.exp(t.astype(np.float64)), 4), rtol=2e-3)


def test_kernels_with_hand_placed_flags_are_left_alone():
    m = _stream(sync=False)
    kernel = next(o for o in m.walk() if isinstance(o, npu.KernelOp))
    kernel.body.block.add_op(npu.SetFlagOp.make("V", "MTE3", 0))
    kernel.body.block.add_op(npu.WaitFlagOp.make("V", "MTE3", 0))
    before = npu.print_program(m)
    assert insert_sync(m) == 0
    assert npu.print_program(m) == before


def test_pass_is_registered_under_its_name():
    from portc.passes.registry import get_pass

    assert get_pass("npu-insert-sync") is NpuInsertSyncPass
    assert parse_program(npu.print_program(_stream())).kernels["stream"].core == "aiv"


def test_buffer_free_flags_of_an_inner_loop_are_primed_around_the_outer_loop(rng):
    """Rows x (ping-pong over tiles): the inner loop's buffer-free flags are set once before the
    *outer* loop and drained after it, so MTE2 may prefetch the next row while V finishes this
    one (no drain between inner loops); results stay exact and race-free."""
    rows, tile, pairs = 3, 256, 2
    n = rows * 2 * pairs * tile
    k = npu.KernelOp.make("k", "aiv", 1, [("x", "float16", n), ("y", "float16", n)])
    b = npu.NpuBuilder(k)
    x, y = k.body.block.args
    slots = [(b.alloc("ub", "float16", tile), b.alloc("ub", "float16", tile)) for _ in range(2)]
    with b.loop(0, n, 2 * pairs * tile) as row:
        with b.loop(0, 2 * pairs * tile, 2 * tile) as i:
            for s, (src, dst) in enumerate(slots):
                off = b.add_i(b.add_i(row, i), s * tile)
                b.add(npu.Mte2Op.make(src, b.c(0), x, off, b.c(1), b.c(tile), b.c(0), b.c(0)))
                b.add(npu.VExpOp.make((dst, b.c(0)), (src, b.c(0)), repeat=tile // 128))
                b.add(npu.Mte3Op.make(y, off, dst, b.c(0), b.c(1), b.c(tile), b.c(0), b.c(0)))
    m = ModuleOp([k])
    insert_sync(m)
    m.verify()
    text = npu.print_program(m)
    first_loop = text.index('"scf.for"')
    inner_loop = text.index('"scf.for"', first_loop + 1)
    between = text[first_loop:inner_loop]
    assert 'src = "V", dst = "MTE2"' in text[:first_loop]  # primed before the outer loop
    assert 'src = "V", dst = "MTE2"' not in between  # not re-primed per row
    xv = rng.uniform(-2, 2, n).astype(np.float16)
    outs, _ = run_program(text, "k", {"x": xv, "y": np.zeros_like(xv)})
    np.testing.assert_allclose(outs["y"].astype(np.float64), np.exp(xv.astype(np.float64)),
                               rtol=2e-3)


def test_flags_around_and_inside_conditional_code(rng):
    """A loop whose odd iterations take a different branch (scf.if): flags placed inside the
    branches and around the if keep every access ordered; results match numpy."""
    tile, iters = 128, 4
    n = tile * iters
    k = npu.KernelOp.make("k", "aiv", 1, [("x", "float16", n), ("y", "float16", n)])
    b = npu.NpuBuilder(k)
    x, y = k.body.block.args
    src, dst = b.alloc("ub", "float16", tile), b.alloc("ub", "float16", tile)
    with b.loop(0, n, tile) as off:
        b.add(npu.Mte2Op.make(src, b.c(0), x, off, b.c(1), b.c(tile), b.c(0), b.c(0)))
        odd = b.add(arith.CmpiOp(b.rem(off, 2 * tile), b.c(0), "ne")).results[0]
        then_b, else_b = Block(), Block()
        then_b.add_op(npu.VExpOp.make((dst, b.c(0)), (src, b.c(0)), repeat=1))
        then_b.add_op(scf.YieldOp())
        else_b.add_op(npu.VAbsOp.make((dst, b.c(0)), (src, b.c(0)), repeat=1))
        else_b.add_op(scf.YieldOp())
        b.add(scf.IfOp(odd, [], [then_b], [else_b]))
        b.add(npu.Mte3Op.make(y, off, dst, b.c(0), b.c(1), b.c(tile), b.c(0), b.c(0)))
    m = ModuleOp([k])
    insert_sync(m)
    m.verify()
    xv = rng.uniform(-2, 2, n).astype(np.float16)
    outs, _ = run_program(npu.print_program(m), "k", {"x": xv, "y": np.zeros_like(xv)})
    xr = xv.reshape(iters, tile).astype(np.float64)
    want = np.where((np.arange(iters) % 2 == 1)[:, None], np.exp(xr), np.abs(xr))
    np.testing.assert_allclose(outs["y"].reshape(iters, tile).astype(np.float64), want,
                               rtol=2e-3)


def test_scalar_reads_of_a_copied_in_index_get_an_mte2_to_s_flag(rng):
    """A gather reads its index on the scalar unit from a UB buffer MTE2 filled: the pass
    orders the two with an MTE2->S flag, and the read value addresses the next DMA."""
    k = npu.KernelOp.make("g", "aiv", 1, [("idx", "int32", 8), ("x", "float32", 64),
                                          ("y", "float32", 8)])
    top = k.body.block
    idx, x, y = top.args

    def c(v: int) -> SSAValue:
        op = arith.ConstantOp.from_int_and_width(v, IndexType())
        top.add_op(op)
        return op.result

    iu = npu.AllocOp.make("ub", "int32", 8, 0)
    row = npu.AllocOp.make("ub", "float32", 8, 256)
    top.add_op(iu)
    top.add_op(row)
    z, one, eight = c(0), c(1), c(8)
    top.add_op(npu.Mte2Op.make(iu.result, z, idx, z, one, eight, z, z))
    v = npu.GetValueOp.make(iu.result, c(5))
    top.add_op(v)
    off = arith.MuliOp(v.result, eight)
    top.add_op(off)
    top.add_op(npu.Mte2Op.make(row.result, z, x, off.result, one, eight, z, z))
    top.add_op(npu.Mte3Op.make(y, z, row.result, z, one, eight, z, z))
    m = ModuleOp([k])
    insert_sync(m)
    m.verify()
    text = npu.print_program(m)
    assert 'src = "MTE2", dst = "S"' in text
    iv = rng.permutation(8).astype(np.int32)
    xv = rng.standard_normal(64).astype(np.float32)
    outs, _ = run_program(text, "g", {"idx": iv, "x": xv, "y": np.zeros(8, np.float32)})
    np.testing.assert_array_equal(outs["y"], xv[8 * iv[5]:8 * iv[5] + 8])
