"""``onnx.backend.base.Backend`` for portc: the device string is a portc target name.

``prepare`` checks the model; ``run`` compiles on first use for the actual input shapes (ONNX
graphs often leave them symbolic) and for the values of inputs that ops need at compile time
(shapes, axes, pads fed as graph inputs), then caches the compiled program per such signature.
A later call with different values recompiles instead of silently reusing a stale specialisation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep

from portc.compiler.errors import InputError


def _normalise_device(device: str) -> str:
    d = device.lower()
    return "reference" if d == "cpu" else d


class PortcBackendRep(BackendRep):
    def __init__(self, model: onnx.ModelProto, target: str, runtime: str | None = None) -> None:
        self.model = model
        self.target = target
        self.runtime = runtime
        init = {t.name for t in model.graph.initializer}
        self.input_names = [vi.name for vi in model.graph.input if vi.name not in init]
        self.output_names = [vo.name for vo in model.graph.output]
        self._cache: list[tuple[dict[str, tuple[int, ...]], dict[str, np.ndarray], Any]] = []

    def _executable(self, feeds: Mapping[str, np.ndarray]) -> Any:
        shapes = {n: tuple(a.shape) for n, a in feeds.items()}
        for cshapes, baked, exe in self._cache:
            if cshapes == shapes and all(np.array_equal(feeds[n], v) for n, v in baked.items()):
                return exe
        from portc.compiler.frontends.onnx.importer import import_onnx
        from portc.compiler.pipeline import compile_program
        from portc.compiler.targets import get_target

        res = import_onnx(self.model, input_shapes=shapes, known_inputs=dict(feeds))
        tgt = get_target(self.target)
        exe = tgt.runtime(self.runtime).load(compile_program(res.program, tgt))
        self._cache.append((shapes, res.baked_inputs, exe))
        return exe

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        if isinstance(inputs, Mapping):
            feeds = {k: np.asarray(v) for k, v in inputs.items()}
        else:
            seq: Sequence[Any] = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
            if len(seq) > len(self.input_names):
                raise InputError(f"{len(seq)} inputs given, the model takes "
                                 f"{len(self.input_names)}: {self.input_names}")
            feeds = {n: np.asarray(a) for n, a in zip(self.input_names, seq, strict=False)}
        outs, _stats = self._executable(feeds).run(feeds)
        return tuple(outs[n] for n in self.output_names)


class PortcBackend(Backend):
    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "reference",
                      **kwargs: Any) -> bool:
        return cls.supports_device(device)

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "reference",
                **kwargs: Any) -> PortcBackendRep:
        from portc.compiler.targets import get_target

        target = get_target(_normalise_device(device)).name
        return PortcBackendRep(model, target, kwargs.get("runtime"))

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "reference",
                  **kwargs: Any) -> tuple[np.ndarray, ...]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        from portc.compiler.targets import all_targets

        return _normalise_device(device) in {t.name for t in all_targets()}


prepare = PortcBackend.prepare
run_model = PortcBackend.run_model
run_node = PortcBackend.run_node
supports_device = PortcBackend.supports_device
