"""rvvsim faults: parse errors, bounds, tail reliance, ABI, illegal vtype use, limits, stats."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from portc.runtimes.rvvsim import (
    AbiError,
    AsmSyntaxError,
    IllegalInstructionError,
    InstructionLimitError,
    Memory,
    OutOfBoundsError,
    RvvMachine,
    TailRelianceError,
    parse_program,
)

from .harness import CC, QEMU, need_tools


def _fn(body: str, name: str = "f") -> str:
    return f"    .text\n    .globl {name}\n{name}:\n{body.strip(chr(10))}\n    ret\n"


def _run(body: str, buffers: dict[str, np.ndarray], args: list[str | int], vlen: int = 256,
         **kw: object) -> tuple[Memory, dict[str, int]]:
    mem = Memory()
    addrs = {}
    for name, data in buffers.items():
        addrs[name] = mem.alloc(name, data.nbytes)
        mem.write(addrs[name], data)
    m = RvvMachine(parse_program(_fn(body), "t.s"), mem, vlen)
    m.call("f", [addrs[a] if isinstance(a, str) else a for a in args], **kw)
    return mem, addrs


# --- parsing ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "needle"), [
    ("    vfoo.vv v1, v2, v3", "unknown or unsupported mnemonic 'vfoo.vv'"),
    ("    vadd.vv v1, x2, v3", "operand 2 must be a vector register, got 'x2'"),
    ("    addi a0, a0", "too few operands"),
    ("    addi a0, a0, 1 +", "cannot parse"),
    ("    addi a0, a0, 4096", "immediate 4096 out of range -2048..2047"),
    ("    j nowhere", "unknown label 'nowhere'"),
    ("    .weird 1", "unsupported directive '.weird'"),
    ("    vsetvli t0, a0, e32, m3, ta, ma", "bad vtype token 'm3'"),
    ("    vle32.v v1, 4(a0)", "vector memory operands take no offset"),
    ("    bnez a0, 1f", "local label '1f'"),
])
def test_parse_errors_name_the_line(text: str, needle: str) -> None:
    src = _fn("    nop\n" + text)
    with pytest.raises(AsmSyntaxError) as exc:
        RvvMachine(parse_program(src, "k.s"), Memory(), 128)
    assert needle in str(exc.value)
    assert "k.s:5" in str(exc.value)  # .text, .globl, f:, nop, then the bad line


def test_calling_a_non_global_label_is_refused() -> None:
    prog = parse_program("    .text\nlocal_fn:\n    ret\n", "k.s")
    with pytest.raises(AsmSyntaxError, match="no .globl function 'local_fn'"):
        RvvMachine(prog, Memory(), 128).call("local_fn")


def test_parser_keeps_source_lines_and_resolves_numeric_labels() -> None:
    prog = parse_program(_fn("""
1:  addi a0, a0, -1   # count down
    bnez a0, 1b
    j 2f
2:  nop"""))
    bnez = prog.instrs[1]
    assert (bnez.mnemonic, bnez.line, bnez.operands[1]) == ("bnez", 5, ("label", 0))
    assert prog.instrs[2].operands[0] == ("label", 3)


# --- memory bounds ----------------------------------------------------------------------------

def test_scalar_load_past_a_buffer_names_instruction_address_and_region() -> None:
    with pytest.raises(OutOfBoundsError) as exc:
        _run("    ld t0, 64(a0)", {"buf": np.zeros(8, np.int64)}, ["buf"])
    msg = str(exc.value)
    assert "in function 'f', line 4 `ld t0, 64(a0)`" in msg
    assert "nearest region 'buf'" in msg and "0 bytes past the end" in msg


def test_vector_load_names_first_out_of_bounds_element() -> None:
    body = """
    vsetvli t0, a1, e32, m1, ta, ma
    vle32.v v1, (a0)"""
    with pytest.raises(OutOfBoundsError) as exc:
        _run(body, {"buf": np.zeros(5, np.float32)}, ["buf", 8])
    assert exc.value.element == 5
    assert "line 5 `vle32.v v1, (a0)`, element 5" in str(exc.value)


def test_masked_off_elements_are_not_bounds_checked() -> None:
    body = """
    vsetvli t0, a1, e32, m1, ta, mu
    vlm.v v0, (a2)
    vmv.v.i v1, 0
    vle32.v v1, (a0), v0.t
    vse32.v v1, (a3), v0.t"""
    src = np.arange(5, dtype=np.float32)
    mask = np.array([0b00011111], np.uint8)  # elements 5..7 would be out of bounds
    mem, addrs = _run(body, {"buf": src, "mask": mask, "out": np.zeros(8, np.float32)},
                      ["buf", 8, "mask", "out"])
    np.testing.assert_array_equal(mem.read(addrs["out"], np.float32, 5), src)


def test_indexed_store_names_the_element_with_the_bad_index() -> None:
    body = """
    vsetvli t0, a1, e32, m1, ta, ma
    vle32.v v2, (a2)
    vsoxei32.v v2, (a0), v2"""
    idx = np.array([0, 4, 8, 400], np.uint32)
    with pytest.raises(OutOfBoundsError) as exc:
        _run(body, {"buf": np.zeros(4, np.float32), "idx": idx}, ["buf", 4, "idx"])
    assert exc.value.element == 3


# --- tail reliance ----------------------------------------------------------------------------

TAIL_SNIPPET = """
    vsetvli t0, a2, e32, m1, ta, ma
    vle32.v v8, (a0)
    vsetivli zero, 3, e32, m1, ta, ma
    vfadd.vv v8, v8, v8
    vsetivli zero, 4, e32, m1, ta, ma
    vse32.v v8, (a1)"""


def test_storing_a_tail_element_raises_and_names_both_instructions() -> None:
    with pytest.raises(TailRelianceError) as exc:
        _run(TAIL_SNIPPET, {"a": np.ones(8, np.float32), "o": np.zeros(8, np.float32)},
             ["a", "o", 8])
    msg = str(exc.value)
    assert exc.value.element == 3
    assert "line 9 `vse32.v v8, (a1)`" in msg
    assert "left undefined by line 7 `vfadd.vv v8, v8, v8`: tail elements 3.." in msg


def test_qemu_shows_all_ones_where_rvvsim_reports_tail_reliance() -> None:
    """The same snippet under qemu: element 3 is 0xffffffff (rvv_ta_all_1s), not 2.0."""
    need_tools()
    c = """#include <stdio.h>
void f(float*, float*, long);
int main(void){ float a[8]={1,1,1,1,1,1,1,1}, o[8]={0}; f(a,o,8);
 fwrite(o,4,8,stdout); return 0; }"""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "k.s").write_text(_fn(TAIL_SNIPPET))
        (d / "m.c").write_text(c)
        subprocess.run([CC, "-march=rv64gcv", "-mabi=lp64d", "-static", "-o", str(d / "t"),
                        str(d / "m.c"), str(d / "k.s")], check=True, capture_output=True)
        out = subprocess.run([QEMU, "-cpu", "rv64,v=true,vlen=256,elen=64,vext_spec=v1.0,"
                              "rvv_ta_all_1s=true,rvv_ma_all_1s=true", str(d / "t")],
                             check=True, capture_output=True).stdout
    words = np.frombuffer(out, np.uint32)
    assert list(words[:4]) == [0x40000000] * 3 + [0xFFFFFFFF]


def test_tail_undisturbed_keeps_elements_defined() -> None:
    body = TAIL_SNIPPET.replace("vsetivli zero, 3, e32, m1, ta, ma",
                                "vsetivli zero, 3, e32, m1, tu, ma")
    mem, addrs = _run(body, {"a": np.ones(8, np.float32), "o": np.zeros(8, np.float32)},
                      ["a", "o", 8])
    np.testing.assert_array_equal(mem.read(addrs["o"], np.float32, 4), [2, 2, 2, 1])


def test_poison_propagates_through_arithmetic_into_a_reduction() -> None:
    body = """
    vsetivli zero, 2, e32, m1, ta, ma
    vle32.v v8, (a0)
    vsetivli zero, 4, e32, m1, ta, ma
    vfmul.vv v9, v8, v8
    vfmv.s.f v10, fa0
    vfredosum.vs v11, v9, v10"""
    with pytest.raises(TailRelianceError) as exc:
        _run(body, {"a": np.ones(4, np.float32)}, ["a"])
    assert exc.value.element == 2
    assert "vfredosum.vs" in str(exc.value) and "left undefined by line 5" in str(exc.value)


def test_mask_agnostic_elements_are_undefined_but_mask_undisturbed_ones_are_not() -> None:
    body = """
    vsetivli zero, 4, e32, m1, ta, {pol}
    vle32.v v8, (a0)
    vlm.v v0, (a1)
    vadd.vv v8, v8, v8, v0.t
    vse32.v v8, (a2)"""
    bufs = {"a": np.arange(4, dtype=np.int32), "m": np.array([0b0101], np.uint8),
            "o": np.zeros(4, np.int32)}
    with pytest.raises(TailRelianceError) as exc:
        _run(body.format(pol="ma"), bufs, ["a", "m", "o"])
    assert exc.value.element == 1 and "masked-off" in str(exc.value)
    mem, addrs = _run(body.format(pol="mu"), bufs, ["a", "m", "o"])
    np.testing.assert_array_equal(mem.read(addrs["o"], np.int32, 4), [0, 1, 4, 3])


def test_vector_registers_are_undefined_at_function_entry() -> None:
    body = """
    vsetivli zero, 4, e32, m1, ta, ma
    vfmacc.vf v8, fa0, v8
    vse32.v v8, (a0)"""
    with pytest.raises(TailRelianceError, match="function entry"):
        _run(body, {"o": np.zeros(4, np.float32)}, ["o"])


def test_vmv_x_s_of_an_undefined_element_raises() -> None:
    body = """
    vsetivli zero, 0, e32, m1, ta, ma
    vsetivli zero, 1, e32, m1, ta, ma
    vmv.x.s a0, v3"""
    with pytest.raises(TailRelianceError, match="element 0"):
        _run(body, {}, [])


# --- ABI, illegal instructions, limits, stats ---------------------------------------------------

@pytest.mark.parametrize(("body", "reg"), [
    ("    li s0, 5", "s0"),
    ("    li s11, 5", "s11"),
    ("    addi sp, sp, -16", "sp"),
    ("    fmv.d.x fs3, zero", "fs3"),
])
def test_clobbered_callee_saved_register_is_an_abi_error(body: str, reg: str) -> None:
    with pytest.raises(AbiError, match=f"callee-saved register {reg} changed"):
        _run(body, {}, [])


def test_saving_and_restoring_callee_saved_registers_passes() -> None:
    body = """
    addi sp, sp, -16
    sd s0, 8(sp)
    fsd fs0, 0(sp)
    li s0, 7
    fmv.d.x fs0, s0
    ld s0, 8(sp)
    fld fs0, 0(sp)
    addi sp, sp, 16"""
    _run(body, {}, [])


def test_misaligned_register_group_names_line() -> None:
    body = """
    vsetivli zero, 4, e32, m2, ta, ma
    vadd.vv v3, v4, v6"""
    with pytest.raises(IllegalInstructionError, match=r"line 5 .*v3 cannot start a group of 2"):
        _run(body, {}, [])


def test_vector_op_without_vsetvli_is_illegal() -> None:
    with pytest.raises(IllegalInstructionError, match="vill"):
        _run("    vadd.vv v1, v2, v3", {}, [])


def test_illegal_vtype_sets_vill_and_vl_zero() -> None:
    body = """
    vsetvli a0, a1, e64, mf2, ta, ma
    sd a0, 0(a2)
    csrr t0, vtype
    sd t0, 8(a2)"""
    mem, addrs = _run(body, {"o": np.full(2, 9, np.int64)}, [0, 5, "o"])
    assert list(mem.read(addrs["o"], np.int64, 2)) == [0, -(2**63)]


def test_endless_loop_hits_instruction_limit() -> None:
    with pytest.raises(InstructionLimitError, match="more than 1000 instructions"):
        _run("1:  j 1b", {}, [], max_instructions=1000)


def test_stats_count_dynamic_instructions_per_mnemonic() -> None:
    body = """
    li t0, 0
1:  vsetvli t1, a1, e32, m1, ta, ma
    vle32.v v1, (a0)
    vfadd.vv v1, v1, v1
    vse32.v v1, (a0)
    sub a1, a1, t1
    slli t1, t1, 2
    add a0, a0, t1
    bnez a1, 1b"""
    mem = Memory()
    buf = mem.alloc("x", 4 * 20)
    mem.write(buf, np.arange(20, dtype=np.float32))
    m = RvvMachine(parse_program(_fn(body)), mem, 128)  # VLMAX = 4: 5 iterations
    stats = m.call("f", [buf, 20])
    assert stats.per_mnemonic == {"li": 1, "vsetvli": 5, "vle32.v": 5, "vfadd.vv": 5,
                                  "vse32.v": 5, "sub": 5, "slli": 5, "add": 5, "bnez": 5,
                                  "ret": 1}
    assert stats.instructions == 42
    np.testing.assert_array_equal(mem.read(buf, np.float32, 20), 2 * np.arange(20))


def test_vector_rtz_conversions_truncate_and_saturate() -> None:
    """qemu 7.2 aborts on vector .rtz. conversions, so numpy is the reference here."""
    x = np.array([2.7, -2.7, 0.5, -0.5, 3e9, -3e9, np.nan, np.inf, -np.inf, -0.0], np.float32)
    body = """
    vsetvli zero, a2, e32, m4, ta, ma
    vle32.v v8, (a0)
    vfcvt.rtz.x.f.v v12, v8
    vse32.v v12, (a1)
    vfcvt.rtz.xu.f.v v12, v8
    addi a1, a1, 40
    vse32.v v12, (a1)
    vsetvli zero, a2, e16, m2, ta, ma
    vfncvt.rtz.x.f.w v16, v8
    addi a1, a1, 40
    vse16.v v16, (a1)"""
    mem, addrs = _run(body, {"x": x, "o": np.zeros(30, np.int32)}, ["x", "o", 10])
    out = mem.read(addrs["o"], np.int32, 20)
    i32 = np.array([2, -2, 0, 0, 2**31 - 1, -(2**31), 2**31 - 1, 2**31 - 1, -(2**31), 0])
    u32 = np.array([2, 0, 0, 0, 3_000_000_000, 0, 2**32 - 1, 2**32 - 1, 0, 0], np.uint64)
    np.testing.assert_array_equal(out[:10], i32)
    np.testing.assert_array_equal(out[10:20].view(np.uint32), u32)
    i16 = mem.read(addrs["o"] + 80, np.int16, 10)
    np.testing.assert_array_equal(i16, [2, -2, 0, 0, 32767, -32768, 32767, 32767, -32768, 0])


def test_returning_with_a_changed_rounding_mode_is_an_abi_error() -> None:
    with pytest.raises(AbiError, match="frm=2"):
        _run("    fsrmi 2", {}, [])


OVERLAP = [  # (instruction at e32/m1, legal?) - RVV 1.0 section 5.2 and the masked-v0 rule
    ("vwadd.vv v8, v8, v10", False),
    ("vwadd.vv v8, v9, v10", True),
    ("vnsrl.wi v9, v8, 0", False),
    ("vnsrl.wi v8, v8, 0", True),
    ("vadd.vv v0, v1, v2, v0.t", False),
    ("vslideup.vi v8, v8, 1", False),
    ("vslidedown.vi v8, v8, 1", True),
    ("vrgather.vv v8, v9, v8", False),
]


@pytest.mark.parametrize(("instr", "legal"), OVERLAP)
def test_register_overlap_rules_match_qemu(instr: str, legal: bool) -> None:
    body = f"""
    vsetvli zero, zero, e32, m4, ta, ma
    vmv.v.i v8, 0
    vmv.v.i v12, 0
    vsetivli zero, 4, e64, m2, ta, ma
    vmv.v.i v0, 0
    vsetivli zero, 4, e32, m1, ta, ma
    {instr}"""
    if legal:
        _run(body, {}, [])
    else:
        with pytest.raises(IllegalInstructionError, match="overlap"):
            _run(body, {}, [])
    need_tools()
    c = "void f(void); int main(void){ f(); return 0; }"
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "k.s").write_text(_fn(body))
        (d / "m.c").write_text(c)
        subprocess.run([CC, "-march=rv64gcv", "-mabi=lp64d", "-static", "-o", str(d / "t"),
                        str(d / "m.c"), str(d / "k.s")], check=True, capture_output=True)
        rc = subprocess.run([QEMU, "-cpu", "rv64,v=true,vlen=128,elen=64,vext_spec=v1.0",
                             str(d / "t")], capture_output=True).returncode
    assert rc == (0 if legal else -4)  # SIGILL


def test_widening_reduction_seed_written_at_narrow_sew_is_caught() -> None:
    """vmv.s.x at e16 defines 16 bits; vwredsum reads a 32-bit vs1[0] whose upper half is
    tail (all ones on qemu): a real bug this sanitizer found in a hand-written kernel."""
    body = """
    vsetivli zero, 4, e8, m1, ta, ma
    vmv.v.i v8, 1
    vwmul.vv v10, v8, v8
    vsetvli zero, zero, e16, m2, ta, ma
    vmv.s.x v12, zero
    vwredsum.vs v12, v10, v12"""
    with pytest.raises(TailRelianceError, match=r"scalar operand vs1\[0\].*line 8 `vmv.s.x"):
        _run(body, {}, [])


SPILL = """
    addi sp, sp, -64
    vsetivli zero, 4, e32, m1, ta, ma
    vle32.v v8, (a0)
    vsetivli zero, 2, e32, m1, ta, ma
    vfadd.vv v8, v8, v8
    vs1r.v v8, (sp)
    vsetivli zero, 4, e32, m1, ta, ma
    vmv.v.i v8, 0
    vl1re32.v v9, (sp)
    {use}
    addi sp, sp, 64"""


def test_spilling_a_register_with_an_undefined_tail_is_allowed() -> None:
    """vs1r.v/vl1re32.v of a register whose tail is undefined: a legal spill and reload."""
    use = "vsetivli zero, 2, e32, m1, ta, ma\n    vse32.v v9, (a1)"
    mem, addrs = _run(SPILL.format(use=use), {"a": np.arange(4, dtype=np.float32),
                                              "o": np.zeros(2, np.float32)}, ["a", "o"])
    np.testing.assert_array_equal(mem.read(addrs["o"], np.float32, 2), [0, 2])


@pytest.mark.parametrize("use", ["vse32.v v9, (a1)", "lw t0, 8(sp)", "flw ft0, 12(sp)"])
def test_reloaded_undefined_bytes_stay_undefined(use: str) -> None:
    with pytest.raises(TailRelianceError, match="undefined"):
        _run(SPILL.format(use=use), {"a": np.arange(4, dtype=np.float32),
                                     "o": np.zeros(4, np.float32)}, ["a", "o"])


def test_overwriting_spilled_undefined_bytes_defines_them() -> None:
    use = "sw zero, 8(sp)\n    lw t0, 8(sp)\n    vse32.v v8, (a1)"
    mem, addrs = _run(SPILL.format(use=use), {"a": np.arange(4, dtype=np.float32),
                                              "o": np.ones(4, np.float32)}, ["a", "o"])
    np.testing.assert_array_equal(mem.read(addrs["o"], np.float32, 4), [0, 0, 0, 0])


def test_integer_arguments_beyond_a7_are_read_from_the_stack() -> None:
    body = """
    ld t0, 0(sp)
    ld t1, 8(sp)
    add a0, a0, a7
    add a0, a0, t0
    add a0, a0, t1
    sd a0, 0(a1)"""
    mem = Memory()
    out = mem.alloc("o", 8)
    m = RvvMachine(parse_program(_fn(body)), mem, 128)
    m.call("f", [1, out, 0, 0, 0, 0, 0, 10, 100, 1000])
    assert int(mem.read(out, np.int64, 1)[0]) == 1111


def test_indirect_jumps_through_saved_return_addresses() -> None:
    src = """
    .text
    .globl f
f:
    mv t1, ra
    call g
    addi a0, a0, 1
    jalr zero, 0(t1)
g:
    addi a0, a0, 10
    jalr x0, ra, 0"""
    m = RvvMachine(parse_program(src), Memory(), 128)
    stats = m.call("f", [5])
    assert stats.a0 == 16 and stats.per_mnemonic["jalr"] == 2


def test_jump_to_a_non_code_address_is_illegal() -> None:
    with pytest.raises(IllegalInstructionError, match="not an instruction address"):
        _run("    li t0, 12345\n    jr t0", {}, [])


@pytest.mark.parametrize("idiom", ["vxor.vv v8, v8, v8", "vsub.vv v8, v8, v8"])
def test_zeroing_idioms_define_an_undefined_register(idiom: str) -> None:
    body = f"""
    vsetivli zero, 4, e32, m1, ta, ma
    {idiom}
    vmclr.m v0
    vmerge.vim v8, v8, 1, v0
    vse32.v v8, (a0)"""
    mem, addrs = _run(body, {"o": np.ones(4, np.int32)}, ["o"])
    np.testing.assert_array_equal(mem.read(addrs["o"], np.int32, 4), 0)


def test_ordered_reduction_rounds_after_every_add() -> None:
    """256 float32 values of mixed magnitude: pairwise or float64 summation would differ."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(256) * np.exp2(rng.integers(-20, 20, 256))).astype(np.float32)
    body = """
    vsetvli zero, a1, e32, m8, ta, ma
    vle32.v v8, (a0)
    vmv.s.x v16, zero
    vfredosum.vs v16, v8, v16
    vfmv.f.s fa0, v16
    fsw fa0, 0(a2)"""
    mem, addrs = _run(body, {"x": x, "o": np.zeros(1, np.float32)}, ["x", 256, "o"], vlen=1024)
    ref = np.float32(0)
    for v in x:
        ref = np.float32(ref + v)
    assert mem.read(addrs["o"], np.float32, 1).view(np.uint32)[0] == np.array(
        [ref]).view(np.uint32)[0]
    assert ref != np.float32(x.astype(np.float64).sum())  # the order really matters here


def test_vmerge_reads_only_the_selected_operand() -> None:
    """A mask-agnostic load padded with vmerge: masked-off (undefined) lanes are replaced, so
    storing the merge is fine; storing the unmerged load is not."""
    body = """
    vsetivli zero, 4, e32, m1, ta, ma
    vlm.v v0, (a1)
    vle32.v v8, (a0), v0.t
    vfmv.v.f v9, fa0
    vmerge.vvm v10, v9, v8, v0
    vse32.v v10, (a2)
    {extra}"""
    bufs = {"a": np.arange(4, dtype=np.float32), "m": np.array([0b1010], np.uint8),
            "o": np.zeros(4, np.float32)}
    mem, addrs = _run(body.format(extra=""), bufs, ["a", "m", "o"], fp_args=[np.float32(-1)])
    np.testing.assert_array_equal(mem.read(addrs["o"], np.float32, 4), [-1, 1, -1, 3])
    with pytest.raises(TailRelianceError, match="element 0"):
        _run(body.format(extra="vse32.v v8, (a2)"), bufs, ["a", "m", "o"],
             fp_args=[np.float32(-1)])


def test_indexed_access_may_span_several_regions() -> None:
    """Absolute addresses as indices (base x0): a gather from two buffers and a scatter back."""
    mem = Memory()
    a = mem.alloc("a", 32)
    b = mem.alloc("b", 32)
    idx = mem.alloc("idx", 64)
    mem.write(a, np.arange(8, dtype=np.float32))
    mem.write(b, np.arange(100, 108, dtype=np.float32))
    addrs = np.array([a + 4, b + 8, a, b + 28], np.uint64)
    mem.write(idx, addrs)
    body = """
    vsetivli zero, 4, e64, m2, ta, ma
    vle64.v v2, (a0)
    vsetivli zero, 4, e32, m1, ta, ma
    vluxei64.v v1, (zero), v2
    vfadd.vv v1, v1, v1
    vsoxei64.v v1, (zero), v2"""
    RvvMachine(parse_program(_fn(body)), mem, 128).call("f", [idx])
    np.testing.assert_array_equal(mem.read(a, np.float32, 8), [0, 2, 2, 3, 4, 5, 6, 7])
    np.testing.assert_array_equal(mem.read(b, np.float32, 8),
                                  [100, 101, 204, 103, 104, 105, 106, 214])


def test_semicolons_separate_statements_on_one_line() -> None:
    prog = parse_program(_fn("    li a0, 1; addi a0, a0, 2 ; addi a0, a0, 4  # done"))
    assert [i.mnemonic for i in prog.instrs] == ["li", "addi", "addi", "ret"]
    assert RvvMachine(prog, Memory(), 128).call("f").a0 == 7


def test_mask_bit_origins_are_tracked_per_bit() -> None:
    """Bit 0 keeps its undefined entry value (mask undisturbed) while bits 1.. are the
    compare's tail: the error must name the entry, not the compare."""
    body = """
    vsetivli zero, 1, e32, m1, ta, mu
    vlm.v v0, (a0)
    vmv.v.i v8, 0
    vmseq.vi v9, v8, 0, v0.t
    vcpop.m a1, v9"""
    with pytest.raises(TailRelianceError, match="left undefined by function entry"):
        _run(body, {"m": np.zeros(1, np.uint8)}, ["m"])
