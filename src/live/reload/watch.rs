//! Which directories to watch for a map file, keeping those watches alive,
//! and which events may mean the map changed.
//!
//! A kernel watch belongs to a directory's inode, not its path: when the
//! directory is deleted (a volume remount, a deploy that replaces the
//! directory), the watch dies with it, and a directory created later at the
//! same path is not watched. So [`Watches::refresh`] runs after every event
//! and on every periodic check, compares each watched path's inode with the
//! one it armed, and re-arms. A directory that does not exist is watched
//! through its nearest existing ancestor, whose events say when it comes
//! back. Whatever the watches miss, the periodic check of the file itself
//! (see `thread`) still catches.

use std::path::{Path, PathBuf};

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};
use notify::{Event, EventKind, RecursiveMode, Watcher as _};

use crate::live::store::WatchState;

/// Whether a watcher event may mean the map changed (and is complete).
///
/// Only a finished write counts: closing a file opened for writing, a
/// rename, a removal, an attribute change (`touch`), a new symlink or
/// directory. Data writes do not (a writer in the middle of the file would
/// be read half-written), nor does creating a regular file (its content
/// follows; its close is the event), nor opening and reading (our own reads
/// included).
pub(super) fn is_change(ev: &Event) -> bool {
    match ev.kind {
        EventKind::Access(
            AccessKind::Open(_)
            | AccessKind::Read
            | AccessKind::Close(AccessMode::Read | AccessMode::Execute),
        ) => false,
        EventKind::Modify(ModifyKind::Data(_)) => false,
        EventKind::Create(CreateKind::File) => ev.paths.iter().any(|p| created_complete(p)),
        _ => true,
    }
}

/// A directory entry just created that is complete as it is: a symlink, a
/// directory, or a hard link to an existing file (a plain new file is
/// still being written).
fn created_complete(path: &Path) -> bool {
    let Ok(m) = std::fs::symlink_metadata(path) else {
        // Gone already: whatever it was, look.
        return true;
    };
    if !m.file_type().is_file() {
        return true;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        m.nlink() > 1
    }
    #[cfg(not(unix))]
    false
}

/// The directory holding `path` as written (not resolved: for a symlink,
/// the link's directory, which is where a Kubernetes swap happens).
pub(super) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The directories to watch for `path`: its own, and its resolved target's
/// when it is a symlink into another directory.
pub(super) fn watch_dirs(path: &Path) -> Vec<PathBuf> {
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

/// `dir` if it is a directory, else its nearest ancestor that is.
fn nearest_existing(dir: &Path) -> Option<PathBuf> {
    let mut d = Some(dir);
    while let Some(p) = d {
        if p.is_dir() {
            return Some(p.to_path_buf());
        }
        d = p.parent().filter(|q| !q.as_os_str().is_empty());
    }
    if dir.is_relative() {
        Some(PathBuf::from("."))
    } else {
        None
    }
}

/// What identifies a directory: device and inode.
fn dir_id(dir: &Path) -> Option<(u64, u64)> {
    let m = std::fs::metadata(dir).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        Some((m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = m;
        Some((0, 0))
    }
}

/// One armed watch: the directory and the inode it was armed on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Armed {
    dir: PathBuf,
    id: (u64, u64),
}

/// What [`Watches::refresh`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refreshed {
    /// A watch was added or re-armed: changes made while it was missing
    /// raised no event, so the file must be looked at now.
    pub(super) rearmed: bool,
    /// How well the map is watched now.
    pub(super) health: WatchState,
}

/// The watcher (none when the OS would not give one: then only the
/// periodic check sees changes) and the directories it watches.
pub(super) struct Watches {
    watcher: Option<notify::RecommendedWatcher>,
    /// Why there is no watcher.
    no_watcher: Option<String>,
    armed: Vec<Armed>,
}

impl Watches {
    /// Watches through `watcher`, or nothing when it could not be made
    /// (`Err` says why).
    pub(super) fn new(watcher: Result<notify::RecommendedWatcher, String>) -> Self {
        match watcher {
            Ok(w) => Self {
                watcher: Some(w),
                no_watcher: None,
                armed: Vec::new(),
            },
            Err(why) => Self {
                watcher: None,
                no_watcher: Some(why),
                armed: Vec::new(),
            },
        }
    }

    /// Arms what `path` needs now: each directory of [`watch_dirs`], or its
    /// nearest existing ancestor while it is missing; re-arms a directory
    /// whose inode changed (replaced, or deleted and made again); drops
    /// watches no longer needed (a Kubernetes swap deletes the old
    /// timestamped directory).
    pub(super) fn refresh(&mut self, path: &Path) -> Refreshed {
        let mut rearmed = false;
        // A symlink may be swapped again while we look (a Kubernetes swap
        // deletes the directory we just resolved): look again.
        for _ in 0..3 {
            match self.refresh_once(path) {
                Ok(r) => {
                    return Refreshed {
                        rearmed: rearmed || r.rearmed,
                        health: r.health,
                    };
                }
                Err(r) => rearmed |= r,
            }
        }
        let r = self
            .refresh_once(path)
            .unwrap_or_else(|rearmed_now| Refreshed {
                rearmed: rearmed_now,
                health: WatchState::Degraded(format!(
                    "the directories of {} keep changing while being watched",
                    path.display()
                )),
            });
        Refreshed {
            rearmed: rearmed || r.rearmed,
            health: r.health,
        }
    }

    /// One pass of [`Self::refresh`]; `Err(rearmed)` when a directory to
    /// watch vanished meanwhile (look again).
    fn refresh_once(&mut self, path: &Path) -> Result<Refreshed, bool> {
        let Some(watcher) = self.watcher.as_mut() else {
            return Ok(Refreshed {
                rearmed: false,
                health: WatchState::Degraded(format!(
                    "no file watcher ({}); changes are seen by the periodic check only",
                    self.no_watcher.as_deref().unwrap_or("unknown reason")
                )),
            });
        };
        let mut problems = Vec::new();
        let mut targets: Vec<PathBuf> = Vec::new();
        for want in watch_dirs(path) {
            match nearest_existing(&want) {
                Some(t) => {
                    if t != want {
                        problems.push(format!(
                            "{} is missing; watching {} until it is back",
                            want.display(),
                            t.display()
                        ));
                    }
                    if !targets.contains(&t) {
                        targets.push(t);
                    }
                }
                None => problems.push(format!(
                    "{} and every directory above it are missing",
                    want.display()
                )),
            }
        }
        let mut rearmed = false;
        let (keep, drop): (Vec<Armed>, Vec<Armed>) = self
            .armed
            .drain(..)
            .partition(|a| targets.contains(&a.dir) && dir_id(&a.dir).is_some_and(|id| id == a.id));
        for a in drop {
            // Often gone already (the kernel drops the watch of a deleted
            // directory): nothing to report.
            let _ = watcher.unwatch(&a.dir);
        }
        self.armed = keep;
        for t in targets {
            if self.armed.iter().any(|a| a.dir == t) {
                continue;
            }
            let Some(id) = dir_id(&t) else {
                return Err(rearmed);
            };
            match watcher.watch(&t, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    rearmed = true;
                    self.armed.push(Armed { dir: t, id });
                }
                // Vanished between the look and the watch.
                Err(_) if !t.is_dir() => return Err(rearmed),
                Err(e) => problems.push(format!("cannot watch {}: {e}", t.display())),
            }
        }
        Ok(Refreshed {
            rearmed,
            health: if problems.is_empty() {
                WatchState::Ok
            } else {
                WatchState::Degraded(problems.join("; "))
            },
        })
    }

    /// The directories watched now.
    #[cfg(test)]
    pub(super) fn dirs(&self) -> Vec<PathBuf> {
        self.armed.iter().map(|a| a.dir.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    #[test]
    fn only_finished_changes_count_as_events() {
        use notify::event::{DataChange, RenameMode};
        let ev = |kind| Event::new(kind);
        assert!(!is_change(&ev(EventKind::Access(AccessKind::Open(
            AccessMode::Any
        )))));
        assert!(!is_change(&ev(EventKind::Access(AccessKind::Close(
            AccessMode::Read
        )))));
        // A data write: the writer is not done.
        assert!(!is_change(&ev(EventKind::Modify(ModifyKind::Data(
            DataChange::Any
        )))));
        assert!(is_change(&ev(EventKind::Access(AccessKind::Close(
            AccessMode::Write
        )))));
        assert!(is_change(&ev(EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        )))));
        assert!(is_change(&ev(EventKind::Remove(
            notify::event::RemoveKind::Any
        ))));
        assert!(is_change(&ev(EventKind::Create(CreateKind::Folder))));
        assert!(is_change(&ev(EventKind::Other)));

        // A new regular file is being written; a new symlink or hard link
        // is complete.
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("new.toml");
        write(&file, "x");
        let created = |p: &Path| Event::new(EventKind::Create(CreateKind::File)).add_path(p.into());
        assert!(!is_change(&created(&file)));
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&file, &link).unwrap_or_else(|e| panic!("{e}"));
        assert!(is_change(&created(&link)));
        let hard = dir.path().join("hard.toml");
        std::fs::hard_link(&file, &hard).unwrap_or_else(|e| panic!("{e}"));
        assert!(is_change(&created(&hard)));
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

    #[test]
    fn a_deleted_directory_is_watched_through_its_parent_and_rearmed() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = root.path().join("maps");
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
        let map = dir.join("map.toml");
        write(&map, "x");
        let watcher =
            notify::recommended_watcher(|_: notify::Result<Event>| {}).map_err(|e| e.to_string());
        let mut w = Watches::new(watcher);
        let r = w.refresh(&map);
        assert_eq!(
            r,
            Refreshed {
                rearmed: true,
                health: WatchState::Ok
            }
        );
        assert_eq!(w.dirs(), vec![dir.clone()]);
        // Nothing changed: nothing to do.
        assert!(!w.refresh(&map).rearmed);

        std::fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let r = w.refresh(&map);
        assert!(r.rearmed);
        let WatchState::Degraded(why) = &r.health else {
            panic!("healthy without its directory");
        };
        assert!(why.contains("missing"), "{why}");
        assert_eq!(w.dirs(), vec![root.path().to_path_buf()]);

        // Back (a new inode at the same path): watched again, healthy.
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
        let r = w.refresh(&map);
        assert_eq!(
            r,
            Refreshed {
                rearmed: true,
                health: WatchState::Ok
            }
        );
        assert_eq!(w.dirs(), vec![dir.clone()]);

        // Replaced by another directory between two looks: re-armed.
        let other = root.path().join("maps.new");
        std::fs::create_dir(&other).unwrap_or_else(|e| panic!("{e}"));
        std::fs::remove_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
        std::fs::rename(&other, &dir).unwrap_or_else(|e| panic!("{e}"));
        assert!(w.refresh(&map).rearmed);
    }

    #[test]
    fn without_a_watcher_the_health_says_so() {
        let mut w = Watches::new(Err("too many open files".into()));
        let r = w.refresh(Path::new("/nonexistent/map.toml"));
        assert!(!r.rearmed);
        assert!(
            matches!(&r.health, WatchState::Degraded(why) if why.contains("too many open files")),
            "{r:?}"
        );
    }
}
