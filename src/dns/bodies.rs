//! The fast path's answer bodies: wire-format response sections prepared
//! once per zone version (when its [`super::prepared::Answers`] are).
//!
//! A tenant answer differs between queries only in the header ID and flags,
//! the question (copied verbatim, so its case is kept) and the compression
//! pointers into it, which move with the length of the tenant label. So each
//! possible answer body is encoded once, by hickory's encoder exactly as the
//! general path encodes a response (see `capture`: names compressed against
//! the question, so a tenant answer's owner is the 2-byte pointer to it),
//! and per query it is copied and its pointers patched: no allocation, no
//! name compression work. `fast::tests` compare both paths byte for byte.

use std::str::FromStr;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::wire;
use crate::live::View;
use crate::map::{CellId, TenantIndex};

/// Response sections that follow the question, with the compression
/// pointers whose targets move with the length of the query's first label.
#[derive(Debug, Clone, Default)]
pub(super) struct Body {
    /// The bytes, as encoded after a question whose first label is one byte.
    pub(super) bytes: Vec<u8>,
    /// `(position in bytes, target for a one-byte first label)` of each
    /// pointer into the question's suffix or into the body itself: for a
    /// first label of `L` bytes the target is `target - 1 + L`. Pointers to
    /// the start of the question (offset 12) never move and are not listed.
    pub(super) shifts: Vec<(u16, u16)>,
    /// Number of records (ANCOUNT or NSCOUNT).
    pub(super) records: u16,
}

impl Body {
    /// A body with no records.
    pub(super) const EMPTY: Body = Body {
        bytes: Vec::new(),
        shifts: Vec::new(),
        records: 0,
    };
}

/// Prepared answers of one cell.
#[derive(Debug, Clone, Default)]
pub(super) struct CellBodies {
    /// Body of the A answer (empty records when the cell has no IPv4).
    pub(super) a: Body,
    /// Body of the AAAA answer.
    pub(super) aaaa: Body,
    /// The cell answers with a CNAME (left to the general path).
    pub(super) cname: bool,
    /// A and AAAA bodies with `zone.move_ttl`, for the tenants a planned
    /// move has in its short-TTL window; prepared only for the cells that
    /// serve such a tenant (`None` elsewhere: the general path answers).
    pub(super) short: Option<Box<(Body, Body)>>,
}

/// What the bodies of one cell are made from: its tenant RDATA.
#[derive(Debug, Clone, Copy)]
pub(super) struct CellRdata<'a> {
    /// A RDATA.
    pub(super) a: &'a [RData],
    /// AAAA RDATA.
    pub(super) aaaa: &'a [RData],
    /// Whether the cell answers with a CNAME instead.
    pub(super) cname: bool,
}

/// Everything the fast path needs from a zone version.
#[derive(Debug, Clone, Default)]
pub(super) struct Bodies {
    /// The origin in wire format, as the map writes it: negative answers
    /// compress the SOA owner against the question only when the question's
    /// suffix is these exact bytes (hickory compares names bytewise).
    pub(super) origin_exact: Vec<u8>,
    /// The origin in wire format, lowercased (e.g. `\x05cells\x07example\x03com\x00`).
    pub(super) origin_lower: Vec<u8>,
    /// Number of labels of the origin.
    pub(super) origin_labels: usize,
    /// Lowercased first labels of in-zone names one below the apex that are
    /// not tenants (nameservers, cell hostnames, empty non-terminals): such
    /// queries go to the general path.
    pub(super) reserved_labels: TenantIndex,
    /// Per cell, indexed by `CellId`.
    pub(super) cells: Vec<CellBodies>,
    /// The negative-answer body (the SOA in the authority section).
    pub(super) negative: Body,
}

/// Encodes a response to a query for `label.<origin>` carrying the records
/// `make(query name)` in the answer or authority section, as the general
/// path would, and returns the bytes after the question.
fn encode_after_question(
    origin: &Name,
    label: &str,
    make: &impl Fn(&Name) -> Vec<Record>,
    authority: bool,
) -> Option<Vec<u8>> {
    let qname = Name::from_str(label).ok()?.append_domain(origin).ok()?;
    let records = make(&qname);
    let mut m = Message::new(0, MessageType::Response, OpCode::Query);
    m.add_query(Query::query(qname.clone(), RecordType::A));
    if authority {
        m.add_authorities(records);
    } else {
        m.add_answers(records);
    }
    let bytes = m.to_vec().ok()?;
    // Skip the header and the question (uncompressed labels, then type
    // and class).
    let mut i = 12;
    while *bytes.get(i)? != 0 {
        i += 1 + usize::from(bytes[i]);
    }
    bytes.get(i + 1 + 4..).map(<[u8]>::to_vec)
}

/// Builds a body from encodings after a 1-byte and a 5-byte first label:
/// the pointers whose targets differ are those that move with the label.
fn body(origin: &Name, make: impl Fn(&Name) -> Vec<Record>, authority: bool) -> Option<Body> {
    const DELTA: u16 = 4;
    let records = make(origin);
    let x = encode_after_question(origin, "x", &make, authority)?;
    let y = encode_after_question(origin, "xxxxx", &make, authority)?;
    if x.len() != y.len() || x.len() > usize::from(u16::MAX) {
        return None;
    }
    let mut shifts = Vec::new();
    for at in pointer_positions(&x, &records)? {
        let px = u16::from_be_bytes([x[at], x[at + 1]]) & 0x3FFF;
        let py = u16::from_be_bytes([*y.get(at)?, *y.get(at + 1)?]) & 0x3FFF;
        if py == px + DELTA {
            shifts.push((at as u16, px));
        } else if py != px {
            return None;
        }
    }
    // Everything but the pointers must be the same in both encodings.
    let mut same = x.clone();
    let mut other = y;
    for &(at, _) in &shifts {
        let at = usize::from(at);
        same[at..at + 2].fill(0);
        other[at..at + 2].fill(0);
    }
    (same == other).then_some(Body {
        bytes: x,
        shifts,
        records: records.len() as u16,
    })
}

/// Positions of the compression pointers in encoded `records`: in owner
/// names, and in the RDATA names of the types bodies carry (SOA; A and
/// AAAA have none). `None` for anything else.
fn pointer_positions(b: &[u8], records: &[Record]) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    let mut i = 0;
    for r in records {
        i = skip_name(b, i, &mut out)?;
        let rdlen = usize::from(u16::from_be_bytes([*b.get(i + 8)?, *b.get(i + 9)?]));
        let rdata = i + 10;
        match r.record_type() {
            RecordType::A | RecordType::AAAA => {}
            RecordType::SOA => {
                let j = skip_name(b, rdata, &mut out)?;
                skip_name(b, j, &mut out)?;
            }
            _ => return None,
        }
        i = rdata + rdlen;
    }
    (i == b.len()).then_some(out)
}

/// Skips a name starting at `i`, noting a pointer's position.
fn skip_name(b: &[u8], mut i: usize, pointers: &mut Vec<usize>) -> Option<usize> {
    loop {
        let len = *b.get(i)?;
        match len {
            0 => return Some(i + 1),
            l if l & 0xC0 == 0xC0 => {
                pointers.push(i);
                return Some(i + 2);
            }
            l => i += 1 + usize::from(l),
        }
    }
}

impl Bodies {
    /// Prepares the fast path's bodies for `view`, whose cells (indexed by
    /// `CellId`) have the tenant RDATA `cells`, and whose negative answers
    /// carry `negative_soa`. Anything that cannot be prepared is left to
    /// the general path (empty `Bodies` answer nothing fast, which is
    /// always correct).
    pub(super) fn build<'a>(
        view: &View,
        cells: impl ExactSizeIterator<Item = CellRdata<'a>>,
        negative_soa: &Record,
    ) -> Self {
        Self::try_build(view, cells, negative_soa).unwrap_or_default()
    }

    fn try_build<'a>(
        view: &View,
        cells: impl ExactSizeIterator<Item = CellRdata<'a>>,
        negative_soa: &Record,
    ) -> Option<Self> {
        let snap = view.map();
        let origin = &snap.zone.origin;
        let mut origin_lower = Vec::with_capacity(origin.len() + 1);
        wire::put_name_lowercase(&mut origin_lower, origin);
        let depth = origin.num_labels() + 1;
        let mut labels: Vec<String> = snap
            .static_names
            .keys()
            .map(|n| Name::from(n.clone()))
            .filter(|n| n.num_labels() == depth)
            .filter_map(|n| {
                n.iter()
                    .next()
                    .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
            })
            .collect();
        labels.sort();
        labels.dedup();
        // A hash lookup, not a scan: a map may have thousands of in-zone
        // cell hostnames, and every fast query asks.
        let (reserved_labels, _) = TenantIndex::build(
            labels.len(),
            labels.iter().map(String::len).sum(),
            labels
                .iter()
                .enumerate()
                .map(|(i, l)| (i, l.as_str(), CellId(0))),
        );

        // Cells serving a tenant whose answers carry the short TTL now.
        let mut short_cells = vec![false; snap.cells.len()];
        for (_, assigned, short) in view.moves().affected() {
            if short && let Some(s) = short_cells.get_mut(usize::from(view.serving(assigned).0)) {
                *s = true;
            }
        }
        let mut bodies = Vec::with_capacity(cells.len());
        for (i, r) in cells.enumerate() {
            let prepared = |rd: &[RData], ttl: u32| -> Option<Body> {
                if rd.is_empty() {
                    return Some(Body::default());
                }
                // Tenant answers are owned by the query name.
                let make = |qname: &Name| -> Vec<Record> {
                    rd.iter()
                        .map(|r| Record::from_rdata(qname.clone(), ttl, r.clone()))
                        .collect()
                };
                body(origin, make, false)
            };
            let short = if short_cells.get(i).copied().unwrap_or(false) {
                let ttl = snap.zone.move_ttl;
                Some(Box::new((prepared(r.a, ttl)?, prepared(r.aaaa, ttl)?)))
            } else {
                None
            };
            bodies.push(CellBodies {
                a: prepared(r.a, snap.zone.ttl)?,
                aaaa: prepared(r.aaaa, snap.zone.ttl)?,
                cname: r.cname,
                short,
            });
        }
        let negative = body(origin, |_: &Name| vec![negative_soa.clone()], true)?;
        let mut origin_exact = Vec::with_capacity(origin.len() + 1);
        wire::put_name(&mut origin_exact, origin);
        Some(Self {
            origin_exact,
            origin_lower,
            origin_labels: origin.num_labels() as usize,
            reserved_labels,
            cells: bodies,
            negative,
        })
    }
}
