//! Pre-decoded instructions. A block is compiled once, when it is decoded,
//! into [`Op`]s: the handler of each instruction is chosen then (a
//! specialised one for the common integer forms, else the generic
//! mnemonic dispatch), its register operands become GPR numbers, its
//! memory operand base/index/scale/displacement, its immediate a value
//! already masked to the operand size. The interpreter then calls one
//! function pointer per instruction.
//!
//! Flags: a backward liveness pass over the block finds the instructions
//! whose arithmetic flags are overwritten before anything can observe them
//! (a later instruction reads them, the block ends, or an instruction that
//! can fault runs, because an exception frame holds RFLAGS), and gives
//! those a handler that does not record flags. Every op also keeps a
//! handler that always records (`hf`), used when a block is cut short by
//! the instruction budget, so that RFLAGS is exact at every point where
//! the run loop can stop.

use iced_x86::{Instruction, Mnemonic, OpKind, Register, RflagsBits};

use super::{fast, ip_mask, Exec};
use crate::block::{OpsRef, NO_KEY};
use crate::exception::R;

/// An instruction's implementation: `Err` is an exception raised with RIP
/// at the instruction.
pub(crate) type Handler = for<'a, 'b> fn(&'a mut Exec<'b>, &Op) -> R<()>;

/// No register in a base/index/register field.
pub(crate) const NOREG: u8 = 0xff;

/// One pre-decoded instruction.
#[derive(Clone)]
pub struct Op {
    /// The handler used when the whole block runs.
    pub(crate) h: Handler,
    /// The handler that always records flags (block cut short).
    pub(crate) hf: Handler,
    /// Address of the instruction and of the next one (masked to the code size).
    pub(crate) ip: u64,
    pub(crate) next: u64,
    /// Immediate masked to the operand size, or the near branch target.
    pub(crate) imm: u64,
    /// Memory operand: displacement (absolute for RIP-relative), base and
    /// index GPR numbers (or NOREG), index shift, segment, address mask.
    pub(crate) disp: u64,
    pub(crate) amask: u64,
    pub(crate) base: u8,
    pub(crate) index: u8,
    pub(crate) scale: u8,
    pub(crate) seg: u8,
    /// Register operands 0 and 1: GPR number 0..15, or 16..19 for AH..BH,
    /// or NOREG.
    pub(crate) r0: u8,
    pub(crate) r1: u8,
    /// Index in the block of the (first) instruction, and one past the
    /// last one (two instructions for a fused compare and branch).
    pub(crate) idx: u8,
    pub(crate) end: u8,
    /// The handler sets RIP itself (branches, the generic handler).
    pub(crate) sets_rip: bool,
    pub(crate) insn: Instruction,
}

impl Op {
    /// Where the op may send RIP besides faults when it ends its block:
    /// its near branch target (or immediate, for ops that are not
    /// branches) and the address after it; for a fused compare and
    /// branch, the Jcc's target and the address after the Jcc.
    pub(crate) fn successors(&self) -> [u64; 2] {
        if self.end.wrapping_sub(self.idx) == 2 {
            [self.disp, self.amask]
        } else {
            [self.imm, self.next]
        }
    }
}

/// A successor block: valid while the chain key it was made under (TLB
/// generation + block kills, and the privilege) is current.
#[derive(Clone, Copy)]
pub(crate) struct Link {
    pub rip: u64,
    pub key: u64,
    pub ops: OpsRef,
    /// The successor's compiled code (a `jit::Entry` address) and
    /// instruction count, 0 when it was not compiled when linked: compiled
    /// code chains through these without touching the successor's ops.
    pub entry: u64,
    pub insns: u64,
}

impl Default for Link {
    fn default() -> Link {
        Link::NONE
    }
}

impl Link {
    pub const NONE: Link = Link {
        rip: u64::MAX,
        key: NO_KEY,
        ops: OpsRef::EMPTY,
        entry: 0,
        insns: 0,
    };

    /// A link to `ops` (a live, cached block) under `key`.
    pub fn to(rip: u64, key: u64, ops: OpsRef) -> Link {
        // SAFETY: a live block's ops (the caller's contract).
        let (o, rt) = unsafe { (ops.ops(), ops.rt()) };
        let entry = rt.jit.entry().map_or(0, |f| f.addr());
        Link {
            rip,
            key,
            ops,
            entry,
            insns: o.last().map_or(0, |op| op.end as u64),
        }
    }
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Op")
            .field("ip", &format_args!("{:#x}", self.ip))
            .field("code", &self.insn.code())
            .finish()
    }
}

/// A memory operand's address inputs, as [`super::sem::ea`] takes them.
pub(crate) struct MemRef {
    /// Displacement (the absolute target when RIP-relative).
    pub disp: u64,
    /// Base and index GPR codes; NOREG for none, NOREG ^ 1 for a
    /// register that is not a GPR (a vector index: no fast path).
    pub base: u8,
    pub index: u8,
    /// Index shift (log2 of the scale).
    pub scale: u8,
    /// The address-size mask.
    pub amask: u64,
}

impl MemRef {
    /// The memory operand of `insn`.
    pub(crate) fn of(insn: &Instruction) -> MemRef {
        let mut m = MemRef {
            disp: insn.memory_displacement64(),
            base: NOREG,
            index: NOREG,
            scale: 0,
            amask: u64::MAX,
        };
        let mut asize = 0;
        let index = insn.memory_index();
        if index != Register::None {
            match gpr_code(index) {
                Some((c, s)) if s >= 2 => {
                    m.index = c;
                    asize = s;
                }
                _ => m.index = NOREG ^ 1,
            }
            m.scale = insn.memory_index_scale().trailing_zeros() as u8;
        }
        match insn.memory_base() {
            Register::None => {}
            Register::RIP => asize = 8,
            Register::EIP => asize = 4,
            base => match gpr_code(base) {
                Some((c, s)) if s >= 2 => {
                    m.base = c;
                    asize = s;
                }
                _ => m.base = NOREG ^ 1,
            },
        }
        m.amask = match asize {
            2 => 0xffff,
            4 => 0xffff_ffff,
            _ => u64::MAX,
        };
        m
    }
}

/// GPR number and size in bytes of a general-purpose register.
pub(crate) fn gpr_code(r: Register) -> Option<(u8, u32)> {
    let i = r as usize;
    Some(match i {
        1..=4 => ((i - 1) as u8, 1),
        5..=8 => (16 + (i - 5) as u8, 1),
        9..=20 => ((i - 5) as u8, 1),
        21..=36 => ((i - 21) as u8, 2),
        37..=52 => ((i - 37) as u8, 4),
        53..=68 => ((i - 53) as u8, 8),
        _ => return None,
    })
}

/// The arithmetic flags as iced-x86 reports them.
const ARITH6: u32 = RflagsBits::OF
    | RflagsBits::SF
    | RflagsBits::ZF
    | RflagsBits::AF
    | RflagsBits::CF
    | RflagsBits::PF;

fn generic(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    // Instructions that read the retired count (STI, MOV SS) see it exact.
    ex.c.icount = ex.icount0 + op.idx as u64;
    ex.c.state.rip = op.next;
    ex.step(&op.insn)
}

/// The operand fields of `insn`, with the generic handler.
fn fields(insn: &Instruction, idx: usize, bits: u32) -> Op {
    let mut op = Op {
        h: generic,
        hf: generic,
        ip: insn.ip(),
        next: insn.next_ip() & ip_mask(bits),
        imm: 0,
        disp: 0,
        amask: u64::MAX,
        base: NOREG,
        index: NOREG,
        scale: 0,
        seg: 0,
        r0: NOREG,
        r1: NOREG,
        idx: idx as u8,
        end: idx as u8 + 1,
        sets_rip: true,
        insn: *insn,
    };
    for n in 0..insn.op_count().min(2) {
        if insn.op_kind(n) == OpKind::Register {
            if let Some((code, _)) = gpr_code(insn.op_register(n)) {
                if n == 0 {
                    op.r0 = code;
                } else {
                    op.r1 = code;
                }
            }
        }
    }
    for n in 0..insn.op_count() {
        match insn.op_kind(n) {
            OpKind::Memory => {
                let m = MemRef::of(insn);
                op.disp = m.disp;
                op.seg = Exec::mem_seg(insn) as u8;
                (op.base, op.index, op.scale, op.amask) = (m.base, m.index, m.scale, m.amask);
            }
            OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64 => {
                let size = Exec::op_size(insn, 0).clamp(1, 8);
                op.imm = insn.immediate(n) & crate::flags::size_mask(size);
            }
            OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
                op.imm = insn.near_branch_target();
            }
            _ => {}
        }
    }
    op
}

/// The flags an instruction certainly overwrites with a defined value (so
/// that earlier values are dead). Flags it leaves undefined do not count:
/// the implementation may keep them (BT, DIV...), and the result must not
/// depend on where a block is cut. Conservative where a count may be zero
/// at run time.
fn kills(insn: &Instruction) -> u32 {
    use Mnemonic::*;
    let m = insn.mnemonic();
    let rep = insn.has_rep_prefix() || insn.has_repe_prefix() || insn.has_repne_prefix();
    if rep && insn.is_string_instruction() {
        return 0;
    }
    let defined = insn.rflags_modified() & !insn.rflags_undefined() & ARITH6;
    match m {
        Rol | Ror | Rcl | Rcr => 0,
        Shl | Sal | Shr | Sar | Shld | Shrd => {
            let n = insn.op_count() - 1;
            match insn.op_kind(n) {
                OpKind::Immediate8 => {
                    let mask = if Exec::op_size(insn, 0) == 8 {
                        0x3f
                    } else {
                        0x1f
                    };
                    if insn.immediate8() & mask == 0 {
                        0
                    } else {
                        defined
                    }
                }
                _ if insn.op_count() == 1 => defined,
                _ => 0,
            }
        }
        _ => defined,
    }
}

/// Compiles decoded instructions of code size `bits` into ops.
pub(crate) fn compile(insns: &[Instruction], bits: u32) -> Vec<Op> {
    let mut ops: Vec<Op> = insns
        .iter()
        .enumerate()
        .map(|(i, insn)| fields(insn, i, bits))
        .collect();
    // Backward flag liveness; the block's successor may read anything.
    let mut live = ARITH6;
    for op in ops.iter_mut().rev() {
        let insn = op.insn;
        let sel = fast::select(op, bits);
        let writes = insn.rflags_modified() & ARITH6;
        let reads = insn.rflags_read() & ARITH6;
        let faults = match &sel {
            Some(s) => s.can_fault,
            None => true,
        };
        if let Some(s) = sel {
            op.hf = s.full;
            op.h = if writes & live == 0 { s.dead } else { s.full };
            op.sets_rip = s.sets_rip;
        }
        live = (live & !kills(&insn)) | reads;
        if faults {
            live = ARITH6;
        }
    }
    if bits == 64 && ops.len() >= 2 {
        let n = ops.len();
        if let Some((h, hf)) = fast::fuse_cmp_jcc(&ops[n - 2], &ops[n - 1]) {
            let jcc = ops.pop().expect("two ops");
            let op = &mut ops[n - 2];
            op.h = h;
            op.hf = hf;
            op.sets_rip = true;
            op.end = jcc.end;
            // A register compare has no memory operand: its fields hold
            // the branch target and the address after the Jcc, and the
            // Jcc's condition code (for the JIT).
            op.disp = jcc.imm;
            op.amask = jcc.next;
            op.scale = jcc.insn.condition_code() as u8 - 1;
        }
    }
    ops
}
