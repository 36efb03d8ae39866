//! XSAVE, XSAVEOPT, XSAVEC and XRSTOR (standard and compacted) against the
//! host, for the SSE and AVX components (x87 state is left out: the
//! host's own x87 registers would be saved): the saved bytes and the
//! restored registers must match, except MXCSR_MASK (0xFFFF here, other
//! values on other CPUs).

use iced_x86::code_asm::*;

use super::*;

/// The XSAVE area (64-byte aligned) and, after it, the MXCSR words.
const AREA: usize = 832;
const BUF: usize = 1024;
const MXCSR_TEST: i32 = 960;
const MXCSR_DEFAULT: i32 = 964;
/// MXCSR after the instruction.
const MXCSR_OUT: i32 = 968;

#[repr(align(64))]
struct Buf([u8; BUF]);

/// Runs `insn` natively and on the emulator on `image` and `buf`.
fn run(n: usize, insn: &[u8], image: &YmmImage, buf: &[u8; BUF]) {
    let mut code = asm64(0, |a| a.ldmxcsr(dword_ptr(rbp + MXCSR_TEST)));
    code.extend_from_slice(insn);
    code.extend(asm64(0, |a| {
        a.stmxcsr(dword_ptr(rbp + MXCSR_OUT))?;
        a.ldmxcsr(dword_ptr(rbp + MXCSR_DEFAULT))
    }));
    let mut host_buf = Buf(*buf);
    let mut host = *image;
    host[5] = host_buf.0.as_mut_ptr() as u64;
    Native::new(&ymm_thunk(&code)).call_any(&mut host);

    let mut g = Guest::long64();
    g.cpu.state.cr4 |= cr4::OSXSAVE;
    g.cpu.state.xcr0 = xcr0::SUPPORTED;
    for &i in REGS.iter() {
        g.cpu.state.gpr[i] = image[i];
    }
    g.cpu.state.gpr[5] = DATA;
    g.bus.load(DATA, buf);
    for i in 0..16 {
        let [lo, hi] = ymm_of(image, i);
        g.cpu.state.fpu.xmm[i] = lo;
        g.cpu.state.fpu.ymm_hi[i] = hi;
    }
    g.cpu.state.set_rflags(image[16]);
    let mut guest_code = code.clone();
    guest_code.push(0xf4);
    g.bus.load(CODE, &guest_code);
    assert_eq!(g.run(), CpuExit::Halt, "case {n}: [{}]", listing(insn));
    let what = || format!("case {n}: [{}] rax {:#x}", listing(insn), image[0]);
    for i in 0..16 {
        let got = [g.cpu.state.fpu.xmm[i], g.cpu.state.fpu.ymm_hi[i]];
        assert_eq!(got, ymm_of(&host, i), "{} ymm{i}", what());
    }
    let out = MXCSR_OUT as usize;
    assert_eq!(
        g.bus.bytes()[DATA as usize + out..DATA as usize + out + 4],
        host_buf.0[out..out + 4],
        "{} MXCSR",
        what()
    );
    let mut got = g.bus.bytes()[DATA as usize..DATA as usize + AREA].to_vec();
    let mut want = host_buf.0[..AREA].to_vec();
    // MXCSR_MASK is the CPU's.
    got[28..32].fill(0);
    want[28..32].fill(0);
    for (k, (x, y)) in got.chunks(8).zip(want.chunks(8)).enumerate() {
        assert_eq!(x, y, "{} area bytes {}..{}", what(), k * 8, k * 8 + 8);
    }
}

#[test]
fn xsave_family_images_match_the_host() {
    if !host_has("XSAVE", &["avx"]) {
        return;
    }
    if !std::is_x86_feature_detected!("xsavec") || !std::is_x86_feature_detected!("xsaveopt") {
        eprintln!("host lacks XSAVEC/XSAVEOPT: the XSAVE differential test is SKIPPED");
        return;
    }
    let mut rng = Rng(0xcbbb_9d5d_c105_9ed8);
    for n in 0..cases(3000) {
        let (mut image, _) = random_inputs(&mut rng, Flavor::Int, 0);
        // EDX:EAX: a subset of SSE|AVX (junk above bit 31 of RAX and RDX
        // is ignored).
        image[0] = (rng.next() & 0xffff_fff0_0000_0000) | (rng.next() & 6);
        image[2] = rng.next() & 0xffff_ffff_0000_0000;
        let mut buf = [0u8; BUF];
        for b in buf.iter_mut() {
            *b = rng.next() as u8;
        }
        let rc = (rng.next() & 3) as u32;
        buf[MXCSR_TEST as usize..MXCSR_TEST as usize + 4]
            .copy_from_slice(&(0x1f80 | rc << 13).to_le_bytes());
        buf[MXCSR_DEFAULT as usize..MXCSR_DEFAULT as usize + 4]
            .copy_from_slice(&0x1f80u32.to_le_bytes());
        // A valid image to restore: MXCSR without reserved bits, the
        // header in the standard or compacted form, its reserved bytes 0.
        let mxcsr = 0x1f80u32 ^ (rng.next() as u32 & 0x603f);
        buf[24..28].copy_from_slice(&mxcsr.to_le_bytes());
        let xstate_bv = rng.next() & 6;
        let compacted = rng.next() & 1 == 0;
        buf[512..576].fill(0);
        buf[512..520].copy_from_slice(&xstate_bv.to_le_bytes());
        if compacted {
            buf[520..528].copy_from_slice(&(1u64 << 63 | 6).to_le_bytes());
        }
        let insn = asm1(|a| match rng.next() % 4 {
            0 => a.xsave64(ptr(rbp)),
            1 => a.xsaveopt64(ptr(rbp)),
            2 => a.xsavec64(ptr(rbp)),
            _ => a.xrstor64(ptr(rbp)),
        });
        run(n, &insn, &image, &buf);
    }
}
