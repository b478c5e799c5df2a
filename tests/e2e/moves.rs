//! Planned tenant moves (`[moves.<tenant>]`): a move a few seconds ahead is
//! loaded by a reload, then flips DNS and tokens by itself at `at`, with
//! the short TTL around it, the phases in order and quiet times that follow
//! from the TTLs and token lifetimes used; two instances fed the same map
//! flip together; a secondary receives the flip (new serial, NOTIFY).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hickory_proto::rr::RecordType;

use crate::support::dns;
use crate::support::http::{KEY, TokenServer, get_auth, post_token, scrape, token_req};
use crate::support::map::{self, Map, ORIGIN, cell_v4};
use crate::support::secondary::{Kind, Secondary};
use crate::support::server::{Launch, Server};
use crate::support::{RELOAD, STARTUP, free_port, replace_file, wait_until};

/// `zone.ttl` and `zone.move_ttl` of the test maps.
const TTL: u64 = 3;
const MOVE_TTL: u64 = 1;
/// How far ahead a move is scheduled once the servers run: room for a
/// reload on a loaded machine before the short-TTL window (`at - TTL`)
/// starts, so that every phase is seen.
const AHEAD: u64 = 12;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn rfc3339(unix: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix as i64)
        .expect("time")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format")
}

/// Cells a, b and c; acme on a (alone, so that a falls quiet once acme
/// has moved), twenty more tenants on c. With `at`, acme moves to b then.
fn moving_map(version: &str, at: Option<u64>) -> Map {
    let mut m = Map::new(ORIGIN, version)
        .set("zone.ttl", TTL as i64)
        .set("zone.move_ttl", MOVE_TTL as i64)
        .cell("a", map::small_cell('a'))
        .cell("b", map::small_cell('b'))
        .cell("c", map::small_cell('c'))
        .tenant("acme", "a");
    for i in 0..20 {
        m = m.tenant(&format!("f{i:02}"), "c");
    }
    if let Some(at) = at {
        m = m
            .set("moves.acme.to", "b")
            .set("moves.acme.at", rfc3339(at));
    }
    m
}

/// The addresses and TTL of `name` A on `server` (UDP).
fn a_of(server: SocketAddr, name: &str) -> Option<(BTreeSet<IpAddr>, u32)> {
    let m = dns::try_query(server, name, RecordType::A)?;
    let ttl = m.answers.first()?.ttl;
    Some((dns::Answer::of(&m).addrs, ttl))
}

fn tenant_view(http: SocketAddr) -> serde_json::Value {
    let r = get_auth(http, "/v1/tenants/acme");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn cell_view(http: SocketAddr, id: &str) -> serde_json::Value {
    let r = get_auth(http, "/v1/cells");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["cells"]
        .as_array()
        .expect("cells")
        .iter()
        .find(|c| c["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no cell {id}"))
}

fn write_map(path: &Path, m: &Map) {
    replace_file(path, &m.toml());
}

#[test]
fn a_scheduled_move_flips_dns_and_tokens_at_its_time_without_a_reload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("map.toml");
    write_map(&path, &moving_map("v1", None));
    let arg = path.display().to_string();
    let ts = TokenServer::start(&["--map", &arg]);
    let (dns_addr, http) = (ts.dns(), ts.http());
    let acme = format!("acme.{ORIGIN}");
    let logs = || ts.server.logs().text();

    // Schedule the move: a reload.
    let at = unix_now() + AHEAD;
    write_map(&path, &moving_map("v2", Some(at)));
    assert!(
        wait_until(RELOAD, || tenant_view(http)["move"].is_object()),
        "the map with the move was not loaded; logs:\n{}",
        logs()
    );
    // (The reload is counted just after it is published.)
    let successes = || get_auth(http, "/v1/map").json()["reload"]["successes"].as_u64();
    assert!(wait_until(RELOAD, || successes() == Some(1)), "{}", logs());
    let reloads = successes();
    let v = tenant_view(http);
    assert_eq!(v["move"]["to"], "b");
    assert_eq!(v["move"]["from"], "a");
    assert_eq!(v["move"]["at_unix"], at);
    assert_eq!(v["move"]["at"], rfc3339(at));
    assert_eq!(
        v["move"]["phase"],
        "scheduled",
        "loaded {} s before the move: {v}",
        at.saturating_sub(unix_now())
    );
    assert_eq!(v["cell"], "a");
    assert_eq!(v["dns"]["ttl"], TTL);
    // The move's time is not here yet: the old cell, the normal TTL.
    let (addrs, ttl) = a_of(dns_addr, &acme).expect("acme answered");
    assert_eq!(addrs, cell_v4('a'));
    assert_eq!(u64::from(ttl), TTL);
    // The old cell is pointed at; b has never been by this instance.
    assert!(cell_view(http, "a")["quiet_at"].is_null());
    assert!(cell_view(http, "b")["quiet_at"].is_string());

    // A token issued now expires at the flip, and says why.
    let r = post_token(http, Some(KEY), &token_req("acme", 600));
    assert_eq!(r.status, 200, "{}", r.text());
    let early = r.json();
    assert_eq!(early["cell"], "a.cells.example.test");
    assert_eq!(early["expires_at"], rfc3339(at));
    let (_, claims) = crate::support::http::decode_unverified(early["token"].as_str().unwrap());
    assert_eq!(claims["exp"], at, "a token expires no later than the flip");
    let why = &early["ttl_shortened"];
    assert_eq!(why["reason"], "tenant_move");
    assert_eq!(why["requested_ttl_seconds"], 600);
    assert_eq!(why["move_to"], "b");
    assert_eq!(why["move_at"], rfc3339(at));
    assert!(why["ttl_seconds"].as_u64().is_some_and(|t| t <= AHEAD));

    // Watch the flip: phases in order, the TTL and addresses of each
    // answer, all without a reload.
    let mut phases: Vec<String> = vec!["scheduled".into()];
    let mut short_before_flip = Vec::new();
    let mut first_b: Option<SystemTime> = None;
    let mut after_flip_ttls = Vec::new();
    let deadline = Duration::from_secs(AHEAD + TTL + 30);
    let done = wait_until(deadline, || {
        let phase = tenant_view(http)["move"]["phase"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if phases.last() != Some(&phase) {
            phases.push(phase.clone());
        }
        let now = SystemTime::now();
        let Some((addrs, ttl)) = a_of(dns_addr, &acme) else {
            return false;
        };
        if addrs == cell_v4('a') {
            assert!(
                first_b.is_none(),
                "acme went back to a after the flip; logs:\n{}",
                logs()
            );
            assert!(
                now < UNIX_EPOCH + Duration::from_secs(at) + Duration::from_millis(1500),
                "acme still on a well after the flip ({ttl}); logs:\n{}",
                logs()
            );
            if phase == "short-ttl" {
                short_before_flip.push(ttl);
            }
        } else {
            assert_eq!(addrs, cell_v4('b'), "acme answers neither a nor b");
            first_b.get_or_insert(now);
            after_flip_ttls.push(ttl);
        }
        // Done once the normal TTL is back (at + TTL).
        after_flip_ttls.last().is_some_and(|&t| u64::from(t) == TTL)
    });
    assert!(
        done,
        "no flip and return to the normal TTL within {deadline:?}; phases {phases:?}; logs:\n{}",
        logs()
    );
    assert_eq!(
        phases,
        ["scheduled", "short-ttl", "moved"],
        "phases in order"
    );
    assert!(
        !short_before_flip.is_empty()
            && short_before_flip.iter().all(|&t| u64::from(t) <= MOVE_TTL),
        "before the flip, in the short-TTL window: TTLs {short_before_flip:?} (move_ttl {MOVE_TTL})"
    );
    let flipped = first_b.expect("flipped");
    let at_time = UNIX_EPOCH + Duration::from_secs(at);
    assert!(flipped >= at_time, "acme answered b before the move's time");
    assert!(
        flipped.duration_since(at_time).unwrap_or_default() < Duration::from_millis(1500),
        "the flip came {:?} after the move's time",
        flipped.duration_since(at_time)
    );
    assert!(
        u64::from(after_flip_ttls[0]) <= MOVE_TTL,
        "right after the flip the TTL is still short: {after_flip_ttls:?}"
    );
    assert_eq!(successes(), reloads, "the flip needed no reload");
    assert!(ts.server.logged("move timer"), "{}", logs());

    // After the flip: tokens name the new cell, for their full lifetime.
    let r = post_token(http, Some(KEY), &token_req("acme", 600));
    assert_eq!(r.status, 200, "{}", r.text());
    let late = r.json();
    assert_eq!(late["cell"], "b.cells.example.test");
    assert!(late.get("ttl_shortened").is_none(), "{late}");

    // Quiet times: acme's answers for a were short (1 s) from at - 3 and
    // stopped at the flip; its only token for a expired at the flip.
    let v = tenant_view(http);
    assert_eq!(v["move"]["phase"], "moved");
    assert_eq!(v["cell"], "b");
    assert_eq!(
        v["move"]["old_cell_quiet_at_unix"],
        at + MOVE_TTL,
        "old_cell_quiet_at = at + move_ttl: {v}"
    );
    let a = cell_view(http, "a");
    let quiet = a["quiet_at_unix"].as_u64().expect("a is quiet");
    // The flip's publish time + move_ttl, or the token's exp (at).
    assert!(
        (at + MOVE_TTL..=at + MOVE_TTL + 2).contains(&quiet),
        "cell a quiet_at {quiet}, at {at}: {a}"
    );
    assert!(cell_view(http, "b")["quiet_at"].is_null());
    let m = scrape(http);
    assert_eq!(m.value("cellns_moves", &[("phase", "moved")]), 1.0);
    assert_eq!(m.value("cellns_moves", &[("phase", "scheduled")]), 0.0);
    assert_eq!(
        m.value("cellns_cell_quiet_timestamp_seconds", &[("cell", "a")]) as u64,
        quiet
    );
    assert_eq!(
        m.value("cellns_cell_quiet_timestamp_seconds", &[("cell", "b")]),
        0.0
    );
}

#[test]
fn two_instances_fed_the_same_map_flip_within_a_second() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("map.toml");
    write_map(&path, &moving_map("v1", None));
    let arg = path.display().to_string();
    let one = Server::start(&["--map", &arg]);
    let two = Server::start(&["--map", &arg]);
    let acme = format!("acme.{ORIGIN}");
    let at = unix_now() + AHEAD;
    // The map declares its serial (its generation time, as documented):
    // each move boundary then gives both instances the same serial, the
    // boundary's time.
    let declared = unix_now();
    write_map(
        &path,
        &moving_map("v2", Some(at)).set("zone.serial", declared as i64),
    );
    let on = |s: &Server| a_of(s.dns, &acme).map(|(a, _)| a);
    let mut flips: [Option<Instant>; 2] = [None, None];
    let deadline = Duration::from_secs(AHEAD + 30);
    let flipped = wait_until(deadline, || {
        for (i, s) in [&one, &two].into_iter().enumerate() {
            if flips[i].is_none() && on(s) == Some(cell_v4('b')) {
                flips[i] = Some(Instant::now());
            }
        }
        flips.iter().all(Option::is_some)
    });
    assert!(
        flipped,
        "not both flipped within {deadline:?}: {flips:?}\n--- one:\n{}\n--- two:\n{}",
        one.logs().text(),
        two.logs().text()
    );
    let (a, b) = (flips[0].expect("one"), flips[1].expect("two"));
    let apart = if a > b { a - b } else { b - a };
    eprintln!("two instances flipped {apart:?} apart");
    assert!(apart < Duration::from_secs(1), "flips {apart:?} apart");
    // And neither before the move's time.
    assert!(SystemTime::now() >= UNIX_EPOCH + Duration::from_secs(at));
    // Same zone version on both: the serial is the flip's time.
    let origin = ORIGIN;
    assert!(
        wait_until(RELOAD, || {
            dns::serial(one.dns, origin) == Some(at as u32)
                && dns::serial(two.dns, origin) == Some(at as u32)
        }),
        "serials after the flip: {:?} and {:?}, want {at}",
        dns::serial(one.dns, origin),
        dns::serial(two.dns, origin)
    );
}

#[test]
fn a_secondary_receives_the_flip_with_a_new_serial() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("map.toml");
    // The transfer map (SOA refresh and retry an hour: only NOTIFY makes
    // the secondary follow), acme on a.
    let xfr_map = |version: &str, at: Option<u64>| {
        let m = map::xfr(version, 'a')
            .set("zone.ttl", 6)
            .set("zone.move_ttl", 2);
        match at {
            Some(at) => m
                .set("moves.acme.to", "b")
                .set("moves.acme.at", rfc3339(at)),
            None => m,
        }
    };
    write_map(&path, &xfr_map("v1", None));
    let mut started = None;
    for _ in 0..3 {
        let port = free_port();
        let args = [
            "--map".to_owned(),
            path.display().to_string(),
            "--axfr-allow".to_owned(),
            "127.0.0.1".to_owned(),
            "--notify".to_owned(),
            format!("127.0.0.1:{port}"),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let cellns = Launch::new(&args).start();
        if let Ok(secondary) = Secondary::start(Kind::Nsd, false, dir.path(), port, cellns.dns) {
            started = Some((cellns, secondary));
            break;
        }
    }
    let (cellns, secondary) = started.expect("NSD started on a free port");
    let context = || {
        format!(
            "--- secondary log:\n{}\n--- cellns log:\n{}",
            secondary.log_text(),
            cellns.logs().text()
        )
    };
    let origin = map::XFR_ORIGIN;
    let acme = format!("acme.{origin}");
    let synced = |serial| dns::serial(secondary.addr, origin) == Some(serial);
    let first = dns::serial(cellns.dns, origin).expect("SOA");
    assert!(wait_until(STARTUP, || synced(first)), "{}", context());

    // The move, the zone TTL (6 s) + a margin ahead: the map is loaded in
    // the scheduled phase, then the short-TTL window starts (a new zone
    // version), then the flip (another), each NOTIFYed.
    let at = unix_now() + 6 + AHEAD;
    write_map(&path, &xfr_map("v2", Some(at)));
    let short = |server| {
        dns::try_query(server, &acme, RecordType::A).and_then(|m| m.answers.first().map(|r| r.ttl))
            == Some(2)
    };
    assert!(
        wait_until(Duration::from_secs(AHEAD + 30), || short(secondary.addr)),
        "the secondary never served the short TTL; {}",
        context()
    );
    let before_flip = dns::serial(cellns.dns, origin).expect("SOA");
    assert!(
        SystemTime::now() < UNIX_EPOCH + Duration::from_secs(at),
        "the short TTL reached the secondary only after the flip"
    );
    let on_b = |server| {
        dns::try_query(server, &acme, RecordType::A).is_some_and(|m| {
            m.answers.len() == 1
                && m.answers[0].data.to_string() == "192.0.2.20"
                && m.answers[0].ttl == 2
        })
    };
    assert!(
        wait_until(Duration::from_secs(6 + 30), || on_b(cellns.dns)),
        "cellns did not flip; {}",
        context()
    );
    let flipped = dns::serial(cellns.dns, origin).expect("SOA");
    assert_ne!(flipped, before_flip, "the flip is a new zone version");
    assert!(
        wait_until(RELOAD, || on_b(secondary.addr) && synced(flipped)),
        "the secondary did not receive the flip (serial {flipped}); {}",
        context()
    );
    assert!(cellns.logged("sending NOTIFY"), "{}", context());
}

#[test]
fn cli_diff_and_explain_show_a_scheduled_move() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = dir.path().join("old.toml");
    let new = dir.path().join("new.toml");
    let at = unix_now() + 3600;
    std::fs::write(&old, moving_map("v1", None).toml()).expect("write");
    std::fs::write(&new, moving_map("v2", Some(at)).toml()).expect("write");
    let (code, out, err) = crate::support::run_cli(&[
        "diff",
        old.to_str().unwrap(),
        new.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let j: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(j["counts"]["scheduled"], 1);
    assert_eq!(j["scheduled"][0]["tenant"], "acme");
    assert_eq!(j["scheduled"][0]["from"], "a");
    assert_eq!(j["scheduled"][0]["to"], "b");
    assert_eq!(j["scheduled"][0]["at"], rfc3339(at));
    assert_eq!(j["counts"]["moved"], 0);
    let (code, out, _) =
        crate::support::run_cli(&["diff", old.to_str().unwrap(), new.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains("scheduled moves"), "{out}");
    assert!(out.contains(&rfc3339(at)), "{out}");
    let (code, out, _) = crate::support::run_cli(&["explain", new.to_str().unwrap(), "acme"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("cell:     a"), "{out}");
    assert!(
        out.contains(&format!(
            "move:     a → b at {} (now scheduled",
            rfc3339(at)
        )),
        "{out}"
    );
    // The gate: moving 1 tenant of 21 is within 10%; a limit of 1% is not.
    let strict = moving_map("v3", Some(at)).set("safety.max_moved_fraction", 0.01);
    std::fs::write(&new, strict.toml()).expect("write");
    let (code, out, _) =
        crate::support::run_cli(&["diff", old.to_str().unwrap(), new.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("1 by scheduled moves"), "{out}");
}
