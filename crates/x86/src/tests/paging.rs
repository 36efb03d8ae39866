//! Paging: #PF error codes and CR2, A/D bits, WP, NX, reserved bits,
//! INVLPG and CR3 reloads.

use iced_x86::code_asm::*;
use iced_x86::IcedError;

use super::*;
use crate::mmu::pf;

const WIN: u64 = 0x40_0000; // 2 MiB window remapped with 4 KiB pages
const PD0: u64 = PML4 + 0x2000;

/// A long-mode guest whose 0x400000..0x600000 is mapped by the PT at PT:
/// page 0 not present, 1 read-only supervisor, 2 RW user, 3 NX, 4 with a
/// reserved bit, 5 → DATA, the rest identity RW.
fn paged_guest() -> Guest {
    let mut g = Guest::long64();
    g.bus.write_u64(PD0 + 2 * 8, PT | 7);
    for i in 0..512u64 {
        g.bus.write_u64(PT + i * 8, (WIN + i * 0x1000) | 7);
    }
    g.bus.write_u64(PT, 0);
    g.bus.write_u64(PT + 8, (WIN + 0x1000) | 1);
    g.bus.write_u64(PT + 16, (WIN + 0x2000) | 7);
    g.bus.write_u64(PT + 24, (WIN + 0x3000) | 3 | (1 << 63));
    g.bus.write_u64(PT + 32, (WIN + 0x4000) | 3 | (1 << 45));
    g.bus.write_u64(PT + 40, DATA | 3);
    g.gate64(14, HANDLERS, 0, 0, false);
    g.code_at(HANDLERS, |a| {
        a.mov(r14, qword_ptr(rsp))?; // error code
        a.mov(r13, cr2)?;
        a.mov(r12, qword_ptr(rsp + 8))?; // faulting RIP
        a.hlt()
    });
    g
}

fn fault(f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> (u64, u64) {
    let mut g = paged_guest();
    g.reg(0);
    g.cpu.state.gpr[14] = 0xdead;
    g.code(|a| {
        f(a)?;
        a.mov(r14, 0xdeadu64)?;
        a.hlt()
    });
    g.run_to_hlt();
    (g.reg(14), g.reg(13))
}

#[test]
fn not_present_read_and_write() {
    assert_eq!(
        fault(|a| a.mov(rax, qword_ptr(WIN + 0x10))),
        (0, WIN + 0x10)
    );
    assert_eq!(
        fault(|a| a.mov(qword_ptr(WIN + 0x18), rax)),
        (pf::W as u64, WIN + 0x18)
    );
    // A read-modify-write reports a write.
    assert_eq!(
        fault(|a| a.add(qword_ptr(WIN + 0x20), 1)),
        (pf::W as u64, WIN + 0x20)
    );
}

#[test]
fn write_to_read_only_page_honours_cr0_wp() {
    assert_eq!(
        fault(|a| a.mov(byte_ptr(WIN + 0x1001), 1)),
        ((pf::P | pf::W) as u64, WIN + 0x1001)
    );
    // With WP clear, the supervisor may write read-only pages.
    let mut g = paged_guest();
    g.code(|a| {
        a.mov(rax, cr0)?;
        a.and(eax, !(1 << 16))?;
        a.mov(cr0, rax)?;
        a.mov(byte_ptr(WIN + 0x1001), 0x5a)?;
        a.hlt()
    });
    g.run_to_hlt();
    assert_eq!(g.bus.read_u8(WIN + 0x1001), 0x5a);
}

#[test]
fn nx_fetch_and_reserved_bits() {
    let (err, addr) = fault(|a| {
        a.mov(rax, WIN + 0x3000)?;
        a.jmp(rax)
    });
    assert_eq!((err, addr), ((pf::P | pf::ID) as u64, WIN + 0x3000));
    assert_eq!(
        fault(|a| a.mov(rax, qword_ptr(WIN + 0x4000))),
        ((pf::P | pf::RSVD) as u64, WIN + 0x4000)
    );
}

#[test]
fn user_access_to_supervisor_page() {
    let mut g = paged_guest();
    g.code(|a| {
        let mut user = a.create_label();
        a.push(0x23)?;
        a.push(0x5_0000)?;
        a.push(0x2)?;
        a.push(0x2b)?;
        a.lea(rax, ptr(user))?;
        a.push(rax)?;
        a.iretq()?;
        a.set_label(&mut user)?;
        a.mov(rbx, qword_ptr(WIN + 0x2000))?; // user page: fine
        a.mov(rbx, qword_ptr(WIN + 0x1008))?; // supervisor page
        a.hlt()
    });
    g.run_to_hlt();
    assert_eq!(g.reg(14), (pf::P | pf::U) as u64);
    assert_eq!(g.reg(13), WIN + 0x1008);
}

#[test]
fn accessed_and_dirty_bits() {
    let mut g = paged_guest();
    g.code(|a| {
        a.mov(rax, qword_ptr(WIN + 0x6000))?;
        a.mov(qword_ptr(WIN + 0x7000), rax)?;
        a.hlt()
    });
    g.run_to_hlt();
    assert_eq!(g.bus.read_u64(PT + 6 * 8) & 0x60, 0x20);
    assert_eq!(g.bus.read_u64(PT + 7 * 8) & 0x60, 0x60);
    assert_eq!(g.bus.read_u64(PD0 + 2 * 8) & 0x20, 0x20);
}

#[test]
fn invlpg_and_cr3_reload_pick_up_new_mappings() {
    let mut g = paged_guest();
    g.bus.write_u64(DATA, 0x1111);
    g.bus.write_u64(DATA + 0x1000, 0x2222);
    g.code(|a| {
        a.mov(rax, qword_ptr(WIN + 0x5000))?;
        // Point page 5 at DATA + 0x1000.
        a.mov(rdi, PT + 40)?;
        a.mov(rbx, (DATA + 0x1000) | 3)?;
        a.mov(qword_ptr(rdi), rbx)?;
        a.invlpg(byte_ptr(WIN + 0x5000))?;
        a.mov(rcx, qword_ptr(WIN + 0x5000))?;
        // And back, with a CR3 reload.
        a.mov(rbx, DATA | 3)?;
        a.mov(qword_ptr(rdi), rbx)?;
        a.mov(rdx, cr3)?;
        a.mov(cr3, rdx)?;
        a.mov(rdx, qword_ptr(WIN + 0x5000))?;
        a.hlt()
    });
    g.run_to_hlt();
    assert_eq!((g.reg(0), g.reg(1), g.reg(2)), (0x1111, 0x2222, 0x1111));
}

#[test]
fn page_fault_while_pushing_the_frame_is_a_double_fault() {
    let mut g = paged_guest();
    g.gate64(8, HANDLERS + 0x100, 1, 0, false);
    g.code_at(HANDLERS + 0x100, |a| {
        a.mov(r15, 0xdfu64)?;
        a.hlt()
    });
    g.gate64(13, HANDLERS, 0, 0, false);
    // RSP in the not-present page: #GP delivery faults with #PF → #DF.
    g.code(|a| {
        a.mov(rsp, WIN + 0x800)?;
        a.mov(rax, 0x8000_0000_0000_0000u64)?;
        a.mov(rax, qword_ptr(rax))?;
        a.hlt()
    });
    g.run_to_hlt();
    assert_eq!(g.reg(15), 0xdf);
}

/// Calls `target` 300 times (hot enough to be compiled and chained),
/// keeping the last EAX in R8; then `remap`, then calls it once more
/// (EAX in R9).
fn call_remap_call(
    g: &mut Guest,
    target: u64,
    remap: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) {
    g.code(|a| {
        let mut top = a.create_label();
        a.mov(ecx, 300u32)?;
        a.set_label(&mut top)?;
        a.mov(rax, target)?;
        a.call(rax)?;
        a.mov(r8, rax)?;
        a.dec(ecx)?;
        a.jnz(top)?;
        remap(a)?;
        a.mov(rax, target)?;
        a.call(rax)?;
        a.mov(r9, rax)?;
        a.hlt()
    });
}

#[test]
fn invlpg_of_a_code_page_runs_the_new_mapping() {
    super::on_both_engines(|| {
        // A 4 KiB page of code (WIN + 0x6000) remapped to another page.
        let mut g = paged_guest();
        let (old, new) = (WIN + 0x6000, WIN + 0x7000);
        g.code_at(old, |a| {
            a.mov(eax, 1u32)?;
            a.ret()
        });
        g.code_at(new, |a| {
            a.mov(eax, 2u32)?;
            a.ret()
        });
        call_remap_call(&mut g, old, |a| {
            a.mov(rdi, PT + 6 * 8)?;
            a.mov(rbx, new | 3)?;
            a.mov(qword_ptr(rdi), rbx)?;
            // An INVLPG of a data page first: no effect on the code.
            a.invlpg(byte_ptr(WIN + 0x5000))?;
            a.mov(rax, old)?;
            a.call(rax)?;
            a.mov(r10, rax)?;
            a.invlpg(byte_ptr(old))
        });
        g.run_to_hlt();
        // Before the INVLPG of the code page the old translation may still
        // be cached (it is here); after it, the new one runs.
        assert_eq!((g.reg(8), g.reg(9)), (1, 2));
        assert_eq!(g.reg(10), 1);

        // A 2 MiB page of code remapped, invalidated through another
        // 4 KiB page inside it: the whole large page's translation goes.
        let mut g = Guest::long64();
        let (old, new) = (0x80_0000u64, 0xa0_0000u64);
        g.code_at(old, |a| {
            a.mov(eax, 3u32)?;
            a.ret()
        });
        g.code_at(new, |a| {
            a.mov(eax, 4u32)?;
            a.ret()
        });
        call_remap_call(&mut g, old, |a| {
            a.mov(rdi, PD0 + 4 * 8)?;
            a.mov(rbx, new | 0x83)?;
            a.mov(qword_ptr(rdi), rbx)?;
            a.invlpg(byte_ptr(old + 0x1000))
        });
        g.run_to_hlt();
        assert_eq!((g.reg(8), g.reg(9)), (3, 4));
    });
}

/// A loop of two blocks compiled as one region (`jit::region`) remaps
/// its own code page (a PTE write and an INVLPG, which moves the chain
/// key): the next block runs the new page's code, not the region's copy
/// of the old one, on both engines.
#[test]
fn a_region_that_remaps_its_own_page_runs_the_new_code() {
    super::on_both_engines(|| {
        let mut g = paged_guest();
        let (old, new) = (WIN + 0x6000, WIN + 0x7000);
        // The same loop in both pages but for what `b` adds to r9.
        let program = |add: i32| {
            move |a: &mut CodeAssembler| -> Result<(), IcedError> {
                let (mut top, mut b) = (a.create_label(), a.create_label());
                a.set_label(&mut top)?;
                a.add(r8, 1)?;
                a.cmp(r8, 300)?;
                a.jne(b)?;
                a.mov(rdi, PT + 6 * 8)?;
                a.mov(rbx, new | 3)?;
                a.mov(qword_ptr(rdi), rbx)?;
                a.invlpg(byte_ptr(old))?;
                a.jmp(b)?;
                a.set_label(&mut b)?;
                a.add(r9, add)?;
                a.cmp(r8, 600)?;
                a.jne(top)?;
                a.hlt()
            }
        };
        g.code_at(old, program(1));
        g.code_at(new, program(100));
        g.code(|a| {
            a.mov(rax, old)?;
            a.jmp(rax)
        });
        g.run_to_hlt();
        assert_eq!(g.reg(8), 600);
        assert_eq!(
            g.reg(9),
            299 + 301 * 100,
            "b after the remap ran the new page"
        );
    });
}
