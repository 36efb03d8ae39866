//! KVM's binary statistics of a vCPU (KVM_GET_STATS_FD, Linux 5.14+).
//!
//! The stats fd is a read-only file: a `kvm_stats_header` at offset 0, an id
//! string, a block of descriptors (`struct kvm_stats_desc` followed by a
//! `name_size`-byte NUL-padded name each), and a data block of u64 values,
//! each descriptor's at `data_offset + desc.offset`. The layout is read once
//! when the vCPU is created; each [`BinaryStats::read`] is one `pread` of the
//! data block.
//!
//! KVM handles many exits in the kernel (HLT with the in-kernel irqchip, PIT
//! and PIC port I/O, page faults...), so these counters see what userspace
//! cannot.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;

use hv::ExitReason;

// `_IO(KVMIO, 0xce)`: not wrapped by kvm-ioctls 0.25.
vmm_sys_util::ioctl_io_nr!(KVM_GET_STATS_FD, kvm_bindings::KVMIO, 0xce);

/// Size of `struct kvm_stats_header`.
const HEADER_SIZE: usize = 24;
/// Size of `struct kvm_stats_desc` without its name.
const DESC_SIZE: usize = 16;
/// Sanity bounds on what the kernel reports.
const MAX_NAME_SIZE: usize = 4096;
const MAX_DESCS: usize = 4096;

/// Which KVM statistic feeds which exit reason. The page-fault count is
/// `pf_taken` where the kernel has it, else `pf_fixed + pf_emulate`
/// (see [`map_reasons`]).
const REASON_STATS: &[(ExitReason, &str)] = &[
    (ExitReason::Io, "io_exits"),
    (ExitReason::Mmio, "mmio_exits"),
    (ExitReason::Hlt, "halt_exits"),
    (ExitReason::ExternalInterrupt, "irq_exits"),
    (ExitReason::InterruptWindow, "irq_window_exits"),
    (ExitReason::Signal, "signal_exits"),
    (ExitReason::IrqInjection, "irq_injections"),
    (ExitReason::InsnEmulation, "insn_emulation"),
    (ExitReason::InsnEmulationFail, "insn_emulation_fail"),
    (ExitReason::Hypercall, "hypercalls"),
    // Where the kernel counts PLE exits (not every x86 kernel does).
    (ExitReason::Pause, "pause_exits"),
    (ExitReason::Total, "exits"),
];

#[derive(Debug, thiserror::Error)]
pub(crate) enum StatsError {
    #[error("KVM_GET_STATS_FD failed")]
    Open(#[source] std::io::Error),
    #[error("reading the stats fd failed")]
    Read(#[source] std::io::Error),
    #[error("malformed stats layout: {0}")]
    Malformed(String),
}

/// One statistic's descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StatDesc {
    pub name: String,
    pub flags: u32,
    /// Number of u64 values.
    pub size: u16,
    /// Byte offset of the values in the data block.
    pub offset: u32,
}

/// The parsed `kvm_stats_header`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StatsHeader {
    pub name_size: u32,
    pub num_desc: u32,
    pub desc_offset: u32,
    pub data_offset: u32,
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_ne_bytes(b)
}

fn u16_at(buf: &[u8], at: usize) -> u16 {
    let mut b = [0u8; 2];
    b.copy_from_slice(&buf[at..at + 2]);
    u16::from_ne_bytes(b)
}

pub(crate) fn parse_header(buf: &[u8; HEADER_SIZE]) -> Result<StatsHeader, StatsError> {
    let header = StatsHeader {
        name_size: u32_at(buf, 4),
        num_desc: u32_at(buf, 8),
        desc_offset: u32_at(buf, 16),
        data_offset: u32_at(buf, 20),
    };
    if header.name_size as usize > MAX_NAME_SIZE || header.num_desc as usize > MAX_DESCS {
        return Err(StatsError::Malformed(format!(
            "name_size {} / num_desc {} out of bounds",
            header.name_size, header.num_desc
        )));
    }
    Ok(header)
}

/// Parses the descriptor block (`num_desc` entries of
/// `DESC_SIZE + name_size` bytes).
pub(crate) fn parse_descs(block: &[u8], header: &StatsHeader) -> Result<Vec<StatDesc>, StatsError> {
    let stride = DESC_SIZE + header.name_size as usize;
    let count = header.num_desc as usize;
    if block.len() < stride * count {
        return Err(StatsError::Malformed(format!(
            "descriptor block of {} bytes, expected {}",
            block.len(),
            stride * count
        )));
    }
    Ok(block
        .chunks_exact(stride)
        .take(count)
        .map(|d| {
            let raw_name = &d[DESC_SIZE..];
            let len = raw_name
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(raw_name.len());
            StatDesc {
                name: String::from_utf8_lossy(&raw_name[..len]).into_owned(),
                flags: u32_at(d, 0),
                size: u16_at(d, 6),
                offset: u32_at(d, 8),
            }
        })
        .collect())
}

/// For each exit reason KVM counts, the indices (into `descs`) of the
/// statistics whose first values add up to it.
pub(crate) fn map_reasons(descs: &[StatDesc]) -> Vec<(ExitReason, Vec<usize>)> {
    let find = |name: &str| descs.iter().position(|d| d.name == name && d.size >= 1);
    let mut map: Vec<(ExitReason, Vec<usize>)> = REASON_STATS
        .iter()
        .filter_map(|&(reason, name)| find(name).map(|i| (reason, vec![i])))
        .collect();
    if let Some(i) = find("pf_taken") {
        map.push((ExitReason::PageFault, vec![i]));
    } else {
        let parts: Vec<usize> = ["pf_fixed", "pf_emulate"]
            .iter()
            .filter_map(|n| find(n))
            .collect();
        if !parts.is_empty() {
            map.push((ExitReason::PageFault, parts));
        }
    }
    map
}

/// A vCPU's stats fd and where the counters of interest are in it.
#[derive(Debug)]
pub(crate) struct BinaryStats {
    file: File,
    data_offset: u64,
    data_len: usize,
    descs: Vec<StatDesc>,
    reasons: Vec<(ExitReason, Vec<usize>)>,
}

impl BinaryStats {
    /// Opens the stats fd of a vCPU and reads its layout.
    pub fn open(vcpu: &impl AsRawFd) -> Result<BinaryStats, StatsError> {
        // SAFETY: KVM_GET_STATS_FD takes no argument and returns a new fd or
        // -1; `vcpu` is a vCPU fd, valid for the duration of the call.
        let fd = unsafe { vmm_sys_util::ioctl::ioctl(vcpu, KVM_GET_STATS_FD()) };
        if fd < 0 {
            return Err(StatsError::Open(std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
        let file = unsafe { File::from_raw_fd(fd) };
        let mut raw_header = [0u8; HEADER_SIZE];
        file.read_exact_at(&mut raw_header, 0)
            .map_err(StatsError::Read)?;
        let header = parse_header(&raw_header)?;
        let mut block =
            vec![0u8; (DESC_SIZE + header.name_size as usize) * header.num_desc as usize];
        file.read_exact_at(&mut block, u64::from(header.desc_offset))
            .map_err(StatsError::Read)?;
        let descs = parse_descs(&block, &header)?;
        let reasons = map_reasons(&descs);
        let data_len = reasons
            .iter()
            .flat_map(|(_, idx)| idx.iter())
            .map(|&i| descs[i].offset as usize + 8)
            .max()
            .unwrap_or(0);
        Ok(BinaryStats {
            file,
            data_offset: u64::from(header.data_offset),
            data_len,
            descs,
            reasons,
        })
    }

    /// Names of every statistic the kernel offers for this vCPU.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.descs.iter().map(|d| d.name.as_str())
    }

    /// Current values of the exit reasons KVM counts.
    pub fn read(&self) -> Result<Vec<(ExitReason, u64)>, StatsError> {
        let mut data = vec![0u8; self.data_len];
        self.file
            .read_exact_at(&mut data, self.data_offset)
            .map_err(StatsError::Read)?;
        Ok(values_of(&self.reasons, &self.descs, &data))
    }
}

/// Picks the mapped values out of a data block.
pub(crate) fn values_of(
    reasons: &[(ExitReason, Vec<usize>)],
    descs: &[StatDesc],
    data: &[u8],
) -> Vec<(ExitReason, u64)> {
    let value = |i: usize| {
        let at = descs[i].offset as usize;
        data.get(at..at + 8).map(|b| {
            let mut v = [0u8; 8];
            v.copy_from_slice(b);
            u64::from_ne_bytes(v)
        })
    };
    reasons
        .iter()
        .filter_map(|(reason, idx)| {
            let mut sum = 0u64;
            for &i in idx {
                sum = sum.wrapping_add(value(i)?);
            }
            Some((*reason, sum))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stats file image as the kernel lays it out.
    fn image(names: &[&str], name_size: usize) -> (Vec<u8>, Vec<u8>, StatsHeader) {
        let header = StatsHeader {
            name_size: name_size as u32,
            num_desc: names.len() as u32,
            desc_offset: 64,
            data_offset: 64 + ((DESC_SIZE + name_size) * names.len()) as u32,
        };
        let mut descs = Vec::new();
        let mut data = Vec::new();
        for (i, name) in names.iter().enumerate() {
            descs.extend_from_slice(&0u32.to_ne_bytes()); // flags
            descs.extend_from_slice(&0i16.to_ne_bytes()); // exponent
            descs.extend_from_slice(&1u16.to_ne_bytes()); // size
            descs.extend_from_slice(&((i * 8) as u32).to_ne_bytes()); // offset
            descs.extend_from_slice(&0u32.to_ne_bytes()); // bucket_size
            let mut n = name.as_bytes().to_vec();
            n.resize(name_size, 0);
            descs.extend_from_slice(&n);
            data.extend_from_slice(&(100 + i as u64).to_ne_bytes());
        }
        (descs, data, header)
    }

    #[test]
    fn header_fields_and_bounds() {
        let mut raw = [0u8; HEADER_SIZE];
        raw[4..8].copy_from_slice(&48u32.to_ne_bytes());
        raw[8..12].copy_from_slice(&3u32.to_ne_bytes());
        raw[16..20].copy_from_slice(&100u32.to_ne_bytes());
        raw[20..24].copy_from_slice(&300u32.to_ne_bytes());
        let h = parse_header(&raw).expect("header");
        assert_eq!(
            h,
            StatsHeader {
                name_size: 48,
                num_desc: 3,
                desc_offset: 100,
                data_offset: 300
            }
        );
        raw[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(parse_header(&raw).is_err());
    }

    #[test]
    fn descriptors_map_to_reasons_with_pf_taken_preferred() {
        let names = [
            "halt_exits",
            "io_exits",
            "pf_fixed",
            "pf_taken",
            "exits",
            "other",
        ];
        let (block, data, header) = image(&names, 48);
        let descs = parse_descs(&block, &header).expect("descs");
        assert_eq!(descs.len(), names.len());
        assert_eq!(descs[1].name, "io_exits");
        assert_eq!(descs[1].offset, 8);
        let reasons = map_reasons(&descs);
        let values = values_of(&reasons, &descs, &data);
        let get = |r| values.iter().find(|(x, _)| *x == r).map(|(_, v)| *v);
        assert_eq!(get(ExitReason::Hlt), Some(100));
        assert_eq!(get(ExitReason::Io), Some(101));
        assert_eq!(get(ExitReason::PageFault), Some(103));
        assert_eq!(get(ExitReason::Total), Some(104));
        assert_eq!(get(ExitReason::Mmio), None);
    }

    #[test]
    fn page_faults_fall_back_to_fixed_plus_emulate() {
        let names = ["pf_fixed", "pf_emulate"];
        let (block, data, header) = image(&names, 32);
        let descs = parse_descs(&block, &header).expect("descs");
        let values = values_of(&map_reasons(&descs), &descs, &data);
        assert_eq!(values, vec![(ExitReason::PageFault, 100 + 101)]);
    }

    #[test]
    fn short_blocks_are_rejected_not_panicking() {
        let (block, _, header) = image(&["io_exits", "exits"], 32);
        assert!(parse_descs(&block[..block.len() - 1], &header).is_err());
        // A data block too short for an offset yields no value.
        let descs = parse_descs(&block, &header).expect("descs");
        assert!(values_of(&map_reasons(&descs), &descs, &[0u8; 4]).is_empty());
    }
}
