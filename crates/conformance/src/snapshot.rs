//! Save a running guest, restore it into a new VM in another process, and
//! get the result an uninterrupted run gets (issue 12, point 1).
//!
//! The guest keeps state in every place a snapshot must carry: a periodic
//! LAPIC timer and a periodic PIT (through IOAPIC pin 2) whose interrupts
//! it counts and waits for (halted in between), SSE registers (and the
//! upper half of YMM1 where the CPU model has AVX) loaded at the start
//! and hashed at the end, an MSR it wrote (KERNEL_GS_BASE), and a
//! checksum of its steps in general registers. It reports each step on [`PROGRESS`] and its
//! results on [`RESULT`]; the output is the sequence of those writes,
//! which does not depend on timing.
//!
//! The interrupted run is stopped after [`STOP_AFTER`] progress writes
//! (the I/O handler kicks the vCPU), its VM and vCPU states go through
//! serde_json and its memory through a raw file, and the test binary runs
//! itself again ([`CHILD_DIR_VAR`] set, the test's name as filter) to
//! restore them into a new VM and run to the end there. serde_json: the
//! state is a few KiB, the crate is already the workspace's choice for
//! configuration, and a human can read a failing state; the snapshot file
//! format (versioned, checksummed, compact) is later work.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;

use hv::{Hypervisor, IoHandler, Kicker, Vcpu, VcpuExit, VcpuState, VmState};
use iced_x86::code_asm::*;
use serde::{Deserialize, Serialize};
use vm_memory::{Bytes, GuestAddress};

use crate::harness::{TestVm, Watchdog, MEM_SIZE, SCRATCH, TIMEOUT};
use crate::interrupts::{
    emit_gate, emit_handler, emit_lapic_enable, emit_lidt, COUNTS, IOAPIC, LAPIC,
};

/// The guest writes its step number here (4 bytes) before each step.
pub const PROGRESS: u16 = 0xe0;
/// The guest writes its results here (4 bytes each).
pub const RESULT: u16 = 0xe4;
/// Steps the guest takes; each waits for one more LAPIC and PIT tick.
const STEPS: u64 = 12;
/// The interrupted run stops after this many progress writes.
pub const STOP_AFTER: u32 = 5;
/// Set in the child process: the directory with the saved run.
pub const CHILD_DIR_VAR: &str = "FERROVISOR_SNAPSHOT_CHILD_DIR";
const LAPIC_VECTOR: u8 = 0x40;
const PIT_VECTOR: u8 = 0x41;
/// The PIT's reload value: 2 ms.
const PIT_COUNT: u16 = 2386;
/// The LAPIC timer's initial count at the 1 GHz bus, divide by 1: 1.5 ms.
const LAPIC_COUNT: u32 = 1_500_000;
const KERNEL_GS_BASE: u32 = 0xc000_0102;
/// The values the guest loads into XMM0-15 and YMM1 (filled by the test).
const VECTORS_IN: u64 = SCRATCH + 0x6000;
/// Where the guest stores them at the end.
const VECTORS_OUT: u64 = SCRATCH + 0x7000;
const MSR_VALUE: u64 = 0xffff_8123_4567_89a0;

/// What one run wrote to [`PROGRESS`] and [`RESULT`], in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Out {
    Progress(u32),
    Result(u32),
}

/// The saved run, as the child reads it.
#[derive(Serialize, Deserialize)]
struct Saved {
    vm: VmState,
    vcpus: Vec<VcpuState>,
}

/// Records the guest's output, stops the run after `stop_after` progress
/// writes and at the debug-exit port.
struct SnapIo {
    out: Mutex<Vec<Out>>,
    progress: AtomicU32,
    stop_after: Option<u32>,
    finished: AtomicBool,
    kicker: Kicker,
}

impl SnapIo {
    fn new(kicker: Kicker, stop_after: Option<u32>) -> SnapIo {
        SnapIo {
            out: Mutex::new(Vec::new()),
            progress: AtomicU32::new(0),
            stop_after,
            finished: AtomicBool::new(false),
            kicker,
        }
    }

    fn output(&self) -> Vec<Out> {
        self.out.lock().unwrap().clone()
    }
}

fn le32(data: &[u8]) -> u32 {
    let mut v = [0u8; 4];
    let n = data.len().min(4);
    v[..n].copy_from_slice(&data[..n]);
    u32::from_le_bytes(v)
}

impl IoHandler for SnapIo {
    fn pio_read(&self, _port: u16, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn pio_write(&self, port: u16, data: &[u8]) {
        match port {
            PROGRESS => {
                self.out.lock().unwrap().push(Out::Progress(le32(data)));
                let n = self.progress.fetch_add(1, Ordering::SeqCst) + 1;
                if self.stop_after == Some(n) {
                    self.kicker.kick();
                }
            }
            RESULT => self.out.lock().unwrap().push(Out::Result(le32(data))),
            guests::DEBUG_EXIT => {
                self.finished.store(true, Ordering::SeqCst);
                self.kicker.kick();
            }
            _ => {}
        }
    }

    fn mmio_read(&self, _gpa: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn mmio_write(&self, _gpa: u64, _data: &[u8]) {}
}

/// Runs until the I/O handler kicked (a stop or the end); true at the end.
fn run_until_kicked(vcpu: &mut dyn Vcpu, io: &SnapIo) -> bool {
    let dog = Watchdog::new(vcpu.kicker(), TIMEOUT);
    loop {
        let exit = vcpu.run(io).expect("vCPU run");
        assert!(
            !dog.fired(),
            "guest did not get there within {TIMEOUT:?}; output {:?}",
            io.output()
        );
        if exit != VcpuExit::Interrupted {
            panic!(
                "unexpected exit {exit:?} after {:?}; {:x?}",
                io.output(),
                vcpu.get_regs()
            );
        }
        if io.finished.load(Ordering::SeqCst) {
            return true;
        }
        if io
            .stop_after
            .is_some_and(|n| io.progress.load(Ordering::SeqCst) >= n)
        {
            return false;
        }
    }
}

/// Whether the CPU model the harness gives vCPUs has AVX (and XSAVE).
fn has_avx(t: &TestVm) -> bool {
    let cpuid = arch::cpuid::template(&t.vm.supported_cpuid().expect("CPUID"), 0, 1);
    cpuid
        .iter()
        .find(|e| e.function == 1)
        .is_some_and(|e| e.ecx & (1 << 28) != 0 && e.ecx & (1 << 26) != 0)
}

const XMM: [AsmRegisterXmm; 16] = [
    xmm0, xmm1, xmm2, xmm3, xmm4, xmm5, xmm6, xmm7, xmm8, xmm9, xmm10, xmm11, xmm12, xmm13, xmm14,
    xmm15,
];

/// Emits `out RESULT, eax` of the low then high half of RAX.
fn emit_result_rax(a: &mut CodeAssembler) -> guests::Result<()> {
    a.mov(dx, RESULT as u32)?;
    a.out(dx, eax)?;
    a.shr(rax, 32)?;
    a.out(dx, eax)?;
    Ok(())
}

/// The guest program (see the module documentation).
fn program(avx: bool) -> guests::Program {
    let mut a = guests::assembler().unwrap();
    let mut main = a.create_label();
    let mut lapic_handler = a.create_label();
    let mut pit_handler = a.create_label();
    a.jmp(main).unwrap();
    emit_handler(&mut a, &mut lapic_handler, LAPIC_VECTOR).unwrap();
    emit_handler(&mut a, &mut pit_handler, PIT_VECTOR).unwrap();
    a.set_label(&mut main).unwrap();
    emit(&mut a, avx, lapic_handler, pit_handler).unwrap();
    guests::finish(a).unwrap()
}

fn emit(
    a: &mut CodeAssembler,
    avx: bool,
    lapic_handler: CodeLabel,
    pit_handler: CodeLabel,
) -> guests::Result<()> {
    emit_gate(a, LAPIC_VECTOR, lapic_handler)?;
    emit_gate(a, PIT_VECTOR, pit_handler)?;
    emit_lidt(a)?;
    emit_lapic_enable(a)?;
    // SSE on (CR4.OSFXSR, OSXMMEXCPT), and with AVX XSAVE with x87, SSE
    // and AVX state in XCR0.
    a.mov(rax, cr4)?;
    a.or(rax, if avx { 0x4_0600 } else { 0x600 })?;
    a.mov(cr4, rax)?;
    if avx {
        a.xor(ecx, ecx)?;
        a.xor(edx, edx)?;
        a.mov(eax, 7)?;
        a.xsetbv()?;
    }
    // The PICs masked: IRQ 0 goes through the IOAPIC only, pin 2 on emu
    // (the MADT's override) and pin 0 on KVM (its default routing): both
    // carry the PIT's vector.
    a.mov(al, 0xff)?;
    a.out(0x21, al)?;
    a.out(0xa1, al)?;
    a.mov(rbx, IOAPIC)?;
    for pin in [0u32, 2] {
        a.mov(dword_ptr(rbx), 0x10 + 2 * pin + 1)?;
        a.mov(dword_ptr(rbx + 0x10), 0)?;
        a.mov(dword_ptr(rbx), 0x10 + 2 * pin)?;
        a.mov(dword_ptr(rbx + 0x10), u32::from(PIT_VECTOR))?;
    }
    // PIT counter 0: rate generator (mode 2), LSB then MSB.
    a.mov(al, 0x34)?;
    a.out(0x43, al)?;
    a.mov(al, (PIT_COUNT & 0xff) as u32)?;
    a.out(0x40, al)?;
    a.mov(al, (PIT_COUNT >> 8) as u32)?;
    a.out(0x40, al)?;
    // LAPIC timer: periodic, divide by 1.
    a.mov(rbx, LAPIC)?;
    a.mov(dword_ptr(rbx + 0x3e0), 0xb)?;
    a.mov(dword_ptr(rbx + 0x320), 0x2_0000 | u32::from(LAPIC_VECTOR))?;
    a.mov(dword_ptr(rbx + 0x380), LAPIC_COUNT)?;
    // An MSR.
    a.mov(ecx, KERNEL_GS_BASE)?;
    a.mov(eax, MSR_VALUE as u32)?;
    a.mov(edx, (MSR_VALUE >> 32) as u32)?;
    a.wrmsr()?;
    // Every XMM register gets a value of its own (and with AVX, YMM1 its
    // upper half). Moves only: the nested kvm_pvm host emulates the
    // guest's CPL0 SSE instructions, and KVM's emulator has only those.
    a.mov(rbx, VECTORS_IN)?;
    for (i, x) in XMM.iter().enumerate() {
        a.movdqu(*x, xmmword_ptr(rbx + 16 * i))?;
    }
    if avx {
        a.vmovdqu(ymm1, ymmword_ptr(rbx + 256))?;
    }
    a.xor(r12d, r12d)?; // checksum
    a.xor(r13d, r13d)?; // step
    let mut step = a.create_label();
    let mut wait = a.create_label();
    let mut waited = a.create_label();
    a.set_label(&mut step)?;
    a.mov(eax, r13d)?;
    a.mov(dx, PROGRESS as u32)?;
    a.out(dx, eax)?;
    // Wait, halted, for the step's LAPIC and PIT ticks.
    a.set_label(&mut wait)?;
    a.cli()?;
    a.mov(rax, COUNTS + 8 * u64::from(LAPIC_VECTOR))?;
    a.cmp(qword_ptr(rax), r13)?;
    a.jbe(waited)?;
    a.mov(rax, COUNTS + 8 * u64::from(PIT_VECTOR))?;
    a.cmp(qword_ptr(rax), r13)?;
    let mut ready = a.create_label();
    a.ja(ready)?;
    a.set_label(&mut waited)?;
    // STI's shadow covers the HLT: no interrupt slips in between.
    a.sti()?;
    a.hlt()?;
    a.jmp(wait)?;
    a.set_label(&mut ready)?;
    a.sti()?;
    // A checksum of the steps in general registers.
    a.imul_3(r12, r12, 31)?;
    a.add(r12, r13)?;
    a.inc(r13)?;
    a.cmp(r13, STEPS as i32)?;
    a.jb(step)?;
    a.cli()?;
    // Results: the checksum, the MSR, every XMM register folded.
    a.mov(rax, r12)?;
    emit_result_rax(a)?;
    a.mov(ecx, KERNEL_GS_BASE)?;
    a.rdmsr()?;
    a.shl(rdx, 32)?;
    a.or(rax, rdx)?;
    emit_result_rax(a)?;
    // The vector registers, stored and hashed with integer code.
    a.mov(rbx, VECTORS_OUT)?;
    for (i, x) in XMM.iter().enumerate() {
        a.movdqu(xmmword_ptr(rbx + 16 * i), *x)?;
    }
    let words = if avx {
        a.vmovdqu(ymmword_ptr(rbx + 256), ymm1)?;
        (256 + 32) / 8
    } else {
        256 / 8
    };
    a.xor(eax, eax)?;
    a.xor(ecx, ecx)?;
    let mut hash = a.create_label();
    a.set_label(&mut hash)?;
    a.imul_3(rax, rax, 31)?;
    a.add(rax, qword_ptr(rbx + rcx * 8))?;
    a.inc(ecx)?;
    a.cmp(ecx, words)?;
    a.jb(hash)?;
    emit_result_rax(a)?;
    a.mov(eax, 0x600d)?;
    guests::emit_debug_exit_eax(a)?;
    Ok(())
}

fn state_path(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

fn memory_path(dir: &Path) -> PathBuf {
    dir.join("memory.raw")
}

fn output_path(dir: &Path) -> PathBuf {
    dir.join("output.json")
}

/// A VM with the program and the vector registers' values in memory.
fn loaded_vm(hv: &dyn Hypervisor, program: &guests::Program) -> TestVm {
    let t = TestVm::new(hv, 1);
    t.load(program);
    for i in 0..(256 + 32) / 8 {
        t.write_u64(
            VECTORS_IN + 8 * i,
            0x0123_4567_89ab_cdefu64.wrapping_mul(i + 1) ^ (i << 56),
        );
    }
    t
}

/// The output of an uninterrupted run.
fn uninterrupted(hv: &dyn Hypervisor, program: &guests::Program) -> Vec<Out> {
    let t = loaded_vm(hv, program);
    let mut vcpu = t.vcpu(0, program.load_addr);
    let io = SnapIo::new(vcpu.kicker(), None);
    assert!(run_until_kicked(&mut *vcpu, &io));
    io.output()
}

/// Runs until the stop, saves VM, vCPU and memory into `dir`; returns the
/// output up to the stop.
fn run_and_save(hv: &dyn Hypervisor, program: &guests::Program, dir: &Path) -> Vec<Out> {
    let t = loaded_vm(hv, program);
    let mut vcpu = t.vcpu(0, program.load_addr);
    let io = SnapIo::new(vcpu.kicker(), Some(STOP_AFTER));
    assert!(
        !run_until_kicked(&mut *vcpu, &io),
        "the guest ended before the stop"
    );
    // As a VMM pausing the VM would: the clock stops for the save.
    t.vm.pause_clock().expect("pause the clock");
    let saved = Saved {
        vm: t.vm.save_state().expect("save the VM state"),
        vcpus: vec![vcpu.save_state().expect("save the vCPU state")],
    };
    let json = serde_json::to_vec(&saved).unwrap();
    eprintln!(
        "snapshot case on {}: state {} bytes of JSON ({} MSRs)",
        hv.name(),
        json.len(),
        saved.vcpus[0].msrs.len()
    );
    std::fs::write(state_path(dir), json).unwrap();
    let mut memory = vec![0u8; MEM_SIZE as usize];
    t.mem
        .read_slice(&mut memory, GuestAddress(0))
        .expect("read guest memory");
    std::fs::write(memory_path(dir), memory).unwrap();
    io.output()
}

/// The child's half: a new VM from the files in `dir`, run to the end;
/// its output goes to `output.json`.
fn restore_and_finish(hv: &dyn Hypervisor, dir: &Path) {
    let saved: Saved = serde_json::from_slice(&std::fs::read(state_path(dir)).unwrap())
        .expect("parse the saved state");
    let t = TestVm::new(hv, saved.vcpus.len() as u32);
    let memory = std::fs::read(memory_path(dir)).unwrap();
    assert_eq!(memory.len() as u64, MEM_SIZE, "memory file size");
    t.mem
        .write_slice(&memory, GuestAddress(0))
        .expect("write guest memory");
    t.vm.restore_state(&saved.vm).expect("restore the VM state");
    let mut vcpu = t.vm.create_vcpu(0).expect("create vCPU 0");
    vcpu.restore_state(&saved.vcpus[0])
        .expect("restore the vCPU state");
    let io = SnapIo::new(vcpu.kicker(), None);
    assert!(run_until_kicked(&mut *vcpu, &io));
    std::fs::write(output_path(dir), serde_json::to_vec(&io.output()).unwrap()).unwrap();
}

/// The case. `test_name` is the `#[test]` that calls it, which the child
/// process runs (with [`CHILD_DIR_VAR`] set it does the child's half).
pub fn save_restore_in_another_process(hv: &dyn Hypervisor, test_name: &str) {
    if let Some(dir) = std::env::var_os(CHILD_DIR_VAR) {
        restore_and_finish(hv, Path::new(&dir));
        return;
    }
    let probe = TestVm::new(hv, 1);
    let avx = has_avx(&probe);
    drop(probe);
    eprintln!("snapshot case on {}: AVX state in use: {avx}", hv.name());
    let program = program(avx);
    let whole = uninterrupted(hv, &program);
    assert_eq!(
        whole
            .iter()
            .filter(|o| matches!(o, Out::Progress(_)))
            .count() as u64,
        STEPS
    );
    assert_eq!(
        whole.iter().filter(|o| matches!(o, Out::Result(_))).count(),
        6
    );

    let dir = std::env::temp_dir().join(format!(
        "ferrovisor-snapshot-{}-{}",
        hv.name(),
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut output = run_and_save(hv, &program, &dir);
    assert_eq!(output.len(), STOP_AFTER as usize, "stopped where asked");

    let exe = std::env::current_exe().unwrap();
    let status = std::process::Command::new(exe)
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_VAR, &dir)
        .status()
        .expect("start the child process");
    assert!(status.success(), "the restoring process failed: {status}");
    let rest: Vec<Out> = serde_json::from_slice(
        &std::fs::read(output_path(&dir)).expect("the child wrote its output"),
    )
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    output.extend(rest);
    assert_eq!(output, whole, "restored run differs (AVX: {avx})");
}
