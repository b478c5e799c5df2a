//! The verdict of one endpoint from its probe results: `rise` consecutive
//! successes make it up, `fall` consecutive failures make it down, and
//! anything in between changes nothing, so an endpoint that alternates
//! never changes its verdict when `rise` and `fall` are at least 2.

/// One endpoint's verdict and the runs of results that lead to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hysteresis {
    rise: u32,
    fall: u32,
    /// `None` before the first verdict (the endpoint counts as up).
    verdict: Option<bool>,
    successes: u32,
    failures: u32,
}

impl Hysteresis {
    /// No verdict yet, with `rise` and `fall` (each at least 1).
    pub fn new(rise: u32, fall: u32) -> Self {
        Self::starting_at(rise, fall, None)
    }

    /// A verdict carried over (a restarted prober keeps what it knew).
    pub fn starting_at(rise: u32, fall: u32, verdict: Option<bool>) -> Self {
        Self {
            rise: rise.max(1),
            fall: fall.max(1),
            verdict,
            successes: 0,
            failures: 0,
        }
    }

    /// Counts one probe; returns the new verdict when it changes (the
    /// first verdict included).
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
        }
        let next = if self.successes >= self.rise {
            true
        } else if self.failures >= self.fall {
            false
        } else {
            return None;
        };
        (self.verdict != Some(next)).then(|| {
            self.verdict = Some(next);
            next
        })
    }

    /// The verdict: `None` before the first one.
    pub fn verdict(&self) -> Option<bool> {
        self.verdict
    }

    /// Whether the endpoint counts as up (it does before its first verdict).
    pub fn is_up(&self) -> bool {
        self.verdict != Some(false)
    }

    /// Consecutive successes so far.
    pub fn successes(&self) -> u32 {
        self.successes
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_after_exactly_fall_failures_and_up_after_exactly_rise_successes() {
        let mut h = Hysteresis::new(2, 3);
        assert!(h.is_up() && h.verdict().is_none());
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(false), None);
        assert!(h.is_up());
        assert_eq!(h.record(false), Some(false));
        assert!(!h.is_up());
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(true), None);
        assert_eq!(h.record(true), Some(true));
        assert_eq!(h.record(true), None);
    }

    #[test]
    fn the_first_verdict_comes_after_rise_successes() {
        let mut h = Hysteresis::new(2, 3);
        assert_eq!(h.record(true), None);
        assert_eq!(h.record(true), Some(true));
    }

    #[test]
    fn an_alternating_endpoint_never_changes_with_rise_and_fall_of_two() {
        for start in [None, Some(true), Some(false)] {
            let mut h = Hysteresis::starting_at(2, 2, start);
            for i in 0..1000 {
                assert_eq!(h.record(i % 2 == 0), None, "probe {i} from {start:?}");
            }
            assert_eq!(h.verdict(), start);
        }
    }

    #[test]
    fn rise_and_fall_of_one_follow_every_probe() {
        let mut h = Hysteresis::new(1, 1);
        assert_eq!(h.record(false), Some(false));
        assert_eq!(h.record(true), Some(true));
        assert_eq!(h.record(false), Some(false));
    }
}
