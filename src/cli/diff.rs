//! `cellns diff OLD NEW [--json]`: prints what [`crate::map::diff`]
//! computes, for people or for scripts, and turns the gates' verdict into
//! the exit code.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use serde_json::{Value, json};

use crate::map::diff::{MapDiff, MoveReason, Placed, Scheduled, Verdict, diff, pct};
use crate::map::{self, Snapshot};

/// Tenant lines shown per list in the human output.
const HUMAN_LIST_LIMIT: usize = 50;

/// `cellns diff OLD NEW [--json]`: prints the diff; exit 0 when the gates
/// accept the change (with or without an override), 1 when they reject it,
/// 2 when either map cannot be read or is invalid (errors on stderr, as
/// `cellns check` prints them).
pub(super) fn run(old_path: &Path, new_path: &Path, as_json: bool) -> ExitCode {
    let load = |p: &Path| map::load_file(p);
    let (old, new) = match (load(old_path), load(new_path)) {
        (Ok(o), Ok(n)) => (o, n),
        (o, n) => {
            for e in [o.err(), n.err()].into_iter().flatten() {
                eprintln!("{e}");
            }
            return ExitCode::from(2);
        }
    };
    let d = diff(&old, &new);
    if as_json {
        println!("{}", to_json(&d, &old, &new));
    } else {
        print!("{}", render(&d, &old, &new, HUMAN_LIST_LIMIT));
    }
    if d.rejected() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The human report `cellns diff` prints; at most `limit` lines per
/// tenant list.
fn render(d: &MapDiff<'_>, old: &Snapshot, new: &Snapshot, limit: usize) -> String {
    let mut o = String::new();
    for (label, s) in [("old", old), ("new", new)] {
        let _ = writeln!(
            o,
            "{label}: {} (version {}, {} listed tenant(s), {} cell(s))",
            s.source,
            s.version,
            s.tenants.len(),
            s.cells.len()
        );
    }
    let _ = writeln!(o);
    let scheduled = if d.scheduled.is_empty() {
        String::new()
    } else {
        format!(" + {} scheduled", d.scheduled.len())
    };
    let _ = writeln!(
        o,
        "tenants moved:   {}{scheduled} ({} of listed; limit {})",
        d.moved.len(),
        pct(d.moved_fraction),
        pct(d.gates.max_moved_fraction)
    );
    let _ = writeln!(o, "tenants added:   {}", d.added.len());
    let _ = writeln!(
        o,
        "tenants removed: {} ({} of listed; limit {})",
        d.removed.len(),
        pct(d.removed_fraction),
        pct(d.gates.max_removed_fraction)
    );
    let more = |o: &mut String, n: usize| {
        if n > limit {
            let _ = writeln!(o, "  ... and {} more (--json lists all)", n - limit);
        }
    };
    if !d.moved.is_empty() {
        let _ = writeln!(o, "\nmoved (from → to):");
        for m in d.moved.iter().take(limit) {
            let why = match m.reason {
                MoveReason::Reassigned => "",
                MoveReason::Failover => "  (failover)",
                MoveReason::Planned => "  (planned move in force)",
            };
            let _ = writeln!(o, "  {:<24} {} → {}{why}", m.tenant, m.from, m.to);
        }
        more(&mut o, d.moved.len());
    }
    for (title, moves) in [
        ("scheduled moves (counted now; from → to at)", &d.scheduled),
        ("cancelled moves (still ahead in the old map)", &d.cancelled),
    ] {
        if moves.is_empty() {
            continue;
        }
        let _ = writeln!(o, "\n{title}:");
        for m in moves.iter().take(limit) {
            let _ = writeln!(
                o,
                "  {:<24} {} → {} at {}",
                m.tenant,
                m.from,
                m.to,
                crate::live::audit::rfc3339(m.at)
            );
        }
        more(&mut o, moves.len());
    }
    if !d.added.is_empty() {
        let _ = writeln!(o, "\nadded:");
        for p in d.added.iter().take(limit) {
            let _ = writeln!(o, "  {:<24} → {}", p.tenant, p.cell);
        }
        more(&mut o, d.added.len());
    }
    if !d.removed.is_empty() {
        let _ = writeln!(o, "\nremoved:");
        for p in d.removed.iter().take(limit) {
            let _ = writeln!(o, "  {:<24} (was on {})", p.tenant, p.cell);
        }
        more(&mut o, d.removed.len());
    }
    let cells_changed = !(d.cells_added.is_empty()
        && d.cells_removed.is_empty()
        && d.status_changes.is_empty()
        && d.cell_changes.is_empty());
    if cells_changed {
        let _ = writeln!(o, "\ncells:");
        for c in &d.cells_added {
            let _ = writeln!(o, "  added    {c}");
        }
        for c in &d.cells_removed {
            let _ = writeln!(o, "  removed  {c}");
        }
        for s in &d.status_changes {
            let _ = writeln!(o, "  status   {}: {} → {}", s.cell, s.from, s.to);
        }
        for c in &d.cell_changes {
            let _ = writeln!(o, "  changed  {}: {}", c.cell, c.fields.join(", "));
        }
    }
    if let Some((from, to)) = d.placement_change {
        let _ = writeln!(
            o,
            "\nplacement of unlisted tenants: {} → {}",
            from.as_str(),
            to.as_str()
        );
    }
    if let Some((from, to)) = &d.origin_change {
        let _ = writeln!(o, "\nzone origin: {from} → {to}");
    }
    let _ = writeln!(o);
    match d.gates.verdict {
        Verdict::Accepted => {
            let _ = writeln!(o, "verdict: accepted (within the safety gates)");
        }
        Verdict::Overridden => {
            let _ = writeln!(
                o,
                "verdict: accepted with override \"{}\": {}",
                d.gates.fresh_override.unwrap_or_default(),
                d.limits_exceeded()
            );
        }
        Verdict::Rejected => {
            let _ = writeln!(
                o,
                "verdict: REJECTED by the safety gates: {}",
                d.limits_exceeded()
            );
            let _ = writeln!(
                o,
                "         to make this change on purpose, set [safety] allow_mass_change = \"<reason>\" in the new map"
            );
        }
    }
    o
}

/// The machine-readable report (`cellns diff --json`).
fn to_json(d: &MapDiff<'_>, old: &Snapshot, new: &Snapshot) -> Value {
    let side = |s: &Snapshot| {
        json!({
            "file": s.source,
            "version": s.version,
            "tenants": s.tenants.len(),
            "cells": s.cells.len(),
        })
    };
    let placed = |v: &[Placed<'_>]| -> Vec<Value> {
        v.iter()
            .map(|p| json!({"tenant": p.tenant, "cell": p.cell}))
            .collect()
    };
    let scheduled = |v: &[Scheduled<'_>]| -> Vec<Value> {
        v.iter()
            .map(|m| {
                json!({
                    "tenant": m.tenant,
                    "from": m.from,
                    "to": m.to,
                    "at": crate::live::audit::rfc3339(m.at),
                    "at_unix": m.at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
                })
            })
            .collect()
    };
    json!({
        "old": side(old),
        "new": side(new),
        "counts": {
            "moved": d.moved.len(),
            "scheduled": d.scheduled.len(),
            "cancelled": d.cancelled.len(),
            "added": d.added.len(),
            "removed": d.removed.len(),
        },
        "moved_fraction": d.moved_fraction,
        "removed_fraction": d.removed_fraction,
        "moved": d.moved.iter().map(|m| json!({
            "tenant": m.tenant, "from": m.from, "to": m.to, "reason": m.reason.as_str(),
        })).collect::<Vec<_>>(),
        "scheduled": scheduled(&d.scheduled),
        "cancelled": scheduled(&d.cancelled),
        "added": placed(&d.added),
        "removed": placed(&d.removed),
        "cells": {
            "added": d.cells_added,
            "removed": d.cells_removed,
            "status_changes": d.status_changes.iter().map(|s| json!({
                "cell": s.cell, "from": s.from.as_str(), "to": s.to.as_str(),
            })).collect::<Vec<_>>(),
            "changed": d.cell_changes.iter().map(|c| json!({
                "cell": c.cell, "fields": c.fields,
            })).collect::<Vec<_>>(),
        },
        "placement": d.placement_change.map(|(f, t)| json!({"from": f.as_str(), "to": t.as_str()})),
        "origin": d.origin_change.as_ref().map(|(f, t)| json!({"from": f, "to": t})),
        "gates": {
            "max_moved_fraction": d.gates.max_moved_fraction,
            "max_removed_fraction": d.gates.max_removed_fraction,
            "moved_exceeded": d.gates.moved_exceeded,
            "removed_exceeded": d.gates.removed_exceeded,
            "override": d.gates.fresh_override,
            "verdict": d.gates.verdict.as_str(),
            "rejected": d.rejected(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::{Format, Source, load_str};

    /// Cells a and b, tenants t0..t(n-1): the first `on_b` on b, the rest on a.
    fn map(n: usize, on_b: usize) -> Snapshot {
        map_moves(n, on_b, &[])
    }

    /// As [`map`], with tenants `t<i>` moved to b at the given Unix times.
    fn map_moves(n: usize, on_b: usize, moves: &[(usize, u64)]) -> Snapshot {
        map_where(n, |i| i < on_b, moves)
    }

    /// Tenants t0..t(n-1), on b where `on_b(i)`.
    fn map_where(n: usize, on_b: impl Fn(usize) -> bool, moves: &[(usize, u64)]) -> Snapshot {
        let mut t = String::from(
            "[zone]\norigin = \"z.test.\"\nnameservers = [\"ns.example.\"]\nhostmaster = \"h.example.\"\n\
             [cells.a]\nhostname = \"a.z.test.\"\nipv4 = [\"192.0.2.1\"]\n\
             [cells.b]\nhostname = \"b.z.test.\"\nipv4 = [\"192.0.2.2\"]\n[tenants]\n",
        );
        for i in 0..n {
            let _ = writeln!(t, "t{i} = \"{}\"", if on_b(i) { "b" } else { "a" });
        }
        for &(i, at) in moves {
            let at = crate::live::audit::rfc3339(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(at),
            );
            let _ = writeln!(t, "[moves.t{i}]\nto = \"b\"\nat = \"{at}\"");
        }
        load_str(Source {
            text: &t,
            format: Format::Toml,
            name: "test.toml",
        })
        .unwrap_or_else(|e| panic!("{e}\n{t}"))
    }

    #[test]
    fn scheduled_moves_count_in_the_gate_when_loaded_not_when_done() {
        use crate::map::diff::diff_at;
        let t = |s: u64| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s);
        let old = map(100, 0);
        // 5 reassigned now + 6 scheduled at 2000: 11% > 10%: rejected now.
        let ahead: Vec<(usize, u64)> = (10..16).map(|i| (i, 2000)).collect();
        let new = map_moves(100, 5, &ahead);
        let d = diff_at(&old, &new, t(1000));
        assert_eq!((d.moved.len(), d.scheduled.len()), (5, 6));
        assert!(d.rejected());
        assert!(
            d.limits_exceeded().contains("6 by scheduled moves"),
            "{}",
            d.limits_exceeded()
        );
        let text = render(&d, &old, &new, 50);
        assert!(
            text.contains("tenants moved:   5 + 6 scheduled (11.0%"),
            "{text}"
        );
        assert!(
            text.contains("t10                      a → b at 1970-01-01T00:33:20Z"),
            "{text}"
        );
        let j = to_json(&d, &old, &new);
        assert_eq!(j["counts"]["scheduled"], 6);
        assert_eq!(j["scheduled"][0]["tenant"], "t10");
        assert_eq!(j["scheduled"][0]["at"], "1970-01-01T00:33:20Z");
        assert_eq!(j["scheduled"][0]["at_unix"], 2000);
        // The same moves, already in the old map: nothing new counts.
        let before = map_moves(100, 0, &ahead);
        let d = diff_at(&before, &new, t(1000));
        assert_eq!((d.moved.len(), d.scheduled.len()), (5, 0));
        assert!(!d.rejected());
        // At the flip nothing is checked; cleaning the map up afterwards
        // ([tenants] names b, the moves are gone) moves nobody.
        let cleaned = map_where(100, |i| i < 5 || (10..16).contains(&i), &[]);
        let d = diff_at(&new, &cleaned, t(3000));
        assert_eq!((d.moved.len(), d.scheduled.len()), (0, 0), "{:?}", d.moved);
        // Dropping a move still ahead is a cancellation, not a move.
        let unmoved = map(100, 5);
        let d = diff_at(&new, &unmoved, t(1000));
        assert_eq!((d.moved.len(), d.cancelled.len()), (0, 6));
        // A move loaded after its time moves the tenant at once.
        let late = map_moves(100, 0, &[(3, 500)]);
        let d = diff_at(&old, &late, t(1000));
        assert_eq!(d.moved.len(), 1);
        assert_eq!(d.moved[0].reason, MoveReason::Planned);
    }

    #[test]
    fn human_and_json_reports() {
        let old = map(100, 0);
        let new = map(100, 30);
        let d = diff(&old, &new);
        let text = render(&d, &old, &new, 5);
        assert!(
            text.contains("tenants moved:   30 (30.0% of listed; limit 10.0%)"),
            "{text}"
        );
        assert!(text.contains("t0                       a → b"), "{text}");
        assert!(text.contains("... and 25 more"), "{text}");
        assert!(text.contains("REJECTED"), "{text}");
        let j = to_json(&d, &old, &new);
        assert_eq!(j["counts"]["moved"], 30);
        assert_eq!(j["moved"].as_array().map(Vec::len), Some(30));
        assert_eq!(j["moved"][0]["from"], "a");
        assert_eq!(j["gates"]["rejected"], true);
    }
}
