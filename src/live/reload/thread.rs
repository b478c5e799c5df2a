//! The `cellns-reload` thread: it owns every step of a reload, so queries
//! never wait for one. Filesystem events and SIGHUP become messages; bursts
//! of them are folded into one reload (see the parent module's docs).

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use notify::{Event, RecursiveMode, Watcher as _};

use super::watch::{Watches, is_change, parent_dir};
use super::{Reloader, Trigger};
use crate::live::store::Store;
use crate::live::system::{lower_priority, release_free_memory};

/// How often the reload thread retries releasing maps still held.
const REAP_INTERVAL: Duration = Duration::from_secs(1);
/// Nice value of the reload thread (Linux; higher is lower priority).
const RELOAD_NICE: i32 = 10;

/// Why the reload thread cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The map's directory cannot be watched.
    #[error("cannot watch {dir} for map changes: {source}")]
    Watch {
        /// The directory.
        dir: String,
        /// The watcher's error.
        #[source]
        source: notify::Error,
    },
    /// SIGHUP cannot be handled.
    #[error("cannot install the SIGHUP handler: {0}")]
    Signal(#[source] std::io::Error),
    /// The reload thread cannot be started.
    #[error("cannot start the reload thread: {0}")]
    Thread(#[source] std::io::Error),
}

impl Reloader {
    /// Starts watching the map's directory and SIGHUP, and reloading on the
    /// `cellns-reload` thread. Call from within the Tokio runtime (SIGHUP is
    /// received there).
    pub fn spawn<A: Send + Sync + 'static>(
        mut self,
        store: Arc<Store<A>>,
        debounce: Duration,
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
                tracing::warn!(error = %e, "map watcher error");
                let _ = events.send(Msg::Changed);
            }
        })
        .map_err(|source| ReloadError::Watch {
            dir: self.path.display().to_string(),
            source,
        })?;
        let mut watches = Watches {
            watcher,
            dirs: Vec::new(),
        };
        // The map's own directory must be watchable; a symlink target's
        // directory is best effort (it may be replaced at any time).
        let primary = parent_dir(&self.path);
        watches
            .watcher
            .watch(&primary, RecursiveMode::NonRecursive)
            .map_err(|source| ReloadError::Watch {
                dir: primary.display().to_string(),
                source,
            })?;
        watches.dirs.push(primary);
        watches.refresh(&self.path);

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

        let max_wait = (debounce * 10).max(Duration::from_secs(1));
        let file = self.path.display().to_string();
        let thread = std::thread::Builder::new()
            .name("cellns-reload".into())
            .spawn(move || {
                lower_priority(RELOAD_NICE);
                // A change between the initial load and the watch being in
                // place raised no event: look once now.
                self.reload(&store, Trigger::Watch);
                // What parsing the initial map left behind.
                release_free_memory();
                self.run(&store, &rx, &mut watches, debounce, max_wait);
            })
            .map_err(ReloadError::Thread)?;
        tracing::info!(
            %file,
            debounce_ms = debounce.as_millis() as u64,
            "watching the map file"
        );
        Ok(ReloadHandle {
            tx,
            thread: Some(thread),
            signal_task,
        })
    }

    fn run<A: Send + Sync + 'static>(
        &mut self,
        store: &Store<A>,
        rx: &Receiver<Msg>,
        watches: &mut Watches,
        debounce: Duration,
        max_wait: Duration,
    ) {
        let mut held = 0;
        loop {
            // While replaced maps are still held by readers, wake up now
            // and then to release them.
            let first = if held == 0 {
                match rx.recv() {
                    Ok(m) => m,
                    Err(_) => return,
                }
            } else {
                match rx.recv_timeout(REAP_INTERVAL) {
                    Ok(m) => m,
                    Err(RecvTimeoutError::Timeout) => {
                        held = super::reap(store, Duration::ZERO);
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            };
            let burst = collect_burst(rx, first, debounce, max_wait);
            if burst.stop {
                return;
            }
            let trigger = if burst.forced {
                Trigger::Forced
            } else {
                Trigger::Watch
            };
            self.reload(store, trigger);
            held = super::reap(store, Duration::ZERO);
            watches.refresh(&self.path);
        }
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
