"""Small example models that a new portc user compiles first.

Each model is tiny on purpose: it exports in well under a second, runs in the reference
interpreter and in every simulator quickly, and between them the three cover the op families
portc must port (dense layers, convolutions with normalisation and pooling, and attention).

Weights are random but deterministic: every builder seeds its own forked RNG, so building a
model twice yields bit-identical parameters (and therefore byte-stable ``.onnx``/``.pt2``
artifacts) without disturbing the caller's global RNG state.

This file is imported as a plain module (``import models``) by the sibling scripts in
``examples/`` and by ``tests/examples``; ``examples/`` is a folder of scripts, not a package.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

Inputs = tuple[torch.Tensor, ...]

#: Vocabulary size of :class:`TinyTransformerEncoder`; random ``input_ids`` are drawn below it.
TINY_VOCAB = 1000
#: Sequence length of :class:`TinyTransformerEncoder` (positional table size; shapes are static).
TINY_SEQ = 16


class MLP(nn.Module):
    """Two dense layers with an exact (erf) GELU between them: the smallest useful port.

    Exercises MatMul/Gemm + bias Add and the Erf-based GELU that every backend must lower.
    """

    def __init__(self, d_in: int = 64, d_hidden: int = 128, d_out: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.fc2 = nn.Linear(d_hidden, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[batch, d_in]`` to ``[batch, d_out]`` logits."""
        return self.fc2(F.gelu(self.fc1(x), approximate="none"))


class SmallCNN(nn.Module):
    """A VGG-ish image classifier: conv → BN → ReLU → pool → conv → ReLU → GAP → Linear.

    BatchNorm runs in eval mode with non-trivial running statistics (set by the builder) so
    that a port which drops or mis-folds the normalisation is caught by a numeric comparison.
    """

    def __init__(self, in_ch: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, 16, kernel_size=3, stride=1, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, stride=1, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map an NCHW image batch ``[n, 3, 32, 32]`` to ``[n, num_classes]`` logits."""
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        x = F.relu(self.conv2(x))
        x = torch.flatten(self.gap(x), 1)
        return self.fc(x)


class EncoderLayer(nn.Module):
    """One post-LN (BERT-style) encoder layer with attention spelled out op by op.

    ``nn.MultiheadAttention`` and ``scaled_dot_product_attention`` export as fused or
    version-dependent patterns; writing MatMul/Softmax/Reshape/Transpose explicitly keeps the
    exported graph stable across torch releases and is exactly what the frontend must handle for
    real BERT exports.
    """

    def __init__(self, hidden: int, heads: int, ffn: int, eps: float = 1e-5) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden={hidden} is not divisible by heads={heads}")
        self.heads = heads
        self.head_dim = hidden // heads
        self.eps = eps
        self.q = nn.Linear(hidden, hidden)
        self.k = nn.Linear(hidden, hidden)
        self.v = nn.Linear(hidden, hidden)
        self.o = nn.Linear(hidden, hidden)
        self.ln1 = nn.LayerNorm(hidden, eps=eps)
        self.ff1 = nn.Linear(hidden, ffn)
        self.ff2 = nn.Linear(ffn, hidden)
        self.ln2 = nn.LayerNorm(hidden, eps=eps)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        """``[b, s, h*d]`` → ``[b, h, s, d]`` (Reshape + Transpose in the exported graph)."""
        b, s, _ = t.shape
        return t.reshape(b, s, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Self-attention + feed-forward, each with a residual and a LayerNorm after it."""
        b, s, h = x.shape
        q, k, v = self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(self.head_dim))
        probs = torch.softmax(scores, dim=-1)
        ctx = torch.matmul(probs, v).transpose(1, 2).reshape(b, s, h)
        x = self.ln1(x + self.o(ctx))
        ff = self.ff2(F.gelu(self.ff1(x), approximate="none"))
        return self.ln2(x + ff)


class TinyTransformerEncoder(nn.Module):
    """Token + learned positional embedding followed by a stack of :class:`EncoderLayer`.

    A miniature BERT encoder: integer ``input_ids`` go through an embedding Gather, which is the
    op that distinguishes a language model's graph from a vision model's.
    """

    def __init__(
        self,
        vocab: int = TINY_VOCAB,
        seq: int = TINY_SEQ,
        hidden: int = 64,
        heads: int = 4,
        layers: int = 2,
        ffn: int = 256,
    ) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, hidden)
        self.pos = nn.Parameter(torch.randn(seq, hidden) * 0.02)
        self.layers = nn.ModuleList(EncoderLayer(hidden, heads, ffn) for _ in range(layers))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Map int64 ``[b, seq]`` token ids to ``[b, seq, hidden]`` hidden states."""
        x = self.tok(input_ids) + self.pos
        for layer in self.layers:
            x = layer(x)
        return x


def _seeded(seed: int) -> torch.Generator:
    """A private generator, so input sampling never depends on or alters global RNG state."""
    return torch.Generator().manual_seed(seed)


def mlp_inputs(seed: int = 0) -> Inputs:
    """A ``[4, 64]`` float32 batch for :class:`MLP`."""
    return (torch.randn(4, 64, generator=_seeded(seed)),)


def small_cnn_inputs(seed: int = 0) -> Inputs:
    """A ``[1, 3, 32, 32]`` float32 image for :class:`SmallCNN`."""
    return (torch.randn(1, 3, 32, 32, generator=_seeded(seed)),)


def tiny_transformer_inputs(seed: int = 0) -> Inputs:
    """A ``[1, 16]`` int64 ``input_ids`` tensor for :class:`TinyTransformerEncoder`."""
    return (
        torch.randint(0, TINY_VOCAB, (1, TINY_SEQ), generator=_seeded(seed), dtype=torch.int64),
    )


def build_mlp(seed: int = 0) -> tuple[nn.Module, Inputs]:
    """Build :class:`MLP` in eval mode with deterministic weights, plus example inputs."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MLP().eval()
    return model, mlp_inputs(seed)


def build_small_cnn(seed: int = 0) -> tuple[nn.Module, Inputs]:
    """Build :class:`SmallCNN` in eval mode with deterministic weights, plus example inputs.

    BatchNorm's running statistics and affine parameters are randomised (default init is
    mean 0 / var 1 / identity affine, which would make a dropped BN numerically invisible).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SmallCNN()
        with torch.no_grad():
            bn = model.bn1
            bn.running_mean.copy_(torch.randn(bn.num_features) * 0.1)
            bn.running_var.copy_(torch.rand(bn.num_features) * 0.5 + 0.75)
            bn.weight.copy_(torch.rand(bn.num_features) * 0.5 + 0.75)
            bn.bias.copy_(torch.randn(bn.num_features) * 0.1)
        model.eval()
    return model, small_cnn_inputs(seed)


def build_tiny_transformer(seed: int = 0) -> tuple[nn.Module, Inputs]:
    """Build :class:`TinyTransformerEncoder` (eval, deterministic weights) plus ``input_ids``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TinyTransformerEncoder().eval()
    return model, tiny_transformer_inputs(seed)


@dataclass(frozen=True)
class ExampleSpec:
    """How to build one example and how to draw fresh inputs for it.

    ``input_names``/``output_names`` become the ONNX graph's I/O names, so users and tests can
    feed the model by name.
    """

    name: str
    build: Callable[[int], tuple[nn.Module, Inputs]]
    make_inputs: Callable[[int], Inputs]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]


#: The examples in the order ``build_examples.py`` writes them; keys are the artifact basenames.
EXAMPLES: dict[str, ExampleSpec] = {
    spec.name: spec
    for spec in (
        ExampleSpec("mlp", build_mlp, mlp_inputs, ("x",), ("logits",)),
        ExampleSpec("small_cnn", build_small_cnn, small_cnn_inputs, ("image",), ("logits",)),
        ExampleSpec(
            "tiny_transformer",
            build_tiny_transformer,
            tiny_transformer_inputs,
            ("input_ids",),
            ("last_hidden_state",),
        ),
    )
}
