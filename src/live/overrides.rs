//! Operator overrides of a cell's status: set and cleared through the HTTP
//! API (`PUT`/`DELETE /v1/cells/{id}/status`), optionally expiring, kept in
//! `<state-dir>/overrides.json` so that they survive reloads and restarts.
//!
//! - **Durable first.** A change is written to the file (temporary file,
//!   fsync, rename, fsync of the directory) before the view that applies
//!   it is published: an override that answers have followed is never lost
//!   by a crash. A change that cannot be written is refused and changes
//!   nothing. Without `--state-dir`, overrides live in memory only (and
//!   die with the process); [`Overrides::persisted`] says so.
//! - **A bad file is no outage.** A file that cannot be read or parsed at
//!   start is reported (an error log line, `/readyz`) and ignored: the
//!   process starts without overrides, and the next change rewrites it.
//! - **Expiry.** An override may carry an expiry; [`Overrides::run_expiry`]
//!   clears it when due (actor `timer`). One found expired at start never
//!   applies.
//! - **No stranding.** An override to `down` that would leave a cell with
//!   no serving cell on its failover chain (its tenants would have
//!   nowhere to go) is refused with the chain that fails.
//!
//! Each change is audited ([`super::audit`]) with its actor, reason and
//! expiry. Overrides are keyed by cell id, like [`super::Conditions`]: an
//! override of a cell that a new map drops is kept, and applies again if
//! the cell comes back, until it is cleared or expires.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::audit::{Event, rfc3339};
use super::store::Store;
use super::view::View;
use crate::map::failover::{self, Chain};
use crate::map::{CellId, Status};

/// Name of the override file inside `--state-dir`.
pub const OVERRIDES_FILE: &str = "overrides.json";
/// Longest reason, in bytes.
pub const MAX_REASON: usize = 512;
/// Longest expiry (a year).
pub const MAX_EXPIRES_IN_SECONDS: u64 = 366 * 86_400;

/// One override in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    /// The status it imposes.
    #[serde(with = "status_word")]
    pub status: Status,
    /// Why (free text from the operator).
    pub reason: String,
    /// Who set it (the API caller's name).
    pub actor: String,
    /// When it was set, Unix milliseconds.
    pub set_at_ms: u64,
    /// When it expires, Unix milliseconds.
    pub expires_at_ms: Option<u64>,
}

impl Override {
    /// When it was set.
    pub fn set_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.set_at_ms)
    }

    /// When it expires.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at_ms
            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
    }
}

mod status_word {
    use serde::{Deserialize, Deserializer, Serializer, de};

    use crate::map::Status;

    pub(super) fn serialize<S: Serializer>(s: &Status, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(s.as_str())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Status, D::Error> {
        let word = String::deserialize(d)?;
        Status::from_word(&word).ok_or_else(|| {
            de::Error::custom(format!("`{word}` is not one of active, draining, down"))
        })
    }
}

/// The override file's content.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// Format version of the file.
    format: u32,
    overrides: BTreeMap<String, Override>,
}

const FORMAT: u32 = 1;

/// Why an override change was refused. Nothing changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OverrideError {
    /// The map in force has no such cell.
    #[error("unknown cell `{0}`")]
    UnknownCell(String),
    /// The request itself is wrong (reason, expiry).
    #[error("{0}")]
    Invalid(String),
    /// Down would leave a cell with no serving cell on its failover chain.
    #[error("{0}")]
    WouldStrand(String),
    /// The override file could not be written.
    #[error("cannot persist the override, nothing changed: {0}")]
    Persist(String),
    /// The serial of the zone version it would make could not be saved.
    #[error("nothing changed: {0}")]
    Serial(#[from] crate::live::serial::SerialError),
}

/// What an accepted change did.
#[derive(Debug, Clone)]
pub struct Changed {
    /// The override before the change.
    pub before: Option<Override>,
    /// The override after it.
    pub after: Option<Override>,
    /// The view in force after the change (a new one if answers moved).
    pub view: Arc<View>,
    /// Written to the state directory (false without `--state-dir`).
    pub persisted: bool,
}

/// The overrides in force; see the module docs.
#[derive(Debug)]
pub struct Overrides {
    state: Mutex<BTreeMap<String, Override>>,
    file: Option<PathBuf>,
    load_error: Option<String>,
    /// Wakes the expiry task when the set changes.
    changed: tokio::sync::Notify,
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().min(u128::from(u64::MAX)) as u64)
}

impl Overrides {
    /// The overrides kept in `state_dir` (none without one). A file that
    /// cannot be read or parsed is logged at error level, reported by
    /// [`Overrides::load_error`], and ignored.
    pub fn load(state_dir: Option<&Path>) -> Self {
        let file = state_dir.map(|d| d.join(OVERRIDES_FILE));
        let (state, load_error) = match &file {
            None => (BTreeMap::new(), None),
            Some(path) => match read(path) {
                Ok(o) => (o, None),
                Err(e) => {
                    tracing::error!(
                        file = %path.display(),
                        error = %e,
                        "cannot load the operator overrides; starting without them (the next change rewrites the file)"
                    );
                    (BTreeMap::new(), Some(format!("{}: {e}", path.display())))
                }
            },
        };
        if file.is_none() {
            tracing::warn!(
                "no --state-dir: operator overrides are kept in memory only and are lost on restart"
            );
        } else if !state.is_empty() {
            tracing::info!(overrides = state.len(), "operator overrides loaded");
        }
        crate::metrics::overrides(state.len());
        Self {
            state: Mutex::new(state),
            file,
            load_error,
            changed: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Override>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The statuses the overrides not expired at `now_ms` impose, for the
    /// store's first [`super::Conditions`].
    pub fn in_force(&self, now_ms: u64) -> BTreeMap<String, Status> {
        self.lock()
            .iter()
            .filter(|(_, o)| o.expires_at_ms.is_none_or(|e| e > now_ms))
            .map(|(k, o)| (k.clone(), o.status))
            .collect()
    }

    /// Every override, by cell id.
    pub fn list(&self) -> BTreeMap<String, Override> {
        self.lock().clone()
    }

    /// The override of `cell`, if any.
    pub fn get(&self, cell: &str) -> Option<Override> {
        self.lock().get(cell).cloned()
    }

    /// Whether changes are written to a state directory.
    pub fn persisted(&self) -> bool {
        self.file.is_some()
    }

    /// Why the file could not be loaded at start, if it could not.
    pub fn load_error(&self) -> Option<&str> {
        self.load_error.as_deref()
    }

    /// The earliest expiry, Unix milliseconds.
    pub fn next_expiry(&self) -> Option<u64> {
        self.lock().values().filter_map(|o| o.expires_at_ms).min()
    }

    /// Writes `set` to the file (atomically, durably); nothing without a
    /// state directory.
    fn persist(&self, set: &BTreeMap<String, Override>) -> Result<(), String> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let text = serde_json::to_vec_pretty(&File {
            format: FORMAT,
            overrides: set.clone(),
        })
        .map_err(|e| e.to_string())?;
        write_atomic(path, &text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Sets the override of `cell` to `status` for `actor`, expiring after
    /// `expires_in` seconds if given; published once durable.
    #[allow(clippy::too_many_arguments)]
    pub fn set<A: Send + Sync + 'static>(
        &self,
        store: &Store<A>,
        cell: &str,
        status: Status,
        reason: &str,
        actor: &str,
        expires_in: Option<u64>,
        now_ms: u64,
    ) -> Result<Changed, OverrideError> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(OverrideError::Invalid(
                "`reason` must say why (a non-empty string)".into(),
            ));
        }
        if reason.len() > MAX_REASON || reason.chars().any(char::is_control) {
            return Err(OverrideError::Invalid(format!(
                "`reason` must be at most {MAX_REASON} bytes of printable text"
            )));
        }
        if let Some(n) = expires_in
            && !(1..=MAX_EXPIRES_IN_SECONDS).contains(&n)
        {
            return Err(OverrideError::Invalid(format!(
                "`expires_in_seconds` must be 1..={MAX_EXPIRES_IN_SECONDS}"
            )));
        }
        let mut state = self.lock();
        let id = store
            .load()
            .view
            .map()
            .cell_by_id(cell)
            .ok_or_else(|| OverrideError::UnknownCell(cell.to_owned()))?;
        let record = Override {
            status,
            reason: reason.to_owned(),
            actor: actor.to_owned(),
            set_at_ms: now_ms,
            expires_at_ms: expires_in.map(|s| now_ms.saturating_add(s * 1000)),
        };
        let mut next = state.clone();
        let before = next.insert(cell.to_owned(), record.clone());
        let statuses = statuses(&next);
        let published = store.try_update(
            actor,
            |c| c.overrides = statuses,
            |candidate, current| {
                if status == Status::Down {
                    // The map may have changed since `id` was looked up:
                    // both views share the map in force now.
                    let id = candidate.map().cell_by_id(cell).unwrap_or(id);
                    strand_check(candidate, current, id).map_err(OverrideError::WouldStrand)?;
                }
                self.persist(&next).map_err(OverrideError::Persist)
            },
        )?;
        *state = next;
        crate::metrics::overrides(state.len());
        drop(state);
        self.changed.notify_one();
        let mut event = Event::new(actor, "override_set")
            .cell(cell)
            .change(
                before.as_ref().map(|o| o.status.to_string()),
                Some(status.to_string()),
            )
            .reason(reason)
            .detail("persisted", self.persisted());
        if let Some(at) = record.expires_at() {
            event = event.detail("expires_at", rfc3339(at));
        }
        store.audit().record(event);
        tracing::info!(%cell, %status, %actor, reason, expires_in, "operator override set");
        Ok(Changed {
            before,
            after: Some(record),
            view: published.unwrap_or_else(|| store.load().view.clone()),
            persisted: self.persisted(),
        })
    }

    /// Clears the override of `cell` for `actor`. `Ok` with `before: None`
    /// when there was none (and nothing changes).
    pub fn clear<A: Send + Sync + 'static>(
        &self,
        store: &Store<A>,
        cell: &str,
        actor: &str,
    ) -> Result<Changed, OverrideError> {
        self.remove(store, cell, actor, "override_cleared", false)
    }

    /// Removes `cell`'s override. An expiry (`forced`) goes ahead even when
    /// the file cannot be written: its time is up, and a restart drops an
    /// expired override found in the file anyway.
    fn remove<A: Send + Sync + 'static>(
        &self,
        store: &Store<A>,
        cell: &str,
        actor: &str,
        what: &'static str,
        forced: bool,
    ) -> Result<Changed, OverrideError> {
        let mut state = self.lock();
        if !state.contains_key(cell) {
            let view = store.load().view.clone();
            if view.map().cell_by_id(cell).is_none() {
                return Err(OverrideError::UnknownCell(cell.to_owned()));
            }
            return Ok(Changed {
                before: None,
                after: None,
                view,
                persisted: self.persisted(),
            });
        }
        let mut next = state.clone();
        let before = next.remove(cell);
        let statuses = statuses(&next);
        let published = store.try_update(
            actor,
            |c| c.overrides = statuses,
            |_, _| match self.persist(&next) {
                Err(e) if forced => {
                    tracing::error!(%cell, error = %e, "cannot persist the expiry of an override; it is cleared in memory");
                    Ok(())
                }
                other => other.map_err(OverrideError::Persist),
            },
        )?;
        *state = next;
        crate::metrics::overrides(state.len());
        drop(state);
        self.changed.notify_one();
        store.audit().record(
            Event::new(actor, what)
                .cell(cell)
                .change(before.as_ref().map(|o| o.status.to_string()), None)
                .reason(
                    before
                        .as_ref()
                        .map(|o| o.reason.clone())
                        .unwrap_or_default(),
                )
                .detail("persisted", self.persisted()),
        );
        tracing::info!(%cell, %actor, what, "operator override removed");
        Ok(Changed {
            before,
            after: None,
            view: published.unwrap_or_else(|| store.load().view.clone()),
            persisted: self.persisted(),
        })
    }

    /// Clears every override due at `now_ms` (actor `timer`); returns how
    /// many.
    pub fn expire<A: Send + Sync + 'static>(&self, store: &Store<A>, now_ms: u64) -> usize {
        let due: Vec<String> = self
            .lock()
            .iter()
            .filter(|(_, o)| o.expires_at_ms.is_some_and(|e| e <= now_ms))
            .map(|(k, _)| k.clone())
            .collect();
        for cell in &due {
            if let Err(e) = self.remove(store, cell, "timer", "override_expired", true) {
                tracing::error!(%cell, error = %e, "cannot expire an override");
            }
        }
        due.len()
    }

    /// Expires overrides when they are due, until `cancel` fires.
    pub async fn run_expiry<A: Send + Sync + 'static>(
        self: Arc<Self>,
        store: Arc<Store<A>>,
        cancel: CancellationToken,
    ) {
        loop {
            let wait = match self.next_expiry() {
                // Not long past the expiry: at least 10 ms, at most a minute
                // (a clock that jumps is caught up with then).
                Some(at) => Duration::from_millis(at.saturating_sub(now_ms()).clamp(10, 60_000)),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.changed.notified() => continue,
                _ = tokio::time::sleep(wait) => {}
            }
            let (this, store) = (self.clone(), store.clone());
            let _ = tokio::task::spawn_blocking(move || this.expire(&store, now_ms())).await;
        }
    }
}

/// Overrides bound to the store they apply to, for callers that do not
/// know the store's answer type (the HTTP API).
pub trait Control: Send + Sync + std::fmt::Debug {
    /// [`Overrides::set`] on the bound store, now.
    fn set(
        &self,
        cell: &str,
        status: Status,
        reason: &str,
        actor: &str,
        expires_in: Option<u64>,
    ) -> Result<Changed, OverrideError>;
    /// [`Overrides::clear`] on the bound store.
    fn clear(&self, cell: &str, actor: &str) -> Result<Changed, OverrideError>;
    /// The overrides.
    fn overrides(&self) -> &Overrides;
}

/// [`Overrides`] bound to a store.
pub struct Bound<A> {
    /// The overrides.
    pub overrides: Arc<Overrides>,
    /// The store they apply to.
    pub store: Arc<Store<A>>,
}

impl<A> std::fmt::Debug for Bound<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("overrides", &self.overrides)
            .field("store", &self.store)
            .finish()
    }
}

impl<A: Send + Sync + 'static> Control for Bound<A> {
    fn set(
        &self,
        cell: &str,
        status: Status,
        reason: &str,
        actor: &str,
        expires_in: Option<u64>,
    ) -> Result<Changed, OverrideError> {
        self.overrides.set(
            &self.store,
            cell,
            status,
            reason,
            actor,
            expires_in,
            now_ms(),
        )
    }

    fn clear(&self, cell: &str, actor: &str) -> Result<Changed, OverrideError> {
        self.overrides.clear(&self.store, cell, actor)
    }

    fn overrides(&self) -> &Overrides {
        &self.overrides
    }
}

fn statuses(set: &BTreeMap<String, Override>) -> BTreeMap<String, Status> {
    set.iter().map(|(k, o)| (k.clone(), o.status)).collect()
}

/// The overrides in `path`; none when it does not exist.
fn read(path: &Path) -> Result<BTreeMap<String, Override>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(format!("cannot read: {e}")),
    };
    let file: File =
        serde_json::from_slice(&bytes).map_err(|e| format!("not an override file: {e}"))?;
    if file.format != FORMAT {
        return Err(format!(
            "format {} is not the format this version writes ({FORMAT})",
            file.format
        ));
    }
    Ok(file.overrides)
}

/// Writes `bytes` to `path` atomically and durably: a temporary file in the
/// same directory, fsync, rename over `path`, fsync of the directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Refuses a candidate view in which a cell is stranded that is not in
/// `current`; the message names the failover chain that reaches no serving
/// cell.
fn strand_check(candidate: &View, current: &View, cell: CellId) -> Result<(), String> {
    let newly: Vec<CellId> = candidate
        .map()
        .cell_ids()
        .filter(|&c| candidate.state(c).stranded && !current.state(c).stranded)
        .collect();
    let Some(&first) = newly.first() else {
        return Ok(());
    };
    let c = if newly.contains(&cell) { cell } else { first };
    let name = |c: CellId| candidate.cell(c).id.as_str();
    let chain = failover::follow(
        c,
        |x| candidate.cell(x).failover,
        |x| candidate.state(x).status == Status::Down,
    );
    let (path, end) = match &chain {
        Chain::Loops { path } => (path.clone(), "comes back to a down cell".to_owned()),
        Chain::DeadEnd { path } => (
            path.clone(),
            format!(
                "ends at `{}`, which has no failover",
                path.last().map_or("", |&x| name(x))
            ),
        ),
        Chain::Serves { .. } => (vec![c], "reaches no serving cell".to_owned()),
    };
    let who = if c == cell {
        "it".to_owned()
    } else {
        format!("`{}`", name(c))
    };
    let more = if newly.len() > 1 {
        format!(" ({} cell(s) in all)", newly.len())
    } else {
        String::new()
    };
    Err(format!(
        "taking `{}` down would strand {who}{more}: its failover chain {} {end} without reaching a \
         serving cell, so its tenants would have nowhere to go. Bring a cell of the chain back \
         (or give the chain a serving end in the map) first",
        name(cell),
        path.iter()
            .map(|&x| name(x))
            .collect::<Vec<_>>()
            .join(" → ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::{Conditions, Serials};

    fn store() -> Store<()> {
        let map = Arc::new(crate::map::load_example().expect("example"));
        Store::new(map, Conditions::default(), Serials::open(None), |_| ()).expect("store")
    }

    fn status_of(store: &Store<()>, cell: &str) -> Status {
        let view = store.load().view.clone();
        view.state(view.map().cell_by_id(cell).expect("cell"))
            .status
    }

    #[test]
    fn set_is_durable_before_it_is_published_and_survives_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store();
        let o = Overrides::load(Some(dir.path()));
        assert!(o.persisted() && o.load_error().is_none());
        let serial = s.load().view.serial();
        let c = o
            .set(
                &s,
                "use1-a",
                Status::Down,
                " maintenance ",
                "ops",
                Some(60),
                1_000,
            )
            .expect("set");
        assert!(c.before.is_none() && c.persisted);
        assert!(c.view.serial() > serial);
        assert_eq!(status_of(&s, "use1-a"), Status::Down);
        let again = Overrides::load(Some(dir.path()));
        let got = again.get("use1-a").expect("persisted");
        assert_eq!(
            (got.status, got.reason.as_str(), got.actor.as_str()),
            (Status::Down, "maintenance", "ops")
        );
        assert_eq!(got.expires_at_ms, Some(61_000));
        assert_eq!(again.in_force(60_999).len(), 1);
        assert!(again.in_force(61_000).is_empty());
    }

    #[test]
    fn a_write_failure_refuses_the_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blocked = dir.path().join("file");
        std::fs::write(&blocked, "x").expect("write");
        let s = store();
        let o = Overrides::load(Some(&blocked.join("state")));
        let e = o
            .set(&s, "use1-a", Status::Down, "m", "ops", None, 1)
            .expect_err("cannot persist");
        assert!(matches!(e, OverrideError::Persist(_)), "{e}");
        assert_eq!(status_of(&s, "use1-a"), Status::Active);
        assert!(o.list().is_empty());
    }

    #[test]
    fn a_corrupt_file_is_reported_and_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(OVERRIDES_FILE), "{not json").expect("write");
        let o = Overrides::load(Some(dir.path()));
        assert!(o.list().is_empty());
        assert!(
            o.load_error().is_some_and(|e| e.contains("overrides.json")),
            "{:?}",
            o.load_error()
        );
        // The next change rewrites it.
        let s = store();
        o.set(&s, "use1-a", Status::Draining, "m", "ops", None, 1)
            .expect("set");
        assert!(Overrides::load(Some(dir.path())).load_error().is_none());
    }

    #[test]
    fn clearing_and_expiry() {
        let s = store();
        let o = Overrides::load(None);
        assert!(!o.persisted());
        o.set(&s, "use1-a", Status::Down, "m", "ops", Some(5), 1_000)
            .expect("set");
        o.set(&s, "use1-b", Status::Draining, "m", "ops", None, 1_000)
            .expect("set");
        assert_eq!(o.next_expiry(), Some(6_000));
        assert_eq!(o.expire(&s, 5_999), 0);
        assert_eq!(o.expire(&s, 6_000), 1);
        assert_eq!(status_of(&s, "use1-a"), Status::Active);
        let c = o.clear(&s, "use1-b", "ops").expect("clear");
        assert_eq!(c.before.map(|b| b.status), Some(Status::Draining));
        assert_eq!(status_of(&s, "use1-b"), Status::Active);
        // Nothing to clear; an unknown cell.
        assert!(
            o.clear(&s, "use1-b", "ops")
                .expect("no-op")
                .before
                .is_none()
        );
        assert!(matches!(
            o.clear(&s, "nope", "ops"),
            Err(OverrideError::UnknownCell(_))
        ));
        assert!(matches!(
            o.set(&s, "nope", Status::Down, "m", "ops", None, 1),
            Err(OverrideError::UnknownCell(_))
        ));
        assert!(matches!(
            o.set(&s, "use1-a", Status::Down, "  ", "ops", None, 1),
            Err(OverrideError::Invalid(_))
        ));
        assert!(matches!(
            o.set(&s, "use1-a", Status::Down, "m", "ops", Some(0), 1),
            Err(OverrideError::Invalid(_))
        ));
    }

    #[test]
    fn an_override_that_strands_a_cell_is_refused() {
        let s = store();
        let o = Overrides::load(None);
        // use1-a and use1-b fail over to each other: one down is fine ...
        o.set(&s, "use1-a", Status::Down, "m", "ops", None, 1)
            .expect("set");
        // ... both down strands them.
        let e = o
            .set(&s, "use1-b", Status::Down, "m", "ops", None, 1)
            .expect_err("strands");
        let OverrideError::WouldStrand(msg) = e else {
            panic!("{e}")
        };
        assert!(
            msg.contains("taking `use1-b` down would strand it"),
            "{msg}"
        );
        assert!(msg.contains("use1-b → use1-a → use1-b"), "{msg}");
        assert_eq!(status_of(&s, "use1-b"), Status::Active);
        assert!(o.get("use1-b").is_none());
        // Draining strands nothing.
        o.set(&s, "use1-b", Status::Draining, "m", "ops", None, 1)
            .expect("set");
    }
}
