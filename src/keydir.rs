//! Key directories (token signing keys, DNSSEC keys): which files they
//! hold, as the rescan of each compares them.

use std::fs;
use std::io;
use std::path::Path;
use std::time::SystemTime;

/// What identifies the state of a key directory: the key files' names,
/// sizes and modification times. A change in any means a rescan.
pub(crate) type Fingerprint = Vec<(String, u64, Option<SystemTime>)>;

/// The files of `dir` whose names `is_key` accepts, sorted by name: regular
/// files after following symlinks, as Kubernetes Secret volumes use them.
pub(crate) fn key_files(dir: &Path, is_key: impl Fn(&str) -> bool) -> io::Result<Fingerprint> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !is_key(&name) {
            continue;
        }
        // A file removed between read_dir and stat is simply gone.
        let Ok(meta) = fs::metadata(entry.path()) else {
            continue;
        };
        if meta.is_file() {
            out.push((name, meta.len(), meta.modified().ok()));
        }
    }
    out.sort();
    Ok(out)
}
