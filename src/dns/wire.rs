//! Wire-format answers prepared once per snapshot, for the fast UDP path.
//!
//! A tenant answer differs between queries only in the header ID and flags,
//! the question (copied verbatim, so its case is kept), the owner name of
//! the first record, and the compression pointers that point back to it.
//! So each possible answer body is encoded once, by hickory's own encoder
//! (the same bytes the hickory-server path sends), and per query it is
//! copied and patched: no allocation, no name compression work.
//!
//! hickory-server writes the question section as raw bytes that later names
//! never compress against, so the first answer owner is written in full and
//! later names point to it; the bodies here reproduce exactly that, and
//! `tests` compare both paths byte for byte.

use hickory_proto::rr::{Name, RData, Record};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

use crate::map::Snapshot;

/// Response section bytes that follow the question, with the positions of
/// the compression pointers whose targets move with the question's length.
#[derive(Debug, Clone, Default)]
pub struct Body {
    /// True when the body starts with the owner name of the first record,
    /// which is the query name and is copied from the question.
    pub owner_first: bool,
    /// Bytes after the owner name (or the whole body).
    pub rest: Vec<u8>,
    /// `(position in rest, offset relative to the body's start)` of each
    /// compression pointer into the body itself.
    pub ptrs: Vec<(u16, u16)>,
    /// Number of records (ANCOUNT or NSCOUNT).
    pub records: u16,
}

impl Body {
    /// A body with no records.
    pub const EMPTY: Body = Body {
        owner_first: false,
        rest: Vec::new(),
        ptrs: Vec::new(),
        records: 0,
    };
}

/// Prepared answers of one cell.
#[derive(Debug, Clone, Default)]
pub struct CellWire {
    /// Body of the A answer (empty records when the cell has no IPv4).
    pub a: Body,
    /// Body of the AAAA answer.
    pub aaaa: Body,
    /// The cell answers with a CNAME (left to the general path).
    pub cname: bool,
}

/// Everything the fast path needs from a snapshot.
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    /// The origin in wire format, lowercased (e.g. `\x05cells\x07example\x03com\x00`).
    pub origin_lower: Vec<u8>,
    /// Number of labels of the origin.
    pub origin_labels: usize,
    /// Lowercased first labels of in-zone names one below the apex that are
    /// not tenants (nameservers, cell hostnames, empty non-terminals): such
    /// queries go to the general path.
    pub reserved_labels: Vec<Vec<u8>>,
    /// Per cell, indexed by `CellId`.
    pub cells: Vec<CellWire>,
    /// The negative-answer body (the SOA in the authority section).
    pub negative: Body,
}

/// Two different offsets at which bodies are encoded; pointers are the
/// bytes that differ between the two.
const AT: [usize; 2] = [0x100, 0x200];

/// Encodes `records` as hickory would right after a question it cannot
/// compress against, with the body starting at offset `at`.
fn encode_at(records: &[Record], at: usize) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(at + 256);
    let mut enc = BinEncoder::new(&mut buf);
    enc.emit_vec(&vec![0u8; at]).ok()?;
    for r in records {
        r.emit(&mut enc).ok()?;
    }
    Some(buf.split_off(at))
}

/// Builds a body from records encoded at two offsets.
fn body(records: &[Record], owner_first: Option<usize>) -> Option<Body> {
    let x = encode_at(records, AT[0])?;
    let y = encode_at(records, AT[1])?;
    if x.len() != y.len() || x.len() > u16::MAX as usize {
        return None;
    }
    let skip = owner_first.unwrap_or(0);
    let mut ptrs = Vec::new();
    let mut i = skip;
    while i < x.len() {
        if x[i] != y[i] {
            // A pointer's high byte differs (0xC1.. vs 0xC2..); its low
            // byte follows and is equal.
            let px = u16::from_be_bytes([x[i], *x.get(i + 1)?]);
            let py = u16::from_be_bytes([y[i], *y.get(i + 1)?]);
            let (tx, ty) = (usize::from(px & 0x3FFF), usize::from(py & 0x3FFF));
            if px & 0xC000 != 0xC000 || tx.checked_sub(AT[0])? != ty.checked_sub(AT[1])? {
                return None;
            }
            let rel = tx - AT[0];
            // The owner is copied from the question and its length varies,
            // so only pointers to its start can be patched.
            if owner_first.is_some() && rel != 0 {
                return None;
            }
            ptrs.push(((i - skip) as u16, rel as u16));
            i += 2;
        } else {
            i += 1;
        }
    }
    Some(Body {
        owner_first: owner_first.is_some(),
        rest: x[skip..].to_vec(),
        ptrs,
        records: records.len() as u16,
    })
}

impl Prepared {
    /// Prepares the fast path's answers for `snap`. Anything that cannot be
    /// prepared is left to the general path (an empty `Prepared` answers
    /// nothing fast, which is always correct).
    pub fn build(snap: &Snapshot) -> Self {
        Self::try_build(snap).unwrap_or_default()
    }

    fn try_build(snap: &Snapshot) -> Option<Self> {
        let origin = &snap.zone.origin;
        let mut origin_lower = Vec::with_capacity(origin.len() + 1);
        for label in origin.iter() {
            origin_lower.push(label.len() as u8);
            origin_lower.extend(label.iter().map(u8::to_ascii_lowercase));
        }
        origin_lower.push(0);
        let depth = origin.num_labels() + 1;
        let mut reserved_labels: Vec<Vec<u8>> = snap
            .static_names
            .keys()
            .map(|n| Name::from(n.clone()))
            .filter(|n| n.num_labels() == depth)
            .filter_map(|n| n.iter().next().map(|l| l.to_ascii_lowercase()))
            .collect();
        reserved_labels.sort();
        reserved_labels.dedup();

        // A stand-in owner one label below the apex; its bytes never matter,
        // only that later owners equal it.
        let owner = Name::from_ascii("x").ok()?.append_domain(origin).ok()?;
        let owner_len = owner.len() + 1;
        let records = |rdata: &[RData]| -> Vec<Record> {
            rdata
                .iter()
                .map(|rd| Record::from_rdata(owner.clone(), snap.zone.ttl, rd.clone()))
                .collect()
        };
        let mut cells = Vec::with_capacity(snap.cells.len());
        for cell in &snap.cells {
            let r = &cell.records;
            let prepared = |rd: &[RData]| -> Option<Body> {
                if rd.is_empty() {
                    return Some(Body::default());
                }
                body(&records(rd), Some(owner_len))
            };
            cells.push(CellWire {
                a: prepared(&r.a)?,
                aaaa: prepared(&r.aaaa)?,
                cname: r.cname.is_some(),
            });
        }
        let negative = body(std::slice::from_ref(&snap.zone.negative_soa), None)?;
        Some(Self {
            origin_lower,
            origin_labels: origin.num_labels() as usize,
            reserved_labels,
            cells,
            negative,
        })
    }
}
