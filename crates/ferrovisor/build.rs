//! Startup ordering for the shipped binary (issue 10: idle RSS).
//!
//! The kernel maps a binary's text 64 KiB at a time around each page a
//! process touches ("fault-around"), so the resident size of an idle
//! ferrovisor is the number of distinct 64 KiB windows its start touched.
//! `scripts/build-static` sets `FERROVISOR_STARTUP_ORDER` to
//! scripts/lib/startup-order.txt, the functions that run from exec to an
//! idle API server (recorded by `scripts/startup-order`), and the linker
//! (lld) places them side by side. Every other build leaves the layout to
//! the linker. A name that no longer exists is skipped: a stale list only
//! loses part of the gain, and the script says how much of it matched.

fn main() {
    println!("cargo::rerun-if-env-changed=FERROVISOR_STARTUP_ORDER");
    let Ok(path) = std::env::var("FERROVISOR_STARTUP_ORDER") else {
        return;
    };
    if path.is_empty() {
        return;
    }
    println!("cargo::rerun-if-changed={path}");
    // The link arguments name the file, not its content: an environment
    // variable of the list's digest makes a new list relink the binary.
    let digest = std::fs::read(&path)
        .map(|bytes| {
            bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            })
        })
        .unwrap_or(0);
    println!("cargo::rustc-env=FERROVISOR_STARTUP_ORDER_DIGEST={digest:016x}");
    println!("cargo::rustc-link-arg-bin=ferrovisor=-Wl,--symbol-ordering-file={path}");
    println!("cargo::rustc-link-arg-bin=ferrovisor=-Wl,--no-warn-symbol-ordering");
}
