//! libFuzzer target: see `ferrovisor_fuzz::qcow2_image`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ferrovisor_fuzz::qcow2_image::run(data);
});
