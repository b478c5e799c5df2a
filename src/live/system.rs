//! Asking the operating system to favour queries: the reload thread runs at
//! a lower priority and gives freed memory back after a reload.

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
