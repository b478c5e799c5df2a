//! Compilation: a validated map becomes an immutable [`Snapshot`], with the
//! tenant index built and the in-zone names that are not tenants indexed.

use std::collections::HashMap;
use std::time::SystemTime;

use hickory_proto::rr::{LowerName, Name};

use super::index::{TenantIndex, label_hash};
use super::snapshot::{Cell, CellId, Snapshot, StaticName, Status, Zone};
use super::validate::Checked;

/// Builds a snapshot. `version` is the map's version label, `source` where
/// it came from (for messages and `/v1/map`).
pub fn compile(c: Checked, version: String, source: String) -> Snapshot {
    let mut listed = vec![0usize; c.cells.len()];
    for (_, cell) in c.tenants.iter() {
        listed[usize::from(cell.0)] += 1;
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
                health: cc.health,
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

    Snapshot {
        version,
        source,
        loaded_at: SystemTime::now(),
        zone: Zone {
            origin_lower: LowerName::new(&c.origin),
            origin: c.origin,
            ttl: c.ttl,
            move_ttl: c.move_ttl,
            negative_ttl: c.negative_ttl,
            apex_ttl: c.apex_ttl,
            refresh: c.refresh,
            retry: c.retry,
            expire: c.expire,
            serial: c.serial,
            nameservers: c.nameservers,
            hostmaster: c.hostmaster,
            glue: c.glue,
        },
        cells,
        tenants: c.tenants,
        placement: c.placement,
        safety: c.safety,
        static_names,
        moves_index: TenantIndex::build(
            c.moves.len(),
            c.moves.iter().map(|m| m.tenant.len()).sum(),
            c.moves
                .iter()
                .enumerate()
                .map(|(i, m)| (i, m.tenant.as_str(), m.to)),
        )
        .0,
        moves: c.moves,
    }
}
