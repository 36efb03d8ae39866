//! The exit statuses of `ferrovisor run` and `ferrovisor demo`: one each for
//! how the VM ended, documented in `--help` and docs/CLI.md (a test checks
//! that the two agree). The Firecracker and QEMU front ends keep their own
//! programs' statuses.

use vmm::MachineExit;

/// The guest powered off (ACPI S5, or its init's `poweroff`).
pub const POWER_OFF: u8 = 0;
/// Ferrovisor failed: a configuration the VM cannot have, an accelerator
/// error, a vCPU that stopped on an error.
pub const ERROR: u8 = 1;
/// The command line is wrong (or absent).
pub const USAGE: u8 = 2;
/// The guest reset the machine (reboot, or a panic with panic=-1); the
/// VM ends, as a microVM does.
pub const RESET: u8 = 3;
/// A vCPU triple-faulted.
pub const TRIPLE_FAULT: u8 = 4;
/// The user ended the VM from the console (Ctrl-A x).
pub const USER_QUIT: u8 = 5;

/// The status of a VM that ended so.
pub fn of(exit: &MachineExit) -> u8 {
    match exit {
        MachineExit::PowerOff => POWER_OFF,
        MachineExit::Reset => RESET,
        MachineExit::TripleFault { .. } => TRIPLE_FAULT,
        MachineExit::HostQuit => USER_QUIT,
        // Only a signal stops a `run` VM: signals::exit_code gives its
        // status.
        MachineExit::Stopped | MachineExit::Migrated => POWER_OFF,
        // The guest's own status, written to the debug-exit port (test
        // guests).
        MachineExit::DebugExit { status } => *status as u8,
        MachineExit::Failed { .. } | MachineExit::ControllerPanicked => ERROR,
    }
}

/// The table, as `--help` shows it and docs/CLI.md has it.
pub const TABLE: &str = "\
  0    the guest powered off
  1    error (Ferrovisor failed, or a vCPU stopped on an error)
  2    usage: a wrong command line, or none
  3    the guest reset the machine (reboot; a panic with panic=-1)
  4    a vCPU triple-faulted
  5    the user quit from the console (Ctrl-A x)
  130  SIGINT, 143 SIGTERM, 156 SIGHUP (the VM was stopped cleanly)
  148  a thread made a syscall its seccomp filter forbids
  a test guest that writes its status to the debug-exit port exits with it";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statuses_are_distinct() {
        let all = [
            of(&MachineExit::PowerOff),
            ERROR,
            USAGE,
            of(&MachineExit::Reset),
            of(&MachineExit::TripleFault { vcpu: 0 }),
            of(&MachineExit::HostQuit),
            crate::signals::SIGHUP_EXIT,
            128 + libc::SIGINT as u8,
            128 + libc::SIGTERM as u8,
        ];
        for (i, a) in all.iter().enumerate() {
            assert!(!all[i + 1..].contains(a), "{a} twice: {all:?}");
        }
    }

    /// Each status of the table is where the table says: the table's
    /// first column against the constants.
    #[test]
    fn the_table_names_each_status_once() {
        let codes: Vec<&str> = TABLE
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|w| w.chars().all(|c| c.is_ascii_digit()))
            .collect();
        assert_eq!(codes, ["0", "1", "2", "3", "4", "5", "130", "148"]);
        for (code, words) in [
            (POWER_OFF, "powered off"),
            (ERROR, "error"),
            (USAGE, "usage"),
            (RESET, "reset"),
            (TRIPLE_FAULT, "triple-faulted"),
            (USER_QUIT, "Ctrl-A x"),
        ] {
            let line = TABLE
                .lines()
                .find(|l| l.split_whitespace().next() == Some(&code.to_string()))
                .unwrap();
            assert!(line.contains(words), "{code}: {line}");
        }
    }

    /// docs/CLI.md shows the same table.
    #[test]
    fn the_documentation_has_the_table() {
        let doc = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/CLI.md"),
        )
        .unwrap();
        assert!(doc.contains(TABLE), "docs/CLI.md lacks:\n{TABLE}");
    }
}
