//! A toy client of a cell-based SaaS, following the protocol of
//! docs/sdk.md with `cellns_client`:
//!
//! 1. log in through the auth service (here a stand-in, [`AuthService`],
//!    that asks cellns for a token with its API key);
//! 2. read the `cell` claim without verifying the token, resolve that
//!    hostname through DNS, and send requests to the cell with the token;
//! 3. when a cell answers with the wrong-cell signal (the tenant moved),
//!    get a new token and connect to the cell it names; refresh before the
//!    token expires; never fetch tokens faster than the backoff allows.
//!
//! ```sh
//! DEMO_API_KEY=... cargo run --example client -- --cellns http://127.0.0.1:8053 \
//!     --dns 127.0.0.1:5353 --cell-port 8443 --tenant acme
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cellns_client::{Action, Backoff, CurrentToken, Refresher, Resolver, WrongCell};
use clap::Parser;

/// Command line of the toy client.
#[derive(Debug, Parser)]
pub struct Args {
    /// Where the stand-in auth service reaches cellns's token API.
    #[arg(long, default_value = "http://127.0.0.1:8053")]
    pub cellns: String,
    /// The auth service's cellns API key.
    #[arg(long, env = "DEMO_API_KEY", hide_env_values = true)]
    pub api_key: String,
    /// The tenant to act for.
    #[arg(long, default_value = "acme")]
    pub tenant: String,
    /// The user to act as (the token's subject).
    #[arg(long, default_value = "user-42")]
    pub user: String,
    /// Token lifetime to ask for, seconds.
    #[arg(long, default_value_t = 300)]
    pub ttl: u64,
    /// The DNS server to resolve cell hostnames with (cellns, or a
    /// recursive resolver the zone is delegated to).
    #[arg(long)]
    pub dns: SocketAddr,
    /// The port every cell serves on.
    #[arg(long)]
    pub cell_port: u16,
    /// Pause between two requests, milliseconds.
    #[arg(long, default_value_t = 500)]
    pub interval_ms: u64,
}

/// Stand-in for the SaaS's auth service. A real one authenticates the
/// user, then asks cellns for a token for the user's tenant (`POST
/// /v1/tokens` with its API key) and hands the token to the client.
pub struct AuthService {
    http: reqwest::Client,
    url: String,
    api_key: String,
}

impl AuthService {
    /// An auth service calling the cellns HTTP API at `cellns`.
    pub fn new(cellns: &str, api_key: &str) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(5))
                .build()?,
            url: format!("{}/v1/tokens", cellns.trim_end_matches('/')),
            api_key: api_key.to_owned(),
        })
    }

    /// A token for `user` of `tenant`, living `ttl` seconds.
    pub async fn login(&self, tenant: &str, user: &str, ttl: u64) -> anyhow::Result<String> {
        let resp = self
            .http
            .post(&self.url)
            .bearer_auth(&self.api_key)
            .json(&serde_json::json!({"tenant": tenant, "subject": user, "ttl_seconds": ttl}))
            .send()
            .await?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await?;
        match body["token"].as_str() {
            Some(t) if status.is_success() => Ok(t.to_owned()),
            _ => anyhow::bail!("cellns answered {status}: {}", body["error"]),
        }
    }
}

/// What one [`Client::step`] did.
#[derive(Debug)]
pub enum Event {
    /// Got a new token naming `cell`.
    Fetched {
        /// The `cell` claim.
        cell: String,
        /// The map version the cell came from.
        map_version: String,
        /// The token's lifetime.
        lifetime: Duration,
    },
    /// The auth service gave no (usable) token.
    FetchFailed(String),
    /// A cell served the request.
    Served {
        /// The cell that says it served it.
        cell: String,
        /// The map version of the token it accepted.
        map_version: String,
    },
    /// A cell answered with the wrong-cell signal.
    WrongCell(WrongCell),
    /// A cell rejected the token (401) or refused otherwise.
    Rejected {
        /// The cell.
        cell: String,
        /// The HTTP status.
        status: u16,
        /// The body, for people.
        body: String,
    },
    /// The cell could not be resolved or reached.
    Unreachable {
        /// The cell.
        cell: String,
        /// Why.
        error: String,
    },
    /// Waited for the backoff.
    Slept(Duration),
}

/// A connection to one cell (reqwest pools the TCP connections).
struct Conn {
    cell: String,
    http: reqwest::Client,
    url: String,
    /// Resolve again after this (the DNS answer's TTL).
    until: Instant,
}

/// The client: a [`Refresher`] driven by real I/O.
pub struct Client {
    auth: AuthService,
    dns: Resolver,
    cell_port: u16,
    tenant: String,
    user: String,
    ttl: u64,
    refresher: Refresher,
    conn: Option<Conn>,
}

impl Client {
    /// A client logging in through `auth`, resolving cells with `dns`.
    pub fn new(
        auth: AuthService,
        dns: Resolver,
        cell_port: u16,
        tenant: &str,
        user: &str,
        ttl: u64,
    ) -> Self {
        Self {
            auth,
            dns,
            cell_port,
            tenant: tenant.to_owned(),
            user: user.to_owned(),
            ttl,
            refresher: Refresher::new(Backoff::default()),
            conn: None,
        }
    }

    /// The token in use.
    pub fn current(&self) -> Option<&CurrentToken> {
        self.refresher.current()
    }

    /// Does what the refresh rule says is next: fetch a token, wait, or
    /// send one request to the cell the token names.
    pub async fn step(&mut self) -> Event {
        let (token, cell) = match self.refresher.next(Instant::now()) {
            Action::Fetch => return self.fetch().await,
            Action::Sleep(until) => {
                let d = until.saturating_duration_since(Instant::now());
                tokio::time::sleep(d).await;
                return Event::Slept(d);
            }
            Action::Send(c) => (c.token.clone(), c.claims.cell.clone()),
        };
        let resp = match self.connect(&cell).await {
            Ok(conn) => conn.http.get(&conn.url).bearer_auth(&token).send().await,
            Err(error) => return self.unreachable(cell, error),
        };
        let resp = match resp {
            Ok(r) => r,
            Err(e) => return self.unreachable(cell, e.to_string()),
        };
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap_or_default();
        if status == 200 {
            self.refresher.served(Instant::now());
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            return Event::Served {
                cell: v["cell"].as_str().unwrap_or_default().to_owned(),
                map_version: v["map_version"].as_str().unwrap_or_default().to_owned(),
            };
        }
        if let Some(signal) = WrongCell::from_http(status, &body) {
            self.refresher.refused(Instant::now());
            return Event::WrongCell(signal);
        }
        if status == 401 {
            self.refresher.refused(Instant::now());
        }
        Event::Rejected {
            cell,
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    async fn fetch(&mut self) -> Event {
        let now = Instant::now();
        match self.auth.login(&self.tenant, &self.user, self.ttl).await {
            Ok(token) => match self.refresher.fetched(now, token) {
                Ok(c) => Event::Fetched {
                    cell: c.claims.cell.clone(),
                    map_version: c.claims.map_version.clone(),
                    lifetime: c.claims.lifetime(),
                },
                Err(e) => Event::FetchFailed(e.to_string()),
            },
            Err(e) => {
                self.refresher.fetch_failed(now);
                Event::FetchFailed(e.to_string())
            }
        }
    }

    /// The connection to `cell`, resolving its hostname when there is none
    /// yet or the DNS answer has expired.
    async fn connect(&mut self, cell: &str) -> Result<&Conn, String> {
        let fresh = self
            .conn
            .as_ref()
            .is_some_and(|c| c.cell == cell && Instant::now() < c.until);
        if !fresh {
            let found = self.dns.lookup(cell).await.map_err(|e| e.to_string())?;
            let addrs: Vec<SocketAddr> = found
                .addrs
                .iter()
                .map(|ip| SocketAddr::new(*ip, self.cell_port))
                .collect();
            // The URL names the cell (the Host header, and the TLS name
            // with https); the addresses come from our own DNS lookup.
            let http = reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(5))
                .resolve_to_addrs(cell, &addrs)
                .build()
                .map_err(|e| e.to_string())?;
            self.conn = Some(Conn {
                cell: cell.to_owned(),
                http,
                url: format!("http://{cell}:{}/v1/whoami", self.cell_port),
                until: Instant::now() + found.ttl,
            });
        }
        self.conn.as_ref().ok_or_else(|| "no connection".to_owned())
    }

    fn unreachable(&mut self, cell: String, error: String) -> Event {
        self.conn = None;
        self.refresher.refused(Instant::now());
        Event::Unreachable { cell, error }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let auth = AuthService::new(&args.cellns, &args.api_key)?;
    let mut client = Client::new(
        auth,
        Resolver::new(args.dns),
        args.cell_port,
        &args.tenant,
        &args.user,
        args.ttl,
    );
    let start = Instant::now();
    loop {
        let event = client.step().await;
        let t = start.elapsed().as_secs_f64();
        match &event {
            Event::Fetched {
                cell,
                map_version,
                lifetime,
            } => println!(
                "[{t:5.1}s] token    for cell {cell} (map {map_version}, valid {} s)",
                lifetime.as_secs()
            ),
            Event::FetchFailed(e) => println!("[{t:5.1}s] no token: {e}"),
            Event::Served { cell, map_version } => {
                println!(
                    "[{t:5.1}s] served   by {cell} (tenant {}, map {map_version})",
                    args.tenant
                );
                tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
            }
            Event::WrongCell(w) => println!(
                "[{t:5.1}s] refused  by {}: wrong_cell ({}) -> new token",
                w.expected, w.message
            ),
            Event::Rejected { cell, status, body } => {
                println!("[{t:5.1}s] refused  by {cell}: HTTP {status} {body}");
                tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
            }
            Event::Unreachable { cell, error } => {
                println!("[{t:5.1}s] cannot reach {cell}: {error}")
            }
            Event::Slept(d) => println!("[{t:5.1}s] backed off {} ms", d.as_millis()),
        }
    }
}
