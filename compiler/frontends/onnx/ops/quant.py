"""ONNX quant op decompositions into graph-dialect core ops."""

from __future__ import annotations
