//! The command line and its environment variables. The commands and flags
//! are a contract (README, "Commands"): tools outside the repository use
//! them, so add freely and never rename. Every `serve` flag can also be set through the
//! environment variable named in its help, which is what containers and
//! systemd units use.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Default DNS listen address (unprivileged, loopback).
pub const DEFAULT_DNS_LISTEN: &str = "127.0.0.1:5353";
/// Default HTTP listen address (unprivileged, loopback).
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:8053";

/// cellns: routes tenants to their cells, by DNS and by signed tokens, from
/// one hot-reloaded map file.
#[derive(Debug, Parser)]
#[command(name = "cellns", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Log format.
    #[arg(long, env = "CELLNS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human, global = true)]
    pub log_format: LogFormat,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve DNS and the token/admin HTTP API from a map file.
    Serve(Box<ServeArgs>),
    /// Validate a map file: exit 0 when valid, 1 with every error when not.
    Check {
        /// The map file (.toml or .json).
        path: PathBuf,
    },
    /// Show which cell a tenant gets from a map, and why.
    Explain {
        /// The map file (.toml or .json).
        path: PathBuf,
        /// The tenant id.
        tenant: String,
    },
    /// Show what a map change moves; exit 1 if the safety gates reject it.
    Diff(DiffArgs),
    /// Write a new signing key (PEM) into a key directory.
    Keygen(KeygenArgs),
    /// Verify a token as a cell would, and print its claims.
    VerifyToken(VerifyTokenArgs),
    /// The secondaries' serials: `fleet wait --serial N` exits 0 once every
    /// `--notify` secondary of a server serves serial N or newer.
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// DNSSEC keys: make them, schedule them, print their DS records.
    Dnssec(DnssecArgs),
    /// Write a synthetic map (benchmarks, load tests): zone
    /// cells.example.test., tenants t000001..tN round-robin over C cells.
    #[command(hide = true)]
    GenMap(GenMapArgs),
}

/// `cellns fleet ...`.
#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Wait until every `--notify` secondary serves at least `--serial`
    /// (polling `GET /v1/fleet`); exit 0 then, 1 on timeout with who lags.
    Wait(FleetWaitArgs),
}

/// `cellns fleet wait`.
#[derive(Debug, Args)]
pub struct FleetWaitArgs {
    /// The serial every secondary must serve (or a newer one, RFC 1982).
    #[arg(long)]
    pub serial: u32,
    /// Seconds to wait before giving up (exit 1).
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
    /// Base URL of the server's HTTP API.
    #[arg(long, env = "CELLNS_URL", default_value = "http://127.0.0.1:8053")]
    pub url: String,
    /// API key with the read scope (sent as `Authorization: Bearer`).
    #[arg(long = "api-key", env = "CELLNS_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

/// `cellns gen-map` (hidden).
#[derive(Debug, Args)]
pub struct GenMapArgs {
    /// Number of listed tenants.
    #[arg(long, default_value_t = 1000)]
    pub tenants: usize,
    /// Number of cells (1..=4096, the most a valid map may have).
    #[arg(long, default_value_t = 10,
          value_parser = clap::value_parser!(u16).range(1..=crate::map::validate::MAX_CELLS as i64))]
    pub cells: u16,
    /// Write JSON instead of TOML.
    #[arg(long)]
    pub json: bool,
    /// Output file (written atomically); default stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Assign every Kth tenant to the next cell (1/K of tenants moved
    /// compared with the same map without it).
    #[arg(long, default_value_t = 0)]
    pub move_every: usize,
    /// The map's `version` field.
    #[arg(long = "map-version")]
    pub map_version: Option<String>,
    /// `[safety] allow_mass_change` reason.
    #[arg(long)]
    pub allow_mass_change: Option<String>,
}

/// `cellns serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Map file (.toml or .json), watched and hot-reloaded. Default: the
    /// example map embedded from zones/example.toml.
    #[arg(long, env = "CELLNS_MAP")]
    pub map: Option<PathBuf>,

    /// DNS listen address, UDP and TCP; repeat (or comma-separate in the
    /// environment) for several.
    #[arg(long = "dns-listen", env = "CELLNS_DNS_LISTEN", value_delimiter = ',',
          default_value = DEFAULT_DNS_LISTEN)]
    pub dns_listen: Vec<SocketAddr>,

    /// HTTP listen address of the token and admin API.
    #[arg(long = "http-listen", env = "CELLNS_HTTP_LISTEN", default_value = DEFAULT_HTTP_LISTEN)]
    pub http_listen: SocketAddr,

    /// Directory of PEM signing keys; the newest signs, all are published.
    /// Without it, an ephemeral development key is used (loopback only).
    #[arg(long = "signing-keys", env = "CELLNS_SIGNING_KEYS")]
    pub signing_keys: Option<PathBuf>,

    /// API key file: one caller a line, `NAME sha256:HEX`.
    #[arg(long = "api-keys", env = "CELLNS_API_KEYS")]
    pub api_keys: Option<PathBuf>,

    /// Address or prefix allowed to transfer the zone (AXFR); repeatable.
    #[arg(long = "axfr-allow", env = "CELLNS_AXFR_ALLOW", value_delimiter = ',')]
    pub axfr_allow: Vec<String>,

    /// TSIG key file required for zone transfers: `NAME hmac-sha256 BASE64SECRET`.
    #[arg(long = "tsig-key", env = "CELLNS_TSIG_KEY")]
    pub tsig_key: Option<PathBuf>,

    /// Secondary to send NOTIFY to after each reload; repeatable.
    #[arg(long = "notify", env = "CELLNS_NOTIFY", value_delimiter = ',')]
    pub notify: Vec<SocketAddr>,

    /// Zone versions whose differences are kept for IXFR (RFC 1995); a
    /// secondary further behind gets the whole zone. 0 turns IXFR
    /// differences off (every IXFR gets the whole zone).
    #[arg(
        long = "ixfr-journal-versions",
        env = "CELLNS_IXFR_JOURNAL_VERSIONS",
        default_value_t = crate::dns::xfr::journal::DEFAULT_VERSIONS
    )]
    pub ixfr_journal_versions: usize,

    /// Bytes the IXFR journal may hold, all versions together; a single
    /// change larger than this is not journaled (secondaries then transfer
    /// the whole zone once). Default 64 MiB.
    #[arg(
        long = "ixfr-journal-bytes",
        env = "CELLNS_IXFR_JOURNAL_BYTES",
        default_value_t = crate::dns::xfr::journal::DEFAULT_BYTES,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    pub ixfr_journal_bytes: usize,

    /// `iss` claim of issued tokens.
    #[arg(long, env = "CELLNS_TOKEN_ISSUER", default_value = "cellns")]
    pub issuer: String,

    /// `aud` claim of issued tokens.
    #[arg(long, env = "CELLNS_TOKEN_AUDIENCE", default_value = "cells")]
    pub audience: String,

    /// Largest `ttl_seconds` a token may be issued with.
    #[arg(
        long = "token-max-ttl",
        env = "CELLNS_TOKEN_MAX_TTL",
        default_value_t = 3600
    )]
    pub token_max_ttl: u64,

    /// Token requests per second allowed per caller (token bucket refill);
    /// 0 turns rate limiting off.
    #[arg(long = "rate-limit", env = "CELLNS_RATE_LIMIT", default_value_t = 1000)]
    pub rate_limit: u32,

    /// Token bucket size per caller (burst).
    #[arg(long = "rate-burst", env = "CELLNS_RATE_BURST", default_value_t = 2000)]
    pub rate_burst: u32,

    /// Allow the ephemeral development signing key on a non-loopback HTTP
    /// address. Tokens signed with it die with the process.
    #[arg(long = "allow-dev-key", env = "CELLNS_ALLOW_DEV_KEY")]
    pub allow_dev_key: bool,

    /// TLS certificate chain (PEM) for the HTTP API; enables HTTPS.
    #[arg(long = "tls-cert", env = "CELLNS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM) for the HTTP API.
    #[arg(long = "tls-key", env = "CELLNS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// CA bundle (PEM): require and verify client certificates (mTLS).
    #[arg(long = "client-ca", env = "CELLNS_CLIENT_CA", requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,

    /// Quiet period after a map file change before it is reloaded, in ms.
    #[arg(
        long = "reload-debounce-ms",
        env = "CELLNS_RELOAD_DEBOUNCE_MS",
        default_value_t = 100
    )]
    pub reload_debounce_ms: u64,

    /// Largest map file read, in bytes; a larger one is refused (the last
    /// good map keeps serving). The default, 256 MiB, is ten times a
    /// 1,000,000-tenant map.
    #[arg(
        long = "map-max-bytes",
        env = "CELLNS_MAP_MAX_BYTES",
        default_value_t = crate::live::reload::DEFAULT_MAX_BYTES,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub map_max_bytes: u64,

    /// Interval of the periodic check of the map file (device, inode, size,
    /// modification time) and of its directory watches, in ms: it catches
    /// any change the watches missed.
    #[arg(
        long = "map-check-interval-ms",
        env = "CELLNS_MAP_CHECK_INTERVAL_MS",
        default_value_t = 2000,
        value_parser = clap::value_parser!(u64).range(50..=3_600_000)
    )]
    pub map_check_interval_ms: u64,

    /// Directory where state that must survive restarts is kept (the last
    /// SOA serial, saved before each zone version is served; operator
    /// overrides) and the audit log is written. Without it, clock serials
    /// still never go backwards (see the README, "How the serial is
    /// chosen"), overrides live in memory and audit lines go to the log.
    #[arg(long = "state-dir", env = "CELLNS_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// On SIGTERM or SIGINT, how long to report unready (`/readyz` 503)
    /// while still serving, before closing the listeners, in ms: time for
    /// load balancers and health checks to stop sending.
    #[arg(
        long = "shutdown-unready-ms",
        env = "CELLNS_SHUTDOWN_UNREADY_MS",
        default_value_t = 5000
    )]
    pub shutdown_unready_ms: u64,

    /// After the listeners close, how long queries and zone transfers
    /// already under way (and HTTP requests in flight) may take to finish,
    /// in ms; what is still open then is cut.
    #[arg(
        long = "shutdown-grace-ms",
        env = "CELLNS_SHUTDOWN_GRACE_MS",
        default_value_t = 10000
    )]
    pub shutdown_grace_ms: u64,

    /// UDP worker threads of the fast path (one SO_REUSEPORT socket each);
    /// 0 = one per CPU.
    #[arg(long = "udp-workers", env = "CELLNS_UDP_WORKERS", default_value_t = 0)]
    pub udp_workers: usize,

    /// Address or prefix allowed to read `/metrics` (repeatable); without
    /// it, any address may. `/healthz` and `/readyz` stay open.
    #[arg(
        long = "metrics-allow",
        env = "CELLNS_METRICS_ALLOW",
        value_delimiter = ','
    )]
    pub metrics_allow: Vec<String>,

    /// File of `sha256:HEX` lines: `/metrics` needs `Authorization: Bearer
    /// KEY` with a key whose SHA-256 is listed.
    #[arg(long = "metrics-key-file", env = "CELLNS_METRICS_KEY_FILE")]
    pub metrics_key_file: Option<PathBuf>,

    /// Response rate limiting: UDP responses per second per client network
    /// (/24 IPv4, /56 IPv6) and response kind (positive, NODATA, NXDOMAIN,
    /// error); 0 turns it off. TCP is never limited.
    #[arg(long = "rrl-rate", env = "CELLNS_RRL_RATE", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=i64::from(crate::dns::rrl::MAX_RATE)))]
    pub rrl_rate: u32,

    /// Every Nth rate-limited response is sent truncated (TC), which sends a
    /// real client to TCP; the others are dropped. 0: drop them all.
    #[arg(long = "rrl-slip", env = "CELLNS_RRL_SLIP", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(0..=i64::from(crate::dns::rrl::MAX_SLIP)))]
    pub rrl_slip: u32,

    /// Open DNS-over-TCP connections per listen address; when all are taken
    /// the one idle the longest is closed for a newcomer.
    #[arg(long = "tcp-max-connections", env = "CELLNS_TCP_MAX_CONNECTIONS",
          default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub tcp_max_connections: u32,

    /// Open DNS-over-TCP connections per client address (/32, /128).
    #[arg(long = "tcp-max-connections-per-source", env = "CELLNS_TCP_MAX_CONNECTIONS_PER_SOURCE",
          default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub tcp_max_connections_per_source: u32,

    /// How long a DNS-over-TCP connection may wait for its next complete
    /// query after its last response, in ms.
    #[arg(long = "tcp-idle-timeout-ms", env = "CELLNS_TCP_IDLE_TIMEOUT_MS",
          default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub tcp_idle_timeout_ms: u64,

    /// How long a DNS-over-TCP connection may live, in ms (it is closed at
    /// its next wait for a query; a zone transfer is not cut).
    #[arg(long = "tcp-max-lifetime-ms", env = "CELLNS_TCP_MAX_LIFETIME_MS",
          default_value_t = 120_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub tcp_max_lifetime_ms: u64,

    /// Open HTTP connections; when all are taken the one idle the longest
    /// is closed for a newcomer.
    #[arg(long = "http-max-connections", env = "CELLNS_HTTP_MAX_CONNECTIONS",
          default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    pub http_max_connections: u32,

    /// Open HTTP connections per client address.
    #[arg(long = "http-max-connections-per-source", env = "CELLNS_HTTP_MAX_CONNECTIONS_PER_SOURCE",
          default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub http_max_connections_per_source: u32,

    /// How long a client may take to send a request's headers (and the TLS
    /// handshake), in ms.
    #[arg(long = "http-header-timeout-ms", env = "CELLNS_HTTP_HEADER_TIMEOUT_MS",
          default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub http_header_timeout_ms: u64,

    /// How long a client may take to send a request's body, in ms.
    #[arg(long = "http-body-timeout-ms", env = "CELLNS_HTTP_BODY_TIMEOUT_MS",
          default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub http_body_timeout_ms: u64,

    /// How long a kept-alive HTTP connection may wait for its next request,
    /// in ms.
    #[arg(long = "http-idle-timeout-ms", env = "CELLNS_HTTP_IDLE_TIMEOUT_MS",
          default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub http_idle_timeout_ms: u64,

    /// Largest request head (request line and headers), in bytes; more is
    /// answered 431.
    #[arg(long = "http-max-header-bytes", env = "CELLNS_HTTP_MAX_HEADER_BYTES",
          default_value_t = 16_384, value_parser = clap::value_parser!(u32).range(8192..=1_048_576))]
    pub http_max_header_bytes: u32,
    /// DNSSEC key directory (`cellns dnssec keygen --out DIR`): sign
    /// answers online, with compact denial of existence. Rescanned each
    /// second; the key timing drives rollover (docs/dnssec.md). Cannot be
    /// combined with --axfr-allow or --notify.
    #[arg(long = "dnssec-keys", env = "CELLNS_DNSSEC_KEYS")]
    pub dnssec_keys: Option<PathBuf>,

    /// Most entries in the DNSSEC signature cache.
    #[arg(long = "dnssec-cache-entries", env = "CELLNS_DNSSEC_CACHE_ENTRIES",
          default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub dnssec_cache_entries: u64,

    /// Most memory of the DNSSEC signature cache, in MiB.
    #[arg(long = "dnssec-cache-mib", env = "CELLNS_DNSSEC_CACHE_MIB",
          default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub dnssec_cache_mib: u64,
}

/// `cellns diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The map in force.
    pub old: PathBuf,
    /// The proposed map.
    pub new: PathBuf,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `cellns keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Key directory (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Signature algorithm.
    #[arg(long, value_enum, default_value_t = KeyAlg::EdDSA)]
    pub alg: KeyAlg,
}

/// Token signature algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyAlg {
    /// Ed25519.
    #[value(name = "EdDSA", alias = "eddsa", alias = "ed25519")]
    EdDSA,
    /// ECDSA P-256 with SHA-256.
    #[value(name = "ES256", alias = "es256")]
    ES256,
}

/// `cellns verify-token`.
#[derive(Debug, Args)]
pub struct VerifyTokenArgs {
    /// JWKS URL to fetch the public keys from.
    #[arg(
        long,
        env = "CELLNS_JWKS_URL",
        default_value = "http://127.0.0.1:8053/.well-known/jwks.json"
    )]
    pub jwks: String,
    /// The verifying cell's hostname; the token's `cell` claim must equal it.
    #[arg(long)]
    pub cell: String,
    /// Expected `iss`.
    #[arg(long, env = "CELLNS_TOKEN_ISSUER", default_value = "cellns")]
    pub issuer: String,
    /// Expected `aud`.
    #[arg(long, env = "CELLNS_TOKEN_AUDIENCE", default_value = "cells")]
    pub audience: String,
    /// The token (JWT compact form).
    pub token: String,
}

/// `cellns dnssec`.
#[derive(Debug, Args)]
pub struct DnssecArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: DnssecCommand,
}

/// The `cellns dnssec` subcommands.
#[derive(Debug, Subcommand)]
pub enum DnssecCommand {
    /// Write a new DNSSEC key (PKCS#8 PEM with its role and timing, mode
    /// 0600) into a key directory.
    Keygen(DnssecKeygenArgs),
    /// Print the DS records (SHA-256) of the keys that should have one at
    /// the parent, in zone-file format: for the parent, or a trust anchor.
    Ds(DsArgs),
    /// Change the timing of a key (to schedule a roll).
    Settime(SettimeArgs),
}

/// DNSSEC algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DnssecAlg {
    /// ECDSA P-256 with SHA-256 (algorithm 13).
    #[value(name = "ecdsap256sha256", alias = "13")]
    EcdsaP256Sha256,
    /// Ed25519 (algorithm 15).
    #[value(name = "ed25519", alias = "15")]
    Ed25519,
}

/// DNSSEC key roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DnssecRole {
    /// Combined signing key: signs everything; DS at the parent.
    Csk,
    /// Key signing key: signs DNSKEY, CDS, CDNSKEY; DS at the parent.
    Ksk,
    /// Zone signing key: signs the rest.
    Zsk,
}

/// The timing flags of `keygen` and `settime`. A TIME is `now`,
/// `now+DURATION` or `+DURATION` (90s, 30m, 12h, 7d, 2w), Unix seconds, or
/// RFC 3339 (2026-03-01T10:00:00Z); `none` unsets it (never).
#[derive(Debug, Args, Default)]
pub struct TimingArgs {
    /// When the DNSKEY enters the zone (keygen default: now).
    #[arg(long, value_name = "TIME")]
    pub publish: Option<String>,
    /// When the key starts signing (keygen default: the publish time).
    #[arg(long, value_name = "TIME")]
    pub activate: Option<String>,
    /// When it stops signing; its DNSKEY stays until --delete (default: never).
    #[arg(long, value_name = "TIME")]
    pub inactive: Option<String>,
    /// When its DNSKEY leaves the zone (default: never).
    #[arg(long, value_name = "TIME")]
    pub delete: Option<String>,
}

/// `cellns dnssec keygen`.
#[derive(Debug, Args)]
pub struct DnssecKeygenArgs {
    /// Key directory (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Signing algorithm.
    #[arg(long, value_enum, default_value_t = DnssecAlg::EcdsaP256Sha256)]
    pub algorithm: DnssecAlg,
    /// What the key signs.
    #[arg(long, value_enum, default_value_t = DnssecRole::Csk)]
    pub role: DnssecRole,
    /// Timing.
    #[command(flatten)]
    pub timing: TimingArgs,
}

/// `cellns dnssec ds`.
#[derive(Debug, Args)]
pub struct DsArgs {
    /// Key directory.
    pub dir: PathBuf,
    /// The zone (the map's origin), e.g. cells.example.com.
    pub origin: String,
    /// The keys that should have a DS at this TIME instead of now.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
}

/// `cellns dnssec settime`.
#[derive(Debug, Args)]
pub struct SettimeArgs {
    /// Key directory.
    pub dir: PathBuf,
    /// The key's tag (as `keygen` and `/v1/dnssec` show it).
    pub tag: u16,
    /// New timing; flags left out keep their value.
    #[command(flatten)]
    pub timing: TimingArgs,
}
