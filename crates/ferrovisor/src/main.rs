//! The `ferrovisor` command line.
#![forbid(unsafe_code)]

/// `eprintln!` that never panics: a line for standard error, dropped when
/// nobody reads it any more (see [`out`]).
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::out::stderr(&format!("{}\n", format_args!($($arg)*)))
    };
}

mod bundled_builder;
mod cli_docs;
mod demo;
mod disk;
mod exit_status;
mod firecracker;
mod fork;
mod fork_helper;
mod gdb;
mod limits;
mod logging;
mod migrate;
mod net;
mod out;
mod qemu;
mod runspec;
mod seccomp;
mod signals;
mod size;
mod snapshot_cli;
mod stat;
mod stats;
mod trace;
mod usage;
mod vsock;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vmm::{Accel, Machine, MachineConfig, MachineExit};

#[derive(Parser)]
#[command(
    name = "ferrovisor",
    version,
    about = "A KVM-architecture hypervisor in Rust",
    after_help = after_help()
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
    /// Log filter: a level (error, warn, info, debug, trace, off) or
    /// tracing directives (vmm=debug,warn) [default: $FERROVISOR_LOG, else
    /// warn].
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,
    /// Write the log to FILE (appended to) instead of standard error.
    #[arg(long, global = true, value_name = "FILE")]
    log_file: Option<PathBuf>,
}

/// `--help`'s epilogue: the other front ends and the exit statuses.
fn after_help() -> String {
    format!(
        "Started with options only, ferrovisor takes Firecracker's options and serves \
Firecracker's API: see 'ferrovisor --help' and docs/API.md. \
'ferrovisor qemu ARGS...' (or the binary run as qemu-system-x86_64) takes QEMU's command line: \
see docs/QEMU.md. \
'ferrovisor jail ARGS -- VMM-ARGS' (or the binary run as jailer) is Firecracker's jailer: see docs/SECURITY.md.\n\n\
Exit status of run and demo (docs/CLI.md):\n{}",
        exit_status::TABLE
    )
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Boot a kernel.
    Run(Box<RunArgs>),
    /// Boot the Linux test guest (built if needed) on the best accelerator.
    Demo {
        /// Accelerator: auto, kvm or emu.
        #[arg(long, default_value = "auto")]
        accel: Accel,
        /// Boot the bundled tiny guest instead of the Linux test guest.
        #[arg(long)]
        tiny: bool,
    },
    /// A live view of a running VM's exits by reason (kvm_stat style),
    /// through its API socket.
    Stat(stat::StatArgs),
    /// Restore a VM from a snapshot (state file + memory file) and run it.
    Restore(Box<snapshot_cli::RestoreArgs>),
    /// Start N clones of a snapshot, each a `restore` process with its own
    /// identity (VM generation ID, serial output, vsock CID, MACs, MMDS
    /// data), sharing the memory file copy-on-write.
    Fork(Box<fork::ForkArgs>),
    /// The fork helper of `PUT /ferrovisor/fork` (started by `--enable-fork`;
    /// requests on standard input).
    #[command(hide = true)]
    ForkHelper {
        /// The clones run without syscall filters.
        #[arg(long)]
        no_seccomp: bool,
    },
    /// Wait for a live migration on a TCP address, then run the VM it
    /// brings (see docs/CLI.md).
    MigrateReceive(migrate::ReceiveArgs),
    /// Ask a running VM (through its API socket) to migrate to a
    /// destination that `migrate-receive` started; the source exits when
    /// the destination runs the VM.
    MigrateSend(migrate::SendArgs),
    /// Work on snapshot files.
    #[command(subcommand)]
    Snapshot(snapshot_cli::SnapshotCommand),
    /// Print a shell completion script.
    Completions(cli_docs::CompletionsArgs),
    /// Print the man page (or write all of them with --dir).
    Manpage(cli_docs::ManpageArgs),
}

#[derive(clap::Args)]
pub(crate) struct RunArgs {
    /// Kernel: a Linux bzImage or vmlinux, a Multiboot kernel, or a bare
    /// 64-bit ELF.
    #[arg(long)]
    kernel: PathBuf,
    /// Initial ramdisk (Linux), or the first module (Multiboot).
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Kernel command line [default: "console=ttyS0 reboot=k panic=-1", or
    /// "console=hvc0 reboot=k panic=-1" with --console virtio].
    #[arg(long)]
    cmdline: Option<String>,
    /// The guest's console, which standard input feeds: serial (COM1, the
    /// guest's ttyS0) or virtio (a virtio console, the guest's hvc0). With
    /// virtio the UART stays, for early messages (earlycon=uart,io,0x3f8 or
    /// console=ttyS0 on the command line), and its output goes to standard
    /// output too; only the virtio console gets the input. A kernel whose
    /// virtio_console is a module has no console until the module loads
    /// (the test guest's init reopens it then).
    #[arg(long, default_value = "serial", value_name = "serial|virtio")]
    console: vmm::ConsoleDevice,
    /// Guest RAM: a number of MiB or a size with K/M/G suffix.
    #[arg(long, short = 'm', default_value = "256M", value_parser = size::parse_size)]
    memory: u64,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    cpus: u32,
    /// Accelerator: auto, kvm or emu.
    #[arg(long, default_value = "auto")]
    accel: Accel,
    /// Boot protocol: auto, linux, bare, multiboot or pvh.
    #[arg(long, default_value = "auto")]
    boot: arch::boot::BootProtocol,
    /// Print a table of VM exits by reason for each vCPU at exit.
    #[arg(long)]
    stats: bool,
    /// Serve gdb's remote protocol on this TCP port of 127.0.0.1 (gdb:
    /// `target remote :PORT`); each vCPU is a gdb thread.
    #[arg(long, value_name = "PORT")]
    gdb: Option<u16>,
    /// With --gdb: start with the vCPUs stopped, until gdb continues them
    /// (QEMU's -S).
    #[arg(long, requires = "gdb")]
    gdb_wait: bool,
    /// No syscall filters. By default every thread runs under its kind's
    /// seccomp filter (docs/SECURITY.md); a forbidden syscall ends the
    /// process with status 148.
    #[arg(long, conflicts_with = "seccomp_filter")]
    no_seccomp: bool,
    /// Syscall filters from this seccompiler JSON file (one filter per
    /// thread kind: vmm, api, vcpu, virtio-blk, ...; docs/SECURITY.md)
    /// instead of Ferrovisor's own.
    #[arg(long, value_name = "FILE")]
    seccomp_filter: Option<PathBuf>,
    /// A virtio-blk disk on a raw image: path=IMG[,readonly=on][,id=ID]
    /// (repeatable; the guest sees vda, vdb, ... in this order), with an
    /// optional rate limiter: bw=SIZE[/MS] (bytes per MS milliseconds,
    /// default 1000: bw=2M is 2 MiB/s), ops=N[/MS], bw_burst=SIZE,
    /// ops_burst=N (one-time bursts).
    #[arg(long = "disk", value_name = "path=IMG[,readonly=on][,id=ID][,format=F][,cache=C][,bw=SIZE[/MS]][,ops=N[/MS]]", value_parser = disk::parse_disk)]
    disks: Vec<vmm::DiskConfig>,
    /// A virtio-rng entropy device fed from the host's /dev/urandom;
    /// optionally rate-limited as --disk is (--rng=bw=1K,ops=10).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "",
          value_name = "bw=SIZE[/MS][,ops=N[/MS]]", value_parser = limits::parse_rng)]
    rng: Option<virtio::throttle::Limits>,
    /// How the virtio devices attach: mmio (virtio-mmio windows in the
    /// DSDT, the default: the path the end-to-end tests exercise most) or
    /// pci (virtio-pci functions with MSI-X on PCI bus 0, with ECAM).
    #[arg(long, default_value = "mmio", value_name = "mmio|pci")]
    transport: vmm::VirtioTransport,
    /// A virtio-net device on an existing host TAP interface:
    /// tap=NAME[,mac=MAC][,offload=off] (repeatable; the guest sees eth0,
    /// eth1, ...; the default MAC of the n-th is 06:00:00:00:00:<n+1>;
    /// checksum and TCP segmentation offloads are on unless offload=off;
    /// rate limiters as --disk's with an rx_ or tx_ prefix: rx_bw=SIZE[/MS],
    /// tx_ops=N[/MS], rx_bw_burst=SIZE, ...).
    #[arg(long = "net", value_name = "tap=NAME[,mac=MAC][,offload=off][,rx_bw=..][,tx_bw=..]", value_parser = net::parse_net)]
    nets: Vec<vmm::NetConfig>,
    /// A virtio-vsock device: the guest's CID (3 or more) and a Unix socket
    /// for the host side, as Firecracker's. Host programs connect to PATH
    /// and write "CONNECT <port>\n" to reach the guest's port (answer:
    /// "OK <host_port>\n", then the stream); the guest's connections to
    /// host port P go to the Unix socket PATH_P.
    #[arg(long, value_name = "cid=N,socket=PATH", value_parser = vsock::parse_vsock)]
    vsock: Option<vmm::VsockConfig>,
    /// The CPU model, in QEMU's -cpu syntax: MODEL[,+FEATURE|-FEATURE|
    /// FEATURE=on|off|vendor=STRING|host-phys-bits]... MODEL is host or max
    /// (every feature the accelerator offers), qemu64 or Opteron_G1 (QEMU's
    /// feature sets of those models); features use QEMU's names (x2apic,
    /// tsc-deadline, pcid, invpcid, umip, pku, smap, ...) and a feature
    /// turned on must be one the accelerator offers.
    #[arg(long, default_value = "max", value_name = "MODEL[,FEATURE...]", value_parser = cpu_spec)]
    cpu: String,
    /// A custom CPU template: Firecracker's /cpu-config JSON (CPUID and
    /// MSR modifiers, kvm_capabilities), applied after --cpu.
    #[arg(long, value_name = "FILE")]
    cpu_template: Option<std::path::PathBuf>,
    /// A test device (repeatable): pc-testdev is QEMU's ISA test device
    /// that kvm-unit-tests use (a scratch register at ports 0xe0-0xe3 and
    /// interrupt lines at 0x2000 + GSI).
    #[arg(long = "device", value_name = "pc-testdev")]
    devices: Vec<TestDevice>,
    /// No i8254 PIT (QEMU's -machine pit=off): ports 0x40-0x43 and 0x61
    /// are then unclaimed.
    #[arg(long)]
    no_pit: bool,
    /// Turn on KVM's trace events whose names match PATTERN (globs, comma
    /// separated: kvm_exit, kvm_pio,kvm_mmio, kvm_apic*, kvm_*), written in
    /// the kernel's trace format. See docs/TRACING.md.
    #[arg(long, value_name = "PATTERN")]
    trace: Option<String>,
    /// Where trace events go [default: standard error].
    #[arg(long, value_name = "PATH")]
    trace_file: Option<PathBuf>,
}

/// Checks a `--cpu` value (kept as text: the VM description stores it).
fn cpu_spec(s: &str) -> Result<String, arch::cpu_model::CpuModelError> {
    s.parse::<arch::cpu_model::CpuModel>()
        .map(|_| s.to_string())
}

/// The devices `--device` adds.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TestDevice {
    #[value(name = "pc-testdev")]
    PcTestdev,
}

/// One line: the error and its causes.
pub(crate) fn error_line(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

pub(crate) fn fail(message: &str, status: u8) -> ExitCode {
    say!("ferrovisor: {message}");
    ExitCode::from(status)
}

fn main() -> ExitCode {
    // With options first, ferrovisor is Firecracker.
    let argv: Vec<String> = match std::env::args_os()
        .skip(1)
        .map(|a| a.into_string())
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(argv) => argv,
        Err(bad) => return fail(&format!("argument {bad:?} is not valid UTF-8"), 2),
    };
    let argv0 = std::env::args_os().next().unwrap_or_default();
    // The jailer (`ferrovisor jail ARGS`, or under the name `jailer`): first,
    // while the process has one thread.
    if let Some(status) = jail_dispatch(&argv0, &argv) {
        return ExitCode::from(status);
    }
    // QEMU's command line: as `ferrovisor qemu ARGS`, or under QEMU's name.
    if qemu::invoked_as_qemu(&argv0) {
        let program = std::path::Path::new(&argv0)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        return signals::exit_code(qemu::main(&program, &argv));
    }
    if argv.first().is_some_and(|a| a == "qemu") {
        return signals::exit_code(qemu::main("ferrovisor qemu", &argv[1..]));
    }
    if argv.is_empty() {
        // No arguments: the help, as a usage error.
        out::stderr(
            &<Cli as clap::CommandFactory>::command()
                .render_help()
                .to_string(),
        );
        return ExitCode::from(exit_status::USAGE);
    }
    if argv[0].starts_with('-') && !is_own_global_option(&argv[0]) {
        return signals::exit_code(firecracker::main(&argv));
    }

    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            return fail(&usage::one_line(&e), exit_status::USAGE);
        }
    };
    if let Command::ForkHelper { no_seccomp } = cli.command {
        // Without a log subscriber of its own: the clones it forks
        // install Firecracker's logger.
        return fork_helper::run(no_seccomp);
    }
    if let Err(message) = logging::install(cli.log_level.as_deref(), cli.log_file.as_deref()) {
        return fail(&message, exit_status::USAGE);
    }

    match cli.command {
        Command::Run(args) => {
            let seccomp = seccomp::setting(args.no_seccomp, args.seccomp_filter.as_deref());
            if let Err(message) = seccomp::init(seccomp) {
                return fail(&message, 1);
            }
            if let Err(e) = signals::install() {
                return fail(&format!("cannot take signals: {e}"), 1);
            }
            if let Some(id) = disk::duplicate_id(&args.disks) {
                return fail(&format!("two --disk options have id={id}"), 2);
            }
            if let Some(tap) = net::duplicate_tap(&args.nets) {
                return fail(&format!("two --net options have tap={tap}"), 2);
            }
            if let Err(message) = trace::setup(args.trace.as_deref(), args.trace_file.as_deref()) {
                return fail(&message, 2);
            }
            let spec = match runspec::spec_from_run(&args) {
                Ok(spec) => spec,
                Err(message) => return fail(&message, 2),
            };
            let gdb = match args.gdb {
                Some(port) => match gdb::GdbServer::bind(format!("127.0.0.1:{port}")) {
                    Ok(server) => Some(gdb::GdbStart {
                        server,
                        wait: args.gdb_wait,
                    }),
                    Err(message) => return fail(&message, 1),
                },
                None => None,
            };
            match vmm::machine_config(&spec, args.accel) {
                Ok(config) => signals::exit_code(run(&config, args.stats, gdb)),
                Err(e) => fail(&error_line(&e), 1),
            }
        }
        Command::Demo { accel, tiny } => match seccomp::init(sandbox::Setting::Default) {
            Ok(()) => demo::run(accel, tiny),
            Err(message) => fail(&message, 1),
        },
        Command::Stat(args) => stat::run(&args),
        Command::Restore(args) => snapshot_cli::restore(&args),
        Command::Fork(args) => fork::run(&args),
        Command::ForkHelper { no_seccomp } => fork_helper::run(no_seccomp),
        Command::Snapshot(command) => snapshot_cli::snapshot(&command),
        Command::MigrateReceive(args) => migrate::receive(&args),
        Command::MigrateSend(args) => migrate::send(&args),
        Command::Completions(args) => cli_docs::completions(&args),
        Command::Manpage(args) => cli_docs::manpage(&args),
    }
}

/// `--log-level`/`--log-file` before the subcommand are ours, not
/// Firecracker's options.
fn is_own_global_option(arg: &str) -> bool {
    ["--log-level", "--log-file"]
        .iter()
        .any(|o| arg == *o || arg.strip_prefix(o).is_some_and(|r| r.starts_with('=')))
}

/// Runs the jailer when invoked as `jailer` or `ferrovisor jail`; its
/// exit status when it did not exec the VMM.
fn jail_dispatch(argv0: &std::ffi::OsStr, argv: &[String]) -> Option<u8> {
    if std::path::Path::new(argv0).file_name() == Some(std::ffi::OsStr::new("jailer")) {
        return Some(jailer::main("jailer", argv));
    }
    if argv.first().is_some_and(|a| a == "jail") {
        return Some(jailer::main("ferrovisor jail", &argv[1..]));
    }
    None
}

/// Runs `run`'s and `demo`'s machine; the status is one of
/// [`exit_status`]'s.
pub(crate) fn run(
    config: &MachineConfig,
    print_stats: bool,
    gdb: Option<gdb::GdbStart>,
) -> ExitCode {
    match Machine::new(config) {
        Ok(machine) => run_built(machine, print_stats, gdb),
        Err(e) => fail(&error_line(&e), 1),
    }
}

/// [`run`] for a machine already built (`run` with its gdb stub,
/// `ferrovisor restore`).
pub(crate) fn run_built(
    machine: Machine,
    print_stats: bool,
    gdb: Option<gdb::GdbStart>,
) -> ExitCode {
    run_built_then(machine, print_stats, gdb, || {})
}

/// [`run_built`], calling `on_running` once the machine runs (its vCPUs
/// started, the main thread's filter installed).
pub(crate) fn run_built_then(
    machine: Machine,
    print_stats: bool,
    gdb: Option<gdb::GdbStart>,
    on_running: impl FnOnce(),
) -> ExitCode {
    match wait_machine_then(machine, gdb, on_running) {
        Ok(report) => {
            describe(&report, print_stats);
            ExitCode::from(exit_status::of(&report.exit))
        }
        Err(status) => status,
    }
}

/// Runs a machine to its end and reports how it ended; the error is the
/// status of a machine that could not run.
pub(crate) fn run_report(
    config: &MachineConfig,
    print_stats: bool,
) -> Result<vmm::RunReport, ExitCode> {
    let machine = Machine::new(config).map_err(|e| fail(&error_line(&e), 1))?;
    let report = wait_machine(machine, None)?;
    describe(&report, print_stats);
    Ok(report)
}

/// Runs a built machine to its end; the exit status follows how it ended
/// (the statuses of [`vmm::MachineExit::exit_status`]: the Firecracker and
/// QEMU front ends'). With `gdb`, a gdb stub serves the machine (which
/// starts paused if asked).
pub(crate) fn run_machine(
    machine: Machine,
    print_stats: bool,
    gdb: Option<gdb::GdbStart>,
) -> ExitCode {
    match wait_machine(machine, gdb) {
        Ok(report) => finish(report, print_stats),
        Err(status) => status,
    }
}

/// Starts a built machine (with its gdb stub) and waits for its end.
fn wait_machine(machine: Machine, gdb: Option<gdb::GdbStart>) -> Result<vmm::RunReport, ExitCode> {
    wait_machine_then(machine, gdb, || {})
}

fn wait_machine_then(
    machine: Machine,
    gdb: Option<gdb::GdbStart>,
    on_running: impl FnOnce(),
) -> Result<vmm::RunReport, ExitCode> {
    let started = match &gdb {
        Some(g) if g.wait => machine.start_paused(),
        _ => machine.start(),
    };
    match started {
        Ok(running) => {
            if let Some(g) = gdb {
                if let Err(message) = g.server.spawn(running.debugger()) {
                    return Err(fail(&message, 1));
                }
            }
            signals::attach(running.handle());
            if let Err(message) = seccomp::enter_main() {
                return Err(fail(&message, 1));
            }
            on_running();
            Ok(running.wait())
        }
        Err(e) => Err(fail(&error_line(&e), 1)),
    }
}

/// Reports how a machine ended; the exit status follows it (the statuses
/// of [`vmm::MachineExit::exit_status`]: the Firecracker and QEMU front
/// ends').
pub(crate) fn finish(report: vmm::RunReport, print_stats: bool) -> ExitCode {
    describe(&report, print_stats);
    ExitCode::from(report.exit.exit_status() as u8)
}

/// Prints the statistics (when asked for) and how the machine ended.
fn describe(report: &vmm::RunReport, print_stats: bool) {
    if print_stats {
        out::stderr(&stats::table(report));
    }
    match &report.exit {
        MachineExit::TripleFault { vcpu } => {
            say!("ferrovisor: vCPU {vcpu} triple-faulted; the VM was stopped")
        }
        MachineExit::HostQuit => say!("ferrovisor: the VM was ended from the console"),
        MachineExit::ControllerPanicked => {
            say!("ferrovisor: the VM's controller thread failed")
        }
        MachineExit::Failed { vcpu, error } => {
            say!("ferrovisor: vCPU {vcpu} stopped: {}", error_line(error))
        }
        _ => {}
    }
}
