"""rvvsim vs qemu: strided/indexed/whole-register/mask memory ops, slides, gathers, compress,
mask logic, vcpop/vfirst/vid/viota, integer reductions and scalar <-> element moves."""

from __future__ import annotations

import numpy as np
import pytest

from .harness import Case, compare, need_tools, run_qemu

VLENS = [128, 256, 512, 1024]
LMULS = {8: ["mf2", "m1", "m4"], 16: ["mf2", "m1", "m2"], 32: ["mf2", "m1", "m2", "m8"],
         64: ["m1", "m2", "m4"]}
BIG = 1024  # bytes: one full m8 group at VLEN=1024 is 1024 bytes


def _bits(rng: np.random.Generator, nbytes: int) -> np.ndarray:
    return rng.integers(0, 256, nbytes, dtype=np.uint8)


def _full(sew: int, lmul: str, reg: str, src: str) -> str:
    """Fill a whole register group (vl = VLMAX) so slides/gathers read only defined data."""
    return f"vsetvli t1, zero, e{sew}, {lmul}, ta, ma\n    vle{sew}.v {reg}, ({src})"


def _memory_cases(rng: np.random.Generator) -> list[Case]:
    cases: list[Case] = []

    def add(name: str, body: str, inputs: list[np.ndarray], out: int, n: int, k: int = 0) -> None:
        cases.append(Case(f"{name}_{len(cases)}", body, inputs, out, n, k))

    for sew in (8, 16, 32, 64):
        es = sew // 8
        for _ in range(3):
            lmul = LMULS[sew][rng.integers(len(LMULS[sew]))]
            n, masked = int(rng.integers(1, 60)), bool(rng.random() < 0.5)
            mk = ", v0.t" if masked else ""
            stride = int(rng.choice([2 * es, 3 * es, 0, -es]))
            start = (n - 1) * es if stride < 0 else 0
            body = f"""
    vsetvli t0, a4, e{sew}, {lmul}, tu, mu
    vlm.v v0, (a2)
    vle{sew}.v v8, (a1)
    addi a0, a0, {start}
    vlse{sew}.v v8, (a0), a5{mk}
    vse{sew}.v v8, (a3)"""
            add(f"vlse{sew}", body, [_bits(rng, 3 * n * es), _bits(rng, n * es), _bits(rng, 16)],
                n * es, n, stride)
            ostride = int(rng.choice([2 * es, 3 * es]))
            body = f"""
    vsetvli t0, a4, e{sew}, {lmul}, ta, ma
    vlm.v v0, (a2)
    vle{sew}.v v8, (a0)
    vsse{sew}.v v8, (a3), a5{mk}"""
            add(f"vsse{sew}", body, [_bits(rng, n * es), _bits(rng, 1), _bits(rng, 16)],
                3 * n * es, n, ostride)
            for ieew in (8, 16, 32, 64):
                nel = min(n, 255 // es)
                idx = (rng.integers(0, nel, nel) * es).astype(f"u{ieew // 8}")
                order = rng.choice(["u", "o"])
                ilmul = _emul(lmul, sew, ieew)
                if ilmul is None:
                    continue
                body = f"""
    vsetvli t0, a4, e{sew}, {lmul}, tu, mu
    vlm.v v0, (a2)
    vle{sew}.v v8, (a0)
    vsetvli t0, a4, e{ieew}, {ilmul}, ta, ma
    vle{ieew}.v v16, (a1)
    vsetvli t0, a4, e{sew}, {lmul}, tu, mu
    vl{order}xei{ieew}.v v8, (a0), v16{mk}
    vse{sew}.v v8, (a3)"""
                add(f"vl{order}xei{ieew}_e{sew}", body, [_bits(rng, nel * es), idx,
                                                         _bits(rng, 16)], nel * es, nel)
                perm = (rng.permutation(nel) * es).astype(f"u{ieew // 8}")
                if order == "o":  # ordered stores may collide: the later element wins
                    perm[rng.random(nel) < 0.3] = perm[0]
                body = f"""
    vsetvli t0, a4, e{ieew}, {ilmul}, ta, ma
    vle{ieew}.v v16, (a1)
    vsetvli t0, a4, e{sew}, {lmul}, ta, ma
    vlm.v v0, (a2)
    vle{sew}.v v8, (a0)
    vs{order}xei{ieew}.v v8, (a3), v16{mk}"""
                add(f"vs{order}xei{ieew}_e{sew}", body, [_bits(rng, nel * es), perm,
                                                         _bits(rng, 16)], nel * es, nel)
    for nregs in (1, 2, 4, 8):
        for eew in (8, 32, 64):
            body = f"""
    vl{nregs}re{eew}.v v8, (a0)
    vs{nregs}r.v v8, (a3)"""
            add(f"vl{nregs}re{eew}", body, [_bits(rng, BIG)], BIG, 0)
    for n in (1, 7, 8, 13, 64, 200):
        body = """
    vsetvli t0, a4, e8, m8, ta, ma
    vlm.v v4, (a0)
    vlm.v v5, (a1)
    vmand.mm v6, v4, v5
    vsm.v v6, (a3)"""
        add("vlm_vsm", body, [_bits(rng, 32), _bits(rng, 32)], 32, n)
    return cases


def _emul(lmul: str, sew: int, eew: int) -> str | None:
    lg = {"mf8": -3, "mf4": -2, "mf2": -1, "m1": 0, "m2": 1, "m4": 2, "m8": 3}[lmul]
    e = lg + (eew.bit_length() - sew.bit_length())
    if not -3 <= e <= 3:
        return None
    return f"m{1 << e}" if e >= 0 else f"mf{1 << -e}"


def _perm_cases(rng: np.random.Generator) -> list[Case]:
    cases: list[Case] = []

    def add(name: str, body: str, inputs: list[np.ndarray], out: int, n: int, k: int = 0) -> None:
        cases.append(Case(f"{name}_{len(cases)}", body, inputs, out, n, k))

    for sew in (8, 16, 32, 64):
        es = sew // 8
        for _ in range(2):
            lmul = LMULS[sew][rng.integers(len(LMULS[sew]))]
            for op in ("vslideup.vx", "vslideup.vi", "vslidedown.vx", "vslidedown.vi",
                       "vslide1up.vx", "vslide1down.vx", "vrgather.vv", "vrgather.vx",
                       "vrgather.vi", "vrgatherei16.vv"):
                n, masked = int(rng.integers(1, 70)), bool(rng.random() < 0.4)
                if op == "vrgatherei16.vv" and _emul(lmul, sew, 16) is None:
                    continue
                k = int(rng.integers(0, 80))
                imm = int(rng.integers(0, 32))
                opnd = {"vx": "a5", "vi": str(imm), "vv": "v16"}[op.split(".")[1]]
                body = f"""
    {_full(sew, lmul, "v8", "a0")}
    {_full(sew, lmul, "v24", "a1")}
    {_full(16 if "ei16" in op else sew, _emul(lmul, sew, 16) if "ei16" in op else lmul,
           "v16", "a2")}
    vsetvli t0, a4, e{sew}, {lmul}, tu, mu
    vlm.v v0, (a1)
    {op} v24, v8, {opnd}{", v0.t" if masked else ""}
    vse{sew}.v v24, (a3)"""
                idx = rng.integers(0, 80, BIG // 2).astype(np.uint16 if "ei16" in op else
                                                           f"u{es}" if sew > 8 else np.uint8)
                add(op.replace(".", "_") + f"_e{sew}", body, [_bits(rng, BIG), _bits(rng, BIG),
                                                             idx], n * es, n, k)
            if sew >= 32:  # fp slide1: the scalar enters as element 0 / vl-1
                for op in ("vfslide1up.vf", "vfslide1down.vf"):
                    n, masked = int(rng.integers(1, 70)), bool(rng.random() < 0.4)
                    fl = "flw" if sew == 32 else "fld"
                    body = f"""
    {_full(sew, lmul, "v8", "a0")}
    {_full(sew, lmul, "v24", "a1")}
    {fl} fa0, 0(a2)
    vsetvli t0, a4, e{sew}, {lmul}, tu, mu
    vlm.v v0, (a1)
    {op} v24, v8, fa0{", v0.t" if masked else ""}
    vse{sew}.v v24, (a3)"""
                    add(op.replace(".", "_") + f"_e{sew}", body,
                        [_bits(rng, BIG), _bits(rng, BIG), _bits(rng, 8)], n * es, n)
            # vsetvl: the vtype comes from a register (e{sew}, this LMUL, ta, ma = 0xc0)
            code = {8: 0, 16: 1, 32: 2, 64: 3}[sew] << 3 | {"mf8": 5, "mf4": 6, "mf2": 7, "m1": 0,
                                                             "m2": 1, "m4": 2, "m8": 3}[lmul]
            n = int(rng.integers(1, 70))
            body = f"""
    li t1, {code | 0xC0}
    vsetvl t0, a4, t1
    vle{sew}.v v8, (a0)
    vadd.vi v8, v8, 3
    vse{sew}.v v8, (a3)
    csrr t2, vl
    csrr t3, vtype
    add a3, a3, {n * es}
    sd t0, 0(a3)
    sd t2, 8(a3)
    sd t3, 16(a3)"""
            add(f"vsetvl_e{sew}", body, [_bits(rng, n * es)], n * es + 24, n)
            n = int(rng.integers(1, 70))
            body = f"""
    vsetvli t0, a4, e{sew}, {lmul}, ta, ma
    vle{sew}.v v8, (a0)
    vlm.v v4, (a2)
    vcompress.vm v24, v8, v4
    vcpop.m a6, v4
    vsetvli t0, a6, e{sew}, {lmul}, ta, ma
    vse{sew}.v v24, (a3)"""
            add(f"vcompress_e{sew}", body, [_bits(rng, n * es), _bits(rng, 1), _bits(rng, 16)],
                n * es, n)
    for n in (1, 5, 9, 33, 100):
        for stem in ("vmand", "vmnand", "vmandn", "vmxor", "vmor", "vmnor", "vmorn", "vmxnor"):
            body = f"""
    vsetvli t0, a4, e8, m4, ta, ma
    vlm.v v4, (a0)
    vlm.v v5, (a1)
    {stem}.mm v6, v4, v5
    vmv1r.v v0, v6
    vmv.v.i v8, 0
    vmerge.vim v8, v8, 1, v0
    vse8.v v8, (a3)"""
            add(f"{stem}_{n}", body, [_bits(rng, 16), _bits(rng, 16)], n, n)
        masked = n % 2 == 1
        mk = ", v0.t" if masked else ""
        body = f"""
    vsetvli t0, a4, e16, m2, tu, mu
    vlm.v v0, (a1)
    vlm.v v4, (a0)
    vcpop.m a6, v4{mk}
    vfirst.m a7, v4{mk}
    vmnot.m v5, v4
    vfirst.m t2, v5
    vmclr.m v6
    vmset.m v7
    vmclr.m v9
    vmsbf.m v6, v4{mk}
    vmsif.m v7, v4{mk}
    vmsof.m v9, v4{mk}
    vmv1r.v v0, v6
    vmv.v.i v10, 0
    vmerge.vim v10, v10, 1, v0
    vmv1r.v v0, v7
    vmerge.vim v10, v10, 2, v0
    vmv1r.v v0, v9
    vmerge.vim v10, v10, 4, v0
    slli t3, a4, 2
    add t3, t3, a3
    addi t3, t3, 24
    vse16.v v10, (t3)
    sd a6, 0(a3)
    sd a7, 8(a3)
    sd t2, 16(a3)
    vle16.v v8, (a2)
    vid.v v8{mk}
    vle16.v v16, (a2)
    viota.m v16, v4{mk}
    addi a3, a3, 24
    vse16.v v8, (a3)
    slli t3, a4, 1
    add a3, a3, t3
    vse16.v v16, (a3)"""
        zeros = np.zeros(16, np.uint8) if n == 9 else _bits(rng, 16)
        add(f"maskscalar_{n}", body, [zeros, _bits(rng, 16), _bits(rng, 256)], 24 + 6 * n, n)
    for sew in (8, 16, 32, 64):
        es = sew // 8
        for stem in ("vredsum", "vredand", "vredor", "vredxor", "vredmax", "vredmin",
                     "vredmaxu", "vredminu", "vwredsum", "vwredsumu"):
            if stem.startswith("vw") and sew == 64:
                continue
            n, masked = int(rng.integers(1, 70)), bool(rng.random() < 0.5)
            lmul = LMULS[sew][rng.integers(len(LMULS[sew]))]
            ow = 2 * sew if stem.startswith("vw") else sew
            body = f"""
    vsetvli t0, a4, e{sew}, {lmul}, ta, ma
    vle{sew}.v v8, (a0)
    vlm.v v0, (a2)
    vsetivli zero, 1, e{ow}, m1, ta, ma
    vle{ow}.v v16, (a1)
    vsetvli t0, a4, e{sew}, {lmul}, ta, ma
    {stem}.vs v24, v8, v16{", v0.t" if masked else ""}
    vsetivli zero, 1, e{ow}, m1, ta, ma
    vse{ow}.v v24, (a3)"""
            add(f"{stem}_e{sew}", body, [_bits(rng, n * es), _bits(rng, 8), _bits(rng, 16)],
                ow // 8, n)
        body = f"""
    vsetvli t0, a4, e{sew}, m1, tu, mu
    vle{sew}.v v8, (a0)
    vmv.x.s a6, v8
    sd a6, 0(a3)
    vmv.s.x v8, a5
    addi a3, a3, 8
    vse{sew}.v v8, (a3)"""
        add(f"vmv_x_s_e{sew}", body, [_bits(rng, 8 * es)], 8 + 8 * es, 8,
            int(rng.integers(-(2**63), 2**63)))
    return cases


FAMILIES = {"memory": _memory_cases, "permute": _perm_cases}


@pytest.fixture(scope="module")
def qemu_results() -> dict:
    need_tools()
    out = {}
    for i, (name, gen) in enumerate(FAMILIES.items()):
        cases = gen(np.random.default_rng(200 + i))
        out[name] = (cases, run_qemu(cases, VLENS))
    return out


@pytest.mark.parametrize("vlen", VLENS)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_memory_and_permutation_ops_match_qemu(qemu_results: dict, family: str,
                                                vlen: int) -> None:
    cases, qemu = qemu_results[family]
    compare(cases, qemu, vlen)
