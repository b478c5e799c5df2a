//! The store: the one value every query reads, and the only way to change it.
//!
//! [`Store::load`] is a lock-free `arc-swap` read of a [`Live`]: the
//! effective [`View`] and the answers prepared from it (by a function the
//! store was given: the DNS layer's, in `cellns serve`), swapped as one
//! value, so an answer and a token never come from two versions.
//!
//! Publishers (the reload thread with a new map, and anything that changes
//! the [`Conditions`]: operator overrides, health verdicts) take a lock
//! that readers never see, build the next view and its answers, give it the
//! next serial ([`super::serial`]: the map's declared serial when the view
//! is the map alone, else the clock) and swap it in. A serial that cannot
//! be saved (with `--state-dir`) is an error and nothing is published. A
//! change that leaves every answer as it was publishes nothing.
//!
//! Every publish is also observed here, since every change goes through
//! this one place: the per-cell status gauges, and a log line and an audit
//! line ([`super::audit`]) for each cell whose effective status changes and
//! for each entry into or exit from fail-static.
//!
//! Replaced values are kept in a retired list until no reader holds them
//! and then dropped by [`Store::reap`], which only the reload thread calls
//! for values that held another map: freeing a million-tenant snapshot takes
//! tens of milliseconds and must never happen on a thread that answers
//! queries (see `reload`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;

use super::audit::{Audit, Event};
use super::moves::Phase;
use super::quiet::Quiet;
use super::serial::{Basis, SerialError, Serials};
use super::view::{CellState, Conditions, View};
use crate::map::Snapshot;

/// What queries read: one zone version and the answers prepared from it.
#[derive(Debug)]
pub struct Live<A> {
    /// The effective view.
    pub view: Arc<View>,
    /// What the DNS layer prepared from it.
    pub answers: A,
}

/// The outcome of the most recent reload attempts.
#[derive(Debug, Clone, Default)]
pub struct ReloadStatus {
    /// Successful reloads since start.
    pub successes: u64,
    /// Failed reloads since start.
    pub failures: u64,
    /// The last failure's message, cleared by the next success.
    pub last_error: Option<String>,
    /// When the last failure happened.
    pub last_error_at: Option<SystemTime>,
    /// The last attempt failed for a reason that may pass, and it will be
    /// tried again without waiting for a change of the file.
    pub retrying: bool,
    /// How the map file is watched.
    pub watch: WatchState,
}

/// How the map file is watched, as the reload thread last saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum WatchState {
    /// No map file (the embedded example): nothing to watch.
    #[default]
    None,
    /// Every change of the map raises an event.
    Ok,
    /// Changes may be seen late, by the periodic check only: why (names
    /// paths; for logs and admin views, not for unauthenticated probes).
    Degraded(String),
}

impl WatchState {
    /// The word `/readyz` shows: `none`, `ok` or `degraded`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Ok => "ok",
            Self::Degraded(_) => "degraded",
        }
    }
}

/// Read access to the view in force, for parts that need the view but not
/// the DNS answers (tokens, the HTTP API).
pub trait Current: Send + Sync + std::fmt::Debug {
    /// The effective view in force.
    fn view(&self) -> Arc<View>;
    /// The reload status.
    fn reload_status(&self) -> ReloadStatus;
    /// When cells stop being pointed at (token issue records here too).
    fn quiet(&self) -> &Quiet;
}

/// Builds the answers of a view.
type Prepare<A> = Box<dyn Fn(&View) -> A + Send + Sync>;

/// Sees each publish (the value in force, then the one replacing it)
/// before it is served: the IXFR journal.
type OnPublish<A> = Box<dyn Fn(&Live<A>, &Live<A>) + Send + Sync>;

/// What publishers share, behind the write lock.
struct Writer {
    conditions: Conditions,
    serials: Serials,
}

/// Holds the [`Live`] value in force; see the module docs.
pub struct Store<A> {
    current: ArcSwap<Live<A>>,
    writer: Mutex<Writer>,
    prepare: Prepare<A>,
    reload: Mutex<ReloadStatus>,
    /// The serial in force, for tasks that act on changes (NOTIFY).
    serial: tokio::sync::watch::Sender<u32>,
    retired: Mutex<Vec<Arc<Live<A>>>>,
    /// Where publishes are audited; the log only until one is set.
    audit: OnceLock<Arc<Audit>>,
    /// Called on every publish, before the new value is served.
    on_publish: OnceLock<OnPublish<A>>,
    /// When cells stop being pointed at (fed by every publish and token).
    quiet: Quiet,
}

impl<A> std::fmt::Debug for Store<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let live = self.current.load();
        f.debug_struct("Store")
            .field("version", &live.view.map().version)
            .field("serial", &live.view.serial())
            .finish_non_exhaustive()
    }
}

impl<A: Send + Sync + 'static> Store<A> {
    /// A store serving `map` under `conditions`, with the first serial from
    /// `serials`, its answers made by `prepare`. Fails when that serial
    /// cannot be saved in the state directory.
    pub fn new(
        map: Arc<Snapshot>,
        conditions: Conditions,
        mut serials: Serials,
        prepare: impl Fn(&View) -> A + Send + Sync + 'static,
    ) -> Result<Self, SerialError> {
        let view = View::new(map, &conditions, 0);
        let serial = serials.issue(basis(&view))?;
        let view = view.with_serial(serial);
        publish_metrics(&view, None);
        if view.fail_static() {
            tracing::warn!(
                serving = view.health().serving,
                unhealthy = view.health().unhealthy,
                "fail-static: health would take out more than max_unhealthy_fraction of the serving cells; ignoring health for every cell"
            );
        }
        crate::metrics::reloads_start();
        let (serial, _) = tokio::sync::watch::channel(view.serial());
        let quiet = Quiet::default();
        quiet.observe(&view, view.built_at());
        publish_move_metrics(&view, &quiet);
        let answers = prepare(&view);
        Ok(Self {
            current: ArcSwap::from_pointee(Live {
                view: Arc::new(view),
                answers,
            }),
            writer: Mutex::new(Writer {
                conditions,
                serials,
            }),
            prepare: Box::new(prepare),
            reload: Mutex::new(ReloadStatus::default()),
            serial,
            retired: Mutex::new(Vec::new()),
            audit: OnceLock::new(),
            on_publish: OnceLock::new(),
            quiet,
        })
    }

    /// When cells stop being pointed at by answers and tokens.
    pub fn quiet(&self) -> &Quiet {
        &self.quiet
    }

    /// Audits every publish into `audit` from now on (once; later calls
    /// change nothing and return false). Until then, audit lines go to the
    /// log.
    pub fn set_audit(&self, audit: Arc<Audit>) -> bool {
        self.audit.set(audit).is_ok()
    }

    /// Calls `f` with the value in force and the value replacing it on
    /// every publish from now on, on the publisher's thread and with its
    /// lock held, before the new value is served (once; later calls change
    /// nothing and return false). The IXFR journal records its differences
    /// here: off the query path, and ready before anyone sees the serial.
    pub fn set_on_publish(&self, f: impl Fn(&Live<A>, &Live<A>) + Send + Sync + 'static) -> bool {
        self.on_publish.set(Box::new(f)).is_ok()
    }

    /// The audit log publishes are recorded in.
    pub fn audit(&self) -> &Audit {
        static LOG_ONLY: OnceLock<Audit> = OnceLock::new();
        match self.audit.get() {
            Some(a) => a,
            None => LOG_ONLY.get_or_init(Audit::log_only),
        }
    }

    /// What queries read. Lock-free; hold the guard only for one query (or
    /// one batch of them).
    #[inline]
    pub fn load(&self) -> arc_swap::Guard<Arc<Live<A>>> {
        self.current.load()
    }

    /// The value in force, as an owned `Arc` (for longer work, such as a
    /// zone transfer that must see one version throughout).
    pub fn load_full(&self) -> Arc<Live<A>> {
        self.current.load_full()
    }

    /// Follows the SOA serial in force: changes after each publish.
    pub fn subscribe_serial(&self) -> tokio::sync::watch::Receiver<u32> {
        self.serial.subscribe()
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        // A publisher that panicked left the writer as it was before its
        // change (it only mutates after building): keep going.
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes a new map under the conditions in force; returns the view
    /// now in force. The caller has already decided the map is acceptable
    /// (validation, safety gates). Fails, publishing nothing, when its
    /// serial cannot be saved. May wait for the clock (at most
    /// [`super::serial::MAX_CLOCK_WAIT`]). The reload is recorded as a
    /// success before the map shows, so that nobody sees the new version
    /// next to the previous failure.
    pub fn publish_map(&self, map: Arc<Snapshot>) -> Result<Arc<View>, SerialError> {
        let mut w = self.writer();
        let view = View::new(map, &w.conditions, 0);
        let serial = w.serials.issue(basis(&view))?;
        self.record_success();
        Ok(self.swap(view.with_serial(serial), "reload"))
    }

    /// Changes the conditions and publishes the result, unless every answer
    /// stays the same; returns the new view when one was published. The
    /// map file is not read again. `actor` is who made the change (for the
    /// audit log: `health`, `timer`, an API caller). Fails, changing
    /// nothing, when the new version's serial cannot be saved. May block for
    /// up to [`super::serial::MAX_CLOCK_WAIT`] (clock serials wait for the
    /// clock): call it from a blocking context.
    pub fn update(
        &self,
        actor: &str,
        change: impl FnOnce(&mut Conditions),
    ) -> Result<Option<Arc<View>>, SerialError> {
        self.try_update(actor, change, |_, _| Ok::<(), SerialError>(()))
    }

    /// As [`Store::update`], but `accept` sees the candidate view and the
    /// view in force first, under the publishers' lock: it may refuse the
    /// change (nothing changes, its error is returned) or make it durable
    /// before anyone can see it (the override file is written there).
    pub fn try_update<E: From<SerialError>>(
        &self,
        actor: &str,
        change: impl FnOnce(&mut Conditions),
        accept: impl FnOnce(&View, &View) -> Result<(), E>,
    ) -> Result<Option<Arc<View>>, E> {
        let mut w = self.writer();
        let mut conditions = w.conditions.clone();
        change(&mut conditions);
        let current = self.current.load_full();
        let candidate = View::new(current.view.map_arc().clone(), &conditions, 0);
        accept(&candidate, &current.view)?;
        if candidate.same_answers(&current.view) {
            w.conditions = conditions;
            return Ok(None);
        }
        let serial = w.serials.issue(basis(&candidate))?;
        w.conditions = conditions;
        let view = self.swap(candidate.with_serial(serial), actor);
        // Values retired by this kind of change share the map in force, so
        // dropping them here frees little; older maps wait for the reload
        // thread.
        self.reap_same_map(&current.view);
        Ok(Some(view))
    }

    /// Prepares the answers of the map and conditions in force again and
    /// publishes them under a new serial; returns the view now in force.
    /// For what changes answers from outside the view: the DNS layer's
    /// DNSSEC keys (a key published, activated or retired is a new zone
    /// version, so its serial is the clock's: the map's declared serial
    /// names the map's content, not the keys'). `actor` caused it. Fails,
    /// publishing nothing, when the serial cannot be saved; may wait for
    /// the clock (at most [`super::serial::MAX_CLOCK_WAIT`]).
    pub fn republish(&self, actor: &str) -> Result<Arc<View>, SerialError> {
        let mut w = self.writer();
        let current = self.current.load_full();
        let serial = w.serials.issue(Basis::Clock)?;
        let view = self.swap(
            View::new(current.view.map_arc().clone(), &w.conditions, serial),
            actor,
        );
        self.reap_same_map(&current.view);
        Ok(view)
    }

    /// The conditions in force.
    pub fn conditions(&self) -> Conditions {
        self.writer().conditions.clone()
    }

    /// Prepares `view`'s answers, swaps, and retires the value replaced.
    /// Called with the writer lock held; `actor` caused the change.
    fn swap(&self, view: View, actor: &str) -> Arc<View> {
        let answers = (self.prepare)(&view);
        let view = Arc::new(view);
        let new = Arc::new(Live {
            view: view.clone(),
            answers,
        });
        if let Some(f) = self.on_publish.get() {
            f(&self.current.load(), &new);
        }
        let old = self.current.swap(new);
        publish_metrics(&view, Some(&old.view));
        // In force from the swap on: what the old view served ends now.
        self.quiet.observe(&view, SystemTime::now());
        publish_move_metrics(&view, &self.quiet);
        self.serial.send_replace(view.serial());
        self.observe(&old.view, &view, actor);
        self.retired_list().push(old);
        view
    }

    /// Logs and audits what a publish changed: fail-static entry or exit,
    /// and each cell whose effective status or source changed.
    fn observe(&self, old: &View, new: &View, actor: &str) {
        let audit = self.audit();
        let (was, is) = (old.health(), new.health());
        if was.fail_static != is.fail_static {
            let why = format!(
                "health finds {} of {} serving cell(s) unhealthy; max_unhealthy_fraction is {}",
                is.unhealthy, is.serving, is.max_unhealthy_fraction
            );
            if is.fail_static {
                tracing::warn!(
                    serving = is.serving,
                    unhealthy = is.unhealthy,
                    serial = new.serial(),
                    "fail-static entered: {why}; ignoring health for every cell"
                );
            } else {
                tracing::warn!(
                    serving = is.serving,
                    unhealthy = is.unhealthy,
                    serial = new.serial(),
                    "fail-static exited: {why}; health applies again"
                );
            }
            let what = if is.fail_static {
                "fail_static_entered"
            } else {
                "fail_static_exited"
            };
            audit.record(
                Event::new(actor, what)
                    .change(
                        Some(was.fail_static.to_string()),
                        Some(is.fail_static.to_string()),
                    )
                    .reason(why)
                    .detail("serving", is.serving)
                    .detail("unhealthy", is.unhealthy)
                    .detail("serial", new.serial()),
            );
        }
        let word = |s: &CellState| format!("{} ({})", s.status, s.source.as_str());
        let same_map = Arc::ptr_eq(old.map_arc(), new.map_arc());
        let old_ids: HashMap<&str, usize> = if same_map {
            HashMap::new()
        } else {
            old.map()
                .cells
                .iter()
                .enumerate()
                .map(|(i, c)| (c.id.as_str(), i))
                .collect()
        };
        for (i, (cell, state)) in new.map().cells.iter().zip(new.states()).enumerate() {
            let before = if same_map {
                old.states().get(i)
            } else {
                old_ids.get(cell.id.as_str()).map(|&j| &old.states()[j])
            };
            let Some(before) = before else { continue };
            if (before.status, before.source) == (state.status, state.source) {
                continue;
            }
            tracing::info!(
                cell = %cell.id,
                before = %word(before),
                after = %word(state),
                serving = %new.cell(state.serving).id,
                serial = new.serial(),
                "cell status changed"
            );
            audit.record(
                Event::new(actor, "status")
                    .cell(&cell.id)
                    .change(Some(word(before)), Some(word(state)))
                    .detail("serving", new.cell(state.serving).id.as_str())
                    .detail("serial", new.serial()),
            );
        }
    }

    fn retired_list(&self) -> MutexGuard<'_, Vec<Arc<Live<A>>>> {
        self.retired.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops replaced values that no reader holds any more, waiting up to
    /// `wait` for readers to let go; returns how many are still held.
    ///
    /// Why: after a swap a DNS or token task may still hold the old value
    /// (an `arc-swap` guard taken just before the swap is turned into a
    /// counted reference by the swap itself), and whoever drops the last
    /// reference frees it. Keeping one reference here guarantees that this
    /// is never a reader: a reader's drop only decrements the count, and the
    /// value is freed when this thread sees the count at 1 (nobody can take
    /// a new reference, since the store no longer points to it). Readers
    /// hold a value for one query or batch, so this normally takes
    /// microseconds; one held longer (a zone transfer) is released by a
    /// later pass. Returns whether anything was freed too, so the caller
    /// can hand memory back to the OS.
    pub fn reap(&self, wait: Duration) -> Reaped {
        let deadline = Instant::now() + wait;
        let mut freed = 0;
        loop {
            let drop_now: Vec<Arc<Live<A>>> = {
                let mut list = self.retired_list();
                let (free, keep): (Vec<_>, Vec<_>) =
                    list.drain(..).partition(|l| Arc::strong_count(l) == 1);
                *list = keep;
                free
            };
            freed += drop_now.len();
            // Dropped here, outside the lock.
            drop(drop_now);
            let held = self.retired_list().len();
            if held == 0 || Instant::now() >= deadline {
                return Reaped { freed, held };
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Drops retired values that nobody holds and whose map is `map`'s.
    fn reap_same_map(&self, view: &View) {
        let drop_now: Vec<Arc<Live<A>>> = {
            let mut list = self.retired_list();
            let (free, keep): (Vec<_>, Vec<_>) = list.drain(..).partition(|l| {
                Arc::strong_count(l) == 1 && Arc::ptr_eq(l.view.map_arc(), view.map_arc())
            });
            *list = keep;
            free
        };
        drop(drop_now);
    }

    /// A copy of the reload status.
    pub fn status(&self) -> ReloadStatus {
        self.reload
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    fn with_status(&self, f: impl FnOnce(&mut ReloadStatus)) {
        let mut s = self.reload.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s);
    }

    /// Records whether the reload thread will retry the last attempt by
    /// itself.
    pub fn set_retrying(&self, retrying: bool) {
        self.with_status(|s| s.retrying = retrying);
    }

    /// Records how the map file is watched.
    pub fn set_watch(&self, watch: WatchState) {
        self.with_status(|s| s.watch = watch);
    }

    /// Records a successful reload ([`Store::publish_map`] does).
    fn record_success(&self) {
        crate::metrics::reload_result(true);
        self.with_status(|s| {
            s.successes += 1;
            s.last_error = None;
            s.last_error_at = None;
        });
    }

    /// Records a failed reload; the value in force is unchanged.
    pub fn record_failure(&self, message: String) {
        crate::metrics::reload_result(false);
        let live = self.current.load();
        self.audit().record(
            Event::new("reload", "reload_rejected")
                .reason(message.as_str())
                .detail("in_force", live.view.map().version.as_str())
                .detail("serial", live.view.serial())
                .detail("cells", live.view.map().cells.len())
                .detail("tenants", live.view.map().tenants.len()),
        );
        drop(live);
        self.with_status(|s| {
            s.failures += 1;
            s.last_error = Some(message);
            s.last_error_at = Some(SystemTime::now());
        });
    }

    /// Clears the last failure without counting a reload: the map file is
    /// back to the content already in force.
    pub fn clear_failure(&self) {
        crate::metrics::reload_recovered();
        self.with_status(|s| {
            s.last_error = None;
            s.last_error_at = None;
        });
    }
}

/// What the serial of `view` is based on: the map's declared serial when
/// the view answers as the map alone does, else the clock (local
/// conditions are this instance's own; see [`super::serial`]).
///
/// Planned moves: the map alone changes answers at each move boundary, so
/// a boundary passed after the declared serial's time is the serial (the
/// Unix time of the boundary: the same on every instance fed the map, and
/// above a declared serial written, as documented, as the map's generation
/// time). A declared serial ahead of the clock (`YYYYMMDDnn`) cannot be
/// compared with times: after a boundary the clock rule applies.
fn basis(view: &View) -> Basis {
    match view.map().zone.serial {
        Some(s) if view.same_answers(&View::of_map_at(view.map_arc().clone(), view.built_at())) => {
            let boundary = view.moves().last_change().map(|t| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs().min(u64::from(u32::MAX)) as u32)
            });
            match boundary {
                Some(b) if super::serial::serial_gt(b, s) => Basis::Declared(b),
                Some(_) if super::serial::serial_gt(s, super::serial::unix_now()) => Basis::Clock,
                _ => Basis::Declared(s),
            }
        }
        _ => Basis::Clock,
    }
}

/// The zone gauges of `view`, replacing `previous`: per-cell series only
/// for cells whose state changed (all of them for a new map).
fn publish_metrics(view: &View, previous: Option<&View>) {
    let statuses: Vec<_> = view.states().iter().map(|c| c.status).collect();
    crate::metrics::zone_published(
        view.map(),
        view.serial(),
        &statuses,
        previous.map(View::map),
    );
    let same_map = previous.is_some_and(|p| Arc::ptr_eq(p.map_arc(), view.map_arc()));
    for (i, (cell, state)) in view.map().cells.iter().zip(view.states()).enumerate() {
        let unchanged = same_map
            && previous
                .and_then(|p| p.states().get(i))
                .is_some_and(|b| (b.status, b.source) == (state.status, state.source));
        if !unchanged {
            crate::metrics::cell_status(&cell.id, Some((state.status, state.source.as_str())));
        }
    }
    if let Some(p) = previous.filter(|_| !same_map) {
        let now: std::collections::HashSet<&str> =
            view.map().cells.iter().map(|c| c.id.as_str()).collect();
        for cell in &p.map().cells {
            if !now.contains(cell.id.as_str()) {
                crate::metrics::cell_status(&cell.id, None);
            }
        }
    }
    crate::metrics::fail_static(view.fail_static());
}

/// The gauges of planned moves (by phase) and of each cell's quiet time.
fn publish_move_metrics(view: &View, quiet: &Quiet) {
    let mut by_phase = [0usize; Phase::ALL.len()];
    for s in view.moves().states() {
        by_phase[s.phase as usize] += 1;
    }
    for (p, n) in Phase::ALL.iter().zip(by_phase) {
        crate::metrics::moves(p.as_str(), n);
    }
    for id in view.map().cell_ids() {
        crate::metrics::cell_quiet(&view.cell(id).id, quiet.cell_quiet_at(view, id));
    }
}

/// What [`Store::reap`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    /// Values dropped.
    pub freed: usize,
    /// Values still held by readers.
    pub held: usize,
}

impl<A: Send + Sync + 'static> Current for Store<A> {
    fn view(&self) -> Arc<View> {
        self.current.load().view.clone()
    }

    fn reload_status(&self) -> ReloadStatus {
        self.status()
    }

    fn quiet(&self) -> &Quiet {
        &self.quiet
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::Status;

    /// A store whose "answers" count how often they were prepared.
    fn store() -> (Store<usize>, Arc<std::sync::atomic::AtomicUsize>) {
        let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = n.clone();
        let map = Arc::new(crate::map::load_example().expect("example"));
        let s = Store::new(map, Conditions::default(), Serials::open(None), move |_| {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        })
        .expect("no state directory: nothing to save");
        (s, n)
    }

    #[test]
    fn a_condition_change_republishes_without_the_map_file() {
        let (s, prepared) = store();
        let before = s.load_full();
        let a = before.view.map().cell_by_id("use1-a").expect("cell");
        let v = s
            .update("test", |c| {
                c.overrides.insert("use1-a".into(), Status::Down);
            })
            .expect("serial")
            .expect("published");
        assert!(v.serial() > before.view.serial());
        // Same map snapshot, answers prepared again.
        assert!(Arc::ptr_eq(v.map_arc(), before.view.map_arc()));
        assert_eq!(prepared.load(std::sync::atomic::Ordering::Relaxed), 2);
        let now = s.load();
        assert_eq!(now.view.state(a).status, Status::Down);
        assert_eq!(now.answers, 1);
        // The same override again changes nothing: nothing is published.
        assert!(
            s.update("test", |c| {
                c.overrides.insert("use1-a".into(), Status::Down);
            })
            .expect("serial")
            .is_none()
        );
        assert_eq!(s.load().view.serial(), v.serial());
        assert_eq!(s.conditions().overrides.len(), 1);
    }

    #[test]
    fn republish_prepares_again_under_a_new_serial() {
        let (s, prepared) = store();
        let before = s.load_full();
        let v = s.republish("test").expect("serial");
        assert!(v.serial() > before.view.serial());
        assert!(Arc::ptr_eq(v.map_arc(), before.view.map_arc()));
        assert_eq!(prepared.load(std::sync::atomic::Ordering::Relaxed), 2);
        assert_eq!(s.load().answers, 1);
    }

    #[test]
    fn a_move_boundary_after_the_declared_serial_is_the_serial() {
        let text = crate::map::EXAMPLE_MAP.replacen("ttl = 30\n", "ttl = 30\nserial = 1000\n", 1)
            + "\n[moves.acme]\nto = \"use1-b\"\nat = \"1970-01-01T00:33:20Z\"\n";
        let map = Arc::new(
            crate::map::load_str(crate::map::Source {
                text: &text,
                format: crate::map::Format::Toml,
                name: "m.toml",
            })
            .expect("valid"),
        );
        // Every boundary (1970, 2000, 2030) is past: the last one is the
        // serial, above the declared 1000, on every instance.
        let s = Store::new(
            map.clone(),
            Conditions::default(),
            Serials::open(None),
            |_| 0,
        )
        .expect("store");
        assert_eq!(s.load().view.serial(), 2030);
        // An override is a local condition: the clock.
        let v = s
            .update("test", |c| {
                c.overrides.insert("euw1-a".into(), Status::Draining);
            })
            .expect("serial")
            .expect("published");
        assert!(v.serial() > 2030);
    }

    #[test]
    fn a_new_map_keeps_the_conditions() {
        let (s, _) = store();
        s.update("test", |c| {
            c.overrides.insert("use1-a".into(), Status::Draining);
        })
        .expect("serial");
        let map = Arc::new(crate::map::load_example().expect("example"));
        let v = s.publish_map(map.clone()).expect("serial");
        let a = map.cell_by_id("use1-a").expect("cell");
        assert_eq!(v.state(a).status, Status::Draining);
        assert!(Arc::ptr_eq(s.load().view.map_arc(), &map));
    }

    #[test]
    fn replaced_values_are_released_by_the_reaper_not_readers() {
        let (s, _) = store();
        let held = s.load_full();
        s.publish_map(Arc::new(crate::map::load_example().expect("example")))
            .expect("serial");
        // A reader still holds the old value: the store keeps it too.
        assert_eq!(s.reap(Duration::ZERO).held, 1);
        assert_eq!(Arc::strong_count(&held), 2);
        // The reader lets go; its drop only decrements the count ...
        let weak = Arc::downgrade(&held);
        drop(held);
        assert!(weak.upgrade().is_some());
        // ... and the reaper frees it.
        assert_eq!(s.reap(Duration::ZERO), Reaped { freed: 1, held: 0 });
        assert!(weak.upgrade().is_none());
    }

    #[test]
    fn a_change_of_effective_status_is_audited_with_its_actor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (s, _) = store();
        assert!(s.set_audit(Arc::new(Audit::open(Some(dir.path())))));
        s.update("ops", |c| {
            c.overrides.insert("use1-a".into(), Status::Down);
        })
        .expect("serial");
        // No answer changes: nothing published, nothing audited.
        s.update("ops", |c| {
            c.overrides.insert("use1-a".into(), Status::Down);
        })
        .expect("serial");
        let text = std::fs::read_to_string(dir.path().join(super::super::audit::AUDIT_FILE))
            .expect("audit file");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON"))
            .collect();
        assert_eq!(lines.len(), 1, "{text}");
        assert_eq!(lines[0]["what"], "status");
        assert_eq!(lines[0]["actor"], "ops");
        assert_eq!(lines[0]["cell"], "use1-a");
        assert_eq!(lines[0]["before"], "active (map)");
        assert_eq!(lines[0]["after"], "down (override)");
        assert_eq!(lines[0]["serving"], "use1-b");
    }
}
