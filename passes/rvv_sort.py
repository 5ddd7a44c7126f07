"""``kernel.sort`` as scalar RV64 code: a stable insertion into the first ``k`` slots per row.

For each row, elements are visited in index order and inserted into the sorted prefix of the
output row (values + int64 indices) after every element that compares equal, so ties keep the
lower index first (stable). Once ``k`` slots are full an element enters only when it sorts
strictly before the last kept one. O(n k) per row, no scratch memory. Floats compare with NaN as
the largest value (``+inf`` keys for NaN, like the reference's ``_sort_keys``); descending order
swaps the comparison, so NaN comes first there.
"""

from __future__ import annotations

from portc.dialects import dtypes, rvv
from portc.dialects import kernel as k
from portc.passes.lower_rvv import SUPPORTED_BITS, Code, RvvLoweringError, float_bits

#: half floats sort as integers: key = |x| (NaN -> +inf) negated for negative x, so -0 == +0
HALF_INF = {"float16": 0x7C00, "bfloat16": 0x7F80}
LOAD = {("float", 16): "lhu", ("float", 32): "flw", ("float", 64): "fld", ("int", 8): "lb", ("int", 16): "lh",
        ("int", 32): "lw", ("int", 64): "ld", ("uint", 8): "lbu", ("uint", 16): "lhu",
        ("uint", 32): "lwu", ("uint", 64): "ld", ("bool", 8): "lbu"}
STORE = {8: "sb", 16: "sh", 32: "sw", 64: "sd"}


def lower_sort(op: k.SortOp, buf_index: dict[str, int],
               buffers: dict[str, k.BufferOp]) -> rvv.FuncOp:
    name = op.kernel_name()
    dt = buffers[op.input.data].dtype.data
    if dt not in SUPPORTED_BITS:
        raise RvvLoweringError(f"kernel {name} (from {op.origin()}): dtype {dt} is not "
                               "supported by the rvv target")
    kind = dtypes.dtype(dt).kind
    bits = SUPPORTED_BITS[dt]
    es = bits // 8
    rows, n, kk = op.rows.value.data, op.n.value.data, op.k.value.data
    desc = bool(op.descending.value.data)
    half = dt in HALF_INF
    is_f = kind == "float" and not half
    sfx = "s" if bits == 32 else "d"
    ld, st = LOAD[(kind, bits)], ("fsw" if bits == 32 else "fsd") if is_f else STORE[bits]
    # registers: a0 (free once the pointers are loaded) and t2 hold the half keys
    c = Code(name)
    c.comment(f"{name}: {op.origin()} sort rows={rows} n={n} k={kk} descending={desc}")
    # a1 x row, a2 values row, a3 indices row, a4 row counter, a5 i, a6 cnt, a7 j,
    # t3 &values[j], t4 &indices[j], t0-t2 scratch; ft0 x_i, ft1 key(x_i), ft2/ft3 others
    for reg, buf in (("a1", op.input.data), ("a2", op.values.data), ("a3", op.indices.data)):
        c("ld", reg, buf_index[buf] * 8, "a0") if buf_index[buf] * 8 < 2048 else (
            c.add_imm("t0", "a0", buf_index[buf] * 8), c("ld", reg, 0, "t0"))
    c.add_imm("a1", "a1", op.input_offset.value.data * es)
    if rows == 0 or kk == 0:
        c("ret")
        return rvv.FuncOp.make(name, c.ops)
    if is_f:
        c("li", "t0", float_bits(float("inf"), dt) if bits == 32 else
          float_bits(float("inf"), dt) - (1 << 64))
        c("fmv.w.x" if bits == 32 else "fmv.d.x", "ft7", "t0")
    c("li", "a4", rows)
    row = c.label()
    c.place(row)
    c("li", "a5", 0)
    c("li", "a6", 0)
    elem = c.label()
    nxt = c.label()
    c.place(elem)
    # x_i
    c.mul_imm("t0", "a5", es)
    c("add", "t0", "t0", "a1")
    xa = "ft0" if is_f else "t5"
    c(ld, xa, 0, "t0")

    def key(src: str, dst: str) -> None:
        """dst = src with NaN replaced by +inf (floats only)."""
        skip = c.label()
        c(f"fsgnj.{sfx}", dst, src, src)
        c(f"feq.{sfx}", "t2", src, src)
        c("bnez", "t2", skip)
        c(f"fsgnj.{sfx}", dst, "ft7", "ft7")
        c.place(skip)

    def half_key(src: str, dst: str) -> None:
        """dst = the signed integer key of the raw half in src."""
        nan, done = c.label(), c.label()
        c("li", "t0", 0x7FFF)
        c("and", dst, src, "t0")
        c("li", "t0", HALF_INF[dt])
        c("bltu", "t0", dst, nan)
        c("srli", "t0", src, 15)
        c("beqz", "t0", done)
        c("neg", dst, dst)
        c("j", done)
        c.place(nan)
        c("mv", dst, "t0")
        c.place(done)

    def before(a: str, b: str, target: str) -> None:
        """goto target if a sorts strictly before b (a, b: keys or integer registers)."""
        if is_f:
            lhs, rhs = (b, a) if desc else (a, b)
            c(f"flt.{sfx}", "t2", lhs, rhs)
            c("bnez", "t2", target)
        else:
            br = "bltu" if kind in ("uint", "bool") and not half else "blt"
            lhs, rhs = (b, a) if desc else (a, b)
            c(br, lhs, rhs, target)

    if is_f:
        key("ft0", "ft1")
    elif half:
        half_key("t5", "a0")
    xk = "ft1" if is_f else ("a0" if half else "t5")
    yk = "ft3" if is_f else ("t2" if half else "t6")
    # j = cnt if cnt < k else (x before last ? k-1 : skip)
    full = c.label()
    placed = c.label()
    c("li", "t0", kk)
    c("bge", "a6", "t0", full)
    c("mv", "a7", "a6")
    c("addi", "a6", "a6", 1)
    c("j", placed)
    c.place(full)
    c("addi", "a7", "t0", -1)
    c.mul_imm("t1", "a7", es)
    c("add", "t1", "t1", "a2")
    yb = "ft2" if is_f else "t6"
    c(ld, yb, 0, "t1")
    if is_f:
        key("ft2", "ft3")
    elif half:
        half_key("t6", "t2")
    take = c.label()
    before(xk, yk, take)
    c("j", nxt)
    c.place(take)
    c.place(placed)
    # shift while j > 0 and x before values[j-1]
    c.mul_imm("t3", "a7", es)
    c("add", "t3", "t3", "a2")
    c("slli", "t4", "a7", 3)
    c("add", "t4", "t4", "a3")
    loop = c.label()
    done = c.label()
    shift = c.label()
    c.place(loop)
    c("beqz", "a7", done)
    c(ld, yb, -es, "t3")
    if is_f:
        key("ft2", "ft3")
    elif half:
        half_key("t6", "t2")
    before(xk, yk, shift)
    c("j", done)
    c.place(shift)
    c(st, yb, 0, "t3")
    c("ld", "t1", -8, "t4")
    c("sd", "t1", 0, "t4")
    c("addi", "t3", "t3", -es)
    c("addi", "t4", "t4", -8)
    c("addi", "a7", "a7", -1)
    c("j", loop)
    c.place(done)
    c(st, xa, 0, "t3")
    c("sd", "a5", 0, "t4")
    c.place(nxt)
    c("addi", "a5", "a5", 1)
    c("li", "t0", n)
    c("blt", "a5", "t0", elem)
    # next row
    c.add_imm("a1", "a1", n * es)
    c.add_imm("a2", "a2", kk * es)
    c.add_imm("a3", "a3", kk * 8)
    c("addi", "a4", "a4", -1)
    c("bnez", "a4", row)
    c("ret")
    return rvv.FuncOp.make(name, c.ops, schedule=f"scalar insertion sort, {rows} rows")
