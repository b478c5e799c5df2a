//! The `cell` claim agrees with DNS: for the same tenant, the token names
//! the cell whose addresses (or CNAME target) the DNS answer carries, for
//! listed tenants before and after a map change that moves one, and for
//! tenants placed by hashing (`placement.unknown = "hash"`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

use crate::support::dns::{Transport, dig_short, exchange, query};
use crate::support::http::{TokenServer, api_keys_file, decode_unverified, keygen, mint};
use crate::support::map::{Cell, Map};
use crate::support::server::Server;
use crate::support::{RELOAD, replace_file, signal, wait_until};

/// What DNS says about a tenant and what a token says, checked to agree.
/// Returns the token's cell.
fn assert_token_agrees_with_dns(server: &Server, tenant: &str) -> String {
    let issued = mint(server.http(), tenant);
    let (_, claims) = decode_unverified(issued["token"].as_str().expect("token"));
    let cell = claims["cell"].as_str().expect("cell claim").to_owned();
    assert_eq!(issued["cell"], cell.as_str());
    let tenant_answer = dig_short(server.dns, &format!("{tenant}.cells.example.com."));
    assert!(!tenant_answer.is_empty(), "no DNS answer for {tenant}");
    if tenant_answer.len() == 1 && tenant_answer[0].ends_with('.') {
        // An out-of-zone cell: the tenant is a CNAME to the cell hostname.
        assert_eq!(
            tenant_answer[0].trim_end_matches('.'),
            cell,
            "DNS CNAME and token cell differ for {tenant}"
        );
    } else {
        let cell_answer = dig_short(server.dns, &format!("{cell}."));
        assert_eq!(
            tenant_answer, cell_answer,
            "{tenant}: DNS answers {tenant_answer:?} but the token names {cell} ({cell_answer:?})"
        );
    }
    cell
}

/// The example map with acme on `acme_cell`, as version `version`.
fn write_map(path: &Path, acme_cell: &str, version: &str) {
    // Moving one of five listed tenants is over the default reload gate
    // (10%); these tests move it on purpose.
    let map = Map::example()
        .set("version", version)
        .tenant("acme", acme_cell)
        .no_gate();
    replace_file(path, &map.toml());
}

fn start(map: &Path, dir: &Path) -> Server {
    let keys = dir.join("keys");
    if !keys.exists() {
        keygen(&keys, "EdDSA");
    }
    let api = api_keys_file(dir);
    Server::start(&[
        "--map",
        map.to_str().expect("utf-8 path"),
        "--signing-keys",
        keys.to_str().expect("utf-8 path"),
        "--api-keys",
        api.to_str().expect("utf-8 path"),
    ])
}

#[test]
fn token_cell_matches_dns_for_every_tenant() {
    let dir = tempfile::tempdir().expect("tempdir");
    let map = dir.path().join("map.toml");
    write_map(&map, "use1-a", "example-1");
    let server = start(&map, dir.path());
    for (tenant, cell) in [
        ("acme", "use1-a.cells.example.com"),
        ("globex", "use1-b.cells.example.com"),
        ("initech", "euw1-a.cells.example.com"),
        // CNAME to an out-of-zone cell.
        ("umbrella", "apse1-a.lb.example.net"),
        // Its cell is down: both DNS and the token send it to the failover.
        ("hooli", "use1-b.cells.example.com"),
    ] {
        assert_eq!(
            assert_token_agrees_with_dns(&server, tenant),
            cell,
            "{tenant}"
        );
    }
}

#[test]
fn token_cell_follows_a_moved_tenant_across_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let map = dir.path().join("map.toml");
    write_map(&map, "use1-a", "v1");
    let mut server = start(&map, dir.path());
    assert_eq!(
        assert_token_agrees_with_dns(&server, "acme"),
        "use1-a.cells.example.com"
    );
    server.terminate().expect("cellns did not exit on SIGTERM");

    write_map(&map, "use1-b", "v2");
    let server = start(&map, dir.path());
    assert_eq!(
        assert_token_agrees_with_dns(&server, "acme"),
        "use1-b.cells.example.com"
    );
    assert_eq!(mint(server.http(), "acme")["map_version"], "v2");
}

/// The map is changed while serving and SIGHUP sent; DNS and tokens must
/// both move the tenant, together.
#[test]
fn token_cell_follows_reload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let map = dir.path().join("map.toml");
    write_map(&map, "use1-a", "v1");
    let server = start(&map, dir.path());
    assert_eq!(
        assert_token_agrees_with_dns(&server, "acme"),
        "use1-a.cells.example.com"
    );

    write_map(&map, "use1-b", "v2");
    signal(server.pid(), "HUP");
    let moved = wait_until(RELOAD, || {
        dig_short(server.dns, "acme.cells.example.com.") == vec!["192.0.2.20".to_owned()]
    });
    assert!(
        moved,
        "DNS did not move acme after the map changed and SIGHUP"
    );
    // Once DNS has moved, every token names the new cell.
    assert_eq!(
        assert_token_agrees_with_dns(&server, "acme"),
        "use1-b.cells.example.com"
    );
    assert_eq!(mint(server.http(), "acme")["map_version"], "v2");
}

/// What DNS answers for `name` A: its addresses, or the CNAME target.
fn dns_answer(dns: SocketAddr, name: &str) -> BTreeSet<String> {
    let m = exchange(
        dns,
        Transport::Udp,
        &query(0x4a54, name, RecordType::A, None),
    );
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NoError,
        "{name}: {m:?}"
    );
    m.answers
        .iter()
        .map(|r| match &r.data {
            RData::A(a) => a.0.to_string(),
            RData::CNAME(c) => c.0.to_ascii(),
            other => panic!("{name}: unexpected record {other:?}"),
        })
        .collect()
}

#[test]
fn token_cell_matches_dns_for_hashed_tenants() {
    // The example's active cells (use1-a, use1-b, apse1-a behind a CNAME,
    // all weight 100) plus a heavy and a light one: hashing has weights to
    // honour. usw2-a (down) and euw1-a (draining) take no hashed tenants.
    let cell = |host: &str, ip: &str, weight: i64| {
        Cell::new(host)
            .ipv4([ip])
            .set("region", "us-east-1")
            .set("status", "active")
            .set("weight", weight)
    };
    let map = Map::example()
        .set("placement.unknown", "hash")
        .cell("heavy", cell("heavy.cells.example.com.", "192.0.2.70", 400))
        .cell("light", cell("light.cells.example.com.", "192.0.2.71", 20));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("map.toml");
    std::fs::write(&path, map.toml()).expect("write map");
    let s = TokenServer::start(&["--map", path.to_str().expect("utf-8 path")]);

    let mut cells = BTreeSet::new();
    for i in 0..200 {
        let tenant = format!("hashed-{i}");
        let issued = mint(s.http(), &tenant);
        let (_, claims) = decode_unverified(issued["token"].as_str().expect("token"));
        let cell = claims["cell"].as_str().expect("cell claim").to_owned();
        let answer = dns_answer(s.dns(), &format!("{tenant}.cells.example.com."));
        let expected = if cell.ends_with(".cells.example.com") {
            // An in-zone cell: the tenant gets the cell's own addresses.
            dns_answer(s.dns(), &format!("{cell}."))
        } else {
            // Out of zone: a CNAME to the cell's hostname.
            BTreeSet::from([format!("{cell}.")])
        };
        assert_eq!(
            answer, expected,
            "{tenant}: DNS answers {answer:?}, the token names {cell}"
        );
        cells.insert(cell);
    }
    // Every active cell got some of the 200 (the light one's expected share
    // is 200 × 20/720 ≈ 5.6), none of the others did.
    assert_eq!(
        cells,
        BTreeSet::from(
            [
                "use1-a.cells.example.com",
                "use1-b.cells.example.com",
                "apse1-a.lb.example.net",
                "heavy.cells.example.com",
                "light.cells.example.com"
            ]
            .map(str::to_owned)
        ),
        "the cells hashed tenants were placed on"
    );
}
