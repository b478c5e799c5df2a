//! Helpers of the SDK tests: cellns serving a two-cell map whose cells
//! live on 127.0.0.2 and 127.0.0.3, the example cells (examples/cell.rs)
//! running in-process on those addresses, and the example client
//! (examples/client.rs). The examples are compiled into this test binary,
//! so the tests exercise exactly the code the demo runs.

#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cellns_client::{Resolver, TokenClaims};

use crate::common::{self, Server};
use crate::token_support::{KEY, api_keys_file, keygen};

#[path = "../../examples/cell.rs"]
#[allow(dead_code)]
pub mod cell_example;
#[path = "../../examples/client.rs"]
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
        'a' => "127.0.0.2".parse().unwrap(),
        'b' => "127.0.0.3".parse().unwrap(),
        _ => panic!("no cell {c}"),
    }
}

/// The demo map with the tenant in cell `on`. TTL 1 s, so cells notice a
/// move quickly; the safety gate allows moving the only tenant (100%).
pub fn demo_map(on: char, version: u32) -> String {
    format!(
        "version = \"demo-{version}\"\n\
         [zone]\norigin = \"{ZONE}.\"\nttl = 1\nnameservers = [\"ns1.{ZONE}.\"]\n\
         hostmaster = \"hostmaster.{ZONE}.\"\n\
         [zone.glue]\n\"ns1.{ZONE}.\" = [\"127.0.0.1\"]\n\
         [cells.a]\nhostname = \"{A}.\"\nipv4 = [\"127.0.0.2\"]\nregion = \"demo\"\n\
         [cells.b]\nhostname = \"{B}.\"\nipv4 = [\"127.0.0.3\"]\nregion = \"demo\"\n\
         [tenants]\n{TENANT} = \"{on}\"\n\
         [safety]\nmax_moved_fraction = 1.0\n"
    )
}

/// cellns with the demo map, and cells a and b serving on one port.
pub struct Demo {
    /// The async runtime the cells (and the tests' clients) run on.
    pub rt: tokio::runtime::Runtime,
    /// The cellns process.
    pub server: Server,
    /// The port both cells serve on.
    pub port: u16,
    /// The map file.
    pub map: PathBuf,
    dir: tempfile::TempDir,
}

impl Demo {
    /// Starts cellns (tenant in cell a) and the two cells.
    pub fn start() -> Demo {
        let dir = tempfile::tempdir().unwrap();
        let map = dir.path().join("map.toml");
        std::fs::write(&map, demo_map('a', 1)).unwrap();
        let keys = dir.path().join("keys");
        keygen(&keys, "EdDSA");
        let api = api_keys_file(dir.path());
        let server = Server::start(&[
            "--map",
            map.to_str().unwrap(),
            "--signing-keys",
            keys.to_str().unwrap(),
            "--api-keys",
            api.to_str().unwrap(),
        ]);
        let http = server.http.expect("HTTP address");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let port = rt.block_on(async {
            let (la, lb) = bind_pair().await;
            let port = la.local_addr().unwrap().port();
            for (listener, host) in [(la, A), (lb, B)] {
                let args = cell_example::Args {
                    listen: listener.local_addr().unwrap(),
                    hostname: host.to_owned(),
                    zone: ZONE.to_owned(),
                    jwks: format!("http://{http}/.well-known/jwks.json"),
                    dns: server.dns,
                    issuer: "cellns".into(),
                    audience: "cells".into(),
                };
                let cell = Arc::new(cell_example::Cell::new(&args).await.unwrap());
                tokio::spawn(cell_example::run(listener, cell));
            }
            port
        });
        Demo {
            rt,
            server,
            port,
            map,
            dir,
        }
    }

    /// cellns's HTTP address.
    pub fn http(&self) -> SocketAddr {
        self.server.http.expect("HTTP address")
    }

    /// A resolver asking cellns.
    pub fn resolver(&self) -> Resolver {
        Resolver::new(self.server.dns)
    }

    /// The address of cell `c`'s HTTP server.
    pub fn cell_addr(&self, c: char) -> SocketAddr {
        SocketAddr::new(cell_ip(c), self.port)
    }

    /// The example client for the tenant, asking for tokens living `ttl` s.
    pub fn client(&self, ttl: u64) -> client_example::Client {
        let auth =
            client_example::AuthService::new(&format!("http://{}", self.http()), KEY).unwrap();
        client_example::Client::new(auth, self.resolver(), self.port, TENANT, "user-42", ttl)
    }

    /// Moves the tenant to cell `to` (map version `version`), as a control
    /// plane does: write a new file and rename it over the map. Returns
    /// once cellns's DNS answers with the new cell.
    pub fn move_tenant(&self, to: char, version: u32) {
        let tmp = self.dir.path().join("map.toml.tmp");
        std::fs::write(&tmp, demo_map(to, version)).unwrap();
        std::fs::rename(&tmp, &self.map).unwrap();
        let resolver = self.resolver();
        let want = vec![cell_ip(to)];
        let mut last = None;
        let moved = common::wait_until(Duration::from_secs(20), || {
            let got = self
                .rt
                .block_on(resolver.lookup(&format!("{TENANT}.{ZONE}")));
            let done = got.as_ref().is_ok_and(|l| l.addrs == want);
            last = Some(got);
            done
        });
        assert!(
            moved,
            "cellns did not answer {TENANT} with cell {to} within 20 s (last: {last:?}); logs:\n{}",
            self.server.logs.lock().unwrap().join("\n")
        );
    }

    /// A token for the tenant from cellns, straight from the token API.
    pub fn mint(&self) -> String {
        crate::token_support::mint(self.http(), TENANT)["token"]
            .as_str()
            .unwrap()
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
        let port = a.local_addr().unwrap().port();
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
