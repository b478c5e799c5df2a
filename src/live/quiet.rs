//! When a cell is *quiet*: no DNS answer cached by a resolver and no live
//! token issued by this instance can point at it any more, so it can be
//! decommissioned (`quiet_at` in `/v1/cells`), and when a moved tenant's
//! old cell is quiet for that tenant (`old_cell_quiet_at`).
//!
//! DNS: every publish is observed ([`Quiet::observe`]). While some tenant
//! answer points at a cell ([`View::pointed_ttl`]), it is not quiet; each
//! change of the TTL it is pointed at with, and the publish that stops
//! pointing at it, push its DNS quiet time to `publish time + the TTL
//! answers carried until then`. Tokens: the latest `exp` issued for each
//! cell, one atomic per cell ([`Quiet::token_issued`]). A cell's
//! `quiet_at` is the later of the two, once nothing points at it.
//!
//! A moved tenant's old cell is quiet for it at
//! `max(dns, tokens_before)`, where, with `seen` the time this instance
//! first published a map holding the move and `ttl`, `move_ttl` the zone's:
//!
//! ```text
//! normal_until = at - ttl  if seen < at - ttl, else seen   (last answer with `ttl`)
//! dns          = max(normal_until + ttl, at + move_ttl if seen < at)
//! tokens_before = the latest exp issued for the old cell before `seen`
//! ```
//!
//! (Tokens issued after `seen` expire by `at`, and `at < at + move_ttl`.)
//! With the move known a zone TTL ahead (the usual case), that is
//! `at + move_ttl`. The clock the times come from is this instance's: what
//! another instance or a previous process served is not known here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::view::View;
use crate::map::{CellId, Move};

/// DNS state of one cell.
#[derive(Debug, Clone, Copy)]
struct CellTrack {
    /// The TTL tenant answers point at it with now (`None`: none do).
    ttl_now: Option<u32>,
    /// When answers served with earlier TTLs expire at the latest.
    expires: SystemTime,
}

/// When this instance first published a move, and what the old cell's
/// tokens were then.
#[derive(Debug, Clone, Copy)]
struct Seen {
    at: SystemTime,
    old_tokens: u64,
}

#[derive(Debug, Default)]
struct State {
    cells: HashMap<String, CellTrack>,
    /// By (tenant, target cell id, at).
    moves: HashMap<(String, String, SystemTime), Seen>,
}

/// See the module docs. Shared by every publish and token issue.
#[derive(Debug, Default)]
pub struct Quiet {
    state: Mutex<State>,
    /// Latest token `exp` (Unix seconds) issued per cell id.
    tokens: RwLock<HashMap<String, Arc<AtomicU64>>>,
}

fn secs(t: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(t)
}

fn after(t: SystemTime, ttl: u32) -> SystemTime {
    t + Duration::from_secs(u64::from(ttl))
}

/// What [`Quiet::move_report`] says about one move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoveQuiet {
    /// When this instance first published a map holding the move.
    pub seen: SystemTime,
    /// When no answer or token of this instance can point at the old cell
    /// for this tenant any more (see the module docs).
    pub old_cell_quiet_at: SystemTime,
}

impl Quiet {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a token for cell `cell` (its id) that expires at `exp`
    /// (Unix seconds).
    pub fn token_issued(&self, cell: &str, exp: u64) {
        {
            let map = self.tokens.read().unwrap_or_else(|e| e.into_inner());
            if let Some(a) = map.get(cell) {
                a.fetch_max(exp, Ordering::Relaxed);
                return;
            }
        }
        let mut map = self.tokens.write().unwrap_or_else(|e| e.into_inner());
        map.entry(cell.to_owned())
            .or_default()
            .fetch_max(exp, Ordering::Relaxed);
    }

    /// The latest token `exp` issued for `cell` (0: none).
    pub fn token_exp(&self, cell: &str) -> u64 {
        self.tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(cell)
            .map_or(0, |a| a.load(Ordering::Relaxed))
    }

    /// Notes that `view` is in force from `now` on. The first call (the
    /// store's first view) starts every cell as quiet since `now`.
    pub fn observe(&self, view: &View, now: SystemTime) {
        let map = view.map();
        let mut st = self.state();
        let mut cells = HashMap::with_capacity(map.cells.len());
        for id in map.cell_ids() {
            let cell = &map.cell(id).id;
            let ttl_now = view.pointed_ttl(id);
            let mut t = st.cells.remove(cell).unwrap_or(CellTrack {
                ttl_now: None,
                expires: now,
            });
            if t.ttl_now != ttl_now {
                if let Some(old) = t.ttl_now {
                    t.expires = t.expires.max(after(now, old));
                }
                t.ttl_now = ttl_now;
            }
            cells.insert(cell.clone(), t);
        }
        // Cells no longer in the map are forgotten: nothing is served for
        // them, and a map that brings one back starts it afresh.
        st.cells = cells;
        let mut moves = HashMap::with_capacity(map.moves.len());
        for m in &map.moves {
            let key = (m.tenant.clone(), map.cell(m.to).id.clone(), m.at);
            let seen = st.moves.remove(&key).unwrap_or_else(|| {
                let old = &map.cell(m.from).id;
                let serving = &map.cell(view.serving(m.from)).id;
                Seen {
                    at: now,
                    old_tokens: self.token_exp(old).max(self.token_exp(serving)),
                }
            });
            moves.insert(key, seen);
        }
        st.moves = moves;
    }

    /// When no tenant answer cached by a resolver nor live token issued by
    /// this instance can point at cell `id` of `view`; `None` while some
    /// tenant answer points at it.
    pub fn cell_quiet_at(&self, view: &View, id: CellId) -> Option<SystemTime> {
        let cell = &view.cell(id).id;
        let t = self.state().cells.get(cell).copied()?;
        if t.ttl_now.is_some() {
            return None;
        }
        Some(t.expires.max(secs(self.token_exp(cell))))
    }

    /// When this instance first saw move `m` of `view`, and when its old
    /// cell is quiet for the tenant.
    pub fn move_report(&self, view: &View, m: &Move) -> MoveQuiet {
        let map = view.map();
        let key = (m.tenant.clone(), map.cell(m.to).id.clone(), m.at);
        let seen = self.state().moves.get(&key).copied().unwrap_or(Seen {
            at: view.built_at(),
            old_tokens: 0,
        });
        let (ttl, short) = (map.zone.ttl, map.zone.move_ttl);
        let start =
            m.at.checked_sub(Duration::from_secs(u64::from(ttl)))
                .unwrap_or(UNIX_EPOCH);
        let normal_until = if seen.at < start { start } else { seen.at };
        let mut dns = after(normal_until, ttl);
        if seen.at < m.at {
            dns = dns.max(after(m.at, short));
        }
        MoveQuiet {
            seen: seen.at,
            old_cell_quiet_at: dns.max(secs(seen.old_tokens)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::Conditions;
    use crate::map::{Format, Source, load_str};

    fn map(moves: &str) -> Arc<crate::map::Snapshot> {
        let text = format!(
            "[zone]\norigin = \"z.test.\"\nttl = 30\nmove_ttl = 5\nnameservers = [\"ns.example.net.\"]\n\
             hostmaster = \"h.example.net.\"\n[cells.a]\nhostname = \"a.z.test.\"\nipv4 = [\"10.0.0.1\"]\n\
             [cells.b]\nhostname = \"b.z.test.\"\nipv4 = [\"10.0.0.2\"]\n[tenants]\nacme = \"a\"\n{moves}"
        );
        Arc::new(
            load_str(Source {
                text: &text,
                format: Format::Toml,
                name: "q.toml",
            })
            .expect("valid"),
        )
    }

    fn t(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn a_cell_is_quiet_once_its_last_answers_and_tokens_expire() {
        // acme moves from a to b at 2000.
        let m = map("[moves.acme]\nto = \"b\"\nat = \"1970-01-01T00:33:20Z\"\n");
        let (a, b) = (m.cell_by_id("a").unwrap(), m.cell_by_id("b").unwrap());
        let q = Quiet::default();
        let view = |now| View::new_at(m.clone(), &Conditions::default(), 1, t(now));
        let v = view(1000);
        q.observe(&v, t(1000));
        assert_eq!(q.cell_quiet_at(&v, a), None);
        // b: never pointed at by this instance: quiet since it started.
        assert_eq!(q.cell_quiet_at(&v, b), Some(t(1000)));
        q.token_issued("a", 2000);
        // The short-TTL window, then the flip.
        let v = view(1970);
        q.observe(&v, t(1970));
        assert_eq!(v.pointed_ttl(a), Some(5));
        assert_eq!(q.cell_quiet_at(&v, a), None);
        let v = view(2000);
        q.observe(&v, t(2000));
        assert_eq!(v.pointed_ttl(a), None);
        assert_eq!(v.pointed_ttl(b), Some(5));
        // Normal-TTL answers expired at 2000; short ones at 2005.
        assert_eq!(q.cell_quiet_at(&v, a), Some(t(2005)));
        assert_eq!(q.cell_quiet_at(&v, b), None);
        // A token that lives longer keeps the cell from being quiet.
        q.token_issued("a", 2100);
        assert_eq!(q.cell_quiet_at(&v, a), Some(t(2100)));
        let r = q.move_report(&v, &m.moves[0]);
        assert_eq!(r.seen, t(1000));
        assert_eq!(r.old_cell_quiet_at, t(2005));
    }

    #[test]
    fn a_move_loaded_late_counts_the_answers_served_before() {
        let m = map("[moves.acme]\nto = \"b\"\nat = \"1970-01-01T00:33:20Z\"\n");
        let q = Quiet::default();
        q.token_issued("a", 2500);
        // Seen 10 s before the flip: normal answers until then.
        let v = View::new_at(m.clone(), &Conditions::default(), 1, t(1990));
        q.observe(&v, t(1990));
        let r = q.move_report(&v, &m.moves[0]);
        assert_eq!(r.old_cell_quiet_at, t(2500));
        let q = Quiet::default();
        q.observe(&v, t(1990));
        assert_eq!(q.move_report(&v, &m.moves[0]).old_cell_quiet_at, t(2020));
        // Seen after the flip: the old cell answered until then.
        let q = Quiet::default();
        let v = View::new_at(m.clone(), &Conditions::default(), 1, t(2010));
        q.observe(&v, t(2010));
        assert_eq!(q.move_report(&v, &m.moves[0]).old_cell_quiet_at, t(2040));
    }
}
