//! SMEP, SMAP (with STAC/CLAC and implicit supervisor accesses), protection
//! keys (PKU with RDPKRU/WRPKRU, PKS with IA32_PKRS), UMIP, PCID and
//! INVPCID, and the CPUID gating of all of them.

use hv::CpuidEntry;
use iced_x86::code_asm::*;
use iced_x86::IcedError;

use super::*;
use crate::exception::{GP, PF, UD};
use crate::mmu::pf;
use crate::msr::IA32_PKRS;

/// A 2 MiB window mapped with 4 KiB user pages (PT at PT); everything
/// else (code, stack, tables, handlers, DATA) is supervisor-only, but for
/// a user alias of the first 2 MiB at ALIAS.
const WIN: u64 = 0x40_0000;
const ALIAS: u64 = 0x60_0000;
const PD0: u64 = PML4 + 0x2000;
/// Where handlers record what they saw: vector, error code, RIP, CR2.
const REC: u64 = DATA;

/// A long-mode guest with supervisor low memory, the user window at WIN
/// (page i maps WIN + i * 4096), and handlers for #UD, #GP and #PF that
/// record the exception at REC and skip to the address in R15.
fn guest() -> Guest {
    let mut g = Guest::long64();
    for j in 0..3u64 {
        g.bus.write_u64(PD0 + j * 8, (j << 21) | 0x83);
    }
    g.bus.write_u64(PD0 + 2 * 8, PT | 7);
    // A user alias of the first 2 MiB (code and all) for CPL-3 code.
    g.bus.write_u64(PD0 + 3 * 8, 0x87);
    for i in 0..512u64 {
        g.bus.write_u64(PT + i * 8, (WIN + i * 0x1000) | 7);
    }
    // The GDT pointer handlers reload (a test may have moved the GDT).
    g.bus.load(DATA + 0x7f6, &0x3fu16.to_le_bytes());
    g.bus.write_u64(DATA + 0x7f8, GDT);
    for (v, off) in [(UD, 0x000u64), (GP, 0x100), (PF, 0x200)] {
        g.gate64(v, HANDLERS + off, 0, 0, false);
        g.code_at(HANDLERS + off, |a| {
            a.mov(qword_ptr(REC), v as i32)?;
            if v != UD {
                a.pop(rax)?;
                a.mov(qword_ptr(REC + 8), rax)?;
            }
            a.mov(rax, cr2)?;
            a.mov(qword_ptr(REC + 24), rax)?;
            a.mov(rax, qword_ptr(rsp))?;
            a.mov(qword_ptr(REC + 16), rax)?;
            // Resume at R15 at CPL 0.
            a.mov(qword_ptr(rsp), r15)?;
            a.mov(qword_ptr(rsp + 8), 0x10)?;
            a.mov(qword_ptr(rsp + 16), 2)?;
            a.mov(qword_ptr(rsp + 24), (STACK_TOP - 0x100) as i32)?;
            a.mov(qword_ptr(rsp + 32), 0x18)?;
            a.lgdt(ptr(DATA + 0x7f6))?;
            a.iretq()
        });
    }
    g
}

/// Runs `body` at CPL 0 with R15 pointing after it; returns (vector,
/// error code) of the exception it raised, or None.
fn run(
    g: &mut Guest,
    body: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> Option<(u8, u64)> {
    g.bus.write_u64(REC, 0xff);
    g.cpu.state.rip = CODE;
    g.cpu.state.gpr[4] = STACK_TOP;
    g.cpu.state.halted = false;
    g.cpu.flush_code();
    g.code(|a| {
        let mut done = a.create_label();
        a.lea(r15, ptr(done))?;
        body(a)?;
        a.set_label(&mut done)?;
        a.hlt()
    });
    g.run_to_hlt();
    let v = g.bus.read_u64(REC);
    (v != 0xff).then(|| (v as u8, g.bus.read_u64(REC + 8)))
}

fn set_cr4(a: &mut CodeAssembler, bits: u64) -> Result<(), IcedError> {
    a.mov(rax, cr4)?;
    a.mov(rcx, bits)?;
    a.or(rax, rcx)?;
    a.mov(cr4, rax)
}

/// Enters CPL 3 at the code that follows, through its user alias (user
/// stack in the window).
fn to_user(a: &mut CodeAssembler) -> Result<(), IcedError> {
    let mut user = a.create_label();
    a.push(0x23)?;
    a.push((WIN + 0x8000) as i32)?;
    a.pushfq()?;
    a.push(0x2b)?;
    a.lea(rax, ptr(user))?;
    a.add(rax, ALIAS as i32)?;
    a.push(rax)?;
    a.iretq()?;
    a.set_label(&mut user)
}

#[test]
fn smep_faults_supervisor_fetches_from_user_pages() {
    let mut g = guest();
    g.code_at(WIN + 0x3000, |a| a.ret());
    assert_eq!(
        run(&mut g, |a| {
            a.mov(rax, WIN + 0x3000)?;
            a.call(rax)
        }),
        None
    );
    let r = run(&mut g, |a| {
        set_cr4(a, cr4::SMEP)?;
        a.mov(rax, WIN + 0x3000)?;
        a.call(rax)
    });
    // I/D is reported with SMEP even where NX would not report it.
    assert_eq!(r, Some((PF, (pf::P | pf::ID) as u64)));
    assert_eq!(g.bus.read_u64(REC + 24), WIN + 0x3000);
}

#[test]
fn smap_blocks_supervisor_data_access_unless_ac() {
    let mut g = guest();
    g.bus.write_u64(WIN + 0x1000, 0x1234);
    // Without SMAP the supervisor reads user pages.
    assert_eq!(run(&mut g, |a| a.mov(rbx, qword_ptr(WIN + 0x1000))), None);
    let r = run(&mut g, |a| {
        set_cr4(a, cr4::SMAP)?;
        a.mov(rbx, qword_ptr(WIN + 0x1000))
    });
    assert_eq!(r, Some((PF, pf::P as u64)));
    // STAC opens user pages, CLAC closes them again: the page cached for
    // AC=1 must not serve AC=0 accesses.
    let r = run(&mut g, |a| {
        a.stac()?;
        a.mov(rbx, qword_ptr(WIN + 0x1000))?;
        a.mov(qword_ptr(WIN + 0x1008), rbx)?;
        a.clac()?;
        a.mov(qword_ptr(WIN + 0x1010), rbx)
    });
    assert_eq!(r, Some((PF, (pf::P | pf::W) as u64)));
    assert_eq!(g.bus.read_u64(WIN + 0x1008), 0x1234);
    assert_eq!(g.bus.read_u64(WIN + 0x1010), 0);
    // AC set by POPF works as well as STAC.
    let r = run(&mut g, |a| {
        a.pushfq()?;
        a.or(qword_ptr(rsp), 1 << 18)?;
        a.popfq()?;
        a.mov(rbx, qword_ptr(WIN + 0x1000))?;
        a.clac()
    });
    assert_eq!(r, None);
}

#[test]
fn smap_applies_to_implicit_accesses_whatever_ac_says() {
    let mut g = guest();
    // An LDT in a user page with a data descriptor at selector 0x0c:
    // loading DS with it reads the LDT implicitly.
    let ldt = WIN + 0x2000;
    g.bus.write_u64(ldt + 8, GDT_ENTRIES[3]);
    let lo = 0xf | ((ldt & 0xff_ffff) << 16) | (0x82u64 << 40) | (((ldt >> 24) & 0xff) << 56);
    g.bus.write_u64(GDT + 0x40, lo);
    g.bus.write_u64(GDT + 0x48, ldt >> 32);
    g.cpu.state.gdtr.limit = 0x4f;
    g.bus.load(DATA + 0x7f6, &0x4fu16.to_le_bytes());
    let r = run(&mut g, |a| {
        a.mov(eax, 0x40)?;
        a.lldt(ax)?;
        set_cr4(a, cr4::SMAP)?;
        a.stac()?;
        a.mov(rbx, qword_ptr(ldt + 8))?; // explicit: allowed with AC=1
        a.mov(eax, 0x0c)?;
        a.mov(ds, ax)?; // implicit read of the LDT: denied
        a.clac()
    });
    assert_eq!(r, Some((PF, pf::P as u64)));
    assert_eq!(g.bus.read_u64(REC + 24), ldt + 8);
}

#[test]
fn stac_and_clac_need_cpl0_and_smap() {
    let mut g = guest();
    let r = run(&mut g, |a| {
        to_user(a)?;
        a.stac()
    });
    assert_eq!(r.map(|r| r.0), Some(UD));
    let mut g = guest();
    let mut table = feature_cpuid();
    table.retain(|e| e.function != 7);
    g.cpu.set_cpuid(&table);
    assert_eq!(run(&mut g, |a| a.clac()).map(|r| r.0), Some(UD));
    assert_eq!(
        run(&mut g, |a| set_cr4(a, cr4::SMAP)).map(|r| r.0),
        Some(GP)
    );
    assert_eq!(
        run(&mut g, |a| set_cr4(a, cr4::SMEP)).map(|r| r.0),
        Some(GP)
    );
    assert_eq!(run(&mut g, |a| set_cr4(a, cr4::PKE)).map(|r| r.0), Some(GP));
}

/// Gives window page `page` protection key `key`.
fn set_key(g: &mut Guest, page: u64, key: u64) {
    let e = g.bus.read_u64(PT + page * 8);
    g.bus
        .write_u64(PT + page * 8, (e & !(0xf << 59)) | (key << 59));
}

#[test]
fn pkru_access_and_write_disable() {
    let mut g = guest();
    set_key(&mut g, 1, 1);
    g.bus.write_u64(WIN + 0x1000, 7);
    // AD for key 1: supervisor and user reads fault with PK set.
    let r = run(&mut g, |a| {
        set_cr4(a, cr4::PKE)?;
        a.xor(ecx, ecx)?;
        a.xor(edx, edx)?;
        a.mov(eax, 0b0100)?;
        a.wrpkru()?;
        a.mov(rbx, qword_ptr(WIN + 0x1000))
    });
    assert_eq!(r, Some((PF, (pf::P | pf::PK) as u64)));
    // Key 0 pages are untouched; RDPKRU reads the value back.
    let r = run(&mut g, |a| {
        a.mov(rbx, qword_ptr(WIN + 0x2000))?;
        a.xor(ecx, ecx)?;
        a.rdpkru()?;
        a.mov(qword_ptr(DATA + 0x40), rax)
    });
    assert_eq!(r, None);
    assert_eq!(g.bus.read_u64(DATA + 0x40), 0b0100);
    let r = run(&mut g, |a| {
        to_user(a)?;
        a.mov(rbx, qword_ptr(WIN + 0x1000))
    });
    assert_eq!(r, Some((PF, (pf::P | pf::U | pf::PK) as u64)));
    // WD: reads pass; user writes fault; supervisor writes fault only
    // with CR0.WP. The TLB must see the PKRU change.
    let mut g = guest();
    set_key(&mut g, 1, 1);
    let r = run(&mut g, |a| {
        set_cr4(a, cr4::PKE)?;
        a.xor(ecx, ecx)?;
        a.xor(edx, edx)?;
        a.mov(qword_ptr(WIN + 0x1000), 1)?; // cached writable with PKRU 0
        a.mov(eax, 0b1000)?;
        a.wrpkru()?;
        a.mov(rbx, qword_ptr(WIN + 0x1000))?;
        a.mov(qword_ptr(WIN + 0x1000), 2)
    });
    assert_eq!(r, Some((PF, (pf::P | pf::W | pf::PK) as u64)));
    let r = run(&mut g, |a| {
        a.mov(rax, cr0)?;
        a.and(eax, !(1 << 16))?;
        a.mov(cr0, rax)?;
        a.mov(qword_ptr(WIN + 0x1000), 3)
    });
    assert_eq!(r, None);
    assert_eq!(g.bus.read_u64(WIN + 0x1000), 3);
    let r = run(&mut g, |a| {
        to_user(a)?;
        a.mov(qword_ptr(WIN + 0x1000), 4)
    });
    assert_eq!(r, Some((PF, (pf::P | pf::W | pf::U | pf::PK) as u64)));
}

#[test]
fn rdpkru_and_wrpkru_checks() {
    let mut g = guest();
    assert_eq!(run(&mut g, |a| a.rdpkru()).map(|r| r.0), Some(UD));
    let r = run(&mut g, |a| {
        set_cr4(a, cr4::PKE)?;
        a.mov(ecx, 1)?;
        a.rdpkru()
    });
    assert_eq!(r.map(|r| r.0), Some(GP));
    let r = run(&mut g, |a| {
        a.xor(ecx, ecx)?;
        a.mov(edx, 1)?;
        a.wrpkru()
    });
    assert_eq!(r.map(|r| r.0), Some(GP));
    // OSPKE follows CR4.PKE.
    g.cpu.set_cpuid(&feature_cpuid());
    let r = run(&mut g, |a| {
        a.mov(eax, 7)?;
        a.xor(ecx, ecx)?;
        a.cpuid()?;
        a.mov(qword_ptr(DATA + 0x40), rcx)
    });
    assert_eq!(r, None);
    assert_ne!(g.bus.read_u64(DATA + 0x40) & (1 << 4), 0);
}

#[test]
fn pkrs_guards_supervisor_pages() {
    let mut g = guest();
    // Supervisor page with key 2 in the window.
    let e = g.bus.read_u64(PT + 3 * 8);
    g.bus.write_u64(PT + 3 * 8, (e & !4) | (2 << 59));
    let wr_pkrs = |a: &mut CodeAssembler, v: u32| -> Result<(), IcedError> {
        a.mov(ecx, IA32_PKRS)?;
        a.mov(eax, v)?;
        a.xor(edx, edx)?;
        a.wrmsr()
    };
    let r = run(&mut g, |a| {
        set_cr4(a, cr4::PKS)?;
        wr_pkrs(a, 0b10_0000)?; // WD for key 2
        a.mov(rbx, qword_ptr(WIN + 0x3000))?;
        a.mov(qword_ptr(WIN + 0x3000), rbx)
    });
    assert_eq!(r, Some((PF, (pf::P | pf::W | pf::PK) as u64)));
    let r = run(&mut g, |a| {
        wr_pkrs(a, 0b01_0000)?; // AD for key 2
        a.mov(rbx, qword_ptr(WIN + 0x2000))?; // user page: PKS does not apply
        a.mov(rbx, qword_ptr(WIN + 0x3000))
    });
    assert_eq!(r, Some((PF, (pf::P | pf::PK) as u64)));
    // Reserved bits of IA32_PKRS.
    let r = run(&mut g, |a| {
        a.mov(ecx, IA32_PKRS)?;
        a.xor(eax, eax)?;
        a.mov(edx, 1)?;
        a.wrmsr()
    });
    assert_eq!(r.map(|r| r.0), Some(GP));
}

#[test]
fn umip_blocks_descriptor_table_stores_at_cpl3() {
    let mut g = guest();
    let r = run(&mut g, |a| {
        to_user(a)?;
        a.sgdt(ptr(WIN + 0x100))?;
        a.ud2()
    });
    assert_eq!(r.map(|r| r.0), Some(UD));
    let r = run(&mut g, |a| {
        set_cr4(a, cr4::UMIP)?;
        a.sidt(ptr(DATA + 0x40))?; // CPL 0: fine
        to_user(a)?;
        a.str(ax)
    });
    assert_eq!(r, Some((GP, 0)));
}

/// CR3 with PCID `pcid` (| bit 63 when `keep`).
fn load_cr3(a: &mut CodeAssembler, pcid: u64, keep: bool) -> Result<(), IcedError> {
    a.mov(rax, PML4 | pcid | if keep { 1 << 63 } else { 0 })?;
    a.mov(cr3, rax)
}

#[test]
fn pcid_contexts_keep_their_translations() {
    let mut g = guest();
    g.bus.write_u64(WIN + 0x5000, 0x5555);
    g.bus.write_u64(WIN + 0x6000, 0x6666);
    // Page 5 of the window now maps page `to` (no INVLPG).
    let remap = |a: &mut CodeAssembler, to: u64| -> Result<(), IcedError> {
        a.mov(rax, (WIN + to) | 7)?;
        a.mov(qword_ptr(PT + 5 * 8), rax)
    };
    // The TLB is direct-mapped: the other contexts touch other pages.
    let r = run(&mut g, |a| {
        set_cr4(a, cr4::PCIDE)?;
        load_cr3(a, 1, false)?;
        a.mov(rbx, qword_ptr(WIN + 0x5000))?; // PCID 1 caches page 5 → 5
        remap(a, 0x6000)?;
        load_cr3(a, 2, false)?;
        a.mov(rcx, qword_ptr(WIN + 0x6000))?;
        load_cr3(a, 1, true)?;
        a.mov(rdx, qword_ptr(WIN + 0x5000))?; // PCID 1 kept: stale → 5
        load_cr3(a, 1, false)?;
        a.mov(rsi, qword_ptr(WIN + 0x5000))?; // flushed: → 6
                                              // INVPCID type 1 for PCID 1 from PCID 2, then back to 1 kept.
        remap(a, 0x5000)?;
        load_cr3(a, 2, true)?;
        a.mov(qword_ptr(DATA + 0x40), 1)?;
        a.mov(qword_ptr(DATA + 0x48), 0)?;
        a.mov(eax, 1)?;
        a.invpcid(rax, ptr(DATA + 0x40))?;
        load_cr3(a, 1, true)?;
        a.mov(rdi, qword_ptr(WIN + 0x5000))?; // → 5
                                              // Bit 63 is not stored in CR3.
        a.mov(r9, cr3)
    });
    assert_eq!(r, None);
    assert_eq!(
        [g.reg(3), g.reg(1), g.reg(2), g.reg(6), g.reg(7)],
        [0x5555, 0x6666, 0x5555, 0x6666, 0x5555]
    );
    assert_eq!(g.reg(9), PML4 | 1);
}

#[test]
fn invpcid_types_and_errors() {
    let mut g = guest();
    let desc = |a: &mut CodeAssembler, pcid: u64, addr: u64| -> Result<(), IcedError> {
        a.mov(rax, pcid)?;
        a.mov(qword_ptr(DATA + 0x40), rax)?;
        a.mov(rax, addr)?;
        a.mov(qword_ptr(DATA + 0x48), rax)
    };
    let inv = |a: &mut CodeAssembler, ty: u32| -> Result<(), IcedError> {
        a.mov(r10d, ty)?;
        a.invpcid(r10, ptr(DATA + 0x40))
    };
    for ty in 0..4 {
        assert_eq!(
            run(&mut g, |a| {
                desc(a, 0, 0)?;
                inv(a, ty)
            }),
            None,
            "type {ty}"
        );
    }
    // PCID != 0 without CR4.PCIDE, types 0 and 1.
    assert_eq!(
        run(&mut g, |a| {
            desc(a, 1, 0)?;
            inv(a, 0)
        }),
        Some((GP, 0))
    );
    assert_eq!(
        run(&mut g, |a| {
            desc(a, 1, 0)?;
            inv(a, 1)
        }),
        Some((GP, 0))
    );
    assert_eq!(
        run(&mut g, |a| {
            desc(a, 1, 0)?;
            inv(a, 2)
        }),
        None
    );
    // Type > 3, reserved descriptor bits, a non-canonical address.
    assert_eq!(
        run(&mut g, |a| {
            desc(a, 0, 0)?;
            inv(a, 4)
        }),
        Some((GP, 0))
    );
    assert_eq!(
        run(&mut g, |a| {
            desc(a, 0x1000, 0)?;
            inv(a, 2)
        }),
        Some((GP, 0))
    );
    assert_eq!(
        run(&mut g, |a| {
            desc(a, 0, 1 << 60)?;
            inv(a, 0)
        }),
        Some((GP, 0))
    );
    // Type 0 drops one page: a stale translation is re-walked.
    g.bus.write_u64(WIN + 0x5000, 0x5555);
    g.bus.write_u64(WIN + 0x6000, 0x6666);
    let r = run(&mut g, |a| {
        a.mov(rbx, qword_ptr(WIN + 0x5000))?;
        a.mov(rax, (WIN + 0x6000) | 7)?;
        a.mov(qword_ptr(PT + 5 * 8), rax)?;
        a.mov(rcx, qword_ptr(WIN + 0x5000))?;
        desc(a, 0, WIN + 0x5000)?;
        inv(a, 0)?;
        a.mov(rdx, qword_ptr(WIN + 0x5000))
    });
    assert_eq!(r, None);
    assert_eq!([g.reg(3), g.reg(1), g.reg(2)], [0x5555, 0x5555, 0x6666]);
}

#[test]
fn pcide_rules_on_cr4_cr3_and_cr0() {
    let mut g = guest();
    // CR3[11:0] must be 0 to set PCIDE.
    let r = run(&mut g, |a| {
        load_cr3(a, 1, false)?;
        set_cr4(a, cr4::PCIDE)
    });
    assert_eq!(r, Some((GP, 0)));
    // Bit 63 of CR3 is reserved without PCIDE.
    assert_eq!(run(&mut g, |a| load_cr3(a, 0, true)), Some((GP, 0)));
    // Paging cannot be turned off with PCIDE (nor can long mode: the
    // #GP for PCIDE comes first either way).
    let r = run(&mut g, |a| {
        load_cr3(a, 0, false)?;
        set_cr4(a, cr4::PCIDE)?;
        a.mov(rax, cr0)?;
        a.btr(eax, 31)?;
        a.mov(cr0, rax)
    });
    assert_eq!(r, Some((GP, 0)));
}

#[test]
fn pcid_and_invpcid_follow_cpuid() {
    let mut g = guest();
    let table: Vec<CpuidEntry> = feature_cpuid()
        .into_iter()
        .map(|mut e| {
            if e.function == 1 {
                e.ecx &= !(1 << 17);
            }
            if e.function == 7 {
                e.ebx &= !(1 << 10);
            }
            e
        })
        .collect();
    g.cpu.set_cpuid(&table);
    assert_eq!(run(&mut g, |a| set_cr4(a, cr4::PCIDE)), Some((GP, 0)));
    let r = run(&mut g, |a| {
        a.xor(ecx, ecx)?;
        a.invpcid(rcx, ptr(DATA + 0x40))
    });
    assert_eq!(r.map(|r| r.0), Some(UD));
}

#[test]
fn ltr_and_lldt_refuse_a_non_canonical_base_in_long_mode() {
    let mut g = guest();
    let ldt = |base: u64| {
        let lo = 0xf | ((base & 0xff_ffff) << 16) | (0x82u64 << 40) | (((base >> 24) & 0xff) << 56);
        (lo, base >> 32)
    };
    // The GDT limit, here and in the pointer the handlers reload.
    g.cpu.state.gdtr.limit = 0x6f;
    g.bus.load(DATA + 0x7f6, &0x6fu16.to_le_bytes());
    for (base, ok) in [
        (0xaaaa_aaaa_aaaa_aaaa, false),
        (0xffaa_aaaa_aaaa_aaaa, false),
        (0xffff_8000_0000_0000, true),
    ] {
        let (lo, hi) = tss_descriptor(base, 0x67);
        g.bus.write_u64(GDT + 0x40, lo);
        g.bus.write_u64(GDT + 0x48, hi);
        let (lo, hi) = ldt(base);
        g.bus.write_u64(GDT + 0x50, lo);
        g.bus.write_u64(GDT + 0x58, hi);
        let r = run(&mut g, |a| {
            a.mov(eax, 0x40)?;
            a.ltr(ax)
        });
        let busy = g.bus.read_u8(GDT + 0x45) & 2 != 0;
        if ok {
            assert_eq!(r, None, "ltr, base {base:#x}");
            assert!(busy);
            assert_eq!(g.cpu.state.tr.base, base);
        } else {
            assert_eq!(r, Some((GP, 0x40)), "ltr, base {base:#x}");
            assert!(!busy, "a refused TSS is not marked busy");
        }
        let r = run(&mut g, |a| {
            a.mov(eax, 0x50)?;
            a.lldt(ax)
        });
        if ok {
            assert_eq!(r, None, "lldt, base {base:#x}");
            assert_eq!(g.cpu.state.ldtr.base, base);
        } else {
            assert_eq!(r, Some((GP, 0x50)), "lldt, base {base:#x}");
        }
    }
}
