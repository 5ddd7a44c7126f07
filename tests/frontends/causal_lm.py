"""Shared by the MoE frontend tests: transformers causal LMs reduced to ``ids -> logits``."""

from __future__ import annotations

import torch
from torch import nn


class LogitsOnly(nn.Module):
    """Returns only the logits, without a KV cache (export needs ``use_cache=False``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, use_cache=False).logits
