//! The file descriptor budget: connections from outsiders (DNS over TCP,
//! HTTP) must never take the descriptors that map reloads, UDP sockets,
//! NOTIFY and the key directory need. At start, the soft `RLIMIT_NOFILE`
//! is raised as far as the connection limits need (up to the hard limit),
//! [`RESERVE`] descriptors plus one per UDP socket are kept for the
//! server's own use, and if the connection limits do not fit in the rest
//! they are lowered, in proportion, with a warning that says so.

use crate::dns::DnsConfig;
use crate::http::HttpLimits;

/// Descriptors kept for the server's own use besides the UDP sockets:
/// listeners, the map file and its watch, the state directory, key files,
/// TLS files, NOTIFY sockets, epoll and the runtime's own, with room to
/// spare.
pub const RESERVE: u64 = 256;

/// What the budget decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// The soft limit in force after raising it.
    pub nofile: u64,
    /// Whether the connection limits had to be lowered.
    pub lowered: bool,
}

/// Fits the connection limits of `dns` (per listen address) and `http`
/// into the descriptor limit, raising the soft limit first as far as the
/// hard one allows. Errors when not even one connection of each fits.
pub fn fit(dns: &mut DnsConfig, http: &mut HttpLimits) -> anyhow::Result<Budget> {
    let (soft, hard) = nofile();
    let listeners = dns.listen.len().max(1) as u64;
    let workers = match dns.udp_workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    } as u64;
    let reserve = RESERVE + listeners * workers;
    let tcp = dns.tcp.max_connections as u64 * listeners;
    let wanted = reserve + tcp + http.max_connections as u64;
    let nofile = if soft < wanted {
        raise_nofile(wanted.min(hard)).unwrap_or(soft)
    } else {
        soft
    };
    if wanted <= nofile {
        return Ok(Budget {
            nofile,
            lowered: false,
        });
    }
    let available = nofile.saturating_sub(reserve);
    if available < listeners + 1 {
        anyhow::bail!(
            "the file descriptor limit ({nofile}) leaves no room for connections: the server keeps \
             {reserve} for its own use; raise it (ulimit -n, LimitNOFILE=)"
        );
    }
    // In proportion, at least one each.
    let tcp_share = (available * tcp / (tcp + http.max_connections as u64)).max(listeners);
    let per_listener = (tcp_share / listeners).max(1);
    let http_share = available.saturating_sub(per_listener * listeners).max(1);
    tracing::warn!(
        nofile,
        reserve,
        tcp_max_connections = dns.tcp.max_connections,
        http_max_connections = http.max_connections,
        tcp_lowered_to = per_listener,
        http_lowered_to = http_share,
        "the connection limits do not fit in the file descriptor limit: lowered so that \
         connections can never starve reloads and UDP; raise the limit (ulimit -n, LimitNOFILE=) \
         to keep them"
    );
    dns.tcp.max_connections = per_listener as usize;
    dns.tcp.max_per_source = dns.tcp.max_per_source.min(dns.tcp.max_connections);
    http.max_connections = http_share as usize;
    http.max_per_source = http.max_per_source.min(http.max_connections);
    Ok(Budget {
        nofile,
        lowered: true,
    })
}

/// The soft and hard `RLIMIT_NOFILE` (unlimited as `u64::MAX`).
fn nofile() -> (u64, u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct, which `r` is.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return (1024, 1024);
    }
    // rlim_t is u64 on Linux.
    (r.rlim_cur, r.rlim_max)
}

/// Sets the soft `RLIMIT_NOFILE` to `to` (at most the hard limit); the
/// new soft limit.
fn raise_nofile(to: u64) -> Option<u64> {
    let (_, hard) = nofile();
    let r = libc::rlimit {
        rlim_cur: to.min(hard),
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads one rlimit struct, which `r` is.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
        return None;
    }
    Some(nofile().0)
}
