//! The hickory-server request handler: protocol rules around
//! [`super::answer`] (opcodes, question count, class, EDNS, truncation).

use std::sync::Arc;

use hickory_proto::op::{Edns, Header, Metadata, OpCode, ResponseCode};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use super::answer::answer;
use crate::reload::Store;

/// Largest UDP response we send, whatever the client advertises: the
/// DNS Flag Day 2020 value, which avoids IP fragmentation.
pub const MAX_UDP_PAYLOAD: u16 = 1232;

/// Answers DNS requests from the store's current snapshot.
#[derive(Debug, Clone)]
pub struct Handler {
    store: Arc<Store>,
}

impl Handler {
    /// A handler reading `store`.
    pub fn new(store: Arc<Store>) -> Self {
        Self { store }
    }
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
        // our OPT (version 0). Without EDNS in the query, none in the reply.
        let mut resp_edns = None;
        if let Some(req_edns) = &request.edns {
            let mut e = Edns::new();
            e.set_max_payload(req_edns.max_payload().clamp(512, MAX_UDP_PAYLOAD));
            e.set_version(0);
            if req_edns.version() > 0 {
                meta.response_code = ResponseCode::BADVERS;
            }
            resp_edns = Some(e);
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
                    let snap = self.store.load();
                    let q = info.query;
                    let a = answer(
                        &snap,
                        q.original().name(),
                        q.name(),
                        q.query_type(),
                        q.query_class(),
                    );
                    meta.response_code = a.rcode;
                    meta.authoritative = a.authoritative;
                    tracing::trace!(
                        src = %request.src(),
                        qname = %q.original().name(),
                        qtype = %q.query_type(),
                        rcode = %a.rcode,
                        "query"
                    );
                    let msg = builder.build(
                        meta,
                        a.answers.iter(),
                        a.authority.iter(),
                        std::iter::empty(),
                        a.additional.iter(),
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
