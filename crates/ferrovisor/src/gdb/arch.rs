//! The register set gdb sees: x86-64's core and SSE registers (gdb's own
//! `64bit-core` and `64bit-sse` features, as `gdbstub_arch` serialises
//! them), then fs_base and gs_base (`org.gnu.gdb.i386.segments`) and the
//! system registers k_gs_base, cr0, cr2, cr3, cr4, cr8 and efer, in the
//! order of `target.xml`.

use gdbstub::arch::{Arch, Registers};
use gdbstub_arch::x86::reg::id::X86_64CoreRegId;
use gdbstub_arch::x86::reg::X86_64CoreRegs;

/// Bytes of the core and SSE registers in a `g` packet.
const CORE_LEN: usize = 0x218;

/// The registers after the core and SSE ones, in `target.xml` order.
pub const SYS_REGS: [&str; 9] = [
    "fs_base",
    "gs_base",
    "k_gs_base",
    "cr0",
    "cr2",
    "cr3",
    "cr4",
    "cr8",
    "efer",
];

/// Every register gdb reads with `g` and writes with `G`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Regs {
    pub core: X86_64CoreRegs,
    /// `SYS_REGS`, by index.
    pub sys: [u64; SYS_REGS.len()],
}

impl Registers for Regs {
    type ProgramCounter = u64;

    fn pc(&self) -> u64 {
        self.core.rip
    }

    fn gdb_serialize(&self, mut write_byte: impl FnMut(Option<u8>)) {
        self.core.gdb_serialize(&mut write_byte);
        for v in self.sys {
            for b in v.to_le_bytes() {
                write_byte(Some(b));
            }
        }
    }

    fn gdb_deserialize(&mut self, bytes: &[u8]) -> Result<(), ()> {
        if bytes.len() < CORE_LEN + 8 * SYS_REGS.len() {
            return Err(());
        }
        self.core.gdb_deserialize(&bytes[..CORE_LEN])?;
        for (v, chunk) in self.sys.iter_mut().zip(bytes[CORE_LEN..].chunks_exact(8)) {
            *v = u64::from_le_bytes(chunk.try_into().map_err(|_| ())?);
        }
        Ok(())
    }
}

/// x86-64 with the system registers (see the module documentation).
pub enum X86_64System {}

impl Arch for X86_64System {
    type Usize = u64;
    type Registers = Regs;
    type BreakpointKind = usize;
    type RegId = X86_64CoreRegId;

    fn target_description_xml() -> Option<&'static str> {
        Some(include_str!("target.xml"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_round_trip_and_match_the_description() {
        let mut regs = Regs::default();
        regs.core.rip = 0x1234;
        regs.core.regs[0] = 7;
        regs.sys[5] = 0xabc000;
        let mut bytes = Vec::new();
        regs.gdb_serialize(|b| bytes.push(b.unwrap_or(0)));
        assert_eq!(bytes.len(), CORE_LEN + 72);
        let mut back = Regs::default();
        back.gdb_deserialize(&bytes).unwrap();
        assert_eq!(back, regs);
        assert!(back.gdb_deserialize(&bytes[..100]).is_err());
        // Every register of the description has its bytes: 16 GPRs, rip,
        // 8-byte fs_base... (sizes in bits).
        let xml = X86_64System::target_description_xml().unwrap();
        let bits: usize = xml
            .split("bitsize=\"")
            .skip(1)
            .map(|s| s.split('"').next().unwrap().parse::<usize>().unwrap())
            .sum();
        assert_eq!(bits / 8, bytes.len());
        for name in SYS_REGS {
            assert!(xml.contains(&format!("name=\"{name}\"")), "{name}");
        }
    }
}
