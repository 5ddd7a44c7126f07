"""Small integer and bool kernels on the AI core's scalar unit (the ``ascend`` lowering's third
path, between the vector unit and the AI CPU).

The vector unit has no int64, bool or 8/16-bit integer arithmetic, so masks, index arithmetic
and dtype plumbing (an int64 attention mask cast to bool, a ``where`` over bool masks, a
Shape/Range/OneHot computation) would leave the AI core for the AI CPU -- on Ascend a launch of
its own on another processor for a few hundred elements. The scalar unit of every AI core has
64-bit registers and reads and writes GM one element at a time (``npu.get_value`` /
``npu.set_value``: Ascend C ``GetValue``/``SetValue``), so a kernel of at most
``SCALAR_MAX_EVALS`` body evaluations runs there instead: each AIV core takes every
``block_num``-th element of the parallel space, reads its operands, evaluates the body in
``arith`` on 64-bit registers and stores the result.

What the body may do. Integers (int8..int64, uint8..uint32) and bools live in ``index``
registers; results of narrower dtypes are wrapped explicitly (shift left then arithmetic
right for signed, a mask for unsigned), so the two's-complement semantics match the kernel IR
(wide arithmetic, one wrap per op). Integer ``div``/``mod`` follow the reference: division
truncates toward zero, ``mod`` takes the divisor's sign, a zero divisor counts as one. Floats
(f16/bf16/f32) only pass through: loaded, selected, stored, or made from integers/bools by a
cast; float arithmetic or compares are left to the vector unit or the AI CPU. Gathers address
through the loaded index values (wrapped by their bound, as in the kernel IR); scatters and
combiners without ``init`` read-modify-write the output, so those run on one core (in the
kernel IR's element order), others over all 48. Reductions with ``init`` accumulate in a
one-element UB cell (``scf.for`` carries no values on this scalar unit).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from xdsl.dialects import arith
from xdsl.dialects.builtin import FloatAttr, IndexType, i64
from xdsl.ir import SSAValue

from portc.dialects import dtypes, npu
from portc.dialects import kernel as k
from portc.dialects.npu_soc import NpuSoc

#: body evaluations (parallel x reduction points) up to which a kernel the vector unit cannot
#: run goes to the scalar unit: about 100 scalar cycles each, split over 48 cores
SCALAR_MAX_EVALS = 4096
#: element dtypes the scalar path reads and writes
SCALAR_DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                 "float16", "bfloat16", "float32")
_INT_BIN = {"add": arith.AddiOp, "sub": arith.SubiOp, "mul": arith.MuliOp,
            "bitwise_and": arith.AndIOp, "bitwise_or": arith.OrIOp,
            "bitwise_xor": arith.XOrIOp, "and": arith.AndIOp, "or": arith.OrIOp,
            "xor": arith.XOrIOp}
_CMP = {"eq": "eq", "ne": "ne", "lt": "slt", "le": "sle", "gt": "sgt", "ge": "sge"}
_COMBINE = {"sum": arith.AddiOp, "prod": arith.MuliOp, "max": arith.MaxSIOp,
            "min": arith.MinSIOp}


class ScalarUnsupported(Exception):
    """The kernel does not fit the scalar path; the message says why."""


def _kind(dt: str) -> str:
    return dtypes.dtype(dt).kind


class ScalarKernel:
    """Builds one AIV kernel running ``op`` on the scalar unit; raises ScalarUnsupported."""

    def __init__(self, op: k.GenericOp, name: str, bufs: Mapping[str, tuple[str, int]],
                 soc: NpuSoc) -> None:
        self.op, self.name, self.soc, self.bufs = op, name, soc, bufs
        ext = op.extents
        npar = op.parallel_count
        self.P = 1
        for d in ext[:npar]:
            self.P *= d
        self.R = 1
        for d in ext[npar:]:
            self.R *= d
        if self.P * self.R > SCALAR_MAX_EVALS:
            raise ScalarUnsupported(f"{self.P * self.R} elements are too many for the scalar "
                                    f"unit (at most {SCALAR_MAX_EVALS})")
        for b in [*op.input_names, op.output_name]:
            if bufs[b][0] not in SCALAR_DTYPES:
                raise ScalarUnsupported(f"buffer @{b} is {bufs[b][0]}")
        self.out_dt = bufs[op.output_name][0]
        self.reduce = op.combine != "none"
        if self.reduce and _kind(self.out_dt) == "float":
            raise ScalarUnsupported("a float reduction (no float arithmetic on the scalar unit)")
        self.terms = op.indirect_terms
        # read-modify-write of the output (scatter, accumulate into it): one core, in order
        scatter = any(t[0] == -1 for t in self.terms)
        if scatter and self.reduce and op.init_value is not None:
            raise ScalarUnsupported("a scattering reduction with an init value")
        self.serial = scatter or (self.reduce and op.init_value is None)
        for b in op.body.block.ops:
            self._check(b)

    def _check(self, b: object) -> None:
        if isinstance(b, k.YieldOp | k.ConstOp | k.SelectOp | k.IndexOp):
            return
        if isinstance(b, k.CastOp):
            src, dst = k.dtype_of_type(b.x.type), k.dtype_of_type(b.result.type)
            if src not in SCALAR_DTYPES or dst not in SCALAR_DTYPES:
                raise ScalarUnsupported(f"cast {src} -> {dst}")
            if _kind(src) == "float" and src != dst:
                raise ScalarUnsupported(f"cast {src} -> {dst} (float conversion)")
            return
        if isinstance(b, k.UnaryOp | k.BinaryOp):
            fn = b.fn.data
            args = [b.x] if isinstance(b, k.UnaryOp) else [b.a, b.b]
            if any(_kind(k.dtype_of_type(a.type)) == "float" for a in args) and \
                    fn != "identity":
                raise ScalarUnsupported(f"'{fn}' on floats (the scalar path moves floats only)")
            ok = ("neg", "abs", "not", "bitwise_not", "identity", "sign") \
                if isinstance(b, k.UnaryOp) else (*_INT_BIN, *_CMP, "min", "max", "div",
                                                   "mod")
            if fn not in ok:
                raise ScalarUnsupported(f"'{fn}' has no scalar-unit form")
            return
        raise ScalarUnsupported(f"body op {getattr(b, 'name', b)}")

    # -- build -------------------------------------------------------------------------------
    def build(self) -> npu.KernelOp:
        op = self.op
        args = sorted({*op.input_names, op.output_name})
        cores = 1 if self.serial else min(self.soc.aiv_cores, self.P)
        kern = npu.KernelOp.make(self.name, "aiv", max(1, cores),
                                 [(b, self.bufs[b][0], self.bufs[b][1]) for b in args],
                                 self.soc.name)
        self.gm = dict(zip(args, kern.body.block.args, strict=True))
        bld = self.bld = npu.NpuBuilder(kern)
        self.cell = bld.alloc("ub", "int64", 4) if self.reduce and not self.serial else None
        ext, npar = op.extents, op.parallel_count
        with bld.loop(bld.block_idx(), self.P, bld.block_num()) as e:
            coords = self._unravel(e, ext[:npar])
            if not self.reduce:
                self._store(coords, self._body(coords))
            elif self.R == 0:
                pass
            else:
                self._reduction(coords, ext[npar:])
        return kern

    def _unravel(self, flat: SSAValue, dims: Sequence[int]) -> list[SSAValue | int]:
        out: list[SSAValue | int] = []
        rest: SSAValue | int = flat
        for d in reversed(dims):
            if d == 1:
                out.append(0)
                continue
            assert isinstance(rest, SSAValue)
            out.append(self.bld.rem(rest, d))
            rest = self.bld.div(rest, d)
        return out[::-1]

    def _reduction(self, coords: list[SSAValue | int], rdims: Sequence[int]) -> None:
        bld, op = self.bld, self.op
        comb = _COMBINE[op.combine]
        out_addr = self._addr(-1, coords, {})
        if self.cell is not None:
            init = op.init_value
            assert init is not None
            info = dtypes.dtype(self.out_dt)
            if info.kind == "bool":
                iv = int(init > 0)
            else:
                lo, hi = ((-(1 << (info.bits - 1)), (1 << (info.bits - 1)) - 1)
                          if info.kind == "int" else (0, (1 << info.bits) - 1))
                iv = int(max(lo, min(hi, init))) if abs(init) != float("inf") else \
                    (hi if init > 0 else lo)
            bld.add(npu.SetValueOp.make(self.cell, bld.c(0), bld.c(iv)))
        with bld.loop(0, self.R, 1) as r:
            full = coords + self._unravel(r, rdims)
            v = self._body(full)
            if self.cell is not None:
                acc = bld.add(npu.GetValueOp.make(self.cell, bld.c(0))).results[0]
                new = self._wrap(bld.add(comb(acc, v)).results[0], self.out_dt)
                bld.add(npu.SetValueOp.make(self.cell, bld.c(0), new))
            else:  # accumulate into the output (serial: one core)
                addr = self._addr(-1, full, self._loaded)
                acc = bld.add(npu.GetValueOp.make(self.gm[op.output_name], addr)).results[0]
                new = self._wrap(bld.add(comb(acc, v)).results[0], self.out_dt)
                bld.add(npu.SetValueOp.make(self.gm[op.output_name], addr, new))
        if self.cell is not None:
            res = bld.add(npu.GetValueOp.make(self.cell, bld.c(0))).results[0]
            bld.add(npu.SetValueOp.make(self.gm[op.output_name], bld.val(out_addr), res))

    def _store(self, coords: list[SSAValue | int], v: SSAValue) -> None:
        addr = self._addr(-1, coords, self._loaded)
        self.bld.add(npu.SetValueOp.make(self.gm[self.op.output_name], self.bld.val(addr), v))

    def _addr(self, slot: int, coords: Sequence[SSAValue | int],
              loaded: Mapping[int, SSAValue]) -> SSAValue | int:
        """Element offset of input ``slot`` (-1: the output) at ``coords``, gathers included."""
        op, bld = self.op, self.bld
        strides = op.output_strides if slot == -1 else op.input_strides(slot)
        off: SSAValue | int = op.output_offset if slot == -1 else op.input_offset(slot)
        for c, st in zip(coords, strides, strict=False):
            if st and not (isinstance(c, int) and c == 0):
                term = bld.mul(c, st) if st != 1 else bld.val(c)
                off = bld.add_i(off, term) if not (isinstance(off, int) and off == 0) else term
        for s, islot, st, bound in self.terms:
            if s != slot:
                continue
            v = loaded[islot]
            neg = bld.add(arith.CmpiOp(v, bld.c(0), "slt")).results[0]
            idx = bld.add(arith.SelectOp(neg, bld.add_i(v, bound), v)).results[0]
            off = bld.add_i(off, bld.mul(idx, st))
        return off

    def _body(self, coords: list[SSAValue | int]) -> SSAValue:
        """Read the inputs at ``coords`` (gathered ones after their indices) and evaluate."""
        op, bld = self.op, self.bld
        block = op.body.block
        gathered = {t[0] for t in self.terms if t[0] >= 0}
        order = [i for i in range(len(op.input_names)) if i not in gathered] + sorted(gathered)
        loaded: dict[int, SSAValue] = {}
        for i in order:
            addr = bld.val(self._addr(i, coords, loaded))
            loaded[i] = bld.add(npu.GetValueOp.make(self.gm[op.input_names[i]], addr)
                                ).results[0]
        self._loaded = loaded
        vals: dict[SSAValue, SSAValue] = {block.args[i]: v for i, v in loaded.items()}
        for b in block.ops:
            if isinstance(b, k.YieldOp):
                return vals[b.value]
            vals[b.results[0]] = self._emit(b, vals, coords)
        raise AssertionError("kernel.generic body without kernel.yield")

    # -- body ops --------------------------------------------------------------------------
    def _wrap(self, v: SSAValue, dt: str) -> SSAValue:
        """Two's-complement wrap of a 64-bit register into ``dt`` (bools: 0/1 already)."""
        info = dtypes.dtype(dt)
        if info.kind not in ("int", "uint") or info.bits >= 64:
            return v
        bld = self.bld
        if info.kind == "uint":
            return bld.add(arith.AndIOp(v, bld.c((1 << info.bits) - 1))).results[0]
        sh = bld.c(64 - info.bits)
        up = bld.add(arith.ShLIOp(v, sh)).results[0]
        return bld.add(arith.ShRSIOp(up, sh)).results[0]

    def _i1(self, v: SSAValue) -> SSAValue:
        return self.bld.add(arith.CmpiOp(v, self.bld.c(0), "ne")).results[0]

    def _from_i1(self, c: SSAValue) -> SSAValue:
        return self.bld.add(arith.IndexCastOp(c, IndexType())).results[0]

    def _emit(self, b: object, vals: Mapping[SSAValue, SSAValue],
              coords: list[SSAValue | int]) -> SSAValue:
        bld = self.bld
        if isinstance(b, k.ConstOp):
            dt = k.dtype_of_type(b.result.type)
            if _kind(dt) == "float":
                num = float(b.number)
                if dt != "float32" and (num != num or abs(num) == float("inf")):
                    raise ScalarUnsupported(f"non-finite {dt} constant")
                return bld.add(arith.ConstantOp(FloatAttr(num, dtypes.dtype(dt).ir))).results[0]
            return bld.c(int(b.number))
        if isinstance(b, k.IndexOp):
            c = coords[b.dim.value.data]
            return bld.val(c)
        if isinstance(b, k.SelectOp):
            return bld.add(arith.SelectOp(self._i1(vals[b.cond]), vals[b.a], vals[b.b])
                           ).results[0]
        if isinstance(b, k.CastOp):
            return self._cast(vals[b.x], k.dtype_of_type(b.x.type),
                              k.dtype_of_type(b.result.type))
        dt = k.dtype_of_type(b.results[0].type)  # type: ignore[attr-defined]
        if isinstance(b, k.UnaryOp):
            return self._unary(b.fn.data, vals[b.x], dt)
        assert isinstance(b, k.BinaryOp)
        return self._binary(b.fn.data, vals[b.a], vals[b.b], k.dtype_of_type(b.a.type), dt)

    def _cast(self, x: SSAValue, src: str, dst: str) -> SSAValue:
        bld = self.bld
        if src == dst:
            return x
        if _kind(dst) == "bool":
            return self._from_i1(self._i1(x))
        if _kind(dst) == "float":
            wide = bld.add(arith.IndexCastOp(x, i64)).results[0]
            cls = arith.UIToFPOp if _kind(src) == "uint" else arith.SIToFPOp
            return bld.add(cls(wide, dtypes.dtype(dst).ir)).results[0]
        return self._wrap(x, dst)

    def _unary(self, fn: str, x: SSAValue, dt: str) -> SSAValue:
        bld = self.bld
        if fn == "identity":
            return x
        if fn == "not":
            return bld.add(arith.XOrIOp(x, bld.c(1))).results[0]
        if fn == "bitwise_not":
            return self._wrap(bld.add(arith.XOrIOp(x, bld.c(-1))).results[0], dt)
        neg = self._wrap(bld.sub(0, x), dt)
        if fn == "neg":
            return neg
        lt0 = bld.add(arith.CmpiOp(x, bld.c(0), "slt")).results[0]
        if fn == "abs":
            return bld.add(arith.SelectOp(lt0, neg, x)).results[0]
        # sign: -1, 0 or 1
        gt0 = self._from_i1(bld.add(arith.CmpiOp(x, bld.c(0), "sgt")).results[0])
        return bld.add(arith.SelectOp(lt0, bld.c(-1), gt0)).results[0]

    def _binary(self, fn: str, a: SSAValue, b: SSAValue, src: str, dt: str) -> SSAValue:
        bld = self.bld
        if fn in _CMP:
            return self._from_i1(bld.add(arith.CmpiOp(a, b, _CMP[fn])).results[0])
        if fn in _INT_BIN:
            return self._wrap(bld.add(_INT_BIN[fn](a, b)).results[0], dt)
        if fn in ("min", "max"):
            cls = arith.MinSIOp if fn == "min" else arith.MaxSIOp
            return bld.add(cls(a, b)).results[0]
        zero = bld.add(arith.CmpiOp(b, bld.c(0), "eq")).results[0]
        d = bld.add(arith.SelectOp(zero, bld.c(1), b)).results[0]  # x / 0 counts as x / 1
        unsigned = _kind(src) == "uint"
        if fn == "div":
            q = bld.add((arith.DivUIOp if unsigned else arith.DivSIOp)(a, d)).results[0]
            return self._wrap(q, dt)
        r = bld.add((arith.RemUIOp if unsigned else arith.RemSIOp)(a, d)).results[0]
        if unsigned:
            return r
        # numpy's mod takes the divisor's sign: add d when r != 0 and the signs differ
        nz = bld.add(arith.CmpiOp(r, bld.c(0), "ne")).results[0]
        rn = bld.add(arith.CmpiOp(r, bld.c(0), "slt")).results[0]
        dn = bld.add(arith.CmpiOp(d, bld.c(0), "slt")).results[0]
        differ = bld.add(arith.XOrIOp(rn, dn)).results[0]
        fix = bld.add(arith.AndIOp(nz, differ)).results[0]
        return bld.add(arith.SelectOp(fix, bld.add_i(r, d), r)).results[0]
