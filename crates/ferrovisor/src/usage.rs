//! A command-line error as one line: clap's message without its usage
//! block, with its suggestions ("a similar argument exists: '--kernel'").

use clap::error::{ContextKind, ContextValue};

/// The line `ferrovisor: ...` prints for `e`.
pub fn one_line(e: &clap::Error) -> String {
    // clap's message is several lines: what is wrong comes first, up to
    // the first blank line; usage and tips follow.
    let rendered = e.to_string();
    let what: Vec<&str> = rendered
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let what = what.join(" ");
    let mut line = what.strip_prefix("error: ").unwrap_or(&what).to_string();
    for (kind, label) in [
        (ContextKind::SuggestedArg, "a similar argument exists"),
        (
            ContextKind::SuggestedSubcommand,
            "a similar subcommand exists",
        ),
        (ContextKind::SuggestedValue, "a similar value exists"),
    ] {
        let names = match e.get(kind) {
            Some(ContextValue::String(s)) => vec![s.clone()],
            Some(ContextValue::Strings(v)) => v.clone(),
            _ => continue,
        };
        if names.is_empty() {
            continue;
        }
        let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
        line.push_str(&format!("; {label}: {}", quoted.join(", ")));
    }
    line.push_str(" (see 'ferrovisor help')");
    line
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    fn error(args: &[&str]) -> String {
        let mut argv = vec!["ferrovisor"];
        argv.extend_from_slice(args);
        match crate::Cli::try_parse_from(argv) {
            Ok(_) => panic!("{args:?} parsed"),
            Err(e) => super::one_line(&e),
        }
    }

    #[test]
    fn suggestions_stay_in_the_line() {
        let line = error(&["run", "--kernl", "x"]);
        assert!(
            line.contains(
                "unexpected argument '--kernl' found; a similar argument exists: '--kernel'"
            ),
            "{line}"
        );
        let line = error(&["dem"]);
        assert!(
            line.contains("a similar subcommand exists: 'demo'"),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }
}
