//! Response rate limiting (RRL) for UDP, as Knot and NSD do it: a client
//! network (/24 for IPv4, /56 for IPv6) gets at most `--rrl-rate`
//! responses per second of each kind (positive, NODATA, NXDOMAIN, error);
//! beyond that its responses are dropped, except every `--rrl-slip`th,
//! which is sent truncated (TC, no records) so that a real resolver behind
//! a spoofed address retries over TCP, which is never limited. This makes
//! the server a poor amplifier for reflection attacks (the victim gets at
//! most the rate, and TC answers are small), while a client that only
//! asks often still gets answers.
//!
//! # How
//!
//! A fixed table of [`BUCKETS`] buckets, allocated once, indexed by a keyed
//! hash (SipHash with a random key per process, so that outsiders cannot
//! aim collisions) of (network, kind). Each bucket is one `AtomicU64`: a
//! 16-bit tag of the key and the GCRA "theoretical arrival time" in
//! microseconds (a token bucket in one word): a response is allowed when
//! the TAT is at most one burst ahead of now, and then moves it one
//! emission interval (1/rate s) on. One compare-and-swap per allowed
//! response, one load per limited one; no lock, no allocation. A bucket
//! whose tag differs belongs to another key (a collision, or a stale
//! entry): the newcomer takes it over, starting fresh — collisions fail
//! open, never limiting a client for another's traffic. The burst is one
//! second's worth of responses (`rate`).
//!
//! Which limited response slips is counted per bucket, so that a flood
//! from one network gets exactly every Nth limited response as TC.

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use super::wire::HEADER_LEN;

/// Longest domain name on the wire (RFC 1035 §2.3.4).
const MAX_NAME: usize = 255;

/// Buckets in the table (a power of two): 64 Ki × 16 bytes = 1 MiB. More
/// active networks than this share buckets, which lets some through
/// unlimited (collisions fail open) but never limits a client wrongly.
pub const BUCKETS: usize = 1 << 16;

/// Highest `--rrl-rate` (an emission interval of one microsecond).
pub const MAX_RATE: u32 = 1_000_000;

/// Highest `--rrl-slip`.
pub const MAX_SLIP: u32 = 100;

/// The kind of a response, as RRL tells them apart (each has its own
/// budget per network): positive answers, NODATA, NXDOMAIN and errors
/// (REFUSED, FORMERR, SERVFAIL, ...). A flood of one kind does not
/// starve another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// NOERROR with records in the answer section.
    Positive = 0,
    /// NOERROR without an answer.
    Nodata = 1,
    /// NXDOMAIN.
    NxDomain = 2,
    /// Any other rcode.
    Error = 3,
}

impl Kind {
    /// Every kind, in index order.
    pub const ALL: [Kind; 4] = [Kind::Positive, Kind::Nodata, Kind::NxDomain, Kind::Error];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Positive => "positive",
            Kind::Nodata => "nodata",
            Kind::NxDomain => "nxdomain",
            Kind::Error => "error",
        }
    }

    /// The kind of the response `msg` (at least a header long), from its
    /// rcode and answer count.
    #[inline]
    pub fn of_response(msg: &[u8]) -> Kind {
        let rcode = msg.get(3).map_or(0xF, |b| b & 0x0F);
        let an = match msg.get(6..8) {
            Some(b) => u16::from_be_bytes([b[0], b[1]]),
            None => 0,
        };
        match rcode {
            0 if an > 0 => Kind::Positive,
            0 => Kind::Nodata,
            3 => Kind::NxDomain,
            _ => Kind::Error,
        }
    }
}

/// What to do with a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it.
    Send,
    /// Over the rate: send nothing.
    Drop,
    /// Over the rate, and this one slips: send it truncated (TC).
    Slip,
}

/// One bucket: the tag and TAT word, and the count of limited responses
/// (for the slip).
#[derive(Default)]
struct Bucket {
    state: AtomicU64,
    limited: AtomicU32,
}

/// The rate limiter shared by the UDP workers.
pub struct Rrl {
    buckets: Box<[Bucket]>,
    hasher: RandomState,
    /// Emission interval: microseconds per response.
    interval: u64,
    /// How far ahead of now the TAT may be and still allow a response.
    tolerance: u64,
    slip: u32,
    start: Instant,
}

impl std::fmt::Debug for Rrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rrl")
            .field("interval_us", &self.interval)
            .field("slip", &self.slip)
            .finish_non_exhaustive()
    }
}

/// Low 48 bits: the TAT, microseconds since the limiter started (wraps
/// after 8.9 years; compared only near now). High 16: the key's tag.
const TAT_BITS: u32 = 48;
const TAT_MASK: u64 = (1 << TAT_BITS) - 1;

impl Rrl {
    /// A limiter of `rate` responses per second per network and kind
    /// (1..=[`MAX_RATE`]), every `slip`th limited response sent truncated
    /// (0: none, 1: all; at most [`MAX_SLIP`]). `None` for rate 0 (off).
    pub fn new(rate: u32, slip: u32) -> Option<Self> {
        if rate == 0 {
            return None;
        }
        let rate = u64::from(rate.min(MAX_RATE));
        let interval = 1_000_000 / rate;
        let buckets = (0..BUCKETS).map(|_| Bucket::default()).collect();
        Some(Self {
            buckets,
            hasher: RandomState::new(),
            interval,
            // A burst of `rate` responses: the TAT may run up to one
            // second (minus one interval) ahead.
            tolerance: interval * (rate - 1),
            slip: slip.min(MAX_SLIP),
            start: Instant::now(),
        })
    }

    /// Microseconds since the limiter started, plus one (the clock of
    /// [`Rrl::check`]; never 0).
    #[inline]
    pub fn now(&self) -> u64 {
        (self.start.elapsed().as_micros() as u64 + 1) & TAT_MASK
    }

    /// Whether a response of `kind` to `src` may be sent at `now` (from
    /// [`Rrl::now`]); counts it when it may.
    #[inline]
    pub fn check(&self, src: IpAddr, kind: Kind, now: u64) -> Verdict {
        let (network, v6) = network(src);
        let h = self.hasher.hash_one((network, v6, kind as u8));
        let bucket = &self.buckets[(h as usize) & (BUCKETS - 1)];
        // Never 0: a zeroed bucket is nobody's.
        let tag = ((h >> TAT_BITS) as u16 | 1) as u64;
        let mut cur = bucket.state.load(Ordering::Relaxed);
        loop {
            let tat = if cur >> TAT_BITS == tag {
                (cur & TAT_MASK).max(now)
            } else {
                now
            };
            if tat - now > self.tolerance {
                break;
            }
            let next = (tag << TAT_BITS) | ((tat + self.interval) & TAT_MASK);
            match bucket.state.compare_exchange_weak(
                cur,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Verdict::Send,
                Err(seen) => cur = seen,
            }
        }
        if self.slip == 0 {
            return Verdict::Drop;
        }
        let n = bucket
            .limited
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1);
        if n.is_multiple_of(self.slip) {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }
}

/// The network a source belongs to: its /24 (IPv4, also when mapped into
/// IPv6) or /56 (IPv6), and whether it is IPv6.
#[inline]
fn network(src: IpAddr) -> (u128, bool) {
    match src {
        IpAddr::V4(a) => (u128::from(u32::from(a) & 0xFFFF_FF00), false),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => (u128::from(u32::from(v4) & 0xFFFF_FF00), false),
            None => (u128::from(a) & !((1u128 << 72) - 1), true),
        },
    }
}

/// Rewrites the response `out[..len]` to `query` as its truncated form:
/// the header with TC set and no records, and the question when the query
/// has one that can be copied (plain labels); returns the new length. The
/// client learns nothing but "ask over TCP".
#[inline]
pub fn truncate(query: &[u8], out: &mut [u8], len: usize) -> usize {
    if len < HEADER_LEN || query.len() < HEADER_LEN {
        return len.min(HEADER_LEN);
    }
    let question = question_len(query).filter(|q| HEADER_LEN + q <= out.len());
    out[2] |= 0x02; // TC
    let qd: u16 = u16::from(question.is_some());
    out[4..6].copy_from_slice(&qd.to_be_bytes());
    out[6..12].fill(0);
    match question {
        Some(q) => {
            out[HEADER_LEN..HEADER_LEN + q].copy_from_slice(&query[HEADER_LEN..HEADER_LEN + q]);
            HEADER_LEN + q
        }
        None => HEADER_LEN,
    }
}

/// Length of the first question of `query` (name, type, class) when it
/// has one made of plain labels; `None` otherwise.
fn question_len(query: &[u8]) -> Option<usize> {
    if u16::from_be_bytes([query[4], query[5]]) == 0 {
        return None;
    }
    let mut i = HEADER_LEN;
    loop {
        let len = usize::from(*query.get(i)?);
        if len == 0 {
            i += 1;
            break;
        }
        if len & 0xC0 != 0 || i - HEADER_LEN + len + 1 > MAX_NAME {
            return None;
        }
        i += 1 + len;
    }
    let end = i + 4;
    (end <= query.len()).then_some(end - HEADER_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    /// Sends `n` responses at `now`; (sent, dropped, slipped).
    fn burst(r: &Rrl, src: &str, kind: Kind, now: u64, n: usize) -> (usize, usize, usize) {
        let mut v = (0, 0, 0);
        for _ in 0..n {
            match r.check(ip(src), kind, now) {
                Verdict::Send => v.0 += 1,
                Verdict::Drop => v.1 += 1,
                Verdict::Slip => v.2 += 1,
            }
        }
        v
    }

    #[test]
    fn off_at_rate_zero() {
        assert!(Rrl::new(0, 2).is_none());
    }

    #[test]
    fn a_burst_of_one_seconds_worth_then_the_rate() {
        let r = Rrl::new(10, 2).expect("on");
        let t0 = 5_000_000;
        // The burst: ten at once, then every second limited one slips.
        assert_eq!(burst(&r, "192.0.2.1", Kind::Positive, t0, 30), (10, 10, 10));
        // A tenth of a second later, one more.
        assert_eq!(burst(&r, "192.0.2.1", Kind::Positive, t0 + 100_000, 5).0, 1);
        // Over 10 s at 1 kHz, ten a second.
        let mut sent = 0;
        for ms in 0..10_000u64 {
            sent += burst(&r, "192.0.2.1", Kind::Positive, t0 + 200_000 + ms * 1000, 1).0;
        }
        assert!((99..=101).contains(&sent), "{sent} sent in 10 s");
    }

    #[test]
    fn networks_and_kinds_have_their_own_budgets() {
        let r = Rrl::new(5, 0).expect("on");
        let t = 1_000_000;
        assert_eq!(burst(&r, "192.0.2.1", Kind::Positive, t, 20), (5, 15, 0));
        // The same /24: shared.
        assert_eq!(burst(&r, "192.0.2.200", Kind::Positive, t, 5).0, 0);
        // Another kind, another /24, IPv6 /56s: their own.
        assert_eq!(burst(&r, "192.0.2.1", Kind::NxDomain, t, 20).0, 5);
        assert_eq!(burst(&r, "192.0.3.1", Kind::Positive, t, 20).0, 5);
        assert_eq!(burst(&r, "2001:db8:0:100::1", Kind::Positive, t, 20).0, 5);
        assert_eq!(burst(&r, "2001:db8:0:1ff::2", Kind::Positive, t, 5).0, 0);
        assert_eq!(burst(&r, "2001:db8:0:200::1", Kind::Positive, t, 20).0, 5);
        // An IPv4-mapped address is its IPv4 network.
        assert_eq!(burst(&r, "::ffff:192.0.2.9", Kind::Positive, t, 5).0, 0);
    }

    #[test]
    fn slip_every_nth() {
        for slip in [1u32, 2, 3, 7] {
            let r = Rrl::new(1, slip).expect("on");
            let (sent, dropped, slipped) = burst(&r, "198.51.100.7", Kind::Error, 10, 1 + 700);
            assert_eq!(sent, 1);
            assert_eq!(slipped, 700 / slip as usize, "slip {slip}");
            assert_eq!(dropped + slipped, 700);
        }
    }

    #[test]
    fn kinds_from_response_headers() {
        let mut h = [0u8; 12];
        h[2] = 0x84;
        assert_eq!(Kind::of_response(&h), Kind::Nodata);
        h[7] = 2;
        assert_eq!(Kind::of_response(&h), Kind::Positive);
        h[3] = 3;
        assert_eq!(Kind::of_response(&h), Kind::NxDomain);
        for rcode in [1, 2, 4, 5, 9] {
            h[3] = rcode;
            assert_eq!(Kind::of_response(&h), Kind::Error);
        }
    }

    #[test]
    fn truncated_keeps_header_and_question() {
        // ID 0x1234, RD; one question "a.b." A IN; one OPT.
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
        q.extend([1, b'a', 1, b'b', 0, 0, 1, 0, 1]);
        q.extend([0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]);
        let mut out = [0u8; 512];
        // A positive answer with two records and an OPT (bytes past the
        // question are whatever).
        out[..12].copy_from_slice(&[0x12, 0x34, 0x85, 0x00, 0, 1, 0, 2, 0, 0, 0, 1]);
        out[12..21].copy_from_slice(&q[12..21]);
        let n = truncate(&q, &mut out, 80);
        assert_eq!(n, 21);
        assert_eq!(
            &out[..12],
            &[0x12, 0x34, 0x87, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(&out[12..21], &q[12..21]);
        // A question with a compression pointer: the header alone.
        let mut p = q[..12].to_vec();
        p.extend([0xC0, 0x0C, 0, 1, 0, 1]);
        assert_eq!(truncate(&p, &mut out, 40), 12);
        assert_eq!(&out[4..6], &[0, 0]);
    }
}
