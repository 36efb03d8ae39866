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
    println!("cargo::rustc-link-arg-bin=ferrovisor=-Wl,--symbol-ordering-file={path}");
    println!("cargo::rustc-link-arg-bin=ferrovisor=-Wl,--no-warn-symbol-ordering");
}
