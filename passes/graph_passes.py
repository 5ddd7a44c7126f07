"""Graph-level cleanup passes: canonicalize, cse, dce (xDSL's), registered under their names."""

from __future__ import annotations

from portc.passes.registry import register_pass
from xdsl.transforms.canonicalize import CanonicalizePass
from xdsl.transforms.common_subexpression_elimination import CommonSubexpressionElimination
from xdsl.transforms.dead_code_elimination import DeadCodeElimination

register_pass(CanonicalizePass)
register_pass(CommonSubexpressionElimination)
register_pass(DeadCodeElimination)
