"""The ptx dialect: verifiers reject what ptxas would, the emitter prints PTX that ptxas and
ptxsim accept, and the register declarations cover what the body uses."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from xdsl.dialects.builtin import StringAttr
from xdsl.utils.exceptions import VerifyException

from portc.dialects import ptx
from portc.runtimes.ptxsim import GlobalMemory, PtxSim, parse_module
from tests.conftest import need


def _saxpy() -> ptx.PtxModuleOp:
    """y[i] = a * x[i] + y[i] for i < n, built op by op."""
    i = ptx.ins
    body = [
        i("ld.param.u64", ["%rd1", "[px]"]), i("ld.param.u64", ["%rd2", "[py]"]),
        i("ld.param.u32", ["%r1", "[n]"]), i("ld.param.f32", ["%f1", "[a]"]),
        i("cvta.to.global.u64", ["%rd1", "%rd1"]), i("cvta.to.global.u64", ["%rd2", "%rd2"]),
        i("mov.u32", ["%r2", "%ctaid.x"]), i("mov.u32", ["%r3", "%ntid.x"]),
        i("mov.u32", ["%r4", "%tid.x"]), i("mad.lo.s32", ["%r5", "%r2", "%r3", "%r4"]),
        i("setp.ge.u32", ["%p1", "%r5", "%r1"]), i("bra.uni", ["$L_end"], guard="%p1"),
        i("mul.wide.u32", ["%rd3", "%r5", "4"]), i("add.s64", ["%rd4", "%rd1", "%rd3"]),
        i("add.s64", ["%rd5", "%rd2", "%rd3"]), i("ld.global.f32", ["%f2", "[%rd4]"]),
        i("ld.global.f32", ["%f3", "[%rd5]"]), i("fma.rn.f32", ["%f4", "%f1", "%f2", "%f3"]),
        i("st.global.f32", ["[%rd5]", "%f4"]),
        ptx.LabelOp.create(properties={"label": StringAttr("$L_end")}), i("ret", []),
    ]
    e = ptx.EntryOp.make("saxpy", ["px:u64", "py:u64", "n:u32", "a:f32"], [], body)
    return ptx.PtxModuleOp.make(80, [e])


def test_emitted_module_has_the_header_and_declares_every_register() -> None:
    m = _saxpy()
    m.verify()
    text = ptx.emit_module(m)
    assert ".version 8.0\n.target sm_80\n.address_size 64" in text
    assert "\t.reg .pred %p<2>;" in text and "\t.reg .b32 %r<6>;" in text
    assert "\t.reg .b64 %rd<6>;" in text and "\t.reg .f32 %f<5>;" in text
    assert "@%p1 bra.uni $L_end;" in text and "\n$L_end:\n" in text


def test_emitted_module_runs_on_ptxsim_like_numpy(rng: np.random.Generator) -> None:
    mod = parse_module(ptx.emit_module(_saxpy()), "saxpy.ptx")
    mem = GlobalMemory()
    n = 300
    x = rng.standard_normal(n).astype(np.float32)
    y = rng.standard_normal(n).astype(np.float32)
    px, py = mem.alloc("x", 4 * n), mem.alloc("y", 4 * n)
    mem.write(px, x)
    mem.write(py, y)
    PtxSim(mod, mem).launch("saxpy", grid=(3, 1, 1), block=(128, 1, 1),
                            params=[px, py, n, np.float32(1.5)])
    want = (np.float64(1.5) * x + y).astype(np.float32)  # fma: one rounding
    np.testing.assert_array_equal(mem.read(py, np.float32, n), want)


def test_ptxas_accepts_the_emitted_module(tmp_path: Path) -> None:
    need(shutil.which("ptxas") is not None, "ptxas")
    src = tmp_path / "saxpy.ptx"
    src.write_text(ptx.emit_module(_saxpy()))
    for arch in (80, 90):
        p = subprocess.run(["ptxas", f"-arch=sm_{arch}", str(src), "-o", str(tmp_path / "o")],
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stderr


@pytest.mark.parametrize(("mnemonic", "operands", "why"), [
    ("rem.f32", ["%f1", "%f2", "%f3"], "type .f32 is not legal"),
    ("add.rn.f32", ["%f1", "%f2"], "takes 3 operands, got 2"),
    ("ld.texture.f32", ["%f1", "[%rd1]"], "state space '.texture'"),
    ("cvta.to.global.f32", ["%rd1", "%rd1"], "type .f32 is not legal"),
])
def test_verifier_rejects_what_ptxas_would(mnemonic: str, operands: list[str], why: str) -> None:
    op = ptx.ins(mnemonic, operands)
    with pytest.raises(VerifyException, match=why):
        op.verify()


def test_unknown_instruction_and_unsupported_sm_are_rejected() -> None:
    with pytest.raises(VerifyException, match="unknown instruction 'frobnicate'"):
        ptx.ins("frobnicate.b32", ["%r1"])
    with pytest.raises(VerifyException, match="sm_75"):
        ptx.PtxModuleOp.make(75, []).verify()


def test_instruction_classes_come_from_the_table_with_semantics_docstrings() -> None:
    add = ptx.INSTRUCTIONS["add"]
    assert add.name == "ptx.add" and issubclass(add, ptx.RdRsRs)
    assert "d = a + b" in (add.__doc__ or "")
    assert issubclass(ptx.INSTRUCTIONS["ld"], ptx.MemoryInstruction)
    assert issubclass(ptx.INSTRUCTIONS["fma"], ptx.RdRsRsRs)
