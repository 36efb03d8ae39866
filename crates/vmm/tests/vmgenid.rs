//! The VM generation ID device on the emu accelerator: a machine with ACPI
//! tables gets a random ID in guest memory, described by the DSDT; its
//! snapshot keeps it; a clone restored with `regenerate_vmgenid` gets a
//! new one in its private memory (the memory file is untouched), a plain
//! restore keeps it; a machine without ACPI tables has none and refuses
//! to be given one.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{bzimage, TempDir};
use vm_memory::{Bytes, GuestAddress};
use vmm::snapshot::{
    CreateSnapshot, MemoryBackend, RestoreOptions, SnapshotError, SnapshotFile, SnapshotKind,
    VMGENID_ADDR,
};
use vmm::{Accel, Command, ConsoleOutput, Machine, MachineConfig};

fn config(kernel: PathBuf) -> MachineConfig {
    MachineConfig {
        accel: Accel::Emu,
        memory: 64 << 20,
        vcpus: 1,
        console: ConsoleOutput::Sink,
        ..MachineConfig::new(kernel)
    }
}

fn id_in(machine: &Machine) -> [u8; 16] {
    let mut id = [0u8; 16];
    machine
        .memory()
        .read_slice(&mut id, GuestAddress(VMGENID_ADDR))
        .unwrap();
    id
}

/// Runs `config`'s machine a moment, pauses it and writes a snapshot.
fn snapshot(config: &MachineConfig, dir: &Path) -> (SnapshotFile, PathBuf, [u8; 16]) {
    let machine = Machine::new(config).unwrap();
    let booted_id = id_in(&machine);
    let running = machine.start().unwrap();
    let handle = running.handle();
    std::thread::sleep(Duration::from_millis(50));
    handle.send(Command::Pause).unwrap();
    let (state, mem) = (dir.join("vm.state"), dir.join("vm.mem"));
    handle
        .send(Command::CreateSnapshot(CreateSnapshot {
            state_path: state.clone(),
            mem_path: mem.clone(),
            kind: SnapshotKind::Full,
            spec_json: "{}".into(),
        }))
        .unwrap();
    handle.send(Command::Stop).unwrap();
    running.wait();
    (SnapshotFile::read(&state).unwrap(), mem, booted_id)
}

fn restore(
    config: &MachineConfig,
    file: &SnapshotFile,
    mem: &Path,
    regenerate: bool,
) -> Result<Machine, SnapshotError> {
    let options = RestoreOptions {
        memory: MemoryBackend::File(mem.to_path_buf()),
        track_dirty_pages: false,
        resume: true,
        regenerate_vmgenid: regenerate,
    };
    Machine::restore(
        config,
        vmm::open_accelerator(Accel::Emu).unwrap(),
        file,
        &options,
    )
}

#[test]
fn clones_get_new_ids_and_the_snapshot_keeps_its_own() {
    let dir = TempDir::new("clones");
    let config = config(dir.file("bzImage", &bzimage()));
    let other = Machine::new(&config).unwrap();
    let (file, mem, booted_id) = snapshot(&config, &dir.0);
    assert_ne!(booted_id, [0; 16], "a booted machine has an ID");
    assert_ne!(id_in(&other), booted_id, "each boot has its own ID");
    drop(other);

    let saved = file.body.devices.vmgenid.clone().expect("the device state");
    assert_eq!(saved.addr, VMGENID_ADDR);
    assert_eq!(saved.gsi, vmm::snapshot::VMGENID_GSI);
    assert_eq!(saved.id, booted_id);
    let in_file = std::fs::read(&mem).unwrap();
    let at = VMGENID_ADDR as usize;
    assert_eq!(in_file[at..at + 16], booted_id);

    // The DSDT names the device (its AML is checked in arch's tests).
    let low = {
        let machine = restore(&config, &file, &mem, false).unwrap();
        assert_eq!(id_in(&machine), booted_id, "a plain restore keeps the ID");
        let mut area = vec![0u8; 0x2_0000];
        machine
            .memory()
            .read_slice(&mut area, GuestAddress(0xe_0000))
            .unwrap();
        area
    };
    assert!(low.windows(8).any(|w| w == b"VM_Gen_C"));
    assert!(low.windows(8).any(|w| w == b"ACPI0013"));

    let a = restore(&config, &file, &mem, true).unwrap();
    let b = restore(&config, &file, &mem, true).unwrap();
    let (ida, idb) = (id_in(&a), id_in(&b));
    assert_ne!(ida, booted_id);
    assert_ne!(idb, booted_id);
    assert_ne!(ida, idb, "two clones, two IDs");
    assert_eq!(ida[6] >> 4, 4, "a version-4 UUID");
    // The clones wrote their private copies: the file is as it was.
    assert_eq!(std::fs::read(&mem).unwrap(), in_file);
    // A clone runs, and its snapshot holds its new ID.
    let running = a.start().unwrap();
    let handle = running.handle();
    handle.send(Command::Pause).unwrap();
    let state = dir.0.join("clone.state");
    handle
        .send(Command::CreateSnapshot(CreateSnapshot {
            state_path: state.clone(),
            mem_path: dir.0.join("clone.mem"),
            kind: SnapshotKind::Full,
            spec_json: "{}".into(),
        }))
        .unwrap();
    handle.send(Command::Stop).unwrap();
    running.wait();
    let clone_file = SnapshotFile::read(&state).unwrap();
    assert_eq!(clone_file.body.devices.vmgenid.unwrap().id, ida);
}

#[test]
fn machines_without_acpi_have_no_id_to_regenerate() {
    let dir = TempDir::new("bare");
    // Long enough to be running still when the snapshot pauses it.
    let p = guests::ticker(&"abc".repeat(10_000), 1_000_000, 0x30_0000, 0x2a).unwrap();
    let elf = arch::elf_builder::build_elf64(&[(p.load_addr, &p.code)], p.load_addr);
    let config = config(dir.file("bare.elf", &elf));
    let (file, mem, booted_id) = snapshot(&config, &dir.0);
    assert_eq!(booted_id, [0; 16]);
    assert!(file.body.devices.vmgenid.is_none());
    let err = restore(&config, &file, &mem, true).err().expect("refused");
    assert!(matches!(err, SnapshotError::NoVmGenId), "{err}");
    assert!(restore(&config, &file, &mem, false).is_ok());
}
