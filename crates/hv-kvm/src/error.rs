//! Mapping kvm-ioctls errors onto [`hv::HvError`].

use hv::HvError;

/// The errno of a failed ioctl as an [`HvError::Os`] naming the operation.
pub(crate) fn os_error(op: &'static str, err: kvm_ioctls::Error) -> HvError {
    HvError::Os {
        op,
        source: std::io::Error::from_raw_os_error(err.errno()),
    }
}

/// `map_err` adapter: `.map_err(os(op))`.
pub(crate) fn os(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> HvError {
    move |err| os_error(op, err)
}

/// An [`HvError::Unavailable`] for the kvm accelerator.
pub(crate) fn unavailable(reason: impl Into<String>) -> HvError {
    HvError::Unavailable {
        accel: "kvm",
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_error_keeps_errno_and_op() {
        let err = os_error("KVM_RUN", kvm_ioctls::Error::new(libc::EFAULT));
        match err {
            HvError::Os { op, source } => {
                assert_eq!(op, "KVM_RUN");
                assert_eq!(source.raw_os_error(), Some(libc::EFAULT));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
