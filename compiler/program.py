"""A program: one xDSL module plus the weight store its constants name.

The module holds ``func.func @main``; its ``portc.input_names`` / ``portc.output_names``
attributes keep the model's tensor names so that bundles, ``--inputs`` files and reports speak the
user's names. Printing and parsing go through MLIR text; the round trip is exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xdsl.context import Context
from xdsl.dialects import arith, builtin, func, scf
from xdsl.dialects.builtin import ArrayAttr, ModuleOp, StringAttr
from xdsl.utils.exceptions import ParseError, VerifyException

from portc.compiler.errors import IRError
from portc.compiler.weights import WeightStore
from portc.dialects import graph


@dataclass
class PortcContext(Context):
    """An xDSL context that also carries the program's weights, so that passes which read or
    create constants (``fold-constants``) reach the arrays through the ``ctx`` every
    ``ModulePass.apply`` already receives."""

    weights: WeightStore = field(default_factory=WeightStore)


def weights_of(ctx: Context) -> WeightStore:
    if not isinstance(ctx, PortcContext):
        raise IRError("this pass needs the program's weights; run it through portc (portc opt "
                      "--weights W.safetensors), not a bare xDSL context")
    return ctx.weights


def make_context(weights: WeightStore | None = None) -> PortcContext:
    """A context with every dialect portc programs may contain."""
    ctx = PortcContext(weights=weights if weights is not None else WeightStore())
    for d in (builtin.Builtin, func.Func, arith.Arith, scf.Scf, graph.Graph):
        ctx.load_dialect(d)
    from portc.dialects import registry

    for d in registry.extra_dialects():
        ctx.load_dialect(d)
    return ctx


@dataclass
class Program:
    module: ModuleOp
    weights: WeightStore = field(default_factory=WeightStore)

    @property
    def main(self) -> func.FuncOp:
        for op in self.module.ops:
            if isinstance(op, func.FuncOp) and op.sym_name.data == "main":
                return op
        raise IRError("module has no func.func @main")

    def _names(self, key: str, count: int, prefix: str) -> list[str]:
        attr = self.main.attributes.get(key)
        if isinstance(attr, ArrayAttr):
            return [a.data for a in attr.data if isinstance(a, StringAttr)]
        return [f"{prefix}{i}" for i in range(count)]

    @property
    def input_names(self) -> list[str]:
        return self._names("portc.input_names", len(self.main.args), "input")

    @property
    def output_names(self) -> list[str]:
        return self._names("portc.output_names", len(self.main.function_type.outputs), "output")

    def input_specs(self) -> dict[str, graph.TensorSpec]:
        return {
            n: graph.spec_of(a) for n, a in zip(self.input_names, self.main.args, strict=True)
        }

    def output_specs(self) -> dict[str, graph.TensorSpec]:
        outs = self.main.function_type.outputs.data
        return {
            n: graph.TensorSpec.from_ir(t) for n, t in zip(self.output_names, outs, strict=True)
        }

    def to_text(self) -> str:
        return str(self.module) + "\n"

    def verify(self, check_weights: bool = True) -> None:
        """IR verifier plus the check the IR alone cannot do: constants match their arrays."""
        try:
            self.module.verify()
        except VerifyException as e:
            raise IRError(f"IR does not verify: {e}") from e
        if not check_weights:
            return
        for op in self.module.walk():
            if isinstance(op, graph.ConstantOp):
                name = op.resource.data
                if name not in self.weights:
                    raise IRError(f"graph.constant refers to missing weight '{name}'")
                arr, spec = self.weights[name], graph.spec_of(op.result)
                if tuple(arr.shape) != spec.shape or arr.dtype != graph.dtypes.dtype(spec.dtype).numpy:
                    raise IRError(
                        f"weight '{name}' is {arr.dtype}{list(arr.shape)} but the IR says {spec}"
                    )

    def clone(self) -> Program:
        return Program(self.module.clone(), self.weights)


def parse_program(text: str, weights: WeightStore | None = None, source: str = "<ir>") -> Program:
    from xdsl.parser import Parser

    try:
        module = Parser(make_context(), text, name=source).parse_module()
    except ParseError as e:
        raise IRError(f"{source}: cannot parse IR: {e}") from e
    return Program(module, weights if weights is not None else WeightStore())
