//! Zone transfer requests over UDP, answered in one message: IXFR gets the
//! current SOA alone when the differences do not fit in a datagram (or the
//! client is up to date, or the journal does not hold its serial; RFC 1995
//! §2: the client then transfers over TCP; the differences that fit are sent
//! by `stream::ixfr_datagram` before this is asked),
//! AXFR gets FORMERR (RFC 5936 §4.2 leaves AXFR over UDP undefined; BIND
//! answers the same). Refusals are those of TCP ([`super::Transfers`]
//! decides), signed when the request was.

use hickory_proto::op::{Edns, Metadata, ResponseCode};
use hickory_proto::rr::{Record, RecordType};
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::net::NetError;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use super::{Decision, Transfers};
use crate::dns::prepared::Store;

/// Answers the AXFR/IXFR `request` (see [`super::is_transfer`]) that
/// arrived over UDP, as `transfers` allows, through `response_handle`
/// with `edns` as the response's EDNS: IXFR gets the current SOA, AXFR
/// FORMERR, refusals as over TCP.
pub(in crate::dns) async fn respond<R: ResponseHandler>(
    transfers: &Transfers,
    store: &Store,
    request: &Request,
    edns: Option<&Edns>,
    response_handle: &mut R,
) -> Result<ResponseInfo, NetError> {
    let live = store.load_full();
    let snap = live.view.map();
    let is_axfr = request
        .queries
        .queries()
        .first()
        .is_some_and(|q| q.query_type() == RecordType::AXFR);
    let (rcode, answer, signer) = match transfers.decide(snap, request) {
        Decision::Deny {
            rcode: rcode @ ResponseCode::NotAuth,
            signer,
            ..
        } => (rcode, false, signer),
        Decision::Allow(signer) | Decision::Deny { signer, .. } if is_axfr => {
            (ResponseCode::FormErr, false, signer)
        }
        Decision::Deny { rcode, signer, why } => {
            tracing::debug!(target: crate::telemetry::OUTSIDER, src = %request.src(), why, "zone transfer over UDP refused");
            crate::metrics::xfr_refused();
            (rcode, false, signer)
        }
        Decision::Allow(signer) => (ResponseCode::NoError, true, signer),
    };
    let mut meta = Metadata::response_from_request(&request.metadata);
    meta.response_code = rcode;
    // RFC 5936 §2.2.1: AA on NOERROR.
    meta.authoritative = rcode == ResponseCode::NoError;
    let answers: &[Record] = if answer {
        std::slice::from_ref(&live.answers.soa)
    } else {
        &[]
    };
    let build = || {
        let mut b = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = edns {
            b.edns(e);
        }
        b.build(
            meta,
            answers.iter(),
            std::iter::empty(),
            std::iter::empty(),
            std::iter::empty(),
        )
    };
    let Some(mut signer) = signer else {
        return response_handle.send_response(build()).await;
    };
    // The MAC covers the message as it will be sent, minus the TSIG
    // record: encode it once unsigned to compute it.
    let mut unsigned = Vec::with_capacity(512);
    let mut enc = BinEncoder::new(&mut unsigned);
    enc.set_max_size(match request.protocol() {
        Protocol::Udp => edns.map_or(512, Edns::max_payload),
        _ => u16::MAX,
    });
    build()
        .destructive_emit(&mut enc)
        .map_err(|e| NetError::from(e.to_string()))?;
    let mut msg = build();
    msg.set_signature(Box::new(signer.record(&unsigned)));
    response_handle.send_response(msg).await
}
