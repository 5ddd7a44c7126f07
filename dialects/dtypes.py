"""Element types: one table linking portc's dtype names, numpy, xDSL and ONNX.

Every layer speaks the dtype *name* (``"float32"``, ``"bfloat16"``, ``"int4"``); conversions to the
numpy dtype that holds values, the xDSL element type that prints in IR, and the ONNX enum go through
this single table so that adding a type is one row.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np
from onnx import TensorProto
from xdsl.dialects import builtin
from xdsl.ir import Attribute


@dataclass(frozen=True)
class DType:
    """One element type as every layer of portc sees it."""

    name: str
    numpy: np.dtype
    ir: Attribute
    onnx: int
    kind: str  # "float", "int", "uint" or "bool"
    bits: int


def _row(name: str, npdt: object, ir: Attribute, onnx: int, kind: str, bits: int) -> DType:
    return DType(name, np.dtype(npdt), ir, onnx, kind, bits)


_I, _U = builtin.Signedness.SIGNLESS, builtin.Signedness.UNSIGNED

DTYPES: dict[str, DType] = {
    d.name: d
    for d in [
        _row("float32", np.float32, builtin.f32, TensorProto.FLOAT, "float", 32),
        _row("float64", np.float64, builtin.f64, TensorProto.DOUBLE, "float", 64),
        _row("float16", np.float16, builtin.f16, TensorProto.FLOAT16, "float", 16),
        _row("bfloat16", ml_dtypes.bfloat16, builtin.bf16, TensorProto.BFLOAT16, "float", 16),
        _row("float8_e4m3fn", ml_dtypes.float8_e4m3fn, builtin.Float8E4M3FNType(),
             TensorProto.FLOAT8E4M3FN, "float", 8),
        _row("float8_e4m3fnuz", ml_dtypes.float8_e4m3fnuz, builtin.Float8E4M3FNUZType(),
             TensorProto.FLOAT8E4M3FNUZ, "float", 8),
        _row("float8_e5m2", ml_dtypes.float8_e5m2, builtin.Float8E5M2Type(),
             TensorProto.FLOAT8E5M2, "float", 8),
        _row("float8_e5m2fnuz", ml_dtypes.float8_e5m2fnuz, builtin.Float8E5M2FNUZType(),
             TensorProto.FLOAT8E5M2FNUZ, "float", 8),
        _row("float8_e8m0fnu", ml_dtypes.float8_e8m0fnu, builtin.Float8E8M0FNUType(),
             TensorProto.FLOAT8E8M0, "float", 8),
        _row("float4_e2m1fn", ml_dtypes.float4_e2m1fn, builtin.Float4E2M1FNType(),
             TensorProto.FLOAT4E2M1, "float", 4),
        _row("int8", np.int8, builtin.IntegerType(8, _I), TensorProto.INT8, "int", 8),
        _row("int16", np.int16, builtin.IntegerType(16, _I), TensorProto.INT16, "int", 16),
        _row("int32", np.int32, builtin.IntegerType(32, _I), TensorProto.INT32, "int", 32),
        _row("int64", np.int64, builtin.IntegerType(64, _I), TensorProto.INT64, "int", 64),
        _row("int4", ml_dtypes.int4, builtin.IntegerType(4, _I), TensorProto.INT4, "int", 4),
        _row("int2", ml_dtypes.int2, builtin.IntegerType(2, _I), TensorProto.INT2, "int", 2),
        _row("uint8", np.uint8, builtin.IntegerType(8, _U), TensorProto.UINT8, "uint", 8),
        _row("uint16", np.uint16, builtin.IntegerType(16, _U), TensorProto.UINT16, "uint", 16),
        _row("uint32", np.uint32, builtin.IntegerType(32, _U), TensorProto.UINT32, "uint", 32),
        _row("uint64", np.uint64, builtin.IntegerType(64, _U), TensorProto.UINT64, "uint", 64),
        _row("uint4", ml_dtypes.uint4, builtin.IntegerType(4, _U), TensorProto.UINT4, "uint", 4),
        _row("uint2", ml_dtypes.uint2, builtin.IntegerType(2, _U), TensorProto.UINT2, "uint", 2),
        _row("bool", np.bool_, builtin.i1, TensorProto.BOOL, "bool", 1),
    ]
}

_BY_IR: dict[Attribute, DType] = {d.ir: d for d in DTYPES.values()}
_BY_ONNX: dict[int, DType] = {d.onnx: d for d in DTYPES.values()}
_BY_NUMPY: dict[np.dtype, DType] = {d.numpy: d for d in DTYPES.values()}


def dtype(name: str) -> DType:
    """Look up a dtype by portc name; KeyError lists what exists."""
    try:
        return DTYPES[name]
    except KeyError:
        raise KeyError(f"unknown dtype '{name}' (known: {', '.join(DTYPES)})") from None


def from_ir(attr: Attribute) -> DType:
    try:
        return _BY_IR[attr]
    except KeyError:
        raise KeyError(f"element type {attr} has no portc dtype") from None


def from_onnx(enum: int) -> DType | None:
    """None for ONNX types portc does not model (strings, complex)."""
    return _BY_ONNX.get(enum)


def from_numpy(dt: np.dtype) -> DType:
    try:
        return _BY_NUMPY[np.dtype(dt)]
    except KeyError:
        raise KeyError(f"numpy dtype {dt} has no portc dtype") from None


def is_float(name: str) -> bool:
    return DTYPES[name].kind == "float"


def is_int(name: str) -> bool:
    return DTYPES[name].kind in ("int", "uint")
