//! The store: the one value every query reads, and the only way to change it.
//!
//! [`Store::load`] is a lock-free `arc-swap` read of a [`Live`]: the
//! effective [`View`] and the answers prepared from it (by a function the
//! store was given: the DNS layer's, in `cellns serve`), swapped as one
//! value, so an answer and a token never come from two versions.
//!
//! Publishers (the reload thread with a new map, and anything that changes
//! the [`Conditions`]) take a lock that readers never see, build the next
//! view and its answers, give it the next serial ([`super::serial`]) and
//! swap it in. A change that leaves every answer as it was publishes
//! nothing.
//!
//! Replaced values are kept in a retired list until no reader holds them
//! and then dropped by [`Store::reap`], which only the reload thread calls
//! for values that held another map: freeing a million-tenant snapshot takes
//! tens of milliseconds and must never happen on a thread that answers
//! queries (see `reload`).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;

use super::serial::Serials;
use super::view::{Conditions, View};
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
}

/// Read access to the view in force, for parts that need the view but not
/// the DNS answers (tokens, the HTTP API).
pub trait Current: Send + Sync + std::fmt::Debug {
    /// The effective view in force.
    fn view(&self) -> Arc<View>;
    /// The reload status.
    fn reload_status(&self) -> ReloadStatus;
}

/// Builds the answers of a view.
type Prepare<A> = Box<dyn Fn(&View) -> A + Send + Sync>;

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
    /// `serials`, its answers made by `prepare`.
    pub fn new(
        map: Arc<Snapshot>,
        conditions: Conditions,
        mut serials: Serials,
        prepare: impl Fn(&View) -> A + Send + Sync + 'static,
    ) -> Self {
        let view = View::new(map, &conditions, serials.issue());
        publish_metrics(&view, None);
        crate::metrics::reloads_start();
        let (serial, _) = tokio::sync::watch::channel(view.serial());
        let answers = prepare(&view);
        Self {
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
    /// (validation, safety gates).
    pub fn publish_map(&self, map: Arc<Snapshot>) -> Arc<View> {
        let mut w = self.writer();
        let serial = w.serials.issue();
        let view = View::new(map, &w.conditions, serial);
        self.swap(view)
    }

    /// Changes the conditions and publishes the result, unless every answer
    /// stays the same; returns the new view when one was published. The
    /// map file is not read again.
    pub fn update(&self, change: impl FnOnce(&mut Conditions)) -> Option<Arc<View>> {
        let mut w = self.writer();
        let mut conditions = w.conditions.clone();
        change(&mut conditions);
        let current = self.current.load_full();
        let candidate = View::new(current.view.map_arc().clone(), &conditions, 0);
        w.conditions = conditions;
        if candidate.same_answers(&current.view) {
            return None;
        }
        let view = self.swap(candidate.with_serial(w.serials.issue()));
        // Values retired by this kind of change share the map in force, so
        // dropping them here frees little; older maps wait for the reload
        // thread.
        self.reap_same_map(&current.view);
        Some(view)
    }

    /// Prepares the answers of the map and conditions in force again and
    /// publishes them under a new serial; returns the view now in force.
    /// For what changes answers from outside the view: the DNS layer's
    /// DNSSEC keys (a key published, activated or retired is a new zone
    /// version).
    pub fn republish(&self) -> Arc<View> {
        let mut w = self.writer();
        let current = self.current.load_full();
        let serial = w.serials.issue();
        let view = self.swap(View::new(
            current.view.map_arc().clone(),
            &w.conditions,
            serial,
        ));
        self.reap_same_map(&current.view);
        view
    }

    /// The conditions in force.
    pub fn conditions(&self) -> Conditions {
        self.writer().conditions.clone()
    }

    /// Prepares `view`'s answers, swaps, and retires the value replaced.
    /// Called with the writer lock held.
    fn swap(&self, view: View) -> Arc<View> {
        let answers = (self.prepare)(&view);
        let view = Arc::new(view);
        let old = self.current.swap(Arc::new(Live {
            view: view.clone(),
            answers,
        }));
        publish_metrics(&view, Some(&old.view));
        self.serial.send_replace(view.serial());
        self.retired_list().push(old);
        view
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

    /// Records a successful reload.
    pub fn record_success(&self) {
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

/// The zone gauges of `view`, replacing `previous`.
fn publish_metrics(view: &View, previous: Option<&View>) {
    let statuses: Vec<_> = view.states().iter().map(|c| c.status).collect();
    crate::metrics::zone_published(
        view.map(),
        view.serial(),
        &statuses,
        previous.map(View::map),
    );
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
        });
        (s, n)
    }

    #[test]
    fn a_condition_change_republishes_without_the_map_file() {
        let (s, prepared) = store();
        let before = s.load_full();
        let a = before.view.map().cell_by_id("use1-a").expect("cell");
        let v = s
            .update(|c| {
                c.overrides.insert("use1-a".into(), Status::Down);
            })
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
            s.update(|c| {
                c.overrides.insert("use1-a".into(), Status::Down);
            })
            .is_none()
        );
        assert_eq!(s.load().view.serial(), v.serial());
        assert_eq!(s.conditions().overrides.len(), 1);
    }

    #[test]
    fn republish_prepares_again_under_a_new_serial() {
        let (s, prepared) = store();
        let before = s.load_full();
        let v = s.republish();
        assert!(v.serial() > before.view.serial());
        assert!(Arc::ptr_eq(v.map_arc(), before.view.map_arc()));
        assert_eq!(prepared.load(std::sync::atomic::Ordering::Relaxed), 2);
        assert_eq!(s.load().answers, 1);
    }

    #[test]
    fn a_new_map_keeps_the_conditions() {
        let (s, _) = store();
        s.update(|c| {
            c.overrides.insert("use1-a".into(), Status::Draining);
        });
        let map = Arc::new(crate::map::load_example().expect("example"));
        let v = s.publish_map(map.clone());
        let a = map.cell_by_id("use1-a").expect("cell");
        assert_eq!(v.state(a).status, Status::Draining);
        assert!(Arc::ptr_eq(s.load().view.map_arc(), &map));
    }

    #[test]
    fn replaced_values_are_released_by_the_reaper_not_readers() {
        let (s, _) = store();
        let held = s.load_full();
        s.publish_map(Arc::new(crate::map::load_example().expect("example")));
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
}
