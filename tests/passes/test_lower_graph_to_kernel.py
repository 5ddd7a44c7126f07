"""Graph-to-kernel lowering: structure (fusion, views, planning) and numbers against the graph
reference interpreter and numpy on fresh random inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from portc.compiler import api
from portc.compiler.builder import GraphBuilder
from portc.compiler.kernel_targets import buffer_manifest, lower_for_target
from portc.compiler.program import Program, make_context
from portc.dialects import graph as g
from portc.dialects import kernel as k
from portc.dialects.graph import TensorSpec
from portc.passes.lower_graph_to_kernel import lower_to_kernels
from portc.passes.plan_buffers import live_ranges
from portc.runtimes.reference.interpreter import run_program
from portc.runtimes.reference.kernel_ir import KernelFault, run_kernel_module


def _generics(p: Program) -> list[k.GenericOp]:
    return [op for op in k.kernels_of(p.module) if isinstance(op, k.GenericOp)]


def _check(prog: Program, inputs: dict[str, np.ndarray], rtol: float = 1e-6,
           atol: float = 1e-6) -> Program:
    want = run_program(prog, inputs)
    kp = lower_to_kernels(prog)
    kp.module.verify()
    got = run_kernel_module(kp.module, kp.weights, inputs)
    for name, w in want.items():
        assert got[name].dtype == w.dtype and got[name].shape == w.shape, name
        np.testing.assert_allclose(got[name].astype(np.float64), w.astype(np.float64),
                                   rtol=rtol, atol=atol)
    return kp


def test_elementwise_chain_fuses_into_one_kernel(rng: np.random.Generator) -> None:
    b = GraphBuilder()
    x = b.add_input("x", TensorSpec((8, 16), "float32"))
    bias = b.const(rng.standard_normal(16).astype(np.float32))
    y = b.unary("tanh", b.binary("mul", b.binary("add", x, bias), b.scalar(0.5, x)))
    prog = b.finish([("y", b.unary("exp", y))])
    kp = _check(prog, {"x": rng.standard_normal((8, 16)).astype(np.float32)})
    gens = _generics(kp)
    assert len(gens) == 1
    assert [o.name for o in gens[0].body.block.ops].count("kernel.unary") == 2


def test_transpose_and_slice_become_strides_not_copies(rng: np.random.Generator) -> None:
    b = GraphBuilder()
    x = b.add_input("x", TensorSpec((4, 6, 5), "float32"))
    t = b.transpose(x, [2, 0, 1])
    s = b.slice(t, [1, 0, 1], [2, 1, 2], [2, 4, 3])
    prog = b.finish([("y", b.unary("neg", s))])
    kp = _check(prog, {"x": rng.standard_normal((4, 6, 5)).astype(np.float32)})
    (gen,) = _generics(kp)
    # (5,4,6) view of x strides (1,30,5) sliced by steps (2,1,2) from (1,0,1); the last two
    # dims walk contiguously (30 == 10 * 3) and merge
    assert gen.extents == (2, 12) and gen.input_strides(0) == (2, 10)
    assert gen.input_offset(0) == 6


def test_matmul_is_a_reduction_over_k_with_the_bias_fused_after(rng: np.random.Generator) -> None:
    b = GraphBuilder()
    x = b.add_input("x", TensorSpec((3, 5, 7), "float32"))
    w = b.const(rng.standard_normal((7, 4)).astype(np.float32))
    bias = b.const(rng.standard_normal(4).astype(np.float32))
    prog = b.finish([("y", b.unary("relu", b.binary("add", b.matmul(x, w), bias)))])
    kp = _check(prog, {"x": rng.standard_normal((3, 5, 7)).astype(np.float32)})
    mm, epi = _generics(kp)
    assert mm.combine == "sum" and mm.extents[mm.parallel_count:] == (7,)
    assert epi.combine == "none"


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad_modes_match_numpy(mode: str, rng: np.random.Generator) -> None:
    b = GraphBuilder()
    x = b.add_input("x", TensorSpec((3, 5), "float32"))
    (y,) = b.op(g.PadOp, [x], {"pads": (1, 2, 2, -1), "mode": mode, "value": 1.5})
    prog = b.finish([("y", y)])
    xv = rng.standard_normal((3, 5)).astype(np.float32)
    kp = lower_to_kernels(prog)
    got = run_kernel_module(kp.module, kp.weights, {"x": xv})["y"]
    cropped = xv[:, :4]
    kw = {"constant_values": 1.5} if mode == "constant" else {}
    want = np.pad(cropped, [(1, 2), (2, 0)], mode=mode if mode != "wrap" else "wrap", **kw)
    np.testing.assert_array_equal(got, want)


def test_gather_scatter_sort_cumsum_match_the_reference(rng: np.random.Generator) -> None:
    b = GraphBuilder()
    x = b.add_input("x", TensorSpec((4, 6), "float32"))
    idx = b.add_input("idx", TensorSpec((3,), "int64"))
    (gat,) = b.op(g.GatherOp, [x, idx], {"axis": 1})
    upd = b.add_input("upd", TensorSpec((4, 3), "float32"))
    sidx = b.add_input("sidx", TensorSpec((4, 3), "int64"))
    (sc,) = b.op(g.ScatterElementsOp, [x, sidx, upd], {"axis": 1, "reduction": "add"})
    vals, order = b.op(g.TopKOp, [x], {"axis": 0, "k": 2, "largest": 1})
    (cs,) = b.op(g.CumSumOp, [x], {"axis": 1, "exclusive": 1, "reverse": 1})
    (am,) = b.op(g.ArgReduceOp, [x], {"kind": "max", "axis": 0, "keepdims": 0,
                                      "select_last_index": 0})
    prog = b.finish([("gat", gat), ("sc", sc), ("cs", cs), ("vals", vals), ("order", order),
                     ("am", am)])
    _check(prog, {"x": rng.standard_normal((4, 6)).astype(np.float32),
                  "idx": np.array([5, -1, 0]), "upd": rng.standard_normal((4, 3)).astype(np.float32),
                  "sidx": rng.integers(0, 6, (4, 3))})


def test_out_of_range_gather_index_names_the_kernel(rng: np.random.Generator) -> None:
    b = GraphBuilder()
    x = b.add_input("x", TensorSpec((4, 6), "float32"))
    idx = b.add_input("idx", TensorSpec((2,), "int64"))
    prog = b.finish([("y", b.op(g.GatherOp, [x, idx], {"axis": 1})[0])])
    kp = lower_to_kernels(prog)
    with pytest.raises(KernelFault, match=r"k\d+_gather.*index 6 out of range"):
        run_kernel_module(kp.module, kp.weights, {"x": np.ones((4, 6), np.float32),
                                                   "idx": np.array([1, 6])})


def test_kernel_module_round_trips_through_mlir_text(examples_dir: Path) -> None:
    m = api.import_model(examples_dir / "tiny_transformer.onnx")
    kp = lower_for_target(m.program)
    text = str(kp.module)
    from xdsl.parser import Parser

    again = Parser(make_context(), text).parse_module()
    again.verify()
    assert str(again) == text


def test_buffer_plan_never_overlaps_live_temporaries(examples_dir: Path) -> None:
    m = api.import_model(examples_dir / "small_cnn.onnx")
    kp = lower_for_target(m.program)
    man = buffer_manifest(kp.module)
    temps = {b["name"]: b for b in man["buffers"] if b["kind"] == "temp"}
    ranges = live_ranges(kp.module)
    for a in temps.values():
        for c in temps.values():
            if a["name"] >= c["name"]:
                continue
            ra, rc = ranges[a["name"]], ranges[c["name"]]
            if ra[1] < rc[0] or rc[1] < ra[0]:
                continue
            assert a["offset"] + a["nbytes"] <= c["offset"] or \
                c["offset"] + c["nbytes"] <= a["offset"], (a, c)
    assert man["arena_bytes"] < man["temp_bytes_unplanned"]


@pytest.mark.parametrize("model", ["mlp.onnx", "small_cnn.onnx", "tiny_transformer.pt2"])
def test_examples_through_kernel_ir_match_the_reference(model: str, examples_dir: Path) -> None:
    rep = api.verify(examples_dir / model, "reference", runtime="kernels", seed=3)
    assert rep.ok, rep.table()
