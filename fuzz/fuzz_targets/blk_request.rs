//! libFuzzer target: virtio-blk requests from hostile chains (see
//! `virtio::fuzzing`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = virtio::fuzzing::run_blk(data);
});
