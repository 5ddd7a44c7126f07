"""Matmul-shaped kernels as a register-blocked ``vfmacc.vf`` microkernel (filled in below)."""

from __future__ import annotations

from portc.dialects import kernel as k
from portc.dialects import rvv


def try_gemm(op: k.GenericOp, buf_index: dict[str, int],
             buffers: dict[str, k.BufferOp]) -> rvv.FuncOp | None:
    """The microkernel for ``op`` when it is a float GEMM, else None (general lowering)."""
    return None
