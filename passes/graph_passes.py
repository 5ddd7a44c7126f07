"""Graph-level passes registered under their names for pipelines and ``portc opt``.

``canonicalize``, ``cse`` and ``dce`` are xDSL's own passes; graph ops contribute their
canonicalization patterns through traits (``portc.passes.canonicalize_graph``). The
model-changing passes (quantize-*, sparsify*, moe-routing) register here too.
"""

from __future__ import annotations

from xdsl.transforms.canonicalize import CanonicalizePass
from xdsl.transforms.common_subexpression_elimination import CommonSubexpressionElimination
from xdsl.transforms.dead_code_elimination import DeadCodeElimination

from portc.passes import (
    decompose_for_targets,  # noqa: F401 - registers decompose-for-targets
    fold_constants,  # noqa: F401 - registers fold-constants
    moe_routing,  # noqa: F401 - registers moe-routing
    sparsify,  # noqa: F401 - registers sparsify-2-4, sparsify
)
from portc.passes.quantize import QUANTIZE_PASSES
from portc.passes.registry import register_pass

CommonSubexpressionElimination.__doc__ = "Merge identical pure ops with identical operands."
DeadCodeElimination.__doc__ = "Remove pure ops whose results are unused."
for _pass in (CanonicalizePass, CommonSubexpressionElimination, DeadCodeElimination,
              *QUANTIZE_PASSES):
    register_pass(_pass)
