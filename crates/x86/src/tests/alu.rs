//! Integer instructions: results and exact flags.

use iced_x86::code_asm::*;
use iced_x86::IcedError;

use super::*;
use crate::state::rflags::*;

type Asm<'a> = &'a mut CodeAssembler;

/// Runs `f` then HLT in long mode; returns the guest and RFLAGS.
fn run(f: impl FnOnce(Asm) -> Result<(), IcedError>) -> (Guest, u64) {
    let mut g = Guest::long64();
    g.code(|a| {
        f(a)?;
        a.hlt()
    });
    let fl = g.run_to_hlt();
    (g, fl)
}

fn arith(fl: u64) -> u64 {
    fl & ARITH
}

#[test]
fn add_flags_edge_cases() {
    on_both_engines(add_flags_edge_cases_on_engine);
}

fn add_flags_edge_cases_on_engine() {
    let (g, fl) = run(|a| {
        a.mov(al, 0xff)?;
        a.add(al, 1)
    });
    assert_eq!(g.reg(0) & 0xff, 0);
    assert_eq!(arith(fl), CF | ZF | AF | PF);

    let (_, fl) = run(|a| {
        a.mov(al, 0x7f)?;
        a.add(al, 1)
    });
    assert_eq!(arith(fl), OF | SF | AF);

    let (g, fl) = run(|a| {
        a.mov(eax, 0x7fff_ffff)?;
        a.add(eax, 1)
    });
    assert_eq!(g.reg(0), 0x8000_0000);
    assert_eq!(arith(fl), OF | SF | AF | PF);

    let (g, fl) = run(|a| {
        a.mov(rax, 0xffff_ffff_ffff_ffffu64)?;
        a.mov(rbx, 2u64)?;
        a.add(rax, rbx)
    });
    assert_eq!(g.reg(0), 1);
    assert_eq!(arith(fl), CF | AF);
}

#[test]
fn sub_cmp_flags_edge_cases() {
    on_both_engines(sub_cmp_flags_edge_cases_on_engine);
}

fn sub_cmp_flags_edge_cases_on_engine() {
    let (g, fl) = run(|a| {
        a.mov(al, 0)?;
        a.sub(al, 1)
    });
    assert_eq!(g.reg(0) & 0xff, 0xff);
    assert_eq!(arith(fl), CF | SF | AF | PF);

    let (_, fl) = run(|a| {
        a.mov(al, 0x80u32 as i32)?;
        a.sub(al, 1)
    });
    assert_eq!(arith(fl), OF | AF);

    let (g, fl) = run(|a| {
        a.mov(rax, 5u64)?;
        a.cmp(rax, 5)
    });
    assert_eq!(g.reg(0), 5);
    assert_eq!(arith(fl), ZF | PF);

    let (_, fl) = run(|a| {
        a.mov(ax, 0x8000)?;
        a.cmp(ax, 1)
    });
    assert_eq!(arith(fl), OF | AF | PF);
}

#[test]
fn adc_sbb_use_the_carry() {
    on_both_engines(adc_sbb_use_the_carry_on_engine);
}

fn adc_sbb_use_the_carry_on_engine() {
    let (g, fl) = run(|a| {
        a.stc()?;
        a.mov(al, 0xff)?;
        a.adc(al, 0)
    });
    assert_eq!(g.reg(0) & 0xff, 0);
    assert_eq!(arith(fl), CF | ZF | AF | PF);

    let (g, fl) = run(|a| {
        a.stc()?;
        a.mov(rax, 0xffff_ffff_ffff_ffffu64)?;
        a.mov(rbx, 0xffff_ffff_ffff_ffffu64)?;
        a.adc(rax, rbx)
    });
    assert_eq!(g.reg(0), u64::MAX);
    assert_eq!(arith(fl), CF | SF | AF | PF);

    let (g, fl) = run(|a| {
        a.stc()?;
        a.mov(al, 0)?;
        a.sbb(al, 0)
    });
    assert_eq!(g.reg(0) & 0xff, 0xff);
    assert_eq!(arith(fl), CF | SF | AF | PF);

    let (g, fl) = run(|a| {
        a.stc()?;
        a.mov(eax, 5)?;
        a.sbb(eax, 4)
    });
    assert_eq!(g.reg(0), 0);
    assert_eq!(arith(fl), ZF | PF);

    // 128-bit add with ADC.
    let (g, _) = run(|a| {
        a.mov(rax, 0xffff_ffff_ffff_ffffu64)?;
        a.mov(rdx, 1u64)?;
        a.add(rax, 1)?;
        a.adc(rdx, 0)
    });
    assert_eq!((g.reg(0), g.reg(2)), (0, 2));
}

#[test]
fn inc_dec_neg_preserve_or_set_carry() {
    on_both_engines(inc_dec_neg_preserve_or_set_carry_on_engine);
}

fn inc_dec_neg_preserve_or_set_carry_on_engine() {
    let (g, fl) = run(|a| {
        a.stc()?;
        a.mov(al, 0xff)?;
        a.inc(al)
    });
    assert_eq!(g.reg(0) & 0xff, 0);
    assert_eq!(arith(fl), CF | ZF | AF | PF);

    let (_, fl) = run(|a| {
        a.clc()?;
        a.mov(al, 0x80u32 as i32)?;
        a.dec(al)
    });
    assert_eq!(arith(fl), OF | AF);

    let (g, fl) = run(|a| {
        a.mov(eax, 1)?;
        a.neg(eax)
    });
    assert_eq!(g.reg(0), 0xffff_ffff);
    assert_eq!(arith(fl), CF | SF | AF | PF);

    let (_, fl) = run(|a| {
        a.xor(eax, eax)?;
        a.neg(eax)
    });
    assert_eq!(arith(fl), ZF | PF);

    let (g, _) = run(|a| {
        a.mov(rax, 0x1234u64)?;
        a.not(rax)
    });
    assert_eq!(g.reg(0), !0x1234u64);
}

#[test]
fn logic_clears_cf_of() {
    on_both_engines(logic_clears_cf_of_on_engine);
}

fn logic_clears_cf_of_on_engine() {
    let (g, fl) = run(|a| {
        a.stc()?;
        a.mov(eax, 0xf0)?;
        a.and(eax, 0x0f)
    });
    assert_eq!(g.reg(0), 0);
    assert_eq!(arith(fl), ZF | PF);
    let (g, fl) = run(|a| {
        a.mov(rax, 0x8000_0000_0000_0000u64)?;
        a.or(rax, 1)?;
        a.test(rax, rax)
    });
    assert_eq!(g.reg(0), 0x8000_0000_0000_0001);
    assert_eq!(arith(fl), SF);
    // 32-bit ops zero-extend into the full register.
    let (g, _) = run(|a| {
        a.mov(rax, 0xffff_ffff_ffff_ffffu64)?;
        a.xor(eax, 1)
    });
    assert_eq!(g.reg(0), 0xffff_fffe);
}

#[test]
fn shifts_and_rotates() {
    on_both_engines(shifts_and_rotates_on_engine);
}

fn shifts_and_rotates_on_engine() {
    let (g, fl) = run(|a| {
        a.mov(al, 0x81u32 as i32)?;
        a.shl(al, 1)
    });
    assert_eq!(g.reg(0) & 0xff, 0x02);
    assert_eq!(fl & (CF | OF | ZF | SF), CF | OF);

    let (g, fl) = run(|a| {
        a.mov(al, 0x81u32 as i32)?;
        a.shr(al, 1)
    });
    assert_eq!(g.reg(0) & 0xff, 0x40);
    assert_eq!(fl & (CF | OF | SF), CF | OF);

    let (g, fl) = run(|a| {
        a.mov(al, 0x81u32 as i32)?;
        a.sar(al, 1)
    });
    assert_eq!(g.reg(0) & 0xff, 0xc0);
    assert_eq!(fl & (CF | OF | SF | PF), CF | SF | PF);

    // Count 0 leaves the flags alone.
    let (_, fl) = run(|a| {
        a.stc()?;
        a.mov(cl, 0)?;
        a.mov(al, 1)?;
        a.shl(al, cl)
    });
    assert_eq!(fl & CF, CF);

    // Count is masked to 5 bits for 32-bit operands.
    let (g, _) = run(|a| {
        a.mov(eax, 1)?;
        a.mov(cl, 33)?;
        a.shl(eax, cl)
    });
    assert_eq!(g.reg(0), 2);

    // SHL by 8 of a byte: result 0, CF = old bit 0.
    let (g, fl) = run(|a| {
        a.mov(al, 1)?;
        a.mov(cl, 8)?;
        a.shl(al, cl)
    });
    assert_eq!(g.reg(0) & 0xff, 0);
    assert_eq!(fl & (CF | ZF), CF | ZF);

    let (g, fl) = run(|a| {
        a.mov(al, 0x81u32 as i32)?;
        a.rol(al, 1)
    });
    assert_eq!(g.reg(0) & 0xff, 0x03);
    assert_eq!(fl & (CF | OF), CF | OF);

    let (g, fl) = run(|a| {
        a.mov(al, 0x81u32 as i32)?;
        a.ror(al, 1)
    });
    assert_eq!(g.reg(0) & 0xff, 0xc0);
    assert_eq!(fl & (CF | OF), CF);

    let (g, fl) = run(|a| {
        a.clc()?;
        a.mov(al, 0x81u32 as i32)?;
        a.rcl(al, 1)
    });
    assert_eq!(g.reg(0) & 0xff, 0x02);
    assert_eq!(fl & (CF | OF), CF | OF);

    let (g, fl) = run(|a| {
        a.stc()?;
        a.mov(al, 0x01)?;
        a.rcr(al, 1)
    });
    assert_eq!(g.reg(0) & 0xff, 0x80);
    assert_eq!(fl & (CF | OF), CF | OF);

    // RCL through 9 bits: rotating 9 times is the identity.
    let (g, fl) = run(|a| {
        a.stc()?;
        a.mov(al, 0x5a)?;
        a.mov(cl, 9)?;
        a.rcl(al, cl)
    });
    assert_eq!(g.reg(0) & 0xff, 0x5a);
    assert_eq!(fl & CF, CF);
}

#[test]
fn double_shifts() {
    on_both_engines(double_shifts_on_engine);
}

fn double_shifts_on_engine() {
    let (g, fl) = run(|a| {
        a.mov(eax, 0x1234_5678)?;
        a.mov(edx, 0x9abc_def0u32 as i32)?;
        a.shld(eax, edx, 8)
    });
    assert_eq!(g.reg(0), 0x3456_789a);
    assert_eq!(fl & CF, 0);
    let (g, fl) = run(|a| {
        a.mov(eax, 0x1234_5678)?;
        a.mov(edx, 0x9abc_def0u32 as i32)?;
        a.shrd(eax, edx, 4)
    });
    assert_eq!(g.reg(0), 0x0123_4567);
    assert_eq!(fl & CF, CF);
    let (g, _) = run(|a| {
        a.mov(rax, 0x8000_0000_0000_0001u64)?;
        a.mov(rdx, 0xffff_0000_0000_0000u64)?;
        a.mov(cl, 16)?;
        a.shld(rax, rdx, cl)
    });
    assert_eq!(g.reg(0), 0x0000_0000_0001_ffff);
}

#[test]
fn multiply_and_divide() {
    on_both_engines(multiply_and_divide_on_engine);
}

fn multiply_and_divide_on_engine() {
    let (g, fl) = run(|a| {
        a.mov(rax, 0xffff_ffff_ffff_ffffu64)?;
        a.mov(rbx, 2u64)?;
        a.mul(rbx)
    });
    assert_eq!((g.reg(0), g.reg(2)), (0xffff_ffff_ffff_fffe, 1));
    assert_eq!(fl & (CF | OF), CF | OF);

    let (g, fl) = run(|a| {
        a.mov(rax, 0xffff_ffff_ffff_ffffu64)?;
        a.mov(rbx, 2u64)?;
        a.imul(rbx)
    });
    assert_eq!((g.reg(0), g.reg(2)), (0xffff_ffff_ffff_fffe, u64::MAX));
    assert_eq!(fl & (CF | OF), 0);

    let (g, fl) = run(|a| {
        a.mov(al, 0x80u32 as i32)?;
        a.mov(bl, 2)?;
        a.mul(bl)
    });
    assert_eq!(g.reg(0) & 0xffff, 0x100);
    assert_eq!(fl & CF, CF);

    let (g, fl) = run(|a| {
        a.mov(ecx, 0x10000)?;
        a.imul_3(ecx, ecx, 0x10000)
    });
    assert_eq!(g.reg(1), 0);
    assert_eq!(fl & (CF | OF), CF | OF);

    let (g, _) = run(|a| {
        a.mov(rcx, -7i64)?;
        a.mov(rdx, 3u64)?;
        a.imul_2(rcx, rdx)
    });
    assert_eq!(g.reg(1), (-21i64) as u64);

    let (g, _) = run(|a| {
        a.mov(rdx, 1u64)?;
        a.mov(rax, 5u64)?;
        a.mov(rcx, 0x10u64)?;
        a.div(rcx)
    });
    // (2^64 + 5) / 16
    assert_eq!((g.reg(0), g.reg(2)), (0x1000_0000_0000_0000, 5));

    let (g, _) = run(|a| {
        a.mov(eax, -7)?;
        a.cdq()?;
        a.mov(ecx, 2)?;
        a.idiv(ecx)
    });
    assert_eq!((g.reg(0), g.reg(2)), (0xffff_fffd, 0xffff_ffff));

    let (g, _) = run(|a| {
        a.mov(ax, 1000)?;
        a.mov(bl, 7)?;
        a.div(bl)
    });
    assert_eq!(g.reg(0) & 0xffff, (6 << 8) | 142);
}

#[test]
fn bit_operations() {
    on_both_engines(bit_operations_on_engine);
}

fn bit_operations_on_engine() {
    let (g, fl) = run(|a| {
        a.mov(rax, 0x8000_0000_0000_0010u64)?;
        a.bt(rax, 4)?;
        a.setc(bl)?;
        a.bts(rax, 0)?;
        a.btr(rax, 63)?;
        a.btc(rax, 1)
    });
    assert_eq!(g.reg(3) & 0xff, 1);
    assert_eq!(g.reg(0), 0x13);
    assert_eq!(fl & CF, 0);

    // BT with a register offset into memory beyond the operand.
    let (g, fl) = run(|a| {
        a.mov(rdi, DATA)?;
        a.mov(qword_ptr(rdi + 8), 0x4)?;
        a.mov(rcx, 66u64)?;
        a.bts(qword_ptr(rdi), rcx)
    });
    assert_eq!(g.bus.read_u64(DATA + 8), 0x4);
    assert_eq!(fl & CF, CF);

    let (g, fl) = run(|a| {
        a.mov(rax, 0x0000_0100_0000_0000u64)?;
        a.bsf(rbx, rax)?;
        a.bsr(rcx, rax)?;
        a.popcnt(rdx, rax)?;
        a.mov(rsi, 0x1234u64)?;
        a.xor(eax, eax)?;
        a.bsf(rsi, rax)
    });
    assert_eq!((g.reg(3), g.reg(1), g.reg(2)), (40, 40, 1));
    assert_eq!(g.reg(6), 0x1234, "BSF of 0 leaves the destination");
    assert_eq!(fl & ZF, ZF);

    let (g, fl) = run(|a| {
        a.xor(eax, eax)?;
        a.tzcnt(ebx, eax)?;
        a.mov(eax, 0x10)?;
        a.lzcnt(ecx, eax)
    });
    assert_eq!((g.reg(3), g.reg(1)), (32, 27));
    assert_eq!(fl & CF, 0);

    let (g, _) = run(|a| {
        a.mov(rax, 0x0102_0304_0506_0708u64)?;
        a.bswap(rax)?;
        a.mov(ebx, 0x1122_3344)?;
        a.bswap(ebx)
    });
    assert_eq!(g.reg(0), 0x0807_0605_0403_0201);
    assert_eq!(g.reg(3), 0x4433_2211);
}

#[test]
fn exchange_and_compare_exchange() {
    on_both_engines(exchange_and_compare_exchange_on_engine);
}

fn exchange_and_compare_exchange_on_engine() {
    let (g, fl) = run(|a| {
        a.mov(rdi, DATA)?;
        a.mov(qword_ptr(rdi), 10)?;
        a.mov(rax, 10u64)?;
        a.mov(rbx, 20u64)?;
        a.lock().cmpxchg(qword_ptr(rdi), rbx)?;
        a.mov(r8, qword_ptr(rdi))?;
        a.mov(rax, 5u64)?;
        a.cmpxchg(qword_ptr(rdi), rbx)
    });
    assert_eq!(g.reg(8), 20);
    assert_eq!(g.reg(0), 20, "failed CMPXCHG loads the accumulator");
    assert_eq!(fl & ZF, 0);

    let (g, _) = run(|a| {
        a.mov(rdi, DATA)?;
        a.mov(dword_ptr(rdi), 7)?;
        a.mov(eax, 3)?;
        a.lock().xadd(dword_ptr(rdi), eax)?;
        a.mov(ebx, 9)?;
        a.xchg(dword_ptr(rdi), ebx)?;
        a.lock().add(dword_ptr(rdi), 100)?;
        a.lock().inc(dword_ptr(rdi))
    });
    assert_eq!(g.reg(0), 7);
    assert_eq!(g.reg(3), 10);
    assert_eq!(g.bus.read_u64(DATA) & 0xffff_ffff, 110);

    let (g, fl) = run(|a| {
        a.mov(rdi, DATA)?;
        a.mov(dword_ptr(rdi), 1)?;
        a.mov(dword_ptr(rdi + 4), 2)?;
        a.mov(eax, 1)?;
        a.mov(edx, 2)?;
        a.mov(ebx, 3)?;
        a.mov(ecx, 4)?;
        a.lock().cmpxchg8b(qword_ptr(rdi))
    });
    assert_eq!(g.bus.read_u64(DATA), 0x4_0000_0003);
    assert_eq!(fl & ZF, ZF);

    let (g, fl) = run(|a| {
        a.mov(rdi, DATA)?;
        a.mov(qword_ptr(rdi), 1)?;
        a.mov(qword_ptr(rdi + 8), 2)?;
        a.mov(rax, 9u64)?;
        a.mov(rdx, 2u64)?;
        a.lock().cmpxchg16b(xmmword_ptr(rdi))
    });
    assert_eq!((g.reg(0), g.reg(2)), (1, 2));
    assert_eq!(fl & ZF, 0);
}

#[test]
fn moves_extensions_and_conditionals() {
    on_both_engines(moves_extensions_and_conditionals_on_engine);
}

fn moves_extensions_and_conditionals_on_engine() {
    let (g, _) = run(|a| {
        a.mov(rdi, DATA)?;
        a.mov(byte_ptr(rdi), 0x80u32 as i32)?;
        a.movsx(rax, byte_ptr(rdi))?;
        a.movzx(ebx, byte_ptr(rdi))?;
        a.mov(ecx, -2)?;
        a.movsxd(rdx, ecx)?;
        a.lea(rsi, qword_ptr(rdi + rbx * 2 + 0x10))?;
        a.mov(r9, 1u64)?;
        a.mov(r10, 2u64)?;
        a.cmp(r9, r10)?;
        a.cmovl(r11, r10)?;
        a.cmovg(r12, r10)?;
        a.setb(r13b)?;
        a.mov(ax, 0x1234)?;
        a.cwde()?;
        a.cdqe()?;
        a.mov(r14, rax)?;
        a.mov(eax, 0x8000_0000u32 as i32)?;
        a.cqo()
    });
    assert_eq!(g.reg(3), 0x80);
    assert_eq!(g.reg(2), 0);
    assert_eq!(g.reg(6), DATA + 0x110);
    assert_eq!(g.reg(11), 2);
    assert_eq!(g.reg(12), 0);
    assert_eq!(g.reg(13) & 0xff, 1);
    assert_eq!(g.reg(14), 0x1234);
}

#[test]
fn stack_calls_and_loops() {
    on_both_engines(stack_calls_and_loops_on_engine);
}

fn stack_calls_and_loops_on_engine() {
    let (g, _) = run(|a| {
        let mut func = a.create_label();
        let mut after = a.create_label();
        let mut lp = a.create_label();
        a.mov(rax, 0x1111u64)?;
        a.push(rax)?;
        a.push(0x22)?;
        a.pop(rbx)?;
        a.pop(rcx)?;
        a.call(func)?;
        a.jmp(after)?;
        a.set_label(&mut func)?;
        a.enter(16, 0)?;
        a.mov(qword_ptr(rbp - 8), 0x33)?;
        a.mov(rdx, qword_ptr(rbp - 8))?;
        a.leave()?;
        a.ret()?;
        a.set_label(&mut after)?;
        a.mov(ecx, 10)?;
        a.xor(esi, esi)?;
        a.set_label(&mut lp)?;
        a.add(esi, ecx)?;
        a.loop_(lp)?;
        a.pushfq()?;
        a.pop(r8)
    });
    assert_eq!((g.reg(3), g.reg(1), g.reg(2)), (0x22, 0, 0x33));
    assert_eq!(g.reg(6), 55);
    assert_eq!(g.reg(4), STACK_TOP);
    assert_eq!(g.reg(8) & 2, 2);
}

#[test]
fn rep_movsb_across_a_page_boundary() {
    on_both_engines(rep_movsb_across_a_page_boundary_on_engine);
}

fn rep_movsb_across_a_page_boundary_on_engine() {
    let src = DATA + 0xff0;
    let dst = DATA + 0x2ff8;
    let mut g = Guest::long64();
    for i in 0..64u64 {
        g.bus.load(src + i, &[i as u8 + 1]);
    }
    g.code(|a| {
        a.mov(rsi, src)?;
        a.mov(rdi, dst)?;
        a.mov(rcx, 40u64)?;
        a.cld()?;
        a.rep().movsb()?;
        a.hlt()
    });
    g.run_to_hlt();
    for i in 0..40u64 {
        assert_eq!(g.bus.read_u8(dst + i), i as u8 + 1);
    }
    assert_eq!(g.bus.read_u8(dst + 40), 0);
    assert_eq!((g.reg(6), g.reg(7), g.reg(1)), (src + 40, dst + 40, 0));
}

#[test]
fn rep_movsb_forward_overlap_replicates() {
    on_both_engines(rep_movsb_forward_overlap_replicates_on_engine);
}

fn rep_movsb_forward_overlap_replicates_on_engine() {
    let mut g = Guest::long64();
    g.bus.load(DATA, &[0xab]);
    g.code(|a| {
        a.mov(rsi, DATA)?;
        a.mov(rdi, DATA + 1)?;
        a.mov(rcx, 100u64)?;
        a.rep().movsb()?;
        a.hlt()
    });
    g.run_to_hlt();
    assert!((0..=100).all(|i| g.bus.read_u8(DATA + i) == 0xab));
}

#[test]
fn string_ops() {
    on_both_engines(string_ops_on_engine);
}

fn string_ops_on_engine() {
    let mut g = Guest::long64();
    g.bus.load(DATA, b"hello, world\0");
    g.code(|a| {
        // STOSQ fill, backwards MOVSD, REPNE SCASB strlen, REPE CMPSB.
        a.mov(rdi, DATA + 0x1000)?;
        a.mov(rax, 0x0101_0101_0101_0101u64)?;
        a.mov(rcx, 1000u64)?;
        a.rep().stosq()?;
        a.mov(rdi, DATA)?;
        a.xor(eax, eax)?;
        a.mov(rcx, 0xffff_ffff_ffff_ffffu64)?;
        a.repne().scasb()?;
        a.not(rcx)?;
        a.dec(rcx)?;
        a.mov(r8, rcx)?;
        a.mov(rsi, DATA)?;
        a.mov(rdi, DATA)?;
        a.mov(rcx, 5u64)?;
        a.repe().cmpsb()?;
        a.mov(r9, rcx)?;
        a.std()?;
        a.mov(rsi, DATA + 8)?;
        a.mov(rdi, DATA + 0x3008)?;
        a.mov(rcx, 3u64)?;
        a.rep().movsd()?;
        a.cld()?;
        a.mov(rsi, DATA)?;
        a.lodsw()?;
        a.hlt()
    });
    g.run_to_hlt();
    assert_eq!(
        g.bus.read_u64(DATA + 0x1000 + 999 * 8),
        0x0101_0101_0101_0101
    );
    assert_eq!(g.bus.read_u64(DATA + 0x1000 + 1000 * 8), 0);
    assert_eq!(g.reg(8), 12);
    assert_eq!(g.reg(9), 0);
    assert_eq!(
        &g.bus.bytes()[(DATA + 0x3000) as usize..(DATA + 0x300c) as usize],
        b"hello, world"
    );
    assert_eq!(g.reg(0) & 0xffff, u16::from_le_bytes(*b"he") as u64);
}

#[test]
fn divide_by_zero_is_delivered_through_the_idt() {
    on_both_engines(divide_by_zero_is_delivered_through_the_idt_on_engine);
}

fn divide_by_zero_is_delivered_through_the_idt_on_engine() {
    let mut g = Guest::long64();
    g.gate64(0, HANDLERS, 0, 0, false);
    g.code_at(HANDLERS, |a| {
        a.mov(r15, qword_ptr(rsp))?; // faulting RIP
        a.mov(r14, qword_ptr(rsp + 8))?; // CS
        a.hlt()
    });
    g.code(|a| {
        a.mov(rax, 1u64)?;
        a.xor(ecx, ecx)?;
        a.div(rcx)?;
        a.hlt()
    });
    g.run_to_hlt();
    // mov rax,imm64 (10 bytes) + xor ecx,ecx (2 bytes): the DIV is at +12.
    assert_eq!(g.reg(15), CODE + 12);
    assert_eq!(g.reg(14), 0x10);
    assert_eq!(g.reg(4), STACK_TOP - 40);

    // IDIV overflow is #DE too.
    let mut g = Guest::long64();
    g.gate64(0, HANDLERS, 0, 0, false);
    g.code_at(HANDLERS, |a| {
        a.mov(r15, 0xdeu64)?;
        a.hlt()
    });
    g.code(|a| {
        a.mov(eax, 0x8000_0000u32 as i32)?;
        a.cdq()?;
        a.mov(ecx, -1)?;
        a.idiv(ecx)?;
        a.hlt()
    });
    g.run_to_hlt();
    assert_eq!(g.reg(15), 0xde);
}

/// A long loop retires exactly the instructions it has (speed is measured
/// by the `guest_mips` benchmark, not here).
#[test]
fn integer_loop_retires_every_instruction() {
    on_both_engines(integer_loop_retires_every_instruction_on_engine);
}

fn integer_loop_retires_every_instruction_on_engine() {
    let mut g = Guest::long64();
    g.code(|a| {
        let mut l = a.create_label();
        a.mov(ecx, 2_000_000)?;
        a.xor(eax, eax)?;
        a.set_label(&mut l)?;
        a.add(rax, rcx)?;
        a.xor(rdx, rax)?;
        a.mov(qword_ptr(DATA), rdx)?;
        a.dec(ecx)?;
        a.jnz(l)?;
        a.hlt()
    });
    assert_eq!(g.cpu.run(&mut g.bus, u64::MAX), CpuExit::Halt);
    assert_eq!(g.cpu.instructions_retired(), 2 + 5 * 2_000_000 + 1);
}
