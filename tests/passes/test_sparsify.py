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
    choose_unstructured,
    encode_bitmask,
    encode_csr,
    encode_nm,
    magnitude_mask,
    pack_fields,
    prune_2_4,
    prune_bitmask,
    sparsity_report,
)
from portc.runtimes.reference.interpreter import ExecutionError, run_program
from portc.runtimes.reference.kernels import KernelError, run_kernel
from portc.runtimes.reference.sparse_kernels import decode, decode_bitmask, unpack_fields


def _context():
    return make_context()


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
    out = Program(program.module.clone(), program.weights.subset(set(program.weights)))
    for op in out.main.walk():
        if isinstance(op, g.MatMulOp) and isinstance(op.rhs.owner, g.ConstantOp):
            c = op.rhs.owner
            name = out.weights.add(prune(out.weights[c.resource.data]), "pruned")
            c.properties["resource"] = g.to_attr(name)
    return out


def _prune24_dense(w: np.ndarray) -> np.ndarray:
    """2:4 pruning written independently: zero the 2 smallest |w| of each 4-row group."""
    k, n = w.shape
    grp = w.reshape(k // 4, 4, n)
    order = np.argsort(np.abs(grp), axis=1, kind="stable")  # ascending magnitude
    keep = np.ones(grp.shape, bool)
    np.put_along_axis(keep, order[:, :2, :], False, axis=1)
    # ties: argsort is stable, so of equal magnitudes the lower position is dropped first;
    # the pass keeps the lower one. Random normal weights have no ties.
    return np.where(keep, grp, 0).reshape(k, n)


def _dense(sw: sp.SparseWeight) -> np.ndarray:
    return decode([sw.arrays[c] for c in sw.encoding.COMPONENTS], sw.encoding, *sw.shape)


# ------------------------------------------------------------------------------ formats


def test_2_4_pattern_keeps_two_largest_per_group(rng):
    w = rng.standard_normal((32, 24)).astype(np.float32)
    values, pos = prune_2_4(w)
    assert values.shape == pos.shape == (16, 24)
    sw = encode_nm(w)
    # 2-bit positions packed four per byte along N: 24 columns -> 6 bytes per row
    assert sw.arrays["indices"].shape == (16, 6) and sw.arrays["indices"].dtype == np.uint8
    np.testing.assert_array_equal(unpack_fields(sw.arrays["indices"], 2, 24), pos)
    first = pos[0, :4].astype(np.uint8)  # hand-packed first byte: little-endian 2-bit fields
    assert sw.arrays["indices"][0, 0] == first[0] | first[1] << 2 | first[2] << 4 | first[3] << 6
    dense = _dense(sw)
    np.testing.assert_array_equal(dense, _prune24_dense(w))
    groups = dense.reshape(8, 4, 24)
    assert np.all(np.count_nonzero(groups, axis=1) == 2)
    assert np.all(np.diff(pos.reshape(8, 2, 24), axis=1) > 0)  # ascending positions


def test_nm_generalises_to_other_patterns(rng):
    w = rng.standard_normal((16, 5)).astype(np.float32)
    sw = encode_nm(w, 1, 8)  # 1:8 -> 3-bit positions rounded up to 4-bit fields
    assert sw.encoding.index_bits == 4 and sw.arrays["indices"].shape == (2, 3)
    dense = _dense(sw)
    want = np.zeros_like(w)
    grp = np.abs(w).reshape(2, 8, 5).argmax(axis=1)
    for gi in range(2):
        for j in range(5):
            want[8 * gi + grp[gi, j], j] = w[8 * gi + grp[gi, j], j]
    np.testing.assert_array_equal(dense, want)


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.5, 0.9, 1.0])
def test_unstructured_hits_fraction_in_bitmask_and_csr(rng, fraction):
    w = rng.standard_normal((40, 13)).astype(np.float32)
    values, mask = prune_bitmask(w, fraction)
    assert mask.shape == (40, 2) and mask.dtype == np.uint8
    assert values.size == w.size - round(fraction * w.size)
    want = np.where(magnitude_mask(w, fraction), w, 0)
    np.testing.assert_array_equal(decode_bitmask(mask, values, 13), want)
    if 0 < values.size < w.size:
        assert np.abs(values).min() >= np.abs(w[want == 0]).max()
    csr = encode_csr(w, magnitude_mask(w, fraction))
    assert csr.arrays["col_idx"].dtype == np.uint8  # 13 columns fit 8-bit ids
    np.testing.assert_array_equal(_dense(csr), want)
    # scipy-free check of the CSR arrays against their definition
    rp = csr.arrays["row_ptr"]
    assert rp[0] == 0 and rp[-1] == values.size
    np.testing.assert_array_equal(np.diff(rp), np.count_nonzero(want, axis=1))


def test_auto_format_picks_the_fewest_bytes(rng):
    w = rng.standard_normal((256, 512)).astype(np.float32)
    picks = {}
    for fraction in (0.01, 0.5, 0.99):
        keep = magnitude_mask(w, fraction)
        sw = choose_unstructured(w, keep)
        nnz = int(keep.sum())
        sizes = {"dense": w.nbytes, "bitmask": 256 * 64 + 4 * nnz,
                 "csr": 257 * 4 + nnz * (2 + 4)}  # hand-computed: uint16 ids for N=512
        best = min(sizes, key=sizes.__getitem__)
        picks[fraction] = "dense" if sw is None else sw.encoding.name.split(".")[-1]
        assert picks[fraction] == best
        if sw is not None:
            assert sw.nbytes() == sizes[best]
    assert picks == {0.01: "dense", 0.5: "bitmask", 0.99: "csr"}


# ------------------------------------------------------------------------------ kernels


@pytest.mark.parametrize("lead", [(5,), (2, 3), ()])
def test_sparse_matmul_equals_dense_matmul_with_pruned_weight(rng, lead):
    w = rng.standard_normal((16, 12)).astype(np.float32)
    x = rng.standard_normal((*lead, 16)).astype(np.float32)
    out = TensorSpec((*lead, 12), "float32")
    wspec = [TensorSpec((16, 12), "float32")]
    keep = magnitude_mask(w, 0.7)
    for sw, dense in ((encode_nm(w), _prune24_dense(w)),
                      (encode_bitmask(w, keep), np.where(keep, w, 0)),
                      (encode_csr(w, keep), np.where(keep, w, 0))):
        comps = [sw.arrays[c] for c in sw.encoding.COMPONENTS]
        wd = run_kernel(sp.AssembleOp, {"encoding": sw.encoding}, comps, wspec)[0]
        np.testing.assert_array_equal(wd, dense)
        got = run_kernel(sp.MatMulOp, {}, [x, wd], [out])[0]
        want = (x.astype(np.float64) @ dense.astype(np.float64)).astype(np.float32)
        np.testing.assert_array_equal(got, want)


def test_kernels_reject_bad_metadata():
    enc = sp.NMEncoding(2, 4)
    vals = np.ones((4, 3), np.float32)
    spec = [TensorSpec((8, 3), "float32")]
    same = pack_fields(np.zeros((4, 3), np.int64), 2)
    with pytest.raises(KernelError, match="repeats or unorders"):
        run_kernel(sp.AssembleOp, {"encoding": enc}, [vals, same], spec)
    mask = np.packbits(np.ones((8, 3), bool), axis=1, bitorder="little")
    with pytest.raises(KernelError, match="keeps 24"):
        run_kernel(sp.AssembleOp, {"encoding": sp.BitmaskEncoding(5)},
                   [mask, np.ones(5, np.float32)], spec)
    csr = sp.CSREncoding(2, "uint8")
    with pytest.raises(KernelError, match="out of range"):
        run_kernel(sp.AssembleOp, {"encoding": csr},
                   [np.array([0, 2] + [2] * 7, np.int32), np.array([0, 9], np.uint8),
                    np.ones(2, np.float32)], spec)
    with pytest.raises(KernelError, match="ascend"):
        run_kernel(sp.AssembleOp, {"encoding": csr},
                   [np.array([0, 2] + [2] * 7, np.int32), np.array([1, 1], np.uint8),
                    np.ones(2, np.float32)], spec)
    with pytest.raises(KernelError, match="row pointers"):
        run_kernel(sp.AssembleOp, {"encoding": csr},
                   [np.array([0, 3] + [2] * 7, np.int32), np.array([0, 1], np.uint8),
                    np.ones(2, np.float32)], spec)


# ------------------------------------------------------------------------------ types and verifier


@pytest.mark.parametrize("enc", [sp.NMEncoding(2, 4), sp.BitmaskEncoding(7),
                                 sp.CSREncoding(7, "uint16")])
def test_encoded_types_print_and_parse_back(enc):
    from xdsl.parser import Parser as P

    t = sp.sparse_type(8, 4, "float32", enc)
    text = str(t)
    assert text.startswith("tensor<8x4xf32, #sparse.") and text.endswith(">>")
    assert P(_context(), text).parse_type() == t
    assert sp.encoding_of(t) == enc and sp.encoding_of(sp.sparse_type(8, 4, "float32", enc)) == enc


def test_encodings_and_assemble_verify():
    with pytest.raises(VerifyException, match="1 <= n < m"):
        sp.NMEncoding(4, 4)
    with pytest.raises(VerifyException, match="not a multiple"):
        sp.sparse_type(6, 4, "float32", sp.NMEncoding(2, 4))
    with pytest.raises(VerifyException, match="exceed"):
        sp.sparse_type(2, 2, "float32", sp.BitmaskEncoding(5))
    with pytest.raises(VerifyException, match="do not fit"):
        sp.sparse_type(2, 300, "float32", sp.CSREncoding(1, "uint8"))
    b = GraphBuilder(fold=False)
    b.add_input("x", TensorSpec((2, 8), "float32"))
    v = b.const(np.zeros((4, 3), np.float32))
    i = b.const(np.zeros((4, 1), np.uint8))
    ok = sp.AssembleOp.make([v, i], 8, 3, "float32", sp.NMEncoding(2, 4))
    ok.verify()
    bad = sp.AssembleOp.make([v, v], 8, 3, "float32", sp.NMEncoding(2, 4))
    with pytest.raises(VerifyException, match="component 'indices'"):
        bad.verify()
    short = sp.AssembleOp.make([v], 8, 3, "float32", sp.NMEncoding(2, 4))
    with pytest.raises(VerifyException, match="takes 2 components"):
        short.verify()
    assert sp.MatMulOp.infer([TensorSpec((None, 3, 8), "float32"),
                              TensorSpec((8, 5), "float32")], {}) == [
        TensorSpec((None, 3, 5), "float32")]
    with pytest.raises(VerifyException, match="K=12"):
        sp.MatMulOp.infer([TensorSpec((2, 12), "float32"), TensorSpec((8, 5), "float32")], {})


# ------------------------------------------------------------------------------ passes


def test_sparsify_2_4_pass_bytes_verify_roundtrip_and_bundle(rng, tmp_path):
    from portc.compiler.program import parse_program
    from portc.compiler.weights import WeightStore

    program = _mlp(rng, dims=(64, 128, 30, 10))  # 30 rows: last matmul stays dense (K % 4)
    pruned = run_passes(program.clone(), [Sparsify24Pass()])
    pruned.verify()
    ops = [op for op in pruned.main.walk() if isinstance(op, (g.MatMulOp, sp.MatMulOp))]
    assert [type(o) for o in ops] == [sp.MatMulOp, sp.MatMulOp, g.MatMulOp]
    assert all(sp.encoding_of(o.weight.type) == sp.NMEncoding(2, 4) for o in ops[:2])
    # the dense weights of the pruned matmuls are gone from the IR; components sit under one name
    names = {op.resource.data for op in pruned.main.walk() if isinstance(op, g.ConstantOp)}
    assert "w0" not in names and "w1" not in names and "w2" in names
    assert {"w0.sp24/values", "w0.sp24/indices", "w1.sp24/values"} <= names
    x = {"x": rng.standard_normal((8, 64)).astype(np.float32)}
    rep = sparsity_report(program, pruned, x)
    # hand-computed: half the f32 values + 2-bit positions packed 4 per byte along N
    after = 32 * 128 * 4 + 32 * 32 + 64 * 30 * 4 + 64 * 8
    assert rep["matmul_weight_bytes_before"] == (64 * 128 + 128 * 30 + 30 * 10) * 4
    assert rep["matmul_weight_bytes_after"] == after + 30 * 10 * 4
    assert rep["formats"] == {"nm<2:4>": {"weights": 2, "bytes": after,
                                          "dense_bytes": (64 * 128 + 128 * 30) * 4}}
    assert rep["macs_saved"] == 8 * (64 * 128 + 128 * 30) // 2

    text = pruned.to_text()
    assert "#sparse.nm<2:4>" in text and "sparse.assemble" in text
    module = Parser(_context(), text).parse_module()
    module.verify()
    assert str(module) + "\n" == text
    # the safetensors store holds the components; the reloaded program runs identically
    used = {op.resource.data for op in pruned.main.walk() if isinstance(op, g.ConstantOp)}
    pruned.weights.subset(used).save(tmp_path / "w.safetensors")
    again = parse_program(text, WeightStore.load(tmp_path / "w.safetensors"))
    again.verify()
    np.testing.assert_array_equal(run_program(again, x)["y"], run_program(pruned, x)["y"])


@pytest.mark.parametrize("fmt", ["bitmask", "csr"])
def test_sparsify_pass_fraction_and_format_options_roundtrip(rng, fmt):
    program = _mlp(rng)
    (p,) = parse_pipeline(["sparsify"])
    assert isinstance(p, SparsifyPass) and p.fraction == 0.5 and p.format == "auto"
    (spec,) = parse_pipeline_spec(f'sparsify{{fraction=0.75 format="{fmt}"}}')
    pass_ = SparsifyPass.from_pass_spec(spec)
    assert pass_ == SparsifyPass(fraction=0.75, format=fmt)
    pruned = run_passes(program.clone(), [pass_])
    pruned.verify()
    asm = [op for op in pruned.main.walk() if isinstance(op, sp.AssembleOp)]
    assert len(asm) == 3
    for op, (k, n) in zip(asm, [(64, 128), (128, 32), (32, 10)], strict=True):
        assert op.encoding.name == f"sparse.{fmt}"
        assert op.encoding.nnz(k, n) == k * n - round(0.75 * k * n)
    x = rng.standard_normal((8, 64)).astype(np.float32)
    want = run_program(
        _dense_pruned(program, lambda w: np.where(magnitude_mask(w, 0.75), w, 0)), {"x": x}
    )
    np.testing.assert_array_equal(run_program(pruned, {"x": x})["y"], want["y"])
    rep = sparsity_report(program, pruned, {"x": x})
    dense = (64 * 128 + 128 * 32 + 32 * 10) * 4
    assert rep["matmul_weight_bytes_after"] < 0.45 * dense
    assert rep["macs_after"] == 8 * sum(k * n - round(0.75 * k * n)
                                        for k, n in [(64, 128), (128, 32), (32, 10)])
    text = pruned.to_text()
    module = Parser(_context(), text).parse_module()
    module.verify()
    assert str(module) + "\n" == text


def test_sparsify_bad_options_are_refused(rng):
    with pytest.raises(IRError, match="format"):
        run_passes(_mlp(rng), [SparsifyPass(format="coo")])
    with pytest.raises(IRError, match="fraction"):
        run_passes(_mlp(rng), [SparsifyPass(fraction=1.5)])


def test_verify_catches_format_mismatch(rng):
    program = run_passes(_mlp(rng), [Sparsify24Pass()])
    op = next(o for o in program.main.walk() if isinstance(o, sp.AssembleOp))
    op.operands[1] = op.operands[0]  # float values where packed uint8 positions belong
    with pytest.raises(IRError, match="component 'indices'"):
        program.verify()


def test_bad_metadata_fails_at_run_time_naming_the_op(rng):
    program = run_passes(_mlp(rng), [Sparsify24Pass()])
    op = next(o for o in program.main.walk() if isinstance(o, sp.AssembleOp))
    name = op.operands[1].owner.resource.data
    program.weights.put(name, np.zeros_like(program.weights[name]))  # every position 0
    with pytest.raises(ExecutionError, match="sparse.assemble .*repeats"):
        run_program(program, {"x": np.ones((8, 64), np.float32)})


def test_mlp_end_to_end_after_sparsify_2_4(rng):
    program = _mlp(rng)
    x = {"x": rng.standard_normal((8, 64)).astype(np.float32)}
    pruned = run_passes(program.clone(), parse_pipeline("sparsify-2-4"))
    got = run_program(pruned, x)["y"]
    want = run_program(_dense_pruned(program, _prune24_dense), x)["y"]
    np.testing.assert_array_equal(got, want)
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
    assert sum(isinstance(o, sp.MatMulOp) for o in pruned.main.walk()) == 2
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
