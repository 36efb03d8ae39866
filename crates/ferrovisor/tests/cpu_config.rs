//! A custom CPU template (`cpu-config` in a `--config-file`) seen by a
//! bare guest on every accelerator: a CPUID bit cleared, another set, an
//! MSR value set.

mod common;

use common::firecracker::{elf, spawn, temp_dir};

/// The debug-exit status of [`guests::cpu_template_probe`] reporting
/// `value` (the port writes `value << 1 | 1`).
fn status(value: i32) -> i32 {
    (value << 1) | 1
}

fn run(accel: &str, spec: &serde_json::Value, dir: &std::path::Path, name: &str) -> (i32, String) {
    let file = dir.join(format!("{name}.json"));
    std::fs::write(&file, spec.to_string()).unwrap();
    let (mut child, _out, err) = spawn(&[
        "--config-file",
        file.to_str().unwrap(),
        "--no-api",
        "--accel",
        accel,
    ]);
    drop(child.stdin.take());
    let code = child.wait().unwrap().code().unwrap_or(-1);
    (
        code,
        String::from_utf8_lossy(&err.recv().unwrap()).into_owned(),
    )
}

#[test]
fn the_guest_sees_the_templates_cpuid_and_msr_changes() {
    let dir = temp_dir("cpucfg-e2e");
    let kernel = elf(&dir, "probe.elf", &guests::cpu_template_probe().unwrap());
    let base = serde_json::json!({
        "boot-source": {"kernel_image_path": kernel.to_str().unwrap()},
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 16},
    });
    let mut templated = base.clone();
    templated["cpu-config"] = serde_json::json!({
        "cpuid_modifiers": [{"leaf": "0x1", "subleaf": "0x0", "flags": 0, "modifiers": [
            {"register": "ecx", "bitmap": format!("0b0{}", "x".repeat(31))},
            {"register": "edx", "bitmap": format!("0bx1{}", "x".repeat(30))},
        ]}],
        // IA32_MISC_ENABLE: set bits 12 and 11, keep the others.
        "msr_modifiers": [{"addr": "0x1a0",
                           "bitmap": format!("0b{}11{}", "x".repeat(51), "x".repeat(11))}],
    });
    for accel in common::accels() {
        // Without the template: the hypervisor bit is set, bit 30 clear,
        // MISC_ENABLE bits 11 and 12 clear.
        let (code, err) = run(accel, &base, &dir, "base");
        assert_eq!(code, status(0), "{accel}: {err}");
        let (code, err) = run(accel, &templated, &dir, "templated");
        assert_eq!(code, status(7), "{accel}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_template_in_a_config_file_is_exit_1_with_the_message() {
    let dir = temp_dir("cpucfg-bad");
    let kernel = elf(&dir, "probe.elf", &guests::cpu_template_probe().unwrap());
    let spec = serde_json::json!({
        "boot-source": {"kernel_image_path": kernel.to_str().unwrap()},
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 16},
        "cpu-config": {"msr_modifiers": [{"addr": "0x1a0", "bitmap": "0b01"}]},
    });
    let (code, err) = run("emu", &spec, &dir, "bad");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("bad cpu-config") && err.contains("a 64-bit register needs exactly 64"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn run_takes_the_same_template_with_cpu_template() {
    let dir = temp_dir("cpucfg-run");
    let kernel = elf(&dir, "probe.elf", &guests::cpu_template_probe().unwrap());
    let template = dir.join("t.json");
    let run = |template: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ferrovisor"))
            .args(["run", "--accel", "emu", "--kernel"])
            .arg(&kernel)
            .arg("--cpu-template")
            .arg(template)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    std::fs::write(
        &template,
        serde_json::json!({"cpuid_modifiers": [{"leaf": "1", "subleaf": "0", "flags": 0,
            "modifiers": [{"register": "ecx", "bitmap": format!("0b0{}", "x".repeat(31))}]}]})
        .to_string(),
    )
    .unwrap();
    let out = run(&template);
    assert_eq!(
        out.status.code(),
        Some(status(1)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&template, r#"{"cpuid_modifiers": [{"leaf": "1"}]}"#).unwrap();
    let out = run(&template);
    let err = String::from_utf8_lossy(&out.stderr);
    // A bad flag value: `run`'s usage status, 2.
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--cpu-template") && err.contains("missing field"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn required_kvm_capabilities_are_checked_against_the_accelerator() {
    let dir = temp_dir("cpucfg-caps");
    let kernel = elf(&dir, "probe.elf", &guests::cpu_template_probe().unwrap());
    let spec = |caps: serde_json::Value| {
        serde_json::json!({
            "boot-source": {"kernel_image_path": kernel.to_str().unwrap()},
            "machine-config": {"vcpu_count": 1, "mem_size_mib": 16},
            "cpu-config": {"kvm_capabilities": caps},
        })
    };
    for accel in common::accels() {
        // A removal is accepted everywhere; the guest runs (nothing changed).
        let (code, err) = run(accel, &spec(serde_json::json!(["!56"])), &dir, "remove");
        assert_eq!(code, status(0), "{accel}: {err}");
        let (code, err) = run(accel, &spec(serde_json::json!(["99999"])), &dir, "require");
        assert_eq!(code, 1, "{accel}: {err}");
        let want = match accel {
            "kvm" => "the kvm accelerator does not have KVM capability 99999",
            _ => "has no KVM capabilities to check; capability 99999 cannot be required",
        };
        assert!(err.contains(want), "{accel}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
