//! The Linux test guest's builder, shipped inside the binary.
//!
//! `ferrovisor demo` must work from an installed binary (`cargo install`),
//! far from the source tree, so the binary carries scripts/build-test-guest
//! and every file of guest/ that the script reads (guest/init,
//! guest/modules, guest/tools/*.c). [`install`] writes them, laid out as in
//! the repository, to a private directory of the cache,
//!
//! ```text
//! ${FERROVISOR_CACHE:-$HOME/.cache/ferrovisor}/builder/<digest>/
//!     scripts/build-test-guest
//!     guest/init  guest/modules  guest/tools/*.c
//! ```
//!
//! where `<digest>` names the bundle's content. The script computes its
//! recipe digest from its own bytes and those files' bytes, not from their
//! location, so the bundled copy and the repository's script build the same
//! guest into the same cache (`.../guest/`) and reuse each other's builds.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The script and the files it reads, by path relative to the repository.
/// A test checks that this is every file the script reads.
pub const FILES: &[(&str, &[u8])] = &[
    (
        "scripts/build-test-guest",
        include_bytes!("../../../scripts/build-test-guest"),
    ),
    ("guest/init", include_bytes!("../../../guest/init")),
    ("guest/modules", include_bytes!("../../../guest/modules")),
    (
        "guest/tools/vsock.c",
        include_bytes!("../../../guest/tools/vsock.c"),
    ),
];

/// The script, relative to the bundle's directory.
const SCRIPT: &str = "scripts/build-test-guest";

/// `${FERROVISOR_CACHE:-$HOME/.cache/ferrovisor}`, as the script computes it.
pub fn cache_dir() -> Result<PathBuf, String> {
    if let Some(base) = std::env::var_os("FERROVISOR_CACHE").filter(|b| !b.is_empty()) {
        return Ok(PathBuf::from(base));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or("neither FERROVISOR_CACHE nor HOME is set")?;
    Ok(Path::new(&home).join(".cache/ferrovisor"))
}

/// A digest of the bundle (names and contents): FNV-1a, 128 bits. It only
/// names the private directory, so it needs to be stable, not secure.
pub fn digest() -> String {
    digest_of(FILES)
}

fn digest_of(files: &[(&str, &[u8])]) -> String {
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut h: u128 = 0x6c62272e07bb014262b821756295c58d;
    for (name, data) in files {
        for part in [name.as_bytes(), b"\0", data, b"\0"] {
            for &b in part {
                h ^= u128::from(b);
                h = h.wrapping_mul(PRIME);
            }
        }
    }
    format!("{h:032x}")
}

/// Writes the bundle under `cache/builder/<digest>/` (unless a complete
/// copy is there) and returns the script's path.
pub fn install(cache: &Path) -> Result<PathBuf, String> {
    let dir = cache.join("builder").join(digest());
    let script = dir.join(SCRIPT);
    if complete(&dir) {
        return Ok(script);
    }
    // Written beside, then renamed: a concurrent demo sees either nothing
    // or the whole bundle.
    let parent = cache.join("builder");
    std::fs::create_dir_all(&parent)
        .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    let staging = parent.join(format!(".staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let result = write_all(&staging).and_then(|()| match std::fs::rename(&staging, &dir) {
        Ok(()) => Ok(()),
        // Another process installed the same bundle first.
        Err(_) if complete(&dir) => Ok(()),
        Err(e) => Err(format!("cannot rename to {}: {e}", dir.display())),
    });
    let _ = std::fs::remove_dir_all(&staging);
    result.map(|()| script)
}

/// Whether `dir` holds every file of the bundle, byte for byte.
fn complete(dir: &Path) -> bool {
    FILES
        .iter()
        .all(|(name, data)| std::fs::read(dir.join(name)).is_ok_and(|d| d == *data))
}

fn write_all(dir: &Path) -> Result<(), String> {
    for (name, data) in FILES {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        let mode = if *name == SCRIPT { 0o755 } else { 0o644 };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        file.write_all(data)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    /// Every file the script reads is bundled: itself, guest/init,
    /// guest/modules and each guest/tools/*.c (its `recipe_digest`), and
    /// nothing else.
    #[test]
    fn the_bundle_is_every_file_the_script_reads() {
        let mut want = vec![
            "scripts/build-test-guest".to_string(),
            "guest/init".to_string(),
            "guest/modules".to_string(),
        ];
        let mut tools: Vec<String> = std::fs::read_dir(repo().join("guest/tools"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".c"))
            .map(|n| format!("guest/tools/{n}"))
            .collect();
        tools.sort();
        want.extend(tools);
        let have: Vec<String> = FILES.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(have, want);
        // The script's inputs are exactly those (a new input must be
        // bundled too).
        let script = std::fs::read_to_string(repo().join("scripts/build-test-guest")).unwrap();
        let inputs: Vec<&str> = script
            .lines()
            .filter(|l| l.contains("= GUEST_SRC /"))
            .collect();
        assert_eq!(inputs.len(), 3, "{inputs:?}");
    }

    #[test]
    fn install_writes_the_repository_layout_once() {
        let cache = std::env::temp_dir().join(format!("ferrovisor-bundle-{}", std::process::id()));
        let script = install(&cache).unwrap();
        assert!(script.ends_with(SCRIPT));
        let dir = script.parent().unwrap().parent().unwrap();
        for (name, _) in FILES {
            let theirs = std::fs::read(repo().join(name)).unwrap();
            assert_eq!(std::fs::read(dir.join(name)).unwrap(), theirs, "{name}");
        }
        let meta = std::fs::metadata(&script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o755);
        // A second install keeps the complete copy.
        assert_eq!(install(&cache).unwrap(), script);
        std::fs::remove_dir_all(&cache).unwrap();
    }

    #[test]
    fn the_digest_follows_the_contents() {
        let a = digest_of(&[("guest/init", b"echo a")]);
        assert_eq!(a.len(), 32);
        assert_ne!(a, digest_of(&[("guest/init", b"echo b")]));
        assert_ne!(a, digest_of(&[("guest/initx", b"echo a")]));
        assert_ne!(digest(), a);
    }
}
