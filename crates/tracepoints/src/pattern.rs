//! Event selection by name: a comma-separated list of globs (`*` any run
//! of characters, `?` one), each optionally prefixed with the `kvm:`
//! system name as in `perf -e kvm:kvm_exit`. `all` is `*`; an empty
//! pattern (or `none`) selects nothing.

use crate::Event;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("no trace event matches {glob:?} (known events: {known})")]
    NoMatch { glob: String, known: String },
}

/// The event mask `pattern` selects.
pub fn parse(pattern: &str) -> Result<u64, PatternError> {
    let mut mask = 0;
    for glob in pattern.split(',').map(str::trim) {
        if glob.is_empty() || glob == "none" {
            continue;
        }
        let glob = if glob == "all" { "*" } else { glob };
        let bare = glob.strip_prefix("kvm:").unwrap_or(glob);
        let matched = Event::ALL
            .iter()
            .filter(|e| glob_match(bare.as_bytes(), e.name().as_bytes()))
            .fold(0, |m, e| m | e.bit());
        if matched == 0 {
            let known: Vec<_> = Event::ALL.iter().map(|e| e.name()).collect();
            return Err(PatternError::NoMatch {
                glob: glob.to_string(),
                known: known.join(", "),
            });
        }
        mask |= matched;
    }
    Ok(mask)
}

fn glob_match(glob: &[u8], name: &[u8]) -> bool {
    match glob.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| glob_match(rest, &name[i..])),
        Some((b'?', rest)) => !name.is_empty() && glob_match(rest, &name[1..]),
        Some((c, rest)) => name.first() == Some(c) && glob_match(rest, &name[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(pattern: &str) -> Vec<&'static str> {
        let mask = parse(pattern).unwrap();
        Event::ALL
            .iter()
            .filter(|e| mask & e.bit() != 0)
            .map(|e| e.name())
            .collect()
    }

    #[test]
    fn exact_names_and_lists() {
        assert_eq!(names("kvm_exit"), ["kvm_exit"]);
        assert_eq!(names("kvm_pio, kvm:kvm_exit"), ["kvm_exit", "kvm_pio"]);
    }

    #[test]
    fn globs() {
        assert_eq!(names("kvm_apic*"), ["kvm_apic_ipi", "kvm_apic_accept_irq"]);
        assert_eq!(names("kvm_*").len(), Event::ALL.len());
        assert_eq!(names("all").len(), Event::ALL.len());
        assert_eq!(names("kvm_?r"), ["kvm_cr"]);
        assert_eq!(
            names("*set_irq"),
            ["kvm_pic_set_irq", "kvm_ioapic_set_irq", "kvm_set_irq"]
        );
    }

    #[test]
    fn nothing() {
        assert_eq!(parse("").unwrap(), 0);
        assert_eq!(parse("none").unwrap(), 0);
    }

    #[test]
    fn unknown_names_are_errors() {
        let e = parse("kvm_exit,kvm_bogus").unwrap_err();
        assert!(e.to_string().contains("kvm_bogus"), "{e}");
        assert!(e.to_string().contains("kvm_pio"), "{e}");
        assert!(parse("kvm_exitx").is_err());
    }
}
