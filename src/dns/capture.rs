//! Running the hickory-server handler outside hickory-server's own
//! transports: a [`ResponseHandler`] that encodes the response into bytes
//! with hickory-server's size rules. Used by [`super::dispatch`].

use std::sync::{Arc, Mutex};

use hickory_proto::op::{Header, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
use hickory_server::net::NetError;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;

/// A response handler that keeps the encoded response for its caller.
#[derive(Clone)]
pub(super) struct Capture {
    protocol: Protocol,
    slot: Arc<Mutex<Option<Vec<u8>>>>,
}

impl Capture {
    /// A capture for a request that came over `protocol` (UDP responses are
    /// limited to the response's EDNS payload size, or 512 bytes).
    pub(super) fn new(protocol: Protocol) -> Self {
        Self {
            protocol,
            slot: Arc::default(),
        }
    }

    /// The encoded response, if the handler sent one.
    pub(super) fn take(&self) -> Option<Vec<u8>> {
        self.slot.lock().ok()?.take()
    }
}

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let (bytes, header) =
            encode(response, self.protocol).map_err(|e| NetError::from(e.to_string()))?;
        if let Ok(mut slot) = self.slot.lock() {
            *slot = Some(bytes);
        }
        Ok(header.into())
    }
}

/// Encodes as hickory-server does (`MessageResponse::encode`): UDP limited
/// to the response EDNS payload size or 512 bytes, TCP to 64 KiB; a response
/// that cannot be encoded becomes a bare SERVFAIL.
fn encode<'a>(
    response: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    protocol: Protocol,
) -> Result<(Vec<u8>, Header), hickory_proto::ProtoError> {
    let id = response.metadata().id;
    let max = match protocol {
        Protocol::Udp => response.edns().map_or(512, |e| e.max_payload()),
        _ => u16::MAX,
    };
    let mut bytes = Vec::with_capacity(512);
    let mut enc = BinEncoder::new(&mut bytes);
    enc.set_max_size(max);
    match response.destructive_emit(&mut enc) {
        Ok(info) => {
            let header = Header {
                metadata: *info,
                counts: info.counts(),
            };
            Ok((compress(bytes), header))
        }
        Err(e) => {
            tracing::debug!(error = %e, "cannot encode a DNS response");
            let mut metadata = Metadata::new(id, MessageType::Response, OpCode::Query);
            metadata.response_code = ResponseCode::ServFail;
            let header = Header {
                metadata,
                counts: Default::default(),
            };
            bytes.clear();
            let mut enc = BinEncoder::new(&mut bytes);
            enc.set_max_size(512);
            header.emit(&mut enc)?;
            Ok((bytes, header))
        }
    }
}

/// Re-encodes a response so that names are compressed against the question.
///
/// hickory-server writes the question section as raw bytes and registers
/// them as one compression target that no later name can match, so a
/// tenant answer repeats the query name in full (102 bytes where Knot and
/// NSD send 76). Decoding and re-encoding with hickory-proto's `Message`
/// compresses as RFC 1035 §4.1.4 intends; the result is only ever shorter,
/// so it still fits the size limit the first encoding respected. Signed
/// messages (TSIG) are left as they are: their MAC covers the exact bytes.
fn compress(bytes: Vec<u8>) -> Vec<u8> {
    match Message::from_vec(&bytes) {
        Ok(m) if m.signature.is_none() => match m.to_vec() {
            Ok(shorter) if shorter.len() <= bytes.len() => shorter,
            _ => bytes,
        },
        _ => bytes,
    }
}
