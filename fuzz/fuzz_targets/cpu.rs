//! libFuzzer target: the input is a mode selector, register seeds and
//! guest code (see `ferrovisor_fuzz::run_cpu`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ferrovisor_fuzz::run_cpu(data);
});
