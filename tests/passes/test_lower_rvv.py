"""The rvv lowering, kernel by kernel, against numpy / the reference target on rvvsim (and qemu
where the point is bit-identity): polynomial error bounds, float16/bfloat16 conversions and
arithmetic, empty reductions, operand spilling, body scheduling, pow, half-precision sorting."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import ml_dtypes
import numpy as np
import pytest

from portc.compiler.builder import GraphBuilder
from portc.compiler.pipeline import compile_program
from portc.compiler.program import Program
from portc.compiler.target_rvv import RvvSimExecutable, compile_rvv
from portc.compiler.targets import CompileOptions, get_target
from portc.dialects import graph as g
from portc.dialects.graph import TensorSpec
from portc.passes import rvv_polynomials as poly
from portc.runtimes.qemu import QemuExecutable, unavailable
from tests.conftest import need

HALF_NP = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16}


def rvv_run(prog: Program, feeds: Mapping[str, np.ndarray], vlen: int = 256
            ) -> tuple[dict[str, np.ndarray], dict]:
    art = compile_rvv(prog, CompileOptions({"vlen": vlen}))
    return RvvSimExecutable(art).run(feeds)


def reference(prog: Program, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    tgt = get_target("reference")
    return tgt.runtime(None).load(compile_program(prog, tgt)).run(feeds)[0]


def unary_program(fn: str, n: int, dt: str) -> Program:
    b = GraphBuilder()
    x = b.add_input("x", TensorSpec((n,), dt))
    return b.finish([("y", b.unary(fn, x))])


# ------------------------------------------------------------------------------ polynomials
_NP_FN: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "exp": np.exp, "log": np.log, "tanh": np.tanh, "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "erf": np.vectorize(math.erf), "sin": np.sin, "cos": np.cos, "atan": np.arctan,
}


@pytest.mark.parametrize("dt", ["float32", "float64"])
@pytest.mark.parametrize("fn", sorted(poly.SWEEPS))
def test_polynomial_max_error(fn: str, dt: str) -> None:
    """The documented bounds ``MAX_ERROR`` hold on a dense sweep of ``SWEEPS`` (geometric for
    log), plus the specials every fn must pass through (NaN stays NaN)."""
    lo, hi = poly.SWEEPS[fn]
    n = 2500
    x = np.geomspace(lo, hi, n) if fn == "log" else np.linspace(lo, hi, n)
    x = np.concatenate([x.astype(dt), np.array([np.nan], dt)])
    got = rvv_run(unary_program(fn, x.size, dt), {"x": x})[0]["y"].astype(np.float64)
    with np.errstate(all="ignore"):  # the exact value rounded to the dtype (overflow: inf)
        want = _NP_FN[fn](x.astype(np.float64)).astype(dt).astype(np.float64)
        err = np.where(got[:-1] == want[:-1], 0.0, np.abs(got[:-1] - want[:-1]))
    ab, rel = poly.MAX_ERROR[fn][dt]
    worst = int(np.argmax(err - rel * np.abs(want[:-1])))
    assert np.all(err <= ab + rel * np.abs(want[:-1])), \
        f"{fn} {dt}: x={x[worst]!r} got {got[worst]!r} want {want[worst]!r}"
    assert np.isnan(got[-1])


# ------------------------------------------------------------------------------ half precision
def _specials(dt: str) -> np.ndarray:
    f16 = [0.0, -0.0, 6e-8, 5.96e-8, 2.98e-8, 2.9802322e-8, 1e-5, 6.1e-5, 6.1035156e-5,
           65504.0, 65519.99, 65520.0, 1e6, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 1 + 2 ** -8,
           2 ** -14 * (1 - 2 ** -11), -2.0 ** -24, np.inf, -np.inf, np.nan]
    bf = [3e-39, 1e-45, 1.1754942e-38, 3.4e38, 3.3961775e38, 1 + 2 ** -8, 1 + 3 * 2 ** -8]
    return np.array(f16 + bf, dt)


def _bits_random(dt: str, n: int, rng: np.random.Generator) -> np.ndarray:
    width = 4 if dt == "float32" else 8
    raw = rng.integers(0, 256, n * width, dtype=np.uint8)
    return raw.view(dt)


def _round_to_odd_f32(x: np.ndarray) -> np.ndarray:
    """float64 -> float32 rounded to odd, so a later RNE rounding to 8 bits is exact."""
    with np.errstate(all="ignore"):
        f = x.astype(np.float32)
        over = np.abs(f.astype(np.float64)) > np.abs(x)
        f = np.where(over & np.isfinite(x), np.nextafter(f, np.float32(0)), f)
        inexact = np.isfinite(x) & (f.astype(np.float64) != x)
    bits = f.view(np.uint32) | inexact.astype(np.uint32)
    return bits.view(np.float32)


def _half_reference(x: np.ndarray, dt: str) -> np.ndarray:
    """Correctly rounded (RNE, one rounding) ``x`` in ``dt``: numpy's float16 conversion is
    direct; ml_dtypes rounds float64 through float32, so bfloat16 goes via round-to-odd."""
    with np.errstate(all="ignore"):
        if dt == "bfloat16" and x.dtype == np.float64:
            return _round_to_odd_f32(x).astype(ml_dtypes.bfloat16)
        return x.astype(HALF_NP[dt])


def _same_half(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Equal bits, or both NaN (payloads are not compared)."""
    fa, fb = a.astype(np.float32), b.astype(np.float32)
    return (a.view(np.uint16) == b.view(np.uint16)) | (np.isnan(fa) & np.isnan(fb))


def _cast_program(n: int, src: str, dst: str) -> Program:
    b = GraphBuilder()
    x = b.add_input("x", TensorSpec((n,), src))
    h = b.cast(x, dst)
    return b.finish([("h", h), ("back", b.cast(h, "float32"))])


@pytest.mark.parametrize("dst", ["float16", "bfloat16"])
@pytest.mark.parametrize("src", ["float32", "float64"])
def test_narrowing_to_half_rounds_once_to_nearest_even(src: str, dst: str,
                                                       rng: np.random.Generator) -> None:
    """Specials (subnormal results, ties, overflow to inf at 65520, NaN) and random bit
    patterns of the source: the half bits equal the correctly rounded value, and widening
    back to float32 is exact."""
    x = np.concatenate([_specials(src), _bits_random(src, 3000, rng),
                        (rng.standard_normal(2000) * np.exp(rng.uniform(-40, 15, 2000)))
                        .astype(src)])
    x = np.concatenate([x, -x])
    out = rvv_run(_cast_program(x.size, src, dst), {"x": x})[0]
    want = _half_reference(x, dst)
    bad = ~_same_half(out["h"], want)
    assert not bad.any(), f"{src}->{dst}: {x[bad][:5]} gave {out['h'][bad][:5]}, want " \
                          f"{want[bad][:5]}"
    back = out["h"].astype(np.float32)
    same = (out["back"].view(np.uint32) == back.view(np.uint32)) | np.isnan(back)
    assert same.all()


def test_half_conversions_are_bit_identical_on_qemu(rng: np.random.Generator) -> None:
    need(unavailable() is None, f"qemu ({unavailable()})")
    x = np.concatenate([_specials("float64"), _bits_random("float64", 2000, rng)])
    for dst in ("float16", "bfloat16"):
        art = compile_rvv(_cast_program(x.size, "float64", dst), CompileOptions())
        a = RvvSimExecutable(art).run({"x": x})[0]
        q = QemuExecutable(art).run({"x": x})[0]
        for k in ("h", "back"):
            assert a[k].tobytes() == q[k].tobytes(), f"float64->{dst} output {k}"


@pytest.mark.parametrize("dt", ["float16", "bfloat16"])
def test_half_arithmetic_is_correctly_rounded(dt: str, rng: np.random.Generator) -> None:
    """float32 compute then one rounding equals float64 compute then one rounding for
    + - * / and sqrt of half operands (subnormals, infinities and NaN included)."""
    n = 3000
    npdt = HALF_NP[dt]
    with np.errstate(over="ignore"):
        sp = _specials("float32").astype(npdt)
    with np.errstate(over="ignore"):
        x = np.concatenate([sp, (rng.standard_normal(n) * np.exp(rng.uniform(-12, 12, n)))
                            .astype(npdt)])
        y = np.concatenate([sp[::-1], (rng.standard_normal(n) * np.exp(rng.uniform(-12, 12, n)))
                            .astype(npdt)])
    b = GraphBuilder()
    xs = b.add_input("x", TensorSpec((x.size,), dt))
    ys = b.add_input("y", TensorSpec((x.size,), dt))
    fns = ["add", "sub", "mul", "div"]
    prog = b.finish([(f, b.binary(f, xs, ys)) for f in fns] + [("sqrt", b.unary("sqrt", xs))])
    got = rvv_run(prog, {"x": x, "y": y})[0]
    wx, wy = x.astype(np.float64), y.astype(np.float64)
    with np.errstate(all="ignore"):
        exact = {"add": wx + wy, "sub": wx - wy, "mul": wx * wy, "div": wx / wy,
                 "sqrt": np.sqrt(wx)}
    for f, v in exact.items():
        bad = ~_same_half(got[f], _half_reference(v, dt))
        assert not bad.any(), f"{f} {dt}: {x[bad][:4]} {y[bad][:4]} -> {got[f][bad][:4]}"


def test_half_matmul_and_reduction_accumulate_in_float32(rng: np.random.Generator) -> None:
    """Products round to float16 (the kernel IR types them so), sums accumulate in float32
    and round once at the store: equal to that computation in numpy."""
    x = rng.standard_normal((5, 40)).astype(np.float16)
    w = rng.standard_normal((40, 7)).astype(np.float16)
    b = GraphBuilder()
    xs = b.add_input("x", TensorSpec((5, 40), "float16"))
    ws = b.add_input("w", TensorSpec((40, 7), "float16"))
    prog = b.finish([("y", b.matmul(xs, ws)), ("s", b.reduce("sum", xs, [1], keepdims=False))])
    got = rvv_run(prog, {"x": x, "w": w})[0]
    p = (x.astype(np.float32)[:, :, None] * w.astype(np.float32)[None]).astype(np.float16)
    want = np.zeros((5, 7), np.float32)
    for kk in range(40):  # sequential float32 sum in K order
        want = want + p[:, kk, :].astype(np.float32)
    np.testing.assert_array_equal(got["y"], want.astype(np.float16))
    s = np.zeros(5, np.float32)
    for kk in range(40):
        s = s + x[:, kk].astype(np.float32)
    np.testing.assert_allclose(got["s"].astype(np.float32), s.astype(np.float16)
                               .astype(np.float32), rtol=1e-3)


@pytest.mark.parametrize("dt", ["float16", "bfloat16"])
def test_half_sort_orders_like_the_reference(dt: str, rng: np.random.Generator) -> None:
    """NaN sorts as the largest value, -0 and +0 tie (stable: index order)."""
    npdt = HALF_NP[dt]
    x = np.concatenate([np.array([np.nan, -0.0, 0.0, np.inf, -np.inf, 1.0, 1.0, -1.0], npdt),
                        rng.standard_normal(24).astype(npdt)]).reshape(4, 8)
    b = GraphBuilder()
    xs = b.add_input("x", TensorSpec((4, 8), dt))
    v, i = b.op(g.TopKOp, [xs], {"axis": 1, "k": 5, "largest": 1})
    sv, si = b.op(g.SortOp, [xs], {"axis": 1, "descending": 0})
    prog = b.finish([("v", v), ("i", i), ("sv", sv), ("si", si)])
    got = rvv_run(prog, {"x": x})[0]
    want = reference(prog, {"x": x})
    for k in ("v", "sv"):
        assert _same_half(got[k], want[k]).all(), (k, got[k], want[k])
    for k in ("i", "si"):
        np.testing.assert_array_equal(got[k], want[k])


# ------------------------------------------------------------------------------ kernel shapes
@pytest.mark.parametrize("kind", ["sum", "max"])
def test_reduction_over_an_empty_axis_writes_the_init_value(kind: str) -> None:
    b = GraphBuilder()
    x = b.add_input("x", TensorSpec((3, 0), "float32"))
    prog = b.finish([("y", b.reduce(kind, x, [1], keepdims=False))])
    got = rvv_run(prog, {"x": np.zeros((3, 0), np.float32)})[0]["y"]
    np.testing.assert_array_equal(got, np.full(3, 0.0 if kind == "sum" else -np.inf,
                                               np.float32))


def test_operands_beyond_the_scalar_registers_are_rebuilt_from_the_counters(
        rng: np.random.Generator) -> None:
    """30 transposed inputs summed elementwise: the fused kernel (two loops: a scalar one and
    the strip) has more operands than RV64 has pointer registers, so the last ones are
    rebuilt from the loop counters at each access."""
    b = GraphBuilder()
    xs = [b.add_input(f"x{i}", TensorSpec((37, 3), "float32")) for i in range(30)]
    acc = b.transpose(xs[0], [1, 0])
    for x in xs[1:]:
        acc = b.binary("add", acc, b.transpose(x, [1, 0]))
    prog = b.finish([("y", acc)])
    art = compile_rvv(prog, CompileOptions())
    assert any("operand addresses rebuilt" in s for s in art.manifest["rvv"]["schedules"]
               .values()), art.manifest["compile_report"]
    feeds = {f"x{i}": rng.standard_normal((37, 3)).astype(np.float32) for i in range(30)}
    got = RvvSimExecutable(art).run(feeds)[0]["y"]
    np.testing.assert_array_equal(got, reference(prog, feeds)["y"])


def test_deep_select_chains_are_scheduled_into_few_registers(rng: np.random.Generator) -> None:
    """A chain of 14 compares feeding nested selects (the shape of fp8 casts' decomposition)
    compiles because each compare is made next to its select, not all up front."""
    b = GraphBuilder()
    x = b.add_input("x", TensorSpec((50,), "float16"))
    y = b.add_input("y", TensorSpec((50,), "float16"))
    conds = [b.binary("ge", x, b.scalar(float(2.0 ** k), x)) for k in range(14)]
    out = y
    for k, cnd in enumerate(conds):
        out = b.where(cnd, b.scalar(float(2.0 ** (k - 1)), x), out)
    prog = b.finish([("z", out)])
    feeds = {"x": (rng.standard_normal(50) * 3000).astype(np.float16),
             "y": rng.standard_normal(50).astype(np.float16)}
    got = rvv_run(prog, feeds)[0]["z"]
    np.testing.assert_array_equal(got, reference(prog, feeds)["z"])


def test_pow_with_integer_exponents_is_exact(rng: np.random.Generator) -> None:
    """Integer exponents multiply by squaring: integer-valued results are exact (so a cast to
    an integer type after pow does not truncate 7.9999 to 7), negative bases keep the sign of
    odd powers; float specials follow numpy."""
    base = np.array([2, 3, -2, -3, 10, 0, -0.0, 1, -1, 0.5, np.inf, -np.inf, np.nan, 7, 2, 4],
                    np.float64)
    expo = np.array([3, 4, 3, 2, 15, -1, -3, np.nan, np.inf, -2, 2, 3, 0, 0.5, -0.5, 0.5],
                    np.float64)
    for dt in ("float32", "float64"):
        b = GraphBuilder()
        xs = b.add_input("x", TensorSpec((16,), dt))
        ys = b.add_input("y", TensorSpec((16,), dt))
        prog = b.finish([("z", b.binary("pow", xs, ys))])
        got = rvv_run(prog, {"x": base.astype(dt), "y": expo.astype(dt)})[0]["z"]
        with np.errstate(all="ignore"):
            want = np.power(base.astype(dt), expo.astype(dt))
        np.testing.assert_allclose(got, want, rtol=2e-6 if dt == "float32" else 1e-14)
        assert np.array_equal(got[:7], want[:7], equal_nan=True)  # exact integer powers


def test_integer_pow_wraps_and_handles_negative_exponents(rng: np.random.Generator) -> None:
    a = np.array([2, 3, -2, 7, 1, -1, -1, 5, 0, 3], np.int32)
    e = np.array([10, 20, 31, 11, -3, -3, -4, -1, 0, 0], np.int32)
    b = GraphBuilder()
    xs = b.add_input("x", TensorSpec((10,), "int32"))
    ys = b.add_input("y", TensorSpec((10,), "int32"))
    prog = b.finish([("z", b.binary("pow", xs, ys))])
    got = rvv_run(prog, {"x": a, "y": e})[0]["z"]
    np.testing.assert_array_equal(got, reference(prog, {"x": a, "y": e})["z"])


def test_float_mod_edge_cases_follow_numpy() -> None:
    a = np.array([0, -0.0, 0, -0.0, -3, 3, -1, 1, np.inf, -np.inf, 1, 1, np.nan, 1, 5.5, -5.5],
                 np.float32)
    d = np.array([-2, 2, 2, -2, np.inf, np.inf, -np.inf, -np.inf, 2, 2, 0, -0.0, 2, np.nan,
                  -2, 2], np.float32)
    b = GraphBuilder()
    xs = b.add_input("x", TensorSpec((16,), "float32"))
    ys = b.add_input("y", TensorSpec((16,), "float32"))
    prog = b.finish([("mod", b.binary("mod", xs, ys)), ("fmod", b.binary("fmod", xs, ys))])
    got = rvv_run(prog, {"x": a, "y": d})[0]
    with np.errstate(all="ignore"):
        for k, want in (("mod", np.mod(a, d)), ("fmod", np.fmod(a, d))):
            same = (got[k].view(np.uint32) == want.view(np.uint32)) | \
                (np.isnan(got[k]) & np.isnan(want))
            assert same.all(), (k, a[~same], d[~same], got[k][~same], want[~same])
