//! Differential tests of BMI2 (BZHI MULX PDEP PEXT RORX SARX SHLX SHRX),
//! MOVBE and LZCNT/TZCNT against the host, register and memory forms.

use iced_x86::code_asm::*;
use iced_x86::{Decoder, DecoderOptions};

use super::differential::{cases, iced_flags, thunk, Image, Native, Rng, REGS};
use super::*;
use crate::state::rflags;

/// Scratch memory the memory forms address through RBP.
const MEM: usize = 64;

fn random_bmi(r: &mut Rng, bmi2: bool, movbe: bool, lzcnt: bool) -> Vec<u8> {
    let mut a = CodeAssembler::new(64).unwrap();
    let g64 = [
        rax, rcx, rdx, rbx, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15,
    ];
    let g32 = [
        eax, ecx, edx, ebx, esi, edi, r8d, r9d, r10d, r11d, r12d, r13d, r14d, r15d,
    ];
    let g16 = [
        ax, cx, dx, bx, si, di, r8w, r9w, r10w, r11w, r12w, r13w, r14w, r15w,
    ];
    let d = (r.next() % (MEM as u64 - 8)) as i32;
    let imm = (r.next() & 0xff) as u32;
    let mut families = Vec::new();
    if bmi2 {
        families.push(0);
    }
    if movbe {
        families.push(1);
    }
    if lzcnt {
        families.push(2);
    }
    macro_rules! bmi2 {
        ($regs:expr, $ptr:ident) => {{
            let x = r.pick(&$regs);
            let y = r.pick(&$regs);
            let z = r.pick(&$regs);
            let m = $ptr(rbp + d);
            match r.next() % 16 {
                0 => a.bzhi(x, y, z),
                1 => a.bzhi(x, m, z),
                2 => a.mulx(x, y, z),
                3 => a.mulx(x, y, m),
                4 => a.pdep(x, y, z),
                5 => a.pdep(x, y, m),
                6 => a.pext(x, y, z),
                7 => a.pext(x, y, m),
                8 => a.rorx(x, y, imm),
                9 => a.rorx(x, m, imm),
                10 => a.sarx(x, y, z),
                11 => a.sarx(x, m, z),
                12 => a.shlx(x, y, z),
                13 => a.shlx(x, m, z),
                14 => a.shrx(x, y, z),
                _ => a.shrx(x, m, z),
            }
        }};
    }
    macro_rules! movbe {
        ($regs:expr, $ptr:ident) => {{
            let x = r.pick(&$regs);
            if r.next() & 1 == 0 {
                a.movbe(x, $ptr(rbp + d))
            } else {
                a.movbe($ptr(rbp + d), x)
            }
        }};
    }
    macro_rules! counts {
        ($regs:expr, $ptr:ident) => {{
            let x = r.pick(&$regs);
            let y = r.pick(&$regs);
            match r.next() % 4 {
                0 => a.lzcnt(x, y),
                1 => a.tzcnt(x, y),
                2 => a.lzcnt(x, $ptr(rbp + d)),
                _ => a.tzcnt(x, $ptr(rbp + d)),
            }
        }};
    }
    let wide = r.next() & 1 == 0;
    match (r.pick(&families), wide) {
        (0, true) => bmi2!(g64, qword_ptr),
        (0, false) => bmi2!(g32, dword_ptr),
        (1, _) => match r.next() % 3 {
            0 => movbe!(g64, qword_ptr),
            1 => movbe!(g32, dword_ptr),
            _ => movbe!(g16, word_ptr),
        },
        (_, _) => match r.next() % 3 {
            0 => counts!(g64, qword_ptr),
            1 => counts!(g32, dword_ptr),
            _ => counts!(g16, word_ptr),
        },
    }
    .unwrap();
    a.assemble(0).unwrap()
}

#[test]
fn random_bmi2_movbe_and_bit_counts_match_the_host() {
    let bmi2 = std::is_x86_feature_detected!("bmi2");
    let movbe = std::is_x86_feature_detected!("movbe");
    let lzcnt = std::is_x86_feature_detected!("lzcnt") && std::is_x86_feature_detected!("bmi1");
    for (name, have) in [("BMI2", bmi2), ("MOVBE", movbe), ("LZCNT/BMI1", lzcnt)] {
        if !have {
            eprintln!("host lacks {name}: its differential tests are SKIPPED");
        }
    }
    if !(bmi2 || movbe || lzcnt) {
        return;
    }
    let mut rng = Rng(0x8c3f_09d1_55e2_7a4b);
    let n = cases(4000);
    let mut seen = std::collections::BTreeSet::new();
    for case in 0..n {
        let insn = random_bmi(&mut rng, bmi2, movbe, lzcnt);
        let decoded = Decoder::with_ip(64, &insn, 0, DecoderOptions::NONE).decode();
        seen.insert(format!("{:?}", decoded.mnemonic()));
        let undefined = iced_flags(decoded.rflags_undefined());
        let mut mem = [0u8; MEM];
        for chunk in mem.chunks_mut(8) {
            chunk.copy_from_slice(&rng.value().to_le_bytes());
        }
        let mut image: Image = [0; 17];
        for v in image.iter_mut().take(16) {
            *v = rng.value();
        }
        // Counts and bit indexes near the interesting range now and then.
        if rng.next() & 1 == 0 {
            let i = rng.pick(&REGS);
            image[i] = (image[i] & !0xff) | (rng.next() % 72);
        }
        image[4] = 0;
        image[16] = (rng.next() & rflags::ARITH) | 0x2;
        let start = image;

        let native = Native::new(&thunk(&insn));
        let mut host = start;
        let mut host_mem = mem;
        host[5] = host_mem.as_mut_ptr() as u64;
        native.call(&mut host);

        let mut g = Guest::long64();
        for &i in REGS.iter() {
            g.cpu.state.gpr[i] = start[i];
        }
        g.cpu.state.gpr[5] = DATA;
        g.bus.load(DATA, &mem);
        g.cpu.state.set_rflags(start[16]);
        let mut code = insn.clone();
        code.push(0xf4);
        g.bus.load(CODE, &code);
        g.run_to_hlt();
        for &i in REGS.iter().filter(|&&i| i != 5) {
            assert_eq!(
                g.cpu.state.gpr[i],
                host[i],
                "case {case} {:?} reg {i}: inputs {start:x?} mem {mem:x?}",
                decoded.code()
            );
        }
        let guest_mem = &g.bus.bytes()[DATA as usize..DATA as usize + MEM];
        assert_eq!(guest_mem, &host_mem[..], "case {case} {:?}", decoded.code());
        let mask = rflags::ARITH & !undefined;
        assert_eq!(
            g.cpu.state.rflags() & mask,
            host[16] & mask,
            "case {case} {:?}: flags (mask {mask:#x}), inputs {start:x?}",
            decoded.code()
        );
    }
    let want = bmi2 as usize * 8 + movbe as usize + lzcnt as usize * 2;
    assert_eq!(seen.len(), want, "mnemonics covered: {seen:?}");
}

#[test]
fn bmi2_and_movbe_are_ud_when_cpuid_lacks_them() {
    let mut g = Guest::long64();
    // A CPUID table without BMI2 and MOVBE.
    g.cpu.set_cpuid(&[hv::CpuidEntry {
        function: 7,
        significant_index: true,
        ebx: 1 << 3,
        ..Default::default()
    }]);
    g.gate64(6, HANDLERS, 0, 0, false);
    g.code_at(HANDLERS, |a| {
        a.mov(r15, 6u64)?;
        a.hlt()
    });
    g.code(|a| {
        a.shlx(eax, ebx, ecx)?;
        a.hlt()
    });
    g.run_to_hlt();
    assert_eq!(g.reg(15), 6);
    let mut g2 = Guest::long64();
    g2.cpu.set_cpuid(&[]);
    g2.gate64(6, HANDLERS, 0, 0, false);
    g2.code_at(HANDLERS, |a| {
        a.mov(r15, 6u64)?;
        a.hlt()
    });
    g2.code(|a| {
        a.movbe(eax, dword_ptr(DATA))?;
        a.hlt()
    });
    g2.run_to_hlt();
    assert_eq!(g2.reg(15), 6);
}
