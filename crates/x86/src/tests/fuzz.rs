//! Random code must never panic the host: random bytes in every mode, with
//! IDT gates that send every vector to a handler that resumes elsewhere.

use super::*;
use crate::Mode;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn random_code(rng: &mut Rng, len: usize) -> Vec<u8> {
    // Mix raw bytes with common prefixes and opcode bytes to reach deeper.
    const COMMON: [u8; 24] = [
        0x0f, 0x48, 0x66, 0xf3, 0xf2, 0x89, 0x8b, 0x01, 0x29, 0x31, 0xc7, 0xff, 0xf7, 0xd3, 0xc1,
        0xa4, 0xab, 0xe8, 0xeb, 0x74, 0x0f, 0x38, 0xdd, 0xd9,
    ];
    (0..len)
        .map(|_| {
            let r = rng.next();
            if r & 3 == 0 {
                COMMON[(r >> 8) as usize % COMMON.len()]
            } else {
                (r >> 16) as u8
            }
        })
        .collect()
}

fn fuzz_long_mode(seed: u64, rounds: usize) {
    let mut rng = Rng(seed);
    let mut g = Guest::long64();
    let init = g.cpu.state.clone();
    for _ in 0..rounds {
        g.cpu.state = init.clone();
        g.cpu.state_changed();
        g.cpu.flush_tlb(crate::TlbFlush::Other);
        setup_tables(&mut g.bus);
        // Every vector: a handler that reloads a sane stack and halts.
        for v in 0..=255u8 {
            g.gate64(v, HANDLERS, 1, 3, false);
        }
        g.code_at(HANDLERS, |a| {
            use iced_x86::code_asm::*;
            a.mov(rsp, STACK_TOP)?;
            a.hlt()
        });
        let code = random_code(&mut rng, 256);
        g.bus.load(CODE, &code);
        // Random registers pointing into RAM and beyond.
        for i in 0..16 {
            if i != 4 {
                g.cpu.state.gpr[i] = match rng.next() % 4 {
                    0 => DATA + (rng.next() & 0xffff),
                    1 => rng.next(),
                    2 => rng.next() & 0xff,
                    _ => 0xfee0_0000 + (rng.next() & 0xfff),
                };
            }
        }
        let _ = g.cpu.run(&mut g.bus, 5_000);
    }
}

#[test]
fn random_code_in_long_mode_never_panics() {
    on_both_engines(random_code_in_long_mode_never_panics_on_engine);
}

fn random_code_in_long_mode_never_panics_on_engine() {
    fuzz_long_mode(0x1234_5678_9abc_def1, 1000);
}

#[test]
fn random_code_in_real_and_protected_mode_never_panics() {
    on_both_engines(random_code_in_real_and_protected_mode_never_panics_on_engine);
}

fn random_code_in_real_and_protected_mode_never_panics_on_engine() {
    let mut rng = Rng(0xfeed_beef_1234_5678);
    let mut bus = TestBus::new();
    for round in 0..1000 {
        setup_tables(&mut bus);
        let code = random_code(&mut rng, 256);
        bus.load(0x7c00, &code);
        let mut cpu = test_cpu();
        if round % 2 == 1 {
            let s = &mut cpu.state;
            s.cr0 = cr0::PE | cr0::ET;
            s.seg[CS] = SegCache::from_descriptor(0x08, GDT_ENTRIES[1]);
            for r in [DS, ES, SS, FS, GS] {
                s.seg[r] = SegCache::from_descriptor(0x18, GDT_ENTRIES[3]);
            }
            s.gdtr = TableReg {
                base: GDT,
                limit: 0x3f,
            };
            s.gpr[4] = STACK_TOP;
        } else {
            cpu.state.seg[CS] = SegCache::real(0, true);
            cpu.state.gpr[4] = 0x7000;
        }
        cpu.state.rip = 0x7c00;
        cpu.state_changed();
        for i in [0usize, 1, 2, 3, 5, 6, 7] {
            cpu.state.gpr[i] = rng.next() & 0xffff_ffff;
        }
        let _ = cpu.run(&mut bus, 5_000);
        assert!(matches!(
            cpu.state.mode,
            Mode::Real | Mode::Protected | Mode::Long | Mode::Virtual8086
        ));
    }
}

/// A longer run for local fuzzing: `cargo test -p x86 fuzz_long -- --ignored`.
#[test]
#[ignore = "long run (80 000 programs): cargo test -p x86 -- --ignored fuzz_long"]
fn fuzz_long_many_seeds() {
    for seed in 1..40u64 {
        fuzz_long_mode(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1, 2000);
    }
}
