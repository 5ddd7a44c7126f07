"""``decompose-for-targets``: after it, a changed model holds only core ``graph`` ops over core
dtypes, and the reference interpreter gives bit-identical outputs before and after, for int8,
w4, w2, fp8, 2:4, bitmask, CSR and MoE models. The fp8 activation cast it emulates is checked
against ml_dtypes' own conversion on the values where rounding is delicate."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import ml_dtypes
import numpy as np
import pytest

from portc.compiler.api import random_inputs
from portc.compiler.builder import GraphBuilder
from portc.compiler.pipeline import parse_pipeline, run_passes
from portc.compiler.program import Program
from portc.dialects import graph as g
from portc.dialects import moe
from portc.dialects import sparse as sp
from portc.dialects.graph import TensorSpec
from portc.passes.calibration import calibrate
from portc.passes.decompose_for_targets import (
    CORE_DTYPES,
    DecompositionError,
)
from portc.passes.moe_routing import MoERoutingPass
from portc.passes.quantize import (
    QuantizeFP8Pass,
    QuantizeInt8Pass,
    QuantizeW2Pass,
    QuantizeW4Pass,
    quantize,
)
from portc.passes.sparsify import Sparsify24Pass, SparsifyPass
from portc.runtimes.reference.interpreter import run_program


def _mlp(rng: np.random.Generator, k: int = 64, h: int = 128, n: int = 16) -> Program:
    b = GraphBuilder()
    x = b.add_input("x", TensorSpec((8, k), "float32"))
    w1 = b.const((rng.standard_normal((k, h)) / np.sqrt(k)).astype(np.float32), hint="w1")
    b1 = b.const(rng.standard_normal(h).astype(np.float32) * 0.1, hint="b1")
    w2 = b.const((rng.standard_normal((h, n)) / np.sqrt(h)).astype(np.float32), hint="w2")
    y = b.unary("relu", b.binary("add", b.matmul(x, w1), b1))
    return b.finish([("y", b.matmul(y, w2))])


def _batches(p: Program) -> Iterator[dict[str, np.ndarray]]:
    return (random_inputs(p, 100 + i) for i in range(4))


def _copy(p: Program) -> Program:
    return Program(p.module.clone(), p.weights.subset(set(p.weights)))


def _sparsified(pass_: object) -> Callable[[Program], Program]:
    return lambda p: run_passes(_copy(p), [pass_])  # type: ignore[list-item]


def _moe_program(rng: np.random.Generator) -> Program:
    t, hdim, e, f = 9, 8, 4, 16
    b = GraphBuilder()
    x = b.add_input("x", TensorSpec((t, hdim), "float32"))
    ws = [b.const(rng.standard_normal(s).astype(np.float32), hint=n) for s, n in
          zip([(hdim, e), (e, hdim, f), (e, hdim, f), (e, f, hdim)],
              ["router", "w_gate", "w_up", "w_down"], strict=True)]
    return b.finish([("y", b.one(moe.MoEOp, [x, *ws], moe.moe_props(2, True), hint="moe"))])


CHANGES: dict[str, Callable[[Program], Program]] = {
    "int8": lambda p: quantize(p, QuantizeInt8Pass(), calibrate(p, _batches(p))),
    "w4": lambda p: quantize(p, QuantizeW4Pass(group_size=32)),
    "w2": lambda p: quantize(p, QuantizeW2Pass(group_size=32)),
    "fp8": lambda p: quantize(p, QuantizeFP8Pass(), calibrate(p, _batches(p))),
    "2:4": _sparsified(Sparsify24Pass()),
    "bitmask": _sparsified(SparsifyPass(fraction=0.6, format="bitmask")),
    "csr": _sparsified(SparsifyPass(fraction=0.97, format="csr")),
}


def _assert_core(p: Program) -> None:
    for op in p.main.body.block.ops:
        assert op.name.startswith("graph.") or op.name == "func.return", op.name
        for v in (*op.operands, *op.results):
            assert g.spec_of(v).dtype in CORE_DTYPES, (op.name, g.spec_of(v))
            assert sp.encoding_of(v.type) is None, op.name


def _decompose(p: Program) -> Program:
    return run_passes(_copy(p), parse_pipeline("decompose-for-targets"))


@pytest.mark.parametrize("change", list(CHANGES))
def test_changed_model_becomes_core_ops_with_identical_outputs(rng, change):
    changed = CHANGES[change](_mlp(rng))
    noncore = {op.name for op in changed.main.walk()
               if not op.name.startswith(("graph.", "func."))} | {
        g.spec_of(r).dtype for op in changed.main.walk() for r in op.results
        if g.spec_of(r).dtype not in CORE_DTYPES}
    if change != "int8":  # int8 is already core: the pass must leave it as it is
        assert noncore, "the change should have produced something to decompose"
    out = _decompose(changed)
    _assert_core(out)
    x = random_inputs(changed, seed=9)
    x["x"][0, :4] = [1e4, -1e4, 0.0, -0.0]  # saturating / signed-zero activations for fp8
    want, got = run_program(changed, x)["y"], run_program(out, x)["y"]
    np.testing.assert_array_equal(got, want)
    assert got.dtype == want.dtype
    if change == "int8":
        assert out.to_text() == changed.to_text()


def test_moe_after_routing_and_moe_op_itself_decompose(rng):
    program = _moe_program(rng)
    routed = run_passes(_copy(program), [MoERoutingPass()])
    x = {"x": rng.standard_normal((9, 8)).astype(np.float32)}
    for source in (routed, program):  # the pass routes a moe.moe it still finds
        out = _decompose(source)
        _assert_core(out)
        np.testing.assert_array_equal(run_program(out, x)["y"], run_program(routed, x)["y"])


def test_decomposed_constants_are_core_and_small(rng):
    """int4 unpacks to int8 (same values), fp8 converts exactly to float16, compressed weights
    become their dense matrix."""
    w4 = CHANGES["w4"](_mlp(rng))
    q = next(a for a in w4.weights._arrays.values() if a.dtype == ml_dtypes.int4)
    out = _decompose(w4)
    int8 = [out.weights[o.resource.data] for o in out.main.walk()
            if isinstance(o, g.ConstantOp) and g.spec_of(o.result).dtype == "int8"]
    assert any(a.shape == q.shape and np.array_equal(a, q.astype(np.int8)) for a in int8)
    fp8 = CHANGES["fp8"](_mlp(rng))
    f8 = [a for a in fp8.weights._arrays.values() if a.dtype == ml_dtypes.float8_e4m3fn]
    f16 = [out.weights[o.resource.data] for out in [_decompose(fp8)]
           for o in out.main.walk() if isinstance(o, g.ConstantOp)
           and g.spec_of(o.result).dtype == "float16"]
    assert f8 and any(np.array_equal(a.astype(np.float32), b.astype(np.float32))
                      for a in f8 for b in f16)


def _cast_program(to: str, saturate: bool, n: int) -> Program:
    b = GraphBuilder(fold=False)
    x = b.add_input("x", TensorSpec((n,), "float32"))
    return b.finish([("y", b.cast(b.cast(x, to, saturate=saturate), "float32"))])


@pytest.mark.parametrize("to", ["float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz",
                                "float8_e5m2fnuz"])
@pytest.mark.parametrize("saturate", [True, False])
def test_fp8_cast_emulation_matches_ml_dtypes(rng, to, saturate):
    fmt = getattr(ml_dtypes, to)
    grid = np.array([float(v) for v in np.arange(256, dtype=np.uint8).view(fmt)
                     if np.isfinite(float(v))], np.float64)
    grid = np.unique(grid)
    mids = (grid[1:] + grid[:-1]) / 2  # exact ties: round-half-even decides
    fmax = float(ml_dtypes.finfo(fmt).max)
    special = [np.nan, np.inf, -np.inf, fmax * 1.03, fmax * 1.1, -fmax * 1.2, 1e-30, -1e-30,
               float(ml_dtypes.finfo(fmt).smallest_subnormal) / 2, 0.0, -0.0]
    x = np.concatenate([grid, mids, np.nextafter(mids.astype(np.float32), np.float32(np.inf)),
                        np.nextafter(mids.astype(np.float32), np.float32(-np.inf)),
                        rng.standard_normal(2000) * 30, special]).astype(np.float32)
    p = _cast_program(to, saturate, x.size)
    out = _decompose(p)
    _assert_core(out)
    got = run_program(out, {"x": x})["y"]
    x64 = x.astype(np.float64)
    if saturate:
        x64 = np.clip(x64, -fmax, fmax)
    with np.errstate(all="ignore"):
        want = x64.astype(fmt).astype(np.float32)  # ml_dtypes: the independent oracle
    np.testing.assert_array_equal(got, want)
    num = ~np.isnan(want)  # signed zeros keep their sign (a NaN's sign bit is no value)
    assert np.array_equal(np.signbit(got[num]), np.signbit(want[num]))
    np.testing.assert_array_equal(got, run_program(p, {"x": x})["y"])


@pytest.mark.parametrize("src", ["float32", "float16"])
def test_fp4_cast_emulation_matches_ml_dtypes(rng, src):
    """e2m1: ties between its 15 values round half to even, everything saturates at +-6
    (infinities included) and NaN becomes -0, as ml_dtypes converts (it gives +0 for a NaN
    with the sign bit set, which core ops cannot tell from another NaN: not tested)."""
    grid = np.unique(np.arange(16, dtype=np.uint8).view(ml_dtypes.float4_e2m1fn)
                     .astype(np.float64))
    mids = (grid[1:] + grid[:-1]) / 2
    special = [np.nan, np.inf, -np.inf, 6.5, 7.0, -9.0, 1e4, 0.25, -0.25, 0.0, -0.0, 1e-7]
    x = np.concatenate([grid, mids, np.nextafter(mids, np.inf), np.nextafter(mids, -np.inf),
                        rng.standard_normal(500) * 4, special]).astype(src)
    b = GraphBuilder(fold=False)
    xin = b.add_input("x", TensorSpec((x.size,), src))
    p = b.finish([("y", b.cast(b.cast(xin, "float4_e2m1fn"), "float32"))])
    out = _decompose(p)
    _assert_core(out)
    got = run_program(out, {"x": x})["y"]
    want = x.astype(np.float64).astype(ml_dtypes.float4_e2m1fn).astype(np.float32)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))  # -0 and +0 told apart
    np.testing.assert_array_equal(got, run_program(p, {"x": x})["y"])


def _runtime_sparse_program(sw: sp.SparseWeight) -> Program:
    """``y = x @ assemble(components)`` with the components as *inputs* (run-time values)."""
    k, n = sw.shape
    b = GraphBuilder(fold=False)
    x = b.add_input("x", TensorSpec((3, k), "float32"))
    comps = [b.add_input(c, TensorSpec(sw.arrays[c].shape,
                                       g.dtypes.from_numpy(sw.arrays[c].dtype).name))
             for c in sw.encoding.COMPONENTS]
    asm = sp.AssembleOp.make(comps, k, n, "float32", sw.encoding)
    b.block.add_op(asm)
    return b.finish([("y", b.one(sp.MatMulOp, [x, asm.result]))])


@pytest.mark.parametrize("fmt", ["2:4", "1:8", "bitmask", "csr", "bitmask-empty", "csr-empty"])
def test_run_time_compressed_weights_decode_in_core_ops(rng, fmt):
    from portc.passes.sparsify import encode_bitmask, encode_csr, encode_nm

    w = rng.standard_normal((16, 12)).astype(np.float32)
    frac = 1.0 if fmt.endswith("empty") else 0.7
    keep = np.abs(w) >= np.quantile(np.abs(w), frac) if frac < 1 else np.zeros(w.shape, bool)
    sw = {"2:4": lambda: encode_nm(w), "1:8": lambda: encode_nm(w, 1, 8),
          "bitmask": lambda: encode_bitmask(w, keep), "csr": lambda: encode_csr(w, keep),
          "bitmask-empty": lambda: encode_bitmask(w, keep),
          "csr-empty": lambda: encode_csr(w, keep)}[fmt]()
    prog = _runtime_sparse_program(sw)
    out = _decompose(prog)
    _assert_core(out)
    # decoded at run time: no dense [K, N] constant was made up
    assert not any(isinstance(o, g.ConstantOp) and g.spec_of(o.result).shape == (16, 12)
                   for o in out.main.walk())
    feeds = {"x": rng.standard_normal((3, 16)).astype(np.float32), **sw.arrays}
    want = run_program(prog, feeds)["y"]
    np.testing.assert_array_equal(run_program(out, feeds)["y"], want)
    # and both equal numpy on the pruned dense matrix the encoder stands for
    dense = {"2:4": None, "1:8": None}.get(fmt, np.where(keep, w, 0))
    if dense is not None:
        ref = (feeds["x"].astype(np.float64) @ dense.astype(np.float64)).astype(np.float32)
        np.testing.assert_array_equal(want, ref)


@pytest.mark.parametrize("to", ["int4", "uint4", "int2", "uint2"])
@pytest.mark.parametrize("src", ["float32", "int32"])
def test_narrow_int_cast_wraps_like_the_reference(rng, to, src):
    x = np.concatenate([np.arange(-40, 40), rng.standard_normal(300) * 50,
                        [np.nan, np.inf, -np.inf, 7.9, -8.9, 1e10]])
    if src == "int32":
        x = np.clip(np.nan_to_num(x, posinf=9, neginf=-9), -2 ** 31, 2 ** 31 - 1)
    x = x.astype(src)
    b = GraphBuilder(fold=False)
    xin = b.add_input("x", TensorSpec((x.size,), src))
    p = b.finish([("y", b.cast(b.cast(xin, to), "int32"))])
    out = _decompose(p)
    _assert_core(out)
    got = run_program(out, {"x": x})["y"]
    bits = {"int4": 4, "uint4": 4, "int2": 2, "uint2": 2}[to]
    with np.errstate(invalid="ignore"):  # independent: truncate, then two's-complement wrap
        t = np.trunc(np.nan_to_num(x.astype(np.float64), nan=0, posinf=0, neginf=0))
    v = np.mod(t.astype(np.int64), 2 ** bits)
    if not to.startswith("u"):
        v = np.where(v >= 2 ** (bits - 1), v - 2 ** bits, v)
    finite = np.isfinite(x.astype(np.float64)) & (np.abs(x.astype(np.float64)) < 2 ** 62)
    np.testing.assert_array_equal(got[finite], v[finite].astype(np.int32))
    np.testing.assert_array_equal(got, run_program(p, {"x": x})["y"])


def test_narrow_inputs_and_outputs_travel_in_storage_dtypes(rng):
    """An int4 input and an fp8 output become int8 / float values in the signature; reshape
    and transpose carry them through unchanged, the kernel-IR runtime converts exactly at the
    boundary, and the results equal the reference of the original program bit for bit."""
    from portc.compiler.artifact import Artifact
    from portc.compiler.target_reference import PROGRAM_FILE, KernelIRExecutable

    b = GraphBuilder(fold=False)
    q = b.add_input("q", TensorSpec((2, 6), "int4"))
    x = b.add_input("x", TensorSpec((3, 4), "float32"))
    qt = b.one(g.TransposeOp, [b.one(g.ReshapeOp, [q], result=TensorSpec((3, 4), "int4"))],
               {"perm": (1, 0)})
    y = b.binary("mul", b.cast(b.one(g.TransposeOp, [qt], {"perm": (1, 0)}), "float32"), x)
    f8 = b.cast(y, "float8_e4m3fnuz", saturate=True)
    p = b.finish([("y", f8), ("qt", qt)])
    out = _decompose(p)
    _assert_core(out)
    assert [s.dtype for s in out.input_specs().values()] == ["int8", "float32"]
    assert out.output_specs()["qt"].dtype == "int8"
    feeds = {"q": rng.integers(-8, 8, (2, 6)).astype(ml_dtypes.int4),
             "x": (rng.standard_normal((3, 4)) * 40).astype(np.float32)}
    want = run_program(p, feeds)
    art = Artifact("reference", {PROGRAM_FILE: p.to_text()}, p.weights, {})
    got, _ = KernelIRExecutable(art).run(feeds)
    for name in ("y", "qt"):
        assert got[name].dtype == want[name].dtype
        np.testing.assert_array_equal(got[name].astype(np.float32),
                                      want[name].astype(np.float32))


def test_unsupported_inputs_are_refused_naming_the_op():
    narrow = _cast_program("float8_e8m0fnu", True, 4)
    with pytest.raises(DecompositionError, match="'graph.cast'.*float32 to float8_e8m0fnu"):
        _decompose(narrow)
    b = GraphBuilder(fold=False)
    x = b.add_input("x", TensorSpec((4,), "float32"))
    q = b.cast(b.cast(x, "float8_e8m0fnu"), "float32")
    r = b.one(g.ReshapeOp, [b.cast(x, "float8_e4m3fn", saturate=True)],
              result=TensorSpec((2, 2), "float8_e4m3fn"))
    prog = b.finish([("y", q), ("z", b.cast(r, "float32"))])
    with pytest.raises(DecompositionError, match="graph.cast"):
        _decompose(prog)
    b = GraphBuilder(fold=False)
    x = b.add_input("x", TensorSpec((4,), "float32"))
    f8 = b.cast(x, "float8_e4m3fn", saturate=True)
    r = b.one(g.GatherOp, [f8, b.const(np.array([1, 0], np.int64), hint="idx")], {"axis": 0})
    with pytest.raises(DecompositionError, match="'graph.gather'.*reads the float8_e4m3fn"):
        _decompose(b.finish([("z", b.cast(r, "float32"))]))
