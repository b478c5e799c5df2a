//! cellns: the routing layer of a cell-based architecture.
//!
//! A SaaS runs many isolated copies of its stack (cells); every tenant lives
//! in one. cellns answers `<tenant>.<zone>` in DNS with the endpoints of the
//! tenant's cell, and issues signed tokens whose `cell` claim names it. Both
//! read the same immutable [`map::Snapshot`], so they always agree.
//!
//! # Layout
//!
//! ```text
//! map file ─▶ map (parse, validate, compile) ─▶ reload (swap) ─▶ Snapshot ─┬─▶ dns   (answers)
//!                                                                          └─▶ token (JWTs)
//! ```
//!
//! - [`config`]: the command line and environment.
//! - [`map`]: the map file schema, validation, compilation, diff.
//! - [`route`]: tenant → cell decisions over a snapshot.
//! - [`reload`]: the live snapshot, file watching, last-known-good, gates.
//! - [`dns`]: DNS request handling and answer building.
//! - [`token`]: JWT issue, signing keys, JWKS.
//! - [`http`]: the token and admin HTTP API, metrics endpoint.
//! - [`admin`]: health, readiness, metrics and map views of the HTTP API.
//! - [`cli`]: the one-shot commands (`check`, `explain`, `diff`, ...).
//! - [`serve`]: wires everything together for `cellns serve`.
//!
//! What SDKs and cells link is the workspace crate `cellns-client`
//! (`crates/cellns-client`): token claims, the wrong-cell signal, the
//! refresh rule, a DNS helper and the token `Verifier`, without any of the
//! server's dependencies. The server uses it too (the hostname canonical
//! form, `cellns verify-token`).

#![warn(missing_docs)]

pub mod admin;
pub mod cli;
pub mod config;
pub mod dns;
pub mod http;
pub mod map;
pub mod metrics;
pub mod reload;
pub mod route;
pub mod serve;
pub mod telemetry;
pub mod token;
