//! End-to-end tests: the real `cellns` binary on ephemeral loopback ports,
//! queried by real clients. One test binary (faster to build); one module
//! per concern, and one support module they all share.

mod support;

mod dns_dig;
mod dns_hickory;
mod dns_listen;
mod dns_malformed;
mod dns_unbound;
mod dnssec_cli;
mod dnssec_dnsviz;
mod dnssec_roll;
mod dnssec_validate;
mod health_notify;
mod health_override;
mod health_probe;
mod limits_dns;
mod limits_http;
mod map_check;
mod moves;
mod obs_admin;
mod obs_deploy;
mod obs_k8s;
mod obs_metrics;
mod obs_metrics_access;
mod obs_ready;
mod placement;
mod reload_faults;
mod reload_gates;
mod reload_scale;
mod reload_watch;
mod sdk_demo;
mod sdk_flow;
mod sdk_python;
mod serve_failure;
mod serve_shutdown;
mod token_api;
mod token_cell;
mod token_jwks;
mod token_keygen;
mod token_tls;
mod xfr_config;
mod xfr_ixfr;
mod xfr_notify;
mod xfr_refused;
mod xfr_secondary;
mod xfr_stream;
