//! Tenant → cell decisions: pure functions over the effective
//! [`View`](crate::live::View).
//!
//! [`lookup`] is the query path (no allocation); [`explain`] gives the same
//! decision with the reasons, for `cellns explain`, `/v1/tenants` and tokens.

use crate::live::View;
use crate::live::moves::{MoveState, Phase};
use crate::map::index::{label_hash, mix64};
use crate::map::{CellId, Placement};

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
    /// The tenant's planned move (`[moves.<tenant>]`): its position in the
    /// map's `moves` and its state in the view.
    pub planned: Option<(usize, MoveState)>,
}

impl Route {
    /// Why the tenant got its cell, in one sentence (for `cellns explain`
    /// and `/v1/tenants`).
    pub fn reason(&self, view: &View) -> String {
        let assigned = &view.cell(self.assigned).id;
        let map = view.map();
        match (
            self.via,
            self.planned.and_then(|(i, s)| Some((map.moves.get(i)?, s))),
        ) {
            (Via::Listed, Some((m, s))) if s.phase == Phase::Moved => format!(
                "listed in [tenants] as `{}`; moved to `{assigned}` at {} by [moves]",
                view.cell(m.from).id,
                crate::live::audit::rfc3339(m.at),
            ),
            (Via::Listed, Some((m, s))) => format!(
                "listed in [tenants] as `{assigned}`; moves to `{}` at {} ([moves], {})",
                view.cell(m.to).id,
                crate::live::audit::rfc3339(m.at),
                s.phase.as_str(),
            ),
            (Via::Listed, None) => format!("listed in [tenants] as `{assigned}`"),
            (Via::Hashed, _) => format!(
                "not listed; placed on `{assigned}` by weighted rendezvous hashing over {} active cell(s)",
                view.hash_pool().len()
            ),
        }
    }
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
pub fn lookup(view: &View, label: &[u8]) -> Option<CellId> {
    lookup_target(view, label).map(|t| t.cell)
}

/// What a tenant's DNS answer is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The serving cell.
    pub cell: CellId,
    /// The answer carries `zone.move_ttl` instead of `zone.ttl` (a planned
    /// move is near).
    pub short_ttl: bool,
}

/// As [`lookup`], with the TTL the answer carries. Planned moves are
/// consulted only when the view has some in effect (one length check
/// otherwise). Allocation-free.
#[inline]
pub fn lookup_target(view: &View, label: &[u8]) -> Option<Target> {
    if let Some((assigned, short_ttl)) = view.moving(label) {
        return Some(Target {
            cell: view.serving(assigned),
            short_ttl,
        });
    }
    let map = view.map();
    let cell = match map.tenants.get(label) {
        Some(cell) => view.serving(cell),
        None => match map.placement {
            Placement::Nxdomain => return None,
            // Only what could be a tenant id is hashed: `_dmarc` or `*` are
            // not tenants, and tokens (through `explain`) refuse them too.
            Placement::Hash if is_tenant_label(label) => rendezvous(view, label)?,
            Placement::Hash => return None,
        },
    };
    Some(Target {
        cell,
        short_ttl: false,
    })
}

/// Whether `label` is a valid tenant id: 1..=63 letters, digits and
/// hyphens, not starting or ending with a hyphen (allocation-free twin of
/// `map::validate::label_problem`).
#[inline]
pub fn is_tenant_label(label: &[u8]) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && label[0] != b'-'
        && label[label.len() - 1] != b'-'
}

/// The full decision for `tenant`, with reasons.
pub fn explain(view: &View, tenant: &str) -> Result<Route, NoRoute> {
    if let Some(problem) = crate::map::validate::label_problem(tenant) {
        return Err(NoRoute::InvalidTenant(tenant.to_owned(), problem));
    }
    let map = view.map();
    let listed = match view.moving(tenant.as_bytes()) {
        Some((now, _)) => Some(now),
        None => map.tenants.get(tenant.as_bytes()),
    };
    let planned = map
        .moves_index
        .find(tenant.as_bytes())
        .and_then(|(i, _)| Some((i, view.moves().state(i)?)));
    let (assigned, via) = match listed {
        Some(c) => (c, Via::Listed),
        None => match map.placement {
            Placement::Hash => (
                rendezvous(view, tenant.as_bytes())
                    .ok_or_else(|| NoRoute::Unknown(tenant.to_owned()))?,
                Via::Hashed,
            ),
            Placement::Nxdomain => return Err(NoRoute::Unknown(tenant.to_owned())),
        },
    };
    let state = view.state(assigned);
    Ok(Route {
        assigned,
        serving: state.serving,
        via,
        failed_over: state.failover_path.clone(),
        planned,
    })
}

/// Weighted rendezvous (highest random weight) hashing over the view's
/// hash pool: each cell scores `weight / -log2(u)` with `u` uniform in
/// (0, 1) drawn from a hash of (tenant, cell id); the highest score wins
/// (the first in map order on a tie). A tenant moves only when the cell it
/// is on leaves the pool or a new cell outscores it, so adding an unrelated
/// cell moves only the tenants the new cell wins.
///
/// The arithmetic is integer ([`neg_log2_q32`]), so placement is
/// bit-identical on every platform and compiler: `docs/placement.md` gives
/// the algorithm step by step, and `tests/placement/placement.py` is an
/// independent implementation the tests compare against.
pub fn rendezvous(view: &View, label: &[u8]) -> Option<CellId> {
    let h = label_hash(label);
    let mut best: Option<(u64, u64, CellId)> = None;
    for &id in view.hash_pool() {
        let cell = view.cell(id);
        let weight = u64::from(cell.weight);
        let denominator = neg_log2_q32(mix64(h ^ cell.hash_seed));
        // weight / denominator > best_w / best_d, without division: both
        // products stay below 2^58 (weight < 2^20, denominator < 2^38).
        let better = match best {
            None => true,
            Some((bw, bd, _)) => {
                u128::from(weight) * u128::from(bd) > u128::from(bw) * u128::from(denominator)
            }
        };
        if better {
            best = Some((weight, denominator, id));
        }
    }
    best.map(|(_, _, id)| id)
}

/// `-log2(u)` in unsigned Q32 fixed point (32 fractional bits), where `u`
/// is `x`'s top 53 bits as a uniform number in (0, 1), never 0 or 1:
/// `u = (2·(x >> 11) + 1) / 2^54`. Then `-log2(u) = 54 - log2(v)` with
/// `v = 2·(x >> 11) + 1` in `[1, 2^54)`; `log2(v)` is its bit length minus
/// one (the integer part) plus 32 fraction bits found by repeated squaring
/// of the mantissa (each squaring doubles the logarithm: a result of 2 or
/// more is the next bit 1). The result is in `(0, 54·2^32]`.
pub fn neg_log2_q32(x: u64) -> u64 {
    const ONE: u128 = 1 << 62;
    let v = ((x >> 11) << 1) | 1;
    let int = u64::from(63 - v.leading_zeros());
    // The mantissa v / 2^int in [1, 2), as Q62.
    let mut y = u128::from(v) << (62 - int);
    let mut frac = 0u64;
    for _ in 0..32 {
        y = (y * y) >> 62;
        frac <<= 1;
        if y >= 2 * ONE {
            y >>= 1;
            frac |= 1;
        }
    }
    (54 << 32) - ((int << 32) | frac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::{Format, Source, load_str};

    fn map(cells: &str, tenants: &str, placement: &str) -> View {
        let text = format!(
            "[zone]\norigin = \"c.example.\"\nnameservers = [\"ns.example.net.\"]\nhostmaster = \"h.example.net.\"\n\
             {cells}\n[tenants]\n{tenants}\n[placement]\nunknown = \"{placement}\"\n"
        );
        let snap = load_str(Source {
            text: &text,
            format: Format::Toml,
            name: "t.toml",
        })
        .expect("valid test map");
        View::of_map(std::sync::Arc::new(snap))
    }

    fn cell(id: &str, status: &str, weight: u32, failover: Option<&str>) -> String {
        let f = failover
            .map(|f| format!("failover = \"{f}\"\n"))
            .unwrap_or_default();
        format!(
            "[cells.{id}]\nhostname = \"{id}.c.example.\"\nipv4 = [\"192.0.2.1\"]\nstatus = \"{status}\"\nweight = {weight}\n{f}"
        )
    }

    fn id(s: &View, cell: &str) -> CellId {
        s.map().cell_by_id(cell).expect("cell")
    }

    #[test]
    fn listed_tenant() {
        let s = map(&cell("a", "active", 1, None), "acme = \"a\"", "nxdomain");
        let r = explain(&s, "ACME").unwrap();
        assert_eq!(
            (r.assigned, r.serving, r.via),
            (id(&s, "a"), id(&s, "a"), Via::Listed)
        );
        assert!(r.failed_over.is_empty());
        assert_eq!(lookup(&s, b"AcMe"), Some(id(&s, "a")));
        assert_eq!(lookup(&s, b"other"), None);
        assert!(matches!(explain(&s, "other"), Err(NoRoute::Unknown(_))));
        assert!(matches!(
            explain(&s, "not.one"),
            Err(NoRoute::InvalidTenant(..))
        ));
    }

    #[test]
    fn failover_through_down_cells() {
        let cells = [
            cell("a", "down", 1, Some("b")),
            cell("b", "down", 1, Some("c")),
            cell("c", "active", 1, None),
        ]
        .concat();
        let s = map(&cells, "acme = \"a\"\nglobex = \"b\"", "nxdomain");
        let r = explain(&s, "acme").unwrap();
        assert_eq!(r.assigned, id(&s, "a"));
        assert_eq!(r.serving, id(&s, "c"));
        assert_eq!(r.failed_over, vec![id(&s, "a"), id(&s, "b")]);
        assert_eq!(lookup(&s, b"acme"), Some(id(&s, "c")));
        assert_eq!(lookup(&s, b"globex"), Some(id(&s, "c")));
    }

    #[test]
    fn draining_cell_keeps_listed_tenants_but_gets_no_hashed_ones() {
        let cells = [
            cell("a", "draining", 100, None),
            cell("b", "active", 100, None),
        ]
        .concat();
        let s = map(&cells, "acme = \"a\"", "hash");
        assert_eq!(lookup(&s, b"acme"), Some(id(&s, "a")));
        for i in 0..500 {
            let t = format!("t{i}");
            assert_eq!(lookup(&s, t.as_bytes()), Some(id(&s, "b")), "{t}");
            assert_eq!(explain(&s, &t).unwrap().via, Via::Hashed);
        }
    }

    #[test]
    fn only_tenant_ids_are_hashed() {
        let s = map(&cell("a", "active", 100, None), "", "hash");
        assert!(lookup(&s, b"acme").is_some());
        for bad in [&b"_dmarc"[..], b"*", b"-x", b"x-", b"", b"a.b", &[b'a'; 64]] {
            assert_eq!(lookup(&s, bad), None, "{:?}", String::from_utf8_lossy(bad));
            assert_eq!(
                is_tenant_label(bad),
                crate::map::validate::label_problem(&String::from_utf8_lossy(bad)).is_none()
            );
        }
    }

    #[test]
    fn hashing_is_case_insensitive_and_weighted() {
        let cells = [
            cell("a", "active", 100, None),
            cell("b", "active", 300, None),
        ]
        .concat();
        let s = map(&cells, "", "hash");
        let mut on_b = 0;
        for i in 0..20_000 {
            let t = format!("tenant{i}");
            let c = lookup(&s, t.as_bytes()).unwrap();
            assert_eq!(lookup(&s, t.to_uppercase().as_bytes()), Some(c));
            on_b += usize::from(c == id(&s, "b"));
        }
        // Weight 300 of 400: expect 75 % ± a few points.
        let share = on_b as f64 / 20_000.0;
        assert!((0.72..0.78).contains(&share), "share on b = {share}");
    }

    #[test]
    fn adding_an_unrelated_cell_moves_only_tenants_it_wins() {
        let two = [
            cell("a", "active", 100, None),
            cell("b", "active", 100, None),
        ]
        .concat();
        let three = [two.clone(), cell("c", "active", 100, None)].concat();
        let (s2, s3) = (map(&two, "", "hash"), map(&three, "", "hash"));
        let mut moved_elsewhere = 0;
        let mut to_c = 0;
        for i in 0..10_000 {
            let t = format!("t{i}");
            let before = &s2.cell(lookup(&s2, t.as_bytes()).unwrap()).id;
            let after = &s3.cell(lookup(&s3, t.as_bytes()).unwrap()).id;
            if after == "c" {
                to_c += 1;
            } else if before != after {
                moved_elsewhere += 1;
            }
        }
        assert_eq!(moved_elsewhere, 0, "tenants moved between a and b");
        // The new cell takes about a third.
        assert!((2_900..3_800).contains(&to_c), "{to_c} moved to c");
    }

    #[test]
    fn placement_is_stable_across_versions() {
        // Pinned so that a change of the hash (which would move hashed
        // tenants on upgrade) cannot go unnoticed.
        let cells = [
            cell("a", "active", 100, None),
            cell("b", "active", 100, None),
        ]
        .concat();
        let s = map(&cells, "", "hash");
        let got: String = [
            "acme", "globex", "initech", "umbrella", "hooli", "t1", "t2", "t3",
        ]
        .iter()
        .map(|t| s.cell(lookup(&s, t.as_bytes()).unwrap()).id.clone())
        .collect();
        assert_eq!(got, PINNED_PLACEMENT);
    }

    const PINNED_PLACEMENT: &str = "ababbaab";
}
