"""Small npu programs the npusim, sync-pass and dialect tests share (built with the dialect's
own builders, printed to the text npusim reads)."""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.dialects import arith
from xdsl.dialects.builtin import IndexType, ModuleOp
from xdsl.ir import Operation, SSAValue

from portc.dialects import npu


class KernelBuilder:
    """Appends ops to one kernel; ``c(v)`` makes index constants in the current block."""

    def __init__(self, name: str, core: str, args: Sequence[tuple[str, str, int]],
                 block_dim: int = 1) -> None:
        self.kernel = npu.KernelOp.make(name, core, block_dim, args)
        self.block = self.kernel.body.block
        self.arg = dict(zip([a[0] for a in args], self.block.args, strict=True))

    def c(self, v: int) -> SSAValue:
        return self.add(arith.ConstantOp.from_int_and_width(v, IndexType())).results[0]

    def add(self, op: Operation) -> Operation:
        self.block.add_op(op)
        return op

    def alloc(self, space: str, dtype: str, n: int, offset: int) -> SSAValue:
        return self.add(npu.AllocOp.make(space, dtype, n, offset)).results[0]

    def copy_in(self, dst: SSAValue, src: SSAValue, n: int, src_off: SSAValue | int = 0) -> None:
        so = self.c(src_off) if isinstance(src_off, int) else src_off
        self.add(npu.Mte2Op.make(dst, self.c(0), src, so, self.c(1), self.c(n), self.c(0),
                                 self.c(0)))

    def copy_out(self, dst: SSAValue, src: SSAValue, n: int, dst_off: SSAValue | int = 0) -> None:
        do = self.c(dst_off) if isinstance(dst_off, int) else dst_off
        self.add(npu.Mte3Op.make(dst, do, src, self.c(0), self.c(1), self.c(n), self.c(0),
                                 self.c(0)))

    def flag(self, src: str, dst: str, event: int = 0) -> None:
        self.add(npu.SetFlagOp.make(src, dst, event))
        self.add(npu.WaitFlagOp.make(src, dst, event))

    def module(self) -> ModuleOp:
        m = ModuleOp([self.kernel])
        m.verify()
        return m

    def text(self) -> str:
        return npu.print_program(self.module())


def vector_unary_program(op_cls: type, n: int, dtype: str = "float16",
                         flags: bool = True, **props: object) -> str:
    """``y = op(x)`` over ``n`` elements on one AIV core: GM -> UB -> V -> UB -> GM."""
    kb = KernelBuilder("k", "aiv", [("x", dtype, n), ("y", dtype, n)])
    src = kb.alloc("ub", dtype, n, 0)
    dst = kb.alloc("ub", dtype, n, ((n * 4 + 31) // 32) * 32)
    kb.copy_in(src, kb.arg["x"], n)
    if flags:
        kb.flag("MTE2", "V")
    itemsize = 2 if dtype in ("float16", "bfloat16") else 4
    epr = 256 // itemsize
    kb.add(op_cls.make((dst, kb.c(0)), (src, kb.c(0)), repeat=-(-n // epr), **props))
    if flags:
        kb.flag("V", "MTE3")
    kb.copy_out(kb.arg["y"], dst, n)
    return kb.text()

