//! End to end: a Linux guest that reboots ends the VM cleanly (status 3)
//! whatever reboot method it uses, as a microVM does on a reset: the ACPI
//! reset register, the keyboard controller, the PCI reset control register
//! at 0xCF9, and the BIOS path (Linux's default on a
//! hardware-reduced ACPI machine without EFI), which jumps to the reset
//! entry F000:FFF0. None of them may leave the guest spinning. A triple
//! fault (reboot=t) ends it too, with the triple fault's status (4;
//! docs/CLI.md).
//!
//! Needs the test guest (scripts/build-test-guest); SKIPPED without it
//! unless `FERROVISOR_REQUIRE_GUEST=1`.

mod common;

use common::guest;

/// Boots with `reboot=<mode>` (none for the kernel's default) on the
/// `transport`, runs `reboot -f`, and checks that the VM ended, cleanly
/// (the reset's status 3), or by a triple fault (4) when `triple` says so.
fn reboots_cleanly(mode: Option<&str>, transport: &str, triple: bool) {
    let Some(guest) = guest() else { return };
    let cmdline = match mode {
        Some(m) => format!("{} reboot={m}", common::CMDLINE),
        None => common::CMDLINE.to_string(),
    };
    let boot = common::spawn_with(
        &guest,
        1,
        &cmdline,
        "reboot -f",
        &["--transport", transport],
        false,
    )
    .wait();
    boot.expect("reboot: Restarting system");
    assert_eq!(
        boot.status,
        Some(if triple { 4 } else { 3 }),
        "exit status; stderr: {}\nconsole tail:\n{}",
        boot.stderr,
        boot.tail()
    );
    assert_eq!(
        boot.stderr.contains("triple-faulted"),
        triple,
        "reboot={mode:?}: stderr: {}",
        boot.stderr
    );
}

#[test]
fn default_reboot_takes_the_bios_path_to_a_reset() {
    reboots_cleanly(None, "mmio", false);
}

#[test]
fn reboot_bios_resets_through_f000_fff0() {
    reboots_cleanly(Some("b"), "mmio", false);
}

#[test]
fn reboot_efi_without_efi_falls_back_to_the_bios() {
    reboots_cleanly(Some("e"), "mmio", false);
}

#[test]
fn reboot_acpi_uses_the_reset_register() {
    reboots_cleanly(Some("a"), "mmio", false);
}

#[test]
fn reboot_kbd_uses_the_i8042() {
    reboots_cleanly(Some("k"), "mmio", false);
}

#[test]
fn reboot_pci_uses_port_cf9_without_a_pci_bus() {
    reboots_cleanly(Some("p"), "mmio", false);
}

#[test]
fn reboot_pci_uses_port_cf9_beside_the_pci_host_bridge() {
    reboots_cleanly(Some("p"), "pci", false);
}

#[test]
fn reboot_triple_fault_ends_the_vm() {
    reboots_cleanly(Some("t"), "mmio", true);
}
