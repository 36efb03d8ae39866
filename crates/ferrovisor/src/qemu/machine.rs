//! The machine-wide options: -machine, -accel/-enable-kvm, -cpu, -m,
//! -smp and -global.

use api::spec::Transport;
use vmm::Accel;

use super::props::{parse_bool, Props};
use super::QemuError;

/// The machine types, as `-machine help` lists them: name, description,
/// the virtio transport it gives, whether it is the default.
pub const MACHINES: &[(&str, &str, Transport)] = &[
    (
        "pc",
        "Standard PC (i440FX + PIIX, 1996) (default)",
        Transport::Pci,
    ),
    ("q35", "Standard PC (Q35 + ICH9, 2009)", Transport::Pci),
    ("microvm", "microvm (i386)", Transport::Mmio),
];

/// The accelerators, as `-accel help` lists them (QEMU's names; tcg is
/// Ferrovisor's emu).
pub const ACCELERATORS: &[&str] = &["kvm", "tcg"];

/// What -machine says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineOpts {
    pub kind: &'static str,
    pub transport: Transport,
    pub pit: bool,
    /// `-machine accel=`'s list (kvm:tcg), in order.
    pub accel: Vec<String>,
}

impl Default for MachineOpts {
    fn default() -> Self {
        MachineOpts {
            kind: "pc",
            transport: Transport::Pci,
            pit: true,
            accel: Vec::new(),
        }
    }
}

/// The machine type `name` stands for (QEMU's versioned names too:
/// pc-i440fx-9.2, pc-q35-9.2).
fn machine_kind(name: &str) -> Option<(&'static str, Transport)> {
    let base = if name.starts_with("pc-i440fx-") || name.starts_with("pc-q35-") {
        if name.starts_with("pc-q35-") {
            "q35"
        } else {
            "pc"
        }
    } else {
        name
    };
    MACHINES
        .iter()
        .find(|(n, _, _)| *n == base)
        .map(|(n, _, t)| (*n, *t))
}

/// Applies one `-machine` value to `m`.
pub fn machine(m: &mut MachineOpts, mut p: Props) -> Result<(), QemuError> {
    if let Some(name) = p.take("type") {
        let (kind, transport) = machine_kind(&name).ok_or_else(|| {
            QemuError::new(format!(
                "-machine {name}: unsupported machine type (Ferrovisor has pc, q35 and microvm; \
                 use -machine help)"
            ))
        })?;
        m.kind = kind;
        m.transport = transport;
    }
    if let Some(list) = p.take("accel") {
        m.accel = list.split(':').map(str::to_string).collect();
    }
    // OnOffAuto: auto is on, as for QEMU on x86.
    if let Some(v) = p.take("pit") {
        m.pit = match v.as_str() {
            "auto" => true,
            v => parse_bool(v).ok_or_else(|| {
                QemuError::new(format!("-machine pit={v}: takes on, off or auto"))
            })?,
        };
    }
    // What every Ferrovisor machine has: asking for it is fine, asking
    // it away is not possible.
    for (key, fixed) in [
        (
            "acpi",
            "ACPI tables (the virtio-mmio devices are described there)",
        ),
        ("pic", "an i8259 PIC"),
        ("rtc", "an MC146818 RTC"),
        ("isa-serial", "a COM1 UART"),
        (
            "auto-kernel-cmdline",
            "its virtio-mmio devices described in ACPI",
        ),
    ] {
        if let Some(v) = p.take(key) {
            match v.as_str() {
                "on" | "auto" | "yes" | "true" => {}
                _ => {
                    return Err(QemuError::new(format!(
                        "-machine {key}={v}: not supported: every Ferrovisor machine has {fixed}"
                    )))
                }
            }
        }
    }
    // What no Ferrovisor machine has: off is what it is.
    for (key, absent) in [
        ("x-option-roms", "option ROMs"),
        ("vmport", "a VMware I/O port"),
        ("usb", "USB"),
        ("smm", "SMM"),
        ("graphics", "graphics"),
        ("hpet", "an HPET"),
        ("sata", "SATA"),
    ] {
        if let Some(v) = p.take(key) {
            let ok = v == "auto" || parse_bool(&v) == Some(false);
            // x-option-roms=on only loads ROMs that are not there.
            if !ok && key != "x-option-roms" {
                return Err(QemuError::new(format!(
                    "-machine {key}={v}: not supported: Ferrovisor's machines have no {absent}"
                )));
            }
        }
    }
    kernel_irqchip(&mut p, "-machine")?;
    p.finish("-machine")
}

/// `kernel-irqchip=` (of -machine, and of -accel kvm): on and split both
/// give the guest the LAPICs and the IOAPIC it expects; off (a userspace
/// LAPIC) is not something Ferrovisor has.
fn kernel_irqchip(p: &mut Props, option: &str) -> Result<(), QemuError> {
    match p.take("kernel-irqchip") {
        Some(v) if !matches!(v.as_str(), "on" | "split" | "true" | "yes") => Err(QemuError::new(
            format!("{option} kernel-irqchip={v}: not supported (on and split are)"),
        )),
        _ => Ok(()),
    }
}

/// The accelerator: `-machine accel=` or `-accel`/`-enable-kvm` (not
/// both, as QEMU); tcg is emu; a kvm:tcg list is auto (kvm when usable).
/// QEMU's default is tcg.
pub fn accelerator(machine: &[String], accel: &[String]) -> Result<Accel, QemuError> {
    if !machine.is_empty() && !accel.is_empty() {
        return Err(QemuError::new(
            "The -accel and \"-machine accel=\" options are incompatible".to_string(),
        ));
    }
    let list = if machine.is_empty() { accel } else { machine };
    for name in list {
        if !ACCELERATORS.contains(&name.as_str()) {
            return Err(QemuError::new(format!(
                "invalid accelerator {name} (Ferrovisor has kvm and tcg; use -accel help)"
            )));
        }
    }
    let mut distinct: Vec<&str> = Vec::new();
    for name in list {
        if !distinct.contains(&name.as_str()) {
            distinct.push(name);
        }
    }
    Ok(match distinct.as_slice() {
        [] | ["tcg"] => Accel::Emu,
        ["kvm"] => Accel::Kvm,
        ["kvm", "tcg"] => Accel::Auto,
        _ => {
            return Err(QemuError::new(format!(
                "accelerators {}: Ferrovisor takes kvm, tcg or kvm:tcg",
                distinct.join(":")
            )))
        }
    })
}

/// `-accel NAME[,PROPS]`: the name. tcg takes thread=multi (Ferrovisor's
/// emu runs each vCPU on a thread of its own), kvm kernel-irqchip=;
/// other properties are refused.
pub fn accel_option(mut p: Props) -> Result<String, QemuError> {
    let name = p.require("accel", "-accel")?;
    let what = format!("-accel {name}");
    match name.as_str() {
        "tcg" => {
            if let Some(t) = p.take("thread") {
                if t != "multi" {
                    return Err(QemuError::new(format!(
                        "{what},thread={t}: not supported (emu runs one thread per vCPU: multi)"
                    )));
                }
            }
        }
        "kvm" => kernel_irqchip(&mut p, &what)?,
        _ => {}
    }
    p.finish(&what)?;
    Ok(name)
}

/// `-m [size=]SIZE`, a whole number of MiB; QEMU's default is 128 MiB.
pub fn memory(mut p: Props) -> Result<u64, QemuError> {
    let size = p.require("size", "-m")?;
    p.finish("-m")?;
    let bytes =
        crate::size::parse_size(&size).map_err(|e| QemuError::new(format!("-m {size}: {e}")))?;
    if !bytes.is_multiple_of(1 << 20) {
        return Err(QemuError::new(format!(
            "-m {size}: not a whole number of MiB"
        )));
    }
    Ok(bytes >> 20)
}

/// `-smp [cpus=]N[,sockets=,dies=,cores=,threads=,maxcpus=]`: the vCPU
/// count; a topology must multiply to it, and maxcpus (hotplug) must be
/// the count.
pub fn smp(mut p: Props) -> Result<u32, QemuError> {
    let cpus = p.take_u64("cpus")?;
    let mut product: Option<u64> = None;
    for key in ["sockets", "dies", "clusters", "cores", "threads"] {
        if let Some(n) = p.take_u64(key)? {
            product = Some(product.unwrap_or(1) * n);
        }
    }
    let maxcpus = p.take_u64("maxcpus")?;
    p.finish("-smp")?;
    let n = match (cpus, product) {
        (Some(c), Some(t)) if c != t => {
            return Err(QemuError::new(format!(
                "-smp: the topology gives {t} CPUs, cpus= says {c}"
            )))
        }
        (Some(c), _) => c,
        (None, Some(t)) => t,
        (None, None) => 1,
    };
    if maxcpus.is_some_and(|m| m != n) {
        return Err(QemuError::new(
            "-smp maxcpus=: CPU hotplug is not supported by Ferrovisor (maxcpus must equal cpus)"
                .to_string(),
        ));
    }
    if n == 0 || n > u64::from(api::spec::MAX_VCPUS) {
        return Err(QemuError::new(format!(
            "Invalid SMP CPUs {n}. The max CPUs supported by machine 'ferrovisor' is {}",
            api::spec::MAX_VCPUS
        )));
    }
    Ok(n as u32)
}

/// `-cpu MODEL[,FEATURES]`: kept as text after checking it (the VM
/// description stores it; `ferrovisor run --cpu` takes the same syntax).
pub fn cpu(value: &str) -> Result<String, QemuError> {
    value
        .parse::<arch::cpu_model::CpuModel>()
        .map_err(|e| QemuError::new(format!("-cpu {value}: {e}")))?;
    Ok(value.to_string())
}

/// `-global DRIVER.PROPERTY=VALUE`: only the PIT's lost-tick policy
/// (kvm-unit-tests' runner passes `kvm-pit.lost_tick_policy=discard`):
/// whether the PIT drops the ticks a guest missed (`discard`: true) or
/// delivers them late (`delay`, QEMU's and KVM's default: false). On emu,
/// missed ticks always coalesce into one interrupt.
pub fn global(value: &str) -> Result<bool, QemuError> {
    match value {
        "kvm-pit.lost_tick_policy=discard" => Ok(true),
        "kvm-pit.lost_tick_policy=delay" => Ok(false),
        _ => Err(QemuError::new(format!(
            "-global {value}: not supported by Ferrovisor"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(option: &str, text: &str, implied: &str) -> Props {
        Props::parse(option, text, Some(implied)).unwrap()
    }

    #[test]
    fn machine_types_and_properties() {
        let mut m = MachineOpts::default();
        machine(
            &mut m,
            props(
                "-machine",
                "microvm,x-option-roms=off,pit=off,acpi=on",
                "type",
            ),
        )
        .unwrap();
        assert_eq!(
            (m.kind, m.transport, m.pit),
            ("microvm", Transport::Mmio, false)
        );
        machine(
            &mut m,
            props(
                "-machine",
                "pc-q35-9.2,accel=kvm:tcg,kernel-irqchip=split",
                "type",
            ),
        )
        .unwrap();
        assert_eq!((m.kind, m.transport), ("q35", Transport::Pci));
        assert_eq!(m.accel, ["kvm", "tcg"]);
        for bad in [
            "virt",
            "microvm,pic=off",
            "pc,vmport=on",
            "pc,kernel-irqchip=off",
            "pc,foo=1",
        ] {
            let e = machine(&mut m, props("-machine", bad, "type")).unwrap_err();
            assert!(e.to_string().starts_with("-machine"), "{bad}: {e}");
        }
    }

    #[test]
    fn accelerators_follow_qemus_rules() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(accelerator(&[], &[]).unwrap(), Accel::Emu);
        assert_eq!(accelerator(&s(&["tcg"]), &[]).unwrap(), Accel::Emu);
        assert_eq!(accelerator(&[], &s(&["kvm"])).unwrap(), Accel::Kvm);
        assert_eq!(accelerator(&s(&["kvm", "tcg"]), &[]).unwrap(), Accel::Auto);
        assert!(accelerator(&s(&["tcg"]), &s(&["kvm"])).is_err());
        assert!(accelerator(&s(&["hvf"]), &[]).is_err());
        assert!(accelerator(&s(&["tcg", "kvm"]), &[]).is_err());
        let a = |t| accel_option(props("-accel", t, "accel"));
        assert_eq!(a("tcg,thread=multi").unwrap(), "tcg");
        assert!(a("tcg,thread=single").is_err());
        assert!(a("tcg,tb-size=64").is_err());
        assert_eq!(a("kvm,kernel-irqchip=split").unwrap(), "kvm");
        assert!(a("kvm,kernel-irqchip=off").is_err());
    }

    #[test]
    fn memory_and_smp() {
        assert_eq!(memory(props("-m", "512m", "size")).unwrap(), 512);
        assert_eq!(memory(props("-m", "2048", "size")).unwrap(), 2048);
        assert_eq!(memory(props("-m", "size=4G", "size")).unwrap(), 4096);
        assert!(memory(props("-m", "1000K", "size")).is_err());
        assert!(memory(props("-m", "1G,slots=2", "size")).is_err());
        assert_eq!(smp(props("-smp", "2", "cpus")).unwrap(), 2);
        assert_eq!(
            smp(props("-smp", "sockets=1,cores=2,threads=2", "cpus")).unwrap(),
            4
        );
        assert!(smp(props("-smp", "2,cores=4", "cpus")).is_err());
        assert!(smp(props("-smp", "2,maxcpus=4", "cpus")).is_err());
        assert!(smp(props("-smp", "0", "cpus")).is_err());
    }

    #[test]
    fn cpu_and_global() {
        assert!(cpu("qemu64,+x2apic,-pcid").is_ok());
        assert!(cpu("Skylake-Server").is_err());
        assert!(global("kvm-pit.lost_tick_policy=discard").unwrap());
        assert!(!global("kvm-pit.lost_tick_policy=delay").unwrap());
        assert!(global("isa-fdc.driveA=").is_err());
    }
}
