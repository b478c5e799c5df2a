//! The client side of cellns, for SDK authors: everything a client needs
//! to reach its tenant's cell and follow the tenant when it moves.
//!
//! Owns:
//! - reading a token's routing claims **without verifying it**
//!   ([`read_claims`]): SDKs hold no keys; the cell verifies;
//! - DNS resolution of a tenant or cell hostname from a given server
//!   ([`Resolver`]: A and AAAA over UDP, TCP when truncated, CNAMEs followed);
//! - the wrong-cell signal cells send and clients act on ([`WrongCell`]:
//!   HTTP 421 with a JSON error code; the gRPC form is in docs/sdk.md);
//! - the refresh rule ([`Refresher`]): a small state machine that says when
//!   to fetch a token, when to wait, and which token to send. It refreshes
//!   before `exp`, drops a token a cell refused, and never fetches faster
//!   than a bounded exponential [`Backoff`] with jitter.
//!
//! The protocol itself, for any language, is docs/sdk.md. Nothing here does
//! I/O except [`Resolver`]; [`Refresher`] takes the current time as an
//! argument, so its tests (and an SDK's) drive it with a fake clock.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use rand::{Rng as _, SeedableRng as _};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------
// Reading a token.

/// Largest token [`read_claims`] accepts. cellns tokens are well under
/// 1 KiB; the bound keeps a hostile "token" from costing memory.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// base64url that accepts the payload with or without `=` padding (JWS
/// forbids padding, but some libraries add it).
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a token's claims could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimsError {
    /// Not three dot-separated parts, or longer than [`MAX_TOKEN_LEN`].
    #[error("not a JWT: {0}")]
    NotJwt(&'static str),
    /// The payload is not base64url-encoded JSON with the routing claims.
    #[error("token payload: {0}")]
    Payload(String),
    /// A claim has a value a client must not use (e.g. a `cell` that is not
    /// a hostname, which would otherwise end up in a URL).
    #[error("claim {claim}: {reason}")]
    Invalid {
        /// The claim.
        claim: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// The claims a client routes by, read from a token it has **not**
/// verified. Treat them as hints about where to connect: the cell verifies
/// the token and refuses it ([`WrongCell`]) when they are wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    /// The tenant id (one DNS label, lowercase).
    pub tenant: String,
    /// The hostname of the tenant's cell: lowercase, no trailing dot. This
    /// is where to connect.
    pub cell: String,
    /// Issued at, Unix seconds (the issuer's clock).
    pub iat: u64,
    /// Expiry, Unix seconds (the issuer's clock).
    pub exp: u64,
    /// The version of the map the cell was taken from (for logs).
    pub map_version: String,
}

impl TokenClaims {
    /// The token's lifetime as the issuer set it (`exp - iat`).
    pub fn lifetime(&self) -> Duration {
        Duration::from_secs(self.exp.saturating_sub(self.iat))
    }
}

/// Reads the routing claims of `token` (a JWS compact serialisation)
/// without verifying its signature: base64url-decodes the payload and parses
/// `tenant`, `cell`, `iat`, `exp` and `map_version`. Other claims are
/// ignored. `cell` must be a hostname and `tenant` a DNS label, since a
/// client puts them into names and URLs.
pub fn read_claims(token: &str) -> Result<TokenClaims, ClaimsError> {
    #[derive(Deserialize)]
    struct Raw {
        tenant: String,
        cell: String,
        iat: u64,
        exp: u64,
        map_version: String,
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(ClaimsError::NotJwt("longer than 16 KiB"));
    }
    let mut parts = token.trim().split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ClaimsError::NotJwt("not three parts separated by dots"));
    };
    let json = B64URL
        .decode(payload)
        .map_err(|e| ClaimsError::Payload(format!("not base64url: {e}")))?;
    let raw: Raw = serde_json::from_slice(&json)
        .map_err(|e| ClaimsError::Payload(format!("not the expected JSON: {e}")))?;
    let cell = raw.cell.trim_end_matches('.').to_ascii_lowercase();
    if !is_hostname(&cell) {
        return Err(ClaimsError::Invalid {
            claim: "cell",
            reason: "not a hostname (letters, digits, '-', '_' and dots, at most 253 bytes)",
        });
    }
    let tenant = raw.tenant.to_ascii_lowercase();
    if tenant.contains('.') || !is_hostname(&tenant) {
        return Err(ClaimsError::Invalid {
            claim: "tenant",
            reason: "not one DNS label",
        });
    }
    if raw.exp <= raw.iat {
        return Err(ClaimsError::Invalid {
            claim: "exp",
            reason: "not after iat: the token has no lifetime",
        });
    }
    Ok(TokenClaims {
        tenant,
        cell,
        iat: raw.iat,
        exp: raw.exp,
        map_version: raw.map_version,
    })
}

/// A relative or absolute DNS hostname of plain labels.
fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Lowercase, without the trailing dot: how hostnames are compared here.
fn canonical(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

// ---------------------------------------------------------------------------
// The wrong-cell signal.

/// The HTTP status of the wrong-cell signal: 421 Misdirected Request
/// (RFC 9110 §15.5.20: this server will not answer for that request).
pub const WRONG_CELL_STATUS: u16 = 421;
/// The `error.code` of the wrong-cell signal (the same code the
/// [`crate::token::VerifyError::WrongCell`] error has).
pub const WRONG_CELL_CODE: &str = "wrong_cell";
/// gRPC form: the status code, `FAILED_PRECONDITION` (9).
pub const GRPC_WRONG_CELL_STATUS: u32 = 9;
/// gRPC form: the trailing metadata key whose presence (with status
/// [`GRPC_WRONG_CELL_STATUS`]) is the signal. Its value is this cell's
/// hostname.
pub const GRPC_WRONG_CELL_TRAILER: &str = "cellns-wrong-cell";

/// The wrong-cell signal: "this cell does not serve this tenant; get a new
/// token and connect to the cell it names". A cell sends it when the
/// token's `cell` claim is another cell, or when the tenant has moved away
/// from it. Over HTTP it is status 421 with the JSON body
/// `{"error": {"code": "wrong_cell", "message": ..., "expected": ..., "got": ...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrongCell {
    /// The hostname of the cell that refused (the cell a token must name
    /// to be accepted here).
    pub expected: String,
    /// The `cell` claim of the refused token.
    pub got: String,
    /// For people.
    pub message: String,
}

#[derive(Serialize, Deserialize)]
struct WrongCellBody {
    error: WrongCellError,
}

#[derive(Serialize, Deserialize)]
struct WrongCellError {
    code: String,
    message: String,
    expected: String,
    got: String,
}

impl WrongCell {
    /// The signal of cell `expected` refusing a token for cell `got`.
    pub fn new(expected: &str, got: &str) -> Self {
        let (expected, got) = (canonical(expected), canonical(got));
        let message = if expected == got {
            format!("the tenant is no longer served by {expected}: get a new token")
        } else {
            format!("this is {expected}, the token is for {got}: get a new token")
        };
        Self {
            expected,
            got,
            message,
        }
    }

    /// The JSON body of the HTTP form (send it with status
    /// [`WRONG_CELL_STATUS`] and `Content-Type: application/json`).
    pub fn http_body(&self) -> Vec<u8> {
        let body = WrongCellBody {
            error: WrongCellError {
                code: WRONG_CELL_CODE.to_owned(),
                message: self.message.clone(),
                expected: self.expected.clone(),
                got: self.got.clone(),
            },
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }

    /// The signal in an HTTP response, if it is one: status 421 **and** the
    /// `wrong_cell` code. A 421 without that code is plain HTTP (retry on a
    /// new connection), not a reason to refresh the token.
    pub fn from_http(status: u16, body: &[u8]) -> Option<Self> {
        if status != WRONG_CELL_STATUS {
            return None;
        }
        let b: WrongCellBody = serde_json::from_slice(body).ok()?;
        (b.error.code == WRONG_CELL_CODE).then_some(Self {
            expected: b.error.expected,
            got: b.error.got,
            message: b.error.message,
        })
    }
}

// ---------------------------------------------------------------------------
// DNS.

/// Longest CNAME chain followed (RFC 1034 §3.6.2 asks resolvers to bound it).
const MAX_CNAME_HOPS: usize = 8;
/// The EDNS(0) UDP payload size advertised (the DNS Flag Day 2020 value).
const EDNS_PAYLOAD: u16 = 1232;

/// Why a name could not be resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The name is not a valid DNS name.
    #[error("{name:?} is not a DNS name: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// NXDOMAIN: the name does not exist (an unknown tenant).
    #[error("{0}: no such name (NXDOMAIN)")]
    NxDomain(String),
    /// The name exists but has no A or AAAA record.
    #[error("{0}: no address records")]
    NoAddress(String),
    /// The server answered with another error code (e.g. REFUSED: the
    /// name is outside its zone and it does not recurse).
    #[error("{name}: the server answered {rcode}")]
    Rcode {
        /// The name.
        name: String,
        /// The response code.
        rcode: ResponseCode,
    },
    /// No valid answer within the tries.
    #[error("{name}: no answer from {server} after {tries} tries")]
    Timeout {
        /// The name.
        name: String,
        /// The server.
        server: SocketAddr,
        /// How many tries.
        tries: u32,
    },
    /// A chain of more than 8 aliases.
    #[error("{0}: CNAME chain too long")]
    CnameChain(String),
    /// A socket error.
    #[error("DNS over {transport} to {server}: {source}")]
    Io {
        /// UDP or TCP.
        transport: &'static str,
        /// The server.
        server: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The addresses a name resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// The name that owns the addresses, after following CNAMEs:
    /// lowercase, no trailing dot.
    pub canonical: String,
    /// IPv4 then IPv6 addresses, each family in answer order.
    pub addrs: Vec<IpAddr>,
    /// How long the answer may be used: the smallest TTL of the records
    /// it was built from.
    pub ttl: Duration,
}

impl Lookup {
    /// True when `self` and `other` lead to the same endpoint: the same
    /// canonical name, or the same (non-empty) set of addresses. This is
    /// how "the tenant's DNS answer agrees with the token's cell" is
    /// checked: look up `<tenant>.<zone>` and the `cell` claim and compare.
    pub fn same_endpoint(&self, other: &Lookup) -> bool {
        if self.canonical == other.canonical {
            return true;
        }
        let mut a = self.addrs.clone();
        let mut b = other.addrs.clone();
        a.sort_unstable();
        a.dedup();
        b.sort_unstable();
        b.dedup();
        !a.is_empty() && a == b
    }
}

/// A stub resolver that asks one DNS server for A and AAAA records: cellns
/// itself (authoritative for the tenant zone) or a recursive resolver.
/// Queries go over UDP with EDNS(0), are retried on timeout, and are
/// repeated over TCP when the answer is truncated (RFC 7766). A response is
/// accepted only from the server, with the query's id and question.
#[derive(Debug, Clone)]
pub struct Resolver {
    server: SocketAddr,
    timeout: Duration,
    tries: u32,
    recursion_desired: bool,
}

impl Resolver {
    /// A resolver asking `server`: 1 s per try, 3 tries, recursion desired
    /// (an authoritative server such as cellns ignores the RD bit).
    pub fn new(server: SocketAddr) -> Self {
        Self {
            server,
            timeout: Duration::from_secs(1),
            tries: 3,
            recursion_desired: true,
        }
    }

    /// Sets how long one try waits for an answer.
    pub fn with_timeout(mut self, per_try: Duration) -> Self {
        self.timeout = per_try;
        self
    }

    /// Sets how many times a query is sent before giving up (at least 1).
    pub fn with_tries(mut self, tries: u32) -> Self {
        self.tries = tries.max(1);
        self
    }

    /// The server queried.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// Resolves `name` (absolute whether or not it ends with a dot) to its
    /// A and AAAA addresses, following CNAMEs (within an answer, and by
    /// asking again for a target the answer leaves unresolved).
    pub async fn lookup(&self, name: &str) -> Result<Lookup, ResolveError> {
        let invalid = |reason: String| ResolveError::InvalidName {
            name: name.to_owned(),
            reason,
        };
        let mut qname = Name::from_ascii(name).map_err(|e| invalid(e.to_string()))?;
        qname.set_fqdn(true);
        if qname.is_root() {
            return Err(invalid("the root is not a host".into()));
        }
        let mut ttl = u32::MAX;
        for _ in 0..MAX_CNAME_HOPS {
            let (v4, v6) = tokio::join!(
                self.query(&qname, RecordType::A),
                self.query(&qname, RecordType::AAAA)
            );
            let (v4, v6) = (v4?, v6?);
            // The alias chain is the same in both answers (a CNAME holds
            // for every type); take it from whichever carries it.
            let (mut target, chain_ttl) = follow_cnames(&v4, &qname);
            if target == qname {
                (target, _) = follow_cnames(&v6, &qname);
            }
            ttl = ttl.min(chain_ttl);
            let mut addrs = Vec::new();
            for m in [&v4, &v6] {
                for r in &m.answers {
                    if r.name != target {
                        continue;
                    }
                    match &r.data {
                        RData::A(a) => addrs.push(IpAddr::V4(a.0)),
                        RData::AAAA(a) => addrs.push(IpAddr::V6(a.0)),
                        _ => continue,
                    }
                    ttl = ttl.min(r.ttl);
                }
            }
            if !addrs.is_empty() {
                return Ok(Lookup {
                    canonical: canonical(&target.to_ascii()),
                    addrs,
                    ttl: Duration::from_secs(u64::from(ttl)),
                });
            }
            if target == qname {
                return Err(ResolveError::NoAddress(canonical(&qname.to_ascii())));
            }
            // An alias whose target the server did not resolve (cellns
            // answers an out-of-zone cell with a bare CNAME): ask for it.
            qname = target;
        }
        Err(ResolveError::CnameChain(canonical(name)))
    }

    /// One query: UDP, retried, then TCP if the answer was truncated.
    /// Checks the response code.
    async fn query(&self, name: &Name, rtype: RecordType) -> Result<Message, ResolveError> {
        let id: u16 = rand::thread_rng().r#gen();
        let mut q = Message::new(id, MessageType::Query, OpCode::Query);
        q.metadata.recursion_desired = self.recursion_desired;
        q.add_query(Query::query(name.clone(), rtype));
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        q.set_edns(edns);
        let wire = q.to_vec().map_err(|e| ResolveError::InvalidName {
            name: name.to_ascii(),
            reason: e.to_string(),
        })?;
        let mut answer = None;
        for _ in 0..self.tries {
            if let Some(m) = self.udp(&wire, id, name, rtype).await? {
                answer = Some(m);
                break;
            }
        }
        let Some(mut m) = answer else {
            return Err(ResolveError::Timeout {
                name: canonical(&name.to_ascii()),
                server: self.server,
                tries: self.tries,
            });
        };
        if m.metadata.truncation {
            m = self.tcp(&wire, id, name, rtype).await?;
        }
        match m.metadata.response_code {
            ResponseCode::NoError => Ok(m),
            ResponseCode::NXDomain => Err(ResolveError::NxDomain(canonical(&name.to_ascii()))),
            rcode => Err(ResolveError::Rcode {
                name: canonical(&name.to_ascii()),
                rcode,
            }),
        }
    }

    /// One UDP try; `None` when no matching response came in time.
    async fn udp(
        &self,
        wire: &[u8],
        id: u16,
        name: &Name,
        rtype: RecordType,
    ) -> Result<Option<Message>, ResolveError> {
        let io = |source| ResolveError::Io {
            transport: "UDP",
            server: self.server,
            source,
        };
        let local: SocketAddr = match self.server {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let sock = tokio::net::UdpSocket::bind(local).await.map_err(io)?;
        // A connected socket only receives datagrams from the server.
        sock.connect(self.server).await.map_err(io)?;
        sock.send(wire).await.map_err(io)?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        // Room for any datagram, in case a server ignores the advertised size.
        let mut buf = vec![0u8; 65_535];
        loop {
            let n = match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                Err(_) => return Ok(None),
                // ICMP port unreachable surfaces here; the next try may
                // find the server up.
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    tokio::time::sleep_until(deadline).await;
                    return Ok(None);
                }
                Ok(Err(e)) => return Err(io(e)),
                Ok(Ok(n)) => n,
            };
            if let Some(m) = matching(&buf[..n], id, name, rtype) {
                return Ok(Some(m));
            }
            // Not our answer (late, spoofed or garbled): keep waiting.
        }
    }

    /// The query over TCP (two-byte length prefix, RFC 1035 §4.2.2).
    async fn tcp(
        &self,
        wire: &[u8],
        id: u16,
        name: &Name,
        rtype: RecordType,
    ) -> Result<Message, ResolveError> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let io = |source| ResolveError::Io {
            transport: "TCP",
            server: self.server,
            source,
        };
        let timeout = || ResolveError::Timeout {
            name: canonical(&name.to_ascii()),
            server: self.server,
            tries: 1,
        };
        let exchange = async {
            let mut s = tokio::net::TcpStream::connect(self.server)
                .await
                .map_err(io)?;
            let len = u16::try_from(wire.len()).map_err(|_| {
                io(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "query too long",
                ))
            })?;
            let mut framed = Vec::with_capacity(wire.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(wire);
            s.write_all(&framed).await.map_err(io)?;
            let mut len = [0u8; 2];
            s.read_exact(&mut len).await.map_err(io)?;
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            s.read_exact(&mut buf).await.map_err(io)?;
            matching(&buf, id, name, rtype).ok_or_else(|| {
                io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the TCP answer does not match the query",
                ))
            })
        };
        tokio::time::timeout(self.timeout * self.tries, exchange)
            .await
            .map_err(|_| timeout())?
    }
}

/// `bytes` decoded, if it is the response to query `id` for `name`/`rtype`.
fn matching(bytes: &[u8], id: u16, name: &Name, rtype: RecordType) -> Option<Message> {
    let m = Message::from_vec(bytes).ok()?;
    let ok = m.metadata.id == id
        && m.metadata.message_type == MessageType::Response
        && m.queries.len() == 1
        && m.queries[0].name == *name
        && m.queries[0].query_type == rtype;
    ok.then_some(m)
}

/// Follows the CNAME chain that starts at `qname` in the answer section;
/// the last name reached and the smallest TTL of the CNAMEs followed.
fn follow_cnames(m: &Message, qname: &Name) -> (Name, u32) {
    let mut at = qname.clone();
    let mut ttl = u32::MAX;
    // Each step consumes one record, so a loop cannot spin forever.
    for _ in 0..m.answers.len().min(MAX_CNAME_HOPS) {
        let next = m.answers.iter().find_map(|r| match &r.data {
            RData::CNAME(c) if r.name == at => Some((c.0.clone(), r.ttl)),
            _ => None,
        });
        let Some((target, t)) = next else { break };
        ttl = ttl.min(t);
        at = target;
    }
    (at, ttl)
}

// ---------------------------------------------------------------------------
// The refresh rule.

/// Bounded exponential backoff with jitter between token fetches that did
/// not lead to being served: after `n` such fetches the next one waits a
/// random time in `[d/2, d]`, `d = min(max, initial · 2^(n-1))` ("equal
/// jitter": never less than half the step, so clients back off for real,
/// and spread out so they do not return together).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The step after the first unproductive fetch.
    pub initial: Duration,
    /// The largest step.
    pub max: Duration,
}

impl Default for Backoff {
    /// 100 ms doubling to 5 s.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// The delay after `attempt` unproductive fetches (0: none), with
    /// `jitter` in `[0, 1]` picking the point in `[d/2, d]`.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        if attempt == 0 {
            return Duration::ZERO;
        }
        let factor = 2u32.saturating_pow((attempt - 1).min(31));
        let step = self.initial.saturating_mul(factor).min(self.max);
        let half = step / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }
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
    rng: rand::rngs::StdRng,
    current: Option<CurrentToken>,
    /// Fetch attempts since a freshly fetched token was last served.
    unproductive: u32,
    /// Number of the latest fetch attempt.
    attempt: u64,
    /// No fetch before this instant.
    gate: Option<Instant>,
}

impl Refresher {
    /// A refresher with this backoff and jitter from the OS's randomness.
    pub fn new(backoff: Backoff) -> Self {
        Self::with_rng(backoff, rand::rngs::StdRng::from_entropy())
    }

    /// A refresher whose jitter comes from `seed` (reproducible tests).
    pub fn with_seed(backoff: Backoff, seed: u64) -> Self {
        Self::with_rng(backoff, rand::rngs::StdRng::seed_from_u64(seed))
    }

    fn with_rng(backoff: Backoff, rng: rand::rngs::StdRng) -> Self {
        Self {
            backoff,
            rng,
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
                    let jitter = self.rng.r#gen::<f64>();
                    self.gate = Some(now + self.backoff.delay(self.unproductive, jitter));
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
    /// one. An unreadable token is an error and counts as a failed fetch.
    pub fn fetched(&mut self, now: Instant, token: String) -> Result<&CurrentToken, ClaimsError> {
        let claims = read_claims(&token)?;
        let lifetime = claims.lifetime();
        Ok(self.current.insert(CurrentToken {
            token,
            received: now,
            refresh_at: now + lifetime - refresh_lead(lifetime),
            expires_at: now + lifetime,
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
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn token_with(payload: serde_json::Value) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"EdDSA","typ":"JWT","kid":"k"}"#),
            URL_SAFE_NO_PAD.encode(payload.to_string()),
            URL_SAFE_NO_PAD.encode([7u8; 64])
        )
    }

    /// A token for `cell` living `ttl` seconds (signature not valid: the
    /// client never checks it).
    fn token(cell: &str, ttl: u64) -> String {
        token_with(serde_json::json!({
            "iss": "cellns", "aud": "cells", "sub": "u", "iat": 1_000_000, "nbf": 1_000_000,
            "exp": 1_000_000 + ttl, "jti": "j", "tenant": "acme", "cell": cell,
            "cell_id": "x", "region": "r", "map_version": "v1"
        }))
    }

    #[test]
    fn reads_the_claims_of_an_issued_token() {
        use crate::token::{Alg, Issuer, IssuerConfig, KeyRing, SigningKey, TokenRequest};
        let key = std::sync::Arc::new(SigningKey::generate(Alg::EdDSA));
        let issuer = Issuer::new(
            IssuerConfig {
                issuer: "cellns".into(),
                audience: "cells".into(),
                max_ttl: 3600,
            },
            std::sync::Arc::new(KeyRing::fixed(vec![key])),
        );
        let snap =
            crate::live::View::of_map(std::sync::Arc::new(crate::map::load_example().unwrap()));
        let req = TokenRequest {
            tenant: "ACME".into(),
            subject: "user-42".into(),
            ttl_seconds: 900,
            claims: None,
        };
        let issued = issuer.issue(&snap, &req, 1_700_000_000).unwrap();
        let c = read_claims(&issued.token).unwrap();
        assert_eq!(c.tenant, "acme");
        assert_eq!(c.cell, issued.cell);
        assert_eq!(c.cell, "use1-a.cells.example.com");
        assert_eq!(c.iat, 1_700_000_000);
        assert_eq!(c.exp, 1_700_000_900);
        assert_eq!(c.map_version, issued.map_version);
        assert_eq!(c.lifetime(), Duration::from_secs(900));
    }

    #[test]
    fn claims_are_normalised_and_padding_is_tolerated() {
        // exp with 7, 8, 9 digits: one of the payloads needs padding.
        let t = [60, 10_000_000, 100_000_000]
            .map(|ttl| token("USE1-A.Cells.Example.COM.", ttl))
            .into_iter()
            .find(|t| !t.split('.').nth(1).unwrap().len().is_multiple_of(4))
            .unwrap();
        assert_eq!(read_claims(&t).unwrap().cell, "use1-a.cells.example.com");
        let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
        while !parts[1].len().is_multiple_of(4) {
            parts[1].push('=');
        }
        assert_eq!(
            read_claims(&parts.join(".")).unwrap().cell,
            "use1-a.cells.example.com"
        );
    }

    #[test]
    fn refuses_what_is_not_a_usable_token() {
        let not_jwt = ["", "a.b", "a.b.c.d", "x.!!!.y"];
        for t in not_jwt {
            assert!(read_claims(t).is_err(), "{t:?}");
        }
        assert!(matches!(
            read_claims(&"a".repeat(MAX_TOKEN_LEN + 1)),
            Err(ClaimsError::NotJwt(_))
        ));
        let base = || serde_json::json!({"tenant": "acme", "cell": "a.example", "iat": 10, "exp": 20, "map_version": "v"});
        assert!(read_claims(&token_with(base())).is_ok());
        for missing in ["tenant", "cell", "iat", "exp", "map_version"] {
            let mut p = base();
            p.as_object_mut().unwrap().remove(missing);
            assert!(
                matches!(read_claims(&token_with(p)), Err(ClaimsError::Payload(_))),
                "{missing}"
            );
        }
        // A cell claim that would inject into a URL, a tenant with dots,
        // no lifetime: refused.
        for (claim, value) in [
            ("cell", serde_json::json!("evil.example/path?x=")),
            ("cell", serde_json::json!("a..b")),
            ("cell", serde_json::json!("")),
            ("cell", serde_json::json!("user@host")),
            ("tenant", serde_json::json!("a.b")),
            ("exp", serde_json::json!(10)),
        ] {
            let mut p = base();
            p[claim] = value;
            assert!(
                matches!(
                    read_claims(&token_with(p)),
                    Err(ClaimsError::Invalid { .. })
                ),
                "{claim}"
            );
        }
    }

    #[test]
    fn wrong_cell_round_trips_over_http() {
        let w = WrongCell::new("B.cells.example.com.", "a.cells.example.com");
        assert_eq!(w.expected, "b.cells.example.com");
        assert_eq!(w.got, "a.cells.example.com");
        let body = w.http_body();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "wrong_cell");
        assert_eq!(v["error"]["expected"], "b.cells.example.com");
        assert_eq!(v["error"]["got"], "a.cells.example.com");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("new token")
        );
        assert_eq!(WrongCell::from_http(421, &body), Some(w));
        // Only 421 with the code is the signal.
        assert_eq!(WrongCell::from_http(401, &body), None);
        let other = br#"{"error":{"code":"other","message":"","expected":"","got":""}}"#;
        assert_eq!(WrongCell::from_http(421, other), None);
        assert_eq!(WrongCell::from_http(421, b"Misdirected Request"), None);
    }

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

    #[test]
    fn same_endpoint_compares_names_then_address_sets() {
        let l = |name: &str, addrs: &[&str]| Lookup {
            canonical: name.into(),
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            ttl: Duration::from_secs(30),
        };
        let cell = l("a.cells.example", &["10.0.0.1", "10.0.0.2"]);
        assert!(l("acme.cells.example", &["10.0.0.2", "10.0.0.1"]).same_endpoint(&cell));
        assert!(!l("acme.cells.example", &["10.0.0.1"]).same_endpoint(&cell));
        assert!(!l("acme.cells.example", &["10.0.0.3"]).same_endpoint(&cell));
        // Through a CNAME, the canonical name is the cell's.
        assert!(l("a.cells.example", &["192.0.2.1"]).same_endpoint(&cell));
        assert!(!l("x", &[]).same_endpoint(&l("y", &[])));
    }

    // --- Resolver, against a scripted DNS server on loopback. ---

    use hickory_proto::rr::Record;
    use hickory_proto::rr::rdata::{A, AAAA, CNAME};

    /// What the scripted server does with a query.
    type Script = std::sync::Arc<dyn Fn(&Message, bool) -> Vec<Vec<u8>> + Send + Sync>;

    /// Serves `script` on UDP and TCP at one loopback port. The script
    /// gets the query and whether it came over TCP, and returns the
    /// datagrams (or the one TCP message) to send back.
    async fn scripted(script: Script) -> SocketAddr {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        let tcp = tokio::net::TcpListener::bind(addr).await.unwrap();
        let s = script.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            loop {
                let Ok((n, from)) = udp.recv_from(&mut buf).await else {
                    return;
                };
                let q = Message::from_vec(&buf[..n]).unwrap();
                for out in s(&q, false) {
                    let _ = udp.send_to(&out, from).await;
                }
            }
        });
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            while let Ok((mut c, _)) = tcp.accept().await {
                let mut len = [0u8; 2];
                c.read_exact(&mut len).await.unwrap();
                let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
                c.read_exact(&mut buf).await.unwrap();
                let q = Message::from_vec(&buf).unwrap();
                for out in script(&q, true) {
                    let mut framed = (out.len() as u16).to_be_bytes().to_vec();
                    framed.extend_from_slice(&out);
                    c.write_all(&framed).await.unwrap();
                }
            }
        });
        addr
    }

    fn reply(q: &Message, answers: Vec<Record>) -> Message {
        let mut m = Message::response(q.metadata.id, OpCode::Query);
        m.add_queries(q.queries.clone());
        m.metadata.authoritative = true;
        m.add_answers(answers);
        m
    }

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn resolver(addr: SocketAddr) -> Resolver {
        Resolver::new(addr)
            .with_timeout(Duration::from_millis(300))
            .with_tries(2)
    }

    #[tokio::test]
    async fn resolves_a_and_aaaa_through_cnames() {
        let addr = scripted(std::sync::Arc::new(|q: &Message, _| {
            let qn = &q.queries[0].name;
            let t = q.queries[0].query_type;
            let mut answers = vec![];
            if *qn == name("acme.cells.test.") {
                answers.push(Record::from_rdata(
                    qn.clone(),
                    30,
                    RData::CNAME(CNAME(name("cell-1.lb.test."))),
                ));
                if t == RecordType::A {
                    answers.push(Record::from_rdata(
                        name("cell-1.lb.test."),
                        20,
                        RData::A(A::new(10, 0, 0, 1)),
                    ));
                } else {
                    answers.push(Record::from_rdata(
                        name("cell-1.lb.test."),
                        60,
                        RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
                    ));
                }
            }
            vec![reply(q, answers).to_vec().unwrap()]
        }))
        .await;
        let l = resolver(addr).lookup("ACME.cells.test").await.unwrap();
        assert_eq!(l.canonical, "cell-1.lb.test");
        assert_eq!(
            l.addrs,
            vec![
                "10.0.0.1".parse::<IpAddr>().unwrap(),
                "2001:db8::1".parse().unwrap()
            ]
        );
        assert_eq!(l.ttl, Duration::from_secs(20));
        assert!(matches!(
            resolver(addr).lookup("nothing.cells.test").await,
            Err(ResolveError::NoAddress(n)) if n == "nothing.cells.test"
        ));
    }

    #[tokio::test]
    async fn asks_again_for_a_cname_target_left_unresolved() {
        // As cellns answers a tenant whose cell has an out-of-zone name.
        let addr = scripted(std::sync::Arc::new(|q: &Message, _| {
            let qn = &q.queries[0].name;
            let answers = if *qn == name("acme.cells.test.") {
                vec![Record::from_rdata(
                    qn.clone(),
                    30,
                    RData::CNAME(CNAME(name("far.example."))),
                )]
            } else if *qn == name("far.example.") && q.queries[0].query_type == RecordType::A {
                vec![Record::from_rdata(
                    qn.clone(),
                    300,
                    RData::A(A::new(192, 0, 2, 7)),
                )]
            } else {
                vec![]
            };
            vec![reply(q, answers).to_vec().unwrap()]
        }))
        .await;
        let l = resolver(addr).lookup("acme.cells.test.").await.unwrap();
        assert_eq!(l.canonical, "far.example");
        assert_eq!(l.addrs, vec!["192.0.2.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(l.ttl, Duration::from_secs(30));
    }

    #[tokio::test]
    async fn ignores_mismatched_answers_and_falls_back_to_tcp() {
        let addr = scripted(std::sync::Arc::new(|q: &Message, tcp| {
            let qn = q.queries[0].name.clone();
            let good = match q.queries[0].query_type {
                RecordType::A => vec![Record::from_rdata(
                    qn.clone(),
                    30,
                    RData::A(A::new(10, 9, 9, 9)),
                )],
                _ => vec![],
            };
            if tcp {
                return vec![reply(q, good).to_vec().unwrap()];
            }
            // Over UDP: first a reply with the wrong id, then one for
            // another name (both must be ignored), then a truncated one.
            let mut wrong_id = reply(q, good.clone());
            wrong_id.metadata.id = q.metadata.id.wrapping_add(1);
            let mut wrong_q = reply(q, good);
            wrong_q.queries[0].name = name("other.test.");
            let mut tc = reply(q, vec![]);
            tc.metadata.truncation = true;
            vec![
                wrong_id.to_vec().unwrap(),
                wrong_q.to_vec().unwrap(),
                b"garbage".to_vec(),
                tc.to_vec().unwrap(),
            ]
        }))
        .await;
        let l = resolver(addr).lookup("x.test").await.unwrap();
        assert_eq!(l.addrs, vec!["10.9.9.9".parse::<IpAddr>().unwrap()]);
    }

    #[tokio::test]
    async fn reports_nxdomain_refused_and_silence() {
        let addr = scripted(std::sync::Arc::new(|q: &Message, _| {
            let qn = q.queries[0].name.to_ascii();
            let mut m = reply(q, vec![]);
            if qn.starts_with("gone.") {
                m.metadata.response_code = ResponseCode::NXDomain;
            } else if qn.starts_with("outside.") {
                m.metadata.response_code = ResponseCode::Refused;
            } else {
                return vec![];
            }
            vec![m.to_vec().unwrap()]
        }))
        .await;
        let r = resolver(addr);
        assert!(
            matches!(r.lookup("gone.test").await, Err(ResolveError::NxDomain(n)) if n == "gone.test")
        );
        assert!(matches!(
            r.lookup("outside.test").await,
            Err(ResolveError::Rcode {
                rcode: ResponseCode::Refused,
                ..
            })
        ));
        assert!(matches!(
            r.lookup("silent.test").await,
            Err(ResolveError::Timeout { tries: 2, .. })
        ));
        assert!(matches!(
            r.lookup("bad name with spaces..").await,
            Err(ResolveError::InvalidName { .. })
        ));
    }
}
