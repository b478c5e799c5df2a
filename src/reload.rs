//! The live snapshot and how it changes: watch → parse → validate → gate →
//! swap, keeping the last good map when a new one is bad.
//!
//! Readers (DNS, tokens) call [`Store::load`], a lock-free `arc-swap` read.
//! Only this module publishes snapshots.
//!
//! # Reloading
//!
//! [`Reloader::spawn`] starts one dedicated thread, `cellns-reload`, that
//! owns every step of a reload, so queries never wait for one:
//!
//! - **Watching.** The map's *directory* is watched (not the file), because
//!   the file is usually replaced rather than written: editors and
//!   pipelines rename a new file over it, and a Kubernetes ConfigMap volume
//!   swaps a `..data` symlink (`map.toml -> ..data/map.toml`,
//!   `..data -> ..2026_11_27_…`), so the events name `..data`, never the map
//!   file. Any event in the directory (and, when the path is a symlink, in
//!   its target's directory) therefore triggers a re-read, and the content's
//!   SHA-256 decides whether anything changed.
//! - **Debouncing.** A burst of events (a write in several syscalls, a
//!   rename plus cleanup) is folded into one reload: the thread waits until
//!   the directory has been quiet for `--reload-debounce-ms`, but never more
//!   than ten times that (at least 1 s) after the first event, so a file
//!   that is rewritten continuously is still picked up. SIGHUP reloads at
//!   once, without debouncing, and retries a map that failed before.
//! - **Building.** Parse, validate, compile and diff run on the reload
//!   thread, at a lowered scheduling priority so that on a busy machine the
//!   query threads win the CPU. The new snapshot is published with one
//!   atomic pointer swap ([`Store::publish`]); a query sees the old map or
//!   the new one, never a mix.
//! - **Last known good.** A map that cannot be read, parsed or validated, or
//!   that the safety gates reject (see [`crate::map::diff`]), is logged at
//!   error level with its file and line, recorded in [`Store::status`], and
//!   the old map keeps serving. The same content is not retried (it would
//!   fail the same way); the next change, or SIGHUP, is. A deleted map file
//!   also keeps the old map (logged as a warning).
//! - **Releasing.** See [`Reloader::reap`]: the last reference to a
//!   replaced snapshot is always dropped on the reload thread, which then
//!   hands the freed memory back to the OS (glibc `malloc_trim`).
//! - **Memory.** A reload holds two snapshots plus the new map's parse
//!   state at its peak; the text is freed right after parsing, and large
//!   buffers are given their own mappings (`tune_allocator`) so that each
//!   phase's memory is returned before the next phase allocates.
//!
//! # SOA serials
//!
//! Every published snapshot gets a serial above the previous one
//! ([`next_serial`]: the clock in seconds, or previous + 1 when the clock is
//! not ahead). With `--state-dir`, the serial in force is also written to
//! `<state-dir>/serial` (atomically: temporary file, fsync, rename), and a
//! restart starts from `max(clock, persisted + 1)`, so serials never go
//! backwards even across restarts with a clock that jumped back, or several
//! restarts within one second. Without it, the clock alone is used.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecursiveMode, Watcher as _};
use sha2::{Digest, Sha256};

use crate::map::{self, MapError, Snapshot, diff::Verdict};

/// The outcome of the most recent reload attempt.
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

/// Holds the snapshot every query reads, and the reload status. The map
/// gauges and reload counters of [`crate::metrics`] follow both.
#[derive(Debug)]
pub struct Store {
    current: ArcSwap<Snapshot>,
    status: Mutex<ReloadStatus>,
    /// The serial in force, for tasks that act on changes (NOTIFY).
    serial: tokio::sync::watch::Sender<u32>,
}

impl Store {
    /// A store serving `initial`.
    pub fn new(initial: Snapshot) -> Self {
        crate::metrics::initial_map(&initial);
        let (serial, _) = tokio::sync::watch::channel(initial.serial);
        Self {
            current: ArcSwap::from_pointee(initial),
            status: Mutex::new(ReloadStatus::default()),
            serial,
        }
    }

    /// Follows the SOA serial in force: changes after each publish.
    pub fn subscribe_serial(&self) -> tokio::sync::watch::Receiver<u32> {
        self.serial.subscribe()
    }

    /// The snapshot in force. Lock-free; hold the guard only for one query.
    #[inline]
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The snapshot in force, as an owned `Arc` (for longer work).
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Publishes a new snapshot and returns the one it replaced.
    pub fn publish(&self, next: Snapshot) -> Arc<Snapshot> {
        let serial = next.serial;
        let next = Arc::new(next);
        let old = self.current.swap(next.clone());
        crate::metrics::publish_map(&next, Some(&old));
        self.serial.send_replace(serial);
        old
    }

    /// A copy of the reload status.
    pub fn status(&self) -> ReloadStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Records a successful reload.
    pub fn record_success(&self) {
        crate::metrics::reload_result(true);
        if let Ok(mut s) = self.status.lock() {
            s.successes += 1;
            s.last_error = None;
            s.last_error_at = None;
        }
    }

    /// Records a failed reload; the snapshot in force is unchanged.
    pub fn record_failure(&self, message: String) {
        crate::metrics::reload_result(false);
        if let Ok(mut s) = self.status.lock() {
            s.failures += 1;
            s.last_error = Some(message);
            s.last_error_at = Some(SystemTime::now());
        }
    }

    /// Clears the last failure without counting a reload: the map file is
    /// back to the content already in force.
    pub fn clear_failure(&self) {
        crate::metrics::reload_recovered();
        if let Ok(mut s) = self.status.lock() {
            s.last_error = None;
            s.last_error_at = None;
        }
    }
}

/// The SOA serial for the next snapshot: the clock in seconds, but always
/// above `previous` (RFC 1982 arithmetic is not needed until 2106).
pub fn next_serial(previous: Option<u32>) -> u32 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs().min(u64::from(u32::MAX)) as u32)
        .unwrap_or(1);
    match previous {
        Some(p) => now.max(p.wrapping_add(1)),
        None => now,
    }
}

/// Why watching or the serial state failed.
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
    /// The serial state file cannot be read or written.
    #[error("{path}: {message}")]
    State {
        /// The state file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// Name of the serial file inside `--state-dir`.
pub const SERIAL_FILE: &str = "serial";

/// The serial persisted in `state_dir`, if any.
pub fn read_serial(state_dir: &Path) -> Result<Option<u32>, ReloadError> {
    let path = state_dir.join(SERIAL_FILE);
    let err = |message: String| ReloadError::State {
        path: path.display().to_string(),
        message,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse::<u32>()
            .map(Some)
            .map_err(|e| err(format!("not a serial ({e}): {:?}", text.trim()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(err(format!("cannot read: {e}"))),
    }
}

/// Writes `serial` to `state_dir` atomically (temporary file, fsync,
/// rename, fsync of the directory), creating the directory if needed.
pub fn write_serial(state_dir: &Path, serial: u32) -> Result<(), ReloadError> {
    let path = state_dir.join(SERIAL_FILE);
    let tmp = state_dir.join(format!(".{SERIAL_FILE}.tmp"));
    let err = |what: &str, e: std::io::Error| ReloadError::State {
        path: path.display().to_string(),
        message: format!("cannot {what}: {e}"),
    };
    std::fs::create_dir_all(state_dir).map_err(|e| err("create the state directory", e))?;
    let mut f = std::fs::File::create(&tmp).map_err(|e| err("create a temporary file", e))?;
    writeln!(f, "{serial}").map_err(|e| err("write", e))?;
    f.sync_all().map_err(|e| err("sync", e))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(|e| err("rename the temporary file", e))?;
    // The rename is durable only once the directory entry is.
    if let Ok(dir) = std::fs::File::open(state_dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// The serial of the first snapshot of this process: [`next_serial`] of the
/// persisted one (a bad state file is logged and ignored).
pub fn initial_serial(state_dir: Option<&Path>) -> u32 {
    let persisted = match state_dir.map(read_serial) {
        None => None,
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            tracing::warn!(error = %e, "ignoring the persisted SOA serial; using the clock");
            None
        }
    };
    next_serial(persisted)
}

/// Persists `serial` when a state directory is configured; a failure is
/// logged, not fatal (serving matters more than the serial file).
pub fn save_serial(state_dir: Option<&Path>, serial: u32) {
    if let Some(dir) = state_dir
        && let Err(e) = write_serial(dir, serial)
    {
        tracing::warn!(error = %e, serial, "cannot persist the SOA serial");
    }
}

type Hash = [u8; 32];

/// What the reload thread last saw in the map file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Content with this hash (loaded, or rejected).
    Content(Hash),
    /// The file did not exist.
    Missing,
}

/// What one reload attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new snapshot is in force.
    Reloaded {
        /// Its version.
        version: String,
        /// Its serial.
        serial: u32,
    },
    /// The content was already loaded or already rejected.
    Unchanged,
    /// The map could not be loaded or was rejected; the old one serves.
    Failed(String),
    /// The file is gone; the old map serves.
    Missing,
}

/// Why a reload was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The watcher saw changes in the map's directory.
    Watch,
    /// SIGHUP, or an explicit request: re-read even content seen before.
    Forced,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Self::Watch => "watch",
            Self::Forced => "forced",
        }
    }
}

/// How long a reload waits for readers of the replaced snapshot before
/// leaving its release to a later pass.
const REAP_WAIT: Duration = Duration::from_millis(200);
/// How often the reload thread retries releasing snapshots still held.
const REAP_INTERVAL: Duration = Duration::from_secs(1);
/// Nice value of the reload thread (Linux; higher is lower priority).
const RELOAD_NICE: i32 = 10;

/// Loads the map file and keeps it current. Built for `cellns serve --map`;
/// the reloading itself runs on the thread [`Reloader::spawn`] starts, but
/// [`Reloader::reload`] can also be called directly.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    state_dir: Option<PathBuf>,
    /// Hash of the content in force.
    serving: Option<Hash>,
    /// What the last attempt saw (dedupes repeated events).
    last_seen: Option<Seen>,
    /// Replaced snapshots not yet released (see [`Reloader::reap`]).
    retired: Vec<Arc<Snapshot>>,
}

impl Reloader {
    /// A reloader for the map at `path`, persisting serials in `state_dir`.
    pub fn new(path: PathBuf, state_dir: Option<PathBuf>) -> Self {
        Self {
            path,
            state_dir,
            serving: None,
            last_seen: None,
            retired: Vec::new(),
        }
    }

    /// The map file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<(String, Hash), MapError> {
        let name = self.path.display().to_string();
        let bytes = std::fs::read(&self.path).map_err(|source| MapError::Io {
            file: name.clone(),
            source,
        })?;
        let hash: Hash = Sha256::digest(&bytes).into();
        let text = String::from_utf8(bytes).map_err(|e| MapError::Parse {
            file: name,
            line: None,
            message: format!("not UTF-8 text ({e})"),
        })?;
        Ok((text, hash))
    }

    fn compile(&self, text: &str, serial: u32) -> Result<Snapshot, MapError> {
        let name = self.path.display().to_string();
        map::load_str(
            map::Source {
                text,
                format: map::Format::from_path(&self.path)?,
                name: &name,
            },
            serial,
        )
    }

    /// [`map::load_str`] for a reload, with the text's memory given back as
    /// soon as it is parsed: the text of a million-tenant map is tens of
    /// megabytes, and keeping it through validation (which holds the parsed
    /// tenant list and builds the new index, next to the snapshot in force)
    /// is the difference between a reload peak of about 2× the steady
    /// resident memory and 2.5×. Validation errors need the text to find
    /// their lines, so that rare path reads the file again and reports what
    /// [`map::load_str`] says about it (a unit test keeps both paths equal).
    fn build(&self, text: String, serial: u32) -> Result<Snapshot, MapError> {
        let name = self.path.display().to_string();
        let format = map::Format::from_path(&self.path)?;
        let file = map::parse(map::Source {
            text: &text,
            format,
            name: &name,
        })?;
        let version = match &file.version {
            Some(v) => v.clone(),
            None => map::content_version(&text),
        };
        drop(text);
        match map::validate::validate(&file) {
            Ok(checked) => {
                drop(file);
                Ok(map::compile(checked, version, name, serial))
            }
            Err(_) => {
                drop(file);
                let (again, _) = self.read()?;
                match self.compile(&again, serial) {
                    Err(e) => Err(e),
                    // Replaced by a valid map meanwhile: its own event
                    // follows and reloads it.
                    Ok(_) => Err(MapError::Parse {
                        file: name,
                        line: None,
                        message: "the map file changed while it was being loaded".to_owned(),
                    }),
                }
            }
        }
    }

    /// Loads the map for start-up with `serial` (from [`initial_serial`]):
    /// there is nothing to fall back to, so any problem is an error.
    pub fn load_initial(&mut self, serial: u32) -> Result<Snapshot, MapError> {
        let (text, hash) = self.read()?;
        let snap = self.compile(&text, serial)?;
        self.serving = Some(hash);
        self.last_seen = Some(Seen::Content(hash));
        Ok(snap)
    }

    /// Re-reads the map file and, when its content is new and good, publishes
    /// it in `store`. Never panics and never leaves `store` without a map.
    pub fn reload(&mut self, store: &Store, trigger: Trigger) -> Outcome {
        let file = self.path.display().to_string();
        let (text, hash) = match self.read() {
            Ok(r) => r,
            Err(MapError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                if self.last_seen != Some(Seen::Missing) || trigger == Trigger::Forced {
                    self.last_seen = Some(Seen::Missing);
                    let version = store.load().version.clone();
                    tracing::warn!(
                        %file,
                        %version,
                        "map file is gone; still serving the last good map"
                    );
                    store.record_failure(format!(
                        "{file}: map file is gone; serving the last good map (version {version})"
                    ));
                }
                return Outcome::Missing;
            }
            Err(e) => {
                // Unreadable (permissions, a directory, not UTF-8, ...): not
                // remembered, so the next event retries.
                self.last_seen = None;
                return self.fail(store, e.to_string());
            }
        };
        if trigger == Trigger::Watch && self.last_seen == Some(Seen::Content(hash)) {
            tracing::debug!(%file, "map content unchanged");
            return Outcome::Unchanged;
        }
        self.last_seen = Some(Seen::Content(hash));
        if self.serving == Some(hash) {
            // Back to the content in force (e.g. a bad edit reverted).
            tracing::info!(%file, "map file unchanged from the map in force");
            store.clear_failure();
            return Outcome::Unchanged;
        }

        let started = Instant::now();
        let current = store.load_full();
        let serial = next_serial(Some(current.serial));
        let next = match self.build(text, serial) {
            Ok(s) => s,
            Err(e) => return self.fail(store, e.to_string()),
        };
        let build = started.elapsed();

        let d = map::diff::diff(&current, &next);
        let (moved, added, removed) = (d.moved.len(), d.added.len(), d.removed.len());
        match d.gates.verdict {
            Verdict::Rejected => {
                let why = d.limits_exceeded();
                tracing::error!(
                    %file,
                    version = %next.version,
                    in_force = %current.version,
                    moved,
                    removed,
                    "map change rejected by the safety gates ({why}); still serving the last good \
                     map. To make this change on purpose, set [safety] allow_mass_change = \"<reason>\""
                );
                let msg = format!(
                    "{file}: rejected by the safety gates: {why} (set [safety] allow_mass_change = \"<reason>\" to allow it)"
                );
                drop(d);
                drop(next);
                store.record_failure(msg.clone());
                release_free_memory();
                return Outcome::Failed(msg);
            }
            Verdict::Overridden => tracing::warn!(
                %file,
                version = %next.version,
                reason = d.gates.fresh_override.unwrap_or_default(),
                moved,
                removed,
                "safety gates overridden by allow_mass_change: {}",
                d.limits_exceeded()
            ),
            Verdict::Accepted => {}
        }
        drop(d);

        let version = next.version.clone();
        let tenants = next.tenants.len();
        let cells = next.cells.len();
        // Persist the serial before anyone can see it: after a crash, the
        // restart must not serve this serial again with other content.
        save_serial(self.state_dir.as_deref(), serial);
        // Swap, then keep the replaced snapshot until no reader holds it.
        let old = store.publish(next);
        drop(current);
        self.retired.push(old);
        self.serving = Some(hash);
        store.record_success();
        tracing::info!(
            %file,
            %version,
            serial,
            tenants,
            cells,
            moved,
            added,
            removed,
            build_ms = build.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            trigger = trigger.as_str(),
            "map reloaded"
        );
        self.reap(REAP_WAIT);
        Outcome::Reloaded { version, serial }
    }

    fn fail(&mut self, store: &Store, message: String) -> Outcome {
        tracing::error!(
            file = %self.path.display(),
            error = %message,
            in_force = %store.load().version,
            "map reload failed; still serving the last good map"
        );
        store.record_failure(message.clone());
        // What the failed attempt allocated.
        release_free_memory();
        Outcome::Failed(message)
    }

    /// Drops replaced snapshots that nobody else holds, waiting up to `wait`
    /// for readers to let go; returns how many are still held.
    ///
    /// Why: dropping a million-tenant snapshot frees tens of megabytes in
    /// many allocations, which must not happen on a query thread. After
    /// [`Store::publish`] a DNS or token task may still hold the old `Arc`
    /// (an `arc-swap` guard taken just before the swap is converted into a
    /// counted reference by the swap itself), and whoever drops the last
    /// reference frees the snapshot. Keeping one reference here guarantees
    /// that this is never a reader: a reader's drop only decrements the
    /// count, and the snapshot is freed when this thread sees the count at 1
    /// (nobody can take a new reference, since the store no longer points
    /// to it). Readers hold a snapshot for one query, so this normally takes
    /// microseconds; one held longer (a slow HTTP client) is released by a
    /// later pass of the reload thread.
    pub fn reap(&mut self, wait: Duration) -> usize {
        let deadline = Instant::now() + wait;
        loop {
            // `retain` drops the ones only we hold, here on this thread.
            let before = self.retired.len();
            self.retired.retain(|s| Arc::strong_count(s) > 1);
            if self.retired.len() < before {
                release_free_memory();
            }
            if self.retired.is_empty() || Instant::now() >= deadline {
                return self.retired.len();
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Starts watching the map's directory and SIGHUP, and reloading on the
    /// `cellns-reload` thread. Call from within the Tokio runtime (SIGHUP is
    /// received there).
    pub fn spawn(
        mut self,
        store: Arc<Store>,
        debounce: Duration,
    ) -> Result<ReloadHandle, ReloadError> {
        tune_allocator();
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
                lower_priority();
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

    fn run(
        &mut self,
        store: &Store,
        rx: &Receiver<Msg>,
        watches: &mut Watches,
        debounce: Duration,
        max_wait: Duration,
    ) {
        loop {
            let first = if self.retired.is_empty() {
                match rx.recv() {
                    Ok(m) => m,
                    Err(_) => return,
                }
            } else {
                match rx.recv_timeout(REAP_INTERVAL) {
                    Ok(m) => m,
                    Err(RecvTimeoutError::Timeout) => {
                        self.reap(Duration::ZERO);
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

/// Whether a watcher event may mean the map changed. Opening and reading
/// files (our own reads included) do not; everything else (create, write,
/// close after writing, rename, remove, attribute change) might.
fn is_change(ev: &Event) -> bool {
    !matches!(
        ev.kind,
        EventKind::Access(
            AccessKind::Open(_)
                | AccessKind::Read
                | AccessKind::Close(AccessMode::Read | AccessMode::Execute)
        )
    )
}

/// The directory holding `path` as written (not resolved: for a symlink,
/// the link's directory, which is where a Kubernetes swap happens).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The directories to watch for `path`: its own, and its resolved target's
/// when it is a symlink into another directory.
fn watch_dirs(path: &Path) -> Vec<PathBuf> {
    let own = parent_dir(path);
    let mut dirs = vec![own.clone()];
    if let Ok(real) = std::fs::canonicalize(path) {
        let target = parent_dir(&real);
        let own_real = std::fs::canonicalize(&own).unwrap_or(own);
        if target != own_real {
            dirs.push(target);
        }
    }
    dirs
}

/// The watcher and the directories it watches.
struct Watches {
    watcher: notify::RecommendedWatcher,
    dirs: Vec<PathBuf>,
}

impl Watches {
    /// Follows symlink changes: watches the current target's directory and
    /// drops watches on directories no longer involved (a Kubernetes swap
    /// deletes the old timestamped directory).
    fn refresh(&mut self, path: &Path) {
        let want = watch_dirs(path);
        let (keep, drop): (Vec<PathBuf>, Vec<PathBuf>) =
            self.dirs.drain(..).partition(|d| want.contains(d));
        for d in drop {
            let _ = self.watcher.unwatch(&d);
        }
        self.dirs = keep;
        for d in want {
            if self.dirs.contains(&d) {
                continue;
            }
            match self.watcher.watch(&d, RecursiveMode::NonRecursive) {
                Ok(()) => self.dirs.push(d),
                Err(e) => tracing::warn!(dir = %d.display(), error = %e, "cannot watch directory"),
            }
        }
    }
}

/// Allocations at least this big get their own mapping (glibc), see
/// [`tune_allocator`].
const MMAP_THRESHOLD: i32 = 1 << 20;

/// Makes every allocation of [`MMAP_THRESHOLD`] or more its own mapping,
/// returned to the OS the moment it is freed. glibc's default threshold
/// rises (up to 32 MiB) after the first large free, after which the
/// multi-megabyte buffers of a reload (the map text, the tenant list while
/// it grows, the index being built) are carved from the heap, and the
/// memory of one phase cannot be reused by the next: measured on a
/// million-tenant TOML map, the reload peak drops from 155 MB to 114 MB
/// with a fixed 1 MiB threshold. The query path never allocates that much,
/// so it is unaffected. Process-wide; called once when watching starts.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt takes two integers and changes allocator settings;
    // it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Hands freed heap memory back to the OS. glibc keeps freed memory of a
/// thread's arena for reuse (and, after a large free, serves later large
/// allocations from the heap instead of fresh mappings), so without this
/// the resident size stays at the reload peak forever. Called on the reload
/// thread after a snapshot is released; takes milliseconds.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Lowers the calling thread's scheduling priority, so that compiling a big
/// map yields the CPU to query threads. Best effort.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid takes no arguments; setpriority takes plain
        // integers and only affects the calling thread (Linux: per-thread
        // nice values). Neither touches memory we own.
        let rc = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, RELOAD_NICE)
        };
        if rc != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "cannot lower the reload thread's priority"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::Format;
    use crate::map::generate::{Spec, generate_spec};

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    fn spec(tenants: usize, move_every: usize) -> String {
        let mut s = Spec::new(tenants, 2, Format::Toml);
        s.move_every = move_every;
        generate_spec(&s)
    }

    /// A reloader serving `text` from a file in a fresh directory.
    fn setup(text: &str) -> (tempfile::TempDir, Reloader, Store) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let path = dir.path().join("map.toml");
        write(&path, text);
        let mut r = Reloader::new(path, Some(dir.path().join("state")));
        let snap = r
            .load_initial(initial_serial(Some(&dir.path().join("state"))))
            .unwrap_or_else(|e| panic!("{e}"));
        (dir, r, Store::new(snap))
    }

    #[test]
    fn next_serial_is_monotonic() {
        let now = next_serial(None);
        assert!(next_serial(Some(now)) > now);
        assert_eq!(next_serial(Some(now + 100)), now + 101);
    }

    #[test]
    fn serial_survives_restarts_and_bad_state_is_ignored() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let state = dir.path().join("nested/state");
        assert_eq!(read_serial(&state).ok(), Some(None));
        let far = next_serial(None) + 1_000;
        write_serial(&state, far).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read_serial(&state).ok(), Some(Some(far)));
        assert_eq!(initial_serial(Some(&state)), far + 1);
        write(&state.join(SERIAL_FILE), "garbage\n");
        assert!(read_serial(&state).is_err());
        let s = initial_serial(Some(&state));
        assert!(s >= next_serial(None).saturating_sub(5) && s < far);
    }

    #[test]
    fn reload_publishes_new_content_once() {
        let (dir, mut r, store) = setup(&spec(100, 0));
        let first = store.load_full().serial;
        // Same content: nothing to do.
        assert_eq!(r.reload(&store, Trigger::Watch), Outcome::Unchanged);
        // New content within the gates (10% moved).
        write(&dir.path().join("map.toml"), &spec(100, 10));
        let Outcome::Reloaded { serial, .. } = r.reload(&store, Trigger::Watch) else {
            panic!("not reloaded: {:?}", store.status());
        };
        assert!(serial > first);
        assert_eq!(store.load().serial, serial);
        assert_eq!(store.status().successes, 1);
        // The serial was persisted.
        assert_eq!(
            read_serial(&dir.path().join("state")).ok(),
            Some(Some(serial))
        );
        // The content hash dedupes repeated events.
        assert_eq!(r.reload(&store, Trigger::Watch), Outcome::Unchanged);
        assert_eq!(store.status().successes, 1);
        // The replaced snapshot was released.
        assert_eq!(r.reap(Duration::ZERO), 0);
    }

    #[test]
    fn bad_map_keeps_the_last_good_one_until_fixed() {
        let (dir, mut r, store) = setup(&spec(100, 0));
        let good = store.load().version.clone();
        let path = dir.path().join("map.toml");
        write(&path, &spec(100, 0).replace("10.0.1.1", "10.0.1.999"));
        let Outcome::Failed(msg) = r.reload(&store, Trigger::Watch) else {
            panic!("bad map accepted")
        };
        // File and line are in the message.
        assert!(msg.contains("map.toml:"), "{msg}");
        assert!(msg.contains("10.0.1.999"), "{msg}");
        assert_eq!(store.load().version, good);
        let st = store.status();
        assert_eq!((st.failures, st.successes), (1, 0));
        assert_eq!(st.last_error.as_deref(), Some(msg.as_str()));
        // The same bad content is not retried on events, but is on SIGHUP.
        assert_eq!(r.reload(&store, Trigger::Watch), Outcome::Unchanged);
        assert!(matches!(
            r.reload(&store, Trigger::Forced),
            Outcome::Failed(_)
        ));
        assert_eq!(store.status().failures, 2);
        // Fixed.
        write(&path, &spec(100, 20));
        assert!(matches!(
            r.reload(&store, Trigger::Watch),
            Outcome::Reloaded { .. }
        ));
        assert_ne!(store.load().version, good);
        assert_eq!(store.status().last_error, None);
    }

    #[test]
    fn build_reports_what_load_str_reports() {
        let good = spec(20, 0);
        let bad = good.replace("10.0.1.1", "10.0.1.999");
        let dup = format!("{good}t000001 = \"c0002\"\n");
        let unversioned = good.replace("[zone]", "# no version\n[zone]");
        for text in [&good, &bad, &dup, &unversioned] {
            let (dir, r, _) = setup(&good);
            let path = dir.path().join("map.toml");
            write(&path, text);
            let via_load_str = r.compile(text, 7);
            let via_build = r.build(text.clone(), 7);
            match (via_load_str, via_build) {
                (Ok(a), Ok(b)) => {
                    assert_eq!((a.version, a.serial), (b.version, b.serial));
                    assert_eq!(a.tenants.len(), b.tenants.len());
                }
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                (a, b) => panic!("load_str: {a:?}\nbuild: {b:?}"),
            }
        }
    }

    #[test]
    fn reverting_to_the_map_in_force_clears_the_failure() {
        let text = spec(10, 0);
        let (dir, mut r, store) = setup(&text);
        let path = dir.path().join("map.toml");
        write(&path, "not toml [");
        assert!(matches!(
            r.reload(&store, Trigger::Watch),
            Outcome::Failed(_)
        ));
        write(&path, &text);
        assert_eq!(r.reload(&store, Trigger::Watch), Outcome::Unchanged);
        assert_eq!(store.status().last_error, None);
    }

    #[test]
    fn a_deleted_map_keeps_the_last_good_one() {
        let (dir, mut r, store) = setup(&spec(100, 0));
        let good = store.load().version.clone();
        let path = dir.path().join("map.toml");
        std::fs::remove_file(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.reload(&store, Trigger::Watch), Outcome::Missing);
        assert_eq!(store.load().version, good);
        assert!(
            store
                .status()
                .last_error
                .is_some_and(|e| e.contains("gone"))
        );
        // Recorded once, not on every event.
        assert_eq!(r.reload(&store, Trigger::Watch), Outcome::Missing);
        assert_eq!(store.status().failures, 1);
        write(&path, &spec(100, 10));
        assert!(matches!(
            r.reload(&store, Trigger::Watch),
            Outcome::Reloaded { .. }
        ));
    }

    #[test]
    fn gates_reject_a_mass_move_and_an_override_lets_it_through() {
        let (dir, mut r, store) = setup(&spec(100, 0));
        let good = store.load().version.clone();
        let path = dir.path().join("map.toml");
        // Every 2nd tenant moves: 50%.
        write(&path, &spec(100, 2));
        let Outcome::Failed(msg) = r.reload(&store, Trigger::Watch) else {
            panic!("mass move accepted")
        };
        assert!(msg.contains("safety gates"), "{msg}");
        assert!(msg.contains("50 of 100"), "{msg}");
        assert_eq!(store.load().version, good);
        let mut s = Spec::new(100, 2, Format::Toml);
        s.move_every = 2;
        s.allow_mass_change = Some("drain c0001 (OPS-7)".into());
        write(&path, &generate_spec(&s));
        assert!(matches!(
            r.reload(&store, Trigger::Watch),
            Outcome::Reloaded { .. }
        ));
        // Moving them back with the same override is a new mass change.
        s.move_every = 0;
        write(&path, &generate_spec(&s));
        assert!(matches!(
            r.reload(&store, Trigger::Watch),
            Outcome::Failed(_)
        ));
    }

    #[test]
    fn replaced_snapshots_are_released_by_the_reloader_not_readers() {
        let (dir, mut r, store) = setup(&spec(100, 0));
        let held = store.load_full();
        write(&dir.path().join("map.toml"), &spec(100, 10));
        assert!(matches!(
            r.reload(&store, Trigger::Watch),
            Outcome::Reloaded { .. }
        ));
        // A reader still holds the old snapshot: the reloader keeps it too.
        assert_eq!(r.reap(Duration::ZERO), 1);
        assert_eq!(Arc::strong_count(&held), 2);
        // The reader lets go; its drop only decrements the count ...
        let weak = Arc::downgrade(&held);
        drop(held);
        assert!(weak.upgrade().is_some());
        // ... and the reloader frees it.
        assert_eq!(r.reap(Duration::ZERO), 0);
        assert!(weak.upgrade().is_none());
    }

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

    #[test]
    fn only_changes_count_as_events() {
        use notify::event::{CreateKind, ModifyKind, RenameMode};
        let ev = |kind| Event::new(kind);
        assert!(!is_change(&ev(EventKind::Access(AccessKind::Open(
            AccessMode::Any
        )))));
        assert!(!is_change(&ev(EventKind::Access(AccessKind::Close(
            AccessMode::Read
        )))));
        assert!(is_change(&ev(EventKind::Access(AccessKind::Close(
            AccessMode::Write
        )))));
        assert!(is_change(&ev(EventKind::Create(CreateKind::File))));
        assert!(is_change(&ev(EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        )))));
        assert!(is_change(&ev(EventKind::Remove(
            notify::event::RemoveKind::Any
        ))));
    }

    #[test]
    fn symlinked_maps_watch_both_directories() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let data = dir.path().join("..2026_01_01");
        std::fs::create_dir(&data).unwrap_or_else(|e| panic!("{e}"));
        write(&data.join("map.toml"), "x");
        std::os::unix::fs::symlink("..2026_01_01", dir.path().join("..data"))
            .unwrap_or_else(|e| panic!("{e}"));
        let link = dir.path().join("map.toml");
        std::os::unix::fs::symlink("..data/map.toml", &link).unwrap_or_else(|e| panic!("{e}"));
        let dirs = watch_dirs(&link);
        assert_eq!(dirs[0], dir.path());
        assert_eq!(dirs.len(), 2);
        assert!(dirs[1].ends_with("..2026_01_01"), "{dirs:?}");
        assert_eq!(watch_dirs(&data.join("map.toml")).len(), 1);
        assert_eq!(parent_dir(Path::new("map.toml")), PathBuf::from("."));
    }
}
