"""Numpy kernels for every graph op: the golden model every target is compared with.

Floating-point ops compute in float64 and round once to the result dtype, so the reference is at
least as accurate as any target; integer ops use exact integer arithmetic with the two's-complement
wrap of the result dtype. One table maps op class -> kernel.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from portc.dialects import dtypes
from portc.dialects import graph as g
from portc.dialects.graph import Props, TensorSpec

Kernel = Callable[[Props, list[np.ndarray], list[TensorSpec]], list[np.ndarray]]
KERNELS: dict[type[g.GraphOp], Kernel] = {}


class KernelError(ValueError):
    """A value-dependent failure (index out of range) that names the op."""


def kernel(op: type[g.GraphOp]) -> Callable[[Kernel], Kernel]:
    def reg(fn: Kernel) -> Kernel:
        KERNELS[op] = fn
        return fn

    return reg


def _np(dt: str) -> np.dtype:
    return dtypes.dtype(dt).numpy


def wide(x: np.ndarray) -> np.ndarray:
    """The computation dtype: float64 for every float, int64/uint64 for integers."""
    kind = dtypes.from_numpy(x.dtype).kind
    if kind == "bool":
        return x
    if kind == "int":
        return x.astype(np.int64, copy=False)
    if kind == "uint":
        return x.astype(np.uint64, copy=False)
    return x.astype(np.float64, copy=False)


def finish(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Round/wrap a wide result into the result dtype."""
    target = _np(spec.dtype)
    x = np.asarray(x)
    if x.dtype == target:
        return x
    if x.dtype.kind == "f" and dtypes.dtype(spec.dtype).kind in ("int", "uint"):
        with np.errstate(invalid="ignore"):
            x = np.trunc(x)
            info = np.iinfo(np.int64) if dtypes.dtype(spec.dtype).kind == "int" else None
            if info is not None:
                x = np.clip(np.nan_to_num(x), info.min, info.max).astype(np.int64)
            else:
                x = np.clip(np.nan_to_num(x), 0, np.iinfo(np.uint64).max).astype(np.uint64)
    if x.dtype.kind in "iu" and dtypes.dtype(spec.dtype).bits < 8:
        bits = dtypes.dtype(spec.dtype).bits
        mask = (1 << bits) - 1
        v = x.astype(np.int64) & mask
        if dtypes.dtype(spec.dtype).kind == "int":
            v = np.where(v >= (1 << (bits - 1)), v - (1 << bits), v)
        return v.astype(target)
    with np.errstate(over="ignore", invalid="ignore"):
        return x.astype(target)


# ---------------------------------------------------------------------------------- elementwise


def _erf(x: np.ndarray) -> np.ndarray:
    import torch

    return torch.special.erf(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))).numpy()


def _round_half_even(x: np.ndarray) -> np.ndarray:
    return np.round(x)


UNARY_IMPL: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "neg": np.negative, "abs": np.abs, "sign": np.sign, "exp": np.exp, "log": np.log,
    "sqrt": np.sqrt, "rsqrt": lambda x: 1.0 / np.sqrt(x), "reciprocal": lambda x: 1.0 / x,
    "sin": np.sin, "cos": np.cos, "tan": np.tan, "asin": np.arcsin, "acos": np.arccos,
    "atan": np.arctan, "sinh": np.sinh, "cosh": np.cosh, "tanh": np.tanh, "asinh": np.arcsinh,
    "acosh": np.arccosh, "atanh": np.arctanh, "erf": _erf,
    "sigmoid": lambda x: np.where(x >= 0, 1.0 / (1.0 + np.exp(-np.abs(x))),
                                  np.exp(-np.abs(x)) / (1.0 + np.exp(-np.abs(x)))),
    "relu": lambda x: np.maximum(x, 0), "floor": np.floor, "ceil": np.ceil,
    "round": _round_half_even, "not": np.logical_not, "bitwise_not": np.invert,
    "isnan": np.isnan, "isinf": np.isinf, "isposinf": np.isposinf, "isneginf": np.isneginf,
    "identity": lambda x: x,
}


@kernel(g.UnaryOp)
def unary(p: Props, ins: list[np.ndarray], outs: list[TensorSpec]) -> list[np.ndarray]:
    x = ins[0]
    fn = p["fn"]
    if fn == "bitwise_not":
        return [np.invert(x)]
    with np.errstate(all="ignore"):
        return [finish(UNARY_IMPL[fn](wide(x)), outs[0])]


def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """C-style truncating integer division (what ONNX Runtime and every target implement)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if a.dtype.kind == "u":
            return np.floor_divide(a, np.where(b == 0, 1, b))
        q = np.floor_divide(np.abs(a), np.abs(np.where(b == 0, 1, b)))
        return np.where((a < 0) != (b < 0), -q, q)


def _pow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iu":
        return np.power(a, np.maximum(b, 0)) * (b >= 0) + (b < 0) * (np.abs(a) == 1) * np.power(
            a, np.abs(b) % 2)
    return np.power(a, b)


BINARY_IMPL: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "pow": _pow,
    "max": np.maximum, "min": np.minimum, "mod": np.mod, "fmod": np.fmod, "atan2": np.arctan2,
    "and": np.logical_and, "or": np.logical_or, "xor": np.logical_xor,
    "bitwise_and": np.bitwise_and, "bitwise_or": np.bitwise_or, "bitwise_xor": np.bitwise_xor,
    "eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal, "gt": np.greater,
    "ge": np.greater_equal,
}


@kernel(g.BinaryOp)
def binary(p: Props, ins: list[np.ndarray], outs: list[TensorSpec]) -> list[np.ndarray]:
    fn = p["fn"]
    a, b = ins
    if fn in ("shl", "shr"):
        bits = a.dtype.itemsize * 8
        sh = b.astype(np.uint64)
        big = sh >= bits
        sh = np.where(big, 0, sh).astype(a.dtype)
        r = np.left_shift(a, sh) if fn == "shl" else np.right_shift(a, sh)
        # shifting by >= the width (negative amounts count as huge) empties the value: zero, or
        # for an arithmetic right shift of a signed value its sign fill
        fill = np.right_shift(a, bits - 1) if fn == "shr" and a.dtype.kind == "i" else \
            np.zeros_like(r)
        return [np.where(big, fill, r).astype(a.dtype)]
    if fn in ("bitwise_and", "bitwise_or", "bitwise_xor", "and", "or", "xor"):
        return [BINARY_IMPL[fn](a, b)]
    if fn in ("eq", "ne", "lt", "le", "gt", "ge"):
        return [BINARY_IMPL[fn](a, b)]
    wa, wb = wide(a), wide(b)
    with np.errstate(all="ignore"):
        if fn == "div":
            r = _int_div(wa, wb) if wa.dtype.kind in "iu" else np.divide(wa, wb)
        elif fn == "mod" and wa.dtype.kind in "iu":
            r = np.mod(wa, np.where(wb == 0, 1, wb))
        elif fn == "fmod" and wa.dtype.kind in "iu":
            r = np.fmod(wa, np.where(wb == 0, 1, wb))
        else:
            r = BINARY_IMPL[fn](wa, wb)
    return [finish(r, outs[0])]


@kernel(g.WhereOp)
def where(p: Props, ins: list[np.ndarray], outs: list[TensorSpec]) -> list[np.ndarray]:
    return [np.where(ins[0], ins[1], ins[2]).astype(_np(outs[0].dtype), copy=False)]


#: Float8 formats whose ``saturate`` flag clamps out-of-range values (and infinities) to +-max.
_SATURATING_FLOAT8 = ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz")


def _to_e8m0(x: np.ndarray, saturate: bool) -> np.ndarray:
    """float -> float8_e8m0fnu (powers of two) rounding up, as ONNX's default ``round_mode``:
    the float32 exponent, plus one when any mantissa bit is set; NaN/Inf map to NaN (0xFF)."""
    import ml_dtypes

    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    exp = ((bits >> 23) & 0xFF).astype(np.uint16)
    special = exp == 0xFF
    up = ((bits & 0x7FFFFF) > 0) & ~special
    if saturate:
        up &= exp != 0xFE
    exp = np.where(special, 0xFF, exp + up).astype(np.uint8)
    return exp.view(ml_dtypes.float8_e8m0fnu)


def _float_to_int(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Truncate toward zero, then wrap modulo 2^bits (NaN -> 0): what ONNX's reference and x86
    conversions give for out-of-range values, negative values cast to unsigned included."""
    with np.errstate(invalid="ignore"):
        t = np.nan_to_num(np.trunc(x.astype(np.float64)), nan=0.0, posinf=0.0, neginf=0.0)
    t = np.clip(t, -(2.0**63), np.nextafter(2.0**64, 0))
    neg = np.where(t < 0, t, 0).astype(np.int64).view(np.uint64)
    pos = np.where(t >= 0, t, 0).astype(np.uint64)
    u = pos + neg  # modular: the two's-complement bits of the truncated value
    if dtypes.dtype(spec.dtype).kind == "int":
        return finish(u.view(np.int64), spec)
    return finish(u, spec)


@kernel(g.CastOp)
def cast(p: Props, ins: list[np.ndarray], outs: list[TensorSpec]) -> list[np.ndarray]:
    x, to = ins[0], dtypes.dtype(p["to"])
    src = dtypes.from_numpy(x.dtype)
    saturate = bool(p.get("saturate", True))
    if to.kind == "bool":
        return [x.astype(np.float64) != 0 if src.kind == "float" else x != 0]
    if to.kind == "float":
        if src.kind == "bool":
            return [x.astype(to.numpy)]
        if to.name == "float8_e8m0fnu":
            return [_to_e8m0(x.astype(np.float64), saturate)]
        x64 = wide(x).astype(np.float64)
        if to.name in _SATURATING_FLOAT8 and saturate:
            import ml_dtypes

            fin = float(ml_dtypes.finfo(to.numpy).max)
            x64 = np.clip(x64, -fin, fin)  # NaN stays NaN; +-inf become +-max
        # ml_dtypes rounds float64 -> narrow types to nearest even in one step; without
        # saturation, overflow gives inf (e5m2) or NaN (formats without infinities)
        with np.errstate(all="ignore"):
            return [x64.astype(to.numpy)]
    if src.kind == "float":
        return [_float_to_int(x, outs[0])]
    return [finish(wide(x) if src.kind != "bool" else x.astype(np.int64), outs[0])]


# ------------------------------------------------------------------------------ linear algebra


@kernel(g.MatMulOp)
def matmul(p: Props, ins: list[np.ndarray], outs: list[TensorSpec]) -> list[np.ndarray]:
    a, b = wide(ins[0]), wide(ins[1])
    return [finish(np.matmul(a, b), outs[0])]


def _pad_spatial(x: np.ndarray, begins: Sequence[int], ends: Sequence[int],
                 value: float) -> np.ndarray:
    nsp = len(begins)
    widths = [(0, 0)] * (x.ndim - nsp) + [(max(b, 0), max(e, 0)) for b, e in
                                         zip(begins, ends, strict=True)]
    x = np.pad(x, widths, constant_values=value)
    crop = [slice(None)] * (x.ndim - nsp) + [
        slice(-min(b, 0), x.shape[x.ndim - nsp + i] + min(e, 0))
        for i, (b, e) in enumerate(zip(begins, ends, strict=True))
    ]
    return x[tuple(crop)]


@kernel(g.ConvOp)
def conv(p: Props, ins: list[np.ndarray], outs: list[TensorSpec]) -> list[np.ndarray]:
    x, w = wide(ins[0]), wide(ins[1])
    nsp = x.ndim - 2
    s, d, pads, grp = p["strides"], p["dilations"], p["pads"], p["group"]
    out_sp = outs[0].shape[2:]
    xp = _pad_spatial(x, pads[:nsp], pads[nsp:], 0)
    n, c = x.shape[:2]
    f = w.shape[0]
    cg, fg = c // grp, f // grp
    acc = np.zeros((n, f, *out_sp), dtype=np.result_type(x.dtype, w.dtype))
    xg = xp.reshape(n, grp, cg, *xp.shape[2:])
    wg = w.reshape(grp, fg, cg, *w.shape[2:])
    for koff in np.ndindex(*w.shape[2:]):
        sl = tuple(
            slice(koff[i] * d[i], koff[i] * d[i] + (out_sp[i] - 1) * s[i] + 1, s[i])
            for i in range(nsp)
        )
        patch = xg[(slice(None), slice(None), slice(None), *sl)]  # n, G, cg, *out
        wk = wg[(slice(None), slice(None), slice(None), *koff)]  # G, fg, cg
        acc += np.einsum("ngc...,gfc->ngf...", patch, wk, optimize=True).reshape(acc.shape)
    if len(ins) == 3:
        acc = acc + wide(ins[2]).reshape(1, f, *([1] * nsp))
    return [finish(acc, outs[0])]


@kernel(g.PoolOp)
def pool(p: Props, ins: list[np.ndarray], outs: list[TensorSpec]) -> list[np.ndarray]:
    x = wide(ins[0])
    nsp = x.ndim - 2
    k, s, d, pads = p["kernel"], p["strides"], p["dilations"], p["pads"]
    out_sp = outs[0].shape[2:]
    kind = p["kind"]
    # extra padding at the end so that ceil-mode windows exist; it never counts in averages
    need = [(out_sp[i] - 1) * s[i] + d[i] * (k[i] - 1) + 1 for i in range(nsp)]
    extra = [max(0, need[i] - (x.shape[2 + i] + pads[i] + pads[nsp + i])) for i in range(nsp)]
    fill = -np.inf if kind == "max" else 0.0
    if x.dtype.kind in "iu" and kind == "max":
        fill = np.iinfo(x.dtype).min
    xp = _pad_spatial(x, pads[:nsp], [pads[nsp + i] + extra[i] for i in range(nsp)], fill)
    acc: np.ndarray | None = None
    ones = np.ones((1, 1, *x.shape[2:]))
    mask_explicit = _pad_spatial(ones, pads[:nsp], [pads[nsp + i] + extra[i] for i in range(nsp)],
                                 0.0)
    mask_with_pads = _pad_spatial(np.ones((1, 1, *[x.shape[2 + i] + pads[i] + pads[nsp + i]
                                                    for i in range(nsp)])),
                                  [0] * nsp, extra, 0.0)
    count = None
    for koff in np.ndindex(*k):
        sl = (slice(None), slice(None), *(
            slice(koff[i] * d[i], koff[i] * d[i] + (out_sp[i] - 1) * s[i] + 1, s[i])
            for i in range(nsp)))
        patch = xp[sl]
        if kind == "max":
            acc = patch if acc is None else np.maximum(acc, patch)
        elif kind == "avg":
            acc = patch if acc is None else acc + patch
            m = (mask_with_pads if p["count_include_pad"] else mask_explicit)[sl]
            count = m if count is None else count + m
        else:
            pw = np.abs(patch) ** p.get("p", 2)
            acc = pw if acc is None else acc + pw
    assert acc is not None
    if kind == "avg":
        assert count is not None
        acc = acc / np.maximum(count, 1)
    elif kind == "lp":
        acc = acc ** (1.0 / p.get("p", 2))
    return [finish(acc, outs[0])]


# ------------------------------------------------------------------------------ reductions


@kernel(g.ReduceOp)
def reduce(p: Props, ins: list[np.ndarray], outs: list[TensorSpec]) -> list[np.ndarray]:
    x = wide(ins[0])
    axes = tuple(a % x.ndim for a in p["axes"]) if x.ndim else ()
    kd = bool(p["keepdims"])
    kind = p["kind"]
    if not axes:
        return [finish(x, outs[0])]
    if kind == "sum":
        r = np.sum(x, axis=axes, keepdims=kd)
    elif kind == "prod":
        r = np.prod(x, axis=axes, keepdims=kd)
    else:
        fn = np.max if kind == "max" else np.min
        if x.dtype.kind == "f":
            init = -np.inf if kind == "max" else np.inf
        elif x.dtype.kind == "b":
            init = kind == "min"
        else:
            info = np.iinfo(ins[0].dtype)
            init = info.min if kind == "max" else info.max
        r = fn(x, axis=axes, keepdims=kd, initial=init)
    return [finish(r, outs[0])]


@kernel(g.ArgReduceOp)
def arg_reduce(p: Props, ins: list[np.ndarray], outs: list[TensorSpec]) -> list[np.ndarray]:
    x = wide(ins[0])
    ax = p["axis"] % x.ndim
    fn = np.argmax if p["kind"] == "max" else np.argmin
    if p["select_last_index"]:
        r = x.shape[ax] - 1 - fn(np.flip(x, ax), axis=ax)
    else:
        r = fn(x, axis=ax)
    if p["keepdims"]:
        r = np.expand_dims(r, ax)
    return [r.astype(np.int64)]


@kernel(g.SoftmaxOp)
def softmax(p: Props, ins: list[np.ndarray], outs: list[TensorSpec]) -> list[np.ndarray]:
    x = wide(ins[0])
    ax = p["axis"]
    with np.errstate(all="ignore"):
        e = np.exp(x - np.max(x, axis=ax, keepdims=True))
        return [finish(e / np.sum(e, axis=ax, keepdims=True), outs[0])]


@kernel(g.LayerNormOp)
def layer_norm(p: Props, ins: list[np.ndarray], outs: list[TensorSpec]) -> list[np.ndarray]:
    x = wide(ins[0])
    axes = tuple(range(p["axis"] % x.ndim, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + p["epsilon"]) * wide(ins[1])
    if len(ins) == 3:
        y = y + wide(ins[2])
    return [finish(y, outs[0])]


@kernel(g.RMSNormOp)
def rms_norm(p: Props, ins: list[np.ndarray], outs: list[TensorSpec]) -> list[np.ndarray]:
    x = wide(ins[0])
    axes = tuple(range(p["axis"] % x.ndim, x.ndim))
    y = x / np.sqrt((x * x).mean(axis=axes, keepdims=True) + p["epsilon"]) * wide(ins[1])
    return [finish(y, outs[0])]


@kernel(g.CumSumOp)
def cumsum(p: Props, ins: list[np.ndarray], outs: list[TensorSpec]) -> list[np.ndarray]:
    x = wide(ins[0])
    ax = p["axis"] % x.ndim
    if p["reverse"]:
        x = np.flip(x, ax)
    r = np.cumsum(x, axis=ax)
    if p["exclusive"]:
        r = r - x
    if p["reverse"]:
        r = np.flip(r, ax)
    return [finish(r, outs[0])]


# ------------------------------------------------------------------------------ data movement


def _concrete(spec: TensorSpec, x: np.ndarray | None = None) -> tuple[int, ...]:
    if spec.is_static:
        return tuple(int(d) for d in spec.shape)  # type: ignore[arg-type]
    return tuple(-1 if d is None else d for d in spec.shape)


@kernel(g.ReshapeOp)
def reshape(p: Props, ins: list[np.ndarray], outs: list[TensorSpec]) -> list[np.ndarray]:
    return [ins[0].reshape(_concrete(outs[0]))]


@kernel(g.TransposeOp)
def transpose(p: Props, ins: list[np.ndarray], outs: list[TensorSpec]) -> list[np.ndarray]:
    return [np.ascontiguousarray(np.transpose(ins[0], p["perm"]))]


@kernel(g.SliceOp)
def slice_(p: Props, ins: list[np.ndarray], outs: list[TensorSpec]) -> list[np.ndarray]:
    x = ins[0]
    idx = []
    for dim, (st, step) in enumerate(zip(p["starts"], p["steps"], strict=True)):
        cnt = outs[0].shape[dim]
        if cnt is None:
            raise KernelError("graph.slice with a dynamic result dim")
        stop = st + cnt * step
        idx.append(slice(st, stop if stop >= 0 else None, step))
    return [np.ascontiguousarray(x[tuple(idx)])]


@kernel(g.ConcatOp)
def concat(p: Props, ins: list[np.ndarray], outs: list[TensorSpec]) -> list[np.ndarray]:
    return [np.concatenate(ins, axis=p["axis"])]


@kernel(g.PadOp)
def pad(p: Props, ins: list[np.ndarray], outs: list[TensorSpec]) -> list[np.ndarray]:
    x = ins[0]
    r = x.ndim
    pads = p["pads"]
    crop = tuple(slice(-min(pads[i], 0), x.shape[i] + min(pads[r + i], 0)) for i in range(r))
    x = x[crop]
    widths = [(max(pads[i], 0), max(pads[r + i], 0)) for i in range(r)]
    mode = p["mode"]
    if mode == "constant":
        val = p["value"]
        if x.dtype.kind in "iub":
            val = int(val) if x.dtype.kind != "b" else bool(val)
        return [np.pad(x, widths, mode="constant", constant_values=np.array(val).astype(x.dtype))]
    return [np.pad(x, widths, mode={"reflect": "reflect", "edge": "edge", "wrap": "wrap"}[mode])]


@kernel(g.BroadcastOp)
def broadcast(p: Props, ins: list[np.ndarray], outs: list[TensorSpec]) -> list[np.ndarray]:
    return [np.ascontiguousarray(np.broadcast_to(ins[0], _concrete(outs[0])))]


def _checked_indices(idx: np.ndarray, n: int, what: str) -> np.ndarray:
    idx = idx.astype(np.int64)
    if idx.size and (idx.min() < -n or idx.max() >= n):
        bad = idx[(idx < -n) | (idx >= n)].ravel()[0]
        raise KernelError(f"{what}: index {bad} out of range for dimension of size {n}")
    return np.where(idx < 0, idx + n, idx)


@kernel(g.GatherOp)
def gather(p: Props, ins: list[np.ndarray], outs: list[TensorSpec]) -> list[np.ndarray]:
    x, idx = ins
    ax = p["axis"] % x.ndim
    return [np.take(x, _checked_indices(idx, x.shape[ax], "graph.gather"), axis=ax)]


@kernel(g.GatherElementsOp)
def gather_elements(p: Props, ins: list[np.ndarray], outs: list[TensorSpec]) -> list[np.ndarray]:
    x, idx = ins
    ax = p["axis"] % x.ndim
    ii = _checked_indices(idx, x.shape[ax], "graph.gather_elements")
    return [np.take_along_axis(x, ii, axis=ax)]


@kernel(g.GatherNDOp)
def gather_nd(p: Props, ins: list[np.ndarray], outs: list[TensorSpec]) -> list[np.ndarray]:
    x, idx = ins
    b = p["batch_dims"]
    k = idx.shape[-1]
    bshape = x.shape[:b]
    nb = int(np.prod(bshape)) if b else 1
    xb = x.reshape(nb, *x.shape[b:])
    ib = idx.reshape(nb, -1, k).astype(np.int64)
    res = []
    for i in range(nb):
        cols = tuple(_checked_indices(ib[i][:, j], x.shape[b + j], "graph.gather_nd")
                     for j in range(k))
        res.append(xb[i][cols])
    out = np.stack(res) if res else np.zeros((0,), x.dtype)
    return [out.reshape(_concrete(outs[0]))]


_UFUNC = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


@kernel(g.ScatterElementsOp)
def scatter_elements(p: Props, ins: list[np.ndarray], outs: list[TensorSpec]) -> list[np.ndarray]:
    x, idx, upd = ins
    ax = p["axis"] % x.ndim
    out = x.copy()
    ii = _checked_indices(idx, x.shape[ax], "graph.scatter_elements")
    full = list(np.indices(ii.shape, sparse=True))
    full[ax] = ii
    if p["reduction"] == "none":
        out[tuple(full)] = upd
    else:
        _UFUNC[p["reduction"]].at(out, tuple(full), upd)
    return [out]


@kernel(g.ScatterNDOp)
def scatter_nd(p: Props, ins: list[np.ndarray], outs: list[TensorSpec]) -> list[np.ndarray]:
    x, idx, upd = ins
    out = x.copy()
    k = idx.shape[-1]
    flat = idx.reshape(-1, k)
    cols = tuple(_checked_indices(flat[:, j], x.shape[j], "graph.scatter_nd") for j in range(k))
    u = upd.reshape(flat.shape[0], *x.shape[k:])
    if p["reduction"] == "none":
        out[cols] = u
    else:
        _UFUNC[p["reduction"]].at(out, cols, u)
    return [out]


def _sort_keys(x: np.ndarray, descending: bool) -> np.ndarray:
    """Keys whose stable ascending sort gives the wanted order with lower indices first on
    ties; NaN sorts as the largest value, as ONNX Runtime does."""
    w = wide(x)
    if w.dtype.kind == "f":
        w = np.where(np.isnan(w), np.inf, w)
        return -w if descending else w
    if w.dtype.kind == "b":
        w = w.astype(np.int64)
    if descending:
        return np.iinfo(w.dtype).max - w if w.dtype.kind == "u" else -(w.astype(np.float64)) \
            if w.dtype == np.int64 and w.size and w.min() == np.iinfo(np.int64).min else -w
    return w


@kernel(g.TopKOp)
def topk(p: Props, ins: list[np.ndarray], outs: list[TensorSpec]) -> list[np.ndarray]:
    x = ins[0]
    ax = p["axis"] % x.ndim
    order = np.argsort(_sort_keys(x, bool(p["largest"])), axis=ax, kind="stable")
    order = np.take(order, np.arange(p["k"]), axis=ax)
    return [np.take_along_axis(x, order, axis=ax), order.astype(np.int64)]


@kernel(g.SortOp)
def sort(p: Props, ins: list[np.ndarray], outs: list[TensorSpec]) -> list[np.ndarray]:
    x = ins[0]
    ax = p["axis"] % x.ndim
    order = np.argsort(_sort_keys(x, bool(p["descending"])), axis=ax, kind="stable")
    return [np.take_along_axis(x, order, axis=ax), order.astype(np.int64)]


def run_kernel(cls: type[g.GraphOp], props: Props, ins: list[np.ndarray],
               outs: list[TensorSpec]) -> list[np.ndarray]:
    try:
        fn = KERNELS[cls]
    except KeyError:
        raise KernelError(f"the reference interpreter has no kernel for {cls.name}") from None
    res = fn(props, ins, outs)
    for r, spec in zip(res, outs, strict=True):
        if r.dtype != _np(spec.dtype):
            raise AssertionError(f"{cls.name} kernel returned {r.dtype}, expected {spec.dtype}")
    return res

