//! The audit log: one JSON object a line in `<state-dir>/audit.jsonl` for
//! every override set, cleared or expired, every health transition of a
//! cell, every change of a cell's effective status, every fail-static entry
//! and exit, and every reload (accepted or rejected).
//!
//! Each line has `time` (RFC 3339 UTC), `actor` (the API caller's name,
//! `health`, `reload` or `timer`), `what`, and as they apply `cell`,
//! `before`, `after`, `reason`, plus details of the event (a reload's
//! version, serial and counts; an override's expiry).
//!
//! The file is opened with `O_APPEND` (each line is one `write`, so lines
//! of concurrent writers never interleave) and rotated at
//! [`ROTATE_BYTES`]: `audit.jsonl` becomes `audit.jsonl.1` (replacing the
//! previous one), so the log takes at most twice that on disk. A write that
//! fails is logged and counted (`cellns_audit_write_errors_total`) and the
//! event is dropped: the audit never stops serving. Without `--state-dir`
//! the lines go to the log (target `cellns::audit`, info) instead.
//!
//! Nothing on the query path writes here: publishers, the HTTP API and the
//! health part do, off the DNS threads.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

/// Name of the audit log inside `--state-dir`.
pub const AUDIT_FILE: &str = "audit.jsonl";
/// Size at which the audit log is rotated.
pub const ROTATE_BYTES: u64 = 10 * 1024 * 1024;

/// One audit event (the writer adds `time`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Event {
    /// Who: the API caller's name, `health`, `reload` or `timer`.
    pub actor: String,
    /// What happened (`override_set`, `override_cleared`,
    /// `override_expired`, `cell_unhealthy`, `cell_healthy`, `status`,
    /// `fail_static_entered`, `fail_static_exited`, `reload_accepted`,
    /// `reload_rejected`).
    pub what: &'static str,
    /// The cell concerned, if one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cell: Option<String>,
    /// The state before.
    pub before: Option<String>,
    /// The state after.
    pub after: Option<String>,
    /// Why, in words.
    pub reason: Option<String>,
    /// Details of the event.
    #[serde(flatten)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl Event {
    /// An event by `actor`.
    pub fn new(actor: impl Into<String>, what: &'static str) -> Self {
        Self {
            actor: actor.into(),
            what,
            ..Self::default()
        }
    }

    /// The same event about `cell`.
    pub fn cell(mut self, cell: impl Into<String>) -> Self {
        self.cell = Some(cell.into());
        self
    }

    /// The same event with `before` and `after` states.
    pub fn change(mut self, before: Option<String>, after: Option<String>) -> Self {
        self.before = before;
        self.after = after;
        self
    }

    /// The same event with a reason.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// The same event with one more detail.
    pub fn detail(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }
}

/// The audit log; see the module docs.
#[derive(Debug)]
pub struct Audit {
    /// `None`: no state directory, lines go to the log.
    file: Option<Mutex<Sink>>,
    rotate_at: u64,
}

#[derive(Debug)]
struct Sink {
    path: PathBuf,
    /// Closed after a failure; reopened by the next write.
    file: Option<File>,
    size: u64,
}

impl Default for Audit {
    fn default() -> Self {
        Self::log_only()
    }
}

impl Audit {
    /// An audit that writes to the log only (no `--state-dir`).
    pub fn log_only() -> Self {
        Self {
            file: None,
            rotate_at: ROTATE_BYTES,
        }
    }

    /// The audit log in `state_dir` (created if missing), or the log only
    /// without one. A file that cannot be opened now is logged and retried
    /// at the next event.
    pub fn open(state_dir: Option<&Path>) -> Self {
        Self::with_rotation(state_dir, ROTATE_BYTES)
    }

    /// As [`Audit::open`], rotating at `rotate_at` bytes (tests).
    pub fn with_rotation(state_dir: Option<&Path>, rotate_at: u64) -> Self {
        let Some(dir) = state_dir else {
            return Self::log_only();
        };
        let mut sink = Sink {
            path: dir.join(AUDIT_FILE),
            file: None,
            size: 0,
        };
        if let Err(e) = sink.reopen() {
            tracing::error!(file = %sink.path.display(), error = %e, "cannot open the audit log; retrying at the next event");
            crate::metrics::audit_write_failed();
        }
        Self {
            file: Some(Mutex::new(sink)),
            rotate_at,
        }
    }

    /// The audit file, when there is one.
    pub fn path(&self) -> Option<PathBuf> {
        let sink = self.file.as_ref()?;
        Some(sink.lock().unwrap_or_else(|e| e.into_inner()).path.clone())
    }

    /// Records `event`. Never fails: a write error is logged and counted.
    pub fn record(&self, event: Event) {
        let mut line = serde_json::Map::new();
        line.insert("time".into(), rfc3339_now().into());
        if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(&event) {
            line.extend(fields);
        }
        let mut text = serde_json::Value::Object(line).to_string();
        let Some(sink) = &self.file else {
            tracing::info!(target: "cellns::audit", event = %text, "audit");
            return;
        };
        text.push('\n');
        let mut sink = sink.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = sink.append(text.as_bytes(), self.rotate_at) {
            tracing::warn!(file = %sink.path.display(), error = %e, what = event.what, "cannot write the audit log; the event is lost");
            crate::metrics::audit_write_failed();
        }
    }
}

impl Sink {
    fn reopen(&mut self) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = file.metadata()?.len();
        self.file = Some(file);
        Ok(())
    }

    fn append(&mut self, line: &[u8], rotate_at: u64) -> std::io::Result<()> {
        if self.file.is_none() {
            self.reopen()?;
        }
        if self.size > 0 && self.size + line.len() as u64 > rotate_at {
            self.file = None;
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            std::fs::rename(&self.path, &old)?;
            self.reopen()?;
        }
        let Some(file) = &mut self.file else {
            return Err(std::io::Error::other("audit file not open"));
        };
        match file.write_all(line) {
            Ok(()) => {
                self.size += line.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Reopen next time: the file may have been replaced.
                self.file = None;
                Err(e)
            }
        }
    }
}

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339_now() -> String {
    rfc3339(SystemTime::now())
}

/// `t` as RFC 3339 UTC with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    let nanos = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    i128::try_from(nanos)
        .ok()
        .and_then(|n| time::OffsetDateTime::from_unix_timestamp_nanos(n - n % 1_000_000).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
            .collect()
    }

    #[test]
    fn events_are_json_lines_with_time_actor_and_what() {
        let dir = tempfile::tempdir().expect("tempdir");
        let audit = Audit::open(Some(dir.path()));
        audit.record(
            Event::new("ops", "override_set")
                .cell("use1-a")
                .change(None, Some("down".into()))
                .reason("maintenance")
                .detail("expires_at", "2030-01-01T00:00:00Z"),
        );
        audit.record(Event::new("reload", "reload_accepted").detail("version", "v2"));
        let got = lines(&dir.path().join(AUDIT_FILE));
        assert_eq!(got.len(), 2);
        assert_eq!(got[0]["actor"], "ops");
        assert_eq!(got[0]["what"], "override_set");
        assert_eq!(got[0]["cell"], "use1-a");
        assert_eq!(got[0]["before"], serde_json::Value::Null);
        assert_eq!(got[0]["after"], "down");
        assert_eq!(got[0]["reason"], "maintenance");
        assert_eq!(got[0]["expires_at"], "2030-01-01T00:00:00Z");
        assert!(got[0]["time"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert_eq!(got[1]["version"], "v2");
        // Reopened: appended, not truncated.
        drop(audit);
        Audit::open(Some(dir.path())).record(Event::new("timer", "override_expired"));
        assert_eq!(lines(&dir.path().join(AUDIT_FILE)).len(), 3);
    }

    #[test]
    fn the_log_rotates_at_its_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let audit = Audit::with_rotation(Some(dir.path()), 300);
        for i in 0..10 {
            audit.record(Event::new("health", "status").detail("i", i));
        }
        let now = std::fs::metadata(dir.path().join(AUDIT_FILE)).expect("file");
        let old = std::fs::metadata(dir.path().join("audit.jsonl.1")).expect("rotated");
        assert!(
            now.len() <= 300 && old.len() <= 300,
            "{} {}",
            now.len(),
            old.len()
        );
        // The newest event is in the current file, in one piece.
        let last = lines(&dir.path().join(AUDIT_FILE));
        assert_eq!(last.last().expect("a line")["i"], 9);
    }

    #[test]
    fn a_write_failure_never_panics() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The state "directory" is a file: nothing can be created in it.
        let blocked = dir.path().join("not-a-dir");
        std::fs::write(&blocked, "x").expect("write");
        let audit = Audit::open(Some(&blocked));
        audit.record(Event::new("ops", "override_set"));
        assert!(audit.path().is_some());
        Audit::log_only().record(Event::new("ops", "override_set"));
    }
}
