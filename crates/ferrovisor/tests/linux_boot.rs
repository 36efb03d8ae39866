//! End to end: the Debian test guest (scripts/build-test-guest) boots on
//! the emu accelerator, runs commands, and powers off with status 0.
//!
//! The guest is looked for in `$FERROVISOR_GUEST_DIR`, else
//! `${FERROVISOR_CACHE:-$HOME/.cache/ferrovisor}/guest`. Without it the
//! tests report SKIPPED, or fail when `FERROVISOR_REQUIRE_GUEST=1` (as the
//! test script sets after building the guest).

mod common;

use std::process::{Command, Stdio};

use common::{base64, guest};

/// Boots the guest with `script` as its command, on `cpus` vCPUs.
fn boot(guest: &common::Guest, cpus: u32, script: &str) -> common::Boot {
    common::boot(guest, cpus, script, &[])
}

#[test]
fn base64_matches_the_standard_alphabet() {
    assert_eq!(base64(b"echo hi"), "ZWNobyBoaQ==");
    assert_eq!(base64(b"ab"), "YWI=");
    assert_eq!(base64(b"abc"), "YWJj");
}

#[test]
fn linux_boots_runs_commands_and_powers_off_on_one_vcpu() {
    let Some(guest) = guest() else { return };
    let b = boot(
        &guest,
        1,
        "echo sum=$((40 + 2)); uname -sr; grep -c ^processor /proc/cpuinfo; \
         head -c 4096 /dev/urandom | wc -c; sleep 2; echo epoch=$(date +%s)",
    );
    // Guest time runs at wall-clock rate: the clock the guest set from the
    // RTC at boot still agrees with the host's after the whole boot.
    let host_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let guest_epoch: i64 = b
        .console
        .lines()
        .find_map(|l| l.strip_prefix("epoch="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no epoch line; tail:\n{}", b.tail()));
    assert!(
        (host_now - guest_epoch).abs() <= 3,
        "guest clock {guest_epoch} vs host {host_now}"
    );
    b.expect("FERROVISOR-GUEST-READY");
    b.expect("sum=42");
    b.expect("Linux 6.");
    b.expect("\n1\n");
    b.expect("\n4096\n");
    b.expect("FERROVISOR-CMD-EXIT=0");
    assert_eq!(
        b.status,
        Some(0),
        "exit status; console tail:\n{}",
        b.tail()
    );
}

#[test]
fn linux_brings_every_vcpu_online() {
    let Some(guest) = guest() else { return };
    let b = boot(
        &guest,
        2,
        "echo online=$(cat /sys/devices/system/cpu/online); \
         echo cpus=$(grep -c ^processor /proc/cpuinfo); exit 3",
    );
    b.expect("online=0-1");
    b.expect("cpus=2");
    // The command's status reaches the console; poweroff is still clean.
    b.expect("FERROVISOR-CMD-EXIT=3");
    assert_eq!(
        b.status,
        Some(0),
        "exit status; console tail:\n{}",
        b.tail()
    );
}

#[test]
fn linux_boots_through_its_pvh_entry() {
    let Some(guest) = guest() else { return };
    // The uncompressed vmlinux, entered at its XEN_ELFNOTE_PHYS32_ENTRY
    // with hvm_start_info: the command line, the initrd (module 0), the
    // memory map and the ACPI RSDP all come through it.
    let pvh = common::Guest {
        kernel: guest.vmlinux.clone(),
        ..guest
    };
    let b = common::boot(
        &pvh,
        2,
        "echo online=$(cat /sys/devices/system/cpu/online); \
         echo acpi=$(ls /sys/firmware/acpi/tables | grep -c -e DSDT -e FACP -e APIC); \
         echo mem=$(awk '/MemTotal/ {print $2}' /proc/meminfo); \
         grep -o 'ferrovisor.cmd=' /proc/cmdline",
        &["--boot", "pvh"],
    );
    b.expect("FERROVISOR-GUEST-READY");
    b.expect("online=0-1");
    b.expect("acpi=3");
    b.expect("ferrovisor.cmd=");
    // 256 MiB less what the kernel keeps: the e820 map arrived whole.
    let mem_kib: u64 = b
        .console
        .lines()
        .find_map(|l| l.strip_prefix("mem="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no mem line; tail:\n{}", b.tail()));
    assert!(
        (150_000..262_144).contains(&mem_kib),
        "MemTotal {mem_kib} KiB"
    );
    b.expect("FERROVISOR-CMD-EXIT=0");
    assert_eq!(
        b.status,
        Some(0),
        "exit status; console tail:\n{}",
        b.tail()
    );
}

#[test]
fn demo_boots_linux_and_powers_off() {
    if guest().is_none() {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_ferrovisor"))
        .args(["demo", "--accel", "emu"])
        .stdin(Stdio::null())
        .output()
        .expect("run the demo");
    check_demo(&out);
}

/// An installed binary (`cargo install`): a copy of the binary alone in a
/// directory, run from another with the source tree out of reach, builds the guest with the builder it
/// carries (in the cache's builder/ directory) and boots Linux. The
/// bundled builder computes the repository script's recipe digest, so it
/// reuses the guest the repository's script built (no rebuild).
#[test]
fn demo_of_an_installed_binary_uses_its_bundled_builder() {
    if guest().is_none() {
        return;
    }
    let bin = common::TempDir::new("installed-bin");
    let cwd = common::TempDir::new("installed-cwd");
    let exe = bin.0.join("ferrovisor");
    std::fs::copy(env!("CARGO_BIN_EXE_ferrovisor"), &exe).unwrap();
    let cache = match std::env::var_os("FERROVISOR_CACHE").filter(|c| !c.is_empty()) {
        Some(c) => std::path::PathBuf::from(c),
        None => std::path::Path::new(&std::env::var_os("HOME").unwrap()).join(".cache/ferrovisor"),
    };
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let recipe = repo_recipe(&repo.join("scripts/build-test-guest"));
    let manifest = cache.join("guest/manifest");
    let kernel = cache.join("guest/vmlinuz");
    let current_before = manifest_recipe(&manifest).as_deref() == Some(recipe.as_str());
    let kernel_mtime = || std::fs::metadata(&kernel).and_then(|m| m.modified()).ok();
    let before = kernel_mtime();

    // As root, the source tree is hidden under an empty tmpfs in a mount
    // namespace of the demo's own: what it needs must be in the binary.
    let repo_path = repo.canonicalize().unwrap();
    let hide = Command::new("unshare")
        .args(["--mount", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let mut command = if hide {
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg("mount -t tmpfs none \"$1\" && ! test -e \"$1/Cargo.toml\" && exec \"$2\" demo --accel emu")
            .arg("sh")
            .arg(&repo_path)
            .arg(&exe);
        c
    } else {
        eprintln!("unshare --mount unavailable: the source tree stays visible");
        let mut c = Command::new(&exe);
        c.args(["demo", "--accel", "emu"]);
        c
    };
    let out = command
        .current_dir(&cwd.0)
        .env_remove("CARGO_MANIFEST_DIR")
        .stdin(Stdio::null())
        .output()
        .expect("run the installed demo");
    check_demo(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains(repo_path.to_str().unwrap()),
        "the source tree was used: {stderr}"
    );
    // The bundle is in the cache, and the guest is the repository's.
    let bundles: Vec<_> = std::fs::read_dir(cache.join("builder"))
        .expect("the cache's builder/ directory")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("scripts/build-test-guest").is_file())
        .collect();
    assert!(!bundles.is_empty());
    assert_eq!(manifest_recipe(&manifest).as_deref(), Some(recipe.as_str()));
    if current_before {
        assert_eq!(kernel_mtime(), before, "the cached guest was rebuilt");
    }
}

/// The recipe digest that the repository's guest builder computes.
fn repo_recipe(script: &std::path::Path) -> String {
    let code = "import sys, importlib.machinery, importlib.util\n\
                l = importlib.machinery.SourceFileLoader('b', sys.argv[1])\n\
                m = importlib.util.module_from_spec(importlib.util.spec_from_loader('b', l))\n\
                l.exec_module(m)\n\
                print(m.recipe_digest())";
    let out = Command::new("python3")
        .args(["-c", code])
        .arg(script)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn manifest_recipe(manifest: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(manifest).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("recipe="))
        .map(str::to_string)
}

/// The demo ran the Linux guest's commands, powered off with status 0, and
/// the kernel printed no error.
fn check_demo(out: &std::process::Output) {
    let console = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    let tail: Vec<&str> = console.lines().rev().take(30).collect();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for text in [
        "== Hello from Linux on Ferrovisor ==",
        "CPUs online:  0-1",
        "Primes below 50: 2 3 5 7 11 13 17 19 23 29 31 37 41 43 47",
        "FERROVISOR-CMD-EXIT=0",
    ] {
        assert!(console.contains(text), "{text:?} missing; tail: {tail:?}");
    }
    // `quiet` leaves the kernel's errors on the console: there are none
    // (a machine without PCI devices used to get "PCI: Fatal: No config
    // space access function found").
    let errors: Vec<&str> = console
        .lines()
        .filter(|l| l.starts_with('['))
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("fatal") || l.contains("error") || l.contains("fail")
        })
        .collect();
    assert!(errors.is_empty(), "kernel errors: {errors:?}");
}

#[test]
fn linux_brings_four_vcpus_online() {
    let Some(guest) = guest() else { return };
    let b = boot(
        &guest,
        4,
        "echo online=$(cat /sys/devices/system/cpu/online); \
         echo cpus=$(grep -c ^processor /proc/cpuinfo)",
    );
    b.expect("online=0-3");
    b.expect("cpus=4");
    b.expect("FERROVISOR-CMD-EXIT=0");
    assert_eq!(
        b.status,
        Some(0),
        "exit status; console tail:\n{}",
        b.tail()
    );
}
