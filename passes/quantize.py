"""Post-training quantization as graph-level passes: ``quantize-int8``, ``quantize-w4``,
``quantize-w2`` and ``quantize-fp8``.

Every quantized computation is spelled in *existing* core ops (div/round/max/min/cast, matmul or
conv with ``out_dtype``, mul/add), so the reference interpreter executes it exactly and every
target sees one closed op set; a target that has integer or fp8 units pattern-matches
``cast -> matmul{out_dtype=int32} -> cast -> mul`` and lowers it natively. Weights become new
narrow constants (int8, int4, int2, float8_e4m3fn) in the weight store, so the bytes saved are real.

Activation scales come from calibration (``portc.passes.calibration``) carried in the IR as the
``portc.act_range`` attribute of each matmul/conv; ops without it stay in float. Rewritten
matmul/convs carry ``portc.quantized = "<scheme>"`` so that reports and lowerings can find them.

Static per-tensor int8 activations lose accuracy on BERT-style models where a few LayerNorm
channels and the post-GELU FFN activations carry outliers (MiniLM: cosine 0.957 with plain
min-max scales; one-layer-at-a-time sweeps, ``sensitivity_sweep``, point at the FFN matmuls).
``tune_int8`` fixes that without leaving per-tensor static scales: per matmul it searches the
SmoothQuant strength, the clipping ratio and symmetric vs zero-point quantization on calibration
rows by layer output error, and writes the choice onto the op (``portc.smooth_alpha``,
``portc.act_asym``, a tuned ``portc.act_range``). ``quantize_int8_with_fallback`` then keeps the
most sensitive matmuls in float only while a check batch misses a cosine target, and says why.
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import ml_dtypes
import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
)
from xdsl.rewriter import InsertPoint

from portc.compiler.errors import IRError
from portc.compiler.program import PortcContext, Program, weights_of
from portc.compiler.weights import WeightStore
from portc.dialects import dtypes
from portc.dialects import graph as g
from portc.dialects.graph import Props, TensorSpec, spec_of
from portc.passes.calibration import (
    CHAN_ABSMAX_ATTR,
    CHAN_SQMEAN_ATTR,
    HESSIAN_ATTR,
    Calibration,
    act_asym_of,
    act_range,
    chan_stat,
    op_key,
    quantizable_ops,
    smooth_alpha_of,
)

QUANTIZED_ATTR = "portc.quantized"
#: details of a quantized op's scheme ("per_token,smooth=0.5", "asym", "awq") for reports
DETAIL_ATTR = "portc.quant_detail"
#: on a weight matmul/conv the pass left in float: why (kept by policy, no calibration, ...)
FLOAT_REASON_ATTR = "portc.float_reason"
#: the calibration key ("graph.matmul#7") of a weight op, so reports name layers kept in float
LAYER_KEY_ATTR = "portc.layer_key"
ACT_GRANULARITIES = ("per_tensor", "per_token")
INT8_MAX = 127
FP8_MAX = float(ml_dtypes.finfo(ml_dtypes.float8_e4m3fn).max)  # 448
GROUP_SIZES = (32, 64, 128)


# ------------------------------------------------------------------------------------ helpers


class _Emitter:
    """Inserts graph ops before an anchor op, inferring result types like ``GraphBuilder``."""

    def __init__(self, rewriter: PatternRewriter, anchor: Operation, weights: WeightStore,
                 hint: str) -> None:
        self.rewriter, self.anchor, self.weights, self.hint = rewriter, anchor, weights, hint

    def op(self, cls: type[g.GraphOp], operands: Sequence[SSAValue], props: Props | None = None,
           result: TensorSpec | None = None) -> SSAValue:
        props = {k: v for k, v in (props or {}).items() if v is not None}
        results = [result] if result is not None else cls.infer(
            [spec_of(v) for v in operands], props)
        new = cls.build_op(operands, results, props)
        self.rewriter.insert(new, InsertPoint.before(self.anchor))
        return new.results[0]

    def const(self, arr: np.ndarray, suffix: str) -> SSAValue:
        arr = np.ascontiguousarray(arr)
        name = self.weights.add(arr, f"{self.hint}.{suffix}")
        spec = TensorSpec(tuple(arr.shape), dtypes.from_numpy(arr.dtype).name)
        c = g.ConstantOp.build_op([], [spec], {"resource": name})
        self.rewriter.insert(c, InsertPoint.before(self.anchor))
        return c.results[0]

    def binary(self, fn: str, a: SSAValue, b: SSAValue) -> SSAValue:
        return self.op(g.BinaryOp, [a, b], {"fn": fn})

    def cast(self, x: SSAValue, to: str, saturate: bool | None = None) -> SSAValue:
        return self.op(g.CastOp, [x], {"to": to, "saturate": saturate})

    def reshape(self, x: SSAValue, shape: Sequence[int]) -> SSAValue:
        return self.op(g.ReshapeOp, [x], result=TensorSpec(tuple(shape), spec_of(x).dtype))


def _const_array(v: SSAValue, weights: WeightStore) -> np.ndarray | None:
    owner = v.owner
    if isinstance(owner, g.ConstantOp):
        return weights[owner.resource.data]
    return None


def _hint(op: Operation) -> str:
    return op.results[0].name_hint or op.name.split(".")[-1]


def _float32_operands(op: g.MatMulOp | g.ConvOp) -> bool:
    return all(spec_of(v).dtype == "float32" for v in op.operands) and (
        spec_of(op.results[0]).dtype == "float32")


def _weight_of(op: Operation, weights: WeightStore) -> np.ndarray | None:
    """The float32 constant weight of a matmul (2-D rhs) or conv, or None if not quantizable."""
    if not isinstance(op, (g.MatMulOp, g.ConvOp)) or not _float32_operands(op):
        return None
    w = _const_array(op.operands[1], weights)
    if w is None or _const_array(op.operands[0], weights) is not None:
        return None
    if isinstance(op, g.MatMulOp) and w.ndim != 2:
        return None
    return w


def _act_scale(absmax: float, qmax: float) -> np.float32:
    """Per-tensor symmetric scale; an all-zero activation gets 1 so that nothing divides by 0."""
    s = np.float32(absmax / qmax)
    return s if s > 0 and np.isfinite(s) else np.float32(1.0)


def weight_scales_int8(w: np.ndarray, axis: int, per_channel: bool = True) -> np.ndarray:
    """Symmetric int8 scales, one per slice along ``axis`` (float32, zeros replaced by 1)."""
    red = tuple(i for i in range(w.ndim) if i != axis) if per_channel else None
    amax = np.max(np.abs(w.astype(np.float64)), axis=red)
    s = (np.broadcast_to(amax, (w.shape[axis],)) / INT8_MAX).astype(np.float32)
    return np.where(s > 0, s, np.float32(1.0)).astype(np.float32)


def quantize_int8(w: np.ndarray, scales: np.ndarray, axis: int) -> np.ndarray:
    """``clip(round_half_even(w / s), -127, 127)`` computed in float64, as int8."""
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.round(w.astype(np.float64) / scales.astype(np.float64).reshape(shape))
    return np.clip(q, -INT8_MAX, INT8_MAX).astype(np.int8)


def _quantize_activation(e: _Emitter, x: SSAValue, scale: np.float32) -> SSAValue:
    """``cast(clip(round(x / s), -127, 127) -> int8)``: the standard symmetric quantizer."""
    xs = e.binary("div", x, e.const(np.array(scale, np.float32), "act_scale"))
    r = e.op(g.UnaryOp, [xs], {"fn": "round"})
    r = e.binary("max", r, e.const(np.array(-INT8_MAX, np.float32), "qmin"))
    r = e.binary("min", r, e.const(np.array(INT8_MAX, np.float32), "qmax"))
    return e.cast(r, "int8")


def _core_op(e: _Emitter, op: g.MatMulOp | g.ConvOp, x: SSAValue, w: SSAValue,
             out_dtype: str | None, scheme: str) -> SSAValue:
    """The op itself on new operands, without the conv bias (added after rescaling)."""
    p = op.props()
    p.pop("out_dtype", None)
    p["out_dtype"] = out_dtype
    y = e.op(type(op), [x, w], p)
    assert y.owner is not None
    y.owner.attributes[QUANTIZED_ATTR] = StringAttr(scheme)
    return y


def _epilogue(e: _Emitter, op: g.MatMulOp | g.ConvOp, y: SSAValue,
              scale: np.ndarray | None) -> SSAValue:
    """Multiply by the per-output-channel scale and add the conv bias, in float32."""
    rank = spec_of(y).rank
    if scale is not None:
        s = scale.astype(np.float32)
        if isinstance(op, g.ConvOp) and s.size > 1:
            s = s.reshape((1, -1) + (1,) * (rank - 2))
        y = e.binary("mul", y, e.const(s, "out_scale"))
    if isinstance(op, g.ConvOp) and op.bias is not None:
        f = spec_of(op.bias).shape[0]
        b = e.reshape(op.bias, (1, int(f or 1)) + (1,) * (rank - 2))
        y = e.binary("add", y, b)
    return y


def _replace(rewriter: PatternRewriter, op: Operation, y: SSAValue) -> None:
    """Swap in the quantized result and drop the float weight if nothing else reads it, so the
    module (and a bundle built from it) no longer carries the float copy."""
    y.name_hint = op.results[0].name_hint
    old_w = op.operands[1].owner
    rewriter.replace(op, [], [y])
    if isinstance(old_w, g.ConstantOp) and not old_w.results[0].uses:
        rewriter.erase(old_w)


# ------------------------------------------------------------------------------------ int8


def _parse_keep(keep_float: str) -> set[int]:
    """``"7,15"`` or ``"graph.matmul#7,graph.matmul#15"`` -> ordinals among matmul/conv ops."""
    out: set[int] = set()
    for tok in (t.strip() for t in keep_float.split(",")):
        if tok:
            try:
                out.add(int(tok.rsplit("#", 1)[-1]))
            except ValueError:
                raise IRError(f"keep_float: '{tok}' is not a layer ordinal or key") from None
    return out


def _mark_float(module: ModuleOp, weights: WeightStore, keep: set[int], needs_range: bool
                ) -> set[Operation]:
    """Tag weight matmul/convs that will stay in float with ``FLOAT_REASON_ATTR``; returns the
    ops kept by the ``keep_float`` policy (the patterns skip them)."""
    kept: set[Operation] = set()
    for i, o in enumerate(quantizable_ops(module)):
        if _weight_of(o, weights) is None:
            continue
        o.attributes[LAYER_KEY_ATTR] = StringAttr(f"{o.name}#{i}")
        if i in keep:
            o.attributes[FLOAT_REASON_ATTR] = StringAttr("keep_float (sensitivity policy)")
            kept.add(o)
        elif needs_range and act_range(o) is None:
            o.attributes[FLOAT_REASON_ATTR] = StringAttr("no calibrated activation range")
    return kept


def _smooth_factors(w: np.ndarray, xmax: np.ndarray, alpha: float) -> np.ndarray:
    """SmoothQuant: ``s_k = max|x_k|^a / max|W_k|^(1-a)`` per input channel k (float32, > 0)."""
    wmax = np.max(np.abs(w.astype(np.float64)), axis=1)
    s = np.power(np.maximum(xmax, 1e-5), alpha) / np.power(np.maximum(wmax, 1e-5), 1.0 - alpha)
    s = np.where(np.isfinite(s) & (s > 0), s, 1.0)
    return s.astype(np.float32)


def _dynamic_row_scale(e: _Emitter, x: SSAValue) -> SSAValue:
    """Per-token scale computed at run time: ``max(max_k |x[..., k]|, tiny) / 127`` [..., 1]."""
    rank = spec_of(x).rank
    a = e.op(g.UnaryOp, [x], {"fn": "abs"})
    m = e.op(g.ReduceOp, [a], {"kind": "max", "axes": (rank - 1,), "keepdims": True})
    m = e.binary("max", m, e.const(np.array(np.finfo(np.float32).tiny, np.float32), "tiny"))
    return e.binary("div", m, e.const(np.array(INT8_MAX, np.float32), "qmax_f"))


def _quantize_activation_asym(e: _Emitter, x: SSAValue, scale: np.float32, zp: int) -> SSAValue:
    """``cast(clip(round(x / s) + zp, -128, 127) -> int8)``: asymmetric (zero-point) quantizer."""
    xs = e.binary("div", x, e.const(np.array(scale, np.float32), "act_scale"))
    r = e.op(g.UnaryOp, [xs], {"fn": "round"})
    r = e.binary("add", r, e.const(np.array(zp, np.float32), "act_zp"))
    r = e.binary("max", r, e.const(np.array(-128, np.float32), "qmin"))
    r = e.binary("min", r, e.const(np.array(INT8_MAX, np.float32), "qmax"))
    return e.cast(r, "int8")


def asym_params(lo: float, hi: float) -> tuple[np.float32, int]:
    """Asymmetric int8 scale and zero point for ``[lo, hi]`` (widened to contain 0), so that
    ``q = round(x / s) + zp`` maps lo..hi onto -128..127 and 0 exactly onto ``zp``."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    s = np.float32((hi - lo) / 255.0)
    if not (s > 0 and np.isfinite(s)):
        return np.float32(1.0), 0
    zp = int(np.clip(-128 - np.round(np.float64(lo) / np.float64(s)), -128, 127))
    return s, zp


class QuantizeInt8Pattern(RewritePattern):
    """matmul/conv with a constant float weight and a calibrated activation -> int8 x int8 ->
    int32 accumulate -> float rescale by ``s_x * s_w``.

    Options: ``act_granularity="per_token"`` (matmul only) computes one symmetric activation
    scale per row at run time (reduce max |x|); ``asymmetric`` uses a zero point for static
    per-tensor matmul activations (twice the resolution on one-sided post-GELU/softmax ranges), keeping the
    int32 accumulation exact by subtracting ``zp * colsum(W_q)``; ``smooth_alpha > 0`` migrates
    per-channel activation outliers into the weight (SmoothQuant; needs per-channel stats)."""

    def __init__(self, weights: WeightStore, per_channel: bool, act_granularity: str = "per_tensor",
                 asymmetric: bool = False, smooth_alpha: float = 0.0,
                 skip: set[Operation] | None = None) -> None:
        self.weights, self.per_channel = weights, per_channel
        self.granularity, self.asymmetric, self.alpha = act_granularity, asymmetric, smooth_alpha
        self.skip = skip or set()

    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter) -> None:
        w = _weight_of(op, self.weights)
        rng = act_range(op)
        if w is None or rng is None or op in self.skip:
            return
        assert isinstance(op, (g.MatMulOp, g.ConvOp))
        is_mm = isinstance(op, g.MatMulOp)
        axis = 1 if is_mm else 0  # [K,N] columns / [F,C,...] filters
        e = _Emitter(rewriter, op, self.weights, _hint(op))
        x = op.operands[0]
        detail: list[str] = []
        xmax = chan_stat(op, CHAN_ABSMAX_ATTR) if is_mm else None
        tuned_alpha = smooth_alpha_of(op)  # per-layer choice of tune_int8, if any
        alpha = self.alpha if tuned_alpha is None else tuned_alpha
        asymmetric = self.asymmetric if (a_op := act_asym_of(op)) is None else a_op
        if tuned_alpha is not None and tuned_alpha > 0 and (
                xmax is None or xmax.shape[0] != w.shape[0]):
            raise IRError(f"{op.name} ({_hint(op)}): a tuned smoothing strength needs the "
                          f"per-channel statistics ({CHAN_ABSMAX_ATTR}) it was tuned with")
        if alpha > 0 and xmax is not None and xmax.shape[0] == w.shape[0]:
            sm = _smooth_factors(w, xmax, alpha)
            w = (w.astype(np.float64) * sm.astype(np.float64)[:, None]).astype(np.float32)
            x = e.binary("mul", x, e.const((1.0 / sm.astype(np.float64)).astype(np.float32),
                                           "smooth_inv"))
            if tuned_alpha is None:  # a tuned act_range already describes x / s
                inv = (1.0 / sm.astype(np.float64)).astype(np.float32).astype(np.float64)
                amax = float(np.max(xmax * inv))
                rng = (-amax, amax) if rng[0] < 0 else (0.0, amax)
            detail.append(f"smooth={alpha:g}")
        s_w = weight_scales_int8(w, axis, self.per_channel)
        wq = quantize_int8(w, s_w, axis)
        s_w64 = s_w.astype(np.float64)
        if self.granularity == "per_token" and is_mm:
            s_row = _dynamic_row_scale(e, x)
            xs = e.binary("div", x, s_row)
            r = e.op(g.UnaryOp, [xs], {"fn": "round"})
            r = e.binary("max", r, e.const(np.array(-INT8_MAX, np.float32), "qmin"))
            r = e.binary("min", r, e.const(np.array(INT8_MAX, np.float32), "qmax"))
            acc = _core_op(e, op, e.cast(r, "int8"), e.const(wq, "w_int8"), "int32", "int8")
            y = e.binary("mul", e.cast(acc, "float32"), s_row)
            y = _epilogue(e, op, y, s_w)
            detail.append("per_token")
        elif asymmetric and is_mm:
            # zero point: all 256 levels on [lo, hi] (halves the step for post-GELU/softmax)
            s_x, zp = asym_params(*rng)
            xq = _quantize_activation_asym(e, x, s_x, zp)
            acc = _core_op(e, op, xq, e.const(wq, "w_int8"), "int32", "int8")
            corr = (np.int64(zp) * wq.astype(np.int64).sum(axis=0)).astype(np.int32)
            acc = e.binary("sub", acc, e.const(corr, "zp_colsum"))
            y = e.cast(acc, "float32")
            y = _epilogue(e, op, y, (np.float64(s_x) * s_w64).astype(np.float32))
            detail.append("asym")
        else:
            s_x = _act_scale(max(abs(rng[0]), abs(rng[1])), INT8_MAX)
            xq = _quantize_activation(e, x, s_x)
            acc = _core_op(e, op, xq, e.const(wq, "w_int8"), "int32", "int8")
            y = e.cast(acc, "float32")
            y = _epilogue(e, op, y, (np.float64(s_x) * s_w64).astype(np.float32))
        if detail:
            assert acc.owner is not None
            acc.owner.attributes[DETAIL_ATTR] = StringAttr(",".join(detail))
        _replace(rewriter, op, y)


def _run_patterns(module: ModuleOp, pattern: RewritePattern) -> None:
    PatternRewriteWalker(GreedyRewritePatternApplier([pattern]),
                         apply_recursively=False).rewrite_module(module)


@dataclass(frozen=True)
class QuantizeInt8Pass(ModulePass):
    """Int8 post-training quantization: per-output-channel weights, per-tensor activations.

    Activation ranges come from the ``portc.act_range`` attributes that
    ``Calibration.annotate`` writes (see ``portc.passes.calibration``); ops without one stay in
    float, and a module with none at all is refused, since an uncalibrated int8 pass would
    silently do nothing."""

    name = "quantize-int8"

    per_channel: bool = True
    #: "per_tensor" (static, calibrated) or "per_token" (dynamic per-row scale, matmuls only)
    act_granularity: str = "per_tensor"
    #: zero-point activations for one-sided static ranges (post-GELU / post-softmax)
    asymmetric: bool = False
    #: SmoothQuant migration strength (0 = off; 0.5 is the usual choice)
    smooth_alpha: float = 0.0
    #: comma-separated matmul/conv ordinals or calibration keys to keep in float
    #: (e.g. the most sensitive layers from ``sensitivity_sweep``)
    keep_float: str = ""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if not any(act_range(o) is not None for o in op.walk()):
            raise IRError("quantize-int8 needs activation ranges: run "
                          "portc.passes.calibration.calibrate(...).annotate(module) first")
        if self.act_granularity not in ACT_GRANULARITIES:
            raise IRError(f"act_granularity must be one of {ACT_GRANULARITIES}")
        if not 0.0 <= self.smooth_alpha <= 1.0:
            raise IRError(f"smooth_alpha must be in [0, 1], got {self.smooth_alpha}")
        weights = weights_of(ctx)
        kept = _mark_float(op, weights, _parse_keep(self.keep_float), needs_range=True)
        _run_patterns(op, QuantizeInt8Pattern(weights, self.per_channel, self.act_granularity,
                                              self.asymmetric, self.smooth_alpha, kept))


# ------------------------------------------------------------------------------------ int8 tuning

#: SmoothQuant strengths and clipping ratios (of the full calibrated range) ``tune_int8`` tries
TUNE_ALPHAS = (0.0, 0.5, 0.7, 0.85)
TUNE_CLIPS = (1.0, 0.9, 0.8, 0.65, 0.5, 0.35)


@dataclass(frozen=True)
class LayerChoice:
    """What ``tune_int8`` chose for one matmul, and the layer output error it measured:
    ``rel_error = |Q(x/s) Q(sW) - xW|^2 / |xW|^2`` on the calibration rows (``baseline`` is
    the same for the plain min-max symmetric quantizer without smoothing)."""

    key: str
    alpha: float
    asym: bool
    clip: float
    lo: float
    hi: float
    rel_error: float
    baseline: float


def _fake_quant_act(x: np.ndarray, lo: float, hi: float, asym: bool) -> np.ndarray:
    """The static per-tensor activation quantizer of ``QuantizeInt8Pattern``, dequantized."""
    if asym:
        s, zp = asym_params(lo, hi)
        q = np.clip(np.round(x / s) + zp, -128, INT8_MAX) - zp
    else:
        s = _act_scale(max(abs(lo), abs(hi)), INT8_MAX)
        q = np.clip(np.round(x / s), -INT8_MAX, INT8_MAX)
    return (q * s).astype(np.float32)


def search_int8_layer(key: str, w: np.ndarray, rows: np.ndarray, chan_lo: np.ndarray,
                      chan_hi: np.ndarray, xmax: np.ndarray,
                      alphas: Sequence[float] = TUNE_ALPHAS,
                      clips: Sequence[float] = TUNE_CLIPS) -> LayerChoice:
    """Layer-wise search for the static int8 scheme of ``rows @ w`` with the least output
    error: SmoothQuant strength ``alpha`` (moves per-channel activation outliers, e.g. the
    few huge LayerNorm channels of BERT, into the weight), clipping ratio of the per-tensor
    activation range (MSE-optimal clipping: heavy-tailed post-GELU activations lose less to
    clipping a rare spike than to a coarse step everywhere) and symmetric vs zero-point
    quantizer. Weights are quantized per output channel exactly as the pass does. The search
    runs in float32 on the calibration rows; it is a proxy, the pass then computes exactly."""
    ref = rows @ w
    ref_energy = float(np.sum(ref.astype(np.float64) ** 2)) or 1.0
    best: LayerChoice | None = None
    baseline = 0.0
    for alpha in alphas:
        sm = _smooth_factors(w, xmax, alpha) if alpha > 0 else np.ones(w.shape[0], np.float32)
        inv = (1.0 / sm.astype(np.float64)).astype(np.float32)
        ws = (w.astype(np.float64) * sm.astype(np.float64)[:, None]).astype(np.float32)
        s_w = weight_scales_int8(ws, 1)
        wd = (quantize_int8(ws, s_w, 1).astype(np.float32) * s_w).astype(np.float32)
        xs = rows * inv
        lo_s = float(min(0.0, np.min(chan_lo * inv)))
        hi_s = float(max(0.0, np.max(chan_hi * inv)))
        for asym in (False, True):
            for c in clips:
                xq = _fake_quant_act(xs, c * lo_s, c * hi_s, asym)
                err = float(np.sum(((xq @ wd) - ref).astype(np.float64) ** 2)) / ref_energy
                if alpha == 0 and not asym and c == 1.0:
                    baseline = err
                if best is None or err < best.rel_error:
                    best = LayerChoice(key, float(alpha), asym, float(c), c * lo_s, c * hi_s,
                                       err, 0.0)
    assert best is not None
    return replace(best, baseline=baseline)


def tune_int8(program: Program, calibration: Calibration,
              alphas: Sequence[float] = TUNE_ALPHAS, clips: Sequence[float] = TUNE_CLIPS
              ) -> tuple[Calibration, list[LayerChoice]]:
    """Per-layer static int8 choices for every constant-weight matmul of ``program`` whose
    calibration kept activation rows (``calibrate(..., samples=R)``): a copy of
    ``calibration`` whose ``ranges``/``smooth``/``asym`` carry them (``annotate`` writes them
    onto the ops, ``quantize-int8`` honours them), and the choices with their errors."""
    weights = program.weights
    out = replace(calibration, ranges=dict(calibration.ranges),
                  smooth=dict(calibration.smooth), asym=dict(calibration.asym))
    choices: list[LayerChoice] = []
    for i, op in enumerate(quantizable_ops(program.module)):
        key = op_key(op, i)
        w = _weight_of(op, weights)
        if (w is None or not isinstance(op, g.MatMulOp) or key not in calibration.rows
                or key not in calibration.chan_absmax):
            continue
        ch = search_int8_layer(key, w, calibration.rows[key], calibration.chan_lo[key],
                               calibration.chan_hi[key],
                               np.asarray(calibration.chan_absmax[key], np.float64),
                               alphas, clips)
        out.ranges[key] = (ch.lo, ch.hi)
        out.smooth[key] = ch.alpha
        out.asym[key] = ch.asym
        choices.append(ch)
    return out, choices


def sensitivity_sweep(program: Program, calibration: Calibration,
                      inputs: Sequence[Mapping[str, np.ndarray]], **pass_options: Any
                      ) -> list[dict[str, Any]]:
    """Quantize one weight matmul/conv at a time (all others kept in float) and measure the
    worst output cosine against the float program on ``inputs``: which layers int8 hurts, in
    program order (``[{"key", "op", "cosine"}]``). One quantize + run per layer, so meant for
    investigation and for choosing ``keep_float``, not for every compile."""
    from portc.runtimes.reference.interpreter import run_program

    refs = [run_program(program, f) for f in inputs]
    keys = [(op_key(o, i), _hint(o)) for i, o in enumerate(quantizable_ops(program.module))
            if _weight_of(o, program.weights) is not None]
    out = []
    for key, hint in keys:
        others = ",".join(k for k, _ in keys if k != key)
        q = quantize(program, QuantizeInt8Pass(keep_float=others, **pass_options), calibration)
        cos = min(_cosine(run_program(q, f)[n], r[n])
                  for f, r in zip(inputs, refs, strict=True) for n in r)
        out.append({"key": key, "op": hint, "cosine": cos})
    return out


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    x, y = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    den = float(np.linalg.norm(x) * np.linalg.norm(y))
    return float(x @ y / den) if den > 0 else float(np.array_equal(x, y))


def quantize_int8_with_fallback(program: Program, calibration: Calibration,
                                choices: Sequence[LayerChoice],
                                check: Sequence[Mapping[str, np.ndarray]],
                                min_cosine: float = 0.99, max_float: int = 4,
                                **pass_options: Any) -> tuple[Program, list[dict[str, Any]]]:
    """Static int8 with automatic mixed precision, the way TensorRT/ATC fall back per layer:
    quantize everything, measure the cosine of every output against the float program on the
    ``check`` inputs, and while the worst one is below ``min_cosine`` keep the not yet kept
    matmul with the largest tuned layer error (``LayerChoice.rel_error``) in float, at most
    ``max_float`` of them. Returns the program and one entry per kept layer saying why
    (the float ops also carry the reason in ``portc.float_reason`` for reports)."""
    from portc.runtimes.reference.interpreter import run_program

    refs = [run_program(program, f) for f in check]

    def worst(q: Program) -> float:
        outs = [run_program(q, f) for f in check]
        return min(_cosine(o[n], r[n]) for o, r in zip(outs, refs, strict=True) for n in r)

    ranked = sorted(choices, key=lambda c: -c.rel_error)
    kept: list[LayerChoice] = []
    fallbacks: list[dict[str, Any]] = []
    while True:
        keep = ",".join(c.key for c in kept)
        q = quantize(program, QuantizeInt8Pass(keep_float=keep, **pass_options), calibration)
        cos = worst(q)
        if fallbacks:
            fallbacks[-1]["cosine_after"] = cos
        if cos >= min_cosine or len(kept) >= min(max_float, len(ranked)):
            break
        nxt = ranked[len(kept)]
        kept.append(nxt)
        fallbacks.append({"key": nxt.key, "layer_error": nxt.rel_error, "cosine_before": cos,
                          "reason": f"model cosine {cos:.4f} < {min_cosine} and this layer has "
                                    f"the largest remaining int8 output error "
                                    f"({nxt.rel_error:.2e})"})
    reasons = {f["key"]: f["reason"] for f in fallbacks}
    for o in q.module.walk():
        k = o.attributes.get(LAYER_KEY_ATTR)
        if isinstance(k, StringAttr) and k.data in reasons:
            o.attributes[FLOAT_REASON_ATTR] = StringAttr(
                "mixed-precision fallback: " + reasons[k.data])
    return q, fallbacks


# ------------------------------------------------------------------------------------ w4 / w2

_WEIGHT_ONLY = {"int4": (-8, 7), "int2": (-2, 1)}


def quantize_groupwise(w: np.ndarray, bits_dtype: str, group: int,
                       row_weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Group-wise symmetric weight quantization of ``w [K, N]`` along K.

    Returns ``(q [K, N] in int4/int2, scales [K/group, 1, N] float32)``. Each (group, column)
    scale is the best of a few clipping ratios by squared error: at 4 and especially 2 bits
    clipping the largest weight a little costs less than the resolution lost everywhere else.
    ``row_weight [K]`` (e.g. the calibrated mean ``x_k^2``) weights that error per input channel,
    so it approximates the output error ``|x (W - W_q)|^2`` (activation-aware clipping).
    """
    qmin, qmax = _WEIGHT_ONLY[bits_dtype]
    k, n = w.shape
    wg = w.astype(np.float64).reshape(k // group, group, n)
    h = (np.ones((1, group, 1)) if row_weight is None
         else np.asarray(row_weight, np.float64).reshape(k // group, group, 1))
    scales = _group_scales(wg, qmin, qmax, h)
    q = np.clip(np.round(wg / scales.astype(np.float64)), qmin, qmax).reshape(k, n)
    return q.astype(np.int8).astype(dtypes.dtype(bits_dtype).numpy), scales


def _group_scales(wg: np.ndarray, qmin: int, qmax: int, h: np.ndarray) -> np.ndarray:
    """Scales ``[G, 1, N]`` (float32) of groups ``wg [G, group, N]``: the best of a few clipping
    ratios by the ``h``-weighted squared error (``h`` broadcasts to ``[G, group, 1]``)."""
    amax = np.max(np.abs(wg), axis=1, keepdims=True)
    amax = np.where(amax > 0, amax, 1.0)
    best_s = amax / qmax
    best_err = np.full(amax.shape, np.inf)
    for f in np.linspace(0.3, 1.0, 15):
        s = (amax * f / qmax).astype(np.float32).astype(np.float64)
        q = np.clip(np.round(wg / s), qmin, qmax)
        err = np.sum(h * (q * s - wg) ** 2, axis=1, keepdims=True)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_s = np.where(better, s, best_s)
    return best_s.astype(np.float32)


def gptq_quantize(w: np.ndarray, bits_dtype: str, group: int, hessian: np.ndarray,
                  damp: float = 0.01, block: int = 128, act_order: bool = False
                  ) -> tuple[np.ndarray, np.ndarray]:
    """GPTQ (Frantar et al. 2022) group-wise quantization of ``w [K, N]`` along K.

    Rows of ``w`` (input channels k) are quantized in order; each row's rounding error, scaled
    by the inverse-Hessian Cholesky factor, is pushed onto the not-yet-quantized rows so that
    the layer output error ``|X (W - W_q)|^2`` (``hessian ~ X^T X``, any positive scale) is
    minimized rather than the weight error. ``damp`` is the fraction of the mean Hessian
    diagonal added for stability; updates are applied lazily in blocks of ``block`` rows. Each
    group's scales are chosen (``_group_scales``, weighted by the Hessian diagonal) when the
    group's first row is reached, on the already-updated weights. ``act_order`` quantizes rows
    by decreasing Hessian diagonal instead, with all group scales fixed up front from the
    original weights ("static groups", so the stored layout is unchanged). Same return as
    ``quantize_groupwise``: ``(q [K, N], scales [K/group, 1, N] float32)``."""
    qmin, qmax = _WEIGHT_ONLY[bits_dtype]
    k, n = w.shape
    wk = w.astype(np.float64).copy()
    h = np.array(hessian, np.float64, copy=True)
    if h.shape != (k, k):
        raise IRError(f"GPTQ Hessian has shape {h.shape}, expected {(k, k)}")
    diag = np.diag(h).copy()
    dead = ~(diag > 0)
    h[dead, dead] = 1.0
    wk[dead, :] = 0.0
    mean_diag = float(np.mean(np.diag(h)))
    h[np.diag_indices(k)] += damp * mean_diag
    # upper Cholesky factor of H^-1: H^-1 = U^T U
    try:
        hinv = np.linalg.inv(np.linalg.cholesky(h))        # L^-1, H = L L^T
    except np.linalg.LinAlgError:
        h[np.diag_indices(k)] += mean_diag                  # badly conditioned: damp harder
        hinv = np.linalg.inv(np.linalg.cholesky(h))
    hdiag = np.diag(h)
    block = max(group, (block // group) * group)
    q = np.empty((k, n), np.float64)
    scales = np.empty((k // group, 1, n), np.float32)
    s_row = np.ones(n, np.float64)
    perm = None
    if act_order:
        scales = _group_scales(wk.reshape(k // group, group, n), qmin, qmax,
                               hdiag.reshape(k // group, group, 1))
        perm = np.argsort(-np.diag(hessian), kind="stable")
        wk, h = wk[perm], h[np.ix_(perm, perm)]
        row_scales = scales[perm // group, 0].astype(np.float64)
        hinv = np.linalg.inv(np.linalg.cholesky(h))
    u = np.linalg.cholesky(hinv.T @ hinv).T                 # H^-1 = L^-T L^-1 = U^T U
    for b0 in range(0, k, block):
        b1 = min(b0 + block, k)
        err = np.empty((b1 - b0, n), np.float64)
        for i in range(b0, b1):
            if perm is not None:
                s_row = row_scales[i]
            elif i % group == 0:
                gi = i // group
                sc = _group_scales(wk[None, i:i + group], qmin, qmax,
                                   hdiag[i:i + group].reshape(1, group, 1))
                scales[gi] = sc[0]
                s_row = sc[0, 0].astype(np.float64)
            qi = np.clip(np.round(wk[i] / s_row), qmin, qmax)
            q[i] = qi
            e = (wk[i] - qi * s_row) / u[i, i]
            err[i - b0] = e
            if i + 1 < b1:
                wk[i + 1:b1] -= np.outer(u[i, i + 1:b1], e)
        if b1 < k:
            wk[b1:] -= u[b0:b1, b1:].T @ err
    if perm is not None:
        q[perm] = q.copy()
    return q.astype(np.int8).astype(dtypes.dtype(bits_dtype).numpy), scales


def _dequant(q: np.ndarray, scales: np.ndarray) -> np.ndarray:
    k, n = q.shape
    g_ = scales.shape[0]
    return (q.astype(np.float64).reshape(g_, k // g_, n) * scales.astype(np.float64)).reshape(k, n)


def awq_quantize(w: np.ndarray, bits_dtype: str, group: int, sqmean: np.ndarray,
                 grid: int = 11) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, float]:
    """Activation-aware weight quantization (AWQ-style): scale input channel k of the weight by
    ``s_k = rms(x_k)^a`` (normalized), quantize ``diag(s) W`` group-wise with activation-weighted
    clipping, and divide the activation by ``s`` at run time. ``a`` is searched on a grid by the
    proxy output error ``sum_k E[x_k^2] |W_k - W_q,k / s_k|^2``. Returns ``(q, scales, s or None,
    a)``; ``s`` is None when ``a = 0`` wins (no activation rescale needed)."""
    w64 = w.astype(np.float64)
    h = np.maximum(sqmean, 1e-12)
    rms = np.sqrt(h)
    best: tuple[float, np.ndarray, np.ndarray, np.ndarray | None, float] | None = None
    for a in np.linspace(0.0, 1.0, grid):
        if a == 0:
            s = None
            q, sc = quantize_groupwise(w, bits_dtype, group, h)
            wd = _dequant(q, sc)
        else:
            s64 = np.power(rms, a)
            s64 = s64 / np.sqrt(s64.max() * s64.min())
            s = s64.astype(np.float32)
            s64 = s.astype(np.float64)
            ws = (w64 * s64[:, None]).astype(np.float32)
            q, sc = quantize_groupwise(ws, bits_dtype, group, h / (s64 * s64))
            wd = _dequant(q, sc) / s64[:, None]
        err = float(np.sum(h[:, None] * (wd - w64) ** 2))
        if best is None or err < best[0]:
            best = (err, q, sc, s, float(a))
    assert best is not None
    return best[1], best[2], best[3], best[4]


class WeightOnlyPattern(RewritePattern):
    """matmul with a constant float ``[K, N]`` weight -> narrow-int weight dequantized at run
    time (cast, reshape to groups, mul by scales, reshape back) feeding the original matmul.

    With ``act_aware`` and a calibrated per-channel ``E[x^2]`` on the op, the quantization is
    AWQ-style (see ``awq_quantize``): the activation is multiplied by ``1/s`` before the matmul
    (a target folds it into the preceding LayerNorm/bias).

    With ``gptq`` and a calibrated Hessian on the op (``portc.act_hessian``), rounding uses GPTQ
    error compensation (``gptq_quantize``); combined with ``act_aware``, AWQ picks ``s`` and GPTQ
    quantizes ``diag(s) W`` under the correspondingly rescaled Hessian."""

    def __init__(self, weights: WeightStore, bits_dtype: str, group: int, scheme: str,
                 act_aware: bool = False, skip: set[Operation] | None = None,
                 gptq: bool = False, gptq_damp: float = 0.01, gptq_block: int = 128,
                 gptq_act_order: bool = False) -> None:
        self.weights, self.bits_dtype, self.group, self.scheme = weights, bits_dtype, group, scheme
        self.act_aware, self.skip = act_aware, skip or set()
        self.gptq, self.gptq_damp, self.gptq_block = gptq, gptq_damp, gptq_block
        self.gptq_act_order = gptq_act_order

    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter) -> None:
        w = _weight_of(op, self.weights)
        if w is None or not isinstance(op, g.MatMulOp) or op in self.skip:
            return
        k, n = w.shape
        group = min(self.group, k)
        if k % group:
            op.attributes[FLOAT_REASON_ATTR] = StringAttr(f"K={k} not a multiple of group {group}")
            return  # ragged last group: leave in float rather than pad the weight
        sq = chan_stat(op, CHAN_SQMEAN_ATTR) if self.act_aware else None
        e = _Emitter(rewriter, op, self.weights, _hint(op))
        x = op.operands[0]
        detail = ""
        hess = None
        if self.gptq and isinstance(hn := op.attributes.get(HESSIAN_ATTR), StringAttr) and (
                hn.data in self.weights):
            hess = np.asarray(self.weights[hn.data], np.float64)
            if hess.shape != (k, k):
                hess = None
        if sq is not None and sq.shape[0] == k:
            q, scales, s, a = awq_quantize(w, self.bits_dtype, group, sq)
            detail = f"awq={a:g}"
            if s is not None:
                x = e.binary("mul", x, e.const((1.0 / s.astype(np.float64)).astype(np.float32),
                                               "awq_inv"))
            if hess is not None:
                s64 = np.ones(k) if s is None else s.astype(np.float64)
                ws = (w.astype(np.float64) * s64[:, None]).astype(np.float32)
                q, scales = gptq_quantize(ws, self.bits_dtype, group,
                                          hess / np.outer(s64, s64), self.gptq_damp,
                                          self.gptq_block, self.gptq_act_order)
                detail += ",gptq"
        elif hess is not None:
            q, scales = gptq_quantize(w, self.bits_dtype, group, hess, self.gptq_damp,
                                      self.gptq_block, self.gptq_act_order)
            detail = "gptq"
        else:
            q, scales = quantize_groupwise(w, self.bits_dtype, group)
        wf = e.cast(e.const(q, f"w_{self.bits_dtype}"), "float32")
        wf = e.reshape(wf, (k // group, group, n))
        wf = e.binary("mul", wf, e.const(scales, "w_scale"))
        wf = e.reshape(wf, (k, n))
        y = _core_op(e, op, x, wf, None, self.scheme)
        if detail:
            assert y.owner is not None
            y.owner.attributes[DETAIL_ATTR] = StringAttr(detail)
        _replace(rewriter, op, y)


def _check_group(group_size: int) -> None:
    if group_size not in GROUP_SIZES:
        raise IRError(f"group_size must be one of {GROUP_SIZES}, got {group_size}")


def _check_gptq(damp: float, block: int) -> None:
    if not 0.0 <= damp < 1.0:
        raise IRError(f"gptq_damp must be in [0, 1), got {damp}")
    if block < 1:
        raise IRError(f"gptq_block must be positive, got {block}")


@dataclass(frozen=True)
class WeightOnlyQuantizePass(ModulePass, ABC):
    """Shared options of the weight-only passes; subclasses fix the integer type and scheme."""

    bits_dtype: ClassVar[str]
    scheme: ClassVar[str]

    group_size: int = 128

    #: AWQ-style activation-aware scaling and clipping (needs calibration passed to quantize)
    act_aware: bool = False
    #: comma-separated matmul ordinals or calibration keys to keep in float
    keep_float: str = ""
    #: GPTQ error compensation (needs a calibration made with ``calibrate(..., hessian=True)``)
    gptq: bool = False
    #: GPTQ dampening: this fraction of the mean Hessian diagonal is added to its diagonal
    gptq_damp: float = 0.01
    #: GPTQ lazy-update block (rows of W along K; rounded to a multiple of the group size)
    gptq_block: int = 128
    #: GPTQ: quantize input channels by decreasing Hessian diagonal (static group scales)
    gptq_act_order: bool = False

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        _check_group(self.group_size)
        weights = weights_of(ctx)
        kept = _mark_float(op, weights, _parse_keep(self.keep_float), needs_range=False)
        _check_gptq(self.gptq_damp, self.gptq_block)
        _run_patterns(op, WeightOnlyPattern(weights, self.bits_dtype, self.group_size,
                                            self.scheme, self.act_aware, kept, self.gptq,
                                            self.gptq_damp, self.gptq_block,
                                            self.gptq_act_order))


@dataclass(frozen=True)
class QuantizeW4Pass(WeightOnlyQuantizePass):
    """Weight-only int4 quantization of matmul weights with per-group (along K) float scales."""

    name = "quantize-w4"
    bits_dtype = "int4"
    scheme = "w4"

    group_size: int = 128


@dataclass(frozen=True)
class QuantizeW2Pass(WeightOnlyQuantizePass):
    """Weight-only int2 quantization (levels -2..1) with per-group (along K) float scales."""

    name = "quantize-w2"
    bits_dtype = "int2"
    scheme = "w2"

    group_size: int = 32


# ------------------------------------------------------------------------------------ fp8


def to_fp8(x: np.ndarray, scale: float) -> np.ndarray:
    """Saturating ``x / scale -> float8_e4m3fn``, as ``graph.cast {saturate}`` does."""
    v = np.clip(x.astype(np.float64) / np.float64(np.float32(scale)), -FP8_MAX, FP8_MAX)
    return v.astype(ml_dtypes.float8_e4m3fn)


class QuantizeFP8Pattern(RewritePattern):
    """matmul/conv -> e4m3 weight and activation with per-tensor scales; the product is computed
    after casting back to float32 (exact for e4m3 x e4m3 up to accumulation order), so targets
    with fp8 units (sm_90) lower ``cast(f8) -> cast(f32) -> matmul`` to a native fp8 GEMM."""

    def __init__(self, weights: WeightStore) -> None:
        self.weights = weights

    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter) -> None:
        w = _weight_of(op, self.weights)
        rng = act_range(op)
        if w is None or rng is None:
            return
        assert isinstance(op, (g.MatMulOp, g.ConvOp))
        s_w = _act_scale(float(np.max(np.abs(w))), FP8_MAX)
        s_x = _act_scale(max(abs(rng[0]), abs(rng[1])), FP8_MAX)
        e = _Emitter(rewriter, op, self.weights, _hint(op))
        xs = e.binary("div", op.operands[0], e.const(np.array(s_x, np.float32), "act_scale"))
        x8 = e.cast(e.cast(xs, "float8_e4m3fn", saturate=True), "float32")
        w8 = e.cast(e.const(to_fp8(w, float(s_w)), "w_fp8"), "float32")
        y = _core_op(e, op, x8, w8, None, "fp8")
        y = _epilogue(e, op, y, np.array(np.float64(s_x) * np.float64(s_w), np.float32))
        _replace(rewriter, op, y)


@dataclass(frozen=True)
class QuantizeFP8Pass(ModulePass):
    """float8_e4m3fn weights and activations with per-tensor scales (calibrated activations)."""

    name = "quantize-fp8"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if not any(act_range(o) is not None for o in op.walk()):
            raise IRError("quantize-fp8 needs activation ranges: run "
                          "portc.passes.calibration.calibrate(...).annotate(module) first")
        _run_patterns(op, QuantizeFP8Pattern(weights_of(ctx)))


QUANTIZE_PASSES: tuple[type[ModulePass], ...] = (
    QuantizeInt8Pass, QuantizeW4Pass, QuantizeW2Pass, QuantizeFP8Pass)


# ------------------------------------------------------------------------------------ driver


def quantize(program: Program, pass_: ModulePass, calibration: Calibration | None = None
             ) -> Program:
    """Quantized copy of ``program``: the original module and weight store stay untouched
    (the new store shares the original arrays by reference and adds the narrow ones)."""
    from portc.compiler.program import make_context

    module = program.module.clone()
    weights = program.weights.subset(set(program.weights))
    before = set(weights)
    if calibration is not None:
        calibration.annotate(module, weights)
    hessians = set(weights) - before
    ctx: PortcContext = make_context(weights)
    pass_.apply(ctx, module)
    if hessians:  # calibration-only data: drop from the store and the IR
        for o in module.walk():
            o.attributes.pop(HESSIAN_ATTR, None)
        weights = weights.subset(set(weights) - hessians)
    return Program(module, weights)


# ------------------------------------------------------------------------------------ report


def weight_bytes(program: Program) -> int:
    """Bytes of the constants the module uses, at their packed bit width (int4 = 1/2 byte);
    numpy holds int4/int2 in whole bytes, but a target's bundle packs them."""
    names = {o.resource.data for o in program.module.walk()
             if isinstance(o, g.ConstantOp) and o.results[0].uses}
    total_bits = 0
    for n in names:
        a = program.weights[n]
        total_bits += a.size * dtypes.from_numpy(a.dtype).bits
    return (total_bits + 7) // 8


def _looks_like_logits(name: str, arr: np.ndarray) -> bool:
    """Classifier-shaped ([batch, classes]), named like scores, or rows summing to one."""
    if arr.ndim < 1 or arr.shape[-1] < 2 or dtypes.from_numpy(arr.dtype).kind != "float":
        return False
    if arr.ndim == 2 or any(k in name.lower() for k in ("logit", "prob", "score", "class")):
        return True
    rows = arr.astype(np.float64).sum(axis=-1)
    return bool(np.all(arr >= 0) and np.allclose(rows, 1.0, atol=1e-3))


def quantization_report(original: Program, quantized: Program,
                        inputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Accuracy of ``quantized`` against ``original`` on ``inputs`` plus what was saved."""
    from portc.runtimes.reference.interpreter import run_program

    ref = run_program(original, inputs)
    got = run_program(quantized, inputs)
    outputs: dict[str, dict[str, Any]] = {}
    for name, r in ref.items():
        a = np.asarray(got[name], np.float64).ravel()
        b = np.asarray(r, np.float64).ravel()
        den = float(np.linalg.norm(a) * np.linalg.norm(b))
        entry: dict[str, Any] = {
            "max_abs_error": float(np.max(np.abs(a - b))) if a.size else 0.0,
            "cosine": float(a @ b / den) if den > 0 else float(np.array_equal(a, b)),
        }
        if _looks_like_logits(name, np.asarray(r)):
            entry["top1_agreement"] = float(np.mean(
                np.argmax(got[name], axis=-1) == np.argmax(r, axis=-1)))
        outputs[name] = entry
    counts: dict[str, int] = {}
    for o in quantized.module.walk():
        if isinstance(a := o.attributes.get(QUANTIZED_ATTR), StringAttr):
            key = f"{o.name.split('.')[-1]}s_{a.data}"
            counts[key] = counts.get(key, 0) + 1
    details: dict[str, int] = {}
    float_ops: list[dict[str, str]] = []
    for o in quantized.module.walk():
        if isinstance(a := o.attributes.get(DETAIL_ATTR), StringAttr):
            details[a.data] = details.get(a.data, 0) + 1
        if isinstance(a := o.attributes.get(FLOAT_REASON_ATTR), StringAttr):
            key = o.attributes.get(LAYER_KEY_ATTR)
            float_ops.append({"op": _hint(o), "reason": a.data,
                              "key": key.data if isinstance(key, StringAttr) else ""})
    before, after = weight_bytes(original), weight_bytes(quantized)
    return {
        "outputs": outputs,
        "weight_bytes_before": before,
        "weight_bytes_after": after,
        "compression": before / after if after else float("inf"),
        "quantized_ops": counts,
        "scheme_details": details,
        "float_ops": float_ops,
        "matmuls_total": sum(isinstance(o, g.MatMulOp) for o in original.module.walk()),
        "convs_total": sum(isinstance(o, g.ConvOp) for o in original.module.walk()),
    }
