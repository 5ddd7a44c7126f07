"""rvvsim vs qemu: RVV floating point (arithmetic, fma, conversions, compares, reductions) on
random data salted with NaN (quiet, signalling, payloads), infinities, signed zeros,
subnormals, exact rounding midpoints and saturating conversion edges."""

from __future__ import annotations

import numpy as np
import pytest

from .harness import Case, compare, need_tools, run_qemu

VLENS = [128, 256, 512, 1024]
SPECIAL = {
    32: [0x7FC00000, 0x7F800001, 0xFFC00123, 0x7F800000, 0xFF800000, 0, 0x80000000, 1,
         0x807FFFFF, 0x00800000, 0x7F7FFFFF, 0x3F800000, 0x3F000000, 0x3FC00000, 0x40200000,
         0xBFC00000, 0x4F000000, 0xCF000000, 0x4F800000, 0x5F000000, 0x5F800000, 0xDF000000,
         0x3F800001, 0xBF000000],
    64: [0x7FF8000000000000, 0x7FF0000000000001, 0xFFF8000000000123, 0x7FF0000000000000,
         0xFFF0000000000000, 0, 0x8000000000000000, 1, 0x800FFFFFFFFFFFFF, 0x0010000000000000,
         0x7FEFFFFFFFFFFFFF, 0x3FF0000000000000, 0x3FE0000000000000, 0x3FF8000000000000,
         0x4004000000000000, 0xBFF8000000000000, 0x41E0000000000000, 0xC1E0000000000000,
         0x41F0000000000000, 0x43E0000000000000, 0x43F0000000000000, 0xC3E0000000000000,
         0x3FF0000000000001, 0x47EFFFFFE0000000, 0x36A0000000000000],
}


@np.errstate(all="ignore")
def _floats(rng: np.random.Generator, w: int, n: int) -> np.ndarray:
    f, u = np.dtype(f"f{w // 8}"), np.dtype(f"u{w // 8}")
    x = (rng.standard_normal(n) * np.exp2(rng.integers(-20, 21, n))).astype(f)
    pick = rng.random(n) < 0.35
    sp = np.array(SPECIAL[w], np.uint64).astype(u)
    x.view(u)[pick] = sp[rng.integers(0, sp.size, pick.sum())]
    if n >= 6:  # every case sees the three NaN kinds (quiet, signalling, payload) at least once
        x.view(u)[rng.choice(n, 3, replace=False)] = sp[:3]
    return x


LMULS = {32: ["mf2", "m1", "m2", "m8"], 64: ["m1", "m4"]}
BIN = {"vfadd": "vv vf", "vfsub": "vv vf", "vfrsub": "vf", "vfmul": "vv vf", "vfdiv": "vv vf",
       "vfrdiv": "vf", "vfmin": "vv vf", "vfmax": "vv vf", "vfsgnj": "vv vf",
       "vfsgnjn": "vv vf", "vfsgnjx": "vv vf"}
FMA = ["vfmacc", "vfnmacc", "vfmsac", "vfnmsac", "vfmadd", "vfnmadd", "vfmsub", "vfnmsub"]
# qemu 7.2 aborts on every vector .rtz. conversion (decode_save_opc assertion), so those are
# checked against numpy in test_rvvsim_units.py instead
UNARY = ["vfsqrt.v", "vfclass.v", "vfneg.v", "vfabs.v", "vfcvt.xu.f.v", "vfcvt.x.f.v"]
INT2F = ["vfcvt.f.xu.v", "vfcvt.f.x.v"]
CMP = {"vmfeq": "vv vf", "vmfne": "vv vf", "vmflt": "vv vf", "vmfle": "vv vf", "vmfgt": "vf",
       "vmfge": "vf"}
RED = ["vfredosum", "vfredusum", "vfredmax", "vfredmin"]


def _prologue(w: int, lmul: str, pol: str) -> str:
    fl = "flw" if w == 32 else "fld"
    return f"""
    vsetvli t0, a4, e{w}, {lmul}, {pol}
    vle{w}.v v8, (a0)
    vle{w}.v v16, (a1)
    {fl} fa0, 0(a1)
    vlm.v v0, (a2)
    vle{w}.v v24, (a2)"""


@np.errstate(all="ignore")
def _arith_cases(rng: np.random.Generator) -> list[Case]:
    cases: list[Case] = []

    def add(name: str, w: int, body: str, inputs: list[np.ndarray], out: int, n: int,
            k: int = 0) -> None:
        cases.append(Case(f"{name.replace('.', '_')}_e{w}_{len(cases)}", body, inputs, out, n, k))

    for w in (32, 64):
        for _rep in range(2):
            for stem, forms in BIN.items():
                for form in forms.split():
                    lmul = LMULS[w][rng.integers(len(LMULS[w]))]
                    n, masked = int(rng.integers(1, 70)), bool(rng.random() < 0.4)
                    op2 = "v16" if form == "vv" else "fa0"
                    body = _prologue(w, lmul, "tu, mu" if masked else "ta, ma") + f"""
    {stem}.{form} v24, v8, {op2}{", v0.t" if masked else ""}
    vse{w}.v v24, (a3)"""
                    add(f"{stem}_{form}", w, body, [_floats(rng, w, n) for _ in range(3)],
                        n * w // 8, n)
            for stem in FMA:
                for form in ("vv", "vf"):
                    lmul = LMULS[w][rng.integers(len(LMULS[w]))]
                    n, masked = int(rng.integers(1, 70)), bool(rng.random() < 0.4)
                    a, b = _floats(rng, w, n), _floats(rng, w, n)
                    # heavy cancellation: the addend is close to -a*b
                    c = np.where(rng.random(n) < 0.5, -(a.astype(np.float64) * b).astype(a.dtype)
                                 * (1 + rng.standard_normal(n) * 1e-6), _floats(rng, w, n))
                    op2 = "v16" if form == "vv" else "fa0"
                    body = _prologue(w, lmul, "tu, mu" if masked else "ta, ma") + f"""
    {stem}.{form} v24, {op2}, v8{", v0.t" if masked else ""}
    vse{w}.v v24, (a3)"""
                    add(f"{stem}_{form}", w, body, [a, b, c.astype(a.dtype)], n * w // 8, n)
            for name in UNARY + INT2F:
                lmul = LMULS[w][rng.integers(len(LMULS[w]))]
                n, masked = int(rng.integers(1, 70)), bool(rng.random() < 0.4)
                a = _floats(rng, w, n)
                if name in INT2F:
                    a = rng.integers(-(2**62), 2**62, n).astype(f"i{w // 8}")
                    a[: n // 3] = rng.integers(-(2**30), 2**30, n // 3)
                body = _prologue(w, lmul, "tu, mu" if masked else "ta, ma") + f"""
    {name} v24, v8{", v0.t" if masked else ""}
    vse{w}.v v24, (a3)"""
                add(name, w, body, [a, _floats(rng, w, n), _floats(rng, w, n)], n * w // 8, n)
            for stem, forms in CMP.items():
                for form in forms.split():
                    lmul = LMULS[w][rng.integers(len(LMULS[w]))]
                    n, masked = int(rng.integers(1, 70)), bool(rng.random() < 0.5)
                    a = _floats(rng, w, n)
                    b = np.where(rng.random(n) < 0.3, a, _floats(rng, w, n)).astype(a.dtype)
                    op2 = "v16" if form == "vv" else "fa0"
                    body = _prologue(w, lmul, "tu, mu") + f"""
    vlm.v v4, (a0)
    {stem}.{form} v4, v8, {op2}{", v0.t" if masked else ""}
    vmv1r.v v0, v4
    vmv.v.i v24, 0
    vmerge.vim v24, v24, 1, v0
    vse{w}.v v24, (a3)"""
                    add(f"{stem}_{form}", w, body, [a, b, _floats(rng, w, n)], n * w // 8, n)
            for stem in RED:
                lmul = LMULS[w][rng.integers(len(LMULS[w]))]
                n, masked = int(rng.integers(1, 70)), bool(rng.random() < 0.5)
                a = _floats(rng, w, n)
                if rng.random() < 0.5:  # mostly finite so order of rounding matters
                    a = (rng.standard_normal(n) * np.exp2(rng.integers(-30, 30, n))).astype(
                        a.dtype)
                body = _prologue(w, lmul, "ta, ma") + f"""
    {stem}.vs v24, v8, v16{", v0.t" if masked else ""}
    vsetivli zero, 1, e{w}, m1, ta, ma
    vse{w}.v v24, (a3)"""
                add(stem, w, body, [a, _floats(rng, w, n), _floats(rng, w, n)], w // 8, n)
            lmul = LMULS[w][rng.integers(len(LMULS[w]))]
            n = int(rng.integers(1, 70))
            body = _prologue(w, lmul, "ta, ma") + f"""
    vfmerge.vfm v24, v8, fa0, v0
    vse{w}.v v24, (a3)
    vfmv.v.f v16, fa0
    vfmv.f.s fa1, v8
    vsetvli t0, a4, e{w}, {lmul}, tu, ma
    vfmv.s.f v16, fa1
    add a3, a3, {n * w // 8}
    vse{w}.v v16, (a3)"""
            add("vfmerge_vfmv", w, body, [_floats(rng, w, n) for _ in range(3)],
                2 * n * w // 8, n)
    # the dynamic rounding mode (fsrmi) drives float->int conversions, vector and scalar
    for rm in range(5):
        for w in (32, 64):
            n = 16
            x = np.concatenate([np.array([2.5, -2.5, 0.5, -0.5, 1.5, -1.5, 2.7, -2.7], f"f{w // 8}"),
                                _floats(rng, w, 8)])
            fl, fs = ("flw", "fcvt.w.s") if w == 32 else ("fld", "fcvt.w.d")
            body = f"""
    fsrmi {rm}
    vsetvli t0, a4, e{w}, m2, ta, ma
    vle{w}.v v8, (a0)
    vfcvt.x.f.v v16, v8
    vse{w}.v v16, (a3)
    {fl} ft0, 8(a0)
    {fs} t1, ft0
    sd t1, {n * w // 8}(a3)
    fsrmi 0"""
            add(f"frm{rm}", w, body, [x], n * w // 8 + 8, n)
    # vector arithmetic and float-producing conversions under every dynamic rounding mode
    for rm in range(1, 5):
        n = 24
        a, b, c = (_floats(rng, 32, n) for _ in range(3))
        b[:3] = a[:3]  # exact cancellation: the sign of zero depends on the mode
        ints = rng.integers(-(2**62), 2**62, n)
        body = f"""
    fsrmi {rm}
    vsetvli t0, a4, e32, m2, ta, ma
    vle32.v v8, (a0)
    vle32.v v12, (a1)
    vle32.v v16, (a2)
    flw fa0, 4(a2)
    vfadd.vv v20, v8, v12
    vse32.v v20, (a3)
    addi a3, a3, {4 * n}
    vfmul.vf v20, v8, fa0
    vse32.v v20, (a3)
    addi a3, a3, {4 * n}
    vfmacc.vv v16, v8, v12
    vse32.v v16, (a3)
    addi a3, a3, {4 * n}
    vfrdiv.vf v20, v8, fa0
    vse32.v v20, (a3)
    addi a3, a3, {4 * n}
    vfwadd.vv v24, v8, v12
    vsetvli t0, a4, e64, m4, ta, ma
    vse64.v v24, (a3)
    addi a3, a3, {8 * n}
    vsetvli t0, a4, e32, m2, ta, ma
    vfncvt.f.f.w v20, v24
    vse32.v v20, (a3)
    addi a3, a3, {4 * n}
    vfabs.v v20, v8
    vfsqrt.v v20, v20
    vse32.v v20, (a3)
    addi a3, a3, {4 * n}
    vfmv.s.f v4, fa0
    vfredosum.vs v5, v8, v4
    vfmv.f.s fa1, v5
    fsw fa1, 0(a3)
    vsetivli zero, 1, e64, m1, ta, ma
    vfmv.s.f v6, ft0
    vsetvli t0, a4, e32, m2, ta, ma
    vfwredosum.vs v7, v8, v6
    vsetivli zero, 1, e64, m1, ta, ma
    vfmv.f.s fa1, v7
    fsd fa1, 8(a3)
    fsrmi 0"""
        body = body.replace("    flw fa0, 4(a2)", "    flw fa0, 4(a2)\n    fcvt.d.s ft0, fa0")
        add(f"vfrm{rm}", 32, body, [a, b, c], 4 * n * 6 + 8 * n + 16, n)
        # int64 -> float conversions, from their own input buffer
        body_i = f"""
    fsrmi {rm}
    vsetvli t0, a4, e64, m4, ta, ma
    vle64.v v24, (a0)
    vfcvt.f.x.v v8, v24
    vse64.v v8, (a3)
    addi a3, a3, {8 * n}
    vfcvt.f.xu.v v8, v24
    vse64.v v8, (a3)
    addi a3, a3, {8 * n}
    vsetvli t0, a4, e32, m2, ta, ma
    vfncvt.f.x.w v8, v24
    vse32.v v8, (a3)
    addi a3, a3, {4 * n}
    vfncvt.f.xu.w v8, v24
    vse32.v v8, (a3)
    fsrmi 0"""
        add(f"vfrm_int{rm}", 64, body_i, [ints], 24 * n, n)
    # exact float32 midpoints: (1+2^-23)*1.5 lies halfway between two floats; a tiny addend
    # decides the rounding, which a double-rounded fma gets wrong
    a = np.array([1 + 2.0**-23] * 4 + [1.0 + 2.0**-22] * 4, np.float32)
    b = np.array([1.5] * 8, np.float32)
    c = np.array([2.0**-80, -(2.0**-80), 0.0, -0.0] * 2, np.float32)
    body = _prologue(32, "m1", "ta, ma") + """
    vfmacc.vv v24, v16, v8
    vse32.v v24, (a3)"""
    add("fma32_midpoint", 32, body, [a, b, c], 32, 8)
    a64 = np.array([1 + 2.0**-52] * 4 + [1.0 + 2.0**-51] * 4, np.float64)
    c64 = np.array([2.0**-300, -(2.0**-300), 0.0, -0.0] * 2, np.float64)
    body = _prologue(64, "m2", "ta, ma") + """
    vfmacc.vv v24, v16, v8
    vse64.v v24, (a3)"""
    add("fma64_midpoint", 64, body, [a64, np.full(8, 1.5), c64], 64, 8)
    return cases


def _dbl(lmul: str) -> str:
    return {"mf2": "m1", "m1": "m2", "m2": "m4", "m4": "m8"}[lmul]


def _convert_cases(rng: np.random.Generator) -> list[Case]:
    """Widening and narrowing conversions / arithmetic (SEW=32 <-> 64, SEW=16 ints)."""
    cases: list[Case] = []
    widen = {  # name -> (src kind, src width)
        "vfwcvt.f.f.v": ("f", 32), "vfwcvt.xu.f.v": ("f", 32), "vfwcvt.x.f.v": ("f", 32),
        "vfwcvt.f.xu.v": ("u", 32), "vfwcvt.f.x.v": ("i", 32), "vfwcvt.f.x.v ": ("i", 16),
    }
    narrow = {
        "vfncvt.f.f.w": ("f", 64), "vfncvt.xu.f.w": ("f", 64), "vfncvt.x.f.w": ("f", 64),
        "vfncvt.f.xu.w": ("u", 64), "vfncvt.f.x.w": ("i", 64), "vfncvt.x.f.w ": ("f", 32),
        "vfncvt.xu.f.w ": ("f", 32),
    }
    for table, wide_dst in ((widen, True), (narrow, False)):
        for raw, (kind, sw) in table.items():
            name = raw.strip()
            for _ in range(2):
                n, masked = int(rng.integers(1, 60)), bool(rng.random() < 0.4)
                sew = sw if wide_dst else sw // 2  # the instruction's SEW (narrow side)
                lmul = ["mf2", "m1", "m2"][rng.integers(3)]
                if kind == "f":
                    a = _floats(rng, sw, n)
                elif kind == "u":
                    a = rng.integers(0, 2**sw - 1, n, dtype=np.uint64, endpoint=True).astype(
                        f"u{sw // 8}")
                else:
                    a = rng.integers(-(2 ** (sw - 1)), 2 ** (sw - 1), n).astype(f"i{sw // 8}")
                dw = 2 * sw if wide_dst else sw // 2
                src_lmul = lmul if wide_dst else _dbl(lmul)
                dst_lmul = _dbl(lmul) if wide_dst else lmul
                body = f"""
    vsetvli t0, a4, e{sw}, {src_lmul}, tu, mu
    vle{sw}.v v8, (a0)
    vsetvli t0, a4, e{dw}, {dst_lmul}, tu, mu
    vle{dw}.v v24, (a1)
    vsetvli t0, a4, e{sew}, {lmul}, tu, mu
    vlm.v v0, (a2)
    {name} v24, v8{", v0.t" if masked else ""}
    vsetvli t0, a4, e{dw}, {dst_lmul}, tu, mu
    vse{dw}.v v24, (a3)"""
                fill = rng.integers(0, 256, n * dw // 8, dtype=np.uint8)
                cases.append(Case(f"{name.replace('.', '_')}_{len(cases)}", body,
                                  [a, fill, rng.integers(0, 256, 16, dtype=np.uint8)],
                                  n * dw // 8, n))
    for stem in ("vfwadd", "vfwsub", "vfwmul", "vfwmacc", "vfwnmacc", "vfwmsac", "vfwnmsac"):
        for form in ("vv", "vf"):
            n, masked = int(rng.integers(1, 60)), bool(rng.random() < 0.4)
            lmul = ["mf2", "m1", "m2"][rng.integers(3)]
            mac = "macc" in stem or "msac" in stem
            op2 = "v16" if form == "vv" else "fa0"
            operands = f"v24, {op2}, v8" if mac else f"v24, v8, {op2}"
            body = f"""
    vsetvli t0, a4, e64, {_dbl(lmul)}, tu, mu
    vle64.v v24, (a2)
    vsetvli t0, a4, e32, {lmul}, tu, mu
    vle32.v v8, (a0)
    vle32.v v16, (a1)
    flw fa0, 0(a1)
    vlm.v v0, (a0)
    {stem}.{form} {operands}{", v0.t" if masked else ""}
    vsetvli t0, a4, e64, {_dbl(lmul)}, tu, mu
    vse64.v v24, (a3)"""
            cases.append(Case(f"{stem}_{form}_{len(cases)}", body,
                              [_floats(rng, 32, n), _floats(rng, 32, n), _floats(rng, 64, n)],
                              n * 8, n))
    for _ in range(4):
        n, masked = int(rng.integers(1, 60)), bool(rng.random() < 0.5)
        a = (rng.standard_normal(n) * np.exp2(rng.integers(-30, 30, n))).astype(np.float32)
        body = f"""
    vsetivli zero, 1, e64, m1, ta, ma
    vle64.v v16, (a1)
    vsetvli t0, a4, e32, m2, ta, ma
    vle32.v v8, (a0)
    vlm.v v0, (a0)
    {"vfwredosum" if masked else "vfwredusum"}.vs v24, v8, v16{", v0.t" if masked else ""}
    vsetivli zero, 1, e64, m1, ta, ma
    vse64.v v24, (a3)"""
        cases.append(Case(f"vfwredosum_{len(cases)}", body, [a, _floats(rng, 64, 1)], 8, n))
    return cases


FAMILIES = {"arith": _arith_cases, "convert": _convert_cases}


@pytest.fixture(scope="module")
def qemu_results() -> dict:
    need_tools()
    out = {}
    for i, (name, gen) in enumerate(FAMILIES.items()):
        cases = gen(np.random.default_rng(100 + i))
        out[name] = (cases, run_qemu(cases, VLENS))
    return out


@pytest.mark.parametrize("vlen", VLENS)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_fp_ops_match_qemu(qemu_results: dict, family: str, vlen: int) -> None:
    cases, qemu = qemu_results[family]
    compare(cases, qemu, vlen)
