//! libFuzzer target: hostile virtqueues and descriptor chains (see
//! `virtio::fuzzing`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = virtio::fuzzing::run_virtqueue(data);
});
