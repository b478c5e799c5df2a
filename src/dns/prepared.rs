//! The DNS answers of one zone version, prepared once from its effective
//! [`View`] when it is published (see `crate::live::Store`): the apex
//! records (the SOA carries the version's serial), each cell's records as
//! the view says (its effective endpoints), the fast path's wire bodies
//! (`bodies`) and the per-cell answer counters.
//!
//! Tenant answers need the query's owner name, so for them only the RDATA
//! is prepared; the general path builds the records per query, the fast
//! path patches prepared bytes.

use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, SOA};
use hickory_proto::rr::{RData, Record};

use super::bodies::{Bodies, CellRdata};
use super::dnssec::{Dnssec, Signing};
use crate::live::serial::SerialError;
use crate::live::{Conditions, Serials, View};
use crate::map::{CellId, Snapshot};

/// What queries read: a zone version and its prepared answers.
pub type Live = crate::live::Live<Answers>;
/// The store DNS and tokens read, with DNS answers.
pub type Store = crate::live::Store<Answers>;

/// Records of one cell.
#[derive(Debug, Clone, Default)]
pub(super) struct CellRecords {
    /// A RDATA of the cell's effective endpoints.
    pub(super) a: Vec<RData>,
    /// AAAA RDATA of the cell's effective endpoints.
    pub(super) aaaa: Vec<RData>,
    /// CNAME RDATA when the cell is given only by an out-of-zone hostname.
    pub(super) cname: Option<RData>,
    /// A records owned by the cell's hostname (in-zone hostnames only).
    pub(super) host_a: Vec<Record>,
    /// AAAA records owned by the cell's hostname (in-zone hostnames only).
    pub(super) host_aaaa: Vec<Record>,
}

/// The prepared answers of one zone version.
#[derive(Debug)]
pub struct Answers {
    /// The SOA record (TTL `apex_ttl`), for SOA queries and transfers.
    pub(super) soa: Record,
    /// The SOA record with TTL `min(apex_ttl, negative_ttl)`, for the
    /// authority section of negative answers (RFC 2308 §3).
    pub(super) negative_soa: Record,
    /// The apex NS records.
    pub(super) ns: Vec<Record>,
    /// A/AAAA records of in-zone nameservers.
    pub(super) glue: Vec<Record>,
    /// Per cell, indexed by [`CellId`].
    pub(super) cells: Vec<CellRecords>,
    /// Wire-format bodies for the fast UDP path.
    pub(super) bodies: Bodies,
    /// Per-cell answer counters (metrics), indexed by [`CellId`].
    counters: Vec<metrics::Counter>,
    /// The signer of this version, when the zone is signed (`--dnssec-keys`
    /// and an active key): queries with the DO bit get signed answers.
    pub(super) dnssec: Option<Signing>,
}

impl Answers {
    /// Prepares the answers of `view`, signed with the keys `dnssec` has in
    /// force now, if any.
    pub(super) fn prepare(view: &View, dnssec: Option<&Arc<Dnssec>>) -> Self {
        let map = view.map();
        let z = &map.zone;
        let soa_rdata = |minimum: u32| {
            RData::SOA(SOA::new(
                z.nameservers
                    .first()
                    .cloned()
                    .unwrap_or_else(|| z.origin.clone()),
                z.hostmaster.clone(),
                view.serial(),
                z.refresh as i32,
                z.retry as i32,
                z.expire as i32,
                minimum,
            ))
        };
        let soa = Record::from_rdata(z.origin.clone(), z.apex_ttl, soa_rdata(z.negative_ttl));
        let negative_soa = Record::from_rdata(
            z.origin.clone(),
            z.apex_ttl.min(z.negative_ttl),
            soa_rdata(z.negative_ttl),
        );
        let ns = z
            .nameservers
            .iter()
            .map(|n| Record::from_rdata(z.origin.clone(), z.apex_ttl, RData::NS(NS(n.clone()))))
            .collect();
        let glue = z
            .glue
            .iter()
            .flat_map(|(n, addrs)| {
                addrs.iter().map(move |ip| {
                    let rdata = match ip {
                        IpAddr::V4(v4) => RData::A(A(*v4)),
                        IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
                    };
                    Record::from_rdata(n.clone(), z.apex_ttl, rdata)
                })
            })
            .collect();
        let cells: Vec<CellRecords> = map
            .cell_ids()
            .map(|id| {
                let cell = view.cell(id);
                let state = view.state(id);
                let a: Vec<RData> = state.ipv4.iter().map(|ip| RData::A(A(*ip))).collect();
                let aaaa: Vec<RData> = state.ipv6.iter().map(|ip| RData::AAAA(AAAA(*ip))).collect();
                let cname = cell
                    .by_name_only()
                    .then(|| RData::CNAME(CNAME(cell.hostname.clone())));
                let owned = |rd: &[RData]| -> Vec<Record> {
                    if !cell.hostname_in_zone {
                        return Vec::new();
                    }
                    rd.iter()
                        .map(|r| Record::from_rdata(cell.hostname.clone(), z.ttl, r.clone()))
                        .collect()
                };
                CellRecords {
                    host_a: owned(&a),
                    host_aaaa: owned(&aaaa),
                    a,
                    aaaa,
                    cname,
                }
            })
            .collect();
        let counters =
            crate::metrics::cell_answer_counters(map.cells.iter().map(|c| c.id.as_str()));
        let bodies = Bodies::build(
            view,
            cells.iter().map(|c| CellRdata {
                a: &c.a,
                aaaa: &c.aaaa,
                cname: c.cname.is_some(),
            }),
            &negative_soa,
        );
        Self {
            dnssec: dnssec.and_then(|d| Signing::new(d, z)),
            soa,
            negative_soa,
            ns,
            glue,
            cells,
            bodies,
            counters,
        }
    }

    /// The records of cell `id`.
    #[inline]
    pub(super) fn cell(&self, id: CellId) -> &CellRecords {
        &self.cells[usize::from(id.0)]
    }

    /// Counts one answer for a tenant served by `cell`.
    #[inline]
    pub(super) fn count_answer(&self, cell: CellId) {
        if let Some(c) = self.counters.get(usize::from(cell.0)) {
            c.increment(1);
        }
    }
}

/// A store serving `map` under `conditions`, with DNS answers, signed
/// with `dnssec`'s keys when given (each version reads the keys in force
/// when it is prepared: a key change is published with
/// `Store::republish`); fails when the first serial cannot be saved in the
/// state directory.
pub fn new_store(
    map: Arc<Snapshot>,
    conditions: Conditions,
    serials: Serials,
    dnssec: Option<Arc<Dnssec>>,
) -> Result<Store, SerialError> {
    Store::new(map, conditions, serials, move |view| {
        Answers::prepare(view, dnssec.as_ref())
    })
}

/// A store serving `map` alone, serials from the clock (tests, benchmarks).
/// Without a state directory there is nothing to save, so it cannot fail.
pub fn store_of(map: Snapshot) -> Store {
    fresh(map, None)
}

/// [`store_of`], signed with `dnssec`'s keys (tests, benchmarks).
pub fn signed_store_of(map: Snapshot, dnssec: Arc<Dnssec>) -> Store {
    fresh(map, Some(dnssec))
}

/// A store without a state directory (its serials cannot fail to save).
fn fresh(map: Snapshot, dnssec: Option<Arc<Dnssec>>) -> Store {
    match new_store(
        Arc::new(map),
        Conditions::default(),
        Serials::open(None),
        dnssec,
    ) {
        Ok(s) => s,
        Err(e) => unreachable!("no state directory, yet: {e}"),
    }
}
