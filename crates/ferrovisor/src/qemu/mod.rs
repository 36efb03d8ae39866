//! A QEMU-compatible command line: `ferrovisor qemu ARGS...`, and the
//! same when the binary runs as `qemu-system-x86_64` (a symlink).
//!
//! QEMU's options ([`options`], with [`props`] lists) become the one VM
//! description, [`api::VmSpec`] ([`config`]: machine-wide options in
//! [`machine`], devices in [`devices`]), which runs as `ferrovisor run`
//! runs it. An option Ferrovisor does not map is one error naming it,
//! exit status 1, as QEMU's own errors. docs/QEMU.md lists the mapping.

mod config;
mod devices;
mod error;
mod help;
mod lifecycle;
mod log;
mod machine;
mod options;
mod props;
mod qmp;

use std::process::ExitCode;

use config::Config;
use vmm::{Machine, MachineConfig};

pub use error::QemuError;

/// The program name under which the binary is QEMU.
pub const QEMU_NAME: &str = "qemu-system-x86_64";

/// Whether the binary was started as QEMU (its file name is
/// `qemu-system-x86_64`, e.g. through a symlink).
pub fn invoked_as_qemu(argv0: &std::ffi::OsStr) -> bool {
    std::path::Path::new(argv0)
        .file_name()
        .is_some_and(|n| n == QEMU_NAME)
}

/// What to print for a `help`-style option, if one is given (QEMU
/// answers the first and exits).
fn help_text(opts: &[options::Opt], program: &str) -> Option<String> {
    for o in opts {
        let v = o.value.as_deref().unwrap_or("");
        let asks = v == "help" || v == "?";
        let text = match o.name.as_str() {
            "version" => help::version(),
            "h" | "help" => help::usage(program),
            "device" if asks => help::devices(),
            "device" => {
                let p = props::Props::parse("-device", v, Some("driver")).ok()?;
                if !p.has_help() {
                    continue;
                }
                let name = v.split(',').next().unwrap_or("");
                help::device_props(name)
                    .unwrap_or_else(|| format!("-device {name}: not supported by Ferrovisor\n"))
            }
            "machine" if asks || v.starts_with("help,") => help::machines(),
            "accel" if asks => help::accels(),
            "cpu" if asks => help::cpus(),
            _ => continue,
        };
        return Some(text);
    }
    None
}

/// Runs QEMU's command line `args` (without the program name).
pub fn main(program: &str, args: &[String]) -> ExitCode {
    let fail = |message: &str| {
        say!("{program}: {message}");
        ExitCode::from(1)
    };
    let opts = match options::split(args) {
        Ok(opts) => opts,
        Err(e) => return fail(&e.to_string()),
    };
    if let Some(text) = help_text(&opts, program) {
        crate::out::stdout(&text);
        return ExitCode::SUCCESS;
    }
    let config = match Config::from_opts(&opts) {
        Ok(config) => config,
        Err(e) => return fail(&e.to_string()),
    };
    log::install(program);
    // Every thread under its kind's syscall filter, as with `run` (QEMU's
    // `-sandbox on`, always).
    if let Err(message) = crate::seccomp::init(sandbox::Setting::Default) {
        return fail(&message);
    }
    if let Err(e) = crate::signals::install() {
        return fail(&format!("cannot take signals: {e}"));
    }
    let machine_config = match vmm::machine_config(&config.spec, config.accel) {
        Ok(c) => c,
        Err(e) => return fail(&crate::error_line(&e)),
    };
    if let Err(message) = check_kernel(&machine_config) {
        return fail(&message);
    }
    if let Some(name) = &config.name {
        tracing::info!("guest name {name}");
    }
    let machine = match Machine::new(&machine_config) {
        Ok(m) => m,
        Err(e) => return fail(&crate::error_line(&e)),
    };
    let _pidfile = match config.pidfile.as_deref().map(PidFile::write).transpose() {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    let gdb = match config
        .gdb
        .clone()
        .map(crate::gdb::GdbServer::bind)
        .transpose()
    {
        Ok(g) => g,
        Err(message) => return fail(&message),
    };
    let code = match &config.qmp {
        Some(path) => lifecycle::run(
            machine,
            path,
            machine_config.vcpus,
            lifecycle::Start {
                paused: config.paused,
                no_shutdown: config.no_shutdown,
                gdb,
            },
            &fail,
        ),
        None => crate::run_machine(
            machine,
            false,
            gdb.map(|server| crate::gdb::GdbStart {
                server,
                wait: config.paused,
            }),
        ),
    };
    crate::signals::exit_code(code)
}

/// `-pidfile FILE`: the process id, written once the machine is built,
/// removed at exit.
struct PidFile(std::path::PathBuf);

impl PidFile {
    fn write(path: &std::path::Path) -> Result<PidFile, String> {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .map_err(|e| format!("cannot write pid file {}: {e}", path.display()))?;
        Ok(PidFile(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// QEMU refuses a CPU model the accelerator cannot give before it looks
/// at the kernel; kvm-unit-tests' runner relies on that order (it runs
/// each command line once with a kernel that does not exist: a "could
/// not open kernel" error means the options are fine).
fn check_kernel(config: &MachineConfig) -> Result<(), String> {
    if let Err(e) = std::fs::File::open(&config.kernel) {
        check_cpu(config)?;
        return Err(format!(
            "could not open kernel file '{}': {e}",
            config.kernel.display()
        ));
    }
    Ok(())
}

/// Applies the CPU model to what the accelerator offers, as
/// [`Machine::new`] will.
fn check_cpu(config: &MachineConfig) -> Result<(), String> {
    let hypervisor = vmm::open_accelerator(config.accel).map_err(|e| crate::error_line(&e))?;
    let vm = hypervisor
        .create_vm(hv::VmConfig {
            pit: false,
            ..hv::VmConfig::new(1)
        })
        .map_err(|e| crate::error_line(&e))?;
    let supported = vm.supported_cpuid().map_err(|e| crate::error_line(&e))?;
    let mut cpuid = arch::cpuid::template(&supported, 0, 1);
    config
        .cpu
        .apply(&mut cpuid, hypervisor.name())
        .map_err(|e| format!("-cpu: {}", crate::error_line(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_qemus_x86_64_name_makes_it_qemu() {
        let is = |s: &str| invoked_as_qemu(std::ffi::OsStr::new(s));
        assert!(is("qemu-system-x86_64"));
        assert!(is("/usr/local/bin/qemu-system-x86_64"));
        assert!(!is("qemu-system-aarch64"));
        assert!(!is("/usr/bin/ferrovisor"));
    }

    #[test]
    fn help_values_are_answered_before_anything_is_checked() {
        let opts = |a: &[&str]| {
            options::split(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
        };
        let text = |a: &[&str]| help_text(&opts(a), QEMU_NAME);
        assert!(text(&["-device", "?"]).unwrap().contains("\"pc-testdev\""));
        assert!(text(&["-device", "virtio-net-pci,help"])
            .unwrap()
            .contains("netdev"));
        assert!(text(&["-M", "help"])
            .unwrap()
            .starts_with("Supported machines"));
        assert!(text(&["-cpu", "help"]).unwrap().contains("qemu64"));
        assert!(text(&["-version"])
            .unwrap()
            .starts_with("QEMU emulator version"));
        assert_eq!(text(&["-m", "512", "-kernel", "/k"]), None);
    }
}
