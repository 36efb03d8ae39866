//! Reads the tables back from guest memory the way a guest does — scan for
//! the RSDP, follow RSDT/XSDT to every table, check signatures, lengths and
//! checksums — and decodes the MADT entries and the DSDT's AML (the subset
//! the DSDT uses) to check what they say.

use super::*;
use crate::layout::ram_regions;
use vm_memory::GuestMemoryMmap;

fn memory(size: u64) -> GuestMemoryMmap {
    let ranges: Vec<_> = ram_regions(size)
        .into_iter()
        .map(|(a, s)| (GuestAddress(a), s as usize))
        .collect();
    GuestMemoryMmap::from_ranges(&ranges).unwrap()
}

fn read(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
    v
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn sums_to_zero(b: &[u8]) -> bool {
    b.iter().fold(0u8, |a, &x| a.wrapping_add(x)) == 0
}

/// Linux's acpi_find_root_pointer: 16-byte steps through 0xE0000..0xFFFFF.
fn scan_rsdp(mem: &GuestMemoryMmap) -> Option<u64> {
    let area = read(mem, 0xE_0000, 0x2_0000);
    (0..area.len())
        .step_by(16)
        .find(|&at| &area[at..at + 8] == b"RSD PTR " && sums_to_zero(&area[at..at + 20]))
        .map(|at| 0xE_0000 + at as u64)
}

/// A checked system description table.
#[derive(Debug)]
struct Table {
    sig: [u8; 4],
    revision: u8,
    bytes: Vec<u8>,
}

impl Table {
    fn body(&self) -> &[u8] {
        &self.bytes[36..]
    }
}

fn table(mem: &GuestMemoryMmap, addr: u64) -> Table {
    assert!(
        (ACPI_AREA_START..ACPI_AREA_END).contains(&addr),
        "{addr:#x}"
    );
    let head = read(mem, addr, 36);
    let len = u32_at(&head, 4) as usize;
    assert!(len >= 36);
    assert!(addr + len as u64 <= ACPI_AREA_END);
    let bytes = read(mem, addr, len);
    let sig: [u8; 4] = bytes[..4].try_into().unwrap();
    assert!(
        sums_to_zero(&bytes),
        "{} checksum",
        String::from_utf8_lossy(&sig)
    );
    assert_eq!(&bytes[10..16], b"FERROV");
    Table {
        sig,
        revision: bytes[8],
        bytes,
    }
}

/// Everything reachable from the RSDP.
struct Parsed {
    rsdp: u64,
    fadt: Table,
    madt: Table,
    dsdt: Table,
    facs: Option<Vec<u8>>,
}

fn parse(mem: &GuestMemoryMmap) -> Parsed {
    let rsdp_addr = scan_rsdp(mem).expect("RSDP");
    let rsdp = read(mem, rsdp_addr, 36);
    assert_eq!(rsdp[15], 2, "revision");
    assert_eq!(u32_at(&rsdp, 20), 36);
    assert!(sums_to_zero(&rsdp), "extended checksum");
    let xsdt = table(mem, u64_at(&rsdp, 24));
    let rsdt = table(mem, u32_at(&rsdp, 16).into());
    assert_eq!((&xsdt.sig, &rsdt.sig), (b"XSDT", b"RSDT"));
    let xsdt_entries: Vec<u64> = xsdt.body().chunks(8).map(|c| u64_at(c, 0)).collect();
    let rsdt_entries: Vec<u64> = rsdt.body().chunks(4).map(|c| u32_at(c, 0).into()).collect();
    assert_eq!(xsdt_entries, rsdt_entries);

    let mut fadt = None;
    let mut madt = None;
    for addr in xsdt_entries {
        let t = table(mem, addr);
        match &t.sig {
            b"FACP" => assert!(fadt.replace(t).is_none()),
            b"APIC" => assert!(madt.replace(t).is_none()),
            other => panic!("unexpected table {:?}", String::from_utf8_lossy(other)),
        }
    }
    let fadt = fadt.expect("FADT");
    assert_eq!(fadt.bytes.len(), 276);
    assert_eq!((fadt.revision, fadt.bytes[131]), (6, 5));
    let dsdt32 = u64::from(u32_at(&fadt.bytes, 40));
    let x_dsdt = u64_at(&fadt.bytes, 140);
    assert_eq!(dsdt32, x_dsdt);
    let dsdt = table(mem, x_dsdt);
    assert_eq!(&dsdt.sig, b"DSDT");
    let facs_addr = u64_at(&fadt.bytes, 132);
    assert_eq!(facs_addr, u64::from(u32_at(&fadt.bytes, 36)));
    let facs = (facs_addr != 0).then(|| {
        assert_eq!(facs_addr % 64, 0);
        let facs = read(mem, facs_addr, 64);
        assert_eq!(&facs[..4], b"FACS");
        assert_eq!(u32_at(&facs, 4), 64);
        facs
    });
    Parsed {
        rsdp: rsdp_addr,
        fadt,
        madt: madt.expect("MADT"),
        dsdt,
        facs,
    }
}

#[derive(Debug, Default)]
struct Madt {
    lapic_addr: u32,
    flags: u32,
    /// (uid, apic id, flags)
    lapics: Vec<(u8, u8, u32)>,
    /// (id, address, gsi base)
    ioapics: Vec<(u8, u32, u32)>,
    /// (bus, source, gsi, flags)
    overrides: Vec<(u8, u8, u32, u16)>,
    /// (uid, flags, lint)
    nmis: Vec<(u8, u16, u8)>,
}

fn parse_madt(t: &Table) -> Madt {
    assert_eq!(&t.sig, b"APIC");
    let b = t.body();
    let mut m = Madt {
        lapic_addr: u32_at(b, 0),
        flags: u32_at(b, 4),
        ..Madt::default()
    };
    let mut at = 8;
    while at < b.len() {
        let (kind, len) = (b[at], b[at + 1] as usize);
        assert!(len >= 2 && at + len <= b.len(), "entry at {at}");
        let e = &b[at..at + len];
        match (kind, len) {
            (0, 8) => m.lapics.push((e[2], e[3], u32_at(e, 4))),
            (1, 12) => m.ioapics.push((e[2], u32_at(e, 4), u32_at(e, 8))),
            (2, 10) => m.overrides.push((e[2], e[3], u32_at(e, 4), u16_at(e, 8))),
            (4, 6) => m.nmis.push((e[2], u16_at(e, 3), e[5])),
            other => panic!("unexpected MADT entry {other:?}"),
        }
        at += len;
    }
    m
}

// --- a decoder for the AML the DSDT uses ---

#[derive(Debug, Clone, PartialEq)]
enum Obj {
    Int(u64),
    Str(String),
    Buffer(Vec<u8>),
    Package(Vec<Obj>),
}

#[derive(Debug, Clone, PartialEq)]
enum Term {
    Name(String, Obj),
    Scope(String, Vec<Term>),
    Device(String, Vec<Term>),
}

struct Aml<'a> {
    b: &'a [u8],
    at: usize,
}

impl Aml<'_> {
    fn byte(&mut self) -> u8 {
        let v = self.b[self.at];
        self.at += 1;
        v
    }

    fn le(&mut self, n: usize) -> u64 {
        let v = self.b[self.at..self.at + n]
            .iter()
            .rev()
            .fold(0u64, |a, &x| a << 8 | u64::from(x));
        self.at += n;
        v
    }

    /// A PkgLength; returns the end offset of the package.
    fn pkg_end(&mut self) -> usize {
        let start = self.at;
        let lead = self.byte();
        let follow = (lead >> 6) as usize;
        let len = if follow == 0 {
            usize::from(lead & 0x3f)
        } else {
            let mut len = usize::from(lead & 0x0f);
            for i in 0..follow {
                len |= usize::from(self.byte()) << (4 + 8 * i);
            }
            len
        };
        start + len
    }

    fn name_seg(&mut self) -> String {
        let s = String::from_utf8(self.b[self.at..self.at + 4].to_vec()).unwrap();
        self.at += 4;
        s
    }

    fn name_string(&mut self) -> String {
        let mut s = String::new();
        while self.b[self.at] == b'\\' || self.b[self.at] == b'^' {
            s.push(self.byte() as char);
        }
        let segs = match self.b[self.at] {
            0x2e => {
                self.at += 1;
                2
            }
            0x2f => {
                self.at += 1;
                usize::from(self.byte())
            }
            0x00 => {
                self.at += 1;
                0
            }
            _ => 1,
        };
        let parts: Vec<String> = (0..segs).map(|_| self.name_seg()).collect();
        s + &parts.join(".")
    }

    fn obj(&mut self) -> Obj {
        match self.byte() {
            0x00 => Obj::Int(0),
            0x01 => Obj::Int(1),
            0xff => Obj::Int(u64::MAX),
            0x0a => Obj::Int(self.le(1)),
            0x0b => Obj::Int(self.le(2)),
            0x0c => Obj::Int(self.le(4)),
            0x0e => Obj::Int(self.le(8)),
            0x0d => {
                let end = self.b[self.at..].iter().position(|&c| c == 0).unwrap();
                let s = String::from_utf8(self.b[self.at..self.at + end].to_vec()).unwrap();
                self.at += end + 1;
                Obj::Str(s)
            }
            0x11 => {
                let end = self.pkg_end();
                let Obj::Int(size) = self.obj() else {
                    panic!("buffer size")
                };
                let data = self.b[self.at..end].to_vec();
                assert_eq!(data.len() as u64, size);
                self.at = end;
                Obj::Buffer(data)
            }
            0x12 => {
                let end = self.pkg_end();
                let count = self.byte();
                let items: Vec<Obj> = (0..count).map(|_| self.obj()).collect();
                assert_eq!(self.at, end, "package length");
                Obj::Package(items)
            }
            op => panic!("unexpected data opcode {op:#x} at {}", self.at - 1),
        }
    }

    fn terms(&mut self, end: usize) -> Vec<Term> {
        let mut terms = Vec::new();
        while self.at < end {
            match self.byte() {
                0x08 => {
                    let name = self.name_string();
                    terms.push(Term::Name(name, self.obj()));
                }
                0x10 => {
                    let end = self.pkg_end();
                    let name = self.name_string();
                    terms.push(Term::Scope(name, self.terms(end)));
                }
                0x5b => {
                    assert_eq!(self.byte(), 0x82, "only Device is expected");
                    let end = self.pkg_end();
                    let name = self.name_string();
                    terms.push(Term::Device(name, self.terms(end)));
                }
                op => panic!("unexpected term opcode {op:#x} at {}", self.at - 1),
            }
        }
        assert_eq!(self.at, end, "term list length");
        terms
    }
}

fn decode_aml(b: &[u8]) -> Vec<Term> {
    Aml { b, at: 0 }.terms(b.len())
}

#[derive(Debug, Clone, PartialEq)]
enum Res {
    Io {
        min: u16,
        max: u16,
        align: u8,
        len: u8,
    },
    Mem32 {
        writable: bool,
        base: u32,
        len: u32,
    },
    /// flags bit 0 consumer, 1 edge, 2 active low, 3 shared
    Irq {
        flags: u8,
        irqs: Vec<u32>,
    },
}

fn decode_resources(b: &[u8]) -> Vec<Res> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let tag = b[at];
        if tag & 0x80 == 0 {
            let (kind, len) = ((tag >> 3) & 0xf, usize::from(tag & 7));
            let d = &b[at + 1..at + 1 + len];
            match kind {
                0x08 => {
                    assert_eq!(d[0], 1, "16-bit decode");
                    out.push(Res::Io {
                        min: u16_at(d, 1),
                        max: u16_at(d, 3),
                        align: d[5],
                        len: d[6],
                    });
                }
                0x0f => {
                    assert_eq!(at + 2, b.len(), "end tag last");
                    return out;
                }
                k => panic!("unexpected small resource {k:#x}"),
            }
            at += 1 + len;
        } else {
            let len = usize::from(u16_at(b, at + 1));
            let d = &b[at + 3..at + 3 + len];
            match tag {
                0x86 => out.push(Res::Mem32 {
                    writable: d[0] == 1,
                    base: u32_at(d, 1),
                    len: u32_at(d, 5),
                }),
                0x89 => {
                    let count = usize::from(d[1]);
                    out.push(Res::Irq {
                        flags: d[0],
                        irqs: (0..count).map(|i| u32_at(d, 2 + 4 * i)).collect(),
                    });
                }
                t => panic!("unexpected large resource {t:#x}"),
            }
            at += 3 + len;
        }
    }
}

/// The compressed EISA id as a DSDT integer.
fn eisa(id: &str) -> u64 {
    let c = id.as_bytes();
    let l = |i: usize| u32::from(c[i] - 0x40);
    let h = |i: usize| (c[i] as char).to_digit(16).unwrap();
    let v = l(0) << 26 | l(1) << 21 | l(2) << 16 | h(3) << 12 | h(4) << 8 | h(5) << 4 | h(6);
    v.swap_bytes().into()
}

/// A DSDT device: name and its named objects.
#[derive(Debug)]
struct Dev {
    name: String,
    hid: Obj,
    uid: Option<u64>,
    crs: Vec<Res>,
}

/// `\_S5` and the devices in `\_SB`.
fn parse_dsdt(t: &Table) -> (Obj, Vec<Dev>) {
    assert_eq!(t.revision, 2);
    let terms = decode_aml(t.body());
    let [Term::Name(s5, s5_pkg), Term::Scope(sb, sb_terms)] = terms.as_slice() else {
        panic!("unexpected DSDT layout {terms:?}")
    };
    assert_eq!((s5.as_str(), sb.as_str()), ("\\_S5_", "\\_SB_"));
    let devices = sb_terms
        .iter()
        .map(|t| {
            let Term::Device(name, objs) = t else {
                panic!("not a device: {t:?}")
            };
            let get = |n: &str| {
                objs.iter().find_map(|o| match o {
                    Term::Name(k, v) if k == n => Some(v.clone()),
                    _ => None,
                })
            };
            let Some(Obj::Buffer(crs)) = get("_CRS") else {
                panic!("{name}: no _CRS buffer")
            };
            Dev {
                name: name.clone(),
                hid: get("_HID").expect("_HID"),
                uid: get("_UID").map(|u| match u {
                    Obj::Int(i) => i,
                    other => panic!("_UID {other:?}"),
                }),
                crs: decode_resources(&crs),
            }
        })
        .collect();
    (s5_pkg.clone(), devices)
}

fn full_config(vcpus: u32) -> AcpiConfig {
    AcpiConfig {
        devices: vec![
            AcpiDevice::COM1,
            AcpiDevice::Rtc,
            AcpiDevice::virtio_mmio(0xd000_0000, 0x1000, 5),
            AcpiDevice::VirtioMmio {
                addr: 0xd000_1000,
                len: 0x1000,
                irq: 6,
                trigger: IrqTrigger::Edge,
            },
        ],
        ..AcpiConfig::new(vcpus)
    }
}

#[test]
fn tables_are_found_and_well_formed() {
    let mem = memory(64 << 20);
    let rsdp = create_acpi_tables(&mem, &full_config(4)).unwrap();
    assert_eq!(rsdp, ACPI_RSDP_ADDR);
    let p = parse(&mem);
    assert_eq!(p.rsdp, rsdp);
    assert!(p.facs.is_none(), "no FACS in hardware-reduced mode");
}

#[test]
fn madt_lists_every_cpu_and_the_ioapic() {
    for vcpus in [1, 2, 7, 64, MAX_VCPUS] {
        let mem = memory(64 << 20);
        create_acpi_tables(&mem, &AcpiConfig::new(vcpus)).unwrap();
        let m = parse_madt(&parse(&mem).madt);
        assert_eq!(m.lapic_addr, 0xfee0_0000);
        assert_eq!(m.flags, MADT_PCAT_COMPAT);
        let want: Vec<_> = (0..vcpus).map(|i| (i as u8, i as u8, 1)).collect();
        assert_eq!(m.lapics, want, "{vcpus} vCPUs");
        assert_eq!(m.ioapics, vec![(0, 0xfec0_0000, 0)]);
        assert_eq!(m.overrides, vec![(0, 0, 2, 0)]);
        assert_eq!(m.nmis, vec![(0xff, 0, 1)]);
    }
}

#[test]
fn fadt_is_hardware_reduced_with_sleep_and_reset_registers() {
    let mem = memory(64 << 20);
    create_acpi_tables(&mem, &full_config(2)).unwrap();
    let f = parse(&mem).fadt.bytes;
    let flags = u32_at(&f, 112);
    assert_ne!(flags & 1 << 20, 0, "HW_REDUCED_ACPI");
    assert_ne!(flags & 1 << 10, 0, "RESET_REG_SUP");
    assert_ne!(flags & (1 << 4 | 1 << 5), 0, "no fixed buttons");
    assert_eq!(u16_at(&f, 109), IAPC_BOOT_ARCH_VGA_NOT_PRESENT);
    // GAS: space, width, offset, access size, address.
    let gas = |at: usize| (f[at], f[at + 1], f[at + 2], f[at + 3], u64_at(&f, at + 4));
    assert_eq!(gas(116), (1, 8, 0, 1, 0x60a), "RESET_REG");
    assert_eq!(f[128], pm::ACPI_RESET_VALUE);
    assert_eq!(gas(244), (1, 8, 0, 1, 0x608), "SLEEP_CONTROL_REG");
    assert_eq!(gas(256), (1, 8, 0, 1, 0x609), "SLEEP_STATUS_REG");
    // No fixed hardware.
    assert_eq!(u16_at(&f, 46), 0, "SCI_INT");
    assert_eq!(u32_at(&f, 56), 0, "PM1a_EVT_BLK");
    assert_eq!(u32_at(&f, 64), 0, "PM1a_CNT_BLK");
    // The PM timer, in both fields, 24 bits (TMR_VAL_EXT clear).
    assert_eq!((u32_at(&f, 76), f[91]), (0x60c, 4), "PM_TMR_BLK");
    assert_eq!(gas(208), (1, 32, 0, 3, 0x60c), "X_PM_TMR_BLK");
    assert_eq!(flags & 1 << 8, 0, "TMR_VAL_EXT");
}

#[test]
fn full_acpi_mode_describes_pm1_blocks_sci_and_facs() {
    let mem = memory(64 << 20);
    let cfg = AcpiConfig {
        hw_reduced: false,
        ..AcpiConfig::new(2)
    };
    create_acpi_tables(&mem, &cfg).unwrap();
    let p = parse(&mem);
    assert_eq!(p.facs.unwrap()[32], 2, "FACS version");
    let f = p.fadt.bytes;
    let flags = u32_at(&f, 112);
    assert_eq!(flags & 1 << 20, 0);
    assert_eq!(u16_at(&f, 46), 9, "SCI_INT");
    assert_eq!(u32_at(&f, 48), 0, "SMI_CMD: always in ACPI mode");
    assert_eq!((u32_at(&f, 56), f[88]), (0x600, 4), "PM1a_EVT_BLK");
    assert_eq!((u32_at(&f, 64), f[89]), (0x604, 2), "PM1a_CNT_BLK");
    assert_eq!(u32_at(&f, 76), 0x60c, "PM timer");
    assert_eq!((f[148], f[149], u64_at(&f, 152)), (1, 32, 0x600));
    assert_eq!((f[172], f[173], u64_at(&f, 176)), (1, 16, 0x604));
    assert_eq!(u64_at(&f, 248), 0, "no sleep control register");
    // No RTC listed: the FADT says so.
    assert_eq!(
        u16_at(&f, 109),
        IAPC_BOOT_ARCH_VGA_NOT_PRESENT | IAPC_BOOT_ARCH_CMOS_RTC_NOT_PRESENT
    );
    let m = parse_madt(&p.madt);
    assert_eq!(m.overrides, vec![(0, 0, 2, 0), (0, 9, 9, 0x000d)]);
}

#[test]
fn dsdt_describes_s5_and_the_devices() {
    let mem = memory(64 << 20);
    create_acpi_tables(&mem, &full_config(1)).unwrap();
    let (s5, devs) = parse_dsdt(&parse(&mem).dsdt);
    assert_eq!(
        s5,
        Obj::Package(vec![Obj::Int(5), Obj::Int(5), Obj::Int(0), Obj::Int(0)])
    );
    let names: Vec<&str> = devs.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["COM1", "RTC_", "V000", "V001"]);

    assert_eq!(eisa("PNP0501"), 0x0105_d041);
    let com1 = &devs[0];
    assert_eq!(com1.hid, Obj::Int(eisa("PNP0501")));
    assert_eq!(com1.uid, Some(1));
    let edge_high = 0b0011;
    assert_eq!(
        com1.crs,
        vec![
            Res::Io {
                min: 0x3f8,
                max: 0x3f8,
                align: 1,
                len: 8
            },
            Res::Irq {
                flags: edge_high,
                irqs: vec![4]
            }
        ]
    );
    let rtc = &devs[1];
    assert_eq!(rtc.hid, Obj::Int(eisa("PNP0B00")));
    assert_eq!(
        rtc.crs,
        vec![
            Res::Io {
                min: 0x70,
                max: 0x70,
                align: 1,
                len: 2
            },
            Res::Irq {
                flags: edge_high,
                irqs: vec![8]
            }
        ]
    );
    for (i, dev) in devs[2..].iter().enumerate() {
        assert_eq!(dev.hid, Obj::Str("LNRO0005".into()));
        assert_eq!(dev.uid, Some(i as u64));
        let level_high = 0b0001;
        assert_eq!(
            dev.crs,
            vec![
                Res::Mem32 {
                    writable: true,
                    base: 0xd000_0000 + 0x1000 * i as u32,
                    len: 0x1000
                },
                Res::Irq {
                    flags: if i == 0 { level_high } else { edge_high },
                    irqs: vec![5 + i as u32]
                }
            ]
        );
    }
}

#[test]
fn keyboard_controller_is_in_the_dsdt_and_the_fadt() {
    let mem = memory(64 << 20);
    let cfg = AcpiConfig {
        devices: vec![AcpiDevice::COM1, AcpiDevice::Keyboard],
        ..AcpiConfig::new(1)
    };
    create_acpi_tables(&mem, &cfg).unwrap();
    let p = parse(&mem);
    assert_eq!(
        u16_at(&p.fadt.bytes, 109),
        IAPC_BOOT_ARCH_VGA_NOT_PRESENT | IAPC_BOOT_ARCH_CMOS_RTC_NOT_PRESENT | IAPC_BOOT_ARCH_8042
    );
    let (_, devs) = parse_dsdt(&p.dsdt);
    let kbd = &devs[1];
    assert_eq!(kbd.name, "KBD_");
    assert_eq!(kbd.hid, Obj::Int(eisa("PNP0303")));
    let port = |p: u16| Res::Io {
        min: p,
        max: p,
        align: 1,
        len: 1,
    };
    assert_eq!(
        kbd.crs,
        vec![
            port(0x60),
            port(0x64),
            Res::Irq {
                flags: 0b0011,
                irqs: vec![1]
            }
        ]
    );
    let twice = AcpiConfig {
        devices: vec![AcpiDevice::Keyboard, AcpiDevice::Keyboard],
        ..AcpiConfig::new(1)
    };
    assert!(matches!(
        create_acpi_tables(&mem, &twice),
        Err(AcpiError::DuplicateKeyboard { index: 1 })
    ));
}

#[test]
fn many_devices_use_long_package_lengths() {
    let mem = memory(64 << 20);
    let mut cfg = AcpiConfig::new(8);
    cfg.devices = (0..300)
        .map(|i| AcpiDevice::virtio_mmio(0xd000_0000 + i * 0x200, 0x200, 5 + (i % 18) as u32))
        .collect();
    cfg.devices.push(AcpiDevice::Serial {
        port: 0x2f8,
        irq: 3,
    });
    create_acpi_tables(&mem, &cfg).unwrap();
    let (_, devs) = parse_dsdt(&parse(&mem).dsdt);
    assert_eq!(devs.len(), 301);
    assert_eq!(devs[255].name, "V0FF");
    assert_eq!(devs[299].uid, Some(299));
    assert_eq!(devs[300].name, "COM1");
}

#[test]
fn stale_tables_are_wiped() {
    let mem = memory(64 << 20);
    // A stale RSDP further up the BIOS area, and junk.
    mem.write_slice(b"RSD PTR junk", GuestAddress(0xF_0000))
        .unwrap();
    create_acpi_tables(&mem, &full_config(2)).unwrap();
    assert_eq!(read(&mem, 0xF_0000, 12), vec![0; 12]);
    assert_eq!(scan_rsdp(&mem), Some(ACPI_RSDP_ADDR));
}

#[test]
fn bad_configs_are_refused_before_writing() {
    let bad = |edit: &dyn Fn(&mut AcpiConfig)| {
        let mut cfg = full_config(2);
        edit(&mut cfg);
        let mem = memory(64 << 20);
        let err = create_acpi_tables(&mem, &cfg).unwrap_err();
        assert!(scan_rsdp(&mem).is_none(), "nothing written for {err}");
        err
    };
    assert!(matches!(
        bad(&|c| c.vcpus = 0),
        AcpiError::VcpuCount { vcpus: 0, max: 255 }
    ));
    assert!(matches!(
        bad(&|c| c.vcpus = 256),
        AcpiError::VcpuCount { vcpus: 256, .. }
    ));
    assert!(matches!(
        bad(&|c| c.lapic_addr = 1 << 32),
        AcpiError::AddressAbove4G { what: "LAPIC", .. }
    ));
    assert!(matches!(
        bad(&|c| c.ioapic_addr = 1 << 40),
        AcpiError::AddressAbove4G { what: "IOAPIC", .. }
    ));
    assert!(matches!(
        bad(&|c| c
            .devices
            .push(AcpiDevice::virtio_mmio(0xffff_f000, 0x2000, 5))),
        AcpiError::BadMmioRange { index: 4, .. }
    ));
    assert!(matches!(
        bad(&|c| c.devices.push(AcpiDevice::virtio_mmio(0x1000, 0, 5))),
        AcpiError::BadMmioRange { .. }
    ));
    assert!(matches!(
        bad(&|c| c.devices.push(AcpiDevice::virtio_mmio(u64::MAX, 2, 5))),
        AcpiError::BadMmioRange { .. }
    ));
    for irq in [0, 2, 24, 1000] {
        assert!(matches!(
            bad(&|c| c.devices.push(AcpiDevice::virtio_mmio(0x1000, 0x200, irq))),
            AcpiError::BadIrq { index: 4, .. }
        ));
        assert!(matches!(
            bad(&|c| c.devices.push(AcpiDevice::Serial { port: 0x2f8, irq })),
            AcpiError::BadIrq { .. }
        ));
    }
    assert!(matches!(
        bad(&|c| c.devices.push(AcpiDevice::Rtc)),
        AcpiError::DuplicateRtc { index: 4 }
    ));
    assert!(matches!(
        bad(&|c| c.devices.extend([AcpiDevice::COM1; 9])),
        AcpiError::TooManySerialPorts { index: 12, max: 9 }
    ));
    assert!(matches!(
        bad(&|c| c.devices = vec![AcpiDevice::virtio_mmio(0x1000, 0x200, 5); 0x1001]),
        AcpiError::TooManyVirtioDevices { index: 0x1000, .. }
    ));
}

#[test]
fn tables_that_do_not_fit_are_refused() {
    // 4096 virtio devices take more than the 128 KiB BIOS area.
    let mut cfg = AcpiConfig::new(1);
    cfg.devices = vec![AcpiDevice::virtio_mmio(0x1000, 0x200, 5); 0x1000];
    let mem = memory(64 << 20);
    assert!(matches!(
        create_acpi_tables(&mem, &cfg),
        Err(AcpiError::TooLarge { .. })
    ));
}

#[test]
fn missing_memory_is_an_error() {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x8_0000)]).unwrap();
    assert!(matches!(
        create_acpi_tables(&mem, &AcpiConfig::new(1)),
        Err(AcpiError::Write {
            what: "ACPI area",
            ..
        })
    ));
}

/// Writes each table of a full configuration to `$FERROVISOR_ACPI_DUMP/<SIG>.dat`
/// for `iasl -d` (acpica-tools):
/// `FERROVISOR_ACPI_DUMP=/tmp/acpi cargo test -p arch -- --ignored dump_tables`.
#[test]
#[ignore = "writes files for manual inspection with iasl"]
fn dump_tables() {
    let Some(dir) = std::env::var_os("FERROVISOR_ACPI_DUMP") else {
        eprintln!("FERROVISOR_ACPI_DUMP is not set: nothing dumped");
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).unwrap();
    for hw_reduced in [true, false] {
        let mut cfg = AcpiConfig {
            hw_reduced,
            ..full_config(4)
        };
        cfg.devices.push(AcpiDevice::VmGenId {
            addr: vmgenid::VMGENID_ADDR,
            gsi: 23,
        });
        let suffix = if hw_reduced { "" } else { "-full" };
        for t in build(&cfg).unwrap() {
            let name = format!("{}{suffix}.dat", t.what.to_lowercase());
            std::fs::write(dir.join(name), &t.bytes).unwrap();
        }
    }
}
