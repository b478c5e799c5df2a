//! The SDK demo set-up: cellns serving a two-cell map whose cells live on
//! 127.0.0.2 and 127.0.0.3, the example cells (examples/cell.rs) running
//! in-process on those addresses, and the example client
//! (examples/client.rs). The examples are compiled into the test binary, so
//! the tests exercise exactly the code the demo runs.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::{Resolver, TokenClaims};
use super::http::{KEY, TokenServer};
use super::map::{Cell, Map};
use super::{RELOAD, replace_file, wait_until};

#[path = "../../../examples/cell.rs"]
#[allow(dead_code)]
pub mod cell_example;
#[path = "../../../examples/client.rs"]
#[allow(dead_code)]
pub mod client_example;

/// The zone of the demo map.
pub const ZONE: &str = "cells.demo.test";
/// Cell a's hostname.
pub const A: &str = "a.cells.demo.test";
/// Cell b's hostname.
pub const B: &str = "b.cells.demo.test";
/// The tenant.
pub const TENANT: &str = "acme";

/// The loopback address of cell `c` (`'a'` or `'b'`).
pub fn cell_ip(c: char) -> IpAddr {
    match c {
        'a' => IpAddr::from([127, 0, 0, 2]),
        'b' => IpAddr::from([127, 0, 0, 3]),
        _ => panic!("no cell {c}"),
    }
}

/// The demo map with the tenant in cell `on`. TTL 1 s, so cells notice a
/// move quickly; the safety gate allows moving the only tenant (100%).
pub fn demo_map(on: char, version: u32) -> String {
    let cell = |host: &str, ip: IpAddr| {
        Cell::new(&format!("{host}."))
            .ipv4([ip])
            .set("region", "demo")
    };
    Map::new(&format!("{ZONE}."), &format!("demo-{version}"))
        .set("zone.ttl", 1)
        .glue(&format!("ns1.{ZONE}."), &["127.0.0.1"])
        .cell("a", cell(A, cell_ip('a')))
        .cell("b", cell(B, cell_ip('b')))
        .tenant(TENANT, &on.to_string())
        .no_gate()
        .toml()
}

/// cellns with the demo map, and cells a and b serving on one port.
pub struct Demo {
    /// The async runtime the cells (and the tests' clients) run on.
    pub rt: tokio::runtime::Runtime,
    /// cellns, with keys and the test callers.
    pub cellns: TokenServer,
    /// The port both cells serve on.
    pub port: u16,
    /// The map file.
    pub map: PathBuf,
    _map_dir: tempfile::TempDir,
}

impl Demo {
    /// Starts cellns (tenant in cell a) and the two cells.
    pub fn start() -> Demo {
        let map_dir = tempfile::tempdir().expect("tempdir");
        let map = map_dir.path().join("map.toml");
        std::fs::write(&map, demo_map('a', 1)).expect("write map");
        let cellns = TokenServer::start(&["--map", map.to_str().expect("utf-8 path")]);
        let (http, dns) = (cellns.http(), cellns.dns());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let port = rt.block_on(async {
            let (la, lb) = bind_pair().await;
            let port = la.local_addr().expect("address").port();
            for (listener, host) in [(la, A), (lb, B)] {
                let args = cell_example::Args {
                    listen: listener.local_addr().expect("address"),
                    hostname: host.to_owned(),
                    zone: ZONE.to_owned(),
                    jwks: format!("http://{http}/.well-known/jwks.json"),
                    dns,
                    issuer: "cellns".into(),
                    audience: "cells".into(),
                };
                let cell = Arc::new(cell_example::Cell::new(&args).await.expect("a cell"));
                tokio::spawn(cell_example::run(listener, cell));
            }
            port
        });
        Demo {
            rt,
            cellns,
            port,
            map,
            _map_dir: map_dir,
        }
    }

    /// cellns's HTTP address.
    pub fn http(&self) -> SocketAddr {
        self.cellns.http()
    }

    /// A resolver asking cellns.
    pub fn resolver(&self) -> Resolver {
        Resolver::new(self.cellns.dns())
    }

    /// The address of cell `c`'s HTTP server.
    pub fn cell_addr(&self, c: char) -> SocketAddr {
        SocketAddr::new(cell_ip(c), self.port)
    }

    /// The example client for the tenant, asking for tokens living `ttl` s.
    pub fn client(&self, ttl: u64) -> client_example::Client {
        let auth = client_example::AuthService::new(&format!("http://{}", self.http()), KEY)
            .expect("the auth service");
        client_example::Client::new(auth, self.resolver(), self.port, TENANT, "user-42", ttl)
    }

    /// Moves the tenant to cell `to` (map version `version`), as a control
    /// plane does: write a new file and rename it over the map. Returns
    /// once cellns's DNS answers with the new cell.
    pub fn move_tenant(&self, to: char, version: u32) {
        replace_file(&self.map, &demo_map(to, version));
        let resolver = self.resolver();
        let want = vec![cell_ip(to)];
        let mut last = None;
        let moved = wait_until(RELOAD, || {
            let got = self
                .rt
                .block_on(resolver.lookup(&format!("{TENANT}.{ZONE}")));
            let done = got.as_ref().is_ok_and(|l| l.addrs == want);
            last = Some(got);
            done
        });
        assert!(
            moved,
            "cellns did not answer {TENANT} with cell {to} within {RELOAD:?} (last: {last:?}); logs:\n{}",
            self.cellns.server.logs().text()
        );
    }

    /// A token for the tenant from cellns, straight from the token API.
    pub fn mint(&self) -> String {
        super::http::mint(self.http(), TENANT)["token"]
            .as_str()
            .expect("a token")
            .to_owned()
    }
}
/// Two listeners with the same port, on 127.0.0.2 and 127.0.0.3 (the port
/// is picked by the OS for the first; retried if taken on the second).
async fn bind_pair() -> (tokio::net::TcpListener, tokio::net::TcpListener) {
    let mut last = None;
    for _ in 0..20 {
        let a = tokio::net::TcpListener::bind((cell_ip('a'), 0))
            .await
            .expect("bind 127.0.0.2 (all of 127.0.0.0/8 is on lo on Linux)");
        let port = a.local_addr().expect("address").port();
        match tokio::net::TcpListener::bind((cell_ip('b'), port)).await {
            Ok(b) => return (a, b),
            Err(e) => last = Some(e),
        }
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3: {last:?}");
}

/// Asserts that the DNS answer for the tenant and the token's `cell` claim
/// agree (same endpoint), and that both are cell `c`.
pub async fn assert_dns_agrees(resolver: &Resolver, claims: &TokenClaims, c: char) {
    let tenant = resolver
        .lookup(&format!("{}.{ZONE}", claims.tenant))
        .await
        .expect("tenant lookup");
    let cell = resolver.lookup(&claims.cell).await.expect("cell lookup");
    assert!(
        tenant.same_endpoint(&cell),
        "DNS answers {tenant:?} for the tenant, the token names {} ({cell:?})",
        claims.cell
    );
    assert_eq!(tenant.addrs, vec![cell_ip(c)], "tenant answer");
    assert_eq!(claims.cell, format!("{c}.{ZONE}"), "token's cell claim");
}

/// Steps `client` until `done` holds for an event, at most `within`;
/// returns every event seen.
pub async fn step_until(
    client: &mut client_example::Client,
    within: Duration,
    mut done: impl FnMut(&client_example::Event) -> bool,
) -> Vec<client_example::Event> {
    let deadline = Instant::now() + within;
    let mut events = vec![];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(event) = tokio::time::timeout(left, client.step()).await else {
            panic!("not done within {within:?}; events: {events:#?}");
        };
        let stop = done(&event);
        events.push(event);
        if stop {
            return events;
        }
        // Pace the requests a little, as a real client would.
        if matches!(events.last(), Some(client_example::Event::Served { .. })) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
