//! One test per validation rule: each breaks one rule of a valid map and
//! checks the error names the right field, line and problem.

use crate::map::{Format, MapError, Source, load_str};

const BASE: &str = r#"
[zone]
origin = "cells.example.com."
ttl = 30
nameservers = ["ns1.cells.example.com.", "ns.other.example.net."]
hostmaster = "hostmaster.example.com."

[zone.glue]
"ns1.cells.example.com." = ["192.0.2.53"]

[cells.a]
hostname = "a.cells.example.com."
ipv4 = ["192.0.2.10"]
status = "active"
failover = "b"

[cells.b]
hostname = "b.cells.example.com."
ipv6 = ["2001:db8::20"]
status = "active"

[tenants]
acme = "a"
globex = "b"

[placement]
unknown = "nxdomain"
"#;

/// Loads `text`; returns its issues as `line: field: message` strings.
fn issues(text: &str) -> Vec<String> {
    match load_str(Source {
        text,
        format: Format::Toml,
        name: "m.toml",
    }) {
        Ok(_) => Vec::new(),
        Err(MapError::Invalid { issues, .. }) => issues
            .iter()
            .map(|i| format!("{}: {}: {}", i.line.map_or(0, |l| l), i.field, i.message))
            .collect(),
        Err(e) => vec![format!("other error: {e}")],
    }
}

/// `BASE` with `from` replaced by `to` (which must occur).
fn edit(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "BASE lacks {from:?}");
    BASE.replacen(from, to, 1)
}

/// Asserts exactly one issue, containing every needle.
fn one_issue(text: &str, needles: &[&str]) {
    let got = issues(text);
    assert_eq!(got.len(), 1, "expected one issue, got {got:#?}");
    for n in needles {
        assert!(got[0].contains(n), "issue {:?} lacks {n:?}", got[0]);
    }
}

fn line_of(text: &str, needle: &str) -> String {
    let n = text
        .lines()
        .position(|l| l.contains(needle))
        .expect("needle")
        + 1;
    format!("{n}:")
}

#[test]
fn base_is_valid() {
    assert_eq!(issues(BASE), Vec::<String>::new());
}

#[test]
fn unknown_cell_reference_in_tenants() {
    let t = edit("globex = \"b\"", "globex = \"nope\"");
    one_issue(
        &t,
        &[
            &line_of(&t, "globex"),
            "tenants.globex",
            "unknown cell `nope`",
        ],
    );
}

#[test]
fn unknown_failover_cell() {
    let t = edit("failover = \"b\"", "failover = \"zz\"");
    one_issue(
        &t,
        &[
            &line_of(&t, "failover"),
            "cells.a.failover",
            "unknown cell `zz`",
        ],
    );
}

#[test]
fn failover_to_itself() {
    let t = edit("failover = \"b\"", "failover = \"a\"");
    one_issue(&t, &["cells.a.failover", "itself"]);
}

#[test]
fn failover_chain_loop_through_down_cells() {
    let t = edit(
        "status = \"active\"\nfailover = \"b\"",
        "status = \"down\"\nfailover = \"b\"",
    )
    .replacen(
        "status = \"active\"\n\n[tenants]",
        "status = \"down\"\nfailover = \"a\"\n\n[tenants]",
        1,
    );
    let got = issues(&t);
    assert!(
        !got.is_empty() && got.iter().all(|i| i.contains("loops")),
        "{got:#?}"
    );
    assert!(
        got.iter().any(|i| i.contains("cells.a.failover")),
        "{got:#?}"
    );
}

#[test]
fn failover_chain_ends_in_down_cell() {
    let t = edit(
        "status = \"active\"\n\n[tenants]",
        "status = \"down\"\n\n[tenants]",
    );
    // a (active) fails over to b, which is down with no failover; b itself
    // is down with nowhere to go.
    let got = issues(&t);
    assert!(
        got.iter()
            .any(|i| i.contains("cells.a.failover") && i.contains("down cell `b`")),
        "{got:#?}"
    );
    assert!(
        got.iter().any(|i| i.contains("cells.b.failover")),
        "{got:#?}"
    );
}

#[test]
fn down_cell_without_failover() {
    let t = edit(
        "ipv6 = [\"2001:db8::20\"]\nstatus = \"active\"",
        "ipv6 = [\"2001:db8::20\"]\nstatus = \"down\"",
    )
    .replacen("globex = \"b\"", "globex = \"a\"", 1);
    let got = issues(&t);
    assert!(got.iter().any(|i| i.contains("no failover")), "{got:#?}");
}

#[test]
fn duplicate_tenant_case_insensitive() {
    let t = edit("globex = \"b\"", "globex = \"b\"\nACME = \"b\"");
    one_issue(
        &t,
        &[&line_of(&t, "ACME"), "listed twice", "case-insensitive"],
    );
}

#[test]
fn exact_duplicate_tenant_is_a_parse_error_with_line() {
    let t = edit("globex = \"b\"", "globex = \"b\"\nacme = \"b\"");
    let got = issues(&t);
    assert_eq!(got.len(), 1);
    assert!(got[0].starts_with("other error: m.toml:"), "{got:?}");
}

#[test]
fn tenant_ids_must_be_one_label() {
    for (bad, why) in [
        ("\"a.b\"", "contains '.'"),
        ("\"under_score\"", "contains '_'"),
        ("\"-lead\"", "hyphen"),
        ("\"trail-\"", "hyphen"),
        ("\"\"", "empty"),
        (&format!("\"{}\"", "x".repeat(64)), "63"),
    ] {
        let t = edit("globex = \"b\"", &format!("globex = \"b\"\n{bad} = \"a\""));
        one_issue(&t, &["tenants.", why]);
    }
}

#[test]
fn invalid_addresses() {
    let t = edit(
        "ipv4 = [\"192.0.2.10\"]",
        "ipv4 = [\"192.0.2.300\", \"2001:db8::1\"]",
    );
    let got = issues(&t);
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(
        got.iter()
            .all(|i| i.contains("cells.a.ipv4") && i.contains("not an IPv4"))
    );
    let t = edit("ipv6 = [\"2001:db8::20\"]", "ipv6 = [\"192.0.2.1\"]");
    one_issue(&t, &["cells.b.ipv6", "not an IPv6"]);
    let t = edit("[\"192.0.2.53\"]", "[\"nope\"]");
    one_issue(&t, &["zone.glue", "not an IP address"]);
}

#[test]
fn duplicate_address() {
    let t = edit(
        "ipv4 = [\"192.0.2.10\"]",
        "ipv4 = [\"192.0.2.10\", \"192.0.2.10\"]",
    );
    one_issue(&t, &["cells.a.ipv4", "twice"]);
}

#[test]
fn invalid_hostnames() {
    let t = edit(
        "hostname = \"a.cells.example.com.\"",
        "hostname = \"a.cells.example.com\"",
    );
    one_issue(&t, &["cells.a.hostname", "ending with a dot"]);
    let t = edit(
        "hostname = \"a.cells.example.com.\"",
        "hostname = \"a..example.com.\"",
    );
    one_issue(&t, &["cells.a.hostname"]);
    let t = edit(
        "hostname = \"a.cells.example.com.\"",
        &format!("hostname = \"{}.example.com.\"", "x".repeat(64)),
    );
    one_issue(&t, &["cells.a.hostname"]);
    let t = edit(
        "hostmaster = \"hostmaster.example.com.\"",
        "hostmaster = \"bad name\"",
    );
    one_issue(&t, &["zone.hostmaster"]);
}

#[test]
fn cell_with_no_way_to_answer() {
    let t = edit("ipv4 = [\"192.0.2.10\"]\n", "");
    one_issue(
        &t,
        &[&line_of(&t, "[cells.a]"), "cells.a", "no way to answer"],
    );
    // The same cell with an out-of-zone hostname answers with a CNAME.
    let t = t.replacen(
        "hostname = \"a.cells.example.com.\"",
        "hostname = \"a.lb.example.net.\"",
        1,
    );
    assert_eq!(issues(&t), Vec::<String>::new());
}

#[test]
fn hash_placement_needs_an_active_cell() {
    let t = edit("unknown = \"nxdomain\"", "unknown = \"hash\"")
        .replace("status = \"active\"", "status = \"draining\"");
    one_issue(&t, &["placement.unknown", "active cell"]);
    let t = edit("unknown = \"nxdomain\"", "unknown = \"random\"");
    one_issue(&t, &["placement.unknown", "not one of"]);
}

#[test]
fn origin_needs_trailing_dot() {
    let t = edit(
        "origin = \"cells.example.com.\"",
        "origin = \"cells.example.com\"",
    );
    let got = issues(&t);
    assert!(
        got.iter()
            .any(|i| i.contains("zone.origin") && i.contains("ending with a dot")),
        "{got:#?}"
    );
}

#[test]
fn ttls_out_of_range() {
    let t = edit("ttl = 30", "ttl = 0");
    one_issue(&t, &["zone.ttl", "out of range"]);
    let t = edit("ttl = 30", "ttl = 30\nnegative_ttl = 999999");
    one_issue(&t, &["zone.negative_ttl", "out of range"]);
    let t = edit("ttl = 30", "ttl = 86401");
    one_issue(&t, &["zone.ttl"]);
}

#[test]
fn unknown_status() {
    let t = edit(
        "status = \"active\"\nfailover",
        "status = \"sleeping\"\nfailover",
    );
    one_issue(&t, &["cells.a.status", "sleeping"]);
}

#[test]
fn in_zone_nameserver_needs_glue() {
    let t = edit("\"ns1.cells.example.com.\" = [\"192.0.2.53\"]", "");
    one_issue(&t, &["zone.nameservers.0", "glue"]);
}

#[test]
fn tenant_colliding_with_cell_hostname() {
    let t = edit("globex = \"b\"", "globex = \"b\"\na = \"a\"");
    one_issue(&t, &["tenants.a", "collides", "cell `a`"]);
    let t = edit("globex = \"b\"", "globex = \"b\"\nns1 = \"a\"");
    one_issue(&t, &["tenants.ns1", "nameserver"]);
}

#[test]
fn duplicate_cell_hostname() {
    let t = edit(
        "hostname = \"b.cells.example.com.\"",
        "hostname = \"A.cells.example.com.\"",
    );
    one_issue(&t, &["cells.b.hostname", "same hostname"]);
}

#[test]
fn unknown_field_is_rejected_with_line() {
    let t = edit(
        "status = \"active\"\nfailover",
        "stauts = \"active\"\nfailover",
    );
    let got = issues(&t);
    assert_eq!(got.len(), 1);
    assert!(
        got[0].contains("stauts") && got[0].contains(&format!("m.toml:{}", line_of(&t, "stauts"))),
        "{got:?}"
    );
}

#[test]
fn all_errors_are_reported() {
    let t = edit("globex = \"b\"", "globex = \"nope\"\n\"bad.id\" = \"a\"")
        .replacen("ttl = 30", "ttl = 0", 1)
        .replacen("ipv4 = [\"192.0.2.10\"]", "ipv4 = [\"x\"]", 1);
    let got = issues(&t);
    assert_eq!(got.len(), 4, "{got:#?}");
    // Sorted by line.
    let lines: Vec<usize> = got
        .iter()
        .map(|g| g.split(':').next().unwrap().parse().unwrap())
        .collect();
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{lines:?}");
}

#[test]
fn json_maps_have_the_same_schema_and_lines() {
    let json = r#"{
  "zone": {"origin": "cells.example.com.", "nameservers": ["ns.example.net."],
           "hostmaster": "h.example.com."},
  "cells": {
    "a": {"hostname": "a.cells.example.com.", "ipv4": ["192.0.2.1"]}
  },
  "tenants": {
    "acme": "a",
    "bad": "zz"
  }
}"#;
    let err = load_str(Source {
        text: json,
        format: Format::Json,
        name: "m.json",
    })
    .unwrap_err();
    let MapError::Invalid { issues, .. } = err else {
        panic!("{err}")
    };
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].line, Some(9));
    assert_eq!(issues[0].field, "tenants.bad");
    let ok = json.replace("\"bad\": \"zz\"", "\"globex\": \"a\"");
    let snap = load_str(Source {
        text: &ok,
        format: Format::Json,
        name: "m.json",
    })
    .unwrap();
    assert_eq!(snap.tenants.len(), 2);
}

#[test]
fn example_map_is_valid() {
    let snap = crate::map::load_example().expect("example map");
    assert!(snap.tenants.len() >= 4);
}

/// `BASE` with a `[cells.a.health]` table holding `body` (cell a has one
/// IPv4 address).
fn with_health(body: &str) -> String {
    format!("{BASE}\n[cells.a.health]\n{body}\n")
}

const HEALTH_OK: &str = "probe = \"http\"\nport = 8080\npath = \"/healthz\"\ninterval_ms = 2000\n\
                         timeout_ms = 1000\nrise = 2\nfall = 3\nmin_up = 1";

#[test]
fn health_table_is_carried_as_data() {
    let snap = load_str(Source {
        text: &with_health(HEALTH_OK),
        format: Format::Toml,
        name: "m.toml",
    })
    .expect("valid");
    let a = snap.cell(snap.cell_by_id("a").expect("a"));
    let h = a.health.as_ref().expect("health");
    assert_eq!(h.probe, crate::map::Probe::Http);
    assert_eq!((h.port, h.path.as_str()), (8080, "/healthz"));
    assert_eq!(h.interval, std::time::Duration::from_millis(2000));
    assert_eq!(h.timeout, std::time::Duration::from_millis(1000));
    assert_eq!((h.rise, h.fall, h.min_up), (2, 3, 1));
    assert!(snap.cell(snap.cell_by_id("b").expect("b")).health.is_none());
    assert_eq!(snap.safety.max_unhealthy_fraction, 0.5);
    // Defaults: path "/", 2000/1000 ms, rise 2, fall 3, min_up 1.
    let snap = load_str(Source {
        text: &with_health("probe = \"tcp\"\nport = 22"),
        format: Format::Toml,
        name: "m.toml",
    })
    .expect("valid");
    let h = snap.cells[0].health.clone().expect("health");
    assert_eq!((h.probe, h.path.as_str()), (crate::map::Probe::Tcp, "/"));
    assert_eq!((h.rise, h.fall, h.min_up), (2, 3, 1));
}

/// `HEALTH_OK` with the line of `field` replaced by `line`; exactly one
/// issue, on that line, naming the field and containing `needle`.
fn health_issue(field: &str, line: &str, needle: &str) {
    let body: String = HEALTH_OK
        .lines()
        .map(|l| {
            if l.starts_with(&format!("{field} ")) {
                line.to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let t = with_health(&body);
    let from = t.find("[cells.a.health]").expect("table");
    let line_no = t[..from].lines().count()
        + t[from..]
            .lines()
            .position(|l| l == line)
            .expect("line in table")
        + 1;
    one_issue(
        &t,
        &[
            &format!("{line_no}:"),
            &format!("cells.a.health.{field}"),
            needle,
        ],
    );
}

#[test]
fn health_probe_must_be_known() {
    health_issue("probe", "probe = \"icmp\"", "not one of http, tcp");
}

#[test]
fn health_port_in_range() {
    health_issue("port", "port = 0", "out of range (1..=65535)");
    health_issue("port", "port = 65536", "out of range (1..=65535)");
}

#[test]
fn health_path_starts_with_a_slash_and_is_printable() {
    health_issue("path", "path = \"healthz\"", "must start with \"/\"");
    health_issue("path", "path = \"/a b\"", "printable ASCII");
    health_issue("path", "path = \"/a\\r\\nHost: x\"", "printable ASCII");
    health_issue(
        "path",
        &format!("path = \"/{}\"", "x".repeat(1024)),
        "at most 1024",
    );
}

#[test]
fn health_path_is_for_http_only() {
    let t = with_health("probe = \"tcp\"\nport = 22\npath = \"/x\"");
    one_issue(
        &t,
        &[
            &line_of(&t, "path = "),
            "cells.a.health.path",
            "http probes only",
        ],
    );
}

#[test]
fn health_interval_has_a_floor() {
    health_issue("interval_ms", "interval_ms = 249", "out of range (250..=");
    health_issue("interval_ms", "interval_ms = 3600001", "out of range");
}

#[test]
fn health_timeout_is_below_the_interval() {
    health_issue(
        "timeout_ms",
        "timeout_ms = 2000",
        "less than interval_ms (2000)",
    );
    health_issue("timeout_ms", "timeout_ms = 5", "below the minimum of 10");
}

#[test]
fn health_rise_and_fall_are_at_least_one() {
    health_issue("rise", "rise = 0", "out of range (1..=100)");
    health_issue("fall", "fall = 0", "out of range (1..=100)");
    health_issue("fall", "fall = 101", "out of range (1..=100)");
}

#[test]
fn health_min_up_fits_the_endpoints() {
    health_issue("min_up", "min_up = 0", "at least 1");
    health_issue("min_up", "min_up = 2", "more than the cell's 1 address(es)");
}

#[test]
fn health_on_a_cell_without_addresses() {
    let t = format!(
        "{}\n[cells.a.health]\nprobe = \"tcp\"\nport = 1\n",
        BASE.replacen("ipv4 = [\"192.0.2.10\"]\n", "", 1).replacen(
            "hostname = \"a.cells.example.com.\"",
            "hostname = \"a.lb.example.net.\"",
            1
        )
    );
    one_issue(
        &t,
        &["cells.a.health", "more than the cell's 0 address(es)"],
    );
}

#[test]
fn health_unknown_field_is_rejected() {
    let t = with_health("probe = \"tcp\"\nport = 1\nintervall_ms = 500");
    one_issue(&t, &[&line_of(&t, "intervall_ms"), "intervall_ms"]);
}

#[test]
fn max_unhealthy_fraction_is_a_fraction() {
    let t = edit(
        "[placement]",
        "[safety]\nmax_unhealthy_fraction = 1.5\n\n[placement]",
    );
    one_issue(
        &t,
        &[
            &line_of(&t, "max_unhealthy_fraction"),
            "safety.max_unhealthy_fraction",
            "not a fraction",
        ],
    );
}

/// `BASE` with `moves` appended (after `[placement]`).
fn with_moves(moves: &str) -> String {
    format!("{BASE}{moves}")
}

#[test]
fn a_valid_move_compiles_with_its_time() {
    let text = with_moves("\n[moves.acme]\nto = \"b\"\nat = \"2026-12-10T10:00:00Z\"\n");
    let snap = load_str(Source {
        text: &text,
        format: Format::Toml,
        name: "m.toml",
    })
    .expect("valid");
    let m = &snap.moves[0];
    assert_eq!(m.tenant, "acme");
    assert_eq!(snap.cell(m.from).id, "a");
    assert_eq!(snap.cell(m.to).id, "b");
    assert_eq!(
        m.at,
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_896_800)
    );
    assert_eq!(snap.move_of("ACME"), Some(m));
    assert_eq!(snap.zone.move_ttl, 5);
    // An offset is converted to UTC.
    let text = with_moves("\n[moves.acme]\nto = \"b\"\nat = \"2026-12-10T11:00:00+01:00\"\n");
    let snap2 = load_str(Source {
        text: &text,
        format: Format::Toml,
        name: "m.toml",
    })
    .expect("valid");
    assert_eq!(snap2.moves[0].at, m.at);
}

#[test]
fn move_errors_name_line_and_field() {
    let cases: [(&str, &str, &str); 7] = [
        (
            "\n[moves.nobody]\nto = \"b\"\nat = \"2026-12-10T10:00:00Z\"\n",
            "moves.nobody: unknown tenant `nobody`",
            "[moves.nobody]",
        ),
        (
            "\n[moves.acme]\nto = \"zz\"\nat = \"2026-12-10T10:00:00Z\"\n",
            "moves.acme.to: unknown cell `zz`",
            "to = \"zz\"",
        ),
        (
            "\n[moves.acme]\nto = \"b\"\nat = \"next tuesday\"\n",
            "moves.acme.at: `next tuesday` is not an RFC 3339 time",
            "at = \"next",
        ),
        (
            "\n[moves.acme]\nto = \"b\"\nat = \"2026-12-10T10:00:00.5Z\"\n",
            "moves.acme.at: `2026-12-10T10:00:00.5Z` has a fraction of a second",
            "at = \"2026",
        ),
        (
            "\n[moves.acme]\nto = \"a\"\nat = \"2026-12-10T10:00:00Z\"\n",
            "moves.acme.to: tenant `acme` is already in cell `a`",
            "to = \"a\"",
        ),
        (
            "\n[moves.acme]\nto = \"b\"\nat = \"2026-12-10T10:00:00Z\"\n[moves.ACME]\nto = \"b\"\nat = \"2026-12-11T10:00:00Z\"\n",
            "moves.ACME: tenant `ACME` is moved twice",
            "[moves.ACME]",
        ),
        (
            "\n[moves.\"bad.id\"]\nto = \"b\"\nat = \"2026-12-10T10:00:00Z\"\n",
            "moves.\"bad.id\": tenant id `bad.id` contains '.'",
            "[moves.\"bad.id\"]",
        ),
    ];
    for (moves, want, at_line) in cases {
        let text = with_moves(moves);
        let got = issues(&text);
        assert_eq!(got.len(), 1, "{moves}: {got:#?}");
        assert!(got[0].contains(want), "{moves}: {got:?}");
        assert!(
            got[0].starts_with(&line_of(&text, at_line)),
            "{moves}: {got:?}"
        );
    }
}

#[test]
fn a_move_to_a_down_cell_is_refused() {
    let text = edit(
        "status = \"active\"\n\n[tenants]",
        "status = \"down\"\n\n[tenants]",
    )
    .replace("globex = \"b\"\n", "")
        + "\n[moves.acme]\nto = \"b\"\nat = \"2026-12-10T10:00:00Z\"\n";
    let got = issues(&text);
    assert!(
        got.iter()
            .any(|i| i.starts_with(&line_of(&text, "to = \"b\""))
                && i.contains("moves.acme.to: cell `b` is down in the map")),
        "{got:#?}"
    );
}

#[test]
fn zone_serial_must_not_be_zero() {
    let text = edit("ttl = 30\n", "ttl = 30\nserial = 0\n");
    one_issue(&text, &["zone.serial", "at least 1"]);
    assert!(issues(&edit("ttl = 30\n", "ttl = 30\nserial = 2026120301\n")).is_empty());
}

#[test]
fn a_guard_that_does_not_match_is_a_truncated_file() {
    let text = format!("[guard]\ntenants = 3\n{BASE}");
    one_issue(
        &text,
        &["guard.tenants", "declares 3 tenant(s) but lists 2"],
    );
    assert!(issues(&format!("[guard]\ntenants = 2\n{BASE}")).is_empty());
}

#[test]
fn a_file_of_errors_reports_the_first_hundred_and_counts_the_rest() {
    let mut text = BASE.to_owned();
    text = text.replace("[placement]", "");
    let extra: String = (0..250).map(|i| format!("t{i} = \"nowhere\"\n")).collect();
    text = text.replace(
        "globex = \"b\"\n",
        &format!("globex = \"b\"\n{extra}\n[placement]"),
    );
    let found = issues(&text);
    assert_eq!(
        found.len(),
        crate::map::validate::MAX_ISSUES + 1,
        "{found:#?}"
    );
    assert!(
        found
            .last()
            .is_some_and(|l| l.contains("map: and 150 more error(s) not listed")),
        "{found:#?}"
    );
    // The listed ones have their lines.
    let t0 = line_of(&text, "t0 = ");
    assert!(
        found[0].contains("tenants.t0") && found[0].starts_with(&t0),
        "{found:#?}"
    );
}

#[test]
fn move_ttl_is_at_most_the_zone_ttl() {
    one_issue(
        &edit("ttl = 30\n", "ttl = 30\nmove_ttl = 31\n"),
        &["5: zone.move_ttl: 31 is out of range (1..=30)"],
    );
    one_issue(
        &edit("ttl = 30\n", "ttl = 30\nmove_ttl = 0\n"),
        &["5: zone.move_ttl: 0 is out of range"],
    );
    // A zone TTL under the default: the default follows it.
    let snap = load_str(Source {
        text: &edit("ttl = 30\n", "ttl = 3\n"),
        format: Format::Toml,
        name: "m.toml",
    })
    .expect("valid");
    assert_eq!(snap.zone.move_ttl, 3);
}

#[test]
fn a_json_map_moving_a_tenant_twice_is_refused() {
    let json = r#"{
  "zone": {"origin": "cells.example.com.", "nameservers": ["ns.example.net."],
           "hostmaster": "h.example.com."},
  "cells": {
    "a": {"hostname": "a.cells.example.com.", "ipv4": ["192.0.2.1"]},
    "b": {"hostname": "b.cells.example.com.", "ipv4": ["192.0.2.2"]}
  },
  "tenants": {"acme": "a"},
  "moves": {
    "acme": {"to": "b", "at": "2026-12-10T10:00:00Z"},
    "acme": {"to": "b", "at": "2026-12-11T10:00:00Z"}
  }
}"#;
    let err = load_str(Source {
        text: json,
        format: Format::Json,
        name: "m.json",
    })
    .unwrap_err();
    let MapError::Invalid { issues, .. } = err else {
        panic!("{err}")
    };
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].field, "moves.acme");
    assert!(issues[0].line.is_some_and(|l| l >= 10), "{:?}", issues[0]);
    assert!(issues[0].message.contains("moved twice"), "{}", issues[0]);
}

#[test]
fn junk_is_refused_before_the_general_toml_parser_sees_it() {
    // Over the limit, outside any [tenants] table: refused at once, with no
    // parse tree built (which costs over ten bytes per byte).
    let junk = "lorem ipsum dolor sit amet\n".repeat(crate::map::TOML_GENERAL_MAX / 20);
    let e = load_str(Source {
        text: &junk,
        format: Format::Toml,
        name: "junk.toml",
    })
    .expect_err("junk accepted");
    assert!(e.to_string().contains("over the limit of"), "{e}");
}

/// The reload path consumes the parsed map (`validate_owned`: the index
/// takes over its name arena); `check`, `diff` and `explain` borrow it
/// (`validate`: the arena is copied). Both must give the same index and the
/// same issues.
#[test]
fn validating_an_owned_map_equals_validating_a_borrowed_one() {
    use crate::map::{parse, validate::validate, validate::validate_owned};
    let src = |text| Source {
        text,
        format: Format::Toml,
        name: "m.toml",
    };
    let good = edit("globex = \"b\"", "GloBex = \"b\"\nInitech = \"a\"");
    let owned = validate_owned(parse(src(&good)).expect("parse")).expect("valid");
    let borrowed = validate(&parse(src(&good)).expect("parse")).expect("valid");
    let names: Vec<_> = owned.tenants.iter().map(|(n, _)| n.to_owned()).collect();
    assert_eq!(names, ["acme", "globex", "initech"]);
    assert_eq!(
        owned.tenants.iter().collect::<Vec<_>>(),
        borrowed.tenants.iter().collect::<Vec<_>>()
    );
    for q in ["ACME", "globex", "INITECH"] {
        assert!(owned.tenants.get(q.as_bytes()).is_some(), "{q}");
    }

    let bad = edit(
        "globex = \"b\"",
        "globex = \"b\"\nACME = \"b\"\n\"x y\" = \"a\"",
    );
    let owned = validate_owned(parse(src(&bad)).expect("parse")).expect_err("invalid");
    let borrowed = validate(&parse(src(&bad)).expect("parse")).expect_err("invalid");
    let text = |v: &[crate::map::validate::RawIssue]| format!("{v:?}");
    assert_eq!(text(&owned), text(&borrowed));
    assert_eq!(owned.len(), 2, "{owned:?}");
}
