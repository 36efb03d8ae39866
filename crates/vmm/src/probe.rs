//! Is the host's KVM fast? A nested or software-backed KVM (such as the
//! `kvm_pvm` module, which runs guest kernel code through the host's
//! instruction emulator) can be slower than Ferrovisor's own software CPU.
//! `--accel auto` times a short real-mode loop on KVM and picks kvm only
//! when it runs at hardware-assisted speed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hv::{Hypervisor, IoHandler, Kicker, MemorySlot, Regs, VcpuExit, VmConfig};
use vm_memory::MmapRegion;

/// Instructions the probe loop retires (two per iteration).
const PROBE_ITERATIONS: u32 = 20_000;
/// Below this many guest instructions per second KVM counts as slow.
pub const FAST_KVM_IPS: f64 = 100e6;

/// Ends the probe when the guest writes port 0x80.
struct ProbeIo(Kicker);

impl IoHandler for ProbeIo {
    fn pio_read(&self, _port: u16, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn pio_write(&self, port: u16, _data: &[u8]) {
        if port == 0x80 {
            self.0.kick();
        }
    }
    fn mmio_read(&self, _gpa: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn mmio_write(&self, _gpa: u64, _data: &[u8]) {}
}

/// The probe's real-mode code at 0x1000:
/// `mov ecx, N; l: dec ecx; jnz l; out 0x80, al; jmp $`.
fn probe_code() -> Vec<u8> {
    let mut code = vec![0x66, 0xb9];
    code.extend_from_slice(&PROBE_ITERATIONS.to_le_bytes());
    code.extend_from_slice(&[0x66, 0x49, 0x75, 0xfc, 0xe6, 0x80, 0xeb, 0xfe]);
    code
}

/// Guest instructions per second of a short loop on `hv`, or why it could
/// not be measured.
pub fn measure_ips(hv: &dyn Hypervisor) -> Result<f64, String> {
    let vm = hv.create_vm(VmConfig::new(1)).map_err(|e| e.to_string())?;
    let region = Arc::new(MmapRegion::new(0x1_0000).map_err(|e| e.to_string())?);
    let code = probe_code();
    {
        use vm_memory::VolatileMemory;
        let slice = region
            .get_slice(0x1000, code.len())
            .map_err(|e| e.to_string())?;
        slice.copy_from(&code);
    }
    vm.set_memory_slot(MemorySlot {
        id: 0,
        guest_addr: 0,
        region,
        read_only: false,
        log_dirty: false,
    })
    .map_err(|e| e.to_string())?;
    let mut vcpu = vm.create_vcpu(0).map_err(|e| e.to_string())?;
    let mut sregs = vcpu.get_sregs().map_err(|e| e.to_string())?;
    sregs.cs.selector = 0;
    sregs.cs.base = 0;
    vcpu.set_sregs(&sregs).map_err(|e| e.to_string())?;
    vcpu.set_regs(&Regs {
        rip: 0x1000,
        rflags: 2,
        ..Regs::default()
    })
    .map_err(|e| e.to_string())?;
    let io = ProbeIo(vcpu.kicker());
    // A hung probe must not hang the VMM: give up after a second.
    let watchdog_kicker = vcpu.kicker();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let builder = std::thread::Builder::new().name("probe-watchdog".into());
    sandbox::spawn(sandbox::ThreadKind::Vmm, builder, move || {
        if done_rx.recv_timeout(Duration::from_secs(1)).is_err() {
            watchdog_kicker.kick();
        }
    })
    .map_err(|e| format!("cannot start the probe's watchdog: {e}"))?;
    let start = Instant::now();
    let exit = vcpu.run(&io).map_err(|e| e.to_string())?;
    let elapsed = start.elapsed();
    drop(done_tx);
    if exit != VcpuExit::Interrupted {
        return Err(format!("the probe guest stopped with {exit:?}"));
    }
    let instructions = f64::from(PROBE_ITERATIONS) * 2.0 + 2.0;
    Ok(instructions / elapsed.as_secs_f64().max(1e-9))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_runs_on_emu() {
        let ips = measure_ips(&hv_emu::EmuHypervisor::new()).unwrap();
        assert!(ips > 0.0);
    }
}
