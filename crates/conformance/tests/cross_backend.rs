//! Same guest, same results: a pseudo-random sequence of integer
//! instructions runs on emu and on kvm, and the final registers, the flags
//! after every instruction (undefined ones masked) and the memory the guest
//! wrote must be identical.

use conformance::harness::{run_guest, TestIo, TestVm, SCRATCH};
use hv::Hypervisor;
use iced_x86::code_asm::*;

const STEPS: usize = 400;
const FLAGS_LOG: u64 = SCRATCH + 0x1000;
/// CF PF AF ZF SF OF.
const ARITH_FLAGS: u64 = 0x8d5;

/// A tiny deterministic generator (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Registers the sequence may use (not RSP, not R15 = the flags log).
const REGS: [AsmRegister64; 14] = [
    rax, rbx, rcx, rdx, rsi, rdi, rbp, r8, r9, r10, r11, r12, r13, r14,
];

/// Emits the program; returns the defined-flags mask of each step.
fn build(seed: u64) -> (guests::Program, Vec<u64>) {
    let mut rng = Rng(seed | 1);
    let mut a = guests::assembler().unwrap();
    let mut masks = Vec::with_capacity(STEPS);
    for r in REGS {
        a.mov(r, rng.next()).unwrap();
    }
    a.mov(r15, FLAGS_LOG).unwrap();
    // Start from known flags.
    a.push(0x2i32).unwrap();
    a.popfq().unwrap();
    for _ in 0..STEPS {
        let d = REGS[rng.below(REGS.len() as u64) as usize];
        let s = REGS[rng.below(REGS.len() as u64) as usize];
        let d32 = gpr64_to_32(d);
        let s32 = gpr64_to_32(s);
        let imm = rng.next() as i32;
        let count = (rng.below(64)) as u32;
        let mask = match rng.below(22) {
            0 => {
                a.add(d, s).unwrap();
                ARITH_FLAGS
            }
            1 => {
                a.sub(d, s).unwrap();
                ARITH_FLAGS
            }
            2 => {
                a.adc(d, s).unwrap();
                ARITH_FLAGS
            }
            3 => {
                a.sbb(d, s).unwrap();
                ARITH_FLAGS
            }
            4 => {
                a.and(d, s).unwrap();
                ARITH_FLAGS & !0x10
            }
            5 => {
                a.or(d, imm).unwrap();
                ARITH_FLAGS & !0x10
            }
            6 => {
                a.xor(d32, s32).unwrap();
                ARITH_FLAGS & !0x10
            }
            7 => {
                a.cmp(d, imm).unwrap();
                ARITH_FLAGS
            }
            8 => {
                a.inc(d).unwrap();
                ARITH_FLAGS
            }
            9 => {
                a.dec(d32).unwrap();
                ARITH_FLAGS
            }
            10 => {
                a.neg(d).unwrap();
                ARITH_FLAGS
            }
            11 => {
                a.not(d).unwrap();
                ARITH_FLAGS
            }
            // Shifts by an immediate: OF is defined only for counts of 1,
            // AF never; a count of 0 changes nothing.
            12 => {
                a.shl(d, count).unwrap();
                shift_mask(count, 64)
            }
            13 => {
                a.shr(d32, count & 31).unwrap();
                shift_mask(count & 31, 32)
            }
            14 => {
                a.sar(d, count).unwrap();
                shift_mask(count, 64)
            }
            15 => {
                a.rol(d, count).unwrap();
                rotate_mask(count, 64)
            }
            16 => {
                a.ror(d32, count & 31).unwrap();
                rotate_mask(count & 31, 32)
            }
            // IMUL defines only CF and OF.
            17 => {
                a.imul_2(d, s).unwrap();
                0x801
            }
            18 => {
                a.imul_3(d32, s32, imm).unwrap();
                0x801
            }
            // MUL/DIV use RDX:RAX; DIV is kept away from #DE by forcing
            // a divisor above RDX.
            19 => {
                a.mul(s).unwrap();
                0x801
            }
            20 => {
                a.mov(rdx, 0u64).unwrap();
                a.or(s, 1).unwrap();
                if s == rax || s == rdx {
                    a.mov(rcx, 7u64).unwrap();
                    a.div(rcx).unwrap();
                } else {
                    a.div(s).unwrap();
                }
                0
            }
            _ => {
                a.xadd(d, s).unwrap();
                ARITH_FLAGS
            }
        };
        a.pushfq().unwrap();
        a.pop(qword_ptr(r15)).unwrap();
        a.add(r15, 8).unwrap();
        masks.push(mask);
    }
    a.mov(eax, 0x600d).unwrap();
    guests::emit_debug_exit_eax(&mut a).unwrap();
    (guests::finish(a).unwrap(), masks)
}

fn shift_mask(count: u32, _width: u32) -> u64 {
    match count {
        0 => ARITH_FLAGS,
        1 => ARITH_FLAGS & !0x10,
        _ => ARITH_FLAGS & !0x10 & !0x800,
    }
}

fn rotate_mask(count: u32, _width: u32) -> u64 {
    match count {
        0 => ARITH_FLAGS,
        1 => 0x801,
        _ => 0x1,
    }
}

fn gpr64_to_32(r: AsmRegister64) -> AsmRegister32 {
    const PAIRS: [(AsmRegister64, AsmRegister32); 16] = [
        (rax, eax),
        (rbx, ebx),
        (rcx, ecx),
        (rdx, edx),
        (rsi, esi),
        (rdi, edi),
        (rbp, ebp),
        (rsp, esp),
        (r8, r8d),
        (r9, r9d),
        (r10, r10d),
        (r11, r11d),
        (r12, r12d),
        (r13, r13d),
        (r14, r14d),
        (r15, r15d),
    ];
    PAIRS.iter().find(|p| p.0 == r).map(|p| p.1).expect("a GPR")
}

struct Outcome {
    regs: hv::Regs,
    flags: Vec<u64>,
}

fn run_on(hv: &dyn Hypervisor, program: &guests::Program, masks: &[u64]) -> Outcome {
    let t = TestVm::new(hv, 1);
    t.load(program);
    let mut vcpu = t.vcpu(0, program.load_addr);
    let io = TestIo::new(vcpu.kicker());
    assert_eq!(
        run_guest(&mut *vcpu, &io),
        None,
        "{} did not finish",
        hv.name()
    );
    assert_eq!(io.exit_value(), Some(0x600d));
    let flags = masks
        .iter()
        .enumerate()
        .map(|(i, mask)| t.read_u64(FLAGS_LOG + 8 * i as u64) & mask)
        .collect();
    Outcome {
        regs: vcpu.get_regs().unwrap(),
        flags,
    }
}

#[test]
fn random_integer_sequences_match_between_emu_and_kvm() {
    let kvm = match hv_kvm::KvmHypervisor::new() {
        Ok(kvm) => kvm,
        Err(e) => {
            conformance::skip_or_fail("kvm", &e.to_string());
            return;
        }
    };
    let emu = hv_emu::EmuHypervisor::new();
    for seed in [1u64, 0xfeed, 0x1234_5678_9abc, 42, 7] {
        let (program, masks) = build(seed);
        let on_kvm = run_on(&kvm, &program, &masks);
        let on_emu = run_on(&emu, &program, &masks);
        for (i, (k, e)) in on_kvm.flags.iter().zip(&on_emu.flags).enumerate() {
            assert_eq!(
                k, e,
                "seed {seed:#x}: flags differ after step {i} (kvm {k:#x}, emu {e:#x})"
            );
        }
        assert_eq!(
            on_kvm.regs, on_emu.regs,
            "seed {seed:#x}: final registers differ"
        );
    }
}
