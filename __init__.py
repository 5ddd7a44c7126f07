"""portc: port trained models across accelerator ecosystems.

The package root exposes the programmatic API (``portc.compile(module, inputs, target=...)``,
``portc.import_model``, ``portc.verify``) lazily, so that ``import portc.dialects`` does not pay for
torch and onnxruntime.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["compile", "import_model", "verify"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from portc.compiler import api

        return getattr(api, name)
    raise AttributeError(f"module 'portc' has no attribute '{name}'")
