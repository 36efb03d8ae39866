//! libFuzzer target: virtio-vsock packets from the guest (see
//! `virtio::fuzzing::run_vsock_packets`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    virtio::fuzzing::run_vsock_packets(data);
});
