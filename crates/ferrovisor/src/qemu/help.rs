//! What QEMU prints for -version, -help and the `help` values of
//! -device, -machine, -accel and -cpu, in QEMU's formats (scripts probe
//! them: kvm-unit-tests greps `-device '?'` for "pc-testdev" and reads
//! the version from the first line of `-h`).

use super::devices::DEVICES;
use super::machine::{ACCELERATORS, MACHINES};

/// The QEMU release whose command line this front end follows.
pub const QEMU_VERSION: &str = "9.2.0";

pub fn version() -> String {
    format!(
        "QEMU emulator version {QEMU_VERSION} (Ferrovisor {})\n\
         Ferrovisor's QEMU-compatible front end: see docs/QEMU.md\n",
        env!("CARGO_PKG_VERSION")
    )
}

pub fn usage(program: &str) -> String {
    format!(
        "{}usage: {program} [options]\n\n\
         The options Ferrovisor maps (docs/QEMU.md says how):\n\
         -machine/-M [type=]pc|q35|microvm[,accel=kvm|tcg][,pit=on|off][,acpi=on]\n\
         \x20                [,kernel-irqchip=on|split]\n\
         -accel kvm|tcg   -enable-kvm        (tcg is Ferrovisor's emu accelerator)\n\
         -cpu host|max|qemu64|Opteron_G1[,+FEATURE|-FEATURE|vendor=...]\n\
         -m [size=]SIZE   -smp [cpus=]N[,sockets=,cores=,threads=]\n\
         -kernel FILE     -initrd FILE       -append CMDLINE\n\
         -drive file=FILE,if=virtio|none[,format=raw|qcow2][,readonly=on][,id=ID][,cache=writeback|writethrough|none|directsync|unsafe]\n\
         -device DRIVER[,PROP=VALUE...]      (-device help lists them)\n\
         -netdev tap,id=ID,ifname=TAP[,script=no,downscript=no]\n\
         -chardev stdio|file|null,id=ID[,path=FILE]\n\
         -chardev socket,id=ID,path=PATH,server=on,wait=off  -mon chardev=ID,mode=control\n\
         -object rng-random|rng-builtin,id=ID\n\
         -serial stdio|mon:stdio|file:FILE|null|none|chardev:ID\n\
         -nographic  -display none  -vnc none  -nodefaults  -no-user-config\n\
         -no-reboot  -no-shutdown  -no-hpet  -S  -name NAME  -pidfile FILE\n\
         -qmp unix:PATH,server=on,wait=off\n\
         -global kvm-pit.lost_tick_policy=discard\n\
         -version  -h/-help\n",
        version()
    )
}

pub fn devices() -> String {
    let mut out = String::new();
    for (title, buses) in [
        ("Storage devices", &["blk"][..]),
        ("Network devices", &["net"][..]),
        ("Input devices", &["serial", "virtconsole"][..]),
        (
            "Misc devices",
            &["debug-exit", "testdev", "rng", "vsock"][..],
        ),
    ] {
        out.push_str(&format!("{title}:\n"));
        for d in DEVICES
            .iter()
            .filter(|d| buses.iter().any(|b| d.name.contains(b)))
        {
            out.push_str(&format!("name \"{}\", bus {}\n", d.name, d.bus));
        }
        out.push('\n');
    }
    out
}

/// `-device NAME,help`: its properties.
pub fn device_props(name: &str) -> Option<String> {
    let d = DEVICES.iter().find(|d| d.name == name)?;
    let mut out = format!("{name} options:\n");
    for p in d.props {
        out.push_str(&format!("  {p}\n"));
    }
    Some(out)
}

pub fn machines() -> String {
    let mut out = String::from("Supported machines are:\n");
    for (name, desc, _) in MACHINES {
        out.push_str(&format!("{name:<20} {desc}\n"));
    }
    out
}

pub fn accels() -> String {
    let mut out = String::from("Accelerators supported in QEMU binary:\n");
    for a in ACCELERATORS {
        out.push_str(a);
        out.push('\n');
    }
    out
}

pub fn cpus() -> String {
    let mut out = String::from("Available CPUs:\n");
    for (name, desc) in [
        ("host", "every feature the accelerator offers"),
        ("max", "every feature the accelerator offers"),
        ("qemu64", "QEMU Virtual CPU version 2.5+"),
        ("Opteron_G1", "AMD Opteron 240 (Gen 1 Class Opteron)"),
    ] {
        out.push_str(&format!("x86 {name:<20} {desc}\n"));
    }
    out.push_str("\nRecognized CPUID flags:\n ");
    for (name, _) in arch::cpu_model::FEATURES {
        out.push(' ');
        out.push_str(name);
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_unit_tests_probes_find_what_they_look_for() {
        // x86/run: grep -F -e '"pc-testdev"'; it must not find pci-testdev,
        // which Ferrovisor does not have.
        let d = devices();
        assert!(d.contains("name \"pc-testdev\", bus ISA"));
        assert!(!d.contains("pci-testdev"));
        for kind in DEVICES {
            assert!(
                d.contains(&format!("\"{}\"", kind.name)),
                "{} missing",
                kind.name
            );
        }
        // search_qemu_binary: --help | grep QEMU; env_params reads the
        // version as the 4th-6th words of `-h | head -1` split at spaces and dots.
        let first = usage("qemu-system-x86_64")
            .lines()
            .next()
            .unwrap()
            .to_string();
        let words: Vec<&str> = first.split([' ', '.']).collect();
        assert_eq!(&words[..3], ["QEMU", "emulator", "version"]);
        assert_eq!(words[3..6], QEMU_VERSION.split('.').collect::<Vec<_>>()[..]);
        assert!(machines().contains("microvm"));
        assert!(accels().contains("tcg"));
        assert!(cpus().contains("qemu64") && cpus().contains("x2apic"));
        assert!(device_props("virtio-blk-pci").unwrap().contains("drive"));
    }
}
