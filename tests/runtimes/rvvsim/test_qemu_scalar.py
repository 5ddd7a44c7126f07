"""rvvsim vs qemu: RV64IM integer ops, loads/stores, branches/calls and F/D scalar ops."""

from __future__ import annotations

import numpy as np
import pytest

from .harness import Case, compare, need_tools, run_qemu
from .test_qemu_fp import _floats

VLENS = [128, 1024]  # scalar code does not depend on VLEN; two widths prove it
RRR = ("add sub mul mulh mulhu mulhsu div divu rem remu and or xor sll srl sra slt sltu addw "
       "subw mulw sllw srlw sraw divw divuw remw remuw").split()
RRI = {"addi": (-2048, 2047), "andi": (-2048, 2047), "ori": (-2048, 2047),
       "xori": (-2048, 2047), "slti": (-2048, 2047), "sltiu": (-2048, 2047), "slli": (0, 63),
       "srli": (0, 63), "srai": (0, 63), "addiw": (-2048, 2047), "slliw": (0, 31),
       "srliw": (0, 31), "sraiw": (0, 31)}
UNARY = "mv neg not seqz snez sext.w negw sltz sgtz".split()
LOADS = "ld lw lwu lh lhu lb lbu".split()
NV = 8


def _i64(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.integers(-(2**63), 2**63, n, dtype=np.int64)
    edges = np.array([0, 1, -1, -(2**63), 2**63 - 1, 2**31, -(2**31), 2**32 - 1, 7, -7],
                     np.int64)
    pick = rng.random(n) < 0.4
    x[pick] = edges[rng.integers(0, edges.size, pick.sum())]
    return x


def _int_cases(rng: np.random.Generator) -> list[Case]:
    cases: list[Case] = []
    for op in RRR + list(RRI) + UNARY:
        lines = []
        for i in range(NV):
            lines += [f"ld t0, {8 * i}(a0)", f"ld t1, {8 * i}(a1)"]
            if op in RRR:
                lines.append(f"{op} t2, t0, t1")
            elif op in RRI:
                lo, hi = RRI[op]
                lines.append(f"{op} t2, t0, {int(rng.integers(lo, hi + 1))}")
            else:
                lines.append(f"{op} t2, t0")
            lines.append(f"sd t2, {8 * i}(a3)")
        cases.append(Case(f"{op.replace('.', '_')}_{len(cases)}", "\n".join(lines),
                          [_i64(rng, NV), _i64(rng, NV)], 8 * NV))
    for op in LOADS:
        lines = []
        for i in range(NV):
            off = int(rng.integers(0, 56))
            off -= off % {"ld": 8, "lw": 4, "lwu": 4, "lh": 2, "lhu": 2}.get(op, 1)
            lines += [f"{op} t0, {off}(a0)", f"sd t0, {8 * i}(a3)"]
        cases.append(Case(f"{op}_{len(cases)}", "\n".join(lines), [_i64(rng, NV)], 8 * NV))
    stores = "\n".join(f"ld t0, {8 * i}(a0)\n{op} t0, {o}(a3)" for i, (op, o) in
                       enumerate([("sd", 0), ("sw", 8), ("sh", 14), ("sb", 17), ("sw", 20),
                                  ("sh", 30), ("sb", 31), ("sd", 40)]))
    cases.append(Case("stores", stores, [_i64(rng, NV)], 8 * NV))
    consts = [0, 1, -1, 2047, -2048, 2048, 0x12345678, -0x80000000, 0x7FFFFFFF,
              0x123456789ABCDEF0, -0x123456789ABCDEF1, 2**63 - 1, -(2**63), 0xFFFFFFFF]
    body = "\n".join(f"li t0, {v}\nsd t0, {8 * i}(a3)" for i, v in enumerate(consts))
    body += f"\nlui t1, 0x80000\nsd t1, {8 * len(consts)}(a3)"
    cases.append(Case("li_lui", body, [], 8 * len(consts) + 8))
    # control flow: loop with every branch kind, a call with a stack frame, numeric labels
    body = """
    addi sp, sp, -32
    sd ra, 24(sp)
    sd s0, 16(sp)
    li s0, 0
    li t0, 0
1:  ld t1, 0(a0)
    ld t2, 0(a1)
    blt t1, t2, 2f
    addi s0, s0, 1
    slli s0, s0, 1
2:  bge t1, t2, 3f
    addi s0, s0, 2
    slli s0, s0, 1
3:  bltu t1, t2, 4f
    addi s0, s0, 3
    slli s0, s0, 1
4:  bgeu t1, t2, 5f
    addi s0, s0, 4
    slli s0, s0, 1
5:  beq t1, t2, 6f
    addi s0, s0, 5
    slli s0, s0, 1
6:  bne t1, t2, 7f
    addi s0, s0, 6
    slli s0, s0, 1
7:  bgt t1, t2, 8f
    addi s0, s0, 7
    slli s0, s0, 1
8:  ble t1, t2, 9f
    addi s0, s0, 8
    slli s0, s0, 1
9:  bgtu t1, t2, 10f
    addi s0, s0, 9
    slli s0, s0, 1
10: bleu t1, t2, 11f
    addi s0, s0, 10
    slli s0, s0, 1
11: beqz t1, 12f
    addi s0, s0, 11
    slli s0, s0, 1
12: bnez t2, 13f
    addi s0, s0, 12
    slli s0, s0, 1
13: bltz t1, 14f
    addi s0, s0, 13
    slli s0, s0, 1
14: bgez t2, 15f
    addi s0, s0, 14
    slli s0, s0, 1
15: blez t1, 16f
    addi s0, s0, 15
    slli s0, s0, 1
16: bgtz t2, 17f
    addi s0, s0, 16
    slli s0, s0, 1
17: slli s0, s0, 1
    addi a0, a0, 8
    addi a1, a1, 8
    addi t0, t0, 1
    li t3, 8
    bne t0, t3, 1b
    mv a0, s0
    call helper_double
    jal helper_double
    jal ra, helper_double
    sd a0, 0(a3)
    ld s0, 16(sp)
    ld ra, 24(sp)
    addi sp, sp, 32"""
    a, b = _i64(rng, NV), _i64(rng, NV)
    b[::3] = a[::3]
    cases.append(Case("branches", body, [a, b], 8))
    return cases


F_BIN = "fadd fsub fmul fdiv fmin fmax fsgnj fsgnjn fsgnjx".split()
F_FMA = "fmadd fmsub fnmadd fnmsub".split()
F_CMP = "feq flt fle".split()
RMS = ["rne", "rtz", "rdn", "rup", "rmm"]


def _fp_cases(rng: np.random.Generator) -> list[Case]:
    cases: list[Case] = []
    for k, w in (("s", 32), ("d", 64)):
        fl, fs, es = ("flw", "fsw", 4) if w == 32 else ("fld", "fsd", 8)
        a, b, c = (_floats(rng, w, NV) for _ in range(3))

        def loads(i: int, fl: str = fl, es: int = es) -> list[str]:
            return [f"{fl} ft0, {es * i}(a0)", f"{fl} ft1, {es * i}(a1)",
                    f"{fl} ft2, {es * i}(a2)"]
        for op in F_BIN + F_FMA + ["fsqrt", "fmv", "fneg", "fabs"]:
            lines = []
            for i in range(NV):
                lines += loads(i)
                if op in F_BIN:
                    lines.append(f"{op}.{k} ft3, ft0, ft1")
                elif op in F_FMA:
                    lines.append(f"{op}.{k} ft3, ft0, ft1, ft2")
                else:
                    lines.append(f"{op}.{k} ft3, ft0")
                lines.append(f"{fs} ft3, {es * i}(a3)")
            cases.append(Case(f"{op}_{k}_{len(cases)}", "\n".join(lines), [a, b, c], es * NV))
        for op in F_CMP + ["fclass"]:
            lines = []
            for i in range(NV):
                lines += loads(i)
                lines.append(f"{op}.{k} t0, ft0, ft1" if op != "fclass" else f"fclass.{k} t0, ft0")
                lines.append(f"sd t0, {8 * i}(a3)")
            bb = np.where(rng.random(NV) < 0.4, a, b).astype(a.dtype)
            cases.append(Case(f"{op}_{k}_{len(cases)}", "\n".join(lines), [a, bb, c], 8 * NV))
        for ik in ("w", "wu", "l", "lu"):
            for rm in RMS:
                lines = []
                vals = np.concatenate([_floats(rng, w, NV - 4), np.array([2.5, -2.5, 0.5, -0.5],
                                                                          a.dtype)])
                for i in range(NV):
                    lines += [f"{fl} ft0, {es * i}(a0)", f"fcvt.{ik}.{k} t0, ft0, {rm}",
                              f"sd t0, {8 * i}(a3)"]
                cases.append(Case(f"fcvt_{ik}_{k}_{rm}_{len(cases)}", "\n".join(lines), [vals],
                                  8 * NV))
            lines = []
            for i in range(NV):
                lines += [f"ld t0, {8 * i}(a0)", f"fcvt.{k}.{ik} ft0, t0", f"{fs} ft0, {es * i}(a3)"]
            cases.append(Case(f"fcvt_{k}_{ik}_{len(cases)}", "\n".join(lines), [_i64(rng, NV)],
                              es * NV))
        # every static rounding mode, and the dynamic one through fsrmi, on rounding ops
        for rm in RMS[1:]:
            for op in ("fadd", "fsub", "fmul", "fdiv", "fmadd", "fnmsub", "fsqrt"):
                lines = []
                for i in range(NV):
                    lines += loads(i)
                    srcs = {"fmadd": "ft0, ft1, ft2", "fnmsub": "ft0, ft1, ft2",
                            "fsqrt": "ft0"}.get(op, "ft0, ft1")
                    if i % 2:
                        lines.append(f"{op}.{k} ft3, {srcs}, {rm}")
                    else:
                        lines += [f"fsrmi {RMS.index(rm)}", f"{op}.{k} ft3, {srcs}", "fsrmi 0"]
                    lines.append(f"{fs} ft3, {es * i}(a3)")
                aa, bb, cc = (_floats(rng, w, NV) for _ in range(3))
                if op == "fsqrt":
                    aa = np.abs(aa)
                bb[:2] = aa[:2]  # exact cancellation: the sign of zero depends on the mode
                cases.append(Case(f"{op}_{k}_{rm}_{len(cases)}", "\n".join(lines), [aa, bb, cc],
                                  es * NV))
            lines = []
            for i in range(NV):
                if w == 64:
                    lines += [f"fld ft0, {8 * i}(a0)", f"fcvt.s.d ft1, ft0, {rm}",
                              f"fsw ft1, {4 * i}(a3)"]
                wu_rm = f", {rm}" if k == "s" else ""  # int32 -> double is exact: no rm
                lines += [f"ld t0, {8 * i}(a1)", f"fcvt.{k}.l ft2, t0, {rm}",
                          f"{fs} ft2, {32 + es * i}(a3)", f"fcvt.{k}.wu ft2, t0{wu_rm}",
                          f"{fs} ft2, {32 + es * NV + es * i}(a3)"]
            big = _floats(rng, 64, NV)
            big[:3] = [3.4028235677973366e38, -3.4028235677973366e38, 1e-46]  # overflow/tiny
            cases.append(Case(f"fcvt_rm_{k}_{rm}_{len(cases)}", "\n".join(lines),
                              [big, _i64(rng, NV)], 32 + 2 * es * NV))
        lines = []
        for i in range(NV):
            if w == 32:
                lines += [f"flw ft0, {4 * i}(a0)", "fcvt.d.s ft1, ft0", f"fsd ft1, {8 * i}(a3)",
                          "fmv.x.w t0, ft0", f"sd t0, {64 + 8 * i}(a3)", f"ld t1, {8 * i}(a1)",
                          "fmv.w.x ft2, t1", f"fsw ft2, {128 + 4 * i}(a3)"]
            else:
                lines += [f"fld ft0, {8 * i}(a0)", "fcvt.s.d ft1, ft0", f"fsw ft1, {4 * i}(a3)",
                          "fmv.x.d t0, ft0", f"sd t0, {64 + 8 * i}(a3)", f"ld t1, {8 * i}(a1)",
                          "fmv.d.x ft2, t1", f"fsd ft2, {128 + 8 * i}(a3)"]
        cases.append(Case(f"fmove_{k}", "\n".join(lines), [a, _i64(rng, NV)], 192))
    return cases


HELPER = Case("helper_double", "add a0, a0, a0", [], 8)
FAMILIES = {"int": _int_cases, "fp": _fp_cases}


@pytest.fixture(scope="module")
def qemu_results() -> dict:
    need_tools()
    out = {}
    for i, (name, gen) in enumerate(FAMILIES.items()):
        cases = gen(np.random.default_rng(300 + i)) + [HELPER]
        out[name] = (cases, run_qemu(cases, VLENS))
    return out


@pytest.mark.parametrize("vlen", VLENS)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_scalar_ops_match_qemu(qemu_results: dict, family: str, vlen: int) -> None:
    cases, qemu = qemu_results[family]
    compare(cases, qemu, vlen)
