"""rvvsim: a simulator of the RV64IMFD + RVV 1.0 GNU-as assembly portc's rvv backend emits.

``parse_program(text, source)`` parses the ``.s`` text once (lark grammar ``rvv.lark``);
``RvvMachine(program, memory, vlen)`` compiles every instruction to a closure, every basic
block (on first execution) to one generated function over them (``blocks.py``), and
``machine.call(name, int_args, fp_args)`` runs one LP64D function, returning ``RunStats``
(dynamic instruction count, total and per mnemonic). A loop that is one block of batchable
instructions runs its iterations as one numpy operation per instruction (``batch.py``; exact,
or it declines and the loop is stepped: ``batch_loops=False`` always steps). ``Memory`` holds named, bounds-checked
regions and the stack. Results are meant to equal qemu-riscv64 (``vext_spec=v1.0,
rvv_ta_all_1s=true, rvv_ma_all_1s=true``) bit for bit.

Supported subset:

- directives: .text .globl/.global .type .size .p2align .align .option .attribute .section
  (only .globl/.type matter: they make a label callable); labels incl. ``.L`` and numeric
  ``1:`` with ``1f``/``1b`` references; ``#`` comments. Immediates are range-checked like GNU as.
- RV64I/M: add addi sub mul mulh mulhu mulhsu div divu rem remu (and *w forms) and andi or ori
  xor xori sll slli srl srli sra srai slt sltu slti sltiu lui addw addiw subw mulw sllw slliw
  srlw srliw sraw sraiw sext.w, ld lw lwu lh lhu lb lbu sd sw sh sb, beq bne blt bge bltu bgeu,
  pseudos li mv neg not nop seqz snez sltz sgtz beqz bnez blez bgez bltz bgtz bgt ble bgtu
  bleu j jal jalr jr ret call tail; csrr/csrw/csrwi/csrrw of vl vtype vlenb frm fcsr fflags,
  fsrm fsrmi frrm.
- F/D: flw fsw fld fsd, fadd fsub fmul fdiv fsqrt fmin fmax fmadd fmsub fnmadd fnmsub fsgnj
  fsgnjn fsgnjx fmv fneg fabs (.s/.d), fcvt between w/wu/l/lu and s/d, fcvt.s.d fcvt.d.s,
  fmv.x.w fmv.w.x fmv.x.d fmv.d.x, feq flt fle fclass. Every static or dynamic (frm) rounding
  mode is honoured. Vector fp arithmetic, sqrt, reductions and conversions honour frm too
  (directed modes through a slow exact per-element path).
- RVV 1.0 (SEW 8..64, LMUL mf8..m8, VLEN 128..1024, ELEN 64): vsetvli vsetivli vsetvl;
  vle/vse/vlse/vsse/vluxei/vloxei/vsuxei/vsoxei (8..64), vl<n>re<eew>.v vs<n>r.v vlm.v vsm.v;
  integer vadd vsub vrsub vand vor vxor vsll vsrl vsra vmin(u) vmax(u) vmul vmulh(u/su)
  vdiv(u) vrem(u) vmacc vnmsac vmadd vnmsub; vwadd(u) vwsub(u) (.vv/.vx/.wv/.wx) vwmul(u/su)
  vwmacc(u/su/us); vnsrl vnsra; vzext/vsext.vf2/4/8; vmerge vmv.v.* vmv.x.s vmv.s.x vfmv.f.s
  vfmv.s.f vfmv.v.f vmv<n>r.v; compares vmseq..vmsgt(u) (+ GNU-as vmslt/vmsge immediates and
  swapped .vv forms) vmfeq..vmfge; mask logic vm*.mm, vmmv/vmnot/vmclr/vmset, vcpop.m
  vfirst.m vmsbf/vmsif/vmsof.m vid.v viota.m; fp vfadd vfsub vfrsub vfmul vfdiv vfrdiv vfmin
  vfmax vfsgnj(n/x) vf(n)macc vf(n)msac vf(n)madd vf(n)msub vfw(n)macc vfw(n)msac vfwadd
  vfwsub vfwmul vfsqrt vfclass vfneg vfabs vfmerge and all vfcvt/vfwcvt/vfncvt forms (no
  f16); reductions vred* vwredsum(u) vfredosum vfredusum (both in element order, as qemu)
  vfredmax vfredmin vfwredosum vfwredusum; vslideup/down, vslide1up/down, vfslide1up/down,
  vrgather (.vv/.vx/.vi, ei16), vcompress.vm. Register-group alignment and the RVV 1.0
  source/destination overlap rules are enforced (qemu traps on the same encodings).
- Tail/mask-agnostic elements are written as all ones and marked undefined; storing, moving to
  a scalar, reducing or counting an undefined element raises ``TailRelianceError`` naming the
  instruction that left it undefined. Vector registers are undefined at function entry.
  Whole-register spills to the stack keep their undefined bytes until reloaded or overwritten.

Known differences from qemu 7.2: none observed in the differential tests; qemu 7.2 itself
aborts on vector ``.rtz.`` conversions (rvvsim implements them; tests use numpy there).
"""

from portc.runtimes.rvvsim.errors import (
    AbiError,
    AsmSyntaxError,
    IllegalInstructionError,
    InstructionLimitError,
    OutOfBoundsError,
    RvvSimError,
    TailRelianceError,
)
from portc.runtimes.rvvsim.machine import RunStats, RvvMachine
from portc.runtimes.rvvsim.memory import Memory
from portc.runtimes.rvvsim.parser import Instr, Program, parse_program

__all__ = [
    "AbiError",
    "AsmSyntaxError",
    "IllegalInstructionError",
    "Instr",
    "InstructionLimitError",
    "Memory",
    "OutOfBoundsError",
    "Program",
    "RunStats",
    "RvvMachine",
    "RvvSimError",
    "TailRelianceError",
    "parse_program",
]
