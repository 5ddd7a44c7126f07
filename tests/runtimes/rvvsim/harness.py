"""Differential harness: run the same assembly cases under qemu-riscv64 and under rvvsim.

Every case is one function ``void f(in0, in1, in2, out, n, k)`` (a0-a5). All cases of a family
go into one ``.s`` file and one static C driver with the inputs compiled in; the driver fills
``out`` with 0xAA, calls each case and writes the raw output bytes to stdout. One build per
family, one qemu run per VLEN keeps the suite fast. The simulator runs the same ``.s`` text.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from portc.runtimes.rvvsim import Memory, RunStats, RvvMachine, parse_program

from ...conftest import need

CC = "riscv64-linux-gnu-gcc"
QEMU = "qemu-riscv64"
FILL = 0xAA


def need_tools() -> None:
    need(shutil.which(QEMU) is not None, QEMU)
    need(shutil.which(CC) is not None, CC)


@dataclass
class Case:
    """One function: asm body (no label/ret), up to three input buffers, output size, n, k."""

    name: str
    body: str
    inputs: list[np.ndarray] = field(default_factory=list)
    out_bytes: int = 256
    n: int = 0
    k: int = 0


def assembly(cases: list[Case]) -> str:
    parts = ["    .text", "    .p2align 2"]
    for c in cases:
        parts += [f"    .globl {c.name}", f"    .type {c.name}, @function", f"{c.name}:",
                  c.body.strip("\n"), "    ret", f"    .size {c.name}, .-{c.name}"]
    return "\n".join(parts) + "\n"


def _c_array(name: str, data: bytes) -> str:
    body = ",".join(str(b) for b in data) or "0"
    return f"static unsigned char {name}[] __attribute__((aligned(64))) = {{{body}}};"


def driver(cases: list[Case]) -> str:
    lines = ["#include <stdio.h>", "#include <string.h>"]
    lines.append("#define W(p, n) (fwrite(p, 1, n, stdout), fflush(stdout))")
    for i, c in enumerate(cases):
        lines.append(f"void {c.name}(void*, void*, void*, void*, long, long);")
        for j in range(3):
            data = c.inputs[j].tobytes() if j < len(c.inputs) else b""
            lines.append(_c_array(f"in{j}_{i}", data))
    big = max(c.out_bytes for c in cases)
    lines.append(f"static unsigned char out[{big}] __attribute__((aligned(64)));")
    lines.append("int main(void) {")
    for i, c in enumerate(cases):
        lines.append(f"  memset(out, {FILL}, {c.out_bytes});")
        lines.append(f"  {c.name}(in0_{i}, in1_{i}, in2_{i}, out, {c.n}L, {c.k}L);")
        lines.append(f"  W(out, {c.out_bytes});")
    lines += ["  return 0;", "}"]
    return "\n".join(lines) + "\n"


def run_qemu(cases: list[Case], vlens: list[int]) -> dict[int, list[bytes]]:
    """Build once, run once per VLEN; returns each case's output bytes per VLEN."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "k.s").write_text(assembly(cases))
        (d / "main.c").write_text(driver(cases))
        subprocess.run([CC, "-march=rv64gcv", "-mabi=lp64d", "-static", "-O1", "-o",
                        str(d / "t"), str(d / "main.c"), str(d / "k.s")], check=True,
                       capture_output=True)
        res: dict[int, list[bytes]] = {}
        for vlen in vlens:
            cpu = (f"rv64,v=true,vlen={vlen},elen=64,vext_spec=v1.0,rvv_ta_all_1s=true,"
                   f"rvv_ma_all_1s=true")
            proc = subprocess.run([QEMU, "-L", "/usr/riscv64-linux-gnu", "-cpu", cpu,
                                   str(d / "t")], capture_output=True)
            out = proc.stdout
            if proc.returncode:
                pos, k = 0, 0
                while k < len(cases) and pos + cases[k].out_bytes <= len(out):
                    pos += cases[k].out_bytes
                    k += 1
                raise AssertionError(f"qemu (VLEN={vlen}) failed with {proc.returncode} in case "
                                     f"{cases[k].name}:{cases[k].body}\n{proc.stderr.decode()}")
            chunks, pos = [], 0
            for c in cases:
                chunks.append(out[pos:pos + c.out_bytes])
                pos += c.out_bytes
            assert pos == len(out), (pos, len(out))
            res[vlen] = chunks
    return res


def run_sim(cases: list[Case], vlen: int, batch_loops: bool = True,
            stats: list[RunStats] | None = None) -> list[bytes]:
    """The same cases on rvvsim (a fresh Memory per case, one parse per call); ``stats``
    collects each call's ``RunStats``."""
    program = parse_program(assembly(cases), "cases.s")
    outs = []
    machine = None
    for c in cases:
        mem = Memory()
        ptrs = []
        for j in range(3):
            data = c.inputs[j] if j < len(c.inputs) else np.zeros(1, np.uint8)
            raw = np.ascontiguousarray(data).view(np.uint8).ravel()
            addr = mem.alloc(f"in{j}", max(raw.size, 1))
            mem.write(addr, raw)
            ptrs.append(addr)
        out = mem.alloc("out", c.out_bytes)
        mem.write(out, np.full(c.out_bytes, FILL, np.uint8))
        if machine is None:
            machine = RvvMachine(program, mem, vlen, batch_loops=batch_loops)
        machine.memory = mem
        st = machine.call(c.name, ptrs + [out, c.n, c.k])
        if stats is not None:
            stats.append(st)
        outs.append(mem.read(out, np.uint8, c.out_bytes).tobytes())
    return outs


def compare(cases: list[Case], qemu: dict[int, list[bytes]], vlen: int) -> None:
    """Assert rvvsim == qemu byte for byte, naming the first differing case and byte."""
    sim = run_sim(cases, vlen)
    bad = []
    for c, q, s in zip(cases, qemu[vlen], sim, strict=True):
        if q != s:
            qa, sa = np.frombuffer(q, np.uint8), np.frombuffer(s, np.uint8)
            k = int(np.argmax(qa != sa))
            bad.append(f"{c.name} (n={c.n}): first difference at byte {k}: qemu "
                       f"{q[k:k + 8].hex()} sim {s[k:k + 8].hex()}\n{c.body}")
    assert not bad, f"VLEN={vlen}: {len(bad)} of {len(cases)} cases differ:\n" + "\n".join(
        bad[:5])
