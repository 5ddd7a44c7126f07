"""Reference kernels against independent references (torch, numpy float64)."""

from __future__ import annotations

import numpy as np
import torch

from portc.dialects import graph as g
from portc.dialects.graph import TensorSpec
from portc.runtimes.reference.kernels import run_kernel


def _run(cls: type[g.GraphOp], props: dict, *ins: np.ndarray) -> list[np.ndarray]:
    specs = cls.infer([TensorSpec(a.shape, g.dtypes.from_numpy(a.dtype).name) for a in ins], props)
    return run_kernel(cls, props, list(ins), specs)


def test_grouped_dilated_strided_conv_matches_torch(rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 4, 11, 9)).astype(np.float32)
    w = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    p = {"strides": (2, 1), "pads": (1, 0, 2, 1), "dilations": (1, 2), "group": 2}
    (y,) = _run(g.ConvOp, p, x, w, b)
    xt = torch.nn.functional.pad(torch.from_numpy(x), (0, 1, 1, 2))
    ref = torch.nn.functional.conv2d(xt.double(), torch.from_numpy(w).double(),
                                     torch.from_numpy(b).double(), stride=(2, 1),
                                     dilation=(1, 2), groups=2)
    np.testing.assert_allclose(y, ref.float().numpy(), rtol=1e-6, atol=1e-6)


def test_ceil_mode_avg_pool_excludes_padding_like_torch(rng: np.random.Generator) -> None:
    x = rng.standard_normal((1, 2, 7, 7)).astype(np.float32)
    p = {"kind": "avg", "kernel": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1),
         "dilations": (1, 1), "ceil_mode": True, "count_include_pad": False}
    (y,) = _run(g.PoolOp, p, x)
    ref = torch.nn.functional.avg_pool2d(torch.from_numpy(x).double(), 3, 2, 1, ceil_mode=True,
                                         count_include_pad=False)
    assert y.shape == tuple(ref.shape)
    np.testing.assert_allclose(y, ref.float().numpy(), rtol=1e-6, atol=1e-6)


def test_layer_norm_computes_in_float64(rng: np.random.Generator) -> None:
    x = (rng.standard_normal((4, 16)) * 100 + 1e4).astype(np.float32)
    s = rng.standard_normal(16).astype(np.float32)
    (y,) = _run(g.LayerNormOp, {"axis": -1, "epsilon": 1e-5}, x, s)
    x64 = x.astype(np.float64)
    ref = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5) * s
    np.testing.assert_array_equal(y, ref.astype(np.float32))


def test_integer_matmul_accumulates_exactly_in_int32() -> None:
    a = np.full((1, 300), 127, np.int8)
    b = np.full((300, 1), 127, np.int8)
    (y,) = _run(g.MatMulOp, {"out_dtype": "int32"}, a, b)
    assert y.dtype == np.int32 and int(y[0, 0]) == 127 * 127 * 300


def test_topk_breaks_ties_by_lower_index() -> None:
    x = np.array([[1.0, 3.0, 3.0, 2.0]], np.float32)
    v, i = _run(g.TopKOp, {"axis": 1, "k": 2, "largest": True}, x)
    assert i.tolist() == [[1, 2]] and v.tolist() == [[3.0, 3.0]]


def test_gather_out_of_range_index_names_the_op() -> None:
    import pytest

    from portc.runtimes.reference.kernels import KernelError

    with pytest.raises(KernelError, match="graph.gather: index 5"):
        _run(g.GatherOp, {"axis": 0}, np.zeros((3, 2), np.float32), np.array([0, 5]))
