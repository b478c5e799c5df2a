//! Safety gates: a running server refuses a mass move unless the new map
//! carries a fresh `allow_mass_change`, and `cellns diff` predicts it (exit
//! codes, human and JSON output). Also the hidden `gen-map` command.

use hickory_proto::rr::RecordType;

use crate::support::dns::{Udp, wait_for_answer};
use crate::support::map::{Format, MapDir, Mode, ORIGIN, Spec, generate_spec, generated_cell_v4};
use crate::support::server::Server;
use crate::support::{RELOAD, run_cli};

fn spec(move_every: usize, reason: Option<&str>) -> String {
    let mut s = Spec::new(100, 2, Format::Toml);
    s.move_every = move_every;
    s.allow_mass_change = reason.map(str::to_owned);
    generate_spec(&s)
}

/// The A set of generated cell `k` (0-based).
fn cell(k: usize) -> std::collections::BTreeSet<std::net::IpAddr> {
    generated_cell_v4(k)
}

#[test]
fn a_mass_move_is_rejected_until_overridden() {
    // t000002 is on cell 1; moving every 2nd tenant moves it (and 49
    // others: 50% of the map) to cell 0.
    let t2 = format!("t000002.{ORIGIN}");
    let mut map = MapDir::new(&spec(0, None), false);
    let server = Server::start(&["--map", &map.arg()]);
    let udp = Udp::new(server.dns);
    let a = udp.ask(&t2, RecordType::A).expect("answer");
    assert_eq!(a.addrs, cell(1));

    map.write(&spec(2, None), Mode::Rename);
    let line = server
        .logs()
        .wait_for("ERROR", "rejected by the safety gates", RELOAD)
        .expect("no error-level log about the gates");
    assert!(
        line["message"]
            .as_str()
            .unwrap_or_default()
            .contains("50 of 100"),
        "{line}"
    );
    let a = udp.ask(&t2, RecordType::A).expect("answer");
    assert_eq!(a.addrs, cell(1), "a rejected map is served");

    // The same change with an override for it goes through, logged.
    map.write(
        &spec(2, Some("rebalance onto c0001 (OPS-42)")),
        Mode::Rename,
    );
    wait_for_answer(server.dns, &t2, &cell(0), RELOAD)
        .unwrap_or_else(|last| panic!("overridden change not served: {last}"));
    let warn = server
        .logs()
        .wait_for("WARN", "safety gates overridden", RELOAD)
        .expect("override not logged at warn");
    assert_eq!(warn["reason"], "rebalance onto c0001 (OPS-42)");

    // Leaving the override in place does not open the gates for the next
    // mass change.
    map.write(
        &spec(0, Some("rebalance onto c0001 (OPS-42)")),
        Mode::Rename,
    );
    let rejected_again =
        server
            .logs()
            .wait_for_nth("ERROR", "rejected by the safety gates", 2, RELOAD);
    assert!(
        rejected_again.is_some(),
        "the second mass change was not rejected"
    );
    let a = udp.ask(&t2, RecordType::A).expect("answer");
    assert_eq!(
        a.addrs,
        cell(0),
        "a reused override let a mass change through"
    );
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write map");
    p.display().to_string()
}

#[test]
fn diff_cli_exit_codes_and_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = write(dir.path(), "old.toml", &spec(0, None));
    let small = write(dir.path(), "small.toml", &spec(10, None));
    let mass = write(dir.path(), "mass.toml", &spec(2, None));
    let mass_ok = write(dir.path(), "mass_ok.toml", &spec(2, Some("planned")));
    let bad = write(dir.path(), "bad.toml", "[zone]\norigin = \"x\"\n");

    // Identical: accepted.
    let (code, out, _) = run_cli(&["diff", &old, &old]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("tenants moved:   0"), "{out}");

    // 10% moved: at the limit, accepted.
    let (code, out, _) = run_cli(&["diff", &old, &small, "--json"]);
    assert_eq!(code, 0, "{out}");
    let j: serde_json::Value = serde_json::from_str(&out).expect("JSON output");
    assert_eq!(j["counts"]["moved"], 10);
    assert_eq!(j["gates"]["verdict"], "accepted");
    assert_eq!(j["moved"][0]["tenant"], "t000010");
    assert_eq!(j["moved"][0]["from"], "c0002");
    assert_eq!(j["moved"][0]["to"], "c0001");

    // 50% moved: rejected, exit 1.
    let (code, out, _) = run_cli(&["diff", &old, &mass]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("REJECTED"), "{out}");
    assert!(out.contains("t000002"), "{out}");
    let (code, out, _) = run_cli(&["diff", &old, &mass, "--json"]);
    assert_eq!(code, 1);
    let j: serde_json::Value = serde_json::from_str(&out).expect("JSON output");
    assert_eq!(j["gates"]["rejected"], true);
    assert_eq!(j["gates"]["moved_exceeded"], true);
    assert_eq!(j["moved_fraction"], 0.5);

    // With a fresh override: accepted, exit 0.
    let (code, out, _) = run_cli(&["diff", &old, &mass_ok, "--json"]);
    assert_eq!(code, 0, "{out}");
    let j: serde_json::Value = serde_json::from_str(&out).expect("JSON output");
    assert_eq!(j["gates"]["verdict"], "accepted_with_override");
    assert_eq!(j["gates"]["override"], "planned");

    // Removing half the tenants: rejected.
    let half = {
        let mut s = Spec::new(50, 2, Format::Toml);
        s.move_every = 0;
        write(dir.path(), "half.toml", &generate_spec(&s))
    };
    let (code, out, _) = run_cli(&["diff", &old, &half, "--json"]);
    assert_eq!(code, 1, "{out}");
    let j: serde_json::Value = serde_json::from_str(&out).expect("JSON output");
    assert_eq!(j["counts"]["removed"], 50);
    assert_eq!(j["gates"]["removed_exceeded"], true);

    // An invalid map: exit 2, errors on stderr.
    let (code, out, err) = run_cli(&["diff", &old, &bad]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("bad.toml"), "{err}");
}

#[test]
fn gen_map_writes_valid_maps() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (file, json) in [("g.toml", false), ("g.json", true)] {
        let out = dir.path().join(file).display().to_string();
        let mut args = vec![
            "gen-map",
            "--tenants",
            "1000",
            "--cells",
            "3",
            "--out",
            &out,
        ];
        if json {
            args.push("--json");
        }
        let (code, _, err) = run_cli(&args);
        assert_eq!(code, 0, "{err}");
        let (code, out, err) = run_cli(&["check", &out]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("3 cell(s), 1000 listed tenant(s)"), "{out}");
    }
    let (_, help, _) = run_cli(&["--help"]);
    assert!(!help.contains("gen-map"), "gen-map must be hidden: {help}");
}
