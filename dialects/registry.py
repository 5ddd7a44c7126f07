"""Dialects beyond ``graph`` that programs may contain (target dialects register here)."""

from __future__ import annotations

from xdsl.ir import Dialect

_EXTRA: list[Dialect] = []


def register_dialect(d: Dialect) -> None:
    if all(x.name != d.name for x in _EXTRA):
        _EXTRA.append(d)


def extra_dialects() -> list[Dialect]:
    from portc.dialects.kernel import Kernel
    from portc.dialects.moe import MoE
    from portc.dialects.npu import Npu
    from portc.dialects.sparse import Sparse

    register_dialect(Sparse)
    register_dialect(MoE)
    register_dialect(Kernel)
    register_dialect(Npu)
    return list(_EXTRA)
