//! End-to-end tests: the real `cellns` binary on ephemeral loopback ports,
//! queried by real clients. One test binary (faster to build); one module
//! per concern.

mod common;
