//! The microVM metadata service through Firecracker's API: `/mmds` and
//! `/mmds/config` against a real process, and the Linux test guest on emu
//! reading the store with busybox `wget` and `nc` over its virtio-net
//! interface (V1 and V2), on a TAP in a network namespace of its own. The
//! MMDS answers inside the VMM: the TAP must see none of those frames.
//!
//! Without `ip netns` or /dev/net/tun the guest tests are SKIPPED (or fail
//! with `FERROVISOR_REQUIRE_NET=1`).

mod common;

use common::firecracker::Instance;
use common::netns::Netns;

const START: &str = r#"{"action_type": "InstanceStart"}"#;
const TAP: &str = "fvmmds0";

#[test]
fn mmds_api_before_and_without_a_guest() {
    let vm = Instance::start("mmds-api", &["--mmds-size-limit", "64"]);
    assert_eq!(vm.get("/mmds"), serde_json::json!({}));
    vm.bad(
        "PATCH",
        "/mmds",
        Some(r#"{"a": 1}"#),
        "The MMDS data store is not initialized.",
    );
    vm.ok("PUT", "/mmds", r#"{"latest": {"a": "b", "c": {"d": 1}}}"#);
    vm.ok("PATCH", "/mmds", r#"{"latest": {"a": null, "e": "f"}}"#);
    assert_eq!(
        vm.get("/mmds"),
        serde_json::json!({"latest": {"c": {"d": 1}, "e": "f"}})
    );
    // --mmds-size-limit: 64 bytes of JSON at most; nothing changes.
    let big = format!(r#"{{"x": "{}"}}"#, "y".repeat(64));
    vm.bad("PUT", "/mmds", Some(&big), "over its limit of 64 bytes");
    vm.bad("PATCH", "/mmds", Some(&big), "over its limit of 64 bytes");
    vm.bad("PUT", "/mmds", Some("{"), "not valid JSON");
    assert_eq!(vm.get("/mmds")["latest"]["e"], "f");
    // /mmds/config names interfaces that exist.
    vm.bad(
        "PUT",
        "/mmds/config",
        Some(r#"{"network_interfaces": ["eth0"]}"#),
        "the MMDS network interface \"eth0\" is not configured",
    );
    vm.bad(
        "PUT",
        "/mmds/config",
        Some(r#"{"network_interfaces": []}"#),
        "is empty",
    );
    vm.bad(
        "PUT",
        "/mmds/config",
        Some(r#"{"network_interfaces": ["eth0"], "version": "V3"}"#),
        "unknown variant `V3`",
    );
    vm.bad(
        "PUT",
        "/mmds/config",
        Some(r#"{"version": "V2"}"#),
        "missing field `network_interfaces`",
    );
    assert!(vm.get("/vm/config").get("mmds-config").is_none());
}

/// The API side of a guest test: a VM in `ns` with eth0 on the TAP,
/// MMDS `version` on it, the store filled, running `script`.
fn start_guest(ns: &Netns, label: &str, version: &str, script: &str) -> Option<Instance> {
    let guest = common::guest()?;
    let wrapper = ns.wrapper();
    let vm = Instance::start_via(label, &wrapper, &["--accel", "emu"]);
    vm.put_linux_boot(&guest, script);
    vm.ok(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 1, "mem_size_mib": 256}"#,
    );
    vm.ok(
        "PUT",
        "/network-interfaces/eth0",
        &format!(r#"{{"iface_id": "eth0", "host_dev_name": "{TAP}"}}"#),
    );
    let config = format!(r#"{{"network_interfaces": ["eth0"], "version": "{version}"}}"#);
    vm.ok("PUT", "/mmds/config", &config);
    assert_eq!(
        vm.get("/vm/config")["mmds-config"],
        serde_json::json!({"version": version, "network_interfaces": ["eth0"]})
    );
    vm.ok(
        "PUT",
        "/mmds",
        r#"{"latest": {"meta-data": {"ami-id": "ami-12345678", "reservation-id": "r-fea54097",
            "network": {"interfaces": {}}}}}"#,
    );
    vm.ok("PUT", "/actions", START);
    vm.bad(
        "PUT",
        "/mmds/config",
        Some(&config),
        "only accepted before the microVM starts",
    );
    Some(vm)
}

/// The guest's network set-up: a link-local address, no IPv6 (so that the
/// guest sends the TAP nothing of its own).
const SETUP: &str = "echo 1 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6 2>/dev/null; \
     ip addr add 169.254.0.2/16 dev eth0 && ip link set eth0 up && ";
const URL: &str = "http://169.254.169.254";

#[test]
fn linux_reads_the_mmds_v1_with_wget() {
    let Some(ns) = Netns::new("v1", TAP, None) else {
        return;
    };
    let script = format!(
        "{SETUP} \
         echo listing=$(wget -q -O - {URL}/latest/meta-data/ | tr '\\n' ,); \
         echo leaf=$(wget -q -O - {URL}/latest/meta-data/ami-id); \
         echo json=$(wget -q -O - --header 'Accept: application/json' {URL}/latest/meta-data/ami-id); \
         echo missing=$(printf 'GET /nope HTTP/1.0\\r\\n\\r\\n' | nc 169.254.169.254 80 | head -n 1); \
         i=0; while [ $i -lt 120 ]; do \
           v=$(wget -q -O - {URL}/latest/meta-data/late) && break; i=$((i+1)); sleep 1; done; \
         echo late=$v"
    );
    let Some(vm) = start_guest(&ns, "mmds-v1", "V1", &script) else {
        return;
    };
    // After start: the store changes under the guest's eyes.
    vm.ok(
        "PATCH",
        "/mmds",
        r#"{"latest": {"meta-data": {"late": "patched-after-boot"}}}"#,
    );
    let ended = vm.wait(common::BOOT_TIMEOUT);
    let console = ended.stdout.replace('\r', "");
    for want in [
        // (`late` may already be there: the PATCH races the boot.)
        "listing=ami-id,",
        "network/,reservation-id\n",
        "leaf=ami-12345678",
        "json=\"ami-12345678\"",
        "missing=HTTP/1.0 404 Not Found",
        "late=patched-after-boot",
        "FERROVISOR-CMD-EXIT=0",
    ] {
        assert!(
            console.contains(want),
            "{want:?} missing; console:\n{console}"
        );
    }
    assert_eq!(ended.status, Some(0), "{}", ended.stderr);
    assert_eq!(ns.tap_stat("rx_packets"), 0, "MMDS frames reached the TAP");
}

#[test]
fn linux_reads_the_mmds_v2_with_a_session_token() {
    let Some(ns) = Netns::new("v2", TAP, None) else {
        return;
    };
    let script = format!(
        "{SETUP} \
         echo no-token=$(printf 'GET /latest/meta-data/ami-id HTTP/1.0\\r\\n\\r\\n' | nc 169.254.169.254 80 | head -n 1); \
         wget -q -O - {URL}/latest/meta-data/ami-id; echo wget-without-token=$?; \
         TOKEN=$(printf 'PUT /latest/api/token HTTP/1.0\\r\\nX-metadata-token-ttl-seconds: 60\\r\\n\\r\\n' | nc 169.254.169.254 80 | tail -n 1); \
         echo token-length=${{#TOKEN}}; \
         echo leaf=$(wget -q -O - --header \"X-metadata-token: $TOKEN\" {URL}/latest/meta-data/ami-id); \
         echo listing=$(wget -q -O - --header \"X-aws-ec2-metadata-token: $TOKEN\" {URL}/latest/ | tr '\\n' ,); \
         echo bad-token=$(printf 'GET /latest HTTP/1.0\\r\\nX-metadata-token: x\\r\\n\\r\\n' | nc 169.254.169.254 80 | head -n 1)"
    );
    let Some(vm) = start_guest(&ns, "mmds-v2", "V2", &script) else {
        return;
    };
    let ended = vm.wait(common::BOOT_TIMEOUT);
    let console = ended.stdout.replace('\r', "");
    for want in [
        "no-token=HTTP/1.0 401 Unauthorized",
        "wget-without-token=1",
        "token-length=32",
        "leaf=ami-12345678",
        "listing=meta-data/\n",
        "bad-token=HTTP/1.0 401 Unauthorized",
        "FERROVISOR-CMD-EXIT=0",
    ] {
        assert!(
            console.contains(want),
            "{want:?} missing; console:\n{console}"
        );
    }
    assert_eq!(ended.status, Some(0), "{}", ended.stderr);
    assert_eq!(ns.tap_stat("rx_packets"), 0, "MMDS frames reached the TAP");
}
