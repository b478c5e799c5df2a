//! Which directories to watch for a map file, and which events may mean it
//! changed.

use std::path::{Path, PathBuf};

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecursiveMode, Watcher as _};

/// Whether a watcher event may mean the map changed. Opening and reading
/// files (our own reads included) do not; everything else (create, write,
/// close after writing, rename, remove, attribute change) might.
pub(super) fn is_change(ev: &Event) -> bool {
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

/// The watcher and the directories it watches.
pub(super) struct Watches {
    pub(super) watcher: notify::RecommendedWatcher,
    pub(super) dirs: Vec<PathBuf>,
}

impl Watches {
    /// Follows symlink changes: watches the current target's directory and
    /// drops watches on directories no longer involved (a Kubernetes swap
    /// deletes the old timestamped directory).
    pub(super) fn refresh(&mut self, path: &Path) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
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
