//! SOA serials: how each zone version's serial is chosen, and kept.
//!
//! # How the serial is chosen
//!
//! Secondaries transfer the zone when its SOA serial grows (RFC 1982
//! arithmetic) and ignore a primary whose serial is below the one they
//! have. So a serial must never go backwards, must change when the zone
//! does, and, when several cellns primaries serve the same map files, should
//! be the same on all of them for the same zone content (a secondary may
//! then transfer from any of them). One rule serves all three:
//!
//! 1. **A map may declare its serial** (`zone.serial`). A zone version that
//!    is the map alone (no override or health verdict changes an answer)
//!    gets exactly that serial, on every instance fed that file. Control
//!    planes that run several primaries should set it, ideally to the
//!    Unix time at which they generated the map (`date +%s`), so that it is
//!    comparable with the clock serials of rule 2.
//! 2. **Otherwise the clock decides**: the serial is the Unix time in
//!    seconds, and it is **never ahead of the clock**: a change in the same
//!    second as the serial in force waits for the next second (at most one
//!    clock serial per second; a reload or a condition change waits at most
//!    [`MAX_CLOCK_WAIT`]). Zone versions made by local conditions (operator
//!    overrides, health) always take the clock, since only this instance has
//!    them.
//! 3. **Never backwards**: a declared serial that is not above the serial in
//!    force (the map did not raise it, or a local version took the clock
//!    meanwhile) is replaced by the clock rule, with a warning: that
//!    instance then serves another serial than instances that serve the
//!    declared one, until a map declares a higher serial. When the previous
//!    serial is itself ahead of the clock (a declared serial in another
//!    scheme, such as `YYYYMMDDnn`, or a clock that was stepped back), the
//!    next serial is the previous one + 1.
//!
//! # Across restarts
//!
//! With `--state-dir`, every serial is written to `<state-dir>/serial`
//! (temporary file, fsync, rename, fsync of the directory) **before** the
//! zone version that carries it is published; a serial that cannot be saved
//! is never served ([`Serials::issue`] fails, and the reload or change is
//! refused: the version in force keeps serving). A restart continues above
//! the saved serial (the same declared serial again is kept: same map, same
//! serial).
//!
//! Without a state directory, clock serials still never go backwards: none
//! was ever ahead of the clock, and the first clock serial after a start is
//! above the second the process started in ([`Serials::not_before`]), so
//! it is above every serial an earlier process issued, however it ended. A
//! declared serial is served as declared after a restart; if a local
//! condition had taken the clock above it before the restart, only a state
//! directory remembers that, so run with `--state-dir` when you use
//! overrides or health checks together with `zone.serial`.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Name of the serial file inside `--state-dir`.
pub const SERIAL_FILE: &str = "serial";

/// The longest a clock serial waits for the clock to pass the serial in
/// force (rule 2 of the module docs). A previous serial further ahead than
/// this is followed by previous + 1 instead.
pub const MAX_CLOCK_WAIT: Duration = Duration::from_secs(2);

/// Largest size of the serial file that is read (it holds one number).
const SERIAL_FILE_MAX: u64 = 64;

/// The serial state file cannot be read or written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SerialError {
    /// The state file.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

/// What a new zone version's serial is based on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// The map's own `zone.serial` (the version is the map alone).
    Declared(u32),
    /// The clock (no declared serial, or local conditions in force).
    Clock,
}

/// RFC 1982: `a` is greater than `b`.
pub fn serial_gt(a: u32, b: u32) -> bool {
    a != b && (a.wrapping_sub(b) as i32) > 0
}

/// The clock, in whole seconds since the Unix epoch (saturating at
/// `u32::MAX`, which is 2106).
pub fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs().min(u64::from(u32::MAX)) as u32)
        .unwrap_or(1)
}

/// The clock the serials read (a fake one in tests).
#[derive(Debug, Clone)]
enum Clock {
    System,
    /// Seconds since the epoch; sleeping advances it.
    #[cfg_attr(not(test), allow(dead_code))]
    Fake(Arc<AtomicU64>),
}

impl Clock {
    fn now(&self) -> u32 {
        match self {
            Self::System => unix_now(),
            Self::Fake(t) => t.load(Ordering::Relaxed) as u32,
        }
    }

    /// Sleeps until the clock reads at least `second`.
    fn wait_until(&self, second: u32) {
        match self {
            Self::System => loop {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                if now.as_secs() >= u64::from(second) {
                    return;
                }
                let target = Duration::from_secs(u64::from(second));
                std::thread::sleep(target.saturating_sub(now).min(MAX_CLOCK_WAIT));
            },
            Self::Fake(t) => {
                t.fetch_max(u64::from(second), Ordering::Relaxed);
            }
        }
    }
}

/// What [`choose`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Choice {
    /// This serial, now.
    Now(u32),
    /// This serial, once the clock reads it.
    At(u32),
}

/// Rule 2: the clock serial after `bound` (the smallest acceptable serial
/// minus one), at `now`.
fn clock_choice(bound: Option<u32>, now: u32) -> Choice {
    let Some(b) = bound else {
        return Choice::Now(now);
    };
    let next = b.wrapping_add(1);
    if !serial_gt(next, now) {
        Choice::Now(now)
    } else if next.wrapping_sub(now) <= MAX_CLOCK_WAIT.as_secs() as u32 {
        Choice::At(next)
    } else {
        Choice::Now(next)
    }
}

/// Hands out the serials of one process's zone versions (see the module
/// docs), persisting each in the state directory when there is one.
#[derive(Debug)]
pub struct Serials {
    /// The serial in force (or, before the first, the persisted one).
    last: Option<u32>,
    /// What the state file holds.
    persisted: Option<u32>,
    /// Clock serials stay above this (the second the process started in).
    floor: Option<u32>,
    /// No serial issued yet by this process.
    first: bool,
    state_dir: Option<PathBuf>,
    clock: Clock,
}

impl Serials {
    /// Starts after the serial persisted in `state_dir` (a bad state file is
    /// logged and ignored).
    pub fn open(state_dir: Option<PathBuf>) -> Self {
        let persisted = match state_dir.as_deref().map(read_serial) {
            None | Some(Ok(None)) => None,
            Some(Ok(Some(p))) => Some(p),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "ignoring the persisted SOA serial");
                None
            }
        };
        Self {
            last: persisted,
            persisted,
            floor: None,
            first: true,
            state_dir,
            clock: Clock::System,
        }
    }

    /// Clock serials of this process stay above `second`: give the second
    /// the process started in, so that a restart never reissues a serial of
    /// the process before it (whose serials were never ahead of its clock).
    pub fn not_before(mut self, second: u32) -> Self {
        self.floor = Some(second);
        self
    }

    /// The serials of a process that started now (see [`Self::not_before`]).
    pub fn starting_now(self) -> Self {
        let now = unix_now();
        self.not_before(now)
    }

    #[cfg(test)]
    fn with_fake_clock(mut self, clock: Arc<AtomicU64>) -> Self {
        self.clock = Clock::Fake(clock);
        self
    }

    /// The serial in force (the last one issued), or the persisted one
    /// before the first.
    pub fn last(&self) -> Option<u32> {
        self.last
    }

    /// The serial the next version would get, and whether it must wait for
    /// the clock; also whether a declared serial had to be replaced.
    fn choose(&self, basis: Basis, now: u32) -> (Choice, bool) {
        if let Basis::Declared(s) = basis {
            match self.last {
                None => return (Choice::Now(s), false),
                Some(l) if serial_gt(s, l) => return (Choice::Now(s), false),
                // The same map after a restart: the same serial.
                Some(l) if s == l && self.first => return (Choice::Now(s), false),
                Some(_) => {}
            }
        }
        let bound = match (self.last, self.floor) {
            (Some(l), Some(f)) => Some(if serial_gt(l, f) { l } else { f }),
            (l, f) => l.or(f),
        };
        (
            clock_choice(bound, now),
            matches!(basis, Basis::Declared(_)),
        )
    }

    /// The serial of the next zone version, persisted before it is returned
    /// when there is a state directory. May wait for the clock (at most
    /// [`MAX_CLOCK_WAIT`]): call it where blocking is fine. On an error
    /// nothing changed: the version must not be published.
    pub fn issue(&mut self, basis: Basis) -> Result<u32, SerialError> {
        let (choice, replaced) = self.choose(basis, self.clock.now());
        let serial = match choice {
            Choice::Now(s) => s,
            Choice::At(s) => {
                self.clock.wait_until(s);
                s
            }
        };
        if replaced && let Basis::Declared(declared) = basis {
            tracing::warn!(
                declared,
                in_force = self.last,
                serial,
                "zone.serial is not above the serial in force: serving a clock serial instead \
                 (instances that serve the declared serial now differ from this one until a map \
                 declares a higher serial)"
            );
        }
        if let Some(dir) = &self.state_dir
            && self.persisted != Some(serial)
        {
            write_serial(dir, serial)?;
            self.persisted = Some(serial);
        }
        self.last = Some(serial);
        self.first = false;
        Ok(serial)
    }

    /// The state directory, if any.
    pub fn state_dir(&self) -> Option<&Path> {
        self.state_dir.as_deref()
    }
}

/// The serial persisted in `state_dir`, if any. Reads at most a few bytes
/// of a regular file, without blocking (a FIFO there is an error).
pub fn read_serial(state_dir: &Path) -> Result<Option<u32>, SerialError> {
    let path = state_dir.join(SERIAL_FILE);
    let err = |message: String| SerialError {
        path: path.display().to_string(),
        message,
    };
    let mut file = match open_nonblocking(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(format!("cannot read: {e}"))),
    };
    match file.metadata() {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(err("not a regular file".to_owned())),
        Err(e) => return Err(err(format!("cannot read: {e}"))),
    }
    let mut text = String::new();
    (&mut file)
        .take(SERIAL_FILE_MAX)
        .read_to_string(&mut text)
        .map_err(|e| err(format!("cannot read: {e}")))?;
    text.trim()
        .parse::<u32>()
        .map(Some)
        .map_err(|e| err(format!("not a serial ({e}): {:?}", text.trim())))
}

fn open_nonblocking(path: &Path) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        o.custom_flags(libc::O_NONBLOCK);
    }
    o.open(path)
}

/// Writes `serial` to `state_dir` durably: temporary file, fsync, rename,
/// fsync of the directory (creating the directory if needed). Any failure
/// is an error: a serial that may not survive a crash must not be served.
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
    std::fs::File::open(state_dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| err("sync the state directory", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    fn fake(at: u64) -> Arc<AtomicU64> {
        Arc::new(AtomicU64::new(at))
    }

    #[test]
    fn clock_serials_are_never_ahead_of_the_clock() {
        let t = fake(1_000);
        let mut s = Serials::open(None).with_fake_clock(t.clone());
        assert_eq!(s.issue(Basis::Clock).ok(), Some(1_000));
        // Thirty changes within one second: each waits for the next second
        // (the fake clock advances when waited on), never runs ahead.
        for i in 1..=30 {
            let serial = s.issue(Basis::Clock).expect("issued");
            assert_eq!(serial, 1_000 + i);
            assert!(u64::from(serial) <= t.load(Ordering::Relaxed));
        }
        // The clock moved on: the serial follows it.
        t.store(5_000, Ordering::Relaxed);
        assert_eq!(s.issue(Basis::Clock).ok(), Some(5_000));
    }

    #[test]
    fn a_serial_far_ahead_of_the_clock_is_followed_by_one_more() {
        let t = fake(1_000);
        let mut s = Serials::open(None).with_fake_clock(t.clone());
        assert_eq!(
            s.issue(Basis::Declared(2_026_010_101)).ok(),
            Some(2_026_010_101)
        );
        // No waiting for 30 years: previous + 1.
        assert_eq!(s.issue(Basis::Clock).ok(), Some(2_026_010_102));
        assert_eq!(t.load(Ordering::Relaxed), 1_000);
    }

    #[test]
    fn declared_serials_are_served_as_declared_unless_they_would_go_back() {
        let t = fake(10_000);
        let mut s = Serials::open(None).with_fake_clock(t.clone());
        assert_eq!(s.issue(Basis::Declared(9_000)).ok(), Some(9_000));
        assert_eq!(s.issue(Basis::Declared(9_500)).ok(), Some(9_500));
        // A local condition takes the clock.
        assert_eq!(s.issue(Basis::Clock).ok(), Some(10_000));
        // A map declaring less than that: the clock rule again (waits for
        // the next second rather than run ahead).
        assert_eq!(s.issue(Basis::Declared(9_600)).ok(), Some(10_001));
        // The same declared serial again at run time: a changed zone needs
        // a new serial.
        assert_eq!(s.issue(Basis::Declared(20_000)).ok(), Some(20_000));
        assert_eq!(s.issue(Basis::Declared(20_000)).ok(), Some(20_001));
    }

    #[test]
    fn a_restart_never_reissues_an_earlier_serial() {
        // Without a state directory: the previous process issued 1_000
        // (its clock), we start in the same second.
        let t = fake(1_000);
        let mut s = Serials::open(None)
            .not_before(1_000)
            .with_fake_clock(t.clone());
        assert_eq!(s.issue(Basis::Clock).ok(), Some(1_001));
        // A declared serial is the map's, whatever the floor.
        let mut s = Serials::open(None)
            .not_before(1_000)
            .with_fake_clock(fake(1_000));
        assert_eq!(s.issue(Basis::Declared(500)).ok(), Some(500));

        // With one: continue above the persisted serial; the same declared
        // serial is kept.
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        write_serial(dir.path(), 700).unwrap_or_else(|e| panic!("{e}"));
        let mut s = Serials::open(Some(dir.path().to_owned())).with_fake_clock(fake(600));
        assert_eq!(s.issue(Basis::Declared(700)).ok(), Some(700));
        let mut s = Serials::open(Some(dir.path().to_owned())).with_fake_clock(fake(600));
        assert_eq!(s.issue(Basis::Declared(650)).ok(), Some(701));
        assert_eq!(read_serial(dir.path()).ok(), Some(Some(701)));
        let mut s = Serials::open(Some(dir.path().to_owned())).with_fake_clock(fake(5_000));
        assert_eq!(s.issue(Basis::Clock).ok(), Some(5_000));
    }

    #[test]
    fn a_serial_that_cannot_be_saved_is_not_issued() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let state = dir.path().join("state");
        let mut s = Serials::open(Some(state.clone())).with_fake_clock(fake(1_000));
        assert_eq!(s.issue(Basis::Clock).ok(), Some(1_000));
        // The temporary file's name taken by a directory: every write fails
        // (root included).
        std::fs::create_dir(state.join(".serial.tmp")).unwrap_or_else(|e| panic!("{e}"));
        let e = s.issue(Basis::Declared(5_000)).expect_err("saved?");
        assert!(
            e.to_string().contains("cannot create a temporary file"),
            "{e}"
        );
        assert_eq!(s.last(), Some(1_000));
        assert_eq!(read_serial(&state).ok(), Some(Some(1_000)));
        std::fs::remove_dir(state.join(".serial.tmp")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.issue(Basis::Declared(5_000)).ok(), Some(5_000));
        assert_eq!(read_serial(&state).ok(), Some(Some(5_000)));
    }

    #[test]
    fn serial_arithmetic_wraps() {
        assert!(serial_gt(1, 0));
        assert!(serial_gt(0, u32::MAX));
        assert!(!serial_gt(5, 5));
        assert!(!serial_gt(0, 1));
    }

    #[test]
    fn bad_or_strange_state_files_are_errors_not_hangs() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let state = dir.path().join("nested/state");
        assert_eq!(read_serial(&state).ok(), Some(None));
        write_serial(&state, 42).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read_serial(&state).ok(), Some(Some(42)));
        write(&state.join(SERIAL_FILE), "garbage\n");
        assert!(read_serial(&state).is_err());
        // Ignored (with a warning): the clock decides.
        let mut s = Serials::open(Some(state.clone())).with_fake_clock(fake(900));
        assert_eq!(s.issue(Basis::Clock).ok(), Some(900));
        // A FIFO is refused at once instead of blocking.
        std::fs::remove_file(state.join(SERIAL_FILE)).unwrap_or_else(|e| panic!("{e}"));
        let fifo = std::ffi::CString::new(state.join(SERIAL_FILE).display().to_string())
            .unwrap_or_else(|e| panic!("{e}"));
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let e = read_serial(&state).expect_err("a FIFO");
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }
}
