"""Hand-written PTX kernels the ptxsim tests execute; every one must assemble with
``ptxas -arch=sm_80`` (test_ptxas.py), so the simulator is held to real PTX syntax."""

from __future__ import annotations

HEADER = """.version 8.0
.target sm_80
.address_size 64
"""

# c[i] = a[i] + b[i] for i < n; the grid is rounded up, so the tail block is partly idle
VADD = HEADER + """
.visible .entry vadd(
    .param .u64 pa,
    .param .u64 pb,
    .param .u64 pc,
    .param .u32 n
)
{
    .reg .pred %p<2>;
    .reg .b32 %r<6>;
    .reg .f32 %f<4>;
    .reg .b64 %rd<10>;

    ld.param.u64 %rd1, [pa];
    ld.param.u64 %rd2, [pb];
    ld.param.u64 %rd3, [pc];
    ld.param.u32 %r1, [n];
    mov.u32 %r2, %ctaid.x;
    mov.u32 %r3, %ntid.x;
    mov.u32 %r4, %tid.x;
    mad.lo.s32 %r5, %r2, %r3, %r4;
    setp.ge.u32 %p1, %r5, %r1;
    @%p1 bra $L_done;
    cvta.to.global.u64 %rd4, %rd1;
    cvta.to.global.u64 %rd5, %rd2;
    cvta.to.global.u64 %rd6, %rd3;
    mul.wide.u32 %rd7, %r5, 4;
    add.s64 %rd8, %rd4, %rd7;
    ld.global.f32 %f1, [%rd8];
    add.s64 %rd8, %rd5, %rd7;
    ld.global.nc.f32 %f2, [%rd8];
    add.rn.f32 %f3, %f1, %f2;
    add.s64 %rd9, %rd6, %rd7;
    st.global.f32 [%rd9], %f3;
$L_done:
    ret;
}
"""

# Same kernel with the tail guard forgotten: threads past n store out of bounds.
VADD_NO_GUARD = VADD.replace("    @%p1 bra $L_done;\n", "").replace(".entry vadd(", ".entry vadd_noguard(")


def block_reduce(with_barrier: bool = True) -> str:
    """out[block] = sum of the block's 256 inputs: shared-memory tree, bar.sync per level."""
    bar = "    bar.sync 0;\n" if with_barrier else ""
    name = "block_sum" if with_barrier else "block_sum_racy"
    return HEADER + f"""
.visible .entry {name}(
    .param .u64 pin,
    .param .u64 pout
)
{{
    .reg .pred %p<3>;
    .reg .b32 %r<12>;
    .reg .f32 %f<4>;
    .reg .b64 %rd<8>;
    .shared .align 4 .b8 sdata[1024];

    ld.param.u64 %rd1, [pin];
    ld.param.u64 %rd2, [pout];
    cvta.to.global.u64 %rd1, %rd1;
    cvta.to.global.u64 %rd2, %rd2;
    mov.u32 %r1, %tid.x;
    mov.u32 %r2, %ctaid.x;
    mov.u32 %r3, %ntid.x;
    mad.lo.s32 %r4, %r2, %r3, %r1;
    mul.wide.u32 %rd3, %r4, 4;
    add.s64 %rd4, %rd1, %rd3;
    ld.global.f32 %f1, [%rd4];
    mov.u32 %r5, sdata;
    shl.b32 %r6, %r1, 2;
    add.s32 %r7, %r5, %r6;
    st.shared.f32 [%r7], %f1;
{bar}    shr.u32 %r8, %r3, 1;
$L_loop:
    setp.ge.u32 %p1, %r1, %r8;
    @%p1 bra $L_skip;
    shl.b32 %r9, %r8, 2;
    add.s32 %r10, %r7, %r9;
    ld.shared.f32 %f2, [%r10];
    ld.shared.f32 %f3, [%r7];
    add.f32 %f3, %f3, %f2;
    st.shared.f32 [%r7], %f3;
$L_skip:
    bar.sync 0;
    shr.u32 %r8, %r8, 1;
    setp.ne.s32 %p2, %r8, 0;
    @%p2 bra $L_loop;
    setp.ne.s32 %p1, %r1, 0;
    @%p1 bra $L_end;
    ld.shared.f32 %f1, [sdata];
    mul.wide.u32 %rd5, %r2, 4;
    add.s64 %rd6, %rd2, %rd5;
    st.global.f32 [%rd6], %f1;
$L_end:
    ret;
}}
"""


# out[warp] = sum of the warp's 32 inputs via shfl.sync.bfly (xor 16, 8, 4, 2, 1)
WARP_SUM = HEADER + """
.visible .entry warp_sum(
    .param .u64 pin,
    .param .u64 pout
)
{
    .reg .pred %p<2>;
    .reg .b32 %r<10>;
    .reg .f32 %f<4>;
    .reg .b64 %rd<8>;

    ld.param.u64 %rd1, [pin];
    ld.param.u64 %rd2, [pout];
    cvta.to.global.u64 %rd1, %rd1;
    cvta.to.global.u64 %rd2, %rd2;
    mov.u32 %r1, %tid.x;
    mov.u32 %r2, %ctaid.x;
    mov.u32 %r3, %ntid.x;
    mad.lo.s32 %r4, %r2, %r3, %r1;
    mul.wide.u32 %rd3, %r4, 4;
    add.s64 %rd4, %rd1, %rd3;
    ld.global.f32 %f1, [%rd4];
    shfl.sync.bfly.b32 %f2, %f1, 16, 31, -1;
    add.f32 %f1, %f1, %f2;
    shfl.sync.bfly.b32 %f2, %f1, 8, 31, -1;
    add.f32 %f1, %f1, %f2;
    shfl.sync.bfly.b32 %f2, %f1, 4, 31, -1;
    add.f32 %f1, %f1, %f2;
    shfl.sync.bfly.b32 %f2, %f1, 2, 31, -1;
    add.f32 %f1, %f1, %f2;
    shfl.sync.bfly.b32 %f2, %f1, 1, 31, -1;
    add.f32 %f1, %f1, %f2;
    mov.u32 %r5, %laneid;
    setp.ne.s32 %p1, %r5, 0;
    @%p1 bra $L_end;
    shr.u32 %r6, %r4, 5;
    mul.wide.u32 %rd5, %r6, 4;
    add.s64 %rd6, %rd2, %rd5;
    st.global.f32 [%rd6], %f1;
$L_end:
    ret;
}
"""

# shfl.sync.up/down/idx with a pred destination: out = {up1, down3, idx(lane^5 within width 8), pred}
SHFL_MODES = HEADER + """
.visible .entry shfl_modes(
    .param .u64 pout
)
{
    .reg .pred %p<4>;
    .reg .b32 %r<16>;
    .reg .b64 %rd<8>;

    ld.param.u64 %rd1, [pout];
    cvta.to.global.u64 %rd1, %rd1;
    mov.u32 %r1, %tid.x;
    mul.lo.s32 %r2, %r1, 10;
    shfl.sync.up.b32 %r3|%p1, %r2, 1, 0, -1;
    shfl.sync.down.b32 %r4|%p2, %r2, 3, 31, -1;
    and.b32 %r5, %r1, 7;
    xor.b32 %r5, %r5, 5;
    shfl.sync.idx.b32 %r6|%p3, %r2, %r5, 6175, -1;
    selp.u32 %r7, 1, 0, %p1;
    selp.u32 %r8, 2, 0, %p2;
    or.b32 %r7, %r7, %r8;
    mul.wide.u32 %rd2, %r1, 16;
    add.s64 %rd3, %rd1, %rd2;
    st.global.v4.u32 [%rd3], {%r3, %r4, %r6, %r7};
    ret;
}
"""

# if (tid % 3 == 0) x = a * 2 else x = a + 1;  then y = x * tid + 7 (after the join)
DIVERGE = HEADER + """
.visible .entry diverge(
    .param .u64 pin,
    .param .u64 pout
)
{
    .reg .pred %p<3>;
    .reg .b32 %r<12>;
    .reg .b64 %rd<8>;

    ld.param.u64 %rd1, [pin];
    ld.param.u64 %rd2, [pout];
    cvta.to.global.u64 %rd1, %rd1;
    cvta.to.global.u64 %rd2, %rd2;
    mov.u32 %r1, %tid.x;
    mul.wide.u32 %rd3, %r1, 4;
    add.s64 %rd4, %rd1, %rd3;
    ld.global.u32 %r2, [%rd4];
    rem.u32 %r3, %r1, 3;
    setp.eq.s32 %p1, %r3, 0;
    @!%p1 bra $L_else;
    shl.b32 %r4, %r2, 1;
    and.b32 %r9, %r1, 1;
    setp.eq.s32 %p2, %r9, 0;
    @%p2 bra $L_join;
    add.s32 %r4, %r4, 1000;
    bra.uni $L_join;
$L_else:
    add.s32 %r4, %r2, 1;
$L_join:
    mul.lo.s32 %r5, %r4, %r1;
    add.s32 %r5, %r5, 7;
    add.s64 %rd5, %rd2, %rd3;
    st.global.u32 [%rd5], %r5;
    ret;
}
"""

# out[i] = sum_{k < cnt[i]} (3k + 1): a loop whose trip count differs per thread
LOOP = HEADER + """
.visible .entry loop_count(
    .param .u64 pcnt,
    .param .u64 pout
)
{
    .reg .pred %p<2>;
    .reg .b32 %r<10>;
    .reg .b64 %rd<8>;

    ld.param.u64 %rd1, [pcnt];
    ld.param.u64 %rd2, [pout];
    cvta.to.global.u64 %rd1, %rd1;
    cvta.to.global.u64 %rd2, %rd2;
    mov.u32 %r1, %tid.x;
    mov.u32 %r2, %ctaid.x;
    mov.u32 %r3, %ntid.x;
    mad.lo.s32 %r1, %r2, %r3, %r1;
    mul.wide.u32 %rd3, %r1, 4;
    add.s64 %rd4, %rd1, %rd3;
    ld.global.u32 %r4, [%rd4];
    mov.u32 %r5, 0;
    mov.u32 %r6, 0;
    setp.eq.s32 %p1, %r4, 0;
    @%p1 bra $L_done;
$L_loop:
    mad.lo.s32 %r5, %r6, 3, %r5;
    add.s32 %r5, %r5, 1;
    add.s32 %r6, %r6, 1;
    setp.lt.u32 %p1, %r6, %r4;
    @%p1 bra $L_loop;
$L_done:
    add.s64 %rd5, %rd2, %rd3;
    st.global.u32 [%rd5], %r5;
    ret;
}
"""

# infinite loop: the instruction limit must stop it
SPIN = HEADER + """
.visible .entry spin()
{
    .reg .b32 %r<2>;
    mov.u32 %r1, 0;
$L_top:
    add.s32 %r1, %r1, 1;
    bra.uni $L_top;
}
"""

# bar.sync inside a branch only half the block takes
BAR_DIVERGENT = HEADER + """
.visible .entry bar_divergent()
{
    .reg .pred %p<2>;
    .reg .b32 %r<3>;
    mov.u32 %r1, %tid.x;
    setp.lt.u32 %p1, %r1, 16;
    @%p1 bra $L_end;
    bar.sync 0;
$L_end:
    ret;
}
"""


def mma_global(kind: str) -> str:
    """One warp computes D = A(16x16, row) * B(16x8, col) + C(16x8 f32), each lane loading its
    fragment straight from global memory with the addresses the PTX ISA layout prescribes:
    groupID g = lane >> 2, t = lane & 3; a0a1 (g, 2t), a2a3 (g+8, 2t), a4a5 (g, 2t+8),
    a6a7 (g+8, 2t+8); b0b1 (k=2t, n=g), b2b3 (k=2t+8); c0c1 (g, 2t), c2c3 (g+8, 2t).
    B is passed transposed (Bt[n][k]) because .col means column-major."""
    return HEADER + f"""
.visible .entry mma_{kind}(
    .param .u64 pa,
    .param .u64 pbt,
    .param .u64 pc,
    .param .u64 pd
)
{{
    .reg .b32 %r<24>;
    .reg .f32 %f<12>;
    .reg .b64 %rd<20>;

    ld.param.u64 %rd1, [pa];
    ld.param.u64 %rd2, [pbt];
    ld.param.u64 %rd3, [pc];
    ld.param.u64 %rd4, [pd];
    cvta.to.global.u64 %rd1, %rd1;
    cvta.to.global.u64 %rd2, %rd2;
    cvta.to.global.u64 %rd3, %rd3;
    cvta.to.global.u64 %rd4, %rd4;
    mov.u32 %r1, %laneid;
    shr.u32 %r2, %r1, 2;
    and.b32 %r3, %r1, 3;
    shl.b32 %r4, %r3, 1;
    // A element (g, 2t): byte offset (g*16 + 2t) * 2
    shl.b32 %r5, %r2, 4;
    add.s32 %r5, %r5, %r4;
    mul.wide.u32 %rd5, %r5, 2;
    add.s64 %rd6, %rd1, %rd5;
    ld.global.b32 %r10, [%rd6];
    ld.global.b32 %r11, [%rd6+256];
    ld.global.b32 %r12, [%rd6+16];
    ld.global.b32 %r13, [%rd6+272];
    // Bt element (n=g, k=2t): byte offset (g*16 + 2t) * 2
    add.s64 %rd7, %rd2, %rd5;
    ld.global.b32 %r14, [%rd7];
    ld.global.b32 %r15, [%rd7+16];
    // C element (g, 2t): byte offset (g*8 + 2t) * 4
    shl.b32 %r6, %r2, 3;
    add.s32 %r6, %r6, %r4;
    mul.wide.u32 %rd8, %r6, 4;
    add.s64 %rd9, %rd3, %rd8;
    ld.global.v2.f32 {{%f1, %f2}}, [%rd9];
    ld.global.v2.f32 {{%f3, %f4}}, [%rd9+256];
    mma.sync.aligned.m16n8k16.row.col.f32.{kind}.{kind}.f32 {{%f5, %f6, %f7, %f8}}, {{%r10, %r11, %r12, %r13}}, {{%r14, %r15}}, {{%f1, %f2, %f3, %f4}};
    add.s64 %rd10, %rd4, %rd8;
    st.global.v2.f32 [%rd10], {{%f5, %f6}};
    st.global.v2.f32 [%rd10+256], {{%f7, %f8}};
    ret;
}}
"""


# tf32 m16n8k8: a0 (g, t), a1 (g+8, t), a2 (g, t+4), a3 (g+8, t+4); b0 (k=t, n=g), b1 (k=t+4)
MMA_TF32 = HEADER + """
.visible .entry mma_tf32(
    .param .u64 pa,
    .param .u64 pbt,
    .param .u64 pd
)
{
    .reg .b32 %r<24>;
    .reg .f32 %f<12>;
    .reg .b64 %rd<20>;

    ld.param.u64 %rd1, [pa];
    ld.param.u64 %rd2, [pbt];
    ld.param.u64 %rd4, [pd];
    mov.u32 %r1, %laneid;
    shr.u32 %r2, %r1, 2;
    and.b32 %r3, %r1, 3;
    // A (16x8 row-major f32): (g*8 + t) * 4
    shl.b32 %r5, %r2, 3;
    add.s32 %r5, %r5, %r3;
    mul.wide.u32 %rd5, %r5, 4;
    add.s64 %rd6, %rd1, %rd5;
    ld.global.b32 %r10, [%rd6];
    ld.global.b32 %r11, [%rd6+256];
    ld.global.b32 %r12, [%rd6+16];
    ld.global.b32 %r13, [%rd6+272];
    cvt.rna.tf32.f32 %r10, %r10;
    cvt.rna.tf32.f32 %r11, %r11;
    cvt.rna.tf32.f32 %r12, %r12;
    cvt.rna.tf32.f32 %r13, %r13;
    // Bt (8x8, Bt[n][k]): (g*8 + t) * 4
    add.s64 %rd7, %rd2, %rd5;
    ld.global.b32 %r14, [%rd7];
    ld.global.b32 %r15, [%rd7+16];
    mov.f32 %f1, 0f00000000;
    mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%f5, %f6, %f7, %f8}, {%r10, %r11, %r12, %r13}, {%r14, %r15}, {%f1, %f1, %f1, %f1};
    // D (16x8 f32): (g*8 + 2t) * 4
    shl.b32 %r6, %r3, 1;
    shl.b32 %r7, %r2, 3;
    add.s32 %r7, %r7, %r6;
    mul.wide.u32 %rd8, %r7, 4;
    add.s64 %rd10, %rd4, %rd8;
    st.global.v2.f32 [%rd10], {%f5, %f6};
    st.global.v2.f32 [%rd10+256], {%f7, %f8};
    ret;
}
"""

# A (16x16 f16, row-major) and B (16x8 f16, row-major K x N) staged in shared memory, loaded
# with ldmatrix.x4 (A) and ldmatrix.x2.trans (B) — the canonical tensor-core feed — then mma.
LDMATRIX_MMA = HEADER + """
.visible .entry ldsm_mma(
    .param .u64 pa,
    .param .u64 pb,
    .param .u64 pd
)
{
    .reg .b32 %r<32>;
    .reg .f32 %f<12>;
    .reg .b64 %rd<20>;
    .shared .align 16 .b8 sa[512];
    .shared .align 16 .b8 sb[256];

    ld.param.u64 %rd1, [pa];
    ld.param.u64 %rd2, [pb];
    ld.param.u64 %rd3, [pd];
    cvta.to.global.u64 %rd1, %rd1;
    cvta.to.global.u64 %rd2, %rd2;
    cvta.to.global.u64 %rd3, %rd3;
    mov.u32 %r1, %laneid;
    // stage: lane l copies 16 bytes of A (row l/2, half l%2) and 8 bytes of B (row l/2, half l%2)
    mul.wide.u32 %rd4, %r1, 16;
    add.s64 %rd5, %rd1, %rd4;
    ld.global.v4.u32 {%r2, %r3, %r4, %r5}, [%rd5];
    mov.u32 %r6, sa;
    shl.b32 %r7, %r1, 4;
    add.s32 %r8, %r6, %r7;
    st.shared.v4.u32 [%r8], {%r2, %r3, %r4, %r5};
    mul.wide.u32 %rd6, %r1, 8;
    add.s64 %rd7, %rd2, %rd6;
    ld.global.v2.u32 {%r2, %r3}, [%rd7];
    mov.u32 %r9, sb;
    shl.b32 %r10, %r1, 3;
    add.s32 %r11, %r9, %r10;
    st.shared.v2.u32 [%r11], {%r2, %r3};
    bar.sync 0;
    // A: lane l points at row (l % 16), column block (l / 16) * 8
    and.b32 %r12, %r1, 15;
    shr.u32 %r13, %r1, 4;
    shl.b32 %r14, %r12, 5;
    shl.b32 %r15, %r13, 4;
    add.s32 %r14, %r14, %r15;
    add.s32 %r14, %r14, %r6;
    ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%r16, %r17, %r18, %r19}, [%r14];
    // B: lane l (< 16) points at row k = l of the 16x8 matrix (16 bytes per row)
    shl.b32 %r20, %r12, 4;
    add.s32 %r20, %r20, %r9;
    ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%r21, %r22}, [%r20];
    mov.f32 %f1, 0f00000000;
    mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%f5, %f6, %f7, %f8}, {%r16, %r17, %r18, %r19}, {%r21, %r22}, {%f1, %f1, %f1, %f1};
    shr.u32 %r23, %r1, 2;
    and.b32 %r24, %r1, 3;
    shl.b32 %r24, %r24, 1;
    shl.b32 %r25, %r23, 3;
    add.s32 %r25, %r25, %r24;
    mul.wide.u32 %rd8, %r25, 4;
    add.s64 %rd9, %rd3, %rd8;
    st.global.v2.f32 [%rd9], {%f5, %f6};
    st.global.v2.f32 [%rd9+256], {%f7, %f8};
    ret;
}
"""


def ldmatrix_raw(trans: bool) -> str:
    """Four 8x8 b16 matrices (512 bytes, row-major, matrix after matrix) loaded with
    ldmatrix.x4; every lane stores its four registers to out[lane*4 .. lane*4+3]."""
    t = ".trans" if trans else ""
    name = "ldsm_t" if trans else "ldsm"
    return HEADER + f"""
.visible .entry {name}(
    .param .u64 pin,
    .param .u64 pout
)
{{
    .reg .b32 %r<24>;
    .reg .b64 %rd<12>;
    .shared .align 16 .b8 tile[512];

    ld.param.u64 %rd1, [pin];
    ld.param.u64 %rd2, [pout];
    cvta.to.global.u64 %rd1, %rd1;
    cvta.to.global.u64 %rd2, %rd2;
    mov.u32 %r1, %laneid;
    mul.wide.u32 %rd3, %r1, 16;
    add.s64 %rd4, %rd1, %rd3;
    ld.global.v4.u32 {{%r2, %r3, %r4, %r5}}, [%rd4];
    mov.u32 %r6, tile;
    shl.b32 %r7, %r1, 4;
    add.s32 %r8, %r6, %r7;
    st.shared.v4.u32 [%r8], {{%r2, %r3, %r4, %r5}};
    bar.sync 0;
    // lane l supplies row (l % 8) of matrix (l / 8): byte offset 16 * l
    ldmatrix.sync.aligned.m8n8.x4{t}.shared.b16 {{%r10, %r11, %r12, %r13}}, [%r8];
    add.s64 %rd5, %rd2, %rd3;
    st.global.v4.u32 [%rd5], {{%r10, %r11, %r12, %r13}};
    ret;
}}
"""


def cp_async_pipeline(with_barrier: bool = True) -> str:
    """Double-buffered tile sum: out[tid] = sum over tiles k of in[k*128 + tid], each tile
    fetched with cp.async into buffer k%2 while the previous tile is consumed; thread reads
    the element of its neighbour (tid ^ 1) so the shared data crosses threads."""
    bar = "    bar.sync 0;\n" if with_barrier else ""
    name = "cp_pipe" if with_barrier else "cp_pipe_racy"
    return HEADER + f"""
.visible .entry {name}(
    .param .u64 pin,
    .param .u64 pout,
    .param .u32 ntiles
)
{{
    .reg .pred %p<3>;
    .reg .b32 %r<24>;
    .reg .f32 %f<4>;
    .reg .b64 %rd<12>;
    .shared .align 16 .b8 buf[1024];

    ld.param.u64 %rd1, [pin];
    ld.param.u64 %rd2, [pout];
    ld.param.u32 %r1, [ntiles];
    cvta.to.global.u64 %rd1, %rd1;
    cvta.to.global.u64 %rd2, %rd2;
    mov.u32 %r2, %tid.x;
    mov.u32 %r3, buf;
    shl.b32 %r4, %r2, 2;
    // prologue: tile 0 -> buffer 0
    mul.wide.u32 %rd3, %r2, 4;
    add.s64 %rd4, %rd1, %rd3;
    add.s32 %r5, %r3, %r4;
    cp.async.ca.shared.global [%r5], [%rd4], 4;
    cp.async.commit_group;
    mov.f32 %f1, 0f00000000;
    mov.u32 %r6, 0;
    xor.b32 %r12, %r2, 1;
    shl.b32 %r12, %r12, 2;
$L_loop:
    add.s32 %r7, %r6, 1;
    setp.lt.u32 %p1, %r7, %r1;
    @!%p1 bra $L_last;
    // issue tile k+1 into buffer (k+1)%2
    and.b32 %r8, %r7, 1;
    shl.b32 %r9, %r8, 9;
    add.s32 %r10, %r3, %r9;
    add.s32 %r10, %r10, %r4;
    shl.b32 %r11, %r7, 7;
    add.s32 %r11, %r11, %r2;
    mul.wide.u32 %rd5, %r11, 4;
    add.s64 %rd6, %rd1, %rd5;
    cp.async.ca.shared.global [%r10], [%rd6], 4;
    cp.async.commit_group;
    cp.async.wait_group 1;
    bra.uni $L_compute;
$L_last:
    cp.async.wait_group 0;
$L_compute:
{bar}    and.b32 %r13, %r6, 1;
    shl.b32 %r13, %r13, 9;
    add.s32 %r14, %r3, %r13;
    add.s32 %r14, %r14, %r12;
    ld.shared.f32 %f2, [%r14];
    add.f32 %f1, %f1, %f2;
    bar.sync 0;
    mov.u32 %r6, %r7;
    setp.lt.u32 %p2, %r6, %r1;
    @%p2 bra $L_loop;
    add.s64 %rd7, %rd2, %rd3;
    st.global.f32 [%rd7], %f1;
    ret;
}}
"""


# atomics: a histogram (atom.add.u32), tickets (returned old values), a float sum,
# max/min/exch/cas on shared and global memory
ATOMICS = HEADER + """
.visible .entry atomics(
    .param .u64 pin,
    .param .u64 phist,
    .param .u64 ptick,
    .param .u64 pscal
)
{
    .reg .pred %p<3>;
    .reg .b32 %r<24>;
    .reg .f32 %f<4>;
    .reg .b64 %rd<16>;
    .shared .align 4 .b8 smax[4];

    ld.param.u64 %rd1, [pin];
    ld.param.u64 %rd2, [phist];
    ld.param.u64 %rd3, [ptick];
    ld.param.u64 %rd4, [pscal];
    mov.u32 %r1, %tid.x;
    mov.u32 %r2, %ctaid.x;
    mov.u32 %r3, %ntid.x;
    mad.lo.s32 %r4, %r2, %r3, %r1;
    mul.wide.u32 %rd5, %r4, 4;
    add.s64 %rd6, %rd1, %rd5;
    ld.global.s32 %r5, [%rd6];
    // histogram of (x & 15)
    and.b32 %r6, %r5, 15;
    mul.wide.u32 %rd7, %r6, 4;
    add.s64 %rd8, %rd2, %rd7;
    red.global.add.u32 [%rd8], 1;
    // ticket: old value of a counter (scal[0])
    atom.global.add.u32 %r7, [%rd4], 1;
    add.s64 %rd9, %rd3, %rd5;
    st.global.u32 [%rd9], %r7;
    // float sum into scal[1]
    cvt.rn.f32.s32 %f1, %r5;
    atom.global.add.f32 %f2, [%rd4+4], %f1;
    // max and min into scal[2], scal[3]
    atom.global.max.s32 %r8, [%rd4+8], %r5;
    atom.global.min.s32 %r9, [%rd4+12], %r5;
    // per-block shared max, then thread 0 writes it to scal[4 + block]
    setp.ne.s32 %p1, %r1, 0;
    @%p1 bra $L_skip0;
    mov.u32 %r10, -2147483648;
    st.shared.u32 [smax], %r10;
$L_skip0:
    bar.sync 0;
    atom.shared.max.s32 %r11, [smax], %r5;
    bar.sync 0;
    @%p1 bra $L_skip1;
    ld.shared.u32 %r12, [smax];
    mul.wide.u32 %rd10, %r2, 4;
    add.s64 %rd11, %rd4, %rd10;
    st.global.u32 [%rd11+16], %r12;
$L_skip1:
    // cas: only the thread whose x equals scal[12] (initial value) succeeds in swapping to -1
    ld.global.u32 %r13, [%rd4+48];
    atom.global.cas.b32 %r14, [%rd4+52], %r13, %r4;
    atom.global.exch.b32 %r15, [%rd4+56], %r4;
    ret;
}
"""

# cvt and rounding-mode arithmetic over an input vector x (f32) and y (f32):
# out layout per thread (u32 words): see test_numerics.py
ROUNDING = HEADER + """
.visible .entry rounding(
    .param .u64 px,
    .param .u64 py,
    .param .u64 pz,
    .param .u64 pout
)
{
    .reg .b16 %h<8>;
    .reg .b32 %r<32>;
    .reg .f32 %f<32>;
    .reg .f64 %fd<4>;
    .reg .b64 %rd<16>;

    ld.param.u64 %rd1, [px];
    ld.param.u64 %rd2, [py];
    ld.param.u64 %rd3, [pz];
    ld.param.u64 %rd4, [pout];
    mov.u32 %r1, %tid.x;
    mov.u32 %r2, %ctaid.x;
    mov.u32 %r3, %ntid.x;
    mad.lo.s32 %r1, %r2, %r3, %r1;
    mul.wide.u32 %rd5, %r1, 4;
    add.s64 %rd6, %rd1, %rd5;
    ld.global.f32 %f1, [%rd6];
    add.s64 %rd6, %rd2, %rd5;
    ld.global.f32 %f2, [%rd6];
    add.s64 %rd6, %rd3, %rd5;
    ld.global.f32 %f3, [%rd6];
    mul.wide.u32 %rd7, %r1, 128;
    add.s64 %rd8, %rd4, %rd7;
    // 0..3: add in four modes
    add.rn.f32 %f4, %f1, %f2;
    add.rz.f32 %f5, %f1, %f2;
    add.rm.f32 %f6, %f1, %f2;
    add.rp.f32 %f7, %f1, %f2;
    st.global.v4.f32 [%rd8], {%f4, %f5, %f6, %f7};
    // 4..7: mul in four modes
    mul.rn.f32 %f4, %f1, %f2;
    mul.rz.f32 %f5, %f1, %f2;
    mul.rm.f32 %f6, %f1, %f2;
    mul.rp.f32 %f7, %f1, %f2;
    st.global.v4.f32 [%rd8+16], {%f4, %f5, %f6, %f7};
    // 8..11: fma in four modes
    fma.rn.f32 %f4, %f1, %f2, %f3;
    fma.rz.f32 %f5, %f1, %f2, %f3;
    fma.rm.f32 %f6, %f1, %f2, %f3;
    fma.rp.f32 %f7, %f1, %f2, %f3;
    st.global.v4.f32 [%rd8+32], {%f4, %f5, %f6, %f7};
    // 12..15: div in four modes
    div.rn.f32 %f4, %f1, %f2;
    div.rz.f32 %f5, %f1, %f2;
    div.rm.f32 %f6, %f1, %f2;
    div.rp.f32 %f7, %f1, %f2;
    st.global.v4.f32 [%rd8+48], {%f4, %f5, %f6, %f7};
    // 16..19: f32 -> f16 in four modes (low 16 bits of each word)
    cvt.rn.f16.f32 %h1, %f1;
    cvt.rz.f16.f32 %h2, %f1;
    cvt.rm.f16.f32 %h3, %f1;
    cvt.rp.f16.f32 %h4, %f1;
    cvt.u32.u16 %r4, %h1;
    cvt.u32.u16 %r5, %h2;
    cvt.u32.u16 %r6, %h3;
    cvt.u32.u16 %r7, %h4;
    st.global.v4.u32 [%rd8+64], {%r4, %r5, %r6, %r7};
    // 20..23: f32 -> s32 with the four integer roundings (saturating, NaN -> 0)
    cvt.rni.s32.f32 %r4, %f1;
    cvt.rzi.s32.f32 %r5, %f1;
    cvt.rmi.s32.f32 %r6, %f1;
    cvt.rpi.s32.f32 %r7, %f1;
    st.global.v4.u32 [%rd8+80], {%r4, %r5, %r6, %r7};
    // 24..27: f64 (x * y exactly) -> f32 in four modes
    cvt.f64.f32 %fd1, %f1;
    cvt.f64.f32 %fd2, %f2;
    mul.rn.f64 %fd3, %fd1, %fd2;
    cvt.rn.f32.f64 %f4, %fd3;
    cvt.rz.f32.f64 %f5, %fd3;
    cvt.rm.f32.f64 %f6, %fd3;
    cvt.rp.f32.f64 %f7, %fd3;
    st.global.v4.f32 [%rd8+96], {%f4, %f5, %f6, %f7};
    // 28: f32 -> u8 saturating; 29: bf16x2 pack of (x, y); 30: sqrt.rz; 31: f32 -> bf16 rz
    cvt.rzi.sat.u8.f32 %h5, %f1;
    cvt.u32.u16 %r8, %h5;
    cvt.rn.bf16x2.f32 %r9, %f1, %f2;
    abs.f32 %f8, %f1;
    sqrt.rz.f32 %f9, %f8;
    cvt.rz.bf16.f32 %h6, %f1;
    cvt.u32.u16 %r10, %h6;
    mov.b32 %r11, %f9;
    st.global.v4.u32 [%rd8+112], {%r8, %r9, %r11, %r10};
    ret;
}
"""

# int -> float conversions in four modes: u64 -> f32 and s32 -> f32
INT_TO_FLOAT = HEADER + """
.visible .entry int_to_float(
    .param .u64 pin,
    .param .u64 pout
)
{
    .reg .b32 %r<4>;
    .reg .f32 %f<12>;
    .reg .b64 %rd<12>;

    ld.param.u64 %rd1, [pin];
    ld.param.u64 %rd2, [pout];
    mov.u32 %r1, %tid.x;
    mul.wide.u32 %rd3, %r1, 8;
    add.s64 %rd4, %rd1, %rd3;
    ld.global.u64 %rd5, [%rd4];
    cvt.rn.f32.u64 %f1, %rd5;
    cvt.rz.f32.u64 %f2, %rd5;
    cvt.rm.f32.u64 %f3, %rd5;
    cvt.rp.f32.u64 %f4, %rd5;
    cvt.u32.u64 %r2, %rd5;
    cvt.rn.f32.s32 %f5, %r2;
    cvt.rz.f32.s32 %f6, %r2;
    cvt.rm.f32.s32 %f7, %r2;
    cvt.rp.f32.s32 %f8, %r2;
    mul.wide.u32 %rd6, %r1, 32;
    add.s64 %rd7, %rd2, %rd6;
    st.global.v4.f32 [%rd7], {%f1, %f2, %f3, %f4};
    st.global.v4.f32 [%rd7+16], {%f5, %f6, %f7, %f8};
    ret;
}
"""

# packed half arithmetic: fma.rn.f16x2 and fma.rn.bf16x2 on packed words, plus mov.b32 unpacking
HALF2 = HEADER + """
.visible .entry half2(
    .param .u64 pa,
    .param .u64 pb,
    .param .u64 pc,
    .param .u64 pout
)
{
    .reg .b16 %h<4>;
    .reg .b32 %r<12>;
    .reg .b64 %rd<12>;

    ld.param.u64 %rd1, [pa];
    ld.param.u64 %rd2, [pb];
    ld.param.u64 %rd3, [pc];
    ld.param.u64 %rd4, [pout];
    mov.u32 %r1, %tid.x;
    mul.wide.u32 %rd5, %r1, 4;
    add.s64 %rd6, %rd1, %rd5;
    ld.global.b32 %r2, [%rd6];
    add.s64 %rd6, %rd2, %rd5;
    ld.global.b32 %r3, [%rd6];
    add.s64 %rd6, %rd3, %rd5;
    ld.global.b32 %r4, [%rd6];
    fma.rn.f16x2 %r5, %r2, %r3, %r4;
    fma.rn.bf16x2 %r6, %r2, %r3, %r4;
    mov.b32 {%h1, %h2}, %r5;
    mov.b32 %r7, {%h2, %h1};
    mul.wide.u32 %rd7, %r1, 16;
    add.s64 %rd8, %rd4, %rd7;
    st.global.v4.b32 [%rd8], {%r5, %r6, %r7, %r1};
    ret;
}
"""

# vector load of 16 bytes from an address that is only 4-byte aligned (seeded bug)
MISALIGNED_V4 = HEADER + """
.visible .entry misaligned(
    .param .u64 pin,
    .param .u64 pout
)
{
    .reg .b32 %r<4>;
    .reg .f32 %f<6>;
    .reg .b64 %rd<8>;

    ld.param.u64 %rd1, [pin];
    ld.param.u64 %rd2, [pout];
    mov.u32 %r1, %tid.x;
    mul.wide.u32 %rd3, %r1, 16;
    add.s64 %rd4, %rd1, %rd3;
    ld.global.v4.f32 {%f1, %f2, %f3, %f4}, [%rd4+4];
    add.s64 %rd5, %rd2, %rd3;
    st.global.v4.f32 [%rd5], {%f1, %f2, %f3, %f4};
    ret;
}
"""

SHFL_PARTIAL = HEADER + """
.visible .entry shfl_partial(
    .param .u64 pout
)
{
    .reg .pred %p<2>;
    .reg .b32 %r<6>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [pout];
    mov.u32 %r1, %tid.x;
    setp.lt.u32 %p1, %r1, 16;
    @%p1 shfl.sync.bfly.b32 %r2, %r1, 16, 31, 65535;
    mul.wide.u32 %rd2, %r1, 4;
    add.s64 %rd3, %rd1, %rd2;
    st.global.u32 [%rd3], %r2;
    ret;
}
"""

SHARED_OOB = HEADER + """
.visible .entry shared_oob()
{
    .reg .b32 %r<4>;
    .shared .align 4 .b8 tile[128];
    mov.u32 %r1, %tid.x;
    shl.b32 %r2, %r1, 2;
    mov.u32 %r3, tile;
    add.s32 %r3, %r3, %r2;
    st.shared.u32 [%r3], %r1;
    ret;
}
"""

# parameter layout (.align'ed byte-array struct) and module-scope dynamic shared memory
PARAMS_AND_EXTERN = HEADER + """
/* a block comment
   spanning lines */
.extern .shared .align 16 .b8 dyn[];

.visible .entry k(
    .param .u32 a,
    .param .align 8 .b8 s[12],
    .param .f32 f,
    .param .u64 p
)
.maxntid 128, 1, 1
{
    .reg .b32 %r<3>;
    .shared .align 4 .b8 small[6];
    ld.param.u32 %r1, [s+4];   // byte 4 of the struct parameter
    ret;
}
"""


# integer arithmetic, bit operations, predicates and votes: out[tid][0..25] of 28 u32 words
INT_OPS = HEADER + """
.visible .entry int_ops(
    .param .u64 pa,
    .param .u64 pb,
    .param .u64 pout
)
{
    .reg .pred %p<6>;
    .reg .b16 %h<4>;
    .reg .b32 %r<40>;
    .reg .b64 %rd<12>;

    ld.param.u64 %rd1, [pa];
    ld.param.u64 %rd2, [pb];
    ld.param.u64 %rd3, [pout];
    mov.u32 %r1, %tid.x;
    mul.wide.u32 %rd4, %r1, 4;
    add.s64 %rd5, %rd1, %rd4;
    ld.global.s32 %r2, [%rd5];
    add.s64 %rd5, %rd2, %rd4;
    ld.global.s32 %r3, [%rd5];
    mul.hi.s32 %r4, %r2, %r3;
    mul.hi.u32 %r5, %r2, %r3;
    div.s32 %r6, %r2, %r3;
    rem.s32 %r7, %r2, %r3;
    div.u32 %r8, %r2, %r3;
    rem.u32 %r9, %r2, %r3;
    and.b32 %r10, %r3, 63;
    shr.s32 %r11, %r2, %r10;
    shr.u32 %r12, %r2, %r10;
    shl.b32 %r13, %r2, %r10;
    min.s32 %r14, %r2, %r3;
    max.u32 %r15, %r2, %r3;
    abs.s32 %r16, %r2;
    neg.s32 %r17, %r2;
    popc.b32 %r18, %r2;
    clz.b32 %r19, %r2;
    and.b32 %r20, %r3, 31;
    shr.u32 %r21, %r3, 5;
    and.b32 %r21, %r21, 31;
    bfe.u32 %r22, %r2, %r20, %r21;
    bfe.s32 %r23, %r2, %r20, %r21;
    brev.b32 %r24, %r2;
    cvt.sat.s8.s32 %h1, %r2;
    cvt.s32.s8 %r25, %h1;
    cvt.u16.s32 %h2, %r2;
    cvt.u32.u16 %r26, %h2;
    and.b32 %r27, %r2, 1;
    setp.eq.u32 %p1, %r27, 1;
    setp.lt.and.s32 %p2|%p3, %r2, %r3, %p1;
    selp.u32 %r28, 1, 0, %p2;
    selp.u32 %r29, 2, 0, %p3;
    or.b32 %r28, %r28, %r29;
    mul.wide.s32 %rd6, %r2, %r3;
    mov.b64 {%r30, %r31}, %rd6;
    add.sat.s32 %r32, %r2, %r3;
    setp.gt.s32 %p4, %r2, 0;
    vote.sync.ballot.b32 %r33, %p4, -1;
    vote.sync.any.pred %p5, %p2, -1;
    selp.u32 %r34, 1, 0, %p5;
    vote.sync.all.pred %p5, %p4, -1;
    selp.u32 %r35, 1, 0, %p5;
    xor.b32 %r36, %r2, %r3;
    not.b32 %r37, %r36;
    mul.wide.u32 %rd7, %r1, 112;
    add.s64 %rd8, %rd3, %rd7;
    st.global.v4.u32 [%rd8], {%r4, %r5, %r6, %r7};
    st.global.v4.u32 [%rd8+16], {%r8, %r9, %r11, %r12};
    st.global.v4.u32 [%rd8+32], {%r13, %r14, %r15, %r16};
    st.global.v4.u32 [%rd8+48], {%r17, %r18, %r19, %r22};
    st.global.v4.u32 [%rd8+64], {%r23, %r24, %r25, %r26};
    st.global.v4.u32 [%rd8+80], {%r28, %r30, %r31, %r32};
    st.global.v2.u32 [%rd8+96], {%r33, %r34};
    ret;
}
"""

# generic addressing: shared through cvta.shared, global through a raw parameter pointer, and
# the dynamic (extern) shared array placed after the static one
GENERIC = HEADER + """
.extern .shared .align 16 .b8 dynbuf[];

.visible .entry generic(
    .param .u64 pin,
    .param .u64 pout
)
{
    .reg .b32 %r<12>;
    .reg .f32 %f<4>;
    .reg .b64 %rd<16>;
    .shared .align 4 .b8 stat[128];

    ld.param.u64 %rd1, [pin];
    ld.param.u64 %rd2, [pout];
    mov.u32 %r1, %tid.x;
    mul.wide.u32 %rd3, %r1, 4;
    add.s64 %rd4, %rd1, %rd3;
    ld.f32 %f1, [%rd4];
    mov.u64 %rd5, stat;
    cvta.shared.u64 %rd6, %rd5;
    add.s64 %rd7, %rd6, %rd3;
    st.f32 [%rd7], %f1;
    mov.u64 %rd8, dynbuf;
    cvta.shared.u64 %rd9, %rd8;
    add.s64 %rd10, %rd9, %rd3;
    add.f32 %f2, %f1, %f1;
    st.f32 [%rd10], %f2;
    bar.sync 0;
    xor.b32 %r2, %r1, 31;
    mul.wide.u32 %rd11, %r2, 4;
    add.s64 %rd12, %rd6, %rd11;
    ld.f32 %f3, [%rd12];
    add.s64 %rd13, %rd9, %rd11;
    ld.f32 %f2, [%rd13];
    add.f32 %f3, %f3, %f2;
    mov.u32 %r3, %dynamic_smem_size;
    cvt.rn.f32.u32 %f2, %r3;
    add.f32 %f3, %f3, %f2;
    add.s64 %rd14, %rd2, %rd3;
    st.f32 [%rd14], %f3;
    ret;
}
"""


# int8 tensor cores: m16n8k32 s8 x s8 + s32, fragments loaded per the PTX ISA layout:
# a0 (g, 4t..4t+3), a1 (g+8, ..), a2 (g, 16+4t..), a3 (g+8, 16+4t..); b0 (k=4t.., n=g), b1 (k=16+4t..)
MMA_S8 = HEADER + """
.visible .entry mma_s8(
    .param .u64 pa,
    .param .u64 pbt,
    .param .u64 pc,
    .param .u64 pd
)
{
    .reg .b32 %r<32>;
    .reg .b64 %rd<16>;

    ld.param.u64 %rd1, [pa];
    ld.param.u64 %rd2, [pbt];
    ld.param.u64 %rd3, [pc];
    ld.param.u64 %rd4, [pd];
    mov.u32 %r1, %laneid;
    shr.u32 %r2, %r1, 2;
    and.b32 %r3, %r1, 3;
    shl.b32 %r4, %r2, 5;
    shl.b32 %r5, %r3, 2;
    add.s32 %r4, %r4, %r5;
    cvt.u64.u32 %rd5, %r4;
    add.s64 %rd6, %rd1, %rd5;
    ld.global.b32 %r10, [%rd6];
    ld.global.b32 %r11, [%rd6+256];
    ld.global.b32 %r12, [%rd6+16];
    ld.global.b32 %r13, [%rd6+272];
    add.s64 %rd7, %rd2, %rd5;
    ld.global.b32 %r14, [%rd7];
    ld.global.b32 %r15, [%rd7+16];
    shl.b32 %r6, %r2, 3;
    shl.b32 %r7, %r3, 1;
    add.s32 %r6, %r6, %r7;
    mul.wide.u32 %rd8, %r6, 4;
    add.s64 %rd9, %rd3, %rd8;
    ld.global.v2.s32 {%r16, %r17}, [%rd9];
    ld.global.v2.s32 {%r18, %r19}, [%rd9+256];
    mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%r20, %r21, %r22, %r23}, {%r10, %r11, %r12, %r13}, {%r14, %r15}, {%r16, %r17, %r18, %r19};
    add.s64 %rd10, %rd4, %rd8;
    st.global.v2.s32 [%rd10], {%r20, %r21};
    st.global.v2.s32 [%rd10+256], {%r22, %r23};
    ret;
}
"""

# prmt byte selection, copysign, testp, and debug directives (.file/.loc) the parser skips
MISC = HEADER + """
.file 1 "misc.cu"

.visible .entry misc(
    .param .u64 pa,
    .param .u64 pout
)
{
    .reg .pred %p<3>;
    .reg .b32 %r<12>;
    .reg .f32 %f<4>;
    .reg .b64 %rd<8>;

    .loc 1 10 3
    ld.param.u64 %rd1, [pa];
    ld.param.u64 %rd2, [pout];
    mov.u32 %r1, %tid.x;
    mul.wide.u32 %rd3, %r1, 4;
    add.s64 %rd4, %rd1, %rd3;
    ld.global.b32 %r2, [%rd4];
    prmt.b32 %r3, %r2, %r1, 0x7531;
    prmt.b32 %r4, %r2, 0, 0x8880;
    mov.b32 %f1, %r2;
    mov.f32 %f2, 0fBF800000;
    copysign.f32 %f3, %f1, %f2;
    testp.finite.f32 %p1, %f1;
    testp.subnormal.f32 %p2, %f1;
    selp.u32 %r5, 1, 0, %p1;
    selp.u32 %r6, 2, 0, %p2;
    or.b32 %r5, %r5, %r6;
    mov.b32 %r7, %f3;
    mul.wide.u32 %rd5, %r1, 16;
    add.s64 %rd6, %rd2, %rd5;
    st.global.v4.b32 [%rd6], {%r3, %r4, %r7, %r5};
    ret;
}
"""

# an assertion that fails for thread 5
TRAP = HEADER + """
.visible .entry trap_kernel()
{
    .reg .pred %p<2>;
    .reg .b32 %r<2>;
    mov.u32 %r1, %tid.x;
    setp.eq.u32 %p1, %r1, 5;
    @%p1 trap;
    ret;
}
"""


# lane masks and shifts by immediates (arithmetic shift clamps at the width)
LANEMASK = HEADER + """
.visible .entry lanemask(
    .param .u64 pout
)
{
    .reg .b32 %r<12>;
    .reg .b64 %rd<6>;

    ld.param.u64 %rd1, [pout];
    mov.u32 %r1, %tid.x;
    mov.u32 %r2, %lanemask_lt;
    mov.u32 %r3, %lanemask_ge;
    sub.s32 %r4, 0, %r1;
    shr.s32 %r5, %r4, 3;
    shr.s32 %r6, %r4, 40;
    shr.u32 %r7, %r4, 40;
    shl.b32 %r8, %r1, 29;
    mul.wide.u32 %rd2, %r1, 32;
    add.s64 %rd3, %rd1, %rd2;
    st.global.v4.u32 [%rd3], {%r2, %r3, %r5, %r6};
    st.global.v2.u32 [%rd3+16], {%r7, %r8};
    ret;
}
"""


# m16n8k8 with f16 accumulators: a0a1 (g, 2t), a2a3 (g+8, 2t); b0b1 (k=2t, n=g);
# c0c1 / d0d1 packed in one f16x2 register at (g, 2t), c2c3 at (g+8, 2t)
MMA_K8_F16ACC = HEADER + """
.visible .entry mma_k8_f16acc(
    .param .u64 pa,
    .param .u64 pbt,
    .param .u64 pc,
    .param .u64 pd
)
{
    .reg .b32 %r<24>;
    .reg .b64 %rd<16>;

    ld.param.u64 %rd1, [pa];
    ld.param.u64 %rd2, [pbt];
    ld.param.u64 %rd3, [pc];
    ld.param.u64 %rd4, [pd];
    mov.u32 %r1, %laneid;
    shr.u32 %r2, %r1, 2;
    and.b32 %r3, %r1, 3;
    shl.b32 %r4, %r2, 3;
    shl.b32 %r5, %r3, 1;
    add.s32 %r4, %r4, %r5;
    mul.wide.u32 %rd5, %r4, 2;
    add.s64 %rd6, %rd1, %rd5;
    ld.global.b32 %r10, [%rd6];
    ld.global.b32 %r11, [%rd6+128];
    add.s64 %rd7, %rd2, %rd5;
    ld.global.b32 %r12, [%rd7];
    add.s64 %rd8, %rd3, %rd5;
    ld.global.b32 %r13, [%rd8];
    ld.global.b32 %r14, [%rd8+128];
    mma.sync.aligned.m16n8k8.row.col.f16.f16.f16.f16 {%r15, %r16}, {%r10, %r11}, {%r12}, {%r13, %r14};
    add.s64 %rd9, %rd4, %rd5;
    st.global.b32 [%rd9], %r15;
    st.global.b32 [%rd9+128], %r16;
    ret;
}
"""


# nested loops with a per-thread break and continue: out[t] = index of the first row r < rows
# whose sum of the positive entries among its first len[t] columns exceeds limit, else -1
SEARCH = HEADER + """
.visible .entry search(
    .param .u64 pdata,
    .param .u64 plen,
    .param .u64 pout,
    .param .u32 rows,
    .param .s32 limit
)
{
    .reg .pred %p<6>;
    .reg .b32 %r<20>;
    .reg .b64 %rd<12>;

    ld.param.u64 %rd1, [pdata];
    ld.param.u64 %rd2, [plen];
    ld.param.u64 %rd3, [pout];
    ld.param.u32 %r1, [rows];
    ld.param.s32 %r2, [limit];
    mov.u32 %r3, %tid.x;
    mul.wide.u32 %rd4, %r3, 4;
    add.s64 %rd5, %rd2, %rd4;
    ld.global.u32 %r4, [%rd5];
    mov.s32 %r5, -1;
    mov.u32 %r6, 0;
$L_rows:
    setp.ge.u32 %p1, %r6, %r1;
    @%p1 bra $L_done;
    mov.s32 %r7, 0;
    mov.u32 %r8, 0;
$L_cols:
    setp.ge.u32 %p2, %r8, %r4;
    @%p2 bra $L_row_end;
    // data[r * 32 + c]
    shl.b32 %r9, %r6, 5;
    add.s32 %r9, %r9, %r8;
    mul.wide.u32 %rd6, %r9, 4;
    add.s64 %rd7, %rd1, %rd6;
    ld.global.s32 %r10, [%rd7];
    add.s32 %r8, %r8, 1;
    setp.le.s32 %p3, %r10, 0;
    @%p3 bra $L_cols;
    add.s32 %r7, %r7, %r10;
    bra.uni $L_cols;
$L_row_end:
    setp.gt.s32 %p4, %r7, %r2;
    @%p4 bra $L_found;
    add.s32 %r6, %r6, 1;
    bra.uni $L_rows;
$L_found:
    mov.s32 %r5, %r6;
$L_done:
    add.s64 %rd8, %rd3, %rd4;
    st.global.s32 [%rd8], %r5;
    ret;
}
"""



def warp_exchange(sync: bool, partner_xor: int = 1) -> str:
    """Lane t writes smem[t], then reads smem[t ^ partner_xor]; bar.warp.sync in between when
    ``sync`` (orders accesses within a warp only)."""
    name = f"wx_{int(sync)}_{partner_xor}"
    bar = "    bar.warp.sync -1;\n" if sync else ""
    return HEADER + f"""
.visible .entry {name}(
    .param .u64 pout
)
{{
    .reg .b32 %r<8>;
    .reg .b64 %rd<4>;
    .shared .align 4 .b8 xs[256];

    ld.param.u64 %rd1, [pout];
    mov.u32 %r1, %tid.x;
    shl.b32 %r2, %r1, 2;
    mov.u32 %r3, xs;
    add.s32 %r4, %r3, %r2;
    st.shared.u32 [%r4], %r1;
{bar}    xor.b32 %r5, %r1, {partner_xor};
    shl.b32 %r5, %r5, 2;
    add.s32 %r5, %r3, %r5;
    ld.shared.u32 %r6, [%r5];
    mul.wide.u32 %rd2, %r1, 4;
    add.s64 %rd3, %rd1, %rd2;
    st.global.u32 [%rd3], %r6;
    ret;
}}
"""


SETP_OPS = ("eq", "ne", "lt", "le", "gt", "ge", "equ", "neu", "ltu", "leu", "gtu", "geu", "num",
            "nan")


def _setp_kernel() -> str:
    """Bit k of out[t] = setp.<SETP_OPS[k]>.f32 x[t], y[t]; bit 14 = (x < y) or p where
    p = (t odd); bit 15 = cnot of that predicate's selp; plus 16/64-bit shifts and packing."""
    body = []
    for k, op in enumerate(SETP_OPS):
        body.append(f"    setp.{op}.f32 %p1, %f1, %f2;")
        body.append(f"    selp.u32 %r5, {1 << k}, 0, %p1;")
        body.append("    or.b32 %r4, %r4, %r5;")
    bits = "\n".join(body)
    return HEADER + f"""
.visible .entry setp_all(
    .param .u64 px,
    .param .u64 py,
    .param .u64 pout
)
{{
    .reg .pred %p<4>;
    .reg .b16 %rs<6>;
    .reg .b32 %r<16>;
    .reg .f32 %f<4>;
    .reg .b64 %rd<12>;

    ld.param.u64 %rd1, [px];
    ld.param.u64 %rd2, [py];
    ld.param.u64 %rd3, [pout];
    mov.u32 %r1, %tid.x;
    mul.wide.u32 %rd4, %r1, 4;
    add.s64 %rd5, %rd1, %rd4;
    ld.global.f32 %f1, [%rd5];
    add.s64 %rd5, %rd2, %rd4;
    ld.global.f32 %f2, [%rd5];
    mov.u32 %r4, 0;
{bits}
    and.b32 %r6, %r1, 1;
    setp.eq.u32 %p2, %r6, 1;
    setp.lt.or.f32 %p3, %f1, %f2, %p2;
    selp.u32 %r5, 16384, 0, %p3;
    or.b32 %r4, %r4, %r5;
    selp.u32 %r7, 1, 0, %p3;
    cnot.b32 %r7, %r7;
    shl.b32 %r7, %r7, 15;
    or.b32 %r4, %r4, %r7;
    // 16-bit and 64-bit shifts, f16x2 packing of (x, y)
    cvt.u16.u32 %rs1, %r1;
    shl.b16 %rs2, %rs1, 12;
    shr.s16 %rs3, %rs2, 4;
    cvt.u32.u16 %r8, %rs3;
    cvt.u64.u32 %rd6, %r1;
    shl.b64 %rd7, %rd6, 40;
    shr.u64 %rd8, %rd7, 8;
    cvt.u32.u64 %r9, %rd8;
    shr.u64 %rd9, %rd7, 32;
    cvt.u32.u64 %r10, %rd9;
    cvt.rn.f16x2.f32 %r11, %f1, %f2;
    mul.wide.u32 %rd10, %r1, 16;
    add.s64 %rd11, %rd3, %rd10;
    st.global.v4.u32 [%rd11], {{%r4, %r8, %r10, %r11}};
    ret;
}}
"""


# cp.async.cg (16 bytes) with a per-thread src-size (zero fill), then cp.async.wait_all,
# barrier.sync, and an ldmatrix.x1 over the first 128 bytes
CP_ZFILL = HEADER + """
.visible .entry cp_zfill(
    .param .u64 pin,
    .param .u64 pout,
    .param .u64 pmat
)
{
    .reg .b32 %r<16>;
    .reg .b64 %rd<12>;
    .shared .align 16 .b8 stage[512];

    ld.param.u64 %rd1, [pin];
    ld.param.u64 %rd2, [pout];
    ld.param.u64 %rd3, [pmat];
    mov.u32 %r1, %tid.x;
    rem.u32 %r2, %r1, 17;
    mul.wide.u32 %rd4, %r1, 16;
    add.s64 %rd5, %rd1, %rd4;
    mov.u32 %r3, stage;
    shl.b32 %r4, %r1, 4;
    add.s32 %r5, %r3, %r4;
    cp.async.cg.shared.global.L2::128B [%r5], [%rd5], 16, %r2;
    cp.async.wait_all;
    barrier.sync 0;
    ld.shared.v4.u32 {%r6, %r7, %r8, %r9}, [%r5];
    add.s64 %rd6, %rd2, %rd4;
    st.global.v4.u32 [%rd6], {%r6, %r7, %r8, %r9};
    ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%r10}, [%r5];
    mul.wide.u32 %rd7, %r1, 4;
    add.s64 %rd8, %rd3, %rd7;
    st.global.u32 [%rd8], %r10;
    ret;
}
"""

# 64-bit and shared atomics, inc/dec wrap-around
ATOMICS2 = HEADER + """
.visible .entry atomics2(
    .param .u64 pin,
    .param .u64 pout
)
{
    .reg .pred %p<2>;
    .reg .b32 %r<12>;
    .reg .b64 %rd<12>;
    .shared .align 8 .b8 acc[8];

    ld.param.u64 %rd1, [pin];
    ld.param.u64 %rd2, [pout];
    mov.u32 %r1, %tid.x;
    setp.ne.u32 %p1, %r1, 0;
    @%p1 bra $L_init_done;
    mov.u32 %r2, 0;
    st.shared.u32 [acc], %r2;
$L_init_done:
    bar.sync 0;
    mul.wide.u32 %rd3, %r1, 8;
    add.s64 %rd4, %rd1, %rd3;
    ld.global.u64 %rd5, [%rd4];
    atom.global.add.u64 %rd6, [%rd2], %rd5;
    cvt.u32.u64 %r3, %rd5;
    sub.s32 %r4, 0, %r3;
    atom.shared.add.s32 %r5, [acc], %r4;
    atom.global.inc.u32 %r6, [%rd2+8], 4;
    atom.global.dec.u32 %r7, [%rd2+12], 4;
    bar.sync 0;
    @%p1 bra $L_end;
    ld.shared.s32 %r8, [acc];
    st.global.s32 [%rd2+16], %r8;
$L_end:
    ret;
}
"""


# per-thread cp.async groups: every thread copies word A (group 0); odd threads also copy word B
# and commit a second group; wait_group 1 then completes group 0 only for the odd threads.
CP_GROUPS = HEADER + """
.visible .entry cp_groups(
    .param .u64 pin,
    .param .u64 pout
)
{
    .reg .pred %p<2>;
    .reg .b32 %r<12>;
    .reg .b64 %rd<8>;
    .shared .align 4 .b8 wa[128];
    .shared .align 4 .b8 wb[128];

    ld.param.u64 %rd1, [pin];
    ld.param.u64 %rd2, [pout];
    mov.u32 %r1, %tid.x;
    shl.b32 %r2, %r1, 2;
    mul.wide.u32 %rd3, %r1, 4;
    add.s64 %rd4, %rd1, %rd3;
    mov.u32 %r3, wa;
    add.s32 %r4, %r3, %r2;
    cp.async.ca.shared.global [%r4], [%rd4], 4;
    cp.async.commit_group;
    and.b32 %r5, %r1, 1;
    setp.eq.u32 %p1, %r5, 1;
    @!%p1 bra $L_even;
    mov.u32 %r6, wb;
    add.s32 %r7, %r6, %r2;
    cp.async.ca.shared.global [%r7], [%rd4+128], 4;
    cp.async.commit_group;
$L_even:
    cp.async.wait_group 1;
    ld.shared.u32 %r8, [%r4];
    cp.async.wait_all;
    ld.shared.u32 %r9, [%r4];
    mul.wide.u32 %rd5, %r1, 8;
    add.s64 %rd6, %rd2, %rd5;
    st.global.v2.u32 [%rd6], {%r8, %r9};
    ret;
}
"""


# f64 -> s64/u64 with truncation at the saturation boundaries
F2I64 = HEADER + """
.visible .entry f2i64(
    .param .u64 pin,
    .param .u64 pout
)
{
    .reg .b32 %r<3>;
    .reg .f64 %fd<3>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [pin];
    ld.param.u64 %rd2, [pout];
    mov.u32 %r1, %tid.x;
    mul.wide.u32 %rd3, %r1, 8;
    add.s64 %rd4, %rd1, %rd3;
    ld.global.f64 %fd1, [%rd4];
    cvt.rzi.s64.f64 %rd5, %fd1;
    cvt.rzi.u64.f64 %rd6, %fd1;
    mul.wide.u32 %rd3, %r1, 16;
    add.s64 %rd7, %rd2, %rd3;
    st.global.v2.u64 [%rd7], {%rd5, %rd6};
    ret;
}
"""


# 64-bit integer arithmetic: mul.hi, div/rem (signed truncating), min/max, mad.lo
INT64_OPS = HEADER + """
.visible .entry int64_ops(
    .param .u64 pa,
    .param .u64 pb,
    .param .u64 pout
)
{
    .reg .b32 %r<3>;
    .reg .b64 %rd<24>;
    ld.param.u64 %rd1, [pa];
    ld.param.u64 %rd2, [pb];
    ld.param.u64 %rd3, [pout];
    mov.u32 %r1, %tid.x;
    mul.wide.u32 %rd4, %r1, 8;
    add.s64 %rd5, %rd1, %rd4;
    ld.global.s64 %rd6, [%rd5];
    add.s64 %rd5, %rd2, %rd4;
    ld.global.s64 %rd7, [%rd5];
    mul.hi.s64 %rd8, %rd6, %rd7;
    mul.hi.u64 %rd9, %rd6, %rd7;
    div.s64 %rd10, %rd6, %rd7;
    rem.s64 %rd11, %rd6, %rd7;
    div.u64 %rd12, %rd6, %rd7;
    rem.u64 %rd13, %rd6, %rd7;
    min.s64 %rd14, %rd6, %rd7;
    max.u64 %rd15, %rd6, %rd7;
    mad.lo.s64 %rd16, %rd6, %rd7, %rd6;
    mul.wide.u32 %rd17, %r1, 80;
    add.s64 %rd18, %rd3, %rd17;
    st.global.v2.u64 [%rd18], {%rd8, %rd9};
    st.global.v2.u64 [%rd18+16], {%rd10, %rd11};
    st.global.v2.u64 [%rd18+32], {%rd12, %rd13};
    st.global.v2.u64 [%rd18+48], {%rd14, %rd15};
    st.global.u64 [%rd18+64], %rd16;
    ret;
}
"""


# module-scope .global/.const variables with initializers, addressed by name and through a
# register; a .global counter updated atomically across launches
GLOBALS = HEADER + """
.global .align 4 .f32 tbl[4] = {0f3F800000, 2.5, 0f40400000, -1.0};
.const .align 4 .u32 ctab[3] = {7, 0x10, -1};
.global .align 8 .u64 counter;

.visible .entry globals(
    .param .u64 pout
)
{
    .reg .b32 %r<10>;
    .reg .f32 %f<4>;
    .reg .b64 %rd<12>;

    ld.param.u64 %rd1, [pout];
    mov.u32 %r1, %tid.x;
    and.b32 %r2, %r1, 3;
    mul.wide.u32 %rd2, %r2, 4;
    mov.u64 %rd3, tbl;
    add.s64 %rd4, %rd3, %rd2;
    ld.global.f32 %f1, [%rd4];
    rem.u32 %r3, %r1, 3;
    mul.wide.u32 %rd5, %r3, 4;
    mov.u64 %rd6, ctab;
    add.s64 %rd7, %rd6, %rd5;
    ld.const.u32 %r4, [%rd7];
    ld.const.u32 %r5, [ctab+4];
    atom.global.add.u64 %rd8, [counter], 1;
    mul.wide.u32 %rd9, %r1, 16;
    add.s64 %rd10, %rd1, %rd9;
    mov.b32 %r6, %f1;
    cvt.u32.u64 %r7, %rd8;
    st.global.v4.u32 [%rd10], {%r6, %r4, %r5, %r7};
    ret;
}
"""


# nvcc-style per-thread local depot: arr[i] = tid * i + 1 stored through .local and through a
# generic (cvta.local) pointer, then out[tid] = arr[tid % 8] + arr[7 - tid % 8]
LOCAL_DEPOT = HEADER + """
.visible .entry local_depot(
    .param .u64 pout,
    .param .u32 nstore
)
{
    .local .align 4 .b8 __local_depot0[32];
    .reg .pred %p<2>;
    .reg .b32 %r<12>;
    .reg .b64 %SP;
    .reg .b64 %SPL;
    .reg .b64 %rd<10>;

    mov.u64 %SPL, __local_depot0;
    cvta.local.u64 %SP, %SPL;
    ld.param.u64 %rd1, [pout];
    ld.param.u32 %r9, [nstore];
    mov.u32 %r1, %tid.x;
    mov.u32 %r2, 0;
$L_fill:
    mad.lo.s32 %r3, %r1, %r2, 1;
    mul.wide.u32 %rd2, %r2, 4;
    and.b32 %r4, %r2, 1;
    setp.eq.u32 %p1, %r4, 0;
    @%p1 bra $L_generic;
    add.s64 %rd3, %SPL, %rd2;
    st.local.u32 [%rd3], %r3;
    bra.uni $L_next;
$L_generic:
    add.s64 %rd3, %SP, %rd2;
    st.u32 [%rd3], %r3;
$L_next:
    add.s32 %r2, %r2, 1;
    setp.lt.u32 %p1, %r2, %r9;
    @%p1 bra $L_fill;
    and.b32 %r5, %r1, 7;
    mul.wide.u32 %rd4, %r5, 4;
    add.s64 %rd5, %SPL, %rd4;
    ld.local.u32 %r6, [%rd5];
    sub.s32 %r7, 7, %r5;
    mul.wide.u32 %rd6, %r7, 4;
    add.s64 %rd7, %SP, %rd6;
    ld.u32 %r8, [%rd7];
    add.s32 %r6, %r6, %r8;
    mul.wide.u32 %rd8, %r1, 4;
    add.s64 %rd9, %rd1, %rd8;
    st.global.u32 [%rd9], %r6;
    ret;
}
"""


# FP8 (sm_89+, PTX 8.4): pack (x, y) into e4m3x2 and e5m2x2 with .satfinite, widen back to
# f16x2, and an m16n8k32 e4m3 x e5m2 mma whose fragments follow the 8-bit layout of MMA_S8.
# (Assembled with -arch=sm_90: sm_80 has no FP8.)
FP8 = """.version 8.4
.target sm_90
.address_size 64

.visible .entry fp8_cvt(
    .param .u64 px,
    .param .u64 py,
    .param .u64 pout
)
{
    .reg .b16 %h<4>;
    .reg .b32 %r<8>;
    .reg .f32 %f<4>;
    .reg .b64 %rd<10>;

    ld.param.u64 %rd1, [px];
    ld.param.u64 %rd2, [py];
    ld.param.u64 %rd3, [pout];
    mov.u32 %r1, %tid.x;
    mul.wide.u32 %rd4, %r1, 4;
    add.s64 %rd5, %rd1, %rd4;
    ld.global.f32 %f1, [%rd5];
    add.s64 %rd5, %rd2, %rd4;
    ld.global.f32 %f2, [%rd5];
    cvt.rn.satfinite.e4m3x2.f32 %h1, %f1, %f2;
    cvt.rn.satfinite.e5m2x2.f32 %h2, %f1, %f2;
    cvt.rn.f16x2.e4m3x2 %r2, %h1;
    cvt.rn.f16x2.e5m2x2 %r3, %h2;
    cvt.u32.u16 %r4, %h1;
    cvt.u32.u16 %r5, %h2;
    mul.wide.u32 %rd6, %r1, 16;
    add.s64 %rd7, %rd3, %rd6;
    st.global.v4.u32 [%rd7], {%r4, %r5, %r2, %r3};
    ret;
}

.visible .entry mma_fp8(
    .param .u64 pa,
    .param .u64 pbt,
    .param .u64 pd
)
{
    .reg .b32 %r<32>;
    .reg .f32 %f<12>;
    .reg .b64 %rd<16>;

    ld.param.u64 %rd1, [pa];
    ld.param.u64 %rd2, [pbt];
    ld.param.u64 %rd4, [pd];
    mov.u32 %r1, %laneid;
    shr.u32 %r2, %r1, 2;
    and.b32 %r3, %r1, 3;
    shl.b32 %r4, %r2, 5;
    shl.b32 %r5, %r3, 2;
    add.s32 %r4, %r4, %r5;
    cvt.u64.u32 %rd5, %r4;
    add.s64 %rd6, %rd1, %rd5;
    ld.global.b32 %r10, [%rd6];
    ld.global.b32 %r11, [%rd6+256];
    ld.global.b32 %r12, [%rd6+16];
    ld.global.b32 %r13, [%rd6+272];
    add.s64 %rd7, %rd2, %rd5;
    ld.global.b32 %r14, [%rd7];
    ld.global.b32 %r15, [%rd7+16];
    mov.f32 %f1, 0f3F800000;
    mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e5m2.f32 {%f5, %f6, %f7, %f8}, {%r10, %r11, %r12, %r13}, {%r14, %r15}, {%f1, %f1, %f1, %f1};
    shl.b32 %r6, %r2, 3;
    shl.b32 %r7, %r3, 1;
    add.s32 %r6, %r6, %r7;
    mul.wide.u32 %rd8, %r6, 4;
    add.s64 %rd10, %rd4, %rd8;
    st.global.v2.f32 [%rd10], {%f5, %f6};
    st.global.v2.f32 [%rd10+256], {%f7, %f8};
    ret;
}
"""


# seeded bug: the output index forgets the block offset, so blocks overwrite each other
COPY_NO_BLOCK_OFFSET = VADD.replace(".entry vadd(", ".entry copy_bad(").replace(
    "    add.s64 %rd9, %rd6, %rd7;\n", "    mul.wide.u32 %rd9, %r4, 4;\n    add.s64 %rd9, %rd6, %rd9;\n")


def bytes_after_vector(barrier: bool) -> str:
    """Every thread of a 64-thread block stores 16 bytes with st.shared.v4; thread 1 then
    stores one byte into thread 0's 16 (byte 5) and thread 0 reads its whole 16 back
    (after a bar.sync, or racing without one)."""
    sync = "    bar.sync 0;\n" if barrier else ""
    return HEADER + f"""
.visible .entry bytes_after_vector(
    .param .u64 pout
)
{{
    .reg .pred %p<3>;
    .reg .b32 %r<12>;
    .reg .b64 %rd<4>;
    .shared .align 16 .b8 sbuf[1024];

    ld.param.u64 %rd1, [pout];
    cvta.to.global.u64 %rd1, %rd1;
    mov.u32 %r1, %tid.x;
    mov.u32 %r2, sbuf;
    shl.b32 %r3, %r1, 4;
    add.s32 %r4, %r2, %r3;
    st.shared.v4.b32 [%r4], {{%r1, %r1, %r1, %r1}};
    bar.sync 0;
    setp.ne.u32 %p1, %r1, 1;
    mov.u32 %r5, 255;
    @!%p1 st.shared.u8 [sbuf+5], %r5;
{sync}    setp.ne.u32 %p2, %r1, 0;
    @%p2 bra $L_end;
    ld.shared.v4.b32 {{%r6, %r7, %r8, %r9}}, [sbuf];
    st.global.v4.b32 [%rd1], {{%r6, %r7, %r8, %r9}};
$L_end:
    ret;
}}
"""


ALL = {
    "vadd": VADD,
    "vadd_noguard": VADD_NO_GUARD,
    "block_sum": block_reduce(True),
    "block_sum_racy": block_reduce(False),
    "bytes_after_vector": bytes_after_vector(True),
    "bytes_after_vector_racy": bytes_after_vector(False),
    "warp_sum": WARP_SUM,
    "shfl_modes": SHFL_MODES,
    "diverge": DIVERGE,
    "loop_count": LOOP,
    "spin": SPIN,
    "bar_divergent": BAR_DIVERGENT,
    "mma_f16": mma_global("f16"),
    "mma_bf16": mma_global("bf16"),
    "mma_tf32": MMA_TF32,
    "ldsm_mma": LDMATRIX_MMA,
    "ldsm": ldmatrix_raw(False),
    "ldsm_t": ldmatrix_raw(True),
    "cp_pipe": cp_async_pipeline(True),
    "cp_pipe_racy": cp_async_pipeline(False),
    "atomics": ATOMICS,
    "rounding": ROUNDING,
    "int_to_float": INT_TO_FLOAT,
    "half2": HALF2,
    "misaligned": MISALIGNED_V4,
    "shfl_partial": SHFL_PARTIAL,
    "shared_oob": SHARED_OOB,
    "params_and_extern": PARAMS_AND_EXTERN,
    "int_ops": INT_OPS,
    "generic": GENERIC,
    "mma_s8": MMA_S8,
    "misc": MISC,
    "trap": TRAP,
    "lanemask": LANEMASK,
    "mma_k8_f16acc": MMA_K8_F16ACC,
    "search": SEARCH,
    "wx_1_1": warp_exchange(True, 1),
    "wx_0_1": warp_exchange(False, 1),
    "wx_1_32": warp_exchange(True, 32),
    "setp_all": _setp_kernel(),
    "cp_zfill": CP_ZFILL,
    "atomics2": ATOMICS2,
    "cp_groups": CP_GROUPS,
    "f2i64": F2I64,
    "int64_ops": INT64_OPS,
    "globals": GLOBALS,
    "local_depot": LOCAL_DEPOT,
    "fp8": FP8,
    "copy_bad": COPY_NO_BLOCK_OFFSET,
}
