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
    out
}
