//! `cellns check` on invalid maps, end to end: exit code 1, nothing said to
//! be valid, and every error printed with the file and the line it is on,
//! in both formats.

use crate::support::map::{Cell, Map, ORIGIN, line_of};
use crate::support::run_cli;

/// A map with four errors, each on its own line: an address that is not
/// one, a failover to no cell, a tenant on no cell, a tenant id that is not
/// a DNS label.
fn invalid() -> Map {
    Map::new(ORIGIN, "bad-1")
        .cell("a", Cell::new(&format!("a.{ORIGIN}")).ipv4(["10.0.0.300"]))
        .cell(
            "b",
            Cell::new(&format!("b.{ORIGIN}"))
                .ipv4(["10.0.0.2"])
                .set("failover", "zz"),
        )
        .tenant("acme", "a")
        .tenant("beta", "nope")
        .tenant("bad name", "b")
}

/// Runs `cellns check` on `text` written as `file`; checks exit code 1 and
/// that stderr is the header and exactly `errors` (line, message part),
/// each as `FILE:LINE: ...`.
fn check_reports(file: &str, text: &str, errors: &[(usize, &str)]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(file);
    std::fs::write(&path, text).expect("write map");
    let p = path.display().to_string();
    let (code, out, err) = run_cli(&["check", &p]);
    assert_eq!(code, 1, "{file}: exit code; stdout {out}, stderr {err}");
    assert!(out.trim().is_empty(), "{file}: nothing on stdout: {out}");
    let lines: Vec<&str> = err.lines().collect();
    if errors.len() > 1 {
        assert_eq!(
            lines.first().copied(),
            Some(format!("{p}: {} error(s) in map:", errors.len()).as_str()),
            "{file}: the header:\n{err}"
        );
    }
    let reported: Vec<&str> = lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| l.starts_with(&format!("{p}:")) && !l.ends_with("in map:"))
        .collect();
    assert_eq!(
        reported.len(),
        errors.len(),
        "{file}: one line per error:\n{err}\n--- the map:\n{text}"
    );
    for ((line, what), got) in errors.iter().zip(&reported) {
        let at = format!("{p}:{line}: ");
        assert!(
            got.starts_with(&at) && got.contains(what),
            "{file}: want `{at}…{what}…`, got `{got}`\n--- the map:\n{text}"
        );
    }
}

/// Where a field is: the first line with the first text (its section),
/// then the first line from there with the second (its key).
type Place = (&'static str, &'static str);

/// The errors of [`invalid`]: where each is (the section it is in and its
/// key, as TOML and as JSON write them) and what it says.
const ERRORS: [(Place, Place, &str); 4] = [
    (
        ("[cells.a]", "ipv4"),
        ("\"a\": {", "\"ipv4\""),
        "cells.a.ipv4: `10.0.0.300` is not an IPv4 address",
    ),
    (
        ("[cells.b]", "failover"),
        ("\"b\": {", "\"failover\""),
        "cells.b.failover: unknown cell `zz`",
    ),
    (
        ("[tenants]", "beta"),
        ("\"tenants\"", "\"beta\""),
        "tenants.beta: unknown cell `nope`",
    ),
    (
        ("[tenants]", "bad name"),
        ("\"tenants\"", "\"bad name\""),
        "tenant id `bad name`",
    ),
];

#[test]
fn check_prints_every_error_of_a_toml_map_with_file_and_line() {
    let text = invalid().toml();
    let errors: Vec<(usize, &str)> = ERRORS
        .iter()
        .map(|((section, key), _, what)| (line_of(&text, section, key), *what))
        .collect();
    check_reports("map.toml", &text, &errors);
    // A file that is not TOML at all: the line of the syntax error.
    let broken = format!("{}\nthis is [not a map\n", Map::new(ORIGIN, "x").toml());
    let line = line_of(&broken, "this is", "this is");
    check_reports("map.toml", &broken, &[(line, "")]);
}

#[test]
fn check_prints_every_error_of_a_json_map_with_file_and_line() {
    let text = invalid().json();
    let errors: Vec<(usize, &str)> = ERRORS
        .iter()
        .map(|(_, (section, key), what)| (line_of(&text, section, key), *what))
        .collect();
    check_reports("map.json", &text, &errors);
}
