use super::*;

fn sample() -> SnapshotFile {
    SnapshotFile {
        header: SnapshotHeader {
            ferrovisor_version: "0.0.0".into(),
            accelerator: "emu".into(),
            cpu_fingerprint: "GenuineIntel signature 0x806f0 features 01234567".into(),
            memory: vec![MemoryRegion {
                gpa: 0,
                size: 64 << 20,
            }],
        },
        body: SnapshotBody {
            spec_json: "{\"machine-config\":{}}".into(),
            vm: hv::VmState {
                clock_ns: 123_456,
                ioapic: hv::snapshot::IoapicState {
                    id: 0,
                    ioregsel: 1,
                    irr: 0,
                    redirtbl: [0x1_0000; hv::snapshot::IOAPIC_PINS],
                },
                pic: Default::default(),
                pit: Some(Default::default()),
            },
            vcpus: vec![],
            devices: DeviceStates {
                serial: devices::serial::SerialSnapshot::default(),
                i8042: devices::i8042::I8042Snapshot {
                    ctr: 0x45,
                    status: 0x14,
                    expect: devices::i8042::Expect::KbdCommand,
                    queue: vec![(0xfa, false)],
                },
                rtc: devices::rtc::RtcSnapshot {
                    index: 0x0c,
                    nmi_disabled: false,
                    cmos: (0..128).collect(),
                    unix_ns: 1_709_210_096_000_000_000,
                    flags_age_ns: 5,
                },
                virtio: vec![
                    crate::snapshot::VirtioSaved {
                        name: "virtio-blk0".into(),
                        transport: crate::snapshot::TransportSaved::Mmio(virtio::mmio::MmioSaved {
                            core: virtio::transport::TransportSaved {
                                device_type: 2,
                                status: 15,
                                driver_features: 1 << 32,
                                queues: vec![virtio::transport::QueueSaved {
                                    max_size: 256,
                                    size: 128,
                                    desc: 0x1000,
                                    ready: true,
                                    next_avail: 65535,
                                    next_used: 3,
                                    ..Default::default()
                                }],
                                ..Default::default()
                            },
                            interrupt_status: 1,
                        }),
                    },
                    crate::snapshot::VirtioSaved {
                        name: "virtio-rng".into(),
                        transport: crate::snapshot::TransportSaved::Pci(
                            pci::virtio::VirtioPciSaved {
                                config: pci::config::ConfigSaved {
                                    regs: vec![0xab; 256],
                                    bars: vec![0xe000_0000, 0xe000_4000, 0, 0, 0, 0],
                                },
                                msix: pci::msix::MsixSaved {
                                    entries: vec![[0xfee0_0000, 0, 0x41, 1]; 2],
                                    pending: vec![2],
                                    enabled: true,
                                    function_mask: false,
                                },
                                queue_vectors: vec![1],
                                ..Default::default()
                            },
                        ),
                    },
                ],
                disk_sizes: vec![1 << 20],
                vmgenid: Some(crate::snapshot::VmGenIdState {
                    addr: crate::snapshot::VMGENID_ADDR,
                    gsi: crate::snapshot::VMGENID_GSI,
                    id: [7; 16],
                }),
            },
        },
    }
}

#[test]
fn round_trip() {
    let file = sample();
    let bytes = file.to_bytes().unwrap();
    assert_eq!(&bytes[..8], &MAGIC);
    assert_eq!(SnapshotFile::from_bytes(&bytes).unwrap(), file);
}

#[test]
fn refusals_name_their_cause() {
    let bytes = sample().to_bytes().unwrap();

    let mut bad = bytes.clone();
    bad[0] = b'X';
    assert!(matches!(
        SnapshotFile::from_bytes(&bad),
        Err(SnapshotFormatError::BadMagic)
    ));

    let mut bad = bytes.clone();
    bad[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    let e = SnapshotFile::from_bytes(&bad).unwrap_err();
    assert!(matches!(e, SnapshotFormatError::Version { found } if found == FORMAT_VERSION + 1));
    assert!(e.to_string().contains("version"), "{e}");

    for cut in [10, 30, bytes.len() - 1] {
        assert!(
            matches!(
                SnapshotFile::from_bytes(&bytes[..cut]),
                Err(SnapshotFormatError::Truncated { .. })
            ),
            "cut at {cut}"
        );
    }

    let mut bad = bytes.clone();
    let mid = bytes.len() / 2;
    bad[mid] ^= 0x40;
    assert!(matches!(
        SnapshotFile::from_bytes(&bad),
        Err(SnapshotFormatError::Checksum)
    ));
}

#[test]
fn host_checks() {
    let h = sample().header;
    h.check_host("emu", &h.cpu_fingerprint.clone()).unwrap();
    assert!(matches!(
        h.check_host("kvm", &h.cpu_fingerprint.clone()),
        Err(SnapshotFormatError::Accelerator { .. })
    ));
    assert!(matches!(
        h.check_host("emu", "AuthenticAMD signature 0xa00f11 features 0"),
        Err(SnapshotFormatError::CpuModel { .. })
    ));
}

#[test]
fn fingerprint_follows_features() {
    let base = vec![
        hv::CpuidEntry {
            function: 0,
            ebx: u32::from_le_bytes(*b"Genu"),
            edx: u32::from_le_bytes(*b"ineI"),
            ecx: u32::from_le_bytes(*b"ntel"),
            ..Default::default()
        },
        hv::CpuidEntry {
            function: 1,
            eax: 0x806f0,
            ecx: 0x8000_0000,
            ..Default::default()
        },
    ];
    let mut other = base.clone();
    other[1].ecx |= 1 << 28; // AVX
    assert_ne!(cpu_fingerprint(&base), cpu_fingerprint(&other));
    assert!(cpu_fingerprint(&base).starts_with("GenuineIntel"));
}
