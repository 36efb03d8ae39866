//! The kinds of thread Ferrovisor runs; each has its own filter.

/// A kind of thread. Every thread of the process is one of these and runs
/// under that kind's filter (see `docs/SECURITY.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ThreadKind {
    /// The main thread once the VM runs, and the machine's controller
    /// thread (pause/resume, drive updates, the end of the VM).
    Vmm,
    /// The API server: the accept loop and one thread per connection.
    Api,
    /// A vCPU thread: runs the guest and its port/MMIO accesses.
    Vcpu,
    /// The virtio-blk worker: reads and writes the disk image.
    VirtioBlk,
    /// The virtio-net worker: reads and writes the TAP device.
    VirtioNet,
    /// The virtio-vsock worker: the host side's Unix sockets.
    VirtioVsock,
    /// The virtio-rng worker: reads the host's entropy source.
    VirtioRng,
    /// The virtio-console worker: writes the guest's output.
    VirtioConsole,
    /// The console's standard-input reader.
    Stdin,
    /// The console's output writer: drains the UART's and the virtio
    /// console's buffered output to standard output or a file.
    ConsoleOut,
    /// The platform timer (PIT/RTC/LAPIC deadlines of the VMM's devices).
    PlatformTimer,
    /// The emu accelerator's irqfd thread (eventfd → guest interrupt).
    Irqfd,
    /// The emu accelerator's JIT compiler thread (guest blocks → machine
    /// code bytes; the vCPU threads map them).
    JitCompiler,
    /// The thread that takes SIGTERM, SIGINT and SIGHUP.
    Signals,
    /// The periodic metrics writer (Firecracker front end).
    Metrics,
    /// Starts every other thread (see [`crate::spawn`]); its filter is the
    /// union of the others, which it hands down to each thread it starts.
    Launcher,
}

impl ThreadKind {
    pub const ALL: [ThreadKind; 16] = [
        ThreadKind::Vmm,
        ThreadKind::Api,
        ThreadKind::Vcpu,
        ThreadKind::VirtioBlk,
        ThreadKind::VirtioNet,
        ThreadKind::VirtioVsock,
        ThreadKind::VirtioRng,
        ThreadKind::VirtioConsole,
        ThreadKind::Stdin,
        ThreadKind::ConsoleOut,
        ThreadKind::PlatformTimer,
        ThreadKind::Irqfd,
        ThreadKind::JitCompiler,
        ThreadKind::Signals,
        ThreadKind::Metrics,
        ThreadKind::Launcher,
    ];

    /// The name in log lines and in a `--seccomp-filter` file (`vmm`,
    /// `api` and `vcpu` are Firecracker's names).
    pub const fn name(self) -> &'static str {
        match self {
            ThreadKind::Vmm => "vmm",
            ThreadKind::Api => "api",
            ThreadKind::Vcpu => "vcpu",
            ThreadKind::VirtioBlk => "virtio-blk",
            ThreadKind::VirtioNet => "virtio-net",
            ThreadKind::VirtioVsock => "virtio-vsock",
            ThreadKind::VirtioRng => "virtio-rng",
            ThreadKind::VirtioConsole => "virtio-console",
            ThreadKind::Stdin => "stdin",
            ThreadKind::ConsoleOut => "console-out",
            ThreadKind::PlatformTimer => "platform-timer",
            ThreadKind::Irqfd => "irqfd",
            ThreadKind::JitCompiler => "jit-compiler",
            ThreadKind::Signals => "signals",
            ThreadKind::Metrics => "metrics",
            ThreadKind::Launcher => "launcher",
        }
    }

    pub fn from_name(name: &str) -> Option<ThreadKind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    pub(crate) fn index(self) -> u8 {
        Self::ALL.iter().position(|&k| k == self).unwrap_or(0) as u8
    }

    pub(crate) fn from_index(index: u8) -> Option<ThreadKind> {
        Self::ALL.get(usize::from(index)).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_indices_round_trip() {
        for kind in ThreadKind::ALL {
            assert_eq!(ThreadKind::from_name(kind.name()), Some(kind));
            assert_eq!(ThreadKind::from_index(kind.index()), Some(kind));
        }
        assert_eq!(ThreadKind::from_name("nope"), None);
    }
}
