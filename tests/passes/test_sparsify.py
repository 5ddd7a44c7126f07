"""Magnitude pruning into the ``sparse`` dialect: format invariants, exactness of the sparse
kernels against dense matmul with the pruned weight, byte savings, IR verify + MLIR round trip, and
an MLP end to end on the reference interpreter."""

from __future__ import annotations

import numpy as np
import pytest
from xdsl.parser import Parser
from xdsl.utils.arg_spec import parse_pipeline as parse_pipeline_spec
from xdsl.utils.exceptions import VerifyException

from portc.compiler.builder import GraphBuilder
from portc.compiler.errors import IRError
from portc.compiler.pipeline import parse_pipeline, run_passes
from portc.compiler.program import Program, make_context
from portc.dialects import graph as g
from portc.dialects import sparse as sp
from portc.dialects.graph import TensorSpec
from portc.passes.sparsify import (
    Sparsify24Pass,
    SparsifyPass,
    magnitude_mask,
    prune_2_4,
    prune_bitmask,
    sparsity_report,
)
from portc.runtimes.reference.interpreter import run_program
from portc.runtimes.reference.kernels import KernelError, run_kernel
from portc.runtimes.reference.sparse_kernels import decompress_2_4, decompress_bitmask


def _context():
    ctx = make_context()
    if "sparse" not in ctx.registered_dialect_names:
        ctx.load_dialect(sp.Sparse)
    return ctx


def _mlp(rng: np.random.Generator, dims=(64, 128, 32, 10), batch: int = 8) -> Program:
    """x -> [matmul + bias -> relu]* -> matmul + bias, weights as [K, N] constants."""
    b = GraphBuilder()
    h = b.add_input("x", TensorSpec((batch, dims[0]), "float32"))
    for i, (k, n) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        w = b.const(rng.standard_normal((k, n)).astype(np.float32), hint=f"w{i}")
        bias = b.const(rng.standard_normal(n).astype(np.float32), hint=f"b{i}")
        h = b.binary("add", b.matmul(h, w), bias)
        if i < len(dims) - 2:
            h = b.unary("relu", h)
    return b.finish([("y", h)])


def _dense_pruned(program: Program, prune) -> Program:
    """The same program with every matmul weight replaced (in place) by its pruned dense form."""
    out = program.clone()
    for op in out.main.walk():
        if isinstance(op, g.MatMulOp) and isinstance(op.rhs.owner, g.ConstantOp):
            c = op.rhs.owner
            name = out.weights.add(prune(out.weights[c.resource.data]), "pruned")
            c.properties["resource"] = g.to_attr(name)
    return out


def _prune24_dense(w: np.ndarray) -> np.ndarray:
    return decompress_2_4(*prune_2_4(w))


# ------------------------------------------------------------------------------ formats


def test_2_4_pattern_keeps_two_largest_per_group(rng):
    w = rng.standard_normal((32, 24)).astype(np.float32)
    values, indices = prune_2_4(w)
    assert values.shape == indices.shape == (16, 24) and indices.dtype == np.uint8
    dense = decompress_2_4(values, indices)
    groups = dense.reshape(8, 4, 24)
    assert np.all(np.count_nonzero(groups, axis=1) == 2)
    mag = np.abs(w.reshape(8, 4, 24))
    kept = np.abs(groups) > 0
    # every kept magnitude is >= every dropped magnitude of the same group
    assert np.all(
        np.where(kept, mag, np.inf).min(axis=1) >= np.where(kept, -np.inf, mag).max(axis=1)
    )
    np.testing.assert_array_equal(dense[dense != 0], w[dense != 0])
    assert np.all(np.diff(indices.reshape(8, 2, 24), axis=1) > 0)  # ascending positions


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.5, 0.9, 1.0])
def test_unstructured_hits_fraction(rng, fraction):
    w = rng.standard_normal((40, 13)).astype(np.float32)
    values, mask = prune_bitmask(w, fraction)
    assert mask.shape == (40, 2) and mask.dtype == np.uint8
    assert values.size == w.size - round(fraction * w.size)
    dense = decompress_bitmask(values, mask, 13)
    np.testing.assert_array_equal(dense, np.where(magnitude_mask(w, fraction), w, 0))
    if 0 < values.size < w.size:
        assert np.abs(values).min() >= np.abs(w[dense == 0]).max()


# ------------------------------------------------------------------------------ kernels


@pytest.mark.parametrize("lead", [(5,), (2, 3), ()])
def test_sparse_kernels_equal_dense_matmul_with_pruned_weight(rng, lead):
    w = rng.standard_normal((16, 12)).astype(np.float32)
    x = rng.standard_normal((*lead, 16)).astype(np.float32)
    out = TensorSpec((*lead, 12), "float32")
    values, indices = prune_2_4(w)
    got = run_kernel(sp.MatMul24Op, {}, [x, values, indices], [out])[0]
    want = (x.astype(np.float64) @ _prune24_dense(w).astype(np.float64)).astype(np.float32)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
    bvals, mask = prune_bitmask(w, 0.7)
    got = run_kernel(sp.MatMulBitmaskOp, {"n": 12}, [x, bvals, mask], [out])[0]
    want = x.astype(np.float64) @ np.where(magnitude_mask(w, 0.7), w, 0).astype(np.float64)
    np.testing.assert_allclose(got, want.astype(np.float32), rtol=1e-6, atol=0)


def test_kernels_reject_bad_metadata(rng):
    x = np.ones((2, 8), np.float32)
    vals = np.ones((4, 3), np.float32)
    out = [TensorSpec((2, 3), "float32")]
    with pytest.raises(KernelError, match="out of range"):
        run_kernel(sp.MatMul24Op, {}, [x, vals, np.full((4, 3), 5, np.uint8)], out)
    with pytest.raises(KernelError, match="same position"):
        run_kernel(sp.MatMul24Op, {}, [x, vals, np.zeros((4, 3), np.uint8)], out)
    mask = np.packbits(np.ones((8, 3), bool), axis=1, bitorder="little")
    with pytest.raises(KernelError, match="keeps 24"):
        run_kernel(sp.MatMulBitmaskOp, {"n": 3}, [x, np.ones(5, np.float32), mask], out)


# ------------------------------------------------------------------------------ verifier


def test_type_inference_and_verifier():
    f32, u8 = "float32", "uint8"
    ok = sp.MatMul24Op.infer(
        [TensorSpec((None, 3, 16), f32), TensorSpec((8, 5), f32), TensorSpec((8, 5), u8)], {}
    )
    assert ok == [TensorSpec((None, 3, 5), f32)]
    with pytest.raises(VerifyException, match="encode K=16"):
        sp.MatMul24Op.infer(
            [TensorSpec((2, 12), f32), TensorSpec((8, 5), f32), TensorSpec((8, 5), u8)], {}
        )
    with pytest.raises(VerifyException, match="uint8"):
        sp.MatMul24Op.infer(
            [TensorSpec((2, 16), f32), TensorSpec((8, 5), f32), TensorSpec((8, 5), "int32")], {}
        )
    with pytest.raises(VerifyException, match="needs 2"):
        sp.MatMulBitmaskOp.infer(
            [TensorSpec((2, 16), f32), TensorSpec((9,), f32), TensorSpec((16, 1), u8)], {"n": 10}
        )
    b = GraphBuilder(fold=False)
    x = b.add_input("x", TensorSpec((2, 16), f32))
    v = b.const(np.zeros((8, 5), np.float32))
    i = b.const(np.zeros((8, 5), np.uint8))
    op = sp.MatMul24Op.build_op([x, v, i], [TensorSpec((2, 6), f32)], {})  # wrong N
    with pytest.raises(VerifyException, match="inferred"):
        op.verify()


# ------------------------------------------------------------------------------ passes


def test_sparsify_2_4_pass_bytes_verify_and_roundtrip(rng):
    program = _mlp(rng, dims=(64, 128, 30, 10))  # 30 rows: last matmul stays dense (K % 4)
    pruned = run_passes(program.clone(), [Sparsify24Pass()])
    pruned.verify()
    ops = [op for op in pruned.main.walk() if isinstance(op, (g.MatMulOp, sp.MatMul24Op))]
    assert [type(o) for o in ops] == [sp.MatMul24Op, sp.MatMul24Op, g.MatMulOp]
    # the dense weights of the pruned matmuls are gone from the IR
    names = {op.resource.data for op in pruned.main.walk() if isinstance(op, g.ConstantOp)}
    assert "w0" not in names and "w1" not in names and "w2" in names
    rep = sparsity_report(program, pruned, {"x": rng.standard_normal((8, 64)).astype(np.float32)})
    dense24 = (64 * 128 + 128 * 30) * 4
    # 2:4 stores half the values (f32) + one uint8 index per value
    assert rep["matmul_weight_bytes_before"] - rep["matmul_weight_bytes_after"] == (
        dense24 - dense24 // 2 - dense24 // 8
    )
    assert rep["index_bytes_2bit"] == (64 * 128 + 128 * 30) // 2 // 4
    assert rep["macs_saved"] == 8 * (64 * 128 + 128 * 30) // 2

    text = pruned.to_text()
    assert "sparse.matmul_2_4" in text
    module = Parser(_context(), text).parse_module()
    module.verify()
    assert str(module) + "\n" == text


def test_sparsify_pass_fraction_option_and_roundtrip(rng):
    program = _mlp(rng)
    (p,) = parse_pipeline(["sparsify"])
    assert isinstance(p, SparsifyPass) and p.fraction == 0.5
    (spec,) = parse_pipeline_spec("sparsify{fraction=0.75}")
    assert SparsifyPass.from_pass_spec(spec) == SparsifyPass(fraction=0.75)
    pruned = run_passes(program.clone(), [SparsifyPass(fraction=0.75)])
    pruned.verify()
    ops = [op for op in pruned.main.walk() if isinstance(op, sp.MatMulBitmaskOp)]
    assert len(ops) == 3
    for op, (k, n) in zip(ops, [(64, 128), (128, 32), (32, 10)], strict=True):
        nnz = pruned.weights[op.values.owner.resource.data].size
        assert nnz == k * n - round(0.75 * k * n)
        assert op.props()["n"] == n
    x = rng.standard_normal((8, 64)).astype(np.float32)
    want = run_program(
        _dense_pruned(program, lambda w: np.where(magnitude_mask(w, 0.75), w, 0)), {"x": x}
    )
    np.testing.assert_allclose(run_program(pruned, {"x": x})["y"], want["y"], rtol=1e-6)
    rep = sparsity_report(program, pruned, {"x": x})
    dense = (64 * 128 + 128 * 32 + 32 * 10) * 4
    assert rep["matmul_weight_bytes_after"] < 0.35 * dense
    text = pruned.to_text()
    module = Parser(_context(), text).parse_module()
    module.verify()
    assert str(module) + "\n" == text


def test_verify_catches_format_mismatch(rng):
    program = run_passes(_mlp(rng), [Sparsify24Pass()])
    op = next(o for o in program.main.walk() if isinstance(o, sp.MatMul24Op))
    op.operands[2] = op.operands[1]  # float values where uint8 indices belong
    with pytest.raises(IRError, match="uint8"):
        program.verify()


def test_mlp_end_to_end_after_sparsify_2_4(rng):
    program = _mlp(rng)
    x = {"x": rng.standard_normal((8, 64)).astype(np.float32)}
    pruned = run_passes(program.clone(), parse_pipeline("sparsify-2-4"))
    got = run_program(pruned, x)["y"]
    want = run_program(_dense_pruned(program, _prune24_dense), x)["y"]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
    assert not np.allclose(got, run_program(program, x)["y"])  # pruning did change the model
    rep = sparsity_report(program, pruned, x)
    assert rep["macs_after"] * 2 == rep["macs_before"]
    assert 0.0 < rep["outputs"]["y"]["cosine"] < 1.0


def test_torch_mlp_end_to_end_after_sparsify_2_4():
    torch = pytest.importorskip("torch")
    from portc.compiler.api import import_model

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
    example = torch.randn(4, 32)
    program = import_model(model, (example,)).program
    pruned = run_passes(program.clone(), parse_pipeline("sparsify-2-4"))
    assert sum(isinstance(o, sp.MatMul24Op) for o in pruned.main.walk()) == 2
    x = {program.input_names[0]: example.numpy()}
    out = program.output_names[0]
    got = run_program(pruned, x)[out]
    want = run_program(_dense_pruned(program, _prune24_dense), x)[out]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
    # and equal to torch itself with the 2:4-pruned weights (Linear stores W as [N, K])
    with torch.no_grad():
        for lin in (model[0], model[2]):
            w = lin.weight.numpy().T
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(_prune24_dense(w).T)))
        ref = model(example).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    rep = sparsity_report(program, pruned, x)
    assert rep["outputs"][out]["cosine"] > 0.5
