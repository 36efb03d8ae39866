//! libFuzzer target: see `ferrovisor_fuzz::cli_options`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ferrovisor_fuzz::cli_options::run(data);
});
