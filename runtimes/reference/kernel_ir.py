"""A numpy executor for the kernel dialect: the oracle for graph-to-kernel lowering.

Targets are compared against the graph reference; when one drifts, running the same kernel module
here says whether the lowering or the target's emitter is wrong. Scalar bodies reuse the graph
reference's op tables (float64 compute, one rounding per op); every load and store is
bounds-checked and a fault names the kernel and the graph op it came from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from xdsl.ir import Operation, SSAValue

from portc.compiler.errors import PortcError
from portc.compiler.weights import WeightStore
from portc.dialects import dtypes
from portc.dialects import kernel as k
from portc.dialects.graph import TensorSpec
from portc.runtimes.reference import kernels as ref

#: elements evaluated per chunk of the parallel space (bounds temporary memory)
CHUNK_ELEMENTS = 1 << 22


class KernelFault(PortcError):
    """An out-of-range access while executing a kernel module."""


def _spec(shape: tuple[int, ...], t: object) -> TensorSpec:
    return TensorSpec(shape, dtypes.from_ir(t).name)  # type: ignore[arg-type]


def _eval_body(op: k.GenericOp, args: list[np.ndarray], coords: list[np.ndarray],
               shape: tuple[int, ...]) -> np.ndarray:
    vals: dict[SSAValue, np.ndarray] = dict(zip(op.body.block.args, args, strict=True))
    for b in op.body.block.ops:
        if isinstance(b, k.YieldOp):
            return np.broadcast_to(vals[b.value], shape)
        res = b.results[0]
        spec = _spec(shape, res.type)
        if isinstance(b, k.UnaryOp):
            v = ref.unary({"fn": b.fn.data}, [vals[b.x]], [spec])[0]
        elif isinstance(b, k.BinaryOp):
            x, y = np.broadcast_arrays(vals[b.a], vals[b.b])
            v = ref.binary({"fn": b.fn.data}, [x, y], [spec])[0]
        elif isinstance(b, k.SelectOp):
            v = np.where(vals[b.cond], vals[b.a], vals[b.b])
        elif isinstance(b, k.CastOp):
            props: dict = {"to": spec.dtype}
            if b.saturate is not None:
                props["saturate"] = bool(b.saturate.value.data)
            v = ref.cast(props, [vals[b.x]], [spec])[0]
        elif isinstance(b, k.ConstOp):
            v = np.array(b.number).astype(dtypes.dtype(spec.dtype).numpy)
        elif isinstance(b, k.IndexOp):
            v = coords[b.dim.value.data]
        else:
            raise KernelFault(f"kernel {op.kernel_name()}: unknown body op {b.name}")
        vals[res] = np.asarray(v)
    raise KernelFault(f"kernel {op.kernel_name()}: body has no kernel.yield")


def _init_array(init: float, dt: np.dtype) -> np.ndarray:
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return np.array(int(np.clip(init, info.min, info.max)) if np.isfinite(init)
                        else (info.min if init < 0 else info.max), dtype=dt)
    if dt.kind == "b":
        return np.array(init > 0)
    return np.array(init).astype(dt)


def _affine(strides: Sequence[int], offset: int, coords: list, shape: tuple[int, ...]
            ) -> np.ndarray:
    """offset + sum(stride * coord) over broadcastable coordinate arrays, as int64 of ``shape``."""
    a = np.full(shape, offset, dtype=np.int64)
    for s, x in zip(strides, coords, strict=True):
        if s:
            a = a + s * x
    return a


_REDUCE = {"sum": np.add, "prod": np.multiply, "max": np.maximum, "min": np.minimum}


class KernelModuleExecutor:
    def __init__(self, module: Operation, weights: WeightStore) -> None:
        self.module = module
        self.weights = weights
        self.buffers = k.buffers_of(module)

    def _check(self, op: k.KernelOp, buf: str, addr: np.ndarray, what: str) -> None:
        size = self.buffers[buf].elements
        if addr.size and (addr.min() < 0 or addr.max() >= size):
            bad = int(addr[(addr < 0) | (addr >= size)].flat[0])
            raise KernelFault(f"kernel {op.kernel_name()} (from {op.origin()}): {what} of "
                              f"@{buf} at element {bad}, outside 0..{size - 1}")

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        mem: dict[str, np.ndarray] = {}
        for name, b in self.buffers.items():
            dt = dtypes.dtype(b.dtype.data).numpy
            kind = b.kind.data
            if kind == "input":
                mem[name] = np.ascontiguousarray(inputs[b.binding.data], dtype=dt).reshape(-1)
            elif kind == "weight":
                mem[name] = np.ascontiguousarray(self.weights[b.binding.data]).reshape(-1)
            else:
                mem[name] = np.zeros(b.elements, dtype=dt)
        for op in k.kernels_of(self.module):
            if isinstance(op, k.GenericOp):
                self._generic(op, mem)
            elif isinstance(op, k.SortOp):
                self._sort(op, mem)
        return {b.binding.data: mem[b.buffer_name].reshape(b.tensor_shape)
                for b in k.bound_buffers(self.module, "output")}

    def _generic(self, op: k.GenericOp, mem: dict[str, np.ndarray]) -> None:
        dims = op.extents
        npar = op.parallel_count
        pdims, rdims = dims[:npar], dims[npar:]
        P, R = int(np.prod(pdims)), int(np.prod(rdims))
        if P == 0:
            return
        if R == 0:  # an empty reduction: every output point is the combiner's identity
            if op.init_value is not None:
                pc = np.unravel_index(np.arange(P), pdims) if pdims else ()
                out_addr = _affine(op.output_strides[:npar], op.output_offset, list(pc), (P,))
                out = mem[op.output_name]
                self._check(op, op.output_name, out_addr, "write")
                out[out_addr] = _init_array(op.init_value, out.dtype)
            return
        rc = np.unravel_index(np.arange(R), rdims) if rdims else ()
        chunk = max(1, CHUNK_ELEMENTS // max(R, 1))
        names = op.input_names
        terms = op.indirect_terms
        gathered = {t[0] for t in terms}
        for p0 in range(0, P, chunk):
            pc = np.unravel_index(np.arange(p0, min(P, p0 + chunk)), pdims) if pdims else ()
            c = len(pc[0]) if pdims else 1
            coords = [x[:, None] for x in pc] + [x[None, :] for x in rc]
            shape = (c, R)

            def addr(strides: tuple[int, ...], offset: int, coords: list = coords,
                     shape: tuple = shape) -> np.ndarray:
                return _affine(strides, offset, coords, shape)

            addrs = [addr(op.input_strides(i), op.input_offset(i)) for i in range(len(names))]
            loaded: dict[int, np.ndarray] = {}
            order = [i for i in range(len(names)) if i not in gathered] + sorted(gathered - {-1})
            out_addr = addr(op.output_strides, op.output_offset)
            for i in order:
                for slot, islot, stride, bound in terms:
                    if slot != i:
                        continue
                    addrs[i] = addrs[i] + stride * self._wrap(op, loaded[islot], bound)
                self._check(op, names[i], addrs[i], "read")
                loaded[i] = mem[names[i]][addrs[i]]
            for slot, islot, stride, bound in terms:
                if slot == -1:
                    out_addr = out_addr + stride * self._wrap(op, loaded[islot], bound)
            vals = _eval_body(op, [loaded[i] for i in range(len(names))], coords, shape)
            out = mem[op.output_name]
            self._check(op, op.output_name, out_addr, "write")
            comb = op.combine
            if comb == "none":
                out[out_addr.reshape(-1)] = vals.reshape(-1)
            elif op.init_value is not None:
                red = _REDUCE[comb].reduce(
                    vals.astype(np.float64) if vals.dtype.kind == "f" else vals, axis=1)
                init = _init_array(op.init_value, out.dtype)
                red = _REDUCE[comb](red, init.astype(red.dtype))
                out[out_addr[:, 0]] = red.astype(out.dtype)
            else:
                _REDUCE[comb].at(out, out_addr.reshape(-1), vals.reshape(-1))

    def _wrap(self, op: k.KernelOp, idx: np.ndarray, bound: int) -> np.ndarray:
        i = idx.astype(np.int64)
        bad = (i < -bound) | (i >= bound)
        if bad.any():
            raise KernelFault(f"kernel {op.kernel_name()} (from {op.origin()}): index "
                              f"{int(i[bad].flat[0])} out of range for a dim of size {bound}")
        return np.where(i < 0, i + bound, i)

    def _sort(self, op: k.SortOp, mem: dict[str, np.ndarray]) -> None:
        rows, n, kk = op.rows.value.data, op.n.value.data, op.k.value.data
        off = op.input_offset.value.data
        x = mem[op.input.data][off:off + rows * n].reshape(rows, n)
        keys = ref._sort_keys(x, bool(op.descending.value.data))
        order = np.argsort(keys, axis=1, kind="stable")[:, :kk]
        mem[op.values.data][:] = np.take_along_axis(x, order, axis=1).reshape(-1)
        mem[op.indices.data][:] = order.reshape(-1)


def run_kernel_module(module: Operation, weights: WeightStore,
                      inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return KernelModuleExecutor(module, weights).run(inputs)
