"""The cuda target's real-GPU runtime: the bundle's PTX through the CUDA driver API.

ctypes on ``libcuda.so`` (no Python dependency): cuInit, cuCtxCreate, cuModuleLoadData (the
driver JIT-compiles the PTX text), cuMemAlloc, cuMemcpyHtoD/DtoH, cuLaunchKernel. Temporaries
live in one arena allocation at the offsets the buffer plan gave them, exactly as the manifest
says. ``unavailable()`` explains why this runtime cannot run here (no driver, no device).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from portc.compiler.errors import PortcError
from portc.compiler.kernel_targets import BufferLayout
from portc.compiler.weights import WeightStore

_LIB: ctypes.CDLL | None = None


class CudaDriverError(PortcError):
    """A CUDA driver call failed; the message names the call and the driver's error."""


def _lib() -> ctypes.CDLL:
    global _LIB
    if _LIB is None:
        name = ctypes.util.find_library("cuda") or "libcuda.so.1"
        _LIB = ctypes.CDLL(name)
    return _LIB


def _check(rc: int, call: str) -> None:
    if rc != 0:
        msg = ctypes.c_char_p()
        try:
            _lib().cuGetErrorString(rc, ctypes.byref(msg))
            text = msg.value.decode() if msg.value else "?"
        except (OSError, AttributeError):
            text = "?"
        raise CudaDriverError(f"{call} failed with CUDA error {rc} ({text})")


def unavailable() -> str | None:
    """None when a CUDA driver and at least one device are present, else why not."""
    try:
        lib = _lib()
    except OSError:
        return "no CUDA driver (libcuda.so not found)"
    rc = lib.cuInit(0)
    if rc != 0:
        return f"cuInit failed with CUDA error {rc} (no usable GPU or driver)"
    n = ctypes.c_int(0)
    if lib.cuDeviceGetCount(ctypes.byref(n)) != 0 or n.value == 0:
        return "the CUDA driver sees no GPU"
    return None


class Context:
    """One device context with a loaded module."""

    def __init__(self, ptx_text: str, device: int = 0) -> None:
        why = unavailable()
        if why is not None:
            raise CudaDriverError(f"the gpu runtime cannot run here: {why}")
        lib = _lib()
        self.lib = lib
        dev = ctypes.c_int()
        _check(lib.cuDeviceGet(ctypes.byref(dev), device), "cuDeviceGet")
        self.ctx = ctypes.c_void_p()
        _check(lib.cuCtxCreate_v2(ctypes.byref(self.ctx), 0, dev), "cuCtxCreate")
        self.module = ctypes.c_void_p()
        src = ptx_text.encode() + b"\0"
        _check(lib.cuModuleLoadData(ctypes.byref(self.module), ctypes.c_char_p(src)),
               "cuModuleLoadData")
        self.functions: dict[str, ctypes.c_void_p] = {}

    def function(self, name: str) -> ctypes.c_void_p:
        if name not in self.functions:
            f = ctypes.c_void_p()
            _check(self.lib.cuModuleGetFunction(ctypes.byref(f), self.module, name.encode()),
                   f"cuModuleGetFunction({name})")
            self.functions[name] = f
        return self.functions[name]

    def alloc(self, nbytes: int) -> int:
        p = ctypes.c_uint64()
        _check(self.lib.cuMemAlloc_v2(ctypes.byref(p), max(int(nbytes), 1)), "cuMemAlloc")
        return p.value

    def free(self, ptr: int) -> None:
        self.lib.cuMemFree_v2(ctypes.c_uint64(ptr))

    def htod(self, ptr: int, arr: np.ndarray) -> None:
        a = np.ascontiguousarray(arr)
        _check(self.lib.cuMemcpyHtoD_v2(ctypes.c_uint64(ptr), a.ctypes.data_as(ctypes.c_void_p),
                                        ctypes.c_size_t(a.nbytes)), "cuMemcpyHtoD")

    def dtoh(self, ptr: int, dtype: np.dtype, count: int) -> np.ndarray:
        out = np.empty(count, dtype=dtype)
        _check(self.lib.cuMemcpyDtoH_v2(out.ctypes.data_as(ctypes.c_void_p), ctypes.c_uint64(ptr),
                                        ctypes.c_size_t(out.nbytes)), "cuMemcpyDtoH")
        return out

    def launch(self, name: str, grid: Sequence[int], block: Sequence[int],
               pointers: Sequence[int], shared_bytes: int = 0) -> None:
        args = [ctypes.c_uint64(p) for p in pointers]
        argv = (ctypes.c_void_p * len(args))(*[ctypes.cast(ctypes.byref(a), ctypes.c_void_p)
                                               for a in args])
        g = [*grid, 1, 1][:3]
        b = [*block, 1, 1][:3]
        _check(self.lib.cuLaunchKernel(self.function(name), *[ctypes.c_uint(x) for x in g],
                                       *[ctypes.c_uint(x) for x in b], ctypes.c_uint(shared_bytes),
                                       None, argv, None), f"cuLaunchKernel({name})")

    def synchronize(self) -> None:
        _check(self.lib.cuCtxSynchronize(), "cuCtxSynchronize")

    def close(self) -> None:
        if self.ctx:
            self.lib.cuCtxDestroy_v2(self.ctx)
            self.ctx = ctypes.c_void_p()


class GpuExecutable:
    """A loaded bundle: buffers allocated once (temporaries in one arena), launched per run."""

    def __init__(self, ptx_text: str, layout: BufferLayout, launches: list[dict[str, Any]],
                 weights: WeightStore) -> None:
        self.cx = Context(ptx_text)
        self.layout = layout
        self.launches = launches
        self.weights = weights
        self.arena = self.cx.alloc(layout.arena_bytes)
        self.addr: dict[str, int] = {}
        for b in layout.buffers:
            if b.kind == "temp" and b.offset is not None:
                self.addr[b.name] = self.arena + b.offset
            else:
                self.addr[b.name] = self.cx.alloc(b.nbytes)
            if b.kind == "weight":
                data = layout.initial_data(b, {}, weights)
                if data is not None and data.size:
                    self.cx.htod(self.addr[b.name], data)

    def run(self, inputs: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        for b in self.layout.of_kind("input"):
            data = self.layout.initial_data(b, inputs, self.weights)
            if data is not None and data.size:
                self.cx.htod(self.addr[b.name], data)
        t0 = time.perf_counter()
        for ln in self.launches:
            self.cx.launch(ln["entry"], ln["grid"], ln["block"],
                           [self.addr[p] for p in ln["params"]], ln.get("shared_bytes", 0))
        self.cx.synchronize()
        dt = time.perf_counter() - t0
        outs = {}
        for b in self.layout.of_kind("output"):
            flat = self.cx.dtoh(self.addr[b.name], b.numpy_dtype, b.elements)
            outs[b.binding or b.name] = self.layout.shape_output(b, flat)
        return outs, {"launches": len(self.launches), "gpu_seconds": round(dt, 6)}
