//! The `cell` claim agrees with DNS: for the same tenant, the token names
//! the cell whose addresses (or CNAME target) the DNS answer carries,
//! before and after a map change that moves the tenant.

use std::path::Path;
use std::time::Duration;

use crate::common::{self, Server};
use crate::token_support::*;

/// What DNS says about a tenant and what a token says, checked to agree.
/// Returns the token's cell.
fn assert_token_agrees_with_dns(server: &Server, tenant: &str) -> String {
    let http = server.http.expect("HTTP address");
    let issued = mint(http, tenant);
    let (_, claims) = decode_unverified(issued["token"].as_str().unwrap());
    let cell = claims["cell"].as_str().unwrap().to_owned();
    assert_eq!(issued["cell"], cell.as_str());
    let tenant_answer = dig(server.dns, &format!("{tenant}.cells.example.com."));
    assert!(!tenant_answer.is_empty(), "no DNS answer for {tenant}");
    if tenant_answer.len() == 1 && tenant_answer[0].ends_with('.') {
        // An out-of-zone cell: the tenant is a CNAME to the cell hostname.
        assert_eq!(
            tenant_answer[0].trim_end_matches('.'),
            cell,
            "DNS CNAME and token cell differ for {tenant}"
        );
    } else {
        let cell_answer = dig(server.dns, &format!("{cell}."));
        assert_eq!(
            tenant_answer, cell_answer,
            "{tenant}: DNS answers {tenant_answer:?} but the token names {cell} ({cell_answer:?})"
        );
    }
    cell
}

fn write_map(path: &Path, acme_cell: &str, version: &str) {
    let text = std::fs::read_to_string(common::example_map()).unwrap();
    let text = text
        .replace("acme = \"use1-a\"", &format!("acme = \"{acme_cell}\""))
        .replace(
            "version = \"example-1\"",
            &format!("version = \"{version}\""),
        );
    assert!(text.contains(&format!("acme = \"{acme_cell}\"")));
    // Moving one of five listed tenants is over the default reload gate
    // (10%); these tests move it on purpose.
    assert!(!text.contains("[safety]"));
    let text = format!("{text}\n[safety]\nmax_moved_fraction = 1.0\n");
    // Write then rename, as a control plane would: readers never see half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn start(map: &Path, dir: &Path) -> Server {
    let keys = dir.join("keys");
    if !keys.exists() {
        keygen(&keys, "EdDSA");
    }
    let api = api_keys_file(dir);
    Server::start(&[
        "--map",
        map.to_str().unwrap(),
        "--signing-keys",
        keys.to_str().unwrap(),
        "--api-keys",
        api.to_str().unwrap(),
    ])
}

#[test]
fn token_cell_matches_dns_for_every_tenant() {
    let dir = tempfile::tempdir().unwrap();
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
    let dir = tempfile::tempdir().unwrap();
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
    assert_eq!(mint(server.http.unwrap(), "acme")["map_version"], "v2");
}

/// Depends on hot reload (issue 4): the map is changed while serving and
/// SIGHUP sent; DNS and tokens must both move the tenant, together.
#[test]
fn token_cell_follows_reload() {
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("map.toml");
    write_map(&map, "use1-a", "v1");
    let server = start(&map, dir.path());
    assert_eq!(
        assert_token_agrees_with_dns(&server, "acme"),
        "use1-a.cells.example.com"
    );

    write_map(&map, "use1-b", "v2");
    common::unsafe_kill(server.pid(), "HUP");
    let moved = common::wait_until(Duration::from_secs(30), || {
        dig(server.dns, "acme.cells.example.com.") == vec!["192.0.2.20".to_owned()]
    });
    assert!(
        moved,
        "DNS did not move acme after the map changed and SIGHUP (hot reload, issue 4)"
    );
    // Once DNS has moved, every token names the new cell.
    assert_eq!(
        assert_token_agrees_with_dns(&server, "acme"),
        "use1-b.cells.example.com"
    );
    assert_eq!(mint(server.http.unwrap(), "acme")["map_version"], "v2");
}
