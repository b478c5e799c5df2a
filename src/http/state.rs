//! What the handlers share: [`App`] (the view in force, the overrides, the
//! health monitor, the issuer, the callers), and [`Readiness`], the
//! start-up progress that `serve` flips and `/readyz` reports.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::{Extensions, HeaderMap};

use super::callers::{self, Caller, CallerSet, Scope};
use super::error::ApiError;
use crate::health::Monitor;
use crate::live::Current;
use crate::live::overrides::Control;
use crate::token::Issuer;

/// What the handlers share.
#[derive(Debug)]
pub(super) struct App {
    /// The effective view in force (what DNS answers from).
    pub(super) store: Arc<dyn Current>,
    /// Operator overrides, applied to the same store.
    pub(super) overrides: Arc<dyn Control>,
    /// The health probers' details (none when nothing is probed).
    pub(super) health: Option<Arc<Monitor>>,
    /// The `--notify` secondaries and the serials they serve (none: no
    /// secondaries).
    pub(super) fleet: Option<Arc<crate::dns::fleet::Fleet>>,
    /// Token minting (holds the key ring).
    pub(super) issuer: Issuer,
    /// Who may call the API (re-read when the file changes).
    pub(super) callers: Arc<CallerSet>,
    /// Token requests must come over a connection that presented a client
    /// certificate verified against `--client-ca` (in addition to the API key).
    pub(super) require_client_cert: bool,
    /// Start-up progress, for `/readyz`.
    pub(super) readiness: Arc<Readiness>,
    /// The DNSSEC signer, when the zone is signed (`/v1/dnssec`).
    pub(super) dnssec: Option<Arc<crate::dns::dnssec::Dnssec>>,
}

impl App {
    /// The caller of a request to a `/v1/` route that needs `scope`, under
    /// this server's callers and client certificate rule (see
    /// [`callers::authorize`]).
    pub(super) fn authorize(
        &self,
        headers: &HeaderMap,
        extensions: &Extensions,
        scope: Scope,
    ) -> Result<Arc<Caller>, ApiError> {
        callers::authorize(
            &self.callers.load_current(),
            self.require_client_cert,
            headers,
            extensions,
            scope,
        )
    }
}

/// Start-up progress, as `/readyz` reports it. Ready means: a map is loaded
/// and the DNS sockets are bound (so queries sent now are answered), and
/// the server is not shutting down. A failed reload does not make the
/// server unready: it keeps serving its last good map.
#[derive(Debug, Default)]
pub struct Readiness {
    map_loaded: AtomicBool,
    dns_listening: AtomicBool,
    stopping: AtomicBool,
    /// The DNS addresses, once listening.
    dns_addresses: std::sync::OnceLock<Vec<std::net::SocketAddr>>,
}

impl Readiness {
    /// Not ready: no map, no DNS sockets.
    pub fn new() -> Self {
        Self::default()
    }

    /// A map snapshot is in force.
    pub fn set_map_loaded(&self) {
        self.map_loaded.store(true, Ordering::Release);
    }

    /// Every DNS socket is bound and served, on `addrs`.
    pub fn set_dns_listening(&self, addrs: &[std::net::SocketAddr]) {
        let _ = self.dns_addresses.set(addrs.to_vec());
        self.dns_listening.store(true, Ordering::Release);
    }

    /// Shutdown has begun: report unready so load balancers stop sending.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// Whether a map is loaded.
    pub fn map_loaded(&self) -> bool {
        self.map_loaded.load(Ordering::Acquire)
    }

    /// Whether the DNS sockets are bound.
    pub fn dns_listening(&self) -> bool {
        self.dns_listening.load(Ordering::Acquire)
    }

    /// Where DNS answers (UDP and TCP); empty until it does.
    pub fn dns_addresses(&self) -> &[std::net::SocketAddr] {
        self.dns_addresses.get().map_or(&[], Vec::as_slice)
    }

    /// Whether shutdown has begun.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Map loaded, DNS bound, not stopping.
    pub fn is_ready(&self) -> bool {
        self.map_loaded() && self.dns_listening() && !self.stopping()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_map_and_dns_and_not_stopping() {
        let r = Readiness::new();
        assert!(!r.is_ready());
        r.set_map_loaded();
        assert!(!r.is_ready());
        r.set_dns_listening(&["127.0.0.1:53".parse().expect("addr")]);
        assert!(r.is_ready());
        r.set_stopping();
        assert!(!r.is_ready());
    }
}
