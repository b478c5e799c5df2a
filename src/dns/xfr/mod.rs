//! Zone transfers: cellns as the primary of standard secondaries (NSD,
//! Knot, BIND), RFC 5936. This module owns who may transfer and how many
//! at once ([`Transfers`], built from [`TransferConfig`]); the transfers
//! themselves are answered by
//!
//! - `stream`: over TCP, the whole zone streamed message by message, or
//!   for IXFR the differences from the client's version (RFC 1995) out of
//!   the [`journal`] (the whole zone when the journal does not reach back
//!   to it);
//! - `single`: over UDP, the one-message answers (IXFR: the differences
//!   when they fit in the datagram, else the SOA; AXFR: FORMERR).
//!
//! [`super::dispatch`] routes a request here when `is_transfer` says so.
//!
//! # Who
//!
//! A request must come from a `--axfr-allow` prefix (none configured: every
//! transfer is refused) and, when `--tsig-key` is set, be signed with that
//! key (RFC 8945; the responses are signed too). A bad signature is NOTAUTH
//! with the TSIG error; anything else not allowed is REFUSED. Tenants placed
//! by hashing (`placement.unknown = "hash"`) cannot be transferred; that is
//! warned about at start-up ([`warn_unexpressible`]).

pub mod journal;
pub(super) mod single;
pub(super) mod stream;

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, RecordType};
use hickory_server::server::Request;
use tokio::sync::Semaphore;

use super::tsig::{self, Key, KeyFileError, ResponseSigner};
use crate::map::{Placement, Snapshot};

/// Transfers streamed at the same time. Streaming keeps each one's memory
/// at one message, but each pins the zone version it started from and costs a
/// core while it encodes.
const MAX_CONCURRENT: usize = 4;

/// An address prefix of `--axfr-allow` (and `--metrics-allow`):
/// `10.0.0.0/8`, `::1/128`, or a bare address (a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    net: IpAddr,
    len: u8,
}

impl Prefix {
    /// Whether `ip` is inside the prefix (IPv4-mapped IPv6 addresses are
    /// taken as the IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                mask(u128::from(u32::from(a)), 32, self.len) == u128::from(u32::from(n))
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => mask(u128::from(a), 128, self.len) == u128::from(n),
            _ => false,
        }
    }
}

/// `bits` (of a `width`-bit address) with all but the first `len` zeroed.
fn mask(bits: u128, width: u8, len: u8) -> u128 {
    if len == 0 {
        return 0;
    }
    let host = u32::from(width - len);
    bits >> host << host
}

impl FromStr for Prefix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{addr}` is not an IP address"))?;
        let width = if net.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => width,
            Some(l) => match l.trim().parse::<u8>() {
                Ok(l) if l <= width => l,
                _ => return Err(format!("`/{l}` is not a prefix length (0..={width})")),
            },
        };
        let bits = match net {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        };
        let masked = mask(bits, width, len);
        if masked != bits {
            let net = match net {
                IpAddr::V4(_) => IpAddr::V4((masked as u32).into()),
                IpAddr::V6(_) => IpAddr::V6(masked.into()),
            };
            return Err(format!("host bits are set (the network is {net}/{len})"));
        }
        Ok(Self { net, len })
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.len)
    }
}

/// Why the transfer settings cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A `--axfr-allow` value is not a prefix.
    #[error(
        "invalid --axfr-allow value `{value}`: {reason} (expected an address or prefix, e.g. 192.0.2.53, 10.0.0.0/8, ::1/128)"
    )]
    Prefix {
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The `--tsig-key` file is not usable.
    #[error(transparent)]
    Key(#[from] KeyFileError),
}

/// Zone transfer settings (built by the serve wiring from the flags).
#[derive(Debug, Clone, Default)]
pub struct TransferConfig {
    /// `--axfr-allow` values: addresses or prefixes allowed to transfer.
    pub allow: Vec<String>,
    /// `--tsig-key`: the key file transfers must be signed with.
    pub tsig_key: Option<std::path::PathBuf>,
    /// `--notify`: the secondaries told of every change.
    pub secondaries: Vec<std::net::SocketAddr>,
    /// `--ixfr-journal-versions` and `--ixfr-journal-bytes`.
    pub journal: journal::Limits,
}

/// Who may transfer the zone, and the transfers in progress.
#[derive(Debug)]
pub struct Transfers {
    allow: Vec<Prefix>,
    key: Option<Arc<Key>>,
    slots: Semaphore,
    journal: journal::Journal,
}

impl Default for Transfers {
    fn default() -> Self {
        Self::new(Vec::new(), None)
    }
}

impl Transfers {
    /// Transfers from `allow`, signed with `key` when given.
    fn new(allow: Vec<Prefix>, key: Option<Key>) -> Self {
        Self {
            allow,
            key: key.map(Arc::new),
            slots: Semaphore::new(MAX_CONCURRENT),
            journal: journal::Journal::default(),
        }
    }

    /// The IXFR journal: give it every publish of the store
    /// (`Store::set_on_publish`).
    pub fn journal(&self) -> &journal::Journal {
        &self.journal
    }

    /// Transfers as `cfg` says: the allowed prefixes parsed, the key read.
    pub fn from_config(cfg: &TransferConfig) -> Result<Self, ConfigError> {
        let allow = cfg
            .allow
            .iter()
            .map(|v| {
                v.parse().map_err(|reason| ConfigError::Prefix {
                    value: v.clone(),
                    reason,
                })
            })
            .collect::<Result<Vec<Prefix>, _>>()?;
        let key = cfg.tsig_key.as_deref().map(Key::load).transpose()?;
        if key.is_some() && allow.is_empty() {
            tracing::warn!(
                "--tsig-key is set but --axfr-allow is not: every zone transfer is refused \
                 (allow the secondaries' addresses, or 0.0.0.0/0 and ::/0 to rely on TSIG alone)"
            );
        }
        if !cfg.secondaries.is_empty() && allow.is_empty() {
            tracing::warn!(
                "--notify is set but --axfr-allow is not: the secondaries are notified but every \
                 transfer they ask for is refused"
            );
        }
        let mut t = Self::new(allow, key);
        t.journal = journal::Journal::new(cfg.journal);
        Ok(t)
    }

    /// The TSIG key, when transfers (and NOTIFY) must be signed.
    pub fn key(&self) -> Option<&Key> {
        self.key.as_deref()
    }

    fn allows(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|p| p.contains(ip))
    }

    /// Who may have the transfer `request` asks for, by the rules in the
    /// module docs (TSIG first: a bad signature is NOTAUTH whatever else).
    fn decide(&self, snap: &Snapshot, request: &Request) -> Decision {
        let signer = match tsig::check(
            self.key(),
            request.as_slice(),
            request.signature.as_deref(),
            tsig::now(),
        ) {
            tsig::Check::Unsigned => None,
            tsig::Check::Valid(s) => Some(s),
            tsig::Check::Invalid(error, signer) => {
                return Decision::Deny {
                    rcode: ResponseCode::NotAuth,
                    signer: Some(signer),
                    why: match error {
                        tsig::TsigError::BadKey => "TSIG key unknown (BADKEY)",
                        tsig::TsigError::BadTime => "TSIG time outside the fudge (BADTIME)",
                        _ => "TSIG signature does not verify (BADSIG)",
                    },
                };
            }
        };
        let deny = |why, signer| Decision::Deny {
            rcode: ResponseCode::Refused,
            signer,
            why,
        };
        let Some(q) = request.queries.queries().first() else {
            return deny("no question", signer);
        };
        if *q.name() != snap.zone.origin_lower || q.query_class() != DNSClass::IN {
            return deny("not a zone served here", signer);
        }
        if !self.allows(request.src().ip()) {
            return deny("source address not in --axfr-allow", signer);
        }
        if self.key.is_some() && signer.is_none() {
            return deny("not signed, and --tsig-key requires TSIG", signer);
        }
        Decision::Allow(signer)
    }
}

/// Whether a request arriving over TCP is one [`Transfers::serve_tcp`]
/// takes: a query (not a response), opcode QUERY, one question of type
/// AXFR or IXFR, no EDNS or EDNS version 0. Anything else, even with an
/// AXFR question, goes to the handler, which owns the general rules
/// (FORMERR, NOTIMP, BADVERS).
pub(super) fn is_transfer(request: &Request) -> bool {
    use hickory_proto::op::{MessageType, OpCode};
    request.metadata.message_type == MessageType::Query
        && request.metadata.op_code == OpCode::Query
        && request.queries.queries().len() == 1
        && matches!(
            request.queries.queries()[0].query_type(),
            RecordType::AXFR | RecordType::IXFR
        )
        && request.edns.as_ref().is_none_or(|e| e.version() == 0)
}

/// Start-up warning: tenants placed by hashing cannot be transferred, so
/// secondaries would answer them NXDOMAIN while cellns answers them.
pub fn warn_unexpressible(cfg: &TransferConfig, snap: &Snapshot) {
    if snap.placement == Placement::Hash && (!cfg.secondaries.is_empty() || !cfg.allow.is_empty()) {
        tracing::warn!(
            placement = snap.placement.as_str(),
            "secondaries are configured (--notify/--axfr-allow) but the map places unlisted \
             tenants by hashing, which zone transfers cannot carry: secondaries answer only listed \
             tenants and NXDOMAIN for the rest (see deploy/secondaries/README.md)"
        );
    }
}

/// Start-up note: without `zone.serial`, serials come from the clock, so
/// several primaries fed the same map serve different serials for the same
/// content, and a secondary moving between them may transfer the whole zone
/// again (or wait for a higher serial). One primary is not affected.
pub fn warn_clock_serials(cfg: &TransferConfig, snap: &Snapshot) {
    if snap.zone.serial.is_none() && (!cfg.secondaries.is_empty() || !cfg.allow.is_empty()) {
        tracing::info!(
            "the map declares no zone.serial: SOA serials come from this instance's clock; with \
             several primaries fed the same map, set zone.serial (e.g. the generation time, \
             `date +%s`) so that all of them serve the same serial for the same content (README, \
             \"How the serial is chosen\")"
        );
    }
}

enum Decision {
    Allow(Option<ResponseSigner>),
    Deny {
        rcode: ResponseCode,
        signer: Option<ResponseSigner>,
        why: &'static str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_and_match() {
        let p: Prefix = "10.0.0.0/8".parse().expect("prefix");
        assert!(p.contains("10.1.2.3".parse().expect("ip")));
        assert!(!p.contains("11.0.0.1".parse().expect("ip")));
        assert!(!p.contains("::1".parse().expect("ip")));
        let host: Prefix = "127.0.0.1".parse().expect("address");
        assert_eq!(host.to_string(), "127.0.0.1/32");
        assert!(host.contains("127.0.0.1".parse().expect("ip")));
        assert!(!host.contains("127.0.0.2".parse().expect("ip")));
        // IPv4-mapped IPv6 sources count as IPv4.
        assert!(host.contains("::ffff:127.0.0.1".parse().expect("ip")));
        let v6: Prefix = "::1/128".parse().expect("prefix");
        assert!(v6.contains("::1".parse().expect("ip")));
        let all: Prefix = "::/0".parse().expect("prefix");
        assert!(all.contains("2001:db8::1".parse().expect("ip")));
        let all4: Prefix = "0.0.0.0/0".parse().expect("prefix");
        assert!(all4.contains("192.0.2.1".parse().expect("ip")));
        let net6: Prefix = "2001:db8::/32".parse().expect("prefix");
        assert!(net6.contains("2001:db8:ffff::1".parse().expect("ip")));
        assert!(!net6.contains("2001:db9::1".parse().expect("ip")));
        for (bad, why) in [
            ("10.0.0.1/8", "host bits"),
            ("10.0.0.0/33", "prefix length"),
            ("::1/129", "prefix length"),
            ("example.com", "not an IP"),
            ("10.0.0.0/x", "prefix length"),
            ("", "not an IP"),
        ] {
            let e = bad.parse::<Prefix>().expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
