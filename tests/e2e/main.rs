//! End-to-end tests: the real `cellns` binary on ephemeral loopback ports,
//! queried by real clients. One test binary (faster to build); one module
//! per concern.

mod common;
mod dns_dig;
mod dns_hickory;
mod dns_malformed;
mod dns_support;
mod dns_unbound;
