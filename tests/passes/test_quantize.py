"""Post-training quantization passes: exact integer math, accuracy, bytes, calibration, IR."""

from __future__ import annotations

from collections.abc import Iterator

import ml_dtypes
import numpy as np
import pytest

from portc.compiler.api import random_inputs
from portc.compiler.builder import GraphBuilder
from portc.compiler.errors import IRError
from portc.compiler.program import Program, make_context, parse_program
from portc.dialects import graph as g
from portc.dialects.graph import TensorSpec
from portc.passes.calibration import ACT_RANGE_ATTR, Calibration, calibrate
from portc.passes.quantize import (
    QUANTIZED_ATTR,
    QuantizeFP8Pass,
    QuantizeInt8Pass,
    QuantizeW2Pass,
    QuantizeW4Pass,
    quantization_report,
    quantize,
)
from portc.runtimes.reference.interpreter import run_program


def _mlp(rng: np.random.Generator, k: int = 256, h: int = 512, n: int = 16) -> Program:
    b = GraphBuilder()
    x = b.add_input("x", TensorSpec((8, k), "float32"))
    w1 = b.const((rng.standard_normal((k, h)) / np.sqrt(k)).astype(np.float32), hint="w1")
    b1 = b.const(rng.standard_normal(h).astype(np.float32) * 0.1, hint="b1")
    w2 = b.const((rng.standard_normal((h, n)) / np.sqrt(h)).astype(np.float32), hint="w2")
    y = b.unary("relu", b.binary("add", b.matmul(x, w1), b1))
    return b.finish([("logits", b.matmul(y, w2))])


def _linear(rng: np.random.Generator) -> tuple[Program, np.ndarray, np.ndarray]:
    b = GraphBuilder()
    x = b.add_input("x", TensorSpec((4, 64), "float32"))
    w = rng.standard_normal((64, 32)).astype(np.float32)
    bias = rng.standard_normal(32).astype(np.float32)
    y = b.binary("add", b.matmul(x, b.const(w, hint="w")), b.const(bias, hint="b"))
    return b.finish([("y", y)]), w, bias


def _cnn() -> Program:
    import torch

    from portc.compiler.api import import_model

    torch.manual_seed(0)

    class CNN(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = torch.nn.Conv2d(3, 16, 3, padding=1)
            self.c2 = torch.nn.Conv2d(16, 32, 3, stride=2, padding=1)
            self.fc = torch.nn.Linear(32 * 4 * 4, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.c1(x))
            x = torch.relu(self.c2(x))
            return self.fc(x.flatten(1))

    return import_model(CNN(), (torch.randn(2, 3, 8, 8),)).program


def _batches(program: Program, n: int = 4, seed: int = 100) -> Iterator[dict[str, np.ndarray]]:
    return (random_inputs(program, seed + i) for i in range(n))


@pytest.fixture(scope="module")
def cnn() -> Program:
    return _cnn()


# ------------------------------------------------------------------------------------ int8


def test_int8_linear_is_bit_exact_against_numpy(rng: np.random.Generator) -> None:
    prog, w, bias = _linear(rng)
    calib = calibrate(prog, _batches(prog))
    q = quantize(prog, QuantizeInt8Pass(), calib)
    x = random_inputs(prog, seed=7)["x"]
    accs: list[np.ndarray] = []

    def grab(op: object, res: list[np.ndarray]) -> None:
        if isinstance(op, g.MatMulOp):
            accs.append(res[0])

    got = run_program(q, {"x": x}, on_op=grab)["y"]

    # the same math, written independently in numpy
    s_x = np.float32(calib.absmax("graph.matmul#0") / 127)
    xs = (x.astype(np.float64) / np.float64(s_x)).astype(np.float32)
    xq = np.clip(np.round(xs), -127, 127).astype(np.int8)
    s_w = (np.abs(w).max(axis=0) / np.float32(127)).astype(np.float32)
    wq = np.clip(np.round(w.astype(np.float64) / s_w.astype(np.float64)), -127, 127)
    acc = xq.astype(np.int32) @ wq.astype(np.int8).astype(np.int32)
    scale = (np.float64(s_x) * s_w.astype(np.float64)).astype(np.float32)
    y = (acc.astype(np.float32).astype(np.float64) * scale).astype(np.float32)
    want = (y.astype(np.float64) + bias).astype(np.float32)

    assert len(accs) == 1 and accs[0].dtype == np.int32
    np.testing.assert_array_equal(accs[0], acc)
    np.testing.assert_array_equal(got, want)
    int8_consts = [a for n, a in q.weights.items() if a.dtype == np.int8]
    assert any(np.array_equal(a, wq.astype(np.int8)) for a in int8_consts)


def test_int8_mlp_accuracy_and_bytes(rng: np.random.Generator) -> None:
    prog = _mlp(rng)
    q = quantize(prog, QuantizeInt8Pass(), calibrate(prog, _batches(prog)))
    rep = quantization_report(prog, q, random_inputs(prog, seed=999))
    out = rep["outputs"]["logits"]
    assert out["cosine"] >= 0.99
    assert out["top1_agreement"] >= 0.75
    assert rep["quantized_ops"] == {"matmuls_int8": 2}
    assert 3.5 < rep["compression"] <= 4.0


def test_int8_cnn_accuracy(cnn: Program) -> None:
    for method in ("minmax", "percentile"):
        calib = calibrate(cnn, _batches(cnn, 8), method=method, percentile=99.99)
        q = quantize(cnn, QuantizeInt8Pass(), calib)
        rep = quantization_report(cnn, q, random_inputs(cnn, seed=555))
        assert rep["outputs"]["output0"]["cosine"] >= 0.99, (method, rep)
        assert rep["quantized_ops"] == {"convs_int8": 2, "matmuls_int8": 1}
        assert rep["compression"] > 3.3
        assert not any(isinstance(o, g.ConvOp) and o.bias is not None and QUANTIZED_ATTR in
                       o.attributes for o in q.module.walk())


def test_int8_without_calibration_is_refused(rng: np.random.Generator) -> None:
    prog = _mlp(rng)
    with pytest.raises(IRError, match="activation ranges"):
        quantize(prog, QuantizeInt8Pass())


def test_calibration_for_another_module_is_refused(rng: np.random.Generator) -> None:
    prog = _mlp(rng)
    with pytest.raises(IRError, match="do not name"):
        Calibration(ranges={"graph.matmul#7": (-1.0, 1.0)}).annotate(prog.module.clone())


# ------------------------------------------------------------------------------------ calibration


def test_percentile_range_is_tighter_than_minmax_with_outliers(rng: np.random.Generator) -> None:
    prog, _, _ = _linear(rng)

    def batches() -> Iterator[dict[str, np.ndarray]]:
        for i in range(4):
            x = np.random.default_rng(i).standard_normal((4, 64)).astype(np.float32)
            x[0, i] = 500.0  # one rare spike per batch
            yield {"x": x}

    mm = calibrate(prog, batches(), method="minmax")
    pc = calibrate(prog, batches(), method="percentile", percentile=99.0)
    assert mm.absmax("graph.matmul#0") == 500.0
    assert pc.absmax("graph.matmul#0") < 10.0
    assert pc.ranges["graph.matmul#0"][0] < 0 < pc.ranges["graph.matmul#0"][1]
    assert Calibration.from_json(pc.to_json()) == pc


# ------------------------------------------------------------------------------------ w4 / w2


def test_w4_mlp_accuracy_and_bytes(rng: np.random.Generator) -> None:
    prog = _mlp(rng)
    q = quantize(prog, QuantizeW4Pass(group_size=128))
    rep = quantization_report(prog, q, random_inputs(prog, seed=3))
    assert rep["outputs"]["logits"]["cosine"] >= 0.98
    assert rep["quantized_ops"] == {"matmuls_w4": 2}
    assert 7.0 < rep["compression"] <= 8.0
    assert any(a.dtype == ml_dtypes.int4 for _, a in q.weights.items())


@pytest.mark.parametrize("group", [32, 64, 128])
def test_w4_group_sizes_and_w2(rng: np.random.Generator, group: int) -> None:
    prog = _mlp(rng)
    x = random_inputs(prog, seed=4)
    c4 = quantization_report(prog, quantize(prog, QuantizeW4Pass(group_size=group)), x)
    q2 = quantize(prog, QuantizeW2Pass(group_size=group))
    c2 = quantization_report(prog, q2, x)
    assert c4["outputs"]["logits"]["cosine"] >= 0.98
    assert 0.5 < c2["outputs"]["logits"]["cosine"] < c4["outputs"]["logits"]["cosine"]
    assert c2["compression"] > c4["compression"]
    assert any(a.dtype == ml_dtypes.int2 for _, a in q2.weights.items())


def test_bad_group_size_is_refused(rng: np.random.Generator) -> None:
    with pytest.raises(IRError, match="group_size"):
        quantize(_mlp(rng), QuantizeW4Pass(group_size=48))


# ------------------------------------------------------------------------------------ fp8


def test_fp8_mlp_and_cnn(rng: np.random.Generator, cnn: Program) -> None:
    for prog, out in ((_mlp(rng), "logits"), (cnn, "output0")):
        q = quantize(prog, QuantizeFP8Pass(), calibrate(prog, _batches(prog)))
        rep = quantization_report(prog, q, random_inputs(prog, seed=11))
        assert rep["outputs"][out]["cosine"] >= 0.99
        assert any(a.dtype == ml_dtypes.float8_e4m3fn for _, a in q.weights.items())
        assert 3.3 < rep["compression"] <= 4.0


# ------------------------------------------------------------------------------------ IR


@pytest.mark.parametrize("make", [QuantizeInt8Pass, QuantizeW4Pass, QuantizeW2Pass,
                                  QuantizeFP8Pass])
def test_quantized_ir_verifies_and_round_trips(cnn: Program, make: type) -> None:
    calib = calibrate(cnn, _batches(cnn, 2))
    q = quantize(cnn, make(), calib)
    q.verify()
    text = q.to_text()
    again = parse_program(text, q.weights)
    again.verify()
    assert again.to_text() == text
    x = random_inputs(cnn, seed=1)
    np.testing.assert_array_equal(run_program(again, x)["output0"], run_program(q, x)["output0"])
    assert ACT_RANGE_ATTR not in text or make in (QuantizeW4Pass, QuantizeW2Pass)


def test_annotated_ir_round_trips_and_passes_run_by_name(cnn: Program) -> None:
    """Calibration lives in the IR, so ``portc opt``-style runs on a parsed file work."""
    module = cnn.module.clone()
    calibrate(cnn, _batches(cnn, 2)).annotate(module)
    parsed = parse_program(str(module), cnn.weights)
    weights = cnn.weights.subset(set(cnn.weights))
    QuantizeInt8Pass(per_channel=False).apply(make_context(weights), parsed.module)
    q = Program(parsed.module, weights)
    q.verify()
    assert sum(QUANTIZED_ATTR in o.attributes for o in q.module.walk()) == 3
    assert QuantizeW4Pass(group_size=64).pipeline_pass_spec().name == "quantize-w4"


# ------------------------------------------------------------------------------------ int8 options


def _grab_int8(q: Program, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    accs: list[np.ndarray] = []

    def grab(op: object, res: list[np.ndarray]) -> None:
        if isinstance(op, g.MatMulOp):
            accs.append(res[0])

    return run_program(q, {"x": x}, on_op=grab)["y"], accs


def test_int8_per_token_is_bit_exact_against_numpy(rng: np.random.Generator) -> None:
    prog, w, bias = _linear(rng)
    q = quantize(prog, QuantizeInt8Pass(act_granularity="per_token"), calibrate(prog, _batches(prog)))
    x = random_inputs(prog, seed=7)["x"]
    got, accs = _grab_int8(q, x)
    m = np.maximum(np.abs(x).max(axis=-1, keepdims=True), np.finfo(np.float32).tiny)
    s_row = (m / np.float32(127)).astype(np.float32)
    xq = np.clip(np.round((x / s_row).astype(np.float32)), -127, 127).astype(np.int8)
    s_w = (np.abs(w).max(axis=0) / np.float32(127)).astype(np.float32)
    wq = np.clip(np.round(w.astype(np.float64) / s_w.astype(np.float64)), -127, 127).astype(np.int8)
    acc = xq.astype(np.int32) @ wq.astype(np.int32)
    want = ((acc.astype(np.float32) * s_row) * s_w + bias).astype(np.float32)
    assert len(accs) == 1 and accs[0].dtype == np.int32
    np.testing.assert_array_equal(accs[0], acc)
    np.testing.assert_array_equal(got, want)
    rep = quantization_report(prog, q, {"x": x})
    assert rep["scheme_details"] == {"per_token": 1} and rep["outputs"]["y"]["cosine"] > 0.999


def test_int8_asymmetric_zero_point_is_bit_exact(rng: np.random.Generator) -> None:
    prog, w, bias = _linear(rng)

    def batches() -> Iterator[dict[str, np.ndarray]]:  # post-GELU-like, one-sided
        for i in range(4):
            z = np.random.default_rng(i).standard_normal((4, 64)).astype(np.float32)
            yield {"x": np.maximum(z, -0.17).astype(np.float32)}

    calib = calibrate(prog, batches())
    q = quantize(prog, QuantizeInt8Pass(asymmetric=True), calib)
    x = next(batches())["x"]
    got, accs = _grab_int8(q, x)
    lo, hi = calib.ranges["graph.matmul#0"]
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    s_x = np.float32((hi - lo) / 255.0)
    zp = int(np.clip(-128 - np.round(np.float64(lo) / np.float64(s_x)), -128, 127))
    xq = np.clip(np.round((x / s_x).astype(np.float32)) + zp, -128, 127).astype(np.int8)
    s_w = (np.abs(w).max(axis=0) / np.float32(127)).astype(np.float32)
    wq = np.clip(np.round(w.astype(np.float64) / s_w.astype(np.float64)), -127, 127).astype(np.int8)
    acc = xq.astype(np.int32) @ wq.astype(np.int32) - zp * wq.astype(np.int32).sum(axis=0)
    scale = (np.float64(s_x) * s_w.astype(np.float64)).astype(np.float32)
    want = (acc.astype(np.float32) * scale + bias).astype(np.float32)
    assert accs[0].dtype == np.int32
    # integer-exact: the zero-point correction reproduces the int32 product of (x_q - zp) and w_q
    np.testing.assert_array_equal(
        acc, (xq.astype(np.int64) - zp).astype(np.int32) @ wq.astype(np.int32))
    np.testing.assert_array_equal(got, want)


def test_keep_float_smoothquant_and_awq_are_reported(rng: np.random.Generator) -> None:
    prog = _mlp(rng)
    calib = calibrate(prog, _batches(prog))
    assert Calibration.from_json(calib.to_json()) == calib and calib.chan_sqmean
    x = random_inputs(prog, seed=999)
    q = quantize(prog, QuantizeInt8Pass(keep_float="graph.matmul#1", smooth_alpha=0.5,
                                        act_granularity="per_token"), calib)
    rep = quantization_report(prog, q, x)
    assert rep["quantized_ops"] == {"matmuls_int8": 1}
    assert rep["float_ops"] == [{"op": rep["float_ops"][0]["op"], "key": "graph.matmul#1",
                                 "reason": "keep_float (sensitivity policy)"}]
    assert rep["scheme_details"] == {"smooth=0.5,per_token": 1}
    assert rep["outputs"]["logits"]["cosine"] >= 0.995
    plain = quantization_report(prog, quantize(prog, QuantizeW2Pass(group_size=32)), x)
    awq = quantization_report(prog, quantize(prog, QuantizeW2Pass(group_size=32, act_aware=True),
                                             calib), x)
    assert sum(awq["scheme_details"].values()) == 2
    assert awq["outputs"]["logits"]["cosine"] >= plain["outputs"]["logits"]["cosine"] - 0.01
    with pytest.raises(IRError, match="act_granularity"):
        quantize(prog, QuantizeInt8Pass(act_granularity="per_row"), calib)


def test_gptq_lowers_output_error_and_keeps_valid_int4(rng: np.random.Generator) -> None:
    from portc.passes.calibration import HESSIAN_ATTR
    from portc.passes.quantize import _dequant, gptq_quantize, quantize_groupwise

    k, n = 128, 48
    mix = rng.standard_normal((k, k)) / np.sqrt(k)
    xs = rng.standard_normal((2048, k)) @ (np.eye(k) + 2.0 * mix)  # correlated input channels
    w = rng.standard_normal((k, n)).astype(np.float32)
    hess = xs.T @ xs / xs.shape[0]
    ref = xs @ w.astype(np.float64)
    for bits, group, order in (("int4", 32, False), ("int4", 64, False), ("int2", 32, False),
                               ("int4", 64, True)):
        q0, s0 = quantize_groupwise(w, bits, group)
        q1, s1 = gptq_quantize(w, bits, group, hess, act_order=order)
        lo, hi = (-8, 7) if bits == "int4" else (-2, 1)
        assert q1.dtype == q0.dtype and q1.shape == (k, n) and s1.shape == (k // group, 1, n)
        assert q1.astype(np.int32).min() >= lo and q1.astype(np.int32).max() <= hi
        assert s1.dtype == np.float32 and np.all(s1 > 0)
        e0 = np.linalg.norm(xs @ _dequant(q0, s0) - ref)
        e1 = np.linalg.norm(xs @ _dequant(q1, s1) - ref)
        assert e1 < 0.8 * e0, (bits, group, e1, e0)

    # through the pass: the stored int4 constant times the stored scales is the weight used
    b = GraphBuilder()
    x = b.add_input("x", TensorSpec((16, k), "float32"))
    prog = b.finish([("y", b.matmul(x, b.const(w, hint="w")))])
    feeds = [{"x": xs[i * 16:(i + 1) * 16].astype(np.float32)} for i in range(32)]
    calib = calibrate(prog, feeds, hessian=True)
    assert calib.hessians["graph.matmul#0"].shape == (k, k)
    assert Calibration.from_json(calib.to_json()) == calib  # JSON stays backward compatible
    plain = quantize(prog, QuantizeW4Pass(group_size=32), calib)
    gq = quantize(prog, QuantizeW4Pass(group_size=32, gptq=True), calib)
    assert not any(HESSIAN_ATTR in o.attributes for o in gq.module.walk())
    assert not any(name.startswith("calib.hessian") for name in gq.weights)
    q4 = [a for _, a in gq.weights.items() if a.dtype == ml_dtypes.int4]
    assert len(q4) == 1
    sc = [a for name, a in gq.weights.items() if "w_scale" in name]
    assert len(sc) == 1 and sc[0].shape == (k // 32, 1, n)
    np.testing.assert_array_equal(q4[0], gptq_quantize(w, "int4", 32, calib.hessians[
        "graph.matmul#0"])[0])
    test_x = {"x": (rng.standard_normal((16, k)) @ (np.eye(k) + 2.0 * mix)).astype(np.float32)}
    want = run_program(prog, test_x)["y"].astype(np.float64)
    got = run_program(gq, test_x)["y"].astype(np.float64)
    np.testing.assert_allclose(got, test_x["x"].astype(np.float64) @ _dequant(q4[0], sc[0]),
                               rtol=1e-4, atol=1e-3)
    err_p = np.linalg.norm(run_program(plain, test_x)["y"] - want)
    assert np.linalg.norm(got - want) < err_p
    rep = quantization_report(prog, gq, test_x)
    assert rep["scheme_details"] == {"gptq": 1} and rep["quantized_ops"] == {"matmuls_w4": 1}
    with pytest.raises(IRError, match="gptq_damp"):
        quantize(prog, QuantizeW4Pass(gptq=True, gptq_damp=1.5), calib)


# ------------------------------------------------------------------------------------ int8 tuning


def _outlier_linear(rng: np.random.Generator) -> Program:
    """``(x * c) @ W`` where ``c`` blows up two input channels 40x: the LayerNorm-output
    outlier pattern of BERT that ruins one static per-tensor scale."""
    b = GraphBuilder()
    x = b.add_input("x", TensorSpec((16, 64), "float32"))
    c = np.ones(64, np.float32)
    c[[3, 17]] = 40.0
    w = (rng.standard_normal((64, 32)) / 8).astype(np.float32)
    y = b.matmul(b.binary("mul", x, b.const(c, hint="c")), b.const(w, hint="w"))
    return b.finish([("y", y)])


def test_tuned_int8_migrates_outlier_channels_and_beats_minmax(rng: np.random.Generator) -> None:
    from portc.passes.quantize import tune_int8

    prog = _outlier_linear(rng)
    cal = calibrate(prog, _batches(prog, 8), samples=128)
    assert cal.rows["graph.matmul#0"].shape == (128, 64)
    tuned, (choice,) = tune_int8(prog, cal)
    assert choice.alpha > 0 and choice.rel_error < choice.baseline / 4
    assert Calibration.from_json(tuned.to_json()).smooth == tuned.smooth
    x = random_inputs(prog, seed=999)
    plain = quantization_report(prog, quantize(prog, QuantizeInt8Pass(), cal), x)
    good = quantization_report(prog, quantize(prog, QuantizeInt8Pass(), tuned), x)
    # independent float reference: the report's cosine is against the float program
    assert good["outputs"]["y"]["cosine"] > plain["outputs"]["y"]["cosine"]
    assert 1 - good["outputs"]["y"]["cosine"] < (1 - plain["outputs"]["y"]["cosine"]) / 4


def test_tuned_int8_is_bit_exact_against_numpy(rng: np.random.Generator) -> None:
    """With a tuned smoothing strength, zero point and clipped range, the integer accumulator
    and the float result equal the same math written directly in numpy."""
    from portc.passes.quantize import _smooth_factors, tune_int8

    prog, w, bias = _linear(rng)
    cal = calibrate(prog, _batches(prog, 8), samples=64)
    tuned, _ = tune_int8(prog, cal)
    key = "graph.matmul#0"
    tuned.smooth[key], tuned.asym[key] = 0.5, True
    lo, hi = tuned.ranges[key] = (-1.5, 2.5)  # a clipped range in the smoothed space
    q = quantize(prog, QuantizeInt8Pass(), tuned)
    x = random_inputs(prog, seed=7)["x"] * np.float32(3)  # beyond the range: clipping shows
    got, accs = _grab_int8(q, x)
    sm = _smooth_factors(w, np.asarray(cal.chan_absmax[key]), 0.5)
    ws = (w.astype(np.float64) * sm.astype(np.float64)[:, None]).astype(np.float32)
    xs = (x * (1.0 / sm.astype(np.float64)).astype(np.float32)).astype(np.float32)
    s_x = np.float32((hi - lo) / 255.0)
    zp = int(np.clip(-128 - np.round(lo / np.float64(s_x)), -128, 127))
    xq = np.clip(np.round((xs / s_x).astype(np.float32)) + zp, -128, 127).astype(np.int8)
    s_w = (np.abs(ws).max(axis=0) / np.float32(127)).astype(np.float32)
    wq = np.clip(np.round(ws.astype(np.float64) / s_w.astype(np.float64)), -127, 127)
    raw = xq.astype(np.int32) @ wq.astype(np.int32)  # the int8 x int8 -> int32 matmul
    acc = raw - zp * wq.astype(np.int32).sum(axis=0)
    scale = (np.float64(s_x) * s_w.astype(np.float64)).astype(np.float32)
    want = (acc.astype(np.float32) * scale + bias).astype(np.float32)
    np.testing.assert_array_equal(accs[0], raw)
    np.testing.assert_array_equal(got, want)


def test_fallback_keeps_the_most_sensitive_layer_in_float_and_says_why(
        rng: np.random.Generator) -> None:
    from portc.passes.quantize import quantize_int8_with_fallback, tune_int8

    prog = _mlp(rng)
    cal = calibrate(prog, _batches(prog), samples=64)
    tuned, choices = tune_int8(prog, cal)
    worst = max(choices, key=lambda c: c.rel_error).key
    check = [random_inputs(prog, seed=500)]
    # an unreachable target: falls back one layer at a time up to max_float
    q, fb = quantize_int8_with_fallback(prog, tuned, choices, check, min_cosine=1.0, max_float=1)
    assert [f["key"] for f in fb] == [worst] and "largest remaining" in fb[0]["reason"]
    rep = quantization_report(prog, q, check[0])
    assert [f["key"] for f in rep["float_ops"]] == [worst]
    assert rep["float_ops"][0]["reason"].startswith("mixed-precision fallback")
    assert rep["quantized_ops"] == {"matmuls_int8": 1}
    # a reachable target keeps everything in int8
    q2, fb2 = quantize_int8_with_fallback(prog, tuned, choices, check, min_cosine=0.9)
    assert fb2 == [] and quantization_report(prog, q2, check[0])["quantized_ops"] == {
        "matmuls_int8": 2}


def test_sensitivity_sweep_ranks_the_outlier_layer_first(rng: np.random.Generator) -> None:
    """Two layers, one fed by 40x outlier channels: quantizing it alone costs far more."""
    from portc.passes.quantize import sensitivity_sweep

    b = GraphBuilder()
    x = b.add_input("x", TensorSpec((16, 64), "float32"))
    c = np.ones(64, np.float32)
    c[[3, 17]] = 40.0
    w1 = (rng.standard_normal((64, 64)) / 8).astype(np.float32)
    w2 = (rng.standard_normal((64, 32)) / 8).astype(np.float32)
    h = b.matmul(x, b.const(w1, hint="w1"))
    y = b.matmul(b.binary("mul", h, b.const(c, hint="c")), b.const(w2, hint="w2"))
    prog = b.finish([("y", y)])
    cal = calibrate(prog, _batches(prog, 4))
    sweep = sensitivity_sweep(prog, cal, [random_inputs(prog, seed=5)])
    assert [s["key"] for s in sweep] == ["graph.matmul#0", "graph.matmul#1"]
    assert all(0.9 < s["cosine"] < 1.0 for s in sweep)
    assert 1 - sweep[1]["cosine"] > 4 * (1 - sweep[0]["cosine"])


def test_default_int8_change_tunes_every_layer_and_reports_it(rng: np.random.Generator,
                                                              tmp_path: object) -> None:
    """``--quantize int8``: per-tensor static scales tuned per layer; with a calibration file
    its last batch is held out for the fallback check."""
    from pathlib import Path

    from portc.compiler.model_changes import ModelChangeOptions, apply_model_changes

    prog = _mlp(rng)
    x = random_inputs(prog, seed=3)
    q, (rep,) = apply_model_changes(prog, ModelChangeOptions(quantize="int8"), 0, x)
    assert set(rep["int8_layers"]) == {"graph.matmul#0", "graph.matmul#1"}
    assert rep["fallback_to_float"] == "none needed"
    assert rep["quantized_ops"] == {"matmuls_int8": 2}
    assert rep["outputs"]["logits"]["cosine"] >= 0.99
    calib = Path(str(tmp_path)) / "calib.npz"
    np.savez(calib, x=np.stack([random_inputs(prog, seed=40 + i)["x"] for i in range(3)]))
    _, (rep2,) = apply_model_changes(
        prog, ModelChangeOptions(quantize="int8", calib=str(calib), int8_min_cosine=1.0,
                                 int8_max_float=1), 0, x)
    assert "3 batches from" in rep2["calibration"] and "held out" in rep2["calibration"]
    # an unreachable target: exactly one layer falls back, with its reason reported
    (key,) = rep2["fallback_to_float"]
    assert rep2["float_ops"][0]["key"] == key
    assert rep2["float_ops"][0]["reason"].startswith("mixed-precision fallback")
