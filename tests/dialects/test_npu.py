"""The ``npu`` dialect: printed text parses back identically (through portc's own context, so
the registry line is exercised), and each verifier rejects what the hardware cannot do."""

from __future__ import annotations

import pytest
from xdsl.dialects import arith
from xdsl.dialects.builtin import IndexType, IntegerAttr, ModuleOp, i1
from xdsl.parser import Parser
from xdsl.utils.exceptions import VerifyException

from portc.compiler.program import make_context
from portc.dialects import npu
from portc.passes.lower_npu_cube import GemmSpec, build_gemm_module


class _K:
    """A kernel under construction (smallest programs per verifier test)."""

    def __init__(self, core: str = "aiv") -> None:
        self.k = npu.KernelOp.make("k", core, 1, [("x", "float16", 4096),
                                                   ("y", "float32", 4096)])
        self.b = self.k.body.block
        self.x, self.y = self.b.args

    def c(self, v: int):
        op = arith.ConstantOp.from_int_and_width(v, IndexType())
        self.b.add_op(op)
        return op.result

    def add(self, op):
        self.b.add_op(op)
        return op

    def alloc(self, space: str, dtype: str, n: int, off: int = 0):
        return self.add(npu.AllocOp.make(space, dtype, n, off)).result

    def verify(self) -> None:
        ModuleOp([self.k]).verify()


def _roundtrip(module: ModuleOp) -> None:
    text = npu.print_program(module)
    again = Parser(make_context(), text).parse_module()
    again.verify()
    assert npu.print_program(again) == text


def test_printed_gemm_program_parses_back_identically():
    _roundtrip(build_gemm_module(GemmSpec(40, 24, 70, batch=2, bias=True, relu=True)))


def test_printed_vector_program_parses_back_identically():
    k = _K()
    u = k.alloc("ub", "float16", 256)
    f = k.alloc("ub", "float32", 128, 512)
    m = k.alloc("ub", "uint8", 32, 1024)
    c0 = k.c(0)
    k.add(npu.Mte2Op.make(u, c0, k.x, c0, k.c(2), k.c(64), k.c(0), k.c(64)))
    k.add(npu.SetFlagOp.make("MTE2", "V", 7))
    k.add(npu.WaitFlagOp.make("MTE2", "V", 7))
    k.add(npu.PipeBarrierOp.make("ALL"))
    k.add(npu.VMaxsOp.make((u, c0), (u, c0), -0.25, repeat=2, mask=npu.mask_first(100)))
    k.add(npu.VCastOp.make((f, c0), (u, c0), repeat=2, mask=(0, -1), rep=[8, 4]))
    k.add(npu.VCmpOp.make((m, c0), (f, c0), (f, c0), "le", repeat=2, mask=(0, -1)))
    k.add(npu.VSelOp.make((f, c0), (m, c0), (f, c0), (f, c0), repeat=2, mask=(0, -1)))
    k.add(npu.VWholeReduceOp.make((f, c0), (f, c0), "sum", repeat=1, mask=(0, -1)))
    k.add(npu.VReduceOp.make((f, c0), (f, c0), "max", 100))
    k.add(npu.VBrcbOp.make((f, c0), (f, c0), repeat=1))
    k.add(npu.GetBlockIdxOp.make())
    i = k.alloc("ub", "int32", 64, 2048)
    k.add(npu.GetValueOp.make(i, k.c(3)))
    _roundtrip(ModuleOp([k.k]))


def test_mask_first_sets_the_low_lanes():
    assert npu.mask_first(3) == (0, 0b111)
    assert npu.mask_first(64) == (0, -1)
    assert npu.mask_first(65) == (1, -1)
    assert npu.mask_first(128) == (-1, -1)


@pytest.mark.parametrize("build, msg", [
    (lambda k: k.alloc("ub", "float16", 1024, 192 * 1024 - 1024), r"overflows ub \(196608"),
    (lambda k: k.alloc("ub", "float16", 16, 16), "multiple of the ub alignment"),
    (lambda k: k.alloc("l1", "float16", 16, 0), "'l1' does not exist on an aiv core"),
    (lambda k: k.add(npu.SetFlagOp.make("MTE2", "V", 8)), r"event 8 outside 0\.\.7"),
    (lambda k: k.add(npu.WaitFlagOp.make("V", "V", 0)), "orders two different pipes"),
    (lambda k: k.add(npu.PipeBarrierOp.make("MTE4")), "pipe 'MTE4'"),
    (lambda k: k.add(npu.SetValueOp.make(k.x, k.c(0), k.c(1))),
     "a float16 element takes f16, not index"),
])
def test_verifier_rejects_bad_buffers_and_sync(build, msg):
    k = _K()
    build(k)
    with pytest.raises(VerifyException, match=msg):
        k.verify()


def test_vector_verifier_checks_repeat_mask_dtype_and_space():
    k = _K()
    u = k.alloc("ub", "float16", 256)
    f = k.alloc("ub", "float32", 256, 1024)
    c0 = k.c(0)
    k.add(npu.VAddOp.make((u, c0), (u, c0), (u, c0), repeat=256))
    with pytest.raises(VerifyException, match=r"repeat 256 outside 0\.\.255"):
        k.verify()
    k = _K()
    f = k.alloc("ub", "float32", 256, 1024)
    c0 = k.c(0)
    k.add(npu.VAddOp.make((f, c0), (f, c0), (f, c0), repeat=1, mask=(1, -1)))
    with pytest.raises(VerifyException, match="64 elements per repeat: mask hi must be 0"):
        k.verify()
    k = _K()
    f = k.alloc("ub", "float32", 256, 1024)
    c0 = k.c(0)
    k.add(npu.VAddOp.make((f, c0), (f, c0), (f, c0), repeat=1))  # default full mask: all lanes
    k.verify()
    k = _K()
    i = k.alloc("ub", "int32", 64)
    c0 = k.c(0)
    k.add(npu.VExpOp.make((i, c0), (i, c0), repeat=1, mask=(0, -1)))
    with pytest.raises(VerifyException, match="int32 not supported"):
        k.verify()
    k = _K("aic")
    a = k.alloc("l1", "float16", 256)
    c0 = k.c(0)
    k.add(npu.VAbsOp.make((a, c0), (a, c0), repeat=1))
    with pytest.raises(VerifyException, match="vector operands live in ub"):
        k.verify()


def test_engine_and_cube_verifiers():
    k = _K("aic")
    l0a = k.alloc("l0a", "float16", 256)
    c0 = k.c(0)
    k.add(npu.Mte2Op.make(l0a, c0, k.x, c0, c0, c0, c0, c0))
    with pytest.raises(VerifyException, match=r"operand 'dst' is in 'l0a', the MTE2 engine"):
        k.verify()
    k = _K("aic")
    a, b = k.alloc("l0a", "float16", 256), k.alloc("l0b", "float16", 256)
    cc = k.alloc("l0c", "float16", 256)
    c0 = k.c(0)
    t = k.add(arith.ConstantOp(IntegerAttr(1, i1))).result
    k.add(npu.MmadOp.make(cc, c0, a, c0, b, c0, c0, c0, c0, t))
    with pytest.raises(VerifyException, match="float16 accumulates in float32"):
        k.verify()
    k = _K("aic")
    cc = k.alloc("l0c", "float32", 256)
    c0 = k.c(0)
    k.add(npu.FixOp.make(k.x, c0, cc, c0, c0, c0, c0))
    k.verify()  # fp32 -> fp16 through FixPipe is legal
    k = _K("aic")
    cc = k.alloc("l0c", "float32", 256, 256)
    with pytest.raises(VerifyException, match="l0c alignment"):
        k.verify()


def test_kernel_verifier_bounds_block_dim():
    k = npu.KernelOp.make("k", "aic", 25, [("x", "float16", 16)])
    with pytest.raises(VerifyException, match=r"block_dim 25 outside 1\.\.24"):
        ModuleOp([k]).verify()
    ModuleOp([npu.KernelOp.make("v", "aiv", 48, [("x", "float16", 16)])]).verify()


def test_builder_places_buffers_aligned_and_refuses_a_full_space():
    k = npu.KernelOp.make("k", "aic", 1, [("x", "float16", 16)])
    b = npu.NpuBuilder(k)
    first = b.alloc("l0c", "float32", 10)  # 40 bytes, next start rounds up to 512
    second = b.alloc("l0c", "float32", 16)
    assert first.owner.offset.value.data == 0 and second.owner.offset.value.data == 512
    assert b.free_bytes("l0c") == 128 * 1024 - 1024
    with b.loop(0, 4, 1) as iv:
        b.add_i(iv, 3)
    ModuleOp([k]).verify()
    assert b.c(3) is b.c(3)  # constants are made once, at the kernel top
    with pytest.raises(VerifyException, match=r"l0a is full"):
        b.alloc("l0a", "float16", 64 * 1024)


def test_repeat_plan_covers_n_elements_in_full_repeats_and_a_masked_tail():
    # fp16: 128 lanes per repeat; 255 repeats max per instruction
    plan = npu.repeat_plan(255 * 128 + 128 * 3 + 5, "float16")
    assert plan == [(0, 255, (-1, -1)), (255 * 128, 3, (-1, -1)), (258 * 128, 1, (0, 0b11111))]
    assert npu.repeat_plan(64, "float32") == [(0, 1, (0, -1))]
