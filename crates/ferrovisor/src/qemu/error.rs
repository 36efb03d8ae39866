//! The one error of the QEMU front end (its own file so that the fuzz
//! targets, which compile options.rs and props.rs on their own, share it).

/// An option QEMU's syntax or Ferrovisor's mapping refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuError(String);

impl QemuError {
    pub fn new(message: String) -> QemuError {
        QemuError(message)
    }
}

impl std::fmt::Display for QemuError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for QemuError {}
