//! Tenant → cell decisions: pure functions over a [`Snapshot`].
//!
//! [`lookup`] is the query path (no allocation); [`explain`] gives the same
//! decision with the reasons, for `cellns explain`, `/v1/tenants` and tokens.

use crate::map::index::{label_hash, mix64};
use crate::map::{CellId, Placement, Snapshot};

/// How a tenant got its cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Listed in the map's `[tenants]`.
    Listed,
    /// Not listed; placed by rendezvous hashing over active cells.
    Hashed,
}

/// A routing decision with its reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The cell the map assigns (listed) or the hash picks.
    pub assigned: CellId,
    /// The cell that serves the tenant now (differs when `assigned` is down).
    pub serving: CellId,
    /// How `assigned` was chosen.
    pub via: Via,
    /// Down cells passed through on the way to `serving`, starting with
    /// `assigned` (empty when `assigned` serves).
    pub failed_over: Vec<CellId>,
}

/// Why a name gets no cell.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoRoute {
    /// The name is not one valid DNS label.
    #[error("`{0}` is not a valid tenant id: {1}")]
    InvalidTenant(String, String),
    /// Not listed, and placement of unknown tenants is `nxdomain`.
    #[error("tenant `{0}` is not listed and unknown tenants are refused (placement: nxdomain)")]
    Unknown(String),
}

/// The serving cell of the tenant whose id is `label` (compared
/// case-insensitively), or `None` for NXDOMAIN. Allocation-free.
#[inline]
pub fn lookup(snap: &Snapshot, label: &[u8]) -> Option<CellId> {
    if let Some(cell) = snap.tenants.get(label) {
        return Some(snap.cell(cell).serving);
    }
    match snap.placement {
        Placement::Nxdomain => None,
        Placement::Hash => rendezvous(snap, label),
    }
}

/// The full decision for `tenant`, with reasons.
pub fn explain(snap: &Snapshot, tenant: &str) -> Result<Route, NoRoute> {
    if let Some(problem) = crate::map::validate::label_problem(tenant) {
        return Err(NoRoute::InvalidTenant(tenant.to_owned(), problem));
    }
    let (assigned, via) = match snap.tenants.get(tenant.as_bytes()) {
        Some(c) => (c, Via::Listed),
        None => match snap.placement {
            Placement::Hash => (
                rendezvous(snap, tenant.as_bytes())
                    .ok_or_else(|| NoRoute::Unknown(tenant.to_owned()))?,
                Via::Hashed,
            ),
            Placement::Nxdomain => return Err(NoRoute::Unknown(tenant.to_owned())),
        },
    };
    let cell = snap.cell(assigned);
    Ok(Route {
        assigned,
        serving: cell.serving,
        via,
        failed_over: cell.failover_path.clone(),
    })
}

/// Weighted rendezvous (highest random weight) hashing: each active cell
/// scores `-weight / ln(u)` with `u` uniform in (0, 1) drawn from a hash of
/// (tenant, cell id); the highest score wins. A tenant moves only when the
/// cell it is on leaves the pool or a new cell outscores it, so adding an
/// unrelated cell moves only the tenants the new cell wins.
pub fn rendezvous(snap: &Snapshot, label: &[u8]) -> Option<CellId> {
    let h = label_hash(label);
    let mut best: Option<(f64, CellId)> = None;
    for &id in snap.hash_pool() {
        let cell = snap.cell(id);
        let x = mix64(h ^ cell.hash_seed);
        // 53 random bits → u in (0, 1), never 0 or 1.
        let u = ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let score = f64::from(cell.weight) / -u.ln();
        if best.is_none_or(|(b, _)| score > b) {
            best = Some((score, id));
        }
    }
    best.map(|(_, id)| id)
}
