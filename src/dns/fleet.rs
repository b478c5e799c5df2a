//! The fleet view: which serial each `--notify` secondary serves, so an
//! operator (or a deploy pipeline, through `GET /v1/fleet` and `cellns
//! fleet wait`) can tell when a change has reached every server.
//!
//! One task asks every secondary for the zone's SOA over UDP every
//! [`INTERVAL`] (all of them at once, each answer awaited at most
//! [`TIMEOUT`]), and follows our own serial as it changes, keeping when
//! each of our recent serials took effect ([`HISTORY`] of them) to tell how
//! long a secondary has been behind. A secondary that does not answer, or
//! answers without the zone, is shown with its error and counts as out of
//! sync. Nothing here is on the query path; a dead secondary costs one
//! timeout per interval.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{LowerName, RData, RecordType};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::prepared::Store;
use crate::live::serial::serial_gt;

/// How often every secondary is asked for its serial.
pub const INTERVAL: Duration = Duration::from_secs(2);
/// How long an SOA answer is awaited.
pub const TIMEOUT: Duration = Duration::from_secs(1);
/// How many of our own recent serials (and when they took effect) are kept.
const HISTORY: usize = 256;

/// What was last seen of one secondary.
#[derive(Debug, Clone, Default)]
struct Seen {
    /// The serial of the last answer (none: it did not answer).
    serial: Option<u32>,
    /// The last serial it answered with, ever.
    last_known: Option<u32>,
    /// When it was last asked.
    checked_at: Option<SystemTime>,
    /// When it last served at least our serial of that moment.
    last_in_sync: Option<SystemTime>,
    /// Why the last question got no serial.
    error: Option<String>,
}

#[derive(Debug)]
struct State {
    /// Our serials, oldest first, with when each took effect.
    history: VecDeque<(u32, SystemTime)>,
    seen: Vec<Seen>,
}

/// The secondaries and what was last seen of them; see the module docs.
#[derive(Debug)]
pub struct Fleet {
    targets: Vec<SocketAddr>,
    store: Arc<Store>,
    state: Mutex<State>,
}

/// One secondary, as `GET /v1/fleet` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecondaryReport {
    /// Its address (`--notify`).
    pub address: SocketAddr,
    /// The serial it served at the last check (none: no answer).
    pub serial: Option<u32>,
    /// It serves at least our serial (RFC 1982).
    pub in_sync: bool,
    /// When it was last asked.
    pub checked_at: Option<SystemTime>,
    /// When it was last seen serving at least our serial of that moment.
    pub last_in_sync: Option<SystemTime>,
    /// How long it has been behind: seconds since we first served a serial
    /// it lacks (none when in sync).
    pub lag_seconds: Option<u64>,
    /// Our serial minus its serial (none when in sync or unknown).
    pub serials_behind: Option<u32>,
    /// Why the last check got no serial.
    pub error: Option<String>,
}

/// The fleet as `GET /v1/fleet` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetReport {
    /// Our serial.
    pub serial: u32,
    /// When it took effect.
    pub serial_since: SystemTime,
    /// The secondaries, in `--notify` order.
    pub secondaries: Vec<SecondaryReport>,
}

/// `a >= b` in serial arithmetic (RFC 1982).
pub fn serial_at_least(a: u32, b: u32) -> bool {
    a == b || serial_gt(a, b)
}

impl Fleet {
    /// The fleet of `targets`, serving `store`'s zone.
    pub fn new(targets: &[SocketAddr], store: Arc<Store>) -> Self {
        let serial = store.load().view.serial();
        for t in targets {
            crate::metrics::secondary_in_sync(&t.to_string(), false);
        }
        Self {
            targets: targets.to_vec(),
            store,
            state: Mutex::new(State {
                history: VecDeque::from([(serial, SystemTime::now())]),
                seen: vec![Seen::default(); targets.len()],
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks every secondary now and then every [`INTERVAL`], following our
    /// serial, until `cancel`.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut serials = self.store.subscribe_serial();
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                changed = serials.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let s = *serials.borrow_and_update();
                    self.our_serial(s, SystemTime::now());
                }
                _ = tick.tick() => self.check_all().await,
            }
        }
    }

    /// Records that our serial is now `serial`, since `at`.
    fn our_serial(&self, serial: u32, at: SystemTime) {
        let mut st = self.state();
        if st.history.back().is_some_and(|(s, _)| *s == serial) {
            return;
        }
        if st.history.len() == HISTORY {
            st.history.pop_front();
        }
        st.history.push_back((serial, at));
    }

    /// Asks every secondary at once and records the answers.
    async fn check_all(&self) {
        let origin = self.store.load().view.map().zone.origin.clone();
        // Spawned: all asked at once, so one silent secondary costs one
        // timeout, not one each.
        let asks: Vec<_> = self
            .targets
            .iter()
            .map(|&t| {
                let origin = origin.clone();
                tokio::spawn(async move { ask_serial(t, &origin).await })
            })
            .collect();
        let mut answers = Vec::with_capacity(asks.len());
        for a in asks {
            answers.push(
                a.await
                    .unwrap_or_else(|e| Err(format!("the check panicked: {e}"))),
            );
        }
        let now = SystemTime::now();
        let ours = self.store.load().view.serial();
        self.our_serial(ours, now);
        let mut st = self.state();
        for ((seen, answer), target) in st.seen.iter_mut().zip(answers).zip(&self.targets) {
            seen.checked_at = Some(now);
            match answer {
                Ok(serial) => {
                    seen.serial = Some(serial);
                    seen.last_known = Some(serial);
                    seen.error = None;
                    if serial_at_least(serial, ours) {
                        seen.last_in_sync = Some(now);
                    }
                }
                Err(e) => {
                    seen.serial = None;
                    seen.error = Some(e);
                }
            }
            let in_sync = seen.serial.is_some_and(|s| serial_at_least(s, ours));
            crate::metrics::secondary_in_sync(&target.to_string(), in_sync);
        }
    }

    /// What was last seen, against our serial now.
    pub fn report(&self) -> FleetReport {
        let ours = self.store.load().view.serial();
        let now = SystemTime::now();
        let st = self.state();
        let serial_since = st
            .history
            .iter()
            .rev()
            .find(|(s, _)| *s == ours)
            .map_or(now, |(_, at)| *at);
        let secondaries = self
            .targets
            .iter()
            .zip(&st.seen)
            .map(|(&address, seen)| {
                let in_sync = seen.serial.is_some_and(|s| serial_at_least(s, ours));
                // Behind since the first of our serials it lacks took effect
                // (the oldest we remember when it never answered).
                let behind_since = (!in_sync).then(|| {
                    st.history
                        .iter()
                        .find(|(s, _)| seen.last_known.is_none_or(|k| serial_gt(*s, k)))
                        .or(st.history.front())
                        .map_or(now, |(_, at)| *at)
                });
                SecondaryReport {
                    address,
                    serial: seen.serial,
                    in_sync,
                    checked_at: seen.checked_at,
                    last_in_sync: seen.last_in_sync,
                    lag_seconds: behind_since
                        .map(|t| now.duration_since(t).map_or(0, |d| d.as_secs())),
                    serials_behind: match seen.serial {
                        Some(s) if !in_sync => Some(ours.wrapping_sub(s)),
                        _ => None,
                    },
                    error: seen.error.clone(),
                }
            })
            .collect();
        FleetReport {
            serial: ours,
            serial_since,
            secondaries,
        }
    }
}

/// The serial `target` serves for `origin`, asked by an SOA query over
/// UDP (at most [`TIMEOUT`]); the error says why not.
pub async fn ask_serial(
    target: SocketAddr,
    origin: &hickory_proto::rr::Name,
) -> Result<u32, String> {
    let bind: SocketAddr = if target.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind)
        .await
        .map_err(|e| format!("cannot bind a socket: {e}"))?;
    sock.connect(target)
        .await
        .map_err(|e| format!("cannot reach it: {e}"))?;
    let id: u16 = rand::random();
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(origin.clone(), RecordType::SOA));
    let wire = m
        .to_vec()
        .map_err(|e| format!("cannot encode the query: {e}"))?;
    let want = LowerName::new(origin);
    let exchange = async {
        sock.send(&wire)
            .await
            .map_err(|e| format!("cannot send: {e}"))?;
        let mut buf = vec![0u8; 4096];
        loop {
            let n = sock
                .recv(&mut buf)
                .await
                .map_err(|e| format!("cannot receive: {e}"))?;
            let Ok(r) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            if r.metadata.id != id || r.metadata.message_type != MessageType::Response {
                continue;
            }
            if r.metadata.response_code != ResponseCode::NoError {
                return Err(format!(
                    "answered {} (it does not serve the zone yet)",
                    r.metadata.response_code
                ));
            }
            return r
                .answers
                .iter()
                .find_map(|rr| match &rr.data {
                    RData::SOA(soa) if LowerName::new(&rr.name) == want => Some(soa.serial),
                    _ => None,
                })
                .ok_or_else(|| "answered without the zone's SOA".to_owned());
        }
    };
    match tokio::time::timeout(TIMEOUT, exchange).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {TIMEOUT:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::prepared::store_of;
    use crate::map::load_example;

    #[test]
    fn lag_counts_from_the_first_serial_a_secondary_lacks() {
        let store = Arc::new(store_of(load_example().expect("example")));
        let ours = store.load().view.serial();
        let f = Fleet::new(&["127.0.0.1:1".parse().expect("addr")], store);
        let t0 = SystemTime::now() - Duration::from_secs(100);
        {
            let mut st = f.state();
            st.history.clear();
            st.history.push_back((ours.wrapping_sub(2), t0));
            st.history
                .push_back((ours.wrapping_sub(1), t0 + Duration::from_secs(40)));
            st.history.push_back((ours, t0 + Duration::from_secs(90)));
            st.seen[0].serial = Some(ours.wrapping_sub(2));
            st.seen[0].last_known = Some(ours.wrapping_sub(2));
        }
        let r = f.report();
        let s = &r.secondaries[0];
        assert!(!s.in_sync);
        assert_eq!(s.serials_behind, Some(2));
        // Behind since ours - 1 took effect, 60 s ago.
        let lag = s.lag_seconds.expect("lag");
        assert!((59..=61).contains(&lag), "{lag}");
        f.state().seen[0].serial = Some(ours);
        let r = f.report();
        assert!(r.secondaries[0].in_sync);
        assert_eq!(r.secondaries[0].lag_seconds, None);
        assert_eq!(r.secondaries[0].serials_behind, None);
    }
}
