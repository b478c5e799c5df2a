//! Reloading the map file: read → parse → validate → gate → publish,
//! keeping the last good map when a new one is bad.
//!
//! - [`Reloader`] does one reload attempt (this file).
//! - [`watch`] decides which filesystem events may mean the map changed.
//! - [`thread`] runs the `cellns-reload` thread: watching, debouncing,
//!   SIGHUP, and releasing replaced maps.
//!
//! # Reloading
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
//!   query threads win the CPU. The new map is published with one atomic
//!   pointer swap ([`Store::publish_map`]); a query sees the old map or the
//!   new one, never a mix.
//! - **Last known good.** A map that cannot be read, parsed or validated, or
//!   that the safety gates reject (see [`crate::map::diff`]), is logged at
//!   error level with its file and line, recorded in the store's reload
//!   status, and the old map keeps serving. The same content is not retried
//!   (it would fail the same way); the next change, or SIGHUP, is. A deleted
//!   map file also keeps the old map (logged as a warning).
//! - **Releasing.** The last reference to a replaced map is always dropped
//!   on the reload thread ([`Store::reap`]), which then hands the freed
//!   memory back to the OS.
//! - **Memory.** A reload holds two snapshots plus the new map's parse
//!   state at its peak; the text is freed right after parsing. The binary
//!   gives large buffers their own mappings (see `main.rs`), so that each
//!   phase's memory is returned before the next phase allocates.

pub mod thread;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::store::Store;
use super::system::release_free_memory;
use crate::map::{self, MapError, Snapshot, diff::Verdict};

pub use thread::{ReloadHandle, ignore_sighup};

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

/// Loads the map file and keeps it current. Built for `cellns serve --map`;
/// the reloading itself runs on the thread [`Reloader::spawn`] starts, but
/// [`Reloader::reload`] can also be called directly.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    /// Hash of the content in force.
    serving: Option<Hash>,
    /// What the last attempt saw (dedupes repeated events).
    last_seen: Option<Seen>,
}

impl Reloader {
    /// A reloader for the map at `path`.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            serving: None,
            last_seen: None,
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
    /// resident memory and 2.5×. Validation errors need the text to find
    /// their lines, so that rare path reads the file again and reports what
    /// [`map::load_str`] says about it (a unit test keeps both paths equal).
    fn build(&self, text: String) -> Result<Snapshot, MapError> {
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
                Ok(map::compile(checked, version, name))
            }
            Err(_) => {
                drop(file);
                let (again, _) = self.read()?;
                match self.compile(&again) {
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

    /// Loads the map for start-up: there is nothing to fall back to, so
    /// any problem is an error.
    pub fn load_initial(&mut self) -> Result<Snapshot, MapError> {
        let (text, hash) = self.read()?;
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
        let (text, hash) = match self.read() {
            Ok(r) => r,
            Err(MapError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                if self.last_seen != Some(Seen::Missing) || trigger == Trigger::Forced {
                    self.last_seen = Some(Seen::Missing);
                    let version = store.load().view.map().version.clone();
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
        let next = match self.build(text) {
            Ok(s) => s,
            Err(e) => return self.fail(store, e.to_string()),
        };
        let build = started.elapsed();

        let d = map::diff::diff(current.view.map(), &next);
        let (moved, added, removed) = (d.moved.len(), d.added.len(), d.removed.len());
        match d.gates.verdict {
            Verdict::Rejected => {
                let why = d.limits_exceeded();
                tracing::error!(
                    %file,
                    version = %next.version,
                    in_force = %current.view.map().version,
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
        let current_version = current.view.map().version.clone();
        drop(current);
        // The store persists the serial before anyone can see it, swaps,
        // and keeps the replaced value until no reader holds it.
        let serial = store.publish_map(Arc::new(next)).serial();
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
        tracing::error!(
            file = %self.path.display(),
            error = %message,
            in_force = %store.load().view.map().version,
            "map reload failed; still serving the last good map"
        );
        store.record_failure(message.clone());
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
        let store = Store::new(Arc::new(snap), Conditions::default(), serials, |_| ());
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
            let via_load_str = r.compile(text);
            let via_build = r.build(text.clone());
            match (via_load_str, via_build) {
                (Ok(a), Ok(b)) => {
                    assert_eq!(a.version, b.version);
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
}
