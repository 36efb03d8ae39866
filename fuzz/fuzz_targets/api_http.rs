//! libFuzzer target: see `ferrovisor_fuzz::api_http`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ferrovisor_fuzz::api_http::run(data);
});
