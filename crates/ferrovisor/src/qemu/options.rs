//! QEMU's command-line syntax: single-dash long options (`-m 512`, and
//! `--m 512` alike), each either a flag or followed by one value. Only
//! the options Ferrovisor maps are accepted; any other is one error that
//! names it (QEMU's "invalid option" for names QEMU does not have either).

use super::QemuError;

/// Options that take a value.
const WITH_VALUE: &[&str] = &[
    "M", "machine", "accel", "cpu", "m", "smp", "kernel", "initrd", "append", "drive", "device",
    "netdev", "chardev", "serial", "display", "vnc", "name", "global", "qmp", "monitor", "object",
    "mon", "pidfile", "gdb",
];

/// Options without a value.
const FLAGS: &[&str] = &[
    "nodefaults",
    "nographic",
    "no-reboot",
    "no-shutdown",
    "S",
    "s",
    "enable-kvm",
    "no-user-config",
    "no-hpet",
    "version",
    "h",
    "help",
];

/// QEMU options Ferrovisor does not map (those scripts use most): named
/// as unsupported rather than unknown.
const UNSUPPORTED: &[&str] = &[
    "hda",
    "hdb",
    "hdc",
    "hdd",
    "cdrom",
    "fda",
    "fdb",
    "boot",
    "bios",
    "L",
    "pflash",
    "net",
    "nic",
    "usb",
    "usbdevice",
    "vga",
    "sdl",
    "curses",
    "full-screen",
    "spice",
    "rtc",
    "icount",
    "overcommit",
    "mem-path",
    "mem-prealloc",
    "numa",
    "d",
    "D",
    "trace",
    "snapshot",
    "daemonize",
    "incoming",
    "loadvm",
    "watchdog-action",
    "action",
    "chroot",
    "runas",
    "sandbox",
    "parallel",
    "debugcon",
    "audiodev",
    "audio",
    "k",
    "fsdev",
    "virtfs",
    "smbios",
    "fw_cfg",
    "dtb",
    "option-rom",
    "no-acpi",
    "semihosting",
    "tpmdev",
    "iscsi",
    "blockdev",
    "add-fd",
    "readconfig",
    "writeconfig",
    "msg",
    "preconfig",
    "compat",
    "plugin",
    "run-with",
    "async-teardown",
    "enable-sync-profile",
    "set",
    "uuid",
    "win2k-hack",
    "no-fd-bootchk",
    "acpitable",
    "sd",
    "mtdblock",
    "device-help",
];

/// One option as given: its name without dashes, and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opt {
    pub name: String,
    pub value: Option<String>,
}

/// Splits `args` into options, refusing unknown and unsupported ones and
/// stray words (QEMU's disk image argument).
pub fn split(args: &[String]) -> Result<Vec<Opt>, QemuError> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let Some(name) = arg
            .strip_prefix("--")
            .or_else(|| arg.strip_prefix('-'))
            .filter(|n| !n.is_empty())
        else {
            return Err(QemuError::new(format!(
                "{arg}: a disk image as a bare argument is not supported by Ferrovisor \
                 (use -drive file={arg},format=raw,if=virtio)"
            )));
        };
        // `--opt=value` is QEMU's too.
        let (name, inline) = match name.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (name, None),
        };
        if name == "M" || WITH_VALUE.contains(&name) {
            let value = match inline {
                Some(v) => v,
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| QemuError::new(format!("-{name}: requires an argument")))?,
            };
            out.push(Opt {
                name: if name == "M" { "machine" } else { name }.to_string(),
                value: Some(value),
            });
        } else if FLAGS.contains(&name) {
            if inline.is_some() {
                return Err(QemuError::new(format!("-{name}: takes no argument")));
            }
            out.push(Opt {
                name: name.to_string(),
                value: None,
            });
        } else if UNSUPPORTED.contains(&name) {
            return Err(QemuError::new(format!(
                "-{name}: this QEMU option is not supported by Ferrovisor (see docs/QEMU.md)"
            )));
        } else {
            return Err(QemuError::new(format!("-{name}: invalid option")));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn single_and_double_dashes_values_and_flags() {
        let o = split(&args(&[
            "-M",
            "microvm",
            "--no-reboot",
            "-m",
            "512m",
            "--kernel=/k",
            "-nodefaults",
        ]))
        .unwrap();
        let names: Vec<_> = o.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["machine", "no-reboot", "m", "kernel", "nodefaults"]);
        assert_eq!(o[0].value.as_deref(), Some("microvm"));
        assert_eq!(o[3].value.as_deref(), Some("/k"));
        assert_eq!(o[1].value, None);
    }

    #[test]
    fn the_lists_do_not_overlap() {
        for name in UNSUPPORTED {
            assert!(
                !WITH_VALUE.contains(name) && !FLAGS.contains(name),
                "{name}"
            );
        }
        for name in FLAGS {
            assert!(!WITH_VALUE.contains(name), "{name}");
        }
    }

    #[test]
    fn unknown_unsupported_missing_values_and_bare_words_are_named() {
        let e = split(&args(&["-overcommit", "cpu-pm=on"])).unwrap_err();
        assert!(e.to_string().starts_with("-overcommit: "), "{e}");
        assert!(e.to_string().contains("not supported"), "{e}");
        let e = split(&args(&["-frobnicate"])).unwrap_err();
        assert_eq!(e.to_string(), "-frobnicate: invalid option");
        let e = split(&args(&["-kernel"])).unwrap_err();
        assert_eq!(e.to_string(), "-kernel: requires an argument");
        let e = split(&args(&["disk.img"])).unwrap_err();
        assert!(e.to_string().starts_with("disk.img: "), "{e}");
    }
}
