//! Choosing and opening an accelerator.

use std::fmt;
use std::str::FromStr;

use hv::Hypervisor;

/// The accelerator a machine runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accel {
    /// kvm when it is usable, else emu.
    #[default]
    Auto,
    /// The host's /dev/kvm.
    Kvm,
    /// Ferrovisor's software x86-64 CPU.
    Emu,
}

impl FromStr for Accel {
    type Err = AccelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Accel::Auto),
            "kvm" => Ok(Accel::Kvm),
            "emu" | "tcg" => Ok(Accel::Emu),
            other => Err(AccelError::Unknown(other.to_string())),
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Auto => "auto",
            Accel::Kvm => "kvm",
            Accel::Emu => "emu",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccelError {
    #[error("unknown accelerator '{0}' (expected auto, kvm or emu)")]
    Unknown(String),
    #[error(transparent)]
    Unavailable(#[from] hv::HvError),
}

/// The environment variable that names another KVM device than /dev/kvm.
pub const KVM_DEVICE_ENV: &str = "FERROVISOR_KVM_DEVICE";

fn open_kvm() -> Result<hv_kvm::KvmHypervisor, hv::HvError> {
    match std::env::var_os(KVM_DEVICE_ENV) {
        Some(path) => {
            let path = std::ffi::CString::new(path.into_encoded_bytes()).map_err(|_| {
                hv::HvError::InvalidArgument(format!("{KVM_DEVICE_ENV} contains a NUL byte"))
            })?;
            hv_kvm::KvmHypervisor::with_device(&path)
        }
        None => hv_kvm::KvmHypervisor::new(),
    }
}

/// Opens the accelerator `accel` names. `Auto` takes kvm when it is
/// usable and runs guests at hardware-assisted speed (see
/// [`crate::probe`]), else emu.
pub fn open_accelerator(accel: Accel) -> Result<Box<dyn Hypervisor>, AccelError> {
    match accel {
        Accel::Kvm => Ok(Box::new(open_kvm()?)),
        Accel::Emu => Ok(Box::new(hv_emu::EmuHypervisor::new())),
        Accel::Auto => match open_kvm() {
            Ok(kvm) => match crate::probe::measure_ips(&kvm) {
                Ok(ips) if ips >= crate::probe::FAST_KVM_IPS => Ok(Box::new(kvm)),
                Ok(ips) => {
                    tracing::info!(
                        mips = ips / 1e6,
                        "kvm is usable but slow (nested or software-backed); using emu"
                    );
                    Ok(Box::new(hv_emu::EmuHypervisor::new()))
                }
                Err(reason) => {
                    tracing::info!(%reason, "the kvm probe failed; using emu");
                    Ok(Box::new(hv_emu::EmuHypervisor::new()))
                }
            },
            Err(e) => {
                tracing::info!(reason = %e, "kvm is not usable; using emu");
                Ok(Box::new(hv_emu::EmuHypervisor::new()))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names() {
        assert_eq!("kvm".parse::<Accel>().unwrap(), Accel::Kvm);
        assert_eq!("emu".parse::<Accel>().unwrap(), Accel::Emu);
        assert_eq!("auto".parse::<Accel>().unwrap(), Accel::Auto);
        let err = "xen".parse::<Accel>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown accelerator 'xen' (expected auto, kvm or emu)"
        );
    }
}
