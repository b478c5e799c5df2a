//! The one byte writer for the parts of DNS messages cellns assembles
//! itself: the header, the OPT record, names, pointers and record headers.
//! The fast path ([`super::fast`]), streamed zone transfers
//! ([`super::xfr::stream`]), TSIG records ([`super::tsig`]) and the FORMERR
//! reply to undecodable messages ([`super::dispatch`]) all write through it.
//! (Responses of the general path, and the bodies the fast path copies,
//! are encoded by hickory-proto: the fast path must match them byte for
//! byte.)
//!
//! Fixed-size parts (header, OPT) are returned as arrays, so the fast path
//! copies them into its stack buffer without allocating; variable-size
//! parts are appended to a `Vec`. A leaf: nothing here imports the rest of
//! `dns`.

use hickory_proto::rr::Name;

/// Largest UDP response we send, whatever the client advertises: the
/// DNS Flag Day 2020 value, which avoids IP fragmentation.
pub(super) const MAX_UDP_PAYLOAD: u16 = 1232;
/// Length of the message header.
pub(super) const HEADER_LEN: usize = 12;
/// Length of an OPT record without options.
pub(super) const OPT_LEN: usize = 11;

/// Response codes cellns writes itself (the low 4 bits, RFC 1035 §4.1.1).
pub(super) const NOERROR: u8 = 0;
/// FORMERR.
pub(super) const FORMERR: u8 = 1;
/// NXDOMAIN.
pub(super) const NXDOMAIN: u8 = 3;
/// REFUSED.
pub(super) const REFUSED: u8 = 5;

/// Record types and classes written here.
pub(super) const TYPE_OPT: u16 = 41;
/// TSIG (RFC 8945).
pub(super) const TYPE_TSIG: u16 = 250;
/// Class IN.
pub(super) const CLASS_IN: u16 = 1;
/// Class ANY (TSIG records).
pub(super) const CLASS_ANY: u16 = 255;

/// A section count of the header: its byte offset in the message.
#[derive(Debug, Clone, Copy)]
#[repr(usize)]
pub(super) enum Section {
    /// ANCOUNT.
    Answer = 6,
    /// ARCOUNT.
    Additional = 10,
}

/// The header of a response (RFC 1035 §4.1.1). QR is always set; TC, RA,
/// Z and AD never are.
#[derive(Debug, Clone, Copy)]
pub(super) struct Header {
    pub(super) id: u16,
    pub(super) opcode: u8,
    /// AA.
    pub(super) aa: bool,
    /// RD (echoed from the query).
    pub(super) rd: bool,
    /// CD (echoed from the query).
    pub(super) cd: bool,
    /// The low 4 bits of the rcode.
    pub(super) rcode: u8,
    /// QDCOUNT, ANCOUNT, NSCOUNT, ARCOUNT.
    pub(super) counts: [u16; 4],
}

impl Header {
    /// The response header to the query whose message is `q`: ID, opcode,
    /// RD and CD echoed (as hickory-server's
    /// `Metadata::response_from_request` does), no section, NOERROR, AA
    /// clear. `q` must hold at least a header.
    #[inline]
    pub(super) fn reply_to(q: &[u8]) -> Self {
        Self {
            id: u16::from_be_bytes([q[0], q[1]]),
            opcode: (q[2] >> 3) & 0x0F,
            aa: false,
            rd: q[2] & 0x01 != 0,
            cd: q[3] & 0x10 != 0,
            rcode: NOERROR,
            counts: [0; 4],
        }
    }

    /// The 12 bytes of the header.
    #[inline]
    pub(super) fn bytes(&self) -> [u8; HEADER_LEN] {
        let [id0, id1] = self.id.to_be_bytes();
        let [qd0, qd1] = self.counts[0].to_be_bytes();
        let [an0, an1] = self.counts[1].to_be_bytes();
        let [ns0, ns1] = self.counts[2].to_be_bytes();
        let [ar0, ar1] = self.counts[3].to_be_bytes();
        [
            id0,
            id1,
            0x80 | (self.opcode & 0x0F) << 3 | u8::from(self.aa) << 2 | u8::from(self.rd),
            u8::from(self.cd) << 4 | (self.rcode & 0x0F),
            qd0,
            qd1,
            an0,
            an1,
            ns0,
            ns1,
            ar0,
            ar1,
        ]
    }
}

/// An OPT record without options (RFC 6891 §6.1.2): root owner, our UDP
/// payload size, extended rcode 0, version 0, the DO bit (RFC 3225 §3:
/// copied from the query).
#[inline]
pub(super) fn opt(payload: u16, dnssec_ok: bool) -> [u8; OPT_LEN] {
    let [t0, t1] = TYPE_OPT.to_be_bytes();
    let [p0, p1] = payload.to_be_bytes();
    [
        0,
        t0,
        t1,
        p0,
        p1,
        0,
        0,
        if dnssec_ok { 0x80 } else { 0 },
        0,
        0,
        0,
    ]
}

/// A compression pointer to offset `at` of the message (below 0x4000).
#[inline]
pub(super) fn pointer(at: u16) -> [u8; 2] {
    (0xC000 | at).to_be_bytes()
}

/// Appends a compression pointer to offset `at`.
pub(super) fn put_pointer(buf: &mut Vec<u8>, at: u16) {
    buf.extend_from_slice(&pointer(at));
}

/// Appends one label, length first.
pub(super) fn put_label(buf: &mut Vec<u8>, label: &[u8]) {
    buf.push(label.len() as u8);
    buf.extend_from_slice(label);
}

/// Appends `name` uncompressed, in the case it has, root label included.
pub(super) fn put_name(buf: &mut Vec<u8>, name: &Name) {
    for label in name.iter() {
        put_label(buf, label);
    }
    buf.push(0);
}

/// Appends `name` uncompressed and lowercased (the canonical form TSIG
/// uses for its variables, RFC 8945 §4.3.3).
pub(super) fn put_name_lowercase(buf: &mut Vec<u8>, name: &Name) {
    for label in name.iter() {
        buf.push(label.len() as u8);
        buf.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    buf.push(0);
}

/// Appends the fixed part of a record after its owner name (type, class,
/// TTL, RDLENGTH 0 for now); returns where RDLENGTH is, for
/// [`end_record`] once the RDATA is appended.
pub(super) fn begin_record(buf: &mut Vec<u8>, rtype: u16, class: u16, ttl: u32) -> usize {
    buf.extend_from_slice(&rtype.to_be_bytes());
    buf.extend_from_slice(&class.to_be_bytes());
    buf.extend_from_slice(&ttl.to_be_bytes());
    let rdlen_at = buf.len();
    buf.extend_from_slice(&[0, 0]);
    rdlen_at
}

/// Sets the RDLENGTH at `rdlen_at` to the bytes appended after it.
pub(super) fn end_record(buf: &mut [u8], rdlen_at: usize) {
    let rdlen = (buf.len() - rdlen_at - 2) as u16;
    buf[rdlen_at..rdlen_at + 2].copy_from_slice(&rdlen.to_be_bytes());
}

/// Sets a section count of the message `msg` (which starts at its header).
pub(super) fn set_count(msg: &mut [u8], section: Section, n: u16) {
    let at = section as usize;
    msg[at..at + 2].copy_from_slice(&n.to_be_bytes());
}

/// Adds one to a section count of the message `msg`.
pub(super) fn add_one(msg: &mut [u8], section: Section) {
    let at = section as usize;
    let n = u16::from_be_bytes([msg[at], msg[at + 1]]);
    set_count(msg, section, n.wrapping_add(1));
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
    use hickory_proto::rr::RecordType;
    use hickory_proto::serialize::binary::{BinDecodable as _, BinDecoder};

    use super::*;

    #[test]
    fn header_echoes_id_opcode_rd_and_cd() {
        let mut q = Message::new(0xBEEF, MessageType::Query, OpCode::Notify);
        q.metadata.recursion_desired = true;
        q.metadata.checking_disabled = true;
        q.add_query(Query::query(
            Name::from_ascii("a.example.").expect("name"),
            RecordType::SOA,
        ));
        let bytes = q.to_vec().expect("encode");
        let mut h = Header::reply_to(&bytes);
        h.aa = true;
        h.rcode = REFUSED;
        h.counts = [1, 2, 3, 4];
        let mut msg = h.bytes().to_vec();
        msg.extend_from_slice(&bytes[HEADER_LEN..]);
        let m = hickory_proto::op::Header::read(&mut BinDecoder::new(&msg)).expect("header");
        let meta = m.metadata;
        assert_eq!(meta.id, 0xBEEF);
        assert_eq!(meta.message_type, MessageType::Response);
        assert_eq!(meta.op_code, OpCode::Notify);
        assert!(meta.authoritative && meta.recursion_desired && meta.checking_disabled);
        assert!(!meta.truncation && !meta.recursion_available && !meta.authentic_data);
        assert_eq!(meta.response_code, ResponseCode::Refused);
        assert_eq!(
            (
                m.counts.queries,
                m.counts.answers,
                m.counts.authorities,
                m.counts.additionals
            ),
            (1, 2, 3, 4)
        );
    }

    #[test]
    fn opt_matches_hickory() {
        for dnssec_ok in [false, true] {
            let mut m = Message::new(1, MessageType::Response, OpCode::Query);
            let mut e = hickory_proto::op::Edns::new();
            e.set_max_payload(MAX_UDP_PAYLOAD);
            e.set_dnssec_ok(dnssec_ok);
            m.set_edns(e);
            let bytes = m.to_vec().expect("encode");
            assert_eq!(bytes[HEADER_LEN..], opt(MAX_UDP_PAYLOAD, dnssec_ok));
        }
    }

    #[test]
    fn names_and_records() {
        let name = Name::from_ascii("Ab.Example.").expect("name");
        let mut buf = Vec::new();
        put_name(&mut buf, &name);
        assert_eq!(buf, b"\x02Ab\x07Example\x00");
        buf.clear();
        put_name_lowercase(&mut buf, &name);
        assert_eq!(buf, b"\x02ab\x07example\x00");
        buf.clear();
        put_pointer(&mut buf, 12);
        let at = begin_record(&mut buf, 1, CLASS_IN, 30);
        buf.extend_from_slice(&[192, 0, 2, 1]);
        end_record(&mut buf, at);
        assert_eq!(buf, [0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 192, 0, 2, 1]);
        let mut h = [0u8; HEADER_LEN];
        set_count(&mut h, Section::Answer, 0x0102);
        add_one(&mut h, Section::Additional);
        add_one(&mut h, Section::Additional);
        assert_eq!(h, [0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 2]);
    }
}
