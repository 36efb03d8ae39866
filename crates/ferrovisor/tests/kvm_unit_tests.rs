//! kvm-unit-tests (x86_64) on the emu accelerator, against the
//! expectations in `tests/kvm-unit-tests/emu.expected`.
//!
//! `scripts/kvm-unit-tests` builds the suite from
//! `../shared/testsuites/kvm-unit-tests-<commit>.tar.gz` (cached) and runs
//! every entry of its `x86/unittests.cfg` under this ferrovisor binary with
//! `-j2`. The test fails when an entry the expectations file lists as PASS
//! does not pass (after one retry of those entries alone, for timing-
//! sensitive tests on a loaded host), or when the file and the suite do not
//! list the same entries; entries that pass but are listed otherwise are
//! printed, so that the file gets updated.
//!
//! Without the suite's source the test reports SKIPPED, or fails under
//! `FERROVISOR_REQUIRE_KUT=1` (which `scripts/test` sets where
//! `../shared/testsuites` exists).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The script's exit status when the suite cannot be found or built.
const SUITE_UNAVAILABLE: i32 = 3;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `name -> status` from the expectations file (`name STATUS` lines, `#`
/// comments).
fn expectations(path: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(name), Some(status)) = (words.next(), words.next()) else {
            panic!("{}:{}: expected 'name STATUS'", path.display(), n + 1);
        };
        assert!(
            matches!(status, "PASS" | "FAIL" | "SKIP"),
            "{}:{}: status {status:?} is not PASS, FAIL or SKIP",
            path.display(),
            n + 1
        );
        assert!(
            out.insert(name.to_string(), status.to_string()).is_none(),
            "{}:{}: {name} listed twice",
            path.display(),
            n + 1
        );
    }
    out
}

/// One result line of the script: name, status, detail.
struct Outcome {
    status: String,
    detail: String,
}

/// Runs the script on `tests` (all when empty); `None` when the suite is
/// unavailable (reported as SKIPPED or a failure).
fn run_suite(logs: &Path, tests: &[&str]) -> Option<BTreeMap<String, Outcome>> {
    let results = logs.join("results.tsv");
    let _ = std::fs::remove_file(&results);
    let out = Command::new("python3")
        .arg(repo().join("scripts/kvm-unit-tests"))
        .args(["--accel", "emu", "-j2"])
        .arg("--ferrovisor")
        .arg(env!("CARGO_BIN_EXE_ferrovisor"))
        .arg("--logs")
        .arg(logs)
        .arg("--results")
        .arg(&results)
        .args(tests)
        .output()
        .expect("run python3 scripts/kvm-unit-tests");
    let stderr = String::from_utf8_lossy(&out.stderr);
    print!("{}", String::from_utf8_lossy(&out.stdout));
    if out.status.code() == Some(SUITE_UNAVAILABLE) {
        conformance::skip_or_fail("kut", stderr.trim());
        return None;
    }
    let text = std::fs::read_to_string(&results).unwrap_or_else(|e| {
        panic!(
            "scripts/kvm-unit-tests wrote no results ({e}), status {:?}: {stderr}",
            out.status
        )
    });
    Some(
        text.lines()
            .filter_map(|l| {
                let mut f = l.split('\t');
                let name = f.next()?.to_string();
                let status = f.next()?.to_string();
                let detail = f.next().unwrap_or("").to_string();
                Some((name, Outcome { status, detail }))
            })
            .collect(),
    )
}

#[test]
fn kvm_unit_tests_on_emu() {
    let expected_file = repo().join("tests/kvm-unit-tests/emu.expected");
    let expected = expectations(&expected_file);
    let logs = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kvm-unit-tests-emu");
    std::fs::create_dir_all(&logs).expect("log directory");
    let Some(mut results) = run_suite(&logs, &[]) else {
        return;
    };

    let unlisted: Vec<&String> = results
        .keys()
        .filter(|n| !expected.contains_key(*n))
        .collect();
    let gone: Vec<&String> = expected
        .keys()
        .filter(|n| !results.contains_key(*n))
        .collect();
    assert!(
        unlisted.is_empty() && gone.is_empty(),
        "{} and the suite disagree: not in the file {unlisted:?}, not in the suite {gone:?}",
        expected_file.display()
    );

    let regressed = |results: &BTreeMap<String, Outcome>| -> Vec<String> {
        expected
            .iter()
            .filter(|(n, s)| *s == "PASS" && results[*n].status != "PASS")
            .map(|(n, _)| n.clone())
            .collect()
    };
    let first = regressed(&results);
    if !first.is_empty() {
        println!("retrying what did not pass: {first:?}");
        let names: Vec<&str> = first.iter().map(String::as_str).collect();
        if let Some(again) = run_suite(&logs, &names) {
            results.extend(again);
        }
    }
    let newly: Vec<String> = results
        .iter()
        .filter(|(n, o)| o.status == "PASS" && expected[*n] != "PASS")
        .map(|(n, _)| n.clone())
        .collect();
    if !newly.is_empty() {
        println!(
            "NEWLY PASSING (update {}): {}",
            expected_file.display(),
            newly.join(" ")
        );
    }
    let still: Vec<String> = regressed(&results)
        .into_iter()
        .map(|n| format!("{n}: {} ({})", results[&n].status, results[&n].detail))
        .collect();
    assert!(
        still.is_empty(),
        "kvm-unit-tests expected to PASS on emu did not (logs in {}):\n{}",
        logs.display(),
        still.join("\n")
    );
}
