//! `--config-file`: JSON → `VmSpec` → `validate`, as the Firecracker front
//! end reads it (and as `GET /vm/config` writes it back).

use api::VmSpec;

pub fn run(data: &[u8]) {
    let Ok(spec) = serde_json::from_slice::<VmSpec>(data) else {
        return;
    };
    if spec.validate().is_err() {
        return;
    }
    // What GET /vm/config writes of a valid description reads back as the
    // same description, still valid. (Only valid ones: the sections that
    // are free JSON, such as "balloon", are refused by validation, and
    // floats in them need not survive serde_json's fast float parser.)
    let json = serde_json::to_string(&spec).expect("a VmSpec serialises");
    let again: VmSpec =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json} does not read back: {e}"));
    assert_eq!(again, spec, "round trip through {json}");
    again
        .validate()
        .unwrap_or_else(|e| panic!("{json} no longer valid: {e}"));
    let _ = spec.kernel_cmdline();
    let _ = spec.drives_in_guest_order().count();
}
