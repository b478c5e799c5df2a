//! The one DNS client of the tests: queries built with hickory-proto, sent
//! over UDP (once: a lost datagram fails the test instead of being sent
//! again, so nothing is ever counted twice) or TCP (RFC 1035 §4.2.2 framing,
//! several queries per connection), and responses read as whole messages,
//! as a table row ([`Seen`]) or as what matters to routing ([`Answer`]).
//! Also raw messages the usual clients will not send, and `dig`.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::EXCHANGE;

/// A query message: one question, RD clear, EDNS with `payload` if given.
pub fn query(id: u16, name: &str, qtype: RecordType, payload: Option<u16>) -> Message {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(self::name(name), qtype));
    if let Some(size) = payload {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m
}

/// `Name` from text (case kept).
pub fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap_or_else(|e| panic!("bad name {s}: {e}"))
}

/// Encodes a message.
pub fn wire(m: &Message) -> Vec<u8> {
    m.to_vec().unwrap_or_else(|e| panic!("encode {m:?}: {e}"))
}

/// Decodes a response.
pub fn decode(bytes: &[u8]) -> Message {
    Message::from_vec(bytes).unwrap_or_else(|e| panic!("undecodable response ({e}): {bytes:02x?}"))
}

/// A raw header: `id`, RD set, the given section counts.
pub fn raw_header(id: u16, counts: [u16; 4]) -> Vec<u8> {
    let mut h = id.to_be_bytes().to_vec();
    h.extend([0x01, 0x00]);
    for c in counts {
        h.extend(c.to_be_bytes());
    }
    h
}

/// A header promising one question, followed by a cut-off name: the header
/// decodes, the message does not.
pub fn undecodable(id: u16) -> Vec<u8> {
    let mut m = raw_header(id, [1, 0, 0, 0]);
    m.extend_from_slice(&[5, b'a', b'c']);
    m
}

/// The rcode (with the EDNS extension bits) of a response.
pub fn rcode_of(resp: &[u8]) -> u16 {
    match Message::from_vec(resp) {
        Ok(m) => u16::from(m.metadata.response_code),
        // A bare header (FORMERR) still has its 4-bit rcode.
        Err(_) if resp.len() >= 12 => u16::from(resp[3] & 0x0F),
        Err(e) => panic!("undecodable response ({e}): {resp:?}"),
    }
}

/// The loopback address of `server`'s family, port 0: where a client binds.
fn local_for(server: SocketAddr) -> SocketAddr {
    match server {
        SocketAddr::V4(_) => "127.0.0.1:0".parse().expect("address"),
        SocketAddr::V6(_) => "[::1]:0".parse().expect("address"),
    }
}

/// A fresh query ID (distinct across the test process, so a late reply to
/// an earlier query is never taken for the current one).
pub fn next_id() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0x1000);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A UDP socket connected to one server.
#[derive(Debug)]
pub struct Udp {
    sock: UdpSocket,
}

impl Udp {
    /// A client of `server`, bound to loopback.
    pub fn new(server: SocketAddr) -> Self {
        Self::with(
            UdpSocket::bind(local_for(server)).expect("bind UDP"),
            server,
        )
    }

    /// A client of `server` from the loopback address `src` (another
    /// client network: 127.0.2.1 is not in 127.0.1.0/24).
    pub fn new_from(src: &str, server: SocketAddr) -> Self {
        let sock = UdpSocket::bind((src, 0)).unwrap_or_else(|e| panic!("bind UDP on {src}: {e}"));
        Self::with(sock, server)
    }

    fn with(sock: UdpSocket, server: SocketAddr) -> Self {
        sock.connect(server).expect("connect UDP");
        // Only paces the look at the deadline in `recv_id`.
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        Self { sock }
    }

    /// Sends one datagram.
    pub fn send(&self, msg: &[u8]) {
        self.sock.send(msg).expect("send UDP");
    }

    /// Receives datagrams until one carries `id` or `within` passes.
    pub fn recv_id(&self, id: [u8; 2], within: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + within;
        let mut buf = vec![0u8; 65535];
        while Instant::now() < deadline {
            match self.sock.recv(&mut buf) {
                Ok(n) if n >= 2 && buf[..2] == id => return Some(buf[..n].to_vec()),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                // ICMP port unreachable: nobody listens (yet).
                Err(_) => return None,
            }
        }
        None
    }

    /// Receives the next datagram, whatever it is, within [`EXCHANGE`].
    pub fn recv_any(&self) -> Option<Vec<u8>> {
        let deadline = Instant::now() + EXCHANGE;
        let mut buf = vec![0u8; 65535];
        while Instant::now() < deadline {
            if let Ok(n) = self.sock.recv(&mut buf) {
                return Some(buf[..n].to_vec());
            }
        }
        None
    }

    /// Sends `msg` once and returns the response with its ID.
    pub fn exchange(&self, msg: &[u8]) -> Vec<u8> {
        self.send(msg);
        self.recv_id([msg[0], msg[1]], EXCHANGE)
            .unwrap_or_else(|| panic!("no UDP response within {EXCHANGE:?} to {msg:02x?}"))
    }

    /// Asks `name`/`qtype` (no EDNS) and reads the answer.
    pub fn ask(&self, name: &str, qtype: RecordType) -> Result<Answer, String> {
        self.ask_within(name, qtype, EXCHANGE)
    }

    /// [`Udp::ask`] with a deadline of `within`.
    pub fn ask_within(
        &self,
        name: &str,
        qtype: RecordType,
        within: Duration,
    ) -> Result<Answer, String> {
        let id = next_id();
        self.sock
            .send(&wire(&query(id, name, qtype, None)))
            .map_err(|e| format!("send: {e}"))?;
        let bytes = self
            .recv_id(id.to_be_bytes(), within)
            .ok_or_else(|| format!("no UDP answer to {name} {qtype} within {within:?}"))?;
        Message::from_vec(&bytes)
            .map(|m| Answer::of(&m))
            .map_err(|e| format!("undecodable response: {e}"))
    }
}

/// One TCP connection to a server (RFC 7766: several queries on it).
#[derive(Debug)]
pub struct Tcp {
    stream: TcpStream,
}

impl Tcp {
    /// Connects to `server`.
    pub fn connect(server: SocketAddr) -> Self {
        Self::from_stream(TcpStream::connect_timeout(&server, EXCHANGE).expect("connect TCP"))
    }

    /// A client on a connection made elsewhere (with socket options set).
    pub fn from_stream(stream: TcpStream) -> Self {
        stream.set_read_timeout(Some(EXCHANGE)).expect("timeout");
        stream.set_write_timeout(Some(EXCHANGE)).expect("timeout");
        let _ = stream.set_nodelay(true);
        Self { stream }
    }

    /// The connection, for writing raw bytes.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Writes one length-prefixed message.
    pub fn send(&mut self, msg: &[u8]) {
        let len = u16::try_from(msg.len()).expect("message fits a TCP frame");
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(msg);
        self.stream.write_all(&framed).expect("write TCP");
    }

    /// Reads one length-prefixed message; `None` when the server closed
    /// the connection (EOF or reset) before a whole message arrived. A read
    /// timeout fails the test.
    pub fn recv(&mut self) -> Option<Vec<u8>> {
        let mut len = [0u8; 2];
        match self.stream.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if is_closed(&e) => return None,
            Err(e) => panic!("reading a TCP length: {e}"),
        }
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        match self.stream.read_exact(&mut msg) {
            Ok(()) => Some(msg),
            Err(e) if is_closed(&e) => None,
            Err(e) => panic!("reading a TCP message: {e}"),
        }
    }

    /// Sends `msg` and reads the response.
    pub fn exchange(&mut self, msg: &[u8]) -> Vec<u8> {
        self.send(msg);
        self.recv().expect("a TCP response")
    }

    /// Asks `name`/`qtype` (no EDNS) and reads the answer.
    pub fn ask(&mut self, name: &str, qtype: RecordType) -> Result<Answer, String> {
        let id = next_id();
        let q = wire(&query(id, name, qtype, None));
        let mut framed = u16::try_from(q.len()).expect("fits").to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        self.stream
            .write_all(&framed)
            .map_err(|e| format!("TCP send: {e}"))?;
        let mut len = [0u8; 2];
        self.stream
            .read_exact(&mut len)
            .map_err(|e| format!("TCP recv length: {e}"))?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        self.stream
            .read_exact(&mut buf)
            .map_err(|e| format!("TCP recv: {e}"))?;
        let m = Message::from_vec(&buf).map_err(|e| format!("undecodable response: {e}"))?;
        if m.metadata.id != id {
            return Err(format!("TCP answer with id {} for {id}", m.metadata.id));
        }
        Ok(Answer::of(&m))
    }
}

fn is_closed(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    )
}

/// UDP or TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
}

/// Both transports.
pub const TRANSPORTS: [Transport; 2] = [Transport::Udp, Transport::Tcp];

/// Sends `msg` over UDP (a new socket) and returns the response.
pub fn udp_exchange(server: SocketAddr, msg: &[u8]) -> Vec<u8> {
    Udp::new(server).exchange(msg)
}

/// Sends `msg` over a new TCP connection and returns the response.
pub fn tcp_exchange(server: SocketAddr, msg: &[u8]) -> Vec<u8> {
    Tcp::connect(server).exchange(msg)
}

/// Sends `query` over `transport` and decodes the response.
pub fn exchange(server: SocketAddr, transport: Transport, query: &Message) -> Message {
    let bytes = wire(query);
    decode(&match transport {
        Transport::Udp => udp_exchange(server, &bytes),
        Transport::Tcp => tcp_exchange(server, &bytes),
    })
}

/// One UDP query (EDNS 1232) with a short deadline; `None` when nothing
/// decodable with its ID comes back, e.g. the server is still starting.
pub fn try_query(server: SocketAddr, name: &str, qtype: RecordType) -> Option<Message> {
    let udp = Udp::new(server);
    let id = next_id();
    udp.sock
        .send(&wire(&query(id, name, qtype, Some(1232))))
        .ok()?;
    let bytes = udp.recv_id(id.to_be_bytes(), Duration::from_millis(500))?;
    Message::from_vec(&bytes).ok()
}

/// The SOA serial `server` answers for `zone`, if it answers.
pub fn serial(server: SocketAddr, zone: &str) -> Option<u32> {
    let m = try_query(server, zone, RecordType::SOA)?;
    if m.metadata.response_code != ResponseCode::NoError {
        return None;
    }
    Answer::of(&m).serial
}

/// What matters of a response for routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Response code.
    pub rcode: ResponseCode,
    /// AA flag.
    pub authoritative: bool,
    /// Addresses in the answer section.
    pub addrs: BTreeSet<IpAddr>,
    /// SOA serial in the answer section, if any.
    pub serial: Option<u32>,
}

impl Answer {
    /// The answer of a response.
    pub fn of(m: &Message) -> Self {
        let mut addrs = BTreeSet::new();
        let mut serial = None;
        for r in &m.answers {
            match &r.data {
                RData::A(a) => {
                    addrs.insert(IpAddr::V4(a.0));
                }
                RData::AAAA(a) => {
                    addrs.insert(IpAddr::V6(a.0));
                }
                RData::SOA(soa) => serial = Some(soa.serial),
                _ => {}
            }
        }
        Self {
            rcode: m.metadata.response_code,
            authoritative: m.metadata.authoritative,
            addrs,
            serial,
        }
    }
}

/// Polls (UDP) until `name` A is answered with `want`, at most `within`;
/// returns how long it took, or the last answer seen.
pub fn wait_for_answer(
    server: SocketAddr,
    name: &str,
    want: &BTreeSet<IpAddr>,
    within: Duration,
) -> Result<Duration, String> {
    let start = Instant::now();
    let udp = Udp::new(server);
    let mut last = String::from("no answer");
    let ok = super::wait_until(within, || {
        match udp.ask_within(name, RecordType::A, Duration::from_millis(500)) {
            Ok(a) if &a.addrs == want => true,
            Ok(a) => {
                last = format!("{a:?}");
                false
            }
            Err(e) => {
                last = e;
                false
            }
        }
    });
    if ok { Ok(start.elapsed()) } else { Err(last) }
}

/// A response as a reader compares it: flags and the three sections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// RCODE (with the EDNS extension).
    pub rcode: ResponseCode,
    /// AA flag.
    pub aa: bool,
    /// RA flag.
    pub ra: bool,
    /// TC flag.
    pub tc: bool,
    /// Answer section, normalised (see [`norm`]).
    pub answer: Vec<String>,
    /// Authority section.
    pub authority: Vec<String>,
    /// Additional section, without the OPT pseudo-record.
    pub additional: Vec<String>,
}

impl Seen {
    /// The same with every section sorted (order within a section carries
    /// no meaning between two servers).
    pub fn sorted(mut self) -> Self {
        self.answer.sort();
        self.authority.sort();
        self.additional.sort();
        self
    }
}

/// One record as `owner ttl TYPE rdata`, owner lowercased, single spaces,
/// the SOA serial replaced by `SERIAL` (it is time-based).
pub fn norm(owner: &str, ttl: u32, rtype: &str, rdata: &str) -> String {
    let mut fields: Vec<&str> = rdata.split_whitespace().collect();
    if rtype == "SOA" && fields.len() == 7 {
        fields[2] = "SERIAL";
    }
    format!(
        "{} {ttl} {rtype} {}",
        owner.to_ascii_lowercase(),
        fields.join(" ")
    )
}

/// A hickory record, normalised.
pub fn norm_record(r: &Record) -> String {
    norm(
        &r.name.to_ascii(),
        r.ttl,
        &r.record_type().to_string(),
        &r.data.to_string(),
    )
}

/// A hickory message as [`Seen`].
pub fn seen(m: &Message) -> Seen {
    let section = |rs: &[Record]| rs.iter().map(norm_record).collect::<Vec<_>>();
    Seen {
        rcode: m.metadata.response_code,
        aa: m.metadata.authoritative,
        ra: m.metadata.recursion_available,
        tc: m.metadata.truncation,
        answer: section(&m.answers),
        authority: section(&m.authorities),
        additional: section(&m.additionals),
    }
}

/// Runs ISC dig against `server` (`+norec +time=5 +tries=1`, then `opts`)
/// for `qname`/`qtype`; its standard output. Fails the test if dig does.
pub fn dig(server: SocketAddr, opts: &[&str], qname: &str, qtype: &str) -> String {
    let mut args = vec![
        format!("@{}", server.ip()),
        "-p".into(),
        server.port().to_string(),
        "+norec".into(),
        "+time=5".into(),
        "+tries=1".into(),
    ];
    args.extend(opts.iter().map(|o| (*o).to_owned()));
    args.extend([qname.to_owned(), qtype.to_owned()]);
    let out = std::process::Command::new(super::require_tool("dig"))
        .args(&args)
        .output()
        .expect("run dig");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "dig {args:?} failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The sorted data lines `dig +short` prints for `name` A.
pub fn dig_short(server: SocketAddr, name: &str) -> Vec<String> {
    let mut lines: Vec<String> = dig(server, &["+short"], name, "A")
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty() && !l.starts_with(';'))
        .collect();
    lines.sort();
    lines
}
