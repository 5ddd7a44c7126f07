"""Target ``rvv`` end to end: the examples verify on rvvsim and on qemu, every emitted kernel
writes the same bytes on both at VLEN 128, 256, 512 and 1024, seeded bugs rvvsim must catch
(reliance on tail elements, an out-of-bounds load), the compile report and the bundle built
with riscv64-linux-gnu-gcc from its manifest; the MiniLM encoder on qemu, and (slow) on rvvsim
and the onnx package's light_* CNNs on qemu.

Tolerances: kernels compute in float32 with fused multiply-adds and polynomial
transcendentals (``passes/rvv_polynomials.py``), so the examples are checked at the reference
target's ``rtol=1e-4, atol=1e-5``; the encoder at ``atol=1e-4`` like the reference target.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest

from portc.compiler import api
from portc.compiler.artifact import Artifact
from portc.compiler.builder import GraphBuilder
from portc.compiler.program import Program
from portc.compiler.target_rvv import ASM_FILE, VLENS, RvvSimExecutable, compile_rvv
from portc.compiler.targets import CompileOptions
from portc.dialects.graph import TensorSpec
from portc.runtimes.qemu import GCC, QemuExecutable, qemu_cpu, unavailable
from portc.runtimes.rvvsim import OutOfBoundsError, TailRelianceError
from tests.conftest import light_models, need, portc_cli

EXAMPLES = ["mlp", "small_cnn", "tiny_transformer"]
LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def need_qemu() -> None:
    need(unavailable() is None, f"{GCC} and qemu-riscv64 ({unavailable()})")


@pytest.mark.parametrize("name", EXAMPLES)
@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_example_verifies_on_rvvsim(examples_dir: Path, name: str, fmt: str) -> None:
    rep = api.verify(examples_dir / f"{name}.{fmt}", "rvv", seed=3, rtol=1e-4, atol=1e-5)
    assert rep.ok, rep.table()
    assert rep.stats["instructions"] > 0 and rep.stats["per_mnemonic"]
    batched = rep.stats["batched"]
    assert 0 < batched["instructions"] <= rep.stats["instructions"] and batched["iterations"]


@pytest.mark.parametrize("name", EXAMPLES)
@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_example_verifies_on_qemu(examples_dir: Path, name: str, fmt: str) -> None:
    need_qemu()
    rep = api.verify(examples_dir / f"{name}.{fmt}", "rvv", runtime="qemu", seed=4, rtol=1e-4,
                     atol=1e-5)
    assert rep.ok, rep.table()
    assert rep.runtime == "qemu"


@pytest.mark.parametrize("vlen", VLENS)
def test_every_kernel_writes_the_same_bytes_on_rvvsim_and_qemu(examples_dir: Path,
                                                               vlen: int) -> None:
    """Each kernel's output buffers, captured right after it returns (temporaries share the
    arena, so the final outputs alone would hide a kernel whose result is overwritten)."""
    need_qemu()
    for i, name in enumerate(EXAMPLES):
        m = api.import_model(examples_dir / f"{name}.onnx")
        art = api.compile(None, target="rvv", imported=m, options={"vlen": vlen}).artifact
        assert art.manifest["rvv"]["vlen"] == vlen
        feeds = api.random_inputs(m.program, seed=10 + i)
        sim_out, sim = RvvSimExecutable(art, trace=True).run(feeds)
        q_out, q = QemuExecutable(art, trace=True).run(feeds)
        assert set(sim["trace"]) == set(q["trace"]) == {
            f"{kn}.{b}" for kn, bufs in art.manifest["rvv"]["writes"].items() for b in bufs}
        differ = [key for key in sim["trace"] if sim["trace"][key] != q["trace"][key]]
        assert not differ, f"{name} at VLEN {vlen}: kernels differ: {differ}"
        for out, v in sim_out.items():
            assert v.tobytes() == q_out[out].tobytes()


# ------------------------------------------------------------------------------ seeded bugs
def _with_asm(art: Artifact, text: str) -> Artifact:
    return Artifact(art.target, {**art.files, ASM_FILE: text}, art.weights, art.manifest)


def _reduce_sum_program(n: int) -> Program:
    b = GraphBuilder()
    x = b.add_input("x", TensorSpec((n,), "float32"))
    return b.finish([("y", b.reduce("sum", x, [0], keepdims=False))])


def test_rvvsim_catches_a_reduction_reading_past_vl(rng: np.random.Generator) -> None:
    """The ordered reduction of each strip, edited to run at VLMAX instead of the strip's vl,
    reads the tail elements the strip's load left agnostic: rvvsim names the reduction and
    the load; qemu (tails filled with ones, NaN as float32) returns a wrong sum."""
    art = compile_rvv(_reduce_sum_program(37), CompileOptions())
    text = art.files[ASM_FILE]
    assert "vfredosum.vs" in text
    bad, n = re.subn(r"^(\s*)(vfredosum\.vs .*)$", r"\1vsetvli t0, zero, e32, m8, ta, ma\n\1\2",
                     text, count=1, flags=re.M)
    assert n == 1
    feeds = {"x": rng.standard_normal(37).astype(np.float32)}
    got, _ = RvvSimExecutable(art).run(feeds)  # the intact kernel is clean and right
    np.testing.assert_allclose(got["y"], feeds["x"].astype(np.float64).sum(), rtol=1e-5)
    with pytest.raises(TailRelianceError) as ei:
        RvvSimExecutable(_with_asm(art, bad)).run(feeds)
    msg = str(ei.value)
    assert "vfredosum.vs" in msg and "vle32.v" in msg, msg
    assert re.search(r"line \d+", msg)
    if unavailable() is None:
        q, _ = QemuExecutable(_with_asm(art, bad)).run(feeds)
        assert not np.allclose(q["y"], got["y"])


def test_rvvsim_catches_an_out_of_bounds_load(rng: np.random.Generator) -> None:
    """A kernel whose input pointer is shifted by one element reads 4 bytes past the buffer in
    its last strip: rvvsim stops at that load and names it; qemu reads the heap slack beyond
    the buffer without noticing."""
    b = GraphBuilder()
    x = b.add_input("x", TensorSpec((5, 7), "float32"))
    art = compile_rvv(b.finish([("y", b.unary("neg", b.transpose(x, [1, 0])))]),
                      CompileOptions())
    text = art.files[ASM_FILE]
    bad, n = re.subn(r"^(\s*)(ld (a\d), 0\(a0\))$", r"\1\2\n\1addi \3, \3, 4", text, count=1,
                     flags=re.M)
    assert n == 1
    feeds = {"x": rng.standard_normal((5, 7)).astype(np.float32)}
    got, _ = RvvSimExecutable(art).run(feeds)
    np.testing.assert_array_equal(got["y"], -feeds["x"].T)
    with pytest.raises(OutOfBoundsError) as ei:
        RvvSimExecutable(_with_asm(art, bad)).run(feeds)
    msg = str(ei.value)
    assert re.search(r"`vl(s)?e32\.v v\d+, \(a\d\)", msg) and "k0_" in msg, msg
    assert re.search(r"line \d+", msg)
    if unavailable() is None:
        q, _ = QemuExecutable(_with_asm(art, bad)).run(feeds)
        assert not np.array_equal(q["y"], got["y"])


# ------------------------------------------------------------------------------ bundle and report
def test_compile_reports_schedules_and_assembles(examples_dir: Path, tmp_path: Path) -> None:
    need(unavailable() is None, GCC)
    out = subprocess.run([*portc_cli(), "compile", str(examples_dir / "small_cnn.onnx"),
                          "--target", "rvv", "--vlen", "512", "-o", str(tmp_path / "b")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    head = re.search(r"rvv: (\d+) kernels \((\d+) GEMM microkernels\), \d+ instructions, tuned "
                     r"for VLEN 512 .*riscv64-linux-gnu-gcc -march=rv64gcv: assembled, (\d+) "
                     r"bytes of code", out.stdout)
    assert head, out.stdout
    art = Artifact.read(tmp_path / "b")
    rv = art.manifest["rvv"]
    assert int(head.group(1)) == len(art.manifest["kernels"])
    assert int(head.group(2)) >= 2  # the two convolutions
    assert set(rv["assembler"]["bytes"]) == set(art.manifest["kernels"])
    assert sum(rv["assembler"]["bytes"].values()) == int(head.group(3))
    assert all(rv["schedules"][k] for k in art.manifest["kernels"])


def test_bundle_builds_with_its_manifest_command_and_runs(examples_dir: Path,
                                                          tmp_path: Path) -> None:
    """The bundle is self-contained: its manifest's build line links kernels.s + driver.c,
    and the binary run under qemu with raw input files matches the reference target."""
    need_qemu()
    bundle = tmp_path / "b"
    subprocess.run([*portc_cli(), "compile", str(examples_dir / "mlp.onnx"), "-t", "rvv", "-q",
                    "-o", str(bundle)], check=True, capture_output=True)
    art = Artifact.read(bundle)
    build = art.manifest["rvv"]["build"].split()
    assert build[0] == GCC
    subprocess.run([*build, "-Wall", "-Wextra", "-Werror", "-o", "model"], cwd=bundle,
                   check=True, capture_output=True)
    m = api.import_model(examples_dir / "mlp.onnx")
    feeds = api.random_inputs(m.program, seed=7)
    ind, outd = tmp_path / "in", tmp_path / "out"
    ind.mkdir()
    outd.mkdir()
    for b in art.manifest["buffers"]:
        if b["kind"] == "input":
            (ind / f"{b['name']}.bin").write_bytes(feeds[b["binding"]].tobytes())
        elif b["kind"] == "weight":
            (ind / f"{b['name']}.bin").write_bytes(np.ascontiguousarray(
                art.weights[b["binding"]]).tobytes())
    subprocess.run(["qemu-riscv64", "-cpu", qemu_cpu(art.manifest["rvv"]["vlen"]),
                    str(bundle / "model"), str(ind), str(outd)], check=True, capture_output=True)
    (ob,) = [b for b in art.manifest["buffers"] if b["kind"] == "output"]
    got = np.frombuffer((outd / f"{ob['name']}.bin").read_bytes(), np.float32).reshape(ob["shape"])
    want = api.compile(None, imported=m).run(feeds)[ob["binding"]]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------ models
def test_minilm_encoder_verifies_on_qemu(minilm_dir: Path) -> None:
    need_qemu()
    rep = api.verify(minilm_dir / "minilm_encoder.onnx", "rvv", runtime="qemu", seed=2,
                     rtol=1e-4, atol=1e-4)
    assert rep.ok, rep.table()


@pytest.mark.slow
def test_minilm_encoder_verifies_on_rvvsim(minilm_dir: Path) -> None:
    rep = api.verify(minilm_dir / "minilm_encoder.onnx", "rvv", seed=2, rtol=1e-4, atol=1e-4)
    assert rep.ok, rep.table()


@pytest.mark.slow
@pytest.mark.parametrize("name", light_models("squeezenet", "inception_v1", "resnet50"))
def test_light_model_verifies_on_qemu(name: str) -> None:
    need_qemu()
    rep = api.verify(LIGHT_DIR / f"light_{name}.onnx", "rvv", runtime="qemu", seed=1,
                     rtol=1e-3, atol=1e-4)
    assert rep.ok, rep.table()
