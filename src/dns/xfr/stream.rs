//! Zone transfers over TCP: the whole zone, streamed.
//!
//! # What is transferred
//!
//! The zone exactly as cellns answers it from one zone version: SOA, apex NS,
//! glue, the A/AAAA of in-zone cell hostnames, every listed tenant with the
//! records of the cell that serves it now (its failover cell when its own
//! is down; a CNAME for a cell known only by an out-of-zone hostname), and
//! the SOA again. Tenants placed by hashing cannot be written as records: a
//! secondary answers them NXDOMAIN.
//!
//! # How
//!
//! [`serve`] writes the messages straight to the connection as it encodes
//! them (about 16 KiB each, with [`Writer`] over [`crate::dns::wire`]), so
//! a transfer holds one message in memory whatever the zone size, the
//! secondary's reading paces it, and it may take as long as the secondary
//! needs. (hickory-server's TCP path cannot do this: it writes only after
//! the handler returns, so a transfer would be queued whole in memory, and
//! its idle timer, reset only by incoming messages, would cut transfers
//! that take longer to write; see `dns::tcp`.) At most
//! [`super::MAX_CONCURRENT`] transfers run at once; each pins the zone
//! version it started from, so it is a consistent one.
//!
//! IXFR (RFC 1995) is answered from the [`super::journal`]: the differences
//! from the client's serial to ours as one sequence (several versions
//! condensed), our SOA alone when the client already has it, or the whole
//! zone in AXFR form when the journal does not reach back to its serial
//! (§4). Journal records are copied as they were recorded (the same bytes
//! an AXFR of either version carries), their owner names compressed
//! against the origin. [`ixfr_datagram`] answers IXFR over UDP the same way
//! when the differences fit in one datagram.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable as _, BinEncoder, NameEncoding};
use hickory_server::server::Request;
use tokio::io::{AsyncWrite, AsyncWriteExt as _};

use super::journal::{Delta, Lookup, condense};
use super::{Decision, MAX_CONCURRENT, Transfers};
use crate::dns::prepared::{Live, Store};
use crate::dns::tsig::ResponseSigner;
use crate::dns::wire::{self, Section};
use crate::map::Snapshot;
use crate::metrics::{self, XfrKind};

/// Size at which a transfer message is closed and the next begun. Any
/// split is valid (RFC 5936 §2.2); 16 KiB amortises headers and TSIG
/// while keeping every compression pointer target below 0x3FFF.
const MESSAGE_TARGET: usize = 16 * 1024;
/// A message is closed before a record that could carry it past the 64 KiB
/// wire limit (only a cell with thousands of addresses gets near it).
const MESSAGE_HARD: usize = 60 * 1024;
/// How long a transfer waits for a free slot before SERVFAIL; less than
/// the I/O timeouts of secondaries (Knot: 5 s), so they see an answer and
/// retry rather than time out.
const SLOT_WAIT: Duration = Duration::from_secs(4);
/// How long one message may wait for the secondary to take it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes before a message on TCP: its length (RFC 1035 §4.2.2).
const PREFIX: usize = 2;

/// Serves the AXFR or IXFR `request` (one question, opcode QUERY; see
/// [`super::is_transfer`]) on a TCP connection, as `transfers` allows:
/// the refusal, or the whole transfer, written to `out` message by
/// message. An error is the connection's: the caller closes it.
pub(in crate::dns) async fn serve<W: AsyncWrite + Unpin>(
    transfers: &Transfers,
    store: &Store,
    request: &Request,
    out: &mut W,
) -> io::Result<()> {
    // One zone version for the whole transfer: a consistent one.
    let live = store.load_full();
    let snap = live.view.map();
    let serial = live.view.serial();
    let src = request.src();
    let qtype = request
        .queries
        .queries()
        .first()
        .map_or(RecordType::AXFR, |q| q.query_type());
    let decision = transfers.decide(snap, request);
    let mut w = Writer::new(request, snap);
    let signer = match decision {
        Decision::Deny { rcode, signer, why } => {
            tracing::info!(target: crate::telemetry::OUTSIDER, %src, %qtype, %rcode, why, "zone transfer refused");
            metrics::xfr_refused();
            w.signer = signer;
            w.begin(rcode);
            return w.flush(out).await;
        }
        Decision::Allow(signer) => signer,
    };
    w.signer = signer;
    let mut kind = if qtype == RecordType::IXFR {
        XfrKind::IxfrFull
    } else {
        XfrKind::Axfr
    };
    let mut chain = None;
    if qtype == RecordType::IXFR
        && let Some(theirs) = client_serial(request, &snap.zone.origin_lower)
    {
        if serial_at_least(theirs, serial) {
            // RFC 1995 §2: up to date, the answer is our SOA alone.
            tracing::debug!(%src, serial, "IXFR: the client is up to date");
            let started = Instant::now();
            w.begin(ResponseCode::NoError);
            w.record(&live.answers.soa);
            let r = w.flush(out).await;
            metrics::xfr(XfrKind::Ixfr, w.bytes, started.elapsed(), r.is_ok());
            return r;
        }
        match transfers.journal.lookup(theirs, serial) {
            Lookup::Deltas(c) => {
                kind = XfrKind::Ixfr;
                chain = Some((theirs, c));
            }
            Lookup::Full => tracing::info!(
                %src,
                client_serial = theirs,
                serial,
                "IXFR: the journal does not reach back to the client's serial; sending the whole zone"
            ),
        }
    }
    let _slot = match tokio::time::timeout(SLOT_WAIT, transfers.slots.acquire()).await {
        Ok(Ok(permit)) => permit,
        _ => {
            tracing::warn!(
                %src,
                limit = MAX_CONCURRENT,
                "zone transfer refused: too many transfers in progress (SERVFAIL; the secondary retries)"
            );
            metrics::xfr_refused();
            w.begin(ResponseCode::ServFail);
            return w.flush(out).await;
        }
    };
    let started = Instant::now();
    let result = match &chain {
        Some((_, c)) => w.incremental(&live.answers.soa, c, out).await,
        None => w.transfer(&live, out).await,
    };
    let elapsed = started.elapsed();
    metrics::xfr(kind, w.bytes, elapsed, result.is_ok());
    let ms = elapsed.as_millis() as u64;
    let from = chain.as_ref().map(|(theirs, c)| (*theirs, c.len()));
    match &result {
        Ok(()) => tracing::info!(
            %src,
            %qtype,
            kind = kind.as_str(),
            serial,
            from_serial = from.map(|f| f.0),
            versions = from.map(|f| f.1),
            records = w.records,
            messages = w.messages,
            bytes = w.bytes,
            ms,
            tsig = w.signer.is_some(),
            "zone transfer done"
        ),
        Err(e) => tracing::warn!(
            %src,
            %qtype,
            kind = kind.as_str(),
            serial,
            records = w.records,
            ms,
            error = %e,
            "zone transfer aborted"
        ),
    }
    result
}

/// IXFR over UDP (RFC 1995 §2): when `request` is an allowed IXFR from a
/// serial the journal holds, and the differences fit in one message of
/// the client's UDP size (512 bytes without EDNS, at most
/// [`wire::MAX_UDP_PAYLOAD`]), that message. `None` otherwise: the answer
/// is then the SOA alone ([`super::single`]), and a client that is behind
/// retries over TCP.
pub(in crate::dns) fn ixfr_datagram(
    transfers: &Transfers,
    store: &Store,
    request: &Request,
) -> Option<Vec<u8>> {
    let q = request.queries.queries().first()?;
    if q.query_type() != RecordType::IXFR {
        return None;
    }
    let live = store.load_full();
    let snap = live.view.map();
    let serial = live.view.serial();
    let theirs = client_serial(request, &snap.zone.origin_lower)?;
    if serial_at_least(theirs, serial) {
        return None;
    }
    let Decision::Allow(signer) = transfers.decide(snap, request) else {
        return None;
    };
    let Lookup::Deltas(chain) = transfers.journal.lookup(theirs, serial) else {
        return None;
    };
    let max = usize::from(
        request
            .edns
            .as_ref()
            .map_or(512, |e| e.max_payload().clamp(512, wire::MAX_UDP_PAYLOAD)),
    );
    let started = Instant::now();
    let mut w = Writer::new(request, snap);
    w.signer = signer;
    let msg = w.incremental_datagram(&live.answers.soa, &chain, max)?;
    metrics::xfr(XfrKind::Ixfr, msg.len(), started.elapsed(), true);
    tracing::debug!(
        src = %request.src(),
        from_serial = theirs,
        serial,
        bytes = msg.len(),
        "IXFR over UDP: the differences in one datagram"
    );
    Some(msg)
}

/// Length of the uncompressed name at the start of `rr`.
fn wire_name_len(rr: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let len = usize::from(*rr.get(at)?);
        at += 1 + len;
        if len == 0 {
            return Some(at);
        }
    }
}

/// The SOA serial the IXFR client has (its SOA in the authority section).
fn client_serial(request: &Request, origin: &LowerName) -> Option<u32> {
    request.authorities.iter().find_map(|r| match &r.data {
        RData::SOA(soa) if LowerName::new(&r.name) == *origin => Some(soa.serial),
        _ => None,
    })
}

/// `a >= b` in serial number arithmetic (RFC 1982).
fn serial_at_least(a: u32, b: u32) -> bool {
    a == b || (a.wrapping_sub(b) as i32) > 0
}

/// Encodes transfer messages into one reused buffer: the TCP length
/// prefix, the header, the question copied from the request, records, an
/// OPT when the request had one, and the TSIG record when signing.
///
/// Names in the zone are compressed against the origin, written once per
/// message; a tenant's second and later records point at its first owner
/// name. Names outside the zone are written whole.
struct Writer<'a> {
    buf: Vec<u8>,
    /// ID and the RD bit of the request.
    id: u16,
    rd: bool,
    question: &'a [u8],
    origin: &'a Name,
    origin_lower: &'a LowerName,
    /// Offset (in the message) of the origin's first label, once written.
    origin_at: Option<u16>,
    /// Offset of the owner name of the group being written.
    owner_at: Option<u16>,
    /// The origin in uncompressed wire form (to compress journal records).
    origin_wire: Vec<u8>,
    /// Offset and length of the owner of the last journal record written,
    /// and that owner (uncompressed).
    raw_owner: Option<(u16, usize)>,
    raw_owner_bytes: Vec<u8>,
    ancount: u16,
    /// The request's EDNS DO bit, when it had EDNS.
    edns_do: Option<bool>,
    signer: Option<ResponseSigner>,
    messages: usize,
    bytes: usize,
    records: usize,
}

impl<'a> Writer<'a> {
    fn new(request: &'a Request, snap: &'a Snapshot) -> Self {
        Self {
            buf: Vec::with_capacity(MESSAGE_TARGET + 4096),
            id: request.metadata.id,
            rd: request.metadata.recursion_desired,
            question: request.queries.as_bytes(),
            origin: &snap.zone.origin,
            origin_lower: &snap.zone.origin_lower,
            origin_at: None,
            owner_at: None,
            origin_wire: {
                let mut w = Vec::new();
                wire::put_name(&mut w, &snap.zone.origin);
                w
            },
            raw_owner: None,
            raw_owner_bytes: Vec::new(),
            ancount: 0,
            edns_do: request.edns.as_ref().map(|e| e.flags().dnssec_ok),
            signer: None,
            messages: 0,
            bytes: 0,
            records: 0,
        }
    }

    /// Starts a message with `rcode`.
    fn begin(&mut self, rcode: ResponseCode) {
        self.buf.clear();
        self.buf.extend_from_slice(&[0, 0]);
        // Opcode QUERY, AA on NOERROR (RFC 5936 §2.2.1), RD copied; the
        // counts are set as the message is closed.
        let header = wire::Header {
            id: self.id,
            opcode: 0,
            aa: rcode == ResponseCode::NoError,
            rd: self.rd,
            cd: false,
            rcode: u16::from(rcode) as u8,
            counts: [1, 0, 0, 0],
        };
        self.buf.extend_from_slice(&header.bytes());
        self.buf.extend_from_slice(self.question);
        self.origin_at = None;
        self.owner_at = None;
        self.raw_owner = None;
        self.ancount = 0;
    }

    /// Bytes of the message so far.
    fn len(&self) -> usize {
        self.buf.len() - PREFIX
    }

    /// Closes the message (counts, OPT, TSIG, length) and writes it.
    async fn flush<W: AsyncWrite + Unpin>(&mut self, out: &mut W) -> io::Result<()> {
        self.close()?;
        match tokio::time::timeout(WRITE_TIMEOUT, out.write_all(&self.buf)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the peer took no data for {WRITE_TIMEOUT:?}"),
                ));
            }
        }
        self.messages += 1;
        self.bytes += self.buf.len();
        Ok(())
    }

    /// Closes the message: counts, OPT, TSIG, length prefix.
    fn close(&mut self) -> io::Result<()> {
        wire::set_count(&mut self.buf[PREFIX..], Section::Answer, self.ancount);
        if let Some(dnssec_ok) = self.edns_do {
            self.buf
                .extend_from_slice(&wire::opt(wire::MAX_UDP_PAYLOAD, dnssec_ok));
            wire::set_count(&mut self.buf[PREFIX..], Section::Additional, 1);
        }
        if let Some(signer) = &mut self.signer {
            signer.append(&mut self.buf, PREFIX);
        }
        let len = u16::try_from(self.len())
            .map_err(|_| io::Error::other("transfer message over 64 KiB"))?;
        self.buf[..PREFIX].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }

    /// Flushes when the message has reached `limit` bytes.
    async fn room<W: AsyncWrite + Unpin>(&mut self, out: &mut W, limit: usize) -> io::Result<()> {
        if self.len() >= limit && self.ancount > 0 {
            self.flush(out).await?;
            self.begin(ResponseCode::NoError);
        }
        Ok(())
    }

    /// The whole zone: the module docs list what, in this order.
    async fn transfer<W: AsyncWrite + Unpin>(
        &mut self,
        live: &Live,
        out: &mut W,
    ) -> io::Result<()> {
        let (view, answers) = (&live.view, &live.answers);
        let snap = view.map();
        let zone = &snap.zone;
        self.begin(ResponseCode::NoError);
        self.record(&answers.soa);
        for r in answers.ns.iter().chain(&answers.glue) {
            self.room(out, MESSAGE_TARGET).await?;
            self.record(r);
        }
        // (Plain loops: a closure-built iterator held across an await trips
        // rustc's Send check for the spawned connection task.)
        for cell in &answers.cells {
            for r in cell.host_a.iter().chain(&cell.host_aaaa) {
                self.room(out, MESSAGE_TARGET).await?;
                self.record(r);
            }
        }
        for (tenant, assigned) in snap.tenants.iter() {
            self.room(out, MESSAGE_TARGET).await?;
            // As `route::lookup` answers a listed tenant: its cell's
            // serving cell (the failover when its own is down).
            // A planned move near: the cell assigned now, the short TTL.
            let (assigned, ttl) = match view.moving(tenant.as_bytes()) {
                Some((now, true)) => (now, zone.move_ttl),
                Some((now, false)) => (now, zone.ttl),
                None => (assigned, zone.ttl),
            };
            let records = answers.cell(view.serving(assigned));
            let (first, then): (&[RData], &[RData]) = match &records.cname {
                Some(cname) => (std::slice::from_ref(cname), &[]),
                None => (&records.a, &records.aaaa),
            };
            self.owner_at = None;
            for rd in first.iter().chain(then) {
                if self.len() >= MESSAGE_HARD {
                    self.room(out, MESSAGE_HARD).await?;
                }
                self.tenant_record(tenant.as_bytes(), ttl, rd);
            }
        }
        self.room(out, MESSAGE_TARGET).await?;
        self.record(&answers.soa);
        self.flush(out).await
    }

    /// The differences from the client's version to ours (RFC 1995 §4):
    /// our SOA, then one sequence (the client's SOA, what to remove, our
    /// SOA, what to add; several deltas condensed into one), and our SOA
    /// again.
    async fn incremental<W: AsyncWrite + Unpin>(
        &mut self,
        soa: &Record,
        chain: &[Arc<Delta>],
        out: &mut W,
    ) -> io::Result<()> {
        let (Some(first), Some(last)) = (chain.first(), chain.last()) else {
            return Err(io::Error::other("empty IXFR chain"));
        };
        let (removed, added) = condense(chain);
        self.begin(ResponseCode::NoError);
        self.record(soa);
        self.room(out, MESSAGE_TARGET).await?;
        self.record(&first.from_soa);
        for r in removed {
            self.room(out, MESSAGE_TARGET).await?;
            self.raw(r);
        }
        self.room(out, MESSAGE_TARGET).await?;
        self.record(&last.to_soa);
        for r in added {
            self.room(out, MESSAGE_TARGET).await?;
            self.raw(r);
        }
        self.room(out, MESSAGE_TARGET).await?;
        self.record(soa);
        self.flush(out).await
    }

    /// The same as [`Writer::incremental`], in one message of at most
    /// `max` bytes (IXFR over UDP), closed; `None` when it does not fit.
    fn incremental_datagram(
        &mut self,
        soa: &Record,
        chain: &[Arc<Delta>],
        max: usize,
    ) -> Option<Vec<u8>> {
        let (first, last) = (chain.first()?, chain.last()?);
        let (removed, added) = condense(chain);
        // A cheap bound first: the records alone already too big.
        let raw: usize = removed.iter().chain(&added).map(|r| r.len()).sum();
        if raw > max {
            return None;
        }
        self.begin(ResponseCode::NoError);
        self.record(soa);
        self.record(&first.from_soa);
        for r in removed {
            self.raw(r);
        }
        self.record(&last.to_soa);
        for r in added {
            self.raw(r);
        }
        self.record(soa);
        self.close().ok()?;
        (self.len() <= max).then(|| self.buf[PREFIX..].to_vec())
    }

    /// Appends a record given in uncompressed wire form, its owner
    /// compressed: a pointer to the previous record's owner when it is the
    /// same, else its labels below the origin and a pointer to the origin.
    fn raw(&mut self, rr: &[u8]) {
        let owner_len = wire_name_len(rr).unwrap_or(0);
        let owner = &rr[..owner_len];
        match self.raw_owner {
            Some((at, len))
                if self.owner_at == Some(at)
                    && len == owner_len
                    && self.raw_owner_bytes == owner =>
            {
                wire::put_pointer(&mut self.buf, at);
            }
            _ => {
                let at = self.len();
                match owner.strip_suffix(&self.origin_wire[..]) {
                    Some(below) if owner_len > 0 => {
                        self.buf.extend_from_slice(below);
                        self.origin();
                    }
                    _ => self.buf.extend_from_slice(owner),
                }
                self.owner_at = u16::try_from(at).ok().filter(|&a| a < 0x3FFF);
                self.raw_owner = self.owner_at.map(|a| (a, owner_len));
                self.raw_owner_bytes.clear();
                self.raw_owner_bytes.extend_from_slice(owner);
            }
        }
        self.buf.extend_from_slice(&rr[owner_len..]);
        self.ancount += 1;
        self.records += 1;
    }

    /// Appends a record with its own owner name.
    fn record(&mut self, r: &Record) {
        self.raw_owner = None;
        self.name(&r.name);
        self.rr(r.record_type(), r.ttl, &r.data);
    }

    /// Appends a tenant's record: owner `label.<origin>`, or a pointer to
    /// it after the tenant's first record in this message.
    fn tenant_record(&mut self, label: &[u8], ttl: u32, rdata: &RData) {
        match self.owner_at {
            Some(at) => wire::put_pointer(&mut self.buf, at),
            None => {
                let at = self.len();
                wire::put_label(&mut self.buf, label);
                self.origin();
                self.owner_at = u16::try_from(at).ok().filter(|&a| a < 0x3FFF);
            }
        }
        self.rr(rdata.record_type(), ttl, rdata);
    }

    /// Type, class IN, TTL and RDATA after an owner name.
    fn rr(&mut self, rtype: RecordType, ttl: u32, rdata: &RData) {
        let rdlen_at = wire::begin_record(&mut self.buf, u16::from(rtype), wire::CLASS_IN, ttl);
        match rdata {
            RData::A(a) => self.buf.extend_from_slice(&a.0.octets()),
            RData::AAAA(a) => self.buf.extend_from_slice(&a.0.octets()),
            RData::CNAME(n) => self.name(&n.0),
            RData::NS(n) => self.name(&n.0),
            RData::SOA(soa) => {
                self.name(&soa.mname);
                self.name(&soa.rname);
                for v in [
                    soa.serial,
                    soa.refresh as u32,
                    soa.retry as u32,
                    soa.expire as u32,
                    soa.minimum,
                ] {
                    self.buf.extend_from_slice(&v.to_be_bytes());
                }
            }
            other => {
                // Zone versions hold only the types above; anything else is
                // written by hickory without name compression (RFC 3597).
                let mut tmp = Vec::new();
                let mut enc = BinEncoder::new(&mut tmp);
                let mut enc = enc.with_name_encoding(NameEncoding::Uncompressed);
                if other.emit(&mut enc).is_ok() {
                    drop(enc);
                    self.buf.extend_from_slice(&tmp);
                }
            }
        }
        wire::end_record(&mut self.buf, rdlen_at);
        self.ancount += 1;
        self.records += 1;
    }

    /// Appends `name`: its labels below the origin and a pointer to the
    /// origin when it is in the zone, else the whole name.
    fn name(&mut self, name: &Name) {
        if self.origin_lower.zone_of(&LowerName::new(name)) {
            let below = usize::from(name.num_labels() - self.origin.num_labels());
            for label in name.iter().take(below) {
                wire::put_label(&mut self.buf, label);
            }
            self.origin();
        } else {
            wire::put_name(&mut self.buf, name);
        }
    }

    /// Appends the origin: a pointer once it is in the message.
    fn origin(&mut self) {
        if let Some(at) = self.origin_at {
            return wire::put_pointer(&mut self.buf, at);
        }
        let at = self.len();
        wire::put_name(&mut self.buf, self.origin);
        self.origin_at = u16::try_from(at).ok().filter(|&a| a < 0x3FFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::prepared::store_of;
    use crate::dns::tsig::{self, Key};
    use crate::map::{Format, Source, load_example, load_str};
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::DNSClass;
    use hickory_server::net::xfer::Protocol;
    use std::net::SocketAddr;
    use std::sync::Arc;

    #[test]
    fn serial_arithmetic() {
        assert!(serial_at_least(5, 5));
        assert!(serial_at_least(6, 5));
        assert!(!serial_at_least(4, 5));
        // Wrapped: 1 is after u32::MAX.
        assert!(serial_at_least(1, u32::MAX));
        assert!(!serial_at_least(u32::MAX, 1));
    }

    fn axfr(qtype: RecordType, name: &str) -> Message {
        let mut m = Message::new(7, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
        m
    }

    fn request(m: &Message, src: &str) -> Request {
        Request::from_bytes(
            m.to_vec().expect("encode"),
            src.parse::<SocketAddr>().expect("addr"),
            Protocol::Tcp,
        )
        .expect("request")
    }

    /// Runs a TCP transfer into memory; the messages as sent.
    fn frames(t: &Transfers, store: &Store, req: &Request) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
            .block_on(serve(t, store, req, &mut out))
            .expect("transfer");
        let mut msgs = Vec::new();
        let mut rest = &out[..];
        while !rest.is_empty() {
            let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
            msgs.push(rest[2..2 + len].to_vec());
            rest = &rest[2 + len..];
        }
        msgs
    }

    /// Runs a TCP transfer into memory and decodes the messages.
    fn run(t: &Transfers, store: &Store, req: &Request) -> Vec<Message> {
        frames(t, store, req)
            .iter()
            .map(|m| Message::from_vec(m).expect("decodable message"))
            .collect()
    }

    fn allow_loopback() -> Transfers {
        Transfers::new(vec!["127.0.0.0/8".parse().expect("prefix")], None)
    }

    fn texts(msgs: &[Message]) -> Vec<String> {
        msgs.iter()
            .flat_map(|m| &m.answers)
            .map(|r| {
                format!(
                    "{} {} {} {}",
                    r.name.to_lowercase(),
                    r.ttl,
                    r.record_type(),
                    r.data
                )
            })
            .collect()
    }

    #[test]
    fn transfer_carries_the_zone_as_cellns_answers_it() {
        let store = store_of(load_example().expect("example"));
        let msgs = run(
            &allow_loopback(),
            &store,
            &request(
                &axfr(RecordType::AXFR, "CELLS.example.com."),
                "127.0.0.1:4000",
            ),
        );
        let live = store.load();
        let snap = live.view.map();
        let rrs = texts(&msgs);
        let soa = rrs[0].clone();
        assert!(
            soa.starts_with("cells.example.com. 3600 SOA ns1.cells.example.com."),
            "{soa}"
        );
        assert_eq!(rrs.last(), Some(&soa), "closing SOA");
        assert_eq!(rrs.iter().filter(|r| r.contains(" SOA ")).count(), 2);
        for want in [
            "cells.example.com. 3600 NS ns1.cells.example.com.",
            "ns1.cells.example.com. 3600 A 192.0.2.53",
            "use1-a.cells.example.com. 30 A 192.0.2.10",
            // A down cell's own name keeps its addresses...
            "usw2-a.cells.example.com. 30 A 203.0.113.10",
            "acme.cells.example.com. 30 A 192.0.2.10",
            "acme.cells.example.com. 30 A 192.0.2.11",
            "acme.cells.example.com. 30 AAAA 2001:db8::10",
            // ...but its tenants get the failover cell.
            "hooli.cells.example.com. 30 A 192.0.2.20",
            "umbrella.cells.example.com. 30 CNAME apse1-a.lb.example.net.",
        ] {
            assert!(rrs.iter().any(|r| r == want), "missing {want}:\n{rrs:#?}");
        }
        assert!(
            !rrs.iter()
                .any(|r| r.starts_with("hooli.") && r.contains("203.0.113."))
        );
        // Every tenant, and for each one exactly the records of `answer`.
        for (tenant, _) in snap.tenants.iter() {
            let name = format!("{tenant}.cells.example.com.");
            let mut want = Vec::new();
            for t in [RecordType::A, RecordType::AAAA] {
                let q = Name::from_ascii(&name).expect("name");
                let a = crate::dns::answer::answer(&live, &q, &LowerName::new(&q), t, DNSClass::IN);
                want.extend(a.answers.iter().map(|r| {
                    format!(
                        "{} {} {} {}",
                        r.name.to_lowercase(),
                        r.ttl,
                        r.record_type(),
                        r.data
                    )
                }));
            }
            want.dedup();
            let got: Vec<&String> = rrs
                .iter()
                .filter(|r| r.starts_with(&format!("{name} ")))
                .collect();
            assert_eq!(got.len(), want.len(), "{name}: {got:?} vs {want:?}");
            for w in &want {
                assert!(got.contains(&w), "{name}: {w} not in {got:?}");
            }
        }
        // Header rules: AA, NOERROR, ID echoed, question in each message.
        for m in &msgs {
            assert_eq!(m.metadata.id, 7);
            assert!(m.metadata.authoritative);
            assert_eq!(m.metadata.response_code, ResponseCode::NoError);
            assert_eq!(m.queries.len(), 1);
        }
    }

    /// A store serving a generated map of `tenants` tenants over `cells` cells.
    fn generated_store(tenants: usize, cells: usize) -> Store {
        let text = crate::map::generate::generate(tenants, cells, Format::Json);
        let source = Source {
            text: &text,
            format: Format::Json,
            name: "gen.json",
        };
        store_of(load_str(source).expect("generated map"))
    }

    #[test]
    fn large_zone_is_split_into_messages_under_the_limit() {
        let store = generated_store(5000, 7);
        let wire = frames(
            &allow_loopback(),
            &store,
            &request(
                &axfr(RecordType::AXFR, crate::map::generate::ORIGIN),
                "127.0.0.1:4000",
            ),
        );
        for m in &wire {
            assert!(
                m.len() <= MESSAGE_TARGET + 512,
                "message of {} bytes",
                m.len()
            );
        }
        let msgs: Vec<Message> = wire
            .iter()
            .map(|m| Message::from_vec(m).expect("decodable"))
            .collect();
        assert!(msgs.len() > 5, "{} messages", msgs.len());
        let rrs = texts(&msgs);
        // 3 records per tenant and per (in-zone) cell hostname, SOA twice,
        // NS, glue.
        assert_eq!(rrs.len(), 5000 * 3 + 7 * 3 + 4);
        assert!(
            rrs.iter()
                .any(|r| r.starts_with("t005000.cells.example.test. 30 AAAA"))
        );
    }

    #[test]
    fn refusals() {
        let store = store_of(load_example().expect("example"));
        let t = allow_loopback();
        let cases = [
            (
                axfr(RecordType::AXFR, "cells.example.com."),
                "192.0.2.1:53",
                ResponseCode::Refused,
            ),
            (
                axfr(RecordType::AXFR, "example.com."),
                "127.0.0.1:53",
                ResponseCode::Refused,
            ),
            (
                axfr(RecordType::AXFR, "acme.cells.example.com."),
                "127.0.0.1:53",
                ResponseCode::Refused,
            ),
        ];
        for (m, src, rcode) in cases {
            let msgs = run(&t, &store, &request(&m, src));
            assert_eq!(msgs.len(), 1);
            assert_eq!(
                msgs[0].metadata.response_code, rcode,
                "{src} {:?}",
                m.queries
            );
            assert!(msgs[0].answers.is_empty());
        }
        // Nothing allowed by default.
        let msgs = run(
            &Transfers::default(),
            &store,
            &request(
                &axfr(RecordType::AXFR, "cells.example.com."),
                "127.0.0.1:53",
            ),
        );
        assert_eq!(msgs[0].metadata.response_code, ResponseCode::Refused);
        // A key configured: unsigned is refused, another key is NOTAUTH.
        let key =
            Key::parse("k. hmac-sha256 c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ=").expect("key");
        let t = Transfers::new(vec!["127.0.0.1".parse().expect("prefix")], Some(key));
        let msgs = run(
            &t,
            &store,
            &request(
                &axfr(RecordType::AXFR, "cells.example.com."),
                "127.0.0.1:53",
            ),
        );
        assert_eq!(msgs[0].metadata.response_code, ResponseCode::Refused);
        let other =
            Key::parse("k. hmac-sha256 b3RoZXItb3RoZXItb3RoZXItb3RoZXItb3RoZXI=").expect("key");
        let mut m = axfr(RecordType::AXFR, "cells.example.com.");
        m.finalize(other.signer(), tsig::now()).expect("sign");
        let msgs = run(&t, &store, &request(&m, "127.0.0.1:53"));
        assert_eq!(msgs[0].metadata.response_code, ResponseCode::NotAuth);
        assert!(msgs[0].answers.is_empty());
    }

    #[test]
    fn signed_transfer_verifies_message_by_message() {
        let store = generated_store(2000, 3);
        let key = Key::parse("xfr. hmac-sha256 c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ=")
            .expect("key");
        let t = Transfers::new(
            vec!["127.0.0.1".parse().expect("prefix")],
            Some(key.clone()),
        );
        let mut m = axfr(RecordType::AXFR, crate::map::generate::ORIGIN);
        let mut verifier = m
            .finalize(key.signer(), tsig::now())
            .expect("sign")
            .expect("verifier");
        let req = request(&m, "127.0.0.1:53");
        let mut out = Vec::new();
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
            .block_on(serve(&t, &store, &req, &mut out))
            .expect("transfer");
        let mut rest = &out[..];
        let mut n = 0;
        while !rest.is_empty() {
            let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
            verifier
                .verify(&rest[2..2 + len])
                .unwrap_or_else(|e| panic!("message {n}: {e}"));
            rest = &rest[2 + len..];
            n += 1;
        }
        assert!(n > 3, "{n} messages");
    }

    #[test]
    fn ixfr_from_a_current_client_is_the_soa_alone() {
        let store = store_of(load_example().expect("example"));
        let mut m = axfr(RecordType::IXFR, "cells.example.com.");
        let mut soa = store.load().answers.soa.clone();
        let serial = store.load().view.serial();
        m.add_authority(soa.clone());
        let msgs = run(&allow_loopback(), &store, &request(&m, "127.0.0.1:53"));
        assert_eq!(msgs.len(), 1);
        assert_eq!(texts(&msgs).len(), 1);
        // An older client gets the whole zone.
        if let RData::SOA(s) = &mut soa.data {
            s.serial = serial - 1;
        }
        let mut m = axfr(RecordType::IXFR, "cells.example.com.");
        m.add_authority(soa);
        let msgs = run(&allow_loopback(), &store, &request(&m, "127.0.0.1:53"));
        assert!(texts(&msgs).len() > 10);
    }

    /// The records of a zone in AXFR form, as a set of texts.
    fn zone_set(msgs: &[Message]) -> std::collections::BTreeSet<String> {
        let mut t = texts(msgs);
        // Both SOAs: the one opening the transfer is enough.
        t.pop();
        t.into_iter().collect()
    }

    /// Applies an IXFR response (RFC 1995 §4) to `zone`; the number of
    /// difference sequences.
    fn apply(zone: &mut std::collections::BTreeSet<String>, msgs: &[Message]) -> usize {
        let rrs = texts(msgs);
        let soa = |r: &String| r.contains(" SOA ");
        assert!(soa(&rrs[0]) && soa(&rrs[rrs.len() - 1]), "{rrs:#?}");
        // Sequences: old SOA, deletions, new SOA, additions.
        let mut sequences = 0;
        // None before the first sequence; Some(false) while deleting.
        let mut adding: Option<bool> = None;
        let body = &rrs[1..rrs.len() - 1];
        for r in body {
            if soa(r) {
                if adding == Some(false) {
                    zone.retain(|z| !z.contains(" SOA "));
                    zone.insert(r.clone());
                    adding = Some(true);
                } else {
                    sequences += 1;
                    assert!(zone.contains(r), "sequence from another version: {r}");
                    adding = Some(false);
                }
                continue;
            }
            let adding = adding.expect("a record before the first sequence");
            if adding {
                assert!(zone.insert(r.clone()), "added twice: {r}");
            } else {
                assert!(zone.remove(r), "deleted but absent: {r}");
            }
        }
        sequences
    }

    fn ixfr_from(serial: u32, soa: &Record) -> Message {
        let mut m = axfr(RecordType::IXFR, crate::map::generate::ORIGIN);
        let mut soa = soa.clone();
        if let RData::SOA(s) = &mut soa.data {
            s.serial = serial;
        }
        m.add_authority(soa);
        m
    }

    #[test]
    fn ixfr_applied_to_an_older_zone_gives_the_zone_of_today() {
        use crate::map::generate::{Spec, generate_spec};
        let gen_map = |move_every| {
            let mut spec = Spec::new(3000, 5, Format::Json);
            spec.move_every = move_every;
            let text = generate_spec(&spec);
            Arc::new(
                load_str(Source {
                    text: &text,
                    format: Format::Json,
                    name: "gen.json",
                })
                .expect("generated map"),
            )
        };
        let store = Arc::new(store_of(Arc::try_unwrap(gen_map(0)).expect("one owner")));
        let t = Arc::new(allow_loopback());
        {
            let t = t.clone();
            store.set_on_publish(move |old, new| t.journal().record(old, new));
        }
        let axfr_now = |store: &Store| {
            zone_set(&run(
                &t,
                store,
                &request(
                    &axfr(RecordType::AXFR, crate::map::generate::ORIGIN),
                    "127.0.0.1:53",
                ),
            ))
        };
        let mut versions = vec![(store.load().view.serial(), axfr_now(&store))];
        // A move of many tenants, a cell down, one tenant back.
        store.publish_map(gen_map(1000)).expect("serial");
        versions.push((store.load().view.serial(), axfr_now(&store)));
        store
            .update("test", |c| {
                c.overrides.insert("c0002".into(), crate::map::Status::Down);
            })
            .expect("serial");
        versions.push((store.load().view.serial(), axfr_now(&store)));
        store.publish_map(gen_map(1500)).expect("serial");
        versions.push((store.load().view.serial(), axfr_now(&store)));
        let (now_serial, now_zone) = versions.last().cloned().expect("versions");
        let soa = store.load().answers.soa.clone();
        for (serial, zone) in &versions[..versions.len() - 1] {
            let msgs = run(
                &t,
                &store,
                &request(&ixfr_from(*serial, &soa), "127.0.0.1:53"),
            );
            let mut z = zone.clone();
            // Condensed: one sequence, however far behind.
            assert_eq!(apply(&mut z, &msgs), 1, "from {serial}");
            assert_eq!(z, now_zone, "IXFR from {serial} to {now_serial}");
            // Much smaller than the zone.
            assert!(texts(&msgs).len() < now_zone.len() / 2);
        }
        // Up to date: the SOA alone.
        let msgs = run(
            &t,
            &store,
            &request(&ixfr_from(now_serial, &soa), "127.0.0.1:53"),
        );
        assert_eq!(texts(&msgs).len(), 1);
        // A serial never served: the whole zone.
        let msgs = run(
            &t,
            &store,
            &request(&ixfr_from(12345, &soa), "127.0.0.1:53"),
        );
        assert_eq!(zone_set(&msgs), now_zone);

        // Over UDP: a one-tenant difference fits in a datagram...
        let previous = store.load().view.serial();
        let mut one = crate::map::generate::Spec::new(3000, 5, Format::Json);
        one.move_every = 1500;
        let text =
            generate_spec(&one).replacen("\"t000007\": \"c0002\"", "\"t000007\": \"c0003\"", 1);
        assert!(
            text.contains("\"t000007\": \"c0003\""),
            "generated map changed shape"
        );
        store
            .publish_map(Arc::new(
                load_str(Source {
                    text: &text,
                    format: Format::Json,
                    name: "gen.json",
                })
                .expect("map"),
            ))
            .expect("serial");
        let udp = |m: &Message| {
            Request::from_bytes(
                m.to_vec().expect("encode"),
                "127.0.0.1:53".parse::<SocketAddr>().expect("addr"),
                Protocol::Udp,
            )
            .expect("request")
        };
        let dgram = ixfr_datagram(&t, &store, &udp(&ixfr_from(previous, &soa)))
            .expect("a one-tenant difference fits in 512 bytes");
        assert!(dgram.len() <= 512);
        let m = Message::from_vec(&dgram).expect("decodable");
        let mut z = now_zone.clone();
        assert_eq!(apply(&mut z, std::slice::from_ref(&m)), 1);
        assert_eq!(z, axfr_now(&store));
        // ...a larger one does not: the caller answers the SOA alone.
        assert!(ixfr_datagram(&t, &store, &udp(&ixfr_from(versions[0].0, &soa))).is_none());
        // Refused sources get nothing here either.
        let other = Request::from_bytes(
            ixfr_from(previous, &soa).to_vec().expect("encode"),
            "192.0.2.1:53".parse::<SocketAddr>().expect("addr"),
            Protocol::Udp,
        )
        .expect("request");
        assert!(ixfr_datagram(&t, &store, &other).is_none());
    }
}
