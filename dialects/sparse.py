"""The ``sparse`` dialect: matmuls whose weight operand is held in a compressed format.

Pruning passes (``sparsify-2-4``, ``sparsify``) replace ``graph.matmul(x, W)`` with one of these
ops fed by *constants in the compressed format*, so the compressed weight is what the program
stores, what a bundle ships and what a target lowers (PTX ``mma.sp`` takes exactly the 2:4
values + 2-bit metadata pair; gather-based NPU/RVV lowerings read the bitmask format). There is no
run-time ``compress`` op: compression is a compile-time transformation of constants, and keeping
the formats as operands (not attributes) keeps the arrays in the ``WeightStore`` like every
other weight.

Both ops compute exactly ``x @ W`` where ``W`` is the dense [K, N] matrix the operands encode
(pruned entries are zero), with numpy matmul semantics for the leading dims of ``x``. They
subclass ``GraphOp`` so ``props()``, ``infer``-in-the-verifier and ``GraphBuilder`` work as for
core ops. Formats (K = contraction dim, N = output features):

* 2:4 -- ``values`` [K/2, N]: the two kept entries of every group of 4 consecutive K rows, in
  ascending position order; ``indices`` uint8 [K/2, N]: each value's position 0..3 in its group.
* bitmask -- ``mask`` uint8 [K, ceil(N/8)]: bit ``n % 8`` (little-endian bit order) of byte
  ``n // 8`` in row ``k`` says whether ``W[k, n]`` is kept; ``values`` 1-D: the kept entries in
  row-major order. ``n`` (a property) recovers N from the padded mask.
"""

from __future__ import annotations

from xdsl.dialects.builtin import IntegerAttr, TensorType
from xdsl.ir import Dialect
from xdsl.irdl import irdl_op_definition, operand_def, prop_def, result_def, traits_def
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

from portc.dialects import dtypes
from portc.dialects.graph import GraphOp, Props, TensorSpec

_FMT = " attr-dict `:` functional-type(operands, results)"


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise VerifyException(msg)


def _check_activations(x: TensorSpec, values: TensorSpec, opname: str) -> int | None:
    """Shared checks: float activations of rank >= 1 whose dtype the weight values share.
    Returns K (the last dim of ``x``; None if dynamic)."""
    _require(x.rank >= 1, f"{opname}: activations must have rank >= 1, got {x}")
    _require(
        dtypes.dtype(x.dtype).kind == "float",
        f"{opname}: activations must be floating point, got {x.dtype}",
    )
    _require(
        values.dtype == x.dtype,
        f"{opname}: weight values are {values.dtype} but activations are {x.dtype}",
    )
    return x.shape[-1]


@irdl_op_definition
class MatMul24Op(GraphOp):
    """``y = x @ W``, W [K, N] given in 2:4 format: ``W[4*(r//2) + indices[r, n], n] =
    values[r, n]``, every other entry zero (two kept entries per group of four along K)."""

    name = "sparse.matmul_2_4"
    x = operand_def(TensorType)
    values = operand_def(TensorType)
    indices = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$x `,` $values `,` $indices" + _FMT

    @classmethod
    def infer(cls, ins: list[TensorSpec], p: Props) -> list[TensorSpec]:
        x, values, indices = ins
        k = _check_activations(x, values, cls.name)
        _require(values.rank == 2, f"{cls.name}: values must be [K/2, N], got {values}")
        _require(indices.dtype == "uint8", f"{cls.name}: indices must be uint8, got {indices}")
        _require(
            indices.shape == values.shape,
            f"{cls.name}: indices {indices.shape} and values {values.shape} differ in shape",
        )
        half, n = values.shape
        _require(
            half is None or half % 2 == 0,
            f"{cls.name}: values has {half} rows; 2:4 needs an even count (K % 4 == 0)",
        )
        _require(
            k is None or half is None or k == 2 * half,
            f"{cls.name}: activations have K={k} but values encode K={None if half is None else 2 * half}",
        )
        return [TensorSpec((*x.shape[:-1], n), x.dtype)]


@irdl_op_definition
class MatMulBitmaskOp(GraphOp):
    """``y = x @ W``, W [K, n] given as a packed bitmask of kept positions plus their values in
    row-major order (unstructured sparsity); pruned entries are zero."""

    name = "sparse.matmul_bitmask"
    n = prop_def(IntegerAttr)
    x = operand_def(TensorType)
    values = operand_def(TensorType)
    mask = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$x `,` $values `,` $mask" + _FMT

    @classmethod
    def infer(cls, ins: list[TensorSpec], p: Props) -> list[TensorSpec]:
        x, values, mask = ins
        n = p["n"]
        k = _check_activations(x, values, cls.name)
        _require(n >= 1, f"{cls.name}: n must be >= 1, got {n}")
        _require(values.rank == 1, f"{cls.name}: values must be 1-D, got {values}")
        _require(
            mask.dtype == "uint8" and mask.rank == 2,
            f"{cls.name}: mask must be uint8 [K, ceil(n/8)], got {mask}",
        )
        mk, mbytes = mask.shape
        _require(
            mbytes is None or mbytes == (n + 7) // 8,
            f"{cls.name}: mask has {mbytes} bytes per row; n={n} needs {(n + 7) // 8}",
        )
        _require(
            k is None or mk is None or k == mk,
            f"{cls.name}: activations have K={k} but the mask has {mk} rows",
        )
        nnz = values.shape[0]
        _require(
            nnz is None or mk is None or nnz <= mk * n,
            f"{cls.name}: {nnz} values exceed the {mk}x{n} matrix",
        )
        return [TensorSpec((*x.shape[:-1], n), x.dtype)]


SPARSE_OPS: list[type[GraphOp]] = [MatMul24Op, MatMulBitmaskOp]

Sparse = Dialect("sparse", SPARSE_OPS, [])
