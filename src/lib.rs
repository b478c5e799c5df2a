//! cellns: the routing layer of a cell-based architecture.
//!
//! A SaaS runs many isolated copies of its stack (cells); every tenant lives
//! in one. cellns answers `<tenant>.<zone>` in DNS with the endpoints of the
//! tenant's cell, and issues signed tokens whose `cell` claim names it. Both
//! read the same effective [`live::View`], so they always agree.
//!
//! # Layout
//!
//! Data flows one way:
//!
//! ```text
//! map file ─▶ map (parse, validate, compile) ─▶ live (view + conditions, serial, swap) ─┬─▶ dns   (answers)
//!                    health (probers) ──verdicts──▶ │                                  ├─▶ token (JWTs)
//!                    http (overrides) ──────────────┘                                  └─▶ http  (views)
//! ```
//!
//! - [`cli`]: the command line, the one-shot commands (`check`, `explain`,
//!   `diff`, ...) and the `serve` wiring, the only reader of the flags.
//! - [`map`]: the map file schema, validation, compilation to a pure-data
//!   [`map::Snapshot`], diff.
//! - [`live`]: what queries read: the effective view (map, operator
//!   overrides, health), its atomic swap, SOA serials, reloading the map
//!   file, the override file and the audit log.
//! - [`health`]: probers of the cells' endpoints whose verdicts feed the
//!   effective view.
//! - [`route`]: tenant → cell decisions over an effective view.
//! - [`dns`]: answers prepared per zone version, the fast UDP path, the
//!   general path, TCP, zone transfers, NOTIFY.
//! - [`token`]: JWT issue, signing keys, JWKS.
//! - [`http`]: the HTTP API: tokens, JWKS, probes, `/metrics` and the
//!   admin views; callers and rate limits; TLS; a route table in one place.
//! - [`metrics`]: metric names, the recorder, the DNS counters.
//! - `slots`: connection slots (in all, per source, the longest idle
//!   evicted when full) shared by DNS over TCP and HTTP.
//! - [`telemetry`]: logging set-up for the binary.
//!
//! What SDKs and cells link is the workspace crate `cellns-client`
//! (`crates/cellns-client`): token claims, the wrong-cell signal, the
//! refresh rule, a DNS helper and the token `Verifier`, without any of the
//! server's dependencies. The server uses it too (the hostname canonical
//! form, `cellns verify-token`).

#![warn(missing_docs, unreachable_pub)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod cli;
pub mod dns;
pub mod health;
pub mod http;
mod keydir;
pub mod live;
pub mod map;
pub mod metrics;
pub mod route;
mod slots;
pub mod telemetry;
pub mod token;
