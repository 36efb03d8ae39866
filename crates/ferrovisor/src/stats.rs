//! The `--stats` table: VM exits by reason for each vCPU, kvm_stat style.

use std::fmt::Write;

use hv::ExitReason;
use vmm::RunReport;

pub fn table(report: &RunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "VM exits by reason (accelerator: {})", report.accel);
    let _ = write!(out, "{:<22}", "reason");
    for id in 0..report.vcpu_stats.len() {
        let _ = write!(out, " {:>12}", format!("vcpu{id}"));
    }
    out.push('\n');
    for reason in ExitReason::ALL {
        let _ = write!(out, "{:<22}", reason.name());
        for stats in &report.vcpu_stats {
            match stats.get(reason) {
                Some(n) => {
                    let _ = write!(out, " {n:>12}");
                }
                None => {
                    let _ = write!(out, " {:>12}", "-");
                }
            }
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "unhandled guest accesses: pio {}, mmio {}",
        report.unhandled_pio, report.unhandled_mmio
    );
    out.push_str(&accel_table(report.accel, &report.accel_counters));
    out
}

/// The accelerator's own counters of each vCPU (emu: soft TLB and code
/// cache), one row per counter the backend reports; nothing when it
/// reports none (kvm).
pub fn accel_table(accel: &str, counters: &[Vec<(&'static str, u64)>]) -> String {
    let mut out = String::new();
    let Some(first) = counters.iter().find(|c| !c.is_empty()) else {
        return out;
    };
    let _ = writeln!(out, "{accel} accelerator counters");
    let _ = write!(out, "{:<28}", "counter");
    for id in 0..counters.len() {
        let _ = write!(out, " {:>12}", format!("vcpu{id}"));
    }
    out.push('\n');
    for (name, _) in first {
        let _ = write!(out, "{name:<28}");
        for vcpu in counters {
            match vcpu.iter().find(|(n, _)| n == name) {
                Some((_, v)) => _ = write!(out, " {v:>12}"),
                None => _ = write!(out, " {:>12}", "-"),
            }
        }
        out.push('\n');
    }
    out
}

/// The accelerator's own counters of each vCPU as JSON:
/// `{"vcpu0": {"tlb_fills": 12, ...}}` (empty objects where it has none).
pub fn accel_json(sample: &vmm::StatsSample) -> serde_json::Value {
    let mut vcpus = serde_json::Map::new();
    for (id, counters) in sample.accel_counters.iter().enumerate() {
        let values: serde_json::Map<String, serde_json::Value> = counters
            .iter()
            .map(|(n, v)| (n.to_string(), (*v).into()))
            .collect();
        vcpus.insert(format!("vcpu{id}"), values.into());
    }
    vcpus.into()
}

/// Exits by reason for each vCPU as JSON: `{"vcpu0": {"io": 12, ...}}`;
/// a reason the accelerator cannot observe is `null`.
pub fn exits_json(sample: &vmm::StatsSample) -> serde_json::Value {
    let mut vcpus = serde_json::Map::new();
    for (id, stats) in sample.vcpus.iter().enumerate() {
        let reasons: serde_json::Map<String, serde_json::Value> = stats
            .iter()
            .map(|(r, n)| (r.name().to_string(), n.into()))
            .collect();
        vcpus.insert(format!("vcpu{id}"), reasons.into());
    }
    vcpus.into()
}

/// What `GET /ferrovisor/stats` answers.
pub fn json(sample: &vmm::StatsSample) -> serde_json::Value {
    serde_json::json!({
        "accel": sample.accel,
        "exits": exits_json(sample),
        "accel_counters": accel_json(sample),
        "unhandled_pio": sample.unhandled_pio,
        "unhandled_mmio": sample.unhandled_mmio,
    })
}
