//! SOA serials: every zone version gets one above the previous.
//!
//! A serial is the clock in seconds, or previous + 1 when the clock is not
//! ahead ([`next_serial`]). With `--state-dir`, the serial in force is also
//! written to `<state-dir>/serial` (atomically: temporary file, fsync,
//! rename) before the zone version that carries it is published, and a
//! restart starts from `max(clock, persisted + 1)`, so serials never go
//! backwards even across restarts with a clock that jumped back, or several
//! restarts within one second. Without it, the clock alone is used.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Name of the serial file inside `--state-dir`.
pub const SERIAL_FILE: &str = "serial";

/// The serial state file cannot be read or written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SerialError {
    /// The state file.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

/// The SOA serial after `previous`: the clock in seconds, but always above
/// `previous` (RFC 1982 arithmetic is not needed until 2106).
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

/// The serial persisted in `state_dir`, if any.
pub fn read_serial(state_dir: &Path) -> Result<Option<u32>, SerialError> {
    let path = state_dir.join(SERIAL_FILE);
    let err = |message: String| SerialError {
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
pub fn write_serial(state_dir: &Path, serial: u32) -> Result<(), SerialError> {
    let path = state_dir.join(SERIAL_FILE);
    let tmp = state_dir.join(format!(".{SERIAL_FILE}.tmp"));
    let err = |what: &str, e: std::io::Error| SerialError {
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

/// Hands out the serials of one process's zone versions, persisting each
/// in the state directory when there is one.
#[derive(Debug)]
pub struct Serials {
    last: Option<u32>,
    state_dir: Option<PathBuf>,
}

impl Serials {
    /// Starts after the serial persisted in `state_dir` (a bad state file is
    /// logged and ignored: the clock decides).
    pub fn open(state_dir: Option<PathBuf>) -> Self {
        let last = match state_dir.as_deref().map(read_serial) {
            None | Some(Ok(None)) => None,
            Some(Ok(Some(p))) => Some(p),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "ignoring the persisted SOA serial; using the clock");
                None
            }
        };
        Self { last, state_dir }
    }

    /// The serial of the next zone version, persisted before it is returned
    /// (a failure to persist is logged: serving matters more than the file).
    pub fn issue(&mut self) -> u32 {
        let serial = next_serial(self.last);
        self.last = Some(serial);
        if let Some(dir) = &self.state_dir
            && let Err(e) = write_serial(dir, serial)
        {
            tracing::warn!(error = %e, serial, "cannot persist the SOA serial");
        }
        serial
    }

    /// The state directory, if any.
    pub fn state_dir(&self) -> Option<&Path> {
        self.state_dir.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
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
        let mut s = Serials::open(Some(state.clone()));
        assert_eq!(s.issue(), far + 1);
        assert_eq!(read_serial(&state).ok(), Some(Some(far + 1)));
        write(&state.join(SERIAL_FILE), "garbage\n");
        assert!(read_serial(&state).is_err());
        let s = Serials::open(Some(state.clone())).issue();
        assert!(s >= next_serial(None).saturating_sub(5) && s < far);
    }
}
