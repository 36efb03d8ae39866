//! Firecracker's metrics: one JSON object per line, with Firecracker's
//! section and field names where our counters mean the same thing, plus
//! ours (`exits`, `ferrovisor`). docs/API.md lists the fields.
//!
//! As in Firecracker, a counter ("SharedIncMetric") is written as the
//! change since the previous line; a value ("SharedStoreMetric": the
//! start-up time, the latencies) is written as it is. The counts come from
//! their owners: the devices (through [`vmm::LiveStats::devices`]), the
//! buses, the logger, and the API requests counted here.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

use api::Request;
use serde_json::{Map, Value};

/// Firecracker's interval between two periodic flushes.
pub const PERIOD: Duration = Duration::from_secs(60);

/// Firecracker's request group and name of an API request (for
/// `get_api_requests`, `put_api_requests`, `patch_api_requests`), for the
/// requests Firecracker counts.
pub fn endpoint(request: &Request) -> Option<Endpoint> {
    const GET: &str = "get_api_requests";
    const PUT: &str = "put_api_requests";
    const PATCH: &str = "patch_api_requests";
    Some(match request {
        Request::GetInstanceInfo => (GET, "instance_info"),
        Request::GetVersion => (GET, "vmm_version"),
        Request::GetMachineConfig => (GET, "machine_cfg"),
        Request::GetMmds => (GET, "mmds"),
        Request::Action(_) => (PUT, "actions"),
        Request::PutBootSource(_) => (PUT, "boot_source"),
        Request::PutDrive { .. } => (PUT, "drive"),
        Request::PutLogger(_) => (PUT, "logger"),
        Request::PutMachineConfig(_) => (PUT, "machine_cfg"),
        Request::PutMetrics(_) => (PUT, "metrics"),
        Request::PutNetworkInterface { .. } => (PUT, "network"),
        Request::PutMmds(_) | Request::PutMmdsConfig(_) => (PUT, "mmds"),
        Request::PutVsock(_) => (PUT, "vsock"),
        Request::PutEntropy(_) => (PUT, "entropy"),
        Request::PutSerial(_) => (PUT, "serial"),
        Request::PatchDrive { .. } => (PATCH, "drive"),
        Request::PatchNetworkInterface { .. } => (PATCH, "network"),
        Request::PatchMachineConfig(_) => (PATCH, "machine_cfg"),
        Request::PatchMmds(_) => (PATCH, "mmds"),
        _ => return None,
    })
}

/// An endpoint: Firecracker's request group and name.
pub type Endpoint = (&'static str, &'static str);

/// What the API side counts: requests by endpoint (count, fails) and the
/// last latency of each measured operation.
#[derive(Default)]
pub struct ApiMetrics {
    requests: Mutex<BTreeMap<Endpoint, (u64, u64)>>,
    latencies_us: Mutex<BTreeMap<&'static str, u64>>,
    /// Lines that could not be written to the metrics destination.
    pub metrics_fails: AtomicU64,
}

impl ApiMetrics {
    /// Counts a request to `endpoint`, failed or not.
    pub fn request(&self, endpoint: Endpoint, failed: bool) {
        let mut map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(endpoint).or_default();
        entry.0 += 1;
        entry.1 += u64::from(failed);
    }

    /// Keeps the latest duration of `operation`.
    pub fn latency(&self, operation: &'static str, took: Duration) {
        let mut map = self.latencies_us.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(operation, took.as_micros() as u64);
    }
}

/// Everything one line is made of.
pub struct Inputs<'a> {
    pub api: &'a ApiMetrics,
    /// From the front end's start to the API socket listening.
    pub process_startup_time_us: Option<u64>,
    pub missed_log_count: u64,
    /// The running machine's counters (None before it starts).
    pub sample: Option<vmm::StatsSample>,
    pub devices: Option<vmm::DeviceMetrics>,
    /// The drives' IDs in the guest's order, the interfaces' in the
    /// config's.
    pub drive_ids: Vec<String>,
    pub iface_ids: Vec<String>,
    /// Ours: the lifecycle state and the process's uptime.
    pub state: &'static str,
    pub uptime_us: u64,
    pub utc_timestamp_ms: u64,
}

/// Makes the lines: remembers each counter's value at the previous line.
#[derive(Default)]
pub struct LineBuilder {
    previous: HashMap<String, u64>,
}

/// One section of a line being built.
struct Section<'b> {
    builder: &'b mut LineBuilder,
    name: String,
    fields: Map<String, Value>,
}

impl Section<'_> {
    /// A counter: written as its change since the previous line.
    fn inc(&mut self, field: &str, total: u64) -> &mut Self {
        let key = format!("{}.{field}", self.name);
        let before = self.builder.previous.insert(key, total).unwrap_or(0);
        self.fields
            .insert(field.into(), total.saturating_sub(before).into());
        self
    }

    /// A value: written as it is.
    fn store(&mut self, field: &str, value: u64) -> &mut Self {
        self.fields.insert(field.into(), value.into());
        self
    }
}

impl LineBuilder {
    fn section(&mut self, name: &str) -> Section<'_> {
        Section {
            builder: self,
            name: name.to_string(),
            fields: Map::new(),
        }
    }

    /// The line for `inputs` (without its newline).
    pub fn line(&mut self, inputs: Inputs<'_>) -> Value {
        let mut out = Map::new();
        out.insert("utc_timestamp_ms".into(), inputs.utc_timestamp_ms.into());
        let mut put = |name: &str, section: Map<String, Value>| {
            out.insert(name.to_string(), section.into());
        };

        let mut s = self.section("api_server");
        if let Some(us) = inputs.process_startup_time_us {
            s.store("process_startup_time_us", us);
        }
        put("api_server", s.fields);

        let requests = inputs
            .api
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for group in ["get_api_requests", "put_api_requests", "patch_api_requests"] {
            let mut s = self.section(group);
            for (&(_, name), &(count, fails)) in requests.iter().filter(|((g, _), _)| *g == group) {
                s.inc(&format!("{name}_count"), count);
                if group != "get_api_requests" {
                    s.inc(&format!("{name}_fails"), fails);
                }
            }
            put(group, s.fields);
        }

        let mut s = self.section("latencies_us");
        let latencies = inputs
            .api
            .latencies_us
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (name, us) in latencies {
            s.store(name, us);
        }
        put("latencies_us", s.fields);

        let mut s = self.section("logger");
        s.inc("missed_log_count", inputs.missed_log_count);
        s.inc(
            "metrics_fails",
            inputs.api.metrics_fails.load(Ordering::Relaxed),
        );
        put("logger", s.fields);

        if let Some(sample) = &inputs.sample {
            let mut s = self.section("vcpu");
            s.inc("exit_io_in", sample.pio_accesses.0)
                .inc("exit_io_out", sample.pio_accesses.1)
                .inc("exit_mmio_read", sample.mmio_accesses.0)
                .inc("exit_mmio_write", sample.mmio_accesses.1);
            put("vcpu", s.fields);
        }
        if let Some(devices) = &inputs.devices {
            for (name, section) in self.device_sections(devices, &inputs) {
                put(&name, section);
            }
        }
        if let Some(sample) = &inputs.sample {
            put(
                "exits",
                match crate::stats::exits_json(sample) {
                    Value::Object(m) => m,
                    _ => Map::new(),
                },
            );
        }
        // Firecracker's seccomp.num_faults: the SIGSYS handler's counter
        // (process-wide, as the filters are). A fault ends the process at
        // once: the handler writes its own short line with the count to
        // the metrics file first ([`report_faults_to`]); here the counter
        // shows only in a process that survives a fault (none by default).
        let mut s = self.section("seccomp");
        s.inc("num_faults", sandbox::faults());
        put("seccomp", s.fields);
        let mut s = self.section("ferrovisor");
        s.fields.insert("state".into(), inputs.state.into());
        s.store("uptime_us", inputs.uptime_us);
        if let Some(sample) = &inputs.sample {
            s.inc("unhandled_pio", sample.unhandled_pio)
                .inc("unhandled_mmio", sample.unhandled_mmio);
        }
        put("ferrovisor", s.fields);
        out.into()
    }

    /// `block`, `block_<id>`, `net`, `net_<id>`, `mmds`, `entropy`, `vsock`,
    /// `uart`, `i8042`.
    fn device_sections(
        &mut self,
        devices: &vmm::DeviceMetrics,
        inputs: &Inputs<'_>,
    ) -> Vec<(String, Map<String, Value>)> {
        let mut sections = Vec::new();
        let mut drives: Vec<(String, vmm::DriveMetrics)> = inputs
            .drive_ids
            .iter()
            .zip(&devices.drives)
            .map(|(id, m)| (format!("block_{id}"), *m))
            .collect();
        if !devices.drives.is_empty() {
            let mut total = devices.drives[0];
            for m in &devices.drives[1..] {
                let (t, r) = (&mut total.requests, &m.requests);
                t.reads += r.reads;
                t.writes += r.writes;
                t.flushes += r.flushes;
                t.errors += r.errors;
                t.unsupported += r.unsupported;
                t.read_bytes += r.read_bytes;
                t.write_bytes += r.write_bytes;
                total.throttled += m.throttled;
            }
            drives.insert(0, ("block".into(), total));
        }
        for (name, m) in drives {
            let r = m.requests;
            let mut s = self.section(&name);
            s.inc("read_count", r.reads)
                .inc("write_count", r.writes)
                .inc("read_bytes", r.read_bytes)
                .inc("write_bytes", r.write_bytes)
                .inc("flush_count", r.flushes)
                .inc("execute_fails", r.errors)
                .inc("invalid_reqs_count", r.unsupported)
                .inc("rate_limiter_throttled_events", m.throttled);
            sections.push((name, s.fields));
        }

        let mut nets: Vec<(String, vmm::NetMetrics)> = inputs
            .iface_ids
            .iter()
            .zip(&devices.nets)
            .map(|(id, m)| (format!("net_{id}"), *m))
            .collect();
        if !devices.nets.is_empty() {
            let mut total = devices.nets[0];
            for m in &devices.nets[1..] {
                let (t, r) = (&mut total.traffic, &m.traffic);
                t.rx_packets += r.rx_packets;
                t.rx_bytes += r.rx_bytes;
                t.tx_packets += r.tx_packets;
                t.tx_bytes += r.tx_bytes;
                t.backend_errors += r.backend_errors;
                t.mmds_frames += r.mmds_frames;
                total.rx_throttled += m.rx_throttled;
                total.tx_throttled += m.tx_throttled;
            }
            nets.insert(0, ("net".into(), total));
            let mut s = self.section("mmds");
            s.inc("rx_accepted", total.traffic.mmds_frames);
            sections.push(("mmds".into(), s.fields));
        }
        for (name, m) in nets {
            let t = m.traffic;
            let mut s = self.section(&name);
            s.inc("rx_bytes_count", t.rx_bytes)
                .inc("rx_packets_count", t.rx_packets)
                .inc("rx_fails", t.backend_errors)
                .inc("tx_bytes_count", t.tx_bytes)
                .inc("tx_packets_count", t.tx_packets)
                .inc("rx_rate_limiter_throttled", m.rx_throttled)
                .inc("tx_rate_limiter_throttled", m.tx_throttled);
            sections.push((name, s.fields));
        }

        if let Some(e) = devices.entropy {
            let mut s = self.section("entropy");
            s.inc("entropy_event_count", e.requests.entropy_event_count)
                .inc("entropy_bytes", e.requests.entropy_bytes)
                .inc("host_rng_fails", e.requests.host_rng_fails)
                .inc("entropy_rate_limiter_throttled", e.throttled);
            sections.push(("entropy".into(), s.fields));
        }

        if let Some(v) = devices.vsock {
            let mut s = self.section("vsock");
            s.inc("conns_added", v.connections);
            sections.push(("vsock".into(), s.fields));
        }

        let mut s = self.section("uart");
        s.inc("read_count", devices.uart.read_count)
            .inc("write_count", devices.uart.write_count)
            .inc("missed_write_count", devices.uart.missed_write_count);
        sections.push(("uart".into(), s.fields));

        let mut s = self.section("i8042");
        s.inc("read_count", devices.i8042.read_count)
            .inc("write_count", devices.i8042.write_count)
            .inc("reset_count", devices.i8042.reset_count);
        sections.push(("i8042".into(), s.fields));
        sections
    }
}

/// Makes the SIGSYS handler write its line (`seccomp.num_faults`) to
/// the metrics `file` too, before the process ends; the file back.
pub fn report_faults_to(file: std::fs::File) -> std::io::Result<std::fs::File> {
    use std::os::fd::AsFd;
    sandbox::report_faults_to(sandbox::FaultReport::Metrics, file.as_fd())?;
    Ok(file)
}

/// Calls a function every `interval` on its own thread until dropped.
pub struct Periodic {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Periodic {
    pub fn spawn(interval: Duration, mut tick: impl FnMut() + Send + 'static) -> Periodic {
        let (stop, stopped) = channel::<()>();
        let builder = std::thread::Builder::new().name("metrics".into());
        let thread = sandbox::spawn(sandbox::ThreadKind::Metrics, builder, move || {
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                tick();
            }
        })
        .map_err(|e| tracing::warn!("cannot start the periodic metrics: {e}"))
        .ok();
        Periodic {
            stop: Some(stop),
            thread,
        }
    }
}

impl Drop for Periodic {
    fn drop(&mut self) {
        // Closing the channel ends the thread's wait at once.
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn the_periodic_timer_ticks_at_its_interval_until_dropped() {
        let ticks = Arc::new(AtomicU64::new(0));
        let counted = ticks.clone();
        let started = Instant::now();
        let timer = Periodic::spawn(Duration::from_millis(20), move || {
            counted.fetch_add(1, Ordering::Relaxed);
        });
        while ticks.load(Ordering::Relaxed) < 3 {
            assert!(started.elapsed() < Duration::from_secs(10), "no ticks");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Three ticks of 20 ms cannot come sooner than 60 ms.
        assert!(started.elapsed() >= Duration::from_millis(60));
        let stopping = Instant::now();
        drop(timer);
        assert!(
            stopping.elapsed() < Duration::from_millis(500),
            "the drop does not wait for the next tick"
        );
        let after = ticks.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(ticks.load(Ordering::Relaxed), after, "ticks after the drop");
    }

    fn inputs(api: &ApiMetrics) -> Inputs<'_> {
        Inputs {
            api,
            process_startup_time_us: Some(1234),
            missed_log_count: 0,
            sample: None,
            devices: None,
            drive_ids: vec![],
            iface_ids: vec![],
            state: "Running",
            uptime_us: 1,
            utc_timestamp_ms: 2,
        }
    }

    #[test]
    fn counters_are_written_as_changes_and_values_as_they_are() {
        let api = ApiMetrics::default();
        let mut lines = LineBuilder::default();
        api.request(("put_api_requests", "drive"), false);
        api.request(("put_api_requests", "drive"), true);
        api.request(("get_api_requests", "instance_info"), false);
        api.latency("pause_vm", Duration::from_micros(77));
        let first = lines.line(inputs(&api));
        assert_eq!(first["put_api_requests"]["drive_count"], 2);
        assert_eq!(first["put_api_requests"]["drive_fails"], 1);
        assert_eq!(first["get_api_requests"]["instance_info_count"], 1);
        assert!(first["get_api_requests"]["instance_info_fails"].is_null());
        assert_eq!(first["latencies_us"]["pause_vm"], 77);
        assert_eq!(first["api_server"]["process_startup_time_us"], 1234);
        api.request(("put_api_requests", "drive"), false);
        let second = lines.line(inputs(&api));
        assert_eq!(second["put_api_requests"]["drive_count"], 1);
        assert_eq!(second["put_api_requests"]["drive_fails"], 0);
        assert_eq!(second["get_api_requests"]["instance_info_count"], 0);
        assert_eq!(second["latencies_us"]["pause_vm"], 77, "a value stays");
        assert_eq!(second["api_server"]["process_startup_time_us"], 1234);
    }
}
