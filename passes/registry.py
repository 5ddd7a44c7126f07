"""Pass registry: name -> ModulePass class, for ``portc opt -p a,b,c`` and target pipelines.

Built-in passes register here; third-party passes register through the ``portc.passes`` entry
point group (each entry point loads a ``ModulePass`` subclass).
"""

from __future__ import annotations

from importlib.metadata import entry_points

from xdsl.passes import ModulePass

from portc.compiler.errors import UnknownPassError

_PASSES: dict[str, type[ModulePass]] = {}
_loaded = False


def register_pass(cls: type[ModulePass]) -> type[ModulePass]:
    _PASSES[cls.name] = cls
    return cls


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    from portc.passes import graph_passes  # noqa: F401 - registers built-ins
    from portc.passes.lower_graph_to_kernel import LowerGraphToKernel
    from portc.passes.plan_buffers import PlanBuffers

    register_pass(LowerGraphToKernel)
    register_pass(PlanBuffers)

    for ep in entry_points(group="portc.passes"):
        cls = ep.load()
        register_pass(cls)


def all_passes() -> dict[str, type[ModulePass]]:
    _load()
    return dict(sorted(_PASSES.items()))


def get_pass(name: str) -> type[ModulePass]:
    _load()
    try:
        return _PASSES[name]
    except KeyError:
        raise UnknownPassError(
            f"unknown pass '{name}'; registered passes: {', '.join(sorted(_PASSES))}"
        ) from None
