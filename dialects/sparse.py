"""The ``sparse`` dialect: compressed weight formats as IR types, and the matmul that reads them.

A compressed weight is a *tensor value* whose type carries a sparse encoding, the way MLIR's
``sparse_tensor`` dialect spells sparse tensors (``tensor<64x32xf32, #sparse_tensor.encoding<..>>``):
the shape and element type are those of the dense [K, N] matrix it stands for, the encoding
attribute names the storage format and what its arrays look like::

    tensor<64x32xf32, #sparse.nm<2:4>>                     N:M structured (NVIDIA 2:4, mma.sp)
    tensor<64x32xf32, #sparse.bitmask<nnz = 1024>>         unstructured, bitmask + values
    tensor<64x32xf32, #sparse.csr<nnz = 96, index = ui16>> unstructured, compressed sparse rows

Such a value is built by ``sparse.assemble`` from its component arrays (after MLIR's
``sparse_tensor.assemble``), each a ``graph.constant``, and consumed by ``sparse.matmul``. The
semantic value of an encoded tensor is the dense matrix (pruned entries are zero), so every op
that reads it computes exactly what it would on the dense matrix; the encoding says how the
bytes are stored, shipped and lowered (``mma.sp`` takes the 2:4 values + 2-bit metadata pair;
NPU/RVV gather-based lowerings read bitmask or CSR; ``decompose-for-targets`` folds them into
plain ``graph`` ops for targets without sparse units).

Component layouts (K rows = contraction dim, N columns = output features, all row-major):

* ``nm<n:m>`` -- ``values`` [K*n/m, N] (element type): the n kept entries of every group of m
  consecutive rows of each column, in ascending position order; ``indices`` uint8
  [K*n/m, ceil(N*b/8)]: each value's position 0..m-1 in its group as a b-bit field
  (b = bits for m-1, 2 for 2:4), packed little-endian along N (column j of row r sits in byte
  ``j*b // 8`` at bit ``j*b % 8``).
* ``bitmask<nnz>`` -- ``mask`` uint8 [K, ceil(N/8)]: bit ``j % 8`` (little-endian) of byte
  ``j // 8`` in row k says whether ``W[k, j]`` is kept; ``values`` [nnz]: the kept entries.
* ``csr<nnz, index>`` -- ``row_ptr`` int32 [K+1], ``col_idx`` (the index type) [nnz],
  ``values`` [nnz]: row k's entries are ``values[row_ptr[k]:row_ptr[k+1]]`` at columns
  ``col_idx[row_ptr[k]:row_ptr[k+1]]`` (ascending).

Weight storage: a compressed weight lives in the ``WeightStore`` (and so in a bundle's
``weights.safetensors``) as its components stored side by side under one name: ``<name>/values``,
``<name>/indices``, ... (``store_sparse`` / ``load_sparse``). ``/`` never occurs in names the
store makes up, so the component names cannot collide with other weights.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from xdsl.dialects.builtin import IntAttr, IntegerType, TensorType
from xdsl.ir import Attribute, Dialect, ParametrizedAttribute, SSAValue
from xdsl.irdl import (
    irdl_attr_definition,
    irdl_op_definition,
    operand_def,
    result_def,
    traits_def,
    var_operand_def,
)
from xdsl.parser import AttrParser
from xdsl.printer import Printer
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

from portc.compiler.weights import WeightStore
from portc.dialects import dtypes
from portc.dialects.graph import GraphOp, Props, TensorSpec, spec_of


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise VerifyException(msg)


# ------------------------------------------------------------------------------ encodings


class SparseEncoding(ParametrizedAttribute, ABC):
    """A compressed storage format for a 2-D [K, N] tensor type."""

    #: component names in operand order of ``sparse.assemble``
    COMPONENTS: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def components(self, k: int, n: int, dtype: str) -> dict[str, TensorSpec]:
        """The arrays that store a [K, N] ``dtype`` matrix in this format."""

    @abstractmethod
    def nnz(self, k: int, n: int) -> int:
        """Stored (kept) entries of a [K, N] matrix: the multiply-accumulates per row of x."""

    def check_shape(self, k: int, n: int) -> None:
        """Reject [K, N] shapes the format cannot describe (VerifyException)."""
        _require(self.nnz(k, n) <= k * n, f"{self}: {self.nnz(k, n)} entries exceed {k}x{n}")


@irdl_attr_definition
class NMEncoding(SparseEncoding):
    """``#sparse.nm<n:m>``: n kept entries in every m consecutive rows of each column."""

    name = "sparse.nm"
    COMPONENTS = ("values", "indices")
    n_kept: IntAttr
    m_group: IntAttr

    def __init__(self, n: int, m: int) -> None:
        super().__init__(IntAttr(n), IntAttr(m))

    @property
    def n(self) -> int:
        return self.n_kept.data

    @property
    def m(self) -> int:
        return self.m_group.data

    @property
    def index_bits(self) -> int:
        """Bits per position field: enough for m-1, rounded up to 1, 2, 4 or 8 so that fields
        never straddle a byte (2 for 2:4, as ``mma.sp`` metadata)."""
        need = max(1, math.ceil(math.log2(self.m)))
        return next(b for b in (1, 2, 4, 8) if b >= need)

    def verify(self) -> None:
        _require(1 <= self.n < self.m <= 256,
                 f"#sparse.nm<{self.n}:{self.m}>: need 1 <= n < m <= 256")

    def check_shape(self, k: int, n: int) -> None:
        _require(k % self.m == 0, f"{self}: K={k} is not a multiple of m={self.m}")

    def components(self, k: int, n: int, dtype: str) -> dict[str, TensorSpec]:
        rows = k // self.m * self.n
        return {"values": TensorSpec((rows, n), dtype),
                "indices": TensorSpec((rows, (n * self.index_bits + 7) // 8), "uint8")}

    def nnz(self, k: int, n: int) -> int:
        return k // self.m * self.n * n

    def print_parameters(self, printer: Printer) -> None:
        printer.print_string(f"<{self.n}:{self.m}>")

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> list[Attribute]:
        with parser.in_angle_brackets():
            n = parser.parse_integer(allow_negative=False)
            parser.parse_punctuation(":")
            m = parser.parse_integer(allow_negative=False)
        return [IntAttr(n), IntAttr(m)]


def _parse_nnz(parser: AttrParser) -> IntAttr:
    parser.parse_keyword("nnz")
    parser.parse_punctuation("=")
    return IntAttr(parser.parse_integer(allow_negative=False))


@irdl_attr_definition
class BitmaskEncoding(SparseEncoding):
    """``#sparse.bitmask<nnz = N>``: a bit per entry plus the kept values."""

    name = "sparse.bitmask"
    COMPONENTS = ("mask", "values")
    nnz_count: IntAttr

    def __init__(self, nnz: int) -> None:
        super().__init__(IntAttr(nnz))

    def components(self, k: int, n: int, dtype: str) -> dict[str, TensorSpec]:
        return {"mask": TensorSpec((k, (n + 7) // 8), "uint8"),
                "values": TensorSpec((self.nnz_count.data,), dtype)}

    def nnz(self, k: int, n: int) -> int:
        return self.nnz_count.data

    def print_parameters(self, printer: Printer) -> None:
        printer.print_string(f"<nnz = {self.nnz_count.data}>")

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> list[Attribute]:
        with parser.in_angle_brackets():
            return [_parse_nnz(parser)]


#: CSR column index types (narrowest first): ``csr_index_dtype`` picks the first that fits N
CSR_INDEX_DTYPES = ("uint8", "uint16", "int32")


@irdl_attr_definition
class CSREncoding(SparseEncoding):
    """``#sparse.csr<nnz = N, index = ui16>``: compressed sparse rows with narrow column ids."""

    name = "sparse.csr"
    COMPONENTS = ("row_ptr", "col_idx", "values")
    nnz_count: IntAttr
    index_type: IntegerType

    def __init__(self, nnz: int, index_dtype: str) -> None:
        ir = dtypes.dtype(index_dtype).ir
        assert isinstance(ir, IntegerType)
        super().__init__(IntAttr(nnz), ir)

    @property
    def index_dtype(self) -> str:
        return dtypes.from_ir(self.index_type).name

    def verify(self) -> None:
        name = dtypes.from_ir(self.index_type).name if self.index_type in (
            dtypes.dtype(d).ir for d in CSR_INDEX_DTYPES) else str(self.index_type)
        _require(name in CSR_INDEX_DTYPES,
                 f"#sparse.csr: column index type {name} is not one of {CSR_INDEX_DTYPES}")

    def check_shape(self, k: int, n: int) -> None:
        super().check_shape(k, n)
        bits = dtypes.dtype(self.index_dtype).bits - (dtypes.dtype(self.index_dtype).kind == "int")
        _require(n <= 1 << bits, f"{self}: {n} columns do not fit {self.index_dtype} indices")

    def components(self, k: int, n: int, dtype: str) -> dict[str, TensorSpec]:
        nnz = self.nnz_count.data
        return {"row_ptr": TensorSpec((k + 1,), "int32"),
                "col_idx": TensorSpec((nnz,), self.index_dtype),
                "values": TensorSpec((nnz,), dtype)}

    def nnz(self, k: int, n: int) -> int:
        return self.nnz_count.data

    def print_parameters(self, printer: Printer) -> None:
        printer.print_string(f"<nnz = {self.nnz_count.data}, index = ")
        printer.print_attribute(self.index_type)
        printer.print_string(">")

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> list[Attribute]:
        with parser.in_angle_brackets():
            nnz = _parse_nnz(parser)
            parser.parse_punctuation(",")
            parser.parse_keyword("index")
            parser.parse_punctuation("=")
            t = parser.parse_type()
        if not isinstance(t, IntegerType):
            parser.raise_error(f"#sparse.csr: index must be an integer type, got {t}")
        return [nnz, t]


def csr_index_dtype(n: int) -> str:
    """The narrowest column index type that addresses N columns."""
    for d in CSR_INDEX_DTYPES:
        dt = dtypes.dtype(d)
        if n <= 1 << (dt.bits - (dt.kind == "int")):
            return d
    raise ValueError(f"{n} columns are too many for CSR indices")


def encoding_of(t: Attribute) -> SparseEncoding | None:
    """The sparse encoding of a tensor type, or None for a dense tensor."""
    if isinstance(t, TensorType) and isinstance(t.encoding, SparseEncoding):
        return t.encoding
    return None


def sparse_type(k: int, n: int, dtype: str, encoding: SparseEncoding) -> TensorType:
    """``tensor<KxNx<dtype>, #encoding>`` (checked against the format)."""
    encoding.check_shape(k, n)
    return TensorType(dtypes.dtype(dtype).ir, [k, n], encoding)


# ------------------------------------------------------------------------------ ops


@irdl_op_definition
class AssembleOp(GraphOp):
    """``W = assemble(components...)``: the [K, N] tensor (result type, with its sparse
    encoding) whose storage is exactly these component arrays (layouts in the module
    docstring). Its value is the dense matrix they encode."""

    name = "sparse.assemble"
    components = var_operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$components attr-dict `:` functional-type(operands, results)"

    @property
    def encoding(self) -> SparseEncoding:
        enc = encoding_of(self.result.type)
        if enc is None:
            raise VerifyException(f"{self.name}: the result type {self.result.type} has no "
                                  "sparse encoding")
        return enc

    def props(self) -> Props:
        """The kernel needs the format, which the result type (not a property) carries."""
        return {"encoding": self.encoding}

    @classmethod
    def infer(cls, ins: list[TensorSpec], p: Props) -> list[TensorSpec]:
        raise TypeError(f"{cls.name} is built with its (encoded) result type: use make()")

    def verify_(self) -> None:
        enc = self.encoding
        out = spec_of(self.result)
        _require(out.rank == 2 and out.is_static,
                 f"{self.name}: a compressed weight must be a static [K, N] tensor, got {out}")
        _require(dtypes.dtype(out.dtype).kind == "float",
                 f"{self.name}: compressed weights hold floating point values, got {out.dtype}")
        k, n = (int(d) for d in out.shape)  # type: ignore[arg-type]
        enc.check_shape(k, n)
        want = enc.components(k, n, out.dtype)
        got = self.input_specs()
        _require(len(got) == len(want),
                 f"{self.name}: {enc} takes {len(want)} components ({', '.join(want)}), "
                 f"got {len(got)}")
        for (cname, w), spec in zip(want.items(), got, strict=True):
            _require(spec == w, f"{self.name}: component '{cname}' of {enc} for {k}x{n} must be "
                                f"{w}, got {spec}")

    @staticmethod
    def make(components: Sequence[SSAValue], k: int, n: int, dtype: str,
              encoding: SparseEncoding) -> AssembleOp:
        return AssembleOp.create(operands=list(components),
                                 result_types=[sparse_type(k, n, dtype, encoding)])


@irdl_op_definition
class MatMulOp(GraphOp):
    """``y = x @ W`` for a [K, N] weight ``W`` (usually a ``sparse.assemble``d compressed
    weight), numpy matmul semantics over the leading dims of ``x``. Separate from
    ``graph.matmul`` so that lowerings see at once that the rhs is a compressed weight."""

    name = "sparse.matmul"
    x = operand_def(TensorType)
    weight = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$x `,` $weight attr-dict `:` functional-type(operands, results)"

    @classmethod
    def infer(cls, ins: list[TensorSpec], p: Props) -> list[TensorSpec]:
        x, w = ins
        _require(x.rank >= 1, f"{cls.name}: activations must have rank >= 1, got {x}")
        _require(dtypes.dtype(x.dtype).kind == "float",
                 f"{cls.name}: activations must be floating point, got {x.dtype}")
        _require(w.rank == 2, f"{cls.name}: the weight must be [K, N], got {w}")
        _require(w.dtype == x.dtype,
                 f"{cls.name}: weight values are {w.dtype} but activations are {x.dtype}")
        k, n = w.shape
        _require(x.shape[-1] is None or k is None or x.shape[-1] == k,
                 f"{cls.name}: activations have K={x.shape[-1]} but the weight has K={k}")
        return [TensorSpec((*x.shape[:-1], n), x.dtype)]


SPARSE_OPS: list[type[GraphOp]] = [AssembleOp, MatMulOp]
SPARSE_ENCODINGS: list[type[SparseEncoding]] = [NMEncoding, BitmaskEncoding, CSREncoding]

Sparse = Dialect("sparse", SPARSE_OPS, SPARSE_ENCODINGS)


# ------------------------------------------------------------------------------ storage


@dataclass(frozen=True)
class SparseWeight:
    """A compressed [K, N] matrix in numpy: its encoding and component arrays (by name)."""

    shape: tuple[int, int]
    dtype: str
    encoding: SparseEncoding
    arrays: dict[str, np.ndarray]

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())


def component_name(name: str, component: str) -> str:
    return f"{name}/{component}"


def store_sparse(weights: WeightStore, hint: str, w: SparseWeight) -> str:
    """Store every component as ``<name>/<component>`` under one fresh ``name``; return it."""
    base = re.sub(r"[^A-Za-z0-9_.\-]", "_", hint) or "sparse"
    name, i = base, 0
    while name in weights or any(component_name(name, c) in weights
                                 for c in w.encoding.COMPONENTS):
        i += 1
        name = f"{base}_{i}"
    for cname in w.encoding.COMPONENTS:
        weights.put(component_name(name, cname), w.arrays[cname])
    return name


def load_sparse(weights: WeightStore, name: str, k: int, n: int, dtype: str,
                encoding: SparseEncoding) -> SparseWeight:
    """The compressed weight stored under ``name`` (KeyError names a missing component)."""
    arrays = {}
    for cname in encoding.COMPONENTS:
        full = component_name(name, cname)
        if full not in weights:
            raise KeyError(f"compressed weight '{name}' lacks its component '{full}'")
        arrays[cname] = weights[full]
    return SparseWeight((k, n), dtype, encoding, arrays)
