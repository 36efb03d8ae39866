//! libFuzzer target: the `cpu` target's inputs (a mode selector, register
//! seeds and guest code) run by the JIT engine, every block compiled
//! (see `ferrovisor_fuzz::run_jit`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ferrovisor_fuzz::run_jit(data);
});
