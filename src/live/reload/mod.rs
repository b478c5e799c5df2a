//! Reloading the map file: read → parse → validate → gate → publish,
//! keeping the last good map when a new one is bad.
//!
//! - [`Reloader`] does one reload attempt (this file).
//! - [`read`] reads the file, bounded (a regular file only, non-blocking,
//!   at most `--map-max-bytes`, unchanged across the read).
//! - [`watch`] decides which filesystem events may mean the map changed,
//!   and keeps the kernel watches alive.
//! - [`thread`] runs the `cellns-reload` thread: watching, the periodic
//!   check, debouncing, retries, SIGHUP, and releasing replaced maps.
//!
//! # Reloading
//!
//! - **Watching.** The map's *directory* is watched (not the file), because
//!   the file is usually replaced rather than written: editors and
//!   pipelines rename a new file over it, and a Kubernetes ConfigMap volume
//!   swaps a `..data` symlink (`map.toml -> ..data/map.toml`,
//!   `..data -> ..2026_11_27_…`), so the events name `..data`, never the map
//!   file. A finished change in the directory (a close after writing, a
//!   rename, a removal, a new symlink: not each data write, see
//!   [`watch::is_change`]) triggers a re-read, and the content's SHA-256
//!   decides whether anything changed. A directory that is deleted is
//!   watched through its nearest existing parent until it is back, and a
//!   watch whose directory was replaced is re-armed.
//! - **The periodic check.** Every `--map-check-interval-ms` the thread
//!   also looks at the map path as resolved (device, inode, size,
//!   modification time); a change that no event reported, and that stayed
//!   put for one interval, is reloaded and counted
//!   (`cellns_map_check_changes_total`): whatever the watches miss (a
//!   filesystem without inotify, a watch lost in a way we did not foresee)
//!   is still picked up. The watch's health is in `/readyz` and
//!   `cellns_map_watch_ok`. A change between the initial load and the
//!   watches being in place is treated the same way: nothing reported that
//!   its writer had finished.
//! - **Complete files only.** The file is read whole only if it is the
//!   same file with the same size and modification time before and after
//!   the read; otherwise a writer is still at work and it is read again
//!   shortly. A map can also carry `[guard] tenants = N`, which a truncated
//!   copy cannot pass. The safe way to write a map remains: write a
//!   temporary file in the same directory, then rename it over the map.
//! - **Debouncing.** A burst of events (a rename plus cleanup, a
//!   Kubernetes swap) is folded into one reload: the thread waits until the
//!   directory has been quiet for `--reload-debounce-ms`, but never more
//!   than ten times that (at least 1 s) after the first event. SIGHUP
//!   reloads at once, without debouncing, and retries a map that failed
//!   before.
//! - **Building.** Parse, validate, compile and diff run on the reload
//!   thread, at idle priority where the thread may be raised again if it
//!   starves, else at nice 10 (see [`thread`]), so that on a busy machine
//!   the query threads win the CPU. The new map is published with one atomic
//!   pointer swap ([`Store::publish_map`]), under a serial that was saved
//!   first when there is a state directory; a query sees the old map or
//!   the new one, never a mix.
//! - **Last known good.** A map that cannot be read, parsed or validated, or
//!   that the safety gates reject (see [`crate::map::diff`]), is logged at
//!   error level with its file and line, recorded in the store's reload
//!   status, and the old map keeps serving. The same content is not retried
//!   (it would fail the same way); the next change, or SIGHUP, is. A deleted
//!   map file also keeps the old map (logged as a warning).
//! - **Retrying.** A reload that failed for a reason that may pass by
//!   itself (descriptors or memory exhausted, an I/O error, a serial that
//!   could not be saved, a file still being written) is retried with a
//!   backoff (0.25 s doubling to 30 s), without waiting for another event;
//!   `/readyz` says so meanwhile (the server stays ready: the last good map
//!   serves).
//! - **Releasing.** The last reference to a replaced map is always dropped
//!   on the reload thread ([`Store::reap`]), which then hands the freed
//!   memory back to the OS.
//! - **Memory.** A reload holds two snapshots plus the new map's parse
//!   state at its peak. The file is read in 1 MiB pieces; a JSON map is
//!   parsed straight from them, each freed once parsed, a TOML map from
//!   the text joined from them, freed right after parsing; the new tenant
//!   index takes over the parsed names instead of copying them. The binary
//!   gives large buffers their own mappings (see `main.rs`), so that each
//!   phase's memory is returned before the next phase allocates.

pub mod read;
pub mod thread;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::store::Store;
use super::system::release_free_memory;
use crate::map::{self, MapError, Snapshot, diff::Verdict};
use read::{ReadError, Signature};

pub use read::DEFAULT_MAX_BYTES;
pub use thread::{ReloadError, ReloadHandle, ThreadConfig, ignore_sighup};

/// How long a reload waits for readers of the replaced map before leaving
/// its release to a later pass.
const REAP_WAIT: Duration = Duration::from_millis(200);

type Hash = [u8; 32];

/// What the reload thread last saw in the map file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Content with this hash (loaded, or rejected).
    Content(Hash),
    /// The file did not exist.
    Missing,
    /// The file was refused unread (not a regular file, too large, not
    /// readable): looked at again only once it changes.
    Refused,
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
    /// It failed for a reason that may pass by itself: try again soon
    /// (the old map serves meanwhile).
    Retry(String),
}

/// Why a reload was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The watcher saw changes in the map's directory, or the periodic
    /// check saw the file change.
    Watch,
    /// SIGHUP, or an explicit request: re-read even content seen before.
    Forced,
    /// The retry of an attempt that failed for a passing reason.
    Retry,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Self::Watch => "watch",
            Self::Forced => "forced",
            Self::Retry => "retry",
        }
    }
}

/// Why the map could not be loaded (at start-up: nothing to fall back to).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read (see [`read`]).
    #[error(transparent)]
    Read(#[from] ReadError),
    /// It is not a valid map.
    #[error(transparent)]
    Map(#[from] MapError),
}

impl LoadError {
    /// One line for logs and start-up failures (see [`MapError::summary`]).
    pub fn summary(&self) -> String {
        match self {
            Self::Read(e) => e.to_string(),
            Self::Map(e) => e.summary(),
        }
    }

    fn is_transient(&self) -> bool {
        matches!(self, Self::Read(e) if e.is_transient())
    }
}

/// Loads the map file and keeps it current. Built for `cellns serve --map`;
/// the reloading itself runs on the thread [`Reloader::spawn`] starts, but
/// [`Reloader::reload`] can also be called directly.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    /// Largest map file read (`--map-max-bytes`).
    max_bytes: u64,
    /// Hash of the content in force.
    serving: Option<Hash>,
    /// What the last attempt saw (dedupes repeated events).
    last_seen: Option<Seen>,
    /// The file's signature at the last attempt (`None`: missing), for the
    /// periodic check.
    signature: Option<Signature>,
}

impl Reloader {
    /// A reloader for the map at `path`, reading at most
    /// [`DEFAULT_MAX_BYTES`].
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            max_bytes: DEFAULT_MAX_BYTES,
            serving: None,
            last_seen: None,
            signature: None,
        }
    }

    /// Reads map files of at most `max` bytes (`--map-max-bytes`).
    pub fn max_bytes(mut self, max: u64) -> Self {
        self.max_bytes = max;
        self
    }

    /// The map file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's signature when it was last read (or looked at).
    fn last_signature(&self) -> Option<Signature> {
        self.signature
    }

    fn read(&mut self) -> Result<(String, Hash), LoadError> {
        let (chunks, hash) = self.read_chunks()?;
        Ok((self.text_of(chunks)?, hash))
    }

    /// The file's content in pieces of [`read::CHUNK`] bytes, and its hash.
    fn read_chunks(&mut self) -> Result<(Vec<Vec<u8>>, Hash), LoadError> {
        let result = read::read_bounded_chunks(&self.path, self.max_bytes, read::CHUNK);
        self.signature = match &result {
            Ok((_, sig)) => Some(*sig),
            Err(_) => read::signature(&self.path),
        };
        let (chunks, _) = result?;
        let mut hasher = Sha256::new();
        for c in &chunks {
            hasher.update(c);
        }
        Ok((chunks, hasher.finalize().into()))
    }

    /// The pieces as one text (each freed once copied).
    fn text_of(&self, chunks: Vec<Vec<u8>>) -> Result<String, MapError> {
        let mut bytes = Vec::with_capacity(chunks.iter().map(Vec::len).sum());
        for c in chunks {
            bytes.extend_from_slice(&c);
        }
        String::from_utf8(bytes).map_err(|e| MapError::Parse {
            file: self.path.display().to_string(),
            line: None,
            message: format!("not UTF-8 text ({e})"),
        })
    }

    fn compile(&self, text: &str) -> Result<Snapshot, MapError> {
        let name = self.path.display().to_string();
        map::load_str(map::Source {
            text,
            format: map::Format::from_path(&self.path)?,
            name: &name,
        })
    }

    /// [`map::load_str`] for a reload, with the text's memory given back as
    /// soon as it is parsed: the text of a million-tenant map is tens of
    /// megabytes, and keeping it through validation (which holds the parsed
    /// tenant list and builds the new index, next to the snapshot in force)
    /// is the difference between a reload peak of about 2× the steady
    /// resident memory and 2.5×. A JSON map is parsed straight from the
    /// pieces it was read in, each freed once parsed, so that the whole text
    /// and the parsed tenant list are never in memory together either
    /// (measured on 1,000,000 tenants: a peak of 2.23× the steady RSS before,
    /// see BENCHMARKS.md). Validation errors need the text to find their
    /// lines, so that rare path reads the file again and reports what
    /// [`map::load_str`] says about it (a unit test keeps both paths equal).
    fn build(&mut self, chunks: Vec<Vec<u8>>, hash: &Hash) -> Result<Snapshot, LoadError> {
        let name = self.path.display().to_string();
        let format = map::Format::from_path(&self.path)?;
        let file = match format {
            map::Format::Json => {
                // `serde_json` reads byte by byte: buffered.
                let reader =
                    std::io::BufReader::with_capacity(64 << 10, read::ChunkReader::new(chunks));
                map::parse_json_reader(reader, &name)?
            }
            map::Format::Toml => {
                let text = self.text_of(chunks)?;
                map::parse(map::Source {
                    text: &text,
                    format,
                    name: &name,
                })?
            }
        };
        let version = match &file.version {
            Some(v) => v.clone(),
            None => map::version_of_digest(hash),
        };
        // The parsed list is freed as validation ends (its names move into
        // the new index).
        match map::validate::validate_owned(file) {
            Ok(checked) => Ok(map::compile(checked, version, name)),
            Err(_) => {
                let (again, _) = self.read()?;
                match self.compile(&again) {
                    Err(e) => Err(e.into()),
                    // Replaced by a valid map meanwhile: its own event
                    // follows and reloads it.
                    Ok(_) => Err(LoadError::Read(ReadError::Changing { file: name })),
                }
            }
        }
    }

    /// Loads the map for start-up: there is nothing to fall back to, so
    /// any problem is an error (a file still being written is read again,
    /// for a few seconds).
    pub fn load_initial(&mut self) -> Result<Snapshot, LoadError> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut pause = Duration::from_millis(50);
        let (text, hash) = loop {
            match self.read() {
                Err(LoadError::Read(ReadError::Changing { .. })) if Instant::now() < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                r => break r?,
            }
        };
        let snap = self.compile(&text)?;
        self.serving = Some(hash);
        self.last_seen = Some(Seen::Content(hash));
        Ok(snap)
    }

    /// Re-reads the map file and, when its content is new and good, publishes
    /// it in `store`. Never panics and never leaves `store` without a map.
    pub fn reload<A: Send + Sync + 'static>(
        &mut self,
        store: &Store<A>,
        trigger: Trigger,
    ) -> Outcome {
        let file = self.path.display().to_string();
        // An event in the directory that did not touch the map (another
        // file written there): nothing to read. A failure that may pass
        // has no `last_seen` and is always read again.
        if trigger == Trigger::Watch
            && matches!(self.last_seen, Some(Seen::Content(_) | Seen::Refused))
            && self.signature.is_some()
            && read::signature(&self.path) == self.signature
        {
            tracing::debug!(%file, "map file unchanged (same inode, size and time)");
            return Outcome::Unchanged;
        }
        let (chunks, hash) = match self.read_chunks() {
            Ok(r) => r,
            Err(LoadError::Read(ReadError::Missing { .. })) => {
                if self.last_seen != Some(Seen::Missing) || trigger == Trigger::Forced {
                    self.last_seen = Some(Seen::Missing);
                    let version = store.load().view.map().version.clone();
                    // Recorded before it is logged: whoever reads the log
                    // line must find the status, metrics and audit saying so.
                    store.record_failure(format!(
                        "{file}: map file is gone; serving the last good map (version {version})"
                    ));
                    tracing::warn!(
                        %file,
                        %version,
                        "map file is gone; still serving the last good map"
                    );
                }
                return Outcome::Missing;
            }
            Err(LoadError::Read(e @ ReadError::Changing { .. })) => {
                // Not a failure: a writer is at work. Read again shortly.
                self.last_seen = None;
                tracing::info!(%file, "the map file is being written; reading it again shortly");
                return Outcome::Retry(e.to_string());
            }
            Err(e) => {
                // Unreadable (descriptors exhausted, permissions, a FIFO, too
                // large, not UTF-8, ...): looked at again when the file
                // changes; a passing cause is retried without a change.
                let transient = e.is_transient();
                self.last_seen = if transient { None } else { Some(Seen::Refused) };
                let outcome = self.fail(store, e.to_string());
                return match outcome {
                    Outcome::Failed(m) if transient => Outcome::Retry(m),
                    o => o,
                };
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
        let next = match self.build(chunks, &hash) {
            Ok(s) => s,
            Err(LoadError::Read(e @ ReadError::Changing { .. })) => {
                self.last_seen = None;
                return Outcome::Retry(e.to_string());
            }
            Err(e) => {
                let transient = e.is_transient();
                if transient {
                    self.last_seen = None;
                }
                return match self.fail(store, e.to_string()) {
                    Outcome::Failed(m) if transient => Outcome::Retry(m),
                    o => o,
                };
            }
        };
        let build = started.elapsed();

        let d = map::diff::diff(current.view.map(), &next);
        let (moved, added, removed) = (d.moved.len(), d.added.len(), d.removed.len());
        match d.gates.verdict {
            Verdict::Rejected => {
                let why = d.limits_exceeded();
                let msg = format!(
                    "{file}: rejected by the safety gates: {why} (set [safety] allow_mass_change = \"<reason>\" to allow it)"
                );
                // Recorded before it is logged (see `fail`).
                store.record_failure(msg.clone());
                tracing::error!(
                    %file,
                    version = %next.version,
                    in_force = %current.view.map().version,
                    moved,
                    removed,
                    "map change rejected by the safety gates ({why}); still serving the last good \
                     map. To make this change on purpose, set [safety] allow_mass_change = \"<reason>\""
                );
                drop(d);
                drop(next);
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
        let current_version = current.view.map().version.clone();
        drop(current);
        // The store saves the serial before anyone can see it (or refuses
        // to publish), swaps, and keeps the replaced value until no reader
        // holds it.
        let serial = match store.publish_map(Arc::new(next)) {
            Ok(view) => view.serial(),
            Err(e) => {
                // The disk may come back (space freed, permissions fixed):
                // retried, and any event reads the file again too.
                self.last_seen = None;
                let msg = format!(
                    "{file}: not published: the SOA serial cannot be saved ({e}); still serving \
                     the last good map"
                );
                return match self.fail(store, msg) {
                    Outcome::Failed(m) => Outcome::Retry(m),
                    o => o,
                };
            }
        };
        self.serving = Some(hash);
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
        store.audit().record(
            super::audit::Event::new("reload", "reload_accepted")
                .change(Some(current_version), Some(version.clone()))
                .detail("file", file.as_str())
                .detail("serial", serial)
                .detail("cells", cells)
                .detail("tenants", tenants)
                .detail("moved", moved)
                .detail("added", added)
                .detail("removed", removed),
        );
        reap(store, REAP_WAIT);
        Outcome::Reloaded { version, serial }
    }

    fn fail<A: Send + Sync + 'static>(&mut self, store: &Store<A>, message: String) -> Outcome {
        // Recorded before it is logged: whoever acts on the log line (an
        // operator, a test) must find `/readyz`, the metrics and the audit
        // log saying so. The reload thread runs at idle priority and can be
        // preempted for long right after the line is written.
        store.record_failure(message.clone());
        tracing::error!(
            file = %self.path.display(),
            error = %message,
            in_force = %store.load().view.map().version,
            "map reload failed; still serving the last good map"
        );
        // What the failed attempt allocated.
        release_free_memory();
        Outcome::Failed(message)
    }
}

/// Releases replaced values nobody reads any more (see [`Store::reap`]),
/// handing the memory back to the OS when something was freed; returns how
/// many are still held.
fn reap<A: Send + Sync + 'static>(store: &Store<A>, wait: Duration) -> usize {
    let r = store.reap(wait);
    if r.freed > 0 {
        release_free_memory();
    }
    r.held
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::Conditions;
    use crate::live::serial::{Serials, read_serial};
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
    fn setup(text: &str) -> (tempfile::TempDir, Reloader, Store<()>) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let path = dir.path().join("map.toml");
        write(&path, text);
        let mut r = Reloader::new(path);
        let snap = r.load_initial().unwrap_or_else(|e| panic!("{e}"));
        let serials = Serials::open(Some(dir.path().join("state")));
        let store = Store::new(Arc::new(snap), Conditions::default(), serials, |_| ())
            .unwrap_or_else(|e| panic!("{e}"));
        (dir, r, store)
    }

    #[test]
    fn reload_publishes_new_content_once() {
        let (dir, mut r, store) = setup(&spec(100, 0));
        let first = store.load_full().view.serial();
        // Same content: nothing to do.
        assert_eq!(r.reload(&store, Trigger::Watch), Outcome::Unchanged);
        // New content within the gates (10% moved).
        write(&dir.path().join("map.toml"), &spec(100, 10));
        let Outcome::Reloaded { serial, .. } = r.reload(&store, Trigger::Watch) else {
            panic!("not reloaded: {:?}", store.status());
        };
        assert!(serial > first);
        assert_eq!(store.load().view.serial(), serial);
        assert_eq!(store.status().successes, 1);
        // The serial was persisted.
        assert_eq!(
            read_serial(&dir.path().join("state")).ok(),
            Some(Some(serial))
        );
        // The content hash dedupes repeated events.
        assert_eq!(r.reload(&store, Trigger::Watch), Outcome::Unchanged);
        assert_eq!(store.status().successes, 1);
        // The replaced map was released.
        assert_eq!(store.reap(Duration::ZERO).held, 0);
    }

    #[test]
    fn bad_map_keeps_the_last_good_one_until_fixed() {
        let (dir, mut r, store) = setup(&spec(100, 0));
        let good = store.load().view.map().version.clone();
        let path = dir.path().join("map.toml");
        write(&path, &spec(100, 0).replace("10.0.1.1", "10.0.1.999"));
        let Outcome::Failed(msg) = r.reload(&store, Trigger::Watch) else {
            panic!("bad map accepted")
        };
        // File and line are in the message.
        assert!(msg.contains("map.toml:"), "{msg}");
        assert!(msg.contains("10.0.1.999"), "{msg}");
        assert_eq!(store.load().view.map().version, good);
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
        assert_ne!(store.load().view.map().version, good);
        assert_eq!(store.status().last_error, None);
    }

    /// `text` in pieces of `chunk` bytes, as `read_chunks` gives them.
    fn pieces(text: &str, chunk: usize) -> Vec<Vec<u8>> {
        text.as_bytes().chunks(chunk).map(<[u8]>::to_vec).collect()
    }

    #[test]
    fn build_reports_what_load_str_reports() {
        for format in [Format::Toml, Format::Json] {
            let mut s = Spec::new(20, 2, format);
            let unversioned = generate_spec(&s);
            s.version = Some("v1".to_owned());
            let good = generate_spec(&s);
            assert_ne!(good, unversioned);
            let bad = good.replace("10.0.1.1", "10.0.1.999");
            assert_ne!(bad, good);
            let (ext, dup, junk, not_utf8) = match format {
                Format::Toml => (
                    "toml",
                    format!("{good}t000001 = \"c0002\"\n"),
                    "not toml [".to_owned(),
                    good.replace("t000002", "t\u{e9}00002"),
                ),
                Format::Json => (
                    "json",
                    good.replacen("\"t000002\"", "\"T000001\"", 1),
                    "{\"zone\": [".to_owned(),
                    good.replace("t000002", "t\u{e9}00002"),
                ),
            };
            assert_ne!(dup, good);
            for text in [&good, &bad, &dup, &unversioned, &junk, &not_utf8] {
                let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
                let path = dir.path().join(format!("map.{ext}"));
                write(&path, text);
                let mut r = Reloader::new(path);
                let via_load_str = r.compile(text);
                // Pieces smaller than a name, a line, a UTF-8 sequence.
                for chunk in [1, 3, 64, read::CHUNK] {
                    let hash: Hash = Sha256::digest(text.as_bytes()).into();
                    let via_build = r.build(pieces(text, chunk), &hash);
                    match (&via_load_str, via_build) {
                        (Ok(a), Ok(b)) => {
                            assert_eq!(a.version, b.version);
                            assert_eq!(
                                a.tenants.iter().collect::<Vec<_>>(),
                                b.tenants.iter().collect::<Vec<_>>()
                            );
                        }
                        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{chunk}"),
                        (a, b) => panic!("{ext} {chunk}: load_str: {a:?}\nbuild: {b:?}"),
                    }
                }
            }
            // A byte sequence that is not UTF-8 is refused either way.
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
            let path = dir.path().join(format!("map.{ext}"));
            let mut bytes = good.clone().into_bytes();
            let at = good.find("t000003").unwrap_or_else(|| panic!("no t000003"));
            bytes[at + 1] = 0xff;
            std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("{e}"));
            let mut r = Reloader::new(path);
            let hash: Hash = Sha256::digest(&bytes).into();
            let chunks: Vec<Vec<u8>> = bytes.chunks(5).map(<[u8]>::to_vec).collect();
            let e = r.build(chunks, &hash).expect_err("not UTF-8");
            assert!(e.to_string().contains(&format!("map.{ext}")), "{e}");
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
        let good = store.load().view.map().version.clone();
        let path = dir.path().join("map.toml");
        std::fs::remove_file(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.reload(&store, Trigger::Watch), Outcome::Missing);
        assert_eq!(store.load().view.map().version, good);
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
        let good = store.load().view.map().version.clone();
        let path = dir.path().join("map.toml");
        // Every 2nd tenant moves: 50%.
        write(&path, &spec(100, 2));
        let Outcome::Failed(msg) = r.reload(&store, Trigger::Watch) else {
            panic!("mass move accepted")
        };
        assert!(msg.contains("safety gates"), "{msg}");
        assert!(msg.contains("50 of 100"), "{msg}");
        assert_eq!(store.load().view.map().version, good);
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
    fn what_is_not_a_bounded_regular_file_is_refused_and_the_next_good_map_loads() {
        let (dir, r, store) = setup(&spec(100, 0));
        let mut r = r.max_bytes(64 * 1024);
        let good = store.load().view.map().version.clone();
        let path = dir.path().join("map.toml");
        let refuse = |r: &mut Reloader, what: &str| {
            let Outcome::Failed(msg) = r.reload(&store, Trigger::Watch) else {
                panic!("{what} not refused: {:?}", store.status());
            };
            assert_eq!(store.load().view.map().version, good, "{what}");
            msg
        };
        // A FIFO nobody writes into: refused at once, no blocking.
        std::fs::remove_file(&path).unwrap_or_else(|e| panic!("{e}"));
        let c =
            std::ffi::CString::new(path.display().to_string()).unwrap_or_else(|e| panic!("{e}"));
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(refuse(&mut r, "a FIFO").contains("not a FIFO"));
        // /dev/zero through a symlink.
        std::fs::remove_file(&path).unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap_or_else(|e| panic!("{e}"));
        assert!(refuse(&mut r, "/dev/zero").contains("not a character device"));
        // Over the size limit.
        std::fs::remove_file(&path).unwrap_or_else(|e| panic!("{e}"));
        write(
            &path,
            &format!("{}\n{}", spec(100, 0), "# pad\n".repeat(20_000)),
        );
        assert!(refuse(&mut r, "a big file").contains("over the limit of 65536 bytes"));
        // None of these is retried by itself.
        assert!(!store.status().retrying);
        // The next good map loads.
        write(&path, &spec(100, 10));
        assert!(matches!(
            r.reload(&store, Trigger::Watch),
            Outcome::Reloaded { .. }
        ));
    }

    #[test]
    fn a_serial_that_cannot_be_saved_refuses_the_map_and_is_retried() {
        let (dir, mut r, store) = setup(&spec(100, 0));
        let before = store.load().view.serial();
        let good = store.load().view.map().version.clone();
        let state = dir.path().join("state");
        // Every write of the serial fails (root included).
        std::fs::create_dir(state.join(".serial.tmp")).unwrap_or_else(|e| panic!("{e}"));
        write(&dir.path().join("map.toml"), &spec(100, 10));
        let Outcome::Retry(msg) = r.reload(&store, Trigger::Watch) else {
            panic!("published without a saved serial: {:?}", store.status());
        };
        assert!(msg.contains("SOA serial cannot be saved"), "{msg}");
        assert_eq!(store.load().view.serial(), before);
        assert_eq!(store.load().view.map().version, good);
        assert_eq!(read_serial(&state).ok(), Some(Some(before)));
        assert_eq!(store.status().failures, 1);
        // Once the disk is writable again the retry publishes.
        std::fs::remove_dir(state.join(".serial.tmp")).unwrap_or_else(|e| panic!("{e}"));
        let Outcome::Reloaded { serial, .. } = r.reload(&store, Trigger::Retry) else {
            panic!("not reloaded: {:?}", store.status());
        };
        assert!(serial > before);
        assert_eq!(read_serial(&state).ok(), Some(Some(serial)));
    }

    #[test]
    fn a_truncated_map_fails_its_guard() {
        let full = spec(100, 0).replace("[zone]", "[guard]\ntenants = 100\n\n[zone]");
        let (dir, mut r, store) = setup(&full);
        let good = store.load().view.map().version.clone();
        // Cut at a line boundary: 95 tenants, within every safety gate.
        let cut: String = {
            let lines: Vec<&str> = full.lines().collect();
            lines[..lines.len() - 5].join("\n") + "\n"
        };
        write(&dir.path().join("map.toml"), &cut);
        let Outcome::Failed(msg) = r.reload(&store, Trigger::Watch) else {
            panic!("a truncated map was served");
        };
        assert!(msg.contains("guard.tenants"), "{msg}");
        assert!(msg.contains("declares 100 tenant(s) but lists 95"), "{msg}");
        assert_eq!(store.load().view.map().version, good);
    }

    #[test]
    fn a_declared_serial_is_served() {
        let text = spec(10, 0).replace("[zone]", "[zone]\nserial = 4000000000");
        let (dir, mut r, store) = setup(&text);
        assert_eq!(store.load().view.serial(), 4_000_000_000);
        let next = spec(10, 0).replace("[zone]", "[zone]\nserial = 4000000007");
        write(&dir.path().join("map.toml"), &next);
        let Outcome::Reloaded { serial, .. } = r.reload(&store, Trigger::Watch) else {
            panic!("not reloaded: {:?}", store.status());
        };
        assert_eq!(serial, 4_000_000_007);
    }
}
