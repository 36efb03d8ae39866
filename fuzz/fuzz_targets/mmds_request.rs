//! libFuzzer target: see `ferrovisor_fuzz::mmds_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ferrovisor_fuzz::mmds_request::run(data);
});
