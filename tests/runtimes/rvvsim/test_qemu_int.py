"""rvvsim vs qemu: RVV integer arithmetic, widening/narrowing, extension, merges, compares."""

from __future__ import annotations

import numpy as np
import pytest

from .harness import Case, compare, need_tools, run_qemu

VLENS = [128, 256, 512, 1024]
LMULS = {8: ["mf8", "mf4", "mf2", "m1", "m2", "m8"], 16: ["mf4", "mf2", "m1", "m4"],
         32: ["mf2", "m1", "m2"],
         64: ["m1", "m2", "m8"]}
BIN = {
    "vadd": "vv vx vi", "vsub": "vv vx", "vrsub": "vx vi", "vand": "vv vx vi",
    "vor": "vv vx vi", "vxor": "vv vx vi", "vsll": "vv vx vi", "vsrl": "vv vx vi",
    "vsra": "vv vx vi", "vmin": "vv vx", "vmax": "vv vx", "vminu": "vv vx", "vmaxu": "vv vx",
    "vmul": "vv vx", "vmulh": "vv vx", "vmulhu": "vv vx", "vmulhsu": "vv vx", "vdiv": "vv vx",
    "vdivu": "vv vx", "vrem": "vv vx", "vremu": "vv vx",
    "vmacc": "vv vx", "vnmsac": "vv vx", "vmadd": "vv vx", "vnmsub": "vv vx",
}
CMP = {"vmseq": "vv vx vi", "vmsne": "vv vx vi", "vmslt": "vv vx vi", "vmsltu": "vv vx vi",
       "vmsle": "vv vx vi", "vmsleu": "vv vx vi", "vmsgt": "vv vx vi", "vmsgtu": "vv vx vi",
       "vmsge": "vv vi", "vmsgeu": "vv vi"}
UIMM = {"vsll", "vsrl", "vsra"}


def _ints(rng: np.random.Generator, sew: int, n: int) -> np.ndarray:
    """Random bits with the edge values division and shifts care about mixed in."""
    u = np.dtype(f"u{sew // 8}")
    x = rng.integers(0, 2**sew, n, dtype=np.uint64, endpoint=False).astype(u)
    edges = np.array([0, 1, 2**sew - 1, 2 ** (sew - 1), 2 ** (sew - 1) - 1, 3, 7], np.uint64)
    pick = rng.random(n) < 0.3
    x[pick] = edges[rng.integers(0, edges.size, pick.sum())].astype(u)
    small = rng.random(n) < 0.2
    x[small] = rng.integers(0, 9, small.sum()).astype(u)
    return x


def _binary_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for stem, forms in BIN.items():
        for form in forms.split():
            for sew in (8, 16, 32, 64):
                lmul = LMULS[sew][rng.integers(len(LMULS[sew]))]
                n = int(rng.integers(1, 70))
                masked = bool(rng.random() < 0.4)
                a, b = _ints(rng, sew, n), _ints(rng, sew, n)
                if stem in ("vsll", "vsrl", "vsra") and rng.random() < 0.5:
                    b = (b % sew).astype(b.dtype)
                mask = rng.integers(0, 256, 16, dtype=np.uint8)
                k = int(_ints(rng, 64, 1)[0].astype(np.int64))
                lo, hi = (0, 31) if stem in UIMM else (-16, 15)
                imm = int(rng.integers(lo, hi + 1))
                op2 = {"vv": "v16", "vx": "a5", "vi": str(imm)}[form]
                mac = stem in ("vmacc", "vnmsac", "vmadd", "vnmsub")
                operands = f"v24, {op2}, v8" if mac else f"v24, v8, {op2}"
                pol = "tu, mu" if masked else "ta, ma"
                body = f"""
    vsetvli t0, a4, e{sew}, {lmul}, {pol}
    vle{sew}.v v8, (a0)
    vle{sew}.v v16, (a1)
    vlm.v v0, (a2)
    vmv.v.v v24, v16
    {stem}.{form} {operands}{", v0.t" if masked else ""}
    vse{sew}.v v24, (a3)"""
                cases.append(Case(f"{stem}_{form}_e{sew}_{len(cases)}", body, [a, b, mask],
                                  n * sew // 8, n, k))
    return cases


def _cmp_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for stem, forms in CMP.items():
        for form in forms.split():
            for sew in (8, 16, 32, 64):
                lmul = LMULS[sew][rng.integers(len(LMULS[sew]))]
                n = int(rng.integers(1, 70))
                masked = bool(rng.random() < 0.5)
                a = _ints(rng, sew, n)
                b = np.where(rng.random(n) < 0.3, a, _ints(rng, sew, n)).astype(a.dtype)
                mask = rng.integers(0, 256, 16, dtype=np.uint8)
                k = int(a[0]) if rng.random() < 0.5 else int(_ints(rng, sew, 1)[0])
                pseudo = stem in ("vmslt", "vmsltu", "vmsge", "vmsgeu")
                imm = int(rng.integers(-15, 17) if pseudo else rng.integers(-16, 16))
                if pseudo and rng.random() < 0.3:
                    imm = 0
                op2 = {"vv": "v16", "vx": "a5", "vi": str(imm)}[form]
                # the mask result is made observable with vmerge (v0 = compare result)
                pre = "vlm.v v0, (a2)\n" if masked else ""
                cmp = (f"vlm.v v4, (a1)\n    {stem}.{form} v4, v8, {op2}, "
                       f"v0.t" if masked else f"{stem}.{form} v4, v8, {op2}")
                body = f"""
    vsetvli t0, a4, e{sew}, {lmul}, tu, mu
    vle{sew}.v v8, (a0)
    vle{sew}.v v16, (a1)
    {pre}    {cmp}
    vmv1r.v v0, v4
    vmv.v.i v24, 0
    vmerge.vim v24, v24, -1, v0
    vse{sew}.v v24, (a3)"""
                cases.append(Case(f"{stem}_{form}_e{sew}_{len(cases)}", body,
                                  [a, b, mask], n * sew // 8, n, k))
    return cases


def _widen_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    wide = {"vwadd": "vv vx wv wx", "vwaddu": "vv vx wv wx", "vwsub": "vv vx wv wx",
            "vwsubu": "vv vx wv wx", "vwmul": "vv vx", "vwmulu": "vv vx", "vwmulsu": "vv vx",
            "vwmacc": "vv vx", "vwmaccu": "vv vx", "vwmaccsu": "vv vx", "vwmaccus": "vx"}
    for stem, forms in wide.items():
        for form in forms.split():
            for sew in (8, 16, 32):
                lmul = ["mf2", "m1", "m4"][rng.integers(3)]
                n = int(rng.integers(1, 60))
                masked = bool(rng.random() < 0.4)
                a = _ints(rng, 2 * sew if form[0] == "w" else sew, n)
                b = _ints(rng, sew, n)
                acc = _ints(rng, 2 * sew, n)
                k = int(_ints(rng, 64, 1)[0].astype(np.int64))
                op2 = "v16" if form[1] == "v" else "a5"
                mac = "macc" in stem
                operands = f"v24, {op2}, v8" if mac else f"v24, v8, {op2}"
                load_a = (f"vsetvli t1, a4, e{2 * sew}, {_dbl(lmul)}, tu, mu\n    "
                          f"vle{2 * sew}.v v8, (a0)\n    vsetvli t0, a4, e{sew}, {lmul}, tu, mu"
                          if form[0] == "w" else f"vle{sew}.v v8, (a0)")
                body = f"""
    vsetvli t1, a4, e{2 * sew}, {_dbl(lmul)}, tu, mu
    vle{2 * sew}.v v24, (a2)
    vsetvli t0, a4, e{sew}, {lmul}, tu, mu
    {load_a}
    vle{sew}.v v16, (a1)
    vlm.v v0, (a0)
    {stem}.{form} {operands}{", v0.t" if masked else ""}
    vsetvli t1, a4, e{2 * sew}, {_dbl(lmul)}, tu, mu
    vse{2 * sew}.v v24, (a3)"""
                cases.append(Case(f"{stem}_{form}_e{sew}_{len(cases)}", body,
                                  [a, b, acc], n * sew // 4, n, k))
    # narrowing shifts and extensions
    for stem in ("vnsrl", "vnsra"):
        for form in ("wv", "wx", "wi"):
            for sew in (8, 16, 32):
                lmul = ["mf2", "m1", "m2"][rng.integers(3)]
                n = int(rng.integers(1, 60))
                a = _ints(rng, 2 * sew, n)
                b = _ints(rng, sew, n)
                imm = int(rng.integers(0, 32))
                op2 = {"wv": "v16", "wx": "a5", "wi": str(imm)}[form]
                body = f"""
    vsetvli t1, a4, e{2 * sew}, {_dbl(lmul)}, ta, ma
    vle{2 * sew}.v v8, (a0)
    vsetvli t0, a4, e{sew}, {lmul}, ta, ma
    vle{sew}.v v16, (a1)
    {stem}.{form} v24, v8, {op2}
    vse{sew}.v v24, (a3)"""
                cases.append(Case(f"{stem}_{form}_e{sew}_{len(cases)}", body, [a, b],
                                  n * sew // 8, n, int(rng.integers(0, 200))))
    for ext in ("vzext", "vsext"):
        for f, div in (("vf2", 2), ("vf4", 4), ("vf8", 8)):
            for sew in (16, 32, 64):
                if sew // div < 8:
                    continue
                lmul = "m1" if rng.random() < 0.5 else "m2"
                n = int(rng.integers(1, 40))
                a = _ints(rng, sew // div, n)
                body = f"""
    vsetvli t0, a4, e{sew // div}, mf{div if lmul == 'm1' else div // 2}, ta, ma
    vle{sew // div}.v v8, (a0)
    vsetvli t0, a4, e{sew}, {lmul}, ta, ma
    {ext}.{f} v16, v8
    vse{sew}.v v16, (a3)""" if not (lmul == "m2" and div == 2) else f"""
    vsetvli t0, a4, e{sew // div}, m1, ta, ma
    vle{sew // div}.v v8, (a0)
    vsetvli t0, a4, e{sew}, m2, ta, ma
    {ext}.{f} v16, v8
    vse{sew}.v v16, (a3)"""
                cases.append(Case(f"{ext}_{f}_e{sew}_{len(cases)}", body, [a],
                                  n * sew // 8, n))
    return cases


def _dbl(lmul: str) -> str:
    return {"mf2": "m1", "m1": "m2", "m2": "m4", "m4": "m8"}[lmul]


FAMILIES = {"binary": _binary_cases, "compare": _cmp_cases, "widen": _widen_cases}


@pytest.fixture(scope="module")
def qemu_results() -> dict:
    need_tools()
    out = {}
    for name, gen in FAMILIES.items():
        cases = gen(np.random.default_rng(list(FAMILIES).index(name) + 11))
        out[name] = (cases, run_qemu(cases, VLENS))
    return out


@pytest.mark.parametrize("vlen", VLENS)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_integer_ops_match_qemu(qemu_results: dict, family: str, vlen: int) -> None:
    cases, qemu = qemu_results[family]
    compare(cases, qemu, vlen)
