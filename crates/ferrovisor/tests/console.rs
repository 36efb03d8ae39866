//! End to end: `--console virtio` gives the Debian test guest a virtio
//! console (hvc0, its own virtio_console driver) that carries its output
//! to ferrovisor's standard output and ferrovisor's standard input to it.
//!
//! With `console=hvc0` only, the kernel prints nothing on the UART, and
//! the test guest's init reopens /dev/console (hvc0) once virtio_console
//! is loaded, so every line checked here came through the virtio console.
//! The boot helpers are in common/ (guest lookup, SKIPPED without a guest
//! unless `FERROVISOR_REQUIRE_GUEST=1`).

mod common;

use std::io::Write;

use common::{guest, spawn_with};

const CMDLINE: &str = "console=hvc0 quiet panic=-1";

#[test]
fn guest_output_reaches_stdout_through_hvc0() {
    let Some(guest) = guest() else { return };
    let b = spawn_with(
        &guest,
        1,
        CMDLINE,
        "echo hello-from-hvc >/dev/hvc0; \
         echo console=$(cat /sys/class/tty/console/active); \
         echo virtio-consoles=$(ls /sys/bus/virtio/drivers/virtio_console | grep -c '^virtio'); \
         echo ttyS0-console=$(grep -c ttyS /proc/consoles)",
        &["--console", "virtio"],
        false,
    )
    .wait();
    b.expect("hello-from-hvc");
    b.expect("console=hvc0");
    b.expect("virtio-consoles=1");
    b.expect("ttyS0-console=0");
    // init's own lines (its stdout is /dev/console, reopened on hvc0).
    b.expect("FERROVISOR-GUEST-READY");
    b.expect("FERROVISOR-CMD-EXIT=0");
    assert_eq!(b.status, Some(0), "exit status; tail:\n{}", b.tail());
}

#[test]
fn stdin_reaches_the_guest_through_hvc0() {
    let Some(guest) = guest() else { return };
    let mut running = spawn_with(
        &guest,
        1,
        CMDLINE,
        "read -r line </dev/hvc0; echo \"got:$line\"; \
         read -r line2 </dev/hvc0; echo \"got2:${#line2}\"",
        &["--console", "virtio"],
        true,
    );
    let mut stdin = running.stdin.take().expect("stdin pipe");
    // Typed long before the guest has a driver: kept until it gives
    // receive buffers. The second line is larger than one of them (a page).
    stdin.write_all(b"line-from-the-host\n").unwrap();
    let long = "x".repeat(3000);
    stdin.write_all(format!("{long}\n").as_bytes()).unwrap();
    stdin.flush().unwrap();
    let b = running.wait();
    drop(stdin);
    b.expect("got:line-from-the-host");
    b.expect("got2:3000");
    b.expect("FERROVISOR-CMD-EXIT=0");
    assert_eq!(b.status, Some(0), "exit status; tail:\n{}", b.tail());
}

#[test]
fn an_unknown_console_is_a_one_line_usage_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrovisor"))
        .args(["run", "--kernel", "/nonexistent", "--console", "hvc"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run ferrovisor");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("unknown console 'hvc' (serial or virtio)"),
        "{err}"
    );
}
