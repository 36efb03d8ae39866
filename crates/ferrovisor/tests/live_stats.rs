//! Live exit statistics of a running VM through the API: `GET
//! /ferrovisor/stats` while the guest runs, `ferrovisor stat --once`, the
//! exits in FlushMetrics' line, and `PUT /ferrovisor/trace`.

mod common;

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use common::firecracker::{elf, Instance};

fn io_exits(stats: &serde_json::Value) -> u64 {
    stats["exits"]["vcpu0"]["io"]
        .as_u64()
        .expect("vcpu0 io count")
}

#[test]
fn a_running_guests_exits_through_the_api() {
    for accel in common::accels() {
        let mut vm = Instance::start(&format!("live-{accel}"), &["--accel", accel]);
        // The echo guest polls COM1's line status: port I/O exits all along.
        let kernel = elf(&vm.dir, "echo.elf", &guests::echo().unwrap());
        vm.ok(
            "PUT",
            "/boot-source",
            &format!(
                r#"{{"kernel_image_path": "{}", "boot_args": ""}}"#,
                kernel.display()
            ),
        );
        vm.ok(
            "PUT",
            "/machine-config",
            r#"{"vcpu_count": 1, "mem_size_mib": 32}"#,
        );
        let metrics = vm.dir.join("metrics.json");
        vm.ok(
            "PUT",
            "/metrics",
            &format!(r#"{{"metrics_path": "{}"}}"#, metrics.display()),
        );
        vm.bad("GET", "/ferrovisor/stats", None, "only accepted after");
        vm.ok("PUT", "/actions", r#"{"action_type": "InstanceStart"}"#);

        let first = vm.get("/ferrovisor/stats");
        assert_eq!(first["accel"], accel);
        std::thread::sleep(Duration::from_millis(300));
        let second = vm.get("/ferrovisor/stats");
        assert!(
            io_exits(&second) > io_exits(&first),
            "{accel}: the counters move while the guest runs: {first} then {second}"
        );
        assert!(second["exits"]["vcpu0"]["total"].as_u64().unwrap() >= io_exits(&second));
        // emu reports its soft TLB and code cache besides exits; kvm
        // reports nothing more.
        let extra = second["accel_counters"]["vcpu0"].as_object().unwrap();
        if accel == "emu" {
            assert!(extra["blocks_built"].as_u64().unwrap() > 0, "{second}");
            assert!(extra["code_cache_bytes"].as_u64().unwrap() > 0, "{second}");
        } else {
            assert!(extra.is_empty(), "{second}");
        }

        let out = Command::new(env!("CARGO_BIN_EXE_ferrovisor"))
            .args([
                "stat",
                "--api-sock",
                vm.sock.to_str().unwrap(),
                "--once",
                "--interval",
                "0.3",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.starts_with(&format!("VM exits (accelerator: {accel})\n")),
            "{text}"
        );
        let io_row: Vec<&str> = text
            .lines()
            .find(|l| l.starts_with("io "))
            .unwrap_or_else(|| panic!("no io row: {text}"))
            .split_whitespace()
            .collect();
        let rate: f64 = io_row[2].parse().unwrap();
        assert!(rate > 0.0, "{accel}: {text}");
        assert!(text.lines().last().unwrap().starts_with("Total "), "{text}");

        vm.ok("PUT", "/actions", r#"{"action_type": "FlushMetrics"}"#);
        let line = std::fs::read_to_string(&metrics).unwrap();
        let m: serde_json::Value = serde_json::from_str(line.lines().last().unwrap()).unwrap();
        assert!(m["exits"]["vcpu0"]["io"].as_u64().unwrap() > 0, "{line}");

        vm.bad(
            "PUT",
            "/ferrovisor/trace",
            Some(r#"{"events": "kvm_bogus"}"#),
            "kvm_bogus",
        );
        vm.ok(
            "PUT",
            "/ferrovisor/trace",
            r#"{"events": "kvm_userspace_exit"}"#,
        );
        let trace = vm.get("/ferrovisor/trace");
        assert_eq!(trace["events"], "kvm_userspace_exit");
        assert!(trace["available"].as_array().unwrap().len() >= 15);
        vm.ok("PUT", "/ferrovisor/trace", r#"{"events": ""}"#);

        vm.stdin.take().unwrap().write_all(b"q").unwrap();
        let ended = vm.wait(Duration::from_secs(60));
        assert_eq!(ended.stdout, "echo ready\n", "{}", ended.stderr);
    }
}
