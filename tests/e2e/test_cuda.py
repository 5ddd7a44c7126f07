"""Target ``cuda`` end to end: examples, the MiniLM encoder and the onnx package's light_* CNNs
verify on ptxsim, ptxas accepts what is emitted (without spills), the compile report, seeded
bugs that ptxsim must catch, and the real-GPU runtime where one exists."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from portc.compiler import api
from portc.compiler.artifact import Artifact
from portc.compiler.builder import GraphBuilder
from portc.compiler.program import Program
from portc.compiler.target_cuda import PTX_FILE, PtxSimExecutable, compile_cuda
from portc.compiler.targets import CompileOptions
from portc.dialects.graph import TensorSpec
from portc.runtimes.cuda_driver import unavailable
from portc.runtimes.ptxsim import MisalignedAccessError, OutOfBoundsError, SharedMemoryRaceError
from tests.conftest import light_models, need, portc_cli

EXAMPLES = ["mlp", "small_cnn", "tiny_transformer"]
LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
gpu = pytest.mark.skipif(unavailable() is not None, reason=f"no GPU: {unavailable()}")


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_verifies_on_ptxsim(examples_dir: Path, name: str) -> None:
    rep = api.verify(examples_dir / f"{name}.onnx", "cuda", seed=3, rtol=1e-4, atol=1e-5)
    assert rep.ok, rep.table()


def _ptxas(text: str, arch: int, tmp: Path) -> subprocess.CompletedProcess:
    src = tmp / f"m{arch}.ptx"
    src.write_text(text)
    return subprocess.run(["ptxas", f"-arch=sm_{arch}", str(src), "-o", str(tmp / "m.cubin")],
                          capture_output=True, text=True)


@pytest.mark.parametrize(("name", "precision"), [(n, "fp32") for n in EXAMPLES]
                         + [("small_cnn", "fp16"), ("tiny_transformer", "tf32")])
def test_ptxas_assembles_every_emitted_module_for_sm80_and_sm90(
        examples_dir: Path, tmp_path: Path, name: str, precision: str) -> None:
    need(shutil.which("ptxas") is not None, "ptxas")
    m = api.import_model(examples_dir / f"{name}.onnx")
    for sm, archs in ((80, (80, 90)), (90, (90,))):
        art = compile_cuda(m.program.clone(), CompileOptions({"sm": sm, "precision": precision}))
        assert f".target sm_{sm}" in art.files[PTX_FILE]
        for arch in archs:
            p = _ptxas(art.files[PTX_FILE], arch, tmp_path)
            assert p.returncode == 0, f"{name} sm_{sm} -arch=sm_{arch}: {p.stderr[-2000:]}"


@pytest.mark.slow
@pytest.mark.parametrize(("precision", "tol"), [("fp32", 1e-4), ("fp16", 1e-2)])
def test_minilm_encoder_verifies_on_ptxsim(minilm_dir: Path, precision: str, tol: float) -> None:
    """The BERT-style encoder (real weights, sequence 32): fp32 GEMMs on fma, fp16 on
    mma.sync with fp32 accumulation (its outputs carry fp16 operand rounding)."""
    rep = api.verify(minilm_dir / "minilm_encoder.onnx", "cuda", seed=2, rtol=tol, atol=tol,
                     options={"precision": precision})
    assert rep.ok, rep.table()


@pytest.mark.slow
def test_encoder_modules_assemble_without_spills(minilm_dir: Path) -> None:
    """ptxas -v on the encoder's module for each precision and sm: no kernel spills or needs a
    stack frame."""
    need(shutil.which("ptxas") is not None, "ptxas")
    m = api.import_model(minilm_dir / "minilm_encoder.onnx")
    for sm, precision in ((80, "fp32"), (90, "fp16"), (90, "tf32")):
        art = compile_cuda(m.program.clone(), CompileOptions({"sm": sm, "precision": precision}))
        rep = art.manifest["cuda"]["ptxas"]
        assert rep["available"] and rep["sm"] == sm
        assert len(rep["kernels"]) == len(art.manifest["cuda"]["launches"])
        bad = {k: v for k, v in rep["kernels"].items()
               if v["spill_stores"] or v["spill_loads"] or v["stack_bytes"]}
        assert not bad, f"sm_{sm} {precision}: {bad}"
        assert 0 < rep["max_registers"] <= 255


def _with_logits(name: str, tmp: Path) -> Path:
    """light_<name> with its softmax's input as a second output. The models' random weights
    give every class the same logit, so the softmax alone is 0.001 everywhere whatever the
    convolutions compute; the logits (1e9 to 1e21) carry the whole network's arithmetic."""
    m = onnx.shape_inference.infer_shapes(onnx.load(LIGHT_DIR / f"light_{name}.onnx"))
    logits = next(n for n in m.graph.node if n.op_type == "Softmax").input[0]
    m.graph.output.append(next(v for v in m.graph.value_info if v.name == logits))
    path = tmp / f"light_{name}_logits.onnx"
    onnx.save(m, path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("name", light_models("squeezenet", "inception_v1", "resnet50"))
def test_light_model_verifies_on_ptxsim(tmp_path: Path, name: str) -> None:
    rep = api.verify(_with_logits(name, tmp_path), "cuda", seed=1, rtol=1e-4, atol=1e-5)
    assert rep.ok, rep.table()
    assert len(rep.checks) == 2


def test_compile_reports_registers_and_no_spills(examples_dir: Path, tmp_path: Path) -> None:
    need(shutil.which("ptxas") is not None, "ptxas")
    out = subprocess.run([*portc_cli(), "compile", str(examples_dir / "small_cnn.onnx"),
                          "--target", "cuda", "--sm", "90", "-o", str(tmp_path / "b")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert re.search(r"ptxas sm_90: \d+ kernels, max \d+ registers, 0 spill bytes", out.stdout)
    art = Artifact.read(tmp_path / "b")
    rep = art.manifest["cuda"]["ptxas"]
    launches = art.manifest["cuda"]["launches"]
    assert set(rep["kernels"]) == {ln["entry"] for ln in launches}
    assert all(0 < v["registers"] <= 255 for v in rep["kernels"].values())
    gemm = [ln for ln in launches if ln["schedule"].startswith("gemm")]
    assert gemm and all(rep["kernels"][ln["entry"]]["shared_bytes"] > 0 for ln in gemm)


def test_bundle_runs_from_disk_with_the_cli(examples_dir: Path, tmp_path: Path) -> None:
    b = tmp_path / "mlp"
    subprocess.run([*portc_cli(), "compile", str(examples_dir / "mlp.onnx"), "-t", "cuda", "-q",
                    "-o", str(b)], check=True, capture_output=True)
    art = Artifact.read(b)
    m = api.import_model(examples_dir / "mlp.onnx")
    rng = np.random.default_rng(0)
    feeds = {n: rng.standard_normal(s.shape).astype(np.float32)
             for n, s in m.program.input_specs().items()}
    got, stats = PtxSimExecutable(art).run(feeds)
    want = api.compile(None, imported=m).run(feeds)
    for k, v in want.items():
        np.testing.assert_allclose(got[k], v, rtol=1e-4, atol=1e-5)
    assert stats["warp_instructions"] > 0 and stats["launches"] == len(
        art.manifest["cuda"]["launches"])


# ------------------------------------------------------------------------------ seeded bugs
def _artifact(prog: Program, precision: str = "fp32") -> Artifact:
    return compile_cuda(prog, CompileOptions({"precision": precision}))


def _with_text(art: Artifact, text: str) -> Artifact:
    return Artifact(art.target, {**art.files, PTX_FILE: text}, art.weights, art.manifest)


def test_ptxsim_catches_an_out_of_bounds_read_from_a_shifted_bound() -> None:
    b = GraphBuilder()
    x = b.add_input("x", TensorSpec((5, 7), "float32"))
    prog = b.finish([("y", b.unary("neg", b.transpose(x, [1, 0])))])
    art = _artifact(prog)
    text = art.files[PTX_FILE]
    bad, n = re.subn(r"(setp\.ge\.u32\s+%p\d+, %r\d+, )35;", r"\g<1>64;", text)
    assert n == 1
    feeds = {"x": np.ones((5, 7), np.float32)}
    PtxSimExecutable(art).run(feeds)  # the intact kernel is clean
    with pytest.raises(OutOfBoundsError) as ei:
        PtxSimExecutable(_with_text(art, bad)).run(feeds)
    msg = str(ei.value)
    entry = art.manifest["cuda"]["launches"][0]["entry"]
    assert f"kernel '{entry}'" in msg and "ld.global.f32" in msg and "thread (" in msg
    assert re.search(r"at line \d+", msg)


def test_ptxsim_catches_the_race_when_a_gemm_loses_its_bar_sync(
        rng: np.random.Generator) -> None:
    b = GraphBuilder()
    x = b.add_input("a", TensorSpec((32, 40), "float32"))
    y = b.add_input("b", TensorSpec((40, 24), "float32"))
    art = _artifact(b.finish([("y", b.matmul(x, y))]))
    text = art.files[PTX_FILE]
    assert text.count("bar.sync 0;") == 2
    feeds = {"a": rng.standard_normal((32, 40)).astype(np.float32),
             "b": rng.standard_normal((40, 24)).astype(np.float32)}
    PtxSimExecutable(art).run(feeds)
    # delete the barrier that separates the tile's multiply from the next tile's stores
    lines = text.splitlines()
    last = max(i for i, ln in enumerate(lines) if ln.strip() == "bar.sync 0;")
    bad = "\n".join(lines[:last] + lines[last + 1:]) + "\n"
    with pytest.raises(SharedMemoryRaceError) as ei:
        PtxSimExecutable(_with_text(art, bad)).run(feeds)
    assert "kernel '" in str(ei.value) and "thread (" in str(ei.value)


def test_ptxsim_catches_a_misaligned_vector_load(rng: np.random.Generator) -> None:
    b = GraphBuilder()
    # the kernel reads x[:, :32] of a [4, 36] buffer: shifted by 4 bytes it stays in bounds
    x = b.add_input("x", TensorSpec((4, 36), "float32"))
    art = _artifact(b.finish([("y", b.unary("exp", b.slice(x, [0, 0], [1, 1], [4, 32])))]))
    text = art.files[PTX_FILE]
    bad, n = re.subn(r"(ld\.global\.v4\.f32 \{[^}]*\}, \[%rd\d+)\]", r"\1+4]", text)
    assert n == 1
    feeds = {"x": rng.standard_normal((4, 36)).astype(np.float32)}
    PtxSimExecutable(art).run(feeds)
    with pytest.raises(MisalignedAccessError) as ei:
        PtxSimExecutable(_with_text(art, bad)).run(feeds)
    assert "ld.global.v4.f32" in str(ei.value) and "thread (" in str(ei.value)


# -------------------------------------------------------------------------------------- GPU
def test_gpu_runtime_says_why_it_is_unavailable() -> None:
    why = unavailable()
    assert why is None or ("GPU" in why or "CUDA" in why or "cuInit" in why)


@gpu
def test_gpu_runtime_matches_ptxsim_on_the_examples(examples_dir: Path) -> None:
    for name in EXAMPLES:
        rep = api.verify(examples_dir / f"{name}.onnx", "cuda", runtime="gpu", seed=3,
                         rtol=1e-4, atol=1e-5)
        assert rep.ok


@gpu
def test_bench_scripts_run_on_the_gpu() -> None:
    root = Path(__file__).resolve().parents[2] / "bench"
    for script in ("cuda_gemm.py", "cuda_transformer_layer.py"):
        subprocess.run([sys.executable, str(root / script), "--quick"], check=True)
