"""rvvsim vs qemu on random instruction sequences ("soups") that change SEW, LMUL and vl
between every instruction, under tail/mask-undisturbed policies so every element stays
defined and the whole register file can be compared. This exercises what per-family tests do
not: vtype changes between dependent instructions and the simulator's cached view plans."""

from __future__ import annotations

import numpy as np
import pytest

from .harness import Case, compare, need_tools, run_qemu

VLENS = [128, 256, 512, 1024]
GROUPS = ["v8", "v16", "v24"]
LMULS = ["mf2", "m1", "m2", "m4", "m8"]
AVLS = [0, 1, 3, 7, 17, 64, 1000]
BINARY = ["vadd.vv", "vsub.vv", "vand.vv", "vor.vv", "vxor.vv", "vsll.vv", "vsrl.vv", "vsra.vv",
          "vmul.vv", "vmulh.vv", "vmulhu.vv", "vdivu.vv", "vremu.vv", "vdiv.vv", "vmin.vv",
          "vmaxu.vv", "vadd.vx", "vmul.vx", "vsrl.vi", "vrsub.vi", "vmacc.vv"]
FP_BINARY = ["vfadd.vv", "vfsub.vv", "vfmul.vv", "vfdiv.vv", "vfmin.vv", "vfmax.vv",
             "vfsgnjx.vv", "vfmacc.vv", "vfnmsac.vv", "vfmadd.vv", "vfmul.vf", "vfrsub.vf",
             "vfmacc.vf", "vfsqrt.v", "vfcvt.x.f.v", "vfcvt.f.x.v", "vfclass.v", "vfredosum.vs",
             "vfredusum.vs", "vfredmax.vs", "vmfle.vv"]
FULL = 3 * 1024  # three m8 groups at VLEN=1024


def _fp_op(rng: np.random.Generator, d: str, s1: str, s2: str, masked: str) -> str:
    op = str(rng.choice(FP_BINARY))
    if op.endswith(".v"):
        return f"{op} {d}, {s1}{masked}"
    if op == "vmfle.vv":  # a compare into v0 would leave undefined tail bits: merge instead
        return f"vfmerge.vfm {d}, {s1}, fa0, v0"
    if op.endswith(".vf"):
        return f"{op} {d}, fa0, {s1}{masked}" if "macc" in op else f"{op} {d}, {s1}, fa0{masked}"
    return f"{op} {d}, {s1}, {s2}{masked}"


def _fp_soup(rng: np.random.Generator, nops: int) -> str:
    lines = ["fld fa0, 0(a1)"]
    for j, g in enumerate(GROUPS):
        lines += ["vsetvli t0, zero, e8, m8, tu, mu", f"li t2, {j}", "mul t2, t2, t0",
                  "add t1, a0, t2", f"vle8.v {g}, (t1)"]
    lines += ["vlm.v v0, (a1)"]
    for _ in range(nops):
        sew = int(rng.choice([32, 64]))
        lmul = str(rng.choice([m for m in LMULS if not (m == "mf2" and sew == 64)]))
        lines += [f"li t0, {int(rng.choice(AVLS))}", f"vsetvli zero, t0, e{sew}, {lmul}, tu, mu"]
        if sew == 32:
            lines.append("flw fa0, 8(a1)")
        else:
            lines.append("fld fa0, 16(a1)")
        d, s1, s2 = (str(x) for x in rng.choice(GROUPS, 3))
        lines.append(_fp_op(rng, d, s1, s2, ", v0.t" if rng.random() < 0.3 else ""))
    for j, g in enumerate(GROUPS):
        lines += ["vsetvli t0, zero, e8, m8, tu, mu", f"li t2, {j}", "mul t2, t2, t0",
                  "add t1, a3, t2", f"vse8.v {g}, (t1)"]
    return "\n".join("    " + ln for ln in lines)


def _soup(rng: np.random.Generator, nops: int) -> str:
    lines = [f"li a6, {int(rng.integers(0, 40))}"]  # the slide amount
    for j, g in enumerate(GROUPS):  # every register of the three groups starts defined
        lines += ["vsetvli t0, zero, e8, m8, tu, mu", f"li t2, {j}", "mul t2, t2, t0",
                  "add t1, a0, t2", f"vle8.v {g}, (t1)"]
    lines += ["vlm.v v0, (a1)"]
    for _ in range(nops):
        sew = int(rng.choice([8, 16, 32, 64]))
        lmul = str(rng.choice([m for m in LMULS if not (m == "mf2" and sew == 64)]))
        lines += [f"li t0, {int(rng.choice(AVLS))}", f"vsetvli zero, t0, e{sew}, {lmul}, tu, mu"]
        d, s1, s2 = (str(x) for x in rng.choice(GROUPS, 3))
        masked = ", v0.t" if rng.random() < 0.3 else ""
        kind = rng.random()
        if kind < 0.6:
            op = str(rng.choice(BINARY))
            third = {"vv": s2, "vx": "a5", "vi": str(int(rng.integers(0, 16)))}[op[-2:]]
            lines.append(f"{op} {d}, {s1}, {third}{masked}")
        elif kind < 0.7:
            lines.append(f"vmerge.vvm {d}, {s1}, {s2}, v0")
        elif kind < 0.8:
            lines.append(f"vslidedown.vx {d}, {s1}, a6{masked}")
        elif kind < 0.9:  # destination distinct from the sources, as the spec requires
            d, s1, s2 = (str(x) for x in rng.choice(GROUPS, 3, replace=False))
            if rng.random() < 0.5:
                lines.append(f"vslideup.vx {d}, {s1}, a6{masked}")
            else:
                lines.append(f"vrgather.vv {d}, {s1}, {s2}{masked}")
        else:
            lines.append(f"vredsum.vs {d}, {s1}, {s2}{masked}")
    for j, g in enumerate(GROUPS):
        lines += ["vsetvli t0, zero, e8, m8, tu, mu", f"li t2, {j}", "mul t2, t2, t0",
                  "add t1, a3, t2", f"vse8.v {g}, (t1)"]
    return "\n".join("    " + ln for ln in lines)


def _cases() -> list[Case]:
    rng = np.random.default_rng(99)
    cases = []
    for i in range(30):
        data = rng.integers(0, 256, FULL, dtype=np.uint8)
        data[rng.random(FULL) < 0.2] = 0  # zeros for the divisions and shifts
        mask = rng.integers(0, 256, 128, dtype=np.uint8)
        cases.append(Case(f"soup_{i}", _soup(rng, 60), [data, mask], FULL, 0,
                          int(rng.integers(-(2**63), 2**63))))
    for i in range(30):
        # float data: normal values of both widths with NaN/inf/zero/subnormal bytes salted in
        data = (rng.standard_normal(FULL // 4) * 4).astype(np.float32).view(np.uint8).copy()
        data[rng.random(FULL) < 0.01] = 0xFF
        data[rng.random(FULL) < 0.01] = 0
        mask = rng.integers(0, 256, 128, dtype=np.uint8)
        mask[8:24] = np.array([1.5, -2.25, 3.0, 0.5], np.float32).view(np.uint8)
        cases.append(Case(f"fsoup_{i}", _fp_soup(rng, 50), [data, mask], FULL, 0))
    return cases


@pytest.fixture(scope="module")
def qemu_results() -> tuple[list[Case], dict]:
    need_tools()
    cases = _cases()
    return cases, run_qemu(cases, VLENS)


@pytest.mark.parametrize("vlen", VLENS)
def test_random_vtype_changing_sequences_match_qemu(qemu_results: tuple, vlen: int) -> None:
    cases, qemu = qemu_results
    compare(cases, qemu, vlen)
