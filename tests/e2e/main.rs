//! End-to-end tests: the real `cellns` binary on ephemeral loopback ports,
//! queried by real clients. One test binary (faster to build); one module
//! per concern.

mod common;
mod dns_dig;
mod dns_hickory;
mod dns_malformed;
mod dns_support;
mod dns_unbound;
mod obs_admin;
mod obs_deploy;
mod obs_k8s;
mod obs_metrics;
mod obs_ready;
mod obs_support;
mod reload_gates;
mod reload_support;
mod reload_watch;
mod sdk_demo;
mod sdk_flow;
mod sdk_python;
mod sdk_support;
mod serve_failure;
mod token_api;
mod token_cell;
mod token_jwks;
mod token_keygen;
mod token_support;
mod token_tls;
mod xfr_config;
mod xfr_refused;
mod xfr_secondary;
mod xfr_support;
