//! DNS resolution of a tenant or cell hostname from one given server:
//! [`Resolver`] (A and AAAA over UDP, TCP when truncated, CNAMEs followed).
//! Only `hickory-proto`'s message codec is used; the I/O is plain tokio.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use rand::Rng as _;

use crate::host::canonical_host;

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
                    canonical: canonical_host(&target.to_ascii()),
                    addrs,
                    ttl: Duration::from_secs(u64::from(ttl)),
                });
            }
            if target == qname {
                return Err(ResolveError::NoAddress(canonical_host(&qname.to_ascii())));
            }
            // An alias whose target the server did not resolve (cellns
            // answers an out-of-zone cell with a bare CNAME): ask for it.
            qname = target;
        }
        Err(ResolveError::CnameChain(canonical_host(name)))
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
                name: canonical_host(&name.to_ascii()),
                server: self.server,
                tries: self.tries,
            });
        };
        if m.metadata.truncation {
            m = self.tcp(&wire, id, name, rtype).await?;
        }
        match m.metadata.response_code {
            ResponseCode::NoError => Ok(m),
            ResponseCode::NXDomain => Err(ResolveError::NxDomain(canonical_host(&name.to_ascii()))),
            rcode => Err(ResolveError::Rcode {
                name: canonical_host(&name.to_ascii()),
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
            name: canonical_host(&name.to_ascii()),
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

#[cfg(test)]
mod tests {
    use super::*;

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
