//! The hickory-server request handler: protocol rules around
//! [`super::answer`] (opcodes, question count, EDNS, truncation). Zone
//! transfers never reach it: [`super::dispatch`] routes them to
//! [`super::xfr`] first (the answer table refuses them, should one come).
//! Counting the responses is the dispatch's too; the handler counts only
//! tenant answers per cell, as it alone knows whether a UDP answer was
//! truncated.

use std::sync::Arc;

use hickory_proto::dnssec::rdata::DNSSECRData;
use hickory_proto::op::{Edns, Header, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use super::answer::{self, Answer, Outcome, answer};
use super::dnssec::sign::NXNAME;
use super::prepared::Store;
use super::wire::MAX_UDP_PAYLOAD;

/// The Compact Answers OK flag of the EDNS header (RFC 9824 §4): the
/// client takes NXDOMAIN with a compact denial.
const EDNS_FLAG_CO: u16 = 0x4000;

/// Answers DNS requests from the zone version in force.
#[derive(Debug, Clone)]
pub(super) struct Handler {
    store: Arc<Store>,
}

impl Handler {
    /// A handler reading `store`.
    pub(super) fn new(store: Arc<Store>) -> Self {
        Self { store }
    }
}

/// The EDNS of the response to `request`: none without EDNS in the query
/// (RFC 6891 §7), else version 0 with our payload size (the client's,
/// clamped to 512..=[`MAX_UDP_PAYLOAD`]) and the query's DO bit (RFC 3225
/// §3).
pub(super) fn response_edns(request: &Request) -> Option<Edns> {
    request.edns.as_ref().map(|req_edns| {
        let mut e = Edns::new();
        e.set_max_payload(req_edns.max_payload().clamp(512, MAX_UDP_PAYLOAD));
        e.set_version(0);
        e.set_dnssec_ok(req_edns.flags().dnssec_ok);
        e
    })
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let mut builder = MessageResponseBuilder::from_message_request(request);
        let mut meta = Metadata::response_from_request(&request.metadata);

        // RFC 6891 §6.1.3: answer only version 0; others get BADVERS with
        // our OPT (version 0).
        let mut resp_edns = response_edns(request);
        // RFC 9824 §4: a signed zone says it gives compact NXDOMAIN to a
        // client that asks for it (DO and CO set).
        if let Some(e) = &mut resp_edns
            && e.flags().dnssec_ok
            && request
                .edns
                .as_ref()
                .is_some_and(|q| q.flags().z & EDNS_FLAG_CO != 0)
            && self.store.load().answers.dnssec.is_some()
        {
            e.flags_mut().z |= EDNS_FLAG_CO;
        }
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            meta.response_code = ResponseCode::BADVERS;
        }
        if let Some(e) = &resp_edns {
            builder.edns(e);
        }

        let result = if meta.response_code == ResponseCode::BADVERS {
            response_handle
                .send_response(builder.build_no_records(meta))
                .await
        } else if request.metadata.op_code != OpCode::Query {
            meta.response_code = ResponseCode::NotImp;
            response_handle
                .send_response(builder.build_no_records(meta))
                .await
        } else {
            match request.request_info() {
                Err(_) => {
                    // Zero or several questions (RFC 9619: QDCOUNT must be 1).
                    meta.response_code = ResponseCode::FormErr;
                    response_handle
                        .send_response(builder.build_no_records(meta))
                        .await
                }
                Ok(info) => {
                    let live = self.store.load();
                    let q = info.query;
                    // DNSSEC: a signed zone, and a query with the DO bit.
                    let signed = live.answers.dnssec.is_some()
                        && request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
                    let compact_ok = signed
                        && resp_edns
                            .as_ref()
                            .is_some_and(|e| e.flags().z & EDNS_FLAG_CO != 0);
                    if signed && q.query_type() == NXNAME {
                        // RFC 9824 §3.5: a meta-type, never a question.
                        meta.response_code = ResponseCode::FormErr;
                        return response_handle
                            .send_response(builder.build_no_records(meta))
                            .await
                            .unwrap_or_else(|_| {
                                Header {
                                    metadata: meta,
                                    counts: Default::default(),
                                }
                                .into()
                            });
                    }
                    // RRSIG questions get the RRSIGs of the RRset ANY gets.
                    let table_qtype = match q.query_type() {
                        RecordType::RRSIG if signed => RecordType::ANY,
                        t => t,
                    };
                    let a = answer(
                        &live,
                        q.original().name(),
                        q.name(),
                        table_qtype,
                        q.query_class(),
                    );
                    let a = if signed {
                        answer::sign(
                            &live,
                            a,
                            q.original().name(),
                            q.name(),
                            q.query_type(),
                            compact_ok,
                        )
                    } else {
                        a
                    };
                    meta.response_code = a.rcode;
                    meta.authoritative = a.authoritative;
                    tracing::trace!(
                        src = %request.src(),
                        qname = %q.original().name(),
                        qtype = %q.query_type(),
                        rcode = %a.rcode,
                        "query"
                    );
                    let udp_limit = match request.protocol() {
                        Protocol::Udp => Some(resp_edns.as_ref().map_or(512, Edns::max_payload)),
                        _ => None,
                    };
                    let (answers, authority, additional): (&[Record], &[Record], &[Record]) =
                        match udp_limit {
                            Some(limit) if !fits(request, &a, resp_edns.as_ref(), limit) => {
                                // RFC 2181 §9: the requester retries over TCP,
                                // so send no partial RRsets. Glue that does not
                                // fit sets TC too (RFC 9471).
                                meta.truncation = true;
                                (&[], &[], &[])
                            }
                            _ => (&a.answers, &a.authority, &a.additional),
                        };
                    // A truncated reply is no answer: the client asks again
                    // over TCP, and that one counts.
                    if let (Outcome::Tenant(cell) | Outcome::TenantNodata(cell), false) =
                        (a.outcome, meta.truncation)
                    {
                        live.answers.count_answer(cell);
                    }
                    let msg = builder.build(
                        meta,
                        answers.iter(),
                        authority.iter(),
                        std::iter::empty(),
                        additional.iter(),
                    );
                    response_handle.send_response(msg).await
                }
            }
        };
        result.unwrap_or_else(|e| {
            tracing::debug!(error = %e, "cannot send DNS response");
            meta.response_code = ResponseCode::ServFail;
            Header {
                metadata: meta,
                counts: Default::default(),
            }
            .into()
        })
    }
}

/// Whether the full response to `request` fits in `limit` bytes. A cheap
/// upper bound (no name compression) settles almost every query; only an
/// answer near the limit is encoded to find out.
fn fits(request: &Request, a: &Answer<'_>, edns: Option<&Edns>, limit: u16) -> bool {
    let records = || a.answers.iter().chain(&*a.authority).chain(&*a.additional);
    let bound = 12
        + request.queries.as_bytes().len()
        + records().map(record_bound).sum::<usize>()
        + if edns.is_some() { 11 } else { 0 };
    if bound <= usize::from(limit) {
        return true;
    }
    let mut meta = Metadata::response_from_request(&request.metadata);
    meta.response_code = a.rcode;
    let mut builder = MessageResponseBuilder::from_message_request(request);
    if let Some(e) = edns {
        builder.edns(e);
    }
    let msg = builder.build(
        meta,
        a.answers.iter(),
        a.authority.iter(),
        std::iter::empty(),
        a.additional.iter(),
    );
    let mut buf = Vec::with_capacity(usize::from(limit));
    let mut encoder = BinEncoder::new(&mut buf);
    encoder.set_max_size(limit);
    msg.destructive_emit(&mut encoder)
        .is_ok_and(|header| !header.truncation)
}

/// Most bytes `record` takes on the wire, before name compression.
fn record_bound(record: &Record) -> usize {
    let rdata = match &record.data {
        RData::A(_) => 4,
        RData::AAAA(_) => 16,
        RData::CNAME(n) => name_bound(n),
        RData::NS(n) => name_bound(n),
        RData::SOA(soa) => name_bound(&soa.mname) + name_bound(&soa.rname) + 20,
        RData::DNSSEC(DNSSECRData::RRSIG(sig)) => {
            18 + name_bound(&sig.input().signer_name) + sig.sig().len()
        }
        // Next name, and one bitmap window (every type the zone has is
        // below 256).
        RData::DNSSEC(DNSSECRData::NSEC(nsec)) => name_bound(nsec.next_domain_name()) + 2 + 32,
        RData::DNSSEC(DNSSECRData::DNSKEY(k)) => {
            use hickory_proto::dnssec::PublicKey as _;
            4 + k.public_key().public_bytes().len()
        }
        RData::DNSSEC(DNSSECRData::CDNSKEY(_)) => 4 + 64,
        RData::DNSSEC(DNSSECRData::CDS(ds)) => 4 + ds.digest().len(),
        // Not produced by the answer table; too big to pass the bound, so
        // such a response is measured by encoding it.
        _ => usize::from(u16::MAX),
    };
    name_bound(&record.name) + 10 + rdata
}

/// Wire length of an uncompressed name.
fn name_bound(name: &Name) -> usize {
    name.iter().map(|label| label.len() + 1).sum::<usize>() + 1
}
