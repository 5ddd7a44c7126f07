"""Runtime ``qemu`` of the rvv target: the bundle's ``kernels.s`` + generated ``driver.c``
cross-built with ``riscv64-linux-gnu-gcc`` and run under ``qemu-riscv64``.

The same text rvvsim executes is assembled by GNU as and run on qemu's RVV 1.0 model with
agnostic elements filled with ones (``rvv_ta_all_1s``/``rvv_ma_all_1s``), so a kernel that
relies on tail elements misbehaves here as it would on hardware. Inputs and weights travel as
raw little-endian files named after their buffers; the driver writes outputs the same way. A
traced executable (``trace=True``) is built from a driver that also writes every kernel's
output buffers as the kernel returns (the bundle's own ``driver.c`` is not changed).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from portc.compiler.artifact import Artifact
from portc.compiler.errors import BundleError, PortcError

GCC = "riscv64-linux-gnu-gcc"
QEMU = "qemu-riscv64"
GCC_FLAGS = ("-march=rv64gcv", "-mabi=lp64d", "-O2", "-static", "-Wall", "-Wextra")
#: seconds a single qemu run may take before it is killed
RUN_TIMEOUT_S = 600


class QemuError(PortcError):
    """The cross-build or the qemu run failed (message carries the tool's output)."""


def unavailable() -> str | None:
    """None when both tools are on PATH, else which one is missing and how to get it."""
    for tool, pkg in ((GCC, "gcc-riscv64-linux-gnu libc6-dev-riscv64-cross"),
                      (QEMU, "qemu-user")):
        if shutil.which(tool) is None:
            return f"{tool} not found (apt-get install {pkg})"
    return None


def qemu_cpu(vlen: int) -> str:
    return (f"rv64,v=true,vlen={vlen},elen=64,vext_spec=v1.0,rvv_ta_all_1s=true,"
            f"rvv_ma_all_1s=true")


def build(files: Mapping[str, str], sources: list[str], workdir: Path,
          exe_name: str = "model") -> Path:
    """Write ``files`` into ``workdir`` and link ``sources`` into a static executable."""
    for name, text in files.items():
        (workdir / name).write_text(text)
    exe = workdir / exe_name
    cmd = [GCC, *GCC_FLAGS, "-o", str(exe), *[str(workdir / s) for s in sources]]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise QemuError(f"{GCC} failed building {', '.join(sources)}:\n{proc.stderr[-4000:]}")
    if proc.stderr.strip():
        raise QemuError(f"{GCC} warned on {', '.join(sources)} (the driver must be -Wall "
                        f"clean):\n{proc.stderr[-4000:]}")
    return exe


def run(exe: Path, args: list[str], vlen: int, timeout: int = RUN_TIMEOUT_S) -> str:
    cmd = [QEMU, "-cpu", qemu_cpu(vlen), str(exe), *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise QemuError(f"qemu-riscv64 ran past {timeout} s on {exe.name}") from e
    if proc.returncode != 0:
        raise QemuError(f"qemu-riscv64 exited with {proc.returncode} running {exe.name} "
                        f"(VLEN={vlen}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return proc.stdout


class QemuExecutable:
    """Build once at load; every run writes the inputs, runs qemu, reads the outputs."""

    def __init__(self, artifact: Artifact, trace: bool = False) -> None:
        from portc.compiler.kernel_targets import BufferLayout
        from portc.compiler.target_rvv import make_driver

        why = unavailable()
        if why:
            raise QemuError(f"the qemu runtime is unavailable: {why}")
        m = artifact.manifest
        try:
            self.vlen = int(m["rvv"]["vlen"])
            asm, driver = m["rvv"]["asm"], m["rvv"]["driver"]
        except (KeyError, TypeError) as e:
            raise BundleError(f"the manifest has no rvv section ({e}); recompile") from e
        self.layout = BufferLayout(m)
        self.weights = artifact.weights
        self._tmp = tempfile.TemporaryDirectory(prefix="portc-qemu-")
        self.dir = Path(self._tmp.name)
        driver_text = artifact.files[driver]
        self.writes: dict[str, list[str]] = {}
        if trace:
            self.writes = dict(m["rvv"].get("writes", {}))
            if not self.writes:
                raise BundleError("the bundle's manifest has no per-kernel writes; recompile "
                                  "to trace it")
            driver_text = make_driver(m["buffers"], int(m.get("arena_bytes", 0)),
                                      list(m["kernels"]), "portc model (traced)", self.writes)
        self.exe = build({asm: artifact.files[asm], driver: driver_text}, [asm, driver],
                         self.dir)

    def run(self, inputs: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        with tempfile.TemporaryDirectory(prefix="run-", dir=self.dir) as tmp:
            ind, outd = Path(tmp) / "in", Path(tmp) / "out"
            ind.mkdir()
            outd.mkdir()
            for b in self.layout.buffers:
                data = self.layout.initial_data(b, inputs, self.weights)
                if data is not None:
                    (ind / f"{b.name}.bin").write_bytes(np.ascontiguousarray(data).tobytes())
            run(self.exe, [str(ind), str(outd)], self.vlen)
            outs = {}
            for b in self.layout.of_kind("output"):
                raw = (outd / f"{b.name}.bin").read_bytes()
                flat = np.frombuffer(raw, dtype=b.numpy_dtype, count=b.elements).copy()
                outs[b.binding or b.name] = self.layout.shape_output(b, flat)
            stats: dict[str, Any] = {"vlen": self.vlen, "runtime": "qemu-riscv64"}
            if self.writes:
                stats["trace"] = {f"{kn}.{buf}": (outd / f"{kn}.{buf}.bin").read_bytes()
                                  for kn, bufs in self.writes.items() for buf in bufs}
        return outs, stats
