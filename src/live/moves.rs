//! Planned tenant moves in the effective view, and the timer that makes
//! every instance flip at the same wall-clock time.
//!
//! A move (`[moves.<tenant>]`, [`crate::map::Move`]) has three phases,
//! decided by the time a view is built:
//!
//! ```text
//!              at - zone.ttl             at               at + zone.ttl
//! scheduled ───────┼──── short-ttl ───────┼────── moved ───────┼──── moved
//! old cell, ttl    │ old cell, move_ttl   │ new cell, move_ttl │ new cell, ttl
//! ```
//!
//! Answers served before `at - zone.ttl` carry `zone.ttl` and so expire by
//! `at`; answers served from then on carry `zone.move_ttl`, so no cache
//! holds the old cell for longer than `move_ttl` after the flip. The short
//! TTL lasts until `at + zone.ttl` on the new cell too, so a flip that must
//! be undone propagates as fast.
//!
//! The view keeps an [`Overlay`]: the tenants whose answers differ from
//! what `[tenants]` alone gives (moved, or with the short TTL), consulted by
//! [`crate::route::lookup_target`] only when it is not empty. So a map
//! without moves costs the query path one length check, and no query ever
//! reads the clock: [`run_timer`] publishes a new view (new serial, NOTIFY)
//! at each boundary instead, on every instance fed the same map.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::Store;
use crate::map::{CellId, Move, Snapshot, TenantIndex};

/// Where a move is, as seen by a view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Before `at - zone.ttl`: nothing changed yet.
    Scheduled,
    /// From `at - zone.ttl` until `at`: the old cell, with `move_ttl`.
    ShortTtl,
    /// From `at` on: the new cell (with `move_ttl` until `at + zone.ttl`).
    Moved,
}

impl Phase {
    /// The word used in the API and metrics (`scheduled`, `short-ttl`,
    /// `moved`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::ShortTtl => "short-ttl",
            Self::Moved => "moved",
        }
    }

    /// All phases, in order.
    pub const ALL: [Phase; 3] = [Phase::Scheduled, Phase::ShortTtl, Phase::Moved];
}

/// A move's state at one time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MoveState {
    /// The phase.
    pub phase: Phase,
    /// The tenant's answers carry `zone.move_ttl` (from `at - zone.ttl`
    /// until `at + zone.ttl`).
    pub short_ttl: bool,
}

/// When the short TTL starts and ends for a move.
fn window(m: &Move, ttl: u32) -> (SystemTime, SystemTime) {
    let ttl = Duration::from_secs(u64::from(ttl));
    (
        m.at.checked_sub(ttl).unwrap_or(SystemTime::UNIX_EPOCH),
        m.at + ttl,
    )
}

/// The state of `m` at `now`, for a zone whose normal TTL is `ttl`.
pub fn state_at(m: &Move, ttl: u32, now: SystemTime) -> MoveState {
    let (start, end) = window(m, ttl);
    let (phase, short_ttl) = if now < start {
        (Phase::Scheduled, false)
    } else if now < m.at {
        (Phase::ShortTtl, true)
    } else {
        (Phase::Moved, now < end)
    };
    MoveState { phase, short_ttl }
}

/// The first time after `now` at which the state of `m` changes.
pub fn next_change(m: &Move, ttl: u32, now: SystemTime) -> Option<SystemTime> {
    let (start, end) = window(m, ttl);
    [start, m.at, end].into_iter().find(|&t| t > now)
}

/// The latest boundary of `m` at or before `now`.
pub fn last_change(m: &Move, ttl: u32, now: SystemTime) -> Option<SystemTime> {
    let (start, end) = window(m, ttl);
    [end, m.at, start].into_iter().find(|&t| t <= now)
}

/// The moves of one view: each move's state, and the tenants whose answers
/// differ from the map's `[tenants]` (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct Overlay {
    /// Tenants with a moved cell or a short TTL → the cell assigned now
    /// (the `[tenants]` cell before the flip, the new one after).
    index: TenantIndex,
    /// By position in `index`: the answers carry `zone.move_ttl`.
    short: Vec<bool>,
    /// By position in the map's `moves`.
    states: Vec<MoveState>,
    /// The next time a state changes.
    next: Option<SystemTime>,
    /// The latest boundary already passed (when the view was built).
    last: Option<SystemTime>,
}

impl Overlay {
    /// The moves of `map` at `now`.
    pub fn new(map: &Snapshot, now: SystemTime) -> Self {
        if map.moves.is_empty() {
            return Self::default();
        }
        let ttl = map.zone.ttl;
        let states: Vec<MoveState> = map.moves.iter().map(|m| state_at(m, ttl, now)).collect();
        let next = map
            .moves
            .iter()
            .filter_map(|m| next_change(m, ttl, now))
            .min();
        let last = map
            .moves
            .iter()
            .filter_map(|m| last_change(m, ttl, now))
            .max();
        let active: Vec<(&Move, &MoveState)> = map
            .moves
            .iter()
            .zip(&states)
            .filter(|(_, s)| s.short_ttl || s.phase == Phase::Moved)
            .collect();
        let (index, _) = TenantIndex::build(
            active.len(),
            active.iter().map(|(m, _)| m.tenant.len()).sum(),
            active.iter().enumerate().map(|(i, (m, s))| {
                let assigned = if s.phase == Phase::Moved {
                    m.to
                } else {
                    m.from
                };
                (i, m.tenant.as_str(), assigned)
            }),
        );
        Self {
            index,
            short: active.iter().map(|(_, s)| s.short_ttl).collect(),
            states,
            next,
            last,
        }
    }

    /// The cell assigned now to `label` and whether its answers carry the
    /// short TTL, when a move affects it. Allocation-free; one length check
    /// when no move does.
    #[inline]
    pub fn get(&self, label: &[u8]) -> Option<(CellId, bool)> {
        if self.index.is_empty() {
            return None;
        }
        let (i, cell) = self.index.find(label)?;
        Some((cell, self.short.get(i).copied().unwrap_or(false)))
    }

    /// Tenants a move affects now: `(lowercased tenant, cell assigned now,
    /// short TTL)`.
    pub fn affected(&self) -> impl Iterator<Item = (&str, CellId, bool)> + '_ {
        self.index
            .iter()
            .zip(&self.short)
            .map(|((t, c), &s)| (t, c, s))
    }

    /// The state of move `i` (by position in the map's `moves`).
    pub fn state(&self, i: usize) -> Option<MoveState> {
        self.states.get(i).copied()
    }

    /// Every move's state, by position in the map's `moves`.
    pub fn states(&self) -> &[MoveState] {
        &self.states
    }

    /// The next time a move's state changes (the timer publishes then).
    pub fn next_change(&self) -> Option<SystemTime> {
        self.next
    }

    /// The latest time at or before the view's a move's state changed
    /// (the same on every instance fed the same map: serials derive from
    /// it, see `live::store`).
    pub fn last_change(&self) -> Option<SystemTime> {
        self.last
    }
}

/// Longest sleep of the timer: a wall clock that is stepped while a move is
/// pending is caught up with within this.
const MAX_SLEEP: Duration = Duration::from_secs(30);
/// Shortest sleep: a boundary that publishes nothing (a clock stepped
/// back) never makes the timer spin.
const MIN_SLEEP: Duration = Duration::from_millis(5);

/// Publishes a new view at each move boundary (`at - zone.ttl`, `at`,
/// `at + zone.ttl`) until `cancel`. It follows every publish (a reload that
/// adds, moves or removes a move reschedules it), and sleeps on the wall
/// clock's distance to the next boundary, so that instances fed the same
/// map flip together.
pub async fn run_timer<A: Send + Sync + 'static>(store: Arc<Store<A>>, cancel: CancellationToken) {
    let mut serial = store.subscribe_serial();
    // After a failed publish (a serial that could not be saved), the next
    // try waits this long instead of spinning on the boundary.
    let mut retry = MIN_SLEEP;
    loop {
        let next = store.load().view.moves().next_change();
        let wait = match next {
            Some(t) => t
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
                .clamp(retry, MAX_SLEEP),
            None => Duration::from_secs(3600),
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = serial.changed() => {
                if r.is_err() {
                    return;
                }
                continue;
            }
            _ = tokio::time::sleep(wait) => {}
        }
        if next.is_some_and(|t| SystemTime::now() >= t) {
            let s = store.clone();
            // Preparing answers for a large map takes a while: off the
            // async workers.
            match tokio::task::spawn_blocking(move || s.update("timer", |_| {})).await {
                Ok(Ok(published)) => {
                    retry = MIN_SLEEP;
                    if let Some(v) = published {
                        tracing::info!(
                            serial = v.serial(),
                            "move timer: published the zone version of a move boundary"
                        );
                    }
                }
                // Nothing was published; the next wake-up tries again.
                Ok(Err(e)) => {
                    retry = Duration::from_secs(1);
                    tracing::error!(
                        error = %e,
                        "move timer: the zone version of a move boundary could not be published; retrying in 1 s"
                    );
                }
                Err(e) => {
                    retry = Duration::from_secs(1);
                    tracing::error!(error = %e, "move timer: the publish panicked");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn mv(at: u64) -> Move {
        Move {
            tenant: "acme".into(),
            from: CellId(0),
            to: CellId(1),
            at: UNIX_EPOCH + Duration::from_secs(at),
        }
    }

    fn t(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn phases_follow_the_boundaries() {
        let m = mv(1000);
        let st = |s| state_at(&m, 30, t(s));
        assert_eq!(st(969).phase, Phase::Scheduled);
        assert!(!st(969).short_ttl);
        assert_eq!(st(970).phase, Phase::ShortTtl);
        assert!(st(970).short_ttl);
        assert_eq!(st(999).phase, Phase::ShortTtl);
        assert_eq!(st(1000).phase, Phase::Moved);
        assert!(st(1000).short_ttl);
        assert!(st(1029).short_ttl);
        assert_eq!(st(1030).phase, Phase::Moved);
        assert!(!st(1030).short_ttl);
        assert_eq!(next_change(&m, 30, t(0)), Some(t(970)));
        assert_eq!(next_change(&m, 30, t(970)), Some(t(1000)));
        assert_eq!(next_change(&m, 30, t(1000)), Some(t(1030)));
        assert_eq!(next_change(&m, 30, t(1030)), None);
        assert_eq!(last_change(&m, 30, t(969)), None);
        assert_eq!(last_change(&m, 30, t(999)), Some(t(970)));
        assert_eq!(last_change(&m, 30, t(1000)), Some(t(1000)));
        assert_eq!(last_change(&m, 30, t(5000)), Some(t(1030)));
    }
}
