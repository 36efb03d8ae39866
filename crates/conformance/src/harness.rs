//! What the cases share: a VM with RAM in long-mode boot state, vCPUs set up
//! like the bare-ELF boot protocol, and an `IoHandler` that records every
//! access.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use devices::serial::{Serial, COM1_BASE, UART_SIZE};
use devices::{BusDevice, IrqLine};
use guests::Program;
use hv::{Hypervisor, IoHandler, Kicker, MemorySlot, Vcpu, VcpuExit, Vm, VmConfig};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// Guest RAM of every test VM.
pub const MEM_SIZE: u64 = 64 << 20;
/// Where guests store results for the test to read.
pub const SCRATCH: u64 = 0x30_0000;
/// An address in the MMIO hole, identity-mapped by the boot page tables.
pub const MMIO_ADDR: u64 = 0xd000_0000;
/// How long a case may run before it fails. Generous: on a nested,
/// software-backed KVM each instruction at CPL0 is emulated.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// A VM with guest RAM in slot 0, set up for a long-mode entry.
pub struct TestVm {
    // Drop order: the VM before the memory it maps.
    pub vm: Box<dyn Vm>,
    pub mem: GuestMemoryMmap,
    pub vcpus: u32,
    cpuid: Vec<hv::CpuidEntry>,
}

impl TestVm {
    pub fn new(hv: &dyn Hypervisor, vcpus: u32) -> TestVm {
        TestVm::with_config(hv, VmConfig::new(vcpus))
    }

    /// [`TestVm::new`] for a VM made from `config`.
    pub fn with_config(hv: &dyn Hypervisor, config: VmConfig) -> TestVm {
        let vcpus = config.vcpus;
        let vm = hv.create_vm(config).expect("create the VM");
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)])
            .expect("map guest memory");
        let region = mem.iter().next().expect("one region");
        vm.set_memory_slot(MemorySlot {
            id: 0,
            guest_addr: 0,
            region: region.get_mmap(),
            read_only: false,
            log_dirty: false,
        })
        .expect("map slot 0");
        arch::mode::setup_long_mode(&mem).expect("write boot structures");
        let cpuid = vm.supported_cpuid().expect("supported CPUID");
        TestVm {
            vm,
            mem,
            vcpus,
            cpuid,
        }
    }

    /// Copies a program to its load address.
    pub fn load(&self, program: &Program) {
        self.mem
            .write_slice(&program.code, GuestAddress(program.load_addr))
            .expect("program fits in RAM");
    }

    /// Creates vCPU `id` entered at `entry` in long mode with RDI = id,
    /// interrupts off, a stack of its own.
    pub fn vcpu(&self, id: u32, entry: u64) -> Box<dyn Vcpu> {
        let mut vcpu = self.vm.create_vcpu(id).expect("create vCPU");
        vcpu.set_cpuid(&arch::cpuid::template(&self.cpuid, id, self.vcpus))
            .expect("set CPUID");
        vcpu.set_msrs(&arch::msr::boot_msrs()).expect("set MSRs");
        let mut sregs = arch::mode::long_mode_sregs();
        if id != 0 {
            sregs.apic_base &= !arch::mode::APIC_BASE_BSP;
        }
        vcpu.set_sregs(&sregs).expect("set sregs");
        let stack =
            arch::layout::BARE_STACK_TOP - u64::from(id) * arch::layout::BARE_STACK_PER_VCPU;
        let mut regs = arch::mode::long_mode_regs(entry, 0, stack);
        regs.rdi = id.into();
        vcpu.set_regs(&regs).expect("set regs");
        if id != 0 {
            vcpu.set_mp_state(hv::MpState::Runnable)
                .expect("make the AP runnable");
        }
        vcpu
    }

    pub fn read_u64(&self, gpa: u64) -> u64 {
        self.mem
            .read_obj(GuestAddress(gpa))
            .expect("address in RAM")
    }

    pub fn write_u64(&self, gpa: u64, value: u64) {
        self.mem
            .write_obj(value, GuestAddress(gpa))
            .expect("address in RAM")
    }
}

/// One guest access seen by [`TestIo`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    PioRead { port: u16, size: usize },
    PioWrite { port: u16, data: Vec<u8> },
    MmioRead { gpa: u64, size: usize },
    MmioWrite { gpa: u64, data: Vec<u8> },
}

/// What port reads return: 0xa1, 0xa2, ... for each byte.
pub fn pio_pattern(i: usize) -> u8 {
    0xa1 + i as u8
}

/// What MMIO reads return: a function of the byte's address.
pub fn mmio_pattern(gpa: u64) -> u8 {
    (gpa as u8) ^ 0x5a
}

struct NoIrq;
impl IrqLine for NoIrq {
    fn set_level(&self, _level: bool) {}
}

/// Records accesses, serves COM1 with a real UART, and treats a write to the
/// debug-exit port as the end of the guest (it kicks the vCPU).
pub struct TestIo {
    pub log: Mutex<Vec<Access>>,
    serial: Mutex<Serial>,
    pub console: Arc<Mutex<Vec<u8>>>,
    exit_value: Mutex<Option<u32>>,
    kicker: Kicker,
}

struct SharedWriter(Arc<Mutex<Vec<u8>>>);
impl std::io::Write for SharedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl TestIo {
    pub fn new(kicker: Kicker) -> TestIo {
        let console = Arc::new(Mutex::new(Vec::new()));
        TestIo {
            log: Mutex::new(Vec::new()),
            serial: Mutex::new(Serial::new(
                Arc::new(NoIrq),
                Box::new(SharedWriter(console.clone())),
            )),
            console,
            exit_value: Mutex::new(None),
            kicker,
        }
    }

    /// The value the guest wrote to the debug-exit port, if it did.
    pub fn exit_value(&self) -> Option<u32> {
        *self.exit_value.lock().unwrap()
    }

    pub fn accesses(&self) -> Vec<Access> {
        self.log.lock().unwrap().clone()
    }

    pub fn console_text(&self) -> String {
        String::from_utf8_lossy(&self.console.lock().unwrap()).into_owned()
    }

    fn is_com1(port: u16) -> bool {
        (COM1_BASE..COM1_BASE + UART_SIZE as u16).contains(&port)
    }
}

impl IoHandler for TestIo {
    fn pio_read(&self, port: u16, data: &mut [u8]) {
        if Self::is_com1(port) {
            self.serial
                .lock()
                .unwrap()
                .read(u64::from(port - COM1_BASE), data);
            return;
        }
        self.log.lock().unwrap().push(Access::PioRead {
            port,
            size: data.len(),
        });
        for (i, b) in data.iter_mut().enumerate() {
            *b = pio_pattern(i);
        }
    }

    fn pio_write(&self, port: u16, data: &[u8]) {
        if Self::is_com1(port) {
            self.serial
                .lock()
                .unwrap()
                .write(u64::from(port - COM1_BASE), data);
            return;
        }
        if port == guests::DEBUG_EXIT {
            let mut value = [0u8; 4];
            value[..data.len().min(4)].copy_from_slice(&data[..data.len().min(4)]);
            *self.exit_value.lock().unwrap() = Some(u32::from_le_bytes(value));
            self.kicker.kick();
            return;
        }
        self.log.lock().unwrap().push(Access::PioWrite {
            port,
            data: data.to_vec(),
        });
    }

    fn mmio_read(&self, gpa: u64, data: &mut [u8]) {
        self.log.lock().unwrap().push(Access::MmioRead {
            gpa,
            size: data.len(),
        });
        for (i, b) in data.iter_mut().enumerate() {
            *b = mmio_pattern(gpa + i as u64);
        }
    }

    fn mmio_write(&self, gpa: u64, data: &[u8]) {
        self.log.lock().unwrap().push(Access::MmioWrite {
            gpa,
            data: data.to_vec(),
        });
    }
}

/// Kicks a vCPU when a deadline passes, unless cancelled first (by drop).
pub struct Watchdog {
    cancel: Option<Sender<()>>,
    fired: Arc<AtomicBool>,
}

impl Watchdog {
    pub fn new(kicker: Kicker, timeout: Duration) -> Watchdog {
        let (cancel, cancelled) = channel::<()>();
        let fired = Arc::new(AtomicBool::new(false));
        let thread_fired = fired.clone();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = cancelled.recv_timeout(timeout)
            {
                thread_fired.store(true, Ordering::SeqCst);
                kicker.kick();
            }
        });
        Watchdog {
            cancel: Some(cancel),
            fired,
        }
    }

    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.cancel.take();
    }
}

/// Runs until the guest writes the debug-exit port (then returns `None`) or
/// exits for another reason (returned). Fails the test after [`TIMEOUT`].
pub fn run_guest(vcpu: &mut dyn Vcpu, io: &TestIo) -> Option<VcpuExit> {
    let watchdog = Watchdog::new(vcpu.kicker(), TIMEOUT);
    loop {
        let exit = vcpu.run(io).expect("vCPU run");
        if io.exit_value().is_some() {
            return None;
        }
        assert!(
            !watchdog.fired(),
            "guest did not finish within {TIMEOUT:?}; console: {:?}",
            io.console_text()
        );
        if exit != VcpuExit::Interrupted {
            return Some(exit);
        }
    }
}

/// Builds a program with `body`, followed by a debug-exit write of
/// `exit_value`.
pub fn program(
    body: impl FnOnce(&mut iced_x86::code_asm::CodeAssembler) -> guests::Result<()>,
    exit_value: u32,
) -> Program {
    let mut a = guests::assembler().expect("assembler");
    body(&mut a).expect("assemble the body");
    a.mov(iced_x86::code_asm::eax, exit_value).expect("mov");
    guests::emit_debug_exit_eax(&mut a).expect("exit");
    guests::finish(a).expect("assemble")
}
