//! libFuzzer target: see `ferrovisor_fuzz::config_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ferrovisor_fuzz::config_file::run(data);
});
