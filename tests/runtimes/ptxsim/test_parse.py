"""Parsing PTX text: module facts, decoding errors with line numbers, reconvergence points."""

from __future__ import annotations

import pytest

from portc.compiler.errors import IRError
from portc.runtimes.ptxsim import PtxParseError, UnsupportedInstructionError, parse_module

from .kernels import ALL, HEADER, PARAMS_AND_EXTERN


def test_module_header_params_and_shared_sizes():
    mod = parse_module(ALL["ldsm_mma"], "m.ptx")
    assert mod.version == "8.0" and mod.target == ["sm_80"] and mod.address_size == 64
    ent = mod.entries["ldsm_mma"]
    assert [(p.name, p.type, p.offset) for p in ent.params] == [("pa", "u64", 0), ("pb", "u64", 8),
                                                                ("pd", "u64", 16)]
    assert ent.shared_bytes == 512 + 256
    assert (ent.shared["sa"].offset, ent.shared["sb"].offset) == (0, 512)


def test_param_offsets_follow_alignment_and_extern_shared_is_dynamic():
    ent = parse_module(PARAMS_AND_EXTERN).entries["k"]
    assert [(p.name, p.offset, p.size) for p in ent.params] == [("a", 0, 4), ("s", 8, 12),
                                                                ("f", 20, 4), ("p", 24, 8)]
    assert ent.shared_bytes == 6 and ent.shared["dyn"].extern and ent.dynamic_align == 16


def test_unknown_instruction_is_an_error_naming_its_line():
    text = HEADER + """
.visible .entry k()
{
    .reg .b32 %r<3>;
    mov.u32 %r1, 1;
    frobnicate.u32 %r2, %r1;
    ret;
}
"""
    with pytest.raises(UnsupportedInstructionError, match=r"k\.ptx:9: `frobnicate\.u32 %r2, %r1`") as e:
        parse_module(text, "k.ptx")
    assert isinstance(e.value, IRError)


def test_syntax_error_names_the_line():
    text = HEADER + """
.visible .entry k()
{
    .reg .b32 %r<3>;
    mov.u32 %r1, , 1;
    ret;
}
"""
    with pytest.raises(PtxParseError, match=r"k\.ptx:8"):
        parse_module(text, "k.ptx")


def test_undeclared_register_is_an_error():
    text = HEADER + """
.visible .entry k()
{
    .reg .b32 %r<3>;
    add.s32 %r1, %r7, 1;
    ret;
}
"""
    with pytest.raises(PtxParseError, match="undeclared register or symbol '%r7'"):
        parse_module(text, "k.ptx")


def test_unsupported_qualifier_combination_is_refused_at_parse_time():
    text = HEADER + """
.visible .entry k()
{
    .reg .f32 %f<3>;
    fma.f32 %f1, %f2, %f2, %f2;
    ret;
}
"""
    with pytest.raises(UnsupportedInstructionError, match="needs .rn/.rz/.rm/.rp"):
        parse_module(text, "k.ptx")


def test_reconvergence_point_is_the_immediate_post_dominator():
    ent = parse_module(ALL["diverge"]).entries["diverge"]
    by_text = {i.text: i for i in ent.instrs}
    join = ent.labels["$L_join"]
    # the outer if/else and the nested if both reconverge at $L_join
    assert by_text["@!%p1 bra $L_else"].ipdom == join
    assert by_text["@%p2 bra $L_join"].ipdom == join
    loop = parse_module(ALL["loop_count"]).entries["loop_count"]
    back = next(i for i in loop.instrs if i.text == "@%p1 bra $L_loop")
    assert back.ipdom == loop.labels["$L_done"]
