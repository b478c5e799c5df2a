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
//! - [`token`]: JWT issue, signing keys, JWKS, verification.
//! - [`http`]: the token and admin HTTP API, metrics endpoint.
//! - [`admin`]: health, readiness, metrics and map views of the HTTP API.
//! - [`client`]: the client side for SDK authors: token claims, DNS, the
//!   wrong-cell signal, the refresh rule (docs/sdk.md).
//! - [`cli`]: the one-shot commands (`check`, `explain`, `diff`, ...).
//! - [`serve`]: wires everything together for `cellns serve`.

#![warn(missing_docs)]

pub mod admin;
pub mod cli;
pub mod client;
pub mod dns;
pub mod http;
pub mod live;
pub mod map;
pub mod metrics;
pub mod route;
pub mod telemetry;
pub mod token;
