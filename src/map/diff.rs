//! Map diffs: what replacing one snapshot by another does to tenants and
//! cells, and whether the reload safety gates let it through.
//!
//! [`diff`] is the one implementation behind both the reload path (which
//! refuses a change the gates reject and keeps serving the old map) and
//! `cellns diff` (which prints it), so the CLI predicts exactly what a
//! running server will do with the same two maps.
//!
//! # What counts as a move
//!
//! A listed tenant *moves* when the cell that **serves** it changes, i.e.
//! when its DNS answer and token cell change: compared by cell id, after
//! failover. So a cell going `down` moves every tenant it served to its
//! failover cell, and that counts against the gate like any reassignment —
//! which is intended: from the clients' point of view it is the same mass
//! move, and a control plane that marks half the fleet down by mistake must
//! be stopped just like one that reassigns half the tenants by mistake.
//! (Bringing the cell back up is then a mass move too; an operator doing
//! either on purpose says so with `allow_mass_change`.) Conversely, a
//! tenant reassigned from a down cell to the cell that already served it
//! does not move. Each move is labelled [`MoveReason::Reassigned`] (its
//! `[tenants]` entry changed) or [`MoveReason::Failover`] (same entry; a
//! status or failover change moved it).
//!
//! Only listed tenants are counted: tenants placed by hashing cannot be
//! enumerated, so a change of the hash pool or of `[placement]` is reported
//! (cell and placement changes) but not counted. Fractions are relative to
//! the old map's listed tenants (the population that can be moved or
//! removed); with no listed tenants before, nothing can trip the gates.
//!
//! # The gates
//!
//! A change is rejected when more than `max_moved_fraction` of the listed
//! tenants move, or more than `max_removed_fraction` of them disappear from
//! `[tenants]`. The limits in force are the stricter of the old and the new
//! map's `[safety]`: a map that tightens a limit is held to it at once, but
//! one that loosens it cannot use the looser limit to let itself through —
//! the looser limit applies from the next change on. A rejected change is
//! accepted anyway when the new map carries `allow_mass_change = "<reason>"`
//! with a value the old map did not have: the override belongs to the change
//! that introduced it, so leaving it in the file does not disable the gates
//! for later changes (write a new reason for the next intended mass change).

use std::collections::HashMap;

use super::{CellId, Placement, Snapshot, Status};

/// Why a listed tenant's serving cell changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveReason {
    /// Its `[tenants]` entry names another cell.
    Reassigned,
    /// Its entry is unchanged; a cell status or failover change moved it.
    Failover,
    /// A `[moves]` entry of the new map whose time has come moves it now.
    Planned,
}

impl MoveReason {
    /// The word used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reassigned => "reassigned",
            Self::Failover => "failover",
            Self::Planned => "planned",
        }
    }
}

/// A listed tenant whose serving cell changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move<'a> {
    /// The tenant (lowercased).
    pub tenant: &'a str,
    /// Cell id serving it in the old map.
    pub from: &'a str,
    /// Cell id serving it in the new map.
    pub to: &'a str,
    /// Why.
    pub reason: MoveReason,
}

/// A tenant listed in only one of the two maps, with its serving cell there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed<'a> {
    /// The tenant (lowercased).
    pub tenant: &'a str,
    /// Cell id serving it (in the map that lists it).
    pub cell: &'a str,
}

/// A cell whose status changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange<'a> {
    /// Cell id.
    pub cell: &'a str,
    /// Old status.
    pub from: Status,
    /// New status.
    pub to: Status,
}

/// A cell present in both maps whose other settings change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellChange<'a> {
    /// Cell id.
    pub cell: &'a str,
    /// Changed fields, by map file name (`hostname`, `ipv4`, `ipv6`,
    /// `region`, `weight`, `health`, `failover`).
    pub fields: Vec<&'static str>,
}

/// A planned move (`[moves.<tenant>]`) of the new map that the old map
/// does not have and whose time has not come: it counts in the gates now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduled<'a> {
    /// The tenant (lowercased).
    pub tenant: &'a str,
    /// Cell id serving it until `at` (in the new map).
    pub from: &'a str,
    /// Cell id it moves to.
    pub to: &'a str,
    /// When.
    pub at: std::time::SystemTime,
}

/// The gates' decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limits.
    Accepted,
    /// Over a limit, let through by a new `allow_mass_change`.
    Overridden,
    /// Over a limit: a reload refuses it and keeps the old map.
    Rejected,
}

impl Verdict {
    /// The word used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Overridden => "accepted_with_override",
            Self::Rejected => "rejected",
        }
    }
}

/// The safety gates applied to a diff.
#[derive(Debug, Clone, PartialEq)]
pub struct Gates<'a> {
    /// Moved-fraction limit in force (stricter of old and new).
    pub max_moved_fraction: f64,
    /// Removed-fraction limit in force (stricter of old and new).
    pub max_removed_fraction: f64,
    /// More tenants move than allowed.
    pub moved_exceeded: bool,
    /// More tenants are removed than allowed.
    pub removed_exceeded: bool,
    /// The new map's `allow_mass_change`, when the old map did not carry the
    /// same value (only such a fresh override can let a change through).
    pub fresh_override: Option<&'a str>,
    /// The decision.
    pub verdict: Verdict,
}

/// Everything a change from one map to another does.
#[derive(Debug, Clone, PartialEq)]
pub struct MapDiff<'a> {
    /// Listed tenants in the old map.
    pub old_tenants: usize,
    /// Listed tenants in the new map.
    pub new_tenants: usize,
    /// Listed tenants whose serving cell changes, in new-map order.
    pub moved: Vec<Move<'a>>,
    /// New planned moves still ahead, in new-map order; they count in the
    /// moved fraction (the gate judges a move when it is scheduled, not
    /// when it happens, since nothing checks the map at the flip).
    pub scheduled: Vec<Scheduled<'a>>,
    /// Planned moves still ahead in the old map that the new one drops.
    pub cancelled: Vec<Scheduled<'a>>,
    /// Tenants listed only in the new map, in new-map order.
    pub added: Vec<Placed<'a>>,
    /// Tenants listed only in the old map, in old-map order.
    pub removed: Vec<Placed<'a>>,
    /// Cell ids only in the new map.
    pub cells_added: Vec<&'a str>,
    /// Cell ids only in the old map.
    pub cells_removed: Vec<&'a str>,
    /// Status changes of cells in both maps.
    pub status_changes: Vec<StatusChange<'a>>,
    /// Other setting changes of cells in both maps.
    pub cell_changes: Vec<CellChange<'a>>,
    /// Placement of unlisted tenants, when it changes (old, new).
    pub placement_change: Option<(Placement, Placement)>,
    /// Zone origin, when it changes (old, new).
    pub origin_change: Option<(String, String)>,
    /// `(moved + scheduled) / old_tenants` (0 when the old map lists none).
    pub moved_fraction: f64,
    /// `removed / old_tenants` (0 when the old map lists none).
    pub removed_fraction: f64,
    /// What the safety gates say.
    pub gates: Gates<'a>,
}

/// Compares two snapshots. Linear in the number of listed tenants: each new
/// tenant is found in the old index (by position when both list tenants in
/// the same order, else by lookup), and the old index is searched for
/// removed tenants only when some are missing.
pub fn diff<'a>(old: &'a Snapshot, new: &'a Snapshot) -> MapDiff<'a> {
    diff_at(old, new, std::time::SystemTime::now())
}

/// The cell `tenant` (listed on `listed`) is assigned to at `now`: its
/// planned move's target once the move's time has come.
fn assigned_at(s: &Snapshot, tenant: &str, listed: CellId, now: std::time::SystemTime) -> CellId {
    if s.moves.is_empty() {
        return listed;
    }
    match s.move_of(tenant) {
        Some(m) if m.at <= now => m.to,
        _ => listed,
    }
}

/// As [`diff`], with planned moves judged at `now`: a move whose time has
/// come is in force in either map (so cleaning up a map after a move moves
/// nobody), one still ahead is listed in [`MapDiff::scheduled`].
pub fn diff_at<'a>(
    old: &'a Snapshot,
    new: &'a Snapshot,
    now: std::time::SystemTime,
) -> MapDiff<'a> {
    // Cell ids are indexes into each snapshot's cell list, which differ when
    // cells are added or removed: translate by cell name.
    let new_ids: HashMap<&str, CellId> = new
        .cells
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id.as_str(), CellId(i as u16)))
        .collect();
    let old_to_new: Vec<Option<CellId>> = old
        .cells
        .iter()
        .map(|c| new_ids.get(c.id.as_str()).copied())
        .collect();

    let mut moved = Vec::new();
    let mut added = Vec::new();
    let mut matched = 0usize;
    // Maps are usually rewritten from the same source in the same order, so
    // the old index is walked alongside: where the names line up, no hash
    // lookup (a cache miss or three each, at a million tenants) is needed.
    let mut old_in_order = old.tenants.iter();
    for (tenant, new_listed) in new.tenants.iter() {
        let new_assigned = assigned_at(new, tenant, new_listed, now);
        let new_serving = new.cell(new_assigned).serving;
        let old_listed = match old_in_order.next() {
            Some((name, cell)) if name == tenant => Some(cell),
            _ => old.tenants.get(tenant.as_bytes()),
        };
        match old_listed {
            Some(old_listed) => {
                matched += 1;
                let old_assigned = assigned_at(old, tenant, old_listed, now);
                let old_serving = old.cell(old_assigned).serving;
                if old_to_new[old_serving.0 as usize] != Some(new_serving) {
                    let reason = if old_to_new[old_assigned.0 as usize] == Some(new_assigned) {
                        MoveReason::Failover
                    } else if new_assigned != new_listed {
                        MoveReason::Planned
                    } else {
                        MoveReason::Reassigned
                    };
                    moved.push(Move {
                        tenant,
                        from: &old.cell(old_serving).id,
                        to: &new.cell(new_serving).id,
                        reason,
                    });
                }
            }
            None => added.push(Placed {
                tenant,
                cell: &new.cell(new_serving).id,
            }),
        }
    }
    let mut removed = Vec::new();
    if matched < old.tenants.len() {
        for (tenant, old_assigned) in old.tenants.iter() {
            if new.tenants.get(tenant.as_bytes()).is_none() {
                removed.push(Placed {
                    tenant,
                    cell: &old.cell(old.cell(old_assigned).serving).id,
                });
            }
        }
    }

    let mut cells_removed = Vec::new();
    let mut status_changes = Vec::new();
    let mut cell_changes = Vec::new();
    for (oc, to) in old.cells.iter().zip(&old_to_new) {
        let Some(to) = to else {
            cells_removed.push(oc.id.as_str());
            continue;
        };
        let nc = new.cell(*to);
        if oc.status != nc.status {
            status_changes.push(StatusChange {
                cell: &oc.id,
                from: oc.status,
                to: nc.status,
            });
        }
        let failover_name = |s: &'a Snapshot, f: Option<CellId>| f.map(|f| s.cell(f).id.as_str());
        let mut fields = Vec::new();
        for (changed, name) in [
            (oc.hostname != nc.hostname, "hostname"),
            (oc.ipv4 != nc.ipv4, "ipv4"),
            (oc.ipv6 != nc.ipv6, "ipv6"),
            (oc.region != nc.region, "region"),
            (oc.weight != nc.weight, "weight"),
            (oc.health != nc.health, "health"),
            (
                failover_name(old, oc.failover) != failover_name(new, nc.failover),
                "failover",
            ),
        ] {
            if changed {
                fields.push(name);
            }
        }
        if !fields.is_empty() {
            cell_changes.push(CellChange {
                cell: &oc.id,
                fields,
            });
        }
    }
    let old_names: HashMap<&str, ()> = old.cells.iter().map(|c| (c.id.as_str(), ())).collect();
    let cells_added = new
        .cells
        .iter()
        .filter(|c| !old_names.contains_key(c.id.as_str()))
        .map(|c| c.id.as_str())
        .collect();

    let fraction = |n: usize| {
        if old.tenants.is_empty() {
            0.0
        } else {
            n as f64 / old.tenants.len() as f64
        }
    };
    // Planned moves still ahead: new ones count now, dropped ones are shown.
    let ahead = |s: &'a Snapshot| {
        s.moves
            .iter()
            .filter(move |m| m.at > now)
            .map(move |m| Scheduled {
                tenant: &m.tenant,
                from: &s.cell(s.cell(m.from).serving).id,
                to: &s.cell(m.to).id,
                at: m.at,
            })
    };
    let same =
        |a: &Scheduled<'_>, b: &Scheduled<'_>| a.tenant == b.tenant && a.to == b.to && a.at == b.at;
    let old_ahead: Vec<Scheduled<'a>> = ahead(old).collect();
    let new_ahead: Vec<Scheduled<'a>> = ahead(new).collect();
    let moved_now: std::collections::HashSet<&str> = if new_ahead.is_empty() {
        Default::default()
    } else {
        moved.iter().map(|m| m.tenant).collect()
    };
    let scheduled: Vec<Scheduled<'a>> = new_ahead
        .iter()
        .filter(|n| !old_ahead.iter().any(|o| same(o, n)) && !moved_now.contains(n.tenant))
        .cloned()
        .collect();
    let cancelled: Vec<Scheduled<'a>> = old_ahead
        .into_iter()
        .filter(|o| !new_ahead.iter().any(|n| same(o, n)))
        .collect();
    let moved_fraction = fraction(moved.len() + scheduled.len());
    let removed_fraction = fraction(removed.len());
    let gates = gates(old, new, moved_fraction, removed_fraction);

    MapDiff {
        old_tenants: old.tenants.len(),
        new_tenants: new.tenants.len(),
        moved,
        scheduled,
        cancelled,
        added,
        removed,
        cells_added,
        cells_removed,
        status_changes,
        cell_changes,
        placement_change: (old.placement != new.placement)
            .then_some((old.placement, new.placement)),
        origin_change: (old.zone.origin_lower != new.zone.origin_lower)
            .then(|| (old.zone.origin.to_string(), new.zone.origin.to_string())),
        moved_fraction,
        removed_fraction,
        gates,
    }
}

fn gates<'a>(
    old: &'a Snapshot,
    new: &'a Snapshot,
    moved_fraction: f64,
    removed_fraction: f64,
) -> Gates<'a> {
    let max_moved_fraction = old
        .safety
        .max_moved_fraction
        .min(new.safety.max_moved_fraction);
    let max_removed_fraction = old
        .safety
        .max_removed_fraction
        .min(new.safety.max_removed_fraction);
    let moved_exceeded = moved_fraction > max_moved_fraction;
    let removed_exceeded = removed_fraction > max_removed_fraction;
    let fresh_override = new
        .safety
        .allow_mass_change
        .as_deref()
        .filter(|r| old.safety.allow_mass_change.as_deref() != Some(*r));
    let verdict = match (moved_exceeded || removed_exceeded, fresh_override) {
        (false, _) => Verdict::Accepted,
        (true, Some(_)) => Verdict::Overridden,
        (true, None) => Verdict::Rejected,
    };
    Gates {
        max_moved_fraction,
        max_removed_fraction,
        moved_exceeded,
        removed_exceeded,
        fresh_override,
        verdict,
    }
}

/// A fraction as a percentage with one decimal (`0.123` → `12.3%`).
pub fn pct(f: f64) -> String {
    format!("{:.1}%", f * 100.0)
}

impl MapDiff<'_> {
    /// True when the gates reject the change.
    pub fn rejected(&self) -> bool {
        self.gates.verdict == Verdict::Rejected
    }

    /// Which limits the change breaks, in one line (empty when none):
    /// "24 of 200 listed tenants (12.0%) move, over the limit of 10.0%".
    pub fn limits_exceeded(&self) -> String {
        let mut parts = Vec::new();
        if self.gates.moved_exceeded {
            parts.push(format!(
                "{} of {} listed tenants ({}) move{}, over the limit of {}",
                self.moved.len() + self.scheduled.len(),
                self.old_tenants,
                pct(self.moved_fraction),
                if self.scheduled.is_empty() {
                    String::new()
                } else {
                    format!(" ({} by scheduled moves)", self.scheduled.len())
                },
                pct(self.gates.max_moved_fraction)
            ));
        }
        if self.gates.removed_exceeded {
            parts.push(format!(
                "{} of {} listed tenants ({}) are removed, over the limit of {}",
                self.removed.len(),
                self.old_tenants,
                pct(self.removed_fraction),
                pct(self.gates.max_removed_fraction)
            ));
        }
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;
    use crate::map::{Format, Source, load_str};

    /// A map with cells a, b, c (c fails over to a) and tenants t0..t(n-1):
    /// the first `on_b` on b, the rest on a; `extra` is appended verbatim.
    fn map(n: usize, on_b: usize, extra: &str) -> Snapshot {
        let mut t = String::from(
            "[zone]\norigin = \"z.test.\"\nnameservers = [\"ns.example.\"]\nhostmaster = \"h.example.\"\n\
             [cells.a]\nhostname = \"a.z.test.\"\nipv4 = [\"192.0.2.1\"]\nfailover = \"b\"\n\
             [cells.b]\nhostname = \"b.z.test.\"\nipv4 = [\"192.0.2.2\"]\nfailover = \"a\"\n\
             [cells.c]\nhostname = \"c.z.test.\"\nipv4 = [\"192.0.2.3\"]\nfailover = \"a\"\n",
        );
        t.push_str(extra);
        t.push_str("\n[tenants]\n");
        for i in 0..n {
            let _ = writeln!(t, "t{i} = \"{}\"", if i < on_b { "b" } else { "a" });
        }
        load_str(Source {
            text: &t,
            format: Format::Toml,
            name: "test.toml",
        })
        .unwrap_or_else(|e| panic!("{e}\n{t}"))
    }

    #[test]
    fn identical_maps_change_nothing() {
        let (a, b) = (map(100, 10, ""), map(100, 10, ""));
        let d = diff(&a, &b);
        assert!(d.moved.is_empty() && d.added.is_empty() && d.removed.is_empty());
        assert!(d.status_changes.is_empty() && d.cell_changes.is_empty());
        assert_eq!(d.gates.verdict, Verdict::Accepted);
        assert_eq!(d.moved_fraction, 0.0);
    }

    #[test]
    fn moves_within_the_limit_are_accepted() {
        let d_old = map(100, 0, "");
        let d_new = map(100, 10, "");
        let d = diff(&d_old, &d_new);
        assert_eq!(d.moved.len(), 10);
        assert_eq!(
            d.moved[0],
            Move {
                tenant: "t0",
                from: "a",
                to: "b",
                reason: MoveReason::Reassigned
            }
        );
        assert!((d.moved_fraction - 0.10).abs() < 1e-12);
        // Exactly at the limit passes; the limit is "more than".
        assert_eq!(d.gates.verdict, Verdict::Accepted);
    }

    #[test]
    fn a_mass_move_is_rejected_and_a_fresh_override_accepts_it() {
        let old = map(100, 0, "");
        let new = map(100, 11, "");
        let d = diff(&old, &new);
        assert!(d.gates.moved_exceeded);
        assert!(d.rejected());
        assert!(
            d.limits_exceeded().contains("11 of 100"),
            "{}",
            d.limits_exceeded()
        );

        let new = map(
            100,
            11,
            "[safety]\nallow_mass_change = \"rebalance JIRA-1\"\n",
        );
        let d = diff(&old, &new);
        assert_eq!(d.gates.verdict, Verdict::Overridden);
        assert_eq!(d.gates.fresh_override, Some("rebalance JIRA-1"));

        // The same override left in the next map does not let the next mass
        // change through.
        let next = map(
            100,
            60,
            "[safety]\nallow_mass_change = \"rebalance JIRA-1\"\n",
        );
        let d = diff(&new, &next);
        assert_eq!(d.gates.fresh_override, None);
        assert!(d.rejected());
        // A new reason does.
        let next = map(
            100,
            60,
            "[safety]\nallow_mass_change = \"rebalance JIRA-2\"\n",
        );
        assert_eq!(diff(&new, &next).gates.verdict, Verdict::Overridden);
    }

    #[test]
    fn mass_removal_is_rejected() {
        let old = map(100, 0, "");
        let new = map(80, 0, "");
        let d = diff(&old, &new);
        assert_eq!(d.removed.len(), 20);
        assert_eq!(d.removed[0].tenant, "t80");
        assert_eq!(d.removed[0].cell, "a");
        assert!(d.gates.removed_exceeded && !d.gates.moved_exceeded);
        assert!(d.rejected());
        // Adding is never gated.
        let d = diff(&new, &old);
        assert_eq!(d.added.len(), 20);
        assert_eq!(d.gates.verdict, Verdict::Accepted);
    }

    #[test]
    fn a_cell_going_down_moves_its_tenants() {
        let text = |b_status: &str, on_b: usize| {
            let mut t = format!(
                "[zone]\norigin = \"z.test.\"\nnameservers = [\"ns.example.\"]\nhostmaster = \"h.example.\"\n\
                 [cells.a]\nhostname = \"a.z.test.\"\nipv4 = [\"192.0.2.1\"]\nfailover = \"b\"\n\
                 [cells.b]\nhostname = \"b.z.test.\"\nipv4 = [\"192.0.2.2\"]\nfailover = \"a\"\nstatus = \"{b_status}\"\n\
                 [tenants]\n"
            );
            for i in 0..100 {
                let _ = writeln!(t, "t{i} = \"{}\"", if i < on_b { "b" } else { "a" });
            }
            load_str(Source {
                text: &t,
                format: Format::Toml,
                name: "down.toml",
            })
            .unwrap_or_else(|e| panic!("{e}"))
        };
        let up = text("active", 50);
        let down = text("down", 50);
        let d = diff(&up, &down);
        assert_eq!(d.moved.len(), 50);
        assert!(
            d.moved
                .iter()
                .all(|m| m.reason == MoveReason::Failover && m.from == "b" && m.to == "a")
        );
        assert_eq!(
            d.status_changes,
            vec![StatusChange {
                cell: "b",
                from: Status::Active,
                to: Status::Down
            }]
        );
        assert!(d.rejected());
        // Reassigning the down cell's tenants to the cell already serving
        // them moves nobody.
        let reassigned = text("down", 0);
        let d = diff(&down, &reassigned);
        assert!(d.moved.is_empty(), "{:?}", d.moved.first());
        assert_eq!(d.gates.verdict, Verdict::Accepted);
    }

    #[test]
    fn loosening_a_limit_does_not_apply_to_its_own_change() {
        let old = map(100, 0, "");
        let new = map(100, 30, "[safety]\nmax_moved_fraction = 0.5\n");
        let d = diff(&old, &new);
        assert!((d.gates.max_moved_fraction - 0.10).abs() < 1e-12);
        assert!(d.rejected());
        // From then on the looser limit is in force.
        let next = map(100, 60, "[safety]\nmax_moved_fraction = 0.5\n");
        assert_eq!(diff(&new, &next).gates.verdict, Verdict::Accepted);
        // Tightening applies at once.
        let strict = map(100, 1, "[safety]\nmax_moved_fraction = 0.0\n");
        assert!(diff(&old, &strict).rejected());
    }

    #[test]
    fn order_of_tenants_does_not_matter() {
        let old = map(100, 0, "");
        let new = map(100, 30, "");
        let mut text = String::from(
            "[zone]\norigin = \"z.test.\"\nnameservers = [\"ns.example.\"]\nhostmaster = \"h.example.\"\n\
             [cells.a]\nhostname = \"a.z.test.\"\nipv4 = [\"192.0.2.1\"]\nfailover = \"b\"\n\
             [cells.b]\nhostname = \"b.z.test.\"\nipv4 = [\"192.0.2.2\"]\nfailover = \"a\"\n\
             [cells.c]\nhostname = \"c.z.test.\"\nipv4 = [\"192.0.2.3\"]\nfailover = \"a\"\n[tenants]\n",
        );
        // Same assignments as `new`, listed in reverse, with t0 dropped and
        // a tenant added in front.
        let _ = writeln!(text, "fresh = \"c\"");
        for i in (1..100).rev() {
            let _ = writeln!(text, "t{i} = \"{}\"", if i < 30 { "b" } else { "a" });
        }
        let reversed = load_str(Source {
            text: &text,
            format: Format::Toml,
            name: "rev.toml",
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let d = diff(&old, &reversed);
        assert_eq!(d.moved.len(), 29);
        assert_eq!(
            d.added,
            vec![Placed {
                tenant: "fresh",
                cell: "c"
            }]
        );
        assert_eq!(
            d.removed,
            vec![Placed {
                tenant: "t0",
                cell: "a"
            }]
        );
        let forward = diff(&old, &new);
        assert_eq!(forward.moved.len(), 30);
    }

    #[test]
    fn cell_changes_are_reported() {
        let old = map(
            10,
            0,
            "[cells.d]\nhostname = \"d.z.test.\"\nipv4 = [\"192.0.2.4\"]\n",
        );
        let new = map(
            10,
            0,
            "[cells.e]\nhostname = \"e.z.test.\"\nipv4 = [\"192.0.2.5\"]\n[placement]\nunknown = \"hash\"\n",
        );
        let d = diff(&old, &new);
        assert_eq!(d.cells_added, vec!["e"]);
        assert_eq!(d.cells_removed, vec!["d"]);
        assert_eq!(
            d.placement_change,
            Some((Placement::Nxdomain, Placement::Hash))
        );
        // Cell indexes shifted (d → e sorts after c either way here), and
        // no tenant moved.
        assert!(d.moved.is_empty());
        assert_eq!(d.gates.verdict, Verdict::Accepted);
    }

    #[test]
    fn cell_index_shifts_are_not_moves() {
        // Adding cell "0" (sorts first) shifts every CellId by one.
        let old = map(50, 20, "");
        let new = map(
            50,
            20,
            "[cells.0]\nhostname = \"x.z.test.\"\nipv4 = [\"192.0.2.9\"]\n",
        );
        assert_ne!(
            old.tenants.get(b"t0").map(|c| c.0),
            new.tenants.get(b"t0").map(|c| c.0)
        );
        let d = diff(&old, &new);
        assert!(d.moved.is_empty(), "{:?}", d.moved.first());
        assert_eq!(d.cells_added, vec!["0"]);
    }
}
