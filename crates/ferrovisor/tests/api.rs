//! Firecracker's API over the socket of a real ferrovisor process: every
//! endpoint's success and failure cases before the VM starts, the paths
//! that come with later work, the process interface's options and exit
//! codes. (Starting VMs: api_boot.rs.)

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::firecracker::{spawn, temp_dir, Instance};

#[test]
fn instance_info_version_and_defaults() {
    let vm = Instance::start("info", &["--id", "test-vm-1"]);
    let info = vm.get("/");
    assert_eq!(info["id"], "test-vm-1");
    assert_eq!(info["state"], "Not started");
    assert_eq!(info["app_name"], "Ferrovisor");
    assert_eq!(info["vmm_version"], api::FIRECRACKER_API_VERSION);
    assert_eq!(
        vm.get("/version"),
        serde_json::json!({"firecracker_version": api::FIRECRACKER_API_VERSION})
    );
    let m = vm.get("/machine-config");
    assert_eq!(
        (m["vcpu_count"].as_u64(), m["mem_size_mib"].as_u64()),
        (Some(1), Some(128))
    );
    assert_eq!(m["smt"], false);
    let config = vm.get("/vm/config");
    assert_eq!(config["drives"], serde_json::json!([]));
    assert_eq!(config["machine-config"], m);
    assert!(config.get("boot-source").is_none());
}

#[test]
fn machine_config_put_patch_and_bad_bodies() {
    let vm = Instance::start("machine", &[]);
    vm.ok(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 2, "mem_size_mib": 256}"#,
    );
    vm.ok("PATCH", "/machine-config", r#"{"vcpu_count": 4}"#);
    vm.ok(
        "PATCH",
        "/machine-config",
        r#"{"track_dirty_pages": true, "huge_pages": "None"}"#,
    );
    for (method, body, needle) in [
        (
            "PUT",
            r#"{"vcpu_count": 2}"#,
            "missing field `mem_size_mib`",
        ),
        (
            "PUT",
            r#"{"vcpu_count": 2, "mem_size_mib": 64, "cpus": 1}"#,
            "unknown field `cpus`",
        ),
        (
            "PUT",
            r#"{"vcpu_count": "two", "mem_size_mib": 64}"#,
            "invalid type: string",
        ),
        (
            "PUT",
            r#"{"vcpu_count": -1, "mem_size_mib": 64}"#,
            "invalid value",
        ),
        (
            "PUT",
            r#"{"vcpu_count": 0, "mem_size_mib": 64}"#,
            "vcpu_count 0 is out of range",
        ),
        (
            "PUT",
            r#"{"vcpu_count": 1, "mem_size_mib": 4}"#,
            "too small",
        ),
        (
            "PUT",
            r#"{"vcpu_count": 3, "mem_size_mib": 64, "smt": true}"#,
            "vcpu_count 3 is invalid with smt",
        ),
        (
            "PUT",
            r#"{"vcpu_count": 1, "mem_size_mib": 64, "cpu_template": "T2"}"#,
            "cpu_template T2 is not supported: Ferrovisor has no static CPU templates; give the CPUID and MSR modifiers as a custom template (PUT /cpu-config",
        ),
        (
            "PATCH",
            r#"{"huge_pages": "2M"}"#,
            "huge_pages Huge2M is not supported",
        ),
        ("PATCH", r#"{"huge_pages": "1G"}"#, "unknown variant `1G`"),
        ("PATCH", r#"{"mem_size_mib": 8}"#, "too small"),
        ("PUT", "[", "EOF while parsing"),
        ("PUT", "not json", "not valid JSON"),
    ] {
        vm.bad(method, "/machine-config", Some(body), needle);
    }
    vm.bad("PUT", "/machine-config", None, "needs a JSON body");
    vm.bad("PATCH", "/machine-config", None, "needs a JSON body");
    // Nothing that failed changed anything.
    let m = vm.get("/machine-config");
    assert_eq!(
        m,
        serde_json::json!({"vcpu_count": 4, "mem_size_mib": 256, "smt": false,
                           "track_dirty_pages": true, "huge_pages": "None"})
    );
}

#[test]
fn boot_source() {
    let vm = Instance::start("boot", &[]);
    let kernel = vm.dir.join("kernel.bin");
    std::fs::write(&kernel, b"not really a kernel").unwrap();
    let k = kernel.to_str().unwrap();
    vm.bad(
        "PUT",
        "/boot-source",
        Some(r#"{"kernel_image_path": "/nonexistent/vmlinux"}"#),
        "cannot open the kernel image /nonexistent/vmlinux: No such file",
    );
    vm.bad(
        "PUT",
        "/boot-source",
        Some(&format!(
            r#"{{"kernel_image_path": "{k}", "initrd_path": "/nonexistent/initrd"}}"#
        )),
        "cannot open the initrd /nonexistent/initrd",
    );
    vm.bad(
        "PUT",
        "/boot-source",
        Some(r#"{"boot_args": "x"}"#),
        "missing field `kernel_image_path`",
    );
    vm.bad(
        "PUT",
        "/boot-source",
        Some(r#"{"kernel_image_path": ""}"#),
        "cannot be empty",
    );
    vm.bad(
        "PUT",
        "/boot-source",
        Some(&format!(r#"{{"kernel_image_path": "{k}", "kernel": "x"}}"#)),
        "unknown field `kernel`",
    );
    vm.ok(
        "PUT",
        "/boot-source",
        &format!(r#"{{"kernel_image_path": "{k}", "boot_args": "console=ttyS0"}}"#),
    );
    let config = vm.get("/vm/config");
    assert_eq!(
        config["boot-source"],
        serde_json::json!({"kernel_image_path": k, "boot_args": "console=ttyS0"})
    );
}

#[test]
fn drives() {
    let vm = Instance::start("drives", &[]);
    let img = vm.dir.join("disk.img");
    std::fs::write(&img, vec![0u8; 4096]).unwrap();
    let p = img.to_str().unwrap();
    let drive = |id: &str, root: bool| {
        format!(
            r#"{{"drive_id": "{id}", "path_on_host": "{p}", "is_root_device": {root}, "is_read_only": false}}"#
        )
    };
    vm.ok("PUT", "/drives/rootfs", &drive("rootfs", true));
    vm.ok("PUT", "/drives/data_1", &drive("data_1", false));
    // The same id again replaces the drive.
    vm.ok("PUT", "/drives/data_1", &drive("data_1", false));
    vm.bad(
        "PUT",
        "/drives/other",
        Some(&drive("other", true)),
        "drive \"rootfs\" already is",
    );
    vm.bad(
        "PUT",
        "/drives/a",
        Some(&drive("b", false)),
        "differs from the one in the body",
    );
    vm.bad(
        "PUT",
        "/drives/a-b",
        Some(&drive("a-b", false)),
        "letters, digits and underscores",
    );
    vm.bad(
        "PUT",
        "/drives",
        Some(&drive("x", false)),
        "drive ID is missing from the path",
    );
    vm.bad(
        "PUT",
        "/drives/x/y",
        Some(&drive("x", false)),
        "invalid request method and/or path",
    );
    vm.bad(
        "PUT",
        "/drives/x",
        Some(r#"{"drive_id": "x", "path_on_host": "/nonexistent.img", "is_root_device": false}"#),
        "cannot open the drive /nonexistent.img",
    );
    vm.bad(
        "PUT",
        "/drives/x",
        Some(r#"{"drive_id": "x", "is_root_device": false}"#),
        "has no path_on_host",
    );
    vm.bad(
        "PUT",
        "/drives/x",
        Some(r#"{"drive_id": "x"}"#),
        "missing field `is_root_device`",
    );
    vm.bad(
        "PUT",
        "/drives/x",
        Some(r#"{"drive_id": "x", "is_root_device": false, "socket": "/s"}"#),
        "vhost-user-block (socket) is not supported",
    );
    vm.ok(
        "PUT",
        "/drives/x",
        &format!(
            r#"{{"drive_id": "x", "path_on_host": "{p}", "is_root_device": false,
                "rate_limiter": {{"bandwidth": {{"size": 1000, "refill_time": 100}},
                                  "ops": {{"size": 10, "one_time_burst": 5, "refill_time": 1000}}}}}}"#
        ),
    );
    let config = vm.get("/vm/config");
    let x = config["drives"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["drive_id"] == "x")
        .unwrap();
    assert_eq!(
        x["rate_limiter"],
        serde_json::json!({"bandwidth": {"size": 1000, "refill_time": 100},
                           "ops": {"size": 10, "one_time_burst": 5, "refill_time": 1000}})
    );
    vm.bad(
        "PUT",
        "/drives/x",
        Some(&format!(
            r#"{{"drive_id": "x", "path_on_host": "{p}", "is_root_device": false,
                "rate_limiter": {{"ops": {{"size": 1, "refill_time": 18446744073710}}}}}}"#
        )),
        "refill_time 18446744073710 ms is too long",
    );
    vm.bad(
        "PUT",
        "/drives/x",
        Some(&format!(
            r#"{{"drive_id": "x", "path_on_host": "{p}", "is_root_device": false,
                "rate_limiter": {{"ops": {{"size": -1, "refill_time": 100}}}}}}"#
        )),
        "invalid value",
    );
    vm.bad(
        "PUT",
        "/drives/x",
        Some(&format!(
            r#"{{"drive_id": "x", "path_on_host": "{p}", "is_root_device": false, "cache_type": "Fast"}}"#
        )),
        "unknown variant `Fast`",
    );
    // An empty rate limiter limits nothing and is accepted, as are the
    // cache and engine choices.
    vm.ok(
        "PUT",
        "/drives/x",
        &format!(
            r#"{{"drive_id": "x", "path_on_host": "{p}", "is_root_device": false, "rate_limiter": {{}},
                "cache_type": "Writeback", "io_engine": "Async", "is_read_only": true}}"#
        ),
    );
    vm.bad(
        "PATCH",
        "/drives/x",
        Some(r#"{"drive_id": "x", "path_on_host": "/y"}"#),
        "only accepted after the microVM starts",
    );
    vm.bad(
        "DELETE",
        "/drives/x",
        None,
        "hot-unplugging a device (DELETE) is not supported",
    );
    let config = vm.get("/vm/config");
    let ids: Vec<&str> = config["drives"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["drive_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["rootfs", "data_1", "x"]);
    assert_eq!(config["drives"][2]["cache_type"], "Writeback");
}

#[test]
fn network_interfaces() {
    let vm = Instance::start("net", &[]);
    let net = |id: &str, tap: &str, extra: &str| {
        format!(r#"{{"iface_id": "{id}", "host_dev_name": "{tap}"{extra}}}"#)
    };
    vm.bad(
        "PUT",
        "/network-interfaces/eth0",
        Some(&net("eth0", "fvnosuchtap0", "")),
        "fvnosuchtap0",
    );
    vm.bad(
        "PUT",
        "/network-interfaces/eth0",
        Some(&net("eth0", "tap0", r#", "guest_mac": "06:00:00:00:00""#)),
        "is not a MAC address",
    );
    vm.bad(
        "PUT",
        "/network-interfaces/eth0",
        Some(&net(
            "eth0",
            "tap0",
            r#", "guest_mac": "01:00:5e:00:00:01""#,
        )),
        "multicast",
    );
    vm.bad(
        "PUT",
        "/network-interfaces/eth0",
        Some(&net("eth0", "tap0", r#", "mtu": 9000"#)),
        "mtu on a network interface is not supported",
    );
    vm.bad(
        "PUT",
        "/network-interfaces/eth0",
        Some(&net("eth0", "a/b", "")),
        "not a network interface name",
    );
    vm.bad(
        "PUT",
        "/network-interfaces/eth0",
        Some(&net("eth1", "tap0", "")),
        "differs from the one in the body",
    );
    vm.bad(
        "PUT",
        "/network-interfaces/eth0",
        Some(r#"{"iface_id": "eth0"}"#),
        "missing field `host_dev_name`",
    );
    vm.bad(
        "PATCH",
        "/network-interfaces/eth0",
        Some(r#"{"iface_id": "eth0"}"#),
        "only accepted after the microVM starts",
    );
    assert_eq!(
        vm.get("/vm/config")["network-interfaces"],
        serde_json::json!([])
    );
}

#[test]
fn network_interfaces_on_real_taps() {
    // Two TAPs in a network namespace of their own; ferrovisor runs in it.
    let Some(ns) = common::netns::Netns::new("api", "fvtap0", None) else {
        return;
    };
    ns.add_tap("fvtap1", None).unwrap();
    let vm = Instance::start_via("taps", &ns.wrapper(), &[]);
    vm.ok(
        "PUT",
        "/network-interfaces/eth0",
        r#"{"iface_id": "eth0", "host_dev_name": "fvtap0", "guest_mac": "06:00:ac:10:00:02"}"#,
    );
    vm.bad(
        "PUT",
        "/network-interfaces/eth1",
        Some(r#"{"iface_id": "eth1", "host_dev_name": "fvtap0"}"#),
        "both use the host device \"fvtap0\"",
    );
    vm.bad(
        "PUT",
        "/network-interfaces/eth1",
        Some(
            r#"{"iface_id": "eth1", "host_dev_name": "fvtap1", "guest_mac": "06:00:AC:10:00:02"}"#,
        ),
        "both use the MAC address",
    );
    vm.ok(
        "PUT",
        "/network-interfaces/eth1",
        r#"{"iface_id": "eth1", "host_dev_name": "fvtap1"}"#,
    );
    // The same id again replaces the interface.
    vm.ok(
        "PUT",
        "/network-interfaces/eth0",
        r#"{"iface_id": "eth0", "host_dev_name": "fvtap0"}"#,
    );
    let config = vm.get("/vm/config");
    assert_eq!(
        config["network-interfaces"],
        serde_json::json!([
            {"iface_id": "eth0", "host_dev_name": "fvtap0"},
            {"iface_id": "eth1", "host_dev_name": "fvtap1"}
        ])
    );
}

#[test]
fn vsock_entropy_serial() {
    let vm = Instance::start("devices", &[]);
    vm.ok(
        "PUT",
        "/vsock",
        r#"{"guest_cid": 3, "uds_path": "/tmp/fv-v.sock"}"#,
    );
    vm.ok(
        "PUT",
        "/vsock",
        r#"{"guest_cid": 4, "uds_path": "/tmp/fv-v.sock", "vsock_id": "v"}"#,
    );
    vm.bad(
        "PUT",
        "/vsock",
        Some(r#"{"guest_cid": 2, "uds_path": "/x"}"#),
        "guest_cid 2 is reserved",
    );
    vm.bad(
        "PUT",
        "/vsock",
        Some(r#"{"guest_cid": 3, "uds_path": ""}"#),
        "uds_path cannot be empty",
    );
    vm.bad(
        "PUT",
        "/vsock",
        Some(r#"{"guest_cid": 3}"#),
        "missing field `uds_path`",
    );
    vm.bad(
        "PUT",
        "/vsock",
        Some(r#"{"guest_cid": 99999999999, "uds_path": "/x"}"#),
        "invalid value",
    );
    vm.ok("PUT", "/entropy", "{}");
    vm.ok(
        "PUT",
        "/entropy",
        r#"{"rate_limiter": {"ops": {"size": 1, "refill_time": 1}}}"#,
    );
    assert_eq!(
        vm.get("/vm/config")["entropy"],
        serde_json::json!({"rate_limiter": {"ops": {"size": 1, "refill_time": 1}}})
    );
    vm.ok("PUT", "/entropy", "{}");
    vm.bad(
        "PUT",
        "/entropy",
        Some(r#"{"rng": true}"#),
        "unknown field `rng`",
    );
    let out = vm.dir.join("serial.out");
    vm.ok(
        "PUT",
        "/serial",
        &format!(r#"{{"serial_out_path": "{}"}}"#, out.display()),
    );
    vm.bad(
        "PUT",
        "/serial",
        Some(r#"{"rate_limiter": {"size": 10, "refill_time": 10}}"#),
        "a rate limiter on the serial console is not supported",
    );
    let config = vm.get("/vm/config");
    assert_eq!(
        config["vsock"],
        serde_json::json!({"guest_cid": 4, "uds_path": "/tmp/fv-v.sock", "vsock_id": "v"})
    );
    assert_eq!(config["entropy"], serde_json::json!({}));
    assert_eq!(config["serial"]["serial_out_path"], out.to_str().unwrap());
}

#[test]
fn logger_and_metrics() {
    let vm = Instance::start("logger", &[]);
    let log = vm.dir.join("fc.log");
    let metrics = vm.dir.join("metrics.json");
    vm.ok(
        "PUT",
        "/logger",
        &format!(
            r#"{{"log_path": "{}", "level": "debug", "show_level": true, "show_log_origin": true}}"#,
            log.display()
        ),
    );
    vm.bad(
        "PUT",
        "/logger",
        Some(r#"{"level": "loud"}"#),
        "unknown log level",
    );
    vm.bad(
        "PUT",
        "/logger",
        Some(r#"{"log_path": "/nonexistent/dir/log"}"#),
        "cannot open the log file /nonexistent/dir/log",
    );
    // Debug logging records API requests, with level and origin.
    vm.get("/version");
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("path=/version"))
        .unwrap_or_else(|| panic!("no request logged in {text:?}"));
    assert!(
        line.contains("[anonymous-instance:api-conn:DEBUG:"),
        "{line}"
    );
    assert!(line.contains(".rs:"), "{line}");
    vm.ok(
        "PUT",
        "/metrics",
        &format!(r#"{{"metrics_path": "{}"}}"#, metrics.display()),
    );
    vm.bad(
        "PUT",
        "/metrics",
        Some(&format!(r#"{{"metrics_path": "{}"}}"#, metrics.display())),
        "already configured",
    );
    vm.bad(
        "PUT",
        "/metrics",
        Some("{}"),
        "missing field `metrics_path`",
    );
    vm.bad(
        "PUT",
        "/actions",
        Some(r#"{"action_type": "FlushMetrics"}"#),
        "only accepted after the microVM starts",
    );
    let config = vm.get("/vm/config");
    assert_eq!(config["logger"]["level"], "Debug");
    assert_eq!(config["metrics"]["metrics_path"], metrics.to_str().unwrap());
}

#[test]
fn actions_before_start() {
    let vm = Instance::start("actions", &["--accel", "emu"]);
    vm.bad(
        "PUT",
        "/actions",
        Some(r#"{"action_type": "InstanceStart"}"#),
        "no boot source",
    );
    vm.bad(
        "PUT",
        "/actions",
        Some(r#"{"action_type": "SendCtrlAltDel"}"#),
        "only accepted after the microVM starts",
    );
    vm.bad(
        "PUT",
        "/actions",
        Some(r#"{"action_type": "Reboot"}"#),
        "unknown variant `Reboot`",
    );
    vm.bad("PUT", "/actions", Some("{}"), "missing field `action_type`");
    // A kernel that opens but does not load: the start fails, and the
    // instance stays configurable.
    let kernel = vm.dir.join("garbage");
    std::fs::write(&kernel, b"garbage, not a kernel").unwrap();
    vm.ok(
        "PUT",
        "/boot-source",
        &format!(r#"{{"kernel_image_path": "{}"}}"#, kernel.display()),
    );
    vm.bad(
        "PUT",
        "/actions",
        Some(r#"{"action_type": "InstanceStart"}"#),
        "cannot start the microVM: cannot load the kernel",
    );
    assert_eq!(vm.get("/")["state"], "Not started");
    vm.ok(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 1, "mem_size_mib": 32}"#,
    );
}

#[test]
fn later_features_answer_400_and_say_so() {
    let vm = Instance::start("later", &[]);
    for (method, path, body) in [
        (
            "PUT",
            "/balloon",
            Some(r#"{"amount_mib": 1, "deflate_on_oom": true}"#),
        ),
        ("GET", "/balloon", None),
        (
            "PATCH",
            "/balloon/statistics",
            Some(r#"{"stats_polling_interval_s": 1}"#),
        ),
        ("GET", "/balloon/hinting/status", None),
        (
            "PUT",
            "/pmem/p0",
            Some(r#"{"id": "p0", "path_on_host": "/x"}"#),
        ),
        (
            "PUT",
            "/hotplug/memory",
            Some(r#"{"total_size_mib": 1024}"#),
        ),
        ("GET", "/hotplug/memory", None),
    ] {
        vm.bad(method, path, body, "not supported by Ferrovisor yet");
    }
    vm.bad(
        "PATCH",
        "/vm",
        Some(r#"{"state": "Sleeping"}"#),
        "unknown variant `Sleeping`",
    );
    vm.bad(
        "PATCH",
        "/vm",
        Some(r#"{"state": "Paused"}"#),
        "only accepted after the microVM starts",
    );
}

#[test]
fn cpu_config_checks_every_field_and_round_trips() {
    let vm = Instance::start("cpucfg", &[]);
    let keep = "x".repeat(32);
    let leaf = |reg: &str, bitmap: &str| {
        format!(
            r#"{{"cpuid_modifiers": [{{"leaf": "0x1", "subleaf": "0x0", "flags": 0,
                 "modifiers": [{{"register": "{reg}", "bitmap": "{bitmap}"}}]}}]}}"#
        )
    };
    for (body, needle) in [
        (
            leaf("eax", "0bxxx"),
            "has 3 bits, a 32-bit register needs exactly 32",
        ),
        (leaf("eax", &format!("0b{keep}x")), "has 33 bits"),
        (leaf("eax", &keep), "must start with 0b"),
        (
            leaf("eax", &format!("0b2{}", &keep[1..])),
            "'2' is not 0, 1, x or _",
        ),
        (leaf("fax", &format!("0b{keep}")), "unknown variant `fax`"),
        (
            r#"{"msr_modifiers": [{"addr": "0x1a0", "bitmap": "0b1"}]}"#.into(),
            "a 64-bit register needs exactly 64",
        ),
        (
            format!(r#"{{"msr_modifiers": [{{"addr": "msr", "bitmap": "0b{keep}{keep}"}}]}}"#),
            "bad MSR address \"msr\"",
        ),
        (
            r#"{"kvm_capabilities": ["!x"]}"#.into(),
            "bad KVM capability \"!x\"",
        ),
        (
            r#"{"reg_modifiers": []}"#.into(),
            "unknown field `reg_modifiers`",
        ),
    ] {
        vm.bad("PUT", "/cpu-config", Some(&body), needle);
    }
    // Nothing that failed was kept.
    assert!(vm.get("/vm/config").get("cpu-config").is_none());
    let good = serde_json::json!({
        "kvm_capabilities": ["!56"],
        "cpuid_modifiers": [{"leaf": "0x1", "subleaf": "0", "flags": 0,
            "modifiers": [{"register": "ecx", "bitmap": format!("0b0{}", &keep[1..])}]}],
        "msr_modifiers": [{"addr": "0x1a0",
            "bitmap": format!("0b{}1", "x".repeat(63))}]
    });
    vm.ok("PUT", "/cpu-config", &good.to_string());
    assert_eq!(vm.get("/vm/config")["cpu-config"], good);
}

#[test]
fn bad_paths_methods_and_bodies() {
    let vm = Instance::start("paths", &[]);
    vm.bad(
        "GET",
        "/nope",
        None,
        "invalid request method and/or path: GET /nope",
    );
    vm.bad("POST", "/actions", Some("{}"), "POST /actions");
    vm.bad("DELETE", "/", None, "DELETE /");
    vm.bad("PUT", "/version", Some("{}"), "PUT /version");
    vm.bad("GET", "/vm", None, "GET /vm");
    vm.bad("GET", "/", Some("{}"), "a GET request cannot have a body");
    vm.bad("PUT", "/vsock", None, "needs a JSON body");
    // A query string and a trailing slash are fine.
    assert_eq!(vm.get("/machine-config/?pretty=1")["vcpu_count"], 1);
}

#[test]
fn malformed_http_on_a_raw_socket() {
    let vm = Instance::start("raw", &[]);
    for bad in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/3\r\n\r\n",
        b"PUT /vsock HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"PUT /vsock HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        let mut s = UnixStream::connect(&vm.sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(bad).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let out = String::from_utf8_lossy(&out);
        assert!(out.starts_with("HTTP/1.1 400 "), "{bad:?}: {out}");
        assert!(out.contains("fault_message"), "{out}");
    }
    // The server still answers.
    assert_eq!(vm.get("/")["state"], "Not started");
}

#[test]
fn payload_limit_and_kept_alive_connections() {
    let vm = Instance::start("payload", &["--http-api-max-payload-size", "64"]);
    let long = format!(r#"{{"kernel_image_path": "/{}"}}"#, "k".repeat(100));
    vm.bad(
        "PUT",
        "/boot-source",
        Some(&long),
        &format!(
            "request payload of {} bytes is larger than the limit of 64 bytes",
            long.len()
        ),
    );
    // One connection, many requests; several connections at once.
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let sock = vm.sock.clone();
            std::thread::spawn(move || {
                let mut c = api::client::Client::connect(&sock).unwrap();
                for i in 0..50 {
                    let body = format!(r#"{{"vcpu_count": {}}}"#, i % 4 + 1);
                    let r = c.request("PATCH", "/machine-config", Some(&body)).unwrap();
                    assert_eq!(r.status, 204, "{}", r.body);
                    let r = c.request("GET", "/", None).unwrap();
                    assert_eq!(r.status, 200);
                    assert_eq!(r.header("connection"), Some("keep-alive"));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Every client ended with vcpu_count 49 % 4 + 1.
    assert_eq!(vm.get("/machine-config")["vcpu_count"], 2);
}

#[test]
fn process_interface_errors() {
    let dir = temp_dir("proc");
    let sock = dir.join("taken.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    for (args, status, needle) in [
        (
            vec!["--api-sock", sock.to_str().unwrap()],
            1,
            "already exists",
        ),
        (vec!["--no-api"], 153, "--no-api needs --config-file"),
        (
            vec!["--frobnicate"],
            153,
            "unexpected argument '--frobnicate'",
        ),
        (vec!["--id", "no spaces"], 153, "--id"),
        (vec!["--level", "chatty"], 152, "invalid logger level"),
        (vec!["--accel", "xen"], 153, "xen"),
        (
            vec!["--api-sock", "/nonexistent/dir/api.sock"],
            1,
            "cannot create the API socket",
        ),
        (
            vec!["--config-file", "/nonexistent.json", "--no-api"],
            1,
            "cannot read the configuration file",
        ),
    ] {
        let (child, _out, err) = spawn(&args);
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&err.recv().unwrap()).into_owned();
        assert_eq!(out.status.code(), Some(status), "{args:?}: {err}");
        let last = err.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("ferrovisor: ") && last.contains(needle),
            "{args:?}: {err}"
        );
    }
    // A configuration file with an unknown key, or a section that comes
    // with later work.
    for (json, needle) in [
        (
            r#"{"boot-source": {"kernel_image_path": "/k"}, "bogus": 1}"#,
            "unknown field `bogus`",
        ),
        (
            r#"{"mmds-config": {"network_interfaces": ["eth0"]}}"#,
            "the MMDS network interface \"eth0\" is not configured",
        ),
        (
            r#"{"machine-config": {"vcpu_count": 0, "mem_size_mib": 64}}"#,
            "vcpu_count 0",
        ),
    ] {
        let file = dir.join("bad.json");
        std::fs::write(&file, json).unwrap();
        let (child, _out, err) = spawn(&["--config-file", file.to_str().unwrap(), "--no-api"]);
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&err.recv().unwrap()).into_owned();
        assert_eq!(out.status.code(), Some(1), "{json}: {err}");
        assert!(err.contains(needle), "{json}: {err}");
    }
    // --help and --version.
    let (child, out, _) = spawn(&["--version"]);
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(0));
    let version = String::from_utf8(out.recv().unwrap()).unwrap();
    assert!(
        version.starts_with(&format!("Firecracker v{} ", api::FIRECRACKER_API_VERSION)),
        "{version}"
    );
    let (child, out, _) = spawn(&["--api-sock", "/x", "--help"]);
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(0));
    assert!(String::from_utf8(out.recv().unwrap())
        .unwrap()
        .contains("--config-file"));
    let _ = std::fs::remove_dir_all(&dir);
}
