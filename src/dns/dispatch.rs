//! The one way a DNS message is answered, whatever transport brought it:
//! bytes, source and transport in, a `Reply` out. Both transports call
//! it ([`super::udp`] per datagram, `tcp` per message); it owns
//! what they used to do twice:
//!
//! - dropping what is never answered (shorter than a header, or a
//!   response: no reflection);
//! - FORMERR for a message whose header is readable but the rest is not;
//! - routing: AXFR/IXFR to [`super::xfr`] (streamed over TCP, one message
//!   over UDP), everything else to the hickory-server handler
//!   (`handler`) run through `capture`;
//! - counting each response exactly once in `cellns_dns_queries_total`
//!   (a streamed TCP transfer is not counted), and those of the fast path
//!   in `cellns_dns_fast_path_total` too.
//!
//! On UDP the fast path ([`super::fast`]) is tried first
//! (`Dispatch::datagram`), and what it answers is counted here too.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use hickory_proto::op::{Header, Metadata, ResponseCode};
use hickory_proto::rr::RecordType;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseInfo};
use tokio::io::AsyncWrite;

use super::answer::Outcome;
use super::capture::Capture;
use super::fast::{self, Fast, RESPONSE_BUF};
use super::handler::{self, Handler};
use super::prepared::{Live, Store};
use super::rrl::{self, Rrl, Verdict};
use super::wire::{self, HEADER_LEN};
use super::xfr::{self, Transfers};
use crate::metrics::{self, Transport};

/// What to do with a message.
pub(super) enum Reply {
    /// Send this response.
    Message(Vec<u8>),
    /// Send nothing.
    Drop,
    /// A zone transfer over TCP: stream it with [`Dispatch::transfer`].
    Transfer(Box<Request>),
}

/// Answers DNS messages from the zone version in force; cheap to clone
/// (one per UDP worker, one shared by the TCP connections).
#[derive(Debug, Clone)]
pub struct Dispatch {
    store: Arc<Store>,
    handler: Handler,
    transfers: Arc<Transfers>,
    /// Response rate limiting of UDP answers, when on.
    rrl: Option<Arc<Rrl>>,
}

impl Dispatch {
    /// Answers from `store`; zone transfers as `transfers` allows
    /// (`Transfers::default()` refuses them all).
    pub fn new(store: Arc<Store>, transfers: Arc<Transfers>) -> Self {
        Self {
            handler: Handler::new(store.clone()),
            store,
            transfers,
            rrl: None,
        }
    }

    /// Rate-limits UDP answers with `rrl` (none: off). TCP is never
    /// limited: it is where a limited client is sent.
    pub fn with_rrl(mut self, rrl: Option<Arc<Rrl>>) -> Self {
        self.rrl = rrl;
        self
    }

    /// The zone versions it answers from.
    pub(super) fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Answers the UDP datagram `query` from `src` into `out`: by the fast
    /// path when it can, else by [`Dispatch::message`]. `live` is the zone
    /// version the caller loaded for its batch (the fast path reads it);
    /// `truncated` says the datagram was longer than the receive buffer
    /// (answered FORMERR). Then response rate limiting, when on, may drop
    /// the response or truncate it ([`super::rrl`]). Returns the response
    /// length, or `None` to send nothing. Public for the fuzz target
    /// (`fuzz/`), which feeds it bytes as the UDP worker does.
    #[inline]
    pub fn datagram(
        &self,
        live: &Live,
        query: &[u8],
        src: SocketAddr,
        truncated: bool,
        out: &mut [u8; RESPONSE_BUF],
    ) -> Option<usize> {
        let n = self.answer_datagram(live, query, src, truncated, out)?;
        match &self.rrl {
            None => Some(n),
            Some(limiter) => limit(limiter, query, src, out, n),
        }
    }

    /// The response to a datagram, before rate limiting.
    #[inline]
    fn answer_datagram(
        &self,
        live: &Live,
        query: &[u8],
        src: SocketAddr,
        truncated: bool,
        out: &mut [u8; RESPONSE_BUF],
    ) -> Option<usize> {
        if truncated {
            let head = formerr(query, Transport::Udp)?;
            out[..HEADER_LEN].copy_from_slice(&head);
            return Some(HEADER_LEN);
        }
        match fast::respond(live, query, out) {
            Fast::Answered(n, outcome, qtype) => {
                count_fast(live, outcome, qtype, out[3] & 0x0F);
                Some(n)
            }
            Fast::Drop => None,
            Fast::General => self.general_datagram(query, src, out),
        }
    }

    /// Answers the UDP datagram `query` by the general path alone, as
    /// `Dispatch::datagram` does for what the fast path leaves (the
    /// benchmarks and the fast path's byte-for-byte test compare the two).
    /// Returns the response length.
    pub fn general_datagram(
        &self,
        query: &[u8],
        src: SocketAddr,
        out: &mut [u8; RESPONSE_BUF],
    ) -> Option<usize> {
        // Nothing on the general path waits on I/O (the capture completes
        // at once, zone reads are lock-free), so one poll finishes it.
        let fut = self.message(query.to_vec(), src, Transport::Udp);
        let mut fut = std::pin::pin!(fut);
        let Poll::Ready(reply) = fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) else {
            return None;
        };
        match reply {
            Reply::Message(bytes) if bytes.len() <= out.len() => {
                out[..bytes.len()].copy_from_slice(&bytes);
                Some(bytes.len())
            }
            _ => None,
        }
    }

    /// Answers the message `msg` from `src` by the general path: what it
    /// gets, as hickory-server's own transports would answer it (same
    /// decoding, same FORMERR, same encoding limits), except that zone
    /// transfers over TCP come back as [`Reply::Transfer`].
    pub(super) async fn message(
        &self,
        msg: Vec<u8>,
        src: SocketAddr,
        transport: Transport,
    ) -> Reply {
        // What would be the FORMERR is also the test of what is never
        // answered (see `formerr_bytes`).
        let Some(head) = formerr_bytes(&msg) else {
            return Reply::Drop;
        };
        // hickory's decoder takes a question name of 256 octets; RFC 1035
        // allows 255 (the fast path refuses it as malformed too).
        if question_name_too_long(&msg) {
            count(transport, 0, ResponseCode::FormErr);
            return Reply::Message(head.to_vec());
        }
        let protocol = match transport {
            Transport::Udp => Protocol::Udp,
            Transport::Tcp => Protocol::Tcp,
        };
        let request = match Request::from_bytes(msg, src, protocol) {
            Ok(r) => r,
            Err(_) => {
                // Its question is unreadable, so its type is "other".
                count(transport, 0, ResponseCode::FormErr);
                return Reply::Message(head.to_vec());
            }
        };
        let capture = Capture::new(protocol);
        let info = if xfr::is_transfer(&request) {
            if transport == Transport::Tcp {
                // Streamed, and not counted (see the module docs).
                return Reply::Transfer(Box::new(request));
            }
            if let Some(bytes) = xfr::stream::ixfr_datagram(&self.transfers, &self.store, &request)
            {
                count(
                    transport,
                    u16::from(RecordType::IXFR),
                    ResponseCode::NoError,
                );
                return Reply::Message(bytes);
            }
            let edns = handler::response_edns(&request);
            let mut sink = capture.clone();
            xfr::single::respond(
                &self.transfers,
                &self.store,
                &request,
                edns.as_ref(),
                &mut sink,
            )
            .await
            .unwrap_or_else(|e| {
                tracing::debug!(error = %e, "cannot send DNS response");
                servfail(&request)
            })
        } else {
            self.handler
                .handle_request::<_, TokioTime>(&request, capture.clone())
                .await
        };
        let qtype = request
            .queries
            .queries()
            .first()
            .map_or(0, |q| u16::from(q.query_type()));
        count(transport, qtype, info.response_code);
        capture.take().map_or(Reply::Drop, Reply::Message)
    }

    /// Streams the zone transfer `request` (a [`Reply::Transfer`]) to `out`.
    /// An error is the connection's: the caller closes it.
    pub(super) async fn transfer<W: AsyncWrite + Unpin>(
        &self,
        request: &Request,
        out: &mut W,
    ) -> std::io::Result<()> {
        xfr::stream::serve(&self.transfers, &self.store, request, out).await
    }
}

/// Applies response rate limiting to the response `out[..n]` to `query`
/// from `src`: its length to send as it is, the length of its truncated
/// form (a slip), or `None` (dropped). Counted in `cellns_dns_rrl_total`.
#[inline]
fn limit(
    limiter: &Rrl,
    query: &[u8],
    src: SocketAddr,
    out: &mut [u8; RESPONSE_BUF],
    n: usize,
) -> Option<usize> {
    let kind = rrl::Kind::of_response(&out[..n]);
    match limiter.check(src.ip(), kind, limiter.now()) {
        Verdict::Send => Some(n),
        Verdict::Drop => {
            metrics::dns().rate_limited(kind, false);
            None
        }
        Verdict::Slip => {
            metrics::dns().rate_limited(kind, true);
            Some(rrl::truncate(query, out, n))
        }
    }
}

/// The response info of a response that could not be sent.
fn servfail(request: &Request) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = ResponseCode::ServFail;
    Header {
        metadata,
        counts: Default::default(),
    }
    .into()
}

/// FORMERR for a datagram cut short by the receive buffer, counted (its
/// question is unreadable, so its type is "other"); `None` for what is
/// never answered (see [`formerr_bytes`]).
fn formerr(msg: &[u8], transport: Transport) -> Option<[u8; HEADER_LEN]> {
    let head = formerr_bytes(msg)?;
    count(transport, 0, ResponseCode::FormErr);
    Some(head)
}

/// The FORMERR response to `msg`: its header echoed as a response (ID,
/// opcode, RD, CD), no sections, no EDNS, as hickory-server sends it.
/// `None` when the message is shorter than a header or is itself a
/// response (never answered).
fn formerr_bytes(msg: &[u8]) -> Option<[u8; HEADER_LEN]> {
    if msg.len() < HEADER_LEN || msg[2] & 0x80 != 0 {
        return None;
    }
    let mut header = wire::Header::reply_to(msg);
    header.rcode = wire::FORMERR;
    Some(header.bytes())
}

/// Whether the first question's name, written without compression, is
/// longer than RFC 1035 allows. A name with a compression pointer is left
/// to the decoder.
fn question_name_too_long(msg: &[u8]) -> bool {
    if msg.len() < HEADER_LEN || msg[4..6] == [0, 0] {
        return false;
    }
    let mut i = HEADER_LEN;
    while let Some(&len) = msg.get(i) {
        if len == 0 {
            return i + 1 - HEADER_LEN > fast::MAX_NAME_WIRE;
        }
        if len & 0xC0 != 0 {
            return false;
        }
        i += 1 + usize::from(len);
    }
    false
}

/// Counts a response of the general path.
fn count(transport: Transport, qtype: u16, rcode: ResponseCode) {
    metrics::dns().query(transport, qtype, u16::from(rcode));
}

/// Counts a fast-path response: the query, the path, and the tenant's
/// cell (the general path counts cells in the handler, which knows about
/// truncation).
#[inline]
fn count_fast(live: &Live, outcome: Outcome, qtype: u16, rcode: u8) {
    let dns = metrics::dns();
    dns.query(Transport::Udp, qtype, u16::from(rcode));
    dns.fast_path();
    if let Outcome::Tenant(cell) | Outcome::TenantNodata(cell) = outcome {
        live.answers.count_answer(cell);
    }
}
