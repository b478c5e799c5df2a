//! Asking the operating system to favour queries: the reload thread runs
//! its reload attempts at idle priority (with a guard against starving, see
//! [`IdleSection`]), or at a lower nice value where that is not allowed,
//! and gives freed memory back after a reload.

/// Hands freed heap memory back to the OS. glibc keeps freed memory of a
/// thread's arena for reuse (and, after a large free, serves later large
/// allocations from the heap instead of fresh mappings), so without this
/// the resident size stays at the reload peak forever. Called on the reload
/// thread after a snapshot is released; takes milliseconds.
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Lowers the calling thread's scheduling priority to `nice`, so that
/// compiling a big map yields the CPU to query threads. Best effort.
pub(crate) fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid takes no arguments; setpriority takes plain
        // integers and only affects the calling thread (Linux: per-thread
        // nice values). Neither touches memory we own.
        let rc = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, nice)
        };
        if rc != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "cannot lower the reload thread's priority"
            );
        }
    }
}

/// The calling thread's kernel id (Linux), for scheduling calls that must
/// name one thread of the process.
#[cfg(target_os = "linux")]
pub(crate) fn current_tid() -> libc::pid_t {
    // SAFETY: gettid takes no arguments and touches no memory.
    unsafe { libc::syscall(libc::SYS_gettid) as libc::pid_t }
}

/// Puts thread `tid` in `SCHED_IDLE`: it runs only on CPU time no other
/// thread wants, and a query thread that wakes up takes the CPU from it at
/// once (a nice value only lowers its share: with the kernel's EEVDF
/// scheduler a woken query thread can wait for the rest of the reload
/// thread's time slice, milliseconds). Returns false when the OS refused.
#[cfg(target_os = "linux")]
pub(crate) fn set_idle(tid: libc::pid_t) -> bool {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler reads `param`, a valid struct on the stack.
    let rc = unsafe { libc::sched_setscheduler(tid, libc::SCHED_IDLE, &param) };
    if rc != 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "cannot put the reload thread in SCHED_IDLE"
        );
    }
    rc == 0
}

/// Whether this process may move a thread at `nice` out of `SCHED_IDLE`
/// again. Linux treats that as raising the priority: it needs
/// `CAP_SYS_NICE`, or an `RLIMIT_NICE` of at least `20 - nice` (systemd:
/// `LimitNICE=`); without either, a thread put in `SCHED_IDLE` could never
/// be given a normal priority, however long it starves, so the reload
/// thread does not use it then.
#[cfg(target_os = "linux")]
pub(crate) fn may_leave_idle(nice: i32) -> bool {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes to `lim`, a valid struct on the stack.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NICE, &mut lim) };
    let needed = libc::rlim_t::try_from(20 - nice.clamp(-20, 19)).unwrap_or(libc::rlim_t::MAX);
    if rc == 0 && (lim.rlim_cur == libc::RLIM_INFINITY || lim.rlim_cur >= needed) {
        return true;
    }
    has_cap_sys_nice()
}

/// `CAP_SYS_NICE` in the calling thread's effective capabilities.
#[cfg(target_os = "linux")]
fn has_cap_sys_nice() -> bool {
    const CAP_SYS_NICE: u32 = 23;
    std::fs::read_to_string("/proc/thread-self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_NICE) != 0)
}

/// Puts thread `tid` back in the normal policy at `nice`; false (logged)
/// when the OS refused.
#[cfg(target_os = "linux")]
fn set_normal(tid: libc::pid_t, nice: i32) -> bool {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: as in `set_idle`.
    let policy = unsafe { libc::sched_setscheduler(tid, libc::SCHED_OTHER, &param) };
    // SAFETY: setpriority takes plain integers and only affects thread
    // `tid` (Linux: per-thread nice values).
    let prio = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
    if policy != 0 || prio != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "cannot give the starved reload thread a normal priority"
        );
    }
    policy == 0
}

/// The share of a guard window below which a thread at idle priority is
/// starving, as a divisor (20: 5 %, 100 ms of CPU in 2 s).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) const STARVED_SHARE: u32 = 20;

/// Whether a thread that ran for `got` in a window of `window` starved.
#[cfg(target_os = "linux")]
fn starved(got: std::time::Duration, window: std::time::Duration) -> bool {
    got < window / STARVED_SHARE
}

/// Watches windows of `after` until `ended` says the section is over
/// (`None`) or a window in which the thread, whose CPU time so far `cpu`
/// reads, starved: then how long it ran in that window. Without the CPU
/// time (no schedstat) any window counts as starved: the guard of old.
#[cfg(target_os = "linux")]
fn wait_for_starvation(
    ended: &std::sync::mpsc::Receiver<()>,
    after: std::time::Duration,
    mut cpu: impl FnMut() -> Option<std::time::Duration>,
) -> Option<std::time::Duration> {
    use std::sync::mpsc::RecvTimeoutError;
    let mut ran = cpu();
    while let Err(RecvTimeoutError::Timeout) = ended.recv_timeout(after) {
        let now = cpu();
        let got = match (ran, now) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => std::time::Duration::ZERO,
        };
        if starved(got, after) {
            return Some(got);
        }
        ran = now;
    }
    None
}

/// CPU time of thread `tid` of this process so far (Linux
/// `/proc/self/task/TID/schedstat`, first field, nanoseconds); `None` when
/// it cannot be read.
#[cfg(target_os = "linux")]
fn thread_cpu_time(tid: libc::pid_t) -> Option<std::time::Duration> {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    let ns = text.split_whitespace().next()?.parse::<u64>().ok()?;
    Some(std::time::Duration::from_nanos(ns))
}

/// Runs thread `tid` at idle priority (`SCHED_IDLE`) while it lives, so
/// that any query thread that wakes up takes the CPU from it at once, with
/// a guard against starving: if in some window of `after` the thread ran
/// for less than 1/[`STARVED_SHARE`] of it (5 %), it runs at `nice` in the normal
/// policy (logged) for the rest of it. Only that is starving: a reload that
/// gets what the queries leave of a core (half of it, say) makes progress
/// and stays idle, however long it takes; raising it then would make the
/// query threads share the core with it for nothing. Dropping it puts the
/// thread back in the normal policy at `nice`. Only the reload attempt
/// itself runs idle, never the waiting for events around it, so a thread
/// starved between attempts (by other processes, on a busy machine) cannot
/// delay the start of the next one. Use only where [`may_leave_idle`].
#[cfg(target_os = "linux")]
pub(crate) struct IdleSection {
    tid: libc::pid_t,
    nice: i32,
    tx: Option<std::sync::mpsc::Sender<()>>,
    watcher: Option<std::thread::JoinHandle<()>>,
}

#[cfg(target_os = "linux")]
impl IdleSection {
    /// Puts `tid` at idle priority and arms the guard; `None` (the thread
    /// left as it was) when no guard thread can be started or the OS
    /// refuses `SCHED_IDLE`.
    pub(crate) fn enter(tid: libc::pid_t, after: std::time::Duration, nice: i32) -> Option<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let watcher = std::thread::Builder::new()
            .name("cellns-reload-guard".into())
            .spawn(move || {
                if let Some(got) = wait_for_starvation(&rx, after, || thread_cpu_time(tid)) {
                    tracing::info!(
                        after_ms = after.as_millis() as u64,
                        ran_ms = got.as_millis() as u64,
                        nice,
                        "the map reload is short of CPU: running it at a normal (low) priority \
                         until it ends"
                    );
                    set_normal(tid, nice);
                }
            })
            .ok()?;
        let mut section = Self {
            tid,
            nice,
            tx: Some(tx),
            watcher: Some(watcher),
        };
        if !set_idle(tid) {
            section.stop_watcher();
            return None;
        }
        Some(section)
    }

    fn stop_watcher(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.watcher.take() {
            let _ = t.join();
        }
    }
}

#[cfg(target_os = "linux")]
impl Drop for IdleSection {
    fn drop(&mut self) {
        self.stop_watcher();
        set_normal(self.tid, self.nice);
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    fn policy(tid: libc::pid_t) -> i32 {
        // SAFETY: takes a plain integer.
        unsafe { libc::sched_getscheduler(tid) }
    }

    /// A thread at nice 10 in `SCHED_IDLE`, parked until told to end.
    /// Returns its id and the sender that ends it.
    fn idle_thread() -> (libc::pid_t, mpsc::Sender<()>, std::thread::JoinHandle<()>) {
        let (tid_tx, tid_rx) = mpsc::channel();
        let (end_tx, end_rx) = mpsc::channel::<()>();
        let handle = std::thread::spawn(move || {
            lower_priority(10);
            let tid = current_tid();
            assert!(set_idle(tid), "SCHED_IDLE refused");
            tid_tx.send(tid).expect("send tid");
            let _ = end_rx.recv();
        });
        let tid = tid_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the idle thread never started");
        (tid, end_tx, handle)
    }

    #[test]
    fn a_thread_that_gets_a_twentieth_of_the_window_is_not_starving() {
        let w = Duration::from_secs(2);
        assert!(starved(Duration::ZERO, w));
        assert!(starved(Duration::from_millis(99), w));
        assert!(!starved(Duration::from_millis(100), w));
        // What the queries leave of a core at half load: progress.
        assert!(!starved(Duration::from_millis(1000), w));
    }

    /// A fake CPU clock that advances by `step` at each reading.
    fn clock(step: Duration) -> impl FnMut() -> Option<Duration> {
        let mut t = Duration::ZERO;
        move || {
            t += step;
            Some(t)
        }
    }

    #[test]
    fn a_reload_that_gets_half_the_core_is_never_raised() {
        let (tx, rx) = mpsc::channel::<()>();
        let after = Duration::from_millis(5);
        // Half of each window, for 20 windows, then the section ends.
        let ender = std::thread::spawn(move || {
            std::thread::sleep(after * 20);
            drop(tx);
        });
        assert_eq!(wait_for_starvation(&rx, after, clock(after / 2)), None);
        ender.join().expect("ender");
    }

    #[test]
    fn a_reload_that_gets_nothing_or_cannot_be_measured_is_raised_after_one_window() {
        let (_tx, rx) = mpsc::channel::<()>();
        let after = Duration::from_millis(5);
        assert_eq!(
            wait_for_starvation(&rx, after, clock(Duration::ZERO)),
            Some(Duration::ZERO)
        );
        assert_eq!(
            wait_for_starvation(&rx, after, clock(after / 40)),
            Some(after / 40)
        );
        assert_eq!(
            wait_for_starvation(&rx, after, || None),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn the_cpu_time_of_a_busy_thread_grows() {
        let tid = current_tid();
        let a = thread_cpu_time(tid).expect("schedstat of this thread");
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let b = thread_cpu_time(tid).expect("schedstat of this thread");
        assert!(b > a, "{a:?} -> {b:?}");
    }

    #[test]
    fn the_probe_agrees_with_the_kernel_on_leaving_idle() {
        let (tid, end, handle) = idle_thread();
        assert_eq!(policy(tid), libc::SCHED_IDLE);
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: reads `param`, a valid struct on the stack.
        let left = unsafe { libc::sched_setscheduler(tid, libc::SCHED_OTHER, &param) } == 0;
        assert_eq!(left, may_leave_idle(10), "may_leave_idle is wrong here");
        drop(end);
        handle.join().expect("idle thread");
    }

    fn nice_of(tid: libc::pid_t) -> i32 {
        // SAFETY: getpriority takes plain integers.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t) }
    }

    #[test]
    fn an_idle_section_is_idle_until_dropped_or_starved_then_normal_at_the_nice_value() {
        if !may_leave_idle(10) {
            // Without CAP_SYS_NICE or RLIMIT_NICE >= 10 the reload thread
            // never goes idle (the test above checks the probe), so there
            // is no section to test.
            eprintln!("no CAP_SYS_NICE or RLIMIT_NICE >= 10: idle sections are unused here");
            return;
        }
        // A thread at nice 10 in the normal policy, as the reload thread.
        let (tid_tx, tid_rx) = mpsc::channel();
        let (end_tx, end_rx) = mpsc::channel::<()>();
        let handle = std::thread::spawn(move || {
            lower_priority(10);
            tid_tx.send(current_tid()).expect("send tid");
            let _ = end_rx.recv();
        });
        let tid = tid_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the thread never started");
        assert_eq!((policy(tid), nice_of(tid)), (libc::SCHED_OTHER, 10));

        // Dropped in time: idle while it lives, then normal at nice 10.
        let section = IdleSection::enter(tid, Duration::from_secs(3600), 10).expect("section");
        assert_eq!(policy(tid), libc::SCHED_IDLE);
        drop(section);
        assert_eq!((policy(tid), nice_of(tid)), (libc::SCHED_OTHER, 10));

        // Starved: raised while it still lives.
        let section = IdleSection::enter(tid, Duration::from_millis(50), 10).expect("section");
        let deadline = Instant::now() + Duration::from_secs(30);
        while policy(tid) != libc::SCHED_OTHER {
            assert!(Instant::now() < deadline, "the guard never raised it");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(nice_of(tid), 10, "raised to the wrong nice value");
        drop(section);
        assert_eq!((policy(tid), nice_of(tid)), (libc::SCHED_OTHER, 10));

        drop(end_tx);
        handle.join().expect("thread");
    }
}
