//! The `cellns-reload` thread: it owns every step of a reload, so queries
//! never wait for one. Filesystem events and SIGHUP become messages; bursts
//! of them are folded into one reload; a periodic check looks at the file
//! and the watches; a reload that failed for a passing reason is retried
//! with a backoff (see the parent module's docs).

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use notify::Event;

use super::read::{self, Signature};
use super::watch::{Watches, is_change};
use super::{Outcome, Reloader, Trigger};
use crate::live::store::{Store, WatchState};
use crate::live::system::{lower_priority, release_free_memory};

/// How often the reload thread retries releasing maps still held.
const REAP_INTERVAL: Duration = Duration::from_secs(1);
/// Nice value of the reload thread (Linux; higher is lower priority): its
/// priority where idle priority is not used, and while a reload that
/// starved at idle priority (see [`STARVED_AFTER`]) finishes.
const RELOAD_NICE: i32 = 10;
/// The window of the starvation guard: a reload that got less than a
/// twentieth of it in CPU time ([`crate::live::system::STARVED_SHARE`])
/// runs at [`RELOAD_NICE`] instead of idle priority from then on (a
/// 1,000,000-tenant reload takes about 0.5 s of CPU; idle priority gets it
/// only what queries leave, which may be nothing under a flood). A reload
/// that gets what queries leave stays idle however long it takes: until
/// 2026-12 the guard raised any reload still running after 2 s, and a
/// 1,000,000-tenant reload beside a half-busy query thread (2.5 s) spent
/// its end sharing the core with it, which tripled the p99 of the queries
/// sent during it (BENCHMARKS.md, reload latency, run E).
const STARVED_AFTER: Duration = Duration::from_secs(2);
/// First pause before retrying a reload that failed for a passing reason;
/// it doubles with each failure, up to [`MAX_RETRY`].
pub const FIRST_RETRY: Duration = Duration::from_millis(250);
/// Longest pause between retries.
pub const MAX_RETRY: Duration = Duration::from_secs(30);
/// Default `--map-check-interval-ms`.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Why the reload thread cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// SIGHUP cannot be handled.
    #[error("cannot install the SIGHUP handler: {0}")]
    Signal(#[source] std::io::Error),
    /// The reload thread cannot be started.
    #[error("cannot start the reload thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// How the reload thread runs (built by the serve wiring from the flags).
#[derive(Debug, Clone, Copy)]
pub struct ThreadConfig {
    /// Quiet period after an event before reloading (`--reload-debounce-ms`).
    pub debounce: Duration,
    /// Interval of the periodic check of the file and the watches
    /// (`--map-check-interval-ms`).
    pub check_interval: Duration,
}

impl Default for ThreadConfig {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(100),
            check_interval: DEFAULT_CHECK_INTERVAL,
        }
    }
}

impl Reloader {
    /// Starts watching the map's directory and SIGHUP, and reloading on the
    /// `cellns-reload` thread. Call from within the Tokio runtime (SIGHUP is
    /// received there). A watcher the OS refuses (inotify limits) is not an
    /// error: the periodic check still sees changes, and the watch state
    /// says it is degraded.
    pub fn spawn<A: Send + Sync + 'static>(
        mut self,
        store: Arc<Store<A>>,
        cfg: ThreadConfig,
    ) -> Result<ReloadHandle, ReloadError> {
        let (tx, rx) = mpsc::channel::<Msg>();
        let events = tx.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<Event>| match res {
            Ok(ev) if is_change(&ev) => {
                let _ = events.send(Msg::Changed);
            }
            Ok(_) => {}
            Err(e) => {
                // Overflowed queues and the like: re-read to be safe.
                tracing::warn!(error = %e, "map watcher error; reading the map again");
                let _ = events.send(Msg::Changed);
            }
        })
        .map_err(|e| e.to_string());
        let mut watches = Watches::new(watcher);
        let mut watch_state = WatchState::None;
        publish_watch(&store, &mut watch_state, watches.refresh(&self.path).health);

        #[cfg(unix)]
        let signal_task = {
            use tokio::signal::unix::{SignalKind, signal};
            let mut hup = signal(SignalKind::hangup()).map_err(ReloadError::Signal)?;
            let tx = tx.clone();
            Some(tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading the map");
                    if tx.send(Msg::Reload).is_err() {
                        break;
                    }
                }
            }))
        };
        #[cfg(not(unix))]
        let signal_task: Option<tokio::task::JoinHandle<()>> = None;

        let file = self.path.display().to_string();
        let thread = std::thread::Builder::new()
            .name("cellns-reload".into())
            .spawn(move || {
                // A lower nice value; each reload attempt runs at idle
                // priority (see `attempt`), where the thread may be raised
                // again when it starves (`may_leave_idle`).
                lower_priority(RELOAD_NICE);
                #[cfg(target_os = "linux")]
                let idle = {
                    use crate::live::system::{current_tid, may_leave_idle};
                    if may_leave_idle(RELOAD_NICE) {
                        Some(current_tid())
                    } else {
                        tracing::info!(
                            nice = RELOAD_NICE,
                            "the reload thread runs at a lower nice value, not at idle priority: \
                             that needs CAP_SYS_NICE or RLIMIT_NICE >= 10 (LimitNICE=+10 or lower \
                             in systemd) to be raised again if it starves"
                        );
                        None
                    }
                };
                #[cfg(not(target_os = "linux"))]
                let idle: Option<i32> = None;
                let mut run = Run {
                    idle,
                    store: &store,
                    watches,
                    watch_state,
                    cfg,
                    max_wait: (cfg.debounce * 10).max(Duration::from_secs(1)),
                    held: 0,
                    retry: None,
                    pending_check: None,
                };
                // A change between the initial load and the watch being in
                // place raised no event: look once now.
                run.first_look(&mut self);
                // What parsing the initial map left behind.
                release_free_memory();
                run.run(&mut self, &rx);
            })
            .map_err(ReloadError::Thread)?;
        tracing::info!(
            %file,
            debounce_ms = cfg.debounce.as_millis() as u64,
            check_interval_ms = cfg.check_interval.as_millis() as u64,
            "watching the map file"
        );
        Ok(ReloadHandle {
            tx,
            thread: Some(thread),
            signal_task,
        })
    }
}

/// Records a new watch state (log line and metric when it changes).
fn publish_watch<A: Send + Sync + 'static>(
    store: &Store<A>,
    current: &mut WatchState,
    next: WatchState,
) {
    if *current == next {
        return;
    }
    match &next {
        WatchState::Degraded(why) => tracing::warn!(
            reason = %why,
            "the map file is not fully watched; the periodic check still sees its changes"
        ),
        WatchState::Ok if *current != WatchState::None => {
            tracing::info!("the map file is watched again")
        }
        _ => {}
    }
    crate::metrics::map_watch(next == WatchState::Ok);
    store.set_watch(next.clone());
    *current = next;
}

/// The reload thread's state between messages.
struct Run<'a, A: Send + Sync + 'static> {
    /// The thread's id when its reload attempts run at idle priority.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    idle: Option<i32>,
    store: &'a Store<A>,
    watches: Watches,
    watch_state: WatchState,
    cfg: ThreadConfig,
    max_wait: Duration,
    /// Replaced values still held by readers.
    held: usize,
    /// When to retry, and the pause that led there.
    retry: Option<(Instant, Duration)>,
    /// A signature the periodic check saw differ from the last read, to be
    /// reloaded if it is still there at the next check (so a file in the
    /// middle of being written is not read).
    pending_check: Option<Option<Signature>>,
}

impl<A: Send + Sync + 'static> Run<'_, A> {
    fn run(&mut self, r: &mut Reloader, rx: &Receiver<Msg>) {
        let mut next_check = Instant::now() + self.cfg.check_interval;
        let mut next_reap = Instant::now() + REAP_INTERVAL;
        loop {
            let now = Instant::now();
            let mut until = next_check;
            if let Some((at, _)) = self.retry {
                until = until.min(at);
            }
            if self.held > 0 {
                until = until.min(next_reap);
            }
            match rx.recv_timeout(until.saturating_duration_since(now)) {
                Ok(first) => {
                    let burst = collect_burst(rx, first, self.cfg.debounce, self.max_wait);
                    if burst.stop {
                        return;
                    }
                    let trigger = if burst.forced {
                        Trigger::Forced
                    } else {
                        Trigger::Watch
                    };
                    self.attempt(r, trigger);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            let now = Instant::now();
            if self.retry.is_some_and(|(at, _)| now >= at) {
                self.attempt(r, Trigger::Retry);
            }
            if now >= next_check {
                self.check(r);
                next_check = Instant::now() + self.cfg.check_interval;
            }
            if self.held > 0 && now >= next_reap {
                self.held = super::reap(self.store, Duration::ZERO);
                next_reap = Instant::now() + REAP_INTERVAL;
            }
        }
    }

    /// One reload attempt, then the retry schedule and the watches.
    fn attempt(&mut self, r: &mut Reloader, trigger: Trigger) {
        let mut trigger = trigger;
        // A watch armed anew may have missed changes: look again (bounded,
        // in case a directory keeps being replaced).
        for _ in 0..3 {
            // Idle priority: a query thread that wakes up takes the CPU at
            // once, instead of waiting for the rest of a time slice.
            #[cfg(target_os = "linux")]
            let _idle = self.idle.and_then(|tid| {
                crate::live::system::IdleSection::enter(tid, STARVED_AFTER, RELOAD_NICE)
            });
            let outcome = r.reload(self.store, trigger);
            self.schedule(&outcome);
            self.held = super::reap(self.store, Duration::ZERO);
            self.pending_check = None;
            let refreshed = self.watches.refresh(r.path());
            publish_watch(self.store, &mut self.watch_state, refreshed.health);
            if !refreshed.rearmed {
                return;
            }
            trigger = Trigger::Watch;
        }
    }

    /// Schedules (or cancels) the retry after `outcome`.
    fn schedule(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Retry(why) => {
                let pause = self
                    .retry
                    .map_or(FIRST_RETRY, |(_, p)| (p * 2).min(MAX_RETRY));
                // The state first, then the log line that announces it.
                self.retry = Some((Instant::now() + pause, pause));
                self.store.set_retrying(true);
                tracing::warn!(
                    retry_in_ms = pause.as_millis() as u64,
                    reason = %why,
                    "the map reload will be retried"
                );
            }
            _ => {
                if self.retry.take().is_some() {
                    self.store.set_retrying(false);
                }
            }
        }
    }

    /// The look at the file when the watches are first in place. A change
    /// since the initial load raised no event, so nothing says its writer
    /// has finished (a file written in place, paused half way, looks
    /// complete): it is treated as the periodic check treats a change no
    /// event reported, reloaded if it stays put until the next check. A
    /// finished write (a close, a rename) reloads it at once as usual.
    fn first_look(&mut self, r: &mut Reloader) {
        let now = read::signature(r.path());
        if now != r.last_signature() {
            tracing::debug!(
                file = %r.path().display(),
                "the map file changed while the server started; reloading it if it stays put"
            );
            self.pending_check = Some(now);
        }
    }

    /// The periodic check: the watches, then the file itself.
    fn check(&mut self, r: &mut Reloader) {
        let refreshed = self.watches.refresh(r.path());
        publish_watch(self.store, &mut self.watch_state, refreshed.health);
        if refreshed.rearmed {
            self.attempt(r, Trigger::Watch);
            return;
        }
        let now = read::signature(r.path());
        if now == r.last_signature() {
            self.pending_check = None;
            return;
        }
        if self.pending_check != Some(now) {
            // Changed since the last read: reload it if it stays put until
            // the next check (a writer may be in the middle of it).
            self.pending_check = Some(now);
            return;
        }
        crate::metrics::map_check_change();
        tracing::warn!(
            file = %r.path().display(),
            "the periodic check found a change of the map file that no watch event reported; \
             reloading"
        );
        self.attempt(r, Trigger::Watch);
    }
}

/// Without `--map` there is nothing to reload, but SIGHUP must not kill the
/// server (its default action): log it instead. Call from within the Tokio
/// runtime; the handler lives as long as the runtime.
pub fn ignore_sighup() -> Result<(), ReloadError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = signal(SignalKind::hangup()).map_err(ReloadError::Signal)?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP ignored: the embedded map has no file to reload");
            }
        });
    }
    Ok(())
}

/// Controls the reload thread started by [`Reloader::spawn`].
#[derive(Debug)]
pub struct ReloadHandle {
    tx: Sender<Msg>,
    thread: Option<std::thread::JoinHandle<()>>,
    signal_task: Option<tokio::task::JoinHandle<()>>,
}

impl ReloadHandle {
    /// Asks for a reload now, as SIGHUP does.
    pub fn trigger(&self) {
        let _ = self.tx.send(Msg::Reload);
    }

    /// Stops watching and waits for a reload in progress to finish.
    pub async fn shutdown(mut self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.signal_task.take() {
            t.abort();
        }
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for ReloadHandle {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.signal_task.take() {
            t.abort();
        }
    }
}

/// Messages to the reload thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Msg {
    /// Something changed in a watched directory.
    Changed,
    /// SIGHUP or [`ReloadHandle::trigger`].
    Reload,
    /// Shut down.
    Stop,
}

/// Messages folded into one reload.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Burst {
    changes: usize,
    forced: bool,
    stop: bool,
}

impl Burst {
    fn add(&mut self, m: Msg) {
        match m {
            Msg::Changed => self.changes += 1,
            Msg::Reload => self.forced = true,
            Msg::Stop => self.stop = true,
        }
    }
}

/// Collects the burst that `first` starts: until no message came for
/// `debounce`, or `max_wait` after the first, whichever is sooner. A forced
/// reload or a stop ends the burst at once. Messages already queued are
/// folded in either way.
fn collect_burst(rx: &Receiver<Msg>, first: Msg, debounce: Duration, max_wait: Duration) -> Burst {
    let start = Instant::now();
    let mut burst = Burst::default();
    burst.add(first);
    let mut last = start;
    while !(burst.forced || burst.stop) {
        let until = (last + debounce).min(start + max_wait);
        let now = Instant::now();
        if now >= until {
            break;
        }
        match rx.recv_timeout(until - now) {
            Ok(m) => {
                burst.add(m);
                last = Instant::now();
            }
            Err(RecvTimeoutError::Timeout) => break,
            Err(RecvTimeoutError::Disconnected) => {
                burst.stop = true;
                break;
            }
        }
    }
    while let Ok(m) = rx.try_recv() {
        burst.add(m);
    }
    burst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_are_folded_into_one_reload() {
        let (tx, rx) = mpsc::channel();
        for _ in 0..5 {
            tx.send(Msg::Changed).unwrap_or_else(|e| panic!("{e}"));
        }
        let b = collect_burst(
            &rx,
            Msg::Changed,
            Duration::from_millis(20),
            Duration::from_secs(1),
        );
        assert_eq!(
            b,
            Burst {
                changes: 6,
                forced: false,
                stop: false
            }
        );
        // SIGHUP ends the wait at once (the debounce here is an hour) and
        // takes the queued changes with it.
        tx.send(Msg::Changed).unwrap_or_else(|e| panic!("{e}"));
        let b = collect_burst(
            &rx,
            Msg::Reload,
            Duration::from_secs(3600),
            Duration::from_secs(3600),
        );
        assert_eq!((b.changes, b.forced), (1, true));
        // A closed channel stops the thread.
        drop(tx);
        let b = collect_burst(
            &rx,
            Msg::Changed,
            Duration::from_secs(3600),
            Duration::from_secs(3600),
        );
        assert!(b.stop);
    }

    #[test]
    fn a_continuous_stream_of_events_is_cut_at_max_wait() {
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = stop.clone();
        let sender = std::thread::spawn(move || {
            while !s2.load(std::sync::atomic::Ordering::Relaxed) {
                if tx.send(Msg::Changed).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        // The stream never pauses for the 1 h debounce; max_wait ends it.
        let b = collect_burst(
            &rx,
            Msg::Changed,
            Duration::from_secs(3600),
            Duration::from_millis(50),
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = sender.join();
        assert!(b.changes >= 1 && !b.stop && !b.forced);
    }
}
