//! libFuzzer target: see `ferrovisor_fuzz::kernel_loaders`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ferrovisor_fuzz::kernel_loaders::run(data);
});
