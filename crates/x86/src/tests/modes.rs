//! Modes and transitions: real → protected → long mode, compatibility
//! mode, segment-load checks, self-modifying code.

use iced_x86::code_asm::*;

use super::*;
use crate::Mode;

const REAL_CODE: u64 = 0x7c00;
const PM32_CODE: u64 = 0x2_0000;
const LM64_CODE: u64 = 0x3_0000;

fn far_ptr_bytes(prefix: &[u8], off: u32, sel: u16) -> Vec<u8> {
    let mut v = prefix.to_vec();
    v.push(0xea);
    v.extend_from_slice(&off.to_le_bytes());
    v.extend_from_slice(&sel.to_le_bytes());
    v
}

#[test]
fn real_to_protected_to_long_mode() {
    let mut bus = TestBus::new();
    setup_tables(&mut bus);
    // GDTR image for LGDT at 0x600.
    bus.load(0x600, &0x3fu16.to_le_bytes());
    bus.load(0x602, &(GDT as u32).to_le_bytes());
    let mut real = asm(16, REAL_CODE, |a| {
        a.cli()?;
        a.xor(ax, ax)?;
        a.mov(ds, ax)?;
        a.lgdt(ptr(0x600u64))?;
        a.mov(eax, cr0)?;
        a.or(eax, 1)?;
        a.mov(cr0, eax)
    });
    // jmp dword 0x08:PM32_CODE
    real.extend(far_ptr_bytes(&[0x66], PM32_CODE as u32, 0x08));
    bus.load(REAL_CODE, &real);
    let mut pm = asm(32, PM32_CODE, |a| {
        a.mov(ax, 0x18)?;
        a.mov(ds, ax)?;
        a.mov(es, ax)?;
        a.mov(ss, ax)?;
        a.mov(esp, 0x8_0000)?;
        a.mov(dword_ptr(0x9_0000), 0x1234_5678)?;
        a.mov(eax, PML4 as i32)?;
        a.mov(cr3, eax)?;
        a.mov(eax, cr4)?;
        a.or(eax, 0x20)?;
        a.mov(cr4, eax)?;
        a.mov(ecx, 0xc000_0080u32 as i32)?;
        a.rdmsr()?;
        a.or(eax, 0x100)?;
        a.wrmsr()?;
        a.mov(eax, cr0)?;
        a.or(eax, 0x8000_0000u32 as i32)?;
        a.mov(cr0, eax)
    });
    pm.extend(far_ptr_bytes(&[], LM64_CODE as u32, 0x10));
    bus.load(PM32_CODE, &pm);
    let lm = asm64(LM64_CODE, |a| {
        a.mov(rax, 0x1122_3344_5566_7788u64)?;
        a.mov(ebx, dword_ptr(0x9_0000))?;
        a.push(rax)?;
        a.pop(rcx)?;
        a.hlt()
    });
    bus.load(LM64_CODE, &lm);

    let mut cpu = Cpu::default();
    assert_eq!(cpu.state.mode, Mode::Real);
    cpu.state.seg[CS] = SegCache::real(0, true);
    cpu.state.rip = REAL_CODE;
    cpu.state_changed();
    let e = cpu.run(&mut bus, 1000);
    assert_eq!(
        e,
        CpuExit::Halt,
        "rip={:#x} mode={:?}",
        cpu.state.rip,
        cpu.state.mode
    );
    assert_eq!(cpu.state.mode, Mode::Long);
    assert_eq!(cpu.state.seg[CS].selector, 0x10);
    assert!(cpu.state.efer & efer::LMA != 0);
    assert_eq!(cpu.state.gpr[0], 0x1122_3344_5566_7788);
    assert_eq!(cpu.state.gpr[1], 0x1122_3344_5566_7788);
    assert_eq!(cpu.state.gpr[3], 0x1234_5678);
    assert_eq!(cpu.state.gpr[4], 0x8_0000);
}

/// A CPU in real mode at 0000:REAL_CODE.
fn real_mode_cpu() -> Cpu {
    let mut cpu = Cpu::default();
    cpu.state.seg[CS] = SegCache::real(0, true);
    cpu.state.rip = REAL_CODE;
    cpu.state_changed();
    cpu
}

#[test]
fn real_mode_interrupts_use_the_ivt() {
    let mut bus = TestBus::new();
    // IVT entry 0x21 → 0000:0x9000
    bus.load(0x21 * 4, &[0x00, 0x90, 0x00, 0x00]);
    let handler = asm(16, 0x9000, |a| {
        a.mov(bx, 0x77)?;
        a.iret()
    });
    bus.load(0x9000, &handler);
    let code = asm(16, REAL_CODE, |a| {
        a.mov(sp, 0x7000)?;
        a.int(0x21)?;
        a.mov(cx, 0x55)?;
        a.hlt()
    });
    bus.load(REAL_CODE, &code);
    let mut cpu = real_mode_cpu();
    assert_eq!(cpu.run(&mut bus, 100), CpuExit::Halt);
    assert_eq!(cpu.state.gpr[3], 0x77);
    assert_eq!(cpu.state.gpr[1], 0x55);
    assert_eq!(cpu.state.gpr[4], 0x7000);
}

#[test]
fn xlat_indexes_with_al_alone_and_wraps_with_the_address_size() {
    super::on_both_engines(|| {
        // 16-bit: DS:(BX + AL) wraps at 64 KiB; the bits of EAX above AL
        // take no part.
        let mut bus = TestBus::new();
        bus.load(0x10, &[0x5a]);
        bus.load(0x1_0010, &[0xee]);
        let code = asm(16, REAL_CODE, |a| {
            a.mov(eax, 0x1234_5620u32)?;
            a.mov(bx, 0xfff0u32)?;
            a.xlatb()?;
            a.hlt()
        });
        bus.load(REAL_CODE, &code);
        let mut cpu = real_mode_cpu();
        assert_eq!(cpu.run(&mut bus, 100), CpuExit::Halt);
        assert_eq!(cpu.state.gpr[0] & 0xffff_ffff, 0x1234_565a);

        // 64-bit: RBX + zero-extended AL.
        let mut g = Guest::long64();
        g.bus.load(0x30ff, &[0x77]);
        g.code(|a| {
            a.mov(rax, 0x1111_2222_3333_44ffu64)?;
            a.mov(rbx, 0x3000u64)?;
            a.xlatb()?;
            a.hlt()
        });
        g.run_to_hlt();
        assert_eq!(g.reg(0), 0x1111_2222_3333_4477);
    });
}

#[test]
fn a_fault_loop_that_retires_nothing_ends_at_the_budget() {
    super::on_both_engines(|| {
        let mut bus = TestBus::new();
        // #UD's IVT entry points at the UD2 that raises it: every round
        // delivers #UD and retires nothing, for ever (the real-mode stack
        // wraps inside its own segment, away from the code and the IVT).
        bus.load(6 * 4, &[0x00, 0x7c, 0x00, 0x00]);
        bus.load(REAL_CODE, &[0x0f, 0x0b]);
        let mut cpu = real_mode_cpu();
        cpu.state.seg[SS] = SegCache::real(0x1000, false);
        cpu.state.gpr[4] = 0x7000;
        cpu.state_changed();
        let i0 = cpu.icount;
        assert_eq!(cpu.run(&mut bus, 100), CpuExit::InstructionLimit);
        assert_eq!(cpu.icount, i0);
        assert_eq!(cpu.state.rip, REAL_CODE);
    });
}

#[test]
fn compatibility_mode_round_trip() {
    let mut g = Guest::long64();
    let compat = 0x4_0000u64;
    let mut code32 = asm(32, compat, |a| {
        a.mov(eax, 0xffff_ffffu32 as i32)?;
        a.add(eax, 2)?; // wraps in 32 bits
        a.mov(ebx, esp)
    });
    code32.extend(far_ptr_bytes(&[], 0x5_0000, 0x10));
    g.bus.load(compat, &code32);
    g.code_at(0x5_0000, |a| {
        a.mov(r8, 0x64u64)?;
        a.hlt()
    });
    g.code(|a| {
        a.push(0x08)?;
        a.push(compat as i32)?;
        a.db(&[0x48, 0xcb])
    });
    g.run_to_hlt();
    assert_eq!(g.reg(0), 1);
    assert_eq!(g.reg(3), STACK_TOP);
    assert_eq!(g.reg(8), 0x64);
    assert_eq!(g.cpu.state.mode, Mode::Long);
}

#[test]
fn segment_loads_are_checked() {
    // MOV SS with RPL != CPL → #GP(selector).
    let mut g = Guest::long64();
    g.gate64(13, HANDLERS, 0, 0, false);
    g.gate64(11, HANDLERS + 0x100, 0, 0, false);
    g.code_at(HANDLERS, |a| {
        a.mov(r15, qword_ptr(rsp))?;
        a.hlt()
    });
    g.code_at(HANDLERS + 0x100, |a| {
        a.mov(r14, qword_ptr(rsp))?;
        a.hlt()
    });
    g.code(|a| {
        a.mov(ax, 0x23)?;
        a.mov(ss, ax)?;
        a.hlt()
    });
    g.run_to_hlt();
    assert_eq!(g.reg(15), 0x20);

    // Beyond the GDT limit.
    let mut g2 = Guest::long64();
    g2.gate64(13, HANDLERS, 0, 0, false);
    g2.code_at(HANDLERS, |a| {
        a.mov(r15, qword_ptr(rsp))?;
        a.hlt()
    });
    g2.code(|a| {
        a.mov(ax, 0x48)?;
        a.mov(ds, ax)?;
        a.hlt()
    });
    g2.run_to_hlt();
    assert_eq!(g2.reg(15), 0x48);

    // Not present → #NP(selector).
    let mut g3 = Guest::long64();
    g3.bus.write_u64(GDT + 0x20, 0x00cf_7300_0000_ffff);
    g3.gate64(11, HANDLERS, 0, 0, false);
    g3.code_at(HANDLERS, |a| {
        a.mov(r15, qword_ptr(rsp))?;
        a.hlt()
    });
    g3.code(|a| {
        a.mov(ax, 0x23)?;
        a.mov(es, ax)?;
        a.hlt()
    });
    g3.run_to_hlt();
    assert_eq!(g3.reg(15), 0x20);

    // Null selectors are fine for data segments.
    let mut g4 = Guest::long64();
    g4.code(|a| {
        a.xor(eax, eax)?;
        a.mov(ds, ax)?;
        a.mov(es, ax)?;
        a.mov(rbx, qword_ptr(DATA))?;
        a.hlt()
    });
    g4.run_to_hlt();
    assert!(g4.cpu.state.seg[DS].unusable());
}

#[test]
fn self_modifying_code_runs_the_new_bytes() {
    // Patch an instruction in an already executed block.
    let mut g = Guest::long64();
    g.code(|a| {
        let mut top = a.create_label();
        let mut done = a.create_label();
        a.xor(ebx, ebx)?;
        a.xor(ecx, ecx)?;
        a.set_label(&mut top)?;
        a.mov(eax, 1)?;
        a.add(ebx, eax)?;
        a.inc(ecx)?;
        a.cmp(ecx, 2)?;
        a.je(done)?;
        a.lea(rdi, ptr(top))?;
        a.mov(byte_ptr(rdi + 1), 0x42)?;
        a.jmp(top)?;
        a.set_label(&mut done)?;
        a.hlt()
    });
    g.run_to_hlt();
    assert_eq!(g.reg(3), 0x43);

    // Patch the very next instruction of the current block.
    let mut g = Guest::long64();
    g.code(|a| {
        let mut next = a.create_label();
        a.lea(rdi, ptr(next))?;
        a.mov(byte_ptr(rdi + 1), 0x42)?;
        a.set_label(&mut next)?;
        a.mov(eax, 0)?;
        a.hlt()
    });
    g.run_to_hlt();
    assert_eq!(g.reg(0), 0x42);
    assert!(g.cpu.blocks.invalidated >= 1);
}

#[test]
fn protected_mode_with_32bit_paging_and_4mib_pages() {
    let mut bus = TestBus::new();
    setup_tables(&mut bus);
    // Page directory at 0x4_0000: 4 MiB identity pages, and 0x8000_0000 → 0.
    let pd = 0x4_0000u64;
    for i in 0..4u64 {
        bus.load(pd + i * 4, &(((i << 22) | 0x83) as u32).to_le_bytes());
    }
    bus.load(pd + 0x200 * 4, &0x83u32.to_le_bytes());
    bus.load(0x1234, &0xabcdu16.to_le_bytes());
    let code = asm(32, PM32_CODE, |a| {
        a.mov(eax, pd as i32)?;
        a.mov(cr3, eax)?;
        a.mov(eax, 0x10)?; // PSE
        a.mov(cr4, eax)?;
        a.mov(eax, cr0)?;
        a.or(eax, 0x8000_0000u32 as i32)?;
        a.mov(cr0, eax)?;
        a.movzx(ebx, word_ptr(0x8000_1234u32 as i32))?;
        a.hlt()
    });
    bus.load(PM32_CODE, &code);
    let mut cpu = Cpu::default();
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
    s.rip = PM32_CODE;
    s.gpr[4] = STACK_TOP;
    cpu.state_changed();
    assert_eq!(cpu.state.code_bits, 32);
    assert_eq!(cpu.run(&mut bus, 100), CpuExit::Halt);
    assert_eq!(cpu.state.gpr[3], 0xabcd);
    // The 4 MiB PDE got its accessed bit.
    assert_eq!(bus.read_u64(pd + 0x200 * 4) & 0x20, 0x20);
}

#[test]
fn pae_paging_in_protected_mode_with_nx() {
    let mut bus = TestBus::new();
    setup_tables(&mut bus);
    let pdpt = 0x4_0000u64;
    let pd = 0x4_1000u64;
    bus.write_u64(pdpt, pd | 1);
    for i in 0..512u64 {
        bus.write_u64(pd + i * 8, (i << 21) | 0x83);
    }
    // 0x00400000 maps to 0x00200000, not executable.
    bus.write_u64(pd + 2 * 8, 0x20_0000 | 0x83 | (1 << 63));
    bus.load(0x20_0010, &0x77u32.to_le_bytes());
    let code = asm(32, PM32_CODE, |a| {
        a.mov(eax, pdpt as i32)?;
        a.mov(cr3, eax)?;
        a.mov(eax, 0x20)?; // PAE
        a.mov(cr4, eax)?;
        a.mov(ecx, 0xc000_0080u32 as i32)?;
        a.rdmsr()?;
        a.or(eax, 0x800)?; // NXE
        a.wrmsr()?;
        a.mov(eax, cr0)?;
        a.or(eax, 0x8000_0000u32 as i32)?;
        a.mov(cr0, eax)?;
        a.mov(ebx, dword_ptr(0x40_0010))?;
        a.mov(eax, 0x40_0000)?;
        a.jmp(eax)
    });
    bus.load(PM32_CODE, &code);
    // #PF handler through a 32-bit interrupt gate.
    let idt = 0x4_2000u64;
    let handler = 0x4_3000u64;
    let gate = (handler & 0xffff) | (0x08 << 16) | (0x8eu64 << 40) | ((handler >> 16) << 48);
    bus.write_u64(idt + 14 * 8, gate);
    let h = asm(32, handler, |a| {
        a.pop(esi)?; // error code
        a.mov(edi, cr2)?;
        a.hlt()
    });
    bus.load(handler, &h);
    let mut cpu = Cpu::default();
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
    s.idtr = TableReg {
        base: idt,
        limit: 0x7ff,
    };
    s.rip = PM32_CODE;
    s.gpr[4] = STACK_TOP;
    cpu.state_changed();
    assert_eq!(cpu.run(&mut bus, 100), CpuExit::Halt);
    assert_eq!(cpu.state.gpr[3], 0x77);
    assert_eq!(cpu.state.gpr[6], 0x11, "P | I/D");
    assert_eq!(cpu.state.gpr[7], 0x40_0000);
}

#[test]
fn one_gib_pages_and_global_entries() {
    let mut g = Guest::long64();
    // PDPT[3]: 0xC000_0000 → 0 as a 1 GiB page.
    g.bus.write_u64(PML4 + 0x1000 + 3 * 8, 0x87);
    g.bus.write_u64(0x1238, 0x5555);
    // A global 2 MiB page at 0x0080_0000 (PD0[4]) → DATA's 2 MiB frame.
    let pd0 = PML4 + 0x2000;
    g.bus.write_u64(pd0 + 4 * 8, 0x20_0000 | 0x83 | 0x100);
    g.bus.write_u64(0x20_5040, 0x6666);
    g.code(|a| {
        a.mov(rax, 0xc000_1238u64)?;
        a.mov(rbx, qword_ptr(rax))?;
        a.mov(rax, cr4)?;
        a.or(eax, 0x80)?; // PGE
        a.mov(cr4, rax)?;
        a.mov(rcx, qword_ptr(0x80_5040))?;
        // Remap the global page; a CR3 reload keeps the global entry.
        a.mov(rdi, pd0 + 4 * 8)?;
        a.mov(qword_ptr(rdi), 0x83)?;
        a.mov(rax, cr3)?;
        a.mov(cr3, rax)?;
        a.mov(rdx, qword_ptr(0x80_5040))?;
        // INVLPG drops it.
        a.invlpg(byte_ptr(0x80_5040))?;
        a.mov(rsi, qword_ptr(0x80_5040))?;
        a.hlt()
    });
    g.bus.write_u64(0x5040, 0x7777);
    g.run_to_hlt();
    assert_eq!(g.reg(3), 0x5555);
    assert_eq!(g.reg(1), 0x6666);
    assert_eq!(g.reg(2), 0x6666);
    assert_eq!(g.reg(6), 0x7777);
}

#[test]
fn protected_mode_privilege_change_uses_the_32bit_tss() {
    let mut bus = TestBus::new();
    let gdt = 0x4_0000u64;
    let tss = 0x4_1000u64;
    let idt = 0x4_2000u64;
    let entries = [
        0u64,
        0x00cf_9b00_0000_ffff, // 0x08 code32 DPL0
        0,
        0x00cf_9300_0000_ffff,       // 0x18 data DPL0
        0x00cf_fb00_0000_ffff,       // 0x20 user code32 (0x23)
        0x00cf_f300_0000_ffff,       // 0x28 user data (0x2b)
        tss_descriptor(tss, 0x67).0, // 0x30 TSS
    ];
    for (i, e) in entries.iter().enumerate() {
        bus.write_u64(gdt + i as u64 * 8, *e);
    }
    bus.load(tss + 4, &0x7_0000u32.to_le_bytes()); // ESP0
    bus.load(tss + 8, &0x18u32.to_le_bytes()); // SS0
    let handler = 0x4_3000u64;
    let gate = (handler & 0xffff) | (0x08 << 16) | (0xeeu64 << 40) | ((handler >> 16) << 48);
    bus.write_u64(idt + 0x80 * 8, gate);
    let h = asm(32, handler, |a| {
        a.mov(esi, esp)?;
        a.mov(edi, dword_ptr(esp + 12))?; // user ESP
        a.mov(ebp, dword_ptr(esp + 16))?; // user SS
        a.iretd()
    });
    bus.load(handler, &h);
    let user = 0x4_4000u64;
    let code = asm(32, PM32_CODE, |a| {
        a.mov(ax, 0x30)?;
        a.ltr(ax)?;
        a.push(0x2b)?;
        a.push(0x5_0000)?;
        a.push(0x202)?;
        a.push(0x23)?;
        a.push(user as i32)?;
        a.iretd()
    });
    bus.load(PM32_CODE, &code);
    let code = asm(32, user, |a| {
        a.mov(ebx, 0x1234)?;
        a.int(0x80)?;
        a.mov(ecx, esp)?;
        let mut spin = a.create_label();
        a.set_label(&mut spin)?;
        a.jmp(spin)
    });
    bus.load(user, &code);
    let mut cpu = Cpu::default();
    let s = &mut cpu.state;
    s.cr0 = cr0::PE | cr0::ET;
    s.seg[CS] = SegCache::from_descriptor(0x08, entries[1]);
    for r in [DS, ES, SS, FS, GS] {
        s.seg[r] = SegCache::from_descriptor(0x18, entries[3]);
    }
    s.gdtr = TableReg {
        base: gdt,
        limit: 0x37,
    };
    s.idtr = TableReg {
        base: idt,
        limit: 0x7ff,
    };
    s.rip = PM32_CODE;
    s.gpr[4] = STACK_TOP;
    cpu.state_changed();
    assert_eq!(cpu.run(&mut bus, 50), CpuExit::InstructionLimit);
    assert_eq!(cpu.state.gpr[6], 0x7_0000 - 20);
    assert_eq!(cpu.state.gpr[7], 0x5_0000);
    assert_eq!(cpu.state.gpr[5], 0x2b);
    assert_eq!(cpu.state.gpr[1], 0x5_0000);
    assert_eq!(cpu.state.cpl, 3);
    assert_eq!(cpu.state.seg[CS].selector, 0x23);
    // LTR marked the TSS busy.
    assert_eq!((bus.read_u64(gdt + 0x30) >> 40) & 0xf, 0xb);
}

#[test]
fn code_written_by_another_cpu_is_seen_after_a_block_boundary() {
    use std::sync::Arc;
    // CPU A runs a loop at CODE that counts in RBX; CPU B patches the
    // loop's immediate. Both share one bus (run alternately) and a CodeShare.
    let mut g = Guest::long64();
    let share = Arc::new(crate::CodeShare::new());
    g.cpu.set_code_share(share.clone());
    g.code(|a| {
        let mut top = a.create_label();
        a.set_label(&mut top)?;
        a.add(rbx, 1)?; // 48 83 c3 01: the immediate is at CODE + 3
        a.jmp(top)
    });
    let mut b = Cpu::default();
    b.set_code_share(share.clone());
    b.state = g.cpu.state.clone();
    b.state.rip = HANDLERS;
    b.state_changed();
    g.code_at(HANDLERS, |a| {
        // Write once to a code page before it is code... then again after.
        a.mov(byte_ptr(CODE + 3), 1)?;
        a.hlt()?;
        a.mov(byte_ptr(CODE + 3), 5)?;
        a.hlt()
    });
    // B writes first (fast write access to the page is cached in B's TLB).
    assert_eq!(b.run(&mut g.bus, 100), CpuExit::Halt);
    // A runs the loop: the page becomes code.
    assert_eq!(g.cpu.run(&mut g.bus, 1000), CpuExit::InstructionLimit);
    assert_eq!(g.reg(3), 500);
    // B patches the immediate: its write access was revoked, so the write
    // is seen by the share.
    b.state.halted = false;
    assert_eq!(b.run(&mut g.bus, 100), CpuExit::Halt);
    assert_eq!(g.bus.read_u8(CODE + 3), 5);
    g.cpu.state.gpr[3] = 0;
    assert_eq!(g.cpu.run(&mut g.bus, 1000), CpuExit::InstructionLimit);
    assert_eq!(g.reg(3), 2500);
}

/// Outside 64-bit mode a block is found by its physical address too: the
/// same IP in another code segment is other code.
#[test]
fn same_ip_in_two_real_mode_segments_is_two_blocks() {
    let mut bus = TestBus::new();
    // 1000:0000: AX = 1, then JMP FAR 2000:0000.
    let mut first = asm(16, 0, |a| a.mov(ax, 1u32));
    first.extend([0xea, 0, 0, 0x00, 0x20]);
    bus.load(0x1_0000, &first);
    // 2000:0000: BX = 2, HLT.
    let second = asm(16, 0, |a| {
        a.mov(bx, 2u32)?;
        a.hlt()
    });
    bus.load(0x2_0000, &second);
    let mut cpu = Cpu::default();
    cpu.state.seg[CS] = SegCache::real(0x1000, true);
    cpu.state.rip = 0;
    cpu.state_changed();
    assert_eq!(cpu.run(&mut bus, 1000), CpuExit::Halt);
    assert_eq!(cpu.state.gpr[0] & 0xffff, 1);
    assert_eq!(cpu.state.gpr[3] & 0xffff, 2);
    assert_eq!(cpu.state.seg[CS].selector, 0x2000);
}
