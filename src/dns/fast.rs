//! The fast path: answers the common UDP queries (tenant A/AAAA, NODATA,
//! NXDOMAIN, out-of-zone REFUSED) straight from wire bytes, by copying a
//! prepared body (`bodies`) and patching it, with the header and
//! OPT written by `wire`. No allocation, no lock.
//!
//! Anything unusual (other opcodes, several questions, compressed question
//! names, EDNS options or versions, ANY/AXFR, the apex, nameserver and cell
//! hostnames, CNAME cells, answers that would truncate) returns
//! [`Fast::General`], and [`super::dispatch`] hands the query to the general
//! path (the hickory-server handler). Both produce the same bytes for the
//! same query (see tests). The dispatch counts what the fast path answers.

use super::answer::Outcome;
use super::bodies::Body;
use super::prepared::Live;
use super::wire::{self, HEADER_LEN, MAX_UDP_PAYLOAD, NOERROR, NXDOMAIN, OPT_LEN, REFUSED};
use crate::route;

/// The longest name in wire form (RFC 1035 §3.1), root label included.
pub(crate) const MAX_NAME_WIRE: usize = 255;

/// Size of response buffers the fast path writes into.
pub const RESPONSE_BUF: usize = MAX_UDP_PAYLOAD as usize;

/// What the fast path did with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fast {
    /// The response is in the buffer: its length, what it was, and the
    /// query type.
    Answered(usize, Outcome, u16),
    /// Not a fast-path query: hand it to the general path.
    General,
    /// Not to be answered at all (too short for a header, or a response).
    Drop,
}

/// Query types the fast path answers (others go to the general path).
fn fast_qtype(t: u16) -> Option<Kind> {
    match t {
        1 => Some(Kind::A),
        28 => Some(Kind::Aaaa),
        // NS, CNAME, SOA, PTR, MX, TXT, SRV, SVCB, HTTPS: NODATA at a tenant.
        2 | 5 | 6 | 12 | 15 | 16 | 33 | 64 | 65 => Some(Kind::Other),
        _ => None,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    A,
    Aaaa,
    Other,
}

/// The body of a type the cell has no data for.
static EMPTY: Body = Body::EMPTY;

/// Answers `query` into `out` if it is a fast-path query.
#[inline]
pub fn respond(live: &Live, query: &[u8], out: &mut [u8; RESPONSE_BUF]) -> Fast {
    let q = query;
    if q.len() < 12 {
        return Fast::Drop;
    }
    if q[2] & 0x80 != 0 {
        return Fast::Drop;
    }
    let opcode = (q[2] >> 3) & 0x0F;
    let count = |i: usize| u16::from_be_bytes([q[i], q[i + 1]]);
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    if opcode != 0 || qd != 1 || an != 0 || ns != 0 || ar > 1 {
        return Fast::General;
    }

    // Question name: plain labels only; remember where each label starts.
    let mut starts = [0u16; 128];
    let mut labels = 0usize;
    let mut i = 12usize;
    loop {
        let Some(&len) = q.get(i) else {
            return Fast::General;
        };
        if len == 0 {
            i += 1;
            break;
        }
        if len & 0xC0 != 0 || labels == starts.len() {
            return Fast::General;
        }
        starts[labels] = i as u16;
        labels += 1;
        i += 1 + usize::from(len);
        if i - 12 > MAX_NAME_WIRE {
            return Fast::General;
        }
    }
    let name_end = i;
    // RFC 1035 §3.1: at most 255 octets, the root label included; the
    // general path answers a longer one (FORMERR).
    if name_end + 4 > q.len() || name_end - 12 > MAX_NAME_WIRE {
        return Fast::General;
    }
    let qtype = u16::from_be_bytes([q[name_end], q[name_end + 1]]);
    let qclass = u16::from_be_bytes([q[name_end + 2], q[name_end + 3]]);
    let question_end = name_end + 4;

    // EDNS: a bare OPT (version 0, no options) as the only additional record.
    let payload = if ar == 1 {
        let o = &q[question_end..];
        if o.len() != 11 || o[0] != 0 || o[1..3] != [0, 41] || o[6] != 0 || o[9..11] != [0, 0] {
            return Fast::General;
        }
        // RFC 3225 §3: the DO bit is copied into the response.
        Some((
            u16::from_be_bytes([o[3], o[4]]).clamp(512, MAX_UDP_PAYLOAD),
            o[7] & 0x80 != 0,
        ))
    } else if question_end == q.len() {
        None
    } else {
        return Fast::General;
    };
    if qclass != 1 {
        return Fast::General;
    }
    // A signed zone signs answers to queries with the DO bit: the general
    // path does (`dnssec`); without it the bytes here are the answer.
    if payload.is_some_and(|(_, dnssec_ok)| dnssec_ok) && live.answers.dnssec.is_some() {
        return Fast::General;
    }
    let Some(kind) = fast_qtype(qtype) else {
        return Fast::General;
    };

    let bodies = &live.answers.bodies;
    let origin = &bodies.origin_lower[..];
    if origin.is_empty() {
        // Nothing was prepared for this snapshot: everything is general.
        return Fast::General;
    }
    let in_zone = name_end >= 12 + origin.len()
        && starts[..labels].contains(&((name_end - origin.len()) as u16))
        && q[name_end - origin.len()..name_end].eq_ignore_ascii_case(origin);
    let limit = usize::from(payload.map_or(512, |(size, _)| size));

    if !in_zone {
        let h = Head {
            aa: false,
            rcode: REFUSED,
            an: 0,
            ns: 0,
        };
        return finish(q, out, question_end, h, None, payload, limit).map_or(Fast::General, |n| {
            Fast::Answered(n, Outcome::Refused, qtype)
        });
    }
    // Only tenants (one label below the apex) are fast.
    if labels != bodies.origin_labels + 1 {
        return Fast::General;
    }
    let label = &q[13..13 + usize::from(q[12])];
    if bodies.reserved_labels.get(label).is_some() {
        return Fast::General;
    }

    // The SOA of a negative answer is compressed against the question's
    // suffix only when it is the origin byte for byte (as the map writes
    // it); other cases (0x20-randomised queries) take the general path.
    let exact_suffix = q[name_end - origin.len()..name_end] == bodies.origin_exact[..];
    let (header, body, outcome) = match route::lookup_target(&live.view, label) {
        None if !exact_suffix => return Fast::General,
        None => (
            Head {
                aa: true,
                rcode: NXDOMAIN,
                an: 0,
                ns: 1,
            },
            &bodies.negative,
            Outcome::NxDomain,
        ),
        Some(target) => {
            let cell = target.cell;
            let Some(w) = bodies.cells.get(usize::from(cell.0)) else {
                return Fast::General;
            };
            if w.cname {
                return Fast::General;
            }
            // A tenant in a move's short-TTL window: the bodies with
            // `move_ttl` (NODATA carries the SOA, whatever the TTL).
            let (a, aaaa) = match (&w.short, target.short_ttl) {
                (_, false) => (&w.a, &w.aaaa),
                (Some(short), true) => (&short.0, &short.1),
                (None, true) => return Fast::General,
            };
            let body = match kind {
                Kind::A => a,
                Kind::Aaaa => aaaa,
                Kind::Other => &EMPTY,
            };
            if body.records == 0 {
                if !exact_suffix {
                    return Fast::General;
                }
                (
                    Head {
                        aa: true,
                        rcode: NOERROR,
                        an: 0,
                        ns: 1,
                    },
                    &bodies.negative,
                    Outcome::TenantNodata(cell),
                )
            } else {
                (
                    Head {
                        aa: true,
                        rcode: NOERROR,
                        an: body.records,
                        ns: 0,
                    },
                    body,
                    Outcome::Tenant(cell),
                )
            }
        }
    };
    finish(q, out, question_end, header, Some(body), payload, limit)
        .map_or(Fast::General, |n| Fast::Answered(n, outcome, qtype))
}

/// What differs between the headers of fast replies.
struct Head {
    aa: bool,
    rcode: u8,
    an: u16,
    ns: u16,
}

/// Writes header, question, body and OPT; `None` when it would not fit.
#[inline]
fn finish(
    q: &[u8],
    out: &mut [u8; RESPONSE_BUF],
    question_end: usize,
    r: Head,
    body: Option<&Body>,
    payload: Option<(u16, bool)>,
    limit: usize,
) -> Option<usize> {
    let body_len = body.map_or(0, |b| b.bytes.len());
    let total = question_end + body_len + if payload.is_some() { OPT_LEN } else { 0 };
    if total > limit {
        return None;
    }
    let mut header = wire::Header::reply_to(q);
    header.aa = r.aa;
    header.rcode = r.rcode;
    header.counts = [1, r.an, r.ns, u16::from(payload.is_some())];
    out[..HEADER_LEN].copy_from_slice(&header.bytes());
    out[HEADER_LEN..question_end].copy_from_slice(&q[HEADER_LEN..question_end]);
    let mut at = question_end;
    if let Some(b) = body {
        out[at..at + b.bytes.len()].copy_from_slice(&b.bytes);
        // Bodies were encoded after a one-byte first label.
        let shift = u16::from(q[12]) - 1;
        for &(pos, target) in &b.shifts {
            let p = at + usize::from(pos);
            out[p..p + 2].copy_from_slice(&wire::pointer(target + shift));
        }
        at += b.bytes.len();
    }
    if let Some((size, dnssec_ok)) = payload {
        out[at..at + OPT_LEN].copy_from_slice(&wire::opt(size, dnssec_ok));
        at += OPT_LEN;
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;
    use std::sync::Arc;

    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};

    use super::*;
    use crate::dns::dispatch::Dispatch;
    use crate::dns::prepared::{Store, store_of};
    use crate::map::{Format, Source, load_str};

    fn query(name: &str, t: RecordType, edns: Option<u16>, rd: bool, cd: bool) -> Vec<u8> {
        query_do(name, t, edns, rd, cd, false)
    }

    fn query_do(
        name: &str,
        t: RecordType,
        edns: Option<u16>,
        rd: bool,
        cd: bool,
        dnssec_ok: bool,
    ) -> Vec<u8> {
        let mut m = Message::new(0xBEEF, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = rd;
        m.metadata.checking_disabled = cd;
        m.add_query(Query::query(Name::from_str(name).unwrap(), t));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            e.set_dnssec_ok(dnssec_ok);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    /// Both paths, for one query: (fast result, general bytes).
    fn both(store: &Arc<Store>, q: &[u8]) -> (Fast, Vec<u8>, Option<Vec<u8>>) {
        let snap = store.load();
        let mut fast_out = [0u8; RESPONSE_BUF];
        let f = respond(&snap, q, &mut fast_out);
        let mut gen_out = [0u8; RESPONSE_BUF];
        let src = "127.0.0.1:5300".parse().unwrap();
        let g = Dispatch::new(store.clone(), Default::default())
            .general_datagram(q, src, &mut gen_out)
            .map(|n| gen_out[..n].to_vec());
        let fast_bytes = match f {
            Fast::Answered(n, ..) => fast_out[..n].to_vec(),
            _ => Vec::new(),
        };
        (f, fast_bytes, g)
    }

    fn hash_map() -> crate::map::Snapshot {
        let text = crate::map::EXAMPLE_MAP.replace("unknown = \"nxdomain\"", "unknown = \"hash\"");
        load_str(Source {
            text: &text,
            format: Format::Toml,
            name: "h.toml",
        })
        .unwrap()
    }

    /// A query for a name of `octets` octets in wire form (root included)
    /// ending in the zone, as the fuzzer found: 256 octets once got FORMERR
    /// from the fast path and REFUSED from the general path.
    fn query_of_name_length(octets: usize) -> Vec<u8> {
        let zone = b"\x05cells\x07example\x03com\x00";
        let mut name = Vec::new();
        let mut left = octets - zone.len();
        while left > 0 {
            let label = (left - 1).min(63);
            name.push(label as u8);
            name.extend(std::iter::repeat_n(b'x', label));
            left -= 1 + label;
        }
        name.extend_from_slice(zone);
        assert_eq!(name.len(), octets);
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(&name);
        q.extend_from_slice(&[0, 1, 0, 1]);
        q
    }

    #[test]
    fn a_name_over_255_octets_is_formerr_on_both_paths() {
        let store = Arc::new(store_of(crate::map::load_example().unwrap()));
        let (f, _, g) = both(&store, &query_of_name_length(256));
        assert!(matches!(f, Fast::General), "the fast path answered it");
        let g = g.expect("an answer");
        assert_eq!(g.len(), HEADER_LEN, "{g:02x?}");
        assert_eq!(g[3] & 0x0F, wire::FORMERR, "{g:02x?}");
        // 255 octets is a name: the same bytes from both paths.
        let (f, fast_bytes, g) = both(&store, &query_of_name_length(255));
        if let Fast::Answered(..) = f {
            assert_eq!(Some(fast_bytes), g);
        }
        assert_ne!(g.expect("an answer")[3] & 0x0F, wire::FORMERR);
    }

    #[test]
    fn fast_and_general_paths_give_identical_bytes() {
        let names = [
            "acme.cells.example.com.",
            "ACME.cells.example.com.",
            "aCmE.CeLLs.ExAmPlE.CoM.",
            "globex.cells.example.com.",
            "initech.cells.example.com.",
            "hooli.cells.example.com.",
            "umbrella.cells.example.com.",
            "nobody.cells.example.com.",
            "x.cells.example.com.",
            &format!("{}.cells.example.com.", "a".repeat(63)),
            "deep.acme.cells.example.com.",
            "cells.example.com.",
            "use1-a.cells.example.com.",
            "ns1.cells.example.com.",
            "example.com.",
            "www.example.org.",
            "com.",
        ];
        let types = [
            RecordType::A,
            RecordType::AAAA,
            RecordType::MX,
            RecordType::TXT,
            RecordType::NS,
            RecordType::SOA,
            RecordType::CNAME,
            RecordType::HTTPS,
            RecordType::ANY,
            RecordType::CAA,
        ];
        let mut fast_answers = 0;
        let mut compared = 0;
        for snap in [crate::map::load_example().unwrap(), hash_map()] {
            let store = Arc::new(store_of(snap));
            for name in names {
                for t in types {
                    for edns in [None, Some(100), Some(512), Some(1232), Some(4096)] {
                        for (rd, cd, dnssec_ok) in [
                            (false, false, false),
                            (true, false, false),
                            (true, true, false),
                            (true, false, true),
                        ] {
                            let q = query_do(name, t, edns, rd, cd, dnssec_ok);
                            let (f, fast_bytes, general_bytes) = both(&store, &q);
                            if let Fast::Answered(..) = f {
                                fast_answers += 1;
                                let g = general_bytes.expect("general path answers");
                                assert_eq!(
                                    fast_bytes, g,
                                    "{name} {t} edns {edns:?} rd {rd} cd {cd} do {dnssec_ok}: fast path differs\nfast    {fast_bytes:02x?}\ngeneral {g:02x?}"
                                );
                            }
                            compared += 1;
                        }
                    }
                }
            }
        }
        // Most of the corpus must really take the fast path.
        assert!(
            fast_answers * 2 > compared,
            "only {fast_answers} of {compared} took the fast path"
        );
    }

    /// RFC 3339 of now + `offset` seconds, on a whole second.
    fn at(offset: i64) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        crate::live::audit::rfc3339(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs((now + offset) as u64),
        )
    }

    /// The example map with moves: acme before its flip (short TTL),
    /// globex just after it (short TTL, new cell), initech long after.
    fn moves_map() -> crate::map::Snapshot {
        let text = format!(
            "{}\n[moves.acme]\nto = \"use1-b\"\nat = \"{}\"\n[moves.globex]\nto = \"euw1-a\"\nat = \"{}\"\n\
             [moves.initech]\nto = \"use1-a\"\nat = \"{}\"\n",
            crate::map::EXAMPLE_MAP.replacen("ttl = 30\n", "ttl = 30\nmove_ttl = 4\n", 1),
            at(20),
            at(-10),
            at(-600)
        );
        load_str(Source {
            text: &text,
            format: Format::Toml,
            name: "m.toml",
        })
        .unwrap()
    }

    #[test]
    fn moving_tenants_get_the_short_ttl_on_both_paths() {
        let snap = moves_map();
        assert_eq!(snap.zone.move_ttl, 4);
        let store = Arc::new(store_of(snap));
        let ttl_of = |bytes: &[u8]| {
            let m = Message::from_vec(bytes).unwrap();
            (
                m.answers[0].ttl,
                m.answers
                    .iter()
                    .map(|r| r.data.to_string())
                    .collect::<Vec<_>>(),
            )
        };
        for (name, ttl, first) in [
            ("acme.cells.example.com.", 4, "192.0.2.10"), // use1-a, before the flip
            ("globex.cells.example.com.", 4, "198.51.100.10"), // euw1-a, after it
            ("initech.cells.example.com.", 30, "192.0.2.10"), // use1-a, long after
            ("hooli.cells.example.com.", 30, "192.0.2.20"), // no move
        ] {
            for edns in [None, Some(1232)] {
                let q = query(name, RecordType::A, edns, true, false);
                let (f, fast_bytes, general) = both(&store, &q);
                assert!(matches!(f, Fast::Answered(..)), "{name}: {f:?}");
                assert_eq!(Some(&fast_bytes), general.as_ref(), "{name}");
                let (got_ttl, addrs) = ttl_of(&fast_bytes);
                assert_eq!(got_ttl, ttl, "{name}");
                assert_eq!(addrs[0], first, "{name}");
            }
        }
        // NODATA for a moving tenant: the same negative answer as ever.
        let q = query("acme.cells.example.com.", RecordType::MX, None, true, false);
        let (f, fast_bytes, general) = both(&store, &q);
        assert!(matches!(f, Fast::Answered(..)));
        assert_eq!(Some(fast_bytes), general);
    }

    #[test]
    fn fast_path_takes_the_common_queries() {
        let store = Arc::new(store_of(crate::map::load_example().unwrap()));
        for (name, t) in [
            ("acme.cells.example.com.", RecordType::A),
            ("acme.cells.example.com.", RecordType::AAAA),
            ("ACME.cells.example.com.", RecordType::MX),
            ("nobody.cells.example.com.", RecordType::A),
            ("www.example.org.", RecordType::A),
        ] {
            for edns in [None, Some(1232)] {
                let (f, _, _) = both(&store, &query(name, t, edns, true, false));
                assert!(matches!(f, Fast::Answered(..)), "{name} {t}: {f:?}");
            }
        }
        for (name, t) in [
            ("umbrella.cells.example.com.", RecordType::A), // CNAME cell
            ("cells.example.com.", RecordType::SOA),        // apex
            ("use1-a.cells.example.com.", RecordType::A),   // cell hostname
            ("acme.cells.example.com.", RecordType::ANY),
        ] {
            let (f, _, _) = both(&store, &query(name, t, None, true, false));
            assert_eq!(f, Fast::General, "{name} {t}");
        }
    }

    #[test]
    fn odd_packets_leave_the_fast_path() {
        let store = store_of(crate::map::load_example().unwrap());
        let snap = store.load();
        let mut out = [0u8; RESPONSE_BUF];
        let good = query("acme.cells.example.com.", RecordType::A, None, true, false);
        assert_eq!(respond(&snap, &good[..11], &mut out), Fast::Drop);
        let mut resp = good.clone();
        resp[2] |= 0x80;
        assert_eq!(respond(&snap, &resp, &mut out), Fast::Drop);
        for cut in 12..good.len() {
            assert_eq!(
                respond(&snap, &good[..cut], &mut out),
                Fast::General,
                "cut at {cut}"
            );
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(respond(&snap, &trailing, &mut out), Fast::General);
        let mut two = good.clone();
        two[5] = 2;
        assert_eq!(respond(&snap, &two, &mut out), Fast::General);
        let mut notify = good.clone();
        notify[2] = 4 << 3;
        assert_eq!(respond(&snap, &notify, &mut out), Fast::General);
        // A compression pointer in the question.
        let mut ptr = good[..12].to_vec();
        ptr.extend([0xC0, 0x0C, 0, 1, 0, 1]);
        assert_eq!(respond(&snap, &ptr, &mut out), Fast::General);
        // EDNS version 1 and EDNS with options.
        let mut v1 = query(
            "acme.cells.example.com.",
            RecordType::A,
            Some(1232),
            false,
            false,
        );
        let n = v1.len();
        v1[n - 5] = 1;
        assert_eq!(respond(&snap, &v1, &mut out), Fast::General);
    }
}
