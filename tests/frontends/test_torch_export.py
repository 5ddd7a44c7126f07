"""The torch.export frontend against PyTorch itself: each model is imported, run in the reference
interpreter on fresh seeded random inputs, and compared with the original torch program."""

from __future__ import annotations

import math
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from portc.compiler.errors import ModelLoadError, UnsupportedOpsError
from portc.compiler.frontends.torch_export import (
    import_exported_program,
    import_torch_module,
    load_pt2,
    reference_outputs,
)
from portc.dialects import graph as g
from portc.runtimes.reference.interpreter import run_program

RTOL, ATOL = 1e-5, 1e-5


def _inputs(program, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, spec in program.input_specs().items():
        if spec.dtype.startswith("int"):
            out[name] = rng.integers(0, 10, spec.shape).astype(spec.dtype)
        else:
            out[name] = (rng.standard_normal(spec.shape) + 0.1).astype(spec.dtype)
    return out


def _check(module: nn.Module, *example: torch.Tensor, seed: int = 1, rtol: float = RTOL,
           atol: float = ATOL):
    module.eval()
    res = import_torch_module(module, example)
    ins = _inputs(res.program, seed)
    got = run_program(res.program, ins)
    want = reference_outputs(res.exported_program, ins)
    assert list(got) == list(want)
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        np.testing.assert_allclose(got[k].astype(np.float64), want[k].astype(np.float64),
                                   rtol=rtol, atol=atol, err_msg=k)
    return res


def _randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


# ------------------------------------------------------------------------------ models


def test_mlp_matches_torch_and_keeps_names():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 4), nn.Tanh())
    res = _check(m, _randn(3, 16))
    assert res.program.input_names == ["input"]
    assert res.program.output_names == ["output0"]
    assert "0.weight" in res.program.weights and "2.bias" in res.program.weights
    assert all(isinstance(a, np.ndarray) for _, a in res.program.weights.items())


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=2, dilation=2, groups=2)
        self.fc = nn.Linear(8, 5)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.uniform_(-0.5, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn(self.conv1(x))), 2)
        x = F.avg_pool2d(F.silu(self.conv2(x)), 2, ceil_mode=True, padding=1)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def test_small_cnn_with_batchnorm_matches_torch():
    torch.manual_seed(0)
    res = _check(SmallCNN(), _randn(2, 3, 16, 16))
    ops = {op.name for op in res.program.main.walk()}
    assert {"graph.conv", "graph.pool"} <= ops


def test_transformer_encoder_layer_matches_torch():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    _check(layer, _randn(2, 7, 32), rtol=1e-4, atol=2e-5)


class Attention(nn.Module):
    def __init__(self, d: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=-1)
        q, k, v = (t.view(b, s, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y + F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(b, s, d))


def test_explicit_sdpa_attention_matches_torch():
    torch.manual_seed(0)
    _check(Attention(), _randn(2, 6, 32), _randn(6, 6), rtol=1e-4, atol=2e-5)


def test_pt2_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    m = SmallCNN().eval()
    ep = torch.export.export(m, (_randn(1, 3, 16, 16),))
    path = tmp_path / "cnn.pt2"
    torch.export.save(ep, path)
    res = import_exported_program(load_pt2(path))
    ins = _inputs(res.program, 3)
    np.testing.assert_allclose(run_program(res.program, ins)["output0"],
                               reference_outputs(m, {"x": ins["x"]})["output0"],
                               rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("content", [None, b"", b"not a zip at all", "truncated"])
def test_bad_pt2_files_raise_model_load_error(tmp_path, content):
    path = tmp_path / "m.pt2"
    if content == "truncated":
        ep = torch.export.export(nn.Linear(2, 2), (_randn(1, 2),))
        torch.export.save(ep, path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelLoadError, match="m.pt2"):
        load_pt2(path)


def test_pt2_with_pickled_payload_is_refused(tmp_path):
    ep = torch.export.export(nn.Linear(2, 2), (_randn(1, 2),))
    good = tmp_path / "good.pt2"
    torch.export.save(ep, good)
    bad = tmp_path / "bad.pt2"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename.endswith("_weights_config.json"):
                data = data.replace(b'"use_pickle": false', b'"use_pickle": true')
            zout.writestr(item, data)
    with pytest.raises(ModelLoadError, match="pickled"):
        load_pt2(bad)


def test_unsupported_ops_are_listed_together():
    class FFT(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.fft.fft(x).real + torch.fft.ifft(x).imag

    with pytest.raises(UnsupportedOpsError) as e:
        import_torch_module(FFT(), (_randn(8),))
    msg = str(e.value)
    assert "fft" in msg and len(e.value.entries) >= 2
    assert all(name for name, _, _ in e.value.entries)


def test_dynamic_batch_is_bound_from_example_inputs():
    m = nn.Sequential(nn.Linear(8, 4), nn.ReLU()).eval()
    x = _randn(5, 8)
    ep = torch.export.export(m, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    res = import_exported_program(ep, example_inputs=(_randn(3, 8),))
    assert res.program.input_specs()["input"].shape == (3, 8)
    assert list(res.dim_bindings.values()) == [3]
    res = import_exported_program(ep, dims={next(iter(res.dim_bindings)): 6})
    assert res.program.input_specs()["input"].shape == (6, 8)


# ------------------------------------------------------------------------------ op zoo


class Fn(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.fn(*xs)


ZOO = {
    "arith": (lambda x, y: (x + 2 * y - 1.5) * y / (x.abs() + 1) - torch.rsub(x, 3, alpha=2),
              [(3, 4), (3, 4)]),
    "div_modes": (lambda x, y: torch.div(x * 5, y, rounding_mode="floor")
                  + torch.div(x * 5, y, rounding_mode="trunc"), [(3, 4), (4,)]),
    "int_ops": (lambda x: (x * 7).to(torch.int64) // 3 + torch.remainder((x * 7).long(), 4),
                [(10,)]),
    "unary": (lambda x: torch.exp(x).log() + torch.sigmoid(x) + torch.erf(x) + torch.sqrt(
        x.abs()) + torch.rsqrt(x.abs() + 1) + torch.pow(x, 2) + F.gelu(x, approximate="tanh")
        + F.softplus(x) + F.leaky_relu(x, 0.1) + F.elu(x) + F.hardswish(x) + F.mish(x),
        [(4, 5)]),
    "clamp_where": (lambda x: torch.where(x > 0, x.clamp(max=0.5), x.clamp_min(-0.3))
                    .masked_fill(x.abs() < 0.1, 7.0), [(4, 5)]),
    "compare_logic": (lambda x, y: ((x > y) & ~(x == y) | (x <= 0)).float() + (x != y).int(),
                      [(4, 5), (4, 5)]),
    "reductions": (lambda x: torch.cat([x.sum(1), x.mean(-1), x.amax(1), x.max(1).values,
                                        x.var(1), x.std(1, correction=0)]).float()
                   + x.argmax(1).float().sum(), [(3, 6)]),
    "softmax": (lambda x: F.softmax(x, -1) + F.log_softmax(x, 1) + x.logsumexp(1, True),
                [(2, 3, 5)]),
    "shape_ops": (lambda x: torch.cat([x.permute(2, 0, 1).reshape(4, -1), x.transpose(0, 2)
                                       .flatten(1), x[..., 1:3].unsqueeze(0).squeeze(0)
                                       .reshape(4, -1)[:, :6]], 1), [(2, 3, 4)]),
    "select_split": (lambda x: x[1] + x.split(1, 0)[0].squeeze(0) + x.chunk(2, 0)[1][0]
                     + torch.stack(x.unbind(0), 0).sum(0) + x.flip(0)[0] + x.roll(1, 1)[0],
                     [(2, 5)]),
    "expand_repeat": (lambda x: x.expand(3, 4, 5).sum(0) + x.repeat(1, 2, 1)[:, :4]
                      .squeeze(0), [(1, 4, 5)]),
    "indexing": (lambda x, i: x[i] + torch.gather(x, 0, i[:2].view(2, 1).expand(2, 3))
                 .sum() + x.index_select(0, i[:2]).sum(0), [(4, 3), "idx"]),
    "creation": (lambda x: x + torch.arange(5.0) + torch.ones(5) * 2 + torch.full((4, 5), 0.5)
                 + torch.zeros_like(x) + torch.tril(torch.ones(4, 5)), [(4, 5)]),
    "layer_group_norm": (lambda x: F.layer_norm(x, (6,)) + F.group_norm(x.view(2, 6, 1), 3)
                         .view(2, 6), [(2, 6)]),
    "cumsum_topk_sort": (lambda x: x.cumsum(1) + x.topk(3, 1).values.sum(1, True)
                         + x.sort(1, descending=True).values, [(3, 6)]),
    "conv1d_3d": (lambda x, y: F.conv1d(x, torch.ones(4, 2, 3) * 0.1, stride=2).sum()
                  + F.conv3d(y, torch.ones(2, 1, 2, 2, 2) * 0.1, padding=1).mean(), [(1, 2, 9),
                                                                                     (1, 1, 3,
                                                                                      4, 4)]),
    "conv_transpose": (lambda x: F.conv_transpose2d(
        x, torch.arange(2 * 6 * 9.0).reshape(2, 6, 3, 3) / 100, stride=2, padding=1,
        output_padding=1, groups=2), [(1, 2, 4, 5)]),
    "pool_adaptive": (lambda x: F.adaptive_avg_pool2d(x, (3, 2)).sum() + F.max_pool2d(
        x, 3, 2, 1, ceil_mode=True).mean() + F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)
        .mean(), [(1, 2, 7, 6)]),
    "baddbmm_pad": (lambda x, y: torch.baddbmm(x[:, :, :2], x, y, beta=0.5, alpha=2.0)
                    + F.pad(x, (1, 1), mode="reflect")[..., :2], [(2, 3, 4), (2, 4, 2)]),
}


@pytest.mark.parametrize("case", sorted(ZOO))
def test_op_zoo_matches_torch(case):
    fn, shapes = ZOO[case]
    ex = [torch.tensor([2, 0, 3], dtype=torch.int64) if s == "idx" else _randn(*s)
          for s in shapes]
    module = Fn(fn).eval()
    res = import_torch_module(module, tuple(ex))
    ins = {}
    rng = np.random.default_rng(11)
    for (name, spec), s in zip(res.program.input_specs().items(), shapes, strict=True):
        ins[name] = (np.array([1, 3, -1], dtype=np.int64) if s == "idx" else
                     (rng.standard_normal(spec.shape) + 0.05).astype(np.float32))
    got = run_program(res.program, ins)
    want = reference_outputs(res.exported_program, ins)
    for k in want:
        np.testing.assert_allclose(got[k].astype(np.float64), want[k].astype(np.float64),
                                   rtol=1e-5, atol=1e-5, err_msg=f"{case}/{k}")
    for op in res.program.main.walk():
        assert op.name.startswith(("graph.", "func.")), op.name


def test_reference_outputs_accepts_a_module():
    m = nn.Linear(3, 2).eval()
    x = np.ones((1, 3), np.float32)
    out = reference_outputs(m, {"input": x})
    np.testing.assert_allclose(out["output0"], m(torch.ones(1, 3)).detach().numpy())
    assert math.isfinite(float(out["output0"].sum()))
    assert g.GRAPH_OPS  # the dialect is importable alongside the frontend


def _rewrite(src, dst, fn) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            zout.writestr(item, fn(item.filename, zin.read(item)))


def test_dynamic_pt2_loads_and_code_in_shape_expressions_is_refused(tmp_path):
    m = nn.Linear(8, 4).eval()
    ep = torch.export.export(m, (_randn(5, 8),),
                             dynamic_shapes=({0: torch.export.Dim("batch", min=2)},))
    good = tmp_path / "dyn.pt2"
    torch.export.save(ep, good)
    res = import_exported_program(load_pt2(good))
    assert res.program.input_specs()["input"].shape == (5, 8)

    def inject(name: str, data: bytes) -> bytes:
        if name.endswith("models/model.json"):
            return data.replace(b"Symbol(", b"__import__('os').getcwd() or Symbol(", 1)
        return data

    bad = tmp_path / "evil.pt2"
    _rewrite(good, bad, inject)
    with pytest.raises(ModelLoadError, match="evil.pt2"):
        load_pt2(bad)
