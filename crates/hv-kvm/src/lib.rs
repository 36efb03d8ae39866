//! hv-kvm (under construction).
