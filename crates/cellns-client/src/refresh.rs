//! The refresh rule (docs/sdk.md, "Refresh and backoff rules"):
//! [`Refresher`], a state machine that says when to fetch a token, when to
//! wait and which token to send, spacing fetches with a [`Backoff`] whose
//! jitter comes from a seedable source specified for every language.

use std::time::{Duration, Instant};

use rand::RngCore as _;

use crate::claims::{ClaimsError, MAX_TOKEN_LIFETIME_SECS, TokenClaims, read_claims};

/// Bounded exponential backoff with jitter between token fetches that did
/// not lead to being served ("equal jitter": never less than half the
/// step, so clients back off for real, and spread out so they do not return
/// together). In whole milliseconds, so every SDK computes the same delays:
/// after `n >= 1` such fetches, `d = min(max_ms, initial_ms · 2^(n-1))`
/// (saturating), `half = d / 2` (integer division), and the delay is
/// `half + floor(half · jitter)` for a jitter in `[0, 1)`: a time in
/// `[d/2, d]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The step after the first unproductive fetch, milliseconds.
    pub initial_ms: u64,
    /// The largest step, milliseconds.
    pub max_ms: u64,
}

impl Default for Backoff {
    /// 100 ms doubling to 5 s.
    fn default() -> Self {
        Self {
            initial_ms: 100,
            max_ms: 5_000,
        }
    }
}

impl Backoff {
    /// The delay after `attempt` unproductive fetches (0: none), with
    /// `jitter` in `[0, 1]` picking the point in `[d/2, d]` (values outside
    /// are clamped, NaN counts as 0).
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        Duration::from_millis(self.delay_ms(attempt, jitter))
    }

    /// [`Backoff::delay`] in milliseconds: the formula of the type's docs
    /// (what the shared SDK vectors, sdk/vectors/backoff.json, pin).
    pub fn delay_ms(&self, attempt: u32, jitter: f64) -> u64 {
        let Some(doublings) = attempt.checked_sub(1) else {
            return 0;
        };
        let factor = 1u64.checked_shl(doublings).unwrap_or(u64::MAX);
        let step = self.initial_ms.saturating_mul(factor).min(self.max_ms);
        let half = step / 2;
        let jitter = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(0.0, 1.0)
        };
        // `as` saturates; the min guards against `half as f64` rounding up
        // above `half` for steps beyond 2^53 ms.
        let extra = ((half as f64) * jitter).floor() as u64;
        half.saturating_add(extra.min(half))
    }
}

/// The seeded random source of the backoff jitter: SplitMix64 (Steele,
/// Lea and Flood, 2014), chosen because it is a few lines in any language
/// and its outputs are published, so SDKs can run shared test vectors
/// (docs/sdk.md, "Seeded jitter"). Not for anything that needs
/// unpredictable numbers: a [`Refresher`] only uses it to spread clients.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// The generator whose state is `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next output (all arithmetic wrapping modulo 2^64).
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A jitter in `[0, 1)`: the top 53 bits of the next output, scaled
    /// by 2^-53.
    pub fn next_jitter(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// `at + d`, or the latest instant this platform represents short of it
/// (a backoff configured in centuries must not panic).
fn saturating_add(at: Instant, d: Duration) -> Instant {
    if let Some(t) = at.checked_add(d) {
        return t;
    }
    let (mut t, mut step) = (at, d);
    while !step.is_zero() {
        match t.checked_add(step) {
            Some(next) => t = next,
            None => step /= 2,
        }
    }
    t
}

/// When to refresh a token before it expires: `lifetime − lead` after it
/// was received, `lead = min(max(lifetime/5, 1 s), 60 s, lifetime/2)`.
/// A 15-minute token is refreshed a minute early, a 10-second one two
/// seconds early.
pub fn refresh_lead(lifetime: Duration) -> Duration {
    (lifetime / 5)
        .max(Duration::from_secs(1))
        .min(Duration::from_secs(60))
        .min(lifetime / 2)
}

/// The token a [`Refresher`] holds.
#[derive(Debug, Clone)]
pub struct CurrentToken {
    /// The token, to send to the cell (`Authorization: Bearer ...`).
    pub token: String,
    /// Its routing claims: connect to `claims.cell`.
    pub claims: TokenClaims,
    /// When it was received.
    pub received: Instant,
    /// When to fetch the next one.
    pub refresh_at: Instant,
    /// When it expires (by the issuer's `exp − iat`, measured from receipt).
    pub expires_at: Instant,
    /// The fetch attempt it came from.
    attempt: u64,
}

/// What the client should do next ([`Refresher::next`]).
#[derive(Debug)]
pub enum Action<'a> {
    /// Get a new token from the auth service now, then report the outcome
    /// with [`Refresher::fetched`] or [`Refresher::fetch_failed`]. The
    /// attempt is counted when this is returned.
    Fetch,
    /// No usable token, and the backoff forbids fetching before this
    /// instant: wait until then.
    Sleep(Instant),
    /// Send requests to the token's cell with this token; report the
    /// outcome with [`Refresher::served`] or [`Refresher::refused`].
    Send(&'a CurrentToken),
}

/// The refresh rule as a state machine. The client asks [`Refresher::next`]
/// what to do and reports what happened:
///
/// - no token, a refused token, or the refresh time reached → [`Action::Fetch`];
/// - a cell refused the token (wrong cell: the tenant moved or the client
///   went to the wrong cell; token rejected; cell unreachable) → report
///   [`Refresher::refused`]: the token is dropped and a new one fetched;
/// - fetches that do not lead to being served are spaced by [`Backoff`]:
///   one fetch after a success is immediate, a loop of refusals slows down
///   to one fetch every `max` at most;
/// - a token is refreshed before it expires ([`refresh_lead`]); while a
///   refresh fails, the old token is used until it expires.
///
/// Token lifetimes are measured from receipt with the issuer's `exp − iat`,
/// never against the local wall clock, so a device with a wrong clock
/// neither refreshes in a loop nor holds a token too long. Time is passed
/// in (`now`), so tests drive it with a fake clock.
#[derive(Debug)]
pub struct Refresher {
    backoff: Backoff,
    /// The jitter source.
    rng: SplitMix64,
    current: Option<CurrentToken>,
    /// Fetch attempts since a freshly fetched token was last served.
    unproductive: u32,
    /// Number of the latest fetch attempt.
    attempt: u64,
    /// No fetch before this instant.
    gate: Option<Instant>,
}

impl Refresher {
    /// A refresher with this backoff, its jitter source seeded from the
    /// OS's randomness (so clients do not return together).
    pub fn new(backoff: Backoff) -> Self {
        Self::with_seed(backoff, rand::rngs::OsRng.next_u64())
    }

    /// A refresher whose jitter comes from SplitMix64 seeded with `seed`:
    /// the k-th [`Action::Fetch`] draws the k-th jitter value (docs/sdk.md,
    /// "Seeded jitter (test vectors)"), so tests, and SDKs in other
    /// languages, reproduce the exact delays.
    pub fn with_seed(backoff: Backoff, seed: u64) -> Self {
        Self {
            backoff,
            rng: SplitMix64::new(seed),
            current: None,
            unproductive: 0,
            attempt: 0,
            gate: None,
        }
    }

    /// What to do at `now`.
    pub fn next(&mut self, now: Instant) -> Action<'_> {
        let usable = self.current.as_ref().is_some_and(|c| now < c.expires_at);
        let due = self.current.as_ref().is_none_or(|c| now >= c.refresh_at);
        if due {
            match self.gate {
                Some(gate) if now < gate => {
                    if !usable {
                        return Action::Sleep(gate);
                    }
                }
                _ => {
                    self.unproductive = self.unproductive.saturating_add(1);
                    self.attempt += 1;
                    let jitter = self.rng.next_jitter();
                    let delay = self.backoff.delay(self.unproductive, jitter);
                    self.gate = Some(saturating_add(now, delay));
                    return Action::Fetch;
                }
            }
        }
        match &self.current {
            Some(c) => Action::Send(c),
            // Unreachable by the logic above (no token means due and not
            // usable); sleeping until the gate is the safe answer.
            None => Action::Sleep(self.gate.unwrap_or(now)),
        }
    }

    /// The auth service returned `token` at `now`: it replaces the current
    /// one. An unreadable token (including one whose lifetime is longer
    /// than [`MAX_TOKEN_LIFETIME_SECS`]) is an error, changes nothing, and
    /// counts as a failed fetch.
    pub fn fetched(&mut self, now: Instant, token: String) -> Result<&CurrentToken, ClaimsError> {
        let claims = read_claims(&token)?;
        let lifetime = claims.lifetime();
        // read_claims bounds the lifetime; the clock may still be unable to
        // represent `now + lifetime` (an Instant near its end): refuse,
        // never panic.
        let expires_at = now
            .checked_add(lifetime)
            .ok_or(ClaimsError::LifetimeTooLong {
                lifetime_secs: lifetime.as_secs(),
                max_secs: MAX_TOKEN_LIFETIME_SECS,
            })?;
        // The lead is at most half the lifetime, so this is after `now`.
        let refresh_at = expires_at
            .checked_sub(refresh_lead(lifetime))
            .unwrap_or(now);
        Ok(self.current.insert(CurrentToken {
            token,
            received: now,
            refresh_at,
            expires_at,
            claims,
            attempt: self.attempt,
        }))
    }

    /// The fetch failed (auth service down, refused, ...). The current
    /// token, if still valid, stays in use; the next fetch waits for the
    /// backoff.
    pub fn fetch_failed(&mut self, _now: Instant) {}

    /// The cell served a request made with the current token. When that
    /// token is the latest fetched, the backoff starts over.
    pub fn served(&mut self, _now: Instant) {
        if self
            .current
            .as_ref()
            .is_some_and(|c| c.attempt == self.attempt)
        {
            self.unproductive = 0;
            self.gate = None;
        }
    }

    /// The cell refused the current token: the wrong-cell signal, a token
    /// the cell rejected (401: expired, bad signature), or the cell could
    /// not be reached. The token is dropped; the next action fetches a new
    /// one (after the backoff, if the last fetch was not served either).
    pub fn refused(&mut self, _now: Instant) {
        self.current = None;
    }

    /// The token in use, if any.
    pub fn current(&self) -> Option<&CurrentToken> {
        self.current.as_ref()
    }

    /// Fetch attempts since a freshly fetched token was last served.
    pub fn unproductive_fetches(&self) -> u32 {
        self.unproductive
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::MAX_NUMERIC_DATE;
    use crate::claims::tests::{token, token_with};

    #[test]
    fn backoff_doubles_within_jitter_bounds_up_to_the_cap() {
        let b = Backoff::default();
        assert_eq!(b.delay(0, 0.5), Duration::ZERO);
        let mut step = Duration::from_millis(100);
        for n in 1..40 {
            let lo = b.delay(n, 0.0);
            let hi = b.delay(n, 1.0);
            assert_eq!(hi, step.min(Duration::from_secs(5)), "attempt {n}");
            assert_eq!(lo, hi / 2, "attempt {n}");
            let mid = b.delay(n, 0.5);
            assert!(lo <= mid && mid <= hi);
            step = step.saturating_mul(2);
        }
        assert_eq!(b.delay(u32::MAX, 1.0), Duration::from_secs(5));
        // Out-of-range jitter is clamped, not trusted.
        assert_eq!(b.delay(1, 7.0), Duration::from_millis(100));
        assert_eq!(b.delay(1, -1.0), Duration::from_millis(50));
    }

    #[test]
    fn splitmix64_gives_the_published_outputs() {
        // Seed 0 is the reference sequence of SplitMix64.
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(r.next_u64(), 0x06C4_5D18_8009_454F);
        let mut r = SplitMix64::new(42);
        assert_eq!(r.next_u64(), 0xBDD7_3226_2FEB_6E95);
        // Jitter: top 53 bits scaled into [0, 1).
        let mut r = SplitMix64::new(0);
        assert_eq!(
            r.next_jitter(),
            (0xE220_A839_7B1D_CDAFu64 >> 11) as f64 / 2f64.powi(53)
        );
        let mut r = SplitMix64::new(u64::MAX);
        for _ in 0..10_000 {
            let j = r.next_jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }

    /// The delays of `n` fetches in a row that all fail, as the refresher
    /// makes the client wait them (milliseconds).
    fn seeded_delays(backoff: Backoff, seed: u64, n: usize) -> Vec<u128> {
        let mut clock = Clock::new();
        let mut r = Refresher::with_seed(backoff, seed);
        let mut out = vec![];
        while out.len() < n {
            match r.next(clock.now()) {
                Action::Fetch => r.fetch_failed(clock.now()),
                Action::Sleep(t) => {
                    out.push((t - clock.now()).as_millis());
                    clock.set(t);
                }
                Action::Send(_) => panic!("no token was fetched"),
            }
        }
        out
    }

    #[test]
    fn seeded_jitter_reproduces_the_test_vectors() {
        // The vectors of docs/sdk.md, "Seeded jitter (test vectors)",
        // computed independently of this code.
        let b = Backoff::default();
        assert_eq!(
            seeded_delays(b, 0, 10),
            [94, 143, 205, 788, 885, 2123, 2934, 4428, 3114, 4880]
        );
        assert_eq!(
            seeded_delays(b, 42, 10),
            [87, 115, 255, 537, 830, 2989, 3046, 4501, 3349, 4046]
        );
        assert_eq!(
            seeded_delays(b, 0xDEAD_BEEF, 10),
            [64, 186, 201, 581, 987, 2669, 3380, 4248, 2603, 2877]
        );
        // Odd steps: integer halves, floors. (A delay of 0 ms is no wait
        // at all, so this one is the formula, not the refresher.)
        let tiny = Backoff {
            initial_ms: 1,
            max_ms: 10,
        };
        let mut rng = SplitMix64::new(7);
        let delays: Vec<u64> = (1..=6)
            .map(|n| tiny.delay_ms(n, rng.next_jitter()))
            .collect();
        assert_eq!(delays, [0, 1, 3, 6, 7, 6]);
        // Same seed, same sequence; another seed, another.
        assert_eq!(seeded_delays(b, 9, 8), seeded_delays(b, 9, 8));
        assert_ne!(seeded_delays(b, 9, 8), seeded_delays(b, 10, 8));
    }

    #[test]
    fn a_huge_lifetime_is_refused_without_panicking() {
        // exp - iat far beyond what an Instant can add: the old code
        // panicked ("overflow when adding duration to instant").
        let clock = Clock::new();
        let mut r = Refresher::with_seed(Backoff::default(), 6);
        assert!(is_fetch(&r.next(clock.now())));
        for exp in [MAX_NUMERIC_DATE, 1_000_000 + MAX_TOKEN_LIFETIME_SECS + 1] {
            let t = token_with(serde_json::json!({
                "tenant": "acme", "cell": "a.example", "iat": 1_000_000, "exp": exp,
                "map_version": "v"
            }));
            assert!(
                matches!(
                    r.fetched(clock.now(), t),
                    Err(ClaimsError::LifetimeTooLong { .. })
                ),
                "exp {exp}"
            );
            assert!(r.current().is_none(), "a refused token is not kept");
        }
        // The longest accepted lifetime works.
        let c = r
            .fetched(clock.now(), token("a.example", MAX_TOKEN_LIFETIME_SECS))
            .unwrap();
        assert_eq!(
            c.expires_at - c.received,
            Duration::from_secs(MAX_TOKEN_LIFETIME_SECS)
        );
    }

    #[test]
    fn a_backoff_of_centuries_does_not_panic() {
        let clock = Clock::new();
        let mut r = Refresher::with_seed(
            Backoff {
                initial_ms: u64::MAX,
                max_ms: u64::MAX,
            },
            8,
        );
        assert!(is_fetch(&r.next(clock.now())));
        r.fetch_failed(clock.now());
        let Action::Sleep(t) = r.next(clock.now()) else {
            panic!("expected to back off")
        };
        assert!(t > clock.now());
    }

    #[test]
    fn refresh_lead_scales_with_the_lifetime() {
        let s = Duration::from_secs;
        assert_eq!(refresh_lead(s(900)), s(60));
        assert_eq!(refresh_lead(s(3600)), s(60));
        assert_eq!(refresh_lead(s(100)), s(20));
        assert_eq!(refresh_lead(s(10)), s(2));
        assert_eq!(refresh_lead(s(2)), s(1));
        assert_eq!(refresh_lead(s(1)), Duration::from_millis(500));
    }

    /// A fake clock: a fixed origin plus an offset the test advances.
    struct Clock(Instant, Duration);

    impl Clock {
        fn new() -> Self {
            Self(Instant::now(), Duration::ZERO)
        }
        fn now(&self) -> Instant {
            self.0 + self.1
        }
        fn advance(&mut self, d: Duration) {
            self.1 += d;
        }
        fn set(&mut self, at: Instant) {
            assert!(at >= self.now(), "time only moves forward");
            self.1 = at - self.0;
        }
    }

    fn is_fetch(a: &Action<'_>) -> bool {
        matches!(a, Action::Fetch)
    }

    fn sent_cell(a: Action<'_>) -> String {
        match a {
            Action::Send(c) => c.claims.cell.clone(),
            other => panic!("expected Send, got {other:?}"),
        }
    }

    #[test]
    fn fetches_sends_and_refreshes_before_exp() {
        let mut clock = Clock::new();
        let mut r = Refresher::with_seed(Backoff::default(), 1);
        assert!(is_fetch(&r.next(clock.now())));
        let c = r.fetched(clock.now(), token("a.example", 900)).unwrap();
        assert_eq!(c.refresh_at - c.received, Duration::from_secs(840));
        assert_eq!(c.expires_at - c.received, Duration::from_secs(900));
        assert_eq!(sent_cell(r.next(clock.now())), "a.example");
        r.served(clock.now());
        clock.advance(Duration::from_secs(839));
        assert_eq!(sent_cell(r.next(clock.now())), "a.example");
        clock.advance(Duration::from_secs(1));
        assert!(is_fetch(&r.next(clock.now())), "refresh 60 s before exp");
        r.fetched(clock.now(), token("a.example", 900)).unwrap();
        r.served(clock.now());
        assert_eq!(r.unproductive_fetches(), 0);
    }

    #[test]
    fn a_failing_refresh_keeps_the_old_token_until_it_expires() {
        let mut clock = Clock::new();
        let mut r = Refresher::with_seed(Backoff::default(), 2);
        assert!(is_fetch(&r.next(clock.now())));
        r.fetched(clock.now(), token("a.example", 100)).unwrap();
        r.served(clock.now());
        clock.advance(Duration::from_secs(80));
        let mut fetches = vec![];
        // The auth service is down from here on; the old token is still
        // served by its cell, which must not reset the backoff.
        while clock.now() < clock.0 + Duration::from_secs(100) {
            match r.next(clock.now()) {
                Action::Fetch => {
                    fetches.push(clock.now());
                    r.fetch_failed(clock.now());
                }
                Action::Send(_) => r.served(clock.now()),
                Action::Sleep(t) => panic!("slept at {t:?} with a valid token"),
            }
            clock.advance(Duration::from_millis(10));
        }
        assert!(fetches.len() >= 5, "retries: {}", fetches.len());
        for (i, w) in fetches.windows(2).enumerate() {
            let gap = w[1] - w[0];
            let bound = Backoff::default().delay(i as u32 + 1, 0.0);
            assert!(gap >= bound, "gap {i}: {gap:?} < {bound:?}");
        }
        // Expired: nothing to send, only wait for the backoff and fetch.
        match r.next(clock.now()) {
            Action::Sleep(t) => {
                assert!(t > clock.now());
                clock.set(t);
                let a = r.next(clock.now());
                assert!(is_fetch(&a), "{a:?}");
            }
            Action::Fetch => {}
            Action::Send(_) => panic!("sent an expired token"),
        }
    }

    #[test]
    fn wrong_cell_fetches_once_and_follows_the_move() {
        let mut clock = Clock::new();
        let mut r = Refresher::with_seed(Backoff::default(), 3);
        assert!(is_fetch(&r.next(clock.now())));
        r.fetched(clock.now(), token("a.example", 900)).unwrap();
        assert_eq!(sent_cell(r.next(clock.now())), "a.example");
        r.served(clock.now());
        clock.advance(Duration::from_secs(60));
        // The tenant moves: cell a refuses with the wrong-cell signal.
        r.refused(clock.now());
        assert!(is_fetch(&r.next(clock.now())), "first refresh is immediate");
        r.fetched(clock.now(), token("b.example", 900)).unwrap();
        assert_eq!(sent_cell(r.next(clock.now())), "b.example");
        r.served(clock.now());
        // And the next move is again one immediate fetch.
        r.refused(clock.now());
        assert!(is_fetch(&r.next(clock.now())));
    }

    #[test]
    fn a_refusal_loop_never_fetches_faster_than_the_backoff() {
        // A cell that refuses every token (say its idea of the map and
        // cellns's disagree): the client must slow down to the cap.
        for seed in 0..20 {
            let mut clock = Clock::new();
            let mut r = Refresher::with_seed(Backoff::default(), seed);
            let start = clock.now();
            let mut fetches = vec![];
            while clock.now() < start + Duration::from_secs(60) {
                match r.next(clock.now()) {
                    Action::Fetch => {
                        fetches.push(clock.now());
                        r.fetched(clock.now(), token("a.example", 900)).unwrap();
                    }
                    Action::Send(_) => r.refused(clock.now()),
                    Action::Sleep(t) => clock.set(t),
                }
            }
            for (i, w) in fetches.windows(2).enumerate() {
                let gap = w[1] - w[0];
                let step = Backoff::default().delay(i as u32 + 1, 1.0);
                assert!(
                    gap >= step / 2 && gap <= step,
                    "seed {seed}, gap {i}: {gap:?} outside [{:?}, {step:?}]",
                    step / 2
                );
            }
            // 100 ms doubling to 5 s: ~6 fast fetches, then one per 2.5–5 s.
            assert!(
                (12..=32).contains(&fetches.len()),
                "seed {seed}: {} fetches in 60 s",
                fetches.len()
            );
            // Being served by a fresh token resets the backoff.
            loop {
                match r.next(clock.now()) {
                    Action::Fetch => {
                        r.fetched(clock.now(), token("b.example", 900)).unwrap();
                    }
                    Action::Send(_) => break,
                    Action::Sleep(t) => clock.set(t),
                }
            }
            r.served(clock.now());
            assert_eq!(r.unproductive_fetches(), 0);
            r.refused(clock.now());
            assert!(is_fetch(&r.next(clock.now())));
        }
    }

    #[test]
    fn an_unreadable_token_is_a_failed_fetch() {
        let mut clock = Clock::new();
        let mut r = Refresher::with_seed(Backoff::default(), 4);
        assert!(is_fetch(&r.next(clock.now())));
        assert!(r.fetched(clock.now(), "garbage".into()).is_err());
        assert!(r.current().is_none());
        let Action::Sleep(t) = r.next(clock.now()) else {
            panic!("expected to back off")
        };
        assert!(t - clock.now() >= Duration::from_millis(50));
        clock.set(t);
        assert!(is_fetch(&r.next(clock.now())));
    }

    #[test]
    fn lifetimes_ignore_the_local_wall_clock() {
        // iat/exp decades in the past (a device clock far ahead of the
        // issuer's, or the other way): the token still lives exp − iat
        // from receipt; no refresh storm.
        let mut clock = Clock::new();
        let mut r = Refresher::with_seed(Backoff::default(), 5);
        assert!(is_fetch(&r.next(clock.now())));
        let old = token_with(serde_json::json!({
            "tenant": "acme", "cell": "a.example", "iat": 1000, "exp": 1300, "map_version": "v"
        }));
        let c = r.fetched(clock.now(), old).unwrap();
        assert_eq!(c.expires_at - c.received, Duration::from_secs(300));
        r.served(clock.now());
        clock.advance(Duration::from_secs(200));
        assert_eq!(sent_cell(r.next(clock.now())), "a.example");
    }
}
