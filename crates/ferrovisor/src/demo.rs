//! `ferrovisor demo`: builds the Linux test guest if needed (Debian's cloud
//! kernel, busybox and the virtio modules: scripts/build-test-guest, bundled
//! in the binary), boots
//! it on the best available accelerator with two vCPUs, runs a few
//! commands in it and powers it off. Where the test guest cannot be built
//! (no Debian package registry, no python3), it boots the bundled tiny
//! guest instead and says why.

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

use vmm::{Accel, MachineConfig};

/// What the demo runs inside Linux.
const DEMO_SCRIPT: &str = r#"echo
echo "== Hello from Linux on Ferrovisor =="
uname -sr
echo "CPUs online:  $(cat /sys/devices/system/cpu/online)"
echo "CPU model:    $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
echo "Memory:       $(grep MemTotal /proc/meminfo | tr -s ' ' | cut -d' ' -f2-)"
echo "Boot to here: $(cut -d' ' -f1 /proc/uptime) s of guest uptime"
echo "Primes below 50: $(n=2; while [ $n -lt 50 ]; do d=2; p=1; while [ $((d*d)) -le $n ]; do [ $((n%d)) -eq 0 ] && p=0 && break; d=$((d+1)); done; [ $p -eq 1 ] && printf '%s ' $n; n=$((n+1)); done)"
echo "== The guest powers off now =="
"#;

struct TestGuest {
    kernel: PathBuf,
    initrd: PathBuf,
}

/// Builds (or finds in the cache) the Linux test guest, with the guest
/// builder that ships inside this binary (see [`crate::bundled_builder`]).
fn ensure_test_guest() -> Result<TestGuest, String> {
    let script = crate::bundled_builder::install(&crate::bundled_builder::cache_dir()?)?;
    say!("ferrovisor demo: preparing the Linux test guest (built once, then cached)...");
    let out = Command::new(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!("{} failed", script.display()));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(|v| PathBuf::from(v.trim_matches('\'')))
            .ok_or_else(|| format!("the guest builder did not report {key}"))
    };
    Ok(TestGuest {
        kernel: value("FERROVISOR_GUEST_KERNEL")?,
        initrd: value("FERROVISOR_GUEST_INITRD_RAW")?,
    })
}

pub fn run(accel: Accel, tiny: bool) -> ExitCode {
    if tiny {
        return bundled(accel);
    }
    match ensure_test_guest() {
        Ok(guest) => boot_linux(accel, &guest),
        Err(reason) => {
            say!("ferrovisor demo: no Linux test guest ({reason}); booting the bundled tiny guest instead");
            bundled(accel)
        }
    }
}

fn boot_linux(accel: Accel, guest: &TestGuest) -> ExitCode {
    let cmd = base64(DEMO_SCRIPT.as_bytes());
    say!(
        "ferrovisor demo: booting {} with 2 vCPUs and 256 MiB (--accel {accel}); Ctrl-A x quits",
        guest.kernel.display()
    );
    let config = MachineConfig {
        accel,
        memory: 256 << 20,
        vcpus: 2,
        initrd: Some(guest.initrd.clone()),
        cmdline: format!("console=ttyS0 quiet panic=-1 ferrovisor.cmd={cmd}"),
        console_input: true,
        ..MachineConfig::new(&guest.kernel)
    };
    crate::run(&config, true, None)
}

/// The tiny bare-ELF guest assembled at run time.
fn bundled(accel: Accel) -> ExitCode {
    let program = match guests::demo::program() {
        Ok(p) => p,
        Err(e) => return crate::fail(&format!("cannot assemble the demo guest: {e}"), 1),
    };
    let elf =
        arch::elf_builder::build_elf64(&[(program.load_addr, &program.code)], program.load_addr);
    let path = std::env::temp_dir().join(format!("ferrovisor-demo-{}.elf", std::process::id()));
    if let Err(e) = std::fs::write(&path, elf) {
        return crate::fail(&format!("cannot write {}: {e}", path.display()), 1);
    }
    say!(
        "ferrovisor demo: booting the bundled demo guest ({} bytes of x86-64 code) with --accel {accel}",
        program.code.len()
    );
    let config = MachineConfig {
        accel,
        memory: 64 << 20,
        ..MachineConfig::new(&path)
    };
    let report = crate::run_report(&config, true);
    let _ = std::fs::remove_file(&path);
    match report {
        // The tiny guest's last act is a reset (through the i8042): its
        // normal end.
        Ok(report) if matches!(report.exit, vmm::MachineExit::Reset) => ExitCode::SUCCESS,
        Ok(report) => ExitCode::from(crate::exit_status::of(&report.exit)),
        Err(status) => status,
    }
}

/// Standard base64, as the guest's init decodes `ferrovisor.cmd`.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_standard() {
        assert_eq!(base64(b"echo hi"), "ZWNobyBoaQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b""), "");
    }

    #[test]
    fn the_demo_script_fits_the_kernel_command_line() {
        assert!(base64(DEMO_SCRIPT.as_bytes()).len() < 1500);
    }
}
