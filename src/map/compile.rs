//! Compilation: a validated map becomes an immutable [`Snapshot`], with the
//! tenant index built and every record an answer needs prepared once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::SystemTime;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, SOA};
use hickory_proto::rr::{LowerName, Name, RData, Record};

use super::index::label_hash;
use super::snapshot::{Cell, CellId, CellRecords, Placement, Snapshot, StaticName, Status, Zone};
use super::validate::Checked;

/// Builds a snapshot. `version` and `serial` are chosen by the caller
/// (`reload` keeps the serial monotonic).
pub fn compile(c: Checked, version: String, source: String, serial: u32) -> Snapshot {
    let soa_rdata = |minimum: u32| {
        RData::SOA(SOA::new(
            c.nameservers
                .first()
                .cloned()
                .unwrap_or_else(|| c.origin.clone()),
            c.hostmaster.clone(),
            serial,
            c.refresh as i32,
            c.retry as i32,
            c.expire as i32,
            minimum,
        ))
    };
    let soa = Record::from_rdata(c.origin.clone(), c.apex_ttl, soa_rdata(c.negative_ttl));
    let negative_soa = Record::from_rdata(
        c.origin.clone(),
        c.apex_ttl.min(c.negative_ttl),
        soa_rdata(c.negative_ttl),
    );
    let ns = c
        .nameservers
        .iter()
        .map(|n| Record::from_rdata(c.origin.clone(), c.apex_ttl, RData::NS(NS(n.clone()))))
        .collect();
    let glue_records = c
        .glue
        .iter()
        .flat_map(|(n, addrs)| {
            addrs.iter().map(move |ip| {
                let rdata = match ip {
                    IpAddr::V4(v4) => RData::A(A(*v4)),
                    IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
                };
                Record::from_rdata(n.clone(), c.apex_ttl, rdata)
            })
        })
        .collect();

    let mut listed = vec![0usize; c.cells.len()];
    for (_, cell) in c.tenants.iter() {
        listed[cell.0 as usize] += 1;
    }

    let mut static_names = HashMap::new();
    for (i, n) in c.nameservers.iter().enumerate() {
        if c.origin.zone_of(n) {
            static_names.insert(LowerName::new(n), StaticName::Nameserver(i));
        }
    }

    let cells: Vec<Cell> = c
        .cells
        .into_iter()
        .enumerate()
        .map(|(i, cc)| {
            let id = CellId(i as u16);
            let a: Vec<RData> = cc.ipv4.iter().map(|ip| RData::A(A(*ip))).collect();
            let aaaa: Vec<RData> = cc.ipv6.iter().map(|ip| RData::AAAA(AAAA(*ip))).collect();
            let cname = (!cc.in_zone && a.is_empty() && aaaa.is_empty())
                .then(|| RData::CNAME(CNAME(cc.hostname.clone())));
            let owned = |rd: &[RData]| -> Vec<Record> {
                if !cc.in_zone {
                    return Vec::new();
                }
                rd.iter()
                    .map(|r| Record::from_rdata(cc.hostname.clone(), c.ttl, r.clone()))
                    .collect()
            };
            let records = CellRecords {
                host_a: owned(&a),
                host_aaaa: owned(&aaaa),
                a,
                aaaa,
                cname,
            };
            if cc.in_zone {
                static_names.insert(LowerName::new(&cc.hostname), StaticName::Cell(id));
            }
            Cell {
                hash_seed: label_hash(cc.id.as_bytes()),
                id: cc.id,
                hostname: cc.hostname,
                hostname_in_zone: cc.in_zone,
                ipv4: cc.ipv4,
                ipv6: cc.ipv6,
                region: cc.region,
                status: cc.status,
                weight: cc.weight,
                failover: cc.failover,
                serving: if cc.status == Status::Down {
                    cc.serving
                } else {
                    id
                },
                failover_path: cc.failover_path,
                listed_tenants: listed[i],
                records,
            }
        })
        .collect();

    // Empty non-terminals: names between the apex and deeper in-zone names.
    let deep: Vec<Name> = static_names.keys().map(|n| Name::from(n.clone())).collect();
    for n in deep {
        let mut p = n.base_name();
        while p.num_labels() > c.origin.num_labels() {
            static_names
                .entry(LowerName::new(&p))
                .or_insert(StaticName::EmptyNonTerminal);
            p = p.base_name();
        }
    }

    let hash_pool = match c.placement {
        Placement::Hash => cells
            .iter()
            .enumerate()
            .filter(|(_, cell)| cell.status == Status::Active && cell.weight > 0)
            .map(|(i, _)| CellId(i as u16))
            .collect(),
        Placement::Nxdomain => Vec::new(),
    };

    let mut snap = Snapshot {
        version,
        serial,
        source,
        loaded_at: SystemTime::now(),
        zone: Zone {
            origin_lower: LowerName::new(&c.origin),
            origin: c.origin,
            ttl: c.ttl,
            negative_ttl: c.negative_ttl,
            apex_ttl: c.apex_ttl,
            refresh: c.refresh,
            retry: c.retry,
            expire: c.expire,
            nameservers: c.nameservers,
            hostmaster: c.hostmaster,
            glue: c.glue,
            soa,
            negative_soa,
            ns,
            glue_records,
        },
        cells,
        tenants: c.tenants,
        placement: c.placement,
        hash_pool,
        safety: c.safety,
        static_names,
        wire: Default::default(),
        cell_answers: Vec::new(),
    };
    snap.cell_answers =
        crate::metrics::cell_answer_counters(snap.cells.iter().map(|c| c.id.clone()));
    snap.wire = crate::dns::wire::Prepared::build(&snap);
    snap
}
