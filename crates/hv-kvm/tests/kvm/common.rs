//! Tiny real-mode guests on /dev/kvm: setup, an I/O recorder, a watchdog.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::Duration;

use hv::{Hypervisor, IoHandler, Kicker, MemorySlot, Vcpu, VcpuExit, Vm, VmConfig};
use hv_kvm::KvmHypervisor;
use iced_x86::code_asm::CodeAssembler;
use vm_memory::MmapRegion;

/// Guest-physical address where test code is loaded (CS = 0, IP = CODE).
pub const CODE: u64 = 0x1000;
/// Size of the RAM slot at guest-physical 0.
pub const RAM_SIZE: usize = 0x10000;
/// Any access to this port ends a test guest (isa-debug-exit's port).
pub const DONE_PORT: u16 = 0xf4;

/// Decides, in one place, what a test does when /dev/kvm is not usable:
/// with `FERROVISOR_REQUIRE_KVM=1` it fails; otherwise it says so loudly on
/// stderr and the test returns early.
pub fn kvm_or_skip(test: &str) -> Option<KvmHypervisor> {
    let required = std::env::var("FERROVISOR_REQUIRE_KVM").is_ok_and(|v| v == "1");
    let reason = match hv_kvm::probe() {
        Ok(()) => match KvmHypervisor::new() {
            Ok(hv) => return Some(hv),
            Err(e) => e.to_string(),
        },
        Err(reason) => reason,
    };
    if required {
        panic!("{test}: FERROVISOR_REQUIRE_KVM=1 but kvm is unavailable: {reason}");
    }
    // Straight to fd 2, past libtest's capture of eprintln!, so the skip is
    // visible in a normal `cargo test` run.
    let _ = writeln!(
        std::io::stderr(),
        "{test}: SKIPPED (kvm unavailable: {reason})"
    );
    None
}

/// Assembles 16-bit code for address CODE.
pub fn asm16(build: impl FnOnce(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>) -> Vec<u8> {
    let mut a = CodeAssembler::new(16).expect("assembler");
    build(&mut a).expect("assembling");
    a.assemble(CODE).expect("assembling")
}

pub fn region(size: usize) -> Arc<MmapRegion> {
    Arc::new(MmapRegion::new(size).expect("mmap"))
}

pub fn write_region(region: &MmapRegion, offset: usize, bytes: &[u8]) {
    assert!(offset + bytes.len() <= region.size());
    // SAFETY: in bounds of a live mapping the test owns; the guest is not
    // running.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), region.as_ptr().add(offset), bytes.len())
    };
}

pub fn read_region(region: &MmapRegion, offset: usize, len: usize) -> Vec<u8> {
    assert!(offset + len <= region.size());
    let mut out = vec![0; len];
    // SAFETY: as above.
    unsafe { std::ptr::copy_nonoverlapping(region.as_ptr().add(offset), out.as_mut_ptr(), len) };
    out
}

/// Creates vCPU `id` runnable in real mode at CS:IP = 0:CODE, SP = 0x8000
/// (application processors too: their MP state is set to runnable).
pub fn real_mode_vcpu(vm: &dyn Vm, id: u32) -> Box<dyn Vcpu> {
    let mut vcpu = vm.create_vcpu(id).expect("create_vcpu");
    let mut sregs = vcpu.get_sregs().expect("get_sregs");
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs).expect("set_sregs");
    let mut regs = vcpu.get_regs().expect("get_regs");
    regs.rip = CODE;
    regs.rflags = 0x2;
    regs.rsp = 0x8000;
    vcpu.set_regs(&regs).expect("set_regs");
    vcpu.set_mp_state(hv::MpState::Runnable)
        .expect("set_mp_state");
    vcpu
}

/// A VM with one vCPU in real mode at CS:IP = 0:CODE, RAM at [0, RAM_SIZE).
pub struct Guest {
    pub vm: Box<dyn Vm>,
    pub vcpu: Box<dyn Vcpu>,
    pub ram: Arc<MmapRegion>,
}

impl Guest {
    pub fn new(hv: &KvmHypervisor, code: &[u8]) -> Guest {
        Guest::with_vcpus(hv, code, 1)
    }

    /// Like `new`, for a VM sized for `vcpus` (only vCPU 0 is created).
    pub fn with_vcpus(hv: &KvmHypervisor, code: &[u8], vcpus: u32) -> Guest {
        let vm = hv.create_vm(VmConfig::new(vcpus)).expect("create_vm");
        let ram = region(RAM_SIZE);
        write_region(&ram, CODE as usize, code);
        vm.set_memory_slot(MemorySlot {
            id: 0,
            guest_addr: 0,
            region: Arc::clone(&ram),
            read_only: false,
            log_dirty: false,
        })
        .expect("RAM slot");
        let vcpu = real_mode_vcpu(vm.as_ref(), 0);
        Guest { vm, vcpu, ram }
    }

    /// Runs until the guest writes DONE_PORT (the recorder kicks then),
    /// failing the test if that takes longer than `timeout`.
    pub fn run_to_done(&mut self, rec: &Recorder, timeout: Duration) {
        rec.arm(self.vcpu.kicker());
        let dog = Watchdog::start(self.vcpu.kicker(), timeout);
        let exit = self.vcpu.run(rec).expect("run");
        assert!(
            !dog.stop(),
            "guest did not reach the done port within {timeout:?}"
        );
        assert_eq!(exit, VcpuExit::Interrupted, "done port kicks the vCPU");
        assert!(rec.done(), "run returned before the done port");
    }
}

/// One access the guest made to the VMM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    PioRead(u16, usize),
    PioWrite(u16, Vec<u8>),
    MmioRead(u64, usize),
    MmioWrite(u64, Vec<u8>),
}

/// An IoHandler that records every access, answers reads with the low bytes
/// of `read_value` (port reads: plus the access's index in the recorded
/// sequence, to tell string I/O elements apart), and kicks the vCPU when
/// the guest reads or writes DONE_PORT.
#[derive(Default)]
pub struct Recorder {
    pub accesses: Mutex<Vec<Access>>,
    pub read_value: u64,
    kicker: OnceLock<Kicker>,
    done: AtomicBool,
}

impl Recorder {
    pub fn with_reads(read_value: u64) -> Recorder {
        Recorder {
            read_value,
            ..Recorder::default()
        }
    }

    /// Gives the recorder the vCPU's kicker and clears `done` for a run.
    pub fn arm(&self, kicker: Kicker) {
        let _ = self.kicker.set(kicker);
        self.done.store(false, Ordering::SeqCst);
    }

    pub fn done(&self) -> bool {
        self.done.load(Ordering::SeqCst)
    }

    /// Accesses except the final one to DONE_PORT.
    pub fn take(&self) -> Vec<Access> {
        let mut all = std::mem::take(&mut *self.accesses.lock().unwrap());
        if matches!(
            all.last(),
            Some(Access::PioWrite(DONE_PORT, _) | Access::PioRead(DONE_PORT, _))
        ) {
            all.pop();
        }
        all
    }

    fn finish(&self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(k) = self.kicker.get() {
            k.kick();
        }
    }

    fn push(&self, a: Access) -> usize {
        let mut v = self.accesses.lock().unwrap();
        v.push(a);
        v.len() - 1
    }
}

impl IoHandler for Recorder {
    fn pio_read(&self, port: u16, data: &mut [u8]) {
        let n = self.push(Access::PioRead(port, data.len())) as u64;
        let v = self.read_value.wrapping_add(n).to_le_bytes();
        data.copy_from_slice(&v[..data.len()]);
        if port == DONE_PORT {
            self.finish();
        }
    }

    fn pio_write(&self, port: u16, data: &[u8]) {
        self.push(Access::PioWrite(port, data.to_vec()));
        if port == DONE_PORT {
            self.finish();
        }
    }

    fn mmio_read(&self, gpa: u64, data: &mut [u8]) {
        self.push(Access::MmioRead(gpa, data.len()));
        let v = self.read_value.to_le_bytes();
        data.copy_from_slice(&v[..data.len()]);
    }

    fn mmio_write(&self, gpa: u64, data: &[u8]) {
        self.push(Access::MmioWrite(gpa, data.to_vec()));
    }
}

/// Kicks a vCPU after `timeout` unless stopped first, so a broken guest
/// fails its test instead of hanging it.
pub struct Watchdog {
    cancel: mpsc::Sender<()>,
    fired: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Watchdog {
    pub fn start(kicker: Kicker, timeout: Duration) -> Watchdog {
        let (cancel, rx) = mpsc::channel::<()>();
        let fired = Arc::new(AtomicBool::new(false));
        let f = Arc::clone(&fired);
        let thread = thread::spawn(move || {
            if rx.recv_timeout(timeout) == Err(mpsc::RecvTimeoutError::Timeout) {
                f.store(true, Ordering::SeqCst);
                kicker.kick();
            }
        });
        Watchdog {
            cancel,
            fired,
            thread: Some(thread),
        }
    }

    /// Stops the watchdog; true if it had fired.
    pub fn stop(mut self) -> bool {
        let _ = self.cancel.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.fired.load(Ordering::SeqCst)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let _ = self.cancel.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Kicks after `delay` from another thread.
pub fn kick_after(kicker: Kicker, delay: Duration) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        thread::sleep(delay);
        kicker.kick();
    })
}
